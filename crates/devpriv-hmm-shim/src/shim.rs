//! The process's model state and the translation of each call into model
//! calls.
//!
//! One [`Shim`] per process (made on the first `open()` of
//! `/dev/hmm_dmirror0` or `1`) holds a machine of the model: system
//! memory, two dmirror devices with different owners (units 0 and 1), and
//! the process's address space ([`Mm`]), which mirrors every mapping the
//! process creates from then on. Each page of those mappings has a record
//! ([`Rec`]): the protection the real page has now, and which model page
//! (frame and data word) its real bytes stand for.
//!
//! # The rules that keep real memory and the model in step
//!
//! - **Protection is a function of the model** ([`Shim::reconcile`]): a
//!   page the model maps present gets the VMA's protection (read-only if
//!   the entry is); anything else (no entry yet, a device-private,
//!   device-exclusive or migration entry) is `PROT_NONE`, so the CPU's
//!   next access traps into the model's fault path.
//! - **Data words are handles to real bytes** ([`Store`]): before the
//!   model reads words (an ioctl's range, a faulting page) the real bytes
//!   of the pages the CPU could have written are interned into their
//!   model page ([`Shim::before`]); after the model has changed which page
//!   backs an address, or a page's word, its bytes are written back.
//! - **Nothing else**: every count, errno and byte the process sees comes
//!   from the model; the shim only converts arguments and copies bytes.
//!   Three capability refusals behave like a kernel without the feature:
//!   `MAP_HUGETLB` (`ENOMEM`: no huge pages), `/dev/hmm_dmirror2` and `3`
//!   (`ENOENT`: no device-coherent memory), `/sys/kernel/debug/gup_test`
//!   (`ENOENT`: no `CONFIG_GUP_TEST`).

use crate::store::{PAGE, PageBytes, Store};
use crate::sys;
use core::ffi::c_int;
use devpriv_core::sync::Mutex;
use devpriv_core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use devpriv_core::{Errno, PAGE_SIZE, PageCount, Pfn};
use devpriv_drivers::test_hmm::{Dmirror, DmirrorConfig, DmirrorDevice, HmmDmirrorCmd};
use devpriv_migrate::{
    AddressSpace, AddressSpaceOps, Advice, FaultFlags, MappingKind, Memory, Mm, MmConfig,
    MremapFlags, SystemMemory, VmFlags, Vma, handle_mm_fault,
};
use devpriv_pagemap::{DevicePrivateSpace, Owner};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The `/proc/self/mem` descriptor of this process (reopened after
/// `fork`), for the page-cache hooks; `u32::MAX` until opened.
pub(crate) static PROC_MEM: AtomicU32 = AtomicU32::new(u32::MAX);

/// [`PROC_MEM`] as a descriptor.
fn proc_mem() -> c_int {
    c_int::try_from(PROC_MEM.load(Ordering::Acquire)).unwrap_or(-1)
}

fn set_proc_mem(fd: c_int) {
    PROC_MEM.store(u32::try_from(fd).unwrap_or(u32::MAX), Ordering::Release);
}

/// `_IOWR('H', n, struct hmm_dmirror_cmd)`: the test driver's ioctls
/// (`lib/test_hmm_uapi.h`). The struct is five `__u64`s: 40 bytes.
pub(crate) const fn hmm_ioctl(n: u64) -> u64 {
    (3 << 30) | (40 << 16) | ((b'H' as u64) << 8) | n
}

/// The command numbers (the low byte of the request).
mod cmd {
    pub(super) const READ: u64 = 0;
    pub(super) const WRITE: u64 = 1;
    pub(super) const MIGRATE_TO_DEV: u64 = 2;
    pub(super) const MIGRATE_TO_SYS: u64 = 3;
    pub(super) const SNAPSHOT: u64 = 4;
    pub(super) const EXCLUSIVE: u64 = 5;
    pub(super) const CHECK_EXCLUSIVE: u64 = 6;
    pub(super) const RELEASE: u64 = 7;
    pub(super) const FLAGS: u64 = 8;
}

/// `struct hmm_dmirror_cmd` as the process lays it out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct UserCmd {
    pub(crate) addr: u64,
    pub(crate) ptr: u64,
    pub(crate) npages: u64,
    pub(crate) cpages: u64,
    pub(crate) faults: u64,
}

/// What the shim knows about one page of a tracked mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rec {
    /// The real protection (`PROT_*`) now; -1 when unknown.
    prot: c_int,
    /// The model page (pfn, data word) the real bytes were last made equal
    /// to (they may be newer since, if the page is writable).
    synced: Option<(u64, u64)>,
}

/// One open `/dev/hmm_dmirrorN`.
struct Mirror {
    dmirror: Dmirror,
    /// The process that opened it (a child inherits the descriptor, not
    /// the mirror: the kernel's mirror stays on the parent's mm).
    pid: c_int,
}

/// Reads a file's pages for its page cache: `pread()` of a duplicated
/// descriptor.
#[derive(Debug)]
struct FileOps {
    fd: c_int,
    store: Arc<Mutex<Store>>,
}

