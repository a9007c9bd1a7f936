//! Folio benchmarks: allocating and freeing device-private folios
//! (`zone_device_folio_init()` + `folio_unlock()` + `folio_put()` →
//! `free_zone_device_folio()`), with baselines in the same group so results
//! read as ratios.
//!
//! Groups (named after the kernel functions they model):
//!
//! - `zone_device_folio_init`: one init + free of an order-0, order-4 and
//!   order-9 folio, always at the same place, so every round reuses the
//!   metadata the last one left. Implementations:
//!   - `selective`: the merged reset (`ReinitPolicy::AtAlloc`): per page,
//!     clear the low flags byte and `_nr_pages`, rewrite `mapping`, the
//!     pgmap and `share`;
//!   - `memset`: the alternative Matt Brost rejected for the GPU fault
//!     path: overwrite all eight words of every page (and restore the
//!     zone/node bits, `PG_reserved`, the pgmap and `_mapcount`, as
//!     `__init_zone_device_page()` does), then the rest of the init with no
//!     per-page reset (`ReinitPolicy::None`'s body).
//! - `zone_device_folio_init_vs_memset`: order-9 init + free (`selective`)
//!   against `memset_512_pages`, a plain `memset` of 512 page-sized
//!   (64-byte) structs: the cost of merely touching the struct pages.
//!
//! Results and how to read them: `docs/perf.md`.

#![forbid(unsafe_code)]

#[path = "common.rs"]
mod common;
use common::configure;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use devpriv_core::{Order, PageCount};
use devpriv_pagemap::mm_types::word;
use devpriv_pagemap::page_flags::{PG_RESERVED, ZONE_DEVICE, page_cpupid_reset_last, page_links};
use devpriv_pagemap::{
    DevPagemap, DevicePrivateSpace, Folio, NoopOps, Owner, PageRef, PagemapParams, ReinitPolicy,
    folio_put, zone_device_folio_init,
};
use std::hint::black_box;
use std::sync::Arc;

/// Orders measured in `zone_device_folio_init`.
const ORDERS: [u32; 3] = [0, 4, 9];

fn pagemap(space: &DevicePrivateSpace, policy: ReinitPolicy) -> Arc<DevPagemap> {
    let params = PagemapParams::private(PageCount::new(512), Owner(1), Arc::new(NoopOps));
    let pm = space.memremap_device_private_pagemap(params, 0).unwrap();
    pm.set_reinit_policy(policy);
    pm
}

/// Init + free with the kernel's selective reset.
fn selective(pm: &DevPagemap, order: Order) {
    let head = Folio::from_head(PageRef::new(pm, 0).unwrap());
    let f = zone_device_folio_init(black_box(head), pm, order).unwrap();
    f.unlock();
    folio_put(f);
}

/// Init + free with a full rewrite of every page struct instead.
fn memset(pm: &DevPagemap, order: Order) {
    let n = 1usize << order.get();
    let mut fresh = [0u64; 8];
    fresh[word::FLAGS] = page_cpupid_reset_last(page_links(ZONE_DEVICE, 0)) | 1 << PG_RESERVED;
    fresh[word::COMPOUND_HEAD] = pm.cookie().get();
    fresh[word::COUNTS] = u64::from(u32::MAX);
    for p in &pm.pages()[..n] {
        for (i, &v) in fresh.iter().enumerate() {
            p.set_raw(i, v);
        }
    }
    let head = Folio::from_head(PageRef::new(pm, 0).unwrap());
    let f = zone_device_folio_init(black_box(head), pm, order).unwrap();
    f.unlock();
    folio_put(f);
}

fn bench_init(c: &mut Criterion) {
    let space = DevicePrivateSpace::new();
    let sel = pagemap(&space, ReinitPolicy::AtAlloc);
    let full = pagemap(&space, ReinitPolicy::None);
    let mut group = c.benchmark_group("zone_device_folio_init");
    configure(&mut group);
    for o in ORDERS {
        let order = Order::new(o).unwrap();
        group.throughput(Throughput::Elements(1 << o));
        group.bench_with_input(BenchmarkId::new("selective", o), &order, |b, &order| {
            b.iter(|| selective(&sel, order));
        });
        group.bench_with_input(BenchmarkId::new("memset", o), &order, |b, &order| {
            b.iter(|| memset(&full, order));
        });
    }
    group.finish();
}

fn bench_vs_memset(c: &mut Criterion) {
    let space = DevicePrivateSpace::new();
    let sel = pagemap(&space, ReinitPolicy::AtAlloc);
    let order = Order::HPAGE_PMD;
    let mut buf = vec![[0u64; 8]; 512];
    let mut group = c.benchmark_group("zone_device_folio_init_vs_memset");
    configure(&mut group);
    group.throughput(Throughput::Elements(512));
    group.bench_function("selective_order9", |b| {
        b.iter(|| selective(&sel, order));
    });
    group.bench_function("memset_512_pages", |b| {
        b.iter(|| {
            black_box(&mut buf).fill([0; 8]);
            black_box(&buf);
        });
    });
    group.finish();
}

criterion_group!(benches, bench_init, bench_vs_memset);
criterion_main!(benches);
