//! The molt side of the code-loading workloads. The modules are built once
//! per run of the harness, in release mode, by cargo.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use molt::{Node, NodeConfig, Pid};
use serde::{Deserialize, Serialize};

use crate::workloads::Measurement;

struct Modules {
    pingpong: [PathBuf; 2],
    testmod: [PathBuf; 2],
}

fn workspace() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn modules() -> &'static Modules {
    static MODULES: OnceLock<Modules> = OnceLock::new();
    MODULES.get_or_init(|| {
        let keep = std::env::temp_dir().join(format!("molt-bench-modules-{}", std::process::id()));
        let say = |line: String| eprintln!("molt-bench: {line}");
        let pingpong =
            molt_cli::demo::build_versions(&workspace().join("examples/pingpong"), &keep.join("pingpong"), &say)
                .expect("the pingpong module builds");
        let testmod = [&[][..], &["v2"][..]].map(|features| {
            let dir = keep.join(format!("testmod{}", features.join("")));
            molt_cli::demo::build_kept(&workspace().join("examples/testmod"), features, &dir, &say)
                .expect("testmod builds")
        });
        Modules { pingpong, testmod }
    })
}

/// testmod version 1 declaring 50 message types more (`many-messages`).
fn many_messages() -> &'static PathBuf {
    static MODULE: OnceLock<PathBuf> = OnceLock::new();
    MODULE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("molt-bench-modules-{}", std::process::id())).join("many");
        let say = |line: String| eprintln!("molt-bench: {line}");
        molt_cli::demo::build_kept(&workspace().join("examples/testmod"), &["many-messages"], &dir, &say)
            .expect("testmod with 50 messages builds")
    })
}

fn node() -> Node {
    Node::start(NodeConfig::new("bench-code")).expect("a node starts")
}

/// The state of testmod's `echo`.
#[derive(Serialize, Deserialize)]
struct Counter {
    count: u64,
    follow_upgrades: bool,
    watcher: Option<Pid>,
}

/// Time per load of a new version of a small module (the release build of
/// `examples/pingpong`), its file copied, hashed and checked; the old
/// version is soft-purged first, untimed.
pub(crate) fn load(n: u64) -> Measurement {
    let files = &modules().pingpong;
    let node = node();
    let mut total = 0.0;
    for i in 0..n {
        node.soft_purge("pingpong").ok();
        let start = Instant::now();
        node.load(&files[(i % 2) as usize]).expect("the module loads");
        total += start.elapsed().as_secs_f64();
    }
    node.shutdown();
    Measurement { seconds: total / n as f64, ..Default::default() }
}

/// What a load spends on shapes (each message type traced in the module,
/// its description sent over and compared with the current version's):
/// the time per load of testmod declaring 52 message types, less the time
/// per load of the same module declaring 2. Loads alternate between the
/// two, each after an untimed soft purge; `baseline_seconds` is the
/// 2-message load.
pub(crate) fn load_shapes_50(n: u64) -> Measurement {
    let files = [&modules().testmod[0], many_messages()];
    let node = node();
    let mut totals = [0.0; 2];
    for i in 0..2 * n {
        let which = (i % 2) as usize;
        node.soft_purge("testmod").ok();
        let start = Instant::now();
        let loaded = node.load(files[which]).expect("testmod loads");
        totals[which] += start.elapsed().as_secs_f64();
        assert_eq!(loaded.shapes.messages.len(), [2, 52][which]);
    }
    node.shutdown();
    let [few, many] = totals.map(|total| total / n as f64);
    Measurement { seconds: many - few, baseline_seconds: Some(few), ..Default::default() }
}

/// A hard purge of an old version that one process runs, with `n` other
/// processes alive on the node.
pub(crate) fn purge_100k(n: u64) -> Measurement {
    let files = &modules().testmod;
    let node = node();
    for _ in 0..n {
        node.spawn(|mut p| async move { p.expect::<()>().await.map(drop) });
    }
    node.load(&files[0]).expect("testmod 1 loads");
    let state = Counter { count: 0, follow_upgrades: false, watcher: None };
    let lingering = node.spawn_entry("testmod", "echo", &state).expect("echo starts");
    node.load(&files[1]).expect("testmod 2 loads");
    let start = Instant::now();
    let report = node.purge("testmod").expect("the purge finishes");
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(report.killed, vec![lingering]);
    node.shutdown();
    Measurement { seconds, ..Default::default() }
}

/// `molt demo --pings n --upgrades 2`: n pipelined pings, versions
/// 1 → 2 → 1 loaded mid-stream; every pong must arrive, in order.
pub(crate) fn pingpong_upgrades(n: u64) -> Measurement {
    let summary = molt_cli::demo::ping_pong(&modules().pingpong, n, 2, |_| {}).expect("the ping-pong runs");
    assert_eq!((summary.lost, summary.in_order), (0, true), "{summary:?}");
    Measurement { seconds: summary.seconds, ..Default::default() }
}

/// Time per hot call that changes version: a process running testmod
/// hot-calls into the other version (its `migrate` runs) and answers; the
/// load before each is untimed.
pub(crate) fn hot_call(n: u64) -> Measurement {
    let files = &modules().testmod;
    let node = node();
    node.load(&files[0]).expect("testmod 1 loads");
    let state = Counter { count: 0, follow_upgrades: false, watcher: None };
    let echo = node.spawn_entry("testmod", "echo", &state).expect("echo starts");
    let mut total = 0.0;
    for i in 0..n {
        while node.soft_purge("testmod").is_err() {
            std::thread::yield_now();
        }
        node.load(&files[((i + 1) % 2) as usize]).expect("testmod loads");
        let seconds = node
            .run(move |mut p| async move {
                let me = p.self_pid();
                let start = Instant::now();
                p.send(echo, &"hot".to_owned());
                p.send(echo, &(me, i));
                let _: (u64, String, u64) = p.expect().await.expect("echo answers");
                start.elapsed().as_secs_f64()
            })
            .expect("the timing process returns");
        total += seconds;
    }
    node.shutdown();
    Measurement { seconds: total / n as f64, ..Default::default() }
}
