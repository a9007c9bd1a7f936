//! The CPU physical address space as `/proc/iomem` shows it, and the old way
//! of placing device-private memory in it.
//!
//! Kernel: `kernel/resource.c` (`iomem_resource`, `insert_resource()`,
//! `request_free_mem_region()` → `get_free_mem_region()`,
//! `release_mem_region()`, `region_intersects()`),
//! `include/linux/ioport.h` (`struct resource`, `IORESOURCE_*`,
//! `IORES_DESC_*`, main).
//!
//! In 7.0 and 7.1 this is still how device-private memory is registered: a
//! driver reserves physical address space for its device-private pages
//! with `request_free_mem_region(&iomem_resource, size, name)` and hands
//! that range to `memremap_pages()`, so every device page has a real pfn.
//! The unmerged v6 proposal ("Remove device private pages from physical
//! address space") would retire this path; its cover letters list why the
//! reservation fails: VMs put huge PCI windows right after RAM, some CPUs
//! have only 43 physical-address bits, and (before 6.19) KASLR shrank the
//! usable top of the physical space. This module models enough of the
//! resource tree to show each case, and [`MachinePreset`] builds them.
//!
//! # How `request_free_mem_region()` searches
//!
//! The kernel rounds `size` up to `GFR_DEFAULT_ALIGN` (one memory section,
//! `1 << PA_SECTION_SHIFT`, 128 MiB on x86-64), then tries candidates from
//! the top down (`get_free_mem_region()` with `GFR_DESCENDING`, since
//! v6.7's 659aa050a538 "kernel/resource: Increment by align value in
//! `get_free_mem_region()`"):
//!
//! ```text
//! end  = min(iomem_resource.end, DIRECT_MAP_PHYSMEM_END)
//! addr = end - size + 1, then align lower each time   while addr > align
//!        first candidate that intersects no resource -> requested, busy
//!        none                                          -> -ERANGE
//! ```
//!
//! With `end + 1` and `size` both multiples of the section, the candidates
//! are every section-aligned start, so the walk is the highest-fit gap
//! search on the section grid, except that candidates at or below one
//! section are never tried (`gfr_continue()` wants `addr > align`). A free
//! gap that holds no section-aligned block of `size` is still missed. The
//! model walks the same candidates and returns the same answer, but
//! instead of testing each one (2^19 candidates in a 46-bit space) it jumps
//! past the lowest resource a candidate hits: every candidate skipped
//! would hit that resource too. The answer equals
//! [`RangeTree::find_gap_rev`] with `align` = the section, when that lies
//! above one section (a property test checks both against a literal
//! transcription of the kernel's loop).
//!
//! From v6.1 to v6.6 the loop stepped by `size` and stopped at `addr >
//! size`, so a request of half the searchable space was refused even in an
//! empty space, and most gaps off the `size` stride were missed. That walk
//! is not modelled.
//!
//! # Differences from the kernel
//!
//! - Flat: the model keeps only the top-level children of `iomem_resource`
//!   (RAM, PCI windows, reserved ranges, requested regions). That is exact
//!   for this path: the candidate check (`__region_intersects(base, ...)`
//!   with `flags = 0`, `IORES_DESC_NONE`) counts every overlapping
//!   top-level resource, and a region disjoint from all of them is inserted
//!   at the top level. [`IomemResource::insert_resource`] therefore refuses
//!   to nest (`EBUSY` on any overlap) where the kernel's `insert_resource()`
//!   may adopt or descend.
//! - No `devres`, no `revoke_iomem()`, and no `ENOMEM` (allocation never
//!   fails).
//!
//! [`RangeTree::find_gap_rev`]: devpriv_rangetree::RangeTree::find_gap_rev

use devpriv_core::sync::Mutex;
use devpriv_core::{Errno, PAGE_SHIFT, PageCount, PagingMode, Pfn, PhysAddr, warn_on};
use devpriv_rangetree::RangeTree;
use std::fmt::{self, Write as _};
use std::sync::Arc;

/// `PA_SECTION_SHIFT` on x86-64 (`SECTION_SIZE_BITS`, 128 MiB sections).
///
/// Kernel: `SECTION_SIZE_BITS`, `arch/x86/include/asm/sparsemem.h` (main).
pub const X86_64_SECTION_SIZE_BITS: u32 = 27;

/// What a resource describes.
///
/// Kernel: the `flags` (`IORESOURCE_*`) and `desc` (`IORES_DESC_*`) of
/// `struct resource`, `include/linux/ioport.h` (main).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// System RAM, busy.
    ///
    /// Kernel: `IORESOURCE_SYSTEM_RAM | IORESOURCE_BUSY` ("System RAM", main).
    SystemRam,
    /// A PCI host bridge aperture: not busy, devices' BARs live inside it.
    ///
    /// Kernel: `IORESOURCE_MEM` ("PCI Bus 0000:00", main).
    PciWindow,
    /// Firmware-reserved memory.
    ///
    /// Kernel: `IORESOURCE_MEM`, `IORES_DESC_RESERVED` ("Reserved", main).
    Reserved,
    /// A region requested for device-private pages, busy.
    ///
    /// Kernel: `IORESOURCE_MEM | IORESOURCE_BUSY`,
    /// `IORES_DESC_DEVICE_PRIVATE_MEMORY` (main).
    DevicePrivate,
}

impl ResourceKind {
    /// `true` if the kernel marks such a resource `IORESOURCE_BUSY`.
    ///
    /// Kernel: `flags & IORESOURCE_BUSY` (main).
    pub const fn is_busy(self) -> bool {
        matches!(self, ResourceKind::SystemRam | ResourceKind::DevicePrivate)
    }
}

