//! The stress harness behind `devpriv stress` (`docs/testing.md`, "Stress").
//!
//! Kernel: none (model only). It runs `threads` threads over every
//! operation of the model at once, for a bounded time (and optionally a
//! bounded number of operations), checking invariants as it goes and again
//! at the end. The kernel paths exercised are
//! `memremap_device_private_pagemap()`, `memunmap_device_private_pagemap()`
//! (always through the model's bounded `try_` variant, so that a leaked
//! reference shows as a violation, not a hang), `zone_device_folio_init()`,
//! `folio_get()`, `folio_put()` → `free_zone_device_folio()` →
//! `dev_pagemap_ops::folio_free`, `device_private_offset_to_page()` (index
//! and tree paths), `device_private_folio_to_offset()`, the `migrate_vma_*`
//! calls of `lib/test_hmm.c` (`HMM_DMIRROR_MIGRATE_TO_DEV`, `_TO_SYS`,
//! `_SNAPSHOT`), `do_swap_page()` → `migrate_to_ram()`, and
//! `page_vma_mapped_walk()` with `PVMW_DEVICE_PRIVATE`.
//!
//! # The workload
//!
//! One shared [`DevicePrivateSpace`] holds:
//!
//! - **Pools**: a few long-lived pagemaps, each with a driver allocator (a
//!   [`Mutex`]-protected ownership table, like a real driver's free list).
//!   Threads take `2^order` aligned pages (order 0..=9), hand them to
//!   `zone_device_folio_init()`, take and drop references, pass references
//!   to other threads through a hand-off queue, and drop the last one,
//!   whose `folio_free` gives the pages back to the allocator.
//! - **Churn pagemaps**: each thread keeps up to two small pagemaps of
//!   random sizes alive, allocates folios on them, and unmaps them — with a
//!   bounded `try_memunmap` that must time out (`EBUSY`) while a folio is
//!   still held, and complete once it is dropped.
//! - **Device chunks**: two `dmirror` devices memremap chunks on demand as
//!   each thread migrates pages of its own address space ([`Mm`]) to a
//!   device and back, faults them back by CPU writes, snapshots them, and
//!   walks device-private entries with `page_vma_mapped_walk()`.
//!
//! # Invariants checked continuously
//!
//! - **Lookups** (batches of random offsets under one read section, through
//!   the section index or the tree): every page found is the page at that
//!   offset (its pagemap's first offset plus its index); an offset of a
//!   live pagemap (the harness's own, per the shadow map, or a `dmirror`
//!   chunk its device lists) resolves to exactly that pagemap, even while
//!   a neighbour in the same section is mapped or unmapped; an offset of a
//!   dying pagemap resolves to it or to nothing; an offset of no known
//!   pagemap resolves to nothing (or, while a memremap is in flight, to a
//!   page of a pagemap not yet recorded), never to an unmapped pagemap;
//!   each `None` raises exactly one `WARN` ("no pagemap at this offset").
//! - **Ownership**: the allocator's ownership table refuses to hand out a
//!   page already owned, and `folio_free` must name a folio that was
//!   handed out, at the order it was handed out (no double free, no page
//!   owned twice). Every page handed out has refcount 0 in its
//!   `struct page`.
//! - **Folios**: after `zone_device_folio_init()` the folio has refcount 1,
//!   is locked, has the requested order, every tail's `page_folio()` is the
//!   head, `page_pgmap()` is the pagemap, and `device_private_folio_to_offset()`
//!   gives its offset; the same metadata is re-checked whenever a held
//!   reference is used (another owner re-initialising the pages would break
//!   it).
//! - **Pagemap references**: on a churn pagemap (private to one thread)
//!   the `percpu_ref` count is exactly the baseline plus the pages held.
//! - **Unmapping**: `try_memunmap` with a folio held gives `EBUSY`; after
//!   the last put the unmap completes, the pagemap reports unmapped, its
//!   allocator is idle, and its offsets no longer resolve to it.
//! - **Migration**: the data a migration reads back is each page's last
//!   written value; a CPU write after a fault reads back; snapshots of a
//!   mapped range have no error entries; a device-private PTE is found by
//!   the walk for its offset and never by a pfn walk of the same number.
//! - **`validate()`** of the whole space, now and then.
//! - **No unexpected `WARN`**: every operation runs under
//!   [`warn::capture`]; any `WARN` other than the lookup misses above is a
//!   violation.
//!
//! # At the end
//!
//! Every thread drops what it holds, unmaps its churn pagemaps, checks its
//! pages' final values, releases its mirror and unmaps its address space.
//! Then the audit: the hand-off queue is drained; every pool allocator is
//! idle, every pool page has refcount 0 and each pool's `percpu_ref` is
//! back at its baseline; each pool unmaps; no churn pagemap is left; every
//! device is idle (`check_idle()`) and removes its chunks; the space is
//! empty and `validate()`s; all system memory is free.

use crate::simulate::{cpu_write, value, walk_findings};
use devpriv_core::random::SplitMix64;
use devpriv_core::sync::Mutex;
use devpriv_core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use devpriv_core::{DevicePrivateOffset, Errno, Order, PAGE_SIZE, PageCount, Pfn, warn};
use devpriv_drivers::test_hmm::{
    Dmirror, DmirrorConfig, DmirrorDevice, DmirrorProt, HmmDmirrorCmd,
};
use devpriv_migrate::{
    FaultFlags, Memory, Mm, MmConfig, PMD_SIZE, SystemMemory, VmFlags, handle_mm_fault,
};
use devpriv_pagemap::{
    DevPagemap, DevPagemapOps, DevicePrivateSpace, Folio, Owner, PageRef, PagemapParams, VmFault,
    folio_get, folio_put, zone_device_folio_init,
};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Long-lived pool pagemaps.
const POOLS: usize = 3;
/// Pages per pool pagemap (room for four order-9 folios).
const POOL_PAGES: u64 = 2048;
/// Largest folio order handed out.
const MAX_ORDER: u32 = 9;
/// Pool folios one thread holds at most.
const MAX_HELD: usize = 8;
/// References parked in the hand-off queue at most.
const HANDOFF_CAP: usize = 64;
/// Churn pagemaps one thread keeps alive at most.
const MAX_CHURN: usize = 2;
/// Largest churn pagemap, in pages.
const CHURN_MAX_PAGES: u64 = 1100;
/// Offsets per lookup batch (one read section).
const LOOKUP_BATCH: usize = 16;
/// Unmapped ranges remembered for probing.
const GONE_KEEP: usize = 32;
/// `dmirror` devices.
const DEVICES: usize = 2;
/// Device chunk size, in pages (4 MiB).
const CHUNK_PAGES: u64 = 1024;
/// Small pages in each thread's address space.
const SMALL_PAGES: u64 = 256;
/// Violation messages kept (all are counted).
pub const VIOLATION_CAP: usize = 100;
/// Owner of the pool pagemaps.
const POOL_OWNER: Owner = Owner(0x5100);
/// Owner of thread `t`'s churn pagemaps is this plus `t`.
const CHURN_OWNER: u64 = 0x5200;
/// Owner of device `d` is this plus `d`.
const DEVICE_OWNER: u64 = 0xd0;
/// How long a `try_memunmap` with a folio held waits before `EBUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_millis(1);
/// How long a `try_memunmap` after the last put may wait.
const UNMAP_TIMEOUT: Duration = Duration::from_secs(10);
/// The label of the lookup-miss `WARN`.
const MISS_WARN: &str = "no pagemap at this offset";

/// Settings of a stress run.
///
/// Kernel: none (model only).
#[derive(Clone, Copy, Debug)]
pub struct StressConfig {
    /// Worker threads.
    pub threads: usize,
    /// Wall-time bound, in seconds.
    pub secs: u64,
    /// Optional bound on operations dispatched (all threads together).
    pub ops: Option<u64>,
    /// Seed of every random choice.
    pub seed: u64,
}

impl StressConfig {
    /// Checks the settings.
    ///
    /// Kernel: none (model only).
    ///
    /// # Errors
    ///
    /// A one-line explanation of the first bad setting.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=64).contains(&self.threads) {
            return Err("--threads must be in 1..=64".into());
        }
        if !(1..=86_400).contains(&self.secs) {
            return Err("--secs must be in 1..=86400".into());
        }
        if let Some(n) = self.ops
            && !(1..=1_000_000_000_000).contains(&n)
        {
            return Err("--ops must be in 1..=1000000000000".into());
        }
        Ok(())
    }
}

