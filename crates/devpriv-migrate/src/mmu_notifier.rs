//! MMU notifiers: how a device mirroring an address space hears that CPU
//! page-table entries are about to change, so it can drop its own copies.
//!
//! Kernel: `include/linux/mmu_notifier.h` (`enum mmu_notifier_event`,
//! `struct mmu_notifier_range`, `mmu_interval_notifier_insert()`),
//! `mm/mmu_notifier.c` (`mmu_notifier_invalidate_range_start()`) (main).
//!
//! The model fires an invalidation where the kernel does for the changes a
//! mirror cannot detect later by looking at the CPU entry: unmapping and
//! zapping (`munmap`, `MADV_DONTNEED`, `mremap`'s old range, `exit_mmap`),
//! `mprotect`, fork's write-protection of private mappings, and
//! device-exclusive access being granted or revoked.
//!
//! # Differences from the kernel
//!
//! - One callback per change, before it (`invalidate_range_start()`); no
//!   `_end`, no sequence count (`mmu_interval_read_begin()` /
//!   `_retry()`): the model's users run the range checks they need
//!   themselves.
//! - Migration, COW and PMD splits do not fire: a mirror sees those
//!   because the CPU entry no longer names what it mapped (the dmirror
//!   model checks every entry it uses).
//! - A notifier covers the whole address space (the dmirror's interval is
//!   `[0, ULONG_MAX)` too).

use core::fmt;
use devpriv_pagemap::Owner;

/// Why entries are being invalidated.
///
/// Kernel: `enum mmu_notifier_event` (main).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MmuNotifyEvent {
    /// Kernel: `MMU_NOTIFY_UNMAP` (the range is going away) (main).
    Unmap,
    /// Kernel: `MMU_NOTIFY_CLEAR` (entries cleared, e.g. `MADV_DONTNEED`) (main).
    Clear,
    /// Kernel: `MMU_NOTIFY_PROTECTION_VMA` (`mprotect`) (main).
    ProtectionVma,
    /// Kernel: `MMU_NOTIFY_PROTECTION_PAGE` (fork's write-protection) (main).
    ProtectionPage,
    /// Kernel: `MMU_NOTIFY_EXCLUSIVE` (device-exclusive access granted or
    /// revoked) (7.0).
    Exclusive,
    /// Kernel: `MMU_NOTIFY_MIGRATE` (`migrate_vma_collect()`) (main).
    Migrate,
}

/// One invalidation: `[start, end)` of an address space, why, and for
/// migrations and exclusive access the pagemap owner doing it.
///
/// Kernel: `struct mmu_notifier_range` (main).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmuNotifierRange {
    /// Kernel: `range->start` (main).
    pub start: u64,
    /// Kernel: `range->end` (main).
    pub end: u64,
    /// Kernel: `range->event` (main).
    pub event: MmuNotifyEvent,
    /// Kernel: `range->owner` (main).
    pub owner: Option<Owner>,
}

/// A mirror of an address space that must drop its copies of entries
/// about to change.
///
/// Kernel: `struct mmu_interval_notifier_ops` (`invalidate`) (main).
pub trait MmuNotifier: Send + Sync + fmt::Debug {
    /// The entries of `range` are about to change.
    ///
    /// Kernel: `ops->invalidate(mni, range, cur_seq)` (main).
    fn invalidate(&self, range: &MmuNotifierRange);
}
