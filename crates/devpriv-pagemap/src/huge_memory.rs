//! Splitting device-private folios.
//!
//! Kernel: `__split_unmapped_folio()`, `__split_folio_to_order()`,
//! `folio_split_unmapped()`, `mm/huge_memory.c` (7.0); and the never-merged
//! `migrate_device_split_page()` ("[PATCH 1/4] mm/migrate: Add
//! `migrate_device_split_page`", Matthew Brost, 2025-12-16).
//!
//! A split rewrites the metadata of every new head: it clears the new
//! head's flags, copies a fixed set of flags (including `PG_locked`) and
//! `mapping`/`index` from the original, then — after an `smp_wmb()` — makes
//! it a non-tail with `clear_compound_head()`. For a `ZONE_DEVICE` folio
//! that last store also **erases the pgmap** in word 1, so every new folio
//! other than the first has no pgmap until `zone_device_private_split_cb()`
//! (or the driver's `folio_split` op) puts it back. Anything that reads
//! `page_pgmap()` on a new folio before that — `device_private_folio_to_offset()`
//! in a driver callback, say — gets nothing (hazard H10).
//!
//! # Differences from the kernel
//!
//! - Only the uniform split (`SPLIT_TYPE_UNIFORM`) is modelled; the
//!   non-uniform (buddy) split that halves around `split_at` is not.
//! - No xarray, page cache, swap cache, LRU, memcg or `page_owner`
//!   bookkeeping: device-private folios have none of it.
//! - The young/idle copies are not modelled (the model has no such bits),
//!   nor is the `last_cpupid` copy: every device page keeps the all-ones
//!   value it was mapped with, so the copy would change nothing.
//!   `memcg_data` is copied as a whole word.

use crate::memremap::zone_device_private_split_cb;
use crate::mm_types::{Folio, PageRef, word};
use crate::page_alloc::prep_compound_page;
use crate::page_flags::{
    PAGE_FLAGS_CHECK_AT_PREP, PG_ACTIVE, PG_DIRTY, PG_HEAD, PG_LOCKED, PG_MLOCKED, PG_REFERENCED,
    PG_SWAPBACKED, PG_SWAPCACHE, PG_UNEVICTABLE, PG_UPTODATE, PG_WORKINGSET,
};
use devpriv_core::sync::atomic::{Ordering, fence};
use devpriv_core::{Errno, Order, warn_on};

/// Flags every new folio inherits from the original at a split.
///
/// Kernel: the mask `__split_folio_to_order()` copies (`PG_referenced`,
/// `PG_swapbacked`, `PG_swapcache`, `PG_mlocked`, `PG_uptodate`,
/// `PG_active`, `PG_workingset`, `PG_locked`, `PG_unevictable`, `PG_dirty`;
/// the model has no `PG_arch_2`/`PG_arch_3` or LRU-generation bits, main).
pub const SPLIT_COPIED_FLAGS: u64 = 1 << PG_REFERENCED
    | 1 << PG_SWAPBACKED
    | 1 << PG_SWAPCACHE
    | 1 << PG_MLOCKED
    | 1 << PG_UPTODATE
    | 1 << PG_ACTIVE
    | 1 << PG_WORKINGSET
    | 1 << PG_LOCKED
    | 1 << PG_UNEVICTABLE
    | 1 << PG_DIRTY;

/// Splits `folio` from `old` to `new` order, in place.
///
/// Kernel: `__split_folio_to_order()`, `mm/huge_memory.c` (main).
fn split_folio_to_order(folio: Folio<'_>, old: Order, new: Order) {
    let head = folio.page();
    let nr = 1usize << old.get();
    let step = 1usize << new.get();
    let hflags = head.load(word::FLAGS);
    let mapping = head.load(word::MAPPING);
    let index = head.load(word::INDEX);
    let memcg = head.load(word::MEMCG_DATA);
    for j in (step..nr).step_by(step) {
        let Some(nh) = head.nth(j) else {
            return;
        };
        let flags = nh.load(word::FLAGS) & !PAGE_FLAGS_CHECK_AT_PREP;
        nh.store(word::FLAGS, flags | (hflags & SPLIT_COPIED_FLAGS));
        nh.store(word::MAPPING, mapping);
        nh.store(word::INDEX, index.wrapping_add(j as u64));
        // "Page flags must be visible before we make the page non-compound."
        fence(Ordering::Release);
        nh.clear_compound_head();
        if new != Order::ZERO {
            // The range was checked by the caller, so this cannot fail.
            if let Ok(f) = prep_compound_page(nh, new) {
                f.set_large_rmappable();
            }
        }
        nh.store(word::MEMCG_DATA, memcg);
    }
    if new == Order::ZERO {
        head.store(word::FLAGS, head.load(word::FLAGS) & !(1 << PG_HEAD));
    } else {
        folio.set_order(new);
    }
}

