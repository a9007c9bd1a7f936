//! Hazards H7, H8, H9, H12, H13, H18 (`docs/hazards.md`). Each test
//! also runs the buggy variant and shows it fails.

use crate::naive;
use crate::walk::{BASE, Kind, frame, matches, mm_with, mm_with_config, pte_for};
use devpriv_core::{
    DevicePrivateOffset, Errno, Order, PAGE_SIZE, PageCount, PageFrame, PagingMode, Pfn, warn,
};
use devpriv_migrate::hmm::HmmPfnLayout;
use devpriv_migrate::page_vma_mapped::{page_mapped_in_vma, page_mapped_in_vma_as_posted};
use devpriv_migrate::pgtable::_PAGE_SAVED_DIRTY;
use devpriv_migrate::swapops::{MigrationKind, make_device_private_entry, make_migration_entry};
use devpriv_migrate::{
    AnyFolio, CollectPteGuard, HmmPfn, HugeInsertErrors, MigratePfn, MigrateVma, MigrateVmaFlags,
    MmConfig, PMD_SIZE, PageVmaMappedWalk, Pmd, Pte, PvmwFlags, PvmwPfnV2, PvmwPmdPolicy,
    PvmwTarget, Softleaf, SoftleafFlags, SystemMemory, VmFlags, ZapDevicePmd, migrate_vma_finalize,
    migrate_vma_pages, migrate_vma_setup, remove_migration_ptes, try_to_migrate,
};
use devpriv_pagemap::page_flags::PG_DIRTY;
use devpriv_pagemap::{
    DevPagemap, DevicePrivateSpace, Folio, NoopOps, Owner, PageRef, PagemapParams,
    zone_device_folio_init,
};
use proptest::prelude::*;
use std::sync::Arc;

const MODE: PagingMode = PagingMode::FourLevel;

fn walk_one(mm: &devpriv_migrate::Mm, target: PageFrame, flags: PvmwFlags) -> bool {
    let vma = &mm.vmas()[0];
    let mut w =
        PageVmaMappedWalk::new(mm, vma, target, PageCount::ONE, vma.pgoff(), BASE, flags).unwrap();
    let r = w.walk();
    w.done();
    r
}

/// H7 (a), (b): a pfn N and a device-private offset N never match each
/// other's walks; the mainline `check_pte()` (no device-private
/// comparison) would.
///
/// Hazard H7: `docs/hazards.md`.
#[test]
fn h7_pfn_and_offset_with_the_same_number_never_match() {
    const N: u64 = 0x777;
    let (mm, _) = mm_with(PMD_SIZE);
    let cases = [
        // (entry, walk target is device private?, PVMW_MIGRATION, expected)
        (Kind::DevicePrivate, false, false, false), // (a)
        (Kind::DevicePrivate, true, false, true),
        (Kind::Present, true, false, false), // (b)
        (Kind::Present, false, false, true),
        (Kind::Migration, true, true, false), // (b)
        (Kind::Migration, false, true, true),
        (Kind::DpMigration, true, true, true), // (b)
        (Kind::DpMigration, false, true, false),
        (Kind::DeviceExclusive, true, false, false),
        (Kind::DeviceExclusive, false, false, true),
    ];
    let mut buggy_differs = 0;
    for (kind, dp, migration, expected) in cases {
        let pte = pte_for(kind, N);
        mm.set_pte(BASE, pte).unwrap();
        let flags = if migration {
            PvmwFlags::MIGRATION
        } else {
            PvmwFlags::NONE
        };
        assert_eq!(
            walk_one(&mm, frame(dp, N), flags),
            expected,
            "{kind:?} dp={dp}"
        );
        // The buggy variant: mainline's check_pte without the comparison.
        let bits = PvmwTarget::new(frame(dp, N), PageCount::ONE, migration)
            .unwrap()
            .flags()
            .bits();
        let buggy = naive::check_pte(pte.raw(), 1, N, 1, bits, 34, false);
        if buggy != expected {
            buggy_differs += 1;
            assert!(buggy, "the buggy variant over-matches, never under-matches");
        }
    }
    assert_eq!(
        buggy_differs, 5,
        "every cross-kind case fools the mainline check"
    );
}

