//! The device-private address space, `dev_pagemap`, memremap/memunmap, and
//! offset ↔ page lookups.
//!
//! Kernel: `mm/memremap.c`, `include/linux/memremap.h`, `mm/mm_init.c`
//! (`__init_zone_device_page`), after Jordan Niethe's "Remove device private
//! pages from physical address space" (v6, 13/13).
//!
//! The kernel's global `device_private_pgmap_tree` becomes a
//! [`DevicePrivateSpace`] value. It owns the range tree (the truth, keyed by
//! device-private **bytes** like the kernel) and a section index in front of
//! it (the fast path, `sparse.rs`). Readers enter a [`SpaceReadGuard`] and
//! then resolve offsets without locks and without writing shared memory.
//!
//! # Teardown order (hazard H15)
//!
//! The kernel's `memunmap_device_private_pagemap()` frees the pages array
//! and *then* erases the tree entry, so a lookup in between would index
//! freed memory. The model does it the other way round: kill the ref, wait
//! for every allocated page to be freed, unpublish from the index, erase
//! from the tree, and only then let the pages array go — when the last
//! `Arc<DevPagemap>` drops, which for the space's own copies is after the
//! tree's grace period. A reader that found the pagemap before the erase
//! therefore still holds valid memory.

mod folio;
#[allow(
    unsafe_code,
    reason = "the per-page pagemap array: mmap and its entries"
)]
pub(crate) mod pgmap_array;
mod validate;
pub use folio::{
    InitError, folio_get, folio_put, free_zone_device_folio, zone_device_folio_init,
    zone_device_page_init, zone_device_private_split_cb,
};
pub use validate::{SectionSlot, ValidateError};

use crate::mm_types::{Folio, Page, PageRef, PgmapCookie, word};
use crate::page_flags::{PG_RESERVED, ZONE_DEVICE, page_cpupid_reset_last, page_links};
use crate::percpu_refcount::{Completion, PercpuRef};
use crate::sparse::{Hit, IndexView, SectionIndex, Slot, StaleBase};
pub(crate) use crate::sparse_vmemmap::Memmap;
use crate::sparse_vmemmap::Vmemmap;
use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use devpriv_core::sync::{Mutex, TrackedCell};
use devpriv_core::{
    DevicePrivateAddr, DevicePrivateOffset, Errno, PAGE_SHIFT, PAGE_SIZE, PageCount, PagingMode,
    warn_on, warn_on_once,
};
use devpriv_rangetree::RangeTree;
use pgmap_array::PgmapArray;
use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

/// What kind of device memory a pagemap describes.
///
/// Kernel: `enum memory_type`, `include/linux/memremap.h` (0 is unused,
/// "catch uninitialised", main).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MemoryType {
    /// CPU cannot access it; mapped only through special swap-like entries.
    ///
    /// Kernel: `MEMORY_DEVICE_PRIVATE` (main).
    Private = 1,
    /// CPU-coherent device memory.
    ///
    /// Kernel: `MEMORY_DEVICE_COHERENT` (main).
    Coherent = 2,
    /// Kernel: `MEMORY_DEVICE_FS_DAX` (main).
    FsDax = 3,
    /// Kernel: `MEMORY_DEVICE_GENERIC` (main).
    Generic = 4,
    /// Kernel: `MEMORY_DEVICE_PCI_P2PDMA` (main).
    PciP2pDma = 5,
}

/// The driver's opaque owner cookie, compared against
/// `migrate_vma.pgmap_owner` and `hmm_range.dev_private_owner`.
///
/// Kernel: `void *dev_pagemap::owner` (main).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Owner(pub u64);

/// What a CPU fault on a device-private entry hands to `migrate_to_ram`.
///
/// Kernel: `struct vm_fault`, `include/linux/mm.h` (the fields the
/// device-private path uses, main).
///
/// # Differences from the kernel
///
/// The page-table context (`vma`, `pte`, `pmd`) belongs to the migrate
/// crate, which passes it through `ctx`; a driver reads it with
/// [`VmFault::context`].
pub struct VmFault<'a> {
    /// The faulting device-private page (`vmf->page`).
    pub page: PageRef<'a>,
    /// The faulting virtual address (`vmf->address`).
    pub address: u64,
    /// `true` when the fault came through a PMD entry (`vmf->pte == NULL`).
    pub pmd: bool,
    /// Context from the caller (the process address space, in the migrate
    /// crate).
    pub ctx: Option<&'a (dyn std::any::Any + Sync)>,
}

impl<'a> VmFault<'a> {
    /// The caller's context, if it is a `T`: for a fault raised by
    /// `devpriv-migrate`'s `handle_mm_fault()`, its `FaultContext` (the
    /// address space and the VMA).
    ///
    /// Kernel: none (model only): a kernel driver reads `vmf->vma`
    /// directly.
    pub fn context<T: std::any::Any>(&self) -> Option<&'a T> {
        let any: &'a dyn std::any::Any = self.ctx?;
        any.downcast_ref::<T>()
    }
}

impl fmt::Debug for VmFault<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmFault")
            .field("page", &self.page)
            .field("address", &format_args!("{:#x}", self.address))
            .field("pmd", &self.pmd)
            .finish_non_exhaustive()
    }
}

