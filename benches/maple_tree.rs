//! `RangeTree` side by side with the kernel's own maple tree
//! (`lib/maple_tree.c`, built by `devpriv-kernel-oracle` at `-O2` in the
//! production configuration), in the same run, on the same layouts as
//! `range_tree.rs` and `pagemap.rs`. Ratios against the kernel are the
//! point; results and how to read them: `docs/perf.md`.
//!
//! Groups (named after the kernel operations; `maple_tree/...` is the
//! kernel's tree, `RangeTree/...` the model):
//!
//! - `kernel_mtree_load`: point lookups over `n` ranges of 512 keys with
//!   gaps of 512 (random or sequential keys, 4096 per iteration).
//!   `RangeTree` amortises one read-side section over the batch (as
//!   `range_tree.rs`); `RangeTree_guard_each` enters one per lookup, as
//!   `mtree_load()` takes `rcu_read_lock()` inside every call.
//! - `kernel_mtree_alloc_range`: one `mtree_alloc_range()` of 16–64 keys
//!   (lowest fit in the whole space) plus `mtree_erase()`:
//!   - `gapped/n`: in the lookup layout (the first gap fits);
//!   - `fragmented/L`: in `range_tree.rs`'s fragmented layout of `L` live
//!     ranges separated by holes too small for any request, so a first fit
//!     must skip every hole.
//! - `kernel_device_private_offset_to_page`: offset → `struct page` over
//!   `n` pagemaps laid out as in `pagemap.rs` (section-aligned): `space`
//!   (devpriv's section index), `space_tree` (devpriv's `mtree_load()`
//!   path, through `RangeTree`), and `maple_tree`: the v6 proposal's path,
//!   the kernel's `mtree_load()` of the offset, then the pagemap's pages
//!   array at `offset - first`.
//!
//! Without kernel source (`ci/kernel-src.sh`), the kernel's side is skipped
//! with one line and only `RangeTree` is measured.
//!
//! Profiling: `DEVPRIV_PROFILE=<impl>/<layout>/<n>` (`impl` is `RangeTree`
//! or `maple_tree`, `layout` `gapped` or `fragmented`) skips criterion and
//! runs `DEVPRIV_PROFILE_ITERS` (default 100 000) alloc+erase pairs in
//! `profile_loop`, for `valgrind --tool=callgrind
//! --toggle-collect='*profile_loop*'` (instructions per pair, with no setup
//! in the count; `docs/perf.md`).

#[path = "common.rs"]
mod common;
use common::configure;
#[path = "range_layouts.rs"]
mod range_layouts;
use range_layouts::{LIVE_SIZES, QUERIES, SPAN, layout_sizes, queries, range_first, request_sizes};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group};
use devpriv_core::random::SplitMix64;
use devpriv_core::{DevicePrivateOffset, PageCount};
use devpriv_kernel_oracle::MapleTree;
use devpriv_pagemap::{
    DevPagemap, DevicePrivateSpace, NoopOps, Owner, Packing, Page, PagemapParams, SpaceConfig,
};
use devpriv_rangetree::RangeTree;
use std::hint::black_box;
use std::ops::Deref;
use std::ptr;
use std::sync::{Arc, Once};

/// Range (and pagemap) counts.
const SIZES: [u64; 4] = [1, 64, 1024, 16384];

/// The kernel's tree, or `None` (with one line saying why) without kernel
/// source.
fn kernel_tree() -> Option<MapleTree> {
    static SAID: Once = Once::new();
    match MapleTree::new() {
        Ok(t) => {
            SAID.call_once(|| {
                eprintln!(
                    "maple_tree: kernel tree from {} ({})",
                    devpriv_kernel_oracle::available().unwrap_or("?"),
                    devpriv_kernel_oracle::flavour()
                );
            });
            Some(t)
        }
        Err(why) => {
            SAID.call_once(|| {
                eprintln!("maple_tree: skipped the kernel's side: {why}; measuring RangeTree only");
            });
            None
        }
    }
}

