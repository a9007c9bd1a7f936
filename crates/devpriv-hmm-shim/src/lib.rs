//! devpriv-hmm-shim: an `LD_PRELOAD` library that stands in for the
//! kernel's `test_hmm` driver, so that the kernel's own HMM selftest,
//! `tools/testing/selftests/mm/hmm-tests.c`, built unmodified with the
//! kselftest harness, runs against the devpriv model.
//!
//! Kernel: `lib/test_hmm.c` (7.0, as the model's dmirror has it) and
//! `lib/test_hmm_uapi.h` (the 6.12 ABI, which later trees extend): the
//! device files and ioctls it provides; and the parts of the kernel the
//! test reaches through system calls (`mmap`, `mprotect`, `mremap`,
//! `madvise`, `fork`, page faults; main).
//!
//! Dev-only (`publish = false`); the model crates stay free of `unsafe`.
//! Run it with `bash ci/hmm-tests.sh` (docs/testing.md).
//!
//! # What it does
//!
//! - `/dev/hmm_dmirror0` and `1` open as two device-private dmirror
//!   devices of the model ([`devpriv_drivers::test_hmm`]); `2` and `3`
//!   fail to open, so the harness skips the device-coherent variant.
//! - From that first open on, every mapping the process makes is mirrored
//!   into the model's address space ([`devpriv_migrate::Mm`]). Real pages
//!   get protections computed from the model's page table: a page the
//!   model has not mapped, or has moved to the device, is `PROT_NONE`;
//!   the CPU's access traps (`SIGSEGV`) and runs the model's
//!   `handle_mm_fault()` (`do_swap_page()` → `migrate_to_ram`, COW, ...);
//!   the bytes follow.
//! - The model's one data word per page is a handle to 4 KiB of real
//!   bytes kept by the shim, so the model's API is unchanged.
//! - `fork()` forks the model's address space first; `waitpid()` reaps a
//!   child's.
//! - The shim's own memory is apart from the program's `malloc()` heap
//!   (module `alloc`), so a program that overruns one of its buffers corrupts
//!   its heap, as it would on a real kernel, not the model.
//!
//! # `unsafe` and Miri
//!
//! The crate is FFI by nature (it defines `open`, `ioctl`, `mmap`, ...
//! for the dynamic linker, calls raw system calls, installs a `SIGSEGV`
//! handler and has its own allocator), so it cannot `forbid(unsafe_code)`;
//! every `unsafe` block carries a `// SAFETY:` comment. Miri cannot run
//! it: it does not execute foreign functions or raw `syscall(2)`s
//! (`mmap`, `mprotect`, `/proc/self/mem`), signal handlers, `fork`, or a
//! process under `LD_PRELOAD`. So `ci/miri.sh` leaves it out; its checks
//! are the unit tests (the allocator and the page store, run natively),
//! the C programs of `tests/smoke.rs`, and the kernel's own test in
//! `ci/hmm-tests.sh`. The model crates it drives stay `unsafe`-free and
//! run under Miri as usual.
//!
//! The shim translates and copies; it decides nothing. See
//! module `shim` for the rules and the three capability refusals, and
//! module `signal` for why the fault handler may run the model.

pub(crate) mod alloc;
// Unit tests leave the exported entry points out (they would interpose
// the test binary's own libc calls), so much of these is unused there.
#[cfg_attr(
    test,
    allow(dead_code, reason = "used by the entry points, left out of unit tests")
)]
pub(crate) mod shim;
pub(crate) mod store;
#[cfg_attr(
    test,
    allow(dead_code, reason = "used by the entry points, left out of unit tests")
)]
pub(crate) mod sys;

#[cfg(not(test))]
pub mod entry;
#[cfg(not(test))]
pub(crate) mod signal;

/// Every Rust allocation of the shim comes from its own mappings, apart
/// from the program's `malloc()` heap (see [`alloc`]).
#[cfg(not(test))]
#[global_allocator]
static GLOBAL: alloc::ShimAlloc = alloc::ShimAlloc::new();
