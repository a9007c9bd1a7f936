//! The HMM acceptance suite: scenarios of the kernel's HMM selftests
//! (`tools/testing/selftests/mm/hmm-tests.c`, 7.0),
//! described and written anew, run against the dmirror driver model
//! (`devpriv_drivers::test_hmm`).
//!
//! Each test is named after the selftest it follows. Every test checks the
//! data the device and the CPU see, the counts the ioctls report, and ends
//! with [`teardown`]: every system page that is still mapped is held by
//! exactly its mappings, and once the address space is unmapped every
//! system page is free, every page-table page deposited for a huge PMD is
//! freed, every device page is back on its device's free lists with
//! refcount 0, and every pagemap reference is at its baseline.
//!
//! Run: `cargo test -p devpriv-drivers --test hmm_tests`.

use devpriv_core::{Errno, Order, PAGE_SIZE, PageCount, Pfn};
use devpriv_drivers::test_hmm::{
    Dmirror, DmirrorConfig, DmirrorDevice, DmirrorProt, HmmDmirrorCmd,
};
use devpriv_migrate::leafops::Softleaf;
use devpriv_migrate::{
    AnyFolio, FaultFlags, Memory, Mm, MmConfig, PMD_SIZE, SystemMemory, VmFaultResult, VmFlags,
    handle_mm_fault,
};
use devpriv_pagemap::{DevicePrivateSpace, Owner};
use std::sync::Arc;

/// System RAM: 32 MiB.
const SYS_PAGES: u64 = 8192;
/// Device chunks of 4 MiB (the kernel's are 256 MiB).
const CHUNK_PAGES: u64 = 1024;
/// The selftests' buffer: 4 MiB.
const BUFFER_PAGES: u64 = 1024;
/// 2 MiB-aligned user addresses.
const BASE: u64 = 0x7f00_0000_0000;
const STEP: usize = 4096;
const _: () = assert!(STEP as u64 == PAGE_SIZE);

/// A machine with two dmirror devices of different owners (the `hmm2`
/// fixture; `hmm` tests use device 0 only).
struct Machine {
    mem: Memory,
    dev0: DmirrorDevice,
    dev1: DmirrorDevice,
}

fn machine() -> Machine {
    machine_with_owners(Owner(0xd0), Owner(0xd1))
}

fn machine_with_owners(o0: Owner, o1: Owner) -> Machine {
    let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(SYS_PAGES)).unwrap();
    let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
    let config = DmirrorConfig::with_chunk_pages(PageCount::new(CHUNK_PAGES));
    let dev0 = DmirrorDevice::new(&mem, o0, config).unwrap();
    let dev1 = DmirrorDevice::new(&mem, o1, config).unwrap();
    Machine { mem, dev0, dev1 }
}

/// The word a test stores in the page at `addr`.
fn value(addr: u64) -> u64 {
    0xda7a_0000_0000 ^ (addr >> 12)
}

fn page(i: u64) -> u64 {
    BASE + i * PAGE_SIZE
}

/// A CPU load: faults until the page is present.
fn cpu_read(mm: &Arc<Mm>, addr: u64) -> u64 {
    for _ in 0..4 {
        if let Ok(v) = mm.read_user(addr) {
            return v;
        }
        assert_eq!(
            handle_mm_fault(mm, addr, FaultFlags::READ),
            Ok(VmFaultResult::Done),
            "read fault at {addr:#x}"
        );
    }
    panic!("page {addr:#x} does not come back");
}

/// A CPU store: faults until the page is present and writable.
fn cpu_write(mm: &Arc<Mm>, addr: u64, v: u64) {
    for _ in 0..4 {
        if mm.write_user(addr, v).is_ok() {
            return;
        }
        assert_eq!(
            handle_mm_fault(mm, addr, FaultFlags::WRITE),
            Ok(VmFaultResult::Done),
            "write fault at {addr:#x}"
        );
    }
    panic!("page {addr:#x} is not writable");
}

/// Maps a 2 MiB THP at `addr` (`MADV_HUGEPAGE` plus a first touch) and
/// fills it with [`value`].
fn thp(mm: &Mm, addr: u64) {
    let f = mm.memory().sys().alloc_folio(Order::HPAGE_PMD).unwrap();
    mm.map_folio_pmd(addr, f, true).unwrap();
    f.put().unwrap();
    for a in (addr..addr + PMD_SIZE).step_by(STEP) {
        mm.write_user(a, value(a)).unwrap();
    }
}

/// Maps a read-only page holding `v` at `addr` (what writing a page and
/// then `mprotect(PROT_READ)` leaves).
fn ro_page(mm: &Mm, addr: u64, v: u64) {
    let mem = mm.memory().sys();
    let f = mem.alloc_folio(Order::ZERO).unwrap();
    mem.write(f.pfn(), v).unwrap();
    mm.map_folio_ptes(addr, f, false).unwrap();
    f.put().unwrap();
}

