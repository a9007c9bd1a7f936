//! The bad-input catalogue (`docs/errors.md`), one test per row or one
//! table-driven test per entry point.
//!
//! Every test feeds a public entry point an invalid input and checks three
//! things: the errno (or the documented "WARN and continue" behaviour), that
//! the call did not panic (each call runs under [`std::panic::catch_unwind`]),
//! and that the state it could have touched is unchanged: `validate()` on the
//! structure plus a snapshot taken before and compared after.
//!
//! Run: `cargo test -p devpriv --test errors`.

use devpriv::core::{
    DevicePrivateOffset, Errno, Order, PAGE_SIZE, PageCount, PageFrame, PagingMode, Pfn, PhysAddr,
};
use devpriv::migrate::hmm::{HmmPfn, HmmPfnLayout, HmmRange, hmm_range_fault};
use devpriv::migrate::huge_memory::{split_folio, split_huge_pmd, split_unmapped_for_migration};
use devpriv::migrate::leafops::{Softleaf, SoftleafFlags};
use devpriv::migrate::memory::{PMD_SIZE, TASK_SIZE, VmFlags};
use devpriv::migrate::page_vma_mapped::{PageVmaMappedWalk, PvmwFlags, PvmwPfnV2, PvmwTarget};
use devpriv::migrate::pgtable::{_PAGE_PRESENT, _PAGE_RW, MAX_PTE_PFN, Pmd, Pte};
use devpriv::migrate::swapops::{
    MigrationKind, make_device_exclusive_entry, make_device_private_entry, make_hwpoison_entry,
    make_migration_entry, make_pte_marker_entry, swp_entry,
};
use devpriv::migrate::test_hmm::{DmirrorConfig, DmirrorDevice, HmmDmirrorCmd};
use devpriv::migrate::{
    AnyFolio, FaultFlags, Memory, MigratePfn, MigrateVma, MigrateVmaFlags, Mm, MmConfig,
    SystemMemory, handle_mm_fault, migrate_device_finalize, migrate_device_pages,
    migrate_device_pfns, migrate_device_range, migrate_vma_finalize, migrate_vma_pages,
    migrate_vma_setup,
};
use devpriv::pagemap::resource::{IomemConfig, IomemResource, ResourceKind};
use devpriv::pagemap::{
    DevPagemap, DevPagemapOps, DevicePrivateSpace, Folio, InitError, MemoryType, Owner, PageRef,
    PagemapParams, ReinitPolicy, SpaceConfig, VmFault, folio_put, folio_split_unmapped,
    free_zone_device_folio, migrate_device_split_page, prep_compound_page, split_unmapped_folio,
    zone_device_folio_init, zone_device_page_init,
};
use devpriv::rangetree::RangeTree;
use devpriv::xe_pool::DrmBuddy;
use std::fmt::Debug;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Runs `f`, failing the test (with `what` in the message) if it panics.
fn np<R>(what: &str, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => panic!("{what}: a public API panicked"),
    }
}

/// Asserts `r` is `Err(e)` (after converting the error to an errno).
#[track_caller]
fn assert_errno<T: Debug, E: Into<Errno>>(what: &str, r: Result<T, E>, e: Errno) {
    match r {
        Ok(v) => panic!("{what}: expected {e:?}, got Ok({v:?})"),
        Err(got) => assert_eq!(got.into(), e, "{what}"),
    }
}

/// A driver whose `folio_free` does nothing (the tests never hand pages
/// out through it) and whose `migrate_to_ram` fails.
struct NopOps;

