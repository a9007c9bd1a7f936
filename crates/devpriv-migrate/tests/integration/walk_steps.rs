//! The walker's stepping logic, pinned down: which addresses a walk visits,
//! in which order, for targets that start before a VMA, end exactly at its
//! end, cross PTE tables at any 2 MiB boundary, or lie past empty PMDs,
//! PUDs and PGD entries.
//!
//! Kernel: `page_vma_mapped_walk()` with `vma_address_end()`,
//! `step_forward()` and the `next_pte:` loop, `mm/page_vma_mapped.c` (7.0).
//! Each expected sequence comes from a naive scan: every page address from
//! the walk's start to `vma_address_end()`, in order, whose PTE overlaps
//! the target.

use crate::walk::BASE;
use devpriv_core::{Errno, PAGE_SIZE, PageCount, PageFrame, Pfn};
use devpriv_migrate::pgtable::{_PAGE_PRESENT, PMD_SIZE, PUD_SIZE};
use devpriv_migrate::{
    Memory, Mm, MmConfig, PageVmaMappedWalk, Pmd, Pte, PvmwFlags, SystemMemory, VmFlags, Vma,
};
use devpriv_pagemap::DevicePrivateSpace;
use proptest::prelude::*;
use std::sync::Arc;

/// The target's first pfn (any value: the PTEs are written by hand).
const T: u64 = 0x8_0000;

fn mm() -> Arc<Mm> {
    let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(16)).unwrap();
    let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
    Mm::new(&mem, MmConfig::default())
}

fn present(pfn: u64) -> Pte {
    Pte::pfn_pte(Pfn::new(pfn), _PAGE_PRESENT).unwrap()
}

/// Every match of a walk for `[T, T + nr)` whose page `0` has page offset
/// `pgoff`, started at `start`.
fn walk(mm: &Mm, vma: &Vma, nr: u64, pgoff: u64, start: u64, flags: PvmwFlags) -> Vec<u64> {
    let mut w = PageVmaMappedWalk::new(
        mm,
        vma,
        PageFrame::Pfn(Pfn::new(T)),
        PageCount::new(nr),
        pgoff,
        start,
        flags,
    )
    .unwrap();
    assert_eq!(w.target().nr_pages(), PageCount::new(nr));
    let mut out = Vec::new();
    while w.walk() {
        assert!(w.ptl_held(), "a match holds its lock");
        assert!(vma.contains(w.address()), "a match outside the VMA");
        out.push(w.address());
    }
    assert!(!w.ptl_held(), "the last walk() releases every lock");
    assert!(!w.walk(), "a finished walk stays finished");
    out
}

/// The naive scan: `vma_address_end()` spelled out, then every address in
/// `[start, end)` whose PTE maps a page of the target.
fn expect(mm: &Mm, vma: &Vma, nr: u64, pgoff: u64, start: u64) -> Vec<u64> {
    let linear_end = i128::from(vma.start())
        + (i128::from(pgoff) + i128::from(nr) - i128::from(vma.pgoff())) * i128::from(PAGE_SIZE);
    let end = if nr == 1 {
        start + PAGE_SIZE
    } else if linear_end < i128::from(vma.start()) || linear_end > i128::from(vma.end()) {
        vma.end()
    } else {
        u64::try_from(linear_end).unwrap()
    };
    // The kernel's `restart:` loop is a do-while: the first address is
    // examined even when `end` does not lie beyond it.
    std::iter::once(start)
        .chain(
            (start + PAGE_SIZE..end)
                .step_by(usize::try_from(PAGE_SIZE).expect("page size fits usize")),
        )
        .filter(|&a| {
            mm.ptep_get_lockless(a)
                .is_some_and(|p| p.is_present() && (T..T + nr).contains(&p.pfn().get()))
        })
        .collect()
}

/// Maps page `i` of the target at `addr`.
fn map(mm: &Mm, addr: u64, i: u64) {
    mm.set_pte(addr, present(T + i)).unwrap();
}

#[test]
fn a_folio_ending_exactly_at_the_vma_end_stops_there() {
    // Two adjacent VMAs, A and B. The target's linear range runs 8 pages
    // past A's end, and those pages are (inconsistently) mapped in B: a
    // walk over A must not follow them there.
    let mm = mm();
    let a_len = 5 * PAGE_SIZE + PMD_SIZE;
    let a = mm
        .mmap_write_lock()
        .mmap_anon(BASE, a_len, VmFlags::RW)
        .unwrap();
    mm.mmap_write_lock()
        .mmap_anon(BASE + a_len, PMD_SIZE, VmFlags::RW)
        .unwrap();
    let nr = 24;
    let first = a.end() - 16 * PAGE_SIZE;
    for i in 0..nr {
        map(&mm, first + i * PAGE_SIZE, i);
    }
    let pgoff = a.linear_page_index(first);
    let got = walk(&mm, &a, nr, pgoff, first, PvmwFlags::NONE);
    assert_eq!(got.len(), 16, "only A's part: {got:x?}");
    assert_eq!(got, expect(&mm, &a, nr, pgoff, first));
    // Exactly at the end: the same walk with the target cut to A's part.
    assert_eq!(walk(&mm, &a, 16, pgoff, first, PvmwFlags::NONE), got);
}