/// H7 (c): a device-private entry resolves through the device-private
/// address space, and the page it finds maps back to the same offset.
///
/// Hazard H7: `docs/hazards.md`.
#[test]
fn h7_device_private_entries_resolve_through_the_space() {
    let space = DevicePrivateSpace::new();
    let mk = |n| PagemapParams::private(PageCount::new(n), Owner(1), Arc::new(NoopOps));
    let a = space.memremap_device_private_pagemap(mk(64), -1).unwrap();
    let b = space.memremap_device_private_pagemap(mk(64), -1).unwrap();
    let guard = space.read();
    for pm in [&a, &b] {
        let first = pm.first_offset();
        for off in [first, first.checked_add(PageCount::new(63)).unwrap()] {
            for entry in [
                make_device_private_entry(true, off, MODE).unwrap(),
                make_migration_entry(MigrationKind::Write, off.into(), MODE).unwrap(),
            ] {
                let page =
                    devpriv_migrate::leafops::softleaf_to_device_private_page(&guard, entry, MODE)
                        .expect("resolved through the space");
                assert_eq!(guard.device_private_page_to_offset(page), Some(off));
            }
        }
    }
    // A pfn entry with the same number is never resolved as a device page.
    let pfn_entry = make_migration_entry(
        MigrationKind::Write,
        Pfn::new(a.first_offset().get()).into(),
        MODE,
    )
    .unwrap();
    assert!(
        devpriv_migrate::leafops::softleaf_to_device_private_page(&guard, pfn_entry, MODE)
            .is_none()
    );
}

proptest! {
    /// H8: the v2 encoding `x << 1` loses bit 63, so its encoder refuses
    /// x >= 2^63; below that it round-trips. The v3+ target keeps x raw and
    /// carries the kind only in PVMW_DEVICE_PRIVATE: exact for every x.
    ///
    /// Hazard H8: `docs/hazards.md`.
    #[test]
    fn h8_v2_loses_bit_63_and_v3_does_not(x in any::<u64>(), dp in any::<bool>()) {
        let f = frame(dp, x);
        let shifted = PvmwPfnV2::page_vma_walk_pfn_unchecked(x);
        if x >= 1 << 63 {
            prop_assert_ne!(shifted >> 1, x, "the C macro corrupts it");
            prop_assert_eq!(PvmwPfnV2::encode(f), Err(Errno::EINVAL));
        } else {
            prop_assert_eq!(shifted >> 1, x);
            prop_assert_eq!(PvmwPfnV2::encode(f).map(PvmwPfnV2::frame), Ok(f));
        }
        let t = PvmwTarget::new(f, PageCount::ONE, false).unwrap();
        prop_assert_eq!(t.frame().raw_index(), x);
        prop_assert_eq!(t.flags().contains(PvmwFlags::DEVICE_PRIVATE), dp);
    }
}

/// Hazard H8: `docs/hazards.md`.
#[test]
fn h8_the_boundary_exactly() {
    let top = Pfn::new(1 << 63);
    assert_eq!(PvmwPfnV2::encode(top.into()), Err(Errno::EINVAL));
    assert_eq!(
        PvmwPfnV2::from_raw(PvmwPfnV2::page_vma_walk_pfn_unchecked(top.get())).frame(),
        Pfn::new(0).into()
    );
    let below = Pfn::new((1 << 63) - 1);
    assert_eq!(
        PvmwPfnV2::encode(below.into()).map(PvmwPfnV2::frame),
        Ok(below.into())
    );
}

/// H9: every `(order, device_private)` pair round-trips with the v6 proposal
/// layout; with the v1 layout (order at bit 53) normal pages break for
/// order >= 16 and device pages for order < 16.
///
/// Hazard H9: `docs/hazards.md`.
#[test]
fn h9_order_field_and_device_private_bit() {
    let mut v1_broken = Vec::new();
    for order in 0..32u32 {
        for dp in [false, true] {
            let o = Order::new(order).unwrap();
            let f = frame(dp, 0x1234);
            let series = HmmPfnLayout::SERIES;
            let v = series.encode(f, o, true).unwrap();
            assert_eq!(
                series.decode(v),
                Some((f, o, true)),
                "series order {order} dp {dp}"
            );
            assert_eq!(
                HmmPfn::new(f, o, true).unwrap().decode(),
                Some((f, o, true))
            );
            let v1 = HmmPfnLayout::V1_COLLIDING;
            let w = v1.encode(f, o, true).unwrap();
            if v1.decode(w) != Some((f, o, true)) {
                v1_broken.push((order, dp));
            }
        }
    }
    // Bit 57 is both order bit 4 and DEVICE_PRIVATE: a pair decodes wrong
    // exactly when they disagree — every order >= 16 of a normal page
    // (reads back as device private) and every order < 16 of a device page
    // (reads back as order + 16).
    let expected: Vec<(u32, bool)> = (0..32)
        .flat_map(|o| [(o, false), (o, true)])
        .filter(|&(o, dp)| (o >= 16) != dp)
        .collect();
    assert_eq!(v1_broken, expected);
    assert!(
        v1_broken
            .iter()
            .filter(|(_, dp)| !dp)
            .all(|(o, _)| *o >= 16)
    );
}

