//! The section index: offset → page in a few dependent loads, in every
//! layout.
//!
//! Kernel: `mem_section[][]` and `__nr_to_section()` (`mm/sparse.c`,
//! `include/linux/mmzone.h`, `SPARSEMEM_EXTREME`): a root array of lazily
//! allocated leaves, one slot per section (main, as a model-only index).
//!
//! The v6 proposal turned `pfn_to_page()` (pointer arithmetic) into a maple-tree
//! walk; this index is how the model gets the arithmetic back. The range
//! tree stays the truth; the index is derived from it under the space's
//! writer lock. A section holds nothing, one pagemap (covering all of it
//! or a part), two pagemaps (a *pair*: the kernel's exact packing makes
//! one wherever a pagemap ends inside a section), or three or more (a
//! *shared section*: pagemaps smaller than a section). No layout falls
//! back to the tree.
//!
//! # Two slots per section
//!
//! Every section has a **wide slot**, one cache line that says everything:
//! a sequence count and two *parts*, each a pagemap, its biased memmap base
//! (`pages - first_offset`, as SPARSEMEM encodes `section_mem_map`, so
//! `base + offset` is the page and the lookup never reads the pagemap's
//! header) and its bounds in the section. A pair fills both parts; one
//! pagemap fills part 0; a shared section's part 0 points to an immutable
//! table of its sub-ranges ([`Shared`]: the starts of up to 8 searched
//! with one packed compare, more in a sorted *spill* array). Part 0's
//! other two words then hold the table's *hint*: the first pages of the
//! section's partition into sub-ranges and the holes between them, up to
//! 8 intervals of 16 bits each (sections of up to 2^15 pages), in the
//! slot's own cache line. The lookup counts the interval starts at or
//! below the page there ([`hint_index`]) and reads one line of the table,
//! the interval's base and pagemap (null: a hole, a miss). A spilled
//! table (more than 8 pagemaps in the section: pagemaps under 64 pages)
//! has a two-level hint: the slot's lanes pick a group of 8 intervals,
//! and the group's lanes, one line in the table, the interval (up to 64
//! intervals); past 64, a page map (a sub-range index per page) replaces
//! the spill array's binary search. The lookup picks the part with a
//! compare, not a branch: a layout that mixes one-pagemap sections and
//! pairs (pagemaps of a few sections each) would mispredict half its
//! lookups on a branch.
//!
//! Every section also has a 16-byte **compact slot**: a pagemap that
//! covers the whole section and its base, or null, or a marker that sends
//! the reader to the wide slot. Layouts of whole sections only (large
//! pagemaps packed exactly, 2 MiB-aligned ones) then touch 16 bytes per
//! section, not a cache line: at 2^17 hot sections that is 2 MiB against
//! 8. A leaf is read through its compact slots until one of its sections
//! first needs the wide slot (a part, a pair, a table); from then on its
//! readers go straight to the wide slots. The writer keeps both slots of
//! every section current, so the leaf's flag only chooses which one to
//! read, and needs no ordering.
//!
//! # The sequence counts
//!
//! A wide slot's words are written in place, so the reader uses the
//! seqlock pattern (`read_seqcount_begin()`/`read_seqcount_retry()`):
//! load the count (Acquire), the words, `fence(Acquire)`, and the count
//! again; the words are used only if the count was even and did not
//! change. The writer makes the count odd, issues `fence(Release)`, writes
//! the words and makes the count even with a `Release` store. A reader that
//! finds the slot mid-rewrite asks the tree (a rewrite is a few stores;
//! readers rarely meet one). A table is immutable; a reader trusts the
//! hint only if the count shows it was read with the table's pointer, and
//! otherwise searches the table in full, which is safe without the count:
//! the writer's `fence(Release)` comes before it stores the pointer, so a
//! reader that read the pointer and then issued its `fence(Acquire)` sees
//! the whole table (`rcu_assign_pointer()`).
//!
//! A compact slot uses its pointer as the count: load the pointer
//! (Acquire), the base, `fence(Acquire)`, and the pointer again. A
//! pagemap's base in a section never changes while it is mapped, so the
//! writer changes a base only after replacing the pointer (with the
//! marker, when it was a pagemap) and a `fence(Release)`; a reader that
//! read a new base sees the old pointer gone on its re-check and reads the
//! wide slot instead, which the writer updated first. The intermediate
//! value is the marker, never null: null reads as "no pagemap" and would
//! make a live pagemap's offset miss (found by `devpriv stress` when the
//! marker was null). There is no ABA: a pagemap's address cannot be reused
//! while a reader that found it is inside its read section.
//!
//! The re-checks are needed because `memunmap` drops the writer lock
//! before its grace period: a concurrent `memremap` can publish a new
//! pagemap (and base) in the section while a reader is still in it.
//!
//! # Reclamation
//!
//! Leaves are never freed before the index is dropped. Slots hold raw
//! pointers to pagemaps that the range tree keeps alive: a pagemap removed
//! from the index and the tree is dropped only when the tree's grace period
//! ends, and every reader of the index holds a read guard of the tree. A
//! replaced shared table is retired against the tree's SRCU domain and
//! freed after the same kind of grace period (`kfree_rcu()`).

use crate::memremap::DevPagemap;
use crate::memremap::pgmap_array::{HEAP_ID, PgmapArray, RawPgmapArray};
use crate::mm_types::{Page, PageRef};
use crate::sparse_vmemmap::Vmemmap;
use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_core::srcu::{RetireList, Srcu};
use devpriv_core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering, fence};
use devpriv_core::sync::{Mutex, TrackedCell, UnsafeCell};
use devpriv_rangetree::ReadGuard;
use std::ptr::{self, NonNull};
use std::sync::Arc;

/// A read guard of the space's range tree: what keeps a pagemap found in
/// the index alive (module docs, "Reclamation").
pub(crate) type TreeGuard<'g> = ReadGuard<'g, Arc<DevPagemap>>;

/// log2 of the slots in one leaf.
#[cfg(not(loom))]
const LEAF_BITS: u32 = 12;
// Every slot is a loom object: keep leaves tiny under loom.
#[cfg(loom)]
const LEAF_BITS: u32 = 2;
const LEAF_SLOTS: usize = 1 << LEAF_BITS;

/// Low bits of a slot's pointer word. Pagemaps and shared tables are at
/// least 8-byte aligned, so both bits are free.
const TAG: usize = 0b11;
/// The pointer is a shared section's table (either kind).
const SHARED: usize = 0b10;
/// The table's sub-ranges are in its spill array (more than `INLINE`).
const SPILL: usize = 0b01;

/// One pagemap's part of a section, as a slot holds it: the pagemap, its
/// biased memmap base (`base + offset` is the page), and its bounds
/// `lo | hi << 32` (section-relative pages `lo..hi`).
struct SubCell {
    pgmap: AtomicPtr<DevPagemap>,
    base: AtomicPtr<Page>,
    bounds: AtomicU64,
}

/// The bounds word of a slot's absent second part: `lo` is above every
/// section-relative page, so a lookup never picks it.
const NO_SECOND: u64 = u64::MAX;

/// One section's slot, one cache line: a sequence count and up to two
/// parts (module docs). Part 0's pointer may instead be a tagged shared
/// table, or null (empty).
#[repr(C, align(64))]
struct SlotCell {
    /// Odd while the writer rewrites the slot (`seqcount_t`).
    seq: AtomicU64,
    parts: [SubCell; 2],
}

/// A section's compact slot: a pagemap that covers the whole section and
/// its biased memmap base, 16 bytes, so the hot slots of a thousand
/// sections fit in L1. Anything else (no pagemap, a part of one, two or
/// more) is in the section's wide slot, and the compact slot says so.
#[repr(C, align(16))]
struct CompactCell {
    /// A pagemap covering the whole section, or null (no pagemap), or
    /// `WIDE` (read the wide slot).
    pgmap: AtomicPtr<DevPagemap>,
    base: AtomicPtr<Page>,
}

/// A compact slot's "read the wide slot". Never dereferenced; its address
/// (1) is never a pagemap's.
fn wide_marker() -> *mut DevPagemap {
    ptr::without_provenance_mut(1)
}

/// A leaf: its slots inline, so a lookup goes root → leaf → slot with no
/// pointer in between. Every section has both slots, kept up to date by
/// the writer; a leaf is read through its compact slots until any of its
/// sections needs a wide one (module docs).
struct Leaf {
    /// Readers go straight to the wide slots (set once, never cleared).
    wide: AtomicBool,
    compact: [CompactCell; LEAF_SLOTS],
    slots: [SlotCell; LEAF_SLOTS],
    /// Loom only: the leaf's initialisation as one tracked write, which
    /// every reader that reaches the leaf reads (loom does not track the
    /// initialisation of atomics). Zero-sized otherwise.
    init: TrackedCell<bool>,
}

/// A heap leaf of empty slots (320 KiB).
fn new_leaf() -> Box<Leaf> {
    let part = |bounds| SubCell {
        pgmap: AtomicPtr::new(ptr::null_mut()),
        base: AtomicPtr::new(ptr::null_mut()),
        bounds: AtomicU64::new(bounds),
    };
    Box::new(Leaf {
        wide: AtomicBool::new(false),
        compact: std::array::from_fn(|_| CompactCell {
            pgmap: AtomicPtr::new(ptr::null_mut()),
            base: AtomicPtr::new(ptr::null_mut()),
        }),
        slots: std::array::from_fn(|_| SlotCell {
            seq: AtomicU64::new(0),
            parts: [part(0), part(NO_SECOND)],
        }),
        init: TrackedCell::new(true),
    })
}

/// Sub-ranges a shared table keeps inline, searched 8 at a time; more
/// (pagemaps under 64 pages in 2 MiB sections) go to a sorted spill array.
/// Also the lanes of a hint: the intervals of a one-level hint, and of
/// each group of a two-level one.
const INLINE: usize = 8;
/// Groups of a spilled table's two-level hint.
const GROUPS: usize = 8;
/// Intervals a two-level hint reaches (pagemaps of 8 pages and up in
/// 2 MiB sections).
const DENSE: usize = INLINE * GROUPS;

/// A hint lane that no section-relative page reaches: above every page of
/// a section of at most `1 << HINT_MAX_SHIFT` pages.
const HINT_NONE: u16 = 0x8000;
/// Sections up to this size (log2 pages, 128 MiB of 4 KiB pages: the
/// kernel's x86-64 `SECTION_SIZE_BITS`) get hints.
const HINT_MAX_SHIFT: u32 = 15;
/// The top bit of each 16-bit lane.
const HINT_HIGH: u64 = 0x8000_8000_8000_8000;

/// Counts full searches of a table (unit tests check that a stable
/// table's hint makes them unneeded). Nothing outside tests.
#[inline(always)]
fn count_full_search() {
    #[cfg(test)]
    tests::FULL_SEARCHES.with(|n| n.set(n.get() + 1));
}

