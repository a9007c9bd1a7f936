//! `page_vma_mapped_walk()`: where, in one VMA, is a range of pages mapped?
//!
//! Kernel: `mm/page_vma_mapped.c`, `include/linux/rmap.h` (`PVMW_*`,
//! `struct page_vma_mapped_walk`, `page_vma_walk_flags()`), `mm/internal.h`
//! (`vma_address_end()`) (7.0); the v6 proposal's patches 05/13 and 13/13,
//! and its superseded v2 encoding (hazard H8, `docs/hazards.md`).
//!
//! The walk target is a [`PageFrame`]: a pfn or a device-private offset.
//! The kernel keeps a raw `pvmw->pfn` plus the `PVMW_DEVICE_PRIVATE` flag
//! and compares "device private?" on both sides in `check_pte()` /
//! `check_pmd()`; here the kind is part of the target, and
//! [`PageVmaMappedWalk::flags`] still reports the kernel bits (with
//! `PVMW_DEVICE_PRIVATE` derived from the target) for fidelity tests.
//!
//! # `check_pte()` (v6 proposal)
//!
//! | `MIGRATION` | entry | frame compared | device private? |
//! |---|---|---|---|
//! | set | migration (`SWP_MIGRATION_*`) | `softleaf_to_pfn` | no |
//! | set | device-private migration (`SWP_MIGRATION_DEVICE_*`) | `softleaf_to_pfn` | yes |
//! | set | anything else | — (false) | |
//! | clear | present | `pte_pfn` | no |
//! | clear | device-private (`SWP_DEVICE_{READ,WRITE}`) | `softleaf_to_pfn` | yes |
//! | clear | device-exclusive | `softleaf_to_pfn` | no (a normal pfn) |
//! | clear | none, migration, other swap | — (false) | |
//!
//! Then: false if "device private?" differs from the target's kind
//! (`device_private != (bool)(pvmw->flags & PVMW_DEVICE_PRIVATE)`), else
//! true iff `[frame, frame + pte_nr)` overlaps `[target, target + nr_pages)`.
//! `check_pmd()` is the last step alone, with `HPAGE_PMD_NR` pages.
//!
//! # The device-private PMD branch (hazard H13)
//!
//! The walk reads `MmConfig::pvmw_pmd` ([`PvmwPmdPolicy`]). By default
//! ([`PvmwPmdPolicy::Fixed`], the CVE-2026-68163 fix, 7.1.6 / 7.2-rc5) a
//! device-private PMD is handled with the trans-huge and migration PMDs:
//! under the PMD lock, re-read, not found under `PVMW_MIGRATION`, found
//! only if `check_pmd()` overlaps the target, and if it was split in the
//! meantime the walk goes on at PTE level. [`PvmwPmdPolicy::V7_0`] keeps
//! 7.0's branch: any device-private PMD seen locklessly is a match, for
//! any target and flags, with the PMD lock held and the entry not re-read.
//!
//! # Locking
//!
//! A `true` return leaves the entry's table locked: the PTE table's lock for
//! a PTE-level match, the PMD table's lock for a PMD-level match (and for
//! 7.0's device-private PMD branch). The next [`walk`] call, [`done`], or
//! dropping the walk releases it. While it is held, the entry can be read
//! and changed with [`PageVmaMappedWalk::pte`], [`set_pte`],
//! [`get_and_clear_pte`], [`PageVmaMappedWalk::pmd`], [`set_pmd`].
//!
//! [`walk`]: PageVmaMappedWalk::walk
//! [`done`]: PageVmaMappedWalk::done
//! [`set_pte`]: PageVmaMappedWalk::set_pte
//! [`get_and_clear_pte`]: PageVmaMappedWalk::get_and_clear_pte
//! [`set_pmd`]: PageVmaMappedWalk::set_pmd

use crate::leafops::{Softleaf, pmd_is_device_private_entry, pmd_is_migration_entry};
use crate::mm_types::{Mm, PmdSlot, PmdTable, PteTable, PvmwPmdPolicy, Vma};
use crate::page_alloc::SysFolio;
use crate::pgtable::{PGDIR_SIZE, PMD_SIZE, PUD_SIZE, Pmd, Pte, pte_index};
use core::fmt;
use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_core::sync::{Mutex, MutexGuard};
use devpriv_core::{
    DevicePrivateOffset, Errno, HPAGE_PMD_NR, PAGE_SHIFT, PAGE_SIZE, PageCount, PageFrame,
    PagingMode, Pfn, ranges_overlap,
};

