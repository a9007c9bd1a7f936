//! The one place where locks, atomics and checked cells come from.
//!
//! Kernel: none (model only). This is the C harness's `vma_internal.h` trick
//! in Rust form: normal builds get `parking_lot` and `std`; `--cfg loom`
//! builds get loom's checked versions, so every protocol in the workspace
//! is visible to the model checker. `clippy.toml` bans the underlying
//! types everywhere else.
//!
//! Both sides expose one `parking_lot`-shaped API (no lock poisoning).

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
    /// Kernel: `cpu_relax()`.
    #[inline]
    pub fn spin_loop() {
        std::hint::spin_loop();
    }

    /// Gives up the CPU in a wait loop that may take a while.
    ///
    /// Kernel: `cond_resched()`.
    #[inline]
    pub fn yield_now() {
        std::thread::yield_now();
    }

    /// A small number that differs between threads, for picking a shard of
    /// a sharded counter. Stable for the life of the thread.
    ///
    /// Kernel: `smp_processor_id()` in spirit (per thread, not per CPU).
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
}

#[cfg(loom)]
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
    /// Kernel: `cpu_relax()`.
    pub fn spin_loop() {
        loom::thread::yield_now();
    }

    /// See [`spin_loop`].
    ///
    /// Kernel: `cond_resched()`.
    pub fn yield_now() {
        loom::thread::yield_now();
    }

    /// A shard number derived from loom's thread index.
    ///
    /// Kernel: `smp_processor_id()` in spirit.
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
