//! End-to-end migration between system RAM and device-private memory
//! through the dmirror driver (`devpriv_drivers::test_hmm`), after
//! `tools/testing/selftests/mm/hmm-tests.c` (`hmm.migrate`,
//! `hmm.migrate_anon_huge_fault`, `hmm.migrate_partial_unmap_fault`,
//! `hmm.migrate_anon_huge_err`, `hmm.migrate_release`, `hmm2.snapshot`).
//!
//! Every test checks the data word of every page, and ends with the
//! accounting: every device page back on the driver's free lists with
//! refcount 0 and the pgmap reference at its baseline; every system page
//! still mapped held by exactly its mappings, and every other system page
//! free.

use devpriv_core::{Errno, Order, PAGE_SIZE, PageCount, PageFrame, Pfn};
use devpriv_drivers::test_hmm::{Dmirror, DmirrorConfig, DmirrorDevice, HmmDmirrorCmd};
use devpriv_migrate::hmm::{HmmPfn, HmmRange, hmm_range_fault};
use devpriv_migrate::leafops::Softleaf;
use devpriv_migrate::{
    AnyFolio, FaultFlags, Memory, MigratePfn, MigrateVma, MigrateVmaFlags, Mm, MmConfig, PMD_SIZE,
    SystemMemory, VmFaultResult, VmFlags, handle_mm_fault, migrate_vma_finalize, migrate_vma_pages,
    migrate_vma_setup,
};
use devpriv_pagemap::{DevicePrivateSpace, Owner};
use std::sync::Arc;

const BASE: u64 = 0x7f00_0000_0000;
const SYS_PAGES: u64 = 8192;
const OWNER: Owner = Owner(0xd1);
/// `PAGE_SIZE` as a `step_by` argument.
const STEP: usize = 4096;
const _: () = assert!(STEP as u64 == PAGE_SIZE);

fn machine() -> Memory {
    let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(SYS_PAGES)).unwrap();
    Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()))
}

/// A dmirror device with chunks of `pages` pages.
fn device(mem: &Memory, owner: Owner, pages: u64) -> DmirrorDevice {
    DmirrorDevice::new(
        mem,
        owner,
        DmirrorConfig::with_chunk_pages(PageCount::new(pages)),
    )
    .unwrap()
}

/// `HMM_DMIRROR_MIGRATE_TO_DEV` over `[start, end)`: the pages read back.
fn to_dev(m: &Dmirror, mm: &Arc<Mm>, start: u64, end: u64) -> Result<u64, Errno> {
    let mut cmd = HmmDmirrorCmd::new(start, (end - start) / PAGE_SIZE);
    m.migrate_to_dev(mm, &mut cmd).map(|_| cmd.cpages)
}

/// `HMM_DMIRROR_MIGRATE_TO_SYS` over `[start, end)`: the pages moved.
fn to_sys(m: &Dmirror, mm: &Arc<Mm>, start: u64, end: u64) -> Result<u64, Errno> {
    let mut cmd = HmmDmirrorCmd::new(start, (end - start) / PAGE_SIZE);
    m.migrate_to_sys(mm, &mut cmd).map(|()| cmd.cpages)
}

fn value(addr: u64) -> u64 {
    0xda7a_0000_0000 ^ (addr >> 12)
}

/// `len` bytes of RW anon memory at `BASE`, filled page by page with
/// order-0 folios (`thp = false`) or PMD-mapped THPs, each page holding
/// `value(addr)`.
fn populated(mem: &Memory, len: u64, thp: bool) -> Arc<Mm> {
    let mm = Mm::new(mem, MmConfig::default());
    mm.mmap_write_lock()
        .mmap_anon(BASE, len, VmFlags::RW)
        .unwrap();
    let mut a = BASE;
    while a < BASE + len {
        if thp {
            let f = mem.sys().alloc_folio(Order::HPAGE_PMD).unwrap();
            mm.map_folio_pmd(a, f, true).unwrap();
            f.put().unwrap();
            a += PMD_SIZE;
        } else {
            let f = mem.sys().alloc_folio(Order::ZERO).unwrap();
            mm.map_folio_ptes(a, f, true).unwrap();
            f.put().unwrap();
            a += PAGE_SIZE;
        }
    }
    for a in (BASE..BASE + len).step_by(STEP) {
        mm.write_user(a, value(a)).unwrap();
    }
    mm
}

