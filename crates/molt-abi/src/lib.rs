//! What molt's core and the code its processes run share: the process API
//! ([`Process`]), the plain data both sides speak ([`Pid`], [`ExitReason`],
//! [`Message`] and its [`Envelope`]) and the C contract beneath them
//! ([`contract`]).
//!
//! The core (`molt`) implements [`contract::ProcessVTable`]; code compiled
//! into the host and code loaded from a module both reach the core only
//! through it, so a process reads the same whichever side runs it. Nothing
//! here keeps state or runs a scheduler.

#![deny(unsafe_op_in_unsafe_fn)]

mod blocking;
mod body;
pub mod contract;
mod error;
mod exit;
mod layout;
mod message;
pub mod module;
mod outgoing;
mod pid;
mod process;
mod receive;
mod shape;

pub use blocking::Blocking;
pub use body::{body_future, install_module_panic_hook, panic_message};
pub use error::{DecodeError, ReceiveError, RegisterError, SpawnError};
pub use exit::{ExitReason, IntoExitReason, Never, NodeDownReason};
pub use message::{
    Down, Envelope, Exit, Message, NodeDown, Payload, SpawnReply, Tag, Upgrade, UpgradeFailed, WhereisReply,
};
/// Derives [`Message`]: `#[derive(Message)] #[message(name = "myapp.Ping")]`.
pub use molt_macros::Message;
pub use pid::{MonitorRef, NodeId, Pid, TimerRef};
pub use process::{HotCall, Process, Sleep};
pub use receive::{Always, Arm, Arms, Expect, NoArms, Predicate, Receive, Then};
pub use shape::{Shape, TracedShape};

/// Re-exported so message types can derive `Serialize` and `Deserialize`
/// through molt without naming serde's version.
pub use serde;