impl DevPagemapOps for NopOps {
    fn folio_free(&self, _folio: Folio<'_>) {}
    fn migrate_to_ram(&self, _vmf: &VmFault<'_>) -> Result<(), Errno> {
        Err(Errno::EFAULT)
    }
}

/// Valid parameters for a pagemap of `nr` pages.
fn params(nr: u64) -> PagemapParams {
    PagemapParams {
        memory_type: MemoryType::Private,
        nr_pages: PageCount::new(nr),
        owner: Some(Owner(0xd0)),
        ops: Some(Arc::new(NopOps)),
    }
}

/// A space of 2^(12 + 16) bytes: 65536 pages.
fn small_space() -> DevicePrivateSpace {
    DevicePrivateSpace::with_config(SpaceConfig {
        space_shift: Some(28),
        ..SpaceConfig::default()
    })
}

/// Everything observable about a space: each pagemap's id, range, pgmap
/// reference count, unmapped flag and every page's eight words.
type SpaceSnap = Vec<(u64, (u64, u64), i64, bool, Vec<[u64; 8]>)>;

fn space_snap(s: &DevicePrivateSpace) -> SpaceSnap {
    s.validate().expect("space valid");
    let g = s.read();
    g.pagemaps()
        .map(|p| {
            p.validate().expect("pagemap valid");
            let r = p.range();
            (
                p.id(),
                (r.start().get(), r.end().get()),
                p.percpu_ref().count(),
                p.is_unmapped(),
                p.pages().iter().map(|pg| pg.words()).collect(),
            )
        })
        .collect()
}

/// The words of every page of one pagemap plus its ref count (for a
/// pagemap that is no longer in a space).
fn pgmap_snap(p: &DevPagemap) -> (i64, bool, Vec<[u64; 8]>) {
    (
        p.percpu_ref().count(),
        p.is_unmapped(),
        p.pages().iter().map(|pg| pg.words()).collect(),
    )
}

/// Checks that `f` leaves `s` exactly as it was (and valid).
#[track_caller]
fn space_unchanged<R>(s: &DevicePrivateSpace, what: &str, f: impl FnOnce() -> R) -> R {
    let before = space_snap(s);
    let r = np(what, f);
    assert_eq!(before, space_snap(s), "{what}: space changed");
    r
}

fn tree_snap(t: &RangeTree<u32>) -> Vec<(u64, u64, u32)> {
    t.validate().expect("tree valid");
    t.read()
        .iter()
        .map(|(r, v)| (*r.start(), *r.end(), *v))
        .collect()
}

// ---------------------------------------------------------------------------
// devpriv-rangetree
// ---------------------------------------------------------------------------

fn tree() -> RangeTree<u32> {
    let t = RangeTree::new();
    t.insert_range(0x100..=0x1ff, 1).unwrap();
    t.insert_range(0x400..=0x4ff, 2).unwrap();
    t
}

/// (size, align, window, errno) rows shared by `alloc_range`,
/// `alloc_rrange`, `find_gap` and `find_gap_rev`.
/// (what, size, align, window, errno).
type AllocRow = (&'static str, u64, u64, (u64, u64), Errno);

const ALLOC_BAD: &[AllocRow] = &[
    ("zero size", 0, 1, (0, 0xffff), Errno::EINVAL),
    ("align 0", 1, 0, (0, 0xffff), Errno::EINVAL),
    ("align not a power of two", 1, 3, (0, 0xffff), Errno::EINVAL),
    ("inverted window", 1, 1, (0x10, 0x0f), Errno::EINVAL),
    (
        "size larger than the window",
        0x11,
        1,
        (0, 0xf),
        Errno::EINVAL,
    ),
    ("size u64::MAX", u64::MAX, 1, (0, 0xffff), Errno::EINVAL),
    (
        "size u64::MAX in the full key space",
        u64::MAX,
        1,
        (0, u64::MAX),
        Errno::EBUSY,
    ),
    (
        "aligned start past u64::MAX - size",
        2,
        1 << 63,
        (1 << 63 | 1, u64::MAX),
        Errno::EINVAL,
    ),
    (
        "no aligned start in the window",
        1,
        0x100,
        (0x101, 0x1fe),
        Errno::EINVAL,
    ),
    ("window full", 0x100, 1, (0x100, 0x1ff), Errno::EBUSY),
    ("no gap large enough", 0x300, 1, (0, 0x5ff), Errno::EBUSY),
];

#[test]
fn rangetree_alloc_range_and_find_gap() {
    let t = tree();
    let before = tree_snap(&t);
    for &(what, size, align, (min, max), e) in ALLOC_BAD {
        let r = np(what, || t.alloc_range(size, align, min..=max, 7));
        match r {
            Ok(v) => panic!("alloc_range {what}: got Ok({v})"),
            Err(err) => {
                assert_eq!(err.cause, e, "alloc_range {what}");
                assert_eq!(err.value, 7, "alloc_range {what}: value comes back");
            }
        }
        let r = np(what, || t.alloc_rrange(size, align, min..=max, 8));
        assert_errno(&format!("alloc_rrange {what}"), r, e);
        let r = np(what, || t.find_gap(size, align, min..=max));
        assert_errno(&format!("find_gap {what}"), r, e);
        let r = np(what, || t.find_gap_rev(size, align, min..=max));
        assert_errno(&format!("find_gap_rev {what}"), r, e);
        assert_eq!(before, tree_snap(&t), "{what}: tree changed");
    }
}

#[test]
fn rangetree_insert_range() {
    let t = tree();
    let before = tree_snap(&t);
    let rows: &[(&str, u64, u64, Errno)] = &[
        ("inverted range", 0x20, 0x1f, Errno::EINVAL),
        ("inverted at u64::MAX", u64::MAX, 0, Errno::EINVAL),
        ("overlaps the start of a range", 0xf0, 0x100, Errno::EEXIST),
        ("overlaps the end of a range", 0x1ff, 0x200, Errno::EEXIST),
        ("inside a range", 0x180, 0x180, Errno::EEXIST),
        ("covers two ranges", 0, u64::MAX, Errno::EEXIST),
    ];
    for &(what, first, last, e) in rows {
        let r = np(what, || t.insert_range(first..=last, 9));
        match r {
            Ok(()) => panic!("insert_range {what}: got Ok"),
            Err(err) => {
                assert_eq!(err.cause, e, "insert_range {what}");
                assert_eq!(err.value, 9);
            }
        }
        assert_eq!(before, tree_snap(&t), "{what}: tree changed");
    }
}

#[test]
fn rangetree_erase_of_a_gap_is_none() {
    let t = tree();
    let before = tree_snap(&t);
    for i in [0, 0xff, 0x200, 0x3ff, 0x500, u64::MAX] {
        assert_eq!(np("erase", || t.erase(i)), None, "erase({i:#x})");
    }
    assert_eq!(before, tree_snap(&t));
}

// ---------------------------------------------------------------------------
// devpriv-pagemap: DevicePrivateSpace
// ---------------------------------------------------------------------------

#[test]
fn memremap_device_private_pagemap_bad_params() {
    let s = small_space();
    let _keep = s.memremap_device_private_pagemap(params(16), 0).unwrap();
    let no_migrate_to_ram = {
        struct NoMtr;
        impl DevPagemapOps for NoMtr {
            fn folio_free(&self, _folio: Folio<'_>) {}
            fn migrate_to_ram(&self, _vmf: &VmFault<'_>) -> Result<(), Errno> {
                Ok(())
            }
            fn has_migrate_to_ram(&self) -> bool {
                false
            }
        }
        PagemapParams {
            ops: Some(Arc::new(NoMtr)),
            ..params(1)
        }
    };
    let rows: Vec<(&str, PagemapParams, Errno)> = vec![
        ("zero nr_pages", params(0), Errno::EINVAL),
        (
            "nr_pages larger than the space",
            params(1 << 16 | 1),
            Errno::EINVAL,
        ),
        ("nr_pages u64::MAX", params(u64::MAX), Errno::EINVAL),
        (
            "memory type not Private",
            PagemapParams {
                memory_type: MemoryType::Coherent,
                ..params(1)
            },
            Errno::EINVAL,
        ),
        (
            "owner missing",
            PagemapParams {
                owner: None,
                ..params(1)
            },
            Errno::EINVAL,
        ),
        (
            "ops missing",
            PagemapParams {
                ops: None,
                ..params(1)
            },
            Errno::EINVAL,
        ),
        (
            "ops without migrate_to_ram",
            no_migrate_to_ram,
            Errno::EINVAL,
        ),
        (
            "space cannot hold it (16 pages used)",
            params(1 << 16),
            Errno::EBUSY,
        ),
    ];
    for (what, p, e) in rows {
        let r = space_unchanged(&s, what, || s.memremap_device_private_pagemap(p.clone(), 0));
        assert_errno(&format!("memremap {what}"), r.map(|_| ()), e);
        let r = space_unchanged(&s, what, || {
            s.devm_memremap_device_private_pagemap(p.clone(), 0)
                .map(|_| ())
        });
        assert_errno(&format!("devm_memremap {what}"), r, e);
    }
}

#[test]
fn memremap_pages_refuses_every_type() {
    let s = small_space();
    let rows = [
        (MemoryType::Private, Errno::EINVAL),
        (MemoryType::Coherent, Errno::EOPNOTSUPP),
        (MemoryType::FsDax, Errno::EOPNOTSUPP),
        (MemoryType::Generic, Errno::EOPNOTSUPP),
        (MemoryType::PciP2pDma, Errno::EOPNOTSUPP),
    ];
    for (t, e) in rows {
        let p = PagemapParams {
            memory_type: t,
            ..params(1)
        };
        let r = space_unchanged(&s, "memremap_pages", || s.memremap_pages(&p, 0));
        assert_errno(&format!("memremap_pages {t:?}"), r, e);
    }
}

#[test]
fn memunmap_twice_and_foreign() {
    let s = small_space();
    let other = small_space();
    let a = s.memremap_device_private_pagemap(params(8), 0).unwrap();
    let b = s.memremap_device_private_pagemap(params(8), 0).unwrap();
    let foreign = other.memremap_device_private_pagemap(params(8), 0).unwrap();
    s.memunmap_device_private_pagemap(&a).unwrap();
    let a_before = pgmap_snap(&a);
    let other_before = space_snap(&other);
    let r = space_unchanged(&s, "unmap twice", || s.memunmap_device_private_pagemap(&a));
    assert_errno("memunmap twice", r, Errno::EINVAL);
    let r = space_unchanged(&s, "try_unmap twice", || {
        s.try_memunmap_device_private_pagemap(&a, Duration::ZERO)
    });
    assert_errno("try_memunmap twice", r, Errno::EINVAL);
    assert_eq!(a_before, pgmap_snap(&a));
    let r = space_unchanged(&s, "unmap foreign", || {
        s.memunmap_device_private_pagemap(&foreign)
    });
    assert_errno("memunmap foreign", r, Errno::EINVAL);
    let r = space_unchanged(&s, "try_unmap foreign", || {
        s.try_memunmap_device_private_pagemap(&foreign, Duration::ZERO)
    });
    assert_errno("try_memunmap foreign", r, Errno::EINVAL);
    assert_eq!(
        other_before,
        space_snap(&other),
        "the foreign space changed"
    );
    drop(b);
}

#[test]
fn try_memunmap_with_a_page_allocated_is_ebusy_and_retryable() {
    let s = small_space();
    let p = s.memremap_device_private_pagemap(params(8), 0).unwrap();
    let page = PageRef::new(&p, 0).unwrap();
    let f = zone_device_page_init(page, &p, Order::ZERO).unwrap();
    let r = np("try_memunmap busy", || {
        s.try_memunmap_device_private_pagemap(&p, Duration::from_millis(1))
    });
    assert_errno("try_memunmap busy", r, Errno::EBUSY);
    // Documented: the ref stays killed, the pagemap stays mapped.
    assert!(p.percpu_ref().is_dying());
    assert!(!p.is_unmapped());
    s.validate().unwrap();
    f.unlock();
    folio_put(f);
    s.try_memunmap_device_private_pagemap(&p, Duration::from_secs(5))
        .unwrap();
    assert!(s.is_empty());
}

#[test]
fn devm_release_after_manual_unmap_is_einval() {
    let s = small_space();
    let d = s
        .devm_memremap_device_private_pagemap(params(4), 0)
        .unwrap();
    let p = d.pgmap().clone();
    s.memunmap_device_private_pagemap(&p).unwrap();
    let r = space_unchanged(&s, "devm release", || d.release());
    assert_errno("DevmPagemap::release after unmap", r, Errno::EINVAL);
}

// ---------------------------------------------------------------------------
// devpriv-pagemap: folio lifecycle
// ---------------------------------------------------------------------------

/// A space with one pagemap of `nr` pages.
fn one_pgmap(nr: u64) -> (DevicePrivateSpace, Arc<DevPagemap>) {
    let s = small_space();
    let p = s.memremap_device_private_pagemap(params(nr), 0).unwrap();
    (s, p)
}

#[test]
fn zone_device_page_init_bad_order_and_range() {
    let (s, p) = one_pgmap(16);
    let (s2, q) = one_pgmap(16);
    let page = |i| PageRef::new(&p, i).unwrap();
    let rows: Vec<(&str, PageRef<'_>, &DevPagemap, u32)> = vec![
        ("order 5 past a 16-page pagemap", page(0), &p, 5),
        ("order 1 at the last page", page(15), &p, 1),
        ("order 63 (2^63 pages)", page(0), &p, 63),
        ("order above MAX_PAGE_ORDER (11)", page(0), &p, 11),
        ("pgmap is not the page's", page(0), &q, 0),
    ];
    let q_before = space_snap(&s2);
    for (what, pg, pgmap, order) in rows {
        let order = Order::new(order).unwrap();
        let r = space_unchanged(&s, what, || zone_device_page_init(pg, pgmap, order));
        assert_errno(&format!("zone_device_page_init {what}"), r, Errno::EINVAL);
        let r = space_unchanged(&s, what, || {
            zone_device_folio_init(Folio::from_head(pg), pgmap, order)
        });
        assert_errno(&format!("zone_device_folio_init {what}"), r, Errno::EINVAL);
    }
    assert_eq!(q_before, space_snap(&s2));
    assert!(Order::new(64).is_none(), "orders of 64 and up do not exist");
}

#[test]
fn zone_device_page_init_order_above_max_that_fits_is_accepted_h17() {
    // Kernel: `order > MAX_ORDER_NR_PAGES` compares an order with a page
    // count; order 11 (2048 pages) passes when the pagemap is large enough.
    let (s, p) = one_pgmap(2048);
    let f = np("order 11", || {
        zone_device_page_init(PageRef::new(&p, 0).unwrap(), &p, Order::new(11).unwrap())
    })
    .expect("H17: accepted, as the kernel");
    assert_eq!(f.order().get(), 11);
    s.validate().unwrap();
    f.unlock();
    folio_put(f);
    s.validate().unwrap();
}

#[test]
fn zone_device_page_init_on_a_locked_page() {
    // AtAlloc (merged): the reset clears the stale PG_locked first, so the
    // init goes through (the fix for H1).
    let (s, p) = one_pgmap(4);
    let page = PageRef::new(&p, 0).unwrap();
    page.lock().unwrap();
    let f = np("init on locked, AtAlloc", || {
        zone_device_page_init(page, &p, Order::ZERO)
    })
    .expect("AtAlloc resets PG_locked");
    f.unlock();
    folio_put(f);
    s.validate().unwrap();
    // None (6.19): no reset; lock_page() would sleep forever. The model
    // returns WouldBlock (EAGAIN) and undoes the ref and refcount it took.
    p.set_reinit_policy(ReinitPolicy::None);
    page.lock().unwrap();
    let r = space_unchanged(&s, "init on locked, None", || {
        zone_device_page_init(page, &p, Order::ZERO)
    });
    assert!(matches!(r, Err(InitError::WouldBlock(_))));
    assert_errno("zone_device_page_init on a locked page", r, Errno::EAGAIN);
    page.unlock();
}

#[test]
fn zone_device_page_init_on_a_page_with_nonzero_refcount_warns_and_continues() {
    let (s, p) = one_pgmap(4);
    let page = PageRef::new(&p, 1).unwrap();
    let f = zone_device_page_init(page, &p, Order::ZERO).unwrap();
    let base = p.percpu_ref().count();
    // Allocate the same page again while its refcount is 1. The kernel
    // WARNs (`WARN_ON_ONCE(page_ref_count(page))`) and carries on; so does
    // the model: the reset clears PG_locked, a second pgmap reference is
    // taken and the refcount is overwritten with 1.
    let (r, w) = np("init with refcount 1", || {
        devpriv::core::warn::capture(|| zone_device_page_init(page, &p, Order::ZERO))
    });
    assert!(
        w.count_matching("page refcount is not 0") >= 1,
        "a WARN is taken: {w:?}"
    );
    let g = r.expect("WARN and continue, as the kernel");
    assert_eq!(g, f);
    assert_eq!(g.ref_count(), 1, "the refcount is overwritten with 1");
    assert_eq!(
        p.percpu_ref().count(),
        base + 1,
        "a second reference is taken"
    );
    s.validate().unwrap();
    g.unlock();
    folio_put(g);
    // Drop the reference the overwritten first allocation held.
    p.percpu_ref().put_many(1);
    s.validate().unwrap();
}

#[test]
fn zone_device_page_init_after_kill_warns_and_continues_h11() {
    let (s, p) = one_pgmap(4);
    let held = zone_device_page_init(PageRef::new(&p, 0).unwrap(), &p, Order::ZERO).unwrap();
    // Teardown starts: the ref is killed but one page is still allocated.
    assert_errno(
        "try_memunmap",
        s.try_memunmap_device_private_pagemap(&p, Duration::from_millis(1)),
        Errno::EBUSY,
    );
    assert!(p.percpu_ref().is_dying());
    let base = p.percpu_ref().count();
    // tryget_many ignores DEAD (H11): the init succeeds and takes a ref.
    let (r, w) = np("init after kill", || {
        devpriv::core::warn::capture(|| {
            zone_device_page_init(PageRef::new(&p, 1).unwrap(), &p, Order::ZERO)
        })
    });
    let f = r.expect("init after kill goes through (H11)");
    assert_eq!(w.count(), 0, "tryget_many succeeded, so no WARN");
    assert_eq!(p.percpu_ref().count(), base + 1);
    f.unlock();
    folio_put(f);
    held.unlock();
    folio_put(held);
    // Once every reference is gone, init after kill fails tryget_many:
    // WARN and continue; nothing is taken.
    s.try_memunmap_device_private_pagemap(&p, Duration::from_secs(5))
        .unwrap();
    let before = pgmap_snap(&p);
    let (r, w) = np("init after release", || {
        devpriv::core::warn::capture(|| {
            zone_device_page_init(PageRef::new(&p, 2).unwrap(), &p, Order::ZERO)
        })
    });
    assert!(w.count_matching("tryget_many failed") >= 1, "{w:?}");
    let f = r.expect("WARN and continue, as the kernel");
    assert_eq!(p.percpu_ref().count(), before.0, "no reference taken");
    f.unlock();
    f.page().set_refcount(0);
}

#[test]
fn folio_put_of_an_unallocated_page_warns_and_changes_nothing() {
    let (s, p) = one_pgmap(4);
    let page = PageRef::new(&p, 2).unwrap();
    let (_, w) = space_unchanged(&s, "folio_put unallocated", || {
        devpriv::core::warn::capture(|| folio_put(page.folio()))
    });
    assert!(w.count() >= 1, "a WARN is taken");
}

#[test]
fn free_zone_device_folio_without_a_pgmap_warns_and_returns() {
    let (s, p) = one_pgmap(4);
    // A large folio whose tail is then freed on its own: the tail's word 1
    // is the head link, not the pgmap.
    let f = zone_device_folio_init(
        Folio::from_head(PageRef::new(&p, 0).unwrap()),
        &p,
        Order::new(1).unwrap(),
    )
    .unwrap();
    let tail = Folio::from_head(f.nth_page(1).unwrap());
    let (_, w) = space_unchanged(&s, "free tail", || {
        devpriv::core::warn::capture(|| free_zone_device_folio(tail))
    });
    assert!(w.count() >= 1);
    f.unlock();
    folio_put(f);
    s.validate().unwrap();
}

#[test]
fn prep_compound_page_bad_order() {
    let (s, p) = one_pgmap(8);
    let rows = [
        ("order 0", 0, 0),
        ("order past the array", 0, 4),
        ("order 1 at the last page", 7, 1),
        ("order 63", 0, 63),
    ];
    for (what, i, order) in rows {
        let pg = PageRef::new(&p, i).unwrap();
        let r = space_unchanged(&s, what, || {
            prep_compound_page(pg, Order::new(order).unwrap())
        });
        assert_errno(&format!("prep_compound_page {what}"), r, Errno::EINVAL);
    }
}

#[test]
fn split_unmapped_folio_bad_inputs() {
    let (s, p) = one_pgmap(16);
    let pg = |i| PageRef::new(&p, i).unwrap();
    // An order-2 anon folio at 0, locked.
    let f = zone_device_folio_init(Folio::from_head(pg(0)), &p, Order::new(2).unwrap()).unwrap();
    f.set_mapping(devpriv::pagemap::mm_types::PAGE_MAPPING_ANON | 0x1000);
    // An order-0 folio at 8.
    let small = zone_device_page_init(pg(8), &p, Order::ZERO).unwrap();
    let o = |n| Order::new(n).unwrap();
    let rows: Vec<(&str, Folio<'_>, Order, Errno)> = vec![
        ("not large", small, o(0), Errno::EINVAL),
        ("new order equal to the order", f, o(2), Errno::EINVAL),
        ("new order above the order", f, o(3), Errno::EINVAL),
        ("order 1 where anon forbids it", f, o(1), Errno::EINVAL),
    ];
    for (what, folio, new, e) in &rows {
        let r = space_unchanged(&s, what, || split_unmapped_folio(*folio, *new));
        assert_errno(&format!("split_unmapped_folio {what}"), r, *e);
        let r = space_unchanged(&s, what, || folio_split_unmapped(*folio, *new));
        assert_errno(&format!("folio_split_unmapped {what}"), r, *e);
    }
    // Unlocked.
    f.unlock();
    let r = space_unchanged(&s, "unlocked", || split_unmapped_folio(f, o(0)));
    assert_errno("split_unmapped_folio unlocked", r, Errno::EINVAL);
    let r = space_unchanged(&s, "unlocked", || folio_split_unmapped(f, o(0)));
    assert_errno("folio_split_unmapped unlocked", r, Errno::EINVAL);
    f.lock().unwrap();
    // Someone else holds a reference.
    f.page().set_refcount(2);
    let r = space_unchanged(&s, "refcount 2", || folio_split_unmapped(f, o(0)));
    assert_errno("folio_split_unmapped refcount 2", r, Errno::EAGAIN);
    f.page().set_refcount(1);
    // Not anon.
    f.set_mapping(0);
    let r = space_unchanged(&s, "not anon", || folio_split_unmapped(f, o(0)));
    assert_errno("folio_split_unmapped not anon", r, Errno::EINVAL);
    f.unlock();
    folio_put(f);
    small.unlock();
    folio_put(small);
    s.validate().unwrap();
}

#[test]
fn migrate_device_split_page_bad_inputs() {
    let (s, p) = one_pgmap(16);
    let pg = |i| PageRef::new(&p, i).unwrap();
    // Free order-0 page.
    let r = space_unchanged(&s, "order 0", || migrate_device_split_page(pg(3)));
    assert_errno("migrate_device_split_page order 0", r, Errno::EINVAL);
    // Allocated large folio (refcount 1).
    let f = zone_device_folio_init(Folio::from_head(pg(4)), &p, Order::new(2).unwrap()).unwrap();
    let r = space_unchanged(&s, "refcount 1", || migrate_device_split_page(pg(5)));
    assert_errno("migrate_device_split_page allocated", r, Errno::EINVAL);
    // Free but locked.
    f.page().set_refcount(0);
    let r = space_unchanged(&s, "locked", || migrate_device_split_page(pg(4)));
    assert_errno("migrate_device_split_page locked", r, Errno::EAGAIN);
    f.page().set_refcount(1);
    f.unlock();
    folio_put(f);
    s.validate().unwrap();
}

// ---------------------------------------------------------------------------
// devpriv-pagemap: IomemResource
// ---------------------------------------------------------------------------

fn iomem_snap(r: &IomemResource) -> Vec<(String, u64, u64, ResourceKind)> {
    r.resources()
        .iter()
        .map(|x| {
            (
                x.name().to_owned(),
                x.start().get(),
                x.end().get(),
                x.kind(),
            )
        })
        .collect()
}

#[test]
fn iomem_resource_bad_inputs() {
    let bad_cfgs = [
        ("phys_bits below PAGE_SHIFT", Some(11), 27),
        ("phys_bits 64", Some(64), 27),
        ("section_shift below PAGE_SHIFT", None, 11),
        ("section_shift above phys_bits", Some(40), 41),
    ];
    for (what, phys_bits, section_shift) in bad_cfgs {
        let cfg = IomemConfig {
            phys_bits,
            section_shift,
            ..IomemConfig::default()
        };
        assert_errno(
            what,
            np(what, || IomemResource::new(cfg)).map(|_| ()),
            Errno::EINVAL,
        );
    }
    let r = IomemResource::new(IomemConfig::default()).unwrap();
    r.insert_resource("ram", PhysAddr::new(0), 1 << 30, ResourceKind::SystemRam)
        .unwrap();
    let before = iomem_snap(&r);
    let end = r.end().get();
    let rows: Vec<(&str, u64, u64, Errno)> = vec![
        ("size 0", 1 << 31, 0, Errno::EINVAL),
        ("past iomem end", end, 2, Errno::EINVAL),
        ("start + size overflows", u64::MAX, 2, Errno::EINVAL),
        ("overlaps", (1 << 30) - 4096, 8192, Errno::EBUSY),
    ];
    for (what, start, size, e) in rows {
        let x = np(what, || {
            r.insert_resource("x", PhysAddr::new(start), size, ResourceKind::Reserved)
        });
        assert_errno(&format!("insert_resource {what}"), x.map(|_| ()), e);
        assert_eq!(before, iomem_snap(&r), "{what}");
    }
    for (what, size) in [("size 0", 0), ("rounds past 2^64", u64::MAX - 10)] {
        let x = np(what, || r.request_free_mem_region(size, "x"));
        assert_errno(
            &format!("request_free_mem_region {what}"),
            x.map(|_| ()),
            Errno::EINVAL,
        );
        assert_eq!(before, iomem_snap(&r), "{what}");
    }
    for (what, n) in [("0 pages", 0), ("too many pages", u64::MAX)] {
        let x = np(what, || {
            r.legacy_memremap_device_private(PageCount::new(n), "x")
        });
        assert_errno(
            &format!("legacy_memremap {what}"),
            x.map(|_| ()),
            Errno::EINVAL,
        );
        assert_eq!(before, iomem_snap(&r), "{what}");
    }
    // Release twice / release of a range nobody requested.
    let got = r.request_free_mem_region(1 << 27, "dev").unwrap();
    let (start, size) = (got.start(), got.size().unwrap());
    r.release_mem_region(start, size).unwrap();
    let before = iomem_snap(&r);
    for (what, s, n) in [
        ("twice", start.get(), size),
        ("wrong size", 0, 1 << 30),
        ("never requested", 1 << 45, 4096),
        ("size 0", start.get(), 0),
    ] {
        let x = np(what, || r.release_mem_region(PhysAddr::new(s), n));
        assert_errno(&format!("release_mem_region {what}"), x, Errno::EINVAL);
        assert_eq!(before, iomem_snap(&r), "{what}");
    }
    // A full space: ERANGE.
    let small = IomemResource::new(IomemConfig {
        phys_bits: Some(28),
        section_shift: 27,
        ..IomemConfig::default()
    })
    .unwrap();
    small
        .insert_resource("ram", PhysAddr::new(0), 1 << 28, ResourceKind::SystemRam)
        .unwrap();
    let before = iomem_snap(&small);
    let x = np("full", || small.request_free_mem_region(4096, "x"));
    assert_errno("request_free_mem_region full", x.map(|_| ()), Errno::ERANGE);
    assert_eq!(before, iomem_snap(&small));
}

// ---------------------------------------------------------------------------
// devpriv (root): DrmBuddy
// ---------------------------------------------------------------------------

#[test]
fn drm_buddy_bad_inputs() {
    for (what, size, max) in [
        ("size 0", 0, 0),
        (
            "max_order above the limit",
            1 << 20,
            DrmBuddy::MAX_ORDER_LIMIT + 1,
        ),
        ("max_order u32::MAX", 1 << 20, u32::MAX),
    ] {
        assert_errno(
            what,
            np(what, || DrmBuddy::new(size, max)).map(|_| ()),
            Errno::EINVAL,
        );
    }
    let mut b = DrmBuddy::new(8, 3).unwrap();
    let a = b.alloc(2).unwrap();
    let snap = |b: &DrmBuddy| {
        b.validate().unwrap();
        (
            b.avail(),
            (0..=b.max_order())
                .map(|o| b.free_blocks(o))
                .collect::<Vec<_>>(),
        )
    };
    let before = snap(&b);
    let r = np("alloc order above max", || b.alloc(4));
    assert_errno("alloc order above max", r, Errno::EINVAL);
    let r = np("alloc u32::MAX", || b.alloc(u32::MAX));
    assert_errno("alloc u32::MAX", r, Errno::EINVAL);
    let r = np("alloc too large for what is free", || b.alloc(3));
    assert_errno("alloc no space", r, Errno::ENOSPC);
    let r = np("free unallocated", || b.free(a + 4));
    assert_errno("free of an unallocated block", r, Errno::EINVAL);
    let r = np("free inside a block", || b.free(a + 1));
    assert_errno("free inside an allocated block", r, Errno::EINVAL);
    let r = np("free past the end", || b.free(u64::MAX));
    assert_errno("free past the end", r, Errno::EINVAL);
    assert_eq!(before, snap(&b));
    b.free(a).unwrap();
    let before = snap(&b);
    let r = np("free twice", || b.free(a));
    assert_errno("free twice", r, Errno::EINVAL);
    assert_eq!(before, snap(&b));
}

// ---------------------------------------------------------------------------
// devpriv-migrate: encoders
// ---------------------------------------------------------------------------

#[test]
fn encoders_refuse_values_that_do_not_fit() {
    let four = PagingMode::FourLevel;
    let big_pfn = Pfn::new(MAX_PTE_PFN + 1);
    let dp = |i| PageFrame::DevicePrivate(DevicePrivateOffset::new(i));
    let pf = |i| PageFrame::Pfn(Pfn::new(i));
    let too_big_swp = 1u64 << four.swp_pfn_bits();
    let o = |n| Order::new(n).unwrap();
    let rows: Vec<(&str, Result<u64, Errno>)> = vec![
        (
            "pfn_pte pfn > MAX_PTE_PFN",
            Pte::pfn_pte(big_pfn, _PAGE_PRESENT).map(Pte::raw),
        ),
        (
            "pfn_pte prot in the pfn field",
            Pte::pfn_pte(Pfn::new(1), _PAGE_PRESENT | 1 << 12).map(Pte::raw),
        ),
        (
            "pfn_pte not present",
            Pte::pfn_pte(Pfn::new(1), _PAGE_RW).map(Pte::raw),
        ),
        (
            "Pmd::table pfn > MAX_PTE_PFN",
            Pmd::table(big_pfn).map(Pmd::raw),
        ),
        (
            "Pmd::huge pfn not 512-aligned",
            Pmd::huge(Pfn::new(1), _PAGE_PRESENT).map(Pmd::raw),
        ),
        (
            "Pmd::huge pfn > MAX_PTE_PFN",
            Pmd::huge(Pfn::new((MAX_PTE_PFN + 1) & !511), _PAGE_PRESENT).map(Pmd::raw),
        ),
        (
            "Pmd::huge not present",
            Pmd::huge(Pfn::new(512), _PAGE_RW).map(Pmd::raw),
        ),
        ("swp_entry type 32", swp_entry(32, 0).map(Softleaf::raw)),
        (
            "swp_entry offset 2^58",
            swp_entry(0, 1 << 58).map(Softleaf::raw),
        ),
        (
            "Softleaf::from_raw bit 63",
            Softleaf::from_raw(1 << 63).map(Softleaf::raw),
        ),
        (
            "make_migration_entry pfn too big",
            make_migration_entry(MigrationKind::Read, pf(too_big_swp), four).map(Softleaf::raw),
        ),
        (
            "make_migration_entry offset too big",
            make_migration_entry(MigrationKind::Write, dp(too_big_swp), four).map(Softleaf::raw),
        ),
        (
            "make_device_private_entry offset too big",
            make_device_private_entry(true, DevicePrivateOffset::new(too_big_swp), four)
                .map(Softleaf::raw),
        ),
        (
            "make_device_exclusive_entry pfn too big",
            make_device_exclusive_entry(Pfn::new(too_big_swp), four).map(Softleaf::raw),
        ),
        (
            "make_hwpoison_entry pfn too big",
            make_hwpoison_entry(Pfn::new(too_big_swp), four).map(Softleaf::raw),
        ),
        (
            "make_pte_marker_entry empty",
            make_pte_marker_entry(0).map(Softleaf::raw),
        ),
        (
            "make_pte_marker_entry undefined bits",
            make_pte_marker_entry(1 << 40).map(Softleaf::raw),
        ),
        (
            "Softleaf::with_flags on a device-private entry",
            make_device_private_entry(false, DevicePrivateOffset::new(1), four)
                .and_then(|e| {
                    e.with_flags(
                        SoftleafFlags {
                            young: true,
                            dirty: false,
                        },
                        four,
                    )
                })
                .map(Softleaf::raw),
        ),
        (
            "Pte::from_swp_entry offset past 50 bits",
            swp_entry(0, 1 << 50)
                .and_then(Pte::from_swp_entry)
                .map(Pte::raw),
        ),
        (
            "Pmd::from_swp_entry offset past 50 bits",
            swp_entry(0, 1 << 50)
                .and_then(Pmd::from_swp_entry)
                .map(Pmd::raw),
        ),
        (
            "MigratePfn::new index > MAX_INDEX",
            MigratePfn::new(pf(MigratePfn::MAX_INDEX + 1)).map(MigratePfn::raw),
        ),
        (
            "MigratePfn::from_raw bit 2",
            MigratePfn::from_raw(1 << 2).map(MigratePfn::raw),
        ),
        (
            "MigratePfn::with DEVICE_PRIVATE",
            MigratePfn::new(pf(1))
                .and_then(|m| m.with(MigratePfn::DEVICE_PRIVATE))
                .map(MigratePfn::raw),
        ),
        (
            "MigratePfn::with undefined bit",
            MigratePfn::new(pf(1))
                .and_then(|m| m.with(1 << 2))
                .map(MigratePfn::raw),
        ),
        (
            "MigratePfn::checked_add past MAX_INDEX",
            MigratePfn::new(pf(MigratePfn::MAX_INDEX))
                .and_then(|m| m.checked_add(PageCount::ONE))
                .map(MigratePfn::raw),
        ),
        (
            "MigrateVmaFlags::from_bits undefined",
            MigrateVmaFlags::from_bits(1 << 20).map(|f| u64::from(f.bits())),
        ),
        (
            "PvmwFlags::from_bits undefined",
            PvmwFlags::from_bits(1 << 20).map(|f| u64::from(f.bits())),
        ),
        (
            "PvmwTarget::new zero pages",
            PvmwTarget::new(pf(1), PageCount::ZERO, false).map(|t| t.nr_pages().get()),
        ),
        (
            "PvmwTarget::new past the index space",
            PvmwTarget::new(pf(u64::MAX), PageCount::new(2), false).map(|t| t.nr_pages().get()),
        ),
        (
            "PvmwPfnV2::encode index 2^63",
            PvmwPfnV2::encode(pf(1 << 63)).map(|v| v.raw()),
        ),
        (
            "HmmPfn::new index 2^52",
            HmmPfn::new(pf(1 << 52), Order::ZERO, false).map(HmmPfn::raw),
        ),
        (
            "HmmPfn::new order 32",
            HmmPfn::new(pf(1), o(32), false).map(HmmPfn::raw),
        ),
        (
            "HmmPfnLayout::MAINLINE device-private",
            HmmPfnLayout::MAINLINE.encode(dp(1), Order::ZERO, false),
        ),
        (
            "HmmPfnLayout::SERIES index in the flags",
            HmmPfnLayout::SERIES.encode(pf(u64::MAX >> 4), Order::ZERO, false),
        ),
        (
            "HmmPfnLayout::SERIES order 32",
            HmmPfnLayout::SERIES.encode(pf(1), o(32), false),
        ),
    ];
    for (what, r) in rows {
        assert_errno(what, r, Errno::EINVAL);
    }
}

// ---------------------------------------------------------------------------
// devpriv-migrate: a machine
// ---------------------------------------------------------------------------

const BASE: u64 = 0x7f00_0000_0000;
const VMA_LEN: u64 = 2 * PMD_SIZE;
const SYS_PAGES: u64 = 4096;

struct Machine {
    mem: Memory,
    mm: Arc<Mm>,
}

/// A 4 MiB read-write anonymous VMA at `BASE` with pages 0..4 faulted in
/// and written, and a 1 MiB read-only VMA right after it.
fn machine() -> Machine {
    let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(SYS_PAGES)).unwrap();
    let mem = Memory::new(Arc::new(sys), Arc::new(small_space()));
    let mut mm = Mm::new(MmConfig::default());
    mm.mmap_anon(BASE, VMA_LEN, VmFlags::RW).unwrap();
    mm.mmap_anon(BASE + VMA_LEN, 256 * PAGE_SIZE, VmFlags::READ)
        .unwrap();
    let mm = Arc::new(mm);
    for i in 0..4 {
        let a = BASE + i * PAGE_SIZE;
        handle_mm_fault(&mem, &mm, a, FaultFlags::WRITE).unwrap();
        mm.write_user(mem.sys(), a, 0xabc0 + i).unwrap();
    }
    Machine { mem, mm }
}

/// VMAs, every PMD and PTE over them, free system pages, every
/// system folio's refcount/mapcount, and the device-private space.
type MmSnap = (
    Vec<(u64, u64, u64)>,
    Vec<(u64, Option<u64>, Option<u64>, u64)>,
    u64,
    Vec<(u64, u64, u64)>,
    SpaceSnap,
);

fn mm_snap(m: &Machine) -> MmSnap {
    mm_snap_of(&m.mem, &m.mm)
}

fn mm_snap_of(mem: &Memory, mm: &Mm) -> MmSnap {
    let vmas = mm
        .vmas()
        .iter()
        .map(|v| (v.start(), v.end(), v.flags().bits()))
        .collect();
    let mut ptes = Vec::new();
    let mut folios = Vec::new();
    for v in mm.vmas() {
        let mut a = v.start();
        while a < v.end() {
            let pte = mm.ptep_get_lockless(a);
            let pmd = mm.pmdp_get_lockless(a);
            ptes.push((
                a,
                pmd.map(Pmd::raw),
                pte.map(Pte::raw),
                mm.softleaf_at(a).raw(),
            ));
            if let Some(p) = pte.filter(|p| p.is_present())
                && let Some(f) = mem.sys().pfn_folio(p.pfn())
            {
                folios.push((f.pfn().get(), f.refcount(), f.mapcount()));
            }
            a += PAGE_SIZE;
        }
    }
    (
        vmas,
        ptes,
        mem.sys().nr_free(),
        folios,
        space_snap(mem.space()),
    )
}

#[track_caller]
fn mm_unchanged<R>(m: &Machine, what: &str, f: impl FnOnce() -> R) -> R {
    let before = mm_snap(m);
    let r = np(what, f);
    assert_eq!(before, mm_snap(m), "{what}: state changed");
    r
}

// ---------------------------------------------------------------------------
// devpriv-migrate: Mm
// ---------------------------------------------------------------------------

#[test]
fn mmap_anon_and_munmap_bad_ranges() {
    let m = machine();
    let mut mm = Arc::try_unwrap(m.mm).unwrap();
    let mem = m.mem;
    let rows: &[(&str, u64, u64, Errno)] = &[
        ("unaligned start", 0x1000_0001, PAGE_SIZE, Errno::EINVAL),
        ("unaligned len", 0x1000_0000, 100, Errno::EINVAL),
        ("zero len", 0x1000_0000, 0, Errno::EINVAL),
        ("past TASK_SIZE", TASK_SIZE, PAGE_SIZE, Errno::EINVAL),
        (
            "start + len overflows",
            !(PAGE_SIZE - 1),
            2 * PAGE_SIZE,
            Errno::EINVAL,
        ),
        ("len u64::MAX (unaligned)", 0, u64::MAX, Errno::EINVAL),
    ];
    for &(what, start, len, e) in rows {
        let before = mm_snap_of(&mem, &mm);
        let r = np(what, || mm.mmap_anon(start, len, VmFlags::RW).map(|_| ()));
        assert_errno(&format!("mmap_anon {what}"), r, e);
        let r = np(what, || mm.munmap(&mem, start, len));
        assert_errno(&format!("munmap {what}"), r, e);
        assert_eq!(before, mm_snap_of(&mem, &mm), "{what}");
    }
    let before = mm_snap_of(&mem, &mm);
    let r = np("overlap", || {
        mm.mmap_anon(BASE + PAGE_SIZE, PAGE_SIZE, VmFlags::RW)
            .map(|_| ())
    });
    assert_errno("mmap_anon overlap", r, Errno::EEXIST);
    assert_eq!(before, mm_snap_of(&mem, &mm));
    // Unmapping twice: the second is a no-op success (POSIX).
    mm.munmap(&mem, BASE + VMA_LEN, 256 * PAGE_SIZE).unwrap();
    let before = mm_snap_of(&mem, &mm);
    np("munmap twice", || {
        mm.munmap(&mem, BASE + VMA_LEN, 256 * PAGE_SIZE)
    })
    .unwrap();
    assert_eq!(before, mm_snap_of(&mem, &mm));
}

#[test]
fn mm_page_table_accessors_bad_addresses() {
    let m = machine();
    let (mm, mem) = (&*m.mm, &m.mem);
    let outside = 0x1000_0000;
    let e = |what: &str, r: Result<(), Errno>, e: Errno| assert_errno(what, r, e);
    mm_unchanged(&m, "accessors", || {
        e(
            "pte_offset_map_lock outside",
            mm.pte_offset_map_lock(outside).map(|_| ()),
            Errno::EFAULT,
        );
        e(
            "pte_alloc_map_lock outside",
            mm.pte_alloc_map_lock(outside).map(|_| ()),
            Errno::EFAULT,
        );
        e(
            "pmd_lock outside",
            mm.pmd_lock(outside).map(|_| ()),
            Errno::EFAULT,
        );
        e(
            "set_pte outside",
            mm.set_pte(outside, Pte::NONE).map(|_| ()),
            Errno::EFAULT,
        );
        e(
            "set_pmd outside",
            mm.set_pmd(outside, Pmd::NONE).map(|_| ()),
            Errno::EFAULT,
        );
        e(
            "read_user outside",
            mm.read_user(mem.sys(), outside).map(|_| ()),
            Errno::EFAULT,
        );
        e(
            "read_user not faulted",
            mm.read_user(mem.sys(), BASE + 100 * PAGE_SIZE).map(|_| ()),
            Errno::EFAULT,
        );
        e(
            "write_user outside",
            mm.write_user(mem.sys(), outside, 1),
            Errno::EFAULT,
        );
        e(
            "write_user not faulted",
            mm.write_user(mem.sys(), BASE + 100 * PAGE_SIZE, 1),
            Errno::EFAULT,
        );
        e(
            "zap_page_range unaligned",
            mm.zap_page_range(mem, BASE + 1, BASE + PAGE_SIZE),
            Errno::EINVAL,
        );
        e(
            "zap_page_range inverted",
            mm.zap_page_range(mem, BASE + PAGE_SIZE, BASE),
            Errno::EINVAL,
        );
        let v = &mm.vmas()[0];
        e(
            "vma_address outside",
            v.vma_address(0, 1).map(|_| ()),
            Errno::EFAULT,
        );
        e(
            "vma_address u64::MAX pages",
            v.vma_address(u64::MAX, u64::MAX).map(|_| ()),
            Errno::EFAULT,
        );
        // A guard's neighbour.
        let g = mm.pte_offset_map_lock(BASE).unwrap();
        e(
            "PteGuard::get_at other table",
            g.get_at(BASE + PMD_SIZE).map(|_| ()),
            Errno::EINVAL,
        );
        e(
            "PteGuard::set_at other table",
            g.set_at(BASE + PMD_SIZE, Pte::NONE),
            Errno::EINVAL,
        );
        e(
            "PteGuard::replace stale old",
            g.replace(Pte::NONE, Pte::NONE),
            Errno::EAGAIN,
        );
        drop(g);
        let g = mm.pmd_lock(BASE).unwrap();
        e(
            "PmdGuard::set table pointer",
            g.set(Pmd::table(Pfn::new(1)).unwrap()),
            Errno::EINVAL,
        );
        e(
            "PmdGuard::set over a used table",
            g.set(Pmd::NONE),
            Errno::EBUSY,
        );
        e(
            "PmdGuard::get_and_clear on a table",
            g.get_and_clear().map(|_| ()),
            Errno::EINVAL,
        );
        e(
            "PmdGuard::populate over a table",
            g.populate(|_| Ok(Pte::NONE)),
            Errno::EEXIST,
        );
    });
}

#[test]
fn map_folio_bad_inputs() {
    let m = machine();
    let (mm, mem) = (&*m.mm, &m.mem);
    let f = mem.sys().alloc_folio(Order::ZERO).unwrap();
    let e = |what: &str, r: Result<(), Errno>, e: Errno| assert_errno(what, r, e);
    mm_unchanged(&m, "map_folio", || {
        e(
            "map_folio_ptes unaligned",
            mm.map_folio_ptes(BASE + 1, f, true),
            Errno::EINVAL,
        );
        e(
            "map_folio_ptes outside",
            mm.map_folio_ptes(0x1000_0000, f, true),
            Errno::EFAULT,
        );
        e(
            "map_folio_ptes over a mapped PTE",
            mm.map_folio_ptes(BASE, f, true),
            Errno::EEXIST,
        );
        e(
            "map_folio_pmd order 0",
            mm.map_folio_pmd(BASE, f, true),
            Errno::EINVAL,
        );
    });
    f.put().unwrap();
    let before = mm_snap(&m);
    e(
        "SysFolio::put on a free folio",
        np("put free", || f.put().map(|_| ())),
        Errno::EINVAL,
    );
    assert_eq!(before, mm_snap(&m));
}

#[test]
fn handle_mm_fault_bad_addresses() {
    let m = machine();
    mm_unchanged(&m, "faults", || {
        let r = handle_mm_fault(&m.mem, &m.mm, 0x1000_0000, FaultFlags::READ);
        assert_errno("fault with no VMA", r, Errno::EFAULT);
        let r = handle_mm_fault(&m.mem, &m.mm, BASE + VMA_LEN, FaultFlags::WRITE);
        assert_errno("write fault on a read-only VMA", r, Errno::EFAULT);
    });
}

// ---------------------------------------------------------------------------
// devpriv-migrate: SystemMemory and SysFolio
// ---------------------------------------------------------------------------

#[test]
fn system_memory_bad_inputs() {
    for (what, base, n) in [
        ("zero pages", 0x10_0000, 0),
        ("base not 512-aligned", 0x10_0001, 512),
        ("past MAX_PTE_PFN", MAX_PTE_PFN & !511, 512),
        ("u64::MAX pages", 0, u64::MAX),
    ] {
        let r = np(what, || {
            SystemMemory::new(Pfn::new(base), PageCount::new(n))
        });
        assert_errno(what, r.map(|_| ()), Errno::EINVAL);
    }
    let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(1024)).unwrap();
    let f = sys.alloc_folio(Order::ZERO).unwrap();
    let big = sys.alloc_folio(Order::HPAGE_PMD).unwrap();
    let snap = |sys: &SystemMemory| {
        (
            sys.nr_free(),
            f.refcount(),
            f.mapcount(),
            big.refcount(),
            big.mapcount(),
            big.is_large(),
        )
    };
    let before = snap(&sys);
    let e = |what: &str, r: Result<(), Errno>, e: Errno| {
        assert_errno(what, np(what, || r), e);
    };
    e(
        "alloc_folio order 1",
        sys.alloc_folio(Order::new(1).unwrap()).map(|_| ()),
        Errno::EINVAL,
    );
    e(
        "alloc_folio order 10",
        sys.alloc_folio(Order::new(10).unwrap()).map(|_| ()),
        Errno::EINVAL,
    );
    e(
        "alloc_folio order 9 when no aligned run is left",
        sys.alloc_folio(Order::HPAGE_PMD).map(|_| ()),
        Errno::ENOMEM,
    );
    e(
        "read below base",
        sys.read(Pfn::new(0)).map(|_| ()),
        Errno::EFAULT,
    );
    e(
        "read a free page",
        sys.read(Pfn::new(0x10_0000 + 100)).map(|_| ()),
        Errno::EFAULT,
    );
    e(
        "write past the end",
        sys.write(Pfn::new(u64::MAX), 1),
        Errno::EFAULT,
    );
    e(
        "put_many more than held",
        f.put_many(2).map(|_| ()),
        Errno::EINVAL,
    );
    e(
        "add_rmap_ptes past the folio",
        f.add_rmap_ptes(0, 2),
        Errno::EINVAL,
    );
    e(
        "add_rmap_ptes overflowing",
        big.add_rmap_ptes(u64::MAX, 2),
        Errno::EINVAL,
    );
    e(
        "remove_rmap_ptes not mapped",
        f.remove_rmap_ptes(0, 1),
        Errno::EINVAL,
    );
    e("add_rmap_pmd on order 0", f.add_rmap_pmd(), Errno::EINVAL);
    e(
        "remove_rmap_pmd not PMD-mapped",
        big.remove_rmap_pmd(),
        Errno::EINVAL,
    );
    e(
        "split_to_order0 not large",
        f.split_to_order0(),
        Errno::EINVAL,
    );
    e(
        "split_to_order0 not locked",
        big.split_to_order0(),
        Errno::EINVAL,
    );
    e("unlock not locked", f.unlock(), Errno::EINVAL);
    assert_eq!(before, snap(&sys));
}

// ---------------------------------------------------------------------------
// devpriv-migrate: walks, splits
// ---------------------------------------------------------------------------

#[test]
fn page_vma_mapped_walk_bad_inputs_and_empty_vma() {
    let m = machine();
    let other = machine();
    let (mm, v) = (&*m.mm, &m.mm.vmas()[0]);
    let foreign = &other.mm.vmas()[0];
    let pf = PageFrame::Pfn(Pfn::new(0x10_0000));
    let one = PageCount::ONE;
    let rows: Vec<(&str, Result<(), Errno>, Errno)> = vec![
        (
            "undefined flags",
            PageVmaMappedWalk::new(mm, v, pf, one, 0, BASE, PvmwFlags::DEVICE_PRIVATE).map(|_| ()),
            Errno::EINVAL,
        ),
        (
            "vma of another mm",
            PageVmaMappedWalk::new(mm, foreign, pf, one, 0, BASE, PvmwFlags::NONE).map(|_| ()),
            Errno::EINVAL,
        ),
        (
            "unaligned address",
            PageVmaMappedWalk::new(mm, v, pf, one, 0, BASE + 1, PvmwFlags::NONE).map(|_| ()),
            Errno::EINVAL,
        ),
        (
            "zero pages",
            PageVmaMappedWalk::new(mm, v, pf, PageCount::ZERO, 0, BASE, PvmwFlags::NONE)
                .map(|_| ()),
            Errno::EINVAL,
        ),
        (
            "address outside the vma",
            PageVmaMappedWalk::new(mm, v, pf, one, 0, 0x1000_0000, PvmwFlags::NONE).map(|_| ()),
            Errno::EFAULT,
        ),
        (
            "device-private range outside the vma",
            PageVmaMappedWalk::for_device_private(
                mm,
                v,
                DevicePrivateOffset::new(0),
                one,
                0,
                PvmwFlags::NONE,
            )
            .map(|_| ()),
            Errno::EFAULT,
        ),
    ];
    mm_unchanged(&m, "walk constructors", || {
        for (what, r, e) in rows {
            assert_errno(&format!("PageVmaMappedWalk {what}"), r, e);
        }
    });
    // A walk on an empty VMA (nothing faulted in) finds nothing.
    let mut mm2 = Mm::new(MmConfig::default());
    mm2.mmap_anon(BASE, VMA_LEN, VmFlags::RW).unwrap();
    let before = mm_snap_of(&m.mem, &mm2);
    let v2 = &mm2.vmas()[0];
    for flags in [PvmwFlags::NONE, PvmwFlags::SYNC, PvmwFlags::MIGRATION] {
        let mut w =
            PageVmaMappedWalk::new(&mm2, v2, pf, PageCount::new(512), BASE >> 12, BASE, flags)
                .unwrap();
        assert!(!np("walk empty", || w.walk()), "walk on an empty VMA");
        let mut w = PageVmaMappedWalk::for_device_private(
            &mm2,
            v2,
            DevicePrivateOffset::new(0),
            PageCount::new(8),
            BASE >> 12,
            flags,
        )
        .unwrap();
        assert!(!np("walk empty dp", || w.walk()));
        assert_errno(
            "PVMW set_pte without a match",
            w.set_pte(Pte::NONE),
            Errno::EINVAL,
        );
        assert_errno(
            "PVMW get_and_clear_pte without a match",
            w.get_and_clear_pte().map(|_| ()),
            Errno::EINVAL,
        );
        assert_errno(
            "PVMW set_pmd without a match",
            w.set_pmd(Pmd::NONE),
            Errno::EINVAL,
        );
    }
    assert_eq!(before, mm_snap_of(&m.mem, &mm2));
}

#[test]
fn splits_of_mapped_or_small_folios() {
    let m = machine();
    let mm = &*m.mm;
    let pfn = mm.ptep_get_lockless(BASE).unwrap().pfn();
    let small = m.mem.sys().pfn_folio(pfn).unwrap();
    mm_unchanged(&m, "splits", || {
        assert_errno(
            "split_folio not large",
            split_folio(&m.mem, mm, AnyFolio::Sys(small)),
            Errno::EINVAL,
        );
        assert_errno(
            "split_unmapped_for_migration not large",
            split_unmapped_for_migration(AnyFolio::Sys(small)),
            Errno::EINVAL,
        );
        assert_errno(
            "split_huge_pmd no table",
            split_huge_pmd(&m.mem, mm, 0x1000_0000),
            Errno::EFAULT,
        );
    });
    // A mapped large folio, locked: still mapped.
    let mut mm2 = Mm::new(MmConfig::default());
    mm2.mmap_anon(BASE, VMA_LEN, VmFlags::RW).unwrap();
    let big = m.mem.sys().alloc_folio(Order::HPAGE_PMD).unwrap();
    AnyFolio::Sys(big).set_anon(1, BASE >> 12);
    mm2.map_folio_pmd(BASE, big, true).unwrap();
    assert!(big.trylock());
    let before = mm_snap_of(&m.mem, &mm2);
    let r = np("split mapped", || {
        split_unmapped_for_migration(AnyFolio::Sys(big))
    });
    assert_errno(
        "split_unmapped_for_migration of a mapped folio",
        r,
        Errno::EINVAL,
    );
    assert_eq!(before, mm_snap_of(&m.mem, &mm2));
    big.unlock().unwrap();
    let r = np("split unlocked", || {
        split_folio(&m.mem, &mm2, AnyFolio::Sys(big))
    });
    assert_errno("split_folio unlocked", r, Errno::EINVAL);
    assert_eq!(before, mm_snap_of(&m.mem, &mm2));
}

// ---------------------------------------------------------------------------
// devpriv-migrate: migrate_vma_* and migrate_device_*
// ---------------------------------------------------------------------------

#[test]
fn migrate_vma_setup_bad_ranges() {
    let m = machine();
    let other = machine();
    let mm = &*m.mm;
    let v = &mm.vmas()[0];
    let sel = MigrateVmaFlags::SELECT_SYSTEM;
    let mk = |s: u64, e: u64| MigrateVma::new(mm, v, s, e, sel, Some(Owner(0xd0)));
    let mut rows: Vec<(&str, MigrateVma<'_>)> = vec![
        ("inverted", mk(BASE + 4 * PAGE_SIZE, BASE)),
        ("empty", mk(BASE, BASE)),
        ("unaligned, under a page", mk(BASE + 1, BASE + 100)),
        (
            "start before the vma",
            mk(BASE - PAGE_SIZE, BASE + PAGE_SIZE),
        ),
        ("end past the vma", mk(BASE, BASE + VMA_LEN + PAGE_SIZE)),
        (
            "start at the vma end",
            mk(BASE + VMA_LEN, BASE + VMA_LEN + PAGE_SIZE),
        ),
        ("start u64::MAX", mk(u64::MAX, u64::MAX)),
        (
            "vma of another mm",
            MigrateVma::new(mm, &other.mm.vmas()[0], BASE, BASE + PAGE_SIZE, sel, None),
        ),
    ];
    let mut short_dst = mk(BASE, BASE + 4 * PAGE_SIZE);
    short_dst.dst.truncate(3);
    rows.push(("missing dst (dst shorter)", short_dst));
    let mut short_src = mk(BASE, BASE + 4 * PAGE_SIZE);
    short_src.src.clear();
    rows.push(("missing src", short_src));
    let mut bad_fault = mk(BASE, BASE + PAGE_SIZE);
    bad_fault.fault_page = Some(DevicePrivateOffset::new(12345));
    rows.push(("fault_page names no page", bad_fault));
    for (what, mut a) in rows {
        let r = mm_unchanged(&m, what, || migrate_vma_setup(&m.mem, &mut a));
        assert_errno(&format!("migrate_vma_setup {what}"), r, Errno::EINVAL);
    }
    // An unlocked fault page.
    let (s, p) = (
        m.mem.space(),
        m.mem
            .space()
            .memremap_device_private_pagemap(params(4), 0)
            .unwrap(),
    );
    let mut a = mk(BASE, BASE + PAGE_SIZE);
    a.fault_page = Some(p.first_offset());
    let r = mm_unchanged(&m, "unlocked fault page", || {
        migrate_vma_setup(&m.mem, &mut a)
    });
    assert_errno("migrate_vma_setup unlocked fault page", r, Errno::EINVAL);
    s.validate().unwrap();
}

#[test]
fn migrate_vma_with_missing_dst_restores_everything() {
    let m = machine();
    let mm = &*m.mm;
    let v = &mm.vmas()[0];
    let before = mm_snap(&m);
    let mut a = MigrateVma::new(
        mm,
        v,
        BASE,
        BASE + 4 * PAGE_SIZE,
        MigrateVmaFlags::SELECT_SYSTEM,
        Some(Owner(0xd0)),
    );
    np("setup", || migrate_vma_setup(&m.mem, &mut a)).unwrap();
    assert_eq!(a.cpages, 4);
    // No destination for any entry: pages clears MIGRATE, finalize restores.
    np("pages", || migrate_vma_pages(&m.mem, &mut a));
    assert!(a.src.iter().all(|s| !s.contains(MigratePfn::MIGRATE)));
    np("finalize", || migrate_vma_finalize(&m.mem, &mut a));
    assert_eq!(before, mm_snap(&m), "state restored");
    for i in 0..4 {
        assert_eq!(
            mm.read_user(m.mem.sys(), BASE + i * PAGE_SIZE),
            Ok(0xabc0 + i)
        );
    }
}

#[test]
fn migrate_device_bad_inputs() {
    let m = machine();
    let mm = &*m.mm;
    let p = m
        .mem
        .space()
        .memremap_device_private_pagemap(params(4), 0)
        .unwrap();
    let dp0 = MigratePfn::new(PageFrame::DevicePrivate(p.first_offset())).unwrap();
    let sys0 = MigratePfn::new(PageFrame::Pfn(Pfn::new(0x10_0000))).unwrap();
    let top = MigratePfn::new(PageFrame::DevicePrivate(DevicePrivateOffset::new(
        MigratePfn::MAX_INDEX,
    )))
    .unwrap();
    let mut src4 = vec![MigratePfn::NONE; 4];
    let mut src1 = vec![MigratePfn::NONE; 1];
    mm_unchanged(&m, "migrate_device", || {
        assert_errno(
            "migrate_device_range start not device-private",
            migrate_device_range(&m.mem, mm, &mut src4, sys0, 1),
            Errno::EINVAL,
        );
        assert_errno(
            "migrate_device_range start NONE",
            migrate_device_range(&m.mem, mm, &mut src4, MigratePfn::NONE, 1),
            Errno::EINVAL,
        );
        assert_errno(
            "migrate_device_range src shorter than npages",
            migrate_device_range(&m.mem, mm, &mut src1, dp0, 4),
            Errno::EINVAL,
        );
        assert_errno(
            "migrate_device_range npages u64::MAX",
            migrate_device_range(&m.mem, mm, &mut src4, dp0, u64::MAX),
            Errno::EINVAL,
        );
        assert_errno(
            "migrate_device_range past MAX_INDEX",
            migrate_device_range(&m.mem, mm, &mut src4, top, 2),
            Errno::EINVAL,
        );
        let mut mixed = vec![dp0, sys0];
        assert_errno(
            "migrate_device_pfns a system pfn",
            migrate_device_pfns(&m.mem, mm, &mut mixed),
            Errno::EINVAL,
        );
        let mut d3 = vec![MigratePfn::NONE; 3];
        assert_errno(
            "migrate_device_pages length mismatch",
            migrate_device_pages(&m.mem, &mut src4, &mut d3),
            Errno::EINVAL,
        );
        assert_errno(
            "migrate_device_finalize length mismatch",
            migrate_device_finalize(&m.mem, mm, &src4, &d3),
            Errno::EINVAL,
        );
    });
    assert!(src4.iter().all(|s| *s == MigratePfn::NONE), "src untouched");
}

// ---------------------------------------------------------------------------
// devpriv-migrate: hmm_range_fault, dmirror
// ---------------------------------------------------------------------------

#[test]
fn hmm_range_fault_bad_ranges() {
    let m = machine();
    let mut rows: Vec<(&str, HmmRange, Errno)> = vec![
        (
            "unaligned start",
            HmmRange::new(BASE + 1, BASE + PAGE_SIZE + 1, None),
            Errno::EINVAL,
        ),
        ("empty", HmmRange::new(BASE, BASE, None), Errno::EINVAL),
        (
            "inverted",
            HmmRange {
                start: BASE + PAGE_SIZE,
                end: BASE,
                ..HmmRange::new(BASE, BASE + PAGE_SIZE, None)
            },
            Errno::EINVAL,
        ),
    ];
    let mut nv = HmmRange::new(0x1000_0000, 0x1000_1000, None);
    nv.default_flags = HmmPfn::REQ_FAULT;
    rows.push(("fault with no VMA", nv, Errno::EFAULT));
    let mut short = HmmRange::new(BASE, BASE + 4 * PAGE_SIZE, None);
    short.hmm_pfns.truncate(1);
    rows.push(("hmm_pfns shorter than the range", short, Errno::EINVAL));
    let mut w = HmmRange::new(BASE + VMA_LEN, BASE + VMA_LEN + PAGE_SIZE, None);
    w.default_flags = HmmPfn::REQ_FAULT | HmmPfn::REQ_WRITE;
    rows.push(("write fault on a read-only VMA", w, Errno::EPERM));
    for (what, mut r, e) in rows {
        let x = mm_unchanged(&m, what, || hmm_range_fault(&m.mem, &m.mm, &mut r));
        assert_errno(&format!("hmm_range_fault {what}"), x, e);
    }
    // A snapshot (no fault requested) of a range with no VMA succeeds and
    // reports HMM_PFN_ERROR, as the kernel's hmm_vma_walk_hole().
    let mut r = HmmRange::new(0x1000_0000, 0x1000_2000, None);
    mm_unchanged(&m, "snapshot no VMA", || {
        hmm_range_fault(&m.mem, &m.mm, &mut r)
    })
    .unwrap();
    assert!(r.hmm_pfns.iter().all(|p| p.raw() & HmmPfn::ERROR != 0));
}

#[test]
fn dmirror_bad_inputs() {
    let m = machine();
    let mut cfg = DmirrorConfig::with_chunk_pages(PageCount::ZERO);
    let r = mm_unchanged(&m, "dmirror zero chunk", || {
        DmirrorDevice::new(&m.mem, Owner(0xd1), cfg)
    });
    assert_errno(
        "DmirrorDevice::new zero chunk",
        r.map(|_| ()),
        Errno::EINVAL,
    );
    cfg = DmirrorConfig::with_chunk_pages(PageCount::new(64));
    cfg.max_chunks = 0;
    let r = mm_unchanged(&m, "dmirror zero max_chunks", || {
        DmirrorDevice::new(&m.mem, Owner(0xd1), cfg)
    });
    assert_errno(
        "DmirrorDevice::new zero max_chunks",
        r.map(|_| ()),
        Errno::EINVAL,
    );
    let dev = DmirrorDevice::new(
        &m.mem,
        Owner(0xd1),
        DmirrorConfig::with_chunk_pages(PageCount::new(64)),
    )
    .unwrap();
    let other = Arc::new(Mm::new(MmConfig::default()));
    let d = dev.open(&m.mm);
    mm_unchanged(&m, "dmirror", || {
        assert_errno(
            "read_page foreign offset",
            dev.read_page(DevicePrivateOffset::new(1 << 30)),
            Errno::EINVAL,
        );
        assert_errno(
            "write_page foreign offset",
            dev.write_page(DevicePrivateOffset::new(1 << 30), 1),
            Errno::EINVAL,
        );
        let rows: &[(&str, u64, u64)] = &[
            ("unaligned addr", BASE + 1, 1),
            ("zero npages", BASE, 0),
            ("overflowing npages", BASE, u64::MAX),
        ];
        for &(what, addr, n) in rows {
            let mut c = HmmDmirrorCmd::new(addr, n);
            assert_errno(
                &format!("read {what}"),
                d.read(&m.mm, &mut c),
                Errno::EINVAL,
            );
            let mut c = HmmDmirrorCmd::new(addr, n);
            assert_errno(
                &format!("write {what}"),
                d.write(&m.mm, &mut c, &[0]),
                Errno::EINVAL,
            );
            let mut c = HmmDmirrorCmd::new(addr, n);
            assert_errno(
                &format!("migrate_to_dev {what}"),
                d.migrate_to_dev(&m.mm, &mut c),
                Errno::EINVAL,
            );
            let mut c = HmmDmirrorCmd::new(addr, n);
            assert_errno(
                &format!("migrate_to_sys {what}"),
                d.migrate_to_sys(&m.mm, &mut c),
                Errno::EINVAL,
            );
            let mut c = HmmDmirrorCmd::new(addr, n);
            assert_errno(
                &format!("snapshot {what}"),
                d.snapshot(&m.mm, &mut c),
                Errno::EINVAL,
            );
        }
        let mut c = HmmDmirrorCmd::new(BASE, 1);
        assert_errno("read other mm", d.read(&other, &mut c), Errno::EINVAL);
        let mut c = HmmDmirrorCmd::new(BASE, 2);
        assert_errno(
            "write data too short",
            d.write(&m.mm, &mut c, &[0]),
            Errno::EINVAL,
        );
        let mut c = HmmDmirrorCmd::new(BASE + VMA_LEN, 1);
        assert_errno(
            "write read-only VMA",
            d.write(&m.mm, &mut c, &[0]),
            Errno::EPERM,
        );
        assert_errno("release other mm", d.release(&other), Errno::EINVAL);
    });
}

// ---------------------------------------------------------------------------
// devpriv (root): workload entry points
// ---------------------------------------------------------------------------

#[test]
fn root_workloads_bad_configs() {
    use devpriv::quickbench::{self, BenchConfig};
    use devpriv::xe_pool::{self, XeConfig};
    let ok = XeConfig::new(ReinitPolicy::AtAlloc, 1, 1, 1);
    let rows = [
        ("threads 0", XeConfig { threads: 0, ..ok }),
        (
            "iterations 0",
            XeConfig {
                iterations: 0,
                ..ok
            },
        ),
        ("resident 0", XeConfig { resident: 0, ..ok }),
        (
            "vram_pages 0",
            XeConfig {
                vram_pages: 0,
                ..ok
            },
        ),
        (
            "vram_pages not a multiple of 512",
            XeConfig {
                vram_pages: 513,
                ..ok
            },
        ),
    ];
    for (what, cfg) in rows {
        let r = np(what, || xe_pool::run(&cfg));
        assert_errno(
            &format!("xe_pool::run {what}"),
            r.map(|_| ()),
            Errno::EINVAL,
        );
    }
    for (what, cfg) in [
        (
            "zero pagemaps",
            BenchConfig {
                pagemaps: 0,
                ..BenchConfig::default()
            },
        ),
        (
            "zero lookups",
            BenchConfig {
                lookups: 0,
                ..BenchConfig::default()
            },
        ),
    ] {
        let r = np(what, || quickbench::run(&cfg));
        assert_errno(
            &format!("quickbench::run {what}"),
            r.map(|_| ()),
            Errno::EINVAL,
        );
    }
}

#[test]
fn page_mapped_in_vma_not_mapped() {
    use devpriv::migrate::page_vma_mapped::page_mapped_in_vma;
    let m = machine();
    let v = &m.mm.vmas()[0];
    mm_unchanged(&m, "page_mapped_in_vma", || {
        let pf = PageFrame::Pfn(Pfn::new(0x10_0000 + 4000));
        assert_errno(
            "not mapped there",
            page_mapped_in_vma(&m.mm, v, pf, BASE >> 12),
            Errno::EFAULT,
        );
        assert_errno(
            "outside the VMA",
            page_mapped_in_vma(&m.mm, v, pf, 0),
            Errno::EFAULT,
        );
        assert_errno(
            "pgoff u64::MAX",
            page_mapped_in_vma(&m.mm, v, pf, u64::MAX),
            Errno::EFAULT,
        );
    });
}

/// `pte_offset_map_lock` on a none PMD (`ENOENT`) and on a leaf PMD
/// (`EBUSY`), `PmdGuard::pte_alloc` on a leaf (`EBUSY`), and a folio walk
/// whose folio lies outside the VMA (`EFAULT`): errno, no panic, and the
/// page tables unchanged.
#[test]
fn pte_table_access_through_none_and_leaf_pmds() {
    let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(SYS_PAGES)).unwrap();
    let mem = Memory::new(Arc::new(sys), Arc::new(small_space()));
    let mut mm = Mm::new(MmConfig::default());
    mm.mmap_anon(BASE, 2 * PMD_SIZE, VmFlags::RW).unwrap();
    let thp = mem.sys().alloc_folio(Order::HPAGE_PMD).unwrap();
    mm.map_folio_pmd(BASE + PMD_SIZE, thp, true).unwrap();
    thp.put().unwrap();
    let before = mm_snap_of(&mem, &mm);
    np("table access", || {
        assert_errno(
            "pte_offset_map_lock on a none PMD",
            mm.pte_offset_map_lock(BASE).map(|_| ()),
            Errno::ENOENT,
        );
        assert_errno(
            "pte_offset_map_lock on a leaf PMD",
            mm.pte_offset_map_lock(BASE + PMD_SIZE).map(|_| ()),
            Errno::EBUSY,
        );
        let guard = mm.pmd_lock(BASE + PMD_SIZE).unwrap();
        assert_errno("pte_alloc on a leaf PMD", guard.pte_alloc(), Errno::EBUSY);
        drop(guard);
        // A folio whose index puts it past the VMA's end.
        let stray = mem.sys().alloc_folio(Order::ZERO).unwrap();
        stray.set_index(BASE / PAGE_SIZE + 4 * 512);
        let vma = mm.vma_lookup(BASE).unwrap();
        assert_errno(
            "for_folio outside the VMA",
            PageVmaMappedWalk::for_folio(&mm, vma, stray, PvmwFlags::NONE).map(|_| ()),
            Errno::EFAULT,
        );
        stray.put().unwrap();
    });
    assert!(before == mm_snap_of(&mem, &mm), "page tables changed");
}

/// `simulate::run` with settings `SimConfig::check` refuses: `EINVAL`
/// before anything is built (no overflow on huge thread counts).
#[test]
fn simulate_run_refuses_bad_settings() {
    use devpriv::simulate::{SimConfig, run};
    let good = SimConfig {
        devices: 1,
        threads: 1,
        rounds: 0,
        chunk_mib: 2,
        seed: 0,
    };
    for bad in [
        SimConfig { devices: 0, ..good },
        SimConfig {
            threads: usize::MAX,
            ..good
        },
        SimConfig {
            chunk_mib: 3,
            ..good
        },
        SimConfig {
            rounds: usize::MAX,
            ..good
        },
    ] {
        assert_errno(
            "simulate::run",
            np("simulate::run", || run(&bad, false)).map(|_| ()),
            Errno::EINVAL,
        );
    }
}
