//! Reverse mapping for migration: folios of either kind, their map counts,
//! `try_to_migrate()` and `remove_migration_ptes()`.
//!
//! Kernel: `mm/rmap.c` (`try_to_migrate()`, `try_to_migrate_one()`,
//! `folio_add_new_anon_rmap()`, `folio_add_anon_rmap_pte()`,
//! `folio_remove_rmap_pte()`, `folio_remove_rmap_pmd()`), `mm/migrate.c`
//! (`remove_migration_ptes()`, `remove_migration_pte()`),
//! `mm/huge_memory.c` (`set_pmd_migration_entry()`,
//! `remove_migration_pmd()`).
//!
//! A migration moves a folio between system RAM ([`SysFolio`]) and
//! device-private memory ([`Folio`] of a `devpriv-pagemap` pagemap);
//! [`AnyFolio`] is either, with the operations migration needs. Both rmap
//! functions loop on [`PageVmaMappedWalk`] with `PVMW_SYNC`, the device
//! kind carrying its target as a device-private offset.
//!
//! # Differences from the kernel
//!
//! - The rmap walk covers one address space: the [`Mm`] the caller passes.
//!   A folio's anon cookie ([`AnyFolio::anon_id`]) is the id of the VMA it
//!   was first mapped in; every VMA of that `Mm` with the id (a VMA split
//!   by `munmap` keeps it) is walked, as `rmap_walk_anon()` walks the
//!   `anon_vma` chain. There is no `fork`, so no other address space can
//!   map the folio.
//! - `PageAnonExclusive` is not tracked: a read-only PTE becomes a
//!   `*_MIGRATION_READ` entry, never `READ_EXCLUSIVE`; soft-dirty and
//!   uffd-wp bits are not carried; no TLB flush or MMU notifier.
//! - The walker's device-private PMD branch matches any device-private PMD
//!   at the address (hazard H13); both functions here check the entry's
//!   offset against the folio before changing it.

use crate::leafops::{Softleaf, SoftleafFlags};
use crate::memory::{Mm, Vma};
use crate::page_alloc::{SysFolio, SystemMemory};
use crate::page_vma_mapped::{PageVmaMappedWalk, PvmwFlags};
use crate::pgtable::{_PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_PRESENT, _PAGE_RW, _PAGE_USER, Pmd, Pte};
use crate::swapops::{MigrationKind, make_device_private_entry, make_migration_entry};
use core::fmt;
use devpriv_core::{Errno, Order, PageCount, PageFrame, PagingMode, warn_on};
use devpriv_pagemap::mm_types::{PAGE_MAPPING_ANON, word};
use devpriv_pagemap::{DevicePrivateSpace, Folio, Page, SpaceReadGuard, folio_get, folio_put};
use std::sync::Arc;

/// The machine's memory: system RAM and the device-private address space.
///
/// Kernel: none (model only). It stands for two globals, the `mem_map`
/// behind `pfn_to_page()` and `device_private_pgmap_tree` behind
/// `device_private_offset_to_page()`. Cloning shares both.
#[derive(Clone)]
pub struct Memory {
    sys: Arc<SystemMemory>,
    space: Arc<DevicePrivateSpace>,
}

impl fmt::Debug for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memory")
            .field("sys", &self.sys)
            .field("space", &self.space)
            .finish()
    }
}

impl Memory {
    /// Puts system RAM and a device-private space together.
    ///
    /// Kernel: none (model only).
    pub fn new(sys: Arc<SystemMemory>, space: Arc<DevicePrivateSpace>) -> Memory {
        Memory { sys, space }
    }

    /// System RAM.
    ///
    /// Kernel: none (model only).
    pub fn sys(&self) -> &SystemMemory {
        &self.sys
    }

    /// The device-private address space.
    ///
    /// Kernel: none (model only; `device_private_pgmap_tree`).
    pub fn space(&self) -> &DevicePrivateSpace {
        &self.space
    }

