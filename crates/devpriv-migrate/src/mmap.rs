//! Mapping and unmapping: the operations of an address space locked for
//! writing ([`MmapWriteGuard`]).
//!
//! Kernel: `mm/mmap.c` (`do_mmap()`, `exit_mmap()`), `mm/vma.c`
//! (`do_vmi_munmap()`, `__split_vma()`), `mm/memory.c` (`unmap_vmas()`,
//! main).

use crate::filemap::AddressSpace;
use crate::mm_types::{Mm, MmapWriteGuard, VmFlags, Vma};
use crate::pgtable::{PMD_SIZE, Pmd, TASK_SIZE};
use devpriv_core::{Errno, PAGE_SHIFT, PAGE_SIZE};
use std::sync::Arc;

/// `[start, start + len)` if it is a valid user range: page-aligned,
/// non-empty, below [`TASK_SIZE`].
pub(crate) fn user_range(start: u64, len: u64) -> Result<u64, Errno> {
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
        if flags.contains(VmFlags::SHARED) {
            return Err(Errno::EINVAL);
        }
        self.mmap_region(start, len, flags, None, start >> PAGE_SHIFT)
    }

    /// Maps `len` bytes of `file` from page `pgoff` at `start`: privately
    /// (writes copy the page into an anon folio) or, with
    /// [`VmFlags::SHARED`], shared (writes go to the page cache). A shared
    /// anonymous mapping is a shared mapping of a shmem object
    /// ([`MappingKind::Shmem`](crate::filemap::MappingKind::Shmem)) from
    /// page 0.
    ///
    /// Kernel: `mmap(start, len, prot, MAP_SHARED or MAP_PRIVATE |
    /// MAP_FIXED_NOREPLACE, fd, pgoff << PAGE_SHIFT)` → `do_mmap()` →
    /// `mmap_region()`; `shmem_zero_setup()` for `MAP_SHARED |
    /// MAP_ANONYMOUS` (main).
    ///
    /// # Errors
    ///
    /// As [`mmap_anon`](Self::mmap_anon); [`Errno::EINVAL`] if the file
    /// range would pass the largest page index.
    pub fn mmap_file(
        &mut self,
        start: u64,
        len: u64,
        flags: VmFlags,
        file: Arc<AddressSpace>,
        pgoff: u64,
    ) -> Result<Vma, Errno> {
        if pgoff.checked_add(len >> PAGE_SHIFT).is_none() {
            return Err(Errno::EINVAL);
        }
        self.mmap_region(start, len, flags, Some(file), pgoff)
    }

    /// Kernel: `mmap_region()` (main).
    fn mmap_region(
        &mut self,
        start: u64,
        len: u64,
        flags: VmFlags,
        file: Option<Arc<AddressSpace>>,
        pgoff: u64,
    ) -> Result<Vma, Errno> {
        let end = user_range(start, len)?;
        let mut vmas = self.vmas().to_vec();
        if vmas.iter().any(|v| v.start < end && start < v.end) {
            return Err(Errno::EEXIST);
        }
        self.alloc_page_tables(start, end);
        let vma = Vma {
            start,
            end,
            pgoff,
            flags,
            id: self.memory().alloc_object_id(),
            mm: *self.ident(),
            anon_chain: None,
            file,
        };
        let pos = vmas.partition_point(|v| v.start < start);
        vmas.insert(pos, vma.clone());
        self.set_vmas(vmas);
        Ok(vma)
    }

    /// Splits the VMAs so that `start` and `end` are VMA boundaries (where
    /// a VMA covers them). Both halves keep the VMA's `anon_vma`.
    ///
    /// Kernel: `split_vma()` / `__split_vma()`, `mm/vma.c` (main).
    pub(crate) fn split_at(&mut self, start: u64, end: u64) {
        let mut out = Vec::with_capacity(self.vmas().len() + 2);
        for v in self.vmas().iter() {
            let mut cur = v.clone();
            for cut in [start, end] {
                if cur.start < cut && cut < cur.end {
                    out.push(Vma {
                        end: cut,
                        ..cur.clone()
                    });
                    cur = Vma {
                        start: cut,
                        pgoff: cur.pgoff + ((cut - cur.start) >> PAGE_SHIFT),
                        ..cur
                    };
                }
            }
            out.push(cur);
        }
        self.set_vmas(out);
    }

    /// Merges neighbouring VMAs that continue each other: same flags,
    /// `anon_vma`, page cache and consecutive page offsets.
    ///
    /// Kernel: `vma_merge_existing_range()` / `vma_modify()`, `mm/vma.c`
    /// (as `mprotect` and `madvise` leave things) (main).
    pub(crate) fn merge_all(&mut self) {
        let mut out: Vec<Vma> = Vec::with_capacity(self.vmas().len());
        for v in self.vmas().iter() {
            if let Some(prev) = out.last_mut()
                && prev.end == v.start
                && prev.flags == v.flags
                && prev.id == v.id
                && prev.anon_chain() == v.anon_chain()
                && prev.file == v.file
                && prev.pgoff + ((prev.end - prev.start) >> PAGE_SHIFT) == v.pgoff
            {
                prev.end = v.end;
                continue;
            }
            out.push(v.clone());
        }
        self.set_vmas(out);
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
    /// Page tables are not freed, but a PMD whose block no VMA covers any
    /// more is cleared (`free_pgtables()`); see
    /// [`mm_types`](crate::mm_types). Entries of a range no VMA covers are
    /// zapped too.
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
        self.free_pgtables(start, end);
        Ok(())
    }

    /// After an unmap of `[start, end)`: every PMD whose whole 2 MiB block
    /// no VMA covers any more, and whose PTE table is empty, goes back to
    /// none, so the next fault or migration there sees a hole at PMD level
    /// (a THP fault, a compound hole) as on a kernel that freed the table.
    ///
    /// Kernel: `free_pgtables()` → `free_pgd_range()` → `free_pte_range()`
    /// between the neighbouring VMAs (floor and ceiling), `mm/memory.c`
    /// (main).
    ///
    /// # Differences from the kernel
    ///
    /// The table itself stays with its slot (see
    /// [`mm_types`](crate::mm_types)); only the PMD is cleared. Upper
    /// levels are never freed.
    fn free_pgtables(&self, start: u64, end: u64) {
        let vmas = self.vmas();
        let mut blk = start & !(PMD_SIZE - 1);
        while blk < end {
            let next = blk + PMD_SIZE;
            let used = vmas.iter().any(|v| v.start < next && v.end > blk);
            // A trylock: a PMD lock someone holds (or, under
            // `HugeInsertErrors::V7_0`, leaked) leaves the table in place
            // rather than hanging the unmap.
            if !used
                && self.pmdp_get_lockless(blk).is_some_and(Pmd::is_table)
                && let Ok(g) = self.pmd_trylock(blk)
                && g.get().is_table()
            {
                // Refused (EBUSY) if an entry is left: then it stays.
                let _ = g.set(Pmd::NONE);
            }
            blk = next;
        }
    }
}

