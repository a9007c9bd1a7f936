//! A prototype of Xe's shared VRAM pool: one DRM-buddy allocator serving
//! both buffer objects and SVM device pages, driven by several concurrent
//! GPU fault handlers, under each [`ReinitPolicy`].
//!
//! Kernel: none (a driver prototype, model only), after the Xe reports
//! that led to the reinit fix ("[PATCH v6 1/5] `mm/zone_device`:
//! Reinitialize large zone device private folios", 2026-01-16; hazards
//! H1–H4 in `docs/hazards.md`) and
//! `drivers/gpu/drm/drm_buddy.c` (`drm_buddy_alloc_blocks()`,
//! `alloc_from_freelist()`, `drm_buddy_free_block()`),
//! `drivers/gpu/drm/xe/xe_svm.c` (`xe_svm_alloc_vram()`,
//! `xe_svm_populate_devmem_pfn()`, `xe_svm_devmem_release()`), and
//! `mm/memremap.c` (`zone_device_folio_init()`, `free_zone_device_folio()`).
//!
//! # The scenario
//!
//! Xe allocates VRAM from one buddy allocator for everything. An SVM
//! allocation of 2 MiB becomes an order-9 device folio; when its last
//! reference goes, `folio_free` returns the buddy block, and the buddy may
//! hand the same pages out again as 4 KiB or 64 KiB blocks at any offset,
//! or to a buffer object (which never touches `struct page`). Before the
//! fix the freed folio stayed compound in `struct page` memory, so the
//! reused pages carried a stale order byte (a stale `PG_locked` on the old
//! page\[1\], hazard H1), a stale `PG_head` (H2) and stale tail links (H4).
//!
//! [`run`] maps one device-private pagemap over the pool, starts
//! `threads` fault handlers on a shared [`DrmBuddy`], and counts what each
//! handler sees after `zone_device_folio_init()`:
//!
//! | hazard | seen as | spec |
//! |---|---|---|
//! | would-block | init finds `PG_locked` already set on the new head | H1 |
//! | wrong `page_folio` | `page_folio(head)` is not the head, or `page_pgmap()` does not resolve | H4 |
//! | wrong order | `folio_order()` differs from the allocation | H2, H5 |
//! | ref imbalance | the pagemap's `percpu_ref` does not come back to its baseline | H2 |
//!
//! # What a handler does after a hazard
//!
//! The kernel would hang (H1) or act on another folio (H4). The model
//! counts the hazard once, at its source, and sets the block aside
//! (leaked, as a hung or confused handler would leave it) instead of
//! cascading into other handlers' folios. A folio with a wrong order is
//! used and freed normally, so its free puts the wrong number of pagemap
//! references: that is the ref imbalance.
//!
//! # Determinism
//!
//! Each handler draws its operations from its own [`SplitMix64`] seeded
//! from `seed` and its index. With one thread a run is exactly
//! reproducible; with several the interleaving (and so the counts) varies,
//! but the fixed policies stay at zero hazards.