    /// A shared handle to the device-private address space.
    ///
    /// Kernel: none (model only).
    pub fn space_arc(&self) -> &Arc<DevicePrivateSpace> {
        &self.space
    }
}

/// A folio in system RAM or in device-private memory.
///
/// Kernel: `struct folio *` (either `folio_is_device_private()` or not).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum AnyFolio<'a> {
    /// A system RAM folio.
    Sys(SysFolio<'a>),
    /// A device-private folio.
    Dev(Folio<'a>),
}

impl fmt::Debug for AnyFolio<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnyFolio::Sys(s) => s.fmt(f),
            AnyFolio::Dev(d) => f
                .debug_struct("DevFolio")
                .field("offset", &self.frame(0))
                .field("order", &d.order().get())
                .field("refcount", &d.ref_count())
                .finish(),
        }
    }
}

/// The folio and page index within it that back `frame`: a system page by
/// pfn, a device-private page by offset.
///
/// Kernel: `pfn_to_page()` / `softleaf_to_page()` / `migrate_pfn_to_page()`
/// followed by `page_folio()`.
///
/// # Differences from the kernel
///
/// `None` for a free system page, a pfn outside `sys`, or an offset no
/// pagemap holds (the device lookup also `WARN`s); the kernel would return
/// a `struct page` regardless.
pub fn frame_to_folio<'g>(
    sys: &'g SystemMemory,
    guard: &'g SpaceReadGuard<'_>,
    frame: PageFrame,
) -> Option<(AnyFolio<'g>, u64)> {
    match frame {
        PageFrame::Pfn(pfn) => {
            let f = sys.pfn_folio(pfn)?;
            Some((AnyFolio::Sys(f), pfn.checked_offset_from(f.pfn())?.get()))
        }
        PageFrame::DevicePrivate(off) => {
            let page = guard.device_private_offset_to_page(off)?;
            let folio = page.folio();
            let n = page.index().checked_sub(folio.page().index())?;
            Some((AnyFolio::Dev(folio), n as u64))
        }
    }
}

/// The low (signed) half of a page word: `_mapcount`-style counters.
fn low_i32(p: &Page, w: usize) -> i32 {
    let v = u32::try_from(p.raw(w) & 0xffff_ffff).unwrap_or(0);
    i32::from_ne_bytes(v.to_ne_bytes())
}

fn set_low_i32(p: &Page, w: usize, v: i32) {
    let hi = p.raw(w) & !0xffff_ffff;
    p.set_raw(w, hi | u64::from(u32::from_ne_bytes(v.to_ne_bytes())));
}

/// Adds `delta` to a low-half counter; `Err` if it would drop below −1.
fn add_low_i32(p: &Page, w: usize, delta: i32) -> Result<(), Errno> {
    let now = low_i32(p, w).checked_add(delta).ok_or(Errno::EINVAL)?;
    if now < -1 {
        return Err(Errno::EINVAL);
    }
    set_low_i32(p, w, now);
    Ok(())
}

impl<'a> AnyFolio<'a> {
    /// `true` for a device-private folio.
    ///
    /// Kernel: `folio_is_device_private()`.
    pub fn is_device_private(&self) -> bool {
        matches!(self, AnyFolio::Dev(_))
    }

    /// Pages in the folio.
    ///
    /// Kernel: `folio_nr_pages()`.
    pub fn nr_pages(&self) -> u64 {
        match self {
            AnyFolio::Sys(f) => f.nr_pages().get(),
            AnyFolio::Dev(f) => f.nr_pages().get(),
        }
    }

    /// The folio order.
    ///
    /// Kernel: `folio_order()`.
    pub fn order(&self) -> Order {
        match self {
            AnyFolio::Sys(f) => f.order(),
            AnyFolio::Dev(f) => f.order(),
        }
    }

    /// `true` for order > 0.
    ///
    /// Kernel: `folio_test_large()`.
    pub fn is_large(&self) -> bool {
        self.nr_pages() > 1
    }

