//! A process address space: its VMAs, its page-table pages (each with its
//! lock), and the `mmap_lock` that serialises changes to them.
//!
//! Kernel: `include/linux/mm_types.h` (`struct mm_struct`,
//! `struct vm_area_struct`, `struct ptdesc`), `include/linux/mmap_lock.h`
//! (`mmap_write_lock()`), `kernel/fork.c` (`mm_alloc()`), `mm/internal.h`
//! (`vma_address()`, main).
//!
//! # Shape
//!
//! - An [`Mm`] holds a clone of the machine's [`Memory`]: every page it
//!   maps comes from there, as every `mm_struct`'s pages come from the one
//!   page allocator, and several address spaces share it.
//! - Four levels of tables: a PGD of 256 user entries (4-level paging),
//!   PUD tables, PMD tables of 512 PMD values (atomics, read locklessly as
//!   `pmdp_get_lockless()` does) with **one lock for the whole table** (the
//!   split PMD ptlock, `pmd_lock()`), and for each PMD slot inside a VMA a
//!   [`PteTable`]: 512 PTE values (atomics) and **one lock per table** (the
//!   split PTE ptlock). The PMD value says whether the table is in use
//!   ([`Pmd::table`]); while the PMD is none or a leaf (huge, migration,
//!   device-private) the table is idle and empty.
//! - Changes to the VMAs go through [`Mm::mmap_write_lock`], whose guard
//!   has `mmap`, `munmap` (module [`mmap`](crate::mmap)), `mprotect`
//!   ([`mprotect`](crate::mprotect)), `mremap` ([`mremap`](crate::mremap))
//!   and `madvise` ([`madvise`](crate::madvise)); [`Mm::fork`]
//!   ([`fork`](crate::fork)) copies an address space. Readers take a snapshot of the VMA
//!   list ([`Mm::vmas`], [`Mm::vma_lookup`]); page-table entries are read
//!   and written through [`pgtable_generic`](crate::pgtable_generic).
//!
//! # Differences from the kernel
//!
//! - Page tables are allocated when a VMA is mapped, never freed while the
//!   `Mm` lives, and a PMD slot always uses the same PTE table. So a PMD
//!   that goes table → huge → table points at the same table again;
//!   `pmd_same()` cannot tell those apart, where in the kernel a fresh table
//!   would usually have a fresh address. Nothing here relies on it. When
//!   `munmap` leaves a 2 MiB block without a VMA, its PMD goes back to none
//!   (as `free_pgtables()` leaves it) while the slot keeps its table. The
//!   page-table page a huge PMD deposits for its split
//!   (`pgtable_trans_huge_deposit()`) is therefore only counted
//!   ([`Mm::nr_pgtables`], [`PgtablePage`](crate::PgtablePage)), so that a
//!   leak shows.
//! - Readers do not take `mmap_lock` for read: they read a snapshot of the
//!   VMA list, as `lock_vma_under_rcu()` readers of the maple tree do, and
//!   a VMA from a snapshot is checked against the current list where it
//!   matters ([`migrate_vma_setup`](crate::migrate_vma_setup), the walk).
//!   Nothing excludes an `munmap` racing a migration of the same range;
//!   the workloads keep those apart.
//! - User addresses are limited to 4-level paging (below 2^47) whatever the
//!   [`PagingMode`]; the mode still decides `SWP_PFN_BITS`.
//! - VMAs are private anonymous memory, private or shared mappings of a
//!   page cache ([`AddressSpace`]: a file or a shmem object), or a
//!   driver's `VM_MIXEDMAP` mapping; there is no hugetlb. The 4 KiB and
//!   the huge zero page are modelled (see [`MmConfig::zero_page`]).
//! - Dropping the last handle to an `Mm` unmaps everything
//!   ([`Mm::exit_mmap`]), as `mmput()` does.

use crate::filemap::AddressSpace;
use crate::memory_model::Memory;
use crate::mmu_notifier::{MmuNotifier, MmuNotifierRange, MmuNotifyEvent};
use crate::pgtable::{PMD_SIZE, PUD_SIZE, Pmd, Pte, pgd_index, pmd_index, pud_index};
use crate::swapops::L1tf;
use core::fmt;
use core::ops::Deref;
use devpriv_core::consts::PTRS_PER_PTE;
use devpriv_core::mutant::Mutants;
use devpriv_core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use devpriv_core::sync::{Mutex, MutexGuard, RwLock};
use devpriv_core::{Errno, PAGE_SHIFT, PagingMode, Pfn};
use devpriv_pagemap::Owner;
use std::sync::{Arc, OnceLock, Weak};

/// Number of entries in a table, as `usize`.
pub(crate) const ENTRIES: usize = 512;
const _: () = assert!(ENTRIES as u64 == PTRS_PER_PTE);

/// User entries in the PGD with 4-level paging (`TASK_SIZE` is below
/// 2^47).
const USER_PGD_ENTRIES: usize = 256;

/// A PTE table: 512 entries and the lock that serialises writers.
///
/// Kernel: a page-table page with its split ptlock (`ptdesc->ptl`, main).
pub struct PteTable {
    entries: Box<[AtomicU64; ENTRIES]>,
    ptl: Mutex<()>,
    frame: Pfn,
}

impl fmt::Debug for PteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let used = self
            .entries
            .iter()
            .filter(|e| !Pte::from_raw(e.load(Ordering::Relaxed)).is_none())
            .count();
        f.debug_struct("PteTable")
            .field("frame", &self.frame)
            .field("used", &used)
            .finish()
    }
}

