//! The *first* `memremap` into a section-index leaf that does not exist yet,
//! racing a lookup of the range it creates: publication of the leaf itself.
//!
//! Kernel: `memremap_device_private_pagemap()` racing
//! `device_private_offset_to_page()` (`mm/memremap.c`, series v6); the
//! leaf is `SPARSEMEM_EXTREME`'s lazily allocated `mem_section[root]`
//! (`sparse_index_init()`, `mm/sparse.c`), which must be initialised before
//! a reader can reach it.
//!
//! Every other index model maps a pagemap before its race starts, so the
//! leaf already exists, and loom does not track the initialisation of
//! atomics: a leaf published with a `Relaxed` store looked just as good to
//! them (issue 16's blind spot). Under loom the leaf carries a
//! `TrackedCell` created with it, which every reader that reaches the leaf
//! reads, so a reader not ordered after the leaf's initialisation is a
//! causality violation.
//!
//! Checks: the reader gets `None` (it came first) or A's fully initialised
//! page, with its offset back.
//!
//! Mutant: `SpaceIndexRelaxedLeafPublish` (the root entry stored
//! `Relaxed`): caught as a causality violation on the leaf's tracked cell.

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
    // A 16 MiB space in 2 MiB sections: no leaf exists yet.
    let space = Arc::new(DevicePrivateSpace::with_mutants(small_space(), mutants));
    let off = DevicePrivateOffset::new(1);
    let reader = {
        let space = Arc::clone(&space);
        thread::spawn(move || {
            let g = space.read();
            if let Some(page) = g.device_private_offset_to_page(off) {
                assert!(page.test_flag(PG_RESERVED), "a half-built page");
                assert_eq!(g.device_private_page_to_offset(page), Some(off));
            }
        })
    };
    let a = space.memremap_device_private_pagemap(params(2), 0).unwrap();
    assert_eq!(a.first_offset().get(), 0);
    reader.join().unwrap();
    assert_valid(&space);
}

#[test]
fn memremap_first_leaf_vs_lookup() {
    let runs = model(|| scenario(Mutants::NONE));
    eprintln!("memremap_first_leaf_vs_lookup: {runs} executions");
}

#[test]
fn mutant_relaxed_leaf_publish_is_caught() {
    assert_caught(
        || scenario(Mutant::SpaceIndexRelaxedLeafPublish.into()),
        &["Causality violation"],
    );
}
