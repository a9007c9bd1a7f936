//! A `PVMW_SYNC` rmap walk for a THP while another thread zaps the THP's
//! huge PMD.
//!
//! Kernel: `page_vma_mapped_walk()` (`mm/page_vma_mapped.c`, 7.0): when a
//! `PVMW_SYNC` walk finds a THP-suitable PMD not present, it takes and
//! drops the PMD lock "so that we cannot return prematurely, while
//! `zap_huge_pmd()` has cleared `*pmd` but not decremented `compound_mapcount()`".
//! It races `zap_huge_pmd()` (`mm/huge_memory.c`, 7.0), which clears the PMD
//! and drops the folio's PMD rmap under the PMD lock. `try_to_unmap()` and
//! `try_to_migrate()` rely on this: after a walk that finds nothing they
//! read `folio_mapped()`.
//!
//! Checks: if the walk finds the THP, the PMD under the lock is the huge
//! PMD; if it does not, the folio is already unmapped (mapcount 0).
//!
//! Mutant `Mutant::PvmwSyncNoThpSerialise`: the walk returns without the
//! lock/unlock. loom finds the execution where the walk reads the cleared
//! PMD while the zapper still holds the lock and reads the mapcount before
//! the zapper drops it. (The model's `zap_huge_pmd` dropped the rmap after
//! the unlock until this model was written: the unmutated walk failed the
//! same way.)

#![cfg(loom)]
#![forbid(unsafe_code)]

use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_core::{Order, PageCount, PageFrame, Pfn};
use devpriv_loom_tests::{assert_caught_with_branches, machine, model_with_branches};
use devpriv_migrate::pgtable::PMD_SIZE;
use devpriv_migrate::{Mm, MmConfig, PageVmaMappedWalk, PvmwFlags, VmFlags};
use loom::thread;
use std::sync::Arc;

/// The user address (PMD-aligned).
const ADDR: u64 = 0x4000_0000;
/// Allocating and freeing a 512-page folio touches every page's atomics:
/// far more branches than loom's default allows, none of them a spin.
const MAX_BRANCHES: usize = 50_000;

fn scenario(mutants: Mutants) {
    // One THP's worth of system memory.
    let mem = machine(512);
    let mm = Mm::new(&mem, MmConfig::default());
    mm.mmap_write_lock()
        .mmap_anon(ADDR, PMD_SIZE, VmFlags::RW)
        .unwrap();
    let pfn = {
        let folio = mem.sys().alloc_folio(Order::HPAGE_PMD).unwrap();
        mm.map_folio_pmd(ADDR, folio, true).unwrap();
        folio.put().unwrap();
        folio.pfn()
    };

    let walker = {
        let mm = Arc::clone(&mm);
        thread::spawn(move || walk(&mm, pfn, mutants))
    };

    // munmap() of the THP: zap_pmd_range() → zap_huge_pmd().
    mm.zap_page_range(ADDR, ADDR + PMD_SIZE).unwrap();

    walker.join().unwrap();
    assert!(mm.pmdp_get_lockless(ADDR).unwrap().is_none());
    assert_eq!(mem.sys().nr_free(), 512, "the THP was freed");
}

/// One `PVMW_SYNC` walk for the whole THP, as `try_to_unmap_one()` does,
/// then the caller's `folio_mapped()`.
fn walk(mm: &Mm, pfn: Pfn, mutants: Mutants) {
    let vma = &mm.vmas()[0];
    let mut pvmw = PageVmaMappedWalk::new(
        mm,
        vma,
        PageFrame::Pfn(pfn),
        PageCount::new(512),
        vma.linear_page_index(ADDR),
        ADDR,
        PvmwFlags::SYNC,
    )
    .unwrap()
    .with_mutants(mutants);
    if pvmw.walk() {
        assert!(pvmw.ptl_held(), "a match without the lock");
        assert!(pvmw.is_pmd_mapped(), "a THP matched below its PMD");
        assert!(pvmw.pmd().unwrap().is_trans_huge());
        pvmw.done();
        return;
    }
    let mem = mm.memory();
    // Freed already (no folio) counts as unmapped.
    let mapcount = mem.sys().pfn_folio(pfn).map_or(0, |f| f.mapcount());
    assert_eq!(
        mapcount, 0,
        "the walk returned while zap_huge_pmd() still held the mapcount"
    );
}

#[test]
fn pvmw_sync_vs_zap_huge_pmd() {
    let runs = model_with_branches(MAX_BRANCHES, || scenario(Mutants::NONE));
    eprintln!("pvmw_sync_vs_zap_huge_pmd: {runs} executions");
}

#[test]
fn mutant_sync_no_thp_serialise_is_caught() {
    assert_caught_with_branches(
        MAX_BRANCHES,
        || scenario(Mutant::PvmwSyncNoThpSerialise.into()),
        &["the walk returned while zap_huge_pmd() still held the mapcount"],
    );
}
