//! The folio lifecycle of device-private pages: allocation
//! (`zone_device_page_init`), free (`folio_put` → `free_zone_device_folio`),
//! split, and the hazards of reusing freed folios (H1–H6, H10, H16, H17,
//! H19, defined in `docs/hazards.md`) under each [`ReinitPolicy`] and
//! [`FreePath`].
//!
//! Kernel: `zone_device_page_init()`, `zone_device_folio_init()`,
//! `free_zone_device_folio()` (`mm/memremap.c`, 7.0 and fix 399289849560),
//! `prep_compound_page()` (`mm/page_alloc.c`, main),
//! `folio_split_unmapped()` (`mm/huge_memory.c`, 7.0).
//!
//! Each reuse hazard is a check function `hN(policy, ..) -> Result<(), String>`
//! that returns `Err` when it sees the bug. The test then asserts that the
//! check passes under the fixed policies and **fails under
//! `ReinitPolicy::None`** (the 6.19 code), so the claim "this test catches
//! the bug" is itself tested.

use devpriv_core::sync::Mutex;
use devpriv_core::warn::capture;
use devpriv_core::{
    DevicePrivateOffset, Errno, MAX_FOLIO_ORDER, MAX_ORDER_NR_PAGES, Order, PageCount,
};
use devpriv_pagemap::mm_types::{PAGE_MAPPING_ANON, TAIL_MAPPING, word};
use devpriv_pagemap::page_flags::{
    PG_ANON_EXCLUSIVE, PG_HAS_HWPOISONED, PG_HEAD, PG_LARGE_RMAPPABLE, PG_LOCKED,
    PG_PARTIALLY_MAPPED, PG_RESERVED, PG_UPTODATE,
};
use devpriv_pagemap::{
    DevPagemap, DevPagemapOps, DevicePrivateSpace, Folio, FreePath, InitError, Owner, PageRef,
    PagemapParams, ReinitPolicy, SpaceConfig, VmFault, folio_get, folio_put, folio_split_unmapped,
    free_zone_device_folio, migrate_device_split_page, split_unmapped_folio,
    zone_device_folio_init, zone_device_page_init,
};
use proptest::prelude::*;
use std::sync::{Arc, Barrier, Weak};
use std::time::Duration;

/// What the driver's `folio_free` saw: head index, `folio_nr_pages()`,
/// `folio_order()`.
type Freed = (usize, u64, u32);

/// One split callback: the new folio's head index, the offset the driver
/// computed for it, and the `WARN`s that computation raised.
type SplitSeen = (usize, Option<DevicePrivateOffset>, usize);

/// A driver that records what the core hands it.
#[derive(Default)]
struct Driver {
    freed: Mutex<Vec<Freed>>,
    /// `Some(restore_first)`: provide a `folio_split` op that computes each
    /// new folio's offset before (`false`) or after (`true`) restoring its
    /// pgmap.
    split_op: Option<bool>,
    space: Mutex<Weak<DevicePrivateSpace>>,
    split_seen: Mutex<Vec<SplitSeen>>,
    /// Provide a `folio_split` op that restores the new folio's pgmap and
    /// mapping and records what each call saw in `split_refs`.
    record_split_refs: bool,
    split_refs: Mutex<Vec<SplitRefs>>,
}

/// One split callback as a recording driver saw it: the new folio's head
/// index and refcount (`None` for the final call) and the original's
/// refcount.
type SplitRefs = (Option<(usize, i32)>, i32);

impl DevPagemapOps for Driver {
    fn folio_free(&self, folio: Folio<'_>) {
        self.freed.lock().push((
            folio.page().index(),
            folio.nr_pages().get(),
            folio.order().get(),
        ));
    }

    fn migrate_to_ram(&self, _vmf: &VmFault<'_>) -> Result<(), Errno> {
        Ok(())
    }

    fn has_folio_split(&self) -> bool {
        self.split_op.is_some() || self.record_split_refs
    }

    fn folio_split(&self, head: Folio<'_>, tail: Option<Folio<'_>>) {
        if self.record_split_refs {
            let new = tail.map(|t| (t.page().index(), t.ref_count()));
            self.split_refs.lock().push((new, head.ref_count()));
            if let Some(t) = tail {
                t.set_pgmap(head.page().owner());
                t.set_mapping(head.mapping());
            }
            return;
        }
        let (Some(restore_first), Some(tail)) = (self.split_op, tail) else {
            return;
        };
        let pgmap = head.page().owner();
        let restore = || {
            tail.set_pgmap(pgmap);
            tail.set_mapping(head.mapping());
        };
        if restore_first {
            restore();
        }
        let space = self.space.lock().upgrade().expect("space alive");
        let (off, w) = capture(|| space.read().device_private_folio_to_offset(tail));
        if !restore_first {
            restore();
        }
        self.split_seen
            .lock()
            .push((tail.page().index(), off, w.count()));
    }
}

struct Fx {
    space: Arc<DevicePrivateSpace>,
    pm: Arc<DevPagemap>,
    drv: Arc<Driver>,
}

/// The page of an old folio that tests reuse at: not the first page of the
/// pagemap, so that `B - 1` exists as a neighbour.
const B: usize = 512;

fn fixture_with(policy: ReinitPolicy, nr: u64, drv: Driver) -> Fx {
    // Half the fixtures get the policy from the space, half from the
    // pagemap: both paths must work.
    let via_space = matches!(policy, ReinitPolicy::AtFree);
    let space = Arc::new(DevicePrivateSpace::with_config(SpaceConfig {
        reinit: if via_space {
            policy
        } else {
            ReinitPolicy::AtAlloc
        },
        ..SpaceConfig::default()
    }));
    *drv.space.lock() = Arc::downgrade(&space);
    let drv = Arc::new(drv);
    let params = PagemapParams::private(PageCount::new(nr), Owner(7), drv.clone());
    let pm = space.memremap_device_private_pagemap(params, 0).unwrap();
    if !via_space {
        pm.set_reinit_policy(policy);
    }
    assert_eq!(pm.reinit_policy(), policy);
    Fx { space, pm, drv }
}