/// The driver's callbacks.
///
/// Kernel: `struct dev_pagemap_ops`, `include/linux/memremap.h` (7.0).
///
/// # Differences from the kernel
///
/// C marks a missing callback with `NULL`. Here `folio_free` and
/// `migrate_to_ram` are required methods; [`has_migrate_to_ram`] lets a
/// test model a table without one (which `memremap` rejects), and the
/// optional callbacks have defaults that say "not provided".
///
/// [`has_migrate_to_ram`]: DevPagemapOps::has_migrate_to_ram
pub trait DevPagemapOps: Send + Sync {
    /// Called once per folio when its refcount drops to 0, for the whole
    /// folio whatever its order; the driver takes the pages back.
    ///
    /// Kernel: `dev_pagemap_ops::folio_free` (7.0).
    fn folio_free(&self, folio: Folio<'_>);

    /// Called from the CPU fault path on a device-private entry; must
    /// migrate the memory back to system RAM.
    ///
    /// Kernel: `dev_pagemap_ops::migrate_to_ram` (main).
    ///
    /// # Errors
    ///
    /// The driver's failure, reported to the fault path as `VM_FAULT_*`.
    fn migrate_to_ram(&self, vmf: &VmFault<'_>) -> Result<(), Errno>;

    /// `false` models an ops table whose `migrate_to_ram` is `NULL`.
    ///
    /// Kernel: `ops->migrate_to_ram != NULL` (main).
    fn has_migrate_to_ram(&self) -> bool {
        true
    }

    /// `true` if [`folio_split`](DevPagemapOps::folio_split) is provided.
    ///
    /// Kernel: `ops->folio_split != NULL` (7.0).
    fn has_folio_split(&self) -> bool {
        false
    }

    /// Called during a split for each new folio, and once with `tail =
    /// None` at the end.
    ///
    /// Kernel: `dev_pagemap_ops::folio_split` (7.0).
    fn folio_split(&self, _head: Folio<'_>, _tail: Option<Folio<'_>>) {}

    /// Memory-failure notification for `nr_pages` pages from `offset`.
    ///
    /// Kernel: `dev_pagemap_ops::memory_failure` (main).
    ///
    /// # Errors
    ///
    /// `EOPNOTSUPP` (the default): fall back to the generic handler.
    fn memory_failure(
        &self,
        _pgmap: &DevPagemap,
        _offset: DevicePrivateOffset,
        _nr_pages: PageCount,
        _mf_flags: u32,
    ) -> Result<(), Errno> {
        Err(Errno::EOPNOTSUPP)
    }
}

/// What a driver fills in before `memremap_device_private_pagemap()`.
///
/// Kernel: the input fields of `struct dev_pagemap` (`type`, `nr_pages`,
/// `owner`, `ops`, main).
#[derive(Clone)]
pub struct PagemapParams {
    /// Must be [`MemoryType::Private`].
    pub memory_type: MemoryType,
    /// Device-private pages to create.
    pub nr_pages: PageCount,
    /// The driver's owner cookie; `None` models `NULL` (rejected).
    pub owner: Option<Owner>,
    /// The callbacks; `None` models `NULL` (rejected).
    pub ops: Option<Arc<dyn DevPagemapOps>>,
}

impl PagemapParams {
    /// The parameters of a `MEMORY_DEVICE_PRIVATE` pagemap of `nr_pages`
    /// pages, the only kind
    /// [`memremap_device_private_pagemap`](DevicePrivateSpace::memremap_device_private_pagemap)
    /// accepts.
    ///
    /// Kernel: a driver filling in `pgmap->type = MEMORY_DEVICE_PRIVATE`,
    /// `pgmap->nr_pages`, `pgmap->owner` and `pgmap->ops` before
    /// `memremap_device_private_pagemap()` (`dmirror_allocate_chunk()`,
    /// `lib/test_hmm.c`, v6 proposal).
    ///
    /// # Examples
    ///
    /// ```
    /// use devpriv_core::PageCount;
    /// use devpriv_pagemap::{MemoryType, NoopOps, Owner, PagemapParams};
    /// use std::sync::Arc;
    ///
    /// let params = PagemapParams::private(PageCount::new(512), Owner(1), Arc::new(NoopOps));
    /// assert_eq!(params.memory_type, MemoryType::Private);
    /// assert_eq!(params.owner, Some(Owner(1)));
    /// ```
    pub fn private(nr_pages: PageCount, owner: Owner, ops: Arc<dyn DevPagemapOps>) -> Self {
        PagemapParams {
            memory_type: MemoryType::Private,
            nr_pages,
            owner: Some(owner),
            ops: Some(ops),
        }
    }
}

/// A driver that does nothing: `folio_free` keeps no free list and
/// `migrate_to_ram` moves nothing. For pagemaps whose pages are only
/// looked up, allocated and freed, never faulted on from the CPU.
///
/// Kernel: none (model only). What a real driver does in each callback
/// (`lib/test_hmm.c`'s dmirror, nouveau's `nouveau_dmem.c`, Xe's
/// `drm_pagemap`):
///
/// - `folio_free`: takes the folio's pages back into its allocator (dmirror
///   pushes the page onto its free list under `mdevice->lock`;
///   `drm_pagemap_folio_free()` drops the folio's reference on its
///   allocation, the last of which gives the block back), the whole folio
///   at its order. The core then drops the folio's pagemap references,
///   after which teardown may finish.
/// - `migrate_to_ram`: on a CPU fault on one of its device-private entries,
///   allocates system pages, calls `migrate_vma_setup()` for the range
///   around `vmf->address` with its `pgmap_owner`, copies the data back
///   from the device, then `migrate_vma_pages()` and
///   `migrate_vma_finalize()` (`dmirror_devmem_fault()`,
///   `nouveau_dmem_migrate_to_ram()`); `VM_FAULT_SIGBUS` if it cannot.
///   `NoopOps` reports success and moves nothing, so the entry stays
///   device-private.
/// - `folio_split` (optional): updates the driver's per-folio state when
///   the core splits a large device folio; `NoopOps` does not provide it,
///   so the core copies pgmap and mapping itself
///   ([`zone_device_private_split_cb`]).
/// - `memory_failure` (optional): `EOPNOTSUPP`, the generic handler.
///
/// # Examples
///
/// ```
/// use devpriv_core::PageCount;
/// use devpriv_pagemap::{DevicePrivateSpace, NoopOps, Owner, PagemapParams};
/// use std::sync::Arc;
///
/// let space = DevicePrivateSpace::new();
/// let params = PagemapParams::private(PageCount::new(16), Owner(7), Arc::new(NoopOps));
/// let pgmap = space.memremap_device_private_pagemap(params, 0)?;
/// assert_eq!(pgmap.owner(), Owner(7));
/// space.memunmap_device_private_pagemap(&pgmap)?;
/// # Ok::<(), devpriv_core::Errno>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NoopOps;

impl DevPagemapOps for NoopOps {
    /// Nothing to take back: `NoopOps` keeps no free list.
    fn folio_free(&self, _folio: Folio<'_>) {}

    /// Succeeds without migrating anything.
    fn migrate_to_ram(&self, _vmf: &VmFault<'_>) -> Result<(), Errno> {
        Ok(())
    }
}

impl fmt::Debug for PagemapParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PagemapParams")
            .field("memory_type", &self.memory_type)
            .field("nr_pages", &self.nr_pages)
            .field("owner", &self.owner)
            .field("ops", &self.ops.is_some())
            .finish()
    }
}

/// The most pages one device-private pagemap can have: its pages array is
/// one `kvzalloc()`, and `kvmalloc()` refuses more than `INT_MAX` bytes.
/// 2^25 − 1 pages of 64-byte `struct page`s, just under 128 GiB of device
/// memory.
///
/// Kernel: `INT_MAX / sizeof(struct page)`, from the `size > INT_MAX` check
/// of `__kvmalloc_node_noprof()` (`mm/slub.c`, 7.0) applied to
/// `memremap_device_private_pagemap()`'s `kvzalloc()` (v6 proposal).
pub const MAX_PAGEMAP_PAGES: u64 = i32::MAX as u64 / 64;

const LIVE: u32 = 0;
const DYING: u32 = 1;
const UNMAPPED: u32 = 2;

/// One device-private pagemap: its pages, its place in the address space,
/// and the reference that pins it.
///
/// Kernel: `struct dev_pagemap`, `include/linux/memremap.h`, with the
/// v6 proposal's `nr_pages` and `pages` fields.
///
/// # Invariants
///
/// `pages.len() == nr_pages`, `range` spans exactly `nr_pages * PAGE_SIZE`
/// bytes, and every page's word 1 held `cookie()` when it was mapped.
// `repr(C)`: the three fields a lookup reads come first, on one cache line
// (the ref below is cache-line aligned, which would otherwise scatter them).
#[repr(C)]
pub struct DevPagemap {
    first_offset: u64,
    nr_pages: PageCount,
    pages: Memmap,
    id: u64,
    memory_type: MemoryType,
    range: RangeInclusive<u64>,
    owner: Owner,
    ops: Arc<dyn DevPagemapOps>,
    nid: i32,
    refs: PercpuRef,
    done: Arc<Completion>,
    state: AtomicU32,
    reinit: AtomicU32,
    free_path: AtomicU32,
    /// `true` until the space lets the pagemap go (seen by loom only).
    /// Lookups read it and `memunmap` writes it after the grace period, so
    /// loom reports any reader not ordered before the reclamation.
    live: TrackedCell<bool>,
    /// The space's planted bugs (the `Folio*` ones act here); none outside
    /// loom.
    mutants: Mutants,
}

impl fmt::Debug for DevPagemap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevPagemap")
            .field("id", &self.id)
            .field(
                "range",
                &format_args!("{:#x}..={:#x}", self.range.start(), self.range.end()),
            )
            .field("nr_pages", &self.nr_pages)
            .field("owner", &self.owner)
            .field("nid", &self.nid)
            .finish_non_exhaustive()
    }
}

impl DevPagemap {
    /// A small number naming this pagemap in reports (creation order).
    ///
    /// Kernel: none (model only).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Kernel: `dev_pagemap::type` (main).
    pub fn memory_type(&self) -> MemoryType {
        self.memory_type
    }

    /// Kernel: `dev_pagemap::nr_pages` (v6).
    pub fn nr_pages(&self) -> PageCount {
        self.nr_pages
    }

    /// The pages array.
    ///
    /// Kernel: `dev_pagemap::pages` (v6).
    pub fn pages(&self) -> &[Page] {
        &self.pages
    }

    /// Where the pages array lives: the space's memmap or the heap.
    pub(crate) fn memmap(&self) -> &Memmap {
        &self.pages
    }

    /// The device-private byte range, inclusive.
    ///
    /// Kernel: `dev_pagemap::range` (an output for `MEMORY_DEVICE_PRIVATE`, v6).
    pub fn range(&self) -> RangeInclusive<DevicePrivateAddr> {
        DevicePrivateAddr::new(*self.range.start())..=DevicePrivateAddr::new(*self.range.end())
    }

    /// The offset of page 0.
    ///
    /// Kernel: `range.start >> PAGE_SHIFT` (v6).
    pub fn first_offset(&self) -> DevicePrivateOffset {
        DevicePrivateOffset::new(self.first_offset)
    }

    /// Kernel: `dev_pagemap::owner` (main).
    pub fn owner(&self) -> Owner {
        self.owner
    }

    /// Kernel: `dev_pagemap::ops` (main).
    pub fn ops(&self) -> &Arc<dyn DevPagemapOps> {
        &self.ops
    }

    /// The NUMA node the pages belong to.
    ///
    /// Kernel: the `nid` passed to `memremap_device_private_pagemap()` (v6).
    pub fn nid(&self) -> i32 {
        self.nid
    }

    /// The reference that pins the pagemap: one initial reference plus one
    /// per allocated device page.
    ///
    /// Kernel: `dev_pagemap::ref` (main).
    pub fn percpu_ref(&self) -> &PercpuRef {
        &self.refs
    }

    /// Completed by the ref's release, when the last allocated page is freed
    /// after the ref was killed.
    ///
    /// Kernel: `dev_pagemap::done` (main).
    pub fn done(&self) -> &Completion {
        &self.done
    }

    /// What this pagemap writes into its pages' word 1.
    ///
    /// Kernel: the `struct dev_pagemap *` in `folio->pgmap` (main).
    pub fn cookie(&self) -> PgmapCookie {
        PgmapCookie(self.pages.as_ptr().addr() as u64)
    }

