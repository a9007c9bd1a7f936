//! devpriv-fuzz: the logic behind the cargo-fuzz targets in `fuzz/`, shared
//! with the stable proptests in this crate's `tests/`.
//!
//! Kernel: none (model only). Each target drives one part of the model with
//! operations decoded from raw bytes and compares every answer with an
//! oracle written independently of the code under test:
//!
//! | target | run function | oracle |
//! |---|---|---|
//! | `rangetree_ops` | [`run_rangetree_ops`] | a `BTreeMap` and a gap scan in `u128` arithmetic |
//! | `page_lifecycle_ops` | [`run_page_lifecycle_ops`] | a state model of pagemaps, folios, refcounts, locks and pagemap references |
//! | `encodings` | [`run_encodings`] | the kernel's bit layouts written out as shifts and masks |
//! | `check_pte_pmd` | [`run_check_pte_pmd`] | [`naive`]: the kernel's `check_pte()` / `check_pmd()` / PMD-walk branches on raw bits |
//!
//! # Style
//!
//! A run function decodes its input with [`arbitrary`] and returns
//! `Ok(())` when the model agreed with the oracle on every step, including
//! inputs too short or malformed to decode (those test nothing). It returns
//! `Err(message)` — naming the step, the operation and both answers — when
//! they disagree: that is a bug in the model or in the oracle. The fuzz
//! targets turn an `Err` into a panic (a libFuzzer crash); the proptests
//! assert `Ok`. A panic inside the model itself is reported as a crash by
//! libFuzzer and as a failed case by proptest.
//!
//! Every run is bounded: at most [`MAX_OPS`] operations, small key spaces
//! and small pagemaps, so that one input runs in well under a millisecond
//! to a few milliseconds.

#![forbid(unsafe_code)]

pub mod encodings;
pub mod lifecycle;
pub mod naive;
pub mod pvmw;
pub mod rangetree;

pub use encodings::run_encodings;
pub use lifecycle::run_page_lifecycle_ops;
pub use pvmw::run_check_pte_pmd;
pub use rangetree::run_rangetree_ops;

/// The most operations one input runs (the rest of the input is ignored).
///
/// Kernel: none (model only).
pub const MAX_OPS: usize = 256;

/// Decodes up to [`MAX_OPS`] operations from `data`; an undecodable tail
/// ends the list.
fn decode_ops<'a, T: arbitrary::Arbitrary<'a>>(data: &'a [u8]) -> Vec<T> {
    let mut u = arbitrary::Unstructured::new(data);
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS && !u.is_empty() {
        match T::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    ops
}

/// `Err(msg)` unless `got == want`.
fn check_eq<T: PartialEq + std::fmt::Debug>(
    got: &T,
    want: &T,
    what: impl FnOnce() -> String,
) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{}: model {got:?}, oracle {want:?}", what()))
    }
}
