//! Page flag bits, with the kernel's numbers.
//!
//! Kernel: `enum pageflags`, `include/linux/page-flags.h` (Linux 7.0), and
//! the zone/node fields of `page->flags` (`include/linux/page-flags-layout.h`).
//!
//! The bit numbers are exact, because the seed hazards depend on them: the
//! folio order is stored in the low byte of the second page's flags, so a
//! stale order 9 (`0b1001`) reads as `PG_locked | PG_uptodate` on a reused
//! page (hazard H1).

/// Page is locked (bit 0). The folio order's bit 0 aliases it on page\[1\].
///
/// Kernel: `PG_locked`.
pub const PG_LOCKED: u32 = 0;
/// Kernel: `PG_writeback`.
pub const PG_WRITEBACK: u32 = 1;
/// Kernel: `PG_referenced`.
pub const PG_REFERENCED: u32 = 2;
/// Kernel: `PG_uptodate`.
pub const PG_UPTODATE: u32 = 3;
/// Kernel: `PG_dirty`.
pub const PG_DIRTY: u32 = 4;
/// Kernel: `PG_lru`.
pub const PG_LRU: u32 = 5;
/// First page of a large folio (must be bit 6).
///
/// Kernel: `PG_head`.
pub const PG_HEAD: u32 = 6;
/// Kernel: `PG_waiters` (must be bit 7, the same byte as `PG_locked`).
pub const PG_WAITERS: u32 = 7;
/// Kernel: `PG_active`.
pub const PG_ACTIVE: u32 = 8;
/// Kernel: `PG_workingset`.
pub const PG_WORKINGSET: u32 = 9;
/// Kernel: `PG_owner_priv_1`.
pub const PG_OWNER_PRIV_1: u32 = 10;
/// Kernel: `PG_owner_2`.
pub const PG_OWNER_2: u32 = 11;
/// Kernel: `PG_arch_1`.
pub const PG_ARCH_1: u32 = 12;
/// Set on every `ZONE_DEVICE` page at map time.
///
/// Kernel: `PG_reserved`.
pub const PG_RESERVED: u32 = 13;
/// Kernel: `PG_private`.
pub const PG_PRIVATE: u32 = 14;
/// Kernel: `PG_private_2`.
pub const PG_PRIVATE_2: u32 = 15;
/// Kernel: `PG_reclaim`.
pub const PG_RECLAIM: u32 = 16;
/// Kernel: `PG_swapbacked`.
pub const PG_SWAPBACKED: u32 = 17;
/// Kernel: `PG_unevictable`.
pub const PG_UNEVICTABLE: u32 = 18;
/// Kernel: `PG_dropbehind`.
pub const PG_DROPBEHIND: u32 = 19;
/// Kernel: `PG_mlocked`.
pub const PG_MLOCKED: u32 = 20;
/// Kernel: `PG_hwpoison`.
pub const PG_HWPOISON: u32 = 21;

/// Anonymous page mapped exclusively (alias of `PG_owner_2`).
///
/// Kernel: `PG_anon_exclusive`.
pub const PG_ANON_EXCLUSIVE: u32 = PG_OWNER_2;
/// Kernel: `PG_swapcache` (alias of `PG_owner_priv_1`).
pub const PG_SWAPCACHE: u32 = PG_OWNER_PRIV_1;
/// Second-page flag (alias of `PG_active`, on page\[1\] only).
///
/// Kernel: `PG_has_hwpoisoned`.
pub const PG_HAS_HWPOISONED: u32 = PG_ACTIVE;
/// Second-page flag (alias of `PG_workingset`, on page\[1\] only).
///
/// Kernel: `PG_large_rmappable`.
pub const PG_LARGE_RMAPPABLE: u32 = PG_WORKINGSET;
/// Second-page flag (alias of `PG_reclaim`, on page\[1\] only).
///
/// Kernel: `PG_partially_mapped`.
pub const PG_PARTIALLY_MAPPED: u32 = PG_RECLAIM;

/// The flags byte that holds the folio order on page\[1\].
///
/// Kernel: the low byte of `folio->_flags_1` (`folio_large_order()`).
pub const FOLIO_ORDER_MASK: u64 = 0xff;

/// Flags that live on the second page of a large folio.
///
/// Kernel: `PAGE_FLAGS_SECOND`.
pub const PAGE_FLAGS_SECOND: u64 =
    FOLIO_ORDER_MASK | 1 << PG_HAS_HWPOISONED | 1 << PG_LARGE_RMAPPABLE | 1 << PG_PARTIALLY_MAPPED;

/// Flags the page allocator expects clear on a page being prepared: every
/// page-flag bit except `PG_hwpoison` (the model has no LRU-gen bits).
///
/// Kernel: `PAGE_FLAGS_CHECK_AT_PREP`.
pub const PAGE_FLAGS_CHECK_AT_PREP: u64 = ((1 << (PG_HWPOISON + 1)) - 1) & !(1 << PG_HWPOISON);

/// Flags that must be clear when a page is freed.
///
/// Kernel: `PAGE_FLAGS_CHECK_AT_FREE`.
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
/// Kernel: `ZONE_DEVICE`, `enum zone_type`, `include/linux/mmzone.h`.
pub const ZONE_DEVICE: u64 = 4;

/// Where the zone number sits in `page->flags` (3 bits at the top).
///
/// Kernel: `ZONES_PGSHIFT` (`include/linux/page-flags-layout.h`).
///
/// # Differences from the kernel
///
/// The kernel's positions depend on the configuration (section, node,
/// `LAST_CPUPID` and KASAN widths); the model fixes them: zone in bits
/// 61–63, node in bits 51–60. They are far above every `PG_*` bit, which is
/// what the reinit code relies on.
pub const ZONES_PGSHIFT: u32 = 61;
/// Width of the zone field.
///
/// Kernel: `ZONES_WIDTH`.
pub const ZONES_WIDTH: u32 = 3;
/// Where the node id sits in `page->flags`.
///
/// Kernel: `NODES_PGSHIFT`.
pub const NODES_PGSHIFT: u32 = 51;
/// Width of the node field (`NODES_SHIFT` = 10).
///
/// Kernel: `NODES_WIDTH`.
pub const NODES_WIDTH: u32 = 10;

/// `page->flags` bits for a page in `zone` on node `nid` (no `PG_*` bits).
///
/// Kernel: `set_page_links()` (zone and node parts).
pub const fn page_links(zone: u64, nid: u32) -> u64 {
    let zone = (zone & ((1 << ZONES_WIDTH) - 1)) << ZONES_PGSHIFT;
    let node = (nid as u64 & ((1 << NODES_WIDTH) - 1)) << NODES_PGSHIFT;
    zone | node
}

/// The zone number stored in `flags`.
///
/// Kernel: `page_zonenum()`.
pub const fn flags_zone(flags: u64) -> u64 {
    flags >> ZONES_PGSHIFT
}

/// The node id stored in `flags`.
///
/// Kernel: `page_to_nid()`.
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
}
