//! devpriv-kernel-oracle (dev-only, `publish = false`): the kernel's own
//! maple tree, built from a local kernel tree at test time, as the oracle
//! for `devpriv_rangetree::RangeTree` and as its benchmark anchor.
//!
//! Kernel: `lib/maple_tree.c` with `MT_FLAGS_ALLOC_RANGE` (6.12 from
//! Debian's `linux-source-6.12`, or any tree named by `KERNEL_SRC`), built
//! in userspace with the kernel's own harness (`tools/testing/shared`,
//! `tools/include`) and liburcu.
//!
//! # Getting the kernel source
//!
//! `ci/kernel-src.sh` installs `linux-source-6.12` and `liburcu-dev` with
//! apt if they are missing and extracts the few files needed into
//! `target/kernel-src/`; `KERNEL_SRC=/path/to/linux` uses another tree.
//! `build.rs` compiles `lib/maple_tree.c` and the harness's `linux.c`
//! (`kmem_cache` on malloc) with our own C driver, `csrc/dp_maple.c`, which
//! contains no kernel code. Nothing built from the kernel (GPL) is
//! distributed: it exists only in `target/` of the machine that built it.
//!
//! Without kernel source the crate still builds (`--cfg
//! devpriv_kernel_oracle_missing`); [`MapleTree::new`] then returns
//! [`Unavailable`], and [`oracle_or_skip`] prints one line,
//! `skipped: no kernel source (run ci/kernel-src.sh)`, and lets the test
//! pass, unless `CI` is set or `DEVPRIV_REQUIRE_KERNEL=1`, where it fails
//! the test (CI can never pass by skipping).
//!
//! # Flavours
//!
//! - Debug builds (`cargo test`): the check flavour: `-O1`,
//!   `CONFIG_DEBUG_MAPLE_TREE` (the kernel's `MT_BUG_ON` checks run, and
//!   [`MapleTree::validate`] calls `mt_validate()`), `UBSan` trapping on the
//!   first undefined behaviour. `DEVPRIV_KERNEL_ASAN=1` at build time adds
//!   `AddressSanitizer` (`ci/kernel-oracle.sh` does this).
//! - Optimised builds (`cargo bench`, `--release`): the production
//!   configuration, `-O2`, no sanitizers: the benchmark anchor.
//!
//! [`flavour`] says which one a binary holds.
//!
//! # Differences from the kernel
//!
//! - Values are integers up to `i64::MAX`, stored as `xa_mk_value(v)`
//!   (never `NULL`, never mistaken for an internal node).
//! - The harness's `kmem_cache` is malloc-backed: nodes come from
//!   `posix_memalign()` and go back to `free()`, where the kernel has a
//!   slab. Writes therefore cost more here than in a kernel; loads do not
//!   allocate. The harness fails every non-sleeping allocation unless told
//!   otherwise; the driver allows them, so writes take the kernel's usual
//!   path (`GFP_NOWAIT` first).
//! - `rcu_read_lock()` is liburcu's (memb flavour): a few thread-local
//!   loads and stores, where a non-preemptible kernel has none.
//! - Every call goes through one non-inlined C call (the kernel's callers
//!   call `mtree_load()` out of line too).

use devpriv_core::Errno;
use std::ffi::{c_int, c_ulong};
use std::fmt;
use std::io::Write;
use std::ops::RangeInclusive;
use std::ptr::NonNull;

mod ffi;

/// The largest value a [`MapleTree`] stores (`xa_mk_value()` takes
/// non-negative longs).
///
/// Kernel: `xa_mk_value()`, `include/linux/xarray.h` (main).
pub const MAX_VALUE: u64 = i64::MAX as u64;

/// The kernel's maple tree is not available in this build.
///
/// Kernel: none (model only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unavailable(pub &'static str);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kernel maple tree unavailable: {}", self.0)
    }
}

impl std::error::Error for Unavailable {}

