//! Deliberately broken protocol variants, for loom mutant tests.
//!
//! Kernel: none (model only).
//!
//! Every loom model in `loom-tests/` has twins that switch one of these on
//! and expect loom to fail, so that no model can pass vacuously. The switch
//! is a value carried by the object under test, not a cfg, so one loom
//! build runs both the model and its mutants.
//!
//! # The mechanism
//!
//! An object under test is built with a [`Mutants`] set
//! (`Srcu::with_mutants`, `RangeTree::with_mutants`,
//! `DevicePrivateSpace::with_mutants`, `PercpuRef::with_mutants`,
//! `PageVmaMappedWalk::with_mutants`, `Mm::with_mutants`), hands it on to the parts it builds
//! (a space to its tree, index, pagemaps and their refs), and protocol code
//! asks where the bug would go:
//!
//! ```
//! # use devpriv_core::mutant::{Mutant, Mutants};
//! # use devpriv_core::sync::atomic::Ordering;
//! # let mutants = Mutants::NONE;
//! let order = if mutants.has(Mutant::RangeTreeRelaxedPublish) {
//!     Ordering::Relaxed
//! } else {
//!     Ordering::Release
//! };
//! # assert_eq!(order, Ordering::Release);
//! ```
//!
//! # Why the enum is cfg-free and only the set is not
//!
//! - [`Mutant`] is only names. It exists in every build, so code that names
//!   a variant compiles the same with and without `--cfg loom`: the planted
//!   branches are type-checked, linted and documented by the ordinary
//!   build, and protocol code carries no `#[cfg(loom)]`.
//! - [`Mutants`] is the one thing that changes. Under `--cfg loom` it is a
//!   bit set (one `u64`); otherwise it is zero-sized and
//!   [`Mutants::has`] is a `const fn` that returns `false`, so the
//!   optimiser deletes every planted branch and the field takes no space:
//!   ordinary builds run the same machine code as if the mechanism did not
//!   exist (the `pagemap` benches compare).
//! - A cfg'd enum, the alternative, would put `#[cfg(loom)]` back at every
//!   construction and call site; a cfg'd *set* keeps the switch in this
//!   module, next to the [`sync`](crate::sync) shim (tokio's layout).
//!
//! Outside loom, [`Mutants::with`] and `From<Mutant>` return the empty set:
//! a mutant can only be planted in a loom build.

use std::fmt;

macro_rules! mutants {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Which bug to plant.
        ///
        /// Kernel: none (model only); each variant names the kernel
        /// primitive it breaks.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Mutant {
            $($(#[$doc])* $name,)*
        }

        impl Mutant {
            /// Every variant, in declaration order.
            pub const ALL: &'static [Mutant] = &[$(Mutant::$name,)*];
        }
    };
}

