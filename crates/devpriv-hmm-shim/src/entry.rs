//! The C ABI: the interposed functions, exported under their libc names.
//!
//! Each function here checks whether the call concerns the shim (a dmirror
//! path or descriptor, or any mapping call once the shim is active), takes
//! the shim's lock and hands over to `shim::Shim`; otherwise it makes the real
//! system call. Variadic functions (`open`, `openat`, `ioctl`, `mremap`)
//! are naked trampolines into `csrc/variadic.c`, which forwards to the
//! `devpriv_shim_*` functions below with the optional argument read.
//!
//! # Re-entrancy
//!
//! A thread-local flag marks a thread that is inside the shim (holding its
//! lock). Calls made from inside (by the model, by Rust's standard
//! library) go straight to the real system calls. A `SIGSEGV` on such a
//! thread is a bug in the shim: it is reported and the process aborts.

use crate::shim::Shim;
use crate::signal;
use crate::sys;
use core::cell::Cell;
use core::ffi::{CStr, c_char, c_int, c_void};
use devpriv_core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use devpriv_core::sync::{Mutex, MutexGuard};

/// The process's shim, made on the first open of a dmirror unit.
///
/// A process-wide static is unavoidable for an `LD_PRELOAD` library: the
/// interposed functions have no context argument.
pub(crate) static SHIM: Mutex<Option<Shim>> = Mutex::new(None);

/// Set once the shim exists: from then on mappings are tracked.
pub(crate) static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Descriptors the shim serves: `unit + 1`, or 0.
const MAX_FDS: usize = 4096;
static FD_UNIT: [AtomicU32; MAX_FDS] = [const { AtomicU32::new(0) }; MAX_FDS];

thread_local! {
    static IN_SHIM: Cell<bool> = const { Cell::new(false) };
}

/// `true` if this thread is inside the shim.
pub(crate) fn in_shim() -> bool {
    IN_SHIM.with(Cell::get)
}

/// This thread inside the shim, holding its lock.
pub(crate) struct Inside {
    guard: MutexGuard<'static, Option<Shim>>,
}

impl Inside {
    /// Enters the shim (takes its lock). `None` if this thread is already
    /// inside.
    pub(crate) fn enter() -> Option<Inside> {
        if in_shim() {
            return None;
        }
        IN_SHIM.with(|c| c.set(true));
        Some(Inside { guard: SHIM.lock() })
    }

    /// The shim, if it exists.
    pub(crate) fn shim(&mut self) -> Option<&mut Shim> {
        self.guard.as_mut()
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        IN_SHIM.with(|c| c.set(false));
    }
}

fn fd_unit(fd: c_int) -> Option<usize> {
    let i = usize::try_from(fd).ok().filter(|&i| i < MAX_FDS)?;
    let u = FD_UNIT[i].load(Ordering::Acquire);
    (u != 0).then(|| usize::try_from(u - 1).unwrap_or(usize::MAX))
}

fn set_fd_unit(fd: c_int, unit: Option<usize>) {
    if let Ok(i) = usize::try_from(fd)
        && i < MAX_FDS
    {
        let v = unit.and_then(|u| u32::try_from(u + 1).ok()).unwrap_or(0);
        FD_UNIT[i].store(v, Ordering::Release);
    }
}

/// Opens unit `unit`, making the shim first if needed.
fn open_unit(unit: usize) -> c_int {
    let Some(mut inside) = Inside::enter() else {
        sys::set_errno(libc::EBUSY);
        return -1;
    };
    if inside.shim().is_none() {
        sys::init_next();
        match Shim::new() {
            Ok(s) => *inside.guard = Some(s),
            Err(e) => {
                sys::say(&format!("cannot start the model: {e}"));
                sys::set_errno(libc::ENODEV);
                return -1;
            }
        }
        signal::install();
        ACTIVE.store(true, Ordering::Release);
    }
    let Some(shim) = inside.shim() else {
        return -1;
    };
    let fd = shim.open_dmirror(unit);
    if fd >= 0 {
        if usize::try_from(fd).is_ok_and(|i| i < MAX_FDS) {
            set_fd_unit(fd, Some(unit));
        } else {
            shim.close_dmirror(fd);
            let _ = sys::close(fd);
            sys::set_errno(libc::EMFILE);
            return -1;
        }
    }
    fd
}

