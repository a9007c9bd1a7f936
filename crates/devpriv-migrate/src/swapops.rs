//! Swap-entry type numbers and the arch-independent `swp_entry_t` encoding.
//!
//! Kernel: `include/linux/swap.h` (`MAX_SWAPFILES`, `SWP_*` type numbers),
//! `include/linux/swapops.h` (`swp_entry()`, `SWP_PFN_BITS`,
//! `SWP_MIG_YOUNG_BIT`, `make_*_entry()`), v6 proposal patches 06, 08–10, 13.
//!
//! A swap entry ("softleaf", [`Softleaf`]) is `type << 58 | offset`, with a
//! 5-bit type and a 58-bit offset. Real swap files use the low type numbers;
//! the special entries (hwpoison, migration, device-private, markers) are
//! carved from the top. The v6 proposal adds three device-private migration types,
//! so `SWP_DEVICE_NUM` goes from 3 to 6 and [`MAX_SWAPFILES`] drops from 24 to
//! 21 ([`SwpTypes::MAINLINE`] against [`SwpTypes::SERIES`]).
//!
//! Every constructor here rejects values that do not fit with
//! [`Errno::EINVAL`] instead of silently masking them as C does.

use crate::leafops::Softleaf;
use crate::pgtable::{SWP_OFFSET_FIRST_BIT, SWP_PTE_OFFSET_BITS};
use devpriv_core::{DevicePrivateOffset, Errno, PAGE_SHIFT, PageFrame, PagingMode, Pfn};

/// Bits of the type field.
///
/// Kernel: `MAX_SWAPFILES_SHIFT`, `include/linux/swap.h` (main).
pub const MAX_SWAPFILES_SHIFT: u32 = 5;

/// Bits of a swap entry value that may be set (an `XA_VALUE` is 63 bits).
///
/// Kernel: `BITS_PER_XA_VALUE`, `include/linux/xarray.h` (main).
pub const BITS_PER_XA_VALUE: u32 = 63;

/// Position of the type field in a swap entry value (58).
///
/// Kernel: `SWP_TYPE_SHIFT`, `include/linux/swapops.h` (main).
pub const SWP_TYPE_SHIFT: u32 = BITS_PER_XA_VALUE - MAX_SWAPFILES_SHIFT;

/// Mask of the offset field of a swap entry value (58 bits).
///
/// Kernel: `SWP_OFFSET_MASK`, `include/linux/swapops.h` (main).
pub const SWP_OFFSET_MASK: u64 = (1 << SWP_TYPE_SHIFT) - 1;

/// Number of hwpoison types.
///
/// Kernel: `SWP_HWPOISON_NUM`, `include/linux/swap.h` (main).
pub const SWP_HWPOISON_NUM: u32 = 1;

/// Number of migration types (read, read-exclusive, write).
///
/// Kernel: `SWP_MIGRATION_NUM`, `include/linux/swap.h` (main).
pub const SWP_MIGRATION_NUM: u32 = 3;

/// Number of PTE-marker types.
///
/// Kernel: `SWP_PTE_MARKER_NUM`, `include/linux/swap.h` (main).
pub const SWP_PTE_MARKER_NUM: u32 = 1;

