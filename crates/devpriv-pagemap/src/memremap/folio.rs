//! Allocation and free of device-private folios.
//!
//! Kernel: `zone_device_page_init()`, `zone_device_folio_init()`,
//! `free_zone_device_folio()`, `zone_device_private_split_cb()`,
//! `mm/memremap.c` and `include/linux/memremap.h` (7.0; the free path as
//! fixed by 399289849560, 7.0.y/7.1); `folio_get()` / `folio_put()`,
//! `include/linux/mm.h`.
//!
//! A driver hands out `2^order` free pages (refcount 0) of its pagemap with
//! [`zone_device_folio_init`]; the folio comes back with refcount 1, locked,
//! compound if `order > 0`, and holding `2^order` references on the
//! pagemap. When its last reference is dropped ([`folio_put`]),
//! [`free_zone_device_folio`] gives the pages back to the driver
//! (`ops.folio_free`) and drops those references.
//!
//! # Reinit policies
//!
//! A freed large folio stays compound in `struct page` memory, and drivers
//! reuse its pages at other orders and offsets (Xe's DRM-buddy VRAM
//! allocator, `devpriv_drivers::xe_pool`). Who undoes the old metadata is
//! the pagemap's [`ReinitPolicy`]:
//!
//! | policy | `zone_device_page_init` | `free_zone_device_folio` |
//! |---|---|---|
//! | [`AtAlloc`](ReinitPolicy::AtAlloc) (merged, 7.0) | resets every page it hands out, using the `pgmap` argument | `mapping = NULL`, anon-exclusive cleared; nothing else |
//! | [`AtFree`](ReinitPolicy::AtFree) (free-time sketch of 2026-01-07, never merged) | the 6.19 body: no reset, pgmap read from the page | also undoes the compound state, then `smp_wmb()` (a `Release` fence) before `folio_free` |
//! | [`None`](ReinitPolicy::None) (6.19) | the 6.19 body | as `AtAlloc` |
//!
//! The per-page reset of `AtAlloc` writes only the pages being handed out
//! (the write set of `zone_device_page_init(p, order)` is exactly
//! `[p, p + 2^order)`), reads none of their stale metadata, and never
//! touches the old head. Two threads can therefore initialise disjoint
//! sub-ranges of one old folio at the same time (hazard H5).
//!
//! Struct-page words are written with plain (`Relaxed`) stores, as C writes
//! them: the caller owns the pages. `AtFree` is the one place where pages
//! change hands right after being written, hence its fence.

use super::{DevPagemap, FreePath, ReinitPolicy};
use crate::mm_types::{Folio, Page, PageRef, WouldBlock, reset_order_byte_of, word};
use crate::page_alloc::{prep_compound_head_page, prep_compound_page, prep_compound_tail};
use crate::page_flags::{
    FOLIO_ORDER_MASK, PAGE_FLAGS_CHECK_AT_PREP, PAGE_FLAGS_SECOND, PG_ANON_EXCLUSIVE, ZONE_DEVICE,
    flags_zone,
};
use devpriv_core::mutant::Mutant;
use devpriv_core::sync::atomic::{Ordering, fence};
use devpriv_core::{Errno, MAX_ORDER_NR_PAGES, Order, warn_on, warn_on_once};
use std::fmt;

/// The low 32 bits of `memcg_data`: where `_nr_pages` lives on page\[1\].
const NR_PAGES_ALIAS: u64 = 0xffff_ffff;

/// Why [`zone_device_page_init`] handed out no folio.
///
/// Kernel: none. The kernel function returns `void`: it cannot fail, and
/// on a stale `PG_locked` it sleeps forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// A bad argument (`EINVAL`); nothing was written.
    Errno(Errno),
    /// `lock_page()` found `PG_locked` already set on the new head: the
    /// kernel would sleep here, forever if the bit is stale (hazard H1).
    WouldBlock(WouldBlock),
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitError::Errno(e) => write!(f, "zone_device_page_init(): {e}"),
            InitError::WouldBlock(w) => write!(f, "zone_device_page_init(): {w}"),
        }
    }
}

impl std::error::Error for InitError {}

impl From<Errno> for InitError {
    fn from(e: Errno) -> Self {
        InitError::Errno(e)
    }
}

