//! Differential tests: `devpriv_rangetree::RangeTree` against the kernel's
//! own maple tree (`lib/maple_tree.c`), operation by operation.
//!
//! Operations are `devpriv-fuzz`'s [`RangeOp`]s, from two generators, in
//! turn:
//!
//! - `Fuzz`: random bytes decoded with `arbitrary`, exactly as the
//!   `rangetree_ops` fuzz target decodes its input;
//! - `Weighted`: the same op enum, drawn with weights that keep trees
//!   populated: mostly small sizes, window edges at 0 and `u64::MAX`,
//!   erases and loads aimed at the first, middle and last key of stored
//!   ranges, and their neighbours; in a `Balanced` profile (tens of
//!   ranges) and, in sequences 16 times longer, a `Dense` one (hundreds of
//!   ranges, a maple tree several levels deep).
//!
//! After every operation the results (start, value, range) and errnos must
//! be equal, and so must the full contents (`mas_for_each` against
//! `RangeTree::read().iter()`); every key the operation named, and its
//! neighbours, is looked up in both (`mtree_load`, `mas_walk`). Every 32
//! operations and at the end of each sequence, every range's edges and
//! their neighbours are looked up, and both trees' own structural checks
//! run (`mt_validate()` in the check flavour, `RangeTree::validate()`).
//!
//! # Deliberate differences (excluded by name, counted in the summary)
//!
//! - [`Exclusion::Alignment`]: `RangeTree`'s gap search takes an alignment
//!   the kernel's `mtree_alloc_range()` lacks. Alloc and find-gap ops with
//!   an alignment other than 1 run with alignment 1 on both trees.
//! - [`Exclusion::ReadSideSections`]: `Snapshot`, `CheckSnapshot`,
//!   `DropSnapshot` and `Synchronize` exercise `RangeTree`'s own read-side
//!   sections and grace periods; the kernel tree here is not in RCU mode
//!   and has no such calls. They are dropped from the sequence
//!   (`devpriv-fuzz` covers them against its own oracle).
//! - [`Exclusion::KernelRevWrap`]: a kernel quirk this oracle found. The
//!   reverse gap search (`mas_rev_awalk()`, behind `mtree_alloc_rrange()`
//!   and `mas_empty_area_rev()`) tests `size <= mas->last - min + 1`, which
//!   wraps to 0 when the window ends at `ULONG_MAX` and the slot under test
//!   starts at 0 (the first slot of the root, or of a root leaf): that slot
//!   is never taken, and the call returns `EBUSY` although a fit exists
//!   (see the test [`kernel_rev_wrap`]). Present in 6.12 and in the mm
//!   tree's `lib/maple_tree.c` we read. `RangeTree` finds the fit. A
//!   difference counts as this exclusion only when the kernel said `EBUSY`,
//!   `RangeTree` found a start, and the kernel itself finds that same start
//!   in the window ending at `u64::MAX - 1` (where it does not wrap); the
//!   model's allocation is then undone so both trees stay equal.
//! - [`Exclusion::KernelInsertWholeRange`]: a kernel bug this oracle
//!   found. `mtree_insert_range(mt, 0, ULONG_MAX, entry, gfp)` on a
//!   non-empty tree returns 0 and replaces every stored entry (which is
//!   lost, not returned), where it must return `-EEXIST`: `mas_insert()`
//!   skips its "already occupied" check for the `wr_new_root` store type,
//!   which `mas_wr_store_type()` picks for any write of `[0, ULONG_MAX]`
//!   (see the test [`kernel_insert_whole_range`]). In 6.12 since the
//!   store-type rework of 2024 (commit 9d36d13535c7). `RangeTree` returns
//!   `EEXIST`. Such inserts run only on an empty tree (where the kernel is
//!   right); on a non-empty one the generator drops them.
//!
//! Nothing else is excluded: no errno, key range or size is filtered out.
//! Apart from `KernelInsertWholeRange` (where the model refuses what the
//! kernel gets wrong), `RangeTree` refuses nothing the kernel accepts: both
//! reject size 0, inverted windows and ranges, and windows smaller than the
//! size with `EINVAL`; values are step numbers, far below `MAX_VALUE`.
//!
//! # Run length
//!
//! `DEVPRIV_ORACLE_OPS` operations (default 100 000; `ci/kernel-oracle.sh`
//! runs 1 000 000) in sequences of `DEVPRIV_ORACLE_SEQ_LEN` (default 256),
//! on two threads, from `DEVPRIV_ORACLE_SEED` (default fixed). A longer run
//! for people:
//!
//! ```sh
//! DEVPRIV_ORACLE_OPS=50000000 DEVPRIV_ORACLE_SEED=$RANDOM \
//!     cargo test --release -p devpriv-kernel-oracle --test differential -- --nocapture
//! ```
//!
//! A failure prints the seed, the generator, the step, both answers and a
//! minimised op sequence, ready to paste into a regression test.

