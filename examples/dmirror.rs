//! A narrated run of the `dmirror` driver prototype, after `lib/test_hmm.c`
//! (`dmirror_allocate_chunk()`, `dmirror_migrate_to_device()`,
//! `dmirror_snapshot()`, `dmirror_devmem_fault()`,
//! `dmirror_device_remove_chunks()`).
//!
//! Two devices with different owners share one machine. Device 0 takes
//! over part of a process's memory (chunks are added on demand: one of
//! single pages, then one of 512-page blocks for a THP), both devices
//! snapshot the address space (each sees only its own private pages), the
//! CPU faults pages back through `migrate_to_ram`, and `RELEASE` evicts
//! and unmaps every chunk.
//!
//! Run: `cargo run --example dmirror`. It prints a short report and exits
//! 0; every step is checked with an assertion.

use devpriv::core::{Errno, Order, PAGE_SIZE, PageCount, Pfn};
use devpriv::drivers::test_hmm::{
    Dmirror, DmirrorConfig, DmirrorDevice, DmirrorProt, HmmDmirrorCmd,
};
use devpriv::migrate::{
    FaultFlags, Memory, Mm, MmConfig, PMD_SIZE, SystemMemory, VmFlags, handle_mm_fault,
};
use devpriv::pagemap::{DevicePrivateSpace, Owner};
use std::sync::Arc;

const BASE: u64 = 0x7f00_0000_0000;
const THP: u64 = BASE + PMD_SIZE;

fn value(addr: u64) -> u64 {
    addr >> 12
}

fn report(what: &str, dev: &DmirrorDevice) {
    println!(
        "  {what:<34} chunks {}, pages {:>4}, free {:>4}, calloc {:>4}, cfree {:>4}, faults {}",
        dev.chunks().len(),
        dev.nr_pages(),
        dev.nr_free_pages(),
        dev.calloc(),
        dev.cfree(),
        dev.faults()
    );
}

fn summary(prot: &[DmirrorProt]) -> String {
    let mut out: Vec<(DmirrorProt, usize)> = Vec::new();
    for p in prot {
        match out.last_mut() {
            Some((q, n)) if q == p => *n += 1,
            _ => out.push((*p, 1)),
        }
    }
    out.iter()
        .map(|(p, n)| format!("{n}x {p:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() -> Result<(), Errno> {
    let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(4096))?;
    let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
    // Small chunks (2 MiB) instead of the kernel's 256 MiB keep this fast.
    let config = DmirrorConfig::with_chunk_pages(PageCount::new(512));
    let dev0 = DmirrorDevice::new(&mem, Owner(0xd0), config)?;
    let dev1 = DmirrorDevice::new(&mem, Owner(0xd1), config)?;
    println!(
        "dmirror: two devices, owners {:?} and {:?}",
        dev0.owner(),
        dev1.owner()
    );
    report("dev0 at init (one chunk of pages)", &dev0);

    // A process: 16 small pages, then a 2 MiB THP.
    let mm = Mm::new(&mem, MmConfig::default());
    mm.mmap_write_lock()
        .mmap_anon(BASE, 2 * PMD_SIZE, VmFlags::RW)?;
    let f = mem.sys().alloc_folio(Order::HPAGE_PMD)?;
    mm.map_folio_pmd(THP, f, true)?;
    f.put()?;
    for a in (BASE..BASE + 16 * PAGE_SIZE)
        .chain(THP..THP + PMD_SIZE)
        .step_by(4096)
    {
        if mm.write_user(a, value(a)).is_err() {
            handle_mm_fault(&mm, a, FaultFlags::WRITE)?;
            mm.write_user(a, value(a))?;
        }
    }
    let (m0, m1): (Dmirror, Dmirror) = (dev0.open(&mm), dev1.open(&mm));

    println!("\nMIGRATE_TO_DEV on dev0: pages 0-7, then the THP");
    let mut cmd = HmmDmirrorCmd::new(BASE, 8);
    let data = m0.migrate_to_dev(&mm, &mut cmd)?;
    assert_eq!(
        data,
        (0..8)
            .map(|i| value(BASE + i * PAGE_SIZE))
            .collect::<Vec<_>>()
    );
    println!(
        "  small pages: cpages {}, device read {:#x?}...",
        cmd.cpages,
        &data[..3]
    );
    let mut cmd = HmmDmirrorCmd::new(THP, 512);
    m0.migrate_to_dev(&mm, &mut cmd)?;
    assert_eq!(cmd.cpages, 512);
    println!("  THP: cpages {} (one order-9 device folio)", cmd.cpages);
    report("dev0 (a chunk of blocks added)", &dev0);

    println!("\nMIGRATE_TO_DEV on dev1 of dev0's page 3: refused");
    let r = m1.migrate_to_dev(&mm, &mut HmmDmirrorCmd::new(BASE + 3 * PAGE_SIZE, 1));
    assert_eq!(r, Err(Errno::ENOENT));
    println!("  -> {r:?} (another owner's private page is not selected)");

    println!("\nSNAPSHOT of pages 0-15 and the first THP page");
    for (name, m) in [("dev0", &m0), ("dev1", &m1)] {
        let s = m.snapshot(&mm, &mut HmmDmirrorCmd::new(BASE, 16))?;
        let t = m.snapshot(&mm, &mut HmmDmirrorCmd::new(THP, 1))?;
        println!("  {name}: {} | THP: {}", summary(&s), summary(&t));
    }

    println!("\nCPU faults: read page 5, then one THP page");
    handle_mm_fault(&mm, BASE + 5 * PAGE_SIZE, FaultFlags::READ)?;
    assert_eq!(
        mm.read_user(BASE + 5 * PAGE_SIZE),
        Ok(value(BASE + 5 * PAGE_SIZE))
    );
    handle_mm_fault(&mm, THP + 100 * PAGE_SIZE, FaultFlags::READ)?;
    assert!(mm.pmdp_get_lockless(THP).is_some_and(|p| p.is_trans_huge()));
    println!("  page 5 and the whole THP are back in RAM (a THP again)");
    report("dev0 after 2 migrate_to_ram", &dev0);

    println!("\nRELEASE on dev0: evict every chunk, then unmap");
    let spaces = mem.space().len();
    m0.release(&mm)?;
    for a in (BASE..BASE + 16 * PAGE_SIZE)
        .chain(THP..THP + PMD_SIZE)
        .step_by(4096)
    {
        assert_eq!(mm.read_user(a), Ok(value(a)));
    }
    println!(
        "  pagemaps in the space: {spaces} -> {}; all data readable without a fault",
        mem.space().len()
    );
    report("dev0 after release", &dev0);
    dev1.check_idle().map_err(|_| Errno::EBUSY)?;
    println!("\nok");
    Ok(())
}
