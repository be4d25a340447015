//! [`Process`]: the one process API, the same for a process compiled into the
//! host and one whose code is loaded from a module.
//!
//! A `Process` is a strong reference to the process's state in the core plus
//! the core's [`ProcessVTable`]; every call goes through that table, so this
//! file holds no runtime logic of its own: it encodes arguments, calls the
//! core, and decodes the answer. The process's body owns its `Process` (it is
//! handed the value when it starts) and only that body may receive with it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::contract::{
    HotCallStatus, NO_DEADLINE, ProcessHandle, ProcessStart, ProcessVTable, ReceiveStatus, RegisterStatus,
    SpawnOptions, SpawnStatus, Str,
};
use crate::module::Sink;
use crate::outgoing::outgoing;
use crate::receive::{Expect, NoArms, Receive};
use crate::{
    Down, ExitReason, IntoExitReason, Message, MonitorRef, Pid, RegisterError, SpawnError, SpawnReply, TimerRef,
    WhereisReply,
};

/// A running process's view of itself and of the node: send, receive, spawn,
/// link, monitor, register, timers (Cloud Haskell's `Process` monad, Erlang's
/// BIFs).
#[repr(C)]
pub struct Process {
    pub(crate) vtable: &'static ProcessVTable,
    pub(crate) handle: ProcessHandle,
}

// SAFETY: the handle is a strong reference to core state that is `Send + Sync`
// (the core's contract: every vtable function may be called from any thread),
// and the vtable is an immutable static.
unsafe impl Send for Process {}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process").field("pid", &self.self_pid()).finish()
    }
}

/// A non-owning copy of a [`Process`]'s handle, for code that runs while a
/// strong reference is known to be held elsewhere (the process's own task).
#[derive(Clone, Copy)]
pub(crate) struct ProcessRef {
    vtable: &'static ProcessVTable,
    handle: ProcessHandle,
}

// SAFETY: as for `Process`; a `ProcessRef` is only used while the core's task
// holds the process's state alive.
unsafe impl Send for ProcessRef {}

impl ProcessRef {
    /// A handle that wakes the process's task, whichever it is, and keeps
    /// the process's core state alive while it exists.
    pub(crate) fn task_waker(self) -> TaskWaker {
        // SAFETY: the handle is alive (the core polls the body that holds
        // this reference); the reference it takes is released by
        // `TaskWaker`'s drop.
        unsafe { (self.vtable.retain)(self.handle) };
        // SAFETY: the strong reference just taken, handed over to the
        // `Process`, which releases it on drop.
        TaskWaker(unsafe { Process::from_raw(self.vtable, self.handle) })
    }

    pub(crate) fn set_exit_reason(self, reason: &ExitReason) {
        with_encoded(reason, |bytes| {
            // SAFETY: the handle is alive (the core polls the body that holds
            // this reference) and `bytes` is valid for the call.
            unsafe { (self.vtable.set_exit_reason)(self.handle, bytes.as_ptr(), bytes.len()) }
        });
    }
}

/// Wakes a process's task from any thread: what a body's own waker does
/// (see `body.rs`). An owning `Process` (one strong reference) of which only
/// `wake` is used.
pub(crate) struct TaskWaker(Process);

// SAFETY: a `Process` is `Send`; through a shared `TaskWaker` only `wake`
// is called, which the contract allows from any thread at any time.
unsafe impl Sync for TaskWaker {}

impl TaskWaker {
    pub(crate) fn wake(&self) {
        // SAFETY: `self` holds a strong reference to the handle.
        unsafe { (self.0.vtable.wake)(self.0.handle) }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // SAFETY: this `Process` owns one strong reference, released once here.
        unsafe { (self.vtable.release)(self.handle) }
    }
}

impl Process {
    /// Wraps a strong reference made by the core.
    ///
    /// # Safety
    /// `handle` must be a strong reference to a process that `vtable`
    /// implements, owned by the caller and handed over to the new `Process`
    /// (which releases it on drop); `vtable` must be valid for the rest of
    /// the program.
    pub unsafe fn from_raw(vtable: &'static ProcessVTable, handle: ProcessHandle) -> Process {
        Process { vtable, handle }
    }

