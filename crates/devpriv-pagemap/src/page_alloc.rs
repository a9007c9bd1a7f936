//! Building compound (large) folios out of pages.
//!
//! Kernel: `prep_compound_page()`, `prep_compound_head()`,
//! `prep_compound_tail()`, `mm/page_alloc.c` and `mm/internal.h` (main).
//!
//! What a large folio leaves in its pages (x86-64, `CONFIG_MEMCG`,
//! `CONFIG_MM_ID`, `CONFIG_PAGE_MAPCOUNT`), which is what a later reuse at
//! another order has to undo:
//!
//! | page | words written |
//! |---|---|
//! | head | `PG_head` in `flags` |
//! | every tail | word 1 = head + 1, `mapping` = `TAIL_MAPPING`, `private` = 0 |
//! | page\[1\] | order in the low `flags` byte; `_nr_pages` (low half of `memcg_data`); `_large_mapcount` −1 and `_nr_pages_mapped` 0 (word 2); `_entire_mapcount` −1 and `_pincount` 0 (word 3, over `TAIL_MAPPING`); `_mm_id_mapcount` {−1, −1} (word 4); `_mm_ids` 0 (word 5) |
//! | page\[2\] (order > 1) | `_deferred_list` pointing at itself (words 2 and 3) |

use crate::mm_types::{Folio, Page, PageRef, TAIL_MAPPING, word};
use crate::page_flags::PG_HEAD;
use devpriv_core::{Errno, Order, warn_on};

/// `_large_mapcount` = −1 (low half) and `_nr_pages_mapped` = 0 (high half).
const LARGE_MAPCOUNT_INIT: u64 = 0x0000_0000_ffff_ffff;
/// `_entire_mapcount` = −1 (low half) and `_pincount` = 0 (high half).
const ENTIRE_MAPCOUNT_INIT: u64 = 0x0000_0000_ffff_ffff;
/// `_mm_id_mapcount[0]` = `_mm_id_mapcount[1]` = −1.
const MM_ID_MAPCOUNT_INIT: u64 = u64::MAX;

/// Makes `tail` a tail of the head whose link (address + 1) is `link`.
///
/// Kernel: `prep_compound_tail()`, `mm/internal.h` (main).
pub(crate) fn prep_compound_tail(tail: &Page, link: u64) {
    tail.store(word::MAPPING, TAIL_MAPPING);
    // set_compound_head()
    tail.store(word::COMPOUND_HEAD, link);
    tail.store(word::PRIVATE, 0);
}

/// Writes the folio fields that live in page\[1\] and page\[2\].
///
/// Kernel: `prep_compound_head()`, `mm/internal.h` (main).
fn prep_compound_head(head: PageRef<'_>, order: Order) {
    let folio = Folio::from_head(head);
    folio.set_order(order);
    if let Some(p1) = head.nth(1) {
        p1.store(word::ZONE_DEVICE_DATA, LARGE_MAPCOUNT_INIT);
        p1.store(word::MAPPING, ENTIRE_MAPCOUNT_INIT);
        p1.store(word::INDEX, MM_ID_MAPCOUNT_INIT);
        p1.store(word::PRIVATE, 0);
    }
    if order.get() > 1
        && let Some(p2) = head.nth(2)
    {
        // INIT_LIST_HEAD(&folio->_deferred_list): both pointers at the
        // list head itself, which is word 2 of page[2].
        let list = p2.addr() + (word::ZONE_DEVICE_DATA as u64) * 8;
        p2.store(word::ZONE_DEVICE_DATA, list);
        p2.store(word::MAPPING, list);
    }
}

/// Turns `2^order` pages starting at `page` into one large folio headed by
/// `page`: sets `PG_head`, links every tail to the head, then writes the
/// order, `_nr_pages` and the mapcounts into page\[1\] (and the deferred
/// list into page\[2\]).
///
/// Kernel: `prep_compound_page()`, `mm/page_alloc.c` (main).
///
/// The write set is exactly the `2^order` pages; the head's word 1 (the
/// pgmap of a `ZONE_DEVICE` folio) is not touched.
///
/// # Differences from the kernel
///
/// The kernel trusts its caller. The model checks the range first and
/// writes nothing if it is bad.
///
/// # Errors
///
/// `EINVAL` (with a `WARN`) if `order` is 0 (the kernel's
/// `folio_set_order()` would WARN half-way through) or the pages do not all
/// lie in `page`'s pages array.
pub fn prep_compound_page(page: PageRef<'_>, order: Order) -> Result<Folio<'_>, Errno> {
    let nr = usize::try_from(order.nr_pages().get()).map_err(|_| Errno::EINVAL)?;
    let fits = page
        .index()
        .checked_add(nr)
        .is_some_and(|end| end <= page.owner().pages().len());
    if warn_on!(
        order == Order::ZERO || !fits,
        "prep_compound_page(): order 0 or pages beyond the array"
    ) {
        return Err(Errno::EINVAL);
    }
    // __SetPageHead(): a plain store, the caller owns the pages.
    page.store(word::FLAGS, page.load(word::FLAGS) | 1 << PG_HEAD);
    let start = page.index();
    let link = page.addr() + 1;
    for tail in &page.owner().pages()[start + 1..start + nr] {
        prep_compound_tail(tail, link);
    }
    prep_compound_head(page, order);
    Ok(Folio::from_head(page))
}

/// [`prep_compound_page`] without the tail loop: `PG_head` on the head,
/// then the folio fields of page\[1\] and page\[2\]. For a caller that has
/// already written every tail as [`prep_compound_tail`] does, and checked
/// the range.
pub(crate) fn prep_compound_head_page(page: PageRef<'_>, order: Order) -> Folio<'_> {
    page.store(word::FLAGS, page.load(word::FLAGS) | 1 << PG_HEAD);
    prep_compound_head(page, order);
    Folio::from_head(page)
}