/// Operation kinds, in report order. `lookup` counts offsets (a batch is
/// [`LOOKUP_BATCH`] of them); every other kind counts calls.
const KINDS: [&str; 18] = [
    "memremap",
    "memunmap",
    "try_memunmap_busy",
    "folio_init",
    "folio_get",
    "folio_put",
    "folio_handoff",
    "allocator_full",
    "lookup",
    "lookup_tree",
    "migrate_to_device",
    "migrate_thp_to_device",
    "split_fallback",
    "cpu_fault_back",
    "migrate_to_system",
    "snapshot",
    "page_vma_mapped_walk",
    "validate",
];

/// What one thread (or the audit) counted.
#[derive(Debug, Default)]
struct Stats {
    ops: BTreeMap<&'static str, u64>,
    orders: [u64; MAX_ORDER as usize + 1],
    dispatched: u64,
    verified: u64,
    violations: Vec<String>,
    violations_total: u64,
    /// Lookup-miss `WARN`s expected by the current operation.
    expected_now: u64,
    /// Lookup-miss `WARN`s seen in all.
    expected_warns: u64,
}

impl Stats {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        self.verified += 1;
        if !ok {
            self.fail(what());
        }
    }

    fn fail(&mut self, msg: String) {
        self.violations_total += 1;
        if self.violations.len() < VIOLATION_CAP {
            self.violations.push(msg);
        }
    }

    fn count(&mut self, kind: &'static str, n: u64) {
        *self.ops.entry(kind).or_default() += n;
    }
}

// ---------------------------------------------------------------------------
// The driver allocator and its ownership table.

/// A driver's page allocator over one pagemap, and the shadow of who owns
/// each page: `owner[i]` is 0 for a free page, else the thread (plus one)
/// that took it; `heads` maps each handed-out folio's head to its order.
///
/// Kernel: none (a driver's free list, e.g. `dmirror`'s or `drm_buddy`).
#[derive(Debug)]
struct Ledger {
    owner: Vec<u32>,
    heads: BTreeMap<usize, u32>,
    nr_free: usize,
}

impl Ledger {
    fn new(pages: usize) -> Self {
        Ledger {
            owner: vec![0; pages],
            heads: BTreeMap::new(),
            nr_free: pages,
        }
    }

    /// A free, naturally aligned block of `2^order` pages, if a few random
    /// probes find one.
    fn pick(&self, order: u32, rng: &mut SplitMix64) -> Option<usize> {
        let n = 1usize << order;
        let slots = self.owner.len() / n;
        if slots == 0 {
            return None;
        }
        for _ in 0..8 {
            let head = usize::try_from(rng.below(slots as u64)).ok()? * n;
            if self.owner[head..head + n].iter().all(|&o| o == 0) {
                return Some(head);
            }
        }
        None
    }

    /// Records `2^order` pages from `head` as handed out to `who`.
    ///
    /// # Errors
    ///
    /// A message if the range is outside the pagemap or a page in it is
    /// already owned ("no page doubly owned"); nothing changes then.
    fn claim(&mut self, head: usize, order: u32, who: u32) -> Result<(), String> {
        let n = 1usize << order;
        let Some(range) = self.owner.get(head..head + n) else {
            return Err(format!("claim of pages {head}+{n}: beyond the pagemap"));
        };
        if let Some((i, o)) = range.iter().enumerate().find(|(_, o)| **o != 0) {
            return Err(format!(
                "page {} handed out to thread {} while owned by thread {}",
                head + i,
                who.saturating_sub(1),
                o - 1
            ));
        }
        self.owner[head..head + n].fill(who);
        self.heads.insert(head, order);
        self.nr_free -= n;
        Ok(())
    }

    /// Takes a folio back (from `folio_free`).
    ///
    /// # Errors
    ///
    /// A message if `head` was not handed out (a double free, or a folio
    /// nobody allocated), or was handed out at another order. The pages
    /// recorded at `head`, if any, are freed anyway.
    fn release(&mut self, head: usize, order: u32) -> Result<(), String> {
        let Some(was) = self.heads.remove(&head) else {
            return Err(format!(
                "folio_free of page {head} (order {order}), which is not handed out"
            ));
        };
        let n = 1usize << was;
        let mut err = None;
        for (i, o) in self.owner[head..head + n].iter_mut().enumerate() {
            if *o == 0 && err.is_none() {
                err = Some(format!("page {} of folio {head} was not owned", head + i));
            }
            *o = 0;
        }
        self.nr_free += n;
        if was != order {
            return Err(format!(
                "folio_free of page {head} at order {order}, handed out at order {was}"
            ));
        }
        err.map_or(Ok(()), Err)
    }

    /// `Ok` when nothing is handed out.
    fn idle(&self) -> Result<(), String> {
        if self.heads.is_empty() && self.nr_free == self.owner.len() {
            Ok(())
        } else {
            Err(format!(
                "{} folios, {} of {} pages still handed out",
                self.heads.len(),
                self.owner.len() - self.nr_free,
                self.owner.len()
            ))
        }
    }
}

/// The driver of a pool or churn pagemap: `folio_free` gives the pages back
/// to its [`Ledger`]; what goes wrong there is recorded for the audit.
struct Driver {
    ledger: Mutex<Ledger>,
    faults: Mutex<Vec<String>>,
    faults_total: AtomicU64,
}

impl Driver {
    fn new(pages: u64) -> Arc<Self> {
        Arc::new(Driver {
            ledger: Mutex::new(Ledger::new(usize::try_from(pages).unwrap_or(0))),
            faults: Mutex::new(Vec::new()),
            faults_total: AtomicU64::new(0),
        })
    }

    fn record(&self, msg: String) {
        self.faults_total.fetch_add(1, Ordering::Relaxed);
        let mut f = self.faults.lock();
        if f.len() < VIOLATION_CAP {
            f.push(msg);
        }
    }
}

impl DevPagemapOps for Driver {
    fn folio_free(&self, folio: Folio<'_>) {
        let head = folio.page().index();
        let order = folio.order().get();
        if let Err(e) = self.ledger.lock().release(head, order) {
            self.record(format!("pagemap {}: {e}", folio.page().owner().id()));
        }
    }

    fn migrate_to_ram(&self, _vmf: &VmFault<'_>) -> Result<(), Errno> {
        // These pages are never mapped into a page table.
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The shadow map of pagemaps and the lookup judge.

/// One of the harness's own pagemaps, as the shadow sees it.
#[derive(Clone, Copy, Debug)]
struct ShadowMap {
    first: u64,
    nr: u64,
    dying: bool,
}

impl ShadowMap {
    fn contains(&self, off: u64) -> bool {
        (self.first..self.first + self.nr).contains(&off)
    }
}

/// What the harness believes is mapped, keyed by pagemap id. Updated
/// around each memremap (`pending` counts calls in flight: the new
/// pagemap may already be visible) and memunmap (`dying` before the call,
/// removal after it returns: an entry may then briefly overlap a newer
/// pagemap that reuses its range); lookups are judged with the lock held.
#[derive(Debug, Default)]
struct Shadow {
    maps: BTreeMap<u64, ShadowMap>,
    pending: u32,
    /// Recently unmapped `(first, nr, id)`.
    gone: VecDeque<(u64, u64, u64)>,
    /// One past the highest offset any of the harness's pagemaps reached.
    hi: u64,
}

/// What a lookup of one offset may give.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Expect {
    /// `(id, index)` in the live pagemap holding the offset: the lookup
    /// must give exactly that page.
    live: Option<(u64, u64)>,
    /// `(id, index)` in pagemaps being unmapped: that page, or nothing.
    dying: Vec<(u64, u64)>,
    /// A memremap is in flight: a page of a pagemap the shadow does not
    /// know yet is fine (if no live pagemap holds the offset).
    pending: bool,
    /// Unmapped pagemaps that held the offset: never one of these.
    gone: Vec<u64>,
}

/// What a lookup gave: the page's pagemap and index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    id: u64,
    first: u64,
    index: u64,
    owner: Owner,
}

impl Seen {
    fn of(p: PageRef<'_>) -> Self {
        let pm = p.owner();
        Seen {
            id: pm.id(),
            first: pm.first_offset().get(),
            index: p.index() as u64,
            owner: pm.owner(),
        }
    }
}