    /// How this pagemap's large folios are reset for reuse.
    ///
    /// Kernel: none (the kernel has one policy; see [`ReinitPolicy`]).
    pub fn reinit_policy(&self) -> ReinitPolicy {
        #[expect(clippy::cast_possible_truncation, reason = "stored from a u8")]
        ReinitPolicy::from_u8(self.reinit.load(Ordering::Relaxed) as u8)
    }

    /// Chooses this pagemap's reinit policy (the space's setting is only the
    /// starting value). Change it only while no folio of the pagemap is
    /// allocated: a folio allocated under one policy and freed under another
    /// is reset by neither.
    ///
    /// Kernel: none (model only).
    pub fn set_reinit_policy(&self, policy: ReinitPolicy) {
        self.reinit
            .store(u32::from(policy.to_u8()), Ordering::Relaxed);
    }

    /// Which pagemap `free_zone_device_folio()` drops this pagemap's folio
    /// references on (see [`FreePath`]).
    ///
    /// Kernel: none (the kernel has one free path).
    pub fn free_path(&self) -> FreePath {
        #[expect(clippy::cast_possible_truncation, reason = "stored from a u8")]
        FreePath::from_u8(self.free_path.load(Ordering::Relaxed) as u8)
    }

    /// Chooses this pagemap's free path (the space's setting is only the
    /// starting value).
    ///
    /// Kernel: none (model only).
    pub fn set_free_path(&self, path: FreePath) {
        self.free_path
            .store(u32::from(path.to_u8()), Ordering::Relaxed);
    }

    /// `true` once `memunmap` has removed it from its space.
    ///
    /// Kernel: none (model only; the kernel frees the pagemap's pages).
    pub fn is_unmapped(&self) -> bool {
        self.state.load(Ordering::Acquire) == UNMAPPED
    }

    /// Asserts (and lets loom check) that the pagemap was not reclaimed
    /// before this access; nothing outside loom.
    #[inline(always)]
    pub(crate) fn touch(&self) {
        assert!(
            self.live.get() != Some(false),
            "lookup reached a reclaimed pagemap"
        );
    }

    /// The page at `offset`, if it is one of this pagemap's.
    ///
    /// Kernel: `&pgmap->pages[offset - (range.start >> PAGE_SHIFT)]` (v6).
    #[inline]
    pub fn page(&self, offset: DevicePrivateOffset) -> Option<PageRef<'_>> {
        let i = offset.get().wrapping_sub(self.first_offset);
        if i < self.nr_pages.get() {
            PageRef::new(self, usize::try_from(i).ok()?)
        } else {
            None
        }
    }

    /// Checks this pagemap's own invariants.
    ///
    /// Kernel: none (model only).
    ///
    /// # Errors
    ///
    /// The broken invariant: [`ValidateError::PagesLen`],
    /// [`ValidateError::RangeLen`] or [`ValidateError::FirstOffset`].
    pub fn validate(&self) -> Result<(), ValidateError> {
        let (pgmap, nr_pages) = (self.id, self.nr_pages.get());
        if self.pages.len() as u64 != nr_pages {
            let pages = self.pages.len();
            return Err(ValidateError::PagesLen {
                pgmap,
                pages,
                nr_pages,
            });
        }
        if self.range.end() - self.range.start() + 1 != nr_pages * PAGE_SIZE {
            let range = self.range.clone();
            return Err(ValidateError::RangeLen {
                pgmap,
                range,
                nr_pages,
            });
        }
        if self.first_offset != self.range.start() >> PAGE_SHIFT {
            return Err(ValidateError::FirstOffset { pgmap });
        }
        Ok(())
    }
}

/// How the space places new pagemaps.
///
/// Kernel: none (the kernel has only the exact packing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Packing {
    /// The kernel's lowest fit with no alignment: pagemaps pack back to back
    /// (page-aligned only because sizes are page multiples), so a section
    /// may be shared and fall back to the tree.
    KernelExact,
    /// Lowest fit, starting on a section boundary: every section belongs to
    /// at most one pagemap (the index is exact), and with 2 MiB sections
    /// every order-9 folio is PMD-aligned. The tree entry covers whole
    /// sections (the pagemap's own `range` stays exact), so the gap search
    /// stays O(log n).
    SectionAligned,
}

/// When a large folio's compound metadata is undone before its pages are
/// reused at another order.
///
/// Kernel: three successive designs: none before the fix (6.19), a
/// free-time reset with `smp_wmb()` (Matthew Brost's sketch of 2026-01-07,
/// then "[PATCH v4 2/7] `mm/zone_device`: Add
/// `free_zone_device_folio_prepare()` helper", 2026-01-11; never merged), and
/// the merged per-page reset inside `zone_device_page_init(page, pgmap,
/// order)` ("[PATCH v6 1/5] `mm/zone_device`: Reinitialize large zone device
/// private folios", 2026-01-16; 7.0). Hazards H1–H6, `docs/hazards.md`.
///
/// # Differences from the kernel
///
/// The kernel has exactly one of these at a time; the model lets a space,
/// or a single pagemap, choose, so the hazards of each can be shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReinitPolicy {
    /// The merged fix: `zone_device_page_init` resets every page it hands
    /// out; the free path writes no compound metadata.
    #[default]
    AtAlloc,
    /// The rejected free-time reset: `free_zone_device_folio` undoes the
    /// compound state and publishes it (`smp_wmb()`, a Release fence)
    /// before `folio_free` gives the pages back to the driver.
    AtFree,
    /// Pre-fix: nobody resets anything, so a reused large folio leaves
    /// stale metadata (hazards H1–H4).
    None,
}

impl ReinitPolicy {
    fn to_u8(self) -> u8 {
        match self {
            ReinitPolicy::AtAlloc => 0,
            ReinitPolicy::AtFree => 1,
            ReinitPolicy::None => 2,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => ReinitPolicy::AtFree,
            2 => ReinitPolicy::None,
            _ => ReinitPolicy::AtAlloc,
        }
    }
}

/// Which pagemap `free_zone_device_folio()` drops the folio's references
/// on, after `ops->folio_free()` has handed the pages back to the driver.
///
/// Kernel: `free_zone_device_folio()`, `mm/memremap.c`. 7.0-rc6 ends with
/// `percpu_ref_put_many(&folio->pgmap->ref, nr)`, re-reading the folio
/// after `folio_free` ([`V7_0`](FreePath::V7_0)). Commit 399289849560
/// ("`mm/zone_device`: do not touch device folio after calling
/// ->`folio_free()`", Matthew Brost, April 2026; Fixes d245f9b4ab80; in
/// 7.0.y stable and 7.1) puts them on the `pgmap` read at entry instead
/// ([`Fixed`](FreePath::Fixed)), because "the folio may be reallocated by a
/// driver with a different order" as soon as `folio_free` returns
/// (hazard H19, `docs/hazards.md`).
///
/// # Differences from the kernel
///
/// The kernel has one of these at a time; the model lets a space, or a
/// single pagemap, choose, so the use-after-free can be shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FreePath {
    /// The fix (399289849560): the references go to the pagemap read at
    /// entry; the folio is not touched after `folio_free`.
    #[default]
    Fixed,
    /// 7.0-rc6: word 1 of the folio is read again after `folio_free`. If
    /// the driver has meanwhile reused the page inside a new folio of
    /// another order, word 1 is a tail link, not a pagemap: the kernel
    /// dereferences a `struct page` as a `struct dev_pagemap`; the model
    /// takes a `WARN` ("folio->pgmap is not a pagemap") and drops nothing,
    /// so the pagemap leaks `nr` references and its teardown never
    /// finishes.
    V7_0,
}

impl FreePath {
    fn to_u8(self) -> u8 {
        match self {
            FreePath::Fixed => 0,
            FreePath::V7_0 => 1,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => FreePath::V7_0,
            _ => FreePath::Fixed,
        }
    }
}

/// Settings of a [`DevicePrivateSpace`].
///
/// Kernel: none (the kernel's values are compile- or boot-time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceConfig {
    /// Decides `MAX_PHYSMEM_BITS` and so the size of the space.
    pub paging: PagingMode,
    /// Where new pagemaps go.
    pub packing: Packing,
    /// log2 of the section size in bytes (21 = 2 MiB, 27 = 128 MiB as x86's
    /// `SECTION_SIZE_BITS`).
    pub section_shift: u32,
    /// log2 of the address space's size in bytes; `None` means
    /// `MAX_PHYSMEM_BITS`, as in the kernel. Smaller spaces (model only) let
    /// tests and demos run out of address space without 64 TiB of pages.
    pub space_shift: Option<u32>,
    /// The reinit policy new pagemaps start with (each pagemap can change
    /// its own with [`DevPagemap::set_reinit_policy`]).
    pub reinit: ReinitPolicy,
    /// The free path new pagemaps start with (each pagemap can change its
    /// own with [`DevPagemap::set_free_path`]).
    pub free_path: FreePath,
    /// Pages `0..pgmap_array_pages` (and the sections that hold them) get
    /// an entry in the space's pagemap array, through which a lookup takes
    /// two loads, an id and its slot (`0`: no array, every lookup through
    /// the section index). Default: every page (at most 2^34), none
    /// under loom.
    ///
    /// Kernel: `pgmap_array` (7.1), which v6 does not use for
    /// device-private pagemaps (model only here).
    pub pgmap_array_pages: u64,
}

