//! `fork()` of an address space: the child gets a copy of every VMA and,
//! for private mappings, of every page-table entry, under copy-on-write.
//!
//! Kernel: `kernel/fork.c` (`dup_mm()`, `dup_mmap()`), `mm/memory.c`
//! (`vma_needs_copy()`, `copy_page_range()`: see
//! [`memory`](crate::memory)'s copy rules), `mm/rmap.c`
//! (`anon_vma_fork()`) (main).
//!
//! # Differences from the kernel
//!
//! - Each child VMA gets a new `anon_vma` id and reaches its parent's
//!   through [`Vma::anon_chain`] (the kernel's `anon_vma_chain`); there is
//!   no `anon_vma` reuse.
//! - `vma_needs_copy()` is "private mapping or `VM_MIXEDMAP`": the model
//!   does not know whether a private VMA ever had an `anon_vma`, so it also
//!   copies zero-page and page-cache PTEs of private mappings, which the
//!   kernel leaves for the child to fault in again. Shared mappings are
//!   not copied: the child faults their pages in from the page cache.
//! - No `VM_DONTCOPY` / `VM_WIPEONFORK`, no uffd, no MMU notifier.

use crate::mm_types::{Mm, VmFlags, Vma};
use crate::mmu_notifier::MmuNotifyEvent;
use devpriv_core::Errno;
use devpriv_core::mutant::Mutants;
use std::sync::Arc;

/// `true` if fork copies the VMA's page tables.
///
/// Kernel: `vma_needs_copy()`, `mm/memory.c` (main).
fn vma_needs_copy(vma: &Vma) -> bool {
    vma.is_cow_mapping() || vma.flags().contains(VmFlags::MIXEDMAP)
}

impl Mm {
    /// A copy of this address space for a child process: the same VMAs
    /// (each with its own `anon_vma`, chained to this one's) and, for
    /// private mappings, the same entries under copy-on-write: writable
    /// present PTEs and device-private entries become read-only in both,
    /// device-exclusive entries are restored first.
    ///
    /// Kernel: `dup_mm()` → `dup_mmap()` → `anon_vma_fork()` +
    /// `copy_page_range()`, `kernel/fork.c` (main).
    ///
    /// # Errors
    ///
    /// As `copy_page_range()`: [`Errno::EBUSY`] if a device-exclusive page
    /// is locked, [`Errno::EINVAL`] for a broken invariant. The child is
    /// dropped (unmapping what was copied); the parent's entries may
    /// already be write-protected, as in the kernel.
    ///
    /// # Examples
    ///
    /// ```
    /// use devpriv_core::{Errno, PAGE_SIZE, PageCount, Pfn};
    /// use devpriv_migrate::{FaultFlags, Memory, Mm, MmConfig, SystemMemory, VmFlags, handle_mm_fault};
    /// use devpriv_pagemap::DevicePrivateSpace;
    /// use std::sync::Arc;
    ///
    /// let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(512))?;
    /// let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
    /// let parent = Mm::new(&mem, MmConfig::default());
    /// let base = 0x7f00_0000_0000;
    /// parent.mmap_write_lock().mmap_anon(base, PAGE_SIZE, VmFlags::RW)?;
    /// handle_mm_fault(&parent, base, FaultFlags::WRITE)?;
    /// parent.write_user(base, 7)?;
    ///
    /// let child = parent.fork()?;
    /// // Both map the page read-only: a store faults and copies it.
    /// assert_eq!(child.read_user(base), Ok(7));
    /// assert_eq!(parent.write_user(base, 8), Err(Errno::EFAULT));
    /// handle_mm_fault(&parent, base, FaultFlags::WRITE)?;
    /// parent.write_user(base, 8)?;
    /// assert_eq!((parent.read_user(base), child.read_user(base)), (Ok(8), Ok(7)));
    /// assert_eq!(mem.sys().nr_free(), 510);
    /// # Ok::<(), Errno>(())
    /// ```
    pub fn fork(&self) -> Result<Arc<Mm>, Errno> {
        let parent = self.mmap_write_lock();
        let child = Mm::in_fork_tree(
            self.memory(),
            self.config(),
            Mutants::NONE,
            Arc::clone(self.fork_tree()),
        );
        let vmas: Vec<Vma> = parent.vmas().to_vec();
        {
            let mut cw = child.mmap_write_lock();
            let mut copies = Vec::with_capacity(vmas.len());
            for v in &vmas {
                let mut chain = Vec::with_capacity(v.anon_chain().len() + 1);
                chain.push(v.id);
                chain.extend_from_slice(v.anon_chain());
                copies.push(Vma {
                    id: self.memory().alloc_object_id(),
                    mm: *cw.ident(),
                    anon_chain: Some(Arc::from(chain)),
                    ..v.clone()
                });
                cw.alloc_page_tables(v.start, v.end);
            }
            cw.set_vmas(copies);
        }
        for v in vmas.iter().filter(|v| vma_needs_copy(v)) {
            if v.is_cow_mapping() {
                // The parent's writable entries are about to lose write.
                self.mmu_notifier_invalidate(v.start, v.end, MmuNotifyEvent::ProtectionPage, None);
            }
            child.copy_page_range(self, v)?;
        }
        drop(parent);
        Ok(child)
    }
}
