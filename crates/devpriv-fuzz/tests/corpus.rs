//! Replays the checked-in fuzz corpora (`corpus/<target>/`) through the
//! same functions the cargo-fuzz targets call, so `cargo test --workspace`
//! re-runs every input the fuzzer found interesting, on stable.
//!
//! Kernel: none (model only).
//!
//! The corpora were grown with `ci/fuzz.sh` and reduced with libFuzzer's
//! `-set_cover_merge=1` (the smallest set of inputs with the same
//! coverage); see `docs/testing.md`, "Fuzzing". A divergence names the file.

#![forbid(unsafe_code)]

use std::path::Path;

type Target = fn(&[u8]) -> Result<(), String>;

fn replay(target: &str, run: Target) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 50,
        "{target}: only {} corpus files: the corpus is missing",
        files.len()
    );
    let inputs = if cfg!(miri) { &files[..2] } else { &files[..] };
    for f in inputs {
        let data = std::fs::read(f).unwrap();
        if let Err(e) = run(&data) {
            panic!("{target}: {}: {e}", f.display());
        }
    }
}

#[test]
fn rangetree_ops_corpus() {
    replay("rangetree_ops", devpriv_fuzz::run_rangetree_ops);
}

#[test]
fn page_lifecycle_ops_corpus() {
    replay("page_lifecycle_ops", devpriv_fuzz::run_page_lifecycle_ops);
}

#[test]
fn encodings_corpus() {
    replay("encodings", devpriv_fuzz::run_encodings);
}

#[test]
fn check_pte_pmd_corpus() {
    replay("check_pte_pmd", devpriv_fuzz::run_check_pte_pmd);
}
