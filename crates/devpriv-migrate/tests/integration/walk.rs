//! `check_pte()` / `check_pmd()` truth tables and the walker's control flow.

use crate::naive;
use devpriv_core::{DevicePrivateOffset, Order, PAGE_SIZE, PageCount, PageFrame, PagingMode, Pfn};
use devpriv_migrate::pgtable::{_PAGE_PRESENT, _PAGE_RW, PMD_SIZE};
use devpriv_migrate::swapops::{
    MigrationKind, make_device_exclusive_entry, make_device_private_entry, make_migration_entry,
};
use devpriv_migrate::{
    Memory, Mm, MmConfig, PageVmaMappedWalk, Pmd, Pte, PvmwFlags, PvmwPmdPolicy, PvmwTarget,
    Softleaf, SysFolio, SystemMemory, VmFlags, Vma,
};
use devpriv_pagemap::DevicePrivateSpace;
use std::sync::Arc;

pub(crate) const BASE: u64 = 0x7f00_0000_0000;
const MODE: PagingMode = PagingMode::FourLevel;

/// The entry kinds of the truth tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Present,
    Migration,
    DpMigration,
    DevicePrivate,
    DeviceExclusive,
    None,
}

pub(crate) const KINDS: [Kind; 6] = [
    Kind::Present,
    Kind::Migration,
    Kind::DpMigration,
    Kind::DevicePrivate,
    Kind::DeviceExclusive,
    Kind::None,
];

/// Where the entry's pages lie relative to the target's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Overlap {
    Before,
    FirstPage,
    Inside,
    LastPage,
    After,
}

pub(crate) const OVERLAPS: [Overlap; 5] = [
    Overlap::Before,
    Overlap::FirstPage,
    Overlap::Inside,
    Overlap::LastPage,
    Overlap::After,
];

/// The raw index of an entry of `n` pages in position `o` against target
/// `[t, t + nr)`.
pub(crate) fn entry_raw(o: Overlap, t: u64, nr: u64, n: u64) -> u64 {
    match o {
        Overlap::Before => t - n,
        Overlap::FirstPage => t - (n - 1),
        Overlap::Inside => t + nr / 2,
        Overlap::LastPage => t + nr - 1,
        Overlap::After => t + nr,
    }
}

pub(crate) fn frame(dp: bool, raw: u64) -> PageFrame {
    if dp {
        DevicePrivateOffset::new(raw).into()
    } else {
        Pfn::new(raw).into()
    }
}

pub(crate) fn pte_for(kind: Kind, raw: u64) -> Pte {
    let swp = |e: Softleaf| Pte::from_swp_entry(e).unwrap();
    match kind {
        Kind::Present => Pte::pfn_pte(Pfn::new(raw), _PAGE_PRESENT | _PAGE_RW).unwrap(),
        Kind::Migration => {
            swp(make_migration_entry(MigrationKind::Write, frame(false, raw), MODE).unwrap())
        }
        Kind::DpMigration => {
            swp(make_migration_entry(MigrationKind::Read, frame(true, raw), MODE).unwrap())
        }
        Kind::DevicePrivate => {
            swp(make_device_private_entry(true, DevicePrivateOffset::new(raw), MODE).unwrap())
        }
        Kind::DeviceExclusive => swp(make_device_exclusive_entry(Pfn::new(raw), MODE).unwrap()),
        Kind::None => Pte::NONE,
    }
}

pub(crate) fn pmd_for(kind: Kind, raw: u64) -> Pmd {
    match kind {
        Kind::Present => Pmd::huge(Pfn::new(raw & !511), _PAGE_PRESENT | _PAGE_RW).unwrap(),
        Kind::None => Pmd::NONE,
        k => Pmd::from_swp_entry(Softleaf::from_pte(pte_for(k, raw))).unwrap(),
    }
}

/// The module table of `page_vma_mapped.rs`: which space an entry kind is
/// compared in, under `PVMW_MIGRATION` or not (`None`: never matches).
fn spec_space(migration: bool, kind: Kind) -> Option<bool> {
    match (migration, kind) {
        (true, Kind::Migration) | (false, Kind::Present | Kind::DeviceExclusive) => Some(false),
        (true, Kind::DpMigration) | (false, Kind::DevicePrivate) => Some(true),
        _ => None,
    }
}

fn overlaps(o: Overlap) -> bool {
    matches!(o, Overlap::FirstPage | Overlap::Inside | Overlap::LastPage)
}