impl From<InitError> for Errno {
    /// `WouldBlock` becomes `EAGAIN` (`EWOULDBLOCK` on Linux).
    fn from(e: InitError) -> Self {
        match e {
            InitError::Errno(e) => e,
            InitError::WouldBlock(_) => Errno::EAGAIN,
        }
    }
}

/// Hands out `2^order` free pages starting at `page` as one folio: resets
/// each page (policy [`AtAlloc`](ReinitPolicy::AtAlloc)), takes `2^order`
/// references on `pgmap`, sets the head's refcount to 1, locks it, and
/// makes the range compound if `order > 0`.
///
/// Kernel: `zone_device_page_init(page, pgmap, order)`, `mm/memremap.c`
/// (7.0, from "[PATCH v6 1/5] `mm/zone_device`: Reinitialize large zone
/// device private folios", 2026-01-16).
///
/// Steps, for policy `AtAlloc`:
///
/// 1. `WARN` if `order > MAX_ORDER_NR_PAGES`. This compares an order with a
///    page count (1024), exactly as the kernel does, so it never fires:
///    orders 10 and 11 are accepted (hazard H17).
/// 2. For each of the `2^order` pages: clear the low byte of `flags`
///    (stale order, `PG_head`, `PG_locked`, `PG_waiters`); zero the low 32
///    bits of `memcg_data` (a stale `_nr_pages`), in this page only; clear
///    `mapping`; write `pgmap` into word 1 (removing any tail link); clear
///    `share` (word 4); `WARN` if the refcount is not 0 or the page is not
///    `ZONE_DEVICE`. No other word and no upper flag bit is touched
///    (hazard H16).
/// 3. `tryget_many(2^order)` on `pgmap`'s ref; `WARN` if it fails (the
///    kernel's "allocating pages after `memunmap_pages()`" warning) and
///    carry on.
/// 4. Head refcount = 1.
/// 5. `lock_page(head)`.
/// 6. `prep_compound_page()` if `order > 0`.
///
/// Under [`AtFree`](ReinitPolicy::AtFree) and [`None`](ReinitPolicy::None)
/// step 2 is skipped and step 3 reads the pagemap from the page
/// (`page_pgmap(page)`), as the 6.19 `zone_device_page_init(page, order)`
/// did; `pgmap` is then only checked against the page's array.
///
/// Precondition (the kernel's, not checked): the caller exclusively owns
/// the `2^order` pages, all with refcount 0.
///
/// Returns the folio `page_folio(page)` names afterwards: `page` itself,
/// unless under policy `None` a stale tail link survived (hazard H4).
///
/// # Differences from the kernel
///
/// - `lock_page()` cannot sleep in the model. When `PG_locked` is already
///   set (a stale bit, hazard H1) this returns
///   [`InitError::WouldBlock`] where the kernel would hang, after undoing
///   the references and the refcount it took so that the caller can carry
///   on (and the pagemap can still be torn down).
/// - `lock_page()` takes the page's own lock bit (the model's
///   [`Page::lock`]); the 6.19 kernel's went through `page_folio()`, so
///   under policy `None` a stale tail would have locked the old head
///   instead. Either way the page hands out a folio that is not sane.
/// - The refcount and zone `WARN`s are `WARN_ON_ONCE`-style (printed once,
///   every hit counted), not one line per page.
///
/// # Errors
///
/// - `EINVAL` (with a `WARN`), nothing written: `pgmap` is not the pagemap
///   whose array holds `page`; the `2^order` pages do not all lie in that
///   array (the model's own bound: the kernel would write past it); or,
///   under `AtFree`/`None`, `page_pgmap(page)` does not resolve (the kernel
///   would dereference a bad pointer).
/// - [`InitError::WouldBlock`]: see above.
///
/// # Examples
///
/// ```
/// use devpriv_core::{Order, PageCount};
/// use devpriv_pagemap::{
///     DevicePrivateSpace, Folio, NoopOps, Owner, PageRef, PagemapParams, folio_get, folio_put,
///     zone_device_folio_init, zone_device_page_init,
/// };
/// use std::sync::Arc;
///
/// let space = DevicePrivateSpace::new();
/// let params = PagemapParams::private(PageCount::new(512), Owner(1), Arc::new(NoopOps));
/// let pgmap = space.memremap_device_private_pagemap(params, 0)?;
/// // The driver's allocator hands out page 3 as an order-0 folio.
/// let folio = zone_device_page_init(PageRef::new(&pgmap, 3).unwrap(), &pgmap, Order::ZERO)?;
/// assert_eq!((folio.ref_count(), folio.test_locked()), (1, true));
/// assert_eq!(pgmap.percpu_ref().count(), 2, "the initial reference and the page's");
/// folio.unlock();
/// folio_put(folio); // Back to the driver through `ops.folio_free`.
/// assert_eq!(pgmap.percpu_ref().count(), 1);
/// # space.memunmap_device_private_pagemap(&pgmap)?;
/// # Ok::<(), devpriv_core::Errno>(())
/// ```
pub fn zone_device_page_init<'g>(
    page: PageRef<'g>,
    pgmap: &DevPagemap,
    order: Order,
) -> Result<Folio<'g>, InitError> {
    init(page, pgmap, order, false)
}

