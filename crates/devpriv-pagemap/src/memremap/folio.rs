//! Allocation and free of device-private folios.
//!
//! Kernel: `zone_device_page_init()`, `zone_device_folio_init()`,
//! `free_zone_device_folio()`, `mm/memremap.c` and
//! `include/linux/memremap.h` (spec §5.2–§5.4).
