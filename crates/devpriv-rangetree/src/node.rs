//! B+tree nodes with per-child gap bookkeeping, and the writes that change
//! them: path copying, and the maple tree's in-place child store.
//!
//! Kernel: `struct maple_arange_64` (allocation-tree node with a `gap[]`
//! per slot) and `struct maple_range_64` (leaf), `lib/maple_tree.c` (main).
//!
//! A leaf holds up to [`B`] entries (`first`, `last`, value), sorted; it is
//! never modified once built. An internal node holds up to `B` children and
//! routes a key with its *pivots*: child `i` holds every entry whose keys
//! lie in `(pivot[i - 1], pivot[i]]`, and the last child's pivot is
//! `u64::MAX` (the node's upper bound comes from its parent). Each internal
//! node also keeps, for the writer alone, the exact span of every child
//! (first and last key stored below it) and the largest gap inside it, so a
//! gap search skips every subtree whose gaps are all too small: the maple
//! tree's `mas_empty_area()` walk.
//!
//! # Writes
//!
//! - **In place** (the common case, `insert_in_place`, `remove_in_place`):
//!   when a store changes one leaf and neither its fill nor any pivot, the
//!   writer builds the new leaf and publishes it with one `Release` store
//!   into its parent's child slot (`rcu_assign_pointer()` of the slot, as
//!   the maple tree's `mas_replace_node()` in RCU mode), then updates the
//!   writer-only spans and gaps of the ancestors in place
//!   (`mas_update_gap()`). Nothing else is copied.
//! - **Path copying** (`insert`, `remove`): a split, a merge, or an entry
//!   that would cross a pivot copies every node on the root-to-leaf path
//!   and publishes a new root; every other subtree is shared. Rebuilt nodes
//!   get exact pivots.
//!
//! Readers see either the old leaf or the new one, and both are whole.
//! Pivots are never written in place, so a pivot may be *stale*: above the
//! last key its child holds now (an erase of a child's last entry keeps the
//! pivot). Any pivot in `[last key of child i, first key of child i+1)` routes
//! every stored key correctly; the writer-only spans stay exact, and the
//! fast path refuses an entry that would reach past its leaf's pivot.
//!
//! # Ownership
//!
//! The current version owns every node reachable from its root, through
//! plain pointers ([`NodePtr`]); there are no reference counts. A write
//! reports every node it unlinks (the leaf it replaced in place, or the
//! path it copied) in `replaced`. From then on that node is unreachable
//! from the current root, so no later write can replace it again: every
//! node is retired exactly once, and freed after a grace period. Freeing a
//! node never frees its children (they belong to the current version, or
//! were retired on their own).
//!
//! # Invariants
//!
//! - Entries are non-overlapping, sorted, and `first <= last`.
//! - Every leaf is at the same depth; a non-root node holds `MIN..=B`
//!   slots; an internal root holds at least 2.
//! - Internal slot `i`'s writer-only span and gap are child `i`'s exact
//!   span and largest inner gap; its pivot lies in `[span last of i, span
//!   first of i + 1)`, and the last used pivot is `u64::MAX`.
//! - Unused `last` slots hold `u64::MAX`, so the array is sorted and a
//!   fixed-shape search over all of it is exact.

use crate::{NodeFault, ValidateError};
use arrayvec::ArrayVec;
use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_core::sync::UnsafeCell;
use devpriv_core::sync::atomic::{AtomicPtr, Ordering};
use std::mem::MaybeUninit;
use std::ptr::{self, NonNull};

/// Slots per node (the maple tree uses 10 in allocation nodes, 16 in
/// leaves). Exactly 16: `slot_for` is a two-step 4-ary search.
pub(crate) const B: usize = 16;
/// Fewest slots in a non-root node. A quarter rather than a half, so that a
/// split at the right edge can leave the left node nearly full: lowest-fit
/// allocation appends at the right, and dense nodes mean fewer levels.
pub(crate) const MIN: usize = B / 4;
const _: () = assert!(B == 16 && MIN >= 2 && 2 * MIN <= B);
/// The deepest a tree can be: every internal node below the root has at
/// least `MIN` children, so 2^64 entries fit in 33 levels.
const MAX_DEPTH: usize = 34;

/// Scratch list for building nodes: room for two nodes' slots (a merge).
/// On the stack, so a write allocates nothing but nodes.
pub(crate) type Scratch<X> = ArrayVec<X, { 2 * B }>;

/// One stored range and its value.
pub(crate) struct Entry<T> {
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) value: T,
}

#[allow(
    clippy::large_enum_variant,
    reason = "both variants are arrays of B slots; their sizes differ only with T"
)]
// `repr(u8)`: the tag, then the variant's fields in this order, so the
// pointers or values a lookup follows sit right after the tag.
#[repr(u8)]
pub(crate) enum Kind<T> {
    // Values sit in the leaf itself, so a lookup that reads the value needs
    // no further pointer chase. Copying a leaf clones them (`T: Clone`).
    Leaf {
        values: [Option<T>; B],
        first: [u64; B],
        /// Largest gap between two entries of the leaf.
        max_gap: u64,
    },
    Internal {
        /// Written in place by the fast path (`Release`), read by lookups
        /// (`Acquire`).
        child: [AtomicPtr<Node<T>>; B],
        meta: MetaCell,
    },
}

/// What the writer knows about an internal node's children; readers never
/// look at it. Kept exact by every write.
///
/// Kernel: the `gap[]` of `struct maple_arange_64` (which the maple tree
/// also updates in place, `mas_update_gap()`; `lib/maple_tree.c`, main),
/// plus the spans.
#[derive(Clone, Copy)]
pub(crate) struct Meta {
    /// First key stored below child `i`.
    first: [u64; B],
    /// Last key stored below child `i` (the pivot may be higher).
    last: [u64; B],
    /// Child `i`'s largest inner gap.
    gap: [u64; B],
    /// Largest gap strictly inside this subtree.
    max_gap: u64,
}

