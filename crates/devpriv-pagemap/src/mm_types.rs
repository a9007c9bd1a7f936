//! `struct page` as 8 atomic words, and typed handles to pages and folios.
//!
//! Kernel: `struct page` / `struct folio`, `include/linux/mm_types.h`;
//! `compound_head()`, `page_folio()`, `page_pgmap()`, `folio_order()`,
//! `folio_nr_pages()`, `include/linux/mm.h` and `include/linux/page-flags.h` (main).
//!
//! A [`Page`] is 64 bytes, 64-byte aligned, eight `u64` words with the
//! kernel's aliasing kept real (x86-64, `CONFIG_MEMCG`, main):
//!
//! | word | use |
//! |---|---|
//! | 0 | `flags` (`PG_*` bits at the bottom; node, zone and `LAST_CPUPID` at the top, `page_flags`) |
//! | 1 | `ZONE_DEVICE` head: the pgmap; tail: head address + 1 (bit 0 = tail) |
//! | 2 | `zone_device_data` (driver-private); page\[1\]: `_large_mapcount` / `_nr_pages_mapped` |
//! | 3 | `mapping`; tails: `TAIL_MAPPING`; page\[1\]: `_entire_mapcount` / `_pincount` |
//! | 4 | `index` / `share` |
//! | 5 | `private` |
//! | 6 | `_mapcount` (low 32 bits) and `_refcount` (high 32 bits) |
//! | 7 | `memcg_data`; page\[1\]: `_nr_pages` in the low 32 bits |
//!
//! So the folio order lives in the low byte of page\[1\]'s flags, writing a
//! pgmap into word 1 clears tail status, and writing 0 there erases the
//! pgmap — the aliasing the reuse hazards H1–H4 and H10 are about
//! (`docs/hazards.md`).
//!
//! # Differences from the kernel
//!
//! - The "pgmap pointer" stored in word 1 is the address of the pagemap's
//!   pages array (its [`PgmapCookie`]), and a head link is the head page's
//!   address + 1. Both are only ever compared and turned back into pages
//!   through the pagemap that owns them, never dereferenced: a stale or
//!   zeroed word gives `None` and a `WARN`, not undefined behaviour.
//! - Pages are reached through [`PageRef`] (pagemap + index), which derefs
//!   to [`Page`]; that is what lets folio code reach page\[1\] safely.

use crate::memremap::DevPagemap;
use crate::page_flags::{
    FOLIO_ORDER_MASK, PG_HEAD, PG_LARGE_RMAPPABLE, PG_LOCKED, ZONE_DEVICE, flags_zone,
};
use devpriv_core::sync::atomic::{AtomicU64, Ordering};
use devpriv_core::{
    DevicePrivateOffset, MAX_FOLIO_ORDER, Order, PageCount, Pfn, warn_on, warn_on_once,
};
use std::fmt;
use std::ops::Deref;

/// Index of each word in a [`Page`].
///
/// Kernel: the field offsets of `struct page` / `struct folio` on x86-64 (main).
pub mod word {
    /// `flags`.
    pub const FLAGS: usize = 0;
    /// `compound_head` (tail) or the folio's `pgmap` (`ZONE_DEVICE` head).
    pub const COMPOUND_HEAD: usize = 1;
    /// `zone_device_data` (`lru.prev`); `_large_mapcount` on page\[1\].
    pub const ZONE_DEVICE_DATA: usize = 2;
    /// `mapping`; `_entire_mapcount` / `_pincount` on page\[1\].
    pub const MAPPING: usize = 3;
    /// `index` / `share`.
    pub const INDEX: usize = 4;
    /// `private`.
    pub const PRIVATE: usize = 5;
    /// `_mapcount` (low half) and `_refcount` (high half).
    pub const COUNTS: usize = 6;
    /// `memcg_data`; `_nr_pages` in its low half on page\[1\].
    pub const MEMCG_DATA: usize = 7;
}

/// `TAIL_MAPPING` on x86-64: `0x400 + POISON_POINTER_DELTA`.
///
/// Kernel: `TAIL_MAPPING`, `include/linux/poison.h` (main).
pub const TAIL_MAPPING: u64 = 0xdead_0000_0000_0400;