impl SpaceConfig {
    /// The address space's size in bytes: `1 << space_shift`, by default
    /// `1 << MAX_PHYSMEM_BITS`.
    ///
    /// Kernel: the `max` of `mtree_alloc_range()` in
    /// `memremap_device_private_pagemap()` (v6).
    pub fn space_size(&self) -> u64 {
        1 << self.space_shift.unwrap_or(self.paging.max_physmem_bits())
    }
}

impl Default for SpaceConfig {
    /// Kernel-exact: 4-level paging, exact packing, 2 MiB index sections.
    fn default() -> Self {
        SpaceConfig {
            paging: PagingMode::FourLevel,
            packing: Packing::KernelExact,
            section_shift: 21,
            space_shift: None,
            reinit: ReinitPolicy::AtAlloc,
            free_path: FreePath::Fixed,
            pgmap_array_pages: if cfg!(loom) { 0 } else { u64::MAX },
        }
    }
}

/// The device-private address space.
///
/// Kernel: `device_private_pgmap_tree` (a global `MT_FLAGS_ALLOC_RANGE`
/// maple tree) and the functions around it, `mm/memremap.c` (v6).
///
/// # Differences from the kernel
///
/// A value, not a global; it also owns a section index and a per-page
/// pagemap array (after 7.1's `pgmap_array`) for fast lookups.
pub struct DevicePrivateSpace {
    cfg: SpaceConfig,
    tree: RangeTree<Arc<DevPagemap>>,
    index: SectionIndex,
    /// Where pagemaps' pages go, if the reservation succeeded.
    vmemmap: Option<Arc<Vmemmap>>,
    writer: Mutex<()>,
    next_id: AtomicU64,
    mutants: Mutants,
}

impl fmt::Debug for DevicePrivateSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevicePrivateSpace")
            .field("cfg", &self.cfg)
            .field("pagemaps", &self.tree.len())
            .finish_non_exhaustive()
    }
}

impl Default for DevicePrivateSpace {
    fn default() -> Self {
        Self::new()
    }
}

impl DevicePrivateSpace {
    /// A space with the kernel-exact defaults (`MAX_PHYSMEM_BITS` 46, exact
    /// packing).
    ///
    /// Kernel: `MTREE_INIT(device_private_pgmap_tree, MT_FLAGS_ALLOC_RANGE)` (v6).
    pub fn new() -> Self {
        Self::with_config(SpaceConfig::default())
    }

    /// A space with `cfg`. `space_shift` is clamped to
    /// `PAGE_SHIFT..=MAX_PHYSMEM_BITS`, and `section_shift` to that and to
    /// at most `PAGE_SHIFT + 31` (8 TiB sections).
    ///
    /// Kernel: none (model only).
    pub fn with_config(cfg: SpaceConfig) -> Self {
        Self::with_mutants(cfg, Mutants::NONE)
    }

    /// As [`with_config`](Self::with_config), with deliberate bugs for
    /// loom mutant tests. The space hands `mutants` on to its range tree
    /// (and its SRCU domain), its section index and every pagemap it maps
    /// (for the folio lifecycle). Outside loom `mutants` is empty and this
    /// is `with_config`.
    ///
    /// Kernel: none (model only).
    pub fn with_mutants(mut cfg: SpaceConfig, mutants: Mutants) -> Self {
        let bits = cfg.paging.max_physmem_bits();
        cfg.space_shift = Some(cfg.space_shift.unwrap_or(bits).clamp(PAGE_SHIFT, bits));
        // At most 2^31 pages per section: the index keeps 32-bit bounds.
        cfg.section_shift = cfg
            .section_shift
            .clamp(PAGE_SHIFT, bits.min(PAGE_SHIFT + 31));
        let space_pages = cfg.space_size() >> PAGE_SHIFT;
        let vmemmap = Vmemmap::reserve(space_pages);
        DevicePrivateSpace {
            cfg,
            tree: RangeTree::with_mutants(mutants),
            index: SectionIndex::new(
                space_pages,
                cfg.section_shift - PAGE_SHIFT,
                vmemmap.clone(),
                PgmapArray::new(
                    space_pages.min(cfg.pgmap_array_pages),
                    cfg.section_shift - PAGE_SHIFT,
                    mutants,
                ),
                mutants,
            ),
            vmemmap,
            writer: Mutex::new(()),
            next_id: AtomicU64::new(0),
            mutants,
        }
    }

    /// The settings.
    ///
    /// Kernel: none (model only).
    pub fn config(&self) -> SpaceConfig {
        self.cfg
    }