impl Shadow {
    /// What a lookup of `off` may give; `chunks` are the `dmirror`
    /// devices' chunks (live until the audit), keyed by id.
    fn expect(&self, off: u64, chunks: &BTreeMap<u64, ShadowMap>) -> Expect {
        let mut e = Expect {
            pending: self.pending > 0,
            ..Expect::default()
        };
        for (&id, m) in self.maps.iter().chain(chunks) {
            if m.contains(off) {
                let at = (id, off - m.first);
                if m.dying {
                    e.dying.push(at);
                } else {
                    e.live = Some(at);
                }
            }
        }
        e.gone = self
            .gone
            .iter()
            .filter(|(f, n, id)| (*f..*f + *n).contains(&off) && !self.maps.contains_key(id))
            .map(|g| g.2)
            .collect();
        e
    }

    /// A random offset worth probing: inside a known pagemap, inside a
    /// recently unmapped one, at an edge, or anywhere below the high mark.
    fn probe(&self, rng: &mut SplitMix64, chunks: &BTreeMap<u64, ShadowMap>) -> u64 {
        let pick = |rng: &mut SplitMix64| {
            let i = usize::try_from(rng.below(self.maps.len() as u64)).unwrap_or(0);
            self.maps.values().nth(i).copied()
        };
        let hi = chunks
            .values()
            .map(|m| m.first + m.nr)
            .fold(self.hi, u64::max);
        match rng.below(10) {
            8 if !chunks.is_empty() => {
                let i = usize::try_from(rng.below(chunks.len() as u64)).unwrap_or(0);
                chunks
                    .values()
                    .nth(i)
                    .map_or(0, |m| m.first + rng.below(m.nr))
            }
            0..=4 if !self.maps.is_empty() => pick(rng).map_or(0, |m| m.first + rng.below(m.nr)),
            5 | 6 if !self.gone.is_empty() => {
                let i = usize::try_from(rng.below(self.gone.len() as u64)).unwrap_or(0);
                let (first, nr, _) = self.gone[i];
                first + rng.below(nr)
            }
            7 if !self.maps.is_empty() => pick(rng).map_or(0, |m| match rng.below(4) {
                0 => m.first.saturating_sub(1),
                1 => m.first,
                2 => m.first + m.nr - 1,
                _ => m.first + m.nr,
            }),
            _ => rng.below(hi + 8192),
        }
    }

    fn insert(&mut self, pm: &DevPagemap) {
        let first = pm.first_offset().get();
        let nr = pm.nr_pages().get();
        self.hi = self.hi.max(first + nr);
        self.maps.insert(
            pm.id(),
            ShadowMap {
                first,
                nr,
                dying: false,
            },
        );
    }

    fn set_dying(&mut self, pm: &DevPagemap) {
        if let Some(m) = self.maps.get_mut(&pm.id()) {
            m.dying = true;
        }
    }

    fn remove(&mut self, pm: &DevPagemap) {
        self.maps.remove(&pm.id());
        if self.gone.len() == GONE_KEEP {
            self.gone.pop_front();
        }
        self.gone
            .push_back((pm.first_offset().get(), pm.nr_pages().get(), pm.id()));
    }
}

/// Judges one lookup of `off` against what the shadow allowed. `devices`
/// are the `dmirror` owners, whose chunks mapped after the chunk list was
/// read may turn up anywhere the shadow has no pagemap.
///
/// # Errors
///
/// A message describing the violation.
fn judge(off: u64, expect: &Expect, got: Option<Seen>, devices: &[Owner]) -> Result<(), String> {
    let Some(s) = got else {
        return match expect.live {
            Some((id, _)) => Err(format!(
                "offset {off:#x} of live pagemap {id} resolved to nothing"
            )),
            None => Ok(()),
        };
    };
    if s.first + s.index != off {
        return Err(format!(
            "offset {off:#x} resolved to page {} of pagemap {} (first offset {:#x})",
            s.index, s.id, s.first
        ));
    }
    let at = (s.id, s.index);
    if expect.live == Some(at) || expect.dying.contains(&at) {
        return Ok(());
    }
    if let Some((id, index)) = expect.live {
        return Err(format!(
            "offset {off:#x} (page {index} of live pagemap {id}) resolved to page {} of pagemap {}",
            s.index, s.id
        ));
    }
    if expect.gone.contains(&s.id) {
        return Err(format!(
            "offset {off:#x} resolved to pagemap {}, which was unmapped",
            s.id
        ));
    }
    if expect.pending || devices.contains(&s.owner) {
        return Ok(());
    }
    Err(format!(
        "offset {off:#x}, of no mapped pagemap, resolved to page {} of pagemap {} ({:?})",
        s.index, s.id, s.owner
    ))
}

// ---------------------------------------------------------------------------
// Shared state.

/// A long-lived pagemap with its allocator.
struct Pool {
    pgmap: Arc<DevPagemap>,
    driver: Arc<Driver>,
    baseline: i64,
}

/// A reference parked in the hand-off queue: pool, head, order.
type Parked = (usize, usize, u32);

struct Shared {
    mem: Memory,
    devices: Vec<DmirrorDevice>,
    device_owners: Vec<Owner>,
    pools: Vec<Pool>,
    shadow: Mutex<Shadow>,
    handoff: Mutex<Vec<Parked>>,
    stop: AtomicBool,
    dispatched: AtomicU64,
    deadline: Instant,
    max_ops: u64,
}