/// Why the tree is unavailable, or `Ok` with the kernel tree it was built
/// from.
///
/// Kernel: none (model only).
///
/// # Errors
///
/// [`Unavailable`] when the crate was built without kernel source.
pub fn available() -> Result<&'static str, Unavailable> {
    #[cfg(devpriv_kernel_oracle_missing)]
    return Err(Unavailable(env!("DEVPRIV_KERNEL_ORACLE_MISSING")));
    #[cfg(not(devpriv_kernel_oracle_missing))]
    Ok(env!("DEVPRIV_KERNEL_ORACLE_SRC"))
}

/// How the kernel's tree in this binary was compiled.
///
/// Kernel: none (model only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flavour {
    /// `CONFIG_DEBUG_MAPLE_TREE` (the kernel's own checks, `mt_validate()`).
    pub check: bool,
    /// `AddressSanitizer`.
    pub asan: bool,
    /// `UndefinedBehaviorSanitizer`.
    pub ubsan: bool,
}

impl fmt::Display for Flavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.check {
            return f.write_str("-O2 (production configuration)");
        }
        f.write_str("-O1, CONFIG_DEBUG_MAPLE_TREE")?;
        if self.asan {
            f.write_str(", ASan")?;
        }
        if self.ubsan {
            f.write_str(", UBSan")?;
        }
        Ok(())
    }
}

/// The flavour of the kernel's tree in this binary (all `false` without
/// kernel source).
///
/// Kernel: none (model only).
pub fn flavour() -> Flavour {
    let f = ffi::dp_mt_flavour();
    Flavour {
        check: f & ffi::FLAVOUR_CHECK != 0,
        asan: f & ffi::FLAVOUR_ASAN != 0,
        ubsan: f & ffi::FLAVOUR_UBSAN != 0,
    }
}

/// `true` if a missing kernel tree must fail the test: `CI` is set (to
/// anything but `false` or `0`), or `DEVPRIV_REQUIRE_KERNEL=1`.
///
/// Kernel: none (model only).
pub fn kernel_required() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    ci || std::env::var("DEVPRIV_REQUIRE_KERNEL").is_ok_and(|v| v == "1")
}

/// The message a skipped oracle test prints.
///
/// Kernel: none (model only).
pub const SKIP_LINE: &str = "skipped: no kernel source (run ci/kernel-src.sh)";

/// For oracle tests: `true` if the kernel's tree is available. Otherwise
/// prints [`SKIP_LINE`] once per process (to stderr, past the test
/// harness's capture) and returns `false`, so the test can return early
/// and pass.
///
/// Kernel: none (model only).
///
/// # Panics
///
/// When the tree is unavailable and [`kernel_required`] holds: the test
/// fails instead of skipping.
pub fn oracle_or_skip() -> bool {
    static ONCE: std::sync::Once = std::sync::Once::new();
    match available() {
        Ok(_) => true,
        Err(why) => {
            assert!(
                !kernel_required(),
                "{why}: required here (CI or DEVPRIV_REQUIRE_KERNEL=1); run ci/kernel-src.sh first"
            );
            ONCE.call_once(|| {
                // Straight to the stream: libtest captures only print macros.
                let _ = writeln!(std::io::stderr(), "{SKIP_LINE}");
            });
            false
        }
    }
}

/// The kernel's maple tree, initialised with `MT_FLAGS_ALLOC_RANGE`,
/// mapping non-overlapping ranges of `u64` keys to integer values.
///
/// Kernel: `struct maple_tree`, `mt_init_flags(mt, MT_FLAGS_ALLOC_RANGE)`,
/// `lib/maple_tree.c`, not in RCU mode (as `device_private_pgmap_tree`, main).
///
/// Readers take `&self` and writers `&mut self`: outside RCU mode the
/// kernel's readers must not race its writers either.
///
/// # Invariants
///
/// `raw` came from `dp_mt_new()`, is freed only in `Drop`, and is used by
/// one thread at a time (`&mut self` for writes; the type is not `Sync`).
pub struct MapleTree {
    raw: NonNull<ffi::DpMt>,
}

// SAFETY: The C tree holds no thread-affine state: each call registers its
// thread with liburcu as needed, and the node cache is shared and locked.
unsafe impl Send for MapleTree {}