/// Bit 0 of `mapping`: the folio is anonymous (`mapping` points at an
/// `anon_vma`, tagged).
///
/// Kernel: `PAGE_MAPPING_ANON` (`FOLIO_MAPPING_ANON`),
/// `include/linux/page-flags.h` (main).
pub const PAGE_MAPPING_ANON: u64 = 0x1;

/// The identity a pagemap writes into its pages' word 1.
///
/// Kernel: the `struct dev_pagemap *` stored in `folio->pgmap` (main).
///
/// # Differences from the kernel
///
/// It is the address of the pagemap's pages array, not of the pagemap: a
/// unique, 64-byte-aligned value (bit 0 clear, as a pointer's is) that the
/// model never dereferences.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PgmapCookie(pub(crate) u64);

impl PgmapCookie {
    /// The raw word-1 value.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// One `struct page`: eight atomic 64-bit words.
///
/// Kernel: `struct page`, `include/linux/mm_types.h` (main).
#[repr(C, align(64))]
pub struct Page {
    w: [AtomicU64; 8],
}

impl fmt::Debug for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w: Vec<String> = (0..8).map(|i| format!("{:#x}", self.raw(i))).collect();
        f.debug_struct("Page").field("words", &w).finish()
    }
}

impl Page {
    /// A page with the given word values.
    pub(crate) fn from_words(w: [u64; 8]) -> Page {
        Page {
            w: w.map(AtomicU64::new),
        }
    }

    /// Raw word `i` (see [`word`]), for fidelity tests.
    ///
    /// Kernel: none (reading `struct page` memory directly).
    ///
    /// # Panics
    ///
    /// If `i >= 8`.
    pub fn raw(&self, i: usize) -> u64 {
        self.w[i].load(Ordering::Acquire)
    }

    /// Writes raw word `i`, for fidelity tests and the reinit code.
    ///
    /// Kernel: none (writing `struct page` memory directly).
    ///
    /// # Panics
    ///
    /// If `i >= 8`.
    pub fn set_raw(&self, i: usize, v: u64) {
        self.w[i].store(v, Ordering::Release);
    }

    /// Writes every word, for a page no other thread can see yet (its
    /// pagemap is published afterwards).
    pub(crate) fn init(&self, w: [u64; 8]) {
        for (a, v) in self.w.iter().zip(w) {
            a.store(v, Ordering::Relaxed);
        }
    }

    /// Plain (`Relaxed`) load of word `i`: how C reads `struct page`
    /// fields on paths where the page is owned by the caller.
    #[inline]
    pub(crate) fn load(&self, i: usize) -> u64 {
        self.w[i].load(Ordering::Relaxed)
    }

    /// Plain (`Relaxed`) store to word `i`: how C writes `struct page`
    /// fields (`page->mapping = NULL`, `p->flags.f &= ~0xff`, ...). Callers
    /// that hand the page to another thread publish it with a barrier or a
    /// `Release` store of their own.
    #[inline]
    pub(crate) fn store(&self, i: usize, v: u64) {
        self.w[i].store(v, Ordering::Relaxed);
    }

    /// All eight words (a racy snapshot), for bit-identity checks.
    ///
    /// Kernel: none (model only).
    pub fn words(&self) -> [u64; 8] {
        std::array::from_fn(|i| self.raw(i))
    }

    /// `page->flags`.
    ///
    /// Kernel: `page->flags` (main).
    pub fn flags(&self) -> u64 {
        self.raw(word::FLAGS)
    }

    /// Tests flag `bit` (a `PG_*` number).
    ///
    /// Kernel: `test_bit(bit, &page->flags)` (`PageLocked()` and friends, main).
    pub fn test_flag(&self, bit: u32) -> bool {
        self.flags() & 1 << bit != 0
    }

    /// Sets flag `bit` atomically; returns its old value.
    ///
    /// Kernel: `test_and_set_bit()` (`SetPageXxx()`, main).
    pub fn set_flag(&self, bit: u32) -> bool {
        self.w[word::FLAGS].fetch_or(1 << bit, Ordering::AcqRel) & 1 << bit != 0
    }

    /// Clears flag `bit` atomically; returns its old value.
    ///
    /// Kernel: `test_and_clear_bit()` (`ClearPageXxx()`, main).
    pub fn clear_flag(&self, bit: u32) -> bool {
        self.w[word::FLAGS].fetch_and(!(1 << bit), Ordering::AcqRel) & 1 << bit != 0
    }

