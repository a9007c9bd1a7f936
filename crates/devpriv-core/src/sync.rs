//! The one place where locks, atomics and checked cells come from.
//!
//! Kernel: none (model only). This is the C harness's `vma_internal.h` trick
//! in Rust form: normal builds get `parking_lot` and `std`; `--cfg loom`
//! builds get loom's checked versions, so every protocol in the workspace
//! is visible to the model checker. `clippy.toml` bans the underlying
//! types everywhere else.
//!
//! Both sides expose one `parking_lot`-shaped API (no lock poisoning).
//!
//! Besides locks and atomics, this is where everything else that differs
//! under loom lives, so protocol code carries no `#[cfg(loom)]` (tokio's
//! layout; the planted bugs have their own switch, [`crate::mutant`]):
//!
//! - [`SHARDS`], the width of a sharded counter (2 under loom, where every
//!   shard multiplies the state space);
//! - [`TrackedCell`], a value only loom sees (zero-sized otherwise), for
//!   "this access must be ordered after that one" checks;
//! - [`free_reachable`], which frees memory lock-free readers may have
//!   reached, or under loom poisons it through a checked write instead;
//! - [`Backoff`] and [`Deadline`] for wait loops (loom has no time and an
//!   unfair scheduler).

#[cfg(not(loom))]
#[expect(clippy::disallowed_types, reason = "this is the sync shim")]
mod imp {
    pub use parking_lot::{MutexGuard, RwLockReadGuard, RwLockWriteGuard};

    /// `parking_lot::Mutex`, wrapped so that the rest of the workspace names
    /// only the shim (which `clippy.toml` enforces).
    ///
    /// Kernel: `struct mutex` / `spinlock_t` in spirit (model only).
    #[derive(Debug, Default)]
    #[repr(transparent)]
    pub struct Mutex<T>(parking_lot::Mutex<T>);

    impl<T> Mutex<T> {
        /// Wraps `v`.
        #[inline]
        pub const fn new(v: T) -> Self {
            Mutex(parking_lot::Mutex::new(v))
        }

        /// Locks the mutex.
        #[inline]
        pub fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock()
        }