use devpriv_core::random::SplitMix64;
use devpriv_core::sync::Mutex;
use devpriv_core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use devpriv_core::{Errno, Order, PageCount, warn};
use devpriv_pagemap::mm_types::word;
use devpriv_pagemap::{
    DevPagemap, DevPagemapOps, DevicePrivateSpace, Folio, InitError, Owner, PageRef, PagemapParams,
    ReinitPolicy, SpaceConfig, VmFault, folio_put, zone_device_folio_init,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The order of a 2 MiB block (`HPAGE_PMD_ORDER`).
const ORDER_2M: u32 = 9;
/// The order of a 64 KiB block.
const ORDER_64K: u32 = 4;

/// A binary buddy allocator over a range of pages.
///
/// Kernel: `struct drm_buddy` and `drm_buddy_init()`,
/// `drm_buddy_alloc_blocks()` (`alloc_from_freelist()`, no flags),
/// `drm_buddy_free_block()`, `drivers/gpu/drm/drm_buddy.c` (main).
///
/// Free blocks of each order are kept sorted by offset, as the kernel's
/// `list_insert_sorted()` keeps them. An allocation takes the
/// highest-offset free block of the smallest order that fits and splits
/// it, keeping the right half each time; a free merges with free buddies
/// up to the root's order.
///
/// # Differences from the kernel
///
/// - Units are pages (`chunk_size` = `PAGE_SIZE`) and one block per call:
///   no range, top-down, contiguous or clear/dirty allocation, no trim.
/// - `max_order` is a parameter (the kernel derives it from the size);
///   roots are carved greedily from offset 0 as the kernel carves them.
#[derive(Clone, Debug)]
pub struct DrmBuddy {
    size: u64,
    max_order: u32,
    roots: Vec<(u64, u32)>,
    free: Vec<BTreeSet<u64>>,
    allocated: BTreeMap<u64, u32>,
    avail: u64,
}

impl DrmBuddy {
    /// The largest `max_order` accepted (2^20 pages, 4 GiB blocks).
    ///
    /// Kernel: none (the kernel's bound is `DRM_BUDDY_MAX_ORDER`, far
    /// larger; the model keeps its free lists small).
    pub const MAX_ORDER_LIMIT: u32 = 20;

    /// A buddy allocator over pages `0..size`, with blocks of at most
    /// `2^max_order` pages.
    ///
    /// Kernel: `drm_buddy_init(mm, size, chunk_size)` (main).
    ///
    /// # Errors
    ///
    /// `EINVAL`: `size` is 0 or `max_order` exceeds
    /// [`MAX_ORDER_LIMIT`](Self::MAX_ORDER_LIMIT).
    pub fn new(size: u64, max_order: u32) -> Result<Self, Errno> {
        if size == 0 || max_order > Self::MAX_ORDER_LIMIT {
            return Err(Errno::EINVAL);
        }
        let mut free = vec![BTreeSet::new(); max_order as usize + 1];
        let mut roots = Vec::new();
        let mut offset = 0;
        while offset < size {
            let order = (size - offset).ilog2().min(max_order);
            roots.push((offset, order));
            free[order as usize].insert(offset);
            offset += 1 << order;
        }
        Ok(DrmBuddy {
            size,
            max_order,
            roots,
            free,
            allocated: BTreeMap::new(),
            avail: size,
        })
    }

    /// Pages managed.
    ///
    /// Kernel: `drm_buddy::size` (in chunks, main).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Pages free.
    ///
    /// Kernel: `drm_buddy::avail` (in chunks, main).
    pub fn avail(&self) -> u64 {
        self.avail
    }

    /// The largest block order.
    ///
    /// Kernel: `drm_buddy::max_order` (main).
    pub fn max_order(&self) -> u32 {
        self.max_order
    }

    /// Free blocks of `order`.
    ///
    /// Kernel: the length of `drm_buddy::free_list[order]`
    /// (`drm_buddy_print()`, main).
    pub fn free_blocks(&self, order: u32) -> usize {
        self.free.get(order as usize).map_or(0, BTreeSet::len)
    }

    /// Allocates one block of `2^order` pages; returns its first page.
    ///
    /// Kernel: `drm_buddy_alloc_blocks(mm, 0, size, 2^order pages,
    /// 2^order pages, &blocks, 0)`, i.e. `alloc_from_freelist()` (main).
    ///
    /// # Errors
    ///
    /// - `EINVAL`: `order > max_order`.
    /// - `ENOSPC`: no free block is large enough.
    pub fn alloc(&mut self, order: u32) -> Result<u64, Errno> {
        if order > self.max_order {
            return Err(Errno::EINVAL);
        }
        let (mut have, start) = (order..=self.max_order)
            .find_map(|o| Some((o, *self.free[o as usize].last()?)))
            .ok_or(Errno::ENOSPC)?;
        self.free[have as usize].remove(&start);
        let mut start = start;
        while have > order {
            have -= 1;
            // split_block(): both halves free, carry on with the right one.
            self.free[have as usize].insert(start);
            start += 1 << have;
        }
        self.allocated.insert(start, order);
        self.avail -= 1 << order;
        Ok(start)
    }

    /// Frees the allocated block that starts at `start`; returns its order.
    ///
    /// Kernel: `drm_buddy_free_block(mm, block)` (`__drm_buddy_free()`, main).
    ///
    /// # Errors
    ///
    /// `EINVAL`: no allocated block starts at `start` (the kernel would
    /// `BUG_ON(!drm_buddy_block_is_allocated(block))`).
    pub fn free(&mut self, start: u64) -> Result<u32, Errno> {
        let order = self.allocated.remove(&start).ok_or(Errno::EINVAL)?;
        self.avail += 1 << order;
        let cap = self.root_order(start);
        let (mut start, mut o) = (start, order);
        while o < cap {
            let buddy = start ^ (1 << o);
            if !self.free[o as usize].remove(&buddy) {
                break;
            }
            start = start.min(buddy);
            o += 1;
        }
        self.free[o as usize].insert(start);
        Ok(order)
    }

    /// The order of the root block that holds page `start`.
    fn root_order(&self, start: u64) -> u32 {
        self.roots
            .iter()
            .find(|&&(s, o)| (s..s + (1 << o)).contains(&start))
            .map_or(0, |&(_, o)| o)
    }

    /// Checks that the free and allocated blocks tile `0..size` exactly,
    /// that every block is aligned to its order inside its root, that no
    /// two free buddies are left unmerged, and that `avail` adds up.
    ///
    /// Kernel: none (the kernel's kunit tests check the same properties).
    ///
    /// # Errors
    ///
    /// A message naming the first broken invariant.
    pub fn validate(&self) -> Result<(), String> {
        let mut blocks: Vec<(u64, u32, bool)> = self
            .allocated
            .iter()
            .map(|(&s, &o)| (s, o, false))
            .collect();
        for (o, set) in self.free.iter().enumerate() {
            let o = u32::try_from(o).map_err(|e| e.to_string())?;
            blocks.extend(set.iter().map(|&s| (s, o, true)));
        }
        blocks.sort_unstable();
        let mut next = 0;
        let mut free_pages = 0;
        for &(s, o, is_free) in &blocks {
            if s != next {
                return Err(format!("block at {s}, expected one at {next}"));
            }
            if s % (1 << o) != 0 || o > self.root_order(s) {
                return Err(format!("block at {s} of order {o} is misaligned"));
            }
            if is_free {
                free_pages += 1 << o;
                let buddy = s ^ (1 << o);
                if o < self.root_order(s) && self.free[o as usize].contains(&buddy) {
                    return Err(format!("free buddies {s} and {buddy} not merged"));
                }
            }
            next = s + (1 << o);
        }
        if next != self.size || free_pages != self.avail {
            return Err(format!(
                "blocks end at {next} of {}, {free_pages} free pages but avail {}",
                self.size, self.avail
            ));
        }
        Ok(())
    }
}

/// The driver's side of device memory: the buddy allocator plus, for each
/// SVM block, how many of its folios are still allocated.
///
/// Kernel: `struct drm_buddy` behind `xe_ttm_vram_mgr`, and the
/// `drm_pagemap_zdd` reference that keeps a device allocation alive until
/// its last page is freed (`drivers/gpu/drm/drm_pagemap.c`, main).
#[derive(Debug)]
struct Devmem {
    buddy: DrmBuddy,
    /// SVM block start → live folios in it.
    blocks: BTreeMap<u64, u64>,
}

/// The driver's `dev_pagemap_ops`: `folio_free` counts the folio out of
/// its block, and the block's last folio gives the block back to the buddy
/// allocator.
///
/// Kernel: the `folio_free` op of `drm_pagemap` → the
/// zdd's last put → `xe_svm_devmem_release()`, which puts the buffer object
/// and so its buddy blocks (7.0).
///
/// # Differences from the kernel
///
/// The block is found from the folio's head index, never from the folio's
/// order: under [`ReinitPolicy::AtFree`] `folio_free` sees the folio
/// already reset to order 0.
#[derive(Debug)]
struct XeDevmem {
    state: Mutex<Devmem>,
    bad_frees: AtomicU64,
}

impl DevPagemapOps for XeDevmem {
    fn folio_free(&self, folio: Folio<'_>) {
        let head = folio.page().index() as u64;
        let mut st = self.state.lock();
        let Some((&start, live)) = st.blocks.range_mut(..=head).next_back() else {
            self.bad_frees.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if *live == 0 {
            self.bad_frees.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *live -= 1;
        if *live == 0 {
            st.blocks.remove(&start);
            if st.buddy.free(start).is_err() {
                self.bad_frees.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn migrate_to_ram(&self, _vmf: &VmFault<'_>) -> Result<(), Errno> {
        Ok(())
    }
}

/// The settings of one run.
///
/// Kernel: none (model only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XeConfig {
    /// How freed large folios are reset.
    pub policy: ReinitPolicy,
    /// Concurrent GPU fault handlers.
    pub threads: usize,
    /// Operations per handler.
    pub iterations: usize,
    /// Seed of every handler's generator.
    pub seed: u64,
    /// VRAM pages in the pool (a multiple of 512 keeps every root 2 MiB).
    pub vram_pages: u64,
    /// Allocations each handler keeps resident before it evicts one.
    pub resident: usize,
    /// How the handlers run: on threads of their own, or interleaved on
    /// the calling thread in a seeded order.
    pub schedule: Schedule,
}

/// How [`run`] runs its fault handlers.
///
/// Kernel: none (model only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Schedule {
    /// One OS thread per handler: real concurrency, so which handler gets
    /// which block (and so which hazards show) depends on timing.
    #[default]
    Threads,
    /// Every handler on the calling thread; before each operation a
    /// generator seeded with this value picks which handler runs it. The
    /// handlers still share and reuse each other's blocks, but a run is
    /// reproducible, so tests can assert what it shows.
    Interleaved(u64),
}

impl XeConfig {
    /// 16 MiB of VRAM and 12 resident allocations per handler: small
    /// enough that freed 2 MiB blocks are soon reused at smaller orders.
    ///
    /// Kernel: none (model only).
    pub const fn new(policy: ReinitPolicy, threads: usize, iterations: usize, seed: u64) -> Self {
        XeConfig {
            policy,
            threads,
            iterations,
            seed,
            vram_pages: 4096,
            resident: 12,
            schedule: Schedule::Threads,
        }
    }
}

/// What one fault handler did and saw.
///
/// Kernel: none (model only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandlerStats {
    /// Operations (SVM faults plus buffer-object allocations).
    pub ops: u64,
    /// SVM faults that got a VRAM block.
    pub svm_faults: u64,
    /// Device folios those faults initialised (or tried to).
    pub folios: u64,
    /// Buffer objects allocated.
    pub bo_allocs: u64,
    /// 4 KiB / 64 KiB folios placed in a 2 MiB block that once held a
    /// 2 MiB folio: the reuse behind hazards H1–H4.
    pub reuse_small: u64,
    /// Allocations that found no free block even after evicting.
    pub alloc_failures: u64,
    /// Hazard H1: `zone_device_folio_init()` would have slept on a stale
    /// `PG_locked`.
    pub would_block: u64,
    /// Hazard H4: the new folio's `page_folio()` or `page_pgmap()` does not
    /// name it.
    pub wrong_folio: u64,
    /// Hazards H2/H5: the new folio's order is not the one asked for.
    pub wrong_order: u64,
    /// Pages of folios set aside after a hazard (never freed, so their
    /// blocks stay allocated).
    pub set_aside_pages: u64,
    /// Pagemap references those folios still hold.
    pub set_aside_refs: u64,
    /// `WARN_ON` hits on this handler's thread.
    pub warnings: u64,
}

impl HandlerStats {
    /// The three per-folio hazard counts added up.
    ///
    /// Kernel: none (model only).
    pub fn hazard_events(&self) -> u64 {
        self.would_block + self.wrong_folio + self.wrong_order
    }

    fn add(&mut self, o: &HandlerStats) {
        self.ops += o.ops;
        self.svm_faults += o.svm_faults;
        self.folios += o.folios;
        self.bo_allocs += o.bo_allocs;
        self.reuse_small += o.reuse_small;
        self.alloc_failures += o.alloc_failures;
        self.would_block += o.would_block;
        self.wrong_folio += o.wrong_folio;
        self.wrong_order += o.wrong_order;
        self.set_aside_pages += o.set_aside_pages;
        self.set_aside_refs += o.set_aside_refs;
        self.warnings += o.warnings;
    }
}

/// The outcome of one run.
///
/// Kernel: none (model only).
#[derive(Clone, Debug, PartialEq)]
pub struct XeReport {
    /// The settings.
    pub config: XeConfig,
    /// One entry per handler.
    pub per_thread: Vec<HandlerStats>,
    /// The handlers' stats added up.
    pub total: HandlerStats,
    /// Pagemap references after every handler released everything, minus
    /// the baseline and minus what set-aside folios still hold: 0 when
    /// every free put exactly what its allocation took.
    pub ref_imbalance: i64,
    /// `folio_free` calls for a folio in no live block.
    pub bad_frees: u64,
    /// VRAM pages still allocated in the buddy after every handler
    /// released everything: the blocks pinned by set-aside folios.
    pub stuck_pages: u64,
    /// `true` if the pagemap was unmapped at the end (only tried when
    /// nothing is set aside and the references balance).
    pub teardown_ok: bool,
    /// Wall time of the handlers.
    pub elapsed: Duration,
}

impl XeReport {
    /// `true` if any hazard was seen (per-folio events or a ref imbalance).
    ///
    /// Kernel: none (model only).
    pub fn has_hazards(&self) -> bool {
        self.total.hazard_events() != 0 || self.ref_imbalance != 0
    }

    /// Operations per second over all handlers.
    ///
    /// Kernel: none (model only).
    pub fn ops_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.total.ops as f64 / secs
        } else {
            0.0
        }
    }

    /// Device folios initialised (or tried) per second over all handlers:
    /// comparable across policies, whose operation mixes differ once
    /// handlers race.
    ///
    /// Kernel: none (model only).
    pub fn folios_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.total.folios as f64 / secs
        } else {
            0.0
        }
    }

    /// A table with one row per handler and a total row, followed by the
    /// pagemap's and the pool's accounting.
    ///
    /// Kernel: none (model only).
    pub fn render(&self) -> String {
        let c = &self.config;
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "policy {:?} ({})\n  {} handlers x {} ops, seed {:#x}, {} MiB VRAM, {} resident per handler",
            c.policy,
            policy_summary(c.policy),
            c.threads,
            c.iterations,
            c.seed,
            c.vram_pages * 4 / 1024,
            c.resident
        );
        let _ = writeln!(
            out,
            "  {:>7} {:>5} {:>5} {:>6} {:>5} {:>9} {:>11} {:>11} {:>11} {:>10}",
            "handler",
            "ops",
            "svm",
            "folios",
            "bo",
            "2M->small",
            "would-block",
            "wrong-folio",
            "wrong-order",
            "set-aside"
        );
        let row = |out: &mut String, name: &str, s: &HandlerStats| {
            let _ = writeln!(
                out,
                "  {name:>7} {:>5} {:>5} {:>6} {:>5} {:>9} {:>11} {:>11} {:>11} {:>6} KiB",
                s.ops,
                s.svm_faults,
                s.folios,
                s.bo_allocs,
                s.reuse_small,
                s.would_block,
                s.wrong_folio,
                s.wrong_order,
                s.set_aside_pages * 4
            );
        };
        for (i, s) in self.per_thread.iter().enumerate() {
            row(&mut out, &i.to_string(), s);
        }
        row(&mut out, "total", &self.total);
        let _ = writeln!(
            out,
            "  ref imbalance {:+} pages; VRAM stuck {} KiB; bad frees {}; WARNs {}; alloc failures {}; teardown {}; {:.0} ops/s",
            self.ref_imbalance,
            self.stuck_pages * 4,
            self.bad_frees,
            self.total.warnings,
            self.total.alloc_failures,
            if self.teardown_ok {
                "ok"
            } else {
                "skipped (pages held)"
            },
            self.ops_per_sec()
        );
        out
    }
}

