//! The `migrate.h` vocabulary of device migration: the `MIGRATE_PFN_*`
//! encoding of `migrate_vma::src/dst`, the `MIGRATE_VMA_SELECT_*` flags and
//! `struct migrate_vma`.
//!
//! Kernel: `include/linux/migrate.h` (`MIGRATE_PFN_*`, `migrate_pfn()`,
//! `migrate_pfn_to_page()`, `struct migrate_vma`,
//! `enum migrate_vma_direction`), v6 proposal patches 01/13, 03/13, 04/13.
//!
//! An mpfn is `index << 6 | flags`. The v6 proposal adds
//! `MIGRATE_PFN_DEVICE_PRIVATE` (bit 5): with it, the index is a
//! device-private offset, not a pfn. [`MigratePfn`] keeps the kernel bits
//! and decodes to a typed [`PageFrame`]. The flow that fills these is in
//! [`migrate_device`](crate::migrate_device).

use crate::mm_types::{Mm, Vma};
use core::fmt;
use devpriv_core::{
    DevicePrivateOffset, Errno, HPAGE_PMD_NR, PAGE_SIZE, PageCount, PageFrame, Pfn,
};
use devpriv_pagemap::Owner;

/// An entry of `migrate_vma::src` / `dst`: a frame plus `MIGRATE_PFN_*`
/// flags.
///
/// Kernel: `unsigned long` mpfn, `include/linux/migrate.h` (main).
///
/// # Invariants
///
/// Bit 2 (unused by the kernel) is clear.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct MigratePfn(u64);

impl fmt::Debug for MigratePfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MigratePfn({:#x}, {:?})", self.0, self.frame())
    }
}

impl MigratePfn {
    /// Kernel: `MIGRATE_PFN_VALID` (bit 0, main).
    pub const VALID: u64 = 1 << 0;
    /// Kernel: `MIGRATE_PFN_MIGRATE` (bit 1, main).
    pub const MIGRATE: u64 = 1 << 1;
    /// Kernel: `MIGRATE_PFN_WRITE` (bit 3, main).
    pub const WRITE: u64 = 1 << 3;
    /// Kernel: `MIGRATE_PFN_COMPOUND` (bit 4, 7.0).
    pub const COMPOUND: u64 = 1 << 4;
    /// The index is a device-private offset.
    ///
    /// Kernel: `MIGRATE_PFN_DEVICE_PRIVATE` (bit 5, v6 04/13).
    pub const DEVICE_PRIVATE: u64 = 1 << 5;
    /// Kernel: `MIGRATE_PFN_SHIFT` (6, main).
    pub const SHIFT: u32 = 6;
    /// Every defined flag bit.
    ///
    /// Kernel: none (model only).
    pub const FLAGS: u64 =
        Self::VALID | Self::MIGRATE | Self::WRITE | Self::COMPOUND | Self::DEVICE_PRIVATE;
    /// Largest index an mpfn can hold (2^58 - 1).
    ///
    /// Kernel: none (model only).
    pub const MAX_INDEX: u64 = (1 << (64 - Self::SHIFT)) - 1;

    /// The empty entry (0): not valid, nothing to migrate.
    ///
    /// Kernel: none (model only).
    pub const NONE: MigratePfn = MigratePfn(0);

    /// A valid mpfn for `frame`, with `DEVICE_PRIVATE` set for a
    /// device-private offset.
    ///
    /// Kernel: `migrate_pfn(pfn)` and the v6 proposal's `migrate_pfn_from_page()`
    /// (01/13).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if the index is above [`MigratePfn::MAX_INDEX`]
    /// (C would shift its top bits out).
    pub const fn new(frame: PageFrame) -> Result<MigratePfn, Errno> {
        let raw = frame.raw_index();
        if raw > Self::MAX_INDEX {
            return Err(Errno::EINVAL);
        }
        let dp = if frame.is_device_private() {
            Self::DEVICE_PRIVATE
        } else {
            0
        };
        Ok(MigratePfn((raw << Self::SHIFT) | Self::VALID | dp))
    }

    /// An mpfn from its raw value.
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if bit 2 (undefined) is set.
    ///
    /// Kernel: none (model only).
    pub const fn from_raw(val: u64) -> Result<MigratePfn, Errno> {
        if val & ((1 << Self::SHIFT) - 1) & !Self::FLAGS != 0 {
            return Err(Errno::EINVAL);
        }
        Ok(MigratePfn(val))
    }

