//! Page tables seen from the process: mapping folios, zapping ranges,
//! user loads and stores, what an address maps, and the CPU fault path
//! ([`handle_mm_fault`]).
//!
//! Kernel: `mm/memory.c` (`do_anonymous_page()`, `set_ptes()` callers,
//! `zap_page_range_single()`, `zap_pte_range()`, `handle_mm_fault()`),
//! `mm/huge_memory.c` (`zap_huge_pmd()`, `map_anon_folio_pmd()`, main).
//!
//! The [`Mm`] these work on is in [`mm_types`](crate::mm_types); the
//! entries are read and locked through
//! [`pgtable_generic`](crate::pgtable_generic).

mod fault;
pub use fault::{FaultContext, FaultFlags, VmFaultResult, handle_mm_fault};

use crate::huge_memory::split_huge_pmd;
use crate::leafops::Softleaf;
use crate::mm::{AnyFolio, frame_to_folio};
use crate::mm_types::{Mm, Vma, ZapDevicePmd};
use crate::page_alloc::SysFolio;
use crate::pgtable::{
    _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_PRESENT, _PAGE_RW, _PAGE_USER, PMD_SIZE, Pmd, Pte,
};
use devpriv_core::consts::PMD_SHIFT;
use devpriv_core::{
    DevicePrivateOffset, Errno, HPAGE_PMD_NR, Order, PAGE_SHIFT, PAGE_SIZE, PageCount, PageFrame,
    Pfn, warn_on_once,
};

impl Mm {
    /// Maps every page of `folio` with present PTEs from `addr` on (the
    /// range may cross PTE tables), takes one folio reference per page and
    /// adds the PTE rmaps. A folio not yet anon gets `index` and `mapping`
    /// from this VMA.
    ///
    /// Kernel: what `do_anonymous_page()` (order 0) or a PTE-mapped THP
    /// leaves behind: `folio_add_new_anon_rmap()` / `folio_add_anon_rmap_ptes()`,
    /// `folio_ref_add()`, `set_ptes()` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `addr` is not page-aligned; [`Errno::EFAULT`] if
    /// the range is not inside one VMA; [`Errno::EINVAL`] if the VMA's page
    /// index at `addr` disagrees with an anon folio's `index`;
    /// [`Errno::EEXIST`] if any PTE is not none; [`Errno::EBUSY`] if a PMD
    /// in the range is a leaf. Nothing changes on error.
    pub fn map_folio_ptes(
        &self,
        addr: u64,
        folio: SysFolio<'_>,
        writable: bool,
    ) -> Result<(), Errno> {
        let nr = folio.nr_pages().get();
        let vma = self.checked_range(addr, nr)?;
        self.check_anon_index(&vma, addr, folio)?;
        let end = addr + nr * PAGE_SIZE;
        // Install the tables first (PMD lock, then released), then lock
        // every PTE table of the range in address order, check, and write.
        // Lock order is always PMD lock before PTE lock.
        let mut a = addr;
        while a < end {
            self.pmd_lock(a)?.pte_alloc()?;
            a = (a & !(PMD_SIZE - 1)) + PMD_SIZE;
        }
        let mut guards = Vec::new();
        let mut a = addr;
        while a < end {
            guards.push(self.pte_offset_map_lock(a)?);
            a = (a & !(PMD_SIZE - 1)) + PMD_SIZE;
        }
        let prot = _PAGE_PRESENT
            | _PAGE_USER
            | _PAGE_ACCESSED
            | if writable { _PAGE_RW | _PAGE_DIRTY } else { 0 };
        let mut ptes = Vec::with_capacity(usize::try_from(nr).map_err(|_| Errno::EINVAL)?);
        for i in 0..nr {
            let pfn = folio.page_pfn(i).ok_or(Errno::EINVAL)?;
            ptes.push(Pte::pfn_pte(pfn, prot)?);
        }
        let guard_for = |a: u64| {
            guards
                .iter()
                .find(|g| g.addr() >> PMD_SHIFT == a >> PMD_SHIFT)
                .ok_or(Errno::EINVAL)
        };
        for i in 0..nr {
            let a = addr + i * PAGE_SIZE;
            if !guard_for(a)?.get_at(a)?.is_none() {
                return Err(Errno::EEXIST);
            }
        }
        self.set_anon(&vma, addr, folio);
        folio.add_rmap_ptes(0, nr)?;
        folio.get_many(nr);
        for (i, pte) in (0..nr).zip(ptes) {
            let a = addr + i * PAGE_SIZE;
            guard_for(a)?.set_at(a, pte)?;
        }
        Ok(())
    }

