//! `memremap` of a pagemap into a section another pagemap already uses,
//! racing lookups in that section: publication of a shared section's
//! sub-range table.
//!
//! Kernel: `memremap_device_private_pagemap()` racing
//! `device_private_offset_to_page()` (`mm/memremap.c`, series v6) under the
//! kernel's exact packing, where two pagemaps share a 2 MiB section; the
//! model's table stands in for the maple tree walk the kernel does there.
//!
//! Pagemap A (one page at offset 0) has the section to itself, or shares
//! it with C (offset 1); the main thread maps B (one page, right after
//! them), which turns the section's slot from "A" into a pair {A, B},
//! rewritten in place under the wide slot's sequence count, or from the
//! pair {A, C} into a table of three sub-ranges, built whole and published
//! with one `Release` store (see also `hole_scenario`). The reader looks up B's page, then (pair
//! variant) A's.
//!
//! Checks: B's lookup gives `None` (it came first) or B's initialised page;
//! A's lookup always gives A's page (A stays mapped: never a miss). The
//! table sits in loom's checked cell, so a reader not ordered after its
//! construction is a causality violation.
//!
//! Mutants:
//! - `SpaceIndexSharedRelaxedPublish` (the table's pointer stored
//!   `Relaxed`, no barrier): caught as a causality violation on the table.
//! - `SpaceIndexNoRecheck` (the table lookup uses the slot's hint without
//!   re-checking the count), in a third variant where a new pagemap fills
//!   a hole in a table's section and moves a stable pagemap's interval:
//!   the new table read with the old hint misses it. Also in a spilled
//!   table (9 pagemaps, a two-level hint), where the interval moves to
//!   the next group.
//! - `SpaceIndexRelaxedPublish` (the pair's closing count stored
//!   `Relaxed`): the reader can take the count as stable with a torn
//!   mix of old and new words (A's pagemap with B's base and bounds:
//!   "page paired with a pagemap it is not in"), or B's half-built page.

#![cfg(loom)]
#![forbid(unsafe_code)]

use devpriv_core::DevicePrivateOffset;
use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_loom_tests::{
    assert_caught, assert_caught_with_branches, assert_valid, model, model_with_branches, params,
};
use devpriv_pagemap::page_flags::PG_RESERVED;
use devpriv_pagemap::{DevicePrivateSpace, Packing, SpaceConfig};
use loom::sync::Arc;
use loom::thread;

/// 16 MiB in 2 MiB sections, packed as the kernel packs.
pub fn exact_space() -> SpaceConfig {
    SpaceConfig {
        packing: Packing::KernelExact,
        space_shift: Some(24),
        ..SpaceConfig::default()
    }
}

/// `before`: one-page pagemaps in the section before B (1: B makes a pair,
/// 2: a table).
fn scenario(mutants: Mutants, before: u64) {
    let space = Arc::new(DevicePrivateSpace::with_mutants(exact_space(), mutants));
    let a = space.memremap_device_private_pagemap(params(1), 0).unwrap();
    assert_eq!(a.first_offset().get(), 0);
    let _others: Vec<_> = (1..before)
        .map(|_| space.memremap_device_private_pagemap(params(1), 0).unwrap())
        .collect();
    let a_id = a.id();
    let reader = {
        let space = Arc::clone(&space);
        thread::spawn(move || {
            let g = space.read();
            let off = DevicePrivateOffset::new(before);
            if let Some(page) = g.device_private_offset_to_page(off) {
                assert!(page.test_flag(PG_RESERVED), "a half-built page");
                assert_eq!(g.device_private_page_to_offset(page), Some(off));
                assert_ne!(page.owner().id(), a_id, "B's offset reported as A's");
            }
            // The pair variant only: with a third pagemap in the section a
            // second lookup takes loom past memory on this machine.
            if before == 1 {
                let off = DevicePrivateOffset::new(0);
                let page = g
                    .device_private_offset_to_page(off)
                    .expect("a lookup of a pagemap that stays mapped missed");
                assert_eq!(page.owner().id(), a_id);
            }
        })
    };
    let b = space.memremap_device_private_pagemap(params(1), 0).unwrap();
    assert_eq!(b.first_offset().get(), before, "B shares A's section");
    reader.join().unwrap();
    assert_valid(&space);
}

#[test]
fn shared_section_publish_vs_lookup() {
    let runs = model(|| scenario(Mutants::NONE, 1));
    eprintln!("shared_section_publish_vs_lookup: {runs} executions");
}

