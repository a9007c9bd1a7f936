//! A quick offset → page lookup comparison on this machine, for users who
//! do not want to run criterion (`devpriv bench`).
//!
//! Kernel: none (model only). It times `device_private_offset_to_page()`
//! (the section index and the kernel's tree walk) against a
//! `rangemap::RangeMap` plus index and a vmemmap-style `base + offset` over
//! one flat array — the same baselines as `benches/pagemap.rs`, with less
//! statistics: the median of a few timed rounds per implementation, all in
//! one run, reported as ratios.
//!
//! It also prints the layouts of the "every layout is fast" target
//! ([`run_layouts`]: the kernel's exact packing with pagemaps of 4 to
//! 65,536 pages, and section-aligned packing) and, when this binary was
//! built with the `kernel-oracle` feature and the kernel source is there
//! (`ci/kernel-src.sh`), `RangeTree` next to the kernel's own maple tree
//! ([`run_maple`]). Without the oracle it says so loudly instead.

use devpriv_core::random::SplitMix64;
use devpriv_core::{DevicePrivateOffset, Errno, PageCount};
use devpriv_pagemap::{
    DevPagemap, DevicePrivateSpace, NoopOps, Owner, Packing, Page, PagemapParams, SpaceConfig,
};
use rangemap::RangeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

/// What to measure.
///
/// Kernel: none (model only).
#[derive(Clone, Copy, Debug)]
pub struct BenchConfig {
    /// Number of pagemaps (512 pages each).
    pub pagemaps: usize,
    /// Offsets looked up per timed round.
    pub lookups: usize,
    /// Timed rounds per implementation (the median is reported).
    pub rounds: usize,
    /// Read each page's flags word as well (the page's cache line).
    pub touch: bool,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            pagemaps: 1024,
            lookups: 1 << 16,
            rounds: 15,
            touch: false,
        }
    }
}

/// One implementation's result.
///
/// Kernel: none (model only).
#[derive(Clone, Debug)]
pub struct BenchRow {
    /// Implementation name.
    pub name: &'static str,
    /// Median nanoseconds per lookup.
    pub ns_per_lookup: f64,
}

fn map(space: &DevicePrivateSpace, pages: u64) -> Result<Arc<DevPagemap>, Errno> {
    // No page is ever allocated, so the driver does nothing.
    let params = PagemapParams::private(PageCount::new(pages), Owner(1), Arc::new(NoopOps));
    space.memremap_device_private_pagemap(params, 0)
}

