//! `hmm_range_fault()` and its output encoding, `HMM_PFN_*`.
//!
//! Kernel: `include/linux/hmm.h` (`enum hmm_pfn_flags`, `hmm_pfn_to_page()`,
//! `hmm_pfn_to_map_order()`), `mm/hmm.c`; v6 proposal patch 12/13.
//!
//! An HMM pfn keeps flags in its top 12 bits (v6; 11 in mainline) and
//! the pfn — or, with `HMM_PFN_DEVICE_PRIVATE`, a device-private offset —
//! below. The v6 proposal moved the 5-bit map-order field down one bit
//! (`HMM_PFN_ORDER_SHIFT` 53 → 52) to make room for `DEVICE_PRIVATE` at bit
//! 57; the v1 posting left the order at 53 and the two collided (hazard H9,
//! [`HmmPfnLayout::V1_COLLIDING`]).

use crate::leafops::Softleaf;
use crate::memory::{FaultFlags, VmFaultResult, handle_mm_fault};
use crate::memory_model::Memory;
use crate::mm_types::{Mm, VmFlags};
use crate::pgtable::{Pmd, Pte};
use core::fmt;
use devpriv_core::{
    DevicePrivateOffset, Errno, HPAGE_PMD_NR, Order, PAGE_SHIFT, PAGE_SIZE, PageFrame, Pfn,
};
use devpriv_pagemap::Owner;
use std::sync::Arc;

/// A bit layout of HMM pfns: where the order field starts and which bit
/// (if any) says "device private".
///
/// Kernel: the `HMM_PFN_*` constants of `include/linux/hmm.h` in three
/// versions (main, v6 and v6 history).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HmmPfnLayout {
    /// Kernel: `HMM_PFN_ORDER_SHIFT` (main: 53; v6: 52).
    pub order_shift: u32,
    /// Kernel: `HMM_PFN_DEVICE_PRIVATE` (0 when the layout has none, v6).
    pub device_private: u64,
}

impl HmmPfnLayout {
    /// Mainline 7.0: order at bits 53–57, no device-private bit.
    ///
    /// Kernel: none (model only).
    pub const MAINLINE: HmmPfnLayout = HmmPfnLayout {
        order_shift: 53,
        device_private: 0,
    };
    /// The v6 proposal' v1 posting: `DEVICE_PRIVATE` at bit 57 while the order
    /// field still covered bits 53–57. Broken; kept for hazard H9.
    ///
    /// Kernel: none (model only).
    pub const V1_COLLIDING: HmmPfnLayout = HmmPfnLayout {
        order_shift: 53,
        device_private: 1 << 57,
    };
    /// Series v2+ (12/13): order at bits 52–56, `DEVICE_PRIVATE` at 57.
    ///
    /// Kernel: none (model only).
    pub const SERIES: HmmPfnLayout = HmmPfnLayout {
        order_shift: 52,
        device_private: 1 << 57,
    };

    /// Mask of all flag bits: every bit from `order_shift` up.
    ///
    /// Kernel: `HMM_PFN_FLAGS` (main).
    pub const fn flags_mask(self) -> u64 {
        !((1 << self.order_shift) - 1)
    }

    /// Encodes a valid entry. The layout is applied as written: a layout
    /// whose fields overlap produces a value that decodes differently.
    ///
    /// Kernel: what `hmm_vma_handle_pte()` / `hmm_vma_handle_pmd()` /
    /// `hmm_vma_handle_absent_pmd()` store (`pfn | HMM_PFN_VALID |
    /// [WRITE] | [DEVICE_PRIVATE] | order << ORDER_SHIFT`, main; v6 with `DEVICE_PRIVATE`).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if the index reaches into the flag bits, the order
    /// exceeds the 5-bit field (31), or the frame is device-private and the
    /// layout has no device-private bit.
    pub const fn encode(self, frame: PageFrame, order: Order, write: bool) -> Result<u64, Errno> {
        let raw = frame.raw_index();
        if raw & self.flags_mask() != 0
            || (order.get() as u64) > HMM_PFN_ORDER_MASK
            || (frame.is_device_private() && self.device_private == 0)
        {
            return Err(Errno::EINVAL);
        }
        let mut v = raw | HmmPfn::VALID | ((order.get() as u64) << self.order_shift);
        if write {
            v |= HmmPfn::WRITE;
        }
        if frame.is_device_private() {
            v |= self.device_private;
        }
        Ok(v)
    }

