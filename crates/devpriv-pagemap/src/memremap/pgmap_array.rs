//! The space's pagemap array: which pagemap holds each offset.
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
//! pagemap's address. The entries come in *levels*, one per granule size
//! from a page to a section (`2^0..=2^9` pages with 2 MiB sections), and
//! a granule's entry is set where one pagemap covers the granule whole.
//! Lookups read one level (`entries[offset >> shift]`): the sections'
//! while fewer than one page in [`READ_FIRST_PARTIAL_SHARE`] is in a
//! granule no pagemap covers whole (a *partial* page, which the index
//! finds), else the coarsest level with no partial page. That is the
//! granule every pagemap's ends fall on (4 pages for 100-page pagemaps,
//! 256 for 256-page ones), whose entries take a fraction of the per-page
//! ones' cache. Where pagemaps of odd sizes leave only the pages' level
//! exact, the coarsest level with few partial pages is read instead (see
//! [`PgmapArray::read_level`]). A
//! lookup decides on the entry alone (one test: an untagged id is
//! positive as an `i32`), so the slot's load is only the page's owner,
//! off the branch's path; no entry sends it to the index.
//!
//! Publication is RCU's, with no sequence count (an entry is one word):
//! - `memremap` stores the pagemap in its id's slot, then the id in every
//!   entry of every level, all with Release (its construction happens
//!   before a reader that loads either), after inserting it in the tree;
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
//!   where pagemaps are, and one per granule for each coarser level
//!   (together as many again); and ids, not pointers. `memremap` writes
//!   about two entries per page, where the kernel's `xa_store_range()`
//!   writes one multi-index entry (which the coarser levels resemble).
//!   Cleared entries keep their
//!   memory (it is not given back with `madvise`, as readers may be
//!   loading them). A pagemap mapped when every id is taken gets no
//!   entries, and is found through the index.
//! - Under loom, plain arrays of [`SpaceConfig::pgmap_array_pages`]
//!   entries (two levels: pages and sections) and [`MAX_IDS`] ids (no
//!   entries by default, so that the other models keep their state
//!   spaces); under Miri at most 65,536 entries.
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
pub(crate) const MAX_ENTRIES: u64 = if cfg!(miri) { 65_536 } else { 1 << 34 };

/// Ids per space, id 0 meaning "no entry": 2^22 live pagemaps (a 32 MiB
/// reservation); 1,024 under Miri, 4 under loom.
pub(crate) const MAX_IDS: usize = if cfg!(loom) {
    4
} else if cfg!(miri) {
    1_024
} else {
    1 << 22
};

/// Lookups read the per-section entries while fewer than one page in this
/// many lies in a section that no single pagemap covers whole (a
/// *partial* page), and the index for the partial pages; else a finer
/// level with no partial page. The per-section view costs a mispredicted
/// branch and the index's wide path per partial page; a finer view costs
/// every lookup a load of an entry that may miss the cache. Measured with
/// 1024 pagemaps (`docs/perf.md`, issue 14): with no partial pages the
/// sections' view was 1.3-1.5x faster untouched than the pages'; at 1 in
/// 8 (4097-page pagemaps) it was 1.2x faster untouched and 1.4x touched;
/// at 1 in 4 (2049 pages) it was 1.4x slower untouched. One in six is
/// between the two. Between sections and pages, a level with no partial
/// page comes first: preferring one with partial pages under this share
/// made the 100- to 1000-page layouts 1.2-2.6x slower.
pub(crate) const READ_FIRST_PARTIAL_SHARE: u64 = 6;

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
/// zero bytes: built one by one). A slice has the reservation's methods.
#[cfg(loom)]
type Array<T> = Box<[T]>;

/// One 32-bit entry per granule of `1 << shift` pages, for each level of
/// granules, and the pagemaps they name.
///
/// Kernel: `pgmap_array` (7.1).
pub(crate) struct PgmapArray {
    /// The levels, finest first: `levels[0]` has an entry per page, the
    /// last one per section, and those between (not under loom) one per
    /// `2^k` pages for each `k` between.
    levels: Box<[Level]>,
    /// Id `i`'s pagemap (null: none); set before its entries and cleared
    /// only once a grace period has passed since they were.
    pgmaps: Array<AtomicPtr<DevPagemap>>,
    /// Ids never used and ids given back; the writer lock orders their
    /// takers, this lock only `memunmap`'s returns after its grace period.
    ids: Mutex<Ids>,
    /// Pages with an entry; written under the writer lock.
    live: AtomicU64,
    /// The level lookups read (see [`read_level`](Self::read_level)): a
    /// hint, set under the writer lock and read once per read guard.
    read: AtomicU32,
    /// Ids handed out at most: [`MAX_IDS`] (fewer in tests).
    max_ids: usize,
    mutants: Mutants,
}

/// The entries of one granule size.
struct Level {
    /// log2 of pages per granule.
    shift: u32,
    /// Granule `g`'s id, tagged [`HEAP_ID`], if one pagemap covers it
    /// whole (0: none, or shared). Only ids below [`MAX_IDS`]: lookups
    /// index the slots with an untagged entry as is.
    entries: Array<AtomicU32>,
    /// Pages with an entry that lie in no granule their pagemap covers
    /// whole (*partial* pages, which a lookup at this level finds through
    /// the index); written under the writer lock.
    partial: AtomicU64,
}

impl Level {
    /// The entries of the granules `pm` covers whole (those the level
    /// has), with the first offset of each.
    fn whole(&self, pm: &DevPagemap) -> impl Iterator<Item = (u64, &AtomicU32)> {
        let r = offsets(pm);
        let whole = r.start.div_ceil(1 << self.shift)..r.end >> self.shift;
        whole.map_while(|g| Some((g << self.shift, self.entries.get(usize::try_from(g).ok()?)?)))
    }

