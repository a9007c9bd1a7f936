//! A CPU fault on a device-private page racing the driver's eviction of
//! the same page: both want to migrate it back to system RAM.
//!
//! Kernel: the fault side is `do_swap_page()` (`mm/memory.c`: re-check
//! the PTE under its lock, `folio_trylock()` — contended means retry —
//! `folio_get()`, then `pgmap->ops->migrate_to_ram()`, whose driver calls
//! `migrate_vma_setup()` with `fault_page`, copies, `migrate_vma_pages()`,
//! `migrate_vma_finalize()`). The eviction side is
//! `migrate_device_range()` → `migrate_device_pfn_lock()`
//! (`folio_get_nontail_page()` + `folio_trylock()`, contended means the
//! page is skipped), then `migrate_device_pages()` and
//! `migrate_device_finalize()` (`mm/migrate_device.c`). The folio lock is
//! what makes the two exclusive: the fault-side lock is 1afaeb8293c9
//! ("mm/migrate: Trylock device page in `do_swap_page`", v6.15). Hazard H23
//! (`docs/hazards.md`); a protocol the model must keep, not a 2026 fix.
//!
//! The machine: one device page (a one-page pagemap), mapped writable at
//! `ADDR`, holding `DATA`; one system page's worth of memory to spare.
//!
//! Checks, in every execution, once both are done: exactly one system
//! page maps `ADDR` and holds `DATA`, no other system page is in use, the
//! device folio was freed exactly once (`folio_free`), the pagemap's
//! references are back at their baseline, and no WARN fired.
//!
//! Mutants: `Mutant::EvictNoTrylock` — the eviction takes its reference and
//! proceeds without the folio lock, so both sides migrate the page;
//! `Mutant::EvictGetNotUnlessZero` — the eviction's "get unless zero" is a
//! check then an increment, so a page the fault has just migrated and
//! freed is taken again and freed twice (this model found that bug in the
//! model's own `migrate_device_pfn_lock()`).

#![cfg(loom)]
#![forbid(unsafe_code)]

use devpriv_core::mutant::{Mutant, Mutants};
use devpriv_core::sync::atomic::{AtomicU64, Ordering};
use devpriv_core::{DevicePrivateOffset, Errno, Order, PAGE_SIZE, PageCount, PageFrame, Pfn, warn};
use devpriv_loom_tests::{assert_caught_with_branches, model_with_branches};
use devpriv_migrate::swapops::make_device_private_entry;
use devpriv_migrate::{
    AnyFolio, FaultContext, FaultFlags, Memory, MigratePfn, MigrateVma, MigrateVmaFlags, Mm,
    MmConfig, Pte, SystemMemory, VmFaultResult, VmFlags, handle_mm_fault, migrate_device_finalize,
    migrate_device_pages, migrate_device_range, migrate_vma_finalize, migrate_vma_pages,
    migrate_vma_setup,
};
use devpriv_pagemap::{
    DevPagemapOps, DevicePrivateSpace, Folio, Owner, PageRef, PagemapParams, SpaceConfig, VmFault,
    zone_device_folio_init,
};
use loom::thread;
use std::sync::Arc;

/// The user address (PMD-aligned: one PTE table).
const ADDR: u64 = 0x4000_0000;
/// What the device page holds.
const DATA: u64 = 0xda7a;
/// System RAM pages.
const SYS_PAGES: u64 = 2;
const OWNER: Owner = Owner(1);

/// A one-page device: its data word and how often `folio_free` ran.
struct Device {
    data: AtomicU64,
    frees: AtomicU64,
}

impl Device {
    /// A locked system page holding the device page's data, as an mpfn.
    fn copy_to_sys(&self, mem: &Memory) -> Result<MigratePfn, Errno> {
        let f = mem.sys().alloc_folio(Order::ZERO)?;
        assert!(f.trylock(), "a new page is unlocked");
        mem.sys()
            .write(f.pfn(), self.data.load(Ordering::Acquire))?;
        MigratePfn::new(f.pfn().into())
    }
}

impl DevPagemapOps for Device {
    fn folio_free(&self, _folio: Folio<'_>) {
        self.frees.fetch_add(1, Ordering::AcqRel);
    }

    /// `dmirror_devmem_fault()`, for one page.
    fn migrate_to_ram(&self, vmf: &VmFault<'_>) -> Result<(), Errno> {
        let ctx = vmf.context::<FaultContext>().ok_or(Errno::EINVAL)?;
        let fault_page = vmf
            .page
            .owner()
            .first_offset()
            .checked_add(PageCount::new(vmf.page.index() as u64))
            .ok_or(Errno::EINVAL)?;
        let start = vmf.address & !(PAGE_SIZE - 1);
        let mut args = MigrateVma::new(
            &ctx.mm,
            &ctx.vma,
            start,
            start + PAGE_SIZE,
            MigrateVmaFlags::SELECT_DEVICE_PRIVATE,
            Some(OWNER),
        );
        args.fault_page = Some(fault_page);
        migrate_vma_setup(&mut args)?;
        if args.src[0].contains(MigratePfn::MIGRATE) {
            args.dst[0] = self.copy_to_sys(ctx.mm.memory())?;
        }
        migrate_vma_pages(&mut args);
        migrate_vma_finalize(&mut args);
        Ok(())
    }
}

