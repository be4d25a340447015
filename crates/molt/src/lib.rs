//! molt: an actor runtime in the style of Erlang/OTP and Cloud Haskell whose
//! processes can change their code while they run.
//!
//! This crate is the static core a host program links: [`Node`]s, their
//! processes, mailboxes, links, monitors, registry and timers, and the code
//! server that loads modules (`cdylib` crates built with `molt-module`), keeps
//! two versions of each, moves processes to new code with
//! [`Process::hot_call`] and purges old versions ([`Node::load`],
//! [`Node::soft_purge`], [`Node::purge`], [`Node::spawn_entry`]). The process
//! API itself, [`Process`], is defined in `molt-abi` and re-exported here: it
//! is the same for a process compiled into the host and for one whose code is
//! loaded from a module.
//!
//! ```
//! use molt::{Node, NodeConfig, Pid};
//!
//! let node = Node::start(NodeConfig::new("example")).unwrap();
//! let answer = node.run(|mut p| async move {
//!     let echo = p.spawn(|mut p| async move {
//!         let (from, n): (Pid, i64) = p.expect().await?;
//!         p.send(from, &(n * 2));
//!         Ok::<(), molt::ReceiveError>(())
//!     });
//!     p.send(echo, &(p.self_pid(), 21i64));
//!     p.expect::<i64>().await
//! });
//! assert_eq!(answer, Ok(Ok(42)));
//! node.shutdown();
//! ```

#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

mod boundary;
mod code;
mod dist;
mod executor;
mod info;
mod mailbox;
mod node;
mod placement;
mod poller;
mod process;
mod process_table;
mod registry;
mod scheduler;
mod signal;
mod timer;
mod watchdog;

pub use code::{
    BuildError, BuildOptions, LoadError, LoadOptions, Loaded, ModuleInfo, ProcessUpgrade, PurgeError, PurgeReport,
    ShapeChange, UnloadedVersion, UpgradeOutcome, VersionInfo, build_module,
};
pub use dist::{ConnectError, PeerInfo, Secret, SecretError, Tls, TlsError};
pub use info::{ProcessInfo, ProcessStatus};
pub use molt_abi::contract::ABI_VERSION;
pub use molt_abi::contract::SpawnOptions;
pub use molt_abi::module::{EntryShape, MessageShape, ModuleShapes};
pub use molt_abi::{
    DecodeError, Down, Envelope, Exit, ExitReason, Expect, HotCall, IntoExitReason, Message, MonitorRef, Never,
    NodeDownReason, NodeId, Pid, Process, Receive, ReceiveError, RegisterError, Shape, Sleep, SpawnError, Tag,
    TimerRef, TracedShape, Upgrade, UpgradeFailed, serde,
};
pub use molt_abi::{NodeDown, SpawnReply, WhereisReply};
pub use node::{MAX_WORKERS, Node, NodeConfig, NodeError};
