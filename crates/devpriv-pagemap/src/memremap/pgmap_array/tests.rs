//! Unit tests of the pagemap array (a file of their own, so that
//! cargo-mutants mutates the array and not its test helpers).

use super::*;
use crate::memremap::{DevicePrivateSpace, NoopOps, Owner, PagemapParams, SpaceConfig};
use devpriv_core::{DevicePrivateOffset, PageCount};
use std::sync::Arc;

fn map(space: &DevicePrivateSpace, n: u64) -> Arc<DevPagemap> {
    let params = PagemapParams::private(PageCount::new(n), Owner(1), Arc::new(NoopOps));
    space.memremap_device_private_pagemap(params, 0).unwrap()
}

/// What a lookup reads first for `o`: the pagemap its entry names.
fn named(space: &DevicePrivateSpace, o: u64) -> *mut DevPagemap {
    match space.index.view().entry(o) & !HEAP_ID {
        0 => ptr::null_mut(),
        id => space
            .index
            .pgmap_array()
            .unwrap()
            .pgmaps
            .get(id as usize)
            .unwrap()
            .load(Ordering::Relaxed),
    }
}

/// The page a lookup of `o` finds, if any.
fn at(space: &DevicePrivateSpace, o: u64) -> Option<*const crate::mm_types::Page> {
    let g = space.read();
    g.device_private_offset_to_page(DevicePrivateOffset::new(o))
        .map(|p| ptr::from_ref(&*p))
}

/// A 16 MiB space (4096 pages; small, for Miri) with the defaults.
fn small_space() -> DevicePrivateSpace {
    DevicePrivateSpace::with_config(SpaceConfig {
        space_shift: Some(24),
        ..SpaceConfig::default()
    })
}

/// A space with no array of its own, for arrays built by hand.
fn bare_space() -> DevicePrivateSpace {
    DevicePrivateSpace::with_config(SpaceConfig {
        space_shift: Some(24),
        pgmap_array_pages: 0,
        ..SpaceConfig::default()
    })
}

/// The per-section level.
fn sections(a: &PgmapArray) -> &Level {
    a.levels.last().unwrap()
}

fn id_of(a: &PgmapArray, o: u64) -> u32 {
    a.entry(o).unwrap().load(Ordering::Relaxed)
}

#[test]
fn store_names_every_page_and_unmap_clears_them() {
    let space = small_space();
    let a = map(&space, 10);
    let b = map(&space, 3);
    let arr = space.index.pgmap_array().unwrap();
    assert_eq!((arr.check(&a), arr.check(&b)), (None, None));
    for o in 0..10 {
        assert!(ptr::eq(named(&space, o), Arc::as_ptr(&a)), "offset {o}");
    }
    assert_eq!(id_of(arr, 12), id_of(arr, 10));
    assert_eq!(id_of(arr, 13), 0);
    space.memunmap_device_private_pagemap(&a).unwrap();
    for o in 0..10 {
        assert!(named(&space, o).is_null(), "offset {o} after unmap");
        assert_eq!(id_of(arr, o), 0);
    }
    assert!(ptr::eq(named(&space, 10), Arc::as_ptr(&b)));
    let g = space.read();
    assert!(
        g.device_private_offset_to_page(DevicePrivateOffset::new(10))
            .is_some()
    );
    drop(g);
    space.validate().unwrap();
}

#[test]
fn an_id_comes_back_only_once_released() {
    let space = bare_space();
    let (p, q, r) = (map(&space, 4), map(&space, 4), map(&space, 4));
    let arr = PgmapArray::new(64, 9, Mutants::NONE).unwrap();
    arr.store(&p);
    let id = id_of(&arr, 0);
    assert_ne!(id, 0);
    assert_eq!(arr.clear(&p), Some(id));
    assert_eq!((0..4).map(|o| id_of(&arr, o)).max(), Some(0));
    // The slot stays until the release: a reader may hold the id.
    let slot = arr.pgmaps.get(id as usize).unwrap();
    assert!(ptr::eq(slot.load(Ordering::Relaxed), Arc::as_ptr(&p)));
    // Not released yet (a reader may still hold it): a fresh id.
    arr.store(&q);
    assert_ne!(id_of(&arr, 4), id);
    arr.release(id);
    assert!(
        slot.load(Ordering::Relaxed).is_null(),
        "released: no stale pointer"
    );
    arr.store(&r);
    assert_eq!(id_of(&arr, 8), id);
    assert_eq!((arr.check(&q), arr.check(&r)), (None, None));
    // A pagemap the array does not name is reported.
    assert_eq!(arr.check(&p), None, "cleared: no id, no entries");
    arr.store(&p);
    arr.entry(2).unwrap().store(0, Ordering::Relaxed);
    assert_eq!(arr.check(&p), Some(2));
}

