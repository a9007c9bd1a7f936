//! x86-64 PTE and PMD values, bit-exact.
//!
//! Kernel: `arch/x86/include/asm/pgtable_types.h` (`_PAGE_BIT_*`),
//! `arch/x86/include/asm/pgtable.h` (`pte_present()`, `pte_pfn()`,
//! `pfn_pte()`, protnone inversion), `arch/x86/include/asm/pgtable_64.h`
//! (`__swp_entry()`, `SWP_OFFSET_FIRST_BIT`), `include/linux/swapops.h`
//! (`swp_entry_to_pte()`, `pte_to_swp_entry()`); the page-table geometry
//! of `arch/x86/include/asm/pgtable_64_types.h` (`PMD_SIZE`, `PUD_SHIFT`,
//! `PGDIR_SHIFT`) and `include/linux/pgtable.h` (`pte_index()`, ..., main).
//!
//! Present entries hold a pfn in bits 12–51 and flags around it. Non-present
//! ("swap") entries hold the swap type in bits 59–63 and the swap offset
//! **bit-inverted** in bits 9–58; bits 1–3 carry the soft-dirty, uffd-wp and
//! anon-exclusive markers and are not part of the swap entry:
//!
//! ```text
//!  63    59 58                                            9 8 7 6 5 4 3 2 1 0
//! [ type  ][               ~offset (50 bits)              ][0|0|.|.|.|E|U|S|0]
//! ```
//!
//! PMD swap entries use the same layout. A PMD that points to a PTE table is
//! "present, not PSE", with the table's frame in the pfn field.

use crate::leafops::Softleaf;
use core::fmt;
use devpriv_core::consts::{PMD_SHIFT, PTRS_PER_PTE};
use devpriv_core::{Errno, HPAGE_PMD_NR, PAGE_SHIFT, PAGE_SIZE, Pfn};

// The geometry of `pgtable_64_types.h` lives in `devpriv_core::consts`,
// next to the shifts; re-exported here, where the page tables use it.
pub use devpriv_core::consts::{PGDIR_SHIFT, PGDIR_SIZE, PMD_SIZE, PUD_SHIFT, PUD_SIZE};
/// End of the user address space (4-level paging).
///
/// Kernel: `TASK_SIZE_MAX` (`(1 << 47) - PAGE_SIZE`),
/// `arch/x86/include/asm/page_64.h` (main).
pub const TASK_SIZE: u64 = (1 << 47) - PAGE_SIZE;

/// Index of `addr`'s entry in its PTE table.
///
/// Kernel: `pte_index(addr)`, `include/linux/pgtable.h` (main).
pub const fn pte_index(addr: u64) -> usize {
    ((addr >> PAGE_SHIFT) & (PTRS_PER_PTE - 1)) as usize
}

/// Index of `addr`'s entry in its PMD table.
///
/// Kernel: `pmd_index(addr)`, `include/linux/pgtable.h` (main).
pub const fn pmd_index(addr: u64) -> usize {
    ((addr >> PMD_SHIFT) & (PTRS_PER_PTE - 1)) as usize
}

/// Index of `addr`'s entry in its PUD table.
///
/// Kernel: `pud_index(addr)`, `include/linux/pgtable.h` (main).
pub const fn pud_index(addr: u64) -> usize {
    ((addr >> PUD_SHIFT) & (PTRS_PER_PTE - 1)) as usize
}

/// Index of `addr`'s entry in the PGD (4-level paging; user addresses
/// only, so at most 255).
///
/// Kernel: `pgd_index(addr)`, `include/linux/pgtable.h` (main).
pub const fn pgd_index(addr: u64) -> usize {
    (addr >> PGDIR_SHIFT) as usize
}

