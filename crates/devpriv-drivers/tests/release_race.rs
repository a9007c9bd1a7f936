//! `HMM_DMIRROR_RELEASE` on two mirrors of one device at once.
//!
//! The kernel's `dmirror_device_remove_chunks()` holds `devmem_lock` from
//! the first chunk to the last, so two releases (two file descriptors of
//! one `/dev/hmm_dmirrorN`, in two processes) remove each chunk once: one
//! of them evicts and unmaps everything, the other finds no chunks. Without
//! the lock both would evict the same chunk and `memunmap_pages()` it twice.
//!
//! This runs on real threads, many rounds, with both releases started by
//! one barrier; the eviction of a 1024-page chunk is long enough that
//! without the lock both threads are inside it together in nearly every
//! round (a lock taken per chunk instead of across the loop fails here on
//! the first few rounds).

use devpriv_core::{Errno, PAGE_SIZE, PageCount, Pfn};
use devpriv_drivers::test_hmm::{DmirrorConfig, DmirrorDevice, HmmDmirrorCmd};
use devpriv_migrate::{
    FaultFlags, Memory, Mm, MmConfig, SystemMemory, VmFaultResult, VmFlags, handle_mm_fault,
};
use devpriv_pagemap::{DevicePrivateSpace, Owner};
use std::sync::{Arc, Barrier};

const SYS_PAGES: u64 = 8192;
const CHUNK_PAGES: u64 = 1024;
const BASE: u64 = 0x7f00_0000_0000;
const ROUNDS: usize = 40;

fn value(addr: u64) -> u64 {
    addr ^ 0x5a5a_0000_0000_0000
}

/// One mm with `npages` written pages.
fn filled(mem: &Memory, npages: u64) -> Arc<Mm> {
    let mm = Mm::new(mem, MmConfig::default());
    mm.mmap_write_lock()
        .mmap_anon(BASE, npages * PAGE_SIZE, VmFlags::RW)
        .unwrap();
    for i in 0..npages {
        let a = BASE + i * PAGE_SIZE;
        assert_eq!(
            handle_mm_fault(&mm, a, FaultFlags::WRITE),
            Ok(VmFaultResult::Done)
        );
        mm.write_user(a, value(a)).unwrap();
    }
    mm
}

#[test]
fn two_mirrors_release_one_device_at_once() {
    let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(SYS_PAGES)).unwrap();
    let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
    let config = DmirrorConfig::with_chunk_pages(PageCount::new(CHUNK_PAGES));
    let dev = DmirrorDevice::new(&mem, Owner(0xd0), config).unwrap();
    // Two mirrors (two file descriptors) on one address space, each
    // moving half of it: two chunks, one per mirror.
    let npages = 2 * CHUNK_PAGES;
    let half = npages / 2;
    let mm = filled(&mem, npages);
    let (a, b) = (dev.open(&mm), dev.open(&mm));
    for round in 0..ROUNDS {
        for (m, start) in [(&a, BASE), (&b, BASE + half * PAGE_SIZE)] {
            let mut cmd = HmmDmirrorCmd::new(start, half);
            m.migrate_to_dev(&mm, &mut cmd).unwrap();
            assert_eq!(cmd.cpages, half);
        }
        assert_eq!(dev.chunks().len(), 2);
        let pagemaps = mem.space().len() - 2;
        let barrier = Barrier::new(2);
        let results: Vec<Result<(), Errno>> = std::thread::scope(|s| {
            let hs = [&a, &b].map(|m| {
                let (barrier, mm) = (&barrier, &mm);
                s.spawn(move || {
                    barrier.wait();
                    m.release(mm)
                })
            });
            hs.map(|h| h.join().unwrap()).into()
        });
        assert_eq!(results, [Ok(()), Ok(())], "round {round}");
        assert!(dev.chunks().is_empty(), "round {round}");
        assert_eq!(
            mem.space().len(),
            pagemaps,
            "round {round}: every chunk unmapped once"
        );
        mem.space().validate().unwrap();
        for i in 0..npages {
            let addr = BASE + i * PAGE_SIZE;
            assert_eq!(
                mm.read_user(addr),
                Ok(value(addr)),
                "round {round}: {addr:#x} is back"
            );
        }
        dev.check_idle().unwrap();
    }
    assert_eq!(
        dev.faults(),
        0,
        "eviction, not CPU faults, brought the pages back"
    );
}