    /// The handle, for the core to identify the process; `self` keeps it alive.
    pub fn handle(&self) -> ProcessHandle {
        self.handle
    }

    pub(crate) fn as_ref(&self) -> ProcessRef {
        ProcessRef { vtable: self.vtable, handle: self.handle }
    }

    pub(crate) fn vtable(&self) -> &'static ProcessVTable {
        self.vtable
    }

    /// This process's pid (Cloud Haskell `getSelfPid`, Erlang `self()`).
    pub fn self_pid(&self) -> Pid {
        // SAFETY: `self` holds a strong reference to the handle.
        unsafe { (self.vtable.self_pid)(self.handle) }
    }

    /// Nanoseconds on the node's monotonic clock.
    pub(crate) fn now(&self) -> u64 {
        // SAFETY: `self` holds a strong reference to the handle.
        unsafe { (self.vtable.now)(self.handle) }
    }

    /// Sends `message` to `to`. Never blocks and never fails: a message to a
    /// dead process is dropped, as in Erlang. Messages from one process to
    /// another arrive in the order they were sent.
    pub fn send<M: Message>(&self, to: Pid, message: &M) {
        // SAFETY: `self` holds the handle; the message is valid for the call.
        outgoing(message, |message| unsafe { (self.vtable.send)(self.handle, to, message) });
    }

    /// Sends to the process registered as `name` (Cloud Haskell `nsend`,
    /// Erlang `Name ! Msg`); returns false if no process has the name.
    pub fn nsend<M: Message>(&self, name: &str, message: &M) -> bool {
        // SAFETY: `self` holds the handle; `name` and the message are valid
        // for the call.
        outgoing(message, |message| unsafe { (self.vtable.send_named)(self.handle, Str::new(name), message) })
    }

    /// Sends to the process registered as `name` on the node `node`
    /// (`name@host:port`; Erlang `{Name, Node} ! Msg`, Cloud Haskell
    /// `nsendRemote`), connecting to that node if need be. As Erlang's, it
    /// says nothing of delivery: with no such process there, or no
    /// connection to be had, the message is dropped (and counted in the
    /// node's `dist_counts`). This node's own name sends locally.
    pub fn nsend_on<M: Message>(&self, node: &str, name: &str, message: &M) {
        // SAFETY: `self` holds the handle; the names and the message are
        // valid for the call.
        outgoing(message, |message| unsafe {
            (self.vtable.nsend_on)(self.handle, Str::new(node), Str::new(name), message)
        });
    }

    /// Waits for the oldest message of type `M`, leaving every other message
    /// queued in order (Cloud Haskell `expect`).
    pub fn expect<M: Message>(&mut self) -> Expect<'_, M> {
        Expect::new(self, None)
    }

    /// [`expect`](Self::expect) that gives up after `timeout` with
    /// [`ReceiveError::Timeout`](crate::ReceiveError::Timeout) (Cloud
    /// Haskell `expectTimeout`).
    pub fn expect_timeout<M: Message>(&mut self, timeout: Duration) -> Expect<'_, M> {
        Expect::new(self, Some(timeout))
    }

    /// A receive with several arms (Cloud Haskell `receiveWait`, Erlang
    /// `receive`): add arms with [`Receive::on`] and [`Receive::on_if`], then
    /// await it. The oldest message that any arm accepts is taken; arms are
    /// tried in order for each message.
    pub fn receive<R>(&mut self) -> Receive<'_, R, NoArms> {
        Receive::new(self, None)
    }

    /// [`receive`](Self::receive) that gives up after `timeout` (Cloud
    /// Haskell `receiveTimeout`, Erlang `receive … after`).
    pub fn receive_timeout<R>(&mut self, timeout: Duration) -> Receive<'_, R, NoArms> {
        Receive::new(self, Some(timeout))
    }

    /// Starts a new process running `body` (Cloud Haskell `spawnLocal`).
    pub fn spawn<F, Fut>(&self, body: F) -> Pid
    where
        F: FnOnce(Process) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: IntoExitReason,
    {
        self.spawn_with(ProcessStart::new(body), SpawnOptions::default()).0
    }

    /// Starts a new process linked to this one (Erlang `spawn_link`).
    pub fn spawn_link<F, Fut>(&self, body: F) -> Pid
    where
        F: FnOnce(Process) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: IntoExitReason,
    {
        self.spawn_with(ProcessStart::new(body), SpawnOptions { link: true, monitor: false }).0
    }

    /// Starts a new process monitored by this one (Erlang `spawn_monitor`).
    pub fn spawn_monitor<F, Fut>(&self, body: F) -> (Pid, MonitorRef)
    where
        F: FnOnce(Process) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: IntoExitReason,
    {
        let (pid, monitor) = self.spawn_with(ProcessStart::new(body), SpawnOptions { link: false, monitor: true });
        (pid, monitor.expect("the core writes a monitor when one is asked for"))
    }

    /// Starts a prepared body with the given options; the one spawn primitive.
    pub fn spawn_with(&self, start: ProcessStart, options: SpawnOptions) -> (Pid, Option<MonitorRef>) {
        let mut monitor = MonitorRef { id: 0, target: self.self_pid() };
        // SAFETY: `self` holds the handle; `start` is handed over by value and
        // `monitor` is a valid place for the core to write.
        let pid = unsafe { (self.vtable.spawn)(self.handle, start, options, &mut monitor) };
        (pid, options.monitor.then_some(monitor))
    }

    /// Links this process and `to`: when either ends abnormally the other
    /// gets an exit signal. Linking to a dead process sends this process an
    /// exit signal with reason [`ExitReason::Noproc`].
    pub fn link(&self, to: Pid) {
        // SAFETY: `self` holds the handle.
        unsafe { (self.vtable.link)(self.handle, to) }
    }

    /// Removes the link to `to`, if any.
    pub fn unlink(&self, to: Pid) {
        // SAFETY: `self` holds the handle.
        unsafe { (self.vtable.unlink)(self.handle, to) }
    }

    /// Monitors `target`: a [`Down`](crate::Down) message arrives when it
    /// ends, at once with [`ExitReason::Noproc`] if it is not alive.
    pub fn monitor(&self, target: Pid) -> MonitorRef {
        // SAFETY: `self` holds the handle.
        unsafe { (self.vtable.monitor)(self.handle, target) }
    }

    /// Monitors the process registered as `name` now (Erlang
    /// `monitor(process, Name)`): its `Down` comes when that process ends,
    /// even if the name moves on. If no process has the name, a `Down` with
    /// [`ExitReason::Noproc`] arrives at once, whose pid is one no process
    /// ever had (serial 0 of this node).
    pub fn monitor_name(&self, name: &str) -> MonitorRef {
        let nobody = Pid { serial: 0, ..self.self_pid() };
        self.monitor(self.whereis(name).unwrap_or(nobody))
    }

    /// Removes a monitor this process holds (Erlang `demonitor/1`): once
    /// this returns, no `Down` of it arrives. True if it was active; false
    /// if its `Down` is already queued (it stays queued: see
    /// [`demonitor_flush`](Self::demonitor_flush)) or it is not this
    /// process's monitor (another process's monitor is left alone).
    pub fn demonitor(&self, monitor: MonitorRef) -> bool {
        // SAFETY: `self` holds the handle.
        unsafe { (self.vtable.demonitor)(self.handle, monitor) }
    }

    /// [`demonitor`](Self::demonitor), and a `Down` of it already queued is
    /// taken out too (Erlang `demonitor(Ref, [flush])`).
    pub async fn demonitor_flush(&mut self, monitor: MonitorRef) {
        if !self.demonitor(monitor) {
            let flushed = self.receive_timeout(Duration::ZERO).on_if(move |down: &Down| down.monitor == monitor, drop);
            let _ = flushed.await;
        }
    }

    /// Sends `to` an exit signal (Erlang `exit/2`): a process that traps
    /// exits gets an [`Exit`](crate::Exit) message; otherwise it ends with
    /// `reason`, unless `reason` is [`ExitReason::Normal`].
    ///
    /// A signal that ends this very process (`exit(self_pid, reason)`
    /// without trapping exits) ends it at once, as in Erlang: the call does
    /// not return, nothing after it runs (the body unwinds, its drops run),
    /// and the process's reason is `reason`.
    pub fn exit(&self, to: Pid, reason: ExitReason) {
        let status = with_encoded(&reason, |bytes| {
            // SAFETY: `self` holds the handle; `bytes` is valid for the call.
            unsafe { (self.vtable.exit)(self.handle, to, bytes.as_ptr(), bytes.len()) }
        });
        end_if_ended(status);
    }

    /// Kills `to` with reason [`ExitReason::Killed`]; cannot be trapped
    /// (Erlang `exit(Pid, kill)`). `kill(self_pid)` ends this process at
    /// once: the call does not return.
    pub fn kill(&self, to: Pid) {
        // SAFETY: `self` holds the handle.
        let status = unsafe { (self.vtable.kill)(self.handle, to) };
        end_if_ended(status);
    }

    /// Sets whether exit signals arrive as [`Exit`](crate::Exit) messages
    /// instead of ending this process (Erlang
    /// `process_flag(trap_exit, Trap)`); returns the previous setting.
    pub fn trap_exit(&self, trap: bool) -> bool {
        // SAFETY: `self` holds the handle.
        unsafe { (self.vtable.trap_exit)(self.handle, trap) }
    }

    /// Registers `name` for `pid` on this node; the name goes away when the
    /// process ends.
    ///
    /// # Errors
    /// When the name is taken by a live process, the process already has a
    /// name, or it is not alive.
    pub fn register(&self, name: &str, pid: Pid) -> Result<(), RegisterError> {
        let mut holder = pid;
        // SAFETY: `self` holds the handle; `name` is valid for the call and
        // `holder` is a valid place to write.
        let status = unsafe { (self.vtable.register)(self.handle, Str::new(name), pid, &mut holder) };
        match status {
            RegisterStatus::Registered => Ok(()),
            RegisterStatus::NameTaken => Err(RegisterError::NameTaken { name: name.to_owned(), holder }),
            RegisterStatus::AlreadyRegistered => Err(RegisterError::AlreadyRegistered { pid }),
            RegisterStatus::Noproc => Err(RegisterError::Noproc { pid }),
            RegisterStatus::BadName => Err(RegisterError::BadName),
        }
    }

    /// Removes a registered name; false if nobody had it.
    pub fn unregister(&self, name: &str) -> bool {
        // SAFETY: `self` holds the handle; `name` is valid for the call.
        unsafe { (self.vtable.unregister)(self.handle, Str::new(name)) }
    }

    /// The process registered as `name` on this node, if any.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        let mut pid = self.self_pid();
        // SAFETY: `self` holds the handle; `name` is valid and `pid` writable.
        let found = unsafe { (self.vtable.whereis)(self.handle, Str::new(name), &mut pid) };
        found.then_some(pid)
    }

    /// The process registered as `name` on the node `node` (Cloud Haskell
    /// `whereisRemoteAsync`, Erlang `rpc:call(Node, erlang, whereis,
    /// [Name])`), connecting to it if need be; waits for the answer, taking
    /// only it from the mailbox.
    ///
    /// # Errors
    /// Why the node could not answer: it is not reachable, or went down
    /// before it did.
    pub async fn whereis_on(&mut self, node: &str, name: &str) -> Result<Option<Pid>, crate::NodeDownReason> {
        // SAFETY: `self` holds the handle; the names are valid for the call.
        let request = unsafe { (self.vtable.whereis_on)(self.handle, Str::new(node), Str::new(name)) };
        // The core answers every request: from the node, or when the node
        // is declared down.
        match self.receive().on_if(move |reply: &WhereisReply| reply.request == request, |reply| reply.pid).await {
            Ok(pid) => pid,
            Err(error) => Err(crate::NodeDownReason::ProtocolError(error.to_string())),
        }
    }

    /// Monitors the node `node` (Erlang `monitor_node(Node, true)`, Cloud
    /// Haskell `monitorNode`): a [`NodeDown`](crate::NodeDown) comes when
    /// the connection to it is lost, or at once if none can be made. It
    /// connects if need be. Each call is one monitor, with its own
    /// `NodeDown`; a process that ends takes its monitors with it.
    pub fn monitor_node(&self, node: &str) {
        // SAFETY: `self` holds the handle; `node` is valid for the call.
        unsafe { (self.vtable.monitor_node)(self.handle, Str::new(node)) }
    }

    /// Removes one of this process's monitors of `node` (Erlang
    /// `monitor_node(Node, false)` removes them all: call this until it
    /// returns false); false if there was none. Once it returns, that
    /// monitor sends no `NodeDown`.
    pub fn demonitor_node(&self, node: &str) -> bool {
        // SAFETY: `self` holds the handle; `node` is valid for the call.
        unsafe { (self.vtable.demonitor_node)(self.handle, Str::new(node)) }
    }

    /// Waits for `duration` on the node's clock; other processes run meanwhile.
    pub fn sleep(&mut self, duration: Duration) -> Sleep<'_> {
        Sleep { process: self, duration, deadline: None }
    }

    /// Delivers `message` to `to` after `delay` (Erlang `erlang:send_after/3`).
    /// The timer is cancelled if `to`, a process of this node, ends first;
    /// `to` may be a process of another node (as Cloud Haskell's
    /// `sendAfter`; Erlang refuses one), which the message is sent to when
    /// the timer fires.
    pub fn send_after<M: Message>(&self, delay: Duration, to: Pid, message: &M) -> TimerRef {
        // SAFETY: `self` holds the handle; the message is valid for the call.
        outgoing(message, |message| unsafe { (self.vtable.send_after)(self.handle, nanos(delay), to, message) })
    }

    /// Delivers `message` after `delay` to the process registered as `name`
    /// at that time (Erlang `erlang:send_after/3` to an atom: looked up at
    /// delivery; nothing happens if no process has the name then).
    pub fn send_after_named<M: Message>(&self, delay: Duration, name: &str, message: &M) -> TimerRef {
        // SAFETY: `self` holds the handle; `name` and the message are valid
        // for the call.
        outgoing(message, |message| unsafe {
            (self.vtable.send_after_named)(self.handle, nanos(delay), Str::new(name), message)
        })
    }

    /// Starts a new process running `module:entry` of the module's current
    /// version, with `argument` as its start state (Erlang
    /// `spawn(Module, Function, Args)`).
    ///
    /// # Errors
    /// When the module is not loaded or has no such entry; nothing starts.
    pub fn spawn_entry<S: serde::Serialize>(&self, module: &str, entry: &str, argument: &S) -> Result<Pid, SpawnError> {
        self.spawn_entry_with(module, entry, argument, SpawnOptions::default()).map(|(pid, _)| pid)
    }

    /// [`spawn_entry`](Self::spawn_entry) that also links and/or monitors.
    ///
    /// # Errors
    /// As for [`spawn_entry`](Self::spawn_entry).
    pub fn spawn_entry_with<S: serde::Serialize>(
        &self,
        module: &str,
        entry: &str,
        argument: &S,
        options: SpawnOptions,
    ) -> Result<(Pid, Option<MonitorRef>), SpawnError> {
        let mut pid = self.self_pid();
        let mut monitor = MonitorRef { id: 0, target: pid };
        let mut error = Vec::new();
        let status = with_encoded(argument, |bytes| {
            // SAFETY: `self` holds the handle; the strings, `bytes` and the
            // sink's buffer are valid for the call; `pid` and `monitor` are
            // writable.
            unsafe {
                (self.vtable.spawn_entry)(
                    self.handle,
                    Str::new(module),
                    Str::new(entry),
                    bytes.as_ptr(),
                    bytes.len(),
                    options,
                    &mut pid,
                    &mut monitor,
                    Sink::of(&mut error),
                )
            }
        });
        match status {
            SpawnStatus::Spawned => Ok((pid, options.monitor.then_some(monitor))),
            SpawnStatus::Refused => Err(postcard::from_bytes(&error).unwrap_or(SpawnError::ShuttingDown)),
        }
    }

    /// [`spawn_entry_with`](Self::spawn_entry_with) on the node `node`
    /// (`name@host:port`; Erlang `spawn(Node, Module, Function, Args)` and
    /// its link and monitor variants), connecting to it if need be; the
    /// module must be loaded there. Waits for the answer, taking only it
    /// from the mailbox. A link or monitor asked for is in place before the
    /// new process runs: if it ends at once, the `Exit` or `Down` still
    /// comes, with its reason. This node's own name spawns locally.
    ///
    /// # Errors
    /// As [`spawn_entry`](Self::spawn_entry) there, or
    /// [`SpawnError::NoConnection`] when the node cannot be reached or goes
    /// down before it answers.
    pub async fn spawn_entry_on<S: serde::Serialize>(
        &mut self,
        node: &str,
        module: &str,
        entry: &str,
        argument: &S,
        options: SpawnOptions,
    ) -> Result<(Pid, Option<MonitorRef>), SpawnError> {
        let mut monitor = 0;
        let request = with_encoded(argument, |bytes| {
            // SAFETY: `self` holds the handle; the strings and `bytes` are
            // valid for the call (the core copies them); `monitor` is
            // writable.
            unsafe {
                (self.vtable.spawn_entry_on)(
                    self.handle,
                    Str::new(node),
                    Str::new(module),
                    Str::new(entry),
                    bytes.as_ptr(),
                    bytes.len(),
                    options,
                    &mut monitor,
                )
            }
        });
        // The core answers every request: from the node, or when the node
        // is declared down.
        let reply = self.receive().on_if(move |reply: &SpawnReply| reply.request == request, |reply| reply.pid).await;
        let pid = reply.map_err(|error| SpawnError::BadArgument { reason: error.to_string() })??;
        Ok((pid, options.monitor.then_some(MonitorRef { id: monitor, target: pid })))
    }

    /// Leaves the code the process is running and continues in `entry` of
    /// its module's current version with `state`: Erlang's
    /// `?MODULE:entry(State)`, the seed's upgrade. If the current version is
    /// a different one, its `migrate` first turns `state` into its own; if
    /// that fails, the process goes on in `entry` of the version it was
    /// running, with `state` unchanged, and the failure is logged. The pid,
    /// the mailbox (every queued message, in order), links, monitors and
    /// registered name stay. Never returns; a process compiled into the host
    /// (no module) that calls it ends with an error reason.
    ///
    /// # Panics
    /// When called anywhere but in the process's own body while it runs
    /// (from another thread, or inside a receive's predicate): the panic
    /// ends the process with that reason.
    pub fn hot_call<'p, S: serde::Serialize>(&'p mut self, entry: &str, state: &S) -> HotCall<'p> {
        let status = with_encoded(state, |bytes| {
            // SAFETY: `self` holds the handle; `entry` and `bytes` are valid
            // for the call (the core copies them).
            unsafe { (self.vtable.hot_call)(self.handle, Str::new(entry), bytes.as_ptr(), bytes.len()) }
        });
        if status != HotCallStatus::Accepted {
            panic!(
                "hot_call made outside the process's own body (from another thread or task, or inside a \
                 receive's predicate); only the process itself can switch its code, at a safe point of its body"
            );
        }
        HotCall { _process: self }
    }

    /// Cancels a `send_after`: the time it had left, or `None` if the
    /// message was sent already (or the timer cancelled), as Erlang's
    /// `cancel_timer` returns the time left or `false`.
    pub fn cancel_timer(&self, timer: TimerRef) -> Option<Duration> {
        // SAFETY: `self` holds the handle.
        let left = unsafe { (self.vtable.cancel_timer)(self.handle, timer) };
        (left != NO_DEADLINE).then(|| Duration::from_nanos(left))
    }

    /// A deadline `timeout` from now on the node's clock.
    pub(crate) fn deadline_after(&self, timeout: Duration) -> u64 {
        self.now().saturating_add(nanos(timeout))
    }
}

