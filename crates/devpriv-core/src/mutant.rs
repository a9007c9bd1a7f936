//! Deliberately broken protocol variants, for loom mutant tests.
//!
//! Kernel: none (model only). Exists only under `--cfg loom`.
//!
//! Every loom model in `loom-tests/` has a twin that switches one of these
//! on and expects loom to fail, so that no model can pass vacuously. The
//! switch is a value carried by the object under test, not a cfg, so one
//! loom build runs both the model and its mutant.

/// Which bug to plant.
///
/// Kernel: none (model only); each variant names the kernel primitive it
/// breaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mutant {
    /// The correct protocol.
    #[default]
    None,
    /// `Srcu::read_lock` skips its `SeqCst` fence, so a flipper can miss a
    /// reader that is about to load an old pointer.
    SrcuNoReaderFence,
    /// `Srcu::poll` reports every grace period as already over, so
    /// unpublished objects are freed under live readers.
    SrcuNoGracePeriod,
    /// `RangeTree` publishes a new root with a `Relaxed` store instead of
    /// `Release`, so a reader can see the pointer before the node contents.
    RangeTreeRelaxedPublish,
    /// The pagemap section index publishes a pagemap with a `Relaxed`
    /// store (`rcu_assign_pointer()` as a plain store). The seqlock's
    /// earlier `fence(Release)` still orders the pagemap itself; the memmap
    /// base stored after that fence is what a reader can miss.
    SpaceIndexRelaxedPublish,
    /// `memunmap` erases the tree entry but leaves the section index
    /// pointing at the pagemap, so lookups reach it after reclamation.
    SpaceIndexNotUnpublished,
    /// The section index reader uses a section's memmap base without
    /// re-checking the slot's pagemap pointer, so a base published for a
    /// newer pagemap can be paired with an older one.
    SpaceIndexNoRecheck,
    /// `free_zone_device_folio` under `ReinitPolicy::AtFree` resets the
    /// compound metadata with no `smp_wmb()` (Release) before `folio_free`
    /// hands the pages to the driver's allocator.
    FolioFreeNoBarrier,
    /// The section index publishes a pagemap with a `Relaxed` pointer store
    /// *and* without the seqlock write side's `fence(Release)` (the
    /// `smp_wmb()` before the memmap base is stored), so nothing orders
    /// the pagemap's construction, nor its memmap base, before the pointer
    /// a reader finds (`rcu_assign_pointer()` and `smp_wmb()` both gone).
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
    /// before its own unpublish is visible to a flipper's scan.
    SrcuNoGetStateFence,
    /// `Srcu::try_flip` skips its `SeqCst` fence between setting the state
    /// bit and scanning the reader counters.
    SrcuNoFlipFence,
    /// `RangeTree` takes the grace-period cookie for the nodes a write
    /// replaced *before* it swaps in the new root, so a flip that completes
    /// between the two counts, although readers may still enter the old
    /// version after it.
    RangeTreeCookieBeforePublish,
    /// `Srcu::try_flip` sets and clears its state bit with `Relaxed`
    /// stores, so a poller that reads one is not ordered after the flips
    /// before it, nor after the readers those flips waited for.
    SrcuRelaxedFlipMarker,
}
