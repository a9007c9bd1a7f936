//! The bad-input harness each crate's `tests/errors.rs` shares (the
//! catalogue is `docs/errors.md`): run a call so that a panic fails the
//! test, and check the errno it returns. Included with `#[path]`.

use devpriv_core::Errno;
use std::fmt::Debug;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `f`, failing the test (with `what` in the message) if it panics.
pub(crate) fn np<R>(what: &str, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => panic!("{what}: a public API panicked"),
    }
}

/// Asserts `r` is `Err(e)` (after converting the error to an errno).
#[track_caller]
pub(crate) fn assert_errno<T: Debug, E: Into<Errno>>(what: &str, r: Result<T, E>, e: Errno) {
    match r {
        Ok(v) => panic!("{what}: expected {e:?}, got Ok({v:?})"),
        Err(got) => assert_eq!(got.into(), e, "{what}"),
    }
}
