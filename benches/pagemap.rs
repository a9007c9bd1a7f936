//! Pagemap benchmarks: device-private offset → page lookups and
//! `memremap_device_private_pagemap()`, each against baselines measured in
//! the same group, so results can be read as ratios.
//!
//! Groups (named after the kernel functions they model):
//!
//! - `device_private_offset_to_page`: point lookups over `n` pagemaps, with
//!   random or sequential offsets, either touching the page found (reading
//!   `page->flags`) or not (using only its address). Implementations:
//!   - `space`: `SpaceReadGuard::device_private_offset_to_page` (the section
//!     index), one read guard per batch;
//!   - `space_tree`: `device_private_offset_to_page_tree`, the kernel's
//!     `mtree_load()` path, informative;
//!   - `rangemap_index`: `rangemap::RangeMap` from offset range to pagemap
//!     index, then that pagemap's pages array;
//!   - `sorted_vec`: binary search (`partition_point`) over a sorted
//!     `Vec<(first, nr, index)>`, then the pages array;
//!   - `vmemmap`: one pagemap holding all `n * P` pages, indexed as
//!     `pages[offset - first]`: the `base + offset` arithmetic that
//!     `pfn_to_page()` does with a virtual memmap;
//!   - `section_table`: informative, a flat `Vec` with one
//!     `(first offset, pages array)` entry per 2 MiB section, indexed by
//!     `offset >> 9` (classic `SPARSEMEM`'s `__pfn_to_page()`: one table
//!     load, then arithmetic). It shows what `space` would cost if its
//!     section slots carried the pages array instead of the pagemap.
//! - `device_private_offset_to_page_layouts`: issue 14's "every layout is
//!   fast": 1024 pagemaps, 2^16 random offsets per iteration (more than
//!   a branch predictor can learn), page not touched, `space`
//!   against `rangemap_index` (and `space_tree`, informative) with the
//!   kernel's exact packing and pagemaps of 64, 100, 256, 1000 and 65,536
//!   pages (64 to 1000 share sections: several pagemaps per 2 MiB section,
//!   or odd ends inside one), and with section-aligned packing (256 pages).
//!   The 65,536-page layout holds 4 GiB of `struct page`; each layout is
//!   dropped before the next is built. 2049 and 4097 pages: large
//!   pagemaps off the section grid. `space_index` is `space` with no
//!   per-page pagemap array (the section index alone), in the same run.
//!   `space_touch` and `vmemmap_touch` read the page found (T3 in every
//!   layout but 65,536 pages), against one pagemap spanning the same
//!   offsets.
//! - `device_private_offset_to_page_threads`: aggregate lookup throughput
//!   with 1 and 2 reader threads (1024 pagemaps, random offsets, page
//!   touched), `space` against `vmemmap`.
//! - `memremap_device_private_pagemap`: creating one pagemap of 2^24 pages
//!   (1 GiB of `struct page`) against allocating and `memset`ting a buffer
//!   of the same size. Both include their allocation and page faults; the
//!   teardown (`memunmap`, freeing the buffer) is outside the timing.
//!
//! The space uses [`Packing::SectionAligned`]: every pagemap starts on a
//! section boundary, so every section slot of the index names exactly one
//! pagemap and `space` never falls back to the tree. Every query offset lies
//! inside a pagemap (a miss would take a `WARN`).
//!
//! Every input comes from a fixed-seed PRNG, so runs are comparable.
//! Results and how to read them: `docs/perf.md`.

#![forbid(unsafe_code)]

#[path = "common.rs"]
mod common;
use common::configure;
use devpriv_core::random::SplitMix64;

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main,
};
use devpriv_core::{DevicePrivateOffset, PAGE_SHIFT, PageCount};
use devpriv_pagemap::{
    DevPagemap, DevicePrivateSpace, MAX_PAGEMAP_PAGES, NoopOps, Owner, Packing, Page,
    PagemapParams, SpaceConfig,
};
use rangemap::RangeMap;
use std::hint::black_box;
use std::ops::Deref;
use std::ptr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Pagemap counts for `device_private_offset_to_page`.
const COUNTS: [u64; 5] = [1, 8, 64, 1024, 16384];
/// Offsets looked up per iteration (per thread in the threads group).
const QUERIES: usize = 4096;
/// Pagemaps in the threads group.
const THREADS_PAGEMAPS: u64 = 1024;
/// Reader thread counts in the threads group.
const THREADS: [usize; 2] = [1, 2];
/// Pages per 2 MiB section (`SpaceConfig::default().section_shift` is 21).
const SECTION_PAGES: u64 = 512;
/// Pages in the pagemap that `memremap_device_private_pagemap` creates.
const MEMREMAP_PAGES: u64 = 1 << 24;

