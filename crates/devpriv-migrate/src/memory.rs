//! A process address space: VMAs, four-level page tables with a lock per
//! table, and the operations that install, replace and clear entries.
//!
//! Kernel: `include/linux/mm_types.h` (`struct mm_struct`,
//! `struct vm_area_struct`), `mm/memory.c` (`__pte_alloc()`,
//! `pte_offset_map_lock()`, `set_pte_at()`), `include/linux/mm.h`
//! (`pmd_lock()`, `pte_lockptr()`), `mm/pgtable-generic.c`
//! (`__pte_offset_map()`), `mm/internal.h` (`vma_address()`).
//!
//! # Shape
//!
//! - The PGD and P4D levels are folded into a map from PUD index
//!   (`addr >> 30`) to a PMD table; a missing key is a not-present PUD.
//!   [`PGDIR_SIZE`] steps are still taken when a whole 512 GiB region has no
//!   PUD entries.
//! - A PMD table holds 512 PMD values (atomics, read locklessly as
//!   `pmdp_get_lockless()` does) and **one lock for the whole table** — the
//!   split PMD ptlock, `pmd_lock()`.
//! - Each PMD slot inside a VMA owns a preallocated [`PteTable`]: 512 PTE
//!   values (atomics) and **one lock per table** — the split PTE ptlock. The
//!   PMD value says whether the table is in use ([`Pmd::table`]); while the
//!   PMD is none or a leaf (huge, migration, device-private) the table is
//!   idle and empty.
//! - Entries are written only under the table's lock: through a
//!   [`PteGuard`] (from [`Mm::pte_offset_map_lock`] /
//!   [`Mm::pte_alloc_map_lock`]), a [`PmdGuard`] (from [`Mm::pmd_lock`]), or
//!   the walker's accessors while it holds the lock. Reads may be lockless
//!   ([`Mm::ptep_get_lockless`], [`Mm::pmdp_get_lockless`]).
//!
//! # Differences from the kernel
//!
//! - Page tables are allocated when a VMA is mapped ([`Mm::mmap_anon`],
//!   which takes `&mut self` like `mmap_write_lock()`), never freed while the
//!   `Mm` lives, and a PMD slot always uses the same PTE table. So a PMD
//!   that goes table → huge → table points at the same table again;
//!   `pmd_same()` cannot tell those apart, where in the kernel a fresh table
//!   would usually have a fresh address. Nothing here relies on it.
//! - User addresses are limited to 4-level paging (below 2^47) whatever the
//!   [`PagingMode`]; the mode still decides `SWP_PFN_BITS`.
//! - Every VMA is private anonymous memory; there is no hugetlb and no
//!   huge zero page (the 4 KiB zero page is modelled, see
//!   [`MmConfig::zero_page`]).

mod fault;
pub use fault::{FaultContext, FaultFlags, VmFaultResult, handle_mm_fault};

use crate::leafops::Softleaf;
use crate::page_alloc::{SysFolio, SystemMemory};
use crate::pgtable::{_PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_PRESENT, _PAGE_RW, _PAGE_USER, Pmd, Pte};
use crate::rmap::{AnyFolio, Memory, frame_to_folio};
use core::fmt;
use devpriv_core::consts::{PMD_SHIFT, PTRS_PER_PTE};
use devpriv_core::sync::atomic::{AtomicU64, Ordering};
use devpriv_core::sync::{Mutex, MutexGuard};
use devpriv_core::{Errno, HPAGE_PMD_NR, Order, PAGE_SHIFT, PAGE_SIZE, PagingMode, Pfn};
use std::collections::BTreeMap;

/// Bytes mapped by one PMD entry (2 MiB).
///
/// Kernel: `PMD_SIZE`.
pub const PMD_SIZE: u64 = 1 << PMD_SHIFT;
/// log2 of the bytes mapped by one PUD entry.
///
/// Kernel: `PUD_SHIFT` (30).
pub const PUD_SHIFT: u32 = 30;
/// Bytes mapped by one PUD entry (1 GiB).
///
/// Kernel: `PUD_SIZE`.
pub const PUD_SIZE: u64 = 1 << PUD_SHIFT;
/// log2 of the bytes mapped by one PGD entry with 4-level paging.
///
/// Kernel: `PGDIR_SHIFT` (39).
pub const PGDIR_SHIFT: u32 = 39;
/// Bytes mapped by one PGD entry (512 GiB).
///
/// Kernel: `PGDIR_SIZE`.
pub const PGDIR_SIZE: u64 = 1 << PGDIR_SHIFT;
/// End of the user address space (4-level paging).
///
/// Kernel: `TASK_SIZE_MAX` (`(1 << 47) - PAGE_SIZE`).
pub const TASK_SIZE: u64 = (1 << 47) - PAGE_SIZE;

/// Number of entries in a table, as `usize`.
const ENTRIES: usize = 512;
const _: () = assert!(ENTRIES as u64 == PTRS_PER_PTE);

/// Index of `addr`'s entry in its PTE table.
///
/// Kernel: `pte_index(addr)`.
pub const fn pte_index(addr: u64) -> usize {
    ((addr >> PAGE_SHIFT) & (PTRS_PER_PTE - 1)) as usize
}

/// Index of `addr`'s entry in its PMD table.
///
/// Kernel: `pmd_index(addr)`.
pub const fn pmd_index(addr: u64) -> usize {
    ((addr >> PMD_SHIFT) & (PTRS_PER_PTE - 1)) as usize
}

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

    fn is_empty(&self) -> bool {
        (0..ENTRIES).all(|i| self.get(i).is_none())
    }
}

