//! The device-private address space: memremap/memunmap, lookups, teardown.
//!
//! Kernel: `memremap_device_private_pagemap()`,
//! `memunmap_device_private_pagemap()`, `device_private_offset_to_page()`,
//! `device_private_page_to_offset()` (`mm/memremap.c`, v6 proposal).

use devpriv_core::warn::capture;
use devpriv_core::{
    DevicePrivateAddr, DevicePrivateOffset, Errno, PAGE_SIZE, PageCount, PagingMode,
};
use devpriv_pagemap::mm_types::word;
use devpriv_pagemap::page_flags::{
    LAST_CPUPID_MASK, PG_RESERVED, ZONE_DEVICE, flags_last_cpupid, flags_node, flags_zone,
};
use devpriv_pagemap::{
    DevPagemap, DevPagemapOps, DevicePrivateSpace, Folio, MAX_PAGEMAP_PAGES, MemoryType, NoopOps,
    Owner, Packing, PagemapParams, SpaceConfig, VmFault,
};
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;

/// An ops table whose `migrate_to_ram` is "NULL".
struct NoMigrate;
impl DevPagemapOps for NoMigrate {
    fn folio_free(&self, _folio: Folio<'_>) {}
    fn migrate_to_ram(&self, _vmf: &VmFault<'_>) -> Result<(), Errno> {
        Err(Errno::EINVAL)
    }
    fn has_migrate_to_ram(&self) -> bool {
        false
    }
}

fn params(nr: u64) -> PagemapParams {
    PagemapParams::private(PageCount::new(nr), Owner(0xd00d), Arc::new(NoopOps))
}

fn off(o: u64) -> DevicePrivateOffset {
    DevicePrivateOffset::new(o)
}

fn small_space(packing: Packing, space_shift: u32) -> DevicePrivateSpace {
    small_space_with(packing, space_shift, true)
}

/// As [`small_space`], with or without the per-page pagemap array (without
/// it every lookup goes through the section index).
fn small_space_with(packing: Packing, space_shift: u32, array: bool) -> DevicePrivateSpace {
    DevicePrivateSpace::with_config(SpaceConfig {
        packing,
        space_shift: Some(space_shift),
        pgmap_array_pages: if array { u64::MAX } else { 0 },
        ..SpaceConfig::default()
    })
}

#[test]
fn memremap_initialises_every_page_like_init_zone_device_page() {
    let space = DevicePrivateSpace::new();
    let pm = space
        .memremap_device_private_pagemap(params(64), 3)
        .unwrap();
    assert_eq!(pm.nr_pages(), PageCount::new(64));
    assert_eq!(pm.nid(), 3);
    assert_eq!(pm.owner(), Owner(0xd00d));
    // The first allocation in an empty space starts at 0 (H14).
    assert_eq!(
        pm.range(),
        DevicePrivateAddr::new(0)..=DevicePrivateAddr::new(64 * PAGE_SIZE - 1)
    );
    for p in pm.pages() {
        assert_eq!(p.refcount(), 0);
        assert_eq!(p.raw_mapcount(), -1);
        assert!(p.test_flag(PG_RESERVED));
        assert_eq!(flags_zone(p.flags()), ZONE_DEVICE);
        assert_eq!(flags_node(p.flags()), 3);
        // The raw word: node on top, zone below, LAST_CPUPID all ones
        // (page_cpupid_reset_last()), then PG_reserved and nothing else.
        assert_eq!(p.flags() >> 54, 3, "node in bits 54-63");
        assert_eq!((p.flags() >> 51) & 7, ZONE_DEVICE, "zone in bits 51-53");
        assert_eq!(flags_last_cpupid(p.flags()), LAST_CPUPID_MASK);
        assert_eq!(
            p.flags(),
            3 << 54 | ZONE_DEVICE << 51 | LAST_CPUPID_MASK << 30 | 1 << PG_RESERVED
        );
        assert_eq!(
            p.raw(word::COMPOUND_HEAD),
            pm.cookie().get(),
            "pgmap in word 1"
        );
        assert_eq!(p.raw(word::ZONE_DEVICE_DATA), 0);
        assert!(!p.is_tail());
    }
    // percpu_ref: live, one initial reference.
    assert!(!pm.percpu_ref().is_dying());
    space.validate().unwrap();
    space.memunmap_device_private_pagemap(&pm).unwrap();
    assert!(pm.is_unmapped() && space.is_empty());
    assert!(pm.done().is_done());
    space.validate().unwrap();
}

/// The pages array is one `kvzalloc()`, before `mtree_alloc_range()`:
/// 2^25 pages (128 GiB) or more is `ENOMEM` with a WARN, whatever the tree
/// would have said, and nothing is reserved. Just below the cap the tree
/// decides. No test allocates the 2 GiB array.
#[test]
fn pages_array_over_int_max_is_enomem_before_the_tree() {
    assert_eq!(MAX_PAGEMAP_PAGES, (1 << 25) - 1);
    assert!(i32::try_from(MAX_PAGEMAP_PAGES * 64).is_ok());
    assert!((MAX_PAGEMAP_PAGES + 1) * 64 > i32::MAX as u64);
    let over = MAX_PAGEMAP_PAGES + 1;
    let enomem = |space: &DevicePrivateSpace, nr: u64| {
        let (r, w) = capture(|| space.memremap_device_private_pagemap(params(nr), 0));
        assert_eq!(r.map(|_| ()), Err(Errno::ENOMEM), "{nr} pages");
        assert_eq!(w.count_matching("INT_MAX"), 1, "one kvmalloc WARN");
    };
    // (a) The default 64 TiB space could hold it: ENOMEM all the same.
    let space = DevicePrivateSpace::new();
    enomem(&space, over);
    assert!(space.is_empty());
    // (b) A space smaller than the request: the kernel's tree would say
    // EINVAL, but the allocation fails first.
    let small = small_space(Packing::KernelExact, 30);
    enomem(&small, over);
    enomem(&small, u64::MAX);
    // (c) A full space: ENOMEM, not EBUSY.
    let all = small
        .memremap_device_private_pagemap(params(1 << 18), 0)
        .unwrap();
    enomem(&small, over);
    // (d) Just below the cap the tree decides: EINVAL (larger than the
    // space) or EBUSY, without the WARN.
    let (r, w) = capture(|| small.memremap_device_private_pagemap(params(MAX_PAGEMAP_PAGES), 0));
    assert_eq!(r.map(|_| ()), Err(Errno::EINVAL));
    assert_eq!(w.count_matching("INT_MAX"), 0);
    let (r, w) = capture(|| small.memremap_device_private_pagemap(params(1), 0));
    assert_eq!(r.map(|_| ()), Err(Errno::EBUSY));
    assert_eq!(w.count_matching("INT_MAX"), 0);
    small.memunmap_device_private_pagemap(&all).unwrap();
    small.validate().unwrap();
}

#[test]
fn negative_nid_means_the_current_node() {
    let space = DevicePrivateSpace::new();
    let pm = space
        .memremap_device_private_pagemap(params(1), -1)
        .unwrap();
    assert_eq!(pm.nid(), 0);
    assert_eq!(flags_node(pm.pages()[0].flags()), 0);
}

/// Offsets and pages are exact inverses for every page of every pagemap,
/// through the index and through the kernel's tree walk (H7d).
#[test]
#[cfg_attr(
    miri,
    ignore = "slow under Miri (index scans); the logic is covered by the native run"
)]
/// Hazard H7: `docs/hazards.md`.
fn offset_and_page_round_trip_across_pagemaps() {
    for packing in [Packing::KernelExact, Packing::SectionAligned] {
        let space = DevicePrivateSpace::with_config(SpaceConfig {
            packing,
            ..SpaceConfig::default()
        });
        let sizes = [1, 511, 512, 513, 3, 1024, 7];
        let pms: Vec<_> = sizes
            .iter()
            .map(|&n| space.memremap_device_private_pagemap(params(n), 0).unwrap())
            .collect();
        space.validate().unwrap();
        let g = space.read();
        for pm in &pms {
            let first = pm.first_offset().get();
            if packing == Packing::SectionAligned {
                assert_eq!(first % 512, 0, "section-aligned start");
            }
            for i in 0..pm.nr_pages().get() {
                let o = off(first + i);
                let page = g.device_private_offset_to_page(o).unwrap();
                assert!(std::ptr::eq(page.owner(), &**pm));
                assert_eq!(page.index() as u64, i);
                assert_eq!(g.device_private_page_to_offset(page), Some(o));
                assert_eq!(g.device_private_folio_to_offset(page.folio()), Some(o));
                assert_eq!(
                    g.device_private_offset_to_page_tree(o),
                    Some(page),
                    "index and tree agree"
                );
            }
        }
        if packing == Packing::KernelExact {
            // Kernel packing is back to back: each starts where the last ended.
            for w in pms.windows(2) {
                assert_eq!(
                    w[1].first_offset().get(),
                    w[0].first_offset().get() + w[0].nr_pages().get()
                );
            }
        }
    }
}