    /// The raw value.
    ///
    /// Kernel: none (model only).
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The flag bits.
    ///
    /// Kernel: none (model only).
    pub const fn flags(self) -> u64 {
        self.0 & Self::FLAGS
    }

    /// `true` if every bit of `flags` is set.
    ///
    /// Kernel: none (model only).
    pub const fn contains(self, flags: u64) -> bool {
        self.0 & flags == flags
    }

    /// The same mpfn with `flags` set.
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `flags` has bits outside
    /// `VALID | MIGRATE | WRITE | COMPOUND` (`DEVICE_PRIVATE` comes from the
    /// frame only).
    ///
    /// Kernel: none (model only).
    pub const fn with(self, flags: u64) -> Result<MigratePfn, Errno> {
        if flags & !(Self::FLAGS & !Self::DEVICE_PRIVATE) != 0 {
            return Err(Errno::EINVAL);
        }
        Ok(MigratePfn(self.0 | flags))
    }

    /// The same mpfn with `flags` cleared (`DEVICE_PRIVATE` cannot be
    /// cleared: it says what the index is).
    ///
    /// Kernel: none (model only).
    #[must_use]
    pub const fn without(self, flags: u64) -> MigratePfn {
        MigratePfn(self.0 & !(flags & !Self::DEVICE_PRIVATE))
    }

    /// The frame, or `None` unless `VALID`.
    ///
    /// Kernel: `migrate_pfn_to_page()` after the v6 proposal (offset lookup when
    /// `MIGRATE_PFN_DEVICE_PRIVATE`, else `pfn_to_page(mpfn >> 6)`), without
    /// the page lookup.
    pub const fn frame(self) -> Option<PageFrame> {
        if self.0 & Self::VALID == 0 {
            return None;
        }
        let raw = self.0 >> Self::SHIFT;
        Some(if self.0 & Self::DEVICE_PRIVATE != 0 {
            PageFrame::DevicePrivate(DevicePrivateOffset::new(raw))
        } else {
            PageFrame::Pfn(Pfn::new(raw))
        })
    }

    /// The mpfn `n` pages further on, keeping every flag bit: how
    /// `migrate_device_range()` steps through its range.
    ///
    /// Kernel: `start_mpfn + (i << MIGRATE_PFN_SHIFT)` (v6 03/13).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if the index would pass [`MigratePfn::MAX_INDEX`].
    pub const fn checked_add(self, n: PageCount) -> Result<MigratePfn, Errno> {
        let raw = self.0 >> Self::SHIFT;
        match raw.checked_add(n.get()) {
            Some(i) if i <= Self::MAX_INDEX => Ok(MigratePfn(
                (i << Self::SHIFT) | (self.0 & ((1 << Self::SHIFT) - 1)),
            )),
            _ => Err(Errno::EINVAL),
        }
    }
}

/// Pages of a PMD, as `usize`.
pub(crate) const PMD_NR: usize = 512;
const _: () = assert!(PMD_NR as u64 == HPAGE_PMD_NR);

/// A `MigratePfn` with only flag bits (no frame): what holes get.
pub(crate) const fn flags_only(bits: u64) -> MigratePfn {
    MigratePfn(bits)
}

/// `mpfn | bits`, for flag bits other than `DEVICE_PRIVATE`.
pub(crate) fn or(m: MigratePfn, bits: u64) -> MigratePfn {
    MigratePfn(m.0 | (bits & !MigratePfn::DEVICE_PRIVATE))
}

devpriv_core::flags! {
    /// Which pages [`migrate_vma_setup`](crate::migrate_vma_setup) selects.
    ///
    /// Kernel: `enum migrate_vma_direction` (`MIGRATE_VMA_SELECT_*`),
    /// `include/linux/migrate.h` (main).
    pub struct MigrateVmaFlags: u32 {
        /// Nothing selected.
        ///
        /// Kernel: none (model only).
        const NONE = 0;
        /// System RAM pages (and holes, and the zero page).
        ///
        /// Kernel: `MIGRATE_VMA_SELECT_SYSTEM` (main).
        const SELECT_SYSTEM = 1 << 0;
        /// Device-private pages whose pgmap owner is `pgmap_owner`.
        ///
        /// Kernel: `MIGRATE_VMA_SELECT_DEVICE_PRIVATE` (main).
        const SELECT_DEVICE_PRIVATE = 1 << 1;
        /// Device-coherent pages (none exist in the model).
        ///
        /// Kernel: `MIGRATE_VMA_SELECT_DEVICE_COHERENT` (main).
        const SELECT_DEVICE_COHERENT = 1 << 2;
        /// Collect PMD-sized folios and holes as one `MIGRATE_PFN_COMPOUND`
        /// entry.
        ///
        /// Kernel: `MIGRATE_VMA_SELECT_COMPOUND` (7.0).
        const SELECT_COMPOUND = 1 << 3;
    }
}

