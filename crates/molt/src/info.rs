//! Introspection: what `Node::processes` reports about each process (the
//! data behind `molt ps`, Erlang's `erlang:process_info/1`).

use molt_abi::Pid;

/// What a process is doing, as last seen by the core.
#[repr(u8)]
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProcessStatus {
    /// Started or woken, waiting for a scheduler thread.
    Runnable = 0,
    /// Being polled right now.
    Running = 1,
    /// Waiting in a receive for a matching message.
    Waiting = 2,
    /// Waiting in `sleep` (or a receive's timeout).
    Sleeping = 3,
    /// Waiting on something outside molt (a future of the host program).
    Suspended = 4,
    /// Ending: its links and monitors are being told.
    Exiting = 5,
    /// Paused by backpressure: it sent to a node whose backlog is over its
    /// bound (`NodeConfig::max_backlog`), and runs again once that drains.
    Backpressured = 6,
}

impl ProcessStatus {
    pub(crate) fn from_u8(value: u8) -> ProcessStatus {
        match value {
            0 => ProcessStatus::Runnable,
            1 => ProcessStatus::Running,
            2 => ProcessStatus::Waiting,
            3 => ProcessStatus::Sleeping,
            4 => ProcessStatus::Suspended,
            6 => ProcessStatus::Backpressured,
            _ => ProcessStatus::Exiting,
        }
    }
}

impl std::fmt::Display for ProcessStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProcessStatus::Runnable => "runnable",
            ProcessStatus::Running => "running",
            ProcessStatus::Waiting => "waiting",
            ProcessStatus::Sleeping => "sleeping",
            ProcessStatus::Suspended => "suspended",
            ProcessStatus::Exiting => "exiting",
            ProcessStatus::Backpressured => "backpressured",
        })
    }
}

/// One process as `Node::processes` lists it.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Its pid.
    pub pid: Pid,
    /// What it is doing.
    pub status: ProcessStatus,
    /// Its registered name, if any.
    pub registered_name: Option<String>,
    /// How many messages wait in its mailbox.
    pub mailbox_len: usize,
    /// The processes it is linked to.
    pub links: Vec<Pid>,
    /// How many monitors watch it.
    pub monitored_by: usize,
    /// Whether it traps exits.
    pub trap_exit: bool,
    /// What code it runs: for a process compiled into the host, the Rust
    /// path of its body; for a module process, `module:entry (version v)`.
    pub code: String,
    /// For a module process: the module and the declared version it runs.
    pub module: Option<(String, String)>,
}