impl Shared {
    /// Claims the next operation, or says stop.
    fn next_op(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        if self.dispatched.fetch_add(1, Ordering::Relaxed) >= self.max_ops
            || Instant::now() >= self.deadline
        {
            self.stop.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Maps a pagemap of `nr` pages with a fresh [`Driver`], keeping the
    /// shadow in step.
    fn memremap(&self, nr: u64, owner: Owner) -> Result<(Arc<DevPagemap>, Arc<Driver>), Errno> {
        let driver = Driver::new(nr);
        let params = PagemapParams::private(PageCount::new(nr), owner, driver.clone());
        self.shadow.lock().pending += 1;
        let r = self.mem.space().memremap_device_private_pagemap(params, 0);
        let mut sh = self.shadow.lock();
        sh.pending -= 1;
        let pm = r?;
        sh.insert(&pm);
        Ok((pm, driver))
    }
}

// ---------------------------------------------------------------------------
// Folios.

fn folio_at(pgmap: &DevPagemap, head: usize) -> Option<Folio<'_>> {
    PageRef::new(pgmap, head).map(Folio::from_head)
}

/// Checks a folio the caller holds a reference on: its order, every tail's
/// `page_folio()`, its `page_pgmap()` and its offset.
fn check_folio(
    space: &DevicePrivateSpace,
    pgmap: &DevPagemap,
    head: usize,
    order: u32,
    st: &mut Stats,
) {
    let id = pgmap.id();
    let Some(f) = folio_at(pgmap, head) else {
        st.fail(format!("pagemap {id}: no page {head}"));
        return;
    };
    let got = f.order().get();
    st.check(got == order && f.ref_count() >= 1, || {
        format!(
            "pagemap {id}: held folio {head} has order {got} (want {order}) and refcount {}",
            f.ref_count()
        )
    });
    let n = 1usize << order;
    let bad = (1..n).find(|&i| {
        f.nth_page(i)
            .is_none_or(|p| p.compound_head().index() != head)
    });
    st.check(bad.is_none(), || {
        format!(
            "pagemap {id}: page_folio() of page {} of folio {head} is not the head",
            head + bad.unwrap_or(0)
        )
    });
    st.check(f.pgmap().is_some_and(|p| std::ptr::eq(p, pgmap)), || {
        format!("pagemap {id}: page_pgmap() of folio {head} is not its pagemap")
    });
    // By hand, not `f.offset()`: that is what the lookup below returns.
    let want = pgmap.first_offset().get() + head as u64;
    let off = space.read().device_private_folio_to_offset(f);
    st.check(off.map(DevicePrivateOffset::get) == Some(want), || {
        format!("pagemap {id}: folio {head} at offset {off:?}, want {want:#x}")
    });
}

/// Takes a free block of `2^order` pages from `driver` and makes it a folio
/// with `zone_device_folio_init()`, checking it; `Some(head)` on success.
fn alloc_folio(
    space: &DevicePrivateSpace,
    pgmap: &DevPagemap,
    driver: &Driver,
    order: u32,
    who: u32,
    rng: &mut SplitMix64,
    st: &mut Stats,
) -> Option<usize> {
    let id = pgmap.id();
    let head = {
        let mut l = driver.ledger.lock();
        let Some(h) = l.pick(order, rng) else {
            st.count("allocator_full", 1);
            return None;
        };
        if let Err(e) = l.claim(h, order, who) {
            st.fail(format!("pagemap {id}: {e}"));
            return None;
        }
        h
    };
    let n = 1usize << order;
    let busy = pgmap.pages()[head..head + n]
        .iter()
        .position(|p| p.refcount() != 0);
    st.check(busy.is_none(), || {
        format!(
            "pagemap {id}: free page {} handed out with refcount {}",
            head + busy.unwrap_or(0),
            pgmap.pages()[head + busy.unwrap_or(0)].refcount()
        )
    });
    let (Some(f), Some(o)) = (folio_at(pgmap, head), Order::new(order)) else {
        st.fail(format!("pagemap {id}: no page {head} or bad order {order}"));
        return None;
    };
    st.count("folio_init", 1);
    match zone_device_folio_init(f, pgmap, o) {
        Ok(f) => {
            st.check(
                f.page().index() == head && f.ref_count() == 1 && f.test_locked(),
                || {
                    format!(
                        "pagemap {id}: new folio {head} is page {}, refcount {}, locked {}",
                        f.page().index(),
                        f.ref_count(),
                        f.test_locked()
                    )
                },
            );
            f.unlock();
            st.orders[order as usize] += 1;
            check_folio(space, pgmap, head, order, st);
            Some(head)
        }
        Err(e) => {
            st.fail(format!(
                "pagemap {id}: zone_device_folio_init({head}, order {order}): {e}"
            ));
            let _ = driver.ledger.lock().release(head, order);
            None
        }
    }
}

fn put_folio(pgmap: &DevPagemap, head: usize, st: &mut Stats) {
    if let Some(f) = folio_at(pgmap, head) {
        st.count("folio_put", 1);
        folio_put(f);
    }
}

/// An order in 0..=9, mostly small.
fn pick_order(rng: &mut SplitMix64, max: u32) -> u32 {
    let o = match rng.below(10) {
        0..=3 => 0,
        4..=5 => u32::try_from(rng.between(1, 3)).unwrap_or(1),
        6..=8 => u32::try_from(rng.between(4, 8)).unwrap_or(4),
        _ => MAX_ORDER,
    };
    o.min(max)
}

// ---------------------------------------------------------------------------
// One thread.

/// A pool folio this thread holds one reference on.
#[derive(Clone, Copy, Debug)]
struct Held {
    pool: usize,
    head: usize,
    order: u32,
}

/// A churn pagemap this thread owns.
struct Churn {
    pgmap: Arc<DevPagemap>,
    driver: Arc<Driver>,
    baseline: i64,
    held: Vec<(usize, u32)>,
}

/// This thread's process: address space, mirror, and page values.
struct Proc {
    mm: Arc<Mm>,
    mirror: Dmirror,
    base: u64,
    thp: u64,
    end: u64,
    pages: Vec<u64>,
    generation: BTreeMap<u64, u64>,
}

struct Worker<'a> {
    sh: &'a Shared,
    t: usize,
    rng: SplitMix64,
    st: Stats,
    held: Vec<Held>,
    churn: Vec<Churn>,
    proc: Option<Proc>,
}

fn region_base(t: usize) -> u64 {
    0x7e00_0000_0000 + t as u64 * (16 << 20)
}

impl<'a> Worker<'a> {
    fn new(sh: &'a Shared, t: usize, seed: u64) -> Self {
        Worker {
            sh,
            t,
            rng: SplitMix64::new(seed ^ (t as u64 + 1) << 40 ^ 0x5745_5353),
            st: Stats::default(),
            held: Vec::new(),
            churn: Vec::new(),
            proc: None,
        }
    }

    fn who(&self) -> u32 {
        u32::try_from(self.t + 1).unwrap_or(u32::MAX)
    }

    /// Runs the workload; returns what it counted and the process, whose
    /// pages are all back in system memory, for the audit to release.
    fn run(mut self) -> (Stats, Option<Proc>) {
        match self.setup_proc() {
            Ok(p) => self.proc = Some(p),
            Err(e) => self
                .st
                .fail(format!("thread {}: address space setup: {e}", self.t)),
        }
        while self.sh.next_op() {
            self.st.dispatched += 1;
            self.st.expected_now = 0;
            let roll = self.rng.below(100);
            let ((), w) = warn::capture(|| self.dispatch(roll));
            let unexpected = w.count() as u64 - self.st.expected_now.min(w.count() as u64);
            let misses = w.count_matching(MISS_WARN) as u64;
            self.st.expected_warns += self.st.expected_now;
            let expected = self.st.expected_now;
            self.st.check(unexpected == 0 && misses == expected, || {
                let labels: Vec<_> = w.sites().iter().map(|s| s.label()).collect();
                format!(
                    "op {roll}: {} WARNs, {} expected lookup misses: {labels:?}",
                    w.count(),
                    expected
                )
            });
        }
        let proc = self.finish();
        (self.st, proc)
    }

    fn dispatch(&mut self, roll: u64) {
        match roll {
            0..=26 => self.op_lookup(false),
            27..=29 => self.op_lookup(true),
            30..=41 => {
                if self.held.len() < MAX_HELD {
                    self.op_folio_init();
                } else {
                    self.op_folio_release();
                }
            }
            42..=47 => self.op_folio_get(),
            48..=55 => self.op_folio_release(),
            56..=59 => self.op_handoff(),
            60..=62 => self.op_churn_map(),
            63..=65 => self.op_churn_unmap(),
            66..=69 => self.op_churn_folio(),
            70..=75 => self.op_migrate_small(),
            76 | 77 => self.op_migrate_thp(),
            78..=82 => self.op_fault_back(),
            83..=85 => self.op_migrate_to_sys(),
            86 | 87 => self.op_snapshot(),
            88..=96 => self.op_walk(),
            _ => self.op_validate(),
        }
    }

    // --- lookups ---------------------------------------------------------

    fn op_lookup(&mut self, tree: bool) {
        let sh = self.sh;
        let shadow = sh.shadow.lock();
        // Device chunks are listed once mapped and stay until the audit.
        let chunks: BTreeMap<u64, ShadowMap> = sh
            .devices
            .iter()
            .flat_map(DmirrorDevice::chunks)
            .map(|pm| {
                let m = ShadowMap {
                    first: pm.first_offset().get(),
                    nr: pm.nr_pages().get(),
                    dying: false,
                };
                (pm.id(), m)
            })
            .collect();
        let probes: Vec<(u64, Expect)> = (0..LOOKUP_BATCH)
            .map(|_| {
                let off = shadow.probe(&mut self.rng, &chunks);
                (off, shadow.expect(off, &chunks))
            })
            .collect();
        let guard = sh.mem.space().read();
        let (seen, w) = warn::capture(|| {
            probes
                .iter()
                .map(|(off, _)| {
                    let o = DevicePrivateOffset::new(*off);
                    let p = if tree {
                        guard.device_private_offset_to_page_tree(o)
                    } else {
                        guard.device_private_offset_to_page(o)
                    };
                    p.map(Seen::of)
                })
                .collect::<Vec<_>>()
        });
        drop(guard);
        drop(shadow);
        self.st.count(
            if tree { "lookup_tree" } else { "lookup" },
            LOOKUP_BATCH as u64,
        );
        let nones = seen.iter().filter(|s| s.is_none()).count() as u64;
        self.st.expected_now += nones;
        self.st.check(w.count() as u64 == nones, || {
            format!("a lookup batch gave {nones} misses but {} WARNs", w.count())
        });
        for ((off, e), s) in probes.into_iter().zip(seen) {
            let r = judge(off, &e, s, &sh.device_owners);
            self.st.verified += 1;
            if let Err(m) = r {
                self.st.fail(m);
            }
        }
    }

    // --- pool folios -----------------------------------------------------