        /// Tries to lock the mutex without blocking.
        #[inline]
        pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock()
        }
    }

    /// `parking_lot::RwLock`, wrapped like [`Mutex`].
    ///
    /// Kernel: `struct rw_semaphore` in spirit (model only).
    #[derive(Debug, Default)]
    #[repr(transparent)]
    pub struct RwLock<T>(parking_lot::RwLock<T>);

    impl<T> RwLock<T> {
        /// Wraps `v`.
        #[inline]
        pub const fn new(v: T) -> Self {
            RwLock(parking_lot::RwLock::new(v))
        }

        /// Takes the lock shared.
        #[inline]
        pub fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read()
        }

        /// Takes the lock exclusive.
        #[inline]
        pub fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.0.write()
        }
    }

    /// Atomics: `std::sync::atomic`, wrapped (zero cost) so the rest of the
    /// workspace names only the shim.
    pub mod atomic {
        pub use std::sync::atomic::{Ordering, fence};

        macro_rules! wrap_atomic {
            ($(#[$m:meta])* $name:ident<$($g:ident)?>, $val:ty) => {
                $(#[$m])*
                #[derive(Debug, Default)]
                #[repr(transparent)]
                pub struct $name$(<$g>)?(std::sync::atomic::$name$(<$g>)?);

                impl$(<$g>)? $name$(<$g>)? {
                    /// A new atomic holding `v`.
                    #[inline]
                    pub const fn new(v: $val) -> Self {
                        $name(std::sync::atomic::$name::new(v))
                    }
                    /// Loads the value.
                    #[inline]
                    pub fn load(&self, order: Ordering) -> $val {
                        self.0.load(order)
                    }
                    /// Stores `v`.
                    #[inline]
                    pub fn store(&self, v: $val, order: Ordering) {
                        self.0.store(v, order);
                    }
                    /// Stores `v`, returning the previous value.
                    #[inline]
                    pub fn swap(&self, v: $val, order: Ordering) -> $val {
                        self.0.swap(v, order)
                    }
                    /// Stores `new` if the value is `current`.
                    ///
                    /// # Errors
                    ///
                    /// The value found, when it was not `current`.
                    #[inline]
                    pub fn compare_exchange(&self, current: $val, new: $val, success: Ordering, failure: Ordering) -> Result<$val, $val> {
                        self.0.compare_exchange(current, new, success, failure)
                    }
                }
            };
        }

        macro_rules! wrap_int_ops {
            ($name:ident, $val:ty) => {
                impl $name {
                    /// Adds `v` (wrapping), returning the previous value.
                    #[inline]
                    pub fn fetch_add(&self, v: $val, order: Ordering) -> $val {
                        self.0.fetch_add(v, order)
                    }
                    /// Subtracts `v` (wrapping), returning the previous value.
                    #[inline]
                    pub fn fetch_sub(&self, v: $val, order: Ordering) -> $val {
                        self.0.fetch_sub(v, order)
                    }
                    /// Bitwise OR, returning the previous value.
                    #[inline]
                    pub fn fetch_or(&self, v: $val, order: Ordering) -> $val {
                        self.0.fetch_or(v, order)
                    }
                    /// Bitwise AND, returning the previous value.
                    #[inline]
                    pub fn fetch_and(&self, v: $val, order: Ordering) -> $val {
                        self.0.fetch_and(v, order)
                    }
                }
            };
        }

        wrap_atomic!(
            /// `std::sync::atomic::AtomicBool`, wrapped.
            AtomicBool<>, bool
        );
        wrap_atomic!(
            /// `std::sync::atomic::AtomicU32`, wrapped.
            AtomicU32<>, u32
        );
        wrap_atomic!(
            /// `std::sync::atomic::AtomicU64`, wrapped.
            AtomicU64<>, u64
        );
        wrap_atomic!(
            /// `std::sync::atomic::AtomicUsize`, wrapped.
            AtomicUsize<>, usize
        );
        wrap_atomic!(
            /// `std::sync::atomic::AtomicPtr`, wrapped.
            AtomicPtr<T>, *mut T
        );
        wrap_int_ops!(AtomicU32, u32);
        wrap_int_ops!(AtomicU64, u64);
        wrap_int_ops!(AtomicUsize, usize);
    }

    /// Hint for one iteration of a busy-wait loop.
    ///
    /// Kernel: `cpu_relax()` (main).
    #[inline]
    pub fn spin_loop() {
        std::hint::spin_loop();
    }

    /// Gives up the CPU in a wait loop that may take a while.
    ///
    /// Kernel: `cond_resched()` (main).
    #[inline]
    pub fn yield_now() {
        std::thread::yield_now();
    }

    /// A small number that differs between threads, for picking a shard of
    /// a sharded counter. Stable for the life of the thread.
    ///
    /// Kernel: `smp_processor_id()` in spirit (per thread, not per CPU, main).
    #[inline]
    pub fn thread_shard() -> usize {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // Round-robin assignment, so that two threads rarely share a shard.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed);
        }
        SHARD.with(|s| *s)
    }

    /// `UnsafeCell` with loom's closure-based access API.
    ///
    /// Kernel: none (model only).
    #[derive(Debug, Default)]
    pub struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        /// Wraps `data`.
        #[inline]
        pub const fn new(data: T) -> Self {
            UnsafeCell(std::cell::UnsafeCell::new(data))
        }

        /// Runs `f` with a shared pointer to the contents.
        #[inline(always)]
        pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        /// Runs `f` with a mutable pointer to the contents.
        #[inline(always)]
        pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }

        /// Unwraps the value.
        pub fn into_inner(self) -> T {
            self.0.into_inner()
        }
    }

    /// Shards of a sharded counter (SRCU's reader counters, `PercpuRef`'s
    /// live counts): a thread uses shard `thread_shard() % SHARDS`.
    ///
    /// Kernel: one per CPU (`nr_cpu_ids`) in spirit (main).
    pub const SHARDS: usize = 16;

    /// A value that only loom sees: under `--cfg loom` a checked cell, so
    /// that loom reports an access not ordered with a conflicting one;
    /// otherwise zero-sized, and every access is free.
    ///
    /// Kernel: none (model only). It stands for memory whose lifetime a
    /// protocol guards (a pagemap that reclamation will free, a driver's
    /// bookkeeping that teardown hands back): the write at reclamation and
    /// the read in each user let loom check the ordering the kernel relies
    /// on, with no cost outside loom.
    #[derive(Default)]
    pub struct TrackedCell<T>(std::marker::PhantomData<T>);

    impl<T: Copy> TrackedCell<T> {
        /// A cell holding `v` (under loom).
        #[inline(always)]
        pub const fn new(v: T) -> Self {
            let _ = v;
            TrackedCell(std::marker::PhantomData)
        }

        /// Reads the value, a read loom checks; `None` outside loom, where
        /// nothing is stored.
        #[inline(always)]
        pub const fn get(&self) -> Option<T> {
            None
        }

        /// Writes `v`, a write loom checks (skipped while the thread is
        /// already panicking: a second loom report would abort); nothing
        /// outside loom.
        #[inline(always)]
        pub fn set(&self, v: T) {
            let _ = v;
        }
    }

    /// Frees `b`, which lock-free readers may have reached before it was
    /// unpublished. Under loom the memory is kept and `poison` runs
    /// instead, to overwrite the contents through a checked cell: a reader
    /// not ordered before the free is then a reported causality violation
    /// rather than a read of freed memory.
    ///
    /// Kernel: `kfree()` after a grace period (model only).
    #[inline]
    pub fn free_reachable<T>(b: Box<T>, poison: impl FnOnce(&T)) {
        let _ = poison;
        drop(b);
    }

    /// Backoff for a wait loop that may last as long as some other thread
    /// holds a resource: spin briefly, then yield, then sleep in 50 µs
    /// naps. Under loom it always yields.
    ///
    /// Kernel: none (the kernel sleeps on a wait queue).
    #[derive(Debug, Default)]
    pub struct Backoff {
        step: u32,
    }

    impl Backoff {
        const SPINS: u32 = 64;
        const YIELDS: u32 = 1024;

        /// A fresh backoff (starts by spinning).
        pub fn new() -> Self {
            Backoff { step: 0 }
        }

        /// Waits a little, longer each call.
        pub fn snooze(&mut self) {
            if self.step < Self::SPINS {
                spin_loop();
            } else {
                if self.step >= Self::SPINS + Self::YIELDS {
                    std::thread::sleep(std::time::Duration::from_micros(50));
                    return;
                }
                yield_now();
            }
            self.step += 1;
        }
    }

    /// When a bounded wait gives up.
    ///
    /// Kernel: the `timeout` of `wait_for_completion_timeout()` (main).
    #[derive(Debug)]
    pub struct Deadline(Option<std::time::Instant>);

    impl Deadline {
        /// `timeout` from now (never, if that overflows `Instant`).
        pub fn after(timeout: std::time::Duration) -> Self {
            Deadline(std::time::Instant::now().checked_add(timeout))
        }

        /// Whether the deadline has passed. Under loom, where time does not
        /// exist, a zero timeout passes at the first call and any other at
        /// the third (so a wait checks up to three times).
        pub fn passed(&mut self) -> bool {
            self.0.is_some_and(|d| std::time::Instant::now() >= d)
        }
    }
}

