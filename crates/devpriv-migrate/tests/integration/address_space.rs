//! The address-space operations the HMM selftests reach through system
//! calls (issue 15), on system memory alone: `fork` (copy-on-write, the
//! rmap across address spaces), `mprotect`, `mremap`, `madvise`, page-cache
//! mappings, device-exclusive entries, THPs and the huge zero page at
//! fault time, MMU notifier events, and `exit_mmap`. The device side of
//! each is in `devpriv-drivers/tests/hmm_tests.rs`.

use devpriv_core::sync::Mutex;
use devpriv_core::{DevicePrivateOffset, Errno, Order, PAGE_SIZE, PageCount, Pfn};
use devpriv_migrate::leafops::Softleaf;
use devpriv_migrate::swapops::{MigrationKind, make_device_private_entry, make_migration_entry};
use devpriv_migrate::{
    AddressSpace, AddressSpaceOps, Advice, FaultFlags, MappingKind, Memory, Mm, MmConfig,
    MmuNotifier, MmuNotifierRange, MmuNotifyEvent, MremapFlags, PMD_SIZE, Pte, SystemMemory,
    VmFlags, handle_mm_fault, make_device_exclusive, remove_migration_ptes, try_to_migrate,
};
use devpriv_migrate::{AnyFolio, Pmd};
use devpriv_pagemap::DevicePrivateSpace;
use std::sync::Arc;

const BASE: u64 = 0x7f00_0000_0000;
const PAGES: u64 = 4096;

fn memory() -> Memory {
    let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(PAGES)).unwrap();
    Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()))
}

fn page(i: u64) -> u64 {
    BASE + i * PAGE_SIZE
}

fn write(mm: &Arc<Mm>, addr: u64, v: u64) {
    for _ in 0..4 {
        if mm.write_user(addr, v).is_ok() {
            return;
        }
        handle_mm_fault(mm, addr, FaultFlags::WRITE).unwrap();
    }
    panic!("{addr:#x} not writable");
}

fn read(mm: &Arc<Mm>, addr: u64) -> u64 {
    for _ in 0..4 {
        if let Ok(v) = mm.read_user(addr) {
            return v;
        }
        handle_mm_fault(mm, addr, FaultFlags::READ).unwrap();
    }
    panic!("{addr:#x} not readable");
}

/// `(pfn, writable)` of the present PTE at `addr`.
fn pte_at(mm: &Mm, addr: u64) -> Option<(Pfn, bool)> {
    let p = mm.ptep_get_lockless(addr)?;
    p.is_present().then(|| (p.pfn(), p.is_write()))
}

fn anon(mm: &Arc<Mm>, start: u64, len: u64, flags: VmFlags) {
    mm.mmap_write_lock().mmap_anon(start, len, flags).unwrap();
}

/// Fork shares private pages read-only; the first write copies, a write
/// to a page no longer shared reuses it; the parent's data never changes
/// under the child.
#[test]
fn fork_shares_private_pages_copy_on_write() {
    let mem = memory();
    let parent = Mm::new(&mem, MmConfig::default());
    anon(&parent, BASE, 4 * PAGE_SIZE, VmFlags::RW);
    for i in 0..3 {
        write(&parent, page(i), 10 + i);
    }
    let _ = read(&parent, page(3)); // the zero page
    let child = parent.fork().unwrap();
    assert_eq!(child.vmas().len(), 1);
    assert_eq!(child.vmas()[0].anon_chain(), &[parent.vmas()[0].id()]);
    for i in 0..3 {
        let (p, w) = pte_at(&parent, page(i)).unwrap();
        assert!(!w);
        assert_eq!(pte_at(&child, page(i)), Some((p, false)));
        let f = mem.sys().pfn_folio(p).unwrap();
        assert_eq!((f.mapcount(), f.refcount()), (2, 2));
    }
    assert!(mem.sys().is_zero_pfn(pte_at(&child, page(3)).unwrap().0));
    let free = mem.sys().nr_free();
    write(&parent, page(0), 99);
    assert_eq!(mem.sys().nr_free(), free - 1, "copied");
    assert_eq!((read(&parent, page(0)), read(&child, page(0))), (99, 10));
    write(&child, page(0), 77);
    assert_eq!(mem.sys().nr_free(), free - 1, "the last mapping is reused");
    assert_eq!(read(&parent, page(0)), 99);
    drop(child);
    assert_eq!(mem.sys().nr_free(), free, "the child's exit freed its copy");
    assert!((1..3).all(|i| {
        mem.sys()
            .pfn_folio(pte_at(&parent, page(i)).unwrap().0)
            .unwrap()
            .mapcount()
            == 1
    }));
    drop(parent);
    assert_eq!(mem.sys().nr_free(), PAGES, "exit_mmap freed everything");
}

