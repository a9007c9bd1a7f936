//! Copying a VMA's page tables into a child at `fork`.
//!
//! Kernel: `mm/memory.c` (`copy_page_range()`, `copy_pte_range()`,
//! `copy_present_ptes()`, `copy_nonpresent_pte()`,
//! `try_restore_exclusive_pte()`), `mm/huge_memory.c` (`copy_huge_pmd()`,
//! `copy_huge_non_present_pmd()`) (main).
//!
//! | source entry | parent afterwards | child |
//! |---|---|---|
//! | present, private (COW) mapping | write-protected | the same, write-protected; one more map count and reference |
//! | present, shared mapping | unchanged | the same |
//! | zero page, huge zero page | unchanged | the same (no counts) |
//! | huge PMD | as a present PTE, for the whole folio | the same |
//! | device-private (PTE or PMD), COW mapping | made readable | readable; one more map count and reference |
//! | migration entry, COW mapping | made readable | the same (no counts: the migration owns the folio) |
//! | device-exclusive | restored to a present PTE first, then copied as present | as present |
//! | other swap entries | unchanged | the same |
//!
//! # Differences from the kernel
//!
//! No pinned-page copy (`folio_try_dup_anon_rmap_*()` never fails: nothing
//! pins), no soft-dirty or uffd-wp bits, no `PageAnonExclusive`.

use crate::leafops::Softleaf;
use crate::mm::{AnyFolio, frame_to_folio};
use crate::mm_types::{Mm, VmFlags, Vma};
use crate::pgtable::{_PAGE_DIRTY, _PAGE_PRESENT, _PAGE_RW, _PAGE_USER, PMD_SIZE, Pmd, Pte};
use crate::swapops::{MigrationKind, make_device_private_entry, make_migration_entry};
use devpriv_core::{Errno, PAGE_SIZE, PageFrame};
use devpriv_pagemap::SpaceReadGuard;

/// `pte` with write permission removed.
///
/// Kernel: `pte_wrprotect()` / `pmd_wrprotect()` (main).
const fn wrprotect(raw: u64) -> u64 {
    raw & !_PAGE_RW
}

impl Mm {
    /// Copies every entry of `src_vma` (a VMA of `src`) into this address
    /// space at the same addresses, applying fork's rules (see the module
    /// table). This address space must already hold the child's copy of
    /// the VMA.
    ///
    /// Kernel: `copy_page_range(dst_vma, src_vma)`, `mm/memory.c` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EFAULT`] if this address space has no VMA at `src_vma`'s
    /// range; [`Errno::EBUSY`] if a device-exclusive page is locked;
    /// [`Errno::EINVAL`] for an entry naming a page no folio backs (a
    /// broken invariant). The copy stops there; the child is then
    /// dropped by the caller.
    pub(crate) fn copy_page_range(&self, src: &Mm, src_vma: &Vma) -> Result<(), Errno> {
        let dst_vma = self.vma_lookup(src_vma.start()).ok_or(Errno::EFAULT)?;
        if dst_vma.end() < src_vma.end() {
            return Err(Errno::EFAULT);
        }
        let cow = src_vma.is_cow_mapping();
        let mut addr = src_vma.start();
        while addr < src_vma.end() {
            let block = addr & !(PMD_SIZE - 1);
            let next = (block + PMD_SIZE).min(src_vma.end());
            let Some(pmd) = src.pmdp_get_lockless(addr) else {
                addr = next;
                continue;
            };
            if !pmd.is_none() && !pmd.is_table() {
                if block >= src_vma.start() && block + PMD_SIZE <= src_vma.end() {
                    self.copy_huge_pmd(src, block, cow)?;
                    addr = next;
                    continue;
                }
                crate::huge_memory::split_huge_pmd(src, block)?;
            }
            self.copy_pte_range(src, &dst_vma, addr, next, cow)?;
            addr = next;
        }
        Ok(())
    }

    /// Kernel: `copy_huge_pmd()` / `copy_huge_non_present_pmd()` (with
    /// `pte_alloc_one()` + `pgtable_trans_huge_deposit()` for the child),
    /// `mm/huge_memory.c` (main).
    fn copy_huge_pmd(&self, src: &Mm, haddr: u64, cow: bool) -> Result<(), Errno> {
        let mem = src.memory();
        let guard = mem.space().read();
        let mode = src.paging();
        let g = src.pmd_lock(haddr)?;
        let pmd = g.get();
        let child = if pmd.is_trans_huge() {
            if !mem.sys().is_huge_zero_pfn(pmd.pfn()) {
                let (folio, _) =
                    frame_to_folio(mem.sys(), &guard, pmd.pfn().into()).ok_or(Errno::EINVAL)?;
                folio.add_rmap_pmd()?;
                folio.get();
            }
            if cow && pmd.is_write() {
                let ro = Pmd::from_raw(wrprotect(pmd.raw()));
                g.set(ro)?;
                ro
            } else {
                pmd
            }
        } else {
            let entry = Softleaf::from_pmd(pmd);
            let frame = entry.to_frame(mode);
            if entry.is_device_private() {
                let Some(PageFrame::DevicePrivate(off)) = frame else {
                    return Err(Errno::EINVAL);
                };
                let (folio, _) =
                    frame_to_folio(mem.sys(), &guard, off.into()).ok_or(Errno::EINVAL)?;
                folio.add_rmap_pmd()?;
                folio.get();
                if cow && entry.is_device_private_write() {
                    let ro = Pmd::from_swp_entry(make_device_private_entry(false, off, mode)?)?;
                    g.set(ro)?;
                    ro
                } else {
                    pmd
                }
            } else if entry.is_migration_write() && cow {
                let frame = frame.ok_or(Errno::EINVAL)?;
                let ro = Pmd::from_swp_entry(
                    make_migration_entry(MigrationKind::Read, frame, mode)?
                        .with_flags(entry.to_flags(mode), mode)?,
                )?;
                g.set(ro)?;
                ro
            } else {
                pmd
            }
        };
        drop(g);
        // The child's own deposit, for a later split or zap.
        let pgtable = self.pte_alloc_one();
        let g = match self.pmd_lock(haddr) {
            Ok(g) => g,
            Err(e) => {
                self.pte_free(pgtable);
                return Err(e);
            }
        };
        if let Err(e) = g.set(child) {
            drop(g);
            self.pte_free(pgtable);
            return Err(e);
        }
        g.deposit(pgtable);
        Ok(())
    }