    /// Clears every bit of `mask` in the flags word (one atomic op).
    ///
    /// Kernel: `page->flags.f &= ~mask` (as the reinit code does, main).
    pub fn clear_flags(&self, mask: u64) {
        self.w[word::FLAGS].fetch_and(!mask, Ordering::AcqRel);
    }

    /// Takes `PG_locked` if it is clear.
    ///
    /// Kernel: `trylock_page()` (main).
    pub fn trylock(&self) -> bool {
        !self.set_flag(PG_LOCKED)
    }

    /// Takes `PG_locked`, or reports that the caller would block.
    ///
    /// Kernel: `lock_page()` (main).
    ///
    /// # Differences from the kernel
    ///
    /// The kernel sleeps until the lock is free. A model test must not hang
    /// on a stale lock bit (hazard H1), so this returns `Err(WouldBlock)`.
    ///
    /// # Errors
    ///
    /// [`WouldBlock`] if `PG_locked` is already set.
    pub fn lock(&self) -> Result<(), WouldBlock> {
        if self.trylock() {
            Ok(())
        } else {
            Err(WouldBlock)
        }
    }

    /// Releases `PG_locked`.
    ///
    /// Kernel: `unlock_page()` (main).
    pub fn unlock(&self) {
        let was = self.clear_flag(PG_LOCKED);
        warn_on!(!was, "unlock_page() of an unlocked page");
    }

    /// `_refcount`.
    ///
    /// Kernel: `page_ref_count()` (main).
    pub fn refcount(&self) -> i32 {
        let r = (self.raw(word::COUNTS) >> 32) as u32;
        i32::from_ne_bytes(r.to_ne_bytes())
    }

    /// Sets `_refcount`, leaving `_mapcount` alone.
    ///
    /// Kernel: `set_page_count()` (main).
    pub fn set_refcount(&self, v: i32) {
        self.update_half(true, v);
    }

    /// Adds `n` to `_refcount`; returns the new count.
    ///
    /// Kernel: `page_ref_add_return()` (`folio_ref_add()`, `folio_put()` with
    /// `n = -1`, main).
    pub fn ref_add(&self, n: i32) -> i32 {
        self.ref_add_ordered(n, Ordering::AcqRel)
    }

    /// [`Page::ref_add`] with the RMW's ordering given: `AcqRel` but for
    /// the loom mutant that weakens it.
    ///
    /// The kernel's `atomic_add_return()` is fully ordered; `AcqRel` is
    /// what the model relies on: a putter's earlier writes are released to
    /// the putter that reaches zero and frees the folio (acquire).
    pub(crate) fn ref_add_ordered(&self, n: i32, order: Ordering) -> i32 {
        let delta = u64::from(u32::from_ne_bytes(n.to_ne_bytes())) << 32;
        let old = self.w[word::COUNTS].fetch_add(delta, order);
        let old = i32::from_ne_bytes(((old >> 32) as u32).to_ne_bytes());
        old.wrapping_add(n)
    }

