//! Mapping and unmapping: the operations of an address space locked for
//! writing ([`MmapWriteGuard`]).
//!
//! Kernel: `mm/mmap.c` (`do_mmap()`), `mm/vma.c` (`do_vmi_munmap()`,
//! `__split_vma()`), `mm/memory.c` (`unmap_vmas()`, main).

use crate::mm_types::{MmapWriteGuard, VmFlags, Vma};
use crate::pgtable::TASK_SIZE;
use devpriv_core::{Errno, PAGE_SHIFT, PAGE_SIZE};

/// `[start, start + len)` if it is a valid user range: page-aligned,
/// non-empty, below [`TASK_SIZE`].
fn user_range(start: u64, len: u64) -> Result<u64, Errno> {
    let end = start.checked_add(len).ok_or(Errno::EINVAL)?;
    if !start.is_multiple_of(PAGE_SIZE)
        || !len.is_multiple_of(PAGE_SIZE)
        || len == 0
        || end > TASK_SIZE
    {
        return Err(Errno::EINVAL);
    }
    Ok(end)
}

impl MmapWriteGuard<'_> {
    /// Maps `len` bytes of private anonymous memory at `start` and allocates
    /// the page tables that cover it (all entries none). Returns the new
    /// VMA.
    ///
    /// Kernel: `mmap(start, len, prot, MAP_PRIVATE | MAP_ANONYMOUS |
    /// MAP_FIXED_NOREPLACE)` → `do_mmap()`; `vm_pgoff = start >> PAGE_SHIFT` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `start` or `len` is not page-aligned, `len` is
    /// zero, or the range passes [`TASK_SIZE`]; [`Errno::EEXIST`] if it
    /// overlaps an existing VMA. Nothing changes on error.
    ///
    /// # Examples
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
    /// let vma = mm.mmap_write_lock().mmap_anon(0x7f00_0000_0000, 16 * PAGE_SIZE, VmFlags::RW)?;
    /// assert_eq!(vma.pgoff(), 0x7f00_0000_0000 / PAGE_SIZE);
    /// // Overlapping an existing VMA is refused.
    /// assert_eq!(
    ///     mm.mmap_write_lock().mmap_anon(0x7f00_0000_0000, PAGE_SIZE, VmFlags::RW).err(),
    ///     Some(Errno::EEXIST)
    /// );
    /// # Ok::<(), Errno>(())
    /// ```
    pub fn mmap_anon(&mut self, start: u64, len: u64, flags: VmFlags) -> Result<Vma, Errno> {
        let end = user_range(start, len)?;
        let mut vmas = self.vmas().to_vec();
        if vmas.iter().any(|v| v.start < end && start < v.end) {
            return Err(Errno::EEXIST);
        }
        self.alloc_page_tables(start, end);
        let vma = Vma {
            start,
            end,
            pgoff: start >> PAGE_SHIFT,
            flags,
            id: self.state.next_vma_id,
            mm: self.ident().clone(),
        };
        self.state.next_vma_id += 1;
        let pos = vmas.partition_point(|v| v.start < start);
        vmas.insert(pos, vma.clone());
        self.set_vmas(vmas);
        Ok(vma)
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
    /// `zap_pte_range()`), `mm/vma.c` and `mm/memory.c` (main).
    ///
    /// # Differences from the kernel
    ///
    /// Page tables are not freed (see [`mm_types`](crate::mm_types)).
    /// Entries of a range no VMA covers are zapped too.
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `start` or `len` is not page-aligned, `len` is
    /// zero or the range passes [`TASK_SIZE`]; nothing changes. An
    /// unmapped range is not an error.
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
    /// assert_eq!(mem.sys().nr_free(), 511);
    /// // A hole in the middle: the VMA splits and its page is freed.
    /// mm.mmap_write_lock().munmap(base + PAGE_SIZE, PAGE_SIZE)?;
    /// assert_eq!(mm.vmas().len(), 2);
    /// assert_eq!(mem.sys().nr_free(), 512);
    /// # Ok::<(), Errno>(())
    /// ```
    pub fn munmap(&mut self, start: u64, len: u64) -> Result<(), Errno> {
        let end = user_range(start, len)?;
        self.zap_page_range(start, end)?;
        let mut out = Vec::with_capacity(self.vmas().len() + 1);
        for v in self.vmas().iter() {
            if v.end <= start || v.start >= end {
                out.push(v.clone());
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
                    ..v.clone()
                });
            }
        }
        self.set_vmas(out);
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::memory_model::test_memory;
    use crate::mm_types::{Mm, MmConfig, VmFlags};
    use crate::pgtable::{PMD_SIZE, Pmd, TASK_SIZE};
    use devpriv_core::{Errno, PAGE_SHIFT, PAGE_SIZE};

    const BASE: u64 = 0x7f00_0000_0000;

    #[test]
    fn mmap_rules() {
        let mm = Mm::new(&test_memory(512), MmConfig::default());
        let mut w = mm.mmap_write_lock();
        assert_eq!(
            w.mmap_anon(BASE + 1, PAGE_SIZE, VmFlags::RW).err(),
            Some(Errno::EINVAL)
        );
        assert_eq!(w.mmap_anon(BASE, 0, VmFlags::RW).err(), Some(Errno::EINVAL));
        assert_eq!(
            w.mmap_anon(TASK_SIZE, PAGE_SIZE, VmFlags::RW).err(),
            Some(Errno::EINVAL)
        );
        let v = w.mmap_anon(BASE, 4 * PMD_SIZE, VmFlags::RW).unwrap();
        assert_eq!(v.pgoff(), BASE >> PAGE_SHIFT);
        assert_eq!(
            w.mmap_anon(BASE + PMD_SIZE, PAGE_SIZE, VmFlags::RW).err(),
            Some(Errno::EEXIST)
        );
        drop(w);
        assert_eq!(mm.vma_lookup(BASE + 5), Some(v));
        assert_eq!(mm.vma_lookup(BASE + 4 * PMD_SIZE), None);
        assert_eq!(mm.pmdp_get_lockless(BASE), Some(Pmd::NONE));
        assert_eq!(mm.ptep_get_lockless(BASE), None);
    }
}
