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
//! writer lock. A slot says one of:
//!
//! - nothing: no pagemap overlaps the section;
//! - one pagemap, with its memmap base (below);
//! - a *shared section*: two or more pagemaps overlap it (the kernel's
//!   exact packing does this whenever a pagemap is smaller than a section
//!   or ends inside one), and the slot points to an immutable table of the
//!   section's sub-ranges, one per pagemap, sorted ([`Shared`]). A lookup
//!   there counts the sub-range starts at or below the offset (8 at a
//!   time, branch-free; more than 8 sub-ranges go to a sorted spill array,
//!   binary-searched) and reads that sub-range's base. No layout falls
//!   back to the tree.
//!
//! # The memmap base (`section_mem_map`)
//!
//! A slot holds the pagemap pointer and a biased memmap base
//! (`pages - first_offset`, as SPARSEMEM encodes `section_mem_map`), so
//! `base + offset` is the page and the lookup never reads the pagemap's
//! header (a separate cache line, on the critical path). Bit 0 of the base
//! (page structs are 64-byte aligned, so it is free) marks a section the
//! pagemap covers only in part; its bounds (`lo..hi`, relative to the
//! section) sit in a parallel array of the leaf, read only then. Slots stay
//! 16 bytes, so the hot slots of a thousand whole sections fit in L1. A
//! shared section's sub-ranges carry their own bases and bounds.
//!
//! The words of a one-pagemap slot are not written together, so the reader
//! uses the seqlock pattern with the pointer as the sequence: load the
//! pointer (Acquire), the base (and bounds), `fence(Acquire)`, and the
//! pointer again; base and bounds are used only if the pointer did not
//! change. The writer, before it changes them, issues `fence(Release)`,
//! and if the slot still names a pagemap, first replaces that with a
//! *rewrite marker*. A reader that read a new base therefore sees the old
//! pointer gone on its re-check, and falls back to the pagemap it first
//! found (still valid: see below). The marker is not null: a reader that
//! loads it walks the tree, where null would read as "no pagemap" and make
//! a live pagemap's offset miss (found by `devpriv stress` when the marker
//! was null). In the slot transitions the space makes (a pagemap appears
//! in or leaves a section), the base changes only where the old pointer is
//! null or a shared table, so the marker is a safety net that no steady
//! state reaches. There is no ABA: a pagemap's address cannot be reused
//! while a reader that found it is inside its read section.
//!
//! The re-check is needed because `memunmap` drops the writer lock before
//! its grace period: a concurrent `memremap` can publish a new pagemap (and
//! base) in the section while a reader still holds the old pointer.
//!
//! A shared section's table is built completely and then published with
//! one `Release` store (`rcu_assign_pointer()`); it is never changed, only
//! replaced, so it needs no re-check.
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
use crate::mm_types::{Page, PageRef};
use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_core::srcu::{RetireList, Srcu};
use devpriv_core::sync::atomic::{AtomicPtr, AtomicU64, Ordering, fence};
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

/// The rewrite marker (module docs). Never dereferenced; its address (1)
/// is never a pagemap's nor a table's.
fn rewrite() -> *mut DevPagemap {
    ptr::without_provenance_mut(1)
}

/// One section's slot: the pagemap (or tagged table) and its biased memmap
/// base, tagged in bit 0 when the pagemap covers the section only in part
/// (module docs).
#[repr(C, align(16))]
struct SlotCell {
    pgmap: AtomicPtr<DevPagemap>,
    base: AtomicPtr<Page>,
}

/// Bit 0 of a slot's base: read the section's bounds.
const PARTIAL: usize = 1;

/// A leaf: its slots inline, so a lookup goes root → leaf → slot with no
/// pointer in between, and the bounds of partly covered sections.
struct Leaf {
    slots: [SlotCell; LEAF_SLOTS],
    /// `lo | hi << 32`: the slot's pagemap covers pages `lo..hi` of the
    /// section. Meaningful only when the slot's base is tagged `PARTIAL`.
    bounds: [AtomicU64; LEAF_SLOTS],
    /// Loom only: the leaf's initialisation as one tracked write, which
    /// every reader that reaches the leaf reads (loom does not track the
    /// initialisation of atomics). Zero-sized otherwise.
    init: TrackedCell<bool>,
}

