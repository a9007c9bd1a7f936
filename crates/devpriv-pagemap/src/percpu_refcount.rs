//! The reference count of a `dev_pagemap` and the completion its teardown
//! waits on.
//!
//! Kernel: `lib/percpu-refcount.c`, `include/linux/percpu-refcount.h`,
//! `kernel/sched/completion.c` (main).
//!
//! A [`PercpuRef`] is `struct percpu_ref` (main) as `mm/memremap.c` uses it
//! for `pgmap->ref`: it starts *live* holding one *initial* reference; every allocated device page holds one more
//! ([`PercpuRef::tryget_many`] at allocation, [`PercpuRef::put_many`] at
//! free); teardown calls [`PercpuRef::kill`], which switches the count to
//! *atomic* mode and drops the initial reference, and then waits on a
//! [`Completion`] that the release callback completes when the last page is
//! freed. Note hazard H11: [`PercpuRef::tryget_many`] does not look at
//! `DEAD`, so allocations keep succeeding after `kill` for as long as any
//! page is still allocated.
//!
//! # The protocol
//!
//! State: a `state` word (`ATOMIC` and `DEAD` bits, set together by `kill`),
//! `SHARDS` cache-padded per-thread shard counters, and one `central`
//! counter. Counters are `u64`s read as two's-complement `i64`: a get on
//! one shard and a put on another leave one shard negative; only the sum
//! means anything.
//!
//! - **Live fast path** (every get, put and tryget): load `state`
//!   (`Acquire`); if `ATOMIC` is clear, `fetch_add` the delta on the
//!   caller's shard (`AcqRel`, a put adds the negated count). If the value
//!   the RMW returned carries the `SEAL` mark, the shard had already been
//!   sealed by `kill` (this op read `state` before `kill` set `ATOMIC`):
//!   the delta landed in a dead shard, whose contents nobody reads again,
//!   and the op redoes itself on the atomic path.
//! - **Atomic path**: gets and puts are RMWs on `central` (`AcqRel`); the
//!   put that brings `central` to zero calls `release`. Trygets add unless
//!   `central` is zero (a CAS loop); `tryget_live` first fails on `DEAD`.
//! - **`kill`**: `fetch_or(ATOMIC | DEAD)`; then, for each shard, `swap` in
//!   `SEAL` (`AcqRel`) and add the value taken to a sum; then fold the sum
//!   into `central`, removing `BIAS`; then put the initial reference on the
//!   atomic path.
//!
//! While live, `central` holds `BIAS + 1` (`BIAS` = 2^62): atomic-path ops
//! that run between `kill`'s `fetch_or` and its fold move `central` by a few
//! units around a huge value, so it cannot reach zero before every shard has
//! been folded (the kernel's `PERCPU_COUNT_BIAS`).
//!
//! Why no operation is lost or counted twice: each shard's RMWs are totally
//! ordered (its modification order), and `kill`'s `swap` splits them in
//! two. An RMW ordered before the swap is in the value the swap took, and
//! so in the fold; an RMW ordered after it returns a sealed value, and its
//! op is redone on `central` instead. After the fold, `central` is exactly
//! the true count. That count is at least 1 (the initial reference) until
//! `kill` itself puts it after the fold, so `release` runs exactly once: at
//! the RMW that brings the true count to zero, which is on `central` and
//! after the fold. A live-path get or tryget that returned success landed
//! in an unsealed shard, so it is in the fold and the count cannot reach
//! zero while its reference is held.
//!
//! Why `release` sees everything the last holders did: a put on a shard is
//! a `Release` RMW that `kill`'s `AcqRel` swap reads (directly or through
//! later RMWs of the same shard, which continue its release sequence); the
//! swap is sequenced before the fold, and every RMW on `central` is
//! `AcqRel`, so the RMW that reaches zero, and hence `release` and whoever
//! waits on the completion it completes, happens after every put.
//!
//! Why `tryget_live` fails after `kill`: an op that reads `state` after
//! `kill` set `ATOMIC | DEAD` takes the atomic path and fails on `DEAD`. An
//! op that read `state` before but reached its shard after the seal reads
//! the sealed value with `Acquire` from `kill`'s `Release` swap, which is
//! sequenced after the `fetch_or`, so its second `state` load sees `DEAD`.
//! Only an op whose shard RMW precedes the seal succeeds, and it is
//! ordered before `kill` completes.
//!
//! ## Why not a grace period
//!
//! The kernel's per-CPU ops are plain (non-atomic) `this_cpu_add`s under
//! `rcu_read_lock_sched()`, so `percpu_ref_switch_to_atomic_rcu()` must wait
//! a grace period before it can read the per-CPU counters. The model's
//! shards are shared by threads and need atomic RMWs anyway; making the
//! switch a `swap` of each shard gives the same guarantee with one RMW per
//! op on a thread-local cache line plus one load of a read-mostly word (an
//! SRCU read section around each op would add two more RMWs and a `SeqCst`
//! fence), and `kill` never waits for readers. The `loom` model
//! `percpu_ref_kill_vs_tryget_put` checks it, with a mutant that reads the
//! shards without sealing them.
//!
//! # Differences from the kernel
//!
//! - Shards are per thread ([`devpriv_core::sync::thread_shard`]), not per
//!   CPU, and fast-path ops are atomic RMWs rather than `this_cpu_add`.
//! - The switch to atomic mode is synchronous: when [`PercpuRef::kill`]
//!   returns, the count is already atomic and `release` has run if no
//!   reference was left (the kernel finishes the switch, and so the final
//!   put of the initial reference, from an RCU callback).
//! - There is no `percpu_ref_exit()`: dropping the [`PercpuRef`] frees it.
//!   There is no `percpu_ref_reinit()`/`resurrect()`, no
//!   `percpu_ref_switch_to_atomic()`/`_percpu()`, and no `ALLOW_REINIT` or
//!   `INIT_ATOMIC` flags: `dev_pagemap` uses none of them.
//! - `release` is a boxed `Fn()` closure rather than a function pointer
//!   that receives the `percpu_ref` (closures capture what they need).
//! - Extra `WARN_ON_ONCE`s (model only): a get on a released count and a
//!   put below zero.
//! - Live counts must stay within ±2^61 (the kernel's live range is larger,
//!   `PERCPU_COUNT_BIAS` = 2^63); no real workload comes close.
//!
//! # loom mutants
//!
//! Under `--cfg loom`, [`PercpuRef::with_mutants`] plants the `PercpuRef*`
//! bugs of [`devpriv_core::mutant::Mutant`].