/// Fork leaves shared mappings to be faulted in again: the child maps the
/// same page-cache pages, and writes are seen by both.
#[test]
fn fork_leaves_shared_mappings_to_refault() {
    let mem = memory();
    let parent = Mm::new(&mem, MmConfig::default());
    let shmem = AddressSpace::new(&mem, MappingKind::Shmem, None);
    parent
        .mmap_write_lock()
        .mmap_file(BASE, 2 * PAGE_SIZE, VmFlags::RW | VmFlags::SHARED, shmem, 0)
        .unwrap();
    write(&parent, BASE, 5);
    let child = parent.fork().unwrap();
    assert!(child.softleaf_at(BASE).is_none() && child.read_user(BASE).is_err());
    assert_eq!(read(&child, BASE), 5);
    write(&child, BASE, 6);
    assert_eq!(parent.read_user(BASE), Ok(6));
    assert_eq!(
        pte_at(&child, BASE).map(|x| x.0),
        pte_at(&parent, BASE).map(|x| x.0)
    );
}

/// A THP is shared by fork as one read-only PMD in each; a write splits
/// the writer's PMD and copies just the written page.
#[test]
fn fork_of_a_thp_splits_on_write() {
    let mem = memory();
    let parent = Mm::new(&mem, MmConfig::default());
    {
        let mut w = parent.mmap_write_lock();
        w.mmap_anon(BASE, 2 * PMD_SIZE, VmFlags::RW).unwrap();
        w.madvise(BASE, PMD_SIZE, Advice::HugePage).unwrap();
    }
    write(&parent, BASE, 1);
    let pmd = parent.pmdp_get_lockless(BASE).unwrap();
    assert!(pmd.is_trans_huge() && pmd.is_write(), "a THP at fault time");
    let child = parent.fork().unwrap();
    let (pp, cp) = (
        parent.pmdp_get_lockless(BASE).unwrap(),
        child.pmdp_get_lockless(BASE).unwrap(),
    );
    assert!(pp.is_trans_huge() && !pp.is_write() && pp == cp);
    let f = mem.sys().pfn_folio(pp.pfn()).unwrap();
    assert_eq!((f.entire_mapcount(), f.refcount()), (2, 2));
    let free = mem.sys().nr_free();
    write(&child, BASE + 7 * PAGE_SIZE, 70);
    assert!(child.pmdp_get_lockless(BASE).unwrap().is_table(), "split");
    assert!(parent.pmdp_get_lockless(BASE).unwrap().is_trans_huge());
    assert_eq!(mem.sys().nr_free(), free - 1, "one page copied");
    assert_eq!(
        (read(&child, BASE), read(&child, BASE + 7 * PAGE_SIZE)),
        (1, 70)
    );
    assert_eq!(read(&parent, BASE + 7 * PAGE_SIZE), 0);
}

/// After fork the rmap of a parent's folio reaches the child's mapping:
/// a migration unmaps both and maps the destination in both.
#[test]
fn fork_rmap_reaches_the_child() {
    let mem = memory();
    let parent = Mm::new(&mem, MmConfig::default());
    anon(&parent, BASE, PAGE_SIZE, VmFlags::RW);
    write(&parent, BASE, 42);
    let child = parent.fork().unwrap();
    let (old, _) = pte_at(&parent, BASE).unwrap();
    let src = mem.sys().pfn_folio(old).unwrap();
    assert!(src.trylock());
    src.get_many(1);
    try_to_migrate(&parent, AnyFolio::Sys(src)).unwrap();
    assert_eq!(src.mapcount(), 0, "both mappings replaced");
    for mm in [&parent, &child] {
        assert!(Softleaf::from_pte(mm.ptep_get_lockless(BASE).unwrap()).is_migration());
    }
    let dst = mem.sys().alloc_folio(Order::ZERO).unwrap();
    assert!(dst.trylock());
    mem.sys().write(dst.pfn(), 42).unwrap();
    dst.set_mapping(src.mapping());
    dst.set_index(src.index());
    remove_migration_ptes(&child, AnyFolio::Sys(src), AnyFolio::Sys(dst)).unwrap();
    assert_eq!(dst.mapcount(), 2);
    for mm in [&parent, &child] {
        assert_eq!(pte_at(mm, BASE), Some((dst.pfn(), false)));
    }
    dst.unlock().unwrap();
    dst.put().unwrap();
    src.unlock().unwrap();
    src.put().unwrap();
    assert_eq!((read(&parent, BASE), read(&child, BASE)), (42, 42));
}