use arbitrary::{Arbitrary, Unstructured};
use devpriv_core::Errno;
use devpriv_core::random::SplitMix64;
use devpriv_core::sync::Mutex;
use devpriv_fuzz::rangetree::{Align, Key, RangeOp, Size};
use devpriv_kernel_oracle::{MapleTree, flavour, oracle_or_skip};
use devpriv_rangetree::RangeTree;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Write;
use std::ops::RangeInclusive;

/// A deliberate difference between the model and the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Exclusion {
    /// Alignment other than 1 (a `RangeTree` extension): run with 1.
    Alignment,
    /// `RangeTree`-only read-side section ops: dropped.
    ReadSideSections,
    /// The kernel's reverse gap search wraps at `ULONG_MAX`: see
    /// [`kernel_rev_wrap`].
    KernelRevWrap,
    /// The kernel's `mtree_insert_range(0, ULONG_MAX)` overwrites a
    /// non-empty tree: see [`kernel_insert_whole_range`].
    KernelInsertWholeRange,
}

/// Applies the exclusions to one generated op: the op to run on both
/// trees (if any) and the exclusion that changed it (if any).
fn kernelise(op: RangeOp) -> (Option<RangeOp>, Option<Exclusion>) {
    match op {
        RangeOp::Alloc {
            size,
            align,
            min,
            max,
            rev,
        } if align.get() != 1 => (
            Some(RangeOp::Alloc {
                size,
                align: Align(0),
                min,
                max,
                rev,
            }),
            Some(Exclusion::Alignment),
        ),
        RangeOp::FindGap {
            size,
            align,
            min,
            max,
            rev,
        } if align.get() != 1 => (
            Some(RangeOp::FindGap {
                size,
                align: Align(0),
                min,
                max,
                rev,
            }),
            Some(Exclusion::Alignment),
        ),
        RangeOp::Snapshot
        | RangeOp::CheckSnapshot
        | RangeOp::DropSnapshot
        | RangeOp::Synchronize => (None, Some(Exclusion::ReadSideSections)),
        op => (Some(op), None),
    }
}

/// The `Key` of a key inside the two zones (`None` outside them).
fn key_of(k: u64) -> Option<Key> {
    if k < 4096 {
        u16::try_from(k).ok().map(Key)
    } else if k >= u64::MAX - 4095 {
        u16::try_from(8191 - (u64::MAX - k)).ok().map(Key)
    } else {
        None
    }
}

/// The range an insert op names (as devpriv-fuzz's `run_ops` builds it);
/// `None` for other ops.
fn insert_span(op: &RangeOp) -> Option<(u64, u64)> {
    match *op {
        RangeOp::Insert { first, len } => {
            let f = first.get();
            Some((f, f.saturating_add(u64::from(len.max(1)) - 1)))
        }
        RangeOp::InsertSpan { first, last } => Some((first.get(), last.get())),
        _ => None,
    }
}

/// Which generator made a sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gen {
    /// `arbitrary` over random bytes (the fuzz target's decoder).
    Fuzz,
    /// Weighted draws that look at the current contents.
    Weighted(Profile),
}

