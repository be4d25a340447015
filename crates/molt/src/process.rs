//! A process as the core sees it: [`ProcessCtx`], the state that outlives
//! whatever code the process runs (pid, mailbox, links, monitors, name, exit
//! reason), and [`ProcessTask`], the executor task that polls the process's body.
//!
//! Who touches what:
//! - `mailbox`: any thread pushes; only the process's own task receives;
//! - `signals`: under its lock, by the node's signal handling ([`crate::signal`])
//!   and by the process's own calls;
//! - [`TaskLocal`] (the scanned part of the mailbox, the timer, the
//!   reduction count): only the process's own task, which owns it and lends
//!   it to the core's functions for the length of one poll, so none of it
//!   needs a lock.
//!
//! A process ends in exactly one place, [`ProcessTask`]'s `Drop`, whether its
//! body returned, panicked or was killed: the body is dropped first, then the
//! exit is recorded and links, monitors and the registry are told.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};

use async_ffi::FfiFuture;
use molt_abi::{Envelope, ExitReason, Pid, Tag};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::code::{UpgradeOutcome, Version};
use crate::executor::AbortHandle;
use crate::info::ProcessStatus;
use crate::mailbox::{Mailbox, Received, Scan};
use crate::node::NodeInner;
use crate::placement::SchedulerIndex;

/// How many receives a process may complete in one poll before it yields to
/// the scheduler, so a process that always finds a message cannot starve
/// others or dodge a kill (Erlang's reduction budget).
const RECEIVES_PER_POLL: u32 = 512;

/// The budget and the time slice are looked at every this many receives
/// (a power of two), so a process that handles a few messages per poll
/// pays one increment and one test.
const CHECK_EVERY: u32 = 64;

/// How long a process may run in one poll, counted from its 64th receive
/// (checked every [`CHECK_EVERY`]: a process that handles a few messages
/// per poll never reads the clock), before it yields as if its budget were
/// spent.
const SLICE: std::time::Duration = std::time::Duration::from_millis(1);

/// What a slice's start is counted from: a `u64` of nanoseconds is half an
/// `Instant`, in every process's task.
static EPOCH: std::sync::LazyLock<std::time::Instant> = std::sync::LazyLock::new(std::time::Instant::now);

/// A scheduler's index as a process's task keeps it (see
/// [`SchedulerIndex`]); every index fits, as a node has at most
/// [`MAX_WORKERS`](crate::MAX_WORKERS) schedulers.
fn narrow(scheduler: u32) -> SchedulerIndex {
    scheduler as SchedulerIndex
}

pub(crate) struct ProcessCtx {
    pub(crate) pid: Pid,
    pub(crate) node: Arc<NodeInner>,
    pub(crate) mailbox: Mailbox,
    signals: Mutex<Signals>,
    /// Set once the process has ended; read by senders that hold a cached
    /// reference to it.
    pub(crate) gone: AtomicBool,
    /// Set when the process's own `exit` or `kill` ended it: whatever its
    /// code still does (a caught unwind, a drop) sends, links, monitors and
    /// spawns nothing.
    pub(crate) ended_itself: AtomicBool,
    status: AtomicU8,
    /// The scheduler thread the process runs on (it may move: see
    /// `placement.rs`).
    scheduler: AtomicU32,
}

impl std::fmt::Debug for ProcessCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessCtx").field("pid", &self.pid).finish()
    }
}

/// Link, monitor and exit state, guarded by one lock per process.
#[derive(Debug, Default)]
pub(crate) struct Signals {
    /// False from the moment the process starts ending.
    pub(crate) alive: bool,
    pub(crate) trap_exit: bool,
    /// The first reason recorded wins: the body's own ending or a signal.
    /// Boxed: an idle process should stay small.
    pub(crate) exit_reason: Option<Box<ExitReason>>,
    /// The task that runs the process now (a move makes a new one).
    abort: Option<AbortHandle>,
    /// Allocated on first use: most processes never link, get monitored or
    /// take a name, and an idle process should stay small.
    relations: Option<Box<Relations>>,
    /// What code the process runs, for introspection.
    pub(crate) code: CodeRef,
}

/// The entry index of a process that runs a closure made by module code.
pub(crate) const CLOSURE: u16 = u16::MAX;

