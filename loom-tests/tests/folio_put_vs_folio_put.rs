//! Two holders of one folio put their references at once.
//!
//! Kernel: `folio_put()` (`atomic_sub_return()` on `_refcount`, fully
//! ordered) → `free_zone_device_folio()` → `pgmap->ops->folio_free()`,
//! `mm/memremap.c` (7.0).
//!
//! Thread A writes the driver's per-folio data (what `zone_device_data`
//! points at, say) and then drops its reference; the main thread drops the
//! other. Whichever put reaches zero runs the driver's `folio_free`, which
//! reads that data. When the main thread is last, only the refcount RMW
//! orders A's write before the read: A's put releases, the last put
//! acquires.
//!
//! Checks: `folio_free` runs exactly once, reads A's write, and every
//! pagemap reference comes back.
//!
//! Mutant `Mutant::FolioRefRelaxed`: the put is a `Relaxed` RMW, so when
//! the main thread is last its `folio_free` read races A's write (a loom
//! causality violation). No earlier model had two putters, so this
//! ordering was a blind spot.

#![cfg(loom)]
#![forbid(unsafe_code)]

use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_core::sync::TrackedCell;
use devpriv_core::sync::atomic::{AtomicUsize, Ordering};
use devpriv_core::{Errno, Order, PageCount};
use devpriv_loom_tests::{assert_caught, assert_valid, model, small_space};
use devpriv_pagemap::{
    DevPagemapOps, DevicePrivateSpace, Folio, Owner, PageRef, PagemapParams, VmFault, folio_get,
    folio_put, zone_device_folio_init,
};
use loom::sync::Arc;
use loom::thread;

/// What A writes before its put.
const DATA: u64 = 0x5eed;

/// A driver whose `folio_free` reads its per-folio data.
struct Driver {
    data: TrackedCell<u64>,
    frees: AtomicUsize,
}

impl DevPagemapOps for Driver {
    fn folio_free(&self, _folio: Folio<'_>) {
        assert_eq!(self.data.get(), Some(DATA), "folio_free missed A's write");
        self.frees.fetch_add(1, Ordering::Relaxed);
    }

    fn migrate_to_ram(&self, _vmf: &VmFault<'_>) -> Result<(), Errno> {
        Ok(())
    }
}

fn scenario(mutants: Mutants) {
    let space = Arc::new(DevicePrivateSpace::with_mutants(small_space(), mutants));
    let driver = std::sync::Arc::new(Driver {
        data: TrackedCell::new(0),
        frees: AtomicUsize::new(0),
    });
    let params = PagemapParams::private(PageCount::new(1), Owner(1), driver.clone());
    let pm = space.memremap_device_private_pagemap(params, 0).unwrap();
    let head = PageRef::new(&pm, 0).unwrap();
    let folio = zone_device_folio_init(Folio::from_head(head), &pm, Order::ZERO).unwrap();
    folio.unlock();
    folio_get(folio);

    let a = {
        let (space, pm, driver) = (Arc::clone(&space), pm.clone(), driver.clone());
        thread::spawn(move || {
            let _ = &space;
            let folio = Folio::from_head(PageRef::new(&pm, 0).unwrap());
            driver.data.set(DATA);
            folio_put(folio);
        })
    };
    folio_put(folio);
    a.join().unwrap();

    assert_eq!(driver.frees.load(Ordering::Relaxed), 1, "folio_free once");
    assert_eq!(
        pm.percpu_ref().count(),
        1,
        "the pagemap's references are back"
    );
    space.memunmap_device_private_pagemap(&pm).unwrap();
    assert_valid(&space);
}

#[test]
fn folio_put_vs_folio_put() {
    let runs = model(|| scenario(Mutants::NONE));
    eprintln!("folio_put_vs_folio_put: {runs} executions");
}

#[test]
fn mutant_relaxed_refcount_is_caught() {
    assert_caught(
        || scenario(Mutants::from(Mutant::FolioRefRelaxed)),
        &["Causality violation"],
    );
}
