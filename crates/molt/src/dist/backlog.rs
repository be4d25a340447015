//! What is queued towards one peer and not yet acknowledged, counted in
//! frames and bytes, and the processes paused until it drains: the bound
//! on a node's memory for a peer that reads slowly or not at all.
//!
//! A process whose message takes the backlog over the bound
//! (`NodeConfig::max_backlog`) is paused before its next poll, as Erlang
//! suspends a process sending to a busy distribution port, and runs again
//! once the backlog is down to half the bound (or the peer is gone). The
//! message itself always goes: nothing is lost to backpressure.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Waker;

pub(crate) struct Backlog {
    frames: AtomicUsize,
    bytes: AtomicUsize,
    limit: usize,
    /// The peer is gone: nobody waits for it any more.
    released: AtomicBool,
    paused: Mutex<Vec<Waker>>,
}

impl std::fmt::Debug for Backlog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backlog").field("frames", &self.frames()).field("bytes", &self.bytes()).finish()
    }
}

impl Backlog {
    pub(crate) fn new(limit: usize) -> Backlog {
        Backlog {
            frames: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            limit,
            released: AtomicBool::new(false),
            paused: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn frames(&self) -> usize {
        self.frames.load(Ordering::Relaxed)
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether senders pause on it: over half its bound.
    pub(crate) fn holding(&self) -> bool {
        self.bytes() > self.limit / 2
    }

    /// Counts a frame of `weight` bytes in; whether the backlog is now over
    /// its bound (and the sender is to pause).
    pub(crate) fn add(&self, weight: usize) -> bool {
        self.frames.fetch_add(1, Ordering::Relaxed);
        let bytes = self.bytes.fetch_add(weight, Ordering::Relaxed) + weight;
        bytes > self.limit
    }

    /// Counts frames of `weight` bytes in all out (written and
    /// acknowledged, or given up); wakes the paused processes once the
    /// backlog is down to half the bound.
    pub(crate) fn remove(&self, frames: usize, weight: usize) {
        if frames == 0 {
            return;
        }
        self.frames.fetch_sub(frames, Ordering::Relaxed);
        let before = self.bytes.fetch_sub(weight, Ordering::Relaxed);
        let low = self.limit / 2;
        if before > low && before - weight <= low {
            self.wake_all();
        }
    }

    /// Pauses the process of `waker` while the backlog is over half its
    /// bound; false if it need not wait.
    pub(crate) fn pause(&self, waker: &Waker) -> bool {
        let mut paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        // Read under the lock `remove` takes to wake: no wake-up is lost
        // between this check and the waker being kept.
        if self.released.load(Ordering::Acquire) || self.bytes() <= self.limit / 2 {
            return false;
        }
        if !paused.iter().any(|kept| kept.will_wake(waker)) {
            paused.push(waker.clone());
        }
        true
    }

    /// The peer is gone: every paused process runs again, and none pauses
    /// for it any more.
    pub(crate) fn release(&self) {
        self.released.store(true, Ordering::Release);
        self.wake_all();
    }

    fn wake_all(&self) {
        let paused = std::mem::take(&mut *self.paused.lock().unwrap_or_else(|e| e.into_inner()));
        for waker in paused {
            waker.wake();
        }
    }
}