    /// The frame of page `n`: a pfn, or a device-private offset.
    ///
    /// Kernel: `folio_pfn() + n`, or (series) `device_private_folio_to_offset() + n`.
    pub fn frame(&self, n: u64) -> Option<PageFrame> {
        match self {
            AnyFolio::Sys(f) => f.pfn().checked_add(PageCount::new(n)).map(Into::into),
            AnyFolio::Dev(f) => {
                let idx = (f.page().index() as u64).checked_add(n)?;
                f.page()
                    .owner()
                    .first_offset()
                    .checked_add(PageCount::new(idx))
                    .map(Into::into)
            }
        }
    }

    /// The index in this folio of the page at `frame`, if it is one of its
    /// pages.
    ///
    /// Kernel: `folio_page_idx()`.
    pub fn page_index(&self, frame: PageFrame) -> Option<u64> {
        let base = self.frame(0)?;
        if base.is_device_private() != frame.is_device_private() {
            return None;
        }
        let n = frame.raw_index().checked_sub(base.raw_index())?;
        (n < self.nr_pages()).then_some(n)
    }

    /// The reference count.
    ///
    /// Kernel: `folio_ref_count()`.
    pub fn refcount(&self) -> i64 {
        match self {
            AnyFolio::Sys(f) => i64::try_from(f.refcount()).unwrap_or(i64::MAX),
            AnyFolio::Dev(f) => i64::from(f.ref_count()),
        }
    }

    /// Takes a reference.
    ///
    /// Kernel: `folio_get()`.
    pub fn get(&self) {
        match self {
            AnyFolio::Sys(f) => f.get_many(1),
            AnyFolio::Dev(f) => folio_get(*f),
        }
    }

    /// Drops a reference; the last one frees the folio (a device folio
    /// through `free_zone_device_folio()` and the driver's `folio_free`).
    ///
    /// Kernel: `folio_put()`.
    pub fn put(&self) {
        match self {
            // An underflow takes a WARN inside and changes nothing.
            AnyFolio::Sys(f) => {
                let _ = f.put();
            }
            AnyFolio::Dev(f) => folio_put(*f),
        }
    }

    /// Kernel: `folio_trylock()`.
    pub fn trylock(&self) -> bool {
        match self {
            AnyFolio::Sys(f) => f.trylock(),
            AnyFolio::Dev(f) => f.trylock(),
        }
    }

    /// Kernel: `folio_unlock()`.
    pub fn unlock(&self) {
        match self {
            AnyFolio::Sys(f) => {
                let _ = f.unlock();
            }
            AnyFolio::Dev(f) => f.unlock(),
        }
    }

    /// Kernel: `folio_test_locked()`.
    pub fn is_locked(&self) -> bool {
        match self {
            AnyFolio::Sys(f) => f.is_locked(),
            AnyFolio::Dev(f) => f.test_locked(),
        }
    }

    /// Every mapping of the folio.
    ///
    /// Kernel: `folio_mapcount()`.
    pub fn mapcount(&self) -> i64 {
        match self {
            AnyFolio::Sys(f) => i64::try_from(f.mapcount()).unwrap_or(i64::MAX),
            AnyFolio::Dev(f) => {
                if f.is_large() {
                    f.nth_page(1)
                        .map_or(0, |p1| i64::from(low_i32(&p1, word::ZONE_DEVICE_DATA)) + 1)
                } else {
                    i64::from(f.page().raw_mapcount()) + 1
                }
            }
        }
    }

    /// PTE mappings of page `n`.
    ///
    /// Kernel: `page_mapcount()` without the entire mappings.
    pub fn page_pte_mapcount(&self, n: u64) -> Option<i64> {
        match self {
            AnyFolio::Sys(f) => {
                let all = f.page_mapcount(n)?;
                i64::try_from(all - f.entire_mapcount()).ok()
            }
            AnyFolio::Dev(f) => {
                let p = f.nth_page(usize::try_from(n).ok()?)?;
                (n < self.nr_pages()).then(|| i64::from(p.raw_mapcount()) + 1)
            }
        }
    }

