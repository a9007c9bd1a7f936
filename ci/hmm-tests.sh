#!/usr/bin/env bash
# The kernel's own HMM selftest, tools/testing/selftests/mm/hmm-tests.c,
# compiled unmodified with the kselftest harness and run against the devpriv
# model through crates/devpriv-hmm-shim (an LD_PRELOAD library standing in
# for the test_hmm driver):
#
#     bash ci/hmm-tests.sh [harness options, e.g. -r hmm.hmm_device_private.migrate]
#
# 1. The kernel source comes from ci/kernel-src.sh (Debian's
#    linux-source-6.12, extracted into target/kernel-src/; or KERNEL_SRC=/path
#    for any tree, e.g. a 7.x checkout: its hmm-tests.c then runs, built with
#    the tree's own Makefile in a scratch copy). Nothing enters the repository.
# 2. hmm-tests.c is built exactly as the kernel's Makefile builds it (gcc
#    -Wall -O2 -U_FORTIFY_SOURCE -D_GNU_SOURCE=, dynamically linked).
# 3. The shim is built in release mode and preloaded; the harness's own TAP
#    output and summary are printed.
# 4. Verdict: every case must pass, except
#    - the device-coherent variant, which must be skipped by the harness
#      ("DEVICE_COHERENT not available": the shim has no units 2 and 3);
#    - harness skips for a missing capability (no huge pages, no gup_test
#      driver), listed in CAPABILITY_SKIPS below;
#    and a case that "passes" after the shim refused a capability inside it
#    (6.12's `compound` returns early when MAP_HUGETLB fails) is reported as
#    VACUOUS and not counted as a pass.
#
# Without kernel source: prints a loud SKIPPED banner and exits 0, unless
# CI is set or DEVPRIV_REQUIRE_KERNEL=1 (then it fails, as the kernel
# oracle does; .ci/run sets DEVPRIV_REQUIRE_KERNEL=1 after installing the
# source with ci/kernel-src.sh). Runtime: about 30 s to build the shim
# from clean, 6 s to run; the run itself is capped at 240 s.
# DEVPRIV_HMM_MIN_PASS is the least number of real passes accepted: by
# default 26 for a full run of the Debian 6.12 file (its 29 device-private
# tests less anon_write_hugetlbfs and hmm_gup_test, skipped by the harness,
# and compound, vacuous), else 1.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

say() { echo "hmm-tests: $*"; }
required() { [ -n "${CI:-}" ] && [ "${CI:-}" != "false" ] && [ "${CI:-}" != "0" ] || [ "${DEVPRIV_REQUIRE_KERNEL:-}" = "1" ]; }

if ! ksrc="$(bash ci/kernel-src.sh)"; then
    if required; then
        say "FAILED: no kernel source, and it is required here (CI or DEVPRIV_REQUIRE_KERNEL=1)"
        exit 1
    fi
    say "**************************************************************"
    say "SKIPPED, NOT PASSED: no kernel source, so the kernel's"
    say "hmm-tests.c did not run at all. Run ci/kernel-src.sh (Debian's"
    say "linux-source-6.12) or set KERNEL_SRC=/path/to/linux. In CI"
    say "(CI set, or DEVPRIV_REQUIRE_KERNEL=1) this is a failure."
    say "**************************************************************"
    exit 0
fi
src="$ksrc/tools/testing/selftests/mm/hmm-tests.c"
[ -f "$src" ] || { say "FAILED: $src missing"; exit 1; }
say "kernel source $ksrc"

out="$root/target/hmm-tests"
rm -rf "$out"
mkdir -p "$out"

# Build the test as the kernel does. A tree whose hmm-tests.c uses the mm
# selftests' helpers (vm_util.c, hugepage_settings.c; 6.15+) is built with
# its own Makefile, in a scratch copy (the Makefile writes into the tree).
if grep -q 'vm_util.h' "$src"; then
    say "building with the tree's Makefile (scratch copy in $out/tree)"
    mkdir -p "$out/tree/lib" "$out/tree/mm" "$out/tree/include"
    cp -r "$ksrc/tools" "$out/tree/"
    cp "$ksrc"/lib/test_hmm_uapi.h "$out/tree/lib/"
    cp "$ksrc"/mm/gup_test.h "$out/tree/mm/"
    [ -d "$ksrc/include/uapi" ] && mkdir -p "$out/tree/include" && cp -r "$ksrc/include/uapi" "$out/tree/include/"
    make -s -C "$out/tree/tools/testing/selftests/mm" OUTPUT="$out" "$out/hmm-tests" >"$out/build.log" 2>&1 ||
        { cat "$out/build.log"; say "FAILED: build"; exit 1; }
