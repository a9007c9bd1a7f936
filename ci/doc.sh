#!/usr/bin/env bash
# API docs must build without warnings (broken links, bad markdown).
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
