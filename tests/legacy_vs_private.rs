//! The claims of the `legacy_vs_private` example, as tests: on the machines
//! the v6 proposal's cover letters describe, reserving physical address
//! space for device-private pages the mainline (7.0/7.1) way fails with
//! `-ERANGE`, while the proposal's device-private address space places the
//! same pagemap at offset 0 without touching the physical map.
//!
//! Kernel: `request_free_mem_region()` / `get_free_mem_region()`
//! (`kernel/resource.c`, main: the walk of 659aa050a538, v6.7);
//! `memremap_device_private_pagemap()` (`mm/memremap.c`, v6 proposal,
//! unmerged).

use devpriv::core::{DevicePrivateOffset, Errno, PAGE_SHIFT, PAGE_SIZE, PageCount, Pfn, PhysAddr};
use devpriv::pagemap::resource::{IomemConfig, IomemResource, MachinePreset, ResourceKind};
use devpriv::pagemap::{DevicePrivateSpace, NoopOps, Owner, PagemapParams, SpaceConfig};
use std::sync::Arc;

const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// No page is ever allocated, so the driver does nothing.
fn params(nr_pages: u64) -> PagemapParams {
    PagemapParams::private(PageCount::new(nr_pages), Owner(1), Arc::new(NoopOps))
}

/// A 46-bit machine, 64 GiB of RAM, and a 64-bit PCI window from the end of
/// RAM to the top of the physical address space.
#[test]
fn legacy_fails_with_erange_where_the_device_private_space_succeeds() {
    let io = MachinePreset::VmBigPciWindow.build().unwrap();
    assert_eq!(io.end().get(), (1 << 46) - 1);
    let window = io.resources().last().cloned().unwrap();
    assert_eq!(window.kind(), ResourceKind::PciWindow);
    assert_eq!(window.start().get(), 64 * GIB);
    assert_eq!(window.end(), io.end());
    let before = io.resources();

    let nr = GIB / PAGE_SIZE;
    let r = io.legacy_memremap_device_private(PageCount::new(nr), "xe-vram");
    assert_eq!(r.unwrap_err(), Errno::ERANGE);
    assert_eq!(Errno::ERANGE.to_kernel(), -34);
    // Even the smallest request (one page, rounded to a 128 MiB section).
    assert_eq!(
        io.request_free_mem_region(PAGE_SIZE, "tiny").unwrap_err(),
        Errno::ERANGE
    );
    assert_eq!(io.resources(), before, "a failed request changes nothing");

    let space = DevicePrivateSpace::with_config(SpaceConfig {
        paging: io.config().paging,
        ..SpaceConfig::default()
    });
    let pgmap = space
        .memremap_device_private_pagemap(params(nr), -1)
        .unwrap();
    assert_eq!(pgmap.first_offset(), DevicePrivateOffset::new(0));
    assert_eq!(pgmap.nr_pages().get(), nr);
    {
        let g = space.read();
        let last = DevicePrivateOffset::new(nr - 1);
        let page = g.device_private_offset_to_page(last).unwrap();
        assert_eq!(g.device_private_page_to_offset(page), Some(last));
    }
    assert_eq!(io.resources(), before, "the physical map is untouched");
    space.memunmap_device_private_pagemap(&pgmap).unwrap();
}

#[test]
fn every_cover_letter_machine_fails_the_old_way_and_bare_metal_does_not() {
    let nr = PageCount::new(GIB / PAGE_SIZE);
    for preset in MachinePreset::ALL {
        let io = preset.build().unwrap();
        let r = io.legacy_memremap_device_private(nr, "xe-vram");
        if preset == MachinePreset::BareMetal {
            // The top section-aligned GiB of the 46-bit space; the device
            // pages take real pfns there.
            let lp = r.unwrap();
            let top = (1u64 << 46) - GIB;
            assert_eq!(lp.resource.start(), PhysAddr::new(top));
            assert_eq!(lp.first_pfn, Pfn::new(top >> PAGE_SHIFT));
            assert_eq!(lp.resource.kind(), ResourceKind::DevicePrivate);
            // release_mem_region() gives it back.
            io.release_mem_region(lp.resource.start(), GIB).unwrap();
            assert_eq!(io.resources().len(), 4);
        } else {
            assert_eq!(r.unwrap_err(), Errno::ERANGE, "{preset:?}");
        }
        // The v6 proposal does not care about the physical layout.
        let space = DevicePrivateSpace::with_config(SpaceConfig {
            paging: io.config().paging,
            ..SpaceConfig::default()
        });
        let pgmap = space
            .memremap_device_private_pagemap(params(nr.get()), 0)
            .unwrap();
        assert_eq!(pgmap.first_offset().get(), 0, "{preset:?}");
        space.memunmap_device_private_pagemap(&pgmap).unwrap();
    }
}

#[test]
fn each_failure_has_its_documented_cause() {
    // 43 bits: iomem_resource ends at 8 TiB, below MAX_PHYSMEM_BITS.
    let io = MachinePreset::PhysBits43.build().unwrap();
    assert_eq!(io.end().get(), 8 * TIB - 1);
    assert_eq!(io.search_end(), io.end());
    // KASLR before 269031b15c14 (6.19): the search starts at the end of the
    // trimmed direct map (11 TiB), inside the PCI window. History, not 7.0.
    let io = MachinePreset::KaslrPre6_19.build().unwrap();
    assert!(MachinePreset::KaslrPre6_19.is_history());
    assert_eq!(io.search_end().get(), 11 * TIB - 1);
    assert_eq!(
        io.request_free_mem_region(GIB, "xe").unwrap_err(),
        Errno::ERANGE
    );
    // 7.0 with CONFIG_ZONE_DEVICE=y does not trim the direct map: the same
    // layout has room at the top, and the request succeeds there.
    let plain = IomemResource::new(IomemConfig {
        direct_map_end: None,
        ..io.config()
    })
    .unwrap();
    assert_eq!(plain.search_end().get(), (1 << 46) - 1);
    for r in io.resources() {
        plain
            .insert_resource(r.name(), r.start(), r.size().unwrap(), r.kind())
            .unwrap();
    }
    assert_eq!(
        plain
            .request_free_mem_region(GIB, "xe")
            .unwrap()
            .start()
            .get(),
        (1 << 46) - GIB
    );
}

#[test]
fn the_device_private_space_fails_only_when_it_is_itself_full() {
    // The v6 proposal moves the limit, it does not remove it: a space of
    // 2^MAX_PHYSMEM_BITS bytes (here shrunk to 1 GiB) is EBUSY when full.
    let space = DevicePrivateSpace::with_config(SpaceConfig {
        space_shift: Some(30),
        ..SpaceConfig::default()
    });
    let a = space
        .memremap_device_private_pagemap(params(GIB / PAGE_SIZE / 2), 0)
        .unwrap();
    let b = space
        .memremap_device_private_pagemap(params(GIB / PAGE_SIZE / 2), 0)
        .unwrap();
    assert_eq!(
        space
            .memremap_device_private_pagemap(params(1), 0)
            .unwrap_err(),
        Errno::EBUSY
    );
    space.memunmap_device_private_pagemap(&a).unwrap();
    space.memunmap_device_private_pagemap(&b).unwrap();
}