/// Offsets in gaps, beyond the space, and after unmap give `None` and a
/// `WARN` (H7d, H14, H15).
///
/// Hazards H7, H14, H15: `docs/hazards.md`.
#[test]
fn gaps_and_unmapped_offsets_give_none_and_warn() {
    let space = DevicePrivateSpace::with_config(SpaceConfig {
        packing: Packing::SectionAligned,
        ..SpaceConfig::default()
    });
    let a = space
        .memremap_device_private_pagemap(params(10), 0)
        .unwrap();
    let b = space
        .memremap_device_private_pagemap(params(10), 0)
        .unwrap();
    assert_eq!(
        b.first_offset(),
        off(512),
        "the gap after a's 10 pages is in a's section"
    );
    {
        let g = space.read();
        let (r, w) = capture(|| {
            [
                g.device_private_offset_to_page(off(10)),
                g.device_private_offset_to_page(off(511)),
                g.device_private_offset_to_page(off(522)),
                g.device_private_offset_to_page(off(1 << 40)),
                g.device_private_offset_to_page(off(u64::MAX)),
            ]
        });
        assert!(r.iter().all(Option::is_none));
        assert_eq!(w.count_matching("no pagemap at this offset"), 5);
        let (_, w) = capture(|| g.device_private_offset_to_page(off(9)));
        assert!(w.is_empty(), "a hit does not warn");
    }
    space.memunmap_device_private_pagemap(&a).unwrap();
    let g = space.read();
    let (r, w) = capture(|| g.device_private_offset_to_page(off(0)));
    assert!(r.is_none());
    assert_eq!(w.count(), 1);
    assert!(
        g.device_private_offset_to_page(off(512)).is_some(),
        "b is untouched"
    );
    drop(g);
    space.validate().unwrap();
}