    /// Adds `n` to `_refcount` unless it is 0, atomically (a page whose
    /// count reached 0 is being freed and must not be resurrected);
    /// returns whether it did.
    ///
    /// Kernel: `page_ref_add_unless(page, n, 0)` (`get_page_unless_zero()`,
    /// `folio_try_get()`) (main).
    pub fn ref_add_unless_zero(&self, n: i32) -> bool {
        let delta = u64::from(u32::from_ne_bytes(n.to_ne_bytes())) << 32;
        let mut cur = self.raw(word::COUNTS);
        loop {
            if cur >> 32 == 0 {
                return false;
            }
            match self.w[word::COUNTS].compare_exchange(
                cur,
                cur.wrapping_add(delta),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// `_mapcount` as stored (−1 when unmapped).
    ///
    /// Kernel: `page->_mapcount` (`page_mapcount()` is this + 1, main).
    pub fn raw_mapcount(&self) -> i32 {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the low 32 bits are _mapcount"
        )]
        let m = self.raw(word::COUNTS) as u32;
        i32::from_ne_bytes(m.to_ne_bytes())
    }

    /// Sets the stored `_mapcount`, leaving `_refcount` alone.
    ///
    /// Kernel: `atomic_set(&page->_mapcount, v)` (main).
    pub fn set_raw_mapcount(&self, v: i32) {
        self.update_half(false, v);
    }

    fn update_half(&self, high: bool, v: i32) {
        let v = u64::from(u32::from_ne_bytes(v.to_ne_bytes()));
        let (mask, bits) = if high {
            (0xffff_ffff, v << 32)
        } else {
            (0xffff_ffff << 32, v)
        };
        let mut cur = self.raw(word::COUNTS);
        while let Err(now) = self.w[word::COUNTS].compare_exchange(
            cur,
            (cur & mask) | bits,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            cur = now;
        }
    }

    /// `true` if the page is in `ZONE_DEVICE` (zone bits of `flags`).
    ///
    /// Kernel: `is_zone_device_page()` (main).
    pub fn is_zone_device(&self) -> bool {
        flags_zone(self.flags()) == ZONE_DEVICE
    }

    /// `true` if word 1 marks this page as a tail.
    ///
    /// Kernel: `PageTail()` (`compound_head & 1`, main).
    pub fn is_tail(&self) -> bool {
        self.raw(word::COMPOUND_HEAD) & 1 != 0
    }
}

/// `lock_page()` found `PG_locked` already set: in the kernel the caller
/// would sleep (forever, if the bit is stale).
///
/// Kernel: none (the model's report of a would-be hang).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WouldBlock;

impl fmt::Display for WouldBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("lock_page() would block: PG_locked is already set")
    }
}

impl std::error::Error for WouldBlock {}

/// A page of a device-private pagemap: the pagemap and the page's index
/// in its `pages` array. Derefs to [`Page`].
///
/// Kernel: `struct page *` into `pgmap->pages` (v6).
#[derive(Clone, Copy)]
pub struct PageRef<'g> {
    pgmap: &'g DevPagemap,
    // The page itself, so that touching it does not go back through the
    // pagemap (a dependent load on every access).
    page: &'g Page,
}

impl fmt::Debug for PageRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageRef")
            .field("pgmap", &self.pgmap.id())
            .field("index", &self.index())
            .finish()
    }
}

impl PartialEq for PageRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.page, other.page)
    }
}

impl Eq for PageRef<'_> {}

impl Deref for PageRef<'_> {
    type Target = Page;

    fn deref(&self) -> &Page {
        self.page
    }
}

impl<'g> PageRef<'g> {
    /// Page `index` of `pgmap`, if it exists.
    ///
    /// Kernel: `&pgmap->pages[index]` (v6).
    #[inline]
    pub fn new(pgmap: &'g DevPagemap, index: usize) -> Option<Self> {
        Some(PageRef {
            pgmap,
            page: pgmap.pages().get(index)?,
        })
    }

    /// A page already resolved by the caller.
    ///
    /// The caller guarantees `page` lies in `pgmap`'s `pages` array (the
    /// section index checks this when it publishes a memmap base).
    #[inline]
    pub(crate) fn from_parts(pgmap: &'g DevPagemap, page: &'g Page) -> Self {
        debug_assert!(
            pgmap
                .pages()
                .as_ptr_range()
                .contains(&std::ptr::from_ref(page)),
            "page paired with a pagemap it is not in"
        );
        PageRef { pgmap, page }
    }