/// A heap leaf of empty slots (96 KiB).
fn new_leaf() -> Box<Leaf> {
    Box::new(Leaf {
        slots: std::array::from_fn(|_| SlotCell {
            pgmap: AtomicPtr::new(ptr::null_mut()),
            base: AtomicPtr::new(ptr::null_mut()),
        }),
        bounds: std::array::from_fn(|_| AtomicU64::new(0)),
        init: TrackedCell::new(true),
    })
}

/// Sub-ranges a shared table keeps inline, searched 8 at a time; more
/// (pagemaps under 64 pages in 2 MiB sections) go to a sorted spill array.
const INLINE: usize = 8;

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

/// What a shared section's table holds; immutable once published. Laid
/// out for the search: starts and ends fill the first cache line; each
/// sub-range's base and pagemap share a line after it.
#[repr(C, align(64))]
struct SharedData {
    /// Section-relative first page of sub-range `i`, ascending; `i32::MAX`
    /// past `len`. Signed: starts stay below 2^31 (the space clamps section
    /// sizes), and x86's packed compare is signed.
    starts: [i32; INLINE],
    ends: [u32; INLINE],
    /// Sub-range `i`'s biased memmap base and pagemap.
    subs: [(*mut Page, *const DevPagemap); INLINE],
    len: usize,
    /// Every sub-range, sorted by start, when there are more than `INLINE`.
    spill: Box<[Sub]>,
}

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
        // One packed compare: bit `j` says sub-range `j` starts above
        // `rel`. Starts ascend, so those bits are a suffix, and the count
        // of starts at or below `rel` is the number of trailing zeros.
        #[expect(clippy::cast_possible_wrap, reason = "below 2^31")]
        let r = rel as i32;
        let above = d
            .starts
            .iter()
            .enumerate()
            .fold(0u32, |m, (j, &s)| m | u32::from(s > r) << j);
        let n = (above | 1 << INLINE).trailing_zeros() as usize;
        let i = n.checked_sub(1)? & (INLINE - 1);
        (rel < d.ends[i]).then(|| d.subs[i])
    }

    /// As `find`, over the spill array (binary search).
    #[inline(never)]
    fn find_spill(&self, rel: u32) -> Option<(*mut Page, *const DevPagemap)> {
        let d = self.data();
        let n = d.spill.partition_point(|sub| sub.start <= rel);
        let sub = d.spill.get(n.checked_sub(1)?)?;
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
                base: base.map_addr(|a| a & !PARTIAL),
                pgmap: ptr::from_ref(pm),
            }
        };
        let mut d = SharedData {
            starts: [i32::MAX; INLINE],
            ends: [0; INLINE],
            subs: [(ptr::null_mut(), ptr::null()); INLINE],
            len: parts.len(),
            spill: Box::new([]),
        };
        if parts.len() <= INLINE {
            for (i, p) in parts.iter().enumerate() {
                let sub = sub(p);
                d.starts[i] = i32::try_from(sub.start).unwrap_or(i32::MAX);
                (d.ends[i], d.subs[i]) = (sub.end, (sub.base, sub.pgmap));
            }
        } else {
            d.spill = parts.iter().map(sub).collect();
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
    /// The slot is being rewritten: ask the tree.
    Busy,
    /// The slot changed under the reader: ask the pagemap it found.
    Recheck(&'a DevPagemap),
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
    /// Planted bugs (`SpaceIndex*`); none outside loom.
    mutants: Mutants,
}

/// What a slot holding `pm` says about `section`: the biased memmap base
/// (`base + offset` is the page at `offset`), tagged `PARTIAL` if `pm`
/// covers only part of the section, and the bounds word (0 if whole).
fn slot_data(pm: &DevPagemap, section: u64, section_pages: u64) -> (*mut Page, u64) {
    let (lo, hi) = coverage(pm, section, section_pages);
    // Wrapping pointer arithmetic keeps the array's provenance; readers add
    // back an offset inside `lo..hi`, which lands inside the array.
    #[expect(clippy::cast_possible_truncation, reason = "64-bit targets only")]
    let bias = pm.first_offset().get() as usize;
    let base = pm.pages().as_ptr().cast_mut().wrapping_sub(bias);
    if u64::from(lo) == 0 && u64::from(hi) == section_pages {
        (base, 0)
    } else {
        (
            base.map_addr(|a| a | PARTIAL),
            u64::from(lo) | u64::from(hi) << 32,
        )
    }
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
                    let v = cell.pgmap.load(Ordering::Relaxed);
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
    pub(crate) fn new(space_pages: u64, section_pages_shift: u32, mutants: Mutants) -> Self {
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
            mutants,
        }
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
            mutants: self.mutants,
        }
    }

    /// What the slot of `section` says, for `validate`; also checks that its
    /// base (or each shared sub-range's base and bounds) is the one `set`
    /// would write.
    ///
    /// # Safety
    ///
    /// As for [`IndexView::lookup`].
    pub(crate) unsafe fn peek<'g>(
        &self,
        _guard: &'g TreeGuard<'_>,
        section: u64,
    ) -> Result<Slot<'g>, StaleBase<'g>> {
        let Some((cell, bounds)) = cell(&self.root, section) else {
            return Ok(Slot::Empty);
        };
        let p = cell.pgmap.load(Ordering::Acquire);
        let have = (
            cell.base.load(Ordering::Acquire),
            bounds.load(Ordering::Acquire),
        );
        if p.is_null() {
            return Ok(Slot::Empty);
        }
        let sp = self.section_pages();
        if p.addr() & SHARED != 0 {
            // SAFETY: As in `lookup`.
            let s = unsafe { shared_at::<'g>(p) };
            let mut pms = Vec::new();
            for sub in s.parts() {
                // SAFETY: As in `lookup`.
                let pm: &'g DevPagemap = unsafe { &*sub.pgmap };
                let (base, _) = slot_data(pm, section, sp);
                let (wlo, whi) = coverage(pm, section, sp);
                let have = (
                    sub.base.addr(),
                    u64::from(sub.start) | u64::from(sub.end) << 32,
                );
                let want = (
                    base.addr() & !PARTIAL,
                    u64::from(wlo) | u64::from(whi) << 32,
                );
                if have != want {
                    return Err(StaleBase {
                        pgmap: pm,
                        have,
                        want,
                    });
                }
                pms.push(pm);
            }
            return Ok(Slot::Shared(pms));
        }
        // The marker never outlives `set`, which runs under the writer lock
        // that `validate` holds.
        debug_assert!(p != rewrite(), "a rewrite marker left in a slot");
        // SAFETY: As in `lookup`.
        let pm: &'g DevPagemap = unsafe { &*p };
        let want = slot_data(pm, section, sp);
        if have != want {
            return Err(StaleBase {
                pgmap: pm,
                have: (have.0.addr(), have.1),
                want: (want.0.addr(), want.1),
            });
        }
        Ok(Slot::One(pm))
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
        let (v, data, table) = match slot {
            Slot::Empty => (ptr::null_mut(), None, None),
            Slot::One(pm) => (
                ptr::from_ref(*pm).cast_mut(),
                Some(slot_data(pm, section, sp)),
                None,
            ),
            Slot::Shared(pms) => {
                let parts: Vec<_> = pms
                    .iter()
                    .map(|pm| {
                        let (lo, hi) = coverage(pm, section, sp);
                        (*pm, lo, hi)
                    })
                    .collect();
                let t = SharedBox::new(&parts, section, sp);
                (t.tagged(), None, Some(t))
            }
        };
        let mut leaf = l.load(Ordering::Acquire);
        if leaf.is_null() {
            if v.is_null() {
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
        let (cell, bounds) = (&leaf.slots[i], &leaf.bounds[i]);
        // Writers are serialised: nobody else changes the slot meanwhile.
        let old = cell.pgmap.load(Ordering::Relaxed);
        if old == v {
            return;
        }
        if self.mutants.has(Mutant::SpaceIndexNullRewriteMarker) && !old.is_null() {
            // The stress harness's bug: the slot reads "empty" meanwhile.
            cell.pgmap.store(ptr::null_mut(), Ordering::Relaxed);
        }
        let now = (
            cell.base.load(Ordering::Relaxed),
            bounds.load(Ordering::Relaxed),
        );
        if let Some(data) = data.filter(|&d| d != now) {
            // Seqlock write side (module docs): a reader that sees the new
            // base or bounds must see the old pointer gone when it
            // re-checks. Only a pagemap pointer can be paired with them.
            if !old.is_null() && old.addr() & TAG == 0 {
                cell.pgmap.store(rewrite(), Ordering::Relaxed);
            }
            if !self.mutants.has(Mutant::SpaceIndexPublishNoBarrier) {
                fence(Ordering::Release);
            }
            cell.base.store(data.0, Ordering::Relaxed);
            bounds.store(data.1, Ordering::Relaxed);
        }
        let relaxed = if table.is_some() {
            self.mutants.has(Mutant::SpaceIndexSharedRelaxedPublish)
        } else {
            self.mutants.has(Mutant::SpaceIndexRelaxedPublish)
                || self.mutants.has(Mutant::SpaceIndexPublishNoBarrier)
        };
        let order = if relaxed {
            Ordering::Relaxed
        } else {
            Ordering::Release
        };
        // Release: the pagemap (and base and bounds), or the whole table,
        // are written before the pointer is reachable.
        cell.pgmap.store(v, order);
        // The slot owns its table from here on.
        std::mem::forget(table);
        match (old.is_null(), v.is_null()) {
            (true, false) => self.occupied.fetch_add(1, Ordering::Relaxed),
            (false, true) => self.occupied.fetch_sub(1, Ordering::Relaxed),
            _ => 0,
        };
        if old.addr() & SHARED != 0 {
            // SAFETY: `old` was this slot's table, now unpublished.
            let t = unsafe { SharedBox::from_tagged(old) };
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
    mutants: Mutants,
}

/// The slot of `section`, if its leaf exists.
#[inline(always)]
fn cell(root: &[AtomicPtr<Leaf>], section: u64) -> Option<(&SlotCell, &AtomicU64)> {
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
    Some((&leaf.slots[i], &leaf.bounds[i]))
}

impl IndexView<'_> {
    /// What the index knows about page `offset`: two dependent loads (leaf,
    /// then slot), then for a section one pagemap covers the page itself,
    /// and for a shared section one more (its table). What it finds lives
    /// as long as the borrow of `guard`.
    ///
    /// # Safety
    ///
    /// - `guard` reads the range tree of the space this index belongs to
    ///   (whose grace period keeps a pagemap or table found here alive).
    #[inline(always)]
    pub(crate) unsafe fn lookup<'g>(self, _guard: &'g TreeGuard<'_>, offset: u64) -> Hit<'g> {
        let Some((cell, bounds)) = cell(self.root, offset >> self.shift) else {
            return Hit::Miss;
        };
        let p = cell.pgmap.load(Ordering::Acquire);
        if p.addr() & TAG != 0 || p.is_null() {
            return Self::lookup_other(p, offset, self.shift);
        }
        // SAFETY: A published pagemap stays allocated while the tree's read
        // guard that the caller lends for `'g` is live (module docs).
        let pm: &'g DevPagemap = unsafe { &*p };
        pm.touch();
        let base = cell.base.load(Ordering::Relaxed);
        let partial = base.addr() & PARTIAL != 0;
        let bounds = if partial {
            bounds.load(Ordering::Relaxed)
        } else {
            0
        };
        // Seqlock re-check (module docs): pairs with the writer's
        // `fence(Release)` before it changes base or bounds.
        fence(Ordering::Acquire);
        let same = self.mutants.has(Mutant::SpaceIndexNoRecheck)
            || cell.pgmap.load(Ordering::Relaxed) == p;
        if !same {
            return Hit::Recheck(pm);
        }
        let base = if partial {
            #[expect(clippy::cast_possible_truncation, reason = "below 2^31")]
            let rel = (offset & ((1 << self.shift) - 1)) as u32;
            #[expect(clippy::cast_possible_truncation, reason = "the low half is lo")]
            let (lo, hi) = (bounds as u32, (bounds >> 32) as u32);
            if rel.wrapping_sub(lo) >= hi.wrapping_sub(lo) {
                return Hit::Miss;
            }
            base.map_addr(|a| a & !PARTIAL)
        } else {
            base
        };
        #[expect(clippy::cast_possible_truncation, reason = "64-bit targets only")]
        let page = base.wrapping_add(offset as usize);
        // SAFETY: `base` and `bounds` were published for `pm` (the re-check
        // shows the slot still held `pm` after they were read), and the
        // offset lies in the part of the section `pm` covers, so
        // `base + offset` is `&pm.pages[offset - first]`, alive for `'g`
        // like `pm`.
        Hit::Page(PageRef::from_parts(pm, unsafe { &*page }))
    }

    /// `lookup` for a slot that holds no pagemap pointer: empty, a shared
    /// section's table, or the rewrite marker.
    #[inline(always)]
    fn lookup_other<'g>(p: *mut DevPagemap, offset: u64, shift: u32) -> Hit<'g> {
        if p.addr() & SHARED == 0 {
            return if p.is_null() { Hit::Miss } else { Hit::Busy };
        }
        // SAFETY: A tagged table pointer, loaded under the caller's guard
        // for `'g` (`lookup`'s contract).
        let table = unsafe { shared_at::<'g>(p) };
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
        // (module docs).
        let pm: &'g DevPagemap = unsafe { &*pm };
        pm.touch();
        #[expect(clippy::cast_possible_truncation, reason = "64-bit targets only")]
        let page = base.wrapping_add(offset as usize);
        // SAFETY: `rel` lies in `pm`'s part of the section, so
        // `base + offset` is `&pm.pages[offset - first]`, alive for `'g`
        // like `pm`.
        Hit::Page(PageRef::from_parts(pm, unsafe { &*page }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DevicePrivateSpace, NoopOps, Owner, PagemapParams};
    use devpriv_core::PageCount;
    use devpriv_core::sync::atomic::AtomicBool;
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
            SectionIndex::new((LEAF_SLOTS as u64) << SHIFT, SHIFT, Mutants::NONE),
            RangeTree::new(),
        )
    }

    #[allow(unsafe_code, reason = "the index's lookup")]
    fn lookup<'g>(idx: &SectionIndex, g: &'g TreeGuard<'_>, offset: u64) -> Hit<'g> {
        // SAFETY: Every pagemap the tests publish outlives the index.
        unsafe { idx.view().lookup(g, offset) }
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

    /// A reader that finds the rewrite marker is sent to the tree (`Busy`);
    /// it must never read as an empty slot (`Miss`), which would make a
    /// mapped offset miss.
    #[test]
    fn the_rewrite_marker_sends_readers_to_the_tree() {
        let space = DevicePrivateSpace::new();
        let a = map(&space, 512);
        let (idx, tree) = index();
        idx.set(0, &Slot::One(&a), tree.srcu());
        let (cell, _) = cell(&idx.root, 0).unwrap();
        let g = tree.read();
        assert!(matches!(lookup(&idx, &g, 7), Hit::Page(_)));
        cell.pgmap.store(rewrite(), Ordering::Relaxed);
        assert!(matches!(lookup(&idx, &g, 7), Hit::Busy));
        drop(g);
        idx.set(0, &Slot::One(&a), tree.srcu());
        let g = tree.read();
        assert!(matches!(lookup(&idx, &g, 7), Hit::Page(p) if ptr::eq(&*p, &a.pages()[7])));
        drop(g);
        drop(idx);
        space.memunmap_device_private_pagemap(&a).unwrap();
    }

    /// A replaced shared table waits for a grace period of the tree's
    /// domain; `reclaim` (what `memunmap` calls after its grace period)
    /// frees it.
    #[test]
    fn a_replaced_shared_table_is_freed_by_reclaim_after_its_grace_period() {
        let space = DevicePrivateSpace::new();
        let (a, b) = (map(&space, 10), map(&space, 5));
        let (idx, tree) = index();
        idx.set(0, &Slot::Shared(vec![&a, &b]), tree.srcu());
        let g = tree.read();
        idx.set(0, &Slot::One(&a), tree.srcu());
        assert_eq!(idx.retired.lock().len(), 1, "a reader may hold the table");
        idx.reclaim(tree.srcu());
        assert_eq!(idx.retired.lock().len(), 1, "the reader still may");
        drop(g);
        idx.reclaim(tree.srcu());
        assert_eq!(idx.retired.lock().len(), 0);
        drop(idx);
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
    fn readers_never_pair_a_pagemap_with_another_ones_base() {
        const OVERLAPS: u64 = 20_000;
        const MAX_REWRITES: usize = 2_000_000;
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
                        Hit::Recheck(_) | Hit::Busy => {
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
