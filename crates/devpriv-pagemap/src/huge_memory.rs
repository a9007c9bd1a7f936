//! Splitting device-private folios.
//!
//! Kernel: `__split_unmapped_folio()`, `__split_folio_to_order()`,
//! `folio_split_unmapped()`, `mm/huge_memory.c` (spec §5.5).
