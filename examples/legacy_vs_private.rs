//! Why the v6 proposal takes device-private memory out of the physical
//! address space.
//!
//! Models: the mainline registration (still how 7.0 and 7.1 drivers do it),
//! `request_free_mem_region(&iomem_resource, size, name)` (kernel/resource.c,
//! `get_free_mem_region()` walking down from `min(iomem_resource.end,
//! DIRECT_MAP_PHYSMEM_END)` one 128 MiB section at a time) followed by
//! `memremap_pages()`, against the unmerged v6 proposal's
//! `memremap_device_private_pagemap()` ("Remove device private pages from
//! physical address space", Jordan Niethe, 2026-02-02), which allocates
//! from its own device-private address space. Four machines from the
//! proposal's cover letters: a bare-metal host where the mainline way
//! works, a VM whose 64-bit PCI window runs from the end of RAM to the top,
//! a CPU with 43 physical-address bits, and, as history only, a host whose
//! KASLR trimmed the direct map to end inside a large PCI window (no kernel
//! with `CONFIG_ZONE_DEVICE=y` does that since 269031b15c14, 6.19). The
//! logic lives in `devpriv::pagemap::resource`.
//!
//! Run: `cargo run --example legacy_vs_private`
//!
//! Expected output: for each machine, its `/proc/iomem`-style map (with
//! free gaps), the mainline result — a 1 GiB region at the top of the
//! physical space on bare metal, `-ERANGE` (-34) on the other three (the
//! KASLR one marked as history, with what 7.0 does instead) — and the v6
//! result, the same on every machine: device-private offsets from 0, no
//! pfns, the physical map untouched. Then a summary table. The example
//! exits non-zero if any of these claims fails.

use devpriv::core::{Errno, PAGE_SHIFT, PageCount};
use devpriv::pagemap::resource::{IomemConfig, IomemResource, MachinePreset, format_size};
use devpriv::pagemap::{DevicePrivateSpace, NoopOps, Owner, PagemapParams, SpaceConfig};
use std::process::ExitCode;
use std::sync::Arc;

/// 1 GiB of VRAM to expose as device-private pages.
const VRAM_BYTES: u64 = 1 << 30;

/// What one machine gave.
struct Outcome {
    preset: MachinePreset,
    legacy: Result<String, Errno>,
    series: Result<String, Errno>,
}

fn main() -> ExitCode {
    let nr_pages = PageCount::from_bytes_round_up(VRAM_BYTES);
    let mut outcomes = Vec::new();
    for preset in MachinePreset::ALL {
        match machine(preset, nr_pages) {
            Ok(o) => outcomes.push(o),
            Err(e) => {
                eprintln!("legacy_vs_private: {}: internal error: {e}", preset.name());
                return ExitCode::FAILURE;
            }
        }
    }

    println!("summary ({} of VRAM):", format_size(VRAM_BYTES));
    println!(
        "  {:<31} {:<44} memremap_device_private_pagemap()",
        "machine", "request_free_mem_region() (7.0/7.1 way)"
    );
    let mut failed = Vec::new();
    for o in &outcomes {
        let legacy = match &o.legacy {
            Ok(s) => s.clone(),
            Err(e) => format!("-{} ({})", e.name(), e.to_kernel()),
        };
        let series = match &o.series {
            Ok(s) => s.clone(),
            Err(e) => format!("{e}"),
        };
        let name = if o.preset.is_history() {
            format!("{} (history)", o.preset.name())
        } else {
            o.preset.name().to_owned()
        };
        println!("  {name:<31} {legacy:<44} {series}");
        let legacy_ok = o.preset == MachinePreset::BareMetal;
        if o.legacy.is_ok() != legacy_ok {
            failed.push(format!("{}: legacy result {legacy}", o.preset.name()));
        }
        if let Err(e) = &o.legacy
            && *e != Errno::ERANGE
        {
            failed.push(format!(
                "{}: legacy failed with {e}, not ERANGE",
                o.preset.name()
            ));
        }
        if o.series.is_err() {
            failed.push(format!(
                "{}: the v6 proposal failed: {series}",
                o.preset.name()
            ));
        }
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        for f in failed {
            eprintln!("legacy_vs_private: claim failed: {f}");
        }
        ExitCode::FAILURE
    }
}

