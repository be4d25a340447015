//! The errors a process sees from its own calls.

use std::time::Duration;

use crate::{ExitReason, Pid, Shape, Tag};

/// Why a receive returned without a message.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    /// No matching message arrived within the timeout.
    #[error("no matching message arrived within {after:?}")]
    Timeout {
        /// The timeout that passed.
        after: Duration,
    },
    /// A message with the asked type's tag was not of that type: its shape
    /// is another (the sender has another version of the type, and no arm
    /// of the receive takes that shape), or its bytes did not decode. The
    /// message was taken out of the mailbox; nothing was decoded into a
    /// type of another shape. (Boxed, so that every receive's result stays
    /// small: it is moved on the fast path of each message.)
    #[error(transparent)]
    Decode(Box<DecodeError>),
}

/// The details of [`ReceiveError::Decode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a message tagged {tag:?} of shape {found} is not a {type_name} (shape {expected}): {reason}")]
pub struct DecodeError {
    /// The message's tag.
    pub tag: Tag,
    /// The type the receive asked for.
    pub type_name: &'static str,
    /// That type's shape.
    pub expected: Shape,
    /// The message's shape, as its sender's type has it.
    pub found: Shape,
    /// What was wrong, and what to do.
    pub reason: String,
    /// The message's bytes, as sent: decode them with another type
    /// ([`Envelope::decode`](crate::Envelope::decode)) to recover it.
    pub bytes: Vec<u8>,
}

impl From<ReceiveError> for ExitReason {
    fn from(error: ReceiveError) -> ExitReason {
        ExitReason::error(error)
    }
}

/// Why a spawn of a module entry was refused; nothing was started.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum SpawnError {
    /// No version of the module is loaded.
    #[error("no module {module:?} is loaded; load it first")]
    NoModule {
        /// The module asked for.
        module: String,
    },
    /// The module's current version has no such entry.
    #[error("module {module:?} version {version:?} has no entry {entry:?}; its entries are: {entries}")]
    NoEntry {
        /// The module.
        module: String,
        /// Its current version.
        version: String,
        /// The entry asked for.
        entry: String,
        /// The entries it has, comma-separated.
        entries: String,
    },
    /// The start argument could not be encoded (a hand-written `Serialize`
    /// failed).
    #[error("the start argument could not be encoded: {reason}")]
    BadArgument {
        /// The encoder's message.
        reason: String,
    },
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The node asked to spawn could not be reached, or went down before
    /// it answered.
    #[error("could not spawn on node {node}: {why}")]
    NoConnection {
        /// The node.
        node: String,
        /// Why.
        why: crate::NodeDownReason,
    },
    /// The start argument does not decode as the entry's state type; nothing
    /// started.
    #[error(
        "the start argument does not decode as the state of {module}:{entry}: {reason}; pass the entry's state type"
    )]
    BadState {
        /// The module.
        module: String,
        /// The entry.
        entry: String,
        /// Why it did not decode.
        reason: String,
    },
}

impl From<SpawnError> for ExitReason {
    fn from(error: SpawnError) -> ExitReason {
        ExitReason::error(error)
    }
}

/// Why `register` refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// A live process already has the name (Erlang: `badarg`).
    #[error("the name {name:?} is already registered to {holder}; unregister it first or pick another name")]
    NameTaken {
        /// The name asked for.
        name: String,
        /// The process that has it.
        holder: Pid,
    },
    /// The process already has a name; a process has at most one.
    #[error("{pid} is already registered under another name; unregister that name first")]
    AlreadyRegistered {
        /// The process.
        pid: Pid,
    },
    /// The process is not alive on this node.
    #[error("{pid} is not a live process on this node")]
    Noproc {
        /// The process.
        pid: Pid,
    },
    /// The name is empty.
    #[error("a registered name must not be empty")]
    BadName,
}

impl From<RegisterError> for ExitReason {
    fn from(error: RegisterError) -> ExitReason {
        ExitReason::error(error)
    }
}
