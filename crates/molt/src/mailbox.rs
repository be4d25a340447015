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
//! Waiting: a sender wakes the owner's task if `waiting` is set, and clears
//! it. The task is attached by the core whenever the process gets one (at
//! its start, and at each move to another scheduler), before that task can
//! run, so a receive registers no waker. The owner sets `waiting` under the
//! lock whenever it leaves the inbox empty, and remembers that it did
//! (`Received::armed`).
//! Until a push raises `queued` again, nothing can have cleared it, so the
//! owner may go to sleep without taking the lock: one atomic load instead of
//! a lock round trip per wait.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};

use molt_abi::{Envelope, Tag};

use crate::executor::AbortHandle;

/// A length for a 32-bit counter (only its being zero matters to `queued`).
fn saturating_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Queue capacity a waiting process keeps; above it, a queue that falls to
/// a quarter of its capacity gives half of it back, so the memory of a
/// burst is freed even while a message stays queued (Erlang's garbage
/// collection does the same).
const SHRINK_ABOVE: usize = 1024;

/// Queue capacity kept while the process is taking messages (until a
/// receive finds nothing): a stream drained in batches of a few thousand
/// would otherwise shrink its queue as each batch drains and grow it again
/// as the next arrives, a copy each way (one-way messages 4-15% slower,
/// alternated). When the process is about to wait, [`SHRINK_ABOVE`] holds
/// again, so an idle process keeps no stream's room.
const STREAM_ROOM: usize = 8192;

/// Gives a sparse queue's memory back, keeping `keep` (see [`SHRINK_ABOVE`]).
/// Halving when a quarter full keeps the cost amortised: each element is
/// moved at most a constant number of times per burst.
/// The check is inlined (every receive makes it); the shrink is not.
#[inline(always)]
fn shrink_if_sparse(queue: &mut VecDeque<Envelope>, keep: usize) {
    if queue.capacity() > keep && queue.len() <= queue.capacity() / 4 {
        shrink(queue);
    }
}

#[cold]
#[inline(never)]
fn shrink(queue: &mut VecDeque<Envelope>) {
    if queue.is_empty() {
        // No block at all: `realloc` to a smaller one would copy the old
        // one's unused bytes.
        *queue = VecDeque::new();
        return;
    }
    queue.shrink_to((queue.len() * 2).max(SHRINK_ABOVE));
}

/// How a sender or the owner waits for the inbox lock: the lock is held
/// for one push or one swap, a few dozen nanoseconds, so a waiter spins a
/// little first; it yields its thread only after [`SPINS_BEFORE_YIELD`]
/// rounds, for a holder that the OS preempted. (Yielding at once made a
/// stream of sends to one process spend a tenth of its receiver's time in
/// `sched_yield`, perf.)
#[derive(Debug)]
struct Backoff;

/// Rounds of spinning ([`PAUSES_PER_ROUND`] pauses each) between yields.
const SPINS_BEFORE_YIELD: u32 = 16;
const PAUSES_PER_ROUND: u32 = 8;

thread_local! {
    /// Rounds this thread has waited for an inbox lock.
    static WAITED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

impl spin::relax::RelaxStrategy for Backoff {
    fn relax() {
        let round = WAITED.with(|waited| {
            let round = waited.get().wrapping_add(1);
            waited.set(round);
            round
        });
        if round.is_multiple_of(SPINS_BEFORE_YIELD) {
            std::thread::yield_now();
        } else {
            for _ in 0..PAUSES_PER_ROUND {
                std::hint::spin_loop();
            }
        }
    }
}

/// The owner's side of the mailbox: only the owning task touches it.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// Messages moved out of the inbox and not yet received, oldest first.
    pub(crate) saved: VecDeque<Envelope>,
    /// The capacity the inbox's queue had when the owner last took it (only
    /// pushes change it since, and a push also raises `queued`): above
    /// [`SHRINK_ABOVE`], the owner shrinks it before it waits.
    inbox_room: u32,
    /// The owner left `waiting` on with the inbox empty. See the module
    /// docs. A process that moves to another scheduler gets a new task,
    /// which must look at the inbox under the lock once: a move is followed
    /// by [`Received::disarm`].
    armed: bool,
}

