//! Softleaf entries: what a non-present PTE or PMD says, and the predicates
//! generic mm code asks of it.
//!
//! Kernel: `include/linux/leafops.h` (`softleaf_t`, `enum softleaf_type`,
//! `softleaf_is_*()`, `softleaf_to_pfn()`, `softleaf_to_flags()`), v6 proposal
//! patches 06/13 and 08/13.
//!
//! The v6 proposal' "is-a" rule (08/13, hazard H18): a device-private migration
//! entry *is* a migration entry for all generic code, so every
//! `softleaf_is_migration*()` predicate is true for its
//! `SWP_MIGRATION_DEVICE_*` counterpart too, and only the
//! `*_migration_device_private*()` predicates tell them apart.
//!
//! | type | `is_migration` | `is_migration_device_private` | `is_device_private` | `has_pfn` | [`Softleaf::to_frame`] |
//! |---|---|---|---|---|---|
//! | `SWP_MIGRATION_{READ,READ_EXCLUSIVE,WRITE}` | yes | no | no | yes | `Pfn` |
//! | `SWP_MIGRATION_DEVICE_{READ,READ_EXCLUSIVE,WRITE}` | yes | yes | no | yes | `DevicePrivate` |
//! | `SWP_DEVICE_{READ,WRITE}` | no | no | yes | yes | `DevicePrivate` |
//! | `SWP_DEVICE_EXCLUSIVE` | no | no | no | yes | `Pfn` |
//! | `SWP_HWPOISON` | no | no | no | yes | `Pfn` |
//! | swap, marker, none | no | no | no | no | `None` |

use crate::pgtable::{Pmd, Pte};
use crate::swapops::{
    MAX_SWAPFILES, SWP_DEVICE_EXCLUSIVE, SWP_DEVICE_READ, SWP_DEVICE_WRITE, SWP_HWPOISON,
    SWP_MIGRATION_DEVICE_READ, SWP_MIGRATION_DEVICE_READ_EXCLUSIVE, SWP_MIGRATION_DEVICE_WRITE,
    SWP_MIGRATION_READ, SWP_MIGRATION_READ_EXCLUSIVE, SWP_MIGRATION_WRITE, SWP_OFFSET_MASK,
    SWP_PTE_MARKER, SWP_TYPE_SHIFT, swp_mig_dirty_bit, swp_mig_young_bit,
};
use core::fmt;
use devpriv_core::{DevicePrivateOffset, Errno, PageFrame, PagingMode, Pfn, warn_on_once};
use devpriv_pagemap::{PageRef, SpaceReadGuard};

/// An arch-independent swap entry: `type << 58 | offset`, bit 63 clear.
///
/// Kernel: `softleaf_t` (= `swp_entry_t`), `include/linux/leafops.h` (7.0).
///
/// # Invariants
///
/// Bit 63 is clear: the value is a valid `XA_VALUE` payload.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Softleaf(u64);

impl fmt::Debug for Softleaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Softleaf({:?}, type {}, offset {:#x})",
            self.kind(),
            self.swp_type(),
            self.swp_offset()
        )
    }
}