/// Kernel: `_PAGE_PRESENT` (bit 0, main).
pub const _PAGE_PRESENT: u64 = 1 << 0;
/// Kernel: `_PAGE_RW` (bit 1, main).
pub const _PAGE_RW: u64 = 1 << 1;
/// Kernel: `_PAGE_USER` (bit 2, main).
pub const _PAGE_USER: u64 = 1 << 2;
/// Kernel: `_PAGE_PWT` (bit 3, main).
pub const _PAGE_PWT: u64 = 1 << 3;
/// Kernel: `_PAGE_PCD` (bit 4, main).
pub const _PAGE_PCD: u64 = 1 << 4;
/// Kernel: `_PAGE_ACCESSED` (bit 5, main).
pub const _PAGE_ACCESSED: u64 = 1 << 5;
/// Kernel: `_PAGE_DIRTY` (bit 6, main).
pub const _PAGE_DIRTY: u64 = 1 << 6;
/// Kernel: `_PAGE_PSE` (bit 7): a huge (leaf) PMD (main).
pub const _PAGE_PSE: u64 = 1 << 7;
/// Kernel: `_PAGE_GLOBAL` (bit 8, main).
pub const _PAGE_GLOBAL: u64 = 1 << 8;
/// Kernel: `_PAGE_PROTNONE` (= `_PAGE_GLOBAL`, bit 8, only meaningful when
/// `_PAGE_PRESENT` is clear, main).
pub const _PAGE_PROTNONE: u64 = _PAGE_GLOBAL;
/// Kernel: `_PAGE_SPECIAL` (`_PAGE_BIT_SOFTW1`, bit 9, main).
pub const _PAGE_SPECIAL: u64 = 1 << 9;
/// Kernel: `_PAGE_UFFD_WP` (`_PAGE_BIT_SOFTW2`, bit 10, main).
pub const _PAGE_UFFD_WP: u64 = 1 << 10;
/// Kernel: `_PAGE_SOFT_DIRTY` (`_PAGE_BIT_SOFTW3`, bit 11, main).
pub const _PAGE_SOFT_DIRTY: u64 = 1 << 11;
/// Kernel: `_PAGE_SAVED_DIRTY` (`_PAGE_BIT_SOFTW5`, bit 58 on x86-64): the
/// dirty bit of a shadow-stack-capable leaf, tested by `pte_dirty()`. In a
/// swap PTE the same bit is the inverted top bit of the offset (main).
pub const _PAGE_SAVED_DIRTY: u64 = 1 << 58;
/// Kernel: `_PAGE_NX` (bit 63, main).
pub const _PAGE_NX: u64 = 1 << 63;

/// Soft-dirty marker of a swap PTE (bit 1, aliases `_PAGE_RW`).
///
/// Kernel: `_PAGE_SWP_SOFT_DIRTY` (main).
pub const _PAGE_SWP_SOFT_DIRTY: u64 = _PAGE_RW;
/// Uffd-wp marker of a swap PTE (bit 2, aliases `_PAGE_USER`).
///
/// Kernel: `_PAGE_SWP_UFFD_WP` (main).
pub const _PAGE_SWP_UFFD_WP: u64 = _PAGE_USER;
/// Anon-exclusive marker of a swap PTE (bit 3, aliases `_PAGE_PWT`).
///
/// Kernel: `_PAGE_SWP_EXCLUSIVE` (main).
pub const _PAGE_SWP_EXCLUSIVE: u64 = _PAGE_PWT;
/// The three swap-PTE marker bits, which are not part of the swap entry.
///
/// Kernel: what `pte_swp_clear_flags()` clears (main).
pub const SWP_PTE_FLAG_BITS: u64 = _PAGE_SWP_SOFT_DIRTY | _PAGE_SWP_UFFD_WP | _PAGE_SWP_EXCLUSIVE;

