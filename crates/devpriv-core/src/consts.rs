//! Page-size, folio-order and physical-address-width constants (x86-64).
//!
//! Kernel: `arch/x86/include/asm/page_types.h`, `include/linux/huge_mm.h`,
//! `include/linux/mmzone.h`, `arch/x86/include/asm/sparsemem.h`,
//! `include/linux/swapops.h` (`SWP_PFN_BITS`, main).

/// log2 of the page size.
///
/// Kernel: `PAGE_SHIFT`, `arch/x86/include/asm/page_types.h` (main).
pub const PAGE_SHIFT: u32 = 12;

/// Bytes in a page (4 KiB).
///
/// Kernel: `PAGE_SIZE`, `arch/x86/include/asm/page_types.h` (main).
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

/// Mask that clears the offset within a page.
///
/// Kernel: `PAGE_MASK`, `arch/x86/include/asm/page_types.h` (main).
pub const PAGE_MASK: u64 = !(PAGE_SIZE - 1);

/// log2 of the bytes a PMD entry maps (2 MiB).
///
/// Kernel: `PMD_SHIFT`, `arch/x86/include/asm/pgtable_64_types.h` (main).
pub const PMD_SHIFT: u32 = 21;

/// Bytes a PMD entry maps (2 MiB).
///
/// Kernel: `PMD_SIZE`, `arch/x86/include/asm/pgtable_64_types.h` (main).
pub const PMD_SIZE: u64 = 1 << PMD_SHIFT;

/// Mask that clears the offset within a PMD-mapped range.
///
/// Kernel: `PMD_MASK`, `arch/x86/include/asm/pgtable_64_types.h` (main).
pub const PMD_MASK: u64 = !(PMD_SIZE - 1);

/// log2 of the bytes a PUD entry maps (1 GiB).
///
/// Kernel: `PUD_SHIFT`, `arch/x86/include/asm/pgtable_64_types.h` (main).
pub const PUD_SHIFT: u32 = 30;

/// Bytes a PUD entry maps (1 GiB).
///
/// Kernel: `PUD_SIZE`, `arch/x86/include/asm/pgtable_64_types.h` (main).
pub const PUD_SIZE: u64 = 1 << PUD_SHIFT;

/// Mask that clears the offset within a PUD-mapped range.
///
/// Kernel: `PUD_MASK`, `arch/x86/include/asm/pgtable_64_types.h` (main).
pub const PUD_MASK: u64 = !(PUD_SIZE - 1);

/// log2 of the bytes a top-level (PGD) entry maps with 4-level paging
/// (512 GiB).
///
/// Kernel: `PGDIR_SHIFT`, `arch/x86/include/asm/pgtable_64_types.h` (main).
///
/// # Differences from the kernel
///
/// The 4-level value only; with 5-level paging the kernel's is 48 (and
/// `P4D_SHIFT` is 39).
pub const PGDIR_SHIFT: u32 = 39;

/// Bytes a top-level (PGD) entry maps with 4-level paging (512 GiB).
///
/// Kernel: `PGDIR_SIZE`, `arch/x86/include/asm/pgtable_64_types.h` (see
/// [`PGDIR_SHIFT`], main).
pub const PGDIR_SIZE: u64 = 1 << PGDIR_SHIFT;

/// Order of a PMD-sized (transparent huge) folio.
///
/// Kernel: `HPAGE_PMD_ORDER`, `include/linux/huge_mm.h` (main).
pub const HPAGE_PMD_ORDER: u32 = PMD_SHIFT - PAGE_SHIFT;

/// Pages in a PMD-sized folio (512).
///
/// Kernel: `HPAGE_PMD_NR`, `include/linux/huge_mm.h` (main).
pub const HPAGE_PMD_NR: u64 = 1 << HPAGE_PMD_ORDER;

/// Bytes in a PMD-sized folio (2 MiB).
///
/// Kernel: `HPAGE_PMD_SIZE`, `include/linux/huge_mm.h` (main).
pub const HPAGE_PMD_SIZE: u64 = 1 << PMD_SHIFT;