/// What code a process runs, as introspection names it.
#[derive(Debug, Clone)]
pub(crate) enum CodeRef {
    /// A body compiled into the host: an index into the node's code names.
    Native(u32),
    /// An entry of a module version, by its index in the version's entries
    /// (weak: the process's task holds the version).
    Module(Weak<Version>, u16),
}

impl Default for CodeRef {
    fn default() -> CodeRef {
        CodeRef::Native(0)
    }
}

/// A process's links, the monitors it holds and those watching it, and its
/// registered name: keyed sets, so adding, removing and finding one costs
/// the same with a hundred thousand as with one.
#[derive(Debug, Default)]
pub(crate) struct Relations {
    pub(crate) links: FxHashSet<Pid>,
    /// Monitors watching this process (Erlang's `monitored_by`): (id, the
    /// watcher's node) → watcher. Ids are counted per node, so the node
    /// tells two watchers' monitors apart.
    pub(crate) monitored_by: FxHashMap<(u64, molt_abi::NodeId), Pid>,
    /// Monitors this process holds: id → target. A `Down` is delivered
    /// only while its monitor is here, and takes it out as it is queued, so
    /// none arrives after `demonitor` returned; only the holder can remove
    /// one; and a process that ends takes its monitors off their targets.
    pub(crate) monitoring: FxHashMap<u64, Pid>,
    /// Nodes this process monitors (`monitor_node`), once per monitor: a
    /// `NodeDown` is delivered only while its monitor is here, and takes it
    /// out as it is queued.
    pub(crate) node_monitors: Vec<molt_abi::NodeId>,
    /// The peer backlog this process pauses on (`TaskLocal::paused`).
    pub(crate) paused_on: Option<crate::dist::Pause>,
    /// The `send_after` timers aimed at this process: cancelled when it
    /// ends. Swept lazily (see `timer.rs`): `timers_gone` of them fired or
    /// were cancelled since the last sweep.
    pub(crate) timers: Vec<crate::timer::TimerPlace>,
    pub(crate) timers_gone: usize,
    pub(crate) name: Option<Box<str>>,
}

/// Gives a set's memory back once it falls to a quarter of its capacity:
/// a server that once had a hundred thousand monitors or timers keeps none
/// of that memory when they are gone.
pub(crate) fn shrink_if_sparse<T: Eq + std::hash::Hash>(set: &mut FxHashSet<T>) {
    if let Some(room) = sparse(set.len(), set.capacity()) {
        set.shrink_to(room);
    }
}

/// [`shrink_if_sparse`] for a map.
pub(crate) fn shrink_map_if_sparse<K: Eq + std::hash::Hash, V>(map: &mut FxHashMap<K, V>) {
    if let Some(room) = sparse(map.len(), map.capacity()) {
        map.shrink_to(room);
    }
}

/// The capacity to shrink a collection to once `len` fell to a quarter of
/// its `capacity` (halving then keeps the cost amortised): the one rule
/// for every set, map, heap and table of the core that must give a burst's
/// memory back.
pub(crate) fn sparse(len: usize, capacity: usize) -> Option<usize> {
    (capacity > 64 && len <= capacity / 4).then_some(len * 2)
}

impl Signals {
    pub(crate) fn relations(&mut self) -> &mut Relations {
        self.relations.get_or_insert_default()
    }

    pub(crate) fn relations_ref(&self) -> Option<&Relations> {
        self.relations.as_deref()
    }

    /// The relations, if the process has any (none are made up).
    pub(crate) fn relations_mut(&mut self) -> Option<&mut Relations> {
        self.relations.as_deref_mut()
    }

    pub(crate) fn take_relations(&mut self) -> Relations {
        self.relations.take().map(|r| *r).unwrap_or_default()
    }
}

impl ProcessCtx {
    pub(crate) fn new(pid: Pid, node: Arc<NodeInner>, code: CodeRef, scheduler: u32) -> ProcessCtx {
        ProcessCtx {
            pid,
            node,
            mailbox: Mailbox::default(),
            signals: Mutex::new(Signals { alive: true, code, ..Signals::default() }),
            gone: AtomicBool::new(false),
            ended_itself: AtomicBool::new(false),
            status: AtomicU8::new(ProcessStatus::Runnable as u8),
            scheduler: AtomicU32::new(scheduler),
        }
    }