/// `openat()` with the optional mode read (from `csrc/variadic.c`).
///
/// `/dev/hmm_dmirror0` and `1` are the model's devices. `/dev/hmm_dmirror2`
/// and `3` (device-coherent units) and `/sys/kernel/debug/gup_test` fail
/// with `ENOENT`, as on a kernel without device-coherent memory and
/// without `CONFIG_GUP_TEST`, even where real ones exist. Everything else
/// is the real call.
///
/// # Safety
///
/// As for `openat()`: `path` is a NUL-terminated string (or a pointer the
/// kernel will refuse with `EFAULT`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devpriv_shim_openat(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: u32,
) -> c_int {
    if !path.is_null() && !in_shim() {
        // SAFETY: the caller passes a NUL-terminated path.
        let p = unsafe { CStr::from_ptr(path) }.to_bytes();
        match p {
            b"/dev/hmm_dmirror0" => return open_unit(0),
            b"/dev/hmm_dmirror1" => return open_unit(1),
            b"/dev/hmm_dmirror2" | b"/dev/hmm_dmirror3" | b"/sys/kernel/debug/gup_test" => {
                sys::say(&format!(
                    "refused {} (the model has no device-coherent memory and no gup_test: ENOENT)",
                    String::from_utf8_lossy(p)
                ));
                sys::set_errno(libc::ENOENT);
                return -1;
            }
            _ => {}
        }
    }
    // SAFETY: forwarded as the caller made it.
    unsafe { sys::openat(dirfd, path, flags, mode) }
}

/// `ioctl()` with its argument read (from `csrc/variadic.c`).
///
/// # Safety
///
/// As for `ioctl()`: `arg` is what the request expects (for a dmirror
/// descriptor, a `struct hmm_dmirror_cmd`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devpriv_shim_ioctl(fd: c_int, req: u64, arg: *mut c_void) -> c_int {
    if fd_unit(fd).is_some()
        && let Some(mut inside) = Inside::enter()
        && let Some(shim) = inside.shim()
    {
        // SAFETY: the caller passes a command struct; `Shim::ioctl`
        // refuses one inside tracked memory.
        return match unsafe { shim.ioctl(fd, req, arg as u64) } {
            Ok(()) => 0,
            Err(e) => {
                sys::set_errno(e);
                -1
            }
        };
    }
    // SAFETY: forwarded as the caller made it.
    unsafe { sys::ioctl(fd, req, arg) }
}

/// `mremap()` with the new address read (from `csrc/variadic.c`).
///
/// # Safety
///
/// As for `mremap()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devpriv_shim_mremap(
    old: *mut c_void,
    old_len: usize,
    new_len: usize,
    flags: c_int,
    new: *mut c_void,
) -> *mut c_void {
    let (o, ol, nl, n) = (old as u64, old_len as u64, new_len as u64, new as u64);
    if ACTIVE.load(Ordering::Acquire)
        && let Some(mut inside) = Inside::enter()
        && let Some(shim) = inside.shim()
        && shim.is_tracked(o)
    {
        return match shim.mremap(o, ol, nl, flags, n) {
            Some(a) => a as *mut c_void,
            None => libc::MAP_FAILED,
        };
    }
    match sys::mremap(o, ol, nl, flags, n) {
        Some(a) => a as *mut c_void,
        None => libc::MAP_FAILED,
    }
}

/// Interposed `close()`: the last close of a dmirror descriptor releases
/// the mirror (the driver's `release`).
#[unsafe(no_mangle)]
pub extern "C" fn close(fd: c_int) -> c_int {
    if fd_unit(fd).is_some()
        && let Some(mut inside) = Inside::enter()
    {
        if let Some(shim) = inside.shim() {
            shim.close_dmirror(fd);
        }
        set_fd_unit(fd, None);
    }
    sys::close(fd)
}

/// Interposed `mmap()`: once the shim is active every new mapping is
/// mirrored in the model.
#[unsafe(no_mangle)]
pub extern "C" fn mmap(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: libc::off_t,
) -> *mut c_void {
    let (a, l) = (addr as u64, len as u64);
    let r = if ACTIVE.load(Ordering::Acquire)
        && let Some(mut inside) = Inside::enter()
        && let Some(shim) = inside.shim()
    {
        shim.mmap(a, l, prot, flags, fd, off)
    } else {
        sys::mmap(a, l, prot, flags, fd, off)
    };
    r.map_or(libc::MAP_FAILED, |a| a as *mut c_void)
}

/// Interposed `mmap64()` (the same on 64-bit).
#[unsafe(no_mangle)]
pub extern "C" fn mmap64(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: libc::off_t,
) -> *mut c_void {
    mmap(addr, len, prot, flags, fd, off)
}

