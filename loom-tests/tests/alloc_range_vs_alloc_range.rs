//! Two `alloc_range` calls on one tree at once.
//!
//! Kernel: `mtree_alloc_range()` (`lib/maple_tree.c`): `mtree_lock()`, then
//! `mas_empty_area()` and `mas_insert()` inside the same locked section, so
//! two allocators never pick the same gap. `RangeTree` serialises writers
//! with its own writer lock (a `devpriv_core::sync::Mutex`), as the maple
//! tree's internal spinlock does; callers need no lock of their own.
//!
//! Checks: both allocations succeed, their ranges are disjoint and free
//! before the call, each range holds its own value, `len` is 3 and
//! `validate()` holds.
//!
//! Mutant `Mutant::RangeTreeAllocSearchUnlocked`: the gap is searched under
//! a read guard and the writer lock taken only for the insert; loom finds
//! the execution where both writers choose the same gap: the later store
//! (`mas_insert()`) finds it taken and fails with `EEXIST` although the
//! window has room.

#![cfg(loom)]
#![forbid(unsafe_code)]

use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_loom_tests::{Payload, assert_caught, model, tree_0_9};
use loom::sync::Arc;
use loom::thread;

fn scenario(mutants: Mutants) {
    // An entry in the way: the lowest gap of 4 keys starts at 10.
    let tree = tree_0_9(mutants);
    let other = {
        let tree = Arc::clone(&tree);
        thread::spawn(move || tree.alloc_range(4, 1, 0..=99, Payload::leaked(2)).ok())
    };
    let mine = tree.alloc_range(4, 1, 0..=99, Payload::leaked(1)).ok();
    let theirs = other.join().unwrap();
    let (Some(a), Some(b)) = (mine, theirs) else {
        panic!("an allocation failed with room to spare: {mine:?} {theirs:?}");
    };
    assert!(a >= 10 && b >= 10, "allocated over the existing entry");
    assert!(
        a + 3 < b || b + 3 < a,
        "overlapping allocations {a} and {b}"
    );
    tree.validate().expect("validate");
    assert_eq!(tree.len(), 3, "an allocation was lost");
    let g = tree.read();
    for (start, tag) in [(a, 1), (b, 2)] {
        let (range, p) = g.load(start).expect("an allocated range is missing");
        assert_eq!(range, start..=start + 3, "range reshaped");
        p.check(tag);
    }
}

#[test]
fn alloc_range_vs_alloc_range() {
    let runs = model(|| scenario(Mutants::NONE));
    eprintln!("alloc_range_vs_alloc_range: {runs} executions");
}

#[test]
fn mutant_search_unlocked_is_caught() {
    assert_caught(
        || scenario(Mutant::RangeTreeAllocSearchUnlocked.into()),
        &["failed with room to spare", "overlapping allocations"],
    );
}