    /// Wakes the task that runs the process now (its body's waker, woken by
    /// code that is not the core's). A move attaches the new task before it
    /// can first run (see `NodeInner::run_process`), so no wake-up falls
    /// between the two tasks.
    pub(crate) fn wake_task(&self) {
        if let Some(task) = &self.signals().abort {
            task.wake();
        }
    }

    /// The scheduler the process runs on.
    pub(crate) fn scheduler(&self) -> u32 {
        self.scheduler.load(Ordering::Relaxed)
    }

    pub(crate) fn signals(&self) -> MutexGuard<'_, Signals> {
        self.signals.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn status(&self) -> ProcessStatus {
        ProcessStatus::from_u8(self.status.load(Ordering::Relaxed))
    }

    fn set_status(&self, status: ProcessStatus) {
        self.status.store(status as u8, Ordering::Relaxed);
    }

    /// Records the task that runs the process from now on, so it can be
    /// woken and killed; kills it at once if a signal already asked for
    /// that. Called before the task can first run (see
    /// `NodeInner::run_process`): the next move, which that task makes,
    /// attaches its successor only after this.
    pub(crate) fn attach_task(&self, abort: AbortHandle) {
        let killed = {
            let mut signals = self.signals();
            signals.abort = Some(abort.clone());
            self.mailbox.attach(abort.clone());
            signals.exit_reason.is_some()
        };
        if killed {
            abort.abort();
        }
    }

    /// Marks the process to end with `reason`, unless it is already ending.
    /// The caller holds the signal lock, and must call `abort` on what this
    /// returns once it has let go of that lock (aborting may drop the task,
    /// which takes the lock again).
    #[must_use = "abort the returned task after releasing the signal lock"]
    pub(crate) fn die(signals: &mut Signals, reason: ExitReason) -> Option<AbortHandle> {
        if !signals.alive || signals.exit_reason.is_some() {
            return None;
        }
        signals.exit_reason = Some(Box::new(reason));
        signals.abort.clone()
    }

    /// Ends the process with `reason` at its next yield point.
    pub(crate) fn kill_with(&self, reason: ExitReason) {
        let abort = ProcessCtx::die(&mut self.signals(), reason);
        if let Some(abort) = abort {
            abort.abort();
        }
    }

    /// Records the reason the body ended with (the body's completion).
    pub(crate) fn set_exit_reason(&self, reason: ExitReason) {
        let mut signals = self.signals();
        if signals.exit_reason.is_none() {
            signals.exit_reason = Some(Box::new(reason));
        }
    }

    /// One receive pass for the process's own task; see
    /// [`Mailbox::receive`]. Gives up at `deadline` (node clock), and yields
    /// once the process has used its budget for this poll.
    pub(crate) fn receive(
        &self,
        local: &mut TaskLocal,
        tags: &[Tag],
        cursor: &mut usize,
        deadline: u64,
        matcher: impl FnMut(&Envelope) -> bool,
        cx: &mut Context<'_>,
    ) -> molt_abi::contract::ReceiveStatus {
        use molt_abi::contract::{NO_DEADLINE, ReceiveStatus};
        if local.spend_budget() {
            cx.waker().wake_by_ref();
            return ReceiveStatus::Pending;
        }
        if self.mailbox.receive(&mut local.received, tags, cursor, matcher) == Scan::Taken {
            return ReceiveStatus::Matched;
        }
        if deadline != NO_DEADLINE && self.sleep_until(local, deadline, cx) {
            return ReceiveStatus::TimedOut;
        }
        self.set_status(ProcessStatus::Waiting);
        ReceiveStatus::Pending
    }

    /// `sleep_until` for the process's own calls: counts against the
    /// budget like a receive, so a loop of zero sleeps still yields (and can
    /// be killed).
    pub(crate) fn sleep(&self, local: &mut TaskLocal, deadline: u64, cx: &mut Context<'_>) -> bool {
        if local.spend_budget() {
            cx.waker().wake_by_ref();
            return false;
        }
        self.sleep_until(local, deadline, cx)
    }

