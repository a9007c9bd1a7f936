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
//! adds these dense arrays in front of the index: a lookup is one load
//! whose address depends on the offset alone (issue 14: T1 and T3 in every
//! layout). To keep them small (they are read at random, like the pages),
//! an entry is a 32-bit *id*, tagged [`HEAP_ID`] if the pagemap's pages
//! are not in the space's memmap (so that its page at `offset` is not
//! `vmemmap + offset`), and a third array, indexed by id, holds the
//! pagemap's address. There is an entry per page, and one per section,
//! set where one pagemap covers the section whole; lookups read the
//! per-page entries only while enough pages are in shared sections
//! ([`READ_FIRST_PARTIAL_SHARE`]), else the sections' (which stay in
//! cache). A lookup decides on the entry alone (one test: an untagged id
//! is positive as an `i32`), so the slot's load is only the page's owner,
//! off the branch's path; no entry sends it to the index.
//!
//! Publication is RCU's, with no sequence count (an entry is one word):
//! - `memremap` stores the pagemap in its id's slot, then the id in every
//!   entry, all with Release (its construction happens before a reader
//!   that loads either), after inserting it in the tree;
//! - `memunmap` clears the entries under the writer lock, before the grace
//!   period after which the space lets the pagemap go, so a reader that
//!   loaded one is in a read section that period waits for;
//! - the slot is cleared and the id given back only after that grace
//!   period: a reader holding an id it loaded before the clear finds the
//!   id's slot still naming its pagemap (never null, never a newer one).
//!
//! # Differences from the kernel
//!
//! - Dense, not an `XArray`: an `mmap(MAP_NORESERVE)` reservation of one
//!   32-bit entry per page of the space (at most [`MAX_ENTRIES`]; offsets
//!   past it have no entry and are found through the index), committed
//!   where pagemaps are, and another of one per section; and ids, not
//!   pointers. The kernel's `XArray` stores multi-index entries, which is
//!   what the per-section entries resemble. Cleared entries keep their
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

/// Lookups read the per-page entries only while at least one page in this
/// many lies in a section that no single pagemap covers whole (a
/// *partial* page); else the per-section entries, and the index for the
/// few partial pages. Where every page is in a whole section, the
/// sections' entries (one per section) stay in cache and the pages' (one
/// per page) do not: untouched lookups of 1024 pagemaps of 2048 pages or
/// more took 1.3-1.5x as long reading per-page entries. Where sections are
/// shared the index's wide path costs more than the per-page entries, at
/// every size measured (`docs/perf.md`, issue 14).
pub(crate) const READ_FIRST_PARTIAL_SHARE: u64 = 64;

/// Tag bit of an entry: the pagemap's pages are on the heap
/// (`Memmap::Heap`), so its page at `offset` is not `vmemmap + offset`.
/// The sign bit, so that an untagged id is exactly a positive `i32`.
pub(crate) const HEAP_ID: u32 = 1 << 31;

// Ids stay below the tag, so that `id | HEAP_ID` keeps the id.
const _: () = assert!(MAX_IDS <= HEAP_ID as usize);

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
    /// Page `offset`'s id, tagged [`HEAP_ID`] (0: none). Only ids below
    /// [`MAX_IDS`]: lookups index the slots with an untagged entry as is.
    entries: Array<AtomicU32>,
    /// Section `s`'s id, as `entries`, if one pagemap covers it whole (0:
    /// none, or shared): what a lookup reads where few sections are
    /// shared (see [`READ_FIRST_PARTIAL_SHARE`]), one entry per section.
    sections: Array<AtomicU32>,
    /// Id `i`'s pagemap (null: none); set before its entries and cleared
    /// only once a grace period has passed since they were.
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

/// What a lookup reads: one of the two entry arrays (page `offset`'s
/// entry is `entries[offset >> shift]`, if below `len`) and the slots.
#[derive(Clone, Copy)]
pub(crate) struct RawPgmapArray {
    pub(crate) entries: *const AtomicU32,
    pub(crate) len: u64,
    /// 0 for the per-page entries, the section shift for the sections'.
    pub(crate) shift: u32,
    pub(crate) pgmaps: *const AtomicPtr<DevPagemap>,
}

impl RawPgmapArray {
    /// No array: every lookup finds no entry.
    pub(crate) const NONE: RawPgmapArray = RawPgmapArray {
        entries: ptr::null(),
        len: 0,
        shift: 0,
        pgmaps: ptr::null(),
    };

