//! The `devpriv` command line: the default simulation (text and JSON), the
//! map, the quick benchmark, and one-line errors with exit status 2.

use std::process::{Command, Output};

fn devpriv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_devpriv"))
        .args(args)
        .output()
        .expect("the devpriv binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn simulate_reports_every_section_and_no_violation() {
    let o = devpriv(&["--rounds", "300", "--threads", "2"]);
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = stdout(&o);
    for needle in [
        "operations",
        "migrate_to_device",
        "cpu_fault_back",
        "page_vma_mapped_walk",
        "device folios created, by order",
        "peak device pages in use",
        "address space after the workload",
        "violations: 0",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
    let verified: u64 = text
        .split("invariants verified: ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .expect("a count of verified invariants");
    assert!(verified > 100, "only {verified} invariants checked");
}

#[test]
fn simulate_json_is_one_object_with_the_report() {
    let o = devpriv(&["simulate", "--rounds", "200", "--json", "--devices", "3"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("valid JSON");
    assert_eq!(v["config"]["devices"], 3);
    assert_eq!(v["violations"].as_array().map(Vec::len), Some(0));
    assert!(v["invariants_verified"].as_u64().unwrap_or(0) > 0);
    assert!(v["ops"].as_array().is_some_and(|a| a.len() == 7));
    assert!(
        v["address_space"]
            .as_str()
            .is_some_and(|s| s.contains("pagemap"))
    );
}

#[test]
fn bad_flags_give_one_line_and_status_2() {
    for args in [
        &["--devices", "0"][..],
        &["--bogus"],
        &["simulate", "--chunk-mib", "3"],
        &["map", "--pagemaps", "0"],
        &["bench", "--lookups", "0"],
        &["--threads", "many"],
    ] {
        let o = devpriv(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("devpriv: "), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn map_prints_the_layout_and_writes_svg() {
    let svg = std::env::temp_dir().join(format!("devpriv-map-{}.svg", std::process::id()));
    let path = svg.to_str().expect("a UTF-8 temp path");
    let o = devpriv(&[
        "map",
        "--pagemaps",
        "9",
        "--packing",
        "section",
        "--svg",
        path,
    ]);
    assert!(o.status.success());
    let text = stdout(&o);
    assert!(text.contains("pagemap") && text.contains("gap"), "{text}");
    let drawn = std::fs::read_to_string(&svg).expect("the SVG file");
    assert!(drawn.starts_with("<svg") && drawn.trim_end().ends_with("</svg>"));
    assert!(drawn.matches("<rect").count() >= 9);
    let _ = std::fs::remove_file(svg);
}

#[test]
fn bench_prints_a_ratio_table() {
    let o = devpriv(&["bench", "--pagemaps", "16", "--lookups", "2000"]);
    assert!(o.status.success());
    let text = stdout(&o);
    for row in [
        "space (section index)",
        "rangemap + index",
        "vmemmap base + offset",
        "exact, 100 pages",
        "exact, 65536 pages",
        "section-aligned, 256 pages",
        "rangemap / space",
    ] {
        assert!(text.contains(row), "{text}");
    }
    // The maple-tree comparison runs, or says loudly why not.
    assert!(
        text.contains("RangeTree / kernel") || text.contains("maple-tree comparison NOT RUN"),
        "{text}"
    );
}
