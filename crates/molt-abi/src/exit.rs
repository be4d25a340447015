//! [`ExitReason`]: why a process ended, and how a value returned by a process
//! becomes one ([`IntoExitReason`]).
//!
//! Link semantics follow Erlang: only [`ExitReason::Normal`] is ignored by a
//! linked process that does not trap exits; every other reason takes it down
//! with the same reason.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a process ended (Cloud Haskell's `DiedReason`, Erlang's exit reasons).
///
/// Crosses the module boundary and the wire as postcard bytes.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExitReason {
    /// The process returned (Erlang `normal`, Cloud Haskell `DiedNormal`).
    Normal,
    /// The process was told to stop, by its node shutting down or by
    /// `exit(pid, Shutdown)` (Erlang `shutdown`).
    Shutdown,
    /// The process was killed by `kill`, which cannot be trapped, or by an
    /// exit signal carrying `Killed` (Erlang `killed`).
    Killed,
    /// The process did not exist when it was linked or monitored
    /// (Erlang `noproc`).
    Noproc,
    /// The process panicked; the panic's message.
    Panicked(String),
    /// A reason given by user code: an error the process returned or the
    /// reason passed to `exit` (Cloud Haskell `DiedException`).
    Error(String),
    /// The process ran a module version that was purged (Erlang's hard
    /// `code:purge/1`, which says only `killed`).
    Purged {
        /// The module.
        module: String,
        /// The purged version's declared version string.
        version: String,
    },
    /// The process was on another node, and that node was declared down
    /// (Erlang `noconnection`): a link or monitor across the connection
    /// fired because the connection, not the process, ended.
    NoConnection {
        /// The name of the node that went down.
        node: String,
        /// Why it was declared down.
        why: NodeDownReason,
    },
}

/// Why a node was declared down: in [`ExitReason::NoConnection`] and in
/// the `NodeDown` message of a node monitor.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeDownReason {
    /// The connection closed (the peer's process died, or the network
    /// dropped it) and did not come back within the detection bound: a
    /// connection that comes back in time resumes where it broke.
    ConnectionClosed,
    /// Nothing arrived from the peer, not even a heartbeat, for the
    /// detection bound: the peer hangs or the network is cut.
    HeartbeatTimeout,
    /// The peer said it was shutting down.
    PeerShutdown,
    /// The handshake failed: one side does not hold the other's secret.
    AuthenticationFailed,
    /// No connection could be made (the peer refused it, is not there, or
    /// did not finish its handshake); what went wrong.
    Unreachable(String),
    /// The peer broke the protocol; what it sent.
    ProtocolError(String),
    /// One of the two nodes was told to drop the connection
    /// (`Node::disconnect`).
    Disconnected,
}

impl fmt::Display for NodeDownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeDownReason::ConnectionClosed => f.write_str("connection closed"),
            NodeDownReason::HeartbeatTimeout => f.write_str("heartbeat timeout"),
            NodeDownReason::PeerShutdown => f.write_str("peer shut down"),
            NodeDownReason::AuthenticationFailed => f.write_str("authentication failed"),
            NodeDownReason::Unreachable(what) => write!(f, "unreachable: {what}"),
            NodeDownReason::ProtocolError(what) => write!(f, "protocol error: {what}"),
            NodeDownReason::Disconnected => f.write_str("disconnected"),
        }
    }
}

impl ExitReason {
    /// A user-defined reason from anything printable.
    pub fn error(reason: impl fmt::Display) -> ExitReason {
        ExitReason::Error(reason.to_string())
    }

    /// Whether this is [`ExitReason::Normal`], the one reason a linked
    /// process that does not trap exits ignores.
    pub fn is_normal(&self) -> bool {
        matches!(self, ExitReason::Normal)
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Shutdown => f.write_str("shutdown"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::Noproc => f.write_str("noproc"),
            ExitReason::Panicked(message) => write!(f, "panicked: {message}"),
            ExitReason::Error(reason) => write!(f, "error: {reason}"),
            ExitReason::Purged { module, version } => write!(f, "purged: {module} version {version}"),
            ExitReason::NoConnection { node, why } => write!(f, "noconnection: node {node}: {why}"),
        }
    }
}

/// What a process function may return: `()` ends the process normally, an
/// [`ExitReason`] ends it with that reason, and `Result<(), E>` ends it
/// normally or with `E` turned into a reason.
pub trait IntoExitReason {
    /// The reason the process ends with.
    fn into_exit_reason(self) -> ExitReason;
}

impl IntoExitReason for () {
    fn into_exit_reason(self) -> ExitReason {
        ExitReason::Normal
    }
}

impl IntoExitReason for ExitReason {
    fn into_exit_reason(self) -> ExitReason {
        self
    }
}

/// Names the never type `!` on stable Rust, so that a body that never
/// returns (a server's `loop`, a `panic!`) is a valid process body. Public
/// only because [`Never`] is; not meant to be used.
#[doc(hidden)]
pub trait HasOutput {
    /// The function's output.
    type Output;
}

impl<T> HasOutput for fn() -> T {
    type Output = T;
}

/// The never type `!`, named: the output of a future that never completes,
/// such as [`Process::hot_call`](crate::Process::hot_call)'s.
pub type Never = <fn() -> ! as HasOutput>::Output;

impl IntoExitReason for Never {
    fn into_exit_reason(self) -> ExitReason {
        self
    }
}

impl<E: Into<ExitReason>> IntoExitReason for Result<(), E> {
    fn into_exit_reason(self) -> ExitReason {
        match self {
            Ok(()) => ExitReason::Normal,
            Err(error) => error.into(),
        }
    }
}