#[test]
fn a_pagemap_without_an_id_is_found_through_the_index() {
    let space = bare_space();
    let (p, q) = (map(&space, 4), map(&space, 4));
    let mut arr = PgmapArray::new(64, 9, Mutants::NONE).unwrap();
    arr.max_ids = 2; // id 0 (none) and one more
    arr.store(&p);
    arr.store(&q);
    assert_ne!(id_of(&arr, 0), 0);
    assert_eq!((4..8).map(|o| id_of(&arr, o)).max(), Some(0));
    assert_eq!(arr.check(&q), None);
    assert_eq!(arr.clear(&q), None);
    // Past the array's end: no id taken, none to give back.
    let r = map(&space, 4);
    let small = PgmapArray::new(6, 9, Mutants::NONE).unwrap();
    small.store(&r);
    assert_eq!(small.clear(&r), None);
    small.store(&p);
    assert_eq!(small.ids.lock().next, 2, "r took no id");
    assert_eq!(small.clear(&p), Some(1));
}

#[test]
fn a_heap_pagemap_is_tagged_and_still_found() {
    let space = small_space();
    let a = map(&space, 8);
    // Unmapped but referenced: its memmap range stays its own, so the
    // next pagemap at those offsets gets a heap array.
    space.memunmap_device_private_pagemap(&a).unwrap();
    let b = map(&space, 8);
    assert_eq!(b.first_offset(), a.first_offset());
    assert!(matches!(b.memmap(), Memmap::Heap(_)));
    assert_eq!(space.index.view().entry(3) & HEAP_ID, HEAP_ID);
    assert!(ptr::eq(named(&space, 3), Arc::as_ptr(&b)));
    let g = space.read();
    let page = g
        .device_private_offset_to_page(DevicePrivateOffset::new(3))
        .unwrap();
    assert!(ptr::eq(&*page, &b.pages()[3]));
    drop(g);
    space.validate().unwrap();
}

#[test]
fn lookups_read_section_entries_only_while_few_pages_are_partial() {
    let space = small_space(); // exact packing, 512-page sections
    let arr = space.index.pgmap_array().unwrap();
    assert_eq!(arr.raw().shift, 9, "nothing mapped: per section");
    // Whole sections only: one entry per section.
    let whole = map(&space, 4 * 512);
    assert_eq!(sections(arr).partial_pages(&whole), 0);
    assert_eq!(arr.raw().shift, 9);
    assert_eq!(arr.raw().shift, 9);
    assert!(ptr::eq(named(&space, 1), Arc::as_ptr(&whole)));
    assert!(ptr::eq(named(&space, 2047), Arc::as_ptr(&whole)));
    // A few partial pages: still per section. Their section has no
    // entry (it is not covered whole), so the index finds them.
    let few = map(&space, 20);
    assert_eq!(sections(arr).partial_pages(&few), 20);
    assert_eq!(arr.raw().shift, 9);
    assert_eq!(id_of(arr, 2048 + 3), id_of(arr, 2048));
    assert!(named(&space, 2048 + 3).is_null());
    assert_eq!(at(&space, 2048 + 3), Some(ptr::from_ref(&few.pages()[3])));
    assert_eq!(at(&space, 2048 + 20), None);
    // One partial page in 6 or more (420 of 2468): not per section, but
    // per 4 pages (every end is a multiple of 4, not all of 8).
    let odd = map(&space, 400);
    assert_eq!(sections(arr).partial_pages(&odd), 400);
    assert_eq!(arr.raw().shift, 2);
    assert!(ptr::eq(named(&space, 2048 + 3), Arc::as_ptr(&few)));
    assert!(ptr::eq(named(&space, 1), Arc::as_ptr(&whole)));
    // Off the section grid: its ends are partial, its middle is not,
    // and only its middle has section entries.
    let off_grid = map(&space, 3 * 512);
    assert_eq!(sections(arr).partial_pages(&off_grid), 512);
    let first = off_grid.first_offset().get();
    let whole_secs: Vec<u64> = (0..8)
        .filter(|&s| {
            sections(arr)
                .entries
                .get(s)
                .unwrap()
                .load(Ordering::Relaxed)
                != 0
        })
        .map(|s| s as u64)
        .collect();
    assert_eq!(
        whole_secs,
        [0, 1, 2, 3, first.div_ceil(512), first.div_ceil(512) + 1]
    );
    // 932 of 4004 pages: one in 6 or more.
    assert_eq!(arr.raw().shift, 2);
    space.memunmap_device_private_pagemap(&odd).unwrap();
    // 532 of 3604: fewer, so per section, and the index finds the
    // partial pages.
    assert_eq!(arr.raw().shift, 9);
    assert_eq!(arr.raw().shift, 9);
    assert_eq!(
        at(&space, first + 3),
        Some(ptr::from_ref(&off_grid.pages()[3]))
    );
    assert_eq!(at(&space, 2048 + 5), Some(ptr::from_ref(&few.pages()[5])));
    space.memunmap_device_private_pagemap(&off_grid).unwrap();
    assert_eq!(arr.raw().shift, 9);
    let secs = (0..8).filter(|&s| {
        sections(arr)
            .entries
            .get(s)
            .unwrap()
            .load(Ordering::Relaxed)
            != 0
    });
    assert_eq!(
        secs.count(),
        4,
        "the off-grid pagemap's sections are cleared"
    );
    assert_eq!(at(&space, 700), Some(ptr::from_ref(&whole.pages()[700])));
    assert_eq!(at(&space, 2048 + 3), Some(ptr::from_ref(&few.pages()[3])));
    space.validate().unwrap();
}