#[test]
fn check_pte_truth_table() {
    const T: u64 = 1000;
    const N: u64 = 16;
    let (mm, _) = mm_with(PMD_SIZE);
    let vma = &mm.vmas()[0];
    let mut trues = 0;
    for migration in [false, true] {
        for dp in [false, true] {
            let target = PvmwTarget::new(frame(dp, T), PageCount::new(N), migration).unwrap();
            let bits = target.flags().bits();
            assert_eq!(bits & naive::PVMW_MIGRATION != 0, migration);
            assert_eq!(bits & naive::PVMW_DEVICE_PRIVATE != 0, dp);
            for kind in KINDS {
                for o in OVERLAPS {
                    let pte = pte_for(kind, entry_raw(o, T, N, 1));
                    let typed = target.check_pte(pte, 1, MODE);
                    let oracle = naive::check_pte(pte.raw(), 1, T, N, bits, 34, true);
                    let spec = spec_space(migration, kind) == Some(dp) && overlaps(o);
                    let cell = (migration, dp, kind, o);
                    assert_eq!(typed, oracle, "typed vs naive at {cell:?}");
                    assert_eq!(typed, spec, "typed vs table at {cell:?}");
                    trues += usize::from(typed);

                    // The walker agrees: one entry, five pages into an
                    // N-page window.
                    mm.set_pte(BASE + 5 * PAGE_SIZE, pte).unwrap();
                    for sync in [PvmwFlags::NONE, PvmwFlags::SYNC] {
                        let mut flags = sync;
                        if migration {
                            flags = flags | PvmwFlags::MIGRATION;
                        }
                        let mut w = PageVmaMappedWalk::new(
                            &mm,
                            vma,
                            frame(dp, T),
                            PageCount::new(N),
                            vma.pgoff(),
                            BASE,
                            flags,
                        )
                        .unwrap();
                        assert_eq!(w.walk(), typed, "walk at {cell:?} sync={sync:?}");
                        let found = typed;
                        if found {
                            assert_eq!(w.address(), BASE + 5 * PAGE_SIZE);
                            assert!(w.ptl_held());
                            assert_eq!(w.pte(), Some(pte));
                            assert!(!w.walk(), "a single entry matches once");
                        }
                        assert!(!w.ptl_held());
                    }
                }
            }
        }
    }
    // Migration: 2 target kinds x 1 kind x 3 overlaps; otherwise: pfn
    // targets match present + exclusive, offset targets device-private.
    assert_eq!(trues, 6 + 6 + 3);
}

#[test]
fn check_pmd_truth_table() {
    const T: u64 = 5000;
    const N: u64 = 1024;
    let mut trues = 0;
    for migration in [false, true] {
        for dp_target in [false, true] {
            let target =
                PvmwTarget::new(frame(dp_target, T), PageCount::new(N), migration).unwrap();
            for dp_entry in [false, true] {
                for o in OVERLAPS {
                    let raw = entry_raw(o, T, N, 512);
                    let typed = target.check_pmd(frame(dp_entry, raw));
                    let oracle = naive::check_pmd(raw, dp_entry, T, N, target.flags().bits());
                    let spec = dp_entry == dp_target && overlaps(o);
                    assert_eq!(typed, oracle, "{migration} {dp_target} {dp_entry} {o:?}");
                    assert_eq!(typed, spec);
                    trues += usize::from(typed);
                }
            }
        }
    }
    assert_eq!(trues, 2 * 2 * 3);
}