/// Interposed `munmap()`.
#[unsafe(no_mangle)]
pub extern "C" fn munmap(addr: *mut c_void, len: usize) -> c_int {
    let (a, l) = (addr as u64, len as u64);
    if ACTIVE.load(Ordering::Acquire)
        && let Some(mut inside) = Inside::enter()
        && let Some(shim) = inside.shim()
    {
        return shim.munmap(a, l);
    }
    sys::munmap(a, l)
}

/// Interposed `mprotect()`.
#[unsafe(no_mangle)]
pub extern "C" fn mprotect(addr: *mut c_void, len: usize, prot: c_int) -> c_int {
    let (a, l) = (addr as u64, len as u64);
    if ACTIVE.load(Ordering::Acquire)
        && let Some(mut inside) = Inside::enter()
        && let Some(shim) = inside.shim()
    {
        return shim.mprotect(a, l, prot);
    }
    sys::mprotect(a, l, prot)
}

/// Interposed `madvise()`.
#[unsafe(no_mangle)]
pub extern "C" fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int {
    let (a, l) = (addr as u64, len as u64);
    if ACTIVE.load(Ordering::Acquire)
        && let Some(mut inside) = Inside::enter()
        && let Some(shim) = inside.shim()
    {
        return shim.madvise(a, l, advice);
    }
    sys::madvise(a, l, advice)
}

/// Interposed `fork()`: the model forks the address space first (under
/// the shim's lock, so no model state is half-changed in the child), then
/// the real `fork()`; each side then takes its own address space.
#[unsafe(no_mangle)]
pub extern "C" fn fork() -> libc::pid_t {
    if !ACTIVE.load(Ordering::Acquire) {
        return sys::fork();
    }
    let Some(mut inside) = Inside::enter() else {
        return sys::fork();
    };
    let child_mm = inside.shim().and_then(Shim::fork_prepare);
    let pid = sys::fork();
    if let (Some(shim), Some(child)) = (inside.shim(), child_mm) {
        match pid {
            0 => shim.fork_child(child),
            p if p > 0 => shim.fork_parent(p, child),
            _ => {}
        }
    }
    pid
}

/// Interposed `waitpid()`: a reaped child's address space goes.
///
/// # Safety
///
/// As for `waitpid()`: `status` is null or valid for one `int`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn waitpid(
    pid: libc::pid_t,
    status: *mut c_int,
    options: c_int,
) -> libc::pid_t {
    // SAFETY: forwarded as the caller made it.
    let r = unsafe { sys::waitpid(pid, status, options) };
    if r > 0 && ACTIVE.load(Ordering::Acquire) {
        let ended = if status.is_null() {
            options & (libc::WUNTRACED | libc::WCONTINUED) == 0
        } else {
            // SAFETY: `waitpid` filled `*status`.
            let s = unsafe { *status };
            libc::WIFEXITED(s) || libc::WIFSIGNALED(s)
        };
        if ended
            && let Some(mut inside) = Inside::enter()
            && let Some(shim) = inside.shim()
        {
            shim.reap(r);
        }
    }
    r
}

// The exported variadic symbols: naked trampolines into csrc/variadic.c,
// which reads the optional argument with va_arg. A jump keeps the caller's
// registers and stack exactly as the variadic call left them.

macro_rules! trampoline {
    ($name:ident, $target:ident) => {
        unsafe extern "C" {
            fn $target();
        }
        #[doc = concat!("Interposed `", stringify!($name), "()`: jumps to the C function that reads its variadic argument.")]
        ///
        /// # Safety
        ///
        /// As for the libc function of the same name.
        #[unsafe(no_mangle)]
        #[unsafe(naked)]
        pub unsafe extern "C" fn $name() {
            #[cfg(target_arch = "x86_64")]
            core::arch::naked_asm!("jmp {}", sym $target);
            #[cfg(target_arch = "aarch64")]
            core::arch::naked_asm!("b {}", sym $target);
        }
    };
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("devpriv-hmm-shim supports x86_64 and aarch64 Linux");

trampoline!(open, devpriv_c_open);
trampoline!(open64, devpriv_c_open64);
trampoline!(openat, devpriv_c_openat);
trampoline!(openat64, devpriv_c_openat64);
trampoline!(__open_2, devpriv_c___open_2);
trampoline!(__open64_2, devpriv_c___open64_2);
trampoline!(ioctl, devpriv_c_ioctl);
trampoline!(mremap, devpriv_c_mremap);