/// Reads every page through the CPU, faulting device-private pages back;
/// returns the number of faults that went to `migrate_to_ram`.
fn read_all(mm: &Arc<Mm>, start: u64, end: u64) -> u64 {
    let mut faults = 0;
    for a in (start..end).step_by(STEP) {
        let mut tries = 0;
        while mm.read_user(a).is_err() {
            tries += 1;
            assert!(tries < 4, "page {a:#x} does not come back");
            assert!(!mm.softleaf_at(a).is_none(), "page {a:#x} lost");
            assert_eq!(
                handle_mm_fault(mm, a, FaultFlags::READ),
                Ok(VmFaultResult::Done)
            );
            faults += 1;
        }
        assert_eq!(mm.read_user(a), Ok(value(a)), "data at {a:#x}");
    }
    faults
}

/// Every present page in `[start, end)` is held exactly by its mappings,
/// and system RAM has exactly `mapped` pages in use.
fn check_sys(mm: &Mm, start: u64, end: u64, mapped: u64) {
    let mem = mm.memory();
    let mut seen = 0;
    for a in (start..end).step_by(STEP) {
        let Ok(_) = mm.read_user(a) else {
            continue;
        };
        seen += 1;
        let pmd = mm.pmdp_get_lockless(a).unwrap();
        let pfn = if pmd.is_trans_huge() {
            Pfn::new(pmd.pfn().get() + (a % PMD_SIZE) / PAGE_SIZE)
        } else {
            mm.ptep_get_lockless(a).unwrap().pfn()
        };
        let f = mem.sys().pfn_folio(pfn).unwrap();
        assert_eq!(f.refcount(), f.mapcount(), "folio at {a:#x}: {f:?}");
        assert!(!f.is_locked(), "folio at {a:#x} left locked");
    }
    assert_eq!(seen, mapped, "present pages");
    assert_eq!(
        mem.sys().nr_free(),
        SYS_PAGES - mapped,
        "system pages in use"
    );
}

#[test]
fn migrate_4mib_to_device_and_back_by_cpu_fault() {
    let mem = machine();
    let dev = device(&mem, OWNER, 2048);
    let len = 4 << 20;
    let npages = len / PAGE_SIZE;
    let mm = populated(&mem, len, false);
    let m = dev.open(&mm);
    assert_eq!(to_dev(&m, &mm, BASE, BASE + len), Ok(npages));
    // All on the device: system RAM empty, every PTE a writable
    // device-private entry, the device holding the data.
    assert_eq!(mem.sys().nr_free(), SYS_PAGES);
    for a in (BASE..BASE + len).step_by(STEP) {
        let e = mm.softleaf_at(a);
        assert!(e.is_device_private_write(), "{a:#x}: {e:?}");
        assert_eq!(
            dev.read_page(mm.device_private_offset_at(a).unwrap()),
            Ok(value(a))
        );
    }
    assert_eq!(dev.nr_free_pages(), 2048 - npages);
    assert_eq!(
        dev.chunks()[0].percpu_ref().count(),
        1 + i64::try_from(npages).unwrap(),
        "one pgmap reference per allocated device page"
    );
    // Back by CPU fault, one page at a time.
    assert_eq!(read_all(&mm, BASE, BASE + len), npages);
    assert_eq!(dev.faults(), npages);
    check_sys(&mm, BASE, BASE + len, npages);
    dev.check_idle().unwrap();
    dev.remove().unwrap();
}

#[test]
fn a_thp_migrates_as_one_order9_device_folio_and_faults_back_whole() {
    let mem = machine();
    let dev = device(&mem, OWNER, 1024);
    let mm = populated(&mem, 2 * PMD_SIZE, true);
    let m = dev.open(&mm);
    assert_eq!(to_dev(&m, &mm, BASE, BASE + PMD_SIZE), Ok(512));
    // One device-private PMD naming one order-9 device folio.
    let pmd = mm.pmdp_get_lockless(BASE).unwrap();
    let e = Softleaf::from_pmd(pmd);
    assert!(e.is_device_private_write(), "{pmd:?}");
    {
        let guard = mem.space().read();
        let Some(PageFrame::DevicePrivate(off)) = e.to_frame(mm.paging()) else {
            panic!("not an offset");
        };
        let folio = guard.device_private_offset_to_page(off).unwrap().folio();
        assert_eq!(folio.order(), Order::HPAGE_PMD);
        let f = AnyFolio::Dev(folio);
        assert_eq!((f.refcount(), f.mapcount(), f.entire_mapcount()), (1, 1, 1));
        assert!(!f.is_locked());
    }
    assert_eq!(mem.sys().nr_free(), SYS_PAGES - 512, "the THP was freed");
    // The second THP did not move.
    assert!(
        mm.pmdp_get_lockless(BASE + PMD_SIZE)
            .unwrap()
            .is_trans_huge()
    );
    // One fault in the middle brings all 2 MiB back as a THP.
    assert_eq!(
        handle_mm_fault(&mm, BASE + 300 * PAGE_SIZE, FaultFlags::WRITE),
        Ok(VmFaultResult::Done)
    );
    assert_eq!(dev.faults(), 1);
    assert!(mm.pmdp_get_lockless(BASE).unwrap().is_trans_huge());
    assert_eq!(read_all(&mm, BASE, BASE + 2 * PMD_SIZE), 0);
    check_sys(&mm, BASE, BASE + 2 * PMD_SIZE, 1024);
    dev.check_idle().unwrap();
}