/// `mprotect` splits and merges VMAs, write-protects present entries, makes
/// writable device-private and migration entries readable whatever the
/// new protection, leaves the rest alone, and refuses holes and bad flags.
#[test]
fn mprotect_rules() {
    let mem = memory();
    let mm = Mm::new(&mem, MmConfig::default());
    anon(&mm, BASE, 8 * PAGE_SIZE, VmFlags::RW);
    write(&mm, page(0), 1);
    write(&mm, page(1), 2);
    let mode = mm.paging();
    let dev = make_device_private_entry(true, DevicePrivateOffset::new(7), mode).unwrap();
    mm.set_pte(page(2), Pte::from_swp_entry(dev).unwrap())
        .unwrap();
    let mig = make_migration_entry(MigrationKind::Write, Pfn::new(0x10_0fff).into(), mode).unwrap();
    mm.set_pte(page(3), Pte::from_swp_entry(mig).unwrap())
        .unwrap();
    let mut w = mm.mmap_write_lock();
    assert_eq!(
        w.mprotect(page(1), PAGE_SIZE, VmFlags::SHARED),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        w.mprotect(page(7), 2 * PAGE_SIZE, VmFlags::READ),
        Err(Errno::ENOMEM)
    );
    // Even a "read-write" mprotect makes these entries readable.
    w.mprotect(page(2), 2 * PAGE_SIZE, VmFlags::RW).unwrap();
    let e = Softleaf::from_pte(w.ptep_get_lockless(page(2)).unwrap());
    assert!(e.is_device_private() && !e.is_device_private_write());
    let e = Softleaf::from_pte(w.ptep_get_lockless(page(3)).unwrap());
    assert!(e.is_migration() && !e.is_migration_write(), "{e:?}");
    w.mprotect(page(1), PAGE_SIZE, VmFlags::READ).unwrap();
    assert_eq!(w.vmas().len(), 3);
    assert_eq!(pte_at(&w, page(1)).map(|x| x.1), Some(false));
    assert_eq!(
        pte_at(&w, page(0)).map(|x| x.1),
        Some(true),
        "outside the range"
    );
    // Back to read-write: merged, and the exclusive page writable again.
    w.mprotect(page(1), PAGE_SIZE, VmFlags::RW).unwrap();
    assert_eq!(w.vmas().len(), 1);
    assert_eq!(pte_at(&w, page(1)).map(|x| x.1), Some(true));
    mm.set_pte(page(2), Pte::NONE).unwrap();
    mm.set_pte(page(3), Pte::NONE).unwrap();
}

