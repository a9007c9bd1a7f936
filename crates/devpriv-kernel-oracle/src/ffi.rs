//! The C API of `csrc/dp_maple.h`, or, without kernel source, stand-ins
//! that no caller can reach (no [`DpMt`] pointer can exist then).

#![allow(
    unreachable_pub,
    reason = "private module; items are pub for the extern block"
)]

use std::ffi::{c_int, c_uint, c_ulong};

/// `struct dp_mt` (opaque).
#[repr(C)]
pub struct DpMt {
    _opaque: [u8; 0],
}

/// `struct dp_range`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DpRange {
    pub first: c_ulong,
    pub last: c_ulong,
    pub value: c_ulong,
}

pub const FLAVOUR_CHECK: c_uint = 1;
pub const FLAVOUR_ASAN: c_uint = 2;
pub const FLAVOUR_UBSAN: c_uint = 4;

#[cfg(not(devpriv_kernel_oracle_missing))]
unsafe extern "C" {
    pub safe fn dp_mt_flavour() -> c_uint;
    pub safe fn dp_mt_new() -> *mut DpMt;
    pub fn dp_mt_free(t: *mut DpMt);
    pub fn dp_mt_alloc(
        t: *mut DpMt,
        startp: *mut c_ulong,
        value: c_ulong,
        size: c_ulong,
        min: c_ulong,
        max: c_ulong,
        rev: c_int,
    ) -> c_int;
    pub fn dp_mt_empty_area(
        t: *mut DpMt,
        startp: *mut c_ulong,
        size: c_ulong,
        min: c_ulong,
        max: c_ulong,
        rev: c_int,
    ) -> c_int;
    pub fn dp_mt_insert_range(t: *mut DpMt, first: c_ulong, last: c_ulong, value: c_ulong)
    -> c_int;
    pub fn dp_mt_erase(t: *mut DpMt, index: c_ulong, value: *mut c_ulong) -> c_int;
    pub fn dp_mt_load(t: *mut DpMt, index: c_ulong, value: *mut c_ulong) -> c_int;
    pub fn dp_mt_walk(
        t: *mut DpMt,
        index: c_ulong,
        first: *mut c_ulong,
        last: *mut c_ulong,
        value: *mut c_ulong,
    ) -> c_int;
    pub fn dp_mt_find(
        t: *mut DpMt,
        index: c_ulong,
        first: *mut c_ulong,
        last: *mut c_ulong,
        value: *mut c_ulong,
    ) -> c_int;
    pub fn dp_mt_dump(t: *mut DpMt, out: *mut DpRange, cap: usize) -> usize;
    pub fn dp_mt_validate(t: *mut DpMt) -> c_int;
}

/// Stand-ins without kernel source. `dp_mt_new` returns NULL, so the
/// wrapper never makes a tree and never calls the others.
#[cfg(devpriv_kernel_oracle_missing)]
mod missing {
    use super::*;

    const NO_TREE: &str = "no maple tree exists without kernel source";

    pub fn dp_mt_flavour() -> c_uint {
        0
    }
    pub fn dp_mt_new() -> *mut DpMt {
        std::ptr::null_mut()
    }
    pub unsafe fn dp_mt_free(_: *mut DpMt) {
        unreachable!("{NO_TREE}")
    }
    pub unsafe fn dp_mt_alloc(
        _: *mut DpMt,
        _: *mut c_ulong,
        _: c_ulong,
        _: c_ulong,
        _: c_ulong,
        _: c_ulong,
        _: c_int,
    ) -> c_int {
        unreachable!("{NO_TREE}")
    }
    pub unsafe fn dp_mt_empty_area(
        _: *mut DpMt,
        _: *mut c_ulong,
        _: c_ulong,
        _: c_ulong,
        _: c_ulong,
        _: c_int,
    ) -> c_int {
        unreachable!("{NO_TREE}")
    }
    pub unsafe fn dp_mt_insert_range(_: *mut DpMt, _: c_ulong, _: c_ulong, _: c_ulong) -> c_int {
        unreachable!("{NO_TREE}")
    }
    pub unsafe fn dp_mt_erase(_: *mut DpMt, _: c_ulong, _: *mut c_ulong) -> c_int {
        unreachable!("{NO_TREE}")
    }
    pub unsafe fn dp_mt_load(_: *mut DpMt, _: c_ulong, _: *mut c_ulong) -> c_int {
        unreachable!("{NO_TREE}")
    }
    pub unsafe fn dp_mt_walk(
        _: *mut DpMt,
        _: c_ulong,
        _: *mut c_ulong,
        _: *mut c_ulong,
        _: *mut c_ulong,
    ) -> c_int {
        unreachable!("{NO_TREE}")
    }
    pub unsafe fn dp_mt_find(
        _: *mut DpMt,
        _: c_ulong,
        _: *mut c_ulong,
        _: *mut c_ulong,
        _: *mut c_ulong,
    ) -> c_int {
        unreachable!("{NO_TREE}")
    }
    pub unsafe fn dp_mt_dump(_: *mut DpMt, _: *mut DpRange, _: usize) -> usize {
        unreachable!("{NO_TREE}")
    }
    pub unsafe fn dp_mt_validate(_: *mut DpMt) -> c_int {
        unreachable!("{NO_TREE}")
    }
}

#[cfg(devpriv_kernel_oracle_missing)]
pub use missing::*;
