//! Folios of either kind: what migration asks of a system folio
//! ([`SysFolio`]) and of a device-private one ([`Folio`]), behind one
//! trait, and the frame-to-folio lookup.
//!
//! Kernel: `include/linux/mm.h` (`folio_get()`, `folio_put()`,
//! `folio_nr_pages()`, `folio_order()`, `folio_mapcount()`,
//! `folio_entire_mapcount()`, `pfn_folio()`, `page_folio()`),
//! `include/linux/pagemap.h` (`folio_trylock()`, `folio_unlock()`), and
//! the rmap counters of `mm/rmap.c` (`folio_add_anon_rmap_ptes()`,
//! `folio_remove_rmap_ptes()`, `folio_add_anon_rmap_pmd()`,
//! `folio_remove_rmap_pmd()`, main).
//!
//! In the kernel every folio is a `struct folio *` and these helpers take
//! any of them. Here system folios and device-private folios are different
//! types: each implements [`FolioOps`], and [`AnyFolio`] (either one)
//! dereferences to the trait object, so code written against a folio
//! "of any kind" calls the kernel's helpers on it directly.

use crate::page_alloc::{SysFolio, SystemMemory};
use core::fmt;
use core::ops::Deref;
use devpriv_core::{Errno, Order, PageCount, PageFrame};
use devpriv_pagemap::mm_types::{PAGE_MAPPING_ANON, word};
use devpriv_pagemap::page_flags::PG_DIRTY;
use devpriv_pagemap::{Folio, Page, SpaceReadGuard, folio_get, folio_put};

/// The folio operations migration needs, for a system or a device-private
/// folio.
///
/// Kernel: the `folio_*()` helpers of `include/linux/mm.h`,
/// `include/linux/pagemap.h` and `mm/rmap.c`, which take any
/// `struct folio *` (main).
pub trait FolioOps {
    /// Pages in the folio.
    ///
    /// Kernel: `folio_nr_pages()` (main).
    fn nr_pages(&self) -> u64;

    /// The folio order.
    ///
    /// Kernel: `folio_order()` (main).
    fn order(&self) -> Order;

    /// `true` for order > 0.
    ///
    /// Kernel: `folio_test_large()` (main).
    fn is_large(&self) -> bool {
        self.nr_pages() > 1
    }

    /// The frame of page `n`: a pfn, or a device-private offset.
    ///
    /// Kernel: `folio_pfn() + n`, or (v6) `device_private_folio_to_offset() + n`.
    fn frame(&self, n: u64) -> Option<PageFrame>;

    /// The index in this folio of the page at `frame`, if it is one of its
    /// pages.
    ///
    /// Kernel: `folio_page_idx()` (main).
    fn page_index(&self, frame: PageFrame) -> Option<u64> {
        let base = self.frame(0)?;
        if base.is_device_private() != frame.is_device_private() {
            return None;
        }
        let n = frame.raw_index().checked_sub(base.raw_index())?;
        (n < self.nr_pages()).then_some(n)
    }

    /// The reference count.
    ///
    /// Kernel: `folio_ref_count()` (main).
    fn refcount(&self) -> i64;

    /// Takes a reference.
    ///
    /// Kernel: `folio_get()` (main).
    fn get(&self);

    /// Drops a reference; the last one frees the folio (a device folio
    /// through `free_zone_device_folio()` and the driver's `folio_free`).
    ///
    /// Kernel: `folio_put()` (main).
    fn put(&self);

    /// Kernel: `folio_trylock()` (main).
    fn trylock(&self) -> bool;

    /// Kernel: `folio_unlock()` (main).
    fn unlock(&self);

    /// Kernel: `folio_test_locked()` (main).
    fn is_locked(&self) -> bool;

    /// Every mapping of the folio.
    ///
    /// Kernel: `folio_mapcount()` (main).
    fn mapcount(&self) -> i64;

    /// PTE mappings of page `n`.
    ///
    /// Kernel: `page_mapcount()` without the entire mappings (main).
    fn page_pte_mapcount(&self, n: u64) -> Option<i64>;

    /// PMD mappings of the folio.
    ///
    /// Kernel: `folio_entire_mapcount()` (main).
    fn entire_mapcount(&self) -> i64;

    /// The page offset of the folio in its VMA's mapping.
    ///
    /// Kernel: `folio->index` (main).
    fn index(&self) -> u64;