/// Physical-address bits a PTE can hold.
///
/// Kernel: `__PHYSICAL_MASK_SHIFT` (52), `arch/x86/include/asm/page_64_types.h` (main).
pub const PHYSICAL_MASK_SHIFT: u32 = 52;
/// Mask of the pfn field of a PTE (bits 12–51).
///
/// Kernel: `PTE_PFN_MASK`, `arch/x86/include/asm/pgtable_types.h` (main).
pub const PTE_PFN_MASK: u64 = ((1 << PHYSICAL_MASK_SHIFT) - 1) & !((1 << PAGE_SHIFT) - 1);
/// Mask of the pfn field of a huge PMD (bits 21–51; bit 12 is `PAT_LARGE`).
///
/// Kernel: `PHYSICAL_PMD_PAGE_MASK` (main).
pub const PMD_PFN_MASK_HUGE: u64 = ((1 << PHYSICAL_MASK_SHIFT) - 1) & !((1 << 21) - 1);
/// Largest pfn a present PTE can hold (2^40 - 1).
///
/// Kernel: implied by `PTE_PFN_MASK` (main).
pub const MAX_PTE_PFN: u64 = (1 << (PHYSICAL_MASK_SHIFT - PAGE_SHIFT)) - 1;

/// Bits of the swap type in a swap PTE.
///
/// Kernel: `SWP_TYPE_BITS`, `arch/x86/include/asm/pgtable_64.h` (main).
pub const SWP_TYPE_BITS: u32 = 5;
/// Lowest bit of the (inverted) swap offset: `_PAGE_BIT_PROTNONE + 1`.
///
/// Kernel: `SWP_OFFSET_FIRST_BIT`, `arch/x86/include/asm/pgtable_64.h` (main).
pub const SWP_OFFSET_FIRST_BIT: u32 = 9;
/// Kernel: `SWP_OFFSET_SHIFT` (14), `arch/x86/include/asm/pgtable_64.h` (main).
pub const SWP_OFFSET_SHIFT: u32 = SWP_OFFSET_FIRST_BIT + SWP_TYPE_BITS;
/// Bits of swap offset a swap PTE can hold (50).
///
/// Kernel: `generic_max_swapfile_size()` is `1 << 50` here (before any L1TF
/// clamp, main).
pub const SWP_PTE_OFFSET_BITS: u32 = 64 - SWP_OFFSET_SHIFT;

/// Bits that must be clear in the `prot` of a present entry: the pfn field.
const PROT_FORBIDDEN: u64 = PTE_PFN_MASK;

/// The L1TF inversion mask: all ones for **any** non-zero value without
/// `_PAGE_PRESENT` (protnone entries, and swap entries too), else zero.
///
/// Kernel: `protnone_mask()` / `__pte_needs_invert()`,
/// `arch/x86/include/asm/pgtable-invert.h` (main).
const fn protnone_mask(val: u64) -> u64 {
    if val != 0 && val & _PAGE_PRESENT == 0 {
        u64::MAX
    } else {
        0
    }
}

/// Encodes a swap entry in the x86-64 swap-PTE layout; shared by PTEs and
/// PMDs.
///
/// Kernel: `__swp_entry(type, offset)` + `__swp_entry_to_pte()` (main).
const fn encode_swp(entry: Softleaf) -> Result<u64, Errno> {
    let offset = entry.swp_offset();
    if offset >> SWP_PTE_OFFSET_BITS != 0 {
        return Err(Errno::EINVAL);
    }
    let val = ((!offset) << SWP_OFFSET_SHIFT >> SWP_TYPE_BITS)
        | ((entry.swp_type() as u64) << (64 - SWP_TYPE_BITS));
    // Type 0 with an all-ones offset inverts to the empty entry.
    if val == 0 {
        return Err(Errno::EINVAL);
    }
    Ok(val)
}

/// Decodes the x86-64 swap layout into an arch-independent entry.
///
/// Kernel: `__pte_to_swp_entry()` + `swp_entry(__swp_type(), __swp_offset())` (main).
const fn decode_swp(val: u64) -> Softleaf {
    let val = val & !SWP_PTE_FLAG_BITS;
    let ty = val >> (64 - SWP_TYPE_BITS);
    let offset = (!val) << SWP_TYPE_BITS >> SWP_OFFSET_SHIFT;
    // The type is 5 bits and the offset 50, so bit 63 stays clear.
    Softleaf::from_raw_unchecked((ty << crate::swapops::SWP_TYPE_SHIFT) | offset)
}

