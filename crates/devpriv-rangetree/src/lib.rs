//! devpriv-rangetree: a range allocator with lock-free lookups, standing in
//! for the maple tree.
//!
//! Kernel: `lib/maple_tree.c`, `include/linux/maple_tree.h`, with
//! `MT_FLAGS_ALLOC_RANGE` (main; the v6 proposal's
//! `device_private_pgmap_tree` is one).
//!
//! A [`RangeTree<T>`] maps non-overlapping inclusive ranges of `u64` keys to
//! values, as `struct maple_tree` maps `[index, last]` to entries. It can
//! hand out free ranges, lowest first ([`RangeTree::alloc_range`], as
//! `mtree_alloc_range()`) or highest first ([`RangeTree::alloc_rrange`]),
//! with an optional power-of-two alignment the kernel does not have.
//!
//! ```
//! use devpriv_rangetree::RangeTree;
//! let tree = RangeTree::new();
//! // Three allocations of 100 in an empty tree land at 0, 100, 200, as in
//! // the Rust maple-tree binding's example.
//! for want in [0, 100, 200] {
//!     assert_eq!(tree.alloc_range(100, 1, 0..=999, "pagemap")?, want);
//! }
//! let guard = tree.read(); // rcu_read_lock()
//! let (range, value) = guard.load(150).unwrap();
//! assert_eq!((range, *value), (100..=199, "pagemap"));
//! # Ok::<(), devpriv_core::Errno>(())
//! ```
//!
//! # Design
//!
//! - The tree is a B+tree of immutable nodes (16 slots). A write copies the
//!   nodes on one root-to-leaf path and publishes the new root with a
//!   `Release` store; every other subtree is shared with the old version.
//! - Each internal slot records the largest gap inside its child, so a gap
//!   search descends only into subtrees that can hold the request: O(log n)
//!   node visits, like the maple tree's `gap[]` in `maple_arange_64`.
//! - Readers enter a read-side section ([`RangeTree::read`], an SRCU domain
//!   from `devpriv_core::srcu`) and then look up without locks and without
//!   writing shared memory. Writers serialise on a mutex; each write
//!   retires exactly the nodes it replaced, which are recycled only after a
//!   grace period (no reference counts; see `node.rs`, "Ownership").
//!
//! # Differences from the kernel
//!
//! - The maple tree is not in RCU mode for `device_private_pgmap_tree`; this
//!   tree always is (readers never block writers and never see freed nodes).
//! - Gap search takes an alignment; `align = 1` is the kernel's behaviour.
//! - Values are owned `T: Clone`s, not `void *`; failed calls hand them
//!   back. They are stored in the leaves and cloned when a leaf is copied
//!   (`T: Clone`; store an `Arc` for large values, as the kernel stores a
//!   pointer). [`RangeTree::erase`] hands back the removed copy at once;
//!   copies that older versions hold are dropped after a grace period.
//! - Node allocation never fails, so `ENOMEM` is never returned.
//!
//! `unsafe` is denied except in `node.rs` (the nodes and their raw
//! pointers) and the six functions here that free, recycle or dereference
//! them, each marked with its reason.

#![deny(unsafe_code)]

use devpriv_core::Errno;
use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_core::srcu::{GpCookie, RetireList, Srcu, SrcuReadGuard};
use devpriv_core::sync::Mutex;
use devpriv_core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::fmt;
use std::marker::PhantomData;
use std::ops::RangeInclusive;

#[allow(
    unsafe_code,
    reason = "immutable nodes behind raw pointers, freed after a grace period"
)]
mod node;

use node::{ChildSlot, Entry, Fit, Grown, InPlace, Node, NodeCache, NodePtr, Removed, Scratch};

/// Replaced nodes gathered before one grace-period cookie covers them all:
/// a cookie costs a `SeqCst` fence and a poll a scan of the reader counters,
/// too much for every write. Under loom every write closes its batch, so
/// the models see each write's reclamation.
#[cfg(not(loom))]
const RETIRE_BATCH: usize = 32;
#[cfg(loom)]
const RETIRE_BATCH: usize = 1;