    /// True once the node clock reaches `deadline`; otherwise the process's
    /// one timer is set to wake the task then.
    pub(crate) fn sleep_until(&self, local: &mut TaskLocal, deadline: u64, cx: &mut Context<'_>) -> bool {
        let at = self.node.instant_at(deadline);
        if std::time::Instant::now() >= at {
            local.timer = None;
            return true;
        }
        let sleep = local.timer.get_or_insert_with(|| Box::pin(crate::executor::sleep_until(at)));
        if sleep.deadline() != at {
            sleep.reset(at);
        }
        if sleep.as_mut().poll(cx).is_ready() {
            local.timer = None;
            return true;
        }
        self.set_status(ProcessStatus::Sleeping);
        false
    }
}

/// What only the process's own task touches; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct TaskLocal {
    /// The owner's side of the mailbox.
    pub(crate) received: Received,
    /// Receives completed in this poll.
    reductions: u32,
    /// When this poll's 64th receive was (see [`SLICE`]), in nanoseconds
    /// after [`EPOCH`]; 0 before.
    slice_start: u64,
    /// This poll ends because the budget is spent: the process is runnable
    /// still, and busy (see `placement.rs`).
    spent: bool,
    /// The one timer of `sleep` and receive timeouts.
    timer: Option<Pin<Box<crate::executor::Sleep>>>,
    /// The last process this one sent to twice in a row, kept so a stream of
    /// sends to one process skips the process table.
    send_target: Option<Arc<ProcessCtx>>,
    /// The serial of the last send's target that missed `send_target`.
    last_miss: u64,
    /// A hot call the body asked for: (entry, state), carried out when the
    /// body next returns `Pending`.
    pub(crate) hot_call: Option<Box<(String, Vec<u8>)>>,
    /// A send of this process took a peer node's backlog over its bound:
    /// the process pauses before its next poll until it drains (see
    /// `dist/backlog.rs`). The backlog itself is in its `Relations`, out of
    /// the way of every process that never pauses.
    pub(crate) paused: bool,
}

impl TaskLocal {
    /// Counts one receive, sleep or hot call against the budget; true (and
    /// the process must yield) once the budget or the time slice is spent.
    #[inline]
    fn spend_budget(&mut self) -> bool {
        // Paused by backpressure: it yields here, and its next poll waits.
        if self.paused {
            return true;
        }
        self.reductions += 1;
        self.reductions.is_multiple_of(CHECK_EVERY) && self.budget_spent()
    }

    /// Every [`CHECK_EVERY`] receives: whether the budget or the slice is
    /// spent.
    #[cold]
    fn budget_spent(&mut self) -> bool {
        let now = u64::try_from(EPOCH.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1);
        if self.slice_start == 0 {
            self.slice_start = now;
        }
        let spent = self.reductions >= RECEIVES_PER_POLL || now - self.slice_start > SLICE.as_nanos() as u64;
        self.spent |= spent;
        spent
    }

    /// Sends `envelope` from `from`, the process whose task this is, to
    /// `to`: as [`NodeInner::send`], with a one-entry cache of the target;
    /// the backlog of `to`'s node when the send took it over its bound, for
    /// the caller to pause on.
    pub(crate) fn send(
        &mut self,
        node: &NodeInner,
        from: Pid,
        to: Pid,
        envelope: Envelope,
    ) -> Option<crate::dist::Pause> {
        crate::executor::passing();
        if to.node != node.id {
            if let Some(dist) = node.dist.get() {
                return dist.send(Some(from), to, envelope);
            }
            return None;
        }
        if let Some(target) = &self.send_target
            && target.pid == to
        {
            if target.gone.load(Ordering::Acquire) {
                // Let go of a process that ended.
                self.send_target = None;
            } else {
                target.mailbox.push(envelope);
            }
            return None;
        }
        if self.last_miss != to.serial {
            self.last_miss = to.serial;
            node.send(Some(from), to, envelope);
            return None;
        }
        match node.process(to) {
            Some(target) => {
                target.mailbox.push(envelope);
                self.send_target = Some(target);
            }
            // None alive.
            None => node.send(Some(from), to, envelope),
        }
        None
    }
}