/// As [`zone_device_page_init`], then marks a large folio
/// `PG_large_rmappable`.
///
/// Kernel: `zone_device_folio_init(folio, pgmap, order)`,
/// `include/linux/memremap.h` (7.0).
///
/// `folio` is the head page cast to a folio (`(struct folio *)page`): a
/// page that used to be a tail is fine.
///
/// # Errors
///
/// As for [`zone_device_page_init`].
///
/// # Examples
///
/// ```
/// use devpriv_core::{Order, PageCount};
/// use devpriv_pagemap::{
///     DevicePrivateSpace, Folio, NoopOps, Owner, PageRef, PagemapParams, folio_get, folio_put,
///     zone_device_folio_init, zone_device_page_init,
/// };
/// use std::sync::Arc;
///
/// let space = DevicePrivateSpace::new();
/// let params = PagemapParams::private(PageCount::new(512), Owner(1), Arc::new(NoopOps));
/// let pgmap = space.memremap_device_private_pagemap(params, 0)?;
/// // A PMD-sized folio at page 0 (how a driver backs a 2 MiB migration).
/// let head = Folio::from_head(PageRef::new(&pgmap, 0).unwrap());
/// let folio = zone_device_folio_init(head, &pgmap, Order::HPAGE_PMD)?;
/// assert_eq!(folio.nr_pages(), PageCount::new(512));
/// assert!(folio.test_large_rmappable());
/// assert_eq!(PageRef::new(&pgmap, 511).unwrap().folio(), folio, "tails link to the head");
/// folio.unlock();
/// folio_put(folio);
/// # space.memunmap_device_private_pagemap(&pgmap)?;
/// # Ok::<(), devpriv_core::Errno>(())
/// ```
pub fn zone_device_folio_init<'g>(
    folio: Folio<'g>,
    pgmap: &DevPagemap,
    order: Order,
) -> Result<Folio<'g>, InitError> {
    folio_init(folio, pgmap, order, false)
}

/// `two_pass`: reset, then `prep_compound_page()`, as the kernel orders
/// them (the reference the fused pass is tested against).
fn folio_init<'g>(
    folio: Folio<'g>,
    pgmap: &DevPagemap,
    order: Order,
    two_pass: bool,
) -> Result<Folio<'g>, InitError> {
    let f = init(folio.page(), pgmap, order, two_pass)?;
    if order != Order::ZERO {
        Folio::from_head(folio.page()).set_large_rmappable();
    }
    Ok(f)
}