use crossbeam_utils::CachePadded;
use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use devpriv_core::sync::{Backoff, Deadline, SHARDS, thread_shard};
use devpriv_core::warn_on_once;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// `state` bit: the count lives in `central` (kernel `__PERCPU_REF_ATOMIC`).
const ATOMIC: u32 = 1;
/// `state` bit: `kill` was called (kernel `__PERCPU_REF_DEAD`).
const DEAD: u32 = 2;

/// Added to `central` while live, so that atomic-path puts racing `kill`
/// cannot bring it to zero before the shards are folded.
///
/// Kernel: `PERCPU_COUNT_BIAS` (there 2^63, main).
const BIAS: u64 = 1 << 62;
/// What `kill` swaps into each shard. Later RMWs move a sealed shard by at
/// most a few units, so it stays far from any live value.
const SEAL: u64 = 1 << 62;
/// Shard values at or above this (as `i64`) are sealed; `central` values at
/// or above it still carry [`BIAS`].
const HIGH: i64 = 1 << 61;

fn is_high(v: u64) -> bool {
    v.cast_signed() >= HIGH
}

/// A one-shot event that threads can wait for.
///
/// Kernel: `struct completion`, `kernel/sched/completion.c` (main).
///
/// # Differences from the kernel
///
/// - Once completed it stays completed: [`Completion::complete`] has
///   `complete_all()` semantics, and waiting does not consume it. (The
///   `dev_pagemap` completion is completed once and waited for once, so the
///   two agree there.)
/// - Waiters poll (spin, then yield, then nap for 50 µs at a time) instead
///   of sleeping on a wait queue: the `sync` shim has no condition
///   variable, and polling is what loom can check.
pub struct Completion {
    done: AtomicBool,
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("done", &self.is_done())
            .finish()
    }
}

impl Default for Completion {
    fn default() -> Self {
        Self::new()
    }
}

