//! The bad-input catalogue (`docs/errors.md`) for `devpriv-rangetree`: one test per row
//! or one table-driven test per entry point.
//!
//! Every test feeds a public entry point an invalid input and checks three
//! things: the errno (or the documented "WARN and continue" behaviour), that
//! the call did not panic (each call runs under `catch_unwind`), and that
//! the state it could have touched is unchanged: `validate()` on the
//! structure plus a snapshot taken before and compared after.
//!
//! Run: `cargo test -p devpriv-rangetree --test errors`.

#[path = "../../../tests/support/bad_input.rs"]
mod bad_input;

use bad_input::{assert_errno, np};
use devpriv_core::Errno;
use devpriv_rangetree::RangeTree;

fn tree_snap(t: &RangeTree<u32>) -> Vec<(u64, u64, u32)> {
    t.validate().expect("tree valid");
    t.read()
        .iter()
        .map(|(r, v)| (*r.start(), *r.end(), *v))
        .collect()
}

// ---------------------------------------------------------------------------
// devpriv-rangetree
// ---------------------------------------------------------------------------

fn tree() -> RangeTree<u32> {
    let t = RangeTree::new();
    t.insert_range(0x100..=0x1ff, 1).unwrap();
    t.insert_range(0x400..=0x4ff, 2).unwrap();
    t
}

/// (size, align, window, errno) rows shared by `alloc_range`,
/// `alloc_rrange`, `find_gap` and `find_gap_rev`.
/// (what, size, align, window, errno).
type AllocRow = (&'static str, u64, u64, (u64, u64), Errno);

const ALLOC_BAD: &[AllocRow] = &[
    ("zero size", 0, 1, (0, 0xffff), Errno::EINVAL),
    ("align 0", 1, 0, (0, 0xffff), Errno::EINVAL),
    ("align not a power of two", 1, 3, (0, 0xffff), Errno::EINVAL),
    ("inverted window", 1, 1, (0x10, 0x0f), Errno::EINVAL),
    (
        "size larger than the window",
        0x11,
        1,
        (0, 0xf),
        Errno::EINVAL,
    ),
    ("size u64::MAX", u64::MAX, 1, (0, 0xffff), Errno::EINVAL),
    (
        "size u64::MAX in the full key space",
        u64::MAX,
        1,
        (0, u64::MAX),
        Errno::EBUSY,
    ),
    (
        "aligned start past u64::MAX - size",
        2,
        1 << 63,
        (1 << 63 | 1, u64::MAX),
        Errno::EINVAL,
    ),
    (
        "no aligned start in the window",
        1,
        0x100,
        (0x101, 0x1fe),
        Errno::EINVAL,
    ),
    ("window full", 0x100, 1, (0x100, 0x1ff), Errno::EBUSY),
    ("no gap large enough", 0x300, 1, (0, 0x5ff), Errno::EBUSY),
];

#[test]
fn rangetree_alloc_range_and_find_gap() {
    let t = tree();
    let before = tree_snap(&t);
    for &(what, size, align, (min, max), e) in ALLOC_BAD {
        let r = np(what, || t.alloc_range(size, align, min..=max, 7));
        match r {
            Ok(v) => panic!("alloc_range {what}: got Ok({v})"),
            Err(err) => {
                assert_eq!(err.cause, e, "alloc_range {what}");
                assert_eq!(err.value, 7, "alloc_range {what}: value comes back");
            }
        }
        let r = np(what, || t.alloc_rrange(size, align, min..=max, 8));
        assert_errno(&format!("alloc_rrange {what}"), r, e);
        let r = np(what, || t.find_gap(size, align, min..=max));
        assert_errno(&format!("find_gap {what}"), r, e);
        let r = np(what, || t.find_gap_rev(size, align, min..=max));
        assert_errno(&format!("find_gap_rev {what}"), r, e);
        assert_eq!(before, tree_snap(&t), "{what}: tree changed");
    }
}

#[test]
fn rangetree_insert_range() {
    let t = tree();
    let before = tree_snap(&t);
    let rows: &[(&str, u64, u64, Errno)] = &[
        ("inverted range", 0x20, 0x1f, Errno::EINVAL),
        ("inverted at u64::MAX", u64::MAX, 0, Errno::EINVAL),
        ("overlaps the start of a range", 0xf0, 0x100, Errno::EEXIST),
        ("overlaps the end of a range", 0x1ff, 0x200, Errno::EEXIST),
        ("inside a range", 0x180, 0x180, Errno::EEXIST),
        ("covers two ranges", 0, u64::MAX, Errno::EEXIST),
    ];
    for &(what, first, last, e) in rows {
        let r = np(what, || t.insert_range(first..=last, 9));
        match r {
            Ok(()) => panic!("insert_range {what}: got Ok"),
            Err(err) => {
                assert_eq!(err.cause, e, "insert_range {what}");
                assert_eq!(err.value, 9);
            }
        }
        assert_eq!(before, tree_snap(&t), "{what}: tree changed");
    }
}

#[test]
fn rangetree_erase_of_a_gap_is_none() {
    let t = tree();
    let before = tree_snap(&t);
    for i in [0, 0xff, 0x200, 0x3ff, 0x500, u64::MAX] {
        assert_eq!(np("erase", || t.erase(i)), None, "erase({i:#x})");
    }
    assert_eq!(before, tree_snap(&t));
}
