//! The range-tree layouts shared by `range_tree.rs` and `maple_tree.rs`
//! (included with `#[path]`), so both benches measure the same trees.

use devpriv_core::random::SplitMix64;

/// Keys per stored range in the lookup layout.
pub(crate) const SPAN: u64 = 512;
/// Free keys between two consecutive ranges in the lookup layout.
pub(crate) const GAP: u64 = 512;
/// Query keys per iteration of `mtree_load`.
pub(crate) const QUERIES: usize = 4096;
/// Live range counts for `mtree_alloc_range`.
pub(crate) const LIVE_SIZES: [u64; 2] = [100, 10_000];
/// Precomputed request sizes for `mtree_alloc_range` (cycled through).
pub(crate) const REQUESTS: usize = 1024;

/// First key of range `i` in the lookup layout: `[i * (SPAN + GAP), +SPAN)`.
pub(crate) fn range_first(i: u64) -> u64 {
    i * (SPAN + GAP)
}

/// Query keys, each inside some range of an `n`-range layout.
///
/// `random`: uniform over ranges and offsets. Sequential: one key per range
/// (at a random offset), walking the ranges in order and wrapping.
pub(crate) fn queries(n: u64, random: bool) -> Vec<u64> {
    let mut rng = SplitMix64::new(0x5EED_0000 ^ n ^ u64::from(random));
    let mut i = 0;
    (0..QUERIES)
        .map(|_| {
            let range = if random {
                rng.between(0, n - 1)
            } else {
                let r = i;
                i = (i + 1) % n;
                r
            };
            range_first(range) + rng.between(0, SPAN - 1)
        })
        .collect()
}

/// Sizes of the `2 * live` allocations that build the fragmented layout:
/// even positions are kept (1..=64 keys), odd positions become holes
/// (1..=8 keys).
///
/// Layout choice: the allocations pack contiguously from key 0, then every
/// odd one is erased, leaving `live` ranges separated by `live` holes of
/// 1..=8 keys. Requests are 16..=64 keys (see [`request_sizes`]), larger
/// than every hole, so a first-fit allocator must scan all `live` holes
/// before it reaches the free tail; the range tree's per-subtree gap
/// bookkeeping skips them.
pub(crate) fn layout_sizes(live: u64) -> Vec<u64> {
    let mut rng = SplitMix64::new(0xA110_C000 ^ live);
    (0..2 * live)
        .map(|i| {
            if i % 2 == 0 {
                rng.between(1, 64)
            } else {
                rng.between(1, 8)
            }
        })
        .collect()
}

/// Fixed-seed request sizes, 16..=64 keys: never fit in a hole.
pub(crate) fn request_sizes() -> Vec<u64> {
    let mut rng = SplitMix64::new(0x0005_12E5);
    (0..REQUESTS).map(|_| rng.between(16, 64)).collect()
}
