#!/usr/bin/env bash
# The differential tests of RangeTree against the kernel's own maple tree
# (crates/devpriv-kernel-oracle): gets the kernel source (ci/kernel-src.sh,
# which installs linux-source-6.12 and liburcu-dev if missing), then runs
#
# 1. 1 000 000 operations (DEVPRIV_ORACLE_OPS) with the kernel's tree in
#    its check flavour (CONFIG_DEBUG_MAPLE_TREE, UBSan), and the tests of
#    the two kernel quirks excluded by name;
# 2. 200 000 more (DEVPRIV_ORACLE_ASAN_OPS) with AddressSanitizer too.
#
# DEVPRIV_REQUIRE_KERNEL=1: a missing kernel tree fails instead of skipping.
# Override the seed with DEVPRIV_ORACLE_SEED. A longer run for people:
#   DEVPRIV_ORACLE_OPS=50000000 bash ci/kernel-oracle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ksrc="$(bash ci/kernel-src.sh)"
echo "kernel-oracle: kernel source $ksrc"
export DEVPRIV_REQUIRE_KERNEL=1
DEVPRIV_ORACLE_OPS="${DEVPRIV_ORACLE_OPS:-1000000}" \
    cargo test -p devpriv-kernel-oracle --locked
DEVPRIV_KERNEL_ASAN=1 DEVPRIV_ORACLE_OPS="${DEVPRIV_ORACLE_ASAN_OPS:-200000}" \
    cargo test -p devpriv-kernel-oracle --locked --test differential
echo "kernel-oracle: ok"