/// `mremap` moves entries as they are: a whole PMD to an aligned
/// destination, PTEs (after a split) to an unaligned one; device-private
/// entries too; with `MREMAP_DONTUNMAP` the old range stays mapped and
/// empty, with a new `anon_vma`.
#[test]
fn mremap_moves_entries() {
    let mem = memory();
    let mm = Mm::new(&mem, MmConfig::default());
    {
        let mut w = mm.mmap_write_lock();
        w.mmap_anon(BASE, 2 * PMD_SIZE, VmFlags::RW).unwrap();
        w.madvise(BASE, PMD_SIZE, Advice::HugePage).unwrap();
    }
    write(&mm, BASE + 3 * PAGE_SIZE, 3);
    let thp = mm.pmdp_get_lockless(BASE).unwrap();
    assert!(thp.is_trans_huge());
    let dst = BASE + 8 * PMD_SIZE;
    let mut w = mm.mmap_write_lock();
    assert_eq!(
        w.mremap(BASE, PMD_SIZE, PMD_SIZE, MremapFlags::FIXED, dst),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        w.mremap(
            BASE + PMD_SIZE - PAGE_SIZE,
            2 * PAGE_SIZE,
            2 * PAGE_SIZE,
            MremapFlags::MAYMOVE,
            dst
        ),
        Err(Errno::EFAULT),
        "not inside one VMA"
    );
    let f = MremapFlags::MAYMOVE | MremapFlags::FIXED;
    assert_eq!(w.mremap(BASE, PMD_SIZE, PMD_SIZE, f, dst), Ok(dst));
    assert_eq!(w.pmdp_get_lockless(dst), Some(thp), "moved whole");
    assert!(w.vma_lookup(BASE).is_none());
    let moved = w.vma_lookup(dst).unwrap();
    assert_eq!(
        moved.linear_page_index(dst),
        BASE / PAGE_SIZE,
        "same page offset"
    );
    // To an unaligned destination: split, then PTEs.
    let dst2 = BASE + 4 * PMD_SIZE + 16 * PAGE_SIZE;
    assert_eq!(
        w.mremap(dst, PMD_SIZE, PMD_SIZE, f | MremapFlags::DONTUNMAP, dst2),
        Ok(dst2)
    );
    let left = w.vma_lookup(dst).unwrap();
    assert_ne!(left.id(), moved.id(), "a new anon_vma");
    assert!(w.pmdp_get_lockless(dst).is_some_and(|p| !p.is_trans_huge()));
    drop(w);
    assert_eq!(read(&mm, dst2 + 3 * PAGE_SIZE), 3);
    assert_eq!(read(&mm, dst + 3 * PAGE_SIZE), 0, "the old range is empty");
    let folio = mem.sys().pfn_folio(thp.pfn()).unwrap();
    assert_eq!(
        (folio.mapcount(), folio.refcount()),
        (512, 512),
        "counts unchanged, now PTE-mapped"
    );
    // A device-private entry moves as it is.
    let mut w = mm.mmap_write_lock();
    w.mmap_anon(page(4), PAGE_SIZE, VmFlags::RW).unwrap();
    let e = Pte::from_swp_entry(
        make_device_private_entry(true, DevicePrivateOffset::new(9), w.paging()).unwrap(),
    )
    .unwrap();
    w.set_pte(page(4), e).unwrap();
    assert_eq!(
        w.mremap(page(4), PAGE_SIZE, PAGE_SIZE, f, page(6)),
        Ok(page(6))
    );
    assert_eq!(w.ptep_get_lockless(page(6)), Some(e));
    w.set_pte(page(6), Pte::NONE).unwrap();
}

/// `MADV_DONTNEED` zaps (the range then reads zeros); `MADV_FREE` cleans
/// dirty exclusive pages and leaves device entries; it is refused on
/// shared mappings; `MADV_HUGEPAGE` / `NOHUGEPAGE` set flags on split
/// VMAs; holes give `ENOMEM`.
#[test]
fn madvise_rules() {
    let mem = memory();
    let mm = Mm::new(&mem, MmConfig::default());
    anon(&mm, BASE, 4 * PAGE_SIZE, VmFlags::RW);
    write(&mm, page(0), 1);
    write(&mm, page(1), 2);
    let e = Pte::from_swp_entry(
        make_device_private_entry(true, DevicePrivateOffset::new(3), mm.paging()).unwrap(),
    )
    .unwrap();
    mm.set_pte(page(2), e).unwrap();
    let mut w = mm.mmap_write_lock();
    w.madvise(page(1), 2 * PAGE_SIZE, Advice::Free).unwrap();
    assert_eq!(
        w.ptep_get_lockless(page(2)),
        Some(e),
        "device entry left alone"
    );
    let dirty =
        |a| w.ptep_get_lockless(a).unwrap().raw() & devpriv_migrate::pgtable::_PAGE_DIRTY != 0;
    assert!(dirty(page(0)) && !dirty(page(1)));
    assert_eq!(w.read_user(page(1)), Ok(2), "the data stays");
    w.madvise(page(0), PAGE_SIZE, Advice::DontNeed).unwrap();
    drop(w);
    assert_eq!(mem.sys().nr_free(), PAGES - 1);
    assert_eq!(read(&mm, page(0)), 0);
    let mut w = mm.mmap_write_lock();
    w.madvise(page(1), PAGE_SIZE, Advice::HugePage).unwrap();
    assert_eq!(w.vmas().len(), 3);
    assert!(
        w.vma_lookup(page(1))
            .unwrap()
            .flags()
            .contains(VmFlags::HUGEPAGE)
    );
    w.madvise(page(1), PAGE_SIZE, Advice::NoHugePage).unwrap();
    assert!(
        w.vma_lookup(page(1))
            .unwrap()
            .flags()
            .contains(VmFlags::NOHUGEPAGE)
    );
    assert_eq!(
        w.madvise(page(3), 4 * PAGE_SIZE, Advice::DontNeed),
        Err(Errno::ENOMEM)
    );
    let shmem = AddressSpace::new(&mem, MappingKind::Shmem, None);
    w.mmap_file(page(8), PAGE_SIZE, VmFlags::RW | VmFlags::SHARED, shmem, 0)
        .unwrap();
    assert_eq!(
        w.madvise(page(8), PAGE_SIZE, Advice::Free),
        Err(Errno::EINVAL)
    );
    w.set_pte(page(2), Pte::NONE).unwrap();
}