/// A RW anonymous buffer of `npages` at `BASE`, written by the CPU.
fn filled(mem: &Memory, npages: u64) -> Arc<Mm> {
    let mm = Mm::new(mem, MmConfig::default());
    mm.mmap_write_lock()
        .mmap_anon(BASE, npages * PAGE_SIZE, VmFlags::RW)
        .unwrap();
    for i in 0..npages {
        cpu_write(&mm, page(i), value(page(i)));
    }
    mm
}

fn expected(start: u64, npages: u64) -> Vec<u64> {
    (0..npages).map(|i| value(start + i * PAGE_SIZE)).collect()
}

fn to_dev(m: &Dmirror, mm: &Arc<Mm>, start: u64, npages: u64) -> Result<(Vec<u64>, u64), Errno> {
    let mut cmd = HmmDmirrorCmd::new(start, npages);
    m.migrate_to_dev(mm, &mut cmd).map(|d| (d, cmd.cpages))
}

fn snap(m: &Dmirror, mm: &Arc<Mm>, start: u64, npages: u64) -> Vec<DmirrorProt> {
    let mut cmd = HmmDmirrorCmd::new(start, npages);
    let s = m.snapshot(mm, &mut cmd).unwrap();
    assert_eq!(cmd.cpages, npages);
    s
}

/// The order of the device folio the CPU maps at `addr`.
fn device_folio_order(mm: &Mm, addr: u64) -> Order {
    let off = mm
        .device_private_offset_at(addr)
        .expect("a device-private entry");
    let guard = mm.memory().space().read();
    guard
        .device_private_offset_to_page(off)
        .unwrap()
        .folio()
        .order()
}

/// The final accounting (see the module documentation).
fn teardown(mm: Arc<Mm>, devs: &[&DmirrorDevice]) {
    assert_eq!(
        Arc::strong_count(&mm),
        1,
        "no other handle on the address space"
    );
    let (m, mem) = (&*mm, mm.memory());
    for v in m.vmas().iter() {
        for a in (v.start()..v.end()).step_by(STEP) {
            if m.read_user(a).is_err() {
                continue;
            }
            let pmd = m.pmdp_get_lockless(a).unwrap();
            let pfn = if pmd.is_trans_huge() {
                Pfn::new(pmd.pfn().get() + (a % PMD_SIZE) / PAGE_SIZE)
            } else {
                m.ptep_get_lockless(a).unwrap().pfn()
            };
            if mem.sys().is_zero_pfn(pfn) {
                continue;
            }
            let f = mem.sys().pfn_folio(pfn).unwrap();
            assert_eq!(f.refcount(), f.mapcount(), "folio at {a:#x}: {f:?}");
            assert!(!f.is_locked(), "folio at {a:#x} left locked");
        }
    }
    let vmas: Vec<(u64, u64)> = m.vmas().iter().map(|v| (v.start(), v.end())).collect();
    let mut w = m.mmap_write_lock();
    for (s, e) in vmas {
        w.munmap(s, e - s).unwrap();
    }
    drop(w);
    assert_eq!(mem.sys().nr_free(), SYS_PAGES, "system pages leaked");
    assert_eq!(m.nr_pgtables(), 0, "deposited page tables leaked");
    for d in devs {
        d.check_idle().unwrap();
    }
    mem.space().validate().unwrap();
}

/// `hmm.migrate`: 4 MiB of written anonymous memory moves to the device
/// in one command; the device read back exactly what the CPU wrote, every
/// page is now a writable device-private page of this device, and each CPU
/// access brings one page back through `migrate_to_ram`.
#[test]
fn migrate() {
    let Machine { mem, dev0, dev1 } = machine();
    let mm = filled(&mem, BUFFER_PAGES);
    let m = dev0.open(&mm);
    let (data, cpages) = to_dev(&m, &mm, BASE, BUFFER_PAGES).unwrap();
    assert_eq!(cpages, BUFFER_PAGES);
    assert_eq!(data, expected(BASE, BUFFER_PAGES));
    assert_eq!(mem.sys().nr_free(), SYS_PAGES, "every system page moved");
    assert_eq!(dev0.calloc(), BUFFER_PAGES);
    assert_eq!(
        dev0.chunks()[0].percpu_ref().count(),
        1 + i64::try_from(BUFFER_PAGES).unwrap(),
        "one pgmap reference per device page"
    );
    let prot = snap(&m, &mm, BASE, BUFFER_PAGES);
    assert!(
        prot.iter()
            .all(|p| *p == DmirrorProt::DEV_PRIVATE_LOCAL | DmirrorProt::WRITE),
        "{:?}",
        &prot[..4]
    );
    for a in (BASE..page(BUFFER_PAGES)).step_by(STEP) {
        assert_eq!(cpu_read(&mm, a), value(a));
    }
    assert_eq!(dev0.faults(), BUFFER_PAGES);
    assert_eq!(dev0.cfree(), BUFFER_PAGES);
    assert_eq!(dev1.calloc(), 0);
    teardown(mm, &[&dev0, &dev1]);
}

