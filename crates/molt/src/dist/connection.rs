//! One established connection, and the session it carries: a writer that
//! drains the peer's queue into the socket (and ticks when there is nothing
//! to say), and a reader that hands every frame to the node. Messages and
//! signals are numbered per session and kept until the peer acknowledges
//! them, so a session outlives a connection that breaks: the next one
//! opens with each side's count of what it delivered, and the writer
//! resends the rest, in order, once. Big frames go in parts between the
//! small ones (`parts.rs`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::StreamExt;
use molt_abi::{NodeDownReason, NodeId};
use tokio::io::AsyncReadExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, mpsc};
use tokio_util::bytes::Bytes;

use super::frame::{Farewell, Frame};
use super::handshake::HandshakeStream;
use super::link::{Link, LinkWrite};
use super::parts::{Joiner, Lane, Numbered, Out, Outbox, PART};
use super::wire::{self, Item, Writer};
use super::{Backlog, Dist};

/// What the node queues for a peer: a frame, and the lane it keeps its
/// order in.
pub(super) type Queued = (Lane, Frame);

/// What outlives a connection: the queue towards the peer, what was
/// written and not yet acknowledged, and what was delivered from the
/// peer.
pub(super) struct Session {
    pub(super) queue: mpsc::UnboundedReceiver<Queued>,
    /// Where senders write while the connection's writer is idle.
    pub(super) link: Arc<Link>,
    /// Big frames going out in parts, and the frames behind them.
    outbox: Outbox,
    unacked: Unacked,
    /// How many numbered items from the peer were delivered here.
    received: u64,
    /// Big frames from the peer coming in parts.
    joiner: Joiner,
}

impl Session {
    pub(super) fn new(queue: mpsc::UnboundedReceiver<Queued>, link: Arc<Link>, max_frame: usize) -> Session {
        Session {
            queue,
            link,
            outbox: Outbox::new(max_frame),
            unacked: Unacked::default(),
            received: 0,
            joiner: Joiner::default(),
        }
    }

    /// Empties a session nobody will carry on: how many frames in it were
    /// not known to be delivered (queued, or written and unacknowledged).
    pub(super) fn lose(&mut self) -> u64 {
        self.unacked.absorb(self.link.detach().numbered);
        let mut lost = self.unacked.lose();
        lost += self.outbox.lose();
        while self.queue.try_recv().is_ok() {
            lost += 1;
        }
        lost
    }
}

/// Numbered items written and not acknowledged, oldest first.
#[derive(Default)]
struct Unacked {
    items: VecDeque<Numbered>,
    /// How many numbered items the peer said it delivered: the first item
    /// is number `acked + 1`.
    acked: u64,
    /// The bytes of parts among the items.
    in_parts: usize,
}

impl Unacked {
    /// How many numbered items were written in the session.
    fn written(&self) -> u64 {
        self.acked + self.items.len() as u64
    }

    /// Keeps `items`, written next; where they start among the items.
    fn extend(&mut self, items: Vec<Numbered>) -> usize {
        let fresh = self.items.len();
        self.in_parts += items.iter().map(|numbered| numbered.item.raw.len()).sum::<usize>();
        self.items.extend(items);
        fresh
    }

    /// Keeps `items`, which senders numbered and wrote (or handed over to
    /// be written) themselves.
    fn absorb(&mut self, items: Vec<Numbered>) {
        self.items.extend(items);
    }

    /// Forgets what the peer acknowledged (`peer_acked` items in all),
    /// taking it off the backlog; how many items that was.
    fn trim(&mut self, peer_acked: u64, backlog: &Backlog) -> usize {
        let done = (peer_acked.saturating_sub(self.acked) as usize).min(self.items.len());
        let (mut frames, mut weight, mut big) = (0, 0, 0);
        for numbered in self.items.drain(..done) {
            (frames, weight) = (frames + numbered.frames, weight + numbered.weight);
            self.in_parts -= numbered.item.raw.len();
            if Backlog::is_big(numbered.weight) {
                big += numbered.weight;
                // The last part of a big message: the payload goes with it,
                // freed off this thread (unmapping megabytes takes
                // milliseconds the connections' other frames would wait).
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn_blocking(move || drop(numbered));
                }
            }
        }
        self.acked += done as u64;
        backlog.remove(frames, weight, big);
        done
    }

    /// Empties it: how many frames it held (a frame in parts counts once,
    /// with the item that completes it).
    fn lose(&mut self) -> u64 {
        let lost = self.items.iter().map(|numbered| numbered.frames as u64).sum();
        self.items.clear();
        self.in_parts = 0;
        lost
    }
}

