//! Lock-free `load` through a read guard, racing `alloc_range`, `erase`
//! and the grace period that frees what `erase` unpublished.
//!
//! Kernel: `mtree_load()` under `rcu_read_lock()` racing
//! `mtree_alloc_range()` / `mtree_erase()` + `synchronize_rcu()`
//! (`lib/maple_tree.c`, RCU mode, main).
//!
//! Checks: the reader never sees a node or value before it was fully built
//! (publication), and never after it was freed (grace period); every hit is
//! a range that contains the key, with the right value.

#![cfg(loom)]
#![forbid(unsafe_code)]

use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_loom_tests::{Payload, assert_caught, model, tree_0_9};
use loom::sync::Arc;
use loom::thread;

fn scenario(mutants: Mutants) {
    // Values are leaked payloads (`Payload::leaked`), so a grace-period bug
    // shows up as a read of a freed tree node.
    let tree = tree_0_9(mutants);
    let reader = {
        let tree = Arc::clone(&tree);
        thread::spawn(move || {
            let g = tree.read();
            for key in [15, 5] {
                if let Some((range, payload)) = g.load(key) {
                    assert!(range.contains(&key));
                    payload.check(*range.start());
                }
            }
        })
    };
    let start = tree
        .alloc_range(10, 1, 0..=99, Payload::leaked(10))
        .unwrap();
    assert_eq!(start, 10);
    tree.erase(5).unwrap().check(0);
    // Waits for the reader, then frees the nodes the writes replaced.
    tree.synchronize();
    reader.join().unwrap();
    tree.validate().unwrap();
}

#[test]
fn load_vs_alloc_erase() {
    let runs = model(|| scenario(Mutants::NONE));
    eprintln!("load_vs_alloc_erase: {runs} executions");
}

#[test]
fn mutant_relaxed_root_publish_is_caught() {
    assert_caught(
        || scenario(Mutant::RangeTreeRelaxedPublish.into()),
        &["Causality violation"],
    );
}

#[test]
fn mutant_no_grace_period_is_caught() {
    assert_caught(
        || scenario(Mutant::SrcuNoGracePeriod.into()),
        &["Causality violation"],
    );
}

#[test]
fn mutant_no_reader_fence_is_caught() {
    assert_caught(
        || scenario(Mutant::SrcuNoReaderFence.into()),
        &["Causality violation"],
    );
}