/// The arguments and results of one `migrate_vma_*` round.
///
/// Kernel: `struct migrate_vma`, `include/linux/migrate.h` (main).
///
/// # Differences from the kernel
///
/// - `mm` stands for `vma->vm_mm`; `vma` must be one of its VMAs.
/// - `src` and `dst` are owned vectors that [`MigrateVma::new`] sizes to
///   the range (the kernel's caller passes arrays); shortening them makes
///   [`migrate_vma_setup`](crate::migrate_vma_setup) fail with `EINVAL`, as a
///   `NULL` array does.
/// - `fault_page` is the device-private offset of the page, not a
///   `struct page *`; `pgmap_owner` is `None` for `NULL`.
pub struct MigrateVma<'a> {
    /// Kernel: `vma->vm_mm` (main).
    pub mm: &'a Mm,
    /// Kernel: `migrate_vma::vma` (main).
    pub vma: &'a Vma,
    /// Kernel: `migrate_vma::start` (main).
    pub start: u64,
    /// Kernel: `migrate_vma::end` (trimmed by collect to what was walked, main).
    pub end: u64,
    /// Kernel: `migrate_vma::src` (main).
    pub src: Vec<MigratePfn>,
    /// Kernel: `migrate_vma::dst` (main).
    pub dst: Vec<MigratePfn>,
    /// Entries still migrating after setup. Kernel: `migrate_vma::cpages` (main).
    pub cpages: u64,
    /// Entries collected. Kernel: `migrate_vma::npages` (main).
    pub npages: u64,
    /// Kernel: `migrate_vma::pgmap_owner` (main).
    pub pgmap_owner: Option<Owner>,
    /// Kernel: `migrate_vma::flags` (main).
    pub flags: MigrateVmaFlags,
    /// The locked device-private page a CPU fault is migrating.
    ///
    /// Kernel: `migrate_vma::fault_page` (main).
    pub fault_page: Option<DevicePrivateOffset>,
}

impl fmt::Debug for MigrateVma<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MigrateVma")
            .field("start", &format_args!("{:#x}", self.start))
            .field("end", &format_args!("{:#x}", self.end))
            .field("cpages", &self.cpages)
            .field("npages", &self.npages)
            .field("pgmap_owner", &self.pgmap_owner)
            .field("flags", &self.flags)
            .field("fault_page", &self.fault_page)
            .finish_non_exhaustive()
    }
}