/// The shape of a weighted sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Profile {
    /// Sizes up to 127 keys, inserts up to 256, many erases: small trees
    /// (tens of ranges) that fill and drain often.
    Balanced,
    /// Sizes and inserts of 1 to 8 keys, few erases: trees of hundreds of
    /// ranges, several levels deep.
    Dense,
}

/// Draws one op of the weighted generator, given the current contents.
fn weighted_op(
    rng: &mut SplitMix64,
    profile: Profile,
    contents: &[(RangeInclusive<u64>, u64)],
) -> RangeOp {
    let (small_max, insert_max, erase_weight) = match profile {
        Profile::Balanced => (127, 256, 23),
        Profile::Dense => (8, 8, 6),
    };
    let key = |rng: &mut SplitMix64| {
        let k = match rng.below(4) {
            0 => rng.below(64),
            1 => 8191 - rng.below(64),
            _ => rng.below(8192),
        };
        Key(u16::try_from(k).expect("below 8192"))
    };
    // A key at or next to a stored range's first, middle or last key.
    let aimed = |rng: &mut SplitMix64| {
        if contents.is_empty() || rng.below(4) == 0 {
            return key(rng);
        }
        let i = usize::try_from(rng.below(contents.len() as u64)).expect("fits");
        let (f, l) = (*contents[i].0.start(), *contents[i].0.end());
        let k = match rng.below(5) {
            0 => f,
            1 => l,
            2 => f + (l - f) / 2,
            3 => f.wrapping_sub(1),
            _ => l.wrapping_add(1),
        };
        key_of(k).or_else(|| key_of(f)).unwrap_or_else(|| key(rng))
    };
    let size = |rng: &mut SplitMix64| {
        Size(match rng.below(100) {
            0..=1 => 0,
            2..=84 => u16::try_from(1 + rng.below(small_max)).expect("small"),
            _ => 0x8000 | u16::try_from(rng.below(0x8000)).expect("15 bits"),
        })
    };
    let window = |rng: &mut SplitMix64| match rng.below(8) {
        0 => (Key(0), Key(8191)),
        1 => (Key(0), key(rng)),
        2 => (key(rng), Key(8191)),
        _ => (key(rng), key(rng)),
    };
    // Weights: alloc 30, find gap 8, insert 14, insert span 5, erase
    // (profile), load 12, then find-from 8.
    let pick = rng.below(77 + erase_weight);
    let (alloc, find, insert, span) = (30, 38, 52, 57);
    let (erase, load) = (span + erase_weight, span + erase_weight + 12);
    if pick < find {
        let (min, max) = window(rng);
        let (size, align, rev) = (size(rng), Align(0), rng.below(2) == 1);
        return if pick < alloc {
            RangeOp::Alloc {
                size,
                align,
                min,
                max,
                rev,
            }
        } else {
            RangeOp::FindGap {
                size,
                align,
                min,
                max,
                rev,
            }
        };
    }
    if pick < insert {
        return RangeOp::Insert {
            first: aimed(rng),
            len: u8::try_from(rng.below(insert_max)).expect("u8"),
        };
    }
    if pick < span {
        return RangeOp::InsertSpan {
            first: aimed(rng),
            last: aimed(rng),
        };
    }
    if pick < erase {
        return RangeOp::Erase { index: aimed(rng) };
    }
    if pick < load {
        return RangeOp::Load { index: aimed(rng) };
    }
    RangeOp::FindFrom { index: aimed(rng) }
}

/// Counts of what a run compared.
#[derive(Debug, Default)]
struct Stats {
    sequences: u64,
    ops: u64,
    by_op: BTreeMap<&'static str, u64>,
    errnos: BTreeMap<&'static str, u64>,
    excluded: BTreeMap<String, u64>,
    /// Sum over steps of the number of stored ranges (for the mean).
    len_sum: u64,
    /// Most ranges stored at once.
    len_max: u64,
    /// Calls that succeeded (stored, erased or found something).
    hits: u64,
}

