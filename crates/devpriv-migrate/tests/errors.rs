//! The bad-input catalogue (`docs/errors.md`) for `devpriv-migrate`: one test per row
//! or one table-driven test per entry point.
//!
//! Every test feeds a public entry point an invalid input and checks three
//! things: the errno (or the documented "WARN and continue" behaviour), that
//! the call did not panic (each call runs under `catch_unwind`), and that
//! the state it could have touched is unchanged: `validate()` on the
//! structure plus a snapshot taken before and compared after.
//!
//! Run: `cargo test -p devpriv-migrate --test errors`.

#[path = "../../../tests/support/bad_input.rs"]
mod bad_input;
#[path = "../../../tests/support/machine.rs"]
mod machine;
#[path = "../../../tests/support/space.rs"]
mod space;

use bad_input::{assert_errno, np};
use devpriv_core::{
    DevicePrivateOffset, Errno, Order, PAGE_SIZE, PageCount, PageFrame, PagingMode, Pfn,
};
use devpriv_migrate::hmm::{HmmPfn, HmmPfnLayout, HmmRange, hmm_range_fault};
use devpriv_migrate::huge_memory::{split_folio, split_huge_pmd, split_unmapped_for_migration};
use devpriv_migrate::leafops::{Softleaf, SoftleafFlags};
use devpriv_migrate::page_vma_mapped::{PageVmaMappedWalk, PvmwFlags, PvmwPfnV2, PvmwTarget};
use devpriv_migrate::pgtable::{
    _PAGE_PRESENT, _PAGE_RW, MAX_PTE_PFN, PMD_SIZE, Pmd, Pte, TASK_SIZE,
};
use devpriv_migrate::swapops::{
    MigrationKind, make_device_exclusive_entry, make_device_private_entry, make_hwpoison_entry,
    make_migration_entry, make_pte_marker_entry, swp_entry,
};
use devpriv_migrate::{
    AnyFolio, FaultFlags, Memory, MigratePfn, MigrateVma, MigrateVmaFlags, Mm, MmConfig,
    SystemMemory, VmFlags, handle_mm_fault, migrate_device_finalize, migrate_device_pages,
    migrate_device_pfns, migrate_device_range, migrate_vma_finalize, migrate_vma_pages,
    migrate_vma_setup,
};
use devpriv_pagemap::Owner;
use machine::{BASE, SYS_PAGES, VMA_LEN, machine, mm_snap, mm_snap_of, mm_unchanged};
use space::{params, small_space};
use std::sync::Arc;

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
// devpriv-migrate: Mm
// ---------------------------------------------------------------------------

#[test]
fn mmap_anon_and_munmap_bad_ranges() {
    let m = machine();
    let mm = m.mm;
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
        let before = mm_snap_of(&mm);
        let r = np(what, || {
            mm.mmap_write_lock()
                .mmap_anon(start, len, VmFlags::RW)
                .map(|_| ())
        });
        assert_errno(&format!("mmap_anon {what}"), r, e);
        let r = np(what, || mm.mmap_write_lock().munmap(start, len));
        assert_errno(&format!("munmap {what}"), r, e);
        assert_eq!(before, mm_snap_of(&mm), "{what}");
    }
    let before = mm_snap_of(&mm);
    let r = np("overlap", || {
        mm.mmap_write_lock()
            .mmap_anon(BASE + PAGE_SIZE, PAGE_SIZE, VmFlags::RW)
            .map(|_| ())
    });
    assert_errno("mmap_anon overlap", r, Errno::EEXIST);
    assert_eq!(before, mm_snap_of(&mm));
    // Unmapping twice: the second is a no-op success (POSIX).
    mm.mmap_write_lock()
        .munmap(BASE + VMA_LEN, 256 * PAGE_SIZE)
        .unwrap();
    let before = mm_snap_of(&mm);
    np("munmap twice", || {
        mm.mmap_write_lock().munmap(BASE + VMA_LEN, 256 * PAGE_SIZE)
    })
    .unwrap();
    assert_eq!(before, mm_snap_of(&mm));
}

