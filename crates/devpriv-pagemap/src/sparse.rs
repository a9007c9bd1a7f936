//! The section index: offset → pagemap in two dependent loads.
//!
//! Kernel: `mem_section[][]` and `__nr_to_section()` (`mm/sparse.c`,
//! `include/linux/mmzone.h`, `SPARSEMEM_EXTREME`): a root array of lazily
//! allocated leaves, one slot per section (main, as a model-only index).
//!
//! The v6 proposal turned `pfn_to_page()` (pointer arithmetic) into a maple-tree
//! walk; this index is how the model gets most of the arithmetic back. The
//! range tree stays the truth; the index is derived from it under the
//! space's writer lock. A slot holds the one pagemap that overlaps its
//! section, or [`Slot::Shared`] when two or more do (possible under the
//! kernel's exact, page-aligned packing), in which case the lookup falls
//! back to the tree.
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
//! 16 bytes, so the hot slots of a thousand whole sections fit in L1.
//!
//! The words are not written together, so the reader uses the seqlock
//! pattern with the pointer as the sequence: load the pointer (Acquire),
//! the base (and bounds), `fence(Acquire)`, and the pointer again; base and
//! bounds are used only if the pointer did not change. The writer, before
//! it changes them, stores the shared sentinel and issues `fence(Release)`.
//! A reader that read a new base therefore sees at least that sentinel on
//! its re-check, and falls back to the pagemap it first found (still valid:
//! see below). The marker is the shared sentinel, not null: a reader that
//! loads it first walks the tree, where null would read as "no pagemap"
//! and make a live pagemap's offset miss while a neighbour in the same
//! section is mapped or unmapped (found by `devpriv stress`). There is no
//! ABA: a pagemap's address cannot be reused while a reader that found it
//! is inside its read section.
//!
//! The re-check is needed because `memunmap` drops the writer lock before
//! its grace period: a concurrent `memremap` can publish a new pagemap (and
//! base) in the section while a reader still holds the old pointer.
//!
//! # Reclamation
//!
//! Leaves are never freed before the index is dropped. Slots hold raw
//! pointers to pagemaps that the range tree keeps alive: a pagemap removed
//! from the index and the tree is dropped only when the tree's grace period
//! ends, and every reader of the index holds a read guard of the tree.

use crate::memremap::DevPagemap;
use crate::mm_types::{Page, PageRef};
use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_core::sync::atomic::{AtomicPtr, AtomicU64, Ordering, fence};
use devpriv_rangetree::ReadGuard;
use std::ptr;
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

/// The sentinel for a section shared by several pagemaps. Never
/// dereferenced; its address (1) is never a real pagemap's.
fn shared() -> *mut DevPagemap {
    ptr::without_provenance_mut(1)
}

/// One section's slot: the pagemap and its biased memmap base, tagged in
/// bit 0 when the pagemap covers the section only in part (module docs).
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
}

/// A heap leaf of empty slots (96 KiB).
fn new_leaf() -> Box<Leaf> {
    Box::new(Leaf {
        slots: std::array::from_fn(|_| SlotCell {
            pgmap: AtomicPtr::new(ptr::null_mut()),
            base: AtomicPtr::new(ptr::null_mut()),
        }),
        bounds: std::array::from_fn(|_| AtomicU64::new(0)),
    })
}

/// What a section slot says.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Slot<'a> {
    Empty,
    One(&'a DevPagemap),
    Shared,
}

/// What a lookup found for one offset.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Hit<'a> {
    /// No pagemap overlaps the offset's section.
    Empty,
    /// Several do: ask the tree.
    Shared,
    /// The slot changed under the reader: ask the pagemap it found.
    Recheck(&'a DevPagemap),
    /// The one pagemap in the section does not hold this offset.
    Miss,
    /// The page itself, from the section's memmap base.
    Page(PageRef<'a>),
}

impl PartialEq for Slot<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Slot::Empty, Slot::Empty) | (Slot::Shared, Slot::Shared) => true,
            (Slot::One(a), Slot::One(b)) => ptr::eq(*a, *b),
            _ => false,
        }
    }
}

/// A slot whose memmap base or bounds are not what [`SectionIndex::set`]
/// writes for its pagemap (both as `(base address, bounds word)`).
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
    /// Planted bugs (`SpaceIndex*`); none outside loom.
    mutants: Mutants,
}

/// What a slot holding `pm` says about `section`: the biased memmap base
/// (`base + offset` is the page at `offset`), tagged `PARTIAL` if `pm`
/// covers only part of the section, and the bounds word (0 if whole).
fn slot_data(pm: &DevPagemap, section: u64, section_pages: u64) -> (*mut Page, u64) {
    let first = pm.first_offset().get();
    let end = first + pm.nr_pages().get();
    let start = section * section_pages;
    // Both bounds lie in `0..=section_pages`, at most 2^31 (the space
    // clamps section sizes), so they fit the two halves of one word.
    let lo = first.saturating_sub(start).min(section_pages);
    let hi = end.saturating_sub(start).min(section_pages);
    // Wrapping pointer arithmetic keeps the array's provenance; readers add
    // back an offset inside `lo..hi`, which lands inside the array.
    #[expect(clippy::cast_possible_truncation, reason = "64-bit targets only")]
    let bias = first as usize;
    let base = pm.pages().as_ptr().cast_mut().wrapping_sub(bias);
    if lo == 0 && hi == section_pages {
        (base, 0)
    } else {
        (base.map_addr(|a| a | PARTIAL), lo | hi << 32)
    }
}

