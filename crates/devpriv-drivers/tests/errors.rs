//! The bad-input catalogue (`docs/errors.md`) for `devpriv-drivers`: one test per row
//! or one table-driven test per entry point.
//!
//! Every test feeds a public entry point an invalid input and checks three
//! things: the errno (or the documented "WARN and continue" behaviour), that
//! the call did not panic (each call runs under `catch_unwind`), and that
//! the state it could have touched is unchanged: `validate()` on the
//! structure plus a snapshot taken before and compared after.
//!
//! Run: `cargo test -p devpriv-drivers --test errors`.

#[path = "../../../tests/support/bad_input.rs"]
mod bad_input;
#[path = "../../../tests/support/machine.rs"]
mod machine;
#[path = "../../../tests/support/space.rs"]
mod space;

use bad_input::{assert_errno, np};
use devpriv_core::{DevicePrivateOffset, Errno, PageCount};
use devpriv_drivers::test_hmm::{DmirrorConfig, DmirrorDevice, HmmDmirrorCmd};
use devpriv_drivers::xe_pool::DrmBuddy;
use devpriv_migrate::{Mm, MmConfig};
use devpriv_pagemap::{Owner, ReinitPolicy};
use machine::{BASE, VMA_LEN, machine, mm_unchanged};

// ---------------------------------------------------------------------------
// devpriv (root): DrmBuddy
// ---------------------------------------------------------------------------

#[test]
fn drm_buddy_bad_inputs() {
    for (what, size, max) in [
        ("size 0", 0, 0),
        (
            "max_order above the limit",
            1 << 20,
            DrmBuddy::MAX_ORDER_LIMIT + 1,
        ),
        ("max_order u32::MAX", 1 << 20, u32::MAX),
    ] {
        assert_errno(
            what,
            np(what, || DrmBuddy::new(size, max)).map(|_| ()),
            Errno::EINVAL,
        );
    }
    let mut b = DrmBuddy::new(8, 3).unwrap();
    let a = b.alloc(2).unwrap();
    let snap = |b: &DrmBuddy| {
        b.validate().unwrap();
        (
            b.avail(),
            (0..=b.max_order())
                .map(|o| b.free_blocks(o))
                .collect::<Vec<_>>(),
        )
    };
    let before = snap(&b);
    let r = np("alloc order above max", || b.alloc(4));
    assert_errno("alloc order above max", r, Errno::EINVAL);
    let r = np("alloc u32::MAX", || b.alloc(u32::MAX));
    assert_errno("alloc u32::MAX", r, Errno::EINVAL);
    let r = np("alloc too large for what is free", || b.alloc(3));
    assert_errno("alloc no space", r, Errno::ENOSPC);
    let r = np("free unallocated", || b.free(a + 4));
    assert_errno("free of an unallocated block", r, Errno::EINVAL);
    let r = np("free inside a block", || b.free(a + 1));
    assert_errno("free inside an allocated block", r, Errno::EINVAL);
    let r = np("free past the end", || b.free(u64::MAX));
    assert_errno("free past the end", r, Errno::EINVAL);
    assert_eq!(before, snap(&b));
    b.free(a).unwrap();
    let before = snap(&b);
    let r = np("free twice", || b.free(a));
    assert_errno("free twice", r, Errno::EINVAL);
    assert_eq!(before, snap(&b));
}

// ---------------------------------------------------------------------------
// devpriv-drivers: dmirror, the Xe pool workload
// ---------------------------------------------------------------------------

