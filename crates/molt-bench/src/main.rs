//! molt's benchmark harness. `cargo run --release -p molt-bench` runs every
//! workload; `-- --only NAME` runs one. Each workload prints one JSON line on
//! stdout:
//!
//! `{"workload": NAME, "n": N, "cpu": MODEL, "molt": {"seconds": …, "rate": …}, "erlang": {…} | null,
//! "ratio": … | null, "ratio_spread": [MIN, MAX] | null}`
//!
//! `ratio` is molt's advantage (> 1: molt is better): for rates molt's over
//! Erlang's, for times and memory Erlang's over molt's. Round trips and
//! one-way (and their contended variants) also run between two actix
//! actors, the fastest Rust actor library's ping-pong, in the same pairs:
//! their lines add `"actix": {…}`, `"ratio_actix"` (molt's advantage over
//! actix) and `"ratio_actix_spread"`. The sides run in
//! turn — molt, Erlang, molt, Erlang, … — `--runs` pairs, because these
//! machines' speed drifts from one second to the next: `ratio` is the
//! median of the pairs' ratios and `ratio_spread` their range; each side's
//! figures are its medians. A workload measured against a baseline of its
//! own (`remote_bulk`: raw TCP) adds `"of_baseline"`, the median of the
//! runs' baseline time over molt's, and `"of_baseline_spread"`. Progress
//! goes to stderr.

#![forbid(unsafe_code)]

mod actix;
mod code;
mod dist;
mod erlang;
mod workloads;

use clap::Parser;
use serde_json::{Value, json};
use workloads::Measurement;

/// How a workload's figure compares.
#[derive(Clone, Copy)]
enum Better {
    /// Events per second: higher is better.
    Rate,
    /// Seconds per operation: lower is better.
    Time,
    /// Bytes per process: lower is better.
    Memory,
}

struct Workload {
    name: &'static str,
    n: u64,
    better: Better,
    run: fn(u64) -> Measurement,
    /// Whether `bench.erl` has the Erlang side of it.
    erlang: bool,
}

const WORKLOADS: &[Workload] = &[
    Workload { name: "round_trips", n: 1_000_000, better: Better::Rate, run: workloads::round_trips, erlang: true },
    Workload { name: "one_way", n: 10_000_000, better: Better::Rate, run: workloads::one_way, erlang: true },
    Workload {
        name: "round_trips_contended",
        n: 1_000_000,
        better: Better::Rate,
        run: workloads::round_trips,
        erlang: true,
    },
    Workload { name: "one_way_contended", n: 10_000_000, better: Better::Rate, run: workloads::one_way, erlang: true },
    Workload { name: "spawn", n: 100_000, better: Better::Rate, run: workloads::spawn, erlang: true },
    Workload { name: "memory", n: 1_000_000, better: Better::Memory, run: workloads::memory, erlang: true },
    Workload {
        name: "selective_receive",
        n: 100_000,
        better: Better::Time,
        run: workloads::selective_receive,
        erlang: true,
    },
    Workload {
        name: "spawn_link_kill",
        n: 100_000,
        better: Better::Rate,
        run: workloads::spawn_link_kill,
        erlang: true,
    },
    Workload {
        name: "monitor_demonitor",
        n: 100_000,
        better: Better::Rate,
        run: workloads::monitor_demonitor,
        erlang: true,
    },
    Workload { name: "big_message", n: 100 << 20, better: Better::Time, run: workloads::big_message, erlang: true },
    Workload { name: "big_message_1m", n: 1 << 20, better: Better::Time, run: workloads::big_message, erlang: true },
    Workload { name: "big_bytes", n: 100 << 20, better: Better::Time, run: workloads::big_bytes, erlang: true },
    Workload {
        name: "timers_pending",
        n: 1_000_000,
        better: Better::Memory,
        run: workloads::timers_pending,
        erlang: true,
    },
    Workload { name: "burst_memory", n: 1_000_000, better: Better::Memory, run: workloads::burst_memory, erlang: true },
    Workload { name: "parallel_pairs", n: 200_000, better: Better::Time, run: workloads::parallel_pairs, erlang: true },
    Workload { name: "ring", n: 100_000, better: Better::Time, run: workloads::ring, erlang: true },
    Workload { name: "fairness", n: 1_000, better: Better::Time, run: workloads::fairness, erlang: true },
    Workload { name: "big_bang", n: 1_000, better: Better::Time, run: workloads::big_bang, erlang: true },
    Workload { name: "spawn_cpu", n: 2_000, better: Better::Time, run: workloads::spawn_cpu, erlang: false },
    Workload { name: "load", n: 200, better: Better::Time, run: code::load, erlang: true },
    Workload { name: "purge_100k", n: 100_000, better: Better::Time, run: code::purge_100k, erlang: true },
    Workload {
        name: "pingpong_upgrades",
        n: 1_000_000,
        better: Better::Rate,
        run: code::pingpong_upgrades,
        erlang: true,
    },
    Workload { name: "hot_call", n: 1_000, better: Better::Time, run: code::hot_call, erlang: false },
    Workload { name: "load_shapes_50", n: 200, better: Better::Time, run: code::load_shapes_50, erlang: false },
    Workload {
        name: "remote_round_trips",
        n: 100_000,
        better: Better::Rate,
        run: dist::remote_round_trips,
        erlang: true,
    },
    Workload { name: "remote_one_way", n: 1_000_000, better: Better::Rate, run: dist::remote_one_way, erlang: true },
    Workload { name: "remote_bulk", n: 500, better: Better::Time, run: dist::remote_bulk, erlang: true },
    Workload {
        name: "remote_latency_under_bulk",
        n: 64 << 20,
        better: Better::Time,
        run: dist::remote_latency_under_bulk,
        erlang: true,
    },
    Workload { name: "detect_sigkill", n: 1, better: Better::Time, run: dist::detect_sigkill, erlang: true },
];

