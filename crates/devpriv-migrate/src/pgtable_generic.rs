//! Reading and locking page-table entries: lockless reads, and the locked
//! PTE and PMD guards every writer goes through.
//!
//! Kernel: `mm/pgtable-generic.c` (`__pte_offset_map()`,
//! `__pte_offset_map_lock()`), `include/linux/mm.h` (`pte_offset_map_lock()`,
//! `pte_alloc_map_lock()`, `pmd_lock()`, `pte_lockptr()`),
//! `include/linux/pgtable.h` (`ptep_get()`, `pmdp_get_lockless()`,
//! `set_pte_at()`, `set_pmd_at()`, main).
//!
//! Entries are written only under the table's lock: through a [`PteGuard`]
//! (from [`Mm::pte_offset_map_lock`] / [`Mm::pte_alloc_map_lock`]), a
//! [`PmdGuard`] (from [`Mm::pmd_lock`]), or the walker's accessors while it
//! holds the lock. Reads may be lockless ([`Mm::ptep_get_lockless`],
//! [`Mm::pmdp_get_lockless`]). Lock order: a PMD table's lock before a PTE
//! table's.

use crate::mm_types::{ENTRIES, Mm, PmdSlot, PteTable};
use crate::pgtable::{PMD_SIZE, Pmd, Pte, pte_index};
use core::fmt;
use devpriv_core::consts::PMD_SHIFT;
use devpriv_core::sync::MutexGuard;
use devpriv_core::sync::atomic::Ordering;
use devpriv_core::{Errno, PAGE_SIZE};

/// A page-table page from [`Mm::pte_alloc_one`]: deposit it under a
/// leaf PMD ([`PmdGuard::deposit`]) or give it back ([`Mm::pte_free`]).
/// Dropping it does neither: the page leaks, and [`Mm::nr_pgtables`]
/// keeps counting it.
///
/// Kernel: `pgtable_t` (main).
#[derive(Debug)]
#[must_use = "a page-table page is deposited or freed, never dropped"]
pub struct PgtablePage(());

impl Mm {
    /// Allocates a page-table page for a huge PMD's deposit.
    ///
    /// Kernel: `pte_alloc_one(mm)` (main).
    pub fn pte_alloc_one(&self) -> PgtablePage {
        self.pgtables.fetch_add(1, Ordering::Relaxed);
        PgtablePage(())
    }

    /// Frees a page-table page.
    ///
    /// Kernel: `pte_free(mm, pgtable)` (main).
    pub fn pte_free(&self, page: PgtablePage) {
        let PgtablePage(()) = page;
        self.pgtables.fetch_sub(1, Ordering::Relaxed);
    }

    /// Page-table pages allocated by [`pte_alloc_one`](Self::pte_alloc_one)
    /// and not freed: those deposited under leaf PMDs
    /// ([`nr_deposited_pgtables`](Self::nr_deposited_pgtables)) plus any
    /// leaked.
    ///
    /// Kernel: none (model only).
    pub fn nr_pgtables(&self) -> u64 {
        self.pgtables.load(Ordering::Relaxed)
    }

    /// Page-table pages deposited under leaf PMDs.
    ///
    /// Kernel: the lengths of the `pmd_huge_pte` lists, summed (main).
    pub fn nr_deposited_pgtables(&self) -> u64 {
        self.pmd_slots()
            .map(|s| u64::from(s.deposited.load(Ordering::Relaxed)))
            .sum()
    }

    /// Reads the PMD covering `addr` without a lock; `None` if no PMD table
    /// covers it.
    ///
    /// Kernel: `pmdp_get_lockless(pmd_offset(...))` (main).
    pub fn pmdp_get_lockless(&self, addr: u64) -> Option<Pmd> {
        Some(self.pmd_table(addr)?.slot(addr).get())
    }

    /// Reads the PTE for `addr` without a lock; `None` if the PMD does not
    /// point to a PTE table.
    ///
    /// Kernel: `pte_offset_map()` + `ptep_get()` (main).
    pub fn ptep_get_lockless(&self, addr: u64) -> Option<Pte> {
        let slot = self.pmd_table(addr)?.slot(addr);
        Some(slot.table_if(slot.get())?.get(pte_index(addr)))
    }

