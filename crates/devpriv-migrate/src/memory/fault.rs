//! The CPU page-fault path, as far as device-private memory needs it.
//!
//! Kernel: `mm/memory.c` (`handle_mm_fault()`, `handle_pte_fault()`,
//! `do_anonymous_page()`, `do_fault()`, `do_swap_page()`,
//! `remove_device_exclusive_entry()`, `do_wp_page()`, `wp_page_copy()`),
//! `mm/huge_memory.c` (`do_huge_pmd_anonymous_page()`,
//! `do_huge_pmd_wp_page()`, `do_huge_pmd_device_private()`, 7.0).
//!
//! A fault on a device-private PTE or PMD locks the page, takes a
//! reference and calls the owning pagemap's `migrate_to_ram` with a
//! [`VmFault`]; the driver migrates the data back with `migrate_vma_*`. A
//! fault on a migration entry means someone is migrating the page: the
//! kernel waits for the page lock and returns, so that the access faults
//! again; the model returns [`VmFaultResult::Retry`] at once.
//!
//! # Differences from the kernel
//!
//! - `VM_FAULT_*` becomes `Result<VmFaultResult, Errno>`: `Ok(Done)` is 0,
//!   `Ok(Retry)` is a wait-and-refault (or `VM_FAULT_RETRY`),
//!   [`Errno::EFAULT`] is `VM_FAULT_SIGSEGV`, [`Errno::ENOMEM`] is
//!   `VM_FAULT_OOM`, and a `migrate_to_ram` error is passed through
//!   (`VM_FAULT_SIGBUS`).
//! - No per-VMA locking and no swap. THPs are allocated at fault time
//!   only in `VM_HUGEPAGE` VMAs (the "madvise" policy). A write to a
//!   read-only page reuses it when the counts say it is exclusively
//!   mapped (no `PageAnonExclusive`), else copies it. With
//!   [`MmConfig::zero_page`] off a read fault on a hole maps a new zeroed
//!   page.
//!
//! [`MmConfig::zero_page`]: crate::MmConfig::zero_page
//! - `VmFault::ctx` carries a [`FaultContext`] (the address space and the
//!   VMA), which the driver reads with `vmf.context::<FaultContext>()`
//!   where the kernel's reads `vmf->vma`.

use crate::huge_memory::split_huge_pmd;
use crate::leafops::Softleaf;
use crate::mm_types::{Mm, VmFlags, Vma};
use crate::mmu_notifier::MmuNotifyEvent;
use crate::page_alloc::SysFolio;
use crate::pgtable::{
    _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_PRESENT, _PAGE_RW, _PAGE_USER, PMD_SIZE, Pmd, Pte,
};
use devpriv_core::{Errno, Order, PAGE_SIZE, PageFrame};
use devpriv_pagemap::{PageRef, VmFault, folio_get, folio_put};
use std::sync::Arc;

devpriv_core::flags! {
    /// Why the CPU faulted.
    ///
    /// Kernel: `enum fault_flag` (the `FAULT_FLAG_WRITE` bit),
    /// `include/linux/mm_types.h` (main).
    pub struct FaultFlags: u32 {
        /// A read access.
        ///
        /// Kernel: none (no `FAULT_FLAG_WRITE`).
        const READ = 0;
        /// A write access.
        ///
        /// Kernel: `FAULT_FLAG_WRITE` (main).
        const WRITE = 1;
    }
}

impl FaultFlags {
    /// `true` for a write access.
    ///
    /// Kernel: `vmf->flags & FAULT_FLAG_WRITE` (main).
    pub const fn is_write(self) -> bool {
        self.0 & 1 != 0
    }
}

/// What a fault that did not fail did.
///
/// Kernel: the non-error `vm_fault_t` values (main).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmFaultResult {
    /// The entry was fixed up (or already fine): the access can go ahead.
    ///
    /// Kernel: `0` (main).
    Done,
    /// The entry is being migrated, or its page is locked by someone else:
    /// try the access again later.
    ///
    /// Kernel: `migration_entry_wait()` / `softleaf_entry_wait_on_locked()`
    /// then `0` (the access refaults), or `VM_FAULT_RETRY` (7.0).
    Retry,
}

