//! A section-index lookup racing `memunmap` of the section's pagemap and a
//! `memremap` that puts a new pagemap in the same section.
//!
//! Kernel: `device_private_offset_to_page()` against
//! `memunmap_device_private_pagemap()` and `memremap_device_private_pagemap()`
//! (`mm/memremap.c`, v6 proposal); the index's two-word slot models
//! SPARSEMEM's `section_mem_map` (`mm/sparse.c`).
//!
//! `memunmap` drops the writer lock before its grace period, so the second
//! writer can publish pagemap B (and B's memmap base) in the section while
//! the reader still holds A's pointer. The reader's seqlock re-check must
//! then refuse B's base and fall back to A, which the grace period keeps
//! alive. Checks: the reader gets A's page, B's page or `None`, and a page
//! always lies in the pagemap it is reported with.

#![cfg(loom)]
#![forbid(unsafe_code)]

use devpriv_core::DevicePrivateOffset;
use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_loom_tests::{assert_caught, assert_valid, model, params};
use devpriv_pagemap::page_flags::PG_RESERVED;
use devpriv_pagemap::{DevicePrivateSpace, Packing, SpaceConfig};
use loom::sync::Arc;
use loom::thread;

fn scenario(mutants: Mutants) {
    // Two-page sections in a 32 KiB space: each two-page pagemap covers a
    // whole section, so the index publishes a memmap base for it.
    let cfg = SpaceConfig {
        packing: Packing::SectionAligned,
        section_shift: 13,
        space_shift: Some(15),
        ..SpaceConfig::default()
    };
    let space = Arc::new(DevicePrivateSpace::with_mutants(cfg, mutants));
    let a = space.memremap_device_private_pagemap(params(2), 0).unwrap();
    let reader = {
        let space = Arc::clone(&space);
        thread::spawn(move || {
            let g = space.read();
            let off = DevicePrivateOffset::new(1);
            if let Some(page) = g.device_private_offset_to_page(off) {
                let owner = page.owner();
                assert!(
                    owner
                        .pages()
                        .as_ptr_range()
                        .contains(&std::ptr::from_ref(&*page)),
                    "page reported with a pagemap it is not in"
                );
                assert!(page.test_flag(PG_RESERVED), "a half-built page");
                assert_eq!(g.device_private_page_to_offset(page), Some(off));
            }
        })
    };
    let remapper = {
        let space = Arc::clone(&space);
        thread::spawn(move || {
            // B stays mapped; the space tears it down when it drops.
            drop(space.memremap_device_private_pagemap(params(2), 0).unwrap());
        })
    };
    space.memunmap_device_private_pagemap(&a).unwrap();
    reader.join().unwrap();
    remapper.join().unwrap();
    assert_valid(&space);
}

#[test]
fn index_lookup_vs_unmap_remap() {
    let runs = model(|| scenario(Mutants::NONE));
    eprintln!("index_lookup_vs_unmap_remap: {runs} executions");
}

#[test]
fn mutant_no_recheck_is_caught() {
    assert_caught(
        || scenario(Mutant::SpaceIndexNoRecheck.into()),
        &["a pagemap it is not in"],
    );
}

// `SrcuRelaxedFlipMarker` was caught here until issue 14's range-tree
// changes; since then loom explores every interleaving at bound 3 (536,743
// executions) without a report, so its mutant test is gone from this file.
// The likely reason (not verified): the tree's `synchronize` now takes the
// writer lock to close its retire batch, so `memunmap(A)`'s grace period
// and `memremap(B)`'s reclaim are also ordered by that lock. A four-thread
// SRCU-only model (reader, two foreign flippers, a poller) did not catch
// it either, at 5 million executions. Open: docs/testing.md, audit table.