/// Times `f` over `qs` for `rounds` rounds; median ns per lookup.
fn time<P: std::ops::Deref<Target = Page>>(
    cfg: &BenchConfig,
    qs: &[u64],
    mut f: impl FnMut(u64) -> Option<P>,
) -> f64 {
    let mut samples: Vec<f64> = (0..cfg.rounds.max(1))
        .map(|_| {
            let t = Instant::now();
            let mut sum = 0u64;
            for &q in qs {
                if let Some(p) = f(black_box(q)) {
                    sum = sum.wrapping_add(std::ptr::from_ref::<Page>(&p).addr() as u64);
                    if cfg.touch {
                        sum = sum.wrapping_add(p.flags());
                    }
                }
            }
            black_box(sum);
            #[expect(clippy::cast_precision_loss, reason = "a timing")]
            let per = t.elapsed().as_nanos() as f64 / qs.len().max(1) as f64;
            per
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Builds `cfg.pagemaps` section-aligned pagemaps and one flat pagemap of
/// the same pages, then times every implementation on the same random
/// offsets. The first row is the space's index path.
///
/// Kernel: none (model only).
///
/// # Errors
///
/// `EINVAL` for zero pagemaps or lookups; whatever `memremap` returns if
/// the pagemaps do not fit.
pub fn run(cfg: &BenchConfig) -> Result<Vec<BenchRow>, Errno> {
    const PER: u64 = 512;
    if cfg.pagemaps == 0 || cfg.lookups == 0 {
        return Err(Errno::EINVAL);
    }
    let space = DevicePrivateSpace::with_config(SpaceConfig {
        packing: Packing::SectionAligned,
        ..SpaceConfig::default()
    });
    let pms = (0..cfg.pagemaps)
        .map(|_| map(&space, PER))
        .collect::<Result<Vec<_>, _>>()?;
    let flat_space = DevicePrivateSpace::new();
    let n = u64::try_from(cfg.pagemaps).map_err(|_| Errno::EINVAL)?;
    let flat = map(&flat_space, n * PER)?;
    let mut rng = SplitMix64::new(0x5eed);
    let picks: Vec<(usize, u64)> = (0..cfg.lookups)
        .map(|_| {
            #[expect(clippy::cast_possible_truncation, reason = "below pagemaps")]
            let i = rng.below(n) as usize;
            (i, rng.below(PER))
        })
        .collect();
    let qs: Vec<u64> = picks
        .iter()
        .map(|&(i, p)| pms[i].first_offset().get() + p)
        .collect();
    let flat_first = flat.first_offset().get();
    let flat_qs: Vec<u64> = picks
        .iter()
        .map(|&(i, p)| flat_first + i as u64 * PER + p)
        .collect();
    let mut rmap = RangeMap::new();
    for (i, pm) in pms.iter().enumerate() {
        let first = pm.first_offset().get();
        rmap.insert(first..first + PER, i);
    }

    let g = space.read();
    let space_ns = time(cfg, &qs, |o| {
        g.device_private_offset_to_page(DevicePrivateOffset::new(o))
    });
    let tree_ns = time(cfg, &qs, |o| {
        g.device_private_offset_to_page_tree(DevicePrivateOffset::new(o))
    });
    let rmap_ns = time(cfg, &qs, |o| {
        let &i = rmap.get(&o)?;
        let pm = &pms[i];
        pm.pages()
            .get(usize::try_from(o - pm.first_offset().get()).ok()?)
    });
    let pages = flat.pages();
    let vmemmap_ns = time(cfg, &flat_qs, |o| {
        pages.get(usize::try_from(o.wrapping_sub(flat_first)).ok()?)
    });
    Ok(vec![
        BenchRow {
            name: "space (section index)",
            ns_per_lookup: space_ns,
        },
        BenchRow {
            name: "space tree walk (kernel's path)",
            ns_per_lookup: tree_ns,
        },
        BenchRow {
            name: "rangemap + index",
            ns_per_lookup: rmap_ns,
        },
        BenchRow {
            name: "vmemmap base + offset",
            ns_per_lookup: vmemmap_ns,
        },
    ])
}

/// The layouts of the "every layout is fast" target: (name, packing, pages
/// per pagemap). `benches/pagemap.rs` (`device_private_offset_to_page_layouts`)
/// measures the same ones with criterion. Issue 14 names 64, 100, 256,
/// 1000 and 65,536 pages and section-aligned packing; 4, 32 and 200 pages
/// are the other shapes a section's table takes (a page map, a two-level
/// hint, four intervals to a line).
///
/// Kernel: none (model only); `KernelExact` is the v6 proposal's lowest-fit
/// `mtree_alloc_range()` packing.
pub const LAYOUTS: [(&str, Packing, u64); 9] = [
    ("exact, 4 pages", Packing::KernelExact, 4),
    ("exact, 32 pages", Packing::KernelExact, 32),
    ("exact, 64 pages", Packing::KernelExact, 64),
    ("exact, 100 pages", Packing::KernelExact, 100),
    ("exact, 200 pages", Packing::KernelExact, 200),
    ("exact, 256 pages", Packing::KernelExact, 256),
    ("exact, 1000 pages", Packing::KernelExact, 1000),
    ("exact, 65536 pages", Packing::KernelExact, 65_536),
    ("section-aligned, 256 pages", Packing::SectionAligned, 256),
];

/// At most this many pages of `struct page` per layout in the quick run
/// (256 MiB); the criterion bench maps all 1024 pagemaps of every layout.
const LAYOUT_MAX_PAGES: u64 = 1 << 22;

/// One layout's result.
///
/// Kernel: none (model only).
#[derive(Clone, Debug)]
pub struct LayoutRow {
    /// Layout name.
    pub name: &'static str,
    /// Pagemaps mapped.
    pub pagemaps: usize,
    /// Median ns per lookup through the section index.
    pub space_ns: f64,
    /// Median ns per lookup through `rangemap` plus the pagemap's array.
    pub rangemap_ns: f64,
}

/// Every layout of [`LAYOUTS`] with `cfg.pagemaps` pagemaps (fewer where
/// that would exceed 256 MiB of `struct page`), random offsets: the index
/// against `rangemap` plus index, each layout dropped before the next.
///
/// Kernel: none (model only).
///
/// # Errors
///
/// `EINVAL` for zero pagemaps or lookups; whatever `memremap` returns.
pub fn run_layouts(cfg: &BenchConfig) -> Result<Vec<LayoutRow>, Errno> {
    if cfg.pagemaps == 0 || cfg.lookups == 0 {
        return Err(Errno::EINVAL);
    }
    let mut rows = Vec::new();
    for (name, packing, per) in LAYOUTS {
        let cap = usize::try_from(LAYOUT_MAX_PAGES / per).map_err(|_| Errno::EINVAL)?;
        let count = cfg.pagemaps.min(cap.max(1));
        let space = DevicePrivateSpace::with_config(SpaceConfig {
            packing,
            ..SpaceConfig::default()
        });
        let pms = (0..count)
            .map(|_| map(&space, per))
            .collect::<Result<Vec<_>, _>>()?;
        let mut rng = SplitMix64::new(0x1A70_0000 ^ per);
        let n = pms.len() as u64;
        let qs: Vec<u64> = (0..cfg.lookups)
            .map(|_| {
                #[expect(clippy::cast_possible_truncation, reason = "below pagemaps")]
                let pm = &pms[rng.below(n) as usize];
                pm.first_offset().get() + rng.below(per)
            })
            .collect();
        let mut rmap = RangeMap::new();
        for (i, pm) in pms.iter().enumerate() {
            let first = pm.first_offset().get();
            rmap.insert(first..first + per, i);
        }
        let g = space.read();
        let space_ns = time(cfg, &qs, |o| {
            g.device_private_offset_to_page(DevicePrivateOffset::new(o))
        });
        let rangemap_ns = time(cfg, &qs, |o| {
            let &i = rmap.get(&o)?;
            let pm = &pms[i];
            pm.pages()
                .get(usize::try_from(o - pm.first_offset().get()).ok()?)
        });
        rows.push(LayoutRow {
            name,
            pagemaps: count,
            space_ns,
            rangemap_ns,
        });
    }
    Ok(rows)
}

/// The layout rows as a table: `rangemap / space` per layout (the target
/// is at least 10x in every one).
///
/// Kernel: none (model only).
pub fn layouts_table(cfg: &BenchConfig, rows: &[LayoutRow]) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "\noffset -> page in every layout, {} random offsets, page not touched; median of {} rounds\n\n",
        cfg.lookups, cfg.rounds
    );
    let _ = writeln!(
        out,
        "| layout | pagemaps | space ns | rangemap + index ns | rangemap / space |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {:.2} | {:.1}x |",
            r.name,
            r.pagemaps,
            r.space_ns,
            r.rangemap_ns,
            r.rangemap_ns / r.space_ns
        );
    }
    out
}

