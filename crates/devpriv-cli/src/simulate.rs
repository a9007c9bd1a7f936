//! The end-to-end workload behind `devpriv simulate` (and `cargo run`).
//!
//! Kernel: none (model only). It drives the whole stack the way a GPU
//! driver and its processes would:
//!
//! 1. **Devices.** `devices` dmirror devices (`lib/test_hmm.c`), each with
//!    its own owner, memremap chunks of device-private memory on demand in
//!    one shared [`DevicePrivateSpace`].
//! 2. **Migration workload.** `threads` processes, each with its own
//!    address space (small pages and two THPs) and a mirror on device
//!    `t % devices`, run `rounds` random operations: migrate a range or a
//!    THP to the device, fault pages back by CPU access
//!    (`do_swap_page()` → `migrate_to_ram()`), migrate back explicitly,
//!    migrate a THP with a forced large-allocation failure (the split
//!    fallback), snapshot the range, and find device pages with
//!    `page_vma_mapped_walk()` (`PVMW_DEVICE_PRIVATE`). Every page holds a
//!    known value, checked after every move.
//! 3. **Reuse at another order.** The Xe workload of hazards H1–H4
//!    ([`devpriv_drivers::xe_pool`]) under the merged reinit policy: freed 2 MiB
//!    folios reused as 4 KiB and 64 KiB folios by concurrent fault
//!    handlers, which must see no stale metadata.
//! 4. **Teardown and audit.** Every mirror releases (evict every chunk,
//!    then unmap), every address space unmaps, and the audit checks that
//!    every device page was freed with refcount 0 and every pagemap
//!    reference returned, that system memory is all free again, and that
//!    the space's tree and index agree (`validate()`).
//!
//! Each check counts as one verified invariant; a failed one is recorded
//! as a violation with a message, and `devpriv` exits non-zero.

use crate::map::Layout;
use devpriv_core::random::SplitMix64;
use devpriv_core::{Errno, Order, PAGE_SIZE, PageCount, PageFrame, Pfn};
use devpriv_drivers::test_hmm::{
    Dmirror, DmirrorConfig, DmirrorDevice, DmirrorProt, HmmDmirrorCmd,
};
use devpriv_drivers::xe_pool::{self, XeConfig};
use devpriv_migrate::{
    FaultFlags, Memory, Mm, MmConfig, PMD_SIZE, PageVmaMappedWalk, PvmwFlags, SystemMemory,
    VmFlags, handle_mm_fault,
};
use devpriv_pagemap::{DevicePrivateSpace, Owner, ReinitPolicy};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Small pages per process (4 MiB).
const SMALL_PAGES: u64 = 1024;
/// THPs per process.
const THPS: u64 = 2;
/// Where process `t`'s region starts.
fn region_base(t: usize) -> u64 {
    0x7f00_0000_0000 + t as u64 * (64 << 20)
}

/// Settings of a simulation.
///
/// Kernel: none (model only).
#[derive(Clone, Copy, Debug)]
pub struct SimConfig {
    /// Devices (owners).
    pub devices: usize,
    /// Processes, one thread each.
    pub threads: usize,
    /// Random operations per process.
    pub rounds: usize,
    /// Device memory chunk size in MiB.
    pub chunk_mib: u64,
    /// Seed of every random choice.
    pub seed: u64,
}

impl SimConfig {
    /// Checks the settings.
    ///
    /// Kernel: none (model only).
    ///
    /// # Errors
    ///
    /// A one-line explanation of the first bad setting.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=16).contains(&self.devices) {
            return Err("--devices must be in 1..=16".into());
        }
        if !(1..=64).contains(&self.threads) {
            return Err("--threads must be in 1..=64".into());
        }
        if self.rounds > 100_000 {
            return Err("--rounds must be at most 100000".into());
        }
        if self.chunk_mib < 2 || !self.chunk_mib.is_multiple_of(2) || self.chunk_mib > 4096 {
            return Err("--chunk-mib must be an even number of MiB in 2..=4096".into());
        }
        Ok(())
    }
}

