//! `devpriv`: run the whole model from the command line.
//!
//! ```text
//! devpriv [simulate] [--devices N] [--threads T] [--rounds R] [--json]   (the default)
//! devpriv bench [--pagemaps N] [--lookups N] [--touch]   (maple-tree rows with --features kernel-oracle)
//! devpriv map [--pagemaps N] [--packing exact|section] [--svg FILE]
//! devpriv stress [--threads T] [--secs S] [--ops N] [--seed N] [--json]
//! ```
//!
//! Bad flags or impossible sizes print one line and exit with status 2; a
//! simulation or stress run that finds a broken invariant exits with status 1.

#![forbid(unsafe_code)]

use clap::{Args, Parser, Subcommand, ValueEnum};
use devpriv_cli::map::Layout;
use devpriv_cli::quickbench::{self, BenchConfig};
use devpriv_cli::simulate::{self, SimConfig};
use devpriv_cli::stress::{self, StressConfig};
use devpriv_core::random::SplitMix64;
use devpriv_core::{Errno, PageCount};
use devpriv_pagemap::{DevicePrivateSpace, NoopOps, Owner, Packing, PagemapParams, SpaceConfig};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

/// A userspace model of Linux device-private memory management.
#[derive(Parser, Debug)]
#[command(name = "devpriv", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Options of the default command, `simulate`.
    #[command(flatten)]
    simulate: SimulateArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the end-to-end workload and print its report (the default).
    Simulate(SimulateArgs),
    /// Compare offset -> page lookups against the rangemap and vmemmap
    /// baselines on this machine.
    Bench(BenchArgs),
    /// Print the layout of a device-private address space (and draw it as
    /// SVG).
    Map(MapArgs),
    /// Run every operation on many threads for a bounded time, checking
    /// invariants throughout and at the end.
    Stress(StressArgs),
}

#[derive(Args, Debug, Clone)]
struct SimulateArgs {
    /// Devices, each with its own owner and device-private memory.
    #[arg(long, default_value_t = 2)]
    devices: usize,
    /// Worker threads (simulated processes), spread over the devices.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Rounds of the mixed workload per thread.
    #[arg(long, default_value_t = 20_000)]
    rounds: usize,
    /// Device memory chunk size in MiB (a multiple of 2).
    #[arg(long, default_value_t = 32)]
    chunk_mib: u64,
    /// Seed of the workload's random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct StressArgs {
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Run for this many seconds.
    #[arg(long, default_value_t = 30)]
    secs: u64,
    /// Also stop after this many operations (all threads together).
    #[arg(long)]
    ops: Option<u64>,
    /// Seed of the workload's random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Pagemaps of 512 pages each.
    #[arg(long, default_value_t = 1024)]
    pagemaps: usize,
    /// Random offsets per timed round.
    #[arg(long, default_value_t = 1 << 16)]
    lookups: usize,
    /// Read each page's flags word too.
    #[arg(long)]
    touch: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PackingArg {
    /// The kernel's lowest fit, back to back.
    Exact,
    /// Every pagemap starts on a 2 MiB section.
    Section,
}

#[derive(Args, Debug)]
struct MapArgs {
    /// Pagemaps to create (a third of them are then unmapped, leaving gaps).
    #[arg(long, default_value_t = 12)]
    pagemaps: usize,
    /// Placement policy.
    #[arg(long, value_enum, default_value_t = PackingArg::Exact)]
    packing: PackingArg,
    /// Also write the map as SVG to this file.
    #[arg(long)]
    svg: Option<std::path::PathBuf>,
    /// Seed of the pagemap sizes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// A failure to report in one line.
struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: 2,
        }
    }
}