/// Packs up to 8 interval starts into a slot's two hint words, `HINT_NONE`
/// in the lanes past them.
fn pack_hint(starts: &[u16]) -> [u64; 2] {
    let mut w = [0u64; 2];
    for k in 0..INLINE {
        let lane = starts.get(k).copied().unwrap_or(HINT_NONE);
        w[k / 4] |= u64::from(lane) << (16 * (k % 4));
    }
    w
}

/// `section`'s partition into `parts` (sorted, disjoint) and the holes
/// around them: each interval's first page and what it holds, or `None`
/// if the section is too large for 16-bit lanes.
fn partition<P>(
    parts: &[P],
    section_pages: u64,
    sub: impl Fn(&P) -> Sub,
) -> Option<(Vec<u16>, Vec<Interval>)> {
    if section_pages > 1 << HINT_MAX_SHIFT {
        return None;
    }
    let (mut starts, mut intervals) = (Vec::new(), Vec::new());
    let mut at = 0;
    for p in parts {
        let sub = sub(p);
        if sub.start > at {
            starts.push(at);
            intervals.push(HOLE);
        }
        starts.push(sub.start);
        intervals.push(Interval {
            base: sub.base,
            pgmap: sub.pgmap,
        });
        at = sub.end;
    }
    if u64::from(at) < section_pages {
        starts.push(at);
        intervals.push(HOLE);
    }
    // Below 2^15 (checked above), so every start fits a lane.
    let starts = starts
        .iter()
        .map(|&x| u16::try_from(x).unwrap_or(HINT_NONE))
        .collect();
    Some((starts, intervals))
}

/// The interval of a slot's hint words (see [`Shared::hints`]) that holds
/// section-relative page `rel`: the number of interval starts at or below
/// `rel`, minus one; `None` (0 starts) for a section without a hint, whose
/// lanes are all `HINT_NONE`. SWAR: in each lane `(rel | 0x8000) - start`
/// keeps its top bit exactly when `start <= rel`, and never borrows from
/// the next lane since `rel < 0x8000` and `start <= 0x8000`; the lanes'
/// verdicts are summed by a multiply (no `popcnt`, which baseline x86-64
/// lacks).
#[inline(always)]
fn hint_index(hints: [u64; 2], rel: u32) -> Option<usize> {
    const LANES: u64 = 0x0001_0001_0001_0001;
    let r = (u64::from(rel) * LANES) | HINT_HIGH;
    // Lane sums of at most 2 each, then all lanes into the top one.
    let ones = (((r - hints[0]) & HINT_HIGH) >> 15) + (((r - hints[1]) & HINT_HIGH) >> 15);
    let n = (ones.wrapping_mul(LANES) >> 48) as usize;
    n.checked_sub(1)
}

/// A spilled table's page map (see [`SharedData::spill_map`]) for
/// `subs`, sorted, disjoint sub-ranges of a section of `section_pages`
/// (at most `1 << HINT_MAX_SHIFT`) pages.
fn spill_map(subs: &[Sub], section_pages: u64) -> Box<[u16]> {
    let mut map = vec![NO_SUB; usize::try_from(section_pages).unwrap_or(0)];
    for (k, sub) in subs.iter().enumerate() {
        // At most one sub-range per page, so `k < 2^15`.
        let k = u16::try_from(k).unwrap_or(NO_SUB);
        let range = usize::try_from(sub.start).unwrap_or(0)..usize::try_from(sub.end).unwrap_or(0);
        if let Some(pages) = map.get_mut(range) {
            pages.fill(k);
        }
    }
    map.into_boxed_slice()
}

/// One pagemap's part of a shared section.
#[derive(Clone, Copy, Debug)]
struct Sub {
    /// Section-relative first page of the part.
    start: u32,
    /// Section-relative end (exclusive).
    end: u32,
    /// Biased memmap base: `base + offset` is the page.
    base: *mut Page,
    pgmap: *const DevPagemap,
}

/// One interval of a table's partition of its section (see
/// [`Shared::hints`]): a sub-range's biased memmap base and pagemap, or a
/// hole (both null). Four to a cache line.
#[repr(C)]
#[derive(Clone, Copy)]
struct Interval {
    base: *mut Page,
    pgmap: *const DevPagemap,
}

/// A hole.
const HOLE: Interval = Interval {
    base: ptr::null_mut(),
    pgmap: ptr::null(),
};

/// What a shared section's table holds; immutable once published. Laid
/// out for the searches: starts and ends fill the first cache line, the
/// sub-ranges' bases and pagemaps the next two (the full search), a
/// two-level hint's groups the two after, then the partition's intervals
/// (what the hint leads to; a one-level hint's in the first two of their
/// lines). 1408 bytes, plus the spill arrays of a section of more than 8
/// pagemaps: under 5 % of the 32 KiB of `struct page`s of the 2 MiB
/// section a table serves.
#[repr(C, align(64))]
struct SharedData {
    /// Section-relative first page of sub-range `i`, ascending; `i32::MAX`
    /// past `len`. Signed: starts stay below 2^31 (the space clamps section
    /// sizes), and x86's packed compare is signed.
    starts: [i32; INLINE],
    ends: [u32; INLINE],
    /// Sub-range `i`'s biased memmap base and pagemap.
    subs: [(*mut Page, *const DevPagemap); INLINE],
    /// A two-level hint's groups: group `g`'s lanes are the first pages
    /// of intervals `8g..8g + 8`, `HINT_NONE` past the last.
    groups: [[u64; 2]; GROUPS],
    /// The section partitioned into sub-ranges and the holes between
    /// them, in order, when its hint reaches them (at most `INLINE`
    /// intervals, or `DENSE` in a spilled table); the first `INLINE`
    /// share the lines they had before the spilled tables got hints.
    intervals: [Interval; DENSE],
    /// The slot's hint words for this table.
    hints: [u64; 2],
    len: usize,
    /// Every sub-range, sorted by start, when there are more than `INLINE`.
    spill: Box<[Sub]>,
    /// With `spill` but no hint (more than `DENSE` intervals: pagemaps of
    /// a few pages), in a section of at most `1 << HINT_MAX_SHIFT` pages:
    /// for each section-relative page, the index in `spill` of the
    /// sub-range holding it, or `NO_SUB` in a hole. Two bytes per page
    /// (3 % of the pages' own `struct page`s) buy a search of two loads
    /// where the binary search took up to 15 dependent ones.
    spill_map: Box<[u16]>,
}

/// A hole in a table's `spill_map`.
const NO_SUB: u16 = u16::MAX;

/// A shared section's sub-range table. Kernel: none (model only; the
/// kernel's `section_mem_map` holds one memmap per section, and a shared
/// section walks the maple tree).
struct Shared {
    /// In loom's checked cell, so a reader not ordered after the table's
    /// construction, or before its reclamation, is a reported violation.
    data: UnsafeCell<SharedData>,
}

// SAFETY: The raw pointers in a table point to pagemaps and their pages,
// which the tree's grace period keeps alive for every reader that can
// reach the table (module docs); the table itself is never written after
// it is published.
unsafe impl Send for Shared {}
// SAFETY: As above.
unsafe impl Sync for Shared {}

impl Shared {
    fn data(&self) -> &SharedData {
        // SAFETY: Written only at construction, and poisoned (under loom)
        // only after the grace period, when no reader is left.
        self.data.with(|p| unsafe { &*p })
    }

    /// The base and pagemap of the sub-range holding section-relative page
    /// `rel`, if any, in a table of at most `INLINE` sub-ranges.
    #[inline(always)]
    fn find(&self, rel: u32) -> Option<(*mut Page, *const DevPagemap)> {
        let d = self.data();
        debug_assert!(d.len <= INLINE);
        // One packed compare: the starts ascend, so the number at or below
        // `rel` is the index of the sub-range that may hold it, plus one.
        #[expect(clippy::cast_possible_wrap, reason = "below 2^31")]
        let r = rel as i32;
        let n = d.starts.iter().filter(|&&s| s <= r).count();
        let i = n.checked_sub(1)? & (INLINE - 1);
        (rel < d.ends[i]).then(|| d.subs[i])
    }

    /// Interval `i` of the partition (masked into the array).
    #[inline(always)]
    fn interval(&self, i: usize) -> &Interval {
        &self.data().intervals[i & (DENSE - 1)]
    }

    /// The interval holding `rel` in group `g` of a two-level hint, whose
    /// first page is at or below `rel` (the slot's lanes said so).
    #[inline(always)]
    fn in_group(&self, g: usize, rel: u32) -> usize {
        let lanes = self.data().groups[g & (GROUPS - 1)];
        g * INLINE + hint_index(lanes, rel).unwrap_or(0)
    }

    /// The hint words a slot holds for this table: in 8 16-bit lanes, the
    /// first page of each interval of the section's partition into
    /// sub-ranges and holes (so lane 0 is 0), `HINT_NONE` past the last.
    /// A spilled table's hint has two levels: the slot's lanes hold the
    /// first page of each group of 8 intervals, and the group's own lanes
    /// (in the table) those of its intervals. A section whose partition
    /// the hint cannot reach (more than `INLINE` intervals in a table that
    /// is not spilled, more than `DENSE` in one that is), or too large for
    /// 16-bit lanes, gets no hint: every lane `HINT_NONE`.
    fn hints(&self) -> [u64; 2] {
        self.data().hints
    }

    /// As `find`, over the spill array: through the page map, or by binary
    /// search in a section too large to have one.
    #[inline(never)]
    fn find_spill(&self, rel: u32) -> Option<(*mut Page, *const DevPagemap)> {
        let d = self.data();
        let sub = if d.spill_map.is_empty() {
            let n = d.spill.partition_point(|sub| sub.start <= rel);
            d.spill.get(n.checked_sub(1)?)?
        } else {
            let &k = d.spill_map.get(usize::try_from(rel).ok()?)?;
            // `NO_SUB` (a hole) is past the array.
            d.spill.get(usize::from(k))?
        };
        (rel < sub.end).then_some((sub.base, sub.pgmap))
    }

    /// Every sub-range, in order.
    fn parts(&self) -> Vec<Sub> {
        let d = self.data();
        if d.len > INLINE {
            return d.spill.to_vec();
        }
        (0..d.len)
            .map(|i| Sub {
                start: d.starts[i].unsigned_abs(),
                end: d.ends[i],
                base: d.subs[i].0,
                pgmap: d.subs[i].1,
            })
            .collect()
    }
}

/// An owned, published-or-retired shared table.
struct SharedBox(NonNull<Shared>);

// SAFETY: As for `Shared`.
unsafe impl Send for SharedBox {}