impl PteTable {
    fn new(frame: Pfn) -> PteTable {
        PteTable {
            entries: Box::new(core::array::from_fn(|_| AtomicU64::new(0))),
            ptl: Mutex::new(()),
            frame,
        }
    }

    /// Reads entry `i` without the lock.
    ///
    /// Kernel: `ptep_get()` (`READ_ONCE`, main).
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Pte {
        debug_assert!(i < ENTRIES);
        Pte::from_raw(self.entries[i % ENTRIES].load(Ordering::Acquire))
    }

    /// Writes entry `i`. The caller holds `ptl`.
    #[inline]
    pub(crate) fn set(&self, i: usize, pte: Pte) {
        debug_assert!(i < ENTRIES);
        self.entries[i % ENTRIES].store(pte.raw(), Ordering::Release);
    }

    /// The table's lock.
    ///
    /// Kernel: `pte_lockptr()` (main).
    pub(crate) fn ptl(&self) -> &Mutex<()> {
        &self.ptl
    }

    /// The frame standing in for the table page.
    ///
    /// Kernel: none (model only).
    pub fn frame(&self) -> Pfn {
        self.frame
    }

    pub(crate) fn is_empty(&self) -> bool {
        (0..ENTRIES).all(|i| self.get(i).is_none())
    }
}

/// One PMD entry and the PTE table reserved for it.
#[derive(Debug)]
pub(crate) struct PmdSlot {
    val: AtomicU64,
    /// Set once, when a VMA first covers the slot.
    table: OnceLock<Box<PteTable>>,
    /// Page-table pages deposited for a leaf PMD here, changed under the
    /// PMD lock.
    ///
    /// Kernel: the `pmd_huge_pte` list of `pgtable_trans_huge_deposit()` (main).
    pub(crate) deposited: AtomicU32,
    /// The table was taken out of the PMD with its entries still in it
    /// (`PmdGuard::collapse_flush`), and may not be installed again until
    /// they are cleared. Changed under the PMD lock.
    pub(crate) detached: AtomicBool,
}

impl PmdSlot {
    /// Reads the PMD without the lock.
    ///
    /// Kernel: `pmdp_get_lockless()` (main).
    #[inline]
    pub(crate) fn get(&self) -> Pmd {
        Pmd::from_raw(self.val.load(Ordering::Acquire))
    }

    /// Writes the PMD. The caller holds the PMD table's lock (and, when
    /// it retires a table pointer, that table's lock too).
    #[inline]
    pub(crate) fn set_locked(&self, pmd: Pmd) {
        self.val.store(pmd.raw(), Ordering::Release);
    }

    /// The PTE table reserved for this slot, in use or not.
    #[inline]
    pub(crate) fn table(&self) -> Option<&PteTable> {
        self.table.get().map(|t| &**t)
    }

    /// The PTE table this PMD points to, if its value is a table pointer.
    ///
    /// Kernel: `__pte_offset_map()` — `NULL` for a none, non-present or
    /// huge PMD (main).
    #[inline]
    pub(crate) fn table_if(&self, pmd: Pmd) -> Option<&PteTable> {
        if pmd.is_table() { self.table() } else { None }
    }
}

/// A PMD table: 512 PMD entries and one lock for all of them.
///
/// Kernel: a PMD page-table page with its split PMD ptlock (main).
#[derive(Debug)]
pub(crate) struct PmdTable {
    slots: Box<[PmdSlot]>,
    ptl: Mutex<()>,
}

impl PmdTable {
    fn new() -> PmdTable {
        PmdTable {
            slots: (0..ENTRIES)
                .map(|_| PmdSlot {
                    val: AtomicU64::new(0),
                    table: OnceLock::new(),
                    deposited: AtomicU32::new(0),
                    detached: AtomicBool::new(false),
                })
                .collect(),
            ptl: Mutex::new(()),
        }
    }

    pub(crate) fn slot(&self, addr: u64) -> &PmdSlot {
        &self.slots[pmd_index(addr)]
    }

    /// Kernel: `pmd_lockptr()` (main).
    pub(crate) fn ptl(&self) -> &Mutex<()> {
        &self.ptl
    }
}

/// A PUD table: 512 entries, each a PMD table once something is mapped
/// below it.
#[derive(Debug)]
struct PudTable {
    pmds: Box<[OnceLock<Box<PmdTable>>]>,
}

devpriv_core::flags! {
    /// VMA flags: protection, sharing, and the hints the model acts on.
    ///
    /// Kernel: `vm_flags_t` (`VM_READ`, `VM_WRITE`, `VM_EXEC`, `VM_SHARED`,
    /// `VM_MIXEDMAP`, `VM_HUGEPAGE`, `VM_NOHUGEPAGE`), `include/linux/mm.h`
    /// (main).
    pub struct VmFlags: u64 {
        /// Kernel: `VM_READ` (main).
        const READ = 0x1;
        /// Kernel: `VM_WRITE` (main).
        const WRITE = 0x2;
        /// Kernel: `VM_EXEC` (main).
        const EXEC = 0x4;
        /// Read and write.
        ///
        /// Kernel: none (model only).
        const RW = 0x3;
        /// Writes go to the shared object (file or shmem), not to private
        /// copies.
        ///
        /// Kernel: `VM_SHARED` (main).
        const SHARED = 0x8;
        /// Pages inserted by a driver's `mmap` (`vm_insert_page()`).
        ///
        /// Kernel: `VM_MIXEDMAP` (main).
        const MIXEDMAP = 0x1000_0000;
        /// `MADV_HUGEPAGE`: write faults may allocate a PMD-sized folio.
        ///
        /// Kernel: `VM_HUGEPAGE` (main).
        const HUGEPAGE = 0x2000_0000;
        /// `MADV_NOHUGEPAGE`.
        ///
        /// Kernel: `VM_NOHUGEPAGE` (main).
        const NOHUGEPAGE = 0x4000_0000;
    }
}