/// The special swap type numbers, derived from `SWP_DEVICE_NUM` the way
/// `include/linux/swap.h` derives them.
///
/// Kernel: the `SWP_*` / `MAX_SWAPFILES` definitions in
/// `include/linux/swap.h`; [`SwpTypes::MAINLINE`] is 7.0,
/// [`SwpTypes::SERIES`] is after v6 patch 08/13.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwpTypes {
    /// Kernel: `SWP_DEVICE_NUM` (3 in mainline, 6 with the v6 proposal).
    pub device_num: u32,
    /// Real swap types are `0..max_swapfiles`. Kernel: `MAX_SWAPFILES` (main).
    pub max_swapfiles: u32,
    /// Kernel: `SWP_HWPOISON` (main).
    pub hwpoison: u32,
    /// Kernel: `SWP_MIGRATION_READ` (main).
    pub migration_read: u32,
    /// Kernel: `SWP_MIGRATION_READ_EXCLUSIVE` (main).
    pub migration_read_exclusive: u32,
    /// Kernel: `SWP_MIGRATION_WRITE` (main).
    pub migration_write: u32,
    /// Kernel: `SWP_DEVICE_WRITE` (defined before `SWP_DEVICE_READ`, main).
    pub device_write: u32,
    /// Kernel: `SWP_DEVICE_READ` (main).
    pub device_read: u32,
    /// Kernel: `SWP_DEVICE_EXCLUSIVE` (main).
    pub device_exclusive: u32,
    /// Kernel: `SWP_MIGRATION_DEVICE_READ` (v6 only).
    pub migration_device_read: Option<u32>,
    /// Kernel: `SWP_MIGRATION_DEVICE_READ_EXCLUSIVE` (v6 only).
    pub migration_device_read_exclusive: Option<u32>,
    /// Kernel: `SWP_MIGRATION_DEVICE_WRITE` (v6 only).
    pub migration_device_write: Option<u32>,
    /// Kernel: `SWP_PTE_MARKER` (main).
    pub pte_marker: u32,
}

impl SwpTypes {
    /// The layout for a given `SWP_DEVICE_NUM` (3 or 6).
    ///
    /// Kernel: the arithmetic of `include/linux/swap.h` (main).
    const fn with_device_num(device_num: u32) -> SwpTypes {
        let max_swapfiles = (1 << MAX_SWAPFILES_SHIFT)
            - device_num
            - SWP_MIGRATION_NUM
            - SWP_HWPOISON_NUM
            - SWP_PTE_MARKER_NUM;
        let migration = max_swapfiles + SWP_HWPOISON_NUM;
        let device = migration + SWP_MIGRATION_NUM;
        let has_dev_migration = device_num >= 6;
        SwpTypes {
            device_num,
            max_swapfiles,
            hwpoison: max_swapfiles,
            migration_read: migration,
            migration_read_exclusive: migration + 1,
            migration_write: migration + 2,
            device_write: device,
            device_read: device + 1,
            device_exclusive: device + 2,
            migration_device_read: if has_dev_migration {
                Some(device + 3)
            } else {
                None
            },
            migration_device_read_exclusive: if has_dev_migration {
                Some(device + 4)
            } else {
                None
            },
            migration_device_write: if has_dev_migration {
                Some(device + 5)
            } else {
                None
            },
            pte_marker: device + device_num,
        }
    }

    /// Mainline 7.0: `SWP_DEVICE_NUM = 3`, `MAX_SWAPFILES = 24`.
    ///
    /// Kernel: `include/linux/swap.h` before the v6 proposal.
    pub const MAINLINE: SwpTypes = SwpTypes::with_device_num(3);

    /// With the v6 proposal: `SWP_DEVICE_NUM = 6`, `MAX_SWAPFILES = 21`. The
    /// model uses these numbers everywhere.
    ///
    /// Kernel: `include/linux/swap.h` after v6 patch 08/13.
    pub const SERIES: SwpTypes = SwpTypes::with_device_num(6);
}

