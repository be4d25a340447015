//! The C contract between molt's core and the code a process runs.
//!
//! Owns [`ProcessVTable`] (the functions the core offers a process),
//! [`ProcessStart`] (how code hands the core a process body to run) and the
//! `#[repr(C)]` request and status types they use. Everything here is plain
//! data and `extern "C"` function pointers: no Rust-layout type crosses.
//!
//! Invariants both sides keep:
//! - a `handle` is an opaque strong reference to a process in the core; the
//!   core keeps it valid until `release` is called on it, and every function
//!   of the vtable may be called with it from any thread;
//! - bytes passed to the core are borrowed for the call only: the core
//!   copies what it keeps, so memory is always freed by the side that
//!   allocated it; a message is written by the sender's own code straight
//!   into the core's buffer ([`Outgoing`]), so it is copied once;
//! - the core never unwinds into a caller, and code called back by the core
//!   (a `matcher`, a `start`) catches its own panics;
//! - the core never receives a waker, a vtable or any other callback it would
//!   keep: the only module function pointers it holds are a body's future
//!   and a [`ProcessStart`], each attributed to the module version whose code
//!   they are and holding it open (a receive polled under a combinator's
//!   waker is relayed on the module's side, see `body.rs`);
//! - values the core receives from a module are validated, never trusted to
//!   be a valid Rust enum or `bool` (`matcher` and `migrate` return `u8`).

use std::ffi::c_void;

use async_ffi::FfiFuture;

use crate::module::Sink;
use crate::{MonitorRef, Pid, Process, Shape, Tag, TimerRef};

/// The version of this contract. The core refuses code built against another.
pub const ABI_VERSION: u32 = 9;

/// A message being sent: its tag and shape, and its postcard bytes — for a
/// small message, encoded already on the sender's stack (`bytes`, `len`),
/// which the core copies; for a larger one, the sender's code that writes
/// them into a buffer of the core's (`encode`, with `bytes` null). The core
/// calls `encode` at most once, during the call the message was passed to
/// (not at all if the message goes nowhere, as from a process that ended
/// itself): a big message is copied once, from the sender's value into the
/// envelope its receiver reads.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Outgoing {
    /// The message type's tag.
    pub tag: Tag,
    /// The message type's shape.
    pub shape: Shape,
    /// The encoded message, or null.
    pub bytes: *const u8,
    /// Its length.
    pub len: usize,
    /// The sender's value (and where it records a failure), for `encode`.
    pub env: *mut c_void,
    /// Writes the value's bytes through `sink`, in pieces; returns false if
    /// the value could not be encoded (its `Serialize` failed or panicked:
    /// the sender learns why through `env`), and the core sends nothing.
    pub encode: unsafe extern "C" fn(env: *mut c_void, sink: Sink) -> bool,
}

/// Blocking work a process hands to the core: the core calls `run(env)`
/// once, on a thread of its own pool (never a scheduler thread), and keeps
/// the module version whose code it is open until `run` returns; if it
/// cannot, it calls `drop_env(env)` instead. `run` consumes `env`, reports
/// its result itself (through `env`) and catches its own panics; neither
/// function may unwind.
#[repr(C)]
#[derive(Debug)]
pub struct BlockingJob {
    /// The work and where its result goes, owned by the side that made it.
    pub env: *mut c_void,
    /// Does the work.
    pub run: unsafe extern "C" fn(env: *mut c_void),
    /// Frees `env` without doing the work.
    pub drop_env: unsafe extern "C" fn(env: *mut c_void),
}

// SAFETY: `env` is a `Box` of a `Send` closure and an `Arc` of a `Send`
// result (see `Process::blocking`), so the job may run on any thread.
unsafe impl Send for BlockingJob {}

/// A deadline meaning "never": receives without a timeout pass it.
pub const NO_DEADLINE: u64 = u64::MAX;

/// An opaque handle to a process in the core.
pub type ProcessHandle = *const c_void;

