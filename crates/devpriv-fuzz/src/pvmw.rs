//! Target `check_pte_pmd`: [`PvmwTarget::check_pte`],
//! [`PvmwTarget::check_pmd`] and the PMD branches of a real
//! [`PageVmaMappedWalk`] against the [`naive`] oracle.
//!
//! Kernel: `check_pte()`, `check_pmd()`, `page_vma_mapped_walk()`,
//! `mm/page_vma_mapped.c` (v6 proposal), its device-private PMD branch as
//! fixed for CVE-2026-68163 or as in 7.0.
//!
//! Entries are either arbitrary raw values (every bit pattern is a PTE) or
//! built by the crate's encoders at a distance from the target chosen so
//! that before / first page / inside / last page / after are all common.
//! `pte_nr` is 1 to 512 (the kernel's range: one page or a PTE-mapped
//! THP's pages). For `check_pmd` on arbitrary frames, where C's unsigned
//! arithmetic can wrap past `u64::MAX` (values no PMD can hold), the typed
//! answer is compared with an exact overlap instead and the wrapping one
//! is only compared where it does not wrap.

use crate::naive;
use arbitrary::Arbitrary;
use devpriv_core::{DevicePrivateOffset, PageCount, PageFrame, PagingMode, Pfn};
use devpriv_migrate::pgtable::{_PAGE_PRESENT, _PAGE_PROTNONE, _PAGE_RW};
use devpriv_migrate::swapops::{
    MigrationKind, make_device_exclusive_entry, make_device_private_entry, make_hwpoison_entry,
    make_migration_entry, make_pte_marker_entry, swp_entry,
};
use devpriv_migrate::{
    Memory, Mm, MmConfig, PMD_SIZE, PageVmaMappedWalk, Pmd, Pte, PvmwFlags, PvmwPmdPolicy,
    PvmwTarget, Softleaf, SystemMemory, VmFlags,
};
use devpriv_pagemap::DevicePrivateSpace;
use std::sync::Arc;

/// Where the VMA of the PMD walks starts.
const BASE: u64 = 0x7f00_0000_0000;

/// An entry's frame index relative to the target: `Near(d)` is
/// `target + d` (wrapping), `Abs(raw)` any index.
///
/// Kernel: none (model only).
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Place {
    /// `target + d`, for `d` in -1024..=1023.
    Near(i16),
    /// Any index.
    Abs(u64),
}

impl Place {
    fn index(self, target: u64) -> u64 {
        match self {
            Place::Near(d) => target.wrapping_add_signed(i64::from(d % 1024)),
            Place::Abs(raw) => raw,
        }
    }
}

/// How a PTE (or PMD) value is built.
///
/// Kernel: none (model only).
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum EntryKind {
    /// `pfn_pte(pfn, PRESENT | RW)`.
    Present,
    /// `pfn_pte(pfn, PROTNONE)`: present, pfn field inverted.
    Protnone,
    /// A migration entry (`kind` 0–2), pfn or device-private.
    Migration {
        /// Read, read-exclusive or write.
        kind: u8,
        /// Device-private migration entry.
        dp: bool,
    },
    /// A device-private entry.
    DevicePrivate {
        /// Writable.
        write: bool,
    },
    /// A device-exclusive entry.
    DeviceExclusive,
    /// A hardware-poison entry.
    Hwpoison,
    /// A real swap entry of type `ty % 21`.
    Swap {
        /// Swap type.
        ty: u8,
    },
    /// A PTE marker.
    Marker,
    /// The empty entry.
    None,
    /// Any raw value (the place is ignored).
    Raw(u64),
}

/// One `check_pte` / `check_pmd` / PMD-walk probe.
///
/// Kernel: none (model only).
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Probe {
    /// `check_pte(pte, pte_nr)`.
    Pte {
        /// The entry.
        kind: EntryKind,
        /// Its frame.
        place: Place,
        /// `pte_nr`, taken as `1 + n % 512`.
        nr: u16,
    },
    /// `check_pmd(frame)` for any frame.
    Pmd {
        /// Device-private frame.
        dp: bool,
        /// Its index.
        place: Place,
    },
    /// A walk over one PMD set to the built entry (skipped if it is a
    /// table pointer or cannot be built).
    Walk {
        /// The entry (its frame rounded down to 512 for a huge PMD).
        kind: EntryKind,
        /// Its frame.
        place: Place,
        /// `SYNC` as well.
        sync: bool,
    },
}

