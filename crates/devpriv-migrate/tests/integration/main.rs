//! Integration tests for devpriv-migrate: the address-space operations of
//! issue 15 (fork, mprotect, mremap, madvise, file mappings, exclusive
//! entries, THP faults, MMU notifiers), encodings (property-tested),
//! `check_pte()` / `check_pmd()` truth tables against a naive transcription
//! of the kernel's branches, the walker's control flow, and the hazards of
//! kernel-semantics.md §10 (H7, H8, H9, H12, H13, H18).

mod address_space;
mod encodings;
mod hazards;
mod naive;
mod walk;
