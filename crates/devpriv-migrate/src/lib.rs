//! devpriv-migrate: how the rest of mm sees device-private memory.
//!
//! Kernel: `include/linux/leafops.h`, `include/linux/swapops.h`,
//! `arch/x86/include/asm/pgtable*.h`, `mm/page_vma_mapped.c`,
//! `include/linux/mm_types.h`, `include/linux/migrate.h`,
//! `mm/migrate_device.c`, `mm/memory.c`, `mm/hmm.c`: the 7.0 code, plus
//! the v6 proposal's changes to it.
//!
//! The code paths (page tables, the walker, rmap, `migrate_vma_*`, the fault
//! path, `hmm_range_fault()`, large device-private folios and PMDs) model
//! **merged 7.0** code. Where Jordan Niethe's **unmerged v6 proposal**
//! ("Remove device private pages from physical address space", 2026-02-02)
//! takes device-private pages out of the physical address space, a number
//! in a page-table entry, a migration array or an HMM snapshot can be a pfn
//! *or* a device-private offset, told apart by a flag; those flags
//! (`SWP_MIGRATION_DEVICE_*`, `PVMW_DEVICE_PRIVATE`,
//! `MIGRATE_PFN_DEVICE_PRIVATE`, `HMM_PFN_DEVICE_PRIVATE` and its order
//! shift of 52) are **v6**, and each module keeps the mainline layout next
//! to it (`SwpTypes::MAINLINE`, `HmmPfnLayout::MAINLINE`).
//! `docs/kernel-map.md` gives each item's version. This crate models every
//! place that flag lives, bit-exact, behind encoders that refuse values
//! that do not fit, and decodes each of them to a typed
//! [`PageFrame`](devpriv_core::PageFrame):
//!
//! - [`swapops`] / [`leafops`]: swap ("softleaf") entries with mainline
//!   (7.0) and v6 type numbers (`MAX_SWAPFILES` 24, or 21 under v6), the
//!   "is-a" predicates, `softleaf_to_pfn()` / `softleaf_to_flags()`;
//! - [`pgtable`]: x86-64 PTE and PMD values, present and swap;
//! - [`hmm`]: `HMM_PFN_*` with `HMM_PFN_DEVICE_PRIVATE` and the moved order
//!   field;
//! - [`page_alloc`] / [`memory_model`] / [`mm`]: system memory with folios
//!   and data, the machine's memory ([`Memory`]: system RAM plus the
//!   device-private space), and folios of either kind behind one trait
//!   ([`AnyFolio`], [`FolioOps`]);
//! - [`mm_types`] / [`mmap`] / [`pgtable_generic`]: an address space
//!   ([`Mm`]) holding the machine's memory, with VMAs changed under
//!   [`Mm::mmap_write_lock`] and page tables with a lock per table;
//! - [`page_vma_mapped`]: `page_vma_mapped_walk()` (7.0 control flow, v6's
//!   `PVMW_DEVICE_PRIVATE` kind check), its target typed so that a pfn walk
//!   can never match a device-private entry, and its device-private PMD
//!   branch as fixed for CVE-2026-68163 (the 7.0 branch kept as a variant);
//! - [`rmap`] / [`huge_memory`]: `try_to_migrate()`,
//!   `remove_migration_ptes()`, PMD and folio splits, for system and
//!   device-private folios alike;
//! - [`migrate`] / [`migrate_device`]: `MIGRATE_PFN_*` with
//!   `MIGRATE_PFN_DEVICE_PRIVATE` and `struct migrate_vma`, then
//!   `migrate_vma_setup/pages/finalize()` and
//!   `migrate_device_range/pfns/pages/finalize()`, compound (order-9)
//!   migration and its split fallback;
//! - [`memory`]: mapping, zapping and the fault path ([`handle_mm_fault`]):
//!   a device-private PTE or PMD goes to the pagemap's `migrate_to_ram`, a
//!   migration entry retries; [`hmm::hmm_range_fault`] reports the caller's
//!   own device-private pages and faults foreign ones back.
//!
//! Where upstream fixed a path in 2026, the fixed code runs by default and
//! the old one stays selectable per address space ([`MmConfig`]:
//! [`PvmwPmdPolicy`], [`CollectPteGuard`], [`HugeInsertErrors`],
//! [`ZapDevicePmd`]), each the subject of a hazard test; so does the
//! machine's L1TF state ([`L1tf`]), which decides whether migration
//! entries keep young/dirty bits.
//!
//! Modules depend on each other one way only (apart from `pgtable`,
//! `swapops` and `leafops`, which use each other as the C headers do);
//! each uses only modules listed before it: `pgtable`, `page_alloc`,
//! `memory_model`, `mm`, `mm_types`, `pgtable_generic`, `page_vma_mapped`,
//! `rmap`, `huge_memory`, `memory`, `mmap`, `migrate`, `migrate_device`,
//! `hmm`.
//!
//! ```
//! use devpriv_core::{DevicePrivateOffset, Errno, PageCount, Pfn};
//! use devpriv_migrate::page_vma_mapped::{PageVmaMappedWalk, PvmwFlags};
//! use devpriv_migrate::swapops::make_device_private_entry;
//! use devpriv_migrate::{Memory, Mm, MmConfig, Pte, SystemMemory, VmFlags};
//! use devpriv_pagemap::DevicePrivateSpace;
//! use std::sync::Arc;
//!
//! let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(512))?;
//! let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
//! let mm = Mm::new(&mem, MmConfig::default());
//! let base = 0x7f00_0000_0000;
//! let vma = mm.mmap_write_lock().mmap_anon(base, 1 << 21, VmFlags::RW)?;
//! // Offset 42 is on the device: the CPU PTE holds a device-private entry.
//! let entry = make_device_private_entry(true, DevicePrivateOffset::new(42), mm.paging())?;
//! mm.set_pte(base, Pte::from_swp_entry(entry)?)?;
//! let pgoff = vma.pgoff();
//!
//! // The device-private walk finds it ...
//! let mut w = PageVmaMappedWalk::new(&mm, &vma, DevicePrivateOffset::new(42).into(),
//!     PageCount::ONE, pgoff, base, PvmwFlags::NONE)?;
//! assert!(w.walk());
//! assert!(w.flags().contains(PvmwFlags::DEVICE_PRIVATE));
//! w.done();
//! // ... a walk for pfn 42 does not.
//! let mut w = PageVmaMappedWalk::new(&mm, &vma, Pfn::new(42).into(),
//!     PageCount::ONE, pgoff, base, PvmwFlags::NONE)?;
//! assert!(!w.walk());
//! # Ok::<(), Errno>(())
//! ```

