//! `molt demo`: the seed's ping-pong, live, with code loading.
//!
//! Both versions of `examples/pingpong` are built with cargo first (its
//! progress shown), then a node loads version 1 and spawns the server from
//! it, and a client compiled into this program pings it.
//!
//! - With the defaults (10 pings, 1 upgrade) the story is the seed's: on the
//!   ping with value 4 the server asks the process registered as
//!   `"upgrader"` for new code, version 2 is loaded, the server hot-calls
//!   into it and answers 4 from the new code. Every step is printed.
//! - With `--pings N --upgrades K` the demo is a stress test: the client
//!   keeps a window of pings in flight, and at K points spread over the
//!   stream the demo loads the next version (1 → 2 → 1 → …, purging the
//!   unused old one first); the server takes each at its next message.
//!
//! The summary counts what came back; `--json` prints it as one object.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use molt::{BuildOptions, LoadOptions, Node, NodeConfig, Pid, PurgeError, ReceiveError};
use serde::Serialize;

/// Pings kept in flight by the stress client.
const WINDOW: u64 = 1024;
/// Runs up to this many pings are told step by step.
const TOLD_STEP_BY_STEP: u64 = 100;

/// The arguments of `molt demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How many pings the client sends.
    #[arg(long, default_value_t = 10)]
    pings: u64,
    /// How many times the server's code is replaced while it runs.
    #[arg(long, default_value_t = 1)]
    upgrades: u64,
    /// Print the summary as one JSON object on stdout (the story goes to stderr).
    #[arg(long)]
    json: bool,
    /// The pingpong module crate to build.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/pingpong"))]
    module_crate: PathBuf,
}

/// What came back from a ping-pong run.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Pings sent.
    pub pings: u64,
    /// Pongs received.
    pub pongs: u64,
    /// Pings without a pong.
    pub lost: u64,
    /// Whether the pongs came back in the order the pings were sent.
    pub in_order: bool,
    /// How many pongs each version (by declared version string) gave.
    pub answers_by_version: BTreeMap<String, u64>,
    /// From the first ping to the last pong.
    pub seconds: f64,
}

/// Version 1's server state (the module's `ServerState`, same shape).
#[derive(Serialize)]
struct ServerState {
    answered: u64,
    verbose: bool,
    upgrade_at: Option<u64>,
    pending: Option<(Pid, u64)>,
}

/// What the client counted.
struct Tally {
    pongs: u64,
    in_order: bool,
    by_version: BTreeMap<String, u64>,
    seconds: f64,
}

enum Event {
    /// The server asked the upgrader for new code.
    UpgradeWanted,
    /// The stress client reached an upgrade point.
    UpgradePoint,
    Done(Result<Tally, String>),
}

/// Builds versions 1 and 2 of the pingpong crate at `crate_dir` (release,
/// cargo's progress shown) and keeps their files under `keep`.
///
/// # Errors
/// When cargo fails; the message carries the compiler's.
pub fn build_versions(crate_dir: &Path, keep: &Path, say: &dyn Fn(String)) -> Result<[PathBuf; 2], String> {
    Ok([build_kept(crate_dir, &[], &keep.join("v1"), say)?, build_kept(crate_dir, &["v2"], &keep.join("v2"), say)?])
}

/// Builds the module crate at `crate_dir` with `features` (release,
/// stripped, cargo's progress shown, into `target/molt-demo/`) and keeps its
/// file under `keep`, where the next build of the crate cannot overwrite it.
///
/// # Errors
/// When cargo fails or the file cannot be kept; the message says which.
pub fn build_kept(crate_dir: &Path, features: &[&str], keep: &Path, say: &dyn Fn(String)) -> Result<PathBuf, String> {
    let name = crate_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    say(format!("building {name}{} with cargo…", features.first().map(|f| format!(" ({f})")).unwrap_or_default()));
    // One target directory for every module crate and feature set, so that
    // their dependencies compile once (five directories took the harness's
    // fresh builds three minutes). Cargo locks a build, but not the file it
    // leaves, which a build of another feature set overwrites: builds take
    // turns under a lock of our own, held until the file is kept.
    let target_dir = crate_dir.join("../../target/molt-demo");
    std::fs::create_dir_all(&target_dir).map_err(|e| format!("cannot create {}: {e}", target_dir.display()))?;
    let lock_path = target_dir.join("build.lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    lock.lock().map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    let options = BuildOptions {
        features: features.iter().map(|f| f.to_string()).collect(),
        release: true,
        target_dir: Some(target_dir),
        show_progress: true,
        strip: true,
    };
    let built = molt::build_module(crate_dir, &options).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(keep).map_err(|e| format!("cannot create {}: {e}", keep.display()))?;
    let kept = keep.join(built.file_name().unwrap_or_default());
    std::fs::copy(&built, &kept).map_err(|e| format!("cannot copy {}: {e}", built.display()))?;
    drop(lock);
    Ok(kept)
}