/// An internal node's [`Meta`], which the writer updates in place.
///
/// A plain `UnsafeCell`, outside loom's view: only the holder of the tree's
/// writer lock reads or writes it (the lock is proven by borrowing the
/// tree's [`NodeCache`], which lives inside that lock), and readers never
/// touch it, so no access to it can race.
pub(crate) struct MetaCell(std::cell::UnsafeCell<Meta>);

// Laid out for lookups: the node is cache-line aligned, `last` fills the
// first two lines, and `len`, the kind tag and the first child pointers or
// values share the third. What a lookup reads at most once (a leaf's
// `first`) or never (the gaps) comes last.
#[repr(C, align(64))]
pub(crate) struct NodeData<T> {
    /// Leaf: each entry's last key. Internal: the pivots.
    pub(crate) last: [u64; B],
    pub(crate) len: usize,
    pub(crate) kind: Kind<T>,
}

/// A node. The contents sit in the sync shim's `UnsafeCell` only so that
/// loom can check that every read is ordered after the node was built.
pub(crate) struct Node<T> {
    cell: UnsafeCell<NodeData<T>>,
}

/// A pointer to a heap node, owned by the tree version that reaches it (see
/// the module docs). `Copy`: copying it never copies or frees the node.
pub(crate) struct NodePtr<T>(NonNull<Node<T>>);

impl<T> Clone for NodePtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for NodePtr<T> {}

// SAFETY: A `NodePtr` is a pointer to a node that readers only read (its
// child slots are atomics; its `Meta` only the writer-lock holder touches);
// moving one to another thread moves the right to read (and, for its
// owner, to free) a node whose contents are `Send + Sync` when `T` is.
unsafe impl<T: Send + Sync> Send for NodePtr<T> {}
// SAFETY: As for `Send`: shared access reads the node, or writes its
// atomics and (under the writer lock) its `Meta`.
unsafe impl<T: Send + Sync> Sync for NodePtr<T> {}

impl<T> NodePtr<T> {
    /// The raw pointer, for publishing in an `AtomicPtr`.
    pub(crate) fn as_ptr(self) -> *mut Node<T> {
        self.0.as_ptr()
    }

    /// Rebuilds a `NodePtr` from a pointer made by [`NodePtr::as_ptr`].
    ///
    /// # Safety
    ///
    /// - `p` came from `as_ptr` of a `NodePtr` whose node is not yet freed.
    pub(crate) unsafe fn from_ptr(p: *mut Node<T>) -> Self {
        // SAFETY: `as_ptr` never yields null (caller's contract).
        NodePtr(unsafe { NonNull::new_unchecked(p) })
    }

    /// The node.
    ///
    /// # Safety
    ///
    /// - The node must stay allocated for `'a`: the caller holds the writer
    ///   lock of a tree whose current version reaches it, or a read guard
    ///   taken before the version that stopped reaching it was published.
    #[inline(always)]
    pub(crate) unsafe fn get<'a>(self) -> &'a Node<T> {
        // SAFETY: Allocated for `'a` (caller's contract). The contents are
        // only written through atomics or `MetaCell` after construction, so
        // a shared reference is sound.
        unsafe { self.0.as_ref() }
    }

    /// Frees this node alone (its values, not its children).
    ///
    /// Under loom the memory is kept (leaked) and the contents are dropped
    /// through a checked write instead, so a reader that is not ordered
    /// before the free is reported as a causality violation rather than
    /// reading freed memory.
    ///
    /// # Safety
    ///
    /// - No other `NodePtr` to this node is used afterwards: it was retired
    ///   and a grace period has passed, or it was never published.
    pub(crate) unsafe fn free(self) {
        // SAFETY: The pointer came from `Box::leak` in `alloc`, and the
        // caller guarantees this is its last use.
        let node = unsafe { Box::from_raw(self.0.as_ptr()) };
        devpriv_core::sync::free_reachable(node, |node| {
            // Under loom only: drop the contents (values included) through
            // a checked write, and keep the memory.
            let old = node.cell.with_mut(|p| {
                // SAFETY: `p` is valid (the memory is kept), and loom checks
                // this write against every other access before it happens.
                unsafe { p.replace(NodeData::poisoned()) }
            });
            drop(old);
        });
    }

    /// Frees this node and every node below it.
    ///
    /// # Safety
    ///
    /// - As for [`NodePtr::free`], for the whole subtree: it is the current
    ///   version of a tree nobody can read any more.
    pub(crate) unsafe fn free_tree(self) {
        // SAFETY: Caller's contract; each child is owned by this subtree.
        let d = unsafe { self.get() }.data();
        if !d.is_leaf() {
            for i in 0..d.len {
                // SAFETY: As above: the child belongs to this subtree only.
                unsafe { d.child_ptr(i).free_tree() };
            }
        }
        // SAFETY: Caller's contract.
        unsafe { self.free() };
    }
}

/// Node allocations waiting for reuse.
///
/// Kernel: the maple tree's `maple_node_cache` (a `kmem_cache`, main). Writers
/// build a node per write (more when they copy a path) and get as many
/// back after each grace period; recycling the memory keeps `malloc` off
/// the write path. Only the writer-lock holder can reach a tree's cache,
/// so borrowing it is how node code proves it holds that lock.
pub(crate) struct NodeCache<T> {
    free: Vec<Box<MaybeUninit<Node<T>>>>,
}

impl<T> NodeCache<T> {
    /// Most allocations kept for reuse; beyond that they are freed. Room
    /// for a few batches of retired nodes (`RETIRE_BATCH` in the crate
    /// root).
    const MAX: usize = 128;

    pub(crate) fn new() -> Self {
        NodeCache { free: Vec::new() }
    }

    /// A node holding what `build` returns. The allocation is taken first,
    /// so the (large) contents can be built in place rather than copied.
    #[inline(always)]
    fn alloc_with(&mut self, build: impl FnOnce() -> NodeData<T>) -> NodePtr<T> {
        let slot = self.free.pop().unwrap_or_else(Box::new_uninit);
        let b = Box::write(
            slot,
            Node {
                cell: UnsafeCell::new(build()),
            },
        );
        NodePtr(NonNull::from(Box::leak(b)))
    }