impl AddressSpaceOps for FileOps {
    fn read_folio(&self, index: u64) -> Result<u64, Errno> {
        let bytes = sys::pread_page(self.fd, index * PAGE_SIZE).ok_or(Errno::EFAULT)?;
        Ok(self.store.lock().intern(&bytes))
    }
}

/// Reads a shmem object's pages from the process's own shared mapping of
/// it (another process may have written them).
#[derive(Debug)]
struct ShmemOps {
    /// The address page 0 of the object is mapped at in this process.
    base: AtomicU64,
    store: Arc<Mutex<Store>>,
}

impl AddressSpaceOps for ShmemOps {
    fn read_folio(&self, index: u64) -> Result<u64, Errno> {
        let addr = self.base.load(Ordering::Acquire) + index * PAGE_SIZE;
        let bytes = sys::pread_page(proc_mem(), addr).ok_or(Errno::EFAULT)?;
        Ok(self.store.lock().intern(&bytes))
    }
}

/// Settings read from the environment at activation.
#[derive(Clone, Copy, Debug)]
struct Config {
    /// System memory pages (`DEVPRIV_SHIM_SYS_PAGES`, default 1 GiB).
    sys_pages: u64,
    /// Device chunk pages (`DEVPRIV_SHIM_CHUNK_PAGES`, default the
    /// kernel's 256 MiB).
    chunk_pages: u64,
    /// Log every interposed call (`DEVPRIV_SHIM_TRACE=1`).
    trace: bool,
}

impl Config {
    fn from_env() -> Config {
        let num = |k: &str, d: u64| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        Config {
            sys_pages: num("DEVPRIV_SHIM_SYS_PAGES", 1 << 18),
            chunk_pages: num(
                "DEVPRIV_SHIM_CHUNK_PAGES",
                devpriv_drivers::test_hmm::DEVMEM_CHUNK_PAGES.get(),
            ),
            trace: std::env::var("DEVPRIV_SHIM_TRACE").is_ok_and(|v| v == "1"),
        }
    }
}

/// The largest command buffer the shim copies (1 GiB); larger ones fail
/// with `ENOMEM`, as the kernel's bounce buffer would.
const MAX_BOUNCE: u64 = 1 << 30;

/// The model machine and this process's place in it.
pub(crate) struct Shim {
    config: Config,
    devs: [DmirrorDevice; 2],
    mm: Arc<Mm>,
    pid: c_int,
    /// Address spaces of the other processes this one forked from or
    /// into (children until reaped), keeping map counts and the rmap as
    /// the kernel has them.
    ghosts: Vec<(c_int, Arc<Mm>)>,
    mirrors: BTreeMap<c_int, Mirror>,
    files: HashMap<(u64, u64), Arc<AddressSpace>>,
    shmem: Vec<(Arc<AddressSpace>, Arc<ShmemOps>)>,
    store: Arc<Mutex<Store>>,
    pages: BTreeMap<u64, Rec>,
    proc_mem: c_int,
    /// The last faulting address and how often in a row.
    last_fault: (u64, u32),
}

/// How often the same address may fault in a row before the shim gives
/// up (the model and the real protections disagree).
const MAX_SAME_FAULT: u32 = 64;

/// `PROT_*` for a VMA's access flags.
fn vma_prot(flags: VmFlags, write: bool) -> c_int {
    if !flags.contains(VmFlags::READ) {
        return libc::PROT_NONE;
    }
    let mut p = libc::PROT_READ;
    if write && flags.contains(VmFlags::WRITE) {
        p |= libc::PROT_WRITE;
    }
    if flags.contains(VmFlags::EXEC) {
        p |= libc::PROT_EXEC;
    }
    p
}

/// `VmFlags` for `PROT_*`.
fn prot_flags(prot: c_int) -> VmFlags {
    let mut f = VmFlags::default();
    if prot & libc::PROT_READ != 0 {
        f = f | VmFlags::READ;
    }
    if prot & libc::PROT_WRITE != 0 {
        f = f | VmFlags::WRITE;
    }
    if prot & libc::PROT_EXEC != 0 {
        f = f | VmFlags::EXEC;
    }
    f
}

fn pages_of(start: u64, end: u64) -> impl Iterator<Item = u64> {
    (start..end).step_by(PAGE)
}

fn errno_of(e: Errno) -> c_int {
    -e.to_kernel()
}

