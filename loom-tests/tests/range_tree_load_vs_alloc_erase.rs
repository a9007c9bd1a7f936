//! Lock-free `load` through a read guard, racing `alloc_range` and `erase`.
//!
//! Kernel: `mtree_load()` under `rcu_read_lock()` racing
//! `mtree_alloc_range()` / `mtree_erase()` + `synchronize_rcu()`
//! (`lib/maple_tree.c`, RCU mode).
//!
//! Checks: the reader never sees a node or value before it was fully built
//! (publication), and never after it was freed (grace period); every hit is
//! a range that contains the key, with the right value.

#![cfg(loom)]

use devpriv_core::mutant::Mutant;
use devpriv_loom_tests::{Payload, assert_caught, model};
use devpriv_rangetree::RangeTree;
use loom::sync::Arc;
use loom::thread;

fn scenario(mutant: Mutant) {
    let tree = Arc::new(RangeTree::with_mutant(mutant));
    tree.insert_range(0..=9, Payload::new(0)).unwrap();
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
    let start = tree.alloc_range(10, 1, 0..=99, Payload::new(10)).unwrap();
    assert_eq!(start, 10);
    // Waits for the reader; the value is then dropped (and poisoned).
    let old = tree.erase(5).unwrap();
    old.check(0);
    drop(old);
    reader.join().unwrap();
    tree.validate().unwrap();
}

#[test]
fn load_vs_alloc_erase() {
    let runs = model(|| scenario(Mutant::None));
    eprintln!("load_vs_alloc_erase: {runs} executions");
}

#[test]
fn mutant_relaxed_root_publish_is_caught() {
    assert_caught(
        || scenario(Mutant::RangeTreeRelaxedPublish),
        &["Causality violation"],
    );
}

#[test]
fn mutant_no_grace_period_is_caught() {
    assert_caught(
        || scenario(Mutant::SrcuNoGracePeriod),
        &["Causality violation", "freed payload"],
    );
}

#[test]
fn mutant_no_reader_fence_is_caught() {
    assert_caught(
        || scenario(Mutant::SrcuNoReaderFence),
        &["Causality violation", "freed payload"],
    );
}