    /// Takes back a node: drops its contents and keeps the allocation.
    ///
    /// # Safety
    ///
    /// - As for [`NodePtr::free`].
    pub(crate) unsafe fn recycle(&mut self, n: NodePtr<T>) {
        // Under loom memory is never reused: `free` keeps it poisoned.
        if cfg!(loom) || self.free.len() >= Self::MAX {
            // SAFETY: Caller's contract.
            unsafe { n.free() };
            return;
        }
        let raw = n.as_ptr();
        // SAFETY: `raw` came from `Box::leak` in `alloc` and this is its last
        // use (caller's contract), so its contents may be dropped in place.
        unsafe { raw.drop_in_place() };
        // SAFETY: The allocation is live, now holds no value, and
        // `MaybeUninit<Node<T>>` has the layout of `Node<T>`.
        self.free
            .push(unsafe { Box::from_raw(raw.cast::<MaybeUninit<Node<T>>>()) });
    }
}

/// Length of the gap between two neighbouring spans (0 if they touch).
#[inline]
fn gap_between(prev_last: u64, next_first: u64) -> u64 {
    next_first - prev_last - 1
}

/// The largest gap between the first `len` entries of a leaf.
#[inline]
fn leaf_gap(first: &[u64; B], last: &[u64; B], len: usize) -> u64 {
    (1..len)
        .map(|i| gap_between(last[i - 1], first[i]))
        .max()
        .unwrap_or(0)
}

impl<T> Node<T> {
    #[inline]
    pub(crate) fn data(&self) -> &NodeData<T> {
        // SAFETY: The contents are written once, when the node is built, and
        // never through a mutable access afterwards (the child slots are
        // atomics and `Meta` sits in its own `UnsafeCell`; only loom's free
        // check takes `with_mut`, after the grace period); so this shared
        // reference never aliases a write.
        self.cell.with(|p| unsafe { &*p })
    }
}

/// Test only: corrupting a node, for `validate`'s own tests.
#[cfg(test)]
impl<T> NodePtr<T> {
    /// The node's contents, writable.
    ///
    /// # Safety
    ///
    /// - The node is allocated, and no other reference to it (no reader, no
    ///   other borrow) is live while the result is.
    #[cfg_attr(
        loom,
        expect(
            dead_code,
            reason = "the unit tests that use it do not build under loom"
        )
    )]
    pub(crate) unsafe fn data_mut<'a>(self) -> &'a mut NodeData<T> {
        // SAFETY: Caller's contract.
        let node = unsafe { self.get() };
        // SAFETY: As above: nothing else reads or writes the contents.
        node.cell.with_mut(|p| unsafe { &mut *p })
    }
}

impl MetaCell {
    fn new(m: Meta) -> Self {
        MetaCell(std::cell::UnsafeCell::new(m))
    }

    /// Reads the metadata. `_lock`, the tree's node cache, proves the
    /// caller holds the writer lock, and borrowing it keeps any `&mut`
    /// from [`MetaCell::get_mut`] out for as long as this lives.
    #[inline]
    fn get<'a, T>(&'a self, _lock: &'a NodeCache<T>) -> &'a Meta {
        // SAFETY: Only the writer-lock holder accesses a `Meta` (type
        // docs), and the borrow of its cache rules out a live `&mut`.
        unsafe { &*self.0.get() }
    }

    /// Writes the metadata; `_lock` as for [`MetaCell::get`], mutably, so
    /// no other reference to any node's `Meta` is live.
    #[inline]
    fn get_mut<'a, T>(&'a self, _lock: &'a mut NodeCache<T>) -> &'a mut Meta {
        // SAFETY: As in `get`; the unique borrow of the cache means no
        // other `Meta` reference handed out under this lock is live.
        unsafe { &mut *self.0.get() }
    }
}

impl<T> NodePtr<T> {
    /// A leaf holding `entries` (sorted, non-overlapping, at most `B`).
    pub(crate) fn leaf(cache: &mut NodeCache<T>, entries: Scratch<Entry<T>>) -> Self {
        debug_assert!(entries.len() <= B);
        let len = entries.len();
        let mut first = [u64::MAX; B];
        let mut last = [u64::MAX; B];
        let mut values: [Option<T>; B] = Default::default();
        let mut max_gap = 0;
        for (i, e) in entries.into_iter().enumerate() {
            first[i] = e.first;
            last[i] = e.last;
            values[i] = Some(e.value);
            if i > 0 {
                max_gap = max_gap.max(gap_between(last[i - 1], first[i]));
            }
        }
        cache.alloc_with(|| NodeData {
            last,
            len,
            kind: Kind::Leaf {
                values,
                first,
                max_gap,
            },
        })
    }

