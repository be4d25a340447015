//! The reading side of a connection: what it does with each frame it reads
//! ([`Reading::take`]), and who reads. The connection's task reads on the
//! I/O thread at first, over TLS, and while a big message comes in parts;
//! otherwise (plain TCP, on a node whose watchdog runs) it hands the
//! socket to a scheduler of the node, which reads it while it waits
//! between its processes (`poller.rs`) and delivers on its own thread. A
//! round trip then wakes one thread per side (the scheduler of the process
//! a message is for) where it woke two (the I/O thread, then that
//! scheduler).
//!
//! One lock ([`ReadSide::reading`]) holds everything a reader touches: the
//! bytes read and not yet taken, the parts being joined, the counts behind
//! acknowledgements. The task holds it while it reads; a scheduler takes
//! it only by trying (it never waits for it), for one read and the frames
//! in it. [`ReadSide::owner`] says who may read. The socket is in at most
//! one epoll (tokio's, or one scheduler's) at a time, changed only under
//! the lock: a frame is read by one reader, taken once, in order.
//!
//! The socket goes to a scheduler only when the bytes already read hold no
//! whole frame (epoll would not report those) and no big message is being
//! joined. It comes back to the task when a scheduler reads the start of a
//! big message (its parts are joined on the I/O thread, off the
//! processes' threads), when the watchdog finds that scheduler stuck in a
//! poll, and when the connection ends. A scheduler that delivers to
//! processes of another scheduler four reads in a row hands the socket to
//! that one.

use std::io::Read;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use molt_abi::{NodeDownReason, NodeId};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Notify;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, LengthDelimitedCodec};

use super::Dist;
use super::frame::{Farewell, Frame};
use super::link::Link;
use super::parts::{Joiner, PART};
use super::wire;

/// [`ReadSide::owner`]: the connection's task reads (else the scheduler of
/// that index does).
const TASK: usize = usize::MAX;
/// Nobody reads any more: a scheduler found the end, or the task shut it.
const ENDED: usize = usize::MAX - 1;

/// The peer is asked for an acknowledgement after this many frames, or
/// this many bytes, from it: what the writer keeps for a resend stays
/// small.
const ACK_FRAMES: u64 = 64;
const ACK_BYTES: usize = super::connection::WINDOW / 4;

/// Reads in a row, by a scheduler, that woke only another scheduler's
/// processes before the socket moves there.
const AWAY: u32 = 4;

/// What one read of a scheduler takes at most.
const SCHEDULER_READ: usize = 64 << 10;

/// What the connection's reader and writer share, wherever each runs.
pub(super) struct ConnState {
    /// Numbered items from the peer delivered here.
    pub(super) delivered: AtomicU64,
    /// How many of those this side acknowledged.
    pub(super) acked_here: AtomicU64,
    pub(super) peer_acked: AtomicU64,
    /// The peer's first acknowledgement came: where it stands.
    pub(super) first_ack: Notify,
    /// This side has more to acknowledge.
    pub(super) ack_due: Notify,
    /// Whether an `AckPlease` went out that the peer did not answer yet
    /// (it answers with the next acknowledgement that moves).
    pub(super) asked: AtomicBool,
    /// The peer acknowledged more: what it has is let go at once, and the
    /// backlog with it (a sender paused on it may be waiting).
    pub(super) acked_more: Notify,
    /// The last ping, and when it went (since `born`); the ping to answer.
    pub(super) born: Instant,
    pub(super) ping_id: AtomicU64,
    pub(super) ping_at: AtomicU64,
    /// The least round trip of the connection, in microseconds: the window
    /// is sized from it. Only a ping that went while no parts went either
    /// way counts: one behind a window of parts would time the window (on
    /// a loopback connection, a transfer's first ping took 94 ms and
    /// opened the window to 64 MiB, and small messages waited 15 ms).
    pub(super) least_round_trip: AtomicU64,
    /// Whether the last ping went with no parts either way.
    pub(super) ping_clean: AtomicBool,
    /// How often the reading changed hands (task, schedulers), and how
    /// often when the last ping went: a pong read after a change may have
    /// waited for a stuck scheduler to be found out.
    pub(super) handovers: AtomicU64,
    pub(super) ping_handovers: AtomicU64,
    /// Whether a big frame is coming from the peer in parts (the reader
    /// sets it, and counts it in the node's transfers).
    pub(super) receiving: AtomicBool,
    pub(super) pong_due: AtomicU64,
    pub(super) pong: Notify,
    /// The last round trip, for `nodes()`.
    round_trip: Arc<AtomicU64>,
    /// Once set, nothing read is delivered.
    closed: Arc<AtomicBool>,
    link: Arc<Link>,
}

