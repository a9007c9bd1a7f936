//! Immutable B+tree nodes with per-child gap bookkeeping.
//!
//! Kernel: `struct maple_arange_64` (allocation-tree node with a `gap[]`
//! per slot) and `struct maple_range_64` (leaf), `lib/maple_tree.c` (main).
//!
//! Nodes are never modified once built. A write builds new nodes along one
//! root-to-leaf path (path copying) and shares every other subtree with the
//! previous version, so readers can walk any version they loaded without a
//! lock. Each slot records the first and last index its entry or subtree
//! covers; internal slots also record the largest gap *inside* the child,
//! so a gap search skips every subtree whose gaps are all too small — the
//! maple tree's `mas_empty_area()` walk.
//!
//! # Ownership
//!
//! The current version owns every node reachable from its root, through
//! plain pointers ([`NodePtr`]); there are no reference counts. A write
//! copies the nodes it changes and reports each original in `replaced`.
//! From then on the original is unreachable from the current root, so no
//! later write can replace it again: every node is retired exactly once,
//! and freed after a grace period. Freeing a node never frees its children
//! (they belong to the current version, or were retired on their own).
//!
//! # Invariants
//!
//! - Entries are non-overlapping, sorted, and `first <= last`.
//! - Every leaf is at the same depth; a non-root node holds `MIN..=B`
//!   slots; an internal root holds at least 2.
//! - Slot `i` of an internal node has `first[i]`/`last[i]` equal to the span
//!   of child `i` and `gap[i]` equal to the child's `max_gap`.
//! - Unused `last` slots hold `u64::MAX`, so the array is sorted and a
//!   fixed-shape search over all of it is exact.

use crate::{NodeFault, ValidateError};
use arrayvec::ArrayVec;
use devpriv_core::sync::UnsafeCell;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

/// Slots per node (the maple tree uses 10 in allocation nodes, 16 in
/// leaves). Exactly 16: `slot_for` is a two-step 4-ary search.
pub(crate) const B: usize = 16;
/// Fewest slots in a non-root node. A quarter rather than a half, so that a
/// split at the right edge can leave the left node nearly full: lowest-fit
/// allocation appends at the right, and dense nodes mean fewer levels.
pub(crate) const MIN: usize = B / 4;
const _: () = assert!(B == 16 && MIN >= 2 && 2 * MIN <= B);

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
// pointers a lookup follows sit right after the tag.
#[repr(u8)]
pub(crate) enum Kind<T> {
    // Values sit in the leaf itself, so a lookup that reads the value needs
    // no further pointer chase. Path copying clones them (`T: Clone`).
    Leaf {
        values: [Option<T>; B],
    },
    Internal {
        child: [Option<NodePtr<T>>; B],
        gap: [u64; B],
    },
}

// Laid out for lookups: the node is cache-line aligned, `last` fills the
// first two lines, and `len`, the kind tag and the first child pointers or
// values share the third. `first` and the gaps, which a lookup reads at
// most once (at the leaf) or never, come last.
#[repr(C, align(64))]
pub(crate) struct NodeData<T> {
    pub(crate) last: [u64; B],
    pub(crate) len: usize,
    pub(crate) kind: Kind<T>,
    pub(crate) first: [u64; B],
    /// Largest gap strictly inside this subtree (between two of its entries).
    pub(crate) max_gap: u64,
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

impl<T> PartialEq for NodePtr<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

// SAFETY: A `NodePtr` is a pointer to an immutable node; moving one to
// another thread moves the right to read (and, for its owner, to free) a
// node whose contents are `Send + Sync` when `T` is.
unsafe impl<T: Send + Sync> Send for NodePtr<T> {}
// SAFETY: As for `Send`: shared access only ever reads the node.
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
        // SAFETY: Allocated for `'a` (caller's contract) and never written
        // after construction, so a shared reference is sound.
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
        if let Kind::Internal { child, .. } = &d.kind {
            for c in child.iter().flatten() {
                // SAFETY: As above: the child belongs to this subtree only.
                unsafe { c.free_tree() };
            }
        }
        // SAFETY: Caller's contract.
        unsafe { self.free() };
    }
}