/// H12: `page_mapped_in_vma()` for a tail page of a PTE-mapped large
/// folio. Mainline semantics find the tail's address; the v6 proposal as posted
/// (head frame, one page) reports "not mapped".
///
/// Hazard H12: `docs/hazards.md`.
#[test]
fn h12_page_mapped_in_vma_tail_pages() {
    let (mm, mem) = mm_with(PMD_SIZE);
    let f = mem.sys().alloc_folio(Order::HPAGE_PMD).unwrap();
    mm.map_folio_ptes(BASE, f, true).unwrap();
    let vma = &mm.vmas()[0];
    for n in [0u64, 1, 5, 511] {
        let page = f.page_pfn(n).unwrap();
        let pgoff = f.index() + n;
        let addr = BASE + n * PAGE_SIZE;
        assert_eq!(page_mapped_in_vma(&mm, vma, page.into(), pgoff), Ok(addr));
        let posted = page_mapped_in_vma_as_posted(&mm, vma, f.pfn().into(), pgoff);
        if n == 0 {
            assert_eq!(posted, Ok(addr));
        } else {
            assert_eq!(posted, Err(Errno::EFAULT), "tail {n} reported unmapped");
        }
    }
    assert_eq!(
        page_mapped_in_vma(&mm, vma, f.pfn().into(), vma.pgoff() + 512),
        Err(Errno::EFAULT),
        "outside the VMA"
    );
}

/// H13, 7.0 (`PvmwPmdPolicy::V7_0`): a device-private PMD of folio Y
/// matches a walk for any X — pfn or offset, migration or not — with the
/// PMD lock held. `check_pmd()` (offset + kind) would not.
///
/// Hazard H13: `docs/hazards.md`.
#[test]
fn h13_v7_0_device_private_pmd_matches_unconditionally() {
    let config = MmConfig {
        pvmw_pmd: PvmwPmdPolicy::V7_0,
        ..MmConfig::default()
    };
    let (mm, _) = mm_with_config(2 * PMD_SIZE, config);
    let vma = &mm.vmas()[0];
    let y = DevicePrivateOffset::new(0x10_0000);
    let e = make_device_private_entry(true, y, MODE).unwrap();
    mm.set_pmd(BASE + PMD_SIZE, Pmd::from_swp_entry(e).unwrap())
        .unwrap();
    let x = DevicePrivateOffset::new(0x20_0000);
    for target in [PageFrame::from(x), Pfn::new(3).into(), y.into()] {
        for flags in [PvmwFlags::NONE, PvmwFlags::MIGRATION, PvmwFlags::SYNC] {
            let mut w = PageVmaMappedWalk::new(
                &mm,
                vma,
                target,
                PageCount::new(512),
                vma.linear_page_index(BASE + PMD_SIZE),
                BASE + PMD_SIZE,
                flags,
            )
            .unwrap();
            assert!(w.walk(), "{target:?} {flags:?}");
            assert!(w.is_pmd_mapped() && w.ptl_held());
            assert_eq!(w.pmd(), Some(Pmd::from_swp_entry(e).unwrap()));
            assert!(!w.walk());
            // What a check would have said.
            let checked = PvmwTarget::new(target, PageCount::new(512), false)
                .unwrap()
                .check_pmd(y.into());
            assert_eq!(checked, target == y.into());
        }
    }
}

