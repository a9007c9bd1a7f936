#!/usr/bin/env bash
# Runs every criterion bench once, without measuring (timings are not gated).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p devpriv-benches --locked -- --test
