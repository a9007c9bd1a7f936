//! The page cache of a file (or of a shmem object): the pages file-backed
//! and shared mappings map.
//!
//! Kernel: `include/linux/fs.h` (`struct address_space`,
//! `struct address_space_operations::read_folio`), `mm/filemap.c`
//! (`filemap_get_folio()`, `__filemap_get_folio(FGP_CREAT)`,
//! `filemap_read_folio()`), `mm/shmem.c` (`shmem_zero_setup()`: the object
//! behind `MAP_SHARED | MAP_ANONYMOUS`) (main).
//!
//! An [`AddressSpace`] holds one order-0 system folio per cached page
//! index, and one reference on each (the page cache's). A page is created
//! on first use: its data word comes from the owner's
//! [`AddressSpaceOps::read_folio`] (reading the file), or is zero without
//! one (a new shmem page).
//!
//! # Differences from the kernel
//!
//! - No writeback, dirty tracking, truncation, readahead or large folios;
//!   pages stay cached until the address space is dropped.
//! - A page-cache folio is not anon ([`FolioOps::anon_id`] is `None`) and
//!   has no file rmap: nothing in the model walks a file's mappings
//!   (device migration only moves anonymous memory).
//!
//! [`FolioOps::anon_id`]: crate::mm::FolioOps::anon_id

use crate::memory_model::Memory;
use crate::page_alloc::SysFolio;
use core::fmt;
use devpriv_core::sync::Mutex;
use devpriv_core::{Errno, Order, Pfn};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Where the contents of a file's pages come from.
///
/// Kernel: `struct address_space_operations` (`read_folio`) (main).
pub trait AddressSpaceOps: Send + Sync + fmt::Debug {
    /// The data word of page `index` of the file, read when the page enters
    /// the page cache.
    ///
    /// Kernel: `a_ops->read_folio(file, folio)` (main).
    ///
    /// # Errors
    ///
    /// Any error reading the file (the fault then fails with `EFAULT`,
    /// `VM_FAULT_SIGBUS` in the kernel).
    fn read_folio(&self, index: u64) -> Result<u64, Errno>;
}

/// What kind of object the page cache belongs to.
///
/// Kernel: none (model only: `shmem_mapping()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MappingKind {
    /// A regular file.
    File,
    /// A shmem object (`MAP_SHARED | MAP_ANONYMOUS`, tmpfs).
    Shmem,
}

/// The page cache of one file or shmem object.
///
/// Kernel: `struct address_space` (`i_pages`, `a_ops`) (main).
pub struct AddressSpace {
    id: u64,
    kind: MappingKind,
    memory: Memory,
    ops: Option<Arc<dyn AddressSpaceOps>>,
    /// Page index → pfn of the cached order-0 folio. Kernel: `i_pages` (main).
    i_pages: Mutex<BTreeMap<u64, Pfn>>,
}

impl fmt::Debug for AddressSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddressSpace")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("nr_pages", &self.nr_pages())
            .finish_non_exhaustive()
    }
}

/// Two handles are equal when they name the same object.
impl PartialEq for AddressSpace {
    fn eq(&self, other: &AddressSpace) -> bool {
        self.id == other.id
    }
}

impl Eq for AddressSpace {}

impl AddressSpace {
    /// An empty page cache whose pages are filled by `ops` (zeros without).
    ///
    /// Kernel: the `i_mapping` of a new inode (`inode_init_always()`) (main).
    pub fn new(
        memory: &Memory,
        kind: MappingKind,
        ops: Option<Arc<dyn AddressSpaceOps>>,
    ) -> Arc<AddressSpace> {
        Arc::new(AddressSpace {
            id: memory.alloc_object_id(),
            kind,
            memory: memory.clone(),
            ops,
            i_pages: Mutex::new(BTreeMap::new()),
        })
    }

