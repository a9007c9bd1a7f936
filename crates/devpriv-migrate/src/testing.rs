//! A small device driver for tests, benchmarks and examples: device-private
//! memory from one pagemap, migrated to and from system RAM with
//! `migrate_vma_*`.
//!
//! Kernel: `lib/test_hmm.c` (dmirror): `dmirror_allocate_chunk()`,
//! `dmirror_devmem_alloc_page()`, `dmirror_devmem_free()` (the `folio_free`
//! op), `dmirror_migrate_to_device()` / `dmirror_migrate_alloc_and_copy()`,
//! `dmirror_migrate_to_system()` / `dmirror_devmem_fault_alloc_and_copy()`,
//! `dmirror_devmem_fault()` (the `migrate_to_ram` op),
//! `dmirror_device_evict_chunk()`, and the `HMM_DMIRROR_FLAG_FAIL_ALLOC`
//! flag.
//!
//! A [`TestDevice`] owns one device-private pagemap (one dmirror "chunk").
//! Its pages sit on two free lists — PMD-aligned 512-page blocks for
//! order-9 folios and single pages — and every device page has one data
//! word, the device-side copy of the system page's word (dmirror's
//! backing page). `folio_free` puts a folio back on the list of its order,
//! so a freed large folio is reused at the same order (as dmirror, which is
//! why `test_hmm` never hit the stale-metadata bugs of §5; after a split the
//! pieces come back as single pages).
//!
//! ```
//! use devpriv_core::{Errno, Order, PageCount, Pfn, PAGE_SIZE};
//! use devpriv_migrate::memory::{PMD_SIZE, VmFlags};
//! use devpriv_migrate::testing::TestDevice;
//! use devpriv_migrate::{handle_mm_fault, FaultFlags, Memory, Mm, SystemMemory};
//! use devpriv_pagemap::{DevicePrivateSpace, Owner};
//! use std::sync::Arc;
//!
//! let sys = Arc::new(SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(1024))?);
//! let mem = Memory::new(sys, Arc::new(DevicePrivateSpace::new()));
//! let dev = TestDevice::new(&mem, Owner(1), PageCount::new(1024))?;
//! let base = 0x7f00_0000_0000;
//! let mut mm = Mm::default();
//! mm.mmap_anon(base, PMD_SIZE, VmFlags::RW)?;
//! let folio = mem.sys().alloc_folio(Order::HPAGE_PMD)?;
//! mm.map_folio_pmd(base, folio, true)?;
//! folio.put()?;
//! mm.write_user(mem.sys(), base + PAGE_SIZE, 42)?;
//! let mm = Arc::new(mm);
//!
//! // One order-9 device folio, then back by a CPU fault.
//! assert_eq!(dev.migrate_to_device(&mm, base, base + PMD_SIZE)?, 512);
//! handle_mm_fault(&mem, &mm, base + PAGE_SIZE, FaultFlags::READ)?;
//! assert_eq!(mm.read_user(mem.sys(), base + PAGE_SIZE), Ok(42));
//! dev.check_idle().map_err(|_| Errno::EBUSY)?;
//! # Ok::<(), Errno>(())
//! ```

use crate::memory::{FaultContext, Mm, PMD_SIZE};
use crate::migrate_device::{
    MigratePfn, MigrateVma, MigrateVmaFlags, migrate_device_finalize, migrate_device_pages,
    migrate_device_range, migrate_vma_finalize, migrate_vma_pages, migrate_vma_setup,
};
use crate::rmap::Memory;
use core::fmt;
use devpriv_core::sync::Mutex;
use devpriv_core::sync::atomic::{AtomicU64, Ordering};
use devpriv_core::{
    DevicePrivateOffset, Errno, HPAGE_PMD_NR, Order, PAGE_SIZE, PageCount, PageFrame, Pfn,
};
use devpriv_pagemap::{
    DevPagemap, DevPagemapOps, Folio, MemoryType, Owner, PageRef, PagemapParams, VmFault,
    zone_device_folio_init,
};
use std::sync::Arc;

/// Pages in a PMD-sized block, as `usize`.
const BLOCK: usize = 512;
const _: () = assert!(BLOCK as u64 == HPAGE_PMD_NR);

/// The driver's free lists (indices into the pagemap's pages array).
#[derive(Debug, Default)]
struct FreeLists {
    /// Heads of free 512-page blocks. Kernel: `mdevice->free_folios`.
    large: Vec<usize>,
    /// Free single pages. Kernel: `mdevice->free_pages`.
    small: Vec<usize>,
}