/// What a softleaf entry is.
///
/// Kernel: `enum softleaf_type`, `include/linux/leafops.h` (with the
/// v6 proposal's three `SOFTLEAF_MIGRATION_DEVICE_PRIVATE_*` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SoftleafType {
    /// The empty entry (value 0). Kernel: `SOFTLEAF_NONE` (7.0).
    None,
    /// A real swap entry (type below `MAX_SWAPFILES`). Kernel: `SOFTLEAF_SWAP` (7.0).
    Swap,
    /// Kernel: `SOFTLEAF_MIGRATION_READ` (7.0).
    MigrationRead,
    /// Kernel: `SOFTLEAF_MIGRATION_READ_EXCLUSIVE` (7.0).
    MigrationReadExclusive,
    /// Kernel: `SOFTLEAF_MIGRATION_WRITE` (7.0).
    MigrationWrite,
    /// Kernel: `SOFTLEAF_DEVICE_PRIVATE_READ` (7.0).
    DevicePrivateRead,
    /// Kernel: `SOFTLEAF_DEVICE_PRIVATE_WRITE` (7.0).
    DevicePrivateWrite,
    /// Kernel: `SOFTLEAF_DEVICE_EXCLUSIVE` (7.0).
    DeviceExclusive,
    /// Kernel: `SOFTLEAF_MIGRATION_DEVICE_PRIVATE_READ` (v6).
    MigrationDevicePrivateRead,
    /// Kernel: `SOFTLEAF_MIGRATION_DEVICE_PRIVATE_READ_EXCLUSIVE` (v6).
    MigrationDevicePrivateReadExclusive,
    /// Kernel: `SOFTLEAF_MIGRATION_DEVICE_PRIVATE_WRITE` (v6).
    MigrationDevicePrivateWrite,
    /// Kernel: `SOFTLEAF_HWPOISON` (7.0).
    Hwpoison,
    /// Kernel: `SOFTLEAF_MARKER` (7.0).
    Marker,
}

/// The young/dirty bits a migration entry carries above its pfn.
///
/// Kernel: the value of `softleaf_to_flags()` (v6 06/13), i.e. the
/// `SWP_MIG_YOUNG` / `SWP_MIG_DIRTY` bits of the offset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SoftleafFlags {
    /// Kernel: `SWP_MIG_YOUNG` (7.0).
    pub young: bool,
    /// Kernel: `SWP_MIG_DIRTY` (7.0).
    pub dirty: bool,
}

impl SoftleafFlags {
    /// These flags if the machine keeps A/D bits in migration entries,
    /// else none: how `make_migration_entry_young/dirty()` and
    /// `softleaf_is_migration_young/dirty()` behave when
    /// `migration_entry_supports_ad()` is false.
    ///
    /// Kernel: `migration_entry_supports_ad()`, `include/linux/swapops.h` (main).
    #[must_use]
    pub const fn if_supported(self, ad_supported: bool) -> SoftleafFlags {
        if ad_supported {
            self
        } else {
            SoftleafFlags {
                young: false,
                dirty: false,
            }
        }
    }

    /// The offset bits these flags occupy for `mode`.
    ///
    /// Kernel: `SWP_MIG_YOUNG | SWP_MIG_DIRTY` as returned by
    /// `softleaf_to_flags()` (7.0).
    pub const fn bits(self, mode: PagingMode) -> u64 {
        let mut b = 0;
        if self.young {
            b |= 1 << swp_mig_young_bit(mode);
        }
        if self.dirty {
            b |= 1 << swp_mig_dirty_bit(mode);
        }
        b
    }
}

impl Softleaf {
    /// The empty entry (value 0), what `softleaf_from_pte()` returns for a
    /// none or present PTE.
    ///
    /// Kernel: `softleaf_mk_none()`, `include/linux/leafops.h` (7.0).
    pub const NONE: Softleaf = Softleaf(0);

    /// An entry from its raw value, without checking. Crate-internal: the
    /// callers have built a value with bit 63 clear.
    pub(crate) const fn from_raw_unchecked(val: u64) -> Softleaf {
        Softleaf(val)
    }

    /// An entry from its raw value.
    ///
    /// Kernel: `(softleaf_t){ .val = val }` (7.0).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if bit 63 is set (no swap entry has it).
    pub const fn from_raw(val: u64) -> Result<Softleaf, Errno> {
        if val >> 63 != 0 {
            Err(Errno::EINVAL)
        } else {
            Ok(Softleaf(val))
        }
    }

    /// The raw value.
    ///
    /// Kernel: `entry.val` (7.0).
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The 5-bit type field.
    ///
    /// Kernel: `swp_type(entry)`, `include/linux/swapops.h` (7.0).
    pub const fn swp_type(self) -> u32 {
        (self.0 >> SWP_TYPE_SHIFT) as u32
    }