/// One PMD entry and the PTE table reserved for it.
#[derive(Debug)]
pub(crate) struct PmdSlot {
    val: AtomicU64,
    table: Option<Box<PteTable>>,
}

impl PmdSlot {
    /// Reads the PMD without the lock.
    ///
    /// Kernel: `pmdp_get_lockless()`.
    #[inline]
    pub(crate) fn get(&self) -> Pmd {
        Pmd::from_raw(self.val.load(Ordering::Acquire))
    }

    #[inline]
    fn set(&self, pmd: Pmd) {
        self.val.store(pmd.raw(), Ordering::Release);
    }

    /// Writes the PMD. The caller holds the PMD table's lock and has
    /// checked that neither the old nor the new value is a table pointer.
    #[inline]
    pub(crate) fn set_locked(&self, pmd: Pmd) {
        self.set(pmd);
    }

    /// The PTE table this PMD points to, if its value is a table pointer.
    ///
    /// Kernel: `__pte_offset_map()` — `NULL` for a none, non-present or
    /// huge PMD.
    #[inline]
    pub(crate) fn table_if(&self, pmd: Pmd) -> Option<&PteTable> {
        if pmd.is_table() {
            self.table.as_deref()
        } else {
            None
        }
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
    pub(crate) fn slot(&self, addr: u64) -> &PmdSlot {
        &self.slots[pmd_index(addr)]
    }

    /// Kernel: `pmd_lockptr()`.
    pub(crate) fn ptl(&self) -> &Mutex<()> {
        &self.ptl
    }
}

/// VMA protection flags.
///
/// Kernel: `vm_flags_t` (`VM_READ`, `VM_WRITE`, `VM_EXEC`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VmFlags(u64);

impl VmFlags {
    /// Kernel: `VM_READ`.
    pub const READ: VmFlags = VmFlags(0x1);
    /// Kernel: `VM_WRITE`.
    pub const WRITE: VmFlags = VmFlags(0x2);
    /// Kernel: `VM_EXEC`.
    pub const EXEC: VmFlags = VmFlags(0x4);
    /// Read and write.
    ///
    /// Kernel: none (model only).
    pub const RW: VmFlags = VmFlags(0x3);

