//! Two `zone_device_folio_init()` calls reusing disjoint sub-ranges of one
//! freed large folio at the same time (hazards H5 and H3,
//! `docs/hazards.md`), under the merged allocation-time reset
//! (`ReinitPolicy::AtAlloc`).
//!
//! Kernel: `zone_device_page_init(page, pgmap, order)` (`mm/memremap.c`,
//! 7.0). The concern raised in the review of "[PATCH v4 2/7]
//! `mm/zone_device`: Add `free_zone_device_folio_prepare()` helper"
//! (2026-01-12/13): Xe's multi-threaded GPU fault handler can
//! allocate two sub-blocks of one old 2 MiB folio at once, so the reset must
//! touch only the pages being allocated and never read or write the old
//! head's metadata.
//!
//! Sizes: an order-2 folio at page 0 (pages 0..4) is freed, then thread A
//! and the main thread each take an order-1 block from the driver's
//! allocator (an atomic cursor, standing in for Xe's buddy allocator: which
//! thread gets pages 0..2 and which 2..4 is up to the race) and initialise
//! it. (Order 9 split as 16 + 1 would be the real case, but loom
//! explores interleavings, not sizes: four pages of eight words each keep
//! the state space small. Order 1 is allowed here: the "no order-1 folio"
//! rule is for anon folios, and a folio fresh from the driver is not anon
//! yet.) The pagemap has exactly four pages, so nothing lies past page 3.
//!
//! With the correct code the two threads share no struct-page word at all,
//! so loom's partial-order reduction has little to explore beyond the
//! cursor: that is the result (the reset is independent of the other
//! sub-range), not a weak model; the mutant shows the model does see
//! cross-page writes.
//!
//! Checks: both folios are well formed (head's word 1 is the pgmap,
//! `PG_head` and `PG_locked` set, order 1 on page\[1\], tail linked,
//! refcount 1) and every reference comes back after both are freed.
//!
//! Mutant `Mutant::FolioInitResetsNextPage`: the reset clears each page's
//! `_nr_pages` alias with `folio_reset_order()`, as the first version of
//! the reinit fix did (hazard H3), which writes the *next* page; A's last write lands on the main
//! thread's head and, in some interleavings, wipes its `PG_head` and
//! `PG_locked` after that thread set them.

#![cfg(loom)]
#![forbid(unsafe_code)]

use devpriv_core::Order;
use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_loom_tests::{assert_caught, assert_valid, model, params, small_space};
use devpriv_pagemap::mm_types::word;
use devpriv_pagemap::page_flags::{PG_HEAD, PG_LOCKED};
use devpriv_pagemap::{
    DevPagemap, DevicePrivateSpace, Folio, PageRef, folio_put, zone_device_folio_init,
};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

/// Takes the next order-1 block from the driver's allocator and
/// initialises it; returns its head index.
fn alloc(pm: &DevPagemap, cursor: &AtomicUsize) -> usize {
    let i = cursor.fetch_add(2, Ordering::AcqRel);
    let head = Folio::from_head(PageRef::new(pm, i).unwrap());
    zone_device_folio_init(head, pm, Order::new(1).unwrap())
        .expect("allocation")
        .page()
        .index()
}

fn check(pm: &DevPagemap, i: usize) {
    let head = PageRef::new(pm, i).unwrap();
    let tail = PageRef::new(pm, i + 1).unwrap();
    assert_eq!(head.raw(word::COMPOUND_HEAD), pm.cookie().get(), "pgmap");
    assert!(head.test_flag(PG_HEAD), "folio at {i} lost PG_head");
    assert!(head.test_flag(PG_LOCKED), "folio at {i} lost PG_locked");
    assert_eq!(tail.flags() & 0xff, 1, "folio at {i}: order byte");
    assert_eq!(tail.raw(word::MEMCG_DATA) & 0xffff_ffff, 2, "_nr_pages");
    assert_eq!(tail.folio().page(), head, "tail link");
    assert_eq!(head.refcount(), 1);
}

fn scenario(mutants: Mutants) {
    // The space hands `mutants` on to its pagemaps' folio paths.
    let space = DevicePrivateSpace::with_mutants(small_space(), mutants);
    let pm = space.memremap_device_private_pagemap(params(4), 0).unwrap();

    // The old order-2 folio, allocated and freed: still compound in memory.
    let old = zone_device_folio_init(
        Folio::from_head(PageRef::new(&pm, 0).unwrap()),
        &pm,
        Order::new(2).unwrap(),
    )
    .unwrap();
    old.unlock();
    folio_put(old);

    let cursor = Arc::new(AtomicUsize::new(0));
    let a = {
        let (pm, cursor) = (std::sync::Arc::clone(&pm), Arc::clone(&cursor));
        thread::spawn(move || alloc(&pm, &cursor))
    };
    let c = alloc(&pm, &cursor);
    let a = a.join().unwrap();
    assert_eq!(a.min(c), 0);
    assert_eq!(a.max(c), 2);
    check(&pm, 0);
    check(&pm, 2);
    for i in [0, 2] {
        let f = Folio::from_head(PageRef::new(&pm, i).unwrap());
        f.unlock();
        folio_put(f);
    }
    assert_eq!(pm.percpu_ref().count(), 1, "references leaked or lost");
    assert_valid(&space);
}

#[test]
fn page_init_vs_page_init() {
    let runs = model(|| scenario(Mutants::NONE));
    eprintln!("page_init_vs_page_init: {runs} executions");
}

#[test]
fn mutant_init_resets_next_page_is_caught() {
    assert_caught(
        || scenario(Mutant::FolioInitResetsNextPage.into()),
        &["lost PG_head", "lost PG_locked", "order byte", "_nr_pages"],
    );
}