mutants! {
    /// `Srcu::read_lock` skips its `SeqCst` fence, so a flipper can miss a
    /// reader that is about to load an old pointer (`srcu_read_lock()`'s
    /// `smp_mb()`).
    SrcuNoReaderFence,
    /// `Srcu::poll` reports every grace period as already over, so
    /// unpublished objects are freed under live readers
    /// (`poll_state_synchronize_srcu()` always true).
    SrcuNoGracePeriod,
    /// `RangeTree` publishes a new root with a `Relaxed` store instead of
    /// `Release`, so a reader can see the pointer before the node contents
    /// (`rcu_assign_pointer()` as a plain store).
    RangeTreeRelaxedPublish,
    /// The pagemap section index ends a slot rewrite with `Relaxed` stores:
    /// the compact slot's pointer and the wide slot's closing sequence
    /// count (`rcu_assign_pointer()` and `write_seqcount_end()` as plain
    /// stores). The seqlock's earlier `fence(Release)` still orders the
    /// pagemap itself; the memmap base and bounds stored after that fence
    /// are what a reader can miss, or read torn.
    SpaceIndexRelaxedPublish,
    /// `memunmap` erases the tree entry but leaves the section index
    /// pointing at the pagemap, so lookups reach it after reclamation
    /// (`memunmap_device_private_pagemap()` without clearing
    /// `section_mem_map`).
    SpaceIndexNotUnpublished,
    /// The section index reader uses a slot's memmap base and bounds (or a
    /// shared table's hint) without re-checking the compact slot's pointer
    /// or the wide slot's sequence count, so a base published for a newer
    /// pagemap can be paired with an older one, or an old hint with a new
    /// table (`read_seqcount_retry()` left out).
    SpaceIndexNoRecheck,
    /// `free_zone_device_folio` under `ReinitPolicy::AtFree` resets the
    /// compound metadata with no `smp_wmb()` (Release) before `folio_free`
    /// hands the pages to the driver's allocator.
    FolioFreeNoBarrier,
    /// The section index rewrites a slot with `Relaxed` closing stores
    /// *and* without the seqlock write side's `fence(Release)` (the
    /// `smp_wmb()` in `write_seqcount_begin()`), so nothing orders the
    /// pagemap's construction, nor its memmap base, before the pointer or
    /// count a reader finds (`rcu_assign_pointer()` and `smp_wmb()` both
    /// gone).
    SpaceIndexPublishNoBarrier,
    /// `RangeTree::alloc_range` searches for the gap before taking the
    /// writer lock (under a read guard only), so two allocators can both
    /// pick the same gap: `mas_empty_area()` and the store outside one
    /// `mtree_lock()` section.
    RangeTreeAllocSearchUnlocked,
    /// `page_vma_mapped_walk()` reports a match on its lockless `map_pte()`
    /// read without re-reading the entry under the PTE lock (`check_pte()`
    /// after `spin_lock(pvmw->ptl)`), so it can return an entry that a
    /// `ptl` holder has already replaced.
    PvmwNoPtlRecheck,
    /// `free_zone_device_folio()` calls `ops->folio_free()` before it clears
    /// `folio->mapping`, so its late store lands on pages the driver has
    /// already handed out again.
    FolioFreeBeforeClear,
    /// `Srcu::get_state` ignores a flip that another thread has started
    /// but not finished (the state bit of `seq`), so its cookie counts a
    /// flip whose counter scan may predate the caller's unpublish: the
    /// pre-fix code, which read `seq` with no regard for a flip in flight
    /// (`rcu_seq_snap()` without its rounding up).
    SrcuStaleGpSnapshot,
    /// `Srcu::get_state` skips its `SeqCst` fence, so it can read `seq`
    /// before its own unpublish is visible to a flipper's scan
    /// (`get_state_synchronize_srcu()`'s `smp_mb()`).
    SrcuNoGetStateFence,
    /// `Srcu::try_flip` skips its `SeqCst` fence between setting the state
    /// bit and scanning the reader counters (`srcu_flip()`'s `smp_mb()`).
    SrcuNoFlipFence,
    /// `RangeTree` takes the grace-period cookie for the nodes a write
    /// replaced *before* it swaps in the new root, so a flip that completes
    /// between the two counts, although readers may still enter the old
    /// version after it (`call_rcu()` before `rcu_assign_pointer()`).
    RangeTreeCookieBeforePublish,
    /// `Srcu::try_flip` sets and clears its state bit with `Relaxed`
    /// stores, so a poller that reads one is not ordered after the flips
    /// before it, nor after the readers those flips waited for
    /// (`rcu_seq_start()`/`rcu_seq_end()` without their barriers).
    SrcuRelaxedFlipMarker,
    /// `zone_device_page_init` clears `_nr_pages` the way the first
    /// version of the reinit fix did, with `folio_reset_order()` on each page, which writes the
    /// *next* page's order byte and `_nr_pages` (hazard H3): the last
    /// page's write lands outside the allocation.
    FolioInitResetsNextPage,
    /// `free_zone_device_folio` drops the pagemap references
    /// (`percpu_ref_put_many()`) before calling `ops->folio_free()`, so
    /// teardown can finish while the driver callback runs.
    FolioPutBeforeFolioFree,
    /// `folio_put()` drops its reference with a `Relaxed` RMW instead of
    /// the fully ordered `atomic_sub_return()` (`AcqRel` here), so a
    /// non-last holder's writes to the folio are not ordered before the
    /// last holder's `free_zone_device_folio()` and the driver's
    /// `folio_free`, which may read them.
    FolioRefRelaxed,
    /// `percpu_ref_kill()` reads the shards with plain loads instead of
    /// sealing them, so a fast-path op that read `state` before `kill`
    /// lands in a shard that has already been summed and is lost (the
    /// kernel bug this rules out: summing the per-CPU counters without
    /// waiting for a grace period in `percpu_ref_switch_to_atomic_rcu()`).
    PercpuRefKillSkipsSeal,
    /// `PercpuRef`'s fast-path shard RMWs are `Relaxed`, so a put on a
    /// shard is not ordered before `release` (and a redirected op can miss
    /// `DEAD`): `this_cpu_sub()` without the release the kernel gets from
    /// its RCU-sched section.
    PercpuRefRelaxedShardOps,
    /// `percpu_ref_tryget_live()` on the atomic path ignores
    /// `__PERCPU_REF_DEAD`, so it succeeds after `kill` while references
    /// are outstanding.
    PercpuRefTrygetLiveIgnoresDead,
    /// `RangeTree`'s in-place write stores the new leaf into its parent's
    /// child slot with a `Relaxed` store instead of `Release`, so a reader
    /// can follow the slot before the leaf's contents are visible
    /// (`rcu_assign_pointer()` of the slot in `mas_replace_node()` as a
    /// plain store).
    RangeTreeRelaxedChildStore,
    /// The section index publishes a freshly allocated leaf in its root
    /// array with a `Relaxed` store, so a reader can reach the leaf before
    /// its initialisation (`SPARSEMEM_EXTREME`'s `mem_section[root]`
    /// published without `smp_wmb()`/`rcu_assign_pointer()`).
    SpaceIndexRelaxedLeafPublish,
    /// The section index publishes a shared section's sub-range table with
    /// a `Relaxed` store and no barrier before it, so a reader can search
    /// the table before it is built (`rcu_assign_pointer()` as a plain
    /// store).
    SpaceIndexSharedRelaxedPublish,
    /// The section index clears a slot it rewrites (a null store, then the
    /// new value) before it marks the rewrite (the wide slot's odd count,
    /// the compact slot's marker): a reader in the window reads "no pagemap
    /// here", and an offset of a pagemap that stays mapped misses while a
    /// neighbour in the same section is mapped or unmapped (the bug
    /// `devpriv stress` found, where the rewrite marker was null).
    SpaceIndexNullRewriteMarker,
    /// The section index frees a shared section's sub-range table as soon
    /// as it is replaced, without waiting for the tree's grace period, so
    /// a reader still searching it reads freed memory (`kfree()` where
    /// `kfree_rcu()` belongs).
    SpaceIndexSharedNoGracePeriod,
    /// `migrate_device_pfn_lock()` takes the page reference and goes on
    /// without `folio_trylock()`, so a driver eviction migrates a page that
    /// a CPU fault has locked and is migrating itself (hazard H23: the
    /// folio lock is what keeps the two migrations apart).
    EvictNoTrylock,
    /// `migrate_device_pfn_lock()` reads the refcount and increments it in
    /// two steps instead of `get_page_unless_zero()`, so a page that a CPU
    /// fault migrates and frees in between is resurrected and freed twice
    /// (hazard H23).
    EvictGetNotUnlessZero,
    /// A `PVMW_SYNC` walk that finds a THP-suitable PMD clear returns "not
    /// mapped" without taking and dropping the PMD lock, so it can return
    /// while `zap_huge_pmd()` has cleared the PMD but not yet dropped the
    /// folio's mapcount (`page_vma_mapped_walk()`'s `PVMW_SYNC` branch).
    PvmwSyncNoThpSerialise,
    /// `page_vma_mapped_walk()`'s `next_pte:` takes the ptl it saved in
    /// `map_pte()` without the `pmd_same()` re-check, so it can report a
    /// match in a PTE table that `pmdp_collapse_flush()` has taken out of
    /// the PMD after khugepaged copied it: the caller's write is lost.
    PvmwNoPmdSameRecheck,
    /// `memunmap` clears a pagemap's entries in the space's per-page
    /// pagemap array only after the grace period that lets the pagemap go,
    /// so a reader that starts after that period can still load one and
    /// reach the pagemap as it goes (`pgmap_array_delete()` after
    /// `synchronize_rcu()`).
    PgmapArrayClearedAfterGracePeriod,
    /// `memunmap` leaves a pagemap's entries in the per-page pagemap array,
    /// so lookups reach it after the grace period that let it go
    /// (`memunmap_pages()` without `pgmap_array_delete()`).
    PgmapArrayNotCleared,
    /// `memunmap` clears a pagemap's slot in the per-page pagemap array
    /// with its entries, before the grace period, so a reader that loaded
    /// an entry just before finds the slot empty (the model's slots are
    /// cleared with the id's release, after the period). Model only: 7.1's
    /// `pgmap_array` stores pointers, so it has no id slots to clear.
    PgmapArraySlotClearedEarly,
}

