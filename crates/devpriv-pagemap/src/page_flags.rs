//! Page flag bits, with the kernel's numbers, and the fields above them.
//!
//! Kernel: `enum pageflags`, `include/linux/page-flags.h` (7.0), and the
//! node, zone and `LAST_CPUPID` fields of `page->flags`
//! (`include/linux/page-flags-layout.h`, `include/linux/mm.h`).
//!
//! The bit numbers are exact, because the reuse hazards depend on them
//! (`docs/hazards.md`): the folio order is stored in the low byte of the
//! second page's flags, so a stale order 9 (`0b1001`) reads as `PG_locked |
//! PG_uptodate` on a reused page (hazard H1).
//!
//! # The fields at the top
//!
//! `page->flags` is `| [SECTION] | [NODE] | ZONE | [LAST_CPUPID] | ... |
//! FLAGS |`, each field below the previous one. The model fixes the
//! configuration of an x86-64 distro kernel with device-private memory:
//! `SPARSEMEM_VMEMMAP` (no section field), `NODES_SHIFT` 10, five zones
//! (`ZONE_DEVICE` makes `ZONES_SHIFT` 3), `NR_CPUS` 8192 (13 bits) and
//! `CONFIG_NUMA_BALANCING=y`, so that `LAST_CPUPID` (8 PID bits + 13 CPU
//! bits) fits in the word:
//!
//! | bits | field |
//! |---|---|
//! | 54–63 | node ([`NODES_PGSHIFT`], [`NODES_WIDTH`]) |
//! | 51–53 | zone ([`ZONES_PGSHIFT`], [`ZONES_WIDTH`]) |
//! | 30–50 | `LAST_CPUPID` ([`LAST_CPUPID_PGSHIFT`], [`LAST_CPUPID_WIDTH`]), all ones after `page_cpupid_reset_last()` |
//! | 0–21 | the `PG_*` bits below |
//!
//! # Differences from the kernel
//!
//! - The positions are those of the configuration above, not computed
//!   from a configuration. Kernels with fewer CPUs (a smaller `NR_CPUS`)
//!   have a narrower `LAST_CPUPID` field, and kernels where it does not fit
//!   keep it in `page->_last_cpupid` instead; node and zone stay at the top
//!   either way.
//! - No `KASAN_TAG`, `LRU_GEN` or `LRU_REFS` fields (device-private pages
//!   are never on an LRU; the kernel's fields are zero for them).

/// Page is locked (bit 0). The folio order's bit 0 aliases it on page\[1\].
///
/// Kernel: `PG_locked` (main).
pub const PG_LOCKED: u32 = 0;
/// Kernel: `PG_writeback` (main).
pub const PG_WRITEBACK: u32 = 1;
/// Kernel: `PG_referenced` (main).
pub const PG_REFERENCED: u32 = 2;
/// Kernel: `PG_uptodate` (main).
pub const PG_UPTODATE: u32 = 3;
/// Kernel: `PG_dirty` (main).
pub const PG_DIRTY: u32 = 4;
/// Kernel: `PG_lru` (main).
pub const PG_LRU: u32 = 5;
/// First page of a large folio (must be bit 6).
///
/// Kernel: `PG_head` (main).
pub const PG_HEAD: u32 = 6;
/// Kernel: `PG_waiters` (must be bit 7, the same byte as `PG_locked`, main).
pub const PG_WAITERS: u32 = 7;
/// Kernel: `PG_active` (main).
pub const PG_ACTIVE: u32 = 8;
/// Kernel: `PG_workingset` (main).
pub const PG_WORKINGSET: u32 = 9;
/// Kernel: `PG_owner_priv_1` (main).
pub const PG_OWNER_PRIV_1: u32 = 10;
/// Kernel: `PG_owner_2` (main).
pub const PG_OWNER_2: u32 = 11;
/// Kernel: `PG_arch_1` (main).
pub const PG_ARCH_1: u32 = 12;
/// Set on every `ZONE_DEVICE` page at map time.
///
/// Kernel: `PG_reserved` (main).
pub const PG_RESERVED: u32 = 13;
/// Kernel: `PG_private` (main).
pub const PG_PRIVATE: u32 = 14;
/// Kernel: `PG_private_2` (main).
pub const PG_PRIVATE_2: u32 = 15;
/// Kernel: `PG_reclaim` (main).
pub const PG_RECLAIM: u32 = 16;
/// Kernel: `PG_swapbacked` (main).
pub const PG_SWAPBACKED: u32 = 17;
/// Kernel: `PG_unevictable` (main).
pub const PG_UNEVICTABLE: u32 = 18;
/// Kernel: `PG_dropbehind` (main).
pub const PG_DROPBEHIND: u32 = 19;
/// Kernel: `PG_mlocked` (main).
pub const PG_MLOCKED: u32 = 20;
/// Kernel: `PG_hwpoison` (main).
pub const PG_HWPOISON: u32 = 21;