impl Completion {
    /// A completion that has not happened yet.
    ///
    /// Kernel: `init_completion()` (main).
    pub fn new() -> Self {
        Completion {
            done: AtomicBool::new(false),
        }
    }

    /// Marks the event as done and releases every waiter, present and
    /// future. Everything the caller did before happens before any wait
    /// that returns success.
    ///
    /// Kernel: `complete_all()`, `kernel/sched/completion.c` (see
    /// [`Completion`] for why not `complete()`, main).
    pub fn complete(&self) {
        self.done.store(true, Ordering::Release);
    }

    /// Whether [`Completion::complete`] has been called. A `true` result
    /// orders the caller after it, as a returned wait does.
    ///
    /// Kernel: `completion_done()`, `kernel/sched/completion.c` (main).
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Blocks until [`Completion::complete`] has been called.
    ///
    /// Kernel: `wait_for_completion()`, `kernel/sched/completion.c` (main).
    ///
    /// # Differences from the kernel
    ///
    /// Polls with backoff instead of sleeping (see [`Completion`]).
    pub fn wait(&self) {
        let mut backoff = Backoff::new();
        while !self.is_done() {
            backoff.snooze();
        }
    }

    /// Blocks until [`Completion::complete`] has been called or `timeout`
    /// has passed; returns `false` on timeout. A zero `timeout` checks
    /// once.
    ///
    /// Kernel: `wait_for_completion_timeout()`, `kernel/sched/completion.c`
    /// (which returns the jiffies left, 0 on timeout, main).
    ///
    /// # Differences from the kernel
    ///
    /// Polls with backoff (see [`Completion`]). Under `--cfg loom`, where
    /// time does not exist, a non-zero `timeout` means "check up to three
    /// times, yielding in between", whatever its length.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let mut deadline = Deadline::after(timeout);
        let mut backoff = Backoff::new();
        loop {
            if self.is_done() {
                return true;
            }
            if deadline.passed() {
                return false;
            }
            backoff.snooze();
        }
    }
}

/// A reference count that is cheap to take and drop from many threads
/// while live, and exact once killed.
///
/// Kernel: `struct percpu_ref`, `include/linux/percpu-refcount.h` (as used
/// for `dev_pagemap::ref`, main). The protocol and the differences from the
/// kernel are in the [module docs](self).
pub struct PercpuRef {
    /// `ATOMIC | DEAD`, both set by `kill`.
    state: AtomicU32,
    /// Live-mode deltas, one per thread shard; sealed by `kill`.
    shards: Box<[CachePadded<AtomicU64>]>,
    /// The count in atomic mode; `BIAS + 1` while live.
    central: CachePadded<AtomicU64>,
    release: Box<dyn Fn() + Send + Sync>,
    mutants: Mutants,
}

impl fmt::Debug for PercpuRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.load(Ordering::Relaxed);
        f.debug_struct("PercpuRef")
            .field(
                "mode",
                &if state & ATOMIC != 0 {
                    "atomic"
                } else {
                    "percpu"
                },
            )
            .field("dead", &(state & DEAD != 0))
            .field("count", &self.count())
            .finish_non_exhaustive()
    }
}

impl PercpuRef {
    /// A live count holding the initial reference. `release` runs exactly
    /// once, on the thread whose put (or [`PercpuRef::kill`]) brings the
    /// count to zero after `kill`.
    ///
    /// Kernel: `percpu_ref_init(ref, release, 0, GFP_KERNEL)`,
    /// `lib/percpu-refcount.c` (main).
    ///
    /// # Differences from the kernel
    ///
    /// `release` is a closure and receives nothing; it cannot fail
    /// (no `-ENOMEM`).
    pub fn new(release: impl Fn() + Send + Sync + 'static) -> Self {
        Self::with_mutants(release, Mutants::NONE)
    }

    /// As [`PercpuRef::new`], with the `PercpuRef*` bugs of `mutants`
    /// planted, for loom mutant tests (outside loom `mutants` is empty and
    /// this is [`PercpuRef::new`]).
    ///
    /// Kernel: none (model only).
    pub fn with_mutants(release: impl Fn() + Send + Sync + 'static, mutants: Mutants) -> Self {
        PercpuRef {
            state: AtomicU32::new(0),
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
            central: CachePadded::new(AtomicU64::new(BIAS + 1)),
            release: Box::new(release),
            mutants,
        }
    }

