//! Write your own driver: the smallest device-private driver, narrated.
//!
//! A device memremaps its 16 pages (one word each, as the model keeps one
//! word per system page), takes over part of a process's memory with
//! `migrate_vma_*`, gives a page back on a CPU fault, and is torn down.
//! Every step is checked. The full-size driver is `lib/test_hmm.c`'s
//! dmirror (`cargo run --example dmirror`). Run:
//! `cargo run --example minimal_driver`.

use devpriv::core::sync::Mutex;
use devpriv::prelude::*;
use std::sync::Arc;

const OWNER: Owner = Owner(0x42); // `pgmap->owner`: which device-private pages are ours
const DEV_PAGES: usize = 16;
const NPAGES: usize = 8; // pages of the process that move to the device
const BASE: u64 = 0x7f00_0000_0000;
const LEN: u64 = NPAGES as u64 * PAGE_SIZE;

/// The device: its memory, and the pages it has not handed out.
struct Device {
    vram: Mutex<Vec<u64>>,
    free: Mutex<Vec<usize>>,
}

impl Device {
    /// A free page as a locked order-0 folio holding one reference.
    /// Kernel: `dmirror_devmem_alloc_page()`, `lib/test_hmm.c` (7.0).
    fn alloc<'g>(&self, pgmap: &'g DevPagemap) -> Result<Folio<'g>, Errno> {
        let i = self.free.lock().pop().ok_or(Errno::ENOMEM)?;
        let page = PageRef::new(pgmap, i).ok_or(Errno::EINVAL)?;
        Ok(zone_device_page_init(page, pgmap, Order::ZERO)?)
    }
}

impl DevPagemapOps for Device {
    /// A folio's last reference is gone: its page is free again.
    fn folio_free(&self, folio: Folio<'_>) {
        self.free.lock().push(folio.page().index());
    }

    /// The CPU touched one of our pages: copy it into a new system page and
    /// migrate it back. Kernel: `dmirror_devmem_fault()`, `lib/test_hmm.c` (7.0).
    fn migrate_to_ram(&self, vmf: &VmFault<'_>) -> Result<(), Errno> {
        let ctx = vmf.context::<FaultContext>().ok_or(Errno::EINVAL)?;
        let (a, select) = (vmf.address, MigrateVmaFlags::SELECT_DEVICE_PRIVATE);
        let mut args = MigrateVma::new(&ctx.mm, &ctx.vma, a, a + PAGE_SIZE, select, Some(OWNER));
        args.fault_page = Some(vmf.page.offset()); // the fault path holds its lock
        migrate_vma_setup(&mut args)?;
        let (sys, data) = (ctx.mm.memory().sys(), self.vram.lock()[vmf.page.index()]);
        // A page that migrates gets a new locked system page holding its
        // data, writable if it was. On failure `dst` stays empty and
        // finalize leaves the page here.
        let copied = args.entries_mut().try_for_each(|(_, src, dst)| {
            if src.contains(MigratePfn::MIGRATE) {
                let f = sys.alloc_folio(Order::ZERO)?;
                assert!(f.trylock(), "a new folio is ours to lock");
                sys.write(f.pfn(), data)?;
                *dst = MigratePfn::new(f.pfn().into())?.with(src.flags() & MigratePfn::WRITE)?;
            }
            Ok(())
        });
        migrate_vma_pages(&mut args);
        migrate_vma_finalize(&mut args);
        copied
    }
}

fn main() -> Result<(), Errno> {
    // The machine: 64 pages of RAM and an empty device-private space.
    let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(64))?;
    let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
    let ram_free = mem.sys().nr_free();

    // memremap: struct pages for the device's memory, at device-private
    // offsets (not pfns: the series takes them out of the physical map).
    let dev = Arc::new(Device {
        vram: Mutex::new(vec![0; DEV_PAGES]),
        free: Mutex::new((0..DEV_PAGES).rev().collect()),
    });
    let params = PagemapParams::private(PageCount::new(DEV_PAGES as u64), OWNER, dev.clone());
    let pgmap = mem.space().memremap_device_private_pagemap(params, -1)?;
    let first = pgmap.first_offset();
    println!("memremap: {DEV_PAGES} pages, the first at {first:?}");

    // A process writes NPAGES pages of anonymous memory.
    let mm = Mm::new(&mem, MmConfig::default());
    let vma = mm.mmap_write_lock().mmap_anon(BASE, LEN, VmFlags::RW)?;
    let addrs: Vec<u64> = (0..NPAGES as u64).map(|i| BASE + i * PAGE_SIZE).collect();
    for &a in &addrs {
        handle_mm_fault(&mm, a, FaultFlags::WRITE)?;
        mm.write_user(a, a ^ 0x5a5a)?;
    }

    // Migrate them to the device. setup collects and unmaps the pages; the
    // driver gives each a locked destination holding a copy of its data;
    // pages moves them; finalize maps device-private entries and unlocks.
    let select = MigrateVmaFlags::SELECT_SYSTEM;
    let mut args = MigrateVma::new(&mm, &vma, BASE, BASE + LEN, select, Some(OWNER));
    migrate_vma_setup(&mut args)?;
    for (_, src, dst) in args.entries_mut() {
        let Some(PageFrame::Pfn(pfn)) = src.frame() else {
            continue; // a hole (none here: every page was written)
        };
        let folio = dev.alloc(&pgmap)?;
        dev.vram.lock()[folio.page().index()] = mem.sys().read(pfn)?;
        *dst = MigratePfn::new(folio.offset().into())?.with(src.flags() & MigratePfn::WRITE)?;
    }
    migrate_vma_pages(&mut args);
    migrate_vma_finalize(&mut args);
    for &a in &addrs {
        assert!(mm.device_private_offset_at(a).is_some(), "{a:#x} not moved");
        assert_eq!(mm.read_user(a), Err(Errno::EFAULT)); // the CPU cannot load it
    }
    println!("migrate_vma: {NPAGES} pages now on the device");

    // The CPU reads page 3: the fault path finds a device-private entry and
    // calls our migrate_to_ram; afterwards folio_free has the page back.
    let a = addrs[3];
    handle_mm_fault(&mm, a, FaultFlags::READ)?;
    let v = mm.read_user(a)?;
    println!("fault at {a:#x}: back in RAM, reads {v:#x}");
    assert_eq!(v, a ^ 0x5a5a);
    assert_eq!(mm.device_private_offset_at(a), None);
    assert_eq!(dev.free.lock().len(), DEV_PAGES - NPAGES + 1);

    // munmap drops the device pages still mapped, so memunmap (which waits
    // for every page to be free) can finish.
    mm.mmap_write_lock().munmap(BASE, LEN)?;
    assert_eq!(dev.free.lock().len(), DEV_PAGES, "device pages leaked");
    mem.space().memunmap_device_private_pagemap(&pgmap)?;
    assert!(mem.space().is_empty());
    assert_eq!(mem.sys().nr_free(), ram_free, "system pages leaked");
    mem.space().validate().map_err(|_| Errno::EINVAL)?;
    println!("munmap + memunmap: every page free, the space empty and valid\nok");
    Ok(())
}
