#!/usr/bin/env bash
# Clippy with warnings as errors, in the normal and the loom configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo clippy --workspace --all-targets --locked -- -D warnings
CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg loom -C debug_assertions" \
    cargo clippy -p devpriv-core -p devpriv-rangetree -p devpriv-pagemap -p devpriv-migrate -p devpriv-loom-tests --all-targets --locked -- -D warnings
