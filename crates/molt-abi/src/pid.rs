//! Identities that are meaningful on every node: [`Pid`], [`NodeId`],
//! [`MonitorRef`] and [`TimerRef`].
//!
//! All of them are plain `#[repr(C)]` values: they cross the module boundary
//! by value and the wire as postcard bytes, and they never point into memory.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which node a pid lives on: a stable 64-bit hash of the node's name.
///
/// Encoded as 8 fixed bytes: a hash is as wide as it gets, so a varint would
/// only cost time (10 bytes, a loop) without saving space.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(#[serde(with = "postcard::fixint::le")] pub u64);

impl NodeId {
    /// The id of the node called `name` (FNV-1a of its bytes): every node
    /// computes the same id for the same name.
    pub const fn from_name(name: &str) -> NodeId {
        NodeId(crate::message::fnv1a(name.as_bytes(), crate::message::FNV_OFFSET))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({:08x})", self.0 as u32)
    }
}

/// A process identifier: the node, the node's incarnation and a serial.
///
/// A restarted node gets a new `creation`, so a pid of its previous life never
/// names one of its new processes (Erlang's creation number).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pid {
    /// The node the process runs on.
    pub node: NodeId,
    /// Which start of that node created the process (4 fixed bytes on the
    /// wire, for the same reason as [`NodeId`]).
    #[serde(with = "postcard::fixint::le")]
    pub creation: u32,
    /// The process's number on its node, never reused within one creation.
    pub serial: u64,
}

impl fmt::Display for Pid {
    /// `<node.serial>`, in the spirit of Erlang's `<0.42.0>`; `{:?}` adds
    /// the node's creation.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{:08x}.{}>", self.node.0 as u32, self.serial)
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{:08x}.{}.{}>", self.node.0 as u32, self.serial, self.creation)
    }
}

/// Names one monitor: returned by `monitor`, carried by the [`Down`](crate::Down)
/// it fires, and given to `demonitor`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MonitorRef {
    /// Unique on the node that made it.
    pub id: u64,
    /// The monitored process.
    pub target: Pid,
}

/// Names a timer started by `send_after`, for `cancel_timer`: where the
/// node keeps it, and an id unique on the node, so a reference to a timer
/// that fired or was cancelled never names another.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TimerRef {
    /// Unique on the node that made it.
    pub id: u64,
    /// The timer's slot on its scheduler.
    pub slot: u32,
    /// The scheduler that fires it.
    pub scheduler: u32,
}