/// What a receive asks the core for: the oldest queued message accepted by
/// `matcher`, looking only at messages whose tag is in `tags`.
#[repr(C)]
#[derive(Debug)]
pub struct ReceiveRequest {
    /// The tags any arm of the receive accepts; messages with other tags are
    /// skipped without calling `matcher`.
    pub tags: *const Tag,
    /// How many tags `tags` points at.
    pub tag_count: usize,
    /// Called with each candidate (its tag, its shape and its bytes), oldest
    /// first; returns [`MATCH_TAKE`] to take it out of the mailbox (and end
    /// the receive), anything else to leave it. Must not unwind.
    pub matcher: unsafe extern "C" fn(env: *mut c_void, tag: Tag, shape: Shape, bytes: *const u8, len: usize) -> u8,
    /// Passed to `matcher`.
    pub env: *mut c_void,
    /// How many queued messages this receive has already looked at; the core
    /// advances it so a wake-up never rescans them (Erlang's saved position).
    /// Starts at 0 for each new receive.
    pub cursor: usize,
    /// When the receive gives up, on the node's clock (see `now`), or
    /// [`NO_DEADLINE`].
    pub deadline: u64,
}

/// What a receive's `matcher` returns to take the message it was offered.
pub const MATCH_TAKE: u8 = 1;

/// What `exit` and `kill` return when the signal ended the process that
/// sent it, from its own body.
pub const ENDED_CALLER: u8 = 1;

/// The outcome of one `receive` or `sleep_until` call.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiveStatus {
    /// The matcher took a message.
    Matched = 0,
    /// Nothing matched yet (or the deadline is still ahead); the task is
    /// woken when a message arrives or the deadline passes.
    Pending = 1,
    /// The deadline passed (with nothing matched).
    TimedOut = 2,
    /// The call was not made from the process's own body (its `Process` was
    /// moved into another task or thread), or it was made from inside
    /// another receive of the same process (a matcher): only a process
    /// receives its messages, one receive at a time.
    NotOwner = 3,
}

/// The outcome of `hot_call`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HotCallStatus {
    /// The switch happens when the body next returns `Pending`.
    Accepted = 0,
    /// Not made from the process's own body while it is polled (another
    /// thread or task, or a receive's matcher): nothing happens.
    NotOwner = 1,
}

/// The outcome of `register`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterStatus {
    /// The name now names the pid.
    Registered = 0,
    /// A live process already has the name; its pid is written to `holder`.
    NameTaken = 1,
    /// The process already has another name.
    AlreadyRegistered = 2,
    /// The process is not alive (or not on this node).
    Noproc = 3,
    /// The name is empty or not UTF-8.
    BadName = 4,
}

/// The outcome of `spawn_entry`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnStatus {
    /// The process was started.
    Spawned = 0,
    /// Nothing was started; see the error written.
    Refused = 1,
}

/// Whether a spawn also links or monitors the new process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpawnOptions {
    /// Link the spawner and the new process before it runs.
    pub link: bool,
    /// Monitor the new process before it runs.
    pub monitor: bool,
}

/// The values the other side lends for one call: `len` of them at `ptr`.
/// An empty run may come with a null or dangling pointer, which
/// `std::slice::from_raw_parts` does not allow, so it is never read. Both
/// sides use this one function for everything lent across the boundary.
///
/// # Safety
/// `ptr` must point at `len` readable, initialised values that stay valid
/// and unchanged for `'a` (or `len` be 0).
pub unsafe fn borrowed<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if len == 0 {
        return &[];
    }
    // SAFETY: guaranteed by the caller; `len` is not 0, so the pointer is a
    // real one.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

/// A borrowed UTF-8 string.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Str {
    /// First byte.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

// SAFETY: a `Str` is a borrowed pointer to immutable bytes; whoever reads
// it must keep the bytes alive, whichever thread it is on.
unsafe impl Send for Str {}
// SAFETY: as above; it is never written through.
unsafe impl Sync for Str {}

impl Str {
    /// Borrows `s` for the duration of a call.
    pub fn new(s: &str) -> Str {
        Str { ptr: s.as_ptr(), len: s.len() }
    }

    /// A `Str` of a static string, usable in a `static`.
    pub const fn of(s: &'static str) -> Str {
        Str { ptr: s.as_ptr(), len: s.len() }
    }

