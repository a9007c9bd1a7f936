//! The CPU page-fault path, as far as device-private memory needs it.
//!
//! Kernel: `mm/memory.c` (`handle_mm_fault()`, `handle_pte_fault()`,
//! `do_anonymous_page()`, `do_swap_page()`, `do_wp_page()`),
//! `mm/huge_memory.c` (`do_huge_pmd_device_private()`, 7.0).
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
//! - No per-VMA locking, no THP allocation at fault time, no swap, no
//!   COW of shared pages: a write fault on a read-only PTE or PMD of a
//!   writable VMA just makes it writable (`do_wp_page()` reusing an
//!   exclusive anon page), except on the zero page, which is replaced by a
//!   new zeroed page (`wp_page_copy()`). With [`MmConfig::zero_page`] off a
//!   read fault on a hole maps a new zeroed page too.
//!
//! [`MmConfig::zero_page`]: crate::MmConfig::zero_page
//! - `VmFault::ctx` carries a [`FaultContext`] (the address space and the
//!   VMA), which the driver reads with `vmf.context::<FaultContext>()`
//!   where the kernel's reads `vmf->vma`.

use crate::leafops::Softleaf;
use crate::mm_types::{Mm, VmFlags, Vma};
use crate::pgtable::{_PAGE_DIRTY, _PAGE_PRESENT, _PAGE_RW, _PAGE_USER, Pmd, Pte};
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
/// | none | `do_anonymous_page()`: map the zero page read-only for a read, a new zeroed order-0 page for a write |
/// | present zero page, write | `wp_page_copy()`: a new zeroed page replaces it |
/// | present, or huge PMD | nothing, or make it writable for a write |
/// | device-private PTE | `do_swap_page()`: lock, get, `migrate_to_ram` |
/// | device-private PMD | `do_huge_pmd_device_private()` (same, `pmd = true`) |
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
            let g = mm.pmd_lock(addr)?;
            let cur = g.get();
            if cur == pmd {
                g.set(Pmd::from_raw(cur.raw() | _PAGE_RW | _PAGE_DIRTY))?;
            }
        }
        return Ok(VmFaultResult::Done);
    }
    let pte = mm.ptep_get_lockless(addr).unwrap_or(Pte::NONE);
    if pte.is_none() {
        if !flags.is_write() && mm.config().zero_page {
            return map_zero_page(mm, addr);
        }
        return do_anonymous_page(mm, addr, writable_vma);
    }
    if pte.is_present() && flags.is_write() && mm.memory().sys().is_zero_pfn(pte.pfn()) {
        return wp_zero_page(mm, addr, pte);
    }
    if pte.is_present() {
        if flags.is_write() && !pte.is_write() {
            let g = mm.pte_offset_map_lock(addr)?;
            // Lost a race: the access refaults and sees the new entry.
            let _ = g.replace(pte, Pte::from_raw(pte.raw() | _PAGE_RW | _PAGE_DIRTY));
        }
        return Ok(VmFaultResult::Done);
    }
    let entry = Softleaf::from_pte(pte);
    if entry.is_device_private() {
        return do_swap_page_device_private(mm, vma, addr, pte);
    }
    if entry.is_migration() {
        return Ok(VmFaultResult::Retry);
    }
    Err(Errno::EFAULT)
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