    /// A live count whose release completes the returned [`Completion`]:
    /// the `dev_pagemap` pairing of `ref` and `done`.
    ///
    /// Kernel: `percpu_ref_init(&pgmap->ref, dev_pagemap_percpu_release,
    /// 0, GFP_KERNEL)` + `init_completion(&pgmap->done)`, `mm/memremap.c` (main).
    pub fn with_completion() -> (Self, Arc<Completion>) {
        let done = Arc::new(Completion::new());
        let d = Arc::clone(&done);
        (PercpuRef::new(move || d.complete()), done)
    }

    /// The live fast path: adds `delta` to the caller's shard if the count
    /// is live. Returns `false` if the op must be done on the atomic path
    /// instead (the count was already atomic, or the shard was sealed under
    /// this op, which then left a harmless delta in a dead shard).
    #[inline]
    fn try_shard_add(&self, delta: u64) -> bool {
        if self.state.load(Ordering::Acquire) & ATOMIC != 0 {
            return false;
        }
        self.shard_rmw(delta)
    }

    /// The shard half of [`PercpuRef::try_shard_add`]; `false` if sealed.
    #[inline]
    fn shard_rmw(&self, delta: u64) -> bool {
        let order = if self.mutants.has(Mutant::PercpuRefRelaxedShardOps) {
            Ordering::Relaxed
        } else {
            Ordering::AcqRel
        };
        let shard = &self.shards[thread_shard() % SHARDS];
        !is_high(shard.fetch_add(delta, order))
    }

    fn atomic_get(&self, n: u64) {
        let old = self.central.fetch_add(n, Ordering::AcqRel);
        warn_on_once!(old == 0, "percpu_ref get on a released count");
    }

    fn atomic_put(&self, n: u64) {
        let old = self.central.fetch_sub(n, Ordering::AcqRel);
        if old == n {
            (self.release)();
        } else {
            warn_on_once!(
                old.cast_signed() < n.cast_signed(),
                "percpu_ref put below zero"
            );
        }
    }

    /// `central += n` unless it is zero.
    fn atomic_add_unless_zero(&self, n: u64) -> bool {
        let mut cur = self.central.load(Ordering::Relaxed);
        loop {
            if cur == 0 {
                return false;
            }
            match self.central.compare_exchange(
                cur,
                cur.wrapping_add(n),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(v) => cur = v,
            }
        }
    }

    /// Takes `n` references. The caller must already hold one, or know the
    /// count cannot have been released (use a tryget otherwise). `n == 0`
    /// does nothing.
    ///
    /// Kernel: `percpu_ref_get_many()`, `include/linux/percpu-refcount.h` (main).
    ///
    /// # Differences from the kernel
    ///
    /// A get on a released count (atomic mode, count 0) also hits a
    /// `WARN_ON_ONCE` (model only); the kernel silently resurrects it.
    #[inline]
    pub fn get_many(&self, n: u64) {
        if n != 0 && !self.try_shard_add(n) {
            self.atomic_get(n);
        }
    }

    /// Drops `n` references. In atomic mode, the put that brings the count
    /// to zero calls `release` (on this thread). `n == 0` does nothing.
    ///
    /// Kernel: `percpu_ref_put_many()`, `include/linux/percpu-refcount.h` (main).
    ///
    /// # Differences from the kernel
    ///
    /// A put below zero also hits a `WARN_ON_ONCE` (model only).
    #[inline]
    pub fn put_many(&self, n: u64) {
        if n != 0 && !self.try_shard_add(n.wrapping_neg()) {
            self.atomic_put(n);
        }
    }

    /// Takes `n` references unless the count has reached zero. Succeeds in
    /// live mode; in atomic mode succeeds unless the count is zero. It does
    /// **not** check `DEAD` (hazard H11): after [`PercpuRef::kill`] it keeps
    /// succeeding while any reference is outstanding.
    ///
    /// Kernel: `percpu_ref_tryget_many()`, `include/linux/percpu-refcount.h` (main).
    #[inline]
    pub fn tryget_many(&self, n: u64) -> bool {
        self.try_shard_add(n) || self.atomic_add_unless_zero(n)
    }