#[cfg(loom)]
#[allow(
    unsafe_code,
    reason = "TrackedCell: loom's checked cell (loom builds only)"
)]
mod imp {
    pub use loom::cell::UnsafeCell;
    pub use loom::sync::{MutexGuard, RwLockReadGuard, RwLockWriteGuard};

    /// Atomics: loom's checked atomics under `--cfg loom`.
    pub mod atomic {
        pub use loom::sync::atomic::{
            AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
        };
    }

    /// loom's scheduler is not fair: a wait loop must yield to it.
    ///
    /// Kernel: `cpu_relax()` (main).
    pub fn spin_loop() {
        loom::thread::yield_now();
    }

    /// See [`spin_loop`].
    ///
    /// Kernel: `cond_resched()` (main).
    pub fn yield_now() {
        loom::thread::yield_now();
    }

    /// A shard number derived from loom's thread index.
    ///
    /// Kernel: `smp_processor_id()` in spirit (main).
    ///
    /// The index comes from the id's `Debug` form (`ThreadId(N)`): hashing
    /// the id itself would mix in the execution number and make the model
    /// nondeterministic.
    pub fn thread_shard() -> usize {
        let id = format!("{:?}", loom::thread::current().id());
        id.bytes().filter(u8::is_ascii_digit).fold(0usize, |n, d| {
            n.wrapping_mul(10).wrapping_add(usize::from(d - b'0'))
        })
    }

    /// Two shards: each one multiplies loom's state space, and two still
    /// exercise the sum.
    pub const SHARDS: usize = 2;