/// H13, fixed (CVE-2026-68163, the default): the device-private PMD
/// branch takes the PMD lock, re-reads the entry, and matches only a
/// target that `check_pmd()` overlaps, never under `PVMW_MIGRATION`. Once
/// the PMD is split, the same target matches at PTE level. (The split
/// racing the walk — the walk re-reading a table under the lock and
/// falling back to the PTE level — is the loom model
/// `pvmw_walk_vs_device_private_pmd_split`.)
#[test]
fn h13_fixed_walk_checks_device_private_pmds() {
    let (mm, _) = mm_with(2 * PMD_SIZE);
    assert_eq!(mm.config().pvmw_pmd, PvmwPmdPolicy::Fixed);
    let vma = &mm.vmas()[0];
    let a = BASE + PMD_SIZE;
    let y = DevicePrivateOffset::new(0x10_0000);
    let e = make_device_private_entry(true, y, MODE).unwrap();
    mm.set_pmd(a, Pmd::from_swp_entry(e).unwrap()).unwrap();
    let walk = |target: PageFrame, nr: u64, flags: PvmwFlags, at: u64| {
        let mut w = PageVmaMappedWalk::new(
            &mm,
            vma,
            target,
            PageCount::new(nr),
            vma.linear_page_index(at),
            at,
            flags,
        )
        .unwrap();
        let found = w.walk();
        let at = (w.address(), w.is_pmd_mapped(), w.pte(), w.pmd());
        if found {
            assert!(w.ptl_held(), "{target:?} {flags:?}");
            assert!(!w.walk(), "matched once");
        }
        assert!(!w.ptl_held(), "released");
        (found, at)
    };
    let x = DevicePrivateOffset::new(0x20_0000);
    let y5 = y.checked_add(PageCount::new(5)).unwrap();
    for (target, nr, flags, want) in [
        (PageFrame::from(x), 512, PvmwFlags::NONE, false),
        (Pfn::new(y.get()).into(), 512, PvmwFlags::NONE, false),
        (y.into(), 512, PvmwFlags::MIGRATION, false),
        (y.into(), 512, PvmwFlags::SYNC | PvmwFlags::MIGRATION, false),
        (y.into(), 512, PvmwFlags::NONE, true),
        (y.into(), 512, PvmwFlags::SYNC, true),
        (y5.into(), 1, PvmwFlags::NONE, true),
    ] {
        let (found, (addr, pmd_level, _, pmd)) = walk(target, nr, flags, a);
        assert_eq!(found, want, "{target:?}+{nr} {flags:?}");
        if found {
            assert_eq!((addr, pmd_level), (a, true));
            assert_eq!(pmd, Some(Pmd::from_swp_entry(e).unwrap()));
        }
    }
    // Split it into 512 device-private PTEs: the walk matches at PTE level.
    mm.pmd_lock(a)
        .unwrap()
        .populate(|i| {
            let off = y.checked_add(PageCount::new(i as u64)).unwrap();
            Pte::from_swp_entry(make_device_private_entry(true, off, MODE)?)
        })
        .unwrap();
    let (found, (addr, pmd_level, pte, _)) = walk(y5.into(), 1, PvmwFlags::NONE, a + 5 * PAGE_SIZE);
    assert!(found && !pmd_level);
    assert_eq!(addr, a + 5 * PAGE_SIZE);
    assert_eq!(
        pte.map(|p| Softleaf::from_pte(p).to_frame(MODE)),
        Some(Some(y5.into()))
    );
}

/// A 1024-page device pagemap and an address space with 2 PMDs of RW anon
/// memory at `BASE`.
fn device_mm(config: MmConfig) -> (Arc<devpriv_migrate::Mm>, Arc<DevPagemap>) {
    let space = Arc::new(DevicePrivateSpace::new());
    let params = PagemapParams::private(PageCount::new(1024), Owner(1), Arc::new(NoopOps));
    let pm = space.memremap_device_private_pagemap(params, -1).unwrap();
    let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(4096)).unwrap();
    let mem = devpriv_migrate::Memory::new(Arc::new(sys), space);
    let mm = devpriv_migrate::Mm::new(&mem, config);
    mm.mmap_write_lock()
        .mmap_anon(BASE, 2 * PMD_SIZE, VmFlags::RW)
        .unwrap();
    (mm, pm)
}

/// An unlocked order-9 device folio at page `idx` of `pm`, with its
/// allocation reference.
fn device_thp(pm: &DevPagemap, idx: usize) -> Folio<'_> {
    let head = Folio::from_head(PageRef::new(pm, idx).unwrap());
    let f = zone_device_folio_init(head, pm, Order::HPAGE_PMD).unwrap();
    f.unlock();
    f
}