/// The rows as a table, with each implementation's time relative to the
/// space's index path.
///
/// Kernel: none (model only).
pub fn to_table(cfg: &BenchConfig, rows: &[BenchRow]) -> String {
    use std::fmt::Write as _;
    let base = rows.first().map_or(1.0, |r| r.ns_per_lookup);
    let mut out = format!(
        "offset -> page, {} pagemaps x 512 pages, {} random offsets, page {}; median of {} rounds\n\n",
        cfg.pagemaps,
        cfg.lookups,
        if cfg.touch { "touched" } else { "not touched" },
        cfg.rounds
    );
    let _ = writeln!(out, "| implementation | ns/lookup | time / space |");
    let _ = writeln!(out, "|---|---:|---:|");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.2}x |",
            r.name,
            r.ns_per_lookup,
            r.ns_per_lookup / base
        );
    }
    out.push_str(
        "\n(build with --release; absolute times on a shared machine are noise, ratios less so)\n",
    );
    out
}

/// `RangeTree` against the kernel's own maple tree, one row per case:
/// alloc+erase (lowest fit of 16 to 64 keys, then its erase) in the
/// `gapped` layout of 1024 ranges and the `fragmented` layout of 10,000
/// live ranges, and random loads at 1024 ranges (the layouts of
/// `benches/maple_tree.rs`, included from `benches/range_layouts.rs`).
///
/// Kernel: `mtree_alloc_range()`, `mtree_erase()`, `mtree_load()`
/// (`lib/maple_tree.c`, 6.12 from `linux-source-6.12`, main), through the
/// dev-only `devpriv-kernel-oracle`.
///
/// # Errors
///
/// Why the kernel's tree is not available: this binary was built without
/// the `kernel-oracle` feature, or without kernel source.
pub fn run_maple(cfg: &BenchConfig) -> Result<Vec<MapleRow>, String> {
    maple::run(cfg)
}

