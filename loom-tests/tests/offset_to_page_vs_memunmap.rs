//! `device_private_offset_to_page()` racing `memunmap_device_private_pagemap()`.
//!
//! Kernel: `device_private_offset_to_page()` (`mtree_load()` under RCU) and
//! `memunmap_device_private_pagemap()` (`mm/memremap.c`, v6 proposal), with
//! the model's teardown order (hazard H15, `docs/hazards.md`: erase, then
//! grace period, then reclaim).
//!
//! Checks: the reader gets either a fully initialised page of the pagemap
//! (and its offset back) or `None`; it never touches the pagemap after the
//! space has let it go. Under loom each pagemap carries a tracked liveness
//! cell that lookups read and `memunmap` writes after the grace period, so
//! a reader not ordered before the reclamation is a causality violation.

#![cfg(loom)]
#![forbid(unsafe_code)]

use devpriv_core::DevicePrivateOffset;
use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_loom_tests::{assert_caught, assert_valid, model, params, small_space};
use devpriv_pagemap::DevicePrivateSpace;
use devpriv_pagemap::page_flags::PG_RESERVED;
use loom::sync::Arc;
use loom::thread;

fn scenario(mutants: Mutants) {
    // A 16 MiB space in 2 MiB sections: a handful of loom objects.
    let space = Arc::new(DevicePrivateSpace::with_mutants(small_space(), mutants));
    let pm = space.memremap_device_private_pagemap(params(2), 0).unwrap();
    let reader = {
        let space = Arc::clone(&space);
        thread::spawn(move || {
            let g = space.read();
            let off = DevicePrivateOffset::new(1);
            if let Some(page) = g.device_private_offset_to_page(off) {
                assert!(
                    page.test_flag(PG_RESERVED),
                    "a page of a half-built pagemap"
                );
                assert_eq!(g.device_private_page_to_offset(page), Some(off));
            }
        })
    };
    space.memunmap_device_private_pagemap(&pm).unwrap();
    reader.join().unwrap();
    assert_valid(&space);
}

#[test]
fn offset_to_page_vs_memunmap() {
    let runs = model(|| scenario(Mutants::NONE));
    eprintln!("offset_to_page_vs_memunmap: {runs} executions");
}

#[test]
fn mutant_no_grace_period_is_caught() {
    assert_caught(
        || scenario(Mutant::SrcuNoGracePeriod.into()),
        &["Causality violation"],
    );
}

#[test]
fn mutant_index_not_unpublished_is_caught() {
    assert_caught(
        || scenario(Mutant::SpaceIndexNotUnpublished.into()),
        &[
            "Causality violation",
            "reclaimed pagemap",
            "index says",
            "occupied sections",
        ],
    );
}