devpriv_core::flags! {
    /// Flags of a walk: inputs `SYNC`, `MIGRATION`, `DEVICE_PRIVATE`; result
    /// `PGTABLE_CROSSED`.
    ///
    /// Kernel: `PVMW_SYNC`, `PVMW_MIGRATION`, `PVMW_DEVICE_PRIVATE`,
    /// `PVMW_PGTABLE_CROSSED`, `include/linux/rmap.h` (7.0; `PVMW_DEVICE_PRIVATE` is v6).
    pub struct PvmwFlags: u32 {
        /// No flags.
        ///
        /// Kernel: none (model only).
        const NONE = 0;
        /// Take the PTE lock before looking (no racy lockless checks).
        ///
        /// Kernel: `PVMW_SYNC` (1 << 0, 7.0).
        const SYNC = 1 << 0;
        /// Look for migration entries instead of present PTEs.
        ///
        /// Kernel: `PVMW_MIGRATION` (1 << 1, 7.0).
        const MIGRATION = 1 << 1;
        /// The target is a device-private offset. Derived from the target here.
        ///
        /// Kernel: `PVMW_DEVICE_PRIVATE` (1 << 2, v6 history, v3+).
        const DEVICE_PRIVATE = 1 << 2;
        /// The walk crossed a PTE-table boundary (never cleared).
        ///
        /// Kernel: `PVMW_PGTABLE_CROSSED` (1 << 16, 7.0).
        const PGTABLE_CROSSED = 1 << 16;
    }
}

/// What `check_pte()` and `check_pmd()` compare against: the target frame,
/// how many pages it spans, and the input flags.
///
/// Kernel: the `pfn`, `nr_pages` and `flags` fields of
/// `struct page_vma_mapped_walk`; `check_pte()` / `check_pmd()`,
/// `mm/page_vma_mapped.c` (7.0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvmwTarget {
    frame: PageFrame,
    nr_pages: PageCount,
    migration: bool,
}

impl PvmwTarget {
    /// A target of `nr_pages` pages from `frame`; `migration` is
    /// `PVMW_MIGRATION`.
    ///
    /// Kernel: `DEFINE_FOLIO_VMA_WALK()`'s `.pfn`, `.nr_pages`, `.flags` (7.0).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `nr_pages` is zero or the range would pass the
    /// end of its index space.
    pub fn new(
        frame: PageFrame,
        nr_pages: PageCount,
        migration: bool,
    ) -> Result<PvmwTarget, Errno> {
        if nr_pages.is_zero()
            || frame
                .checked_add(PageCount::new(nr_pages.get() - 1))
                .is_none()
        {
            return Err(Errno::EINVAL);
        }
        Ok(PvmwTarget {
            frame,
            nr_pages,
            migration,
        })
    }

    /// The target frame. Use this, never a raw number (Zi Yan's "use a
    /// helper, never the raw field").
    ///
    /// Kernel: `folio_page_vma_walk_pfn()` / `page_vma_walk_pfn_to_folio()` (7.0).
    pub fn frame(&self) -> PageFrame {
        self.frame
    }

    /// Pages in the target.
    ///
    /// Kernel: `pvmw->nr_pages` (7.0).
    pub fn nr_pages(&self) -> PageCount {
        self.nr_pages
    }

    /// The input flag bits, with `DEVICE_PRIVATE` derived from the target.
    ///
    /// Kernel: `page_vma_walk_flags(folio, flags)` (v6 05/13).
    pub fn flags(&self) -> PvmwFlags {
        let mut f = PvmwFlags::NONE;
        if self.migration {
            f = f | PvmwFlags::MIGRATION;
        }
        if self.frame.is_device_private() {
            f = f | PvmwFlags::DEVICE_PRIVATE;
        }
        f
    }

    /// `true` if the entry's frame lies in the target's space and its
    /// `nr` pages overlap the target's (overflow-safe).
    ///
    /// Kernel: the tail of `check_pte()` / `check_pmd()`, including
    /// `device_private != (bool)(pvmw->flags & PVMW_DEVICE_PRIVATE)` (v6).
    #[inline]
    fn overlaps(&self, frame: PageFrame, nr: u64) -> bool {
        let nr = PageCount::new(nr);
        match (frame, self.frame) {
            (PageFrame::Pfn(p), PageFrame::Pfn(t)) => ranges_overlap(p, nr, t, self.nr_pages),
            (PageFrame::DevicePrivate(o), PageFrame::DevicePrivate(t)) => {
                ranges_overlap(o, nr, t, self.nr_pages)
            }
            // Different spaces never match.
            _ => false,
        }
    }

