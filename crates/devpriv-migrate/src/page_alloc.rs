//! System memory: a small page allocator handing out pfns, folios of order 0
//! and 9 with reference and map counts, and a data word per page so tests
//! can check that data survives a migration.
//!
//! Kernel: `mm/page_alloc.c` (`folio_alloc()`, `__free_pages()`),
//! `include/linux/mm.h` (`folio_get()`, `folio_put()`, `folio_mapcount()`),
//! `mm/rmap.c` (`folio_add_anon_rmap_ptes()`, `folio_remove_rmap_ptes()`,
//! `folio_add_anon_rmap_pmd()`), `include/linux/pagemap.h` (`folio_lock()`, main).
//!
//! # Differences from the kernel
//!
//! This is not the buddy allocator: one range of pfns, a bitmap of free
//! pages under a lock, and first-fit (order 9 naturally aligned). Metadata
//! is a plain struct per page rather than the 8-word `struct page` of
//! `devpriv-pagemap` (system pages have no aliasing hazards to reproduce).
//! Map counts start at 0, not the kernel's -1.

use core::fmt;
use devpriv_core::sync::Mutex;
use devpriv_core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use devpriv_core::{Errno, HPAGE_PMD_NR, HPAGE_PMD_ORDER, Order, PageCount, Pfn, warn_on};

/// Metadata of one system page.
#[derive(Debug, Default)]
struct SysPage {
    /// The page's data (a model of its 4 KiB).
    content: AtomicU64,
    /// Index (within the memory) of the folio head plus one; 0 when free.
    head: AtomicU64,
    /// Head only: the folio order.
    order: AtomicU64,
    /// Head only. Kernel: `_refcount` (main).
    refcount: AtomicU64,
    /// PTE mappings of this page. Kernel: `_mapcount + 1` (main).
    mapcount: AtomicU64,
    /// Head only: PMD mappings. Kernel: `_entire_mapcount + 1` (main).
    entire_mapcount: AtomicU64,
    /// Head only: all mappings. Kernel: `_large_mapcount + 1` (main).
    large_mapcount: AtomicU64,
    /// Head only. Kernel: `PG_locked` (main).
    locked: AtomicBool,
    /// Head only. Kernel: `folio->index` (main).
    index: AtomicU64,
    /// Head only: an opaque anon-mapping cookie (0: none). Kernel:
    /// `folio->mapping` (`anon_vma | PAGE_MAPPING_ANON`, main).
    mapping: AtomicU64,
}

/// A range of system memory with a page allocator.
///
/// Kernel: a zone of system RAM and its buddy allocator, in spirit (main).
pub struct SystemMemory {
    base: Pfn,
    pages: Box<[SysPage]>,
    /// One bit per page, set when free.
    free: Mutex<Vec<u64>>,
}

impl fmt::Debug for SystemMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemMemory")
            .field("base", &self.base)
            .field("nr_pages", &self.pages.len())
            .field("nr_free", &self.nr_free())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
const fn bit_is_set(map: &[u64], i: usize) -> bool {
    map[i / 64] >> (i % 64) & 1 == 1
}

/// The lowest free run of `nr` pages (1 or 512) that starts on a multiple
/// of `nr`, a word of the bitmap at a time: every allocation holds the one
/// lock of the memory, so the scan is kept short (a page-at-a-time scan
/// was the lock hold time that kept `devpriv simulate --threads 2` from
/// scaling). Bits past the last page are never set, so a run found here
/// lies inside the memory.
fn lowest_free_run(map: &[u64], nr: usize) -> Option<usize> {
    if nr == 1 {
        let w = map.iter().position(|&w| w != 0)?;
        return Some(w * 64 + map[w].trailing_zeros() as usize);
    }
    debug_assert_eq!(nr % 64, 0);
    map.chunks_exact(nr / 64)
        .position(|block| block.iter().all(|&w| w == u64::MAX))
        .map(|b| b * nr)
}