/// The input of one run: the target, then the probes.
///
/// Kernel: the `pfn`, `nr_pages` and `flags` of `struct
/// page_vma_mapped_walk` (7.0 with v6's checks).
#[derive(Arbitrary, Clone, Debug)]
pub struct PvmwInput {
    /// Target index: `Near(d)` is around 2^20, `Abs` any.
    pub target: Place,
    /// Device-private target.
    pub dp: bool,
    /// `nr_pages`, taken as `1 + n % 1024`.
    pub nr_pages: u16,
    /// `PVMW_MIGRATION`.
    pub migration: bool,
    /// 5-level paging (`SWP_PFN_BITS` 40 instead of 34).
    pub five_level: bool,
    /// `thp_migration_supported()` for the walks.
    pub thp_migration: bool,
    /// Walk with 7.0's device-private PMD branch
    /// ([`PvmwPmdPolicy::V7_0`], hazard H13) instead of the fixed one.
    pub v7_0: bool,
    /// The probes.
    pub probes: Vec<Probe>,
}

fn frame(dp: bool, raw: u64) -> PageFrame {
    if dp {
        DevicePrivateOffset::new(raw).into()
    } else {
        Pfn::new(raw).into()
    }
}

/// The PTE for `kind` at index `raw`, or `None` if the encoders refuse it.
fn build_pte(kind: EntryKind, raw: u64, mode: PagingMode) -> Option<Pte> {
    let swp = |e: Softleaf| Pte::from_swp_entry(e).ok();
    match kind {
        EntryKind::Present => Pte::pfn_pte(Pfn::new(raw), _PAGE_PRESENT | _PAGE_RW).ok(),
        EntryKind::Protnone => Pte::pfn_pte(Pfn::new(raw), _PAGE_PROTNONE).ok(),
        EntryKind::Migration { kind, dp } => swp(make_migration_entry(
            MigrationKind::ALL[usize::from(kind % 3)],
            frame(dp, raw),
            mode,
        )
        .ok()?),
        EntryKind::DevicePrivate { write } => {
            swp(make_device_private_entry(write, DevicePrivateOffset::new(raw), mode).ok()?)
        }
        EntryKind::DeviceExclusive => swp(make_device_exclusive_entry(Pfn::new(raw), mode).ok()?),
        EntryKind::Hwpoison => swp(make_hwpoison_entry(Pfn::new(raw), mode).ok()?),
        EntryKind::Swap { ty } => swp(swp_entry(u32::from(ty % 21), raw).ok()?),
        EntryKind::Marker => swp(make_pte_marker_entry(1 + raw % 7).ok()?),
        EntryKind::None => Some(Pte::NONE),
        EntryKind::Raw(v) => Some(Pte::from_raw(v)),
    }
}

/// The PMD for `kind` at index `raw`, or `None` if it cannot be built.
fn build_pmd(kind: EntryKind, raw: u64, mode: PagingMode) -> Option<Pmd> {
    match kind {
        EntryKind::Present => Pmd::huge(Pfn::new(raw & !511), _PAGE_PRESENT | _PAGE_RW).ok(),
        EntryKind::Protnone => Pmd::huge(Pfn::new(raw & !511), _PAGE_PROTNONE).ok(),
        EntryKind::None => Some(Pmd::NONE),
        EntryKind::Raw(v) => Some(Pmd::from_raw(v)),
        k => Pmd::from_swp_entry(Softleaf::from_pte(build_pte(k, raw, mode)?)).ok(),
    }
}

/// Runs the `check_pte_pmd` target on `data`.
///
/// Kernel: none (model only; drives `check_pte()` / `check_pmd()` /
/// `page_vma_mapped_walk()` of the model).
///
/// # Errors
///
/// A message naming the probe where the model and the naive oracle
/// disagreed.
pub fn run_check_pte_pmd(data: &[u8]) -> Result<(), String> {
    match PvmwInput::arbitrary_take_rest(arbitrary::Unstructured::new(data)) {
        Ok(input) => run_input(&input),
        // Too short or malformed to decode: tests nothing.
        Err(_) => Ok(()),
    }
}

/// An address space for PMD walks: 4 PMDs of RW anon memory at `BASE`,
/// over the smallest machine (the walk reads page tables only).
fn walk_mm(mode: PagingMode, thp_migration: bool, v7_0: bool) -> Result<Arc<Mm>, String> {
    let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(512))
        .map_err(|e| format!("system memory: {e}"))?;
    let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
    let mm = Mm::new(
        &mem,
        MmConfig {
            paging: mode,
            thp_migration,
            pvmw_pmd: if v7_0 {
                PvmwPmdPolicy::V7_0
            } else {
                PvmwPmdPolicy::Fixed
            },
            ..MmConfig::default()
        },
    );
    mm.mmap_write_lock()
        .mmap_anon(BASE, 4 * PMD_SIZE, VmFlags::RW)
        .map_err(|e| format!("mmap: {e}"))?;
    Ok(mm)
}