    /// Number of mapped pagemaps.
    ///
    /// Kernel: none (model only).
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// `true` if no pagemap is mapped.
    ///
    /// Kernel: `mtree_empty(&device_private_pgmap_tree)` (v6).
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Enters a read-side section: lookups through it take no lock and
    /// write no shared memory.
    ///
    /// Kernel: `rcu_read_lock()` (which `mtree_load()` takes internally, main).
    pub fn read(&self) -> SpaceReadGuard<'_> {
        SpaceReadGuard {
            index: self.index.view(),
            tree: self.tree.read(),
        }
    }

    /// Creates a device-private pagemap of `params.nr_pages` pages: reserves
    /// a range of the address space, builds the pages array and initialises
    /// every page as `__init_zone_device_page` does.
    ///
    /// Kernel: `memremap_device_private_pagemap(pgmap, nid)`, `mm/memremap.c`
    /// (v6 proposal, 13/13).
    ///
    /// Each page starts with refcount 0, `PG_reserved`, `ZONE_DEVICE` and
    /// node `nid` in its flags, the pgmap in word 1, no `zone_device_data`,
    /// and `_mapcount` −1. A negative `nid` means the current node (node 0
    /// in the model: `numa_mem_id()`).
    ///
    /// The checks come in the kernel's order: the arguments (`EINVAL`),
    /// then the pages array (`kvzalloc()`, `ENOMEM`), then the tree
    /// (`mtree_alloc_range()`: `EINVAL` for a size of 0 or past the space,
    /// `EBUSY` when no gap is large enough). The pages array is one
    /// `kvzalloc()` of `sizeof(struct page) * nr_pages` bytes, and
    /// `kvmalloc()` refuses more than `INT_MAX` bytes with a `WARN`, so a
    /// pagemap holds at most [`MAX_PAGEMAP_PAGES`] (2^25 − 1) pages: just
    /// under 128 GiB of device memory. This is a property of the v6
    /// proposal on a 7.0 kernel, not of the model: a device with 128 GiB
    /// or more (H200's 141 GB, MI300X's 192 GB) cannot be mapped by one
    /// call and must be split into several pagemaps.
    ///
    /// # Differences from the kernel
    ///
    /// - The kernel allocates the range, then initialises the pages. The
    ///   model finds the range (`find_gap`), builds and initialises the
    ///   whole pagemap, and then inserts it, so no reader can see a
    ///   half-built pagemap. Writers are serialised, so the gap stays free.
    ///   The errors and their precedence are the kernel's.
    /// - The kernel's `64 * nr_pages` wraps for `nr_pages >= 2^58` (and
    ///   would then allocate a small array); the model refuses those too.
    /// - With [`Packing::SectionAligned`] the start is section-aligned.
    ///
    /// # Errors
    ///
    /// In this order:
    ///
    /// 1. `EINVAL` (with a `WARN`): the type is not `MEMORY_DEVICE_PRIVATE`,
    ///    `ops` is missing or has no `migrate_to_ram`, `owner` is missing.
    /// 2. `ENOMEM` (with a `WARN`): `nr_pages` is above
    ///    [`MAX_PAGEMAP_PAGES`] (`kvmalloc()`'s `INT_MAX` cap), even if the
    ///    space is full or smaller than the request; also if the host
    ///    refuses the allocation.
    /// 3. `EINVAL`: `nr_pages` is 0 or larger than the space.
    /// 4. `EBUSY`: no free range of the address space is large enough.
    ///
    /// On every error nothing is reserved and nothing is leaked.
    ///
    /// # Examples
    ///
    /// ```
    /// use devpriv_core::{DevicePrivateOffset, Errno, PageCount};
    /// use devpriv_pagemap::{DevicePrivateSpace, NoopOps, Owner, PagemapParams};
    /// use std::sync::Arc;
    ///
    /// let space = DevicePrivateSpace::new();
    /// let params = PagemapParams::private(PageCount::new(512), Owner(1), Arc::new(NoopOps));
    /// let pgmap = space.memremap_device_private_pagemap(params, -1)?;
    /// assert_eq!(pgmap.first_offset(), DevicePrivateOffset::new(0));
    /// assert_eq!(pgmap.pages().len(), 512);
    /// // A missing owner is rejected (with a WARN), as in the kernel.
    /// let mut bad = PagemapParams::private(PageCount::new(1), Owner(1), Arc::new(NoopOps));
    /// bad.owner = None;
    /// assert_eq!(space.memremap_device_private_pagemap(bad, 0).unwrap_err(), Errno::EINVAL);
    /// space.memunmap_device_private_pagemap(&pgmap)?;
    /// # Ok::<(), Errno>(())
    /// ```
    pub fn memremap_device_private_pagemap(
        &self,
        params: PagemapParams,
        nid: i32,
    ) -> Result<Arc<DevPagemap>, Errno> {
        let PagemapParams {
            memory_type,
            nr_pages,
            owner,
            ops,
        } = params;
        if warn_on!(
            memory_type != MemoryType::Private,
            "memremap_device_private_pagemap(): type is not MEMORY_DEVICE_PRIVATE"
        ) {
            return Err(Errno::EINVAL);
        }
        let Some(ops) = ops.filter(|o| o.has_migrate_to_ram()) else {
            warn_on!(
                true,
                "memremap_device_private_pagemap(): no ops->migrate_to_ram"
            );
            return Err(Errno::EINVAL);
        };
        let Some(owner) = owner else {
            warn_on!(true, "memremap_device_private_pagemap(): no owner");
            return Err(Errno::EINVAL);
        };
        // kvzalloc(sizeof(struct page) * nr_pages) comes before the tree:
        // kvmalloc refuses more than INT_MAX bytes, with a WARN.
        if warn_on_once!(
            nr_pages.get() > MAX_PAGEMAP_PAGES,
            "memremap_device_private_pagemap(): kvmalloc() of the pages array > INT_MAX"
        ) {
            return Err(Errno::ENOMEM);
        }
        let space = self.cfg.space_size();
        let size = nr_pages
            .checked_bytes()
            .filter(|&b| b > 0 && b <= space)
            .ok_or(Errno::EINVAL)?;
        let (reserved, align) = self.reservation(size);
        let nid = if nid < 0 { 0 } else { nid };

        let _w = self.writer.lock();
        // Inclusive bound, as the kernel passes it (`1ull << MAX_PHYSMEM_BITS`).
        let start = self.tree.find_gap(reserved, align, 0..=space)?;
        let pages = self.build_pages(start >> PAGE_SHIFT, nr_pages, nid)?;
        let (done, refs) = new_ref();
        let pgmap = Arc::new(DevPagemap {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            memory_type,
            nr_pages,
            pages,
            range: start..=start + (size - 1),
            first_offset: start >> PAGE_SHIFT,
            owner,
            ops,
            nid,
            refs,
            done,
            state: AtomicU32::new(LIVE),
            reinit: AtomicU32::new(u32::from(self.cfg.reinit.to_u8())),
            free_path: AtomicU32::new(u32::from(self.cfg.free_path.to_u8())),
            live: TrackedCell::new(true),
            mutants: self.mutants,
        });
        if let Err(e) = self
            .tree
            .insert_range(start..=start + (reserved - 1), Arc::clone(&pgmap))
        {
            // Unreachable while writers are serialised; hand back the errno
            // rather than panic.
            return Err(e.cause);
        }
        if let Some(a) = self.index.pgmap_array() {
            a.store(&pgmap);
        }
        self.publish_sections(&pgmap);
        Ok(pgmap)
    }

    /// As [`memremap_device_private_pagemap`], with the pagemap unmapped
    /// when the returned handle drops.
    ///
    /// Kernel: `devm_memremap_device_private_pagemap(dev, pgmap)` (v6).
    ///
    /// # Errors
    ///
    /// As for [`memremap_device_private_pagemap`].
    ///
    /// # Examples
    ///
    /// ```
    /// use devpriv_core::PageCount;
    /// use devpriv_pagemap::{DevicePrivateSpace, NoopOps, Owner, PagemapParams};
    /// use std::sync::Arc;
    ///
    /// let space = DevicePrivateSpace::new();
    /// let params = PagemapParams::private(PageCount::new(64), Owner(1), Arc::new(NoopOps));
    /// {
    ///     let devm = space.devm_memremap_device_private_pagemap(params, 0)?;
    ///     assert_eq!(devm.pgmap().nr_pages(), PageCount::new(64));
    ///     assert_eq!(space.len(), 1);
    /// } // The driver detaches: the pagemap is unmapped.
    /// assert!(space.is_empty());
    /// # Ok::<(), devpriv_core::Errno>(())
    /// ```
    ///
    /// [`memremap_device_private_pagemap`]: Self::memremap_device_private_pagemap
    pub fn devm_memremap_device_private_pagemap(
        &self,
        params: PagemapParams,
        nid: i32,
    ) -> Result<DevmPagemap<'_>, Errno> {
        let pgmap = self.memremap_device_private_pagemap(params, nid)?;
        Ok(DevmPagemap {
            space: self,
            pgmap: Some(pgmap),
        })
    }

    /// Tears a pagemap down: kills its ref, waits until every allocated
    /// device page has been freed, and removes its range from the space.
    ///
    /// Kernel: `memunmap_device_private_pagemap(pgmap)`, `mm/memremap.c` (v6).
    ///
    /// # Differences from the kernel
    ///
    /// The order of the last steps is reversed (module docs, H15): the
    /// range is erased first and the pages array goes only after a grace
    /// period. Bad calls return an errno instead of crashing.
    ///
    /// # Errors
    ///
    /// `EINVAL` (with a `WARN`) if `pgmap` is not mapped in this space
    /// (another space's, or already unmapped). Nothing changes then.
    ///
    /// # Examples
    ///
    /// ```
    /// use devpriv_core::{Errno, Order, PageCount};
    /// use devpriv_pagemap::{
    ///     DevicePrivateSpace, NoopOps, Owner, PageRef, PagemapParams, folio_put,
    ///     zone_device_page_init,
    /// };
    /// use std::sync::Arc;
    ///
    /// let space = DevicePrivateSpace::new();
    /// let params = PagemapParams::private(PageCount::new(4), Owner(1), Arc::new(NoopOps));
    /// let pgmap = space.memremap_device_private_pagemap(params, 0)?;
    /// let folio = zone_device_page_init(PageRef::new(&pgmap, 0).unwrap(), &pgmap, Order::ZERO)?;
    /// folio.unlock();
    /// // Every allocated page must be freed first: memunmap waits for them.
    /// folio_put(folio);
    /// space.memunmap_device_private_pagemap(&pgmap)?;
    /// assert!(pgmap.is_unmapped() && space.is_empty());
    /// // A second unmap is a bad call: EINVAL (with a WARN), nothing changes.
    /// assert_eq!(space.memunmap_device_private_pagemap(&pgmap), Err(Errno::EINVAL));
    /// # Ok::<(), Errno>(())
    /// ```
    pub fn memunmap_device_private_pagemap(&self, pgmap: &Arc<DevPagemap>) -> Result<(), Errno> {
        self.check_mapped(pgmap)?;
        kill_once(pgmap);
        pgmap.done.wait();
        self.remove(pgmap)
    }

    /// As [`memunmap_device_private_pagemap`], but gives up after `timeout`
    /// if pages are still allocated.
    ///
    /// Kernel: none (a bounded `wait_for_completion_timeout()` variant).
    ///
    /// # Errors
    ///
    /// - `EINVAL`: as for [`memunmap_device_private_pagemap`].
    /// - `EBUSY`: pages are still allocated after `timeout`. The ref stays
    ///   killed (the kernel has no way back either), the pagemap stays
    ///   mapped, and a later call finishes the teardown.
    ///
    /// [`memunmap_device_private_pagemap`]: Self::memunmap_device_private_pagemap
    pub fn try_memunmap_device_private_pagemap(
        &self,
        pgmap: &Arc<DevPagemap>,
        timeout: Duration,
    ) -> Result<(), Errno> {
        self.check_mapped(pgmap)?;
        kill_once(pgmap);
        if !pgmap.done.wait_timeout(timeout) {
            return Err(Errno::EBUSY);
        }
        self.remove(pgmap)
    }

    /// The old physical-range path, which the v6 proposal closes to
    /// device-private memory.
    ///
    /// Kernel: `memremap_pages(pgmap, nid)`, `mm/memremap.c`, which with the
    /// v6 proposal WARNs `"Use memremap_device_private_pagemap()"` for
    /// `MEMORY_DEVICE_PRIVATE`.
    ///
    /// # Errors
    ///
    /// `EINVAL` for `MEMORY_DEVICE_PRIVATE`; `EOPNOTSUPP` for every other
    /// type, whose physical ranges the model does not implement.
    pub fn memremap_pages(&self, params: &PagemapParams, _nid: i32) -> Result<(), Errno> {
        if warn_on!(
            params.memory_type == MemoryType::Private,
            "Use memremap_device_private_pagemap()"
        ) {
            return Err(Errno::EINVAL);
        }
        Err(Errno::EOPNOTSUPP)
    }

    /// Checks the tree, the index and every pagemap, and that the index and
    /// the tree agree on every section.
    ///
    /// Kernel: `mt_validate()` plus model-only checks (main).
    ///
    /// # Errors
    ///
    /// The first broken invariant found (see [`ValidateError`]).
    #[allow(unsafe_code, reason = "reads index slots under a tree read guard")]
    pub fn validate(&self) -> Result<(), ValidateError> {
        let _w = self.writer.lock();
        self.tree.validate()?;
        let g = self.read();
        let limit = self.cfg.space_size();
        let mut covered = std::collections::BTreeSet::new();
        for (range, pm) in g.tree.iter() {
            pm.validate()?;
            let pgmap = pm.id;
            let reserved = self.reservation(pm.nr_pages.get() << PAGE_SHIFT).0;
            if *range.start() != *pm.range.start()
                || *range.end() != *pm.range.start() + (reserved - 1)
            {
                return Err(ValidateError::TreeRange { pgmap, tree: range });
            }
            if *range.end() > limit {
                return Err(ValidateError::BeyondSpace { pgmap });
            }
            if pm.is_unmapped() {
                return Err(ValidateError::UnmappedInTree { pgmap });
            }
            if let Some(offset) = self.index.pgmap_array().and_then(|a| a.check(pm)) {
                return Err(ValidateError::PgmapArray { pgmap, offset });
            }
            for section in self.sections_of(pm) {
                covered.insert(section);
                // SAFETY: `g.tree` reads this space's tree.
                let have = unsafe { self.index.peek(&g.tree, section) }.map_err(
                    |StaleBase { pgmap, have, want }| ValidateError::StaleBase {
                        section,
                        pgmap: pgmap.id,
                        have,
                        want,
                    },
                )?;
                let want = self.expected_slot(&g, section, None);
                if have != want {
                    return Err(ValidateError::IndexSlot {
                        section,
                        index: SectionSlot::of(&have),
                        tree: SectionSlot::of(&want),
                    });
                }
            }
        }
        // Every occupied slot is one of the sections checked above: no slot
        // outlives its pagemaps.
        let (index, covered) = (self.index.occupied(), covered.len() as u64);
        if index != covered {
            return Err(ValidateError::Occupied { index, covered });
        }
        Ok(())
    }

    fn check_mapped(&self, pgmap: &Arc<DevPagemap>) -> Result<(), Errno> {
        let g = self.tree.read();
        let mapped = g
            .load(*pgmap.range.start())
            .is_some_and(|(_, pm)| Arc::ptr_eq(pm, pgmap));
        if warn_on!(
            !mapped,
            "memunmap_device_private_pagemap(): pagemap not mapped in this space"
        ) {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// Unpublishes and erases `pgmap` after its pages are all free.
    fn remove(&self, pgmap: &Arc<DevPagemap>) -> Result<(), Errno> {
        let id;
        {
            let _w = self.writer.lock();
            // Re-check under the lock: a racing unmap may have won.
            self.check_mapped(pgmap)?;
            // The index is unpublished before the tree erase, but the order
            // of the two is not load-bearing: both happen under the writer
            // lock and before the grace period below, whose cookie is
            // taken after both. A reader that finds the pagemap through
            // either structure in between is in a read section that the
            // grace period waits for, and nothing lets the pagemap go
            // before it ends; the order only decides which path such a
            // reader takes. (Erasing first is equivalent.)
            {
                let g = self.read();
                if !self.mutants.has(Mutant::SpaceIndexNotUnpublished) {
                    for s in self.sections_of(pgmap) {
                        let slot = self.expected_slot(&g, s, Some(pgmap));
                        self.index.set(s, &slot, self.tree.srcu());
                    }
                }
            }
            // Before the grace period, as the index: a reader that loaded
            // an entry is in a read section it waits for.
            id = self.index.pgmap_array().and_then(|a| {
                if self.mutants.has(Mutant::PgmapArrayClearedAfterGracePeriod) {
                    return None;
                }
                a.clear(pgmap)
            });
            self.tree.erase(*pgmap.range.start());
            pgmap.state.store(UNMAPPED, Ordering::Release);
        }
        // Let the space's copies of the pagemap (and so its pages) go, and
        // the index's shared tables that named it.
        self.tree.synchronize();
        let id = match self.index.pgmap_array() {
            Some(a) if self.mutants.has(Mutant::PgmapArrayClearedAfterGracePeriod) => {
                a.clear(pgmap)
            }
            _ => id,
        };
        self.index.reclaim(self.tree.srcu());
        // No reader that loaded the id's entries is left to find the id's
        // next pagemap in its slot.
        if let (Some(a), Some(id)) = (self.index.pgmap_array(), id) {
            a.release(id);
        }
        // Loom checks this write against every lookup's read.
        pgmap.live.set(false);
        Ok(())
    }

    /// The pages array of a pagemap of `nr_pages` pages at offset `first`
    /// on node `nid`, each page as `__init_zone_device_page` leaves it: in
    /// the space's memmap if its range there is free ([`Vmemmap`]), else on
    /// the heap, as v6's `kvzalloc()`.
    ///
    /// Kernel: the pages array `memremap_device_private_pagemap()`
    /// allocates and `memmap_init_zone_device()` initialises (v6).
    fn build_pages(&self, first: u64, nr_pages: PageCount, nid: i32) -> Result<Memmap, Errno> {
        let Some(pages) = self
            .vmemmap
            .as_ref()
            .and_then(|v| v.populate(first, nr_pages.get()))
        else {
            return build_heap_pages(nr_pages, nid).map(Memmap::Heap);
        };
        let w = zone_device_page_words(pages.as_ptr().addr() as u64, nid);
        for p in pages.iter() {
            p.init(w);
        }
        Ok(Memmap::Vmemmap(pages))
    }

    /// The bytes of the address space a pagemap of `size` bytes reserves in
    /// the tree, and their alignment. Section-aligned packing reserves
    /// whole sections (never more than the space), so every gap is a whole
    /// number of aligned sections and `find_gap` never has to skip gaps
    /// that are large enough but misaligned.
    fn reservation(&self, size: u64) -> (u64, u64) {
        match self.cfg.packing {
            Packing::KernelExact => (size, 1),
            Packing::SectionAligned => {
                let section = 1 << self.cfg.section_shift;
                let whole = size.div_ceil(section).saturating_mul(section);
                (whole.min(self.cfg.space_size()).max(size), section)
            }
        }
    }

    fn publish_sections(&self, pgmap: &Arc<DevPagemap>) {
        let g = self.read();
        for s in self.sections_of(pgmap) {
            let slot = self.expected_slot(&g, s, None);
            self.index.set(s, &slot, self.tree.srcu());
        }
    }

    /// The sections `pgmap`'s pages fall in.
    fn sections_of(&self, pgmap: &DevPagemap) -> RangeInclusive<u64> {
        let last = pgmap.first_offset + pgmap.nr_pages.get() - 1;
        self.index.section_of(pgmap.first_offset)..=self.index.section_of(last)
    }

    /// What section `s`'s slot should say, from the tree, ignoring
    /// `except`.
    fn expected_slot<'a>(
        &self,
        g: &'a SpaceReadGuard<'_>,
        s: u64,
        except: Option<&Arc<DevPagemap>>,
    ) -> Slot<'a> {
        let lo = (s * self.index.section_pages()) << PAGE_SHIFT;
        let hi = lo + (self.index.section_pages() << PAGE_SHIFT) - 1;
        let mut found = Vec::new();
        let mut key = lo;
        while let Some((range, pm)) = g.tree.find_from(key) {
            if *range.start() > hi {
                break;
            }
            // Under section-aligned packing a tree entry also covers padding
            // past its pagemap, which may reach into the section.
            let pages = pm.first_offset..pm.first_offset + pm.nr_pages.get();
            let section = s * self.index.section_pages()..(s + 1) * self.index.section_pages();
            let overlaps = pages.start < section.end && section.start < pages.end;
            if overlaps && except.is_none_or(|e| !Arc::ptr_eq(e, pm)) {
                found.push(&**pm);
            }
            match range.end().checked_add(1) {
                Some(k) => key = k,
                None => break,
            }
        }
        match found.len() {
            0 => Slot::Empty,
            1 => Slot::One(found[0]),
            _ => Slot::Shared(found),
        }
    }
}