/// `molt demo`.
///
/// # Errors
/// When a build, the node or the run fails; the message says which.
pub fn run(args: &DemoArgs) -> Result<(), String> {
    if args.pings == 0 {
        return Err("--pings must be at least 1".into());
    }
    let json = args.json;
    let say = move |line: String| {
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let crate_dir = args
        .module_crate
        .canonicalize()
        .map_err(|e| format!("cannot find the module crate {}: {e}", args.module_crate.display()))?;
    // Each run keeps its own copies: another run may be building meanwhile.
    let keep = std::env::temp_dir().join(format!("molt-demo-{}", std::process::id()));
    let built = build_versions(&crate_dir, &keep, &say);
    let outcome = built.and_then(|files| run_with(args, &files, say));
    let _ = std::fs::remove_dir_all(&keep);
    outcome
}

fn run_with(args: &DemoArgs, files: &[PathBuf; 2], say: impl Fn(String) + Copy + Send + 'static) -> Result<(), String> {
    let summary = ping_pong(files, args.pings, args.upgrades, say)?;
    if args.json {
        let line = serde_json::to_string(&summary).map_err(|e| e.to_string())?;
        writeln!(std::io::stdout().lock(), "{line}").map_err(|e| format!("cannot write to stdout: {e}"))?;
    } else {
        let by_version: Vec<String> =
            summary.answers_by_version.iter().map(|(v, n)| format!("{n} by version {v}")).collect();
        println!(
            "DONE: {} pings, {} pongs, {} lost, {}; answered {}; {:.6} s",
            summary.pings,
            summary.pongs,
            summary.lost,
            if summary.in_order { "in order" } else { "OUT OF ORDER" },
            by_version.join(", "),
            summary.seconds
        );
    }
    Ok(())
}

/// Runs the ping-pong on a fresh node: `files` are versions 1 and 2 of the
/// pingpong module; with one upgrade and at most 100 pings it is the seed's
/// story, told through `say`, otherwise the stress test.
///
/// # Errors
/// When the node, a load or the client fails; the message says which.
pub fn ping_pong(
    files: &[PathBuf; 2],
    pings: u64,
    upgrades: u64,
    say: impl Fn(String) + Copy + Send + 'static,
) -> Result<Summary, String> {
    if pings == 0 {
        return Err("--pings must be at least 1".into());
    }
    let node = Node::start(NodeConfig::new("demo")).map_err(|e| e.to_string())?;
    let loaded = node.load(&files[0]).map_err(|e| e.to_string())?;
    say(format!("node {} started; loaded pingpong version {} ({})", node.name(), loaded.version, &loaded.hash[..12]));

    let seed_story = pings <= TOLD_STEP_BY_STEP && upgrades == 1;
    let (events, happened) = mpsc::channel::<Event>();
    let wanted = events.clone();
    let upgrader = node.spawn(move |mut p| async move {
        loop {
            let _server: Pid = p.expect().await?;
            let _ = wanted.send(Event::UpgradeWanted);
        }
        #[allow(unreachable_code)]
        Ok::<(), ReceiveError>(())
    });
    let state = ServerState {
        answered: 0,
        verbose: seed_story,
        upgrade_at: seed_story.then_some(4.min(pings - 1)),
        pending: None,
    };
    support_process(&node, move |p| async move { p.register("upgrader", upgrader) })?.map_err(|e| e.to_string())?;
    let points: Vec<u64> =
        if seed_story { Vec::new() } else { (1..=upgrades).map(|i| i * pings / (upgrades + 1)).collect() };
    // The client spawns the server, so both run on one scheduler thread, as
    // Erlang places a process next to its parent.
    node.spawn(move |p| async move {
        match p.spawn_entry("pingpong", "server", &state) {
            Ok(server) => client(p, server, pings, seed_story, points, events).await,
            Err(error) => {
                let _ = events.send(Event::Done(Err(error.to_string())));
                Ok(())
            }
        }
    });

    let mut next_file = 1;
    let tally = loop {
        let event =
            happened.recv_timeout(Duration::from_secs(600)).map_err(|_| "the demo did not finish within 10 minutes")?;
        match event {
            Event::UpgradeWanted | Event::UpgradePoint => {
                // Said before the load: once it is loaded the server runs on
                // at once, and its lines would overtake this one.
                let version = next_file % 2 + 1;
                say(format!("loading pingpong version {version}; the server takes it at its next message"));
                upgrade(&node, &files[next_file % 2])?;
                next_file += 1;
            }
            Event::Done(outcome) => break outcome?,
        }
    };
    node.shutdown();

    Ok(Summary {
        pings,
        pongs: tally.pongs,
        lost: pings - tally.pongs,
        in_order: tally.in_order,
        answers_by_version: tally.by_version,
        seconds: tally.seconds,
    })
}

/// Runs a short process and waits for what it returns.
fn support_process<R: Send + 'static, Fut: std::future::Future<Output = R> + Send + 'static>(
    node: &Node,
    body: impl FnOnce(molt::Process) -> Fut + Send + 'static,
) -> Result<R, String> {
    node.run(body).map_err(|reason| format!("a helper process ended early: {reason}"))
}

/// Loads `file` as the next version, after purging an old version that no
/// process runs any more (the server moves off it at its next message).
fn upgrade(node: &Node, file: &Path) -> Result<(), String> {
    let wait = Instant::now() + Duration::from_secs(60);
    loop {
        match node.soft_purge("pingpong") {
            Ok(_) => break,
            Err(PurgeError::InUse { .. }) if Instant::now() < wait => std::thread::sleep(Duration::from_millis(1)),
            Err(error) => return Err(error.to_string()),
        }
    }
    let options = LoadOptions::default();
    node.load_with(file, &options).map(drop).map_err(|e| e.to_string())
}

/// The client: pings and collects `(n, version)` pongs, one at a time in the
/// seed's story, with a window in flight otherwise.
async fn client(
    mut p: molt::Process,
    server: Pid,
    pings: u64,
    told: bool,
    points: Vec<u64>,
    events: mpsc::Sender<Event>,
) -> Result<(), ReceiveError> {
    let me = p.self_pid();
    let start = Instant::now();
    let mut tally = Tally { pongs: 0, in_order: true, by_version: BTreeMap::new(), seconds: 0.0 };
    // Pongs of the version that answered last, not yet added to the tally.
    let mut run: Option<(String, u64)> = None;
    let mut sent = 0;
    let mut points = points.into_iter().peekable();
    let window = if told { 1 } else { WINDOW };
    let outcome = async {
        while tally.pongs < pings {
            while sent < pings && sent - tally.pongs < window {
                if told {
                    println!("client {me}: sending a ping with value {sent}");
                }
                p.send(server, &(me, sent));
                sent += 1;
            }
            let (n, version): (u64, String) = p.expect().await?;
            if told {
                println!("client {me}: got a pong with value {n} from version {version}");
            }
            tally.in_order &= n == tally.pongs;
            tally.pongs += 1;
            match &mut run {
                Some((current, count)) if *current == version => *count += 1,
                _ => {
                    if let Some((finished, count)) = run.replace((version, 1)) {
                        *tally.by_version.entry(finished).or_insert(0) += count;
                    }
                }
            }
            if points.next_if(|&at| at == tally.pongs).is_some() {
                let _ = events.send(Event::UpgradePoint);
            }
        }
        Ok::<(), ReceiveError>(())
    }
    .await;
    if let Some((version, count)) = run {
        *tally.by_version.entry(version).or_insert(0) += count;
    }
    tally.seconds = start.elapsed().as_secs_f64();
    let _ = events.send(Event::Done(outcome.map(|()| tally).map_err(|e| e.to_string())));
    Ok(())
}