    /// A copy of the leaf `d` with `e` inserted at `pos`: the in-place
    /// write's builder, straight from one leaf into the next.
    fn leaf_with(cache: &mut NodeCache<T>, d: &NodeData<T>, pos: usize, e: Entry<T>) -> Self
    where
        T: Clone,
    {
        let Kind::Leaf {
            values: ov,
            first: of,
            ..
        } = &d.kind
        else {
            unreachable!("leaf_with() of an internal node")
        };
        let len = d.len + 1;
        debug_assert!(len <= B && pos < len);
        cache.alloc_with(|| {
            // Unused slots hold `u64::MAX` already, and stay unused.
            let shift = |old: &[u64; B], new: u64| -> [u64; B] {
                let mut out = *old;
                #[expect(
                    clippy::manual_memcpy,
                    reason = "a short loop; copy_from_slice calls memcpy"
                )]
                for i in pos + 1..len {
                    out[i] = old[i - 1];
                }
                out[pos] = new;
                out
            };
            let first = shift(of, e.first);
            let last = shift(&d.last, e.last);
            let mut values: [Option<T>; B] = [const { None }; B];
            for i in 0..pos {
                values[i].clone_from(&ov[i]);
            }
            for i in pos + 1..len {
                values[i].clone_from(&ov[i - 1]);
            }
            values[pos] = Some(e.value);
            NodeData {
                last,
                len,
                kind: Kind::Leaf {
                    values,
                    first,
                    max_gap: leaf_gap(&first, &last, len),
                },
            }
        })
    }

    /// A copy of the leaf `d` without slot `pos`.
    fn leaf_without(cache: &mut NodeCache<T>, d: &NodeData<T>, pos: usize) -> Self
    where
        T: Clone,
    {
        let Kind::Leaf {
            values: ov,
            first: of,
            ..
        } = &d.kind
        else {
            unreachable!("leaf_without() of an internal node")
        };
        let len = d.len - 1;
        debug_assert!(pos <= len);
        cache.alloc_with(|| {
            // As in `leaf_with`; the last slot becomes unused.
            let shift = |old: &[u64; B]| -> [u64; B] {
                let mut out = *old;
                #[expect(
                    clippy::manual_memcpy,
                    reason = "a short loop; copy_from_slice calls memcpy"
                )]
                for i in pos..len {
                    out[i] = old[i + 1];
                }
                out[len] = u64::MAX;
                out
            };
            let first = shift(of);
            let last = shift(&d.last);
            let mut values: [Option<T>; B] = [const { None }; B];
            for i in 0..pos {
                values[i].clone_from(&ov[i]);
            }
            for i in pos..len {
                values[i].clone_from(&ov[i + 1]);
            }
            NodeData {
                last,
                len,
                kind: Kind::Leaf {
                    values,
                    first,
                    max_gap: leaf_gap(&first, &last, len),
                },
            }
        })
    }

    /// An internal node over `children` (same height, sorted, 1 to `B`),
    /// with exact pivots.
    pub(crate) fn internal(cache: &mut NodeCache<T>, children: Scratch<ChildSlot<T>>) -> Self {
        debug_assert!(!children.is_empty() && children.len() <= B);
        let len = children.len();
        let mut pivot = [u64::MAX; B];
        let mut m = Meta {
            first: [u64::MAX; B],
            last: [u64::MAX; B],
            gap: [0; B],
            max_gap: 0,
        };
        let child: [AtomicPtr<Node<T>>; B] =
            std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut()));
        for (i, c) in children.into_iter().enumerate() {
            m.first[i] = c.first;
            m.last[i] = c.last;
            m.gap[i] = c.gap;
            if i + 1 < len {
                pivot[i] = c.last;
            }
            // Not yet published: the `Release` store of the node itself
            // orders this.
            child[i].store(c.node.as_ptr(), Ordering::Relaxed);
        }
        m.max_gap = m.inner_gap(len);
        cache.alloc_with(|| NodeData {
            last: pivot,
            len,
            kind: Kind::Internal {
                child,
                meta: MetaCell::new(m),
            },
        })
    }

    pub(crate) fn empty(cache: &mut NodeCache<T>) -> Self {
        NodePtr::leaf(cache, Scratch::new())
    }
}

impl Meta {
    /// The largest of the gaps slot `slot` takes part in: inside its child,
    /// and between it and each neighbour.
    fn slot_gaps(&self, slot: usize, len: usize) -> u64 {
        let mut g = self.gap[slot];
        if slot > 0 {
            g = g.max(gap_between(self.last[slot - 1], self.first[slot]));
        }
        if slot + 1 < len {
            g = g.max(gap_between(self.last[slot], self.first[slot + 1]));
        }
        g
    }

    /// The largest gap inside the subtree of a node with `len` children:
    /// inside a child, or between two.
    fn inner_gap(&self, len: usize) -> u64 {
        let mut g = 0;
        for i in 0..len {
            g = g.max(self.gap[i]);
            if i > 0 {
                g = g.max(gap_between(self.last[i - 1], self.first[i]));
            }
        }
        g
    }
}

impl<T> NodeData<T> {
    /// What a node freed under loom holds: no slots.
    fn poisoned() -> Self {
        NodeData {
            last: [u64::MAX; B],
            len: 0,
            kind: Kind::Leaf {
                values: Default::default(),
                first: [u64::MAX; B],
                max_gap: 0,
            },
        }
    }

    /// Index of the first slot whose `last` (entry end or pivot) is at or
    /// after `index` (`len` if none). Unused slots hold `u64::MAX`, so the
    /// whole array is sorted and a fixed-shape search over it is exact.
    ///
    /// The search is 4-ary and branch-free: three independent compares pick
    /// the quarter, four more pick the slot. Two dependent steps per node
    /// instead of a binary search's five keep the lookup's critical path
    /// short, which is what bounds throughput when many lookups overlap.
    #[inline(always)]
    pub(crate) fn slot_for(&self, index: u64) -> usize {
        const Q: usize = B / 4;
        let l = &self.last;
        let lt = |i: usize| usize::from(l[i] < index);
        let quarter = lt(Q - 1) + lt(2 * Q - 1) + lt(3 * Q - 1);
        let base = quarter * Q;
        // `& (B - 1)`: the identity here, but it lets the compiler drop the
        // bounds checks.
        (0..Q).map(|j| lt((base + j) & (B - 1))).sum::<usize>() + base
    }

    pub(crate) fn is_leaf(&self) -> bool {
        matches!(self.kind, Kind::Leaf { .. })
    }

    /// Child `i` (`i < len` of an internal node). `Acquire`: pairs with the
    /// in-place store of a new child (and is free on x86 and Arm64's
    /// dependent loads alike; loom needs it to see the new child's build).
    #[inline(always)]
    pub(crate) fn child_ptr(&self, i: usize) -> NodePtr<T> {
        match &self.kind {
            Kind::Internal { child, .. } => {
                let p = child[i].load(Ordering::Acquire);
                debug_assert!(!p.is_null(), "slot below len holds a child");
                // SAFETY: Slots below `len` always hold a node (set when the
                // node was built, replaced only by another node).
                unsafe { NodePtr::from_ptr(p) }
            }
            Kind::Leaf { .. } => unreachable!("child_ptr() on a leaf"),
        }
    }