/// The lookup layout of `n` ranges in both trees (value = range index).
fn load_layout(n: u64) -> (RangeTree<u64>, Option<MapleTree>) {
    let tree = RangeTree::new();
    let mut kernel = kernel_tree();
    for i in 0..n {
        let range = range_first(i)..=range_first(i) + SPAN - 1;
        tree.insert_range(range.clone(), i)
            .expect("layout ranges are disjoint");
        if let Some(k) = &mut kernel {
            k.insert_range(range, i)
                .expect("layout ranges are disjoint");
        }
    }
    (tree, kernel)
}

fn bench_load(c: &mut Criterion) {
    let mut group = c.benchmark_group("kernel_mtree_load");
    configure(&mut group);
    for n in SIZES {
        let (tree, kernel) = load_layout(n);
        for (pattern, random) in [("random", true), ("sequential", false)] {
            let qs = queries(n, random);
            group.throughput(Throughput::Elements(qs.len() as u64));

            group.bench_with_input(
                BenchmarkId::new(format!("RangeTree/{pattern}"), n),
                &qs,
                |b, qs| {
                    b.iter(|| {
                        // One read-side section for the whole batch.
                        let g = tree.read();
                        let mut sum = 0u64;
                        for &q in qs {
                            if let Some((_, v)) = g.load(black_box(q)) {
                                sum = sum.wrapping_add(*v);
                            }
                        }
                        black_box(sum)
                    });
                },
            );

            group.bench_with_input(
                BenchmarkId::new(format!("RangeTree_guard_each/{pattern}"), n),
                &qs,
                |b, qs| {
                    b.iter(|| {
                        let mut sum = 0u64;
                        for &q in qs {
                            // A read-side section per lookup, as mtree_load().
                            if let Some((_, v)) = tree.read().load(black_box(q)) {
                                sum = sum.wrapping_add(*v);
                            }
                        }
                        black_box(sum)
                    });
                },
            );

            let Some(kernel) = &kernel else { continue };
            group.bench_with_input(
                BenchmarkId::new(format!("maple_tree/{pattern}"), n),
                &qs,
                |b, qs| {
                    b.iter(|| {
                        let mut sum = 0u64;
                        for &q in qs {
                            if let Some(v) = kernel.load(black_box(q)) {
                                sum = sum.wrapping_add(v);
                            }
                        }
                        black_box(sum)
                    });
                },
            );
        }
    }
    group.finish();
}

/// The fragmented layout of `live` ranges in both trees: `2 * live`
/// lowest-fit allocations packed from key 0, then every odd one erased.
fn fragmented_layout(live: u64) -> (RangeTree<u64>, Option<MapleTree>) {
    let sizes = layout_sizes(live);
    let tree = RangeTree::new();
    let mut kernel = kernel_tree();
    let mut starts = Vec::with_capacity(sizes.len());
    for (id, &size) in (0u64..).zip(&sizes) {
        let start = tree
            .alloc_range(size, 1, 0..=u64::MAX, id)
            .expect("empty space");
        if let Some(k) = &mut kernel {
            let same = k.alloc_range(size, 0..=u64::MAX, id);
            assert_eq!(same, Ok(start), "both trees pack from key 0");
        }
        starts.push(start);
    }
    for &start in starts.iter().skip(1).step_by(2) {
        tree.erase(start).expect("allocated above");
        if let Some(k) = &mut kernel {
            k.erase(start).expect("allocated above");
        }
    }
    assert_eq!(tree.len(), usize::try_from(live).expect("fits"));
    (tree, kernel)
}

/// `RangeTree` and, if present, the kernel's tree, each doing one
/// alloc+erase per iteration with the cycled request sizes.
fn bench_alloc_pair(
    group: &mut BenchmarkGroup<'_, WallTime>,
    layout: &str,
    n: u64,
    tree: &RangeTree<u64>,
    kernel: Option<&mut MapleTree>,
) {
    let requests = request_sizes();
    let len = tree.len();
    group.bench_function(BenchmarkId::new(format!("RangeTree/{layout}"), n), |b| {
        let mut next = requests.iter().copied().cycle();
        b.iter(|| {
            let size = next.next().expect("cycle is endless");
            let start = tree
                .alloc_range(black_box(size), 1, 0..=u64::MAX, u64::MAX >> 1)
                .expect("free tail");
            black_box(tree.erase(start))
        });
    });
    assert_eq!(tree.len(), len);
    let Some(kernel) = kernel else { return };
    group.bench_function(BenchmarkId::new(format!("maple_tree/{layout}"), n), |b| {
        let mut next = requests.iter().copied().cycle();
        b.iter(|| {
            let size = next.next().expect("cycle is endless");
            let start = kernel
                .alloc_range(black_box(size), 0..=u64::MAX, u64::MAX >> 1)
                .expect("free tail");
            black_box(kernel.erase(start))
        });
    });
    assert_eq!(kernel.entries().len(), len);
}

