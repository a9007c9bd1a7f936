//! Splitting PMD mappings and large folios, system or device-private.
//!
//! Kernel: `mm/huge_memory.c` (`__split_huge_pmd_locked()`,
//! `split_huge_pmd_address()`, `split_folio()` /
//! `__split_huge_page_to_list_to_order()`, `folio_split_unmapped()`,
//! `can_split_folio()`, 7.0).
//!
//! Device-private folios are split through `devpriv-pagemap`'s
//! [`split_unmapped_folio`] and [`zone_device_private_split_cb`], so the
//! pgmap wiped by the split is restored before anything here reads it
//! (hazard H10).
//!
//! # Differences from the kernel
//!
//! - [`split_folio`] splits a PTE-mapped folio in place: the per-page map
//!   counts already say which new folio each PTE maps, so the kernel's
//!   unmap → freeze → split → remap round trip collapses into a refcount
//!   check and the struct-page split. The end state is the kernel's.
//! - Only splits to order 0 (what migration uses).

use crate::leafops::Softleaf;
use crate::mm::{AnyFolio, frame_to_folio};
use crate::mm_types::Mm;
use crate::pgtable::{
    _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_PRESENT, _PAGE_RW, _PAGE_USER, PMD_SIZE, Pmd, Pte,
};
use crate::pgtable_generic::PmdGuard;
use crate::swapops::{MigrationKind, make_device_private_entry, make_migration_entry};
use devpriv_core::{Errno, HPAGE_PMD_NR, Order, PageCount, PageFrame};
use devpriv_pagemap::{Folio, split_unmapped_folio, zone_device_private_split_cb};

/// Splits the leaf PMD covering `addr` into 512 PTEs describing the same
/// pages: the huge zero page into 512 read-only zero-page PTEs, a huge PMD
/// into present PTEs, a device-private PMD into
/// device-private PTEs (the folio stays large, now PTE-mapped: its PMD
/// rmap becomes 512 PTE rmaps and it gains 511 references), a PMD
/// migration entry into 512 PTE migration entries (no rmap: the migration
/// owns the folio). Does nothing for a none or table PMD.
///
/// Kernel: `split_huge_pmd_address(vma, address, freeze)` →
/// `__split_huge_pmd_locked()`, `mm/huge_memory.c` (the `freeze` variant
/// is the migration-entry case here, 7.0).
///
/// # Errors
///
/// [`Errno::EFAULT`] if no page table covers `addr`; [`Errno::EINVAL`] if
/// the PMD names a page no folio backs, or an entry cannot be encoded.
/// Nothing changes on error.
pub fn split_huge_pmd(mm: &Mm, addr: u64) -> Result<(), Errno> {
    let g = mm.pmd_lock(addr)?;
    let pmd = g.get();
    if pmd.is_none() || pmd.is_table() {
        return Ok(());
    }
    split_huge_pmd_locked(mm, &g, pmd)?;
    // The deposited table becomes the PTE table; the model's slot has its
    // own, so the deposit is given back.
    if let Some(p) = g.withdraw() {
        mm.pte_free(p);
    }
    Ok(())
}

/// Kernel: `__split_huge_pmd_locked()` (7.0).
fn split_huge_pmd_locked(mm: &Mm, g: &PmdGuard<'_>, pmd: Pmd) -> Result<(), Errno> {
    let mode = mm.paging();
    let mem = mm.memory();
    let guard = mem.space().read();
    if pmd.is_trans_huge() && mem.sys().is_huge_zero_pfn(pmd.pfn()) {
        // __split_huge_zero_page_pmd(): 512 read-only 4 KiB zero pages.
        let zero = Pte::pfn_pte(mem.sys().zero_pfn(), _PAGE_PRESENT | _PAGE_USER)?;
        return g.populate(|_| Ok(zero));
    }
    if pmd.is_trans_huge() {
        let flags =
            pmd.raw() & (_PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY | _PAGE_PRESENT);
        let base = pmd.pfn();
        let (folio, _) = frame_to_folio(mem.sys(), &guard, base.into()).ok_or(Errno::EINVAL)?;
        g.populate(|i| {
            let pfn = base
                .checked_add(PageCount::new(i as u64))
                .ok_or(Errno::EINVAL)?;
            Pte::pfn_pte(pfn, flags)
        })?;
        folio.remove_rmap_pmd()?;
        folio.add_rmap_ptes(0, HPAGE_PMD_NR)?;
        for _ in 1..HPAGE_PMD_NR {
            folio.get();
        }
        return Ok(());
    }
    let entry = Softleaf::from_pmd(pmd);
    let base = entry.to_frame(mode).ok_or(Errno::EINVAL)?;
    let pte_at = |i: usize| -> Result<Pte, Errno> {
        let frame = base
            .checked_add(PageCount::new(i as u64))
            .ok_or(Errno::EINVAL)?;
        let e = if entry.is_device_private() {
            let PageFrame::DevicePrivate(off) = frame else {
                return Err(Errno::EINVAL);
            };
            make_device_private_entry(entry.is_device_private_write(), off, mode)?
        } else if entry.is_migration() {
            let kind = if entry.is_migration_write() {
                MigrationKind::Write
            } else if entry.is_migration_read_exclusive() {
                MigrationKind::ReadExclusive
            } else {
                MigrationKind::Read
            };
            {
                // softleaf_is_migration_young/dirty() then
                // make_migration_entry_young/dirty(): both no-ops
                // without A/D support.
                let ad = mm.config().swap_migration_ad_supported();
                let flags = entry.to_flags(mode).if_supported(ad);
                make_migration_entry(kind, frame, mode)?.with_flags(flags, mode)?
            }
        } else {
            return Err(Errno::EINVAL);
        };
        Pte::from_swp_entry(e)
    };
    if entry.is_device_private() {
        let (folio, _) = frame_to_folio(mem.sys(), &guard, base).ok_or(Errno::EINVAL)?;
        g.populate(pte_at)?;
        folio.remove_rmap_pmd()?;
        folio.add_rmap_ptes(0, HPAGE_PMD_NR)?;
        for _ in 1..HPAGE_PMD_NR {
            folio.get();
        }
        return Ok(());
    }
    g.populate(pte_at)
}