#[derive(Debug)]
struct Words;

impl AddressSpaceOps for Words {
    fn read_folio(&self, index: u64) -> Result<u64, Errno> {
        Ok(500 + index)
    }
}

/// A private file mapping maps the page cache read-only and copies on
/// write into anon pages; a shared one writes the page cache.
#[test]
fn file_mappings() {
    let mem = memory();
    let file = AddressSpace::new(&mem, MappingKind::File, Some(Arc::new(Words)));
    let mm = Mm::new(&mem, MmConfig::default());
    {
        let mut w = mm.mmap_write_lock();
        w.mmap_file(BASE, 2 * PAGE_SIZE, VmFlags::RW, Arc::clone(&file), 10)
            .unwrap();
        w.mmap_file(
            page(4),
            PAGE_SIZE,
            VmFlags::RW | VmFlags::SHARED,
            Arc::clone(&file),
            10,
        )
        .unwrap();
    }
    assert_eq!(read(&mm, BASE), 510);
    let (cached, w) = pte_at(&mm, BASE).unwrap();
    assert!(!w);
    assert_eq!(file.find_folio(10).unwrap().pfn(), cached);
    write(&mm, BASE, 1);
    let (copy, w) = pte_at(&mm, BASE).unwrap();
    assert!(w && copy != cached && mem.sys().pfn_folio(copy).unwrap().mapping() != 0);
    assert_eq!(mem.sys().read(cached), Ok(510), "the file is unchanged");
    write(&mm, page(1), 2); // a write to a hole copies too
    assert_eq!(mem.sys().read(file.find_folio(11).unwrap().pfn()), Ok(511));
    write(&mm, page(4), 3);
    assert_eq!(
        pte_at(&mm, page(4)).map(|x| x.0),
        Some(cached),
        "shared: the cached page"
    );
    assert_eq!(mem.sys().read(cached), Ok(3));
}

/// A device-exclusive entry keeps the mapping's count and reference; a
/// CPU fault restores the PTE; zapping it drops the mapping; only anon
/// pages can be made exclusive; fork restores it first.
#[test]
fn device_exclusive_entries() {
    let mem = memory();
    let mm = Mm::new(&mem, MmConfig::default());
    anon(&mm, BASE, 4 * PAGE_SIZE, VmFlags::RW);
    write(&mm, page(0), 7);
    let f = make_device_exclusive(&mm, page(0)).unwrap();
    assert!(f.is_locked());
    assert_eq!((f.mapcount(), f.refcount()), (1, 2));
    f.unlock().unwrap();
    f.put().unwrap();
    assert!(mm.softleaf_at(page(0)).is_device_exclusive());
    assert_eq!(mm.read_user(page(0)), Err(Errno::EFAULT));
    assert_eq!(read(&mm, page(0)), 7);
    assert_eq!(pte_at(&mm, page(0)), Some((f.pfn(), true)));
    // A hole is faulted in writable first.
    let g = make_device_exclusive(&mm, page(1)).unwrap();
    g.unlock().unwrap();
    g.put().unwrap();
    assert!(mm.softleaf_at(page(1)).is_device_exclusive());
    let child = mm.fork().unwrap();
    assert_eq!(
        pte_at(&mm, page(1)),
        Some((g.pfn(), false)),
        "restored, then shared"
    );
    assert_eq!(pte_at(&child, page(1)), Some((g.pfn(), false)));
    drop(child);
    let h = make_device_exclusive(&mm, page(2)).unwrap();
    h.unlock().unwrap();
    h.put().unwrap();
    let free = mem.sys().nr_free();
    mm.mmap_write_lock().munmap(page(2), PAGE_SIZE).unwrap();
    assert_eq!(mem.sys().nr_free(), free + 1, "zapped and freed");
    let file = AddressSpace::new(&mem, MappingKind::Shmem, None);
    mm.mmap_write_lock()
        .mmap_file(page(8), PAGE_SIZE, VmFlags::RW | VmFlags::SHARED, file, 0)
        .unwrap();
    assert_eq!(
        make_device_exclusive(&mm, page(8)).err(),
        Some(Errno::EOPNOTSUPP)
    );
    mm.mmap_write_lock()
        .mprotect(page(3), PAGE_SIZE, VmFlags::READ)
        .unwrap();
    assert_eq!(
        make_device_exclusive(&mm, page(3)).err(),
        Some(Errno::EFAULT)
    );
}