/// Operation kinds, in report order.
const KINDS: [&str; 7] = [
    "migrate_to_device",
    "migrate_thp_to_device",
    "cpu_fault_back",
    "migrate_to_system",
    "split_fallback",
    "snapshot",
    "page_vma_mapped_walk",
];

/// What one process did.
#[derive(Debug, Default)]
struct WorkerStats {
    ops: BTreeMap<&'static str, (u64, Duration)>,
    /// Device folios created, by order.
    orders: BTreeMap<u32, u64>,
    peak_device_pages: u64,
    verified: u64,
    violations: Vec<String>,
}

impl WorkerStats {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        self.verified += 1;
        if !ok {
            self.violations.push(what());
        }
    }

    fn timed<T>(&mut self, kind: &'static str, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let r = f();
        let e = self.ops.entry(kind).or_default();
        e.0 += 1;
        e.1 += t.elapsed();
        r
    }
}

/// The simulation's report.
///
/// Kernel: none (model only).
#[derive(Debug)]
pub struct Report {
    /// The settings.
    pub config: SimConfig,
    /// `(kind, count, operations per second of that kind's own time)`.
    pub ops: Vec<(&'static str, u64, f64)>,
    /// Device folios created, by order.
    pub orders: BTreeMap<u32, u64>,
    /// Most device pages in use at once (sampled after each operation).
    pub peak_device_pages: u64,
    /// The address space after the workload, before teardown, as text.
    pub map: String,
    /// The reuse-at-another-order phase: folios initialised, hazards seen.
    pub reuse: (u64, u64),
    /// Invariants checked.
    pub verified: u64,
    /// Invariants that failed, one message each.
    pub violations: Vec<String>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

/// Runs the simulation. `progress` draws a progress bar on standard error.
///
/// Kernel: none (model only).
///
/// # Errors
///
/// `EINVAL` if [`SimConfig::check`] refuses the settings; an errno from
/// setting up memory or devices (the workload's own failures are
/// violations in the report, not errors).
pub fn run(cfg: &SimConfig, progress: bool) -> Result<Report, Errno> {
    cfg.check().map_err(|_| Errno::EINVAL)?;
    let started = Instant::now();
    let per_thread = SMALL_PAGES + THPS * 512;
    let sys_pages = (cfg.threads as u64 * per_thread).next_multiple_of(512) + 1024;
    let sys = SystemMemory::new(Pfn::new(0x10_0000), PageCount::new(sys_pages))?;
    let mem = Memory::new(Arc::new(sys), Arc::new(DevicePrivateSpace::new()));
    let chunk = DmirrorConfig::with_chunk_pages(PageCount::new(cfg.chunk_mib * 256));
    let devices = (0..cfg.devices)
        .map(|d| DmirrorDevice::new(&mem, Owner(0xd0 + d as u64), chunk))
        .collect::<Result<Vec<_>, _>>()?;

    let bar = progress.then(|| {
        let b = indicatif::ProgressBar::new((cfg.threads * cfg.rounds) as u64 + 2);
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg:<24} [{bar:40}] {pos}/{len}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_message("migration workload");
        b
    });

    let (mut stats, procs): (Vec<WorkerStats>, Vec<Option<Process>>) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cfg.threads)
            .map(|t| {
                let (mem, devices, bar) = (&mem, &devices, bar.as_ref());
                s.spawn(move || worker(cfg, t, mem, devices, bar))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| (crashed(), None)))
            .unzip()
    });
    // The space with every device's chunks still mapped.
    let map = Layout::of(mem.space()).to_text();
    for (t, p) in procs.into_iter().enumerate() {
        if let Some(p) = p
            && let Err(e) = p.teardown()
        {
            stats[t]
                .violations
                .push(format!("process {t} teardown: {e}"));
        }
    }

    // Reuse at another order: the Xe workload under the merged fix.
    if let Some(b) = &bar {
        b.set_message("reuse at another order");
    }
    let mut audit = WorkerStats::default();
    let xe = xe_pool::run(&XeConfig::new(
        ReinitPolicy::AtAlloc,
        cfg.threads.min(4),
        cfg.rounds.clamp(100, 2000),
        cfg.seed,
    ))?;
    audit.check(!xe.has_hazards(), || {
        format!(
            "reuse at another order: hazards under AtAlloc: {:?}",
            xe.total
        )
    });
    audit.check(xe.teardown_ok && xe.ref_imbalance == 0, || {
        format!(
            "reuse at another order: teardown {} with ref imbalance {}",
            xe.teardown_ok, xe.ref_imbalance
        )
    });
    if let Some(b) = &bar {
        b.inc(1);
        b.set_message("teardown and audit");
    }

    // Teardown: every device gives its memory back, then the audit.
    for dev in devices {
        let owner = dev.owner();
        let idle = dev.check_idle();
        audit.check(idle.is_ok(), || {
            format!("device {owner:?} not idle: {idle:?}")
        });
        let removed = dev.remove();
        audit.check(removed.is_ok(), || {
            format!("device {owner:?} remove: {removed:?}")
        });
    }
    audit.check(mem.space().is_empty(), || {
        format!(
            "{} pagemaps left after every device was removed",
            mem.space().len()
        )
    });
    let valid = mem.space().validate();
    audit.check(valid.is_ok(), || format!("space: {valid:?}"));
    let free = mem.sys().nr_free();
    audit.check(free == sys_pages, || {
        format!("system memory: {free} of {sys_pages} pages free after every munmap")
    });
    if let Some(b) = bar {
        b.inc(1);
        b.finish_and_clear();
    }

    stats.push(audit);
    Ok(summarise(
        cfg,
        stats,
        map,
        (xe.total.folios, xe.total.hazard_events()),
        started.elapsed(),
    ))
}

