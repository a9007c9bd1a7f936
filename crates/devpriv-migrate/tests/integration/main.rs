//! Integration tests for devpriv-migrate: encodings (property-tested),
//! `check_pte()` / `check_pmd()` truth tables against a naive transcription
//! of the kernel's branches, the walker's control flow, `migrate_vma_*`
//! paths, and the hazards of `docs/hazards.md` (H7, H8, H9, H12, H13, H18,
//! H20, H21, H22).

mod encodings;
mod hazards;
mod migrate;
// The oracle lives in devpriv-fuzz (which depends on this crate, so it
// cannot be a dev-dependency without a second copy of this crate).
#[path = "../../../devpriv-fuzz/src/naive.rs"]
#[allow(dead_code, unreachable_pub, reason = "the fuzz targets use the rest")]
mod naive;
mod walk;
mod walk_steps;
