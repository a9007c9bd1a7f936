//! Integration tests for devpriv-migrate: encodings (property-tested),
//! `check_pte()` / `check_pmd()` truth tables against a naive transcription
//! of the kernel's branches, the walker's control flow, and the hazards of
//! kernel-semantics.md §10 (H7, H8, H9, H12, H13, H18).

mod encodings;
mod hazards;
mod migrate;
mod naive;
mod walk;