#[test]
fn shared_section_table_publish_vs_lookup() {
    let runs = model(|| scenario(Mutants::NONE, 2));
    eprintln!("shared_section_table_publish_vs_lookup: {runs} executions");
}

/// A table whose slot's hint changes shape: A (1 page), a hole where X
/// (2 pages) was, D and F (1 page each) make the partition A, hole, D, F,
/// hole; E (1 page) lands in X's hole, which splits it, so D's interval
/// moves from index 2 to 3. The reader looks up E's page (`None` or E's)
/// and D's, which stays mapped: never a miss.
///
/// `tail` one-page pagemaps after F: with 6, the section holds 9
/// pagemaps, a spilled table with a two-level hint (11 intervals: groups
/// of 8 and 3), and E moves the fourth of them, at offset 8, from group 0
/// to group 1; the reader looks that one up instead of D.
fn hole_scenario(mutants: Mutants, tail: u64) {
    let space = Arc::new(DevicePrivateSpace::with_mutants(exact_space(), mutants));
    let pm = |n| space.memremap_device_private_pagemap(params(n), 0).unwrap();
    let (a, x, d, f) = (pm(1), pm(2), pm(1), pm(1));
    assert_eq!(d.first_offset().get(), 3);
    let tails: Vec<_> = (0..tail).map(|_| pm(1)).collect();
    space.memunmap_device_private_pagemap(&x).unwrap();
    drop(x);
    let probe = if tail == 0 { &d } else { &tails[3] };
    let (probe_off, probe_id) = (probe.first_offset(), probe.id());
    let reader = {
        let space = Arc::clone(&space);
        thread::spawn(move || {
            let g = space.read();
            if let Some(page) = g.device_private_offset_to_page(DevicePrivateOffset::new(1)) {
                assert!(page.test_flag(PG_RESERVED), "a half-built page");
            }
            let page = g
                .device_private_offset_to_page(probe_off)
                .expect("a lookup of a pagemap that stays mapped missed");
            assert_eq!(
                page.owner().id(),
                probe_id,
                "the probe's offset reported as another's"
            );
        })
    };
    let e = pm(1);
    assert_eq!(e.first_offset().get(), 1, "E fills X's hole");
    reader.join().unwrap();
    assert_valid(&space);
    drop((a, f, tails));
}

#[test]
fn shared_section_table_hint_moves_vs_lookup() {
    let runs = model(|| hole_scenario(Mutants::NONE, 0));
    eprintln!("shared_section_table_hint_moves_vs_lookup: {runs} executions");
}

/// Loom's branch budget for the spilled variant: mapping its 10
/// pagemaps takes more atomic steps than loom's default allows.
const SPILLED_BRANCHES: usize = 20_000;

#[test]
fn shared_section_spilled_hint_moves_vs_lookup() {
    let runs = model_with_branches(SPILLED_BRANCHES, || hole_scenario(Mutants::NONE, 6));
    eprintln!("shared_section_spilled_hint_moves_vs_lookup: {runs} executions");
}

/// `SpaceIndexNoRecheck` in the table lookup: the new table read with the
/// old hint sends D's page to the hole that E left at index 2 (a miss), or
/// the old table with the new hint sends a page to the wrong interval.
#[test]
fn mutant_table_no_recheck_is_caught() {
    assert_caught(
        || hole_scenario(Mutant::SpaceIndexNoRecheck.into(), 0),
        &[
            "stays mapped missed",
            "reported as another's",
            "page paired with a pagemap it is not in",
        ],
    );
}

/// The same in a spilled table: the old slot hint with the new table's
/// groups sends the probe's page to its neighbour's interval, or the new
/// hint with the old groups to a group that does not hold it.
#[test]
fn mutant_spilled_no_recheck_is_caught() {
    assert_caught_with_branches(
        SPILLED_BRANCHES,
        || hole_scenario(Mutant::SpaceIndexNoRecheck.into(), 6),
        &[
            "stays mapped missed",
            "reported as another's",
            "page paired with a pagemap it is not in",
        ],
    );
}

#[test]
fn mutant_shared_relaxed_publish_is_caught() {
    assert_caught(
        || scenario(Mutant::SpaceIndexSharedRelaxedPublish.into(), 2),
        &["Causality violation"],
    );
}

#[test]
fn mutant_pair_relaxed_publish_is_caught() {
    assert_caught(
        || scenario(Mutant::SpaceIndexRelaxedPublish.into(), 1),
        &[
            "Causality violation",
            "a half-built page",
            "page paired with a pagemap it is not in",
        ],
    );
}