    /// PMD mappings of the folio.
    ///
    /// Kernel: `folio_entire_mapcount()`.
    pub fn entire_mapcount(&self) -> i64 {
        match self {
            AnyFolio::Sys(f) => i64::try_from(f.entire_mapcount()).unwrap_or(i64::MAX),
            AnyFolio::Dev(f) => {
                if f.is_large() {
                    f.nth_page(1)
                        .map_or(0, |p1| i64::from(low_i32(&p1, word::MAPPING)) + 1)
                } else {
                    0
                }
            }
        }
    }

    /// The page offset of the folio in its VMA's mapping.
    ///
    /// Kernel: `folio->index`.
    pub fn index(&self) -> u64 {
        match self {
            AnyFolio::Sys(f) => f.index(),
            AnyFolio::Dev(f) => f.page().raw(word::INDEX),
        }
    }

    /// The anon cookie (the id of the VMA the folio was first mapped in), or
    /// `None` if the folio is not anon.
    ///
    /// Kernel: `folio_anon_vma()` (`folio->mapping` with
    /// `PAGE_MAPPING_ANON`).
    ///
    /// # Differences from the kernel
    ///
    /// A system folio stores the id itself; a device folio stores
    /// `id << 1 | PAGE_MAPPING_ANON` in its `mapping` word, so that
    /// `folio_test_anon()` in `devpriv-pagemap` sees an anon folio.
    pub fn anon_id(&self) -> Option<u64> {
        match self {
            AnyFolio::Sys(f) => (f.mapping() != 0).then(|| f.mapping()),
            AnyFolio::Dev(f) => f.test_anon().then(|| f.mapping() >> 1),
        }
    }

    /// Makes the folio anon in VMA `id` at page offset `index`.
    ///
    /// Kernel: `__folio_set_anon()` (`folio->mapping`, `folio->index`).
    pub fn set_anon(&self, id: u64, index: u64) {
        match self {
            AnyFolio::Sys(f) => {
                f.set_mapping(id);
                f.set_index(index);
            }
            AnyFolio::Dev(f) => {
                f.set_mapping(id << 1 | PAGE_MAPPING_ANON);
                f.page().set_raw(word::INDEX, index);
            }
        }
    }

    /// Adds PTE mappings of pages `first..first + nr`.
    ///
    /// Kernel: `folio_add_anon_rmap_ptes()` (map counts only).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if the pages are not all in the folio.
    pub fn add_rmap_ptes(&self, first: u64, nr: u64) -> Result<(), Errno> {
        match self {
            AnyFolio::Sys(f) => f.add_rmap_ptes(first, nr),
            AnyFolio::Dev(f) => dev_rmap_ptes(*f, first, nr, 1),
        }
    }

    /// Removes PTE mappings of pages `first..first + nr`.
    ///
    /// Kernel: `folio_remove_rmap_ptes()`.
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if the pages are not all in the folio, or one of
    /// them is not PTE-mapped.
    pub fn remove_rmap_ptes(&self, first: u64, nr: u64) -> Result<(), Errno> {
        match self {
            AnyFolio::Sys(f) => f.remove_rmap_ptes(first, nr),
            AnyFolio::Dev(f) => dev_rmap_ptes(*f, first, nr, -1),
        }
    }

    /// Adds a PMD mapping of the whole folio.
    ///
    /// Kernel: `folio_add_anon_rmap_pmd()`.
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] unless the folio is PMD-sized.
    pub fn add_rmap_pmd(&self) -> Result<(), Errno> {
        match self {
            AnyFolio::Sys(f) => f.add_rmap_pmd(),
            AnyFolio::Dev(f) => dev_rmap_pmd(*f, 1),
        }
    }

    /// Removes a PMD mapping.
    ///
    /// Kernel: `folio_remove_rmap_pmd()`.
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] unless the folio is PMD-mapped.
    pub fn remove_rmap_pmd(&self) -> Result<(), Errno> {
        match self {
            AnyFolio::Sys(f) => f.remove_rmap_pmd(),
            AnyFolio::Dev(f) => dev_rmap_pmd(*f, -1),
        }
    }
}

