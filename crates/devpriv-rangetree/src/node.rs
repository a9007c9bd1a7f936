//! Immutable B+tree nodes with per-child gap bookkeeping.
//!
//! Kernel: `struct maple_arange_64` (allocation-tree node with a `gap[]`
//! per slot) and `struct maple_range_64` (leaf), `lib/maple_tree.c`.
//!
//! Nodes are never modified once built. A write builds new nodes along one
//! root-to-leaf path (path copying) and shares every other subtree with the
//! previous version, so readers can walk any version they loaded without a
//! lock. Each slot records the first and last index its entry or subtree
//! covers; internal slots also record the largest gap *inside* the child,
//! so a gap search skips every subtree whose gaps are all too small — the
//! maple tree's `mas_empty_area()` walk.
//!
//! # Invariants
//!
//! - Entries are non-overlapping, sorted, and `first <= last`.
//! - Every leaf is at the same depth; a non-root node holds `MIN..=B`
//!   slots; an internal root holds at least 2.
//! - Slot `i` of an internal node has `first[i]`/`last[i]` equal to the span
//!   of child `i` and `gap[i]` equal to the child's `max_gap`.
//! - Unused `last` slots hold `u64::MAX`, so a lookup can count
//!   `last[j] < index` over the whole array without looking at `len`.

use devpriv_core::sync::UnsafeCell;
use std::sync::Arc;

/// Slots per node (the maple tree uses 10 in allocation nodes, 16 in leaves).
pub(crate) const B: usize = 16;
/// Fewest slots in a non-root node.
pub(crate) const MIN: usize = B / 2;

/// One stored range and its value.
pub(crate) struct Entry<T> {
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) value: Arc<T>,
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Entry {
            first: self.first,
            last: self.last,
            value: Arc::clone(&self.value),
        }
    }
}

pub(crate) enum Kind<T> {
    Leaf {
        values: [Option<Arc<T>>; B],
    },
    Internal {
        gap: [u64; B],
        child: [Option<Arc<Node<T>>>; B],
    },
}

pub(crate) struct NodeData<T> {
    pub(crate) len: usize,
    pub(crate) first: [u64; B],
    pub(crate) last: [u64; B],
    /// Largest gap strictly inside this subtree (between two of its entries).
    pub(crate) max_gap: u64,
    pub(crate) kind: Kind<T>,
}

/// A node. The contents sit in the sync shim's `UnsafeCell` only so that
/// loom can check that every read is ordered after the node was built.
pub(crate) struct Node<T> {
    cell: UnsafeCell<NodeData<T>>,
}

// SAFETY: A node is never mutated after `Node::new` (no `with_mut` exists on
// any path), so sharing `&Node<T>` shares only `&NodeData<T>`, which holds
// `u64`s and `Arc<T>`/`Arc<Node<T>>`; those are `Sync` when `T: Send + Sync`.
unsafe impl<T: Send + Sync> Sync for Node<T> {}

// Under loom, freeing a node counts as a write to it, so a reader that is
// not ordered before the free is reported at once as a causality violation
// instead of going on to read freed memory.
#[cfg(loom)]
impl<T> Drop for Node<T> {
    fn drop(&mut self) {
        // While unwinding from a reported failure, a second report would
        // abort the process.
        if !std::thread::panicking() {
            self.cell.with_mut(|_| ());
        }
    }
}

/// Length of the gap between two neighbouring spans (0 if they touch).
#[inline]
fn gap_between(prev_last: u64, next_first: u64) -> u64 {
    next_first - prev_last - 1
}

impl<T> Node<T> {
    fn new(data: NodeData<T>) -> Arc<Self> {
        Arc::new(Node {
            cell: UnsafeCell::new(data),
        })
    }

    #[inline]
    pub(crate) fn data(&self) -> &NodeData<T> {
        // SAFETY: The contents are written once, by `Node::new`, and never
        // through a mutable access afterwards; a reader reaches a node only
        // through an Acquire load of the root that published it (or from a
        // parent published the same way), and nodes are freed only after a
        // grace period. So this shared reference never aliases a write.
        self.cell.with(|p| unsafe { &*p })
    }

    /// A leaf holding `entries` (sorted, non-overlapping, at most `B`).
    pub(crate) fn leaf(entries: &[Entry<T>]) -> Arc<Self> {
        debug_assert!(entries.len() <= B);
        let mut first = [u64::MAX; B];
        let mut last = [u64::MAX; B];
        let mut values: [Option<Arc<T>>; B] = Default::default();
        let mut max_gap = 0;
        for (i, e) in entries.iter().enumerate() {
            first[i] = e.first;
            last[i] = e.last;
            values[i] = Some(Arc::clone(&e.value));
            if i > 0 {
                max_gap = max_gap.max(gap_between(last[i - 1], e.first));
            }
        }
        Node::new(NodeData {
            len: entries.len(),
            first,
            last,
            max_gap,
            kind: Kind::Leaf { values },
        })
    }