/// A failed allocation: the value comes back with the reason.
///
/// Kernel: the `-EBUSY` / `-EINVAL` return of `mtree_alloc_range()`;
/// `AllocError<T>` in `rust/kernel/maple_tree.rs` (main).
pub struct AllocError<T> {
    /// The value that was not stored.
    pub value: T,
    /// Why: `EBUSY` (no gap fits) or `EINVAL` (bad request).
    pub cause: Errno,
}

/// A failed insertion: the value comes back with the reason.
///
/// Kernel: the `-EEXIST` / `-EINVAL` return of `mtree_insert_range()`;
/// `InsertError<T>` in `rust/kernel/maple_tree.rs` (main).
pub struct InsertError<T> {
    /// The value that was not stored.
    pub value: T,
    /// Why: `EEXIST` (part of the range is occupied) or `EINVAL`.
    pub cause: Errno,
}

macro_rules! value_error {
    ($name:ident, $what:literal) => {
        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("cause", &self.cause)
                    .finish_non_exhaustive()
            }
        }
        impl<T> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($what, " failed: {}"), self.cause)
            }
        }
        impl<T> std::error::Error for $name<T> {}
        impl<T> From<$name<T>> for Errno {
            fn from(e: $name<T>) -> Errno {
                e.cause
            }
        }
    };
}
value_error!(AllocError, "range allocation");
value_error!(InsertError, "range insertion");

/// What [`RangeTree::validate`] found wrong.
///
/// Kernel: the checks `mt_validate()` makes before `MT_BUG_ON` (its
/// messages, typed, main).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValidateError {
    /// A node breaks a rule.
    Node {
        /// Where: the child index taken at each level from the root (empty
        /// for the root).
        path: Vec<usize>,
        /// Which rule.
        fault: NodeFault,
    },
    /// The entry count disagrees with the entries the root reaches.
    Len {
        /// What [`RangeTree::len`] says.
        len: usize,
        /// Entries reachable from the root.
        held: usize,
    },
}

/// A rule of the tree's shape that one node breaks.
///
/// Kernel: the `mt_validate()` checks (`mas_validate_limits()`,
/// `mas_validate_gaps()`, `mt_validate_nulls()`, `mas_validate_child_slot()`
/// in spirit, main).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeFault {
    /// More slots used than a node has.
    Overfull {
        /// Slots in use.
        len: usize,
    },
    /// A node other than the root below the minimum fill.
    Underfull {
        /// Slots in use.
        len: usize,
    },
    /// An internal root with fewer than two children.
    LoneRootChild {
        /// Slots in use.
        len: usize,
    },
    /// An unused slot whose `last` is not `u64::MAX`.
    StaleUnusedSlot {
        /// The slot.
        slot: usize,
        /// Its `last`.
        last: u64,
    },
    /// A slot whose first key lies above its last.
    InvertedSlot {
        /// The slot.
        slot: usize,
        /// Its first key.
        first: u64,
        /// Its last key.
        last: u64,
    },
    /// A slot that overlaps or precedes the one before it.
    Unordered {
        /// The later of the two slots.
        slot: usize,
    },
    /// Leaf value slots that do not match the slot count.
    ValueSlots {
        /// Slots in use.
        len: usize,
    },
    /// An internal node with a child beyond its slot count.
    ChildBeyondLen,
    /// An internal slot without a child.
    MissingChild {
        /// The slot.
        slot: usize,
    },
    /// An internal slot whose child is empty.
    EmptyChild {
        /// The slot.
        slot: usize,
    },
    /// An internal slot whose span is not its child's.
    SpanMismatch {
        /// The slot.
        slot: usize,
        /// The slot's `(first, last)`.
        slot_span: (u64, u64),
        /// The child's.
        child_span: (u64, u64),
    },
    /// An internal slot whose pivot does not separate its child's keys
    /// from the next child's (or a last pivot that is not `u64::MAX`).
    BadPivot {
        /// The slot.
        slot: usize,
        /// Its pivot.
        pivot: u64,
    },
    /// An internal slot whose recorded gap is not its child's `max_gap`.
    GapMismatch {
        /// The slot.
        slot: usize,
        /// The gap the slot records.
        slot_gap: u64,
        /// The child's `max_gap`.
        child_gap: u64,
    },
    /// Leaves at different depths below this node.
    UnevenDepth,
    /// A `max_gap` that is not the largest gap the node's slots give.
    MaxGap {
        /// The node's `max_gap`.
        stored: u64,
        /// The largest gap found.
        computed: u64,
    },
}