fn partial_unmap_then_fault(thp: bool, hole_at: u64) {
    let mem = machine();
    let dev = device(&mem, OWNER, 1024);
    let mm = populated(&mem, PMD_SIZE, thp);
    let m = dev.open(&mm);
    assert_eq!(to_dev(&m, &mm, BASE, BASE + PMD_SIZE), Ok(512));
    let hole = BASE + hole_at;
    let half = PMD_SIZE / 2;
    mm.mmap_write_lock().munmap(hole, half).unwrap();
    assert!(mm.vma_lookup(hole).is_none());
    assert!(mm.vma_lookup(hole + half - PAGE_SIZE).is_none());
    if thp {
        // The order-9 device folio stays whole, PTE-mapped by the 256
        // pages left: one reference and one map count per page.
        assert_eq!(dev.nr_pages() - dev.nr_free_pages(), 512);
        let left = if hole_at == 0 { BASE + half } else { BASE };
        let guard = mem.space().read();
        let off = mm.device_private_offset_at(left).unwrap();
        let f = AnyFolio::Dev(guard.device_private_offset_to_page(off).unwrap().folio());
        assert_eq!(f.order(), Order::HPAGE_PMD);
        assert_eq!(
            (f.refcount(), f.mapcount(), f.entire_mapcount()),
            (256, 256, 0)
        );
    } else {
        // The unmapped order-0 device pages went back to the device.
        assert_eq!(
            dev.nr_pages() - dev.nr_free_pages(),
            256,
            "hole={hole_at:#x}"
        );
    }
    let faults = read_all(&mm, BASE, hole) + read_all(&mm, hole + half, BASE + PMD_SIZE);
    assert_eq!(faults, 256, "one fault per page left (thp={thp})");
    check_sys(&mm, BASE, BASE + PMD_SIZE, 256);
    dev.check_idle().unwrap();
}

#[test]
fn partial_munmap_then_fault_back_the_rest() {
    for thp in [false, true] {
        for hole_at in [0, PMD_SIZE / 4, PMD_SIZE / 2] {
            partial_unmap_then_fault(thp, hole_at);
        }
    }
}

#[test]
fn forced_large_allocation_failure_falls_back_to_small_pages() {
    let mem = machine();
    let dev = device(&mem, OWNER, 1024);
    let mm = populated(&mem, PMD_SIZE, true);
    let m = dev.open(&mm);
    // System → device: no order-9 device folio, so 512 order-0 ones.
    m.set_flags(Dmirror::FLAG_FAIL_ALLOC);
    assert_eq!(to_dev(&m, &mm, BASE, BASE + PMD_SIZE), Ok(512));
    assert_eq!(m.flags(), 0, "the flag is one-shot");
    assert!(
        mm.pmdp_get_lockless(BASE).unwrap().is_table(),
        "PTE-mapped now"
    );
    {
        let guard = mem.space().read();
        for a in (BASE..BASE + PMD_SIZE).step_by(STEP) {
            let off = mm.device_private_offset_at(a).unwrap();
            let folio = guard.device_private_offset_to_page(off).unwrap().folio();
            assert_eq!(folio.order(), Order::ZERO);
            assert_eq!(AnyFolio::Dev(folio).refcount(), 1);
            assert_eq!(dev.read_page(off), Ok(value(a)));
        }
    }
    assert_eq!(
        mem.sys().nr_free(),
        SYS_PAGES,
        "the THP was split and freed"
    );
    assert_eq!(read_all(&mm, BASE, BASE + PMD_SIZE), 512);
    check_sys(&mm, BASE, BASE + PMD_SIZE, 512);
    dev.check_idle().unwrap();

    // Device → system: an order-9 device folio, but no order-9 system
    // folio for it: the device folio is split and 512 pages come back.
    let mem = machine();
    let dev = device(&mem, OWNER, 1024);
    let mm = populated(&mem, PMD_SIZE, true);
    let m = dev.open(&mm);
    assert_eq!(to_dev(&m, &mm, BASE, BASE + PMD_SIZE), Ok(512));
    m.set_flags(Dmirror::FLAG_FAIL_ALLOC);
    assert_eq!(
        handle_mm_fault(&mm, BASE + 5 * PAGE_SIZE, FaultFlags::READ),
        Ok(VmFaultResult::Done)
    );
    assert!(mm.pmdp_get_lockless(BASE).unwrap().is_table());
    let faults_after_first = dev.faults();
    read_all(&mm, BASE, BASE + PMD_SIZE);
    assert_eq!(
        dev.faults(),
        faults_after_first,
        "everything came back at once"
    );
    check_sys(&mm, BASE, BASE + PMD_SIZE, 512);
    dev.check_idle().unwrap();
}