/// One line per report, for comparing policies. Operations that found no
/// VRAM count in `ops/s` too, so under a policy whose pool ends up stuck
/// the rate is of failures: read it next to `alloc-fail`.
///
/// Kernel: none (model only).
pub fn render_summary(reports: &[XeReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:>11} {:>11} {:>11} {:>13} {:>11} {:>10} {:>9} {:>9}",
        "policy",
        "would-block",
        "wrong-folio",
        "wrong-order",
        "ref-imbalance",
        "stuck-VRAM",
        "alloc-fail",
        "ops/s",
        "folios/s"
    );
    for r in reports {
        let _ = writeln!(
            out,
            "{:<8} {:>11} {:>11} {:>11} {:>13} {:>7} KiB {:>10} {:>9.0} {:>9.0}",
            format!("{:?}", r.config.policy),
            r.total.would_block,
            r.total.wrong_folio,
            r.total.wrong_order,
            format!("{:+}", r.ref_imbalance),
            r.stuck_pages * 4,
            r.total.alloc_failures,
            r.ops_per_sec(),
            r.folios_per_sec()
        );
    }
    out
}

/// Which design a policy stands for.
fn policy_summary(p: ReinitPolicy) -> &'static str {
    match p {
        ReinitPolicy::None => "6.19: nothing resets a freed large folio",
        ReinitPolicy::AtFree => "2026-01-07 sketch: reset at free, smp_wmb, then folio_free",
        ReinitPolicy::AtAlloc => "merged fix: zone_device_page_init resets its pages",
    }
}