    /// The raw bits.
    ///
    /// Kernel: none (model only).
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// `true` if all of `other` is set.
    ///
    /// Kernel: none (model only).
    pub const fn contains(self, other: VmFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

/// A virtual memory area: a page-aligned range of one address space.
///
/// Kernel: `struct vm_area_struct` (`vm_start`, `vm_end`, `vm_pgoff`,
/// `vm_flags`).
///
/// # Differences from the kernel
///
/// Always private anonymous memory; `id` (unique within its [`Mm`]) stands
/// in for the `anon_vma` a folio's `mapping` points to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vma {
    start: u64,
    end: u64,
    pgoff: u64,
    flags: VmFlags,
    id: u64,
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

    /// The id of this VMA within its `Mm` (the anon-mapping cookie stored
    /// in folios it maps).
    ///
    /// Kernel: none (model only).
    pub fn id(&self) -> u64 {
        self.id
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
    /// ([`SystemMemory::zero_pfn`]) instead of a new zeroed page.
    ///
    /// Kernel: `!mm_forbids_zeropage(mm)` (true on x86-64).
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

/// A process address space.
///
/// Kernel: `struct mm_struct` (its VMAs and page tables).
pub struct Mm {
    config: MmConfig,
    vmas: Vec<Vma>,
    pmd_tables: BTreeMap<u64, Box<PmdTable>>,
    next_table_frame: u64,
    next_vma_id: u64,
}

impl fmt::Debug for Mm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mm")
            .field("config", &self.config)
            .field("vmas", &self.vmas)
            .field("pmd_tables", &self.pmd_tables.len())
            .finish()
    }
}

impl Default for Mm {
    fn default() -> Self {
        Mm::new(MmConfig::default())
    }
}

/// PTE tables get frames from here up (a model-only numbering, far from
/// any [`SystemMemory`] a test is likely to create).
const TABLE_FRAME_BASE: u64 = 0xf0_0000_0000;

impl Mm {
    /// An empty address space.
    ///
    /// Kernel: `mm_alloc()`.
    pub fn new(config: MmConfig) -> Mm {
        Mm {
            config,
            vmas: Vec::new(),
            pmd_tables: BTreeMap::new(),
            next_table_frame: TABLE_FRAME_BASE,
            next_vma_id: 1,
        }
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

    /// Maps `len` bytes of private anonymous memory at `start` and allocates
    /// the page tables that cover it (all entries none).
    ///
    /// Kernel: `mmap(start, len, prot, MAP_PRIVATE | MAP_ANONYMOUS |
    /// MAP_FIXED_NOREPLACE)`; `vm_pgoff = start >> PAGE_SHIFT`.
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `start` or `len` is not page-aligned, `len` is
    /// zero, or the range passes [`TASK_SIZE`]; [`Errno::EEXIST`] if it
    /// overlaps an existing VMA. Nothing changes on error.
    pub fn mmap_anon(&mut self, start: u64, len: u64, flags: VmFlags) -> Result<&Vma, Errno> {
        let end = start.checked_add(len).ok_or(Errno::EINVAL)?;
        if !start.is_multiple_of(PAGE_SIZE)
            || !len.is_multiple_of(PAGE_SIZE)
            || len == 0
            || end > TASK_SIZE
        {
            return Err(Errno::EINVAL);
        }
        if self.vmas.iter().any(|v| v.start < end && start < v.end) {
            return Err(Errno::EEXIST);
        }
        // Allocate the tables covering [start, end).
        let mut addr = start & !(PMD_SIZE - 1);
        while addr < end {
            let pud = addr >> PUD_SHIFT;
            let table = self.pmd_tables.entry(pud).or_insert_with(|| {
                Box::new(PmdTable {
                    slots: (0..ENTRIES)
                        .map(|_| PmdSlot {
                            val: AtomicU64::new(0),
                            table: None,
                        })
                        .collect(),
                    ptl: Mutex::new(()),
                })
            });
            let slot = &mut table.slots[pmd_index(addr)];
            if slot.table.is_none() {
                slot.table = Some(Box::new(PteTable::new(Pfn::new(self.next_table_frame))));
                self.next_table_frame += 1;
            }
            addr += PMD_SIZE;
        }
        let vma = Vma {
            start,
            end,
            pgoff: start >> PAGE_SHIFT,
            flags,
            id: self.next_vma_id,
        };
        self.next_vma_id += 1;
        let pos = self.vmas.partition_point(|v| v.start < start);
        self.vmas.insert(pos, vma);
        Ok(&self.vmas[pos])
    }

    /// Unmaps `[start, start + len)`: zaps every entry in the range
    /// (dropping the rmap and reference of each page mapped there; a leaf
    /// PMD only partly in the range is split into PTEs first) and removes
    /// the range from the VMAs, splitting a VMA that straddles an end. The
    /// part of a split VMA after the hole keeps the VMA's id (its anon
    /// cookie), as both halves keep the kernel's `anon_vma`.
    ///
    /// Kernel: `munmap()` → `do_vmi_munmap()` (`__split_vma()`,
    /// `unmap_region()` → `unmap_vmas()` → `zap_pmd_range()` /
    /// `zap_pte_range()`), `mm/vma.c` and `mm/memory.c`.
    ///
    /// # Differences from the kernel
    ///
    /// Page tables are not freed (see the module documentation). Entries
    /// of a range no VMA covers are zapped too.
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `start` or `len` is not page-aligned, `len` is
    /// zero or the range passes [`TASK_SIZE`]; nothing changes. An
    /// unmapped range is not an error.
    pub fn munmap(&mut self, mem: &Memory, start: u64, len: u64) -> Result<(), Errno> {
        let end = start.checked_add(len).ok_or(Errno::EINVAL)?;
        if !start.is_multiple_of(PAGE_SIZE)
            || !len.is_multiple_of(PAGE_SIZE)
            || len == 0
            || end > TASK_SIZE
        {
            return Err(Errno::EINVAL);
        }
        self.zap_page_range(mem, start, end)?;
        let mut out = Vec::with_capacity(self.vmas.len() + 1);
        for v in self.vmas.drain(..) {
            if v.end <= start || v.start >= end {
                out.push(v);
                continue;
            }
            if v.start < start {
                out.push(Vma {
                    end: start,
                    ..v.clone()
                });
            }
            if v.end > end {
                out.push(Vma {
                    start: end,
                    pgoff: v.pgoff + ((end - v.start) >> PAGE_SHIFT),
                    ..v
                });
            }
        }
        self.vmas = out;
        Ok(())
    }

    /// Clears every entry in `[start, end)`, dropping the rmap and the
    /// reference of each mapped page (system or device-private); migration
    /// entries are just cleared (the migration owns their folios). A leaf
    /// PMD only partly covered is split first.
    ///
    /// Kernel: `zap_page_range_single()` → `zap_pmd_range()`
    /// (`__split_huge_pmd()`, `zap_huge_pmd()`) and `zap_pte_range()`
    /// (`zap_present_ptes()`, `zap_nonpresent_ptes()`), `mm/memory.c`.
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] for an unaligned or inverted range, or an entry
    /// naming a page no folio backs (a broken invariant; zapping stops
    /// there).
    pub fn zap_page_range(&self, mem: &Memory, start: u64, end: u64) -> Result<(), Errno> {
        if !start.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE) || end < start {
            return Err(Errno::EINVAL);
        }
        let mut addr = start;
        while addr < end {
            let next = ((addr & !(PMD_SIZE - 1)) + PMD_SIZE).min(end);
            if let Some(pmd) = self.pmdp_get_lockless(addr) {
                if !pmd.is_none() && !pmd.is_table() {
                    if addr.is_multiple_of(PMD_SIZE) && next - addr == PMD_SIZE {
                        self.zap_huge_pmd(mem, addr)?;
                    } else {
                        crate::huge_memory::split_huge_pmd(mem, self, addr)?;
                    }
                }
                self.zap_pte_range(mem, addr, next)?;
            }
            addr = next;
        }
        Ok(())
    }

    /// Kernel: `zap_huge_pmd()`, `mm/huge_memory.c`.
    fn zap_huge_pmd(&self, mem: &Memory, addr: u64) -> Result<(), Errno> {
        let guard = mem.space().read();
        let old = {
            let g = self.pmd_lock(addr)?;
            if g.get().is_table() {
                return Ok(());
            }
            g.get_and_clear()?
        };
        let frame = if old.is_trans_huge() {
            Some(old.pfn().into())
        } else {
            let e = Softleaf::from_pmd(old);
            if e.is_device_private() {
                e.to_frame(self.paging())
            } else {
                None
            }
        };
        if let Some(frame) = frame {
            let (folio, _) = frame_to_folio(mem.sys(), &guard, frame).ok_or(Errno::EINVAL)?;
            folio.remove_rmap_pmd()?;
            folio.put();
        }
        Ok(())
    }

