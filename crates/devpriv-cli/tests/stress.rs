//! `devpriv stress` (`docs/testing.md`, "Stress"): a short run of the harness through the
//! library and through the binary, and its bad-input handling.

use devpriv_cli::stress::{self, StressConfig};
use std::process::{Command, Output};

fn devpriv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_devpriv"))
        .args(args)
        .output()
        .expect("the devpriv binary runs")
}

/// A fixed number of operations on one thread: deterministic (the seed
/// decides everything), so it can promise that every kind of operation
/// happens, at every folio order, and that a second run is identical. The
/// time bound is only a safety net.
#[test]
fn a_single_thread_run_covers_every_operation_and_order() {
    let cfg = StressConfig {
        threads: 1,
        secs: 600,
        ops: Some(10_000),
        seed: 42,
    };
    cfg.check().unwrap();
    let r = stress::run(&cfg).unwrap();
    assert!(r.is_clean(), "{}", r.to_text());
    assert_eq!(r.dispatched, 10_000);
    for (kind, n) in &r.ops {
        assert!(*n > 0, "no {kind} operation in:\n{}", r.to_text());
    }
    assert!(r.orders.iter().all(|&n| n > 0), "{:?}", r.orders);
    assert!(r.expected_warns > 0);
    assert!(r.verified > r.dispatched);
    let again = stress::run(&cfg).unwrap();
    assert_eq!(again.ops, r.ops, "one thread, one seed: the same run");
    assert_eq!(again.orders, r.orders);
}

/// The same number of operations on two threads: the interleaving is not
/// reproducible, so the test asserts only what holds in every one.
#[test]
fn a_two_thread_run_is_clean() {
    let cfg = StressConfig {
        threads: 2,
        secs: 600,
        ops: Some(10_000),
        seed: 42,
    };
    let r = stress::run(&cfg).unwrap();
    assert!(r.is_clean(), "{}", r.to_text());
    assert_eq!(r.dispatched, 10_000);
    assert!(r.verified > r.dispatched);
}

#[test]
fn the_binary_stops_at_the_operation_bound_and_reports_json() {
    let o = devpriv(&["stress", "--secs", "60", "--ops", "2000", "--json"]);
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["dispatched"], 2000);
    assert_eq!(v["violations_total"], 0);
    assert_eq!(v["violations"], serde_json::json!([]));
    assert!(v["ops"]["folio_init"].as_u64().unwrap() > 0);
}

#[test]
fn bad_values_give_one_line_and_status_2() {
    for args in [
        &["stress", "--threads", "0"][..],
        &["stress", "--threads", "65"],
        &["stress", "--secs", "0"],
        &["stress", "--ops", "0"],
        &["stress", "--secs", "-1"],
        &["stress", "--threads", "two"],
        &["stress", "--bogus"],
    ] {
        let o = devpriv(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("devpriv: "), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}");
    }
}