/// In a `MADV_HUGEPAGE` range a read fault maps the huge zero page (no
/// allocation); a write to it splits it into zero-page PTEs and copies
/// one page; a write fault on an empty PMD maps a new THP.
#[test]
fn thp_and_huge_zero_page_at_fault_time() {
    let mem = memory();
    let mm = Mm::new(&mem, MmConfig::default());
    {
        let mut w = mm.mmap_write_lock();
        w.mmap_anon(BASE, 2 * PMD_SIZE, VmFlags::RW).unwrap();
        w.madvise(BASE, 2 * PMD_SIZE, Advice::HugePage).unwrap();
    }
    assert_eq!(read(&mm, BASE + 5 * PAGE_SIZE), 0);
    let z = mm.pmdp_get_lockless(BASE).unwrap();
    assert!(z.is_trans_huge() && !z.is_write() && mem.sys().is_huge_zero_pfn(z.pfn()));
    assert_eq!(mem.sys().nr_free(), PAGES);
    write(&mm, BASE + 5 * PAGE_SIZE, 9);
    assert!(mm.pmdp_get_lockless(BASE).unwrap().is_table());
    assert_eq!(mem.sys().nr_free(), PAGES - 1);
    assert!(mem.sys().is_zero_pfn(pte_at(&mm, BASE).unwrap().0));
    write(&mm, BASE + PMD_SIZE, 1);
    let t = mm.pmdp_get_lockless(BASE + PMD_SIZE).unwrap();
    assert!(t.is_trans_huge() && t.is_write() && !mem.sys().is_huge_zero_pfn(t.pfn()));
    assert_eq!(mem.sys().nr_free(), PAGES - 513);
    // Without MADV_HUGEPAGE: 4 KiB pages only.
    mm.mmap_write_lock()
        .madvise(BASE + PMD_SIZE, PMD_SIZE, Advice::NoHugePage)
        .unwrap();
    mm.mmap_write_lock()
        .munmap(BASE + PMD_SIZE, PMD_SIZE)
        .unwrap();
    anon(&mm, BASE + PMD_SIZE, PMD_SIZE, VmFlags::RW);
    write(&mm, BASE + PMD_SIZE, 1);
    assert!(mm.pmdp_get_lockless(BASE + PMD_SIZE).unwrap().is_table());
    let _ = Pmd::NONE;
}

