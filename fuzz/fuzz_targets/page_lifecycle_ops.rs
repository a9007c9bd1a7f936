//! cargo-fuzz target `page_lifecycle_ops`: see `devpriv_fuzz::run_page_lifecycle_ops`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = devpriv_fuzz::run_page_lifecycle_ops(data) {
        panic!("page_lifecycle_ops: {e}");
    }
});