impl Stats {
    fn add(&mut self, other: &Stats) {
        self.sequences += other.sequences;
        self.ops += other.ops;
        self.len_sum += other.len_sum;
        self.len_max = self.len_max.max(other.len_max);
        self.hits += other.hits;
        for (k, v) in &other.by_op {
            *self.by_op.entry(k).or_default() += v;
        }
        for (k, v) in &other.errnos {
            *self.errnos.entry(k).or_default() += v;
        }
        for (k, v) in &other.excluded {
            *self.excluded.entry(k.clone()).or_default() += v;
        }
    }

    fn exclude(&mut self, x: Exclusion) {
        *self.excluded.entry(format!("{x:?}")).or_default() += 1;
    }

    fn errno(&mut self, r: Result<(), Errno>) {
        if let Err(e) = r {
            *self.errnos.entry(e.name()).or_default() += 1;
        }
    }
}

/// Both trees, driven in step.
struct Pair {
    model: RangeTree<u64>,
    kernel: MapleTree,
}

fn same<T: PartialEq + Debug>(
    model: T,
    kernel: T,
    what: impl FnOnce() -> String,
) -> Result<(), String> {
    if model == kernel {
        Ok(())
    } else {
        Err(format!(
            "{}: RangeTree {model:?}, kernel {kernel:?}",
            what()
        ))
    }
}

impl Pair {
    fn new() -> Pair {
        Pair {
            model: RangeTree::new(),
            kernel: MapleTree::new().expect("oracle_or_skip() said the tree is available"),
        }
    }

    fn contents(&self) -> Vec<(RangeInclusive<u64>, u64)> {
        self.model.read().iter().map(|(r, v)| (r, *v)).collect()
    }

    /// `RangeTree::load` against `mtree_load` and `mas_walk` at `k`.
    fn check_load(&self, k: u64) -> Result<(), String> {
        let model = self.model.read().load(k).map(|(r, v)| (r, *v));
        let (walk_range, walk_value) = self.kernel.walk(k);
        let kernel = walk_value.map(|v| (walk_range, v));
        same(&model, &kernel, || format!("load({k:#x}) (mas_walk)"))?;
        same(model.map(|(_, v)| v), self.kernel.load(k), || {
            format!("load({k:#x}) (mtree_load)")
        })
    }

    /// `true` if a reverse search's answers differ only by the kernel's
    /// wrap (see [`kernel_rev_wrap`]): the window ends at `u64::MAX`, the
    /// kernel said `EBUSY`, the model found `start`, and the kernel itself
    /// finds the same `start` in the window ending at `u64::MAX - 1`, where
    /// its arithmetic does not wrap.
    fn kernel_rev_wrap(
        &self,
        size: u64,
        window: &RangeInclusive<u64>,
        model: Result<u64, Errno>,
        kernel: Result<u64, Errno>,
    ) -> bool {
        let (Ok(start), Err(Errno::EBUSY)) = (model, kernel) else {
            return false;
        };
        if *window.end() != u64::MAX || *window.start() == u64::MAX {
            return false;
        }
        let shorter = *window.start()..=u64::MAX - 1;
        self.kernel.find_gap(size, shorter, true) == Ok(start)
    }

    /// A state-dependent exclusion for `op`, if any: the op is then not
    /// run.
    fn exclusion(&self, op: &RangeOp) -> Option<Exclusion> {
        let (first, last) = insert_span(op)?;
        (first == 0 && last == u64::MAX && !self.model.is_empty())
            .then_some(Exclusion::KernelInsertWholeRange)
    }