#[test]
fn walk_pmd_branches_truth_table() {
    const T: u64 = 5000;
    const N: u64 = 1024;
    for (thp_migration, pvmw_pmd) in [
        (true, PvmwPmdPolicy::Fixed),
        (false, PvmwPmdPolicy::Fixed),
        (true, PvmwPmdPolicy::V7_0),
        (false, PvmwPmdPolicy::V7_0),
    ] {
        let fixed = pvmw_pmd == PvmwPmdPolicy::Fixed;
        let mm = Mm::new(
            &memory(),
            MmConfig {
                thp_migration,
                pvmw_pmd,
                ..MmConfig::default()
            },
        );
        mm.mmap_write_lock()
            .mmap_anon(BASE, 4 * PMD_SIZE, VmFlags::RW)
            .unwrap();
        let vma = &mm.vmas()[0];
        let addr = BASE + PMD_SIZE;
        for migration in [false, true] {
            for dp in [false, true] {
                for kind in KINDS {
                    for o in OVERLAPS {
                        let pmd = pmd_for(kind, entry_raw(o, T, N, 512));
                        mm.set_pmd(addr, pmd).unwrap();
                        let flags = if migration {
                            PvmwFlags::MIGRATION
                        } else {
                            PvmwFlags::NONE
                        };
                        let mut w = PageVmaMappedWalk::new(
                            &mm,
                            vma,
                            frame(dp, T),
                            PageCount::new(N),
                            vma.linear_page_index(addr),
                            addr,
                            flags,
                        )
                        .unwrap();
                        let found = w.walk();
                        let oracle = naive::walk_pmd_branch(
                            pmd.raw(),
                            T,
                            N,
                            w.flags().bits(),
                            34,
                            thp_migration,
                            fixed,
                        );
                        let cell = (thp_migration, pvmw_pmd, migration, dp, kind, o);
                        assert_eq!(Some(found), oracle, "{cell:?}");
                        if kind == Kind::DevicePrivate {
                            // H13: 7.0 matches any target; the fix checks.
                            let checked = !migration && dp && overlaps(o);
                            assert_eq!(found, !fixed || checked, "{cell:?}");
                        }
                        if found {
                            assert!(w.is_pmd_mapped() && w.ptl_held());
                            assert!(!w.walk(), "a PMD mapping is returned once");
                        }
                    }
                }
            }
        }
    }
}

/// 4096 pages of system memory and an empty device-private space.
fn memory() -> Memory {
    let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(4096)).unwrap();
    Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()))
}

/// An address space with `len` bytes of RW anon memory at `BASE`, and its
/// memory.
pub(crate) fn mm_with(len: u64) -> (Arc<Mm>, Memory) {
    mm_with_config(len, MmConfig::default())
}

/// As [`mm_with`], with `config`.
pub(crate) fn mm_with_config(len: u64, config: MmConfig) -> (Arc<Mm>, Memory) {
    let mem = memory();
    let mm = Mm::new(&mem, config);
    mm.mmap_write_lock()
        .mmap_anon(BASE, len, VmFlags::RW)
        .unwrap();
    (mm, mem)
}

/// Collects `(address, pte)` of every match, checking the lock is held.
pub(crate) fn matches(w: &mut PageVmaMappedWalk<'_>) -> Vec<(u64, Option<Pte>)> {
    let mut v = Vec::new();
    while w.walk() {
        assert!(w.ptl_held());
        v.push((w.address(), w.pte()));
    }
    assert!(!w.ptl_held());
    v
}

fn folio_walk<'a>(
    mm: &'a Mm,
    vma: &'a Vma,
    f: SysFolio<'_>,
    flags: PvmwFlags,
) -> PageVmaMappedWalk<'a> {
    PageVmaMappedWalk::for_folio(mm, vma, f, flags).unwrap()
}

#[test]
fn pte_mapped_thp_yields_every_pte() {
    let (mm, mem) = mm_with(4 * PMD_SIZE);
    let vma = &mm.vmas()[0];
    let f = mem.sys().alloc_folio(Order::HPAGE_PMD).unwrap();
    mm.map_folio_ptes(BASE + PMD_SIZE, f, true).unwrap();
    for sync in [PvmwFlags::NONE, PvmwFlags::SYNC] {
        let mut w = folio_walk(&mm, vma, f, sync);
        let m = matches(&mut w);
        assert_eq!(m.len(), 512);
        for (i, (addr, pte)) in m.iter().enumerate() {
            assert_eq!(*addr, BASE + PMD_SIZE + i as u64 * PAGE_SIZE);
            assert_eq!(pte.map(Pte::pfn), f.page_pfn(i as u64));
        }
        assert!(!w.flags().contains(PvmwFlags::PGTABLE_CROSSED));
        assert!(!w.walk(), "stays finished");
    }
}