/// `hmm.migrate_fault`: after moving the buffer to the device the CPU
/// touches the first half (which comes back); moving the whole range
/// again succeeds for every page — the half still on the device stays
/// where it is, only the other half is copied again.
#[test]
fn migrate_fault() {
    let Machine { mem, dev0, .. } = machine();
    let n = 512;
    let mm = filled(&mem, n);
    let m = dev0.open(&mm);
    assert_eq!(to_dev(&m, &mm, BASE, n).unwrap().1, n);
    for a in (BASE..page(n / 2)).step_by(STEP) {
        assert_eq!(cpu_read(&mm, a), value(a));
    }
    assert_eq!(dev0.faults(), n / 2);
    let before = dev0.calloc();
    let (data, cpages) = to_dev(&m, &mm, BASE, n).unwrap();
    assert_eq!((cpages, data), (n, expected(BASE, n)));
    assert_eq!(
        dev0.calloc() - before,
        n / 2,
        "only the faulted half moved again"
    );
    assert!((0..n).all(|i| mm.device_private_offset_at(page(i)).is_some()));
    for a in (BASE..page(n)).step_by(STEP) {
        assert_eq!(cpu_read(&mm, a), value(a));
    }
    assert_eq!(dev0.faults(), n / 2 + n);
    teardown(mm, &[&dev0]);
}

/// `hmm.migrate_multiple`: ten rounds, each on a fresh buffer, of moving
/// it to the device and reading it back with the CPU; after every round
/// the device has all its memory back.
#[test]
fn migrate_multiple() {
    let Machine { mem, dev0, .. } = machine();
    let n = 128;
    for round in 0..10u64 {
        let mm = Mm::new(&mem, MmConfig::default());
        mm.mmap_write_lock()
            .mmap_anon(BASE, n * PAGE_SIZE, VmFlags::RW)
            .unwrap();
        for i in 0..n {
            cpu_write(&mm, page(i), value(page(i)) + round);
        }
        let m = dev0.open(&mm);
        let (data, cpages) = to_dev(&m, &mm, BASE, n).unwrap();
        assert_eq!(cpages, n);
        assert!(
            data.iter()
                .zip(expected(BASE, n))
                .all(|(d, e)| *d == e + round)
        );
        for i in 0..n {
            assert_eq!(cpu_read(&mm, page(i)), value(page(i)) + round);
        }
        assert_eq!(dev0.faults(), (round + 1) * n);
        dev0.check_idle().unwrap();
        drop(m);
        teardown(mm, &[&dev0]);
    }
    assert_eq!((dev0.calloc(), dev0.cfree()), (10 * n, 10 * n));
    assert_eq!(dev0.chunks().len(), 1, "freed pages were reused");
}

/// `hmm.migrate_release`: with the buffer on the device, `RELEASE` evicts
/// every chunk to system RAM without any CPU fault and unmaps the chunks;
/// the CPU then reads its data directly. The device grows a new chunk when
/// it is used again.
#[test]
fn migrate_release() {
    let Machine { mem, dev0, .. } = machine();
    let n = BUFFER_PAGES;
    let mm = filled(&mem, n);
    let m = dev0.open(&mm);
    assert_eq!(to_dev(&m, &mm, BASE, n).unwrap().1, n);
    let pagemaps = mem.space().len();
    m.release(&mm).unwrap();
    assert!(dev0.chunks().is_empty());
    assert_eq!(mem.space().len(), pagemaps - 1, "the chunk was unmapped");
    assert_eq!(m.nr_pt_entries(), 0, "no device entry outlives its chunk");
    for a in (BASE..page(n)).step_by(STEP) {
        assert_eq!(mm.read_user(a), Ok(value(a)), "{a:#x} is back");
    }
    assert_eq!(dev0.faults(), 0);
    assert!(
        snap(&m, &mm, BASE, n)
            .iter()
            .all(|p| *p == DmirrorProt::WRITE)
    );
    // The device still works: a new chunk.
    assert_eq!(to_dev(&m, &mm, BASE, 8).unwrap().1, 8);
    assert_eq!(dev0.chunks().len(), 1);
    for a in (BASE..page(8)).step_by(STEP) {
        assert_eq!(cpu_read(&mm, a), value(a));
    }
    teardown(mm, &[&dev0]);
}