/// A page-table entry value (x86-64).
///
/// Kernel: `pte_t`, `arch/x86/include/asm/pgtable_64_types.h` (main).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct Pte(u64);

impl fmt::Debug for Pte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_none() {
            write!(f, "Pte(none)")
        } else if self.is_present() {
            write!(f, "Pte({:#x}, pfn {:#x})", self.0, self.pfn().get())
        } else {
            write!(f, "Pte({:#x}, {:?})", self.0, self.to_swp_entry())
        }
    }
}

impl Pte {
    /// The empty PTE.
    ///
    /// Kernel: `__pte(0)` (main).
    pub const NONE: Pte = Pte(0);

    /// A PTE from its raw value (any 64-bit value is a PTE).
    ///
    /// Kernel: `__pte(val)` (main).
    pub const fn from_raw(val: u64) -> Pte {
        Pte(val)
    }

    /// The raw value.
    ///
    /// Kernel: `pte_val(pte)` (main).
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// A present PTE mapping `pfn` with protection bits `prot`.
    ///
    /// Kernel: `pfn_pte(pfn, prot)`, `arch/x86/include/asm/pgtable.h`
    /// (including the protnone inversion of the pfn field, main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `pfn` exceeds [`MAX_PTE_PFN`], if `prot` has bits
    /// in the pfn field, or if `prot` has neither `_PAGE_PRESENT` nor
    /// `_PAGE_PROTNONE` (it would not be a present entry).
    pub const fn pfn_pte(pfn: Pfn, prot: u64) -> Result<Pte, Errno> {
        if pfn.get() > MAX_PTE_PFN
            || prot & PROT_FORBIDDEN != 0
            || prot & (_PAGE_PRESENT | _PAGE_PROTNONE) == 0
        {
            return Err(Errno::EINVAL);
        }
        let field = ((pfn.get() << PAGE_SHIFT) ^ protnone_mask(prot)) & PTE_PFN_MASK;
        Ok(Pte(field | prot))
    }

    /// The flag bits (everything outside the pfn field).
    ///
    /// Kernel: `pte_flags(pte)` (main).
    pub const fn flags(self) -> u64 {
        self.0 & !PTE_PFN_MASK
    }

    /// `true` for the empty entry. Ignores the accessed and dirty bits,
    /// which a Knights Landing erratum can set on non-present entries.
    ///
    /// Kernel: `pte_none()`, `arch/x86/include/asm/pgtable.h` (main).
    pub const fn is_none(self) -> bool {
        self.0 & !(_PAGE_ACCESSED | _PAGE_DIRTY) == 0
    }

    /// `true` if present or protnone.
    ///
    /// Kernel: `pte_present()` (main).
    pub const fn is_present(self) -> bool {
        self.0 & (_PAGE_PRESENT | _PAGE_PROTNONE) != 0
    }

    /// `true` for a non-present, non-empty entry: a swap PTE.
    ///
    /// Kernel: `is_swap_pte()` (main).
    pub const fn is_swap(self) -> bool {
        !self.is_none() && !self.is_present()
    }

    /// The pfn of a present entry (undoing the protnone inversion).
    /// Meaningless for a swap entry, as in the kernel: the inversion
    /// applies to it as well, so it returns the swap offset shifted right
    /// by 3 (the offset sits inverted at bit 9), truncated to 40 bits.
    ///
    /// Kernel: `pte_pfn()`, `arch/x86/include/asm/pgtable.h` (main).
    pub const fn pfn(self) -> Pfn {
        Pfn::new(((self.0 ^ protnone_mask(self.0)) & PTE_PFN_MASK) >> PAGE_SHIFT)
    }

    /// `true` if writable.
    ///
    /// Kernel: `pte_write()` (main).
    pub const fn is_write(self) -> bool {
        self.0 & _PAGE_RW != 0
    }