impl fmt::Debug for MapleTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapleTree").finish_non_exhaustive()
    }
}

impl Drop for MapleTree {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `dp_mt_new()` and is freed only here.
        unsafe { ffi::dp_mt_free(self.raw.as_ptr()) }
    }
}

/// A kernel return value as a `Result`.
///
/// # Panics
///
/// If the kernel returned an errno the model does not know (none of these
/// calls can).
fn check(ret: c_int) -> Result<(), Errno> {
    if ret == 0 {
        return Ok(());
    }
    Err(Errno::from_kernel(ret)
        .unwrap_or_else(|| panic!("the maple tree returned {ret}, an errno the model lacks")))
}

/// `Err(EINVAL)` for a value the tree cannot store.
fn value_ok(value: u64) -> Result<c_ulong, Errno> {
    if value > MAX_VALUE {
        Err(Errno::EINVAL)
    } else {
        Ok(value)
    }
}

impl MapleTree {
    /// An empty tree.
    ///
    /// Kernel: `mt_init_flags(mt, MT_FLAGS_ALLOC_RANGE)` (main).
    ///
    /// # Errors
    ///
    /// [`Unavailable`] without kernel source, or if `malloc` failed.
    pub fn new() -> Result<MapleTree, Unavailable> {
        available()?;
        NonNull::new(ffi::dp_mt_new())
            .map(|raw| MapleTree { raw })
            .ok_or(Unavailable("malloc failed"))
    }

    fn ptr(&self) -> *mut ffi::DpMt {
        self.raw.as_ptr()
    }

    /// Stores `value` at the lowest free range of `size` keys inside
    /// `window` and returns its start.
    ///
    /// Kernel: `mtree_alloc_range(mt, &start, entry, size, min, max,
    /// GFP_KERNEL)` (main).
    ///
    /// # Errors
    ///
    /// The kernel's: `EINVAL` (`size` 0, inverted window, window smaller
    /// than `size`), `EBUSY` (no gap fits), `ENOMEM`; and `EINVAL` for a
    /// value above [`MAX_VALUE`] (the tree is not called).
    pub fn alloc_range(
        &mut self,
        size: u64,
        window: RangeInclusive<u64>,
        value: u64,
    ) -> Result<u64, Errno> {
        self.alloc(size, window, value, false)
    }

    /// As [`alloc_range`](Self::alloc_range), the highest free range.
    ///
    /// Kernel: `mtree_alloc_rrange()` (main).
    ///
    /// # Errors
    ///
    /// As for [`alloc_range`](Self::alloc_range).
    pub fn alloc_rrange(
        &mut self,
        size: u64,
        window: RangeInclusive<u64>,
        value: u64,
    ) -> Result<u64, Errno> {
        self.alloc(size, window, value, true)
    }

    fn alloc(
        &mut self,
        size: u64,
        window: RangeInclusive<u64>,
        value: u64,
        rev: bool,
    ) -> Result<u64, Errno> {
        let value = value_ok(value)?;
        let mut start: c_ulong = 0;
        // SAFETY: `ptr()` is a live tree used by this thread alone
        // (`&mut self`); `start` is a valid out pointer.
        let ret = unsafe {
            ffi::dp_mt_alloc(
                self.ptr(),
                &mut start,
                value,
                size,
                *window.start(),
                *window.end(),
                c_int::from(rev),
            )
        };
        check(ret).map(|()| start)
    }

    /// The start [`alloc_range`](Self::alloc_range) (or, with `rev`,
    /// [`alloc_rrange`](Self::alloc_rrange)) would choose, storing nothing.
    ///
    /// Kernel: `mas_empty_area()` / `mas_empty_area_rev()` under
    /// `mtree_lock()` (main).
    ///
    /// # Errors
    ///
    /// As for [`alloc_range`](Self::alloc_range).
    pub fn find_gap(
        &self,
        size: u64,
        window: RangeInclusive<u64>,
        rev: bool,
    ) -> Result<u64, Errno> {
        let mut start: c_ulong = 0;
        // SAFETY: `ptr()` is a live tree; the call takes the tree's lock
        // and does not modify it; `start` is a valid out pointer.
        let ret = unsafe {
            ffi::dp_mt_empty_area(
                self.ptr(),
                &mut start,
                size,
                *window.start(),
                *window.end(),
                c_int::from(rev),
            )
        };
        check(ret).map(|()| start)
    }

