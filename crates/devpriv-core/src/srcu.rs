//! Read-side sections and grace periods: the `rcu_read_lock()` analogue.
//!
//! Kernel: `include/linux/srcu.h`, `kernel/rcu/srcutree.c` (the per-domain
//! flavour), and the RCU API that `mtree_load()` relies on (main).
//!
//! A [`Srcu`] is one domain. Readers enter a section with
//! [`Srcu::read_lock`]; the section costs one increment of a counter that
//! lives on a cache line picked per thread (a shard), plus one `SeqCst`
//! fence, and can be held across any number of lookups. Inside the section
//! readers write nothing shared. Writers unpublish an object, take a
//! [`GpCookie`] with [`Srcu::get_state`], and free the object only once
//! [`Srcu::poll`] says the grace period has passed, or block in
//! [`Srcu::synchronize`].
//!
//! # The protocol
//!
//! The domain keeps a grace-period sequence word `seq`, in the kernel's
//! `rcu_seq` shape: the number of completed flips in the upper bits and a
//! "flip in progress" state bit at the bottom. Per shard there are two
//! reader counters, one for each parity of the flip count. A reader loads
//! `seq`, increments `counter[flips & 1]`, then issues a `SeqCst` fence
//! before it reads any shared pointer. A flip from `f` to `f + 1` first
//! sets the state bit, issues a `SeqCst` fence, and then succeeds only if
//! every counter of parity `(f + 1) & 1` is zero (those readers entered at
//! `f - 1` or earlier and have left). The bit is cleared when the flip
//! completes; a refused attempt leaves it set for the next one.
//!
//! A writer unpublishes an object, issues a `SeqCst` fence, and reads
//! `seq` ([`Srcu::get_state`]). The flips that count for its cookie are the
//! ones whose counter scan comes after that fence:
//!
//! - If the writer sees no flip in progress, any flip it did not see
//!   complete set its state bit after the writer's fence (the two fences
//!   are a store-buffering pair), so that flip's scan is ordered after the
//!   unpublish. The cookie asks for two more flips: `f + 2`.
//! - If it sees the state bit, that flip may have scanned the counters
//!   before the unpublish, so it cannot count. The cookie asks for two
//!   flips after it: `f + 3`. This is `rcu_seq_snap()`'s rounding up past a
//!   grace period in progress.
//!
//! After two counted flips both parities have drained since the unpublish,
//! and the fence pair (reader: increment, fence, load pointer; flipper:
//! fence, load counters) means a reader whose increment a counted flip
//! missed must see the unpublish. This is the SRCU "flip and wait for the
//! old index to drain" scheme, done twice.
//!
//! Why a state bit and not the flip mutex in [`Srcu::get_state`]: reading
//! `seq` under the mutex also closes the race, but makes every writer's
//! cookie wait behind a flipper's counter scan, and it is not what the
//! kernel does. The state bit keeps `get_state` lock-free, at the cost of
//! one extra flip for a writer that races a flip.

//! # Differences from the kernel
//!
//! - There is no grace-period kthread: [`Srcu::poll`] and
//!   [`Srcu::synchronize`] drive the flips themselves.
//! - Shards are per thread, not per CPU.
//! - Calling [`Srcu::synchronize`] while the same thread holds a read guard
//!   of the same domain deadlocks, exactly as `synchronize_srcu()` inside
//!   `srcu_read_lock()` does in the kernel.

use crate::mutant::{Mutant, Mutants};
use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
use crate::sync::{Mutex, SHARDS, spin_loop, yield_now};
use crossbeam_utils::CachePadded;
use std::collections::VecDeque;
use std::fmt;

/// The state bit of `seq`: a flip has started its counter scan and not yet
/// finished. Kernel: `RCU_SEQ_STATE_MASK`, `kernel/rcu/rcu.h` (main).
const FLIP_IN_PROGRESS: u64 = 1;

/// Completed flips in a `seq` word. Kernel: `rcu_seq_ctr()` (main).
const fn flips(seq: u64) -> u64 {
    seq >> 1
}

/// The `seq` word of `flips` completed flips, none in progress.
const fn flips_to_seq(flips: u64) -> u64 {
    flips << 1
}

// Debug builds remember which domains this thread is reading, so that
// `synchronize` inside a section panics instead of hanging. (Not under
// loom, whose threads share one OS thread's thread-locals.)
#[cfg(all(debug_assertions, not(loom)))]
thread_local! {
    static HELD: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A grace-period cookie: the value `seq` must reach before objects
/// unpublished before it was taken may be freed.
///
/// Kernel: the `unsigned long` returned by `get_state_synchronize_srcu()` (main).
///
/// # Differences from the kernel
///
/// It counts completed flips (half grace periods), not `rcu_seq` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GpCookie(u64);

/// One read-side domain.
///
/// Kernel: `struct srcu_struct`, `include/linux/srcutree.h` (main).
pub struct Srcu {
    // Completed flips << 1 | FLIP_IN_PROGRESS (the `rcu_seq` shape).
    seq: AtomicU64,
    readers: Box<[CachePadded<[AtomicUsize; 2]>]>,
    // Serialises flips; readers never take it.
    flip: Mutex<()>,
    mutants: Mutants,
}

impl fmt::Debug for Srcu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Srcu")
            .field("seq", &self.seq.load(Ordering::Relaxed))
            .field("readers", &self.active_readers())
            .finish()
    }
}

