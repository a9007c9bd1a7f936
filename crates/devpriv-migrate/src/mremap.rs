//! `mremap()`: moving (and resizing) a mapping together with its page-table
//! entries.
//!
//! Kernel: `mm/mremap.c` (`do_mremap()`, `move_vma()`,
//! `move_page_tables()`, `move_ptes()`), `mm/huge_memory.c`
//! (`move_huge_pmd()`) (main).
//!
//! Entries move as they are, whatever they are: present pages, the zero
//! page, device-private and device-exclusive entries, migration entries.
//! Map counts and references do not change, and a moved anon folio is
//! still found by the rmap: the new VMA keeps the old one's `anon_vma`
//! and page offset. A leaf PMD moves whole when its 2 MiB block moves to a
//! PMD-aligned address; otherwise it is split first and its PTEs move one
//! by one.
//!
//! # Differences from the kernel
//!
//! The caller chooses the destination (the model has no address-space
//! allocator): `new_addr` is where the mapping ends up. No `VM_LOCKED`,
//! `VM_ACCOUNT`, uffd or MMU notifier handling.

use crate::mm_types::{MmapWriteGuard, VmFlags, Vma};
use crate::mmap::user_range;
use crate::mmu_notifier::MmuNotifyEvent;
use crate::mprotect::split_leaf_pmd_at;
use crate::pgtable::{PMD_SIZE, Pte};
use devpriv_core::{Errno, PAGE_SHIFT, PAGE_SIZE};

devpriv_core::flags! {
    /// `mremap()` flags.
    ///
    /// Kernel: `MREMAP_*`, `include/uapi/linux/mman.h` (main).
    pub struct MremapFlags: u32 {
        /// Kernel: `MREMAP_MAYMOVE` (main).
        const MAYMOVE = 1;
        /// Kernel: `MREMAP_FIXED` (main).
        const FIXED = 2;
        /// Kernel: `MREMAP_DONTUNMAP` (main).
        const DONTUNMAP = 4;
    }
}

impl MmapWriteGuard<'_> {
    /// Resizes the mapping at `[old, old + old_len)` to `new_len` bytes at
    /// `new_addr`, moving its entries if `new_addr` differs from `old`.
    /// Returns `new_addr`.
    ///
    /// - `new_addr == old`: shrink (unmap the tail) or grow in place (the
    ///   pages after it must be free).
    /// - Otherwise (`MREMAP_MAYMOVE` needed): anything at the destination
    ///   is unmapped first (the caller found it free, or asked for
    ///   `MREMAP_FIXED`), a new VMA with the old one's flags, `anon_vma`,
    ///   page cache and page offset is made there, the entries of the
    ///   first `min(old_len, new_len)` bytes move, and the old range is
    ///   unmapped, or with `MREMAP_DONTUNMAP` left mapped, empty, with a
    ///   new `anon_vma`.
    ///
    /// Kernel: `mremap(old, old_len, new_len, flags, new_addr)` →
    /// `do_mremap()` → `mremap_to()` / `move_vma()` / `vma_expand()` (main).
    ///
    /// # Errors
    ///
    /// - [`Errno::EINVAL`]: `old` or `new_addr` not page-aligned, a length
    ///   zero (lengths are rounded up to pages) or past `TASK_SIZE`, unknown
    ///   flags, a move without `MREMAP_MAYMOVE`, `MREMAP_FIXED` or
    ///   `MREMAP_DONTUNMAP` without `MREMAP_MAYMOVE`, `MREMAP_DONTUNMAP`
    ///   with different lengths or on a shared mapping, overlapping old and
    ///   new ranges.
    /// - [`Errno::EFAULT`]: the old range is not inside one VMA.
    /// - [`Errno::ENOMEM`]: growing in place over another mapping.
    ///
    /// Nothing changes on error.
    pub fn mremap(
        &mut self,
        old: u64,
        old_len: u64,
        new_len: u64,
        flags: MremapFlags,
        new_addr: u64,
    ) -> Result<u64, Errno> {
        let old_len = old_len.next_multiple_of(PAGE_SIZE);
        let new_len = new_len.next_multiple_of(PAGE_SIZE);
        let old_end = user_range(old, old_len)?;
        let new_end = user_range(new_addr, new_len)?;
        let maymove = flags.contains(MremapFlags::MAYMOVE);
        let dontunmap = flags.contains(MremapFlags::DONTUNMAP);
        if (flags.contains(MremapFlags::FIXED) || dontunmap) && !maymove {
            return Err(Errno::EINVAL);
        }
        let vma = self.vma_lookup(old).ok_or(Errno::EFAULT)?;
        if old_end > vma.end {
            return Err(Errno::EFAULT);
        }
        if dontunmap && (old_len != new_len || vma.flags.contains(VmFlags::SHARED)) {
            return Err(Errno::EINVAL);
        }
        if new_addr == old && !dontunmap {
            if new_len <= old_len {
                if new_len < old_len {
                    self.munmap(old + new_len, old_len - new_len)?;
                }
                return Ok(old);
            }
            if old_end != vma.end
                || self
                    .vmas()
                    .iter()
                    .any(|v| v.start < new_end && old_end < v.end)
            {
                return Err(Errno::ENOMEM);
            }
            self.alloc_page_tables(old_end, new_end);
            let vmas = self
                .vmas()
                .iter()
                .map(|v| {
                    if v.start == vma.start {
                        Vma {
                            end: new_end,
                            ..v.clone()
                        }
                    } else {
                        v.clone()
                    }
                })
                .collect();
            self.set_vmas(vmas);
            return Ok(old);
        }
        if !maymove || (new_addr < old_end && old < new_end) {
            return Err(Errno::EINVAL);
        }
        // The destination is replaced (MREMAP_FIXED) or was free.
        self.munmap(new_addr, new_len)?;
        let moved = old_len.min(new_len);
        if new_len < old_len {
            self.munmap(old + new_len, old_len - new_len)?;
        }
        let new_vma = Vma {
            start: new_addr,
            end: new_end,
            pgoff: vma.linear_page_index(old),
            ..vma.clone()
        };
        self.alloc_page_tables(new_addr, new_end);
        let mut vmas = self.vmas().to_vec();
        let pos = vmas.partition_point(|v| v.start < new_addr);
        vmas.insert(pos, new_vma);
        self.set_vmas(vmas);
        move_page_tables(self, old, new_addr, moved)?;
        if dontunmap {
            // The old range stays mapped, empty, without its anon_vma.
            self.split_at(old, old + moved);
            let fresh = self.memory().alloc_object_id();
            let vmas = self
                .vmas()
                .iter()
                .map(|v| {
                    if v.start == old && v.end == old + moved {
                        Vma {
                            id: fresh,
                            anon_chain: None,
                            ..v.clone()
                        }
                    } else {
                        v.clone()
                    }
                })
                .collect();
            self.set_vmas(vmas);
        } else {
            self.munmap(old, moved)?;
        }
        Ok(new_addr)
    }
}

