//! Pagemap teardown (`kill`, then wait for the last page to be freed)
//! racing a page free and an allocation on another thread.
//!
//! Kernel: `memunmap_device_private_pagemap()` (`mm/memremap.c`):
//! `percpu_ref_kill()` + `wait_for_completion(&pgmap->done)`, racing
//! `free_zone_device_folio()` → `percpu_ref_put_many()` and
//! `zone_device_page_init()` → `percpu_ref_tryget_many()` (hazard H11,
//! `docs/hazards.md`), with
//! `dev_pagemap_percpu_release()` → `complete()` (`lib/percpu-refcount.c`,
//! `kernel/sched/completion.c`, main; the teardown is v6's).
//!
//! The main thread is the driver: it allocates a page (a live-mode get on
//! its shard), then tears the pagemap down. The holder thread frees that
//! page (a put on the *other* shard, so the shards sum to zero only
//! together) and then tries to allocate again. Each page use is a write to
//! a loom-tracked cell made before the put that frees the page.
//!
//! Checks: the release callback runs exactly once; it runs only after the
//! last put, and everything before that put happens before the wait
//! returns (otherwise the main thread's read of the page is a causality
//! violation); the wait returns at all (a lost put or a lost wakeup leaves
//! it spinning until loom's branch limit); `tryget_live()` fails after
//! `kill()`; the count ends at zero.

#![cfg(loom)]
#![forbid(unsafe_code)]

use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_core::sync::TrackedCell;
use devpriv_loom_tests::{assert_caught, counted_ref, model};
use devpriv_pagemap::percpu_refcount::{Completion, PercpuRef};
use loom::sync::Arc;
use loom::sync::atomic::Ordering;
use loom::thread;

/// The contents of a device page: written by whoever holds a reference,
/// read by the driver after teardown (loom reports an access that races).
type Page = TrackedCell<u64>;

fn scenario(mutants: Mutants) {
    let (r, releases, done) = counted_ref(mutants);
    let page = Arc::new(Page::new(0));

    // zone_device_page_init(): the driver allocates a page.
    assert!(r.tryget_many(1));

    let holder = {
        let (r, page) = (Arc::clone(&r), Arc::clone(&page));
        thread::spawn(move || {
            // The page's last use, then free_zone_device_folio().
            page.set(1);
            r.put_many(1);
            // An allocation racing the teardown (H11): succeeds while any
            // reference is outstanding, even after kill.
            if r.tryget_many(1) {
                page.set(2);
                r.put_many(1);
            }
            // A lookup that needs a live pagemap: fails once kill has begun
            // to take effect.
            if r.tryget_live() {
                page.set(3);
                r.put_many(1);
            }
        })
    };

    // memunmap_device_private_pagemap().
    r.kill();
    // Checked only after the join: a panic while the holder thread has not
    // started yet makes loom drop its closure outside the execution, which
    // aborts the process instead of failing the model.
    let live_after_kill = r.tryget_live();
    if live_after_kill {
        r.put_many(1);
    }
    done.wait();
    assert_eq!(
        releases.load(Ordering::Relaxed),
        1,
        "release ran more than once"
    );
    // Every put happened before the release, so every write to the page
    // happened before this read.
    let v = page.get();
    assert!(matches!(v, Some(1..=3)), "page holds {v:?}");

    holder.join().unwrap();
    assert!(!live_after_kill, "tryget_live succeeded after kill");
    assert_eq!(releases.load(Ordering::Relaxed), 1, "release ran twice");
    assert!(r.is_zero());
    assert_eq!(r.count(), 0);
}

/// Two pages freed by two threads, one of them on the killer's shard (loom
/// runs with two shards), while the killer waits.
fn scenario_two_freers(mutants: Mutants) {
    let (r, done) = {
        let done = Arc::new(Completion::new());
        let d = Arc::clone(&done);
        let r = PercpuRef::with_mutants(move || d.complete(), mutants);
        (Arc::new(r), done)
    };
    let pages = [Arc::new(Page::new(0)), Arc::new(Page::new(0))];
    let freers: Vec<_> = pages
        .iter()
        .enumerate()
        .map(|(i, page)| {
            // The driver allocates the page before handing it over.
            assert!(r.tryget_many(1));
            let (r, page) = (Arc::clone(&r), Arc::clone(page));
            thread::spawn(move || {
                page.set(i as u64 + 1);
                r.put_many(1);
            })
        })
        .collect();
    r.kill();
    done.wait();
    for (i, page) in pages.iter().enumerate() {
        assert_eq!(page.get(), Some(i as u64 + 1));
    }
    for f in freers {
        f.join().unwrap();
    }
    assert!(r.is_zero());
}

#[test]
fn kill_vs_tryget_put() {
    let runs = model(|| scenario(Mutants::NONE));
    eprintln!("kill_vs_tryget_put: {runs} executions");
}

#[test]
fn kill_vs_two_freers() {
    let runs = model(|| scenario_two_freers(Mutants::NONE));
    eprintln!("kill_vs_two_freers: {runs} executions");
}

#[test]
fn mutant_kill_skips_seal_is_caught() {
    // A put that read the state as live before kill lands in a shard kill
    // has already summed: either the release comes too early (a page read
    // races the freer's write) or the count never reaches zero (the wait
    // spins until loom's branch limit).
    let expect = ["Causality violation", "maximum number of branches"];
    assert_caught(|| scenario(Mutant::PercpuRefKillSkipsSeal.into()), &expect);
    assert_caught(
        || scenario_two_freers(Mutant::PercpuRefKillSkipsSeal.into()),
        &expect,
    );
}

#[test]
fn mutant_relaxed_shard_ops_is_caught() {
    // A put on a shard no longer happens before the release.
    let expect = ["Causality violation"];
    assert_caught(
        || scenario(Mutant::PercpuRefRelaxedShardOps.into()),
        &expect,
    );
    assert_caught(
        || scenario_two_freers(Mutant::PercpuRefRelaxedShardOps.into()),
        &expect,
    );
}

#[test]
fn mutant_tryget_live_ignores_dead_is_caught() {
    assert_caught(
        || scenario(Mutant::PercpuRefTrygetLiveIgnoresDead.into()),
        &["tryget_live succeeded after kill"],
    );
}