    /// The string again.
    ///
    /// # Safety
    /// `ptr` and `len` must describe a live UTF-8 buffer for `'a`, as the
    /// caller of a vtable function guarantees for the call's duration.
    pub unsafe fn as_str<'a>(self) -> &'a str {
        // SAFETY: the caller guarantees a live buffer of `len` bytes.
        let bytes = unsafe { borrowed(self.ptr, self.len) };
        std::str::from_utf8(bytes).unwrap_or("")
    }
}

/// The functions the core offers a running process. One static table lives
/// in the core for its whole life, so module code may hold `&'static` to it.
#[repr(C)]
#[derive(Debug)]
pub struct ProcessVTable {
    /// The contract version the core implements: [`ABI_VERSION`].
    pub abi_version: u32,
    /// Drops one strong reference to the process.
    pub release: unsafe extern "C" fn(ProcessHandle),
    /// The process's own pid.
    pub self_pid: unsafe extern "C" fn(ProcessHandle) -> Pid,
    /// Nanoseconds on the node's monotonic clock, for deadlines.
    pub now: unsafe extern "C" fn(ProcessHandle) -> u64,
    /// Queues a copy of the message in `to`'s mailbox; a no-op if `to` is dead.
    pub send: unsafe extern "C" fn(ProcessHandle, to: Pid, message: Outgoing),
    /// Sends to a registered name; false if no process has it.
    pub send_named: unsafe extern "C" fn(ProcessHandle, name: Str, message: Outgoing) -> bool,
    /// Selective receive; see [`ReceiveRequest`]. Only from the process's
    /// own body while the core polls it. On `Pending` the core wakes the
    /// process's task when a message arrives or the deadline passes; it
    /// takes no waker from the caller.
    pub receive: unsafe extern "C" fn(ProcessHandle, request: *mut ReceiveRequest) -> ReceiveStatus,
    /// `TimedOut` once the node's clock passes `deadline`; otherwise
    /// `Pending`, with the process's task woken then. Only from the
    /// process's own body, as `receive`.
    pub sleep_until: unsafe extern "C" fn(ProcessHandle, deadline: u64) -> ReceiveStatus,
    /// Starts a process; writes the monitor to `monitor` if one was asked.
    pub spawn: unsafe extern "C" fn(
        ProcessHandle,
        start: ProcessStart,
        options: SpawnOptions,
        monitor: *mut MonitorRef,
    ) -> Pid,
    /// Links the process and `to` (Erlang `link/1`).
    pub link: unsafe extern "C" fn(ProcessHandle, to: Pid),
    /// Removes a link (Erlang `unlink/1`).
    pub unlink: unsafe extern "C" fn(ProcessHandle, to: Pid),
    /// Monitors `target` (Erlang `monitor(process, Pid)`).
    pub monitor: unsafe extern "C" fn(ProcessHandle, target: Pid) -> MonitorRef,
    /// Removes a monitor (Erlang `demonitor/1`).
    /// Removes a monitor the process holds; true if it was active (no
    /// `Down` of it was queued).
    pub demonitor: unsafe extern "C" fn(ProcessHandle, monitor: MonitorRef) -> bool,
    /// Sends an exit signal with a postcard-encoded [`ExitReason`](crate::ExitReason).
    /// Returns [`ENDED_CALLER`] when the signal ended the calling process
    /// itself, from its own body: the caller must then run nothing more.
    pub exit: unsafe extern "C" fn(ProcessHandle, to: Pid, reason: *const u8, len: usize) -> u8,
    /// Sends the untrappable kill signal; returns as `exit` does.
    pub kill: unsafe extern "C" fn(ProcessHandle, to: Pid) -> u8,
    /// Sets whether exit signals become [`Exit`](crate::Exit) messages;
    /// returns the previous setting.
    pub trap_exit: unsafe extern "C" fn(ProcessHandle, trap: bool) -> bool,
    /// Registers a name; on [`RegisterStatus::NameTaken`] writes the holder.
    pub register: unsafe extern "C" fn(ProcessHandle, name: Str, pid: Pid, holder: *mut Pid) -> RegisterStatus,
    /// Removes a name; false if nobody had it.
    pub unregister: unsafe extern "C" fn(ProcessHandle, name: Str) -> bool,
    /// Looks a name up; writes the pid and returns true if found.
    pub whereis: unsafe extern "C" fn(ProcessHandle, name: Str, pid: *mut Pid) -> bool,
    /// Delivers a copy of the message to `to` after `delay` nanoseconds.
    pub send_after: unsafe extern "C" fn(ProcessHandle, delay: u64, to: Pid, message: Outgoing) -> TimerRef,
    /// Delivers a copy of the message after `delay` nanoseconds to the
    /// process registered as `name` then (looked up at delivery; nothing
    /// happens if none is).
    pub send_after_named: unsafe extern "C" fn(ProcessHandle, delay: u64, name: Str, message: Outgoing) -> TimerRef,
    /// Cancels a timer: the nanoseconds it had left, or [`NO_DEADLINE`] if
    /// it had fired or was cancelled already.
    pub cancel_timer: unsafe extern "C" fn(ProcessHandle, timer: TimerRef) -> u64,
    /// Ends the running body and continues the process in `entry` of its
    /// module's current version with `state` (postcard bytes, copied), after
    /// the new version's `migrate` if the version changes (Erlang's
    /// `?MODULE:entry(State)`). Takes effect when the body next returns
    /// `Pending`; the body must not be polled on its own afterwards.
    pub hot_call: unsafe extern "C" fn(ProcessHandle, entry: Str, state: *const u8, len: usize) -> HotCallStatus,
    /// Spawns `module:entry` with `state` as its start argument; on
    /// [`SpawnStatus::Spawned`] writes the pid (and the monitor if asked),
    /// otherwise writes the reason as a postcard-encoded
    /// [`SpawnError`](crate::SpawnError) through `error`.
    pub spawn_entry: unsafe extern "C" fn(
        ProcessHandle,
        module: Str,
        entry: Str,
        state: *const u8,
        len: usize,
        options: SpawnOptions,
        pid: *mut Pid,
        monitor: *mut MonitorRef,
        error: crate::module::Sink,
    ) -> SpawnStatus,
    /// Records the reason the running body ends with (postcard-encoded
    /// [`ExitReason`](crate::ExitReason)); called once, just before its
    /// future completes.
    pub set_exit_reason: unsafe extern "C" fn(ProcessHandle, reason: *const u8, len: usize),
    /// Runs blocking work off the scheduler threads (Erlang's dirty
    /// schedulers); see [`BlockingJob`]. False if the core refused it (it
    /// dropped the job then).
    pub blocking: unsafe extern "C" fn(ProcessHandle, job: BlockingJob) -> bool,
    /// Takes one more strong reference to the process (released with
    /// `release`): what the body's waker holds.
    pub retain: unsafe extern "C" fn(ProcessHandle),
    /// Wakes the process's task, whichever scheduler it runs on now (a
    /// process that moves runs in a new task). From any thread, at any
    /// time: a no-op once the process has ended.
    pub wake: unsafe extern "C" fn(ProcessHandle),
    /// Sends to the process registered as `name` on the node `node`
    /// (Erlang `{Name, Node} ! Msg`), connecting to it if need be; nothing
    /// happens if it has no such process.
    pub nsend_on: unsafe extern "C" fn(ProcessHandle, node: Str, name: Str, message: Outgoing),
    /// Asks the node `node` which process is registered there as `name`:
    /// the answer comes as a [`WhereisReply`](crate::WhereisReply) with the
    /// request number returned.
    pub whereis_on: unsafe extern "C" fn(ProcessHandle, node: Str, name: Str) -> u64,
    /// Monitors the node `node` (Erlang `monitor_node(Node, true)`): a
    /// [`NodeDown`](crate::NodeDown) comes when the connection to it is
    /// lost, or at once if none can be made. Each call is one monitor.
    pub monitor_node: unsafe extern "C" fn(ProcessHandle, node: Str),
    /// Removes one monitor of the node `node`; false if there was none.
    pub demonitor_node: unsafe extern "C" fn(ProcessHandle, node: Str) -> bool,
    /// Asks the node `node` to spawn `module:entry` with `state` (postcard
    /// bytes, copied), linked to and/or monitored by the caller as
    /// `options` says: the answer comes as a
    /// [`SpawnReply`](crate::SpawnReply) with the request number returned;
    /// the monitor's id, when one is asked, is written to `monitor` now.
    pub spawn_entry_on: unsafe extern "C" fn(
        ProcessHandle,
        node: Str,
        module: Str,
        entry: Str,
        state: *const u8,
        len: usize,
        options: SpawnOptions,
        monitor: *mut u64,
    ) -> u64,
    /// A field no real contract has: a module built with `molt-abi`'s
    /// `test-skewed-layout` feature has a table of another shape under the
    /// same ABI version, which the core must refuse (molt's own tests).
    #[cfg(feature = "test-skewed-layout")]
    pub skew: usize,
}