    /// The pagemap whose `pages` array holds this page (whatever word 1
    /// says).
    ///
    /// Kernel: none (the model knows which array a page lives in).
    pub fn owner(self) -> &'g DevPagemap {
        self.pgmap
    }

    /// Index in the pagemap's `pages` array.
    ///
    /// Kernel: `page - pgmap->pages` (v6).
    pub fn index(self) -> usize {
        // The page lies in the pagemap's array (see `new`), so the byte
        // distance is a whole number of pages.
        let bytes = std::ptr::from_ref(self.page).addr() - self.pgmap.pages().as_ptr().addr();
        bytes / std::mem::size_of::<Page>()
    }

    /// This page's offset in the device-private address space: its
    /// pagemap's first offset plus its index in the pages array.
    ///
    /// Kernel: `device_private_page_to_offset(page)`, `mm/memremap.c` (v6
    /// proposal).
    ///
    /// # Differences from the kernel
    ///
    /// The kernel finds the pagemap through `page_pgmap(page)` (word 1 of
    /// the folio's head), which a cleared word 1 breaks (hazard H10). A
    /// `PageRef` knows its pagemap, so this cannot fail; the kernel's
    /// reading, with its `WARN`, is
    /// [`SpaceReadGuard::device_private_page_to_offset`](crate::SpaceReadGuard::device_private_page_to_offset).
    ///
    /// # Examples
    ///
    /// ```
    /// use devpriv_core::{DevicePrivateOffset, PageCount};
    /// use devpriv_pagemap::{DevicePrivateSpace, NoopOps, Owner, PagemapParams};
    /// use std::sync::Arc;
    ///
    /// let space = DevicePrivateSpace::new();
    /// let params = PagemapParams::private(PageCount::new(8), Owner(1), Arc::new(NoopOps));
    /// let a = space.memremap_device_private_pagemap(params.clone(), 0)?;
    /// let b = space.memremap_device_private_pagemap(params, 0)?;
    /// // b's pages come right after a's 8 (the kernel's exact packing).
    /// let page = b.page(DevicePrivateOffset::new(10)).unwrap();
    /// assert_eq!(page.index(), 2);
    /// assert_eq!(page.offset(), DevicePrivateOffset::new(10));
    /// # space.memunmap_device_private_pagemap(&a)?;
    /// # space.memunmap_device_private_pagemap(&b)?;
    /// # Ok::<(), devpriv_core::Errno>(())
    /// ```
    #[inline]
    pub fn offset(self) -> DevicePrivateOffset {
        // No overflow: the pagemap's offsets end below `1 << 52`.
        DevicePrivateOffset::new(self.pgmap.first_offset().get() + self.index() as u64)
    }

    /// The page `n` places further on in the same array.
    ///
    /// Kernel: `page + n` / `folio_page(folio, n)` (main).
    pub fn nth(self, n: usize) -> Option<Self> {
        PageRef::new(self.pgmap, self.index().checked_add(n)?)
    }

    /// Resolves a head link (head address + 1) inside this page's array.
    fn page_at_addr(self, addr: u64) -> Option<Self> {
        let base = self.pgmap.cookie().get();
        let off = addr.checked_sub(base)?;
        if off % 64 != 0 {
            return None;
        }
        PageRef::new(self.pgmap, usize::try_from(off / 64).ok()?)
    }

    /// The head of the folio this page belongs to.
    ///
    /// Kernel: `compound_head()` / `page_folio()`, `include/linux/page-flags.h` (main).
    ///
    /// # Differences from the kernel
    ///
    /// A tail link that does not point into this page's own array (garbage,
    /// or a link into freed memory) takes a `WARN` and resolves to the page
    /// itself; the kernel would follow it.
    pub fn compound_head(self) -> Self {
        let w1 = self.raw(word::COMPOUND_HEAD);
        if w1 & 1 == 0 {
            return self;
        }
        let head = self.page_at_addr(w1 - 1);
        if warn_on_once!(
            head.is_none(),
            "compound_head(): tail link outside the page's pagemap"
        ) {
            return self;
        }
        head.unwrap_or(self)
    }

    /// The folio this page belongs to.
    ///
    /// Kernel: `page_folio()`, `include/linux/page-flags.h` (main).
    pub fn folio(self) -> Folio<'g> {
        Folio(self.compound_head())
    }

    /// The model address of this `struct page`: the pagemap's cookie plus
    /// 64 bytes per page before it. Head links store this + 1.
    ///
    /// Kernel: `(unsigned long)page` (main).
    pub fn addr(self) -> u64 {
        self.pgmap.cookie().get() + (self.index() as u64) * 64
    }

    /// Makes this page a tail of `head`: word 1 = head address + 1.
    ///
    /// Kernel: `set_compound_head()`, `include/linux/page-flags.h` (main).
    ///
    /// # Differences from the kernel
    ///
    /// A head in another pagemap's array cannot be encoded (the model
    /// resolves links only within one array): that takes a `WARN` and
    /// writes nothing.
    pub fn set_compound_head(self, head: PageRef<'_>) {
        if warn_on!(
            !std::ptr::eq(self.pgmap, head.pgmap),
            "set_compound_head(): head in another pagemap"
        ) {
            return;
        }
        self.store(word::COMPOUND_HEAD, head.addr() + 1);
    }

    /// Clears word 1. For a `ZONE_DEVICE` page this also erases the pgmap
    /// (hazard H10).
    ///
    /// Kernel: `clear_compound_head()`, `include/linux/page-flags.h` (main).
    pub fn clear_compound_head(self) {
        self.store(word::COMPOUND_HEAD, 0);
    }

    /// The pgmap recorded in the folio: word 1 of the folio's head, if it is
    /// this page's own pagemap.
    ///
    /// Kernel: `page_pgmap()`, `include/linux/mmzone.h` (`folio->pgmap`, main).
    ///
    /// # Differences from the kernel
    ///
    /// The kernel returns whatever word 1 holds. When word 1 does not name
    /// this page's pagemap (it was cleared by `clear_compound_head()`, say —
    /// hazard H10) the model takes a `WARN` and returns `None` where the
    /// kernel would go on to dereference a bad pointer.
    pub fn pgmap(self) -> Option<&'g DevPagemap> {
        let head = self.compound_head();
        if warn_on!(
            !self.is_zone_device(),
            "page_pgmap() of a non-ZONE_DEVICE page"
        ) {
            return None;
        }
        let w1 = head.raw(word::COMPOUND_HEAD);
        if warn_on!(
            w1 != self.pgmap.cookie().get(),
            "page_pgmap(): folio->pgmap does not name the page's pagemap"
        ) {
            return None;
        }
        Some(self.pgmap)
    }
}

