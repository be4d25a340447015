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

use molt_abi::{NodeDownReason, NodeId};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncWrite, Interest};
use tokio::sync::{Notify, mpsc};
use tokio_util::bytes::Bytes;

use super::frame::Frame;
use super::handshake::HandshakeStream;
use super::link::{Link, LinkWrite};
use super::parts::{Joiner, Lane, Numbered, Out, Outbox};
use super::read_side::{ConnState, ReadSide, TaskIo};
use super::wire::{Item, Writer};
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

/// The bytes of big frames' parts written and not acknowledged at most
/// (the window): past it, parts wait for the peer's acknowledgement, and
/// small frames find at most this much ahead of them in the sockets'
/// buffers (which over loopback grow to tens of megabytes). What 1 GB/s
/// moves in the least round trip of the connection's pings, within these
/// bounds: a megabyte over loopback, 50 over a link of 50 ms.
pub(super) const WINDOW: usize = 1 << 20;
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
    closed: &Arc<AtomicBool>,
    round_trip: &Arc<AtomicU64>,
    opened: impl FnOnce(),
) -> NodeDownReason {
    let Session { queue, link, outbox, unacked, received, joiner } = session;
    // The halves apart: a reader with what the handshake read ahead, and
    // a writer; over plain TCP, the link's, which senders write to too.
    let parts = stream.into_parts();
    let (io, write_half): (TaskIo, Box<dyn AsyncWrite + Send + Unpin>) = match super::tls::plain(parts.io) {
        Ok(socket) => match split_plain(socket) {
            Ok((reader, writer)) => {
                link.attach(writer);
                (TaskIo::Plain(Some(reader)), Box::new(LinkWrite(Arc::clone(link))))
            }
            Err(_) => return NodeDownReason::ConnectionClosed,
        },
        Err(io) => {
            let (read_half, write_half) = tokio::io::split(io);
            (TaskIo::Other(Box::new(read_half)), Box::new(write_half))
        }
    };
    let mut sink = Writer::new(write_half);
    let written = &link.written;
    written.store(unacked.written(), Ordering::Release);
    let conn = ConnState::new(*received, unacked.acked, Arc::clone(link), Arc::clone(round_trip), Arc::clone(closed));
    let side = ReadSide::new(conn, dist, peer, parts.read_buf, std::mem::take(joiner));
    let ConnState {
        delivered,
        acked_here,
        peer_acked,
        first_ack,
        ack_due,
        asked,
        acked_more,
        ping_id,
        ping_at,
        least_round_trip,
        ping_clean,
        handovers,
        ping_handovers,
        receiving,
        pong_due,
        pong,
        ..
    } = &side.conn;
    let detection = dist.config.detection;
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
                    ping_at.store(side.conn.now(), Ordering::Relaxed);
                    ping_id.store(id, Ordering::Relaxed);
                    let quiet = !outbox.has_parts() && unacked.in_parts == 0 && !receiving.load(Ordering::Relaxed);
                    ping_clean.store(quiet, Ordering::Relaxed);
                    ping_handovers.store(handovers.load(Ordering::Relaxed), Ordering::Relaxed);
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
            // While big messages go out, this task reads too (the
            // acknowledgements that open the window come to the thread
            // that writes, not through a scheduler).
            side.sending_parts(outbox.has_parts());
            // The reader shares this task: while parts keep the socket
            // writable, it gets a turn after each round of them, so that a
            // small answer is not read only after megabytes were written.
            if outbox.has_parts() {
                tokio::task::yield_now().await;
            }
        }
    };
    // Either half ending ends the connection.
    let why = {
        let mut reader = std::pin::pin!(side.run(io));
        tokio::select! {
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
        }
    };
    // Nobody reads any more; the parts being joined stay with the session.
    *joiner = side.shut().await;
    *received = delivered.load(Ordering::Relaxed);
    // What senders numbered on this connection goes on the next one, with
    // the rest of what the peer did not acknowledge.
    unacked.absorb(link.detach().numbered);
    unacked.trim(peer_acked.load(Ordering::Relaxed), backlog);
    why
}

/// A plain socket apart: its reading half, and its writing half, which
/// tokio watches for room only (were it watched for bytes too, each frame
/// arriving would wake the I/O thread, also while a scheduler reads them;
/// `read_side.rs`).
///
/// `AsyncFd::with_interest` is deprecated because the descriptor of a
/// value that does not own it could be closed while tokio watches it; a
/// `TcpStream` owns its descriptor until it is dropped, and the `AsyncFd`
/// owns the stream (the constructor that says so, `register_with_interest`,
/// is `unsafe`, which this crate keeps to the module boundary).
#[allow(deprecated)]
fn split_plain(
    socket: tokio::net::TcpStream,
) -> std::io::Result<(tokio::net::TcpStream, AsyncFd<std::net::TcpStream>)> {
    let socket = socket.into_std()?;
    let reader = socket.try_clone()?;
    Ok((tokio::net::TcpStream::from_std(reader)?, AsyncFd::with_interest(socket, Interest::WRITABLE)?))
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