/// What the fault path hands a driver's `migrate_to_ram` through
/// [`VmFault::ctx`]: the faulting address space and VMA. A driver reads it
/// with [`VmFault::context`].
///
/// Kernel: `vmf->vma` (and through it `vma->vm_mm`, main).
///
/// ```
/// use devpriv_core::Errno;
/// use devpriv_migrate::FaultContext;
/// use devpriv_pagemap::VmFault;
///
/// // In a driver's `DevPagemapOps::migrate_to_ram`:
/// fn migrate_to_ram(vmf: &VmFault<'_>) -> Result<(), Errno> {
///     let ctx = vmf.context::<FaultContext>().ok_or(Errno::EINVAL)?;
///     let _range = (ctx.vma.start(), ctx.vma.end());
///     Ok(())
/// }
/// # let _ = migrate_to_ram;
/// ```
#[derive(Clone, Debug)]
pub struct FaultContext {
    /// The faulting address space (and through it, the machine's memory).
    ///
    /// Kernel: `vmf->vma->vm_mm` (main).
    pub mm: Arc<Mm>,
    /// The VMA the fault is in, as the fault path found it.
    ///
    /// Kernel: `vmf->vma` (main).
    pub vma: Vma,
}

/// Handles a CPU fault at `addr` in `mm`.
///
/// Kernel: `handle_mm_fault(vma, address, flags, regs)` →
/// `__handle_mm_fault()` → `handle_pte_fault()`, `mm/memory.c` (main).
///
/// | entry at `addr` | what happens |
/// |---|---|
/// | none PMD, `VM_HUGEPAGE` anon VMA | `do_huge_pmd_anonymous_page()`: the huge zero page for a read, a new PMD-sized folio for a write |
/// | none, anon VMA | `do_anonymous_page()`: map the zero page read-only for a read, a new zeroed order-0 page for a write |
/// | none, file or shmem VMA | `do_fault()`: the page-cache page (read-only, or writable for a shared write), or a private copy for a private write |
/// | present read-only, write | `do_wp_page()`: the zero page is replaced; a shared mapping or an exclusive anon page is made writable; anything else is copied |
/// | huge PMD read-only, write | `do_huge_pmd_wp_page()`: reuse an exclusive folio, else split and handle the page |
/// | present otherwise | nothing |
/// | device-private PTE | `do_swap_page()`: lock, get, `migrate_to_ram` |
/// | device-private PMD | `do_huge_pmd_device_private()` (same, `pmd = true`) |
/// | device-exclusive PTE | `remove_device_exclusive_entry()`: restore the PTE |
/// | migration entry (PTE or PMD) | [`VmFaultResult::Retry`] |
/// | anything else | [`Errno::EFAULT`] |
///
/// # Errors
///
/// - [`Errno::EFAULT`] (`VM_FAULT_SIGSEGV`): no VMA at `addr`, the VMA
///   does not allow the access, or an entry the model cannot handle (swap,
///   markers, hwpoison).
/// - [`Errno::ENOMEM`] (`VM_FAULT_OOM`): no system page for a hole.
/// - Whatever `migrate_to_ram` returns (`VM_FAULT_SIGBUS`).
///
/// # Examples
///
/// ```
/// use devpriv_core::{Errno, PAGE_SIZE, PageCount, Pfn};
/// use devpriv_migrate::{
///     FaultFlags, Memory, Mm, MmConfig, SystemMemory, VmFaultResult, VmFlags, handle_mm_fault,
/// };
/// use devpriv_pagemap::DevicePrivateSpace;
/// use std::sync::Arc;
///
/// let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(512))?;
/// let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
/// let mm = Mm::new(&mem, MmConfig::default());
/// let base = 0x7f00_0000_0000;
/// mm.mmap_write_lock().mmap_anon(base, 2 * PAGE_SIZE, VmFlags::RW)?;
/// // A store to a hole faults in a zeroed page.
/// assert_eq!(mm.write_user(base, 1), Err(Errno::EFAULT));
/// assert_eq!(handle_mm_fault(&mm, base, FaultFlags::WRITE), Ok(VmFaultResult::Done));
/// mm.write_user(base, 1)?;
/// // A load maps the shared zero page.
/// handle_mm_fault(&mm, base + PAGE_SIZE, FaultFlags::READ)?;
/// assert_eq!(mm.read_user(base + PAGE_SIZE), Ok(0));
/// // No VMA: SIGSEGV.
/// assert_eq!(handle_mm_fault(&mm, base + 2 * PAGE_SIZE, FaultFlags::READ), Err(Errno::EFAULT));
/// # Ok::<(), Errno>(())
/// ```
pub fn handle_mm_fault(mm: &Arc<Mm>, addr: u64, flags: FaultFlags) -> Result<VmFaultResult, Errno> {
    handle_fault(mm, addr, flags, 0)
}

