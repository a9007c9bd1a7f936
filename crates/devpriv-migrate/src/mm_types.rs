//! A process address space: its VMAs, its page-table pages (each with its
//! lock), and the `mmap_lock` that serialises changes to them.
//!
//! Kernel: `include/linux/mm_types.h` (`struct mm_struct`,
//! `struct vm_area_struct`, `struct ptdesc`), `include/linux/mmap_lock.h`
//! (`mmap_write_lock()`), `kernel/fork.c` (`mm_alloc()`), `mm/internal.h`
//! (`vma_address()`).
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
//!   would usually have a fresh address. Nothing here relies on it.
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
use core::fmt;
use core::ops::Deref;
use devpriv_core::consts::PTRS_PER_PTE;
use devpriv_core::sync::atomic::{AtomicU64, Ordering};
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
/// Kernel: a page-table page with its split ptlock (`ptdesc->ptl`).
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
    /// Kernel: `ptep_get()` (`READ_ONCE`).
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
    /// Kernel: `pte_lockptr()`.
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
}

impl PmdSlot {
    /// Reads the PMD without the lock.
    ///
    /// Kernel: `pmdp_get_lockless()`.
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
    /// huge PMD.
    #[inline]
    pub(crate) fn table_if(&self, pmd: Pmd) -> Option<&PteTable> {
        if pmd.is_table() { self.table() } else { None }
    }
}

/// A PMD table: 512 PMD entries and one lock for all of them.
///
/// Kernel: a PMD page-table page with its split PMD ptlock.
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
                })
                .collect(),
            ptl: Mutex::new(()),
        }
    }

    pub(crate) fn slot(&self, addr: u64) -> &PmdSlot {
        &self.slots[pmd_index(addr)]
    }

    /// Kernel: `pmd_lockptr()`.
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
    /// `VM_MIXEDMAP`, `VM_HUGEPAGE`, `VM_NOHUGEPAGE`), `include/linux/mm.h`.
    pub struct VmFlags: u64 {
        /// Kernel: `VM_READ`.
        const READ = 0x1;
        /// Kernel: `VM_WRITE`.
        const WRITE = 0x2;
        /// Kernel: `VM_EXEC`.
        const EXEC = 0x4;
        /// Read and write.
        ///
        /// Kernel: none (model only).
        const RW = 0x3;
        /// Writes go to the shared object (file or shmem), not to private
        /// copies.
        ///
        /// Kernel: `VM_SHARED`.
        const SHARED = 0x8;
        /// Pages inserted by a driver's `mmap` (`vm_insert_page()`).
        ///
        /// Kernel: `VM_MIXEDMAP`.
        const MIXEDMAP = 0x1000_0000;
        /// `MADV_HUGEPAGE`: write faults may allocate a PMD-sized folio.
        ///
        /// Kernel: `VM_HUGEPAGE`.
        const HUGEPAGE = 0x2000_0000;
        /// `MADV_NOHUGEPAGE`.
        ///
        /// Kernel: `VM_NOHUGEPAGE`.
        const NOHUGEPAGE = 0x4000_0000;
    }
}

impl VmFlags {
    /// The protection bits (`READ | WRITE | EXEC`).
    ///
    /// Kernel: `VM_ACCESS_FLAGS`.
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
/// Kernel: `vma->vm_mm` (a pointer compare).
#[derive(Clone)]
pub(crate) struct MmIdent(Arc<u64>);

impl PartialEq for MmIdent {
    fn eq(&self, other: &MmIdent) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for MmIdent {}

impl fmt::Debug for MmIdent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mm {}", self.0)
    }
}

/// A virtual memory area: a page-aligned range of one address space.
///
/// Kernel: `struct vm_area_struct` (`vm_start`, `vm_end`, `vm_pgoff`,
/// `vm_flags`, `vm_mm`, `anon_vma`, `vm_file->f_mapping`).
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
    /// The `anon_vma`s of the ancestors this VMA was copied from by fork.
    pub(crate) anon_chain: Arc<[u64]>,
    /// The page cache a file-backed or shared VMA maps.
    pub(crate) file: Option<Arc<AddressSpace>>,
}