impl Drop for SectionIndex {
    fn drop(&mut self) {
        for l in self.root.iter() {
            let p = l.load(Ordering::Relaxed);
            if !p.is_null() {
                // SAFETY: Leaves come from `Box::into_raw` in `leaf_for` and
                // are freed only here, with `&mut self` (no reader left).
                drop(unsafe { Box::from_raw(p) });
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
    /// base is the one `set` would write.
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
        if p == shared() {
            return Ok(Slot::Shared);
        }
        // SAFETY: As in `lookup`.
        let pm: &'g DevPagemap = unsafe { &*p };
        let want = slot_data(pm, section, self.section_pages());
        if have != want {
            return Err(StaleBase {
                pgmap: pm,
                have: (have.0.addr(), have.1),
                want: (want.0.addr(), want.1),
            });
        }
        Ok(Slot::One(pm))
    }
    /// Sets the slot of `section`. Caller holds the space's writer lock.
    pub(crate) fn set(&self, section: u64, slot: Slot<'_>) {
        let Some(l) = usize::try_from(section >> LEAF_BITS)
            .ok()
            .and_then(|i| self.root.get(i))
        else {
            return; // Beyond the space: nothing can be published there.
        };
        let (v, data) = match slot {
            Slot::Empty => (ptr::null_mut(), (ptr::null_mut(), 0)),
            Slot::Shared => (shared(), (ptr::null_mut(), 0)),
            Slot::One(pm) => (
                ptr::from_ref(pm).cast_mut(),
                slot_data(pm, section, self.section_pages()),
            ),
        };
        let mut leaf = l.load(Ordering::Acquire);
        if leaf.is_null() {
            if v.is_null() {
                return;
            }
            leaf = Box::into_raw(new_leaf());
            // Release: the leaf's (null) slots are initialised before a
            // reader can reach them.
            l.store(leaf, Ordering::Release);
        }
        // SAFETY: Non-null leaves are live until the index drops.
        let leaf = unsafe { &*leaf };
        #[expect(clippy::cast_possible_truncation, reason = "masked to LEAF_BITS")]
        let i = (section as usize) & (LEAF_SLOTS - 1);
        let (cell, bounds) = (&leaf.slots[i], &leaf.bounds[i]);
        // Writers are serialised: nobody else changes the slot meanwhile.
        let old = cell.pgmap.load(Ordering::Relaxed);
        let now = (
            cell.base.load(Ordering::Relaxed),
            bounds.load(Ordering::Relaxed),
        );
        if now != data {
            // Seqlock write side (module docs): a reader that sees the new
            // base or bounds must see the old pointer gone when it
            // re-checks.
            if !old.is_null() {
                // The shared sentinel, not null: a reader in the window
                // walks the tree instead of reporting an empty section.
                cell.pgmap.store(shared(), Ordering::Relaxed);
            }
            if !self.mutants.has(Mutant::SpaceIndexPublishNoBarrier) {
                fence(Ordering::Release);
            }
            cell.base.store(data.0, Ordering::Relaxed);
            bounds.store(data.1, Ordering::Relaxed);
        }
        let order = if self.mutants.has(Mutant::SpaceIndexRelaxedPublish)
            || self.mutants.has(Mutant::SpaceIndexPublishNoBarrier)
        {
            Ordering::Relaxed
        } else {
            Ordering::Release
        };
        // Release: the pagemap (and base and bounds) are written before the
        // pointer is reachable.
        cell.pgmap.store(v, order);
        match (old.is_null(), v.is_null()) {
            (true, false) => self.occupied.fetch_add(1, Ordering::Relaxed),
            (false, true) => self.occupied.fetch_sub(1, Ordering::Relaxed),
            _ => 0,
        };
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
#[inline]
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
    #[expect(clippy::cast_possible_truncation, reason = "masked to LEAF_BITS")]
    let i = (section as usize) & (LEAF_SLOTS - 1);
    Some((&leaf.slots[i], &leaf.bounds[i]))
}

impl IndexView<'_> {
    /// What the index knows about page `offset`: two dependent loads (leaf,
    /// then slot), and for a fully covered section the page itself. What it
    /// finds lives as long as the borrow of `guard`.
    ///
    /// # Safety
    ///
    /// - `guard` reads the range tree of the space this index belongs to
    ///   (whose grace period keeps a pagemap found here alive).
    #[inline]
    pub(crate) unsafe fn lookup<'g>(self, _guard: &'g TreeGuard<'_>, offset: u64) -> Hit<'g> {
        let Some((cell, bounds)) = cell(self.root, offset >> self.shift) else {
            return Hit::Empty;
        };
        let p = cell.pgmap.load(Ordering::Acquire);
        if p.is_null() {
            return Hit::Empty;
        }
        if p == shared() {
            return Hit::Shared;
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
        if partial {
            let in_section = offset & ((1 << self.shift) - 1);
            #[expect(clippy::cast_possible_truncation, reason = "the low half is lo")]
            let (lo, hi) = (u64::from(bounds as u32), bounds >> 32);
            if in_section.wrapping_sub(lo) >= hi.wrapping_sub(lo) {
                return Hit::Miss;
            }
        }
        #[expect(clippy::cast_possible_truncation, reason = "64-bit targets only")]
        let page = base
            .map_addr(|a| a & !PARTIAL)
            .wrapping_add(offset as usize);
        // SAFETY: `base` and `bounds` were published for `pm` (the re-check
        // shows the slot still held `pm` after they were read), and the
        // offset lies in the part of the section `pm` covers, so
        // `base + offset` is `&pm.pages[offset - first]`, alive for `'g`
        // like `pm`.
        Hit::Page(PageRef::from_parts(pm, unsafe { &*page }))
    }
}