#[test]
fn crossing_a_pte_table_sets_pgtable_crossed() {
    let (mm, mem) = mm_with(4 * PMD_SIZE);
    let vma = &mm.vmas()[0];
    let f = mem.sys().alloc_folio(Order::HPAGE_PMD).unwrap();
    let addr = BASE + 2 * PMD_SIZE - 100 * PAGE_SIZE;
    mm.map_folio_ptes(addr, f, true).unwrap();
    let mut w = folio_walk(&mm, vma, f, PvmwFlags::NONE);
    let mut seen = 0;
    while w.walk() {
        let crossed = w.flags().contains(PvmwFlags::PGTABLE_CROSSED);
        assert_eq!(crossed, seen >= 100, "match {seen}");
        seen += 1;
    }
    assert_eq!(seen, 512);
    assert!(w.flags().contains(PvmwFlags::PGTABLE_CROSSED));
}

#[test]
fn holes_and_foreign_ptes_are_skipped() {
    let (mm, mem) = mm_with(PMD_SIZE);
    let vma = &mm.vmas()[0];
    let f = mem.sys().alloc_folio(Order::HPAGE_PMD).unwrap();
    mm.map_folio_ptes(BASE, f, true).unwrap();
    // Unmap every third PTE and point one at another folio.
    let other = mem.sys().alloc_folio(Order::ZERO).unwrap();
    for i in (0..512).step_by(3) {
        let g = mm.pte_offset_map_lock(BASE + i * PAGE_SIZE).unwrap();
        g.get_and_clear();
    }
    mm.set_pte(
        BASE + PAGE_SIZE,
        Pte::pfn_pte(other.pfn(), _PAGE_PRESENT).unwrap(),
    )
    .unwrap();
    for sync in [PvmwFlags::NONE, PvmwFlags::SYNC] {
        let m = matches(&mut folio_walk(&mm, vma, f, sync));
        let expect: Vec<u64> = (0..512).filter(|i| i % 3 != 0 && *i != 1).collect();
        assert_eq!(
            m.iter()
                .map(|(a, _)| (a - BASE) / PAGE_SIZE)
                .collect::<Vec<_>>(),
            expect
        );
    }
}

#[test]
fn pmd_mapped_thp_matches_once() {
    let (mm, mem) = mm_with(4 * PMD_SIZE);
    let vma = &mm.vmas()[0];
    let f = mem.sys().alloc_folio(Order::HPAGE_PMD).unwrap();
    mm.map_folio_pmd(BASE + PMD_SIZE, f, true).unwrap();
    let mut w = folio_walk(&mm, vma, f, PvmwFlags::NONE);
    assert!(w.walk());
    assert!(w.is_pmd_mapped());
    assert_eq!(w.address(), BASE + PMD_SIZE);
    assert!(!w.walk());
    assert!(matches(&mut folio_walk(&mm, vma, f, PvmwFlags::MIGRATION)).is_empty());
}

/// `try_to_migrate_one()` / `remove_migration_pte()` in miniature: replace each
/// matched PTE with a migration entry under the walk's lock, then restore.
#[test]
fn migration_entries_round_trip_through_the_walker() {
    let (mm, mem) = mm_with(PMD_SIZE);
    let vma = &mm.vmas()[0];
    let f = mem.sys().alloc_folio(Order::HPAGE_PMD).unwrap();
    mm.map_folio_ptes(BASE, f, true).unwrap();
    for i in 0..512 {
        mm.write_user(BASE + i * PAGE_SIZE, 0xd00d + i).unwrap();
    }
    let mut w = folio_walk(&mm, vma, f, PvmwFlags::SYNC);
    while w.walk() {
        let old = w.get_and_clear_pte().unwrap();
        let e = make_migration_entry(MigrationKind::Write, old.pfn().into(), MODE).unwrap();
        w.set_pte(Pte::from_swp_entry(e).unwrap()).unwrap();
    }
    assert!(matches(&mut folio_walk(&mm, vma, f, PvmwFlags::NONE)).is_empty());
    let mut w = folio_walk(&mm, vma, f, PvmwFlags::MIGRATION);
    let mut n = 0;
    while w.walk() {
        let e = Softleaf::from_pte(w.pte().unwrap());
        let Some(PageFrame::Pfn(pfn)) = e.to_frame(MODE) else {
            panic!("not a pfn entry");
        };
        w.set_pte(Pte::pfn_pte(pfn, _PAGE_PRESENT | _PAGE_RW).unwrap())
            .unwrap();
        n += 1;
    }
    assert_eq!(n, 512);
    for i in 0..512 {
        assert_eq!(mm.read_user(BASE + i * PAGE_SIZE), Ok(0xd00d + i));
    }
}