/// Entries in one page table (PTE or PMD level).
///
/// Kernel: `PTRS_PER_PTE`, `arch/x86/include/asm/pgtable_64_types.h` (main).
pub const PTRS_PER_PTE: u64 = 512;

/// Largest buddy-allocator order on x86 with the default configuration.
///
/// Kernel: `MAX_PAGE_ORDER`, `include/linux/mmzone.h` (main).
pub const MAX_PAGE_ORDER: u32 = 10;

/// Pages in a `MAX_PAGE_ORDER` block (1024).
///
/// Kernel: `MAX_ORDER_NR_PAGES`, `include/linux/mmzone.h` (main). Note that
/// `zone_device_page_init()` compares an *order* against this page count
/// (hazard H17).
pub const MAX_ORDER_NR_PAGES: u64 = 1 << MAX_PAGE_ORDER;

/// `PUD_SHIFT - PAGE_SHIFT`: the order of a 1 GiB folio (18).
///
/// Kernel: `PUD_ORDER`, `include/linux/pgtable.h` (main).
pub const PUD_ORDER: u32 = PUD_SHIFT - PAGE_SHIFT;

/// Largest folio order on x86-64 with `CONFIG_ZONE_DEVICE` and
/// `CONFIG_HUGETLB_PAGE` (a distro configuration): 22, a 16 GiB folio.
///
/// Kernel: `MAX_FOLIO_ORDER`, `include/linux/mm.h` (7.0). `ZONE_DEVICE` with
/// PUD THP selects `CONFIG_HAVE_GIGANTIC_FOLIOS`, so it is not
/// `MAX_PAGE_ORDER`; with `CONFIG_HUGETLB_PAGE` (and `SPARSEMEM_VMEMMAP`) it
/// is `get_order(SZ_16G)` = 22, without it `PUD_ORDER` = 18
/// ([`MAX_FOLIO_ORDER_NO_HUGETLB`]). `MAX_PAGE_ORDER` (10) applies only
/// with neither gigantic hugetlb pages nor `ZONE_DEVICE`.
///
/// # Differences from the kernel
///
/// A fixed value for the common configuration, not a build setting; the
/// model only uses it in `folio_set_order()`'s debug `WARN`.
pub const MAX_FOLIO_ORDER: u32 = 34 - PAGE_SHIFT;

/// `MAX_FOLIO_ORDER` on x86-64 with `CONFIG_ZONE_DEVICE` but without
/// `CONFIG_HUGETLB_PAGE`: `PUD_ORDER` (18).
///
/// Kernel: `MAX_FOLIO_ORDER`, `include/linux/mm.h` (7.0, the `PUD_ORDER`
/// branch).
pub const MAX_FOLIO_ORDER_NO_HUGETLB: u32 = PUD_ORDER;

/// `MAX_PHYSMEM_BITS` with 4-level paging on x86-64.
///
/// Kernel: `MAX_PHYSMEM_BITS`, `arch/x86/include/asm/sparsemem.h` (main).
pub const MAX_PHYSMEM_BITS_4LEVEL: u32 = 46;

/// `MAX_PHYSMEM_BITS` with 5-level paging (LA57) on x86-64.
///
/// Kernel: `MAX_PHYSMEM_BITS`, `arch/x86/include/asm/sparsemem.h` (main).
pub const MAX_PHYSMEM_BITS_5LEVEL: u32 = 52;

/// The paging mode, which decides `MAX_PHYSMEM_BITS` at run time.
///
/// Kernel: `pgtable_l5_enabled()`; `MAX_PHYSMEM_BITS` is
/// `pgtable_l5_enabled() ? 52 : 46` on x86-64 (main).
///
/// # Differences from the kernel
///
/// The kernel decides this once at boot, in a global. The model has no
/// process globals: each `DevicePrivateSpace` (and each encoder that needs
/// `SWP_PFN_BITS`) carries its own `PagingMode`. The default is 4-level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PagingMode {
    /// 4-level paging: 46 physical-address bits.
    #[default]
    FourLevel,
    /// 5-level paging: 52 physical-address bits.
    FiveLevel,
}