#[test]
fn a_target_ending_at_the_vma_start_stops_after_the_first_page() {
    // The target's pages lie wholly before the VMA (page offsets below
    // it), yet its pfns are mapped inside, and the walk is started at the
    // VMA's start: vma_address_end() is that start, so the do-while loop
    // examines the first address and stops (vma_address() would never
    // hand out this start; the bound is what keeps the walk in range).
    let mm = mm();
    let v = mm
        .mmap_write_lock()
        .mmap_anon(BASE + PMD_SIZE, PMD_SIZE, VmFlags::RW)
        .unwrap();
    for i in 0..8 {
        map(&mm, v.start() + i * PAGE_SIZE, i);
    }
    let pgoff = v.pgoff() - 8;
    let got = walk(&mm, &v, 8, pgoff, v.start(), PvmwFlags::NONE);
    assert_eq!(got, [v.start()]);
    assert_eq!(got, expect(&mm, &v, 8, pgoff, v.start()));
}

#[test]
fn a_target_starting_before_the_vma_is_walked_from_the_vma_start() {
    let mm = mm();
    let v = mm
        .mmap_write_lock()
        .mmap_anon(BASE + 3 * PAGE_SIZE, PMD_SIZE, VmFlags::RW)
        .unwrap();
    // Pages 3.. of a 16-page target fall in the VMA.
    let pgoff = v.pgoff() - 3;
    for i in 3..16 {
        map(&mm, v.start() + (i - 3) * PAGE_SIZE, i);
    }
    let got = walk(&mm, &v, 16, pgoff, v.start(), PvmwFlags::NONE);
    assert_eq!(got.len(), 13);
    assert_eq!(got, expect(&mm, &v, 16, pgoff, v.start()));
}

#[test]
fn crossing_a_pte_table_at_an_odd_pmd_boundary() {
    // Cross at BASE + 3 * PMD_SIZE (an odd 2 MiB boundary): a wrong mask
    // in the crossing test would index entry 512 of the first table.
    for sync in [PvmwFlags::NONE, PvmwFlags::SYNC] {
        let mm = mm();
        let v = mm
            .mmap_write_lock()
            .mmap_anon(BASE, 4 * PMD_SIZE, VmFlags::RW)
            .unwrap();
        let first = BASE + 3 * PMD_SIZE - 7 * PAGE_SIZE;
        for i in 0..32 {
            map(&mm, first + i * PAGE_SIZE, i);
        }
        let pgoff = v.linear_page_index(first);
        let got = walk(&mm, &v, 32, pgoff, first, sync);
        let want: Vec<u64> = (0..32).map(|i| first + i * PAGE_SIZE).collect();
        assert_eq!(got, want, "{sync:?}");
    }
}

#[test]
fn a_mapping_after_an_empty_pmd_is_found() {
    // Target pages in PMDs 0 and 2 only; PMD 1 has no table at all.
    for sync in [PvmwFlags::NONE, PvmwFlags::SYNC] {
        let mm = mm();
        let v = mm
            .mmap_write_lock()
            .mmap_anon(BASE, 3 * PMD_SIZE, VmFlags::RW)
            .unwrap();
        let nr = 3 * 512;
        map(&mm, BASE + 5 * PAGE_SIZE, 5);
        map(&mm, BASE + 2 * PMD_SIZE + 9 * PAGE_SIZE, 2 * 512 + 9);
        assert_eq!(mm.pmdp_get_lockless(BASE + PMD_SIZE), Some(Pmd::NONE));
        let got = walk(&mm, &v, nr, v.pgoff(), BASE, sync);
        assert_eq!(
            got,
            vec![BASE + 5 * PAGE_SIZE, BASE + 2 * PMD_SIZE + 9 * PAGE_SIZE],
            "{sync:?}"
        );
    }
}

