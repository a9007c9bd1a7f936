//! A reader of a pagemap that stays mapped, racing a neighbour's `memremap`
//! and then `memunmap` in the same section: the race `devpriv stress`
//! found (issue 16, part 4).
//!
//! Kernel: `device_private_offset_to_page()` racing
//! `memremap_device_private_pagemap()` and
//! `memunmap_device_private_pagemap()` of another pagemap
//! (`mm/memremap.c`, series v6), with the kernel's exact packing putting
//! both pagemaps in one 2 MiB section.
//!
//! Pagemap A (one page at offset 0) stays mapped throughout. Alone: a
//! second thread maps N (offset 1) and unmaps it again, so A's section goes
//! from "A" to the pair {A, N} and back, rewritten in place under the wide
//! slot's sequence count. With M and N mapped first (a table {A, M, N}):
//! the second thread unmaps N, so the section becomes the pair {A, M} and
//! the table is retired and freed after the tree's grace period. The
//! reader looks up A's page twice under one read guard.
//!
//! Checks: every lookup of A's offset gives A's page: never a miss, never
//! another pagemap's page; no table is read after it was freed.
//!
//! Mutants:
//! - `SpaceIndexNullRewriteMarker`: the slot is cleared (null) before the
//!   rewrite is marked (odd count), the general form of the stress
//!   harness's bug (a null rewrite marker): A's lookup misses.
//! - `SpaceIndexSharedNoGracePeriod`: the replaced table is freed at once,
//!   not after the grace period: a causality violation on the table.

#![cfg(loom)]
#![forbid(unsafe_code)]

use devpriv_core::DevicePrivateOffset;
use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_loom_tests::{assert_caught, assert_valid, model, params};
use devpriv_pagemap::{DevicePrivateSpace, Packing, SpaceConfig};
use loom::sync::Arc;
use loom::thread;

/// `with_m`: M shares the section too (N then makes a table).
fn scenario(mutants: Mutants, with_m: bool) {
    let cfg = SpaceConfig {
        packing: Packing::KernelExact,
        space_shift: Some(24),
        ..SpaceConfig::default()
    };
    let space = Arc::new(DevicePrivateSpace::with_mutants(cfg, mutants));
    let a = space.memremap_device_private_pagemap(params(1), 0).unwrap();
    let a_id = a.id();
    // The table variant maps M and N first and races only N's unmap (the
    // table's retirement): mapping N in the race as well takes loom past
    // memory on this machine.
    let _m = with_m.then(|| space.memremap_device_private_pagemap(params(1), 0).unwrap());
    let pre_n = with_m.then(|| space.memremap_device_private_pagemap(params(1), 0).unwrap());
    let n_first = 1 + u64::from(with_m);
    let neighbour = {
        let space = Arc::clone(&space);
        thread::spawn(move || {
            let n = match pre_n {
                Some(n) => n,
                None => space.memremap_device_private_pagemap(params(1), 0).unwrap(),
            };
            assert_eq!(n.first_offset().get(), n_first, "N shares A's section");
            space.memunmap_device_private_pagemap(&n).unwrap();
        })
    };
    {
        let g = space.read();
        let off = DevicePrivateOffset::new(0);
        for _ in 0..2 {
            let page = g
                .device_private_offset_to_page(off)
                .expect("a lookup of a pagemap that stays mapped missed");
            assert_eq!(page.owner().id(), a_id, "A's offset gave another page");
        }
    }
    neighbour.join().unwrap();
    assert_valid(&space);
}

#[test]
fn index_lookup_vs_neighbour_remap_unmap() {
    let runs = model(|| scenario(Mutants::NONE, false));
    eprintln!("index_lookup_vs_neighbour_remap_unmap: {runs} executions");
}

#[test]
fn index_lookup_vs_neighbour_remap_unmap_table() {
    let runs = model(|| scenario(Mutants::NONE, true));
    eprintln!("index_lookup_vs_neighbour_remap_unmap_table: {runs} executions");
}

#[test]
fn mutant_null_rewrite_marker_is_caught() {
    assert_caught(
        || scenario(Mutant::SpaceIndexNullRewriteMarker.into(), false),
        &["a pagemap that stays mapped missed"],
    );
}

#[test]
fn mutant_shared_no_grace_period_is_caught() {
    assert_caught(
        || scenario(Mutant::SpaceIndexSharedNoGracePeriod.into(), true),
        &["Causality violation"],
    );
}