/// `hmm2.migrate_mixed`: migrating an inaccessible range or one with a
/// hole in it fails with `EINVAL`; a zero page, a read-only page and two
/// writable pages all move to device 1 (the zero page as zeros, the
/// read-only page staying read-only); a page already on device 1 cannot
/// be taken by device 0 (`ENOENT`), which does not even see it.
#[test]
fn migrate_mixed() {
    let Machine { mem, dev0, dev1 } = machine();
    let mm = Mm::new(&mem, MmConfig::default());
    mm.mmap_write_lock()
        .mmap_anon(BASE, 6 * PAGE_SIZE, VmFlags::default())
        .unwrap();
    let (m0, m1) = (dev0.open(&mm), dev1.open(&mm));
    assert_eq!(to_dev(&m1, &mm, BASE, 6), Err(Errno::EINVAL));
    // Punch a hole at page 1: the range no longer has one VMA.
    mm.mmap_write_lock().munmap(page(1), PAGE_SIZE).unwrap();
    assert_eq!(to_dev(&m1, &mm, BASE, 3), Err(Errno::EINVAL));
    // Page 2: readable, read once (the zero page); page 3: read-only data;
    // pages 4-5: writable data.
    {
        let mut w = mm.mmap_write_lock();
        w.munmap(page(2), 4 * PAGE_SIZE).unwrap();
        w.mmap_anon(page(2), 2 * PAGE_SIZE, VmFlags::READ).unwrap();
        w.mmap_anon(page(4), 2 * PAGE_SIZE, VmFlags::RW).unwrap();
        ro_page(&w, page(3), 3);
    }
    assert_eq!(cpu_read(&mm, page(2)), 0);
    assert!(
        mem.sys()
            .is_zero_pfn(mm.ptep_get_lockless(page(2)).unwrap().pfn())
    );
    cpu_write(&mm, page(4), 3);
    cpu_write(&mm, page(5), 3);
    let (data, cpages) = to_dev(&m1, &mm, page(2), 4).unwrap();
    assert_eq!((cpages, data), (4, vec![0, 3, 3, 3]));
    assert_eq!(
        snap(&m1, &mm, page(2), 4),
        [
            DmirrorProt::DEV_PRIVATE_LOCAL | DmirrorProt::READ,
            DmirrorProt::DEV_PRIVATE_LOCAL | DmirrorProt::READ,
            DmirrorProt::DEV_PRIVATE_LOCAL | DmirrorProt::WRITE,
            DmirrorProt::DEV_PRIVATE_LOCAL | DmirrorProt::WRITE,
        ]
    );
    // Device 0 neither moves nor sees device 1's page.
    assert_eq!(to_dev(&m0, &mm, page(5), 1), Err(Errno::ENOENT));
    assert_eq!(snap(&m0, &mm, page(5), 1), [DmirrorProt::NONE]);
    assert_eq!(dev0.calloc(), 0);
    assert!(dev1.owns(mm.device_private_offset_at(page(5)).unwrap()));
    assert!(!dev0.owns(mm.device_private_offset_at(page(5)).unwrap()));
    drop((m0, m1));
    teardown(mm, &[&dev0, &dev1]);
}

/// Builds the seven-page layout of `hmm2.snapshot`: no access, a hole,
/// the zero page, read-only data, writable data, a page on device 0 and a
/// page on device 1.
fn snapshot_layout(m: &Machine) -> (Arc<Mm>, Dmirror, Dmirror) {
    let mm = Mm::new(&m.mem, MmConfig::default());
    mm.mmap_write_lock()
        .mmap_anon(page(0), PAGE_SIZE, VmFlags::default())
        .unwrap();
    mm.mmap_write_lock()
        .mmap_anon(page(2), 2 * PAGE_SIZE, VmFlags::READ)
        .unwrap();
    mm.mmap_write_lock()
        .mmap_anon(page(4), 3 * PAGE_SIZE, VmFlags::RW)
        .unwrap();
    ro_page(&mm, page(3), 3);
    assert_eq!(cpu_read(&mm, page(2)), 0);
    cpu_write(&mm, page(4), 3);
    let (m0, m1) = (m.dev0.open(&mm), m.dev1.open(&mm));
    assert_eq!(to_dev(&m0, &mm, page(5), 1).unwrap().1, 1);
    assert_eq!(to_dev(&m1, &mm, page(6), 1).unwrap().1, 1);
    (mm, m0, m1)
}

/// `hmm2.snapshot`: a snapshot through device 0 reports, page by page, no
/// access, no VMA, the zero page, read-only, writable, its own private
/// page, and nothing for device 1's private page (another owner's page is
/// invisible); through device 1 the last two swap roles. Nothing is
/// faulted: the CPU page table is unchanged.
#[test]
fn snapshot() {
    let machine = machine();
    let (mm, m0, m1) = snapshot_layout(&machine);
    let before: Vec<_> = (0..7).map(|i| mm.softleaf_at(page(i))).collect();
    assert_eq!(
        snap(&m0, &mm, BASE, 7),
        [
            DmirrorProt::ERROR,
            DmirrorProt::ERROR,
            DmirrorProt::ZERO | DmirrorProt::READ,
            DmirrorProt::READ,
            DmirrorProt::WRITE,
            DmirrorProt::DEV_PRIVATE_LOCAL | DmirrorProt::WRITE,
            DmirrorProt::NONE,
        ]
    );
    assert_eq!(
        snap(&m1, &mm, BASE, 7)[5..],
        [
            DmirrorProt::NONE,
            DmirrorProt::DEV_PRIVATE_LOCAL | DmirrorProt::WRITE
        ]
    );
    let after: Vec<_> = (0..7).map(|i| mm.softleaf_at(page(i))).collect();
    assert_eq!(before, after);
    assert_eq!((machine.dev0.faults(), machine.dev1.faults()), (0, 0));
    // The uapi values themselves.
    assert_eq!(
        [
            DmirrorProt::ERROR.raw(),
            (DmirrorProt::ZERO | DmirrorProt::READ).raw(),
            (DmirrorProt::DEV_PRIVATE_LOCAL | DmirrorProt::WRITE).raw(),
            DmirrorProt::DEV_PRIVATE_REMOTE.raw(),
        ],
        [0xff, 0x11, 0x22, 0x30]
    );
    drop((m0, m1));
    teardown(mm, &[&machine.dev0, &machine.dev1]);
}

