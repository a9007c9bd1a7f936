//! Pagemap fixtures of the bad-input tests: valid parameters (with the
//! no-op driver), a small device-private space, and snapshots that show a
//! call changed nothing. Included with `#[path]` (after `bad_input`).
#![allow(dead_code, reason = "each crate's errors.rs uses part of it")]

use crate::bad_input::np;
use devpriv_core::PageCount;
use devpriv_pagemap::{DevPagemap, DevicePrivateSpace, NoopOps, Owner, PagemapParams, SpaceConfig};
use std::sync::Arc;

/// Valid parameters for a pagemap of `nr` pages. The tests never fault on
/// its pages from the CPU, so the driver does nothing.
pub(crate) fn params(nr: u64) -> PagemapParams {
    PagemapParams::private(PageCount::new(nr), Owner(0xd0), Arc::new(NoopOps))
}

/// A space of 2^(12 + 16) bytes: 65536 pages.
pub(crate) fn small_space() -> DevicePrivateSpace {
    DevicePrivateSpace::with_config(SpaceConfig {
        space_shift: Some(28),
        ..SpaceConfig::default()
    })
}

/// Everything observable about a space: each pagemap's id, range, pgmap
/// reference count, unmapped flag and every page's eight words.
pub(crate) type SpaceSnap = Vec<(u64, (u64, u64), i64, bool, Vec<[u64; 8]>)>;

pub(crate) fn space_snap(s: &DevicePrivateSpace) -> SpaceSnap {
    s.validate().expect("space valid");
    let g = s.read();
    g.pagemaps()
        .map(|p| {
            p.validate().expect("pagemap valid");
            let r = p.range();
            (
                p.id(),
                (r.start().get(), r.end().get()),
                p.percpu_ref().count(),
                p.is_unmapped(),
                p.pages().iter().map(|pg| pg.words()).collect(),
            )
        })
        .collect()
}

/// The words of every page of one pagemap plus its ref count (for a
/// pagemap that is no longer in a space).
pub(crate) fn pgmap_snap(p: &DevPagemap) -> (i64, bool, Vec<[u64; 8]>) {
    (
        p.percpu_ref().count(),
        p.is_unmapped(),
        p.pages().iter().map(|pg| pg.words()).collect(),
    )
}

/// Checks that `f` leaves `s` exactly as it was (and valid).
#[track_caller]
pub(crate) fn space_unchanged<R>(s: &DevicePrivateSpace, what: &str, f: impl FnOnce() -> R) -> R {
    let before = space_snap(s);
    let r = np(what, f);
    assert_eq!(before, space_snap(s), "{what}: space changed");
    r
}