/// The part of the driver the pagemap calls back into.
///
/// Kernel: `struct dmirror_device` (free lists, counters) and
/// `dmirror_devmem_ops`.
struct DeviceState {
    owner: Owner,
    free: Mutex<FreeLists>,
    /// One data word per device page. Kernel: the backing pages.
    data: Box<[AtomicU64]>,
    /// Forced large-allocation failures left (both directions).
    fail_alloc: AtomicU64,
    /// `migrate_to_ram` calls.
    faults: AtomicU64,
    /// `folio_free` calls. Kernel: `mdevice->cfree`.
    frees: AtomicU64,
}

impl fmt::Debug for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceState")
            .field("owner", &self.owner)
            .field("free", &*self.free.lock())
            .field("faults", &self.faults.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl DeviceState {
    fn take_fail(&self) -> bool {
        let mut cur = self.fail_alloc.load(Ordering::Acquire);
        while cur > 0 {
            match self.fail_alloc.compare_exchange(
                cur,
                cur - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
    }

    fn word(&self, idx: usize) -> Option<&AtomicU64> {
        self.data.get(idx)
    }

    /// Allocates system destinations for every migrating device source,
    /// copying the device data into them; a large source gets an order-9
    /// folio unless that fails (or is forced to), then 512 order-0 pages.
    ///
    /// Kernel: `dmirror_devmem_fault_alloc_and_copy()`.
    fn alloc_and_copy_to_sys(
        &self,
        mem: &Memory,
        first: DevicePrivateOffset,
        src: &[MigratePfn],
        dst: &mut [MigratePfn],
        allow_split: bool,
    ) -> Result<(), Errno> {
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
            let idx = off
                .checked_offset_from(first)
                .and_then(|c| usize::try_from(c.get()).ok())
                .ok_or(Errno::EINVAL)?;
            if s.contains(MigratePfn::COMPOUND) {
                let big = if self.take_fail() {
                    None
                } else {
                    mem.sys().alloc_folio(Order::HPAGE_PMD).ok()
                };
                if let Some(f) = big {
                    if !f.trylock() {
                        let _ = f.put();
                        return Err(Errno::EBUSY);
                    }
                    for j in 0..BLOCK {
                        let v = self.word(idx + j).map_or(0, |w| w.load(Ordering::Acquire));
                        mem.sys()
                            .write(f.page_pfn(j as u64).ok_or(Errno::EINVAL)?, v)?;
                    }
                    dst[i] = MigratePfn::new(f.pfn().into())?.with(MigratePfn::COMPOUND)?;
                    i += BLOCK;
                    continue;
                }
                if !allow_split {
                    i += BLOCK;
                    continue;
                }
                for j in 0..BLOCK.min(src.len() - i) {
                    dst[i + j] = self.small_sys_copy(mem, idx + j)?;
                }
                i += BLOCK;
                continue;
            }
            dst[i] = self.small_sys_copy(mem, idx)?;
            i += 1;
        }
        Ok(())
    }

    fn small_sys_copy(&self, mem: &Memory, idx: usize) -> Result<MigratePfn, Errno> {
        let f = mem.sys().alloc_folio(Order::ZERO)?;
        if !f.trylock() {
            let _ = f.put();
            return Err(Errno::EBUSY);
        }
        let v = self.word(idx).map_or(0, |w| w.load(Ordering::Acquire));
        mem.sys().write(f.pfn(), v)?;
        MigratePfn::new(f.pfn().into())
    }
}

impl DevPagemapOps for DeviceState {
    /// Kernel: `dmirror_devmem_free()`.
    fn folio_free(&self, folio: Folio<'_>) {
        let idx = folio.page().index();
        let mut free = self.free.lock();
        if folio.order() == Order::HPAGE_PMD {
            free.large.push(idx);
        } else {
            let nr = usize::try_from(folio.nr_pages().get()).unwrap_or(1);
            free.small.extend(idx..idx + nr);
        }
        self.frees.fetch_add(1, Ordering::Relaxed);
    }

    /// Kernel: `dmirror_devmem_fault()`: migrate the faulting page back (the
    /// whole folio when the fault came through a PMD).
    fn migrate_to_ram(&self, vmf: &VmFault<'_>) -> Result<(), Errno> {
        let ctx = FaultContext::from_vmf(vmf).ok_or(Errno::EINVAL)?;
        self.faults.fetch_add(1, Ordering::Relaxed);
        let order = if vmf.pmd {
            vmf.page.folio().order()
        } else {
            Order::ZERO
        };
        let size = PAGE_SIZE << order.get();
        let start = vmf.address & !(size - 1);
        let vma = ctx.mm.vma_lookup(vmf.address).ok_or(Errno::EFAULT)?;
        let mut flags = MigrateVmaFlags::SELECT_DEVICE_PRIVATE;
        if order != Order::ZERO {
            flags = flags | MigrateVmaFlags::SELECT_COMPOUND;
        }
        let first = vmf.page.owner().first_offset();
        let fault_page = first
            .checked_add(PageCount::new(vmf.page.index() as u64))
            .ok_or(Errno::EINVAL)?;
        let mut args = MigrateVma::new(&ctx.mm, vma, start, start + size, flags, Some(self.owner));
        args.fault_page = Some(fault_page);
        migrate_vma_setup(&ctx.mem, &mut args)?;
        let n = usize::try_from(args.npages).unwrap_or(0);
        let (src, dst) = (&args.src[..n], &mut args.dst[..n]);
        let r = self.alloc_and_copy_to_sys(&ctx.mem, first, src, dst, true);
        migrate_vma_pages(&ctx.mem, &mut args);
        migrate_vma_finalize(&ctx.mem, &mut args);
        r
    }
}

/// A device with `nr_pages` of device-private memory, its free lists and
/// its data, for end-to-end tests.
///
/// Kernel: a `dmirror_device` with one chunk (`lib/test_hmm.c`).
///
/// # Differences from the kernel
///
/// One chunk, sized at creation: with no single page left a free 512-page
/// block is carved into single pages; with no block left a large
/// allocation is `ENOMEM` (dmirror allocates a new chunk either way). There is no device page table (`dmirror->pt`): the device reads
/// its data words directly ([`TestDevice::read`]).
pub struct TestDevice {
    mem: Memory,
    state: Arc<DeviceState>,
    pgmap: Arc<DevPagemap>,
    baseline_refs: i64,
}

impl fmt::Debug for TestDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDevice")
            .field("pgmap", &self.pgmap)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl TestDevice {
    /// Maps `nr_pages` of device-private memory owned by `owner` into
    /// `mem`'s space and puts every page on a free list: each PMD-aligned
    /// run of 512 offsets as a block, the rest as single pages.
    ///
    /// Kernel: `dmirror_allocate_chunk()` (series: through
    /// `memremap_device_private_pagemap()`).
    ///
    /// # Errors
    ///
    /// As `memremap_device_private_pagemap()` (`EINVAL` for zero pages,
    /// `EBUSY` when the space is full, `ENOMEM`).
    pub fn new(mem: &Memory, owner: Owner, nr_pages: PageCount) -> Result<TestDevice, Errno> {
        let n = usize::try_from(nr_pages.get()).map_err(|_| Errno::EINVAL)?;
        let state = Arc::new(DeviceState {
            owner,
            free: Mutex::new(FreeLists::default()),
            data: (0..n).map(|_| AtomicU64::new(0)).collect(),
            fail_alloc: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            frees: AtomicU64::new(0),
        });
        let ops: Arc<dyn DevPagemapOps> = state.clone();
        let params = PagemapParams {
            memory_type: MemoryType::Private,
            nr_pages,
            owner: Some(owner),
            ops: Some(ops),
        };
        let pgmap = mem.space().memremap_device_private_pagemap(params, -1)?;
        let first = pgmap.first_offset().get();
        {
            let mut free = state.free.lock();
            let mut i = 0;
            while i < n {
                let aligned = (first + i as u64).is_multiple_of(HPAGE_PMD_NR);
                if aligned && i + BLOCK <= n {
                    free.large.push(i);
                    i += BLOCK;
                } else {
                    free.small.push(i);
                    i += 1;
                }
            }
            // Pop in address order.
            free.large.reverse();
            free.small.reverse();
        }
        let baseline_refs = pgmap.percpu_ref().count();
        Ok(TestDevice {
            mem: mem.clone(),
            state,
            pgmap,
            baseline_refs,
        })
    }

    /// The pagemap.
    ///
    /// Kernel: `dmirror_chunk::pagemap`.
    pub fn pgmap(&self) -> &Arc<DevPagemap> {
        &self.pgmap
    }

    /// The owner cookie (`pgmap->owner`, `migrate_vma::pgmap_owner`).
    ///
    /// Kernel: `dmirror->mdevice`.
    pub fn owner(&self) -> Owner {
        self.state.owner
    }

    /// Forces the next `n` large allocations (device or system) to fail.
    ///
    /// Kernel: `HMM_DMIRROR_FLAG_FAIL_ALLOC` (which fails one).
    pub fn set_fail_alloc(&self, n: u64) {
        self.state.fail_alloc.store(n, Ordering::Release);
    }

    /// `migrate_to_ram` calls so far.
    ///
    /// Kernel: none (model only).
    pub fn faults(&self) -> u64 {
        self.state.faults.load(Ordering::Acquire)
    }

    /// `folio_free` calls so far.
    ///
    /// Kernel: `mdevice->cfree`, roughly.
    pub fn frees(&self) -> u64 {
        self.state.frees.load(Ordering::Acquire)
    }

    /// Pages on the free lists.
    ///
    /// Kernel: none (model only).
    pub fn nr_free_pages(&self) -> u64 {
        let free = self.state.free.lock();
        (free.large.len() * BLOCK + free.small.len()) as u64
    }

    /// The device's data word for the page at `offset`.
    ///
    /// Kernel: reading the backing page (`BACKING_PAGE(page)`).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `offset` is not one of this device's pages.
    pub fn read(&self, offset: DevicePrivateOffset) -> Result<u64, Errno> {
        let idx = self.index_of(offset)?;
        Ok(self.state.data[idx].load(Ordering::Acquire))
    }

    /// Sets the device's data word for the page at `offset` (a device
    /// write).
    ///
    /// Kernel: writing the backing page.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read).
    pub fn write(&self, offset: DevicePrivateOffset, value: u64) -> Result<(), Errno> {
        let idx = self.index_of(offset)?;
        self.state.data[idx].store(value, Ordering::Release);
        Ok(())
    }

    fn index_of(&self, offset: DevicePrivateOffset) -> Result<usize, Errno> {
        let i = offset
            .checked_offset_from(self.pgmap.first_offset())
            .ok_or(Errno::EINVAL)?
            .get();
        let i = usize::try_from(i).map_err(|_| Errno::EINVAL)?;
        if i >= self.state.data.len() {
            return Err(Errno::EINVAL);
        }
        Ok(i)
    }

    fn offset_of(&self, idx: usize) -> Result<DevicePrivateOffset, Errno> {
        self.pgmap
            .first_offset()
            .checked_add(PageCount::new(idx as u64))
            .ok_or(Errno::EINVAL)
    }

    /// Allocates a device folio of order 9 (`large`) or 0: locked, one
    /// reference, `zone_device_data`-style data word untouched.
    ///
    /// Kernel: `dmirror_devmem_alloc_page(dmirror, is_large)`
    /// (`zone_device_folio_init()`).
    ///
    /// # Errors
    ///
    /// [`Errno::ENOMEM`] if the free list is empty or a forced failure is
    /// pending (large only); an `InitError` as its errno.
    pub fn alloc_folio(&self, large: bool) -> Result<Folio<'_>, Errno> {
        if large && self.state.take_fail() {
            return Err(Errno::ENOMEM);
        }
        let idx = {
            let mut free = self.state.free.lock();
            if large {
                free.large.pop()
            } else {
                if free.small.is_empty()
                    && let Some(block) = free.large.pop()
                {
                    // Out of single pages: carve a free block (dmirror
                    // would allocate a new chunk of small pages).
                    free.small.extend((block..block + BLOCK).rev());
                }
                free.small.pop()
            }
        }
        .ok_or(Errno::ENOMEM)?;
        let order = if large { Order::HPAGE_PMD } else { Order::ZERO };
        let page = PageRef::new(&self.pgmap, idx).ok_or(Errno::EINVAL)?;
        match zone_device_folio_init(Folio::from_head(page), &self.pgmap, order) {
            Ok(f) => Ok(f),
            Err(e) => {
                let mut free = self.state.free.lock();
                if large {
                    free.large.push(idx);
                } else {
                    free.small.push(idx);
                }
                Err(e.into())
            }
        }
    }

    /// Allocates device destinations for every migrating system source and
    /// copies the data (zeros for holes); a compound source gets an order-9
    /// folio, or 512 single pages if that fails.
    ///
    /// Kernel: `dmirror_migrate_alloc_and_copy()`.
    fn alloc_and_copy_to_device(&self, args: &mut MigrateVma<'_>) {
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
                _ => None,
            };
            let write = if s.contains(MigratePfn::WRITE) {
                MigratePfn::WRITE
            } else {
                0
            };
            if s.contains(MigratePfn::COMPOUND) {
                if let Ok(f) = self.alloc_folio(true)
                    && let Ok(m) = self.fill(f, src_pfn, BLOCK)
                {
                    args.dst[i] = m.with(MigratePfn::COMPOUND | write).unwrap_or(m);
                    i += BLOCK;
                    continue;
                }
                for j in 0..BLOCK.min(n - i) {
                    let pfn = src_pfn.and_then(|p| p.checked_add(PageCount::new(j as u64)));
                    if let Ok(f) = self.alloc_folio(false)
                        && let Ok(m) = self.fill(f, pfn, 1)
                    {
                        args.dst[i + j] = m.with(write).unwrap_or(m);
                    }
                }
                i += BLOCK;
                continue;
            }
            if let Ok(f) = self.alloc_folio(false)
                && let Ok(m) = self.fill(f, src_pfn, 1)
            {
                args.dst[i] = m.with(write).unwrap_or(m);
            }
            i += 1;
        }
    }

    /// Copies `nr` system pages from `src` (zeros without one) into the
    /// device folio `f` and returns its mpfn.
    fn fill(&self, f: Folio<'_>, src: Option<Pfn>, nr: usize) -> Result<MigratePfn, Errno> {
        let idx = f.page().index();
        for j in 0..nr {
            let v = match src {
                Some(p) => self.mem.sys().read(
                    p.checked_add(PageCount::new(j as u64))
                        .ok_or(Errno::EINVAL)?,
                )?,
                None => 0,
            };
            self.state.data[idx + j].store(v, Ordering::Release);
        }
        MigratePfn::new(self.offset_of(idx)?.into())
    }

    /// Entries that migrated: `MIGRATE` in `src` with a destination, 512
    /// for a compound one.
    fn migrated(args: &MigrateVma<'_>) -> u64 {
        let n = usize::try_from(args.npages).unwrap_or(0);
        args.src[..n]
            .iter()
            .zip(&args.dst[..n])
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

    /// Migrates `[start, end)` of `mm` to the device, in windows of at most
    /// 512 pages within one VMA, with `SELECT_SYSTEM | SELECT_COMPOUND`.
    /// Returns the number of pages migrated.
    ///
    /// Kernel: `dmirror_migrate_to_device()` (`HMM_DMIRROR_MIGRATE_TO_DEV`).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] for an unaligned range or one that leaves the
    /// VMAs (or reaches one without `VM_READ`); errors of
    /// `migrate_vma_setup()`.
    pub fn migrate_to_device(&self, mm: &Mm, start: u64, end: u64) -> Result<u64, Errno> {
        self.windows(mm, start, end, |vma, a, next| {
            let flags = MigrateVmaFlags::SELECT_SYSTEM | MigrateVmaFlags::SELECT_COMPOUND;
            let mut args = MigrateVma::new(mm, vma, a, next, flags, Some(self.state.owner));
            migrate_vma_setup(&self.mem, &mut args)?;
            self.alloc_and_copy_to_device(&mut args);
            migrate_vma_pages(&self.mem, &mut args);
            let done = Self::migrated(&args);
            migrate_vma_finalize(&self.mem, &mut args);
            Ok(done)
        })
    }

    /// Migrates this device's pages in `[start, end)` back to system RAM,
    /// with `SELECT_DEVICE_PRIVATE | SELECT_COMPOUND`. Returns the number
    /// of pages migrated.
    ///
    /// Kernel: `dmirror_migrate_to_system()` (`HMM_DMIRROR_MIGRATE_TO_SYS`).
    ///
    /// # Errors
    ///
    /// As [`migrate_to_device`](Self::migrate_to_device); `ENOMEM` when
    /// system memory runs out.
    pub fn migrate_to_system(&self, mm: &Mm, start: u64, end: u64) -> Result<u64, Errno> {
        self.windows(mm, start, end, |vma, a, next| {
            let flags = MigrateVmaFlags::SELECT_DEVICE_PRIVATE | MigrateVmaFlags::SELECT_COMPOUND;
            let mut args = MigrateVma::new(mm, vma, a, next, flags, Some(self.state.owner));
            migrate_vma_setup(&self.mem, &mut args)?;
            let n = usize::try_from(args.npages).unwrap_or(0);
            let first = self.pgmap.first_offset();
            let (src, dst) = (&args.src[..n], &mut args.dst[..n]);
            let r = self
                .state
                .alloc_and_copy_to_sys(&self.mem, first, src, dst, true);
            migrate_vma_pages(&self.mem, &mut args);
            let done = Self::migrated(&args);
            migrate_vma_finalize(&self.mem, &mut args);
            r.map(|()| done)
        })
    }

    fn windows(
        &self,
        mm: &Mm,
        start: u64,
        end: u64,
        mut f: impl FnMut(&crate::memory::Vma, u64, u64) -> Result<u64, Errno>,
    ) -> Result<u64, Errno> {
        if !start.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE) || end <= start {
            return Err(Errno::EINVAL);
        }
        let mut done = 0;
        let mut a = start;
        while a < end {
            let vma = mm.vma_lookup(a).ok_or(Errno::EINVAL)?;
            if !vma.flags().contains(crate::memory::VmFlags::READ) {
                return Err(Errno::EINVAL);
            }
            let next = end.min(a + PMD_SIZE).min(vma.end());
            done += f(vma, a, next)?;
            a = next;
        }
        Ok(done)
    }

    /// Evicts every page of the device to system RAM without knowing the
    /// VMAs (`mm` is where the rmap walk looks). Returns the number of
    /// pages migrated.
    ///
    /// Kernel: `dmirror_device_evict_chunk()` (`migrate_device_range()`,
    /// `migrate_device_pages()`, `migrate_device_finalize()`).
    ///
    /// # Errors
    ///
    /// Errors of `migrate_device_range()`; `ENOMEM` when system memory runs
    /// out (the kernel allocates with `__GFP_NOFAIL`).
    pub fn evict_all(&self, mm: &Mm) -> Result<u64, Errno> {
        let n = usize::try_from(self.pgmap.nr_pages().get()).map_err(|_| Errno::EINVAL)?;
        let mut src = vec![MigratePfn::NONE; n];
        let mut dst = vec![MigratePfn::NONE; n];
        let start = MigratePfn::new(self.pgmap.first_offset().into())?;
        migrate_device_range(&self.mem, mm, &mut src, start, n as u64)?;
        let first = self.pgmap.first_offset();
        let r = self
            .state
            .alloc_and_copy_to_sys(&self.mem, first, &src, &mut dst, false);
        migrate_device_pages(&self.mem, &mut src, &mut dst)?;
        let done = src
            .iter()
            .zip(&dst)
            .filter(|(s, d)| s.contains(MigratePfn::MIGRATE) && d.contains(MigratePfn::VALID))
            .map(|(s, _)| {
                if s.contains(MigratePfn::COMPOUND) {
                    HPAGE_PMD_NR
                } else {
                    1
                }
            })
            .sum();
        migrate_device_finalize(&self.mem, mm, &src, &dst)?;
        r.map(|()| done)
    }

    /// Checks that the device is idle: every page back on a free list with
    /// refcount 0, and the pagemap's reference back at its value after
    /// creation.
    ///
    /// Kernel: none (model only; what `memunmap` would wait for).
    ///
    /// # Errors
    ///
    /// A message naming what is still in use.
    pub fn check_idle(&self) -> Result<(), String> {
        let free = self.nr_free_pages();
        let total = self.pgmap.nr_pages().get();
        if free != total {
            return Err(format!("{} of {total} device pages not free", total - free));
        }
        let refs = self.pgmap.percpu_ref().count();
        if refs != self.baseline_refs {
            return Err(format!("pgmap ref {refs}, baseline {}", self.baseline_refs));
        }
        if let Some((i, p)) = self
            .pgmap
            .pages()
            .iter()
            .enumerate()
            .find(|(_, p)| p.refcount() != 0)
        {
            return Err(format!("device page {i} has refcount {}", p.refcount()));
        }
        Ok(())
    }

    /// Tears the device down (the pagemap is unmapped once every page is
    /// free; this waits for that).
    ///
    /// Kernel: `dmirror_device_remove_chunks()` →
    /// `memunmap_device_private_pagemap()`.
    ///
    /// # Errors
    ///
    /// As `memunmap_device_private_pagemap()`.
    pub fn remove(self) -> Result<(), Errno> {
        self.mem
            .space()
            .memunmap_device_private_pagemap(&self.pgmap)
    }
}