/// No page is ever allocated, so the driver does nothing.
fn params(nr_pages: u64) -> PagemapParams {
    PagemapParams::private(PageCount::new(nr_pages), Owner(1), Arc::new(NoopOps))
}

/// A space whose pagemaps start on section (2 MiB, 512-page) boundaries.
fn section_aligned_space() -> DevicePrivateSpace {
    DevicePrivateSpace::with_config(SpaceConfig {
        packing: Packing::SectionAligned,
        ..SpaceConfig::default()
    })
}

/// Pages per pagemap for `n` pagemaps: one 512-page section each up to
/// 1024 pagemaps (32 MiB of pages), 64 pages each at 16384 (64 MiB).
fn pages_per_pagemap(n: u64) -> u64 {
    if n <= 1024 { 512 } else { 64 }
}

/// `n` pagemaps of `per` pages in one space, and the same `n * per` pages
/// as one pagemap of another space (the `vmemmap` baseline).
struct Layout {
    space: DevicePrivateSpace,
    pms: Vec<Arc<DevPagemap>>,
    /// Owns `flat` (kept so the layout mirrors a real space; never read).
    _flat_space: DevicePrivateSpace,
    flat: Arc<DevPagemap>,
    per: u64,
}

impl Layout {
    fn new(n: u64) -> Layout {
        let per = pages_per_pagemap(n);
        let space = section_aligned_space();
        assert_eq!(
            1 << (space.config().section_shift - PAGE_SHIFT),
            SECTION_PAGES
        );
        let pms = (0..n)
            .map(|_| {
                space
                    .memremap_device_private_pagemap(params(per), 0)
                    .expect("the space has room")
            })
            .collect();
        let flat_space = section_aligned_space();
        let flat = flat_space
            .memremap_device_private_pagemap(params(n * per), 0)
            .expect("the space has room");
        Layout {
            space,
            pms,
            _flat_space: flat_space,
            flat,
            per,
        }
    }

    /// `(pagemap, page)` pairs, each a page of some pagemap.
    ///
    /// `random`: pagemap and page both uniform. Sequential: one page per
    /// pagemap (at a random index), walking the pagemaps in order and
    /// wrapping.
    fn picks(&self, random: bool, seed: u64) -> Vec<(usize, u64)> {
        let n = self.pms.len() as u64;
        let mut rng = SplitMix64::new(0x5EED_0000 ^ n ^ u64::from(random) ^ seed << 8);
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
                let pm = usize::try_from(pm).expect("fits");
                (pm, rng.between(0, self.per - 1))
            })
            .collect()
    }

    /// The offsets of `picks` in the `n`-pagemap space.
    fn offsets(&self, picks: &[(usize, u64)]) -> Vec<u64> {
        picks
            .iter()
            .map(|&(pm, page)| self.pms[pm].first_offset().get() + page)
            .collect()
    }

    /// The offsets of the same pages in the flat pagemap: pagemap `i`'s
    /// pages are at `i * per` in it.
    fn flat_offsets(&self, picks: &[(usize, u64)]) -> Vec<u64> {
        let base = self.flat.first_offset().get();
        picks
            .iter()
            .map(|&(pm, page)| base + pm as u64 * self.per + page)
            .collect()
    }
}

/// Runs one batch of lookups and folds the pages found into a sum: the
/// page's address, plus its flags word (word 0) if `TOUCH`.
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

/// `pages[o - first]` over the flat pagemap's pages array.
#[inline(always)]
fn vmemmap(pages: &[Page], first: u64, o: u64) -> Option<&Page> {
    usize::try_from(o.wrapping_sub(first))
        .ok()
        .and_then(|i| pages.get(i))
}