impl Vma {
    /// First address. Kernel: `vm_start`.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// One past the last address. Kernel: `vm_end`.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Page offset of `start`. Kernel: `vm_pgoff` (for anonymous VMAs,
    /// `vm_start >> PAGE_SHIFT` at creation).
    pub fn pgoff(&self) -> u64 {
        self.pgoff
    }

    /// Kernel: `vm_flags`.
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
    /// Kernel: `vma->anon_vma_chain` (less the VMA's own `anon_vma`).
    pub fn anon_chain(&self) -> &[u64] {
        &self.anon_chain
    }

    /// `true` if an anon folio with cookie `anon_id` may be mapped through
    /// this VMA: it is the VMA's own `anon_vma` or an ancestor's.
    ///
    /// Kernel: the `anon_vma_interval_tree` lookup of `rmap_walk_anon()`.
    pub fn maps_anon(&self, anon_id: u64) -> bool {
        self.id == anon_id || self.anon_chain.contains(&anon_id)
    }

    /// The page cache the VMA maps (file-backed and shared VMAs).
    ///
    /// Kernel: `vma->vm_file->f_mapping`.
    pub fn file(&self) -> Option<&Arc<AddressSpace>> {
        self.file.as_ref()
    }

    /// `true` for private anonymous memory (and the mappings of a driver
    /// `mmap` that installs no fault handler).
    ///
    /// Kernel: `vma_is_anonymous()` (`!vma->vm_ops`).
    pub fn is_anonymous(&self) -> bool {
        self.file.is_none()
    }

    /// `true` for a private mapping that may become writable: writes copy.
    ///
    /// Kernel: `is_cow_mapping(vm_flags)` (`VM_MAYWRITE` without
    /// `VM_SHARED`; every private mapping may write here).
    pub fn is_cow_mapping(&self) -> bool {
        !self.flags.contains(VmFlags::SHARED)
    }

    /// The id of the address space the VMA belongs to.
    ///
    /// Kernel: `vma->vm_mm->mm_id`.
    pub fn mm_id(&self) -> u64 {
        *self.mm.0
    }

    /// `true` if `addr` lies in the VMA.
    ///
    /// Kernel: none (model only).
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Page offset of `addr` in the VMA's mapping.
    ///
    /// Kernel: `linear_page_index(vma, address)`.
    pub fn linear_page_index(&self, addr: u64) -> u64 {
        ((addr - self.start) >> PAGE_SHIFT).wrapping_add(self.pgoff)
    }

    /// The first address at which any of the pages `pgoff..pgoff + nr_pages`
    /// is mapped by this VMA.
    ///
    /// Kernel: `vma_address(vma, pgoff, nr_pages)`, `mm/internal.h`.
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
    /// pgoff check).
    pub fn thp_suitable(&self, addr: u64) -> bool {
        let haddr = addr & !(PMD_SIZE - 1);
        haddr >= self.start && haddr.checked_add(PMD_SIZE).is_some_and(|e| e <= self.end)
    }
}

/// Settings of an address space.
///
/// Kernel: boot-time and config choices (`pgtable_l5_enabled()`,
/// `CONFIG_ARCH_ENABLE_THP_MIGRATION`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmConfig {
    /// Decides `SWP_PFN_BITS` for entries in this address space.
    pub paging: PagingMode,
    /// Kernel: `thp_migration_supported()` (true on x86-64).
    pub thp_migration: bool,
    /// A read fault on a hole maps the shared zero page read-only
    /// ([`SystemMemory::zero_pfn`](crate::SystemMemory::zero_pfn)) instead
    /// of a new zeroed page; in a `VM_HUGEPAGE` VMA, a read fault on an
    /// empty, suitable PMD maps the huge zero page
    /// ([`SystemMemory::huge_zero_pfn`](crate::SystemMemory::huge_zero_pfn)).
    ///
    /// Kernel: `!mm_forbids_zeropage(mm)` (true on x86-64), and
    /// `transparent_hugepage_use_zero_page()` (true by default).
    pub zero_page: bool,
}