    /// A unique id (model only).
    ///
    /// Kernel: none (the `struct address_space *` itself).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// File or shmem.
    ///
    /// Kernel: `shmem_mapping(mapping)` (main).
    pub fn kind(&self) -> MappingKind {
        self.kind
    }

    /// Pages in the cache.
    ///
    /// Kernel: `mapping->nrpages` (main).
    pub fn nr_pages(&self) -> usize {
        self.i_pages.lock().len()
    }

    /// The cached folio at `index`, if any (no reference taken: the cache
    /// holds one for as long as the address space lives).
    ///
    /// Kernel: `filemap_get_folio(mapping, index)` without `FGP_CREAT` (main).
    pub fn find_folio(&self, index: u64) -> Option<SysFolio<'_>> {
        let pfn = *self.i_pages.lock().get(&index)?;
        self.memory.sys().pfn_folio(pfn)
    }

    /// The cached folio at `index`, read in first if missing.
    ///
    /// Kernel: `__filemap_get_folio(mapping, index, FGP_CREAT, gfp)` +
    /// `filemap_read_folio()` (the `filemap_fault()` path) (main).
    ///
    /// # Errors
    ///
    /// [`Errno::ENOMEM`] when no system page is left; an error of
    /// [`AddressSpaceOps::read_folio`]. Nothing is cached on error.
    pub fn get_folio(&self, index: u64) -> Result<SysFolio<'_>, Errno> {
        let mut pages = self.i_pages.lock();
        if let Some(pfn) = pages.get(&index)
            && let Some(f) = self.memory.sys().pfn_folio(*pfn)
        {
            return Ok(f);
        }
        let word = match &self.ops {
            Some(ops) => ops.read_folio(index)?,
            None => 0,
        };
        let folio = self.memory.sys().alloc_folio(Order::ZERO)?;
        // A new page is ours alone: the write cannot fail.
        self.memory.sys().write(folio.pfn(), word)?;
        folio.set_index(index);
        pages.insert(index, folio.pfn());
        // The allocation's reference becomes the page cache's.
        Ok(folio)
    }
}

impl Drop for AddressSpace {
    /// Drops the page cache's reference on every page.
    ///
    /// Kernel: `truncate_inode_pages_final()` when the inode goes (main).
    fn drop(&mut self) {
        let pages = core::mem::take(&mut *self.i_pages.lock());
        for pfn in pages.into_values() {
            if let Some(f) = self.memory.sys().pfn_folio(pfn) {
                let _ = f.put();
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::memory_model::test_memory;

    #[derive(Debug)]
    struct Words;
    impl AddressSpaceOps for Words {
        fn read_folio(&self, index: u64) -> Result<u64, Errno> {
            if index == 99 {
                return Err(Errno::EFAULT);
            }
            Ok(1000 + index)
        }
    }

    #[test]
    fn pages_are_read_once_and_freed_with_the_cache() {
        let mem = test_memory(512);
        let a = AddressSpace::new(&mem, MappingKind::File, Some(Arc::new(Words)));
        assert!(a.find_folio(3).is_none());
        let f = a.get_folio(3).unwrap();
        assert_eq!(mem.sys().read(f.pfn()), Ok(1003));
        assert_eq!((f.refcount(), f.index(), f.mapping()), (1, 3, 0));
        mem.sys().write(f.pfn(), 7).unwrap();
        assert_eq!(a.get_folio(3).unwrap(), f, "cached, not read again");
        assert_eq!(mem.sys().read(f.pfn()), Ok(7));
        assert_eq!(a.get_folio(99).err(), Some(Errno::EFAULT));
        assert_eq!(a.nr_pages(), 1);
        let shmem = AddressSpace::new(&mem, MappingKind::Shmem, None);
        let z = shmem.get_folio(0).unwrap();
        assert_eq!(mem.sys().read(z.pfn()), Ok(0));
        assert_eq!(mem.sys().nr_free(), 510);
        drop(a);
        drop(shmem);
        assert_eq!(mem.sys().nr_free(), 512);
    }
}