    /// `true` if dirty: `_PAGE_DIRTY` or `_PAGE_SAVED_DIRTY`. Meaningless
    /// for a swap entry, as in the kernel — where it is true for every
    /// offset below 2^49, because bit 58 holds the inverted top offset bit
    /// (hazard H20).
    ///
    /// Kernel: `pte_dirty()`, `arch/x86/include/asm/pgtable.h`
    /// (`_PAGE_DIRTY_BITS`) (main).
    pub const fn is_dirty(self) -> bool {
        self.flags() & (_PAGE_DIRTY | _PAGE_SAVED_DIRTY) != 0
    }

    /// A swap PTE holding `entry`.
    ///
    /// Kernel: `swp_entry_to_pte()` / `softleaf_to_pte()` (7.0).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if the offset does not fit in the 50 bits of a swap
    /// PTE, or the result would be the empty PTE (type 0, all-ones offset).
    pub const fn from_swp_entry(entry: Softleaf) -> Result<Pte, Errno> {
        match encode_swp(entry) {
            Ok(v) => Ok(Pte(v)),
            Err(e) => Err(e),
        }
    }

    /// The swap entry of a swap PTE, with the marker bits stripped.
    /// Meaningless for a present or empty PTE (see [`Softleaf::from_pte`]).
    ///
    /// Kernel: `pte_to_swp_entry()` (with `pte_swp_clear_flags()`, main).
    pub const fn to_swp_entry(self) -> Softleaf {
        decode_swp(self.0)
    }

    /// Kernel: `pte_swp_mksoft_dirty()` (main).
    #[must_use]
    pub const fn swp_mksoft_dirty(self) -> Pte {
        Pte(self.0 | _PAGE_SWP_SOFT_DIRTY)
    }

    /// Kernel: `pte_swp_soft_dirty()` (main).
    pub const fn swp_soft_dirty(self) -> bool {
        self.0 & _PAGE_SWP_SOFT_DIRTY != 0
    }

    /// Kernel: `pte_swp_mkuffd_wp()` (main).
    #[must_use]
    pub const fn swp_mkuffd_wp(self) -> Pte {
        Pte(self.0 | _PAGE_SWP_UFFD_WP)
    }

    /// Kernel: `pte_swp_uffd_wp()` (main).
    pub const fn swp_uffd_wp(self) -> bool {
        self.0 & _PAGE_SWP_UFFD_WP != 0
    }

    /// Kernel: `pte_swp_mkexclusive()` (main).
    #[must_use]
    pub const fn swp_mkexclusive(self) -> Pte {
        Pte(self.0 | _PAGE_SWP_EXCLUSIVE)
    }

    /// Kernel: `pte_swp_exclusive()` (main).
    pub const fn swp_exclusive(self) -> bool {
        self.0 & _PAGE_SWP_EXCLUSIVE != 0
    }
}

/// A page-middle-directory entry value (x86-64): empty, a pointer to a PTE
/// table, a huge (2 MiB) leaf, or a swap entry.
///
/// Kernel: `pmd_t` (main).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct Pmd(u64);

impl fmt::Debug for Pmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_none() {
            write!(f, "Pmd(none)")
        } else if self.is_trans_huge() {
            write!(f, "Pmd({:#x}, huge pfn {:#x})", self.0, self.pfn().get())
        } else if self.is_present() {
            write!(f, "Pmd({:#x}, table)", self.0)
        } else {
            write!(f, "Pmd({:#x}, {:?})", self.0, self.to_swp_entry())
        }
    }
}

/// The flags of a PMD that points to a PTE table.
///
/// Kernel: `_PAGE_TABLE` (`_KERNPG_TABLE | _PAGE_USER`, main).
pub const _PAGE_TABLE: u64 = _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY;

impl Pmd {
    /// The empty PMD.
    ///
    /// Kernel: `__pmd(0)` (main).
    pub const NONE: Pmd = Pmd(0);

    /// A PMD from its raw value.
    ///
    /// Kernel: `__pmd(val)` (main).
    pub const fn from_raw(val: u64) -> Pmd {
        Pmd(val)
    }