/// As [`run_check_pte_pmd`], on a decoded input.
///
/// Kernel: none (model only).
///
/// # Errors
///
/// As for [`run_check_pte_pmd`].
pub fn run_input(input: &PvmwInput) -> Result<(), String> {
    let mode = if input.five_level {
        PagingMode::FiveLevel
    } else {
        PagingMode::FourLevel
    };
    let t = input.target.index(1 << 20);
    let nr = 1 + u64::from(input.nr_pages % 1024);
    let target = PvmwTarget::new(frame(input.dp, t), PageCount::new(nr), input.migration);
    let fits = t.checked_add(nr - 1).is_some();
    crate::check_eq(&target.is_ok(), &fits, || {
        format!("PvmwTarget::new({t:#x}, {nr}) accepted")
    })?;
    let Ok(target) = target else {
        return Ok(());
    };
    let flags = target.flags().bits();
    crate::check_eq(
        &(
            flags & naive::PVMW_MIGRATION != 0,
            flags & naive::PVMW_DEVICE_PRIVATE != 0,
        ),
        &(input.migration, input.dp),
        || "target flags".to_owned(),
    )?;
    let swp_bits = mode.swp_pfn_bits();
    let mut mm: Option<Arc<Mm>> = None;
    for (i, probe) in input.probes.iter().take(crate::MAX_OPS).enumerate() {
        let at = || {
            format!(
                "probe {i}: {probe:?} target {t:#x}+{nr} dp {} mig {}",
                input.dp, input.migration
            )
        };
        match *probe {
            Probe::Pte { kind, place, nr: n } => {
                let Some(pte) = build_pte(kind, place.index(t), mode) else {
                    continue;
                };
                let pte_nr = 1 + u64::from(n % 512);
                let got = target.check_pte(pte, pte_nr, mode);
                let want = naive::check_pte(pte.raw(), pte_nr, t, nr, flags, swp_bits, true);
                crate::check_eq(&got, &want, || {
                    format!("{} pte {:#x} nr {pte_nr}", at(), pte.raw())
                })?;
            }
            Probe::Pmd { dp, place } => {
                let raw = place.index(t);
                let got = target.check_pmd(frame(dp, raw));
                let exact = dp == input.dp && naive::overlap_exact(raw, naive::HPAGE_PMD_NR, t, nr);
                crate::check_eq(&got, &exact, || format!("{} exact", at()))?;
                if naive::overlap_is_exact(raw, naive::HPAGE_PMD_NR, t, nr) {
                    let want = naive::check_pmd(raw, dp, t, nr, flags);
                    crate::check_eq(&got, &want, at)?;
                }
            }
            Probe::Walk { kind, place, sync } => {
                let Some(pmd) = build_pmd(kind, place.index(t), mode) else {
                    continue;
                };
                let Some(want) = naive::walk_pmd_branch(
                    pmd.raw(),
                    t,
                    nr,
                    flags,
                    swp_bits,
                    input.thp_migration,
                    !input.v7_0,
                ) else {
                    continue;
                };
                let mm: &Mm = match &mut mm {
                    Some(mm) => mm,
                    None => mm.insert(walk_mm(mode, input.thp_migration, input.v7_0)?),
                };
                let addr = BASE + PMD_SIZE;
                mm.set_pmd(addr, pmd)
                    .map_err(|e| format!("{}: set_pmd({pmd:?}): {e}", at()))?;
                let vmas = mm.vmas();
                let vma = vmas.first().ok_or_else(|| format!("{}: no VMA", at()))?;
                let mut wflags = if input.migration {
                    PvmwFlags::MIGRATION
                } else {
                    PvmwFlags::NONE
                };
                if sync {
                    wflags = wflags | PvmwFlags::SYNC;
                }
                let mut w = PageVmaMappedWalk::new(
                    mm,
                    vma,
                    target.frame(),
                    target.nr_pages(),
                    vma.linear_page_index(addr),
                    addr,
                    wflags,
                )
                .map_err(|e| format!("{}: walk: {e}", at()))?;
                let found = w.walk();
                crate::check_eq(&found, &want, || format!("{} pmd {:#x}", at(), pmd.raw()))?;
                if found {
                    crate::check_eq(&(w.is_pmd_mapped(), w.ptl_held()), &(true, true), || {
                        format!("{}: match state", at())
                    })?;
                    crate::check_eq(&w.walk(), &false, || format!("{}: second match", at()))?;
                }
                w.done();
            }
        }
    }
    Ok(())
}