/// Every implementation, for one `n`, pattern and touch mode.
fn bench_impls<const TOUCH: bool>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    layout: &Layout,
    pattern: &str,
    qs: &[u64],
    flat_qs: &[u64],
) {
    let n = layout.pms.len();
    let touch = if TOUCH { "touch" } else { "notouch" };
    let id = |imp: &str| BenchmarkId::new(format!("{imp}/{pattern}/{touch}"), n);

    // Each pagemap's first offset and pages array, by pagemap index.
    let slices: Vec<(u64, &[Page])> = layout
        .pms
        .iter()
        .map(|pm| (pm.first_offset().get(), pm.pages()))
        .collect();
    let mut rmap: RangeMap<u64, usize> = RangeMap::new();
    for (i, &(first, pages)) in slices.iter().enumerate() {
        rmap.insert(first..first + pages.len() as u64, i);
    }
    // Already sorted: the space hands out ranges in address order.
    let sorted: Vec<(u64, u64, usize)> = slices
        .iter()
        .enumerate()
        .map(|(i, &(first, pages))| (first, pages.len() as u64, i))
        .collect();
    assert!(sorted.is_sorted());
    // One entry per section up to the last pagemap's; a section no pagemap
    // starts in holds `(u64::MAX, [])`, which no offset indexes.
    let last = slices
        .last()
        .map_or(0, |&(first, pages)| first + pages.len() as u64 - 1);
    let mut sections: Vec<(u64, &[Page])> =
        vec![(u64::MAX, &[]); usize::try_from(last / SECTION_PAGES + 1).expect("fits")];
    for &(first, pages) in &slices {
        let end = first + pages.len() as u64;
        for s in first / SECTION_PAGES..end.div_ceil(SECTION_PAGES) {
            sections[usize::try_from(s).expect("fits")] = (first, pages);
        }
    }

    group.bench_function(id("space"), |b| {
        b.iter(|| {
            // One read-side section for the whole batch.
            let g = layout.space.read();
            black_box(batch::<TOUCH, _>(qs, |o| {
                g.device_private_offset_to_page(DevicePrivateOffset::new(o))
            }))
        });
    });

    group.bench_function(id("space_tree"), |b| {
        b.iter(|| {
            let g = layout.space.read();
            black_box(batch::<TOUCH, _>(qs, |o| {
                g.device_private_offset_to_page_tree(DevicePrivateOffset::new(o))
            }))
        });
    });

    group.bench_function(id("rangemap_index"), |b| {
        b.iter(|| {
            black_box(batch::<TOUCH, _>(qs, |o| {
                let &i = rmap.get(&o)?;
                let (first, pages) = slices[i];
                pages.get(usize::try_from(o - first).ok()?)
            }))
        });
    });

    group.bench_function(id("sorted_vec"), |b| {
        b.iter(|| {
            black_box(batch::<TOUCH, _>(qs, |o| {
                let at = sorted.partition_point(|&(first, _, _)| first <= o);
                let &(first, nr, i) = sorted.get(at.checked_sub(1)?)?;
                let page = o - first;
                if page >= nr {
                    return None;
                }
                slices[i].1.get(usize::try_from(page).ok()?)
            }))
        });
    });

    group.bench_function(id("section_table"), |b| {
        b.iter(|| {
            black_box(batch::<TOUCH, _>(qs, |o| {
                let &(first, pages) = sections.get(usize::try_from(o / SECTION_PAGES).ok()?)?;
                pages.get(usize::try_from(o.wrapping_sub(first)).ok()?)
            }))
        });
    });

    let (first, pages) = (layout.flat.first_offset().get(), layout.flat.pages());
    group.bench_function(id("vmemmap"), |b| {
        b.iter(|| black_box(batch::<TOUCH, _>(flat_qs, |o| vmemmap(pages, first, o))));
    });
}

fn bench_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("device_private_offset_to_page");
    configure(&mut group);
    group.throughput(Throughput::Elements(QUERIES as u64));
    for n in COUNTS {
        let layout = Layout::new(n);
        for (pattern, random) in [("random", true), ("sequential", false)] {
            let picks = layout.picks(random, 0);
            let (qs, flat_qs) = (layout.offsets(&picks), layout.flat_offsets(&picks));
            bench_impls::<true>(&mut group, &layout, pattern, &qs, &flat_qs);
            bench_impls::<false>(&mut group, &layout, pattern, &qs, &flat_qs);
        }
    }
    group.finish();
}

