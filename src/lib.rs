//! devpriv: a userspace model of Linux device-private memory management.
//!
//! Kernel: Jordan Niethe's unmerged v6 proposal and
//! the large zone-device folio work around it; see `docs/kernel-map.md`.
//!
//! This crate is the front door: it re-exports the workspace's library
//! crates under short names, with a [`prelude`] for driver authors. The
//! `devpriv` command line is the `devpriv-cli` crate (`cargo run --release`
//! in the repository root).
//!
//! | module | crate | kernel counterpart |
//! |---|---|---|
//! | [`core`] | `devpriv-core` | pfn/offset types, errno, RCU, `WARN_ON` |
//! | [`rangetree`] | `devpriv-rangetree` | `lib/maple_tree.c` (`MT_FLAGS_ALLOC_RANGE`) |
//! | [`pagemap`] | `devpriv-pagemap` | `mm/memremap.c`, `struct page`, `percpu_ref` |
//! | [`migrate`] | `devpriv-migrate` | softleaf/PTE encodings, `mm_struct`, `page_vma_mapped_walk`, `migrate_vma_*`, `hmm_range_fault` |
//! | [`drivers`] | `devpriv-drivers` | `lib/test_hmm.c` (dmirror), an Xe-style shared VRAM pool (`drm_buddy`, `xe_svm.c`) |

#![forbid(unsafe_code)]

pub use devpriv_core as core;
pub use devpriv_drivers as drivers;
pub use devpriv_migrate as migrate;
pub use devpriv_pagemap as pagemap;
pub use devpriv_rangetree as rangetree;

/// The names a driver author needs, in one import: `use devpriv::prelude::*;`.
///
/// Kernel: none (model only). What they model: a pagemap and its ops
/// (`include/linux/memremap.h`), folios and pages (`mm_types.h`), an
/// address space and its fault path (`mm/memory.c`), and device migration
/// (`include/linux/migrate.h`, `mm/migrate_device.c`). See
/// `examples/minimal_driver.rs` for all of them at work.
pub mod prelude {
    pub use devpriv_core::{
        DevicePrivateOffset, Errno, Order, PAGE_SIZE, PMD_SIZE, PageCount, PageFrame, Pfn,
    };
    pub use devpriv_migrate::{
        FaultContext, FaultFlags, Memory, MigratePfn, MigrateVma, MigrateVmaFlags, Mm, MmConfig,
        SystemMemory, VmFlags, handle_mm_fault, migrate_vma_finalize, migrate_vma_pages,
        migrate_vma_setup,
    };
    pub use devpriv_pagemap::{
        DevPagemap, DevPagemapOps, DevicePrivateSpace, Folio, NoopOps, Owner, PageRef,
        PagemapParams, SpaceConfig, VmFault, folio_put, zone_device_page_init,
    };
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