    /// The raw value.
    ///
    /// Kernel: `pmd_val(pmd)` (main).
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// A PMD pointing to the PTE table in frame `table`.
    ///
    /// Kernel: `pmd_populate()` / `__pmd(_PAGE_TABLE | __pa(pte))` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `table` exceeds [`MAX_PTE_PFN`].
    pub const fn table(table: Pfn) -> Result<Pmd, Errno> {
        if table.get() > MAX_PTE_PFN {
            return Err(Errno::EINVAL);
        }
        Ok(Pmd((table.get() << PAGE_SHIFT) | _PAGE_TABLE))
    }

    /// A huge (trans-huge) PMD mapping the 512 pages from `pfn`.
    ///
    /// Kernel: `pmd_mkhuge(pfn_pmd(pfn, prot))` (main).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `pfn` is not 512-aligned (bit 12 of a huge PMD is
    /// `_PAGE_PAT_LARGE`, so C would corrupt the entry), exceeds
    /// [`MAX_PTE_PFN`], if `prot` has bits in the pfn field, or lacks both
    /// `_PAGE_PRESENT` and `_PAGE_PROTNONE`.
    pub const fn huge(pfn: Pfn, prot: u64) -> Result<Pmd, Errno> {
        if pfn.get() > MAX_PTE_PFN
            || !pfn.get().is_multiple_of(HPAGE_PMD_NR)
            || prot & PROT_FORBIDDEN != 0
            || prot & (_PAGE_PRESENT | _PAGE_PROTNONE) == 0
        {
            return Err(Errno::EINVAL);
        }
        let field = ((pfn.get() << PAGE_SHIFT) ^ protnone_mask(prot)) & PMD_PFN_MASK_HUGE;
        Ok(Pmd(field | prot | _PAGE_PSE))
    }

    /// `true` for the empty entry (ignoring accessed/dirty).
    ///
    /// Kernel: `pmd_none()` (main).
    pub const fn is_none(self) -> bool {
        self.0 & !(_PAGE_ACCESSED | _PAGE_DIRTY) == 0
    }

    /// `true` if present, protnone, or a huge leaf.
    ///
    /// Kernel: `pmd_present()`, `arch/x86/include/asm/pgtable.h` (main).
    pub const fn is_present(self) -> bool {
        self.0 & (_PAGE_PRESENT | _PAGE_PROTNONE | _PAGE_PSE) != 0
    }

    /// `true` for a huge leaf mapping.
    ///
    /// Kernel: `pmd_trans_huge()` (main).
    pub const fn is_trans_huge(self) -> bool {
        self.0 & _PAGE_PSE != 0
    }

    /// `true` for a pointer to a PTE table (present, not huge).
    ///
    /// Kernel: `!pmd_none() && pmd_present() && !pmd_trans_huge()`, what
    /// `__pte_offset_map()` accepts (main).
    pub const fn is_table(self) -> bool {
        !self.is_none() && self.is_present() && !self.is_trans_huge()
    }

    /// The pfn of a huge PMD, or the frame of the PTE table it points to.
    ///
    /// Kernel: `pmd_pfn()` (with `pmd_pfn_mask()` and protnone inversion, main).
    pub const fn pfn(self) -> Pfn {
        let mask = if self.is_trans_huge() {
            PMD_PFN_MASK_HUGE
        } else {
            PTE_PFN_MASK
        };
        Pfn::new(((self.0 ^ protnone_mask(self.0)) & mask) >> PAGE_SHIFT)
    }

    /// `true` if writable.
    ///
    /// Kernel: `pmd_write()` (main).
    pub const fn is_write(self) -> bool {
        self.0 & _PAGE_RW != 0
    }

    /// A swap PMD holding `entry`.
    ///
    /// Kernel: `swp_entry_to_pmd()` / `softleaf_to_pmd()` (7.0).
    ///
    /// # Errors
    ///
    /// As [`Pte::from_swp_entry`].
    pub const fn from_swp_entry(entry: Softleaf) -> Result<Pmd, Errno> {
        match encode_swp(entry) {
            Ok(v) => Ok(Pmd(v)),
            Err(e) => Err(e),
        }
    }