    /// The anon cookie (the id of the VMA the folio was first mapped in), or
    /// `None` if the folio is not anon.
    ///
    /// Kernel: `folio_anon_vma()` (`folio->mapping` with
    /// `PAGE_MAPPING_ANON`, main).
    ///
    /// # Differences from the kernel
    ///
    /// A system folio stores the id itself; a device folio stores
    /// `id << 1 | PAGE_MAPPING_ANON` in its `mapping` word, so that
    /// `folio_test_anon()` in `devpriv-pagemap` sees an anon folio.
    fn anon_id(&self) -> Option<u64>;

    /// Makes the folio anon in VMA `id` at page offset `index`.
    ///
    /// Kernel: `__folio_set_anon()` (`folio->mapping`, `folio->index`, main).
    fn set_anon(&self, id: u64, index: u64);

    /// Adds PTE mappings of pages `first..first + nr`.
    ///
    /// Kernel: `folio_add_anon_rmap_ptes()` (map counts only, main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if the pages are not all in the folio.
    fn add_rmap_ptes(&self, first: u64, nr: u64) -> Result<(), Errno>;

    /// Marks the folio dirty (its data differs from any backing copy).
    ///
    /// Kernel: `folio_mark_dirty()` (main).
    ///
    /// # Differences from the kernel
    ///
    /// System folios carry no flags in the model: a no-op for them. A
    /// device folio gets `PG_dirty` on its head page.
    fn mark_dirty(&self);

    /// Removes PTE mappings of pages `first..first + nr`.
    ///
    /// Kernel: `folio_remove_rmap_ptes()` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if the pages are not all in the folio, or one of
    /// them is not PTE-mapped.
    fn remove_rmap_ptes(&self, first: u64, nr: u64) -> Result<(), Errno>;

    /// Adds a PMD mapping of the whole folio.
    ///
    /// Kernel: `folio_add_anon_rmap_pmd()` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] unless the folio is PMD-sized.
    fn add_rmap_pmd(&self) -> Result<(), Errno>;

    /// Removes a PMD mapping.
    ///
    /// Kernel: `folio_remove_rmap_pmd()` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] unless the folio is PMD-mapped.
    fn remove_rmap_pmd(&self) -> Result<(), Errno>;
}

impl FolioOps for SysFolio<'_> {
    fn nr_pages(&self) -> u64 {
        SysFolio::nr_pages(self).get()
    }

    fn order(&self) -> Order {
        SysFolio::order(self)
    }

    fn frame(&self, n: u64) -> Option<PageFrame> {
        self.pfn().checked_add(PageCount::new(n)).map(Into::into)
    }

    fn refcount(&self) -> i64 {
        i64::try_from(SysFolio::refcount(self)).unwrap_or(i64::MAX)
    }

    fn get(&self) {
        self.get_many(1);
    }

    fn put(&self) {
        // An underflow takes a WARN inside and changes nothing.
        let _ = SysFolio::put(self);
    }

    fn trylock(&self) -> bool {
        SysFolio::trylock(self)
    }

    fn unlock(&self) {
        let _ = SysFolio::unlock(self);
    }

    fn is_locked(&self) -> bool {
        SysFolio::is_locked(self)
    }

    fn mapcount(&self) -> i64 {
        i64::try_from(SysFolio::mapcount(self)).unwrap_or(i64::MAX)
    }

    fn page_pte_mapcount(&self, n: u64) -> Option<i64> {
        let all = self.page_mapcount(n)?;
        i64::try_from(all - SysFolio::entire_mapcount(self)).ok()
    }

    fn entire_mapcount(&self) -> i64 {
        i64::try_from(SysFolio::entire_mapcount(self)).unwrap_or(i64::MAX)
    }

    fn index(&self) -> u64 {
        SysFolio::index(self)
    }

    fn anon_id(&self) -> Option<u64> {
        (self.mapping() != 0).then(|| self.mapping())
    }

    fn set_anon(&self, id: u64, index: u64) {
        self.set_mapping(id);
        self.set_index(index);
    }

    fn mark_dirty(&self) {}

    fn add_rmap_ptes(&self, first: u64, nr: u64) -> Result<(), Errno> {
        SysFolio::add_rmap_ptes(self, first, nr)
    }

    fn remove_rmap_ptes(&self, first: u64, nr: u64) -> Result<(), Errno> {
        SysFolio::remove_rmap_ptes(self, first, nr)
    }

    fn add_rmap_pmd(&self) -> Result<(), Errno> {
        SysFolio::add_rmap_pmd(self)
    }

    fn remove_rmap_pmd(&self) -> Result<(), Errno> {
        SysFolio::remove_rmap_pmd(self)
    }
}

