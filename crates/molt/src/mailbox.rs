//! A process's mailbox: where other processes' messages wait until the
//! process receives them.
//!
//! Two queues, as in Erlang's process structure: senders append to `inbox`
//! under its lock; the owning process moves what arrived into its `saved`
//! queue and scans that without any lock. `saved` belongs to the process's
//! task (in [`Received`], kept in [`TaskLocal`](crate::process::TaskLocal));
//! the mailbox keeps only a copy of its length for introspection. Nothing in
//! molt removes a message except a receive by the owner, and nothing
//! reorders: `saved` followed by `inbox` is always the arrival order.
//!
//! Waiting: a sender wakes the owner if `waiting` is set, and clears it. The
//! owner sets it (with its waker registered) under the lock whenever it
//! leaves the inbox empty, and remembers that it did (`Received::armed`).
//! Until a push raises `queued` again, nothing can have cleared it, so the
//! owner may go to sleep without taking the lock: one atomic load instead of
//! a lock round trip per wait.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::Waker;

use molt_abi::{Envelope, Tag};

/// A length for a 32-bit counter (only its being zero matters to `queued`).
fn saturating_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Queue capacity always kept; above it, a queue that falls to a quarter of
/// its capacity gives half of it back, so the memory of a burst is freed
/// even while a message stays queued (Erlang's garbage collection does the
/// same).
const SHRINK_ABOVE: usize = 1024;

/// Gives a sparse queue's memory back (see [`SHRINK_ABOVE`]). Halving when a
/// quarter full keeps the cost amortised: each element is moved at most a
/// constant number of times per burst.
fn shrink_if_sparse(queue: &mut VecDeque<Envelope>) {
    if queue.capacity() > SHRINK_ABOVE && queue.len() <= queue.capacity() / 4 {
        queue.shrink_to((queue.len() * 2).max(SHRINK_ABOVE));
    }
}

/// The owner's side of the mailbox: only the owning task touches it.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// Messages moved out of the inbox and not yet received, oldest first.
    pub(crate) saved: VecDeque<Envelope>,
    /// The owner left its task's waker registered, with `waiting` on and the
    /// inbox empty. See the module docs. Only the task's own waker is ever
    /// registered (the core takes no waker from a body), so whether the
    /// registered one is the right one needs no identity check; a receive
    /// made while the body is dropped registers a no-op waker, and a
    /// process that moves to another scheduler gets a new task: both must be
    /// followed by [`Received::disarm`].
    armed: bool,
}

impl Received {
    /// Forgets that a waker is registered, so the next receive registers
    /// the task's waker again under the lock.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    /// A spin lock that yields the thread while it waits: held only to push
    /// one message or to take the whole queue, and its release is a plain
    /// store, where a futex mutex's is a read-modify-write (about a tenth of
    /// a local round trip, measured).
    inbox: spin::mutex::SpinMutex<Inbox, spin::relax::Yield>,
    /// The inbox's length, written under its lock; read without it by the
    /// owner to see whether anything arrived since it last looked.
    queued: AtomicU32,
    /// The owner's `saved` length as of its last poll.
    saved_len: AtomicU32,
}

#[derive(Debug, Default)]
struct Inbox {
    queue: VecDeque<Envelope>,
    /// The owner's waker, registered by its last receive.
    waker: Option<Waker>,
    /// The next push must wake the owner.
    waiting: bool,
    /// The process ended: pushes are dropped.
    closed: bool,
}

impl Inbox {
    /// Marks the owner as waiting with `waker`.
    fn wait_with(&mut self, waker: &Waker) {
        self.waiting = true;
        match &self.waker {
            Some(registered) if registered.will_wake(waker) => {}
            _ => self.waker = Some(waker.clone()),
        }
    }
}

/// What one receive pass found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// The matcher took a message.
    Taken,
    /// Nothing matched; the waker is registered for the next arrival.
    Empty,
}

impl Mailbox {
    /// Appends a message and wakes the owner if it waits.
    pub(crate) fn push(&self, envelope: Envelope) {
        let mut inbox = self.inbox.lock();
        if inbox.closed {
            drop(inbox);
            return drop(envelope);
        }
        inbox.queue.push_back(envelope);
        self.queued.store(saturating_u32(inbox.queue.len()), Ordering::Release);
        if std::mem::take(&mut inbox.waiting)
            && let Some(waker) = &inbox.waker
        {
            // Woken under the lock, by reference: cloning the waker to
            // wake it outside would cost two atomic reference counts per
            // message. The registered waker is always the owner task's
            // own (see `Received::armed`), whose wake-up only queues the
            // task: a push onto its thread's queue, or onto another
            // thread's remote queue (unparking that thread if it sleeps).
            waker.wake_by_ref();
        }
    }

    /// Frees the queue of a process that ended: nothing will receive it, and
    /// a sender's cached reference to the process must not keep it.
    /// From then on pushes are dropped (a sender that saw the process alive
    /// an instant ago may still push).
    pub(crate) fn clear(&self) {
        let (queue, waker) = {
            let mut inbox = self.inbox.lock();
            inbox.closed = true;
            (std::mem::take(&mut inbox.queue), inbox.waker.take())
        };
        self.queued.store(0, Ordering::Release);
        drop((queue, waker));
    }

    /// How many messages are queued (as of the owner's last poll for the
    /// ones it has already looked at).
    pub(crate) fn len(&self) -> usize {
        let inbox = self.inbox.lock().queue.len();
        inbox + self.saved_len.load(Ordering::Relaxed) as usize
    }

    pub(crate) fn set_saved_len(&self, len: usize) {
        self.saved_len.store(saturating_u32(len), Ordering::Relaxed);
    }

    /// Owner only. Offers `matcher` every queued message whose tag is in
    /// `tags`, oldest first, starting after the `cursor` messages an earlier
    /// pass of the same receive already looked at, and removes the first one
    /// it takes. If none, registers `waker` for the next arrival.
    pub(crate) fn receive(
        &self,
        received: &mut Received,
        tags: &[Tag],
        cursor: &mut usize,
        mut matcher: impl FnMut(&Envelope) -> bool,
        waker: &Waker,
    ) -> Scan {
        let saved = &mut received.saved;
        loop {
            while let Some(envelope) = saved.get(*cursor) {
                if tags.contains(&envelope.tag) && matcher(envelope) {
                    // The oldest, almost always: a receive takes the first
                    // message that matches.
                    if *cursor == 0 {
                        saved.pop_front();
                    } else {
                        saved.remove(*cursor);
                    }
                    shrink_if_sparse(saved);
                    return Scan::Taken;
                }
                *cursor += 1;
            }
            if received.armed && self.queued.load(Ordering::Acquire) == 0 {
                // Still waiting since the last locked pass, and nothing came.
                return Scan::Empty;
            }
            let mut inbox = self.inbox.lock();
            if saved.is_empty() {
                std::mem::swap(saved, &mut inbox.queue);
            } else {
                saved.append(&mut inbox.queue);
            }
            // The inbox is empty; it keeps no burst's capacity.
            shrink_if_sparse(&mut inbox.queue);
            self.queued.store(0, Ordering::Relaxed);
            // The inbox is empty now: whatever comes next wakes the owner.
            inbox.wait_with(waker);
            received.armed = true;
            if *cursor == saved.len() {
                return Scan::Empty;
            }
        }
    }
}

#[cfg(test)]
mod tests;