impl SystemMemory {
    /// `nr_pages` pages of system memory starting at `base`, all free.
    ///
    /// Kernel: none (boot-time memory setup).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `nr_pages` is zero, `base` is not 512-aligned (so
    /// order-9 folios can be placed), or the range plus the zero page (the
    /// frame after it, [`zero_pfn`](Self::zero_pfn)) and the huge zero page
    /// (the next 512 aligned frames, [`huge_zero_pfn`](Self::huge_zero_pfn))
    /// passes the largest pfn a PTE can hold.
    pub fn new(base: Pfn, nr_pages: PageCount) -> Result<SystemMemory, Errno> {
        let n = usize::try_from(nr_pages.get()).map_err(|_| Errno::EINVAL)?;
        let end = base.checked_add(nr_pages).ok_or(Errno::EINVAL)?;
        let huge_zero_end = end
            .get()
            .checked_add(1)
            .and_then(|z| z.checked_next_multiple_of(HPAGE_PMD_NR))
            .and_then(|h| h.checked_add(HPAGE_PMD_NR));
        if n == 0
            || !base.is_aligned(Order::HPAGE_PMD)
            || huge_zero_end.is_none_or(|e| e > crate::pgtable::MAX_PTE_PFN)
        {
            return Err(Errno::EINVAL);
        }
        let pages = (0..n).map(|_| SysPage::default()).collect();
        let mut free = vec![0u64; n.div_ceil(64)];
        for i in 0..n {
            free[i / 64] |= 1 << (i % 64);
        }
        Ok(SystemMemory {
            base,
            pages,
            free: Mutex::new(free),
        })
    }

    /// The first pfn.
    ///
    /// Kernel: none (model only).
    pub fn base(&self) -> Pfn {
        self.base
    }

    /// Pages in the range.
    ///
    /// Kernel: none (model only).
    pub fn nr_pages(&self) -> PageCount {
        PageCount::new(self.pages.len() as u64)
    }

    /// Free pages.
    ///
    /// Kernel: `NR_FREE_PAGES`, in spirit (main).
    pub fn nr_free(&self) -> u64 {
        self.free
            .lock()
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum()
    }

    /// The index of `pfn` in `pages`, if it lies in this memory.
    fn idx(&self, pfn: Pfn) -> Option<usize> {
        let rel = pfn.checked_offset_from(self.base)?.get();
        let i = usize::try_from(rel).ok()?;
        (i < self.pages.len()).then_some(i)
    }

    /// The pfn of index `i`.
    fn pfn_of(&self, i: usize) -> Pfn {
        // `i` indexes `pages`, whose length fits in a u64 and whose range
        // was checked at construction.
        Pfn::new(self.base.get() + i as u64)
    }

