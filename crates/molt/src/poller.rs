//! The epoll an idle scheduler of a distributed node waits in instead of
//! parking: its own wake-up (an eventfd, written by other threads as they
//! would unpark it) and the sockets of the connections it reads
//! (`dist/read_side.rs`). A frame from another node is then read, and its
//! message delivered, by the thread that runs the process it is for: one
//! cross-thread wake-up where the I/O thread took two (itself, then that
//! thread), each some 15 µs on these machines. Erlang's schedulers poll
//! the node's I/O in the same way (`check_io`) between their processes.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use rustix::event::{EventfdFlags, Timespec, epoll, eventfd};

/// What reads the sockets a poller reports readable.
pub(crate) trait IoHandler: Send + Sync {
    /// `token`'s socket is readable (or closed); called on the thread of
    /// scheduler `index`, with none of its tasks borrowed.
    fn readable(&self, index: usize, token: u64);

    /// Scheduler `index`, idle, looks at its busy siblings: one held in a
    /// single poll since its last look gives up the sockets it reads.
    fn tick(&self, index: usize);
}

/// The token of the poller's own wake-up.
const WAKE: u64 = u64::MAX;

/// Events taken from one wait.
const EVENTS: usize = 16;

pub(crate) struct Poller {
    epoll: OwnedFd,
    /// Written to wake the scheduler; edge-triggered, so never read (one
    /// write, one wake-up; the counter cannot reach its bound).
    wake: OwnedFd,
    handler: Weak<dyn IoHandler>,
    /// Sockets registered: a busy scheduler looks at them now and then
    /// only if there are any.
    sockets: AtomicUsize,
    /// Its scheduler sleeps in it with no bound, not looking at its
    /// siblings (see `WATCH_AFTER_BUSY` in `executor.rs`): a sibling that
    /// reads sockets wakes it as it starts running, and a socket coming to
    /// a sibling does too.
    unwatched: AtomicBool,
    /// Big messages crossing the node's connections now (shared by the
    /// node's pollers).
    transfers: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller").field("sockets", &self.sockets.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

impl Poller {
    pub(crate) fn new(handler: Weak<dyn IoHandler>, transfers: Arc<AtomicUsize>) -> std::io::Result<Poller> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(&epoll, &wake, epoll::EventData::new_u64(WAKE), epoll::EventFlags::IN | epoll::EventFlags::ET)?;
        Ok(Poller { epoll, wake, handler, sockets: AtomicUsize::new(0), unwatched: AtomicBool::new(false), transfers })
    }

    /// Watches `socket` for reading (level-triggered: bytes already there
    /// are reported at the next wait), as `token`.
    pub(crate) fn add(&self, socket: BorrowedFd<'_>, token: u64) -> std::io::Result<()> {
        let flags = epoll::EventFlags::IN | epoll::EventFlags::RDHUP;
        epoll::add(&self.epoll, socket, epoll::EventData::new_u64(token), flags)?;
        // SeqCst, as `unwatched`: a sibling going to sleep unwatched as
        // this socket comes sees it, or is seen asleep.
        self.sockets.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Stops watching `socket` (added with [`Poller::add`]).
    pub(crate) fn delete(&self, socket: BorrowedFd<'_>) {
        if epoll::delete(&self.epoll, socket).is_ok() {
            self.sockets.fetch_sub(1, Ordering::SeqCst);
        }
    }

    pub(crate) fn has_sockets(&self) -> bool {
        self.sockets.load(Ordering::SeqCst) > 0
    }

    /// Its scheduler is about to sleep unwatched.
    pub(crate) fn sleeps_unwatched(&self) {
        self.unwatched.store(true, Ordering::SeqCst);
    }

    /// Its scheduler sleeps no more, or watches after all: whether it was
    /// still unwatched (false: a sibling woke it to watch).
    pub(crate) fn watches(&self) -> bool {
        self.unwatched.swap(false, Ordering::SeqCst)
    }

    /// Wakes its scheduler if it sleeps unwatched: once a sleep.
    pub(crate) fn wake_if_unwatched(&self) {
        if self.unwatched.swap(false, Ordering::SeqCst) {
            self.wake();
        }
    }

    /// Whether no big message crosses a connection of the node: the cores
    /// are not needed for copying, and a scheduler may spin for an answer.
    pub(crate) fn quiet(&self) -> bool {
        self.transfers.load(Ordering::Relaxed) == 0
    }

    /// Wakes the scheduler waiting in [`Poller::wait`] (or its next wait).
    pub(crate) fn wake(&self) {
        // Only a full counter refuses, and one write per wake-up does not
        // fill a u64.
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }

    /// Scheduler `index` waited a tick for nothing: see [`IoHandler::tick`].
    pub(crate) fn tick(&self, index: usize) {
        if let Some(handler) = self.handler.upgrade() {
            handler.tick(index);
        }
    }

    /// Waits at most `timeout` (`None`: until woken or a socket is
    /// readable), then hands each readable socket to the handler, on this
    /// thread (scheduler `index`'s): whether there was any.
    pub(crate) fn wait(&self, index: usize, timeout: Option<Duration>) -> bool {
        let timeout = timeout.map(|timeout| Timespec {
            tv_sec: timeout.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: timeout.subsec_nanos().into(),
        });
        let mut events =
            [epoll::Event { flags: epoll::EventFlags::empty(), data: epoll::EventData::new_u64(0) }; EVENTS];
        let ready = match epoll::wait(&self.epoll, &mut events, timeout.as_ref()) {
            Ok(ready) => ready,
            // Interrupted, or a timeout the kernel refuses: the loop comes
            // back.
            Err(_) => return false,
        };
        let Some(handler) = self.handler.upgrade() else { return false };
        let mut any = false;
        for event in &events[..ready] {
            let token = event.data.u64();
            if token != WAKE {
                any = true;
                handler.readable(index, token);
            }
        }
        any
    }
}
