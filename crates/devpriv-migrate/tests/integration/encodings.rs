//! Property tests: every encoder round-trips what fits and refuses what
//! does not, with the kernel's bit positions.

use devpriv_core::{DevicePrivateOffset, Errno, Order, PageCount, PageFrame, PagingMode, Pfn};
use devpriv_migrate::pgtable::{
    _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_NX, _PAGE_PRESENT, _PAGE_PROTNONE, _PAGE_RW, _PAGE_USER,
    MAX_PTE_PFN,
};
use devpriv_migrate::swapops::{
    MAX_SWAPFILES, MigrationKind, SWP_OFFSET_MASK, make_device_exclusive_entry,
    make_device_private_entry, make_hwpoison_entry, make_migration_entry, swp_entry,
};
use devpriv_migrate::{HmmPfn, MigratePfn, Pmd, Pte, Softleaf, SoftleafFlags, SoftleafType};
use proptest::prelude::*;

fn mode() -> impl Strategy<Value = PagingMode> {
    prop_oneof![Just(PagingMode::FourLevel), Just(PagingMode::FiveLevel)]
}

fn frame_of(dp: bool, raw: u64) -> PageFrame {
    if dp {
        DevicePrivateOffset::new(raw).into()
    } else {
        Pfn::new(raw).into()
    }
}