impl VmFlags {
    /// The protection bits (`READ | WRITE | EXEC`).
    ///
    /// Kernel: `VM_ACCESS_FLAGS` (main).
    pub const ACCESS: VmFlags = VmFlags::READ.union(VmFlags::WRITE).union(VmFlags::EXEC);

    /// These flags without the bits of `other`.
    ///
    /// Kernel: none (model only; `flags & ~other`).
    #[must_use]
    pub const fn without(self, other: VmFlags) -> VmFlags {
        // Clearing bits of a valid set leaves a valid set.
        match VmFlags::from_bits(self.bits() & !other.bits()) {
            Ok(f) => f,
            Err(_) => self,
        }
    }

    /// `true` if any bit of `other` is set.
    ///
    /// Kernel: none (model only; `flags & other`).
    pub const fn intersects(self, other: VmFlags) -> bool {
        self.bits() & other.bits() != 0
    }
}

/// The address space a VMA belongs to, compared by identity (two address
/// spaces are never equal, whatever their ids), and its `mm_id`.
///
/// Kernel: `vma->vm_mm` (a pointer compare, main).
///
/// # Differences from the kernel
///
/// The identity is a serial number unique in the process (across every
/// [`Memory`]), not a pointer: a `Vma` is a value that may outlive its
/// address space, and copying it should not touch a reference count (an
/// `Arc` here put two atomic read-modify-writes in every `vma_lookup()`,
/// which cost two threads 23 % more CPU than one: `docs/perf.md`, T5).
#[derive(Clone, Copy)]
pub(crate) struct MmIdent {
    serial: u64,
    id: u64,
}

impl MmIdent {
    /// A new identity for the address space `id`.
    fn new(id: u64) -> MmIdent {
        // A name, not shared state a model checks: loom atomics cannot be
        // statics, and loom need not see this counter.
        #[expect(
            clippy::disallowed_types,
            reason = "a process-wide serial, not model state"
        )]
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        MmIdent {
            serial: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            id,
        }
    }
}

impl PartialEq for MmIdent {
    fn eq(&self, other: &MmIdent) -> bool {
        self.serial == other.serial
    }
}

impl Eq for MmIdent {}

impl fmt::Debug for MmIdent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mm {}", self.id)
    }
}

/// A virtual memory area: a page-aligned range of one address space.
///
/// Kernel: `struct vm_area_struct` (`vm_start`, `vm_end`, `vm_pgoff`,
/// `vm_flags`, `vm_mm`, `anon_vma`, `vm_file->f_mapping`, main).
///
/// # Differences from the kernel
///
/// - `id` stands for the VMA's own `anon_vma`: the cookie stored in the
///   anon folios first mapped through it, unique on the machine. A VMA
///   made by `fork` also reaches the `anon_vma`s of its ancestors
///   ([`Vma::anon_chain`], the kernel's `anon_vma_chain`), so the rmap of
///   a parent's folio finds the child's mappings.
/// - A `Vma` is a value (a copy of the VMA as it was when read): two are
///   equal when they describe the same range of the same address space
///   the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vma {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) pgoff: u64,
    pub(crate) flags: VmFlags,
    pub(crate) id: u64,
    pub(crate) mm: MmIdent,
    /// The `anon_vma`s of the ancestors this VMA was copied from by fork
    /// (`None`: none, so that copying a VMA that was never forked touches
    /// no reference count).
    pub(crate) anon_chain: Option<Arc<[u64]>>,
    /// The page cache a file-backed or shared VMA maps.
    pub(crate) file: Option<Arc<AddressSpace>>,
}

impl Vma {
    /// First address. Kernel: `vm_start` (main).
    pub fn start(&self) -> u64 {
        self.start
    }

    /// One past the last address. Kernel: `vm_end` (main).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Page offset of `start`. Kernel: `vm_pgoff` (for anonymous VMAs,
    /// `vm_start >> PAGE_SHIFT` at creation, main).
    pub fn pgoff(&self) -> u64 {
        self.pgoff
    }

    /// Kernel: `vm_flags` (main).
    pub fn flags(&self) -> VmFlags {
        self.flags
    }

    /// The id of this VMA's own `anon_vma`: the anon-mapping cookie stored
    /// in the anon folios first mapped through it.
    ///
    /// Kernel: none (model only; `vma->anon_vma`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The `anon_vma`s of the VMAs this one was copied from by `fork`,
    /// parent first.
    ///
    /// Kernel: `vma->anon_vma_chain` (less the VMA's own `anon_vma`) (main).
    pub fn anon_chain(&self) -> &[u64] {
        self.anon_chain.as_deref().unwrap_or_default()
    }