fn bench_alloc(c: &mut Criterion) {
    let mut group = c.benchmark_group("kernel_mtree_alloc_range");
    configure(&mut group);
    group.throughput(Throughput::Elements(1));
    for n in SIZES {
        let (tree, mut kernel) = load_layout(n);
        bench_alloc_pair(&mut group, "gapped", n, &tree, kernel.as_mut());
    }
    for live in LIVE_SIZES {
        let (tree, mut kernel) = fragmented_layout(live);
        bench_alloc_pair(&mut group, "fragmented", live, &tree, kernel.as_mut());
    }
    group.finish();
}

/// `n` pagemaps as in `pagemap.rs`: section-aligned, 512 pages each up to
/// 1024 pagemaps, 64 pages each at 16384.
fn pagemaps(n: u64) -> (DevicePrivateSpace, Vec<Arc<DevPagemap>>) {
    let space = DevicePrivateSpace::with_config(SpaceConfig {
        packing: Packing::SectionAligned,
        ..SpaceConfig::default()
    });
    let per = if n <= 1024 { 512 } else { 64 };
    let pms = (0..n)
        .map(|_| {
            // No page is ever allocated, so the driver does nothing.
            let params = PagemapParams::private(PageCount::new(per), Owner(1), Arc::new(NoopOps));
            space
                .memremap_device_private_pagemap(params, 0)
                .expect("the space has room")
        })
        .collect();
    (space, pms)
}

/// Offsets inside the pagemaps: `random` (pagemap and page uniform) or
/// sequential (one page per pagemap, walking them in order).
fn pagemap_offsets(pms: &[Arc<DevPagemap>], random: bool) -> Vec<u64> {
    let n = pms.len() as u64;
    let mut rng = SplitMix64::new(0x5EED_0000 ^ n ^ u64::from(random));
    let mut i = 0;
    (0..QUERIES)
        .map(|_| {
            let pm = if random {
                rng.between(0, n - 1)
            } else {
                let r = i;
                i = (i + 1) % n;
                r
            };
            let pm = &pms[usize::try_from(pm).expect("fits")];
            pm.first_offset().get() + rng.between(0, pm.pages().len() as u64 - 1)
        })
        .collect()
}

/// One batch: the sum of the pages' addresses, plus their flags words if
/// `TOUCH` (the page's cache line is read); as in `pagemap.rs`.
#[inline(always)]
fn batch<const TOUCH: bool, P: Deref<Target = Page>>(
    qs: &[u64],
    mut lookup: impl FnMut(u64) -> Option<P>,
) -> u64 {
    let mut sum = 0u64;
    for &q in qs {
        if let Some(p) = lookup(black_box(q)) {
            let page: &Page = &p;
            sum = sum.wrapping_add(ptr::from_ref(page).addr() as u64);
            if TOUCH {
                sum = sum.wrapping_add(page.flags());
            }
        }
    }
    sum
}