    /// Stores `value` at exactly `range`.
    ///
    /// Kernel: `mtree_insert_range(mt, first, last, entry, GFP_KERNEL)` (main).
    ///
    /// # Errors
    ///
    /// The kernel's: `EINVAL` (inverted range), `EEXIST` (part of it is
    /// occupied), `ENOMEM`; `EINVAL` for a value above [`MAX_VALUE`].
    pub fn insert_range(&mut self, range: RangeInclusive<u64>, value: u64) -> Result<(), Errno> {
        let value = value_ok(value)?;
        // SAFETY: `ptr()` is a live tree used by this thread alone.
        check(unsafe { ffi::dp_mt_insert_range(self.ptr(), *range.start(), *range.end(), value) })
    }

    /// Removes the whole range holding `index` and returns its value;
    /// `None` in a gap.
    ///
    /// Kernel: `mtree_erase(mt, index)` (main).
    pub fn erase(&mut self, index: u64) -> Option<u64> {
        let mut value: c_ulong = 0;
        // SAFETY: `ptr()` is a live tree used by this thread alone;
        // `value` is a valid out pointer.
        let found = unsafe { ffi::dp_mt_erase(self.ptr(), index, &mut value) };
        (found != 0).then_some(value)
    }

    /// The value of the range holding `index`; `None` in a gap.
    ///
    /// Kernel: `mtree_load(mt, index)` (main).
    #[inline]
    pub fn load(&self, index: u64) -> Option<u64> {
        let mut value: c_ulong = 0;
        // SAFETY: `ptr()` is a live tree; no writer runs (`&self`);
        // `value` is a valid out pointer.
        let found = unsafe { ffi::dp_mt_load(self.ptr(), index, &mut value) };
        (found != 0).then_some(value)
    }

    /// The range holding `index` and its value, or the gap holding it and
    /// `None`.
    ///
    /// Kernel: `mas_walk()` (`mas.index`, `mas.last`) under
    /// `rcu_read_lock()` (main).
    pub fn walk(&self, index: u64) -> (RangeInclusive<u64>, Option<u64>) {
        let (mut first, mut last, mut value): (c_ulong, c_ulong, c_ulong) = (0, 0, 0);
        // SAFETY: `ptr()` is a live tree; no writer runs (`&self`); the
        // out pointers are valid.
        let found =
            unsafe { ffi::dp_mt_walk(self.ptr(), index, &mut first, &mut last, &mut value) };
        (first..=last, (found != 0).then_some(value))
    }

    /// The first range that ends at or after `index` (it may start after
    /// it) and its value.
    ///
    /// Kernel: `mas_find(&mas, ULONG_MAX)` from `index` under
    /// `rcu_read_lock()` (what `mt_find()` does, main).
    pub fn find_from(&self, index: u64) -> Option<(RangeInclusive<u64>, u64)> {
        let (mut first, mut last, mut value): (c_ulong, c_ulong, c_ulong) = (0, 0, 0);
        // SAFETY: `ptr()` is a live tree; no writer runs (`&self`); the
        // out pointers are valid.
        let found =
            unsafe { ffi::dp_mt_find(self.ptr(), index, &mut first, &mut last, &mut value) };
        (found != 0).then_some((first..=last, value))
    }

