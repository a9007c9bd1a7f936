//! `folio_put()` of the last reference racing the driver's allocator, which
//! reuses the freed pages at another order under `ReinitPolicy::AtAlloc`.
//!
//! Kernel: `folio_put()` → `free_zone_device_folio()` (clears
//! `folio->mapping`, then `pgmap->ops->folio_free()`, then
//! `percpu_ref_put_many()`) racing a driver's page allocator
//! (`dmirror_devmem_alloc_page()` / Xe's `drm_pagemap` free lists: pop under
//! the driver's spinlock, then `zone_device_folio_init()`), 7.0 with fix
//! 399289849560 and the v6 proposal.
//!
//! Thread A drops the last reference to an order-1 folio at page 0; the
//! driver's `folio_free` pushes it on the driver's free list under the
//! driver's lock (a `devpriv_core::sync::Mutex`). The main thread (B) pops
//! it under the same lock and reuses the two pages as two order-0 folios,
//! giving the first one a `mapping` of its own (as `migrate_vma` does).
//!
//! Checks: both new folios are well formed (order 0, refcount 1, not tails,
//! B's `mapping` intact), and after they are put every pagemap reference
//! is back.
//!
//! Mutant `Mutant::FolioFreeBeforeClear`:
//! `free_zone_device_folio` calls `folio_free` before it clears `mapping`,
//! so its late store lands on the folio B has already reallocated; loom
//! finds the execution where B's mapping is lost.

#![cfg(loom)]
#![forbid(unsafe_code)]

use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_core::sync::Mutex;
use devpriv_core::{Errno, Order, PageCount};
use devpriv_loom_tests::{assert_caught, assert_valid, model, small_space};
use devpriv_pagemap::{
    DevPagemapOps, DevicePrivateSpace, Folio, Owner, PageRef, PagemapParams, ReinitPolicy,
    SpaceConfig, VmFault, folio_put, zone_device_folio_init,
};
use loom::sync::Arc;
use loom::thread;

/// B's `mapping` for the reallocated folio (an `anon_vma` pointer with
/// `PAGE_MAPPING_ANON`).
const MAPPING: u64 = 0xabc0 | 1;

/// The driver: a free list of `(head index, pages)` under its own lock.
struct Driver {
    free: Arc<Mutex<Vec<(usize, u64)>>>,
}

impl DevPagemapOps for Driver {
    fn folio_free(&self, folio: Folio<'_>) {
        self.free
            .lock()
            .push((folio.page().index(), folio.nr_pages().get()));
    }

    fn migrate_to_ram(&self, _vmf: &VmFault<'_>) -> Result<(), Errno> {
        Ok(())
    }
}

fn scenario(mutants: Mutants) {
    let cfg = SpaceConfig {
        reinit: ReinitPolicy::AtAlloc,
        ..small_space()
    };
    // The space hands `mutants` on to its pagemaps' folio paths.
    let space = DevicePrivateSpace::with_mutants(cfg, mutants);
    let free = Arc::new(Mutex::new(Vec::new()));
    let driver = std::sync::Arc::new(Driver {
        free: Arc::clone(&free),
    });
    let params = PagemapParams::private(PageCount::new(2), Owner(1), driver);
    let pm = space.memremap_device_private_pagemap(params, 0).unwrap();

    // An order-1 folio, in use, unlocked, with a mapping: A holds its last
    // reference.
    let head = PageRef::new(&pm, 0).unwrap();
    let f = zone_device_folio_init(Folio::from_head(head), &pm, Order::new(1).unwrap()).unwrap();
    f.set_mapping(0x5550 | 1);
    f.unlock();

    let a = {
        let pm = std::sync::Arc::clone(&pm);
        thread::spawn(move || {
            let head = PageRef::new(&pm, 0).unwrap();
            folio_put(head.folio());
        })
    };

    // B: the driver's allocator.
    let (start, nr) = loop {
        if let Some(e) = free.lock().pop() {
            break e;
        }
        thread::yield_now();
    };
    assert_eq!((start, nr), (0, 2));
    let mut got = Vec::new();
    for i in start..start + 2 {
        let p = PageRef::new(&pm, i).unwrap();
        let g = zone_device_folio_init(Folio::from_head(p), &pm, Order::ZERO)
            .expect("reuse of a freed page");
        got.push(g);
    }
    got[0].set_mapping(MAPPING);
    for g in &got {
        g.unlock();
    }
    a.join().unwrap();
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.order(), Order::ZERO, "page {i}: stale order");
        assert_eq!(g.ref_count(), 1, "page {i}: refcount");
        assert!(!g.page().is_tail(), "page {i}: still a tail");
        assert_eq!(g.page().compound_head(), g.page(), "page {i}: tail link");
    }
    assert_eq!(
        got[0].mapping(),
        MAPPING,
        "the reallocated folio lost its mapping"
    );
    assert_eq!(got[1].mapping(), 0, "page 1: stale mapping");
    for g in got {
        folio_put(g);
    }
    assert_eq!(free.lock().len(), 2, "folio_free not called once per folio");
    assert_eq!(pm.percpu_ref().count(), 1, "references leaked or lost");
    assert_valid(&space);
}

#[test]
fn folio_put_vs_driver_realloc() {
    let runs = model(|| scenario(Mutants::NONE));
    eprintln!("folio_put_vs_driver_realloc: {runs} executions");
}

#[test]
fn mutant_folio_free_before_clear_is_caught() {
    assert_caught(
        || scenario(Mutant::FolioFreeBeforeClear.into()),
        &["lost its mapping"],
    );
}