    /// Allocates a folio of `order` (0 or 9) with refcount 1, unlocked and
    /// unmapped, its pages' data zeroed.
    ///
    /// Kernel: `folio_alloc(GFP_HIGHUSER_MOVABLE | __GFP_ZERO, order)` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] for an order other than 0 or `HPAGE_PMD_ORDER`;
    /// [`Errno::ENOMEM`] if no (aligned) free run is left.
    pub fn alloc_folio(&self, order: Order) -> Result<SysFolio<'_>, Errno> {
        if order.get() != 0 && order.get() != HPAGE_PMD_ORDER {
            return Err(Errno::EINVAL);
        }
        let nr = 1usize << order.get();
        let mut free = self.free.lock();
        let head = lowest_free_run(&free, nr).ok_or(Errno::ENOMEM)?;
        for i in head..head + nr {
            free[i / 64] &= !(1 << (i % 64));
            let p = &self.pages[i];
            p.content.store(0, Ordering::Relaxed);
            p.mapcount.store(0, Ordering::Relaxed);
            p.head.store(head as u64 + 1, Ordering::Release);
        }
        let h = &self.pages[head];
        h.order.store(u64::from(order.get()), Ordering::Relaxed);
        h.entire_mapcount.store(0, Ordering::Relaxed);
        h.large_mapcount.store(0, Ordering::Relaxed);
        h.locked.store(false, Ordering::Relaxed);
        h.index.store(0, Ordering::Relaxed);
        h.mapping.store(0, Ordering::Relaxed);
        h.refcount.store(1, Ordering::Release);
        drop(free);
        Ok(SysFolio { mem: self, head })
    }

    /// The pfn of the shared zero page: the frame just past this memory.
    /// It is never allocated, has no folio ([`pfn_folio`](Self::pfn_folio)
    /// is `None`), reads as 0 and cannot be written.
    ///
    /// Kernel: `my_zero_pfn()` (`ZERO_PAGE(0)`), `include/linux/pgtable.h` (main).
    ///
    /// # Differences from the kernel
    ///
    /// One zero page per [`SystemMemory`], outside its allocatable range
    /// (the kernel's is a reserved page of the kernel image).
    pub fn zero_pfn(&self) -> Pfn {
        self.pfn_of(self.pages.len())
    }

    /// `true` if `pfn` is the zero page.
    ///
    /// Kernel: `is_zero_pfn(pfn)`, `include/linux/pgtable.h` (main).
    pub fn is_zero_pfn(&self, pfn: Pfn) -> bool {
        pfn == self.zero_pfn()
    }

    /// The first pfn of the huge zero page: 512 frames, PMD-aligned, past
    /// the zero page. Like the zero page it has no folio, reads as 0 and
    /// cannot be written.
    ///
    /// Kernel: `huge_zero_pfn` / `huge_zero_folio`, `mm/huge_memory.c` (main).
    ///
    /// # Differences from the kernel
    ///
    /// One per [`SystemMemory`], outside its allocatable range, never
    /// freed (the kernel's is allocated on first use and refcounted per
    /// mm).
    pub fn huge_zero_pfn(&self) -> Pfn {
        Pfn::new((self.zero_pfn().get() + 1).next_multiple_of(HPAGE_PMD_NR))
    }

    /// `true` if `pfn` is one of the huge zero page's frames.
    ///
    /// Kernel: `is_huge_zero_pfn()` / `is_huge_zero_pmd()` (main).
    pub fn is_huge_zero_pfn(&self, pfn: Pfn) -> bool {
        pfn.checked_offset_from(self.huge_zero_pfn())
            .is_some_and(|d| d.get() < HPAGE_PMD_NR)
    }

    /// The allocated folio that contains `pfn`, or `None` for a free page or
    /// a pfn outside this memory.
    ///
    /// Kernel: `pfn_folio(pfn)` (`page_folio(pfn_to_page(pfn))`, main).
    pub fn pfn_folio(&self, pfn: Pfn) -> Option<SysFolio<'_>> {
        let i = self.idx(pfn)?;
        let h = self.pages[i].head.load(Ordering::Acquire);
        let head = usize::try_from(h.checked_sub(1)?).ok()?;
        Some(SysFolio { mem: self, head })
    }

    /// The data word of the page at `pfn`.
    ///
    /// Kernel: reading the page through the direct map (`kmap_local_page()`, main).
    ///
    /// # Errors
    ///
    /// [`Errno::EFAULT`] if `pfn` is outside this memory or free (the zero
    /// pages read as 0).
    pub fn read(&self, pfn: Pfn) -> Result<u64, Errno> {
        if self.is_zero_pfn(pfn) || self.is_huge_zero_pfn(pfn) {
            return Ok(0);
        }
        let i = self.allocated_idx(pfn)?;
        Ok(self.pages[i].content.load(Ordering::Acquire))
    }

    /// Sets the data word of the page at `pfn`.
    ///
    /// Kernel: writing the page through the direct map (main).
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read).
    pub fn write(&self, pfn: Pfn, value: u64) -> Result<(), Errno> {
        let i = self.allocated_idx(pfn)?;
        self.pages[i].content.store(value, Ordering::Release);
        Ok(())
    }

    fn allocated_idx(&self, pfn: Pfn) -> Result<usize, Errno> {
        let i = self.idx(pfn).ok_or(Errno::EFAULT)?;
        if self.pages[i].head.load(Ordering::Acquire) == 0 {
            return Err(Errno::EFAULT);
        }
        Ok(i)
    }

    /// Returns a folio's pages to the free map. Called with refcount 0.
    fn free_folio(&self, head: usize) {
        let h = &self.pages[head];
        warn_on!(
            h.large_mapcount.load(Ordering::Relaxed) != 0,
            "freeing a mapped system folio"
        );
        let nr = 1usize << h.order.load(Ordering::Relaxed);
        let mut free = self.free.lock();
        for i in head..head + nr {
            self.pages[i].head.store(0, Ordering::Release);
            free[i / 64] |= 1 << (i % 64);
        }
    }
}