    /// Kernel: `zap_pte_range()`, `mm/memory.c`.
    fn zap_pte_range(&self, mem: &Memory, start: u64, end: u64) -> Result<(), Errno> {
        let guard = mem.space().read();
        let mut puts: Vec<AnyFolio<'_>> = Vec::new();
        {
            let Ok(g) = self.pte_offset_map_lock(start) else {
                return Ok(());
            };
            let mut a = start;
            while a < end {
                let pte = g.get_at(a)?;
                a += PAGE_SIZE;
                if pte.is_none() {
                    continue;
                }
                let frame = if pte.is_present() {
                    // The zero page has no folio, reference or rmap.
                    (!mem.sys().is_zero_pfn(pte.pfn())).then(|| pte.pfn().into())
                } else {
                    let e = Softleaf::from_pte(pte);
                    if e.is_device_private() {
                        e.to_frame(self.paging())
                    } else {
                        None
                    }
                };
                g.set_at(a - PAGE_SIZE, Pte::NONE)?;
                if let Some(frame) = frame {
                    let (folio, n) =
                        frame_to_folio(mem.sys(), &guard, frame).ok_or(Errno::EINVAL)?;
                    folio.remove_rmap_ptes(n, 1)?;
                    puts.push(folio);
                }
            }
        }
        // Freeing (a device folio's `folio_free`) happens after the PTE lock
        // is dropped, as the kernel's TLB batching frees after the flush.
        for f in puts {
            f.put();
        }
        Ok(())
    }

    /// The VMAs, in address order.
    ///
    /// Kernel: none (model only).
    pub fn vmas(&self) -> &[Vma] {
        &self.vmas
    }

    /// The VMA containing `addr`.
    ///
    /// Kernel: `vma_lookup(mm, addr)`.
    pub fn vma_lookup(&self, addr: u64) -> Option<&Vma> {
        let pos = self.vmas.partition_point(|v| v.end <= addr);
        self.vmas.get(pos).filter(|v| v.contains(addr))
    }

    /// `true` if any PUD entry of `addr`'s 512 GiB region is present.
    ///
    /// Kernel: `pgd_present(*pgd_offset(mm, addr))`.
    pub(crate) fn pgd_present(&self, addr: u64) -> bool {
        let first = (addr >> PGDIR_SHIFT) << (PGDIR_SHIFT - PUD_SHIFT);
        let last = first + (1 << (PGDIR_SHIFT - PUD_SHIFT)) - 1;
        self.pmd_tables.range(first..=last).next().is_some()
    }

    /// The PMD table for `addr`, if its PUD entry is present.
    ///
    /// Kernel: `pud_present()` + `pmd_offset()`.
    pub(crate) fn pmd_table(&self, addr: u64) -> Option<&PmdTable> {
        self.pmd_tables.get(&(addr >> PUD_SHIFT)).map(|b| &**b)
    }

    /// Reads the PMD covering `addr` without a lock; `None` if no PMD table
    /// covers it.
    ///
    /// Kernel: `pmdp_get_lockless(pmd_offset(...))`.
    pub fn pmdp_get_lockless(&self, addr: u64) -> Option<Pmd> {
        Some(self.pmd_table(addr)?.slot(addr).get())
    }

    /// Reads the PTE for `addr` without a lock; `None` if the PMD does not
    /// point to a PTE table.
    ///
    /// Kernel: `pte_offset_map()` + `ptep_get()`.
    pub fn ptep_get_lockless(&self, addr: u64) -> Option<Pte> {
        let slot = self.pmd_table(addr)?.slot(addr);
        Some(slot.table_if(slot.get())?.get(pte_index(addr)))
    }

    /// Maps and locks the PTE for `addr`.
    ///
    /// Kernel: `pte_offset_map_lock(mm, pmd, addr, &ptl)`: the PMD is
    /// re-checked under the lock and the lookup retried if it changed.
    ///
    /// # Errors
    ///
    /// [`Errno::EFAULT`] if no page table covers `addr`; [`Errno::ENOENT`]
    /// if the PMD is none; [`Errno::EBUSY`] if it is a leaf (huge,
    /// migration or device-private), where the kernel returns `NULL`.
    pub fn pte_offset_map_lock(&self, addr: u64) -> Result<PteGuard<'_>, Errno> {
        let slot = self.pmd_table(addr).ok_or(Errno::EFAULT)?.slot(addr);
        loop {
            let pmd = slot.get();
            let Some(table) = slot.table_if(pmd) else {
                return Err(if pmd.is_none() {
                    Errno::ENOENT
                } else {
                    Errno::EBUSY
                });
            };
            let guard = table.ptl().lock();
            if slot.get() == pmd {
                return Ok(PteGuard {
                    table,
                    _ptl: guard,
                    addr: addr & !(PAGE_SIZE - 1),
                });
            }
        }
    }