impl SharedBox {
    /// The table for `parts` (sorted `(pagemap, lo, hi)`, at least two).
    fn new(parts: &[(&DevPagemap, u32, u32)], section: u64, section_pages: u64) -> Self {
        let sub = |&(pm, lo, hi): &(&DevPagemap, u32, u32)| -> Sub {
            let (base, _) = slot_data(pm, section, section_pages);
            Sub {
                start: lo,
                end: hi,
                base,
                pgmap: ptr::from_ref(pm),
            }
        };
        let mut d = SharedData {
            starts: [i32::MAX; INLINE],
            ends: [0; INLINE],
            subs: [(ptr::null_mut(), ptr::null()); INLINE],
            groups: [pack_hint(&[]); GROUPS],
            intervals: [HOLE; DENSE],
            hints: pack_hint(&[]),
            len: parts.len(),
            spill: Box::new([]),
            spill_map: Box::new([]),
        };
        if parts.len() <= INLINE {
            for (i, p) in parts.iter().enumerate() {
                let sub = sub(p);
                d.starts[i] = i32::try_from(sub.start).unwrap_or(i32::MAX);
                d.ends[i] = sub.end;
                d.subs[i] = (sub.base, sub.pgmap);
            }
        } else {
            d.spill = parts.iter().map(sub).collect();
        }
        // A spilled table's hint has two levels (`hints`), and so reaches
        // more intervals.
        let spilled = parts.len() > INLINE;
        let reach = if spilled { DENSE } else { INLINE };
        let hinted = match partition(parts, section_pages, sub) {
            Some((starts, intervals)) if intervals.len() <= reach => {
                d.intervals[..intervals.len()].copy_from_slice(&intervals);
                d.hints = if spilled {
                    for (g, lanes) in starts.chunks(INLINE).enumerate() {
                        d.groups[g] = pack_hint(lanes);
                    }
                    let firsts: Vec<u16> = starts.iter().step_by(INLINE).copied().collect();
                    pack_hint(&firsts)
                } else {
                    pack_hint(&starts)
                };
                true
            }
            _ => false,
        };
        if spilled && !hinted && section_pages <= 1 << HINT_MAX_SHIFT {
            d.spill_map = spill_map(&d.spill, section_pages);
        }
        let b = Box::new(Shared {
            data: UnsafeCell::new(d),
        });
        SharedBox(NonNull::from(Box::leak(b)))
    }

    /// The tagged pointer a slot holds for this table.
    fn tagged(&self) -> *mut DevPagemap {
        // SAFETY: The table is live (owned by this box).
        let spill = unsafe { self.0.as_ref() }.data().len > INLINE;
        let tag = if spill { SHARED | SPILL } else { SHARED };
        self.0.as_ptr().cast::<DevPagemap>().map_addr(|a| a | tag)
    }

    /// Takes back a table from its tagged slot pointer.
    ///
    /// # Safety
    ///
    /// - `p` came from [`SharedBox::tagged`] of a table not yet taken back.
    unsafe fn from_tagged(p: *mut DevPagemap) -> Self {
        let raw = p.map_addr(|a| a & !TAG).cast::<Shared>();
        // SAFETY: `tagged` never yields null (caller's contract).
        SharedBox(unsafe { NonNull::new_unchecked(raw) })
    }
}

impl Drop for SharedBox {
    fn drop(&mut self) {
        // SAFETY: The pointer came from `Box::leak` in `new`, and this box
        // is its only owner: the table was unpublished and, for a retired
        // one, its grace period is over.
        let b = unsafe { Box::from_raw(self.0.as_ptr()) };
        devpriv_core::sync::free_reachable(b, |s| {
            // Under loom: a checked write a late reader would race.
            s.data.with_mut(|p| {
                // SAFETY: The memory is kept; loom checks the write first.
                unsafe { (*p).len = 0 };
            });
        });
    }
}

/// The table behind a tagged slot pointer, borrowed for `'g`.
///
/// # Safety
///
/// - `p` is a tagged table pointer loaded from a slot while the caller's
///   tree read guard for `'g` was held (the table then outlives it).
#[inline(always)]
unsafe fn shared_at<'g>(p: *mut DevPagemap) -> &'g Shared {
    // SAFETY: Caller's contract: published tables are freed only after a
    // grace period of the tree's domain.
    unsafe { &*p.map_addr(|a| a & !TAG).cast::<Shared>() }
}

/// What a section slot says.
#[derive(Clone, Debug)]
pub(crate) enum Slot<'a> {
    Empty,
    One(&'a DevPagemap),
    /// Every pagemap that overlaps the section, in address order.
    Shared(Vec<&'a DevPagemap>),
}

/// What a lookup found for one offset.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Hit<'a> {
    /// No pagemap holds the offset (its section is empty, or the part of it
    /// the section's pagemaps leave free).
    Miss,
    /// The slot was being rewritten: ask the tree.
    Busy,
    /// The page itself, from the section's memmap base.
    Page(PageRef<'a>),
}

impl PartialEq for Slot<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Slot::Empty, Slot::Empty) => true,
            (Slot::One(a), Slot::One(b)) => ptr::eq(*a, *b),
            (Slot::Shared(a), Slot::Shared(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| ptr::eq(*x, *y))
            }
            _ => false,
        }
    }
}

/// A slot whose memmap base or bounds (or a shared sub-range's) are not
/// what [`SectionIndex::set`] writes for its pagemap (both as `(base
/// address, bounds word)`).
#[derive(Debug)]
pub(crate) struct StaleBase<'g> {
    pub(crate) pgmap: &'g DevPagemap,
    pub(crate) have: (usize, u64),
    pub(crate) want: (usize, u64),
}

/// What a compact slot says for a section.
#[derive(Clone, Copy)]
enum Compact<'a> {
    Empty,
    /// A pagemap that covers the whole section.
    Whole(&'a DevPagemap),
    /// Anything else: read the wide slot.
    Wide,
}

/// What the compact slot holds for `slot`.
fn compact_for<'a>(slot: &Slot<'a>, section: u64, section_pages: u64) -> Compact<'a> {
    match slot {
        Slot::Empty => Compact::Empty,
        Slot::One(pm)
            if coverage(pm, section, section_pages) == (0, section_pages_u32(section_pages)) =>
        {
            Compact::Whole(pm)
        }
        _ => Compact::Wide,
    }
}

/// `section_pages` as a section-relative bound (at most 2^31, see
/// [`coverage`]).
fn section_pages_u32(section_pages: u64) -> u32 {
    u32::try_from(section_pages).unwrap_or(u32::MAX)
}

/// `Err` if `have` (base address, bounds word) is not what `set` writes
/// for `pm` in `section`.
fn check<'g>(
    pm: &'g DevPagemap,
    have: (usize, u64),
    section: u64,
    section_pages: u64,
) -> Result<(), StaleBase<'g>> {
    let (base, bounds) = slot_data(pm, section, section_pages);
    let want = (base.addr(), bounds);
    if have == want {
        Ok(())
    } else {
        Err(StaleBase {
            pgmap: pm,
            have,
            want,
        })
    }
}

pub(crate) struct SectionIndex {
    /// log2 of pages per section.
    section_pages_shift: u32,
    root: Box<[AtomicPtr<Leaf>]>,
    /// Non-empty slots (writer-maintained), so `validate` need not scan.
    occupied: AtomicU64,
    /// Replaced shared tables waiting for the tree's grace period. Only
    /// writers (who hold the space's writer lock) and `memunmap`'s reclaim
    /// after its grace period take it.
    retired: Mutex<RetireList<SharedBox>>,
    /// The space's memmap, if it has one: a compact slot whose base is
    /// its `base()` names a pagemap whose pages are at `vmemmap + offset`.
    vmemmap: Option<Arc<Vmemmap>>,
    /// The space's per-page pagemap array, if it has one: while it is
    /// small enough, lookups read it first.
    pgmap_array: Option<PgmapArray>,
    /// Planted bugs (`SpaceIndex*`); none outside loom.
    mutants: Mutants,
}

/// What a slot holding `pm` says about `section`: the biased memmap base
/// (`base + offset` is the page at `offset`) and the bounds word
/// `lo | hi << 32` of the part `pm` covers.
fn slot_data(pm: &DevPagemap, section: u64, section_pages: u64) -> (*mut Page, u64) {
    let (lo, hi) = coverage(pm, section, section_pages);
    // Wrapping pointer arithmetic keeps the array's provenance; readers add
    // back an offset inside `lo..hi`, which lands inside the array.
    #[expect(clippy::cast_possible_truncation, reason = "64-bit targets only")]
    let bias = pm.first_offset().get() as usize;
    let base = pm.pages().as_ptr().cast_mut().wrapping_sub(bias);
    (base, u64::from(lo) | u64::from(hi) << 32)
}

/// The pages `lo..hi` of `section` (section-relative) that `pm` covers.
fn coverage(pm: &DevPagemap, section: u64, section_pages: u64) -> (u32, u32) {
    let first = pm.first_offset().get();
    let end = first + pm.nr_pages().get();
    let start = section * section_pages;
    // Both bounds lie in `0..=section_pages`, at most 2^31 (the space
    // clamps section sizes), so they fit a `u32`.
    let clamp = |x: u64| u32::try_from(x.saturating_sub(start).min(section_pages)).unwrap_or(0);
    (clamp(first), clamp(end))
}

impl Drop for SectionIndex {
    fn drop(&mut self) {
        for l in self.root.iter() {
            let p = l.load(Ordering::Relaxed);
            if !p.is_null() {
                // SAFETY: Leaves come from `Box::into_raw` in `set` and are
                // freed only here, with `&mut self` (no reader left).
                let leaf = unsafe { Box::from_raw(p) };
                for cell in &leaf.slots {
                    let v = cell.parts[0].pgmap.load(Ordering::Relaxed);
                    if v.addr() & SHARED != 0 {
                        // SAFETY: A published table, owned by its slot.
                        drop(unsafe { SharedBox::from_tagged(v) });
                    }
                }
            }
        }
    }
}

impl SectionIndex {
    /// An empty index for `space_pages` pages in sections of
    /// `1 << section_pages_shift` pages, with the `SpaceIndex*` bugs of
    /// `mutants` planted.
    ///
    /// # Panics
    ///
    /// If `section_pages_shift > 31` (the space clamps it), since slot
    /// bounds are 32-bit.
    pub(crate) fn new(
        space_pages: u64,
        section_pages_shift: u32,
        vmemmap: Option<Arc<Vmemmap>>,
        pgmap_array: Option<PgmapArray>,
        mutants: Mutants,
    ) -> Self {
        assert!(section_pages_shift <= 31, "section bounds are 32-bit");
        let sections = (space_pages >> section_pages_shift).max(1);
        let leaves = usize::try_from(sections.div_ceil(LEAF_SLOTS as u64)).unwrap_or(usize::MAX);
        SectionIndex {
            section_pages_shift,
            root: (0..leaves)
                .map(|_| AtomicPtr::new(ptr::null_mut()))
                .collect(),
            occupied: AtomicU64::new(0),
            retired: Mutex::new(RetireList::new()),
            vmemmap,
            pgmap_array,
            mutants,
        }
    }

    /// The space's per-page pagemap array, if it has one.
    pub(crate) fn pgmap_array(&self) -> Option<&PgmapArray> {
        self.pgmap_array.as_ref()
    }