    /// Takes one reference unless [`PercpuRef::kill`] has taken effect:
    /// succeeds in live mode; in atomic mode succeeds only if the count is
    /// not dead and not zero. (Only `kill` switches to atomic mode in this
    /// model, so in atomic mode it always fails; the zero check is kept as
    /// the kernel has it.) Once `kill` has returned, it fails.
    ///
    /// Kernel: `percpu_ref_tryget_live()`, `include/linux/percpu-refcount.h` (main).
    #[inline]
    pub fn tryget_live(&self) -> bool {
        if self.try_shard_add(1) {
            return true;
        }
        if self.state.load(Ordering::Acquire) & DEAD != 0
            && !self.mutants.has(Mutant::PercpuRefTrygetLiveIgnoresDead)
        {
            return false;
        }
        self.atomic_add_unless_zero(1)
    }

    /// Marks the count dead, switches it to atomic mode and drops the
    /// initial reference; if no other reference is held, `release` runs
    /// before this returns (on this thread).
    ///
    /// A second call hits a `WARN_ON_ONCE` and then, as the kernel does,
    /// **drops one more reference**: the mode switch is a no-op (the count
    /// is already atomic), but the put is not. If that put reaches zero,
    /// `release` runs while a page may still be allocated (for a
    /// `dev_pagemap`: `done` completes early and teardown can finish under
    /// a live page). [`DevPagemap`](crate::DevPagemap)'s teardown kills
    /// its ref once only, so pagemaps never do this.
    ///
    /// Kernel: `percpu_ref_kill()` (= `percpu_ref_kill_and_confirm(ref,
    /// NULL)`: `WARN_ONCE(percpu_ref_is_dying(ref), ...)`, set
    /// `__PERCPU_REF_DEAD`, switch to atomic, `percpu_ref_put(ref)`),
    /// `lib/percpu-refcount.c` (main).
    ///
    /// # Differences from the kernel
    ///
    /// The switch finishes before this returns, without a grace period (see
    /// the module docs). A put below zero takes the model's own `WARN`
    /// ("`percpu_ref` put below zero"); the kernel's atomic-mode put has none.
    pub fn kill(&self) {
        // No caller relies on this ordering, nor on the `Release` half of
        // the seal swaps below. An op redirected by a seal takes the
        // atomic path, whose RMWs on `central` are totally ordered with the
        // fold below, so the count stays exact either way. `DEAD` is read
        // only by `tryget_live`: one that overlaps `kill` may succeed or
        // fail (as `percpu_ref_tryget_live()` racing `percpu_ref_kill()`
        // may), and one that starts after `kill` returned sees `DEAD`
        // through happens-before, not through these stores. `AcqRel` is
        // kept because it costs nothing here (`lock or`, `xchg`).
        let old = self.state.fetch_or(ATOMIC | DEAD, Ordering::AcqRel);
        if warn_on_once!(old & DEAD != 0, "percpu_ref_kill() called more than once") {
            // Already atomic: only the put of percpu_ref_kill_and_confirm()
            // is left to do. The kernel serialises kills (and holds a
            // reference across the switch); here a racing first kill may
            // still be folding the shards, so put only once `central` has
            // lost its bias, or the put could hide the release.
            while is_high(self.central.load(Ordering::Acquire)) {
                devpriv_core::sync::spin_loop();
            }
            self.atomic_put(1);
            return;
        }
        let skip_seal = self.mutants.has(Mutant::PercpuRefKillSkipsSeal);
        let mut sum = 0u64;
        for shard in &*self.shards {
            let v = if skip_seal {
                shard.load(Ordering::Acquire)
            } else {
                shard.swap(SEAL, Ordering::AcqRel)
            };
            sum = sum.wrapping_add(v);
        }
        let now = self
            .central
            .fetch_add(sum.wrapping_sub(BIAS), Ordering::AcqRel)
            .wrapping_add(sum)
            .wrapping_sub(BIAS);
        warn_on_once!(
            now.cast_signed() <= 0,
            "percpu_ref <= 0 after switching to atomic"
        );
        // Drop the initial reference.
        self.atomic_put(1);
    }

