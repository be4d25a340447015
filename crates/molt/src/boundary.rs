//! The core's side of the C contract: the one [`ProcessVTable`] through
//! which every process — compiled into the host or loaded from a module —
//! reaches its node, and the conversions between handles and
//! [`ProcessCtx`].
//!
//! This is the only file of the core with `unsafe` code. Its invariants:
//! - a handle is `Arc::into_raw(Arc<ProcessCtx>)`; each [`Process`] owns one
//!   such strong reference and gives it back through `release`, so a handle
//!   passed to any vtable function points at a live `ProcessCtx`;
//! - pointers and lengths passed in are valid for the call (the caller's
//!   half of the contract); nothing borrowed is kept past the call;
//! - no function here unwinds: core code does not panic on any input, and if
//!   it did, `extern "C"` turns the unwind into an abort instead of undefined
//!   behaviour.

#![allow(unsafe_code)]

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Waker};
use std::time::Duration;

use async_ffi::FfiFuture;
use molt_abi::contract::{
    ABI_VERSION, BlockingJob, HotCallStatus, MATCH_TAKE, Outgoing, ProcessHandle, ProcessStart, ProcessVTable,
    ReceiveRequest, ReceiveStatus, RegisterStatus, SpawnOptions, SpawnStatus, Str, borrowed,
};
use molt_abi::module::Sink;
use molt_abi::{Envelope, ExitReason, MonitorRef, Payload, Pid, Process, RegisterError, SpawnError, TimerRef};

use crate::node::Parent;
use crate::process::{ProcessCtx, TaskLocal};
use crate::signal::Signal;
use crate::timer::TimerTarget;

static VTABLE: ProcessVTable = ProcessVTable {
    abi_version: ABI_VERSION,
    release,
    self_pid,
    now,
    send,
    send_named,
    receive,
    sleep_until,
    spawn,
    link,
    unlink,
    monitor,
    demonitor,
    exit,
    kill,
    trap_exit,
    register,
    unregister,
    whereis,
    send_after,
    send_after_named,
    cancel_timer,
    set_exit_reason,
    hot_call,
    spawn_entry,
    blocking,
    retain,
    wake,
    nsend_on,
    whereis_on,
    monitor_node,
    demonitor_node,
    spawn_entry_on,
};

/// What a process's task lends the core during one poll of its body: the
/// process, the task's waker, and its task-local state (null while a vtable
/// call is using it).
type Lent = (*const ProcessCtx, *const Waker, *mut TaskLocal);

thread_local! {
    /// The process whose task this thread is polling, that task's waker and
    /// its task-local state. No destructor; null when not polling.
    static POLLING: Cell<Lent> = const { Cell::new((std::ptr::null(), std::ptr::null(), std::ptr::null_mut())) };
}