/// A body's future and the module version whose code it is. Dropping it
/// drops the future first, then takes the process off the version's list,
/// then lets go of the version: nothing of a version's code outlives its
/// share, whoever holds the `RunningBody` (rule 3). The default is empty.
#[derive(Default)]
pub(crate) struct RunningBody {
    future: Option<FfiFuture<()>>,
    version: Option<Arc<Version>>,
    serial: u64,
}

impl RunningBody {
    /// `future` runs host code (`version` is `None`) or code of `version`,
    /// which already lists the process `serial`.
    pub(crate) fn new(future: FfiFuture<()>, version: Option<Arc<Version>>, serial: u64) -> RunningBody {
        RunningBody { future: Some(future), version, serial }
    }

    pub(crate) fn version(&self) -> Option<&Arc<Version>> {
        self.version.as_ref()
    }
}

impl Drop for RunningBody {
    fn drop(&mut self) {
        drop(self.future.take());
        if let Some(version) = self.version.take() {
            version.remove_process(self.serial);
        }
    }
}

/// The executor task of one process: polls the body, and ends the process when
/// dropped (completed or aborted).
pub(crate) struct ProcessTask {
    ctx: Arc<ProcessCtx>,
    /// Empty once the body has been dropped.
    body: RunningBody,
    local: TaskLocal,
    /// The scheduler it is counted busy on, if it is (see `placement.rs`).
    busy_on: Option<SchedulerIndex>,
    /// Where its last poll decided it moves.
    move_to: Option<SchedulerIndex>,
    /// Polls that left it pending (for `MOLT_MIGRATE_EVERY`).
    pending_polls: u32,
    /// Polled at least once, here or on another scheduler.
    started: bool,
}

impl ProcessTask {
    pub(crate) fn new(ctx: Arc<ProcessCtx>, body: RunningBody) -> ProcessTask {
        ProcessTask {
            ctx,
            body,
            local: TaskLocal::default(),
            busy_on: None,
            move_to: None,
            pending_polls: 0,
            started: false,
        }
    }

    pub(crate) fn ctx(&self) -> &Arc<ProcessCtx> {
        &self.ctx
    }

    /// Where its last poll (which returned `Pending`) decided it moves;
    /// the process counts as on that scheduler from now on.
    #[inline]
    pub(crate) fn take_move(&mut self) -> Option<u32> {
        let to = self.move_to.take()?;
        self.moved(to)
    }

    #[cold]
    fn moved(&mut self, to: SchedulerIndex) -> Option<u32> {
        let to = u32::from(to);
        self.ctx.scheduler.store(to, Ordering::Relaxed);
        // Its timer belongs to the old scheduler's time driver, which a
        // process that never yields may hold up: the next sleep makes a new
        // one there.
        self.local.timer = None;
        // The new task's first receive looks at the inbox under the lock,
        // whenever the mailbox took that task up.
        self.local.received.disarm();
        Some(to)
    }

    pub(crate) fn started(&self) -> bool {
        self.started
    }

    /// The task of the process this one talks to (it sent there twice in a
    /// row), if that process is alive.
    pub(crate) fn partner(&self) -> Option<AbortHandle> {
        let target = self.local.send_target.as_ref()?;
        if target.gone.load(Ordering::Acquire) {
            return None;
        }
        target.signals().abort.clone()
    }

    /// Makes the process count as on scheduler `to` from now on, as
    /// [`ProcessTask::take_move`] does for a move its own poll decided: for
    /// a process taken while it waited in a run queue (see `executor.rs`).
    pub(crate) fn move_now(&mut self, to: u32) {
        self.ctx.node.placement.moved(&mut self.busy_on, to);
        self.move_to = Some(narrow(to));
        let _ = self.take_move();
    }

    /// Drops the body, lending the task's state as a poll does, so what its
    /// drop code does (a send, a spawn) works as from the body.
    fn drop_body(&mut self) {
        let body = std::mem::take(&mut self.body);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        crate::boundary::polling(&self.ctx, &mut self.local, &mut cx, move |_| drop(body));
    }