fn crashed() -> WorkerStats {
    WorkerStats {
        violations: vec!["a worker thread panicked".into()],
        ..WorkerStats::default()
    }
}

fn summarise(
    cfg: &SimConfig,
    stats: Vec<WorkerStats>,
    map: String,
    reuse: (u64, u64),
    elapsed: Duration,
) -> Report {
    let mut ops: BTreeMap<&'static str, (u64, Duration)> = BTreeMap::new();
    let mut orders = BTreeMap::new();
    let (mut verified, mut violations, mut peak) = (0, Vec::new(), 0);
    for s in stats {
        for (k, (n, d)) in s.ops {
            let e = ops.entry(k).or_default();
            e.0 += n;
            e.1 += d;
        }
        for (o, n) in s.orders {
            *orders.entry(o).or_default() += n;
        }
        verified += s.verified;
        violations.extend(s.violations);
        peak = peak.max(s.peak_device_pages);
    }
    let ops = KINDS
        .iter()
        .map(|k| {
            let (n, d) = ops.get(k).copied().unwrap_or_default();
            #[expect(clippy::cast_precision_loss, reason = "a rate")]
            let rate = if d.is_zero() {
                0.0
            } else {
                n as f64 / d.as_secs_f64()
            };
            (*k, n, rate)
        })
        .collect();
    Report {
        config: *cfg,
        ops,
        orders,
        peak_device_pages: peak,
        map,
        reuse,
        verified,
        violations,
        elapsed,
    }
}

/// A process left after its workload: torn down once the map is drawn.
struct Process {
    mm: Arc<Mm>,
    mirror: Dmirror,
    start: u64,
    end: u64,
}