    /// Every stored range and its value, in order.
    ///
    /// Kernel: `mas_for_each(&mas, entry, ULONG_MAX)` (main).
    pub fn entries(&self) -> Vec<(RangeInclusive<u64>, u64)> {
        let mut buf = vec![ffi::DpRange::default(); 64];
        loop {
            // SAFETY: `ptr()` is a live tree; no writer runs (`&self`);
            // `buf` has room for `buf.len()` ranges.
            let n = unsafe { ffi::dp_mt_dump(self.ptr(), buf.as_mut_ptr(), buf.len()) };
            if n <= buf.len() {
                buf.truncate(n);
                return buf.iter().map(|r| (r.first..=r.last, r.value)).collect();
            }
            buf.resize(n, ffi::DpRange::default());
        }
    }

    /// Runs the kernel's own structural check, `mt_validate()`, which
    /// aborts the process on a broken tree. Returns `false` (checking
    /// nothing) in the optimised flavour, which lacks it.
    ///
    /// Kernel: `mt_validate()` (`CONFIG_DEBUG_MAPLE_TREE`, main).
    pub fn validate(&self) -> bool {
        // SAFETY: `ptr()` is a live tree; the call takes the tree's lock.
        unsafe { ffi::dp_mt_validate(self.ptr()) != 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapper_answers_as_the_kernel() {
        if !oracle_or_skip() {
            return;
        }
        let mut t = MapleTree::new().expect("available");
        // The Rust binding's example: three allocations of 100 at 0, 100, 200.
        for want in [0, 100, 200] {
            assert_eq!(t.alloc_range(100, 0..=999, want), Ok(want));
        }
        assert_eq!(t.load(150), Some(100));
        assert_eq!(t.walk(150), (100..=199, Some(100)));
        assert_eq!(t.walk(300), (300..=u64::MAX, None));
        assert_eq!(t.find_from(250), Some((200..=299, 200)));
        assert_eq!(t.alloc_rrange(10, 0..=999, 7), Ok(990));
        assert_eq!(t.find_gap(700, 0..=999, false), Err(Errno::EBUSY));
        assert_eq!(t.find_gap(0, 0..=999, false), Err(Errno::EINVAL));
        assert_eq!(t.insert_range(5..=5, 9), Err(Errno::EEXIST));
        assert_eq!(
            t.insert_range(RangeInclusive::new(9, 5), 9),
            Err(Errno::EINVAL)
        );
        assert_eq!(t.erase(150), Some(100));
        assert_eq!(t.erase(150), None);
        assert_eq!(
            t.entries(),
            vec![(0..=99, 0), (200..=299, 200), (990..=999, 7)]
        );
        assert_eq!(t.validate(), flavour().check);
    }

    #[test]
    fn values_above_max_value_are_refused_before_the_kernel() {
        if !oracle_or_skip() {
            return;
        }
        let mut t = MapleTree::new().expect("available");
        assert_eq!(t.insert_range(0..=0, MAX_VALUE + 1), Err(Errno::EINVAL));
        assert_eq!(t.alloc_range(1, 0..=9, u64::MAX), Err(Errno::EINVAL));
        assert!(t.entries().is_empty());
        assert_eq!(t.insert_range(0..=0, MAX_VALUE), Ok(()));
        assert_eq!(t.load(0), Some(MAX_VALUE));
    }

    #[test]
    fn entries_grow_their_buffer() {
        if !oracle_or_skip() {
            return;
        }
        let mut t = MapleTree::new().expect("available");
        for i in 0..1000 {
            t.insert_range(3 * i..=3 * i + 1, i).expect("disjoint");
        }
        let all = t.entries();
        assert_eq!(all.len(), 1000);
        assert!(
            all.iter()
                .zip(0..)
                .all(|((r, v), i)| *v == i && *r == (3 * i..=3 * i + 1))
        );
        // A tree moved to another thread still works (liburcu registration).
        let n = std::thread::spawn(move || t.entries().len())
            .join()
            .expect("no panic");
        assert_eq!(n, 1000);
    }

    #[test]
    fn flavour_names_its_build() {
        let f = Flavour {
            check: true,
            asan: true,
            ubsan: true,
        };
        assert_eq!(f.to_string(), "-O1, CONFIG_DEBUG_MAPLE_TREE, ASan, UBSan");
        assert!(Flavour::default().to_string().starts_with("-O2"));
    }
}