impl PagingMode {
    /// Physical-address bits for this mode (46 or 52).
    ///
    /// Kernel: `MAX_PHYSMEM_BITS` (main).
    pub const fn max_physmem_bits(self) -> u32 {
        match self {
            PagingMode::FourLevel => MAX_PHYSMEM_BITS_4LEVEL,
            PagingMode::FiveLevel => MAX_PHYSMEM_BITS_5LEVEL,
        }
    }

    /// Bits of a pfn (or device-private offset) that fit in a swap entry:
    /// 34 with 4-level paging, 40 with 5-level.
    ///
    /// Kernel: `SWP_PFN_BITS = MAX_PHYSMEM_BITS - PAGE_SHIFT`,
    /// `include/linux/swapops.h` (main).
    pub const fn swp_pfn_bits(self) -> u32 {
        self.max_physmem_bits() - PAGE_SHIFT
    }

    /// Mask of the pfn field of a swap entry.
    ///
    /// Kernel: `SWP_PFN_MASK`, `include/linux/swapops.h` (main).
    pub const fn swp_pfn_mask(self) -> u64 {
        (1 << self.swp_pfn_bits()) - 1
    }

    /// Size of the physical (and device-private) address space in bytes:
    /// `1 << MAX_PHYSMEM_BITS`.
    ///
    /// Kernel: the `max` passed to `mtree_alloc_range()` by
    /// `memremap_device_private_pagemap()` (an inclusive bound there, v6).
    pub const fn physmem_size(self) -> u64 {
        1 << self.max_physmem_bits()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn derived_constants_match_the_kernel() {
        assert_eq!(PAGE_SIZE, 4096);
        assert_eq!(HPAGE_PMD_ORDER, 9);
        assert_eq!(HPAGE_PMD_NR, 512);
        assert_eq!(HPAGE_PMD_SIZE, 2 << 20);
        assert_eq!(MAX_ORDER_NR_PAGES, 1024);
        // x86-64 with ZONE_DEVICE: gigantic folios, 16 GiB with hugetlb,
        // 1 GiB without.
        assert_eq!(MAX_FOLIO_ORDER, 22);
        assert_eq!(PAGE_SIZE << MAX_FOLIO_ORDER, 16 << 30);
        assert_eq!(MAX_FOLIO_ORDER_NO_HUGETLB, 18);
        assert_eq!(PAGE_SIZE << MAX_FOLIO_ORDER_NO_HUGETLB, PUD_SIZE);
        assert_eq!(PAGE_MASK, 0xffff_ffff_ffff_f000);
        assert_eq!(PMD_SIZE, 2 << 20);
        assert_eq!(PMD_MASK, 0xffff_ffff_ffe0_0000);
        assert_eq!(PUD_SIZE, 1 << 30);
        assert_eq!(PUD_MASK, 0xffff_ffff_c000_0000);
        assert_eq!(PGDIR_SIZE, 512 << 30);
        assert_eq!(PMD_SIZE, HPAGE_PMD_SIZE);
        assert_eq!(PTRS_PER_PTE * PAGE_SIZE, PMD_SIZE);
        assert_eq!(PTRS_PER_PTE * PMD_SIZE, PUD_SIZE);
    }

    #[test]
    fn swp_pfn_bits_follow_the_paging_mode() {
        assert_eq!(PagingMode::default(), PagingMode::FourLevel);
        assert_eq!(PagingMode::FourLevel.swp_pfn_bits(), 34);
        assert_eq!(PagingMode::FiveLevel.swp_pfn_bits(), 40);
        assert_eq!(PagingMode::FourLevel.swp_pfn_mask(), (1 << 34) - 1);
        // The largest page-aligned offset below `1 << MAX_PHYSMEM_BITS` bytes
        // is exactly SWP_PFN_MASK (hazard H14, docs/hazards.md).
        let m = PagingMode::FourLevel;
        assert_eq!(
            (m.physmem_size() - PAGE_SIZE) >> PAGE_SHIFT,
            m.swp_pfn_mask()
        );
    }
}