    /// `true` if an anon folio with cookie `anon_id` may be mapped through
    /// this VMA: it is the VMA's own `anon_vma` or an ancestor's.
    ///
    /// Kernel: the `anon_vma_interval_tree` lookup of `rmap_walk_anon()` (main).
    pub fn maps_anon(&self, anon_id: u64) -> bool {
        self.id == anon_id || self.anon_chain().contains(&anon_id)
    }

    /// The page cache the VMA maps (file-backed and shared VMAs).
    ///
    /// Kernel: `vma->vm_file->f_mapping` (main).
    pub fn file(&self) -> Option<&Arc<AddressSpace>> {
        self.file.as_ref()
    }

    /// `true` for private anonymous memory (and the mappings of a driver
    /// `mmap` that installs no fault handler).
    ///
    /// Kernel: `vma_is_anonymous()` (`!vma->vm_ops`) (main).
    pub fn is_anonymous(&self) -> bool {
        self.file.is_none()
    }

    /// `true` for a private mapping that may become writable: writes copy.
    ///
    /// Kernel: `is_cow_mapping(vm_flags)` (`VM_MAYWRITE` without
    /// `VM_SHARED`; every private mapping may write here) (main).
    pub fn is_cow_mapping(&self) -> bool {
        !self.flags.contains(VmFlags::SHARED)
    }

    /// The id of the address space the VMA belongs to.
    ///
    /// Kernel: `vma->vm_mm->mm_id` (main).
    pub fn mm_id(&self) -> u64 {
        self.mm.id
    }

    /// `true` if `addr` lies in the VMA.
    ///
    /// Kernel: none (model only).
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Page offset of `addr` in the VMA's mapping.
    ///
    /// Kernel: `linear_page_index(vma, address)` (main).
    pub fn linear_page_index(&self, addr: u64) -> u64 {
        ((addr - self.start) >> PAGE_SHIFT).wrapping_add(self.pgoff)
    }

    /// The first address at which any of the pages `pgoff..pgoff + nr_pages`
    /// is mapped by this VMA.
    ///
    /// Kernel: `vma_address(vma, pgoff, nr_pages)`, `mm/internal.h` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EFAULT`] (the kernel returns `-EFAULT` as an address) if none
    /// of the range lies in the VMA.
    pub fn vma_address(&self, pgoff: u64, nr_pages: u64) -> Result<u64, Errno> {
        if pgoff >= self.pgoff {
            let addr = self
                .start
                .wrapping_add((pgoff - self.pgoff).wrapping_shl(PAGE_SHIFT));
            if addr < self.start || addr >= self.end {
                return Err(Errno::EFAULT);
            }
            Ok(addr)
        } else if pgoff.wrapping_add(nr_pages).wrapping_sub(1) >= self.pgoff {
            Ok(self.start)
        } else {
            Err(Errno::EFAULT)
        }
    }

    /// `true` if a PMD-sized folio can be mapped at `addr`'s 2 MiB block.
    ///
    /// Kernel: `thp_vma_suitable_order(vma, addr, PMD_ORDER)` (anonymous: no
    /// pgoff check, main).
    pub fn thp_suitable(&self, addr: u64) -> bool {
        let haddr = addr & !(PMD_SIZE - 1);
        haddr >= self.start && haddr.checked_add(PMD_SIZE).is_some_and(|e| e <= self.end)
    }
}

/// How `page_vma_mapped_walk()` treats a device-private PMD.
///
/// Kernel: the device-private PMD branch of `page_vma_mapped_walk()`,
/// `mm/page_vma_mapped.c`, added with device-private THP rmap support
/// (65edfda6f3f2, 6.19) and fixed by "`mm/page_vma_mapped`: fix
/// device-private PMD handling" (Wei Yang, mm-hotfixes 2026-06-30, Link
/// `20260630021540.17297-1-richard.weiyang@gmail.com`; CVE-2026-68163,
/// fixed in 7.1.6 and 7.2-rc5). Hazard H13 (`docs/hazards.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PvmwPmdPolicy {
    /// The fix: a device-private PMD joins the trans-huge/migration block:
    /// the PMD lock is taken and the entry re-read; a device-private PMD
    /// is not found under `PVMW_MIGRATION`, nor unless `check_pmd()`
    /// overlaps the target; any other non-present value is not found; a
    /// PMD split under the walk is handled at PTE level.
    ///
    /// Kernel: CVE-2026-68163 fix (7.1.6, 7.2-rc5).
    #[default]
    Fixed,
    /// 6.19 to 7.1.5 (7.0 included): a device-private PMD seen locklessly
    /// "matches" whatever the target, with the PMD lock held and without
    /// re-reading the entry — even under `PVMW_MIGRATION`, where
    /// `remove_migration_pmd()` then treats it as a migration entry.
    ///
    /// Kernel: `page_vma_mapped_walk()` in 7.0.
    V7_0,
}