/// One entry of the physical resource tree.
///
/// Kernel: `struct resource`, `include/linux/ioport.h` (main).
///
/// # Invariants
///
/// `start <= end` (both inclusive, as in the kernel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    name: String,
    start: PhysAddr,
    end: PhysAddr,
    kind: ResourceKind,
}

impl Resource {
    /// Kernel: `resource::name` (main).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Kernel: `resource::start` (main).
    pub fn start(&self) -> PhysAddr {
        self.start
    }

    /// The last byte, inclusive.
    ///
    /// Kernel: `resource::end` (main).
    pub fn end(&self) -> PhysAddr {
        self.end
    }

    /// Bytes covered, or `None` for a resource spanning all 2^64 bytes.
    ///
    /// Kernel: `resource_size()` (main).
    pub fn size(&self) -> Option<u64> {
        (self.end.get() - self.start.get()).checked_add(1)
    }

    /// Kernel: `resource::flags` / `resource::desc` (main).
    pub fn kind(&self) -> ResourceKind {
        self.kind
    }
}

/// What [`IomemResource::region_intersects`] found.
///
/// Kernel: `REGION_DISJOINT`, `REGION_INTERSECTS`, `REGION_MIXED`,
/// `include/linux/mm.h` (main).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegionIntersects {
    /// No resource of the kind overlaps the range.
    Disjoint,
    /// Only resources of the kind overlap it.
    Intersects,
    /// Resources of the kind and of other kinds overlap it.
    Mixed,
}

/// The shape of a machine's physical address space.
///
/// Kernel: none as one struct; each field is a kernel value (see the
/// fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IomemConfig {
    /// Decides `MAX_PHYSMEM_BITS` (46 or 52) and so the default
    /// `DIRECT_MAP_PHYSMEM_END`.
    pub paging: PagingMode,
    /// The CPU's physical-address width: `iomem_resource.end` is
    /// `(1 << phys_bits) - 1` (x86 `setup_arch()` from
    /// `boot_cpu_data.x86_phys_bits`). `None` means `MAX_PHYSMEM_BITS`.
    pub phys_bits: Option<u32>,
    /// `DIRECT_MAP_PHYSMEM_END`, inclusive. `None` means
    /// `(1 << MAX_PHYSMEM_BITS) - 1`, its value on 7.0 with
    /// `CONFIG_ZONE_DEVICE=y` (which device-private memory needs). Before
    /// 269031b15c14 (6.19) x86 KASLR lowered it to the end of RAM plus the
    /// hotplug padding ([`MachinePreset::KaslrPre6_19`]).
    pub direct_map_end: Option<u64>,
    /// `PA_SECTION_SHIFT`: requests are rounded up to `1 << section_shift`
    /// bytes (`GFR_DEFAULT_ALIGN`). 27 on x86-64.
    pub section_shift: u32,
}

impl Default for IomemConfig {
    /// x86-64, 4-level paging, a 46-bit CPU, no KASLR limit.
    fn default() -> Self {
        IomemConfig {
            paging: PagingMode::FourLevel,
            phys_bits: None,
            direct_map_end: None,
            section_shift: X86_64_SECTION_SIZE_BITS,
        }
    }
}

/// The physical address space: `iomem_resource` and its top-level children.
///
/// Kernel: `iomem_resource` (`struct resource` spanning the CPU's physical
/// addresses) with `resource_lock`, `kernel/resource.c` (main).
///
/// # Differences from the kernel
///
/// A value, not a global, and flat (module docs). The children live in a
/// [`RangeTree`] keyed by physical byte address instead of a sibling list.
pub struct IomemResource {
    cfg: IomemConfig,
    end: u64,
    tree: RangeTree<Arc<Resource>>,
    /// `resource_lock` (write side): serialises searches with inserts.
    lock: Mutex<()>,
}

impl fmt::Debug for IomemResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IomemResource")
            .field("cfg", &self.cfg)
            .field("end", &format_args!("{:#x}", self.end))
            .field("resources", &self.tree.len())
            .finish()
    }
}

impl IomemResource {
    /// An empty physical address space shaped by `cfg`.
    ///
    /// Kernel: `iomem_resource` after `setup_arch()` set its `end` (main).
    ///
    /// # Errors
    ///
    /// `EINVAL`: `phys_bits` is not in `PAGE_SHIFT..=63`, or
    /// `section_shift` is not in `PAGE_SHIFT..=phys_bits`.
    pub fn new(cfg: IomemConfig) -> Result<Self, Errno> {
        let bits = cfg.phys_bits.unwrap_or(cfg.paging.max_physmem_bits());
        if !(PAGE_SHIFT..=63).contains(&bits) || !(PAGE_SHIFT..=bits).contains(&cfg.section_shift) {
            return Err(Errno::EINVAL);
        }
        Ok(IomemResource {
            cfg,
            end: (1u64 << bits) - 1,
            tree: RangeTree::new(),
            lock: Mutex::new(()),
        })
    }

    /// The settings.
    ///
    /// Kernel: none (model only).
    pub fn config(&self) -> IomemConfig {
        self.cfg
    }

    /// The last physical byte, inclusive.
    ///
    /// Kernel: `iomem_resource.end` (main).
    pub fn end(&self) -> PhysAddr {
        PhysAddr::new(self.end)
    }

    /// Where `request_free_mem_region()` starts looking from: the lower of
    /// `iomem_resource.end` and `DIRECT_MAP_PHYSMEM_END`, inclusive.
    ///
    /// Kernel: `min_t(resource_size_t, base->end, DIRECT_MAP_PHYSMEM_END)`
    /// in `gfr_start()` (main).
    pub fn search_end(&self) -> PhysAddr {
        let physmem_end = self.cfg.paging.physmem_size() - 1;
        let dm = self.cfg.direct_map_end.unwrap_or(physmem_end);
        PhysAddr::new(self.end.min(dm))
    }