impl<'a> MigrateVma<'a> {
    /// Arguments for migrating `[start, end)` of `vma`, with `src`/`dst`
    /// sized for the part of the range inside the VMA.
    ///
    /// Kernel: the caller's initialisation of `struct migrate_vma` (main).
    pub fn new(
        mm: &'a Mm,
        vma: &'a Vma,
        start: u64,
        end: u64,
        flags: MigrateVmaFlags,
        pgmap_owner: Option<Owner>,
    ) -> MigrateVma<'a> {
        let lo = start.max(vma.start());
        let hi = end.min(vma.end());
        let n = usize::try_from(hi.saturating_sub(lo).div_ceil(PAGE_SIZE)).unwrap_or(0);
        MigrateVma {
            mm,
            vma,
            start,
            end,
            src: vec![MigratePfn::NONE; n],
            dst: vec![MigratePfn::NONE; n],
            cpages: 0,
            npages: 0,
            pgmap_owner,
            flags,
            fault_page: None,
        }
    }

    /// How many entries were collected: `npages`, bounded by the arrays.
    pub(crate) fn nr_collected(&self) -> usize {
        usize::try_from(self.npages)
            .unwrap_or(0)
            .min(self.src.len())
            .min(self.dst.len())
    }

    /// The collected entries: each page's address with its `src` and `dst`
    /// entries, `npages` of them from `start`.
    ///
    /// Kernel: the `for (i = 0; i < migrate->npages; i++)` loop over
    /// `migrate->src[i]` / `migrate->dst[i]` of every driver (main).
    pub fn entries(&self) -> impl Iterator<Item = (u64, MigratePfn, MigratePfn)> + '_ {
        let start = self.start;
        self.src[..self.nr_collected()]
            .iter()
            .zip(&self.dst)
            .enumerate()
            .map(move |(i, (s, d))| (start + (i as u64) * PAGE_SIZE, *s, *d))
    }

    /// The collected entries, to change in place: what a driver does
    /// between [`migrate_vma_setup`](crate::migrate_vma_setup) and
    /// [`migrate_vma_pages`](crate::migrate_vma_pages) (fill `dst` with a
    /// locked destination, or clear `MIGRATE` in `src` to leave a page
    /// where it is).
    ///
    /// Kernel: the same loop, writing `migrate->dst[i]` (and
    /// `migrate->src[i] &= ~MIGRATE_PFN_MIGRATE`, main).
    ///
    /// # Examples
    ///
    /// ```
    /// # use devpriv_core::{Errno, PAGE_SIZE, PageCount, Pfn};
    /// # use devpriv_migrate::{Memory, MigratePfn, MigrateVma, MigrateVmaFlags, Mm, MmConfig, SystemMemory, VmFlags, migrate_vma_setup};
    /// # use devpriv_pagemap::DevicePrivateSpace;
    /// # use std::sync::Arc;
    /// # let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(512))?;
    /// # let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
    /// # let mm = Mm::new(&mem, MmConfig::default());
    /// # let base = 0x7f00_0000_0000;
    /// let vma = mm.mmap_write_lock().mmap_anon(base, 4 * PAGE_SIZE, VmFlags::RW)?;
    /// let mut args = MigrateVma::new(&mm, &vma, base, base + 4 * PAGE_SIZE, MigrateVmaFlags::SELECT_SYSTEM, None);
    /// migrate_vma_setup(&mut args)?;
    /// // Four holes: leave the last two behind.
    /// for (addr, src, _dst) in args.entries_mut() {
    ///     if addr >= base + 2 * PAGE_SIZE {
    ///         *src = src.without(MigratePfn::MIGRATE);
    ///     }
    /// }
    /// let migrating = args.entries().filter(|(_, s, _)| s.contains(MigratePfn::MIGRATE)).count();
    /// assert_eq!(migrating, 2);
    /// # Ok::<(), Errno>(())
    /// ```
    pub fn entries_mut(
        &mut self,
    ) -> impl Iterator<Item = (u64, &mut MigratePfn, &mut MigratePfn)> + '_ {
        let start = self.start;
        let n = self.nr_collected();
        self.src[..n]
            .iter_mut()
            .zip(&mut self.dst[..n])
            .enumerate()
            .map(move |(i, (s, d))| (start + (i as u64) * PAGE_SIZE, s, d))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn constants_match_the_series() {
        assert_eq!(MigratePfn::DEVICE_PRIVATE, 32);
        assert_eq!(MigratePfn::SHIFT, 6);
        let m = MigratePfn::new(DevicePrivateOffset::new(3).into()).unwrap();
        assert_eq!(m.raw(), (3 << 6) | 1 | 32);
        let p = MigratePfn::new(Pfn::new(3).into()).unwrap();
        assert_eq!(p.raw(), (3 << 6) | 1);
        assert_ne!(m.frame(), p.frame());
    }

    #[test]
    fn range_steps_keep_device_private() {
        let m = MigratePfn::new(DevicePrivateOffset::new(10).into())
            .unwrap()
            .with(MigratePfn::MIGRATE)
            .unwrap();
        let n = m.checked_add(PageCount::new(5)).unwrap();
        assert_eq!(
            n.frame(),
            Some(PageFrame::DevicePrivate(DevicePrivateOffset::new(15)))
        );
        assert!(n.contains(MigratePfn::MIGRATE | MigratePfn::DEVICE_PRIVATE));
        assert_eq!(
            MigratePfn::new(Pfn::new(MigratePfn::MAX_INDEX).into())
                .unwrap()
                .checked_add(PageCount::ONE),
            Err(Errno::EINVAL)
        );
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(
            MigratePfn::new(Pfn::new(1 << 58).into()),
            Err(Errno::EINVAL)
        );
        assert_eq!(MigratePfn::from_raw(4), Err(Errno::EINVAL));
        assert_eq!(
            MigratePfn::NONE.with(MigratePfn::DEVICE_PRIVATE),
            Err(Errno::EINVAL)
        );
        assert_eq!(MigratePfn::NONE.frame(), None);
        let dp = MigratePfn::new(DevicePrivateOffset::new(1).into()).unwrap();
        assert!(
            dp.without(MigratePfn::DEVICE_PRIVATE)
                .contains(MigratePfn::DEVICE_PRIVATE)
        );
    }
}