/// How often one fault may start over after splitting a PMD.
const MAX_REFAULT: u32 = 4;

/// [`handle_mm_fault`], `depth` times restarted already.
fn handle_fault(
    mm: &Arc<Mm>,
    addr: u64,
    flags: FaultFlags,
    depth: u32,
) -> Result<VmFaultResult, Errno> {
    if depth > MAX_REFAULT {
        return Ok(VmFaultResult::Retry);
    }
    let addr = addr & !(PAGE_SIZE - 1);
    let vma = mm.vma_lookup(addr).ok_or(Errno::EFAULT)?;
    let need = if flags.is_write() {
        VmFlags::WRITE
    } else {
        VmFlags::READ
    };
    if !vma.flags().contains(need) {
        return Err(Errno::EFAULT);
    }
    let writable_vma = vma.flags().contains(VmFlags::WRITE);
    let pmd = mm.pmdp_get_lockless(addr).ok_or(Errno::EFAULT)?;
    // An idle PTE table counts as an empty PMD (the model keeps tables the
    // kernel would have freed on unmap).
    if thp_fault_eligible(&vma, addr)
        && (pmd.is_none() || pmd.is_table() && mm.pmd_lock(addr)?.table_is_empty())
        && let Some(r) = do_huge_pmd_anonymous_page(mm, &vma, addr, flags)
    {
        return r;
    }
    if !pmd.is_none() && !pmd.is_present() {
        let entry = Softleaf::from_pmd(pmd);
        if entry.is_device_private() {
            return do_huge_pmd_device_private(mm, vma, addr, pmd);
        }
        if entry.is_migration() {
            return Ok(VmFaultResult::Retry);
        }
        return Err(Errno::EFAULT);
    }
    if pmd.is_trans_huge() {
        if flags.is_write() && !pmd.is_write() {
            if do_huge_pmd_wp_page(mm, &vma, addr, pmd)? {
                return Ok(VmFaultResult::Done);
            }
            // Split into PTEs: fault again at PTE level.
            return handle_fault(mm, addr, flags, depth + 1);
        }
        return Ok(VmFaultResult::Done);
    }
    let pte = mm.ptep_get_lockless(addr).unwrap_or(Pte::NONE);
    if pte.is_none() {
        if vma.file().is_some() {
            return do_fault(mm, &vma, addr, flags);
        }
        if !flags.is_write() && mm.config().zero_page {
            return map_zero_page(mm, addr);
        }
        return do_anonymous_page(mm, addr, writable_vma);
    }
    if pte.is_present() {
        if flags.is_write() && !pte.is_write() {
            return do_wp_page(mm, &vma, addr, pte);
        }
        return Ok(VmFaultResult::Done);
    }
    let entry = Softleaf::from_pte(pte);
    if entry.is_device_private() {
        return do_swap_page_device_private(mm, vma, addr, pte);
    }
    if entry.is_device_exclusive() {
        return remove_device_exclusive_entry(mm, &vma, addr, pte);
    }
    if entry.is_migration() {
        return Ok(VmFaultResult::Retry);
    }
    Err(Errno::EFAULT)
}