/// An extra to `hmm2.snapshot`: two devices that share an owner see each
/// other's private pages, as `DEV_PRIVATE_REMOTE`.
#[test]
fn snapshot_same_owner_reports_remote() {
    let machine = machine_with_owners(Owner(7), Owner(7));
    let (mm, m0, m1) = snapshot_layout(&machine);
    let s0 = snap(&m0, &mm, page(5), 2);
    let s1 = snap(&m1, &mm, page(5), 2);
    let (local, remote) = (
        DmirrorProt::DEV_PRIVATE_LOCAL | DmirrorProt::WRITE,
        DmirrorProt::DEV_PRIVATE_REMOTE | DmirrorProt::WRITE,
    );
    assert_eq!((s0, s1), (vec![local, remote], vec![remote, local]));
    drop((m0, m1));
    teardown(mm, &[&machine.dev0, &machine.dev1]);
}

/// `hmm2.double_map`: both devices read the same read-only memory (one
/// fault round each); after it moves to device 1, device 0 can still read
/// it — its stale entries are dropped and its fault brings the pages back
/// from device 1 (one `migrate_to_ram` per page).
#[test]
fn double_map() {
    let Machine { mem, dev0, dev1 } = machine();
    let n = 6;
    let mm = Mm::new(&mem, MmConfig::default());
    mm.mmap_write_lock()
        .mmap_anon(BASE, n * PAGE_SIZE, VmFlags::READ)
        .unwrap();
    for i in 0..n {
        ro_page(&mm, page(i), value(page(i)));
    }
    let (m0, m1) = (dev0.open(&mm), dev1.open(&mm));
    for m in [&m0, &m1] {
        let mut cmd = HmmDmirrorCmd::new(BASE, n);
        assert_eq!(m.read(&mm, &mut cmd).unwrap(), expected(BASE, n));
        assert_eq!((cmd.cpages, cmd.faults), (n, 1));
        assert_eq!(m.pt_entry(BASE).map(|e| e.1), Some(false), "read-only");
    }
    assert_eq!(to_dev(&m1, &mm, BASE, n).unwrap(), (expected(BASE, n), n));
    let mut cmd = HmmDmirrorCmd::new(BASE, n);
    assert_eq!(m0.read(&mm, &mut cmd).unwrap(), expected(BASE, n));
    assert_eq!((cmd.cpages, cmd.faults), (n, 1));
    assert_eq!((dev0.faults(), dev1.faults()), (0, n));
    assert!((0..n).all(|i| mm.device_private_offset_at(page(i)).is_none()));
    drop((m0, m1));
    teardown(mm, &[&dev0, &dev1]);
}

/// `hmm.migrate_anon_huge_empty`: an untouched, read-only, 2 MiB-aligned
/// range moves to the device as one order-9 device folio behind one
/// read-only device-private PMD, and reads as zeros.
#[test]
fn migrate_anon_huge_empty() {
    let Machine { mem, dev0, .. } = machine();
    let mm = Mm::new(&mem, MmConfig::default());
    mm.mmap_write_lock()
        .mmap_anon(BASE, 2 * PMD_SIZE, VmFlags::READ)
        .unwrap();
    let m = dev0.open(&mm);
    let (data, cpages) = to_dev(&m, &mm, BASE, 512).unwrap();
    assert_eq!((cpages, data), (512, vec![0; 512]));
    let e = Softleaf::from_pmd(mm.pmdp_get_lockless(BASE).unwrap());
    assert!(
        e.is_device_private() && !e.is_device_private_write(),
        "{e:?}"
    );
    assert_eq!(
        device_folio_order(&mm, BASE + 77 * PAGE_SIZE),
        Order::HPAGE_PMD
    );
    assert!(
        snap(&m, &mm, BASE, 512)
            .iter()
            .all(|p| *p == DmirrorProt::DEV_PRIVATE_LOCAL | DmirrorProt::READ | DmirrorProt::PMD)
    );
    assert_eq!(
        dev0.chunks().len(),
        2,
        "a chunk of 512-page blocks was added"
    );
    assert_eq!(mem.sys().nr_free(), SYS_PAGES);
    drop(m);
    teardown(mm, &[&dev0]);
}

