//! `page_vma_mapped_walk()` benchmarks: the rmap walk over a PTE-mapped
//! order-9 folio, against a plain scan of the same 512 entries, in one
//! group so results read as ratios.
//!
//! Group `page_vma_mapped_walk` (512 elements per iteration):
//!
//! - `walk`: `PageVmaMappedWalk::for_folio` + `walk()` until it returns
//!   `false`, counting the 512 matches (non-`SYNC`: lockless `map_pte`, the
//!   PTE lock taken once and held across consecutive matches);
//! - `walk_sync`: the same with `PVMW_SYNC`;
//! - `walk_device_private`: a device-private target over 512
//!   `SWP_DEVICE_WRITE` entries (softleaf decode on every entry);
//! - `plain_scan` (baseline): lock the PTE table once and read the 512
//!   entries through `PteGuard::get_at`, counting present entries whose pfn
//!   lies in the folio — the least an rmap check of these PTEs can do;
//! - `plain_array` (informative): the same test over a `Vec<u64>` copy of
//!   the entries, with no page-table model at all.
//!
//! Target (architecture.md): `walk` at most 5x `plain_scan`.
//!
//! Run: `cargo bench -p devpriv-benches --bench walk`.

#![forbid(unsafe_code)]

#[path = "common.rs"]
mod common;
use common::configure;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use devpriv_core::{DevicePrivateOffset, Order, PAGE_SIZE, PageCount, Pfn};
use devpriv_migrate::swapops::make_device_private_entry;
use devpriv_migrate::{
    Memory, Mm, MmConfig, PMD_SIZE, PageVmaMappedWalk, Pte, PvmwFlags, SystemMemory, VmFlags,
};
use devpriv_pagemap::DevicePrivateSpace;
use std::hint::black_box;
use std::sync::Arc;

const BASE: u64 = 0x7f00_0000_0000;

fn count(mut w: PageVmaMappedWalk<'_>) -> u64 {
    let mut n = 0;
    while w.walk() {
        n += 1;
    }
    n
}

fn bench_walk(c: &mut Criterion) {
    let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(1024)).unwrap();
    let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
    let mm = Mm::new(&mem, MmConfig::default());
    mm.mmap_write_lock()
        .mmap_anon(BASE, 2 * PMD_SIZE, VmFlags::RW)
        .unwrap();
    let folio = mem.sys().alloc_folio(Order::HPAGE_PMD).unwrap();
    mm.map_folio_ptes(BASE, folio, true).unwrap();
    // A second table of device-private entries.
    let dp_base = BASE + PMD_SIZE;
    let first = DevicePrivateOffset::new(0x4000);
    for i in 0..512 {
        let off = first.checked_add(PageCount::new(i)).unwrap();
        let e = make_device_private_entry(true, off, mm.paging()).unwrap();
        mm.set_pte(dp_base + i * PAGE_SIZE, Pte::from_swp_entry(e).unwrap())
            .unwrap();
    }
    let vma = &mm.vmas()[0];
    let lo = folio.pfn();
    let nr = folio.nr_pages().get();
    let raw: Vec<u64> = (0..512)
        .map(|i| mm.ptep_get_lockless(BASE + i * PAGE_SIZE).unwrap().raw())
        .collect();

    let mut group = c.benchmark_group("page_vma_mapped_walk");
    configure(&mut group);
    group.throughput(Throughput::Elements(512));
    group.bench_function("walk", |b| {
        b.iter(|| {
            let w = PageVmaMappedWalk::for_folio(&mm, vma, black_box(folio), PvmwFlags::NONE);
            assert_eq!(count(w.unwrap()), 512);
        });
    });
    group.bench_function("walk_sync", |b| {
        b.iter(|| {
            let w = PageVmaMappedWalk::for_folio(&mm, vma, black_box(folio), PvmwFlags::SYNC);
            assert_eq!(count(w.unwrap()), 512);
        });
    });
    group.bench_function("walk_device_private", |b| {
        b.iter(|| {
            let w = PageVmaMappedWalk::for_device_private(
                &mm,
                vma,
                black_box(first),
                PageCount::new(512),
                vma.linear_page_index(dp_base),
                PvmwFlags::NONE,
            );
            assert_eq!(count(w.unwrap()), 512);
        });
    });
    group.bench_function("plain_scan", |b| {
        b.iter(|| {
            let g = mm.pte_offset_map_lock(black_box(BASE)).unwrap();
            let mut n = 0u64;
            for i in 0..512 {
                let pte = g.get_at(BASE + i * PAGE_SIZE).unwrap();
                if pte.is_present()
                    && pte
                        .pfn()
                        .checked_offset_from(lo)
                        .is_some_and(|d| d.get() < nr)
                {
                    n += 1;
                }
            }
            assert_eq!(n, 512);
        });
    });
    group.bench_function("plain_array", |b| {
        b.iter(|| {
            let n = black_box(&raw)
                .iter()
                .map(|&v| Pte::from_raw(v))
                .filter(|p| {
                    p.is_present()
                        && p.pfn()
                            .checked_offset_from(lo)
                            .is_some_and(|d| d.get() < nr)
                })
                .count();
            assert_eq!(n, 512);
        });
    });
    group.finish();
}

criterion_group!(benches, bench_walk);
criterion_main!(benches);