/// One case of [`run_maple`].
///
/// Kernel: none (model only).
#[derive(Clone, Debug)]
pub struct MapleRow {
    /// What was timed.
    pub case: String,
    /// Median ns per operation, `RangeTree`.
    pub range_tree_ns: f64,
    /// Median ns per operation, the kernel's maple tree.
    pub kernel_ns: f64,
}

/// The maple-tree rows as a table, or a loud line saying why there are none.
///
/// Kernel: none (model only).
pub fn maple_table(result: &Result<Vec<MapleRow>, String>) -> String {
    use std::fmt::Write as _;
    let rows = match result {
        Ok(rows) => rows,
        Err(why) => {
            return format!(
                "\n*** maple-tree comparison NOT RUN: {why} ***\n\
                 *** (build with `--features kernel-oracle` after ci/kernel-src.sh) ***\n"
            );
        }
    };
    let mut out = String::from(
        "\nRangeTree vs the kernel's maple tree (lib/maple_tree.c), median ns per operation\n\n",
    );
    let _ = writeln!(
        out,
        "| case | RangeTree ns | kernel ns | RangeTree / kernel |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {:.2}x |",
            r.case,
            r.range_tree_ns,
            r.kernel_ns,
            r.range_tree_ns / r.kernel_ns
        );
    }
    out
}

/// The range-tree layouts of `benches/maple_tree.rs`, shared so that both
/// measure the same trees.
#[cfg(feature = "kernel-oracle")]
#[allow(
    dead_code,
    reason = "shared with the benches; not every item is used here"
)]
#[path = "../../../benches/range_layouts.rs"]
mod range_layouts;

#[cfg(not(feature = "kernel-oracle"))]
mod maple {
    use super::{BenchConfig, MapleRow};

    pub(super) fn run(_cfg: &BenchConfig) -> Result<Vec<MapleRow>, String> {
        Err("this devpriv was built without the kernel-oracle feature".to_owned())
    }
}

#[cfg(feature = "kernel-oracle")]
mod maple {
    use super::{BenchConfig, MapleRow};
    use devpriv_kernel_oracle::MapleTree;
    use devpriv_rangetree::RangeTree;
    use std::hint::black_box;
    use std::time::Instant;

