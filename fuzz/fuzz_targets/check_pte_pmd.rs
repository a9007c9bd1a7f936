//! cargo-fuzz target `check_pte_pmd`: see `devpriv_fuzz::run_check_pte_pmd`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = devpriv_fuzz::run_check_pte_pmd(data) {
        panic!("check_pte_pmd: {e}");
    }
});