    /// The 58-bit offset field.
    ///
    /// Kernel: `swp_offset(entry)`, `include/linux/swapops.h` (7.0).
    pub const fn swp_offset(self) -> u64 {
        self.0 & SWP_OFFSET_MASK
    }

    /// `true` for the empty entry.
    ///
    /// Kernel: `softleaf_is_none()` (7.0).
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }

    /// What the entry is.
    ///
    /// Kernel: `softleaf_type(entry)`, `include/linux/leafops.h` (7.0).
    pub fn kind(self) -> SoftleafType {
        if self.is_none() {
            return SoftleafType::None;
        }
        let ty = self.swp_type();
        if ty < MAX_SWAPFILES {
            return SoftleafType::Swap;
        }
        match ty {
            SWP_MIGRATION_READ => SoftleafType::MigrationRead,
            SWP_MIGRATION_READ_EXCLUSIVE => SoftleafType::MigrationReadExclusive,
            SWP_MIGRATION_WRITE => SoftleafType::MigrationWrite,
            SWP_DEVICE_WRITE => SoftleafType::DevicePrivateWrite,
            SWP_DEVICE_READ => SoftleafType::DevicePrivateRead,
            SWP_DEVICE_EXCLUSIVE => SoftleafType::DeviceExclusive,
            SWP_MIGRATION_DEVICE_READ => SoftleafType::MigrationDevicePrivateRead,
            SWP_MIGRATION_DEVICE_READ_EXCLUSIVE => {
                SoftleafType::MigrationDevicePrivateReadExclusive
            }
            SWP_MIGRATION_DEVICE_WRITE => SoftleafType::MigrationDevicePrivateWrite,
            SWP_HWPOISON => SoftleafType::Hwpoison,
            SWP_PTE_MARKER => SoftleafType::Marker,
            _ => {
                // Unreachable with the v6 proposal's numbers (every type 21..=31 is
                // defined), kept as the kernel's WARN path.
                warn_on_once!(true, "softleaf_type(): unknown swap type");
                SoftleafType::None
            }
        }
    }

    /// A real swap entry.
    ///
    /// Kernel: `softleaf_is_swap()` (7.0).
    pub fn is_swap(self) -> bool {
        self.kind() == SoftleafType::Swap
    }

    /// Any migration entry, **including** the v6 proposal's device-private
    /// migration entries (the "is-a" rule).
    ///
    /// Kernel: `softleaf_is_migration()`, `include/linux/leafops.h` (7.0).
    pub fn is_migration(self) -> bool {
        self.is_migration_read() || self.is_migration_read_exclusive() || self.is_migration_write()
    }

    /// A read migration entry, normal or device-private.
    ///
    /// Kernel: `softleaf_is_migration_read()` (7.0).
    pub fn is_migration_read(self) -> bool {
        matches!(
            self.kind(),
            SoftleafType::MigrationRead | SoftleafType::MigrationDevicePrivateRead
        )
    }

    /// A read-exclusive migration entry, normal or device-private.
    ///
    /// Kernel: `softleaf_is_migration_read_exclusive()` (7.0).
    pub fn is_migration_read_exclusive(self) -> bool {
        matches!(
            self.kind(),
            SoftleafType::MigrationReadExclusive
                | SoftleafType::MigrationDevicePrivateReadExclusive
        )
    }

    /// A write migration entry, normal or device-private.
    ///
    /// Kernel: `softleaf_is_migration_write()` (7.0).
    pub fn is_migration_write(self) -> bool {
        matches!(
            self.kind(),
            SoftleafType::MigrationWrite | SoftleafType::MigrationDevicePrivateWrite
        )
    }

    /// One of the v6 proposal's device-private migration entries (and nothing
    /// else).
    ///
    /// Kernel: `softleaf_is_migration_device_private()` (v6 08/13).
    pub fn is_migration_device_private(self) -> bool {
        matches!(
            self.kind(),
            SoftleafType::MigrationDevicePrivateRead
                | SoftleafType::MigrationDevicePrivateReadExclusive
                | SoftleafType::MigrationDevicePrivateWrite
        )
    }

    /// Kernel: `softleaf_is_migration_device_private_read()` (v6).
    pub fn is_migration_device_private_read(self) -> bool {
        self.kind() == SoftleafType::MigrationDevicePrivateRead
    }

    /// Kernel: `softleaf_is_migration_device_private_read_exclusive()` (v6).
    pub fn is_migration_device_private_read_exclusive(self) -> bool {
        self.kind() == SoftleafType::MigrationDevicePrivateReadExclusive
    }

    /// Kernel: `softleaf_is_migration_device_private_write()` (v6).
    pub fn is_migration_device_private_write(self) -> bool {
        self.kind() == SoftleafType::MigrationDevicePrivateWrite
    }

    /// A device-private entry (`SWP_DEVICE_READ` or `SWP_DEVICE_WRITE`).
    /// Device-private *migration* entries are not.
    ///
    /// Kernel: `softleaf_is_device_private()` (7.0).
    pub fn is_device_private(self) -> bool {
        matches!(
            self.kind(),
            SoftleafType::DevicePrivateRead | SoftleafType::DevicePrivateWrite
        )
    }

    /// A writable device-private entry.
    ///
    /// Kernel: `softleaf_is_device_private_write()` (7.0).
    pub fn is_device_private_write(self) -> bool {
        self.kind() == SoftleafType::DevicePrivateWrite
    }

    /// A device-exclusive entry.
    ///
    /// Kernel: `softleaf_is_device_exclusive()` (7.0).
    pub fn is_device_exclusive(self) -> bool {
        self.kind() == SoftleafType::DeviceExclusive
    }

    /// A hardware-poison entry.
    ///
    /// Kernel: `softleaf_is_hwpoison()` (7.0).
    pub fn is_hwpoison(self) -> bool {
        self.kind() == SoftleafType::Hwpoison
    }

    /// A PTE marker.
    ///
    /// Kernel: `softleaf_is_marker()` (7.0).
    pub fn is_marker(self) -> bool {
        self.kind() == SoftleafType::Marker
    }

    /// The entry carries a pfn (or, for device-private kinds, an offset).
    ///
    /// Kernel: `softleaf_has_pfn()` (7.0).
    pub fn has_pfn(self) -> bool {
        self.is_migration()
            || self.is_device_private()
            || self.is_device_exclusive()
            || self.is_hwpoison()
    }

    /// The pfn field, masked to `SWP_PFN_BITS`: everything above is
    /// silently dropped, as in C. Meaningless unless [`has_pfn`] — and a
    /// device-private offset for device-private kinds.
    ///
    /// Kernel: `softleaf_to_pfn()`, `include/linux/leafops.h` (7.0).
    ///
    /// [`has_pfn`]: Self::has_pfn
    pub const fn to_pfn(self, mode: PagingMode) -> u64 {
        self.swp_offset() & mode.swp_pfn_mask()
    }

    /// The typed frame the entry refers to: a [`Pfn`] or a
    /// [`DevicePrivateOffset`], or `None` if it carries neither.
    ///
    /// Kernel: the `softleaf_to_pfn()` + "is it device private?" pair that
    /// `check_pte()` computes; `softleaf_to_page()` after the v6 proposal.
    pub fn to_frame(self, mode: PagingMode) -> Option<PageFrame> {
        if !self.has_pfn() {
            return None;
        }
        let raw = self.to_pfn(mode);
        Some(
            if self.is_device_private() || self.is_migration_device_private() {
                PageFrame::DevicePrivate(DevicePrivateOffset::new(raw))
            } else {
                PageFrame::Pfn(Pfn::new(raw))
            },
        )
    }

    /// The young/dirty bits of a migration entry, as stored. Callers that
    /// model `softleaf_is_migration_young/dirty()` mask them with
    /// [`SoftleafFlags::if_supported`].
    ///
    /// Kernel: `softleaf_to_flags()` (v6 06/13), and
    /// `softleaf_is_migration_young()` / `softleaf_is_migration_dirty()`
    /// when `migration_entry_supports_ad()` (7.0).
    pub fn to_flags(self, mode: PagingMode) -> SoftleafFlags {
        let off = self.swp_offset();
        SoftleafFlags {
            young: off >> swp_mig_young_bit(mode) & 1 == 1,
            dirty: off >> swp_mig_dirty_bit(mode) & 1 == 1,
        }
    }

    /// The same migration entry with young/dirty bits from `flags` added
    /// (how fork, mprotect and the THP split paths copy them across a
    /// write → read downgrade). Callers that model
    /// `make_migration_entry_young/dirty()` pass flags masked with
    /// [`SoftleafFlags::if_supported`].
    ///
    /// Kernel: `make_migration_entry_young()` / `make_migration_entry_dirty()`,
    /// and the `flags` argument of the v6 proposal's `*_migration_entry_from_page()`.
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if the entry is not a migration entry (the bits
    /// would be read as part of some other payload).
    pub fn with_flags(self, flags: SoftleafFlags, mode: PagingMode) -> Result<Softleaf, Errno> {
        if !self.is_migration() {
            return Err(Errno::EINVAL);
        }
        Ok(Softleaf(self.0 | flags.bits(mode)))
    }

    /// The entry a non-present PTE holds; [`Softleaf::NONE`] for a none or
    /// present PTE.
    ///
    /// Kernel: `softleaf_from_pte()`, `include/linux/leafops.h` (7.0).
    pub fn from_pte(pte: Pte) -> Softleaf {
        if pte.is_present() || pte.is_none() {
            Softleaf::NONE
        } else {
            pte.to_swp_entry()
        }
    }

    /// The entry a non-present PMD holds; [`Softleaf::NONE`] for a none or
    /// present PMD.
    ///
    /// Kernel: `softleaf_from_pmd()`, `include/linux/leafops.h` (7.0).
    pub fn from_pmd(pmd: Pmd) -> Softleaf {
        if pmd.is_present() || pmd.is_none() {
            Softleaf::NONE
        } else {
            pmd.to_swp_entry()
        }
    }
}