    /// Does `pte`, describing `pte_nr` pages, map part of the target?
    ///
    /// Kernel: `check_pte(pvmw, pte_nr)`, `mm/page_vma_mapped.c` (v6 proposal);
    /// see the module table.
    #[inline]
    pub fn check_pte(&self, pte: Pte, pte_nr: u64, mode: PagingMode) -> bool {
        let frame = if self.migration {
            let entry = Softleaf::from_pte(pte);
            if !entry.is_migration() {
                return false;
            }
            entry.to_frame(mode)
        } else if pte.is_present() {
            Some(PageFrame::Pfn(pte.pfn()))
        } else {
            let entry = Softleaf::from_pte(pte);
            if !entry.is_device_private() && !entry.is_device_exclusive() {
                return false;
            }
            entry.to_frame(mode)
        };
        frame.is_some_and(|f| self.overlaps(f, pte_nr))
    }

    /// Does a PMD-sized mapping of `frame` overlap the target?
    ///
    /// Kernel: `check_pmd(pfn, device_private, pvmw)` (v6 proposal), with the
    /// `(pfn, device_private)` pair as one typed frame.
    pub fn check_pmd(&self, frame: PageFrame) -> bool {
        self.overlaps(frame, HPAGE_PMD_NR)
    }
}

/// The v2 (superseded) encoding of `pvmw->pfn`: the index shifted left by
/// one, bit 0 set for a device-private offset. Kept as a documented
/// historical variant: it loses bit 63 (Zi Yan's review of v2 05/11,
/// January 2026; hazard H8, `docs/hazards.md`).
///
/// Kernel: `PVMW_PFN_DEVICE_PRIVATE`, `PVMW_PFN_SHIFT`,
/// `page_vma_walk_pfn()`, `folio_page_vma_walk_pfn()` in v6 history, v2 05/11.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PvmwPfnV2(u64);

impl PvmwPfnV2 {
    /// Kernel: `PVMW_PFN_DEVICE_PRIVATE` (`1 << 0`, v2).
    pub const DEVICE_PRIVATE: u64 = 1;
    /// Kernel: `PVMW_PFN_SHIFT` (1, v2).
    pub const SHIFT: u32 = 1;

    /// The C macro as written: `pfn << PVMW_PFN_SHIFT`, dropping bit 63.
    ///
    /// Kernel: `page_vma_walk_pfn(pfn)` (v2).
    pub const fn page_vma_walk_pfn_unchecked(raw: u64) -> u64 {
        raw << Self::SHIFT
    }

    /// Encodes `frame`.
    ///
    /// Kernel: `folio_page_vma_walk_pfn(folio)` (v2).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] for an index of 2^63 or more, which the shift would
    /// corrupt.
    pub const fn encode(frame: PageFrame) -> Result<PvmwPfnV2, Errno> {
        let raw = frame.raw_index();
        if raw >> 63 != 0 {
            return Err(Errno::EINVAL);
        }
        let dp = if frame.is_device_private() {
            Self::DEVICE_PRIVATE
        } else {
            0
        };
        Ok(PvmwPfnV2(Self::page_vma_walk_pfn_unchecked(raw) | dp))
    }

    /// A value as C would hold it.
    ///
    /// Kernel: none (model only).
    pub const fn from_raw(v: u64) -> PvmwPfnV2 {
        PvmwPfnV2(v)
    }

    /// The raw value.
    ///
    /// Kernel: none (model only).
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Decodes the frame.
    ///
    /// Kernel: `page_vma_walk_pfn_to_page()` (v2), without the page lookup.
    pub const fn frame(self) -> PageFrame {
        let raw = self.0 >> Self::SHIFT;
        if self.0 & Self::DEVICE_PRIVATE != 0 {
            PageFrame::DevicePrivate(DevicePrivateOffset::new(raw))
        } else {
            PageFrame::Pfn(Pfn::new(raw))
        }
    }
}

/// Where the walk resumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Label {
    Restart,
    ThisPte,
    NextPte,
}

/// Outcome of one pass of the `restart:` loop body.
enum Step {
    /// `continue` (checks `address < end`).
    Continue,
    /// `return` this value.
    Return(bool),
    /// `goto` a label.
    Goto(Label),
}

/// A walk over the mappings of a target range in one VMA.
///
/// Kernel: `struct page_vma_mapped_walk` + `page_vma_mapped_walk()`,
/// `mm/page_vma_mapped.c` (7.0).
///
/// # Differences from the kernel
///
/// - The target is a typed [`PageFrame`]; `PVMW_DEVICE_PRIVATE` is derived
///   from it rather than stored.
/// - hugetlb VMAs do not exist in the model, so the hugetlb branch is
///   absent.
/// - After the walk has returned `false` (or [`done`](Self::done) was
///   called), further calls return `false`; the kernel leaves a stale
///   `pvmw->pte` that must not be reused.
pub struct PageVmaMappedWalk<'a> {
    mm: &'a Mm,
    vma: &'a Vma,
    target: PvmwTarget,
    pgoff: u64,
    address: u64,
    sync: bool,
    crossed: bool,
    finished: bool,
    pmd: Option<(&'a PmdTable, &'a PmdSlot)>,
    pte: Option<(&'a PteTable, usize)>,
    ptl: Option<MutexGuard<'a, ()>>,
    /// The PTE lock `map_pte()` found without taking it (`spinlock_t *ptl`
    /// local).
    saved_ptl: Option<&'a Mutex<()>>,
    /// The PMD value `map_pte()` mapped the table through (`pmd_t pmde`).
    pmde: Pmd,
    /// Planted bugs (`PvmwNoPtlRecheck`); none outside loom.
    mutants: Mutants,
    /// Under `PvmwNoPtlRecheck`: the entry `map_pte()` read locklessly,
    /// which `this_pte` then checks instead of re-reading it under the lock.
    lockless: Option<Pte>,
}

