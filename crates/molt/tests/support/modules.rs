//! Module files for the tests, built once per test binary by cargo from the
//! example crates (into their own target directory, so the build does not
//! wait on the lock of the one running the tests).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use molt::{BuildOptions, build_module};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the workspace root")
}

fn target_dir() -> PathBuf {
    workspace().join("target").join("molt-test-modules")
}

/// Builds `crate_dir` with `features` and keeps the library as
/// `<target>/<label>/lib<name>.so`, so later builds do not overwrite it.
pub fn build(crate_dir: &str, features: &[&str], label: &str) -> PathBuf {
    let options = BuildOptions {
        features: features.iter().map(|f| f.to_string()).collect(),
        release: false,
        target_dir: Some(target_dir()),
        show_progress: false,
        strip: false,
    };
    let built = build_module(&workspace().join(crate_dir), &options).unwrap_or_else(|e| panic!("{e}"));
    let keep = target_dir().join(label);
    std::fs::create_dir_all(&keep).unwrap();
    let kept = keep.join(built.file_name().unwrap());
    // Copied, then renamed into place: other test processes (crash
    // scenarios run in children) may be reading the kept file right now,
    // and must see a whole file, old or new.
    let partial = keep.join(format!(".partial-{}", std::process::id()));
    std::fs::copy(&built, &partial).unwrap();
    std::fs::rename(&partial, &kept).unwrap();
    kept
}

/// The pingpong module, version 1 or 2.
pub fn pingpong(version: u32) -> PathBuf {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    let (v1, v2) = BUILT.get_or_init(|| {
        let v1 = build("examples/pingpong", &[], "pingpong-v1");
        let v2 = build("examples/pingpong", &["v2"], "pingpong-v2");
        (v1, v2)
    });
    match version {
        1 => v1.clone(),
        2 => v2.clone(),
        other => panic!("pingpong has versions 1 and 2, not {other}"),
    }
}

/// Version 1's server state, as the test hands it to `spawn_entry`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ServerState {
    pub answered: u64,
    pub verbose: bool,
    pub upgrade_at: Option<u64>,
    pub pending: Option<(molt::Pid, u64)>,
}

/// The test module built with `features` (comma-separated, "" for version
/// 1), once per test binary.
pub fn testmod(features: &str) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<std::collections::HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap();
    if let Some(path) = built.get(features) {
        return path.clone();
    }
    let list: Vec<&str> = features.split(',').filter(|f| !f.is_empty()).collect();
    let label = format!("testmod-{}", if features.is_empty() { "v1" } else { features }).replace(',', "+");
    let path = build("examples/testmod", &list, &label);
    built.insert(features.to_owned(), path.clone());
    path
}

/// The state of testmod's `echo`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Counter {
    pub count: u64,
    pub follow_upgrades: bool,
    pub watcher: Option<molt::Pid>,
}

impl Counter {
    pub fn new() -> Counter {
        Counter { count: 0, follow_upgrades: false, watcher: None }
    }
}

/// Asks a testmod `echo` for `(n, version, count)`.
pub async fn ask(p: &mut molt::Process, echo: molt::Pid, n: u64) -> (u64, String, u64) {
    p.send(echo, &(p.self_pid(), n));
    p.receive_timeout(super::BOUND)
        .on_if(move |reply: &(u64, String, u64)| reply.0 == n, |reply| reply)
        .await
        .expect("echo answers")
}

/// The test module (version 1) built with `panic = "abort"`, into a target
/// directory of its own (every crate is built again for that profile).
pub fn testmod_aborting() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let target = workspace().join("target").join("molt-test-modules-abort");
            let status = std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args(["build", "--lib", "--quiet", "--manifest-path"])
                .arg(workspace().join("examples/testmod/Cargo.toml"))
                .arg("--target-dir")
                .arg(&target)
                .env("CARGO_PROFILE_DEV_PANIC", "abort")
                .status()
                .expect("cargo runs");
            assert!(status.success(), "the panic = abort build of testmod failed");
            target.join("debug").join("libtestmod.so")
        })
        .clone()
}