/// H13, the corruption 7.0 allowed: device folio Y is mapped by a
/// device-private PMD at `A`; folio X (anon at the same index, being
/// migrated) is not mapped. `remove_migration_ptes(X, X')` walks with
/// `PVMW_MIGRATION`; the 7.0 walker returns Y's PMD and
/// `remove_migration_pmd()` takes it for X's migration entry: Y's mapping
/// is overwritten by X' while Y keeps its map count and the mapping's
/// reference. `try_to_migrate(X)` likewise replaces Y's PMD with a
/// migration entry and drops X's rmap (which X does not have). The model's
/// rmap has no guard of its own, like the kernel's; the fixed walker
/// returns nothing and nothing changes.
#[test]
fn h13_v7_0_corrupts_without_the_rmap_guard() {
    for pvmw_pmd in [PvmwPmdPolicy::Fixed, PvmwPmdPolicy::V7_0] {
        let config = MmConfig {
            pvmw_pmd,
            ..MmConfig::default()
        };
        let (mm, pm) = device_mm(config);
        let vma = mm.vmas()[0].clone();
        let a = BASE;
        let (x, y) = (device_thp(&pm, 0), device_thp(&pm, 512));
        let (xf, yf) = (AnyFolio::Dev(x), AnyFolio::Dev(y));
        for f in [xf, yf] {
            f.set_anon(vma.id(), vma.linear_page_index(a));
        }
        let y_entry = make_device_private_entry(
            true,
            pm.first_offset().checked_add(PageCount::new(512)).unwrap(),
            MODE,
        )
        .unwrap();
        let y_pmd = Pmd::from_swp_entry(y_entry).unwrap();
        mm.set_pmd(a, y_pmd).unwrap();
        yf.add_rmap_pmd().unwrap();
        yf.get();
        let sys = mm.memory().sys();
        let new = sys.alloc_folio(Order::HPAGE_PMD).unwrap();
        let newf = AnyFolio::Sys(new);

        let r = remove_migration_ptes(&mm, xf, newf);
        let pmd = mm.pmdp_get_lockless(a).unwrap();
        match pvmw_pmd {
            PvmwPmdPolicy::Fixed => {
                assert_eq!(r, Ok(()));
                assert_eq!(pmd, y_pmd, "Y's PMD untouched");
                assert_eq!((newf.mapcount(), newf.refcount()), (0, 1));
            }
            PvmwPmdPolicy::V7_0 => {
                assert_eq!(r, Ok(()), "nothing notices");
                assert!(
                    pmd.is_trans_huge() && pmd.pfn() == new.pfn(),
                    "Y's PMD now maps X'"
                );
                assert_eq!((newf.mapcount(), newf.refcount()), (1, 2));
            }
        }
        // Y's counts still claim its mapping either way: under 7.0 they
        // are now stale (a mapcount and a reference nothing will drop).
        assert_eq!((yf.entire_mapcount(), yf.refcount()), (1, 2));
        assert_eq!(
            mm.device_private_offset_at(a).is_some(),
            pvmw_pmd == PvmwPmdPolicy::Fixed
        );

        // try_to_migrate(X) on a fresh layout.
        if pvmw_pmd == PvmwPmdPolicy::V7_0 {
            mm.set_pmd(a, y_pmd).unwrap();
        }
        let r = try_to_migrate(&mm, xf);
        let pmd = mm.pmdp_get_lockless(a).unwrap();
        match pvmw_pmd {
            PvmwPmdPolicy::Fixed => {
                assert_eq!(r, Ok(()));
                assert_eq!(pmd, y_pmd);
            }
            PvmwPmdPolicy::V7_0 => {
                assert_eq!(r, Err(Errno::EINVAL), "X had no PMD rmap to drop");
                let e = Softleaf::from_pmd(pmd);
                assert!(e.is_migration(), "Y's PMD replaced by a migration entry");
                assert_eq!(
                    e.to_frame(MODE),
                    Some(y_entry.to_frame(MODE).unwrap()),
                    "naming Y, whose rmap is untouched"
                );
            }
        }
        assert_eq!(yf.entire_mapcount(), 1);
    }
}

/// H18: device-private migration entries are migration entries for every
/// generic predicate, are not "device private", carry a pfn, and keep
/// young/dirty through a write -> read downgrade via `softleaf_to_flags()`.
///
/// Hazard H18: `docs/hazards.md`.
#[test]
fn h18_device_private_migration_entries_are_migration_entries() {
    type Pred = fn(Softleaf) -> bool;
    let preds: [(&str, Pred); 4] = [
        ("is_migration", Softleaf::is_migration),
        ("is_migration_read", Softleaf::is_migration_read),
        (
            "is_migration_read_exclusive",
            Softleaf::is_migration_read_exclusive,
        ),
        ("is_migration_write", Softleaf::is_migration_write),
    ];
    for kind in MigrationKind::ALL {
        let normal = make_migration_entry(kind, Pfn::new(9).into(), MODE).unwrap();
        let dev = make_migration_entry(kind, DevicePrivateOffset::new(9).into(), MODE).unwrap();
        assert_ne!(normal.swp_type(), dev.swp_type());
        for (name, p) in preds {
            if p(normal) {
                assert!(p(dev), "{name} for {kind:?}");
            }
        }
        assert!(dev.has_pfn() && !dev.is_device_private() && dev.is_migration_device_private());
        assert!(!normal.is_migration_device_private());
        assert_eq!(dev.to_frame(MODE), Some(DevicePrivateOffset::new(9).into()));
    }
    for f in [frame(false, 77), frame(true, 77)] {
        for (young, dirty) in [(true, false), (false, true), (true, true)] {
            let flags = SoftleafFlags { young, dirty };
            let w = make_migration_entry(MigrationKind::Write, f, MODE)
                .unwrap()
                .with_flags(flags, MODE)
                .unwrap();
            assert_eq!(w.to_frame(MODE), Some(f), "flags do not leak into the pfn");
            // fork()/mprotect(): downgrade to read, copying the flags.
            let r = make_migration_entry(MigrationKind::Read, w.to_frame(MODE).unwrap(), MODE)
                .unwrap()
                .with_flags(w.to_flags(MODE), MODE)
                .unwrap();
            assert!(r.is_migration_read() && r.to_flags(MODE) == flags);
            assert_eq!(r.is_migration_device_private(), f.is_device_private());
            // Without softleaf_to_flags() the bits are lost.
            let lost = make_migration_entry(MigrationKind::Read, f, MODE).unwrap();
            assert_ne!(lost.to_flags(MODE), flags);
        }
    }
    let d = make_device_private_entry(true, DevicePrivateOffset::new(1), MODE).unwrap();
    assert_eq!(
        d.with_flags(SoftleafFlags::default(), MODE),
        Err(Errno::EINVAL)
    );
}

