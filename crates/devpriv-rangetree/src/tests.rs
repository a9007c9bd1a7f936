//! Unit tests. Diagrams follow rangemap's style: `●` is an occupied key,
//! `◌` a free one, `◆…◇` the range an operation asks for or returns.

use super::*;
use devpriv_core::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use proptest::prelude::*;
use std::collections::BTreeMap;

type Snapshot = Vec<(RangeInclusive<u64>, u32)>;

fn snapshot(t: &RangeTree<u32>) -> Snapshot {
    t.read().iter().map(|(r, v)| (r, *v)).collect()
}

fn tree_with(ranges: &[RangeInclusive<u64>]) -> RangeTree<u32> {
    let t = RangeTree::new();
    for (i, r) in ranges.iter().enumerate() {
        t.insert_range(r.clone(), u32::try_from(i).unwrap())
            .unwrap();
    }
    t.validate().unwrap();
    t
}

#[test]
fn first_allocations_pack_from_zero() {
    // 0 1 2 3 4 5 6 7 8 9
    // ◆---◇ ◆---◇ ◆---◇ ◌  three allocations of 2 in 0..=9
    let t = RangeTree::new();
    assert_eq!(t.alloc_range(2, 1, 0..=9, 'a').unwrap(), 0);
    assert_eq!(t.alloc_range(2, 1, 0..=9, 'b').unwrap(), 2);
    assert_eq!(t.alloc_range(2, 1, 0..=9, 'c').unwrap(), 4);
    assert_eq!(t.len(), 3);
    t.validate().unwrap();
}

#[test]
fn lowest_fit_skips_a_gap_that_is_too_small() {
    // 0 1 2 3 4 5 6 7 8 9
    // ● ◌ ● ● ◌ ◌ ◌ ● ◌ ◌
    //         ◆---◇        a request for 2 skips the hole at 1
    let t = tree_with(&[0..=0, 2..=3, 7..=7]);
    assert_eq!(t.alloc_range(2, 1, 0..=9, 9).unwrap(), 4);
    // Now only 1, 6, 8, 9 are free; the next 2 goes to 8.
    assert_eq!(t.alloc_range(2, 1, 0..=9, 9).unwrap(), 8);
    assert_eq!(
        t.alloc_range(2, 1, 0..=9, 9).unwrap_err().cause,
        Errno::EBUSY
    );
}

#[test]
fn highest_fit_takes_the_top_of_the_highest_gap() {
    // 0 1 2 3 4 5 6 7 8 9
    // ◌ ◌ ● ◌ ◌ ◌ ● ◌ ◌ ●
    //               ◆-◇      alloc_rrange(2) lands at 7..=8
    let t = tree_with(&[2..=2, 6..=6, 9..=9]);
    assert_eq!(t.alloc_rrange(2, 1, 0..=9, 9).unwrap(), 7);
    // 3..=5 is next highest: the top of it.
    assert_eq!(t.alloc_rrange(2, 1, 0..=9, 9).unwrap(), 4);
    assert_eq!(t.alloc_rrange(2, 1, 0..=9, 9).unwrap(), 0);
    assert_eq!(
        t.alloc_rrange(2, 1, 0..=9, 9).unwrap_err().cause,
        Errno::EBUSY
    );
    t.validate().unwrap();
}

#[test]
fn alignment_rounds_the_start_up() {
    // 0 1 2 3 4 5 6 7 8 9
    // ● ◌ ◌ ◌ ◆-------◇ ◌  align 4: the hole at 1..=3 cannot start aligned
    let t = tree_with(&[0..=0]);
    assert_eq!(t.alloc_range(4, 4, 0..=15, 1).unwrap(), 4);
    // Reverse: the highest aligned start that fits in 8..=15 is 12.
    assert_eq!(t.alloc_rrange(4, 4, 0..=15, 2).unwrap(), 12);
    // Align 1 is the kernel's behaviour: the hole at 1 is used.
    assert_eq!(t.alloc_range(3, 1, 0..=15, 3).unwrap(), 1);
}

#[test]
fn window_edges_are_inclusive() {
    // 0 1 2 3 4 5 6 7 8 9
    // ◌ ◌ ◌ ◆---◇ ◌ ◌ ◌ ◌ ◌  window 3..=4, size 2: exactly the window
    let t = RangeTree::new();
    assert_eq!(t.alloc_range(2, 1, 3..=4, 0).unwrap(), 3);
    assert_eq!(
        t.alloc_range(1, 1, 3..=4, 0).unwrap_err().cause,
        Errno::EBUSY
    );
    // A gap that straddles the window start is clipped to it.
    assert_eq!(t.alloc_range(1, 1, 2..=9, 0).unwrap(), 2);
    assert_eq!(t.alloc_rrange(1, 1, 0..=9, 0).unwrap(), 9);
}

#[test]
fn the_top_of_the_key_space_is_usable() {
    let t = RangeTree::new();
    let top = t.alloc_rrange(16, 1, 0..=u64::MAX, 1).unwrap();
    assert_eq!(top, u64::MAX - 15);
    assert_eq!(t.read().load(u64::MAX).unwrap().0, top..=u64::MAX);
    // With the last key taken, a lowest fit must not overflow past it:
    // the five free keys below the top range are exactly a request of 5.
    assert_eq!(
        t.alloc_range(5, 1, u64::MAX - 20..=u64::MAX, 2).unwrap(),
        u64::MAX - 20
    );
    assert_eq!(
        t.alloc_range(1, 1, u64::MAX - 20..=u64::MAX, 3)
            .unwrap_err()
            .cause,
        Errno::EBUSY
    );
    t.insert_range(0..=u64::MAX - 21, 4).unwrap();
    assert_eq!(
        t.alloc_range(1, 1, 0..=u64::MAX, 5).unwrap_err().cause,
        Errno::EBUSY
    );
    assert_eq!(t.erase(7).unwrap(), 4);
    t.validate().unwrap();
}