impl Process {
    /// `RELEASE` on the mirror (evict and unmap the device's chunks), then
    /// `munmap` of the whole region, which nothing else may still hold.
    fn teardown(self) -> Result<(), Errno> {
        self.mirror.release(&self.mm)?;
        drop(self.mirror);
        if Arc::strong_count(&self.mm) != 1 {
            return Err(Errno::EBUSY);
        }
        self.mm
            .mmap_write_lock()
            .munmap(self.start, self.end - self.start)
    }
}

/// One process: its address space, its mirror, and its share of the
/// workload.
fn worker(
    cfg: &SimConfig,
    t: usize,
    mem: &Memory,
    devices: &[DmirrorDevice],
    bar: Option<&indicatif::ProgressBar>,
) -> (WorkerStats, Option<Process>) {
    let mut st = WorkerStats::default();
    match process(cfg, t, mem, devices, bar, &mut st) {
        Ok(p) => (st, Some(p)),
        Err(e) => {
            st.violations.push(format!("process {t}: {e}"));
            (st, None)
        }
    }
}

/// The value page `addr` holds after its `gen`th write.
pub(crate) fn value(addr: u64, generation: u64) -> u64 {
    (addr >> 12) ^ generation << 48
}

fn process(
    cfg: &SimConfig,
    t: usize,
    mem: &Memory,
    devices: &[DmirrorDevice],
    bar: Option<&indicatif::ProgressBar>,
    st: &mut WorkerStats,
) -> Result<Process, Errno> {
    let base = region_base(t);
    let thp_base = (base + SMALL_PAGES * PAGE_SIZE).next_multiple_of(PMD_SIZE);
    let end = thp_base + THPS * PMD_SIZE;
    let mm = Mm::new(mem, MmConfig::default());
    mm.mmap_write_lock()
        .mmap_anon(base, end - base, VmFlags::RW)?;
    for i in 0..THPS {
        let f = mem.sys().alloc_folio(Order::HPAGE_PMD)?;
        mm.map_folio_pmd(thp_base + i * PMD_SIZE, f, true)?;
        f.put()?;
    }
    let pages: Vec<u64> = (base..base + SMALL_PAGES * PAGE_SIZE)
        .chain(thp_base..end)
        .step_by(4096)
        .collect();
    let mut generation: BTreeMap<u64, u64> = BTreeMap::new();
    for &a in &pages {
        cpu_write(&mm, a, value(a, 0))?;
        generation.insert(a, 0);
    }
    let dev = &devices[t % devices.len()];
    let mirror = dev.open(&mm);
    let mut rng = SplitMix64::new(cfg.seed ^ (t as u64) << 32);

    for _ in 0..cfg.rounds {
        match rng.below(10) {
            0..=2 => {
                let first = rng.below(SMALL_PAGES - 64);
                let n = rng.between(1, 64);
                let addr = base + first * PAGE_SIZE;
                let mut cmd = HmmDmirrorCmd::new(addr, n);
                let got = st.timed("migrate_to_device", || mirror.migrate_to_dev(&mm, &mut cmd));
                check_data(st, addr, n, &got, &generation);
                if got.is_ok() {
                    *st.orders.entry(0).or_default() += cmd.cpages;
                }
            }
            3 => {
                let addr = thp_base + rng.below(THPS) * PMD_SIZE;
                let mut cmd = HmmDmirrorCmd::new(addr, 512);
                let got = st.timed("migrate_thp_to_device", || {
                    mirror.migrate_to_dev(&mm, &mut cmd)
                });
                check_data(st, addr, 512, &got, &generation);
                note_thp(st, &mirror, &mm, addr, cmd.cpages)?;
            }
            4 => {
                let addr = thp_base + rng.below(THPS) * PMD_SIZE;
                mirror.set_flags(Dmirror::FLAG_FAIL_ALLOC);
                let mut cmd = HmmDmirrorCmd::new(addr, 512);
                let got = st.timed("split_fallback", || mirror.migrate_to_dev(&mm, &mut cmd));
                mirror.set_flags(0);
                check_data(st, addr, 512, &got, &generation);
                note_thp(st, &mirror, &mm, addr, cmd.cpages)?;
            }
            5 | 6 => {
                // CPU write: faults device pages back, then writes.
                let a = pages[usize::try_from(rng.below(pages.len() as u64)).unwrap_or(0)];
                let g = generation.get(&a).copied().unwrap_or(0) + 1;
                st.timed("cpu_fault_back", || cpu_write(&mm, a, value(a, g)))?;
                generation.insert(a, g);
                let back = mm.read_user(a);
                st.check(back == Ok(value(a, g)), || {
                    format!("process {t}: {a:#x} reads {back:?} after a write")
                });
            }
            7 => {
                let first = rng.below(pages.len() as u64 - 64);
                let addr = pages[usize::try_from(first).unwrap_or(0)];
                let r = st.timed("migrate_to_system", || {
                    mirror.migrate_to_sys(&mm, &mut HmmDmirrorCmd::new(addr, 64))
                });
                st.check(r.is_ok() || r == Err(Errno::ENOENT), || {
                    format!("process {t}: migrate_to_sys at {addr:#x}: {r:?}")
                });
            }
            8 => {
                let r = st.timed("snapshot", || {
                    mirror.snapshot(&mm, &mut HmmDmirrorCmd::new(base, SMALL_PAGES))
                });
                let ok = r.as_ref().is_ok_and(|s| {
                    s.iter()
                        .all(|p| *p != DmirrorProt::ERROR && *p != DmirrorProt::NONE)
                });
                st.check(ok, || {
                    format!("process {t}: snapshot of a mapped range: {r:?}")
                });
            }
            _ => {
                let a = pages[usize::try_from(rng.below(SMALL_PAGES)).unwrap_or(0)];
                let t0 = Instant::now();
                walk_check(st, t, &mm, a);
                let e = st.ops.entry("page_vma_mapped_walk").or_default();
                e.0 += 1;
                e.1 += t0.elapsed();
            }
        }
        st.peak_device_pages = st.peak_device_pages.max(
            devices
                .iter()
                .map(|d| d.nr_pages() - d.nr_free_pages())
                .sum(),
        );
        if let Some(b) = bar {
            b.inc(1);
        }
    }

    // Every page still holds its last value, wherever it is now.
    for &a in &pages {
        let g = generation.get(&a).copied().unwrap_or(0);
        if mm.read_user(a).is_err() {
            handle_mm_fault(&mm, a, FaultFlags::READ)?;
        }
        let v = mm.read_user(a);
        st.check(v == Ok(value(a, g)), || {
            format!("process {t}: {a:#x} holds {v:?} at the end")
        });
    }
    Ok(Process {
        mm,
        mirror,
        start: base,
        end,
    })
}