    /// The swap entry of a swap PMD, with the marker bits stripped.
    ///
    /// Kernel: `pmd_to_swp_entry()` (main).
    pub const fn to_swp_entry(self) -> Softleaf {
        decode_swp(self.0)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::swapops::{SWP_DEVICE_WRITE, swp_entry};

    #[test]
    fn present_pte_layout() {
        let pte = Pte::pfn_pte(Pfn::new(0x12345), _PAGE_PRESENT | _PAGE_RW | _PAGE_NX).unwrap();
        assert_eq!(pte.raw(), 0x8000_0000_1234_5003);
        assert_eq!(pte.pfn(), Pfn::new(0x12345));
        assert!(pte.is_present() && pte.is_write() && !pte.is_none());
        assert_eq!(
            Pte::pfn_pte(Pfn::new(MAX_PTE_PFN + 1), _PAGE_PRESENT),
            Err(Errno::EINVAL)
        );
        assert_eq!(Pte::pfn_pte(Pfn::new(1), _PAGE_RW), Err(Errno::EINVAL));
        assert_eq!(
            Pte::pfn_pte(Pfn::new(1), _PAGE_PRESENT | 1 << 12),
            Err(Errno::EINVAL)
        );
    }

    #[test]
    fn protnone_inverts_the_pfn_field() {
        let pte = Pte::pfn_pte(Pfn::new(0x10), _PAGE_PROTNONE).unwrap();
        assert!(pte.is_present());
        assert_ne!(pte.raw() & PTE_PFN_MASK, 0x10 << 12, "stored inverted");
        assert_eq!(pte.pfn(), Pfn::new(0x10));
    }

    #[test]
    fn swap_pte_layout_is_inverted() {
        let e = swp_entry(SWP_DEVICE_WRITE, 0x5).unwrap();
        let pte = Pte::from_swp_entry(e).unwrap();
        assert_eq!(pte.raw() >> 59, u64::from(SWP_DEVICE_WRITE));
        assert_eq!((pte.raw() >> 9) & ((1 << 50) - 1), !0x5 & ((1 << 50) - 1));
        assert_eq!(pte.raw() & 0x1ff, 0, "bits 0-8 clear");
        assert!(!pte.is_present() && !pte.is_none());
        assert_eq!(pte.to_swp_entry(), e);
        let marked = pte.swp_mksoft_dirty().swp_mkexclusive().swp_mkuffd_wp();
        assert!(marked.swp_soft_dirty() && marked.swp_exclusive() && marked.swp_uffd_wp());
        assert_eq!(
            marked.to_swp_entry(),
            e,
            "markers are not part of the entry"
        );
        assert_eq!(
            Pte::from_swp_entry(swp_entry(1, 1 << 50).unwrap()),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            Pte::from_swp_entry(swp_entry(0, (1 << 50) - 1).unwrap()),
            Err(Errno::EINVAL),
            "would encode as pte_none"
        );
    }

    #[test]
    fn pmd_kinds() {
        let huge = Pmd::huge(Pfn::new(1024), _PAGE_PRESENT | _PAGE_RW).unwrap();
        assert!(huge.is_trans_huge() && huge.is_present() && !huge.is_table());
        assert_eq!(huge.pfn(), Pfn::new(1024));
        assert_eq!(Pmd::huge(Pfn::new(1025), _PAGE_PRESENT), Err(Errno::EINVAL));
        let table = Pmd::table(Pfn::new(77)).unwrap();
        assert!(table.is_table() && !table.is_trans_huge());
        assert_eq!(table.pfn(), Pfn::new(77));
        let swp = Pmd::from_swp_entry(swp_entry(SWP_DEVICE_WRITE, 512).unwrap()).unwrap();
        assert!(!swp.is_present() && !swp.is_none() && !swp.is_trans_huge());
        assert!(Pmd::NONE.is_none());
    }
}