#[test]
fn find_gap_answers_what_alloc_would_do_and_stores_nothing() {
    let t = tree_with(&[2..=3, 7..=7]);
    assert_eq!(t.find_gap(3, 1, 0..=9), Ok(4));
    assert_eq!(t.find_gap_rev(2, 1, 0..=9), Ok(8));
    assert_eq!(t.find_gap(4, 1, 0..=9), Err(Errno::EBUSY));
    assert_eq!(t.find_gap(0, 1, 0..=9), Err(Errno::EINVAL));
    assert_eq!(t.len(), 2);
    assert_eq!(t.alloc_range(3, 1, 0..=9, 5).unwrap(), 4);
}

#[test]
fn insert_range_rejects_any_overlap() {
    // 0 1 2 3 4 5 6 7 8 9
    // ◌ ◌ ● ● ● ◌ ◌ ◌ ◌ ◌
    let t = tree_with(&[2..=4]);
    for bad in [0..=2, 4..=6, 3..=3, 0..=9, 2..=4] {
        let e = t.insert_range(bad.clone(), 7).unwrap_err();
        assert_eq!((e.cause, e.value), (Errno::EEXIST, 7), "{bad:?}");
    }
    // Touching neighbours are fine.
    t.insert_range(0..=1, 8).unwrap();
    t.insert_range(5..=5, 9).unwrap();
    assert_eq!(snapshot(&t), vec![(0..=1, 8), (2..=4, 0), (5..=5, 9)]);
}

#[test]
fn erase_takes_the_whole_range_from_any_index() {
    // 0 1 2 3 4 5 6 7 8 9
    // ◌ ◌ ◆-----◇ ◌ ◌ ◌ ◌ ◌  erase(3) removes 2..=4
    let t = tree_with(&[2..=4, 7..=8]);
    assert_eq!(t.erase(3), Some(0));
    assert_eq!(t.erase(3), None, "already gone");
    assert_eq!(t.erase(5), None, "a gap");
    assert_eq!(snapshot(&t), vec![(7..=8, 1)]);
    // The space is reusable: the lowest fit returns the same start.
    assert_eq!(t.alloc_range(3, 1, 0..=9, 5).unwrap(), 0);
    assert_eq!(t.alloc_range(3, 1, 2..=9, 5).unwrap(), 3);
}

#[test]
fn load_finds_the_first_and_last_key_and_nothing_between() {
    let t = tree_with(&[10..=19, 30..=39]);
    let g = t.read();
    assert_eq!(g.load(10).map(|(r, v)| (r, *v)), Some((10..=19, 0)));
    assert_eq!(g.load(19).map(|(r, v)| (r, *v)), Some((10..=19, 0)));
    assert!(
        g.load(9).is_none() && g.load(20).is_none() && g.load(29).is_none() && g.load(40).is_none()
    );
    assert_eq!(g.find_from(20).map(|(r, _)| r), Some(30..=39));
    assert!(g.find_from(40).is_none());
}

/// The kernel's `check_alloc_range()` shape: one tree, a table applied in
/// order, each row (min, max, size, expected start or errno). Our numbers.
#[test]
fn check_alloc_range_table() {
    // Occupied: [0x1000, 0x1fff], [0x3000, 0x3fff], [0x8000, 0xffff].
    let t = tree_with(&[0x1000..=0x1fff, 0x3000..=0x3fff, 0x8000..=0xffff]);
    let table: &[(u64, u64, u64, Result<u64, Errno>)] = &[
        (0, 0xffff, 0x1000, Ok(0)),              // the hole below the first range
        (0, 0xffff, 0x1000, Ok(0x2000)),         // next hole
        (0, 0xffff, 0x4000, Ok(0x4000)),         // exactly fills 0x4000..=0x7fff
        (0, 0xffff, 1, Err(Errno::EBUSY)),       // window full
        (0x10000, 0x10fff, 0x1000, Ok(0x10000)), // window above everything
        (0x10000, 0x10fff, 1, Err(Errno::EBUSY)),
        (0x20000, 0x1ffff, 1, Err(Errno::EINVAL)), // inverted window
        (0x20000, 0x20000, 2, Err(Errno::EINVAL)), // window smaller than the size
        (0x20000, 0x20001, 2, Ok(0x20000)),        // ... and exactly the size
        (0, u64::MAX, 0, Err(Errno::EINVAL)),      // size 0
        (0, u64::MAX, u64::MAX, Err(Errno::EBUSY)), // u64::MAX keys need an empty tree
        (0x20002, u64::MAX, u64::MAX - 0x20001, Ok(0x20002)), // ... or all of the rest
    ];
    for (i, &(min, max, size, want)) in table.iter().enumerate() {
        let got = t.alloc_range(size, 1, min..=max, 0).map_err(|e| e.cause);
        assert_eq!(
            got, want,
            "row {i}: min {min:#x} max {max:#x} size {size:#x}"
        );
        t.validate().unwrap();
    }
}