fn init<'g>(
    page: PageRef<'g>,
    pgmap: &DevPagemap,
    order: Order,
    two_pass: bool,
) -> Result<Folio<'g>, InitError> {
    // Step 1, as written: an order compared with a page count (H17).
    warn_on!(
        u64::from(order.get()) > MAX_ORDER_NR_PAGES,
        "zone_device_page_init(): order > MAX_ORDER_NR_PAGES"
    );
    if warn_on!(
        !std::ptr::eq(pgmap, page.owner()),
        "zone_device_page_init(): pgmap is not the page's pagemap"
    ) {
        return Err(Errno::EINVAL.into());
    }
    let nr = order.nr_pages().get();
    let start = page.index();
    let range = usize::try_from(nr)
        .ok()
        .and_then(|n| Some(start..start.checked_add(n)?))
        .filter(|r| r.end <= pgmap.pages().len());
    let Some(range) = range else {
        warn_on!(true, "zone_device_page_init(): pages beyond the pagemap");
        return Err(Errno::EINVAL.into());
    };
    match pgmap.reinit_policy() {
        ReinitPolicy::AtAlloc => reset_for_alloc(pgmap, range, order, two_pass),
        // The 6.19 body: the ref comes from page_pgmap(page), which follows
        // whatever word 1 says.
        ReinitPolicy::AtFree | ReinitPolicy::None => {
            if page.pgmap().is_none() {
                return Err(Errno::EINVAL.into());
            }
        }
    }
    let got = pgmap.refs.tryget_many(nr);
    warn_on!(
        !got,
        "zone_device_page_init(): tryget_many failed: drivers shouldn't be allocating pages after calling memunmap_pages()"
    );
    page.set_refcount(1);
    if let Err(e) = page.lock() {
        // The kernel sleeps here. Undo what this call took.
        page.set_refcount(0);
        if got {
            pgmap.refs.put_many(nr);
        }
        return Err(InitError::WouldBlock(e));
    }
    if order != Order::ZERO {
        if pgmap.reinit_policy() == ReinitPolicy::AtAlloc && !two_pass {
            // The tails were written in their final form by the reset pass.
            prep_compound_head_page(page, order);
        } else {
            prep_compound_page(page, order)?;
        }
    }
    Ok(page.folio())
}

/// Step 2 of `zone_device_page_init()`: rewrite the metadata of each page
/// in `range`, and only those.
///
/// For `order > 0` the tails are written in the form step 6
/// (`prep_compound_page()`, via `prep_compound_tail()`) leaves them —
/// `mapping = TAIL_MAPPING`, word 1 = the head link, `private = 0` — instead
/// of being reset and then rewritten: one pass over the pages instead of
/// two, and two stores fewer per tail. The caller owns the pages, so the
/// skipped intermediate state is unobservable; the final state and the
/// write set are the kernel's (tested against the two-pass order).
fn reset_for_alloc(
    pgmap: &DevPagemap,
    range: std::ops::Range<usize>,
    order: Order,
    two_pass: bool,
) {
    let all = pgmap.pages();
    let cookie = pgmap.cookie().get();
    let head = range.start;
    let link = PageRef::new(pgmap, head).map_or(0, |p| p.addr() + 1);
    let fuse = order != Order::ZERO && !two_pass;
    let resets_next_page = pgmap.mutants.has(Mutant::FolioInitResetsNextPage);
    for i in range {
        let p = &all[i];
        let flags = p.load(word::FLAGS);
        p.store(word::FLAGS, flags & !FOLIO_ORDER_MASK);
        if resets_next_page {
            // folio_reset_order((struct folio *)p): writes page p + 1.
            if let Some(next) = all.get(i + 1) {
                reset_order_byte_of(next);
            }
        } else {
            // ((struct folio *)(p - 1))->_nr_pages = 0: lands in p itself.
            let memcg = p.load(word::MEMCG_DATA);
            p.store(word::MEMCG_DATA, memcg & !NR_PAGES_ALIAS);
        }
        if fuse && i != head {
            prep_compound_tail(p, link);
        } else {
            p.store(word::MAPPING, 0);
            p.store(word::COMPOUND_HEAD, cookie);
        }
        p.store(word::INDEX, 0);
        warn_on_once!(
            p.load(word::COUNTS) >> 32 != 0,
            "zone_device_page_init(): page refcount is not 0"
        );
        warn_on_once!(
            flags_zone(flags) != ZONE_DEVICE,
            "zone_device_page_init(): not a ZONE_DEVICE page"
        );
    }
}

/// Takes a reference on a folio the caller already holds one on.
///
/// Kernel: `folio_get()`, `include/linux/mm.h` (main).
///
/// # Differences from the kernel
///
/// A get on a folio whose count was 0 takes a `WARN` (the kernel's
/// `VM_BUG_ON_FOLIO`) and still counts.
///
/// # Examples
///
/// ```
/// use devpriv_core::{Order, PageCount};
/// use devpriv_pagemap::{
///     DevicePrivateSpace, Folio, NoopOps, Owner, PageRef, PagemapParams, folio_get, folio_put,
///     zone_device_folio_init, zone_device_page_init,
/// };
/// use std::sync::Arc;
///
/// let space = DevicePrivateSpace::new();
/// let params = PagemapParams::private(PageCount::new(512), Owner(1), Arc::new(NoopOps));
/// let pgmap = space.memremap_device_private_pagemap(params, 0)?;
/// let folio = zone_device_page_init(PageRef::new(&pgmap, 0).unwrap(), &pgmap, Order::ZERO)?;
/// folio.unlock();
/// folio_get(folio); // A second user, e.g. a migration in flight.
/// assert_eq!(folio.ref_count(), 2);
/// folio_put(folio);
/// folio_put(folio);
/// # space.memunmap_device_private_pagemap(&pgmap)?;
/// # Ok::<(), devpriv_core::Errno>(())
/// ```
pub fn folio_get(folio: Folio<'_>) {
    let now = folio.page().ref_add(1);
    warn_on!(now <= 1, "folio_get(): folio refcount was 0");
}

