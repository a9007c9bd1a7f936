#!/usr/bin/env bash
# Every loom model and every mutant (a mutant test passes only if loom
# catches its planted bug). Separate target dir keeps the normal cache warm.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=target/loom
export RUSTFLAGS="--cfg loom -C debug_assertions"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
export DEVPRIV_LOOM_REPORT=1
# One test at a time: mutant tests swap the global panic hook.
cargo test -p devpriv-loom-tests --release --locked -- --nocapture --test-threads=1
