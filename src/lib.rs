//! devpriv: a userspace model of Linux device-private memory management.
//!
//! Kernel: the device-private address-space series (Jordan Niethe, v6) and
//! the large zone-device folio work around it; see `docs/kernel-map.md`.
//!
//! This crate is a facade: it re-exports the workspace crates under short
//! names.
//!
//! | module | crate | kernel counterpart |
//! |---|---|---|
//! | [`core`] | `devpriv-core` | pfn/offset types, errno, RCU, `WARN_ON` |
//! | [`rangetree`] | `devpriv-rangetree` | `lib/maple_tree.c` (`MT_FLAGS_ALLOC_RANGE`) |
//! | [`pagemap`] | `devpriv-pagemap` | `mm/memremap.c`, `struct page`, `percpu_ref` |
//! | [`migrate`] | `devpriv-migrate` | softleaf/PTE encodings, `page_vma_mapped_walk`, `migrate_vma_*`, `hmm_range_fault` |

#![forbid(unsafe_code)]

pub use devpriv_core as core;
pub use devpriv_migrate as migrate;
pub use devpriv_pagemap as pagemap;
pub use devpriv_rangetree as rangetree;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