fn bench_offset_to_page_impls<const TOUCH: bool>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    space: &DevicePrivateSpace,
    kernel: Option<&MapleTree>,
    slices: &[(u64, &[Page])],
    pattern: &str,
    qs: &[u64],
) {
    let n = slices.len();
    let touch = if TOUCH { "touch" } else { "notouch" };
    let id = |imp: &str| BenchmarkId::new(format!("{imp}/{pattern}/{touch}"), n);
    group.bench_function(id("space"), |b| {
        b.iter(|| {
            let g = space.read();
            black_box(batch::<TOUCH, _>(qs, |o| {
                g.device_private_offset_to_page(DevicePrivateOffset::new(o))
            }))
        });
    });
    group.bench_function(id("space_tree"), |b| {
        b.iter(|| {
            let g = space.read();
            black_box(batch::<TOUCH, _>(qs, |o| {
                g.device_private_offset_to_page_tree(DevicePrivateOffset::new(o))
            }))
        });
    });
    let Some(kernel) = kernel else { return };
    group.bench_function(id("maple_tree"), |b| {
        b.iter(|| {
            black_box(batch::<TOUCH, _>(qs, |o| {
                // pgmap = mtree_load(&device_private_pgmap_tree, offset);
                // then &pgmap->pages[offset - first].
                let i = kernel.load(o)?;
                let (first, pages) = slices[usize::try_from(i).ok()?];
                pages.get(usize::try_from(o - first).ok()?)
            }))
        });
    });
}

fn bench_offset_to_page(c: &mut Criterion) {
    let mut group = c.benchmark_group("kernel_device_private_offset_to_page");
    configure(&mut group);
    group.throughput(Throughput::Elements(QUERIES as u64));
    for n in SIZES {
        let (space, pms) = pagemaps(n);
        let slices: Vec<(u64, &[Page])> = pms
            .iter()
            .map(|pm| (pm.first_offset().get(), pm.pages()))
            .collect();
        // The kernel's tree holds each pagemap's exact range, as
        // memremap_device_private_pagemap() stores it (value: its index).
        let mut kernel = kernel_tree();
        if let Some(k) = &mut kernel {
            for (i, &(first, pages)) in (0u64..).zip(&slices) {
                k.insert_range(first..=first + pages.len() as u64 - 1, i)
                    .expect("pagemaps are disjoint");
            }
        }
        for (pattern, random) in [("random", true), ("sequential", false)] {
            let qs = pagemap_offsets(&pms, random);
            let k = kernel.as_ref();
            bench_offset_to_page_impls::<false>(&mut group, &space, k, &slices, pattern, &qs);
            if random {
                bench_offset_to_page_impls::<true>(&mut group, &space, k, &slices, pattern, &qs);
            }
        }
    }
    group.finish();
}

/// The alloc+erase pairs of `bench_alloc_pair`, `iters` times, for a
/// profiler (module docs).
#[inline(never)]
fn profile_loop(iters: u64, mut pair: impl FnMut(u64) -> u64) -> u64 {
    let requests = request_sizes();
    let mut sum = 0u64;
    for (_, &size) in (0..iters).zip(requests.iter().cycle()) {
        sum = sum.wrapping_add(pair(black_box(size)));
    }
    sum
}

/// `DEVPRIV_PROFILE=<impl>/<layout>/<n>` (module docs).
fn profile(spec: &str) {
    let iters = std::env::var("DEVPRIV_PROFILE_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let parts: Vec<&str> = spec.split('/').collect();
    let [imp, layout, n] = parts[..] else {
        panic!("DEVPRIV_PROFILE={spec}: want <impl>/<layout>/<n>");
    };
    let n: u64 = n.parse().expect("a count");
    let (tree, kernel) = match layout {
        "gapped" => load_layout(n),
        "fragmented" => fragmented_layout(n),
        _ => panic!("layout {layout}: gapped or fragmented"),
    };
    let sum = match imp {
        "RangeTree" => profile_loop(iters, |size| {
            let start = tree
                .alloc_range(size, 1, 0..=u64::MAX, u64::MAX >> 1)
                .expect("free tail");
            tree.erase(start).unwrap_or(0)
        }),
        "maple_tree" => {
            let mut k = kernel.expect("the kernel's tree (ci/kernel-src.sh)");
            profile_loop(iters, |size| {
                let start = k
                    .alloc_range(size, 0..=u64::MAX, u64::MAX >> 1)
                    .expect("free tail");
                k.erase(start).unwrap_or(0)
            })
        }
        _ => panic!("impl {imp}: RangeTree or maple_tree"),
    };
    eprintln!("profile {spec}: {iters} alloc+erase pairs (sum {sum})");
}

criterion_group!(benches, bench_load, bench_alloc, bench_offset_to_page);

fn main() {
    if let Ok(spec) = std::env::var("DEVPRIV_PROFILE") {
        profile(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