/// Every rejected request: the errno, a `WARN` where the kernel WARNs, and
/// nothing reserved.
#[test]
fn invalid_params_are_rejected_and_leave_nothing_behind() {
    let space = DevicePrivateSpace::new();
    let cases: Vec<(PagemapParams, &str)> = vec![
        (
            PagemapParams {
                memory_type: MemoryType::Coherent,
                ..params(1)
            },
            "not MEMORY_DEVICE_PRIVATE",
        ),
        (
            PagemapParams {
                memory_type: MemoryType::FsDax,
                ..params(1)
            },
            "not MEMORY_DEVICE_PRIVATE",
        ),
        (
            PagemapParams {
                ops: None,
                ..params(1)
            },
            "migrate_to_ram",
        ),
        (
            PagemapParams {
                ops: Some(Arc::new(NoMigrate)),
                ..params(1)
            },
            "migrate_to_ram",
        ),
        (
            PagemapParams {
                owner: None,
                ..params(1)
            },
            "no owner",
        ),
        (params(0), ""),
        // kvzalloc() of the pages array fails before the tree is asked.
        (params(u64::MAX), "INT_MAX"),
        (params((1 << 34) + 1), "INT_MAX"),
    ];
    for (p, warning) in cases {
        let what = format!("{p:?}");
        let want = if warning == "INT_MAX" {
            Errno::ENOMEM
        } else {
            Errno::EINVAL
        };
        let (r, w) = capture(|| space.memremap_device_private_pagemap(p, 0));
        assert_eq!(r.unwrap_err(), want, "{what}");
        if !warning.is_empty() {
            assert_eq!(w.count_matching(warning), 1, "{what}");
        }
        assert!(space.is_empty(), "{what}");
        space.validate().unwrap();
    }
    // The old physical path refuses device-private memory.
    let (r, w) = capture(|| space.memremap_pages(&params(1), 0));
    assert_eq!(r, Err(Errno::EINVAL));
    assert_eq!(w.count_matching("Use memremap_device_private_pagemap()"), 1);
    // Nothing was reserved: the next pagemap still starts at 0.
    let pm = space.memremap_device_private_pagemap(params(1), 0).unwrap();
    assert_eq!(pm.first_offset(), off(0));
}