impl Default for MmConfig {
    fn default() -> Self {
        MmConfig {
            paging: PagingMode::FourLevel,
            thp_migration: true,
            zero_page: true,
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
/// `mm_id`), shared as `Arc<Mm>` the way `mm_users` counts its users.
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
    /// Kernel: `mm->mmap_lock` (the write side).
    mmap_lock: Mutex<MmapState>,
    /// The VMAs in address order, replaced whole under `mmap_lock`.
    ///
    /// Kernel: `mm->mm_mt`.
    vmas: RwLock<Arc<[Vma]>>,
    /// Kernel: `mm->pgd` (user half).
    pgd: Box<[OnceLock<Box<PudTable>>]>,
    /// Kernel: `mm->notifier_subscriptions`.
    notifiers: Mutex<Vec<Weak<dyn MmuNotifier>>>,
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
    /// Kernel: `mm_alloc()` (`mm_init()`, `mm_alloc_id()`), `kernel/fork.c`.
    pub fn new(memory: &Memory, config: MmConfig) -> Arc<Mm> {
        let mm = Arc::new(Mm {
            memory: memory.clone(),
            config,
            ident: MmIdent(Arc::new(memory.alloc_mm_id())),
            mmap_lock: Mutex::new(MmapState {
                next_table_frame: TABLE_FRAME_BASE,
            }),
            vmas: RwLock::new(Arc::from(Vec::new())),
            pgd: (0..USER_PGD_ENTRIES).map(|_| OnceLock::new()).collect(),
            notifiers: Mutex::new(Vec::new()),
        });
        memory.register_mm(Arc::downgrade(&mm));
        mm
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
        *self.ident.0
    }

    /// Who this address space's VMAs belong to.
    pub(crate) fn ident(&self) -> &MmIdent {
        &self.ident
    }

    /// Takes the address space's lock for writing: the guard maps and
    /// unmaps (see [`MmapWriteGuard`]). Dropping it is `mmap_write_unlock()`.
    ///
    /// Kernel: `mmap_write_lock(mm)`, `include/linux/mmap_lock.h`.
    pub fn mmap_write_lock(&self) -> MmapWriteGuard<'_> {
        MmapWriteGuard {
            mm: self,
            state: self.mmap_lock.lock(),
        }
    }

    /// Subscribes `notifier` to invalidations of this address space, for
    /// as long as it lives (a dropped notifier is forgotten).
    ///
    /// Kernel: `mmu_interval_notifier_insert(mni, mm, 0, ULONG_MAX, ops)`.
    pub fn mmu_notifier_register(&self, notifier: Weak<dyn MmuNotifier>) {
        let mut list = self.notifiers.lock();
        list.retain(|w| w.strong_count() > 0);
        list.push(notifier);
    }

    /// Tells every subscriber that `[start, end)` is about to change.
    ///
    /// Kernel: `mmu_notifier_invalidate_range_start()`.
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
    /// Kernel: a walk of `mm->mm_mt` (`for_each_vma()`).
    pub fn vmas(&self) -> Arc<[Vma]> {
        Arc::clone(&self.vmas.read())
    }

    /// The VMA containing `addr` (a copy).
    ///
    /// Kernel: `vma_lookup(mm, addr)`.
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
    /// Kernel: `pgd_present(*pgd_offset(mm, addr))`.
    pub(crate) fn pgd_present(&self, addr: u64) -> bool {
        self.pgd
            .get(pgd_index(addr))
            .is_some_and(|e| e.get().is_some())
    }

    /// The PMD table for `addr`, if its PUD entry is present.
    ///
    /// Kernel: `pud_present()` + `pmd_offset()`.
    pub(crate) fn pmd_table(&self, addr: u64) -> Option<&PmdTable> {
        let pud = self.pgd.get(pgd_index(addr))?.get()?;
        pud.pmds[pud_index(addr)].get().map(|t| &**t)
    }
}

/// The address space locked for writing: the VMAs and the page-table
/// pages may change. It dereferences to the [`Mm`].
///
/// Kernel: `mm->mmap_lock` held by `mmap_write_lock()`; dropping the guard
/// is `mmap_write_unlock()`.
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
    /// `mm/memory.c` (done at fault time there).
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