/// What woke a connection's writer.
enum Event {
    /// Frames were queued.
    Queued,
    /// Parts may go.
    Parts,
    /// The peer acknowledged more.
    AckedMore,
    /// This side has more to acknowledge.
    AckDue,
    /// The peer pinged.
    Pong,
    /// Time to ping.
    Tick,
}

/// Frames written before a flush: a burst goes out in few system calls.
const BATCH: usize = 64;

/// The parts' bytes written in one go (the open streams in turn, as many
/// rounds as fit): 512 KiB take a quarter of a millisecond over loopback,
/// what a small frame queued meanwhile waits at most behind them (and a
/// part). A part a write, 500 MiB in 1 MiB messages took 14,700 writes;
/// now 7,000 (the socket takes less than 512 KiB at a time when its
/// buffer is full), and with the reads of `wire::reader`, 0.39 s instead
/// of 0.50-0.56 s.
const PARTS_WRITE: usize = 512 << 10;

/// The peer is asked for an acknowledgement after this many frames, or
/// this many bytes, from it: what the writer keeps for a resend stays
/// small.
const ACK_FRAMES: u64 = 64;
const ACK_BYTES: usize = WINDOW / 4;

/// The bytes of big frames' parts written and not acknowledged at most
/// (the window): past it, parts wait for the peer's acknowledgement, and
/// small frames find at most this much ahead of them in the sockets'
/// buffers (which over loopback grow to tens of megabytes). What 1 GB/s
/// moves in the least round trip of the connection's pings, within these
/// bounds: a megabyte over loopback, 50 over a link of 50 ms.
const WINDOW: usize = 1 << 20;
const MAX_WINDOW: usize = 64 << 20;

/// The window for a round trip of `micros` microseconds (0: none timed).
fn window(micros: u64) -> usize {
    usize::try_from(micros.saturating_mul(1000)).unwrap_or(MAX_WINDOW).clamp(WINDOW, MAX_WINDOW)
}

/// How long a connection whose writer ended goes on reading, for the
/// peer's last words.
const GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// Whether a connection that ended so leaves its session to a next one.
pub(super) fn resumable(why: &NodeDownReason) -> bool {
    matches!(why, NodeDownReason::ConnectionClosed)
}

