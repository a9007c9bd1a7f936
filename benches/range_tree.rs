//! Range tree benchmarks: `RangeTree` against `rangemap` and `BTreeMap`
//! baselines measured in the same group, so results can be read as ratios.
//!
//! Groups (named after the kernel operations they model):
//!
//! - `mtree_load`: point lookups (`mtree_load()`) over `n` ranges, with
//!   random or sequential query keys. `RangeTree` amortises one read-side
//!   section over the whole batch of queries, as the design intends.
//! - `mtree_alloc_range`: one `mtree_alloc_range()` + `mtree_erase()` pair
//!   in a fragmented tree of `L` live ranges, against a first-fit allocator
//!   that scans the gaps of a `rangemap::RangeMap`.
//!
//! Every input comes from a fixed-seed PRNG, so runs are comparable.
//! Results and how to read them: `docs/perf.md`.

#![forbid(unsafe_code)]

#[path = "common.rs"]
mod common;
use common::configure;
#[path = "range_layouts.rs"]
mod range_layouts;
use range_layouts::{LIVE_SIZES, SPAN, layout_sizes, queries, range_first, request_sizes};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use devpriv_rangetree::RangeTree;
use rangemap::RangeMap;
use std::collections::BTreeMap;
use std::hint::black_box;

/// Range counts for `mtree_load`.
const LOAD_SIZES: [u64; 5] = [1, 8, 64, 1024, 16384];

fn bench_load(c: &mut Criterion) {
    let mut group = c.benchmark_group("mtree_load");
    configure(&mut group);
    for n in LOAD_SIZES {
        // The same layout in all three structures; the value is the index.
        let tree: RangeTree<u64> = RangeTree::new();
        let mut rmap: RangeMap<u64, u64> = RangeMap::new();
        let mut bmap: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for i in 0..n {
            let (first, last) = (range_first(i), range_first(i) + SPAN - 1);
            tree.insert_range(first..=last, i)
                .expect("layout ranges are disjoint");
            rmap.insert(first..last + 1, i);
            bmap.insert(first, (last, i));
        }
        for (pattern, random) in [("random", true), ("sequential", false)] {
            let qs = queries(n, random);
            group.throughput(Throughput::Elements(u64::try_from(qs.len()).expect("fits")));

            group.bench_with_input(
                BenchmarkId::new(format!("RangeTree/{pattern}"), n),
                &qs,
                |b, qs| {
                    b.iter(|| {
                        // One read-side section for the whole batch.
                        let g = tree.read();
                        let mut sum = 0u64;
                        for &q in qs {
                            if let Some((r, v)) = g.load(black_box(q)) {
                                sum = sum.wrapping_add(*r.start()).wrapping_add(*v);
                            }
                        }
                        black_box(sum)
                    });
                },
            );

            group.bench_with_input(
                BenchmarkId::new(format!("rangemap/{pattern}"), n),
                &qs,
                |b, qs| {
                    b.iter(|| {
                        let mut sum = 0u64;
                        for &q in qs {
                            if let Some(v) = rmap.get(&black_box(q)) {
                                sum = sum.wrapping_add(*v);
                            }
                        }
                        black_box(sum)
                    });
                },
            );

            group.bench_with_input(
                BenchmarkId::new(format!("btreemap/{pattern}"), n),
                &qs,
                |b, qs| {
                    b.iter(|| {
                        let mut sum = 0u64;
                        for &q in qs {
                            let q = black_box(q);
                            if let Some((&first, &(last, v))) = bmap.range(..=q).next_back()
                                && q <= last
                            {
                                sum = sum.wrapping_add(first).wrapping_add(v);
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

fn bench_alloc(c: &mut Criterion) {
    let mut group = c.benchmark_group("mtree_alloc_range");
    configure(&mut group);
    group.throughput(Throughput::Elements(1));
    let requests = request_sizes();
    for live in LIVE_SIZES {
        let sizes = layout_sizes(live);

        // RangeTree: build by allocation, then erase every other range.
        let tree: RangeTree<u64> = RangeTree::new();
        let starts: Vec<u64> = sizes
            .iter()
            .zip(0u64..)
            .map(|(&size, id)| {
                tree.alloc_range(size, 1, 0..=u64::MAX, id)
                    .expect("empty space")
            })
            .collect();
        for &start in starts.iter().skip(1).step_by(2) {
            tree.erase(start).expect("allocated above");
        }
        assert_eq!(tree.len(), usize::try_from(live).expect("fits"));

        // The same layout in a RangeMap (distinct values: nothing coalesces).
        let mut rmap: RangeMap<u64, u64> = RangeMap::new();
        for (i, (&start, &size)) in starts.iter().zip(&sizes).enumerate().step_by(2) {
            rmap.insert(start..start + size, u64::try_from(i).expect("fits"));
        }

        group.bench_function(BenchmarkId::new("RangeTree", live), |b| {
            let mut next = requests.iter().copied().cycle();
            b.iter(|| {
                let size = next.next().expect("cycle is endless");
                let start = tree
                    .alloc_range(black_box(size), 1, 0..=u64::MAX, u64::MAX)
                    .expect("free tail");
                black_box(tree.erase(start))
            });
        });
        assert_eq!(tree.len(), usize::try_from(live).expect("fits"));

        let whole = 0..u64::MAX;
        group.bench_function(BenchmarkId::new("rangemap_first_fit", live), |b| {
            let mut next = requests.iter().copied().cycle();
            b.iter(|| {
                let size = next.next().expect("cycle is endless");
                let gap = rmap
                    .gaps(&whole)
                    .find(|g| g.end - g.start >= black_box(size))
                    .expect("free tail");
                let range = gap.start..gap.start + size;
                rmap.insert(range.clone(), u64::MAX);
                rmap.remove(range.clone());
                black_box(range.start)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_load, bench_alloc);
criterion_main!(benches);