#[test]
fn dmirror_bad_inputs() {
    let m = machine();
    let mut cfg = DmirrorConfig::with_chunk_pages(PageCount::ZERO);
    let r = mm_unchanged(&m, "dmirror zero chunk", || {
        DmirrorDevice::new(&m.mem, Owner(0xd1), cfg)
    });
    assert_errno(
        "DmirrorDevice::new zero chunk",
        r.map(|_| ()),
        Errno::EINVAL,
    );
    cfg = DmirrorConfig::with_chunk_pages(PageCount::new(64));
    cfg.max_chunks = 0;
    let r = mm_unchanged(&m, "dmirror zero max_chunks", || {
        DmirrorDevice::new(&m.mem, Owner(0xd1), cfg)
    });
    assert_errno(
        "DmirrorDevice::new zero max_chunks",
        r.map(|_| ()),
        Errno::EINVAL,
    );
    let dev = DmirrorDevice::new(
        &m.mem,
        Owner(0xd1),
        DmirrorConfig::with_chunk_pages(PageCount::new(64)),
    )
    .unwrap();
    let other = Mm::new(&m.mem, MmConfig::default());
    let d = dev.open(&m.mm);
    mm_unchanged(&m, "dmirror", || {
        assert_errno(
            "read_page foreign offset",
            dev.read_page(DevicePrivateOffset::new(1 << 30)),
            Errno::EINVAL,
        );
        assert_errno(
            "write_page foreign offset",
            dev.write_page(DevicePrivateOffset::new(1 << 30), 1),
            Errno::EINVAL,
        );
        let rows: &[(&str, u64, u64)] = &[
            ("unaligned addr", BASE + 1, 1),
            ("zero npages", BASE, 0),
            ("overflowing npages", BASE, u64::MAX),
        ];
        for &(what, addr, n) in rows {
            let mut c = HmmDmirrorCmd::new(addr, n);
            assert_errno(
                &format!("read {what}"),
                d.read(&m.mm, &mut c),
                Errno::EINVAL,
            );
            let mut c = HmmDmirrorCmd::new(addr, n);
            assert_errno(
                &format!("write {what}"),
                d.write(&m.mm, &mut c, &[0]),
                Errno::EINVAL,
            );
            let mut c = HmmDmirrorCmd::new(addr, n);
            assert_errno(
                &format!("migrate_to_dev {what}"),
                d.migrate_to_dev(&m.mm, &mut c),
                Errno::EINVAL,
            );
            let mut c = HmmDmirrorCmd::new(addr, n);
            assert_errno(
                &format!("migrate_to_sys {what}"),
                d.migrate_to_sys(&m.mm, &mut c),
                Errno::EINVAL,
            );
            let mut c = HmmDmirrorCmd::new(addr, n);
            assert_errno(
                &format!("snapshot {what}"),
                d.snapshot(&m.mm, &mut c),
                Errno::EINVAL,
            );
        }
        let mut c = HmmDmirrorCmd::new(BASE, 1);
        assert_errno("read other mm", d.read(&other, &mut c), Errno::EINVAL);
        let mut c = HmmDmirrorCmd::new(BASE, 2);
        assert_errno(
            "write data too short",
            d.write(&m.mm, &mut c, &[0]),
            Errno::EINVAL,
        );
        let mut c = HmmDmirrorCmd::new(BASE + VMA_LEN, 1);
        assert_errno(
            "write read-only VMA",
            d.write(&m.mm, &mut c, &[0]),
            Errno::EPERM,
        );
        assert_errno("release other mm", d.release(&other), Errno::EINVAL);
    });
}

#[test]
fn xe_pool_run_bad_configs() {
    use devpriv_drivers::xe_pool::{self, XeConfig};
    let ok = XeConfig::new(ReinitPolicy::AtAlloc, 1, 1, 1);
    let rows = [
        ("threads 0", XeConfig { threads: 0, ..ok }),
        (
            "iterations 0",
            XeConfig {
                iterations: 0,
                ..ok
            },
        ),
        ("resident 0", XeConfig { resident: 0, ..ok }),
        (
            "vram_pages 0",
            XeConfig {
                vram_pages: 0,
                ..ok
            },
        ),
        (
            "vram_pages not a multiple of 512",
            XeConfig {
                vram_pages: 513,
                ..ok
            },
        ),
    ];
    for (what, cfg) in rows {
        let r = np(what, || xe_pool::run(&cfg));
        assert_errno(
            &format!("xe_pool::run {what}"),
            r.map(|_| ()),
            Errno::EINVAL,
        );
    }
}
