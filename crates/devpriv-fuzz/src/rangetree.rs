//! Target `rangetree_ops`: operation sequences on a [`RangeTree`] against a
//! `BTreeMap` oracle.
//!
//! Kernel: `mtree_alloc_range()`, `mtree_alloc_rrange()`,
//! `mtree_insert_range()`, `mtree_erase()`, `mtree_load()`, `mt_find()`,
//! `mas_empty_area{,_rev}()` and `mt_validate()`, `lib/maple_tree.c` (as
//! modelled by `devpriv-rangetree`, main).
//!
//! Keys come from two zones of 4096 keys each, one at the bottom of the
//! `u64` space and one at the top, so that the overflow edges at
//! `u64::MAX` are reached as often as the ordinary cases; sizes are small,
//! or huge enough to span the gap between the zones. After every operation
//! the run checks the result, the errno, the value handed back on failure,
//! `validate()`, `len()` and the full contents; a read guard taken by
//! [`RangeOp::Snapshot`] must keep seeing the version it was taken on
//! while later writes go on.

use crate::check_eq;
use arbitrary::Arbitrary;
use devpriv_core::Errno;
use devpriv_rangetree::{RangeTree, ReadGuard};
use std::collections::BTreeMap;
use std::ops::RangeInclusive;

/// A key: values below 4096 are `k`, values from 4096 are
/// `u64::MAX - (8191 - k)` (the top 4096 keys).
///
/// Kernel: none (model only).
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Key(pub u16);

impl Key {
    /// The `u64` key.
    ///
    /// Kernel: none (model only).
    pub fn get(self) -> u64 {
        let k = u64::from(self.0 % 8192);
        if k < 4096 { k } else { u64::MAX - (8191 - k) }
    }
}

/// A request size: below 0x8000, `s & 0x7f` (0 included, to reach
/// `EINVAL`); from 0x8000, `u64::MAX - (s & 0x7fff)` (spans both zones).
///
/// Kernel: none (model only).
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Size(pub u16);

impl Size {
    /// The size in keys.
    ///
    /// Kernel: none (model only).
    pub fn get(self) -> u64 {
        if self.0 & 0x8000 != 0 {
            u64::MAX - u64::from(self.0 & 0x7fff)
        } else {
            u64::from(self.0 & 0x7f)
        }
    }
}

/// An alignment: `1 << (a % 64)` mostly; `a = 255` gives 3 (not a power of
/// two, `EINVAL`) and `a = 254` gives 0.
///
/// Kernel: none (model only).
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Align(pub u8);

impl Align {
    /// The alignment.
    ///
    /// Kernel: none (model only).
    pub fn get(self) -> u64 {
        match self.0 {
            255 => 3,
            254 => 0,
            // Small alignments are the common case.
            a if a < 160 => 1 << (a % 5),
            a => 1 << (a % 64),
        }
    }
}

/// One operation on the tree.
///
/// Kernel: the maple-tree calls named in the module docs (main).
#[derive(Arbitrary, Clone, Debug)]
pub enum RangeOp {
    /// `alloc_range` (lowest fit) or `alloc_rrange` (`rev`) in `min..=max`
    /// (not reordered: an inverted window must fail with `EINVAL`).
    Alloc {
        /// Keys requested.
        size: Size,
        /// Alignment of the start.
        align: Align,
        /// Window start.
        min: Key,
        /// Window end (inclusive).
        max: Key,
        /// Highest fit instead of lowest.
        rev: bool,
    },
    /// `find_gap` / `find_gap_rev`: as `Alloc`, storing nothing.
    FindGap {
        /// Keys requested.
        size: Size,
        /// Alignment of the start.
        align: Align,
        /// Window start.
        min: Key,
        /// Window end (inclusive).
        max: Key,
        /// Highest fit instead of lowest.
        rev: bool,
    },
    /// `insert_range(first..=first + len - 1)` (clamped at `u64::MAX`).
    Insert {
        /// First key.
        first: Key,
        /// Length, 1 to 256.
        len: u8,
    },
    /// `insert_range(first..=last)` with arbitrary ends (may be inverted).
    InsertSpan {
        /// First key.
        first: Key,
        /// Last key.
        last: Key,
    },
    /// `erase(index)`.
    Erase {
        /// Any key of the range to erase.
        index: Key,
    },
    /// `read().load(index)`.
    Load {
        /// The key looked up.
        index: Key,
    },
    /// `read().find_from(index)`.
    FindFrom {
        /// The key to search from.
        index: Key,
    },
    /// Takes a read guard (dropping any held one) and records what it sees.
    Snapshot,
    /// Checks the held guard still sees exactly what it saw when taken.
    CheckSnapshot,
    /// Drops the held guard.
    DropSnapshot,
    /// Drops the held guard, then `synchronize()`: every retired version
    /// is reclaimed.
    Synchronize,
}

/// The oracle: first key -> (last key, value).
///
/// Kernel: none (model only).
#[derive(Debug, Default)]
pub struct NaiveTree(pub BTreeMap<u64, (u64, u32)>);

