//! devpriv-cli: what the `devpriv` command line runs.
//!
//! Kernel: none (model only): workloads that drive the devpriv crates and
//! the drivers of `devpriv-drivers` end to end, and report what they saw.
//!
//! | module | command | what it does |
//! |---|---|---|
//! | [`simulate`] | `devpriv simulate` (the default) | the end-to-end workload: dmirror devices, processes, migrations, CPU faults, the Xe pool |
//! | [`stress`] | `devpriv stress` | every operation on many threads, invariants checked throughout |
//! | [`map`] | `devpriv map` | the address-space layout, as text and SVG |
//! | [`quickbench`] | `devpriv bench` | a quick lookup comparison (offset → page vs rangemap and vmemmap) |

#![forbid(unsafe_code)]

pub mod map;
pub mod quickbench;
pub mod simulate;
pub mod stress;