/// A page as `__init_zone_device_page` leaves it, in a pagemap whose
/// cookie (its array's address) is `cookie`, on node `nid`.
fn zone_device_page_words(cookie: u64, nid: i32) -> [u64; 8] {
    // __init_single_page(): set_page_links(), page_cpupid_reset_last();
    // then __init_zone_device_page() sets PG_reserved.
    let flags =
        page_cpupid_reset_last(page_links(ZONE_DEVICE, nid.unsigned_abs())) | 1 << PG_RESERVED;
    let mut w = [0u64; 8];
    w[word::FLAGS] = flags;
    w[word::COMPOUND_HEAD] = cookie;
    // `_refcount` 0 in the high half, `_mapcount` −1 in the low half.
    w[word::COUNTS] = u64::from(u32::MAX);
    w
}

/// Builds `nr_pages` pages on the heap, each as `__init_zone_device_page`
/// leaves it, in one pass (the allocation's address is the pgmap cookie,
/// so it is taken before the pages are written).
fn build_heap_pages(nr_pages: PageCount, nid: i32) -> Result<Box<[Page]>, Errno> {
    let n = usize::try_from(nr_pages.get()).map_err(|_| Errno::ENOMEM)?;
    let mut v: Vec<Page> = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Errno::ENOMEM)?;
    let w = zone_device_page_words(v.as_ptr().addr() as u64, nid);
    v.extend((0..n).map(|_| Page::from_words(w)));
    // `len == capacity`, so this keeps the allocation (and the cookie).
    Ok(v.into_boxed_slice())
}