/// Hazard H14: `docs/hazards.md`.
#[test]
fn exhaustion_gives_ebusy_and_freed_space_is_reused() {
    // A 16 MiB space: 4096 pages.
    let space = small_space(Packing::KernelExact, 24);
    let a = space
        .memremap_device_private_pagemap(params(2048), 0)
        .unwrap();
    let b = space
        .memremap_device_private_pagemap(params(2048), 0)
        .unwrap();
    assert_eq!(
        space
            .memremap_device_private_pagemap(params(1), 0)
            .unwrap_err(),
        Errno::EBUSY
    );
    assert_eq!(space.len(), 2);
    space.validate().unwrap();
    space.memunmap_device_private_pagemap(&a).unwrap();
    // Lowest fit finds the freed range again.
    let c = space
        .memremap_device_private_pagemap(params(1024), 0)
        .unwrap();
    assert_eq!(c.first_offset(), off(0));
    assert_eq!(b.first_offset(), off(2048));
    // A request larger than the whole space is EINVAL, as in mtree_alloc_range.
    assert_eq!(
        space
            .memremap_device_private_pagemap(params(4097), 0)
            .unwrap_err(),
        Errno::EINVAL
    );
    space.validate().unwrap();
}

/// Unmap waits until every allocated page is freed; the bounded variant
/// gives EBUSY; the range is reusable afterwards (H11).
///
/// Hazard H11: `docs/hazards.md`.
#[test]
fn unmap_waits_for_allocated_pages() {
    let space = DevicePrivateSpace::new();
    let pm = space
        .memremap_device_private_pagemap(params(16), 0)
        .unwrap();
    let start = pm.first_offset();
    // One page allocated: the ref holds one extra reference.
    assert!(pm.percpu_ref().tryget_many(1));
    assert_eq!(
        space.try_memunmap_device_private_pagemap(&pm, Duration::from_millis(20)),
        Err(Errno::EBUSY)
    );
    assert!(pm.percpu_ref().is_dying(), "the ref stays killed");
    assert!(
        !pm.is_unmapped() && space.len() == 1,
        "the pagemap stays mapped"
    );
    // tryget_many does not check DEAD: allocation after kill still works
    // while a page is outstanding (H11).
    assert!(pm.percpu_ref().tryget_many(1));
    pm.percpu_ref().put_many(1);
    std::thread::scope(|s| {
        let t = s.spawn(|| space.memunmap_device_private_pagemap(&pm));
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            !t.is_finished(),
            "memunmap must block while a page is allocated"
        );
        pm.percpu_ref().put_many(1); // The page is freed.
        assert_eq!(t.join().unwrap(), Ok(()));
    });
    assert!(pm.is_unmapped());
    let again = space
        .memremap_device_private_pagemap(params(16), 0)
        .unwrap();
    assert_eq!(again.first_offset(), start, "the range is reusable");
    space.validate().unwrap();
}

#[test]
fn unmap_twice_or_from_another_space_is_einval_and_changes_nothing() {
    let space = DevicePrivateSpace::new();
    let other = DevicePrivateSpace::new();
    let pm = space.memremap_device_private_pagemap(params(4), 0).unwrap();
    let foreign = other.memremap_device_private_pagemap(params(4), 0).unwrap();
    let (r, w) = capture(|| space.memunmap_device_private_pagemap(&foreign));
    assert_eq!(r, Err(Errno::EINVAL));
    assert_eq!(w.count_matching("not mapped in this space"), 1);
    assert!(
        !foreign.percpu_ref().is_dying(),
        "the foreign pagemap is untouched"
    );
    space.memunmap_device_private_pagemap(&pm).unwrap();
    assert_eq!(
        space.memunmap_device_private_pagemap(&pm),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        space.try_memunmap_device_private_pagemap(&pm, Duration::ZERO),
        Err(Errno::EINVAL)
    );
    assert_eq!(other.len(), 1);
    other.validate().unwrap();
}