/// `true` if a fault at `addr` may map a PMD-sized folio: anonymous,
/// `VM_HUGEPAGE` (the model's THP policy is "madvise"), the 2 MiB block
/// inside the VMA.
///
/// Kernel: `thp_vma_allowable_order(vma, vm_flags, TVA_PAGEFAULT,
/// PMD_ORDER)` with `enabled=madvise` (main).
fn thp_fault_eligible(vma: &Vma, addr: u64) -> bool {
    vma.is_anonymous()
        && vma.flags().contains(VmFlags::HUGEPAGE)
        && !vma
            .flags()
            .intersects(VmFlags::NOHUGEPAGE.union(VmFlags::MIXEDMAP))
        && vma.thp_suitable(addr)
}

/// A fault on an empty PMD of a THP-eligible VMA: the huge zero page for a
/// read, a new PMD-sized folio for a write. `None` falls back to the PTE
/// path (no PMD-sized folio is free).
///
/// Kernel: `do_huge_pmd_anonymous_page()`, `mm/huge_memory.c`
/// (`VM_FAULT_FALLBACK` is `None`) (main).
fn do_huge_pmd_anonymous_page(
    mm: &Mm,
    vma: &Vma,
    addr: u64,
    flags: FaultFlags,
) -> Option<Result<VmFaultResult, Errno>> {
    let haddr = addr & !(PMD_SIZE - 1);
    let sys = mm.memory().sys();
    if !flags.is_write() && mm.config().zero_page {
        let r = (|| {
            let entry = Pmd::huge(sys.huge_zero_pfn(), _PAGE_PRESENT | _PAGE_USER)?;
            // set_huge_zero_folio() deposits a table too.
            let pgtable = mm.pte_alloc_one();
            let g = match mm.pmd_lock(haddr) {
                Ok(g) => g,
                Err(e) => {
                    mm.pte_free(pgtable);
                    return Err(e);
                }
            };
            let cur = g.get();
            let r = if cur.is_none() || cur.is_table() && g.table_is_empty() {
                g.set(entry)
            } else {
                // Lost a race: the access refaults and sees the new entry.
                Err(Errno::EEXIST)
            };
            match r {
                Ok(()) => g.deposit(pgtable),
                Err(e) => {
                    drop(g);
                    mm.pte_free(pgtable);
                    if e != Errno::EEXIST {
                        return Err(e);
                    }
                }
            }
            Ok(VmFaultResult::Done)
        })();
        return Some(r);
    }
    let folio = sys.alloc_folio(Order::HPAGE_PMD).ok()?;
    let r = mm.map_folio_pmd(haddr, folio, vma.flags().contains(VmFlags::WRITE));
    let _ = folio.put();
    match r {
        Ok(()) => Some(Ok(VmFaultResult::Done)),
        // Someone populated the block first: fault at PTE level.
        Err(Errno::EEXIST | Errno::EBUSY) => None,
        Err(e) => Some(Err(e)),
    }
}

/// A write fault on a read-only huge PMD: reuse an exclusively mapped anon
/// folio (make the PMD writable) and return `true`; otherwise (the huge
/// zero page, a shared folio) split the PMD and return `false`, so the
/// write is handled per page.
///
/// Kernel: `do_huge_pmd_wp_page()`, `mm/huge_memory.c` (main).
fn do_huge_pmd_wp_page(mm: &Mm, vma: &Vma, addr: u64, orig: Pmd) -> Result<bool, Errno> {
    let haddr = addr & !(PMD_SIZE - 1);
    let sys = mm.memory().sys();
    let reuse = !sys.is_huge_zero_pfn(orig.pfn())
        && sys.pfn_folio(orig.pfn()).is_some_and(|f| {
            vma.flags().contains(VmFlags::SHARED)
                || f.mapping() != 0 && f.refcount() == 1 && f.mapcount() == 1
        });
    if reuse {
        let g = mm.pmd_lock(haddr)?;
        if g.get() == orig {
            g.set(Pmd::from_raw(orig.raw() | _PAGE_RW | _PAGE_DIRTY))?;
        }
        return Ok(true);
    }
    split_huge_pmd(mm, haddr)?;
    Ok(false)
}