/// Drops a reference; the last one frees the folio through
/// [`free_zone_device_folio`].
///
/// Kernel: `folio_put()`, `include/linux/mm.h` (`__folio_put()` →
/// `free_zone_device_folio()` for `ZONE_DEVICE` folios, main).
///
/// # Differences from the kernel
///
/// A put on a folio whose count is already 0 takes a `WARN` and changes
/// nothing (the kernel's `VM_BUG_ON_FOLIO`; without it the count would go
/// negative).
///
/// # Examples
///
/// ```
/// use devpriv_core::{Order, PageCount};
/// use devpriv_pagemap::{
///     DevicePrivateSpace, Folio, NoopOps, Owner, PageRef, PagemapParams, folio_get, folio_put,
///     zone_device_folio_init, zone_device_page_init,
/// };
/// use std::sync::Arc;
///
/// let space = DevicePrivateSpace::new();
/// let params = PagemapParams::private(PageCount::new(512), Owner(1), Arc::new(NoopOps));
/// let pgmap = space.memremap_device_private_pagemap(params, 0)?;
/// let folio = zone_device_page_init(PageRef::new(&pgmap, 0).unwrap(), &pgmap, Order::ZERO)?;
/// folio.unlock();
/// folio_put(folio); // The last reference: the folio goes back to the driver.
/// assert_eq!(folio.ref_count(), 0);
/// assert_eq!(pgmap.percpu_ref().count(), 1, "only the initial reference is left");
/// space.memunmap_device_private_pagemap(&pgmap)?; // Nothing allocated: no wait.
/// # Ok::<(), devpriv_core::Errno>(())
/// ```
pub fn folio_put(folio: Folio<'_>) {
    // AcqRel: a non-last putter's writes to the folio are released to the
    // last putter, whose `folio_free` may read them (and hand the pages on).
    let order = if folio.page().owner().mutants.has(Mutant::FolioRefRelaxed) {
        Ordering::Relaxed
    } else {
        Ordering::AcqRel
    };
    let now = folio.page().ref_add_ordered(-1, order);
    if now == 0 {
        free_zone_device_folio(folio);
    } else if warn_on!(now < 0, "folio_put(): folio refcount was 0") {
        folio.page().ref_add(1);
    }
}