impl fmt::Display for ValidateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("range tree invariant broken: ")?;
        match self {
            ValidateError::Node { path, fault } => write!(f, "node at path {path:?}: {fault}"),
            ValidateError::Len { len, held } => {
                write!(f, "len says {len} but the tree holds {held}")
            }
        }
    }
}

impl fmt::Display for NodeFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use node::{B, MIN};
        match *self {
            NodeFault::Overfull { len } => write!(f, "{len} slots, more than {B}"),
            NodeFault::Underfull { len } => write!(f, "{len} slots, fewer than {MIN}"),
            NodeFault::LoneRootChild { len } => write!(f, "internal root with {len} child"),
            NodeFault::StaleUnusedSlot { slot, last } => {
                write!(f, "unused slot {slot} has last {last:#x}, not u64::MAX")
            }
            NodeFault::InvertedSlot { slot, first, last } => {
                write!(f, "slot {slot} is inverted [{first:#x}, {last:#x}]")
            }
            NodeFault::Unordered { slot } => write!(
                f,
                "slots {} and {slot} overlap or are out of order",
                slot.wrapping_sub(1)
            ),
            NodeFault::ValueSlots { len } => write!(f, "value slots do not match len {len}"),
            NodeFault::ChildBeyondLen => f.write_str("child beyond len"),
            NodeFault::MissingChild { slot } => write!(f, "missing child {slot}"),
            NodeFault::EmptyChild { slot } => write!(f, "child {slot} is empty"),
            NodeFault::SpanMismatch {
                slot,
                slot_span,
                child_span,
            } => write!(
                f,
                "slot {slot} span {slot_span:?} != child span {child_span:?}"
            ),
            NodeFault::BadPivot { slot, pivot } => {
                write!(f, "slot {slot} pivot {pivot:#x} does not route its keys")
            }
            NodeFault::GapMismatch {
                slot,
                slot_gap,
                child_gap,
            } => write!(f, "slot {slot} gap {slot_gap} != child max_gap {child_gap}"),
            NodeFault::UnevenDepth => f.write_str("leaves at different depths"),
            NodeFault::MaxGap { stored, computed } => {
                write!(f, "max_gap {stored} but gaps say {computed}")
            }
        }
    }
}

impl std::error::Error for ValidateError {}

/// Nodes one write replaced; freed together once their grace period ends.
struct Replaced<T>(Vec<NodePtr<T>>);

impl<T> Drop for Replaced<T> {
    #[allow(unsafe_code, reason = "frees nodes whose grace period is over")]
    fn drop(&mut self) {
        for n in self.0.drain(..) {
            // SAFETY: Each node here was replaced by a write, so no version
            // published after it reaches it, and `RetireList` drops this
            // batch only after a grace period: no reader still holds it.
            // Each node is replaced exactly once (node module docs).
            unsafe { n.free() };
        }
    }
}

struct Writer<T> {
    /// Batches of replaced nodes, each under the cookie taken when it
    /// closed.
    retired: RetireList<Replaced<T>>,
    /// Nodes unlinked since the last batch closed (no cookie yet).
    pending: Replaced<T>,
    cache: NodeCache<T>,
}

impl<T> Writer<T> {
    /// Recycles every batch of replaced nodes whose grace period is over.
    #[allow(unsafe_code, reason = "recycles nodes whose grace period is over")]
    fn reclaim(&mut self, srcu: &Srcu) {
        let Writer { retired, cache, .. } = self;
        retired.reclaim_with(srcu, |mut batch| {
            for n in batch.0.drain(..) {
                // SAFETY: As in `Replaced::drop`: replaced by a write, and
                // the grace period of its batch is over.
                unsafe { cache.recycle(n) };
            }
        });
    }

    /// Puts the pending nodes under one cookie, `early` or one taken now
    /// (after every one of them was unlinked), and reclaims what it can.
    fn close_batch(&mut self, srcu: &Srcu, early: Option<GpCookie>) {
        if self.pending.0.is_empty() {
            return;
        }
        let cookie = early.unwrap_or_else(|| srcu.get_state());
        let batch = std::mem::replace(&mut self.pending.0, Vec::with_capacity(2 * RETIRE_BATCH));
        self.retired.retire_at(cookie, Replaced(batch));
        self.reclaim(srcu);
    }
}

