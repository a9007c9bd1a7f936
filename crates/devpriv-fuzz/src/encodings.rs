//! Target `encodings`: every encoder against the kernel's bit layout
//! written out as shifts and masks — decode(encode(x)) == x for what fits,
//! `EINVAL` for what does not, and the decoders on arbitrary raw values.
//!
//! Kernel: `swp_entry()`, `softleaf_type()`, `softleaf_to_pfn()`,
//! `softleaf_to_flags()` (`include/linux/{swapops,leafops}.h`);
//! `__swp_entry_to_pte()`, `__pte_to_swp_entry()`, `pfn_pte()`,
//! `pte_pfn()`, `pmd_mkhuge()` (`arch/x86/include/asm/pgtable*.h`);
//! `MIGRATE_PFN_*` (`include/linux/migrate.h`); `HMM_PFN_*`
//! (`include/linux/hmm.h`); the v2 `PVMW_PFN_*` encoding (v6 history, v2).

use crate::check_eq;
use crate::naive;
use arbitrary::Arbitrary;
use devpriv_core::{DevicePrivateOffset, Errno, Order, PageCount, PageFrame, PagingMode, Pfn};
use devpriv_migrate::hmm::HmmPfnLayout;
use devpriv_migrate::pgtable::{Pmd, Pte};
use devpriv_migrate::swapops::{
    MigrationKind, make_device_exclusive_entry, make_device_private_entry, make_hwpoison_entry,
    make_migration_entry, make_pte_marker_entry, swp_entry,
};
use devpriv_migrate::{HmmPfn, MigratePfn, PvmwPfnV2, Softleaf, SoftleafFlags, SoftleafType};

/// A frame index: `Small(k)` for `k` below 2^16, `Edge(e, d)` within
/// ±128 of `2^(e % 64)` (the boundaries every field has), `Any(raw)`.
///
/// Kernel: none (model only).
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Index {
    /// A small index.
    Small(u16),
    /// Near a power of two.
    Edge(u8, i8),
    /// Any index.
    Any(u64),
}

impl Index {
    /// The index.
    ///
    /// Kernel: none (model only).
    pub fn get(self) -> u64 {
        match self {
            Index::Small(k) => u64::from(k),
            Index::Edge(e, d) => (1u64 << (e % 64)).wrapping_add_signed(i64::from(d)),
            Index::Any(raw) => raw,
        }
    }
}

/// One encoding check.
///
/// Kernel: the encoders named in the module docs (main and v6).
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum EncOp {
    /// `swp_entry(ty, offset)`, then the swap PTE/PMD of it.
    SwpEntry {
        /// Type (any `u8`: 32 and above must be refused).
        ty: u8,
        /// Offset.
        offset: Index,
        /// Soft-dirty marker on the PTE.
        sd: bool,
        /// Exclusive marker.
        ex: bool,
        /// uffd-wp marker.
        wp: bool,
    },
    /// A typed entry (migration kinds 0–2, device-private 3–4,
    /// device-exclusive 5, hwpoison 6, marker 7) with young/dirty bits.
    Typed {
        /// Which maker.
        which: u8,
        /// The frame index.
        index: Index,
        /// Device-private frame (migration entries).
        dp: bool,
        /// 5-level paging.
        five_level: bool,
        /// Young bit.
        young: bool,
        /// Dirty bit.
        dirty: bool,
    },
    /// Any raw value as a softleaf, a PTE and a PMD.
    Raw {
        /// The value.
        raw: u64,
        /// 5-level paging.
        five_level: bool,
    },
    /// `pfn_pte(pfn, prot)` and `pmd_mkhuge(pfn_pmd(pfn, prot))`.
    Present {
        /// The pfn.
        pfn: Index,
        /// Protection bits (any: bad ones must be refused).
        prot: u64,
        /// Use `PRESENT | RW | prot & 0xfff` instead (always valid bits).
        tame: bool,
    },
    /// `MIGRATE_PFN_*`: encode, flags, step, and any raw value.
    MigratePfn {
        /// The frame index.
        index: Index,
        /// Device-private.
        dp: bool,
        /// Flags to add (any: bad ones refused).
        flags: u8,
        /// Pages to step on.
        step: u32,
        /// A raw value to decode.
        raw: u64,
    },
    /// `HMM_PFN_*` in the three layouts, and any raw value.
    HmmPfn {
        /// The frame index.
        index: Index,
        /// Device-private.
        dp: bool,
        /// Map order (any `u8 % 64`: above 31 refused).
        order: u8,
        /// Writable.
        write: bool,
    },
    /// The v2 `PVMW_PFN_*` encoding.
    PvmwV2 {
        /// The frame index.
        index: Index,
        /// Device-private.
        dp: bool,
    },
}