/// Frees a `ZONE_DEVICE` folio whose refcount has reached 0: clears
/// anon-exclusive on every page (if anon) and `mapping`, calls the driver's
/// `folio_free`, then drops the `folio_nr_pages()` pagemap references the
/// allocation took.
///
/// Kernel: `free_zone_device_folio()`, `mm/memremap.c`, as fixed by
/// 399289849560 ("`mm/zone_device`: do not touch device folio after calling
/// ->`folio_free()`", April 2026, in 7.0.y stable and 7.1): `pgmap` and `nr`
/// are read at entry, and the references are dropped on that `pgmap`, not
/// on `folio->pgmap` re-read after `folio_free`. 7.0-rc6 re-read it; a
/// pagemap set to [`FreePath::V7_0`] does that (hazard H19,
/// `docs/hazards.md`).
///
/// Under [`ReinitPolicy::AtAlloc`] and [`ReinitPolicy::None`] nothing else
/// is written: `folio_free` receives the folio still compound (order and
/// `_nr_pages` intact). Under [`ReinitPolicy::AtFree`] (the free-time reset
/// Matthew Brost sketched on 2026-01-07, never merged) a large folio is
/// first taken apart: page\[1\] loses `PAGE_FLAGS_SECOND` and `_nr_pages`;
/// every tail gets `mapping = NULL`, `PAGE_FLAGS_CHECK_AT_PREP` cleared and
/// the pgmap back in word 1; the head loses `PAGE_FLAGS_CHECK_AT_PREP`;
/// then a `Release` fence (`smp_wmb()`) orders all of it before
/// `folio_free` hands the pages to the driver's allocator, from which
/// another CPU may take them at once (hazard H6).
///
/// # Differences from the kernel
///
/// - Only `MEMORY_DEVICE_PRIVATE` pagemaps exist in the model, so only that
///   branch is modelled; `mem_cgroup_uncharge()` is not modelled.
/// - No pgmap (word 1 of the head does not name the page's pagemap) takes
///   a `WARN` and returns, as in the kernel. A tail page passed as the
///   folio counts as having none: the kernel's `folio->pgmap` would read
///   the tail's word 1, the head link.
/// - `_nr_pages` pointing past the pages array (corrupt metadata) takes a
///   `WARN`; only the pages in the array are touched, and `nr` references
///   are still dropped, as the kernel would.
/// - Under `AtFree`, `folio_free` sees the folio already reset (order 0):
///   a driver must know the order itself (the never-merged v4
///   `folio_free(folio, order)`). The sketch also clears `PG_reserved`
///   (part of `PAGE_FLAGS_CHECK_AT_PREP`), which the model keeps as
///   written.
/// - Under [`FreePath::V7_0`], a re-read word 1 that is not the pagemap
///   takes a `WARN` and drops nothing, where the kernel would write through
///   a bad pointer.
pub fn free_zone_device_folio(folio: Folio<'_>) {
    let Some(pgmap) = folio.pgmap().filter(|_| !folio.page().is_tail()) else {
        warn_on!(true, "free_zone_device_folio(): folio has no pgmap");
        return;
    };
    let nr = folio.nr_pages().get();
    let start = folio.page().index();
    let all = pgmap.pages();
    let end = usize::try_from(nr)
        .ok()
        .and_then(|n| start.checked_add(n))
        .unwrap_or(usize::MAX);
    let end = if warn_on!(
        end > all.len(),
        "free_zone_device_folio(): folio_nr_pages() runs past the pagemap"
    ) {
        all.len()
    } else {
        end
    };
    let pages = &all[start..end];
    if folio.test_anon() {
        for p in pages {
            // __ClearPageAnonExclusive(): non-atomic, the folio is ours.
            p.store(word::FLAGS, p.load(word::FLAGS) & !(1 << PG_ANON_EXCLUSIVE));
        }
    }
    if pgmap.mutants.has(Mutant::FolioFreeBeforeClear) {
        pgmap.ops.folio_free(folio);
        folio.page().store(word::MAPPING, 0);
        pgmap.refs.put_many(nr);
        return;
    }
    folio.page().store(word::MAPPING, 0);
    if pgmap.reinit_policy() == ReinitPolicy::AtFree {
        reset_at_free(pages, pgmap.cookie().get());
        if !pgmap.mutants.has(Mutant::FolioFreeNoBarrier) {
            // smp_wmb(): the reset must be visible before the driver can
            // hand these pages to another CPU.
            fence(Ordering::Release);
        }
    }
    if pgmap.mutants.has(Mutant::FolioPutBeforeFolioFree) {
        pgmap.refs.put_many(nr);
        pgmap.ops.folio_free(folio);
        return;
    }
    pgmap.ops.folio_free(folio);
    match pgmap.free_path() {
        FreePath::Fixed => pgmap.refs.put_many(nr),
        FreePath::V7_0 => put_through_the_freed_folio(folio, pgmap, nr),
    }
}

/// 7.0-rc6's last line, `percpu_ref_put_many(&folio->pgmap->ref, nr)`: word
/// 1 of the folio, read after `folio_free` gave the pages away. The only
/// pagemap it can name is the page's own; anything else (a tail link of a
/// folio the driver has built over the page since) is what the kernel would
/// dereference as a `struct dev_pagemap`.
fn put_through_the_freed_folio(folio: Folio<'_>, pgmap: &DevPagemap, nr: u64) {
    if warn_on!(
        folio.page().load(word::COMPOUND_HEAD) != pgmap.cookie().get(),
        "free_zone_device_folio(): folio->pgmap is not a pagemap (folio reused after folio_free)"
    ) {
        return;
    }
    pgmap.refs.put_many(nr);
}