impl From<Errno> for Failure {
    fn from(e: Errno) -> Self {
        Failure::usage(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("bad arguments");
            eprintln!("devpriv: {}", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        None => run_simulate(&cli.simulate),
        Some(Command::Simulate(args)) => run_simulate(&args),
        Some(Command::Bench(args)) => run_bench(&args),
        Some(Command::Map(args)) => run_map(&args),
        Some(Command::Stress(args)) => run_stress(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("devpriv: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn run_simulate(args: &SimulateArgs) -> Result<(), Failure> {
    let cfg = SimConfig {
        devices: args.devices,
        threads: args.threads,
        rounds: args.rounds,
        chunk_mib: args.chunk_mib,
        seed: args.seed,
    };
    cfg.check().map_err(Failure::usage)?;
    let progress = !args.json && std::io::stderr().is_terminal();
    let report = simulate::run(&cfg, progress)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if report.violations.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            message: format!("{} invariant violation(s)", report.violations.len()),
            code: 1,
        })
    }
}

fn run_stress(args: &StressArgs) -> Result<(), Failure> {
    let cfg = StressConfig {
        threads: args.threads,
        secs: args.secs,
        ops: args.ops,
        seed: args.seed,
    };
    cfg.check().map_err(Failure::usage)?;
    let report = stress::run(&cfg)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if report.is_clean() {
        Ok(())
    } else {
        Err(Failure {
            message: format!("{} invariant violation(s)", report.violations_total),
            code: 1,
        })
    }
}

fn run_bench(args: &BenchArgs) -> Result<(), Failure> {
    if args.pagemaps == 0 || args.pagemaps > 1 << 16 {
        return Err(Failure::usage("--pagemaps must be in 1..=65536"));
    }
    if args.lookups == 0 || args.lookups > 1 << 24 {
        return Err(Failure::usage("--lookups must be in 1..=16777216"));
    }
    let cfg = BenchConfig {
        pagemaps: args.pagemaps,
        lookups: args.lookups,
        touch: args.touch,
        ..BenchConfig::default()
    };
    let rows = quickbench::run(&cfg)?;
    print!("{}", quickbench::to_table(&cfg, &rows));
    let layouts = quickbench::run_layouts(&cfg)?;
    print!("{}", quickbench::layouts_table(&cfg, &layouts));
    let maple = quickbench::run_maple(&cfg);
    if let Err(why) = &maple {
        eprintln!("devpriv bench: maple-tree comparison NOT RUN: {why}");
    }
    print!("{}", quickbench::maple_table(&maple));
    Ok(())
}

fn run_map(args: &MapArgs) -> Result<(), Failure> {
    if args.pagemaps == 0 || args.pagemaps > 4096 {
        return Err(Failure::usage("--pagemaps must be in 1..=4096"));
    }
    let space = DevicePrivateSpace::with_config(SpaceConfig {
        packing: match args.packing {
            PackingArg::Exact => Packing::KernelExact,
            PackingArg::Section => Packing::SectionAligned,
        },
        ..SpaceConfig::default()
    });
    let mut rng = SplitMix64::new(args.seed);
    let map = |pages: u64| {
        // No page is ever allocated, so the driver does nothing.
        let params = PagemapParams::private(PageCount::new(pages), Owner(1), Arc::new(NoopOps));
        space.memremap_device_private_pagemap(params, 0)
    };
    let mut pms = Vec::new();
    for _ in 0..args.pagemaps {
        pms.push(map(rng.between(1, 2048))?);
    }
    // Unmap every third, leaving gaps that later pagemaps may reuse.
    for pm in pms.iter().step_by(3) {
        space.memunmap_device_private_pagemap(pm)?;
    }
    for _ in 0..args.pagemaps / 4 {
        pms.push(map(rng.between(1, 1024))?);
    }
    space.validate().map_err(|e| Failure {
        message: format!("space invalid: {e}"),
        code: 1,
    })?;
    let layout = Layout::of(&space);
    print!("{}", layout.to_text());
    if let Some(path) = &args.svg {
        std::fs::write(path, layout.to_svg())
            .map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display())))?;
        println!("SVG written to {}", path.display());
    }
    Ok(())
}