#[test]
fn a_mapping_after_an_empty_pud_and_pgd_is_found() {
    // The VMA spans two PUDs (1 GiB each); the first holds no PMD table,
    // so the walk steps a whole PUD. Then one spanning a PGD entry
    // (512 GiB), whose first entry is absent.
    let mm = mm();
    let v = mm
        .mmap_write_lock()
        .mmap_anon(BASE, 2 * PUD_SIZE, VmFlags::RW)
        .unwrap();
    let hit = BASE + PUD_SIZE + 3 * PAGE_SIZE;
    let nr = 2 * PUD_SIZE / PAGE_SIZE;
    map(&mm, hit, (hit - BASE) / PAGE_SIZE);
    assert_eq!(walk(&mm, &v, nr, v.pgoff(), BASE, PvmwFlags::NONE), [hit]);

    let pgdir = 1u64 << 39;
    let start = 0x7e00_0000_0000 - PMD_SIZE; // 2 MiB below a PGD boundary
    assert_eq!((start + PMD_SIZE) % pgdir, 0);
    let w = mm
        .mmap_write_lock()
        .mmap_anon(start, 2 * PMD_SIZE, VmFlags::RW)
        .unwrap();
    let hit = start + PMD_SIZE + PAGE_SIZE;
    map(&mm, hit, (hit - start) / PAGE_SIZE);
    assert_eq!(
        walk(&mm, &w, 1024, w.pgoff(), start, PvmwFlags::NONE),
        [hit]
    );
}

#[test]
fn undefined_flag_bits_are_rejected() {
    assert_eq!(PvmwFlags::from_bits(1 << 3), Err(Errno::EINVAL));
    assert_eq!(PvmwFlags::from_bits(1 << 31), Err(Errno::EINVAL));
    assert_eq!(
        PvmwFlags::from_bits(1 | 1 << 16),
        Ok(PvmwFlags::SYNC | PvmwFlags::PGTABLE_CROSSED)
    );
}

#[test]
fn set_pmd_refuses_a_table_after_a_pmd_match() {
    let mm = mm();
    let v = mm
        .mmap_write_lock()
        .mmap_anon(BASE, 2 * PMD_SIZE, VmFlags::RW)
        .unwrap();
    let huge = Pmd::huge(Pfn::new(T), _PAGE_PRESENT).unwrap();
    mm.set_pmd(BASE, huge).unwrap();
    let mut w = PageVmaMappedWalk::new(
        &mm,
        &v,
        PageFrame::Pfn(Pfn::new(T)),
        PageCount::new(512),
        v.pgoff(),
        BASE,
        PvmwFlags::NONE,
    )
    .unwrap();
    assert!(w.walk() && w.is_pmd_mapped());
    assert_eq!(
        w.set_pmd(Pmd::table(Pfn::new(0x1234)).unwrap()),
        Err(Errno::EINVAL)
    );
    assert_eq!(mm.pmdp_get_lockless(BASE), Some(huge), "nothing changed");
    assert_eq!(w.set_pmd(Pmd::NONE), Ok(()));
    w.done();
}

/// One random layout: a VMA at any page of a PMD, of any length; a target
/// of `nr` pages whose linear range starts anywhere from before the VMA to
/// inside it; some of its pages mapped where they belong, some left out,
/// some PTEs pointing elsewhere.
#[derive(Clone, Debug)]
struct Layout {
    vma_page: u64,
    vma_pages: u64,
    nr: u64,
    /// Page offset of the target's page 0 relative to the VMA's first page.
    rel: i64,
    /// Which of the target's pages are mapped (bit i of the pattern,
    /// repeated).
    holes: u64,
    foreign: u64,
}