// One bit per variant in the loom build's set.
const _: () = assert!(Mutant::ALL.len() <= 64);

/// The bugs an object under test was built with: none, outside loom.
///
/// Kernel: none (model only). Zero-sized unless built with `--cfg loom`
/// (module docs).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Mutants(imp::Set);

impl Mutants {
    /// The correct protocol: no bug planted.
    pub const NONE: Mutants = Mutants(imp::Set::EMPTY);

    /// This set plus `m` (under loom; elsewhere the empty set).
    #[must_use]
    #[inline(always)]
    pub const fn with(self, m: Mutant) -> Mutants {
        Mutants(self.0.with(m))
    }

    /// Whether `m` is planted: always `false` outside loom, as a constant
    /// the optimiser folds away.
    #[inline(always)]
    pub const fn has(self, m: Mutant) -> bool {
        self.0.has(m)
    }
}

impl From<Mutant> for Mutants {
    fn from(m: Mutant) -> Self {
        Mutants::NONE.with(m)
    }
}

impl fmt::Debug for Mutants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(Mutant::ALL.iter().filter(|&&m| self.has(m)))
            .finish()
    }
}

/// The storage: the only cfg switch of the mechanism.
#[cfg(loom)]
mod imp {
    use super::Mutant;

    /// One bit per planted variant.
    #[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
    pub(super) struct Set(u64);

    impl Set {
        pub(super) const EMPTY: Set = Set(0);

        pub(super) const fn with(self, m: Mutant) -> Set {
            Set(self.0 | 1 << m as u8)
        }

        pub(super) const fn has(self, m: Mutant) -> bool {
            self.0 & 1 << m as u8 != 0
        }
    }
}

#[cfg(not(loom))]
mod imp {
    use super::Mutant;

    /// Nothing: no bug can be planted outside loom.
    #[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
    pub(super) struct Set;

    impl Set {
        pub(super) const EMPTY: Set = Set;

        #[inline(always)]
        pub(super) const fn with(self, _m: Mutant) -> Set {
            self
        }

        #[inline(always)]
        pub(super) const fn has(self, _m: Mutant) -> bool {
            false
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn outside_loom_nothing_is_planted_and_nothing_is_stored() {
        assert_eq!(size_of::<Mutants>(), 0);
        for &m in Mutant::ALL {
            assert!(!Mutants::from(m).has(m), "{m:?}");
        }
        assert_eq!(format!("{:?}", Mutants::NONE), "{}");
    }
}