/// A fault on an empty PTE of a VMA backed by a page cache: read the page
/// in; map it read-only for a read, writable for a write to a shared
/// mapping; for a write to a private mapping, map a private anon copy.
///
/// Kernel: `do_fault()` → `do_read_fault()` / `do_cow_fault()` /
/// `do_shared_fault()` (`filemap_fault()`, `finish_fault()`),
/// `mm/memory.c` (main).
///
/// # Differences from the kernel
///
/// A read fault maps the page read-only in a shared writable mapping too
/// (as with write-notify), so the first write faults again.
fn do_fault(mm: &Mm, vma: &Vma, addr: u64, flags: FaultFlags) -> Result<VmFaultResult, Errno> {
    let Some(file) = vma.file() else {
        return Err(Errno::EFAULT);
    };
    let page = file
        .get_folio(vma.linear_page_index(addr))
        .map_err(|e| if e == Errno::ENOMEM { e } else { Errno::EFAULT })?;
    let shared = vma.flags().contains(VmFlags::SHARED);
    if flags.is_write() && !shared {
        // do_cow_fault(): a private anon copy.
        let sys = mm.memory().sys();
        let new = sys.alloc_folio(Order::ZERO)?;
        sys.write(new.pfn(), sys.read(page.pfn())?)?;
        let r = mm.map_folio_ptes(addr, new, true);
        let _ = new.put();
        return refault_on_race(r);
    }
    refault_on_race(mm.map_file_pte(addr, page, flags.is_write() && shared))
}

/// `Ok(())` → done; a lost race (the entry is no longer none, or a leaf
/// PMD appeared) → retry.
fn refault_on_race(r: Result<(), Errno>) -> Result<VmFaultResult, Errno> {
    match r {
        Ok(()) => Ok(VmFaultResult::Done),
        Err(Errno::EEXIST | Errno::EBUSY) => Ok(VmFaultResult::Retry),
        Err(e) => Err(e),
    }
}

/// `true` if an anon folio is mapped only here and nobody else holds a
/// reference: a write can reuse it instead of copying.
///
/// Kernel: `wp_can_reuse_anon_folio()` (and, for large folios,
/// `__wp_can_reuse_large_anon_folio()`), `mm/memory.c` (main).
///
/// # Differences from the kernel
///
/// No `PageAnonExclusive`: exclusivity is read off the counts.
fn wp_can_reuse_anon_folio(folio: SysFolio<'_>) -> bool {
    if folio.mapping() == 0 {
        return false;
    }
    if !folio.is_large() {
        return folio.refcount() == 1 && folio.mapcount() == 1;
    }
    let nr = folio.nr_pages().get();
    folio.refcount() == folio.mapcount()
        && folio.entire_mapcount() == 0
        && (0..nr).all(|n| folio.page_mapcount(n).is_some_and(|m| m <= 1))
}