/// A system folio: a handle naming the head page of an allocated folio.
///
/// Kernel: `struct folio *` for system RAM (main).
///
/// # Differences from the kernel
///
/// A handle does not hold a reference; like a `struct folio *`, it is only
/// meaningful while someone does. Using it after the folio was freed reads
/// the metadata of whatever occupies the pages now.
#[derive(Clone, Copy)]
pub struct SysFolio<'m> {
    mem: &'m SystemMemory,
    head: usize,
}

impl fmt::Debug for SysFolio<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SysFolio")
            .field("pfn", &self.pfn())
            .field("order", &self.order().get())
            .field("refcount", &self.refcount())
            .field("mapcount", &self.mapcount())
            .finish()
    }
}

impl PartialEq for SysFolio<'_> {
    fn eq(&self, other: &Self) -> bool {
        core::ptr::eq(self.mem, other.mem) && self.head == other.head
    }
}

impl Eq for SysFolio<'_> {}

impl<'m> SysFolio<'m> {
    fn h(&self) -> &'m SysPage {
        &self.mem.pages[self.head]
    }

    /// The memory this folio lives in.
    ///
    /// Kernel: none (model only).
    pub fn memory(&self) -> &'m SystemMemory {
        self.mem
    }

    /// The head pfn.
    ///
    /// Kernel: `folio_pfn()` (main).
    pub fn pfn(&self) -> Pfn {
        self.mem.pfn_of(self.head)
    }

    /// The folio order.
    ///
    /// Kernel: `folio_order()` (main).
    pub fn order(&self) -> Order {
        let o = u32::try_from(self.h().order.load(Ordering::Relaxed)).unwrap_or(0);
        Order::new(o).unwrap_or(Order::ZERO)
    }

    /// Pages in the folio.
    ///
    /// Kernel: `folio_nr_pages()` (main).
    pub fn nr_pages(&self) -> PageCount {
        self.order().nr_pages()
    }

    /// `true` for order > 0.
    ///
    /// Kernel: `folio_test_large()` (main).
    pub fn is_large(&self) -> bool {
        self.order().get() > 0
    }

    /// The pfn of page `n`, or `None` past the end.
    ///
    /// Kernel: `folio_page(folio, n)` + `page_to_pfn()` (main).
    pub fn page_pfn(&self, n: u64) -> Option<Pfn> {
        (n < self.nr_pages().get()).then(|| Pfn::new(self.pfn().get() + n))
    }

    /// The reference count.
    ///
    /// Kernel: `folio_ref_count()` (main).
    pub fn refcount(&self) -> u64 {
        self.h().refcount.load(Ordering::Acquire)
    }

    /// Takes `n` references.
    ///
    /// Kernel: `folio_ref_add()` / `folio_get()` (main).
    pub fn get_many(&self, n: u64) {
        self.h().refcount.fetch_add(n, Ordering::AcqRel);
    }

    /// Takes a reference unless the count is zero.
    ///
    /// Kernel: `folio_try_get()` (main).
    pub fn try_get(&self) -> bool {
        let rc = &self.h().refcount;
        let mut cur = rc.load(Ordering::Acquire);
        loop {
            if cur == 0 {
                return false;
            }
            match rc.compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(v) => cur = v,
            }
        }
    }

    /// Drops `n` references; frees the folio when the count reaches zero.
    /// Returns `true` if it was freed.
    ///
    /// Kernel: `folio_put_refs()` / `folio_put()` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] (and a `WARN`) if fewer than `n` references are
    /// held; nothing changes.
    pub fn put_many(&self, n: u64) -> Result<bool, Errno> {
        let rc = &self.h().refcount;
        let mut cur = rc.load(Ordering::Acquire);
        loop {
            if warn_on!(cur < n, "folio_put() underflow") {
                return Err(Errno::EINVAL);
            }
            match rc.compare_exchange(cur, cur - n, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(v) => cur = v,
            }
        }
        if cur == n {
            self.mem.free_folio(self.head);
            return Ok(true);
        }
        Ok(false)
    }

    /// Drops one reference.
    ///
    /// Kernel: `folio_put()` (main).
    ///
    /// # Errors
    ///
    /// As [`put_many`](Self::put_many).
    pub fn put(&self) -> Result<bool, Errno> {
        self.put_many(1)
    }

    /// Every mapping of the folio, PTE or PMD.
    ///
    /// Kernel: `folio_mapcount()` (main).
    pub fn mapcount(&self) -> u64 {
        self.h().large_mapcount.load(Ordering::Acquire)
    }

    /// PMD mappings of the folio.
    ///
    /// Kernel: `folio_entire_mapcount()` (main).
    pub fn entire_mapcount(&self) -> u64 {
        self.h().entire_mapcount.load(Ordering::Acquire)
    }

    /// Mappings of page `n`: its PTE mappings plus the PMD mappings.
    ///
    /// Kernel: `page_mapcount()` / `folio_precise_page_mapcount()` (main).
    pub fn page_mapcount(&self, n: u64) -> Option<u64> {
        let i = self.head + usize::try_from(n).ok()?;
        (n < self.nr_pages().get())
            .then(|| self.mem.pages[i].mapcount.load(Ordering::Acquire) + self.entire_mapcount())
    }

    /// `true` if any page is mapped.
    ///
    /// Kernel: `folio_mapped()` (main).
    pub fn is_mapped(&self) -> bool {
        self.mapcount() > 0
    }

    /// Adds PTE mappings for pages `first..first + nr`.
    ///
    /// Kernel: `folio_add_anon_rmap_ptes()` / `folio_add_new_anon_rmap()`
    /// (the map-count part, main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if the pages are not all in the folio; nothing
    /// changes.
    pub fn add_rmap_ptes(&self, first: u64, nr: u64) -> Result<(), Errno> {
        let range = self.page_range(first, nr)?;
        for i in range {
            self.mem.pages[i].mapcount.fetch_add(1, Ordering::AcqRel);
        }
        self.h().large_mapcount.fetch_add(nr, Ordering::AcqRel);
        Ok(())
    }

    /// Removes PTE mappings for pages `first..first + nr`.
    ///
    /// Kernel: `folio_remove_rmap_ptes()` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if the pages are not all in the folio or one of
    /// them is not PTE-mapped; nothing changes.
    pub fn remove_rmap_ptes(&self, first: u64, nr: u64) -> Result<(), Errno> {
        let range = self.page_range(first, nr)?;
        if range
            .clone()
            .any(|i| self.mem.pages[i].mapcount.load(Ordering::Acquire) == 0)
        {
            return Err(Errno::EINVAL);
        }
        for i in range {
            self.mem.pages[i].mapcount.fetch_sub(1, Ordering::AcqRel);
        }
        self.h().large_mapcount.fetch_sub(nr, Ordering::AcqRel);
        Ok(())
    }

    /// Adds a PMD mapping of the whole folio.
    ///
    /// Kernel: `folio_add_anon_rmap_pmd()` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] unless the folio is PMD-sized.
    pub fn add_rmap_pmd(&self) -> Result<(), Errno> {
        if self.order() != Order::HPAGE_PMD {
            return Err(Errno::EINVAL);
        }
        self.h().entire_mapcount.fetch_add(1, Ordering::AcqRel);
        self.h().large_mapcount.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Removes a PMD mapping.
    ///
    /// Kernel: `folio_remove_rmap_pmd()` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] unless the folio is PMD-mapped.
    pub fn remove_rmap_pmd(&self) -> Result<(), Errno> {
        if self.entire_mapcount() == 0 {
            return Err(Errno::EINVAL);
        }
        self.h().entire_mapcount.fetch_sub(1, Ordering::AcqRel);
        self.h().large_mapcount.fetch_sub(1, Ordering::AcqRel);
        Ok(())
    }

    /// Splits a locked, large, not PMD-mapped folio into order-0 folios, in
    /// place. Every new folio inherits the lock bit, `mapping` and
    /// `index + j`; its map count is its page's PTE map count. Each new folio
    /// after the first gets a refcount of its map count plus one (the
    /// split's temporary reference, which the caller keeps or drops); the
    /// first keeps everything else: its old count minus the map counts that
    /// moved to the other pages.
    ///
    /// Kernel: `__split_unmapped_folio()` to order 0 plus the refcount
    /// unfreeze of `__folio_freeze_and_split_unmapped()`, `mm/huge_memory.c` (7.0).
    ///
    /// # Differences from the kernel
    ///
    /// No freeze: the caller checks the refcount (`can_split_folio()`)
    /// before calling. Splitting a PTE-mapped folio in place needs no
    /// unmap/remap round trip: the per-page map counts already say which
    /// new folio each PTE maps.
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if the folio is not large, not locked, PMD-mapped,
    /// or its refcount is below the map counts of its tail pages; nothing
    /// changes.
    pub fn split_to_order0(&self) -> Result<(), Errno> {
        let nr = usize::try_from(self.nr_pages().get()).map_err(|_| Errno::EINVAL)?;
        if nr < 2 || !self.is_locked() || self.entire_mapcount() != 0 {
            return Err(Errno::EINVAL);
        }
        let pages = &self.mem.pages[self.head..self.head + nr];
        let moved: u64 = pages[1..]
            .iter()
            .map(|p| p.mapcount.load(Ordering::Acquire))
            .sum();
        let old = self.refcount();
        if old < moved + 1 {
            return Err(Errno::EINVAL);
        }
        let index = self.index();
        let mapping = self.mapping();
        for (j, p) in pages.iter().enumerate().skip(1) {
            let map = p.mapcount.load(Ordering::Acquire);
            p.order.store(0, Ordering::Relaxed);
            p.entire_mapcount.store(0, Ordering::Relaxed);
            p.large_mapcount.store(map, Ordering::Relaxed);
            p.locked.store(true, Ordering::Relaxed);
            p.index
                .store(index.wrapping_add(j as u64), Ordering::Relaxed);
            p.mapping.store(mapping, Ordering::Relaxed);
            p.refcount.store(map + 1, Ordering::Relaxed);
            p.head.store((self.head + j) as u64 + 1, Ordering::Release);
        }
        let h = self.h();
        h.order.store(0, Ordering::Relaxed);
        h.large_mapcount
            .store(h.mapcount.load(Ordering::Acquire), Ordering::Relaxed);
        h.refcount.store(old - moved, Ordering::Release);
        Ok(())
    }

    /// The folio that holds the page `n` pages after this folio's head
    /// (after a split, the new folio of page `n`).
    ///
    /// Kernel: `page_folio(folio_page(folio, n))` (main).
    pub fn page_folio(&self, n: u64) -> Option<SysFolio<'m>> {
        self.mem
            .pfn_folio(self.pfn().checked_add(PageCount::new(n))?)
    }

    fn page_range(&self, first: u64, nr: u64) -> Result<core::ops::Range<usize>, Errno> {
        let end = first.checked_add(nr).ok_or(Errno::EINVAL)?;
        if nr == 0 || end > self.nr_pages().get() {
            return Err(Errno::EINVAL);
        }
        let f = usize::try_from(first).map_err(|_| Errno::EINVAL)?;
        let e = usize::try_from(end).map_err(|_| Errno::EINVAL)?;
        Ok(self.head + f..self.head + e)
    }

    /// Tries to take the folio lock.
    ///
    /// Kernel: `folio_trylock()` (main).
    pub fn trylock(&self) -> bool {
        self.h()
            .locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Releases the folio lock.
    ///
    /// Kernel: `folio_unlock()` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] (and a `WARN`) if it was not locked.
    pub fn unlock(&self) -> Result<(), Errno> {
        if warn_on!(
            !self.h().locked.swap(false, Ordering::Release),
            "folio_unlock() of an unlocked folio"
        ) {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// `true` if locked.
    ///
    /// Kernel: `folio_test_locked()` (main).
    pub fn is_locked(&self) -> bool {
        self.h().locked.load(Ordering::Acquire)
    }

    /// The page offset in its mapping (for anon folios, the linear page
    /// index of its first mapping).
    ///
    /// Kernel: `folio->index` / `folio_pgoff()` (main).
    pub fn index(&self) -> u64 {
        self.h().index.load(Ordering::Acquire)
    }

    /// Sets [`index`](Self::index).
    ///
    /// Kernel: `folio->index = linear_page_index(vma, address)` in
    /// `__folio_set_anon()` (main).
    pub fn set_index(&self, index: u64) {
        self.h().index.store(index, Ordering::Release);
    }

    /// The anon-mapping cookie (0: none).
    ///
    /// Kernel: `folio->mapping` (main).
    pub fn mapping(&self) -> u64 {
        self.h().mapping.load(Ordering::Acquire)
    }

    /// Sets the anon-mapping cookie.
    ///
    /// Kernel: `__folio_set_anon()` (main).
    pub fn set_mapping(&self, mapping: u64) {
        self.h().mapping.store(mapping, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn mem() -> SystemMemory {
        SystemMemory::new(Pfn::new(0x1000), PageCount::new(1024)).unwrap()
    }

    /// The word-at-a-time search finds what a page-at-a-time scan finds,
    /// on random bitmaps of odd lengths (bits past the end stay clear).
    #[test]
    fn lowest_free_run_matches_a_page_scan() {
        let mut rng = devpriv_core::random::SplitMix64::new(7);
        for _ in 0..2000 {
            let len = usize::try_from(rng.between(1, 3000)).unwrap();
            let dense = rng.below(4);
            let mut map = vec![0u64; len.div_ceil(64)];
            for i in 0..len {
                if rng.below(64) >= dense {
                    map[i / 64] |= 1 << (i % 64);
                }
            }
            for nr in [1, 512] {
                let naive = (0..len)
                    .step_by(nr)
                    .find(|&h| h + nr <= len && (h..h + nr).all(|i| bit_is_set(&map, i)));
                assert_eq!(lowest_free_run(&map, nr), naive, "len {len} nr {nr}");
            }
        }
    }

    #[test]
    fn alloc_and_free() {
        let m = mem();
        let a = m.alloc_folio(Order::ZERO).unwrap();
        assert_eq!(a.pfn(), Pfn::new(0x1000));
        let big = m.alloc_folio(Order::HPAGE_PMD).unwrap();
        assert_eq!(big.pfn(), Pfn::new(0x1200), "naturally aligned");
        assert_eq!(m.alloc_folio(Order::HPAGE_PMD), Err(Errno::ENOMEM));
        assert_eq!(m.alloc_folio(Order::new(1).unwrap()), Err(Errno::EINVAL));
        assert_eq!(m.nr_free(), 511);
        assert_eq!(m.pfn_folio(Pfn::new(0x1205)), Some(big));
        m.write(Pfn::new(0x1205), 42).unwrap();
        assert_eq!(m.read(Pfn::new(0x1205)), Ok(42));
        assert_eq!(big.put(), Ok(true));
        assert_eq!(m.pfn_folio(Pfn::new(0x1205)), None);
        assert_eq!(m.read(Pfn::new(0x1205)), Err(Errno::EFAULT));
        assert_eq!(a.put(), Ok(true));
        assert_eq!(m.nr_free(), 1024);
        let (r, w) = devpriv_core::warn::capture(|| a.put());
        assert_eq!(r, Err(Errno::EINVAL));
        assert_eq!(w.count_matching("underflow"), 1);
    }

    #[test]
    fn map_counts() {
        let m = mem();
        let f = m.alloc_folio(Order::HPAGE_PMD).unwrap();
        f.add_rmap_ptes(0, 512).unwrap();
        f.add_rmap_pmd().unwrap();
        assert_eq!(f.mapcount(), 513);
        assert_eq!(f.page_mapcount(7), Some(2));
        assert_eq!(f.add_rmap_ptes(500, 13), Err(Errno::EINVAL));
        f.remove_rmap_ptes(0, 512).unwrap();
        assert_eq!(f.remove_rmap_ptes(0, 1), Err(Errno::EINVAL));
        f.remove_rmap_pmd().unwrap();
        assert!(!f.is_mapped());
        assert!(f.trylock() && !f.trylock());
        f.unlock().unwrap();
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert_eq!(
            SystemMemory::new(Pfn::new(1), PageCount::new(512)).map(|_| ()),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            SystemMemory::new(Pfn::new(0), PageCount::ZERO).map(|_| ()),
            Err(Errno::EINVAL)
        );
    }
}