    /// Decodes `(frame, order, write)`; `None` unless `HMM_PFN_VALID`.
    ///
    /// Kernel: `hmm_pfn_to_page()` (`pfn_to_page(hmm_pfn & ~HMM_PFN_FLAGS)`,
    /// an offset lookup with `HMM_PFN_DEVICE_PRIVATE`) and
    /// `hmm_pfn_to_map_order()` (main; v6 for the offset lookup).
    pub const fn decode(self, v: u64) -> Option<(PageFrame, Order, bool)> {
        if v & HmmPfn::VALID == 0 {
            return None;
        }
        let raw = v & !self.flags_mask();
        let frame = if self.device_private != 0 && v & self.device_private != 0 {
            PageFrame::DevicePrivate(DevicePrivateOffset::new(raw))
        } else {
            PageFrame::Pfn(Pfn::new(raw))
        };
        // INVARIANT: a 5-bit field is below 64.
        let order = match Order::new(((v >> self.order_shift) & HMM_PFN_ORDER_MASK) as u32) {
            Some(o) => o,
            None => Order::ZERO,
        };
        Some((frame, order, v & HmmPfn::WRITE != 0))
    }
}

/// Mask of the map-order field after shifting (5 bits).
///
/// Kernel: the `0x1F` in `hmm_pfn_to_map_order()` (main).
pub const HMM_PFN_ORDER_MASK: u64 = 0x1f;

/// One output entry of `hmm_range_fault()`, with the v6 proposal layout.
///
/// Kernel: `unsigned long hmm_pfns[]` entries, `include/linux/hmm.h` (main).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct HmmPfn(u64);

impl fmt::Debug for HmmPfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HmmPfn({:#x}, {:?})", self.0, self.decode())
    }
}

impl HmmPfn {
    /// Kernel: `HMM_PFN_VALID` (bit 63, main).
    pub const VALID: u64 = 1 << 63;
    /// Kernel: `HMM_PFN_WRITE` (bit 62, main).
    pub const WRITE: u64 = 1 << 62;
    /// Kernel: `HMM_PFN_ERROR` (bit 61, main).
    pub const ERROR: u64 = 1 << 61;
    /// Kernel: `HMM_PFN_DMA_MAPPED` (bit 60, sticky, main).
    pub const DMA_MAPPED: u64 = 1 << 60;
    /// Kernel: `HMM_PFN_P2PDMA` (bit 59, sticky, main).
    pub const P2PDMA: u64 = 1 << 59;
    /// Kernel: `HMM_PFN_P2PDMA_BUS` (bit 58, sticky, main).
    pub const P2PDMA_BUS: u64 = 1 << 58;
    /// Kernel: `HMM_PFN_DEVICE_PRIVATE` (bit 57, v6 12/13).
    pub const DEVICE_PRIVATE: u64 = HmmPfnLayout::SERIES.device_private;
    /// Kernel: `HMM_PFN_ORDER_SHIFT` (52 with the v6 proposal).
    pub const ORDER_SHIFT: u32 = HmmPfnLayout::SERIES.order_shift;
    /// Kernel: `HMM_PFN_FLAGS` (the top 12 bits with the v6 proposal).
    pub const FLAGS: u64 = HmmPfnLayout::SERIES.flags_mask();
    /// Kernel: `HMM_PFN_REQ_FAULT` (= `HMM_PFN_VALID`), an input flag (main).
    pub const REQ_FAULT: u64 = Self::VALID;
    /// Kernel: `HMM_PFN_REQ_WRITE` (= `HMM_PFN_WRITE`), an input flag (main).
    pub const REQ_WRITE: u64 = Self::WRITE;

