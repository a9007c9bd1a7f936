//! Pagemap teardown with the waiter on its own thread: `kill` ∥ the last
//! page free (`put`) and an allocation attempt (`tryget`) ∥ the unmap that
//! waits for the completion.
//!
//! Kernel: `memunmap_device_private_pagemap()` → `percpu_ref_kill()` +
//! `wait_for_completion(&pgmap->done)` (`mm/memremap.c`), racing
//! `free_zone_device_folio()` → `ops->folio_free()` then
//! `percpu_ref_put_many()`, with `dev_pagemap_percpu_release()` →
//! `complete()` (`lib/percpu-refcount.c`, `kernel/sched/completion.c`, v6).
//!
//! `percpu_ref_kill_vs_tryget_put.rs` has the killer wait for the
//! completion itself. Here the wait is on a third thread, as when
//! `memunmap` runs on one CPU while another tears down and a third frees:
//!
//! - `ref_scenario` (the `PercpuRef` alone): the main thread holds a
//!   page reference and kills; a freer writes the page and puts it, then
//!   tries to take another (`tryget_many`, hazard H11) and puts that too; a
//!   waiter waits on the completion and then reads the page. Checks: the
//!   release runs exactly once, after the last put (the waiter's read is
//!   ordered after the freer's writes, or loom reports a causality
//!   violation), and the waiter returns at all (a lost wakeup or lost put
//!   leaves it spinning until loom's branch limit). Mutants: the existing
//!   `Mutant::PercpuRefKillSkipsSeal` and `Mutant::PercpuRefRelaxedShardOps`.
//! - `pagemap_scenario` (the real free path and unmap): one thread drops
//!   the last reference to an allocated folio (`folio_put` →
//!   `free_zone_device_folio`: the driver's `folio_free` writes its own
//!   bookkeeping, then the pgmap reference is put); another runs
//!   `memunmap_device_private_pagemap` (kill, wait, erase) and then reads
//!   the driver's bookkeeping, as a driver unloading after `memunmap`
//!   would. Mutant `Mutant::FolioPutBeforeFolioFree` puts the reference
//!   first, so `memunmap` can return while `folio_free` still runs.

#![cfg(loom)]
#![forbid(unsafe_code)]

use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_core::sync::TrackedCell;
use devpriv_core::{Errno, Order, PageCount};
use devpriv_loom_tests::{assert_caught, assert_valid, counted_ref, model, small_space};
use devpriv_pagemap::{
    DevPagemapOps, DevicePrivateSpace, Folio, Owner, PageRef, PagemapParams, VmFault, folio_put,
    zone_device_page_init,
};
use loom::sync::Arc;
use loom::sync::atomic::Ordering;
use loom::thread;

/// Memory that loom tracks: written by whoever holds a reference, read by
/// the waiter once teardown is over.
type Cell = TrackedCell<u64>;

fn ref_scenario(mutants: Mutants) {
    let (r, releases, done) = counted_ref(mutants);
    let page = Arc::new(Cell::new(0));
    // A page allocated before teardown starts.
    assert!(r.tryget_many(1));

    let freer = {
        let (r, page) = (Arc::clone(&r), Arc::clone(&page));
        thread::spawn(move || {
            page.set(1);
            r.put_many(1);
            // An allocation racing teardown: succeeds only while some
            // reference is outstanding (here: the initial one, until kill).
            if r.tryget_many(1) {
                page.set(2);
                r.put_many(1);
            }
        })
    };
    let waiter = {
        let (releases, done, page) = (Arc::clone(&releases), Arc::clone(&done), Arc::clone(&page));
        thread::spawn(move || {
            done.wait();
            let v = page.get();
            assert!(v == Some(1) || v == Some(2), "page holds {v:?}");
            assert_eq!(releases.load(Ordering::Relaxed), 1, "release count");
        })
    };
    r.kill();
    freer.join().unwrap();
    waiter.join().unwrap();
    assert_eq!(
        releases.load(Ordering::Relaxed),
        1,
        "release ran more than once"
    );
    assert!(r.is_zero());
}

struct Driver {
    freed: Arc<Cell>,
}

impl DevPagemapOps for Driver {
    fn folio_free(&self, folio: Folio<'_>) {
        self.freed.set(folio.page().index() as u64 + 1);
    }

    fn migrate_to_ram(&self, _vmf: &VmFault<'_>) -> Result<(), Errno> {
        Ok(())
    }
}

fn pagemap_scenario(mutants: Mutants) {
    // The space hands `mutants` on to its pagemaps' folio paths.
    let space = std::sync::Arc::new(DevicePrivateSpace::with_mutants(small_space(), mutants));
    let freed = Arc::new(Cell::new(0));
    let driver = std::sync::Arc::new(Driver {
        freed: Arc::clone(&freed),
    });
    let params = PagemapParams::private(PageCount::new(1), Owner(1), driver);
    let pm = space.memremap_device_private_pagemap(params, 0).unwrap();
    let f = zone_device_page_init(PageRef::new(&pm, 0).unwrap(), &pm, Order::ZERO).unwrap();
    f.unlock();

    let freer = {
        let pm = std::sync::Arc::clone(&pm);
        thread::spawn(move || {
            let p = PageRef::new(&pm, 0).unwrap();
            folio_put(p.folio());
        })
    };
    let unmapper = {
        let (space, pm, freed) = (
            std::sync::Arc::clone(&space),
            std::sync::Arc::clone(&pm),
            Arc::clone(&freed),
        );
        thread::spawn(move || {
            space.memunmap_device_private_pagemap(&pm).unwrap();
            // The driver may now free its bookkeeping: folio_free is done.
            assert_eq!(freed.get(), Some(1), "memunmap returned before folio_free");
        })
    };
    freer.join().unwrap();
    unmapper.join().unwrap();
    assert!(pm.percpu_ref().is_zero() && pm.done().is_done());
    assert!(space.is_empty());
    assert_valid(&space);
}

#[test]
fn kill_vs_put_vs_wait() {
    let runs = model(|| ref_scenario(Mutants::NONE));
    eprintln!("kill_vs_put_vs_wait: {runs} executions");
}

#[test]
fn folio_put_vs_memunmap() {
    let runs = model(|| pagemap_scenario(Mutants::NONE));
    eprintln!("folio_put_vs_memunmap: {runs} executions");
}

#[test]
fn mutant_kill_skips_seal_is_caught_with_a_separate_waiter() {
    assert_caught(
        || ref_scenario(Mutant::PercpuRefKillSkipsSeal.into()),
        &["Causality violation", "maximum number of branches"],
    );
}

#[test]
fn mutant_relaxed_shard_ops_is_caught_with_a_separate_waiter() {
    assert_caught(
        || ref_scenario(Mutant::PercpuRefRelaxedShardOps.into()),
        &["Causality violation"],
    );
}

#[test]
fn mutant_put_before_folio_free_is_caught() {
    assert_caught(
        || pagemap_scenario(Mutant::FolioPutBeforeFolioFree.into()),
        &["Causality violation", "before folio_free"],
    );
}