impl ConnState {
    pub(super) fn new(
        received: u64,
        acked: u64,
        link: Arc<Link>,
        round_trip: Arc<AtomicU64>,
        closed: Arc<AtomicBool>,
    ) -> ConnState {
        ConnState {
            delivered: AtomicU64::new(received),
            acked_here: AtomicU64::new(received),
            peer_acked: AtomicU64::new(acked),
            first_ack: Notify::new(),
            ack_due: Notify::new(),
            asked: AtomicBool::new(false),
            acked_more: Notify::new(),
            born: Instant::now(),
            ping_id: AtomicU64::new(0),
            ping_at: AtomicU64::new(0),
            least_round_trip: AtomicU64::new(0),
            ping_clean: AtomicBool::new(false),
            handovers: AtomicU64::new(0),
            ping_handovers: AtomicU64::new(0),
            receiving: AtomicBool::new(false),
            pong_due: AtomicU64::new(0),
            pong: Notify::new(),
            round_trip,
            closed,
            link,
        }
    }

    /// Nanoseconds since the connection began.
    pub(super) fn now(&self) -> u64 {
        self.born.elapsed().as_nanos() as u64
    }
}

/// What the task reads from while it reads.
pub(super) enum TaskIo {
    /// A plain TCP socket (`None` while a scheduler reads it).
    Plain(Option<tokio::net::TcpStream>),
    /// Any other stream (TLS): only the task reads it.
    Other(Box<dyn AsyncRead + Send + Unpin>),
}

/// A connection's reading side.
pub(super) struct ReadSide {
    pub(super) conn: ConnState,
    dist: Arc<Dist>,
    peer: NodeId,
    /// Its key in its node's readers (a poller's token).
    token: u64,
    reading: tokio::sync::Mutex<Reading>,
    /// Who reads: [`TASK`], [`ENDED`] or a scheduler's index.
    owner: AtomicUsize,
    /// The task is wanted: the reading ended, or is handed back.
    back: Notify,
    /// Why the reading ended, found by a scheduler.
    ended: Mutex<Option<NodeDownReason>>,
    /// When bytes were last read (nanoseconds since the connection began).
    last_read: AtomicU64,
    /// The writer is sending a big message in parts.
    sending: AtomicBool,
}

/// What a reader holds while it reads.
struct Reading {
    /// Bytes read and not yet taken: what the handshake read ahead, then
    /// what the socket gave.
    buf: BytesMut,
    codec: LengthDelimitedCodec,
    /// Big frames from the peer coming in parts.
    joiner: Joiner,
    /// The first frame is still to come (an acknowledgement).
    first: bool,
    since_ack: u64,
    bytes_since_ack: usize,
    /// The peer asked for an acknowledgement when there was nothing new to
    /// acknowledge: it goes with the next item delivered.
    ack_wanted: bool,
    /// The socket, while the task does not hold it (plain TCP only).
    socket: Option<std::net::TcpStream>,
    /// The scheduler whose poller watches the socket.
    registered: Option<usize>,
    /// Reads in a row that woke only another scheduler's processes, and
    /// the last such scheduler.
    away: (u32, usize),
    /// Frames schedulers took (for `MOLT_READ_HANDOFF_EVERY`).
    taken_here: u64,
}

/// What a frame taken means for the reader.
enum Flow {
    Go,
    /// A big message begins: its parts are read by the task.
    Open,
    End(NodeDownReason),
}