    /// Maps a PMD-sized `folio` with one huge PMD at `addr`, takes a
    /// reference and adds the PMD rmap.
    ///
    /// Kernel: `do_huge_pmd_anonymous_page()` / `map_anon_folio_pmd()` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if the folio is not order 9 or `addr` not 2 MiB
    /// aligned, or an anon folio's `index` disagrees; [`Errno::EFAULT`] if
    /// the 2 MiB are not inside one VMA; [`Errno::EEXIST`] if the PMD is not
    /// none (or points to a non-empty PTE table). Nothing changes on error.
    pub fn map_folio_pmd(
        &self,
        addr: u64,
        folio: SysFolio<'_>,
        writable: bool,
    ) -> Result<(), Errno> {
        if folio.order() != Order::HPAGE_PMD || !addr.is_multiple_of(PMD_SIZE) {
            return Err(Errno::EINVAL);
        }
        let vma = self.checked_range(addr, HPAGE_PMD_NR)?;
        self.check_anon_index(&vma, addr, folio)?;
        let prot = _PAGE_PRESENT
            | _PAGE_USER
            | _PAGE_ACCESSED
            | if writable { _PAGE_RW | _PAGE_DIRTY } else { 0 };
        let pmd = Pmd::huge(folio.pfn(), prot)?;
        let pgtable = self.pte_alloc_one();
        let g = match self.pmd_lock(addr) {
            Ok(g) => g,
            Err(e) => {
                self.pte_free(pgtable);
                return Err(e);
            }
        };
        let cur = g.get();
        // `set` re-checks the table under its lock.
        if !(cur.is_none() || cur.is_table() && g.table_is_empty()) || g.set(pmd).is_err() {
            drop(g);
            self.pte_free(pgtable);
            return Err(Errno::EEXIST);
        }
        self.set_anon(&vma, addr, folio);
        folio.get_many(1);
        g.deposit(pgtable);
        // Cannot fail: the order was checked above.
        folio.add_rmap_pmd()
    }

    fn checked_range(&self, addr: u64, nr: u64) -> Result<Vma, Errno> {
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        let vma = self.vma_lookup(addr).ok_or(Errno::EFAULT)?;
        let bytes = nr.checked_mul(PAGE_SIZE).ok_or(Errno::EFAULT)?;
        if addr.checked_add(bytes).is_none_or(|e| e > vma.end) {
            return Err(Errno::EFAULT);
        }
        Ok(vma)
    }

