//! `device_private_offset_to_page()` racing `memunmap_device_private_pagemap()`.
//!
//! Kernel: `device_private_offset_to_page()` (`mtree_load()` under RCU) and
//! `memunmap_device_private_pagemap()` (`mm/memremap.c`, series v6), with
//! the model's teardown order (hazard H15: erase, then grace period, then
//! reclaim).
//!
//! Checks: the reader gets either a fully initialised page of the pagemap
//! (and its offset back) or `None`; it never touches the pagemap after the
//! space has let it go. Under loom each pagemap carries a tracked liveness
//! cell that lookups read and `memunmap` writes after the grace period, so
//! a reader not ordered before the reclamation is a causality violation.

#![cfg(loom)]

use devpriv_core::mutant::Mutant;
use devpriv_core::{DevicePrivateOffset, Errno, PageCount};
use devpriv_loom_tests::{assert_caught, model};
use devpriv_pagemap::page_flags::PG_RESERVED;
use devpriv_pagemap::{
    DevPagemapOps, DevicePrivateSpace, Folio, MemoryType, Owner, Packing, PagemapParams,
    SpaceConfig, VmFault,
};
use loom::sync::Arc;
use loom::thread;

struct Driver;
impl DevPagemapOps for Driver {
    fn folio_free(&self, _folio: Folio<'_>) {}
    fn migrate_to_ram(&self, _vmf: &VmFault<'_>) -> Result<(), Errno> {
        Ok(())
    }
}

fn scenario(mutant: Mutant) {
    // A 16 MiB space in 2 MiB sections: a handful of loom objects.
    let cfg = SpaceConfig {
        packing: Packing::SectionAligned,
        space_shift: Some(24),
        ..SpaceConfig::default()
    };
    let space = Arc::new(DevicePrivateSpace::with_mutant(cfg, mutant));
    let params = PagemapParams {
        memory_type: MemoryType::Private,
        nr_pages: PageCount::new(2),
        owner: Some(Owner(1)),
        ops: Some(std::sync::Arc::new(Driver)),
    };
    let pm = space.memremap_device_private_pagemap(params, 0).unwrap();
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
    space.validate().unwrap();
}

#[test]
fn offset_to_page_vs_memunmap() {
    let runs = model(|| scenario(Mutant::None));
    eprintln!("offset_to_page_vs_memunmap: {runs} executions");
}

#[test]
fn mutant_no_grace_period_is_caught() {
    assert_caught(
        || scenario(Mutant::SrcuNoGracePeriod),
        &["Causality violation"],
    );
}

#[test]
fn mutant_index_not_unpublished_is_caught() {
    assert_caught(
        || scenario(Mutant::SpaceIndexNotUnpublished),
        &[
            "Causality violation",
            "reclaimed pagemap",
            "index says",
            "occupied sections",
        ],
    );
}