#[test]
fn walks_ignore_foreign_kinds_in_a_full_table() {
    // A full table of device-private entries with the same numbers as a
    // pfn-mapped folio elsewhere: the pfn walk sees only its own PTEs.
    let (mm, mem) = mm_with(2 * PMD_SIZE);
    let f = mem.sys().alloc_folio(Order::HPAGE_PMD).unwrap();
    mm.map_folio_ptes(BASE + PMD_SIZE, f, true).unwrap();
    for i in 0..512 {
        let off = DevicePrivateOffset::new(f.pfn().get() + i);
        let e = make_device_private_entry(false, off, MODE).unwrap();
        mm.set_pte(BASE + i * PAGE_SIZE, Pte::from_swp_entry(e).unwrap())
            .unwrap();
    }
    let vma = &mm.vmas()[0];
    let mut w = PageVmaMappedWalk::new(
        &mm,
        vma,
        f.pfn().into(),
        PageCount::new(512),
        vma.pgoff(),
        BASE,
        PvmwFlags::NONE,
    )
    .unwrap();
    // vma_address_end() bounds this walk to the first 2 MiB: nothing there.
    assert!(matches(&mut w).is_empty());
    let m = matches(&mut PageVmaMappedWalk::for_folio(&mm, vma, f, PvmwFlags::NONE).unwrap());
    assert_eq!(m.len(), 512);
    assert!(m.iter().all(|(a, _)| *a >= BASE + PMD_SIZE));
}

/// The COMPOUND hole migration to a system THP that H21's tests share:
/// setup over `[BASE, BASE + 2 MiB)`, then `prepare(&mm)`, then
/// `migrate_vma_pages` with a locked order-9 destination. Returns the
/// address space (with the migration finalized) and the memory.
fn compound_hole_insert(
    config: MmConfig,
    prepare: impl FnOnce(&devpriv_migrate::Mm),
) -> (Arc<devpriv_migrate::Mm>, devpriv_migrate::Memory, bool) {
    let (mm, mem) = mm_with_config(2 * PMD_SIZE, config);
    let vma = mm.vmas()[0].clone();
    let sel = MigrateVmaFlags::SELECT_SYSTEM | MigrateVmaFlags::SELECT_COMPOUND;
    let mut args = MigrateVma::new(&mm, &vma, BASE, BASE + PMD_SIZE, sel, None);
    migrate_vma_setup(&mut args).unwrap();
    prepare(&mm);
    let f = mem.sys().alloc_folio(Order::HPAGE_PMD).unwrap();
    assert!(f.trylock());
    args.dst[0] = MigratePfn::new(f.pfn().into())
        .unwrap()
        .with(MigratePfn::COMPOUND)
        .unwrap();
    migrate_vma_pages(&mut args);
    let migrated = args.src[..512]
        .iter()
        .any(|m| m.contains(MigratePfn::MIGRATE));
    migrate_vma_finalize(&mut args);
    drop(args);
    (mm, mem, migrated)
}

/// H21 (a): `migrate_vma_insert_huge_pmd_page()` checks
/// `check_stable_address_space()` under the PMD lock. Fixed
/// (63451de16e0a): the abort unlocks; 7.0 jumped to `abort` with the lock
/// held, so the next `pmd_lock()` of that table deadlocks (here: a
/// trylock finds it taken), and the table from `pte_alloc_one()` leaks.
#[test]
fn h21_unstable_mm_releases_the_pmd_lock() {
    for policy in [HugeInsertErrors::Fixed, HugeInsertErrors::V7_0] {
        let config = MmConfig {
            huge_insert_errors: policy,
            ..MmConfig::default()
        };
        let (mm, mem, migrated) = compound_hole_insert(config, |mm| mm.set_unstable());
        assert!(!migrated, "{policy:?}: the insert aborted");
        assert_eq!(mm.pmdp_get_lockless(BASE), Some(Pmd::NONE));
        assert_eq!(mem.sys().nr_free(), 4096, "the destination was freed");
        match policy {
            HugeInsertErrors::Fixed => {
                assert!(mm.pmd_trylock(BASE).is_ok(), "the PMD lock is free");
                assert_eq!(mm.nr_pgtables(), 0);
            }
            HugeInsertErrors::V7_0 => {
                assert_eq!(
                    mm.pmd_trylock(BASE).err(),
                    Some(Errno::EBUSY),
                    "7.0 leaves the PMD lock held"
                );
                assert_eq!(mm.nr_pgtables(), 1, "and the table allocated");
            }
        }
    }
}