/// The device-private page a device-private (or device-private migration)
/// entry names, looked up through the device-private address space — never
/// through `pfn_to_page()`.
///
/// Kernel: `softleaf_to_page()` after v6 13/13, which calls
/// `device_private_offset_to_page()` for these kinds.
///
/// # Differences from the kernel
///
/// Returns `None` for entries whose frame is a pfn (the model has no global
/// `struct page` array for system memory here), and for offsets no pagemap
/// holds (where the lookup also `WARN`s).
pub fn softleaf_to_device_private_page<'g>(
    guard: &'g SpaceReadGuard<'_>,
    entry: Softleaf,
    mode: PagingMode,
) -> Option<PageRef<'g>> {
    match entry.to_frame(mode)? {
        PageFrame::DevicePrivate(off) => guard.device_private_offset_to_page(off),
        PageFrame::Pfn(_) => None,
    }
}

/// `true` if a PMD holds a migration entry (normal or device-private).
///
/// Kernel: `pmd_is_migration_entry()`, `include/linux/leafops.h` (7.0).
pub fn pmd_is_migration_entry(pmd: Pmd) -> bool {
    Softleaf::from_pmd(pmd).is_migration()
}

/// `true` if a PMD holds a device-private entry.
///
/// Kernel: `pmd_is_device_private_entry()`, `include/linux/leafops.h` (7.0).
pub fn pmd_is_device_private_entry(pmd: Pmd) -> bool {
    Softleaf::from_pmd(pmd).is_device_private()
}

