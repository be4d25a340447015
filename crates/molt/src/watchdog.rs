//! Names a process that keeps its scheduler thread too long without
//! yielding (a sync sleep, blocking I/O, a long computation with no await):
//! every other process of that thread waits meanwhile. Erlang's
//! `long_schedule` system monitor; the remedy is `Process::blocking`.
//!
//! Each scheduler records, in two plain atomics its own thread writes, how
//! many polls it has started and which process it polls now; a thread of
//! the node's own looks at them every half threshold and logs a warning
//! when a scheduler has been in the same poll for longer than the
//! threshold (once per such poll). A poll seen in progress twice also has
//! what its process sent to other nodes written (`Dist::flush_gathered`):
//! that waits for the end of the poll otherwise.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::node::NodeInner;

/// What one scheduler is doing, as its own thread records it.
/// Aligned to its own pair of cache lines: each scheduler writes its
/// watch twice a poll, and two watches in one line made every poll of one
/// scheduler take that line from the other.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct SchedulerWatch {
    /// Polls of processes started on this scheduler.
    polls: AtomicU64,
    /// The serial of the process being polled; 0 when none.
    current: AtomicU64,
}

impl SchedulerWatch {
    /// The scheduler starts polling the process `serial`. Only the
    /// scheduler's thread writes: a load and a store, no read-modify-write.
    pub(crate) fn poll_started(&self, serial: u64) {
        self.polls.store(self.polls.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        self.current.store(serial, Ordering::Relaxed);
    }

    pub(crate) fn poll_ended(&self) {
        self.current.store(0, Ordering::Relaxed);
    }

    /// How many polls it started, and the process it polls now (0: none).
    pub(crate) fn now(&self) -> (u64, u64) {
        (self.polls.load(Ordering::Relaxed), self.current.load(Ordering::Relaxed))
    }
}

/// Starts the node's watchdog thread; it ends when the node does. Whether
/// it runs.
pub(crate) fn start(node: &Arc<NodeInner>, threshold: Duration) -> bool {
    if threshold.is_zero() {
        return false;
    }
    let node = Arc::downgrade(node);
    let started = std::thread::Builder::new().name("molt-watchdog".into()).spawn(move || watch(&node, threshold));
    if let Err(error) = &started {
        tracing::warn!(%error, "no watchdog thread: processes that block their scheduler will not be named");
    }
    started.is_ok()
}

fn watch(node: &Weak<NodeInner>, threshold: Duration) {
    // Per scheduler: the poll last seen in progress, since when, and
    // whether it was reported.
    let mut seen: Vec<Option<(u64, u64, Instant, bool)>> = Vec::new();
    loop {
        std::thread::sleep(threshold / 2);
        let Some(node) = node.upgrade() else { return };
        if node.is_stopping() {
            return;
        }
        seen.resize(node.watch.len(), None);
        for (index, (watch, seen)) in node.watch.iter().zip(&mut seen).enumerate() {
            let (polls, current) = watch.now();
            if current == 0 {
                *seen = None;
                if let Some(dist) = node.dist.get() {
                    dist.scheduler_stalled(index, false);
                }
                continue;
            }
            match seen {
                Some((p, c, since, reported)) if *p == polls && *c == current => {
                    // What it sent to other nodes waits for its poll to
                    // end: written now.
                    if let Some(dist) = node.dist.get() {
                        dist.flush_gathered();
                        dist.scheduler_stalled(index, true);
                    }
                    let held = since.elapsed();
                    if !*reported && held >= threshold {
                        *reported = true;
                        let pid = node.local_pid(current);
                        tracing::warn!(
                            %pid, scheduler = index, held_ms = held.as_millis() as u64,
                            "process {pid} has kept scheduler thread {index} for {} ms without yielding: the other \
                             processes of that thread wait; run blocking code with `p.blocking(|| ...)`",
                            held.as_millis()
                        );
                    }
                }
                _ => {
                    *seen = Some((polls, current, Instant::now(), false));
                    if let Some(dist) = node.dist.get() {
                        dist.scheduler_stalled(index, false);
                    }
                }
            }
        }
    }
}