/// `hmm.migrate_anon_huge_fault`: a written 2 MiB THP moves to the device
/// as one order-9 folio; one CPU access brings all of it back as a THP
/// (one `migrate_to_ram` call) with its data.
#[test]
fn migrate_anon_huge_fault() {
    let Machine { mem, dev0, .. } = machine();
    let mm = Mm::new(&mem, MmConfig::default());
    mm.mmap_write_lock()
        .mmap_anon(BASE, 2 * PMD_SIZE, VmFlags::RW)
        .unwrap();
    thp(&mm, BASE);
    let m = dev0.open(&mm);
    assert_eq!(
        to_dev(&m, &mm, BASE, 512).unwrap(),
        (expected(BASE, 512), 512)
    );
    assert_eq!(device_folio_order(&mm, BASE), Order::HPAGE_PMD);
    {
        let off = mm.device_private_offset_at(BASE).unwrap();
        let guard = mem.space().read();
        let f = AnyFolio::Dev(guard.device_private_offset_to_page(off).unwrap().folio());
        assert_eq!((f.refcount(), f.mapcount(), f.entire_mapcount()), (1, 1, 1));
    }
    for a in (BASE..BASE + PMD_SIZE).step_by(STEP) {
        assert_eq!(cpu_read(&mm, a), value(a));
    }
    assert_eq!(dev0.faults(), 1);
    assert!(mm.pmdp_get_lockless(BASE).unwrap().is_trans_huge());
    assert_eq!(mem.sys().nr_free(), SYS_PAGES - 512);
    drop(m);
    teardown(mm, &[&dev0]);
}

/// `hmm.migrate_partial_unmap_fault`: 2 MiB (a THP or 512 small pages)
/// moves to the device, then 1 MiB of it is unmapped at offset 0, 512 KiB
/// or 1 MiB; the unmapped part's device memory is released (a large device
/// folio only when its last mapping goes) and the rest faults back page by
/// page with its data.
#[test]
fn migrate_partial_unmap_fault() {
    for is_thp in [false, true] {
        for offset in [0, PMD_SIZE / 4, PMD_SIZE / 2] {
            let Machine { mem, dev0, .. } = machine();
            let mm = Mm::new(&mem, MmConfig::default());
            mm.mmap_write_lock()
                .mmap_anon(BASE, PMD_SIZE, VmFlags::RW)
                .unwrap();
            if is_thp {
                thp(&mm, BASE);
            } else {
                for i in 0..512 {
                    cpu_write(&mm, page(i), value(page(i)));
                }
            }
            let m = dev0.open(&mm);
            assert_eq!(to_dev(&m, &mm, BASE, 512).unwrap().1, 512);
            let (hole, half) = (BASE + offset, PMD_SIZE / 2);
            mm.mmap_write_lock().munmap(hole, half).unwrap();
            let in_use = dev0.nr_pages() - dev0.nr_free_pages();
            assert_eq!(
                in_use,
                if is_thp { 512 } else { 256 },
                "thp={is_thp} offset={offset:#x}"
            );
            for a in (BASE..BASE + PMD_SIZE).step_by(STEP) {
                if (hole..hole + half).contains(&a) {
                    assert!(mm.softleaf_at(a).is_none());
                    continue;
                }
                assert_eq!(cpu_read(&mm, a), value(a));
            }
            assert_eq!(dev0.faults(), 256);
            drop(m);
            teardown(mm, &[&dev0]);
        }
    }
}

/// `hmm.migrate_anon_huge_err`: with `FAIL_ALLOC` set, a THP moves to the
/// device as 512 single device pages (the flag is used up), and a CPU
/// access brings back just one page. Then, on a fresh THP that moved as one
/// order-9 device folio, `FAIL_ALLOC` makes `MIGRATE_TO_SYS` fall back to
/// 512 single system pages; the data survives both ways.
#[test]
fn migrate_anon_huge_err() {
    let Machine { mem, dev0, .. } = machine();
    let mm = Mm::new(&mem, MmConfig::default());
    mm.mmap_write_lock()
        .mmap_anon(BASE, 2 * PMD_SIZE, VmFlags::RW)
        .unwrap();
    thp(&mm, BASE);
    let m = dev0.open(&mm);
    m.set_flags(Dmirror::FLAG_FAIL_ALLOC);
    assert_eq!(
        to_dev(&m, &mm, BASE, 512).unwrap(),
        (expected(BASE, 512), 512)
    );
    assert_eq!(m.flags(), 0, "the flag is used up");
    assert!((0..512).all(|i| device_folio_order(&mm, page(i)) == Order::ZERO));
    assert_eq!(dev0.nr_free_folios(), 0, "no large device folio was taken");
    assert_eq!(cpu_read(&mm, page(2)), value(page(2)));
    assert_eq!(dev0.faults(), 1);
    assert!(
        mm.device_private_offset_at(page(3)).is_some(),
        "only one page came back"
    );

    // Unmap and start again with a THP.
    {
        let mut w = mm.mmap_write_lock();
        w.munmap(BASE, 2 * PMD_SIZE).unwrap();
        w.mmap_anon(BASE, 2 * PMD_SIZE, VmFlags::RW).unwrap();
        thp(&w, BASE);
    }
    assert_eq!(to_dev(&m, &mm, BASE, 512).unwrap().1, 512);
    assert_eq!(device_folio_order(&mm, BASE), Order::HPAGE_PMD);
    m.set_flags(Dmirror::FLAG_FAIL_ALLOC);
    let mut cmd = HmmDmirrorCmd::new(BASE, 512);
    m.migrate_to_sys(&mm, &mut cmd).unwrap();
    assert_eq!(cmd.cpages, 512);
    assert!(
        mm.pmdp_get_lockless(BASE).unwrap().is_table(),
        "small pages"
    );
    assert_eq!(mm.read_user(page(2)), Ok(value(page(2))));
    for a in (BASE..BASE + PMD_SIZE).step_by(STEP) {
        assert_eq!(mm.read_user(a), Ok(value(a)));
    }
    assert_eq!(dev0.faults(), 1, "no CPU fault was needed");
    drop(m);
    teardown(mm, &[&dev0]);
}