#[test]
fn eviction_brings_everything_back_without_a_vma() {
    let mem = machine();
    let dev = device(&mem, OWNER, 2048);
    let mm = populated(&mem, 2 * PMD_SIZE, true);
    // Plus 100 small pages in a second VMA.
    let small = BASE + 4 * PMD_SIZE;
    mm.mmap_write_lock()
        .mmap_anon(small, 100 * PAGE_SIZE, VmFlags::RW)
        .unwrap();
    for a in (small..small + 100 * PAGE_SIZE).step_by(STEP) {
        let f = mem.sys().alloc_folio(Order::ZERO).unwrap();
        mm.map_folio_ptes(a, f, true).unwrap();
        f.put().unwrap();
        mm.write_user(a, value(a)).unwrap();
    }
    let m = dev.open(&mm);
    assert_eq!(to_dev(&m, &mm, BASE, BASE + 2 * PMD_SIZE), Ok(1024));
    assert_eq!(to_dev(&m, &mm, small, small + 100 * PAGE_SIZE), Ok(100));
    assert_eq!(dev.remove_chunks(&mm), Ok(1124));
    assert!(dev.chunks().is_empty());
    assert_eq!(m.nr_pt_entries(), 0, "release erased the mirror");
    assert_eq!(dev.faults(), 0);
    assert_eq!(read_all(&mm, BASE, BASE + 2 * PMD_SIZE), 0);
    assert_eq!(read_all(&mm, small, small + 100 * PAGE_SIZE), 0);
    check_sys(&mm, BASE, small + 100 * PAGE_SIZE, 1124);
    dev.check_idle().unwrap();
    dev.remove().unwrap();
}

#[test]
fn explicit_migration_to_system_and_owner_checks() {
    let mem = machine();
    let dev1 = device(&mem, Owner(1), 1024);
    let dev2 = device(&mem, Owner(2), 1024);
    let mm = populated(&mem, PMD_SIZE, false);
    let (m1, m2) = (dev1.open(&mm), dev2.open(&mm));
    assert_eq!(to_dev(&m1, &mm, BASE, BASE + PMD_SIZE), Ok(512));
    // Another owner selects none of dev1's pages (pgmap_owner check) ...
    assert_eq!(to_sys(&m2, &mm, BASE, BASE + PMD_SIZE), Ok(0));
    // ... and cannot move them to its own memory either.
    assert_eq!(to_dev(&m2, &mm, BASE, BASE + PMD_SIZE), Err(Errno::ENOENT));
    assert_eq!(dev2.nr_free_pages(), 1024);
    let vma = &mm.vma_lookup(BASE).unwrap();
    let mut args = MigrateVma::new(
        &mm,
        vma,
        BASE,
        BASE + PMD_SIZE,
        MigrateVmaFlags::SELECT_DEVICE_PRIVATE,
        Some(Owner(2)),
    );
    migrate_vma_setup(&mut args).unwrap();
    assert_eq!((args.npages, args.cpages), (512, 0));
    assert!(args.src.iter().all(|m| *m == MigratePfn::NONE));
    assert_eq!(to_sys(&m1, &mm, BASE, BASE + PMD_SIZE), Ok(512));
    assert_eq!(dev1.faults(), 0);
    assert_eq!(read_all(&mm, BASE, BASE + PMD_SIZE), 0);
    check_sys(&mm, BASE, BASE + PMD_SIZE, 512);
    dev1.check_idle().unwrap();
    dev2.check_idle().unwrap();
}

