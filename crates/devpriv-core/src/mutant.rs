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
    /// store, so a reader can reach a pagemap before it is fully built.
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
}
