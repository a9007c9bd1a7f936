//! devpriv-core: the vocabulary of the devpriv model.
//!
//! Kernel: `include/linux/mm_types.h` (pfn vs. device-private offset),
//! `include/uapi/asm-generic/errno-base.h`, `arch/x86/include/asm/page_types.h`,
//! `include/linux/srcu.h`, `include/asm-generic/bug.h` (main; the
//! device-private offset and address types model the unmerged v6 proposal).
//!
//! devpriv is a userspace model of Linux device-private memory management,
//! not kernel code. This crate holds what every other crate needs:
//!
//! - page indices and byte addresses as distinct types ([`Pfn`],
//!   [`DevicePrivateOffset`], [`PhysAddr`], [`DevicePrivateAddr`],
//!   [`PageCount`], [`Order`], [`PageFrame`]), so a pfn and a device-private
//!   offset can never be confused;
//! - the kernel constants ([`consts`]), with `MAX_PHYSMEM_BITS` chosen at run
//!   time through [`PagingMode`];
//! - [`Errno`], spelled as the kernel spells it;
//! - [`flags!`], the one macro behind every flag set (`VM_*`, `PVMW_*`, ...);
//! - the [`sync`] shim that switches to loom under `--cfg loom`;
//! - [`srcu`], read-side sections and grace periods (the `rcu_read_lock()`
//!   analogue every lock-free reader in the workspace uses);
//! - [`warn_on!`] / [`warn_on_once!`], `WARN_ON` paths that tests can count;
//! - [`mutant`], the bugs loom models plant (a zero-sized no-op outside
//!   loom).
//!
//! No `unsafe` outside loom builds: the only block is loom's checked cell
//! behind [`sync::TrackedCell`].

#![deny(unsafe_code)]

pub mod consts;
pub mod errno;
pub mod flags;
pub mod mutant;
pub mod random;
pub mod srcu;
pub mod sync;
pub mod units;
pub mod warn;

pub use consts::{
    HPAGE_PMD_NR, HPAGE_PMD_ORDER, HPAGE_PMD_SIZE, MAX_FOLIO_ORDER, MAX_ORDER_NR_PAGES,
    MAX_PAGE_ORDER, PAGE_SHIFT, PAGE_SIZE, PMD_SHIFT, PMD_SIZE, PUD_SHIFT, PUD_SIZE, PagingMode,
};
pub use errno::{Errno, Result};
pub use units::{
    DevicePrivateAddr, DevicePrivateOffset, Order, PageCount, PageFrame, PageIndex, Pfn, PhysAddr,
    ranges_overlap,
};
