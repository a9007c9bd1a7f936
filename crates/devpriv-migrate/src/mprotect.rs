//! `mprotect()`: changing the protection of a range, and what that does
//! to the entries already in the page tables.
//!
//! Kernel: `mm/mprotect.c` (`do_mprotect_pkey()`, `mprotect_fixup()`,
//! `change_protection()`, `change_pte_range()`, `change_softleaf_pte()`),
//! `mm/huge_memory.c` (`change_huge_pmd()`,
//! `change_non_present_huge_pmd()`) (7.0).
//!
//! | entry | what `change_protection()` does |
//! |---|---|
//! | present PTE or huge PMD, new protection without write | write-protected |
//! | present, new protection with write | made writable only for an exclusively mapped order-0 anon page of a private mapping (`MM_CP_TRY_CHANGE_WRITABLE`); otherwise left read-only for a later write fault |
//! | writable device-private entry (PTE or PMD) | made readable, **whatever the new protection** |
//! | writable migration entry (PTE or PMD) | made readable (read-exclusive for anon) |
//! | device-exclusive, zero page, none | unchanged |
//!
//! # Differences from the kernel
//!
//! A `PROT_NONE` range keeps its present PTEs (less write): accesses are
//! refused by the VMA check of the fault path and of
//! [`hmm_range_fault`](crate::hmm_range_fault), where the kernel also
//! installs protnone PTEs. No pkeys, no `VM_MAY*` checks (`EACCES`), no
//! MMU notifier, no NUMA hinting.

use crate::leafops::Softleaf;
use crate::mm_types::{Mm, MmapWriteGuard, VmFlags, Vma};
use crate::mmap::user_range;
use crate::mmu_notifier::MmuNotifyEvent;
use crate::pgtable::{_PAGE_DIRTY, _PAGE_RW, PMD_SIZE, Pmd, Pte};
use crate::swapops::{MigrationKind, make_device_private_entry, make_migration_entry};
use devpriv_core::{Errno, PAGE_SIZE, PageFrame};

impl MmapWriteGuard<'_> {
    /// Sets the protection of `[start, start + len)` to `prot` (any of
    /// `READ`, `WRITE`, `EXEC`), splitting VMAs at the ends and merging
    /// neighbours that end up alike, then changes the entries already
    /// there (see the module table).
    ///
    /// Kernel: `mprotect(start, len, prot)` → `do_mprotect_pkey()` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `start` is not page-aligned, `len` is zero or
    /// the range passes `TASK_SIZE` (`len` is rounded up to pages), or
    /// `prot` holds other flags; [`Errno::ENOMEM`] if part of the range is
    /// not mapped. Nothing changes on error.
    ///
    /// # Examples
    ///
    /// ```
    /// # use devpriv_core::{Errno, PAGE_SIZE, PageCount, Pfn};
    /// # use devpriv_migrate::{FaultFlags, Memory, Mm, MmConfig, SystemMemory, VmFlags, handle_mm_fault};
    /// # use devpriv_pagemap::DevicePrivateSpace;
    /// # use std::sync::Arc;
    /// # let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(512))?;
    /// # let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
    /// # let mm = Mm::new(&mem, MmConfig::default());
    /// let base = 0x7f00_0000_0000;
    /// mm.mmap_write_lock().mmap_anon(base, 3 * PAGE_SIZE, VmFlags::RW)?;
    /// handle_mm_fault(&mm, base + PAGE_SIZE, FaultFlags::WRITE)?;
    /// mm.mmap_write_lock().mprotect(base + PAGE_SIZE, PAGE_SIZE, VmFlags::READ)?;
    /// assert_eq!(mm.vmas().len(), 3, "split around the middle page");
    /// assert_eq!(mm.write_user(base + PAGE_SIZE, 1), Err(Errno::EFAULT));
    /// assert_eq!(handle_mm_fault(&mm, base + PAGE_SIZE, FaultFlags::WRITE), Err(Errno::EFAULT));
    /// // Back to read-write: the VMAs merge and the page is writable again.
    /// mm.mmap_write_lock().mprotect(base, 3 * PAGE_SIZE, VmFlags::RW)?;
    /// assert_eq!(mm.vmas().len(), 1);
    /// mm.write_user(base + PAGE_SIZE, 1)?;
    /// # Ok::<(), Errno>(())
    /// ```
    pub fn mprotect(&mut self, start: u64, len: u64, prot: VmFlags) -> Result<(), Errno> {
        let end = user_range(start, len.next_multiple_of(PAGE_SIZE))?;
        if !VmFlags::ACCESS.contains(prot) {
            return Err(Errno::EINVAL);
        }
        if !covered(self, start, end) {
            return Err(Errno::ENOMEM);
        }
        split_leaf_pmd_at(self, start)?;
        split_leaf_pmd_at(self, end)?;
        self.split_at(start, end);
        let vmas: Vec<Vma> = self
            .vmas()
            .iter()
            .map(|v| {
                if v.start >= start && v.end <= end {
                    Vma {
                        flags: v.flags.without(VmFlags::ACCESS).union(prot),
                        ..v.clone()
                    }
                } else {
                    v.clone()
                }
            })
            .collect();
        self.set_vmas(vmas.clone());
        self.mmu_notifier_invalidate(start, end, MmuNotifyEvent::ProtectionVma, None);
        for v in vmas.iter().filter(|v| v.start >= start && v.end <= end) {
            change_protection(self, v)?;
        }
        self.merge_all();
        Ok(())
    }
}

