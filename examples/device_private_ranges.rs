//! How the device-private address space is carved out of a range tree.
//!
//! Models: `memremap_device_private_pagemap()` reserving
//! `nr_pages * PAGE_SIZE` bytes of `device_private_pgmap_tree` with
//! `mtree_alloc_range(..., 0, 1 << MAX_PHYSMEM_BITS)` (lowest fit), and
//! `device_private_offset_to_page()` finding the owner with
//! `mtree_load(offset << PAGE_SHIFT)` (mm/memremap.c, Niethe v6).
//!
//! Run: `cargo run --example device_private_ranges`
//!
//! Expected output: three 256 MiB chunks packed from 0, an offset resolved
//! to its chunk, the freed middle chunk reused by the next allocation, and a
//! 2 MiB-aligned allocation after an odd-sized one.

use devpriv::core::{
    DevicePrivateAddr, DevicePrivateOffset, Errno, PAGE_SIZE, PageCount, PagingMode,
};
use devpriv::rangetree::RangeTree;

fn main() -> Result<(), Errno> {
    let paging = PagingMode::default();
    // Inclusive bound, as the kernel passes it.
    let window = 0..=paging.physmem_size();
    let tree = RangeTree::new();
    let chunk = PageCount::from_bytes_round_up(256 << 20);
    let bytes = chunk.checked_bytes().ok_or(Errno::EINVAL)?;

    println!(
        "MAX_PHYSMEM_BITS = {}, SWP_PFN_BITS = {}",
        paging.max_physmem_bits(),
        paging.swp_pfn_bits()
    );
    for name in ["dmirror0", "dmirror1", "dmirror2"] {
        let start = tree.alloc_range(bytes, 1, window.clone(), name)?;
        let first = DevicePrivateAddr::new(start).to_offset();
        println!(
            "{name}: bytes {start:#x}..={:#x}, offsets from {first:?}",
            start + bytes - 1
        );
    }

    // device_private_offset_to_page(): offset -> byte key -> owner.
    let off = DevicePrivateOffset::new(70_000);
    let key = off.to_addr().ok_or(Errno::EINVAL)?.get();
    {
        let guard = tree.read();
        let (range, owner) = guard.load(key).ok_or(Errno::ENXIO)?;
        let index = (key - range.start()) / PAGE_SIZE;
        println!("{off:?} is page {index} of {owner}");
    }

    // memunmap_device_private_pagemap(): erase, and the space is reusable.
    let gone = tree.erase(bytes).ok_or(Errno::ENOENT)?;
    let reused = tree.alloc_range(bytes, 1, window.clone(), "dmirror3")?;
    println!("erased {gone}; dmirror3 reuses {reused:#x}");

    // Kernel-exact packing does not keep later chunks 2 MiB-aligned; the
    // alignment extension does.
    let odd = tree.alloc_range(3 * PAGE_SIZE, 1, window.clone(), "odd")?;
    let aligned = tree.alloc_range(2 << 20, 2 << 20, window, "aligned")?;
    println!("odd chunk at {odd:#x}; next 2 MiB-aligned chunk at {aligned:#x}");
    tree.validate().map_err(|_| Errno::EINVAL)?;
    Ok(())
}