/// A write fault on a present, read-only PTE of a writable VMA: replace
/// the zero page; make a shared mapping's page writable; reuse an
/// exclusively mapped anon page; otherwise copy (COW).
///
/// Kernel: `do_wp_page()` → `wp_page_shared()` / `wp_page_reuse()` /
/// `wp_page_copy()`, `mm/memory.c` (main).
fn do_wp_page(mm: &Mm, vma: &Vma, addr: u64, orig: Pte) -> Result<VmFaultResult, Errno> {
    let sys = mm.memory().sys();
    if sys.is_zero_pfn(orig.pfn()) {
        return wp_zero_page(mm, addr, orig);
    }
    let folio = sys.pfn_folio(orig.pfn()).ok_or(Errno::EFAULT)?;
    if vma.flags().contains(VmFlags::SHARED) || wp_can_reuse_anon_folio(folio) {
        let g = mm.pte_offset_map_lock(addr)?;
        // Lost a race: the access refaults and sees the new entry.
        let _ = g.replace(orig, Pte::from_raw(orig.raw() | _PAGE_RW | _PAGE_DIRTY));
        return Ok(VmFaultResult::Done);
    }
    wp_page_copy(mm, vma, addr, orig, folio)
}

/// Copies the page `orig` maps into a new anon page and maps that one
/// writable in its place, dropping the old mapping.
///
/// Kernel: `wp_page_copy()`, `mm/memory.c` (main).
fn wp_page_copy(
    mm: &Mm,
    vma: &Vma,
    addr: u64,
    orig: Pte,
    old: SysFolio<'_>,
) -> Result<VmFaultResult, Errno> {
    let sys = mm.memory().sys();
    let new = sys.alloc_folio(Order::ZERO)?;
    let r = (|| {
        sys.write(new.pfn(), sys.read(orig.pfn())?)?;
        let entry = Pte::pfn_pte(
            new.pfn(),
            _PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED | _PAGE_RW | _PAGE_DIRTY,
        )?;
        let n = orig
            .pfn()
            .checked_offset_from(old.pfn())
            .ok_or(Errno::EINVAL)?
            .get();
        {
            let g = mm.pte_offset_map_lock(addr)?;
            if g.get() != orig {
                return Ok(VmFaultResult::Done);
            }
            mm.set_anon(vma, addr, new);
            new.add_rmap_ptes(0, 1)?;
            new.get_many(1);
            g.set(entry);
        }
        old.remove_rmap_ptes(n, 1)?;
        let _ = old.put();
        Ok(VmFaultResult::Done)
    })();
    // Drop the allocation's reference (the mapping holds its own).
    let _ = new.put();
    r
}

/// A fault on a device-exclusive entry: the device loses its exclusive
/// access and the original PTE comes back (writable if the VMA is and the
/// page is exclusively mapped); the access then refaults.
///
/// Kernel: `do_swap_page()` → `remove_device_exclusive_entry()` →
/// `restore_exclusive_pte()`, `mm/memory.c` (7.0).
///
/// Fires `MMU_NOTIFY_EXCLUSIVE` first, so the device drops its atomic
/// mapping.
fn remove_device_exclusive_entry(
    mm: &Mm,
    vma: &Vma,
    addr: u64,
    orig: Pte,
) -> Result<VmFaultResult, Errno> {
    let Some(PageFrame::Pfn(pfn)) = Softleaf::from_pte(orig).to_frame(mm.paging()) else {
        return Err(Errno::EFAULT);
    };
    let sys = mm.memory().sys();
    let Some(folio) = sys.pfn_folio(pfn) else {
        return Ok(VmFaultResult::Done);
    };
    if !folio.try_get() {
        return Ok(VmFaultResult::Done);
    }
    if !folio.trylock() {
        let _ = folio.put();
        return Ok(VmFaultResult::Retry);
    }
    mm.mmu_notifier_invalidate(addr, addr + PAGE_SIZE, MmuNotifyEvent::Exclusive, None);
    let r = (|| {
        let g = mm.pte_offset_map_lock(addr)?;
        if g.get() != orig {
            return Ok(());
        }
        let mut prot = _PAGE_PRESENT | _PAGE_USER;
        let n = pfn.checked_offset_from(folio.pfn()).map_or(0, |d| d.get());
        // can_change_pte_writable(): an exclusively mapped anon page.
        if vma.flags().contains(VmFlags::WRITE) && folio.page_mapcount(n) == Some(1) {
            prot |= _PAGE_RW | _PAGE_DIRTY;
        }
        g.set(Pte::pfn_pte(pfn, prot)?);
        Ok(())
    })();
    let _ = folio.unlock();
    let _ = folio.put();
    r.map(|()| VmFaultResult::Done)
}