    /// The loom side of `TrackedCell`: `loom::cell::UnsafeCell`.
    ///
    /// Kernel: none (model only).
    pub struct TrackedCell<T>(loom::cell::UnsafeCell<T>);

    // SAFETY: Every access goes through loom's checked cell. loom runs one
    // thread at a time and fails the model, before the access, when it is
    // not ordered with a conflicting one; that report is the point.
    unsafe impl<T: Send + Sync> Sync for TrackedCell<T> {}

    impl<T: Copy> TrackedCell<T> {
        /// A cell holding `v`.
        pub fn new(v: T) -> Self {
            TrackedCell(loom::cell::UnsafeCell::new(v))
        }

        /// Reads the value (a checked read).
        pub fn get(&self) -> Option<T> {
            // SAFETY: loom checks this read against every write first.
            Some(self.0.with(|p| unsafe { *p }))
        }

        /// Writes `v` (a checked write), unless the thread is panicking.
        pub fn set(&self, v: T) {
            // A second report while unwinding from the first would abort.
            if std::thread::panicking() {
                return;
            }
            // SAFETY: loom checks this write against every other access
            // first.
            self.0.with_mut(|p| unsafe { *p = v });
        }
    }

    impl<T: Copy + Default> Default for TrackedCell<T> {
        fn default() -> Self {
            TrackedCell::new(T::default())
        }
    }

    /// Poisons `b` through `poison` and keeps its memory (see the
    /// non-loom docs); does nothing while panicking.
    pub fn free_reachable<T>(b: Box<T>, poison: impl FnOnce(&T)) {
        // A second report while unwinding from the first would abort.
        if !std::thread::panicking() {
            poison(&b);
        }
        // Leaked: a late reader must find the poison, not freed memory.
        Box::leak(b);
    }

    /// Backoff for a wait loop: under loom, always a yield.
    #[derive(Debug, Default)]
    pub struct Backoff;

    impl Backoff {
        /// A fresh backoff.
        pub fn new() -> Self {
            Backoff
        }

        /// Yields to loom's scheduler.
        pub fn snooze(&mut self) {
            loom::thread::yield_now();
        }
    }

    /// A bounded wait under loom: a number of checks, not a time.
    #[derive(Debug)]
    pub struct Deadline(u32);

    impl Deadline {
        /// One check for a zero timeout, three for any other.
        pub fn after(timeout: std::time::Duration) -> Self {
            Deadline(if timeout.is_zero() { 1 } else { 3 })
        }

        /// `true` at the last allowed check.
        pub fn passed(&mut self) -> bool {
            self.0 = self.0.saturating_sub(1);
            self.0 == 0
        }
    }

    /// `parking_lot`-shaped wrapper over `loom::sync::Mutex`.
    ///
    /// Kernel: none (model only).
    #[derive(Debug, Default)]
    pub struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        /// Wraps `v`.
        pub fn new(v: T) -> Self {
            Mutex(loom::sync::Mutex::new(v))
        }

        /// Locks the mutex.
        ///
        /// # Panics
        ///
        /// Never in practice: the shim has no poisoning, and a panic while
        /// holding the lock already fails the loom model.
        #[track_caller]
        pub fn lock(&self) -> MutexGuard<'_, T> {
            self.0
                .lock()
                .expect("loom mutex poisoned: a model already panicked")
        }

        /// Tries to lock the mutex without blocking.
        pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock().ok()
        }
    }

    /// `parking_lot`-shaped wrapper over `loom::sync::RwLock`.
    ///
    /// Kernel: none (model only).
    #[derive(Debug, Default)]
    pub struct RwLock<T>(loom::sync::RwLock<T>);

    impl<T> RwLock<T> {
        /// Wraps `v`.
        pub fn new(v: T) -> Self {
            RwLock(loom::sync::RwLock::new(v))
        }

        /// Takes the lock shared.
        ///
        /// # Panics
        ///
        /// As [`Mutex::lock`].
        #[track_caller]
        pub fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0
                .read()
                .expect("loom rwlock poisoned: a model already panicked")
        }

        /// Takes the lock exclusive.
        ///
        /// # Panics
        ///
        /// As [`Mutex::lock`].
        #[track_caller]
        pub fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.0
                .write()
                .expect("loom rwlock poisoned: a model already panicked")
        }
    }
}

pub use imp::*;

impl<T> std::fmt::Debug for TrackedCell<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrackedCell")
    }
}
