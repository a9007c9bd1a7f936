//! Reverse mapping for migration: `try_to_migrate()` and
//! `remove_migration_ptes()`.
//!
//! Kernel: `mm/rmap.c` (`try_to_migrate()`, `try_to_migrate_one()`,
//! `folio_add_new_anon_rmap()`, `folio_add_anon_rmap_pte()`,
//! `folio_remove_rmap_pte()`, `folio_remove_rmap_pmd()`), `mm/migrate.c`
//! (`remove_migration_ptes()`, `remove_migration_pte()`),
//! `mm/huge_memory.c` (`set_pmd_migration_entry()`,
//! `remove_migration_pmd()`, 7.0).
//!
//! A migration moves a folio between system RAM and device-private memory;
//! both rmap functions take an [`AnyFolio`] (module [`mm`](crate::mm)) and
//! loop on [`PageVmaMappedWalk`] with `PVMW_SYNC`, the device kind
//! carrying its target as a device-private offset.
//!
//! # Differences from the kernel
//!
//! - A folio's anon cookie ([`FolioOps::anon_id`]) is the id of the
//!   `anon_vma` of the VMA it was first mapped in. The walk
//!   ([`rmap_walk_anon`]) visits every VMA, in every address space of the
//!   machine, that reaches that `anon_vma` ([`Vma::maps_anon`]: its own,
//!   or an ancestor's through `fork`), as `rmap_walk_anon()` walks the
//!   `anon_vma`'s interval tree. It looks first in the fork tree of the
//!   [`Mm`] a caller passes (the cookie spreads only by `fork`), and in
//!   every address space of the machine only if none there maps it; the
//!   result is the same, but unrelated processes on other threads are not
//!   touched.
//! - `PageAnonExclusive` is not tracked: a read-only PTE becomes a
//!   `*_MIGRATION_READ` entry, never `READ_EXCLUSIVE`; soft-dirty and
//!   uffd-wp bits are not carried; no TLB flush or MMU notifier.
//! - Like the kernel's, neither function checks a PMD-level match against
//!   the folio: they rely on the walk. With the default walker
//!   ([`PvmwPmdPolicy::Fixed`], the CVE-2026-68163 fix) a match is always
//!   the folio's own PMD; with [`PvmwPmdPolicy::V7_0`] a device-private
//!   PMD of *another* folio matches too, and these functions then corrupt
//!   it as 7.0 did: `remove_migration_ptes()` overwrites it with the new
//!   folio's mapping (the old folio keeps a map count and a reference for
//!   a mapping that is gone), `try_to_migrate()` replaces it with a
//!   migration entry and drops the rmap and reference of the folio it was
//!   asked to unmap (hazard H13, `docs/hazards.md`).
//!
//! [`PvmwPmdPolicy::Fixed`]: crate::PvmwPmdPolicy::Fixed
//! [`PvmwPmdPolicy::V7_0`]: crate::PvmwPmdPolicy::V7_0
//!
//! [`FolioOps::anon_id`]: crate::mm::FolioOps::anon_id

use crate::leafops::{Softleaf, SoftleafFlags};
use crate::mm::AnyFolio;
use crate::mm_types::{Mm, MmConfig, Vma};
use crate::page_vma_mapped::{PageVmaMappedWalk, PvmwFlags};
use crate::pgtable::{_PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_PRESENT, _PAGE_RW, _PAGE_USER, Pmd, Pte};
use crate::swapops::{MigrationKind, make_device_private_entry, make_migration_entry};
use devpriv_core::{Errno, PageCount, PageFrame, warn_on};
use std::sync::Arc;

/// Calls `rmap_one` on every VMA, in every address space of `mm`'s
/// machine, through which an anon folio with cookie `anon_id` may be
/// mapped, with its address space, oldest process first. The VMAs' fork
/// tree is locked during the walk (a concurrent `fork` waits, as it waits
/// for the `anon_vma` lock), so `rmap_one` must not fork or walk again.
///
/// Kernel: `rmap_walk_anon()`'s `anon_vma_interval_tree_foreach()` over
/// the folio's `anon_vma`, calling `rwc->rmap_one()`, `mm/rmap.c` (main).
///
/// # Errors
///
/// The first error `rmap_one` returns; the walk stops there (the kernel's
/// `rmap_one` stops it by returning `false`).
pub fn rmap_walk_anon(
    mm: &Mm,
    anon_id: u64,
    mut rmap_one: impl FnMut(&Mm, &Vma) -> Result<(), Errno>,
) -> Result<(), Errno> {
    let found = core::cell::Cell::new(false);
    let mut visit = |m: &Mm| -> Result<(), Errno> {
        for v in m.vmas().iter().filter(|v| v.maps_anon(anon_id)) {
            found.set(true);
            rmap_one(m, v)?;
        }
        Ok(())
    };
    // An anon cookie spreads only by fork, so if any member of `mm`'s fork
    // tree maps it, no process outside the tree does: the walk is complete
    // without touching unrelated processes (whose VMA locks other threads
    // are using). Otherwise the cookie is another tree's (a driver's
    // eviction, say) or mapped nowhere: walk every process.
    mm.fork_tree().for_each(&mut visit)?;
    if !found.get() {
        mm.memory().for_each_mm(&mut visit)?;
    }
    Ok(())
}