    /// Maps and locks the PTE for `addr`.
    ///
    /// Kernel: `pte_offset_map_lock(mm, pmd, addr, &ptl)`: the PMD is
    /// re-checked under the lock and the lookup retried if it changed (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EFAULT`] if no page table covers `addr`; [`Errno::ENOENT`]
    /// if the PMD is none; [`Errno::EBUSY`] if it is a leaf (huge,
    /// migration or device-private), where the kernel returns `NULL`.
    pub fn pte_offset_map_lock(&self, addr: u64) -> Result<PteGuard<'_>, Errno> {
        let slot = self.pmd_table(addr).ok_or(Errno::EFAULT)?.slot(addr);
        loop {
            let pmd = slot.get();
            let Some(table) = slot.table_if(pmd) else {
                return Err(if pmd.is_none() {
                    Errno::ENOENT
                } else {
                    Errno::EBUSY
                });
            };
            let guard = table.ptl().lock();
            if slot.get() == pmd {
                return Ok(PteGuard {
                    table,
                    _ptl: guard,
                    addr: addr & !(PAGE_SIZE - 1),
                });
            }
        }
    }

    /// Maps and locks the PTE for `addr` in the table that `pmdval`, a PMD
    /// value the caller saved, points to, without re-checking the live PMD:
    /// how khugepaged reaches the table that
    /// [`PmdGuard::collapse_flush`] detached.
    ///
    /// Kernel: `pte_offset_map_lock(mm, &_pmd, addr, &ptl)` on the saved
    /// `_pmd` in `collapse_huge_page()` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EFAULT`] if no page table covers `addr`; [`Errno::EINVAL`]
    /// if `pmdval` is not a pointer to the PTE table of `addr`'s PMD.
    pub fn pte_offset_map_lock_pmdval(
        &self,
        addr: u64,
        pmdval: Pmd,
    ) -> Result<PteGuard<'_>, Errno> {
        let slot = self.pmd_table(addr).ok_or(Errno::EFAULT)?.slot(addr);
        let table = slot.table().ok_or(Errno::EFAULT)?;
        if Pmd::table(table.frame()) != Ok(pmdval) {
            return Err(Errno::EINVAL);
        }
        Ok(PteGuard {
            table,
            _ptl: table.ptl().lock(),
            addr: addr & !(PAGE_SIZE - 1),
        })
    }

    /// Allocates the PTE table for `addr` if the PMD is none, then maps and
    /// locks the PTE.
    ///
    /// Kernel: `pte_alloc_map_lock()` (`__pte_alloc()` + `pmd_install()`
    /// under `pmd_lock()`, main).
    ///
    /// # Errors
    ///
    /// [`Errno::EFAULT`] if `addr` is in no VMA; [`Errno::EBUSY`] if the PMD
    /// is a leaf.
    pub fn pte_alloc_map_lock(&self, addr: u64) -> Result<PteGuard<'_>, Errno> {
        if self.vma_lookup(addr).is_none() {
            return Err(Errno::EFAULT);
        }
        self.pmd_lock(addr)?.pte_alloc()?;
        self.pte_offset_map_lock(addr)
    }

    /// Locks the PMD table covering `addr`.
    ///
    /// Kernel: `pmd_lock(mm, pmd)` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EFAULT`] if no page table covers `addr`.
    pub fn pmd_lock(&self, addr: u64) -> Result<PmdGuard<'_>, Errno> {
        let table = self.pmd_table(addr).ok_or(Errno::EFAULT)?;
        let slot = table.slot(addr);
        if slot.table().is_none() {
            return Err(Errno::EFAULT);
        }
        Ok(PmdGuard {
            slot,
            _ptl: table.ptl().lock(),
            addr: addr & !(PMD_SIZE - 1),
        })
    }

    /// Tries to lock the PMD table covering `addr` without waiting.
    ///
    /// Kernel: `spin_trylock(pmd_lockptr(mm, pmd))` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EFAULT`] if no page table covers `addr`; [`Errno::EBUSY`]
    /// if someone holds the lock.
    pub fn pmd_trylock(&self, addr: u64) -> Result<PmdGuard<'_>, Errno> {
        let table = self.pmd_table(addr).ok_or(Errno::EFAULT)?;
        let slot = table.slot(addr);
        if slot.table().is_none() {
            return Err(Errno::EFAULT);
        }
        Ok(PmdGuard {
            slot,
            _ptl: table.ptl().try_lock().ok_or(Errno::EBUSY)?,
            addr: addr & !(PMD_SIZE - 1),
        })
    }

    /// Sets the PTE for `addr` under its lock, allocating the table if the
    /// PMD is none. Returns the old value.
    ///
    /// Kernel: `pte_alloc_map_lock()` + `set_pte_at()` + `pte_unmap_unlock()` (main).
    ///
    /// # Errors
    ///
    /// As [`pte_alloc_map_lock`](Self::pte_alloc_map_lock).
    pub fn set_pte(&self, addr: u64, pte: Pte) -> Result<Pte, Errno> {
        let g = self.pte_alloc_map_lock(addr)?;
        let old = g.get();
        g.set(pte);
        Ok(old)
    }

    /// Sets the PMD for `addr` to a leaf value under `pmd_lock()`. Returns
    /// the old value.
    ///
    /// Kernel: `set_pmd_at()` (main).
    ///
    /// # Errors
    ///
    /// As [`pmd_lock`](Self::pmd_lock) and [`PmdGuard::set`].
    pub fn set_pmd(&self, addr: u64, pmd: Pmd) -> Result<Pmd, Errno> {
        let g = self.pmd_lock(addr)?;
        let old = g.get();
        g.set(pmd)?;
        Ok(old)
    }
}