/// A CPU store to `a`: on a device-private (or absent) entry, fault first.
pub(crate) fn cpu_write(mm: &Arc<Mm>, a: u64, v: u64) -> Result<(), Errno> {
    if mm.write_user(a, v).is_ok() {
        return Ok(());
    }
    handle_mm_fault(mm, a, FaultFlags::WRITE)?;
    mm.write_user(a, v)
}

/// A migration's read-back data must be the pages' current values.
fn check_data(
    st: &mut WorkerStats,
    addr: u64,
    n: u64,
    got: &Result<Vec<u64>, Errno>,
    generation: &BTreeMap<u64, u64>,
) {
    match got {
        Ok(data) => {
            let want: Vec<u64> = (0..n)
                .map(|i| {
                    let a = addr + i * PAGE_SIZE;
                    value(a, generation.get(&a).copied().unwrap_or(0))
                })
                .collect();
            st.check(*data == want, || {
                format!("migrate_to_dev at {addr:#x}: the device read back other data")
            });
        }
        // Nothing left to select (all already on the device) is fine.
        Err(Errno::ENOENT) => st.check(true, String::new),
        Err(e) => st.check(false, || format!("migrate_to_dev at {addr:#x}: {e}")),
    }
}

/// Counts the device folios a THP migration of `moved` pages produced, by
/// order, and checks the snapshot agrees with the page table.
fn note_thp(
    st: &mut WorkerStats,
    m: &Dmirror,
    mm: &Arc<Mm>,
    addr: u64,
    moved: u64,
) -> Result<(), Errno> {
    let s = m.snapshot(mm, &mut HmmDmirrorCmd::new(addr, 1))?;
    let on_dev = s
        .first()
        .is_some_and(|p| p.raw() & DmirrorProt::DEV_PRIVATE_LOCAL.raw() != 0);
    let pmd = s
        .first()
        .is_some_and(|p| p.raw() & DmirrorProt::PMD.raw() != 0);
    if on_dev && moved > 0 {
        if pmd {
            *st.orders.entry(9).or_default() += 1;
        } else {
            *st.orders.entry(0).or_default() += moved;
        }
    }
    let huge_entry = mm
        .pmdp_get_lockless(addr)
        .is_some_and(|p| !p.is_table() && !p.is_none());
    st.check(!pmd || huge_entry, || {
        format!("snapshot says PMD at {addr:#x} but the page table has a PTE table")
    });
    Ok(())
}

