//! The space's per-page pagemap array: which pagemap holds each offset.
//!
//! Kernel: `pgmap_array` (`mm/memremap.c`, 7.1, and still there under
//! v6 for the other memory types), the `XArray` that `pagemap_range()`
//! fills with `xa_store_range()` over a pagemap's pfns and
//! `get_dev_pagemap()` reads with `xa_load()` under `rcu_read_lock()`.
//! Before v6 a device-private pfn found its pagemap there, or as
//! `page_pgmap()` of `pfn_to_page()`. The v6 proposal takes device-private
//! pagemaps out of it (they have no pfns) and finds them in
//! `device_private_pgmap_tree`.
//!
//! The model keeps the tree (the kernel's path) and the section index, and
//! adds this dense array for offsets in sections that no single pagemap
//! covers: a lookup there is one load whose address depends on the offset
//! alone (issue 14: T1 and T3 in every layout). To keep the array small
//! (it is read at random, like the pages), an entry is a 32-bit *id*, and
//! a second array, indexed by id, holds the pagemap's address, tagged
//! [`HEAP`] if its pages are not in the space's memmap (so that its page
//! at `offset` is not `vmemmap + offset`).
//!
//! Publication is RCU's, with no sequence count (an entry is one word):
//! - `memremap` stores the pagemap in its id's slot, then the id in every
//!   entry, all with Release (its construction happens before a reader
//!   that loads either), after inserting it in the tree;
//! - `memunmap` clears both under the writer lock, before the grace period
//!   after which the space lets the pagemap go, so a reader that loaded
//!   either is in a read section that period waits for;
//! - the id is given back only after that grace period: a reader holding
//!   an id it loaded before the clear must not find a newer pagemap in its
//!   slot.
//!
//! # Differences from the kernel
//!
//! - Dense, not an `XArray`: an `mmap(MAP_NORESERVE)` reservation of one
//!   32-bit entry per page of the space (at most [`MAX_ENTRIES`]; offsets
//!   past it have no entry and are found through the index), committed
//!   where pagemaps are; and ids, not pointers. Cleared entries keep their
//!   memory (it is not given back with `madvise`, as readers may be
//!   loading them). A pagemap mapped when every id is taken gets no
//!   entries, and is found through the index.
//! - Under loom, plain arrays of [`SpaceConfig::pgmap_array_pages`]
//!   entries and [`MAX_IDS`] ids (no entries by default, so that the other
//!   models keep their state spaces); under Miri at most 65,536 entries.
//!
//! [`SpaceConfig::pgmap_array_pages`]: crate::SpaceConfig::pgmap_array_pages

use crate::memremap::{DevPagemap, Memmap};
#[cfg(not(loom))]
use crate::sparse_vmemmap::Reservation;
use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_core::sync::Mutex;
use devpriv_core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::ptr;

/// The most entries one space reserves: 2^34, one per page of the default
/// 46-bit space (64 GiB of address space, committed only where pagemaps
/// are); 65,536 under Miri, which commits the whole mapping.
pub(crate) const MAX_ENTRIES: u64 = if cfg!(miri) { 1 << 16 } else { 1 << 34 };

/// Ids per space, id 0 meaning "no entry": 2^22 live pagemaps (a 32 MiB
/// reservation); 1,024 under Miri, 4 under loom.
pub(crate) const MAX_IDS: usize = if cfg!(loom) {
    4
} else if cfg!(miri) {
    1 << 10
} else {
    1 << 22
};

/// Lookups read the array first only while at least one page in this
/// many lies in a section that no single pagemap covers whole (a
/// *partial* page). Where every page is in a whole section, the index's
/// compact slots (one per section) stay in cache and the entries (one per
/// page) do not: untouched lookups of 1024 pagemaps of 2048 pages or more
/// took 1.3-1.5x as long reading the array first. Where sections are
/// shared the index's wide path costs more than the array, at every size
/// measured (`docs/perf.md`, issue 14).
pub(crate) const READ_FIRST_PARTIAL_SHARE: u64 = 64;