    /// Runs one op on both trees and compares the answers.
    fn step(&mut self, op: &RangeOp, v: u64, stats: &mut Stats) -> Result<Vec<u64>, String> {
        let name = match op {
            RangeOp::Alloc { rev: false, .. } => "mtree_alloc_range",
            RangeOp::Alloc { rev: true, .. } => "mtree_alloc_rrange",
            RangeOp::FindGap { rev: false, .. } => "mas_empty_area",
            RangeOp::FindGap { rev: true, .. } => "mas_empty_area_rev",
            RangeOp::Insert { .. } | RangeOp::InsertSpan { .. } => "mtree_insert_range",
            RangeOp::Erase { .. } => "mtree_erase",
            RangeOp::Load { .. } => "mtree_load",
            RangeOp::FindFrom { .. } => "mt_find",
            _ => unreachable!("read-side ops are excluded before this"),
        };
        *stats.by_op.entry(name).or_default() += 1;
        // Keys this op names: looked up in both trees afterwards.
        let mut keys = Vec::new();
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
                let model = if rev {
                    self.model.alloc_rrange(size, align, window.clone(), v)
                } else {
                    self.model.alloc_range(size, align, window.clone(), v)
                }
                .map_err(|e| e.cause);
                let kernel = if rev {
                    self.kernel.alloc_rrange(size, window.clone(), v)
                } else {
                    self.kernel.alloc_range(size, window.clone(), v)
                };
                if rev && self.kernel_rev_wrap(size, &window, model, kernel) {
                    // Undo the model's allocation: both trees stay equal.
                    let start = model.expect("kernel_rev_wrap() checked");
                    self.model.erase(start);
                    stats.exclude(Exclusion::KernelRevWrap);
                    return Ok(vec![min, max, start]);
                }
                stats.errno(kernel.map(|_| ()));
                same(model, kernel, || name.to_owned())?;
                keys.extend([min, max]);
                if let Ok(s) = kernel {
                    stats.hits += 1;
                    keys.extend([s, s.saturating_add(size - 1)]);
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
                let model = if rev {
                    self.model.find_gap_rev(size, align, window.clone())
                } else {
                    self.model.find_gap(size, align, window.clone())
                };
                let kernel = self.kernel.find_gap(size, window.clone(), rev);
                if rev && self.kernel_rev_wrap(size, &window, model, kernel) {
                    stats.exclude(Exclusion::KernelRevWrap);
                    return Ok(vec![min, max]);
                }
                stats.errno(kernel.map(|_| ()));
                same(model, kernel, || name.to_owned())?;
                stats.hits += u64::from(kernel.is_ok());
                keys.extend([min, max]);
            }
            RangeOp::Insert { .. } | RangeOp::InsertSpan { .. } => {
                let (first, last) = insert_span(op).expect("an insert");
                let range = RangeInclusive::new(first, last);
                let model = self
                    .model
                    .insert_range(range.clone(), v)
                    .map_err(|e| e.cause);
                let kernel = self.kernel.insert_range(range, v);
                stats.errno(kernel);
                same(model, kernel, || name.to_owned())?;
                stats.hits += u64::from(kernel.is_ok());
                keys.extend([first, last]);
            }
            RangeOp::Erase { index } => {
                let k = index.get();
                let kernel = self.kernel.erase(k);
                same(self.model.erase(k), kernel, || name.to_owned())?;
                stats.hits += u64::from(kernel.is_some());
                keys.push(k);
            }
            RangeOp::Load { index } => {
                // Compared in check_state(), with its neighbours.
                stats.hits += u64::from(self.kernel.load(index.get()).is_some());
                keys.push(index.get());
            }
            RangeOp::FindFrom { index } => {
                let k = index.get();
                let model = self.model.read().find_from(k).map(|(r, v)| (r, *v));
                stats.hits += u64::from(model.is_some());
                same(model, self.kernel.find_from(k), || name.to_owned())?;
                keys.push(k);
            }
            _ => unreachable!("read-side ops are excluded before this"),
        }
        Ok(keys)
    }

    /// Full contents, then lookups at `keys` and their neighbours.
    fn check_state(&self, keys: &[u64]) -> Result<Vec<(RangeInclusive<u64>, u64)>, String> {
        let contents = self.contents();
        same(&contents, &self.kernel.entries(), || "contents".to_owned())?;
        for &k in keys {
            for k in [k.wrapping_sub(1), k, k.wrapping_add(1)] {
                self.check_load(k)?;
            }
        }
        Ok(contents)
    }

    /// Every range's edges and neighbours, and both structural checks.
    fn check_deep(&self, contents: &[(RangeInclusive<u64>, u64)]) -> Result<(), String> {
        for (r, _) in contents {
            for k in [*r.start(), *r.end()] {
                for k in [k.wrapping_sub(1), k, k.wrapping_add(1)] {
                    self.check_load(k)?;
                }
            }
        }
        for k in [0, u64::MAX] {
            self.check_load(k)?;
        }
        self.model
            .validate()
            .map_err(|e| format!("RangeTree::validate: {e}"))?;
        // Aborts the process on a broken kernel tree (MT_BUG_ON).
        self.kernel.validate();
        same(self.model.len(), contents.len(), || "len".to_owned())
    }
}