    /// Child `i`, borrowed for as long as this node is.
    #[inline(always)]
    pub(crate) fn child(&self, i: usize) -> &Node<T> {
        // SAFETY: A child is allocated at least as long as a node of the
        // same version that reaches it (module docs: children are freed
        // only after the versions reaching them are unreachable and a grace
        // period has passed, which outlasts any borrow of the parent). A
        // child replaced in place is retired by the same rule.
        unsafe { self.child_ptr(i).get() }
    }

    pub(crate) fn value(&self, i: usize) -> &T {
        match &self.kind {
            Kind::Leaf { values, .. } => values[i].as_ref().expect("slot below len holds a value"),
            Kind::Internal { .. } => unreachable!("value() on an internal node"),
        }
    }

    /// First key of leaf entry `i`.
    pub(crate) fn entry_first(&self, i: usize) -> u64 {
        match &self.kind {
            Kind::Leaf { first, .. } => first[i],
            Kind::Internal { .. } => unreachable!("entry_first() on an internal node"),
        }
    }

    /// The writer-only metadata of an internal node (`None` for a leaf).
    fn meta<'a>(&'a self, lock: &'a NodeCache<T>) -> Option<&'a Meta> {
        match &self.kind {
            Kind::Internal { meta, .. } => Some(meta.get(lock)),
            Kind::Leaf { .. } => None,
        }
    }

    /// First and last key stored in the subtree (`None` when empty).
    /// Writer only (`lock`).
    pub(crate) fn span(&self, lock: &NodeCache<T>) -> Option<(u64, u64)> {
        if self.len == 0 {
            return None;
        }
        Some(match self.meta(lock) {
            Some(m) => (m.first[0], m.last[self.len - 1]),
            None => (self.entry_first(0), self.last[self.len - 1]),
        })
    }

    /// Largest gap strictly inside the subtree. Writer only (`lock`).
    pub(crate) fn max_gap(&self, lock: &NodeCache<T>) -> u64 {
        match (&self.kind, self.meta(lock)) {
            (Kind::Leaf { max_gap, .. }, _) => *max_gap,
            (_, Some(m)) => m.max_gap,
            (Kind::Internal { .. }, None) => unreachable!("internal nodes have meta"),
        }
    }

    /// The children with their slot metadata (taken from this node, not
    /// from the children). Writer only (`lock`).
    pub(crate) fn children(&self, lock: &NodeCache<T>) -> Scratch<ChildSlot<T>> {
        let m = self.meta(lock).expect("children() on a leaf");
        let mut v = Scratch::new();
        v.extend((0..self.len).map(|i| ChildSlot {
            node: self.child_ptr(i),
            first: m.first[i],
            last: m.last[i],
            gap: m.gap[i],
        }));
        v
    }
}

impl<T: Clone> NodeData<T> {
    /// The entries of a leaf (values cloned).
    pub(crate) fn entries(&self) -> Scratch<Entry<T>> {
        let mut v = Scratch::new();
        v.extend((0..self.len).map(|i| Entry {
            first: self.entry_first(i),
            last: self.last[i],
            value: self.value(i).clone(),
        }));
        v
    }
}

/// The entry that contains `index`, as (first, last, value).
///
/// Kernel: `mtree_load()` (`mas_walk()`'s descent, main). One pass down the
/// pivots: an entry holding `index` can only be in the child they route to.
#[inline]
pub(crate) fn load<T>(mut node: &Node<T>, index: u64) -> Option<(u64, u64, &T)> {
    loop {
        let d = node.data();
        let i = d.slot_for(index);
        match &d.kind {
            Kind::Leaf { values, first, .. } => {
                if i >= d.len || first[i] > index {
                    return None;
                }
                return values[i].as_ref().map(|v| (first[i], d.last[i], v));
            }
            Kind::Internal { .. } => node = d.child(i),
        }
    }
}

/// The entry with the lowest `last >= index`, as (first, last, value).
///
/// Kernel: `mt_find()` (`mas_find()`, main). A stale pivot can send the descent
/// into a child that holds nothing at or after `index`; the next child's
/// first entry is then the answer, so the search moves on one slot.
pub(crate) fn lower_bound<T>(node: &Node<T>, index: u64) -> Option<(u64, u64, &T)> {
    let d = node.data();
    let i = d.slot_for(index);
    match &d.kind {
        Kind::Leaf { values, first, .. } => {
            if i >= d.len {
                return None;
            }
            values[i].as_ref().map(|v| (first[i], d.last[i], v))
        }
        Kind::Internal { .. } => (i..d.len).find_map(|c| lower_bound(d.child(c), index)),
    }
}

/// A child and the slot metadata its parent keeps for it. Copying a parent
/// carries the metadata over, so building the copy reads only the children
/// that changed, not every (possibly cold) sibling.
pub(crate) struct ChildSlot<T> {
    node: NodePtr<T>,
    first: u64,
    last: u64,
    gap: u64,
}

impl<T> ChildSlot<T> {
    /// The slot for `node`, read from the node itself. Writer only
    /// (`lock`).
    pub(crate) fn of(node: NodePtr<T>, lock: &NodeCache<T>) -> Self {
        // SAFETY: Callers pass nodes they just built or nodes of the current
        // version, under the writer lock.
        let d = unsafe { node.get() }.data();
        let (first, last) = d.span(lock).expect("a child is never empty");
        ChildSlot {
            node,
            first,
            last,
            gap: d.max_gap(lock),
        }
    }
}

/// Result of inserting into a subtree: one node, or two after a split.
pub(crate) enum Grown<T> {
    One(NodePtr<T>),
    Split(NodePtr<T>, NodePtr<T>),
}

/// Builds one node, or two when `items` overflow. `appended` says the new
/// item went to the right edge: then the left node keeps all but `MIN`
/// items (dense nodes under append-mostly, lowest-fit allocation, as a
/// B-tree bulk load would build them); otherwise the split is even.
fn split_or_one<X, T>(
    cache: &mut NodeCache<T>,
    mut items: Scratch<X>,
    appended: bool,
    build: fn(&mut NodeCache<T>, Scratch<X>) -> NodePtr<T>,
) -> Grown<T> {
    if items.len() <= B {
        Grown::One(build(cache, items))
    } else {
        let mid = if appended {
            items.len() - MIN
        } else {
            items.len() / 2
        };
        let right: Scratch<X> = items.drain(mid..).collect();
        Grown::Split(build(cache, items), build(cache, right))
    }
}

