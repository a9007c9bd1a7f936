//! devpriv: a userspace model of Linux device-private memory management.
//!
//! Kernel: the device-private address-space series (Jordan Niethe, v6) and
//! the large zone-device folio work around it; see `docs/kernel-map.md`.
//!
//! This crate re-exports the workspace crates under short names, and holds
//! what the `devpriv` command line runs: the simulation, the quick lookup
//! benchmark and the address-space map.
//!
//! | module | crate | kernel counterpart |
//! |---|---|---|
//! | [`core`] | `devpriv-core` | pfn/offset types, errno, RCU, `WARN_ON` |
//! | [`rangetree`] | `devpriv-rangetree` | `lib/maple_tree.c` (`MT_FLAGS_ALLOC_RANGE`) |
//! | [`pagemap`] | `devpriv-pagemap` | `mm/memremap.c`, `struct page`, `percpu_ref` |
//! | [`migrate`] | `devpriv-migrate` | softleaf/PTE encodings, `page_vma_mapped_walk`, `migrate_vma_*`, `hmm_range_fault` |
//! | [`xe_pool`] | (this crate) | an Xe-style shared VRAM pool (`drm_buddy`, `xe_svm.c`) under each reinit policy (seed 001) |
//! | [`map`] | — | the address-space layout (`devpriv map`) |
//! | [`quickbench`] | — | a quick lookup comparison (`devpriv bench`) |
//! | [`simulate`] | — | the end-to-end workload (`devpriv simulate`, the default) |
//! | [`stress`] | — | the stress harness: every operation on many threads, invariants checked throughout (`devpriv stress`) |

#![forbid(unsafe_code)]

pub use devpriv_core as core;
pub use devpriv_migrate as migrate;
pub use devpriv_pagemap as pagemap;
pub use devpriv_rangetree as rangetree;

pub mod xe_pool;

pub mod map;
pub mod quickbench;
pub mod simulate;
pub mod stress;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
