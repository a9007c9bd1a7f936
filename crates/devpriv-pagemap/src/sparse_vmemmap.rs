//! The space's virtual memmap: every pagemap's pages at `vmemmap + offset`.
//!
//! Kernel: the `vmemmap` array and `vmemmap_populate()`
//! (`mm/sparse-vmemmap.c`, `arch/x86/mm/init_64.c`; main), which give every
//! pfn's `struct page` a fixed virtual address, so that `pfn_to_page()` is
//! `vmemmap + pfn`. The v6 proposal takes device-private pages out of it:
//! each pagemap's array is its own `kvzalloc()`, found through the maple
//! tree. This module gives them the arithmetic back as a model-only
//! choice: one reservation per space, `space_pages` pages long and
//! committed only where pagemaps are, in which a pagemap's array is
//! `vmemmap[first_offset..first_offset + nr_pages]`. A lookup can then
//! compute the page's address from the offset alone and load the page
//! while the section index's slot is still being checked (issue 14, T3).
//!
//! # Differences from the kernel
//!
//! - v6 allocates each pages array on its own; here it sits at a fixed
//!   place in a per-space `mmap(MAP_NORESERVE)` reservation (1 TiB of
//!   virtual address space for the default 46-bit space, at most
//!   [`MAX_RESERVE`]). Only addresses show it: `DevPagemap::cookie()` and
//!   page addresses follow the offset.
//! - A range is populated by one pagemap at a time, from `memremap` until
//!   the last reference to its `DevPagemap` drops (the kernel frees the
//!   array in `memunmap`). A pagemap mapped over a range whose previous
//!   owner is still referenced gets a heap array instead, as in v6, and
//!   so does one past the reservation's end, or every pagemap of a space
//!   whose reservation failed (or under loom, whose atomics are not valid
//!   as zero bytes). Those pagemaps' lookups take a slower path.
//! - The reservation is advised `MADV_HUGEPAGE`, as x86 maps its vmemmap
//!   with 2 MiB pages where it can (`vmemmap_populate_hugepages()`): with
//!   THP on `madvise` or `always`, populating a pagemap commits whole
//!   2 MiB pages of `struct page`s; with THP `never`, 4 KiB ones.
//! - A released range's memory goes back with `MADV_DONTNEED`, whole
//!   4 KiB pages only (the edges may hold a neighbour's pages). Under
//!   Miri, which runs neither `madvise` nor `MAP_NORESERVE`, the memory
//!   stays committed and the reservation is plain anonymous memory.

use crate::mm_types::Page;
use devpriv_core::sync::Mutex;
use rangemap::RangeSet;
use std::ops::Deref;
#[cfg(not(loom))]
use std::ptr::NonNull;
use std::sync::Arc;
use std::{fmt, ptr, slice};

/// The largest reservation, in bytes: 1 TiB, the default (4-level) space's
/// memmap and x86-64's `VMEMMAP` region. Larger spaces (5-level paging)
/// reserve this much of their memmap; pagemaps past it get heap arrays.
/// Under Miri, which commits the whole mapping, 4 MiB (65,536 pages).
#[cfg(not(loom))]
const MAX_RESERVE: usize = if cfg!(miri) { 1 << 22 } else { 1 << 40 };

/// Types for which zero bytes are a valid value and every access is
/// through atomics, so an anonymous mapping is an array of them.
///
/// # Safety
///
/// All-zero bytes are a valid `Self`, and `Self` is `Sync`.
#[cfg(not(loom))]
pub(crate) unsafe trait Zeroed: Sync {}
// SAFETY: Eight `AtomicU64`s (std's outside loom): zero is valid.
#[cfg(not(loom))]
unsafe impl Zeroed for Page {}
// SAFETY: A transparent `std` `AtomicU32`: zero is valid.
#[cfg(not(loom))]
unsafe impl Zeroed for devpriv_core::sync::atomic::AtomicU32 {}
// SAFETY: A transparent `std` `AtomicPtr`: zero is null.
#[cfg(not(loom))]
unsafe impl<T> Zeroed for devpriv_core::sync::atomic::AtomicPtr<T> {}

/// An anonymous mapping of `len` `T`s, zero until written: `MAP_NORESERVE`
/// (committed only where written) and, unless made
/// [`small`](Self::small), advised `MADV_HUGEPAGE`; neither under Miri,
/// which runs them not. Unmapped when it drops.
///
/// Kernel: none (how the model reserves its memmap-like arrays).
#[cfg(not(loom))]
pub(crate) struct Reservation<T: Zeroed> {
    start: NonNull<T>,
    len: usize,
}

// SAFETY: The mapping is plain memory holding `T`s, which are `Sync`
// atomics (`Zeroed`); it is shared as `&[T]` is, and unmapped only when
// the reservation drops.
#[cfg(not(loom))]
unsafe impl<T: Zeroed> Send for Reservation<T> {}
// SAFETY: As for `Send`: every access goes through a `&T`.
#[cfg(not(loom))]
unsafe impl<T: Zeroed> Sync for Reservation<T> {}

