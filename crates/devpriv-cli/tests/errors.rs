//! The bad-input catalogue (`docs/errors.md`) for `devpriv-cli`: one test per row
//! or one table-driven test per entry point.
//!
//! Every test feeds a public entry point an invalid input and checks three
//! things: the errno (or the documented "WARN and continue" behaviour), that
//! the call did not panic (each call runs under `catch_unwind`), and that
//! the state it could have touched is unchanged: `validate()` on the
//! structure plus a snapshot taken before and compared after.
//!
//! Run: `cargo test -p devpriv-cli --test errors`.

#[path = "../../../tests/support/bad_input.rs"]
mod bad_input;

use bad_input::{assert_errno, np};
use devpriv_core::Errno;

// ---------------------------------------------------------------------------
// devpriv-cli: workload entry points
// ---------------------------------------------------------------------------

#[test]
fn quickbench_run_bad_configs() {
    use devpriv_cli::quickbench::{self, BenchConfig};
    for (what, cfg) in [
        (
            "zero pagemaps",
            BenchConfig {
                pagemaps: 0,
                ..BenchConfig::default()
            },
        ),
        (
            "zero lookups",
            BenchConfig {
                lookups: 0,
                ..BenchConfig::default()
            },
        ),
    ] {
        let r = np(what, || quickbench::run(&cfg));
        assert_errno(
            &format!("quickbench::run {what}"),
            r.map(|_| ()),
            Errno::EINVAL,
        );
    }
}

/// `simulate::run` with settings `SimConfig::check` refuses: `EINVAL`
/// before anything is built (no overflow on huge thread counts).
#[test]
fn simulate_run_refuses_bad_settings() {
    use devpriv_cli::simulate::{SimConfig, run};
    let good = SimConfig {
        devices: 1,
        threads: 1,
        rounds: 0,
        chunk_mib: 2,
        seed: 0,
    };
    for bad in [
        SimConfig { devices: 0, ..good },
        SimConfig {
            threads: usize::MAX,
            ..good
        },
        SimConfig {
            chunk_mib: 3,
            ..good
        },
        SimConfig {
            rounds: usize::MAX,
            ..good
        },
    ] {
        assert_errno(
            "simulate::run",
            np("simulate::run", || run(&bad, false)).map(|_| ()),
            Errno::EINVAL,
        );
    }
}