fn scenario(mutants: Mutants) {
    let warns = warn::total_hits();
    let dev = Arc::new(Device {
        data: AtomicU64::new(DATA),
        frees: AtomicU64::new(0),
    });
    let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(SYS_PAGES)).unwrap();
    let space = Arc::new(DevicePrivateSpace::with_config(SpaceConfig {
        space_shift: Some(24),
        ..SpaceConfig::default()
    }));
    let ops: Arc<dyn DevPagemapOps> = dev.clone();
    let pm = space
        .memremap_device_private_pagemap(PagemapParams::private(PageCount::new(1), OWNER, ops), -1)
        .unwrap();
    let baseline = pm.percpu_ref().count();
    let mem = Memory::new(Arc::new(sys), space);
    let mm = Mm::with_mutants(&mem, MmConfig::default(), mutants);
    let vma = mm
        .mmap_write_lock()
        .mmap_anon(ADDR, PAGE_SIZE, VmFlags::RW)
        .unwrap();

    // The page lives on the device, mapped by a writable device-private PTE.
    let off: DevicePrivateOffset = pm.first_offset();
    {
        let head = Folio::from_head(PageRef::new(&pm, 0).unwrap());
        let folio = zone_device_folio_init(head, &pm, Order::ZERO).unwrap();
        let f = AnyFolio::Dev(folio);
        f.set_anon(vma.id(), vma.linear_page_index(ADDR));
        let e = make_device_private_entry(true, off, mm.paging()).unwrap();
        mm.set_pte(ADDR, Pte::from_swp_entry(e).unwrap()).unwrap();
        f.add_rmap_ptes(0, 1).unwrap();
        f.get();
        f.unlock();
        f.put();
    }

    // A CPU load faults once. Whoever loses the folio lock backs off: a
    // fault that finds the page locked, or already a migration entry,
    // returns `Retry`; an eviction that finds it locked skips it. (The
    // loser's access would fault again; that refault runs below, after
    // the race, so the model needs no spin loop.)
    let cpu = {
        let mm = Arc::clone(&mm);
        thread::spawn(move || match handle_mm_fault(&mm, ADDR, FaultFlags::READ) {
            Ok(VmFaultResult::Done | VmFaultResult::Retry) => {}
            Err(e) => panic!("fault failed: {e:?}"),
        })
    };

    // The driver evicts its only page (`dmirror_device_evict_chunk()`).
    let mut src = [MigratePfn::NONE];
    let mut dst = [MigratePfn::NONE];
    let start = MigratePfn::new(PageFrame::DevicePrivate(off)).unwrap();
    migrate_device_range(&mm, &mut src, start, 1).unwrap();
    if src[0].contains(MigratePfn::MIGRATE) {
        dst[0] = dev.copy_to_sys(&mem).unwrap();
    }
    migrate_device_pages(&mem, &mut src, &mut dst).unwrap();
    migrate_device_finalize(&mm, &src, &dst).unwrap();

    cpu.join().unwrap();
    // The refault: the race can leave the page on the device (the fault
    // backed off, and the eviction skipped it while the fault held the
    // lock, its transient reference then failing the fault's own
    // migration); one more fault brings it back.
    if mm.read_user(ADDR).is_err() {
        assert_eq!(
            handle_mm_fault(&mm, ADDR, FaultFlags::READ),
            Ok(VmFaultResult::Done),
            "fault failed after the race"
        );
    }
    assert_eq!(
        mm.read_user(ADDR),
        Ok(DATA),
        "the page is not mapped with its data"
    );
    assert_eq!(
        mem.sys().nr_free(),
        SYS_PAGES - 1,
        "a system page leaked, or two copies were made"
    );
    assert_eq!(
        dev.frees.load(Ordering::Acquire),
        1,
        "the device folio was not freed exactly once"
    );
    assert_eq!(
        pm.percpu_ref().count(),
        baseline,
        "pagemap references off baseline"
    );
    assert_eq!(warn::total_hits(), warns, "a WARN fired");
}

/// Scheduling branches one execution needs: two migrations and a refault.
const BRANCHES: usize = 2000;

#[test]
fn fault_vs_evict() {
    let runs = model_with_branches(BRANCHES, || scenario(Mutants::NONE));
    eprintln!("fault_vs_evict: {runs} executions");
}

#[test]
fn mutant_evict_no_trylock_is_caught() {
    assert_caught_with_branches(
        BRANCHES,
        || scenario(Mutant::EvictNoTrylock.into()),
        &[
            "fault failed",
            "not mapped with its data",
            "two copies",
            "not freed exactly once",
            "off baseline",
            "a WARN fired",
        ],
    );
}

#[test]
fn mutant_evict_get_not_unless_zero_is_caught() {
    assert_caught_with_branches(
        BRANCHES,
        || scenario(Mutant::EvictGetNotUnlessZero.into()),
        &["not freed exactly once", "a WARN fired", "off baseline"],
    );
}