/// A new ref whose release completes the returned completion.
fn new_ref() -> (Arc<Completion>, PercpuRef) {
    let (refs, done) = PercpuRef::with_completion();
    (done, refs)
}

fn kill_once(pgmap: &DevPagemap) {
    if pgmap
        .state
        .compare_exchange(LIVE, DYING, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        pgmap.refs.kill();
    }
}

/// The kernel's `WARN_ON_ONCE(!pgmap)` in `device_private_offset_to_page()`:
/// one call site for both lookup paths.
#[inline(always)]
fn warn_if_missing(page: Option<PageRef<'_>>) -> Option<PageRef<'_>> {
    warn_on_once!(
        page.is_none(),
        "device_private_offset_to_page(): no pagemap at this offset"
    );
    page
}

/// A pagemap that is unmapped when this handle drops.
///
/// Kernel: the devres action `devm_memremap_device_private_pagemap()`
/// registers (v6).
pub struct DevmPagemap<'s> {
    space: &'s DevicePrivateSpace,
    pgmap: Option<Arc<DevPagemap>>,
}

impl fmt::Debug for DevmPagemap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DevmPagemap").field(&self.pgmap).finish()
    }
}

impl DevmPagemap<'_> {
    /// The pagemap.
    ///
    /// Kernel: the `struct dev_pagemap *` the driver keeps (main).
    ///
    /// # Panics
    ///
    /// Never: the pagemap is taken only by `release` and `drop`, which
    /// consume the handle.
    pub fn pgmap(&self) -> &Arc<DevPagemap> {
        self.pgmap
            .as_ref()
            .expect("a live DevmPagemap holds its pagemap")
    }

    /// Unmaps now (blocking until every page is freed).
    ///
    /// Kernel: `devm_memunmap_device_private_pagemap(dev, pgmap)` (v6).
    ///
    /// # Errors
    ///
    /// As for `memunmap_device_private_pagemap`.
    pub fn release(mut self) -> Result<(), Errno> {
        match self.pgmap.take() {
            Some(p) => self.space.memunmap_device_private_pagemap(&p),
            None => Ok(()),
        }
    }
}

impl Drop for DevmPagemap<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.pgmap.take() {
            // Errors here mean it was already unmapped by hand: nothing to do.
            let _ = self.space.memunmap_device_private_pagemap(&p);
        }
    }
}

/// A read-side section of a [`DevicePrivateSpace`]. Pages found through it
/// borrow it: they cannot outlive the section.
///
/// Kernel: the `rcu_read_lock()` section of `mtree_load()` in
/// `device_private_offset_to_page()`, held across many lookups (v6).
///
/// # Differences from the kernel
///
/// `device_private_offset_to_page()` takes no reference: a caller that
/// keeps the page after `rcu_read_unlock()` relies on a page reference it
/// holds. Here the borrow checker ends every `PageRef` with the section.
pub struct SpaceReadGuard<'g> {
    index: IndexView<'g>,
    tree: devpriv_rangetree::ReadGuard<'g, Arc<DevPagemap>>,
}

impl fmt::Debug for SpaceReadGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpaceReadGuard").finish_non_exhaustive()
    }
}

