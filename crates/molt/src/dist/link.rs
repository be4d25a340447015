//! The writing side of a connection as the senders share it: while the
//! connection's writer has nothing to do (idle), a process sending a small
//! message to the peer numbers and encodes it itself, and its scheduler
//! thread writes it to the socket when the process yields (or once a
//! batch is full), as Erlang's sender writes to an idle distribution port
//! itself. A round trip then wakes no writer task on either side: two
//! cross-thread wake-ups fewer, each tens of microseconds on a busy
//! machine.
//!
//! The writer task and the senders take turns under one lock, so that the
//! bytes of one never land inside the other's: the task takes over
//! ([`Link::take_over`]) before it writes anything, with what senders
//! numbered and did not write yet, and hands back ([`Link::release`]) only
//! when it has written everything and nothing waits in the queue. While
//! the task holds it, senders queue (and notify it), as they do while no
//! connection carries the session, and over TLS, whose stream only the
//! task writes.

use std::cell::{Cell, RefCell};
use std::io::{IoSlice, Write};
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio_util::bytes::{Buf, BufMut, Bytes, BytesMut};

use super::frame::Frame;
use super::parts::{Numbered, PART};
use super::wire::Item;

/// What senders gather before their scheduler writes it, even if the
/// process has not yielded yet: a stream of sends goes out in batches.
const CORK: usize = 64 << 10;

pub(crate) struct Link {
    shared: Mutex<Shared>,
    /// A frame longer is not the senders' to write (the writer drops it).
    max_frame: usize,
    /// Whether senders gather at all: only where the node's watchdog
    /// writes what a process that does not yield gathered (else it would
    /// wait for the next heartbeat).
    gathers: bool,
    /// The writer task is wanted: a frame was queued for it, or a sender
    /// could not write everything.
    pub(super) wanted: Notify,
    /// How many numbered items were written or handed to the socket's
    /// writers in the session (what the peer may acknowledge).
    pub(super) written: AtomicU64,
}

#[derive(Default)]
struct Shared {
    /// The socket to write to, while a plain TCP connection carries the
    /// session (tokio watches it for room only).
    socket: Option<Arc<AsyncFd<TcpStream>>>,
    /// Whether senders write: the task has nothing to write.
    idle: bool,
    /// Items numbered by senders and not written yet, each as the codec
    /// reads it (length, then bytes).
    unwritten: BytesMut,
    /// Items numbered by senders since the task last took over, kept
    /// until acknowledged.
    numbered: Vec<Numbered>,
}

impl Shared {
    /// Senders stop writing, and hand over what they numbered.
    fn hand_over(&mut self) -> Handed {
        self.idle = false;
        Handed { numbered: std::mem::take(&mut self.numbered), unwritten: self.unwritten.split().freeze() }
    }
}

/// What senders numbered while the task was idle: its to keep, and (the
/// bytes) to write before anything else.
#[derive(Default)]
pub(super) struct Handed {
    pub(super) numbered: Vec<Numbered>,
    pub(super) unwritten: Bytes,
}