/// Whether `migrate_vma_collect_pmd()` reads `pte_dirty()` / `pte_pfn()`
/// of a non-present (device-private) PTE.
///
/// Kernel: `migrate_vma_collect_pmd()`, `mm/migrate_device.c`; fixed by
/// "mm: `migrate_device`: fix `pte_pfn`/`pte_dirty` called on non-present
/// PTE"
/// (Kefeng Wang, mm-hotfixes 2026-07-08, Link
/// `20260708003955.4024340-1-wangkefeng.wang@huawei.com`; Fixes
/// fd35ca3d12cc, 6c287605fd56). Hazard H20 (`docs/hazards.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CollectPteGuard {
    /// The fix: `flush_cache_page(..., pte_pfn(pte))` and
    /// `pte_dirty(pte)` → `folio_mark_dirty()` only for a present PTE.
    #[default]
    Fixed,
    /// 7.0: both run for device-private swap PTEs too. x86's `pte_dirty()`
    /// tests `_PAGE_DIRTY | _PAGE_SAVED_DIRTY`, and `_PAGE_SAVED_DIRTY`
    /// (bit 58) is the inverted top bit of a swap PTE's offset: set for
    /// every real offset, so every collected device page is marked dirty.
    ///
    /// Kernel: `migrate_vma_collect_pmd()` in 7.0.
    V7_0,
}

/// What the error paths of `migrate_vma_insert_huge_pmd_page()` release.
///
/// Kernel: `migrate_vma_insert_huge_pmd_page()`, `mm/migrate_device.c`;
/// fixed by 63451de16e0a ("`mm/migrate_device`: fix spinlock leak in
/// `migrate_vma_insert_huge_pmd_page`", Sunny Patel, 7.0.y) and
/// "`mm/migrate_device`: fix pgtable leak in
/// `migrate_vma_insert_huge_pmd_page`" (Sunny Patel, mm-hotfixes 2026-05,
/// Link `20260501115122.23288-1-nueralspacetech@gmail.com`). Hazard H21
/// (`docs/hazards.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HugeInsertErrors {
    /// Both fixes: an unstable address space unlocks the PMD before
    /// aborting, and every abort after `pte_alloc_one()` frees the table.
    #[default]
    Fixed,
    /// 7.0: `check_stable_address_space()` failing jumps to `abort` with
    /// the PMD lock still held (held forever), and the aborts after
    /// `pte_alloc_one()` (PMD not none, uffd missing) leak the table.
    ///
    /// Kernel: `migrate_vma_insert_huge_pmd_page()` in 7.0.
    V7_0,
}

/// What zapping a non-present PMD keys the rmap and reference drop on.
///
/// Kernel: `zap_huge_pmd()`, `mm/huge_memory.c` (7.0; `zap_huge_pmd_folio()`
/// in the mm tree). Hazard H22 (`docs/hazards.md`).
///
/// # Differences from the kernel
///
/// [`Fixed`](Self::Fixed) is derived, not an upstream commit: no fix was
/// found in 7.0, 7.1 or the mm tree through 7.3-rc, whose
/// `zap_huge_pmd_folio()` still tests `folio_is_device_private(folio)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ZapDevicePmd {
    /// Derived fix: the rmap is removed and the reference dropped only for
    /// a device-private *entry* (`softleaf_is_device_private(entry)`), as
    /// `zap_nonpresent_ptes()` does at PTE level; a migration PMD is just
    /// cleared (the migration owns its folio).
    #[default]
    Fixed,
    /// 7.0: keyed on `folio_is_device_private(folio)`, so a migration PMD
    /// whose folio is device-private (a device THP being migrated back)
    /// gets an rmap removed and a reference dropped that
    /// `set_pmd_migration_entry()` already took away.
    ///
    /// Kernel: `zap_huge_pmd()` in 7.0.
    V7_0,
}

/// Settings of an address space.
///
/// Kernel: boot-time and config choices (`pgtable_l5_enabled()`,
/// `CONFIG_ARCH_ENABLE_THP_MIGRATION`, the L1TF mitigation; main), and
/// which version of a fixed kernel path to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmConfig {
    /// Decides `SWP_PFN_BITS` for entries in this address space.
    pub paging: PagingMode,
    /// The machine's L1TF state, which decides
    /// [`swap_migration_ad_supported`](Self::swap_migration_ad_supported).
    ///
    /// Kernel: read by `arch_max_swapfile_size()` at boot (main).
    pub l1tf: L1tf,
    /// Kernel: `thp_migration_supported()` (true on x86-64, main).
    pub thp_migration: bool,
    /// A read fault on a hole maps the shared zero page read-only
    /// ([`SystemMemory::zero_pfn`](crate::SystemMemory::zero_pfn)) instead
    /// of a new zeroed page; in a `VM_HUGEPAGE` VMA, a read fault on an
    /// empty, suitable PMD maps the huge zero page
    /// ([`SystemMemory::huge_zero_pfn`](crate::SystemMemory::huge_zero_pfn)).
    ///
    /// Kernel: `!mm_forbids_zeropage(mm)` (true on x86-64), and
    /// `transparent_hugepage_use_zero_page()` (true by default; main).
    pub zero_page: bool,
    /// The walker's device-private PMD branch (hazard H13).
    pub pvmw_pmd: PvmwPmdPolicy,
    /// Collection's reads of non-present PTEs (hazard H20).
    pub collect_pte_guard: CollectPteGuard,
    /// The huge-PMD insert's error paths (hazard H21).
    pub huge_insert_errors: HugeInsertErrors,
    /// Zapping a device-private migration PMD (hazard H22).
    pub zap_device_pmd: ZapDevicePmd,
}

impl MmConfig {
    /// Whether migration entries keep young/dirty bits on this machine.
    ///
    /// Kernel: `swap_migration_ad_supported` (`mm/swapfile.c`), see
    /// [`L1tf::swap_migration_ad_supported`] (main).
    pub const fn swap_migration_ad_supported(&self) -> bool {
        self.l1tf.swap_migration_ad_supported(self.paging)
    }
}

