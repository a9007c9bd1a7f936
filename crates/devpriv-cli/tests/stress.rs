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

/// Two seconds on two threads: every kind of operation happens, at every
/// folio order, and nothing is violated.
#[test]
fn a_two_second_run_is_clean() {
    let cfg = StressConfig {
        threads: 2,
        secs: 2,
        ops: None,
        seed: 42,
    };
    cfg.check().unwrap();
    let r = stress::run(&cfg).unwrap();
    assert!(r.is_clean(), "{}", r.to_text());
    for (kind, n) in &r.ops {
        if *kind != "allocator_full" {
            assert!(*n > 0, "no {kind} operation in:\n{}", r.to_text());
        }
    }
    assert!(r.orders.iter().all(|&n| n > 0), "{:?}", r.orders);
    assert!(r.expected_warns > 0);
    assert!(r.verified > r.dispatched);
    assert!(r.elapsed.as_secs_f64() >= 2.0);
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