/// A read guard can be shared with and sent to other threads (an RCU
/// read-side section is not tied to its thread in the model), as before
/// the index's view held the memmap's address.
#[test]
fn read_guards_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<devpriv_pagemap::SpaceReadGuard<'static>>();
    send_sync::<DevicePrivateSpace>();
}

/// `pm`'s biased memmap base: the address offset 0's page would have if
/// `pm`'s array were extended down to it.
fn memmap_base(pm: &DevPagemap) -> usize {
    let bias =
        usize::try_from(pm.first_offset().get()).unwrap() * size_of::<devpriv_pagemap::Page>();
    pm.pages().as_ptr().addr().wrapping_sub(bias)
}

/// The space's memmap (`sparse_vmemmap.rs`): every pagemap's pages at
/// `vmemmap + offset`, whatever their sizes and packing, and lookups find
/// them there.
#[test]
fn vmemmap_puts_every_pagemap_at_base_plus_offset() {
    for packing in [Packing::KernelExact, Packing::SectionAligned] {
        let space = DevicePrivateSpace::with_config(SpaceConfig {
            packing,
            ..SpaceConfig::default()
        });
        let pms: Vec<_> = [3, 512, 700, 1, 1024]
            .iter()
            .map(|&n| space.memremap_device_private_pagemap(params(n), 0).unwrap())
            .collect();
        let base = memmap_base(&pms[0]);
        let g = space.read();
        for pm in &pms {
            assert_eq!(memmap_base(pm), base, "one memmap per space");
            for i in [0, pm.nr_pages().get() - 1] {
                let o = pm.first_offset().get() + i;
                let page = g.device_private_offset_to_page(off(o)).unwrap();
                assert!(std::ptr::eq(
                    &*page,
                    &pm.pages()[usize::try_from(i).unwrap()]
                ));
                assert_eq!(page.raw(word::COMPOUND_HEAD), pm.cookie().get());
            }
        }
    }
}

/// A pagemap still referenced after `memunmap` keeps its pages: one mapped
/// over its range gets a heap array (lookups still find it, through a
/// compact slot, a wide slot's part, or a shared section's table), and the
/// range returns to the memmap once the last reference drops. Without the
/// memmap's ownership check the second pagemap would overwrite the first's
/// pages (its cookies and refcounts); without the lookup's base check it
/// would be found at the first's pages.
#[test]
fn vmemmap_range_of_a_referenced_unmapped_pagemap_is_not_reused() {
    // (pages before, pages of the reused pagemap): a whole section (the
    // compact slot), part of one (a wide part), the middle of three (a
    // table).
    for (pre, n) in [(0, 512), (0, 100), (10, 100)] {
        let space = DevicePrivateSpace::new();
        let map = |n| space.memremap_device_private_pagemap(params(n), 0).unwrap();
        let _pre = (pre > 0).then(|| map(pre));
        let a = map(n);
        let _post = (pre > 0).then(|| map(10));
        let first = a.first_offset();
        let base = memmap_base(&a);
        let cookie = a.cookie().get();
        space.memunmap_device_private_pagemap(&a).unwrap();
        // `a` is still referenced: `b` takes the same offsets, not the pages.
        let b = map(n);
        assert_eq!(b.first_offset(), first, "the range is reused");
        assert_ne!(memmap_base(&b), base, "but not the memmap's pages");
        assert!(
            a.pages()
                .iter()
                .all(|p| p.raw(word::COMPOUND_HEAD) == cookie)
        );
        assert_ne!(b.cookie().get(), cookie);
        {
            let g = space.read();
            for i in [0, 1, n - 1] {
                let page = g
                    .device_private_offset_to_page(off(first.get() + i))
                    .unwrap();
                assert!(std::ptr::eq(page.owner(), &*b));
                assert!(std::ptr::eq(
                    &*page,
                    &b.pages()[usize::try_from(i).unwrap()]
                ));
            }
        }
        space.validate().unwrap();
        space.memunmap_device_private_pagemap(&b).unwrap();
        drop((a, b));
        // Both gone: the range is the memmap's again, freshly initialised.
        let c = space
            .memremap_device_private_pagemap(params(n / 2), 1)
            .unwrap();
        assert_eq!((c.first_offset(), memmap_base(&c)), (first, base));
        assert!(
            c.pages()
                .iter()
                .all(|p| p.raw(word::COMPOUND_HEAD) == c.cookie().get()
                    && flags_node(p.raw(word::FLAGS)) == 1
                    && p.refcount() == 0)
        );
        let g = space.read();
        let last = n / 2 - 1;
        let page = g
            .device_private_offset_to_page(off(first.get() + last))
            .unwrap();
        assert!(std::ptr::eq(
            &*page,
            &c.pages()[usize::try_from(last).unwrap()]
        ));
    }
}