fn fixture(policy: ReinitPolicy) -> Fx {
    fixture_with(policy, 2048, Driver::default())
}

fn ord(o: u32) -> Order {
    Order::new(o).unwrap()
}

impl Fx {
    fn page(&self, i: usize) -> PageRef<'_> {
        PageRef::new(&self.pm, i).unwrap()
    }

    /// `zone_device_folio_init()` of `2^order` pages at `i`.
    fn alloc(&self, i: usize, order: u32) -> Result<Folio<'_>, InitError> {
        zone_device_folio_init(Folio::from_head(self.page(i)), &self.pm, ord(order))
    }

    /// What a driver does when done with a folio: unlock it and drop its
    /// reference (the last one, so the folio is freed).
    fn release(&self, f: Folio<'_>) {
        f.unlock();
        folio_put(f);
    }

    /// An order-`order` folio at `i`, allocated and freed again: its pages
    /// keep whatever metadata the policy leaves behind.
    fn stale(&self, i: usize, order: u32) {
        let f = self.alloc(i, order).expect("first allocation");
        self.release(f);
    }

    fn refs(&self) -> i64 {
        self.pm.percpu_ref().count()
    }

    fn snapshot(&self) -> Vec<[u64; 8]> {
        self.pm.pages().iter().map(|p| p.words()).collect()
    }

    /// Unmaps the pagemap, which must not wait: every page must be free.
    fn unmap(&self) -> Result<(), String> {
        self.space
            .try_memunmap_device_private_pagemap(&self.pm, Duration::from_secs(2))
            .map_err(|e| format!("memunmap: {e} (pages still allocated?)"))
    }
}

/// Pages whose words differ between two snapshots.
fn changed(before: &[[u64; 8]], after: &[[u64; 8]]) -> Vec<usize> {
    (0..before.len())
        .filter(|&i| before[i] != after[i])
        .collect()
}

