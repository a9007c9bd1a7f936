//! The shim's own heap, apart from the process's `malloc()` heap.
//!
//! The program under test shares its address space with the shim. If the
//! shim's (and the model's) objects lived in glibc's heap, a bug of the
//! program's that writes past one of its `malloc()` blocks would corrupt
//! the model instead of glibc's heap. That happens in practice: 6.12's
//! `hmm2.snapshot` migrates one page into a 7-byte buffer, so the driver's
//! `copy_to_user()` of the page (which the shim performs as the driver
//! would) writes 4096 bytes from a 7-byte `malloc()` block; on a real
//! kernel that lands in glibc's heap and goes unnoticed. So every Rust
//! allocation of the shim comes from private anonymous mappings made with
//! raw `mmap(2)`, never from glibc.
//!
//! Small blocks (up to 64 KiB) come from power-of-two size classes carved
//! out of 1 MiB pieces and kept on free lists; larger ones (or alignment
//! above a page) are pieces of their own.
//!
//! Every piece comes from one address-space reservation made on first use
//! ([`RESERVE`] bytes, `PROT_NONE`, `MAP_NORESERVE`), handed out by a bump
//! pointer and never reused. Were pieces placed by the kernel wherever
//! there is room, one could land in a hole the program has just punched
//! in its own mapping, and the program's next `mremap(MREMAP_FIXED)` or
//! `mmap(MAP_FIXED)` into that hole (as the newer THP tests do) would
//! silently unmap the model's memory. The program's mappings never reach
//! into the reservation.
//!
//! Kernel: none (the shim's own infrastructure).

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr;
use devpriv_core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Size classes: 16 B << 0 ..= 16 B << 12 (64 KiB).
const CLASSES: usize = 13;
const MIN: usize = 16;
const MAX_SMALL: usize = MIN << (CLASSES - 1);
/// Bytes mapped per refill of a size class.
const REFILL: usize = 1 << 20;
const PAGE: usize = 4096;

/// The allocator (installed as the cdylib's `#[global_allocator]`).
pub(crate) struct ShimAlloc {
    lock: AtomicBool,
    /// Heads of the free lists (a free block holds the next pointer).
    free: UnsafeCell<[*mut u8; CLASSES]>,
}

// SAFETY: `free` is only touched with `lock` held (a spin lock: the
// allocator must not allocate to lock, and contention is rare).
unsafe impl Sync for ShimAlloc {}

impl ShimAlloc {
    /// An allocator with empty free lists.
    pub(crate) const fn new() -> ShimAlloc {
        ShimAlloc {
            lock: AtomicBool::new(false),
            free: UnsafeCell::new([ptr::null_mut(); CLASSES]),
        }
    }

    fn lock(&self) {
        while self
            .lock
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
    }

    fn unlock(&self) {
        self.lock.store(false, Ordering::Release);
    }
}

/// The size class of a layout, or `None` for a large one.
fn class_of(layout: Layout) -> Option<usize> {
    if layout.align() > PAGE {
        return None;
    }
    let size = layout
        .size()
        .max(layout.align())
        .max(MIN)
        .next_power_of_two();
    if size > MAX_SMALL {
        return None;
    }
    Some((size / MIN).trailing_zeros() as usize)
}

/// Address space reserved for the shim's memory: 1 TiB (of x86-64's
/// 128 TiB user half). `PROT_NONE` and `MAP_NORESERVE`, so it costs no
/// memory until a piece is made usable.
const RESERVE: usize = 1 << 40;

/// The reservation: its start (0 until made) and the next free byte,
/// under `ARENA_LOCK`.
static ARENA_LOCK: AtomicBool = AtomicBool::new(false);
static ARENA: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// A raw `mmap(2)` (never the interposed one), or `None`.
fn sys_mmap(addr: usize, len: usize, prot: i32, flags: i32) -> Option<usize> {
    // SAFETY: either a new mapping placed by the kernel (touching no
    // existing memory), or a `MAP_FIXED` one over a range of the
    // reservation the caller owns.
    let r = unsafe { libc::syscall(libc::SYS_mmap, addr, len, prot, flags, -1, 0usize) };
    // -1 (failure) does not convert.
    usize::try_from(r).ok()
}

