//! devpriv-pagemap: the device-private address space and its pages.
//!
//! Kernel: `mm/memremap.c`, `include/linux/memremap.h`, `mm/mm_init.c`,
//! `lib/percpu-refcount.c`, `include/linux/page-flags.h`,
//! `include/linux/mm_types.h` (Jordan Niethe's series, v6).

pub mod percpu_refcount;
