//! What can go wrong when loading, purging and building modules. Every
//! variant names the file or module, what was wrong, and what to do.

use std::path::PathBuf;

use molt_abi::{Pid, TracedShape};

/// Why a load was refused; the running versions are untouched.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read module file {path}: {source}; check the path")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a shared library for this machine.
    #[error("{path} is not a shared library: {reason}; build the module crate as a cdylib")]
    NotALibrary {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// The library's segments extend past the end of the file.
    #[error("{path} is truncated: its segments need {needed} bytes, the file has {found}; copy or build it again")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the segments need.
        needed: u64,
        /// Bytes the file has.
        found: u64,
    },
    /// The library is for another machine.
    #[error("{path} is built for {found}, this node runs on {expected}; build it for this target")]
    WrongTarget {
        /// The file.
        path: PathBuf,
        /// This node's target.
        expected: String,
        /// The file's architecture.
        found: String,
    },
    /// A shared library, but not a molt module.
    #[error("{path} is not a molt module: {reason}; a module declares itself with molt_module::module!")]
    NotAModule {
        /// The file.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// Built against another version of molt's C contract.
    #[error(
        "{path} was built for molt ABI version {found}, this node speaks version {expected}; rebuild it against this molt"
    )]
    AbiMismatch {
        /// The file.
        path: PathBuf,
        /// This node's ABI version.
        expected: u32,
        /// The module's.
        found: u32,
    },
    /// Built with another target, compiler or SDK version.
    #[error(
        "{path} was built with {what} {found:?}, this node with {expected:?}; rebuild it with the same toolchain and molt version"
    )]
    BuildMismatch {
        /// The file.
        path: PathBuf,
        /// Which fact differs.
        what: &'static str,
        /// This node's.
        expected: String,
        /// The module's.
        found: String,
    },
    /// Built against a `molt-abi` whose contract types have another shape
    /// than this node's, under the same ABI version.
    #[error(
        "{path} was built against a molt contract of another layout (fingerprint {found:#018x}, this node's is \
         {expected:#018x}) under the same ABI version; rebuild it against this node's molt-module"
    )]
    LayoutMismatch {
        /// The file.
        path: PathBuf,
        /// This node's fingerprint.
        expected: u64,
        /// The module's.
        found: u64,
    },
    /// Built to abort on panic: one panic in it would end the node.
    #[error(
        "{path} was built with panic = \"abort\": a panic in it would end the whole node; build it with \
         panic = \"unwind\" (the default) in its profile"
    )]
    AbortsOnPanic {
        /// The file.
        path: PathBuf,
    },
    /// The module calls itself by another name than the one it was loaded as.
    #[error("{path} declares module {found:?}, but was loaded as {expected:?}; load it under its own name")]
    WrongName {
        /// The file.
        path: PathBuf,
        /// The name it was loaded as.
        expected: String,
        /// The name it declares.
        found: String,
    },
    /// The dynamic loader refused the file.
    #[error("the dynamic loader refused {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The loader's message.
        reason: String,
    },
    /// The private copy (an anonymous memory file) could not be made.
    #[error(
        "cannot make the private in-memory copy {name}: {source}; molt needs Linux's memfd_create and /proc \
         (check the process's memory and file limits)"
    )]
    Copy {
        /// The copy's name.
        name: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The new version changes the shape of an entry's state (`what`), and
    /// its `migrate` does not declare that it converts state from the
    /// current version: every process that moved into it would fail its
    /// upgrade.
    #[error(
        "module {:?} version {} changes the state of entry {} from {} to {}, but its migrate does not convert \
         state from version {}; write a migrate that turns the old state into the new one and declare it: \
         module! {{ ..., migrate: migrate, migrates_from: [\"{}\"] }} (or keep the state's shape)",
        .0.module, .0.to, .0.what, .0.old, .0.new, .0.from, .0.from
    )]
    StateShapeChanged(Box<ShapeChange>),
    /// A declared message type (`what`) changes shape under the same name,
    /// and the load was asked to refuse that
    /// (`LoadOptions::refuse_changed_messages`).
    #[error(
        "module {:?} version {} changes the shape of message {} from {} (version {}) to {}; processes of the two \
         versions would refuse each other's {}: give the new shape a new name, or load without \
         refuse_changed_messages and receive both shapes",
        .0.module, .0.to, .0.what, .0.old, .0.from, .0.new, .0.what
    )]
    MessageShapeChanged(Box<ShapeChange>),
    /// `LoadOptions::await_upgrades` was asked from a process: waiting would
    /// block the thread that runs the very processes it waits for.
    #[error(
        "await_upgrades waits on the calling thread, and this call comes from a process, whose thread runs the \
         processes it would wait for; load from outside the node's processes (a thread of your own), or load \
         without await_upgrades and watch for UpgradeFailed"
    )]
    AwaitFromProcess,
    /// An old version still exists (Erlang's `not_purged`).
    #[error("module {module:?} still has an old version ({old}); purge it first, or load with purge_first")]
    NotPurged {
        /// The module.
        module: String,
        /// The old version's declared version.
        old: String,
    },
    /// Purging the old version first (asked for) failed.
    #[error(transparent)]
    Purge(#[from] PurgeError),
}

/// A type whose shape differs between a module's current version and the
/// version being loaded.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeChange {
    /// The module.
    pub module: String,
    /// The entry whose state changed, or the message type, as the module
    /// names it.
    pub what: String,
    /// The current version.
    pub from: String,
    /// The version being loaded.
    pub to: String,
    /// The current version's shape.
    pub old: TracedShape,
    /// The new version's.
    pub new: TracedShape,
}

/// Why a purge was refused or could not finish.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PurgeError {
    /// No module of that name is loaded.
    #[error("no module {module:?} is loaded")]
    NoModule {
        /// The module.
        module: String,
    },
    /// Soft purge: processes still run the old version (Erlang's
    /// `code:soft_purge/1` returning false).
    #[error("module {module:?} version {version} is still run by {}; use purge to kill them, or wait", list(.processes))]
    InUse {
        /// The module.
        module: String,
        /// The old version.
        version: String,
        /// The processes running it.
        processes: Vec<Pid>,
    },
    /// Soft purge: a hard purge of the old version is under way.
    #[error("module {module:?} version {version} is being purged; wait for that purge to end")]
    Purging {
        /// The module.
        module: String,
        /// The old version.
        version: String,
    },
    /// Hard purge: some processes did not end in time (they never yield).
    #[error(
        "module {module:?} version {version}: {} did not end within {seconds} s; they never yield. The version \
         stays (purging, starting nothing new); purge again once they can end",
        list(.processes)
    )]
    Stuck {
        /// The module.
        module: String,
        /// The old version.
        version: String,
        /// The processes still running it.
        processes: Vec<Pid>,
        /// How long purge waited, in seconds.
        seconds: f64,
    },
}

fn list(processes: &[Pid]) -> String {
    processes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Why `build` produced no module file.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// cargo could not be run.
    #[error("cannot run cargo: {0}; is the Rust toolchain installed and on PATH?")]
    Cargo(#[source] std::io::Error),
    /// The crate did not compile; the compiler's messages.
    #[error("the module crate at {crate_dir} did not build:\n{messages}")]
    Compile {
        /// The crate.
        crate_dir: PathBuf,
        /// What the compiler said.
        messages: String,
    },
    /// It built, but the library did not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// It built, but produced no `cdylib`.
    #[error("the crate at {crate_dir} built no cdylib; add crate-type = [\"cdylib\"] under [lib]")]
    NoLibrary {
        /// The crate.
        crate_dir: PathBuf,
    },
}
