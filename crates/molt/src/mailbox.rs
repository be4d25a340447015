//! A process's mailbox: where other processes' messages wait until the
//! process receives them.
//!
//! Two queues, as in Erlang's process structure: senders append to `inbox`
//! under its lock; the owning process moves what arrived into its `saved`
//! queue and scans that without any lock. `saved` belongs to the process's
//! task ([`TaskLocal`](crate::process::TaskLocal)); the mailbox keeps only a
//! copy of its length for introspection. Nothing in molt removes a message
//! except a receive by the owner, and nothing reorders: `saved` followed by
//! `inbox` is always the arrival order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Waker;

use molt_abi::{Envelope, Tag};

/// Queue capacity kept after the queue empties; beyond it the memory of a
/// burst of messages is freed (Erlang's garbage collection does the same).
const SHRINK_ABOVE: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    /// A spin lock that yields the thread while it waits: held only to push
    /// one message or to take the whole queue, and its release is a plain
    /// store, where a futex mutex's is a read-modify-write (about a tenth of
    /// a local round trip, measured).
    inbox: spin::mutex::SpinMutex<Inbox, spin::relax::Yield>,
    /// The owner's `saved` length as of its last poll.
    saved_len: AtomicUsize,
}

#[derive(Debug, Default)]
struct Inbox {
    queue: VecDeque<Envelope>,
    /// The owner's waker while it waits in a receive.
    waker: Option<Waker>,
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
        let waker = {
            let mut inbox = self.inbox.lock();
            inbox.queue.push_back(envelope);
            inbox.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// How many messages are queued (as of the owner's last poll for the
    /// ones it has already looked at).
    pub(crate) fn len(&self) -> usize {
        let inbox = self.inbox.lock().queue.len();
        inbox + self.saved_len.load(Ordering::Relaxed)
    }

    pub(crate) fn set_saved_len(&self, len: usize) {
        self.saved_len.store(len, Ordering::Relaxed);
    }

    /// Owner only. Offers `matcher` every queued message whose tag is in
    /// `tags`, oldest first, starting after the `cursor` messages an earlier
    /// pass of the same receive already looked at, and removes the first one
    /// it takes. If none, registers `waker` for the next arrival.
    pub(crate) fn receive(
        &self,
        saved: &mut VecDeque<Envelope>,
        tags: &[Tag],
        cursor: &mut usize,
        mut matcher: impl FnMut(&Envelope) -> bool,
        waker: &Waker,
    ) -> Scan {
        loop {
            while let Some(envelope) = saved.get(*cursor) {
                if tags.contains(&envelope.tag) && matcher(envelope) {
                    saved.remove(*cursor);
                    if saved.is_empty() && saved.capacity() > SHRINK_ABOVE {
                        // A burst is over: give its memory back.
                        *saved = VecDeque::new();
                    }
                    return Scan::Taken;
                }
                *cursor += 1;
            }
            let mut inbox = self.inbox.lock();
            if inbox.queue.is_empty() {
                // Registered under the senders' lock: a push after this sees it.
                match &inbox.waker {
                    Some(registered) if registered.will_wake(waker) => {}
                    _ => inbox.waker = Some(waker.clone()),
                }
                return Scan::Empty;
            }
            if saved.is_empty() {
                std::mem::swap(saved, &mut inbox.queue);
            } else {
                saved.append(&mut inbox.queue);
            }
        }
    }
}

#[cfg(test)]
mod tests;