#[test]
fn check_reports_a_wrong_slot_tag_or_section_entry() {
    let space = bare_space();
    // Off the section grid: sections 1 and 2 are `p`'s whole.
    let (q, p) = (map(&space, 100), map(&space, 1500));
    let arr = PgmapArray::new(4096, 9, Mutants::NONE).unwrap();
    arr.store(&q);
    arr.store(&p);
    assert_eq!((arr.check(&p), arr.check(&q)), (None, None));
    let (first, id) = (p.first_offset().get(), id_of(&arr, 100));
    let right = PgmapArray::entry_value(id, &p);
    // The slot names another pagemap; the entries are right.
    let slot = arr.pgmaps.get(id as usize).unwrap();
    slot.store(Arc::as_ptr(&q).cast_mut(), Ordering::Relaxed);
    assert_eq!(arr.check(&p), Some(first));
    slot.store(Arc::as_ptr(&p).cast_mut(), Ordering::Relaxed);
    // The wrong heap tag; the slot is right.
    let set = |v: u32| offsets(&p).for_each(|o| arr.entry(o).unwrap().store(v, Ordering::Relaxed));
    set(right ^ HEAP_ID);
    assert_eq!(arr.check(&p), Some(first));
    set(right);
    assert_eq!(arr.check(&p), None);
    // A whole section's entry: reported at the section's first offset.
    sections(&arr)
        .entries
        .get(2)
        .unwrap()
        .store(0, Ordering::Relaxed);
    assert_eq!(arr.check(&p), Some(2 * 512));
    sections(&arr)
        .entries
        .get(2)
        .unwrap()
        .store(right, Ordering::Relaxed);
    assert_eq!(arr.check(&p), None);
}

#[test]
fn lookups_read_the_coarsest_level_with_no_partial_page() {
    let space = small_space(); // exact packing, 512-page sections
    let arr = space.index.pgmap_array().unwrap();
    // Two 256-page pagemaps per section: every page is partial per
    // section, none in granules of 256.
    let halves: Vec<_> = (0..4).map(|_| map(&space, 256)).collect();
    assert_eq!(arr.raw().shift, 8);
    assert_eq!(
        arr.levels.iter().map(|l| l.shift).collect::<Vec<_>>(),
        (0..=9).collect::<Vec<_>>()
    );
    for (i, h) in halves.iter().enumerate() {
        let o = i as u64 * 256 + 17;
        assert!(ptr::eq(named(&space, o), Arc::as_ptr(h)), "offset {o}");
        assert_eq!(at(&space, o), Some(ptr::from_ref(&h.pages()[17])));
    }
    // 100 pages from 1024: its ends are on the grid of 4, not of 8.
    let hundred = map(&space, 100);
    assert_eq!(hundred.first_offset().get(), 1024);
    assert_eq!(arr.raw().shift, 2);
    assert!(ptr::eq(named(&space, 1024 + 99), Arc::as_ptr(&hundred)));
    assert!(ptr::eq(named(&space, 3 * 256), Arc::as_ptr(&halves[3])));
    assert!(named(&space, 1124).is_null());
    // Three more pages: only the pages' level has no partial page, and
    // per 256 pages 103 of 1127 are partial, fewer than one in 6.
    let three = map(&space, 3);
    assert_eq!(arr.raw().shift, 8);
    assert!(named(&space, 1124).is_null(), "partial: through the index");
    assert_eq!(at(&space, 1124 + 2), Some(ptr::from_ref(&three.pages()[2])));
    space.validate().unwrap();
    // Coarser again as they go: entries of every level were kept.
    space.memunmap_device_private_pagemap(&three).unwrap();
    assert_eq!(arr.raw().shift, 2);
    assert_eq!(at(&space, 1124), None);
    space.memunmap_device_private_pagemap(&hundred).unwrap();
    assert_eq!(arr.raw().shift, 8);
    assert!(ptr::eq(named(&space, 511), Arc::as_ptr(&halves[1])));
    assert_eq!(at(&space, 1024), None);
    // A whole-section pagemap among them: sections stay shared.
    let whole = map(&space, 512);
    assert_eq!(sections(arr).partial_pages(&whole), 0);
    assert_eq!(arr.raw().shift, 8);
    assert_eq!(
        at(&space, 1024 + 500),
        Some(ptr::from_ref(&whole.pages()[500]))
    );
    space.validate().unwrap();
}