#[cfg(not(loom))]
impl<T: Zeroed> Reservation<T> {
    /// `len` zero `T`s on huge pages where THP allows, or `None` if `len`
    /// is zero or the mapping fails.
    pub(crate) fn new(len: usize) -> Option<Self> {
        Self::with_huge(len, true)
    }

    /// As [`new`](Self::new), on base pages: for arrays that stay small in
    /// use, where a first write should not zero a whole 2 MiB page.
    pub(crate) fn small(len: usize) -> Option<Self> {
        Self::with_huge(len, false)
    }

    fn with_huge(len: usize, huge: bool) -> Option<Self> {
        let bytes = len.checked_mul(size_of::<T>()).filter(|&b| b > 0)?;
        let noreserve = if cfg!(miri) { 0 } else { libc::MAP_NORESERVE };
        // SAFETY: A new anonymous mapping at an address the kernel picks: it
        // aliases no memory of this process.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | noreserve,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        if huge && !cfg!(miri) {
            // As x86's vmemmap, on 2 MiB pages where THP allows it: a
            // lookup's load should not wait for a page walk.
            // SAFETY: The mapping just made, with its length; advice only.
            let _ = unsafe { libc::madvise(p, bytes, libc::MADV_HUGEPAGE) };
        }
        Some(Reservation {
            // Page-aligned, so aligned for any `T` here (at most 64 bytes).
            start: NonNull::new(p.cast())?,
            len,
        })
    }

    /// The first `T`; the array is `len` long.
    pub(crate) fn as_ptr(&self) -> *mut T {
        self.start.as_ptr()
    }

    /// The number of `T`s.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// `T` number `i`, if `i < len`.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        // SAFETY: `i < len`, inside the mapping, which lives as long as
        // `self`; its bytes are valid `T`s (`Zeroed`), shared only.
        (i < self.len).then(|| unsafe { &*self.start.as_ptr().wrapping_add(i) })
    }
}

#[cfg(not(loom))]
impl<T: Zeroed> Drop for Reservation<T> {
    fn drop(&mut self) {
        // SAFETY: The mapping from `new`, with its length; every reference
        // into it borrowed `self`.
        unsafe { libc::munmap(self.start.as_ptr().cast(), self.len * size_of::<T>()) };
    }
}

/// A reservation of pages, zero until populated.
///
/// Kernel: the `vmemmap` virtual array, `VMEMMAP_START` (main).
pub(crate) struct Vmemmap {
    /// The pages: `vmemmap[0]` is offset 0's page.
    #[cfg(not(loom))]
    map: Reservation<Page>,
    /// Populated ranges (page indices), each owned by one [`VmemmapPages`].
    held: Mutex<RangeSet<usize>>,
}

impl fmt::Debug for Vmemmap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vmemmap")
            .field("pages", &self.pages())
            .finish_non_exhaustive()
    }
}

impl Vmemmap {
    /// Reserves a memmap for the first `pages` pages of a space (fewer if
    /// they would pass [`MAX_RESERVE`]), or `None` if the reservation fails
    /// or under loom.
    ///
    /// Kernel: the `VMEMMAP` region's reservation (`arch/x86/mm`, main).
    pub(crate) fn reserve(pages: u64) -> Option<Arc<Vmemmap>> {
        #[cfg(loom)]
        {
            let _ = pages;
            None
        }
        #[cfg(not(loom))]
        {
            let max = MAX_RESERVE / size_of::<Page>();
            let pages = usize::try_from(pages).map_or(max, |p| p.min(max));
            Some(Arc::new(Vmemmap {
                map: Reservation::new(pages)?,
                held: Mutex::new(RangeSet::new()),
            }))
        }
    }

    /// Its length in pages.
    fn pages(&self) -> usize {
        #[cfg(not(loom))]
        return self.map.len();
        #[cfg(loom)]
        0
    }

    /// `vmemmap`: page `offset` is at `base().wrapping_add(offset)`.
    pub(crate) fn base(&self) -> *mut Page {
        #[cfg(not(loom))]
        return self.map.as_ptr();
        #[cfg(loom)]
        ptr::null_mut()
    }

    /// Takes pages `first..first + n` for one pagemap, or `None` if any of
    /// them is still another's or lies past the reservation. The pages
    /// read as zero or as a former owner's; the caller initialises them.
    ///
    /// Kernel: `vmemmap_populate()`, `mm/sparse-vmemmap.c` (main).
    pub(crate) fn populate(self: &Arc<Self>, first: u64, n: u64) -> Option<VmemmapPages> {
        let first = usize::try_from(first).ok()?;
        let len = usize::try_from(n).ok().filter(|&n| n > 0)?;
        let end = first.checked_add(len).filter(|&e| e <= self.pages())?;
        let mut held = self.held.lock();
        if held.overlaps(&(first..end)) {
            return None;
        }
        held.insert(first..end);
        Some(VmemmapPages {
            map: Arc::clone(self),
            first,
            len,
        })
    }