impl NaiveTree {
    /// `true` if no stored range meets `first..=last`.
    ///
    /// Kernel: none (model only).
    pub fn is_free(&self, first: u64, last: u64) -> bool {
        // The only candidate is the last range starting at or before
        // `last`: ranges are disjoint and sorted.
        self.0
            .range(..=last)
            .next_back()
            .is_none_or(|(_, &(l, _))| l < first)
    }

    /// The free gaps inside `min..=max`, in ascending order, as `u128`
    /// bounds.
    fn gaps(&self, min: u64, max: u64) -> Vec<(u128, u128)> {
        let (min, max) = (u128::from(min), u128::from(max));
        let mut out = Vec::new();
        let mut cursor = min;
        for (&f, &(l, _)) in &self.0 {
            let (f, l) = (u128::from(f), u128::from(l));
            if l < cursor {
                continue;
            }
            if f > max {
                break;
            }
            if f > cursor {
                out.push((cursor, f - 1));
            }
            cursor = l + 1;
        }
        if cursor <= max {
            out.push((cursor, max));
        }
        out
    }

    /// The lowest aligned start of `size` keys in `lo..=hi`.
    fn low_in(lo: u128, hi: u128, size: u128, align: u128) -> Option<u128> {
        let s = lo.div_ceil(align) * align;
        (s + size - 1 <= hi).then_some(s)
    }

    /// The highest aligned start of `size` keys in `lo..=hi`.
    fn high_in(lo: u128, hi: u128, size: u128, align: u128) -> Option<u128> {
        if hi + 1 < size {
            return None;
        }
        let s = (hi + 1 - size) / align * align;
        (s >= lo).then_some(s)
    }

    /// What `alloc_range` / `alloc_rrange` / `find_gap{,_rev}` answer.
    ///
    /// Kernel: none (model only).
    ///
    /// # Errors
    ///
    /// `EINVAL` for a malformed request (zero size, alignment not a power
    /// of two, inverted window, or a window that cannot hold `size`
    /// aligned keys even when empty); `EBUSY` when no free range fits.
    pub fn search(
        &self,
        size: u64,
        align: u64,
        min: u64,
        max: u64,
        rev: bool,
    ) -> Result<u64, Errno> {
        if size == 0 || !align.is_power_of_two() || min > max {
            return Err(Errno::EINVAL);
        }
        let (size, align) = (u128::from(size), u128::from(align));
        if Self::low_in(u128::from(min), u128::from(max), size, align).is_none() {
            return Err(Errno::EINVAL);
        }
        let gaps = self.gaps(min, max);
        let found = if rev {
            gaps.iter()
                .rev()
                .find_map(|&(lo, hi)| Self::high_in(lo, hi, size, align))
        } else {
            gaps.iter()
                .find_map(|&(lo, hi)| Self::low_in(lo, hi, size, align))
        };
        // INVARIANT: a start found inside `min..=max` fits in a u64.
        found
            .map(|s| u64::try_from(s).unwrap_or(u64::MAX))
            .ok_or(Errno::EBUSY)
    }

    /// The stored range containing `k`.
    ///
    /// Kernel: none (model only).
    pub fn load(&self, k: u64) -> Option<(RangeInclusive<u64>, u32)> {
        self.0
            .range(..=k)
            .next_back()
            .filter(|(_, (l, _))| *l >= k)
            .map(|(&f, &(l, v))| (f..=l, v))
    }

    /// The first stored range ending at or after `k`.
    ///
    /// Kernel: none (model only).
    pub fn find_from(&self, k: u64) -> Option<(RangeInclusive<u64>, u32)> {
        self.load(k)
            .or_else(|| self.0.range(k..).next().map(|(&f, &(l, v))| (f..=l, v)))
    }

    fn contents(&self) -> Vec<(RangeInclusive<u64>, u32)> {
        self.0.iter().map(|(&f, &(l, v))| (f..=l, v)).collect()
    }
}

/// A read-side section held across later writes. RCU semantics: each
/// lookup through the guard sees the tree as it is at that moment (not a
/// snapshot), and no version replaced while the guard is held may be
/// reclaimed until it drops.
struct Snap<'t> {
    guard: ReadGuard<'t, u32>,
    /// A write has replaced a version since the guard was taken.
    wrote: bool,
}

impl<'t> Snap<'t> {
    fn take(tree: &'t RangeTree<u32>) -> Self {
        Snap {
            guard: tree.read(),
            wrote: false,
        }
    }

    fn check(&self, tree: &RangeTree<u32>, model: &NaiveTree) -> Result<(), String> {
        check_eq(&contents(&self.guard), &model.contents(), || {
            "lookups through a held guard".to_owned()
        })?;
        if self.wrote && tree.retired() == 0 {
            return Err("a version replaced under a held guard was reclaimed".to_owned());
        }
        Ok(())
    }
}

fn contents(g: &ReadGuard<'_, u32>) -> Vec<(RangeInclusive<u64>, u32)> {
    g.iter().map(|(r, v)| (r, *v)).collect()
}