#[test]
fn device_private_migration_entries_match_only_offset_walks() {
    let (mm, _) = mm_with(PMD_SIZE);
    let vma = &mm.vmas()[0];
    let off = DevicePrivateOffset::new(4096);
    for i in 0..512u64 {
        let e = make_migration_entry(
            MigrationKind::ALL[(i % 3) as usize],
            frame(true, off.get() + i),
            MODE,
        )
        .unwrap();
        mm.set_pte(BASE + i * PAGE_SIZE, Pte::from_swp_entry(e).unwrap())
            .unwrap();
    }
    let walk = |f: PageFrame, flags| {
        let mut w =
            PageVmaMappedWalk::new(&mm, vma, f, PageCount::new(512), vma.pgoff(), BASE, flags)
                .unwrap();
        matches(&mut w).len()
    };
    assert_eq!(walk(off.into(), PvmwFlags::MIGRATION), 512);
    assert_eq!(
        walk(off.into(), PvmwFlags::MIGRATION | PvmwFlags::SYNC),
        512
    );
    assert_eq!(walk(off.into(), PvmwFlags::NONE), 0);
    assert_eq!(walk(Pfn::new(4096).into(), PvmwFlags::MIGRATION), 0);
}

#[test]
fn constructor_refuses_bad_input() {
    let (mm, _) = mm_with(PMD_SIZE);
    let vma = &mm.vmas()[0];
    let p: PageFrame = Pfn::new(1).into();
    let new = |f, n, a, fl| PageVmaMappedWalk::new(&mm, vma, f, PageCount::new(n), 0, a, fl).err();
    use devpriv_core::Errno;
    assert_eq!(new(p, 0, BASE, PvmwFlags::NONE), Some(Errno::EINVAL));
    assert_eq!(new(p, 1, BASE + 1, PvmwFlags::NONE), Some(Errno::EINVAL));
    assert_eq!(
        new(p, 1, BASE + PMD_SIZE, PvmwFlags::NONE),
        Some(Errno::EFAULT)
    );
    assert_eq!(
        new(p, 1, BASE, PvmwFlags::DEVICE_PRIVATE),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        new(p, 1, BASE, PvmwFlags::PGTABLE_CROSSED),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        new(Pfn::new(u64::MAX).into(), 2, BASE, PvmwFlags::NONE),
        Some(Errno::EINVAL)
    );
    let (other, _) = mm_with(PMD_SIZE);
    assert_eq!(
        PageVmaMappedWalk::new(
            &mm,
            &other.vmas()[0],
            p,
            PageCount::ONE,
            0,
            BASE,
            PvmwFlags::NONE
        )
        .err(),
        Some(Errno::EINVAL),
        "a VMA of another mm"
    );
    // Accessors refuse when nothing is locked.
    let w = PageVmaMappedWalk::new(&mm, vma, p, PageCount::ONE, 0, BASE, PvmwFlags::NONE).unwrap();
    assert_eq!(w.set_pte(Pte::NONE), Err(Errno::EINVAL));
    assert_eq!(w.set_pmd(Pmd::NONE), Err(Errno::EINVAL));
}

#[test]
fn walks_race_with_pte_updates() {
    let (mm, mem) = mm_with(PMD_SIZE);
    let vma = &mm.vmas()[0];
    let f = mem.sys().alloc_folio(Order::HPAGE_PMD).unwrap();
    mm.map_folio_ptes(BASE, f, true).unwrap();
    let stop = devpriv_core::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for round in 0..200u64 {
                let i = round % 512;
                let g = mm.pte_offset_map_lock(BASE + i * PAGE_SIZE).unwrap();
                let old = g.get();
                let e = make_migration_entry(MigrationKind::Read, old.pfn().into(), MODE).unwrap();
                g.set(Pte::from_swp_entry(e).unwrap());
                drop(g);
                let g = mm.pte_offset_map_lock(BASE + i * PAGE_SIZE).unwrap();
                g.set(old);
            }
            stop.store(true, devpriv_core::sync::atomic::Ordering::Release);
        });
        while !stop.load(devpriv_core::sync::atomic::Ordering::Acquire) {
            for flags in [PvmwFlags::NONE, PvmwFlags::MIGRATION] {
                let mut w = folio_walk(&mm, vma, f, flags);
                while w.walk() {
                    // Under the lock, every match really is one.
                    let pte = w.pte().unwrap();
                    assert!(w.target().check_pte(pte, 1, MODE));
                }
            }
        }
    });
}