#[test]
fn mm_page_table_accessors_bad_addresses() {
    let m = machine();
    let mm = &*m.mm;
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
            "pmd_trylock outside",
            mm.pmd_trylock(outside).map(|_| ()),
            Errno::EFAULT,
        );
        let held = mm.pmd_lock(BASE).unwrap();
        e(
            "pmd_trylock while held",
            mm.pmd_trylock(BASE).map(|_| ()),
            Errno::EBUSY,
        );
        drop(held);
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
            mm.read_user(outside).map(|_| ()),
            Errno::EFAULT,
        );
        e(
            "read_user not faulted",
            mm.read_user(BASE + 100 * PAGE_SIZE).map(|_| ()),
            Errno::EFAULT,
        );
        e(
            "write_user outside",
            mm.write_user(outside, 1),
            Errno::EFAULT,
        );
        e(
            "write_user not faulted",
            mm.write_user(BASE + 100 * PAGE_SIZE, 1),
            Errno::EFAULT,
        );
        e(
            "zap_page_range unaligned",
            mm.zap_page_range(BASE + 1, BASE + PAGE_SIZE),
            Errno::EINVAL,
        );
        e(
            "zap_page_range inverted",
            mm.zap_page_range(BASE + PAGE_SIZE, BASE),
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
        let r = handle_mm_fault(&m.mm, 0x1000_0000, FaultFlags::READ);
        assert_errno("fault with no VMA", r, Errno::EFAULT);
        let r = handle_mm_fault(&m.mm, BASE + VMA_LEN, FaultFlags::WRITE);
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
    let mm2 = Mm::new(&m.mem, MmConfig::default());
    mm2.mmap_write_lock()
        .mmap_anon(BASE, VMA_LEN, VmFlags::RW)
        .unwrap();
    let before = mm_snap_of(&mm2);
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
    assert_eq!(before, mm_snap_of(&mm2));
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
            split_folio(mm, AnyFolio::Sys(small)),
            Errno::EINVAL,
        );
        assert_errno(
            "split_unmapped_for_migration not large",
            split_unmapped_for_migration(AnyFolio::Sys(small)),
            Errno::EINVAL,
        );
        assert_errno(
            "split_huge_pmd no table",
            split_huge_pmd(mm, 0x1000_0000),
            Errno::EFAULT,
        );
    });
    // A mapped large folio, locked: still mapped.
    let mm2 = Mm::new(&m.mem, MmConfig::default());
    mm2.mmap_write_lock()
        .mmap_anon(BASE, VMA_LEN, VmFlags::RW)
        .unwrap();
    let big = m.mem.sys().alloc_folio(Order::HPAGE_PMD).unwrap();
    AnyFolio::Sys(big).set_anon(1, BASE >> 12);
    mm2.map_folio_pmd(BASE, big, true).unwrap();
    assert!(big.trylock());
    let before = mm_snap_of(&mm2);
    let r = np("split mapped", || {
        split_unmapped_for_migration(AnyFolio::Sys(big))
    });
    assert_errno(
        "split_unmapped_for_migration of a mapped folio",
        r,
        Errno::EINVAL,
    );
    assert_eq!(before, mm_snap_of(&mm2));
    big.unlock().unwrap();
    let r = np("split unlocked", || split_folio(&mm2, AnyFolio::Sys(big)));
    assert_errno("split_folio unlocked", r, Errno::EINVAL);
    assert_eq!(before, mm_snap_of(&mm2));
}

// ---------------------------------------------------------------------------
// devpriv-migrate: migrate_vma_* and migrate_device_*
// ---------------------------------------------------------------------------

#[test]
fn migrate_vma_setup_bad_ranges() {
    let m = machine();
    let other = machine();
    let other_vmas = other.mm.vmas();
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
            MigrateVma::new(mm, &other_vmas[0], BASE, BASE + PAGE_SIZE, sel, None),
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
        let r = mm_unchanged(&m, what, || migrate_vma_setup(&mut a));
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
    let r = mm_unchanged(&m, "unlocked fault page", || migrate_vma_setup(&mut a));
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
    np("setup", || migrate_vma_setup(&mut a)).unwrap();
    assert_eq!(a.cpages, 4);
    // No destination for any entry: pages clears MIGRATE, finalize restores.
    np("pages", || migrate_vma_pages(&mut a));
    assert!(a.src.iter().all(|s| !s.contains(MigratePfn::MIGRATE)));
    np("finalize", || migrate_vma_finalize(&mut a));
    assert_eq!(before, mm_snap(&m), "state restored");
    for i in 0..4 {
        assert_eq!(mm.read_user(BASE + i * PAGE_SIZE), Ok(0xabc0 + i));
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
            migrate_device_range(mm, &mut src4, sys0, 1),
            Errno::EINVAL,
        );
        assert_errno(
            "migrate_device_range start NONE",
            migrate_device_range(mm, &mut src4, MigratePfn::NONE, 1),
            Errno::EINVAL,
        );
        assert_errno(
            "migrate_device_range src shorter than npages",
            migrate_device_range(mm, &mut src1, dp0, 4),
            Errno::EINVAL,
        );
        assert_errno(
            "migrate_device_range npages u64::MAX",
            migrate_device_range(mm, &mut src4, dp0, u64::MAX),
            Errno::EINVAL,
        );
        assert_errno(
            "migrate_device_range past MAX_INDEX",
            migrate_device_range(mm, &mut src4, top, 2),
            Errno::EINVAL,
        );
        let mut mixed = vec![dp0, sys0];
        assert_errno(
            "migrate_device_pfns a system pfn",
            migrate_device_pfns(mm, &mut mixed),
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
            migrate_device_finalize(mm, &src4, &d3),
            Errno::EINVAL,
        );
    });
    assert!(src4.iter().all(|s| *s == MigratePfn::NONE), "src untouched");
}

