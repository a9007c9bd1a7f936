//! devpriv-migrate: how the rest of mm sees device-private memory.
//!
//! Kernel: `include/linux/leafops.h`, `include/linux/swapops.h`,
//! `arch/x86/include/asm/pgtable*.h`, `mm/page_vma_mapped.c`,
//! `mm/migrate_device.c`, `mm/memory.c`, `mm/hmm.c` (series v6).

#![forbid(unsafe_code)]
