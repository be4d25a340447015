//! What is queued towards one peer and not yet acknowledged, counted in
//! frames and bytes, and the processes paused until it drains: the bound
//! on a node's memory for a peer that reads slowly or not at all.
//!
//! A process whose message takes the backlog over the bound
//! (`NodeConfig::max_backlog`) is paused before its next poll, as Erlang
//! suspends a process sending to a busy distribution port, and runs again
//! once the backlog is down to half the bound (or the peer is gone). The
//! message itself always goes: nothing is lost to backpressure.
//!
//! A big message (one that goes in parts, `parts.rs`) counts in full, and
//! holds up its own sender until the backlog is down again, as Erlang's
//! sender of a fragmented message waits for its fragments to go; but it
//! does not hold up the others: a small message is measured against the
//! small ones only, so that a process sending small messages is not paused
//! for the whole of another's big transfer.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

pub(crate) struct Backlog {
    frames: AtomicUsize,
    /// The bytes of small messages, and of big ones: kept apart, so that
    /// a small sender's measure is one counter, read at once.
    small: AtomicUsize,
    big: AtomicUsize,
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
            small: AtomicUsize::new(0),
            big: AtomicUsize::new(0),
            limit,
            released: AtomicBool::new(false),
            paused: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn frames(&self) -> usize {
        self.frames.load(Ordering::Relaxed)
    }

    pub(crate) fn bytes(&self) -> usize {
        self.small.load(Ordering::Relaxed) + self.big.load(Ordering::Relaxed)
    }

    /// Whether senders pause on it: over half its bound.
    pub(crate) fn holding(&self) -> bool {
        self.bytes() > self.limit / 2
    }

    /// Whether a frame of `weight` bytes counts as big.
    pub(crate) fn is_big(weight: usize) -> bool {
        weight > super::parts::PART
    }

    /// The bytes the sender of a big message, or of a small one, is
    /// measured against.
    fn measure(&self, big: bool) -> usize {
        if big { self.bytes() } else { self.small.load(Ordering::Relaxed) }
    }

    /// Counts a frame of `weight` bytes in; the sender's pause when the
    /// backlog is now over its bound for it.
    pub(crate) fn add(self: &Arc<Self>, weight: usize) -> Option<Pause> {
        let big = Backlog::is_big(weight);
        self.frames.fetch_add(1, Ordering::Relaxed);
        let counter = if big { &self.big } else { &self.small };
        counter.fetch_add(weight, Ordering::Relaxed);
        (self.measure(big) > self.limit).then(|| Pause { backlog: Arc::clone(self), big })
    }

    /// Counts frames of `weight` bytes in all out (written and
    /// acknowledged, or given up), `big` of them those of big messages;
    /// wakes the paused processes once the backlog is down to half the
    /// bound for some of them (each checks its own measure again).
    pub(crate) fn remove(&self, frames: usize, weight: usize, big: usize) {
        if frames == 0 {
            return;
        }
        self.frames.fetch_sub(frames, Ordering::Relaxed);
        self.small.fetch_sub(weight - big, Ordering::Relaxed);
        self.big.fetch_sub(big, Ordering::Relaxed);
        let low = self.limit / 2;
        if self.measure(false) <= low || self.measure(true) <= low {
            self.wake_all();
        }
    }

    /// Pauses the process of `waker` while the backlog is over half its
    /// bound for it; false if it need not wait.
    fn pause(&self, waker: &Waker, big: bool) -> bool {
        let mut paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        // Read under the lock `wake_all` takes: a removal that brings the
        // measure down after this check finds the waker kept.
        if self.released.load(Ordering::Acquire) || self.measure(big) <= self.limit / 2 {
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

/// A sender's pause on a backlog, from the send that took the backlog over
/// its bound for it.
#[derive(Debug, Clone)]
pub(crate) struct Pause {
    backlog: Arc<Backlog>,
    /// Whether that send was a big message.
    big: bool,
}

impl Pause {
    /// Of two pauses of one process, the one that holds it longer: a big
    /// message's, which waits for everything.
    pub(crate) fn longer(self, other: Option<Pause>) -> Pause {
        match other {
            Some(other) if other.big && !self.big => other,
            _ => self,
        }
    }

    /// Keeps the process of `waker` paused while the backlog is over half
    /// its bound for it; false once it may go on.
    pub(crate) fn holds(&self, waker: &Waker) -> bool {
        self.backlog.pause(waker, self.big)
    }
}