impl Default for Srcu {
    fn default() -> Self {
        Self::new()
    }
}

impl Srcu {
    /// A new domain with no readers.
    ///
    /// Kernel: `init_srcu_struct()` (main).
    pub fn new() -> Self {
        Self::with_mutants(Mutants::NONE)
    }

    /// A domain with deliberate bugs, for loom mutant tests (outside loom
    /// `mutants` is empty and this is [`Srcu::new`]).
    ///
    /// Kernel: none (model only).
    pub fn with_mutants(mutants: Mutants) -> Self {
        Srcu {
            seq: AtomicU64::new(0),
            readers: (0..SHARDS)
                .map(|_| CachePadded::new([AtomicUsize::new(0), AtomicUsize::new(0)]))
                .collect(),
            flip: Mutex::new(()),
            mutants,
        }
    }

    /// The bugs this domain was built with.
    ///
    /// Kernel: none (model only).
    pub fn mutants(&self) -> Mutants {
        self.mutants
    }

    /// Enters a read-side section. Everything reachable from a pointer
    /// loaded inside the section stays allocated until the guard drops.
    ///
    /// Kernel: `srcu_read_lock()` (and `rcu_read_lock()` in spirit, main).
    #[inline]
    pub fn read_lock(&self) -> SrcuReadGuard<'_> {
        let shard = crate::sync::thread_shard() % SHARDS;
        let parity = usize::from(flips(self.seq.load(Ordering::Acquire)) & 1 == 1);
        self.readers[shard][parity].fetch_add(1, Ordering::Relaxed);
        // Pairs with the fence in `try_flip`: either the flipper sees this
        // increment, or this reader sees everything unpublished before it.
        if !self.mutants.has(Mutant::SrcuNoReaderFence) {
            fence(Ordering::SeqCst);
        }
        #[cfg(all(debug_assertions, not(loom)))]
        HELD.with(|h| h.borrow_mut().push(self.addr()));
        SrcuReadGuard {
            srcu: self,
            shard,
            parity,
        }
    }

    /// The cookie for objects unpublished before this call.
    ///
    /// Kernel: `get_state_synchronize_srcu()`, which is `rcu_seq_snap()`:
    /// a grace period already in progress does not count (main).
    pub fn get_state(&self) -> GpCookie {
        // Pairs with the fence in `try_flip`: either this load sees the
        // flip's state bit, or that flip's counter scan sees everything
        // this thread unpublished before the call.
        if !self.mutants.has(Mutant::SrcuNoGetStateFence) {
            fence(Ordering::SeqCst);
        }
        let seq = self.seq.load(Ordering::Acquire);
        if self.mutants.has(Mutant::SrcuStaleGpSnapshot) {
            return GpCookie(flips(seq) + 2);
        }
        GpCookie(flips(seq) + 2 + (seq & FLIP_IN_PROGRESS))
    }

    /// Drives the grace period as far as it can without waiting, and
    /// reports whether `cookie` has passed.
    ///
    /// Kernel: `poll_state_synchronize_srcu()` (main).
    ///
    /// # Differences from the kernel
    ///
    /// The kernel's poll only looks; this one also flips the domain when the
    /// old readers have drained, since there is no kthread to do it.
    pub fn poll(&self, cookie: GpCookie) -> bool {
        if self.mutants.has(Mutant::SrcuNoGracePeriod) {
            return true;
        }
        loop {
            if flips(self.seq.load(Ordering::Acquire)) >= cookie.0 {
                return true;
            }
            if !self.try_flip() {
                return false;
            }
        }
    }

    /// Waits until every reader that could see an object unpublished before
    /// this call has left its section.
    ///
    /// Kernel: `synchronize_srcu()` (main).
    ///
    /// # Panics
    ///
    /// In debug builds, if the calling thread holds a guard of this domain:
    /// that would deadlock (as `synchronize_srcu()` inside
    /// `srcu_read_lock()` does in the kernel). Release builds deadlock.
    pub fn synchronize(&self) {
        #[cfg(all(debug_assertions, not(loom)))]
        HELD.with(|h| {
            assert!(
                !h.borrow().contains(&self.addr()),
                "Srcu::synchronize() called inside a read-side section of the same domain: deadlock"
            );
        });
        self.wait_for(self.get_state());
    }

    /// Waits until `cookie` has passed: spins briefly, then yields the CPU,
    /// so that a descheduled reader can finish (the kernel sleeps here).
    fn wait_for(&self, cookie: GpCookie) {
        let mut spins = 0u32;
        while !self.poll(cookie) {
            if spins < 64 {
                spins += 1;
                spin_loop();
            } else {
                yield_now();
            }
        }
    }

    /// Readers currently inside a section (a racy snapshot, for reports).
    ///
    /// Kernel: none (model only).
    pub fn active_readers(&self) -> usize {
        self.readers
            .iter()
            .map(|r| r[0].load(Ordering::Relaxed) + r[1].load(Ordering::Relaxed))
            .sum()
    }

    #[cfg(all(debug_assertions, not(loom)))]
    fn addr(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// One flip, if the readers of the parity it would reuse have left.
    ///
    /// Kernel: `srcu_gp_start()`'s `rcu_seq_start()`, then
    /// `try_check_zero()` and `srcu_flip()`, then `rcu_seq_end()` (main).
    fn try_flip(&self) -> bool {
        let _flip = self.flip.lock();
        let seq = self.seq.load(Ordering::Relaxed);
        let next = usize::from((flips(seq) + 1) & 1 == 1);
        if seq & FLIP_IN_PROGRESS == 0 {
            // Release on every store of `seq`, not only the one that ends
            // a flip: a poller that reads this value must still be ordered
            // after the flips before it (and so after the readers they
            // waited for); a plain store does not continue a release
            // sequence.
            let order = if self.mutants.has(Mutant::SrcuRelaxedFlipMarker) {
                Ordering::Relaxed
            } else {
                Ordering::Release
            };
            self.seq.store(seq | FLIP_IN_PROGRESS, order);
        }
        // Pairs with the reader's fence in `read_lock` (this scan sees its
        // increment, or it sees what was unpublished before this flip) and
        // with the writer's fence in `get_state` (it sees the state bit,
        // or this scan comes after its unpublish). A bit set by an earlier,
        // refused attempt happens before this fence through `flip`, which
        // is enough for the fence pair (C++20 [atomics.order] p4.4).
        if !self.mutants.has(Mutant::SrcuNoFlipFence) {
            fence(Ordering::SeqCst);
        }
        if self
            .readers
            .iter()
            .any(|r| r[next].load(Ordering::Acquire) != 0)
        {
            // The flip stays in progress, as a kernel grace period does
            // until its readers drain.
            return false;
        }
        self.seq
            .store(flips_to_seq(flips(seq) + 1), Ordering::Release);
        true
    }
}