/// Inserts `e`, which overlaps no entry of the subtree, copying the path.
/// Every node it copies is pushed to `replaced`.
pub(crate) fn insert<T: Clone>(
    cache: &mut NodeCache<T>,
    node: NodePtr<T>,
    e: Entry<T>,
    replaced: &mut Vec<NodePtr<T>>,
) -> Grown<T> {
    replaced.push(node);
    // SAFETY: `node` belongs to the current version; the caller holds the
    // writer lock, so nothing frees it during this call.
    let d = unsafe { node.get() }.data();
    if d.is_leaf() {
        let mut entries = d.entries();
        let pos = entries.partition_point(|x| x.first < e.first);
        entries.insert(pos, e);
        return split_or_one(cache, entries, pos == d.len, NodePtr::leaf);
    }
    // The child the pivots route the new entry's first key to (the last
    // pivot is `u64::MAX`). Its pivot may be below the entry's last key:
    // every node on the path is rebuilt with exact pivots.
    let ci = d.slot_for(e.first).min(d.len - 1);
    let mut children = d.children(cache);
    match insert(cache, children[ci].node, e, replaced) {
        Grown::One(c) => children[ci] = ChildSlot::of(c, cache),
        Grown::Split(a, b) => {
            children[ci] = ChildSlot::of(a, cache);
            children.insert(ci + 1, ChildSlot::of(b, cache));
        }
    }
    split_or_one(cache, children, ci + 1 == d.len, NodePtr::internal)
}

/// Removes the entry that starts at `first` (it must exist), copying the
/// path. Returns the new subtree (possibly under-full) and the value. Every
/// node it copies or discards is pushed to `replaced`.
pub(crate) fn remove<T: Clone>(
    cache: &mut NodeCache<T>,
    node: NodePtr<T>,
    first: u64,
    replaced: &mut Vec<NodePtr<T>>,
) -> (NodePtr<T>, T) {
    replaced.push(node);
    // SAFETY: As in `insert`.
    let d = unsafe { node.get() }.data();
    let ci = d.slot_for(first);
    debug_assert!(ci < d.len, "remove() of an absent entry");
    if d.is_leaf() {
        let mut entries = d.entries();
        let e = entries.remove(ci);
        debug_assert_eq!(e.first, first);
        return (NodePtr::leaf(cache, entries), e.value);
    }
    let mut children = d.children(cache);
    let (child, value) = remove(cache, children[ci].node, first, replaced);
    // SAFETY: `child` was just built and is not yet published.
    let under_full = unsafe { child.get() }.data().len < MIN;
    children[ci] = ChildSlot::of(child, cache);
    if under_full {
        rebalance(cache, &mut children, ci, replaced);
    }
    (NodePtr::internal(cache, children), value)
}

/// Merges the under-full child `ci` with a neighbour, or shares the
/// neighbour's slots with it, so that both end up with at least `MIN`.
/// Both originals go to `replaced` (the neighbour is published; the
/// under-full child is not, and freeing it later is harmless).
fn rebalance<T: Clone>(
    cache: &mut NodeCache<T>,
    children: &mut Scratch<ChildSlot<T>>,
    ci: usize,
    replaced: &mut Vec<NodePtr<T>>,
) {
    if children.len() < 2 {
        return; // Only the root may be this small; the caller collapses it.
    }
    let (l, r) = if ci > 0 { (ci - 1, ci) } else { (ci, ci + 1) };
    replaced.push(children[l].node);
    replaced.push(children[r].node);
    // SAFETY: Both are allocated: one is in the current version, the other
    // was just built; the caller holds the writer lock.
    let ld = unsafe { children[l].node.get() }.data();
    // SAFETY: As for the left one.
    let rd = unsafe { children[r].node.get() }.data();
    let merged = if ld.is_leaf() {
        let mut es = ld.entries();
        es.extend(rd.entries());
        split_or_one(cache, es, false, NodePtr::leaf)
    } else {
        let mut cs = ld.children(cache);
        cs.extend(rd.children(cache));
        split_or_one(cache, cs, false, NodePtr::internal)
    };
    match merged {
        Grown::One(n) => {
            children[l] = ChildSlot::of(n, cache);
            children.remove(r);
        }
        Grown::Split(a, b) => {
            children[l] = ChildSlot::of(a, cache);
            children[r] = ChildSlot::of(b, cache);
        }
    }
}

/// What an in-place write did.
pub(crate) enum InPlace<T> {
    /// The new leaf is published in its parent; this leaf was unlinked.
    Child(NodePtr<T>),
    /// The leaf is the root: the caller publishes this new root.
    Root(NodePtr<T>),
}

/// The internal nodes from the root down to a leaf, each with the slot the
/// descent took.
type Path<T> = ArrayVec<(NodePtr<T>, usize), MAX_DEPTH>;

/// Descends from `root` along the pivots of `key`, recording the path in
/// `path` (filled in place: it is large). Returns the leaf and the highest
/// key the leaf may hold (its last pivot on the way).
#[inline(always)]
fn descend<T>(root: NodePtr<T>, key: u64, path: &mut Path<T>) -> (NodePtr<T>, u64) {
    let mut node = root;
    let mut hi = u64::MAX;
    loop {
        // SAFETY: Nodes of the current version, under the writer lock
        // (callers of the in-place writes).
        let d = unsafe { node.get() }.data();
        if d.is_leaf() {
            return (node, hi);
        }
        let i = d.slot_for(key).min(d.len - 1);
        if i + 1 < d.len {
            hi = d.last[i];
        }
        path.push((node, i));
        node = d.child_ptr(i);
    }
}

