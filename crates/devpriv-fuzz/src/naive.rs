//! The naive oracle for `check_pte()`, `check_pmd()` and the PMD branches
//! of `page_vma_mapped_walk()`: a literal transcription of the kernel's
//! branch logic on raw `u64` values and flag bits, sharing no decoding
//! code with `devpriv-migrate`.
//!
//! Kernel: `check_pte()`, `check_pmd()`, the PMD branches of
//! `page_vma_mapped_walk()`, `mm/page_vma_mapped.c` (v6 proposal), and the
//! x86-64 `pte_present()` / `pte_pfn()` / `pmd_pfn()` /
//! `__pte_to_swp_entry()` bit layout.
//!
//! The one copy: `devpriv-migrate`'s integration tests include this file
//! by path (`devpriv-migrate` cannot depend on this crate, which depends on
//! it), so it uses nothing but `core`. For arbitrary raw values, C's
//! wrapping overlap is paired with an exact one ([`overlap_exact`]).

/// Kernel: `PVMW_MIGRATION` (main).
pub const PVMW_MIGRATION: u32 = 1 << 1;
/// Kernel: `PVMW_DEVICE_PRIVATE` (v6 05/13).
pub const PVMW_DEVICE_PRIVATE: u32 = 1 << 2;
/// Kernel: `HPAGE_PMD_NR` (main).
pub const HPAGE_PMD_NR: u64 = 512;

/// `pte_present()`: `_PAGE_PRESENT | _PAGE_PROTNONE`.
///
/// Kernel: `pte_present()`, `arch/x86/include/asm/pgtable.h` (main).
pub fn present(v: u64) -> bool {
    v & (1 | 0x100) != 0
}

/// `pte_none()`: ignoring A and D.
///
/// Kernel: `pte_none()` (main).
pub fn none(v: u64) -> bool {
    v & !0x60 == 0
}

/// All ones for any non-zero value without `_PAGE_PRESENT` (protnone and
/// swap entries alike).
///
/// Kernel: `protnone_mask()` / `__pte_needs_invert()`,
/// `arch/x86/include/asm/pgtable-invert.h` (main).
pub fn protnone_mask(v: u64) -> u64 {
    if v != 0 && v & 1 == 0 { u64::MAX } else { 0 }
}

/// `pte_pfn()` of a present entry.
///
/// Kernel: `pte_pfn()` (main).
pub fn pte_pfn(v: u64) -> u64 {
    ((v ^ protnone_mask(v)) & 0x000f_ffff_ffff_f000) >> 12
}

/// `pmd_pfn()` of a huge PMD.
///
/// Kernel: `pmd_pfn()` with `pmd_pfn_mask()` for `_PAGE_PSE` (main).
pub fn pmd_huge_pfn(v: u64) -> u64 {
    ((v ^ protnone_mask(v)) & 0x000f_ffff_ffe0_0000) >> 12
}

/// `softleaf_from_pte()`: (type, offset), or `None` for a none or present
/// PTE.
///
/// Kernel: `softleaf_from_pte()` / `__pte_to_swp_entry()` (7.0).
pub fn softleaf(v: u64) -> Option<(u64, u64)> {
    if present(v) || none(v) {
        return None;
    }
    let v = v & !0xe;
    Some((v >> 59, (!v << 5) >> 14))
}

/// Types 22–24 and 28–30: every migration entry (the v6 proposal's "is-a").
///
/// Kernel: `softleaf_is_migration()` (7.0).
pub fn is_migration(t: u64) -> bool {
    matches!(t, 22..=24 | 28..=30)
}

/// Types 28–30.
///
/// Kernel: `softleaf_is_migration_device_private()` (v6).
pub fn is_migration_device_private(t: u64) -> bool {
    matches!(t, 28..=30)
}

/// Types 25, 26.
///
/// Kernel: `softleaf_is_device_private()` (7.0).
pub fn is_device_private(t: u64) -> bool {
    matches!(t, 25 | 26)
}

/// Type 27.
///
/// Kernel: `softleaf_is_device_exclusive()` (7.0).
pub fn is_device_exclusive(t: u64) -> bool {
    t == 27
}

/// The kernel's overlap test, with C's unsigned (wrapping) arithmetic.
///
/// Kernel: the tail of `check_pte()` / `check_pmd()` (v6).
pub fn overlap(pfn: u64, n: u64, pvmw_pfn: u64, nr_pages: u64) -> bool {
    if pfn.wrapping_add(n).wrapping_sub(1) < pvmw_pfn {
        return false;
    }
    if pfn > pvmw_pfn.wrapping_add(nr_pages).wrapping_sub(1) {
        return false;
    }
    true
}

/// `true` if `[pfn, pfn + n)` and `[pvmw_pfn, pvmw_pfn + nr_pages)` share
/// a page, in exact (`u128`) arithmetic. Equals [`overlap`] whenever
/// neither range wraps past `u64::MAX`.
///
/// Kernel: none (model only).
pub fn overlap_exact(pfn: u64, n: u64, pvmw_pfn: u64, nr_pages: u64) -> bool {
    let (a, an, b, bn) = (
        u128::from(pfn),
        u128::from(n),
        u128::from(pvmw_pfn),
        u128::from(nr_pages),
    );
    an > 0 && bn > 0 && a < b + bn && b < a + an
}