/// Moves the entries of `[old, old + len)` to `new`.
///
/// Kernel: `move_page_tables()` → `move_huge_pmd()` / `move_ptes()` (main).
fn move_page_tables(mm: &MmapWriteGuard<'_>, old: u64, new: u64, len: u64) -> Result<(), Errno> {
    mm.mmu_notifier_invalidate(old, old + len, MmuNotifyEvent::Unmap, None);
    split_leaf_pmd_at(mm, old)?;
    split_leaf_pmd_at(mm, old + len)?;
    let mut off = 0;
    while off < len {
        let src = old + off;
        let next = (((src & !(PMD_SIZE - 1)) + PMD_SIZE) - old).min(len);
        let pmd = mm.pmdp_get_lockless(src);
        let whole = src.is_multiple_of(PMD_SIZE)
            && (new + off).is_multiple_of(PMD_SIZE)
            && next - off == PMD_SIZE;
        match pmd {
            Some(p) if !p.is_none() && !p.is_table() => {
                if whole {
                    move_huge_pmd(mm, src, new + off)?;
                    off = next;
                    continue;
                }
                crate::huge_memory::split_huge_pmd(mm, src & !(PMD_SIZE - 1))?;
                move_ptes(mm, src, new + off, next - off)?;
            }
            Some(p) if p.is_table() => move_ptes(mm, src, new + off, next - off)?,
            _ => {}
        }
        off = next;
    }
    Ok(())
}

/// Moves a leaf PMD and the page-table page deposited under it.
///
/// Kernel: `move_huge_pmd()` (`pgtable_trans_huge_withdraw()` from the old
/// PMD, `pgtable_trans_huge_deposit()` under the new), `mm/huge_memory.c`
/// (main).
fn move_huge_pmd(mm: &MmapWriteGuard<'_>, old: u64, new: u64) -> Result<(), Errno> {
    let (pmd, pgtable) = {
        let g = mm.pmd_lock(old)?;
        (g.get_and_clear()?, g.withdraw())
    };
    let g = mm.pmd_lock(new)?;
    g.set(pmd)?;
    if let Some(p) = pgtable {
        g.deposit(p);
    }
    Ok(())
}

/// Kernel: `move_ptes()`, `mm/mremap.c` (main).
fn move_ptes(mm: &MmapWriteGuard<'_>, old: u64, new: u64, len: u64) -> Result<(), Errno> {
    // Take the entries out under the source lock, then install them: the
    // destination may share the source's PTE table.
    let mut moved = Vec::new();
    {
        let src = mm.pte_offset_map_lock(old)?;
        for i in 0..len >> PAGE_SHIFT {
            let a = old + (i << PAGE_SHIFT);
            let pte = src.get_at(a)?;
            if !pte.is_none() {
                src.set_at(a, Pte::NONE)?;
                moved.push((new + (i << PAGE_SHIFT), pte));
            }
        }
    }
    for (a, pte) in moved {
        mm.set_pte(a, pte)?;
    }
    Ok(())
}