/// Number of real swap types: 21 with the v6 proposal (24 in mainline).
///
/// Kernel: `MAX_SWAPFILES`, `include/linux/swap.h` (v6 numbering).
pub const MAX_SWAPFILES: u32 = SwpTypes::SERIES.max_swapfiles;
/// Kernel: `SWP_HWPOISON` (21, v6 numbering).
pub const SWP_HWPOISON: u32 = SwpTypes::SERIES.hwpoison;
/// Kernel: `SWP_MIGRATION_READ` (22, v6 numbering).
pub const SWP_MIGRATION_READ: u32 = SwpTypes::SERIES.migration_read;
/// Kernel: `SWP_MIGRATION_READ_EXCLUSIVE` (23, v6 numbering).
pub const SWP_MIGRATION_READ_EXCLUSIVE: u32 = SwpTypes::SERIES.migration_read_exclusive;
/// Kernel: `SWP_MIGRATION_WRITE` (24, v6 numbering).
pub const SWP_MIGRATION_WRITE: u32 = SwpTypes::SERIES.migration_write;
/// Kernel: `SWP_DEVICE_WRITE` (25, v6 numbering).
pub const SWP_DEVICE_WRITE: u32 = SwpTypes::SERIES.device_write;
/// Kernel: `SWP_DEVICE_READ` (26, v6 numbering).
pub const SWP_DEVICE_READ: u32 = SwpTypes::SERIES.device_read;
/// Kernel: `SWP_DEVICE_EXCLUSIVE` (27, v6 numbering).
pub const SWP_DEVICE_EXCLUSIVE: u32 = SwpTypes::SERIES.device_exclusive;
/// Kernel: `SWP_MIGRATION_DEVICE_READ` (28, v6 08/13).
pub const SWP_MIGRATION_DEVICE_READ: u32 = SwpTypes::SERIES.device_exclusive + 1;
/// Kernel: `SWP_MIGRATION_DEVICE_READ_EXCLUSIVE` (29, v6 08/13).
pub const SWP_MIGRATION_DEVICE_READ_EXCLUSIVE: u32 = SwpTypes::SERIES.device_exclusive + 2;
/// Kernel: `SWP_MIGRATION_DEVICE_WRITE` (30, v6 08/13).
pub const SWP_MIGRATION_DEVICE_WRITE: u32 = SwpTypes::SERIES.device_exclusive + 3;
/// Kernel: `SWP_PTE_MARKER` (31, main and v6).
pub const SWP_PTE_MARKER: u32 = SwpTypes::SERIES.pte_marker;

/// The machine's L1TF state, as `arch_max_swapfile_size()` reads it at
/// boot: whether the CPU has the bug with the mitigation on, and its
/// `x86_cache_bits`.
///
/// Kernel: `boot_cpu_has_bug(X86_BUG_L1TF) && l1tf_mitigation !=
/// L1TF_MITIGATION_OFF` and `boot_cpu_data.x86_cache_bits`,
/// `arch/x86/mm/init.c`, `arch/x86/kernel/cpu/bugs.c` (main).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum L1tf {
    /// Not affected, or the mitigation is off: swap offsets are not
    /// clamped.
    #[default]
    NotAffected,
    /// Affected and mitigated: swap offsets stay below
    /// `l1tf_pfn_limit()` so that an inverted swap PTE never points at
    /// cacheable memory.
    Mitigated {
        /// Kernel: `boot_cpu_data.x86_cache_bits` (39–46 on most affected
        /// client and server parts) (main).
        x86_cache_bits: u32,
    },
}

impl L1tf {
    /// The largest number of pages a swap file may have: what fits in a
    /// swap PTE's offset (2^50), clamped under the L1TF mitigation to
    /// `l1tf_pfn_limit() << (PAGE_SHIFT - SWP_OFFSET_FIRST_BIT)`, i.e.
    /// 2^(`x86_cache_bits` − 10).
    ///
    /// Kernel: `arch_max_swapfile_size()`, `arch/x86/mm/init.c`
    /// (`generic_max_swapfile_size()`, `l1tf_pfn_limit()` =
    /// `BIT_ULL(x86_cache_bits - 1 - PAGE_SHIFT)`) (main).
    pub const fn max_swapfile_size(self) -> u64 {
        let pages = 1u64 << SWP_PTE_OFFSET_BITS;
        match self {
            L1tf::NotAffected => pages,
            L1tf::Mitigated { x86_cache_bits } => {
                let shift = x86_cache_bits.saturating_sub(1 + PAGE_SHIFT)
                    + (PAGE_SHIFT - SWP_OFFSET_FIRST_BIT);
                if shift >= SWP_PTE_OFFSET_BITS {
                    pages
                } else {
                    1 << shift
                }
            }
        }
    }