#[test]
fn check_reports_a_wrong_granule_entry() {
    let space = bare_space();
    let p = map(&space, 64);
    let arr = PgmapArray::new(4096, 9, Mutants::NONE).unwrap();
    arr.store(&p);
    assert_eq!(arr.raw().shift, 6);
    assert_eq!(arr.check(&p), None);
    let right = id_of(&arr, 0);
    // Granule 3 of 8 pages.
    let e = arr.levels[3].entries.get(3).unwrap();
    e.store(0, Ordering::Relaxed);
    assert_eq!(arr.check(&p), Some(24));
    e.store(right, Ordering::Relaxed);
    assert_eq!(arr.clear(&p), Some(right));
    assert_eq!(arr.raw().shift, 9, "nothing mapped: per section");
    assert!(
        arr.levels
            .iter()
            .all(|l| l.entries.get(0).unwrap().load(Ordering::Relaxed) == 0)
    );
    assert_eq!(
        arr.levels
            .iter()
            .map(|l| l.partial.load(Ordering::Relaxed))
            .max(),
        Some(0)
    );
}

#[test]
fn odd_sizes_read_the_coarsest_level_with_few_partial_pages() {
    let space = small_space();
    let arr = space.index.pgmap_array().unwrap();
    // 31 pagemaps of 129 pages: no level but the pages' is exact; per 16
    // pages 12 % of the pages are partial, per 32 pages 25 %.
    let pms: Vec<_> = (0..31).map(|_| map(&space, 129)).collect();
    assert_eq!(arr.raw().shift, 4);
    let partial = |k: usize| arr.levels[k].partial.load(Ordering::Relaxed);
    assert_eq!((partial(4), partial(5)), (479, 991));
    // Every page is found, through its granule's entry or the index.
    let g = space.read();
    for (i, pm) in pms.iter().enumerate() {
        for (j, page) in pm.pages().iter().enumerate() {
            let o = (i * 129 + j) as u64;
            let p = g.device_private_offset_to_page(DevicePrivateOffset::new(o));
            assert!(ptr::eq(&*p.unwrap(), page), "offset {o}");
        }
    }
    assert!(
        g.device_private_offset_to_page(DevicePrivateOffset::new(31 * 129))
            .is_none()
    );
    drop(g);
    space.validate().unwrap();
    // Every other one unmapped: 16 pagemaps, partial per 16 pages is
    // still under one in 6.
    for pm in pms.iter().skip(1).step_by(2) {
        space.memunmap_device_private_pagemap(pm).unwrap();
    }
    assert_eq!(arr.raw().shift, 4);
    // One 3-page pagemap more in a hole: 243 partial pages of 2067 per
    // 16 pages, 499 per 32.
    let three = map(&space, 3);
    assert_eq!(three.first_offset().get(), 129);
    assert_eq!((partial(4), partial(5)), (243, 499));
    assert_eq!(arr.raw().shift, 4);
    space.memunmap_device_private_pagemap(&three).unwrap();
    for pm in pms.iter().step_by(2) {
        space.memunmap_device_private_pagemap(pm).unwrap();
    }
    assert_eq!(arr.raw().shift, 9, "nothing mapped: per section");
    assert!(
        arr.levels
            .iter()
            .all(|l| l.partial.load(Ordering::Relaxed) == 0)
    );
}

#[test]
fn one_partial_page_in_six_exactly_leaves_the_sections() {
    let space = small_space();
    let arr = space.index.pgmap_array().unwrap();
    let f0 = map(&space, 256);
    let a = map(&space, 512); // 256..768: partial per section, whole per 256
    let f1 = map(&space, 256);
    let b = map(&space, 5 * 512); // whole sections
    space.memunmap_device_private_pagemap(&f0).unwrap();
    space.memunmap_device_private_pagemap(&f1).unwrap();
    assert_eq!(a.first_offset().get(), 256);
    // 512 partial pages of 3072: one in six exactly.
    assert_eq!(sections(arr).partial.load(Ordering::Relaxed) * 6, 3072);
    assert_eq!(arr.raw().shift, 8);
    space.memunmap_device_private_pagemap(&a).unwrap();
    assert_eq!(arr.raw().shift, 9);
    assert!(ptr::eq(named(&space, 1024), Arc::as_ptr(&b)));
}