    /// An internal node over `children` (same height, sorted, at most `B`).
    pub(crate) fn internal(children: &[Arc<Node<T>>]) -> Arc<Self> {
        debug_assert!(!children.is_empty() && children.len() <= B);
        let mut first = [u64::MAX; B];
        let mut last = [u64::MAX; B];
        let mut gap = [0; B];
        let mut child: [Option<Arc<Node<T>>>; B] = Default::default();
        let mut max_gap = 0;
        for (i, c) in children.iter().enumerate() {
            let d = c.data();
            first[i] = d.first[0];
            last[i] = d.last[d.len - 1];
            gap[i] = d.max_gap;
            max_gap = max_gap.max(d.max_gap);
            if i > 0 {
                max_gap = max_gap.max(gap_between(last[i - 1], first[i]));
            }
            child[i] = Some(Arc::clone(c));
        }
        Node::new(NodeData {
            len: children.len(),
            first,
            last,
            max_gap,
            kind: Kind::Internal { gap, child },
        })
    }

    pub(crate) fn empty() -> Arc<Self> {
        Node::leaf(&[])
    }
}

impl<T> NodeData<T> {
    /// Index of the first slot whose span ends at or after `index`
    /// (`len` if none). Unused slots hold `u64::MAX`, so counting over the
    /// fixed-size array is exact and compiles to straight-line code.
    #[inline]
    pub(crate) fn slot_for(&self, index: u64) -> usize {
        self.last.iter().filter(|&&l| l < index).count()
    }

    pub(crate) fn is_leaf(&self) -> bool {
        matches!(self.kind, Kind::Leaf { .. })
    }

    pub(crate) fn child(&self, i: usize) -> &Arc<Node<T>> {
        match &self.kind {
            Kind::Internal { child, .. } => {
                child[i].as_ref().expect("slot below len holds a child")
            }
            Kind::Leaf { .. } => unreachable!("child() on a leaf"),
        }
    }

    pub(crate) fn value(&self, i: usize) -> &Arc<T> {
        match &self.kind {
            Kind::Leaf { values } => values[i].as_ref().expect("slot below len holds a value"),
            Kind::Internal { .. } => unreachable!("value() on an internal node"),
        }
    }

    pub(crate) fn entries(&self) -> Vec<Entry<T>> {
        (0..self.len)
            .map(|i| Entry {
                first: self.first[i],
                last: self.last[i],
                value: Arc::clone(self.value(i)),
            })
            .collect()
    }

    pub(crate) fn children(&self) -> Vec<Arc<Node<T>>> {
        (0..self.len).map(|i| Arc::clone(self.child(i))).collect()
    }

    /// First index covered by the subtree (`None` when empty).
    pub(crate) fn span(&self) -> Option<(u64, u64)> {
        (self.len > 0).then(|| (self.first[0], self.last[self.len - 1]))
    }
}

/// The entry with the lowest `last >= index`, as (first, last, value).
///
/// Kernel: the descent of `mas_walk()` / `mtree_load()`.
#[inline]
pub(crate) fn lower_bound<T>(mut node: &Node<T>, index: u64) -> Option<(u64, u64, &Arc<T>)> {
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
            Kind::Internal { child, .. } => {
                node = child[i].as_ref()?;
            }
        }
    }
}

/// Result of inserting into a subtree: one node, or two after a split.
pub(crate) enum Grown<T> {
    One(Arc<Node<T>>),
    Split(Arc<Node<T>>, Arc<Node<T>>),
}

fn split_or_one<X, T>(items: &[X], build: impl Fn(&[X]) -> Arc<Node<T>>) -> Grown<T> {
    if items.len() <= B {
        Grown::One(build(items))
    } else {
        let mid = items.len() / 2;
        Grown::Split(build(&items[..mid]), build(&items[mid..]))
    }
}

/// Inserts `e`, which overlaps no entry of the subtree, copying the path.
pub(crate) fn insert<T>(node: &Node<T>, e: Entry<T>) -> Grown<T> {
    let d = node.data();
    if d.is_leaf() {
        let mut entries = d.entries();
        let pos = entries.partition_point(|x| x.first < e.first);
        entries.insert(pos, e);
        return split_or_one(&entries, Node::leaf);
    }
    // The child whose span ends at or after the new entry; the last child
    // when the entry lies beyond every span.
    let ci = d.slot_for(e.first).min(d.len - 1);
    let mut children = d.children();
    match insert(d.child(ci), e) {
        Grown::One(c) => children[ci] = c,
        Grown::Split(a, b) => {
            children[ci] = a;
            children.insert(ci + 1, b);
        }
    }
    split_or_one(&children, Node::internal)
}