/// A fresh, zeroed, read-write piece of `len` bytes (a multiple of
/// [`PAGE`]) of the reservation, or null when it is used up.
fn map(len: usize) -> *mut u8 {
    while ARENA_LOCK
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    if ARENA[0].load(Ordering::Relaxed) == 0 {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        if let Some(base) = sys_mmap(0, RESERVE, libc::PROT_NONE, flags) {
            ARENA[0].store(base, Ordering::Relaxed);
            ARENA[1].store(base, Ordering::Relaxed);
        }
    }
    let (base, next) = (
        ARENA[0].load(Ordering::Relaxed),
        ARENA[1].load(Ordering::Relaxed),
    );
    let fits = base != 0 && next + len <= base + RESERVE;
    if fits {
        ARENA[1].store(next + len, Ordering::Relaxed);
    }
    ARENA_LOCK.store(false, Ordering::Release);
    if !fits {
        return ptr::null_mut();
    }
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
    match sys_mmap(next, len, libc::PROT_READ | libc::PROT_WRITE, flags) {
        Some(p) => p as *mut u8,
        None => ptr::null_mut(),
    }
}

/// Gives `[p, p + len)` back: its memory is freed and its addresses stay
/// reserved (never handed out again).
///
/// # Safety
///
/// The range is a piece (or part of one) this allocator made and no
/// longer hands out.
unsafe fn unmap(p: *mut u8, len: usize) {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE;
    let _ = sys_mmap(p as usize, len, libc::PROT_NONE, flags);
}

fn large_len(layout: Layout) -> usize {
    layout.size().max(1).next_multiple_of(PAGE)
}

// SAFETY: blocks are disjoint (free lists and fresh mappings), aligned as
// the layout asks (see `alloc`), and valid for `layout.size()` bytes.
unsafe impl GlobalAlloc for ShimAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(c) = class_of(layout) else {
            let len = large_len(layout);
            if layout.align() <= PAGE {
                return map(len);
            }
            // Over-map, then trim to an aligned range of exactly `len`.
            let base = map(len + layout.align());
            if base.is_null() {
                return base;
            }
            let p = (base as usize).next_multiple_of(layout.align()) as *mut u8;
            let head = p as usize - base as usize;
            if head > 0 {
                // SAFETY: the head is part of the mapping just made, before
                // the block returned.
                unsafe { unmap(base, head) };
            }
            let tail = layout.align() - head;
            if tail > 0 {
                // SAFETY: the tail is part of the mapping just made, after
                // the block returned.
                unsafe { unmap(p.wrapping_add(len), tail) };
            }
            return p;
        };
        let size = MIN << c;
        self.lock();
        // SAFETY: the lock is held.
        let free = unsafe { &mut *self.free.get() };
        if free[c].is_null() {
            // Refill: carve a new mapping into blocks of this class. The
            // mapping is page-aligned, so a block at a multiple of `size`
            // is aligned to `min(size, PAGE)`, and `size >= align`.
            let len = REFILL.max(size);
            let base = map(len);
            if base.is_null() {
                self.unlock();
                return base;
            }
            let mut off = 0;
            while off < len {
                let b = base.wrapping_add(off);
                // SAFETY: `b` is inside the new mapping, aligned for a
                // pointer, and free: it holds the next pointer.
                unsafe { b.cast::<*mut u8>().write(free[c]) };
                free[c] = b;
                off += size;
            }
        }
        let b = free[c];
        // SAFETY: `b` heads the free list: a free block holding the next
        // pointer.
        free[c] = unsafe { b.cast::<*mut u8>().read() };
        self.unlock();
        b
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        let Some(c) = class_of(layout) else {
            // SAFETY: a large block is a mapping of its own, of this
            // length, which the caller gives back.
            unsafe { unmap(p, large_len(layout)) };
            return;
        };
        self.lock();
        // SAFETY: the lock is held.
        let free = unsafe { &mut *self.free.get() };
        // SAFETY: `p` is a block of class `c` that the caller gives back,
        // so it may hold the next pointer.
        unsafe { p.cast::<*mut u8>().write(free[c]) };
        free[c] = p;
        self.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_disjoint_and_reused() {
        let a = ShimAlloc::new();
        let mut blocks = Vec::new();
        for (size, align) in [
            (1, 1),
            (24, 8),
            (64, 64),
            (5000, 16),
            (70_000, 8),
            (100, 8192),
        ] {
            let l = Layout::from_size_align(size, align).unwrap();
            // SAFETY: a non-zero layout; each block is written within its
            // size and freed once below.
            let p = unsafe { a.alloc(l) };
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0, "{size}/{align}");
            // SAFETY: `p` is valid for `size` bytes.
            unsafe { ptr::write_bytes(p, 0xab, size) };
            blocks.push((p, l));
        }
        let (p0, l0) = blocks[1];
        // SAFETY: freed once, then the same class hands it out again.
        unsafe { a.dealloc(p0, l0) };
        // SAFETY: a non-zero layout.
        assert_eq!(unsafe { a.alloc(l0) }, p0, "LIFO reuse");
        for (p, l) in blocks {
            // SAFETY: each block freed once.
            unsafe { a.dealloc(p, l) };
        }
    }
}