    /// The section that holds page `offset`.
    pub(crate) fn section_of(&self, offset: u64) -> u64 {
        offset >> self.section_pages_shift
    }

    /// Pages per section.
    pub(crate) fn section_pages(&self) -> u64 {
        1 << self.section_pages_shift
    }

    /// A copy of what a lookup needs, for a reader to keep in registers
    /// across a batch (the index's own fields sit behind `Acquire` loads,
    /// which the compiler may not hoist them over).
    #[inline]
    pub(crate) fn view(&self) -> IndexView<'_> {
        IndexView {
            root: &self.root,
            shift: self.section_pages_shift,
            vmemmap: self.vmemmap.as_ref().map_or(ptr::null_mut(), |v| v.base()),
            // The level `PgmapArray::raw` chose (per page, per granule or per
            // section).
            array: self
                .pgmap_array
                .as_ref()
                .map_or(RawPgmapArray::NONE, PgmapArray::raw),
            mutants: self.mutants,
        }
    }

    /// What the slot of `section` says, for `validate`; also checks that
    /// each part's base and bounds (or each shared sub-range's) are the
    /// ones `set` would write, and that a slot's unused second part is
    /// clear.
    ///
    /// # Safety
    ///
    /// As for [`IndexView::lookup_fast`]; and the caller holds the space's
    /// writer lock (no rewrite is in progress).
    ///
    /// # Panics
    ///
    /// If an unused part of a slot is not clear: only `set` writes slots,
    /// and it clears what it does not use (a broken invariant).
    pub(crate) unsafe fn peek<'g>(
        &self,
        _guard: &'g TreeGuard<'_>,
        section: u64,
    ) -> Result<Slot<'g>, StaleBase<'g>> {
        let Some((leaf, i)) = leaf_of(&self.root, section) else {
            return Ok(Slot::Empty);
        };
        let cell = &leaf.slots[i];
        debug_assert!(
            cell.seq.load(Ordering::Relaxed) & 1 == 0,
            "a slot left mid-rewrite"
        );
        let part = |k: usize| {
            let c = &cell.parts[k];
            (
                c.pgmap.load(Ordering::Acquire),
                c.base.load(Ordering::Acquire).addr(),
                c.bounds.load(Ordering::Acquire),
            )
        };
        let (p, ..) = part(0);
        let sp = self.section_pages();
        if p.addr() & SHARED != 0 {
            // SAFETY: As in `lookup`.
            let s = unsafe { shared_at::<'g>(p) };
            let (_, h0, h1) = part(0);
            assert_eq!(
                [h0 as u64, h1],
                s.hints(),
                "section {section}: the slot's hints disagree with its table"
            );
            let mut pms = Vec::new();
            for sub in s.parts() {
                // SAFETY: As in `lookup`.
                let pm: &'g DevPagemap = unsafe { &*sub.pgmap };
                let have = (
                    sub.base.addr(),
                    u64::from(sub.start) | u64::from(sub.end) << 32,
                );
                check(pm, have, section, sp)?;
                pms.push(pm);
            }
            return Ok(Slot::Shared(pms));
        }
        let mut pms = Vec::new();
        let compact = &leaf.compact[i];
        for k in 0..2 {
            let (p, base, bounds) = part(k);
            if p.is_null() {
                // `set` clears an unused part completely; a lookup relies
                // on the second part's `NO_SECOND` to never pick it.
                let clear = if k == 0 { (0, 0) } else { (0, NO_SECOND) };
                assert_eq!(
                    (base, bounds),
                    clear,
                    "section {section}: part {k} unused but not clear"
                );
                continue;
            }
            // SAFETY: As in `lookup`.
            let pm: &'g DevPagemap = unsafe { &*p };
            check(pm, (base, bounds), section, sp)?;
            pms.push(pm);
        }
        let slot = match pms.len() {
            0 => Slot::Empty,
            1 => Slot::One(pms[0]),
            _ => Slot::Shared(pms),
        };
        // The compact slot agrees: the same whole-section pagemap (and its
        // base), nothing, or "read the wide slot".
        let want = compact_for(&slot, section, sp);
        let have = compact.pgmap.load(Ordering::Acquire);
        let agrees = match want {
            Compact::Empty => have.is_null(),
            Compact::Wide => have == wide_marker(),
            Compact::Whole(pm) => {
                let base = compact.base.load(Ordering::Acquire).addr();
                check(pm, (base, sp << 32), section, sp)?;
                ptr::eq(have, pm)
            }
        };
        assert!(
            agrees,
            "section {section}: the compact slot disagrees with the wide one"
        );
        Ok(slot)
    }

    /// Sets the slot of `section`, retiring a replaced shared table against
    /// `srcu` (the tree's domain). Caller holds the space's writer lock.
    pub(crate) fn set(&self, section: u64, slot: &Slot<'_>, srcu: &Srcu) {
        let Some(l) = usize::try_from(section >> LEAF_BITS)
            .ok()
            .and_then(|i| self.root.get(i))
        else {
            return; // Beyond the space: nothing can be published there.
        };
        let sp = self.section_pages();
        let part = |pm: &DevPagemap| {
            let (base, bounds) = slot_data(pm, section, sp);
            (ptr::from_ref(pm).cast_mut(), base, bounds)
        };
        let none = (ptr::null_mut(), ptr::null_mut(), NO_SECOND);
        let (new, table) = match slot {
            Slot::Empty => ([(ptr::null_mut(), ptr::null_mut(), 0), none], None),
            Slot::One(pm) => ([part(pm), none], None),
            Slot::Shared(pms) if pms.len() == 2 => ([part(pms[0]), part(pms[1])], None),
            Slot::Shared(pms) => {
                let parts: Vec<_> = pms
                    .iter()
                    .map(|pm| {
                        let (lo, hi) = coverage(pm, section, sp);
                        (*pm, lo, hi)
                    })
                    .collect();
                let t = SharedBox::new(&parts, section, sp);
                // Part 0's base and bounds words carry the table's hints
                // (the base as a bare address, never dereferenced).
                // SAFETY: The box owns a live table.
                let [h0, h1] = unsafe { t.0.as_ref() }.hints();
                #[expect(clippy::cast_possible_truncation, reason = "64-bit targets only")]
                let h0 = ptr::without_provenance_mut(h0 as usize);
                ([(t.tagged(), h0, h1), none], Some(t))
            }
        };
        let mut leaf = l.load(Ordering::Acquire);
        if leaf.is_null() {
            if new[0].0.is_null() {
                return;
            }
            leaf = Box::into_raw(new_leaf());
            let order = if self.mutants.has(Mutant::SpaceIndexRelaxedLeafPublish) {
                Ordering::Relaxed
            } else {
                Ordering::Release
            };
            // Release: the leaf's (empty) slots are initialised before a
            // reader can reach them.
            l.store(leaf, order);
        }
        // SAFETY: Non-null leaves are live until the index drops.
        let leaf = unsafe { &*leaf };
        #[expect(clippy::cast_possible_truncation, reason = "masked to LEAF_BITS")]
        let i = (section as usize) & (LEAF_SLOTS - 1);
        // The wide slot first: a reader that the compact slot sends there
        // finds the new state (or a newer one).
        let Some(retired) = self.set_wide(&leaf.slots[i], new, table.is_some()) else {
            return; // No change.
        };
        let compact = match compact_for(slot, section, sp) {
            Compact::Whole(pm) => (ptr::from_ref(pm).cast_mut(), Some(new[0].1)),
            Compact::Empty => (ptr::null_mut(), None),
            Compact::Wide => (wide_marker(), None),
        };
        self.set_compact(&leaf.compact[i], compact);
        if compact.0 == wide_marker() {
            // Never cleared: a leaf whose sections once needed wide slots
            // is likely to again.
            leaf.wide.store(true, Ordering::Relaxed);
        }
        // The slot owns its table from here on.
        std::mem::forget(table);
        let (was, is) = (retired.is_null(), new[0].0.is_null());
        match (was, is) {
            (true, false) => self.occupied.fetch_add(1, Ordering::Relaxed),
            (false, true) => self.occupied.fetch_sub(1, Ordering::Relaxed),
            _ => 0,
        };
        if retired.addr() & SHARED != 0 {
            // SAFETY: `retired` was this slot's table, now unpublished.
            let t = unsafe { SharedBox::from_tagged(retired) };
            if self.mutants.has(Mutant::SpaceIndexSharedNoGracePeriod) {
                drop(t);
            } else {
                // The cookie is taken after the unpublishing store.
                let mut r = self.retired.lock();
                r.retire(srcu, t);
                r.reclaim(srcu);
            }
        }
    }

    /// Writes a section's compact slot: `(pointer, base)`, the base only
    /// with a pagemap pointer. Caller holds the space's writer lock.
    fn set_compact(&self, cell: &CompactCell, (p, base): (*mut DevPagemap, Option<*mut Page>)) {
        let old = cell.pgmap.load(Ordering::Relaxed);
        if old == p {
            return;
        }
        if let Some(base) = base {
            // Seqlock write side, the pointer as the count (module docs): a
            // reader that sees the new base must see the old pointer gone
            // when it re-checks. (When the old pointer is not a pagemap the
            // marker is not needed, and harmless.)
            cell.pgmap
                .store(self.mutant_rewrite_marker(), Ordering::Relaxed);
            if self.mutant_keeps_barrier(false) {
                fence(Ordering::Release);
            }
            cell.base.store(base, Ordering::Relaxed);
        }
        // Release: the pagemap and its base are written before a reader can
        // take the pointer.
        cell.pgmap.store(p, self.mutant_publish_order(false));
    }

    /// The value a rewrite stores first: the marker (null with
    /// `SpaceIndexNullRewriteMarker`).
    fn mutant_rewrite_marker(&self) -> *mut DevPagemap {
        if self.mutants.has(Mutant::SpaceIndexNullRewriteMarker) {
            ptr::null_mut()
        } else {
            wide_marker()
        }
    }

    /// `SpaceIndexNullRewriteMarker` in a wide slot, the stress harness's
    /// bug: part 0's pointer is cleared while the count is still even, so
    /// the slot reads "empty" meanwhile. Returns whether it cleared it.
    fn mutant_clear_first(&self, cell: &SlotCell, old: *mut DevPagemap) -> bool {
        let clear = self.mutants.has(Mutant::SpaceIndexNullRewriteMarker) && !old.is_null();
        if clear {
            cell.parts[0]
                .pgmap
                .store(ptr::null_mut(), Ordering::Relaxed);
        }
        clear
    }

    /// Whether a rewrite issues its `fence(Release)` (not with
    /// `SpaceIndexPublishNoBarrier`, nor for a table with
    /// `SpaceIndexSharedRelaxedPublish`).
    fn mutant_keeps_barrier(&self, table: bool) -> bool {
        let dropped = self.mutants.has(Mutant::SpaceIndexPublishNoBarrier)
            || (table && self.mutants.has(Mutant::SpaceIndexSharedRelaxedPublish));
        !dropped
    }

    /// The ordering of a rewrite's closing store: `Release`, or `Relaxed`
    /// with the publishing mutants.
    fn mutant_publish_order(&self, table: bool) -> Ordering {
        let relaxed = if table {
            self.mutants.has(Mutant::SpaceIndexSharedRelaxedPublish)
        } else {
            self.mutants.has(Mutant::SpaceIndexRelaxedPublish)
                || self.mutants.has(Mutant::SpaceIndexPublishNoBarrier)
        };
        if relaxed {
            Ordering::Relaxed
        } else {
            Ordering::Release
        }
    }

    /// Writes a section's wide slot (`new`: each part's pointer, base and
    /// bounds; `table`: part 0 points to a new shared table) and returns
    /// the part-0 pointer it replaced, or `None` if nothing changed.
    /// Caller holds the space's writer lock.
    fn set_wide(
        &self,
        cell: &SlotCell,
        new: [(*mut DevPagemap, *mut Page, u64); 2],
        table: bool,
    ) -> Option<*mut DevPagemap> {
        // Writers are serialised: nobody else changes the slot meanwhile.
        let load = |c: &SubCell| {
            (
                c.pgmap.load(Ordering::Relaxed),
                c.base.load(Ordering::Relaxed),
                c.bounds.load(Ordering::Relaxed),
            )
        };
        let old = [load(&cell.parts[0]), load(&cell.parts[1])];
        if old == new {
            return None;
        }
        // Seqlock write side (`write_seqcount_begin()`, module docs): a
        // reader that sees any new word sees the odd count when it
        // re-checks.
        let seq = cell.seq.load(Ordering::Relaxed);
        let mut now = old;
        if self.mutant_clear_first(cell, old[0].0) {
            now[0].0 = ptr::null_mut();
        }
        cell.seq.store(seq + 1, Ordering::Relaxed);
        if self.mutant_keeps_barrier(table) {
            fence(Ordering::Release);
        }
        // Only the words that change: a neighbour's arrival or departure
        // leaves the other part alone. Relaxed: the fence orders the table
        // (and everything before it) for a reader that takes a table
        // through part 0's pointer alone, with an Acquire load.
        for (c, (now, new)) in cell.parts.iter().zip(now.into_iter().zip(new)) {
            if new.1 != now.1 {
                c.base.store(new.1, Ordering::Relaxed);
            }
            if new.2 != now.2 {
                c.bounds.store(new.2, Ordering::Relaxed);
            }
            if new.0 != now.0 {
                c.pgmap.store(new.0, Ordering::Relaxed);
            }
        }
        // `write_seqcount_end()`, Release: the pagemaps, bases and bounds
        // (or the whole table) are written before a reader can take the
        // slot as stable.
        cell.seq.store(seq + 2, self.mutant_publish_order(table));
        Some(old[0].0)
    }

    /// Frees the replaced shared tables whose grace period is over
    /// (`memunmap` calls it after waiting for one).
    pub(crate) fn reclaim(&self, srcu: &Srcu) {
        self.retired.lock().reclaim(srcu);
    }

    /// Number of non-empty slots. Exact while the writer lock is held.
    pub(crate) fn occupied(&self) -> u64 {
        self.occupied.load(Ordering::Relaxed)
    }
}