/// The same shape for `mtree_alloc_rrange()` (`check_alloc_rev_range()`).
#[test]
fn check_alloc_rev_range_table() {
    let t = tree_with(&[0x1000..=0x1fff, 0x3000..=0x3fff, 0x8000..=0xffff]);
    let table: &[(u64, u64, u64, Result<u64, Errno>)] = &[
        (0, 0xffff, 0x1000, Ok(0x7000)), // top of the highest hole
        (0, 0xffff, 0x3000, Ok(0x4000)), // rest of that hole
        (0, 0xffff, 0x1000, Ok(0x2000)),
        (0, 0xffff, 0x800, Ok(0x800)),
        (0, 0xffff, 0x800, Ok(0)),
        (0, 0xffff, 1, Err(Errno::EBUSY)),
        (0, 0x10fff, 0x1000, Ok(0x10000)), // above the last range
        (5, 4, 1, Err(Errno::EINVAL)),
    ];
    for (i, &(min, max, size, want)) in table.iter().enumerate() {
        let got = t.alloc_rrange(size, 1, min..=max, 0).map_err(|e| e.cause);
        assert_eq!(got, want, "row {i}");
        t.validate().unwrap();
    }
}

/// Every bad request: the errno, the value handed back, and no change.
#[test]
fn bad_input_leaves_the_tree_unchanged() {
    let t = tree_with(&[0x10..=0x1f, 0x40..=0x7f]);
    let before = snapshot(&t);
    let alloc_cases: &[(u64, u64, RangeInclusive<u64>, Errno)] = &[
        (0, 1, 0..=0xff, Errno::EINVAL),                        // zero size
        (4, 0, 0..=0xff, Errno::EINVAL),                        // zero alignment
        (4, 3, 0..=0xff, Errno::EINVAL),                        // alignment not a power of two
        (4, 1, RangeInclusive::new(0x20, 0x10), Errno::EINVAL), // inverted window
        (4, 1, 0x20..=0x22, Errno::EINVAL),                     // window too small
        (4, 8, 0x21..=0x2a, Errno::EINVAL),                     // no aligned start fits the window
        (2, 1 << 63, u64::MAX - 1..=u64::MAX, Errno::EINVAL), // aligning the window start overflows
        (2, 1 << 63, 1..=1 << 63, Errno::EINVAL), // the only aligned start leaves no room
        (0x40, 1, 0x20..=0x7f, Errno::EBUSY),     // room exists, but not free
    ];
    for (size, align, window, errno) in alloc_cases.iter().cloned() {
        for rev in [false, true] {
            let r = if rev {
                t.alloc_rrange(size, align, window.clone(), 99)
            } else {
                t.alloc_range(size, align, window.clone(), 99)
            };
            let e = r.unwrap_err();
            assert_eq!(
                (e.cause, e.value),
                (errno, 99),
                "size {size} align {align} {window:?} rev {rev}"
            );
            assert_eq!(snapshot(&t), before);
            t.validate().unwrap();
        }
    }
    let insert_cases: &[(RangeInclusive<u64>, Errno)] = &[
        (RangeInclusive::new(5, 4), Errno::EINVAL), // inverted
        (0x1f..=0x20, Errno::EEXIST),
        (0..=u64::MAX, Errno::EEXIST),
    ];
    for (range, errno) in insert_cases.iter().cloned() {
        let e = t.insert_range(range.clone(), 99).unwrap_err();
        assert_eq!((e.cause, e.value), (errno, 99), "{range:?}");
        assert_eq!(snapshot(&t), before);
    }
    assert_eq!(t.erase(0x30), None);
    assert_eq!(snapshot(&t), before);
    assert_eq!(t.len(), 2);
    t.validate().unwrap();
}

#[test]
fn errors_convert_to_errno_and_print_the_cause() {
    let t: RangeTree<u32> = RangeTree::new();
    let e = t.alloc_range(0, 1, 0..=1, 1).unwrap_err();
    assert_eq!(
        e.to_string(),
        "range allocation failed: EINVAL (Invalid argument)"
    );
    assert_eq!(Errno::from(e), Errno::EINVAL);
    let f = || -> Result<u64, Errno> { Ok(t.alloc_range(1, 1, 0..=0, 1)?) };
    assert_eq!(f(), Ok(0));
    assert_eq!(f(), Err(Errno::EBUSY));
}