/// Checks that `2^order` pages at `head` form a sane, freshly allocated
/// folio of `pm`.
fn well_formed(fx: &Fx, head: usize, order: u32) -> Result<(), String> {
    let h = fx.page(head);
    let f = h.folio();
    if f.page() != h {
        return Err(format!(
            "page_folio({head}) is page {}, not itself",
            f.page().index()
        ));
    }
    let (pgmap, w) = capture(|| h.pgmap());
    if !pgmap.is_some_and(|p| std::ptr::eq(p, &*fx.pm)) || !w.is_empty() {
        return Err(format!("page_pgmap({head}) does not name the pagemap"));
    }
    if f.ref_count() != 1 || !f.test_locked() {
        return Err(format!(
            "folio {head}: refcount {}, locked {}",
            f.ref_count(),
            f.test_locked()
        ));
    }
    let n = 1usize << order;
    if f.order() != ord(order) || f.nr_pages().get() != n as u64 || f.is_large() != (order > 0) {
        return Err(format!(
            "folio {head}: order {:?}, nr {:?}, want order {order}",
            f.order(),
            f.nr_pages()
        ));
    }
    if order > 0 && !f.test_large_rmappable() {
        return Err(format!("folio {head}: not large_rmappable"));
    }
    if order == 0 && h.raw(word::MEMCG_DATA) & 0xffff_ffff != 0 {
        return Err(format!("page {head}: stale _nr_pages in memcg_data"));
    }
    for i in 1..n {
        let t = fx.page(head + i);
        if t.folio().page() != h {
            return Err(format!("page {} is not a tail of {head}", head + i));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Basic lifecycle.

#[test]
fn init_and_free_each_order_takes_and_returns_its_references() {
    for order in [0, 1, 4, 9, 10] {
        let fx = fixture(ReinitPolicy::AtAlloc);
        let base = fx.refs();
        let (f, w) = capture(|| fx.alloc(0, order).unwrap());
        assert!(w.is_empty(), "no WARN on a fresh pagemap: {w:?}");
        well_formed(&fx, 0, order).unwrap();
        assert_eq!(fx.refs(), base + (1 << order));
        if order > 0 {
            // prep_compound_page(): TAIL_MAPPING on tails past page[2], and
            // page[1]'s `mapping` is _entire_mapcount/_pincount.
            assert_eq!(fx.page(1).raw(word::MAPPING), 0xffff_ffff);
            if order > 2 {
                assert_eq!(fx.page(3).raw(word::MAPPING), TAIL_MAPPING);
            }
            assert_eq!(fx.page(1).flags() & 0xff, u64::from(order));
        }
        fx.release(f);
        assert_eq!(fx.refs(), base);
        assert_eq!(*fx.drv.freed.lock(), vec![(0, 1 << order, order)]);
        fx.unmap().unwrap();
    }
}

#[test]
fn folio_get_and_put_count_and_only_the_last_put_frees() {
    let fx = fixture(ReinitPolicy::AtAlloc);
    let f = fx.alloc(0, 2).unwrap();
    f.unlock();
    folio_get(f);
    assert_eq!(f.ref_count(), 2);
    folio_put(f);
    assert!(fx.drv.freed.lock().is_empty());
    folio_put(f);
    assert_eq!(fx.drv.freed.lock().len(), 1);
    // A put on a freed folio: WARN, nothing changes, nothing is freed twice.
    let (_, w) = capture(|| folio_put(f));
    assert_eq!(w.count_matching("folio_put(): folio refcount was 0"), 1);
    assert_eq!(f.ref_count(), 0);
    assert_eq!(fx.drv.freed.lock().len(), 1);
    fx.unmap().unwrap();
}

#[test]
fn bad_arguments_are_einval_and_write_nothing() {
    let fx = fixture(ReinitPolicy::AtAlloc);
    let other = fixture(ReinitPolicy::AtAlloc);
    let before = fx.snapshot();
    // Pages past the end of the array.
    let (r, w) = capture(|| fx.alloc(2047, 1));
    assert_eq!(r.unwrap_err(), InitError::Errno(Errno::EINVAL));
    assert_eq!(w.count_matching("pages beyond the pagemap"), 1);
    // A pgmap that does not hold the page.
    let (r, w) = capture(|| zone_device_page_init(fx.page(0), &other.pm, Order::ZERO));
    assert_eq!(r.unwrap_err(), InitError::Errno(Errno::EINVAL));
    assert_eq!(w.count_matching("not the page's pagemap"), 1);
    assert_eq!(fx.snapshot(), before);
    assert_eq!(Errno::from(InitError::Errno(Errno::EINVAL)), Errno::EINVAL);
}

#[test]
fn init_on_a_referenced_page_warns_and_carries_on_like_the_kernel() {
    let fx = fixture(ReinitPolicy::AtAlloc);
    fx.page(3).set_refcount(2);
    let (r, w) = capture(|| fx.alloc(0, 2));
    assert!(r.is_ok());
    assert_eq!(w.count_matching("page refcount is not 0"), 1);
}

#[test]
fn allocation_after_unmap_warns_on_the_failed_tryget() {
    // H11: with no page allocated, kill releases the ref at once, and a
    // later allocation's tryget_many fails: the kernel WARNs and goes on.
    let fx = fixture(ReinitPolicy::AtAlloc);
    fx.unmap().unwrap();
    let (r, w) = capture(|| fx.alloc(0, 0));
    assert!(r.is_ok(), "the kernel hands the page out anyway");
    assert_eq!(w.count_matching("tryget_many failed"), 1);
}

#[test]
fn free_clears_anon_exclusive_on_every_page_and_the_mapping() {
    let fx = fixture(ReinitPolicy::AtAlloc);
    let f = fx.alloc(0, 4).unwrap();
    f.set_mapping(0x4000 | PAGE_MAPPING_ANON);
    for i in 0..16 {
        fx.page(i).set_flag(PG_ANON_EXCLUSIVE);
    }
    fx.release(f);
    assert!((0..16).all(|i| !fx.page(i).test_flag(PG_ANON_EXCLUSIVE)));
    assert_eq!(f.mapping(), 0);
    fx.unmap().unwrap();
}

/// H6 for the merged design: the free path writes nothing but `mapping`,
/// anon-exclusive and the refcount, and `folio_free` receives the folio
/// still compound. Under `AtFree` the free path takes the folio apart
/// before `folio_free` (which then sees order 0).
///
/// Hazard H6: `docs/hazards.md`.
#[test]
fn h6_free_writes_no_compound_metadata_unless_at_free() {
    for policy in [
        ReinitPolicy::AtAlloc,
        ReinitPolicy::None,
        ReinitPolicy::AtFree,
    ] {
        let fx = fixture(policy);
        let f = fx.alloc(B, 9).unwrap();
        f.set_mapping(0x4000 | PAGE_MAPPING_ANON);
        f.unlock();
        let before = fx.snapshot();
        folio_put(f);
        let after = fx.snapshot();
        let diff = changed(&before, &after);
        let freed = fx.drv.freed.lock().clone();
        if policy == ReinitPolicy::AtFree {
            assert_eq!(freed, vec![(B, 1, 0)], "folio_free sees the reset folio");
            assert_eq!(diff, (B..B + 512).collect::<Vec<_>>());
            assert!(!fx.page(B).test_flag(PG_HEAD));
            assert!(
                (B + 1..B + 512)
                    .all(|i| fx.page(i).raw(word::COMPOUND_HEAD) == fx.pm.cookie().get())
            );
        } else {
            assert_eq!(freed, vec![(B, 512, 9)], "folio_free sees it compound");
            assert_eq!(diff, vec![B], "only the head changed");
            let (b, a) = (before[B], after[B]);
            for w in 0..8 {
                match w {
                    word::MAPPING => assert_eq!(a[w], 0),
                    word::COUNTS => assert_eq!(a[w] >> 32, 0, "refcount 0"),
                    _ => assert_eq!(a[w], b[w], "{policy:?}: head word {w} changed"),
                }
            }
        }
        fx.unmap().unwrap();
    }
}

// ---------------------------------------------------------------------------
// The write set of zone_device_page_init().

/// Initialises `2^new` pages at `p` over the remains of an order-`old`
/// folio at 0 and checks that no page outside `[p, p + 2^new)` changed
/// (and, for `AtAlloc`, that every page inside was rewritten to its new
/// role).
fn write_set(policy: ReinitPolicy, old: u32, p: usize, new: u32) -> Result<(), String> {
    let fx = fixture_with(policy, 1024, Driver::default());
    fx.stale(0, old);
    // A second, live neighbour folio right after the new range, if room.
    let n = 1usize << new;
    let before = fx.snapshot();
    let r = capture(|| zone_device_page_init(fx.page(p), &fx.pm, ord(new))).0;
    let after = fx.snapshot();
    for i in changed(&before, &after) {
        if !(p..p + n).contains(&i) {
            return Err(format!("{policy:?}: init({p}, order {new}) wrote page {i}"));
        }
    }
    if policy == ReinitPolicy::AtAlloc {
        r.map_err(|e| format!("AtAlloc init failed: {e}"))?;
        let cookie = fx.pm.cookie().get();
        for (i, words) in after.iter().enumerate().skip(p).take(n) {
            let w1 = words[word::COMPOUND_HEAD];
            let want = if i == p {
                cookie
            } else {
                fx.page(p).addr() + 1
            };
            if w1 != want {
                return Err(format!("page {i}: word 1 {w1:#x}, want {want:#x}"));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 48 }))]

    #[test]
    fn write_set_of_init_is_exactly_its_pages(
        policy in prop_oneof![
            Just(ReinitPolicy::AtAlloc),
            Just(ReinitPolicy::AtFree),
            Just(ReinitPolicy::None),
        ],
        old in 0u32..=9,
        new in 0u32..=9,
        at in 0usize..1024,
    ) {
        let n = 1usize << new;
        let p = at.min(1024 - n);
        prop_assert_eq!(write_set(policy, old, p, new), Ok(()));
    }
}

#[test]
fn write_set_of_init_on_the_hazard_cases() {
    // The cases of hazards H1-H5 (docs/hazards.md): reuse at B+1 (old
    // page[1]), B+2 (old page[2]), B+5, and an order-4 folio at B+16, over
    // an order-9 folio.
    for policy in [
        ReinitPolicy::AtAlloc,
        ReinitPolicy::AtFree,
        ReinitPolicy::None,
    ] {
        for (p, new) in [(1, 0), (2, 0), (5, 0), (16, 4), (1, 3), (0, 0)] {
            write_set(policy, 9, p, new).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------
// Hazards H1–H5: each check returns Err when it sees the bug.

/// H1: an order-`old` folio at B leaves `old` in B+1's low flags byte; for
/// odd orders that is `PG_locked`. Reusing B+1 (as order `new`) must find
/// the lock free and leave only `PG_locked` (plus `PG_head` if large) in
/// the low byte; after `folio_unlock()`, `trylock_page(B+1)` must succeed.
fn h1(policy: ReinitPolicy, old: u32, new: u32) -> Result<(), String> {
    let fx = fixture(policy);
    fx.stale(B, old);
    let base = fx.refs();
    let f = match fx.alloc(B + 1, new) {
        Ok(f) => f,
        Err(e) => {
            // The model undid the allocation: nothing leaked.
            if fx.refs() != base || fx.page(B + 1).refcount() != 0 {
                return Err("a failed init leaked a reference".into());
            }
            return Err(format!("init at B+1: {e}"));
        }
    };
    let low = fx.page(B + 1).flags() & 0xff;
    let want = 1 << PG_LOCKED | if new > 0 { 1 << PG_HEAD } else { 0 };
    if low != want {
        return Err(format!("B+1 low flags byte {low:#x}, want {want:#x}"));
    }
    f.unlock();
    if !fx.page(B + 1).trylock() {
        return Err("trylock_page(B+1) would block after folio_unlock()".into());
    }
    fx.page(B + 1).unlock();
    folio_put(f);
    fx.unmap()
}

/// Hazard H1: `docs/hazards.md`.
#[test]
fn h1_stale_order_byte_is_a_stale_lock_only_without_reinit() {
    for old in [1, 3, 5, 7, 9] {
        for new in [0, 1] {
            for policy in [ReinitPolicy::AtAlloc, ReinitPolicy::AtFree] {
                h1(policy, old, new)
                    .unwrap_or_else(|e| panic!("{policy:?} old {old} new {new}: {e}"));
            }
            let err = h1(ReinitPolicy::None, old, new).unwrap_err();
            assert!(
                err.contains("would block"),
                "None, old {old} new {new}: {err}"
            );
        }
    }
    // Order 9 is PG_locked | PG_uptodate: both stale on B+1 under None.
    let fx = fixture(ReinitPolicy::None);
    fx.stale(B, 9);
    assert_eq!(
        fx.page(B + 1).flags() & 0xff,
        1 << PG_LOCKED | 1 << PG_UPTODATE
    );
}

/// H2: the old head reused at order 0 must not still look large, or its
/// free drops 512 references for the 1 it took.
fn h2(policy: ReinitPolicy) -> Result<(), String> {
    let fx = fixture(policy);
    let base = fx.refs();
    fx.stale(B, 9);
    let f = fx.alloc(B, 0).map_err(|e| e.to_string())?;
    fx.release(f);
    let (now, freed) = (fx.refs(), fx.drv.freed.lock().clone());
    if now != base {
        return Err(format!(
            "pgmap ref {now} after reuse at order 0, baseline {base}"
        ));
    }
    if freed.last() != Some(&(B, 1, 0)) {
        return Err(format!("folio_free saw {freed:?}"));
    }
    fx.unmap()
}

/// Hazard H2: `docs/hazards.md`.
#[test]
fn h2_stale_pg_head_puts_too_many_references_only_without_reinit() {
    h2(ReinitPolicy::AtAlloc).unwrap();
    h2(ReinitPolicy::AtFree).unwrap();
    let err = h2(ReinitPolicy::None).unwrap_err();
    assert!(err.contains("after reuse at order 0"), "{err}");
    assert!(err.contains("-510"), "1 taken, 512 dropped: {err}");
}

/// H3: the reused old page\[1\] must not keep `_nr_pages` in its
/// `memcg_data`, and initialising it must not touch its neighbours (B+2
/// carries a sentinel `memcg_data`).
fn h3(policy: ReinitPolicy, old: u32) -> Result<(), String> {
    let fx = fixture(policy);
    fx.stale(B, old);
    fx.page(B + 2)
        .set_raw(word::MEMCG_DATA, 0x5e47_1e00_0000_0042);
    let (b0, b2) = (fx.page(B).words(), fx.page(B + 2).words());
    let f = fx.alloc(B + 1, 0).map_err(|e| e.to_string())?;
    if fx.page(B).words() != b0 || fx.page(B + 2).words() != b2 {
        return Err("initialising B+1 changed a neighbour".into());
    }
    let nr = fx.page(B + 1).raw(word::MEMCG_DATA) & 0xffff_ffff;
    if nr != 0 {
        return Err(format!("B+1 keeps _nr_pages = {nr} in memcg_data"));
    }
    fx.release(f);
    fx.unmap()
}

/// Hazard H3: `docs/hazards.md`.
#[test]
fn h3_nr_pages_alias_is_cleared_in_place_only_with_reinit() {
    for old in [2, 4, 8, 9] {
        h3(ReinitPolicy::AtAlloc, old).unwrap();
        h3(ReinitPolicy::AtFree, old).unwrap();
    }
    // Even orders leave B+1 unlocked, so the pre-fix code gets as far as
    // the alias; order 9 stops at the stale lock (H1) first.
    for old in [2, 4, 8] {
        let err = h3(ReinitPolicy::None, old).unwrap_err();
        assert_eq!(
            err,
            format!("B+1 keeps _nr_pages = {} in memcg_data", 1 << old)
        );
    }
    assert!(
        h3(ReinitPolicy::None, 9)
            .unwrap_err()
            .contains("would block")
    );
}

/// H4: a former tail reused at order 0 must be its own folio with its own
/// pgmap, and freeing it must free exactly that page and one reference.
fn h4(policy: ReinitPolicy) -> Result<(), String> {
    let fx = fixture(policy);
    let base = fx.refs();
    fx.stale(B, 9);
    fx.drv.freed.lock().clear();
    let p = fx.page(B + 5);
    let f = zone_device_page_init(p, &fx.pm, Order::ZERO).map_err(|e| e.to_string())?;
    if p.folio().page() != p {
        return Err(format!(
            "page_folio(B+5) is page {}",
            p.folio().page().index()
        ));
    }
    let (pm, w) = capture(|| p.pgmap());
    if !pm.is_some_and(|pm| std::ptr::eq(pm, &*fx.pm)) || !w.is_empty() {
        return Err("page_pgmap(B+5) is not the pagemap".into());
    }
    f.unlock();
    folio_put(p.folio());
    let freed = fx.drv.freed.lock().clone();
    if freed != vec![(B + 5, 1, 0)] || fx.refs() != base {
        return Err(format!(
            "free of B+5: folio_free saw {freed:?}, ref {} (baseline {base})",
            fx.refs()
        ));
    }
    fx.unmap()
}

/// Hazard H4: `docs/hazards.md`.
#[test]
fn h4_stale_tail_link_resolves_to_the_old_head_only_without_reinit() {
    h4(ReinitPolicy::AtAlloc).unwrap();
    h4(ReinitPolicy::AtFree).unwrap();
    let err = h4(ReinitPolicy::None).unwrap_err();
    assert_eq!(err, format!("page_folio(B+5) is page {B}"));
}

/// H5: two threads initialise B+0 (order 0) and B+16 (order 4) over a
/// freed order-9 folio at B, at the same time. Neither may write outside
/// its own pages, and both folios must be well formed.
fn h5(policy: ReinitPolicy, rounds: usize) -> Result<(), String> {
    let fx = fixture(policy);
    for _ in 0..rounds {
        fx.stale(B, 9);
        let before = fx.snapshot();
        let go = Barrier::new(2);
        let (a, c) = std::thread::scope(|s| {
            let a = s.spawn(|| {
                go.wait();
                fx.alloc(B, 0).map(|f| f.page().index())
            });
            let c = s.spawn(|| {
                go.wait();
                fx.alloc(B + 16, 4).map(|f| f.page().index())
            });
            (a.join().unwrap(), c.join().unwrap())
        });
        a.map_err(|e| e.to_string())?;
        c.map_err(|e| e.to_string())?;
        let after = fx.snapshot();
        for i in changed(&before, &after) {
            if i != B && !(B + 16..B + 32).contains(&i) {
                return Err(format!("page {i} written"));
            }
        }
        well_formed(&fx, B, 0)?;
        well_formed(&fx, B + 16, 4)?;
        fx.release(Folio::from_head(fx.page(B)));
        fx.release(Folio::from_head(fx.page(B + 16)));
    }
    fx.unmap()
}

/// Hazard H5: `docs/hazards.md`.
#[test]
#[cfg_attr(miri, ignore = "threads and many rounds; covered natively")]
fn h5_concurrent_reuse_of_disjoint_sub_ranges() {
    h5(ReinitPolicy::AtAlloc, 200).unwrap();
    h5(ReinitPolicy::AtFree, 200).unwrap();
    // The stale PG_head makes the reused old head an order-9 folio.
    let err = h5(ReinitPolicy::None, 1).unwrap_err();
    assert!(err.contains("want order 0"), "{err}");
}

/// H5, the rejected alternative: `migrate_device_split_page()` repairs the
/// old folio for the 6.19 code, but writes every page of it, the old head
/// included, even to reuse a single page.
#[test]
fn h5_migrate_device_split_page_writes_the_whole_old_folio() {
    let fx = fixture(ReinitPolicy::None);
    fx.stale(B, 9);
    let before = fx.snapshot();
    migrate_device_split_page(fx.page(B + 100)).unwrap();
    let diff = changed(&before, &fx.snapshot());
    assert!(diff.contains(&B), "the old head is written");
    assert_eq!(diff.len(), 512);
    // Every page is now an unlocked order-0 folio of the pagemap, so even
    // the pre-fix init can reuse B+1 and B+5.
    for i in B..B + 512 {
        let p = fx.page(i);
        assert_eq!(p.folio().page(), p);
        assert!(!p.test_flag(PG_LOCKED) && !p.test_flag(PG_HEAD));
        assert!(p.pgmap().is_some());
    }
    h1_after_split(&fx).unwrap();
    // Only free large folios can be split.
    let (r, w) = capture(|| migrate_device_split_page(fx.page(B)));
    assert_eq!(r, Err(Errno::EINVAL));
    assert_eq!(w.count(), 1);
}

/// Hazard H1: `docs/hazards.md`.
fn h1_after_split(fx: &Fx) -> Result<(), String> {
    let f = fx.alloc(B + 1, 0).map_err(|e| e.to_string())?;
    well_formed(fx, B + 1, 0)?;
    fx.release(f);
    Ok(())
}

// ---------------------------------------------------------------------------
// H10: split ordering.

/// Splits an order-9 anon folio at B to `new` with a driver `folio_split`
/// op that computes each new folio's offset before or after restoring its
/// pgmap; `Err` if any offset is wrong.
fn h10(restore_first: bool, new: u32) -> Result<(), String> {
    let drv = Driver {
        split_op: Some(restore_first),
        ..Driver::default()
    };
    let fx = fixture_with(ReinitPolicy::AtAlloc, 2048, drv);
    let base = fx.refs();
    let f = fx.alloc(B, 9).unwrap();
    f.set_mapping(0x4000 | PAGE_MAPPING_ANON);
    folio_split_unmapped(f, ord(new)).map_err(|e| e.to_string())?;
    let seen = fx.drv.split_seen.lock().clone();
    let step = 1usize << new;
    let first = fx.pm.first_offset().get();
    let mut err = None;
    for (k, &(idx, off, warns)) in seen.iter().enumerate() {
        let want = B + (k + 1) * step;
        if idx != want {
            return Err(format!("callback {k} for page {idx}, want {want}"));
        }
        if off != Some(DevicePrivateOffset::new(first + want as u64)) {
            err.get_or_insert(format!(
                "offset of new folio {want}: {off:?} ({warns} WARNs)"
            ));
        }
    }
    if seen.len() != 512 / step - 1 {
        return Err(format!("{} callbacks", seen.len()));
    }
    // The pieces are locked folios with one reference each; freeing them
    // all returns every pagemap reference.
    for j in (0..512).step_by(step) {
        well_formed_piece(&fx, B + j, new)?;
        fx.release(Folio::from_head(fx.page(B + j)));
    }
    if fx.refs() != base {
        return Err(format!("ref {} after freeing the pieces", fx.refs()));
    }
    if let Some(e) = err {
        return Err(e);
    }
    fx.unmap()
}

fn well_formed_piece(fx: &Fx, head: usize, order: u32) -> Result<(), String> {
    let h = fx.page(head);
    let f = h.folio();
    if f.page() != h || f.order() != ord(order) || f.ref_count() != 1 || !f.test_locked() {
        return Err(format!("piece {head} is not a locked order-{order} folio"));
    }
    if h.pgmap().is_none() || !f.test_anon() {
        return Err(format!("piece {head}: no pgmap or not anon"));
    }
    Ok(())
}

/// Hazard H10: `docs/hazards.md`.
#[test]
fn h10_split_callback_must_restore_pgmap_before_reading_it() {
    for new in [0, 2, 4] {
        h10(true, new).unwrap();
        let (r, w) = capture(|| h10(false, new));
        let err = r.unwrap_err();
        assert!(err.contains("None"), "order {new}: {err}");
        assert!(
            w.count_matching("page_pgmap()") > 0,
            "the wrong order takes page_pgmap()'s WARN"
        );
    }
}

#[test]
fn split_without_a_driver_op_restores_pgmap_and_mapping_itself() {
    let fx = fixture(ReinitPolicy::AtAlloc);
    let f = fx.alloc(B, 9).unwrap();
    f.set_mapping(0x4000 | PAGE_MAPPING_ANON);
    fx.page(B).set_flag(PG_UPTODATE);
    folio_split_unmapped(f, ord(3)).unwrap();
    for j in (0..512).step_by(8) {
        well_formed_piece(&fx, B + j, 3).unwrap();
        let p = fx.page(B + j);
        assert!(p.test_flag(PG_UPTODATE), "copied flag");
        assert_eq!(p.raw(word::INDEX), j as u64, "index + i");
        assert_eq!(Folio::from_head(p).mapping(), 0x4000 | PAGE_MAPPING_ANON);
    }
}

/// 7.0's `__folio_freeze_and_split_unmapped()`: each new folio's callback
/// runs while that folio is still frozen (refcount 0), before it is
/// unfrozen; the final `(orig, NULL)` call runs while the original is still
/// frozen. Afterwards every piece has refcount 1.
#[test]
fn split_callbacks_see_frozen_folios() {
    let drv = Driver {
        record_split_refs: true,
        ..Driver::default()
    };
    let fx = fixture_with(ReinitPolicy::AtAlloc, 2048, drv);
    let f = fx.alloc(B, 9).unwrap();
    f.set_mapping(0x4000 | PAGE_MAPPING_ANON);
    folio_split_unmapped(f, ord(0)).unwrap();
    let seen = fx.drv.split_refs.lock().clone();
    assert_eq!(seen.len(), 512);
    for (k, &(new, orig)) in seen[..511].iter().enumerate() {
        assert_eq!(new, Some((B + k + 1, 0)), "callback {k}: new folio frozen");
        assert_eq!(orig, 0, "callback {k}: original frozen");
    }
    assert_eq!(seen[511], (None, 0), "final call before the unfreeze");
    for j in 0..512 {
        well_formed_piece(&fx, B + j, 0).unwrap();
        fx.release(Folio::from_head(fx.page(B + j)));
    }
    fx.unmap().unwrap();
}

/// `folio_split_unmapped()` to order 1 on an anon folio: 7.0 does not call
/// `folio_check_splittable()`, and `__split_unmapped_folio()` skips order 1
/// for anon folios, so nothing is split, no WARN, the result is 0, and the
/// final `(orig, NULL)` callback still runs (on the frozen original).
#[test]
fn anon_split_to_order_1_is_a_noop_with_the_final_callback() {
    let drv = Driver {
        record_split_refs: true,
        ..Driver::default()
    };
    let fx = fixture_with(ReinitPolicy::AtAlloc, 2048, drv);
    let base = fx.refs();
    let f = fx.alloc(B, 9).unwrap();
    f.set_mapping(0x4000 | PAGE_MAPPING_ANON);
    let before = fx.snapshot();
    let (r, w) = capture(|| folio_split_unmapped(f, ord(1)));
    assert_eq!(r, Ok(()));
    assert_eq!(w.count(), 0, "no WARN");
    assert_eq!(*fx.drv.split_refs.lock(), vec![(None, 0)]);
    assert_eq!(
        (f.order(), f.ref_count(), f.test_locked()),
        (ord(9), 1, true)
    );
    let after = fx.snapshot();
    assert_eq!(
        changed(&before, &after),
        Vec::<usize>::new(),
        "nothing split"
    );
    // The core split alone: also nothing, also Ok.
    assert_eq!(split_unmapped_folio(f, ord(1)), Ok(()));
    assert_eq!(f.order(), ord(9));
    fx.release(f);
    assert_eq!(fx.refs(), base);
    fx.unmap().unwrap();
}

/// `folio_set_order()`'s `VM_WARN_ON_ONCE(order > MAX_FOLIO_ORDER)`: 22 on
/// x86-64 with `ZONE_DEVICE` and hugetlb. It warns and still writes the
/// order (only order 0 or a small folio makes it return).
#[test]
fn set_order_above_max_folio_order_warns_and_still_writes() {
    assert_eq!(MAX_FOLIO_ORDER, 22);
    let fx = fixture(ReinitPolicy::AtAlloc);
    let f = fx.alloc(B, 9).unwrap();
    let ((), w) = capture(|| f.set_order(ord(22)));
    assert_eq!(w.count_matching("MAX_FOLIO_ORDER"), 0);
    assert_eq!(f.order(), ord(22));
    let ((), w) = capture(|| f.set_order(ord(23)));
    assert_eq!(w.count_matching("MAX_FOLIO_ORDER"), 1);
    assert_eq!(f.order(), ord(23), "written anyway");
    assert_eq!(f.nr_pages(), PageCount::new(1 << 23));
    // Order 0 is refused (and not written).
    let ((), w) = capture(|| f.set_order(Order::ZERO));
    assert_eq!(w.count_matching("order 0 or not a large folio"), 1);
    assert_eq!(f.order(), ord(23));
    f.set_order(ord(9));
    fx.release(f);
    fx.unmap().unwrap();
}

#[test]
fn split_refuses_bad_requests() {
    let fx = fixture(ReinitPolicy::AtAlloc);
    let f = fx.alloc(B, 4).unwrap();
    // Not anon.
    let (r, _) = capture(|| folio_split_unmapped(f, ord(0)));
    assert_eq!(r, Err(Errno::EINVAL));
    f.set_mapping(0x4000 | PAGE_MAPPING_ANON);
    // Not lower than the current order.
    let (r, _) = capture(|| folio_split_unmapped(f, ord(4)));
    assert_eq!(r, Err(Errno::EINVAL));
    // An extra reference: the freeze fails.
    folio_get(f);
    assert_eq!(folio_split_unmapped(f, ord(2)), Err(Errno::EAGAIN));
    folio_put(f);
    // Unlocked.
    f.unlock();
    let (r, _) = capture(|| split_unmapped_folio(f, ord(2)));
    assert_eq!(r, Err(Errno::EINVAL));
    // A non-anon folio may be split to order 1 (the core split only).
    f.set_mapping(0);
    f.lock().unwrap();
    split_unmapped_folio(f, ord(1)).unwrap();
    assert_eq!(f.order(), ord(1));
    let piece = Folio::from_head(fx.page(B + 2));
    assert_eq!(piece.order(), ord(1));
    assert!(
        capture(|| piece.pgmap()).0.is_none(),
        "the core split leaves the new folio's pgmap erased (H10)"
    );
}

// ---------------------------------------------------------------------------
// H19: the free path must not touch the folio after folio_free.

/// A driver whose `folio_free` hands the freed pages straight to another
/// allocation: it builds an order-1 folio at page 0, over the page just
/// freed (page 1 becomes its tail), as a driver on another CPU could the
/// moment `folio_free` returns.
#[derive(Default)]
struct ReallocAtOnce {
    /// Head index of the folio built inside `folio_free`.
    built: Mutex<Option<usize>>,
}

impl DevPagemapOps for ReallocAtOnce {
    fn folio_free(&self, folio: Folio<'_>) {
        if folio.page().index() != 1 {
            return;
        }
        let pgmap = folio.page().owner();
        let head = Folio::from_head(PageRef::new(pgmap, 0).unwrap());
        let f = zone_device_folio_init(head, pgmap, ord(1)).unwrap();
        f.unlock();
        *self.built.lock() = Some(f.page().index());
    }

    fn migrate_to_ram(&self, _vmf: &VmFault<'_>) -> Result<(), Errno> {
        Ok(())
    }
}

/// H19 (399289849560, "`mm/zone_device`: do not touch device folio after
/// calling ->`folio_free()`"): an order-0 folio at page 1 is freed while the
/// driver reuses page 1 as the tail of a new order-1 folio at page 0.
/// `Fixed` drops the reference on the pagemap read at entry: no WARN, and
/// once the new folio is freed only the initial reference is left.
/// `V7_0` re-reads `folio->pgmap` after `folio_free`, finds the tail link
/// (the kernel would use `page 0 + 1` as a `struct dev_pagemap *`), and the
/// pagemap leaks the reference: teardown never finishes. Returns the WARNs
/// and the references left after everything was freed.
fn h19(path: FreePath) -> (usize, i64, Result<(), Errno>) {
    let space = DevicePrivateSpace::new();
    let drv = Arc::new(ReallocAtOnce::default());
    let params = PagemapParams::private(PageCount::new(2), Owner(7), drv.clone());
    let pm = space.memremap_device_private_pagemap(params, 0).unwrap();
    pm.set_free_path(path);
    assert_eq!(pm.free_path(), path);
    let x = zone_device_page_init(PageRef::new(&pm, 1).unwrap(), &pm, Order::ZERO).unwrap();
    x.unlock();
    assert_eq!(pm.percpu_ref().count(), 2);
    let ((), w) = capture(|| folio_put(x));
    let warns = w.count_matching("folio->pgmap is not a pagemap");
    assert_eq!(*drv.built.lock(), Some(0), "the driver reused page 1");
    assert!(PageRef::new(&pm, 1).unwrap().is_tail());
    folio_put(Folio::from_head(PageRef::new(&pm, 0).unwrap()));
    let left = pm.percpu_ref().count();
    let unmap = space.try_memunmap_device_private_pagemap(&pm, Duration::from_millis(50));
    (warns, left, unmap)
}

/// Hazard H19: `docs/hazards.md`.
#[test]
fn h19_free_path_does_not_reread_the_folio() {
    assert_eq!(FreePath::default(), FreePath::Fixed);
    assert_eq!(h19(FreePath::Fixed), (0, 1, Ok(())));
    // 7.0-rc6: the re-read finds page 0's tail link; one reference leaks
    // and the pagemap cannot be torn down.
    assert_eq!(h19(FreePath::V7_0), (1, 2, Err(Errno::EBUSY)));
}

/// Without a reallocation in between, `V7_0` re-reads the same pagemap and
/// behaves as `Fixed`: the bug needs the race (or the eager driver above).
#[test]
fn h19_v7_0_is_harmless_without_a_reuse() {
    let fx = fixture(ReinitPolicy::AtAlloc);
    fx.pm.set_free_path(FreePath::V7_0);
    let base = fx.refs();
    for order in [0, 1, 9] {
        let (f, w) = capture(|| fx.alloc(B, order).unwrap());
        fx.release(f);
        assert_eq!((w.count(), fx.refs()), (0, base), "order {order}");
    }
    fx.unmap().unwrap();
}

// ---------------------------------------------------------------------------
// H16, H17: characterisations.

/// The words of B+1 and B+2 after an order-9 folio at B (whose page\[1\]
/// also got `PG_has_hwpoisoned` and `PG_partially_mapped`) was freed and
/// B+1, B+2 were reused at order 0, xor-ed with what a never-used page looks
/// like once allocated. `None` cannot reuse B+1 (H1), so for it the
/// residue is taken right after the free. Also returns the address of the
/// old page\[2\]'s `_deferred_list`.
fn residue(policy: ReinitPolicy) -> ([Vec<(usize, u64)>; 2], u64) {
    let fx = fixture(policy);
    let fresh_alloc = fx.alloc(0, 0).unwrap().page().words();
    let f = fx.alloc(B, 9).unwrap();
    fx.page(B + 1).set_flag(PG_HAS_HWPOISONED);
    fx.page(B + 1).set_flag(PG_PARTIALLY_MAPPED);
    fx.release(f);
    if policy != ReinitPolicy::None {
        fx.alloc(B + 1, 0).unwrap();
        fx.alloc(B + 2, 0).unwrap();
    }
    let diff = [B + 1, B + 2].map(|i| {
        let w = fx.page(i).words();
        (0..8)
            .filter(|&k| w[k] != fresh_alloc[k])
            .map(|k| (k, w[k] ^ fresh_alloc[k]))
            .collect()
    });
    (
        diff,
        fx.page(B + 2).addr() + 8 * word::ZONE_DEVICE_DATA as u64,
    )
}

/// Hazard H16: `docs/hazards.md`.
#[test]
fn h16_residue_left_by_each_policy() {
    let second = 1 << PG_HAS_HWPOISONED | 1 << PG_LARGE_RMAPPABLE | 1 << PG_PARTIALLY_MAPPED;
    // The merged fix clears only the low flag byte: the second-page flags
    // (upper bits) survive on old page[1], and so does
    // _large_mapcount/_nr_pages_mapped in word 2 (zone_device_data to a
    // driver that does not set it). Old page[2] keeps its _deferred_list
    // self-pointer in word 2.
    let ([r1, r2], list) = residue(ReinitPolicy::AtAlloc);
    assert_eq!(
        r1,
        vec![(word::FLAGS, second), (word::ZONE_DEVICE_DATA, 0xffff_ffff)]
    );
    assert_eq!(r2, vec![(word::ZONE_DEVICE_DATA, list)]);
    // The free-time sketch clears PAGE_FLAGS_SECOND and, with
    // PAGE_FLAGS_CHECK_AT_PREP, PG_reserved too; it leaves share (word 4,
    // _mm_id_mapcount = {-1, -1}) and word 2.
    let ([r1, r2], list) = residue(ReinitPolicy::AtFree);
    assert_eq!(
        r1,
        vec![
            (word::FLAGS, 1 << PG_RESERVED),
            (word::ZONE_DEVICE_DATA, 0xffff_ffff),
            (word::INDEX, u64::MAX),
        ]
    );
    assert_eq!(
        r2,
        vec![
            (word::FLAGS, 1 << PG_RESERVED),
            (word::ZONE_DEVICE_DATA, list)
        ]
    );
    // Pre-fix: everything the folio wrote is still there (and the pages
    // are not even reusable).
    let ([r1, r2], _) = residue(ReinitPolicy::None);
    let words: Vec<usize> = r1.iter().map(|&(k, _)| k).collect();
    assert_eq!(
        words,
        vec![
            word::FLAGS,
            word::COMPOUND_HEAD,
            word::ZONE_DEVICE_DATA,
            word::MAPPING,
            word::INDEX,
            word::COUNTS,
            word::MEMCG_DATA,
        ]
    );
    assert!(r2.iter().any(|&(k, _)| k == word::COMPOUND_HEAD));
}

/// H17: the kernel's order check compares an order with
/// `MAX_ORDER_NR_PAGES` (1024 pages), so no representable order trips it;
/// orders above `MAX_PAGE_ORDER` are accepted. The model mirrors this and
/// stops only at the end of the pages array.
fn h17(policy: ReinitPolicy) -> Result<Vec<u32>, String> {
    let fx = fixture_with(policy, 4096, Driver::default());
    let mut accepted = Vec::new();
    for order in [10, 11, 12, 13] {
        let (r, w) = capture(|| fx.alloc(0, order));
        if w.count_matching("MAX_ORDER_NR_PAGES") != 0 {
            return Err(format!("order {order}: the order check fired"));
        }
        match r {
            Ok(f) => {
                if f.order() != ord(order) || f.nr_pages().get() != 1 << order {
                    return Err(format!("order {order}: folio {:?}", f.order()));
                }
                accepted.push(order);
                fx.release(f);
            }
            Err(InitError::Errno(Errno::EINVAL)) if w.count_matching("beyond") == 1 => {}
            Err(e) => return Err(format!("order {order}: {e}")),
        }
    }
    Ok(accepted)
}

/// Hazard H17: `docs/hazards.md`.
#[test]
fn h17_order_check_compares_an_order_with_a_page_count() {
    assert!((0u32..64).all(|o| u64::from(o) <= MAX_ORDER_NR_PAGES));
    for policy in [
        ReinitPolicy::AtAlloc,
        ReinitPolicy::AtFree,
        ReinitPolicy::None,
    ] {
        assert_eq!(h17(policy), Ok(vec![10, 11, 12]), "{policy:?}");
    }
}

#[test]
fn free_without_pgmap_warns_and_frees_nothing() {
    let fx = fixture(ReinitPolicy::AtAlloc);
    let f = fx.alloc(0, 0).unwrap();
    f.page().clear_compound_head();
    let (_, w) = capture(|| free_zone_device_folio(f));
    assert_eq!(w.count_matching("folio has no pgmap"), 1);
    assert!(fx.drv.freed.lock().is_empty());
}