    /// A valid entry for `frame` mapped at `order`.
    ///
    /// Kernel: see [`HmmPfnLayout::encode`] (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if the index is 2^52 or more, or the order above 31.
    pub const fn new(frame: PageFrame, order: Order, write: bool) -> Result<HmmPfn, Errno> {
        match HmmPfnLayout::SERIES.encode(frame, order, write) {
            Ok(v) => Ok(HmmPfn(v)),
            Err(e) => Err(e),
        }
    }

    /// The error entry.
    ///
    /// Kernel: `HMM_PFN_ERROR` (main).
    pub const ERROR_ENTRY: HmmPfn = HmmPfn(Self::ERROR);

    /// An entry from its raw value (any value is accepted).
    ///
    /// Kernel: none (model only).
    pub const fn from_raw(v: u64) -> HmmPfn {
        HmmPfn(v)
    }

    /// The raw value.
    ///
    /// Kernel: none (model only).
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// `(frame, order, write)`, or `None` unless valid.
    ///
    /// Kernel: `hmm_pfn_to_page()`, `hmm_pfn_to_map_order()` (main).
    pub const fn decode(self) -> Option<(PageFrame, Order, bool)> {
        HmmPfnLayout::SERIES.decode(self.0)
    }

    /// The frame, or `None` unless valid.
    ///
    /// Kernel: `hmm_pfn_to_page()` / `hmm_pfn_to_phys()`, typed (main).
    pub const fn frame(self) -> Option<PageFrame> {
        match self.decode() {
            Some((f, _, _)) => Some(f),
            None => None,
        }
    }

    /// The map order (0 unless valid).
    ///
    /// Kernel: `hmm_pfn_to_map_order()` (main).
    pub const fn map_order(self) -> Order {
        match self.decode() {
            Some((_, o, _)) => o,
            None => Order::ZERO,
        }
    }
}

/// Sticky bits `hmm_range_fault()` keeps in each entry.
///
/// Kernel: `HMM_PFN_INOUT_FLAGS` (main).
pub const HMM_PFN_INOUT_FLAGS: u64 = HmmPfn::DMA_MAPPED | HmmPfn::P2PDMA | HmmPfn::P2PDMA_BUS;

/// A range to snapshot (and optionally fault in) with [`hmm_range_fault`].
///
/// Kernel: `struct hmm_range`, `include/linux/hmm.h` (main).
///
/// # Differences from the kernel
///
/// No `notifier` / `notifier_seq`: the model has no MMU interval notifier,
/// so a snapshot is never invalidated by a concurrent change (callers that
/// race with one must re-check themselves).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HmmRange {
    /// Kernel: `hmm_range::start` (main).
    pub start: u64,
    /// Kernel: `hmm_range::end` (main).
    pub end: u64,
    /// Input request flags (`REQ_FAULT`, `REQ_WRITE`) per page; output
    /// entries. Kernel: `hmm_range::hmm_pfns` (main).
    pub hmm_pfns: Vec<HmmPfn>,
    /// Request flags applied to every page. Kernel: `hmm_range::default_flags` (main).
    pub default_flags: u64,
    /// Which per-page request bits count. Kernel: `hmm_range::pfn_flags_mask` (main).
    pub pfn_flags_mask: u64,
    /// Device-private pages of this owner are reported, not faulted.
    /// Kernel: `hmm_range::dev_private_owner` (main).
    pub dev_private_owner: Option<Owner>,
}

