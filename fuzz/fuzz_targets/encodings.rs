//! cargo-fuzz target `encodings`: see `devpriv_fuzz::run_encodings`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = devpriv_fuzz::run_encodings(data) {
        panic!("encodings: {e}");
    }
});
