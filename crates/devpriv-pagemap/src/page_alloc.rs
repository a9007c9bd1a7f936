//! Building compound (large) folios out of pages.
//!
//! Kernel: `prep_compound_page()`, `prep_compound_head()`,
//! `prep_compound_tail()`, `mm/page_alloc.c` and `mm/internal.h` (spec §4.5).