/// Runs the `rangetree_ops` target on `data`.
///
/// Kernel: none (model only; drives the maple-tree model).
///
/// # Errors
///
/// A message naming the step and operation where the tree and the oracle
/// disagreed, or where `validate()` failed.
pub fn run_rangetree_ops(data: &[u8]) -> Result<(), String> {
    let ops = crate::decode_ops::<RangeOp>(data);
    run_ops(&ops).map_err(|e| format!("{e}\nops: {ops:?}"))
}

/// As [`run_rangetree_ops`], on decoded operations.
///
/// Kernel: none (model only).
///
/// # Errors
///
/// As for [`run_rangetree_ops`].
pub fn run_ops(ops: &[RangeOp]) -> Result<(), String> {
    let tree: RangeTree<u32> = RangeTree::new();
    let mut model = NaiveTree::default();
    // A held read section and the value references looked up through it.
    let mut snap: Option<Snap<'_>> = None;
    for (step, op) in ops.iter().enumerate() {
        let v = u32::try_from(step).unwrap_or(u32::MAX);
        let at = || format!("step {step}: {op:?}");
        let len_before = model.0.len();
        match *op {
            RangeOp::Alloc {
                size,
                align,
                min,
                max,
                rev,
            } => {
                let (size, align, min, max) = (size.get(), align.get(), min.get(), max.get());
                let window = RangeInclusive::new(min, max);
                let got = if rev {
                    tree.alloc_rrange(size, align, window, v)
                } else {
                    tree.alloc_range(size, align, window, v)
                };
                let got = match got {
                    Ok(s) => Ok(s),
                    Err(e) => {
                        check_eq(&e.value, &v, || format!("{}: value handed back", at()))?;
                        Err(e.cause)
                    }
                };
                let want = model.search(size, align, min, max, rev);
                check_eq(&got, &want, at)?;
                if let Ok(s) = want {
                    model.0.insert(s, (s + (size - 1), v));
                }
            }
            RangeOp::FindGap {
                size,
                align,
                min,
                max,
                rev,
            } => {
                let (size, align, min, max) = (size.get(), align.get(), min.get(), max.get());
                let window = RangeInclusive::new(min, max);
                let got = if rev {
                    tree.find_gap_rev(size, align, window)
                } else {
                    tree.find_gap(size, align, window)
                };
                check_eq(&got, &model.search(size, align, min, max, rev), at)?;
            }
            RangeOp::Insert { .. } | RangeOp::InsertSpan { .. } => {
                let (first, last) = match *op {
                    RangeOp::Insert { first, len } => {
                        let f = first.get();
                        (f, f.saturating_add(u64::from(len.max(1)) - 1))
                    }
                    RangeOp::InsertSpan { first, last } => (first.get(), last.get()),
                    _ => unreachable!("matched above"),
                };
                let got = match tree.insert_range(RangeInclusive::new(first, last), v) {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        check_eq(&e.value, &v, || format!("{}: value handed back", at()))?;
                        Err(e.cause)
                    }
                };
                let want = if first > last {
                    Err(Errno::EINVAL)
                } else if model.is_free(first, last) {
                    model.0.insert(first, (last, v));
                    Ok(())
                } else {
                    Err(Errno::EEXIST)
                };
                check_eq(&got, &want, at)?;
            }
            RangeOp::Erase { index } => {
                let k = index.get();
                let want = model.load(k).map(|(r, v)| {
                    model.0.remove(r.start());
                    v
                });
                check_eq(&tree.erase(k), &want, at)?;
            }
            RangeOp::Load { index } => {
                let got = tree.read().load(index.get()).map(|(r, v)| (r, *v));
                check_eq(&got, &model.load(index.get()), at)?;
            }
            RangeOp::FindFrom { index } => {
                let got = tree.read().find_from(index.get()).map(|(r, v)| (r, *v));
                check_eq(&got, &model.find_from(index.get()), at)?;
            }
            RangeOp::Snapshot => {
                drop(snap.take());
                snap = Some(Snap::take(&tree));
            }
            RangeOp::CheckSnapshot => {
                if let Some(s) = &snap {
                    s.check(&tree, &model)
                        .map_err(|e| format!("{}: {e}", at()))?;
                }
            }
            RangeOp::DropSnapshot => snap = None,
            RangeOp::Synchronize => {
                snap = None;
                tree.synchronize();
                check_eq(&tree.retired(), &0, at)?;
            }
        }
        if model.0.len() != len_before
            && let Some(s) = &mut snap
        {
            s.wrote = true;
        }
        tree.validate()
            .map_err(|e| format!("{}: validate: {e}", at()))?;
        check_eq(&tree.len(), &model.0.len(), || format!("{}: len", at()))?;
        check_eq(&contents(&tree.read()), &model.contents(), || {
            format!("{}: contents", at())
        })?;
    }
    if let Some(s) = &snap {
        s.check(&tree, &model).map_err(|e| format!("end: {e}"))?;
    }
    Ok(())
}