impl SpaceReadGuard<'_> {
    /// The page at `offset`, or `None` (with a `WARN`) if no pagemap holds
    /// it.
    ///
    /// Kernel: `device_private_offset_to_page(offset)`, `mm/memremap.c` (v6).
    ///
    /// # Differences from the kernel
    ///
    /// The kernel walks the maple tree; the model reads one entry of the
    /// space's pagemap array first (the page's where one page in 6 is in
    /// a shared section, else its section's: an id, then its slot), then,
    /// for no entry, the section index (two dependent loads, and a table's
    /// line for a section of three or more pagemaps), and walks the tree
    /// only for a slot caught mid-rewrite. Returns a [`PageRef`].
    ///
    /// # Examples
    ///
    /// ```
    /// use devpriv_core::{DevicePrivateOffset, PageCount};
    /// use devpriv_pagemap::{DevicePrivateSpace, NoopOps, Owner, PagemapParams};
    /// use std::sync::Arc;
    ///
    /// let space = DevicePrivateSpace::new();
    /// let params = PagemapParams::private(PageCount::new(16), Owner(1), Arc::new(NoopOps));
    /// let pgmap = space.memremap_device_private_pagemap(params, 0)?;
    /// let guard = space.read(); // rcu_read_lock()
    /// let page = guard.device_private_offset_to_page(DevicePrivateOffset::new(5)).unwrap();
    /// assert_eq!((page.owner().id(), page.index()), (pgmap.id(), 5));
    /// // No pagemap holds offset 16: `None`, with the kernel's WARN.
    /// assert!(guard.device_private_offset_to_page(DevicePrivateOffset::new(16)).is_none());
    /// drop(guard); // rcu_read_unlock(): `page` cannot outlive it.
    /// space.memunmap_device_private_pagemap(&pgmap)?;
    /// # Ok::<(), devpriv_core::Errno>(())
    /// ```
    #[inline(always)]
    pub fn device_private_offset_to_page(
        &self,
        offset: DevicePrivateOffset,
    ) -> Option<PageRef<'_>> {
        warn_if_missing(self.lookup(offset))
    }

    #[inline(always)]
    #[allow(unsafe_code, reason = "the section index's lookup")]
    fn lookup(&self, offset: DevicePrivateOffset) -> Option<PageRef<'_>> {
        // SAFETY: `self.tree` reads the tree of the space `self.index`
        // belongs to (both come from `DevicePrivateSpace::read`).
        match unsafe { self.index.lookup_fast(&self.tree, offset.get()) } {
            Ok(page) => Some(page),
            Err(id) => self.lookup_slow(offset, id),
        }
    }

    /// The rest of a lookup, out of line: a call that returns its page in
    /// two registers, so the hot loop around the inlined fast path keeps
    /// few values and sets up no return slot. The tree walk is for a slot
    /// caught mid-rewrite.
    #[inline(never)]
    #[allow(unsafe_code, reason = "the section index's lookup")]
    fn lookup_slow(&self, offset: DevicePrivateOffset, id: u32) -> Option<PageRef<'_>> {
        // SAFETY: As in `lookup`; `id` is the entry it loaded.
        match unsafe { self.index.lookup_cold(&self.tree, offset.get(), id) } {
            Hit::Page(page) => Some(page),
            Hit::Miss => None,
            Hit::Busy => self.lookup_tree(offset),
        }
    }

    /// The tree walk the kernel does: `mtree_load(offset << PAGE_SHIFT)`.
    fn lookup_tree(&self, offset: DevicePrivateOffset) -> Option<PageRef<'_>> {
        let key = offset.to_addr()?.get();
        let (_, pm) = self.tree.load(key)?;
        pm.touch();
        pm.page(offset)
    }

    /// As [`device_private_offset_to_page`], always through the tree (the
    /// kernel's path), for fidelity tests and benchmarks.
    ///
    /// Kernel: `device_private_offset_to_page(offset)` (v6).
    ///
    /// [`device_private_offset_to_page`]: Self::device_private_offset_to_page
    pub fn device_private_offset_to_page_tree(
        &self,
        offset: DevicePrivateOffset,
    ) -> Option<PageRef<'_>> {
        warn_if_missing(self.lookup_tree(offset))
    }

    /// Resolves many offsets under this one read section.
    ///
    /// Kernel: none (callers loop over `device_private_offset_to_page()`).
    pub fn device_private_offsets_to_pages<'a, I>(
        &'a self,
        offsets: I,
    ) -> impl Iterator<Item = Option<PageRef<'a>>> + 'a
    where
        I: IntoIterator<Item = DevicePrivateOffset>,
        I::IntoIter: 'a,
    {
        offsets
            .into_iter()
            .map(|o| self.device_private_offset_to_page(o))
    }

    /// The offset of `page`: its pgmap's first offset plus its index.
    ///
    /// Kernel: `device_private_page_to_offset(page)`, `mm/memremap.c` (v6).
    ///
    /// # Differences from the kernel
    ///
    /// Takes a [`PageRef`]. The kernel reads `page_pgmap(page)`; so does the
    /// model, and when that word does not name the page's pagemap (hazard
    /// H10) it returns `None` with a `WARN` where the kernel would compute
    /// from a bad pointer. [`PageRef::offset`] is the same without the
    /// detour through word 1.
    ///
    /// # Examples
    ///
    /// ```
    /// use devpriv_core::{DevicePrivateOffset, PageCount};
    /// use devpriv_pagemap::{DevicePrivateSpace, NoopOps, Owner, PageRef, PagemapParams};
    /// use std::sync::Arc;
    ///
    /// let space = DevicePrivateSpace::new();
    /// let params = PagemapParams::private(PageCount::new(16), Owner(1), Arc::new(NoopOps));
    /// let pgmap = space.memremap_device_private_pagemap(params, 0)?;
    /// let page = PageRef::new(&pgmap, 9).unwrap();
    /// let guard = space.read();
    /// assert_eq!(guard.device_private_page_to_offset(page), Some(DevicePrivateOffset::new(9)));
    /// // H10: once word 1 no longer names the pagemap, the kernel's reading
    /// // fails (a WARN here, a bad pointer there); `PageRef::offset` does not.
    /// page.clear_compound_head();
    /// assert_eq!(guard.device_private_page_to_offset(page), None);
    /// assert_eq!(page.offset(), DevicePrivateOffset::new(9));
    /// # drop(guard);
    /// # page.folio().set_pgmap(&pgmap);
    /// # space.memunmap_device_private_pagemap(&pgmap)?;
    /// # Ok::<(), devpriv_core::Errno>(())
    /// ```
    pub fn device_private_page_to_offset(&self, page: PageRef<'_>) -> Option<DevicePrivateOffset> {
        page.pgmap().map(|_| page.offset())
    }

    /// The offset of the folio's head page.
    ///
    /// Kernel: `device_private_folio_to_offset(folio)`, `mm/memremap.c` (v6).
    pub fn device_private_folio_to_offset(&self, folio: Folio<'_>) -> Option<DevicePrivateOffset> {
        self.device_private_page_to_offset(folio.page())
    }

    /// The pagemap whose range holds `addr`, from the tree.
    ///
    /// Kernel: `mtree_load(&device_private_pgmap_tree, addr)` (v6).
    pub fn pagemap_at(&self, addr: DevicePrivateAddr) -> Option<&Arc<DevPagemap>> {
        // Under section-aligned packing a tree entry also covers the
        // padding up to the next section boundary, which is no pagemap's.
        self.tree
            .load(addr.get())
            .map(|(_, pm)| pm)
            .filter(|pm| pm.range.contains(&addr.get()))
    }

    /// Every mapped pagemap, in address order.
    ///
    /// Kernel: `mt_for_each(&device_private_pgmap_tree, ...)` (v6).
    pub fn pagemaps(&self) -> impl Iterator<Item = &Arc<DevPagemap>> + '_ {
        self.tree.iter().map(|(_, pm)| pm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(space: &DevicePrivateSpace, n: u64) -> Arc<DevPagemap> {
        let params = PagemapParams::private(PageCount::new(n), Owner(1), Arc::new(NoopOps));
        space.memremap_device_private_pagemap(params, 0).unwrap()
    }

    /// Which path the index takes for page `i` of `pm`.
    #[allow(unsafe_code, reason = "the section index's lookup")]
    fn hit(space: &DevicePrivateSpace, pm: &DevPagemap, i: u64) -> &'static str {
        let g = space.tree.read();
        // SAFETY: `g` reads the tree of `space`, whose index this is.
        match unsafe { space.index.view().lookup(&g, pm.first_offset + i) } {
            Hit::Page(p) => {
                assert!(std::ptr::eq(&*p, &pm.pages()[usize::try_from(i).unwrap()]));
                "page"
            }
            Hit::Miss => "miss",
            Hit::Busy => "busy",
        }
    }

    /// Sections one pagemap covers, wholly or in part, resolve straight to
    /// the page (memmap base and bounds); an offset of the section outside
    /// the pagemap is a miss; a shared section resolves through its table.
    #[test]
    fn index_paths_follow_section_coverage() {
        let space = DevicePrivateSpace::new(); // exact packing, 512-page sections
        let a = map(&space, 1024 + 10);
        let b = map(&space, 5);
        for i in [0, 511, 512, 1023] {
            assert_eq!(hit(&space, &a, i), "page", "page {i} of a");
        }
        assert_eq!(hit(&space, &a, 1024), "page", "a's tail shares with b");
        assert_eq!(hit(&space, &a, 1033), "page");
        assert_eq!(hit(&space, &b, 0), "page");
        assert_eq!(hit(&space, &b, 4), "page");
        assert_eq!(hit(&space, &b, 5), "miss", "past b, in the shared section");
        space.validate().unwrap();
        space.memunmap_device_private_pagemap(&b).unwrap();
        assert_eq!(hit(&space, &a, 1033), "page", "a partly covered section");
        assert_eq!(hit(&space, &a, 1034), "miss", "past a, in a's section");
        space.validate().unwrap();
        space.memunmap_device_private_pagemap(&a).unwrap();
        assert_eq!(hit(&space, &a, 0), "miss", "an empty section");
        // The next pagemap in the same place gets its own base.
        let c = map(&space, 512);
        assert_eq!(c.first_offset, a.first_offset);
        assert_eq!(hit(&space, &c, 7), "page");
        space.validate().unwrap();
    }

    /// `validate` names the section and both sides when the index and the
    /// tree disagree.
    #[test]
    fn validate_reports_a_stale_index_slot() {
        let space = DevicePrivateSpace::new();
        let a = map(&space, 10);
        let s = space.index.section_of(a.first_offset);
        space.index.set(s, &Slot::Empty, space.tree.srcu());
        let e = space.validate().unwrap_err();
        assert_eq!(
            e,
            ValidateError::IndexSlot {
                section: s,
                index: SectionSlot::Empty,
                tree: SectionSlot::One(a.id()),
            }
        );
        assert_eq!(
            e.to_string(),
            format!(
                "section {s}: index says empty, tree says pagemap {}",
                a.id()
            )
        );
        space.index.set(s, &Slot::One(&a), space.tree.srcu());
        space.validate().unwrap();
        space.memunmap_device_private_pagemap(&a).unwrap();
    }

    /// A shared section's table must list exactly the tree's pagemaps in
    /// that section.
    #[test]
    fn validate_reports_a_shared_table_that_misses_a_pagemap() {
        let space = DevicePrivateSpace::new();
        let a = map(&space, 10);
        let b = map(&space, 5);
        let s = space.index.section_of(a.first_offset);
        space.validate().unwrap();
        space.index.set(s, &Slot::One(&a), space.tree.srcu());
        let e = space.validate().unwrap_err();
        assert_eq!(
            e,
            ValidateError::IndexSlot {
                section: s,
                index: SectionSlot::One(a.id()),
                tree: SectionSlot::Shared(vec![a.id(), b.id()]),
            }
        );
        assert!(e.to_string().ends_with(&format!(
            "tree says shared by pagemaps [{}, {}]",
            a.id(),
            b.id()
        )));
        space
            .index
            .set(s, &Slot::Shared(vec![&b]), space.tree.srcu());
        assert!(space.validate().is_err(), "a table without a");
        space
            .index
            .set(s, &Slot::Shared(vec![&a, &b]), space.tree.srcu());
        space.validate().unwrap();
        space.memunmap_device_private_pagemap(&b).unwrap();
        space.memunmap_device_private_pagemap(&a).unwrap();
        space.validate().unwrap();
    }

    /// Section-aligned packing reserves whole sections in the tree, but the
    /// padding belongs to no pagemap.
    #[test]
    fn section_aligned_reserves_whole_sections() {
        let space = DevicePrivateSpace::with_config(SpaceConfig {
            packing: Packing::SectionAligned,
            ..SpaceConfig::default()
        });
        let a = map(&space, 10);
        let b = map(&space, 1);
        assert_eq!(
            b.first_offset - a.first_offset,
            512,
            "b starts a section on"
        );
        let g = space.read();
        let at = |pages: u64| {
            g.pagemap_at(DevicePrivateAddr::new(
                (a.first_offset + pages) << PAGE_SHIFT,
            ))
            .map(|pm| pm.id())
        };
        assert_eq!(at(9), Some(a.id()));
        assert_eq!(at(10), None, "padding after a");
        assert_eq!(at(511), None);
        assert_eq!(at(512), Some(b.id()));
        let (have, w) = devpriv_core::warn::capture(|| {
            g.device_private_offset_to_page(DevicePrivateOffset::new(a.first_offset + 10))
                .is_none()
        });
        assert!(
            have && w.count() == 1,
            "a padding offset is a miss with a WARN"
        );
        drop(g);
        space.validate().unwrap();
    }
}
