//! A lock-free `load` racing an `erase`, while a *third* thread drives the
//! grace period with `synchronize()` (no writer lock held while it flips).
//!
//! Kernel: `mtree_load()` under `rcu_read_lock()` racing `mtree_erase()`,
//! while another task's `synchronize_rcu()` advances the grace-period
//! sequence (`get_state_synchronize_srcu()` / `rcu_seq_snap()` racing
//! `srcu_gp_start()`, main).
//!
//! Checks: the eraser's grace-period cookie accounts for a flip that
//! another thread has started but not finished, so the erased node is not
//! reclaimed while the reader still holds it. Every earlier model has one
//! flipper, which is also the unpublisher, and cannot see this.

#![cfg(loom)]
#![forbid(unsafe_code)]

use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_loom_tests::{assert_caught, model, tree_0_9};
use loom::sync::Arc;
use loom::thread;

fn scenario(mutants: Mutants) {
    let tree = tree_0_9(mutants);
    let reader = {
        let tree = Arc::clone(&tree);
        thread::spawn(move || {
            let g = tree.read();
            if let Some((range, payload)) = g.load(5) {
                assert_eq!(range, 0..=9);
                payload.check(0);
            }
        })
    };
    let flipper = {
        let tree = Arc::clone(&tree);
        thread::spawn(move || tree.synchronize())
    };
    // Erase retires the old root under a cookie taken while the flipper
    // may be half-way through a flip, then reclaims what has passed; so
    // does the flipper's `synchronize`, under the writer lock.
    tree.erase(5).unwrap().check(0);
    flipper.join().unwrap();
    reader.join().unwrap();
    tree.validate().unwrap();
}

#[test]
fn load_vs_erase_vs_synchronize() {
    let runs = model(|| scenario(Mutants::NONE));
    eprintln!("load_vs_erase_vs_synchronize: {runs} executions");
}

/// The pre-fix `get_state`: a cookie one flip short.
#[test]
fn mutant_stale_gp_snapshot_is_caught() {
    assert_caught(
        || scenario(Mutant::SrcuStaleGpSnapshot.into()),
        &["Causality violation"],
    );
}

/// Only a flipper other than the writer can complete a flip between an
/// early cookie and the root swap, so no single-flipper model sees this.
#[test]
fn mutant_cookie_before_publish_is_caught() {
    assert_caught(
        || scenario(Mutant::RangeTreeCookieBeforePublish.into()),
        &["Causality violation"],
    );
}

/// With two flippers, each fence of the writer/flipper pair matters on its
/// own (with one flipper, the other fence covered for a missing one).
#[test]
fn mutant_no_get_state_fence_is_caught() {
    assert_caught(
        || scenario(Mutant::SrcuNoGetStateFence.into()),
        &["Causality violation"],
    );
}

#[test]
fn mutant_no_flip_fence_is_caught() {
    assert_caught(
        || scenario(Mutant::SrcuNoFlipFence.into()),
        &["Causality violation"],
    );
}
