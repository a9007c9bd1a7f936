//! `free_zone_device_folio()` racing a reallocation of the freed pages on
//! another CPU: two models.
//!
//! Hazards H6 and H19: `docs/hazards.md`.
//!
//! **`folio_free_vs_realloc`** (hazard H6): the free-time reset
//! (`ReinitPolicy::AtFree`, the sketch of 2026-01-07 that was never
//! merged) must publish its stores before `folio_free`.
//!
//! Kernel: `free_zone_device_folio()` with the sketch's reset and
//! `smp_wmb()` before `ops->folio_free()`, and the 6.19
//! `zone_device_page_init()` that the sketch left in place.
//!
//! Thread A drops the last reference to an order-1 folio at page 0: the free
//! path resets the compound metadata of pages 0 and 1, publishes it with a
//! `Release` fence, and calls the driver's `folio_free`, which hands the
//! pages to the driver's allocator with a `Relaxed` store (a free list whose
//! own ordering the core cannot rely on). The main thread (B) takes old
//! page\[1\] from the allocator (`Relaxed` load, then an `Acquire` fence:
//! the `smp_rmb()` pairing), reads its metadata as C would — plain loads —
//! and reuses it as an order-0 folio.
//!
//! Checks: B sees the reset words (no stale order byte, which for order 1
//! is `PG_locked`, and no stale tail link in word 1), its allocation
//! succeeds and yields a sane folio, and every pagemap reference comes back.
//! The mutant `Mutant::FolioFreeNoBarrier` drops the fence; loom must find
//! an execution where B reads stale words.
//!
//! **`reread_after_folio_free`** (hazard H19): after `folio_free` the free
//! path must not read the folio again.
//!
//! Kernel: `free_zone_device_folio()` as fixed by 399289849560
//! ("`mm/zone_device`: do not touch device folio after calling
//! ->`folio_free()`", 7.0.y, 7.1), under the merged `ReinitPolicy::AtAlloc`.
//!
//! Thread A drops the last reference to an order-0 folio at page 1; the
//! driver's `folio_free` pushes it on a free list (`Release`). The main
//! thread pops it (`Acquire`) and builds an order-1 folio at page 0 over
//! it, so page 1's word 1 becomes a tail link. Checks: every pagemap
//! reference comes back. The twin runs 7.0-rc6's free path
//! (`FreePath::V7_0`, which re-reads `folio->pgmap` after `folio_free`):
//! loom must find the execution where A reads the tail link and leaks the
//! reference.

#![cfg(loom)]
#![forbid(unsafe_code)]

use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_core::{Errno, Order, PageCount};
use devpriv_loom_tests::{assert_caught, assert_valid, model, small_space};
use devpriv_pagemap::mm_types::word;
use devpriv_pagemap::{
    DevPagemapOps, DevicePrivateSpace, Folio, FreePath, Owner, PageRef, PagemapParams,
    ReinitPolicy, SpaceConfig, VmFault, folio_put, zone_device_folio_init, zone_device_page_init,
};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, Ordering, fence};
use loom::thread;

/// The driver's allocator: one slot holding the freed folio's head index
/// + 1 (0 = empty), pushed with `push`.
struct Driver {
    free: Arc<AtomicU64>,
    push: Ordering,
}

impl DevPagemapOps for Driver {
    fn folio_free(&self, folio: Folio<'_>) {
        // H6: Relaxed, the core's smp_wmb() is what orders the reset before
        // this. H19: Release, a free list under a lock.
        self.free.store(folio.page().index() as u64 + 1, self.push);
    }

    fn migrate_to_ram(&self, _vmf: &VmFault<'_>) -> Result<(), Errno> {
        Ok(())
    }
}