fn mode(five_level: bool) -> PagingMode {
    if five_level {
        PagingMode::FiveLevel
    } else {
        PagingMode::FourLevel
    }
}

fn frame(dp: bool, raw: u64) -> PageFrame {
    if dp {
        DevicePrivateOffset::new(raw).into()
    } else {
        Pfn::new(raw).into()
    }
}

/// The kind of a softleaf from its raw value, by the v6 proposal's type table.
fn naive_kind(raw: u64) -> SoftleafType {
    if raw == 0 {
        return SoftleafType::None;
    }
    match raw >> 58 {
        0..=20 => SoftleafType::Swap,
        21 => SoftleafType::Hwpoison,
        22 => SoftleafType::MigrationRead,
        23 => SoftleafType::MigrationReadExclusive,
        24 => SoftleafType::MigrationWrite,
        25 => SoftleafType::DevicePrivateWrite,
        26 => SoftleafType::DevicePrivateRead,
        27 => SoftleafType::DeviceExclusive,
        28 => SoftleafType::MigrationDevicePrivateRead,
        29 => SoftleafType::MigrationDevicePrivateReadExclusive,
        30 => SoftleafType::MigrationDevicePrivateWrite,
        _ => SoftleafType::Marker,
    }
}

/// The frame a softleaf names, by the type table.
fn naive_frame(raw: u64, mode: PagingMode) -> Option<PageFrame> {
    let idx = raw & ((1 << 58) - 1) & ((1 << (mode.max_physmem_bits() - 12)) - 1);
    match raw >> 58 {
        _ if raw == 0 => None,
        21..=24 | 27 => Some(frame(false, idx)),
        25 | 26 | 28..=30 => Some(frame(true, idx)),
        _ => None,
    }
}

/// The x86-64 swap PTE of (type, offset): type in bits 59–63, the offset
/// inverted in bits 9–58.
fn naive_swap_pte(ty: u64, offset: u64) -> u64 {
    (ty << 59) | ((!offset & ((1 << 50) - 1)) << 9)
}

/// Checks one softleaf value: kind, frame and the PTE/PMD round trip.
fn check_softleaf(e: Softleaf, mode: PagingMode, at: &dyn Fn() -> String) -> Result<(), String> {
    let raw = e.raw();
    check_eq(&e.kind(), &naive_kind(raw), || format!("{}: kind", at()))?;
    check_eq(&e.to_frame(mode), &naive_frame(raw, mode), || {
        format!("{}: frame", at())
    })?;
    let (ty, offset) = (raw >> 58, raw & ((1 << 58) - 1));
    let pte = Pte::from_swp_entry(e);
    let fits = offset < 1 << 50 && !(ty == 0 && offset == (1 << 50) - 1);
    check_eq(&pte.is_ok(), &fits, || {
        format!("{}: swap pte accepted", at())
    })?;
    if let Ok(pte) = pte {
        check_eq(&pte.raw(), &naive_swap_pte(ty, offset), || {
            format!("{}: swap pte bits", at())
        })?;
        check_eq(&naive::softleaf(pte.raw()), &Some((ty, offset)), || {
            format!("{}: naive decode", at())
        })?;
        check_eq(&Softleaf::from_pte(pte), &e, || {
            format!("{}: from_pte", at())
        })?;
        let pmd = Pmd::from_swp_entry(e).map_err(|err| format!("{}: pmd {err}", at()))?;
        check_eq(&pmd.raw(), &pte.raw(), || format!("{}: pmd bits", at()))?;
        check_eq(&Softleaf::from_pmd(pmd), &e, || {
            format!("{}: from_pmd", at())
        })?;
    }
    Ok(())
}

/// Runs the `encodings` target on `data`.
///
/// Kernel: none (model only; drives the encoders named in the module
/// docs).
///
/// # Errors
///
/// A message naming the operation where an encoder disagreed with the
/// written-out layout.
pub fn run_encodings(data: &[u8]) -> Result<(), String> {
    for (i, op) in crate::decode_ops::<EncOp>(data).iter().enumerate() {
        run_op(op).map_err(|e| format!("op {i}: {e}"))?;
    }
    Ok(())
}