    fn check_anon_index(&self, vma: &Vma, addr: u64, folio: SysFolio<'_>) -> Result<(), Errno> {
        if folio.mapping() != 0 && folio.index() != vma.linear_page_index(addr) {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    fn set_anon(&self, vma: &Vma, addr: u64, folio: SysFolio<'_>) {
        if folio.mapping() == 0 {
            folio.set_index(vma.linear_page_index(addr));
            folio.set_mapping(vma.id);
        }
    }

    /// Reads the data word of the system page mapped at `addr` (present PTE
    /// or huge PMD), without faulting.
    ///
    /// Kernel: a user load that does not fault (`get_user()` on a mapped
    /// page), in spirit (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EFAULT`] if `addr` is not mapped by a present entry, or the
    /// page is not in this address space's memory.
    pub fn read_user(&self, addr: u64) -> Result<u64, Errno> {
        self.memory().sys().read(self.present_pfn(addr, false)?)
    }

    /// Writes the data word of the system page mapped writable at `addr`.
    ///
    /// Kernel: a user store that does not fault (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EFAULT`] if `addr` is not mapped by a present, writable
    /// entry, or the page is not in this address space's memory.
    pub fn write_user(&self, addr: u64, value: u64) -> Result<(), Errno> {
        self.memory()
            .sys()
            .write(self.present_pfn(addr, true)?, value)
    }

    fn present_pfn(&self, addr: u64, write: bool) -> Result<Pfn, Errno> {
        let pmd = self.pmdp_get_lockless(addr).ok_or(Errno::EFAULT)?;
        if pmd.is_trans_huge() {
            if write && !pmd.is_write() {
                return Err(Errno::EFAULT);
            }
            return Ok(Pfn::new(
                pmd.pfn().get() + ((addr >> PAGE_SHIFT) & (HPAGE_PMD_NR - 1)),
            ));
        }
        let pte = self.ptep_get_lockless(addr).ok_or(Errno::EFAULT)?;
        if !pte.is_present() || write && !pte.is_write() {
            return Err(Errno::EFAULT);
        }
        Ok(pte.pfn())
    }

    /// The softleaf entry at `addr`: from the PMD if it is a non-present
    /// leaf, else from the PTE; [`Softleaf::NONE`] otherwise.
    ///
    /// Kernel: `softleaf_from_pmd()` / `softleaf_from_pte()` on a lockless
    /// read (7.0).
    pub fn softleaf_at(&self, addr: u64) -> Softleaf {
        match self.pmdp_get_lockless(addr) {
            None => Softleaf::NONE,
            Some(pmd) if !pmd.is_none() && !pmd.is_present() => Softleaf::from_pmd(pmd),
            Some(_) => self
                .ptep_get_lockless(addr)
                .map_or(Softleaf::NONE, Softleaf::from_pte),
        }
    }

    /// Clears every entry in `[start, end)`, dropping the rmap and the
    /// reference of each mapped page (system or device-private); migration
    /// entries are just cleared (the migration owns their folios). A leaf
    /// PMD only partly covered is split first.
    ///
    /// Kernel: `zap_page_range_single()` → `zap_pmd_range()`
    /// (`__split_huge_pmd()`, `zap_huge_pmd()`) and `zap_pte_range()`
    /// (`zap_present_ptes()`, `zap_nonpresent_ptes()`), `mm/memory.c` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] for an unaligned or inverted range, or an entry
    /// naming a page no folio backs (a broken invariant; zapping stops
    /// there).
    pub fn zap_page_range(&self, start: u64, end: u64) -> Result<(), Errno> {
        if !start.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE) || end < start {
            return Err(Errno::EINVAL);
        }
        let mut addr = start;
        while addr < end {
            let next = ((addr & !(PMD_SIZE - 1)) + PMD_SIZE).min(end);
            if let Some(pmd) = self.pmdp_get_lockless(addr) {
                if !pmd.is_none() && !pmd.is_table() {
                    if addr.is_multiple_of(PMD_SIZE) && next - addr == PMD_SIZE {
                        self.zap_huge_pmd(addr)?;
                    } else {
                        split_huge_pmd(self, addr)?;
                    }
                }
                self.zap_pte_range(addr, next)?;
            }
            addr = next;
        }
        Ok(())
    }

    /// Clears a leaf PMD and frees its deposited table; a huge or
    /// device-private PMD also drops its rmap and reference. What a
    /// migration PMD does depends on [`ZapDevicePmd`].
    ///
    /// Kernel: `zap_huge_pmd()`, `mm/huge_memory.c` (7.0).
    fn zap_huge_pmd(&self, addr: u64) -> Result<(), Errno> {
        let mem = self.memory();
        let guard = mem.space().read();
        let old = {
            let g = self.pmd_lock(addr)?;
            if g.get().is_table() {
                return Ok(());
            }
            let old = g.get_and_clear()?;
            // zap_deposited_table()
            if let Some(p) = g.withdraw() {
                self.pte_free(p);
            }
            old
        };
        let entry = Softleaf::from_pmd(old);
        let v7_0 = self.config().zap_device_pmd == ZapDevicePmd::V7_0;
        let frame = if old.is_trans_huge() {
            Some(old.pfn().into())
        } else if entry.is_device_private() || v7_0 && entry.is_migration() {
            entry.to_frame(self.paging())
        } else {
            None
        };
        let Some(frame) = frame else {
            // A migration PMD: the migration owns the folio.
            return Ok(());
        };
        let (folio, _) = frame_to_folio(mem.sys(), &guard, frame).ok_or(Errno::EINVAL)?;
        if old.is_trans_huge() || entry.is_device_private() {
            folio.remove_rmap_pmd()?;
            folio.put();
        } else if folio.is_device_private() {
            // ZapDevicePmd::V7_0 (hazard H22): keyed on the folio kind, a
            // device folio's migration PMD loses an rmap and a reference
            // that set_pmd_migration_entry() already took away.
            let r = folio.remove_rmap_pmd();
            warn_on_once!(r.is_err(), "zap_huge_pmd(): folio_mapcount(folio) < 0");
            folio.put();
        }
        Ok(())
    }

    /// Kernel: `zap_pte_range()`, `mm/memory.c` (main).
    fn zap_pte_range(&self, start: u64, end: u64) -> Result<(), Errno> {
        let mem = self.memory();
        let guard = mem.space().read();
        let mut puts: Vec<AnyFolio<'_>> = Vec::new();
        {
            let Ok(g) = self.pte_offset_map_lock(start) else {
                return Ok(());
            };
            let mut a = start;
            while a < end {
                let pte = g.get_at(a)?;
                a += PAGE_SIZE;
                if pte.is_none() {
                    continue;
                }
                let frame = if pte.is_present() {
                    // The zero page has no folio, reference or rmap.
                    (!mem.sys().is_zero_pfn(pte.pfn())).then(|| pte.pfn().into())
                } else {
                    let e = Softleaf::from_pte(pte);
                    if e.is_device_private() {
                        e.to_frame(self.paging())
                    } else {
                        None
                    }
                };
                g.set_at(a - PAGE_SIZE, Pte::NONE)?;
                if let Some(frame) = frame {
                    let (folio, n) =
                        frame_to_folio(mem.sys(), &guard, frame).ok_or(Errno::EINVAL)?;
                    folio.remove_rmap_ptes(n, 1)?;
                    puts.push(folio);
                }
            }
        }
        // Freeing (a device folio's `folio_free`) happens after the PTE lock
        // is dropped, as the kernel's TLB batching frees after the flush.
        for f in puts {
            f.put();
        }
        Ok(())
    }

    /// The device-private offset mapped at `addr`: from a device-private
    /// PTE, or from a device-private PMD plus the page's index in its 2 MiB
    /// block; `None` for anything else.
    ///
    /// Kernel: none (model only). With the v6 proposal a
    /// device-private entry holds the page's offset where it held a pfn:
    /// this is `softleaf_to_pfn()` of `softleaf_from_pte()` /
    /// `softleaf_from_pmd()` at `addr`, plus the page's index in a PMD's
    /// block.
    ///
    /// ```
    /// use devpriv_core::{DevicePrivateOffset, Errno, PAGE_SIZE, PageCount, Pfn};
    /// use devpriv_migrate::swapops::make_device_private_entry;
    /// use devpriv_migrate::{Memory, Mm, MmConfig, Pte, SystemMemory, VmFlags};
    /// use devpriv_pagemap::DevicePrivateSpace;
    /// use std::sync::Arc;
    ///
    /// let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(512))?;
    /// let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
    /// let mm = Mm::new(&mem, MmConfig::default());
    /// let base = 0x7f00_0000_0000;
    /// mm.mmap_write_lock().mmap_anon(base, 2 * PAGE_SIZE, VmFlags::RW)?;
    /// let off = DevicePrivateOffset::new(42);
    /// mm.set_pte(base, Pte::from_swp_entry(make_device_private_entry(true, off, mm.paging())?)?)?;
    /// assert_eq!(mm.device_private_offset_at(base), Some(off));
    /// assert_eq!(mm.device_private_offset_at(base + PAGE_SIZE), None);
    /// # Ok::<(), Errno>(())
    /// ```
    pub fn device_private_offset_at(&self, addr: u64) -> Option<DevicePrivateOffset> {
        let e = self.softleaf_at(addr);
        if !e.is_device_private() {
            return None;
        }
        let Some(PageFrame::DevicePrivate(off)) = e.to_frame(self.paging()) else {
            return None;
        };
        if self
            .pmdp_get_lockless(addr)
            .is_some_and(|p| !p.is_none() && !p.is_present())
        {
            // A PMD entry names the head: add the page's index in the block.
            return off.checked_add(PageCount::new((addr % PMD_SIZE) / PAGE_SIZE));
        }
        Some(off)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::memory_model::test_memory;
    use crate::mm_types::{MmConfig, VmFlags};

    const BASE: u64 = 0x7f00_0000_0000;

    #[test]
    fn folios_map_with_counts_and_data() {
        let mem = test_memory(2048);
        let mm = Mm::new(&mem, MmConfig::default());
        mm.mmap_write_lock()
            .mmap_anon(BASE, 4 * PMD_SIZE, VmFlags::RW)
            .unwrap();
        let mem = mem.sys();
        let f = mem.alloc_folio(Order::HPAGE_PMD).unwrap();
        // Unaligned: crosses a PTE-table boundary.
        let addr = BASE + PMD_SIZE - 3 * PAGE_SIZE;
        mm.map_folio_ptes(addr, f, true).unwrap();
        assert_eq!(f.mapcount(), 512);
        assert_eq!(f.refcount(), 513);
        mm.write_user(addr + 4 * PAGE_SIZE, 99).unwrap();
        assert_eq!(mem.read(f.page_pfn(4).unwrap()), Ok(99));
        assert_eq!(mm.read_user(addr + 4 * PAGE_SIZE), Ok(99));
        assert_eq!(mm.map_folio_ptes(addr, f, true), Err(Errno::EEXIST));
        let g = mem.alloc_folio(Order::HPAGE_PMD).unwrap();
        assert_eq!(
            mm.map_folio_pmd(BASE + PMD_SIZE, g, false),
            Err(Errno::EEXIST)
        );
        mm.map_folio_pmd(BASE + 2 * PMD_SIZE, g, false).unwrap();
        assert_eq!(g.entire_mapcount(), 1);
        assert_eq!(mm.write_user(BASE + 2 * PMD_SIZE, 1), Err(Errno::EFAULT));
        assert_eq!(mm.read_user(BASE + 2 * PMD_SIZE + PAGE_SIZE), Ok(0));
        assert_eq!(
            mm.map_folio_ptes(BASE + 4 * PMD_SIZE - PAGE_SIZE, g, true),
            Err(Errno::EFAULT)
        );
    }
}