/// Anonymous page mapped exclusively (alias of `PG_owner_2`).
///
/// Kernel: `PG_anon_exclusive` (main).
pub const PG_ANON_EXCLUSIVE: u32 = PG_OWNER_2;
/// Kernel: `PG_swapcache` (alias of `PG_owner_priv_1`, main).
pub const PG_SWAPCACHE: u32 = PG_OWNER_PRIV_1;
/// Second-page flag (alias of `PG_active`, on page\[1\] only).
///
/// Kernel: `PG_has_hwpoisoned` (main).
pub const PG_HAS_HWPOISONED: u32 = PG_ACTIVE;
/// Second-page flag (alias of `PG_workingset`, on page\[1\] only).
///
/// Kernel: `PG_large_rmappable` (main).
pub const PG_LARGE_RMAPPABLE: u32 = PG_WORKINGSET;
/// Second-page flag (alias of `PG_reclaim`, on page\[1\] only).
///
/// Kernel: `PG_partially_mapped` (main).
pub const PG_PARTIALLY_MAPPED: u32 = PG_RECLAIM;

/// The flags byte that holds the folio order on page\[1\].
///
/// Kernel: the low byte of `folio->_flags_1` (`folio_large_order()`, main).
pub const FOLIO_ORDER_MASK: u64 = 0xff;

/// Flags that live on the second page of a large folio.
///
/// Kernel: `PAGE_FLAGS_SECOND` (main).
pub const PAGE_FLAGS_SECOND: u64 =
    FOLIO_ORDER_MASK | 1 << PG_HAS_HWPOISONED | 1 << PG_LARGE_RMAPPABLE | 1 << PG_PARTIALLY_MAPPED;

/// Flags the page allocator expects clear on a page being prepared: every
/// page-flag bit except `PG_hwpoison` (the model has no LRU-gen bits).
///
/// Kernel: `PAGE_FLAGS_CHECK_AT_PREP` (main).
pub const PAGE_FLAGS_CHECK_AT_PREP: u64 = ((1 << (PG_HWPOISON + 1)) - 1) & !(1 << PG_HWPOISON);

/// Flags that must be clear when a page is freed.
///
/// Kernel: `PAGE_FLAGS_CHECK_AT_FREE` (main).
pub const PAGE_FLAGS_CHECK_AT_FREE: u64 = 1 << PG_LRU
    | 1 << PG_LOCKED
    | 1 << PG_PRIVATE
    | 1 << PG_PRIVATE_2
    | 1 << PG_WRITEBACK
    | 1 << PG_RESERVED
    | 1 << PG_ACTIVE
    | 1 << PG_UNEVICTABLE
    | 1 << PG_MLOCKED;

/// Zone number of `ZONE_DEVICE` on x86-64 (after DMA, DMA32, NORMAL,
/// MOVABLE).
///
/// Kernel: `ZONE_DEVICE`, `enum zone_type`, `include/linux/mmzone.h` (main).
pub const ZONE_DEVICE: u64 = 4;

/// Where the node id sits in `page->flags`: the top field (no section
/// field with `SPARSEMEM_VMEMMAP`).
///
/// Kernel: `NODES_PGSHIFT` (`NODES_PGOFF = SECTIONS_PGOFF - NODES_WIDTH`,
/// `include/linux/mm.h`), for the configuration in the module docs (main).
pub const NODES_PGSHIFT: u32 = 54;
/// Width of the node field (`NODES_SHIFT` = 10).
///
/// Kernel: `NODES_WIDTH` (main).
pub const NODES_WIDTH: u32 = 10;
/// Where the zone number sits in `page->flags`: just below the node.
///
/// Kernel: `ZONES_PGSHIFT` (`ZONES_PGOFF = NODES_PGOFF - ZONES_WIDTH`, main).
pub const ZONES_PGSHIFT: u32 = 51;
/// Width of the zone field (`ZONES_SHIFT` = 3 with `ZONE_DEVICE`).
///
/// Kernel: `ZONES_WIDTH` (main).
pub const ZONES_WIDTH: u32 = 3;
/// Where the last CPU and PID to touch the page (NUMA balancing) sit: just
/// below the zone.
///
/// Kernel: `LAST_CPUPID_PGSHIFT` (`LAST_CPUPID_PGOFF = ZONES_PGOFF -
/// LAST_CPUPID_WIDTH`, main).
pub const LAST_CPUPID_PGSHIFT: u32 = ZONES_PGSHIFT - LAST_CPUPID_WIDTH;
/// Width of the `LAST_CPUPID` field: `LAST__PID_SHIFT` (8) plus
/// `NR_CPUS_BITS` (13 for `NR_CPUS` = 8192).
///
/// Kernel: `LAST_CPUPID_WIDTH` (`LAST_CPUPID_SHIFT` when it fits, main).
pub const LAST_CPUPID_WIDTH: u32 = 8 + 13;
/// The `LAST_CPUPID` field's value mask (before shifting).
///
/// Kernel: `LAST_CPUPID_MASK` (main).
pub const LAST_CPUPID_MASK: u64 = (1 << LAST_CPUPID_WIDTH) - 1;