/// Checks shared by the split entry points; returns the old order.
fn check_split(folio: Folio<'_>, new_order: Order) -> Result<Order, Errno> {
    let old = folio.order();
    if warn_on!(
        !folio.is_large() || new_order >= old,
        "split: not a large folio, or new order not below the old"
    ) {
        return Err(Errno::EINVAL);
    }
    let fits = usize::try_from(old.nr_pages().get())
        .ok()
        .and_then(|n| folio.page().index().checked_add(n))
        .is_some_and(|end| end <= folio.page().owner().pages().len());
    if warn_on!(!fits, "split: folio runs past the pages array") {
        return Err(Errno::EINVAL);
    }
    Ok(old)
}

/// `true` if a uniform split of `folio` to `new_order` splits nothing:
/// `__split_unmapped_folio()` skips order 1 for anon folios ("order-1
/// anonymous folio is not supported") and, uniform, has no other order to
/// try.
fn skips_anon_order_1(folio: Folio<'_>, new_order: Order) -> bool {
    folio.test_anon() && new_order.get() == 1
}

/// Splits a locked large folio uniformly into `2^(old - new)` folios of
/// order `new_order`. Only the struct pages change: no refcount, no pgmap
/// reference and no driver callback is touched, and every new folio but
/// the first is left **without a pgmap** (word 1 = 0) — restoring it is the
/// caller's job. An anon folio split to order 1 is left as it is (`Ok`):
/// the kernel skips order 1 for anon folios, and a uniform split has no
/// other order to try.
///
/// Kernel: `__split_unmapped_folio(folio, new_order, split_at, xas,
/// mapping, SPLIT_TYPE_UNIFORM)`, `mm/huge_memory.c` (7.0; `static` there:
/// "[PATCH 1/4] mm/migrate: Add `migrate_device_split_page`", Matthew Brost,
/// 2025-12-16, proposed exporting it and was not merged).
///
/// # Differences from the kernel
///
/// Uniform split only; the kernel's `VM_BUG_ON`s become errors. The kernel
/// does not check the lock, and for `new_order == old` it is a no-op; the
/// model refuses both.
///
/// # Errors
///
/// `EINVAL` (with a `WARN`), nothing written: the folio is not large, not
/// locked, `new_order` is not below its order, or it runs past the pages
/// array.
pub fn split_unmapped_folio(folio: Folio<'_>, new_order: Order) -> Result<(), Errno> {
    if warn_on!(!folio.test_locked(), "split: folio not locked") {
        return Err(Errno::EINVAL);
    }
    let old = check_split(folio, new_order)?;
    if !skips_anon_order_1(folio, new_order) {
        split_folio_to_order(folio, old, new_order);
    }
    Ok(())
}

