//! The section index: offset → pagemap in two dependent loads.
//!
//! Kernel: `mem_section[][]` and `__nr_to_section()` (`mm/sparse.c`,
//! `include/linux/mmzone.h`, `SPARSEMEM_EXTREME`): a root array of lazily
//! allocated leaves, one slot per section.
//!
//! The series turned `pfn_to_page()` (pointer arithmetic) into a maple-tree
//! walk; this index is how the model gets most of the arithmetic back. The
//! range tree stays the truth; the index is derived from it under the
//! space's writer lock. A slot holds the one pagemap that overlaps its
//! section, or [`Slot::Shared`] when two or more do (possible under the
//! kernel's exact, page-aligned packing), in which case the lookup falls
//! back to the tree.
//!
//! # Reclamation
//!
//! Leaves are never freed before the index is dropped. Slots hold raw
//! pointers to pagemaps that the range tree keeps alive: a pagemap removed
//! from the index and the tree is dropped only when the tree's grace period
//! ends, and every reader of the index holds a read guard of the tree.

use crate::memremap::DevPagemap;
use devpriv_core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::ptr;

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

/// A leaf: its slots inline, so a lookup goes root → leaf → slot with no
/// pointer in between.
type Leaf = [AtomicPtr<DevPagemap>; LEAF_SLOTS];

/// A heap leaf of empty slots, built in place (it is 32 KiB).
fn new_leaf() -> Box<Leaf> {
    let slots: Box<[AtomicPtr<DevPagemap>]> = (0..LEAF_SLOTS)
        .map(|_| AtomicPtr::new(ptr::null_mut()))
        .collect();
    match slots.try_into() {
        Ok(leaf) => leaf,
        Err(_) => unreachable!("built with exactly LEAF_SLOTS slots"),
    }
}

/// What a section slot says.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Slot<'a> {
    Empty,
    One(&'a DevPagemap),
    Shared,
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

pub(crate) struct SectionIndex {
    /// log2 of pages per section.
    section_pages_shift: u32,
    root: Box<[AtomicPtr<Leaf>]>,
    /// Non-empty slots (writer-maintained), so `validate` need not scan.
    occupied: AtomicU64,
    /// Loom mutant: publish with `Relaxed`.
    #[cfg(loom)]
    pub(crate) relaxed_publish: bool,
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
    /// `1 << section_pages_shift` pages.
    pub(crate) fn new(space_pages: u64, section_pages_shift: u32) -> Self {
        let sections = (space_pages >> section_pages_shift).max(1);
        let leaves = usize::try_from(sections.div_ceil(LEAF_SLOTS as u64)).unwrap_or(usize::MAX);
        SectionIndex {
            section_pages_shift,
            root: (0..leaves)
                .map(|_| AtomicPtr::new(ptr::null_mut()))
                .collect(),
            occupied: AtomicU64::new(0),
            #[cfg(loom)]
            relaxed_publish: false,
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

    /// The slot for page `offset`: two dependent loads (leaf, then slot).
    ///
    /// # Safety
    ///
    /// - The caller holds a read guard of the space's range tree for `'g`
    ///   (a pagemap found here is kept alive by the tree's grace period).
    #[inline]
    pub(crate) unsafe fn lookup<'g>(&self, offset: u64) -> Slot<'g> {
        let s = offset >> self.section_pages_shift;
        let Some(leaf) = usize::try_from(s >> LEAF_BITS)
            .ok()
            .and_then(|i| self.root.get(i))
        else {
            return Slot::Empty;
        };
        let leaf = leaf.load(Ordering::Acquire);
        if leaf.is_null() {
            return Slot::Empty;
        }
        // SAFETY: Non-null leaves are live until the index drops.
        let leaf = unsafe { &*leaf };
        #[expect(clippy::cast_possible_truncation, reason = "masked to LEAF_BITS")]
        let p = leaf[(s as usize) & (LEAF_SLOTS - 1)].load(Ordering::Acquire);
        if p.is_null() {
            Slot::Empty
        } else if p == shared() {
            Slot::Shared
        } else {
            // SAFETY: A published pagemap stays allocated while the tree's
            // read guard that the caller holds is live (module docs).
            Slot::One(unsafe { &*p })
        }
    }

    /// Sets the slot of `section`. Caller holds the space's writer lock.
    pub(crate) fn set(&self, section: u64, slot: Slot<'_>) {
        let Some(l) = usize::try_from(section >> LEAF_BITS)
            .ok()
            .and_then(|i| self.root.get(i))
        else {
            return; // Beyond the space: nothing can be published there.
        };
        let v = match slot {
            Slot::Empty => ptr::null_mut(),
            Slot::Shared => shared(),
            Slot::One(pm) => ptr::from_ref(pm).cast_mut(),
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
        #[cfg(loom)]
        let order = if self.relaxed_publish {
            Ordering::Relaxed
        } else {
            Ordering::Release
        };
        #[cfg(not(loom))]
        let order = Ordering::Release;
        // Release: the pagemap is fully built before it is reachable.
        let old = leaf[i].swap(v, order);
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
