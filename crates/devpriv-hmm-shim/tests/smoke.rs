//! Runs `tests/csrc/smoke.c` and `thp.c` (our own programs, not kernel
//! code) with the shim preloaded: the test driver's ABI, CPU faults,
//! `fork`, capability refusals, a genuine `SIGSEGV`, and the newer THP
//! tests' shapes, without any kernel source. The kernel's own
//! `hmm-tests.c` runs in `ci/hmm-tests.sh`.

use std::path::PathBuf;
use std::process::Command;

/// Builds the shim (cargo does not rebuild a `cdylib` for an integration
/// test that cannot link it) into this test's target directory, and
/// returns `target/debug/libdevpriv_hmm_shim.so`.
fn shim() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/smoke-<hash>
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the target directory")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "-q", "-p", "devpriv-hmm-shim", "--target-dir"])
        .arg(&target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo");
    assert!(status.success(), "building the shim failed");
    target.join("debug/libdevpriv_hmm_shim.so")
}

/// Compiles `tests/csrc/<name>.c`, runs it with the shim preloaded and
/// returns its stderr once it printed "ok" and exited 0.
fn run_c(name: &str) -> String {
    let so = shim();
    assert!(so.is_file(), "{} not built", so.display());
    let out_dir = std::env::temp_dir().join(format!("devpriv-shim-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let exe = out_dir.join(name);
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/csrc/{name}.c"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let built = Command::new(&cc)
        .args(["-Wall", "-O1", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("a C compiler");
    assert!(built.success(), "{cc} failed on {}", src.display());
    let out = Command::new(&exe).env("LD_PRELOAD", &so).output().unwrap();
    let _ = std::fs::remove_dir_all(&out_dir);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.trim() == "ok",
        "{name}: status {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    stderr.into_owned()
}

#[test]
fn smoke_program_passes_under_the_shim() {
    let stderr = run_c("smoke");
    assert!(stderr.contains("refused MAP_HUGETLB"), "stderr: {stderr}");
}

/// The shapes of the newer files' THP tests through the shim (huge zero
/// page, `MADV_FREE`, `mremap` into a hole the program punched, the
/// `FAIL_ALLOC` fallbacks), in one process, so state left by one shape
/// meets the next.
#[test]
fn thp_program_passes_under_the_shim() {
    run_c("thp");
}