/// Tries both ways on one machine and prints what happened.
fn machine(preset: MachinePreset, nr_pages: PageCount) -> Result<Outcome, Errno> {
    let io = preset.build()?;
    println!("== {}: {}", preset.name(), preset.description());
    println!(
        "   iomem_resource.end = {:#x}; request_free_mem_region() searches down from {:#x}",
        io.end().get(),
        io.search_end().get()
    );

    // The mainline way: physical address space, one 128 MiB section at a
    // time from the top.
    let legacy = io.legacy_memremap_device_private(nr_pages, "xe-vram");
    let legacy_line = match &legacy {
        Ok(lp) => {
            let first = lp.first_pfn.get();
            let last = first + nr_pages.get() - 1;
            format!(
                "ok: {:#x}-{:#x}, device pages are pfns {first:#x}..={last:#x}",
                lp.resource.start().get(),
                lp.resource.end().get()
            )
        }
        Err(e) => format!(
            "-{} ({}): no free section-aligned range below {:#x}",
            e.name(),
            e.to_kernel(),
            io.search_end().get()
        ),
    };
    print!("{}", indent(&io.render()));
    println!(
        "   7.x:    request_free_mem_region(&iomem_resource, {}, \"xe-vram\") = {legacy_line}",
        format_size(VRAM_BYTES)
    );
    if preset == MachinePreset::KaslrPre6_19 {
        // 7.0 with CONFIG_ZONE_DEVICE=y: no direct-map trim (269031b15c14).
        let plain = IomemResource::new(IomemConfig {
            direct_map_end: None,
            ..io.config()
        })?;
        for r in io.resources() {
            plain.insert_resource(r.name(), r.start(), r.size().unwrap_or(0), r.kind())?;
        }
        if let Ok(r) = plain.request_free_mem_region(VRAM_BYTES, "xe-vram") {
            println!(
                "           (history: kernels before 269031b15c14, 6.19, trimmed the direct map;\n            7.0 with CONFIG_ZONE_DEVICE=y does not, and gets {:#x}-{:#x})",
                r.start().get(),
                r.end().get()
            );
        }
    }

    // The v6 proposal: a separate device-private address space of
    // 2^MAX_PHYSMEM_BITS bytes, lowest fit, no pfns.
    let space = DevicePrivateSpace::with_config(SpaceConfig {
        paging: io.config().paging,
        ..SpaceConfig::default()
    });
    let before = io.resources().len();
    let series = space
        .memremap_device_private_pagemap(
            // Nothing to free and nothing to migrate: the no-op driver.
            PagemapParams::private(nr_pages, Owner(0x8e), Arc::new(NoopOps)),
            -1,
        )
        .and_then(|pgmap| {
            let first = pgmap.first_offset().get();
            let line = format!(
                "ok: offsets {first:#x}..={:#x}, no pfns",
                first + pgmap.nr_pages().get() - 1
            );
            println!(
                "   v6:     memremap_device_private_pagemap(nr_pages = {}) = {line}\n           (device-private bytes {:#x}-{:#x} of a {} space of their own)",
                pgmap.nr_pages().get(),
                pgmap.range().start().get(),
                pgmap.range().end().get(),
                format_size(space.config().space_size())
            );
            space.memunmap_device_private_pagemap(&pgmap)?;
            Ok(line)
        });
    if io.resources().len() != before {
        return Err(Errno::EINVAL);
    }
    println!(
        "           /proc/iomem is unchanged; offset << {PAGE_SHIFT} is a device-private address, never a physical one\n"
    );
    Ok(Outcome {
        preset,
        legacy: legacy.map(|lp| {
            format!(
                "ok: {:#x}-{:#x}",
                lp.resource.start().get(),
                lp.resource.end().get()
            )
        }),
        series,
    })
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("   {l}\n")).collect()
}
