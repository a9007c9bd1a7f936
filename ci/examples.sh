#!/usr/bin/env bash
# Runs every example of the root package; each must exit 0.
set -euo pipefail
cd "$(dirname "$0")/.."
for f in examples/*.rs; do
    name=$(basename "$f" .rs)
    echo "--- example $name"
    cargo run --locked --example "$name"
done