/// The map counts of a device folio live in `struct page` words, as the
/// kernel keeps them: each page's `_mapcount`; for a large folio,
/// `_large_mapcount` (low half of page\[1\] word 2) and `_entire_mapcount`
/// (low half of page\[1\] word 3).
impl FolioOps for Folio<'_> {
    fn nr_pages(&self) -> u64 {
        Folio::nr_pages(*self).get()
    }

    fn order(&self) -> Order {
        Folio::order(*self)
    }

    fn frame(&self, n: u64) -> Option<PageFrame> {
        self.offset().checked_add(PageCount::new(n)).map(Into::into)
    }

    fn refcount(&self) -> i64 {
        i64::from(self.ref_count())
    }

    fn get(&self) {
        folio_get(*self);
    }

    fn put(&self) {
        folio_put(*self);
    }

    fn trylock(&self) -> bool {
        Folio::trylock(*self)
    }

    fn unlock(&self) {
        Folio::unlock(*self);
    }

    fn is_locked(&self) -> bool {
        self.test_locked()
    }

    fn mapcount(&self) -> i64 {
        if Folio::is_large(*self) {
            self.nth_page(1)
                .map_or(0, |p1| i64::from(low_i32(&p1, word::ZONE_DEVICE_DATA)) + 1)
        } else {
            i64::from(self.page().raw_mapcount()) + 1
        }
    }

    fn page_pte_mapcount(&self, n: u64) -> Option<i64> {
        let p = self.nth_page(usize::try_from(n).ok()?)?;
        (n < FolioOps::nr_pages(self)).then(|| i64::from(p.raw_mapcount()) + 1)
    }

    fn entire_mapcount(&self) -> i64 {
        if Folio::is_large(*self) {
            self.nth_page(1)
                .map_or(0, |p1| i64::from(low_i32(&p1, word::MAPPING)) + 1)
        } else {
            0
        }
    }

    fn index(&self) -> u64 {
        self.page().raw(word::INDEX)
    }

    fn anon_id(&self) -> Option<u64> {
        self.test_anon().then(|| self.mapping() >> 1)
    }

    fn set_anon(&self, id: u64, index: u64) {
        self.set_mapping(id << 1 | PAGE_MAPPING_ANON);
        self.page().set_raw(word::INDEX, index);
    }

    fn mark_dirty(&self) {
        self.page().set_flag(PG_DIRTY);
    }

    fn add_rmap_ptes(&self, first: u64, nr: u64) -> Result<(), Errno> {
        dev_rmap_ptes(*self, first, nr, 1)
    }

    fn remove_rmap_ptes(&self, first: u64, nr: u64) -> Result<(), Errno> {
        dev_rmap_ptes(*self, first, nr, -1)
    }

    fn add_rmap_pmd(&self) -> Result<(), Errno> {
        dev_rmap_pmd(*self, 1)
    }

    fn remove_rmap_pmd(&self) -> Result<(), Errno> {
        dev_rmap_pmd(*self, -1)
    }
}

/// A folio in system RAM or in device-private memory. It dereferences to
/// [`FolioOps`], so every folio helper is called on it directly.
///
/// Kernel: `struct folio *` (either `folio_is_device_private()` or not, main).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum AnyFolio<'a> {
    /// A system RAM folio.
    Sys(SysFolio<'a>),
    /// A device-private folio.
    Dev(Folio<'a>),
}

impl<'a> Deref for AnyFolio<'a> {
    type Target = dyn FolioOps + 'a;

    fn deref(&self) -> &Self::Target {
        match self {
            AnyFolio::Sys(f) => f,
            AnyFolio::Dev(f) => f,
        }
    }
}

impl fmt::Debug for AnyFolio<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnyFolio::Sys(s) => s.fmt(f),
            AnyFolio::Dev(d) => f
                .debug_struct("DevFolio")
                .field("offset", &self.frame(0))
                .field("order", &d.order().get())
                .field("refcount", &d.ref_count())
                .finish(),
        }
    }
}