/// A reader's copy of the index's shape (see [`SectionIndex::view`]).
#[derive(Clone, Copy)]
pub(crate) struct IndexView<'a> {
    root: &'a [AtomicPtr<Leaf>],
    shift: u32,
    /// The space's `vmemmap` (null if it has none).
    vmemmap: *mut Page,
    /// The space's per-page pagemap array, if lookups read it first (else
    /// empty: no entry for any offset).
    array: RawPgmapArray,
    mutants: Mutants,
}

// SAFETY: `vmemmap` is only compared with slot bases and offset to the
// page of a pagemap that the reader's guard keeps alive; pages are
// atomics, shared as `&[Page]` is (`Vmemmap` is `Send` and `Sync` for the
// same reason). The other fields are `Send` and `Sync`, so a read guard
// stays both, as it was before the view held the pointer.
unsafe impl Send for IndexView<'_> {}
// SAFETY: As for `Send`.
unsafe impl Sync for IndexView<'_> {}

/// The leaf of `section`, if it exists, and the section's index in it.
#[inline(always)]
fn leaf_of(root: &[AtomicPtr<Leaf>], section: u64) -> Option<(&Leaf, usize)> {
    let leaf = usize::try_from(section >> LEAF_BITS)
        .ok()
        .and_then(|i| root.get(i))?
        .load(Ordering::Acquire);
    if leaf.is_null() {
        return None;
    }
    // SAFETY: Non-null leaves are live until the index drops, and `root`
    // borrows the index.
    let leaf = unsafe { &*leaf };
    // Loom checks this read against the leaf's initialisation.
    let _ = leaf.init.get();
    #[expect(clippy::cast_possible_truncation, reason = "masked to LEAF_BITS")]
    let i = (section as usize) & (LEAF_SLOTS - 1);
    Some((leaf, i))
}

