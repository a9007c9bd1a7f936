//! Helpers shared by the criterion benches: the group settings (the
//! fixed-seed PRNG is `devpriv_core::random::SplitMix64`). Included with
//! `#[path]` by each bench file.

use criterion::BenchmarkGroup;
use criterion::measurement::WallTime;
use std::time::Duration;

/// Applies the shared timing settings that keep the whole run to minutes.
pub(crate) fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
}