impl Default for MmConfig {
    /// 4-level paging, no L1TF clamp, THP migration and the zero page on,
    /// every path as fixed upstream.
    fn default() -> Self {
        MmConfig {
            paging: PagingMode::FourLevel,
            l1tf: L1tf::NotAffected,
            thp_migration: true,
            zero_page: true,
            pvmw_pmd: PvmwPmdPolicy::Fixed,
            collect_pte_guard: CollectPteGuard::Fixed,
            huge_insert_errors: HugeInsertErrors::Fixed,
            zap_device_pmd: ZapDevicePmd::Fixed,
        }
    }
}

/// What `mmap_lock` protects beyond the VMA list itself.
#[derive(Debug)]
pub(crate) struct MmapState {
    next_table_frame: u64,
}

/// A process address space.
///
/// Kernel: `struct mm_struct` (its VMAs, page tables, `mmap_lock` and
/// `mm_id`), shared as `Arc<Mm>` the way `mm_users` counts its users (main).
///
/// ```
/// use devpriv_core::{Errno, PAGE_SIZE, PageCount, Pfn};
/// use devpriv_migrate::{Memory, Mm, MmConfig, SystemMemory, VmFlags};
/// use devpriv_pagemap::DevicePrivateSpace;
/// use std::sync::Arc;
///
/// let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(512))?;
/// let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
/// let mm = Mm::new(&mem, MmConfig::default());
/// let base = 0x7f00_0000_0000;
/// mm.mmap_write_lock().mmap_anon(base, 4 * PAGE_SIZE, VmFlags::RW)?;
/// assert_eq!(mm.vma_lookup(base + PAGE_SIZE).map(|v| v.end()), Some(base + 4 * PAGE_SIZE));
/// mm.mmap_write_lock().munmap(base, 4 * PAGE_SIZE)?;
/// assert!(mm.vmas().is_empty());
/// # Ok::<(), Errno>(())
/// ```
pub struct Mm {
    memory: Memory,
    config: MmConfig,
    ident: MmIdent,
    /// Kernel: `mm->mmap_lock` (the write side, main).
    mmap_lock: Mutex<MmapState>,
    /// The VMAs in address order, replaced whole under `mmap_lock`.
    ///
    /// Kernel: `mm->mm_mt` (main).
    vmas: RwLock<Arc<[Vma]>>,
    /// Kernel: `mm->pgd` (user half, main).
    pgd: Box<[OnceLock<Box<PudTable>>]>,
    /// Kernel: `mm->notifier_subscriptions` (main).
    notifiers: Mutex<Vec<Weak<dyn MmuNotifier>>>,
    /// Page-table pages from [`Mm::pte_alloc_one`] not yet given back with
    /// [`Mm::pte_free`]: the deposited ones, plus any leaked.
    ///
    /// Kernel: none (model only; the kernel's pages are just memory).
    pub(crate) pgtables: AtomicU64,
    /// Kernel: `MMF_UNSTABLE` in `mm->flags` (main).
    pub(crate) unstable: AtomicBool,
    /// Planted bugs (`EvictNoTrylock`); none outside loom.
    mutants: Mutants,
    /// The processes of this one's fork tree, this one included.
    fork_tree: Arc<ForkTree>,
}

/// The address spaces of one fork tree, oldest first: every process that
/// can map an anon folio of one of its members (anon cookies reach other
/// processes only through `fork`, [`Vma::anon_chain`]).
///
/// Kernel: the root `anon_vma` its VMAs share (`anon_vma->root`, whose
/// interval trees hold every VMA an `rmap_walk_anon()` can visit,
/// `mm/rmap.c`, main).
///
/// # Differences from the kernel
///
/// One per fork tree rather than one per VMA: [`rmap_walk_anon`](crate::rmap_walk_anon)
/// filters its members' VMAs with
/// [`Vma::maps_anon`]. It exists so that a walk touches only related
/// processes, as the kernel's does, instead of every process's VMA lock.
pub(crate) struct ForkTree(Mutex<Vec<Weak<Mm>>>);

impl ForkTree {
    fn new() -> Arc<ForkTree> {
        Arc::new(ForkTree(Mutex::new(Vec::new())))
    }

    /// Calls `f` on each live member, oldest first, with the tree locked
    /// (as `rmap_walk_anon()` holds the `anon_vma` lock: a concurrent
    /// `fork` waits). Stops at the first error.
    pub(crate) fn for_each(&self, f: impl FnMut(&Mm) -> Result<(), Errno>) -> Result<(), Errno> {
        for_each_live(&self.0.lock(), f)
    }

    fn add(&self, mm: Weak<Mm>) {
        let mut list = self.0.lock();
        list.retain(|w| w.strong_count() > 0);
        list.push(mm);
    }
}

/// Calls `f` on each address space of `list` that is still alive.
pub(crate) fn for_each_live(
    list: &[Weak<Mm>],
    mut f: impl FnMut(&Mm) -> Result<(), Errno>,
) -> Result<(), Errno> {
    list.iter()
        .filter_map(Weak::upgrade)
        .try_for_each(|m| f(&m))
}

impl fmt::Debug for Mm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pmd_tables = self
            .pgd
            .iter()
            .filter_map(OnceLock::get)
            .flat_map(|pud| pud.pmds.iter().filter_map(OnceLock::get))
            .count();
        f.debug_struct("Mm")
            .field("id", &self.id())
            .field("config", &self.config)
            .field("vmas", &self.vmas())
            .field("pmd_tables", &pmd_tables)
            .finish()
    }
}