/// The future of [`Process::hot_call`]: never completes; the core replaces
/// the body that awaits it as soon as it yields.
#[derive(Debug)]
#[must_use = "a hot call happens when it is awaited"]
pub struct HotCall<'p> {
    _process: &'p mut Process,
}

impl Future for HotCall<'_> {
    type Output = crate::Never;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<crate::Never> {
        // The core switches code when the body returns Pending.
        Poll::Pending
    }
}

/// The future of [`Process::sleep`].
#[derive(Debug)]
#[must_use = "a sleep does nothing unless awaited"]
pub struct Sleep<'p> {
    process: &'p mut Process,
    duration: Duration,
    deadline: Option<u64>,
}

impl Future for Sleep<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = match self.deadline {
            Some(deadline) => deadline,
            None => {
                let deadline = self.process.deadline_after(self.duration);
                self.deadline = Some(deadline);
                deadline
            }
        };
        let process = &*self.process;
        // SAFETY: `process` holds the handle.
        let status = unsafe { (process.vtable.sleep_until)(process.handle, deadline) };
        match status {
            ReceiveStatus::Pending => {
                crate::body::relay_if_foreign(cx.waker());
                Poll::Pending
            }
            ReceiveStatus::NotOwner => not_owner(),
            ReceiveStatus::Matched | ReceiveStatus::TimedOut => Poll::Ready(()),
        }
    }
}