/// Runs `ops` (already kernelised) on fresh trees; `Err((step, message))`
/// at the first difference.
fn replay(ops: &[RangeOp]) -> Result<(), (usize, String)> {
    let mut pair = Pair::new();
    let mut stats = Stats::default();
    for (step, op) in ops.iter().enumerate() {
        if pair.exclusion(op).is_some() {
            continue;
        }
        let v = step as u64;
        let keys = pair.step(op, v, &mut stats).map_err(|e| (step, e))?;
        let contents = pair.check_state(&keys).map_err(|e| (step, e))?;
        if step % 32 == 31 || step + 1 == ops.len() {
            pair.check_deep(&contents).map_err(|e| (step, e))?;
        }
    }
    Ok(())
}

/// Shrinks a failing sequence: drops chunks of ops while it still fails.
fn minimise(mut ops: Vec<RangeOp>) -> Vec<RangeOp> {
    let mut chunk = ops.len().div_ceil(2).max(1);
    loop {
        let mut i = 0;
        while i < ops.len() {
            let mut shorter = ops.clone();
            shorter.drain(i..(i + chunk).min(ops.len()));
            if replay(&shorter).is_err() {
                ops = shorter;
            } else {
                i += chunk;
            }
        }
        if chunk == 1 {
            // Cut everything after the failing step.
            if let Err((step, _)) = replay(&ops) {
                ops.truncate(step + 1);
            }
            return ops;
        }
        chunk = chunk.div_ceil(2);
    }
}

/// One sequence: generates `len` compared ops from `seed` with `generator`,
/// running them as it goes (the weighted generator looks at the contents).
fn sequence(seed: u64, generator: Gen, len: usize, stats: &mut Stats) -> Result<(), String> {
    let mut rng = SplitMix64::new(seed);
    let mut pair = Pair::new();
    let mut ran: Vec<RangeOp> = Vec::with_capacity(len);
    let mut bytes = Vec::new();
    let mut contents = Vec::new();
    let mut offset = 0;
    while ran.len() < len {
        let op = match generator {
            Gen::Weighted(profile) => weighted_op(&mut rng, profile, &contents),
            Gen::Fuzz => {
                // Refill the byte pool whenever the decoder runs dry.
                if bytes.len() - offset < 64 {
                    bytes = (0..4096).map(|_| rng.next_u64().to_le_bytes()[0]).collect();
                    offset = 0;
                }
                let mut u = Unstructured::new(&bytes[offset..]);
                let before = u.len();
                let op = RangeOp::arbitrary(&mut u).map_err(|e| format!("decode: {e}"))?;
                offset += (before - u.len()).max(1);
                op
            }
        };
        let (op, excluded) = kernelise(op);
        if let Some(x) = excluded {
            stats.exclude(x);
        }
        let Some(op) = op else { continue };
        if let Some(x) = pair.exclusion(&op) {
            stats.exclude(x);
            continue;
        }
        let step = ran.len();
        ran.push(op.clone());
        let fail = |e: String, ran: Vec<RangeOp>| {
            let min = minimise(ran);
            format!(
                "RangeTree and the kernel's maple tree differ (seed {seed:#x}, {generator:?}, \
                 step {step}): {e}\nop: {op:?}\nminimised sequence ({} ops, then replayed: {:?}):\n{}",
                min.len(),
                replay(&min).err(),
                min.iter()
                    .map(|op| format!("    {op:?},\n"))
                    .collect::<String>()
            )
        };
        let keys = match pair.step(&op, step as u64, stats) {
            Ok(k) => k,
            Err(e) => return Err(fail(e, ran)),
        };
        contents = match pair.check_state(&keys) {
            Ok(c) => c,
            Err(e) => return Err(fail(e, ran)),
        };
        if (step % 32 == 31 || step + 1 == len)
            && let Err(e) = pair.check_deep(&contents)
        {
            return Err(fail(e, ran));
        }
        stats.ops += 1;
        stats.len_sum += contents.len() as u64;
        stats.len_max = stats.len_max.max(contents.len() as u64);
    }
    stats.sequences += 1;
    Ok(())
}