    /// Whether migration entries keep the young/dirty bits: only if a swap
    /// offset can hold `SWP_PFN_BITS + 2` bits. True unless the L1TF
    /// mitigation clamps offsets: with 4-level paging it needs
    /// `x86_cache_bits` ≥ 46, with 5-level ≥ 52. When false,
    /// `make_migration_entry_young/dirty()` return the entry unchanged and
    /// `softleaf_is_migration_young/dirty()` return false (pages come back
    /// old and clean).
    ///
    /// Kernel: `swap_migration_ad_supported`, computed once by
    /// `swapfile_init()`, `mm/swapfile.c`; read through
    /// `migration_entry_supports_ad()`, `include/linux/swapops.h` (main).
    pub const fn swap_migration_ad_supported(self, mode: PagingMode) -> bool {
        self.max_swapfile_size() >> (mode.swp_pfn_bits() + 2) != 0
    }
}

/// Bit of a migration entry's offset that records "young".
///
/// Kernel: `SWP_MIG_YOUNG_BIT = SWP_PFN_BITS`, `include/linux/swapops.h` (main).
pub const fn swp_mig_young_bit(mode: PagingMode) -> u32 {
    mode.swp_pfn_bits()
}

/// Bit of a migration entry's offset that records "dirty".
///
/// Kernel: `SWP_MIG_DIRTY_BIT = SWP_PFN_BITS + 1`, `include/linux/swapops.h` (main).
pub const fn swp_mig_dirty_bit(mode: PagingMode) -> u32 {
    mode.swp_pfn_bits() + 1
}

/// PTE-marker bit: userfaultfd write-protect.
///
/// Kernel: `PTE_MARKER_UFFD_WP`, `include/linux/swapops.h` (main).
pub const PTE_MARKER_UFFD_WP: u64 = 1;
/// PTE-marker bit: poisoned (swapin error or guest memory error).
///
/// Kernel: `PTE_MARKER_POISONED` (main).
pub const PTE_MARKER_POISONED: u64 = 1 << 1;
/// PTE-marker bit: guard region.
///
/// Kernel: `PTE_MARKER_GUARD` (main).
pub const PTE_MARKER_GUARD: u64 = 1 << 2;
/// All defined PTE-marker bits.
///
/// Kernel: `PTE_MARKER_MASK` (main).
pub const PTE_MARKER_MASK: u64 = PTE_MARKER_UFFD_WP | PTE_MARKER_POISONED | PTE_MARKER_GUARD;

/// Builds a swap entry from a type and an offset.
///
/// Kernel: `swp_entry(type, offset)`, `include/linux/swapops.h` (main).
///
/// # Differences from the kernel
///
/// C masks the offset with `SWP_OFFSET_MASK` and trusts the type; the model
/// refuses both instead.
///
/// # Errors
///
/// [`Errno::EINVAL`] if `ty` does not fit in 5 bits or `offset` in 58.
pub const fn swp_entry(ty: u32, offset: u64) -> Result<Softleaf, Errno> {
    if ty >= 1 << MAX_SWAPFILES_SHIFT || offset > SWP_OFFSET_MASK {
        return Err(Errno::EINVAL);
    }
    Ok(Softleaf::from_raw_unchecked(
        ((ty as u64) << SWP_TYPE_SHIFT) | offset,
    ))
}

/// Which of the three migration entries: the access the restored PTE
/// will grant.
///
/// Kernel: the `make_{readable,readable_exclusive,writable}_migration_entry()`
/// trio, `include/linux/swapops.h` (main).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MigrationKind {
    /// Kernel: `SWP_MIGRATION_READ` / `SWP_MIGRATION_DEVICE_READ` (v6).
    Read,
    /// Kernel: `SWP_MIGRATION_READ_EXCLUSIVE` / `SWP_MIGRATION_DEVICE_READ_EXCLUSIVE` (v6).
    ReadExclusive,
    /// Kernel: `SWP_MIGRATION_WRITE` / `SWP_MIGRATION_DEVICE_WRITE` (v6).
    Write,
}

impl MigrationKind {
    /// All three kinds.
    ///
    /// Kernel: none (model only).
    pub const ALL: [MigrationKind; 3] = [
        MigrationKind::Read,
        MigrationKind::ReadExclusive,
        MigrationKind::Write,
    ];
}