/// A receive or sleep awaited outside the process's own body, or inside
/// another receive's predicate.
pub(crate) fn not_owner() -> ! {
    panic!(
        "a Process received or slept outside its own body (it was moved into another task or thread) \
         or inside another receive's predicate; only a process itself may receive its messages, one \
         receive at a time: spawn a process for the other work"
    )
}

pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX - 1)
}

/// Runs `f` on `value`'s postcard bytes, encoded on the stack when small.
///
/// # Panics
/// When the value's `Serialize` implementation fails, which serde's derive
/// never does; the panic ends only the calling process.
pub(crate) fn with_encoded<T: serde::Serialize, R>(value: &T, f: impl FnOnce(&[u8]) -> R) -> R {
    let mut buffer = [0u8; 64];
    match postcard::to_slice(value, &mut buffer) {
        Ok(bytes) => f(bytes),
        Err(postcard::Error::SerializeBufferFull) => match postcard::to_allocvec(value) {
            Ok(bytes) => f(&bytes),
            Err(error) => panic!("a message could not be encoded: {error}"),
        },
        Err(error) => panic!("a message could not be encoded: {error}"),
    }
}

/// The unwinding that ends a process whose own `exit` or `kill` ended it:
/// the core has recorded its reason, so the body only has to stop.
#[derive(Debug)]
struct EndedBySignal;

fn end_if_ended(status: u8) {
    // Only from inside the body's poll, and not while it already unwinds (a
    // second unwind would abort the OS process): from a drop, the process
    // is ending anyway, and the core ignores what it does next.
    if status == crate::contract::ENDED_CALLER && crate::body::polling() && !std::thread::panicking() {
        // `resume_unwind`, not `panic!`: no panic hook runs, and the body's
        // catch finds the reason already recorded (the first one wins).
        std::panic::resume_unwind(Box::new(EndedBySignal));
    }
}
