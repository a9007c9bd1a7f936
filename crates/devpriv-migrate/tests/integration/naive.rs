//! The oracle: a literal transcription of the kernel's branch logic on raw
//! `u64` values and flag bits, sharing no decoding code with the crate.
//!
//! Kernel: `check_pte()`, `check_pmd()`, the PMD branches of
//! `page_vma_mapped_walk()`, `mm/page_vma_mapped.c` (v6 proposal), and the
//! x86-64 `pte_present()` / `__pte_to_swp_entry()` bit layout.

pub(crate) const PVMW_MIGRATION: u32 = 1 << 1;
pub(crate) const PVMW_DEVICE_PRIVATE: u32 = 1 << 2;
pub(crate) const HPAGE_PMD_NR: u64 = 512;

/// `pte_present()`: `_PAGE_PRESENT | _PAGE_PROTNONE`.
pub(crate) fn present(v: u64) -> bool {
    v & (1 | 0x100) != 0
}

/// `pte_none()`: ignoring A and D.
pub(crate) fn none(v: u64) -> bool {
    v & !0x60 == 0
}

/// `pte_pfn()` for a non-protnone present entry.
pub(crate) fn pte_pfn(v: u64) -> u64 {
    (v & 0x000f_ffff_ffff_f000) >> 12
}

/// `softleaf_from_pte()`: (type, offset), or None for a none/present PTE.
pub(crate) fn softleaf(v: u64) -> Option<(u64, u64)> {
    if present(v) || none(v) {
        return None;
    }
    let v = v & !0xe;
    Some((v >> 59, (!v << 5) >> 14))
}

pub(crate) fn is_migration(t: u64) -> bool {
    matches!(t, 22..=24 | 28..=30)
}
pub(crate) fn is_migration_device_private(t: u64) -> bool {
    matches!(t, 28..=30)
}
pub(crate) fn is_device_private(t: u64) -> bool {
    matches!(t, 25 | 26)
}
pub(crate) fn is_device_exclusive(t: u64) -> bool {
    t == 27
}

/// The kernel's overlap test, with C's unsigned arithmetic.
pub(crate) fn overlap(pfn: u64, n: u64, pvmw_pfn: u64, nr_pages: u64) -> bool {
    if pfn.wrapping_add(n).wrapping_sub(1) < pvmw_pfn {
        return false;
    }
    if pfn > pvmw_pfn.wrapping_add(nr_pages).wrapping_sub(1) {
        return false;
    }
    true
}

/// `check_pte(pvmw, pte_nr)` after v6 13/13. `with_dp_check = false`
/// gives mainline 7.0 (no device-private comparison): the buggy variant
/// for hazard H7.
pub(crate) fn check_pte(
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
pub(crate) fn check_pmd(
    pfn: u64,
    device_private: bool,
    pvmw_pfn: u64,
    nr_pages: u64,
    flags: u32,
) -> bool {
    if device_private != (flags & PVMW_DEVICE_PRIVATE != 0) {
        return false;
    }
    overlap(pfn, HPAGE_PMD_NR, pvmw_pfn, nr_pages)
}

/// The result of `page_vma_mapped_walk()` when the address holds the PMD
/// `pmde` (no PTE table) and nothing else is mapped: the PMD branches
/// transcribed. `thp_migration` is `thp_migration_supported()`.
pub(crate) fn walk_pmd_branch(
    pmde: u64,
    pvmw_pfn: u64,
    nr_pages: u64,
    flags: u32,
    swp_pfn_bits: u32,
    thp_migration: bool,
) -> bool {
    let mask = (1u64 << swp_pfn_bits) - 1;
    let pse = pmde & 0x80 != 0;
    let pmd_present = pmde & (1 | 0x100 | 0x80) != 0;
    let entry = if pmd_present || none(pmde) {
        None
    } else {
        softleaf(pmde)
    };
    let is_mig = entry.is_some_and(|(t, _)| is_migration(t));
    if pse || is_mig {
        if !pmd_present {
            if !thp_migration || flags & PVMW_MIGRATION == 0 {
                return false;
            }
            let (t, off) = entry.unwrap();
            let dp = is_device_private(t) || is_migration_device_private(t);
            return is_migration(t) && check_pmd(off & mask, dp, pvmw_pfn, nr_pages, flags);
        }
        if flags & PVMW_MIGRATION != 0 {
            return false;
        }
        return check_pmd(
            (pmde & 0x000f_ffff_ffe0_0000) >> 12,
            false,
            pvmw_pfn,
            nr_pages,
            flags,
        );
    }
    if !pmd_present {
        // Device-private PMD: true, unconditionally (H13).
        return entry.is_some_and(|(t, _)| is_device_private(t));
    }
    unreachable!("a table pointer is not a PMD-branch case")
}
