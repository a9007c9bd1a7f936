//! Device migration benchmarks: one PMD-sized THP moved as one order-9
//! device folio against 512 order-0 pages moved one by one, each to the
//! device and back, in one group so results read as ratios.
//!
//! Group `migrate_vma` (512 pages per iteration, each a full round trip
//! through the dmirror driver, `devpriv_migrate::test_hmm`):
//!
//! - `order9_round_trip`: `HMM_DMIRROR_MIGRATE_TO_DEV` of a PMD-mapped
//!   THP (one `MIGRATE_PFN_COMPOUND` entry, a device-private PMD), then
//!   `HMM_DMIRROR_MIGRATE_TO_SYS` (one order-9 system folio, a huge PMD
//!   again);
//! - `order0x512_round_trip`: the same 2 MiB as 512 PTE-mapped order-0
//!   folios, moved as 512 entries each way;
//! - `order9_fault_back` / `order0x512_fault_back`: to the device as
//!   above, back by CPU faults (one PMD fault against 512 PTE faults).
//! - `order9_round_trip_copy` / `order0x512_round_trip_copy`: the round
//!   trip plus a real `memcpy` of the 2 MiB each way (system buffer to a
//!   device buffer, and back), in the same iteration: the model's driver
//!   copies one data word per page, so this is the whole cost of
//!   `migrate_vma_setup()` → copy → `migrate_vma_pages()` →
//!   `migrate_vma_finalize()`, both ways, with the bytes a real driver
//!   moves;
//! - `memcpy_2MiB_both_ways`: the copy alone (4 MiB), the physical limit
//!   the `_copy` rows are read against.
//!
//! Run: `cargo bench -p devpriv-benches --bench migrate`.

#![forbid(unsafe_code)]

#[path = "common.rs"]
mod common;
use common::configure;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use devpriv_core::{Order, PAGE_SIZE, PageCount, Pfn};
use devpriv_drivers::test_hmm::{Dmirror, DmirrorConfig, DmirrorDevice, HmmDmirrorCmd};
use devpriv_migrate::{
    FaultFlags, Memory, Mm, MmConfig, PMD_SIZE, SystemMemory, VmFlags, handle_mm_fault,
};
use devpriv_pagemap::{DevicePrivateSpace, Owner};
use std::hint::black_box;
use std::sync::Arc;

const BASE: u64 = 0x7f00_0000_0000;

fn setup(thp: bool) -> (DmirrorDevice, Dmirror, Arc<Mm>) {
    let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(2048)).unwrap();
    let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
    let config = DmirrorConfig::with_chunk_pages(PageCount::new(1024));
    let dev = DmirrorDevice::new(&mem, Owner(1), config).unwrap();
    let mm = Mm::new(&mem, MmConfig::default());
    mm.mmap_write_lock()
        .mmap_anon(BASE, PMD_SIZE, VmFlags::RW)
        .unwrap();
    if thp {
        let f = mem.sys().alloc_folio(Order::HPAGE_PMD).unwrap();
        mm.map_folio_pmd(BASE, f, true).unwrap();
        f.put().unwrap();
    } else {
        for i in 0..512 {
            let f = mem.sys().alloc_folio(Order::ZERO).unwrap();
            mm.map_folio_ptes(BASE + i * PAGE_SIZE, f, true).unwrap();
            f.put().unwrap();
        }
    }
    for i in 0..512 {
        mm.write_user(BASE + i * PAGE_SIZE, i).unwrap();
    }
    let mirror = dev.open(&mm);
    (dev, mirror, mm)
}

fn to_dev(m: &Dmirror, mm: &Arc<Mm>) {
    let mut cmd = HmmDmirrorCmd::new(BASE, 512);
    m.migrate_to_dev(mm, &mut cmd).unwrap();
    assert_eq!(cmd.cpages, 512);
}

fn round_trip(m: &Dmirror, mm: &Arc<Mm>) {
    to_dev(m, mm);
    let mut cmd = HmmDmirrorCmd::new(BASE, 512);
    m.migrate_to_sys(mm, &mut cmd).unwrap();
    assert_eq!(cmd.cpages, 512);
}

fn fault_back(m: &Dmirror, mm: &Arc<Mm>) {
    to_dev(m, mm);
    for i in 0..512 {
        let a = BASE + i * PAGE_SIZE;
        if mm.read_user(a).is_err() {
            handle_mm_fault(mm, a, FaultFlags::READ).unwrap();
        }
    }
}

/// The bytes a real driver moves for one 2 MiB range, to the device and
/// back (`copy_page()`/DMA in the kernel; `memcpy` here).
fn copy_both_ways(sys: &mut [u8], dev: &mut [u8]) {
    dev.copy_from_slice(black_box(&*sys));
    sys.copy_from_slice(black_box(&*dev));
}

fn bench_migrate(c: &mut Criterion) {
    let mut g = c.benchmark_group("migrate_vma");
    configure(&mut g);
    g.throughput(Throughput::Elements(512));
    let bytes = usize::try_from(PMD_SIZE).expect("2 MiB fits");
    // Touched up front, so no iteration pays page faults.
    let (mut sys_buf, mut dev_buf) = (vec![1u8; bytes], vec![2u8; bytes]);
    g.bench_function("memcpy_2MiB_both_ways", |b| {
        b.iter(|| copy_both_ways(&mut sys_buf, &mut dev_buf));
    });
    for (name, thp) in [("order9", true), ("order0x512", false)] {
        let (dev, mirror, mm) = setup(thp);
        g.bench_function(format!("{name}_round_trip"), |b| {
            b.iter(|| round_trip(&mirror, &mm));
        });
        g.bench_function(format!("{name}_round_trip_copy"), |b| {
            b.iter(|| {
                round_trip(&mirror, &mm);
                copy_both_ways(&mut sys_buf, &mut dev_buf);
            });
        });
        g.bench_function(format!("{name}_fault_back"), |b| {
            b.iter(|| fault_back(&mirror, &mm));
        });
        // The state after every iteration is the starting state.
        assert_eq!(mm.read_user(BASE + 7 * PAGE_SIZE), Ok(7));
        assert_eq!(
            mm.pmdp_get_lockless(BASE).unwrap().is_trans_huge(),
            thp,
            "the mapping shape survives the round trips"
        );
        dev.check_idle().unwrap();
    }
    g.finish();
}

criterion_group!(benches, bench_migrate);
criterion_main!(benches);