/// Non-overlapping inclusive ranges of `u64`, each with a value; a range
/// allocator; lock-free lookups.
///
/// Kernel: `struct maple_tree` initialised with `MT_FLAGS_ALLOC_RANGE`
/// (`MTREE_INIT(name, MT_FLAGS_ALLOC_RANGE)`), `lib/maple_tree.c` (main).
///
/// # Invariants
///
/// `root` always holds the current root node (a `NodePtr`); the current
/// version owns every node reachable from it, and every node a write
/// replaced waits in `writer.retired` until a grace period of `srcu` has
/// passed. `len` equals the number of entries reachable from `root`.
pub struct RangeTree<T> {
    root: AtomicPtr<Node<T>>,
    len: AtomicUsize,
    srcu: Srcu,
    writer: Mutex<Writer<T>>,
    // The tree owns nodes (and so `T`s) through `root`; inherit the auto
    // traits of `NodePtr<T>` (`Send + Sync` iff `T: Send + Sync`).
    _owns: PhantomData<NodePtr<T>>,
}

impl<T> fmt::Debug for RangeTree<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RangeTree")
            .field("len", &self.len.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<T: Clone + Send + Sync> Default for RangeTree<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Drop for RangeTree<T> {
    #[allow(unsafe_code, reason = "frees the current version, with no reader left")]
    fn drop(&mut self) {
        // SAFETY: `root` holds the current root (type invariant); `&mut self`
        // means no reader holds a guard, and the current version owns every
        // node reachable from it. Retired nodes are disjoint from those and
        // are freed when `writer` drops.
        let root = unsafe { NodePtr::from_ptr(self.root.load(Ordering::Relaxed)) };
        // SAFETY: As above.
        unsafe { root.free_tree() };
    }
}

impl<T: Clone + Send + Sync> RangeTree<T> {
    /// An empty tree.
    ///
    /// Kernel: `mt_init_flags(mt, MT_FLAGS_ALLOC_RANGE)` (main).
    pub fn new() -> Self {
        Self::with_mutants(Mutants::NONE)
    }

    /// An empty tree with deliberate bugs (in the tree and in its SRCU
    /// domain), for loom mutant tests; outside loom `mutants` is empty and
    /// this is [`RangeTree::new`].
    ///
    /// Kernel: none (model only).
    pub fn with_mutants(mutants: Mutants) -> Self {
        let mut cache = NodeCache::new();
        RangeTree {
            root: AtomicPtr::new(NodePtr::empty(&mut cache).as_ptr()),
            len: AtomicUsize::new(0),
            srcu: Srcu::with_mutants(mutants),
            writer: Mutex::new(Writer {
                retired: RetireList::new(),
                pending: Replaced(Vec::new()),
                cache,
            }),
            _owns: PhantomData,
        }
    }

    /// The bugs this tree was built with.
    fn mutants(&self) -> Mutants {
        self.srcu.mutants()
    }

    /// Number of stored ranges.
    ///
    /// Kernel: none (the maple tree does not count entries).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// `true` if no range is stored.
    ///
    /// Kernel: `mtree_empty()` (main).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Enters a read-side section for lock-free lookups.
    ///
    /// Kernel: `rcu_read_lock()` (which `mtree_load()` takes internally, main).
    ///
    /// # Differences from the kernel
    ///
    /// The section belongs to this tree's own grace-period domain, and it is
    /// explicit so that many lookups can share one.
    pub fn read(&self) -> ReadGuard<'_, T> {
        ReadGuard {
            tree: self,
            _srcu: self.srcu.read_lock(),
        }
    }

    /// Stores `value` at the lowest free range of `size` keys that starts on
    /// a multiple of `align` and lies inside `window`. Returns the start.
    ///
    /// Kernel: `mtree_alloc_range(mt, &start, entry, size, min, max, gfp)`,
    /// `lib/maple_tree.c` (lowest fit, `mas_empty_area()`, main).
    ///
    /// # Differences from the kernel
    ///
    /// `align` is an extension: the start is the lowest multiple of `align`
    /// that fits. `align = 1` is the kernel's behaviour.
    ///
    /// # Errors
    ///
    /// - `EINVAL`: `size` is 0; `align` is not a power of two; the window is
    ///   inverted; or the window cannot hold `size` aligned keys even when
    ///   empty (`max - min < size - 1` in the kernel).
    /// - `EBUSY`: no free range fits.
    ///
    /// The value comes back inside the error, and the tree is unchanged.
    pub fn alloc_range(
        &self,
        size: u64,
        align: u64,
        window: RangeInclusive<u64>,
        value: T,
    ) -> Result<u64, AllocError<T>> {
        self.alloc(size, align, window, value, false)
    }

    /// As [`alloc_range`](Self::alloc_range), but the highest free range.
    ///
    /// Kernel: `mtree_alloc_rrange()`, `lib/maple_tree.c` (`mas_empty_area_rev()`, main).
    ///
    /// # Differences from the kernel
    ///
    /// As for `alloc_range`: `align` is an extension; the start is rounded
    /// down to it.
    ///
    /// # Errors
    ///
    /// As for [`alloc_range`](Self::alloc_range).
    pub fn alloc_rrange(
        &self,
        size: u64,
        align: u64,
        window: RangeInclusive<u64>,
        value: T,
    ) -> Result<u64, AllocError<T>> {
        self.alloc(size, align, window, value, true)
    }

    /// The start [`alloc_range`](Self::alloc_range) would choose, without
    /// storing anything.
    ///
    /// Kernel: `mas_empty_area(mas, min, max, size)`, `lib/maple_tree.c` (main).
    ///
    /// # Differences from the kernel
    ///
    /// As for `alloc_range` (alignment). The answer holds only while no
    /// other writer runs: callers that insert the range afterwards
    /// serialise their writers (as `mas_empty_area` callers hold the lock).
    ///
    /// # Errors
    ///
    /// As for [`alloc_range`](Self::alloc_range).
    pub fn find_gap(
        &self,
        size: u64,
        align: u64,
        window: RangeInclusive<u64>,
    ) -> Result<u64, Errno> {
        let w = self.writer.lock();
        self.search(&w.cache, size, align, &window, false)
    }

    /// As [`find_gap`](Self::find_gap), but the highest fit.
    ///
    /// Kernel: `mas_empty_area_rev()`, `lib/maple_tree.c` (main).
    ///
    /// # Errors
    ///
    /// As for [`alloc_range`](Self::alloc_range).
    pub fn find_gap_rev(
        &self,
        size: u64,
        align: u64,
        window: RangeInclusive<u64>,
    ) -> Result<u64, Errno> {
        let w = self.writer.lock();
        self.search(&w.cache, size, align, &window, true)
    }

    /// Validates a request and searches for it. `lock`, the tree's node
    /// cache, proves the caller holds the writer lock.
    fn search(
        &self,
        lock: &NodeCache<T>,
        size: u64,
        align: u64,
        window: &RangeInclusive<u64>,
        rev: bool,
    ) -> Result<u64, Errno> {
        let (min, max) = (*window.start(), *window.end());
        let fit = Fit {
            size,
            align,
            min,
            max,
        };
        if size == 0 || !align.is_power_of_two() || min > max || max - min < size - 1 {
            return Err(Errno::EINVAL);
        }
        // The window must hold `size` aligned keys at all, or the request is
        // malformed rather than unlucky.
        if fit.low(min, max).is_none() {
            return Err(Errno::EINVAL);
        }
        let root = self.root_node();
        let start = if rev {
            Self::search_high(root, &fit, lock)
        } else {
            Self::search_low(root, &fit, lock)
        };
        start.ok_or(Errno::EBUSY)
    }

    fn alloc(
        &self,
        size: u64,
        align: u64,
        window: RangeInclusive<u64>,
        value: T,
        rev: bool,
    ) -> Result<u64, AllocError<T>> {
        if self.mutants().has(Mutant::RangeTreeAllocSearchUnlocked) {
            // The gap is chosen in one writer-lock section and stored in
            // another: a second writer can take it in between.
            let found = {
                let w = self.writer.lock();
                self.search(&w.cache, size, align, &window, rev)
            };
            let start = match found {
                Ok(s) => s,
                Err(cause) => return Err(AllocError { value, cause }),
            };
            // The store (`mas_insert()`) then finds the range taken.
            return match self.insert_range(start..=start + (size - 1), value) {
                Ok(()) => Ok(start),
                Err(e) => Err(AllocError {
                    value: e.value,
                    cause: e.cause,
                }),
            };
        }
        let mut w = self.writer.lock();
        let start = match self.search(&w.cache, size, align, &window, rev) {
            Ok(s) => s,
            Err(cause) => return Err(AllocError { value, cause }),
        };
        let e = Entry {
            first: start,
            last: start + (size - 1),
            value,
        };
        self.publish_insert(&mut w, e);
        Ok(start)
    }

    /// Stores `value` at exactly `range`.
    ///
    /// Kernel: `mtree_insert_range(mt, first, last, entry, gfp)`,
    /// `lib/maple_tree.c` (main).
    ///
    /// # Errors
    ///
    /// - `EINVAL`: the range is inverted (`first > last`).
    /// - `EEXIST`: part of the range is already occupied.
    ///
    /// The value comes back inside the error, and the tree is unchanged.
    pub fn insert_range(&self, range: RangeInclusive<u64>, value: T) -> Result<(), InsertError<T>> {
        let (first, last) = (*range.start(), *range.end());
        if first > last {
            return Err(InsertError {
                value,
                cause: Errno::EINVAL,
            });
        }
        let mut w = self.writer.lock();
        let root = self.root_node();
        if node::lower_bound(root, first).is_some_and(|(f, _, _)| f <= last) {
            return Err(InsertError {
                value,
                cause: Errno::EEXIST,
            });
        }
        self.publish_insert(&mut w, Entry { first, last, value });
        Ok(())
    }

    /// Removes the whole range that contains `index` and returns its value.
    /// `None` if `index` is in a gap.
    ///
    /// Kernel: `mtree_erase(mt, index)`, `lib/maple_tree.c` (main).
    ///
    /// # Differences from the kernel
    ///
    /// The kernel returns the stored pointer and leaves the grace period to
    /// the caller. Here the caller gets its own copy of the value at once;
    /// the copies that readers of older versions may still be looking at
    /// are dropped only after a grace period (on a later write, or in
    /// [`RangeTree::synchronize`]).
    #[allow(unsafe_code, reason = "reads the new root under the writer lock")]
    pub fn erase(&self, index: u64) -> Option<T> {
        let mut w = self.writer.lock();
        let root = self.root_ptr();
        let first = match node::remove_in_place(&mut w.cache, root, index, self.mutants()) {
            Removed::Absent => return None,
            Removed::Done(done, value) => {
                self.finish_in_place(&mut w, root, done);
                self.len.fetch_sub(1, Ordering::Relaxed);
                return Some(value);
            }
            Removed::CopyPath(first) => first,
        };
        let mut replaced = std::mem::take(&mut w.pending.0);
        let (mut new_root, value) = node::remove(&mut w.cache, root, first, &mut replaced);
        // Collapse an internal root left with a single child.
        loop {
            // SAFETY: `new_root` was just built (or is a node of the current
            // version) and we hold the writer lock.
            let d = unsafe { new_root.get() }.data();
            if d.is_leaf() || d.len != 1 {
                break;
            }
            replaced.push(new_root);
            new_root = d.child_ptr(0);
        }
        w.pending.0 = replaced;
        self.publish(&mut w, new_root);
        self.len.fetch_sub(1, Ordering::Relaxed);
        Some(value)
    }

    /// Waits for a grace period, then frees every replaced version of the
    /// tree (and the value copies only they held).
    ///
    /// Kernel: `rcu_barrier()` (or `synchronize_rcu()` before freeing what
    /// `mtree_erase()` returned, main).
    ///
    /// # Panics
    ///
    /// In debug builds, if the calling thread holds a [`ReadGuard`] of this
    /// tree: that would deadlock, as `synchronize_rcu()` inside
    /// `rcu_read_lock()` does. Release builds deadlock.
    pub fn synchronize(&self) {
        // Nodes unlinked before this call get their cookie now, before the
        // grace period that must cover them starts.
        self.writer.lock().close_batch(&self.srcu, None);
        self.srcu.synchronize();
        self.writer.lock().reclaim(&self.srcu);
    }

    /// The SRCU domain whose grace periods protect this tree's nodes and
    /// values. A caller that publishes objects of its own next to the tree
    /// (found by readers under the same [`ReadGuard`]) retires them against
    /// it.
    ///
    /// Kernel: none (model only; the kernel's maple tree uses plain RCU).
    pub fn srcu(&self) -> &Srcu {
        &self.srcu
    }

    /// Checks every structural invariant: ordering, non-overlap, node fill,
    /// equal leaf depth, the pivots and gap bookkeeping of every internal
    /// slot, and the entry count.
    ///
    /// Kernel: `mt_validate()`, `lib/maple_tree.c` (main).
    ///
    /// # Errors
    ///
    /// A [`ValidateError`] that names the node and the broken rule.
    pub fn validate(&self) -> Result<(), ValidateError> {
        let w = self.writer.lock();
        let (held, _) = node::validate(self.root_node(), true, &mut Vec::new(), &w.cache)?;
        if held != self.len() {
            return Err(ValidateError::Len {
                len: self.len(),
                held,
            });
        }
        Ok(())
    }

    /// Batches of replaced nodes still waiting for a grace period, the
    /// batch not yet closed included (for tests and reports).
    ///
    /// Kernel: none (model only).
    pub fn retired(&self) -> usize {
        let w = self.writer.lock();
        w.retired.len() + usize::from(!w.pending.0.is_empty())
    }

    /// The current root. Callers hold the writer lock or a read guard.
    #[allow(unsafe_code, reason = "rebuilds the root pointer (type invariant)")]
    fn root_ptr(&self) -> NodePtr<T> {
        // SAFETY: `root` always holds a live root (type invariant).
        unsafe { NodePtr::from_ptr(self.root.load(Ordering::Acquire)) }
    }

    /// The current root node. Callers hold the writer lock or a read guard.
    #[allow(unsafe_code, reason = "dereferences the live root")]
    fn root_node(&self) -> &Node<T> {
        // SAFETY: A replaced root is freed only after a grace period, and
        // every caller holds either the writer lock (no replacement can
        // happen) or a read guard (the grace period cannot end), for at
        // least the lifetime it gives the reference.
        unsafe { self.root_ptr().get() }
    }

    fn search_low(root: &Node<T>, fit: &Fit, lock: &NodeCache<T>) -> Option<u64> {
        let Some((first, last)) = root.data().span(lock) else {
            return fit.low(0, u64::MAX);
        };
        let before = (first > 0).then(|| fit.low(0, first - 1)).flatten();
        before
            .or_else(|| node::lowest_fit(root, fit, lock))
            .or_else(|| {
                (last < u64::MAX)
                    .then(|| fit.low(last + 1, u64::MAX))
                    .flatten()
            })
    }

    fn search_high(root: &Node<T>, fit: &Fit, lock: &NodeCache<T>) -> Option<u64> {
        let Some((first, last)) = root.data().span(lock) else {
            return fit.high(0, u64::MAX);
        };
        let after = (last < u64::MAX)
            .then(|| fit.high(last + 1, u64::MAX))
            .flatten();
        after
            .or_else(|| node::highest_fit(root, fit, lock))
            .or_else(|| (first > 0).then(|| fit.high(0, first - 1)).flatten())
    }

    fn publish_insert(&self, w: &mut Writer<T>, e: Entry<T>) {
        let root = self.root_ptr();
        let e = match node::insert_in_place(&mut w.cache, root, e, self.mutants()) {
            Ok(done) => {
                self.finish_in_place(w, root, done);
                self.len.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(e) => e,
        };
        let mut replaced = std::mem::take(&mut w.pending.0);
        let new_root = match node::insert(&mut w.cache, root, e, &mut replaced) {
            Grown::One(n) => n,
            Grown::Split(a, b) => {
                let mut both = Scratch::new();
                both.extend([ChildSlot::of(a, &w.cache), ChildSlot::of(b, &w.cache)]);
                NodePtr::internal(&mut w.cache, both)
            }
        };
        w.pending.0 = replaced;
        self.publish(w, new_root);
        self.len.fetch_add(1, Ordering::Relaxed);
    }

    /// Retires the leaf an in-place write replaced, or publishes the new
    /// root leaf. Caller holds the writer lock.
    fn finish_in_place(&self, w: &mut Writer<T>, root: NodePtr<T>, done: InPlace<T>) {
        match done {
            InPlace::Child(old) => {
                w.pending.0.push(old);
                self.retire_pending(w, None);
            }
            InPlace::Root(new_root) => {
                w.pending.0.push(root);
                self.publish(w, new_root);
            }
        }
    }

    /// Swaps in `new_root`; the nodes the write replaced (the old root
    /// among them) are already in `w.pending`. Caller holds the writer
    /// lock.
    fn publish(&self, w: &mut Writer<T>, new_root: NodePtr<T>) {
        let order = if self.mutants().has(Mutant::RangeTreeRelaxedPublish) {
            Ordering::Relaxed
        } else {
            Ordering::Release
        };
        let early = self
            .mutants()
            .has(Mutant::RangeTreeCookieBeforePublish)
            .then(|| self.srcu.get_state());
        // Release: the new nodes are complete before a reader can reach them.
        let old = self.root.swap(new_root.as_ptr(), order);
        debug_assert!(
            w.pending.0.iter().any(|n| n.as_ptr() == old),
            "the old root is replaced"
        );
        self.retire_pending(w, early);
    }

    /// Closes the batch of unlinked nodes once it is large enough. The
    /// cookie is taken after the last unlink (the root swap or the child
    /// store): only flips that scan after the nodes are unreachable may
    /// count for their grace period.
    fn retire_pending(&self, w: &mut Writer<T>, early: Option<GpCookie>) {
        if w.pending.0.len() >= RETIRE_BATCH {
            w.close_batch(&self.srcu, early);
        }
    }
}

/// A read-side section of a [`RangeTree`]: lookups through it take no lock
/// and write no shared memory.
///
/// Kernel: the `rcu_read_lock()` section around `mtree_load()` (main).
#[must_use = "the read-side section ends when the guard is dropped"]
pub struct ReadGuard<'t, T> {
    tree: &'t RangeTree<T>,
    _srcu: SrcuReadGuard<'t>,
}