impl Shim {
    /// The machine: system memory at pfn `0x10_0000`, two devices (owners
    /// differ: units 0 and 1 are different `mdevice`s), this process's
    /// address space.
    ///
    /// Kernel: loading `test_hmm.ko` (`hmm_dmirror_init()`), plus the
    /// process's `mm_struct` (7.0).
    pub(crate) fn new() -> Result<Shim, Errno> {
        let config = Config::from_env();
        let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(config.sys_pages))?;
        let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
        let dc = DmirrorConfig::with_chunk_pages(PageCount::new(config.chunk_pages));
        let devs = [
            DmirrorDevice::new(&mem, Owner(0xd0), dc)?,
            DmirrorDevice::new(&mem, Owner(0xd1), dc)?,
        ];
        let mm = Mm::new(&mem, MmConfig::default());
        let proc_mem = sys::open_proc_self_mem();
        if proc_mem < 0 {
            return Err(Errno::EFAULT);
        }
        set_proc_mem(proc_mem);
        Ok(Shim {
            config,
            devs,
            mm,
            pid: sys::getpid(),
            ghosts: Vec::new(),
            mirrors: BTreeMap::new(),
            files: HashMap::new(),
            shmem: Vec::new(),
            store: Arc::new(Mutex::new(Store::default())),
            pages: BTreeMap::new(),
            proc_mem,
            last_fault: (0, 0),
        })
    }

    fn trace(&self, what: impl FnOnce() -> String) {
        if self.config.trace {
            sys::say(&what());
        }
    }

    /// `true` if any page of `[start, start + len)` is tracked memory.
    fn tracked_overlap(&self, start: u64, len: u64) -> bool {
        let end = start.saturating_add(len);
        self.mm
            .vmas()
            .iter()
            .any(|v| v.start() < end && start < v.end())
    }

    /// `true` if `addr` is tracked memory.
    pub(crate) fn is_tracked(&self, addr: u64) -> bool {
        self.mm.vma_lookup(addr).is_some()
    }

    // -----------------------------------------------------------------
    // Keeping real memory and the model in step.
    // -----------------------------------------------------------------

    /// The real bytes of the page at `a` (whatever its protection).
    fn read_real(&self, a: u64) -> Option<PageBytes> {
        sys::pread_page(self.proc_mem, a)
    }

    /// Makes the real page at `a` hold `bytes`; `prot` is its current
    /// protection (restored if it had to be lifted).
    fn write_real(&self, a: u64, bytes: &PageBytes, prot: c_int) {
        if sys::pwrite_page(self.proc_mem, a, bytes) {
            return;
        }
        // A shared mapping without write permission refuses FOLL_FORCE
        // writes: lift the protection for the copy.
        if sys::mprotect(a, PAGE_SIZE, libc::PROT_READ | libc::PROT_WRITE) == 0 {
            // SAFETY: the page is tracked (so the process's code treats
            // it as the shim's while the shim lock is held), mapped, and
            // writable for the length of one page.
            unsafe { sys::copy_to_user(a, bytes) };
            let _ = sys::mprotect(a, PAGE_SIZE, if prot < 0 { libc::PROT_NONE } else { prot });
        } else {
            sys::say(&format!("cannot write back page {a:#x}"));
        }
    }

    /// The protection the page at `a` of `vma` should have, and the model
    /// page (pfn, word) it maps, if a present entry maps one.
    fn desired(&self, vma: &Vma, a: u64) -> (c_int, Option<(u64, u64)>) {
        let mm = &self.mm;
        let sys = mm.memory().sys();
        let mapped = match mm.pmdp_get_lockless(a) {
            Some(p) if p.is_trans_huge() => Some((
                p.pfn().get() + ((a % devpriv_migrate::PMD_SIZE) / PAGE_SIZE),
                p.is_write(),
            )),
            Some(p) if p.is_table() => mm
                .ptep_get_lockless(a)
                .filter(|e| e.is_present())
                .map(|e| (e.pfn().get(), e.is_write())),
            _ => None,
        };
        match mapped {
            Some((pfn, write)) => {
                let word = sys.read(Pfn::new(pfn)).unwrap_or(0);
                (vma_prot(vma.flags(), write), Some((pfn, word)))
            }
            None => (libc::PROT_NONE, None),
        }
    }

    /// Interns the real bytes of every page of `[start, end)` the CPU may
    /// have changed since they were last synchronised (writable now, or
    /// shared with other processes) into the model page the page maps.
    ///
    /// Kernel: none (the CPU writes straight into the page the kernel
    /// copies).
    fn before(&mut self, start: u64, end: u64) {
        let vmas = self.mm.vmas();
        for v in vmas.iter().filter(|v| v.start() < end && start < v.end()) {
            let shared = v.flags().contains(VmFlags::SHARED);
            for a in pages_of(start.max(v.start()), end.min(v.end())) {
                let Some(rec) = self.pages.get(&a).copied() else {
                    continue;
                };
                if rec.prot & libc::PROT_WRITE == 0 && !shared {
                    continue;
                }
                let (_, Some((pfn, w))) = self.desired(v, a) else {
                    continue;
                };
                let Some(bytes) = self.read_real(a) else {
                    continue;
                };
                let h = self.store.lock().intern(&bytes);
                if h != w {
                    let _ = self.mm.memory().sys().write(Pfn::new(pfn), h);
                }
                if let Some(r) = self.pages.get_mut(&a) {
                    r.synced = Some((pfn, h));
                }
            }
        }
    }

    /// Brings the real pages of `[start, end)` in line with the model:
    /// bytes first (a page whose model page or word changed gets that
    /// word's bytes; a page losing write permission has its bytes interned
    /// first), then protections (coalesced `mprotect()` runs).
    pub(crate) fn reconcile(&mut self, start: u64, end: u64) {
        let vmas = self.mm.vmas();
        let mut runs: Vec<(u64, u64, c_int)> = Vec::new();
        for v in vmas.iter().filter(|v| v.start() < end && start < v.end()) {
            for a in pages_of(start.max(v.start()), end.min(v.end())) {
                let (prot, data) = self.desired(v, a);
                let rec = *self.pages.entry(a).or_insert(Rec {
                    prot: -1,
                    synced: None,
                });
                let mut synced = rec.synced;
                if let Some((pfn, w)) = data {
                    if rec.synced == Some((pfn, w)) {
                        // The model did not change it; the real bytes may
                        // be newer. Capture them before write goes away.
                        if rec.prot & libc::PROT_WRITE != 0
                            && prot & libc::PROT_WRITE == 0
                            && let Some(bytes) = self.read_real(a)
                        {
                            let h = self.store.lock().intern(&bytes);
                            if h != w {
                                let _ = self.mm.memory().sys().write(Pfn::new(pfn), h);
                            }
                            synced = Some((pfn, h));
                        }
                    } else {
                        // The model maps another page here, or changed
                        // its word: the real bytes must follow.
                        let real = self.read_real(a);
                        let differs = match &real {
                            Some(b) => self.store.lock().intern(b) != w,
                            None => true,
                        };
                        if differs {
                            let bytes = *self.store.lock().bytes(w);
                            self.write_real(a, &bytes, rec.prot);
                        }
                        synced = Some((pfn, w));
                    }
                }
                if let Some(r) = self.pages.get_mut(&a) {
                    r.synced = synced;
                }
                if prot != rec.prot {
                    match runs.last_mut() {
                        Some((_, e, p)) if *e == a && *p == prot => *e = a + PAGE_SIZE,
                        _ => runs.push((a, a + PAGE_SIZE, prot)),
                    }
                }
            }
        }
        for (s, e, prot) in runs {
            if sys::mprotect(s, e - s, prot) == 0 {
                for a in pages_of(s, e) {
                    if let Some(r) = self.pages.get_mut(&a) {
                        r.prot = prot;
                    }
                }
            } else {
                sys::say(&format!("mprotect({s:#x}, {:#x}) failed", e - s));
            }
        }
    }

    /// [`reconcile`](Self::reconcile) over every tracked mapping.
    fn reconcile_all(&mut self) {
        let ranges: Vec<(u64, u64)> = self
            .mm
            .vmas()
            .iter()
            .map(|v| (v.start(), v.end()))
            .collect();
        for (s, e) in ranges {
            self.reconcile(s, e);
        }
    }

    /// `[start, end)` widened to whole 2 MiB blocks (what a fault or a
    /// migration may change around a range).
    fn around(start: u64, end: u64) -> (u64, u64) {
        let pmd = devpriv_migrate::PMD_SIZE;
        (start & !(pmd - 1), end.saturating_add(pmd - 1) & !(pmd - 1))
    }

    // -----------------------------------------------------------------
    // Files.
    // -----------------------------------------------------------------

    /// Opens unit `unit` (0 or 1): a new mirror of this process's address
    /// space on that device, behind a `memfd` standing in for the device
    /// file.
    ///
    /// Kernel: `dmirror_fops_open()` (7.0).
    pub(crate) fn open_dmirror(&mut self, unit: usize) -> c_int {
        let Some(dev) = self.devs.get(unit) else {
            sys::set_errno(libc::ENOENT);
            return -1;
        };
        let name = if unit == 0 {
            c"hmm_dmirror0"
        } else {
            c"hmm_dmirror1"
        };
        let fd = sys::memfd_create(name);
        if fd < 0 {
            return -1;
        }
        let dmirror = dev.open(&self.mm);
        self.mirrors.insert(
            fd,
            Mirror {
                dmirror,
                pid: self.pid,
            },
        );
        self.trace(|| format!("open /dev/hmm_dmirror{unit} -> fd {fd}"));
        fd
    }

    /// Closes a dmirror descriptor: the last close of the mirror evicts
    /// the device's pages (the real pages then get their bytes back).
    ///
    /// Kernel: `dmirror_fops_release()` (7.0).
    pub(crate) fn close_dmirror(&mut self, fd: c_int) {
        let Some(m) = self.mirrors.remove(&fd) else {
            return;
        };
        if m.pid != self.pid {
            // An inherited descriptor: the parent still holds the file.
            return;
        }
        let r = m.dmirror.close(&self.mm);
        self.trace(|| {
            let stored = self.store.lock().len();
            format!("close fd {fd}: evicted {r:?} ({stored} distinct pages stored)")
        });
        self.reconcile_all();
    }

    /// The page cache of the file behind `fd`, shared by every mapping of
    /// the same inode.
    fn file_mapping(&mut self, fd: c_int) -> Option<Arc<AddressSpace>> {
        let id = sys::file_id(fd)?;
        if let Some(a) = self.files.get(&id) {
            return Some(Arc::clone(a));
        }
        let dupfd = sys::dup(fd);
        if dupfd < 0 {
            return None;
        }
        let ops: Arc<dyn AddressSpaceOps> = Arc::new(FileOps {
            fd: dupfd,
            store: Arc::clone(&self.store),
        });
        let a = AddressSpace::new(self.mm.memory(), MappingKind::File, Some(ops));
        self.files.insert(id, Arc::clone(&a));
        Some(a)
    }

    // -----------------------------------------------------------------
    // Mappings.
    // -----------------------------------------------------------------

    /// `mmap()`: the real mapping first (its address and errors are the
    /// real kernel's), then the same mapping in the model. A mapping of a
    /// dmirror descriptor is a private anonymous mapping in reality and
    /// the device's `mmap` in the model.
    ///
    /// Kernel: `do_mmap()` (and `dmirror_fops_mmap()`) (7.0).
    pub(crate) fn mmap(
        &mut self,
        addr: u64,
        len: u64,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        off: i64,
    ) -> Option<u64> {
        if flags & libc::MAP_HUGETLB != 0 {
            // Behaves like a kernel with no free huge pages.
            sys::say("refused MAP_HUGETLB (the model has no hugetlbfs: ENOMEM)");
            sys::set_errno(libc::ENOMEM);
            return None;
        }
        let anon = flags & libc::MAP_ANONYMOUS != 0;
        let mirror = !anon && self.mirrors.contains_key(&fd);
        let real = if mirror {
            let f = (flags & !(libc::MAP_SHARED | libc::MAP_SHARED_VALIDATE))
                | libc::MAP_PRIVATE
                | libc::MAP_ANONYMOUS;
            sys::mmap(addr, len, prot, f, -1, 0)?
        } else {
            sys::mmap(addr, len, prot, flags, fd, off)?
        };
        let len = len.next_multiple_of(PAGE_SIZE);
        // MAP_FIXED replaced whatever the model had there.
        self.model_unmap(real, len);
        let vmf = prot_flags(prot);
        let shared = flags & libc::MAP_TYPE == libc::MAP_SHARED
            || flags & libc::MAP_TYPE == libc::MAP_SHARED_VALIDATE;
        let pgoff = u64::try_from(off).unwrap_or(0) / PAGE_SIZE;
        let r = if mirror {
            let m = &self.mirrors[&fd];
            if m.pid == self.pid {
                m.dmirror
                    .mmap(&mut self.mm.mmap_write_lock(), real, len, vmf)
                    .map(|_| ())
            } else {
                Err(Errno::EINVAL)
            }
        } else if anon && shared {
            let ops = Arc::new(ShmemOps {
                base: AtomicU64::new(real),
                store: Arc::clone(&self.store),
            });
            let dyn_ops: Arc<dyn AddressSpaceOps> = ops.clone();
            let a = AddressSpace::new(self.mm.memory(), MappingKind::Shmem, Some(dyn_ops));
            self.shmem.push((Arc::clone(&a), ops));
            self.mm
                .mmap_write_lock()
                .mmap_file(real, len, vmf | VmFlags::SHARED, a, 0)
                .map(|_| ())
        } else if anon {
            self.mm
                .mmap_write_lock()
                .mmap_anon(real, len, vmf)
                .map(|_| ())
        } else {
            match self.file_mapping(fd) {
                Some(a) => {
                    let f = if shared { vmf | VmFlags::SHARED } else { vmf };
                    self.mm
                        .mmap_write_lock()
                        .mmap_file(real, len, f, a, pgoff)
                        .map(|_| ())
                }
                None => Err(Errno::EINVAL),
            }
        };
        self.trace(|| {
            format!("mmap {real:#x}+{len:#x} prot {prot} flags {flags:#x} fd {fd}: {r:?}")
        });
        if let Err(e) = r {
            sys::say(&format!("mapping {real:#x}+{len:#x} left untracked ({e})"));
            return Some(real);
        }
        for a in pages_of(real, real + len) {
            self.pages.insert(a, Rec { prot, synced: None });
        }
        self.reconcile(real, real + len);
        Some(real)
    }

    /// Removes `[start, start + len)` from the model and the records.
    fn model_unmap(&mut self, start: u64, len: u64) {
        if !self.tracked_overlap(start, len) {
            return;
        }
        let r = self.mm.mmap_write_lock().munmap(start, len);
        self.trace(|| format!("model munmap {start:#x}+{len:#x}: {r:?}"));
        let keys: Vec<u64> = self
            .pages
            .range(start..start.saturating_add(len))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.pages.remove(&k);
        }
    }

    /// `munmap()`: real, then model.
    ///
    /// Kernel: `do_vmi_munmap()` (main).
    pub(crate) fn munmap(&mut self, addr: u64, len: u64) -> c_int {
        let r = sys::munmap(addr, len);
        if r == 0 {
            self.model_unmap(addr, len.next_multiple_of(PAGE_SIZE));
        }
        r
    }

    /// `mprotect()`: the bytes of the range are captured, the real call
    /// made (its errors are the kernel's), the model changes the VMAs and
    /// entries, and the real protections follow the model.
    ///
    /// Kernel: `do_mprotect_pkey()` (main).
    pub(crate) fn mprotect(&mut self, addr: u64, len: u64, prot: c_int) -> c_int {
        let len = len.next_multiple_of(PAGE_SIZE);
        let end = addr.saturating_add(len);
        self.before(addr, end);
        let r = sys::mprotect(addr, len, prot);
        if r != 0 {
            return r;
        }
        for (_, rec) in self.pages.range_mut(addr..end) {
            rec.prot = prot;
        }
        for (s, e) in self.tracked_parts(addr, end) {
            let m = self
                .mm
                .mmap_write_lock()
                .mprotect(s, e - s, prot_flags(prot));
            self.trace(|| format!("mprotect {s:#x}+{:#x} {prot}: {m:?}", e - s));
        }
        let (s, e) = Self::around(addr, end);
        self.reconcile(s, e);
        0
    }

    /// The tracked pieces of `[start, end)`.
    fn tracked_parts(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for v in self
            .mm
            .vmas()
            .iter()
            .filter(|v| v.start() < end && start < v.end())
        {
            let (s, e) = (v.start().max(start), v.end().min(end));
            match out.last_mut() {
                Some((_, le)) if *le == s => *le = e,
                _ => out.push((s, e)),
            }
        }
        out
    }

    /// `madvise()`. `MADV_DONTNEED`, `MADV_HUGEPAGE` and
    /// `MADV_NOHUGEPAGE` go to the real kernel and the model;
    /// `MADV_FREE` only to the model (the real kernel could discard the
    /// bytes of pages the model still holds); other advice only to the
    /// real kernel.
    ///
    /// Kernel: `do_madvise()` (main).
    pub(crate) fn madvise(&mut self, addr: u64, len: u64, advice: c_int) -> c_int {
        let end = addr.saturating_add(len.next_multiple_of(PAGE_SIZE));
        let model = Advice::from_raw(advice);
        if model != Some(Advice::Free) {
            let r = sys::madvise(addr, len, advice);
            if r != 0 || model.is_none() {
                return r;
            }
        }
        let Some(advice) = model else { return 0 };
        let mut result = 0;
        for (s, e) in self.tracked_parts(addr, end) {
            let m = self.mm.mmap_write_lock().madvise(s, e - s, advice);
            self.trace(|| format!("madvise {s:#x}+{:#x} {advice:?}: {m:?}", e - s));
            if let Err(err) = m {
                result = errno_of(err);
            }
        }
        if advice == Advice::DontNeed {
            // The real pages were dropped too: their bytes are now the
            // file's or zeros, which the next mapping compares against.
            for (_, rec) in self.pages.range_mut(addr..end) {
                rec.synced = None;
            }
        }
        let (s, e) = Self::around(addr, end);
        self.reconcile(s, e);
        if result != 0 {
            sys::set_errno(result);
            return -1;
        }
        0
    }

    /// `mremap()`: the old range is made one real VMA again (it was split
    /// by per-page protections) by protecting it `PROT_NONE` (its bytes
    /// stay), the real call moves the pages, the model moves its entries,
    /// and the records follow.
    ///
    /// Kernel: `do_mremap()` (main).
    pub(crate) fn mremap(
        &mut self,
        old: u64,
        old_len: u64,
        new_len: u64,
        flags: c_int,
        new: u64,
    ) -> Option<u64> {
        let old_len_p = old_len.next_multiple_of(PAGE_SIZE);
        let new_len_p = new_len.next_multiple_of(PAGE_SIZE);
        let old_end = old.saturating_add(old_len_p);
        self.before(old, old_end);
        let _ = sys::mprotect(old, old_len_p, libc::PROT_NONE);
        for (_, rec) in self.pages.range_mut(old..old_end) {
            rec.prot = libc::PROT_NONE;
        }
        let Some(real) = sys::mremap(old, old_len, new_len, flags, new) else {
            let e = sys::errno();
            self.reconcile(old, old_end);
            sys::set_errno(e);
            return None;
        };
        let mut mf = MremapFlags::default();
        for (bit, f) in [
            (libc::MREMAP_MAYMOVE, MremapFlags::MAYMOVE),
            (libc::MREMAP_FIXED, MremapFlags::FIXED),
            (libc::MREMAP_DONTUNMAP, MremapFlags::DONTUNMAP),
        ] {
            if flags & bit != 0 {
                mf = mf | f;
            }
        }
        let m = self
            .mm
            .mmap_write_lock()
            .mremap(old, old_len_p, new_len_p, mf, real);
        self.trace(|| format!("mremap {old:#x}+{old_len:#x} -> {real:#x}+{new_len:#x}: {m:?}"));
        // The records follow the pages.
        let moved = old_len_p.min(new_len_p);
        let recs: Vec<(u64, Rec)> = self
            .pages
            .range(old..old_end)
            .map(|(k, r)| (*k, *r))
            .collect();
        if real != old {
            for (k, _) in &recs {
                self.pages.remove(k);
            }
            let dontunmap = flags & libc::MREMAP_DONTUNMAP != 0;
            for (k, r) in recs {
                if k < old + moved {
                    self.pages.insert(k - old + real, r);
                }
                if dontunmap {
                    self.pages.insert(
                        k,
                        Rec {
                            prot: libc::PROT_NONE,
                            synced: None,
                        },
                    );
                }
            }
        } else {
            for (k, _) in recs.iter().filter(|(k, _)| *k >= old + moved) {
                self.pages.remove(k);
            }
        }
        for a in pages_of(real + moved, real + new_len_p) {
            self.pages.insert(
                a,
                Rec {
                    prot: libc::PROT_NONE,
                    synced: None,
                },
            );
        }
        // A moved shmem mapping: its hook reads from the new place.
        for (a, ops) in &self.shmem {
            if let Some(v) = self.mm.vma_lookup(real)
                && v.file().is_some_and(|f| Arc::ptr_eq(f, a))
            {
                ops.base
                    .store(real - v.pgoff() * PAGE_SIZE, Ordering::Release);
            }
        }
        let (s, e) = Self::around(real, real + new_len_p);
        self.reconcile(s, e);
        let (s, e) = Self::around(old, old_end);
        self.reconcile(s, e);
        Some(real)
    }

    // -----------------------------------------------------------------
    // fork and wait.
    // -----------------------------------------------------------------

    /// Before the real `fork()`: the model forks the address space (COW
    /// write-protection, device-private entries made read-only in both,
    /// device-exclusive entries restored) and the parent's real pages
    /// follow, so the child inherits the right protections.
    ///
    /// Kernel: `dup_mmap()` (main).
    pub(crate) fn fork_prepare(&mut self) -> Option<Arc<Mm>> {
        match self.mm.fork() {
            Ok(child) => {
                self.reconcile_all();
                Some(child)
            }
            Err(e) => {
                sys::say(&format!("model fork failed ({e}); the child is untracked"));
                None
            }
        }
    }

    /// In the parent: keep the child's address space as a ghost (its
    /// mappings count, as the kernel's do) until it is reaped.
    pub(crate) fn fork_parent(&mut self, pid: c_int, child: Arc<Mm>) {
        self.ghosts.push((pid, child));
    }

    /// In the child: its address space is the model's copy; the parent's
    /// becomes a ghost. Protections follow the child's entries (shared
    /// mappings were not copied: their pages fault in again).
    pub(crate) fn fork_child(&mut self, child: Arc<Mm>) {
        let fd = sys::open_proc_self_mem();
        if fd >= 0 {
            let _ = sys::close(self.proc_mem);
            self.proc_mem = fd;
            set_proc_mem(fd);
        }
        let parent = core::mem::replace(&mut self.mm, child);
        // The parent is never reaped from here: key 0 matches no child.
        self.ghosts.push((0, parent));
        self.pid = sys::getpid();
        self.reconcile_all();
    }

    /// A child was reaped: its address space goes (`exit_mmap()`).
    pub(crate) fn reap(&mut self, pid: c_int) {
        self.ghosts.retain(|(p, _)| *p != pid);
    }

    // -----------------------------------------------------------------
    // CPU faults.
    // -----------------------------------------------------------------

    /// A CPU access to tracked memory trapped at `addr`: the model handles
    /// the fault and the real page follows. Returns `false` when the model
    /// says `SIGSEGV` (no VMA, or the VMA does not allow the access).
    ///
    /// Kernel: `handle_mm_fault()` (from the arch page-fault handler) (main).
    pub(crate) fn fault(&mut self, addr: u64, write_hint: bool) -> bool {
        let a = addr & !(PAGE_SIZE - 1);
        if self.mm.vma_lookup(a).is_none() {
            return false;
        }
        // A read of a readable page does not trap: this is a write.
        let readable = self
            .pages
            .get(&a)
            .is_some_and(|r| r.prot >= 0 && r.prot & libc::PROT_READ != 0);
        let write = write_hint || readable;
        if self.last_fault.0 == a {
            self.last_fault.1 += 1;
            if self.last_fault.1 > MAX_SAME_FAULT {
                sys::say(&format!(
                    "address {a:#x} keeps faulting ({} times): model and real protections disagree",
                    self.last_fault.1
                ));
                std::process::abort();
            }
        } else {
            self.last_fault = (a, 1);
        }
        self.before(a, a + PAGE_SIZE);
        let flags = if write {
            FaultFlags::WRITE
        } else {
            FaultFlags::READ
        };
        let r = handle_mm_fault(&self.mm, a, flags);
        self.trace(|| format!("fault {a:#x} write {write}: {r:?}"));
        if r.is_err() {
            return false;
        }
        let (s, e) = Self::around(a, a + PAGE_SIZE);
        self.reconcile(s, e);
        true
    }

    // -----------------------------------------------------------------
    // ioctl.
    // -----------------------------------------------------------------

    /// One `ioctl()` on a dmirror descriptor: the command struct is read
    /// from the process, the model runs the command, data pages are copied
    /// as the driver's bounce buffer would, and the struct is written back
    /// on success. Returns the errno on failure.
    ///
    /// Kernel: `dmirror_fops_unlocked_ioctl()` (7.0).
    ///
    /// # Safety
    ///
    /// `arg` is the process's pointer to a `struct hmm_dmirror_cmd`, valid
    /// for reads and writes, and not tracked memory (checked).
    pub(crate) unsafe fn ioctl(&mut self, fd: c_int, req: u64, arg: u64) -> Result<(), c_int> {
        let Some(m) = self.mirrors.get(&fd) else {
            return Err(libc::EBADF);
        };
        if m.pid != self.pid {
            sys::say(
                "ioctl on a dmirror descriptor inherited from the parent: its mirror is on the parent's address space, which a child cannot reach here",
            );
            return Err(libc::EINVAL);
        }
        let size = core::mem::size_of::<UserCmd>() as u64;
        if arg == 0 || self.tracked_overlap(arg, size) {
            return Err(libc::EFAULT);
        }
        // SAFETY: the caller guarantees `arg`; it is untracked memory.
        let raw = unsafe { sys::copy_from_user(arg, core::mem::size_of::<UserCmd>()) };
        let mut user = UserCmd::default();
        for (i, f) in [
            &mut user.addr,
            &mut user.ptr,
            &mut user.npages,
            &mut user.cpages,
            &mut user.faults,
        ]
        .into_iter()
        .enumerate()
        {
            let mut b = [0u8; 8];
            b.copy_from_slice(&raw[i * 8..i * 8 + 8]);
            *f = u64::from_ne_bytes(b);
        }
        if req & !0xff != hmm_ioctl(0) {
            return Err(libc::EINVAL);
        }
        let n = req & 0xff;
        let mut cmd = HmmDmirrorCmd::new(user.addr, user.npages);
        // The checks at the top of the driver's ioctl, for every command.
        let (start, end) = cmd.check().map_err(errno_of)?;
        self.trace(|| {
            format!(
                "ioctl fd {fd} cmd {n} addr {start:#x} npages {}",
                user.npages
            )
        });
        let (ws, we) = Self::around(start, end);
        let out: Result<Option<Vec<u8>>, Errno> = match n {
            cmd::READ | cmd::MIGRATE_TO_DEV | cmd::EXCLUSIVE => {
                self.before(start, end);
                let m = &self.mirrors[&fd].dmirror;
                let words = match n {
                    cmd::READ => m.read(&self.mm, &mut cmd),
                    cmd::MIGRATE_TO_DEV => m.migrate_to_dev(&self.mm, &mut cmd),
                    _ => m.exclusive(&self.mm, &mut cmd),
                };
                words.map(|w| Some(self.bytes_of(&w)))
            }
            cmd::WRITE => {
                self.before(start, end);
                let len = user.npages.saturating_mul(PAGE_SIZE);
                if len > MAX_BOUNCE {
                    return Err(libc::ENOMEM);
                }
                if self.tracked_overlap(user.ptr, len) {
                    return Err(libc::EFAULT);
                }
                // SAFETY: `ptr` is the process's buffer of `npages` pages
                // (the test's bounce buffer), not tracked memory.
                let data =
                    unsafe { sys::copy_from_user(user.ptr, usize::try_from(len).unwrap_or(0)) };
                let words: Vec<u64> = {
                    let mut store = self.store.lock();
                    data.chunks_exact(PAGE)
                        .map(|c| {
                            let mut p = [0u8; PAGE];
                            p.copy_from_slice(c);
                            store.intern(&p)
                        })
                        .collect()
                };
                self.mirrors[&fd]
                    .dmirror
                    .write(&self.mm, &mut cmd, &words)
                    .map(|()| None)
            }
            cmd::MIGRATE_TO_SYS => self.mirrors[&fd]
                .dmirror
                .migrate_to_sys(&self.mm, &mut cmd)
                .map(|()| None),
            cmd::SNAPSHOT => self.mirrors[&fd]
                .dmirror
                .snapshot(&self.mm, &mut cmd)
                .map(|s| Some(s.iter().map(|p| p.raw()).collect())),
            cmd::CHECK_EXCLUSIVE => self.mirrors[&fd]
                .dmirror
                .check_exclusive(&self.mm, &mut cmd)
                .map(|()| None),
            cmd::RELEASE => self.mirrors[&fd].dmirror.release(&self.mm).map(|()| None),
            cmd::FLAGS => {
                self.mirrors[&fd].dmirror.set_flags(user.npages);
                Ok(None)
            }
            _ => Err(Errno::EINVAL),
        };
        // Whatever happened, the real pages follow the model.
        if n == cmd::RELEASE {
            self.reconcile_all();
        } else {
            self.reconcile(ws, we);
        }
        let out = out.map_err(errno_of)?;
        if let Some(bytes) = out {
            if self.tracked_overlap(user.ptr, bytes.len() as u64) {
                return Err(libc::EFAULT);
            }
            // SAFETY: `ptr` is the process's buffer, at least this long
            // (the driver writes the same length), not tracked memory.
            unsafe { sys::copy_to_user(user.ptr, &bytes) };
        }
        user.cpages = cmd.cpages;
        user.faults = cmd.faults;
        let mut back = Vec::with_capacity(40);
        for f in [user.addr, user.ptr, user.npages, user.cpages, user.faults] {
            back.extend_from_slice(&f.to_ne_bytes());
        }
        // SAFETY: as for the read of `arg` above.
        unsafe { sys::copy_to_user(arg, &back) };
        Ok(())
    }

    /// The bytes of pages with the given words (the bounce buffer).
    fn bytes_of(&self, words: &[u64]) -> Vec<u8> {
        let store = self.store.lock();
        let mut out = Vec::with_capacity(words.len() * PAGE);
        for w in words {
            out.extend_from_slice(store.bytes(*w));
        }
        out
    }
}