/// Runs `poll` (one poll of `ctx`'s body, or the drop of it) with `ctx`'s
/// task waker and task-local state lent to the vtable functions the body
/// calls.
pub(crate) fn polling<R>(
    ctx: &ProcessCtx,
    local: &mut TaskLocal,
    cx: &mut Context<'_>,
    poll: impl FnOnce(&mut Context<'_>) -> R,
) -> R {
    struct Restore(Lent);
    impl Drop for Restore {
        fn drop(&mut self) {
            POLLING.with(|polling| polling.set(self.0));
        }
    }
    let lent = (std::ptr::from_ref(ctx), std::ptr::from_ref(cx.waker()), std::ptr::from_mut(local));
    let _restore = Restore(POLLING.with(|polling| polling.replace(lent)));
    poll(cx)
}

/// Runs `f` with `ctx`'s task waker and task-local state if `ctx`'s body is
/// being polled on this thread and no other vtable call of it is using them
/// (a receive's matcher that receives again, through a stale `Process` of the
/// same process, finds them taken); `None` otherwise.
fn with_lent<R>(ctx: &ProcessCtx, f: impl FnOnce(&Waker, &mut TaskLocal) -> R) -> Option<R> {
    struct GiveBack(*mut TaskLocal);
    impl Drop for GiveBack {
        fn drop(&mut self) {
            POLLING.with(|polling| {
                let (ctx, waker, _) = polling.get();
                polling.set((ctx, waker, self.0));
            });
        }
    }
    let (polled, waker, local) = POLLING.with(Cell::get);
    if !std::ptr::eq(polled, ctx) || local.is_null() {
        return None;
    }
    // Taken out for this call: a nested call finds null and is refused, so
    // the `&mut` below is the only one.
    POLLING.with(|polling| polling.set((polled, waker, std::ptr::null_mut())));
    let _give_back = GiveBack(local);
    // SAFETY: `polling` lent these for the poll of `ctx` running on this
    // thread right now, and restores the record when that poll returns; this
    // call is inside that poll. The `TaskLocal` is borrowed by nothing else:
    // the task lent its only `&mut` and is inside `poll`, and the pointer was
    // taken out of the record above, so no nested vtable call can reach it
    // until this one gives it back.
    let (waker, local) = unsafe { (&*waker, &mut *local) };
    Some(f(waker, local))
}

/// A new `Process` value for `ctx`: what a body is started with.
pub(crate) fn process_for(ctx: &Arc<ProcessCtx>) -> Process {
    let handle: ProcessHandle = Arc::into_raw(ctx.clone()).cast();
    // SAFETY: `handle` is a fresh strong reference, handed to the `Process`
    // (which releases it on drop); `VTABLE` is a static.
    unsafe { Process::from_raw(&VTABLE, handle) }
}

/// Starts `start`'s body for the new process `ctx`. The caller holds the
/// version `start` belongs to (if any) for as long as the future lives.
pub(crate) fn start(ctx: &Arc<ProcessCtx>, start: ProcessStart) -> FfiFuture<()> {
    let process = process_for(ctx);
    // SAFETY: the code that made `start` is the host's or a version that the
    // caller attributed it to by address and keeps open for the future's
    // life; the future is the body of `ctx`, which its task keeps alive.
    unsafe { start.start(process) }
}

/// The code name a body carries, copied by the caller.
pub(crate) fn code_str(start: &ProcessStart) -> &str {
    // SAFETY: the string lives as long as the code that made the body, which
    // stays loaded while its `ProcessStart` exists (the caller holds the
    // start, and its version if it has one); the borrow ends with `start`'s.
    unsafe { start.code_name() }
}

/// The process behind a handle.
///
/// # Safety
/// `handle` must be a live handle (see the module docs).
unsafe fn ctx<'a>(handle: ProcessHandle) -> &'a ProcessCtx {
    // SAFETY: the caller passes a handle made by `start`, whose strong
    // reference the calling `Process` still holds for the call's duration.
    unsafe { &*handle.cast::<ProcessCtx>() }
}

/// The envelope of a message being sent, written by its sender's code;
/// `None` if it could not be encoded (the sender then panics). In line:
/// returned from a call, the envelope was written to the stack a word at a
/// time and read back at once in wider loads, which stalls (half of a
/// send's time in the core, perf).
///
/// # Safety
/// `message` must be one passed to the running vtable call.
#[inline(always)]
unsafe fn envelope(message: Outgoing) -> Option<Envelope> {
    if !message.bytes.is_null() {
        // SAFETY: the sender's bytes, valid for the call (forwarded from
        // the caller).
        let bytes = unsafe { borrowed(message.bytes, message.len) };
        return Some(Envelope { tag: message.tag, shape: message.shape, payload: small_copy(bytes) });
    }
    // SAFETY: forwarded from the caller.
    unsafe { encoded_envelope(message) }
}

/// [`envelope`] of a message its sender's code writes through a sink.
///
/// # Safety
/// As for [`envelope`].
#[cold]
#[inline(never)]
unsafe fn encoded_envelope(message: Outgoing) -> Option<Envelope> {
    let mut payload = Payload::new();
    // SAFETY: the sender's `encode` and `env` are valid for the call that
    // passed them, which is running (forwarded from the caller); the sink
    // appends to `payload`, alive until after `encode` returns. The sender
    // catches its own panics.
    let encoded = unsafe { (message.encode)(message.env, Sink::of(&mut payload)) };
    // Grown in pieces, a big payload may have up to twice the room it
    // needs; a queued message keeps only what it uses.
    if payload.spilled() && payload.capacity() - payload.len() > payload.len() / 8 {
        payload.shrink_to_fit();
    }
    encoded.then(|| Envelope { tag: message.tag, shape: message.shape, payload })
}

/// A payload holding a copy of `bytes`. What fits inline is read with a
/// few fixed-size loads, put together in registers and stored a word at a
/// time: a call to libc's `memcpy` for ten bytes took 7% of a local round
/// trip's time, and bytes copied onto the stack in small pieces and read
/// back whole stall the load (perf). (The SDK's `copy_small` copies in
/// place, into the sender's buffer; this one makes a value that is moved
/// on at once, so it puts the words together in registers.)
#[inline(always)]
fn small_copy(bytes: &[u8]) -> Payload {
    let len = bytes.len();
    // Two overlapping reads of a fixed size cover every length between
    // them (as `memcpy` itself does for small sizes); the overlap holds the
    // same bytes in both, so or-ing them is exact.
    let u32_at = |at: usize| u64::from(u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")));
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let words: [u64; 3] = match len {
        0 => [0; 3],
        1..4 => {
            let (first, middle, last) = (u64::from(bytes[0]), u64::from(bytes[len / 2]), u64::from(bytes[len - 1]));
            [first | middle << (8 * (len / 2)) | last << (8 * (len - 1)), 0, 0]
        }
        4..8 => [u32_at(0) | u32_at(len - 4) << (8 * (len - 4)), 0, 0],
        8 => [u64_at(0), 0, 0],
        9..=16 => [u64_at(0), u64_at(len - 8) >> (8 * (16 - len)), 0],
        17..=INLINE => [u64_at(0), u64_at(8), u64_at(len - 8) >> (8 * (INLINE - len))],
        _ => return Payload::from_slice(bytes),
    };
    let mut inline = [0u8; INLINE];
    for (place, word) in inline.chunks_exact_mut(8).zip(words) {
        place.copy_from_slice(&word.to_le_bytes());
    }
    Payload::from_buf_and_len(inline, len)
}

/// The bytes a [`Payload`] holds without allocating.
const INLINE: usize = 24;

/// # Safety
/// As for [`borrowed`].
unsafe fn exit_reason(ptr: *const u8, len: usize) -> ExitReason {
    // SAFETY: forwarded from the caller.
    let bytes = unsafe { borrowed(ptr, len) };
    postcard::from_bytes(bytes)
        .unwrap_or_else(|error| ExitReason::Error(format!("an exit reason that did not decode ({error})")))
}

unsafe extern "C" fn release(handle: ProcessHandle) {
    // SAFETY: the caller gives back the strong reference its `Process` owned.
    drop(unsafe { Arc::from_raw(handle.cast::<ProcessCtx>()) });
}

unsafe extern "C" fn self_pid(handle: ProcessHandle) -> Pid {
    // SAFETY: a live handle, per the contract.
    unsafe { ctx(handle) }.pid
}

unsafe extern "C" fn now(handle: ProcessHandle) -> u64 {
    // SAFETY: a live handle, per the contract.
    unsafe { ctx(handle) }.node.now()
}

unsafe extern "C" fn send(handle: ProcessHandle, to: Pid, message: Outgoing) {
    // SAFETY: a live handle, per the contract.
    let ctx = unsafe { ctx(handle) };
    if ended_itself(ctx) {
        return;
    }
    // Made before the task-local state is lent: the sender's `Serialize`
    // (which `envelope` may call) runs as any of its code does, its own
    // calls into the core working as they would anywhere in its body.
    // SAFETY: a valid message, per the contract.
    let Some(envelope) = (unsafe { envelope(message) }) else { return };
    // Through the task's send cache when the process's own body sends.
    let mut envelope = Some(envelope);
    let _ = with_lent(ctx, |_, local| {
        if let Some(envelope) = envelope.take()
            && let Some(backlog) = local.send(&ctx.node, ctx.pid, to, envelope)
        {
            pause(ctx, local, backlog);
        }
    });
    if let Some(envelope) = envelope {
        ctx.node.send(Some(ctx.pid), to, envelope);
    }
}

/// A send of `ctx` took a peer's `backlog` over its bound: the process
/// pauses before its next poll until it drains.
fn pause(ctx: &ProcessCtx, local: &mut TaskLocal, pause: crate::dist::Pause) {
    local.paused = true;
    let mut signals = ctx.signals();
    let paused_on = &mut signals.relations().paused_on;
    *paused_on = Some(pause.longer(paused_on.take()));
}

unsafe extern "C" fn send_named(handle: ProcessHandle, name: Str, message: Outgoing) -> bool {
    // SAFETY: a live handle and valid buffers, per the contract.
    let (ctx, name) = unsafe { (ctx(handle), name.as_str()) };
    if ended_itself(ctx) {
        return false;
    }
    match ctx.node.whereis(name) {
        Some(to) => {
            // SAFETY: a valid message, per the contract.
            if let Some(envelope) = unsafe { envelope(message) } {
                ctx.node.send(Some(ctx.pid), to, envelope);
            }
            true
        }
        None => false,
    }
}

unsafe extern "C" fn receive(handle: ProcessHandle, request: *mut ReceiveRequest) -> ReceiveStatus {
    // SAFETY: a live handle and an exclusive request for the call, per the
    // contract.
    let (ctx, request) = unsafe { (ctx(handle), &mut *request) };
    // SAFETY: the request's tags are valid for the call (none may come with
    // a null pointer).
    let tags = unsafe { borrowed(request.tags, request.tag_count) };
    // A process that ended itself takes nothing more: it is aborted at the
    // yield this makes.
    if ended_itself(ctx) {
        return ReceiveStatus::Pending;
    }
    let (matcher, env) = (request.matcher, request.env);
    let received = with_lent(ctx, |waker, local| {
        ctx.receive(
            local,
            tags,
            &mut request.cursor,
            request.deadline,
            |envelope| {
                let (tag, shape, payload) = (envelope.tag, envelope.shape, &envelope.payload);
                // SAFETY: `env` belongs to `matcher` (the caller made them
                // together) and the payload is live for this call; the
                // matcher catches its own panics. Its answer is a `u8`,
                // compared, never trusted to be a valid `bool`.
                unsafe { matcher(env, tag, shape, payload.as_ptr(), payload.len()) == MATCH_TAKE }
            },
            &mut Context::from_waker(waker),
        )
    });
    received.unwrap_or(ReceiveStatus::NotOwner)
}

unsafe extern "C" fn sleep_until(handle: ProcessHandle, deadline: u64) -> ReceiveStatus {
    // SAFETY: a live handle, per the contract.
    let ctx = unsafe { ctx(handle) };
    match with_lent(ctx, |waker, local| ctx.sleep(local, deadline, &mut Context::from_waker(waker))) {
        Some(true) => ReceiveStatus::TimedOut,
        Some(false) => ReceiveStatus::Pending,
        None => ReceiveStatus::NotOwner,
    }
}

unsafe extern "C" fn spawn(
    handle: ProcessHandle,
    start: ProcessStart,
    options: SpawnOptions,
    monitor: *mut MonitorRef,
) -> Pid {
    // SAFETY: a live handle, per the contract.
    let ctx = unsafe { ctx(handle) };
    let (pid, made) = ctx.node.spawn(start, Some(ctx), options);
    if let Some(made) = made {
        // SAFETY: the caller passes a writable `MonitorRef`.
        unsafe { monitor.write(made) };
    }
    pid
}

unsafe extern "C" fn link(handle: ProcessHandle, to: Pid) {
    // SAFETY: a live handle, per the contract.
    let ctx = unsafe { ctx(handle) };
    if to == ctx.pid || ended_itself(ctx) {
        return;
    }
    {
        // A process that ended (its `Process` used from elsewhere) links
        // nothing: its relations were already told.
        let mut signals = ctx.signals();
        if !signals.alive {
            return;
        }
        signals.relations().links.insert(to);
    }
    // If `to` is gone this answers with a `noproc` exit signal.
    ctx.node.signal(to, Signal::Link { from: ctx.pid });
}

unsafe extern "C" fn unlink(handle: ProcessHandle, to: Pid) {
    // SAFETY: a live handle, per the contract.
    let ctx = unsafe { ctx(handle) };
    // From here on no exit signal of the link reaches this process: one is
    // delivered only while the link is in this set, under the same lock.
    ctx.signals().relations().links.remove(&to);
    ctx.node.signal(to, Signal::Unlink { from: ctx.pid });
}

unsafe extern "C" fn monitor(handle: ProcessHandle, target: Pid) -> MonitorRef {
    // SAFETY: a live handle, per the contract.
    let ctx = unsafe { ctx(handle) };
    let id = ctx.node.new_ref();
    {
        // A process that ended monitors nothing (see `link`).
        let mut signals = ctx.signals();
        if !signals.alive || ended_itself(ctx) {
            return MonitorRef { id, target };
        }
        signals.relations().monitoring.insert(id, target);
    }
    ctx.node.signal(target, Signal::Monitor { id, watcher: ctx.pid });
    MonitorRef { id, target }
}

unsafe extern "C" fn demonitor(handle: ProcessHandle, monitor: MonitorRef) -> bool {
    // SAFETY: a live handle, per the contract.
    let ctx = unsafe { ctx(handle) };
    // Only the holder's own monitors; once this returns no `Down` of it
    // comes (see `Relations::monitoring`).
    let held = {
        let mut signals = ctx.signals();
        let monitoring = &mut signals.relations().monitoring;
        let held = monitoring.remove(&monitor.id);
        crate::process::shrink_map_if_sparse(monitoring);
        held
    };
    if let Some(target) = held {
        ctx.node.signal(target, Signal::Demonitor { id: monitor.id, watcher: ctx.pid });
    }
    held.is_some()
}

unsafe extern "C" fn exit(handle: ProcessHandle, to: Pid, ptr: *const u8, len: usize) -> u8 {
    // SAFETY: a live handle, per the contract.
    if ended_itself(unsafe { ctx(handle) }) {
        return 0;
    }
    // SAFETY: a live handle and a valid buffer, per the contract.
    let (ctx, reason) = unsafe { (ctx(handle), exit_reason(ptr, len)) };
    ctx.node.signal(to, Signal::Exit { from: ctx.pid, reason, linked: false });
    ended_caller(ctx, to)
}

unsafe extern "C" fn kill(handle: ProcessHandle, to: Pid) -> u8 {
    // SAFETY: a live handle, per the contract.
    let ctx = unsafe { ctx(handle) };
    if ended_itself(ctx) {
        return 0;
    }
    ctx.node.signal(to, Signal::Kill { from: ctx.pid });
    ended_caller(ctx, to)
}

/// Whether a signal to `to` just ended the calling process, called from
/// its own body (a `Process` used elsewhere ends at its body's next yield).
/// From then on the process's calls have no effect (see `ended_itself`).
fn ended_caller(ctx: &ProcessCtx, to: Pid) -> u8 {
    let ended = to == ctx.pid && ctx.signals().exit_reason.is_some();
    if !ended {
        return 0;
    }
    ctx.ended_itself.store(true, Ordering::Release);
    if with_lent(ctx, |_, _| ()).is_some() { molt_abi::contract::ENDED_CALLER } else { 0 }
}

/// Whether the calling process ended itself (its calls then do nothing).
fn ended_itself(ctx: &ProcessCtx) -> bool {
    ctx.ended_itself.load(Ordering::Acquire)
}

unsafe extern "C" fn trap_exit(handle: ProcessHandle, trap: bool) -> bool {
    // SAFETY: a live handle, per the contract.
    std::mem::replace(&mut unsafe { ctx(handle) }.signals().trap_exit, trap)
}

unsafe extern "C" fn register(handle: ProcessHandle, name: Str, pid: Pid, holder: *mut Pid) -> RegisterStatus {
    // SAFETY: a live handle and a valid name, per the contract.
    let (ctx, name) = unsafe { (ctx(handle), name.as_str()) };
    if ended_itself(ctx) {
        return RegisterStatus::Noproc;
    }
    match ctx.node.register(name, pid) {
        Ok(()) => RegisterStatus::Registered,
        Err(RegisterError::NameTaken { holder: taken_by, .. }) => {
            // SAFETY: the caller passes a writable `Pid`.
            unsafe { holder.write(taken_by) };
            RegisterStatus::NameTaken
        }
        Err(RegisterError::AlreadyRegistered { .. }) => RegisterStatus::AlreadyRegistered,
        Err(RegisterError::Noproc { .. }) => RegisterStatus::Noproc,
        Err(_) => RegisterStatus::BadName,
    }
}

unsafe extern "C" fn unregister(handle: ProcessHandle, name: Str) -> bool {
    // SAFETY: a live handle and a valid name, per the contract.
    let (ctx, name) = unsafe { (ctx(handle), name.as_str()) };
    !ended_itself(ctx) && ctx.node.unregister(name)
}

unsafe extern "C" fn whereis(handle: ProcessHandle, name: Str, pid: *mut Pid) -> bool {
    // SAFETY: a live handle and a valid name, per the contract.
    let (ctx, name) = unsafe { (ctx(handle), name.as_str()) };
    match ctx.node.whereis(name) {
        Some(found) => {
            // SAFETY: the caller passes a writable `Pid`.
            unsafe { pid.write(found) };
            true
        }
        None => false,
    }
}

unsafe extern "C" fn nsend_on(handle: ProcessHandle, node: Str, name: Str, message: Outgoing) {
    // SAFETY: a live handle and valid buffers, per the contract.
    let (ctx, node, name) = unsafe { (ctx(handle), node.as_str(), name.as_str()) };
    if ended_itself(ctx) {
        return;
    }
    // SAFETY: a valid message, per the contract.
    let Some(envelope) = (unsafe { envelope(message) }) else { return };
    if node == ctx.node.name {
        if let Some(to) = ctx.node.whereis(name) {
            ctx.node.send(Some(ctx.pid), to, envelope);
        }
    } else if let Some(dist) = ctx.node.dist.get()
        && let Some(backlog) = dist.send_named(Some(ctx.pid), node, name, envelope)
    {
        // Paused before its next poll, as a send by pid would be.
        let _ = with_lent(ctx, |_, local| pause(ctx, local, backlog));
    }
}

unsafe extern "C" fn whereis_on(handle: ProcessHandle, node: Str, name: Str) -> u64 {
    // SAFETY: a live handle and valid names, per the contract.
    let (ctx, node, name) = unsafe { (ctx(handle), node.as_str(), name.as_str()) };
    let request = ctx.node.new_ref();
    let local = |pid| ctx.node.send_message(ctx.pid, &molt_abi::WhereisReply { request, pid });
    match ctx.node.dist.get() {
        _ if node == ctx.node.name => local(Ok(ctx.node.whereis(name))),
        Some(dist) => dist.whereis(node, name, ctx.pid, request),
        None => local(Err(not_distributed())),
    }
    request
}

fn not_distributed() -> molt_abi::NodeDownReason {
    molt_abi::NodeDownReason::Unreachable("this node is not distributed (NodeConfig::listen)".into())
}

unsafe extern "C" fn monitor_node(handle: ProcessHandle, node: Str) {
    // SAFETY: a live handle and a valid name, per the contract.
    let (ctx, node) = unsafe { (ctx(handle), node.as_str()) };
    {
        // A process that ended monitors nothing (see `link`).
        let mut signals = ctx.signals();
        if !signals.alive || ended_itself(ctx) {
            return;
        }
        signals.relations().node_monitors.push(molt_abi::NodeId::from_name(node));
    }
    // Its own node is never down while the process lives (as in Erlang).
    if node == ctx.node.name {
        return;
    }
    // Registered first: a connection that fails from here on fires it.
    let unreachable = match ctx.node.dist.get() {
        Some(dist) => dist.monitor_node(node).err(),
        None => Some(not_distributed()),
    };
    if let Some(why) = unreachable {
        ctx.node.node_unreachable(ctx, node, why);
    }
}

unsafe extern "C" fn demonitor_node(handle: ProcessHandle, node: Str) -> bool {
    // SAFETY: a live handle and a valid name, per the contract.
    let (ctx, node) = unsafe { (ctx(handle), node.as_str()) };
    let id = molt_abi::NodeId::from_name(node);
    let mut signals = ctx.signals();
    let Some(relations) = signals.relations_mut() else { return false };
    let held = relations.node_monitors.iter().position(|monitored| *monitored == id);
    held.map(|at| relations.node_monitors.swap_remove(at)).is_some()
}

unsafe extern "C" fn send_after(handle: ProcessHandle, delay: u64, to: Pid, message: Outgoing) -> TimerRef {
    // SAFETY: a live handle, per the contract.
    let ctx = unsafe { ctx(handle) };
    // SAFETY: a valid message, per the contract.
    let envelope = (!ended_itself(ctx)).then(|| unsafe { envelope(message) }).flatten();
    let Some(envelope) = envelope else {
        // A timer that never was: cancelling it says so.
        return crate::timer::never_armed(crate::timer::new_timer_id());
    };
    ctx.node.send_after(Duration::from_nanos(delay), TimerTarget::Pid(to), envelope, ctx.scheduler())
}

unsafe extern "C" fn send_after_named(handle: ProcessHandle, delay: u64, name: Str, message: Outgoing) -> TimerRef {
    // SAFETY: a live handle and a valid name, per the contract.
    let (ctx, name) = unsafe { (ctx(handle), name.as_str()) };
    // SAFETY: a valid message, per the contract.
    let envelope = (!ended_itself(ctx)).then(|| unsafe { envelope(message) }).flatten();
    let Some(envelope) = envelope else {
        return crate::timer::never_armed(crate::timer::new_timer_id());
    };
    let target = TimerTarget::Name(name.into());
    ctx.node.send_after(Duration::from_nanos(delay), target, envelope, ctx.scheduler())
}

unsafe extern "C" fn blocking(handle: ProcessHandle, job: BlockingJob) -> bool {
    // SAFETY: a live handle, per the contract.
    let ctx = unsafe { ctx(handle) };
    let version = match ctx.node.code.owner_of(job.run as usize) {
        Ok(version) => version,
        Err(_) => {
            // Its version is being unloaded: even `drop_env` may be gone,
            // so the job is leaked (never run nor dropped).
            let _leaked = job;
            return false;
        }
    };
    let running = BlockingRun(Some(job), version.map(crate::code::BlockingShare::new));
    if ended_itself(ctx) {
        return false;
    }
    let started = crate::scheduler::spawn_on_a_pool_thread(move || {
        let mut running = running;
        if let Some(job) = running.0.take() {
            // SAFETY: called once, as the contract says, on a pool thread
            // that never exits, with the job's version held open until it
            // returns; `run` catches its own panics.
            unsafe { (job.run)(job.env) };
        }
    });
    match started {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(pid = %ctx.pid, %error, "no thread could run a process's blocking work");
            false
        }
    }
}

/// Blocking work and the version whose code it is, held open until the work
/// ran — or was dropped without running, through its own `drop_env`.
struct BlockingRun(Option<BlockingJob>, #[allow(dead_code)] Option<crate::code::BlockingShare>);

impl Drop for BlockingRun {
    fn drop(&mut self) {
        if let Some(job) = self.0.take() {
            // SAFETY: the job's own `drop_env`, called once instead of
            // `run`, while its version (field 1, dropped after this) is open.
            unsafe { (job.drop_env)(job.env) };
        }
    }
}

unsafe extern "C" fn cancel_timer(handle: ProcessHandle, timer: TimerRef) -> u64 {
    // SAFETY: a live handle, per the contract.
    let left = unsafe { ctx(handle) }.node.cancel_timer(timer);
    // Below `NO_DEADLINE`, which means "none".
    left.map_or(molt_abi::contract::NO_DEADLINE, |left| {
        u64::try_from(left.as_nanos()).unwrap_or(u64::MAX).min(molt_abi::contract::NO_DEADLINE - 1)
    })
}

unsafe extern "C" fn hot_call(handle: ProcessHandle, entry: Str, ptr: *const u8, len: usize) -> HotCallStatus {
    // SAFETY: a live handle and valid buffers, per the contract.
    let (ctx, entry, state) = unsafe { (ctx(handle), entry.as_str(), borrowed(ptr, len)) };
    let asked = with_lent(ctx, |_, local| local.hot_call = Some(Box::new((entry.to_owned(), state.to_vec()))));
    if asked.is_some() { HotCallStatus::Accepted } else { HotCallStatus::NotOwner }
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn spawn_entry(
    handle: ProcessHandle,
    module: Str,
    entry: Str,
    ptr: *const u8,
    len: usize,
    options: SpawnOptions,
    pid: *mut Pid,
    monitor: *mut MonitorRef,
    error: Sink,
) -> SpawnStatus {
    // SAFETY: a live handle and valid buffers, per the contract.
    let (ctx, module, entry, state) = unsafe { (ctx(handle), module.as_str(), entry.as_str(), borrowed(ptr, len)) };
    match ctx.node.spawn_entry(module, entry, state, Parent::Local(ctx), options) {
        Ok((spawned, made)) => {
            // SAFETY: the caller passes writable places for both.
            unsafe {
                pid.write(spawned);
                if let Some(made) = made {
                    monitor.write(made);
                }
            }
            SpawnStatus::Spawned
        }
        Err(refused) => {
            let encoded = postcard::to_allocvec(&refused).unwrap_or_default();
            // SAFETY: `error` is the caller's sink for this call.
            unsafe { error.put(&encoded) };
            SpawnStatus::Refused
        }
    }
}

#[allow(clippy::too_many_arguments)] // the contract's signature
unsafe extern "C" fn spawn_entry_on(
    handle: ProcessHandle,
    node: Str,
    module: Str,
    entry: Str,
    ptr: *const u8,
    len: usize,
    options: SpawnOptions,
    monitor: *mut u64,
) -> u64 {
    // SAFETY: a live handle and valid buffers, per the contract.
    let (ctx, node, module, entry, state) =
        unsafe { (ctx(handle), node.as_str(), module.as_str(), entry.as_str(), borrowed(ptr, len)) };
    let request = ctx.node.new_ref();
    let answer = |pid| ctx.node.send_message(ctx.pid, &molt_abi::SpawnReply { request, pid });
    if node == ctx.node.name {
        let spawned = ctx.node.spawn_entry(module, entry, state, Parent::Local(ctx), options);
        if let Ok((_, Some(made))) = &spawned {
            // SAFETY: the caller passes a writable `u64`.
            unsafe { monitor.write(made.id) };
        }
        answer(spawned.map(|(pid, _)| pid));
        return request;
    }
    let Some(dist) = ctx.node.dist.get() else {
        answer(Err(SpawnError::NoConnection { node: node.to_owned(), why: not_distributed() }));
        return request;
    };
    // This node numbers the monitor, as every monitor its processes hold.
    let id = options.monitor.then(|| ctx.node.new_ref());
    if let Some(id) = id {
        // SAFETY: the caller passes a writable `u64`.
        unsafe { monitor.write(id) };
    }
    dist.spawn(node, module, entry, state.to_vec(), ctx.pid, request, options, id);
    request
}

unsafe extern "C" fn retain(handle: ProcessHandle) {
    // SAFETY: a live handle (a strong reference made by `Arc::into_raw`),
    // per the contract; the new reference is given back through `release`.
    unsafe { Arc::increment_strong_count(handle.cast::<ProcessCtx>()) };
}

unsafe extern "C" fn wake(handle: ProcessHandle) {
    // SAFETY: a live handle, per the contract.
    unsafe { ctx(handle) }.wake_task();
}

unsafe extern "C" fn set_exit_reason(handle: ProcessHandle, ptr: *const u8, len: usize) {
    // SAFETY: a live handle and a valid buffer, per the contract.
    let (ctx, reason) = unsafe { (ctx(handle), exit_reason(ptr, len)) };
    ctx.set_exit_reason(reason);
}

#[cfg(test)]
mod tests {
    /// Every length, inline or not, copies exactly the bytes given.
    #[test]
    fn a_small_copy_is_a_copy() {
        let source: Vec<u8> = (1..=64).collect();
        for len in 0..=64 {
            let copied = super::small_copy(&source[..len]);
            assert_eq!(&copied[..], &source[..len], "length {len}");
            assert_eq!(copied.spilled(), len > super::INLINE, "length {len}");
        }
    }
}