/// The notifier hears unmapping, `mprotect`, fork's write-protection,
/// `mremap` and device-exclusive changes, with their ranges.
#[test]
fn mmu_notifier_events() {
    type Events = Arc<Mutex<Vec<(u64, u64, MmuNotifyEvent)>>>;
    #[derive(Debug, Default)]
    struct Log(Events);
    impl MmuNotifier for Log {
        fn invalidate(&self, r: &MmuNotifierRange) {
            self.0.lock().push((r.start, r.end, r.event));
        }
    }
    let mem = memory();
    let mm = Mm::new(&mem, MmConfig::default());
    let events = Events::default();
    let n: Arc<dyn MmuNotifier> = Arc::new(Log(Arc::clone(&events)));
    mm.mmu_notifier_register(Arc::downgrade(&n));
    anon(&mm, BASE, 4 * PAGE_SIZE, VmFlags::RW);
    write(&mm, page(0), 1);
    mm.mmap_write_lock()
        .mprotect(page(1), PAGE_SIZE, VmFlags::READ)
        .unwrap();
    let _child = mm.fork().unwrap();
    let f = make_device_exclusive(&mm, page(2)).unwrap();
    f.unlock().unwrap();
    f.put().unwrap();
    let _ = read(&mm, page(2));
    mm.mmap_write_lock()
        .mremap(
            page(3),
            PAGE_SIZE,
            PAGE_SIZE,
            MremapFlags::MAYMOVE | MremapFlags::FIXED,
            page(9),
        )
        .unwrap();
    mm.mmap_write_lock().munmap(BASE, 2 * PAGE_SIZE).unwrap();
    let got = events.lock().clone();
    use MmuNotifyEvent::*;
    assert_eq!(
        got,
        vec![
            (page(1), page(2), ProtectionVma),
            (page(0), page(1), ProtectionPage),
            (page(1), page(2), ProtectionPage),
            (page(2), page(4), ProtectionPage),
            (page(2), page(3), Exclusive),
            (page(2), page(3), Exclusive),
            (page(9), page(10), Unmap),
            (page(3), page(4), Unmap),
            (page(3), page(4), Unmap),
            (page(0), page(2), Unmap),
        ]
    );
    drop(n);
    mm.mmap_write_lock().munmap(page(2), PAGE_SIZE).unwrap();
    assert_eq!(events.lock().len(), 10, "a dropped notifier hears nothing");
}

/// The rmap walk finds every mapping of an anon folio, in every process of
/// its fork tree and in none outside it, whichever process asks: one of
/// the tree (the walk stays in the tree) or an unrelated one (the walk
/// falls back to every process). The result is the same either way.
#[test]
fn rmap_walk_anon_reaches_the_fork_tree_from_any_process() {
    use devpriv_migrate::rmap_walk_anon;
    let mem = memory();
    let parent = Mm::new(&mem, MmConfig::default());
    anon(&parent, BASE, PAGE_SIZE, VmFlags::RW);
    write(&parent, BASE, 1);
    let stranger = Mm::new(&mem, MmConfig::default());
    anon(&stranger, BASE, PAGE_SIZE, VmFlags::RW);
    write(&stranger, BASE, 2);
    let child = parent.fork().unwrap();
    let grandchild = child.fork().unwrap();
    let id = parent.vma_lookup(BASE).unwrap().id();
    let walk = |asker: &Mm, id: u64| -> Vec<u64> {
        let mut out = Vec::new();
        rmap_walk_anon(asker, id, |m, v| {
            assert_eq!(v.start(), BASE);
            out.push(m.id());
            Ok(())
        })
        .unwrap();
        out
    };
    let ids = |asker: &Mm| walk(asker, id);
    let tree = vec![parent.id(), child.id(), grandchild.id()];
    for asker in [&parent, &child, &grandchild, &stranger] {
        assert_eq!(ids(asker), tree, "asked by mm {}", asker.id());
    }
    let theirs = stranger.vma_lookup(BASE).unwrap().id();
    assert_eq!(walk(&grandchild, theirs), vec![stranger.id()]);
    // An error from the callback stops the walk and comes back.
    let mut calls = 0;
    let r = rmap_walk_anon(&stranger, id, |_, _| {
        calls += 1;
        Err(Errno::EAGAIN)
    });
    assert_eq!((r, calls), (Err(Errno::EAGAIN), 1));

    // try_to_migrate from an unrelated process still unmaps the folio in
    // all three.
    let pfn = pte_at(&parent, BASE).unwrap().0;
    let folio = mem.sys().pfn_folio(pfn).unwrap();
    assert!(folio.trylock());
    try_to_migrate(&stranger, AnyFolio::Sys(folio)).unwrap();
    for mm in [&parent, &child, &grandchild] {
        assert!(pte_at(mm, BASE).is_none(), "mm {} still maps it", mm.id());
    }
    remove_migration_ptes(&stranger, AnyFolio::Sys(folio), AnyFolio::Sys(folio)).unwrap();
    folio.unlock().unwrap();
    for mm in [&parent, &child, &grandchild] {
        assert_eq!(pte_at(mm, BASE).map(|p| p.0), Some(pfn));
    }
}