/// An extra, after `hmm.anon_read` and `hmm.anon_write`: the device writes
/// a buffer it has never seen (one fault round, the pages faulted in
/// writable), the CPU sees the data, and a device read of it needs no new
/// fault.
#[test]
fn anon_write_then_read() {
    let Machine { mem, dev0, .. } = machine();
    let n = 64;
    let mm = Mm::new(&mem, MmConfig::default());
    mm.mmap_write_lock()
        .mmap_anon(BASE, n * PAGE_SIZE, VmFlags::RW)
        .unwrap();
    let m = dev0.open(&mm);
    let mut cmd = HmmDmirrorCmd::new(BASE, n);
    m.write(&mm, &mut cmd, &expected(BASE, n)).unwrap();
    assert_eq!((cmd.cpages, cmd.faults), (n, 1));
    for i in 0..n {
        assert_eq!(mm.read_user(page(i)), Ok(value(page(i))));
    }
    let mut cmd = HmmDmirrorCmd::new(BASE, n);
    assert_eq!(m.read(&mm, &mut cmd).unwrap(), expected(BASE, n));
    assert_eq!((cmd.cpages, cmd.faults), (n, 0));
    drop(m);
    teardown(mm, &[&dev0]);
}

/// An extra: bad commands are refused with `EINVAL` and change nothing
/// (unaligned address, no pages, a range that wraps, the wrong address
/// space, a short write buffer).
#[test]
fn bad_commands_change_nothing() {
    let Machine { mem, dev0, .. } = machine();
    let mm = filled(&mem, 4);
    let m = dev0.open(&mm);
    let other = Mm::new(&mem, MmConfig::default());
    for (addr, npages) in [(BASE + 1, 1), (BASE, 0), (!(PAGE_SIZE - 1), 2)] {
        let mut cmd = HmmDmirrorCmd::new(addr, npages);
        assert_eq!(m.migrate_to_dev(&mm, &mut cmd), Err(Errno::EINVAL));
        assert_eq!(m.snapshot(&mm, &mut cmd), Err(Errno::EINVAL));
    }
    let mut cmd = HmmDmirrorCmd::new(BASE, 4);
    assert_eq!(m.read(&other, &mut cmd), Err(Errno::EINVAL));
    assert_eq!(m.write(&mm, &mut cmd, &[1, 2]), Err(Errno::EINVAL));
    assert_eq!((dev0.calloc(), m.nr_pt_entries()), (0, 0));
    assert_eq!(mem.sys().nr_free(), SYS_PAGES - 4);
    drop(m);
    teardown(mm, &[&dev0]);
}

/// An extra, after `dmirror_allocate_chunk()`: a device adds chunks as its
/// free lists run dry, up to its limit; past it pages simply stay in
/// system RAM and the command reports `ENOENT`.
#[test]
fn chunks_are_added_on_demand() {
    let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(SYS_PAGES)).unwrap();
    let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
    let config = DmirrorConfig {
        chunk_pages: PageCount::new(512),
        max_chunks: 2,
    };
    let dev = DmirrorDevice::new(&mem, Owner(1), config).unwrap();
    let mm = filled(&mem, 1100);
    let m = dev.open(&mm);
    assert_eq!(to_dev(&m, &mm, BASE, 1024).unwrap().1, 1024);
    assert_eq!(dev.chunks().len(), 2);
    assert_eq!(to_dev(&m, &mm, page(1024), 76), Err(Errno::ENOENT));
    assert!(mm.device_private_offset_at(page(1024)).is_none());
    for a in (BASE..page(1100)).step_by(STEP) {
        assert_eq!(cpu_read(&mm, a), value(a));
    }
    drop(m);
    teardown(mm, &[&dev]);
}

/// `hmm_range_fault()` on a non-present PMD that is neither a migration
/// entry nor the caller's device-private entry fills `HMM_PFN_ERROR`
/// (`hmm_vma_handle_absent_pmd()`), so a snapshot through device 0 of a THP
/// that lives on device 1 reads `ERROR` for all 512 pages — where a
/// foreign device page mapped by a PTE reads `NONE` (see [`snapshot`]).
/// Device 1 sees its own PMD.
#[test]
fn snapshot_of_a_thp_on_another_device_is_error() {
    let Machine { mem, dev0, dev1 } = machine();
    let mm = Mm::new(&mem, MmConfig::default());
    mm.mmap_write_lock()
        .mmap_anon(BASE, 2 * PMD_SIZE, VmFlags::RW)
        .unwrap();
    thp(&mm, BASE);
    let (m0, m1) = (dev0.open(&mm), dev1.open(&mm));
    assert_eq!(to_dev(&m1, &mm, BASE, 512).unwrap().1, 512);
    assert_eq!(device_folio_order(&mm, BASE), Order::HPAGE_PMD);
    assert!(
        snap(&m0, &mm, BASE, 512)
            .iter()
            .all(|p| *p == DmirrorProt::ERROR)
    );
    assert!(
        snap(&m1, &mm, BASE, 512)
            .iter()
            .all(|p| *p == DmirrorProt::DEV_PRIVATE_LOCAL | DmirrorProt::WRITE | DmirrorProt::PMD)
    );
    assert_eq!((dev0.faults(), dev1.faults()), (0, 0), "nothing faulted");
    drop((m0, m1));
    teardown(mm, &[&dev0, &dev1]);
}