/// A folio: a [`PageRef`] to its head page.
///
/// Kernel: `struct folio`, `include/linux/mm_types.h` (main).
///
/// # Invariants
///
/// None beyond `PageRef`'s: like the kernel's `page_folio()` of a racing
/// page, a `Folio` may name a page that is no longer a head. Accessors read
/// the words as they are.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Folio<'g>(PageRef<'g>);

impl fmt::Debug for Folio<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Folio").field(&self.0).finish()
    }
}

impl<'g> Folio<'g> {
    /// The folio whose head is `head`, without checking word 1.
    ///
    /// Kernel: `page_folio()` on a page known to be a head, or
    /// `(struct folio *)page` (main).
    pub fn from_head(head: PageRef<'g>) -> Self {
        Folio(head)
    }

    /// The head page.
    ///
    /// Kernel: `&folio->page` / `folio_page(folio, 0)` (main).
    pub fn page(self) -> PageRef<'g> {
        self.0
    }

    /// Page `n` of the folio (no bounds check against the order).
    ///
    /// Kernel: `folio_page(folio, n)` (main).
    pub fn nth_page(self, n: usize) -> Option<PageRef<'g>> {
        self.0.nth(n)
    }

    /// `true` if `PG_head` is set on the head page.
    ///
    /// Kernel: `folio_test_large()` (main).
    pub fn is_large(self) -> bool {
        self.0.test_flag(PG_HEAD)
    }

    /// The order: the low byte of page\[1\]'s flags, if the folio is large.
    ///
    /// Kernel: `folio_order()` / `folio_large_order()`, `include/linux/mm.h` (main).
    pub fn order(self) -> Order {
        if !self.is_large() {
            return Order::ZERO;
        }
        let flags1 = self.nth_page(1).map_or(0, |p| p.flags());
        let o = (flags1 & FOLIO_ORDER_MASK) as u32;
        // An order byte of 64 or more cannot describe a folio; report it as
        // the largest representable order rather than panic.
        Order::new(o).unwrap_or(Order::new(63).unwrap_or(Order::ZERO))
    }

    /// Pages in the folio: 1 unless large, else `_nr_pages` (the low half
    /// of page\[1\]'s `memcg_data`).
    ///
    /// Kernel: `folio_nr_pages()`, `include/linux/mm.h`
    /// (`NR_PAGES_IN_LARGE_FOLIO`, main).
    pub fn nr_pages(self) -> PageCount {
        if !self.is_large() {
            return PageCount::ONE;
        }
        let memcg1 = self.nth_page(1).map_or(0, |p| p.raw(word::MEMCG_DATA));
        PageCount::new(memcg1 & 0xffff_ffff)
    }

    /// The folio's pgmap.
    ///
    /// Kernel: `folio->pgmap` (`page_pgmap(&folio->page)`, main).
    pub fn pgmap(self) -> Option<&'g DevPagemap> {
        self.0.pgmap()
    }

    /// Sets the order: the low byte of page\[1\]'s flags and `_nr_pages`
    /// (the low half of page\[1\]'s `memcg_data`). Takes a `WARN` and does
    /// nothing for order 0 or a folio that is not large. An order above
    /// [`MAX_FOLIO_ORDER`] (22) takes the
    /// kernel's debug `WARN` and is still written.
    ///
    /// Kernel: `folio_set_order()`, `mm/internal.h` (7.0: `WARN_ON_ONCE(!order
    /// || !folio_test_large(folio))` returns; `VM_WARN_ON_ONCE(order >
    /// MAX_FOLIO_ORDER)` does not).
    ///
    /// # Differences from the kernel
    ///
    /// The `MAX_FOLIO_ORDER` check is a `VM_WARN` (only with
    /// `CONFIG_DEBUG_VM`); the model always takes it.
    pub fn set_order(self, order: Order) {
        if warn_on!(
            order == Order::ZERO || !self.is_large(),
            "folio_set_order(): order 0 or not a large folio"
        ) {
            return;
        }
        warn_on_once!(
            order.get() > MAX_FOLIO_ORDER,
            "folio_set_order(): order > MAX_FOLIO_ORDER"
        );
        let Some(p1) = self.nth_page(1) else {
            warn_on!(true, "folio_set_order(): no page[1]");
            return;
        };
        let flags = p1.load(word::FLAGS);
        p1.store(
            word::FLAGS,
            (flags & !FOLIO_ORDER_MASK) | u64::from(order.get()),
        );
        let memcg = p1.load(word::MEMCG_DATA);
        // `_nr_pages` is 32 bits: an order of 32 or more does not fit (no
        // pages array is that large, so `prep_compound_page` never gets one).
        let nr = order.nr_pages().get() & 0xffff_ffff;
        p1.store(word::MEMCG_DATA, (memcg & !0xffff_ffff) | nr);
    }

    /// Clears the order byte and `_nr_pages` on page\[1\] (for splitting).
    /// Takes a `WARN` and does nothing if the folio is not large.
    ///
    /// Applied to a single page `p` (as if it were a folio) it writes into
    /// `p + 1`, another page: why the reinit code cannot use it (hazard
    /// H3, `docs/hazards.md`).
    ///
    /// Kernel: `folio_reset_order()`, `include/linux/mm.h` (main).
    pub fn reset_order(self) {
        if warn_on!(!self.is_large(), "folio_reset_order(): not a large folio") {
            return;
        }
        if let Some(p1) = self.nth_page(1) {
            reset_order_byte_of(&p1);
        }
    }

    /// Sets `PG_large_rmappable` (on page\[1\]).
    ///
    /// Kernel: `folio_set_large_rmappable()`, `include/linux/page-flags.h` (main).
    pub fn set_large_rmappable(self) {
        if let Some(p1) = self.nth_page(1) {
            p1.set_flag(PG_LARGE_RMAPPABLE);
        }
    }

    /// `true` if the folio is large and `PG_large_rmappable` is set on
    /// page\[1\].
    ///
    /// Kernel: `folio_test_large_rmappable()` (main).
    pub fn test_large_rmappable(self) -> bool {
        self.is_large()
            && self
                .nth_page(1)
                .is_some_and(|p1| p1.test_flag(PG_LARGE_RMAPPABLE))
    }

    /// `folio->mapping` (word 3 of the head).
    ///
    /// Kernel: `folio->mapping` (main).
    pub fn mapping(self) -> u64 {
        self.0.raw(word::MAPPING)
    }

    /// Sets `folio->mapping`.
    ///
    /// Kernel: `folio->mapping = mapping` (main).
    pub fn set_mapping(self, mapping: u64) {
        self.0.set_raw(word::MAPPING, mapping);
    }

    /// `true` if `mapping` carries [`PAGE_MAPPING_ANON`].
    ///
    /// Kernel: `folio_test_anon()`, `include/linux/page-flags.h` (main).
    pub fn test_anon(self) -> bool {
        self.mapping() & PAGE_MAPPING_ANON != 0
    }

    /// Writes `pgmap` into the head's word 1 (which also makes the head
    /// not a tail).
    ///
    /// Kernel: `folio->pgmap = pgmap` (main).
    ///
    /// # Differences from the kernel
    ///
    /// Stores the pagemap's [`PgmapCookie`]; a pagemap other than the one
    /// holding the page can be written, and [`Folio::pgmap`] then reports
    /// the mismatch (`None` + `WARN`).
    pub fn set_pgmap(self, pgmap: &DevPagemap) {
        self.0.set_raw(word::COMPOUND_HEAD, pgmap.cookie().get());
    }

    /// `_refcount` of the head.
    ///
    /// Kernel: `folio_ref_count()` (main).
    pub fn ref_count(self) -> i32 {
        self.0.refcount()
    }

    /// `true` if `PG_locked` is set on the head.
    ///
    /// Kernel: `folio_test_locked()` (main).
    pub fn test_locked(self) -> bool {
        self.0.test_flag(PG_LOCKED)
    }

    /// Takes the folio lock if it is free.
    ///
    /// Kernel: `folio_trylock()` (main).
    pub fn trylock(self) -> bool {
        self.0.trylock()
    }

    /// Takes the folio lock, or reports that the caller would block.
    ///
    /// Kernel: `folio_lock()` (main).
    ///
    /// # Errors
    ///
    /// [`WouldBlock`], as for [`Page::lock`].
    pub fn lock(self) -> Result<(), WouldBlock> {
        self.0.lock()
    }

    /// Releases the folio lock.
    ///
    /// Kernel: `folio_unlock()` (main).
    pub fn unlock(self) {
        self.0.unlock();
    }

    /// The device-private offset of the folio's head page (see
    /// [`PageRef::offset`]).
    ///
    /// Kernel: `device_private_folio_to_offset(folio)`, `mm/memremap.c` (v6
    /// proposal).
    #[inline]
    pub fn offset(self) -> DevicePrivateOffset {
        self.0.offset()
    }

    /// The folio's pfn. Device-private folios have none: this takes the
    /// `WARN` path and returns `None`.
    ///
    /// Kernel: `folio_pfn()`, with the v6 proposal's `VM_WARN_ON(folio_is_device_private(folio))`.
    pub fn pfn(self) -> Option<Pfn> {
        warn_on!(true, "folio_pfn() of a device-private folio");
        None
    }
}