/// The shared state of a run.
struct Pool {
    space: DevicePrivateSpace,
    pgmap: Arc<DevPagemap>,
    ops: Arc<XeDevmem>,
    /// Per 2 MiB block: has it ever held a 2 MiB folio?
    held_2m: Vec<AtomicBool>,
}

/// What a handler holds.
#[derive(Clone, Debug)]
enum Held {
    /// An SVM block: the heads of its folios that are in use (set-aside
    /// folios are not listed: they are never freed).
    Svm(Vec<usize>),
    /// A buffer object's block.
    Bo(u64),
}

/// Runs the Xe workload: `threads` fault handlers, `iterations` operations
/// each, on a 16 MiB pool, under `policy`.
///
/// Kernel: none (model only); see the module docs.
///
/// # Errors
///
/// As for [`run`].
pub fn run_workload(
    policy: ReinitPolicy,
    threads: usize,
    iterations: usize,
    seed: u64,
) -> Result<XeReport, Errno> {
    run(&XeConfig::new(policy, threads, iterations, seed))
}

/// Runs the Xe workload with `cfg`.
///
/// Kernel: none (model only); see the module docs.
///
/// Each handler, per operation: evicts one of its allocations (chosen at
/// random) if it holds `resident`; then either takes an SVM fault (70%) or
/// creates a buffer object (30%: 64 KiB to 2 MiB, buddy only, no
/// `struct page` touched). An SVM fault allocates a 4 KiB, 64 KiB or 2 MiB
/// block (weights 5:3:2) and migrates into it as folios whose order
/// follows the CPU pages being migrated (the source folio's order, as
/// `migrate_vma_*` does): a 2 MiB block becomes one order-9 folio (half the
/// time), 32 order-4 folios or 512 order-0 folios; a 64 KiB block one
/// order-4 folio or 16 order-0 folios. Each folio is initialised with
/// `zone_device_folio_init()`, checked, and unlocked. A failed allocation
/// evicts once more and retries once. At the end every handler releases
/// everything it holds (`folio_put()` on each folio, a buddy free for a
/// buffer object), and the pagemap is unmapped if nothing is held.
///
/// # Errors
///
/// Internal errors only (hazards are counted, not errors):
/// - `EINVAL`: `threads`, `iterations` or `resident` is 0, or
///   `vram_pages` is 0 or not a multiple of 512.
/// - `ENOMEM`/`EBUSY`: the pagemap cannot be created.
/// - `EBUSY`: the references balance and nothing is set aside, yet the
///   pagemap cannot be unmapped (a page is still allocated).
pub fn run(cfg: &XeConfig) -> Result<XeReport, Errno> {
    if cfg.threads == 0
        || cfg.iterations == 0
        || cfg.resident == 0
        || cfg.vram_pages == 0
        || !cfg.vram_pages.is_multiple_of(1 << ORDER_2M)
    {
        return Err(Errno::EINVAL);
    }
    let ops = Arc::new(XeDevmem {
        state: Mutex::new(Devmem {
            buddy: DrmBuddy::new(cfg.vram_pages, ORDER_2M)?,
            blocks: BTreeMap::new(),
        }),
        bad_frees: AtomicU64::new(0),
    });
    let space = DevicePrivateSpace::with_config(SpaceConfig {
        reinit: cfg.policy,
        ..SpaceConfig::default()
    });
    let params = PagemapParams::private(PageCount::new(cfg.vram_pages), Owner(0x8e), ops.clone());
    let pgmap = space.memremap_device_private_pagemap(params, 0)?;
    let blocks_2m = cfg.vram_pages >> ORDER_2M;
    let pool = Pool {
        space,
        pgmap,
        ops,
        held_2m: (0..blocks_2m).map(|_| AtomicBool::new(false)).collect(),
    };
    let baseline = pool.pgmap.percpu_ref().count();

    let start = Instant::now();
    let seed_of = |t: usize| {
        let mix = (t as u64).wrapping_mul(0xa076_1d64_78bd_642f);
        SplitMix64::new(cfg.seed ^ mix).next_u64()
    };
    let per_thread: Vec<HandlerStats> = match cfg.schedule {
        Schedule::Threads => std::thread::scope(|s| {
            let handles: Vec<_> = (0..cfg.threads)
                .map(|t| {
                    let pool = &pool;
                    let seed = seed_of(t);
                    s.spawn(move || {
                        let (mut stats, w) = warn::capture(|| {
                            let mut h = Handler::new(cfg, seed);
                            while h.step(pool, cfg) {}
                            h.finish(pool)
                        });
                        stats.warnings = w.count() as u64;
                        stats
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        }),
        Schedule::Interleaved(order) => {
            let (mut stats, w) = warn::capture(|| interleave(&pool, cfg, order, seed_of));
            // One thread saw every WARN; charge them to the first handler.
            if let Some(first) = stats.first_mut() {
                first.warnings = w.count() as u64;
            }
            stats
        }
    };
    let elapsed = start.elapsed();

    let mut total = HandlerStats::default();
    for s in &per_thread {
        total.add(s);
    }
    let held = i64::try_from(total.set_aside_refs).map_err(|_| Errno::EINVAL)?;
    let ref_imbalance = pool.pgmap.percpu_ref().count() - baseline - held;
    let stuck_pages = {
        let st = pool.ops.state.lock();
        st.buddy.size() - st.buddy.avail()
    };
    let mut teardown_ok = false;
    if total.set_aside_pages == 0 && ref_imbalance == 0 {
        pool.space
            .try_memunmap_device_private_pagemap(&pool.pgmap, Duration::from_secs(2))?;
        teardown_ok = true;
    }
    Ok(XeReport {
        config: *cfg,
        per_thread,
        total,
        ref_imbalance,
        bad_frees: pool.ops.bad_frees.load(Ordering::Relaxed),
        stuck_pages,
        teardown_ok,
        elapsed,
    })
}

/// Runs every handler on this thread, one operation at a time, choosing
/// the next handler with a generator seeded by `order`.
fn interleave(
    pool: &Pool,
    cfg: &XeConfig,
    order: u64,
    seed_of: impl Fn(usize) -> u64,
) -> Vec<HandlerStats> {
    let mut handlers: Vec<Handler> = (0..cfg.threads)
        .map(|t| Handler::new(cfg, seed_of(t)))
        .collect();
    let mut live: Vec<usize> = (0..handlers.len()).collect();
    let mut pick = SplitMix64::new(order);
    while !live.is_empty() {
        let i = usize::try_from(pick.below(live.len() as u64)).unwrap_or(0);
        if !handlers[live[i]].step(pool, cfg) {
            live.swap_remove(i);
        }
    }
    handlers.into_iter().map(|h| h.finish(pool)).collect()
}

/// One GPU fault handler: its generator, what it holds and what it saw.
struct Handler {
    rng: SplitMix64,
    st: HandlerStats,
    held: Vec<Held>,
    left: usize,
}

impl Handler {
    fn new(cfg: &XeConfig, seed: u64) -> Self {
        Handler {
            rng: SplitMix64::new(seed),
            st: HandlerStats::default(),
            held: Vec::with_capacity(cfg.resident),
            left: cfg.iterations,
        }
    }

    /// One operation; `false` once the handler has done all of them.
    fn step(&mut self, pool: &Pool, cfg: &XeConfig) -> bool {
        let Some(left) = self.left.checked_sub(1) else {
            return false;
        };
        self.left = left;
        let (rng, st, held) = (&mut self.rng, &mut self.st, &mut self.held);
        if held.len() >= cfg.resident {
            evict_random(pool, held, rng);
        }
        st.ops += 1;
        let svm = rng.below(10) < 7;
        let order = if svm {
            match rng.below(10) {
                0..5 => 0,
                5..8 => ORDER_64K,
                _ => ORDER_2M,
            }
        } else {
            let spread = u64::from(ORDER_2M - ORDER_64K + 1);
            ORDER_64K + u32::try_from(rng.below(spread)).unwrap_or(0)
        };
        let Some(start) = alloc_block(pool, held, rng, order) else {
            st.alloc_failures += 1;
            return true;
        };
        if svm {
            st.svm_faults += 1;
            held.push(svm_fault(pool, rng, start, order, st));
        } else {
            st.bo_allocs += 1;
            held.push(Held::Bo(start));
        }
        true
    }

    /// Releases everything the handler still holds.
    fn finish(mut self, pool: &Pool) -> HandlerStats {
        for h in self.held.drain(..) {
            release(pool, h);
        }
        self.st
    }
}

/// A buddy block of `order`; on failure, evict one allocation and retry.
fn alloc_block(pool: &Pool, held: &mut Vec<Held>, rng: &mut SplitMix64, order: u32) -> Option<u64> {
    for _ in 0..2 {
        if let Ok(s) = pool.ops.state.lock().buddy.alloc(order) {
            return Some(s);
        }
        if held.is_empty() {
            return None;
        }
        evict_random(pool, held, rng);
    }
    None
}

fn evict_random(pool: &Pool, held: &mut Vec<Held>, rng: &mut SplitMix64) {
    let i = usize::try_from(rng.below(held.len() as u64)).unwrap_or(0);
    let h = held.swap_remove(i);
    release(pool, h);
}

/// Drops what a handler holds: the last reference of each folio (so
/// `free_zone_device_folio()` → `folio_free`, and with the block's last
/// folio, the buddy), or a buffer object's block.
fn release(pool: &Pool, h: Held) {
    match h {
        Held::Svm(heads) => {
            for head in heads {
                if let Some(p) = PageRef::new(&pool.pgmap, head) {
                    // What core mm does on the last unmap: put page_folio().
                    folio_put(p.folio());
                }
            }
        }
        Held::Bo(start) => {
            // Cannot fail: the handler owns the block.
            let _ = pool.ops.state.lock().buddy.free(start);
        }
    }
}

/// An SVM fault that got the block at `start` of `block_order`: migrate
/// into it as folios of the source's order.
fn svm_fault(
    pool: &Pool,
    rng: &mut SplitMix64,
    start: u64,
    block_order: u32,
    st: &mut HandlerStats,
) -> Held {
    let folio_order = match (block_order, rng.below(4)) {
        (ORDER_2M, 0 | 1) => ORDER_2M,
        (ORDER_2M, 2) => ORDER_64K,
        (ORDER_64K, 0 | 1) => ORDER_64K,
        _ => 0,
    };
    let count = 1u64 << (block_order - folio_order);
    pool.ops.state.lock().blocks.insert(start, count);
    let mut heads = Vec::new();
    for i in 0..count {
        st.folios += 1;
        let head = start + (i << folio_order);
        if let Some(h) = init_folio(pool, head, folio_order, st) {
            heads.push(h);
        }
    }
    Held::Svm(heads)
}

/// Initialises one folio at `head` and checks it. Returns its head index
/// if the handler keeps it, `None` if it was set aside.
fn init_folio(pool: &Pool, head: u64, order: u32, st: &mut HandlerStats) -> Option<usize> {
    let nr = 1u64 << order;
    let idx = usize::try_from(head).ok();
    let page = idx.and_then(|i| PageRef::new(&pool.pgmap, i));
    let (Some(idx), Some(page), Some(ord)) = (idx, page, Order::new(order)) else {
        // Unreachable: blocks lie in the pagemap.
        return set_aside(st, nr, 0);
    };
    if let Some(mark) = usize::try_from(head >> ORDER_2M)
        .ok()
        .and_then(|i| pool.held_2m.get(i))
    {
        if order == ORDER_2M {
            mark.store(true, Ordering::Relaxed);
        } else if mark.load(Ordering::Relaxed) {
            st.reuse_small += 1;
        }
    }
    let folio = match zone_device_folio_init(Folio::from_head(page), &pool.pgmap, ord) {
        Ok(f) => f,
        Err(InitError::WouldBlock(_)) => {
            // H1: the kernel sleeps here for ever; its references are undone.
            st.would_block += 1;
            return set_aside(st, nr, 0);
        }
        Err(InitError::Errno(_)) => {
            // page_pgmap() did not resolve: a stale link the kernel would
            // have followed (H4). Nothing was taken.
            st.wrong_folio += 1;
            return set_aside(st, nr, 0);
        }
    };
    let cookie = pool.pgmap.cookie().get();
    let last_ok = usize::try_from(nr - 1)
        .ok()
        .and_then(|n| page.nth(n))
        .is_some_and(|t| t.folio().page() == page);
    if folio.page() != page || page.raw(word::COMPOUND_HEAD) != cookie || !last_ok {
        // H4: page_folio() names another page; every later get, put and
        // unlock would hit that page. The folio keeps its references.
        st.wrong_folio += 1;
        return set_aside(st, nr, nr);
    }
    if folio.order() != ord || folio.nr_pages().get() != nr {
        // H2/H5: a stale PG_head or order; its free will put nr_pages refs.
        st.wrong_order += 1;
    }
    // The copy into the pages would run here; then the folio is unlocked
    // and mapped.
    folio.unlock();
    Some(idx)
}

/// Leaves a folio of `pages` pages allocated for ever, holding `refs`
/// pagemap references.
fn set_aside(st: &mut HandlerStats, pages: u64, refs: u64) -> Option<usize> {
    st.set_aside_pages += pages;
    st.set_aside_refs += refs;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ```text
    /// 8 pages, max order 3:  [        0..8 free        ]
    /// alloc(0): split, keep the right half each time -> page 7
    ///           free: [0..4) order 2, [4..6) order 1, 6 order 0
    /// alloc(0): the highest free order-0 block        -> page 6
    /// alloc(1): the order-1 block                     -> page 4
    /// ```
    #[test]
    fn buddy_takes_the_highest_block_and_the_right_half() {
        let mut b = DrmBuddy::new(8, 3).unwrap();
        assert_eq!(b.alloc(0), Ok(7));
        assert_eq!(
            (b.free_blocks(2), b.free_blocks(1), b.free_blocks(0)),
            (1, 1, 1)
        );
        assert_eq!(b.alloc(0), Ok(6));
        assert_eq!(b.alloc(1), Ok(4));
        assert_eq!(b.alloc(2), Ok(0));
        assert_eq!(b.alloc(0), Err(Errno::ENOSPC));
        assert_eq!(b.avail(), 0);
        b.validate().unwrap();
        // Frees merge back to one root block.
        for s in [6, 0, 7, 4] {
            b.free(s).unwrap();
            b.validate().unwrap();
        }
        assert_eq!(b.free_blocks(3), 1);
        assert_eq!(b.avail(), 8);
    }

    #[test]
    fn buddy_reuses_a_freed_2m_block_for_small_orders() {
        // Two 2 MiB roots; a 2 MiB block freed and reused for 4 KiB and
        // 64 KiB blocks inside it, from its top down.
        let mut b = DrmBuddy::new(1024, 9).unwrap();
        let big = b.alloc(9).unwrap();
        assert_eq!(big, 512);
        let other = b.alloc(9).unwrap();
        assert_eq!(other, 0);
        b.free(big).unwrap();
        assert_eq!(b.alloc(0), Ok(big + 511));
        assert_eq!(b.alloc(4), Ok(big + 480));
        assert_eq!(b.alloc(0), Ok(big + 510));
        b.validate().unwrap();
    }

    #[test]
    fn buddy_errors_and_odd_sizes() {
        assert_eq!(DrmBuddy::new(0, 9).err(), Some(Errno::EINVAL));
        assert_eq!(DrmBuddy::new(8, 21).err(), Some(Errno::EINVAL));
        // 13 pages, max order 9: roots 0 (order 3), 8 (order 2), 12 (order 0).
        let mut b = DrmBuddy::new(13, 9).unwrap();
        assert_eq!(b.max_order(), 9);
        assert_eq!(b.alloc(10), Err(Errno::EINVAL));
        assert_eq!(b.alloc(4), Err(Errno::ENOSPC));
        assert_eq!(b.alloc(3), Ok(0));
        assert_eq!(b.alloc(0), Ok(12), "the smallest order that fits");
        assert_eq!(b.free(5), Err(Errno::EINVAL));
        b.free(12).unwrap();
        assert_eq!(b.free(12), Err(Errno::EINVAL), "double free");
        b.free(0).unwrap();
        b.validate().unwrap();
        // Roots never merge with each other.
        assert_eq!(
            (b.free_blocks(3), b.free_blocks(2), b.free_blocks(0)),
            (1, 1, 1)
        );
    }

    #[test]
    fn buddy_random_sequences_stay_valid() {
        let mut rng = SplitMix64::new(42);
        let mut b = DrmBuddy::new(1536, 9).unwrap();
        let mut live = Vec::new();
        for _ in 0..2000 {
            if !live.is_empty() && rng.below(2) == 0 {
                let i = usize::try_from(rng.below(live.len() as u64)).unwrap();
                let s = live.swap_remove(i);
                b.free(s).unwrap();
            } else if let Ok(s) = b.alloc(u32::try_from(rng.below(10)).unwrap()) {
                live.push(s);
            }
            b.validate().unwrap();
        }
        for s in live {
            b.free(s).unwrap();
        }
        assert_eq!(b.avail(), 1536);
        assert_eq!(b.free_blocks(9), 3);
    }

    #[test]
    fn bad_configurations_are_einval() {
        let ok = XeConfig::new(ReinitPolicy::AtAlloc, 1, 1, 0);
        for bad in [
            XeConfig { threads: 0, ..ok },
            XeConfig {
                iterations: 0,
                ..ok
            },
            XeConfig { resident: 0, ..ok },
            XeConfig {
                vram_pages: 0,
                ..ok
            },
            XeConfig {
                vram_pages: 100,
                ..ok
            },
        ] {
            assert_eq!(run(&bad).err(), Some(Errno::EINVAL), "{bad:?}");
        }
        assert!(run(&ok).unwrap().teardown_ok);
    }
}