else
    gcc -Wall -O2 -I "$ksrc" -isystem "$ksrc/tools/include/uapi" -U_FORTIFY_SOURCE -D_GNU_SOURCE= \
        "$src" -o "$out/hmm-tests" -lpthread -lrt -lm
fi
say "built $out/hmm-tests from $src (sha256 $(sha256sum "$src" | cut -c1-16)...)"

cargo build --release --locked -q -p devpriv-hmm-shim
shim="$root/target/release/libdevpriv_hmm_shim.so"
[ -f "$shim" ] || { say "FAILED: $shim missing"; exit 1; }

set +e
# The harness kills a test after 30 s; the whole run gets 4 minutes, so
# the script stays well under CI's 5 (a hang is a failure, exit 124).
LD_PRELOAD="$shim" timeout --kill-after=10 240 "$out/hmm-tests" "$@" >"$out/run.txt" 2>&1
status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    say "FAILED: the run did not finish within 240 s"
fi
set -e
cat "$out/run.txt"

# Harness skips that mean "this kernel lacks the capability" (the shim
# behaves like a kernel without huge pages and without CONFIG_GUP_TEST).
CAPABILITY_SKIPS='Huge page could not be allocated|Not enough huge pages|Huge page size could not be determined|could not find gup_test driver'

minpass=1
[ -z "${KERNEL_SRC:-}" ] && [ $# -eq 0 ] && minpass=26
minpass="${DEVPRIV_HMM_MIN_PASS:-$minpass}"

awk -v caps="$CAPABILITY_SKIPS" -v minpass="$minpass" -v status="$status" '
    /^#  RUN / { refused = 0; next }
    /devpriv-hmm-shim: refused/ { refused = 1; next }
    /^(ok|not ok) [0-9]+ / {
        line = $0
        name = $0; sub(/^(ok|not ok) [0-9]+ /, "", name); sub(/ # .*/, "", name)
        coherent = (name ~ /_device_coherent\./)
        if (line ~ /^not ok/) { fail++; bad = bad "\n  FAIL     " name; next }
        if (line ~ / # SKIP/) {
            reason = line; sub(/.* # SKIP */, "", reason)
            if (coherent && reason ~ /DEVICE_COHERENT not available/) { coh++; next }
            if (!coherent && reason ~ caps) { capskip++; skips = skips "\n  skip     " name " (" reason ")"; next }
            fail++; bad = bad "\n  SKIPPED  " name " (" reason "): not a capability skip"; next
        }
        if (coherent) { fail++; bad = bad "\n  RAN      " name ": the coherent variant must be skipped"; next }
        if (refused) { vacuous++; vac = vac "\n  VACUOUS  " name " (passed after the shim refused a capability)"; next }
        pass++
    }
    END {
        printf "hmm-tests: verdict: %d real passes, %d vacuous, %d capability skips, %d coherent skips, %d failures\n", pass, vacuous, capskip, coh, fail
        if (skips != "") print "hmm-tests: capability skips:" skips
        if (vac != "") print "hmm-tests: vacuous passes (not counted):" vac
        if (bad != "") print "hmm-tests: problems:" bad
        if (fail > 0 || pass < minpass || pass == 0 || (status != 0 && fail == 0)) {
            if (pass < minpass) printf "hmm-tests: FAILED: %d real passes, at least %d required\n", pass, minpass
            if (status != 0 && fail == 0) printf "hmm-tests: FAILED: the harness exited with %d\n", status
            if (fail > 0) print "hmm-tests: FAILED"
            exit 1
        }
        print "hmm-tests: ok"
    }
' "$out/run.txt"