#[test]
fn deep_trees_keep_every_invariant() {
    // Enough entries for four levels, then erase most of them again so the
    // merge and borrow paths all run.
    let t = RangeTree::new();
    // Miri is ~1000x slower; 600 entries still make three levels.
    let n = if cfg!(miri) { 600u32 } else { 5000 };
    for i in 0..n {
        // Scatter the insertion order so splits happen everywhere.
        // 2999 is coprime to 5000 and 600, so this visits every k once.
        let k = u64::from(i * 2999 % n);
        t.insert_range(k * 4..=k * 4 + 2, u32::try_from(k).unwrap())
            .unwrap();
    }
    t.validate().unwrap();
    assert_eq!(t.len(), n as usize);
    // Every key-3 hole is a gap of one: a size-1 lowest fit finds the first.
    assert_eq!(t.alloc_range(1, 1, 0..=u64::MAX, 0).unwrap(), 3);
    assert_eq!(t.erase(3), Some(0));
    for k in (0..u64::from(n)).filter(|k| k % 7 != 0) {
        assert_eq!(t.erase(k * 4 + 1), Some(u32::try_from(k).unwrap()));
    }
    t.validate().unwrap();
    let g = t.read();
    let keys: Vec<u64> = g.iter().map(|(r, _)| *r.start() / 4).collect();
    assert_eq!(
        keys,
        (0..u64::from(n)).filter(|k| k % 7 == 0).collect::<Vec<_>>()
    );
    drop(g);
    // Every hole is now 25 keys (3..=27, 31..=55, ...): a request of 25
    // takes the first; one of 26 fits only after the last entry.
    let last_k = (u64::from(n) - 1) / 7 * 7;
    assert_eq!(t.alloc_range(25, 1, 0..=u64::MAX, 1).unwrap(), 3);
    assert_eq!(
        t.alloc_range(26, 1, 0..=u64::MAX, 1).unwrap(),
        last_k * 4 + 3
    );
    assert_eq!(
        t.alloc_rrange(25, 1, 0..=last_k * 4 - 1, 1).unwrap(),
        last_k * 4 - 25
    );
    t.validate().unwrap();
}

/// Counts drops, to show every value is dropped exactly once.
struct Tracked(std::sync::Arc<AtomicUsize>);
impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, AtomicOrdering::Relaxed);
    }
}

#[test]
fn values_are_dropped_once_and_never_while_a_reader_holds_them() {
    // Values are `Arc`s (as the kernel stores pointers); the tracked object
    // inside is dropped when the last copy goes.
    let drops = std::sync::Arc::new(AtomicUsize::new(0));
    let new = || std::sync::Arc::new(Tracked(drops.clone()));
    let t = RangeTree::new();
    for i in 0..100 {
        t.insert_range(i * 10..=i * 10 + 5, new()).ok().unwrap();
    }
    std::thread::scope(|s| {
        let g = t.read();
        let (_, held) = g.load(15).unwrap();
        s.spawn(|| {
            for i in 100..150 {
                t.insert_range(i * 10..=i * 10 + 5, new()).ok().unwrap();
            }
            // Returns at once; the copy in the reader's version lives on.
            drop(t.erase(15).unwrap());
        })
        .join()
        .unwrap();
        assert!(t.retired() > 0, "replaced roots are kept for the reader");
        assert_eq!(
            drops.load(AtomicOrdering::Relaxed),
            0,
            "the reader still sees the erased value"
        );
        assert_eq!(std::sync::Arc::strong_count(held), 1);
        drop(g);
    });
    assert_eq!(
        drops.load(AtomicOrdering::Relaxed),
        0,
        "no grace period has been waited for yet"
    );
    t.synchronize();
    assert_eq!(t.retired(), 0);
    assert_eq!(drops.load(AtomicOrdering::Relaxed), 1);
    drop(t);
    assert_eq!(drops.load(AtomicOrdering::Relaxed), 150);
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "inside a read-side section")]
fn synchronize_inside_a_read_section_panics_in_debug_builds() {
    let t = tree_with(&[0..=1]);
    let _g = t.read();
    t.synchronize();
}

#[test]
fn concurrent_readers_see_only_whole_entries() {
    // Each value is the first key of its range (or PENDING for the moment
    // between allocating and re-storing it); readers check that every lookup
    // returns a range containing the key and a matching value.
    const PENDING: u64 = u64::MAX;
    let t: RangeTree<u64> = RangeTree::new();
    let stop = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for r in 0..2u64 {
            let (t, stop) = (&t, &stop);
            s.spawn(move || {
                let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ r;
                let mut hits = 0u64;
                while stop.load(AtomicOrdering::Relaxed) == 0 {
                    let g = t.read();
                    for _ in 0..64 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let k = x % 4096;
                        if let Some((range, v)) = g.load(k) {
                            assert!(range.contains(&k));
                            assert!(*v == *range.start() || *v == PENDING, "{range:?} -> {v}");
                            hits += 1;
                        }
                    }
                    drop(g);
                    // Two spinning readers on a 2-core machine would starve
                    // the writer's grace periods of CPU time.
                    std::thread::yield_now();
                }
                assert!(hits > 0);
            });
        }
        let mut x = 1u64;
        for _ in 0..if cfg!(miri) { 40 } else { 1500 } {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let size = 1 + (x >> 60);
            match t.alloc_range(size, 1, 0..=4095, PENDING) {
                Ok(start) => {
                    // Re-store with the right value: erase, then insert.
                    t.erase(start);
                    t.insert_range(start..=start + size - 1, start).unwrap();
                }
                Err(e) => assert_eq!(e.cause, Errno::EBUSY),
            }
            if t.len() > 200 {
                let g = t.read();
                let victim = g
                    .find_from(x % 4096)
                    .or_else(|| g.find_from(0))
                    .map(|(r, _)| *r.start());
                drop(g);
                t.erase(victim.unwrap());
            }
        }
        stop.store(1, AtomicOrdering::Relaxed);
    });
    t.validate().unwrap();
}

// ---------------------------------------------------------------------------
// Proptest against a naive oracle.

/// The naive oracle: a `BTreeMap` of first -> (last, value) and brute-force
/// search over a small key universe.
mod naive {
    use super::*;

    pub(super) const UNIVERSE: u64 = 2047;

    #[derive(Default)]
    pub(super) struct Naive(pub(super) BTreeMap<u64, (u64, u32)>);