    /// Kernel: `copy_pte_range()` → `copy_present_ptes()` /
    /// `copy_nonpresent_pte()`, `mm/memory.c` (main).
    fn copy_pte_range(
        &self,
        src: &Mm,
        dst_vma: &Vma,
        start: u64,
        end: u64,
        cow: bool,
    ) -> Result<(), Errno> {
        let mem = src.memory();
        let guard = mem.space().read();
        let Ok(g) = src.pte_offset_map_lock(start) else {
            return Ok(());
        };
        let mut addr = start;
        while addr < end {
            let pte = g.get_at(addr)?;
            let child = if pte.is_none() {
                None
            } else if pte.is_present() {
                let (parent, child) = copy_present_pte(src, &guard, pte, cow)?;
                if parent != pte {
                    g.set_at(addr, parent)?;
                }
                Some(child)
            } else {
                let (parent, child) = copy_nonpresent_pte(src, &guard, dst_vma, pte, cow)?;
                if parent != pte {
                    g.set_at(addr, parent)?;
                }
                Some(child)
            };
            if let Some(child) = child {
                self.set_pte(addr, child)?;
            }
            addr += PAGE_SIZE;
        }
        Ok(())
    }
}

/// The parent's and the child's PTE for a present `pte`, taking the
/// child's map count and reference.
///
/// Kernel: `copy_present_ptes()` (one PTE at a time), `mm/memory.c` (main).
fn copy_present_pte(
    src: &Mm,
    guard: &SpaceReadGuard<'_>,
    pte: Pte,
    cow: bool,
) -> Result<(Pte, Pte), Errno> {
    let sys = src.memory().sys();
    if !sys.is_zero_pfn(pte.pfn()) {
        let (folio, n) = frame_to_folio(sys, guard, pte.pfn().into()).ok_or(Errno::EINVAL)?;
        folio.add_rmap_ptes(n, 1)?;
        folio.get();
    }
    if cow && pte.is_write() {
        let ro = Pte::from_raw(wrprotect(pte.raw()));
        return Ok((ro, ro));
    }
    Ok((pte, pte))
}

/// The parent's and the child's PTE for a non-present `pte`.
///
/// Kernel: `copy_nonpresent_pte()`, `mm/memory.c` (7.0).
fn copy_nonpresent_pte(
    src: &Mm,
    guard: &SpaceReadGuard<'_>,
    dst_vma: &Vma,
    pte: Pte,
    cow: bool,
) -> Result<(Pte, Pte), Errno> {
    let mode = src.paging();
    let entry = Softleaf::from_pte(pte);
    if entry.is_device_private() {
        let Some(PageFrame::DevicePrivate(off)) = entry.to_frame(mode) else {
            return Err(Errno::EINVAL);
        };
        let (folio, n) =
            frame_to_folio(src.memory().sys(), guard, off.into()).ok_or(Errno::EINVAL)?;
        folio.add_rmap_ptes(n, 1)?;
        folio.get();
        if cow && entry.is_device_private_write() {
            let ro = Pte::from_swp_entry(make_device_private_entry(false, off, mode)?)?;
            return Ok((ro, ro));
        }
        return Ok((pte, pte));
    }
    if entry.is_migration_write() && cow {
        let frame = entry.to_frame(mode).ok_or(Errno::EINVAL)?;
        let ro = Pte::from_swp_entry(
            make_migration_entry(MigrationKind::Read, frame, mode)?
                .with_flags(entry.to_flags(mode), mode)?,
        )?;
        return Ok((ro, ro));
    }
    if entry.is_device_exclusive() {
        // try_restore_exclusive_pte(), then copy as present.
        let Some(PageFrame::Pfn(pfn)) = entry.to_frame(mode) else {
            return Err(Errno::EINVAL);
        };
        let sys = src.memory().sys();
        let (folio, n) = frame_to_folio(sys, guard, pfn.into()).ok_or(Errno::EINVAL)?;
        let AnyFolio::Sys(f) = folio else {
            return Err(Errno::EINVAL);
        };
        if !f.trylock() {
            return Err(Errno::EBUSY);
        }
        let mut prot = _PAGE_PRESENT | _PAGE_USER;
        if dst_vma.flags().contains(VmFlags::WRITE) && f.page_mapcount(n) == Some(1) {
            prot |= _PAGE_RW | _PAGE_DIRTY;
        }
        let _ = f.unlock();
        let restored = Pte::pfn_pte(pfn, prot)?;
        return copy_present_pte(src, guard, restored, cow);
    }
    Ok((pte, pte))
}