fn layout() -> impl Strategy<Value = Layout> {
    (
        0u64..512,
        1u64..1600,
        prop_oneof![Just(1u64), 2u64..40, Just(512), Just(513), 500u64..1100],
        any::<u64>(),
        any::<u64>(),
    )
        .prop_flat_map(|(vma_page, vma_pages, nr, holes, foreign)| {
            let lo = -(i64::try_from(nr).unwrap() - 1);
            let hi = i64::try_from(vma_pages).unwrap() - 1;
            (lo..=hi).prop_map(move |rel| Layout {
                vma_page,
                vma_pages,
                nr,
                rel,
                holes,
                foreign,
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Every layout: the walk visits exactly the naive scan's addresses, in
    /// order, with and without `PVMW_SYNC`.
    #[test]
    fn walks_visit_exactly_the_mapped_pages_in_order(l in layout()) {
        let mm = mm();
        let start = BASE + PMD_SIZE + l.vma_page * PAGE_SIZE;
        let v = mm
            .mmap_write_lock()
            .mmap_anon(start, l.vma_pages * PAGE_SIZE, VmFlags::RW)
            .unwrap();
        let pgoff = v.pgoff().checked_add_signed(l.rel).unwrap();
        for i in 0..l.nr {
            let Some(addr) = u64::try_from(l.rel + i64::try_from(i).unwrap())
                .ok()
                .map(|p| start + p * PAGE_SIZE)
                .filter(|&a| v.contains(a))
            else {
                continue;
            };
            if l.holes.rotate_left(u32::try_from(i % 64).unwrap()) & 1 == 1 {
                map(&mm, addr, i);
            } else if l.foreign.rotate_left(u32::try_from(i % 64).unwrap()) & 1 == 1 {
                // Another frame: never a match.
                mm.set_pte(addr, present(T + l.nr + i)).unwrap();
            }
        }
        let first = v.vma_address(pgoff, l.nr).unwrap();
        let want = expect(&mm, &v, l.nr, pgoff, first);
        for sync in [PvmwFlags::NONE, PvmwFlags::SYNC] {
            prop_assert_eq!(&walk(&mm, &v, l.nr, pgoff, first, sync), &want, "{:?}", sync);
        }
    }
}

#[test]
fn a_pmd_skipped_up_to_the_vma_end_does_not_look_past_it() {
    // VMA A has no page table at all and ends on a PMD boundary; VMA B,
    // right after it, maps the target's next page. The walk over A steps
    // a whole PMD onto A's end and must stop there, without examining B.
    let mm = mm();
    let a = mm
        .mmap_write_lock()
        .mmap_anon(BASE, PMD_SIZE, VmFlags::RW)
        .unwrap();
    mm.mmap_write_lock()
        .mmap_anon(BASE + PMD_SIZE, PMD_SIZE, VmFlags::RW)
        .unwrap();
    map(&mm, BASE + PMD_SIZE, 512);
    for sync in [PvmwFlags::NONE, PvmwFlags::SYNC] {
        assert_eq!(
            walk(&mm, &a, 1024, a.pgoff(), BASE, sync),
            Vec::<u64>::new(),
            "{sync:?}"
        );
    }
}

#[test]
fn holes_inside_one_pte_table_do_not_set_pgtable_crossed() {
    // The first PTEs are empty, so a lockless walk takes the slow
    // `next_pte:` path; it stays inside one table and must not report a
    // crossing.
    let mm = mm();
    let v = mm
        .mmap_write_lock()
        .mmap_anon(BASE, PMD_SIZE, VmFlags::RW)
        .unwrap();
    for i in [3, 100, 300, 511] {
        map(&mm, BASE + i * PAGE_SIZE, i);
    }
    for sync in [PvmwFlags::NONE, PvmwFlags::SYNC] {
        let mut w = PageVmaMappedWalk::new(
            &mm,
            &v,
            PageFrame::Pfn(Pfn::new(T)),
            PageCount::new(512),
            v.pgoff(),
            BASE,
            sync,
        )
        .unwrap();
        let mut n = 0;
        while w.walk() {
            assert!(
                !w.flags().contains(PvmwFlags::PGTABLE_CROSSED),
                "{sync:?}: crossed at {:#x}",
                w.address()
            );
            n += 1;
        }
        assert_eq!(n, 4);
    }
}

#[test]
fn the_walk_describes_itself() {
    let mm = mm();
    let v = mm
        .mmap_write_lock()
        .mmap_anon(BASE, PMD_SIZE, VmFlags::RW)
        .unwrap();
    let w = PageVmaMappedWalk::new(
        &mm,
        &v,
        PageFrame::Pfn(Pfn::new(T)),
        PageCount::new(2),
        v.pgoff(),
        BASE,
        PvmwFlags::SYNC,
    )
    .unwrap();
    let s = format!("{w:?}");
    assert!(s.starts_with("PageVmaMappedWalk"), "{s}");
    assert!(s.contains(&format!("{BASE:#x}")), "{s}");
    assert!(s.contains("ptl_held: false"), "{s}");
}

#[test]
fn the_v2_pfn_encoding_shifts_left_and_tags_bit_0() {
    use devpriv_core::DevicePrivateOffset;
    use devpriv_migrate::PvmwPfnV2;
    assert_eq!(PvmwPfnV2::page_vma_walk_pfn_unchecked(0x123), 0x246);
    assert_eq!(
        PvmwPfnV2::page_vma_walk_pfn_unchecked(1 << 63 | 1),
        2,
        "the C macro drops bit 63 (H8)"
    );
    let pfn = PvmwPfnV2::encode(Pfn::new(0x123).into()).unwrap();
    assert_eq!(pfn.raw(), 0x246);
    let dp = PvmwPfnV2::encode(DevicePrivateOffset::new(0x123).into()).unwrap();
    assert_eq!(dp.raw(), 0x247);
    assert_eq!(PvmwPfnV2::from_raw(dp.raw()), dp);
    assert_eq!(dp.frame(), DevicePrivateOffset::new(0x123).into());
}
