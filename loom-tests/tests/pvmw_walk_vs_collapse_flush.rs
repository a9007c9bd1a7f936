//! A non-`SYNC` `page_vma_mapped_walk()` that maps a PTE table locklessly
//! and takes its ptl only later, in `next_pte:`, racing khugepaged's
//! collapse of that table into a huge PMD.
//!
//! Kernel: `page_vma_mapped_walk()`'s `next_pte:` (`mm/page_vma_mapped.c`,
//! 7.0: `spin_lock(ptl)`, then `pmd_same(pmde, pmdp_get_lockless(pvmw->pmd))`
//! or `goto restart`), racing `collapse_huge_page()` (`mm/khugepaged.c`):
//! `pmdp_collapse_flush()` under `pmd_lock()` only, then the copy of the
//! detached table's PTEs under its ptl (`pte_offset_map_lock(mm, &_pmd)`),
//! then their clearing under the same ptl, then `set_pmd_at()` of the huge
//! PMD.
//!
//! The target is a two-page folio whose first page is not mapped, so
//! `map_pte()` finds a none entry and returns without the lock; the walk
//! takes the saved ptl when `next_pte:` finds the second page. The walker
//! unmaps what it matches (`ptep_get_and_clear()`, as `try_to_unmap_one()`
//! does).
//!
//! Checks: a match is the target's PTE under the ptl; whatever the walker
//! writes under that ptl is seen by the collapse's copy, never written into
//! the detached table after the copy.
//!
//! Mutant `Mutant::PvmwNoPmdSameRecheck`: `next_pte:` keeps the saved ptl
//! without the `pmd_same()` re-check. loom finds the execution where the
//! flush and the copy land between the walker's lockless read and its lock:
//! the walker then unmaps the page in a table khugepaged has already
//! copied, and the write is lost.

#![cfg(loom)]
#![forbid(unsafe_code)]

use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_core::{PAGE_SIZE, PageCount, PageFrame, Pfn};
use devpriv_loom_tests::{assert_caught_with_branches, machine, model_with_branches};
use devpriv_migrate::pgtable::{_PAGE_PRESENT, _PAGE_RW, _PAGE_USER, PMD_SIZE};
use devpriv_migrate::{Mm, MmConfig, PageVmaMappedWalk, Pmd, Pte, PvmwFlags, VmFlags};
use loom::thread;
use std::sync::Arc;

/// The user address (PMD-aligned: one PTE table).
const ADDR: u64 = 0x4000_0000;
/// The target folio's first pfn (two pages).
const FOLIO: u64 = 0x10_0000;
/// The huge page khugepaged collapses into.
const HUGE: u64 = 0x10_0200;
const PROT: u64 = _PAGE_PRESENT | _PAGE_RW | _PAGE_USER;
/// Scheduling branches one execution needs: installing the huge PMD scans
/// the detached table's 512 entries to see that it is empty.
const BRANCHES: usize = 3000;

fn scenario(mutants: Mutants) {
    let second = Pte::pfn_pte(Pfn::new(FOLIO + 1), PROT).unwrap();
    let mem = machine(1);
    let mm = Mm::new(&mem, MmConfig::default());
    mm.mmap_write_lock()
        .mmap_anon(ADDR, PMD_SIZE, VmFlags::RW)
        .unwrap();
    // Only the folio's second page is mapped.
    mm.set_pte(ADDR + PAGE_SIZE, second).unwrap();

    let walker = {
        let mm = Arc::clone(&mm);
        thread::spawn(move || walk(&mm, second, mutants))
    };

    // collapse_huge_page(): flush the PMD, copy the detached table's PTEs,
    // clear them, install the huge PMD.
    let pmdval = mm.pmd_lock(ADDR).unwrap().collapse_flush().unwrap();
    let copied = mm
        .pte_offset_map_lock_pmdval(ADDR + PAGE_SIZE, pmdval)
        .unwrap()
        .get();
    {
        let g = mm
            .pte_offset_map_lock_pmdval(ADDR + PAGE_SIZE, pmdval)
            .unwrap();
        assert_eq!(
            g.get(),
            copied,
            "a PTE was written in the detached table after khugepaged copied it"
        );
        g.get_and_clear();
    }
    mm.pmd_lock(ADDR)
        .unwrap()
        .set(Pmd::huge(Pfn::new(HUGE), PROT).unwrap())
        .unwrap();

    walker.join().unwrap();
    assert!(mm.pmdp_get_lockless(ADDR).unwrap().is_trans_huge());
}

/// `try_to_unmap_one()`'s walk over the two-page folio.
fn walk(mm: &Mm, second: Pte, mutants: Mutants) {
    let vma = &mm.vmas()[0];
    let mut pvmw = PageVmaMappedWalk::new(
        mm,
        vma,
        PageFrame::Pfn(Pfn::new(FOLIO)),
        PageCount::new(2),
        vma.pgoff(),
        ADDR,
        PvmwFlags::NONE,
    )
    .unwrap()
    .with_mutants(mutants);
    while pvmw.walk() {
        assert!(pvmw.ptl_held(), "a match without the ptl");
        assert_eq!(pvmw.address(), ADDR + PAGE_SIZE);
        assert_eq!(pvmw.get_and_clear_pte(), Ok(second));
    }
}

#[test]
fn pvmw_walk_vs_collapse_flush() {
    let runs = model_with_branches(BRANCHES, || scenario(Mutants::NONE));
    eprintln!("pvmw_walk_vs_collapse_flush: {runs} executions");
}

#[test]
fn mutant_no_pmd_same_recheck_is_caught() {
    assert_caught_with_branches(
        BRANCHES,
        || scenario(Mutant::PvmwNoPmdSameRecheck.into()),
        &["written in the detached table after khugepaged copied it"],
    );
}