/// Checks that a pfn-carrying entry's index fits below `SWP_PFN_BITS`.
const fn check_pfn_field(raw: u64, mode: PagingMode) -> Result<u64, Errno> {
    if raw > mode.swp_pfn_mask() {
        Err(Errno::EINVAL)
    } else {
        Ok(raw)
    }
}

/// A migration entry for `frame`: `SWP_MIGRATION_*` with a pfn, or (v6)
/// `SWP_MIGRATION_DEVICE_*` with a device-private offset.
///
/// Kernel: `make_{readable,readable_exclusive,writable}_migration_entry(pfn)`
/// and the v6 proposal's `*_migration_entry_from_page(page, flags)` (09/13, 13/13),
/// which pick the device type for a device-private page. Combine with
/// [`Softleaf::with_flags`] for the `flags` argument.
///
/// # Errors
///
/// [`Errno::EINVAL`] if the index does not fit in `SWP_PFN_BITS` bits for
/// `mode` (C would silently lose the top bits in `softleaf_to_pfn()`).
pub const fn make_migration_entry(
    kind: MigrationKind,
    frame: PageFrame,
    mode: PagingMode,
) -> Result<Softleaf, Errno> {
    let raw = match check_pfn_field(frame.raw_index(), mode) {
        Ok(r) => r,
        Err(e) => return Err(e),
    };
    let ty = match (kind, frame.is_device_private()) {
        (MigrationKind::Read, false) => SWP_MIGRATION_READ,
        (MigrationKind::ReadExclusive, false) => SWP_MIGRATION_READ_EXCLUSIVE,
        (MigrationKind::Write, false) => SWP_MIGRATION_WRITE,
        (MigrationKind::Read, true) => SWP_MIGRATION_DEVICE_READ,
        (MigrationKind::ReadExclusive, true) => SWP_MIGRATION_DEVICE_READ_EXCLUSIVE,
        (MigrationKind::Write, true) => SWP_MIGRATION_DEVICE_WRITE,
    };
    swp_entry(ty, raw)
}

/// A device-private entry (`SWP_DEVICE_WRITE` or `SWP_DEVICE_READ`) for a
/// device-private offset: what a CPU PTE holds while the data lives on the
/// device.
///
/// Kernel: `make_writable_device_private_entry(offset)` /
/// `make_readable_device_private_entry(offset)`, `include/linux/swapops.h`
/// (taking an offset after v6 10/13 and 13/13).
///
/// # Errors
///
/// [`Errno::EINVAL`] if the offset does not fit in `SWP_PFN_BITS` bits.
pub const fn make_device_private_entry(
    writable: bool,
    offset: DevicePrivateOffset,
    mode: PagingMode,
) -> Result<Softleaf, Errno> {
    let raw = match check_pfn_field(offset.get(), mode) {
        Ok(r) => r,
        Err(e) => return Err(e),
    };
    swp_entry(
        if writable {
            SWP_DEVICE_WRITE
        } else {
            SWP_DEVICE_READ
        },
        raw,
    )
}

/// A device-exclusive entry: a *normal* page (with a pfn) that a device
/// holds exclusive access to.
///
/// Kernel: `make_device_exclusive_entry(pfn)`, `include/linux/swapops.h` (main).
///
/// # Errors
///
/// [`Errno::EINVAL`] if the pfn does not fit in `SWP_PFN_BITS` bits.
pub const fn make_device_exclusive_entry(pfn: Pfn, mode: PagingMode) -> Result<Softleaf, Errno> {
    match check_pfn_field(pfn.get(), mode) {
        Ok(raw) => swp_entry(SWP_DEVICE_EXCLUSIVE, raw),
        Err(e) => Err(e),
    }
}

/// A hardware-poison entry for `pfn`.
///
/// Kernel: `make_hwpoison_entry(page)`, `include/linux/swapops.h` (main).
///
/// # Differences from the kernel
///
/// Takes the pfn; the kernel's "page must be locked" check is the caller's.
///
/// # Errors
///
/// [`Errno::EINVAL`] if the pfn does not fit in `SWP_PFN_BITS` bits.
pub const fn make_hwpoison_entry(pfn: Pfn, mode: PagingMode) -> Result<Softleaf, Errno> {
    match check_pfn_field(pfn.get(), mode) {
        Ok(raw) => swp_entry(SWP_HWPOISON, raw),
        Err(e) => Err(e),
    }
}