/// Removes the entry that starts at `first` (it must exist), copying the
/// path. Returns the new subtree (possibly under-full) and the value.
pub(crate) fn remove<T>(node: &Node<T>, first: u64) -> (Arc<Node<T>>, Arc<T>) {
    let d = node.data();
    let ci = d.slot_for(first);
    debug_assert!(ci < d.len, "remove() of an absent entry");
    if d.is_leaf() {
        let mut entries = d.entries();
        let e = entries.remove(ci);
        debug_assert_eq!(e.first, first);
        return (Node::leaf(&entries), e.value);
    }
    let (child, value) = remove(d.child(ci), first);
    let mut children = d.children();
    children[ci] = child;
    if children[ci].data().len < MIN {
        rebalance(&mut children, ci);
    }
    (Node::internal(&children), value)
}

/// Merges the under-full child `ci` with a neighbour, or shares the
/// neighbour's slots with it, so that both end up with at least `MIN`.
fn rebalance<T>(children: &mut Vec<Arc<Node<T>>>, ci: usize) {
    if children.len() < 2 {
        return; // Only the root may be this small; the caller collapses it.
    }
    let (l, r) = if ci > 0 { (ci - 1, ci) } else { (ci, ci + 1) };
    let (ld, rd) = (children[l].data(), children[r].data());
    let merged = if ld.is_leaf() {
        let mut es = ld.entries();
        es.extend(rd.entries());
        split_or_one(&es, Node::leaf)
    } else {
        let mut cs = ld.children();
        cs.extend(rd.children());
        split_or_one(&cs, Node::internal)
    };
    match merged {
        Grown::One(n) => {
            children[l] = n;
            children.remove(r);
        }
        Grown::Split(a, b) => {
            children[l] = a;
            children[r] = b;
        }
    }
}

/// What a gap search is looking for.
///
/// Kernel: the arguments of `mas_empty_area()` / `mas_empty_area_rev()`,
/// plus a power-of-two alignment.
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
            && let Some(s) = lowest_fit(child[i].as_ref()?, fit)
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
            && let Some(s) = highest_fit(child[i].as_ref()?, fit)
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

/// Checks every invariant of the subtree. Returns (entries, depth).
pub(crate) fn validate<T>(
    node: &Node<T>,
    is_root: bool,
    path: &mut Vec<usize>,
) -> Result<(usize, usize), String> {
    let d = node.data();
    let here = format!("node at path {path:?}");
    if d.len > B {
        return Err(format!("{}: {} slots, more than {B}", here, d.len));
    }
    if !is_root && d.len < MIN {
        return Err(format!("{}: {} slots, fewer than {MIN}", here, d.len));
    }
    if is_root && !d.is_leaf() && d.len < 2 {
        return Err(format!("{}: internal root with {} child", here, d.len));
    }
    for i in d.len..B {
        if d.last[i] != u64::MAX {
            return Err(format!(
                "{}: unused slot {i} has last {:#x}, not u64::MAX",
                here, d.last[i]
            ));
        }
    }
    let mut max_gap = 0;
    for i in 0..d.len {
        if d.first[i] > d.last[i] {
            return Err(format!(
                "{}: slot {i} is inverted [{:#x}, {:#x}]",
                here, d.first[i], d.last[i]
            ));
        }
        if i > 0 {
            if d.first[i] <= d.last[i - 1] {
                return Err(format!(
                    "{}: slots {} and {i} overlap or are out of order",
                    here,
                    i - 1
                ));
            }
            max_gap = max_gap.max(gap_between(d.last[i - 1], d.first[i]));
        }
    }
    let (entries, depth) = match &d.kind {
        Kind::Leaf { values } => {
            if values[..d.len].iter().any(Option::is_none)
                || values[d.len..].iter().any(Option::is_some)
            {
                return Err(format!("{}: value slots do not match len {}", here, d.len));
            }
            (d.len, 0)
        }
        Kind::Internal { gap, child } => {
            if child[d.len..].iter().any(Option::is_some) {
                return Err(format!("{}: child beyond len", here));
            }
            let mut total = 0;
            let mut depth = None;
            for i in 0..d.len {
                let c = child[i]
                    .as_ref()
                    .ok_or_else(|| format!("{}: missing child {i}", here))?;
                let cd = c.data();
                let span = cd
                    .span()
                    .ok_or_else(|| format!("{}: child {i} is empty", here))?;
                if span != (d.first[i], d.last[i]) {
                    return Err(format!(
                        "{}: slot {i} span {:?} != child span {span:?}",
                        here,
                        (d.first[i], d.last[i])
                    ));
                }
                if gap[i] != cd.max_gap {
                    return Err(format!(
                        "{}: slot {i} gap {} != child max_gap {}",
                        here, gap[i], cd.max_gap
                    ));
                }
                max_gap = max_gap.max(gap[i]);
                path.push(i);
                let (n, dep) = validate(c, false, path)?;
                path.pop();
                if *depth.get_or_insert(dep) != dep {
                    return Err(format!("{}: leaves at different depths", here));
                }
                total += n;
            }
            (total, depth.unwrap_or(0) + 1)
        }
    };
    if max_gap != d.max_gap {
        return Err(format!(
            "{}: max_gap {} but gaps say {max_gap}",
            here, d.max_gap
        ));
    }
    Ok((entries, depth))
}