impl AnyFolio<'_> {
    /// `true` for a device-private folio.
    ///
    /// Kernel: `folio_is_device_private()` (main).
    pub fn is_device_private(&self) -> bool {
        matches!(self, AnyFolio::Dev(_))
    }
}

/// The folio and page index within it that back `frame`: a system page by
/// pfn, a device-private page by offset.
///
/// Kernel: `pfn_to_page()` / `softleaf_to_page()` / `migrate_pfn_to_page()`
/// followed by `page_folio()` (7.0).
///
/// # Differences from the kernel
///
/// `None` for a free system page, a pfn outside `sys`, or an offset no
/// pagemap holds (the device lookup also `WARN`s); the kernel would return
/// a `struct page` regardless.
pub fn frame_to_folio<'g>(
    sys: &'g SystemMemory,
    guard: &'g SpaceReadGuard<'_>,
    frame: PageFrame,
) -> Option<(AnyFolio<'g>, u64)> {
    match frame {
        PageFrame::Pfn(pfn) => {
            let f = sys.pfn_folio(pfn)?;
            Some((AnyFolio::Sys(f), pfn.checked_offset_from(f.pfn())?.get()))
        }
        PageFrame::DevicePrivate(off) => {
            let page = guard.device_private_offset_to_page(off)?;
            let folio = page.folio();
            let n = page.index().checked_sub(folio.page().index())?;
            Some((AnyFolio::Dev(folio), n as u64))
        }
    }
}

/// The low (signed) half of a page word: `_mapcount`-style counters.
fn low_i32(p: &Page, w: usize) -> i32 {
    let v = u32::try_from(p.raw(w) & 0xffff_ffff).unwrap_or(0);
    i32::from_ne_bytes(v.to_ne_bytes())
}

fn set_low_i32(p: &Page, w: usize, v: i32) {
    let hi = p.raw(w) & !0xffff_ffff;
    p.set_raw(w, hi | u64::from(u32::from_ne_bytes(v.to_ne_bytes())));
}

/// Adds `delta` to a low-half counter; `Err` if it would drop below −1.
fn add_low_i32(p: &Page, w: usize, delta: i32) -> Result<(), Errno> {
    let now = low_i32(p, w).checked_add(delta).ok_or(Errno::EINVAL)?;
    if now < -1 {
        return Err(Errno::EINVAL);
    }
    set_low_i32(p, w, now);
    Ok(())
}

/// PTE rmap of a device folio: each page's `_mapcount`, plus
/// `_large_mapcount` (low half of page\[1\] word 2) for a large folio.
fn dev_rmap_ptes(f: Folio<'_>, first: u64, nr: u64, delta: i32) -> Result<(), Errno> {
    let end = first.checked_add(nr).ok_or(Errno::EINVAL)?;
    if nr == 0 || end > f.nr_pages().get() {
        return Err(Errno::EINVAL);
    }
    let pages = (first..end)
        .map(|n| usize::try_from(n).ok().and_then(|n| f.nth_page(n)))
        .collect::<Option<Vec<_>>>()
        .ok_or(Errno::EINVAL)?;
    if delta < 0 && pages.iter().any(|p| p.raw_mapcount() < 0) {
        return Err(Errno::EINVAL);
    }
    for p in &pages {
        p.set_raw_mapcount(p.raw_mapcount() + delta);
    }
    if f.is_large()
        && let Some(p1) = f.nth_page(1)
    {
        let n = i32::try_from(nr).map_err(|_| Errno::EINVAL)?;
        add_low_i32(&p1, word::ZONE_DEVICE_DATA, n * delta)?;
    }
    Ok(())
}

/// PMD rmap of a device folio: `_entire_mapcount` (page\[1\] word 3) and
/// `_large_mapcount`.
fn dev_rmap_pmd(f: Folio<'_>, delta: i32) -> Result<(), Errno> {
    if f.order() != Order::HPAGE_PMD {
        return Err(Errno::EINVAL);
    }
    let p1 = f.nth_page(1).ok_or(Errno::EINVAL)?;
    if delta < 0 && low_i32(&p1, word::MAPPING) < 0 {
        return Err(Errno::EINVAL);
    }
    add_low_i32(&p1, word::MAPPING, delta)?;
    add_low_i32(&p1, word::ZONE_DEVICE_DATA, delta)
}