impl HmmRange {
    /// A snapshot-only range (`default_flags = 0`) of `[start, end)`.
    ///
    /// Kernel: the caller's initialisation of `struct hmm_range` (main).
    pub fn new(start: u64, end: u64, dev_private_owner: Option<Owner>) -> HmmRange {
        let n = usize::try_from(end.saturating_sub(start) / PAGE_SIZE).unwrap_or(0);
        HmmRange {
            start,
            end,
            hmm_pfns: vec![HmmPfn::default(); n],
            default_flags: 0,
            pfn_flags_mask: 0,
            dev_private_owner,
        }
    }
}

/// What one page needs: `HMM_NEED_FAULT` / `HMM_NEED_WRITE_FAULT`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    None,
    Fault,
    WriteFault,
}

/// Kernel: `hmm_pte_need_fault()`, `mm/hmm.c` (main).
fn need_fault(range: &HmmRange, req: HmmPfn, cpu_flags: u64) -> Need {
    let req = (req.raw() & range.pfn_flags_mask) | range.default_flags;
    if req & HmmPfn::REQ_FAULT == 0 {
        return Need::None;
    }
    if req & HmmPfn::REQ_WRITE != 0 && cpu_flags & HmmPfn::WRITE == 0 {
        return Need::WriteFault;
    }
    if cpu_flags & HmmPfn::VALID == 0 {
        return Need::Fault;
    }
    Need::None
}

/// How one page was found.
enum Seen {
    /// Report this entry.
    Report(u64),
    /// Fault this page in (write or not), then walk again.
    Fault(bool),
}