thread_local! {
    /// A scheduler's read lands here first (it is copied on into the
    /// connection's buffer: a read into uninitialised spare capacity would
    /// need `unsafe`, and a scheduler's reads are small).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl ReadSide {
    pub(super) fn new(
        conn: ConnState,
        dist: &Arc<Dist>,
        peer: NodeId,
        read_ahead: BytesMut,
        joiner: Joiner,
    ) -> Arc<ReadSide> {
        let token = dist.next_reader.fetch_add(1, Ordering::Relaxed);
        let side = Arc::new(ReadSide {
            conn,
            dist: Arc::clone(dist),
            peer,
            token,
            reading: tokio::sync::Mutex::new(Reading {
                buf: read_ahead,
                codec: wire::codec(),
                joiner,
                first: true,
                since_ack: 0,
                bytes_since_ack: 0,
                ack_wanted: false,
                socket: None,
                registered: None,
                away: (0, usize::MAX),
                taken_here: 0,
            }),
            owner: AtomicUsize::new(TASK),
            back: Notify::new(),
            ended: Mutex::new(None),
            last_read: AtomicU64::new(0),
            sending: AtomicBool::new(false),
        });
        dist.readers().insert(token, Arc::downgrade(&side));
        side
    }

    /// The task's reading: until the connection ends, why.
    pub(super) async fn run(self: &Arc<Self>, mut io: TaskIo) -> NodeDownReason {
        let detection = self.dist.config.detection;
        let mut read_since_turn = 0;
        // The last read the task saw when the heartbeat bound passed while
        // a scheduler read (it may only have been too busy to read).
        let mut overdue = None;
        loop {
            let mut reading = self.reading.lock().await;
            if let Some(why) = self.take_back(&mut reading, &mut io, overdue.take()) {
                return why;
            }
            loop {
                loop {
                    let item = match reading.next_item() {
                        Ok(Some(item)) => item,
                        Ok(None) => break,
                        Err(why) => return why,
                    };
                    let (len, joining) = (item.len(), reading.joiner.is_joining());
                    if let Flow::End(why) = reading.take(self, item) {
                        return why;
                    }
                    // Where the socket goes when it goes (every wake-up is
                    // another thread's here), unless that is where a big
                    // message just went: its process will be a while
                    // decoding it, in one poll, and read nothing meanwhile.
                    if let Some(woken) = crate::executor::woke_elsewhere()
                        && !joining
                    {
                        reading.away = (0, woken);
                    }
                    // The writer shares this task (and the other
                    // connections its thread): after each part read, or a
                    // part's worth of small frames, it gets a turn.
                    read_since_turn += len;
                    if read_since_turn >= PART {
                        read_since_turn = 0;
                        tokio::task::yield_now().await;
                    }
                }
                if self.hand_out(&mut reading, &mut io) {
                    break;
                }
                if reading.buf.capacity() - reading.buf.len() < PART {
                    reading.buf.reserve(wire::READ_BUFFER);
                }
                // Nothing read for the detection bound, by either reader:
                // the peer is declared down.
                let deadline =
                    self.conn.born + Duration::from_nanos(self.last_read.load(Ordering::Relaxed)) + detection;
                let read = match &mut io {
                    TaskIo::Plain(Some(socket)) => {
                        tokio::time::timeout_at(deadline.into(), socket.read_buf(&mut reading.buf)).await
                    }
                    TaskIo::Plain(None) => return NodeDownReason::ConnectionClosed,
                    TaskIo::Other(stream) => {
                        tokio::time::timeout_at(deadline.into(), stream.read_buf(&mut reading.buf)).await
                    }
                };
                match read {
                    Err(_) => return NodeDownReason::HeartbeatTimeout,
                    Ok(Ok(0)) | Ok(Err(_)) => return NodeDownReason::ConnectionClosed,
                    // The heartbeat bound counts from here once a
                    // scheduler reads.
                    Ok(Ok(_)) => self.last_read.store(self.conn.now(), Ordering::Relaxed),
                }
            }
            drop(reading);
            // A scheduler reads: the task waits for it to end or hand
            // back, and for the heartbeat bound.
            loop {
                let last = self.last_read.load(Ordering::Relaxed);
                let deadline = self.conn.born + Duration::from_nanos(last) + detection;
                tokio::select! {
                    () = self.back.notified() => break,
                    () = tokio::time::sleep_until(deadline.into()) => {
                        // The scheduler may be busy rather than the peer
                        // silent: the task takes the socket back and looks.
                        if self.last_read.load(Ordering::Relaxed) == last {
                            self.recall();
                            overdue = Some(last);
                            break;
                        }
                    }
                }
            }
        }
    }

    /// The task reads again (it holds `reading`): out of the scheduler's
    /// poller, into tokio's. Why the reading ended, if a scheduler found
    /// that.
    ///
    /// `overdue`: the last read when the heartbeat bound passed; unless a
    /// read came since (under the lock a scheduler reads under), the
    /// socket is read once at once, and nothing there means the peer was
    /// silent for the whole bound.
    fn take_back(&self, reading: &mut Reading, io: &mut TaskIo, overdue: Option<u64>) -> Option<NodeDownReason> {
        self.owner.store(TASK, Ordering::SeqCst);
        self.conn.handovers.fetch_add(1, Ordering::Relaxed);
        self.unregister(reading);
        if let Some(why) = self.ended.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Some(why);
        }
        if let Some(last) = overdue
            && self.last_read.load(Ordering::Relaxed) == last
            && let Some(socket) = reading.socket.as_ref()
        {
            match read_into(socket, &mut reading.buf) {
                Ok(0) => return Some(NodeDownReason::ConnectionClosed),
                Ok(_) => self.last_read.store(self.conn.now(), Ordering::Relaxed),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(NodeDownReason::HeartbeatTimeout),
                Err(_) => return Some(NodeDownReason::ConnectionClosed),
            }
        }
        if let Some(socket) = reading.socket.take() {
            match tokio::net::TcpStream::from_std(socket) {
                Ok(socket) => *io = TaskIo::Plain(Some(socket)),
                Err(_) => return Some(NodeDownReason::ConnectionClosed),
            }
        }
        None
    }

    /// Hands the socket to a scheduler if it can go (see the top of the
    /// file): whether it went.
    fn hand_out(&self, reading: &mut Reading, io: &mut TaskIo) -> bool {
        let TaskIo::Plain(socket) = io else { return false };
        if reading.first || reading.joiner.is_joining() || self.sending.load(Ordering::Relaxed) || socket.is_none() {
            return false;
        }
        let Some(home) = self.dist.home_for_reading(reading.away.1) else { return false };
        let Some(poller) = self.dist.pollers.get(home) else { return false };
        let Some(Ok(socket)) = socket.take().map(tokio::net::TcpStream::into_std) else {
            return false;
        };
        // Under the lock: a scheduler told of the socket at once tries it,
        // fails, and is told again once the lock is let go (level
        // triggering).
        self.owner.store(home, Ordering::SeqCst);
        if poller.add(socket.as_fd(), self.token).is_err() {
            self.owner.store(TASK, Ordering::SeqCst);
            *io = match tokio::net::TcpStream::from_std(socket) {
                Ok(socket) => TaskIo::Plain(Some(socket)),
                Err(_) => TaskIo::Plain(None),
            };
            return false;
        }
        reading.registered = Some(home);
        reading.socket = Some(socket);
        self.conn.handovers.fetch_add(1, Ordering::Relaxed);
        self.dist.reads_sockets(home);
        self.last_read.store(self.conn.now(), Ordering::Relaxed);
        // Found stuck meanwhile: the look at its sockets may have come
        // before this one was its (both sides SeqCst: one sees the other).
        if self.dist.is_stalled(home) {
            self.stalled(home);
        }
        true
    }

    /// Out of the poller that watches the socket, if one does.
    fn unregister(&self, reading: &mut Reading) {
        reading.unregister(&self.dist.pollers);
    }

    /// Scheduler `index` was told the socket is readable: one read, and
    /// every frame in it, if the socket is still its own (and nobody holds
    /// the lock).
    pub(super) fn read_here(self: &Arc<Self>, index: usize) {
        let Ok(mut reading) = self.reading.try_lock() else { return };
        if self.owner.load(Ordering::Relaxed) != index {
            // Taken back meanwhile, or asked back: out of this poller.
            if reading.registered == Some(index) {
                self.unregister(&mut reading);
            }
            return;
        }
        let Reading { socket: Some(socket), buf, .. } = &mut *reading else { return };
        let read = read_into(socket, buf);
        match read {
            Ok(0) => return self.end(&mut reading, NodeDownReason::ConnectionClosed),
            Ok(_) => self.last_read.store(self.conn.now(), Ordering::Relaxed),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => return,
            Err(_) => return self.end(&mut reading, NodeDownReason::ConnectionClosed),
        }
        self.dist.scheduler_reads.fetch_add(1, Ordering::Relaxed);
        let _ = crate::executor::woke_elsewhere();
        loop {
            let item = match reading.next_item() {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(why) => return self.end(&mut reading, why),
            };
            match reading.take(self, item) {
                Flow::Go => {
                    let every = self.dist.handoff_every;
                    reading.taken_here += 1;
                    if every > 0 && reading.taken_here.is_multiple_of(every) {
                        return self.give_back(&mut reading, index);
                    }
                }
                Flow::Open => return self.give_back(&mut reading, index),
                Flow::End(why) => return self.end(&mut reading, why),
            }
        }
        // Where the messages went: the socket follows their processes.
        match crate::executor::woke_elsewhere() {
            Some(other) if other == reading.away.1 || reading.away.0 == 0 => {
                reading.away = (reading.away.0 + 1, other);
                if reading.away.0 >= AWAY && !self.dist.is_stalled(other) {
                    reading.away.0 = 0;
                    self.move_to(&mut reading, index, other);
                }
            }
            Some(other) => reading.away = (1, other),
            None => reading.away.0 = 0,
        }
    }

    /// A scheduler found the end of the connection.
    fn end(&self, reading: &mut Reading, why: NodeDownReason) {
        self.unregister(reading);
        self.ended_with(why);
    }

    /// A scheduler's read panicked: the connection ends (the task takes
    /// the socket out of the poller).
    pub(super) fn broken(&self) {
        self.ended_with(NodeDownReason::ProtocolError("a frame this node failed to take".into()));
    }

    /// Nobody reads any more, and the task learns why (the first reason
    /// found stays).
    fn ended_with(&self, why: NodeDownReason) {
        self.ended.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(why);
        self.owner.store(ENDED, Ordering::Relaxed);
        self.back.notify_one();
    }

    /// Scheduler `index` gives the socket back to the task.
    fn give_back(&self, reading: &mut Reading, index: usize) {
        if self.owner.compare_exchange(index, TASK, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.unregister(reading);
        }
        self.back.notify_one();
    }

    /// Scheduler `from` hands the socket to scheduler `to`.
    fn move_to(&self, reading: &mut Reading, from: usize, to: usize) {
        let Some(poller) = self.dist.pollers.get(to) else { return };
        if self.owner.compare_exchange(from, to, Ordering::SeqCst, Ordering::Relaxed).is_err() {
            return;
        }
        self.unregister(reading);
        let added = reading.socket.as_ref().is_some_and(|socket| poller.add(socket.as_fd(), self.token).is_ok());
        if added {
            reading.registered = Some(to);
            self.conn.handovers.fetch_add(1, Ordering::Relaxed);
            self.dist.reads_sockets(to);
            if self.dist.is_stalled(to) {
                self.stalled(to);
            }
        } else {
            self.owner.store(TASK, Ordering::SeqCst);
            self.back.notify_one();
        }
    }

    /// The writer sends parts (`true`), or no more: while it does, the
    /// task reads (the peer's acknowledgements open the window for the
    /// next parts, and the writer waits for them on this thread).
    pub(super) fn sending_parts(&self, sending: bool) {
        if self.sending.swap(sending, Ordering::Relaxed) == sending {
            return;
        }
        self.dist.transfer(sending);
        if sending {
            self.recall();
        }
    }

    /// The watchdog found scheduler `index` stuck in a poll: if it reads
    /// this socket, the task takes it back.
    pub(super) fn stalled(&self, index: usize) {
        if self.owner.compare_exchange(index, TASK, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
            self.back.notify_one();
        }
    }

    /// The task takes the socket back from whichever scheduler reads it.
    pub(super) fn recall(&self) {
        let owner = self.owner.load(Ordering::SeqCst);
        if owner < ENDED && self.owner.compare_exchange(owner, TASK, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
            self.back.notify_one();
        }
    }

    /// The connection ended: nobody reads any more (a scheduler in the
    /// middle of a read finishes it first). The parts being joined, for
    /// the next connection of the session.
    pub(super) async fn shut(&self) -> Joiner {
        self.owner.store(ENDED, Ordering::Relaxed);
        let mut reading = self.reading.lock().await;
        self.unregister(&mut reading);
        reading.socket = None;
        self.dist.readers().remove(&self.token);
        if self.conn.receiving.swap(false, Ordering::Relaxed) {
            self.dist.transfer(false);
        }
        self.sending_parts(false);
        std::mem::take(&mut reading.joiner)
    }
}