    fn op_folio_init(&mut self) {
        let p = usize::try_from(self.rng.below(POOLS as u64)).unwrap_or(0);
        let pool = &self.sh.pools[p];
        let order = pick_order(&mut self.rng, MAX_ORDER);
        let who = self.who();
        if let Some(head) = alloc_folio(
            self.sh.mem.space(),
            &pool.pgmap,
            &pool.driver,
            order,
            who,
            &mut self.rng,
            &mut self.st,
        ) {
            self.held.push(Held {
                pool: p,
                head,
                order,
            });
        }
    }

    fn pick_held(&mut self) -> Option<usize> {
        if self.held.is_empty() {
            return None;
        }
        usize::try_from(self.rng.below(self.held.len() as u64)).ok()
    }

    fn op_folio_get(&mut self) {
        let Some(i) = self.pick_held() else {
            return self.op_folio_init();
        };
        let h = self.held[i];
        let pgmap = &self.sh.pools[h.pool].pgmap;
        let Some(f) = folio_at(pgmap, h.head) else {
            return;
        };
        folio_get(f);
        self.st.count("folio_get", 1);
        let rc = f.ref_count();
        self.st.check(rc >= 2, || {
            format!(
                "pagemap {}: folio {} refcount {rc} after folio_get",
                pgmap.id(),
                h.head
            )
        });
        check_folio(self.sh.mem.space(), pgmap, h.head, h.order, &mut self.st);
        put_folio(pgmap, h.head, &mut self.st);
    }

    fn op_folio_release(&mut self) {
        let Some(i) = self.pick_held() else {
            return;
        };
        let h = self.held.swap_remove(i);
        let pgmap = &self.sh.pools[h.pool].pgmap;
        check_folio(self.sh.mem.space(), pgmap, h.head, h.order, &mut self.st);
        put_folio(pgmap, h.head, &mut self.st);
    }

    /// Parks a new reference to a held folio in the queue, or drops one
    /// parked by any thread (possibly the last reference).
    fn op_handoff(&mut self) {
        let sh = self.sh;
        if self.rng.below(2) == 0
            && let Some(i) = self.pick_held()
        {
            let h = self.held[i];
            let mut q = sh.handoff.lock();
            if q.len() < HANDOFF_CAP
                && let Some(f) = folio_at(&sh.pools[h.pool].pgmap, h.head)
            {
                folio_get(f);
                self.st.count("folio_get", 1);
                q.push((h.pool, h.head, h.order));
                self.st.count("folio_handoff", 1);
            }
            return;
        }
        let parked = {
            let mut q = sh.handoff.lock();
            if q.is_empty() {
                None
            } else {
                let i = usize::try_from(self.rng.below(q.len() as u64)).unwrap_or(0);
                Some(q.swap_remove(i))
            }
        };
        if let Some((p, head, order)) = parked {
            let pgmap = &sh.pools[p].pgmap;
            check_folio(sh.mem.space(), pgmap, head, order, &mut self.st);
            put_folio(pgmap, head, &mut self.st);
            self.st.count("folio_handoff", 1);
        }
    }

    // --- churn pagemaps --------------------------------------------------

    fn op_churn_map(&mut self) {
        if self.churn.len() >= MAX_CHURN {
            return self.op_churn_folio();
        }
        let nr = match self.rng.below(4) {
            0 => self.rng.between(1, 16),
            1 | 2 => self.rng.between(17, 600),
            _ => self.rng.between(601, CHURN_MAX_PAGES),
        };
        self.st.count("memremap", 1);
        match self.sh.memremap(nr, Owner(CHURN_OWNER + self.t as u64)) {
            Ok((pgmap, driver)) => {
                let baseline = pgmap.percpu_ref().count();
                self.st
                    .check(baseline == 1 && pgmap.nr_pages().get() == nr, || {
                        format!(
                            "new pagemap {}: ref {baseline}, {} pages (want {nr})",
                            pgmap.id(),
                            pgmap.nr_pages().get()
                        )
                    });
                self.churn.push(Churn {
                    pgmap,
                    driver,
                    baseline,
                    held: Vec::new(),
                });
            }
            Err(e) => self.st.fail(format!("memremap of {nr} pages: {e}")),
        }
    }

    fn op_churn_folio(&mut self) {
        if self.churn.is_empty() {
            return self.op_churn_map();
        }
        let i = usize::try_from(self.rng.below(self.churn.len() as u64)).unwrap_or(0);
        let space = self.sh.mem.space();
        let who = self.who();
        let c = &mut self.churn[i];
        if !c.held.is_empty() && (c.held.len() >= 4 || self.rng.below(2) == 0) {
            let j = usize::try_from(self.rng.below(c.held.len() as u64)).unwrap_or(0);
            let (head, order) = c.held.swap_remove(j);
            check_folio(space, &c.pgmap, head, order, &mut self.st);
            put_folio(&c.pgmap, head, &mut self.st);
        } else {
            let max = 63 - c.pgmap.nr_pages().get().leading_zeros();
            let order = pick_order(&mut self.rng, max.min(MAX_ORDER));
            if let Some(head) = alloc_folio(
                space,
                &c.pgmap,
                &c.driver,
                order,
                who,
                &mut self.rng,
                &mut self.st,
            ) {
                c.held.push((head, order));
            }
        }
        let want = c.baseline + c.held.iter().map(|(_, o)| 1i64 << o).sum::<i64>();
        let got = c.pgmap.percpu_ref().count();
        self.st.check(got == want, || {
            format!(
                "churn pagemap {}: percpu_ref {got}, want {want}",
                c.pgmap.id()
            )
        });
    }

    fn op_churn_unmap(&mut self) {
        if self.churn.is_empty() {
            return self.op_churn_map();
        }
        let i = usize::try_from(self.rng.below(self.churn.len() as u64)).unwrap_or(0);
        let c = self.churn.swap_remove(i);
        let busy = !c.held.is_empty() && self.rng.below(2) == 0;
        self.unmap_churn(c, busy);
    }

    /// Unmaps a churn pagemap; with `busy`, first a bounded unmap while a
    /// folio is still held, which must time out.
    fn unmap_churn(&mut self, c: Churn, busy: bool) {
        let sh = self.sh;
        let space = sh.mem.space();
        let id = c.pgmap.id();
        sh.shadow.lock().set_dying(&c.pgmap);
        if busy {
            let r = space.try_memunmap_device_private_pagemap(&c.pgmap, BUSY_TIMEOUT);
            self.st.count("try_memunmap_busy", 1);
            self.st.check(r == Err(Errno::EBUSY), || {
                format!(
                    "pagemap {id}: try_memunmap with {} folios held: {r:?}",
                    c.held.len()
                )
            });
            self.st.check(
                !c.pgmap.is_unmapped() && c.pgmap.percpu_ref().is_dying(),
                || {
                    format!(
                        "pagemap {id}: after a timed-out unmap: unmapped {}, dying {}",
                        c.pgmap.is_unmapped(),
                        c.pgmap.percpu_ref().is_dying()
                    )
                },
            );
        }
        for &(head, order) in &c.held {
            check_folio(space, &c.pgmap, head, order, &mut self.st);
            put_folio(&c.pgmap, head, &mut self.st);
        }
        self.st.count("memunmap", 1);
        // Bounded, so that a leaked reference is a violation, not a hang.
        let r = space.try_memunmap_device_private_pagemap(&c.pgmap, UNMAP_TIMEOUT);
        self.st.check(r.is_ok() && c.pgmap.is_unmapped(), || {
            format!("pagemap {id}: memunmap after the last put: {r:?}")
        });
        let idle = c.driver.ledger.lock().idle();
        self.st.check(idle.is_ok(), || {
            format!("pagemap {id} after memunmap: {idle:?}")
        });
        self.collect_driver(&c.driver);
        // Its offsets no longer resolve to it.
        let first = c.pgmap.first_offset().get();
        let last = first + c.pgmap.nr_pages().get() - 1;
        let g = space.read();
        let (seen, w) = warn::capture(|| {
            [first, last].map(|o| {
                g.device_private_offset_to_page(DevicePrivateOffset::new(o))
                    .map(Seen::of)
            })
        });
        drop(g);
        self.st.expected_now += w.count_matching(MISS_WARN) as u64;
        for s in seen {
            self.st.check(s.is_none_or(|s| s.id != id), || {
                format!("pagemap {id}: an offset still resolves to it after memunmap")
            });
        }
        sh.shadow.lock().remove(&c.pgmap);
    }

