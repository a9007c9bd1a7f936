//! The `dmirror` test driver: devices with device-private memory in
//! chunks, and mirrors of a process address space that read, write,
//! migrate and snapshot it the way `lib/test_hmm.c`'s ioctls do.
//!
//! Kernel: `lib/test_hmm.c` (dmirror), `lib/test_hmm_uapi.h` (7.0).
//!
//! # Shape
//!
//! - A [`DmirrorDevice`] (`struct dmirror_device`) owns chunks of
//!   device-private memory. Each chunk (`struct dmirror_chunk`) is one
//!   pagemap of [`DmirrorConfig::chunk_pages`] pages (by default
//!   [`DEVMEM_CHUNK_SIZE`], 256 MiB) memremapped in the machine's
//!   [`DevicePrivateSpace`](devpriv_pagemap::DevicePrivateSpace). The
//!   device starts with one chunk of single pages; a new chunk is added
//!   whenever a free list runs dry (`dmirror_allocate_chunk()`).
//! - Two free lists: single pages and PMD-aligned 512-page blocks for
//!   order-9 folios. A freed folio goes back to the list of its order, so a
//!   freed large folio is only ever reused as a large folio (why `test_hmm`
//!   never hit the stale-metadata hazards H1–H4 of `docs/hazards.md`).
//! - Every device page has one data word, the device copy of the page (the
//!   kernel's backing page, `BACKING_PAGE()`), and remembers the mirror
//!   that put it there (the backing page's `zone_device_data`).
//! - A [`Dmirror`] (`struct dmirror`, one open file) mirrors one process
//!   address space. Its device page table (`dmirror->pt`) maps a user page
//!   to a system page or one of the device's pages, readable or writable.
//!   Its methods are the ioctls: [`read`](Dmirror::read),
//!   [`write`](Dmirror::write), [`migrate_to_dev`](Dmirror::migrate_to_dev),
//!   [`migrate_to_sys`](Dmirror::migrate_to_sys),
//!   [`snapshot`](Dmirror::snapshot), [`exclusive`](Dmirror::exclusive),
//!   [`check_exclusive`](Dmirror::check_exclusive),
//!   [`release`](Dmirror::release) and [`set_flags`](Dmirror::set_flags),
//!   each with a [`HmmDmirrorCmd`]; the file operations are
//!   [`mmap`](Dmirror::mmap) and [`close`](Dmirror::close).
//! - Ownership: `pgmap->owner` is the device's [`Owner`], so a device only
//!   migrates and reports its own pages; another device's private pages are
//!   invisible to it (`NONE` in a snapshot) or, when it must touch them,
//!   faulted back to RAM by their owner. Two devices built with the same
//!   owner see each other's pages as `DEV_PRIVATE_REMOTE`.
//!
//! # Differences from the kernel
//!
//! - The MMU notifier ([`devpriv_migrate::mmu_notifier`]) fires only for
//!   unmapping, `mprotect`, fork and device-exclusive changes. For the
//!   rest (migration, COW, splits) the model checks every entry against
//!   the CPU page table when the device uses it and drops it if it went
//!   stale (the entry no longer names what the CPU maps there, or is
//!   writable where the CPU entry is not, or is an atomic entry whose CPU
//!   entry is no longer device-exclusive). The driver still erases entries
//!   itself where the kernel driver does (migration back to RAM, release).
//! - The mirror does not hold the address space (the kernel's keeps it in
//!   its notifier): every call takes the [`Mm`], and refuses (`EINVAL`) an
//!   address space other than the one the mirror was opened on.
//! - Backing pages are data words inside the driver, not pages of
//!   [`SystemMemory`](devpriv_migrate::SystemMemory): system-memory accounting in a
//!   test sees only what the CPU maps.
//! - The kernel's `cpages` of `MIGRATE_TO_SYS` counts migrated entries (a
//!   THP counts once); the model counts pages.
//! - `RELEASE` waits at most [`RELEASE_TIMEOUT`] for a chunk's pages to be
//!   freed and then fails with `EBUSY` (the kernel waits for ever); the
//!   eviction reaches every address space of the machine through the rmap.
//! - No device-coherent devices; the device file can only be mapped
//!   privately.
//!
//! ```
//! use devpriv_core::{Errno, PageCount, Pfn, PAGE_SIZE};
//! use devpriv_drivers::test_hmm::{DmirrorConfig, DmirrorDevice, DmirrorProt, HmmDmirrorCmd};
//! use devpriv_migrate::{handle_mm_fault, FaultFlags, Memory, Mm, MmConfig, SystemMemory, VmFlags, PMD_SIZE};
//! use devpriv_pagemap::{DevicePrivateSpace, Owner};
//! use std::sync::Arc;
//!
//! let sys = Arc::new(SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(1024))?);
//! let mem = Memory::new(sys, Arc::new(DevicePrivateSpace::new()));
//! let dev = DmirrorDevice::new(&mem, Owner(1), DmirrorConfig::with_chunk_pages(PageCount::new(512)))?;
//! let base = 0x7f00_0000_0000;
//! let mm = Mm::new(&mem, MmConfig::default());
//! mm.mmap_write_lock().mmap_anon(base, PMD_SIZE, VmFlags::RW)?;
//! let mirror = dev.open(&mm);
//!
//! // The device writes 4 pages (faulting them in), then takes them over.
//! let mut cmd = HmmDmirrorCmd::new(base, 4);
//! mirror.write(&mm, &mut cmd, &[10, 11, 12, 13])?;
//! assert_eq!((cmd.cpages, cmd.faults), (4, 1));
//! let mut cmd = HmmDmirrorCmd::new(base, 4);
//! assert_eq!(mirror.migrate_to_dev(&mm, &mut cmd)?, [10, 11, 12, 13]);
//! let prot = mirror.snapshot(&mm, &mut HmmDmirrorCmd::new(base, 1))?;
//! assert_eq!(prot, [DmirrorProt::DEV_PRIVATE_LOCAL | DmirrorProt::WRITE]);
//!
//! // A CPU access faults a page back through the device's migrate_to_ram.
//! handle_mm_fault(&mm, base + PAGE_SIZE, FaultFlags::READ)?;
//! assert_eq!(mm.read_user(base + PAGE_SIZE), Ok(11));
//! assert_eq!(dev.faults(), 1);
//! # Ok::<(), Errno>(())
//! ```