proptest! {
    #[test]
    fn swp_entry_round_trips(ty in 0u32..32, offset in 0..=SWP_OFFSET_MASK) {
        let e = swp_entry(ty, offset).unwrap();
        prop_assert_eq!((e.swp_type(), e.swp_offset()), (ty, offset));
        prop_assert_eq!(e.raw() >> 63, 0);
        prop_assert_eq!(Softleaf::from_raw(e.raw()), Ok(e));
        let kind = e.kind();
        prop_assert_eq!(kind == SoftleafType::Swap, ty < MAX_SWAPFILES && e.raw() != 0);
    }

    #[test]
    fn swap_ptes_round_trip(ty in 0u32..32, offset in 0u64..(1 << 50), sd: bool, ex: bool, wp: bool) {
        let e = swp_entry(ty, offset).unwrap();
        match Pte::from_swp_entry(e) {
            Err(err) => {
                prop_assert_eq!(err, Errno::EINVAL);
                prop_assert!(ty == 0 && offset == (1 << 50) - 1, "only the none-colliding value");
            }
            Ok(pte) => {
                prop_assert!(pte.is_swap());
                prop_assert_eq!(pte.raw() >> 59, u64::from(ty));
                prop_assert_eq!((pte.raw() >> 9) & ((1 << 50) - 1), !offset & ((1 << 50) - 1));
                let mut p = pte;
                if sd { p = p.swp_mksoft_dirty(); }
                if ex { p = p.swp_mkexclusive(); }
                if wp { p = p.swp_mkuffd_wp(); }
                prop_assert_eq!(Softleaf::from_pte(p), e);
                prop_assert_eq!((p.swp_soft_dirty(), p.swp_exclusive(), p.swp_uffd_wp()), (sd, ex, wp));
                let pmd = Pmd::from_swp_entry(e).unwrap();
                prop_assert_eq!(pmd.raw(), pte.raw());
                prop_assert_eq!(Softleaf::from_pmd(pmd), e);
            }
        }
    }

    #[test]
    fn swap_pte_offsets_beyond_50_bits_are_refused(ty in 0u32..32, offset in (1u64 << 50)..=SWP_OFFSET_MASK) {
        prop_assert_eq!(Pte::from_swp_entry(swp_entry(ty, offset).unwrap()), Err(Errno::EINVAL));
    }

    #[test]
    fn present_ptes_round_trip(pfn in 0..=MAX_PTE_PFN, rw: bool, nx: bool, protnone: bool) {
        let mut prot = if protnone { _PAGE_PROTNONE } else { _PAGE_PRESENT } | _PAGE_USER | _PAGE_ACCESSED;
        if rw { prot |= _PAGE_RW | _PAGE_DIRTY; }
        if nx { prot |= _PAGE_NX; }
        let pte = Pte::pfn_pte(Pfn::new(pfn), prot).unwrap();
        prop_assert_eq!(pte.pfn(), Pfn::new(pfn));
        prop_assert_eq!(pte.flags(), prot);
        prop_assert!(pte.is_present() && !pte.is_swap());
        prop_assert_eq!(Softleaf::from_pte(pte), Softleaf::NONE);
        prop_assert_eq!(Pte::pfn_pte(Pfn::new(pfn + MAX_PTE_PFN + 1), prot), Err(Errno::EINVAL));
        let huge = Pmd::huge(Pfn::new(pfn & !511), prot).unwrap();
        prop_assert_eq!(huge.pfn(), Pfn::new(pfn & !511));
        prop_assert!(huge.is_trans_huge() && huge.is_present());
    }

    #[test]
    fn typed_entries_round_trip(raw in any::<u64>(), dp: bool, which in 0usize..3, mode in mode()) {
        let f = frame_of(dp, raw);
        let fits = raw <= mode.swp_pfn_mask();
        let kind = MigrationKind::ALL[which];
        let m = make_migration_entry(kind, f, mode);
        prop_assert_eq!(m.is_ok(), fits);
        if let Ok(e) = m {
            prop_assert_eq!(e.to_frame(mode), Some(f));
            prop_assert_eq!(e.to_pfn(mode), raw);
            prop_assert!(e.is_migration());
            let pte = Pte::from_swp_entry(e).unwrap();
            prop_assert_eq!(Softleaf::from_pte(pte).to_frame(mode), Some(f));
            for (young, dirty) in [(false, false), (true, false), (false, true), (true, true)] {
                let fl = SoftleafFlags { young, dirty };
                let g = e.with_flags(fl, mode).unwrap();
                prop_assert_eq!(g.to_flags(mode), fl);
                prop_assert_eq!(g.to_frame(mode), Some(f));
                prop_assert_eq!(Softleaf::from_pte(Pte::from_swp_entry(g).unwrap()), g);
            }
        }
        let off = DevicePrivateOffset::new(raw);
        let d = make_device_private_entry(which == 0, off, mode);
        prop_assert_eq!(d.is_ok(), fits);
        if let Ok(d) = d {
            prop_assert_eq!(d.to_frame(mode), Some(off.into()));
            prop_assert_eq!(d.is_device_private_write(), which == 0);
        }
        let x = make_device_exclusive_entry(Pfn::new(raw), mode);
        prop_assert_eq!(x.map(|e| e.to_frame(mode)), if fits { Ok(Some(Pfn::new(raw).into())) } else { Err(Errno::EINVAL) });
        let h = make_hwpoison_entry(Pfn::new(raw), mode);
        prop_assert_eq!(h.map(|e| e.is_hwpoison()), if fits { Ok(true) } else { Err(Errno::EINVAL) });
    }

    #[test]
    fn migrate_pfns_round_trip(raw in any::<u64>(), dp: bool, w: bool) {
        let f = frame_of(dp, raw);
        let m = MigratePfn::new(f);
        prop_assert_eq!(m.is_ok(), raw < 1 << 58);
        if let Ok(m) = m {
            let m = if w { m.with(MigratePfn::WRITE | MigratePfn::MIGRATE).unwrap() } else { m };
            prop_assert_eq!(m.frame(), Some(f));
            prop_assert_eq!(m.raw() >> 6, raw);
            prop_assert_eq!(m.contains(MigratePfn::DEVICE_PRIVATE), dp);
            prop_assert_eq!(m.contains(MigratePfn::WRITE), w);
            prop_assert_eq!(MigratePfn::from_raw(m.raw()), Ok(m));
        }
    }

    #[test]
    fn hmm_pfns_round_trip(raw in any::<u64>(), dp: bool, order in 0u32..40, w: bool) {
        let f = frame_of(dp, raw);
        let o = Order::new(order).unwrap();
        let h = HmmPfn::new(f, o, w);
        prop_assert_eq!(h.is_ok(), raw < 1 << 52 && order < 32);
        if let Ok(h) = h {
            prop_assert_eq!(h.decode(), Some((f, o, w)));
            prop_assert_eq!(h.raw() & !HmmPfn::FLAGS, raw);
            prop_assert_eq!(h.raw() & HmmPfn::DEVICE_PRIVATE != 0, dp);
            prop_assert_eq!(h.raw() & HmmPfn::VALID, HmmPfn::VALID);
            prop_assert_eq!(u64::from(h.map_order().get()), (h.raw() >> 52) & 0x1f);
        }
    }

    #[test]
    fn migrate_pfn_ranges_step_within_a_space(start in 0u64..(1 << 40), n in 0u64..4096, dp: bool) {
        let m = MigratePfn::new(frame_of(dp, start)).unwrap();
        let next = m.checked_add(PageCount::new(n)).unwrap();
        prop_assert_eq!(next.frame(), Some(frame_of(dp, start + n)));
    }
}