#[test]
fn a_migration_entry_makes_the_fault_retry_and_an_abandoned_migration_restores() {
    let mem = machine();
    let mm = populated(&mem, PMD_SIZE, false);
    let vma = &mm.vma_lookup(BASE).unwrap();
    let mut args = MigrateVma::new(
        &mm,
        vma,
        BASE,
        BASE + 8 * PAGE_SIZE,
        MigrateVmaFlags::SELECT_SYSTEM,
        None,
    );
    migrate_vma_setup(&mut args).unwrap();
    assert_eq!((args.npages, args.cpages), (8, 8));
    let e = mm.softleaf_at(BASE);
    assert!(
        e.is_migration_write() && !e.is_migration_device_private(),
        "{e:?}"
    );
    let Some(PageFrame::Pfn(pfn)) = args.src[0].frame() else {
        panic!("{:?}", args.src[0]);
    };
    let f = mem.sys().pfn_folio(pfn).unwrap();
    assert_eq!((f.refcount(), f.mapcount(), f.is_locked()), (1, 0, true));
    assert_eq!(
        handle_mm_fault(&mm, BASE, FaultFlags::READ),
        Ok(VmFaultResult::Retry)
    );
    // The driver allocates nothing: every entry is restored.
    migrate_vma_pages(&mut args);
    assert!(args.src.iter().all(|m| !m.contains(MigratePfn::MIGRATE)));
    migrate_vma_finalize(&mut args);
    assert_eq!(read_all(&mm, BASE, BASE + PMD_SIZE), 0);
    check_sys(&mm, BASE, BASE + PMD_SIZE, 512);
}

#[test]
fn migrate_vma_setup_refuses_bad_arguments() {
    let mem = machine();
    let dev = device(&mem, OWNER, 512);
    let mm = populated(&mem, PMD_SIZE, false);
    let vma = &mm.vma_lookup(BASE).unwrap();
    let flags = MigrateVmaFlags::SELECT_SYSTEM;
    let try_range = |start, end| {
        let mut a = MigrateVma::new(&mm, vma, start, end, flags, None);
        // Give every case arrays big enough, so only the range decides.
        a.src.resize(1024, MigratePfn::NONE);
        a.dst.resize(1024, MigratePfn::NONE);
        migrate_vma_setup(&mut a)
    };
    assert_eq!(try_range(BASE, BASE), Err(Errno::EINVAL));
    assert_eq!(try_range(BASE + PAGE_SIZE, BASE), Err(Errno::EINVAL));
    assert_eq!(
        try_range(BASE - PAGE_SIZE, BASE + PAGE_SIZE),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        try_range(BASE, BASE + PMD_SIZE + PAGE_SIZE),
        Err(Errno::EINVAL)
    );
    let mut a = MigrateVma::new(&mm, vma, BASE, BASE + 4 * PAGE_SIZE, flags, None);
    a.dst.truncate(3);
    assert_eq!(migrate_vma_setup(&mut a), Err(Errno::EINVAL));
    // A fault page must be a locked device-private page.
    let off = dev.alloc_page(false).unwrap();
    {
        let guard = mem.space().read();
        guard
            .device_private_offset_to_page(off)
            .unwrap()
            .folio()
            .unlock();
    }
    let mut a = MigrateVma::new(&mm, vma, BASE, BASE + 4 * PAGE_SIZE, flags, None);
    a.fault_page = Some(off);
    assert_eq!(migrate_vma_setup(&mut a), Err(Errno::EINVAL));
    {
        let guard = mem.space().read();
        devpriv_pagemap::folio_put(guard.device_private_offset_to_page(off).unwrap().folio());
    }
    // A VMA of another address space.
    let other = Mm::new(&mem, MmConfig::default());
    let other_vma = other
        .mmap_write_lock()
        .mmap_anon(BASE, PMD_SIZE, VmFlags::RW)
        .unwrap();
    let mut a = MigrateVma::new(&mm, &other_vma, BASE, BASE + PAGE_SIZE, flags, None);
    assert_eq!(migrate_vma_setup(&mut a), Err(Errno::EINVAL));
    // Nothing moved.
    check_sys(&mm, BASE, BASE + PMD_SIZE, 512);
    dev.check_idle().unwrap();
}