/// One read of `socket`, appended to `buf`: how many bytes.
fn read_into(mut socket: &std::net::TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    SCRATCH.with_borrow_mut(|scratch| {
        if scratch.len() < SCHEDULER_READ {
            scratch.resize(SCHEDULER_READ, 0);
        }
        let read = socket.read(scratch);
        if let Ok(n) = read {
            buf.extend_from_slice(&scratch[..n]);
        }
        read
    })
}

impl Drop for ReadSide {
    /// A connection task dropped unfinished (its runtime stopping) leaves
    /// no socket in a scheduler's poller.
    fn drop(&mut self) {
        self.reading.get_mut().unregister(&self.dist.pollers);
    }
}

impl Reading {
    /// Out of the poller (one of `pollers`) that watches the socket, if
    /// one does.
    fn unregister(&mut self, pollers: &[Arc<crate::poller::Poller>]) {
        if let (Some(index), Some(socket)) = (self.registered.take(), self.socket.as_ref())
            && let Some(poller) = pollers.get(index)
        {
            poller.delete(socket.as_fd());
        }
    }

    /// The next whole item read, if there is one.
    fn next_item(&mut self) -> Result<Option<BytesMut>, NodeDownReason> {
        match self.codec.decode(&mut self.buf) {
            Ok(item) => Ok(item),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                Err(NodeDownReason::ProtocolError(format!("an item over the limit of {} bytes", wire::MAX_ITEM)))
            }
            Err(_) => Err(NodeDownReason::ConnectionClosed),
        }
    }

    /// Takes one item from the peer: delivers what it carries, or does
    /// what it asks.
    fn take(&mut self, side: &Arc<ReadSide>, item: BytesMut) -> Flow {
        let (dist, conn) = (&side.dist, &side.conn);
        let (frame, raw) = match Frame::decode(&item) {
            Err(_) => {
                return Flow::End(NodeDownReason::ProtocolError("a frame that is not one of the protocol's".into()));
            }
            Ok(decoded) => decoded,
        };
        // A part is bounded by its stream; a whole frame by the limit.
        if item.len() > dist.config.max_frame && !matches!(frame, Frame::Part { .. }) {
            return Flow::End(NodeDownReason::ProtocolError(format!(
                "a frame of {} bytes, over the limit of {}",
                item.len(),
                dist.config.max_frame
            )));
        }
        if self.first && !matches!(frame, Frame::Ack(_)) {
            return Flow::End(NodeDownReason::ProtocolError(
                "a connection that does not open with an acknowledgement".into(),
            ));
        }
        match frame {
            Frame::Goodbye(Farewell::Shutdown) => return Flow::End(NodeDownReason::PeerShutdown),
            Frame::Goodbye(Farewell::Disconnect) => return Flow::End(NodeDownReason::Disconnected),
            Frame::AckPlease => {
                self.ack_wanted = conn.delivered.load(Ordering::Relaxed) == conn.acked_here.load(Ordering::Relaxed);
                if !self.ack_wanted {
                    conn.ack_due.notify_one();
                }
            }
            Frame::Ping(n) => {
                conn.pong_due.store(n, Ordering::Relaxed);
                conn.pong.notify_one();
            }
            Frame::Pong(n) => {
                // The answer to the last ping, once.
                if n == conn.ping_id.load(Ordering::Relaxed) && conn.ping_at.load(Ordering::Relaxed) != u64::MAX {
                    let took = conn.now().saturating_sub(conn.ping_at.swap(u64::MAX, Ordering::Relaxed));
                    let micros = (took / 1000).max(1);
                    conn.round_trip.store(micros, Ordering::Relaxed);
                    let least = conn.least_round_trip.load(Ordering::Relaxed);
                    // Nor one read while parts went out: the thread that
                    // reads it also writes the parts.
                    let clean = conn.ping_clean.load(Ordering::Relaxed)
                        && !conn.receiving.load(Ordering::Relaxed)
                        && !side.sending.load(Ordering::Relaxed)
                        && conn.handovers.load(Ordering::Relaxed) == conn.ping_handovers.load(Ordering::Relaxed);
                    if clean && (least == 0 || micros < least) {
                        conn.least_round_trip.store(micros, Ordering::Relaxed);
                    }
                }
            }
            Frame::Ack(n) => {
                let (before, sent) =
                    (conn.peer_acked.load(Ordering::Relaxed), conn.link.written.load(Ordering::Acquire));
                if n < before || n > sent {
                    return Flow::End(NodeDownReason::ProtocolError(format!(
                        "an acknowledgement of {n} frames, after {before}, of {sent} written"
                    )));
                }
                conn.peer_acked.store(n, Ordering::Relaxed);
                if n > before {
                    conn.asked.store(false, Ordering::Relaxed);
                }
                if std::mem::take(&mut self.first) {
                    conn.first_ack.notify_one();
                } else {
                    conn.acked_more.notify_one();
                }
            }
            // This side said goodbye, or gave the peer up: its links and
            // monitors across have fired, so nothing more is delivered.
            _ if conn.closed.load(Ordering::Relaxed) => {}
            frame => {
                let numbered = frame.is_numbered();
                let opens = matches!(frame, Frame::Open { .. });
                let whole = match frame {
                    Frame::Open { stream, head, body } => {
                        self.joiner.open(stream, head, body, dist.config.max_frame).map(|()| None)
                    }
                    Frame::Part { stream } => self.joiner.part(stream, raw),
                    frame => Ok(Some(frame)),
                };
                let delivery = match whole {
                    Ok(Some(frame)) => dist.deliver(side.peer, frame),
                    Ok(None) => Ok(()),
                    Err(what) => Err(what),
                };
                if let Err(what) = delivery {
                    return Flow::End(NodeDownReason::ProtocolError(what));
                }
                if numbered {
                    conn.delivered.fetch_add(1, Ordering::Relaxed);
                    self.since_ack += 1;
                    self.bytes_since_ack += item.len();
                    if self.since_ack >= ACK_FRAMES
                        || self.bytes_since_ack >= ACK_BYTES
                        || std::mem::take(&mut self.ack_wanted)
                    {
                        (self.since_ack, self.bytes_since_ack) = (0, 0);
                        conn.ack_due.notify_one();
                    }
                }
                // Only the reader (under the lock) writes it: a load, and a
                // store when it changes.
                let joining = self.joiner.is_joining();
                if conn.receiving.load(Ordering::Relaxed) != joining {
                    conn.receiving.store(joining, Ordering::Relaxed);
                    dist.transfer(joining);
                }
                if opens {
                    return Flow::Open;
                }
            }
        }
        Flow::Go
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use crate::{Node, NodeConfig, Pid, ReceiveError, Secret};

    /// `n` round trips between two nodes of two schedulers each (their
    /// watchdog on when `long_schedule` is not zero); how many reads the
    /// schedulers of each node made.
    fn round_trips(long_schedule: Duration, n: u64) -> (u64, u64) {
        let node = |name: &str| {
            let config = NodeConfig::new(name)
                .workers(2)
                .listen("127.0.0.1:0")
                .secret(Secret::new("read-side").expect("a secret"))
                .long_schedule(long_schedule);
            Node::start(config).expect("a distributed node")
        };
        let (a, b) = (node("a"), node("b"));
        a.connect(b.name()).expect("a connects to b");
        let echo = b.spawn(|mut p| async move {
            loop {
                let (from, n): (Pid, u64) = p.expect().await?;
                p.send(from, &n);
            }
            #[allow(unreachable_code)]
            Ok::<(), ReceiveError>(())
        });
        let answers = a
            .run(move |mut p| async move {
                let me = p.self_pid();
                let mut answers = Vec::new();
                for i in 0..n {
                    p.send(echo, &(me, i));
                    answers.push(p.expect_timeout::<u64>(Duration::from_secs(10)).await.expect("an answer"));
                }
                answers
            })
            .expect("the driver ends");
        assert_eq!(answers, (0..n).collect::<Vec<_>>());
        let reads = |node: &Node| node.dist().expect("listens").scheduler_reads.load(Ordering::Relaxed);
        (reads(&a), reads(&b))
    }

    #[test]
    fn the_schedulers_of_a_watched_node_read_its_sockets() {
        // Each pong and each ping is one read, by the scheduler of the
        // process it is for; a few go to the I/O thread (the connection's
        // first frames, and whatever comes while a socket changes hands).
        let (a, b) = round_trips(Duration::from_millis(100), 300);
        assert!(a >= 250 && b >= 250, "reads by schedulers: {a} on a, {b} on b, of 300 round trips");
    }

    #[test]
    fn without_a_watchdog_the_io_thread_reads() {
        // Nothing would take a socket back from a scheduler that is stuck.
        assert_eq!(round_trips(Duration::ZERO, 50), (0, 0));
    }
}