    /// Whether [`PercpuRef::kill`] has been called.
    ///
    /// Kernel: `percpu_ref_is_dying()`, `include/linux/percpu-refcount.h` (main).
    pub fn is_dying(&self) -> bool {
        self.state.load(Ordering::Acquire) & DEAD != 0
    }

    /// Whether the count is in atomic mode and zero (that is, released).
    /// Always `false` while live.
    ///
    /// Kernel: `percpu_ref_is_zero()`, `lib/percpu-refcount.c` (main).
    pub fn is_zero(&self) -> bool {
        self.state.load(Ordering::Acquire) & ATOMIC != 0
            && self.central.load(Ordering::Acquire) == 0
    }

    /// The current count, including the initial reference until `kill`: a
    /// racy snapshot for reports and tests, exact only when nothing runs
    /// concurrently. Negative only after a put below zero.
    ///
    /// Kernel: none (`percpu_ref` has no reader of the live sum; the model
    /// adds one).
    pub fn count(&self) -> i64 {
        let central = self.central.load(Ordering::Acquire);
        let mut sum = if is_high(central) {
            central.wrapping_sub(BIAS)
        } else {
            central
        };
        for shard in &*self.shards {
            let v = shard.load(Ordering::Acquire);
            if !is_high(v) {
                sum = sum.wrapping_add(v);
            }
        }
        sum.cast_signed()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use devpriv_core::warn;

    /// A count whose release bumps the returned counter.
    fn counted() -> (Arc<PercpuRef>, Arc<AtomicU64>) {
        let releases = Arc::new(AtomicU64::new(0));
        let r = Arc::clone(&releases);
        let pr = PercpuRef::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        (Arc::new(pr), releases)
    }

    fn released(c: &AtomicU64) -> u64 {
        c.load(Ordering::SeqCst)
    }

    #[test]
    fn get_put_kill_releases_exactly_once_after_the_last_put() {
        let (r, rel) = counted();
        assert_eq!(r.count(), 1, "starts with the initial reference");
        r.get_many(3);
        r.put_many(2);
        assert_eq!(r.count(), 2);
        assert!(!r.is_dying() && !r.is_zero());
        r.kill();
        assert!(r.is_dying());
        assert!(!r.is_zero());
        assert_eq!(r.count(), 1, "kill dropped only the initial reference");
        assert_eq!(released(&rel), 0, "a page reference is still held");
        r.put_many(1);
        assert_eq!(released(&rel), 1);
        assert!(r.is_zero());
        assert_eq!(r.count(), 0);
    }

    #[test]
    fn kill_with_nothing_held_releases_at_once() {
        let (r, done) = PercpuRef::with_completion();
        assert!(!done.is_done());
        r.kill();
        assert!(done.is_done());
        assert!(r.is_zero());
    }

    /// `percpu_ref_kill_and_confirm()` WARNs on a dying ref and then still
    /// puts: a second kill drops one more reference, which can release the
    /// count while a reference is outstanding.
    #[test]
    fn second_kill_warns_and_puts_again() {
        let (r, done) = PercpuRef::with_completion();
        r.get_many(1);
        assert_eq!(r.count(), 2);
        r.kill();
        assert_eq!(r.count(), 1, "the first kill drops the initial reference");
        assert!(!done.is_done());
        let ((), w) = warn::capture(|| r.kill());
        assert_eq!(w.count_matching("called more than once"), 1);
        assert_eq!(r.count(), 0, "the second kill dropped the page's reference");
        assert!(r.is_zero());
        assert!(done.is_done(), "released with a reference still held");
        // The holder's own put then goes below zero.
        let ((), w) = warn::capture(|| r.put_many(1));
        assert_eq!(w.count_matching("below zero"), 1);
        assert_eq!(r.count(), -1);
    }

    #[test]
    fn second_kill_releases_exactly_once() {
        let (r, rel) = counted();
        r.get_many(2);
        r.kill();
        let ((), w) = warn::capture(|| r.kill());
        assert_eq!(w.count_matching("called more than once"), 1);
        assert_eq!((r.count(), released(&rel)), (1, 0));
        r.put_many(1);
        assert_eq!(released(&rel), 1);
    }

    #[test]
    fn tryget_live_fails_after_kill() {
        let (r, rel) = counted();
        assert!(r.tryget_live());
        r.kill();
        assert_eq!(r.count(), 1);
        assert!(!r.tryget_live(), "dead, though a reference is outstanding");
        assert_eq!(r.count(), 1);
        r.put_many(1);
        assert_eq!(released(&rel), 1);
        assert!(!r.tryget_live());
    }

    #[test]
    fn tryget_many_succeeds_after_kill_while_refs_are_outstanding() {
        // Hazard H11: allocation keeps working during teardown.
        let (r, rel) = counted();
        r.get_many(1);
        r.kill();
        assert!(r.tryget_many(2), "tryget_many ignores DEAD");
        assert_eq!(r.count(), 3);
        r.put_many(2);
        assert_eq!(released(&rel), 0);
        r.put_many(1);
        assert_eq!(released(&rel), 1);
        assert!(!r.tryget_many(1), "fails once the count reached zero");
        assert_eq!(r.count(), 0);
        assert_eq!(released(&rel), 1);
    }

    #[test]
    fn gets_and_puts_on_different_shards_sum_correctly() {
        let (r, rel) = counted();
        r.get_many(4);
        let r2 = Arc::clone(&r);
        std::thread::spawn(move || r2.put_many(3)).join().unwrap();
        // The other thread's shard went negative; only the sum matters.
        assert!(
            r.shards
                .iter()
                .any(|s| s.load(Ordering::SeqCst).cast_signed() < 0),
            "puts landed on another shard"
        );
        assert_eq!(r.count(), 2);
        r.kill();
        assert_eq!(released(&rel), 0);
        assert_eq!(r.count(), 1);
        let r2 = Arc::clone(&r);
        std::thread::spawn(move || r2.put_many(1)).join().unwrap();
        assert_eq!(released(&rel), 1);
    }

    #[test]
    fn fast_path_op_that_lost_the_race_with_kill_is_redone_atomically() {
        // An op that read `state` as live before `kill` and reaches its
        // shard after the seal: `put_many` would see `shard_rmw` fail and
        // fall back to the atomic path, which must release.
        let (r, rel) = counted();
        r.get_many(1);
        r.kill();
        assert!(
            r.shards.iter().all(|s| is_high(s.load(Ordering::SeqCst))),
            "every shard is sealed"
        );
        assert!(!r.shard_rmw(1u64.wrapping_neg()), "the seal is detected");
        assert_eq!(released(&rel), 0);
        r.atomic_put(1);
        assert_eq!(released(&rel), 1);
        assert_eq!(r.count(), 0);
    }

    #[test]
    fn misuse_warns() {
        let (r, rel) = counted();
        r.kill();
        assert_eq!(released(&rel), 1);
        let ((), w) = warn::capture(|| r.get_many(1));
        assert_eq!(w.count_matching("get on a released count"), 1);
        r.put_many(1);
        assert_eq!(released(&rel), 2, "a resurrected count releases again");
        let ((), w) = warn::capture(|| r.put_many(1));
        assert_eq!(w.count_matching("put below zero"), 1);
        assert_eq!(r.count(), -1);
        // Zero-sized gets and puts are no-ops.
        r.put_many(0);
        r.get_many(0);
        assert_eq!(r.count(), -1);
        assert_eq!(released(&rel), 2);
    }

    #[test]
    fn concurrent_kills_release_once_and_warn_once() {
        for _ in 0..50 {
            let (r, rel) = counted();
            r.get_many(1);
            let kills: Vec<_> = (0..2)
                .map(|_| {
                    let r = Arc::clone(&r);
                    std::thread::spawn(move || {
                        warn::capture(|| r.kill())
                            .1
                            .count_matching("called more than once")
                    })
                })
                .collect();
            let warned: usize = kills.into_iter().map(|t| t.join().unwrap()).sum();
            assert_eq!(warned, 1);
            // Two kills drop the initial reference and the one held.
            assert_eq!(released(&rel), 1);
            assert!(r.is_zero());
        }
    }

    #[test]
    fn stress_gets_and_puts_racing_kill() {
        const WORKERS: u64 = 4;
        for _round in 0..20 {
            // Shadow count of the references the workers hold: raised after
            // each get, lowered before each put, so it never exceeds the
            // real count. A release that sees it positive ran while a
            // reference was still held.
            let shadow = Arc::new(AtomicU64::new(0));
            let early = Arc::new(AtomicBool::new(false));
            let releases = Arc::new(AtomicU64::new(0));
            let done = Arc::new(Completion::new());
            let r = {
                let (shadow, early) = (Arc::clone(&shadow), Arc::clone(&early));
                let (releases, done) = (Arc::clone(&releases), Arc::clone(&done));
                Arc::new(PercpuRef::new(move || {
                    if shadow.load(Ordering::SeqCst) != 0 {
                        early.store(true, Ordering::SeqCst);
                    }
                    releases.fetch_add(1, Ordering::SeqCst);
                    done.complete();
                }))
            };
            let stop = Arc::new(AtomicBool::new(false));
            let started = Arc::new(AtomicU64::new(0));
            let workers: Vec<_> = (0..WORKERS)
                .map(|i| {
                    let r = Arc::clone(&r);
                    let (shadow, stop) = (Arc::clone(&shadow), Arc::clone(&stop));
                    let started = Arc::clone(&started);
                    std::thread::spawn(move || {
                        let got = |n: u64| {
                            shadow.fetch_add(n, Ordering::SeqCst);
                        };
                        let put = |n: u64| {
                            shadow.fetch_sub(n, Ordering::SeqCst);
                            r.put_many(n);
                        };
                        // A base reference keeps the count alive while we
                        // loop, so `tryget_many` must keep succeeding.
                        assert!(r.tryget_many(1));
                        got(1);
                        started.fetch_add(1, Ordering::SeqCst);
                        let mut iters = 0u64;
                        while !stop.load(Ordering::Relaxed) || iters < 2000 {
                            let n = iters % 3 + 1;
                            match (iters + i) % 3 {
                                0 => {
                                    r.get_many(n);
                                    got(n);
                                    put(n);
                                }
                                1 => {
                                    assert!(r.tryget_many(n), "base reference held");
                                    got(n);
                                    put(n);
                                }
                                _ => {
                                    if r.tryget_live() {
                                        got(1);
                                        put(1);
                                    }
                                }
                            }
                            iters += 1;
                        }
                        put(1);
                    })
                })
                .collect();
            while started.load(Ordering::SeqCst) < WORKERS {
                std::thread::yield_now();
            }
            std::thread::sleep(Duration::from_micros(200));
            r.kill();
            assert!(!done.is_done(), "workers still hold their base references");
            std::thread::sleep(Duration::from_micros(200));
            stop.store(true, Ordering::Relaxed);
            assert!(
                done.wait_timeout(Duration::from_secs(30)),
                "release never ran"
            );
            for w in workers {
                w.join().unwrap();
            }
            assert!(
                !early.load(Ordering::SeqCst),
                "released while a reference was held"
            );
            assert_eq!(releases.load(Ordering::SeqCst), 1, "released exactly once");
            assert_eq!(r.count(), 0);
            assert!(r.is_zero());
        }
    }

    #[test]
    fn completion_wait_and_timeout() {
        let c = Arc::new(Completion::new());
        assert!(!c.is_done());
        assert!(!c.wait_timeout(Duration::ZERO));
        let t0 = std::time::Instant::now();
        assert!(!c.wait_timeout(Duration::from_millis(20)));
        assert!(
            t0.elapsed() >= Duration::from_millis(20),
            "waited the timeout"
        );
        let data = Arc::new(AtomicU64::new(0));
        let (c2, d2) = (Arc::clone(&c), Arc::clone(&data));
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            d2.store(7, Ordering::Relaxed);
            c2.complete();
        });
        c.wait();
        assert_eq!(
            data.load(Ordering::Relaxed),
            7,
            "complete() orders before wait()"
        );
        assert!(c.is_done());
        assert!(c.wait_timeout(Duration::ZERO), "stays done");
        c.wait();
        t.join().unwrap();
        assert!(format!("{c:?}").contains("true"));
    }

    #[test]
    fn debug_shows_mode() {
        let (r, _) = PercpuRef::with_completion();
        assert!(format!("{r:?}").contains("percpu"));
        r.kill();
        let s = format!("{r:?}");
        assert!(s.contains("atomic") && s.contains("dead: true"), "{s}");
    }
}
