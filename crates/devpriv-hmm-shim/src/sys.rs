//! The real system calls behind the interposed functions, and the shim's
//! own access to the process's memory.
//!
//! Interposed names (`open`, `close`, `mmap`, ...) resolve to the shim
//! itself, so the real calls go through `syscall(2)` directly (or, for
//! `fork` and `waitpid`, whose glibc wrappers do more than the system call,
//! through `dlsym(RTLD_NEXT)`). Every function here is safe to call: the
//! kernel checks its pointer arguments, or the function documents what it
//! touches.

use crate::store::{PAGE, PageBytes};
use core::ffi::{c_char, c_int, c_long, c_void};
use std::sync::OnceLock;

/// Sets `errno`.
pub(crate) fn set_errno(e: c_int) {
    // SAFETY: `__errno_location()` has no preconditions.
    let p = unsafe { libc::__errno_location() };
    // SAFETY: it returns this thread's errno, always valid for writes.
    unsafe { *p = e };
}

/// `errno` of the last failed call.
pub(crate) fn errno() -> c_int {
    // SAFETY: `__errno_location()` has no preconditions.
    let p = unsafe { libc::__errno_location() };
    // SAFETY: it returns this thread's errno, always valid for reads.
    unsafe { *p }
}

/// A raw system call's `long` result as an `int` (`-1` on error).
fn as_int(r: c_long) -> c_int {
    c_int::try_from(r).unwrap_or(-1)
}

/// `openat(2)`.
///
/// # Safety
///
/// `path` is a NUL-terminated string or null (the kernel reports `EFAULT`
/// for a bad pointer).
pub(crate) unsafe fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: u32) -> c_int {
    // SAFETY: the kernel validates every argument; `path` is only read.
    as_int(unsafe { libc::syscall(libc::SYS_openat, dirfd, path, flags, mode) })
}

/// `close(2)`.
pub(crate) fn close(fd: c_int) -> c_int {
    // SAFETY: closing a file descriptor touches no memory.
    as_int(unsafe { libc::syscall(libc::SYS_close, fd) })
}

/// `ioctl(2)`, for file descriptors that are not the shim's.
///
/// # Safety
///
/// As for the caller's `ioctl()`: `arg` is what the request expects.
pub(crate) unsafe fn ioctl(fd: c_int, req: u64, arg: *mut c_void) -> c_int {
    // SAFETY: forwarded as the caller made it.
    as_int(unsafe { libc::syscall(libc::SYS_ioctl, fd, req, arg) })
}

/// `mmap(2)`; returns the address, or `None` (errno set).
pub(crate) fn mmap(
    addr: u64,
    len: u64,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: i64,
) -> Option<u64> {
    // SAFETY: creating a mapping changes the address space only where the
    // caller asked (or where the kernel chooses, with no MAP_FIXED); it
    // dereferences nothing.
    let r = unsafe { libc::syscall(libc::SYS_mmap, addr, len, prot, flags, fd, off) };
    u64::try_from(r).ok()
}

/// `munmap(2)`.
pub(crate) fn munmap(addr: u64, len: u64) -> c_int {
    // SAFETY: unmapping is the caller's request, passed on unchanged.
    as_int(unsafe { libc::syscall(libc::SYS_munmap, addr, len) })
}

/// `mprotect(2)`.
pub(crate) fn mprotect(addr: u64, len: u64, prot: c_int) -> c_int {
    // SAFETY: changes protections only; touches no memory.
    as_int(unsafe { libc::syscall(libc::SYS_mprotect, addr, len, prot) })
}

/// `madvise(2)`.
pub(crate) fn madvise(addr: u64, len: u64, advice: c_int) -> c_int {
    // SAFETY: the caller's request, passed on unchanged.
    as_int(unsafe { libc::syscall(libc::SYS_madvise, addr, len, advice) })
}

/// `mremap(2)`; returns the new address, or `None` (errno set).
pub(crate) fn mremap(old: u64, old_len: u64, new_len: u64, flags: c_int, new: u64) -> Option<u64> {
    // SAFETY: the caller's request, passed on unchanged.
    let r = unsafe { libc::syscall(libc::SYS_mremap, old, old_len, new_len, flags, new) };
    u64::try_from(r).ok()
}

/// `memfd_create(2)`: the file behind a fake `/dev/hmm_dmirrorN`.
pub(crate) fn memfd_create(name: &core::ffi::CStr) -> c_int {
    // SAFETY: `name` is NUL-terminated and only read.
    as_int(unsafe { libc::syscall(libc::SYS_memfd_create, name.as_ptr(), 0) })
}

/// `pread(2)` of one page at byte `off` of `fd`; bytes past the end of a
/// file read as zeros.
pub(crate) fn pread_page(fd: c_int, off: u64) -> Option<PageBytes> {
    let mut buf = [0u8; PAGE];
    let off = i64::try_from(off).ok()?;
    // SAFETY: `buf` is valid for `PAGE` bytes of writes.
    let r = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), PAGE, off) };
    (r >= 0).then_some(buf)
}