/// A locked PTE table, positioned at one address.
///
/// Kernel: the `(pte_t *pte, spinlock_t *ptl)` pair returned by
/// `pte_offset_map_lock()`; dropping it is `pte_unmap_unlock()` (main).
pub struct PteGuard<'a> {
    table: &'a PteTable,
    _ptl: MutexGuard<'a, ()>,
    addr: u64,
}

impl fmt::Debug for PteGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PteGuard")
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("pte", &self.get())
            .finish()
    }
}

impl PteGuard<'_> {
    /// The (page-aligned) address the guard is positioned at.
    ///
    /// Kernel: none (model only).
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// The PTE at the guard's address.
    ///
    /// Kernel: `ptep_get(pte)` (main).
    pub fn get(&self) -> Pte {
        self.table.get(pte_index(self.addr))
    }

    /// Sets the PTE at the guard's address.
    ///
    /// Kernel: `set_pte_at()` (main).
    pub fn set(&self, pte: Pte) {
        self.table.set(pte_index(self.addr), pte);
    }

    /// Clears the PTE at the guard's address, returning the old value.
    ///
    /// Kernel: `ptep_get_and_clear()` / `ptep_clear_flush()` (main).
    pub fn get_and_clear(&self) -> Pte {
        let old = self.get();
        self.set(Pte::NONE);
        old
    }

    /// Replaces `old` with `new` if the PTE still holds `old`.
    ///
    /// Kernel: the `pte_same()` re-check after re-taking the lock (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EAGAIN`] if the PTE is not `old`; nothing changes.
    pub fn replace(&self, old: Pte, new: Pte) -> Result<(), Errno> {
        if self.get() != old {
            return Err(Errno::EAGAIN);
        }
        self.set(new);
        Ok(())
    }

    fn index_of(&self, addr: u64) -> Result<usize, Errno> {
        if addr >> PMD_SHIFT != self.addr >> PMD_SHIFT {
            return Err(Errno::EINVAL);
        }
        Ok(pte_index(addr))
    }

    /// The PTE for another address covered by the same (locked) table.
    ///
    /// Kernel: `ptep_get(pte + n)` while holding the ptl (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `addr` lies in another PTE table.
    pub fn get_at(&self, addr: u64) -> Result<Pte, Errno> {
        Ok(self.table.get(self.index_of(addr)?))
    }

    /// Sets the PTE for another address covered by the same table.
    ///
    /// Kernel: `set_pte_at(mm, addr, pte + n, val)` while holding the ptl (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `addr` lies in another PTE table.
    pub fn set_at(&self, addr: u64, pte: Pte) -> Result<(), Errno> {
        self.table.set(self.index_of(addr)?, pte);
        Ok(())
    }
}