/// PTE rmap of a device folio: each page's `_mapcount`, plus
/// `_large_mapcount` (low half of page\[1\] word 2) for a large folio.
fn dev_rmap_ptes(f: Folio<'_>, first: u64, nr: u64, delta: i32) -> Result<(), Errno> {
    let end = first.checked_add(nr).ok_or(Errno::EINVAL)?;
    if nr == 0 || end > f.nr_pages().get() {
        return Err(Errno::EINVAL);
    }
    let pages = (first..end)
        .map(|n| usize::try_from(n).ok().and_then(|n| f.nth_page(n)))
        .collect::<Option<Vec<_>>>()
        .ok_or(Errno::EINVAL)?;
    if delta < 0 && pages.iter().any(|p| p.raw_mapcount() < 0) {
        return Err(Errno::EINVAL);
    }
    for p in &pages {
        p.set_raw_mapcount(p.raw_mapcount() + delta);
    }
    if f.is_large()
        && let Some(p1) = f.nth_page(1)
    {
        let n = i32::try_from(nr).map_err(|_| Errno::EINVAL)?;
        add_low_i32(&p1, word::ZONE_DEVICE_DATA, n * delta)?;
    }
    Ok(())
}

/// PMD rmap of a device folio: `_entire_mapcount` (page\[1\] word 3) and
/// `_large_mapcount`.
fn dev_rmap_pmd(f: Folio<'_>, delta: i32) -> Result<(), Errno> {
    if f.order() != Order::HPAGE_PMD {
        return Err(Errno::EINVAL);
    }
    let p1 = f.nth_page(1).ok_or(Errno::EINVAL)?;
    if delta < 0 && low_i32(&p1, word::MAPPING) < 0 {
        return Err(Errno::EINVAL);
    }
    add_low_i32(&p1, word::MAPPING, delta)?;
    add_low_i32(&p1, word::ZONE_DEVICE_DATA, delta)
}

/// A walk over the places `folio` is mapped in `vma`.
///
/// Kernel: `DEFINE_FOLIO_VMA_WALK()` with the series' helpers.
pub(crate) fn folio_walk<'m>(
    mm: &'m Mm,
    vma: &'m Vma,
    folio: AnyFolio<'_>,
    flags: PvmwFlags,
) -> Result<PageVmaMappedWalk<'m>, Errno> {
    match folio {
        AnyFolio::Sys(f) => PageVmaMappedWalk::for_folio(mm, vma, f, flags),
        AnyFolio::Dev(_) => {
            let Some(PageFrame::DevicePrivate(off)) = folio.frame(0) else {
                return Err(Errno::EINVAL);
            };
            PageVmaMappedWalk::for_device_private(
                mm,
                vma,
                off,
                PageCount::new(folio.nr_pages()),
                folio.index(),
                flags,
            )
        }
    }
}

/// Present-PTE bits for a page restored from a migration entry.
pub(crate) fn prot_from_migration(entry: Softleaf, mode: PagingMode) -> u64 {
    let SoftleafFlags { young, dirty } = entry.to_flags(mode);
    let mut prot = _PAGE_PRESENT | _PAGE_USER;
    if entry.is_migration_write() {
        prot |= _PAGE_RW;
    }
    if young {
        prot |= _PAGE_ACCESSED;
    }
    if dirty {
        prot |= _PAGE_DIRTY;
    }
    prot
}