// ---------------------------------------------------------------------------
// devpriv-migrate: hmm_range_fault, page tables
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
        let x = mm_unchanged(&m, what, || hmm_range_fault(&m.mm, &mut r));
        assert_errno(&format!("hmm_range_fault {what}"), x, e);
    }
    // A snapshot (no fault requested) of a range with no VMA succeeds and
    // reports HMM_PFN_ERROR, as the kernel's hmm_vma_walk_hole().
    let mut r = HmmRange::new(0x1000_0000, 0x1000_2000, None);
    mm_unchanged(&m, "snapshot no VMA", || hmm_range_fault(&m.mm, &mut r)).unwrap();
    assert!(r.hmm_pfns.iter().all(|p| p.raw() & HmmPfn::ERROR != 0));
}

#[test]
fn page_mapped_in_vma_not_mapped() {
    use devpriv_migrate::page_vma_mapped::page_mapped_in_vma;
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
    let mm = Mm::new(&mem, MmConfig::default());
    mm.mmap_write_lock()
        .mmap_anon(BASE, 2 * PMD_SIZE, VmFlags::RW)
        .unwrap();
    let thp = mem.sys().alloc_folio(Order::HPAGE_PMD).unwrap();
    mm.map_folio_pmd(BASE + PMD_SIZE, thp, true).unwrap();
    thp.put().unwrap();
    let before = mm_snap_of(&mm);
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
        let vma = &mm.vma_lookup(BASE).unwrap();
        assert_errno(
            "for_folio outside the VMA",
            PageVmaMappedWalk::for_folio(&mm, vma, stray, PvmwFlags::NONE).map(|_| ()),
            Errno::EFAULT,
        );
        stray.put().unwrap();
    });
    assert!(before == mm_snap_of(&mm), "page tables changed");
}

/// An address space the OOM reaper marked unstable (`MMF_UNSTABLE`) takes
/// no new entries from a migration: `check_stable_address_space()` is
/// `EFAULT`, the holes stay holes, nothing leaks. And any L1TF setting,
/// however odd, gives an answer rather than a panic.
#[test]
fn unstable_address_space_and_odd_machines() {
    let m = machine();
    let mm = &m.mm;
    mm.set_unstable();
    assert_errno(
        "check_stable_address_space",
        mm.check_stable_address_space(),
        Errno::EFAULT,
    );
    let vma = mm.vmas()[0].clone();
    let nr_free = m.mem.sys().nr_free();
    let sel = MigrateVmaFlags::SELECT_SYSTEM | MigrateVmaFlags::SELECT_COMPOUND;
    let hole = BASE + PMD_SIZE;
    np("migrate into an unstable mm", || {
        let mut args = MigrateVma::new(mm, &vma, hole, hole + 4 * PAGE_SIZE, sel, None);
        migrate_vma_setup(&mut args).unwrap();
        for d in args.dst.iter_mut().take(4) {
            let f = m.mem.sys().alloc_folio(Order::ZERO).unwrap();
            assert!(f.trylock());
            *d = MigratePfn::new(f.pfn().into()).unwrap();
        }
        migrate_vma_pages(&mut args);
        assert!(
            args.src[..4]
                .iter()
                .all(|s| !s.contains(MigratePfn::MIGRATE))
        );
        migrate_vma_finalize(&mut args);
    });
    assert_eq!(m.mem.sys().nr_free(), nr_free, "destinations freed");
    assert!((0..4).all(|i| {
        mm.ptep_get_lockless(hole + i * PAGE_SIZE)
            .is_none_or(Pte::is_none)
    }));
    assert_eq!(mm.nr_pgtables(), 0);
    use devpriv_migrate::swapops::L1tf;
    for bits in [0, 1, 13, 64, 200, u32::MAX] {
        let l = L1tf::Mitigated {
            x86_cache_bits: bits,
        };
        let _ = np("L1tf", || {
            (
                l.max_swapfile_size(),
                l.swap_migration_ad_supported(PagingMode::FourLevel),
                l.swap_migration_ad_supported(PagingMode::FiveLevel),
            )
        });
    }
}