/// A locked PMD table, positioned at one PMD entry.
///
/// Kernel: `pmd_lock()`'s `spinlock_t *` plus the `pmd_t *`; dropping it is
/// `spin_unlock()` (main).
pub struct PmdGuard<'a> {
    slot: &'a PmdSlot,
    _ptl: MutexGuard<'a, ()>,
    addr: u64,
}

impl fmt::Debug for PmdGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PmdGuard")
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("pmd", &self.get())
            .finish()
    }
}

impl PmdGuard<'_> {
    /// The 2 MiB-aligned address of this PMD entry.
    ///
    /// Kernel: none (model only).
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// The PMD value.
    ///
    /// Kernel: `pmdp_get(pmd)` / `*pmd` (main).
    pub fn get(&self) -> Pmd {
        self.slot.get()
    }

    /// `true` if the slot's PTE table has no entries (or there is none).
    pub(crate) fn table_is_empty(&self) -> bool {
        self.slot.table().is_none_or(|t| {
            let _ptl = t.ptl().lock();
            t.is_empty()
        })
    }

    /// Sets the PMD to a leaf value (none, huge, or a swap entry). Replacing
    /// a PTE table is allowed only when every PTE in it is none (the table
    /// is then idle, as after `pte_free()` / deposit).
    ///
    /// Kernel: `set_pmd_at()` / `pmd_clear()` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `pmd` is a table pointer (use
    /// [`pte_alloc`](Self::pte_alloc) or [`populate`](Self::populate));
    /// [`Errno::EBUSY`] if the current PTE table, or a table
    /// [`collapse_flush`](Self::collapse_flush) detached, still has
    /// entries. Nothing changes on error.
    pub fn set(&self, pmd: Pmd) -> Result<(), Errno> {
        if pmd.is_table() {
            return Err(Errno::EINVAL);
        }
        if self.get().is_table() {
            // Retiring a table: hold its lock too, so no PTE writer is
            // inside it (lock order: PMD lock, then PTE lock).
            let table = self.slot.table().ok_or(Errno::EFAULT)?;
            let _ptl = table.ptl().lock();
            if !table.is_empty() {
                return Err(Errno::EBUSY);
            }
            self.slot.set_locked(pmd);
            return Ok(());
        }
        self.reclaim_detached()?;
        self.slot.set_locked(pmd);
        Ok(())
    }

    /// Takes the PTE table out of the PMD (which becomes none) with its
    /// entries still in it, as khugepaged does before it copies them into
    /// a huge page. Returns the old PMD value: the table stays reachable
    /// through it ([`Mm::pte_offset_map_lock_pmdval`]), and cannot be
    /// installed again ([`pte_alloc`](Self::pte_alloc),
    /// [`populate`](Self::populate), [`set`](Self::set) fail with
    /// [`Errno::EBUSY`]) until its entries are cleared.
    ///
    /// Kernel: `pmdp_collapse_flush()`, `mm/pgtable-generic.c`, as
    /// `collapse_huge_page()` calls it: under `pmd_lock()` only, not the
    /// PTE table's lock (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if the PMD does not point to a PTE table.
    pub fn collapse_flush(&self) -> Result<Pmd, Errno> {
        let old = self.get();
        if !old.is_table() {
            return Err(Errno::EINVAL);
        }
        self.slot.detached.store(true, Ordering::Relaxed);
        self.slot.set_locked(Pmd::NONE);
        Ok(old)
    }

    /// Makes a detached table installable again once it is empty.
    fn reclaim_detached(&self) -> Result<(), Errno> {
        if !self.slot.detached.load(Ordering::Relaxed) {
            return Ok(());
        }
        let table = self.slot.table().ok_or(Errno::EFAULT)?;
        let _ptl = table.ptl().lock();
        if !table.is_empty() {
            return Err(Errno::EBUSY);
        }
        self.slot.detached.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Clears a leaf PMD, returning the old value.
    ///
    /// Kernel: `pmdp_huge_get_and_clear()` / `pmdp_huge_clear_flush()` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if the PMD points to a PTE table.
    pub fn get_and_clear(&self) -> Result<Pmd, Errno> {
        let old = self.get();
        if old.is_table() {
            return Err(Errno::EINVAL);
        }
        self.slot.set_locked(Pmd::NONE);
        Ok(old)
    }

    /// Deposits a page-table page for the leaf PMD here, for a later split
    /// to use (or a zap to free).
    ///
    /// Kernel: `pgtable_trans_huge_deposit(mm, pmd, pgtable)` +
    /// `mm_inc_nr_ptes()` (main).
    pub fn deposit(&self, page: PgtablePage) {
        let PgtablePage(()) = page;
        self.slot.deposited.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes back a page-table page deposited here, if any.
    ///
    /// Kernel: `pgtable_trans_huge_withdraw(mm, pmd)` + `mm_dec_nr_ptes()` (main).
    pub fn withdraw(&self) -> Option<PgtablePage> {
        let d = &self.slot.deposited;
        let n = d.load(Ordering::Relaxed);
        if n == 0 {
            return None;
        }
        d.store(n - 1, Ordering::Relaxed);
        Some(PgtablePage(()))
    }

    /// Points a none PMD at its (empty) PTE table. Does nothing if it
    /// already points to it.
    ///
    /// Kernel: `pmd_install()` (`pmd_populate()` if `pmd_none()`, main).
    ///
    /// # Errors
    ///
    /// [`Errno::EBUSY`] if the PMD is a leaf, or a detached table
    /// ([`collapse_flush`](Self::collapse_flush)) still has entries.
    pub fn pte_alloc(&self) -> Result<(), Errno> {
        let cur = self.get();
        if cur.is_table() {
            return Ok(());
        }
        if !cur.is_none() {
            return Err(Errno::EBUSY);
        }
        self.reclaim_detached()?;
        let table = self.slot.table().ok_or(Errno::EFAULT)?;
        self.slot.set_locked(Pmd::table(table.frame())?);
        Ok(())
    }

    /// Fills the PTE table with `pte(i)` for `i` in `0..512` (under the
    /// table's own lock) and then points the PMD at it: how a leaf PMD is
    /// split into PTEs.
    ///
    /// Kernel: `__split_huge_pmd_locked()` (`pmd_populate()` of the
    /// deposited table after `set_ptes()`), and the device-private/migration
    /// PMD split paths (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EEXIST`] if the PMD already points to a PTE table;
    /// [`Errno::EBUSY`] if a detached table
    /// ([`collapse_flush`](Self::collapse_flush)) still has entries;
    /// [`Errno::EINVAL`] if `pte` returns an error (nothing changes).
    pub fn populate(&self, mut pte: impl FnMut(usize) -> Result<Pte, Errno>) -> Result<(), Errno> {
        if self.get().is_table() {
            return Err(Errno::EEXIST);
        }
        self.reclaim_detached()?;
        let table = self.slot.table().ok_or(Errno::EFAULT)?;
        let values = (0..ENTRIES).map(&mut pte).collect::<Result<Vec<_>, _>>()?;
        let _ptl = table.ptl().lock();
        for (i, v) in values.into_iter().enumerate() {
            table.set(i, v);
        }
        self.slot.set_locked(Pmd::table(table.frame())?);
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::memory_model::test_memory;
    use crate::mm_types::{Mm, MmConfig, VmFlags};
    use crate::pgtable::{_PAGE_PRESENT, PMD_SIZE, Pmd, Pte};
    use devpriv_core::{Errno, PAGE_SIZE, Pfn};

    const BASE: u64 = 0x7f00_0000_0000;

    #[test]
    fn pte_and_pmd_updates_under_the_lock() {
        let mm = Mm::new(&test_memory(512), MmConfig::default());
        mm.mmap_write_lock()
            .mmap_anon(BASE, 2 * PMD_SIZE, VmFlags::RW)
            .unwrap();
        assert_eq!(mm.pte_offset_map_lock(BASE).err(), Some(Errno::ENOENT));
        let pte = Pte::pfn_pte(Pfn::new(5), _PAGE_PRESENT).unwrap();
        assert_eq!(mm.set_pte(BASE + PAGE_SIZE, pte), Ok(Pte::NONE));
        assert_eq!(mm.ptep_get_lockless(BASE + PAGE_SIZE), Some(pte));
        assert!(mm.pmdp_get_lockless(BASE).unwrap().is_table());
        // A table in use cannot be replaced by a leaf.
        let huge = Pmd::huge(Pfn::new(512), _PAGE_PRESENT).unwrap();
        assert_eq!(mm.set_pmd(BASE, huge), Err(Errno::EBUSY));
        {
            let g = mm.pte_offset_map_lock(BASE + PAGE_SIZE).unwrap();
            assert_eq!(g.replace(Pte::NONE, Pte::NONE), Err(Errno::EAGAIN));
            assert_eq!(g.get_and_clear(), pte);
            assert_eq!(g.get_at(BASE + PMD_SIZE), Err(Errno::EINVAL));
        }
        assert!(
            mm.set_pmd(BASE, huge).unwrap().is_table(),
            "the idle table is retired"
        );
        assert!(mm.pmdp_get_lockless(BASE).unwrap().is_trans_huge());
        assert_eq!(mm.pte_offset_map_lock(BASE).err(), Some(Errno::EBUSY));
        // Split it back into PTEs.
        mm.pmd_lock(BASE)
            .unwrap()
            .populate(|i| Pte::pfn_pte(Pfn::new(512 + i as u64), _PAGE_PRESENT))
            .unwrap();
        assert_eq!(
            mm.ptep_get_lockless(BASE + 3 * PAGE_SIZE).map(Pte::pfn),
            Some(Pfn::new(515))
        );
    }

    #[test]
    fn a_collapsed_table_stays_out_until_it_is_empty() {
        let mm = Mm::new(&test_memory(512), MmConfig::default());
        mm.mmap_write_lock()
            .mmap_anon(BASE, PMD_SIZE, VmFlags::RW)
            .unwrap();
        let pte = Pte::pfn_pte(Pfn::new(5), _PAGE_PRESENT).unwrap();
        let huge = Pmd::huge(Pfn::new(512), _PAGE_PRESENT).unwrap();
        // Only a table pointer can be flushed.
        assert_eq!(
            mm.pmd_lock(BASE).unwrap().collapse_flush(),
            Err(Errno::EINVAL)
        );
        mm.set_pte(BASE + PAGE_SIZE, pte).unwrap();
        let pmdval = mm.pmd_lock(BASE).unwrap().collapse_flush().unwrap();
        assert!(pmdval.is_table());
        assert_eq!(mm.pmdp_get_lockless(BASE), Some(Pmd::NONE));
        assert_eq!(mm.ptep_get_lockless(BASE + PAGE_SIZE), None);
        // The detached table keeps its entries and cannot come back.
        assert_eq!(mm.set_pte(BASE, pte), Err(Errno::EBUSY));
        assert_eq!(mm.set_pmd(BASE, huge), Err(Errno::EBUSY));
        assert_eq!(
            mm.pmd_lock(BASE).unwrap().populate(|_| Ok(Pte::NONE)),
            Err(Errno::EBUSY)
        );
        assert_eq!(mm.pmdp_get_lockless(BASE), Some(Pmd::NONE));
        assert_eq!(
            mm.pte_offset_map_lock_pmdval(BASE, huge).err(),
            Some(Errno::EINVAL)
        );
        {
            let g = mm
                .pte_offset_map_lock_pmdval(BASE + PAGE_SIZE, pmdval)
                .unwrap();
            assert_eq!(g.get_and_clear(), pte);
        }
        // Empty, it is a table like any other.
        assert_eq!(mm.set_pmd(BASE, huge), Ok(Pmd::NONE));
        assert_eq!(mm.set_pmd(BASE, Pmd::NONE), Ok(huge));
        assert_eq!(mm.set_pte(BASE, pte), Ok(Pte::NONE));
        assert_eq!(mm.pmdp_get_lockless(BASE), Some(pmdval));
    }
}