/// `true` if the PMD at `haddr` is a leaf naming `folio`'s head.
fn pmd_maps(mm: &Mm, haddr: u64, folio: AnyFolio<'_>) -> bool {
    let Some(pmd) = mm.pmdp_get_lockless(haddr) else {
        return false;
    };
    let frame = if pmd.is_trans_huge() {
        Some(PageFrame::Pfn(pmd.pfn()))
    } else if !pmd.is_none() && !pmd.is_present() {
        Softleaf::from_pmd(pmd).to_frame(mm.paging())
    } else {
        None
    };
    frame.is_some_and(|f| folio.page_index(f) == Some(0))
}

/// Splits a locked, large, anon folio — mapped or not — into order-0
/// folios. The caller holds the lock and one reference; afterwards it
/// holds both on the folio of the head page, the other new folios are
/// unlocked and keep one reference per mapping (those with none are
/// freed). PMD mappings are first split into PTEs.
///
/// Kernel: `split_folio(folio)` (`split_huge_page_to_list_to_order(&folio->page,
/// NULL, 0)`: `can_split_folio()`, `unmap_folio()`, the freeze,
/// `__split_unmapped_folio()`, `remap_page()`, unlock and put of every new
/// folio but the one holding `lock_at`), `mm/huge_memory.c` (7.0).
///
/// # Differences from the kernel
///
/// See the module documentation (in-place split, order 0 only).
///
/// # Errors
///
/// - [`Errno::EINVAL`]: not large, not locked, or not anon.
/// - [`Errno::EAGAIN`]: someone other than the caller and the mappings
///   holds a reference (`can_split_folio()` fails); nothing is split (a
///   PMD mapping may already have been split into PTEs, as in the kernel).
pub fn split_folio(mm: &Mm, folio: AnyFolio<'_>) -> Result<(), Errno> {
    if !folio.is_large() || !folio.is_locked() {
        return Err(Errno::EINVAL);
    }
    let Some(id) = folio.anon_id() else {
        return Err(Errno::EINVAL);
    };
    // unmap_folio(TTU_SPLIT_HUGE_PMD): PMD mappings become PTE mappings.
    if folio.entire_mapcount() > 0 {
        crate::rmap::rmap_walk_anon(mm, id, |m, vma| {
            let Ok(addr) = vma.vma_address(folio.index(), folio.nr_pages()) else {
                return Ok(());
            };
            let haddr = addr & !(PMD_SIZE - 1);
            if pmd_maps(m, haddr, folio) {
                split_huge_pmd(m, haddr)?;
            }
            Ok(())
        })?;
    }
    // can_split_folio(folio, 1, ..): anon, no swap cache.
    if folio.entire_mapcount() != 0 || folio.mapcount() != folio.refcount() - 1 {
        return Err(Errno::EAGAIN);
    }
    let nr = folio.nr_pages();
    split_to_order0(folio)?;
    // Every new folio but the head's: unlock and drop the split's
    // temporary reference.
    for j in 1..nr {
        if let Some(f) = new_folio(folio, j) {
            f.unlock();
            f.put();
        }
    }
    Ok(())
}