use core::fmt;
use core::ops::BitOr;
use devpriv_core::sync::Mutex;
use devpriv_core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use devpriv_core::{
    DevicePrivateOffset, Errno, HPAGE_PMD_NR, Order, PAGE_SHIFT, PAGE_SIZE, PageCount, PageFrame,
    Pfn, warn_on,
};
use devpriv_migrate::pgtable::PUD_SHIFT;
use devpriv_migrate::{
    FaultContext, HmmPfn, HmmRange, Memory, MigratePfn, MigrateVma, MigrateVmaFlags, Mm, MmConfig,
    MmapWriteGuard, MmuNotifier, MmuNotifierRange, MmuNotifyEvent, PMD_SIZE, Softleaf, SysFolio,
    VmFlags, Vma, hmm_range_fault, make_device_exclusive, migrate_device_finalize,
    migrate_device_pages, migrate_device_range, migrate_vma_finalize, migrate_vma_pages,
    migrate_vma_setup,
};
use devpriv_pagemap::{
    DevPagemap, DevPagemapOps, Folio, Owner, PageRef, PagemapParams, VmFault,
    zone_device_folio_init,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Bytes of device memory per chunk.
///
/// Kernel: `DEVMEM_CHUNK_SIZE` (256 MiB), `lib/test_hmm.c` (7.0).
pub const DEVMEM_CHUNK_SIZE: u64 = 256 << 20;

/// Pages per chunk by default (65,536).
///
/// Kernel: `DIV_ROUND_UP(DEVMEM_CHUNK_SIZE, PAGE_SIZE)` (v6 proposal).
pub const DEVMEM_CHUNK_PAGES: PageCount = PageCount::new(DEVMEM_CHUNK_SIZE / PAGE_SIZE);

/// How long [`Dmirror::release`] waits for a chunk's pages to be freed.
///
/// Kernel: none (`memunmap_pages()` waits for ever).
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(1);

/// Pages per `hmm_range_fault()` call of the READ/WRITE fault path and of
/// SNAPSHOT. Kernel: `ARRAY_SIZE(pfns)` in `dmirror_fault()` /
/// `dmirror_snapshot()` (7.0).
const HMM_WINDOW: u64 = 32;
/// Pages in a PMD-sized block, as `usize`.
const BLOCK: usize = 512;
const _: () = assert!(BLOCK as u64 == HPAGE_PMD_NR);

/// A per-page protection byte of `HMM_DMIRROR_SNAPSHOT`, with the values of
/// the uapi header.
///
/// Kernel: `HMM_DMIRROR_PROT_*`, `lib/test_hmm_uapi.h` (7.0).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DmirrorProt(u8);

impl DmirrorProt {
    /// No valid mirror entry (no VMA, or a VMA without read access).
    /// Kernel: `HMM_DMIRROR_PROT_ERROR` (7.0).
    pub const ERROR: DmirrorProt = DmirrorProt(0xff);
    /// Unpopulated, or not accessible to this device. Kernel: `HMM_DMIRROR_PROT_NONE` (7.0).
    pub const NONE: DmirrorProt = DmirrorProt(0x00);
    /// Read-only. Kernel: `HMM_DMIRROR_PROT_READ` (7.0).
    pub const READ: DmirrorProt = DmirrorProt(0x01);
    /// Read/write. Kernel: `HMM_DMIRROR_PROT_WRITE` (7.0).
    pub const WRITE: DmirrorProt = DmirrorProt(0x02);
    /// Mapped by a PMD-sized entry. Kernel: `HMM_DMIRROR_PROT_PMD` (7.0).
    pub const PMD: DmirrorProt = DmirrorProt(0x04);
    /// Mapped by a PUD-sized entry. Kernel: `HMM_DMIRROR_PROT_PUD` (7.0).
    pub const PUD: DmirrorProt = DmirrorProt(0x08);
    /// The shared zero page. Kernel: `HMM_DMIRROR_PROT_ZERO` (7.0).
    pub const ZERO: DmirrorProt = DmirrorProt(0x10);
    /// A device-private page of the asking device.
    /// Kernel: `HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL` (7.0).
    pub const DEV_PRIVATE_LOCAL: DmirrorProt = DmirrorProt(0x20);
    /// A device-private page of another device with the same owner.
    /// Kernel: `HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE` (7.0).
    pub const DEV_PRIVATE_REMOTE: DmirrorProt = DmirrorProt(0x30);
    /// A device-coherent page of the asking device (never produced: the
    /// model has no coherent devices).
    /// Kernel: `HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL` (7.0).
    pub const DEV_COHERENT_LOCAL: DmirrorProt = DmirrorProt(0x40);
    /// A device-coherent page of another device (never produced).
    /// Kernel: `HMM_DMIRROR_PROT_DEV_COHERENT_REMOTE` (7.0).
    pub const DEV_COHERENT_REMOTE: DmirrorProt = DmirrorProt(0x50);

    /// The byte as the ioctl writes it.
    ///
    /// Kernel: the `unsigned char` in `cmd->ptr` (7.0).
    pub const fn raw(self) -> u8 {
        self.0
    }

    /// The value of a byte.
    ///
    /// Kernel: none (model only).
    pub const fn from_raw(v: u8) -> DmirrorProt {
        DmirrorProt(v)
    }
}

impl BitOr for DmirrorProt {
    type Output = DmirrorProt;
    fn bitor(self, rhs: DmirrorProt) -> DmirrorProt {
        DmirrorProt(self.0 | rhs.0)
    }
}

impl fmt::Debug for DmirrorProt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::ERROR {
            return f.write_str("ERROR");
        }
        let kind = match self.0 & 0xf0 {
            0x00 => "",
            0x10 => "ZERO|",
            0x20 => "DEV_PRIVATE_LOCAL|",
            0x30 => "DEV_PRIVATE_REMOTE|",
            0x40 => "DEV_COHERENT_LOCAL|",
            0x50 => "DEV_COHERENT_REMOTE|",
            _ => return write!(f, "{:#04x}", self.0),
        };
        let acc = match self.0 & 0x03 {
            0 => "NONE",
            1 => "READ",
            2 => "WRITE",
            _ => "READ|WRITE",
        };
        let size = match self.0 & 0x0c {
            0 => "",
            4 => "|PMD",
            8 => "|PUD",
            _ => "|PMD|PUD",
        };
        write!(f, "{kind}{acc}{size}")
    }
}

/// The in/out argument of every ioctl.
///
/// Kernel: `struct hmm_dmirror_cmd`, `lib/test_hmm_uapi.h` (7.0).
///
/// # Differences from the kernel
///
/// No `ptr`: data goes in and out as one word per page through the
/// methods' arguments and return values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HmmDmirrorCmd {
    /// (in) First user address. Kernel: `addr` (7.0).
    pub addr: u64,
    /// (in) Pages. Kernel: `npages` (7.0).
    pub npages: u64,
    /// (out) Pages copied (or reported). Kernel: `cpages` (7.0).
    pub cpages: u64,
    /// (out) Device fault rounds. Kernel: `faults` (7.0).
    pub faults: u64,
}

impl HmmDmirrorCmd {
    /// A command for `npages` pages from `addr`.
    ///
    /// Kernel: the selftest's `hmm_dmirror_cmd()` setup (7.0).
    pub const fn new(addr: u64, npages: u64) -> HmmDmirrorCmd {
        HmmDmirrorCmd {
            addr,
            npages,
            cpages: 0,
            faults: 0,
        }
    }

    /// Validates the range and clears the outputs, as every command does
    /// first; returns `[start, end)`.
    ///
    /// Kernel: the checks at the top of `dmirror_fops_unlocked_ioctl()`
    /// (before the command switch; 7.0).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] for an unaligned `addr`, or a range that is empty
    /// or wraps (`addr >= addr + (npages << PAGE_SHIFT)`).
    pub fn check(&mut self) -> Result<(u64, u64), Errno> {
        self.start()
    }

    /// Kernel: the checks at the top of `dmirror_fops_unlocked_ioctl()` (7.0).
    fn start(&mut self) -> Result<(u64, u64), Errno> {
        if !self.addr.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        let end = self
            .npages
            .checked_mul(PAGE_SIZE)
            .and_then(|s| self.addr.checked_add(s))
            .filter(|&e| e > self.addr)
            .ok_or(Errno::EINVAL)?;
        self.cpages = 0;
        self.faults = 0;
        Ok((self.addr, end))
    }
}

/// Settings of a [`DmirrorDevice`].
///
/// Kernel: the compile-time `DEVMEM_CHUNK_SIZE`; chunks are unbounded
/// (`DEVMEM_CHUNKS_RESERVE` only sizes the array, 7.0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmirrorConfig {
    /// Pages per chunk (a multiple of 512 keeps chunks PMD-aligned in the
    /// device-private space).
    pub chunk_pages: PageCount,
    /// At most this many chunks at a time; past it an allocation fails
    /// with `ENOMEM` (model only: the kernel stops when
    /// `request_free_mem_region()` does).
    pub max_chunks: usize,
}

impl Default for DmirrorConfig {
    /// 256 MiB chunks, no limit on their number.
    fn default() -> Self {
        DmirrorConfig {
            chunk_pages: DEVMEM_CHUNK_PAGES,
            max_chunks: usize::MAX,
        }
    }
}

impl DmirrorConfig {
    /// The default with chunks of `chunk_pages` (small chunks keep tests
    /// fast).
    ///
    /// Kernel: none (model only).
    pub const fn with_chunk_pages(chunk_pages: PageCount) -> DmirrorConfig {
        DmirrorConfig {
            chunk_pages,
            max_chunks: usize::MAX,
        }
    }
}

/// The driver's free lists, as device-private offsets.
#[derive(Debug, Default)]
struct FreeLists {
    /// Heads of free 512-page blocks. Kernel: `mdevice->free_folios` (7.0).
    folios: Vec<DevicePrivateOffset>,
    /// Free single pages. Kernel: `mdevice->free_pages` (7.0).
    pages: Vec<DevicePrivateOffset>,
}

/// A chunk's callbacks and per-page state.
///
/// Kernel: `struct dmirror_chunk` (`remove`, back-pointer) plus the
/// backing pages of its device pages, and `dmirror_devmem_ops` (7.0).
struct ChunkOps {
    dev: Weak<DeviceInner>,
    /// One data word per page. Kernel: `BACKING_PAGE(page)`'s contents (7.0).
    data: Box<[AtomicU64]>,
    /// The id of the mirror that put each page there (0: none). Kernel:
    /// the backing page's `zone_device_data` (7.0).
    mirror: Box<[AtomicU64]>,
    /// Kernel: `dmirror_chunk::remove` (7.0).
    remove: AtomicBool,
}

