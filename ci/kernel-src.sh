#!/usr/bin/env bash
# Finds the Linux kernel source that the dev-only oracle crates build
# against, and prints its directory on stdout (the only thing printed
# there; progress goes to stderr):
#
#     KSRC=$(ci/kernel-src.sh)
#
# - KERNEL_SRC=/path/to/linux: use that tree (any checkout, e.g. a 7.x
#   one); only liburcu-dev is installed if missing.
# - Otherwise: install Debian's linux-source-6.12 (and liburcu-dev) with
#   apt if missing, and extract only the paths listed in PATHS below from
#   /usr/src/linux-source-6.12.tar.xz into target/kernel-src/ (about 5 MB;
#   a second run with the same list returns at once).
#
# Nothing from the kernel is copied into the repository: target/ is
# ignored by git. The kernel is GPL; we build against it at test time and
# distribute nothing built from it (docs/DESIGN.md).
#
# Exit status 1, with one line on stderr, when the source cannot be had
# (not Debian, not root and the package is missing, apt failed).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

# Paths (files or directories) extracted from the tarball, relative to the
# kernel tree. Add what a new oracle needs; the cache is re-extracted when
# this list changes.
PATHS=(
    # lib/maple_tree.c and the kernel's userspace harness for it
    # (crates/devpriv-kernel-oracle).
    lib/maple_tree.c
    include/linux/maple_tree.h
    include/linux/xarray.h
    include/linux/radix-tree.h
    include/linux/kconfig.h
    include/linux/gfp_types.h
    tools/include
    tools/arch/x86/include
    tools/testing/shared
    # HMM selftests and the test_hmm driver's uapi.
    tools/testing/selftests/kselftest.h
    tools/testing/selftests/kselftest_harness.h
    tools/testing/selftests/mm/hmm-tests.c
    tools/testing/selftests/mm/test_hmm.sh
    tools/testing/selftests/mm/vm_util.c
    tools/testing/selftests/mm/vm_util.h
    lib/test_hmm.c
    lib/test_hmm_uapi.h
    mm/gup_test.h
)

VERSION=6.12
PACKAGE="linux-source-$VERSION"
TARBALL="/usr/src/$PACKAGE.tar.xz"
CACHE="$root/target/kernel-src/$PACKAGE"

say() { echo "kernel-src: $*" >&2; }
die() {
    say "$*"
    exit 1
}

# Installs the Debian packages named, if any is missing.
ensure_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install them by hand or set KERNEL_SRC"
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}: run as root, or: sudo apt-get install ${missing[*]}"
    say "installing ${missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine has no package lists yet: update once, then retry.
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
        { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; } ||
        die "apt-get could not install ${missing[*]}"
}

if [ -n "${KERNEL_SRC:-}" ]; then
    ensure_packages liburcu-dev
    [ -f "$KERNEL_SRC/lib/maple_tree.c" ] || die "KERNEL_SRC=$KERNEL_SRC has no lib/maple_tree.c"
    cd "$KERNEL_SRC" && pwd
    exit 0
fi

# The stamp records what was extracted, from which tarball.
want_stamp() {
    stat -c '%s %Y' "$TARBALL"
    printf '%s\n' "${PATHS[@]}"
}

if [ -f "$CACHE/.devpriv-stamp" ] && [ -f "$TARBALL" ] &&
    [ "$(want_stamp)" = "$(cat "$CACHE/.devpriv-stamp")" ] &&
    dpkg-query -W -f='${Status}' liburcu-dev 2>/dev/null | grep -q "install ok installed"; then
    echo "$CACHE"
    exit 0
fi

ensure_packages "$PACKAGE" liburcu-dev
[ -f "$TARBALL" ] || die "$PACKAGE is installed but $TARBALL is missing"

say "extracting ${#PATHS[@]} paths from $TARBALL into $CACHE"
tmp="$CACHE.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
members=()
for p in "${PATHS[@]}"; do
    members+=("$PACKAGE/$p")
done
tar -xJf "$TARBALL" -C "$tmp" --strip-components=1 "${members[@]}" ||
    die "tar failed (a path in PATHS missing from this kernel version?)"
want_stamp >"$tmp/.devpriv-stamp"
rm -rf "$CACHE"
mv "$tmp" "$CACHE"
trap - EXIT
echo "$CACHE"