impl fmt::Debug for PageVmaMappedWalk<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageVmaMappedWalk")
            .field("target", &self.target)
            .field("address", &format_args!("{:#x}", self.address))
            .field("flags", &self.flags())
            .field("pmd", &self.pmd())
            .field("pte", &self.pte())
            .field("ptl_held", &self.ptl.is_some())
            .finish()
    }
}

impl<'a> PageVmaMappedWalk<'a> {
    /// A walk for `nr_pages` pages from `frame`, whose first page has page
    /// offset `pgoff`, starting at `address` in `vma`. `flags` may hold
    /// `SYNC` and `MIGRATION`.
    ///
    /// Kernel: `DEFINE_FOLIO_VMA_WALK()` / `DEFINE_PAGE_VMA_WALK()`
    /// (v6: `.pfn = folio_page_vma_walk_pfn()`,
    /// `.flags = page_vma_walk_flags()`).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `flags` holds anything but `SYNC | MIGRATION`,
    /// `nr_pages` is zero or overflows the index space, `vma` is not one of
    /// `mm`'s VMAs, or `address` is not page-aligned; [`Errno::EFAULT`] if
    /// `address` is outside `vma`.
    pub fn new(
        mm: &'a Mm,
        vma: &'a Vma,
        frame: PageFrame,
        nr_pages: PageCount,
        pgoff: u64,
        address: u64,
        flags: PvmwFlags,
    ) -> Result<Self, Errno> {
        if !PvmwFlags::SYNC.union(PvmwFlags::MIGRATION).contains(flags)
            || !mm.has_vma(vma)
            || !address.is_multiple_of(PAGE_SIZE)
        {
            return Err(Errno::EINVAL);
        }
        if !vma.contains(address) {
            return Err(Errno::EFAULT);
        }
        let target = PvmwTarget::new(frame, nr_pages, flags.contains(PvmwFlags::MIGRATION))?;
        Ok(PageVmaMappedWalk {
            mm,
            vma,
            target,
            pgoff,
            address,
            sync: flags.contains(PvmwFlags::SYNC),
            crossed: false,
            finished: false,
            pmd: None,
            pte: None,
            ptl: None,
            saved_ptl: None,
            pmde: Pmd::NONE,
            mutants: Mutants::NONE,
            lockless: None,
        })
    }

    /// A walk for a system folio in `vma`, at the first address where any
    /// of its pages would be mapped.
    ///
    /// Kernel: `DEFINE_FOLIO_VMA_WALK(pvmw, folio, vma, address, flags)` with
    /// `address = vma_address(vma, folio_pgoff(folio), folio_nr_pages(folio))`,
    /// as `rmap_walk_anon()` computes it (7.0).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new); [`Errno::EFAULT`] if the folio's range is not
    /// in the VMA.
    pub fn for_folio(
        mm: &'a Mm,
        vma: &'a Vma,
        folio: SysFolio<'_>,
        flags: PvmwFlags,
    ) -> Result<Self, Errno> {
        let nr = folio.nr_pages();
        let address = vma.vma_address(folio.index(), nr.get())?;
        Self::new(
            mm,
            vma,
            folio.pfn().into(),
            nr,
            folio.index(),
            address,
            flags,
        )
    }

    /// A walk for `nr_pages` device-private pages from `offset`.
    ///
    /// Kernel: `DEFINE_FOLIO_VMA_WALK()` for a device-private folio (series:
    /// `.pfn = device_private_folio_to_offset()`,
    /// `.flags |= PVMW_DEVICE_PRIVATE`, v6).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new); [`Errno::EFAULT`] if the range is not in the
    /// VMA.
    pub fn for_device_private(
        mm: &'a Mm,
        vma: &'a Vma,
        offset: DevicePrivateOffset,
        nr_pages: PageCount,
        pgoff: u64,
        flags: PvmwFlags,
    ) -> Result<Self, Errno> {
        let address = vma.vma_address(pgoff, nr_pages.get())?;
        Self::new(mm, vma, offset.into(), nr_pages, pgoff, address, flags)
    }