/// `FAIL_ALLOC` toward system memory is used up by the first migrating
/// source, whatever its order (`dmirror_devmem_fault_alloc_and_copy()`):
/// for a small source `MIGRATE_TO_SYS` fails with `ENOMEM` and every page
/// stays on the device; the next command succeeds. A CPU fault on a small
/// device page with the flag set fails with `VM_FAULT_OOM` (`ENOMEM`) and
/// leaves the PTE as it was.
#[test]
fn fail_alloc_to_sys_with_small_pages_is_enomem() {
    let Machine { mem, dev0, .. } = machine();
    let mm = filled(&mem, 4);
    let m = dev0.open(&mm);
    assert_eq!(to_dev(&m, &mm, BASE, 4).unwrap().1, 4);
    let local = DmirrorProt::DEV_PRIVATE_LOCAL | DmirrorProt::WRITE;
    m.set_flags(Dmirror::FLAG_FAIL_ALLOC);
    let mut cmd = HmmDmirrorCmd::new(BASE, 4);
    assert_eq!(m.migrate_to_sys(&mm, &mut cmd), Err(Errno::ENOMEM));
    assert_eq!(m.flags(), 0, "the flag is used up");
    assert_eq!(snap(&m, &mm, BASE, 4), vec![local; 4], "nothing moved");
    assert_eq!(mem.sys().nr_free(), SYS_PAGES, "no system page kept");
    let mut cmd = HmmDmirrorCmd::new(BASE, 2);
    m.migrate_to_sys(&mm, &mut cmd).unwrap();
    assert_eq!(cmd.cpages, 2);
    // The CPU fault path: VM_FAULT_OOM, the device-private PTE unchanged.
    let before = mm.ptep_get_lockless(page(2));
    m.set_flags(Dmirror::FLAG_FAIL_ALLOC);
    assert_eq!(
        handle_mm_fault(&mm, page(2), FaultFlags::READ),
        Err(Errno::ENOMEM)
    );
    assert_eq!(m.flags(), 0);
    assert_eq!(mm.ptep_get_lockless(page(2)), before);
    assert_eq!(snap(&m, &mm, page(2), 2), vec![local; 2]);
    for i in 0..4 {
        assert_eq!(cpu_read(&mm, page(i)), value(page(i)));
    }
    drop(m);
    teardown(mm, &[&dev0]);
}

/// `dmirror_allocate_chunk()` pushes each page (or 512-page block) of a
/// new chunk on the head of its free list in address order, and
/// `dmirror_devmem_alloc_page()` pops the head: a fresh chunk hands out its
/// highest page first, and its highest 2 MiB block first.
#[test]
fn fresh_chunk_hands_out_its_highest_page_first() {
    let Machine { mem, dev0, .. } = machine();
    let mm = filled(&mem, 2);
    let m = dev0.open(&mm);
    assert_eq!(to_dev(&m, &mm, BASE, 1).unwrap().1, 1);
    let first = dev0.chunks()[0].first_offset();
    assert_eq!(
        mm.device_private_offset_at(BASE).unwrap().get(),
        first.get() + CHUNK_PAGES - 1
    );
    assert_eq!(to_dev(&m, &mm, page(1), 1).unwrap().1, 1);
    assert_eq!(
        mm.device_private_offset_at(page(1)).unwrap().get(),
        first.get() + CHUNK_PAGES - 2
    );
    drop(m);
    teardown(mm, &[&dev0]);

    let Machine { mem, dev0, .. } = machine();
    let mm = Mm::new(&mem, MmConfig::default());
    mm.mmap_write_lock()
        .mmap_anon(BASE, PMD_SIZE, VmFlags::RW)
        .unwrap();
    thp(&mm, BASE);
    let m = dev0.open(&mm);
    assert_eq!(to_dev(&m, &mm, BASE, 512).unwrap().1, 512);
    // The device's first chunk holds single pages: a chunk of blocks was
    // added for the THP.
    let chunks = dev0.chunks();
    assert_eq!(chunks.len(), 2);
    let chunk = chunks[1].first_offset().get();
    let blocks: Vec<u64> = (chunk..chunk + CHUNK_PAGES)
        .filter(|o| o % 512 == 0 && o + 512 <= chunk + CHUNK_PAGES)
        .collect();
    assert!(blocks.len() >= 2, "the chunk holds several blocks");
    assert_eq!(
        mm.device_private_offset_at(BASE).unwrap().get(),
        *blocks.last().unwrap()
    );
    drop(m);
    teardown(mm, &[&dev0]);
}
