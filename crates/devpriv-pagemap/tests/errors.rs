//! The bad-input catalogue (`docs/errors.md`) for `devpriv-pagemap`: one test per row
//! or one table-driven test per entry point.
//!
//! Every test feeds a public entry point an invalid input and checks three
//! things: the errno (or the documented "WARN and continue" behaviour), that
//! the call did not panic (each call runs under `catch_unwind`), and that
//! the state it could have touched is unchanged: `validate()` on the
//! structure plus a snapshot taken before and compared after.
//!
//! Run: `cargo test -p devpriv-pagemap --test errors`.

#[path = "../../../tests/support/bad_input.rs"]
mod bad_input;
#[path = "../../../tests/support/space.rs"]
mod space;

use bad_input::{assert_errno, np};
use devpriv_core::{Errno, Order, PageCount, PhysAddr};
use devpriv_pagemap::resource::{IomemConfig, IomemResource, ResourceKind};
use devpriv_pagemap::{
    DevPagemap, DevPagemapOps, DevicePrivateSpace, Folio, InitError, MAX_PAGEMAP_PAGES, MemoryType,
    PageRef, PagemapParams, ReinitPolicy, VmFault, folio_put, folio_split_unmapped,
    free_zone_device_folio, migrate_device_split_page, prep_compound_page, split_unmapped_folio,
    zone_device_folio_init, zone_device_page_init,
};
use space::{params, pgmap_snap, small_space, space_snap, space_unchanged};
use std::sync::Arc;
use std::time::Duration;

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
        // kvzalloc() of the pages array comes before the tree: ENOMEM wins.
        ("nr_pages u64::MAX", params(u64::MAX), Errno::ENOMEM),
        (
            "pages array over INT_MAX bytes (2^25 pages)",
            params(MAX_PAGEMAP_PAGES + 1),
            Errno::ENOMEM,
        ),
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

/// Hazard H17: `docs/hazards.md`.
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
        devpriv_core::warn::capture(|| zone_device_page_init(page, &p, Order::ZERO))
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

/// Hazard H11: `docs/hazards.md`.
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
        devpriv_core::warn::capture(|| {
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
        devpriv_core::warn::capture(|| {
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
        devpriv_core::warn::capture(|| folio_put(page.folio()))
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
        devpriv_core::warn::capture(|| free_zone_device_folio(tail))
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
    f.set_mapping(devpriv_pagemap::mm_types::PAGE_MAPPING_ANON | 0x1000);
    // An order-0 folio at 8.
    let small = zone_device_page_init(pg(8), &p, Order::ZERO).unwrap();
    let o = |n| Order::new(n).unwrap();
    let rows: Vec<(&str, Folio<'_>, Order, Errno)> = vec![
        ("not large", small, o(0), Errno::EINVAL),
        ("new order equal to the order", f, o(2), Errno::EINVAL),
        ("new order above the order", f, o(3), Errno::EINVAL),
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