/// Runs `iters` batches on each of `per_thread.len()` threads at once (one
/// query vector per thread) and returns the longest thread's time. Threads
/// are spawned and lined up at a barrier before any clock starts.
fn run_threads(
    per_thread: &[Vec<u64>],
    iters: u64,
    one_batch: &(impl Fn(&[u64]) -> u64 + Sync),
) -> Duration {
    let barrier = Barrier::new(per_thread.len());
    let barrier = &barrier;
    std::thread::scope(|s| {
        let handles: Vec<_> = per_thread
            .iter()
            .map(|qs| {
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let mut sum = 0u64;
                    for _ in 0..iters {
                        sum = sum.wrapping_add(one_batch(qs));
                    }
                    black_box(sum);
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a lookup thread panicked"))
            .max()
            .unwrap_or_default()
    })
}

fn bench_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("device_private_offset_to_page_threads");
    configure(&mut group);
    let layout = Layout::new(THREADS_PAGEMAPS);
    let (first, pages) = (layout.flat.first_offset().get(), layout.flat.pages());
    for t in THREADS {
        let picks: Vec<_> = (0..t as u64).map(|k| layout.picks(true, k + 1)).collect();
        let qs: Vec<_> = picks.iter().map(|p| layout.offsets(p)).collect();
        let flat_qs: Vec<_> = picks.iter().map(|p| layout.flat_offsets(p)).collect();
        group.throughput(Throughput::Elements((QUERIES * t) as u64));

        let space = |qs: &[u64]| {
            // Each thread enters its own read-side section per batch.
            let g = layout.space.read();
            batch::<true, _>(qs, |o| {
                g.device_private_offset_to_page(DevicePrivateOffset::new(o))
            })
        };
        group.bench_function(BenchmarkId::new("space", t), |b| {
            b.iter_custom(|iters| run_threads(&qs, iters, &space));
        });

        let flat = |qs: &[u64]| batch::<true, _>(qs, |o| vmemmap(pages, first, o));
        group.bench_function(BenchmarkId::new("vmemmap", t), |b| {
            b.iter_custom(|iters| run_threads(&flat_qs, iters, &flat));
        });
    }
    group.finish();
}

/// Pagemaps per layout in `device_private_offset_to_page_layouts`.
const LAYOUT_PAGEMAPS: usize = 1024;
/// Offsets per iteration there: 2^16, not 4096, because a branchy search
/// (`rangemap`'s B-tree) replayed over the same 4096 offsets every
/// iteration has its branches learnt by the predictor and ran 3x faster
/// than on fresh offsets (15 ns against the 45 ns of `devpriv bench` and
/// the held-out measurement), which flattered the baseline.
const LAYOUT_QUERIES: usize = 1 << 16;

/// The layouts of issue 14's target 1: (name, packing, pages per
/// pagemap), and 4, 32 and 200 pages, the other shapes of a section's
/// table (`devpriv_cli::quickbench::LAYOUTS` says which), and 2049 and
/// 4097: large pagemaps off the section grid, whose shared ends put every
/// leaf of the index on its wide path (the pagemap array's other side, see
/// `READ_FIRST_PARTIAL_SHARE`).
const LAYOUTS: [(&str, Packing, u64); 11] = [
    ("exact_4", Packing::KernelExact, 4),
    ("exact_32", Packing::KernelExact, 32),
    ("exact_64", Packing::KernelExact, 64),
    ("exact_100", Packing::KernelExact, 100),
    ("exact_200", Packing::KernelExact, 200),
    ("exact_256", Packing::KernelExact, 256),
    ("exact_1000", Packing::KernelExact, 1000),
    ("exact_2049", Packing::KernelExact, 2049),
    ("exact_4097", Packing::KernelExact, 4097),
    ("exact_65536", Packing::KernelExact, 65_536),
    ("aligned_256", Packing::SectionAligned, 256),
];

/// A space with `cfg` and [`LAYOUT_PAGEMAPS`] pagemaps of `per` pages.
fn layout_space(cfg: SpaceConfig, per: u64) -> (DevicePrivateSpace, Vec<Arc<DevPagemap>>) {
    let space = DevicePrivateSpace::with_config(cfg);
    let pms = (0..LAYOUT_PAGEMAPS)
        .map(|_| {
            space
                .memremap_device_private_pagemap(params(per), 0)
                .expect("the space has room")
        })
        .collect();
    (space, pms)
}

fn bench_layouts(c: &mut Criterion) {
    let mut group = c.benchmark_group("device_private_offset_to_page_layouts");
    configure(&mut group);
    group.throughput(Throughput::Elements(LAYOUT_QUERIES as u64));
    for (name, packing, per) in LAYOUTS {
        let (space, pms) = layout_space(
            SpaceConfig {
                packing,
                ..SpaceConfig::default()
            },
            per,
        );
        let mut rng = SplitMix64::new(0x1A70_0000 ^ per);
        let n = pms.len() as u64;
        let qs: Vec<u64> = (0..LAYOUT_QUERIES)
            .map(|_| {
                let pm = &pms[usize::try_from(rng.below(n)).expect("fits")];
                pm.first_offset().get() + rng.below(per)
            })
            .collect();
        let mut rmap: RangeMap<u64, usize> = RangeMap::new();
        for (i, pm) in pms.iter().enumerate() {
            let first = pm.first_offset().get();
            rmap.insert(first..first + per, i);
        }
        let id = |imp: &str| BenchmarkId::new(imp, name);
        group.bench_function(id("space"), |b| {
            b.iter(|| {
                let g = space.read();
                black_box(batch::<false, _>(&qs, |o| {
                    g.device_private_offset_to_page(DevicePrivateOffset::new(o))
                }))
            });
        });
        group.bench_function(id("rangemap_index"), |b| {
            b.iter(|| {
                black_box(batch::<false, _>(&qs, |o| {
                    let &i = rmap.get(&o)?;
                    let pm = &pms[i];
                    pm.pages()
                        .get(usize::try_from(o - pm.first_offset().get()).ok()?)
                }))
            });
        });
        group.bench_function(id("space_tree"), |b| {
            b.iter(|| {
                let g = space.read();
                black_box(batch::<false, _>(&qs, |o| {
                    g.device_private_offset_to_page_tree(DevicePrivateOffset::new(o))
                }))
            });
        });
        // Touched (T3 in every layout): `space` against `vmemmap`, one
        // pagemap of another space spanning the same offsets, so that
        // each query reads the page at the same place in it. Not for the
        // 65,536-page layout: no pagemap spans its 2^26 pages
        // (`MAX_PAGEMAP_PAGES`), and it would need 4 GiB more.
        let first = pms[0].first_offset().get();
        let span = pms.last().map_or(0, |pm| pm.first_offset().get() + per) - first;
        if span > MAX_PAGEMAP_PAGES {
            continue;
        }
        // The same layout with no pagemap array: the section index alone
        // (what the array's rule falls back to), in the same run.
        let (index_space, index_pms) = layout_space(
            SpaceConfig {
                packing,
                pgmap_array_pages: 0,
                ..SpaceConfig::default()
            },
            per,
        );
        assert_eq!(index_pms[0].first_offset(), pms[0].first_offset());
        group.bench_function(id("space_index"), |b| {
            b.iter(|| {
                let g = index_space.read();
                black_box(batch::<false, _>(&qs, |o| {
                    g.device_private_offset_to_page(DevicePrivateOffset::new(o))
                }))
            });
        });
        drop((index_pms, index_space));
        group.bench_function(id("space_touch"), |b| {
            b.iter(|| {
                let g = space.read();
                black_box(batch::<true, _>(&qs, |o| {
                    g.device_private_offset_to_page(DevicePrivateOffset::new(o))
                }))
            });
        });
        let flat_space = DevicePrivateSpace::new();
        let flat = flat_space
            .memremap_device_private_pagemap(params(span), 0)
            .expect("the space has room");
        let flat_qs: Vec<u64> = qs
            .iter()
            .map(|&o| flat.first_offset().get() + o - first)
            .collect();
        let (flat_first, flat_pages) = (flat.first_offset().get(), flat.pages());
        group.bench_function(id("vmemmap_touch"), |b| {
            b.iter(|| {
                black_box(batch::<true, _>(&flat_qs, |o| {
                    vmemmap(flat_pages, flat_first, o)
                }))
            });
        });
    }
    group.finish();
}

fn bench_memremap(c: &mut Criterion) {
    // The metadata per page is one `struct page`: 64 bytes, as in the
    // kernel (the index adds one 8-byte slot per 512-page section).
    assert_eq!(size_of::<Page>(), 64);
    let bytes = usize::try_from(MEMREMAP_PAGES).expect("fits") * size_of::<Page>();

    let mut group = c.benchmark_group("memremap_device_private_pagemap");
    // About a second per iteration: the fewest samples criterion allows,
    // all of the same iteration count.
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(MEMREMAP_PAGES));

    let space = section_aligned_space();
    group.bench_function(BenchmarkId::new("memremap", MEMREMAP_PAGES), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let pm = space
                    .memremap_device_private_pagemap(params(MEMREMAP_PAGES), 0)
                    .expect("the space has room");
                total += start.elapsed();
                // Teardown, not timed: the pages array is freed here.
                space
                    .memunmap_device_private_pagemap(&pm)
                    .expect("mapped above");
                drop(pm);
            }
            total
        });
    });

    group.bench_function(BenchmarkId::new("alloc_memset", MEMREMAP_PAGES), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let mut buf: Vec<u8> = Vec::new();
                buf.try_reserve_exact(bytes).expect("1 GiB is available");
                buf.resize(bytes, 0xff);
                let buf = black_box(buf);
                total += start.elapsed();
                // Not timed, like memunmap above.
                drop(buf);
            }
            total
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_lookup,
    bench_layouts,
    bench_threads,
    bench_memremap
);
criterion_main!(benches);