/// Splits an unmapped, locked, large anon device folio held by exactly one
/// reference into folios of order `new_order`, running the device-private
/// split step ([`zone_device_private_split_cb`]) for each new folio and
/// once at the end. Every new folio is locked (the split copies
/// `PG_locked`) and has refcount 1 afterwards.
///
/// Kernel: `folio_split_unmapped(folio, new_order)` →
/// `__folio_freeze_and_split_unmapped()`, `mm/huge_memory.c` (7.0).
///
/// The order is the kernel's: freeze the folio (refcount 0), split, then
/// for each new folio in address order run the callback **while that new
/// folio is still frozen** (refcount 0) and only then unfreeze it to 1;
/// finally the `(orig, None)` call, **while the original is still frozen**,
/// and then unfreeze the original to 1. A driver's `folio_split` op must
/// therefore not take references on either folio.
///
/// An anon folio split to order 1 splits nothing and still returns `Ok`,
/// after the final `(orig, None)` call: `folio_split_unmapped()` never calls
/// `folio_check_splittable()` (whose 7.0 version refuses anon order 1), and
/// `__split_unmapped_folio()` skips order 1 for anon folios.
///
/// The pagemap references are unchanged: the `2^old` pages still hold
/// `2^old` references, and each new folio's free drops its own share.
///
/// # Differences from the kernel
///
/// - The "unmapped" precondition is not checked (the model has no page
///   tables here); the freeze is a compare of the refcount with 1.
/// - The kernel only `VM_WARN`s on an unlocked, small or non-anon folio and
///   carries on, and does not check `new_order`; the model refuses those
///   calls, and `new_order >= order`, with `EINVAL`.
///
/// # Errors
///
/// - `EINVAL` (with a `WARN`): as for [`split_unmapped_folio`], or the
///   folio is not anon.
/// - `EAGAIN`: the refcount is not 1 (someone else holds a reference), as
///   when `can_split_folio()` fails.
pub fn folio_split_unmapped(folio: Folio<'_>, new_order: Order) -> Result<(), Errno> {
    if warn_on!(
        !folio.test_locked() || !folio.test_anon(),
        "folio_split_unmapped(): folio not locked or not anon"
    ) {
        return Err(Errno::EINVAL);
    }
    let old = check_split(folio, new_order)?;
    if folio.ref_count() != 1 {
        return Err(Errno::EAGAIN);
    }
    let head = folio.page();
    // folio_ref_freeze(folio, 1).
    head.set_refcount(0);
    if !skips_anon_order_1(folio, new_order) {
        split_folio_to_order(folio, old, new_order);
        let nr = 1usize << old.get();
        let step = 1usize << new_order.get();
        for j in (step..nr).step_by(step) {
            if let Some(p) = head.nth(j) {
                zone_device_private_split_cb(folio, Some(Folio::from_head(p)));
                // folio_ref_unfreeze(new_folio, folio_cache_ref_count() + 1).
                p.set_refcount(1);
            }
        }
    }
    zone_device_private_split_cb(folio, None);
    head.set_refcount(1);
    Ok(())
}

/// Splits a **free** (refcount 0) device-private large folio into order-0
/// pages so that a driver can reuse part of it, restoring each page's pgmap
/// and unlocking it.
///
/// Kernel: `migrate_device_split_page(page)`, proposed for
/// `mm/migrate_device.c` in "[PATCH 1/4] mm/migrate: Add
/// `migrate_device_split_page`" (Matthew Brost, 2025-12-16) and **never
/// merged**: it is
/// "inherently racy — only safe if the caller ensures mutual exclusion
/// within the page's folio", Matthew Wilcox objected to new uniform splits,
/// and the reset moved into `zone_device_page_init()` instead
/// ([`ReinitPolicy::AtAlloc`](crate::ReinitPolicy::AtAlloc)). Kept so that
/// tests can show why.
///
/// It writes every page of the old folio, including the old head: two
/// threads reusing different sub-ranges of one old folio through it race
/// (hazard H5), which the merged reset does not.
///
/// # Differences from the kernel
///
/// The proposal's `BUG_ON`s become errors.
///
/// # Errors
///
/// - `EINVAL` (with a `WARN`): the page's folio is not large, not
///   `ZONE_DEVICE`, or its refcount is not 0; or the split itself refuses
///   (see [`split_unmapped_folio`]).
/// - `EAGAIN`: the folio is locked (`folio_lock()` would block).
pub fn migrate_device_split_page(page: PageRef<'_>) -> Result<(), Errno> {
    let folio = page.folio();
    if warn_on!(
        !folio.is_large() || !folio.page().is_zone_device() || folio.ref_count() != 0,
        "migrate_device_split_page(): not a free large device folio"
    ) {
        return Err(Errno::EINVAL);
    }
    let Some(pgmap) = folio.pgmap() else {
        return Err(Errno::EINVAL);
    };
    let nr = usize::try_from(folio.nr_pages().get()).map_err(|_| Errno::EINVAL)?;
    folio.lock().map_err(|_| Errno::EAGAIN)?;
    if let Err(e) = split_unmapped_folio(folio, Order::ZERO) {
        folio.unlock();
        return Err(e);
    }
    for i in 0..nr {
        if let Some(p) = folio.nth_page(i) {
            let f = Folio::from_head(p);
            f.set_pgmap(pgmap);
            f.unlock();
        }
    }
    Ok(())
}