/// A walk over the places `folio` is mapped in `vma`.
///
/// Kernel: `DEFINE_FOLIO_VMA_WALK()` with the v6 proposal's helpers.
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

/// Present-PTE bits for a page restored from a migration entry: young and
/// dirty only if the entry says so (`softleaf_is_migration_young/dirty()`,
/// always false on a machine without A/D bits in migration entries).
pub(crate) fn prot_from_migration(entry: Softleaf, cfg: MmConfig) -> u64 {
    let SoftleafFlags { young, dirty } = entry
        .to_flags(cfg.paging)
        .if_supported(cfg.swap_migration_ad_supported());
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
/// frame it names; `None` for any other PTE. A present PTE's young and
/// dirty bits go into the entry where the machine supports it
/// (`make_migration_entry_young/dirty()`).
pub(crate) fn pte_to_migration_entry(
    pte: Pte,
    cfg: MmConfig,
) -> Result<Option<(Softleaf, PageFrame)>, Errno> {
    let mode = cfg.paging;
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
        let flags = flags.if_supported(cfg.swap_migration_ad_supported());
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
/// Kernel: the entry `set_pmd_migration_entry()` builds (7.0).
pub(crate) fn pmd_to_migration_entry(
    pmd: Pmd,
    cfg: MmConfig,
) -> Result<Option<(Softleaf, PageFrame)>, Errno> {
    let mode = cfg.paging;
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
        let flags = flags.if_supported(cfg.swap_migration_ad_supported());
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

/// Replaces every mapping of `folio` (on `mm`'s machine) with a migration entry,
/// dropping the mapping's rmap and reference: present PTEs and huge PMDs
/// of a system folio, device-private PTEs and PMDs of a device folio
/// (v6: `SWP_MIGRATION_DEVICE_*` entries with the offset).
///
/// Kernel: `try_to_migrate(folio, 0)` → `rmap_walk()` →
/// `try_to_migrate_one()`, `mm/rmap.c`; a PMD mapping goes through
/// `set_pmd_migration_entry()`, `mm/huge_memory.c` (7.0).
///
/// The caller holds the folio lock and a reference.
///
/// # Differences from the kernel
///
/// See the module documentation (the walk across address spaces, no
/// anon-exclusive tracking, no PMD-level check of its own).
///
/// # Errors
///
/// [`Errno::EINVAL`] if an entry cannot be encoded or the map counts are
/// inconsistent (a broken invariant; the walk stops there).
pub fn try_to_migrate(mm: &Mm, folio: AnyFolio<'_>) -> Result<(), Errno> {
    let Some(id) = folio.anon_id() else {
        return Ok(());
    };
    rmap_walk_anon(mm, id, |m, vma| {
        let Ok(mut w) = folio_walk(m, vma, folio, PvmwFlags::SYNC) else {
            return Ok(());
        };
        while w.walk() {
            if w.is_pmd_mapped() {
                let Some(pmd) = w.pmd() else { continue };
                let Some((entry, _)) = pmd_to_migration_entry(pmd, m.config())? else {
                    continue;
                };
                w.set_pmd(Pmd::from_swp_entry(entry)?)?;
                folio.remove_rmap_pmd()?;
                folio.put();
                continue;
            }
            let Some(pte) = w.pte() else { continue };
            let Some((entry, frame)) = pte_to_migration_entry(pte, m.config())? else {
                continue;
            };
            let Some(n) = folio.page_index(frame) else {
                continue;
            };
            w.set_pte(Pte::from_swp_entry(entry)?)?;
            folio.remove_rmap_ptes(n, 1)?;
            folio.put();
        }
        Ok(())
    })
}

/// Replaces every migration entry for `src` (on `mm`'s machine) with a mapping of the
/// same page of `dst` (`src` itself to undo a migration): a present PTE or
/// huge PMD for a system folio, a `SWP_DEVICE_{WRITE,READ}` entry for a
/// device folio. Each new mapping takes a reference and an rmap on `dst`.
///
/// Kernel: `remove_migration_ptes(src, dst, 0)` → `remove_migration_pte()`,
/// `mm/migrate.c`; `remove_migration_pmd()`, `mm/huge_memory.c` (7.0).
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
    rmap_walk_anon(mm, id, |m, vma| {
        let Ok(mut w) = folio_walk(m, vma, src, PvmwFlags::SYNC | PvmwFlags::MIGRATION) else {
            return Ok(());
        };
        while w.walk() {
            if w.is_pmd_mapped() {
                // remove_migration_pmd(): whatever the walk matched is taken
                // for `src`'s migration entry.
                let Some(pmd) = w.pmd() else { continue };
                let entry = Softleaf::from_pmd(pmd);
                let new = match dst.frame(0) {
                    Some(PageFrame::DevicePrivate(off)) => Pmd::from_swp_entry(
                        make_device_private_entry(entry.is_migration_write(), off, mode)?,
                    )?,
                    Some(PageFrame::Pfn(pfn)) => {
                        Pmd::huge(pfn, prot_from_migration(entry, m.config()))?
                    }
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
                Some(PageFrame::Pfn(pfn)) => {
                    Pte::pfn_pte(pfn, prot_from_migration(entry, m.config()))?
                }
                None => return Err(Errno::EINVAL),
            };
            dst.add_rmap_ptes(n, 1)?;
            dst.get();
            w.set_pte(new)?;
        }
        Ok(())
    })
}

/// Grants a device exclusive access to the anon page at `addr` of `mm`:
/// faults the page in writable (breaking COW, bringing device-private
/// pages back, splitting a PMD mapping), then replaces its present PTE with
/// a device-exclusive entry naming the same pfn. Returns the folio, locked
/// and with a reference for the caller, which maps it in its device page
/// table and then unlocks and puts it. A CPU access afterwards faults and
/// restores the PTE ([`handle_mm_fault`](crate::handle_mm_fault)).
///
/// The entry keeps the mapping's reference and map count.
///
/// Kernel: `make_device_exclusive(mm, addr, owner, &folio)`, `mm/rmap.c`
/// (7.0: one page at a time, the entry counts as a mapping; before 6.15
/// `make_device_exclusive_range()`).
///
/// # Differences from the kernel
///
/// The `MMU_NOTIFY_EXCLUSIVE` invalidation carries no owner (the model's
/// callers do not filter on it). Soft-dirty and uffd-wp bits are not
/// carried.
///
/// # Errors
///
/// - [`Errno::EFAULT`] (or another fault error): the page cannot be faulted
///   in writable (no VMA, no write access).
/// - [`Errno::EOPNOTSUPP`]: the page is not anonymous (page cache, zero
///   page, driver page).
/// - [`Errno::EBUSY`]: the folio lock is taken, or the PTE changed under us.
pub fn make_device_exclusive<'m>(
    mm: &'m Arc<Mm>,
    addr: u64,
) -> Result<crate::page_alloc::SysFolio<'m>, Errno> {
    use crate::memory::{FaultFlags, VmFaultResult, handle_mm_fault};
    use crate::swapops::make_device_exclusive_entry;
    use devpriv_core::PAGE_SIZE;
    let addr = addr & !(PAGE_SIZE - 1);
    // get_user_page_vma_remote(FOLL_GET | FOLL_WRITE | FOLL_SPLIT_PMD).
    let mut tries = 0;
    let pte = loop {
        tries += 1;
        if tries > 16 {
            return Err(Errno::EBUSY);
        }
        if mm.pmdp_get_lockless(addr).is_some_and(Pmd::is_trans_huge) {
            crate::huge_memory::split_huge_pmd(mm, addr)?;
        }
        match mm.ptep_get_lockless(addr) {
            Some(p) if p.is_present() && p.is_write() => break p,
            _ => {}
        }
        match handle_mm_fault(mm, addr, FaultFlags::WRITE)? {
            VmFaultResult::Done | VmFaultResult::Retry => {}
        }
    };
    let sys = mm.memory().sys();
    let folio = sys.pfn_folio(pte.pfn()).ok_or(Errno::EOPNOTSUPP)?;
    if folio.mapping() == 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    folio.get_many(1);
    if !folio.trylock() {
        let _ = folio.put();
        return Err(Errno::EBUSY);
    }
    mm.mmu_notifier_invalidate(
        addr,
        addr + PAGE_SIZE,
        crate::mmu_notifier::MmuNotifyEvent::Exclusive,
        None,
    );
    let done = (|| {
        let g = mm.pte_offset_map_lock(addr)?;
        if g.get() != pte {
            return Err(Errno::EBUSY);
        }
        let entry = make_device_exclusive_entry(pte.pfn(), mm.paging())?;
        g.set(Pte::from_swp_entry(entry)?);
        Ok(())
    })();
    if let Err(e) = done {
        let _ = folio.unlock();
        let _ = folio.put();
        return Err(e);
    }
    Ok(folio)
}