#[derive(Parser)]
#[command(about = "molt's benchmarks, with Erlang/OTP side by side where `erl` is installed")]
struct Args {
    /// Run only this workload.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(WORKLOADS.iter().map(|w| w.name)))]
    only: Option<String>,
    /// Runs per side, in pairs (molt, then Erlang); medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Override the workload's size.
    #[arg(long)]
    n: Option<u64>,
    /// Skip the Erlang side even if `erl` is installed.
    #[arg(long)]
    no_erlang: bool,
    /// Run `--only`'s workload once and print its measurement: how the
    /// harness runs a memory workload in a fresh process of its own.
    #[arg(long, hide = true, requires = "only")]
    one_run: bool,
    /// Run a distributed node and wait to be killed: the victim of
    /// `detect_sigkill`.
    #[arg(long, hide = true)]
    serve_node: bool,
}

/// A workload `NAME_contended` is `NAME` run while the harness keeps every
/// core busy with a spinning OS thread of its own, for both sides alike.
fn contended(workload: &Workload) -> Option<&'static str> {
    workload.name.strip_suffix("_contended")
}

/// The same workload between two actix actors, where the harness has it.
fn actix_side(workload: &Workload) -> Option<fn(u64) -> Measurement> {
    match contended(workload).unwrap_or(workload.name) {
        "round_trips" => Some(actix::round_trips),
        "one_way" => Some(actix::one_way),
        _ => None,
    }
}

/// The median of `ratios` and their range.
fn median_and_spread(mut ratios: Vec<f64>) -> (Option<f64>, Option<[f64; 2]>) {
    ratios.sort_by(f64::total_cmp);
    (ratios.get(ratios.len() / 2).copied(), (!ratios.is_empty()).then(|| [ratios[0], ratios[ratios.len() - 1]]))
}

/// One spinning thread per core, until dropped.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start() -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
                    }
                })
            })
            .collect();
        Load { stop, threads }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One run of a memory workload in a fresh child process of the harness, as
/// Erlang's side runs each in a fresh `erl`: both start from an empty heap,
/// so memory freed by an earlier run cannot hide what this one uses.
fn run_in_a_child(workload: &Workload, n: u64) -> Measurement {
    let output = std::process::Command::new(std::env::current_exe().expect("the harness's own path"))
        .args(["--one-run", "--no-erlang", "--only", workload.name, "--n", &n.to_string()])
        .output()
        .expect("the harness could start itself");
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("{}: the child run printed {stdout:?} ({e}): {}", workload.name, String::from_utf8_lossy(&output.stderr))
    })
}

/// The CPU model, as `/proc/cpuinfo` names it: every figure is quoted with it.
fn cpu_model() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpuinfo.lines().find_map(|line| line.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim()));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{} ({cores} cores)", model.unwrap_or("unknown"))
}

fn median(mut runs: Vec<Measurement>) -> Measurement {
    runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let mut middle = runs[runs.len() / 2].clone();
    let mut bytes: Vec<f64> = runs.iter().filter_map(|m| m.bytes_per_process).collect();
    bytes.sort_by(f64::total_cmp);
    middle.bytes_per_process = bytes.get(bytes.len() / 2).copied();
    middle
}