    /// The rounding of `request_free_mem_region()` sizes.
    ///
    /// Kernel: `GFR_DEFAULT_ALIGN` (`1UL << PA_SECTION_SHIFT`, main).
    pub fn gfr_align(&self) -> u64 {
        1 << self.cfg.section_shift
    }

    /// Adds a top-level resource of `size` bytes at `start`.
    ///
    /// Kernel: `insert_resource(&iomem_resource, res)` (e820 RAM, firmware
    /// reservations, PCI host bridge windows), `kernel/resource.c` (main).
    ///
    /// # Differences from the kernel
    ///
    /// Flat: a resource overlapping any existing one is refused, where the
    /// kernel may nest it inside, or adopt, the existing one.
    ///
    /// # Errors
    ///
    /// - `EINVAL`: `size` is 0, or the range runs past `iomem_resource.end`.
    /// - `EBUSY`: it overlaps an existing resource (the kernel's conflict
    ///   return).
    pub fn insert_resource(
        &self,
        name: &str,
        start: PhysAddr,
        size: u64,
        kind: ResourceKind,
    ) -> Result<Arc<Resource>, Errno> {
        let last = size
            .checked_sub(1)
            .and_then(|s| start.get().checked_add(s))
            .filter(|&l| l <= self.end)
            .ok_or(Errno::EINVAL)?;
        let res = Arc::new(Resource {
            name: name.to_owned(),
            start,
            end: PhysAddr::new(last),
            kind,
        });
        let _l = self.lock.lock();
        self.tree
            .insert_range(start.get()..=last, Arc::clone(&res))
            .map_err(|_| Errno::EBUSY)?;
        Ok(res)
    }

    /// Reserves `size` bytes (rounded up to a section) of physical address
    /// space that no resource uses, as high as possible, for device-private
    /// pages, and marks them busy.
    ///
    /// Kernel: `request_free_mem_region(base = &iomem_resource, size,
    /// name)`, i.e. `get_free_mem_region(NULL, base, size,
    /// GFR_DEFAULT_ALIGN, name, IORES_DESC_DEVICE_PRIVATE_MEMORY,
    /// GFR_DESCENDING | GFR_REQUEST_REGION)`, `kernel/resource.c` (main:
    /// the walk of 659aa050a538, v6.7, unchanged in 7.0 and 7.1).
    ///
    /// The candidates and the answer are the kernel's (module docs): from
    /// `search_end() - size + 1` downwards in steps of one section
    /// ([`gfr_align`](Self::gfr_align)), while the candidate is above one
    /// section; the first one that intersects no top-level resource is
    /// taken.
    ///
    /// # Differences from the kernel
    ///
    /// - A `size` of 0 is `EINVAL` (the kernel would go on with an empty
    ///   resource). A `size` larger than the searchable space is `ERANGE`
    ///   (the kernel computes a wrapped start address).
    /// - `ENOMEM` (`alloc_resource()` failing) is not modelled.
    ///
    /// # Errors
    ///
    /// - [`Errno::ERANGE`]: no candidate is free — the failure the v6
    ///   proposal's own address space would remove.
    /// - `EINVAL`: `size` is 0 or rounds past 2^64.
    pub fn request_free_mem_region(&self, size: u64, name: &str) -> Result<Arc<Resource>, Errno> {
        let align = self.gfr_align();
        if size == 0 {
            return Err(Errno::EINVAL);
        }
        let size = size.checked_next_multiple_of(align).ok_or(Errno::EINVAL)?;
        let _l = self.lock.lock();
        let addr = {
            let g = self.tree.read();
            gfr_search(self.search_end().get(), size, align, |lo, hi| {
                g.find_from(lo)
                    .map(|(r, _)| *r.start())
                    .filter(|&s| s <= hi)
            })
        }
        .ok_or(Errno::ERANGE)?;
        let res = Arc::new(Resource {
            name: name.to_owned(),
            start: PhysAddr::new(addr),
            end: PhysAddr::new(addr + (size - 1)),
            kind: ResourceKind::DevicePrivate,
        });
        // Cannot conflict: the range was found free under the same lock.
        // The kernel breaks out to -ERANGE if `__request_region_locked()`
        // fails, and so does the model.
        self.tree
            .insert_range(addr..=addr + (size - 1), Arc::clone(&res))
            .map_err(|_| Errno::ERANGE)?;
        Ok(res)
    }

    /// Releases a busy region previously requested, by its exact range.
    ///
    /// Kernel: `release_mem_region(start, n)` (`__release_region()`),
    /// `kernel/resource.c` (main).
    ///
    /// # Errors
    ///
    /// `EINVAL` (with a `WARN`): no busy resource has exactly this range
    /// (the kernel WARNs "Trying to free nonexistent resource" and returns).
    pub fn release_mem_region(&self, start: PhysAddr, size: u64) -> Result<(), Errno> {
        let _l = self.lock.lock();
        let found = {
            let g = self.tree.read();
            g.load(start.get()).is_some_and(|(r, res)| {
                *r.start() == start.get()
                    && res.size() == Some(size)
                    && res.kind.is_busy()
                    && res.kind != ResourceKind::SystemRam
            })
        };
        if warn_on!(
            !found,
            "release_mem_region(): Trying to free nonexistent resource"
        ) {
            return Err(Errno::EINVAL);
        }
        self.tree.erase(start.get());
        Ok(())
    }