    impl Naive {
        pub(super) fn is_free(&self, first: u64, last: u64) -> bool {
            !self.0.iter().any(|(&f, &(l, _))| f <= last && l >= first)
        }

        pub(super) fn alloc(
            &mut self,
            size: u64,
            align: u64,
            min: u64,
            max: u64,
            v: u32,
            rev: bool,
        ) -> Result<u64, Errno> {
            if size == 0 || !align.is_power_of_two() || min > max || max - min < size - 1 {
                return Err(Errno::EINVAL);
            }
            let fits = |s: u64| {
                s >= min
                    && s.is_multiple_of(align)
                    && s.checked_add(size - 1).is_some_and(|e| e <= max)
            };
            let candidates: Vec<u64> = (min..=max).filter(|&s| fits(s)).collect();
            if candidates.is_empty() {
                return Err(Errno::EINVAL);
            }
            let mut it: Box<dyn Iterator<Item = u64>> = if rev {
                Box::new(candidates.into_iter().rev())
            } else {
                Box::new(candidates.into_iter())
            };
            let s = it
                .find(|&s| self.is_free(s, s + size - 1))
                .ok_or(Errno::EBUSY)?;
            self.0.insert(s, (s + size - 1, v));
            Ok(s)
        }

        pub(super) fn load(&self, k: u64) -> Option<(RangeInclusive<u64>, u32)> {
            self.0
                .range(..=k)
                .next_back()
                .filter(|(_, (l, _))| *l >= k)
                .map(|(&f, &(l, v))| (f..=l, v))
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        size: u64,
        align_log: u32,
        min: u64,
        max: u64,
        rev: bool,
    },
    Insert {
        first: u64,
        len: u64,
    },
    Erase {
        index: u64,
    },
    Load {
        index: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..=naive::UNIVERSE;
    prop_oneof![
        4 => (1..=24u64, 0..=3u32, key.clone(), key.clone(), any::<bool>())
            .prop_map(|(size, align_log, a, b, rev)| Op::Alloc { size, align_log, min: a.min(b), max: a.max(b), rev }),
        // Occasionally a malformed window, to cover EINVAL.
        1 => (0..=4u64, 0..=3u32, key.clone(), key.clone())
            .prop_map(|(size, align_log, min, max)| Op::Alloc { size, align_log, min, max, rev: false }),
        3 => (key.clone(), 1..=12u64).prop_map(|(first, len)| Op::Insert { first, len }),
        2 => key.clone().prop_map(|index| Op::Erase { index }),
        2 => key.prop_map(|index| Op::Load { index }),
    ]
}

proptest! {
    // Under Miri, a couple of short cases check memory safety; the logic
    // is covered by the normal run.
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 96 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn matches_the_naive_oracle(ops in prop::collection::vec(op(), 1..if cfg!(miri) { 60 } else { 400 })) {
        let tree = RangeTree::new();
        let mut model = naive::Naive::default();
        for (step, op) in ops.into_iter().enumerate() {
            let v = u32::try_from(step).unwrap();
            match op {
                Op::Alloc { size, align_log, min, max, rev } => {
                    let align = 1 << align_log;
                    let got = if rev {
                        tree.alloc_rrange(size, align, min..=max, v)
                    } else {
                        tree.alloc_range(size, align, min..=max, v)
                    };
                    let got = got.map_err(|e| { assert_eq!(e.value, v); e.cause });
                    prop_assert_eq!(got, model.alloc(size, align, min, max, v, rev), "step {}", step);
                }
                Op::Insert { first, len } => {
                    let last = (first + len - 1).min(naive::UNIVERSE);
                    let got = tree.insert_range(first..=last, v).map_err(|e| e.cause);
                    let want = if model.is_free(first, last) {
                        model.0.insert(first, (last, v));
                        Ok(())
                    } else {
                        Err(Errno::EEXIST)
                    };
                    prop_assert_eq!(got, want, "step {}", step);
                }
                Op::Erase { index } => {
                    let want = model.load(index).map(|(r, v)| { model.0.remove(r.start()); v });
                    prop_assert_eq!(tree.erase(index), want, "step {}", step);
                }
                Op::Load { index } => {
                    let got = tree.read().load(index).map(|(r, v)| (r, *v));
                    prop_assert_eq!(got, model.load(index), "step {}", step);
                }
            }
            prop_assert_eq!(tree.validate(), Ok(()));
            prop_assert_eq!(tree.len(), model.0.len());
            let want: Snapshot = model.0.iter().map(|(&f, &(l, v))| (f..=l, v)).collect();
            prop_assert_eq!(snapshot(&tree), want);
        }
    }
}

/// The typed errors print the messages `validate` has always given.
#[test]
fn validate_errors_name_the_node_and_the_rule() {
    let e = ValidateError::Node {
        path: vec![0, 3],
        fault: NodeFault::Unordered { slot: 2 },
    };
    assert_eq!(
        e.to_string(),
        "range tree invariant broken: node at path [0, 3]: slots 1 and 2 overlap or are out of order"
    );
    let e = ValidateError::Node {
        path: vec![1],
        fault: NodeFault::BadPivot {
            slot: 0,
            pivot: 130,
        },
    };
    assert_eq!(
        e.to_string(),
        "range tree invariant broken: node at path [1]: slot 0 pivot 0x82 does not route its keys"
    );
    let e = ValidateError::Len { len: 3, held: 2 };
    assert_eq!(
        e.to_string(),
        "range tree invariant broken: len says 3 but the tree holds 2"
    );
}

/// 17 entries `[10 i, 10 i + 4]`: an internal root over two leaves of 13
/// and 4 entries (an append split keeps all but `MIN` on the left).
fn two_leaves() -> RangeTree<u32> {
    let t = RangeTree::new();
    for i in 0..17u32 {
        let k = u64::from(i) * 10;
        t.insert_range(k..=k + 4, i).unwrap();
    }
    t.validate().unwrap();
    t
}

fn root_of<T>(t: &RangeTree<T>) -> *mut node::Node<T> {
    t.root.load(Ordering::Relaxed)
}

#[test]
fn writes_that_keep_a_leafs_shape_replace_it_in_place() {
    let t = two_leaves();
    let root = root_of(&t);
    // Into the first leaf's gap 5..=9, then out of it again, then its first
    // entry: one leaf replaced each time, published in the root's slot.
    assert_eq!(t.alloc_range(3, 1, 0..=u64::MAX, 99).unwrap(), 5);
    assert_eq!(t.erase(6), Some(99));
    assert_eq!(t.erase(0), Some(0));
    assert_eq!(
        root_of(&t),
        root,
        "no new root: the leaf was replaced in place"
    );
    t.validate().unwrap();
    // Eight erases take the second leaf below MIN: the path is copied.
    for i in 13..17 {
        assert_eq!(t.erase(u64::from(i) * 10), Some(i));
    }
    assert_ne!(root_of(&t), root, "a merge copies the path");
    t.validate().unwrap();
    assert_eq!(t.len(), 12);
}

#[test]
fn a_stale_pivot_routes_correctly_and_a_store_across_it_copies_the_path() {
    let t = two_leaves();
    let root = root_of(&t);
    // The first leaf's last entry, 120..=124, goes in place: the root's
    // pivot stays 124 although the leaf now ends at 114.
    assert_eq!(t.erase(122), Some(12));
    assert_eq!(root_of(&t), root);
    t.validate().unwrap();
    {
        let g = t.read();
        assert_eq!(g.load(122), None);
        // `find_from` moves past the stale pivot to the next leaf.
        assert_eq!(
            g.find_from(115).map(|(r, v)| (r, *v)),
            Some((130..=134, 13))
        );
    }
    // Below the stale pivot: in place.
    t.insert_range(116..=120, 50).unwrap();
    assert_eq!(root_of(&t), root);
    assert_eq!(t.erase(118), Some(50));
    // Across it (116..=127 reaches past 124): the path is copied and the
    // new root's pivot is exact again.
    t.insert_range(116..=127, 51).unwrap();
    assert_ne!(root_of(&t), root);
    t.validate().unwrap();
    let g = t.read();
    for k in [116, 124, 125, 127] {
        assert_eq!(
            g.load(k).map(|(r, v)| (r, *v)),
            Some((116..=127, 51)),
            "key {k}"
        );
    }
    assert_eq!(g.load(128), None);
    assert_eq!(g.load(130).map(|(_, v)| *v), Some(13));
}

#[test]
fn is_empty_and_debug() {
    let t: RangeTree<u32> = RangeTree::new();
    assert!(t.is_empty());
    assert_eq!(format!("{t:?}"), "RangeTree { len: 0, .. }");
    let t = tree_with(&[0..=1, 4..=7]);
    assert!(!t.is_empty());
    assert_eq!(format!("{t:?}"), "RangeTree { len: 2, .. }");
    let g = t.read();
    assert_eq!(format!("{g:?}"), "ReadGuard { .. }");
    let it = g.iter();
    assert!(format!("{it:?}").starts_with("Iter { depth: "), "{it:?}");
}

/// `validate` reports a broken tree: a count that disagrees with the
/// entries, and a node whose slots overlap.
#[test]
fn validate_reports_a_corrupted_tree() {
    let t = tree_with(&[0..=1, 4..=7, 10..=12]);
    t.len.store(4, AtomicOrdering::Relaxed);
    assert_eq!(t.validate(), Err(ValidateError::Len { len: 4, held: 3 }));
    t.len.store(3, AtomicOrdering::Relaxed);
    t.validate().unwrap();
}

/// The accessor hands out the domain the tree's read sections and grace
/// periods use, so that a caller's own objects retired against it are
/// covered by the tree's readers.
#[test]
fn srcu_is_the_domain_of_the_trees_readers() {
    let t = tree_with(&[0..=1]);
    assert_eq!(t.srcu().active_readers(), 0);
    let g = t.read();
    assert_eq!(t.srcu().active_readers(), 1, "the guard reads this domain");
    // A grace period of the accessor's domain must wait for the guard.
    let cookie = t.srcu().get_state();
    assert!(
        !t.srcu().poll(cookie),
        "a tree reader holds the grace period"
    );
    drop(g);
    assert!(t.srcu().poll(cookie));
}

/// Writes gather their replaced nodes into one batch (one cookie) until
/// `RETIRE_BATCH` (32) of them wait; a reader keeps each closed batch
/// queued.
#[test]
fn replaced_nodes_are_retired_in_batches() {
    let t = tree_with(&[0..=1]);
    t.synchronize();
    assert_eq!(t.retired(), 0);
    let g = t.read();
    // Each in-place insert into the root leaf replaces one node.
    for i in 1..12 {
        t.insert_range(i * 4..=i * 4 + 1, 0).unwrap();
        assert_eq!(t.retired(), 1, "one open batch after {i} writes");
    }
    drop(g);
    t.synchronize();
    assert_eq!(t.retired(), 0);
}

/// Dropping the tree frees the nodes still waiting for a grace period, and
/// the value copies only they hold.
#[test]
fn dropping_the_tree_frees_what_waits_for_a_grace_period() {
    let drops = std::sync::Arc::new(AtomicUsize::new(0));
    let new = || std::sync::Arc::new(Tracked(drops.clone()));
    let t = RangeTree::new();
    for i in 0..40 {
        t.insert_range(i * 10..=i * 10 + 5, new()).ok().unwrap();
    }
    {
        let _g = t.read();
        for i in 0..40 {
            drop(t.erase(i * 10).unwrap());
        }
        assert!(t.retired() > 1, "closed batches wait for the reader");
    }
    assert_eq!(
        drops.load(AtomicOrdering::Relaxed),
        0,
        "replaced nodes still hold copies"
    );
    drop(t);
    assert_eq!(drops.load(AtomicOrdering::Relaxed), 40);
}

/// The largest gap strictly inside the tree, from the root's bookkeeping.
fn root_max_gap<T: Clone + Send + Sync>(t: &RangeTree<T>) -> u64 {
    let w = t.writer.lock();
    t.root_node().data().max_gap(&w.cache)
}

/// The gap bookkeeping is exact (the kernel's `gap[]`, `mas_update_gap()`):
/// the free keys between two entries, not one more or less, in a leaf, in
/// an internal node, and after in-place and path-copying writes.
#[test]
fn gaps_count_exactly_the_free_keys_between_entries() {
    // 0 1 2 3 4 5 6 7 8 9
    // ● ● ◌ ◌ ◌ ◌ ◌ ● ● ●   one gap of 5 (keys 2..=6)
    let t = tree_with(&[0..=1, 7..=9]);
    assert_eq!(root_max_gap(&t), 5);
    t.insert_range(3..=3, 9).unwrap();
    assert_eq!(root_max_gap(&t), 3, "4..=6 is now the largest");
    t.insert_range(2..=2, 9).unwrap();
    t.insert_range(4..=6, 9).unwrap();
    assert_eq!(root_max_gap(&t), 0, "entries that touch leave no gap");
    // An internal root: gaps of 5 between the entries `[10 i, 10 i + 4]`,
    // and between the two leaves (124 and 130).
    let t = two_leaves();
    assert_eq!(root_max_gap(&t), 5);
    // In place: 45..=59 inside the first leaf.
    assert_eq!(t.erase(50), Some(5));
    assert_eq!(root_max_gap(&t), 15);
    // Copying the path: the second leaf drops below `MIN` (135..=149).
    assert_eq!(t.erase(140), Some(14));
    assert_eq!(root_max_gap(&t), 15);
    assert_eq!(t.erase(60), Some(6));
    assert_eq!(root_max_gap(&t), 25, "45..=69");
    t.validate().unwrap();
    // An allocation of exactly the largest gap lands in it.
    assert_eq!(t.alloc_range(25, 1, 0..=u64::MAX, 99).unwrap(), 45);
    assert_eq!(root_max_gap(&t), 15, "135..=149 is left");
    assert_eq!(t.alloc_range(15, 1, 0..=u64::MAX, 99).unwrap(), 135);
    t.validate().unwrap();
}

/// An erase that leaves a leaf under `MIN` next to a full one: the merge
/// holds both nodes' entries (`MIN - 1 + B`) before it splits them again.
#[test]
fn a_leaf_under_min_merges_with_a_full_neighbour() {
    let t = two_leaves();
    // Fill the first leaf (13 entries) to `B` in place, below its pivot.
    for k in [5, 15, 25] {
        t.insert_range(k..=k + 1, 100).unwrap();
    }
    // The second leaf holds 4 (`MIN`): one erase takes it under.
    assert_eq!(t.erase(130), Some(13));
    t.validate().unwrap();
    let mut want: Snapshot = (0..17u32)
        .filter(|&i| i != 13)
        .map(|i| (u64::from(i) * 10..=u64::from(i) * 10 + 4, i))
        .chain([5, 15, 25].map(|k| (k..=k + 1, 100)))
        .collect();
    want.sort_by_key(|(r, _)| *r.start());
    assert_eq!(snapshot(&t), want);
}

/// `validate` catches a corrupted node: a pivot at the next child's first
/// key (which would route it to the wrong child), a value beyond `len`.
#[test]
#[allow(unsafe_code, reason = "corrupts nodes of a tree nobody else reads")]
fn validate_reports_a_corrupted_node() {
    let t = two_leaves();
    let root = t.root_ptr();
    let leaf = t.root_node().data().child_ptr(1);
    // Each write takes a fresh borrow, which ends before `validate` reads.
    let set_pivot = |pivot: u64| {
        // SAFETY: `t` is ours alone: no reader, no writer, no other borrow.
        unsafe { root.data_mut() }.last[0] = pivot;
    };
    let set_value = |v: Option<u32>| {
        // SAFETY: As above.
        let node::Kind::Leaf { values, .. } = &mut unsafe { leaf.data_mut() }.kind else {
            unreachable!("a leaf")
        };
        values[4] = v;
    };
    assert_eq!(t.root_node().data().last[0], 124);
    set_pivot(130);
    assert_eq!(
        t.validate(),
        Err(ValidateError::Node {
            path: vec![],
            fault: NodeFault::BadPivot {
                slot: 0,
                pivot: 130
            }
        })
    );
    set_pivot(129);
    t.validate().unwrap();
    // The second leaf holds 4 entries: a value in slot 4.
    set_value(Some(99));
    assert_eq!(
        t.validate(),
        Err(ValidateError::Node {
            path: vec![1],
            fault: NodeFault::ValueSlots { len: 4 }
        })
    );
    set_value(None);
    t.validate().unwrap();
}

/// `validate` catches leaves at different depths: a root over a leaf and
/// an internal node (built by hand; every other rule holds).
#[test]
#[allow(unsafe_code, reason = "frees the hand-built nodes")]
fn validate_reports_leaves_at_different_depths() {
    let mut cache = node::NodeCache::new();
    let leaf = |cache: &mut node::NodeCache<u32>, at: u64| {
        let mut es = Scratch::new();
        es.extend((0..4).map(|i| Entry {
            first: at + 10 * i,
            last: at + 10 * i + 4,
            value: 0,
        }));
        NodePtr::leaf(cache, es)
    };
    let mut below = Scratch::new();
    for k in 1..5 {
        let l = leaf(&mut cache, k * 100);
        below.push(ChildSlot::of(l, &cache));
    }
    let inner = NodePtr::internal(&mut cache, below);
    let first = leaf(&mut cache, 0);
    let mut top = Scratch::new();
    top.extend([ChildSlot::of(first, &cache), ChildSlot::of(inner, &cache)]);
    let root = NodePtr::internal(&mut cache, top);
    // SAFETY: Just built, and only read here.
    let r = node::validate(unsafe { root.get() }, true, &mut Vec::new(), &cache);
    assert_eq!(
        r,
        Err(ValidateError::Node {
            path: vec![],
            fault: NodeFault::UnevenDepth
        })
    );
    // SAFETY: Nobody else holds these nodes.
    unsafe { root.free_tree() };
}

/// An insert that ends exactly at its leaf's (stale) pivot still goes in
/// place; one key further copies the path.
#[test]
fn an_insert_up_to_a_stale_pivot_goes_in_place() {
    let t = two_leaves();
    let root = root_of(&t);
    assert_eq!(t.erase(122), Some(12)); // the pivot stays 124
    t.insert_range(116..=124, 50).unwrap();
    assert_eq!(root_of(&t), root, "in place: 124 is still the leaf's");
    assert_eq!(t.erase(116), Some(50));
    t.insert_range(116..=125, 51).unwrap();
    assert_ne!(root_of(&t), root, "125 is past the pivot: path copied");
    t.validate().unwrap();
}

/// Appending splits internal nodes as it splits leaves: the left node
/// keeps all but `MIN` children, so an append-only tree stays dense.
#[test]
fn appends_split_internal_nodes_densely() {
    let t = RangeTree::new();
    let mut n = 0u64;
    // Append until the root is an internal node over internal nodes.
    loop {
        t.insert_range(n * 10..=n * 10 + 4, 0u32).unwrap();
        n += 1;
        let d = t.root_node().data();
        if !d.is_leaf() && !d.child(0).data().is_leaf() {
            break;
        }
    }
    t.validate().unwrap();
    let d = t.root_node().data();
    assert_eq!(d.len, 2);
    assert_eq!(d.child(0).data().len, node::B + 1 - node::MIN);
    assert_eq!(d.child(1).data().len, node::MIN);
    // On until the right internal node has `MIN + 1` leaves: its last
    // leaf has just split off with `MIN` entries.
    while t.root_node().data().child(1).data().len < node::MIN + 1 {
        t.insert_range(n * 10..=n * 10 + 4, 0u32).unwrap();
        n += 1;
    }
    // One erase takes that leaf under `MIN`; it merges with its neighbour
    // (`B + 1 - MIN` entries), which leaves the right internal node with
    // exactly `MIN` children: full enough, so the root keeps its shape.
    assert_eq!(t.erase((n - 1) * 10), Some(0));
    t.validate().unwrap();
    let d = t.root_node().data();
    assert_eq!(
        (d.len, d.child(0).data().len, d.child(1).data().len),
        (2, node::B + 1 - node::MIN, node::MIN)
    );
}

/// Window edges that fall exactly on a gap's edge, inside a leaf and
/// between two children, both directions: the one free key there is found.
#[test]
fn a_window_ending_at_a_gaps_edge_finds_it() {
    // 0 ... 4 5 ... 9 10 ... 14
    // ● ● ● ● ◆ ◌ ◌ ◌ ◌ ●  ●  ●    window 0..=5: the gap's first key
    let t = tree_with(&[0..=4, 10..=14]);
    assert_eq!(t.alloc_range(1, 1, 0..=5, 7).unwrap(), 5);
    // ● ... ● ◌ ◌ ◌ ◌ ◆ ● ...    window 9..=14: the gap's last key
    assert_eq!(t.alloc_rrange(1, 1, 9..=14, 7).unwrap(), 9);
    // Between the two leaves of `two_leaves`: 125..=129.
    // (A fresh tree for each: the first allocation would land in the right
    // leaf and move the gap into it.)
    let t = two_leaves();
    assert_eq!(t.alloc_range(1, 1, 125..=125, 7).unwrap(), 125);
    t.validate().unwrap();
    let t = two_leaves();
    assert_eq!(t.alloc_rrange(1, 1, 129..=129, 7).unwrap(), 129);
    t.validate().unwrap();
}