fn figures(workload: &Workload, n: u64, m: &Measurement) -> Value {
    let mut value = json!({ "seconds": m.seconds });
    let rate = match workload.better {
        Better::Time => 1.0 / m.seconds,
        Better::Rate | Better::Memory => n as f64 / m.seconds,
    };
    value["rate"] = json!(rate);
    if let Some(bytes) = m.bytes_per_process {
        value["bytes_per_process"] = json!(bytes);
    }
    if let Some(baseline) = m.baseline_seconds {
        value["baseline_seconds"] = json!(baseline);
    }
    value
}

fn ratio(better: Better, molt: &Measurement, erlang: &Measurement) -> Option<f64> {
    match better {
        Better::Rate | Better::Time => Some(erlang.seconds / molt.seconds),
        Better::Memory => Some(erlang.bytes_per_process? / molt.bytes_per_process?),
    }
}

fn main() {
    let args = Args::parse();
    if args.serve_node {
        dist::serve_node();
    }
    let runs = args.runs.max(1);
    let erlang = if args.no_erlang {
        None
    } else {
        match erlang::Erlang::find() {
            Ok(erlang) => Some(erlang),
            Err(why) => {
                eprintln!("molt-bench: no Erlang comparison: {why}");
                None
            }
        }
    };
    let cpu = cpu_model();
    for workload in WORKLOADS.iter().filter(|w| args.only.as_deref().is_none_or(|only| only == w.name)) {
        let n = args.n.unwrap_or(workload.n);
        if args.one_run {
            println!("{}", serde_json::to_string(&(workload.run)(n)).expect("a measurement is JSON"));
            return;
        }
        eprintln!("molt-bench: {} (n = {n}), {runs} runs per side", workload.name);
        let mut molt_runs = Vec::new();
        let mut erlang_runs = Vec::new();
        let mut ratios = Vec::new();
        let mut actix_runs = Vec::new();
        let mut actix_ratios = Vec::new();
        for _ in 0..runs {
            let load = contended(workload).map(|_| Load::start());
            let molt = match workload.better {
                Better::Memory => run_in_a_child(workload, n),
                Better::Rate | Better::Time => (workload.run)(n),
            };
            drop(load);
            if let Some(erlang) = erlang.as_ref().filter(|_| workload.erlang) {
                let load = contended(workload).map(|_| Load::start());
                let measured = erlang.run(contended(workload).unwrap_or(workload.name), n);
                drop(load);
                match measured {
                    Ok(measured) => {
                        ratios.extend(ratio(workload.better, &molt, &measured));
                        erlang_runs.push(measured);
                    }
                    Err(why) => eprintln!("molt-bench: erlang {}: {why}", workload.name),
                }
            }
            if let Some(actix) = actix_side(workload) {
                let load = contended(workload).map(|_| Load::start());
                let measured = actix(n);
                drop(load);
                actix_ratios.extend(ratio(workload.better, &molt, &measured));
                actix_runs.push(measured);
            }
            molt_runs.push(molt);
        }
        // The share of the baseline's speed, run by run (the baseline
        // varies as much as molt does on a shared machine: a ratio of
        // medians would pair a fast one with a slow one).
        let of_baseline = molt_runs.iter().filter_map(|m| Some(m.baseline_seconds? / m.seconds)).collect();
        let (of_baseline, of_baseline_spread) = median_and_spread(of_baseline);
        let molt = median(molt_runs);
        let erlang_side = (!erlang_runs.is_empty()).then(|| median(erlang_runs));
        let (ratio, ratio_spread) = median_and_spread(ratios);
        let mut line = json!({
            "workload": workload.name,
            "n": n,
            "cpu": cpu,
            "molt": figures(workload, n, &molt),
            "erlang": erlang_side.as_ref().map(|e| figures(workload, n, e)),
            "ratio": ratio,
            "ratio_spread": ratio_spread,
        });
        if of_baseline.is_some() {
            line["of_baseline"] = json!(of_baseline);
            line["of_baseline_spread"] = json!(of_baseline_spread);
        }
        if !actix_runs.is_empty() {
            let (ratio, spread) = median_and_spread(actix_ratios);
            line["actix"] = figures(workload, n, &median(actix_runs));
            line["ratio_actix"] = json!(ratio);
            line["ratio_actix_spread"] = json!(spread);
        }
        println!("{line}");
    }
}