/// Snapshots the CPU page table over `range`, faulting pages in where the
/// request flags ask for it. Device-private pages whose pgmap owner is
/// `range.dev_private_owner` are reported (`VALID | DEVICE_PRIVATE` with
/// the offset, `WRITE` if writable, order 9 for a device-private PMD);
/// other device-private pages read as empty (a PTE) or as `ERROR` (a PMD),
/// or, if a fault is requested, are faulted — migrated back to RAM by their
/// owner's `migrate_to_ram`.
///
/// Kernel: `hmm_range_fault(range)`, `mm/hmm.c` (`hmm_vma_walk_pmd()`,
/// `hmm_vma_handle_pte()`, `hmm_vma_handle_pmd()`,
/// `hmm_vma_handle_absent_pmd()`, `hmm_vma_walk_hole()`,
/// `hmm_vma_walk_test()`, `hmm_vma_fault()`), v6 12/13.
///
/// | page | no fault requested | fault requested |
/// |---|---|---|
/// | no VMA | `ERROR` | `EFAULT` |
/// | VMA without `VM_READ` | `ERROR` | `EFAULT` |
/// | none | 0 | fault (`EPERM` for a write to a read-only VMA) |
/// | present / huge PMD | pfn `\|VALID [\|WRITE]` (order 9 for a PMD) | fault if `WRITE` is missing |
/// | device-private, own owner | offset `\|VALID\|DEVICE_PRIVATE [\|WRITE]` | the same |
/// | device-private PTE, other owner | 0 | fault (migrate to RAM) |
/// | device-private PMD, other owner | `ERROR` | fault (migrate to RAM) |
/// | migration entry (PTE or PMD) | 0 | `EBUSY` |
/// | other swap PTE | 0 | `EFAULT` |
/// | other non-present PMD | `ERROR` | `EFAULT` |
///
/// # Differences from the kernel
///
/// - The kernel waits on a migration entry and walks again; the model
///   cannot wait for another thread, so it returns [`Errno::EBUSY`] and the
///   caller retries (as it does after a notifier invalidation).
/// - A fault is raised for one page at a time (the kernel faults the rest
///   of the walk step in one go), then the walk restarts at that page.
///
/// # Errors
///
/// [`Errno::EINVAL`] if the range is unaligned, empty, or `hmm_pfns` is
/// shorter than it; [`Errno::EFAULT`] / [`Errno::EPERM`] / [`Errno::EBUSY`]
/// as in the table; any error of the fault itself.
///
/// # Examples
///
/// ```
/// use devpriv_core::{Errno, PAGE_SIZE, PageCount, PageFrame, Pfn};
/// use devpriv_migrate::{
///     FaultFlags, HmmPfn, HmmRange, Memory, Mm, MmConfig, SystemMemory, VmFlags,
///     handle_mm_fault, hmm_range_fault,
/// };
/// use devpriv_pagemap::DevicePrivateSpace;
/// use std::sync::Arc;
///
/// let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(512))?;
/// let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
/// let mm = Mm::new(&mem, MmConfig::default());
/// let base = 0x7f00_0000_0000;
/// mm.mmap_write_lock().mmap_anon(base, 2 * PAGE_SIZE, VmFlags::RW)?;
/// handle_mm_fault(&mm, base, FaultFlags::WRITE)?;
///
/// // A snapshot: page 0 is present and writable, page 1 is a hole.
/// let mut range = HmmRange::new(base, base + 2 * PAGE_SIZE, None);
/// hmm_range_fault(&mm, &mut range)?;
/// assert!(matches!(range.hmm_pfns[0].frame(), Some(PageFrame::Pfn(_))));
/// assert_eq!(range.hmm_pfns[0].raw() & HmmPfn::WRITE, HmmPfn::WRITE);
/// assert_eq!(range.hmm_pfns[1].raw(), 0);
///
/// // Asking for a fault fills the hole in.
/// range.default_flags = HmmPfn::REQ_FAULT | HmmPfn::REQ_WRITE;
/// hmm_range_fault(&mm, &mut range)?;
/// assert!(range.hmm_pfns.iter().all(|p| p.frame().is_some()));
/// # Ok::<(), Errno>(())
/// ```
pub fn hmm_range_fault(mm: &Arc<Mm>, range: &mut HmmRange) -> Result<(), Errno> {
    if !range.start.is_multiple_of(PAGE_SIZE)
        || !range.end.is_multiple_of(PAGE_SIZE)
        || range.end <= range.start
    {
        return Err(Errno::EINVAL);
    }
    let n = usize::try_from((range.end - range.start) / PAGE_SIZE).map_err(|_| Errno::EINVAL)?;
    if range.hmm_pfns.len() < n {
        return Err(Errno::EINVAL);
    }
    let mut i = 0;
    let mut faults = 0u32;
    while i < n {
        let addr = range.start + (i as u64) * PAGE_SIZE;
        match hmm_page(mm, range, addr, range.hmm_pfns[i])? {
            Seen::Report(v) => {
                let old = range.hmm_pfns[i].raw();
                range.hmm_pfns[i] = HmmPfn::from_raw((old & HMM_PFN_INOUT_FLAGS) | v);
                i += 1;
            }
            Seen::Fault(write) => {
                faults += 1;
                if faults > 2 * u32::try_from(n).unwrap_or(u32::MAX).saturating_add(8) {
                    return Err(Errno::EBUSY);
                }
                let flags = if write {
                    FaultFlags::WRITE
                } else {
                    FaultFlags::READ
                };
                match handle_mm_fault(mm, addr, flags) {
                    Ok(VmFaultResult::Done) => {}
                    Ok(VmFaultResult::Retry) => return Err(Errno::EBUSY),
                    Err(Errno::ENOMEM) => return Err(Errno::ENOMEM),
                    Err(_) => return Err(Errno::EFAULT),
                }
            }
        }
    }
    Ok(())
}

