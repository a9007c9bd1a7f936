#!/usr/bin/env bash
# Formatting check (stable rustfmt, rustfmt.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