    /// Allocates the PTE table for `addr` if the PMD is none, then maps and
    /// locks the PTE.
    ///
    /// Kernel: `pte_alloc_map_lock()` (`__pte_alloc()` + `pmd_install()`
    /// under `pmd_lock()`).
    ///
    /// # Errors
    ///
    /// [`Errno::EFAULT`] if `addr` is in no VMA; [`Errno::EBUSY`] if the PMD
    /// is a leaf.
    pub fn pte_alloc_map_lock(&self, addr: u64) -> Result<PteGuard<'_>, Errno> {
        if self.vma_lookup(addr).is_none() {
            return Err(Errno::EFAULT);
        }
        self.pmd_lock(addr)?.pte_alloc()?;
        self.pte_offset_map_lock(addr)
    }

    /// Locks the PMD table covering `addr`.
    ///
    /// Kernel: `pmd_lock(mm, pmd)`.
    ///
    /// # Errors
    ///
    /// [`Errno::EFAULT`] if no page table covers `addr`.
    pub fn pmd_lock(&self, addr: u64) -> Result<PmdGuard<'_>, Errno> {
        let table = self.pmd_table(addr).ok_or(Errno::EFAULT)?;
        let slot = table.slot(addr);
        if slot.table.is_none() {
            return Err(Errno::EFAULT);
        }
        Ok(PmdGuard {
            slot,
            _ptl: table.ptl().lock(),
            addr: addr & !(PMD_SIZE - 1),
        })
    }

    /// Sets the PTE for `addr` under its lock, allocating the table if the
    /// PMD is none. Returns the old value.
    ///
    /// Kernel: `pte_alloc_map_lock()` + `set_pte_at()` + `pte_unmap_unlock()`.
    ///
    /// # Errors
    ///
    /// As [`pte_alloc_map_lock`](Self::pte_alloc_map_lock).
    pub fn set_pte(&self, addr: u64, pte: Pte) -> Result<Pte, Errno> {
        let g = self.pte_alloc_map_lock(addr)?;
        let old = g.get();
        g.set(pte);
        Ok(old)
    }

    /// Sets the PMD for `addr` to a leaf value under `pmd_lock()`. Returns
    /// the old value.
    ///
    /// Kernel: `set_pmd_at()`.
    ///
    /// # Errors
    ///
    /// As [`pmd_lock`](Self::pmd_lock) and [`PmdGuard::set`].
    pub fn set_pmd(&self, addr: u64, pmd: Pmd) -> Result<Pmd, Errno> {
        let g = self.pmd_lock(addr)?;
        let old = g.get();
        g.set(pmd)?;
        Ok(old)
    }

    /// Maps every page of `folio` with present PTEs from `addr` on (the
    /// range may cross PTE tables), takes one folio reference per page and
    /// adds the PTE rmaps. A folio not yet anon gets `index` and `mapping`
    /// from this VMA.
    ///
    /// Kernel: what `do_anonymous_page()` (order 0) or a PTE-mapped THP
    /// leaves behind: `folio_add_new_anon_rmap()` / `folio_add_anon_rmap_ptes()`,
    /// `folio_ref_add()`, `set_ptes()`.
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `addr` is not page-aligned; [`Errno::EFAULT`] if
    /// the range is not inside one VMA; [`Errno::EINVAL`] if the VMA's page
    /// index at `addr` disagrees with an anon folio's `index`;
    /// [`Errno::EEXIST`] if any PTE is not none; [`Errno::EBUSY`] if a PMD
    /// in the range is a leaf. Nothing changes on error.
    pub fn map_folio_ptes(
        &self,
        addr: u64,
        folio: SysFolio<'_>,
        writable: bool,
    ) -> Result<(), Errno> {
        let nr = folio.nr_pages().get();
        let vma = self.checked_range(addr, nr)?;
        self.check_anon_index(vma, addr, folio)?;
        let end = addr + nr * PAGE_SIZE;
        // Install the tables first (PMD lock, then released), then lock
        // every PTE table of the range in address order, check, and write.
        // Lock order is always PMD lock before PTE lock.
        let mut a = addr;
        while a < end {
            self.pmd_lock(a)?.pte_alloc()?;
            a = (a & !(PMD_SIZE - 1)) + PMD_SIZE;
        }
        let mut guards = Vec::new();
        let mut a = addr;
        while a < end {
            guards.push(self.pte_offset_map_lock(a)?);
            a = (a & !(PMD_SIZE - 1)) + PMD_SIZE;
        }
        let prot = _PAGE_PRESENT
            | _PAGE_USER
            | _PAGE_ACCESSED
            | if writable { _PAGE_RW | _PAGE_DIRTY } else { 0 };
        let mut ptes = Vec::with_capacity(usize::try_from(nr).map_err(|_| Errno::EINVAL)?);
        for i in 0..nr {
            let pfn = folio.page_pfn(i).ok_or(Errno::EINVAL)?;
            ptes.push(Pte::pfn_pte(pfn, prot)?);
        }
        let guard_for = |a: u64| {
            guards
                .iter()
                .find(|g| g.addr >> PMD_SHIFT == a >> PMD_SHIFT)
                .ok_or(Errno::EINVAL)
        };
        for i in 0..nr {
            let a = addr + i * PAGE_SIZE;
            if !guard_for(a)?.get_at(a)?.is_none() {
                return Err(Errno::EEXIST);
            }
        }
        self.set_anon(vma, addr, folio);
        folio.add_rmap_ptes(0, nr)?;
        folio.get_many(nr);
        for (i, pte) in (0..nr).zip(ptes) {
            let a = addr + i * PAGE_SIZE;
            guard_for(a)?.set_at(a, pte)?;
        }
        Ok(())
    }

    /// Maps a PMD-sized `folio` with one huge PMD at `addr`, takes a
    /// reference and adds the PMD rmap.
    ///
    /// Kernel: `do_huge_pmd_anonymous_page()` / `map_anon_folio_pmd()`.
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if the folio is not order 9 or `addr` not 2 MiB
    /// aligned, or an anon folio's `index` disagrees; [`Errno::EFAULT`] if
    /// the 2 MiB are not inside one VMA; [`Errno::EEXIST`] if the PMD is not
    /// none (or points to a non-empty PTE table). Nothing changes on error.
    pub fn map_folio_pmd(
        &self,
        addr: u64,
        folio: SysFolio<'_>,
        writable: bool,
    ) -> Result<(), Errno> {
        if folio.order() != Order::HPAGE_PMD || !addr.is_multiple_of(PMD_SIZE) {
            return Err(Errno::EINVAL);
        }
        let vma = self.checked_range(addr, HPAGE_PMD_NR)?;
        self.check_anon_index(vma, addr, folio)?;
        let prot = _PAGE_PRESENT
            | _PAGE_USER
            | _PAGE_ACCESSED
            | if writable { _PAGE_RW | _PAGE_DIRTY } else { 0 };
        let pmd = Pmd::huge(folio.pfn(), prot)?;
        let g = self.pmd_lock(addr)?;
        let cur = g.get();
        if !(cur.is_none() || cur.is_table() && g.table_is_empty()) {
            return Err(Errno::EEXIST);
        }
        // `set` re-checks the table under its lock.
        g.set(pmd).map_err(|_| Errno::EEXIST)?;
        self.set_anon(vma, addr, folio);
        folio.get_many(1);
        // Cannot fail: the order was checked above.
        folio.add_rmap_pmd()
    }

    fn checked_range(&self, addr: u64, nr: u64) -> Result<&Vma, Errno> {
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        let vma = self.vma_lookup(addr).ok_or(Errno::EFAULT)?;
        let bytes = nr.checked_mul(PAGE_SIZE).ok_or(Errno::EFAULT)?;
        if addr.checked_add(bytes).is_none_or(|e| e > vma.end) {
            return Err(Errno::EFAULT);
        }
        Ok(vma)
    }

    fn check_anon_index(&self, vma: &Vma, addr: u64, folio: SysFolio<'_>) -> Result<(), Errno> {
        if folio.mapping() != 0 && folio.index() != vma.linear_page_index(addr) {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    fn set_anon(&self, vma: &Vma, addr: u64, folio: SysFolio<'_>) {
        if folio.mapping() == 0 {
            folio.set_index(vma.linear_page_index(addr));
            folio.set_mapping(vma.id);
        }
    }

    /// Reads the data word of the system page mapped at `addr` (present PTE
    /// or huge PMD), without faulting.
    ///
    /// Kernel: a user load that does not fault (`get_user()` on a mapped
    /// page), in spirit.
    ///
    /// # Errors
    ///
    /// [`Errno::EFAULT`] if `addr` is not mapped by a present entry, or the
    /// page is not in `mem`.
    pub fn read_user(&self, mem: &SystemMemory, addr: u64) -> Result<u64, Errno> {
        mem.read(self.present_pfn(addr, false)?)
    }

    /// Writes the data word of the system page mapped writable at `addr`.
    ///
    /// Kernel: a user store that does not fault.
    ///
    /// # Errors
    ///
    /// [`Errno::EFAULT`] if `addr` is not mapped by a present, writable
    /// entry, or the page is not in `mem`.
    pub fn write_user(&self, mem: &SystemMemory, addr: u64, value: u64) -> Result<(), Errno> {
        mem.write(self.present_pfn(addr, true)?, value)
    }

    fn present_pfn(&self, addr: u64, write: bool) -> Result<Pfn, Errno> {
        let pmd = self.pmdp_get_lockless(addr).ok_or(Errno::EFAULT)?;
        if pmd.is_trans_huge() {
            if write && !pmd.is_write() {
                return Err(Errno::EFAULT);
            }
            return Ok(Pfn::new(
                pmd.pfn().get() + ((addr >> PAGE_SHIFT) & (HPAGE_PMD_NR - 1)),
            ));
        }
        let pte = self.ptep_get_lockless(addr).ok_or(Errno::EFAULT)?;
        if !pte.is_present() || write && !pte.is_write() {
            return Err(Errno::EFAULT);
        }
        Ok(pte.pfn())
    }

    /// The softleaf entry at `addr`: from the PMD if it is a non-present
    /// leaf, else from the PTE; [`Softleaf::NONE`] otherwise.
    ///
    /// Kernel: `softleaf_from_pmd()` / `softleaf_from_pte()` on a lockless
    /// read.
    pub fn softleaf_at(&self, addr: u64) -> Softleaf {
        match self.pmdp_get_lockless(addr) {
            None => Softleaf::NONE,
            Some(pmd) if !pmd.is_none() && !pmd.is_present() => Softleaf::from_pmd(pmd),
            Some(_) => self
                .ptep_get_lockless(addr)
                .map_or(Softleaf::NONE, Softleaf::from_pte),
        }
    }
}

/// A locked PTE table, positioned at one address.
///
/// Kernel: the `(pte_t *pte, spinlock_t *ptl)` pair returned by
/// `pte_offset_map_lock()`; dropping it is `pte_unmap_unlock()`.
pub struct PteGuard<'a> {
    table: &'a PteTable,
    _ptl: MutexGuard<'a, ()>,
    addr: u64,
}