/// H21 (b): the abort for a PMD that is not none (here: it points to a
/// PTE table) comes after `pte_alloc_one()`. Fixed (the pgtable-leak fix,
/// May 2026): the table is freed; 7.0 leaked one page-table page per
/// failed insert.
#[test]
fn h21_failed_insert_frees_its_table() {
    for policy in [HugeInsertErrors::Fixed, HugeInsertErrors::V7_0] {
        let config = MmConfig {
            huge_insert_errors: policy,
            ..MmConfig::default()
        };
        let (mm, mem, migrated) = compound_hole_insert(config, |mm| {
            drop(mm.pte_alloc_map_lock(BASE).unwrap());
        });
        assert!(!migrated, "{policy:?}: the insert aborted");
        assert!(mm.pmdp_get_lockless(BASE).unwrap().is_table());
        assert_eq!(mem.sys().nr_free(), 4096);
        assert!(mm.pmd_trylock(BASE).is_ok());
        assert_eq!(mm.nr_deposited_pgtables(), 0);
        let leaked = mm.nr_pgtables() - mm.nr_deposited_pgtables();
        let want = match policy {
            HugeInsertErrors::Fixed => 0,
            HugeInsertErrors::V7_0 => 1,
        };
        assert_eq!(leaked, want, "{policy:?}");
    }
    // A successful insert deposits its table, and a zap frees it.
    let (mm, _, migrated) = compound_hole_insert(MmConfig::default(), |_| {});
    assert!(migrated);
    assert!(mm.pmdp_get_lockless(BASE).unwrap().is_trans_huge());
    assert_eq!((mm.nr_pgtables(), mm.nr_deposited_pgtables()), (1, 1));
    mm.zap_page_range(BASE, BASE + PMD_SIZE).unwrap();
    assert_eq!((mm.nr_pgtables(), mm.nr_deposited_pgtables()), (0, 0));
}

/// H20: `migrate_vma_collect_pmd()` marks the folio dirty "now the pte is
/// gone" from `pte_dirty(pte)`. On a device-private swap PTE that reads
/// bit 58 (`_PAGE_SAVED_DIRTY`), the inverted top offset bit: set for any
/// real offset. 7.0 read it anyway and marked every collected device page
/// dirty; the fix (Kefeng Wang, July 2026) reads it only for a present PTE.
#[test]
fn h20_collect_does_not_read_dirty_from_a_swap_pte() {
    let off = DevicePrivateOffset::new(3);
    let e = make_device_private_entry(false, off, MODE).unwrap();
    let swp = Pte::from_swp_entry(e).unwrap();
    assert!(swp.is_dirty(), "bit 58 of a device-private swap PTE");
    assert_eq!(swp.raw() & _PAGE_SAVED_DIRTY, _PAGE_SAVED_DIRTY);

    for guard in [CollectPteGuard::Fixed, CollectPteGuard::V7_0] {
        let config = MmConfig {
            collect_pte_guard: guard,
            ..MmConfig::default()
        };
        let (mm, pm) = device_mm(config);
        let vma = mm.vmas()[0].clone();
        let head = Folio::from_head(PageRef::new(&pm, 3).unwrap());
        let folio = zone_device_folio_init(head, &pm, Order::ZERO).unwrap();
        folio.unlock();
        let f = AnyFolio::Dev(folio);
        f.set_anon(vma.id(), vma.linear_page_index(BASE));
        let off = pm.first_offset().checked_add(PageCount::new(3)).unwrap();
        let pte =
            Pte::from_swp_entry(make_device_private_entry(false, off, MODE).unwrap()).unwrap();
        mm.set_pte(BASE, pte).unwrap();
        f.add_rmap_ptes(0, 1).unwrap();
        f.get();
        assert!(!folio.page().test_flag(PG_DIRTY), "a clean device page");

        let sel = MigrateVmaFlags::SELECT_DEVICE_PRIVATE;
        let mut args = MigrateVma::new(&mm, &vma, BASE, BASE + PAGE_SIZE, sel, Some(Owner(1)));
        migrate_vma_setup(&mut args).unwrap();
        assert_eq!(args.cpages, 1, "{guard:?}");
        let dirty = folio.page().test_flag(PG_DIRTY);
        match guard {
            CollectPteGuard::Fixed => assert!(!dirty, "the fix leaves it clean"),
            CollectPteGuard::V7_0 => assert!(dirty, "7.0 marks it dirty from bit 58"),
        }
        migrate_vma_finalize(&mut args);
        assert_eq!(mm.ptep_get_lockless(BASE), Some(pte), "restored");
    }
}