/// `pwrite(2)` of one page at byte `off` of `fd`; `true` if it all went.
pub(crate) fn pwrite_page(fd: c_int, off: u64, bytes: &PageBytes) -> bool {
    let Ok(off) = i64::try_from(off) else {
        return false;
    };
    // SAFETY: `bytes` is valid for `PAGE` bytes of reads.
    let r = unsafe { libc::pwrite(fd, bytes.as_ptr().cast(), PAGE, off) };
    usize::try_from(r) == Ok(PAGE)
}

/// `fstat(2)`: the `(st_dev, st_ino)` of a file.
pub(crate) fn file_id(fd: c_int) -> Option<(u64, u64)> {
    let mut st = core::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `st` is valid for one `struct stat` of writes.
    let r = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    if r != 0 {
        return None;
    }
    // SAFETY: `fstat` succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Some((st.st_dev, st.st_ino))
}

/// `dup(2)`.
pub(crate) fn dup(fd: c_int) -> c_int {
    // SAFETY: duplicating a descriptor touches no memory.
    unsafe { libc::dup(fd) }
}

/// `getpid(2)`.
pub(crate) fn getpid() -> c_int {
    // SAFETY: no arguments.
    unsafe { libc::getpid() }
}

/// Opens `/proc/self/mem` for reading and writing this process's memory
/// whatever its protection (`FOLL_FORCE`).
pub(crate) fn open_proc_self_mem() -> c_int {
    // SAFETY: a NUL-terminated literal.
    unsafe {
        openat(
            libc::AT_FDCWD,
            c"/proc/self/mem".as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC,
            0,
        )
    }
}

/// Copies `len` bytes from the process at `src` (memory the shim does not
/// track: a command buffer) into a new vector.
///
/// # Safety
///
/// `[src, src + len)` is readable memory of the process that no other
/// thread changes meanwhile (the kernel's `copy_from_user()` would fault;
/// the caller has checked that the range is not tracked memory).
pub(crate) unsafe fn copy_from_user(src: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    // SAFETY: the caller guarantees the source; `v` has `len` bytes.
    unsafe { core::ptr::copy_nonoverlapping(src as *const u8, v.as_mut_ptr(), len) };
    v
}

/// Copies `bytes` to the process at `dst`.
///
/// # Safety
///
/// `[dst, dst + bytes.len())` is writable memory of the process, not
/// tracked by the shim, that no other thread uses meanwhile.
pub(crate) unsafe fn copy_to_user(dst: u64, bytes: &[u8]) {
    // SAFETY: the caller guarantees the destination.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), dst as *mut u8, bytes.len()) };
}

/// The real `fork()` and `waitpid()` (glibc's: they run the `atfork`
/// handlers and reap properly).
struct Next {
    fork: unsafe extern "C" fn() -> libc::pid_t,
    waitpid: unsafe extern "C" fn(libc::pid_t, *mut c_int, c_int) -> libc::pid_t,
}

static NEXT: OnceLock<Next> = OnceLock::new();

fn next() -> &'static Next {
    NEXT.get_or_init(|| {
        // SAFETY: `dlsym(RTLD_NEXT, name)` with NUL-terminated names.
        let f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"fork".as_ptr()) };
        // SAFETY: as above.
        let w = unsafe { libc::dlsym(libc::RTLD_NEXT, c"waitpid".as_ptr()) };
        assert!(
            !f.is_null() && !w.is_null(),
            "devpriv-hmm-shim: no fork/waitpid in libc"
        );
        Next {
            // SAFETY: glibc's `fork`, of this type.
            fork: unsafe {
                core::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> libc::pid_t>(f)
            },
            // SAFETY: glibc's `waitpid`, of this type.
            waitpid: unsafe {
                core::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(libc::pid_t, *mut c_int, c_int) -> libc::pid_t,
                >(w)
            },
        }
    })
}

/// Resolves the real `fork` and `waitpid` now (so the first `fork` does
/// not call `dlsym` with the shim's lock held).
pub(crate) fn init_next() {
    let _ = next();
}

/// The real `fork()`.
pub(crate) fn fork() -> libc::pid_t {
    // SAFETY: glibc's `fork()` takes no arguments.
    unsafe { (next().fork)() }
}

/// The real `waitpid()`.
///
/// # Safety
///
/// `status` is null or valid for one `int` of writes.
pub(crate) unsafe fn waitpid(pid: libc::pid_t, status: *mut c_int, options: c_int) -> libc::pid_t {
    // SAFETY: the caller guarantees `status`.
    unsafe { (next().waitpid)(pid, status, options) }
}

/// Writes a line to stderr without buffering (diagnostics, also from the
/// signal handler).
pub(crate) fn say(msg: &str) {
    let line = format!("devpriv-hmm-shim: {msg}\n");
    // SAFETY: `line` is valid for its length; fd 2 may be closed, which
    // is harmless.
    let _ = unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}