/// One page of the walk.
fn hmm_page(mm: &Mm, range: &HmmRange, addr: u64, req: HmmPfn) -> Result<Seen, Errno> {
    let mode = mm.paging();
    let mem = mm.memory();
    let Some(vma) = mm.vma_lookup(addr) else {
        return match need_fault(range, req, 0) {
            Need::None => Ok(Seen::Report(HmmPfn::ERROR)),
            _ => Err(Errno::EFAULT),
        };
    };
    if !vma.flags().contains(VmFlags::READ) {
        return match need_fault(range, req, 0) {
            Need::None => Ok(Seen::Report(HmmPfn::ERROR)),
            _ => Err(Errno::EFAULT),
        };
    }
    let fault = |need: Need| -> Result<Seen, Errno> {
        if need == Need::WriteFault && !vma.flags().contains(VmFlags::WRITE) {
            return Err(Errno::EPERM);
        }
        Ok(Seen::Fault(need == Need::WriteFault))
    };
    let pmd = mm.pmdp_get_lockless(addr).unwrap_or(Pmd::NONE);
    let sub = (addr >> PAGE_SHIFT) & (HPAGE_PMD_NR - 1);
    if pmd.is_trans_huge() {
        let cpu = HmmPfn::VALID | if pmd.is_write() { HmmPfn::WRITE } else { 0 };
        return match need_fault(range, req, cpu) {
            Need::None => {
                let pfn = Pfn::new(pmd.pfn().get() + sub);
                Ok(Seen::Report(
                    HmmPfn::new(pfn.into(), Order::HPAGE_PMD, pmd.is_write())?.raw(),
                ))
            }
            need => fault(need),
        };
    }
    if !pmd.is_none() && !pmd.is_present() {
        let entry = Softleaf::from_pmd(pmd);
        if entry.is_device_private()
            && let Some(PageFrame::DevicePrivate(off)) = entry.to_frame(mode)
            && owner_of(mem, off).is_some_and(|o| Some(o) == range.dev_private_owner)
        {
            let write = entry.is_device_private_write();
            let off = DevicePrivateOffset::new(off.get() + sub);
            return Ok(Seen::Report(
                HmmPfn::new(off.into(), Order::HPAGE_PMD, write)?.raw(),
            ));
        }
        // `hmm_vma_walk_pmd()` handles a migration PMD first (0, or wait);
        // anything else goes to `hmm_vma_handle_absent_pmd()`, which fills
        // `HMM_PFN_ERROR` when no fault is needed.
        return match need_fault(range, req, 0) {
            Need::None if entry.is_migration() => Ok(Seen::Report(0)),
            Need::None => Ok(Seen::Report(HmmPfn::ERROR)),
            _ if entry.is_migration() => Err(Errno::EBUSY),
            need if entry.is_device_private() => fault(need),
            _ => Err(Errno::EFAULT),
        };
    }
    let pte = mm.ptep_get_lockless(addr).unwrap_or(Pte::NONE);
    if pte.is_none() {
        return match need_fault(range, req, 0) {
            Need::None => Ok(Seen::Report(0)),
            need => fault(need),
        };
    }
    if pte.is_present() {
        let cpu = HmmPfn::VALID | if pte.is_write() { HmmPfn::WRITE } else { 0 };
        return match need_fault(range, req, cpu) {
            Need::None => Ok(Seen::Report(
                HmmPfn::new(pte.pfn().into(), Order::ZERO, pte.is_write())?.raw(),
            )),
            need => fault(need),
        };
    }
    let entry = Softleaf::from_pte(pte);
    if entry.is_device_private()
        && let Some(PageFrame::DevicePrivate(off)) = entry.to_frame(mode)
        && owner_of(mem, off).is_some_and(|o| Some(o) == range.dev_private_owner)
    {
        let write = entry.is_device_private_write();
        return Ok(Seen::Report(
            HmmPfn::new(off.into(), Order::ZERO, write)?.raw(),
        ));
    }
    match need_fault(range, req, 0) {
        Need::None => Ok(Seen::Report(0)),
        need if entry.is_device_private() || entry.is_device_exclusive() => fault(need),
        _ if entry.is_migration() => Err(Errno::EBUSY),
        _ => Err(Errno::EFAULT),
    }
}

