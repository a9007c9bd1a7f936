//! The fuzz targets' logic on stable: proptest generates byte strings and
//! feeds them through `arbitrary::Unstructured` into the same run
//! functions the cargo-fuzz targets in `fuzz/` call, so `cargo test
//! --workspace` covers every op enum, oracle and state model even where
//! cargo-fuzz (nightly) cannot be installed.
//!
//! Case counts keep the whole file under a few seconds in a debug build.

use proptest::prelude::*;

/// Bytes of the sizes the decoders need: up to `max` bytes.
fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn rangetree_ops(data in bytes(2048)) {
        devpriv_fuzz::run_rangetree_ops(&data).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn page_lifecycle_ops(data in bytes(1024)) {
        devpriv_fuzz::run_page_lifecycle_ops(&data).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn encodings(data in bytes(4096)) {
        devpriv_fuzz::run_encodings(&data).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn check_pte_pmd(data in bytes(2048)) {
        devpriv_fuzz::run_check_pte_pmd(&data).map_err(TestCaseError::fail)?;
    }
}
