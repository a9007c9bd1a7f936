//! `memremap` of a pagemap into a section another pagemap already uses,
//! racing lookups in that section: publication of a shared section's
//! sub-range table.
//!
//! Kernel: `memremap_device_private_pagemap()` racing
//! `device_private_offset_to_page()` (`mm/memremap.c`, series v6) under the
//! kernel's exact packing, where two pagemaps share a 2 MiB section; the
//! model's table stands in for the maple tree walk the kernel does there.
//!
//! Pagemap A (one page at offset 0) has the section to itself; the main
//! thread maps B (one page, offset 1), which turns the section's slot from
//! "A" into a table of two sub-ranges, built whole and published with one
//! `Release` store. The reader looks up B's page, then A's.
//!
//! Checks: B's lookup gives `None` (it came first) or B's initialised page;
//! A's lookup always gives A's page (A stays mapped: never a miss). The
//! table sits in loom's checked cell, so a reader not ordered after its
//! construction is a causality violation.
//!
//! Mutant: `SpaceIndexSharedRelaxedPublish` (the table's pointer stored
//! `Relaxed`): caught as a causality violation on the table.

#![cfg(loom)]
#![forbid(unsafe_code)]

use devpriv_core::DevicePrivateOffset;
use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_loom_tests::{assert_caught, assert_valid, model, params};
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

fn scenario(mutants: Mutants) {
    let space = Arc::new(DevicePrivateSpace::with_mutants(exact_space(), mutants));
    let a = space.memremap_device_private_pagemap(params(1), 0).unwrap();
    assert_eq!(a.first_offset().get(), 0);
    let a_id = a.id();
    let reader = {
        let space = Arc::clone(&space);
        thread::spawn(move || {
            let g = space.read();
            let off = DevicePrivateOffset::new(1);
            if let Some(page) = g.device_private_offset_to_page(off) {
                assert!(page.test_flag(PG_RESERVED), "a half-built page");
                assert_eq!(g.device_private_page_to_offset(page), Some(off));
                assert_ne!(page.owner().id(), a_id, "B's offset reported as A's");
            }
            let off = DevicePrivateOffset::new(0);
            let page = g
                .device_private_offset_to_page(off)
                .expect("a lookup of a pagemap that stays mapped missed");
            assert_eq!(page.owner().id(), a_id);
        })
    };
    let b = space.memremap_device_private_pagemap(params(1), 0).unwrap();
    assert_eq!(b.first_offset().get(), 1, "B shares A's section");
    reader.join().unwrap();
    assert_valid(&space);
}

#[test]
fn shared_section_publish_vs_lookup() {
    let runs = model(|| scenario(Mutants::NONE));
    eprintln!("shared_section_publish_vs_lookup: {runs} executions");
}

#[test]
fn mutant_shared_relaxed_publish_is_caught() {
    assert_caught(
        || scenario(Mutant::SpaceIndexSharedRelaxedPublish.into()),
        &["Causality violation"],
    );
}