/// PTE tables get frames from here up (a model-only numbering, far from
/// any [`SystemMemory`](crate::SystemMemory) a test is likely to create).
const TABLE_FRAME_BASE: u64 = 0xf0_0000_0000;

impl Mm {
    /// An empty address space whose pages come from `memory`.
    ///
    /// Kernel: `mm_alloc()` (`mm_init()`, `mm_alloc_id()`), `kernel/fork.c` (main).
    pub fn new(memory: &Memory, config: MmConfig) -> Arc<Mm> {
        Self::with_mutants(memory, config, Mutants::NONE)
    }

    /// [`new`](Self::new) with deliberate bugs in the migration paths that
    /// run on this address space, for loom mutant tests (outside loom
    /// `mutants` is empty).
    ///
    /// Kernel: none (model only).
    pub fn with_mutants(memory: &Memory, config: MmConfig, mutants: Mutants) -> Arc<Mm> {
        Self::in_fork_tree(memory, config, mutants, ForkTree::new())
    }

    /// A new address space in `fork_tree` (a fresh tree for a new process,
    /// the parent's for `fork`).
    pub(crate) fn in_fork_tree(
        memory: &Memory,
        config: MmConfig,
        mutants: Mutants,
        fork_tree: Arc<ForkTree>,
    ) -> Arc<Mm> {
        let mm = Arc::new(Mm {
            memory: memory.clone(),
            config,
            ident: MmIdent::new(memory.alloc_mm_id()),
            mmap_lock: Mutex::new(MmapState {
                next_table_frame: TABLE_FRAME_BASE,
            }),
            vmas: RwLock::new(Arc::from(Vec::new())),
            pgd: (0..USER_PGD_ENTRIES).map(|_| OnceLock::new()).collect(),
            notifiers: Mutex::new(Vec::new()),
            pgtables: AtomicU64::new(0),
            unstable: AtomicBool::new(false),
            mutants,
            fork_tree,
        });
        mm.fork_tree.add(Arc::downgrade(&mm));
        memory.register_mm(Arc::downgrade(&mm));
        mm
    }

    /// This process's fork tree.
    pub(crate) fn fork_tree(&self) -> &Arc<ForkTree> {
        &self.fork_tree
    }

    /// The machine's memory this address space maps.
    ///
    /// Kernel: none (model only; the kernel's page allocator is global).
    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// The settings.
    ///
    /// Kernel: none (model only).
    pub fn config(&self) -> MmConfig {
        self.config
    }

    /// The planted bugs.
    pub(crate) fn mutants(&self) -> Mutants {
        self.mutants
    }

    /// The paging mode (for encoding entries).
    ///
    /// Kernel: none (model only).
    pub fn paging(&self) -> PagingMode {
        self.config.paging
    }

    /// The id of this address space, unique on its machine.
    ///
    /// Kernel: `mm->mm_id` (`CONFIG_MM_ID`, 7.0).
    pub fn id(&self) -> u64 {
        self.ident.id
    }

    /// Who this address space's VMAs belong to.
    pub(crate) fn ident(&self) -> &MmIdent {
        &self.ident
    }

