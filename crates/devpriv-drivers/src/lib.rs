//! devpriv-drivers: device drivers written against the devpriv crates.
//!
//! Kernel: `lib/test_hmm.c` (dmirror; 7.0, registering its chunks through
//! the v6 proposal's `memremap_device_private_pagemap()` as v6 13/13 does),
//! and a prototype of Xe's shared VRAM pool after
//! `drivers/gpu/drm/drm_buddy.c` and `drivers/gpu/drm/xe/xe_svm.c` (model
//! only).
//!
//! The library crates model the kernel; a driver is a user of them, the
//! way `lib/test_hmm.c` and `drivers/gpu/drm/xe` are users of `mm/`:
//!
//! - [`test_hmm`]: the dmirror test driver, devices with device-private
//!   memory in chunks and mirrors with the HMM test ioctls, for end-to-end
//!   tests, benchmarks and examples;
//! - [`xe_pool`]: one DRM-buddy allocator shared by buffer objects and SVM
//!   device pages, under each reinit policy: the workload that made Xe hit
//!   hazards H1–H4 (`docs/hazards.md`).

#![forbid(unsafe_code)]

pub mod test_hmm;
pub mod xe_pool;