    /// The target and input flags.
    ///
    /// Kernel: none (model only).
    pub fn target(&self) -> &PvmwTarget {
        &self.target
    }

    /// The kernel flag bits: inputs, `DEVICE_PRIVATE` (derived) and
    /// `PGTABLE_CROSSED`.
    ///
    /// Kernel: `pvmw->flags` (7.0).
    pub fn flags(&self) -> PvmwFlags {
        let mut f = self.target.flags();
        if self.sync {
            f = f | PvmwFlags::SYNC;
        }
        if self.crossed {
            f = f | PvmwFlags::PGTABLE_CROSSED;
        }
        f
    }

    /// The current address.
    ///
    /// Kernel: `pvmw->address` (7.0).
    pub fn address(&self) -> u64 {
        self.address
    }

    /// The current PTE value, if the walk has a PTE mapped.
    ///
    /// Kernel: `ptep_get(pvmw->pte)` (7.0).
    pub fn pte(&self) -> Option<Pte> {
        self.pte.map(|(t, i)| t.get(i))
    }

    /// The current PMD value, if the walk has reached a PMD.
    ///
    /// Kernel: `pmdp_get(pvmw->pmd)` (7.0).
    pub fn pmd(&self) -> Option<Pmd> {
        self.pmd.map(|(_, s)| s.get())
    }

    /// `true` if the last match was at PMD level (`pvmw->pmd` set,
    /// `pvmw->pte` NULL).
    ///
    /// Kernel: none (model only).
    pub fn is_pmd_mapped(&self) -> bool {
        self.pmd.is_some() && self.pte.is_none()
    }

    /// `true` while a page-table lock is held.
    ///
    /// Kernel: `pvmw->ptl != NULL` (7.0).
    pub fn ptl_held(&self) -> bool {
        self.ptl.is_some()
    }

    /// Sets the matched PTE. Only while the walk holds its lock.
    ///
    /// Kernel: `set_pte_at(mm, pvmw.address, pvmw.pte, pte)` in rmap users (7.0).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] unless a PTE is mapped and its lock held.
    pub fn set_pte(&self, pte: Pte) -> Result<(), Errno> {
        match (self.pte, &self.ptl) {
            (Some((t, i)), Some(_)) => {
                t.set(i, pte);
                Ok(())
            }
            _ => Err(Errno::EINVAL),
        }
    }

    /// Clears the matched PTE, returning the old value.
    ///
    /// Kernel: `ptep_get_and_clear()` / `ptep_clear_flush()` in
    /// `try_to_migrate_one()` (7.0).
    ///
    /// # Errors
    ///
    /// As [`set_pte`](Self::set_pte).
    pub fn get_and_clear_pte(&self) -> Result<Pte, Errno> {
        let old = self.pte().ok_or(Errno::EINVAL)?;
        self.set_pte(Pte::NONE)?;
        Ok(old)
    }

    /// Sets the matched PMD to a leaf value. Only after a PMD-level match,
    /// while the walk holds the PMD lock.
    ///
    /// Kernel: `set_pmd_at()` in `set_pmd_migration_entry()` /
    /// `remove_migration_pmd()` (7.0).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] unless the match is at PMD level with the lock
    /// held, or if `pmd` is a table pointer.
    pub fn set_pmd(&self, pmd: Pmd) -> Result<(), Errno> {
        match (self.pmd, self.pte, &self.ptl) {
            (Some((_, slot)), None, Some(_)) if !pmd.is_table() && !slot.get().is_table() => {
                slot.set_locked(pmd);
                Ok(())
            }
            _ => Err(Errno::EINVAL),
        }
    }

    /// The walk with deliberate bugs, for loom mutant tests
    /// (`Mutant::PvmwNoPtlRecheck`, `Mutant::PvmwNoPmdSameRecheck`,
    /// `Mutant::PvmwSyncNoThpSerialise`; the others leave it correct, and
    /// outside loom `mutants` is empty).
    ///
    /// Kernel: none (model only).
    #[must_use]
    pub fn with_mutants(mut self, mutants: Mutants) -> Self {
        self.mutants = mutants;
        self
    }

    /// Ends the walk early: unlocks and unmaps.
    ///
    /// Kernel: `page_vma_mapped_walk_done()` (7.0).
    pub fn done(&mut self) {
        self.ptl = None;
        self.pte = None;
        self.finished = true;
    }

    /// The PMD value `next_pte:` re-checks against: the one `map_pte()`
    /// read, or with `PvmwNoPmdSameRecheck` the current one, so that the
    /// re-check always passes.
    fn mutant_saved_pmde(&self, slot: &PmdSlot) -> Pmd {
        if self.mutants.has(Mutant::PvmwNoPmdSameRecheck) {
            slot.get()
        } else {
            self.pmde
        }
    }