/// H22: a device THP mapped by a device-private PMD is being migrated back
/// to RAM: `migrate_vma_collect_huge_pmd()` has replaced the PMD with a
/// migration entry and dropped the mapping's rmap and reference; only the
/// migration's reference is left. `MADV_DONTNEED` zaps the range now (the
/// migration holds only `mmap_read_lock`). The derived fix keys
/// `zap_huge_pmd()` on the entry: a migration PMD is just cleared, and the
/// device folio is freed exactly once, by finalize. 7.0 keys on the folio
/// kind: it removes an rmap that is not there (WARN) and drops the
/// migration's reference, freeing the folio under the migration (which
/// still has it locked); finalize then puts it a second time.
#[test]
fn h22_zap_of_a_device_private_migration_pmd() {
    for policy in [ZapDevicePmd::Fixed, ZapDevicePmd::V7_0] {
        let config = MmConfig {
            zap_device_pmd: policy,
            ..MmConfig::default()
        };
        let (mm, pm) = device_mm(config);
        let vma = mm.vmas()[0].clone();
        let baseline = pm.percpu_ref().count();
        // Y on the device behind a device-private PMD; only the mapping
        // holds it (the driver dropped its allocation reference).
        let y = device_thp(&pm, 512);
        let yf = AnyFolio::Dev(y);
        yf.set_anon(vma.id(), vma.linear_page_index(BASE));
        let off = pm.first_offset().checked_add(PageCount::new(512)).unwrap();
        let pmd = Pmd::from_swp_entry(make_device_private_entry(true, off, MODE).unwrap()).unwrap();
        mm.set_pmd(BASE, pmd).unwrap();
        yf.add_rmap_pmd().unwrap();
        yf.get();
        yf.put();
        assert_eq!(pm.percpu_ref().count(), baseline + 512);

        let sel = MigrateVmaFlags::SELECT_DEVICE_PRIVATE | MigrateVmaFlags::SELECT_COMPOUND;
        let mut args = MigrateVma::new(&mm, &vma, BASE, BASE + PMD_SIZE, sel, Some(Owner(1)));
        migrate_vma_setup(&mut args).unwrap();
        assert_eq!(args.cpages, 1);
        assert!(Softleaf::from_pmd(mm.pmdp_get_lockless(BASE).unwrap()).is_migration());
        assert_eq!((yf.entire_mapcount(), yf.refcount()), (0, 1));

        let (r, hits) = warn::capture(|| mm.zap_page_range(BASE, BASE + PMD_SIZE));
        assert_eq!(r, Ok(()));
        assert_eq!(mm.pmdp_get_lockless(BASE), Some(Pmd::NONE));
        let zap_warned = hits.count_matching("folio_mapcount(folio) < 0");
        let freed_by_zap = pm.percpu_ref().count() == baseline;

        let sys = mm.memory().sys();
        let nr_free = sys.nr_free();
        let dst = sys.alloc_folio(Order::HPAGE_PMD).unwrap();
        assert!(dst.trylock());
        args.dst[0] = MigratePfn::new(dst.pfn().into())
            .unwrap()
            .with(MigratePfn::COMPOUND)
            .unwrap();
        let ((), hits) = warn::capture(|| {
            migrate_vma_pages(&mut args);
            migrate_vma_finalize(&mut args);
        });
        assert_eq!(
            sys.nr_free(),
            nr_free,
            "the destination, mapped nowhere, is freed"
        );
        let refs = pm.percpu_ref().count();
        match policy {
            ZapDevicePmd::Fixed => {
                assert_eq!((zap_warned, freed_by_zap), (0, false));
                assert_eq!(hits.count(), 0, "{hits:?}");
                assert_eq!(refs, baseline, "Y freed once, by finalize");
            }
            ZapDevicePmd::V7_0 => {
                assert_eq!(zap_warned, 1, "the rmap was already gone");
                assert!(freed_by_zap, "Y freed under the migration");
                // Finalize unlocks and puts the folio the driver may
                // already have handed out again: a put on a freed folio.
                assert_eq!(
                    hits.count_matching("folio_put(): folio refcount was 0"),
                    1,
                    "{hits:?}"
                );
                assert_eq!(refs, baseline);
            }
        }
    }
}