/// The migration entry replacing a present or device-private PTE, and the
/// frame it names; `None` for any other PTE.
pub(crate) fn pte_to_migration_entry(
    pte: Pte,
    mode: PagingMode,
) -> Result<Option<(Softleaf, PageFrame)>, Errno> {
    if pte.is_present() {
        let frame: PageFrame = pte.pfn().into();
        let kind = if pte.is_write() {
            MigrationKind::Write
        } else {
            MigrationKind::Read
        };
        let flags = SoftleafFlags {
            young: pte.flags() & _PAGE_ACCESSED != 0,
            dirty: pte.flags() & _PAGE_DIRTY != 0,
        };
        let e = make_migration_entry(kind, frame, mode)?.with_flags(flags, mode)?;
        return Ok(Some((e, frame)));
    }
    let leaf = Softleaf::from_pte(pte);
    if !leaf.is_device_private() {
        return Ok(None);
    }
    let frame = leaf.to_frame(mode).ok_or(Errno::EINVAL)?;
    let kind = if leaf.is_device_private_write() {
        MigrationKind::Write
    } else {
        MigrationKind::Read
    };
    Ok(Some((make_migration_entry(kind, frame, mode)?, frame)))
}

/// The migration entry replacing a huge or device-private PMD, and the
/// frame it names; `None` for any other PMD.
///
/// Kernel: the entry `set_pmd_migration_entry()` builds.
pub(crate) fn pmd_to_migration_entry(
    pmd: Pmd,
    mode: PagingMode,
) -> Result<Option<(Softleaf, PageFrame)>, Errno> {
    if pmd.is_trans_huge() {
        let frame: PageFrame = pmd.pfn().into();
        let kind = if pmd.is_write() {
            MigrationKind::Write
        } else {
            MigrationKind::Read
        };
        let raw = pmd.raw();
        let flags = SoftleafFlags {
            young: raw & _PAGE_ACCESSED != 0,
            dirty: raw & _PAGE_DIRTY != 0,
        };
        let e = make_migration_entry(kind, frame, mode)?.with_flags(flags, mode)?;
        return Ok(Some((e, frame)));
    }
    let leaf = Softleaf::from_pmd(pmd);
    if !leaf.is_device_private() {
        return Ok(None);
    }
    let frame = leaf.to_frame(mode).ok_or(Errno::EINVAL)?;
    let kind = if leaf.is_device_private_write() {
        MigrationKind::Write
    } else {
        MigrationKind::Read
    };
    Ok(Some((make_migration_entry(kind, frame, mode)?, frame)))
}

/// Replaces every mapping of `folio` in `mm` with a migration entry,
/// dropping the mapping's rmap and reference: present PTEs and huge PMDs
/// of a system folio, device-private PTEs and PMDs of a device folio
/// (series: `SWP_MIGRATION_DEVICE_*` entries with the offset).
///
/// Kernel: `try_to_migrate(folio, 0)` → `rmap_walk()` →
/// `try_to_migrate_one()`, `mm/rmap.c`; a PMD mapping goes through
/// `set_pmd_migration_entry()`, `mm/huge_memory.c`.
///
/// The caller holds the folio lock and a reference.
///
/// # Differences from the kernel
///
/// See the module documentation (one address space, no anon-exclusive
/// tracking, the PMD offset check).
///
/// # Errors
///
/// [`Errno::EINVAL`] if an entry cannot be encoded or the map counts are
/// inconsistent (a broken invariant; the walk stops there).
pub fn try_to_migrate(mm: &Mm, folio: AnyFolio<'_>) -> Result<(), Errno> {
    let Some(id) = folio.anon_id() else {
        return Ok(());
    };
    let mode = mm.paging();
    for vma in mm.vmas().iter().filter(|v| v.id() == id) {
        let Ok(mut w) = folio_walk(mm, vma, folio, PvmwFlags::SYNC) else {
            continue;
        };
        while w.walk() {
            if w.is_pmd_mapped() {
                let Some(pmd) = w.pmd() else { continue };
                let Some((entry, frame)) = pmd_to_migration_entry(pmd, mode)? else {
                    continue;
                };
                if folio.page_index(frame) != Some(0) {
                    continue;
                }
                w.set_pmd(Pmd::from_swp_entry(entry)?)?;
                folio.remove_rmap_pmd()?;
                folio.put();
                continue;
            }
            let Some(pte) = w.pte() else { continue };
            let Some((entry, frame)) = pte_to_migration_entry(pte, mode)? else {
                continue;
            };
            let Some(n) = folio.page_index(frame) else {
                continue;
            };
            w.set_pte(Pte::from_swp_entry(entry)?)?;
            folio.remove_rmap_ptes(n, 1)?;
            folio.put();
        }
    }
    Ok(())
}