/// x86's `protnone_mask()` inverts the pfn field of **every** non-zero
/// value without `_PAGE_PRESENT` (`__pte_needs_invert()`), swap entries
/// included: `pte_pfn()` of a swap PTE is the swap offset shifted right by
/// 3 (it sits inverted at bit 9), not garbage from the inverted bits.
#[test]
fn pte_pfn_inverts_every_non_present_value() {
    let mode = PagingMode::FourLevel;
    for off in [8u64, 0x1234_5678, (1 << 34) - 1] {
        let e = make_device_private_entry(true, DevicePrivateOffset::new(off), mode).unwrap();
        let pte = Pte::from_swp_entry(e).unwrap();
        assert_eq!(pte.pfn(), Pfn::new(off >> 3), "offset {off:#x}");
        assert_eq!(Pmd::from_swp_entry(e).unwrap().pfn(), Pfn::new(off >> 3));
    }
    assert_eq!(Pte::NONE.pfn(), Pfn::new(0));
    // Protnone entries round-trip as before; present ones are not inverted.
    let p = Pte::pfn_pte(Pfn::new(0x1234), _PAGE_PROTNONE).unwrap();
    assert_eq!(p.pfn(), Pfn::new(0x1234));
    assert_ne!(p.raw() >> 12 & 0xffff, 0x1234, "stored inverted");
    let p = Pte::pfn_pte(Pfn::new(0x1234), _PAGE_PRESENT).unwrap();
    assert_eq!(p.raw() >> 12, 0x1234);
}

/// `swap_migration_ad_supported` is computed at boot from the largest swap
/// offset (`arch_max_swapfile_size()`): with the L1TF mitigation on and few
/// `x86_cache_bits`, migration entries have no room for the young/dirty
/// bits, so a page comes back from a migration old and clean. Without the
/// clamp they survive the round trip.
#[test]
fn migration_ad_bits_follow_the_machine() {
    use devpriv_migrate::swapops::L1tf;
    use devpriv_migrate::{
        FaultFlags, Memory, MigrateVma, MigrateVmaFlags, Mm, MmConfig, SystemMemory, VmFlags,
        handle_mm_fault, migrate_vma_finalize, migrate_vma_setup,
    };
    use devpriv_pagemap::DevicePrivateSpace;
    use std::sync::Arc;

    let (four, five) = (PagingMode::FourLevel, PagingMode::FiveLevel);
    let mitigated = |x86_cache_bits| L1tf::Mitigated { x86_cache_bits };
    assert!(L1tf::NotAffected.swap_migration_ad_supported(four));
    assert!(L1tf::NotAffected.swap_migration_ad_supported(five));
    assert!(!mitigated(39).swap_migration_ad_supported(four));
    assert!(!mitigated(45).swap_migration_ad_supported(four));
    assert!(mitigated(46).swap_migration_ad_supported(four));
    assert!(!mitigated(46).swap_migration_ad_supported(five));
    assert!(mitigated(52).swap_migration_ad_supported(five));
    assert_eq!(mitigated(39).max_swapfile_size(), 1 << 29);
    assert_eq!(L1tf::NotAffected.max_swapfile_size(), 1 << 50);

    for (l1tf, kept) in [(L1tf::NotAffected, true), (mitigated(39), false)] {
        let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(16)).unwrap();
        let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
        let config = MmConfig {
            l1tf,
            ..MmConfig::default()
        };
        assert_eq!(config.swap_migration_ad_supported(), kept);
        let mm = Mm::new(&mem, config);
        let base = 0x7f00_0000_0000;
        let vma = mm
            .mmap_write_lock()
            .mmap_anon(base, 4096, VmFlags::RW)
            .unwrap();
        handle_mm_fault(&mm, base, FaultFlags::WRITE).unwrap();
        let young_dirty = _PAGE_ACCESSED | _PAGE_DIRTY;
        assert_eq!(
            mm.ptep_get_lockless(base).unwrap().flags() & young_dirty,
            young_dirty
        );
        let mut args = MigrateVma::new(
            &mm,
            &vma,
            base,
            base + 4096,
            MigrateVmaFlags::SELECT_SYSTEM,
            None,
        );
        migrate_vma_setup(&mut args).unwrap();
        let entry = mm.softleaf_at(base);
        assert!(entry.is_migration());
        let both = SoftleafFlags {
            young: kept,
            dirty: kept,
        };
        assert_eq!(entry.to_flags(mm.paging()), both, "{l1tf:?}");
        // No destination: the page is restored from the entry.
        migrate_vma_finalize(&mut args);
        let pte = mm.ptep_get_lockless(base).unwrap();
        assert!(pte.is_present());
        let want = if kept { young_dirty } else { 0 };
        assert_eq!(pte.flags() & young_dirty, want, "{l1tf:?}");
    }
}