impl Mm {
    /// Unmaps every VMA: what the address space leaves when it goes.
    ///
    /// Kernel: `exit_mmap()`, `mm/mmap.c` (from `mmput()`) (main).
    ///
    /// # Errors
    ///
    /// As [`MmapWriteGuard::munmap`] (a broken invariant in a zap).
    pub fn exit_mmap(&self) -> Result<(), Errno> {
        let mut w = self.mmap_write_lock();
        let ranges: Vec<(u64, u64)> = w.vmas().iter().map(|v| (v.start, v.end)).collect();
        for (start, end) in ranges {
            w.munmap(start, end - start)?;
        }
        Ok(())
    }
}

impl Drop for Mm {
    /// Kernel: the last `mmput()` → `exit_mmap()` (main).
    fn drop(&mut self) {
        // A zap that fails has already WARNed; nothing else can be done.
        let _ = self.exit_mmap();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::memory_model::test_memory;
    use crate::mm_types::{Mm, MmConfig, VmFlags};
    use crate::pgtable::{PMD_SIZE, Pmd, TASK_SIZE};
    use devpriv_core::{Errno, PAGE_SHIFT, PAGE_SIZE};

    const BASE: u64 = 0x7f00_0000_0000;

    /// `free_pgtables()`: the PMD of a block no VMA covers any more goes back
    /// to none; a block a VMA still touches keeps its table.
    #[test]
    fn unmap_clears_the_pmds_of_blocks_left_without_a_vma() {
        use crate::memory::{FaultFlags, handle_mm_fault};
        let mem = test_memory(64);
        let mm = Mm::new(&mem, MmConfig::default());
        mm.mmap_write_lock()
            .mmap_anon(BASE, 2 * PMD_SIZE, VmFlags::RW)
            .unwrap();
        for a in [BASE, BASE + PMD_SIZE] {
            handle_mm_fault(&mm, a, FaultFlags::WRITE).unwrap();
            assert!(mm.pmdp_get_lockless(a).unwrap().is_table());
        }
        let mut w = mm.mmap_write_lock();
        // Half of the first block: a VMA still covers the rest.
        w.munmap(BASE, PMD_SIZE / 2).unwrap();
        assert!(mm.pmdp_get_lockless(BASE).unwrap().is_table());
        w.munmap(BASE + PMD_SIZE / 2, PMD_SIZE / 2).unwrap();
        assert_eq!(mm.pmdp_get_lockless(BASE), Some(Pmd::NONE));
        assert!(mm.pmdp_get_lockless(BASE + PMD_SIZE).unwrap().is_table());
        w.munmap(BASE + PMD_SIZE, PMD_SIZE).unwrap();
        assert_eq!(mm.pmdp_get_lockless(BASE + PMD_SIZE), Some(Pmd::NONE));
    }

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