/// A read-side section of a [`Srcu`] domain; leaves it on drop.
///
/// Kernel: the index returned by `srcu_read_lock()`, passed to
/// `srcu_read_unlock()` (main).
#[must_use = "the read-side section ends when the guard is dropped"]
pub struct SrcuReadGuard<'a> {
    srcu: &'a Srcu,
    shard: usize,
    parity: usize,
}

impl fmt::Debug for SrcuReadGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrcuReadGuard")
            .field("shard", &self.shard)
            .field("parity", &self.parity)
            .finish()
    }
}

impl SrcuReadGuard<'_> {
    /// The domain this guard belongs to.
    ///
    /// Kernel: none (model only).
    pub fn domain(&self) -> &Srcu {
        self.srcu
    }
}

impl Drop for SrcuReadGuard<'_> {
    fn drop(&mut self) {
        // Release: the reader's loads happen before the reclaimer's
        // Acquire load of this counter.
        self.srcu.readers[self.shard][self.parity].fetch_sub(1, Ordering::Release);
        #[cfg(all(debug_assertions, not(loom)))]
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if let Some(i) = h.iter().rposition(|&a| a == self.srcu.addr()) {
                h.swap_remove(i);
            }
        });
    }
}

/// Objects waiting for a grace period before they are dropped.
///
/// Kernel: the callback list of `call_srcu()`; the model drops the objects
/// on the writer's own thread when it next calls [`RetireList::reclaim`] (main).
pub struct RetireList<T> {
    items: VecDeque<(GpCookie, T)>,
}

impl<T> fmt::Debug for RetireList<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetireList")
            .field("pending", &self.items.len())
            .finish()
    }
}

impl<T> Default for RetireList<T> {
    fn default() -> Self {
        RetireList {
            items: VecDeque::new(),
        }
    }
}

impl<T> RetireList<T> {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `item`, which the caller has already unpublished.
    ///
    /// Kernel: `call_srcu()` (main).
    pub fn retire(&mut self, srcu: &Srcu, item: T) {
        let cookie = srcu.get_state();
        self.items.push_back((cookie, item));
    }