/// A process body handed to the core: `start` turns the environment and the
/// new process's [`Process`] into the future the core polls.
///
/// Built only by [`ProcessStart::new`], so its function pointers and its
/// environment always belong together and to the code that made them; the
/// core runs exactly one of `start` (which consumes `env`) or `drop_env`
/// (dropping an unstarted `ProcessStart` calls it).
///
/// Safe code cannot make one from parts (a bogus `start` would crash the
/// node when spawned):
///
/// ```compile_fail,E0451
/// use molt_abi::contract::{ProcessStart, Str};
/// unsafe extern "C" fn bogus(_: *mut std::ffi::c_void, _: molt_abi::Process) -> async_ffi::FfiFuture<()> {
///     unreachable!()
/// }
/// unsafe extern "C" fn keep(_: *mut std::ffi::c_void) {}
/// let start = ProcessStart { env: std::ptr::null_mut(), start: bogus, drop_env: keep, code: Str::new("") };
/// ```
#[repr(C)]
#[derive(Debug)]
pub struct ProcessStart {
    /// The body's captured state, owned by the side that made it.
    pub(crate) env: *mut c_void,
    /// Consumes `env`; never runs user code itself, so it cannot panic.
    pub(crate) start: unsafe extern "C" fn(env: *mut c_void, process: Process) -> FfiFuture<()>,
    /// Frees `env` without starting; must not unwind.
    pub(crate) drop_env: unsafe extern "C" fn(env: *mut c_void),
    /// What code the body runs, for introspection (`molt ps`): a string that
    /// lives as long as the code that made it is loaded.
    pub(crate) code: Str,
}