fn scenario(mutants: Mutants) {
    let cfg = SpaceConfig {
        reinit: ReinitPolicy::AtFree,
        ..small_space()
    };
    // The space hands `mutants` on to its pagemaps' folio paths.
    let space = DevicePrivateSpace::with_mutants(cfg, mutants);
    let free = Arc::new(AtomicU64::new(0));
    let driver = std::sync::Arc::new(Driver {
        free: Arc::clone(&free),
        push: Ordering::Relaxed,
    });
    let params = PagemapParams::private(PageCount::new(2), Owner(1), driver);
    let pm = space.memremap_device_private_pagemap(params, 0).unwrap();
    let cookie = pm.cookie().get();

    // An order-1 folio, in use, unlocked: its last reference is A's.
    let head = PageRef::new(&pm, 0).unwrap();
    let f = zone_device_folio_init(Folio::from_head(head), &pm, Order::new(1).unwrap()).unwrap();
    f.unlock();

    let a = {
        let pm = std::sync::Arc::clone(&pm);
        thread::spawn(move || {
            let head = PageRef::new(&pm, 0).unwrap();
            folio_put(head.folio());
        })
    };

    // B: take the pages from the driver's allocator.
    while free.load(Ordering::Relaxed) == 0 {
        thread::yield_now();
    }
    fence(Ordering::Acquire);
    let p1 = PageRef::new(&pm, 1).unwrap();
    assert_eq!(
        p1.raw(word::FLAGS) & 0xff,
        0,
        "old page[1] still carries the order byte (PG_locked)"
    );
    assert_eq!(
        p1.raw(word::COMPOUND_HEAD),
        cookie,
        "old page[1] still carries the tail link"
    );
    assert_eq!(
        p1.raw(word::MEMCG_DATA) & 0xffff_ffff,
        0,
        "old page[1] still carries _nr_pages"
    );
    let g = zone_device_page_init(p1, &pm, Order::ZERO).expect("reuse of old page[1]");
    assert_eq!(g.page(), p1, "page_folio(old page[1]) is not itself");
    g.unlock();
    a.join().unwrap();
    folio_put(g);
    assert_eq!(pm.percpu_ref().count(), 1, "references leaked or lost");
    assert_valid(&space);
}

#[test]
fn folio_free_vs_realloc() {
    let runs = model(|| scenario(Mutants::NONE));
    eprintln!("folio_free_vs_realloc: {runs} executions");
}

#[test]
fn mutant_free_no_barrier_is_caught() {
    assert_caught(
        || scenario(Mutant::FolioFreeNoBarrier.into()),
        &[
            "order byte",
            "tail link",
            "_nr_pages",
            "reuse of old page[1]",
            "not itself",
        ],
    );
}

/// H19: A frees an order-0 folio at page 1 while the main thread, as soon
/// as the driver's free list has it, reuses page 1 as the tail of an
/// order-1 folio at page 0.
fn reread_scenario(path: FreePath) {
    let cfg = SpaceConfig {
        reinit: ReinitPolicy::AtAlloc,
        free_path: path,
        ..small_space()
    };
    let space = DevicePrivateSpace::with_config(cfg);
    let free = Arc::new(AtomicU64::new(0));
    let driver = std::sync::Arc::new(Driver {
        free: Arc::clone(&free),
        push: Ordering::Release,
    });
    let params = PagemapParams::private(PageCount::new(2), Owner(1), driver);
    let pm = space.memremap_device_private_pagemap(params, 0).unwrap();
    let x = zone_device_page_init(PageRef::new(&pm, 1).unwrap(), &pm, Order::ZERO).unwrap();
    x.unlock();

    let a = {
        let pm = std::sync::Arc::clone(&pm);
        thread::spawn(move || folio_put(PageRef::new(&pm, 1).unwrap().folio()))
    };

    while free.load(Ordering::Acquire) == 0 {
        thread::yield_now();
    }
    let head = Folio::from_head(PageRef::new(&pm, 0).unwrap());
    let g = zone_device_folio_init(head, &pm, Order::new(1).unwrap()).expect("reuse");
    g.unlock();
    a.join().unwrap();
    folio_put(g);
    assert_eq!(
        pm.percpu_ref().count(),
        1,
        "references leaked: the free path read the folio after folio_free"
    );
    assert_valid(&space);
}

#[test]
fn reread_after_folio_free() {
    let runs = model(|| reread_scenario(FreePath::Fixed));
    eprintln!("reread_after_folio_free: {runs} executions");
}

#[test]
fn v7_0_free_path_is_caught() {
    assert_caught(|| reread_scenario(FreePath::V7_0), &["references leaked"]);
}