/// Node allocations waiting for reuse.
///
/// Kernel: the maple tree's `maple_node_cache` (a `kmem_cache`, main). Writers
/// build a node per level per write and free as many after each grace
/// period; recycling the memory keeps `malloc` off the write path.
pub(crate) struct NodeCache<T> {
    free: Vec<Box<MaybeUninit<Node<T>>>>,
}

impl<T> NodeCache<T> {
    /// Most allocations kept for reuse; beyond that they are freed.
    const MAX: usize = 64;

    pub(crate) fn new() -> Self {
        NodeCache { free: Vec::new() }
    }

    fn alloc(&mut self, data: NodeData<T>) -> NodePtr<T> {
        let node = Node {
            cell: UnsafeCell::new(data),
        };
        let b = match self.free.pop() {
            Some(slot) => Box::write(slot, node),
            None => Box::new(node),
        };
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

impl<T> Node<T> {
    #[inline]
    pub(crate) fn data(&self) -> &NodeData<T> {
        // SAFETY: The contents are written once, when the node is built, and
        // never through a mutable access afterwards (only loom's free check
        // takes `with_mut`, with `&mut self`); so this shared reference
        // never aliases a write.
        self.cell.with(|p| unsafe { &*p })
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
        cache.alloc(NodeData {
            last,
            len,
            first,
            max_gap,
            kind: Kind::Leaf { values },
        })
    }

    /// An internal node over `children` (same height, sorted, 1 to `B`).
    pub(crate) fn internal(cache: &mut NodeCache<T>, children: Scratch<ChildSlot<T>>) -> Self {
        debug_assert!(!children.is_empty() && children.len() <= B);
        let len = children.len();
        let mut first = [u64::MAX; B];
        let mut last = [u64::MAX; B];
        let mut gap = [0; B];
        let mut child: [Option<NodePtr<T>>; B] = [None; B];
        let mut max_gap = 0;
        for (i, c) in children.into_iter().enumerate() {
            first[i] = c.first;
            last[i] = c.last;
            gap[i] = c.gap;
            max_gap = max_gap.max(c.gap);
            if i > 0 {
                max_gap = max_gap.max(gap_between(last[i - 1], first[i]));
            }
            child[i] = Some(c.node);
        }
        cache.alloc(NodeData {
            last,
            len,
            first,
            max_gap,
            kind: Kind::Internal { gap, child },
        })
    }

    pub(crate) fn empty(cache: &mut NodeCache<T>) -> Self {
        NodePtr::leaf(cache, Scratch::new())
    }
}

impl<T> NodeData<T> {
    /// What a node freed under loom holds: no slots.
    fn poisoned() -> Self {
        NodeData {
            last: [u64::MAX; B],
            len: 0,
            first: [u64::MAX; B],
            max_gap: 0,
            kind: Kind::Leaf {
                values: Default::default(),
            },
        }
    }

    /// Index of the first slot whose span ends at or after `index`
    /// (`len` if none). Unused slots hold `u64::MAX`, so the whole array is
    /// sorted and a fixed-shape search over it is exact.
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

    /// Child `i` (`i < len` of an internal node).
    pub(crate) fn child_ptr(&self, i: usize) -> NodePtr<T> {
        match &self.kind {
            Kind::Internal { child, .. } => child[i].expect("slot below len holds a child"),
            Kind::Leaf { .. } => unreachable!("child_ptr() on a leaf"),
        }
    }

    /// Child `i`, borrowed for as long as this node is.
    pub(crate) fn child(&self, i: usize) -> &Node<T> {
        // SAFETY: A child is allocated at least as long as a node of the
        // same version that reaches it (module docs: children are freed
        // only after the versions reaching them are unreachable and a grace
        // period has passed, which outlasts any borrow of the parent).
        unsafe { self.child_ptr(i).get() }
    }

    pub(crate) fn value(&self, i: usize) -> &T {
        match &self.kind {
            Kind::Leaf { values } => values[i].as_ref().expect("slot below len holds a value"),
            Kind::Internal { .. } => unreachable!("value() on an internal node"),
        }
    }

    /// The children with their slot metadata (taken from this node, not
    /// from the children).
    pub(crate) fn children(&self) -> Scratch<ChildSlot<T>> {
        let Kind::Internal { gap, .. } = &self.kind else {
            unreachable!("children() on a leaf")
        };
        let mut v = Scratch::new();
        v.extend((0..self.len).map(|i| ChildSlot {
            node: self.child_ptr(i),
            first: self.first[i],
            last: self.last[i],
            gap: gap[i],
        }));
        v
    }

    /// First and last index covered by the subtree (`None` when empty).
    pub(crate) fn span(&self) -> Option<(u64, u64)> {
        (self.len > 0).then(|| (self.first[0], self.last[self.len - 1]))
    }
}

impl<T: Clone> NodeData<T> {
    /// The entries (values cloned).
    pub(crate) fn entries(&self) -> Scratch<Entry<T>> {
        let mut v = Scratch::new();
        v.extend((0..self.len).map(|i| Entry {
            first: self.first[i],
            last: self.last[i],
            value: self.value(i).clone(),
        }));
        v
    }
}

/// The entry with the lowest `last >= index`, as (first, last, value).
///
/// Kernel: the descent of `mas_walk()` / `mtree_load()` (main).
#[inline]
pub(crate) fn lower_bound<T>(mut node: &Node<T>, index: u64) -> Option<(u64, u64, &T)> {
    loop {
        let d = node.data();
        let i = d.slot_for(index);
        if i >= d.len {
            return None;
        }
        match &d.kind {
            Kind::Leaf { values } => {
                return values[i].as_ref().map(|v| (d.first[i], d.last[i], v));
            }
            Kind::Internal { .. } => node = d.child(i),
        }
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
    /// The slot for `node`, read from the node itself.
    pub(crate) fn of(node: NodePtr<T>) -> Self {
        // SAFETY: Callers pass nodes they just built or nodes of the current
        // version, under the writer lock.
        let d = unsafe { node.get() }.data();
        ChildSlot {
            node,
            first: d.first[0],
            last: d.last[d.len - 1],
            gap: d.max_gap,
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
    // The child whose span ends at or after the new entry; the last child
    // when the entry lies beyond every span.
    let ci = d.slot_for(e.first).min(d.len - 1);
    let mut children = d.children();
    match insert(cache, children[ci].node, e, replaced) {
        Grown::One(c) => children[ci] = ChildSlot::of(c),
        Grown::Split(a, b) => {
            children[ci] = ChildSlot::of(a);
            children.insert(ci + 1, ChildSlot::of(b));
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
    let mut children = d.children();
    let (child, value) = remove(cache, children[ci].node, first, replaced);
    // SAFETY: `child` was just built and is not yet published.
    let under_full = unsafe { child.get() }.data().len < MIN;
    children[ci] = ChildSlot::of(child);
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
        let mut cs = ld.children();
        cs.extend(rd.children());
        split_or_one(cache, cs, false, NodePtr::internal)
    };
    match merged {
        Grown::One(n) => {
            children[l] = ChildSlot::of(n);
            children.remove(r);
        }
        Grown::Split(a, b) => {
            children[l] = ChildSlot::of(a);
            children[r] = ChildSlot::of(b);
        }
    }
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

/// Child `i` of a `child` array, borrowed with the parent.
fn child_ref<T>(child: &[Option<NodePtr<T>>; B], i: usize) -> Option<&Node<T>> {
    // SAFETY: As in `NodeData::child`.
    child[i].map(|c| unsafe { c.get() })
}

/// Lowest fit among the gaps strictly inside the subtree.
pub(crate) fn lowest_fit<T>(node: &Node<T>, fit: &Fit) -> Option<u64> {
    let d = node.data();
    for i in 0..d.len {
        if i > 0 {
            // The gap before slot i (empty when the spans touch, which
            // `Fit::low` rejects).
            let gs = d.last[i - 1] + 1;
            if gs > fit.max {
                return None;
            }
            if let Some(s) = fit.low(gs, d.first[i] - 1) {
                return Some(s);
            }
        }
        if let Kind::Internal { gap, child } = &d.kind
            && fit.worth_descending(d.first[i], d.last[i], gap[i])
            && let Some(s) = lowest_fit(child_ref(child, i)?, fit)
        {
            return Some(s);
        }
    }
    None
}

/// Highest fit among the gaps strictly inside the subtree.
pub(crate) fn highest_fit<T>(node: &Node<T>, fit: &Fit) -> Option<u64> {
    let d = node.data();
    for i in (0..d.len).rev() {
        if let Kind::Internal { gap, child } = &d.kind
            && fit.worth_descending(d.first[i], d.last[i], gap[i])
            && let Some(s) = highest_fit(child_ref(child, i)?, fit)
        {
            return Some(s);
        }
        if i > 0 {
            let ge = d.first[i] - 1;
            if ge < fit.min {
                return None;
            }
            if let Some(s) = fit.high(d.last[i - 1] + 1, ge) {
                return Some(s);
            }
        }
    }
    None
}

/// The error for `fault` at the node `path` leads to.
fn fault(path: &[usize], fault: NodeFault) -> ValidateError {
    ValidateError::Node {
        path: path.to_vec(),
        fault,
    }
}

/// Checks every invariant of the subtree. Returns (entries, depth).
pub(crate) fn validate<T>(
    node: &Node<T>,
    is_root: bool,
    path: &mut Vec<usize>,
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
    let mut max_gap = 0;
    for slot in 0..len {
        let (first, last) = (d.first[slot], d.last[slot]);
        if first > last {
            return Err(fault(path, NodeFault::InvertedSlot { slot, first, last }));
        }
        if slot > 0 {
            if first <= d.last[slot - 1] {
                return Err(fault(path, NodeFault::Unordered { slot }));
            }
            max_gap = max_gap.max(gap_between(d.last[slot - 1], first));
        }
    }
    let (entries, depth) = match &d.kind {
        Kind::Leaf { values } => {
            if values[..len].iter().any(Option::is_none)
                || values[len..].iter().any(Option::is_some)
            {
                return Err(fault(path, NodeFault::ValueSlots { len }));
            }
            (len, 0)
        }
        Kind::Internal { gap, child } => {
            if child[len..].iter().any(Option::is_some) {
                return Err(fault(path, NodeFault::ChildBeyondLen));
            }
            let mut total = 0;
            let mut depth = None;
            for (slot, &slot_gap) in gap.iter().enumerate().take(len) {
                let c = child_ref(child, slot)
                    .ok_or_else(|| fault(path, NodeFault::MissingChild { slot }))?;
                let cd = c.data();
                let child_span = cd
                    .span()
                    .ok_or_else(|| fault(path, NodeFault::EmptyChild { slot }))?;
                let slot_span = (d.first[slot], d.last[slot]);
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
                if slot_gap != cd.max_gap {
                    return Err(fault(
                        path,
                        NodeFault::GapMismatch {
                            slot,
                            slot_gap,
                            child_gap: cd.max_gap,
                        },
                    ));
                }
                max_gap = max_gap.max(slot_gap);
                path.push(slot);
                let (n, dep) = validate(c, false, path)?;
                path.pop();
                if *depth.get_or_insert(dep) != dep {
                    return Err(fault(path, NodeFault::UnevenDepth));
                }
                total += n;
            }
            (total, depth.unwrap_or(0) + 1)
        }
    };
    if max_gap != d.max_gap {
        let stored = d.max_gap;
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