#[test]
fn devm_handle_unmaps_on_drop() {
    let space = DevicePrivateSpace::new();
    let pm: Arc<DevPagemap> = {
        let h = space
            .devm_memremap_device_private_pagemap(params(8), 0)
            .unwrap();
        Arc::clone(h.pgmap())
    };
    assert!(pm.is_unmapped() && space.is_empty());
    let h = space
        .devm_memremap_device_private_pagemap(params(8), 0)
        .unwrap();
    assert_eq!(h.release(), Ok(()));
    assert!(space.is_empty());
}

/// Kernel-exact packing shares sections between small pagemaps; the shared
/// sections fall back to the tree and still resolve exactly.
#[test]
#[cfg_attr(
    miri,
    ignore = "slow under Miri (index scans); the logic is covered by the native run"
)]
fn shared_sections_fall_back_to_the_tree() {
    let space = DevicePrivateSpace::new();
    let pms: Vec<_> = (0..40)
        .map(|_| space.memremap_device_private_pagemap(params(3), 0).unwrap())
        .collect();
    space.validate().unwrap();
    let g = space.read();
    for pm in &pms {
        for i in 0..3 {
            let o = off(pm.first_offset().get() + i);
            let p = g.device_private_offset_to_page(o).unwrap();
            assert!(std::ptr::eq(p.owner(), &**pm));
        }
    }
    drop(g);
    // Unmap every other one: shared sections become single again.
    for pm in pms.iter().step_by(2) {
        space.memunmap_device_private_pagemap(pm).unwrap();
    }
    space.validate().unwrap();
}

#[test]
#[cfg_attr(
    miri,
    ignore = "slow under Miri (index scans); the logic is covered by the native run"
)]
fn five_level_paging_widens_the_space() {
    let space = DevicePrivateSpace::with_config(SpaceConfig {
        paging: PagingMode::FiveLevel,
        ..SpaceConfig::default()
    });
    assert_eq!(space.config().space_size(), 1 << 52);
    let pm = space.memremap_device_private_pagemap(params(1), 0).unwrap();
    assert_eq!(pm.first_offset(), off(0));
}

/// A shadow of the space: (first offset, pages, id) per mapped pagemap.
#[derive(Clone, Debug)]
enum Op {
    Map(u64),
    Unmap(usize),
    Lookup(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1..=600u64).prop_map(Op::Map),
        2 => any::<usize>().prop_map(Op::Unmap),
        4 => (0..8192u64).prop_map(Op::Lookup),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 48 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    #[cfg_attr(miri, ignore = "slow under Miri (index scans); the logic is covered by the native run")]
    fn memremap_memunmap_and_lookups_match_an_oracle(
        ops in prop::collection::vec(op(), 1..60),
        aligned in any::<bool>(),
        array in any::<bool>(),
    ) {
        // 32 MiB: 8192 pages, so the space fills up and gaps get reused.
        let packing = if aligned { Packing::SectionAligned } else { Packing::KernelExact };
        let space = small_space_with(packing, 25, array);
        let mut live: Vec<Arc<DevPagemap>> = Vec::new();
        for op in ops {
            match op {
                Op::Map(n) => match space.memremap_device_private_pagemap(params(n), 0) {
                    Ok(pm) => {
                        // Lowest fit: nothing free below the new start fits.
                        for other in &live {
                            let (s, e) = (other.first_offset().get(), other.first_offset().get() + other.nr_pages().get());
                            prop_assert!(pm.first_offset().get() >= e || pm.first_offset().get() + n <= s);
                        }
                        live.push(pm);
                    }
                    Err(e) => prop_assert_eq!(e, Errno::EBUSY),
                },
                Op::Unmap(i) if !live.is_empty() => {
                    let pm = live.remove(i % live.len());
                    prop_assert_eq!(space.memunmap_device_private_pagemap(&pm), Ok(()));
                }
                Op::Unmap(_) => {}
                Op::Lookup(o) => {
                    let want = live.iter().find(|pm| {
                        let s = pm.first_offset().get();
                        (s..s + pm.nr_pages().get()).contains(&o)
                    });
                    let g = space.read();
                    let (got, _) = capture(|| g.device_private_offset_to_page(off(o)));
                    match (got, want) {
                        (None, None) => {}
                        (Some(p), Some(pm)) => {
                            prop_assert!(std::ptr::eq(p.owner(), &**pm));
                            prop_assert_eq!(g.device_private_page_to_offset(p), Some(off(o)));
                        }
                        (got, want) => prop_assert!(false, "offset {}: got {:?}, want {:?}", o, got, want.map(|p| p.id())),
                    }
                }
            }
            prop_assert_eq!(space.validate(), Ok(()));
            prop_assert_eq!(space.len(), live.len());
        }
    }
}