/// Splits a locked, large, **unmapped** folio to order 0 in the middle of
/// a migration: the head keeps its references, every other new folio gets
/// one (the reference the migration holds for its own `src` entry) and
/// stays locked.
///
/// Kernel: the folio half of `migrate_vma_split_unmapped_folio()`
/// (`folio_split_unmapped(folio, 0)`), `mm/migrate_device.c` (7.0).
///
/// # Differences from the kernel
///
/// The kernel takes an extra `folio_get()` first and freezes the count; the
/// model checks only that the folio is unmapped (each `src` entry's
/// reference is then the migration's own).
///
/// # Errors
///
/// [`Errno::EINVAL`] if the folio is not large, not locked, or still
/// mapped.
pub fn split_unmapped_for_migration(folio: AnyFolio<'_>) -> Result<(), Errno> {
    if !folio.is_large() || !folio.is_locked() || folio.mapcount() != 0 {
        return Err(Errno::EINVAL);
    }
    split_to_order0(folio)
}

/// The new folio holding page `j` of the (split) `folio`.
fn new_folio(folio: AnyFolio<'_>, j: u64) -> Option<AnyFolio<'_>> {
    match folio {
        AnyFolio::Sys(f) => f.page_folio(j).map(AnyFolio::Sys),
        AnyFolio::Dev(f) => f
            .nth_page(usize::try_from(j).ok()?)
            .map(|p| AnyFolio::Dev(p.folio())),
    }
}

/// The struct-page split to order 0 with the refcount hand-out shared by
/// both entry points: new folio `j > 0` gets its page's map count plus one,
/// the head keeps the rest.
fn split_to_order0(folio: AnyFolio<'_>) -> Result<(), Errno> {
    match folio {
        AnyFolio::Sys(f) => f.split_to_order0(),
        AnyFolio::Dev(f) => split_dev_to_order0(f),
    }
}

fn split_dev_to_order0(f: Folio<'_>) -> Result<(), Errno> {
    let nr = usize::try_from(f.nr_pages().get()).map_err(|_| Errno::EINVAL)?;
    let pages = (0..nr)
        .map(|j| f.nth_page(j))
        .collect::<Option<Vec<_>>>()
        .ok_or(Errno::EINVAL)?;
    let maps: Vec<i32> = pages.iter().map(|p| p.raw_mapcount() + 1).collect();
    let moved: i64 = maps[1..].iter().map(|&m| i64::from(m)).sum();
    let old = i64::from(f.ref_count());
    if old < moved + 1 {
        return Err(Errno::EINVAL);
    }
    let head = i32::try_from(old - moved).map_err(|_| Errno::EINVAL)?;
    split_unmapped_folio(f, Order::ZERO)?;
    // 7.0's __folio_freeze_and_split_unmapped(): the callbacks run on
    // frozen folios (refcount 0), each new folio is unfrozen after its
    // callback, the original after the final (orig, NULL) call.
    f.page().set_refcount(0);
    for (j, p) in pages.iter().enumerate().skip(1) {
        zone_device_private_split_cb(f, Some(Folio::from_head(*p)));
        p.set_refcount(maps[j] + 1);
    }
    zone_device_private_split_cb(f, None);
    f.page().set_refcount(head);
    Ok(())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::memory_model::test_memory;
    use crate::mm_types::{MmConfig, VmFlags};
    use devpriv_core::PAGE_SIZE;

    const BASE: u64 = 0x7f00_0000_0000;

    #[test]
    fn a_pmd_mapped_system_folio_splits_in_place() {
        let mem = test_memory(1024);
        let mm = Mm::new(&mem, MmConfig::default());
        mm.mmap_write_lock()
            .mmap_anon(BASE, 2 * PMD_SIZE, VmFlags::RW)
            .unwrap();
        let f = mem.sys().alloc_folio(Order::HPAGE_PMD).unwrap();
        mm.map_folio_pmd(BASE, f, true).unwrap();
        mem.sys().write(f.page_pfn(7).unwrap(), 77).unwrap();
        assert_eq!(f.refcount(), 2);
        assert!(f.trylock());
        // A stray reference blocks the split.
        f.get_many(1);
        assert_eq!(split_folio(&mm, AnyFolio::Sys(f)), Err(Errno::EAGAIN));
        assert!(
            mm.pmdp_get_lockless(BASE).unwrap().is_table(),
            "PMD split anyway"
        );
        f.put().unwrap();
        split_folio(&mm, AnyFolio::Sys(f)).unwrap();
        assert_eq!(f.order(), Order::ZERO);
        assert_eq!(f.refcount(), 2, "its mapping plus the caller's reference");
        let t = mem
            .sys()
            .pfn_folio(
                f.page_pfn(0)
                    .unwrap()
                    .checked_add(PageCount::new(7))
                    .unwrap(),
            )
            .unwrap();
        assert_eq!((t.refcount(), t.mapcount(), t.is_locked()), (1, 1, false));
        assert_eq!(t.index(), f.index() + 7);
        assert_eq!(mm.read_user(BASE + 7 * PAGE_SIZE), Ok(77));
        f.unlock().unwrap();
    }
}