    /// Carries out a hot call: the old body is dropped, then the entry of
    /// the module's current version starts with the state, migrated if the
    /// version changes. If migration fails, the entry of the version the
    /// process ran starts with the state unchanged. Returns false if the
    /// process must end instead (the reason is recorded).
    fn switch_code(&mut self, entry: String, state: Vec<u8>) -> bool {
        let Some(old) = self.body.version().cloned() else {
            self.ctx.set_exit_reason(ExitReason::Error(
                "hot_call needs a process that runs a module; this one runs code compiled into the host".into(),
            ));
            return false;
        };
        let current = self.ctx.node.code.current(old.module()).unwrap_or_else(|| old.clone());
        // Into the new version: through its `migrate`, and its entry must
        // take the state that comes out — decoded before anything of the old
        // body goes. On any failure the process stays in its version with
        // its state unchanged and gets `UpgradeFailed`: a hot call never
        // loses state.
        let upgraded = if Arc::ptr_eq(&current, &old) {
            None
        } else {
            match self.start_in(&old, &current, &entry, &state) {
                Ok(future) => {
                    // Recorded before the old body (and with it the
                    // process's place in the old version) goes, so a load
                    // waiting for it never sees it gone without an answer.
                    old.record_upgrade(self.ctx.pid.serial, UpgradeOutcome::Moved);
                    Some((current, future))
                }
                Err(failure) => {
                    old.record_upgrade(self.ctx.pid.serial, UpgradeOutcome::Failed { reason: failure.clone() });
                    self.ctx.node.upgrade_failed(&self.ctx, &old, &current, failure);
                    None
                }
            }
        };
        // The old body (old code) goes before the new one is polled; `old`
        // is still held here, so its version stays open until the end of
        // this function.
        self.drop_body();
        let (target, future) = match upgraded {
            Some(upgraded) => upgraded,
            None => match old.library().start(&entry, crate::boundary::process_for(&self.ctx), &state) {
                Some(Ok(future)) => (old.clone(), future),
                Some(Err(why)) => {
                    self.ctx.set_exit_reason(ExitReason::Error(format!(
                        "hot_call to {}:{entry} with a state that does not fit it: {why}",
                        old.module()
                    )));
                    return false;
                }
                None => {
                    self.ctx.set_exit_reason(ExitReason::Error(format!(
                        "hot_call to {}:{entry}, which version {} does not have",
                        old.module(),
                        old.declared()
                    )));
                    return false;
                }
            },
        };
        // OTP: a process cannot enter a version that is being purged; a
        // purge kills it anyway.
        if !target.try_add_process(self.ctx.pid.serial) {
            old.record_upgrade(self.ctx.pid.serial, UpgradeOutcome::Ended);
            drop(future);
            self.ctx.set_exit_reason(ExitReason::Purged {
                module: target.module().to_owned(),
                version: target.declared().to_owned(),
            });
            return false;
        }
        self.ctx.signals().code = CodeRef::Module(Arc::downgrade(&target), target.library().entry_index(&entry));
        self.body = RunningBody::new(future, Some(target), self.ctx.pid.serial);
        true
    }

    /// The body of `entry` of the new version `current`, started with the
    /// state its `migrate` makes of `state` (a state of `old`); or why the
    /// upgrade fails.
    fn start_in(&self, old: &Version, current: &Version, entry: &str, state: &[u8]) -> Result<FfiFuture<()>, String> {
        if !current.library().has_entry(entry) {
            return Err(format!("it has no entry {entry:?}"));
        }
        let (migrated, passed_on) = current.library().migrate(old.declared(), state)?;
        // Bytes passed on undecoded into a state of another shape may still
        // decode (postcard is not self-describing), into wrong values.
        if let (true, Some(before), Some(after)) =
            (passed_on, old.library().state_shape(entry), current.library().state_shape(entry))
            && !before.shape.fits(after.shape)
        {
            return Err(format!(
                "its migrate passed the state on unchanged, but the state of {entry} changed shape from {before} to \
                 {after}"
            ));
        }
        match current.library().start(entry, crate::boundary::process_for(&self.ctx), &migrated) {
            Some(Ok(future)) => Ok(future),
            Some(Err(why)) => Err(format!("the state its migrate made does not fit its {entry}: {why}")),
            None => Err(format!("it has no entry {entry:?}")),
        }
    }
}

