#!/usr/bin/env bash
# Runs the test suites of the crates that contain `unsafe` under Miri, when
# a nightly toolchain with Miri is available; otherwise says so and skips.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    # Try to add the component (works where the registry mirror serves it).
    rustup component add --toolchain nightly miri rust-src >/dev/null 2>&1 || true
fi
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    # CI machines have one (stable) toolchain and cannot fetch another, so
    # Miri runs where a developer has nightly. Say so where nobody can miss it.
    echo "################################################################"
    echo "# miri: NOT RUN. 'cargo +nightly miri' is not available here"
    echo "# (no nightly toolchain). The unsafe code was NOT checked by Miri"
    echo "# in this run: run ci/miri.sh on a machine with nightly + miri."
    echo "################################################################"
    exit 0
fi
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-strict-provenance}"
export CARGO_TARGET_DIR=target/miri
# Miri runs the same tests; heavy ones shrink themselves under cfg(miri).
cargo +nightly miri test -p devpriv-core -p devpriv-rangetree --lib
cargo +nightly miri test -p devpriv-pagemap --lib
# The integration tests that drive the section index's unsafe paths
# (publish, lookup, unmap, leaf allocation); the rest only re-check logic
# the native run covers, and `validate()`'s index scans are slow under Miri
# (`exhaustion`, which fills a space one pagemap at a time, takes minutes).
cargo +nightly miri test -p devpriv-pagemap --test memremap -- \
    memremap_initialises unmap_waits devm_handle negative_nid