    /// `not_found()`: done, then `false`.
    fn not_found(&mut self) -> bool {
        self.done();
        false
    }

    /// Kernel: `vma_address_end()`, `mm/internal.h` (7.0).
    fn vma_address_end(&self) -> u64 {
        let nr = self.target.nr_pages.get();
        if nr == 1 {
            return self.address.wrapping_add(PAGE_SIZE);
        }
        let pgoff = self.pgoff.wrapping_add(nr);
        let addr = self.vma.start().wrapping_add(
            pgoff
                .wrapping_sub(self.vma.pgoff())
                .wrapping_shl(PAGE_SHIFT),
        );
        if addr < self.vma.start() || addr > self.vma.end() {
            self.vma.end()
        } else {
            addr
        }
    }

    /// Kernel: `step_forward()` (7.0).
    fn step_forward(&mut self, size: u64) {
        self.address = self.address.wrapping_add(size) & !(size - 1);
        if self.address == 0 {
            self.address = u64::MAX;
        }
    }

    /// `check_pmd(softleaf_to_pfn(entry), pvmw)` for a migration or
    /// device-private PMD (series: with the entry's device-private kind,
    /// which [`Softleaf::to_frame`] carries in the frame).
    fn check_pmd_entry(&self, pmde: Pmd) -> bool {
        Softleaf::from_pmd(pmde)
            .to_frame(self.mm.paging())
            .is_some_and(|f| self.target.check_pmd(f))
    }

    fn check_pte_current(&mut self, pte_nr: u64) -> bool {
        if self.mutants.has(Mutant::PvmwNoPtlRecheck)
            && let Some(pte) = self.lockless.take()
        {
            return self.target.check_pte(pte, pte_nr, self.mm.paging());
        }
        self.pte()
            .is_some_and(|pte| self.target.check_pte(pte, pte_nr, self.mm.paging()))
    }

    /// Finds the next place the target is mapped. `true`: the entry is at
    /// [`address`](Self::address), with its lock held; `false`: no more
    /// mappings in this VMA (all locks released).
    ///
    /// Kernel: `page_vma_mapped_walk(pvmw)`, `mm/page_vma_mapped.c` (7.0,
    /// with the v6 proposal's `check_pte()`/`check_pmd()`), whose control
    /// flow this follows step by step.
    #[inline]
    pub fn walk(&mut self) -> bool {
        if self.finished {
            return false;
        }
        // The only possible PMD mapping was returned last time.
        if self.pmd.is_some() && self.pte.is_none() {
            return self.not_found();
        }
        let end = self.vma_address_end();
        if self.pte.is_some() && self.ptl.is_some() && self.next_pte_locked(end) {
            return true;
        }
        let mut at = if self.pte.is_some() {
            Label::NextPte
        } else {
            Label::Restart
        };
        loop {
            at = match at {
                Label::Restart => match self.restart_body() {
                    Step::Continue => {
                        if self.address < end {
                            Label::Restart
                        } else {
                            return false;
                        }
                    }
                    Step::Return(r) => return r,
                    Step::Goto(l) => l,
                },
                Label::ThisPte => {
                    if self.check_pte_current(1) {
                        return true;
                    }
                    Label::NextPte
                }
                Label::NextPte => match self.next_pte(end) {
                    Step::Return(r) => return r,
                    Step::Goto(l) => l,
                    Step::Continue => Label::Restart,
                },
            };
        }
    }

