//! Scheduler threads: each runs one [`executor::Scheduler`] loop, the
//! processes a node placed on it.
//!
//! The OS threads belong to the process, not to a node, and never exit:
//! when a node stops, its scheduler's loop ends, every task still on it is
//! dropped on its thread, and the thread waits in a pool of idle threads for
//! the next node's scheduler. The reason is module code. A module's own copy
//! of std may register thread-exit destructors on the threads its code runs
//! on (`std::thread::current()` does, through a pthread key that the
//! dynamic loader does not tie to the module, so it does not keep the
//! module mapped); run after the module's version was purged and unmapped,
//! such a destructor would jump into nothing. A thread that never exits
//! never runs them. (Destructors registered through
//! `__cxa_thread_atexit_impl`, as `thread_local!` values with `Drop` are,
//! instead keep their module mapped: purge reports that.)
//!
//! For the same reason, module code the core calls outside a process — a
//! module describing its shapes at load, an entry decoding its start
//! argument — runs on a pool thread too ([`on_a_pool_thread`]), never on
//! the caller's thread, which may exit.
//!
//! The pool is a process-wide table because OS threads are a process-wide
//! resource: only this file touches it.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex as StdMutex};

use crate::executor::Scheduler;

/// Work for an idle scheduler thread: run one node's runtime until it stops.
type Job = Box<dyn FnOnce() + Send>;

/// Idle scheduler threads, each waiting on its channel for a job.
static IDLE: StdMutex<Vec<mpsc::Sender<Job>>> = StdMutex::new(Vec::new());

/// Names new threads.
static STARTED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The node whose runtime this thread runs now (its token; 0 if none).
    static RUNNING_FOR: Cell<u64> = const { Cell::new(0) };
    /// Whether this thread is one of the pool's, which never exit.
    static ON_POOL: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread runs a node's processes (a process's own
/// code is calling): it must not block waiting for them.
pub(crate) fn in_a_process_thread() -> bool {
    RUNNING_FOR.with(Cell::get) != 0
}

/// Runs `work` on a thread of the pool, which never exits — this thread if
/// it is one — and waits for its result. For module code the core calls
/// outside a process (see the file's docs).
///
/// # Errors
/// When no pool thread was idle and none could be started.
pub(crate) fn on_a_pool_thread<R: Send + 'static>(
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, std::io::Error> {
    if ON_POOL.with(Cell::get) {
        return Ok(work());
    }
    let (done, result) = mpsc::channel();
    run_on_a_thread(Box::new(move || {
        let _ = done.send(work());
    }))?;
    result.recv().map_err(|_| std::io::Error::other("the pool thread running module code ended"))
}

/// Runs `work` on a thread of the pool (an idle one, or a new one) and
/// returns at once: blocking work of a process (`Process::blocking`).
///
/// # Errors
/// When no pool thread was idle and none could be started (`work` is
/// dropped then).
pub(crate) fn spawn_on_a_pool_thread(work: impl FnOnce() + Send + 'static) -> Result<(), std::io::Error> {
    run_on_a_thread(Box::new(work))
}

/// One scheduler thread lent to a node until `stop`.
#[derive(Debug)]
pub(crate) struct SchedulerThread {
    scheduler: Arc<Scheduler>,
    /// In a mutex only so a `Node` can be shared between threads.
    stopped: StdMutex<mpsc::Receiver<()>>,
    node: u64,
}

impl SchedulerThread {
    /// Starts scheduler `index` of node `node` (a token unique to it) on
    /// an idle thread, or on a new one.
    pub(crate) fn start(node: u64, index: usize) -> Result<(SchedulerThread, Arc<Scheduler>), std::io::Error> {
        let scheduler = Scheduler::new(index);
        let (done, stopped) = mpsc::channel();
        let job: Job = Box::new({
            let scheduler = scheduler.clone();
            move || {
                RUNNING_FOR.with(|running| running.set(node));
                // Returns once stopped, every task left on it dropped:
                // their processes end (with the reason already recorded)
                // there.
                scheduler.run();
                RUNNING_FOR.with(|running| running.set(0));
                let _ = done.send(());
            }
        });
        run_on_a_thread(job)?;
        Ok((SchedulerThread { scheduler: scheduler.clone(), stopped: StdMutex::new(stopped), node }, scheduler))
    }

    /// Whether the calling thread is this one (a process of its node is
    /// calling).
    pub(crate) fn is_current(&self) -> bool {
        RUNNING_FOR.with(Cell::get) == self.node
    }

    /// Asks the scheduler to stop. If `wait`, waits until it has (every
    /// task on it dropped) — unless the caller is on this very thread (a
    /// process stopping its own node), which cannot wait for itself.
    pub(crate) fn stop(self, wait: bool) {
        self.scheduler.stop();
        if wait && RUNNING_FOR.with(Cell::get) != self.node {
            let _ = self.stopped.lock().unwrap_or_else(|e| e.into_inner()).recv();
        }
    }
}

impl Drop for SchedulerThread {
    /// A scheduler nobody will stop (a node whose start failed part way)
    /// stops now, and its thread goes back to the pool.
    fn drop(&mut self) {
        self.scheduler.stop();
    }
}

/// Runs `job` on an idle scheduler thread, or on a new one if none is idle.
fn run_on_a_thread(mut job: Job) -> Result<(), std::io::Error> {
    loop {
        let idle = IDLE.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(thread) => match thread.send(job) {
                Ok(()) => return Ok(()),
                // That thread is gone (it cannot be, but then try another).
                Err(mpsc::SendError(returned)) => job = returned,
            },
            None => break,
        }
    }
    let index = STARTED.fetch_add(1, Ordering::Relaxed);
    std::thread::Builder::new().name(format!("molt-scheduler-{index}")).spawn(move || {
        ON_POOL.with(|on| on.set(true));
        let mut job = job;
        loop {
            job();
            let (give, next) = mpsc::channel();
            IDLE.lock().unwrap_or_else(|e| e.into_inner()).push(give);
            match next.recv() {
                Ok(next) => job = next,
                Err(_) => return,
            }
        }
    })?;
    Ok(())
}
