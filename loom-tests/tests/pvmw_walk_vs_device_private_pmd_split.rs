//! `page_vma_mapped_walk()` for one page of a device-private THP while
//! another thread splits the THP's device-private PMD into 512
//! device-private PTEs.
//!
//! Kernel: the device-private PMD branch of `page_vma_mapped_walk()`
//! (`mm/page_vma_mapped.c`) as fixed for CVE-2026-68163 ("`mm/page_vma_mapped`:
//! fix device-private PMD handling": take the PMD lock, re-read, and "THP/
//! device-private pmd was split under us: handle on pte level"), racing
//! `__split_huge_pmd_locked()` of a device-private PMD (`set_ptes()` into the
//! deposited table, then `pmd_populate()`, under the PMD lock). Hazard H13
//! (`docs/hazards.md`).
//!
//! Checks: the walk always finds the page, and what it reports is what the
//! lock protects: a PMD-level match is a device-private PMD naming the
//! target, a PTE-level match is the target's device-private PTE.
//!
//! Caught variant: `PvmwPmdPolicy::V7_0`, the 7.0 branch, which returns a
//! match on its lockless read without re-reading under the lock. loom finds
//! the execution where the split lands between the read and the lock: the
//! walk then reports a PMD-level match on a PMD that now points to a PTE
//! table, which the rmap caller would overwrite as if it were the folio's
//! PMD.

#![cfg(loom)]
#![forbid(unsafe_code)]

use devpriv_core::{DevicePrivateOffset, PAGE_SIZE, PageCount, PageFrame};
use devpriv_loom_tests::{assert_caught, machine, model};
use devpriv_migrate::pgtable::PMD_SIZE;
use devpriv_migrate::swapops::make_device_private_entry;
use devpriv_migrate::{
    Mm, MmConfig, PageVmaMappedWalk, Pmd, Pte, PvmwFlags, PvmwPmdPolicy, Softleaf, VmFlags,
};
use loom::thread;
use std::sync::Arc;

/// The user address (PMD-aligned).
const ADDR: u64 = 0x4000_0000;
/// The page the walk looks for, in the THP.
const PAGE: u64 = 5;

fn scenario(pvmw_pmd: PvmwPmdPolicy) {
    let config = MmConfig {
        pvmw_pmd,
        ..MmConfig::default()
    };
    let mode = config.paging;
    let y = DevicePrivateOffset::new(512);
    let dp = |i: u64| {
        let off = DevicePrivateOffset::new(y.get() + i);
        make_device_private_entry(true, off, mode).unwrap()
    };

    // The walk reads page tables only: the smallest machine.
    let mem = machine(1);
    let mm = Mm::new(&mem, config);
    mm.mmap_write_lock()
        .mmap_anon(ADDR, PMD_SIZE, VmFlags::RW)
        .unwrap();
    // The THP lives on the device: a device-private PMD.
    mm.set_pmd(ADDR, Pmd::from_swp_entry(dp(0)).unwrap())
        .unwrap();

    let walker = {
        let mm = Arc::clone(&mm);
        thread::spawn(move || walk(&mm, y, mode))
    };

    // split_huge_pmd() of the device-private PMD.
    mm.pmd_lock(ADDR)
        .unwrap()
        .populate(|i| Pte::from_swp_entry(dp(i as u64)))
        .unwrap();

    walker.join().unwrap();
    assert!(mm.pmdp_get_lockless(ADDR).unwrap().is_table());
}

/// One walk for page `PAGE` of the THP at `y`.
fn walk(mm: &Mm, y: DevicePrivateOffset, mode: devpriv_core::PagingMode) {
    let vma = &mm.vmas()[0];
    let addr = ADDR + PAGE * PAGE_SIZE;
    let target = PageFrame::DevicePrivate(DevicePrivateOffset::new(y.get() + PAGE));
    let mut pvmw = PageVmaMappedWalk::new(
        mm,
        vma,
        target,
        PageCount::new(1),
        vma.linear_page_index(addr),
        addr,
        PvmwFlags::NONE,
    )
    .unwrap();
    assert!(pvmw.walk(), "the page was missed");
    assert!(pvmw.ptl_held(), "a match without the lock");
    if pvmw.is_pmd_mapped() {
        let pmd = pvmw.pmd().unwrap();
        let entry = Softleaf::from_pmd(pmd);
        assert!(
            entry.is_device_private(),
            "a PMD-level match on a PMD that is not device-private: {pmd:?}"
        );
        assert_eq!(entry.to_frame(mode), Some(y.into()));
    } else {
        let entry = Softleaf::from_pte(pvmw.pte().unwrap());
        assert_eq!(pvmw.address(), addr);
        assert_eq!(entry.to_frame(mode), Some(target));
    }
    pvmw.done();
}

#[test]
fn pvmw_walk_vs_device_private_pmd_split() {
    let runs = model(|| scenario(PvmwPmdPolicy::Fixed));
    eprintln!("pvmw_walk_vs_device_private_pmd_split: {runs} executions");
}

#[test]
fn v7_0_device_private_pmd_branch_is_caught() {
    assert_caught(
        || scenario(PvmwPmdPolicy::V7_0),
        &["a PMD-level match on a PMD that is not device-private"],
    );
}