/// Replaces every migration entry for `src` in `mm` with a mapping of the
/// same page of `dst` (`src` itself to undo a migration): a present PTE or
/// huge PMD for a system folio, a `SWP_DEVICE_{WRITE,READ}` entry for a
/// device folio. Each new mapping takes a reference and an rmap on `dst`.
///
/// Kernel: `remove_migration_ptes(src, dst, 0)` → `remove_migration_pte()`,
/// `mm/migrate.c`; `remove_migration_pmd()`, `mm/huge_memory.c`.
///
/// Writability follows the migration entry; a restored present entry is
/// young or dirty only if the entry says so.
///
/// # Errors
///
/// [`Errno::EINVAL`] if an entry cannot be encoded or `dst`'s map counts
/// are inconsistent (a broken invariant; the walk stops there).
pub fn remove_migration_ptes(mm: &Mm, src: AnyFolio<'_>, dst: AnyFolio<'_>) -> Result<(), Errno> {
    let Some(id) = dst.anon_id().or_else(|| src.anon_id()) else {
        return Ok(());
    };
    let mode = mm.paging();
    for vma in mm.vmas().iter().filter(|v| v.id() == id) {
        let Ok(mut w) = folio_walk(mm, vma, src, PvmwFlags::SYNC | PvmwFlags::MIGRATION) else {
            continue;
        };
        while w.walk() {
            if w.is_pmd_mapped() {
                let Some(pmd) = w.pmd() else { continue };
                let entry = Softleaf::from_pmd(pmd);
                let Some(frame) = entry.to_frame(mode) else {
                    continue;
                };
                if !entry.is_migration() || src.page_index(frame) != Some(0) {
                    continue;
                }
                let new = match dst.frame(0) {
                    Some(PageFrame::DevicePrivate(off)) => Pmd::from_swp_entry(
                        make_device_private_entry(entry.is_migration_write(), off, mode)?,
                    )?,
                    Some(PageFrame::Pfn(pfn)) => Pmd::huge(pfn, prot_from_migration(entry, mode))?,
                    None => return Err(Errno::EINVAL),
                };
                dst.add_rmap_pmd()?;
                dst.get();
                w.set_pmd(new)?;
                continue;
            }
            let Some(pte) = w.pte() else { continue };
            let entry = Softleaf::from_pte(pte);
            let Some(frame) = entry.to_frame(mode) else {
                continue;
            };
            if !entry.is_migration() {
                continue;
            }
            let Some(n) = src.page_index(frame) else {
                continue;
            };
            if warn_on!(
                n >= dst.nr_pages(),
                "remove_migration_pte(): destination folio smaller than the source"
            ) {
                continue;
            }
            let new = match dst.frame(n) {
                Some(PageFrame::DevicePrivate(off)) => Pte::from_swp_entry(
                    make_device_private_entry(entry.is_migration_write(), off, mode)?,
                )?,
                Some(PageFrame::Pfn(pfn)) => Pte::pfn_pte(pfn, prot_from_migration(entry, mode))?,
                None => return Err(Errno::EINVAL),
            };
            dst.add_rmap_ptes(n, 1)?;
            dst.get();
            w.set_pte(new)?;
        }
    }
    Ok(())
}
