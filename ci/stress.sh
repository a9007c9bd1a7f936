#!/usr/bin/env bash
# The stress harness (docs/testing.md, "Stress"): 30 seconds on 2 threads, release build.
# Fails if the run reports any invariant violation (exit status 1) or
# cannot start (status 2). Override the length with STRESS_SECS.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${STRESS_SECS:-30}"
out=/tmp/devpriv-stress.txt
cargo run --release --locked -- stress --secs "$secs" --threads 2 | tee "$out"
grep -q "violations: 0 " "$out"
echo "stress: ok"
