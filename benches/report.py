#!/usr/bin/env python3
"""Prints the docs/perf.md ratio tables from criterion's saved estimates.

Run after any of the benches (`cargo bench -p devpriv-benches`, or one
`--bench NAME`):
    python3 benches/report.py [target/criterion]
Prints the tables of every bench whose results are there (range tree,
maple tree vs the kernel's, pagemap and its layouts, folio, walk,
migrate). Every ratio compares results from the same
run (medians).
"""
import json
import os
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
QUERIES = 4096  # queries per mtree_load iteration (see range_tree.rs)
PM_QUERIES = 4096  # lookups per iteration (per thread) in pagemap.rs
PAGE_BYTES = 64  # size_of::<Page>(), asserted in pagemap.rs
MEMREMAP_PAGES = 1 << 24  # pages per memremap iteration (see pagemap.rs)


def have(*parts):
    return os.path.isdir(os.path.join(ROOT, *parts))


def median_ns(*parts):
    path = os.path.join(ROOT, *parts, "new", "estimates.json")
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"]


def lookups():
    print("| n | pattern | RangeTree ns/lookup | rangemap ns/lookup | BTreeMap ns/lookup | rangemap / RangeTree | BTreeMap / RangeTree |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for n in [1, 8, 64, 1024, 16384]:
        for pat in ["random", "sequential"]:
            t, r, b = (median_ns("mtree_load", f"{impl}_{pat}", str(n)) / QUERIES
                       for impl in ["RangeTree", "rangemap", "btreemap"])
            bold = "**" if (n, pat) == (1024, "random") else ""
            print(f"| {bold}{n}{bold} | {bold}{pat}{bold} | {t:.1f} | {r:.1f} | {b:.1f} | {bold}{r / t:.2f}x{bold} | {b / t:.2f}x |")


def allocs():
    t100, t10k = (median_ns("mtree_alloc_range", "RangeTree", n) for n in ["100", "10000"])
    f100, f10k = (median_ns("mtree_alloc_range", "rangemap_first_fit", n) for n in ["100", "10000"])
    print("| | 100 live | 10 000 live | 10 000 / 100 |")
    print("|---|---:|---:|---:|")
    print(f"| RangeTree alloc+erase | {t100:.0f} ns | {t10k:.0f} ns | **{t10k / t100:.2f}x** |")
    print(f"| first fit over rangemap gaps | {f100:.0f} ns | {f10k:.0f} ns | {f10k / f100:.1f}x |")
    print(f"| first fit / RangeTree | {f100 / t100:.2f}x | **{f10k / t10k:.1f}x** | |")


KERNEL_SIZES = [1, 64, 1024, 16384]  # range / pagemap counts in maple_tree.rs


def kernel_lookups():
    group = "kernel_mtree_load"
    print("| n | pattern | RangeTree ns/lookup | RangeTree, guard per lookup | kernel mtree_load | kernel / RangeTree | kernel / RangeTree (guard per lookup) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for n in KERNEL_SIZES:
        for pat in ["random", "sequential"]:
            t, g, k = (median_ns(group, f"{impl}_{pat}", str(n)) / QUERIES
                       for impl in ["RangeTree", "RangeTree_guard_each", "maple_tree"])
            print(f"| {n} | {pat} | {t:.1f} | {g:.1f} | {k:.1f} | **{k / t:.2f}x** | {k / g:.2f}x |")


def kernel_allocs():
    group = "kernel_mtree_alloc_range"
    print("| layout | n | RangeTree alloc+erase | kernel mtree_alloc_range+mtree_erase | RangeTree / kernel |")
    print("|---|---:|---:|---:|---:|")
    for layout, sizes in [("gapped", KERNEL_SIZES), ("fragmented", [100, 10000])]:
        for n in sizes:
            t, k = (median_ns(group, f"{impl}_{layout}", str(n))
                    for impl in ["RangeTree", "maple_tree"])
            print(f"| {layout} | {n} | {t:.0f} ns | {k:.0f} ns | **{t / k:.2f}x** |")


def kernel_offset_to_page():
    group = "kernel_device_private_offset_to_page"
    print("| n | pattern | page | space (index) | space_tree (RangeTree) | kernel mtree_load + pages[] | kernel / space | kernel / space_tree |")
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    for n in KERNEL_SIZES:
        for pat, touch in [("random", "notouch"), ("random", "touch"), ("sequential", "notouch")]:
            s, t, k = (median_ns(group, f"{impl}_{pat}_{touch}", str(n)) / PM_QUERIES
                       for impl in ["space", "space_tree", "maple_tree"])
            print(f"| {n} | {pat} | {touch} | {s:.2f} | {t:.2f} | {k:.2f} | **{k / s:.1f}x** | {k / t:.2f}x |")


PM_IMPLS = ["space", "space_tree", "rangemap_index", "sorted_vec", "section_table", "vmemmap"]


def pm_lookups():
    group = "device_private_offset_to_page"
    # section_table came later than the others: older runs lack it.
    impls = [i for i in PM_IMPLS if have(group, f"{i}_random_touch")]
    print(f"| n | pattern | page | {' | '.join(impls)} | rangemap_index / space | space / vmemmap |")
    print(f"|---:|---|---|{'---:|' * len(impls)}---:|---:|")
    for n in [1, 8, 64, 1024, 16384]:
        for pat in ["random", "sequential"]:
            for touch in ["touch", "notouch"]:
                ns = {impl: median_ns(group, f"{impl}_{pat}_{touch}", str(n)) / PM_QUERIES
                      for impl in impls}
                cells = " | ".join(f"{ns[impl]:.2f}" for impl in impls)
                bold = "**" if (n, pat) == (1024, "random") else ""
                rm, vm = ns["rangemap_index"] / ns["space"], ns["space"] / ns["vmemmap"]
                print(f"| {bold}{n}{bold} | {bold}{pat}{bold} | {touch} | {cells} "
                      f"| {bold}{rm:.1f}x{bold} | {bold}{vm:.2f}x{bold} |")


def pm_threads():
    group = "device_private_offset_to_page_threads"
    print("| | 1 thread | 2 threads | 2 threads / 1 thread |")
    print("|---|---:|---:|---:|")
    for impl in ["space", "vmemmap"]:
        # Aggregate lookups per second: T threads each do PM_QUERIES per iteration.
        rate = {t: PM_QUERIES * t / median_ns(group, impl, str(t)) * 1e3 for t in [1, 2]}
        bold = "**" if impl == "space" else ""
        print(f"| {impl} (Mlookups/s) | {rate[1]:.0f} | {rate[2]:.0f} | {bold}{rate[2] / rate[1]:.2f}x{bold} |")


def pm_memremap():
    group = "memremap_device_private_pagemap"
    m = median_ns(group, "memremap", str(MEMREMAP_PAGES))
    f = median_ns(group, "alloc_memset", str(MEMREMAP_PAGES))
    print("| 2^24 pages | time | ns/page | / alloc+memset | metadata per page |")
    print("|---|---:|---:|---:|---:|")
    print(f"| memremap_device_private_pagemap | {m / 1e6:.0f} ms | {m / MEMREMAP_PAGES:.2f} "
          f"| **{m / f:.2f}x** | **{PAGE_BYTES} B** |")
    print(f"| alloc + memset of {MEMREMAP_PAGES * PAGE_BYTES >> 20} MiB | {f / 1e6:.0f} ms "
          f"| {f / MEMREMAP_PAGES:.2f} | 1.00x | |")


def pm_targets():
    look = "device_private_offset_to_page"
    ns = lambda impl, touch: median_ns(look, f"{impl}_random_{touch}", "1024")
    thr = "device_private_offset_to_page_threads"
    mem = "memremap_device_private_pagemap"
    rows = [
        ("1024 pagemaps, random, no touch: rangemap_index / space", ">= 10x",
         ns("rangemap_index", "notouch") / ns("space", "notouch"), lambda r: r >= 10),
        ("1024 pagemaps, random, page touched: space / vmemmap", "<= 1.3x",
         ns("space", "touch") / ns("vmemmap", "touch"), lambda r: r <= 1.3),
        ("1024 pagemaps, random, no touch: space / vmemmap", "<= 3x",
         ns("space", "notouch") / ns("vmemmap", "notouch"), lambda r: r <= 3),
        ("space, 2 threads / 1 thread (throughput)", ">= 1.8x",
         2 * median_ns(thr, "space", "1") / median_ns(thr, "space", "2"), lambda r: r >= 1.8),
        ("memremap of 2^24 pages / alloc+memset", "<= 1.5x",
         median_ns(mem, "memremap", str(MEMREMAP_PAGES))
         / median_ns(mem, "alloc_memset", str(MEMREMAP_PAGES)), lambda r: r <= 1.5),
    ]
    print("| target | wanted | this run | |")
    print("|---|---:|---:|---|")
    for name, want, r, ok in rows:
        print(f"| {name} | {want} | {r:.2f}x | {'met' if ok(r) else '**not met**'} |")
    print(f"| struct page metadata per page | <= 64 B | {PAGE_BYTES} B | met |")
    r = ns("rangemap_index", "touch") / ns("space", "touch")
    print(f"| (informative) page touched: rangemap_index / space | | {r:.2f}x | |")


def folio():
    group = "zone_device_folio_init"
    print("| order | selective reset (ns) | memset each page (ns) | selective / memset |")
    print("|---:|---:|---:|---:|")
    for o in ["0", "4", "9"]:
        sel, mem = (median_ns(group, impl, o) for impl in ["selective", "memset"])
        print(f"| {o} | {sel:.0f} | {mem:.0f} | {sel / mem:.2f}x |")
    vs = "zone_device_folio_init_vs_memset"
    sel, mem = median_ns(vs, "selective_order9"), median_ns(vs, "memset_512_pages")
    ok = "met" if sel / mem <= 1.5 else "**not met**"
    print()
    print("| target | wanted | this run | |")
    print("|---|---:|---:|---|")
    print(f"| order-9 init+free / memset of 512 page structs ({sel:.0f} / {mem:.0f} ns) "
          f"| <= 1.5x | {sel / mem:.2f}x | {ok} |")


def walk():
    group = "page_vma_mapped_walk"
    base = median_ns(group, "plain_scan")
    print("| | ns per 512 entries | / plain scan |")
    print("|---|---:|---:|")
    for impl in ["walk", "walk_sync", "walk_device_private", "plain_scan", "plain_array"]:
        t = median_ns(group, impl)
        bold = "**" if impl == "walk" else ""
        print(f"| {impl} | {t:.0f} | {bold}{t / base:.2f}x{bold} |")
    r = median_ns(group, "walk") / base
    print()
    print(f"Target: walk / plain scan <= 5x: {r:.2f}x, {'met' if r <= 5 else '**not met**'}.")


def migrate():
    group = "migrate_vma"
    print("| 512 pages, to device and back | order 9 (us) | 512 x order 0 (us) | order 0 / order 9 |")
    print("|---|---:|---:|---:|")
    for kind, name in [("round_trip", "explicit (migrate_to_dev, migrate_to_sys)"),
                       ("fault_back", "to device, back by CPU faults")]:
        big, small = (median_ns(group, f"{o}_{kind}") for o in ["order9", "order0x512"])
        print(f"| {name} | {big / 1e3:.1f} | {small / 1e3:.1f} | **{small / big:.1f}x** |")


LAYOUT_QUERIES = 1 << 16  # lookups per iteration in the layouts group
LAYOUTS = ["exact_4", "exact_32", "exact_64", "exact_100", "exact_200", "exact_256",
           "exact_1000", "exact_2049", "exact_4097", "exact_65536", "aligned_256"]
# Issue 14 names these (T1: at least 10x rangemap); the others are informative.
NAMED = {"exact_64", "exact_100", "exact_256", "exact_1000", "exact_65536", "aligned_256"}


def pm_layouts():
    group = "device_private_offset_to_page_layouts"
    print("| layout | space ns | index alone ns | rangemap_index ns | **rangemap / space** | T1 (>= 10x) "
          "| space touched ns | vmemmap touched ns | touched space / vmemmap |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|")
    for lay in LAYOUTS:
        if not have(group, "space", lay) or not have(group, "rangemap_index", lay):
            continue
        sp, rm = (median_ns(group, impl, lay) / LAYOUT_QUERIES
                  for impl in ["space", "rangemap_index"])
        verdict = ("met" if rm / sp >= 10 else "**not met**") if lay in NAMED else "(not named)"
        alone = (f"{median_ns(group, 'space_index', lay) / LAYOUT_QUERIES:.2f}"
                 if have(group, "space_index", lay) else "")
        touched = "| | |"
        if have(group, "space_touch", lay) and have(group, "vmemmap_touch", lay):
            st, vt = (median_ns(group, impl, lay) / LAYOUT_QUERIES
                      for impl in ["space_touch", "vmemmap_touch"])
            touched = f"| {st:.2f} | {vt:.2f} | {st / vt:.2f}x"
        print(f"| {lay} | {sp:.2f} | {alone} | {rm:.1f} | **{rm / sp:.1f}x** | {verdict} {touched} |")

if __name__ == "__main__":
    sections = []
    if have("mtree_load") and have("mtree_alloc_range"):
        sections += [lookups, allocs]
    # The kernel's side is absent when the bench ran without kernel source.
    if have("kernel_mtree_load", "maple_tree_random"):
        sections += [kernel_lookups, kernel_allocs, kernel_offset_to_page]
    if (have("device_private_offset_to_page")
            and have("device_private_offset_to_page_threads")
            and have("memremap_device_private_pagemap")):
        sections += [pm_lookups, pm_threads, pm_memremap, pm_targets]
    if have("device_private_offset_to_page_layouts"):
        sections += [pm_layouts]
    if have("zone_device_folio_init") and have("zone_device_folio_init_vs_memset"):
        sections += [folio]
    if have("page_vma_mapped_walk"):
        sections += [walk]
    if have("migrate_vma"):
        sections += [migrate]
    if not sections:
        sys.exit(f"no criterion results under {ROOT}: run cargo bench -p devpriv-benches first")
    for i, section in enumerate(sections):
        if i:
            print()
        section()