    use super::range_layouts::{SPAN, layout_sizes, queries, range_first, request_sizes};

    /// Median ns per call of `f` over `ops` calls, `cfg.rounds` rounds.
    fn median(cfg: &BenchConfig, ops: usize, mut f: impl FnMut(usize) -> u64) -> f64 {
        let mut samples: Vec<f64> = (0..cfg.rounds.max(1))
            .map(|_| {
                let t = Instant::now();
                let mut sum = 0u64;
                for i in 0..ops {
                    sum = sum.wrapping_add(f(i));
                }
                black_box(sum);
                #[expect(clippy::cast_precision_loss, reason = "a timing")]
                let per = t.elapsed().as_nanos() as f64 / ops as f64;
                per
            })
            .collect();
        samples.sort_by(f64::total_cmp);
        samples[samples.len() / 2]
    }

    fn gapped(n: u64) -> Result<(RangeTree<u64>, MapleTree), String> {
        let tree = RangeTree::new();
        let mut k = MapleTree::new().map_err(|e| e.to_string())?;
        for i in 0..n {
            let r = range_first(i)..=range_first(i) + SPAN - 1;
            tree.insert_range(r.clone(), i).map_err(|e| e.to_string())?;
            k.insert_range(r, i).map_err(|e| e.to_string())?;
        }
        Ok((tree, k))
    }

    fn fragmented(live: u64) -> Result<(RangeTree<u64>, MapleTree), String> {
        let tree = RangeTree::new();
        let mut k = MapleTree::new().map_err(|e| e.to_string())?;
        let mut starts = Vec::new();
        for (id, size) in (0u64..).zip(layout_sizes(live)) {
            let s = tree
                .alloc_range(size, 1, 0..=u64::MAX, id)
                .map_err(|e| e.to_string())?;
            k.alloc_range(size, 0..=u64::MAX, id)
                .map_err(|e| e.to_string())?;
            starts.push(s);
        }
        for &s in starts.iter().skip(1).step_by(2) {
            tree.erase(s);
            k.erase(s);
        }
        Ok((tree, k))
    }

    pub(super) fn run(cfg: &BenchConfig) -> Result<Vec<MapleRow>, String> {
        let reqs = request_sizes();
        let ops = cfg.lookups.min(1 << 14);
        let mut rows = Vec::new();
        for (layout, n) in [("gapped", 1024), ("fragmented", 10_000)] {
            let (tree, mut k) = if layout == "gapped" {
                gapped(n)?
            } else {
                fragmented(n)?
            };
            let range_tree_ns = median(cfg, ops, |i| {
                let size = reqs[i % reqs.len()];
                let s = tree
                    .alloc_range(size, 1, 0..=u64::MAX, u64::MAX >> 1)
                    .unwrap_or(0);
                tree.erase(s).unwrap_or(0)
            });
            let kernel_ns = median(cfg, ops, |i| {
                let size = reqs[i % reqs.len()];
                let s = k
                    .alloc_range(size, 0..=u64::MAX, u64::MAX >> 1)
                    .unwrap_or(0);
                k.erase(s).unwrap_or(0)
            });
            rows.push(MapleRow {
                case: format!("alloc+erase, {layout}, {n} live"),
                range_tree_ns,
                kernel_ns,
            });
        }
        let (tree, k) = gapped(1024)?;
        let qs = queries(1024, true);
        let g = tree.read();
        let range_tree_ns = median(cfg, qs.len(), |i| g.load(qs[i]).map_or(0, |(_, &v)| v));
        let kernel_ns = median(cfg, qs.len(), |i| k.load(qs[i]).unwrap_or(0));
        rows.push(MapleRow {
            case: "load, random, 1024 ranges".to_owned(),
            range_tree_ns,
            kernel_ns,
        });
        Ok(rows)
    }
}