/// Publishes `new` in place of the leaf at the end of `path` (one store into
/// its parent's slot), then brings the writer-only spans and gaps of every
/// ancestor up to date. Returns what the caller must retire or publish.
fn replace_leaf<T>(
    cache: &mut NodeCache<T>,
    path: &Path<T>,
    old: NodePtr<T>,
    new: NodePtr<T>,
    mutants: Mutants,
) -> InPlace<T> {
    let Some(&(parent, slot)) = path.last() else {
        return InPlace::Root(new);
    };
    // SAFETY: `parent` is in the current version; writer lock held.
    let pd = unsafe { parent.get() }.data();
    let Kind::Internal { child, .. } = &pd.kind else {
        unreachable!("a path holds internal nodes")
    };
    let order = if mutants.has(Mutant::RangeTreeRelaxedChildStore) {
        Ordering::Relaxed
    } else {
        Ordering::Release
    };
    // Release: the new leaf is complete before a reader can reach it.
    child[slot].store(new.as_ptr(), order);
    // The spans and gaps above: writer-only, so plain in-place updates.
    for &(node, slot) in path.iter().rev() {
        // SAFETY: As for `parent`.
        let d = unsafe { node.get() }.data();
        let c = ChildSlot::of(d.child_ptr(slot), cache);
        let Kind::Internal { meta, .. } = &d.kind else {
            unreachable!("a path holds internal nodes")
        };
        let m = meta.get_mut(cache);
        if (m.first[slot], m.last[slot], m.gap[slot]) == (c.first, c.last, c.gap) {
            break; // Nothing above can change either.
        }
        let before = m.slot_gaps(slot, d.len);
        (m.first[slot], m.last[slot], m.gap[slot]) = (c.first, c.last, c.gap);
        let after = m.slot_gaps(slot, d.len);
        if after >= m.max_gap {
            m.max_gap = after;
        } else if before == m.max_gap {
            // The largest gap may have shrunk: look at every slot.
            m.max_gap = m.inner_gap(d.len);
        }
    }
    InPlace::Child(old)
}

/// Inserts `e` (which overlaps nothing) by replacing one leaf in place, if
/// the leaf has room and `e` stays below its pivot; otherwise hands `e`
/// back for [`insert`].
pub(crate) fn insert_in_place<T: Clone>(
    cache: &mut NodeCache<T>,
    root: NodePtr<T>,
    e: Entry<T>,
    mutants: Mutants,
) -> Result<InPlace<T>, Entry<T>> {
    let mut path = Path::new();
    let (leaf, hi) = descend(root, e.first, &mut path);
    // SAFETY: As in `descend`.
    let d = unsafe { leaf.get() }.data();
    if d.len >= B || e.last > hi {
        return Err(e);
    }
    let pos = d.slot_for(e.first);
    let new = NodePtr::leaf_with(cache, d, pos, e);
    Ok(replace_leaf(cache, &path, leaf, new, mutants))
}

/// What [`remove_in_place`] did.
pub(crate) enum Removed<T> {
    /// No entry holds the key.
    Absent,
    /// The leaf would fall below `MIN`: remove the entry that starts here
    /// with [`remove`].
    CopyPath(u64),
    /// Done in place; the value removed.
    Done(InPlace<T>, T),
}

/// Removes the entry that holds `index` by replacing its leaf in place, if
/// the leaf stays at least `MIN` full (or is the root).
pub(crate) fn remove_in_place<T: Clone>(
    cache: &mut NodeCache<T>,
    root: NodePtr<T>,
    index: u64,
    mutants: Mutants,
) -> Removed<T> {
    let mut path = Path::new();
    let (leaf, _) = descend(root, index, &mut path);
    // SAFETY: As in `descend`.
    let d = unsafe { leaf.get() }.data();
    // The pivots route `index` to the only leaf that can hold it.
    let i = d.slot_for(index);
    if i >= d.len || d.entry_first(i) > index {
        return Removed::Absent;
    }
    if !path.is_empty() && d.len <= MIN {
        return Removed::CopyPath(d.entry_first(i));
    }
    let value = d.value(i).clone();
    let new = NodePtr::leaf_without(cache, d, i);
    Removed::Done(replace_leaf(cache, &path, leaf, new, mutants), value)
}

/// What a gap search is looking for.
///
/// Kernel: the arguments of `mas_empty_area()` / `mas_empty_area_rev()`,
/// plus a power-of-two alignment (main).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fit {
    pub(crate) size: u64,
    pub(crate) align: u64,
    pub(crate) min: u64,
    pub(crate) max: u64,
}

impl Fit {
    /// Lowest aligned start of `size` inside `[gs, ge] ∩ [min, max]`.
    #[inline]
    pub(crate) fn low(&self, gs: u64, ge: u64) -> Option<u64> {
        let lo = gs.max(self.min);
        let hi = ge.min(self.max);
        if lo > hi {
            return None;
        }
        let s = lo.checked_add(self.align - 1)? & !(self.align - 1);
        let end = s.checked_add(self.size - 1)?;
        (end <= hi).then_some(s)
    }

    /// Highest aligned start of `size` inside `[gs, ge] ∩ [min, max]`.
    #[inline]
    pub(crate) fn high(&self, gs: u64, ge: u64) -> Option<u64> {
        let lo = gs.max(self.min);
        let hi = ge.min(self.max);
        if lo > hi || hi - lo < self.size - 1 {
            return None;
        }
        let s = (hi - (self.size - 1)) & !(self.align - 1);
        (s >= lo).then_some(s)
    }

    /// Could a gap strictly inside a subtree spanning `[first, last]`, whose
    /// largest inner gap is `gap`, hold the allocation?
    #[inline]
    fn worth_descending(&self, first: u64, last: u64, gap: u64) -> bool {
        gap >= self.size && last > self.min && first < self.max
    }
}

/// Lowest fit among the gaps strictly inside the subtree. Writer only
/// (`lock`).
pub(crate) fn lowest_fit<T>(node: &Node<T>, fit: &Fit, lock: &NodeCache<T>) -> Option<u64> {
    let d = node.data();
    match d.meta(lock) {
        None => {
            for i in 1..d.len {
                let gs = d.last[i - 1] + 1;
                if gs > fit.max {
                    return None;
                }
                if let Some(s) = fit.low(gs, d.entry_first(i) - 1) {
                    return Some(s);
                }
            }
            None
        }
        Some(m) => {
            for i in 0..d.len {
                if i > 0 {
                    // The gap before child i (empty when the spans touch,
                    // which `Fit::low` rejects).
                    let gs = m.last[i - 1] + 1;
                    if gs > fit.max {
                        return None;
                    }
                    if let Some(s) = fit.low(gs, m.first[i] - 1) {
                        return Some(s);
                    }
                }
                if fit.worth_descending(m.first[i], m.last[i], m.gap[i])
                    && let Some(s) = lowest_fit(d.child(i), fit, lock)
                {
                    return Some(s);
                }
            }
            None
        }
    }
}