/// A PTE-marker entry carrying `bits` ([`PTE_MARKER_MASK`]).
///
/// Kernel: `make_pte_marker_entry(marker)`, `include/linux/swapops.h` (main).
///
/// # Errors
///
/// [`Errno::EINVAL`] if `bits` is empty or has undefined bits set.
pub const fn make_pte_marker_entry(bits: u64) -> Result<Softleaf, Errno> {
    if bits == 0 || bits & !PTE_MARKER_MASK != 0 {
        return Err(Errno::EINVAL);
    }
    swp_entry(SWP_PTE_MARKER, bits)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn swp_entry_takes_the_largest_offset_and_refuses_one_more() {
        let e = swp_entry(SWP_DEVICE_READ, SWP_OFFSET_MASK).unwrap();
        assert_eq!(e.swp_offset(), SWP_OFFSET_MASK);
        assert_eq!(e.swp_type(), SWP_DEVICE_READ);
        assert_eq!(
            swp_entry(SWP_DEVICE_READ, SWP_OFFSET_MASK + 1),
            Err(Errno::EINVAL)
        );
        assert_eq!(swp_entry(1 << MAX_SWAPFILES_SHIFT, 0), Err(Errno::EINVAL));
    }

    #[test]
    fn series_type_numbers() {
        let s = SwpTypes::SERIES;
        assert_eq!(s.max_swapfiles, 21);
        assert_eq!(
            (
                s.hwpoison,
                s.migration_read,
                s.migration_read_exclusive,
                s.migration_write
            ),
            (21, 22, 23, 24)
        );
        assert_eq!(
            (s.device_write, s.device_read, s.device_exclusive),
            (25, 26, 27)
        );
        assert_eq!(
            (
                s.migration_device_read,
                s.migration_device_read_exclusive,
                s.migration_device_write
            ),
            (Some(28), Some(29), Some(30))
        );
        assert_eq!(s.pte_marker, 31);
        assert_eq!(
            (
                SWP_MIGRATION_DEVICE_READ,
                SWP_MIGRATION_DEVICE_READ_EXCLUSIVE,
                SWP_MIGRATION_DEVICE_WRITE
            ),
            (28, 29, 30)
        );
    }

    #[test]
    fn mainline_type_numbers_and_the_24_to_21_drop() {
        let m = SwpTypes::MAINLINE;
        assert_eq!(m.max_swapfiles, 24);
        assert_eq!(
            (m.hwpoison, m.migration_read, m.migration_write),
            (24, 25, 27)
        );
        assert_eq!(
            (m.device_write, m.device_read, m.device_exclusive),
            (28, 29, 30)
        );
        assert_eq!(m.migration_device_read, None);
        assert_eq!(m.pte_marker, 31);
        assert_eq!(m.max_swapfiles - SwpTypes::SERIES.max_swapfiles, 3);
    }

    #[test]
    fn constructors_refuse_what_does_not_fit() {
        let m = PagingMode::FourLevel;
        assert_eq!(swp_entry(32, 0), Err(Errno::EINVAL));
        assert_eq!(swp_entry(0, SWP_OFFSET_MASK + 1), Err(Errno::EINVAL));
        let too_big = DevicePrivateOffset::new(m.swp_pfn_mask() + 1);
        assert_eq!(
            make_device_private_entry(true, too_big, m),
            Err(Errno::EINVAL)
        );
        assert!(make_device_private_entry(true, too_big, PagingMode::FiveLevel).is_ok());
        assert_eq!(
            make_migration_entry(MigrationKind::Write, Pfn::new(1 << 34).into(), m),
            Err(Errno::EINVAL)
        );
        assert_eq!(make_pte_marker_entry(0), Err(Errno::EINVAL));
        assert_eq!(make_pte_marker_entry(1 << 3), Err(Errno::EINVAL));
    }
}