/// Kernel: `do_anonymous_page()`, `mm/memory.c` (its write branch; the read
/// branch is `map_zero_page`, main).
fn do_anonymous_page(mm: &Mm, addr: u64, writable: bool) -> Result<VmFaultResult, Errno> {
    let folio = mm.memory().sys().alloc_folio(Order::ZERO)?;
    let r = mm.map_folio_ptes(addr, folio, writable);
    // The mapping took its own reference; drop the allocation's.
    let _ = folio.put();
    match r {
        Ok(()) => Ok(VmFaultResult::Done),
        // Someone mapped it first, or a leaf PMD appeared: refault.
        Err(Errno::EEXIST | Errno::EBUSY) => Ok(VmFaultResult::Retry),
        Err(e) => Err(e),
    }
}

/// The zero-page branch of `do_anonymous_page()`: a special read-only
/// PTE, no reference and no rmap.
///
/// Kernel: `do_anonymous_page()` (`!(vmf->flags & FAULT_FLAG_WRITE) &&
/// !mm_forbids_zeropage()`), `mm/memory.c` (main).
fn map_zero_page(mm: &Mm, addr: u64) -> Result<VmFaultResult, Errno> {
    let entry = Pte::pfn_pte(mm.memory().sys().zero_pfn(), _PAGE_PRESENT | _PAGE_USER)?;
    let g = match mm.pte_alloc_map_lock(addr) {
        Ok(g) => g,
        Err(Errno::EBUSY) => return Ok(VmFaultResult::Retry),
        Err(e) => return Err(e),
    };
    // Someone mapped it first: the access sees their entry.
    let _ = g.replace(Pte::NONE, entry);
    Ok(VmFaultResult::Done)
}

/// A write fault on the zero page: map a new zeroed, writable page in its
/// place.
///
/// Kernel: `do_wp_page()` → `wp_page_copy()` (`is_zero_pfn()` case),
/// `mm/memory.c` (main).
fn wp_zero_page(mm: &Mm, addr: u64, orig: Pte) -> Result<VmFaultResult, Errno> {
    let folio = mm.memory().sys().alloc_folio(Order::ZERO)?;
    let r = (|| {
        let g = mm.pte_offset_map_lock(addr)?;
        if g.get() != orig {
            return Ok(false);
        }
        g.set(Pte::NONE);
        drop(g);
        mm.map_folio_ptes(addr, folio, true)?;
        Ok(true)
    })();
    let _ = folio.put();
    match r {
        Ok(_) => Ok(VmFaultResult::Done),
        Err(Errno::EEXIST | Errno::EBUSY) => Ok(VmFaultResult::Retry),
        Err(e) => Err(e),
    }
}

/// Calls the page's pagemap `migrate_to_ram` with the page locked and
/// referenced, then unlocks and drops the folio that holds the page
/// afterwards (a split during migration may have changed it).
fn call_migrate_to_ram(
    mm: &Arc<Mm>,
    vma: Vma,
    page: PageRef<'_>,
    addr: u64,
    pmd: bool,
) -> Result<VmFaultResult, Errno> {
    let pgmap = page.pgmap().ok_or(Errno::EFAULT)?;
    let ops = Arc::clone(pgmap.ops());
    let ctx = FaultContext {
        mm: Arc::clone(mm),
        vma,
    };
    let vmf = VmFault {
        page,
        address: addr,
        pmd,
        ctx: Some(&ctx),
    };
    let ret = ops.migrate_to_ram(&vmf);
    let folio = page.folio();
    folio.unlock();
    folio_put(folio);
    ret.map(|()| VmFaultResult::Done)
}

