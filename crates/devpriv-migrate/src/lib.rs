//! devpriv-migrate: how the rest of mm sees device-private memory.
//!
//! Kernel: `include/linux/leafops.h`, `include/linux/swapops.h`,
//! `arch/x86/include/asm/pgtable*.h`, `mm/page_vma_mapped.c`,
//! `mm/migrate_device.c`, `mm/memory.c`, `mm/hmm.c` (series v6).
//!
//! Jordan Niethe's series takes device-private pages out of the physical
//! address space, so a number in a page-table entry, a migration array or an
//! HMM snapshot can now be a pfn *or* a device-private offset, told apart by
//! a flag. This crate models every place that flag lives, bit-exact, behind
//! encoders that refuse values that do not fit, and decodes each of them to
//! a typed [`PageFrame`](devpriv_core::PageFrame):
//!
//! - [`swapops`] / [`leafops`]: swap ("softleaf") entries with the series'
//!   type numbers (`MAX_SWAPFILES` 24 → 21), the "is-a" predicates,
//!   `softleaf_to_pfn()` / `softleaf_to_flags()`;
//! - [`pgtable`]: x86-64 PTE and PMD values, present and swap;
//! - [`migrate_device`]: `MIGRATE_PFN_*` with `MIGRATE_PFN_DEVICE_PRIVATE`;
//! - [`hmm`]: `HMM_PFN_*` with `HMM_PFN_DEVICE_PRIVATE` and the moved order
//!   field;
//! - [`memory`] / [`page_alloc`]: an address space with VMAs, page tables
//!   with a lock per table, and system memory with folios and data;
//! - [`page_vma_mapped`]: `page_vma_mapped_walk()` with v6 semantics, its
//!   target typed so that a pfn walk can never match a device-private entry;
//! - [`rmap`] / [`huge_memory`]: `try_to_migrate()`,
//!   `remove_migration_ptes()`, PMD and folio splits, for system and
//!   device-private folios alike ([`AnyFolio`]);
//! - [`migrate_device`]: `migrate_vma_setup/pages/finalize()` and
//!   `migrate_device_range/pfns/pages/finalize()`, compound (order-9)
//!   migration and its split fallback;
//! - [`memory`]'s fault path ([`handle_mm_fault`]): a device-private PTE or
//!   PMD goes to the pagemap's `migrate_to_ram`, a migration entry retries;
//!   [`hmm::hmm_range_fault`] reports the caller's own device-private pages
//!   and faults foreign ones back;
//! - [`test_hmm`]: the `lib/test_hmm.c` (dmirror) driver — devices with
//!   device-private memory in chunks and mirrors with the HMM test ioctls —
//!   for end-to-end tests, benchmarks and examples.
//!
//! ```
//! use devpriv_core::{DevicePrivateOffset, Errno, PageCount, Pfn};
//! use devpriv_migrate::memory::{Mm, VmFlags};
//! use devpriv_migrate::page_vma_mapped::{PageVmaMappedWalk, PvmwFlags};
//! use devpriv_migrate::pgtable::Pte;
//! use devpriv_migrate::swapops::make_device_private_entry;
//!
//! let mut mm = Mm::default();
//! let base = 0x7f00_0000_0000;
//! mm.mmap_anon(base, 1 << 21, VmFlags::RW)?;
//! // Offset 42 is on the device: the CPU PTE holds a device-private entry.
//! let entry = make_device_private_entry(true, DevicePrivateOffset::new(42), mm.paging())?;
//! mm.set_pte(base, Pte::from_swp_entry(entry)?)?;
//! let vma = &mm.vmas()[0];
//! let pgoff = vma.pgoff();
//!
//! // The device-private walk finds it ...
//! let mut w = PageVmaMappedWalk::new(&mm, vma, DevicePrivateOffset::new(42).into(),
//!     PageCount::ONE, pgoff, base, PvmwFlags::NONE)?;
//! assert!(w.walk());
//! assert!(w.flags().contains(PvmwFlags::DEVICE_PRIVATE));
//! w.done();
//! // ... a walk for pfn 42 does not.
//! let mut w = PageVmaMappedWalk::new(&mm, vma, Pfn::new(42).into(),
//!     PageCount::ONE, pgoff, base, PvmwFlags::NONE)?;
//! assert!(!w.walk());
//! # Ok::<(), Errno>(())
//! ```

#![forbid(unsafe_code)]

pub mod hmm;
pub mod huge_memory;
pub mod leafops;
pub mod memory;
pub mod migrate_device;
pub mod page_alloc;
pub mod page_vma_mapped;
pub mod pgtable;
pub mod rmap;
pub mod swapops;
pub mod test_hmm;

pub use hmm::{HmmPfn, HmmPfnLayout};
pub use leafops::{Softleaf, SoftleafFlags, SoftleafType};
pub use memory::{FaultContext, FaultFlags, VmFaultResult, handle_mm_fault};
pub use memory::{Mm, MmConfig, PmdGuard, PteGuard, VmFlags, Vma};
pub use migrate_device::{
    MigratePfn, MigrateVma, MigrateVmaFlags, migrate_device_finalize, migrate_device_pages,
    migrate_device_pfns, migrate_device_range, migrate_vma_finalize, migrate_vma_pages,
    migrate_vma_setup,
};
pub use page_alloc::{SysFolio, SystemMemory};
pub use page_vma_mapped::{PageVmaMappedWalk, PvmwFlags, PvmwPfnV2, PvmwTarget};
pub use pgtable::{Pmd, Pte};
pub use rmap::{AnyFolio, Memory, remove_migration_ptes, try_to_migrate};
pub use swapops::MigrationKind;
