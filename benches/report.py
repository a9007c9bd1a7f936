#!/usr/bin/env python3
"""Prints the docs/perf.md ratio tables from criterion's saved estimates.

Run after `cargo bench -p devpriv-benches --bench range_tree`:
    python3 benches/report.py [target/criterion]
Every ratio compares results from the same run (medians).
"""
import json
import os
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
QUERIES = 4096  # queries per mtree_load iteration (see range_tree.rs)


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


if __name__ == "__main__":
    lookups()
    print()
    allocs()
