//! Which scheduler thread a process runs on, and when it moves.
//!
//! A process starts on its parent's scheduler (a process spawned from
//! outside the node goes round-robin), as Erlang places it: processes that
//! talk to each other then share a thread, and a message between them costs
//! no cross-thread wake-up. A process that keeps the thread busy — it used
//! up its budget (512 receives, or a millisecond of running after its
//! 64th receive in one go) and is still runnable — is counted *busy* on its
//! scheduler until it next waits. When it yields that way and its scheduler
//! has at least two busy processes more than the least busy one, it moves
//! there: its task ends on this thread and the same process (pid, mailbox,
//! links, timers, its body mid-`await`) continues in a new task on the
//! other, whose first poll re-registers every wake-up the body waits on.
//! Busy processes thus spread over the schedulers whoever spawned them.
//! Processes that each wait often are not counted busy, even when together
//! they keep their scheduler busy (many ping-pong pairs): moving one of a
//! pair makes every message between them a wake-up of another thread,
//! which costs more than the second core gives (measured: 4 pairs of
//! 200,000 round trips took 1.86 s split, 0.56 s on one thread). Such
//! pairs move whole instead, when an idle scheduler is handed work from a
//! queue (see `executor.rs`): a task goes with its `partner`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use crate::process::ProcessTask;

/// A scheduler's index, as a process's task keeps it: a node has at most
/// [`MAX_WORKERS`](crate::node::MAX_WORKERS) schedulers, and an idle
/// process should stay small.
pub(crate) type SchedulerIndex = u16;

/// The busy processes of each scheduler of a node.
pub(crate) struct Placement {
    busy: Box<[AtomicU32]>,
    /// For tests: every process moves to the next scheduler after every
    /// this many polls that leave it pending (0: never), whether busy or
    /// not — `MOLT_MIGRATE_EVERY`, so the whole test suite can run with
    /// processes moving all the time. (With 1, a waiting process bounces
    /// between the threads for ever, each new task's first poll moving it
    /// again: use 2 or more for a suite.)
    pub(crate) migrate_every: u32,
}

impl Placement {
    pub(crate) fn new(schedulers: usize) -> Placement {
        let migrate_every = std::env::var("MOLT_MIGRATE_EVERY").ok().and_then(|n| n.parse().ok()).unwrap_or(0);
        Placement { busy: (0..schedulers).map(|_| AtomicU32::new(0)).collect(), migrate_every }
    }

    /// Whether a process whose `polls`-th poll left it pending must move
    /// anyway (see `migrate_every`), and where.
    pub(crate) fn forced_move(&self, polls: u32, scheduler: u32, counted: &mut Option<SchedulerIndex>) -> Option<u32> {
        if self.migrate_every == 0 || self.busy.len() < 2 || !polls.is_multiple_of(self.migrate_every) {
            return None;
        }
        let to = (scheduler + 1) % self.busy.len() as u32;
        self.moved(counted, to);
        Some(to)
    }

    /// A process on `scheduler` yielded with work left: counts it busy
    /// there (once), and says where it should move, if anywhere (and
    /// counts it there instead).
    pub(crate) fn yielded_busy(&self, counted: &mut Option<SchedulerIndex>, scheduler: u32) -> Option<u32> {
        if counted.is_none() {
            self.busy[scheduler as usize].fetch_add(1, Ordering::Relaxed);
            *counted = Some(scheduler as SchedulerIndex);
        }
        let here = self.busy[scheduler as usize].load(Ordering::Relaxed);
        let (least, to) = self
            .busy
            .iter()
            .enumerate()
            .map(|(index, busy)| (busy.load(Ordering::Relaxed), index as u32))
            .min()
            .unwrap_or((here, scheduler));
        if to == scheduler || here < least.saturating_add(2) {
            return None;
        }
        self.busy[scheduler as usize].fetch_sub(1, Ordering::Relaxed);
        self.busy[to as usize].fetch_add(1, Ordering::Relaxed);
        *counted = Some(to as SchedulerIndex);
        Some(to)
    }

    /// A process moves to `to` for another reason: its busy count goes
    /// with it.
    pub(crate) fn moved(&self, counted: &mut Option<SchedulerIndex>, to: u32) {
        if let Some(from) = counted.take() {
            self.busy[from as usize].fetch_sub(1, Ordering::Relaxed);
            self.busy[to as usize].fetch_add(1, Ordering::Relaxed);
            *counted = Some(to as SchedulerIndex);
        }
    }

    /// A process counted busy waits now, or ended.
    pub(crate) fn not_busy(&self, counted: &mut Option<SchedulerIndex>) {
        if let Some(scheduler) = counted.take() {
            self.busy[scheduler as usize].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The executor task of a process: polls its [`ProcessTask`] and, when a poll
/// decides the process moves, hands it to a new task on the other
/// scheduler and ends.
pub(crate) struct Scheduled(pub(crate) Option<ProcessTask>);

impl crate::executor::Task for Scheduled {
    fn can_move(&self) -> bool {
        self.0.is_some()
    }

    fn started(&self) -> bool {
        self.0.as_ref().is_some_and(ProcessTask::started)
    }

    /// The process it sent to last, twice in a row (its send cache).
    fn partner(&self) -> Option<crate::executor::AbortHandle> {
        self.0.as_ref()?.partner()
    }

    /// Taken by an idle scheduler while it waited behind a long poll: the
    /// same move as a busy process's (see `ProcessTask::move_now`).
    fn hand_over(self: Pin<Box<Self>>, to: usize) {
        // In the same box: a burst of processes handed over whole (a
        // spawn burst, a broadcast) would otherwise leave as many freed
        // blocks behind on this thread as it allocates on the other.
        let mut boxed = Pin::into_inner(self);
        let Some(task) = boxed.0.as_mut() else { return };
        let to = to as u32;
        task.move_now(to);
        let node = task.ctx().node.clone();
        node.run_process(boxed, to);
    }
}

impl Future for Scheduled {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(task) = self.0.as_mut() else { return Poll::Ready(()) };
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Pin::new(&mut *task).poll(cx)));
        match polled {
            Ok(Poll::Pending) => {}
            Ok(Poll::Ready(())) => {
                // Dropping the task ends the process, here.
                self.0 = None;
                return Poll::Ready(());
            }
            Err(_) => {
                // The core's own poll panicked (a bug; the body's panics
                // are caught at the boundary): the process did not end
                // normally, and its scheduler is not polling it any more.
                let ctx = task.ctx();
                ctx.set_exit_reason(molt_abi::ExitReason::Error(
                    "the molt core panicked while running this process".into(),
                ));
                ctx.node.watch[ctx.scheduler() as usize].poll_ended();
                self.0 = None;
                return Poll::Ready(());
            }
        }
        let Some(to) = task.take_move() else { return Poll::Pending };
        let task = self.0.take().expect("polled just now");
        let node = task.ctx().node.clone();
        node.run_process(Box::new(Scheduled(Some(task))), to);
        Poll::Ready(())
    }
}
