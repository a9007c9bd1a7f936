//! devpriv-pagemap: the device-private address space and its pages.
//!
//! Kernel: `mm/memremap.c`, `include/linux/memremap.h`, `mm/mm_init.c`,
//! `mm/huge_memory.c`, `lib/percpu-refcount.c`, `kernel/resource.c`,
//! `include/linux/page-flags.h`, `include/linux/mm_types.h` (main, 7.0 and v6: see the table below).
//!
//! Which kernel each part models:
//!
//! | part | kernel version |
//! |---|---|
//! | [`DevicePrivateSpace`], `memremap`/`memunmap_device_private_pagemap`, offset ↔ page lookups, `DevPagemap::{nr_pages, pages}`, [`PagemapParams`] | **v6 proposal** ("Remove device private pages from physical address space", Jordan Niethe, 2026-02-02; not merged in 7.0, 7.1 or the mm tree through 7.3-rc) |
//! | [`zone_device_page_init`], [`zone_device_folio_init`], [`DevPagemapOps`] (`folio_free`, `folio_split`, `migrate_to_ram`), [`zone_device_private_split_cb`], [`folio_split_unmapped`] | **7.0** (merged) |
//! | [`free_zone_device_folio`] | **7.0 with fix 399289849560** (7.0.y, 7.1); 7.0-rc6's variant is [`FreePath::V7_0`] |
//! | [`Page`], [`Folio`], `page_flags`, [`PercpuRef`], [`prep_compound_page`], `resource` (`request_free_mem_region()` + `memremap_pages()`, how 7.0/7.1 drivers still register device-private memory) | **main** (mainline since before 7.0) |
//! | [`migrate_device_split_page`], [`ReinitPolicy::AtFree`] | **never merged** (kept to show why) |
//! | [`ReinitPolicy`], [`FreePath`], [`Packing`], [`SpaceConfig`], the section index | **model** (choices the kernel makes once) |
//!
//! Under the v6 proposal device-private pages no longer have pfns. A
//! driver asks a [`DevicePrivateSpace`] for `nr_pages` pages; the space
//! reserves a range of its own address space (a range tree keyed by bytes,
//! standing in for `device_private_pgmap_tree`), builds a pages array and
//! hands back a [`DevPagemap`]. Offsets are `address >> PAGE_SHIFT`.
//!
//! ```
//! use devpriv_core::{DevicePrivateOffset, Errno, PageCount};
//! use devpriv_pagemap::{DevicePrivateSpace, NoopOps, Owner, PagemapParams};
//! use std::sync::Arc;
//!
//! let space = DevicePrivateSpace::new();
//! // A real driver passes its own `DevPagemapOps` (see `NoopOps`' docs).
//! let params = PagemapParams::private(PageCount::new(512), Owner(1), Arc::new(NoopOps));
//! let pgmap = space.memremap_device_private_pagemap(params, -1)?;
//! let guard = space.read(); // rcu_read_lock()
//! let page = guard.device_private_offset_to_page(DevicePrivateOffset::new(7)).unwrap();
//! assert_eq!(page.refcount(), 0);
//! assert_eq!(guard.device_private_page_to_offset(page), Some(DevicePrivateOffset::new(7)));
//! assert_eq!(page.offset(), DevicePrivateOffset::new(7));
//! drop(guard);
//! space.memunmap_device_private_pagemap(&pgmap)?;
//! # Ok::<(), Errno>(())
//! ```
//!
//! `unsafe` is denied except in the section index (`sparse.rs`, raw slot
//! pointers), the space's memmap reservation (`sparse_vmemmap.rs`: `mmap`,
//! `madvise` and the slices of it that pagemaps own), the per-page pagemap
//! array (`memremap/pgmap_array.rs`: its entries and slots in three such
//! reservations) and the two `memremap` functions that read the index
//! under a tree read guard.

#![deny(unsafe_code)]

pub mod huge_memory;
pub mod memremap;
pub mod mm_types;
pub mod page_alloc;
pub mod page_flags;
pub mod percpu_refcount;
pub mod resource;
#[allow(unsafe_code, reason = "raw pointers in the section index's slots")]
mod sparse;
#[allow(
    unsafe_code,
    reason = "the memmap reservation: mmap, madvise and its slices"
)]
mod sparse_vmemmap;

pub use huge_memory::{folio_split_unmapped, migrate_device_split_page, split_unmapped_folio};
pub use memremap::{
    DevPagemap, DevPagemapOps, DevicePrivateSpace, DevmPagemap, FreePath, InitError,
    MAX_PAGEMAP_PAGES, MemoryType, NoopOps, Owner, Packing, PagemapParams, ReinitPolicy,
    SectionSlot, SpaceConfig, SpaceReadGuard, ValidateError, VmFault, folio_get, folio_put,
    free_zone_device_folio, zone_device_folio_init, zone_device_page_init,
    zone_device_private_split_cb,
};
pub use mm_types::{Folio, Page, PageRef, PgmapCookie, WouldBlock};
pub use page_alloc::prep_compound_page;
pub use percpu_refcount::{Completion, PercpuRef};
