//! Helpers and fixtures for devpriv's loom models.
//!
//! Kernel: none (model only).
//!
//! Each file in `tests/` is one race, named `<op>_vs_<op>.rs`, and starts
//! with `#![cfg(loom)]`. Every model has a mutant twin that plants a bug
//! (see `devpriv_core::mutant::Mutant`) and must be caught: the twin calls
//! `assert_caught`, so a model that could pass vacuously fails CI. Every
//! model that builds a space ends with [`assert_valid`].
//!
//! Run with:
//!
//! ```text
//! CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg loom -C debug_assertions" \
//!     LOOM_MAX_PREEMPTIONS=3 cargo test -p devpriv-loom-tests --release -- --test-threads=1
//! ```

#![forbid(unsafe_code)]

use devpriv_core::PageCount;
use devpriv_core::sync::TrackedCell;
use devpriv_pagemap::{DevicePrivateSpace, NoopOps, Owner, Packing, PagemapParams, SpaceConfig};
use std::sync::Arc;

#[cfg(loom)]
pub use imp::*;

/// The parameters of a pagemap of `nr_pages` pages with the no-op driver
/// ([`NoopOps`]) and owner 1.
pub fn params(nr_pages: u64) -> PagemapParams {
    PagemapParams::private(PageCount::new(nr_pages), Owner(1), Arc::new(NoopOps))
}

/// A machine for the page-table models: `sys_pages` of system memory (at
/// pfn 0x100000, PMD-aligned) and a 16 MiB device-private space with the
/// kernel's packing.
///
/// # Panics
///
/// If `sys_pages` is 0.
pub fn machine(sys_pages: u64) -> devpriv_migrate::Memory {
    let sys = devpriv_migrate::SystemMemory::new(
        devpriv_core::Pfn::new(0x10_0000),
        PageCount::new(sys_pages),
    )
    .expect("a PMD-aligned base and a nonzero size");
    let space = DevicePrivateSpace::with_config(SpaceConfig {
        space_shift: Some(24),
        ..SpaceConfig::default()
    });
    devpriv_migrate::Memory::new(Arc::new(sys), Arc::new(space))
}

/// A 16 MiB space in 2 MiB sections with section-aligned packing: every
/// small pagemap gets a section of its own, and the index stays a handful
/// of loom objects.
pub fn small_space() -> SpaceConfig {
    SpaceConfig {
        packing: Packing::SectionAligned,
        space_shift: Some(24),
        ..SpaceConfig::default()
    }
}

/// Asserts that `space` is valid, with the broken invariant in the panic
/// message.
///
/// # Panics
///
/// If `space.validate()` fails.
#[track_caller]
pub fn assert_valid(space: &DevicePrivateSpace) {
    if let Err(e) = space.validate() {
        panic!("validate: {e}");
    }
}

/// A value whose contents loom tracks: created with a tag, checked by
/// readers, poisoned on drop. A reader that is not ordered after its
/// creation, or not ordered before its drop, is a causality violation.
#[derive(Debug)]
pub struct Payload {
    cell: TrackedCell<u64>,
}

/// What a dropped payload holds.
pub const POISON: u64 = 0xdead_dead;

impl Payload {
    /// A payload holding `tag`.
    pub fn new(tag: u64) -> Self {
        Payload {
            cell: TrackedCell::new(tag),
        }
    }

    /// A payload holding `tag` that is never freed: the value type of the
    /// range-tree models. Its creation is tracked (a reader not ordered
    /// after it is reported) and it cannot dangle, so a grace-period bug
    /// shows up as a read of a freed tree node, which the tree's loom build
    /// reports.
    pub fn leaked(tag: u64) -> &'static Payload {
        Box::leak(Box::new(Payload::new(tag)))
    }

    /// Reads the tag (a tracked read) and asserts it is `want` (under loom;
    /// elsewhere nothing is stored to check).
    ///
    /// # Panics
    ///
    /// If the payload was poisoned or holds another tag.
    pub fn check(&self, want: u64) {
        if let Some(got) = self.cell.get() {
            assert_ne!(got, POISON, "read a freed payload");
            assert_eq!(got, want, "payload holds the wrong tag");
        }
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        // A tracked write: loom reports a reader that races with it.
        self.cell.set(POISON);
    }
}

#[cfg(loom)]
mod imp {
    use super::Payload;
    use devpriv_core::mutant::Mutants;
    use devpriv_pagemap::percpu_refcount::{Completion, PercpuRef};
    use devpriv_rangetree::RangeTree;
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use std::panic::{AssertUnwindSafe, catch_unwind};

