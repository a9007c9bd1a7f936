#!/usr/bin/env bash
# Every loom model and every mutant (a mutant test passes only if loom
# catches its planted bug). Separate target dir keeps the normal cache warm.
# The execution-count table in docs/testing.md is regenerated from the run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=target/loom
export RUSTFLAGS="--cfg loom -C debug_assertions"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
export DEVPRIV_LOOM_REPORT=1
mkdir -p target/loom
log=target/loom/loom.log
# One test at a time: mutant tests swap the global panic hook.
cargo test -p devpriv-loom-tests --release --locked -- --nocapture --test-threads=1 2>&1 | tee "$log"
python3 ci/loom_table.py "$log" --write docs/testing.md