#[test]
fn hmm_range_fault_reports_local_pages_and_faults_foreign_ones() {
    let mem = machine();
    let dev1 = device(&mem, Owner(1), 512);
    let dev2 = device(&mem, Owner(2), 512);
    let mm = populated(&mem, 8 * PAGE_SIZE, false);
    // A PROT_NONE VMA after a one-page gap.
    mm.mmap_write_lock()
        .mmap_anon(BASE + 9 * PAGE_SIZE, PAGE_SIZE, VmFlags::default())
        .unwrap();
    let (a_local, a_foreign) = (BASE + PAGE_SIZE, BASE + 2 * PAGE_SIZE);
    let (m1, m2) = (dev1.open(&mm), dev2.open(&mm));
    assert_eq!(to_dev(&m1, &mm, a_local, a_local + PAGE_SIZE), Ok(1));
    assert_eq!(to_dev(&m2, &mm, a_foreign, a_foreign + PAGE_SIZE), Ok(1));
    let local_off = mm.device_private_offset_at(a_local).unwrap();

    // Snapshot through dev1, no faulting.
    let mut r = HmmRange::new(BASE, BASE + 10 * PAGE_SIZE, Some(Owner(1)));
    hmm_range_fault(&mm, &mut r).unwrap();
    let present = r.hmm_pfns[0].decode().unwrap();
    assert!(matches!(present, (PageFrame::Pfn(_), Order::ZERO, true)));
    assert_eq!(
        r.hmm_pfns[1].raw(),
        HmmPfn::VALID | HmmPfn::WRITE | HmmPfn::DEVICE_PRIVATE | local_off.get()
    );
    assert_eq!(
        r.hmm_pfns[2].raw(),
        0,
        "a foreign device page reads as empty"
    );
    assert_eq!(r.hmm_pfns[8].raw(), HmmPfn::ERROR, "no VMA");
    assert_eq!(r.hmm_pfns[9].raw(), HmmPfn::ERROR, "PROT_NONE");

    // With REQ_FAULT over the migrated pages: the local page is still only
    // reported, the foreign one is migrated back by its owner.
    let mut r = HmmRange::new(BASE, BASE + 8 * PAGE_SIZE, Some(Owner(1)));
    r.default_flags = HmmPfn::REQ_FAULT;
    hmm_range_fault(&mm, &mut r).unwrap();
    assert_eq!(
        r.hmm_pfns[1].frame(),
        Some(PageFrame::DevicePrivate(local_off))
    );
    assert!(matches!(r.hmm_pfns[2].frame(), Some(PageFrame::Pfn(_))));
    assert_eq!((dev1.faults(), dev2.faults()), (0, 1));
    assert_eq!(mm.read_user(a_foreign), Ok(value(a_foreign)));

    // Faulting where there is no VMA is an error.
    let mut r = HmmRange::new(BASE + 8 * PAGE_SIZE, BASE + 9 * PAGE_SIZE, None);
    r.default_flags = HmmPfn::REQ_FAULT;
    assert_eq!(hmm_range_fault(&mm, &mut r), Err(Errno::EFAULT));

    assert_eq!(read_all(&mm, BASE, BASE + 8 * PAGE_SIZE), 1);
    check_sys(&mm, BASE, BASE + 8 * PAGE_SIZE, 8);
    dev1.check_idle().unwrap();
    dev2.check_idle().unwrap();
}

#[test]
fn hmm_reports_a_device_private_pmd_with_order_9() {
    let mem = machine();
    let dev = device(&mem, OWNER, 512);
    let mm = populated(&mem, PMD_SIZE, true);
    let m = dev.open(&mm);
    assert_eq!(to_dev(&m, &mm, BASE, BASE + PMD_SIZE), Ok(512));
    let mut r = HmmRange::new(BASE, BASE + PMD_SIZE, Some(OWNER));
    hmm_range_fault(&mm, &mut r).unwrap();
    let head = mm.device_private_offset_at(BASE).unwrap();
    for (i, h) in r.hmm_pfns.iter().enumerate() {
        let off = head.checked_add(PageCount::new(i as u64)).unwrap();
        assert_eq!(h.decode(), Some((off.into(), Order::HPAGE_PMD, true)));
    }
    assert_eq!(read_all(&mm, BASE, BASE + PMD_SIZE), 1);
    dev.check_idle().unwrap();
}