/// Runs one encoding check.
///
/// Kernel: none (model only).
///
/// # Errors
///
/// As for [`run_encodings`].
#[expect(
    clippy::too_many_lines,
    reason = "one arm per encoder, each a short list of checks"
)]
pub fn run_op(op: &EncOp) -> Result<(), String> {
    let at = || format!("{op:?}");
    match *op {
        EncOp::SwpEntry {
            ty,
            offset,
            sd,
            ex,
            wp,
        } => {
            let offset = offset.get();
            let e = swp_entry(u32::from(ty), offset);
            let fits = ty < 32 && offset < 1 << 58;
            check_eq(&e.is_ok(), &fits, || format!("{}: accepted", at()))?;
            let Ok(e) = e else {
                check_eq(&e, &Err(Errno::EINVAL), at)?;
                return Ok(());
            };
            check_eq(&e.raw(), &(u64::from(ty) << 58 | offset), at)?;
            check_eq(
                &(e.swp_type(), e.swp_offset()),
                &(u32::from(ty), offset),
                at,
            )?;
            check_eq(&Softleaf::from_raw(e.raw()), &Ok(e), at)?;
            check_softleaf(e, PagingMode::FourLevel, &at)?;
            check_softleaf(e, PagingMode::FiveLevel, &at)?;
            if let Ok(pte) = Pte::from_swp_entry(e) {
                let mut p = pte;
                if sd {
                    p = p.swp_mksoft_dirty();
                }
                if ex {
                    p = p.swp_mkexclusive();
                }
                if wp {
                    p = p.swp_mkuffd_wp();
                }
                check_eq(&Softleaf::from_pte(p), &e, || format!("{}: markers", at()))?;
                check_eq(
                    &(p.swp_soft_dirty(), p.swp_exclusive(), p.swp_uffd_wp()),
                    &(sd, ex, wp),
                    at,
                )?;
                check_eq(
                    &(p.is_swap(), p.is_present(), p.is_none()),
                    &(true, false, false),
                    at,
                )?;
            }
        }
        EncOp::Typed {
            which,
            index,
            dp,
            five_level,
            young,
            dirty,
        } => {
            let m = mode(five_level);
            let raw = index.get();
            let fits = raw < 1 << (m.max_physmem_bits() - 12);
            let which = which % 8;
            let (e, want_frame, want_type) = match which {
                0..=2 => {
                    let kind = MigrationKind::ALL[usize::from(which)];
                    let base = if dp { 28 } else { 22 };
                    (
                        make_migration_entry(kind, frame(dp, raw), m),
                        Some(frame(dp, raw)),
                        base + u64::from(which),
                    )
                }
                3 | 4 => (
                    make_device_private_entry(which == 3, DevicePrivateOffset::new(raw), m),
                    Some(frame(true, raw)),
                    if which == 3 { 25 } else { 26 },
                ),
                5 => (
                    make_device_exclusive_entry(Pfn::new(raw), m),
                    Some(frame(false, raw)),
                    27,
                ),
                6 => (
                    make_hwpoison_entry(Pfn::new(raw), m),
                    Some(frame(false, raw)),
                    21,
                ),
                _ => (make_pte_marker_entry(raw), None, 31),
            };
            let fits = if which == 7 {
                raw != 0 && raw & !7 == 0
            } else {
                fits
            };
            check_eq(&e.is_ok(), &fits, || format!("{}: accepted", at()))?;
            let Ok(e) = e else {
                check_eq(&e, &Err(Errno::EINVAL), at)?;
                return Ok(());
            };
            check_eq(&e.raw(), &(want_type << 58 | raw), || {
                format!("{}: bits", at())
            })?;
            check_eq(&e.to_frame(m), &want_frame, || format!("{}: frame", at()))?;
            check_softleaf(e, m, &at)?;
            let fl = SoftleafFlags { young, dirty };
            let g = e.with_flags(fl, m);
            check_eq(&g.is_ok(), &(which <= 2), || {
                format!("{}: with_flags", at())
            })?;
            if let Ok(g) = g {
                let bits = m.max_physmem_bits() - 12;
                let want = e.raw() | u64::from(young) << bits | u64::from(dirty) << (bits + 1);
                check_eq(&g.raw(), &want, || format!("{}: flag bits", at()))?;
                check_eq(&g.to_flags(m), &fl, at)?;
                check_eq(&g.to_frame(m), &want_frame, || {
                    format!("{}: frame+flags", at())
                })?;
                check_softleaf(g, m, &at)?;
            }
        }
        EncOp::Raw { raw, five_level } => {
            let m = mode(five_level);
            let s = Softleaf::from_raw(raw);
            check_eq(&s.is_ok(), &(raw >> 63 == 0), || {
                format!("{}: from_raw", at())
            })?;
            if let Ok(s) = s {
                check_softleaf(s, m, &at)?;
            }
            let pte = Pte::from_raw(raw);
            check_eq(&pte.is_none(), &naive::none(raw), || {
                format!("{}: none", at())
            })?;
            check_eq(&pte.is_present(), &naive::present(raw), || {
                format!("{}: present", at())
            })?;
            if pte.is_present() {
                check_eq(&pte.pfn().get(), &naive::pte_pfn(raw), || {
                    format!("{}: pte_pfn", at())
                })?;
                check_eq(&Softleaf::from_pte(pte), &Softleaf::NONE, at)?;
            } else if !pte.is_none() {
                let e = Softleaf::from_pte(pte);
                let (ty, off) = naive::softleaf(raw).ok_or_else(|| format!("{}: naive", at()))?;
                check_eq(
                    &(u64::from(e.swp_type()), e.swp_offset()),
                    &(ty, off),
                    || format!("{}: softleaf", at()),
                )?;
                // Re-encoding keeps bits 9-63 (the flag and low bits go).
                let back = Pte::from_swp_entry(e).map(Pte::raw);
                let want = if raw & !0x1ff == 0 {
                    Err(Errno::EINVAL)
                } else {
                    Ok(raw & !0x1ff)
                };
                check_eq(&back, &want, || format!("{}: re-encode", at()))?;
            }
            let pmd = Pmd::from_raw(raw);
            check_eq(&pmd.is_present(), &(raw & (1 | 0x100 | 0x80) != 0), || {
                format!("{}: pmd present", at())
            })?;
            if pmd.is_trans_huge() {
                check_eq(&pmd.pfn().get(), &naive::pmd_huge_pfn(raw), || {
                    format!("{}: pmd_pfn", at())
                })?;
            }
            let h = HmmPfn::from_raw(raw);
            let want = (raw >> 63 == 1).then(|| {
                (
                    frame(raw >> 57 & 1 == 1, raw & ((1 << 52) - 1)),
                    (raw >> 52 & 31) as u32,
                    raw >> 62 & 1 == 1,
                )
            });
            let got = h.decode().map(|(f, o, w)| (f, o.get(), w));
            check_eq(&got, &want, || format!("{}: hmm decode", at()))?;
        }
        EncOp::Present { pfn, prot, tame } => {
            let pfn = pfn.get();
            let prot = if tame { 0x3 | (prot & 0xfff) } else { prot };
            let ok = pfn < 1 << 40 && prot & 0x000f_ffff_ffff_f000 == 0 && prot & 0x101 != 0;
            let pte = Pte::pfn_pte(Pfn::new(pfn), prot);
            check_eq(&pte.is_ok(), &ok, || format!("{}: accepted", at()))?;
            if let Ok(pte) = pte {
                check_eq(&pte.pfn(), &Pfn::new(pfn), at)?;
                check_eq(&pte.flags(), &prot, at)?;
                check_eq(&naive::pte_pfn(pte.raw()), &pfn, || {
                    format!("{}: naive pfn", at())
                })?;
                check_eq(&(pte.is_present(), pte.is_swap()), &(true, false), at)?;
                check_eq(&Softleaf::from_pte(pte), &Softleaf::NONE, at)?;
            } else {
                check_eq(&pte, &Err(Errno::EINVAL), at)?;
            }
            let huge = Pmd::huge(Pfn::new(pfn), prot);
            check_eq(&huge.is_ok(), &(ok && pfn.is_multiple_of(512)), || {
                format!("{}: huge accepted", at())
            })?;
            if let Ok(h) = huge {
                check_eq(&h.pfn(), &Pfn::new(pfn), at)?;
                check_eq(&naive::pmd_huge_pfn(h.raw()), &pfn, || {
                    format!("{}: naive pmd pfn", at())
                })?;
                check_eq(
                    &(h.is_trans_huge(), h.is_present(), h.is_table()),
                    &(true, true, false),
                    at,
                )?;
            }
            let table = Pmd::table(Pfn::new(pfn));
            check_eq(&table.is_ok(), &(pfn < 1 << 40), || {
                format!("{}: table", at())
            })?;
            if let Ok(t) = table {
                check_eq(&(t.pfn(), t.is_table()), &(Pfn::new(pfn), true), at)?;
            }
        }
        EncOp::MigratePfn {
            index,
            dp,
            flags,
            step,
            raw,
        } => {
            let idx = index.get();
            let f = frame(dp, idx);
            let m = MigratePfn::new(f);
            check_eq(&m.is_ok(), &(idx < 1 << 58), || {
                format!("{}: accepted", at())
            })?;
            if let Ok(m) = m {
                check_eq(&m.raw(), &(idx << 6 | 1 | u64::from(dp) << 5), at)?;
                check_eq(&m.frame(), &Some(f), at)?;
                check_eq(&MigratePfn::from_raw(m.raw()), &Ok(m), at)?;
                let add = u64::from(flags & 0x3f);
                let w = m.with(add);
                check_eq(&w.is_ok(), &(add & !0b1_1011 == 0), || {
                    format!("{}: with", at())
                })?;
                if let Ok(w) = w {
                    check_eq(&w.raw(), &(m.raw() | add), at)?;
                    check_eq(&w.frame(), &Some(f), at)?;
                    check_eq(&w.without(add), &m.without(add), at)?;
                    check_eq(&w.without(0x3f).raw(), &(idx << 6 | u64::from(dp) << 5), at)?;
                }
                let n = u64::from(step);
                let next = m.checked_add(PageCount::new(n));
                let want = idx.checked_add(n).filter(|&i| i < 1 << 58);
                check_eq(
                    &next.ok().and_then(MigratePfn::frame),
                    &want.map(|i| frame(dp, i)),
                    || format!("{}: step {n}", at()),
                )?;
            }
            let r = MigratePfn::from_raw(raw);
            check_eq(&r.is_ok(), &(raw & 0b100 == 0), || {
                format!("{}: from_raw", at())
            })?;
            if let Ok(r) = r {
                let want = (raw & 1 == 1).then(|| frame(raw >> 5 & 1 == 1, raw >> 6));
                check_eq(&r.frame(), &want, || format!("{}: raw frame", at()))?;
            }
        }
        EncOp::HmmPfn {
            index,
            dp,
            order,
            write,
        } => {
            let idx = index.get();
            let f = frame(dp, idx);
            let order = u32::from(order % 64);
            let o = Order::new(order).ok_or_else(|| format!("{}: order", at()))?;
            let ok = idx < 1 << 52 && order < 32;
            let h = HmmPfn::new(f, o, write);
            check_eq(&h.is_ok(), &ok, || format!("{}: accepted", at()))?;
            if let Ok(h) = h {
                let want = idx
                    | 1 << 63
                    | u64::from(write) << 62
                    | u64::from(dp) << 57
                    | u64::from(order) << 52;
                check_eq(&h.raw(), &want, || format!("{}: bits", at()))?;
                check_eq(&h.decode(), &Some((f, o, write)), at)?;
                check_eq(&h.map_order(), &o, at)?;
            }
            // Mainline: order at 53, no device-private bit.
            let l = HmmPfnLayout::MAINLINE;
            let e = l.encode(f, o, write);
            check_eq(&e.is_ok(), &(idx < 1 << 53 && order < 32 && !dp), || {
                format!("{}: mainline accepted", at())
            })?;
            if let Ok(v) = e {
                check_eq(&l.decode(v), &Some((f, o, write)), || {
                    format!("{}: mainline", at())
                })?;
            }
            // v1: order at 53 overlaps DEVICE_PRIVATE at 57 (hazard H9).
            let l = HmmPfnLayout::V1_COLLIDING;
            if let Ok(v) = l.encode(f, o, write) {
                let dp2 = dp || order >= 16;
                let o2 = Order::new(order | if dp { 16 } else { 0 })
                    .ok_or_else(|| format!("{}: order", at()))?;
                check_eq(&l.decode(v), &Some((frame(dp2, idx), o2, write)), || {
                    format!("{}: v1 collision", at())
                })?;
            }
        }
        EncOp::PvmwV2 { index, dp } => {
            let idx = index.get();
            let f = frame(dp, idx);
            let v = PvmwPfnV2::encode(f);
            check_eq(&v.is_ok(), &(idx < 1 << 63), || {
                format!("{}: accepted", at())
            })?;
            if let Ok(v) = v {
                check_eq(&v.raw(), &(idx << 1 | u64::from(dp)), at)?;
                check_eq(&v.frame(), &f, at)?;
            }
        }
    }
    Ok(())
}
