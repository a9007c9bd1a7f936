//! The machine's memory: system RAM and the device-private address space,
//! which every address space ([`Mm`]) of the machine shares.
//!
//! Kernel: `include/asm-generic/memory_model.h` (`mem_map`,
//! `pfn_to_page()`) and, with the v6 proposal, `device_private_pgmap_tree`
//! behind `device_private_offset_to_page()` (`mm/memremap.c`, v6 proposal);
//! the machine's list of address spaces (`init_mm.mmlist`-like, what the
//! rmap walks across address spaces start from; main).

use crate::mm_types::Mm;
use crate::page_alloc::SystemMemory;
use core::fmt;
use devpriv_core::Errno;
use devpriv_core::sync::Mutex;
use devpriv_core::sync::atomic::{AtomicU64, Ordering};
use devpriv_pagemap::DevicePrivateSpace;
use std::sync::{Arc, Weak};

/// The machine's memory: system RAM and the device-private address space.
///
/// Kernel: none (model only). It stands for two globals, the `mem_map`
/// behind `pfn_to_page()` and `device_private_pgmap_tree` behind
/// `device_private_offset_to_page()`. Cloning shares both: every [`Mm`]
/// of a machine holds a clone, as every `mm_struct` draws its pages from
/// the one page allocator.
///
/// [`Mm`]: crate::Mm
#[derive(Clone)]
pub struct Memory {
    inner: Arc<Machine>,
}

struct Machine {
    sys: Arc<SystemMemory>,
    space: Arc<DevicePrivateSpace>,
    /// The next `mm_struct::mm_id`.
    next_mm_id: AtomicU64,
    /// The next id of a VMA's `anon_vma` or of an address space (model
    /// only; 0 is never used).
    next_object_id: AtomicU64,
    /// Every live address space of the machine.
    mm_list: Mutex<Vec<Weak<Mm>>>,
}

impl fmt::Debug for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memory")
            .field("sys", &self.inner.sys)
            .field("space", &self.inner.space)
            .finish()
    }
}

impl Memory {
    /// Puts system RAM and a device-private space together.
    ///
    /// Kernel: none (model only).
    pub fn new(sys: Arc<SystemMemory>, space: Arc<DevicePrivateSpace>) -> Memory {
        Memory {
            inner: Arc::new(Machine {
                sys,
                space,
                next_mm_id: AtomicU64::new(1),
                next_object_id: AtomicU64::new(1),
                mm_list: Mutex::new(Vec::new()),
            }),
        }
    }

    /// System RAM.
    ///
    /// Kernel: none (model only).
    pub fn sys(&self) -> &SystemMemory {
        &self.inner.sys
    }

    /// The device-private address space.
    ///
    /// Kernel: none (model only; `device_private_pgmap_tree`).
    pub fn space(&self) -> &DevicePrivateSpace {
        &self.inner.space
    }

    /// A shared handle to the device-private address space.
    ///
    /// Kernel: none (model only).
    pub fn space_arc(&self) -> &Arc<DevicePrivateSpace> {
        &self.inner.space
    }

    /// A new id for an address space of this machine.
    ///
    /// Kernel: `mm_alloc_id()`, `kernel/fork.c` (`CONFIG_MM_ID`, 7.0).
    pub(crate) fn alloc_mm_id(&self) -> u64 {
        self.inner.next_mm_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A new id for an `anon_vma` or a page cache, unique on this machine.
    ///
    /// Kernel: none (model only; the kernel compares pointers).
    pub(crate) fn alloc_object_id(&self) -> u64 {
        self.inner.next_object_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds an address space to the machine's list.
    pub(crate) fn register_mm(&self, mm: Weak<Mm>) {
        let mut list = self.inner.mm_list.lock();
        list.retain(|w| w.strong_count() > 0);
        list.push(mm);
    }

    /// Every live address space of the machine, oldest first.
    ///
    /// Kernel: none (model only). The kernel's rmap reaches the VMAs of
    /// every process through a folio's `anon_vma`; the model's anon cookie
    /// is a number, so the walk starts from this list (see
    /// [`rmap`](crate::rmap)).
    pub fn mms(&self) -> Vec<Arc<Mm>> {
        self.inner
            .mm_list
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Calls `f` on every live address space, oldest first, with the list
    /// locked. Stops at the first error.
    pub(crate) fn for_each_mm(&self, f: impl FnMut(&Mm) -> Result<(), Errno>) -> Result<(), Errno> {
        crate::mm_types::for_each_live(&self.inner.mm_list.lock(), f)
    }
}

/// Memory for unit tests: `nr_pages` of system RAM at pfn `0x10_0000` and an
/// empty device-private space.
#[cfg(all(test, not(loom)))]
pub(crate) fn test_memory(nr_pages: u64) -> Memory {
    use devpriv_core::{PageCount, Pfn};
    let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(nr_pages));
    Memory::new(
        Arc::new(sys.expect("valid test memory")),
        Arc::new(DevicePrivateSpace::new()),
    )
}