/// `true` if C's arithmetic in [`overlap`] does not wrap for these values.
///
/// Kernel: none (model only).
pub fn overlap_is_exact(pfn: u64, n: u64, pvmw_pfn: u64, nr_pages: u64) -> bool {
    n > 0
        && nr_pages > 0
        && pfn.checked_add(n - 1).is_some()
        && pvmw_pfn.checked_add(nr_pages - 1).is_some()
}

/// `check_pte(pvmw, pte_nr)` after v6 13/13. `with_dp_check = false`
/// gives mainline 7.0 (no device-private comparison): the buggy variant
/// for hazard H7.
///
/// Kernel: `check_pte()`, `mm/page_vma_mapped.c` (v6).
pub fn check_pte(
    ptent: u64,
    pte_nr: u64,
    pvmw_pfn: u64,
    nr_pages: u64,
    flags: u32,
    swp_pfn_bits: u32,
    with_dp_check: bool,
) -> bool {
    let mask = (1u64 << swp_pfn_bits) - 1;
    let mut device_private = false;
    let pfn;
    if flags & PVMW_MIGRATION != 0 {
        let Some((t, off)) = softleaf(ptent) else {
            return false;
        };
        if !is_migration(t) {
            return false;
        }
        if is_migration_device_private(t) {
            device_private = true;
        }
        pfn = off & mask;
    } else if present(ptent) {
        pfn = pte_pfn(ptent);
    } else {
        let Some((t, off)) = softleaf(ptent) else {
            return false;
        };
        if !is_device_private(t) && !is_device_exclusive(t) {
            return false;
        }
        pfn = off & mask;
        device_private = is_device_private(t);
    }
    if with_dp_check && device_private != (flags & PVMW_DEVICE_PRIVATE != 0) {
        return false;
    }
    overlap(pfn, pte_nr, pvmw_pfn, nr_pages)
}

/// `check_pmd(pfn, device_private, pvmw)` after v6 13/13.
///
/// Kernel: `check_pmd()`, `mm/page_vma_mapped.c` (v6).
pub fn check_pmd(pfn: u64, device_private: bool, pvmw_pfn: u64, nr_pages: u64, flags: u32) -> bool {
    if device_private != (flags & PVMW_DEVICE_PRIVATE != 0) {
        return false;
    }
    overlap(pfn, HPAGE_PMD_NR, pvmw_pfn, nr_pages)
}

/// The result of `page_vma_mapped_walk()` when the address holds the PMD
/// `pmde` (no PTE table) and nothing else is mapped: the PMD branches
/// transcribed. `thp_migration` is `thp_migration_supported()`; `fixed`
/// picks the walker after the CVE-2026-68163 fix ("`mm/page_vma_mapped`: fix
/// device-private PMD handling"), else 7.0's (hazard H13). `None` for a
/// PMD that points to a PTE table (not a PMD-branch case).
///
/// Kernel: `page_vma_mapped_walk()`, `mm/page_vma_mapped.c` (7.0).
pub fn walk_pmd_branch(
    pmde: u64,
    pvmw_pfn: u64,
    nr_pages: u64,
    flags: u32,
    swp_pfn_bits: u32,
    thp_migration: bool,
    fixed: bool,
) -> Option<bool> {
    let mask = (1u64 << swp_pfn_bits) - 1;
    let pse = pmde & 0x80 != 0;
    let pmd_present = pmde & (1 | 0x100 | 0x80) != 0;
    let entry = if pmd_present || none(pmde) {
        None
    } else {
        softleaf(pmde)
    };
    let is_mig = entry.is_some_and(|(t, _)| is_migration(t));
    let is_dp = entry.is_some_and(|(t, _)| is_device_private(t));
    if fixed {
        if pse || is_mig || is_dp {
            if is_mig {
                if !thp_migration || flags & PVMW_MIGRATION == 0 {
                    return Some(false);
                }
                let (t, off) = entry?;
                let dp = is_migration_device_private(t);
                return Some(check_pmd(off & mask, dp, pvmw_pfn, nr_pages, flags));
            } else if is_dp {
                if flags & PVMW_MIGRATION != 0 {
                    return Some(false);
                }
                let (_, off) = entry?;
                return Some(check_pmd(off & mask, true, pvmw_pfn, nr_pages, flags));
            } else if !pmd_present {
                return Some(false);
            }
            if flags & PVMW_MIGRATION != 0 {
                return Some(false);
            }
            return Some(check_pmd(
                pmd_huge_pfn(pmde),
                false,
                pvmw_pfn,
                nr_pages,
                flags,
            ));
        }
        if !pmd_present {
            return Some(false);
        }
        return None;
    }
    if pse || is_mig {
        if !pmd_present {
            if !thp_migration || flags & PVMW_MIGRATION == 0 {
                return Some(false);
            }
            let (t, off) = entry?;
            let dp = is_device_private(t) || is_migration_device_private(t);
            return Some(is_migration(t) && check_pmd(off & mask, dp, pvmw_pfn, nr_pages, flags));
        }
        if flags & PVMW_MIGRATION != 0 {
            return Some(false);
        }
        return Some(check_pmd(
            pmd_huge_pfn(pmde),
            false,
            pvmw_pfn,
            nr_pages,
            flags,
        ));
    }
    if !pmd_present {
        // 7.0: a device-private PMD matches, unconditionally (H13).
        return Some(is_dp);
    }
    None
}