    /// Whether `size` bytes at `start` overlap resources of `kind` (`None`:
    /// of any kind, like `flags = 0` with `IORES_DESC_NONE`).
    ///
    /// Kernel: `region_intersects(start, size, flags, desc)`,
    /// `kernel/resource.c` (main).
    ///
    /// # Differences from the kernel
    ///
    /// Top-level resources only, and a range partly over free space counts
    /// as `Intersects` if everything it overlaps is of the kind.
    pub fn region_intersects(
        &self,
        start: PhysAddr,
        size: u64,
        kind: Option<ResourceKind>,
    ) -> RegionIntersects {
        let Some(last) = size.checked_sub(1).and_then(|s| start.get().checked_add(s)) else {
            return RegionIntersects::Disjoint;
        };
        let (mut ours, mut other) = (0, 0);
        let g = self.tree.read();
        let mut key = start.get();
        while let Some((r, res)) = g.find_from(key) {
            if *r.start() > last {
                break;
            }
            if kind.is_none_or(|k| k == res.kind) {
                ours += 1;
            } else {
                other += 1;
            }
            match r.end().checked_add(1) {
                Some(k) => key = k,
                None => break,
            }
        }
        match (ours, other) {
            (0, _) => RegionIntersects::Disjoint,
            (_, 0) => RegionIntersects::Intersects,
            _ => RegionIntersects::Mixed,
        }
    }

    /// Every top-level resource, by address.
    ///
    /// Kernel: walking `iomem_resource.child` and its siblings (main).
    pub fn resources(&self) -> Vec<Arc<Resource>> {
        self.tree
            .read()
            .iter()
            .map(|(_, r)| Arc::clone(r))
            .collect()
    }

    /// The mainline registration of device-private memory: reserve
    /// physical space for `nr_pages` pages, then give each page the pfn of
    /// its address there. "Legacy" only from the v6 proposal's point of
    /// view: 7.0 and 7.1 drivers still do this.
    ///
    /// Kernel: the driver sequence `devm_request_free_mem_region()` +
    /// `memremap_pages()` for `MEMORY_DEVICE_PRIVATE` (`lib/test_hmm.c`
    /// `dmirror_allocate_chunk()`, nouveau, xe, amdkfd; main, as in 7.0 and
    /// 7.1), which the unmerged v6 proposal replaces with
    /// `memremap_device_private_pagemap()`.
    ///
    /// # Differences from the kernel
    ///
    /// Only the placement is modelled: no pages array, no `pgmap_array`
    /// entry. `memremap_pages()`'s own range checks (inside the pluggable
    /// range, not over System RAM) always pass for a range that
    /// `request_free_mem_region()` handed out, so the resource request is
    /// the step that fails.
    ///
    /// # Errors
    ///
    /// As for [`request_free_mem_region`](Self::request_free_mem_region);
    /// `EINVAL` also for `nr_pages == 0` or too many pages for 64 bits.
    pub fn legacy_memremap_device_private(
        &self,
        nr_pages: PageCount,
        name: &str,
    ) -> Result<LegacyPagemap, Errno> {
        let bytes = nr_pages
            .checked_bytes()
            .filter(|&b| b > 0)
            .ok_or(Errno::EINVAL)?;
        let resource = self.request_free_mem_region(bytes, name)?;
        Ok(LegacyPagemap {
            first_pfn: resource.start().to_pfn(),
            nr_pages,
            resource,
        })
    }

    /// Renders the map as `/proc/iomem` shows its top level, with the free
    /// gaps between resources and sizes in binary units.
    ///
    /// Kernel: `/proc/iomem` (`r_show()`), `kernel/resource.c` (main).
    ///
    /// # Differences from the kernel
    ///
    /// Free gaps are listed (the kernel prints only resources), and a size
    /// column is added.
    pub fn render(&self) -> String {
        let width = format!("{:x}", self.end).len();
        let mut out = String::new();
        let mut line = |start: u64, end: u64, label: &str| {
            let size = (end - start)
                .checked_add(1)
                .map_or_else(|| "16 EiB".into(), format_size);
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "{start:0width$x}-{end:0width$x} : {label:<34} {size:>9}"
            );
        };
        let mut next = 0u64;
        for r in self.resources() {
            let (s, e) = (r.start.get(), r.end.get());
            if s > next {
                line(next, s - 1, "(free)");
            }
            let label = match r.kind {
                ResourceKind::DevicePrivate => format!("{} (device private)", r.name),
                _ => r.name.clone(),
            };
            line(s, e, &label);
            next = e.saturating_add(1);
        }
        if next <= self.end {
            line(next, self.end, "(free)");
        }
        out
    }
}

/// Device-private memory placed the mainline way: a busy physical range
/// and the pfns its pages take.
///
/// Kernel: the `struct dev_pagemap` of a 7.0/7.1 driver (main), whose
/// `range` came from `request_free_mem_region()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacyPagemap {
    /// The requested region (rounded up to a section).
    pub resource: Arc<Resource>,
    /// The pfn of page 0 (`PHYS_PFN(res->start)`).
    pub first_pfn: Pfn,
    /// Pages the driver asked for.
    pub nr_pages: PageCount,
}