/// Clears the order byte and `_nr_pages` of `p1` (the page\[1\] of some
/// folio): the body of `folio_reset_order()`.
pub(crate) fn reset_order_byte_of(p1: &Page) {
    let flags = p1.load(word::FLAGS);
    p1.store(word::FLAGS, flags & !FOLIO_ORDER_MASK);
    let memcg = p1.load(word::MEMCG_DATA);
    p1.store(word::MEMCG_DATA, memcg & !0xffff_ffff);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn page_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Page>(), 64);
        assert_eq!(std::mem::align_of::<Page>(), 64);
    }

    #[test]
    fn counts_share_a_word_without_disturbing_each_other() {
        let p = Page::from_words([0; 8]);
        p.set_raw_mapcount(-1);
        p.set_refcount(0);
        assert_eq!((p.raw_mapcount(), p.refcount()), (-1, 0));
        assert_eq!(p.ref_add(1), 1);
        assert_eq!(p.ref_add(-2), -1);
        assert_eq!(
            p.raw_mapcount(),
            -1,
            "refcount updates leave _mapcount alone"
        );
        p.set_raw_mapcount(5);
        assert_eq!(p.refcount(), -1);
        assert_eq!(p.raw(word::COUNTS), 0xffff_ffff_0000_0005);
    }

    #[test]
    fn lock_bit_is_a_real_lock() {
        let p = Page::from_words([0; 8]);
        assert_eq!(p.lock(), Ok(()));
        assert_eq!(p.lock(), Err(WouldBlock));
        assert!(!p.trylock());
        p.unlock();
        assert!(p.trylock());
        let (_, w) = devpriv_core::warn::capture(|| {
            p.unlock();
            p.unlock();
        });
        assert_eq!(w.count_matching("unlock_page"), 1);
    }
}