    /// One pass of the `restart:` do-while body, up to `this_pte`.
    fn restart_body(&mut self) -> Step {
        let mm = self.mm;
        if !mm.pgd_present(self.address) {
            self.step_forward(PGDIR_SIZE);
            return Step::Continue;
        }
        // P4D is folded (4-level paging): always present.
        let Some(pmdt) = mm.pmd_table(self.address) else {
            self.step_forward(PUD_SIZE);
            return Step::Continue;
        };
        let slot = pmdt.slot(self.address);
        self.pmd = Some((pmdt, slot));
        let mut pmde = slot.get();
        let fixed = mm.config().pvmw_pmd == PvmwPmdPolicy::Fixed;

        if pmde.is_trans_huge()
            || pmd_is_migration_entry(pmde)
            || fixed && pmd_is_device_private_entry(pmde)
        {
            self.ptl = Some(pmdt.ptl().lock());
            pmde = slot.get();
            if fixed {
                // CVE-2026-68163 fix: every leaf kind is re-checked under
                // the lock.
                if pmd_is_migration_entry(pmde) {
                    if !mm.config().thp_migration || !self.target.migration {
                        return Step::Return(self.not_found());
                    }
                    return Step::Return(self.check_pmd_entry(pmde) || self.not_found());
                } else if pmd_is_device_private_entry(pmde) {
                    if self.target.migration {
                        return Step::Return(self.not_found());
                    }
                    return Step::Return(self.check_pmd_entry(pmde) || self.not_found());
                } else if !pmde.is_present() {
                    return Step::Return(self.not_found());
                }
            } else if !pmde.is_present() {
                if !mm.config().thp_migration || !self.target.migration {
                    return Step::Return(self.not_found());
                }
                let entry = Softleaf::from_pmd(pmde);
                // Series: `device_private = softleaf_is_device_private(entry)
                // || softleaf_is_migration_device_private(entry)`, which is
                // what `to_frame()` encodes in the frame's kind.
                let matched = entry.is_migration()
                    && entry
                        .to_frame(mm.paging())
                        .is_some_and(|f| self.target.check_pmd(f));
                if !matched {
                    return Step::Return(self.not_found());
                }
                return Step::Return(true);
            }
            if pmde.is_trans_huge() {
                if self.target.migration {
                    return Step::Return(self.not_found());
                }
                if !self.target.check_pmd(PageFrame::Pfn(pmde.pfn())) {
                    return Step::Return(self.not_found());
                }
                return Step::Return(true);
            }
            // THP (or, fixed, device-private) PMD was split under us:
            // handle on PTE level.
            self.ptl = None;
        } else if !pmde.is_present() {
            if pmd_is_device_private_entry(pmde) {
                // PvmwPmdPolicy::V7_0 (hazard H13): a device-private PMD
                // "matches" whatever the target, with no re-read, no offset
                // and no PVMW_MIGRATION check (7.0, unchanged by the v6
                // proposal).
                self.ptl = Some(pmdt.ptl().lock());
                return Step::Return(true);
            }
            if self.sync
                && self.vma.thp_suitable(self.address)
                && self.target.nr_pages.get() >= HPAGE_PMD_NR
                && !self.mutants.has(Mutant::PvmwSyncNoThpSerialise)
            {
                // Serialise with a zap that cleared the PMD but has not yet
                // dropped the mapcount (loom: `pvmw_sync_vs_zap_huge_pmd`).
                drop(pmdt.ptl().lock());
            }
            self.step_forward(PMD_SIZE);
            return Step::Continue;
        }
        if !self.map_pte(slot) {
            return Step::Goto(if self.pte.is_none() {
                Label::Restart
            } else {
                Label::NextPte
            });
        }
        Step::Goto(Label::ThisPte)
    }

    /// Maps the PTE at `address`, locking it if it is worth checking.
    ///
    /// Kernel: `map_pte(pvmw, &pmde, &ptl)`, `mm/page_vma_mapped.c` (7.0).
    fn map_pte(&mut self, slot: &'a PmdSlot) -> bool {
        let idx = pte_index(self.address);
        if self.sync {
            // pte_offset_map_lock(): map, lock, re-check the PMD, retry.
            loop {
                let pmdval = slot.get();
                let Some(table) = slot.table_if(pmdval) else {
                    self.pte = None;
                    return false;
                };
                let guard = table.ptl().lock();
                if slot.get() == pmdval {
                    self.pte = Some((table, idx));
                    self.saved_ptl = Some(table.ptl());
                    self.ptl = Some(guard);
                    return true;
                }
            }
        }
        loop {
            // pte_offset_map_rw_nolock(): remembers the PMD value and the ptl.
            let pmdval = slot.get();
            self.pmde = pmdval;
            let Some(table) = slot.table_if(pmdval) else {
                self.pte = None;
                return false;
            };
            self.pte = Some((table, idx));
            self.saved_ptl = Some(table.ptl());
            let ptent = table.get(idx);
            if self.mutants.has(Mutant::PvmwNoPtlRecheck) {
                self.lockless = Some(ptent);
            }
            if ptent.is_none() {
                return false;
            } else if ptent.is_present() {
                if self.target.migration {
                    return false;
                }
            } else if !self.target.migration {
                // Device-private and device-exclusive entries count as a
                // valid regular mapping.
                let entry = Softleaf::from_pte(ptent);
                if !entry.is_device_private() && !entry.is_device_exclusive() {
                    return false;
                }
            }
            let guard = table.ptl().lock();
            if slot.get() != self.pmde {
                drop(guard);
                continue;
            }
            self.ptl = Some(guard);
            return true;
        }
    }