/// Tag bit of an id's slot: the pagemap's pages are on the heap
/// (`Memmap::Heap`), so its page at `offset` is not `vmemmap + offset`.
pub(crate) const HEAP: usize = 1;

/// An array of `T`s, zero until written.
#[cfg(not(loom))]
type Array<T> = Reservation<T>;
/// An array of `T`s, zero until written (loom's atomics are not valid as
/// zero bytes: built one by one).
#[cfg(loom)]
struct Array<T>(Box<[T]>);

#[cfg(loom)]
impl<T> Array<T> {
    fn as_ptr(&self) -> *mut T {
        self.0.as_ptr().cast_mut()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn get(&self, i: usize) -> Option<&T> {
        self.0.get(i)
    }
}

/// One 32-bit entry per page `0..len`, and the pagemaps they name.
///
/// Kernel: `pgmap_array` (7.1).
pub(crate) struct PgmapArray {
    /// Page `offset`'s id (0: none).
    entries: Array<AtomicU32>,
    /// Id `i`'s pagemap, tagged [`HEAP`] (null: none).
    pgmaps: Array<AtomicPtr<DevPagemap>>,
    /// Ids never used and ids given back; the writer lock orders their
    /// takers, this lock only `memunmap`'s returns after its grace period.
    ids: Mutex<Ids>,
    /// Pages with an entry, and those of them that are partial (see
    /// [`READ_FIRST_PARTIAL_SHARE`]); written under the writer lock.
    live: AtomicU64,
    partial: AtomicU64,
    /// log2 of pages per section of the space's index.
    section_shift: u32,
    /// Ids handed out at most: [`MAX_IDS`] (fewer in tests).
    max_ids: usize,
    mutants: Mutants,
}

/// The id allocator: ids below `next` not in `free` are taken.
struct Ids {
    next: u32,
    free: Vec<u32>,
}

/// What a lookup reads: the two arrays' first elements and lengths.
#[derive(Clone, Copy)]
pub(crate) struct RawPgmapArray {
    pub(crate) entries: *const AtomicU32,
    pub(crate) entries_len: u64,
    pub(crate) pgmaps: *const AtomicPtr<DevPagemap>,
}

impl RawPgmapArray {
    /// No array: every lookup finds no entry.
    pub(crate) const NONE: RawPgmapArray = RawPgmapArray {
        entries: ptr::null(),
        entries_len: 0,
        pgmaps: ptr::null(),
    };
}

impl PgmapArray {
    /// An array for pages `0..pages` (at most [`MAX_ENTRIES`]), or `None`
    /// for no pages or if a reservation fails.
    ///
    /// Kernel: `DEFINE_XARRAY(pgmap_array)` (7.1).
    pub(crate) fn new(pages: u64, section_shift: u32, mutants: Mutants) -> Option<PgmapArray> {
        let len = usize::try_from(pages.min(MAX_ENTRIES)).ok()?;
        if len == 0 {
            return None;
        }
        #[cfg(not(loom))]
        let (entries, pgmaps) = (Reservation::new(len)?, Reservation::new(MAX_IDS)?);
        #[cfg(loom)]
        let (entries, pgmaps) = (
            Array((0..len).map(|_| AtomicU32::new(0)).collect()),
            Array(
                (0..MAX_IDS)
                    .map(|_| AtomicPtr::new(ptr::null_mut()))
                    .collect(),
            ),
        );
        Some(PgmapArray {
            entries,
            pgmaps,
            ids: Mutex::new(Ids {
                next: 1,
                free: Vec::new(),
            }),
            live: AtomicU64::new(0),
            partial: AtomicU64::new(0),
            section_shift,
            max_ids: MAX_IDS,
            mutants,
        })
    }

    /// The arrays, for lookups (valid as long as `self`).
    pub(crate) fn raw(&self) -> RawPgmapArray {
        RawPgmapArray {
            entries: self.entries.as_ptr().cast_const(),
            entries_len: self.entries.len() as u64,
            pgmaps: self.pgmaps.as_ptr().cast_const(),
        }
    }

