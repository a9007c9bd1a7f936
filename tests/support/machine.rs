//! The address-space fixture of the bad-input tests: a machine with one
//! address space, and a snapshot of everything a call on it could change.
//! Included with `#[path]` (after `bad_input` and `space`).
#![allow(dead_code, reason = "each crate's errors.rs uses part of it")]

use crate::bad_input::np;
use crate::space::{SpaceSnap, small_space, space_snap};
use devpriv_core::{PAGE_SIZE, PageCount, Pfn};
use devpriv_migrate::{
    FaultFlags, Memory, Mm, MmConfig, PMD_SIZE, Pmd, Pte, SystemMemory, VmFlags, handle_mm_fault,
};
use std::sync::Arc;

pub(crate) const BASE: u64 = 0x7f00_0000_0000;
pub(crate) const VMA_LEN: u64 = 2 * PMD_SIZE;
pub(crate) const SYS_PAGES: u64 = 4096;

pub(crate) struct Machine {
    pub(crate) mem: Memory,
    pub(crate) mm: Arc<Mm>,
}

/// A 4 MiB read-write anonymous VMA at `BASE` with pages 0..4 faulted in
/// and written, and a 1 MiB read-only VMA right after it.
pub(crate) fn machine() -> Machine {
    let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(SYS_PAGES)).unwrap();
    let mem = Memory::new(Arc::new(sys), Arc::new(small_space()));
    let mm = Mm::new(&mem, MmConfig::default());
    {
        let mut w = mm.mmap_write_lock();
        w.mmap_anon(BASE, VMA_LEN, VmFlags::RW).unwrap();
        w.mmap_anon(BASE + VMA_LEN, 256 * PAGE_SIZE, VmFlags::READ)
            .unwrap();
    }
    for i in 0..4 {
        let a = BASE + i * PAGE_SIZE;
        handle_mm_fault(&mm, a, FaultFlags::WRITE).unwrap();
        mm.write_user(a, 0xabc0 + i).unwrap();
    }
    Machine { mem, mm }
}

/// VMAs, every PMD and PTE over them, free system pages, every
/// system folio's refcount/mapcount, and the device-private space.
pub(crate) type MmSnap = (
    Vec<(u64, u64, u64)>,
    Vec<(u64, Option<u64>, Option<u64>, u64)>,
    u64,
    Vec<(u64, u64, u64)>,
    SpaceSnap,
);

pub(crate) fn mm_snap(m: &Machine) -> MmSnap {
    mm_snap_of(&m.mm)
}

pub(crate) fn mm_snap_of(mm: &Mm) -> MmSnap {
    let mem = mm.memory();
    let vmas = mm
        .vmas()
        .iter()
        .map(|v| (v.start(), v.end(), v.flags().bits()))
        .collect();
    let mut ptes = Vec::new();
    let mut folios = Vec::new();
    for v in mm.vmas().iter() {
        let mut a = v.start();
        while a < v.end() {
            let pte = mm.ptep_get_lockless(a);
            let pmd = mm.pmdp_get_lockless(a);
            ptes.push((
                a,
                pmd.map(Pmd::raw),
                pte.map(Pte::raw),
                mm.softleaf_at(a).raw(),
            ));
            if let Some(p) = pte.filter(|p| p.is_present())
                && let Some(f) = mem.sys().pfn_folio(p.pfn())
            {
                folios.push((f.pfn().get(), f.refcount(), f.mapcount()));
            }
            a += PAGE_SIZE;
        }
    }
    (
        vmas,
        ptes,
        mem.sys().nr_free(),
        folios,
        space_snap(mem.space()),
    )
}

#[track_caller]
pub(crate) fn mm_unchanged<R>(m: &Machine, what: &str, f: impl FnOnce() -> R) -> R {
    let before = mm_snap(m);
    let r = np(what, f);
    assert_eq!(before, mm_snap(m), "{what}: state changed");
    r
}
