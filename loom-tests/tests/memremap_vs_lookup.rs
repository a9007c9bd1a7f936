//! `memremap_device_private_pagemap()` racing a lookup of the range it is
//! creating: publication through the section index.
//!
//! Kernel: `memremap_device_private_pagemap()` (`mm/memremap.c`, v6 proposal
//! 13/13: `mtree_alloc_range()`, then `__init_zone_device_page()` for every
//! page) racing `device_private_offset_to_page()`. In the model the pagemap
//! is built completely before it is published (tree insert, then the
//! section index: the seqlock write side's `fence(Release)` and the slot's
//! `Release` pointer store, `rcu_assign_pointer()`).
//!
//! A pagemap A already occupies section 0, so the index leaf is allocated
//! before the race (otherwise the leaf's own `Release` publication would
//! order everything). The main thread maps B (section 1) while a reader
//! looks up B's first page.
//!
//! Checks: the reader gets `None` or B's fully initialised page (reserved,
//! its offset back, owned by B); never a pagemap whose construction it is
//! not ordered after. Under loom each pagemap holds a tracked liveness cell
//! created during construction and read by every lookup that reaches the
//! pagemap, so a reader not ordered after the construction is a causality
//! violation.
//!
//! Mutants: `Mutant::SpaceIndexRelaxedPublish` (the slot's pointer stored
//! `Relaxed`). The seqlock's `fence(Release)` still orders the pagemap's
//! construction before the pointer, so the liveness cell shows no
//! causality violation (why an earlier version of this model missed it); what is left
//! unordered is the memmap base, stored *after* that fence: the reader
//! pairs B with a stale (null) base, and `PageRef::from_parts` reports
//! "page paired with a pagemap it is not in". `Mutant::SpaceIndexPublishNoBarrier`
//! (`Relaxed` and no fence) is caught the same way.

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
    // A 16 MiB space in 2 MiB (512-page) sections.
    let space = Arc::new(DevicePrivateSpace::with_mutants(small_space(), mutants));
    let a = space.memremap_device_private_pagemap(params(2), 0).unwrap();
    assert_eq!(a.first_offset().get(), 0);
    // B's first page: the lowest free section is section 1.
    let off = DevicePrivateOffset::new(512);
    let reader = {
        let space = Arc::clone(&space);
        thread::spawn(move || {
            let g = space.read();
            // A miss (the reader came first) WARNs, as in the kernel.
            if let Some(page) = g.device_private_offset_to_page(off) {
                assert!(
                    page.test_flag(PG_RESERVED),
                    "a page of a half-built pagemap"
                );
                assert_eq!(g.device_private_page_to_offset(page), Some(off));
                assert_eq!(page.owner().id(), 1, "the wrong pagemap");
            }
        })
    };
    let b = space.memremap_device_private_pagemap(params(2), 0).unwrap();
    assert_eq!(b.first_offset(), off);
    reader.join().unwrap();
    assert_valid(&space);
}

#[test]
fn memremap_vs_lookup() {
    let runs = model(|| scenario(Mutants::NONE));
    eprintln!("memremap_vs_lookup: {runs} executions");
}

#[test]
fn mutant_publish_no_barrier_is_caught() {
    assert_caught(
        || scenario(Mutant::SpaceIndexPublishNoBarrier.into()),
        &[
            "Causality violation",
            "page paired with a pagemap it is not in",
        ],
    );
}

#[test]
fn mutant_relaxed_publish_is_caught() {
    assert_caught(
        || scenario(Mutant::SpaceIndexRelaxedPublish.into()),
        &["page paired with a pagemap it is not in"],
    );
}