    /// Whether lookups should read the array first: at least one page with
    /// an entry in [`READ_FIRST_PARTIAL_SHARE`] is partial. A hint, read
    /// once per read guard; lookups are exact either way.
    pub(crate) fn read_first(&self) -> bool {
        let partial = self.partial.load(Ordering::Relaxed);
        partial > 0
            && partial.saturating_mul(READ_FIRST_PARTIAL_SHARE) >= self.live.load(Ordering::Relaxed)
    }

    /// How many of `pm`'s pages lie outside the sections it covers whole.
    fn partial_pages(&self, pm: &DevPagemap) -> u64 {
        let r = offsets(pm);
        let whole =
            (r.end >> self.section_shift).saturating_sub(r.start.div_ceil(1 << self.section_shift));
        (r.end - r.start) - (whole << self.section_shift)
    }

    /// Entry `offset`, if the array has one.
    fn entry(&self, offset: u64) -> Option<&AtomicU32> {
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// What `pm`'s id slot holds: its address, tagged [`HEAP`] if its
    /// pages are not in the space's memmap.
    fn slot_value(pm: &DevPagemap) -> *mut DevPagemap {
        let p = ptr::from_ref(pm).cast_mut();
        if matches!(pm.memmap(), Memmap::Heap(_)) {
            p.map_addr(|a| a | HEAP)
        } else {
            p
        }
    }

    /// Points `pm`'s offsets at it, through a new id (none if every id is
    /// taken: its lookups then go through the index). The caller holds
    /// the space's writer lock and keeps `pm` alive until
    /// [`clear`](Self::clear) and a grace period after it.
    ///
    /// Kernel: `xa_store_range(&pgmap_array, ..., pgmap)` in
    /// `pagemap_range()` (7.1).
    pub(crate) fn store(&self, pm: &DevPagemap) {
        // A pagemap that starts past the array gets no id (`clear` finds
        // it through its first entry).
        if self.entry(pm.first_offset().get()).is_none() {
            return;
        }
        let id = {
            let mut ids = self.ids.lock();
            match ids.free.pop() {
                Some(id) => id,
                None if (ids.next as usize) < self.max_ids => {
                    ids.next += 1;
                    ids.next - 1
                }
                None => return,
            }
        };
        // Release: `pm`'s construction (and its pages') happen before a
        // reader that loads the slot, or an entry and then the slot. Not
        // load-bearing today: the tree insert before this call ends with
        // its grace-period cookie's `SeqCst` fence, which orders the
        // construction before these stores even if they were `Relaxed`
        // (loom showed it: such a mutant survived every interleaving).
        if let Some(slot) = self.pgmaps.get(id as usize) {
            slot.store(Self::slot_value(pm), Ordering::Release);
        }
        self.live.fetch_add(pm.nr_pages().get(), Ordering::Relaxed);
        self.partial
            .fetch_add(self.partial_pages(pm), Ordering::Relaxed);
        for o in offsets(pm) {
            let Some(e) = self.entry(o) else { break };
            e.store(id, Ordering::Release);
        }
    }

    /// Clears `pm`'s offsets and its id's slot, before the grace period
    /// that lets it go; returns the id, for [`release`](Self::release)
    /// after that period.
    ///
    /// Kernel: `pgmap_array_delete()` (`xa_store_range(..., NULL)`) in
    /// `memunmap_pages()` (7.1).
    pub(crate) fn clear(&self, pm: &DevPagemap) -> Option<u32> {
        let id = self
            .entry(pm.first_offset().get())
            .map(|e| e.load(Ordering::Relaxed))
            .filter(|&id| id != 0)?;
        self.live.fetch_sub(pm.nr_pages().get(), Ordering::Relaxed);
        self.partial
            .fetch_sub(self.partial_pages(pm), Ordering::Relaxed);
        if !self.mutants.has(Mutant::PgmapArrayNotCleared) {
            // Relaxed: a reader that still loads an old value is in a read
            // section the caller's grace period waits for.
            for o in offsets(pm) {
                let Some(e) = self.entry(o) else { break };
                e.store(0, Ordering::Relaxed);
            }
            if let Some(slot) = self.pgmaps.get(id as usize) {
                slot.store(ptr::null_mut(), Ordering::Relaxed);
            }
        }
        Some(id)
    }

    /// Gives `id` back, once a grace period has passed since
    /// [`clear`](Self::clear) returned it.
    pub(crate) fn release(&self, id: u32) {
        self.ids.lock().free.push(id);
    }

    /// Whether `pm`'s entries all hold one id whose slot names `pm` (or,
    /// if it got no id, all hold none), for `validate`: the first offset
    /// that does not, if any.
    pub(crate) fn check(&self, pm: &DevPagemap) -> Option<u64> {
        let first = pm.first_offset().get();
        let id = self.entry(first)?.load(Ordering::Relaxed);
        let named = |id: u32| {
            self.pgmaps
                .get(id as usize)
                .is_some_and(|s| s.load(Ordering::Relaxed) == Self::slot_value(pm))
        };
        if id != 0 && !named(id) {
            return Some(first);
        }
        offsets(pm).find(|&o| {
            self.entry(o)
                .is_some_and(|e| e.load(Ordering::Relaxed) != id)
        })
    }
}

/// The offsets of `pm`'s pages.
fn offsets(pm: &DevPagemap) -> std::ops::Range<u64> {
    let first = pm.first_offset().get();
    first..first + pm.nr_pages().get()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::memremap::{DevicePrivateSpace, NoopOps, Owner, PagemapParams, SpaceConfig};
    use devpriv_core::{DevicePrivateOffset, PageCount};
    use std::sync::Arc;

    fn map(space: &DevicePrivateSpace, n: u64) -> Arc<DevPagemap> {
        let params = PagemapParams::private(PageCount::new(n), Owner(1), Arc::new(NoopOps));
        space.memremap_device_private_pagemap(params, 0).unwrap()
    }

    /// What a lookup reads first for `o`: the pagemap its entry names.
    fn named(space: &DevicePrivateSpace, o: u64) -> *mut DevPagemap {
        space.index.view().entry(o)
    }

    /// A 16 MiB space (4096 pages; small, for Miri) with the defaults.
    fn small_space() -> DevicePrivateSpace {
        DevicePrivateSpace::with_config(SpaceConfig {
            space_shift: Some(24),
            ..SpaceConfig::default()
        })
    }

    /// A space with no array of its own, for arrays built by hand.
    fn bare_space() -> DevicePrivateSpace {
        DevicePrivateSpace::with_config(SpaceConfig {
            space_shift: Some(24),
            pgmap_array_pages: 0,
            ..SpaceConfig::default()
        })
    }

    fn id_of(a: &PgmapArray, o: u64) -> u32 {
        a.entry(o).unwrap().load(Ordering::Relaxed)
    }

    #[test]
    fn store_names_every_page_and_unmap_clears_them() {
        let space = small_space();
        let a = map(&space, 10);
        let b = map(&space, 3);
        let arr = space.index.pgmap_array().unwrap();
        assert_eq!((arr.check(&a), arr.check(&b)), (None, None));
        for o in 0..10 {
            assert!(ptr::eq(named(&space, o), Arc::as_ptr(&a)), "offset {o}");
        }
        assert!(ptr::eq(named(&space, 12), Arc::as_ptr(&b)));
        assert!(named(&space, 13).is_null());
        space.memunmap_device_private_pagemap(&a).unwrap();
        for o in 0..10 {
            assert!(named(&space, o).is_null(), "offset {o} after unmap");
            assert_eq!(id_of(arr, o), 0);
        }
        assert!(ptr::eq(named(&space, 10), Arc::as_ptr(&b)));
        let g = space.read();
        assert!(
            g.device_private_offset_to_page(DevicePrivateOffset::new(10))
                .is_some()
        );
        drop(g);
        space.validate().unwrap();
    }

    #[test]
    fn an_id_comes_back_only_once_released() {
        let space = bare_space();
        let (p, q, r) = (map(&space, 4), map(&space, 4), map(&space, 4));
        let arr = PgmapArray::new(64, 9, Mutants::NONE).unwrap();
        arr.store(&p);
        let id = id_of(&arr, 0);
        assert_ne!(id, 0);
        assert_eq!(arr.clear(&p), Some(id));
        assert_eq!((0..4).map(|o| id_of(&arr, o)).max(), Some(0));
        // Not released yet (a reader may still hold it): a fresh id.
        arr.store(&q);
        assert_ne!(id_of(&arr, 4), id);
        arr.release(id);
        arr.store(&r);
        assert_eq!(id_of(&arr, 8), id);
        assert_eq!((arr.check(&q), arr.check(&r)), (None, None));
        // A pagemap the array does not name is reported.
        assert_eq!(arr.check(&p), None, "cleared: no id, no entries");
        arr.store(&p);
        arr.entry(2).unwrap().store(0, Ordering::Relaxed);
        assert_eq!(arr.check(&p), Some(2));
    }

    #[test]
    fn a_pagemap_without_an_id_is_found_through_the_index() {
        let space = bare_space();
        let (p, q) = (map(&space, 4), map(&space, 4));
        let mut arr = PgmapArray::new(64, 9, Mutants::NONE).unwrap();
        arr.max_ids = 2; // id 0 (none) and one more
        arr.store(&p);
        arr.store(&q);
        assert_ne!(id_of(&arr, 0), 0);
        assert_eq!((4..8).map(|o| id_of(&arr, o)).max(), Some(0));
        assert_eq!(arr.check(&q), None);
        assert_eq!(arr.clear(&q), None);
        // Past the array's end: no id taken, none to give back.
        let r = map(&space, 4);
        let small = PgmapArray::new(6, 9, Mutants::NONE).unwrap();
        small.store(&r);
        assert_eq!(small.clear(&r), None);
        small.store(&p);
        assert_eq!(small.ids.lock().next, 2, "r took no id");
        assert_eq!(small.clear(&p), Some(1));
    }

    #[test]
    fn a_heap_pagemap_is_tagged_and_still_found() {
        let space = small_space();
        let a = map(&space, 8);
        // Unmapped but referenced: its memmap range stays its own, so the
        // next pagemap at those offsets gets a heap array.
        space.memunmap_device_private_pagemap(&a).unwrap();
        let b = map(&space, 8);
        assert_eq!(b.first_offset(), a.first_offset());
        assert!(matches!(b.memmap(), Memmap::Heap(_)));
        let e = named(&space, 3);
        assert_eq!(e.addr() & HEAP, HEAP);
        assert!(ptr::eq(e.map_addr(|x| x & !HEAP), Arc::as_ptr(&b)));
        let g = space.read();
        let page = g
            .device_private_offset_to_page(DevicePrivateOffset::new(3))
            .unwrap();
        assert!(ptr::eq(&*page, &b.pages()[3]));
        drop(g);
        space.validate().unwrap();
    }

    #[test]
    fn lookups_read_the_array_first_only_while_sections_are_shared() {
        let space = small_space(); // exact packing, 512-page sections
        let arr = space.index.pgmap_array().unwrap();
        // Whole sections only: the index's compact slots.
        let whole = map(&space, 4 * 512);
        assert_eq!(arr.partial_pages(&whole), 0);
        assert!(!arr.read_first());
        assert!(named(&space, 1).is_null());
        // One partial page in 64 or more: the array first.
        let odd = map(&space, 40);
        assert_eq!(arr.partial_pages(&odd), 40);
        assert!(arr.read_first());
        assert!(ptr::eq(named(&space, 1), Arc::as_ptr(&whole)));
        // Off the section grid: its ends are partial, its middle is not.
        let off_grid = map(&space, 3 * 512);
        assert_eq!(arr.partial_pages(&off_grid), 512);
        space.memunmap_device_private_pagemap(&odd).unwrap();
        // 512 of 3584 pages: still one in 64.
        assert!(arr.read_first());
        space.memunmap_device_private_pagemap(&off_grid).unwrap();
        assert!(!arr.read_first());
        let g = space.read();
        let page = g
            .device_private_offset_to_page(DevicePrivateOffset::new(700))
            .unwrap();
        assert!(ptr::eq(&*page, &whole.pages()[700]));
    }
}