/// `true` if a non-present PMD holds an entry that is legal at PMD level:
/// device-private or migration.
///
/// Kernel: `pmd_is_valid_softleaf()`, `include/linux/leafops.h` (7.0).
pub fn pmd_is_valid_softleaf(pmd: Pmd) -> bool {
    let e = Softleaf::from_pmd(pmd);
    e.is_device_private() || e.is_migration()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::swapops::{
        MigrationKind, make_device_private_entry, make_migration_entry, swp_entry,
    };

    /// Every predicate against every swap type number, from a table
    /// written out independently of [`Softleaf::kind`] (the module's table,
    /// one row per `SWP_*` constant).
    #[test]
    fn every_predicate_for_every_type() {
        // (type, swap, mig, mig_r, mig_rx, mig_w, mdp, mdp_r, mdp_rx, mdp_w,
        //  dp, dp_w, excl, hwpoison, marker)
        type Row = (u32, [bool; 14]);
        let (t, f) = (true, false);
        let rows: [Row; 11] = [
            (SWP_HWPOISON, [f, f, f, f, f, f, f, f, f, f, f, f, t, f]),
            (
                SWP_MIGRATION_READ,
                [f, t, t, f, f, f, f, f, f, f, f, f, f, f],
            ),
            (
                SWP_MIGRATION_READ_EXCLUSIVE,
                [f, t, f, t, f, f, f, f, f, f, f, f, f, f],
            ),
            (
                SWP_MIGRATION_WRITE,
                [f, t, f, f, t, f, f, f, f, f, f, f, f, f],
            ),
            (SWP_DEVICE_WRITE, [f, f, f, f, f, f, f, f, f, t, t, f, f, f]),
            (SWP_DEVICE_READ, [f, f, f, f, f, f, f, f, f, t, f, f, f, f]),
            (
                SWP_DEVICE_EXCLUSIVE,
                [f, f, f, f, f, f, f, f, f, f, f, t, f, f],
            ),
            (
                SWP_MIGRATION_DEVICE_READ,
                [f, t, t, f, f, t, t, f, f, f, f, f, f, f],
            ),
            (
                SWP_MIGRATION_DEVICE_READ_EXCLUSIVE,
                [f, t, f, t, f, t, f, t, f, f, f, f, f, f],
            ),
            (
                SWP_MIGRATION_DEVICE_WRITE,
                [f, t, f, f, t, t, f, f, t, f, f, f, f, f],
            ),
            (SWP_PTE_MARKER, [f, f, f, f, f, f, f, f, f, f, f, f, f, t]),
        ];
        let preds = |e: Softleaf| {
            [
                e.is_swap(),
                e.is_migration(),
                e.is_migration_read(),
                e.is_migration_read_exclusive(),
                e.is_migration_write(),
                e.is_migration_device_private(),
                e.is_migration_device_private_read(),
                e.is_migration_device_private_read_exclusive(),
                e.is_migration_device_private_write(),
                e.is_device_private(),
                e.is_device_private_write(),
                e.is_device_exclusive(),
                e.is_hwpoison(),
                e.is_marker(),
            ]
        };
        for ty in 0..32 {
            let e = swp_entry(ty, 5).unwrap();
            let want = if ty < MAX_SWAPFILES {
                [t, f, f, f, f, f, f, f, f, f, f, f, f, f]
            } else {
                rows.iter()
                    .find(|(n, _)| *n == ty)
                    .unwrap_or_else(|| panic!("type {ty} has no row"))
                    .1
            };
            assert_eq!(preds(e), want, "type {ty}: {e:?}");
            let pfn = want[1] || want[9] || want[11] || want[12];
            assert_eq!(e.has_pfn(), pfn, "type {ty}");
        }
        assert_eq!(preds(Softleaf::NONE), [f; 14]);
        assert!(!Softleaf::NONE.has_pfn());
    }

    #[test]
    fn with_flags_is_idempotent() {
        let m = PagingMode::FourLevel;
        let young = SoftleafFlags {
            young: true,
            dirty: false,
        };
        let e = make_migration_entry(MigrationKind::Write, Pfn::new(0x1234).into(), m).unwrap();
        let once = e.with_flags(young, m).unwrap();
        assert_eq!(
            once.with_flags(young, m),
            Ok(once),
            "setting a set bit keeps it"
        );
        assert_eq!(once.to_flags(m), young);
        let dp = make_device_private_entry(true, DevicePrivateOffset::new(3), m).unwrap();
        assert_eq!(dp.with_flags(young, m), Err(Errno::EINVAL));
    }

    #[test]
    fn pmd_level_entries() {
        let m = PagingMode::FourLevel;
        let huge = Pmd::huge(Pfn::new(0x200), crate::pgtable::_PAGE_PRESENT).unwrap();
        assert_eq!(Softleaf::from_pmd(huge), Softleaf::NONE, "a present PMD");
        assert_eq!(Softleaf::from_pmd(Pmd::NONE), Softleaf::NONE);
        assert!(!pmd_is_valid_softleaf(huge));
        assert!(!pmd_is_valid_softleaf(Pmd::NONE));
        let dp = make_device_private_entry(false, DevicePrivateOffset::new(512), m).unwrap();
        let mig = make_migration_entry(MigrationKind::Read, Pfn::new(0x200).into(), m).unwrap();
        for (e, valid) in [
            (dp, true),
            (mig, true),
            (swp_entry(SWP_HWPOISON, 0x200).unwrap(), false),
            (swp_entry(3, 0x200).unwrap(), false),
        ] {
            let pmd = Pmd::from_swp_entry(e).unwrap();
            assert_eq!(Softleaf::from_pmd(pmd), e);
            assert_eq!(pmd_is_valid_softleaf(pmd), valid, "{e:?}");
        }
    }

    #[test]
    fn debug_names_the_kind_type_and_offset() {
        let e = swp_entry(SWP_DEVICE_WRITE, 0x2a).unwrap();
        assert_eq!(
            format!("{e:?}"),
            format!("Softleaf(DevicePrivateWrite, type {SWP_DEVICE_WRITE}, offset 0x2a)")
        );
    }

    #[test]
    fn kind_follows_the_type_number() {
        let m = PagingMode::FourLevel;
        assert_eq!(Softleaf::NONE.kind(), SoftleafType::None);
        assert_eq!(swp_entry(0, 5).unwrap().kind(), SoftleafType::Swap);
        assert_eq!(swp_entry(20, 5).unwrap().kind(), SoftleafType::Swap);
        assert_eq!(swp_entry(21, 5).unwrap().kind(), SoftleafType::Hwpoison);
        let e = make_migration_entry(
            MigrationKind::ReadExclusive,
            DevicePrivateOffset::new(9).into(),
            m,
        )
        .unwrap();
        assert_eq!(e.swp_type(), 29);
        assert_eq!(e.kind(), SoftleafType::MigrationDevicePrivateReadExclusive);
        let d = make_device_private_entry(false, DevicePrivateOffset::new(9), m).unwrap();
        assert_eq!(d.kind(), SoftleafType::DevicePrivateRead);
        assert_eq!(
            d.to_frame(m),
            Some(PageFrame::DevicePrivate(DevicePrivateOffset::new(9)))
        );
    }

    #[test]
    fn to_pfn_masks_to_swp_pfn_bits() {
        let m = PagingMode::FourLevel;
        // An offset with bits above SWP_PFN_BITS (as the young/dirty bits are).
        let e = swp_entry(SWP_MIGRATION_READ, (1 << 40) | (1 << 34) | 77).unwrap();
        assert_eq!(e.to_pfn(m), 77);
        assert_eq!(e.to_pfn(PagingMode::FiveLevel), (1 << 34) | 77);
        assert_eq!(
            e.to_flags(m),
            SoftleafFlags {
                young: true,
                dirty: false
            }
        );
    }

    #[test]
    fn from_raw_refuses_bit_63() {
        assert_eq!(Softleaf::from_raw(1 << 63), Err(Errno::EINVAL));
        assert_eq!(Softleaf::from_raw(5).map(Softleaf::raw), Ok(5));
    }
}