    /// The common case of `next_pte:` → `this_pte:` with the PTE lock held
    /// and no table boundary or `end` in sight, as a tight loop. Returns
    /// `true` on a match. Otherwise it stops *before* the step that would
    /// reach a boundary or `end`, leaving `address` and `pte` on the last
    /// entry it examined, so that [`next_pte`](Self::next_pte) resumes
    /// exactly where the kernel's loop would be.
    #[inline]
    fn next_pte_locked(&mut self, end: u64) -> bool {
        let Some((table, mut idx)) = self.pte else {
            return false;
        };
        let mode = self.mm.paging();
        let mut addr = self.address;
        loop {
            let next = addr.wrapping_add(PAGE_SIZE);
            if next >= end || next & (PMD_SIZE - PAGE_SIZE) == 0 {
                self.address = addr;
                self.pte = Some((table, idx));
                return false;
            }
            addr = next;
            idx += 1;
            let pte = table.get(idx);
            if pte.is_none() {
                continue;
            }
            if self.target.check_pte(pte, 1, mode) {
                self.address = addr;
                self.pte = Some((table, idx));
                return true;
            }
        }
    }

    /// The `next_pte:` loop and the lock/re-check that follows it.
    /// `Continue` means `goto restart`.
    fn next_pte(&mut self, end: u64) -> Step {
        let Some((table, mut idx)) = self.pte else {
            return Step::Continue;
        };
        loop {
            self.address = self.address.wrapping_add(PAGE_SIZE);
            if self.address >= end {
                return Step::Return(self.not_found());
            }
            // Did we cross a page-table boundary?
            if self.address & (PMD_SIZE - PAGE_SIZE) == 0 {
                self.ptl = None;
                self.pte = None;
                self.crossed = true;
                return Step::Continue;
            }
            idx += 1;
            self.pte = Some((table, idx));
            if !table.get(idx).is_none() {
                break;
            }
        }
        if self.ptl.is_none() {
            let (Some(ptl), Some((_, slot))) = (self.saved_ptl, self.pmd) else {
                return Step::Continue;
            };
            let guard = ptl.lock();
            // pmd_same(): the table may have been taken out of the PMD
            // (`pmdp_collapse_flush()`) since `map_pte()` read it.
            if slot.get() != self.mutant_saved_pmde(slot) {
                drop(guard);
                self.pte = None;
                return Step::Continue;
            }
            self.ptl = Some(guard);
        }
        Step::Goto(Label::ThisPte)
    }
}

/// The address at which the page `page` (with page offset `page_pgoff`) is
/// mapped in `vma`: mainline semantics, using the page's **own** frame.
///
/// Kernel: `page_mapped_in_vma(page, vma)`, `mm/page_vma_mapped.c`
/// (`CONFIG_MEMORY_FAILURE`, 7.0).
///
/// # Differences from the kernel
///
/// The v6 proposal (05/13) sets `.pfn = folio_page_vma_walk_pfn(folio)` — the
/// folio's head — with `.nr_pages = 1`, so for a tail page of a large folio
/// the walk compares the tail's PTE against the head and cannot match
/// (hazard H12, **unconfirmed** as a real regression). The model follows
/// mainline, with the page's typed frame (its pfn, or its device-private
/// offset); [`page_mapped_in_vma_as_posted`] reproduces the v6 proposal.
///
/// # Errors
///
/// [`Errno::EFAULT`] if the page is outside the VMA or not mapped there.
pub fn page_mapped_in_vma(
    mm: &Mm,
    vma: &Vma,
    page: PageFrame,
    page_pgoff: u64,
) -> Result<u64, Errno> {
    mapped_in_vma(mm, vma, page, page_pgoff)
}

/// [`page_mapped_in_vma`] as v6 proposal 05/13 posted it: the walk target is
/// the folio's frame (`folio_head`), one page, at the page's address.
///
/// Kernel: `page_mapped_in_vma()` after v6 05/13.
///
/// # Errors
///
/// [`Errno::EFAULT`] if the page is outside the VMA or the walk finds
/// nothing — which, for any tail page of a large folio, it never does.
pub fn page_mapped_in_vma_as_posted(
    mm: &Mm,
    vma: &Vma,
    folio_head: PageFrame,
    page_pgoff: u64,
) -> Result<u64, Errno> {
    mapped_in_vma(mm, vma, folio_head, page_pgoff)
}

fn mapped_in_vma(mm: &Mm, vma: &Vma, frame: PageFrame, page_pgoff: u64) -> Result<u64, Errno> {
    let address = vma.vma_address(page_pgoff, 1)?;
    let mut pvmw = PageVmaMappedWalk::new(
        mm,
        vma,
        frame,
        PageCount::ONE,
        page_pgoff,
        address,
        PvmwFlags::SYNC,
    )?;
    if !pvmw.walk() {
        return Err(Errno::EFAULT);
    }
    let addr = pvmw.address();
    pvmw.done();
    Ok(addr)
}