/// `page->flags` bits for a page in `zone` on node `nid` (no `PG_*` bits).
///
/// Kernel: `set_page_links()` (zone and node parts, main).
pub const fn page_links(zone: u64, nid: u32) -> u64 {
    let zone = (zone & ((1 << ZONES_WIDTH) - 1)) << ZONES_PGSHIFT;
    let node = (nid as u64 & ((1 << NODES_WIDTH) - 1)) << NODES_PGSHIFT;
    zone | node
}

/// `flags` with the `LAST_CPUPID` field set to all ones: "no CPU or PID
/// yet", as `__init_single_page()` (and so `__init_zone_device_page()`)
/// leaves every page.
///
/// Kernel: `page_cpupid_reset_last()` with `CONFIG_NUMA_BALANCING`,
/// `include/linux/mm.h` (main).
pub const fn page_cpupid_reset_last(flags: u64) -> u64 {
    flags | LAST_CPUPID_MASK << LAST_CPUPID_PGSHIFT
}

/// The `LAST_CPUPID` field of `flags`.
///
/// Kernel: `page_cpupid_last()` (main).
pub const fn flags_last_cpupid(flags: u64) -> u64 {
    (flags >> LAST_CPUPID_PGSHIFT) & LAST_CPUPID_MASK
}

/// The zone number stored in `flags`.
///
/// Kernel: `page_zonenum()` (main).
pub const fn flags_zone(flags: u64) -> u64 {
    (flags >> ZONES_PGSHIFT) & ((1 << ZONES_WIDTH) - 1)
}

/// The node id stored in `flags`.
///
/// Kernel: `page_to_nid()` (main).
pub const fn flags_node(flags: u64) -> u32 {
    ((flags >> NODES_PGSHIFT) & ((1 << NODES_WIDTH) - 1)) as u32
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn bit_numbers_match_the_kernel() {
        assert_eq!(
            (PG_LOCKED, PG_HEAD, PG_WAITERS, PG_RESERVED, PG_HWPOISON),
            (0, 6, 7, 13, 21)
        );
        assert_eq!(
            (PG_ANON_EXCLUSIVE, PG_LARGE_RMAPPABLE, PG_PARTIALLY_MAPPED),
            (11, 9, 16)
        );
        // Order 9 in the low byte reads as PG_locked | PG_uptodate (H1).
        assert_eq!(9, 1 << PG_LOCKED | 1 << PG_UPTODATE);
        assert_eq!(PAGE_FLAGS_CHECK_AT_PREP & 1 << PG_HWPOISON, 0);
        assert_ne!(PAGE_FLAGS_CHECK_AT_PREP & 1 << PG_RESERVED, 0);
    }

    #[test]
    fn zone_and_node_sit_above_every_page_flag() {
        let links = page_links(ZONE_DEVICE, 3);
        assert_eq!(flags_zone(links), ZONE_DEVICE);
        assert_eq!(flags_node(links), 3);
        assert_eq!(links & PAGE_FLAGS_CHECK_AT_PREP, 0);
        assert_eq!(links & FOLIO_ORDER_MASK, 0);
    }

    /// Node on top, zone below it, `LAST_CPUPID` below that, as
    /// `page-flags-layout.h` stacks them (no section field with
    /// `SPARSEMEM_VMEMMAP`).
    #[test]
    fn node_is_the_top_field_then_zone_then_last_cpupid() {
        let links = page_links(ZONE_DEVICE, 5);
        assert_eq!(links >> 54, 5, "node in bits 54-63");
        assert_eq!((links >> 51) & 7, ZONE_DEVICE, "zone in bits 51-53");
        assert_eq!(NODES_PGSHIFT + NODES_WIDTH, 64);
        assert_eq!(ZONES_PGSHIFT + ZONES_WIDTH, NODES_PGSHIFT);
        assert_eq!(LAST_CPUPID_PGSHIFT + LAST_CPUPID_WIDTH, ZONES_PGSHIFT);
        let flags = page_cpupid_reset_last(links);
        assert_eq!(flags_last_cpupid(flags), LAST_CPUPID_MASK, "all ones");
        assert_eq!(flags & ((1 << 30) - 1), 0, "nothing below the field");
        assert_eq!((flags_node(flags), flags_zone(flags)), (5, ZONE_DEVICE));
        // The largest node id does not spill into the zone, nor the zone
        // into LAST_CPUPID.
        let top = page_links(7, 1023);
        assert_eq!((flags_node(top), flags_zone(top)), (1023, 7));
        assert_eq!(flags_last_cpupid(top), 0);
        assert_eq!(flags & PAGE_FLAGS_CHECK_AT_PREP, 0, "above every PG_* bit");
    }
}