impl IndexView<'_> {
    /// [`lookup_fast`](Self::lookup_fast), then if need be
    /// [`lookup_cold`](Self::lookup_cold), for tests.
    ///
    /// # Safety
    ///
    /// As for [`lookup_fast`](Self::lookup_fast).
    #[cfg(test)]
    pub(crate) unsafe fn lookup<'g>(&self, guard: &'g TreeGuard<'_>, offset: u64) -> Hit<'g> {
        // SAFETY: The caller's contract.
        match unsafe { self.lookup_fast(guard, offset) } {
            Ok(page) => Hit::Page(page),
            // SAFETY: The caller's contract; `id` was just loaded.
            Err(id) => unsafe { self.lookup_cold(guard, offset, id) },
        }
    }

    /// What the index knows about page `offset`, the hot part: one entry
    /// of the space's pagemap array (see [`entry`](Self::entry)), and if
    /// it is an untagged id, the page at `vmemmap + offset` with the id's
    /// pagemap; else the entry (`Err`), for
    /// [`lookup_cold`](Self::lookup_cold), which callers call out of line.
    /// About ten instructions: a loop around it holds the array's few
    /// values and nothing of the index's. What it finds lives as long as
    /// the borrow of `guard`.
    ///
    /// # Safety
    ///
    /// - `guard` reads the range tree of the space this index belongs to
    ///   (whose grace period keeps a pagemap or table found here alive).
    #[inline(always)]
    pub(crate) unsafe fn lookup_fast<'g>(
        &self,
        _guard: &'g TreeGuard<'_>,
        offset: u64,
    ) -> Result<PageRef<'g>, u32> {
        let id = self.entry(offset);
        // An untagged id (pages at `vmemmap + offset`) is positive.
        #[expect(clippy::cast_possible_wrap, reason = "the tag is the sign bit")]
        if id as i32 > 0 {
            // SAFETY: `id` is an entry just loaded (`slot`'s contract).
            let pm = unsafe { self.array.slot(id) };
            debug_assert!(!pm.is_null(), "an entry's slot was cleared under a reader");
            // SAFETY: The slot is not null while the caller's guard lives
            // (`PgmapArray::release`), it names the pagemap that holds
            // `offset`, whose page there is in the memmap (untagged); and
            // the caller's contract.
            return Ok(unsafe { Self::page_ref(self.vmemmap, pm, offset) });
        }
        Err(id)
    }

    /// The rest of a lookup past [`lookup_fast`](Self::lookup_fast): a
    /// tagged entry's heap page, or for no entry (a shared section in a
    /// per-section view, a pagemap with no id, a space with no array) the
    /// section index.
    ///
    /// # Safety
    ///
    /// As for [`lookup_fast`](Self::lookup_fast), with `id` page
    /// `offset`'s entry, loaded in the same read section.
    #[inline(always)]
    pub(crate) unsafe fn lookup_cold<'g>(
        &self,
        guard: &'g TreeGuard<'_>,
        offset: u64,
        id: u32,
    ) -> Hit<'g> {
        if id != 0 {
            // SAFETY: `id` is an entry just loaded (caller's contract).
            return unsafe { Self::entry_heap(self.array, id, offset) };
        }
        // SAFETY: The caller's contract.
        unsafe { self.lookup_index(guard, offset) }
    }

    /// What the section index knows about page `offset` (no entry in the
    /// array): two dependent loads (leaf, then the section's slot), then
    /// for a section one or two pagemaps cover the page itself, and for a
    /// shared section of three or more one more (its table).
    ///
    /// # Safety
    ///
    /// As for [`lookup_fast`](Self::lookup_fast).
    #[inline(always)]
    pub(crate) unsafe fn lookup_index<'g>(&self, guard: &'g TreeGuard<'_>, offset: u64) -> Hit<'g> {
        let Some((leaf, i)) = leaf_of(self.root, offset >> self.shift) else {
            return Hit::Miss;
        };
        // Relaxed: both kinds of slot are always up to date, each with its
        // own publication; the flag only says which one to read.
        if leaf.wide.load(Ordering::Relaxed) {
            // SAFETY: The caller's contract.
            return unsafe { self.lookup_wide(guard, &leaf.slots[i], offset) };
        }
        let cell = &leaf.compact[i];
        let p = cell.pgmap.load(Ordering::Acquire);
        if p.addr() & TAG != 0 || p.is_null() {
            if p.is_null() {
                return Hit::Miss;
            }
            // SAFETY: The caller's contract.
            return unsafe { self.wide_cold(guard, &leaf.slots[i], offset) };
        }
        let base = cell.base.load(Ordering::Relaxed);
        // Seqlock re-check, the pointer as the count (module docs): pairs
        // with the writer's `fence(Release)` before it changes the base.
        fence(Ordering::Acquire);
        let same = self.mutants.has(Mutant::SpaceIndexNoRecheck)
            || cell.pgmap.load(Ordering::Relaxed) == p;
        if !same {
            // SAFETY: The caller's contract.
            return unsafe { self.wide_cold(guard, &leaf.slots[i], offset) };
        }
        // SAFETY: A published pagemap stays allocated while the tree's read
        // guard that the caller lends for `'g` is live (module docs);
        // `base` was published for it (the re-check shows the slot still
        // held `p` after it was read), and it covers the whole section.
        unsafe { self.hit_at(base, p, offset) }
    }

    /// Page `offset`'s entry in the per-page pagemap array: its pagemap's
    /// id, tagged [`HEAP_ID`] if that pagemap's pages are on the heap, or
    /// 0 if the offset has no entry (past the array, no pagemap, one being
    /// mapped or unmapped, or a view that does not read the array). One
    /// load, whose address is the offset's alone. An id loaded here names
    /// its pagemap in [`RawPgmapArray::slot`] for the rest of the read
    /// section: `memunmap` clears the entries before the grace period
    /// after which the pagemap goes, and the slot only after it.
    #[inline(always)]
    pub(crate) fn entry(self, offset: u64) -> u32 {
        let a = self.array;
        let i = offset >> a.shift;
        if i >= a.len {
            return 0;
        }
        #[expect(clippy::cast_possible_truncation, reason = "below the array's length")]
        // SAFETY: `i` is below the array's length, and the array lives as
        // long as the index this view borrows.
        let entry = unsafe { &*a.entries.wrapping_add(i as usize) };
        // Acquire: pairs with `PgmapArray::store`'s Release (the slot's
        // store and the pagemap's construction before it).
        entry.load(Ordering::Acquire)
    }

    /// The page of an entry tagged [`HEAP_ID`], out of line: pagemaps on
    /// the heap are rare outside loom (which has no memmap).
    ///
    /// # Safety
    ///
    /// - `id` is page `offset`'s entry, tagged, loaded from `a` in the
    ///   read section of the caller's guard for `'g`.
    #[inline(never)]
    #[cold]
    unsafe fn entry_heap<'g>(a: RawPgmapArray, id: u32, offset: u64) -> Hit<'g> {
        // SAFETY: The caller's contract.
        let p = unsafe { a.slot(id & !HEAP_ID) };
        // Only a slot cleared under a reader (the model's mutant) is null.
        assert!(!p.is_null(), "an entry's slot was cleared under a reader");
        // SAFETY: A loaded entry's slot names a pagemap that holds `offset`
        // and lives for the caller's guard (`entry`).
        let pm: &'g DevPagemap = unsafe { &*p };
        pm.touch();
        pm.page(devpriv_core::DevicePrivateOffset::new(offset))
            .map_or(Hit::Miss, Hit::Page)
    }

    /// [`hit`](Self::hit), with the page's address from the view's
    /// `vmemmap` when `base` is it (every pagemap in the space's memmap):
    /// the load of the page then waits for no slot, only for this
    /// compare's prediction (T3 in `docs/perf.md`). Compact slots only:
    /// in the wide slot's parts and the tables' intervals the compare made
    /// the compact path 4 % slower (register pressure in the inlined
    /// loop), which `docs/perf.md` weighs against what it gave them.
    ///
    /// # Safety
    ///
    /// As for [`hit`](Self::hit).
    #[inline(always)]
    unsafe fn hit_at<'g>(self, base: *mut Page, pm: *const DevPagemap, offset: u64) -> Hit<'g> {
        if base != self.vmemmap {
            // SAFETY: The caller's contract.
            return unsafe { Self::hit_heap(base, pm, offset) };
        }
        // SAFETY: The caller's contract, with `base` equal to `vmemmap`
        // (whose pointer carries the provenance of the mapping that holds
        // the pagemap's array).
        unsafe { Self::hit(self.vmemmap, pm, offset) }
    }

    /// [`hit`](Self::hit) for a pagemap whose pages are not in the space's
    /// memmap, out of line: as a branch (not a select between two bases)
    /// the memmap's address stays independent of the slot's load.
    ///
    /// # Safety
    ///
    /// As for [`hit`](Self::hit).
    #[inline(never)]
    unsafe fn hit_heap<'g>(base: *mut Page, pm: *const DevPagemap, offset: u64) -> Hit<'g> {
        // SAFETY: The caller's contract.
        unsafe { Self::hit(base, pm, offset) }
    }

    /// [`lookup_wide_cold`](Self::lookup_wide_cold) with this view's
    /// scalars, inlined so the view itself is never passed.
    ///
    /// # Safety
    ///
    /// As for [`lookup_fast`](Self::lookup_fast).
    #[inline(always)]
    unsafe fn wide_cold<'g>(
        self,
        guard: &'g TreeGuard<'_>,
        cell: &SlotCell,
        offset: u64,
    ) -> Hit<'g> {
        // SAFETY: The caller's contract.
        unsafe {
            Self::lookup_wide_cold(self.shift, self.vmemmap, self.mutants, guard, cell, offset)
        }
    }

    /// `lookup_wide`, out of line, for a compact slot that sends the reader
    /// there (rare in a compact leaf): inlined, it would crowd the hot loop.
    /// It takes the view's scalars, not the view: a view is passed through
    /// memory, which made the hot loop copy it to the stack every lookup.
    ///
    /// # Safety
    ///
    /// As for [`lookup_fast`](Self::lookup_fast).
    #[inline(never)]
    #[cold]
    unsafe fn lookup_wide_cold<'g>(
        shift: u32,
        vmemmap: *mut Page,
        mutants: Mutants,
        guard: &'g TreeGuard<'_>,
        cell: &SlotCell,
        offset: u64,
    ) -> Hit<'g> {
        // `lookup_wide` reads no leaf: the root is not needed.
        let view = IndexView {
            root: &[],
            shift,
            vmemmap,
            array: RawPgmapArray::NONE,
            mutants,
        };
        // SAFETY: The caller's contract.
        unsafe { view.lookup_wide(guard, cell, offset) }
    }

    /// `lookup` in a section's wide slot: one cache line read under its
    /// sequence count, the part that holds the page picked without a
    /// branch.
    ///
    /// # Safety
    ///
    /// As for [`lookup_fast`](Self::lookup_fast).
    #[inline(always)]
    unsafe fn lookup_wide<'g>(
        self,
        _guard: &'g TreeGuard<'_>,
        cell: &SlotCell,
        offset: u64,
    ) -> Hit<'g> {
        // `read_seqcount_begin()`: pairs with the writer's closing Release.
        let seq = cell.seq.load(Ordering::Acquire);
        let p0 = cell.parts[0].pgmap.load(Ordering::Relaxed);
        if p0.addr() & SHARED != 0 {
            // SAFETY: The caller's contract.
            return unsafe { self.lookup_table(cell, seq, p0, offset) };
        }
        #[expect(clippy::cast_possible_truncation, reason = "below 2^31")]
        let rel = (offset & ((1 << self.shift) - 1)) as u32;
        // The part holding `rel`: the second part starts above the first
        // (`NO_SECOND`: above every page).
        #[expect(clippy::cast_possible_truncation, reason = "the low half is lo")]
        let lo1 = cell.parts[1].bounds.load(Ordering::Relaxed) as u32;
        let part = &cell.parts[usize::from(rel >= lo1)];
        let p = part.pgmap.load(Ordering::Relaxed);
        let base = part.base.load(Ordering::Relaxed);
        let bounds = part.bounds.load(Ordering::Relaxed);
        // `read_seqcount_retry()`: pairs with the writer's `fence(Release)`
        // after it made the count odd.
        fence(Ordering::Acquire);
        let stable = self.mutants.has(Mutant::SpaceIndexNoRecheck)
            || (seq & 1 == 0 && cell.seq.load(Ordering::Relaxed) == seq);
        if !stable {
            return Hit::Busy;
        }
        // Empty (a stable read with an untagged `p0` never finds a table in
        // the part; the test keeps a planted `SpaceIndexNoRecheck` from
        // taking a table for a pagemap).
        if p.addr() & TAG != 0 || p.is_null() {
            return Self::lookup_other(p, offset, self.shift);
        }
        #[expect(clippy::cast_possible_truncation, reason = "the low half is lo")]
        let (lo, hi) = (bounds as u32, (bounds >> 32) as u32);
        if rel.wrapping_sub(lo) >= hi.wrapping_sub(lo) {
            return Hit::Miss;
        }
        // SAFETY: A stable slot's part names a published pagemap (`set`
        // gives a second part a pagemap whenever its bounds are not
        // `NO_SECOND`), which stays allocated while the tree's read guard
        // that the caller lends for `'g` is live (module docs); `base` and
        // `bounds` were published with it (the count did not change while
        // they were read), and the offset lies in its part.
        unsafe { Self::hit(base, p, offset) }
    }

    /// `lookup` in a shared section's table `p0`, read from `cell`'s part 0
    /// after count `seq`: the slot's hint words (same cache line, read
    /// under the count) name the interval of the section that holds the
    /// page, so the table costs one line, the interval's. If the slot
    /// changed meanwhile, or the section has no hint, the table's own full
    /// search.
    ///
    /// The table is visible either way: through `seq` if the reader saw
    /// the count that closed its publication, or else through the
    /// `fence(Acquire)` after its pointer was read, which pairs with the
    /// writer's `fence(Release)` before it stored the pointer
    /// (`rcu_assign_pointer()`).
    ///
    /// # Safety
    ///
    /// As for [`lookup_fast`](Self::lookup_fast); `p0` is a tagged table pointer
    /// loaded from `cell` after `seq`, under the caller's guard.
    #[inline(always)]
    unsafe fn lookup_table<'g>(
        self,
        cell: &SlotCell,
        seq: u64,
        p0: *mut DevPagemap,
        offset: u64,
    ) -> Hit<'g> {
        let hints = [
            cell.parts[0].base.load(Ordering::Relaxed).addr() as u64,
            cell.parts[0].bounds.load(Ordering::Relaxed),
        ];
        // `read_seqcount_retry()`, as in `lookup_wide`.
        fence(Ordering::Acquire);
        let stable = self.mutants.has(Mutant::SpaceIndexNoRecheck)
            || (seq & 1 == 0 && cell.seq.load(Ordering::Relaxed) == seq);
        if stable && self.shift <= HINT_MAX_SHIFT {
            #[expect(clippy::cast_possible_truncation, reason = "below 2^15")]
            let rel = (offset & ((1 << self.shift) - 1)) as u32;
            if let Some(i) = hint_index(hints, rel) {
                // SAFETY: The caller's contract.
                let table = unsafe { shared_at::<'g>(p0) };
                let i = if p0.addr() & SPILL == 0 {
                    i
                } else {
                    table.in_group(i, rel)
                };
                let iv = table.interval(i);
                if iv.pgmap.is_null() {
                    return Hit::Miss;
                }
                // SAFETY: The hint was read with `p0` under one count, so
                // interval `i` of `p0`'s table holds `rel` (for a spilled
                // table, through its group's lanes, which are the table's
                // own and immutable); the table names pagemaps the tree
                // keeps alive for `'g`.
                return unsafe { Self::hit(iv.base, iv.pgmap, offset) };
            }
        }
        Self::lookup_other(p0, offset, self.shift)
    }

    /// The page at `offset` of pagemap `pm`, whose biased memmap base is
    /// `base`.
    ///
    /// # Safety
    ///
    /// - `pm` is a pagemap the tree keeps alive for `'g`, and `base` its
    ///   base in a part of a section that holds `offset`.
    #[inline(always)]
    unsafe fn hit<'g>(base: *mut Page, pm: *const DevPagemap, offset: u64) -> Hit<'g> {
        // SAFETY: The caller's contract.
        Hit::Page(unsafe { Self::page_ref(base, pm, offset) })
    }

    /// [`hit`](Self::hit)'s page.
    ///
    /// # Safety
    ///
    /// As for [`hit`](Self::hit).
    #[inline(always)]
    unsafe fn page_ref<'g>(base: *mut Page, pm: *const DevPagemap, offset: u64) -> PageRef<'g> {
        // SAFETY: The caller's contract.
        let pm: &'g DevPagemap = unsafe { &*pm };
        pm.touch();
        #[expect(clippy::cast_possible_truncation, reason = "64-bit targets only")]
        let page = base.wrapping_add(offset as usize);
        // SAFETY: `offset` lies in `pm`'s part of the section, so
        // `base + offset` is `&pm.pages[offset - first]`, alive for `'g`
        // like `pm` (caller's contract).
        PageRef::from_parts(pm, unsafe { &*page })
    }

    /// `lookup` for a stable slot that holds no pagemap pointer: empty, or
    /// a shared section's table.
    #[inline(always)]
    fn lookup_other<'g>(p: *mut DevPagemap, offset: u64, shift: u32) -> Hit<'g> {
        if p.addr() & SHARED == 0 {
            return Hit::Miss;
        }
        // SAFETY: A tagged table pointer, loaded under the caller's guard
        // for `'g` (`lookup`'s contract).
        let table = unsafe { shared_at::<'g>(p) };
        count_full_search();
        #[expect(clippy::cast_possible_truncation, reason = "below 2^31")]
        let rel = (offset & ((1 << shift) - 1)) as u32;
        let found = if p.addr() & SPILL == 0 {
            table.find(rel)
        } else {
            table.find_spill(rel)
        };
        let Some((base, pm)) = found else {
            return Hit::Miss;
        };
        // SAFETY: The table names pagemaps the tree keeps alive for `'g`
        // (module docs), and `rel` lies in `pm`'s part of the section.
        unsafe { Self::hit(base, pm, offset) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DevicePrivateSpace, NoopOps, Owner, PagemapParams};
    use std::cell::Cell;

    thread_local! {
        /// `count_full_search()` calls on this thread.
        pub(super) static FULL_SEARCHES: Cell<u64> = const { Cell::new(0) };
    }
    use devpriv_core::sync::atomic::AtomicBool;
    use devpriv_core::{DevicePrivateOffset, PageCount};
    use devpriv_rangetree::RangeTree;

    /// 512-page sections, as the default space's.
    const SHIFT: u32 = 9;

    fn map(space: &DevicePrivateSpace, n: u64) -> Arc<DevPagemap> {
        let params = PagemapParams::private(PageCount::new(n), Owner(1), Arc::new(NoopOps));
        space.memremap_device_private_pagemap(params, 0).unwrap()
    }

    /// An index over one leaf's worth of sections, and a tree whose read
    /// guards and grace periods stand in for the space's.
    fn index() -> (SectionIndex, RangeTree<Arc<DevPagemap>>) {
        (
            SectionIndex::new(
                (LEAF_SLOTS as u64) << SHIFT,
                SHIFT,
                None,
                None,
                Mutants::NONE,
            ),
            RangeTree::new(),
        )
    }

    #[allow(unsafe_code, reason = "the index's lookup")]
    /// The offsets of section 0 the tests check: all of them, or under
    /// Miri (slow) every 31st.
    fn offsets() -> impl Iterator<Item = u64> {
        (0..512).step_by(if cfg!(miri) { 31 } else { 1 })
    }

    /// Every offset of section 0 gives the page of the one of `pms` that
    /// holds it, or a miss.
    #[track_caller]
    fn assert_section_0(idx: &SectionIndex, g: &TreeGuard<'_>, pms: &[&DevPagemap]) {
        for off in offsets() {
            let want = pms
                .iter()
                .find_map(|pm| pm.page(DevicePrivateOffset::new(off)));
            match (lookup(idx, g, off), want) {
                (Hit::Page(p), Some(w)) => assert!(ptr::eq(&*p, &*w), "offset {off}"),
                (Hit::Miss, None) => {}
                (h, w) => panic!("{} pagemaps, offset {off}: {h:?}, want {w:?}", pms.len()),
            }
        }
    }

    fn lookup<'g>(idx: &SectionIndex, g: &'g TreeGuard<'_>, offset: u64) -> Hit<'g> {
        // SAFETY: Every pagemap the tests publish outlives the index.
        unsafe { idx.view().lookup(g, offset) }
    }

    #[test]
    fn a_table_is_the_size_its_docs_say() {
        assert_eq!(size_of::<SharedData>(), 1408);
    }

    #[test]
    fn slots_are_equal_when_they_name_the_same_pagemaps() {
        let space = DevicePrivateSpace::new();
        let (a, b) = (map(&space, 10), map(&space, 5));
        assert_eq!(Slot::Empty, Slot::Empty);
        assert_eq!(Slot::One(&a), Slot::One(&a));
        assert_ne!(Slot::One(&a), Slot::One(&b));
        assert_ne!(Slot::Empty, Slot::One(&a));
        assert_eq!(Slot::Shared(vec![&a, &b]), Slot::Shared(vec![&a, &b]));
        assert_ne!(Slot::Shared(vec![&a, &b]), Slot::Shared(vec![&b, &a]));
        // A table that lists only a prefix of the other's pagemaps.
        assert_ne!(Slot::Shared(vec![&a, &b]), Slot::Shared(vec![&a]));
        assert_ne!(Slot::Shared(vec![&a]), Slot::Shared(vec![&a, &b]));
        space.memunmap_device_private_pagemap(&b).unwrap();
        space.memunmap_device_private_pagemap(&a).unwrap();
    }

    /// A compact slot's marker sends the reader to the wide slot (never
    /// reads as empty, which would make a mapped offset miss); a wide slot
    /// mid-rewrite (odd count) sends it to the tree (`Busy`).
    #[test]
    fn marked_slots_send_readers_to_the_wide_slot_or_the_tree() {
        let space = DevicePrivateSpace::new();
        let a = map(&space, 512);
        let (idx, tree) = index();
        idx.set(0, &Slot::One(&a), tree.srcu());
        let (leaf, i) = leaf_of(&idx.root, 0).unwrap();
        assert!(
            !leaf.wide.load(Ordering::Relaxed),
            "a whole section stays compact"
        );
        let g = tree.read();
        let page_7 = |h: Hit<'_>| matches!(h, Hit::Page(p) if ptr::eq(&*p, &a.pages()[7]));
        assert!(page_7(lookup(&idx, &g, 7)));
        leaf.compact[i]
            .pgmap
            .store(wide_marker(), Ordering::Relaxed);
        assert!(
            page_7(lookup(&idx, &g, 7)),
            "the wide slot has the page too"
        );
        let seq = leaf.slots[i].seq.load(Ordering::Relaxed);
        leaf.slots[i].seq.store(seq + 1, Ordering::Relaxed);
        assert!(matches!(lookup(&idx, &g, 7), Hit::Busy));
        leaf.slots[i].seq.store(seq, Ordering::Relaxed);
        leaf.compact[i]
            .pgmap
            .store(ptr::from_ref(&*a).cast_mut(), Ordering::Relaxed);
        assert!(page_7(lookup(&idx, &g, 7)));
        // `peek` (what `validate` reads) finds a wrong base in either slot.
        // SAFETY: As in `lookup`.
        let peek = || unsafe { idx.peek(&g, 0) }.map_err(|e| e.have);
        assert_eq!(peek().ok(), Some(Slot::One(&a)));
        for base in [&leaf.slots[i].parts[0].base, &leaf.compact[i].base] {
            let good = base.load(Ordering::Relaxed);
            base.store(good.wrapping_add(1), Ordering::Relaxed);
            assert!(peek().is_err(), "a wrong base passed");
            base.store(good, Ordering::Relaxed);
        }
        drop(g);
        // An empty section: a null compact slot, the leaf still compact.
        idx.set(0, &Slot::Empty, tree.srcu());
        assert!(leaf.compact[i].pgmap.load(Ordering::Relaxed).is_null());
        assert!(!leaf.wide.load(Ordering::Relaxed));
        drop(idx);
        space.memunmap_device_private_pagemap(&a).unwrap();
    }

    /// `hint_index` counts the interval starts at or below `rel`, minus
    /// one, for every number of used lanes and every page of a small
    /// section (and the largest pages a hinted section has); a section
    /// without a hint gives `None`.
    #[test]
    fn hint_index_counts_the_starts_at_or_below_the_page() {
        let pack = pack_hint;
        assert_eq!(pack(&[]), [0x8000_8000_8000_8000; 2]);
        for starts in [
            &[0u16, 64, 128, 192, 256, 320, 384, 448][..],
            &[0, 100, 200, 300, 400, 500],
            &[0, 3, 7, 500],
            &[0],
            &[],
            &[0, 1, 0x7ffe, 0x7fff],
        ] {
            let w = pack(starts);
            for rel in (0..1024).chain([0x7ffe, 0x7fff]) {
                let n = starts.iter().filter(|&&s| u32::from(s) <= rel).count();
                assert_eq!(
                    hint_index(w, rel),
                    n.checked_sub(1),
                    "starts {starts:?}, page {rel}"
                );
            }
        }
    }

    /// A section's partition: sub-ranges and the holes around them, at
    /// most 8 intervals, only in sections of at most 2^15 pages.
    #[test]
    fn partition_covers_the_section_with_sub_ranges_and_holes() {
        let base = ptr::without_provenance_mut::<Page>(64);
        let pm = ptr::without_provenance::<DevPagemap>(8);
        let sub = |&(start, end): &(u32, u32)| Sub {
            start,
            end,
            base,
            pgmap: pm,
        };
        let starts = |parts: &[(u32, u32)], pages| {
            partition(parts, pages, sub).map(|(s, iv)| {
                let holes: Vec<bool> = iv.iter().map(|i| i.pgmap.is_null()).collect();
                (s, holes)
            })
        };
        assert_eq!(
            starts(&[(0, 1), (3, 4), (4, 5)], 512),
            Some((vec![0, 1, 3, 4, 5], vec![false, true, false, false, true]))
        );
        assert_eq!(
            starts(&[(2, 256), (256, 512)], 512),
            Some((vec![0, 2, 256], vec![true, false, false]))
        );
        let tiled: Vec<(u32, u32)> = (0..8).map(|i| (64 * i, 64 * i + 64)).collect();
        assert_eq!(starts(&tiled, 512).map(|(s, _)| s.len()), Some(8));
        // Nine intervals (a hole at the end): which hint reaches them is
        // the table's choice. A section too large has none.
        assert_eq!(starts(&tiled, 1024).map(|(s, _)| s.len()), Some(9));
        assert_eq!(starts(&[(0, 1), (1, 2), (2, 3)], 1 << 16), None);
        assert!(starts(&[(0, 1), (1, 2), (2, 3)], 1 << 15).is_some());
    }

    /// Every table of `sizes`' pagemaps (all in section 0) taking their
    /// first 3 or more, and every other one of them (so the section has
    /// holes): the slot's hint resolves every page (a hole: a miss) without
    /// the full search whenever a hint reaches the partition (one level for
    /// a table of at most `INLINE` intervals, two for a spilled one of at
    /// most `DENSE`), and every page through the full search otherwise;
    /// mid-rewrite (odd count) every lookup still gives the right answer,
    /// through the full search; and `peek` reports wrong hints.
    fn tables_are_read_through_their_hints(sizes: &[u64]) {
        let space = DevicePrivateSpace::new();
        let pms: Vec<_> = sizes.iter().map(|&n| map(&space, n)).collect();
        assert!(
            pms.iter()
                .all(|pm| pm.first_offset().get() + pm.pages().len() as u64 <= 512)
        );
        let (idx, tree) = index();
        for len in 3..=pms.len() {
            for step in [1, 2] {
                let refs: Vec<&DevPagemap> =
                    pms[..len].iter().step_by(step).map(|p| &**p).collect();
                if refs.len() < 3 {
                    continue;
                }
                // The partition's intervals, counted from the pagemaps.
                let mut at = 0;
                let mut intervals = 0;
                for pm in &refs {
                    let first = pm.first_offset().get();
                    intervals += 1 + usize::from(first > at);
                    at = first + pm.pages().len() as u64;
                }
                intervals += usize::from(at < 512);
                let hinted = if refs.len() <= INLINE {
                    intervals <= INLINE
                } else {
                    intervals <= DENSE
                };
                idx.set(0, &Slot::Shared(refs.clone()), tree.srcu());
                let (leaf, i) = leaf_of(&idx.root, 0).unwrap();
                let g = tree.read();
                let check_all = || assert_section_0(&idx, &g, &refs);
                let full = offsets().count() as u64;
                let before = FULL_SEARCHES.with(Cell::get);
                check_all();
                assert_eq!(
                    FULL_SEARCHES.with(Cell::get) - before,
                    if hinted { 0 } else { full },
                    "{len}/{step}: {intervals} intervals, hinted: {hinted}"
                );
                // Mid-rewrite: the same answers, each from the full search.
                let before = FULL_SEARCHES.with(Cell::get);
                let seq = &leaf.slots[i].seq;
                seq.fetch_add(1, Ordering::Relaxed);
                check_all();
                assert_eq!(FULL_SEARCHES.with(Cell::get) - before, full);
                seq.fetch_sub(1, Ordering::Relaxed);
                // Wrong hints are a broken invariant that `peek` reports.
                let w = &leaf.slots[i].parts[0].bounds;
                let good = w.load(Ordering::Relaxed);
                w.store(good ^ 1, Ordering::Relaxed);
                let peeked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    // SAFETY: As in `lookup`.
                    let _ = unsafe { idx.peek(&g, 0) };
                }));
                assert!(peeked.is_err(), "peek passed wrong hints");
                w.store(good, Ordering::Relaxed);
                // SAFETY: As in `lookup`.
                assert_eq!(unsafe { idx.peek(&g, 0) }.ok(), Some(Slot::Shared(refs)));
                drop(g);
            }
        }
        idx.set(0, &Slot::Empty, tree.srcu());
        tree.synchronize();
        idx.reclaim(tree.srcu());
        drop(idx);
        for pm in pms.iter().rev() {
            space.memunmap_device_private_pagemap(pm).unwrap();
        }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "over 10 minutes under Miri; the hint path's unsafe reads run there in parts_pairs_and_tables_resolve_in_a_wide_leaf"
    )]
    fn a_table_is_read_through_its_hint() {
        tables_are_read_through_their_hints(&[60, 3, 100, 1, 64, 7, 200]);
    }

    /// Spilled tables (more than `INLINE` pagemaps): two-level hints up to
    /// `DENSE` intervals, the page map past them.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "over 10 minutes under Miri; the hint path's unsafe reads run there in parts_pairs_and_tables_resolve_in_a_wide_leaf"
    )]
    fn a_spilled_table_is_read_through_its_two_level_hint_or_page_map() {
        let sizes: Vec<u64> = (0..72).map(|i| [1, 2, 3, 5, 8, 13][i % 6]).collect();
        tables_are_read_through_their_hints(&sizes);
    }

    /// A part of a section, a pair and a table all make the leaf wide, and
    /// each resolves every offset of the section (outside the parts: a
    /// miss).
    #[test]
    fn parts_pairs_and_tables_resolve_in_a_wide_leaf() {
        let space = DevicePrivateSpace::new();
        let (a, b, c) = (map(&space, 10), map(&space, 5), map(&space, 3));
        // Spilled tables: 12 pagemaps (a two-level hint), 73 (a page map).
        let ones: Vec<_> = (0..70).map(|_| map(&space, 1)).collect();
        let many = |n: usize| -> Vec<&DevPagemap> {
            [&a, &b, &c]
                .into_iter()
                .chain(&ones)
                .take(n)
                .map(|p| &**p)
                .collect()
        };
        let (twelve, all) = (many(12), many(73));
        let (idx, tree) = index();
        let cases: [(Slot<'_>, &[&DevPagemap]); 5] = [
            (Slot::One(&a), &[&a]),
            (Slot::Shared(vec![&a, &b]), &[&a, &b]),
            (Slot::Shared(vec![&a, &b, &c]), &[&a, &b, &c]),
            (Slot::Shared(twelve.clone()), &twelve),
            (Slot::Shared(all.clone()), &all),
        ];
        idx.set(0, &Slot::One(&a), tree.srcu());
        idx.set(0, &Slot::Empty, tree.srcu());
        let (leaf, i) = leaf_of(&idx.root, 0).unwrap();
        for (slot, pms) in cases {
            let seq = leaf.slots[i].seq.load(Ordering::Relaxed);
            idx.set(0, &slot, tree.srcu());
            assert_eq!(
                leaf.slots[i].seq.load(Ordering::Relaxed),
                seq + 2,
                "one rewrite"
            );
            // One or two pagemaps in the slot's parts, three in a table.
            let part = |k: usize| leaf.slots[i].parts[k].pgmap.load(Ordering::Relaxed);
            assert_eq!(part(0).addr() & SHARED != 0, pms.len() > 2);
            assert_eq!(part(0).addr() & SPILL != 0, pms.len() > INLINE);
            assert_eq!(part(1).is_null(), pms.len() != 2);
            let g = tree.read();
            assert_section_0(&idx, &g, pms);
            // SAFETY: As in `lookup`.
            assert_eq!(unsafe { idx.peek(&g, 0) }.ok(), Some(slot));
        }
        assert!(leaf.wide.load(Ordering::Relaxed));
        idx.set(0, &Slot::Empty, tree.srcu());
        tree.synchronize();
        idx.reclaim(tree.srcu());
        drop(idx);
        for pm in ones.iter().rev().chain([&c, &b, &a]) {
            space.memunmap_device_private_pagemap(pm).unwrap();
        }
    }

    /// A replaced shared table waits for a grace period of the tree's
    /// domain; `reclaim` (what `memunmap` calls after its grace period)
    /// frees it.
    #[test]
    fn a_replaced_shared_table_is_freed_by_reclaim_after_its_grace_period() {
        let space = DevicePrivateSpace::new();
        let (a, b, c) = (map(&space, 10), map(&space, 5), map(&space, 3));
        let (idx, tree) = index();
        idx.set(0, &Slot::Shared(vec![&a, &b, &c]), tree.srcu());
        let g = tree.read();
        idx.set(0, &Slot::One(&a), tree.srcu());
        assert_eq!(idx.retired.lock().len(), 1, "a reader may hold the table");
        idx.reclaim(tree.srcu());
        assert_eq!(idx.retired.lock().len(), 1, "the reader still may");
        drop(g);
        idx.reclaim(tree.srcu());
        assert_eq!(idx.retired.lock().len(), 0);
        drop(idx);
        space.memunmap_device_private_pagemap(&c).unwrap();
        space.memunmap_device_private_pagemap(&b).unwrap();
        space.memunmap_device_private_pagemap(&a).unwrap();
    }

    /// The seqlock on real threads: a writer moves a whole section between
    /// two pagemaps (the only slot change that rewrites the base of a slot
    /// naming a pagemap, so the rewrite marker is stored), with a grace
    /// period before a pagemap comes back (as the space has: no ABA). A
    /// reader of that section never misses and never pairs a pagemap with
    /// a page from the other one's memmap (`PageRef::from_parts` asserts
    /// it). It runs until the reader has seen the slot change under it
    /// `OVERLAPS` times (each a chance for the race), or `MAX_REWRITES`
    /// rewrites: counts, not time, so a loaded machine runs longer rather
    /// than checking less.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "real threads and grace periods: over 10 minutes under Miri; \
                  the other sparse tests run the same unsafe lookups under Miri, \
                  and loom runs the race"
    )]
    fn readers_never_pair_a_pagemap_with_another_ones_base() {
        const OVERLAPS: u64 = 20_000;
        const MAX_REWRITES: usize = 200_000;
        let (s1, s2) = (DevicePrivateSpace::new(), DevicePrivateSpace::new());
        let (a, b) = (map(&s1, 512), map(&s2, 512));
        assert_eq!((a.first_offset().get(), b.first_offset().get()), (0, 0));
        let (idx, tree) = index();
        idx.set(0, &Slot::One(&a), tree.srcu());
        let (done, enough) = (AtomicBool::new(false), AtomicBool::new(false));
        let (mut pages, mut rechecks) = (0u64, 0u64);
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..MAX_REWRITES {
                    if enough.load(Ordering::Relaxed) {
                        break;
                    }
                    let pm = if i % 2 == 0 { &b } else { &a };
                    idx.set(0, &Slot::One(pm), tree.srcu());
                    tree.synchronize();
                }
                done.store(true, Ordering::Release);
            });
            let mut k = 0u64;
            while !done.load(Ordering::Acquire) {
                let g = tree.read();
                for _ in 0..64 {
                    k = (k + 1) % 512;
                    match lookup(&idx, &g, k) {
                        Hit::Page(p) => {
                            let i = usize::try_from(k).unwrap();
                            assert!(
                                ptr::eq(&*p, &p.owner().pages()[i]),
                                "offset {k}: a page paired with another pagemap"
                            );
                            pages += 1;
                        }
                        Hit::Busy => {
                            rechecks += 1;
                            if rechecks == OVERLAPS {
                                enough.store(true, Ordering::Relaxed);
                            }
                        }
                        Hit::Miss => panic!("offset {k} missed while mapped"),
                    }
                }
            }
        });
        if rechecks < OVERLAPS {
            eprintln!(
                "WARNING: readers_never_pair_a_pagemap_with_another_ones_base: only \
                 {rechecks} of {OVERLAPS} overlapping reads in {MAX_REWRITES} rewrites"
            );
        }
        assert!(pages > 0, "{pages} pages, {rechecks} rechecks");
        drop(idx);
        s1.memunmap_device_private_pagemap(&a).unwrap();
        s2.memunmap_device_private_pagemap(&b).unwrap();
    }
}
