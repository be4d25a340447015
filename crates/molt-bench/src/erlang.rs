//! Runs the Erlang/OTP side of a workload: compiles `erlang/bench.erl` once
//! with `erlc` and runs one workload per fresh `erl` VM (default flags: one
//! scheduler per core, like a molt node).

use std::path::PathBuf;
use std::process::Command;

use crate::workloads::Measurement;

const SOURCE: &str = include_str!("../erlang/bench.erl");

/// A compiled bench module, or why Erlang is not available.
pub(crate) struct Erlang {
    dir: PathBuf,
}

impl Erlang {
    /// Compiles the bench module if `erl` and `erlc` are installed.
    pub(crate) fn find() -> Result<Erlang, String> {
        let dir = std::env::temp_dir().join(format!("molt-bench-erlang-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let source = dir.join("bench.erl");
        std::fs::write(&source, SOURCE).map_err(|e| format!("cannot write {}: {e}", source.display()))?;
        let output = Command::new("erlc")
            .arg("-o")
            .arg(&dir)
            .arg(&source)
            .output()
            .map_err(|e| format!("erlc not found ({e}); install Erlang with `apt-get install erlang-base`"))?;
        if !output.status.success() {
            return Err(format!(
                "erlc failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(Erlang { dir })
    }

    /// Runs one workload in a fresh VM and reads its JSON line.
    pub(crate) fn run(&self, workload: &str, n: u64) -> Result<Measurement, String> {
        let mut erl = Command::new("erl");
        // The distribution workloads start a second VM as a peer node.
        if workload.starts_with("remote_") || workload == "detect_sigkill" {
            erl.args(["-name", &format!("molt_bench_{}@127.0.0.1", std::process::id()), "-setcookie", "molt_bench"]);
        }
        let output = erl
            .args(["-noshell", "+P", "4000000", "-pa"])
            .arg(self.dir.as_os_str())
            .args(["-run", "bench", "run", workload, &n.to_string()])
            .output()
            .map_err(|e| format!("erl did not start: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout.lines().rev().find(|l| l.starts_with('{')).ok_or_else(|| {
            format!("erl printed no result for {workload}: {}", String::from_utf8_lossy(&output.stderr))
        })?;
        serde_json::from_str(line).map_err(|e| format!("erl printed {line:?}, not a result: {e}"))
    }
}

impl Drop for Erlang {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