impl fmt::Debug for PteGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PteGuard")
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("pte", &self.get())
            .finish()
    }
}

impl PteGuard<'_> {
    /// The (page-aligned) address the guard is positioned at.
    ///
    /// Kernel: none (model only).
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// The PTE at the guard's address.
    ///
    /// Kernel: `ptep_get(pte)`.
    pub fn get(&self) -> Pte {
        self.table.get(pte_index(self.addr))
    }

    /// Sets the PTE at the guard's address.
    ///
    /// Kernel: `set_pte_at()`.
    pub fn set(&self, pte: Pte) {
        self.table.set(pte_index(self.addr), pte);
    }

    /// Clears the PTE at the guard's address, returning the old value.
    ///
    /// Kernel: `ptep_get_and_clear()` / `ptep_clear_flush()`.
    pub fn get_and_clear(&self) -> Pte {
        let old = self.get();
        self.set(Pte::NONE);
        old
    }

    /// Replaces `old` with `new` if the PTE still holds `old`.
    ///
    /// Kernel: the `pte_same()` re-check after re-taking the lock.
    ///
    /// # Errors
    ///
    /// [`Errno::EAGAIN`] if the PTE is not `old`; nothing changes.
    pub fn replace(&self, old: Pte, new: Pte) -> Result<(), Errno> {
        if self.get() != old {
            return Err(Errno::EAGAIN);
        }
        self.set(new);
        Ok(())
    }

    fn index_of(&self, addr: u64) -> Result<usize, Errno> {
        if addr >> PMD_SHIFT != self.addr >> PMD_SHIFT {
            return Err(Errno::EINVAL);
        }
        Ok(pte_index(addr))
    }

    /// The PTE for another address covered by the same (locked) table.
    ///
    /// Kernel: `ptep_get(pte + n)` while holding the ptl.
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `addr` lies in another PTE table.
    pub fn get_at(&self, addr: u64) -> Result<Pte, Errno> {
        Ok(self.table.get(self.index_of(addr)?))
    }

    /// Sets the PTE for another address covered by the same table.
    ///
    /// Kernel: `set_pte_at(mm, addr, pte + n, val)` while holding the ptl.
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `addr` lies in another PTE table.
    pub fn set_at(&self, addr: u64, pte: Pte) -> Result<(), Errno> {
        self.table.set(self.index_of(addr)?, pte);
        Ok(())
    }
}