// SAFETY: `env` is a `Box<F>` with `F: Send` (see `ProcessStart::new`), so the
// start may be handed to whichever thread spawns the process.
unsafe impl Send for ProcessStart {}

impl ProcessStart {
    /// The address of the code that starts the body: it lies in the library
    /// (module version) whose code the body is, so the core can tell which
    /// version a closure belongs to.
    pub fn code_address(&self) -> usize {
        self.start as usize
    }

    /// The name of the code the body runs (a closure's type name).
    ///
    /// # Safety
    /// The code that made this `ProcessStart` must still be loaded (the
    /// string is its static data).
    pub unsafe fn code_name(&self) -> &str {
        // SAFETY: the caller keeps the code (and so the string) loaded.
        unsafe { self.code.as_str() }
    }

    /// Starts the body for `process`.
    ///
    /// # Safety
    /// The code that made this `ProcessStart` must stay loaded for as long as
    /// the returned future exists, and `process` must be the process the
    /// future is polled as (the core keeps it alive while it polls or drops
    /// the future).
    pub unsafe fn start(self, process: Process) -> FfiFuture<()> {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `start` and `env` were made together by `new`, and this is
        // the one call that consumes `env` (`this` is never dropped); `start`
        // runs no user code, so it cannot unwind.
        unsafe { (this.start)(this.env, process) }
    }
}

impl Drop for ProcessStart {
    fn drop(&mut self) {
        // SAFETY: `drop_env` and `env` were made together by `new`, and an
        // unstarted `ProcessStart` is dropped once; `drop_env` catches panics.
        // The code is loaded: a `ProcessStart` is only reachable from code of
        // the library that made it or from the core, which keeps that
        // library's version open while it holds one.
        unsafe { (self.drop_env)(self.env) }
    }
}
