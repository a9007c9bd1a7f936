//! Lock-free `load`s racing writes that replace a leaf *in place*: one
//! `Release` store of the new leaf into its parent's child slot, with no new
//! root.
//!
//! Kernel: `mtree_load()` under `rcu_read_lock()` racing `mtree_alloc_range()`
//! and `mtree_erase()` in RCU mode, where `mas_wr_node_store()` builds a new
//! node and `mas_replace_node()` publishes it with `rcu_assign_pointer()`
//! into the parent's slot (`lib/maple_tree.c`, main); the old node goes through
//! `call_rcu()`.
//!
//! The tree holds 17 entries, so the root is internal with two leaves (13
//! and 4 entries). The allocation lands in the first leaf's gap and the
//! erase takes that leaf's first entry: both fit the leaf without a split or
//! a merge and stay below its pivot, so both take the in-place path (a unit
//! test in `devpriv-rangetree` checks that the root does not change). The
//! reader loads a key of the new range and a key of the erased one under
//! one read guard, while the writer also waits for the grace period that
//! frees both replaced leaves.
//!
//! Checks: every hit is a whole entry holding the key, with its own value;
//! the reader never reads a leaf before it was built (publication) or after
//! it was freed (grace period).

#![cfg(loom)]
#![forbid(unsafe_code)]

use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_loom_tests::{Payload, assert_caught, model};
use devpriv_rangetree::RangeTree;
use loom::sync::Arc;
use loom::thread;

fn scenario(mutants: Mutants) {
    // Leaked payloads: creation tracked, never dangling (see
    // `range_tree_load_vs_alloc_erase`).
    let payload = |tag| -> &'static Payload { Box::leak(Box::new(Payload::new(tag))) };
    let tree = Arc::new(RangeTree::with_mutants(mutants));
    for i in 0..17 {
        tree.insert_range(10 * i..=10 * i + 4, payload(10 * i))
            .unwrap();
    }
    let reader = {
        let tree = Arc::clone(&tree);
        thread::spawn(move || {
            let g = tree.read();
            for key in [6, 2] {
                if let Some((range, payload)) = g.load(key) {
                    assert!(range.contains(&key), "a range that misses the key");
                    payload.check(*range.start());
                }
            }
        })
    };
    // In the first leaf's gap 5..=9: the leaf grows from 13 to 14 entries.
    let start = tree.alloc_range(3, 1, 5..=9, payload(5)).unwrap();
    assert_eq!(start, 5);
    // Back to 13: no merge.
    tree.erase(2).unwrap().check(0);
    tree.synchronize();
    reader.join().unwrap();
    tree.validate().unwrap();
}

#[test]
fn load_vs_in_place_store() {
    let runs = model(|| scenario(Mutants::NONE));
    eprintln!("load_vs_in_place_store: {runs} executions");
}

/// The child slot stored `Relaxed`: the reader follows it to a leaf whose
/// construction it is not ordered after.
#[test]
fn mutant_relaxed_child_store_is_caught() {
    assert_caught(
        || scenario(Mutant::RangeTreeRelaxedChildStore.into()),
        &["Causality violation"],
    );
}

/// The leaf replaced in place is freed with no grace period while the
/// reader may still be in it.
#[test]
fn mutant_no_grace_period_is_caught() {
    assert_caught(
        || scenario(Mutant::SrcuNoGracePeriod.into()),
        &["Causality violation"],
    );
}