    fn collect_driver(&mut self, d: &Driver) {
        let n = d.faults_total.swap(0, Ordering::Relaxed);
        let msgs = std::mem::take(&mut *d.faults.lock());
        self.st.verified += 1;
        let shown = msgs.len() as u64;
        for m in msgs {
            self.st.fail(m);
        }
        // Faults past the driver's own cap are counted, not listed.
        self.st.violations_total += n.saturating_sub(shown);
    }

    // --- migrations ------------------------------------------------------

    fn setup_proc(&mut self) -> Result<Proc, Errno> {
        let base = region_base(self.t);
        let thp = (base + SMALL_PAGES * PAGE_SIZE).next_multiple_of(PMD_SIZE);
        let end = thp + PMD_SIZE;
        let mem = &self.sh.mem;
        let mm = Mm::new(mem, MmConfig::default());
        mm.mmap_write_lock()
            .mmap_anon(base, end - base, VmFlags::RW)?;
        let f = mem.sys().alloc_folio(Order::HPAGE_PMD)?;
        mm.map_folio_pmd(thp, f, true)?;
        f.put()?;
        let pages: Vec<u64> = (base..base + SMALL_PAGES * PAGE_SIZE)
            .chain(thp..end)
            .step_by(4096)
            .collect();
        let mut generation = BTreeMap::new();
        for &a in &pages {
            cpu_write(&mm, a, value(a, 0))?;
            generation.insert(a, 0);
        }
        let mirror = self.sh.devices[self.t % DEVICES].open(&mm);
        Ok(Proc {
            mm,
            mirror,
            base,
            thp,
            end,
            pages,
            generation,
        })
    }

    fn check_data(&mut self, addr: u64, n: u64, got: &Result<Vec<u64>, Errno>) {
        let t = self.t;
        let Some(p) = &self.proc else { return };
        match got {
            Ok(data) => {
                let want: Vec<u64> = (0..n)
                    .map(|i| {
                        let a = addr + i * PAGE_SIZE;
                        value(a, p.generation.get(&a).copied().unwrap_or(0))
                    })
                    .collect();
                self.st.check(*data == want, || {
                    format!(
                        "thread {t}: migrate_to_dev at {addr:#x}: the device read back other data"
                    )
                });
            }
            Err(Errno::ENOENT) => self.st.check(true, String::new),
            Err(e) => self
                .st
                .fail(format!("thread {t}: migrate_to_dev at {addr:#x}: {e}")),
        }
    }

    fn op_migrate_small(&mut self) {
        let Some(p) = &self.proc else { return };
        let first = self.rng.below(SMALL_PAGES - 64);
        let n = self.rng.between(1, 64);
        let addr = p.base + first * PAGE_SIZE;
        let mut cmd = HmmDmirrorCmd::new(addr, n);
        let got = p.mirror.migrate_to_dev(&p.mm, &mut cmd);
        self.st.count("migrate_to_device", 1);
        self.check_data(addr, n, &got);
    }

    fn op_migrate_thp(&mut self) {
        let Some(p) = &self.proc else { return };
        let addr = p.thp;
        let split = self.rng.below(3) == 0;
        if split {
            p.mirror.set_flags(Dmirror::FLAG_FAIL_ALLOC);
        }
        let mut cmd = HmmDmirrorCmd::new(addr, 512);
        let got = p.mirror.migrate_to_dev(&p.mm, &mut cmd);
        if split {
            p.mirror.set_flags(0);
        }
        self.st.count(
            if split {
                "split_fallback"
            } else {
                "migrate_thp_to_device"
            },
            1,
        );
        self.check_data(addr, 512, &got);
    }

    fn op_fault_back(&mut self) {
        let t = self.t;
        let Some(p) = &mut self.proc else { return };
        let a = p.pages[usize::try_from(self.rng.below(p.pages.len() as u64)).unwrap_or(0)];
        let g = p.generation.get(&a).copied().unwrap_or(0) + 1;
        self.st.count("cpu_fault_back", 1);
        match cpu_write(&p.mm, a, value(a, g)) {
            Ok(()) => {
                p.generation.insert(a, g);
                let back = p.mm.read_user(a);
                self.st.check(back == Ok(value(a, g)), || {
                    format!("thread {t}: {a:#x} reads {back:?} after a write")
                });
            }
            Err(e) => self
                .st
                .fail(format!("thread {t}: CPU write to {a:#x}: {e}")),
        }
    }

    fn op_migrate_to_sys(&mut self) {
        let t = self.t;
        let Some(p) = &self.proc else { return };
        let first = self.rng.below(p.pages.len() as u64 - 64);
        let addr = p.pages[usize::try_from(first).unwrap_or(0)];
        let r = p
            .mirror
            .migrate_to_sys(&p.mm, &mut HmmDmirrorCmd::new(addr, 64));
        self.st.count("migrate_to_system", 1);
        self.st.check(matches!(r, Ok(_) | Err(Errno::ENOENT)), || {
            format!("thread {t}: migrate_to_sys at {addr:#x}: {r:?}")
        });
    }

    fn op_snapshot(&mut self) {
        let t = self.t;
        let Some(p) = &self.proc else { return };
        let r = p
            .mirror
            .snapshot(&p.mm, &mut HmmDmirrorCmd::new(p.base, SMALL_PAGES));
        self.st.count("snapshot", 1);
        let ok = r.as_ref().is_ok_and(|s| {
            s.len() as u64 == SMALL_PAGES
                && s.iter()
                    .all(|p| *p != DmirrorProt::ERROR && *p != DmirrorProt::NONE)
        });
        self.st.check(ok, || {
            format!("thread {t}: snapshot of a mapped range: {r:?}")
        });
    }

    fn op_walk(&mut self) {
        let Some(p) = &self.proc else { return };
        let a = p.pages[usize::try_from(self.rng.below(SMALL_PAGES)).unwrap_or(0)];
        self.st.count("page_vma_mapped_walk", 1);
        walk_check(&mut self.st, self.t, &p.mm, a);
    }

    fn op_validate(&mut self) {
        let r = self.sh.mem.space().validate();
        self.st.count("validate", 1);
        self.st
            .check(r.is_ok(), || format!("space validate(): {r:?}"));
    }

    // --- the end ---------------------------------------------------------

    /// Drops every reference held, unmaps the churn pagemaps, and faults
    /// every page back, checking its value.
    ///
    /// The mirror is released later, by the audit, one process at a time:
    /// `HMM_DMIRROR_RELEASE` removes every chunk of the device, under other
    /// mirrors of the same device too.
    fn finish(&mut self) -> Option<Proc> {
        let t = self.t;
        let (proc, w) = warn::capture(|| {
            for h in std::mem::take(&mut self.held) {
                let pgmap = &self.sh.pools[h.pool].pgmap;
                check_folio(self.sh.mem.space(), pgmap, h.head, h.order, &mut self.st);
                put_folio(pgmap, h.head, &mut self.st);
            }
            for c in std::mem::take(&mut self.churn) {
                self.unmap_churn(c, false);
            }
            let p = self.proc.take()?;
            self.final_values(&p);
            Some(p)
        });
        let unexpected = w.count() as u64 - (w.count_matching(MISS_WARN) as u64);
        self.st.expected_warns += w.count_matching(MISS_WARN) as u64;
        self.st.check(unexpected == 0, || {
            format!(
                "thread {t} teardown: unexpected WARNs {:?}",
                w.sites().iter().map(|s| s.label()).collect::<Vec<_>>()
            )
        });
        proc
    }

    fn final_values(&mut self, p: &Proc) {
        let t = self.t;
        for &a in &p.pages {
            let g = p.generation.get(&a).copied().unwrap_or(0);
            if p.mm.read_user(a).is_err()
                && let Err(e) = handle_mm_fault(&p.mm, a, FaultFlags::READ)
            {
                self.st
                    .fail(format!("thread {t}: final fault at {a:#x}: {e}"));
                continue;
            }
            let v = p.mm.read_user(a);
            self.st.check(v == Ok(value(a, g)), || {
                format!("thread {t}: {a:#x} holds {v:?} at the end, want generation {g}")
            });
        }
    }
}

