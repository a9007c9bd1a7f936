#!/usr/bin/env bash
# Mutation testing (cargo-mutants) of the protocol and rule files: the
# walker and check_pte/check_pmd, the swap/softleaf encodings, the folio
# lifecycle, the section index and the pagemap array, percpu_ref and the
# range tree.
#
#   ci/mutants.sh                 one shard, picked from HEAD's hash (CI)
#   ci/mutants.sh --shard K/N     shard K of N (0-based)
#   ci/mutants.sh --all           every mutant (hours on 2 cores)
#
# Each group of files runs its own crate's tests (unit and integration, no
# doctests) plus devpriv-fuzz's property tests, which drive the same code.
# Results land in target/mutants/<mode>/<group>/mutants.out (mode: shard
# or all); ci/mutants_report.py
# prints the score per file and fails if a mutant survives that
# docs/testing.md does not list, with its reason, as a known survivor.
# Loom mutant plumbing is never mutated: .cargo/mutants.toml excludes, by
# naming convention, the constructors that plant a bug (`with_mutants`),
# the getters of the planted set (`mutants`) and functions that exist only
# to plant one (`mutant_*`). A planted-bug *branch* inside a real function
# (`if mutants.has(..)`) is still mutated; the mutants that only loom can
# see there are listed as concurrency-only survivors, with the loom model
# that catches the same bug, in docs/testing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
shards="${MUTANTS_SHARDS:-32}"
mode=shard
shard=""
while [ $# -gt 0 ]; do
    case "$1" in
        --all) mode=all ;;
        --shard) shard="$2"; shift ;;
        *) echo "usage: ci/mutants.sh [--all | --shard K/N]"; exit 2 ;;
    esac
    shift
done
if [ "$mode" = shard ] && [ -z "$shard" ]; then
    # Deterministic per commit, different across commits: over time every
    # shard runs.
    k=$(( 0x$(git rev-parse --short=7 HEAD) % shards ))
    shard="$k/$shards"
fi

if ! cargo mutants --version >/dev/null 2>&1; then
    echo "mutants: installing cargo-mutants"
    cargo install cargo-mutants --locked --version 27.1.0 >/dev/null 2>&1 || {
        echo "mutants: FAILED to install cargo-mutants"; exit 1; }
fi

# group|test packages|files|surveyed
# A group is "surveyed" once a full run's survivors are all listed in
# docs/testing.md; only surveyed groups run in the CI shard (an unsurveyed
# group would fail CI on survivors nobody has looked at yet). --all runs
# every group.
groups=(
    "migrate|devpriv-migrate,devpriv-fuzz|crates/devpriv-migrate/src/page_vma_mapped.rs crates/devpriv-migrate/src/swapops.rs crates/devpriv-migrate/src/leafops.rs|yes"
    "pagemap|devpriv-pagemap,devpriv-fuzz|crates/devpriv-pagemap/src/memremap/folio.rs crates/devpriv-pagemap/src/sparse.rs crates/devpriv-pagemap/src/memremap/pgmap_array.rs crates/devpriv-pagemap/src/percpu_refcount.rs|yes"
    "rangetree|devpriv-rangetree,devpriv-fuzz|crates/devpriv-rangetree/src/lib.rs crates/devpriv-rangetree/src/node.rs|yes"
)
# Fixed proptest seeds: a mutant is caught or missed the same way each run.
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-20261204}"
out="target/mutants/$mode"
mkdir -p "$out"
status=0
for g in "${groups[@]}"; do
    IFS='|' read -r name pkgs files surveyed <<<"$g"
    if [ "$mode" = shard ] && [ "$surveyed" != yes ]; then
        echo "=== mutants: $name NOT RUN in the CI shard (survey pending: ci/mutants.sh --all)"
        continue
    fi
    args=(--workspace --no-shuffle --test-package "$pkgs"
          --cargo-test-arg=--tests -o "$out/$name"
          --minimum-test-timeout 60)
    for f in $files; do args+=(-f "$f"); done
    [ "$mode" = shard ] && args+=(--shard "$shard")
    echo "=== mutants: $name (${shard:-all})"
    # Exit status 2 means "some mutants survived": the report decides.
    cargo mutants "${args[@]}" >"$out/$name.log" 2>&1 || {
        rc=$?
        if [ "$rc" -ne 2 ] && [ "$rc" -ne 3 ]; then
            tail -30 "$out/$name.log"
            echo "mutants: cargo-mutants failed ($rc) for $name"
            status=1
        fi
    }
done
python3 ci/mutants_report.py "$out" docs/testing.md || status=1
exit "$status"