/// Highest fit among the gaps strictly inside the subtree. Writer only
/// (`lock`).
pub(crate) fn highest_fit<T>(node: &Node<T>, fit: &Fit, lock: &NodeCache<T>) -> Option<u64> {
    let d = node.data();
    match d.meta(lock) {
        None => {
            for i in (1..d.len).rev() {
                let ge = d.entry_first(i) - 1;
                if ge < fit.min {
                    return None;
                }
                if let Some(s) = fit.high(d.last[i - 1] + 1, ge) {
                    return Some(s);
                }
            }
            None
        }
        Some(m) => {
            for i in (0..d.len).rev() {
                if fit.worth_descending(m.first[i], m.last[i], m.gap[i])
                    && let Some(s) = highest_fit(d.child(i), fit, lock)
                {
                    return Some(s);
                }
                if i > 0 {
                    let ge = m.first[i] - 1;
                    if ge < fit.min {
                        return None;
                    }
                    if let Some(s) = fit.high(m.last[i - 1] + 1, ge) {
                        return Some(s);
                    }
                }
            }
            None
        }
    }
}

/// The error for `fault` at the node `path` leads to.
fn fault(path: &[usize], fault: NodeFault) -> ValidateError {
    ValidateError::Node {
        path: path.to_vec(),
        fault,
    }
}

/// Checks every invariant of the subtree. Returns (entries, depth). Writer
/// only (`lock`).
pub(crate) fn validate<T>(
    node: &Node<T>,
    is_root: bool,
    path: &mut Vec<usize>,
    lock: &NodeCache<T>,
) -> Result<(usize, usize), ValidateError> {
    let d = node.data();
    let len = d.len;
    if len > B {
        return Err(fault(path, NodeFault::Overfull { len }));
    }
    if !is_root && len < MIN {
        return Err(fault(path, NodeFault::Underfull { len }));
    }
    if is_root && !d.is_leaf() && len < 2 {
        return Err(fault(path, NodeFault::LoneRootChild { len }));
    }
    for slot in len..B {
        if d.last[slot] != u64::MAX {
            let last = d.last[slot];
            return Err(fault(path, NodeFault::StaleUnusedSlot { slot, last }));
        }
    }
    // The spans: a leaf's entries, an internal node's writer-only metadata.
    let (first, last): (Vec<u64>, Vec<u64>) = match d.meta(lock) {
        None => (0..len).map(|i| (d.entry_first(i), d.last[i])).unzip(),
        Some(m) => (m.first[..len].to_vec(), m.last[..len].to_vec()),
    };
    let mut max_gap = 0;
    for slot in 0..len {
        if first[slot] > last[slot] {
            return Err(fault(
                path,
                NodeFault::InvertedSlot {
                    slot,
                    first: first[slot],
                    last: last[slot],
                },
            ));
        }
        if slot > 0 {
            if first[slot] <= last[slot - 1] {
                return Err(fault(path, NodeFault::Unordered { slot }));
            }
            max_gap = max_gap.max(gap_between(last[slot - 1], first[slot]));
        }
    }
    let (entries, depth) = match &d.kind {
        Kind::Leaf { values, .. } => {
            if values[..len].iter().any(Option::is_none)
                || values[len..].iter().any(Option::is_some)
            {
                return Err(fault(path, NodeFault::ValueSlots { len }));
            }
            (len, 0)
        }
        Kind::Internal { child, meta } => {
            let m = meta.get(lock);
            if child[len..]
                .iter()
                .any(|c| !c.load(Ordering::Relaxed).is_null())
            {
                return Err(fault(path, NodeFault::ChildBeyondLen));
            }
            let mut total = 0;
            let mut depth = None;
            for slot in 0..len {
                // A pivot routes every key of its child and none of the
                // next one's; the last is the node's whole upper range.
                let pivot = d.last[slot];
                let ok = if slot + 1 == len {
                    pivot == u64::MAX
                } else {
                    pivot >= last[slot] && pivot < first[slot + 1]
                };
                if !ok {
                    return Err(fault(path, NodeFault::BadPivot { slot, pivot }));
                }
                if child[slot].load(Ordering::Relaxed).is_null() {
                    return Err(fault(path, NodeFault::MissingChild { slot }));
                }
                let c = d.child(slot);
                let cd = c.data();
                let child_span = cd
                    .span(lock)
                    .ok_or_else(|| fault(path, NodeFault::EmptyChild { slot }))?;
                let slot_span = (first[slot], last[slot]);
                if child_span != slot_span {
                    return Err(fault(
                        path,
                        NodeFault::SpanMismatch {
                            slot,
                            slot_span,
                            child_span,
                        },
                    ));
                }
                let (slot_gap, child_gap) = (m.gap[slot], cd.max_gap(lock));
                if slot_gap != child_gap {
                    return Err(fault(
                        path,
                        NodeFault::GapMismatch {
                            slot,
                            slot_gap,
                            child_gap,
                        },
                    ));
                }
                max_gap = max_gap.max(slot_gap);
                path.push(slot);
                let (n, dep) = validate(c, false, path, lock)?;
                path.pop();
                if *depth.get_or_insert(dep) != dep {
                    return Err(fault(path, NodeFault::UnevenDepth));
                }
                total += n;
            }
            (total, depth.unwrap_or(0) + 1)
        }
    };
    let stored = d.max_gap(lock);
    if max_gap != stored {
        return Err(fault(
            path,
            NodeFault::MaxGap {
                stored,
                computed: max_gap,
            },
        ));
    }
    Ok((entries, depth))
}
