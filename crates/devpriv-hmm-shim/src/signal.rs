//! The `SIGSEGV` handler: CPU accesses to tracked pages that trap run the
//! model's fault path.
//!
//! # Why running the model in a signal handler is sound here
//!
//! The handler takes the shim's lock and runs model code, which allocates.
//! That is not async-signal-safe in general; it is sound here because of
//! where tracked faults come from:
//!
//! - A tracked page traps only on a plain load or store by the program
//!   itself (the HMM tests' `ptr[i]` loops). The shim never touches
//!   tracked memory directly while holding its lock: it reads and writes
//!   tracked pages through `/proc/self/mem` or after lifting the
//!   protection, and it refuses command buffers in tracked memory. So the
//!   interrupted code holds neither the shim's lock nor (since libc does
//!   not touch the program's tracked buffers either) malloc's or stdio's.
//! - A fault inside the shim (a bug) finds the thread-local "inside" flag
//!   set: the handler reports it and aborts instead of deadlocking.
//! - Another thread holding the lock is simply waited for: the handler
//!   runs on the faulting thread with no lock of its own held.
//!
//! A fault the model refuses (no VMA, or the VMA forbids the access) is a
//! genuine `SIGSEGV`: the previous action is put back and the instruction
//! re-executed, so the process gets exactly the signal it would get
//! without the shim. A system call given tracked memory whose real page is
//! protected gets `EFAULT` instead of faulting through the model: a
//! documented limitation (the HMM tests never do that).

use crate::entry::{Inside, in_shim};
use crate::sys;
use core::ffi::{c_int, c_void};
use std::sync::OnceLock;

/// `si_code` of a SIGSEGV on a mapped page the access is not allowed to
/// (`SEGV_ACCERR`, `include/uapi/asm-generic/siginfo.h`).
const SEGV_ACCERR: c_int = 2;

/// The action before ours.
static OLD: OnceLock<libc::sigaction> = OnceLock::new();

/// Installs the handler (`SA_SIGINFO`, no `SA_NODEFER`: a fault inside it
/// kills the process rather than recursing).
pub(crate) fn install() {
    // SAFETY: an all-zero `struct sigaction` is a valid value.
    let mut sa: libc::sigaction = unsafe { core::mem::zeroed() };
    sa.sa_sigaction = on_segv as *const () as usize;
    sa.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `sa.sa_mask` is valid for writes.
    unsafe { libc::sigemptyset(&raw mut sa.sa_mask) };
    // SAFETY: as above.
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: `sa` is initialised; `old` is valid for one `struct
    // sigaction` of writes.
    if unsafe { libc::sigaction(libc::SIGSEGV, &raw const sa, &raw mut old) } == 0 {
        let _ = OLD.set(old);
    }
}

/// Puts the previous action back, so the re-executed access gets the real
/// signal.
fn restore() {
    if let Some(old) = OLD.get() {
        // SAFETY: `old` is the action `sigaction` gave us.
        unsafe { libc::sigaction(libc::SIGSEGV, old, core::ptr::null_mut()) };
    }
}

/// `true` if the trapped access was a write (x86-64: bit 1 of the page
/// fault error code). Elsewhere `false`: the shim then infers a write from
/// the page already being readable.
fn is_write(uctx: *mut c_void) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if uctx.is_null() {
            return false;
        }
        // SAFETY: the kernel passes a valid `ucontext_t` to an
        // `SA_SIGINFO` handler.
        let uc = unsafe { &*uctx.cast::<libc::ucontext_t>() };
        uc.uc_mcontext.gregs[libc::REG_ERR as usize] & 2 != 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = uctx;
        false
    }
}

extern "C" fn on_segv(_sig: c_int, info: *mut libc::siginfo_t, uctx: *mut c_void) {
    if info.is_null() {
        restore();
        return;
    }
    // SAFETY: the kernel passes a valid `siginfo_t` for SIGSEGV.
    let info = unsafe { &*info };
    let code = info.si_code;
    // SAFETY: `si_addr` is the field SIGSEGV fills.
    let addr = unsafe { info.si_addr() } as u64;
    if code != SEGV_ACCERR {
        restore();
        return;
    }
    if in_shim() {
        sys::say(&format!(
            "SIGSEGV at {addr:#x} inside the shim: a bug; aborting"
        ));
        std::process::abort();
    }
    let write = is_write(uctx);
    let handled = std::panic::catch_unwind(|| {
        let mut inside = Inside::enter()?;
        let shim = inside.shim()?;
        Some(shim.fault(addr, write))
    });
    match handled {
        Ok(Some(true)) => {}
        Ok(_) => restore(),
        Err(_) => {
            sys::say(&format!(
                "panic while handling a fault at {addr:#x}; aborting"
            ));
            std::process::abort();
        }
    }
}