/// The held-out check: for every offset of every section the space's
/// pagemaps touch (and one section past them), the lookup (the pagemap
/// array and the section index) and the tree walk give the same page, or
/// both nothing.
fn index_agrees_with_tree(space: &DevicePrivateSpace) {
    space.validate().unwrap();
    let section = 1u64 << (space.config().section_shift - devpriv_core::PAGE_SHIFT);
    let g = space.read();
    let end = g
        .pagemaps()
        .map(|pm| pm.first_offset().get() + pm.nr_pages().get())
        .max()
        .unwrap_or(0);
    let ((), _) = capture(|| {
        for o in 0..end.div_ceil(section) * section + section {
            let index = g.device_private_offset_to_page(off(o));
            let tree = g.device_private_offset_to_page_tree(off(o));
            assert_eq!(
                index.map(|p| std::ptr::from_ref(&*p)),
                tree.map(|p| std::ptr::from_ref(&*p)),
                "offset {o}"
            );
            if let Some(p) = index {
                assert_eq!(g.device_private_page_to_offset(p), Some(off(o)));
            }
        }
    });
}

/// Every layout of issue 14's targets and of the bench's other sizes,
/// scaled down, with holes punched into it: shared sections of 2 to 200
/// pagemaps (the inline table with its one-level hint, the spilled one
/// with its two-level hint or its page map), partly covered ones, whole
/// ones, and empty ones between.
#[test]
#[cfg_attr(
    miri,
    ignore = "slow under Miri (every offset); the unsafe paths run in the unit tests"
)]
fn index_and_tree_agree_on_every_offset_in_every_layout() {
    let layouts: &[(Packing, &[u64])] = &[
        (Packing::KernelExact, &[64; 40]),
        (Packing::KernelExact, &[100; 30]),
        (Packing::KernelExact, &[256; 12]),
        (Packing::KernelExact, &[1000; 6]),
        // Whole sections with shared ends: a small pagemap first puts
        // every 65,536-page one off the section grid.
        (Packing::KernelExact, &[3, 65_536, 65_536, 5]),
        (Packing::KernelExact, &[1; 40]),
        (Packing::KernelExact, &[4; 300]),
        (Packing::KernelExact, &[32; 40]),
        (Packing::KernelExact, &[200; 12]),
        (
            Packing::KernelExact,
            &[3, 511, 512, 513, 1, 7, 1024, 31, 33, 2],
        ),
        (Packing::SectionAligned, &[256, 512, 1000, 3]),
        (Packing::SectionAligned, &[256; 8]),
    ];
    // With the pagemap array (its per-page entries wherever sections are
    // shared, else its per-section ones, then the index), and without it
    // (the index alone).
    for (packing, sizes, array) in layouts
        .iter()
        .flat_map(|(p, s)| [(p, s, true), (p, s, false)])
    {
        let space = small_space_with(*packing, 32, array);
        let pms: Vec<_> = sizes
            .iter()
            .map(|&n| space.memremap_device_private_pagemap(params(n), 0).unwrap())
            .collect();
        index_agrees_with_tree(&space);
        // Every third pagemap goes, then a few come back into the holes.
        for pm in pms.iter().step_by(3) {
            space.memunmap_device_private_pagemap(pm).unwrap();
        }
        index_agrees_with_tree(&space);
        for &n in sizes.iter().take(4) {
            space
                .memremap_device_private_pagemap(params(n.div_ceil(2)), 0)
                .unwrap();
        }
        index_agrees_with_tree(&space);
    }
}