    /// How many of `pm`'s pages lie outside the granules it covers whole.
    fn partial_pages(&self, pm: &DevPagemap) -> u64 {
        let r = offsets(pm);
        let whole = (r.end >> self.shift).saturating_sub(r.start.div_ceil(1 << self.shift));
        (r.end - r.start) - (whole << self.shift)
    }
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
        // Under loom, pages and sections only: the models' state spaces.
        let shifts: Vec<u32> = if cfg!(loom) {
            let mut s = vec![0, section_shift];
            s.dedup();
            s
        } else {
            (0..=section_shift).collect()
        };
        let levels = shifts
            .into_iter()
            .map(|shift| {
                let n = len.div_ceil(1 << shift);
                // Huge pages for the pages' and the sections' levels only:
                // the first write to each huge page zeroes 2 MiB (a new
                // default space and its first pagemap took 1.0 ms with
                // every level on huge pages, 0.47 ms so, 0.37 ms before
                // the levels between), and those are smaller than the
                // pages' by their granule.
                #[cfg(not(loom))]
                let entries = if shift == 0 || shift == section_shift {
                    Reservation::new(n)?
                } else {
                    Reservation::small(n)?
                };
                #[cfg(loom)]
                let entries = (0..n).map(|_| AtomicU32::new(0)).collect();
                Some(Level {
                    shift,
                    entries,
                    partial: AtomicU64::new(0),
                })
            })
            .collect::<Option<Box<[Level]>>>()?;
        #[cfg(not(loom))]
        let pgmaps = Reservation::new(MAX_IDS)?;
        #[cfg(loom)]
        let pgmaps = (0..MAX_IDS)
            .map(|_| AtomicPtr::new(ptr::null_mut()))
            .collect();
        // Nothing mapped: the sections' entries.
        #[expect(clippy::cast_possible_truncation, reason = "at most 32 levels")]
        let read = AtomicU32::new(levels.len() as u32 - 1);
        Some(PgmapArray {
            levels,
            pgmaps,
            ids: Mutex::new(Ids {
                next: 1,
                free: Vec::new(),
            }),
            live: AtomicU64::new(0),
            read,
            max_ids: MAX_IDS,
            mutants,
        })
    }

    /// What lookups read (valid as long as `self`): the entries of the
    /// level [`read_level`](Self::read_level) chose.
    pub(crate) fn raw(&self) -> RawPgmapArray {
        let level = &self.levels[self.read.load(Ordering::Relaxed) as usize];
        RawPgmapArray {
            entries: level.entries.as_ptr(),
            len: level.entries.len() as u64,
            shift: level.shift,
            pgmaps: self.pgmaps.as_ptr(),
        }
    }

    /// The level lookups should read: the sections' while fewer than one
    /// page with an entry in [`READ_FIRST_PARTIAL_SHARE`] is partial
    /// there; else the coarsest level with no partial page but the pages'
    /// own (its entries take the least cache and send no lookup to the
    /// index); else, where pagemaps of odd sizes leave only the pages'
    /// level exact, the coarsest one with as few partial pages as the
    /// sections' rule asks; else the pages'. A hint: lookups are exact at
    /// every level (an entry is 0 where its granule is shared, and the
    /// index then decides).
    fn read_level(&self) -> usize {
        let live = self.live.load(Ordering::Relaxed);
        let partial = |i: usize| self.levels[i].partial.load(Ordering::Relaxed);
        let few = |i: usize| partial(i).saturating_mul(READ_FIRST_PARTIAL_SHARE) < live;
        let last = self.levels.len() - 1;
        if few(last) || partial(last) == 0 {
            return last;
        }
        let between = || (1..last).rev();
        between()
            .find(|&i| partial(i) == 0)
            .or_else(|| between().find(|&i| few(i)))
            .unwrap_or(0)
    }

    /// Re-chooses the level lookups read; under the writer lock.
    fn choose(&self) {
        #[expect(clippy::cast_possible_truncation, reason = "at most 32 levels")]
        self.read.store(self.read_level() as u32, Ordering::Relaxed);
    }

    /// Entry `offset`, if the array has one.
    fn entry(&self, offset: u64) -> Option<&AtomicU32> {
        self.levels[0].entries.get(usize::try_from(offset).ok()?)
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
        let value = Self::entry_value(id, pm);
        for level in &self.levels {
            level
                .partial
                .fetch_add(level.partial_pages(pm), Ordering::Relaxed);
            for (_, e) in level.whole(pm) {
                e.store(value, Ordering::Release);
            }
        }
        self.choose();
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
        for level in &self.levels {
            level
                .partial
                .fetch_sub(level.partial_pages(pm), Ordering::Relaxed);
            if !self.mutants.has(Mutant::PgmapArrayNotCleared) {
                // Relaxed: a reader that still loads an old value is in a
                // read section the caller's grace period waits for.
                for (_, e) in level.whole(pm) {
                    e.store(0, Ordering::Relaxed);
                }
            }
        }
        self.choose();
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
    /// (of a page or a granule) that does not, if any.
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
        self.levels.iter().find_map(|level| {
            level
                .whole(pm)
                .find(|(_, e)| e.load(Ordering::Relaxed) != value)
                .map(|(o, _)| o)
        })
    }
}

/// The offsets of `pm`'s pages.
fn offsets(pm: &DevPagemap) -> std::ops::Range<u64> {
    let first = pm.first_offset().get();
    first..first + pm.nr_pages().get()
}

#[cfg(all(test, not(loom)))]
mod tests;