/// The owner of the pagemap holding `off`.
///
/// Kernel: `page_pgmap(softleaf_to_page(entry))->owner` (7.0).
fn owner_of(mem: &Memory, off: DevicePrivateOffset) -> Option<Owner> {
    let guard = mem.space().read();
    let page = guard.device_private_offset_to_page(off)?;
    page.pgmap().map(|p| p.owner())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn series_constants() {
        assert_eq!(HmmPfn::DEVICE_PRIVATE, 1 << 57);
        assert_eq!(HmmPfn::ORDER_SHIFT, 52);
        assert_eq!(HmmPfn::FLAGS, 0xfff0_0000_0000_0000);
        assert_eq!(HmmPfnLayout::MAINLINE.flags_mask(), 0xffe0_0000_0000_0000);
        let v = HmmPfn::new(DevicePrivateOffset::new(5).into(), Order::HPAGE_PMD, true).unwrap();
        assert_eq!(v.raw(), (1 << 63) | (1 << 62) | (1 << 57) | (9 << 52) | 5);
        assert_eq!(v.map_order(), Order::HPAGE_PMD);
    }

    /// `hmm_vma_walk_pmd()`: a migration PMD reads 0 without a fault
    /// request and `EBUSY` with one; any other non-present PMD that is not
    /// the caller's device-private entry reads `ERROR`
    /// (`hmm_vma_handle_absent_pmd()`), or `EFAULT` with a fault request.
    #[test]
    fn absent_pmds_read_zero_only_for_migration_entries() {
        use crate::memory_model::test_memory;
        use crate::mm_types::MmConfig;
        use crate::pgtable::PMD_SIZE;
        use crate::swapops::{
            MigrationKind, make_device_private_entry, make_hwpoison_entry, make_migration_entry,
        };
        let mm = Mm::new(&test_memory(512), MmConfig::default());
        let base = 0x7f00_0000_0000;
        mm.mmap_write_lock()
            .mmap_anon(base, PMD_SIZE, VmFlags::RW)
            .unwrap();
        let mode = mm.paging();
        let mig = make_migration_entry(MigrationKind::Write, Pfn::new(0x20_0000).into(), mode);
        // No pagemap holds offset 512: a device page nobody here owns.
        let dev = make_device_private_entry(true, DevicePrivateOffset::new(512), mode);
        let poison = make_hwpoison_entry(Pfn::new(0x20_0000), mode);
        for (entry, report, on_fault) in [
            (mig, 0, Errno::EBUSY),
            (dev, HmmPfn::ERROR, Errno::EFAULT),
            (poison, HmmPfn::ERROR, Errno::EFAULT),
        ] {
            mm.set_pmd(base, Pmd::from_swp_entry(entry.unwrap()).unwrap())
                .unwrap();
            let mut range = HmmRange::new(base, base + 4 * PAGE_SIZE, None);
            hmm_range_fault(&mm, &mut range).unwrap();
            assert!(
                range.hmm_pfns.iter().all(|p| p.raw() == report),
                "{entry:?}"
            );
            range.default_flags = HmmPfn::REQ_FAULT;
            assert_eq!(hmm_range_fault(&mm, &mut range), Err(on_fault), "{entry:?}");
        }
    }

    #[test]
    fn encoder_refuses_what_does_not_fit() {
        assert_eq!(
            HmmPfn::new(Pfn::new(1 << 52).into(), Order::ZERO, false),
            Err(Errno::EINVAL)
        );
        assert!(HmmPfn::new(Pfn::new((1 << 52) - 1).into(), Order::ZERO, false).is_ok());
        assert_eq!(
            HmmPfn::new(Pfn::new(1).into(), Order::new(32).unwrap(), false),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            HmmPfnLayout::MAINLINE.encode(DevicePrivateOffset::new(1).into(), Order::ZERO, false),
            Err(Errno::EINVAL)
        );
        assert_eq!(HmmPfn::ERROR_ENTRY.frame(), None);
    }
}