/// If `a` is a device-private PTE, `page_vma_mapped_walk()` for that
/// offset must find exactly `a`, and a walk for the same number as a pfn
/// must find nothing (hazard H7). `None` if `a` is not a device-private
/// PTE; otherwise the number of checks made and the failures.
pub(crate) fn walk_findings(mm: &Mm, a: u64) -> Option<(u64, Vec<String>)> {
    let leaf = mm.softleaf_at(a);
    let huge = mm.pmdp_get_lockless(a).is_some_and(|p| !p.is_table());
    if !leaf.is_device_private() || huge {
        return None;
    }
    let Some(PageFrame::DevicePrivate(off)) = leaf.to_frame(mm.paging()) else {
        return Some((
            1,
            vec![format!("device-private entry at {a:#x} has no offset")],
        ));
    };
    let Some(vma) = mm.vma_lookup(a) else {
        return Some((1, vec![format!("no VMA at {a:#x}")]));
    };
    let pgoff = vma.linear_page_index(a);
    // The same walk for a device-private offset and for a pfn of the same
    // number: only the kind differs.
    let found = |frame: PageFrame| -> Vec<u64> {
        let walk = PageVmaMappedWalk::new(
            mm,
            &vma,
            frame,
            PageCount::new(1),
            pgoff,
            a,
            PvmwFlags::NONE,
        );
        let mut hits = Vec::new();
        if let Ok(mut w) = walk {
            while w.walk() {
                hits.push(w.address());
            }
        }
        hits
    };
    let mut failures = Vec::new();
    let hits = found(PageFrame::DevicePrivate(off));
    if hits != [a] {
        failures.push(format!(
            "walk for offset {off:?} found {hits:?}, not {a:#x}"
        ));
    }
    if !found(PageFrame::Pfn(Pfn::new(off.get()))).is_empty() {
        failures.push(format!(
            "a pfn walk for {:#x} matched a device-private entry (H7)",
            off.get()
        ));
    }
    Some((2, failures))
}

fn walk_check(st: &mut WorkerStats, t: usize, mm: &Mm, a: u64) {
    if let Some((n, failures)) = walk_findings(mm, a) {
        st.verified += n;
        st.violations
            .extend(failures.into_iter().map(|f| format!("process {t}: {f}")));
    }
}