/// The candidate walk of `get_free_mem_region()` with `GFR_DESCENDING`,
/// with `size` already rounded to `align`. `lowest_hit(lo, hi)` returns the
/// start of the lowest resource overlapping `[lo, hi]`, if any.
fn gfr_search(
    end: u64,
    size: u64,
    align: u64,
    lowest_hit: impl Fn(u64, u64) -> Option<u64>,
) -> Option<u64> {
    // gfr_start(): end - size + 1 (wraps in C if size > end + 1).
    let mut addr = end.checked_sub(size - 1)?;
    // gfr_continue(base, addr, align): addr > align && addr >= base->start
    // (0 for iomem); gfr_next(addr, align): addr - align.
    while addr > align {
        let Some(hit) = lowest_hit(addr, addr + (size - 1)) else {
            return Some(addr);
        };
        // Every candidate down to the first that ends below `hit` overlaps
        // the same resource (it starts at or below `addr`, which that
        // resource reaches): jump to that candidate.
        let bound = hit.checked_sub(size)?;
        let steps = (addr - bound).div_ceil(align);
        addr = addr.checked_sub(steps.checked_mul(align)?)?;
    }
    None
}

/// `bytes` in the largest binary unit that keeps a value of at least 1,
/// with one decimal unless exact: `"64 GiB"`, `"63.9 TiB"`.
///
/// Kernel: none (model only; `string_get_size()` in spirit).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0;
    while unit + 1 < UNITS.len() && bytes >> (10 * (unit + 1)) > 0 {
        unit += 1;
    }
    let shift = 10 * unit;
    let whole = bytes >> shift;
    let rest = bytes - (whole << shift);
    if rest == 0 {
        return format!("{whole} {}", UNITS[unit]);
    }
    // One decimal, truncated (so 63.99 TiB shows as 63.9, never 64.0).
    let tenth = (u128::from(rest) * 10) >> shift;
    format!("{whole}.{tenth} {}", UNITS[unit])
}

/// Ready-made machines for the comparison of the mainline registration
/// (`request_free_mem_region()`) with the v6 proposal's address space.
///
/// Kernel: none (model only); each is a layout the v6 cover letters name.
/// The first three fail or succeed the same way on 7.0 and 7.1;
/// [`KaslrPre6_19`](MachinePreset::KaslrPre6_19) is history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MachinePreset {
    /// A 46-bit host with 64 GiB of RAM and a modest 64-bit PCI window: the
    /// mainline way works, and takes the top of the physical space.
    BareMetal,
    /// A 46-bit VM whose firmware gives the 64-bit PCI window everything
    /// from the end of RAM to the end of the physical space.
    VmBigPciWindow,
    /// A CPU with 43 physical-address bits (`iomem_resource` ends at 8
    /// TiB), with RAM and PCI windows filling it.
    PhysBits43,
    /// **Pre-fix history, not 7.0.** The `BareMetal` layout with a 12 TiB
    /// PCI window on a kernel whose KASLR trims the direct map:
    /// `DIRECT_MAP_PHYSMEM_END` is RAM rounded up to a TiB plus the 10 TiB
    /// hotplug padding (11 TiB), inside the window, so the search finds
    /// nothing. Since 269031b15c14 ("x86/kaslr: Recognize all `ZONE_DEVICE`
    /// users as physaddr consumers", 6.19, backported to 6.12.y and 6.1.y)
    /// a kernel with `CONFIG_ZONE_DEVICE=y`, which device-private memory
    /// needs, no longer trims, and the same request succeeds at the top
    /// (as [`BareMetal`](MachinePreset::BareMetal)'s does). Before it, the
    /// trim happened on every kernel older than 7ffb791423c7 and, after
    /// that commit, on kernels with `CONFIG_PCI_P2PDMA=n`.
    KaslrPre6_19,
}

impl MachinePreset {
    /// Every preset, in the order the example shows them.
    ///
    /// Kernel: none (model only).
    pub const ALL: [MachinePreset; 4] = [
        MachinePreset::BareMetal,
        MachinePreset::VmBigPciWindow,
        MachinePreset::PhysBits43,
        MachinePreset::KaslrPre6_19,
    ];