#![forbid(unsafe_code)]

pub mod hmm;
pub mod huge_memory;
pub mod leafops;
pub mod memory;
pub mod memory_model;
pub mod migrate;
pub mod migrate_device;
pub mod mm;
pub mod mm_types;
pub mod mmap;
pub mod page_alloc;
pub mod page_vma_mapped;
pub mod pgtable;
pub mod pgtable_generic;
pub mod rmap;
pub mod swapops;

pub use hmm::{HmmPfn, HmmPfnLayout, HmmRange, hmm_range_fault};
pub use leafops::{Softleaf, SoftleafFlags, SoftleafType};
pub use memory::{FaultContext, FaultFlags, VmFaultResult, handle_mm_fault};
pub use memory_model::Memory;
pub use migrate::{MigratePfn, MigrateVma, MigrateVmaFlags};
pub use migrate_device::{
    migrate_device_finalize, migrate_device_pages, migrate_device_pfns, migrate_device_range,
    migrate_vma_finalize, migrate_vma_pages, migrate_vma_setup,
};
pub use mm::{AnyFolio, FolioOps, frame_to_folio};
pub use mm_types::{
    CollectPteGuard, HugeInsertErrors, Mm, MmConfig, MmapWriteGuard, PvmwPmdPolicy, VmFlags, Vma,
    ZapDevicePmd,
};
pub use page_alloc::{SysFolio, SystemMemory};
pub use page_vma_mapped::{PageVmaMappedWalk, PvmwFlags, PvmwPfnV2, PvmwTarget};
pub use pgtable::{PMD_SIZE, Pmd, Pte};
pub use pgtable_generic::{PgtablePage, PmdGuard, PteGuard};
pub use rmap::{remove_migration_ptes, try_to_migrate};
pub use swapops::{L1tf, MigrationKind};