impl Link {
    pub(super) fn new(max_frame: usize, gathers: bool) -> Link {
        let shared = Mutex::new(Shared::default());
        Link { shared, max_frame, gathers, wanted: Notify::new(), written: AtomicU64::new(0) }
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `frame` if senders gather, the task is idle, a process sends
    /// it (in its turn) and it is small: numbered and gathered, to be written by
    /// [`Link::flush`]. Otherwise (or if the backlog is `holding` senders:
    /// the task asks the peer to acknowledge) `queue` gets it, the task is
    /// told, and it is `false`; `queue` handing it back is an error.
    pub(super) fn take_or_queue(
        &self,
        frame: Frame,
        weight: usize,
        holding: bool,
        queue: impl FnOnce(Frame) -> Result<(), Frame>,
    ) -> Result<bool, Frame> {
        let mut shared = self.shared();
        if self.gathers && shared.idle && !holding && in_turn() && frame.is_numbered() && frame.body_len() < PART / 2 {
            let bytes = frame.bytes();
            if bytes.len() <= PART.min(self.max_frame) {
                shared.unwritten.put_u32(bytes.len() as u32);
                shared.unwritten.extend_from_slice(&bytes);
                shared.numbered.push(Numbered { item: Item::whole(bytes), weight, frames: 1 });
                // Before its bytes can reach the peer, whose acknowledgement
                // of it the reader checks against this count.
                self.written.fetch_add(1, Ordering::Release);
                if shared.unwritten.len() >= CORK {
                    BATCH_FULL.with(|full| full.set(true));
                }
                return Ok(true);
            }
        }
        // Behind whatever senders gathered: the task writes that first.
        shared.idle = false;
        let queued = queue(frame);
        drop(shared);
        self.wanted.notify_one();
        queued.map(|()| false)
    }

    /// Whether senders gathered a batch's worth: written now, not when the
    /// process yields.
    fn full(&self) -> bool {
        self.shared().unwritten.len() >= CORK
    }

    /// Writes what senders gathered, as far as the socket takes it now;
    /// the rest is left to the task.
    pub(crate) fn flush(&self) {
        let mut shared = self.shared();
        if !shared.idle || shared.unwritten.is_empty() {
            return;
        }
        let Shared { socket, unwritten, .. } = &mut *shared;
        let Some(socket) = socket.as_ref() else { return };
        while !unwritten.is_empty() {
            match socket.get_ref().write(unwritten) {
                Ok(0) | Err(_) => break,
                Ok(n) => unwritten.advance(n),
            }
        }
        if !unwritten.is_empty() {
            // The socket is full, or broken: the task writes the rest, or
            // finds out.
            shared.idle = false;
            drop(shared);
            self.wanted.notify_one();
        }
    }

    /// The task starts writing: senders queue from now on; what they
    /// numbered and left unwritten is handed over.
    pub(super) fn take_over(&self) -> Handed {
        self.shared().hand_over()
    }

    /// The task wrote everything: senders write again, if `nothing_queued`
    /// still holds under the lock (a sender queues under it). `false`
    /// when something was queued meanwhile.
    pub(super) fn release(&self, nothing_queued: impl FnOnce() -> bool) -> bool {
        let mut shared = self.shared();
        if shared.socket.is_none() || !nothing_queued() {
            return false;
        }
        shared.idle = true;
        true
    }

    /// A plain TCP connection starts carrying the session: its socket, to
    /// write to, for the task (through [`LinkWrite`]) and senders.
    pub(super) fn attach(&self, socket: AsyncFd<TcpStream>) {
        let mut shared = self.shared();
        shared.idle = false;
        shared.socket = Some(Arc::new(socket));
    }

    /// The connection ends: senders queue again; what they numbered is
    /// handed back, to go on the next connection.
    pub(super) fn detach(&self) -> Handed {
        let mut shared = self.shared();
        shared.socket = None;
        shared.hand_over()
    }
}

thread_local! {
    /// While a process runs on this thread (its turn): the links its sends
    /// gathered frames on, written when the turn ends.
    static TURN: RefCell<Option<Vec<Arc<Link>>>> = const { RefCell::new(None) };
    /// A link of the turn gathered a batch's worth.
    static BATCH_FULL: Cell<bool> = const { Cell::new(false) };
}

fn in_turn() -> bool {
    TURN.with(|turn| turn.borrow().is_some())
}

/// A process's turn on this thread: what its sends gathered is written
/// when it ends (the process yielded, or ended). It keeps the turn it
/// interrupts, if any, to give it back.
pub(crate) struct Turn(Option<Vec<Arc<Link>>>);

impl Turn {
    pub(crate) fn start() -> Turn {
        Turn(TURN.with(|turn| turn.borrow_mut().replace(Vec::new())))
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let corked = TURN.with(|turn| std::mem::replace(&mut *turn.borrow_mut(), self.0.take())).unwrap_or_default();
        for link in corked {
            link.flush();
        }
    }
}

/// `link` gathered a frame in this turn: written when the turn ends.
pub(super) fn cork(link: &Arc<Link>) {
    TURN.with(|turn| {
        if let Some(corked) = turn.borrow_mut().as_mut()
            && !corked.iter().any(|known| Arc::ptr_eq(known, link))
        {
            corked.push(Arc::clone(link));
        }
    });
}

/// Writes now what a link gathered a batch of in this turn (called
/// outside the node's locks).
pub(super) fn settle() {
    if !BATCH_FULL.with(|full| full.replace(false)) {
        return;
    }
    let full: Vec<Arc<Link>> = TURN
        .with(|turn| turn.borrow().as_ref().map(|corked| corked.iter().filter(|link| link.full()).cloned().collect()))
        .unwrap_or_default();
    for link in full {
        link.flush();
    }
}

/// The task's writing half over a link's socket. It writes only between
/// [`Link::take_over`] and [`Link::release`], when no sender does: no lock
/// is held while it writes (megabytes of parts, at times).
pub(super) struct LinkWrite(pub(super) Arc<Link>);

impl LinkWrite {
    fn write_with(
        &self,
        cx: &mut Context<'_>,
        write: impl Fn(&TcpStream) -> std::io::Result<usize>,
    ) -> Poll<std::io::Result<usize>> {
        let Some(socket) = self.0.shared().socket.clone() else {
            return Poll::Ready(Err(std::io::ErrorKind::NotConnected.into()));
        };
        loop {
            let mut ready = std::task::ready!(socket.poll_write_ready(cx))?;
            if let Ok(written) = ready.try_io(|socket| write(socket.get_ref())) {
                return Poll::Ready(written);
            }
        }
    }
}

impl AsyncWrite for LinkWrite {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.write_with(cx, |mut socket| socket.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.write_with(cx, |mut socket| socket.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Closes the writing side (the reading side, another descriptor of
    /// the socket, stays open for the peer's last words).
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut shared = self.0.shared();
        shared.idle = false;
        if let Some(socket) = shared.socket.take() {
            let _ = socket.get_ref().shutdown(std::net::Shutdown::Write);
        }
        Poll::Ready(Ok(()))
    }
}