    /// A short name.
    ///
    /// Kernel: none (model only).
    pub const fn name(self) -> &'static str {
        match self {
            MachinePreset::BareMetal => "bare-metal-46bit",
            MachinePreset::VmBigPciWindow => "vm-46bit-big-pci-window",
            MachinePreset::PhysBits43 => "cpu-43bit",
            MachinePreset::KaslrPre6_19 => "kaslr-46bit-pre-6.19",
        }
    }

    /// `true` for a layout that no current kernel produces (kept to show
    /// what the v6 cover letters described).
    ///
    /// Kernel: none (model only).
    pub const fn is_history(self) -> bool {
        matches!(self, MachinePreset::KaslrPre6_19)
    }

    /// One line describing the machine.
    ///
    /// Kernel: none (model only).
    pub const fn description(self) -> &'static str {
        match self {
            MachinePreset::BareMetal => {
                "46-bit host, 64 GiB RAM, 256 GiB 64-bit PCI window above RAM"
            }
            MachinePreset::VmBigPciWindow => {
                "46-bit VM, 64 GiB RAM, 64-bit PCI window from the end of RAM to the top"
            }
            MachinePreset::PhysBits43 => {
                "x86_phys_bits = 43 (iomem ends at 8 TiB), RAM up to 2 TiB, PCI window to the top"
            }
            MachinePreset::KaslrPre6_19 => {
                "HISTORY (before 269031b15c14, 6.19; not 7.0): 46-bit host, 64 GiB RAM, 12 TiB PCI window; KASLR ends the direct map at 1 + 10 TiB"
            }
        }
    }

    /// The machine's physical address space, populated.
    ///
    /// Kernel: none (model only): the `insert_resource()` calls of e820 and
    /// the PCI host bridge driver.
    ///
    /// # Errors
    ///
    /// None in practice: the layouts are fixed and valid (`EINVAL`/`EBUSY`
    /// from [`IomemResource::insert_resource`] would mean a bug here).
    pub fn build(self) -> Result<IomemResource, Errno> {
        const GIB: u64 = 1 << 30;
        const TIB: u64 = 1 << 40;
        let mut cfg = IomemConfig::default();
        match self {
            MachinePreset::PhysBits43 => cfg.phys_bits = Some(43),
            // kernel_randomize_memory() before 269031b15c14: the direct map
            // spans RAM rounded up to a TiB plus
            // RANDOMIZE_MEMORY_PHYSICAL_PADDING (0xa TiB with hotplug):
            // 1 + 10 TiB here.
            MachinePreset::KaslrPre6_19 => cfg.direct_map_end = Some(11 * TIB - 1),
            _ => {}
        }
        let io = IomemResource::new(cfg)?;
        let ram_top = if self == MachinePreset::PhysBits43 {
            2 * TIB
        } else {
            64 * GIB
        };
        // The usual x86 low layout: RAM to 3 GiB, then the 32-bit PCI hole.
        io.insert_resource(
            "System RAM",
            PhysAddr::new(0),
            3 * GIB,
            ResourceKind::SystemRam,
        )?;
        io.insert_resource(
            "PCI Bus 0000:00",
            PhysAddr::new(3 * GIB),
            GIB,
            ResourceKind::PciWindow,
        )?;
        io.insert_resource(
            "System RAM",
            PhysAddr::new(4 * GIB),
            ram_top - 4 * GIB,
            ResourceKind::SystemRam,
        )?;
        let window = match self {
            MachinePreset::BareMetal => 256 * GIB,
            MachinePreset::KaslrPre6_19 => 12 * TIB,
            MachinePreset::VmBigPciWindow | MachinePreset::PhysBits43 => io.end + 1 - ram_top,
        };
        io.insert_resource(
            "PCI Bus 0000:00",
            PhysAddr::new(ram_top),
            window,
            ResourceKind::PciWindow,
        )?;
        Ok(io)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use devpriv_core::PAGE_SIZE;
    use proptest::prelude::*;

    const GIB: u64 = 1 << 30;
    const TIB: u64 = 1 << 40;

    /// A small space: 2^bits bytes, 4 KiB "sections", no resources.
    fn small(bits: u32) -> IomemResource {
        small_sections(bits, PAGE_SHIFT)
    }

    /// A small space: 2^bits bytes, sections of `2^section_shift` bytes.
    fn small_sections(bits: u32, section_shift: u32) -> IomemResource {
        IomemResource::new(IomemConfig {
            phys_bits: Some(bits),
            section_shift,
            ..IomemConfig::default()
        })
        .unwrap()
    }

    /// The kernel's loop, literally: every candidate, every resource.
    fn naive(end: u64, size: u64, align: u64, busy: &[(u64, u64)]) -> Option<u64> {
        let mut addr = end.checked_sub(size - 1)?;
        while addr > align {
            let last = addr + size - 1;
            if busy.iter().all(|&(s, e)| e < addr || s > last) {
                return Some(addr);
            }
            addr -= align;
        }
        None
    }

    #[test]
    fn empty_space_gives_the_top() {
        let io = IomemResource::new(IomemConfig::default()).unwrap();
        let r = io.request_free_mem_region(GIB, "dev").unwrap();
        assert_eq!(r.start().get(), (1 << 46) - GIB);
        assert_eq!(r.end().get(), (1 << 46) - 1);
        assert_eq!(r.kind(), ResourceKind::DevicePrivate);
        // The next one goes right below.
        let r2 = io.request_free_mem_region(GIB, "dev2").unwrap();
        assert_eq!(r2.end().get() + 1, r.start().get());
    }

    #[test]
    fn sizes_round_up_to_a_section() {
        let io = IomemResource::new(IomemConfig::default()).unwrap();
        let r = io.request_free_mem_region(4096, "tiny").unwrap();
        assert_eq!(r.size(), Some(128 << 20));
        assert_eq!(r.start().get(), (1 << 46) - (128 << 20));
    }

    /// The walk steps down by the 128 MiB section, not by the size
    /// (659aa050a538): with the top GiB busy, a 768 MiB request lands right
    /// below it. The v6.1 walk stepped by 768 MiB and answered 2^46 − 2304
    /// MiB.
    #[test]
    fn walk_steps_by_the_section_below_a_busy_top() {
        const MIB: u64 = 1 << 20;
        let io = IomemResource::new(IomemConfig::default()).unwrap();
        let top = 1u64 << 46;
        io.insert_resource(
            "busy",
            PhysAddr::new(top - GIB),
            GIB,
            ResourceKind::Reserved,
        )
        .unwrap();
        let r = io.request_free_mem_region(768 * MIB, "dev").unwrap();
        assert_eq!(r.start().get(), 0x3fff_9000_0000);
        assert_eq!(r.start().get(), top - 1792 * MIB);
        assert_eq!(r.end().get() + 1, top - GIB);
    }

    /// Half the space or more: the v6.1 bound (`addr > size`) refused it
    /// even in an empty space; the current one (`addr > align`) does not.
    #[test]
    fn half_the_space_is_no_longer_refused() {
        let io = IomemResource::new(IomemConfig::default()).unwrap();
        let r = io.request_free_mem_region(1 << 45, "half").unwrap();
        assert_eq!(r.start().get(), 1 << 45);
        assert_eq!(
            io.request_free_mem_region(1 << 45, "other half"),
            Err(Errno::ERANGE)
        );
    }

    /// Candidates are every section-aligned start, from the top.
    ///
    /// ```text
    /// units:   0 1 2 3 4 5 6 7 8 9 a b c d e f     (1 unit = 1 section)
    ///          R R . . . . . . . . . . . P P P     (R: RAM, P: PCI window)
    /// size 1: f, e, d hit P; c is free              -> c
    /// size 2: e, d, c hit P; b-c is free            -> b
    /// size 3: d, c, b hit P; a-c is free            -> a
    /// size 5: b .. 9 hit P; 8-c is free             -> 8
    /// size 8: 8 .. 6 hit P; 5-c is free             -> 5
    /// size 12: 4 .. 2 hit P, 1 is not above 1       -> ERANGE
    /// ```
    #[test]
    fn walk_tries_every_section_from_the_top() {
        let u = PAGE_SIZE;
        let io = small(16); // 16 units of 4 KiB
        io.insert_resource("ram", PhysAddr::new(0), 2 * u, ResourceKind::SystemRam)
            .unwrap();
        io.insert_resource("pci", PhysAddr::new(13 * u), 3 * u, ResourceKind::PciWindow)
            .unwrap();
        let got = |n: u64| {
            io.request_free_mem_region(n * u, "d").map(|r| {
                let s = r.start();
                io.release_mem_region(s, n * u).unwrap();
                s.get() / u
            })
        };
        assert_eq!(got(1), Ok(12));
        assert_eq!(got(2), Ok(11));
        assert_eq!(got(3), Ok(10));
        assert_eq!(got(5), Ok(8));
        assert_eq!(got(8), Ok(5));
        assert_eq!(got(12), Err(Errno::ERANGE));
    }

    /// A gap large enough but holding no section-aligned block: the kernel
    /// misses it.
    ///
    /// ```text
    /// units:   0 1 2 3 4 5 6 7 8 9 a b c d e f     (1 section = 4 units)
    ///          R R R R R . . . . . . P P P P P
    /// size 4: c hits P, 8 hits P, 4 is not above 4
    ///         -> ERANGE, though 5-8 (and 6-9, 7-a) are free.
    /// ```
    #[test]
    fn an_off_grid_gap_is_missed_like_the_kernel() {
        let u = PAGE_SIZE;
        let io = small_sections(16, PAGE_SHIFT + 2);
        io.insert_resource("ram", PhysAddr::new(0), 5 * u, ResourceKind::SystemRam)
            .unwrap();
        io.insert_resource("pci", PhysAddr::new(11 * u), 5 * u, ResourceKind::PciWindow)
            .unwrap();
        assert_eq!(io.request_free_mem_region(4 * u, "d"), Err(Errno::ERANGE));
        assert_eq!(
            io.region_intersects(PhysAddr::new(5 * u), 4 * u, None),
            RegionIntersects::Disjoint
        );
    }

    /// `gfr_continue()` wants `addr > align`: the lowest section is never
    /// tried.
    #[test]
    fn candidates_at_or_below_one_section_are_never_tried() {
        let u = PAGE_SIZE;
        let io = small(15); // 8 units
        // Half the space: candidate 4 > 1, taken.
        let r = io.request_free_mem_region(4 * u, "a").unwrap();
        assert_eq!(r.start().get(), 4 * u);
        // Two units: 6, 5, 4, 3 hit a; 2-3 is free.
        let r = io.request_free_mem_region(2 * u, "b").unwrap();
        assert_eq!(r.start().get(), 2 * u);
        // One unit: 7 .. 2 hit; 1 is not above 1, so units 0 and 1 stay
        // unused.
        assert_eq!(io.request_free_mem_region(u, "c"), Err(Errno::ERANGE));
        assert_eq!(
            io.region_intersects(PhysAddr::new(0), 2 * u, None),
            RegionIntersects::Disjoint
        );
        // A request larger than the space: ERANGE (C would wrap).
        assert_eq!(io.request_free_mem_region(16 * u, "d"), Err(Errno::ERANGE));
    }

    #[test]
    fn errors_are_the_documented_ones() {
        let io = small(20);
        assert_eq!(io.request_free_mem_region(0, "z"), Err(Errno::EINVAL));
        assert_eq!(
            io.request_free_mem_region(u64::MAX, "z"),
            Err(Errno::EINVAL)
        );
        assert_eq!(Errno::ERANGE.to_kernel(), -34);
        assert_eq!(Errno::EBUSY.to_kernel(), -16);
        // insert_resource(): empty, past the end, overlapping.
        let ram = ResourceKind::SystemRam;
        assert_eq!(
            io.insert_resource("r", PhysAddr::new(0), 0, ram),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            io.insert_resource("r", PhysAddr::new(1 << 20), 1, ram),
            Err(Errno::EINVAL)
        );
        io.insert_resource("r", PhysAddr::new(0), 8192, ram)
            .unwrap();
        assert_eq!(
            io.insert_resource("r", PhysAddr::new(4096), 8192, ram),
            Err(Errno::EBUSY)
        );
        // release_mem_region(): only an exact, busy, requested range.
        let (r, w) = devpriv_core::warn::capture(|| io.release_mem_region(PhysAddr::new(0), 8192));
        assert_eq!(r, Err(Errno::EINVAL), "System RAM is not released this way");
        assert_eq!(w.count_matching("nonexistent resource"), 1);
        let d = io.request_free_mem_region(4096, "d").unwrap();
        assert_eq!(
            devpriv_core::warn::capture(|| io.release_mem_region(d.start(), 8192)).0,
            Err(Errno::EINVAL)
        );
        io.release_mem_region(d.start(), 4096).unwrap();
        assert_eq!(io.resources().len(), 1);
        // Bad configurations.
        let bad = |phys_bits, section_shift| {
            IomemResource::new(IomemConfig {
                phys_bits: Some(phys_bits),
                section_shift,
                ..IomemConfig::default()
            })
            .err()
        };
        assert_eq!(bad(11, 12), Some(Errno::EINVAL));
        assert_eq!(bad(64, 12), Some(Errno::EINVAL));
        assert_eq!(bad(20, 21), Some(Errno::EINVAL));
        assert_eq!(bad(20, 20), None);
    }

    #[test]
    fn region_intersects_classifies_by_kind() {
        let io = small(20);
        let u = PAGE_SIZE;
        io.insert_resource("ram", PhysAddr::new(0), 4 * u, ResourceKind::SystemRam)
            .unwrap();
        io.insert_resource("pci", PhysAddr::new(8 * u), 4 * u, ResourceKind::PciWindow)
            .unwrap();
        let ram = Some(ResourceKind::SystemRam);
        assert_eq!(
            io.region_intersects(PhysAddr::new(0), u, ram),
            RegionIntersects::Intersects
        );
        assert_eq!(
            io.region_intersects(PhysAddr::new(4 * u), 4 * u, None),
            RegionIntersects::Disjoint
        );
        assert_eq!(
            io.region_intersects(PhysAddr::new(2 * u), 8 * u, ram),
            RegionIntersects::Mixed
        );
        assert_eq!(
            io.region_intersects(PhysAddr::new(8 * u), u, ram),
            RegionIntersects::Disjoint
        );
        assert_eq!(
            io.region_intersects(PhysAddr::new(0), 0, None),
            RegionIntersects::Disjoint
        );
    }

    #[test]
    fn presets_fail_and_succeed_as_documented() {
        for p in MachinePreset::ALL {
            let io = p.build().unwrap();
            let r = io.legacy_memremap_device_private(PageCount::new(GIB / PAGE_SIZE), "xe");
            match p {
                MachinePreset::BareMetal => {
                    let lp = r.unwrap();
                    assert_eq!(lp.resource.start().get(), (1 << 46) - GIB);
                    assert_eq!(lp.first_pfn, Pfn::new(((1 << 46) - GIB) >> PAGE_SHIFT));
                }
                _ => assert_eq!(r.unwrap_err(), Errno::ERANGE, "{p:?}"),
            }
            assert_eq!(p.is_history(), p == MachinePreset::KaslrPre6_19);
            assert_eq!(p.description().starts_with("HISTORY"), p.is_history());
        }
        // The KASLR layout on 7.0 (ZONE_DEVICE=y: no trim) has room at the
        // top.
        let io = MachinePreset::KaslrPre6_19.build().unwrap();
        assert_eq!(io.search_end().get(), 11 * TIB - 1);
        let on_7_0 = IomemResource::new(IomemConfig::default()).unwrap();
        for r in io.resources() {
            on_7_0
                .insert_resource(r.name(), r.start(), r.size().unwrap(), r.kind())
                .unwrap();
        }
        assert_eq!(
            on_7_0
                .request_free_mem_region(GIB, "xe")
                .unwrap()
                .start()
                .get(),
            (1 << 46) - GIB
        );
        // 43 bits: iomem ends at 8 TiB.
        assert_eq!(
            MachinePreset::PhysBits43.build().unwrap().end().get(),
            8 * TIB - 1
        );
    }

    #[test]
    fn render_lists_resources_and_gaps() {
        let io = MachinePreset::BareMetal.build().unwrap();
        io.request_free_mem_region(GIB, "xe-vram").unwrap();
        let map = io.render();
        let lines: Vec<&str> = map.lines().collect();
        assert_eq!(lines.len(), 6, "{map}");
        assert!(
            lines[0].starts_with("000000000000-0000bfffffff : System RAM"),
            "{map}"
        );
        assert!(lines[0].ends_with("3 GiB"));
        assert!(lines[4].contains("(free)"), "{map}");
        assert!(
            lines[5].starts_with("3fffc0000000-3fffffffffff : xe-vram (device private)"),
            "{map}"
        );
        assert!(small(20).render().contains("(free)"));
    }

    #[test]
    fn format_size_picks_units() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(4096), "4 KiB");
        assert_eq!(format_size(64 * GIB), "64 GiB");
        assert_eq!(format_size((1 << 46) - 64 * GIB), "63.9 TiB");
        assert_eq!(format_size(u64::MAX), "15.9 EiB");
    }

    fn arb_layout() -> impl Strategy<Value = Vec<(u64, u64)>> {
        // Up to 6 resources as (start unit, length in units) in 64 units.
        proptest::collection::vec((0u64..64, 1u64..12), 0..6)
    }

    proptest! {
        // No failure persistence: it reads the working directory, which
        // Miri's isolation refuses.
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 4 } else { 256 },
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// The jumping walk answers exactly as the kernel's literal walk,
        /// and as the tree's highest section-aligned fit (above one
        /// section), for sections of 1, 2 and 4 units.
        #[test]
        fn walk_matches_the_kernel_loop_and_the_tree(
            layout in arb_layout(),
            units in 1u64..40,
            section in 0u32..3,
        ) {
            let u = PAGE_SIZE;
            let io = small_sections(18, PAGE_SHIFT + section); // 64 units
            let mut busy = Vec::new();
            for (s, n) in layout {
                let n = n.min(64 - s);
                if io.insert_resource("r", PhysAddr::new(s * u), n * u, ResourceKind::Reserved).is_ok() {
                    busy.push((s * u, (s + n) * u - 1));
                }
            }
            let align = io.gfr_align();
            let size = (units * u).next_multiple_of(align);
            let end = io.search_end().get();
            let want = naive(end, size, align, &busy);
            let fit = io.tree.find_gap_rev(size, align, 0..=end).ok().filter(|&s| s > align);
            let got = io.request_free_mem_region(units * u, "d").map(|r| r.start().get()).ok();
            prop_assert_eq!(got, want);
            prop_assert_eq!(got, fit);
        }
    }
}