/// `HMM_DMIRROR_RELEASE` on thread `t`'s mirror, then `munmap` of its
/// whole region.
fn release_proc(t: usize, p: Proc, st: &mut Stats) {
    let r = p.mirror.release(&p.mm);
    st.check(r.is_ok(), || format!("thread {t}: mirror release: {r:?}"));
    drop(p.mirror);
    if Arc::strong_count(&p.mm) == 1 {
        let r = p.mm.mmap_write_lock().munmap(p.base, p.end - p.base);
        st.check(r.is_ok(), || format!("thread {t}: munmap: {r:?}"));
    } else {
        st.fail(format!("thread {t}: address space still shared at the end"));
    }
}

/// The walk checks of `simulate` (`page_vma_mapped_walk()` and H7).
fn walk_check(st: &mut Stats, t: usize, mm: &Mm, a: u64) {
    if let Some((n, failures)) = walk_findings(mm, a) {
        for f in failures {
            st.fail(format!("thread {t}: {f}"));
        }
        st.verified += n;
    }
}

// ---------------------------------------------------------------------------
// The run and its report.

/// A stress run's report.
///
/// Kernel: none (model only).
#[derive(Debug)]
pub struct Report {
    /// The settings.
    pub config: StressConfig,
    /// `(kind, count)`, in a fixed order; `lookup` and `lookup_tree` count
    /// offsets, the rest calls.
    pub ops: Vec<(&'static str, u64)>,
    /// Operations dispatched (a lookup batch is one).
    pub dispatched: u64,
    /// Folios initialised, by order (index = order).
    pub orders: Vec<u64>,
    /// Lookup misses, each with its expected `WARN`.
    pub expected_warns: u64,
    /// Invariants checked.
    pub verified: u64,
    /// Invariant violations found (all of them).
    pub violations_total: u64,
    /// The first [`VIOLATION_CAP`] violations, one message each.
    pub violations: Vec<String>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

impl Report {
    /// `true` if no invariant failed.
    ///
    /// Kernel: none (model only).
    pub fn is_clean(&self) -> bool {
        self.violations_total == 0
    }

    /// All operations, each lookup offset counted once.
    ///
    /// Kernel: none (model only).
    pub fn total_ops(&self) -> u64 {
        self.ops.iter().map(|o| o.1).sum()
    }

    /// The report as text.
    ///
    /// Kernel: none (model only).
    pub fn to_text(&self) -> String {
        let c = &self.config;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let mut out = format!(
            "devpriv stress: {} threads, {} s{}, seed {}\n\noperations\n",
            c.threads,
            c.secs,
            c.ops
                .map_or(String::new(), |n| format!(" or {n} operations")),
            c.seed
        );
        for (k, n) in &self.ops {
            #[expect(clippy::cast_precision_loss, reason = "a rate")]
            let rate = *n as f64 / secs;
            let _ = writeln!(out, "  {k:<24} {n:>12}  {rate:>12.0} /s");
        }
        #[expect(clippy::cast_precision_loss, reason = "a rate")]
        let rate = self.total_ops() as f64 / secs;
        let _ = writeln!(
            out,
            "  {:<24} {:>12}  {rate:>12.0} /s  ({} dispatched)",
            "total",
            self.total_ops(),
            self.dispatched
        );
        out.push_str("\nfolios initialised, by order\n ");
        for (o, n) in self.orders.iter().enumerate() {
            let _ = write!(out, " {o}:{n}");
        }
        let _ = writeln!(
            out,
            "\n\nlookup misses (each with its expected WARN): {}",
            self.expected_warns
        );
        for v in &self.violations {
            let _ = writeln!(out, "VIOLATION: {v}");
        }
        if self.violations_total > self.violations.len() as u64 {
            let _ = writeln!(
                out,
                "({} more violations not shown)",
                self.violations_total - self.violations.len() as u64
            );
        }
        let _ = writeln!(
            out,
            "\ninvariants verified: {}, violations: {}  ({:.2} s)",
            self.verified,
            self.violations_total,
            self.elapsed.as_secs_f64()
        );
        out
    }

    /// The report as one JSON object.
    ///
    /// Kernel: none (model only).
    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.config;
        serde_json::json!({
            "config": { "threads": c.threads, "secs": c.secs, "ops": c.ops, "seed": c.seed },
            "ops": self.ops.iter().map(|(k, n)| (k.to_string(), *n)).collect::<BTreeMap<_, _>>(),
            "total_ops": self.total_ops(),
            "dispatched": self.dispatched,
            "folio_orders": self.orders,
            "expected_warns": self.expected_warns,
            "invariants_verified": self.verified,
            "violations_total": self.violations_total,
            "violations": self.violations,
            "elapsed_secs": self.elapsed.as_secs_f64(),
        })
    }
}

/// Runs the stress harness.
///
/// Kernel: none (model only; see the module documentation for the kernel
/// paths exercised).
///
/// # Errors
///
/// An errno from setting up memory, devices or the pool pagemaps (the
/// workload's own failures are violations in the report, not errors).
pub fn run(cfg: &StressConfig) -> Result<Report, Errno> {
    let started = Instant::now();
    let per_thread = SMALL_PAGES + 512;
    let sys_pages = (cfg.threads as u64 * per_thread).next_multiple_of(512) + 1024;
    let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(sys_pages))?;
    let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
    let chunk = DmirrorConfig::with_chunk_pages(PageCount::new(CHUNK_PAGES));
    let device_owners: Vec<Owner> = (0..DEVICES)
        .map(|d| Owner(DEVICE_OWNER + d as u64))
        .collect();
    let devices = device_owners
        .iter()
        .map(|&o| DmirrorDevice::new(&mem, o, chunk))
        .collect::<Result<Vec<_>, _>>()?;
    let mut sh = Shared {
        mem,
        devices,
        device_owners,
        pools: Vec::new(),
        shadow: Mutex::new(Shadow::default()),
        handoff: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        dispatched: AtomicU64::new(0),
        deadline: started + Duration::from_secs(cfg.secs),
        max_ops: cfg.ops.unwrap_or(u64::MAX),
    };
    for _ in 0..POOLS {
        let (pgmap, driver) = sh.memremap(POOL_PAGES, POOL_OWNER)?;
        let baseline = pgmap.percpu_ref().count();
        sh.pools.push(Pool {
            pgmap,
            driver,
            baseline,
        });
    }

    let (mut stats, procs): (Vec<Stats>, Vec<Option<Proc>>) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cfg.threads)
            .map(|t| {
                let sh = &sh;
                s.spawn(move || Worker::new(sh, t, cfg.seed).run())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    let mut st = Stats::default();
                    st.fail("a worker thread panicked".into());
                    (st, None)
                })
            })
            .unzip()
    });

    let mut audit = Stats::default();
    let ((), w) = warn::capture(|| self::audit(&sh, procs, &mut audit));
    audit.check(w.is_empty(), || {
        format!(
            "audit: WARNs {:?}",
            w.sites().iter().map(|s| s.label()).collect::<Vec<_>>()
        )
    });
    stats.push(audit);
    Ok(summarise(cfg, stats, started.elapsed()))
}

