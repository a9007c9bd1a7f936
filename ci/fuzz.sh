#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for FUZZ_SECS seconds (default 60)
# each, then prints the corpus size and execution count of each.
#
# Needs a nightly toolchain and cargo-fuzz; tries to install them quietly
# and, if it cannot, prints a SKIPPED line and exits 0 (the same logic runs
# on stable as proptests in crates/devpriv-fuzz/tests/, under
# `cargo test --workspace`).
#
# Usage: ci/fuzz.sh [target...]   (default: all four)
#
# To refresh the checked-in corpora after a run (smallest set with the
# same coverage):
#   cd fuzz && cargo +nightly fuzz run T /tmp/min-T corpus/T \
#       ../crates/devpriv-fuzz/corpus/T -- -set_cover_merge=1
#   and replace crates/devpriv-fuzz/corpus/T with /tmp/min-T.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${FUZZ_SECS:-60}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(rangetree_ops page_lifecycle_ops encodings check_pte_pmd)
fi

skip() {
    echo "fuzz: SKIPPED ($1); the same logic runs as proptests in cargo test --workspace"
    exit 0
}

if ! cargo +nightly --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal >/dev/null 2>&1 ||
        skip "no nightly toolchain and rustup could not install one"
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked >/dev/null 2>&1 ||
        skip "cargo-fuzz is not installed and could not be installed"
fi

cd fuzz
cargo +nightly fuzz build >/dev/null 2>&1 || cargo +nightly fuzz build
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    log="$(mktemp)"
    echo "fuzz: $t for ${secs}s"
    # WARN lines from bad calls the targets make on purpose go to stderr
    # with libFuzzer's own output; keep only libFuzzer's lines.
    # New inputs go to fuzz/corpus/<t> (ignored); the checked-in, minimised
    # corpus in crates/devpriv-fuzz/corpus/<t> seeds the run.
    if ! cargo +nightly fuzz run "$t" "corpus/$t" "../crates/devpriv-fuzz/corpus/$t" -- \
        -max_total_time="$secs" \
        -print_final_stats=1 >"$log" 2>&1; then
        grep -v '^WARNING: ' "$log" | tail -40
        echo "fuzz: $t FAILED (crash input in fuzz/artifacts/$t/)"
        status=1
    fi
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    files="$(find "corpus/$t" -type f | wc -l)"
    bytes="$(du -sb "corpus/$t" | cut -f1)"
    echo "fuzz: $t: ${execs:-?} executions, corpus ${files} files (${bytes} bytes)"
    rm -f "$log"
done
exit "$status"