impl Future for ProcessTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        // Paused by backpressure: woken when the peer's backlog drains (a
        // kill still ends it, through the task's abort).
        if this.local.paused {
            let pause = this.ctx.signals().relations_mut().and_then(|relations| relations.paused_on.clone());
            if pause.is_some_and(|pause| pause.holds(cx.waker())) {
                this.ctx.set_status(ProcessStatus::Backpressured);
                return Poll::Pending;
            }
            this.local.paused = false;
            if let Some(relations) = this.ctx.signals().relations_mut() {
                relations.paused_on = None;
            }
        }
        this.started = true;
        // What its sends to other nodes gathered is written when the poll
        // ends (dist/link.rs).
        let _turn = crate::dist::Turn::start();
        this.local.reductions = 0;
        this.local.slice_start = 0;
        this.local.spent = false;
        this.ctx.set_status(ProcessStatus::Running);
        let scheduler = this.ctx.scheduler() as usize;
        this.ctx.node.watch[scheduler].poll_started(this.ctx.pid.serial);
        let polled = loop {
            let Some(future) = this.body.future.as_mut() else {
                this.ctx.node.watch[scheduler].poll_ended();
                return Poll::Ready(());
            };
            let polled = crate::boundary::polling(&this.ctx, &mut this.local, cx, |cx| Pin::new(future).poll(cx));
            match this.local.hot_call.take() {
                Some(call) if polled.is_pending() => {
                    let (entry, state) = *call;
                    if !this.switch_code(entry, state) {
                        this.drop_body();
                        break Poll::Ready(());
                    }
                    // A hot call counts against the budget like a receive,
                    // so a process that only hot-calls itself still yields
                    // (and can be killed).
                    if this.local.spend_budget() {
                        cx.waker().wake_by_ref();
                        break Poll::Pending;
                    }
                }
                _ => break polled,
            }
        };
        this.ctx.mailbox.set_saved_len(this.local.received.saved.len());
        this.ctx.node.watch[scheduler].poll_ended();
        match polled {
            Poll::Ready(()) => {
                self.drop_body();
                Poll::Ready(())
            }
            Poll::Pending => {
                let this = &mut *self;
                let placement = &this.ctx.node.placement;
                if this.local.spent {
                    this.move_to = placement.yielded_busy(&mut this.busy_on, this.ctx.scheduler()).map(narrow);
                } else if this.busy_on.is_some() {
                    placement.not_busy(&mut this.busy_on);
                }
                if placement.migrate_every != 0 && this.move_to.is_none() {
                    this.pending_polls = this.pending_polls.wrapping_add(1);
                    this.move_to =
                        placement.forced_move(this.pending_polls, this.ctx.scheduler(), &mut this.busy_on).map(narrow);
                }
                // Still `Running` means it waits on something that is not
                // the core's (a tokio channel, say). Only this task writes
                // the status, so a load and a store will do.
                if this.ctx.status() == ProcessStatus::Running {
                    this.ctx.set_status(ProcessStatus::Suspended);
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for ProcessTask {
    fn drop(&mut self) {
        // The body (the process's code) goes first, and with it the share of
        // its version: nothing of it may run once the exit is announced.
        self.drop_body();
        // Its messages go before its exit is announced: whoever sees the
        // process gone (a `Down`, a link's `Exit`) sees its memory gone,
        // though it ended on another thread.
        drop(std::mem::take(&mut self.local));
        self.ctx.node.placement.not_busy(&mut self.busy_on);
        self.ctx.set_status(ProcessStatus::Exiting);
        self.ctx.node.process_exited(&self.ctx);
    }
}
#[cfg(test)]
mod tests {
    /// What every idle process keeps, allocation by allocation, stays in
    /// the allocator size classes that make ~680 bytes a process (the
    /// `memory` benchmark): one field more and a class is crossed. glibc
    /// rounds a request up to a multiple of 16 after adding 8.
    #[test]
    fn an_idle_process_stays_small() {
        use std::mem::size_of;
        // The task, boxed by its scheduler (a 160-byte block).
        assert!(size_of::<crate::placement::Scheduled>() <= 152, "{}", size_of::<crate::placement::Scheduled>());
        // The shared state, in an `Arc` (two counts more; a 192-byte block).
        assert!(size_of::<super::ProcessCtx>() <= 168, "{}", size_of::<super::ProcessCtx>());
    }
}
