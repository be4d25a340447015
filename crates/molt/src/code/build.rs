//! Building a module crate with cargo (the seed's `makeAll`): runs
//! `cargo build` on the crate and finds the `cdylib` it produced, surfacing
//! compiler errors as a [`BuildError`] value.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::error::BuildError;

/// How to build a module crate.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// Cargo features to enable (`--features`).
    pub features: Vec<String>,
    /// Build with `--release`.
    pub release: bool,
    /// Cargo's target directory (`--target-dir`); cargo's default if `None`.
    pub target_dir: Option<PathBuf>,
    /// Pass cargo's progress lines through to this process's stderr.
    pub show_progress: bool,
    /// Leave out debug information and strip the symbol table (the dynamic
    /// symbols the loader needs stay): a smaller file loads faster.
    pub strip: bool,
}

/// Builds the module crate at `crate_dir` and returns the path of the
/// `cdylib` cargo produced. The file is overwritten by the next build of the
/// same crate into the same target directory: load (or copy) it first.
///
/// # Errors
/// When cargo cannot run, the crate does not compile (the error carries the
/// compiler's messages), or it produces no `cdylib`.
pub fn build_module(crate_dir: &Path, options: &BuildOptions) -> Result<PathBuf, BuildError> {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.arg("build").arg("--lib").arg("--message-format=json-render-diagnostics");
    cargo.arg("--manifest-path").arg(crate_dir.join("Cargo.toml"));
    if options.release {
        cargo.arg("--release");
    }
    if !options.features.is_empty() {
        cargo.arg("--features").arg(options.features.join(","));
    }
    if let Some(dir) = &options.target_dir {
        cargo.arg("--target-dir").arg(dir);
    }
    if options.strip {
        let profile = if options.release { "RELEASE" } else { "DEV" };
        cargo.env(format!("CARGO_PROFILE_{profile}_DEBUG"), "false");
        cargo.env(format!("CARGO_PROFILE_{profile}_STRIP"), "symbols");
    }
    cargo.stdout(Stdio::piped());
    cargo.stderr(if options.show_progress { Stdio::inherit() } else { Stdio::piped() });
    let mut child = cargo.spawn().map_err(BuildError::Cargo)?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut artifact = None;
    let mut messages = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(BuildError::Cargo)?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        match message["reason"].as_str() {
            Some("compiler-message") => {
                if let Some(rendered) = message["message"]["rendered"].as_str() {
                    messages.push_str(rendered);
                }
            }
            Some("compiler-artifact") => {
                let kinds = message["target"]["crate_types"].as_array().cloned().unwrap_or_default();
                if kinds.iter().any(|k| k == "cdylib")
                    && let Some(files) = message["filenames"].as_array()
                {
                    artifact = files
                        .iter()
                        .filter_map(|f| f.as_str())
                        .find(|f| f.ends_with(std::env::consts::DLL_SUFFIX))
                        .map(PathBuf::from);
                }
            }
            _ => {}
        }
    }
    let output = child.wait_with_output().map_err(BuildError::Cargo)?;
    if !output.status.success() {
        messages.push_str(&String::from_utf8_lossy(&output.stderr));
        return Err(BuildError::Compile { crate_dir: crate_dir.to_owned(), messages });
    }
    artifact.ok_or_else(|| BuildError::NoLibrary { crate_dir: crate_dir.to_owned() })
}