/// The device-private branch of `do_swap_page()`: re-check the PTE under
/// its lock, `trylock_page()`, get, drop the PTE lock, `migrate_to_ram`,
/// unlock, put. A contended page lock means someone else is migrating it:
/// retry.
///
/// Kernel: `do_swap_page()`, `mm/memory.c` (the
/// `softleaf_is_device_private()` case, 7.0).
fn do_swap_page_device_private(
    mm: &Arc<Mm>,
    vma: Vma,
    addr: u64,
    orig: Pte,
) -> Result<VmFaultResult, Errno> {
    let Some(PageFrame::DevicePrivate(off)) = Softleaf::from_pte(orig).to_frame(mm.paging()) else {
        return Err(Errno::EFAULT);
    };
    let guard = mm.memory().space().read();
    let page = guard
        .device_private_offset_to_page(off)
        .ok_or(Errno::EFAULT)?;
    {
        let Ok(g) = mm.pte_offset_map_lock(addr) else {
            return Ok(VmFaultResult::Retry);
        };
        if g.get() != orig {
            return Ok(VmFaultResult::Done);
        }
        let folio = page.folio();
        if !folio.trylock() {
            return Ok(VmFaultResult::Retry);
        }
        folio_get(folio);
    }
    call_migrate_to_ram(mm, vma, page, addr, false)
}

/// The device-private PMD fault: as [`do_swap_page_device_private`] at PMD
/// level, `vmf->page` the folio's head, `vmf->pte == NULL`.
///
/// Kernel: `do_huge_pmd_device_private()`, `mm/huge_memory.c` (7.0).
fn do_huge_pmd_device_private(
    mm: &Arc<Mm>,
    vma: Vma,
    addr: u64,
    orig: Pmd,
) -> Result<VmFaultResult, Errno> {
    let Some(PageFrame::DevicePrivate(off)) = Softleaf::from_pmd(orig).to_frame(mm.paging()) else {
        return Err(Errno::EFAULT);
    };
    let guard = mm.memory().space().read();
    let page = guard
        .device_private_offset_to_page(off)
        .ok_or(Errno::EFAULT)?;
    {
        let g = mm.pmd_lock(addr)?;
        if g.get() != orig {
            return Ok(VmFaultResult::Done);
        }
        let folio = page.folio();
        if !folio.trylock() {
            return Ok(VmFaultResult::Retry);
        }
        folio_get(folio);
    }
    call_migrate_to_ram(mm, vma, page, addr, true)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::memory_model::Memory;
    use crate::mm_types::MmConfig;
    use crate::page_alloc::SystemMemory;
    use crate::pgtable::PMD_SIZE;
    use devpriv_core::{PageCount, Pfn};
    use devpriv_pagemap::DevicePrivateSpace;

    const BASE: u64 = 0x7f00_0000_0000;

    #[test]
    fn holes_fault_in_zeroed_pages_and_bad_accesses_fail() {
        let sys = Arc::new(SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(512)).unwrap());
        let mem = Memory::new(sys, Arc::new(DevicePrivateSpace::new()));
        let mm = Mm::new(&mem, MmConfig::default());
        {
            let mut w = mm.mmap_write_lock();
            w.mmap_anon(BASE, PMD_SIZE, VmFlags::RW).unwrap();
            w.mmap_anon(BASE + PMD_SIZE, PMD_SIZE, VmFlags::READ)
                .unwrap();
        }
        assert_eq!(
            handle_mm_fault(&mm, BASE, FaultFlags::WRITE),
            Ok(VmFaultResult::Done)
        );
        assert_eq!(mm.read_user(BASE), Ok(0));
        mm.write_user(BASE, 5).unwrap();
        assert_eq!(
            handle_mm_fault(&mm, BASE + PMD_SIZE, FaultFlags::WRITE),
            Err(Errno::EFAULT)
        );
        assert_eq!(
            handle_mm_fault(&mm, BASE + 2 * PMD_SIZE, FaultFlags::READ),
            Err(Errno::EFAULT)
        );
        assert_eq!(mem.sys().nr_free(), 511);
    }
}