impl fmt::Debug for ChunkOps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkOps")
            .field("pages", &self.data.len())
            .field("remove", &self.remove.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// One chunk: its pagemap and its ops.
#[derive(Clone, Debug)]
struct Chunk {
    pgmap: Arc<DevPagemap>,
    ops: Arc<ChunkOps>,
    /// The pagemap reference with no page allocated.
    baseline_refs: i64,
}

impl Chunk {
    /// The index of `off` in this chunk.
    fn index_of(&self, off: DevicePrivateOffset) -> Option<usize> {
        let i = off.checked_offset_from(self.pgmap.first_offset())?.get();
        let i = usize::try_from(i).ok()?;
        (i < self.ops.data.len()).then_some(i)
    }
}

/// The state of one device.
///
/// Kernel: `struct dmirror_device` (7.0).
struct DeviceInner {
    owner: Owner,
    mem: Memory,
    config: DmirrorConfig,
    /// Kernel: `devmem_lock` (7.0): serialises adding chunks with removing
    /// them, and one removal with another.
    devmem_lock: Mutex<()>,
    /// Kernel: `devmem_chunks` (7.0). Its own lock is only for the list:
    /// the kernel finds a page's chunk from `page_pgmap()` without a lock.
    chunks: Mutex<Vec<Chunk>>,
    /// Kernel: the free lists under `mdevice->lock` (7.0).
    free: Mutex<FreeLists>,
    /// Kernel: `mdevice->calloc` (pages, 7.0).
    calloc: AtomicU64,
    /// Kernel: `mdevice->cfree` (pages, 7.0).
    cfree: AtomicU64,
    /// `migrate_to_ram` calls.
    faults: AtomicU64,
    /// Open mirrors, by id.
    mirrors: Mutex<Vec<(u64, Weak<MirrorState>)>>,
    next_mirror: AtomicU64,
}

impl fmt::Debug for DeviceInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmirrorDevice")
            .field("owner", &self.owner)
            .field("config", &self.config)
            .field("chunks", &self.chunks.lock().len())
            .field("free", &*self.free.lock())
            .field("faults", &self.faults.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A user page's entry in the device page table.
///
/// Kernel: an `xa_tag_pointer(page, DPT_XA_TAG_WRITE)` in `dmirror->pt` (7.0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DptEntry {
    /// The system page, or the device page (the kernel stores its backing
    /// page).
    frame: PageFrame,
    write: bool,
    /// Mapped for atomic access by `EXCLUSIVE` (the kernel's
    /// `DPT_XA_TAG_ATOMIC`): readable, never writable through `WRITE`.
    atomic: bool,
}

/// The state of one mirror, shared with the device's fault path.
#[derive(Debug)]
struct MirrorState {
    id: u64,
    /// The device's owner (invalidations of its own migrations are
    /// ignored).
    owner: Owner,
    /// Kernel: `dmirror->pt` (index: user pfn) under `dmirror->mutex` (7.0).
    pt: Mutex<BTreeMap<u64, DptEntry>>,
    /// Kernel: `dmirror->flags` (7.0).
    flags: AtomicU64,
}

/// Drops the device page-table entries of an invalidated range.
///
/// Kernel: `dmirror_interval_invalidate()` → `dmirror_do_update()` (7.0).
impl MmuNotifier for MirrorState {
    fn invalidate(&self, range: &MmuNotifierRange) {
        // The driver's own migrations update the table themselves.
        if range.event == MmuNotifyEvent::Migrate && range.owner == Some(self.owner) {
            return;
        }
        let (first, last) = (range.start >> PAGE_SHIFT, range.end >> PAGE_SHIFT);
        if first < last {
            let mut pt = self.pt.lock();
            let keys: Vec<u64> = pt.range(first..last).map(|(k, _)| *k).collect();
            for k in keys {
                pt.remove(&k);
            }
        }
    }
}

impl MirrorState {
    /// Clears `FAIL_ALLOC` and returns whether it was set.
    ///
    /// Kernel: `if (dmirror->flags & HMM_DMIRROR_FLAG_FAIL_ALLOC) {
    /// dmirror->flags &= ~HMM_DMIRROR_FLAG_FAIL_ALLOC; ...}` (7.0).
    fn take_fail_alloc(&self) -> bool {
        self.flags
            .fetch_and(!Dmirror::FLAG_FAIL_ALLOC, Ordering::AcqRel)
            & Dmirror::FLAG_FAIL_ALLOC
            != 0
    }
}

/// A device with device-private memory.
///
/// Kernel: `struct dmirror_device` (`/dev/hmm_dmirror0` or `1`),
/// `dmirror_device_init()` (7.0).
///
/// Cloning gives another handle to the same device.
#[derive(Clone)]
pub struct DmirrorDevice {
    inner: Arc<DeviceInner>,
}

impl fmt::Debug for DmirrorDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// Allocates system destinations for the migrating device sources in
/// `src` and copies the device data into them.
///
/// Kernel: `dmirror_devmem_fault_alloc_and_copy()` (`mirror` given) and the
/// copy loop of `dmirror_device_evict_chunk()` (`mirror` `None`, no split:
/// a large source gets a large destination or nothing, 7.0).
///
/// A large device folio gets an order-9 system folio, or (if that fails,
/// or `FAIL_ALLOC` is set on `mirror`) 512 single pages; the mirror's
/// entries for the moved pages are erased. `FAIL_ALLOC` is used up by the
/// first migrating source whatever its order: a small one fails the call
/// with `ENOMEM` (`VM_FAULT_OOM`). Returns `ENOMEM` too when a single page
/// cannot be had, with every destination allocated so far given back.
///
/// # Differences from the kernel
///
/// On a real allocation failure the kernel returns `VM_FAULT_OOM` leaving
/// the destinations of earlier sources in `dst` (locked, for
/// `migrate_vma_finalize()` to deal with); the model gives them back first.
fn alloc_and_copy_to_sys(
    dev: &DeviceInner,
    mirror: Option<&MirrorState>,
    start: u64,
    src: &[MigratePfn],
    dst: &mut [MigratePfn],
    evict: bool,
) -> Result<(), Errno> {
    let mem = &dev.mem;
    let mut i = 0;
    while i < src.len() {
        let s = src[i];
        let Some(PageFrame::DevicePrivate(off)) = s.frame() else {
            i += 1;
            continue;
        };
        if !s.contains(MigratePfn::MIGRATE) {
            i += 1;
            continue;
        }
        let Some((ops, idx)) = dev.with_chunk(off, |c, i| (Arc::clone(&c.ops), i)) else {
            warn_on!(true, "dmirror: migrating a page of another device");
            i += 1;
            continue;
        };
        let large = s.contains(MigratePfn::COMPOUND);
        let nr = if large { BLOCK } else { 1 };
        let write = if s.contains(MigratePfn::WRITE) {
            MigratePfn::WRITE
        } else {
            0
        };
        // The first migrating source uses the flag up, whatever its order.
        let fail = !evict && mirror.is_some_and(MirrorState::take_fail_alloc);
        if fail && !large {
            // `VM_FAULT_OOM` at once: `-ENOMEM` from the ioctl, OOM from a
            // fault. No destination exists yet (the flag is taken by the
            // first source), so the caller's finalize restores everything.
            return Err(Errno::ENOMEM);
        }
        let big = if large && !fail {
            mem.sys().alloc_folio(Order::HPAGE_PMD).ok()
        } else {
            None
        };
        if let Some(f) = big {
            lock_new(f)?;
            for j in 0..nr {
                let pfn = f.page_pfn(j as u64).ok_or(Errno::EINVAL)?;
                mem.sys().write(pfn, ops.word(idx + j))?;
            }
            dst[i] = MigratePfn::new(f.pfn().into())?.with(MigratePfn::COMPOUND | write)?;
        } else if large && evict {
            // Kernel: "TODO Support splitting here".
        } else {
            for j in 0..nr.min(src.len() - i) {
                match small_sys_copy(dev, &ops, idx + j) {
                    Ok(m) => dst[i + j] = m,
                    Err(e) => {
                        give_back(mem, &mut dst[i..i + j]);
                        return Err(e);
                    }
                }
            }
        }
        if let Some(m) = mirror {
            let mut pt = m.pt.lock();
            for j in 0..nr {
                pt.remove(&((start >> PAGE_SHIFT) + (i + j) as u64));
            }
        }
        i += nr;
    }
    Ok(())
}

/// Locks a new system folio (it is ours, so this cannot fail).
fn lock_new(f: SysFolio<'_>) -> Result<(), Errno> {
    if !f.trylock() {
        let _ = f.put();
        return Err(Errno::EBUSY);
    }
    Ok(())
}

/// Unlocks and frees destinations allocated by a failed copy.
fn give_back(mem: &Memory, dst: &mut [MigratePfn]) {
    for d in dst {
        if let Some(PageFrame::Pfn(p)) = d.frame()
            && let Some(f) = mem.sys().pfn_folio(p)
        {
            let _ = f.unlock();
            let _ = f.put();
        }
        *d = MigratePfn::NONE;
    }
}

fn small_sys_copy(dev: &DeviceInner, ops: &ChunkOps, idx: usize) -> Result<MigratePfn, Errno> {
    let f = dev.mem.sys().alloc_folio(Order::ZERO)?;
    lock_new(f)?;
    dev.mem.sys().write(f.pfn(), ops.word(idx))?;
    MigratePfn::new(f.pfn().into())
}

/// Pages that migrated: `MIGRATE` in `src` with a destination, 512 for a
/// compound one.
fn migrated(src: &[MigratePfn], dst: &[MigratePfn]) -> u64 {
    src.iter()
        .zip(dst)
        .filter(|(s, d)| s.contains(MigratePfn::MIGRATE) && d.contains(MigratePfn::VALID))
        .map(|(s, _)| {
            if s.contains(MigratePfn::COMPOUND) {
                HPAGE_PMD_NR
            } else {
                1
            }
        })
        .sum()
}

impl ChunkOps {
    fn word(&self, idx: usize) -> u64 {
        self.data.get(idx).map_or(0, |w| w.load(Ordering::Acquire))
    }

    fn set_word(&self, idx: usize, v: u64) {
        if let Some(w) = self.data.get(idx) {
            w.store(v, Ordering::Release);
        }
    }
}

impl DevPagemapOps for ChunkOps {
    /// Returns the folio to the free list of its order (unless the chunk is
    /// being removed).
    ///
    /// Kernel: `dmirror_devmem_free()` (7.0).
    fn folio_free(&self, folio: Folio<'_>) {
        let Some(dev) = self.dev.upgrade() else {
            return;
        };
        let nr = folio.nr_pages().get();
        if self.remove.load(Ordering::Acquire) {
            return;
        }
        let off = folio.offset();
        let mut free = dev.free.lock();
        dev.cfree.fetch_add(nr, Ordering::Relaxed);
        if folio.order() == Order::HPAGE_PMD {
            free.folios.push(off);
        } else {
            // An order-0 folio (possibly a piece of a split large one).
            for j in 0..nr {
                if let Some(o) = off.checked_add(PageCount::new(j)) {
                    free.pages.push(o);
                }
            }
        }
    }

    /// Migrates the faulting page back to system RAM (the whole folio when
    /// the fault came through a PMD).
    ///
    /// Kernel: `dmirror_devmem_fault()` (7.0).
    fn migrate_to_ram(&self, vmf: &VmFault<'_>) -> Result<(), Errno> {
        let ctx = vmf.context::<FaultContext>().ok_or(Errno::EINVAL)?;
        let dev = self.dev.upgrade().ok_or(Errno::EINVAL)?;
        dev.faults.fetch_add(1, Ordering::Relaxed);
        let order = if vmf.pmd {
            vmf.page.folio().order()
        } else {
            Order::ZERO
        };
        let size = PAGE_SIZE << order.get();
        let start = vmf.address & !(size - 1);
        let mut flags = MigrateVmaFlags::SELECT_DEVICE_PRIVATE;
        if order != Order::ZERO {
            flags = flags | MigrateVmaFlags::SELECT_COMPOUND;
        }
        let fault_page = vmf.page.offset();
        let mirror_id = self
            .mirror
            .get(vmf.page.index())
            .map_or(0, |m| m.load(Ordering::Acquire));
        let mirror = dev.mirror(mirror_id);
        let mut args = MigrateVma::new(
            &ctx.mm,
            &ctx.vma,
            start,
            start + size,
            flags,
            Some(dev.owner),
        );
        args.fault_page = Some(fault_page);
        migrate_vma_setup(&mut args)?;
        let n = usize::try_from(args.npages).unwrap_or(0);
        let (src, dst) = (&args.src[..n], &mut args.dst[..n]);
        if let Err(e) = alloc_and_copy_to_sys(&dev, mirror.as_deref(), start, src, dst, false) {
            migrate_vma_finalize(&mut args);
            return Err(e);
        }
        migrate_vma_pages(&mut args);
        migrate_vma_finalize(&mut args);
        Ok(())
    }
}

impl DeviceInner {
    /// Runs `f` on the chunk holding `off` and the page's index in it,
    /// with the chunk list locked: no copy of the chunk, whose reference
    /// counts would cost more than the lookup on the migration path (the
    /// kernel's `dmirror_page_to_chunk()` is a `container_of()`). `f` must
    /// not take the chunk list or the free lists.
    fn with_chunk<R>(
        &self,
        off: DevicePrivateOffset,
        f: impl FnOnce(&Chunk, usize) -> R,
    ) -> Option<R> {
        let chunks = self.chunks.lock();
        let (c, i) = chunks.iter().find_map(|c| Some((c, c.index_of(off)?)))?;
        Some(f(c, i))
    }

    fn mirror(&self, id: u64) -> Option<Arc<MirrorState>> {
        if id == 0 {
            return None;
        }
        let mut mirrors = self.mirrors.lock();
        mirrors.retain(|(_, w)| w.strong_count() > 0);
        mirrors
            .iter()
            .find(|(i, _)| *i == id)
            .and_then(|(_, w)| w.upgrade())
    }

    /// Adds a chunk and puts its pages on the free lists: PMD-aligned
    /// 512-page blocks on the folio list when `large`, everything else as
    /// single pages.
    ///
    /// Kernel: `dmirror_allocate_chunk(mdevice, NULL, is_large)` (the caller
    /// then pops what it needs, 7.0).
    fn allocate_chunk(self: &Arc<Self>, large: bool) -> Result<(), Errno> {
        let n = usize::try_from(self.config.chunk_pages.get()).map_err(|_| Errno::EINVAL)?;
        let _devmem = self.devmem_lock.lock();
        let mut chunks = self.chunks.lock();
        if chunks.len() >= self.config.max_chunks {
            return Err(Errno::ENOMEM);
        }
        let ops = Arc::new(ChunkOps {
            dev: Arc::downgrade(self),
            data: (0..n).map(|_| AtomicU64::new(0)).collect(),
            mirror: (0..n).map(|_| AtomicU64::new(0)).collect(),
            remove: AtomicBool::new(false),
        });
        let params = PagemapParams::private(self.config.chunk_pages, self.owner, ops.clone());
        let pgmap = self
            .mem
            .space()
            .memremap_device_private_pagemap(params, -1)?;
        let first = pgmap.first_offset();
        let baseline_refs = pgmap.percpu_ref().count();
        chunks.push(Chunk {
            pgmap,
            ops,
            baseline_refs,
        });
        drop(chunks);
        let mut free = self.free.lock();
        let (mut folios, mut pages) = (Vec::new(), Vec::new());
        let mut i = 0;
        while i < n {
            let off = DevicePrivateOffset::new(first.get() + i as u64);
            if large && off.get().is_multiple_of(HPAGE_PMD_NR) && i + BLOCK <= n {
                folios.push(off);
                i += BLOCK;
            } else {
                pages.push(off);
                i += 1;
            }
        }
        // Each pushed on the head in address order, as the kernel's
        // `zone_device_data` lists: the highest is popped first.
        free.folios.extend(folios);
        free.pages.extend(pages);
        Ok(())
    }

    /// Allocates a device folio of order 9 (`large`) or 0: locked, one
    /// reference. Adds a chunk if the list is empty.
    ///
    /// Kernel: `dmirror_devmem_alloc_page(dmirror, is_large)` (7.0).
    fn alloc_page(self: &Arc<Self>, large: bool) -> Result<DevicePrivateOffset, Errno> {
        let pop = |free: &mut FreeLists| {
            if large {
                free.folios.pop()
            } else {
                free.pages.pop()
            }
        };
        let popped = pop(&mut self.free.lock());
        let off = match popped {
            Some(off) => off,
            None => {
                self.allocate_chunk(large)?;
                pop(&mut self.free.lock()).ok_or(Errno::ENOMEM)?
            }
        };
        let order = if large { Order::HPAGE_PMD } else { Order::ZERO };
        let init = self.with_chunk(off, |chunk, idx| {
            let page = PageRef::new(&chunk.pgmap, idx)?;
            Some(zone_device_folio_init(Folio::from_head(page), &chunk.pgmap, order).map(|_| ()))
        });
        let Some(init) = init else {
            return Err(Errno::ENOMEM);
        };
        match init.ok_or(Errno::EINVAL)? {
            Ok(()) => {
                self.calloc.fetch_add(1 << order.get(), Ordering::Relaxed);
                Ok(off)
            }
            Err(e) => {
                let mut free = self.free.lock();
                if large {
                    free.folios.push(off);
                } else {
                    free.pages.push(off);
                }
                Err(e.into())
            }
        }
    }

    /// Evicts every allocated page of `chunk` to system RAM. Returns the
    /// pages moved.
    ///
    /// Kernel: `dmirror_device_evict_chunk()` (`migrate_device_range()`,
    /// `migrate_device_pages()`, `migrate_device_finalize()`, 7.0).
    fn evict_chunk(&self, mm: &Mm, chunk: &Chunk) -> Result<u64, Errno> {
        let n = chunk.ops.data.len();
        let mut src = vec![MigratePfn::NONE; n];
        let mut dst = vec![MigratePfn::NONE; n];
        let start = MigratePfn::new(chunk.pgmap.first_offset().into())?;
        migrate_device_range(mm, &mut src, start, n as u64)?;
        let r = alloc_and_copy_to_sys(self, None, 0, &src, &mut dst, true);
        migrate_device_pages(&self.mem, &mut src, &mut dst)?;
        let done = migrated(&src, &dst);
        migrate_device_finalize(mm, &src, &dst)?;
        r.map(|()| done)
    }
}

impl DmirrorDevice {
    /// A device with one chunk of single pages.
    ///
    /// Kernel: `dmirror_device_init()` → `dmirror_allocate_chunk(mdevice,
    /// NULL, false)` (7.0).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] for a zero chunk size or `max_chunks`; errors of
    /// `memremap_device_private_pagemap()` (`EBUSY` when the device-private
    /// space is full).
    pub fn new(mem: &Memory, owner: Owner, config: DmirrorConfig) -> Result<DmirrorDevice, Errno> {
        if config.chunk_pages.get() == 0 || config.max_chunks == 0 {
            return Err(Errno::EINVAL);
        }
        let inner = Arc::new(DeviceInner {
            owner,
            mem: mem.clone(),
            config,
            devmem_lock: Mutex::new(()),
            chunks: Mutex::new(Vec::new()),
            free: Mutex::new(FreeLists::default()),
            calloc: AtomicU64::new(0),
            cfree: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            mirrors: Mutex::new(Vec::new()),
            next_mirror: AtomicU64::new(1),
        });
        inner.allocate_chunk(false)?;
        Ok(DmirrorDevice { inner })
    }

    /// Opens a mirror of `mm` on this device, subscribed to its MMU
    /// notifier.
    ///
    /// Kernel: `dmirror_fops_open()` (`mmu_interval_notifier_insert()`, 7.0).
    pub fn open(&self, mm: &Arc<Mm>) -> Dmirror {
        let id = self.inner.next_mirror.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(MirrorState {
            id,
            owner: self.inner.owner,
            pt: Mutex::new(BTreeMap::new()),
            flags: AtomicU64::new(0),
        });
        self.inner.mirrors.lock().push((id, Arc::downgrade(&state)));
        let notifier: Arc<dyn MmuNotifier> = state.clone();
        mm.mmu_notifier_register(Arc::downgrade(&notifier));
        Dmirror {
            dev: self.clone(),
            state,
            mm: Arc::as_ptr(mm).addr(),
        }
    }

    /// The owner cookie of every chunk (`pgmap->owner`,
    /// `migrate_vma::pgmap_owner`, `hmm_range::dev_private_owner`).
    ///
    /// Kernel: the `mdevice` pointer (7.0).
    pub fn owner(&self) -> Owner {
        self.inner.owner
    }

    /// The settings.
    ///
    /// Kernel: none (model only).
    pub fn config(&self) -> DmirrorConfig {
        self.inner.config
    }

    /// The chunks' pagemaps, oldest first.
    ///
    /// Kernel: `mdevice->devmem_chunks[i]->pagemap` (7.0).
    pub fn chunks(&self) -> Vec<Arc<DevPagemap>> {
        self.inner
            .chunks
            .lock()
            .iter()
            .map(|c| Arc::clone(&c.pgmap))
            .collect()
    }

    /// Pages in all chunks.
    ///
    /// Kernel: `devmem_count * DEVMEM_CHUNK_SIZE / PAGE_SIZE` (7.0).
    pub fn nr_pages(&self) -> u64 {
        self.inner
            .chunks
            .lock()
            .iter()
            .map(|c| c.pgmap.nr_pages().get())
            .sum()
    }

    /// Pages on the free lists (a free block counts 512).
    ///
    /// Kernel: none (model only).
    pub fn nr_free_pages(&self) -> u64 {
        let free = self.inner.free.lock();
        (free.folios.len() * BLOCK + free.pages.len()) as u64
    }

    /// Free 512-page blocks.
    ///
    /// Kernel: the length of `mdevice->free_folios` (7.0).
    pub fn nr_free_folios(&self) -> u64 {
        self.inner.free.lock().folios.len() as u64
    }

    /// Pages allocated so far.
    ///
    /// Kernel: `mdevice->calloc` (7.0).
    pub fn calloc(&self) -> u64 {
        self.inner.calloc.load(Ordering::Acquire)
    }

    /// Pages freed back to the lists so far.
    ///
    /// Kernel: `mdevice->cfree` (7.0).
    pub fn cfree(&self) -> u64 {
        self.inner.cfree.load(Ordering::Acquire)
    }

    /// `migrate_to_ram` calls so far.
    ///
    /// Kernel: none (model only).
    pub fn faults(&self) -> u64 {
        self.inner.faults.load(Ordering::Acquire)
    }

    /// `true` if `off` is one of this device's pages.
    ///
    /// Kernel: `dmirror_page_to_device(page) == mdevice` (7.0).
    pub fn owns(&self, off: DevicePrivateOffset) -> bool {
        self.inner.with_chunk(off, |_, _| ()).is_some()
    }

    /// Allocates a device folio of order 9 (`large`) or 0, locked with one
    /// reference, and returns its first offset. Adds a chunk when the list
    /// is empty.
    ///
    /// Kernel: `dmirror_devmem_alloc_page(dmirror, is_large)`
    /// (`zone_device_folio_init()`, 7.0).
    ///
    /// # Errors
    ///
    /// [`Errno::ENOMEM`] if no chunk can be added
    /// ([`DmirrorConfig::max_chunks`]); errors of
    /// `memremap_device_private_pagemap()` and `zone_device_folio_init()`.
    pub fn alloc_page(&self, large: bool) -> Result<DevicePrivateOffset, Errno> {
        self.inner.alloc_page(large)
    }

    /// The device's copy of the page at `off`.
    ///
    /// Kernel: reading `BACKING_PAGE(page)` (7.0).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `off` is not one of this device's pages.
    pub fn read_page(&self, off: DevicePrivateOffset) -> Result<u64, Errno> {
        self.inner
            .with_chunk(off, |chunk, idx| chunk.ops.word(idx))
            .ok_or(Errno::EINVAL)
    }

    /// Writes the device's copy of the page at `off`.
    ///
    /// Kernel: writing `BACKING_PAGE(page)` (7.0).
    ///
    /// # Errors
    ///
    /// As [`read_page`](Self::read_page).
    pub fn write_page(&self, off: DevicePrivateOffset, value: u64) -> Result<(), Errno> {
        self.inner
            .with_chunk(off, |chunk, idx| chunk.ops.set_word(idx, value))
            .ok_or(Errno::EINVAL)
    }

    /// Evicts every chunk to system RAM and unmaps it: marks the chunk as
    /// going (so freed pages are not reused), drops its free pages from the
    /// lists, migrates every allocated page back with
    /// `migrate_device_range()`, erases mirror entries into it, and
    /// unmaps its pagemap once every page is free. Returns the pages
    /// evicted. Later allocations add new chunks.
    ///
    /// Kernel: `dmirror_device_remove_chunks()` (with
    /// `dmirror_remove_free_pages()` and `dmirror_device_evict_chunk()`),
    /// `memunmap_device_private_pagemap()` (v6). `devmem_lock` is held
    /// across every chunk, as in the kernel: of two concurrent releases,
    /// the second finds nothing to remove.
    ///
    /// # Differences from the kernel
    ///
    /// The wait for the pages is bounded by [`RELEASE_TIMEOUT`]; `mm` only
    /// names the machine (the rmap reaches every address space).
    ///
    /// # Errors
    ///
    /// [`Errno::EBUSY`] if a chunk still has allocated pages after the
    /// timeout (mapped in another address space, or pinned): that chunk
    /// and the ones after it stay (its pages no longer return to the free
    /// lists). [`Errno::ENOMEM`] if system memory runs out during
    /// eviction.
    pub fn remove_chunks(&self, mm: &Mm) -> Result<u64, Errno> {
        let inner = &self.inner;
        // `devmem_lock` from the first chunk to the last, as the kernel
        // holds it: a second release waits and then finds no chunks,
        // instead of evicting and unmapping the same chunk again.
        let _devmem = inner.devmem_lock.lock();
        let chunks = inner.chunks.lock().clone();
        let mut evicted = 0;
        for chunk in &chunks {
            chunk.ops.remove.store(true, Ordering::Release);
            {
                let mut free = inner.free.lock();
                free.folios.retain(|&o| chunk.index_of(o).is_none());
                free.pages.retain(|&o| chunk.index_of(o).is_none());
            }
            evicted += inner.evict_chunk(mm, chunk)?;
            for (_, w) in inner.mirrors.lock().iter() {
                if let Some(m) = w.upgrade() {
                    m.pt.lock().retain(|_, e| match e.frame {
                        PageFrame::DevicePrivate(o) => chunk.index_of(o).is_none(),
                        PageFrame::Pfn(_) => true,
                    });
                }
            }
            inner
                .mem
                .space()
                .try_memunmap_device_private_pagemap(&chunk.pgmap, RELEASE_TIMEOUT)?;
            inner
                .chunks
                .lock()
                .retain(|c| !Arc::ptr_eq(&c.pgmap, &chunk.pgmap));
        }
        Ok(evicted)
    }

    /// Checks that the device is idle: every page of every chunk on a free
    /// list with refcount 0, and each pagemap's reference at its value
    /// with nothing allocated.
    ///
    /// Kernel: none (model only; what `memunmap_pages()` waits for).
    ///
    /// # Errors
    ///
    /// A message naming what is still in use.
    pub fn check_idle(&self) -> Result<(), String> {
        let chunks = self.inner.chunks.lock().clone();
        let total: u64 = chunks.iter().map(|c| c.pgmap.nr_pages().get()).sum();
        let free = self.nr_free_pages();
        if free != total {
            return Err(format!("{} of {total} device pages not free", total - free));
        }
        for (n, c) in chunks.iter().enumerate() {
            let refs = c.pgmap.percpu_ref().count();
            if refs != c.baseline_refs {
                return Err(format!(
                    "chunk {n}: pgmap ref {refs}, baseline {}",
                    c.baseline_refs
                ));
            }
            if let Some((i, p)) = c
                .pgmap
                .pages()
                .iter()
                .enumerate()
                .find(|(_, p)| p.refcount() != 0)
            {
                return Err(format!(
                    "chunk {n}: device page {i} has refcount {}",
                    p.refcount()
                ));
            }
        }
        Ok(())
    }

    /// Tears the device down: [`remove_chunks`](Self::remove_chunks) with
    /// an empty address space (so only free chunks can go).
    ///
    /// Kernel: `dmirror_device_remove()` → `dmirror_device_release()` →
    /// `dmirror_device_remove_chunks()` (7.0).
    ///
    /// # Errors
    ///
    /// As [`remove_chunks`](Self::remove_chunks).
    pub fn remove(self) -> Result<(), Errno> {
        let empty = Mm::new(&self.inner.mem, MmConfig::default());
        self.remove_chunks(&empty).map(|_| ())
    }
}

/// A mirror of one process address space on a device: the device page
/// table and the ioctls.
///
/// Kernel: `struct dmirror` (one open `/dev/hmm_dmirrorN`),
/// `dmirror_fops_unlocked_ioctl()` (7.0).
///
/// # Differences from the kernel
///
/// See the module documentation (no notifier; the address space is passed
/// to every call).
pub struct Dmirror {
    dev: DmirrorDevice,
    state: Arc<MirrorState>,
    /// The address of the mirrored `Mm` (`dmirror->notifier.mm`).
    mm: usize,
}

impl fmt::Debug for Dmirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dmirror")
            .field("id", &self.state.id)
            .field("owner", &self.dev.owner())
            .field("entries", &self.state.pt.lock().len())
            .field("flags", &self.state.flags.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What the device sees at a user page: the CPU's current frame for it,
/// and whether the CPU may write it.
fn cpu_frame(mm: &Mm, addr: u64) -> Option<(PageFrame, bool)> {
    let pmd = mm.pmdp_get_lockless(addr)?;
    let sub = (addr >> PAGE_SHIFT) & (HPAGE_PMD_NR - 1);
    if pmd.is_trans_huge() {
        return Some((Pfn::new(pmd.pfn().get() + sub).into(), pmd.is_write()));
    }
    if !pmd.is_none() && !pmd.is_present() {
        let e = Softleaf::from_pmd(pmd);
        let Some(PageFrame::DevicePrivate(off)) = e.to_frame(mm.paging()) else {
            return None;
        };
        let off = off.checked_add(PageCount::new(sub))?;
        return e
            .is_device_private()
            .then(|| (off.into(), e.is_device_private_write()));
    }
    let pte = mm.ptep_get_lockless(addr)?;
    if pte.is_present() {
        return Some((pte.pfn().into(), pte.is_write()));
    }
    let e = Softleaf::from_pte(pte);
    if !e.is_device_private() {
        return None;
    }
    Some((e.to_frame(mm.paging())?, e.is_device_private_write()))
}

/// The pfn a device-exclusive CPU entry at `addr` names.
fn exclusive_pfn(mm: &Mm, addr: u64) -> Option<Pfn> {
    let e = mm.softleaf_at(addr);
    match e.to_frame(mm.paging()) {
        Some(PageFrame::Pfn(p)) if e.is_device_exclusive() => Some(p),
        _ => None,
    }
}

impl Dmirror {
    /// Fail the next large allocation (either direction) once.
    ///
    /// Kernel: `HMM_DMIRROR_FLAG_FAIL_ALLOC` (7.0).
    pub const FLAG_FAIL_ALLOC: u64 = 1;

    /// The device.
    ///
    /// Kernel: `dmirror->mdevice` (7.0).
    pub fn device(&self) -> &DmirrorDevice {
        &self.dev
    }

    /// The flags.
    ///
    /// Kernel: `dmirror->flags` (7.0).
    pub fn flags(&self) -> u64 {
        self.state.flags.load(Ordering::Acquire)
    }

    /// The device page-table entry for `addr`, if any: the frame (a system
    /// pfn or a device-private offset) and whether it is writable. Stale
    /// entries are not filtered here.
    ///
    /// Kernel: `xa_load(&dmirror->pt, addr >> PAGE_SHIFT)` (7.0).
    pub fn pt_entry(&self, addr: u64) -> Option<(PageFrame, bool)> {
        self.state
            .pt
            .lock()
            .get(&(addr >> PAGE_SHIFT))
            .map(|e| (e.frame, e.write))
    }

    /// Entries in the device page table.
    ///
    /// Kernel: none (model only).
    pub fn nr_pt_entries(&self) -> usize {
        self.state.pt.lock().len()
    }

    fn check_mm(&self, mm: &Arc<Mm>) -> Result<(), Errno> {
        if Arc::as_ptr(mm).addr() != self.mm {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    fn mem(&self) -> &Memory {
        &self.dev.inner.mem
    }

    /// The valid entry for `addr`, dropping a stale one.
    fn lookup(&self, mm: &Mm, pt: &mut BTreeMap<u64, DptEntry>, addr: u64) -> Option<DptEntry> {
        let key = addr >> PAGE_SHIFT;
        let e = *pt.get(&key)?;
        let valid = if e.atomic {
            // Valid while the CPU still holds the device-exclusive entry.
            exclusive_pfn(mm, addr).is_some_and(|p| e.frame == p.into())
        } else {
            cpu_frame(mm, addr).is_some_and(|(f, w)| f == e.frame && (w || !e.write))
        };
        if !valid {
            pt.remove(&key);
            return None;
        }
        Some(e)
    }

    fn load(&self, frame: PageFrame) -> Result<u64, Errno> {
        match frame {
            PageFrame::Pfn(p) => self.mem().sys().read(p),
            PageFrame::DevicePrivate(o) => self.dev.read_page(o),
        }
    }

    /// Copies pages through the device page table into `out` from
    /// `cpages` on; `ENOENT` at the first page without a (valid) entry.
    ///
    /// Kernel: `dmirror_do_read()` (7.0).
    fn do_read(&self, mm: &Mm, cmd: &mut HmmDmirrorCmd, out: &mut [u64]) -> Result<(), Errno> {
        let mut pt = self.state.pt.lock();
        while cmd.cpages < cmd.npages {
            let addr = cmd.addr + cmd.cpages * PAGE_SIZE;
            let e = self.lookup(mm, &mut pt, addr).ok_or(Errno::ENOENT)?;
            out[usize::try_from(cmd.cpages).map_err(|_| Errno::EINVAL)?] = self.load(e.frame)?;
            cmd.cpages += 1;
        }
        Ok(())
    }

    /// Copies `data` into pages through writable device page-table entries,
    /// from `cpages` on; `ENOENT` at the first page without one.
    ///
    /// Kernel: `dmirror_do_write()` (7.0).
    fn do_write(&self, mm: &Mm, cmd: &mut HmmDmirrorCmd, data: &[u64]) -> Result<(), Errno> {
        let mut pt = self.state.pt.lock();
        while cmd.cpages < cmd.npages {
            let addr = cmd.addr + cmd.cpages * PAGE_SIZE;
            let e = self
                .lookup(mm, &mut pt, addr)
                .filter(|e| e.write && !e.atomic)
                .ok_or(Errno::ENOENT)?;
            let v = data[usize::try_from(cmd.cpages).map_err(|_| Errno::EINVAL)?];
            match e.frame {
                PageFrame::Pfn(p) => self.mem().sys().write(p, v)?,
                PageFrame::DevicePrivate(o) => self.dev.write_page(o, v)?,
            }
            cmd.cpages += 1;
        }
        Ok(())
    }

    /// Faults `[start, end)` in through `hmm_range_fault()` (32 pages at a
    /// time) and fills the device page table from the result.
    ///
    /// Kernel: `dmirror_fault()` → `dmirror_range_fault()` →
    /// `dmirror_do_fault()` (7.0).
    fn fault(&self, mm: &Arc<Mm>, start: u64, end: u64, write: bool) -> Result<(), Errno> {
        let mut addr = start;
        while addr < end {
            let next = end.min(addr + HMM_WINDOW * PAGE_SIZE);
            let mut range = HmmRange::new(addr, next, Some(self.dev.owner()));
            range.default_flags = HmmPfn::REQ_FAULT | if write { HmmPfn::REQ_WRITE } else { 0 };
            self.range_fault(mm, &mut range)?;
            let mut pt = self.state.pt.lock();
            for (i, h) in range.hmm_pfns.iter().enumerate() {
                let frame = h.frame().ok_or(Errno::EFAULT)?;
                let w = h.raw() & HmmPfn::WRITE != 0;
                if write && !w {
                    return Err(Errno::EFAULT);
                }
                pt.insert(
                    (addr >> PAGE_SHIFT) + i as u64,
                    DptEntry {
                        frame,
                        write: w,
                        atomic: false,
                    },
                );
            }
            addr = next;
        }
        Ok(())
    }

    /// `hmm_range_fault()`, retried while it reports `EBUSY` (a migration
    /// in flight).
    ///
    /// Kernel: the retry loop of `dmirror_range_fault()` /
    /// `dmirror_range_snapshot()` (bounded by
    /// `HMM_RANGE_DEFAULT_TIMEOUT` there, by a try count here, 7.0).
    fn range_fault(&self, mm: &Arc<Mm>, range: &mut HmmRange) -> Result<(), Errno> {
        let mut tries = 0;
        loop {
            match hmm_range_fault(mm, range) {
                Err(Errno::EBUSY) if tries < 16 => tries += 1,
                r => return r,
            }
        }
    }

    /// The device reads `npages` pages from `addr`, faulting in what its
    /// page table lacks; returns one data word per page. `cmd.faults`
    /// counts fault rounds.
    ///
    /// Kernel: `HMM_DMIRROR_READ`, `dmirror_read()` (7.0).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] for an unaligned `addr`, zero or overflowing
    /// `npages`, or another address space than the mirror's;
    /// [`Errno::EFAULT`] if a page cannot be faulted in (no VMA, no read
    /// access); [`Errno::EBUSY`] if the range keeps changing.
    pub fn read(&self, mm: &Arc<Mm>, cmd: &mut HmmDmirrorCmd) -> Result<Vec<u64>, Errno> {
        self.check_mm(mm)?;
        let (_, end) = cmd.start()?;
        let mut out = vec![0; usize::try_from(cmd.npages).map_err(|_| Errno::EINVAL)?];
        loop {
            match self.do_read(mm, cmd, &mut out) {
                Err(Errno::ENOENT) => {}
                r => return r.map(|()| out),
            }
            if cmd.faults > cmd.npages + 2 {
                return Err(Errno::EBUSY);
            }
            self.fault(mm, cmd.addr + cmd.cpages * PAGE_SIZE, end, false)?;
            cmd.faults += 1;
        }
    }

    /// The device writes `data` (one word per page) to `npages` pages from
    /// `addr`, faulting them in writable as needed.
    ///
    /// Kernel: `HMM_DMIRROR_WRITE`, `dmirror_write()` (7.0).
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read), plus [`Errno::EINVAL`] if `data` does not
    /// hold `npages` words and [`Errno::EPERM`] for a read-only VMA.
    pub fn write(&self, mm: &Arc<Mm>, cmd: &mut HmmDmirrorCmd, data: &[u64]) -> Result<(), Errno> {
        self.check_mm(mm)?;
        let (_, end) = cmd.start()?;
        if data.len() as u64 != cmd.npages {
            return Err(Errno::EINVAL);
        }
        loop {
            match self.do_write(mm, cmd, data) {
                Err(Errno::ENOENT) => {}
                r => return r,
            }
            if cmd.faults > cmd.npages + 2 {
                return Err(Errno::EBUSY);
            }
            self.fault(mm, cmd.addr + cmd.cpages * PAGE_SIZE, end, true)?;
            cmd.faults += 1;
        }
    }

    /// Runs `f` on each window of at most 512 pages of `[start, end)`
    /// inside one VMA with read access.
    fn windows(
        mm: &Mm,
        start: u64,
        end: u64,
        mut f: impl FnMut(&Vma, u64, u64) -> Result<(), Errno>,
    ) -> Result<(), Errno> {
        let mut a = start;
        while a < end {
            let vma = mm.vma_lookup(a).ok_or(Errno::EINVAL)?;
            if !vma.flags().contains(VmFlags::READ) {
                return Err(Errno::EINVAL);
            }
            let next = end.min(a + PMD_SIZE).min(vma.end());
            f(&vma, a, next)?;
            a = next;
        }
        Ok(())
    }

    /// Allocates device destinations for every migrating system source and
    /// copies the data (zeros for holes and the zero page); a compound
    /// source gets an order-9 folio, or single pages when that fails (or
    /// `FAIL_ALLOC` forces it).
    ///
    /// Kernel: `dmirror_migrate_alloc_and_copy()` (7.0).
    fn alloc_and_copy_to_dev(&self, args: &mut MigrateVma<'_>) {
        let dev = &self.dev.inner;
        let n = usize::try_from(args.npages).unwrap_or(0);
        let mut i = 0;
        while i < n {
            let s = args.src[i];
            if !s.contains(MigratePfn::MIGRATE) {
                i += 1;
                continue;
            }
            let src_pfn = match s.frame() {
                Some(PageFrame::Pfn(p)) => Some(p),
                Some(PageFrame::DevicePrivate(_)) => {
                    warn_on!(true, "dmirror: page already in device");
                    i += 1;
                    continue;
                }
                None => None,
            };
            let large = s.contains(MigratePfn::COMPOUND);
            let write = if s.contains(MigratePfn::WRITE) {
                MigratePfn::WRITE
            } else {
                0
            };
            let dpage = if self.state.take_fail_alloc() {
                None
            } else {
                dev.alloc_page(large).ok()
            };
            let nr = if large { BLOCK } else { 1 };
            match dpage {
                Some(off) => {
                    if let Ok(m) = self.fill(off, src_pfn, nr) {
                        let flags = write | if large { MigratePfn::COMPOUND } else { 0 };
                        args.dst[i] = m.with(flags).unwrap_or(m);
                    }
                    i += nr;
                }
                None if !large => i += 1,
                None => {
                    for j in 0..nr.min(n - i) {
                        let pfn = src_pfn.and_then(|p| p.checked_add(PageCount::new(j as u64)));
                        if let Ok(off) = dev.alloc_page(false)
                            && let Ok(m) = self.fill(off, pfn, 1)
                        {
                            args.dst[i + j] = m.with(write).unwrap_or(m);
                        }
                    }
                    i += nr;
                }
            }
        }
    }

    /// Copies `nr` system pages from `src` (zeros without one) into the
    /// device folio at `off`, records this mirror on its pages and returns
    /// its mpfn.
    fn fill(
        &self,
        off: DevicePrivateOffset,
        src: Option<Pfn>,
        nr: usize,
    ) -> Result<MigratePfn, Errno> {
        self.dev
            .inner
            .with_chunk(off, |chunk, idx| {
                for j in 0..nr {
                    let v = match src {
                        Some(p) => self.mem().sys().read(
                            p.checked_add(PageCount::new(j as u64))
                                .ok_or(Errno::EINVAL)?,
                        )?,
                        None => 0,
                    };
                    chunk.ops.set_word(idx + j, v);
                    if let Some(m) = chunk.ops.mirror.get(idx + j) {
                        m.store(self.state.id, Ordering::Release);
                    }
                }
                Ok::<(), Errno>(())
            })
            .ok_or(Errno::EINVAL)??;
        MigratePfn::new(off.into())
    }

    /// Maps every migrated destination into the device page table (512
    /// entries for a compound one), writable if the destination is.
    ///
    /// Kernel: `dmirror_migrate_finalize_and_map()` (7.0).
    fn finalize_and_map(&self, args: &MigrateVma<'_>) {
        let mut pt = self.state.pt.lock();
        for (addr, s, d) in args.entries() {
            if !s.contains(MigratePfn::MIGRATE) {
                continue;
            }
            let Some(PageFrame::DevicePrivate(off)) = d.frame() else {
                continue;
            };
            let nr = if d.contains(MigratePfn::COMPOUND) {
                HPAGE_PMD_NR
            } else {
                1
            };
            for j in 0..nr {
                let Some(o) = off.checked_add(PageCount::new(j)) else {
                    continue;
                };
                pt.insert(
                    (addr >> PAGE_SHIFT) + j,
                    DptEntry {
                        frame: o.into(),
                        write: d.contains(MigratePfn::WRITE),
                        atomic: false,
                    },
                );
            }
        }
    }

    /// Migrates `npages` from `addr` to the device (windows of at most 512
    /// pages in one VMA, `SELECT_SYSTEM | SELECT_COMPOUND`), maps them in
    /// the device page table, then reads the whole range back through it;
    /// returns what the device read. `cpages` is the pages read.
    ///
    /// Kernel: `HMM_DMIRROR_MIGRATE_TO_DEV`, `dmirror_migrate_to_device()` (7.0).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] as for [`read`](Self::read), or when the range
    /// leaves the VMAs or meets one without read access (nothing after it
    /// migrates); [`Errno::ENOENT`] if some page is not in the device page
    /// table afterwards (it could not migrate, e.g. it is another device's
    /// private page).
    pub fn migrate_to_dev(&self, mm: &Arc<Mm>, cmd: &mut HmmDmirrorCmd) -> Result<Vec<u64>, Errno> {
        self.check_mm(mm)?;
        let (start, end) = cmd.start()?;
        Self::windows(mm, start, end, |vma, a, next| {
            let flags = MigrateVmaFlags::SELECT_SYSTEM | MigrateVmaFlags::SELECT_COMPOUND;
            let mut args = MigrateVma::new(mm, vma, a, next, flags, Some(self.dev.owner()));
            migrate_vma_setup(&mut args)?;
            self.alloc_and_copy_to_dev(&mut args);
            migrate_vma_pages(&mut args);
            self.finalize_and_map(&args);
            migrate_vma_finalize(&mut args);
            Ok(())
        })?;
        let mut out = vec![0; usize::try_from(cmd.npages).map_err(|_| Errno::EINVAL)?];
        self.do_read(mm, cmd, &mut out)?;
        Ok(out)
    }

    /// Migrates this device's pages in `npages` from `addr` back to system
    /// RAM (`SELECT_DEVICE_PRIVATE | SELECT_COMPOUND`); `cpages` is the
    /// pages moved.
    ///
    /// Kernel: `HMM_DMIRROR_MIGRATE_TO_SYS`, `dmirror_migrate_to_system()` (7.0).
    ///
    /// # Errors
    ///
    /// As [`migrate_to_dev`](Self::migrate_to_dev) for the range;
    /// [`Errno::ENOMEM`] when system memory runs out, or when
    /// [`FLAG_FAIL_ALLOC`](Self::FLAG_FAIL_ALLOC) meets a small page first
    /// (the window's pages stay on the device, the flag is cleared).
    pub fn migrate_to_sys(&self, mm: &Arc<Mm>, cmd: &mut HmmDmirrorCmd) -> Result<(), Errno> {
        self.check_mm(mm)?;
        let (start, end) = cmd.start()?;
        let mut done = 0;
        let r = Self::windows(mm, start, end, |vma, a, next| {
            let flags = MigrateVmaFlags::SELECT_DEVICE_PRIVATE | MigrateVmaFlags::SELECT_COMPOUND;
            let mut args = MigrateVma::new(mm, vma, a, next, flags, Some(self.dev.owner()));
            migrate_vma_setup(&mut args)?;
            let n = usize::try_from(args.npages).unwrap_or(0);
            let (src, dst) = (&args.src[..n], &mut args.dst[..n]);
            if let Err(e) =
                alloc_and_copy_to_sys(&self.dev.inner, Some(&self.state), a, src, dst, false)
            {
                migrate_vma_finalize(&mut args);
                return Err(e);
            }
            migrate_vma_pages(&mut args);
            done += migrated(&args.src[..n], &args.dst[..n]);
            migrate_vma_finalize(&mut args);
            Ok(())
        });
        cmd.cpages = done;
        r
    }

    /// Reports how the CPU maps each of `npages` pages from `addr`, without
    /// faulting anything (`cpages` = `npages`).
    ///
    /// Kernel: `HMM_DMIRROR_SNAPSHOT`, `dmirror_snapshot()` →
    /// `dmirror_range_snapshot()` → `dmirror_mkentry()` (7.0).
    ///
    /// | CPU entry | byte |
    /// |---|---|
    /// | no VMA, or a VMA without read access | `ERROR` |
    /// | none, or another owner's device page | `NONE` |
    /// | the zero page | `ZERO \| READ` |
    /// | system page | `READ` or `WRITE` |
    /// | this device's page | `DEV_PRIVATE_LOCAL \| READ/WRITE` |
    /// | a same-owner device's page | `DEV_PRIVATE_REMOTE \| READ/WRITE` |
    ///
    /// plus `PMD` for a page mapped by a PMD-sized entry.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read) for the command; [`Errno::EBUSY`] if the
    /// range keeps changing.
    pub fn snapshot(
        &self,
        mm: &Arc<Mm>,
        cmd: &mut HmmDmirrorCmd,
    ) -> Result<Vec<DmirrorProt>, Errno> {
        self.check_mm(mm)?;
        let (start, end) = cmd.start()?;
        let mut out = Vec::with_capacity(usize::try_from(cmd.npages).map_err(|_| Errno::EINVAL)?);
        let mut addr = start;
        while addr < end {
            let next = end.min(addr + HMM_WINDOW * PAGE_SIZE);
            let mut range = HmmRange::new(addr, next, Some(self.dev.owner()));
            self.range_fault(mm, &mut range)?;
            out.extend(range.hmm_pfns.iter().map(|h| self.mkentry(*h)));
            cmd.cpages += (next - addr) / PAGE_SIZE;
            addr = next;
        }
        Ok(out)
    }

    /// Kernel: `dmirror_mkentry()` (7.0).
    fn mkentry(&self, h: HmmPfn) -> DmirrorProt {
        if h.raw() & HmmPfn::ERROR != 0 {
            return DmirrorProt::ERROR;
        }
        let Some((frame, _, write)) = h.decode() else {
            return DmirrorProt::NONE;
        };
        let kind = match frame {
            PageFrame::DevicePrivate(off) if self.dev.owns(off) => DmirrorProt::DEV_PRIVATE_LOCAL,
            PageFrame::DevicePrivate(_) => DmirrorProt::DEV_PRIVATE_REMOTE,
            PageFrame::Pfn(p) if self.mem().sys().is_zero_pfn(p) => DmirrorProt::ZERO,
            PageFrame::Pfn(_) => DmirrorProt::NONE,
        };
        let acc = if write {
            DmirrorProt::WRITE
        } else {
            DmirrorProt::READ
        };
        let order = h.map_order().get();
        let size = if order + PAGE_SHIFT == devpriv_core::consts::PMD_SHIFT {
            DmirrorProt::PMD
        } else if order + PAGE_SHIFT == PUD_SHIFT {
            DmirrorProt::PUD
        } else {
            DmirrorProt::NONE
        };
        kind | acc | size
    }

    /// Evicts and unmaps every chunk of the device (see
    /// [`DmirrorDevice::remove_chunks`]).
    ///
    /// Kernel: `HMM_DMIRROR_RELEASE` → `dmirror_device_remove_chunks()` (7.0).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] for another address space than the mirror's; as
    /// [`DmirrorDevice::remove_chunks`].
    pub fn release(&self, mm: &Arc<Mm>) -> Result<(), Errno> {
        self.check_mm(mm)?;
        self.dev.remove_chunks(mm).map(|_| ())
    }

    /// Sets the mirror's flags ([`FLAG_FAIL_ALLOC`](Self::FLAG_FAIL_ALLOC)).
    ///
    /// Kernel: `HMM_DMIRROR_FLAGS` (`dmirror->flags = cmd.npages`, 7.0).
    pub fn set_flags(&self, flags: u64) {
        self.state.flags.store(flags, Ordering::Release);
    }

    /// Takes exclusive (atomic) access to each of `npages` pages from
    /// `addr` (faulting them in writable, breaking COW), maps them in the
    /// device page table for atomic access, then reads the range through
    /// it; returns what the device read. `cpages` is the pages read.
    ///
    /// Kernel: `HMM_DMIRROR_EXCLUSIVE`, `dmirror_exclusive()` (7.0: one
    /// `make_device_exclusive()` and `dmirror_atomic_map()` per page, then
    /// `dmirror_do_read()`).
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read) for the command; an error of
    /// [`make_device_exclusive`] (`EFAULT` for an address it cannot fault
    /// in writable, `EOPNOTSUPP` for a page that is not anonymous, `EBUSY`)
    /// stops at that page, with the pages before it still exclusive.
    pub fn exclusive(&self, mm: &Arc<Mm>, cmd: &mut HmmDmirrorCmd) -> Result<Vec<u64>, Errno> {
        self.check_mm(mm)?;
        let (start, end) = cmd.start()?;
        let mut addr = start;
        while addr < end {
            let folio = make_device_exclusive(mm, addr)?;
            // dmirror_atomic_map(): the entry names the page, tagged atomic.
            self.state.pt.lock().insert(
                addr >> PAGE_SHIFT,
                DptEntry {
                    frame: folio.pfn().into(),
                    write: false,
                    atomic: true,
                },
            );
            let _ = folio.unlock();
            let _ = folio.put();
            addr += PAGE_SIZE;
        }
        let mut out = vec![0; usize::try_from(cmd.npages).map_err(|_| Errno::EINVAL)?];
        self.do_read(mm, cmd, &mut out)?;
        Ok(out)
    }

    /// Checks that no page of the range is still mapped for atomic access
    /// (a CPU access revokes it).
    ///
    /// Kernel: `HMM_DMIRROR_CHECK_EXCLUSIVE`, `dmirror_check_atomic()` (7.0).
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read) for the command; [`Errno::EPERM`] if a page
    /// is still mapped for atomic access.
    pub fn check_exclusive(&self, mm: &Arc<Mm>, cmd: &mut HmmDmirrorCmd) -> Result<(), Errno> {
        self.check_mm(mm)?;
        let (start, end) = cmd.start()?;
        let mut pt = self.state.pt.lock();
        let mut addr = start;
        while addr < end {
            if self.lookup(mm, &mut pt, addr).is_some_and(|e| e.atomic) {
                return Err(Errno::EPERM);
            }
            addr += PAGE_SIZE;
        }
        Ok(())
    }

    /// Maps the device file at `[start, start + len)`: a private
    /// `VM_MIXEDMAP` VMA whose every page is a new zeroed system page,
    /// inserted read-only (private mappings copy on write).
    ///
    /// Kernel: `mmap(fd of /dev/hmm_dmirrorN)` → `dmirror_fops_mmap()`
    /// (`alloc_page(__GFP_ZERO)`, `vm_insert_page()`, `put_page()`) (7.0).
    ///
    /// # Differences from the kernel
    ///
    /// Shared mappings of the device are refused (`EINVAL`): the model's
    /// shared VMAs need a page cache.
    ///
    /// # Errors
    ///
    /// As [`MmapWriteGuard::mmap_anon`]; [`Errno::EINVAL`] for
    /// [`VmFlags::SHARED`] or another address space than the mirror's;
    /// [`Errno::ENOMEM`] when system memory runs out (the VMA is unmapped
    /// again).
    pub fn mmap(
        &self,
        w: &mut MmapWriteGuard<'_>,
        start: u64,
        len: u64,
        flags: VmFlags,
    ) -> Result<Vma, Errno> {
        if core::ptr::from_ref::<Mm>(w).addr() != self.mm || flags.contains(VmFlags::SHARED) {
            return Err(Errno::EINVAL);
        }
        let vma = w.mmap_anon(start, len, flags.union(VmFlags::MIXEDMAP))?;
        let sys = self.mem().sys();
        let mut addr = start;
        let r = (|| {
            while addr < vma.end() {
                let page = sys.alloc_folio(Order::ZERO)?;
                let r = w.map_file_pte(addr, page, false);
                let _ = page.put();
                r?;
                addr += PAGE_SIZE;
            }
            Ok(())
        })();
        if let Err(e) = r {
            let _ = w.munmap(vma.start(), vma.end() - vma.start());
            return Err(e);
        }
        Ok(vma)
    }

    /// Closes the mirror: evicts every page of every chunk of the device
    /// back to system memory (wherever it is mapped) and drops the device
    /// page table. The chunks stay, their pages back on the free lists.
    /// Returns the pages evicted.
    ///
    /// Kernel: the last `close()` of `/dev/hmm_dmirrorN` →
    /// `dmirror_fops_release()` (`dmirror_device_evict_chunk()` per chunk) (7.0).
    ///
    /// # Errors
    ///
    /// [`Errno::ENOMEM`] if system memory runs out during eviction (the
    /// kernel cannot fail here; the mirror is closed anyway).
    pub fn close(self, mm: &Mm) -> Result<u64, Errno> {
        let inner = &self.dev.inner;
        let chunks = inner.chunks.lock().clone();
        let mut evicted = 0;
        let mut r = Ok(());
        for chunk in &chunks {
            match inner.evict_chunk(mm, chunk) {
                Ok(n) => evicted += n,
                Err(e) => r = Err(e),
            }
        }
        self.state.pt.lock().clear();
        r.map(|()| evicted)
    }
}