impl Report {
    /// The report as text.
    ///
    /// Kernel: none (model only).
    pub fn to_text(&self) -> String {
        let c = &self.config;
        let mut out = format!(
            "devpriv simulate: {} devices, {} processes x {} rounds, {} MiB chunks, seed {}\n\n",
            c.devices, c.threads, c.rounds, c.chunk_mib, c.seed
        );
        out.push_str("operations\n");
        for (k, n, rate) in &self.ops {
            let _ = writeln!(out, "  {k:<24} {n:>7}  {rate:>12.0} ops/s");
        }
        out.push_str("\ndevice folios created, by order\n");
        for (o, n) in &self.orders {
            let _ = writeln!(out, "  order {o:<2} {n:>8}");
        }
        let _ = writeln!(
            out,
            "\npeak device pages in use: {} ({} MiB)",
            self.peak_device_pages,
            self.peak_device_pages / 256
        );
        let _ = writeln!(
            out,
            "reuse at another order (Xe workload, AtAlloc): {} folios, {} hazards",
            self.reuse.0, self.reuse.1
        );
        out.push_str("\naddress space after the workload (before teardown)\n");
        out.push_str(&self.map);
        for v in &self.violations {
            let _ = writeln!(out, "VIOLATION: {v}");
        }
        let _ = writeln!(
            out,
            "\ninvariants verified: {}, violations: {}  ({:.2} s)",
            self.verified,
            self.violations.len(),
            self.elapsed.as_secs_f64()
        );
        out
    }

    /// The report as one JSON object.
    ///
    /// Kernel: none (model only).
    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.config;
        serde_json::json!({
            "config": {
                "devices": c.devices, "threads": c.threads, "rounds": c.rounds,
                "chunk_mib": c.chunk_mib, "seed": c.seed,
            },
            "ops": self.ops.iter().map(|(k, n, r)| serde_json::json!({
                "kind": k, "count": n, "ops_per_sec": r,
            })).collect::<Vec<_>>(),
            "folio_orders": self.orders.iter().map(|(o, n)| (o.to_string(), *n)).collect::<BTreeMap<_, _>>(),
            "peak_device_pages": self.peak_device_pages,
            "reuse_at_another_order": { "folios": self.reuse.0, "hazards": self.reuse.1 },
            "address_space": self.map,
            "invariants_verified": self.verified,
            "violations": self.violations,
            "elapsed_secs": self.elapsed.as_secs_f64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checks the report counts can fail: wrong read-back data and an
    /// unexpected errno are violations, and the text says so.
    #[test]
    fn wrong_data_is_a_violation() {
        let mut st = WorkerStats::default();
        let generation = BTreeMap::from([(0x1000, 0), (0x2000, 3)]);
        check_data(
            &mut st,
            0x1000,
            2,
            &Ok(vec![value(0x1000, 0), value(0x2000, 3)]),
            &generation,
        );
        assert!(st.violations.is_empty());
        check_data(
            &mut st,
            0x1000,
            2,
            &Ok(vec![value(0x1000, 0), value(0x2000, 2)]),
            &generation,
        );
        check_data(&mut st, 0x1000, 2, &Err(Errno::EBUSY), &generation);
        assert_eq!((st.verified, st.violations.len()), (3, 2));
        let cfg = SimConfig {
            devices: 1,
            threads: 1,
            rounds: 0,
            chunk_mib: 2,
            seed: 0,
        };
        let r = summarise(&cfg, vec![st], String::new(), (0, 0), Duration::ZERO);
        assert!(r.to_text().contains("VIOLATION: migrate_to_dev at 0x1000"));
        assert!(r.to_text().contains("violations: 2"));
    }

    #[test]
    fn a_small_run_is_clean() {
        let cfg = SimConfig {
            devices: 2,
            threads: 2,
            rounds: 150,
            chunk_mib: 2,
            seed: 9,
        };
        cfg.check().unwrap();
        let r = run(&cfg, false).unwrap();
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert!(r.verified > 100);
        assert_eq!(r.ops.iter().map(|o| o.1).sum::<u64>(), 300);
    }
}