/// The free-time reset Matthew Brost sketched on 2026-01-07 (never
/// merged), for a large folio.
fn reset_at_free(pages: &[Page], cookie: u64) {
    let [head, tails @ ..] = pages else {
        return;
    };
    let Some(p1) = tails.first() else {
        return;
    };
    p1.store(word::FLAGS, p1.load(word::FLAGS) & !PAGE_FLAGS_SECOND);
    p1.store(
        word::MEMCG_DATA,
        p1.load(word::MEMCG_DATA) & !NR_PAGES_ALIAS,
    );
    for t in tails {
        t.store(word::MAPPING, 0);
        t.store(word::FLAGS, t.load(word::FLAGS) & !PAGE_FLAGS_CHECK_AT_PREP);
        t.store(word::COMPOUND_HEAD, cookie);
    }
    head.store(
        word::FLAGS,
        head.load(word::FLAGS) & !PAGE_FLAGS_CHECK_AT_PREP,
    );
}

/// The device-private step of a split, for one new folio (`new`) or, with
/// `None`, once at the end: without a driver `folio_split` op, copies the
/// pgmap and `mapping` of `orig` into `new`; with one, leaves it to the
/// driver, which must restore `new`'s pgmap itself — before anything reads
/// it (hazard H10: the split's `clear_compound_head()` zeroed it).
///
/// Kernel: `zone_device_private_split_cb()`, `mm/memremap.c` (7.0).
///
/// # Differences from the kernel
///
/// An `orig` without a readable pgmap takes a `WARN` and does nothing (the
/// kernel would dereference it).
pub fn zone_device_private_split_cb(orig: Folio<'_>, new: Option<Folio<'_>>) {
    let Some(pgmap) = orig.pgmap() else {
        warn_on!(
            true,
            "zone_device_private_split_cb(): original has no pgmap"
        );
        return;
    };
    if pgmap.ops.has_folio_split() {
        pgmap.ops.folio_split(orig, new);
    } else if let Some(new) = new {
        new.set_pgmap(pgmap);
        new.set_mapping(orig.mapping());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memremap::{DevicePrivateSpace, NoopOps, Owner, PagemapParams};
    use devpriv_core::PageCount;
    use std::sync::Arc;

    fn pagemap(space: &DevicePrivateSpace) -> Arc<DevPagemap> {
        let params = PagemapParams::private(PageCount::new(1024), Owner(1), Arc::new(NoopOps));
        space.memremap_device_private_pagemap(params, 0).unwrap()
    }

    /// Every word of every page, with addresses inside the pages array
    /// made relative to it (two pagemaps live at different addresses).
    fn image(pm: &DevPagemap) -> Vec<[u64; 8]> {
        let base = pm.cookie().get();
        let end = base + 64 * pm.pages().len() as u64;
        pm.pages()
            .iter()
            .map(|p| {
                p.words().map(|w| {
                    if (base..=end).contains(&w) {
                        w - base
                    } else {
                        w
                    }
                })
            })
            .collect()
    }

    fn alloc(pm: &DevPagemap, at: usize, order: u32, two_pass: bool) -> Folio<'_> {
        let page = PageRef::new(pm, at).unwrap();
        let f = folio_init(page.folio(), pm, Order::new(order).unwrap(), two_pass).unwrap();
        f.unlock();
        f
    }

    /// The fused reset + tail pass leaves exactly what the kernel's reset
    /// followed by `prep_compound_page()` leaves, over stale metadata of
    /// several old orders.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "minutes under Miri (whole-array images); logic only, no unsafe"
    )]
    fn fused_reset_equals_reset_then_prep() {
        let space = DevicePrivateSpace::new();
        let (a, b) = (pagemap(&space), pagemap(&space));
        for (old, new, at) in [
            (9, 4, 16),
            (9, 0, 1),
            (9, 2, 5 * 4),
            (4, 9, 0),
            (2, 1, 2),
            (9, 9, 0),
        ] {
            for (pm, two_pass) in [(&a, false), (&b, true)] {
                folio_put(alloc(pm, 0, old, two_pass));
                folio_put(alloc(pm, at, new, two_pass));
            }
            assert_eq!(
                image(&a),
                image(&b),
                "old order {old}, new order {new} at {at}"
            );
        }
    }
}