/// The end-of-run audit (the threads have finished).
fn audit(sh: &Shared, procs: Vec<Option<Proc>>, st: &mut Stats) {
    let space = sh.mem.space();
    for (t, p) in procs.into_iter().enumerate() {
        if let Some(p) = p {
            release_proc(t, p, st);
        }
    }
    let parked = std::mem::take(&mut *sh.handoff.lock());
    for (p, head, order) in parked {
        let pgmap = &sh.pools[p].pgmap;
        check_folio(space, pgmap, head, order, st);
        put_folio(pgmap, head, st);
    }
    let valid = space.validate();
    st.check(valid.is_ok(), || {
        format!("space before teardown: {valid:?}")
    });
    for pool in &sh.pools {
        let id = pool.pgmap.id();
        let idle = pool.driver.ledger.lock().idle();
        st.check(idle.is_ok(), || format!("pool pagemap {id}: {idle:?}"));
        let refs = pool.pgmap.percpu_ref().count();
        st.check(refs == pool.baseline, || {
            format!(
                "pool pagemap {id}: percpu_ref {refs}, baseline {}",
                pool.baseline
            )
        });
        let busy = pool.pgmap.pages().iter().position(|p| p.refcount() != 0);
        st.check(busy.is_none(), || {
            format!("pool pagemap {id}: page {busy:?} has a nonzero refcount at the end")
        });
        let r = space.try_memunmap_device_private_pagemap(&pool.pgmap, UNMAP_TIMEOUT);
        st.check(r.is_ok() && pool.pgmap.is_unmapped(), || {
            format!("pool pagemap {id}: memunmap: {r:?}")
        });
        sh.shadow.lock().remove(&pool.pgmap);
        let msgs = std::mem::take(&mut *pool.driver.faults.lock());
        let n = pool.driver.faults_total.load(Ordering::Relaxed);
        st.check(n == 0, || {
            format!("pool pagemap {id}: {n} folio_free faults: {msgs:?}")
        });
    }
    let sh_left = sh.shadow.lock().maps.len();
    st.check(sh_left == 0, || {
        format!("{sh_left} of the harness's pagemaps left mapped")
    });
    for dev in &sh.devices {
        let owner = dev.owner();
        let idle = dev.check_idle();
        st.check(idle.is_ok(), || {
            format!("device {owner:?} not idle: {idle:?}")
        });
        let removed = dev.remove_chunks(&Mm::new(&sh.mem, MmConfig::default()));
        st.check(removed.is_ok(), || {
            format!("device {owner:?} remove: {removed:?}")
        });
    }
    st.check(space.is_empty(), || {
        format!(
            "{} pagemaps left after every device was removed",
            space.len()
        )
    });
    let valid = space.validate();
    st.check(valid.is_ok(), || format!("space after teardown: {valid:?}"));
    let total = sh.mem.sys().nr_pages().get();
    let free = sh.mem.sys().nr_free();
    st.check(free == total, || {
        format!("system memory: {free} of {total} pages free after every munmap")
    });
}

fn summarise(cfg: &StressConfig, stats: Vec<Stats>, elapsed: Duration) -> Report {
    let mut ops: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut orders = vec![0; MAX_ORDER as usize + 1];
    let mut r = Report {
        config: *cfg,
        ops: Vec::new(),
        dispatched: 0,
        orders: Vec::new(),
        expected_warns: 0,
        verified: 0,
        violations_total: 0,
        violations: Vec::new(),
        elapsed,
    };
    for s in stats {
        for (k, n) in s.ops {
            *ops.entry(k).or_default() += n;
        }
        for (o, n) in s.orders.iter().enumerate() {
            orders[o] += n;
        }
        r.dispatched += s.dispatched;
        r.expected_warns += s.expected_warns;
        r.verified += s.verified;
        r.violations_total += s.violations_total;
        for v in s.violations {
            if r.violations.len() < VIOLATION_CAP {
                r.violations.push(v);
            }
        }
    }
    r.ops = KINDS
        .iter()
        .map(|k| (*k, ops.get(k).copied().unwrap_or(0)))
        .collect();
    r.orders = orders;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_refuses_a_page_owned_twice_and_a_double_free() {
        let mut l = Ledger::new(16);
        l.claim(0, 2, 1).unwrap();
        // Pages 2..4 overlap the folio at 0 (order 2 = pages 0..4).
        let e = l.claim(2, 1, 2).unwrap_err();
        assert!(
            e.contains("page 2 handed out to thread 1 while owned by thread 0"),
            "{e}"
        );
        assert!(l.idle().is_err());
        l.release(0, 2).unwrap();
        let e = l.release(0, 2).unwrap_err();
        assert!(e.contains("not handed out"), "{e}");
        l.claim(4, 2, 1).unwrap();
        let e = l.release(4, 1).unwrap_err();
        assert!(e.contains("handed out at order 2"), "{e}");
        l.idle().unwrap();
        assert!(l.claim(15, 1, 1).is_err());
    }

    #[test]
    fn the_judge_catches_wrong_pages_and_resurrected_pagemaps() {
        let seen = |id, first, index, owner| {
            Some(Seen {
                id,
                first,
                index,
                owner: Owner(owner),
            })
        };
        let dev = [Owner(0xd0)];
        let live = Expect {
            live: Some((3, 5)),
            ..Expect::default()
        };
        assert!(judge(0x105, &live, seen(3, 0x100, 5, 1), &dev).is_ok());
        // A deliberately wrong shadow entry: the shadow says pagemap 4.
        let wrong = Expect {
            live: Some((4, 5)),
            ..Expect::default()
        };
        let e = judge(0x105, &wrong, seen(3, 0x100, 5, 1), &dev).unwrap_err();
        assert!(e.contains("live pagemap 4"), "{e}");
        assert!(judge(0x105, &live, None, &dev).is_err());
        // A page whose own offset differs from the one looked up.
        assert!(judge(0x106, &live, seen(3, 0x100, 5, 1), &dev).is_err());
        let dying = Expect {
            dying: vec![(3, 5)],
            ..Expect::default()
        };
        assert!(judge(0x105, &dying, None, &dev).is_ok());
        assert!(judge(0x105, &dying, seen(3, 0x100, 5, 1), &dev).is_ok());
        let gone = Expect {
            gone: vec![3],
            ..Expect::default()
        };
        assert!(judge(0x105, &gone, None, &dev).is_ok());
        assert!(judge(0x105, &gone, seen(3, 0x100, 5, 1), &dev).is_err());
        assert!(judge(0x105, &gone, seen(9, 0x100, 5, 0xd0), &dev).is_ok());
        assert!(judge(0x105, &gone, seen(9, 0x100, 5, 1), &dev).is_err());
        let pending = Expect {
            pending: true,
            ..Expect::default()
        };
        assert!(judge(0x105, &pending, seen(9, 0x100, 5, 1), &dev).is_ok());
    }

    #[test]
    fn the_shadow_expects_what_it_was_told() {
        let none = BTreeMap::new();
        let mut s = Shadow::default();
        s.maps.insert(
            1,
            ShadowMap {
                first: 0x100,
                nr: 16,
                dying: false,
            },
        );
        s.gone.push_back((0x200, 4, 2));
        assert_eq!(s.expect(0x10f, &none).live, Some((1, 15)));
        assert_eq!(s.expect(0x110, &none), Expect::default());
        assert_eq!(s.expect(0x203, &none).gone, vec![2]);
        s.maps.get_mut(&1).unwrap().dying = true;
        // A newer pagemap reusing part of the range before the old entry
        // is removed: both are allowed, the live one required.
        s.maps.insert(
            7,
            ShadowMap {
                first: 0x108,
                nr: 8,
                dying: false,
            },
        );
        let e = s.expect(0x109, &none);
        assert_eq!((e.live, e.dying), (Some((7, 1)), vec![(1, 9)]));
        assert_eq!(s.expect(0x100, &none).live, None);
        // A device chunk is live for as long as it is listed.
        let chunks = BTreeMap::from([(
            9,
            ShadowMap {
                first: 0x300,
                nr: 4,
                dying: false,
            },
        )]);
        assert_eq!(s.expect(0x302, &chunks).live, Some((9, 2)));
        assert_eq!(s.expect(0x304, &chunks).live, None);
    }

    #[test]
    fn a_violation_is_reported_and_capped() {
        let mut st = Stats::default();
        for i in 0..VIOLATION_CAP + 5 {
            st.check(false, || format!("v{i}"));
        }
        let cfg = StressConfig {
            threads: 1,
            secs: 1,
            ops: None,
            seed: 0,
        };
        let r = summarise(&cfg, vec![st], Duration::from_secs(1));
        assert!(!r.is_clean());
        assert_eq!(r.violations.len(), VIOLATION_CAP);
        let text = r.to_text();
        assert!(text.contains("VIOLATION: v0"));
        assert!(text.contains("(5 more violations not shown)"));
        assert!(text.contains(&format!("violations: {}", VIOLATION_CAP + 5)));
    }

    #[test]
    fn bad_settings_are_refused() {
        let ok = StressConfig {
            threads: 2,
            secs: 1,
            ops: None,
            seed: 0,
        };
        ok.check().unwrap();
        assert!(StressConfig { threads: 0, ..ok }.check().is_err());
        assert!(StressConfig { secs: 0, ..ok }.check().is_err());
        assert!(StressConfig { ops: Some(0), ..ok }.check().is_err());
    }

    #[test]
    fn a_bounded_run_is_clean() {
        let cfg = StressConfig {
            threads: 2,
            secs: 60,
            ops: Some(3000),
            seed: 7,
        };
        let r = run(&cfg).unwrap();
        assert!(r.is_clean(), "{}", r.to_text());
        assert_eq!(r.dispatched, 3000);
        assert!(r.verified > 3000);
    }
}