    /// Queues `item` under a cookie the caller took with
    /// [`Srcu::get_state`] after it unpublished `item` ([`retire`] takes
    /// it itself; a cookie taken before the unpublish is the bug of
    /// [`Mutant::RangeTreeCookieBeforePublish`]).
    ///
    /// Kernel: `call_srcu()` with the state from
    /// `get_state_synchronize_srcu()` (model only).
    ///
    /// [`retire`]: RetireList::retire
    pub fn retire_at(&mut self, cookie: GpCookie, item: T) {
        self.items.push_back((cookie, item));
    }

    /// Drops every queued item whose grace period has passed, without
    /// waiting. Returns how many were dropped.
    ///
    /// Kernel: SRCU callback invocation (main).
    pub fn reclaim(&mut self, srcu: &Srcu) -> usize {
        self.reclaim_with(srcu, drop)
    }

    /// Hands every queued item whose grace period has passed to `f` (to
    /// recycle it, say), without waiting. Returns how many there were.
    ///
    /// Kernel: SRCU callback invocation, with the callback chosen here (main).
    pub fn reclaim_with(&mut self, srcu: &Srcu, mut f: impl FnMut(T)) -> usize {
        let mut n = 0;
        // Cookies are queued in order, so the first unfinished one ends it.
        while let Some(&(cookie, _)) = self.items.front() {
            if !srcu.poll(cookie) {
                break;
            }
            if let Some((_, item)) = self.items.pop_front() {
                f(item);
            }
            n += 1;
        }
        n
    }

    /// Waits for a grace period, then drops everything queued.
    ///
    /// Kernel: `srcu_barrier()` (main).
    pub fn drain(&mut self, srcu: &Srcu) {
        if let Some(&(cookie, _)) = self.items.back() {
            srcu.wait_for(cookie);
        }
        self.items.clear();
    }

    /// Items still waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// `true` if nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn poll_needs_two_flips_and_waits_for_readers() {
        let d = Srcu::new();
        let g = d.read_lock();
        let cookie = d.get_state();
        // The reader entered at parity 0; the first flip (to parity 1) is
        // allowed, the second (back to parity 0) must wait for it.
        assert!(!d.poll(cookie));
        assert_eq!(
            d.seq.load(Ordering::Relaxed),
            2 | FLIP_IN_PROGRESS,
            "one flip done, the second waiting"
        );
        drop(g);
        assert!(d.poll(cookie));
        assert_eq!(d.active_readers(), 0);
    }

    #[test]
    fn a_flip_in_progress_does_not_count() {
        let d = Srcu::new();
        assert_eq!(d.get_state(), GpCookie(2));
        // Another thread has set the state bit and may already have scanned
        // the counters: its flip cannot count for this writer.
        d.seq.store(FLIP_IN_PROGRESS, Ordering::Relaxed);
        assert_eq!(d.get_state(), GpCookie(3));
        d.seq.store(2, Ordering::Relaxed);
        assert_eq!(d.get_state(), GpCookie(3));
    }

    #[test]
    fn a_refused_flip_stays_in_progress() {
        let d = Srcu::new();
        let g = d.read_lock();
        assert!(d.try_flip());
        assert!(
            !d.try_flip(),
            "the reader at parity 0 blocks the second flip"
        );
        assert_eq!(d.seq.load(Ordering::Relaxed), 2 | FLIP_IN_PROGRESS);
        assert_eq!(
            d.get_state(),
            GpCookie(4),
            "the blocked flip does not count"
        );
        drop(g);
        assert!(d.try_flip());
        assert_eq!(d.seq.load(Ordering::Relaxed), 4);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "inside a read-side section")]
    fn synchronize_inside_a_section_panics_in_debug_builds() {
        let d = Srcu::new();
        let _g = d.read_lock();
        d.synchronize();
    }

    #[test]
    fn synchronize_returns_once_readers_leave() {
        let d = Arc::new(Srcu::new());
        let g = d.read_lock();
        let d2 = Arc::clone(&d);
        let t = std::thread::spawn(move || d2.synchronize());
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!t.is_finished(), "synchronize must wait for the reader");
        drop(g);
        t.join().unwrap();
    }

    #[test]
    fn retire_list_drops_only_after_the_grace_period() {
        let d = Srcu::new();
        let mut list = RetireList::new();
        let obj = Arc::new(5);
        let g = d.read_lock();
        list.retire(&d, Arc::clone(&obj));
        assert_eq!(list.reclaim(&d), 0);
        assert_eq!(Arc::strong_count(&obj), 2);
        drop(g);
        assert_eq!(list.reclaim(&d), 1);
        assert_eq!(Arc::strong_count(&obj), 1);
        list.retire(&d, Arc::clone(&obj));
        list.drain(&d);
        assert!(list.is_empty());
    }
}