/// Runs the connection to `peer` until it ends, or `stop` is notified (a
/// resumed connection replaces it): why it ended. `opened` runs once both
/// sides said where they stand; once `closed` is set, nothing read is
/// delivered.
#[allow(clippy::too_many_arguments)] // the connection's parts, each from its owner
pub(super) async fn run(
    dist: &Arc<Dist>,
    peer: NodeId,
    stream: HandshakeStream,
    welcome: Option<Bytes>,
    session: &mut Session,
    backlog: &Backlog,
    stop: &Notify,
    closed: &AtomicBool,
    round_trip: &AtomicU64,
    opened: impl FnOnce(),
) -> NodeDownReason {
    let Session { queue, link, outbox, unacked, received, joiner } = session;
    // The halves apart: a reader with what the handshake read ahead, and
    // a writer; over plain TCP, the link's, which senders write to too.
    let parts = stream.into_parts();
    let (read_half, write_half): (Box<dyn AsyncRead + Send + Unpin>, Box<dyn AsyncWrite + Send + Unpin>) =
        match super::tls::plain(parts.io) {
            Ok(socket) => {
                let (read_half, write_half) = socket.into_split();
                link.attach(write_half);
                (Box::new(read_half), Box::new(LinkWrite(Arc::clone(link))))
            }
            Err(io) => {
                let (read_half, write_half) = tokio::io::split(io);
                (Box::new(read_half), Box::new(write_half))
            }
        };
    // Read first, before the socket: a reader told of buffered bytes only
    // looks at them after its next read.
    let read_ahead = std::io::Cursor::new(parts.read_buf);
    let mut frames = wire::reader(read_ahead.chain(read_half));
    let mut sink = Writer::new(write_half);
    let detection = dist.config.detection;
    // Shared by the two halves (one task: no lock).
    let delivered = AtomicU64::new(*received);
    // How many of those this side acknowledged.
    let acked_here = AtomicU64::new(*received);
    let peer_acked = AtomicU64::new(unacked.acked);
    let written = &link.written;
    written.store(unacked.written(), Ordering::Release);
    let first_ack = Notify::new();
    let ack_due = Notify::new();
    // Whether an `AckPlease` went out that the peer did not answer yet
    // (it answers with the next acknowledgement that moves).
    let asked = AtomicBool::new(false);
    // The peer acknowledged more: what it has is let go at once, and the
    // backlog with it (a sender paused on it may be waiting).
    let acked_more = Notify::new();
    // The last ping, and when it went (since `born`); the ping to answer.
    let born = std::time::Instant::now();
    let (ping_id, ping_at) = (AtomicU64::new(0), AtomicU64::new(0));
    // The least round trip of the connection, in microseconds: the window
    // is sized from it (a ping behind a window of parts would time the
    // window, and grow it).
    let least_round_trip = AtomicU64::new(0);
    let (pong_due, pong) = (AtomicU64::new(0), Notify::new());
    let writer = async {
        if let Some(welcome) = welcome {
            sink.feed(Item::whole(welcome));
        }
        // Where this side stands, then where the peer does: what it lacks
        // is written again, in order, before anything new.
        if send(&mut sink, &Frame::Ack(acked_here.load(Ordering::Relaxed))).await.is_err() {
            return NodeDownReason::ConnectionClosed;
        }
        first_ack.notified().await;
        opened();
        unacked.trim(peer_acked.load(Ordering::Relaxed), backlog);
        for numbered in unacked.items.iter() {
            sink.feed(numbered.item.clone());
        }
        if sink.flush().await.is_err() {
            return NodeDownReason::ConnectionClosed;
        }
        // The first tick is at once: the round trip is known from the start.
        let mut tick = tokio::time::interval(detection / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut out = Out::default();
        // What was queued while no connection carried the session.
        link.wanted.notify_one();
        loop {
            let (mut farewell, mut queue_closed) = (None, false);
            let event = tokio::select! {
                () = link.wanted.notified() => Event::Queued,
                () = std::future::ready(()),
                    if outbox.has_parts() && unacked.in_parts < window(least_round_trip.load(Ordering::Relaxed)) =>
                {
                    Event::Parts
                }
                () = acked_more.notified() => Event::AckedMore,
                () = ack_due.notified() => Event::AckDue,
                () = pong.notified() => Event::Pong,
                _ = tick.tick() => Event::Tick,
            };
            // Senders stop writing; what they numbered goes first.
            let handed = link.take_over();
            unacked.absorb(handed.numbered);
            sink.feed_encoded(handed.unwritten);
            match event {
                Event::Queued => {
                    for _ in 0..BATCH {
                        let (lane, frame) = match queue.try_recv() {
                            Ok(queued) => queued,
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => {
                                queue_closed = true;
                                break;
                            }
                        };
                        match frame {
                            Frame::Goodbye(why) => {
                                backlog.remove(1, frame.weight(), 0);
                                farewell = Some(why);
                                break;
                            }
                            frame => outbox.push(lane, frame, &mut out),
                        }
                    }
                    if farewell.is_some() {
                        // The goodbye goes after everything before it.
                        while outbox.has_parts() {
                            outbox.parts(&mut out, usize::MAX);
                        }
                    }
                }
                Event::Parts => {
                    // Parts up to a write's worth, within the window: one
                    // system call carries several.
                    let room = window(least_round_trip.load(Ordering::Relaxed)).saturating_sub(unacked.in_parts);
                    let mut budget = room.min(PARTS_WRITE);
                    while outbox.has_parts() && budget > 0 {
                        match outbox.parts(&mut out, budget) {
                            0 => break,
                            taken => budget = budget.saturating_sub(taken),
                        }
                    }
                }
                Event::AckedMore => {
                    // What was written after the last request is still
                    // held against the senders: asked for too.
                    unacked.trim(peer_acked.load(Ordering::Relaxed), backlog);
                    if backlog.holding() && !unacked.items.is_empty() && !asked.swap(true, Ordering::Relaxed) {
                        feed(&mut sink, &Frame::AckPlease);
                    }
                }
                Event::AckDue => {
                    let now = delivered.load(Ordering::Relaxed);
                    if now > acked_here.swap(now, Ordering::Relaxed) {
                        feed(&mut sink, &Frame::Ack(now));
                    }
                }
                Event::Pong => feed(&mut sink, &Frame::Pong(pong_due.load(Ordering::Relaxed))),
                Event::Tick => {
                    let now = delivered.load(Ordering::Relaxed);
                    if now > acked_here.swap(now, Ordering::Relaxed) {
                        feed(&mut sink, &Frame::Ack(now));
                    }
                    let id = ping_id.load(Ordering::Relaxed) + 1;
                    ping_at.store(born.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    ping_id.store(id, Ordering::Relaxed);
                    feed(&mut sink, &Frame::Ping(id));
                }
            }
            // What the outbox made of it: numbered and kept before any is
            // written, so that a write that fails leaves them all to the
            // next connection.
            unacked.trim(peer_acked.load(Ordering::Relaxed), backlog);
            if out.dropped > 0 {
                dropped(dist, &out, backlog);
            }
            let fresh = unacked.extend(std::mem::take(&mut out).items);
            written.store(unacked.written(), Ordering::Release);
            if queue_closed {
                // The entry is going down: what was taken is counted with
                // the rest of the session as lost.
                return NodeDownReason::Disconnected;
            }
            for numbered in unacked.items.range(fresh..) {
                sink.feed(numbered.item.clone());
            }
            if let Some(why) = farewell {
                // After a last word of what arrived, so that the peer
                // counts nothing of it as lost; then the write half
                // closes, and the peer, having read the goodbye, closes
                // too (see below).
                feed(&mut sink, &Frame::Ack(delivered.load(Ordering::Relaxed)));
                if send(&mut sink, &Frame::Goodbye(why)).await.is_ok() {
                    let _ = sink.close().await;
                }
                return NodeDownReason::Disconnected;
            }
            // Senders pause on what waits: the peer is asked to
            // acknowledge it now, not after its next 64 frames.
            if backlog.holding() && !unacked.items.is_empty() && !asked.swap(true, Ordering::Relaxed) {
                feed(&mut sink, &Frame::AckPlease);
            }
            if sink.flush().await.is_err() {
                return NodeDownReason::ConnectionClosed;
            }
            // Everything is written: senders write again, unless frames
            // wait here (left for the next round).
            let released = outbox.is_empty() && link.release(|| queue.is_empty());
            if !released && !queue.is_empty() {
                link.wanted.notify_one();
            }
            // The reader shares this task: while parts keep the socket
            // writable, it gets a turn after each round of them, so that a
            // small answer is not read only after megabytes were written.
            if outbox.has_parts() {
                tokio::task::yield_now().await;
            }
        }
    };
    let reader = async {
        let mut first = true;
        let (mut since_ack, mut bytes_since_ack) = (0, 0);
        let mut read_since_turn = 0;
        // The peer asked for an acknowledgement when there was nothing new
        // to acknowledge: it goes with the next item delivered.
        let mut ack_wanted = false;
        loop {
            let item = match tokio::time::timeout(detection, frames.next()).await {
                Err(_) => return NodeDownReason::HeartbeatTimeout,
                Ok(None) => return NodeDownReason::ConnectionClosed,
                Ok(Some(Err(e))) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return NodeDownReason::ProtocolError(format!(
                        "an item over the limit of {} bytes",
                        wire::MAX_ITEM
                    ));
                }
                Ok(Some(Err(_))) => return NodeDownReason::ConnectionClosed,
                Ok(Some(Ok(bytes))) => bytes,
            };
            let (frame, raw) = match Frame::decode(&item) {
                Err(_) => return NodeDownReason::ProtocolError("a frame that is not one of the protocol's".into()),
                Ok(decoded) => decoded,
            };
            // A part is bounded by its stream; a whole frame by the limit.
            if item.len() > dist.config.max_frame && !matches!(frame, Frame::Part { .. }) {
                return NodeDownReason::ProtocolError(format!(
                    "a frame of {} bytes, over the limit of {}",
                    item.len(),
                    dist.config.max_frame
                ));
            }
            if first && !matches!(frame, Frame::Ack(_)) {
                return NodeDownReason::ProtocolError("a connection that does not open with an acknowledgement".into());
            }
            match frame {
                Frame::Goodbye(Farewell::Shutdown) => return NodeDownReason::PeerShutdown,
                Frame::Goodbye(Farewell::Disconnect) => return NodeDownReason::Disconnected,
                Frame::AckPlease => {
                    ack_wanted = delivered.load(Ordering::Relaxed) == acked_here.load(Ordering::Relaxed);
                    if !ack_wanted {
                        ack_due.notify_one();
                    }
                }
                Frame::Ping(n) => {
                    pong_due.store(n, Ordering::Relaxed);
                    pong.notify_one();
                }
                Frame::Pong(n) => {
                    // The answer to the last ping, once.
                    if n == ping_id.load(Ordering::Relaxed) && ping_at.load(Ordering::Relaxed) != u64::MAX {
                        let took = (born.elapsed().as_nanos() as u64)
                            .saturating_sub(ping_at.swap(u64::MAX, Ordering::Relaxed));
                        let micros = (took / 1000).max(1);
                        round_trip.store(micros, Ordering::Relaxed);
                        let least = least_round_trip.load(Ordering::Relaxed);
                        if least == 0 || micros < least {
                            least_round_trip.store(micros, Ordering::Relaxed);
                        }
                    }
                }
                Frame::Ack(n) => {
                    let (before, sent) = (peer_acked.load(Ordering::Relaxed), written.load(Ordering::Acquire));
                    if n < before || n > sent {
                        return NodeDownReason::ProtocolError(format!(
                            "an acknowledgement of {n} frames, after {before}, of {sent} written"
                        ));
                    }
                    peer_acked.store(n, Ordering::Relaxed);
                    if n > before {
                        asked.store(false, Ordering::Relaxed);
                    }
                    if std::mem::take(&mut first) {
                        first_ack.notify_one();
                    } else {
                        acked_more.notify_one();
                    }
                }
                // This side said goodbye, or gave the peer up: its links and
                // monitors across have fired, so nothing more is delivered.
                _ if closed.load(Ordering::Relaxed) => {}
                frame => {
                    let numbered = frame.is_numbered();
                    let whole = match frame {
                        Frame::Open { stream, head, body } => {
                            joiner.open(stream, head, body, dist.config.max_frame).map(|()| None)
                        }
                        Frame::Part { stream } => joiner.part(stream, raw),
                        frame => Ok(Some(frame)),
                    };
                    let delivery = match whole {
                        Ok(Some(frame)) => dist.deliver(peer, frame),
                        Ok(None) => Ok(()),
                        Err(what) => Err(what),
                    };
                    if let Err(what) = delivery {
                        return NodeDownReason::ProtocolError(what);
                    }
                    if numbered {
                        delivered.fetch_add(1, Ordering::Relaxed);
                        since_ack += 1;
                        bytes_since_ack += item.len();
                        if since_ack >= ACK_FRAMES || bytes_since_ack >= ACK_BYTES || std::mem::take(&mut ack_wanted) {
                            (since_ack, bytes_since_ack) = (0, 0);
                            ack_due.notify_one();
                        }
                    }
                    // The writer shares this task (and the other
                    // connections its thread): after each part read, or a
                    // part's worth of small frames, it gets a turn (see the
                    // writer's own). A read takes up to 256 KiB, so the
                    // socket alone would seldom make the reader wait.
                    read_since_turn += item.len();
                    if read_since_turn >= PART {
                        read_since_turn = 0;
                        tokio::task::yield_now().await;
                    }
                }
            }
        }
    };
    // Either half ending ends the connection.
    tokio::pin!(reader);
    let why = tokio::select! {
        why = &mut reader => why,
        why = writer => match why {
            // The peer may have said goodbye, and closed, before this
            // side's write failed: what it said is still to be read.
            NodeDownReason::ConnectionClosed => {
                tokio::time::timeout(GRACE, &mut reader).await.unwrap_or(NodeDownReason::ConnectionClosed)
            }
            // After this side's goodbye the peer closes: reading on until
            // then keeps the socket from closing with unread bytes, which
            // would reset the connection and could lose the goodbye.
            NodeDownReason::Disconnected => {
                closed.store(true, Ordering::Relaxed);
                let _ = tokio::time::timeout(GRACE, &mut reader).await;
                NodeDownReason::Disconnected
            }
            why => why,
        },
        () = stop.notified() => NodeDownReason::ConnectionClosed,
    };
    *received = delivered.load(Ordering::Relaxed);
    // What senders numbered on this connection goes on the next one, with
    // the rest of what the peer did not acknowledge.
    unacked.absorb(link.detach().numbered);
    unacked.trim(peer_acked.load(Ordering::Relaxed), backlog);
    why
}

/// Messages over the frame limit would end the connection (the peer
/// refuses them): they alone are dropped, counted and named.
fn dropped(dist: &Dist, out: &Out, backlog: &Backlog) {
    backlog.remove(out.dropped, out.dropped_weight, out.dropped_big);
    dist.dropped.fetch_add(out.dropped as u64, Ordering::Relaxed);
    tracing::warn!(
        node = %dist.name,
        messages = out.dropped,
        bytes = out.biggest_dropped,
        limit = dist.config.max_frame,
        "dropped a message over the frame limit (NodeConfig::max_frame)"
    );
}

/// Writes one of the connection's own frames (an ack, a ping, a goodbye)
/// into the writer, to go out with the next flush.
fn feed<W: tokio::io::AsyncWrite + Unpin>(sink: &mut Writer<W>, frame: &Frame) {
    sink.feed(Item::whole(frame.bytes()));
}

/// [`feed`], then flushes.
async fn send<W: tokio::io::AsyncWrite + Unpin>(sink: &mut Writer<W>, frame: &Frame) -> Result<(), std::io::Error> {
    feed(sink, frame);
    sink.flush().await
}
