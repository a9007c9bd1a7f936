//! A lookup through the space's per-page pagemap array racing
//! `memremap_device_private_pagemap()` and
//! `memunmap_device_private_pagemap()`.
//!
//! Kernel: `pgmap_array` (`mm/memremap.c`, 7.1): `xa_store_range()` in
//! `pagemap_range()`, `pgmap_array_delete()` in `memunmap_pages()` and
//! `xa_load()` under `rcu_read_lock()` in `get_dev_pagemap()`. In the model
//! the array is an id per granule plus a slot per id
//! (`memremap/pgmap_array.rs`), one level of granules per size from a page
//! to a section (two under loom: pages and sections); lookups read one
//! level before the section index.
//!
//! Two races:
//! - *publish*: the main thread maps B while a reader looks up B's first
//!   page. The reader gets `None` or B's fully initialised page, owned by
//!   B. No mutant: storing the slot and the entries `Relaxed` (instead of
//!   Release) survived every interleaving, because the tree insert before
//!   them already ends with a `SeqCst` fence (its grace-period cookie),
//!   which orders B's construction before them; the model keeps checking
//!   that nothing publishes B earlier.
//! - *clear*: the main thread unmaps A while a reader looks up A's page.
//!   The reader gets `None` or A's page, never a pagemap the space has let
//!   go (each pagemap's tracked liveness cell, which lookups read and
//!   `memunmap` writes after the grace period).
//!   `Mutant::PgmapArrayNotCleared` leaves A's entries and slot in place,
//!   and `Mutant::PgmapArrayClearedAfterGracePeriod` clears them only after
//!   the grace period: either way a reader reaches A as it goes.
//!
//! Under loom the space has no memmap, so every pagemap's pages are on the
//! heap and the reader takes the array's heap path (`entry_heap`); the
//! load order and the ids are the same as on the memmap path.

#![cfg(loom)]
#![forbid(unsafe_code)]

use devpriv_core::DevicePrivateOffset;
use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_loom_tests::{assert_caught, assert_valid, model, params, small_space};
use devpriv_pagemap::page_flags::PG_RESERVED;
use devpriv_pagemap::{DevicePrivateSpace, SpaceConfig};
use loom::sync::Arc;
use loom::thread;

/// A 64 KiB space in 16 KiB (4-page) sections with section-aligned
/// packing, every page with an array entry: a handful of loom objects.
fn space(mutants: Mutants) -> Arc<DevicePrivateSpace> {
    let cfg = SpaceConfig {
        space_shift: Some(16),
        section_shift: 14,
        pgmap_array_pages: 16,
        ..small_space()
    };
    Arc::new(DevicePrivateSpace::with_mutants(cfg, mutants))
}

/// A reader of `off`: `None`, or a fully initialised page with its offset
/// back, owned by pagemap `owner`.
fn reader(space: &Arc<DevicePrivateSpace>, off: u64, owner: u64) -> thread::JoinHandle<()> {
    let space = Arc::clone(space);
    thread::spawn(move || {
        let g = space.read();
        let off = DevicePrivateOffset::new(off);
        if let Some(page) = g.device_private_offset_to_page(off) {
            assert!(
                page.test_flag(PG_RESERVED),
                "a page of a half-built pagemap"
            );
            assert_eq!(g.device_private_page_to_offset(page), Some(off));
            assert_eq!(page.owner().id(), owner, "the wrong pagemap");
        }
    })
}

fn publish(mutants: Mutants) {
    let space = space(mutants);
    // A first, so that the index's leaf exists before the race.
    let _a = space.memremap_device_private_pagemap(params(2), 0).unwrap();
    let r = reader(&space, 4, 1);
    let b = space.memremap_device_private_pagemap(params(2), 0).unwrap();
    assert_eq!(b.first_offset().get(), 4);
    r.join().unwrap();
    assert_valid(&space);
}

/// The main thread unmaps A (of `pages` pages: 2 leaves its section
/// shared, so lookups read the per-page entries; 4 covers it whole, so
/// they read the section's entry) while a reader looks up its page 1.
fn clear_pages(mutants: Mutants, pages: u64) {
    let space = space(mutants);
    let a = space
        .memremap_device_private_pagemap(params(pages), 0)
        .unwrap();
    let r = reader(&space, 1, 0);
    space.memunmap_device_private_pagemap(&a).unwrap();
    r.join().unwrap();
    assert_valid(&space);
}

fn clear(mutants: Mutants) {
    clear_pages(mutants, 2);
}

#[test]
fn pgmap_array_lookup_vs_memremap() {
    let runs = model(|| publish(Mutants::NONE));
    eprintln!("pgmap_array_lookup_vs_memremap: {runs} executions");
}

#[test]
fn pgmap_array_lookup_vs_memunmap() {
    let runs = model(|| clear(Mutants::NONE));
    eprintln!("pgmap_array_lookup_vs_memunmap: {runs} executions");
}

#[test]
fn mutant_cleared_after_grace_period_is_caught() {
    assert_caught(
        || clear(Mutant::PgmapArrayClearedAfterGracePeriod.into()),
        &["Causality violation", "reclaimed pagemap"],
    );
}

#[test]
fn mutant_not_cleared_is_caught() {
    assert_caught(
        || clear(Mutant::PgmapArrayNotCleared.into()),
        &["Causality violation", "reclaimed pagemap"],
    );
}

#[test]
fn pgmap_array_section_entry_vs_memunmap() {
    let runs = model(|| clear_pages(Mutants::NONE, 4));
    eprintln!("pgmap_array_section_entry_vs_memunmap: {runs} executions");
}

#[test]
fn mutant_section_entry_not_cleared_is_caught() {
    assert_caught(
        || clear_pages(Mutant::PgmapArrayNotCleared.into(), 4),
        &["Causality violation", "reclaimed pagemap"],
    );
}

#[test]
fn mutant_slot_cleared_early_is_caught() {
    assert_caught(
        || clear(Mutant::PgmapArraySlotClearedEarly.into()),
        &["Causality violation", "slot was cleared under a reader"],
    );
}