impl Received {
    /// Forgets that `waiting` is on, so the next receive looks at the inbox
    /// under the lock again.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    /// A spin lock that spins a little, then yields the thread while it
    /// waits (see [`Backoff`]): held only to push
    /// one message or to take the whole queue, and its release is a plain
    /// store, where a futex mutex's is a read-modify-write (about a tenth of
    /// a local round trip, measured).
    inbox: spin::mutex::SpinMutex<Inbox, Backoff>,
    /// The inbox's length, written under its lock; read without it by the
    /// owner to see whether anything arrived since it last looked.
    queued: AtomicU32,
    /// The owner's `saved` length as of its last poll.
    saved_len: AtomicU32,
}

#[derive(Debug, Default)]
struct Inbox {
    queue: VecDeque<Envelope>,
    /// The owner's task (a handle, where a `Waker` is twice the size).
    task: Option<AbortHandle>,
    /// The next push must wake the owner.
    waiting: bool,
    /// The process ended: pushes are dropped.
    closed: bool,
}

/// What one receive pass found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// The matcher took a message.
    Taken,
    /// Nothing matched; the next arrival wakes the owner's task.
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
            && let Some(task) = &inbox.task
        {
            // Woken under the lock, by reference: cloning the handle to
            // wake it outside would cost two atomic reference counts per
            // message. The wake-up only queues the task: a push onto its
            // thread's queue, or onto another thread's remote queue
            // (unparking that thread if it sleeps).
            task.wake();
        }
    }

    /// Makes `task` the one a message wakes: the process runs in it from
    /// now on.
    pub(crate) fn attach(&self, task: AbortHandle) {
        let old = self.inbox.lock().task.replace(task);
        drop(old);
    }

    /// Frees the queue of a process that ended: nothing will receive it, and
    /// a sender's cached reference to the process must not keep it.
    /// From then on pushes are dropped (a sender that saw the process alive
    /// an instant ago may still push).
    pub(crate) fn clear(&self) {
        let (queue, task) = {
            let mut inbox = self.inbox.lock();
            inbox.closed = true;
            (std::mem::take(&mut inbox.queue), inbox.task.take())
        };
        self.queued.store(0, Ordering::Release);
        drop((queue, task));
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
    /// it takes. If none, the next arrival wakes the owner's task.
    pub(crate) fn receive(
        &self,
        received: &mut Received,
        tags: &[Tag],
        cursor: &mut usize,
        mut matcher: impl FnMut(&Envelope) -> bool,
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
                    shrink_if_sparse(saved, STREAM_ROOM);
                    return Scan::Taken;
                }
                *cursor += 1;
            }
            if received.armed && self.queued.load(Ordering::Acquire) == 0 {
                // Still waiting since the last locked pass, and nothing came.
                self.before_waiting(received);
                return Scan::Empty;
            }
            let mut inbox = self.inbox.lock();
            if saved.is_empty() {
                std::mem::swap(saved, &mut inbox.queue);
            } else {
                saved.append(&mut inbox.queue);
            }
            self.queued.store(0, Ordering::Relaxed);
            // The inbox is empty now: whatever comes next wakes the owner.
            inbox.waiting = true;
            received.armed = true;
            // The inbox is empty: it keeps a stream's room while the owner
            // takes messages, and none once it waits.
            let found_nothing = *cursor == saved.len();
            shrink_if_sparse(&mut inbox.queue, if found_nothing { SHRINK_ABOVE } else { STREAM_ROOM });
            received.inbox_room = saturating_u32(inbox.queue.capacity());
            if found_nothing {
                drop(inbox);
                self.before_waiting(received);
                return Scan::Empty;
            }
        }
    }

    /// The owner found nothing and is about to wait: the room its queues
    /// kept for a stream (see [`STREAM_ROOM`]) goes back, down to
    /// [`SHRINK_ABOVE`]; the inbox's under its lock, only if it has more.
    #[inline(always)]
    fn before_waiting(&self, received: &mut Received) {
        shrink_if_sparse(&mut received.saved, SHRINK_ABOVE);
        if received.inbox_room as usize > SHRINK_ABOVE {
            self.shrink_inbox(received);
        }
    }

    #[cold]
    #[inline(never)]
    fn shrink_inbox(&self, received: &mut Received) {
        let mut inbox = self.inbox.lock();
        shrink_if_sparse(&mut inbox.queue, SHRINK_ABOVE);
        received.inbox_room = saturating_u32(inbox.queue.capacity());
    }
}

#[cfg(test)]
mod tests;