    /// Gives back the memory of pages `first..first + len`, then lets the
    /// range be populated again.
    ///
    /// Kernel: `vmemmap_free()`, `mm/sparse-vmemmap.c` (main).
    fn depopulate(&self, first: usize, len: usize) {
        #[cfg(not(miri))]
        {
            // Only the 4 KiB pages wholly inside the range: the edges may
            // hold a neighbour's `Page`s.
            const PAGE: usize = 4096;
            let sz = size_of::<Page>();
            let lo = (first * sz).next_multiple_of(PAGE);
            let hi = (first + len) * sz / PAGE * PAGE;
            if lo < hi {
                // SAFETY: `lo..hi` lies inside the mapping and inside this
                // range, which its owner held alone and no longer references
                // (it is being dropped), so no `&Page` points into it.
                // `MADV_DONTNEED` on private anonymous memory leaves zero
                // bytes behind, which are valid `Page`s.
                let rc = unsafe {
                    libc::madvise(
                        self.base().cast::<u8>().wrapping_add(lo).cast(),
                        hi - lo,
                        libc::MADV_DONTNEED,
                    )
                };
                // Failing only costs memory: the pages are rewritten when
                // populated again.
                debug_assert_eq!(rc, 0, "madvise(MADV_DONTNEED)");
            }
        }
        self.held.lock().remove(first..first + len);
    }
}

/// One pagemap's pages in its space's [`Vmemmap`]: `vmemmap[first..first +
/// len]`, given back when this drops.
///
/// Kernel: the `struct page`s `vmemmap_populate()` backs for one
/// `memremap_pages()` range (main).
pub(crate) struct VmemmapPages {
    map: Arc<Vmemmap>,
    first: usize,
    len: usize,
}

impl fmt::Debug for VmemmapPages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmemmapPages")
            .field("first", &self.first)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Deref for VmemmapPages {
    type Target = [Page];

    fn deref(&self) -> &[Page] {
        // SAFETY: `first..first + len` lies inside the mapping (`populate`
        // checked it), which lives as long as `self.map`. Its bytes are
        // valid `Page`s (zero, or written through their atomics), and every
        // access to them goes through shared references to atomics.
        unsafe { slice::from_raw_parts(self.map.base().wrapping_add(self.first), self.len) }
    }
}

impl Drop for VmemmapPages {
    fn drop(&mut self) {
        self.map.depopulate(self.first, self.len);
    }
}

/// A pagemap's pages array: in its space's memmap, or on the heap.
///
/// Kernel: `dev_pagemap::pages` (v6), placed as [`Vmemmap`] says.
pub(crate) enum Memmap {
    /// At `vmemmap + first_offset`.
    Vmemmap(VmemmapPages),
    /// Its own allocation, as v6's `kvzalloc()`.
    Heap(Box<[Page]>),
}

impl Deref for Memmap {
    type Target = [Page];

    #[inline]
    fn deref(&self) -> &[Page] {
        match self {
            Memmap::Vmemmap(p) => p,
            Memmap::Heap(p) => p,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_populated_by_one_owner_at_a_time() {
        let vm = Vmemmap::reserve(1 << 12).expect("a small reservation succeeds");
        let a = vm.populate(100, 64).unwrap();
        assert_eq!(a.as_ptr(), vm.base().wrapping_add(100).cast_const());
        assert_eq!(a.len(), 64);
        // Any overlap is refused; neighbours are not.
        assert!(vm.populate(163, 1).is_none());
        assert!(vm.populate(36, 65).is_none());
        let b = vm.populate(164, 10).unwrap();
        let c = vm.populate(36, 64).unwrap();
        // Past the end, empty, or overflowing.
        assert!(vm.populate(4095, 2).is_none());
        assert!(vm.populate(0, 0).is_none());
        assert!(vm.populate(u64::MAX, 2).is_none());
        a[0].set_raw(0, 7);
        drop(a);
        // Given back: populated again, at the same address.
        let a2 = vm.populate(100, 64).unwrap();
        assert_eq!(a2.as_ptr(), vm.base().wrapping_add(100).cast_const());
        assert_eq!(b[0].raw(0), 0);
        drop((b, c));
    }

    #[test]
    fn the_reservation_outlives_every_range() {
        let vm = Vmemmap::reserve(1 << 10).unwrap();
        let pages = vm.populate(0, 1 << 10).unwrap();
        drop(vm);
        pages[1023].set_raw(7, 1);
        assert_eq!(pages[1023].raw(7), 1);
    }

    #[test]
    fn large_spaces_reserve_at_most_max_reserve() {
        let vm = Vmemmap::reserve(u64::MAX).unwrap();
        let max = MAX_RESERVE / size_of::<Page>();
        assert!(vm.populate(max as u64 - 1, 1).is_some());
        assert!(vm.populate(max as u64, 1).is_none());
    }
}