/// The kernel quirk behind [`Exclusion::KernelRevWrap`], shown on its
/// own: with `[u64::MAX - 10, u64::MAX]` taken, the highest free 10 keys
/// are `[u64::MAX - 20, u64::MAX - 11]`; `RangeTree` finds them, the
/// kernel's `mtree_alloc_rrange()` over `[0, ULONG_MAX]` returns `EBUSY`
/// (the free slot starts at 0, so `mas->last - min + 1` wraps to 0), and
/// over `[0, ULONG_MAX - 1]` finds them. If a kernel fixes this, this test
/// fails: then drop the exclusion.
#[test]
fn kernel_rev_wrap() {
    if !oracle_or_skip() {
        return;
    }
    let mut pair = Pair::new();
    let top = u64::MAX - 10..=u64::MAX;
    pair.model.insert_range(top.clone(), 1).expect("empty tree");
    pair.kernel.insert_range(top, 1).expect("empty tree");
    let want = u64::MAX - 20;
    assert_eq!(pair.model.find_gap_rev(10, 1, 0..=u64::MAX), Ok(want));
    assert_eq!(
        pair.kernel.find_gap(10, 0..=u64::MAX, true),
        Err(Errno::EBUSY),
        "the kernel's reverse gap search no longer wraps: drop Exclusion::KernelRevWrap"
    );
    assert_eq!(
        pair.kernel.alloc_rrange(10, 0..=u64::MAX, 2),
        Err(Errno::EBUSY)
    );
    // Any window start: the slot's own start (0) is what wraps.
    assert_eq!(
        pair.kernel.find_gap(10, 5..=u64::MAX, true),
        Err(Errno::EBUSY)
    );
    assert_eq!(pair.kernel.find_gap(10, 0..=u64::MAX - 1, true), Ok(want));
    // The forward search has no such wrap.
    assert_eq!(pair.kernel.find_gap(10, 0..=u64::MAX, false), Ok(0));
    assert!(pair.kernel_rev_wrap(10, &(0..=u64::MAX), Ok(want), Err(Errno::EBUSY)));
}