    /// Takes the address space's lock for writing: the guard maps and
    /// unmaps (see [`MmapWriteGuard`]). Dropping it is `mmap_write_unlock()`.
    ///
    /// Kernel: `mmap_write_lock(mm)`, `include/linux/mmap_lock.h` (main).
    pub fn mmap_write_lock(&self) -> MmapWriteGuard<'_> {
        MmapWriteGuard {
            mm: self,
            state: self.mmap_lock.lock(),
        }
    }

    /// Subscribes `notifier` to invalidations of this address space, for
    /// as long as it lives (a dropped notifier is forgotten).
    ///
    /// Kernel: `mmu_interval_notifier_insert(mni, mm, 0, ULONG_MAX, ops)` (main).
    pub fn mmu_notifier_register(&self, notifier: Weak<dyn MmuNotifier>) {
        let mut list = self.notifiers.lock();
        list.retain(|w| w.strong_count() > 0);
        list.push(notifier);
    }

    /// Tells every subscriber that `[start, end)` is about to change.
    ///
    /// Kernel: `mmu_notifier_invalidate_range_start()` (main).
    pub fn mmu_notifier_invalidate(
        &self,
        start: u64,
        end: u64,
        event: MmuNotifyEvent,
        owner: Option<Owner>,
    ) {
        let list: Vec<_> = self
            .notifiers
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let range = MmuNotifierRange {
            start,
            end,
            event,
            owner,
        };
        for n in list {
            n.invalidate(&range);
        }
    }

    /// The VMAs, in address order: a snapshot, which later changes do not
    /// affect.
    ///
    /// Kernel: a walk of `mm->mm_mt` (`for_each_vma()`, main).
    pub fn vmas(&self) -> Arc<[Vma]> {
        Arc::clone(&self.vmas.read())
    }

    /// The VMA containing `addr` (a copy).
    ///
    /// Kernel: `vma_lookup(mm, addr)` (main).
    pub fn vma_lookup(&self, addr: u64) -> Option<Vma> {
        let vmas = self.vmas.read();
        let pos = vmas.partition_point(|v| v.end <= addr);
        vmas.get(pos).filter(|v| v.contains(addr)).cloned()
    }

    /// `true` if `vma` is (still) one of this address space's VMAs.
    ///
    /// Kernel: none (model only; the kernel's callers hold `mmap_lock`,
    /// so their `vma` cannot go away).
    pub fn has_vma(&self, vma: &Vma) -> bool {
        self.vmas.read().iter().any(|v| v == vma)
    }

    /// `true` if any PUD entry of `addr`'s 512 GiB region is present.
    ///
    /// Kernel: `pgd_present(*pgd_offset(mm, addr))` (main).
    pub(crate) fn pgd_present(&self, addr: u64) -> bool {
        self.pgd
            .get(pgd_index(addr))
            .is_some_and(|e| e.get().is_some())
    }

    /// The PMD table for `addr`, if its PUD entry is present.
    ///
    /// Kernel: `pud_present()` + `pmd_offset()` (main).
    pub(crate) fn pmd_table(&self, addr: u64) -> Option<&PmdTable> {
        let pud = self.pgd.get(pgd_index(addr))?.get()?;
        pud.pmds[pud_index(addr)].get().map(|t| &**t)
    }

    /// Every PMD slot of the address space, in no particular order.
    pub(crate) fn pmd_slots(&self) -> impl Iterator<Item = &PmdSlot> {
        self.pgd
            .iter()
            .filter_map(OnceLock::get)
            .flat_map(|pud| pud.pmds.iter().filter_map(OnceLock::get))
            .flat_map(|t| t.slots.iter())
    }

    /// Marks the address space unstable: the OOM reaper has started taking
    /// its memory, so page-fault and migration paths must not install new
    /// entries.
    ///
    /// Kernel: `set_bit(MMF_UNSTABLE, &mm->flags)` in
    /// `__oom_reap_task_mm()`, `mm/oom_kill.c` (main).
    pub fn set_unstable(&self) {
        self.unstable.store(true, Ordering::Release);
    }

    /// Kernel: `check_stable_address_space(mm)`, `include/linux/oom.h` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EFAULT`] (the kernel's `VM_FAULT_SIGBUS`) once
    /// [`set_unstable`](Self::set_unstable) was called.
    pub fn check_stable_address_space(&self) -> Result<(), Errno> {
        if self.unstable.load(Ordering::Acquire) {
            return Err(Errno::EFAULT);
        }
        Ok(())
    }
}

/// The address space locked for writing: the VMAs and the page-table
/// pages may change. It dereferences to the [`Mm`].
///
/// Kernel: `mm->mmap_lock` held by `mmap_write_lock()`; dropping the guard
/// is `mmap_write_unlock()` (main).
pub struct MmapWriteGuard<'a> {
    mm: &'a Mm,
    pub(crate) state: MutexGuard<'a, MmapState>,
}

impl fmt::Debug for MmapWriteGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmapWriteGuard")
            .field("mm", &self.mm.id())
            .finish_non_exhaustive()
    }
}

impl Deref for MmapWriteGuard<'_> {
    type Target = Mm;

    fn deref(&self) -> &Mm {
        self.mm
    }
}

impl MmapWriteGuard<'_> {
    /// Replaces the VMA list (kept in address order by the caller).
    pub(crate) fn set_vmas(&mut self, vmas: Vec<Vma>) {
        *self.mm.vmas.write() = Arc::from(vmas);
    }

    /// Allocates the page tables covering `[start, end)` (all entries
    /// none); existing tables stay.
    ///
    /// Kernel: `__pud_alloc()`, `__pmd_alloc()`, `__pte_alloc()`,
    /// `mm/memory.c` (done at fault time there, main).
    pub(crate) fn alloc_page_tables(&mut self, start: u64, end: u64) {
        let mut addr = start & !(PMD_SIZE - 1);
        while addr < end {
            let Some(pgd) = self.mm.pgd.get(pgd_index(addr)) else {
                return;
            };
            let pud = pgd.get_or_init(|| {
                Box::new(PudTable {
                    pmds: (0..ENTRIES).map(|_| OnceLock::new()).collect(),
                })
            });
            let table = pud.pmds[pud_index(addr)].get_or_init(|| Box::new(PmdTable::new()));
            let slot = table.slot(addr);
            if slot.table.get().is_none() {
                let frame = Pfn::new(self.state.next_table_frame);
                self.state.next_table_frame += 1;
                let _ = slot.table.set(Box::new(PteTable::new(frame)));
            }
            addr += PMD_SIZE;
        }
    }
}

const _: () = assert!(PUD_SIZE == PMD_SIZE * ENTRIES as u64);

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::memory_model::test_memory;
    use devpriv_core::PAGE_SIZE;

    const BASE: u64 = 0x7f00_0000_0000;

    #[test]
    fn vma_address_follows_the_kernel() {
        let mm = Mm::new(&test_memory(512), MmConfig::default());
        let v = mm
            .mmap_write_lock()
            .mmap_anon(BASE, 16 * PAGE_SIZE, VmFlags::RW)
            .unwrap();
        let p = v.pgoff();
        assert_eq!(v.vma_address(p + 3, 1), Ok(BASE + 3 * PAGE_SIZE));
        assert_eq!(v.vma_address(p + 16, 1), Err(Errno::EFAULT));
        assert_eq!(
            v.vma_address(p - 4, 8),
            Ok(BASE),
            "folio straddles vm_start"
        );
        assert_eq!(v.vma_address(p - 4, 4), Err(Errno::EFAULT));
    }
}