    /// Id `id`'s pagemap: the pagemap whose entries held `id` when the
    /// caller loaded one, not null.
    ///
    /// # Safety
    ///
    /// - `id` is an entry of this array, untagged, not 0, loaded (Acquire)
    ///   in the caller's read section, which is still open. Entries hold
    ///   only ids below [`MAX_IDS`] (`store`), the slots' length, so the
    ///   id is not masked; the slot is cleared only after a grace period
    ///   since the entries were (`release`).
    #[inline(always)]
    pub(crate) unsafe fn slot(self, id: u32) -> *mut DevPagemap {
        debug_assert!(id != 0 && (id as usize) < MAX_IDS, "not an id: {id:#x}");
        // SAFETY: The caller's contract: `id` is below the slots' length,
        // and they live as long as the entries it was loaded from.
        let slot = unsafe { &*self.pgmaps.wrapping_add(id as usize) };
        // Relaxed: the entry's Acquire load ordered the slot's store (made
        // before the entries') before this load, and no later store comes
        // before the caller's read section ends.
        slot.load(Ordering::Relaxed)
    }
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
        let sections_len = len.div_ceil(1 << section_shift);
        #[cfg(not(loom))]
        let (entries, sections, pgmaps) = (
            Reservation::new(len)?,
            Reservation::new(sections_len)?,
            Reservation::new(MAX_IDS)?,
        );
        #[cfg(loom)]
        let (entries, sections, pgmaps) = (
            Array((0..len).map(|_| AtomicU32::new(0)).collect()),
            Array((0..sections_len).map(|_| AtomicU32::new(0)).collect()),
            Array(
                (0..MAX_IDS)
                    .map(|_| AtomicPtr::new(ptr::null_mut()))
                    .collect(),
            ),
        );
        Some(PgmapArray {
            entries,
            sections,
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

    /// What lookups read (valid as long as `self`): the per-page entries
    /// if [`per_page`](Self::per_page), else the sections'.
    pub(crate) fn raw(&self) -> RawPgmapArray {
        let (entries, shift) = if self.per_page() {
            (&self.entries, 0)
        } else {
            (&self.sections, self.section_shift)
        };
        RawPgmapArray {
            entries: entries.as_ptr().cast_const(),
            len: entries.len() as u64,
            shift,
            pgmaps: self.pgmaps.as_ptr().cast_const(),
        }
    }

    /// Whether lookups read the per-page entries rather than the
    /// sections': at least one page with an entry in
    /// [`READ_FIRST_PARTIAL_SHARE`] is partial. A hint, read once per read
    /// guard; lookups are exact either way (a section's entry is 0 where
    /// the section is shared, and the index then decides).
    pub(crate) fn per_page(&self) -> bool {
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

    /// The entries of the sections `pm` covers whole (those the array
    /// has).
    fn whole_sections(&self, pm: &DevPagemap) -> impl Iterator<Item = &AtomicU32> {
        let r = offsets(pm);
        let whole = r.start.div_ceil(1 << self.section_shift)..r.end >> self.section_shift;
        whole.map_while(|s| self.sections.get(usize::try_from(s).ok()?))
    }

    /// What `pm`'s entries hold for `id`: the id, tagged [`HEAP_ID`] if
    /// its pages are not in the space's memmap.
    fn entry_value(id: u32, pm: &DevPagemap) -> u32 {
        if matches!(pm.memmap(), Memmap::Heap(_)) {
            id | HEAP_ID
        } else {
            id
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
            slot.store(ptr::from_ref(pm).cast_mut(), Ordering::Release);
        }
        self.live.fetch_add(pm.nr_pages().get(), Ordering::Relaxed);
        self.partial
            .fetch_add(self.partial_pages(pm), Ordering::Relaxed);
        let value = Self::entry_value(id, pm);
        for o in offsets(pm) {
            let Some(e) = self.entry(o) else { break };
            e.store(value, Ordering::Release);
        }
        for e in self.whole_sections(pm) {
            e.store(value, Ordering::Release);
        }
    }

    /// Clears `pm`'s offsets, before the grace period that lets it go;
    /// returns its id, for [`release`](Self::release) after that period.
    /// The id's slot stays: a reader may hold an entry it loaded before.
    ///
    /// Kernel: `pgmap_array_delete()` (`xa_store_range(..., NULL)`) in
    /// `memunmap_pages()` (7.1).
    pub(crate) fn clear(&self, pm: &DevPagemap) -> Option<u32> {
        let id = self
            .entry(pm.first_offset().get())
            .map(|e| e.load(Ordering::Relaxed) & !HEAP_ID)
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
            for e in self.whole_sections(pm) {
                e.store(0, Ordering::Relaxed);
            }
        }
        if self.mutants.has(Mutant::PgmapArraySlotClearedEarly) {
            self.clear_slot(id);
        }
        Some(id)
    }

    /// Clears `id`'s slot and gives the id back, once a grace period has
    /// passed since [`clear`](Self::clear) returned it: no reader holds
    /// an entry naming it.
    pub(crate) fn release(&self, id: u32) {
        self.clear_slot(id);
        self.ids.lock().free.push(id);
    }

    fn clear_slot(&self, id: u32) {
        if let Some(slot) = self.pgmaps.get(id as usize) {
            slot.store(ptr::null_mut(), Ordering::Relaxed);
        }
    }

    /// Whether `pm`'s entries all hold one id whose slot names `pm` (or,
    /// if it got no id, all hold none), for `validate`: the first offset
    /// that does not, if any.
    pub(crate) fn check(&self, pm: &DevPagemap) -> Option<u64> {
        let first = pm.first_offset().get();
        let value = self.entry(first)?.load(Ordering::Relaxed);
        let id = value & !HEAP_ID;
        let named = self
            .pgmaps
            .get(id as usize)
            .is_some_and(|s| ptr::eq(s.load(Ordering::Relaxed), pm));
        if value != 0 && (!named || value != Self::entry_value(id, pm)) {
            return Some(first);
        }
        let wrong = |e: &AtomicU32| e.load(Ordering::Relaxed) != value;
        offsets(pm)
            .find(|&o| self.entry(o).is_some_and(wrong))
            .or_else(|| {
                let first_whole = first.div_ceil(1 << self.section_shift);
                let s = self.whole_sections(pm).position(wrong)? as u64;
                Some((first_whole + s) << self.section_shift)
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
        match space.index.view().entry(o) & !HEAP_ID {
            0 => ptr::null_mut(),
            id => space
                .index
                .pgmap_array()
                .unwrap()
                .pgmaps
                .get(id as usize)
                .unwrap()
                .load(Ordering::Relaxed),
        }
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
        assert_eq!(space.index.view().entry(3) & HEAP_ID, HEAP_ID);
        assert!(ptr::eq(named(&space, 3), Arc::as_ptr(&b)));
        let g = space.read();
        let page = g
            .device_private_offset_to_page(DevicePrivateOffset::new(3))
            .unwrap();
        assert!(ptr::eq(&*page, &b.pages()[3]));
        drop(g);
        space.validate().unwrap();
    }

    #[test]
    fn lookups_read_per_page_entries_only_while_sections_are_shared() {
        let space = small_space(); // exact packing, 512-page sections
        let arr = space.index.pgmap_array().unwrap();
        let at = |o: u64| {
            let g = space.read();
            g.device_private_offset_to_page(DevicePrivateOffset::new(o))
                .map(|p| ptr::from_ref(&*p))
        };
        // Whole sections only: one entry per section.
        let whole = map(&space, 4 * 512);
        assert_eq!(arr.partial_pages(&whole), 0);
        assert!(!arr.per_page());
        assert_eq!(arr.raw().shift, 9);
        assert!(ptr::eq(named(&space, 1), Arc::as_ptr(&whole)));
        assert!(ptr::eq(named(&space, 2047), Arc::as_ptr(&whole)));
        // A few partial pages: still per section. Their section has no
        // entry (it is not covered whole), so the index finds them.
        let few = map(&space, 20);
        assert_eq!(arr.partial_pages(&few), 20);
        assert!(!arr.per_page());
        assert_eq!(id_of(arr, 2048 + 3), id_of(arr, 2048));
        assert!(named(&space, 2048 + 3).is_null());
        assert_eq!(at(2048 + 3), Some(ptr::from_ref(&few.pages()[3])));
        assert_eq!(at(2048 + 20), None);
        // One partial page in 64 or more: per page.
        let odd = map(&space, 40);
        assert_eq!(arr.partial_pages(&odd), 40);
        assert!(arr.per_page());
        assert_eq!(arr.raw().shift, 0);
        assert!(ptr::eq(named(&space, 2048 + 3), Arc::as_ptr(&few)));
        assert!(ptr::eq(named(&space, 1), Arc::as_ptr(&whole)));
        // Off the section grid: its ends are partial, its middle is not,
        // and only its middle has section entries.
        let off_grid = map(&space, 3 * 512);
        assert_eq!(arr.partial_pages(&off_grid), 512);
        let first = off_grid.first_offset().get();
        let whole_secs: Vec<u64> = (0..8)
            .filter(|&s| arr.sections.get(s).unwrap().load(Ordering::Relaxed) != 0)
            .map(|s| s as u64)
            .collect();
        assert_eq!(
            whole_secs,
            [0, 1, 2, 3, first.div_ceil(512), first.div_ceil(512) + 1]
        );
        space.memunmap_device_private_pagemap(&odd).unwrap();
        // 512 + 20 of 3604 pages: still one in 64.
        assert!(arr.per_page());
        space.memunmap_device_private_pagemap(&off_grid).unwrap();
        assert!(!arr.per_page());
        let secs = (0..8).filter(|&s| arr.sections.get(s).unwrap().load(Ordering::Relaxed) != 0);
        assert_eq!(
            secs.count(),
            4,
            "the off-grid pagemap's sections are cleared"
        );
        assert_eq!(at(700), Some(ptr::from_ref(&whole.pages()[700])));
        assert_eq!(at(2048 + 3), Some(ptr::from_ref(&few.pages()[3])));
        space.validate().unwrap();
    }
}