/// `true` if VMAs cover `[start, end)` without a hole.
pub(crate) fn covered(mm: &Mm, start: u64, end: u64) -> bool {
    let mut a = start;
    while a < end {
        match mm.vma_lookup(a) {
            Some(v) => a = v.end(),
            None => return false,
        }
    }
    true
}

/// Splits the leaf PMD covering `addr` if `addr` is inside its block (a
/// VMA boundary is about to fall there).
///
/// Kernel: `vma_adjust_trans_huge()` / `split_huge_pmd_if_needed()` (main).
pub(crate) fn split_leaf_pmd_at(mm: &Mm, addr: u64) -> Result<(), Errno> {
    if addr.is_multiple_of(PMD_SIZE) {
        return Ok(());
    }
    match mm.pmdp_get_lockless(addr) {
        Some(p) if !p.is_none() && !p.is_table() => {
            crate::huge_memory::split_huge_pmd(mm, addr & !(PMD_SIZE - 1))
        }
        _ => Ok(()),
    }
}

/// Applies `vma`'s (new) protection to its entries.
///
/// Kernel: `change_protection()` → `change_pmd_range()` →
/// `change_huge_pmd()` / `change_pte_range()` (main).
fn change_protection(mm: &Mm, vma: &Vma) -> Result<(), Errno> {
    let write = vma.flags.contains(VmFlags::WRITE);
    let mut addr = vma.start;
    while addr < vma.end {
        let next = ((addr & !(PMD_SIZE - 1)) + PMD_SIZE).min(vma.end);
        match mm.pmdp_get_lockless(addr) {
            Some(p) if p.is_none() => {}
            Some(p) if p.is_table() => change_pte_range(mm, vma, addr, next, write)?,
            Some(_) => change_huge_pmd(mm, addr, write)?,
            None => {}
        }
        addr = next;
    }
    Ok(())
}

/// Kernel: `change_huge_pmd()` / `change_non_present_huge_pmd()`,
/// `mm/huge_memory.c` (main).
fn change_huge_pmd(mm: &Mm, addr: u64, write: bool) -> Result<(), Errno> {
    let g = mm.pmd_lock(addr)?;
    let pmd = g.get();
    let new = if pmd.is_trans_huge() {
        if write {
            return Ok(());
        }
        Pmd::from_raw(pmd.raw() & !_PAGE_RW)
    } else if pmd.is_none() || pmd.is_table() {
        return Ok(());
    } else {
        let entry = Softleaf::from_pmd(pmd);
        match readable_entry(entry, mm, true)? {
            Some(e) => Pmd::from_swp_entry(e)?,
            None => return Ok(()),
        }
    };
    g.set(new)
}

/// The read-only version of a writable device-private or migration entry;
/// `None` for any other entry.
///
/// Kernel: the first two branches of `change_softleaf_pte()` /
/// `change_non_present_huge_pmd()` (7.0).
fn readable_entry(entry: Softleaf, mm: &Mm, anon: bool) -> Result<Option<Softleaf>, Errno> {
    let mode = mm.paging();
    if entry.is_device_private_write() {
        let Some(PageFrame::DevicePrivate(off)) = entry.to_frame(mode) else {
            return Err(Errno::EINVAL);
        };
        return Ok(Some(make_device_private_entry(false, off, mode)?));
    }
    if entry.is_migration_write() {
        let frame = entry.to_frame(mode).ok_or(Errno::EINVAL)?;
        // A protection check is difficult, so the kernel just drops write.
        let kind = if anon {
            MigrationKind::ReadExclusive
        } else {
            MigrationKind::Read
        };
        let e = make_migration_entry(kind, frame, mode)?.with_flags(entry.to_flags(mode), mode)?;
        return Ok(Some(e));
    }
    Ok(None)
}

/// Kernel: `change_pte_range()` (with `change_softleaf_pte()` for
/// non-present entries), `mm/mprotect.c` (7.0).
fn change_pte_range(mm: &Mm, vma: &Vma, start: u64, end: u64, write: bool) -> Result<(), Errno> {
    let sys = mm.memory().sys();
    let g = mm.pte_offset_map_lock(start)?;
    let mut addr = start;
    while addr < end {
        let pte = g.get_at(addr)?;
        addr += PAGE_SIZE;
        if pte.is_none() {
            continue;
        }
        let new = if pte.is_present() {
            if !write {
                Pte::from_raw(pte.raw() & !_PAGE_RW)
            } else if !pte.is_write()
                && vma.is_cow_mapping()
                && sys.pfn_folio(pte.pfn()).is_some_and(|f| {
                    f.mapping() != 0 && !f.is_large() && f.refcount() == 1 && f.mapcount() == 1
                })
            {
                // can_change_pte_writable() on an exclusive anon page.
                Pte::from_raw(pte.raw() | _PAGE_RW | _PAGE_DIRTY)
            } else {
                continue;
            }
        } else {
            let entry = Softleaf::from_pte(pte);
            let anon = entry
                .to_frame(mm.paging())
                .and_then(|f| match f {
                    PageFrame::Pfn(p) => sys.pfn_folio(p).map(|f| f.mapping() != 0),
                    PageFrame::DevicePrivate(_) => Some(true),
                })
                .unwrap_or(true);
            match readable_entry(entry, mm, anon)? {
                Some(e) => Pte::from_swp_entry(e)?,
                None => continue,
            }
        };
        g.set_at(addr - PAGE_SIZE, new)?;
    }
    Ok(())
}
