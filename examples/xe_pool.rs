//! Xe's shared VRAM pool under each reinit policy: why the fix exists.
//!
//! Models: the Xe scenario behind hazards H1–H4 (`docs/hazards.md`). One
//! DRM-buddy VRAM pool
//! (`drivers/gpu/drm/drm_buddy.c`, `alloc_from_freelist()`) serves both
//! buffer objects and SVM device pages (`drivers/gpu/drm/xe/xe_svm.c`). A
//! freed 2 MiB block is reused for 4 KiB and 64 KiB folios at arbitrary
//! offsets while several GPU fault handlers run at once. Each SVM fault
//! calls `zone_device_folio_init()` (`mm/memremap.c`) on its pages and checks
//! the folio it gets; each eviction drops the last reference, so
//! `free_zone_device_folio()` → `folio_free` returns the block to the pool.
//! The same seeded workload runs under the three reinit policies: `None`
//! (6.19, before the fix), `AtFree` (Matthew Brost's free-time sketch of
//! 2026-01-07, never merged) and
//! `AtAlloc` (the merged fix). The logic lives in `devpriv::drivers::xe_pool`.
//!
//! Run: `cargo run --example xe_pool`
//!
//! Expected output: one table per policy (a row per fault handler:
//! operations, folios, 2 MiB → small reuses, and the hazards seen: stale
//! `PG_locked` "would-block", wrong `page_folio`, wrong order, VRAM set
//! aside), then a one-line-per-policy summary. `None` shows all three
//! hazards, a negative pagemap ref imbalance, and a pool that ends up stuck;
//! `AtFree` and `AtAlloc` show none and tear the pagemap down cleanly.
//! Counts under `None` vary a little between runs (the handlers race); the
//! example exits non-zero if `AtAlloc` (or `AtFree`) shows any hazard or if
//! `None` shows none.

use devpriv::drivers::xe_pool::{XeReport, render_summary, run_workload};
use devpriv::pagemap::ReinitPolicy;
use std::process::ExitCode;

const THREADS: usize = 4;
const ITERATIONS: usize = 1500;
const SEED: u64 = 0x5eed_0001;

fn main() -> ExitCode {
    println!(
        "Xe shared VRAM pool: {THREADS} GPU fault handlers x {ITERATIONS} ops, seed {SEED:#x}\n"
    );
    let mut reports: Vec<XeReport> = Vec::new();
    for policy in [
        ReinitPolicy::None,
        ReinitPolicy::AtFree,
        ReinitPolicy::AtAlloc,
    ] {
        match run_workload(policy, THREADS, ITERATIONS, SEED) {
            Ok(r) => {
                println!("{}", r.render());
                reports.push(r);
            }
            Err(e) => {
                eprintln!("xe_pool: {policy:?}: internal error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("summary:");
    print!("{}", render_summary(&reports));

    let mut failed = Vec::new();
    for r in &reports {
        let p = r.config.policy;
        match p {
            ReinitPolicy::None => {
                if !r.has_hazards() || r.total.wrong_folio == 0 {
                    failed.push(format!("{p:?} showed no hazards: the model lost the bug"));
                }
            }
            ReinitPolicy::AtFree | ReinitPolicy::AtAlloc => {
                if r.has_hazards() || r.stuck_pages != 0 || !r.teardown_ok {
                    failed.push(format!("{p:?} showed hazards or could not tear down"));
                }
                if r.total.reuse_small == 0 {
                    failed.push(format!(
                        "{p:?} never reused a 2 MiB block at a smaller order"
                    ));
                }
            }
        }
        if r.bad_frees != 0 {
            failed.push(format!(
                "{p:?}: {} folio_free calls for no block",
                r.bad_frees
            ));
        }
    }
    if failed.is_empty() {
        println!(
            "\nNone: freed 2 MiB folios stay compound, so reused pages keep a stale PG_locked,\n\
             PG_head and tail links; AtFree and AtAlloc reset them (at free / at allocation)."
        );
        ExitCode::SUCCESS
    } else {
        for f in failed {
            eprintln!("xe_pool: claim failed: {f}");
        }
        ExitCode::FAILURE
    }
}