/// A locked PMD table, positioned at one PMD entry.
///
/// Kernel: `pmd_lock()`'s `spinlock_t *` plus the `pmd_t *`; dropping it is
/// `spin_unlock()`.
pub struct PmdGuard<'a> {
    slot: &'a PmdSlot,
    _ptl: MutexGuard<'a, ()>,
    addr: u64,
}

impl fmt::Debug for PmdGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PmdGuard")
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("pmd", &self.get())
            .finish()
    }
}

impl PmdGuard<'_> {
    /// The 2 MiB-aligned address of this PMD entry.
    ///
    /// Kernel: none (model only).
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// The PMD value.
    ///
    /// Kernel: `pmdp_get(pmd)` / `*pmd`.
    pub fn get(&self) -> Pmd {
        self.slot.get()
    }

    fn table_is_empty(&self) -> bool {
        self.slot.table.as_deref().is_none_or(|t| {
            let _ptl = t.ptl().lock();
            t.is_empty()
        })
    }

    /// Sets the PMD to a leaf value (none, huge, or a swap entry). Replacing
    /// a PTE table is allowed only when every PTE in it is none (the table
    /// is then idle, as after `pte_free()` / deposit).
    ///
    /// Kernel: `set_pmd_at()` / `pmd_clear()`.
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `pmd` is a table pointer (use
    /// [`pte_alloc`](Self::pte_alloc) or [`populate`](Self::populate));
    /// [`Errno::EBUSY`] if the current PTE table still has entries. Nothing
    /// changes on error.
    pub fn set(&self, pmd: Pmd) -> Result<(), Errno> {
        if pmd.is_table() {
            return Err(Errno::EINVAL);
        }
        if self.get().is_table() {
            // Retiring a table: hold its lock too, so no PTE writer is
            // inside it (lock order: PMD lock, then PTE lock).
            let table = self.slot.table.as_deref().ok_or(Errno::EFAULT)?;
            let _ptl = table.ptl().lock();
            if !table.is_empty() {
                return Err(Errno::EBUSY);
            }
            self.slot.set(pmd);
            return Ok(());
        }
        self.slot.set(pmd);
        Ok(())
    }

    /// Clears a leaf PMD, returning the old value.
    ///
    /// Kernel: `pmdp_huge_get_and_clear()` / `pmdp_huge_clear_flush()`.
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if the PMD points to a PTE table.
    pub fn get_and_clear(&self) -> Result<Pmd, Errno> {
        let old = self.get();
        if old.is_table() {
            return Err(Errno::EINVAL);
        }
        self.slot.set(Pmd::NONE);
        Ok(old)
    }

    /// Points a none PMD at its (empty) PTE table. Does nothing if it
    /// already points to it.
    ///
    /// Kernel: `pmd_install()` (`pmd_populate()` if `pmd_none()`).
    ///
    /// # Errors
    ///
    /// [`Errno::EBUSY`] if the PMD is a leaf.
    pub fn pte_alloc(&self) -> Result<(), Errno> {
        let cur = self.get();
        if cur.is_table() {
            return Ok(());
        }
        if !cur.is_none() {
            return Err(Errno::EBUSY);
        }
        let table = self.slot.table.as_deref().ok_or(Errno::EFAULT)?;
        self.slot.set(Pmd::table(table.frame)?);
        Ok(())
    }

    /// Fills the PTE table with `pte(i)` for `i` in `0..512` (under the
    /// table's own lock) and then points the PMD at it: how a leaf PMD is
    /// split into PTEs.
    ///
    /// Kernel: `__split_huge_pmd_locked()` (`pmd_populate()` of the
    /// deposited table after `set_ptes()`), and the device-private/migration
    /// PMD split paths.
    ///
    /// # Errors
    ///
    /// [`Errno::EEXIST`] if the PMD already points to a PTE table;
    /// [`Errno::EINVAL`] if `pte` returns an error (nothing changes).
    pub fn populate(&self, mut pte: impl FnMut(usize) -> Result<Pte, Errno>) -> Result<(), Errno> {
        if self.get().is_table() {
            return Err(Errno::EEXIST);
        }
        let table = self.slot.table.as_deref().ok_or(Errno::EFAULT)?;
        let values = (0..ENTRIES).map(&mut pte).collect::<Result<Vec<_>, _>>()?;
        let _ptl = table.ptl().lock();
        for (i, v) in values.into_iter().enumerate() {
            table.set(i, v);
        }
        self.slot.set(Pmd::table(table.frame)?);
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use devpriv_core::PageCount;

    const BASE: u64 = 0x7f00_0000_0000;

    #[test]
    fn mmap_rules() {
        let mut mm = Mm::default();
        assert_eq!(
            mm.mmap_anon(BASE + 1, PAGE_SIZE, VmFlags::RW).err(),
            Some(Errno::EINVAL)
        );
        assert_eq!(
            mm.mmap_anon(BASE, 0, VmFlags::RW).err(),
            Some(Errno::EINVAL)
        );
        assert_eq!(
            mm.mmap_anon(TASK_SIZE, PAGE_SIZE, VmFlags::RW).err(),
            Some(Errno::EINVAL)
        );
        let v = mm
            .mmap_anon(BASE, 4 * PMD_SIZE, VmFlags::RW)
            .unwrap()
            .clone();
        assert_eq!(v.pgoff(), BASE >> PAGE_SHIFT);
        assert_eq!(
            mm.mmap_anon(BASE + PMD_SIZE, PAGE_SIZE, VmFlags::RW).err(),
            Some(Errno::EEXIST)
        );
        assert_eq!(mm.vma_lookup(BASE + 5), Some(&v));
        assert_eq!(mm.vma_lookup(BASE + 4 * PMD_SIZE), None);
        assert_eq!(mm.pmdp_get_lockless(BASE), Some(Pmd::NONE));
        assert_eq!(mm.ptep_get_lockless(BASE), None);
    }

    #[test]
    fn pte_and_pmd_updates_under_the_lock() {
        let mut mm = Mm::default();
        mm.mmap_anon(BASE, 2 * PMD_SIZE, VmFlags::RW).unwrap();
        assert_eq!(mm.pte_offset_map_lock(BASE).err(), Some(Errno::ENOENT));
        let pte = Pte::pfn_pte(Pfn::new(5), _PAGE_PRESENT).unwrap();
        assert_eq!(mm.set_pte(BASE + PAGE_SIZE, pte), Ok(Pte::NONE));
        assert_eq!(mm.ptep_get_lockless(BASE + PAGE_SIZE), Some(pte));
        assert!(mm.pmdp_get_lockless(BASE).unwrap().is_table());
        // A table in use cannot be replaced by a leaf.
        let huge = Pmd::huge(Pfn::new(512), _PAGE_PRESENT).unwrap();
        assert_eq!(mm.set_pmd(BASE, huge), Err(Errno::EBUSY));
        {
            let g = mm.pte_offset_map_lock(BASE + PAGE_SIZE).unwrap();
            assert_eq!(g.replace(Pte::NONE, Pte::NONE), Err(Errno::EAGAIN));
            assert_eq!(g.get_and_clear(), pte);
            assert_eq!(g.get_at(BASE + PMD_SIZE), Err(Errno::EINVAL));
        }
        assert!(
            mm.set_pmd(BASE, huge).unwrap().is_table(),
            "the idle table is retired"
        );
        assert!(mm.pmdp_get_lockless(BASE).unwrap().is_trans_huge());
        assert_eq!(mm.pte_offset_map_lock(BASE).err(), Some(Errno::EBUSY));
        // Split it back into PTEs.
        mm.pmd_lock(BASE)
            .unwrap()
            .populate(|i| Pte::pfn_pte(Pfn::new(512 + i as u64), _PAGE_PRESENT))
            .unwrap();
        assert_eq!(
            mm.ptep_get_lockless(BASE + 3 * PAGE_SIZE).map(Pte::pfn),
            Some(Pfn::new(515))
        );
    }

    #[test]
    fn folios_map_with_counts_and_data() {
        let mut mm = Mm::default();
        mm.mmap_anon(BASE, 4 * PMD_SIZE, VmFlags::RW).unwrap();
        let mem = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(2048)).unwrap();
        let f = mem.alloc_folio(Order::HPAGE_PMD).unwrap();
        // Unaligned: crosses a PTE-table boundary.
        let addr = BASE + PMD_SIZE - 3 * PAGE_SIZE;
        mm.map_folio_ptes(addr, f, true).unwrap();
        assert_eq!(f.mapcount(), 512);
        assert_eq!(f.refcount(), 513);
        mm.write_user(&mem, addr + 4 * PAGE_SIZE, 99).unwrap();
        assert_eq!(mem.read(f.page_pfn(4).unwrap()), Ok(99));
        assert_eq!(mm.read_user(&mem, addr + 4 * PAGE_SIZE), Ok(99));
        assert_eq!(mm.map_folio_ptes(addr, f, true), Err(Errno::EEXIST));
        let g = mem.alloc_folio(Order::HPAGE_PMD).unwrap();
        assert_eq!(
            mm.map_folio_pmd(BASE + PMD_SIZE, g, false),
            Err(Errno::EEXIST)
        );
        mm.map_folio_pmd(BASE + 2 * PMD_SIZE, g, false).unwrap();
        assert_eq!(g.entire_mapcount(), 1);
        assert_eq!(
            mm.write_user(&mem, BASE + 2 * PMD_SIZE, 1),
            Err(Errno::EFAULT)
        );
        assert_eq!(mm.read_user(&mem, BASE + 2 * PMD_SIZE + PAGE_SIZE), Ok(0));
        assert_eq!(
            mm.map_folio_ptes(BASE + 4 * PMD_SIZE - PAGE_SIZE, g, true),
            Err(Errno::EFAULT)
        );
    }

    #[test]
    fn vma_address_follows_the_kernel() {
        let mut mm = Mm::default();
        let v = mm
            .mmap_anon(BASE, 16 * PAGE_SIZE, VmFlags::RW)
            .unwrap()
            .clone();
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
