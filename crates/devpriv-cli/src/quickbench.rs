//! A quick offset → page lookup comparison on this machine, for users who
//! do not want to run criterion (`devpriv bench`).
//!
//! Kernel: none (model only). It times `device_private_offset_to_page()`
//! (the section index and the kernel's tree walk) against a
//! `rangemap::RangeMap` plus index and a vmemmap-style `base + offset` over
//! one flat array — the same baselines as `benches/pagemap.rs`, with less
//! statistics: the median of a few timed rounds per implementation, all in
//! one run, reported as ratios.

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
