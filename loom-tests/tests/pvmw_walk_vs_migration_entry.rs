//! `page_vma_mapped_walk()` looking for a migration entry while another
//! thread installs that entry and then removes it, on the same PTE table.
//!
//! Kernel: `page_vma_mapped_walk()` / `map_pte()` / `check_pte()`
//! (`mm/page_vma_mapped.c`, 7.0 with the v6 proposal) with `PVMW_MIGRATION`, racing
//! `migrate_vma_collect_pmd()` (installs a device-private migration entry
//! under `pte_offset_map_lock()`) and `remove_migration_pte()` (replaces it
//! with the new page's present PTE under the same lock).
//!
//! The walker is not `PVMW_SYNC`: `map_pte()` reads the PTE locklessly
//! (`ptep_get()` after `pte_offset_map_rw_nolock()`), takes the ptl if the
//! entry looks worth checking, and `this_pte:` re-checks it with
//! `check_pte()` under the lock.
//!
//! Checks: when the walk reports a match, the entry under the ptl *is* the
//! migration entry for the target (and stays so while the walker holds the
//! lock); the walk never reports anything else; the writer's two steps both
//! happen.
//!
//! Mutant `Mutant::PvmwNoPtlRecheck`: `this_pte:` checks the value
//! `map_pte()` read locklessly instead of re-reading it under the ptl.
//! loom finds the execution where the remover replaces the entry between
//! the walker's lockless read and its lock.

#![cfg(loom)]
#![forbid(unsafe_code)]

use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_core::{DevicePrivateOffset, PAGE_SIZE, PageCount, PageFrame, Pfn};
use devpriv_loom_tests::{assert_caught, machine, model};
use devpriv_migrate::pgtable::{_PAGE_PRESENT, _PAGE_RW, _PAGE_USER};
use devpriv_migrate::swapops::{make_device_private_entry, make_migration_entry};
use devpriv_migrate::{MigrationKind, Mm, MmConfig, PageVmaMappedWalk, Pte, PvmwFlags, VmFlags};
use loom::thread;
use std::sync::Arc;

/// The user address (PMD-aligned: one PTE table).
const ADDR: u64 = 0x4000_0000;

fn scenario(mutants: Mutants) {
    let mode = MmConfig::default().paging;
    let off = DevicePrivateOffset::new(7);
    let target = PageFrame::DevicePrivate(off);
    let device = Pte::from_swp_entry(make_device_private_entry(true, off, mode).unwrap()).unwrap();
    let migration =
        Pte::from_swp_entry(make_migration_entry(MigrationKind::Write, target, mode).unwrap())
            .unwrap();
    let new_page = Pte::pfn_pte(Pfn::new(0x1234), _PAGE_PRESENT | _PAGE_RW | _PAGE_USER).unwrap();

    // The walk reads page tables only: the smallest machine.
    let mem = machine(1);
    let mm = Mm::new(&mem, MmConfig::default());
    mm.mmap_write_lock()
        .mmap_anon(ADDR, PAGE_SIZE, VmFlags::RW)
        .unwrap();
    // The page lives on the device: a device-private entry.
    mm.set_pte(ADDR, device).unwrap();

    // rmap walk for the device-private page's migration entries, on
    // another CPU.
    let walker = {
        let mm = Arc::clone(&mm);
        thread::spawn(move || walk(&mm, target, migration, mutants))
    };

    // The migration: install the migration entry, then remove it (the copy
    // succeeded: the new system page is mapped). Each step under the ptl.
    let g = mm.pte_offset_map_lock(ADDR).unwrap();
    assert_eq!(g.get(), device);
    g.set(migration);
    drop(g);
    let g = mm.pte_offset_map_lock(ADDR).unwrap();
    assert_eq!(g.get(), migration);
    g.set(new_page);
    drop(g);

    walker.join().unwrap();
    assert_eq!(mm.ptep_get_lockless(ADDR), Some(new_page));
}

/// One `page_vma_mapped_walk()` over the target's single page.
fn walk(mm: &Mm, target: PageFrame, migration: Pte, mutants: Mutants) {
    let vma = &mm.vmas()[0];
    let mut pvmw = PageVmaMappedWalk::new(
        mm,
        vma,
        target,
        PageCount::new(1),
        vma.pgoff(),
        ADDR,
        PvmwFlags::MIGRATION,
    )
    .unwrap()
    .with_mutants(mutants);
    if pvmw.walk() {
        assert!(pvmw.ptl_held(), "a match without the ptl");
        let pte = pvmw.pte().expect("a PTE-level match");
        assert_eq!(
            pte, migration,
            "the walk reported an entry it did not re-check under the ptl"
        );
        // The ptl holder owns the entry: the remover cannot replace it yet.
        thread::yield_now();
        assert_eq!(pvmw.pte(), Some(pte), "the entry changed under the ptl");
        pvmw.done();
    }
    assert!(!pvmw.walk(), "a second match for a single-page target");
}

#[test]
fn pvmw_walk_vs_migration_entry() {
    let runs = model(|| scenario(Mutants::NONE));
    eprintln!("pvmw_walk_vs_migration_entry: {runs} executions");
}

#[test]
fn mutant_no_ptl_recheck_is_caught() {
    assert_caught(
        || scenario(Mutant::PvmwNoPtlRecheck.into()),
        &["did not re-check under the ptl"],
    );
}