    /// A range tree built with `mutants`, holding `0..=9` → payload 0.
    ///
    /// # Panics
    ///
    /// If the insert into the empty tree fails (a broken tree).
    pub fn tree_0_9(mutants: Mutants) -> Arc<RangeTree<&'static Payload>> {
        let tree = Arc::new(RangeTree::with_mutants(mutants));
        tree.insert_range(0..=9, Payload::leaked(0)).unwrap();
        tree
    }

    /// A `PercpuRef` built with `mutants` whose release callback counts its
    /// calls and completes `done` (`dev_pagemap_percpu_release()`): the
    /// reference, the count and the completion teardown waits for.
    pub fn counted_ref(mutants: Mutants) -> (Arc<PercpuRef>, Arc<AtomicUsize>, Arc<Completion>) {
        let releases = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(Completion::new());
        let (count, complete) = (Arc::clone(&releases), Arc::clone(&done));
        let release = move || {
            count.fetch_add(1, Ordering::Relaxed);
            complete.complete();
        };
        (
            Arc::new(PercpuRef::with_mutants(release, mutants)),
            releases,
            done,
        )
    }

    /// The preemption bound when `LOOM_MAX_PREEMPTIONS` is not set.
    pub const DEFAULT_PREEMPTIONS: usize = 2;

    /// Runs `f` under loom with the workspace's preemption bound, and
    /// returns how many executions loom explored.
    ///
    /// # Panics
    ///
    /// If loom finds a failing execution (the point), or if it explored
    /// only one execution: a model with a single interleaving checks nothing.
    pub fn model<F>(f: F) -> usize
    where
        F: Fn() + Sync + Send + 'static,
    {
        model_with_branches(0, f)
    }

    /// [`model`] for a model whose executions take more than loom's default
    /// 1000 scheduling branches (a whole migration per thread): at least
    /// `max_branches` (`LOOM_MAX_BRANCHES` still wins if larger; 0 keeps
    /// loom's default).
    ///
    /// # Panics
    ///
    /// As [`model`].
    pub fn model_with_branches<F>(max_branches: usize, f: F) -> usize
    where
        F: Fn() + Sync + Send + 'static,
    {
        let runs = explore(max_branches, f);
        assert!(
            runs > 1,
            "the model has a single execution: it checks nothing"
        );
        runs
    }

    /// Explores `f` and, with `DEVPRIV_LOOM_REPORT` set, prints one line
    /// that `ci/loom_table.py` turns into the execution-count table of
    /// `docs/testing.md`: `loom-count <file>::<test> <bound> <executions>
    /// <seconds>`. A mutant that is caught prints no line (loom panics).
    fn explore<F>(max_branches: usize, f: F) -> usize
    where
        F: Fn() + Sync + Send + 'static,
    {
        let started = std::time::Instant::now();
        #[expect(
            clippy::disallowed_types,
            reason = "counts executions outside the model"
        )]
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&runs);
        let mut b = loom::model::Builder::new();
        if b.preemption_bound.is_none() {
            b.preemption_bound = Some(DEFAULT_PREEMPTIONS);
        }
        let bound = b.preemption_bound.unwrap_or(DEFAULT_PREEMPTIONS);
        b.max_branches = b.max_branches.max(max_branches);
        b.check(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            f();
        });
        let n = runs.load(std::sync::atomic::Ordering::Relaxed);
        if std::env::var_os("DEVPRIV_LOOM_REPORT").is_some() {
            eprintln!("loom explored {n} executions");
            eprintln!(
                "loom-count {}::{} {bound} {n} {:.1}",
                test_file(),
                std::thread::current().name().unwrap_or("?"),
                started.elapsed().as_secs_f64()
            );
        }
        n
    }

    /// The test binary's file stem (`tests/<stem>.rs`), from its path
    /// (`deps/<stem>-<hash>`).
    fn test_file() -> String {
        let exe = std::env::args().next().unwrap_or_default();
        let name = std::path::Path::new(&exe)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match name.rsplit_once('-') {
            Some((stem, _hash)) => stem.to_owned(),
            None => name,
        }
    }

    /// Runs a mutant model and asserts that loom (or an assertion inside the
    /// model) fails it, with a panic message containing one of `expect`.
    ///
    /// # Panics
    ///
    /// If the model passes (the mutant was not caught) or fails for another
    /// reason.
    pub fn assert_caught<F>(f: F, expect: &[&str])
    where
        F: Fn() + Sync + Send + 'static,
    {
        assert_caught_with_branches(0, f, expect);
    }

    /// [`assert_caught`] with the branch budget of [`model_with_branches`].
    ///
    /// # Panics
    ///
    /// As [`assert_caught`].
    pub fn assert_caught_with_branches<F>(max_branches: usize, f: F, expect: &[&str])
    where
        F: Fn() + Sync + Send + 'static,
    {
        // The expected failure prints loom's report; the panic hook is left
        // alone (swapping it breaks the generator crate's own filter).
        let r = catch_unwind(AssertUnwindSafe(|| explore(max_branches, f)));
        let payload = match r {
            Ok(_) => panic!("mutant survived: loom explored every interleaving and found no bug"),
            Err(p) => p,
        };
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        assert!(
            expect.iter().any(|e| msg.contains(e)),
            "mutant failed for an unexpected reason: {msg}"
        );
    }
}