impl<T> fmt::Debug for ReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadGuard").finish_non_exhaustive()
    }
}

impl<'t, T: Clone + Send + Sync> ReadGuard<'t, T> {
    fn root(&self) -> &Node<T> {
        self.tree.root_node()
    }

    /// The range that contains `index` and its value, or `None` in a gap.
    ///
    /// Kernel: `mtree_load(mt, index)`, `lib/maple_tree.c` (main).
    ///
    /// # Differences from the kernel
    ///
    /// Also returns the range (the maple tree's `mas_walk()` gives it in
    /// `mas.index`/`mas.last`).
    #[inline]
    pub fn load(&self, index: u64) -> Option<(RangeInclusive<u64>, &T)> {
        node::load(self.root(), index).map(|(first, last, v)| (first..=last, v))
    }

    /// The first range that ends at or after `index`, which may start after
    /// it.
    ///
    /// Kernel: `mt_find(mt, &index, ULONG_MAX)` (main).
    pub fn find_from(&self, index: u64) -> Option<(RangeInclusive<u64>, &T)> {
        node::lower_bound(self.root(), index).map(|(first, last, v)| (first..=last, v))
    }

    /// Every stored range, in order.
    ///
    /// Kernel: `mt_for_each(mt, entry, index, ULONG_MAX)` (main).
    pub fn iter(&self) -> Iter<'_, T> {
        Iter {
            stack: vec![(self.root(), 0)],
        }
    }
}

/// In-order iterator over a tree version, from [`ReadGuard::iter`].
///
/// Kernel: `mt_for_each()` / `mas_find()` (main).
pub struct Iter<'g, T> {
    stack: Vec<(&'g Node<T>, usize)>,
}

impl<T> fmt::Debug for Iter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter")
            .field("depth", &self.stack.len())
            .finish()
    }
}

impl<'g, T: Clone> Iterator for Iter<'g, T> {
    type Item = (RangeInclusive<u64>, &'g T);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (node, i) = self.stack.last_mut()?;
            let node: &'g Node<T> = node;
            let d = node.data();
            if *i >= d.len {
                self.stack.pop();
                continue;
            }
            let slot = *i;
            *i += 1;
            if d.is_leaf() {
                return Some((d.entry_first(slot)..=d.last[slot], d.value(slot)));
            }
            let child: &'g Node<T> = d.child(slot);
            self.stack.push((child, 0));
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