/// The kernel bug behind [`Exclusion::KernelInsertWholeRange`], shown on
/// its own: inserting `[0, ULONG_MAX]` over a stored range succeeds in the
/// kernel and drops the range; `RangeTree` refuses with `EEXIST`. Any
/// narrower range is refused by both. If a kernel fixes this, this test
/// fails: then drop the exclusion.
#[test]
fn kernel_insert_whole_range() {
    if !oracle_or_skip() {
        return;
    }
    let mut pair = Pair::new();
    pair.model.insert_range(5..=10, 1).expect("empty tree");
    pair.kernel.insert_range(5..=10, 1).expect("empty tree");
    for narrower in [0..=u64::MAX - 1, 1..=u64::MAX, 5..=10] {
        assert_eq!(
            pair.kernel.insert_range(narrower.clone(), 2),
            Err(Errno::EEXIST)
        );
        assert_eq!(
            pair.model.insert_range(narrower, 2).map_err(|e| e.cause),
            Err(Errno::EEXIST)
        );
    }
    assert_eq!(
        pair.model
            .insert_range(0..=u64::MAX, 2)
            .map_err(|e| e.cause),
        Err(Errno::EEXIST)
    );
    assert_eq!(
        pair.kernel.insert_range(0..=u64::MAX, 2),
        Ok(()),
        "the kernel now refuses [0, ULONG_MAX]: drop Exclusion::KernelInsertWholeRange"
    );
    assert_eq!(
        pair.kernel.entries(),
        vec![(0..=u64::MAX, 2)],
        "range 5..=10 was dropped"
    );
    let op = RangeOp::InsertSpan {
        first: Key(0),
        last: Key(8191),
    };
    assert_eq!(pair.exclusion(&op), Some(Exclusion::KernelInsertWholeRange));
    assert_eq!(Pair::new().exclusion(&op), None);
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(s) => {
            let s = s.replace('_', "");
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{name}={s}: {e}"))
        }
        Err(_) => default,
    }
}

/// At least `DEVPRIV_ORACLE_OPS` ops, split over two threads.
#[test]
fn rangetree_matches_the_kernels_maple_tree() {
    if !oracle_or_skip() {
        return;
    }
    let total = env_u64("DEVPRIV_ORACLE_OPS", 100_000);
    let len = env_u64("DEVPRIV_ORACLE_SEQ_LEN", 256).max(1);
    let seed = env_u64("DEVPRIV_ORACLE_SEED", 0xD1FF_0000);
    let len = usize::try_from(len).expect("fits");
    // Dense sequences are 16x longer, to grow deep trees.
    let plan = |i: u64| match i % 3 {
        0 => (Gen::Weighted(Profile::Balanced), len),
        1 => (Gen::Fuzz, len),
        _ => (Gen::Weighted(Profile::Dense), 16 * len),
    };
    let mut sequences = 0;
    let mut planned = 0;
    while planned < total {
        planned += plan(sequences).1 as u64;
        sequences += 1;
    }
    let start = std::time::Instant::now();
    // The machine's two cores.
    const THREADS: u64 = 2;
    let stats = Mutex::new(Stats::default());
    let failure = Mutex::new(None::<String>);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (stats, failure) = (&stats, &failure);
            s.spawn(move || {
                let mut mine = Stats::default();
                for i in (t..sequences).filter(|i| i % THREADS == t) {
                    if failure.lock().is_some() {
                        break;
                    }
                    let (generator, len) = plan(i);
                    let seq_seed = seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    if let Err(e) = sequence(seq_seed, generator, len, &mut mine) {
                        failure.lock().get_or_insert(e);
                        break;
                    }
                }
                stats.lock().add(&mine);
            });
        }
    });
    if let Some(e) = failure.lock().take() {
        panic!("{e}");
    }
    let stats = std::mem::take(&mut *stats.lock());
    let _ = writeln!(
        std::io::stderr(),
        "differential: {} ops in {} sequences of {len} or {} (seed {seed:#x}), 0 differences, {:.1} s; \
         kernel tree: {}\n  ranges stored: mean {:.1}, max {}; calls that succeeded: {}\n  ops: {:?}\n  kernel errnos: {:?}\n  excluded by name: {:?}",
        stats.ops,
        stats.sequences,
        16 * len,
        start.elapsed().as_secs_f64(),
        flavour(),
        stats.len_sum as f64 / stats.ops.max(1) as f64,
        stats.len_max,
        stats.hits,
        stats.by_op,
        stats.errnos,
        stats.excluded,
    );
    assert!(stats.ops >= total, "ran {} of {total} ops", stats.ops);
    // Every errno path was reached.
    for e in ["EBUSY", "EINVAL", "EEXIST"] {
        assert!(stats.errnos.contains_key(e), "no op reached {e}");
    }
}
