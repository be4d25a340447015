//! Distribution: the node's door to other nodes (DESIGN.md
//! "Distribution"). The rest of the core knows three things of it: a
//! message or [`Signal`] for a pid of another node goes to
//! [`Dist::send`] or [`Dist::signal`], a connection that ends calls
//! [`NodeInner::node_down`], and [`Node::connect`](crate::Node::connect)
//! opens one.
//!
//! One session per node pair (a simultaneous connect from both sides
//! keeps the greater name's, as Erlang does), carried by one connection at
//! a time on an I/O thread of the node's own: connections are tasks of the
//! core, never of a process, so an upgrade, a purge or a crash of module
//! code cannot touch a socket or lose what arrived on it. Every frame
//! towards one peer goes through one queue, so messages between two
//! processes stay in order.
//!
//! A connection that breaks leaves its session behind: the side that
//! dialed dials again, the session resumes on the new connection and what
//! the old one did not deliver is resent (connection.rs), so a short drop
//! loses nothing and fires nothing. Only when the connection is not back
//! within the detection bound is the peer declared down.

mod backlog;
mod connection;
mod frame;
#[cfg(test)]
mod fuzz;
mod handshake;
mod link;
mod parts;
mod read_side;
mod secret;
mod tls;
mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use molt_abi::contract::SpawnOptions;
use molt_abi::{Envelope, ExitReason, NodeDownReason, NodeId, Pid, SpawnError, SpawnReply, WhereisReply};
use rustc_hash::FxHashMap;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::bytes::Bytes;

pub use secret::{Secret, SecretError};
pub use tls::{Tls, TlsError};

use crate::node::NodeInner;
use crate::poller::{IoHandler, Poller};
use crate::signal::Signal;
pub(crate) use backlog::{Backlog, Pause};
use connection::Session;
use frame::{Farewell, Frame};
use handshake::{HandshakeError, Handshaken, Me, Refusal};
pub(crate) use link::Turn;
use read_side::ReadSide;

/// How a node takes part in distribution (set through
/// [`NodeConfig`](crate::NodeConfig)).
#[derive(Clone, Debug)]
pub(crate) struct DistConfig {
    pub(crate) listen: Option<String>,
    pub(crate) secret: Option<Secret>,
    pub(crate) detection: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_frame: usize,
    pub(crate) max_handshakes: usize,
    pub(crate) max_backlog: usize,
    pub(crate) tls: Option<Tls>,
    /// Whether the node's watchdog runs (set as the node starts): it
    /// writes what a process that does not yield sent (`watchdog.rs`), so
    /// senders write to idle connections only then.
    pub(crate) watched: bool,
}

impl Default for DistConfig {
    fn default() -> DistConfig {
        DistConfig {
            listen: None,
            secret: None,
            detection: Duration::from_secs(4),
            handshake_timeout: Duration::from_secs(5),
            max_frame: 64 << 20,
            max_handshakes: 64,
            max_backlog: 8 << 20,
            tls: None,
            watched: true,
        }
    }
}

/// Why [`Node::connect`](crate::Node::connect) failed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The node was started without a listen address and a secret.
    #[error(
        "this node is not distributed: start it with NodeConfig::listen(\"127.0.0.1:0\") and \
         NodeConfig::secret(..) to connect to other nodes"
    )]
    NotDistributed,
    /// The name is not `name@host:port`.
    #[error("{0:?} is not a node name: give one as name@host:port, as the other node reports it")]
    BadName(String),
    /// The connection or its handshake failed.
    #[error("could not connect to {node}: {reason}")]
    Failed {
        /// The node.
        node: String,
        /// What went wrong.
        reason: String,
    },
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Stopping,
}

/// A peer node, as [`Node::nodes`](crate::Node::nodes) lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its name, `name@host:port`.
    pub name: String,
    /// Whether the connection is up (else its handshake is under way).
    pub connected: bool,
    /// Messages and signals towards it not known to be delivered yet:
    /// queued, or written and not yet acknowledged.
    pub queued: usize,
    /// Their bytes (payloads, and 32 for each frame's header): at most
    /// about `NodeConfig::max_backlog`, senders pausing beyond it.
    pub queued_bytes: usize,
    /// How many times its connection broke and came back within the
    /// detection bound, the session going on.
    pub reconnects: u64,
    /// The last round trip of a heartbeat's ping (every quarter of the
    /// detection bound, and one as the connection opens); `None` before
    /// the first came back.
    pub round_trip: Option<Duration>,
}

/// `name@host:port` split into the name and the address.
pub(crate) fn parse_name(name: &str) -> Result<(&str, &str), ConnectError> {
    let bad = || ConnectError::BadName(name.to_owned());
    let (short, address) = name.split_once('@').ok_or_else(bad)?;
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    if short.is_empty() || host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok((short, address))
}

/// The most node names a peer may tell in one frame, and this node keeps
/// of those it heard of (its own peers are always kept).
const MAX_NAMES: usize = 4096;

/// The longest node name told to a peer or taken from one.
const MAX_NAME: usize = 255;

/// A node this one heard of.
#[derive(Debug)]
struct Known {
    name: String,
    /// Where this side dialed it, when not at its name's address
    /// (`Node::connect_via`): a pid of it is reached there too.
    via: Option<String>,
    /// When it was last declared down: a pid of it does not dial it again
    /// within the detection bound (a dead node's pids would dial at every
    /// send).
    down_at: Option<Instant>,
}

/// The distribution of one node.
pub(crate) struct Dist {
    node: Weak<NodeInner>,
    name: String,
    id: NodeId,
    creation: u32,
    secret: Secret,
    config: DistConfig,
    /// Stops the I/O thread's runtime (dropped: the same).
    stop_io: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    handle: tokio::runtime::Handle,
    peers: Mutex<FxHashMap<NodeId, Peer>>,
    /// The names of the nodes this one heard of: its peers', and those its
    /// peers told it of (a pid names its node by a hash of the name only).
    directory: Mutex<FxHashMap<NodeId, Known>>,
    /// Set as the node shuts down: nothing connects any more.
    stopping: AtomicBool,
    handshakes: Arc<Semaphore>,
    /// Connection tasks still running, for shutdown to wait on.
    live: (Mutex<usize>, Condvar),
    /// Messages and signals for nodes this one had no connection to, or
    /// lost with one.
    dropped: AtomicU64,
    /// Connections refused or failed in their handshake.
    refused: AtomicUsize,
    /// Where each scheduler of the node waits when idle, reading the
    /// sockets handed to it (`read_side.rs`); none where senders do not
    /// write themselves (no watchdog) or `MOLT_SCHEDULERS_READ=0`.
    pollers: Box<[Arc<Poller>]>,
    /// The connections' reading sides, by their pollers' token.
    readers: Mutex<FxHashMap<u64, Weak<ReadSide>>>,
    next_reader: AtomicU64,
    /// The schedulers found stuck in a poll (by the watchdog, or an idle
    /// sibling's tick): given no socket.
    stalled: Box<[AtomicBool]>,
    /// When the last tick was, and each scheduler's polls and current
    /// process then.
    ticked: Mutex<(Instant, Vec<(u64, u64)>)>,
    /// Big messages crossing the connections now, one way or the other
    /// (shared with the pollers).
    transfers: Arc<AtomicUsize>,
    /// Reads made by schedulers (not the I/O thread).
    scheduler_reads: AtomicU64,
    /// For tests: a scheduler gives a socket back to its task after this
    /// many frames (0: never) — `MOLT_READ_HANDOFF_EVERY`, so that a whole
    /// suite runs with sockets going back and forth all the time.
    handoff_every: u64,
}

impl std::fmt::Debug for Dist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dist").field("name", &self.name).finish_non_exhaustive()
    }
}

/// One peer node: its queue of frames, and how far its session is.
struct Peer {
    name: String,
    /// Which entry for this peer this is: a late word about an attempt
    /// of an earlier entry must not touch this one.
    epoch: u64,
    /// The session both sides know this entry by (drawn by the side that
    /// dialed).
    session: u64,
    /// Which of the entry's connections is the current one.
    connection: u64,
    /// Where this side dialed the peer, when it did: after a break it
    /// dials there again (the other side waits).
    dialed: Option<String>,
    /// Frames towards the peer; `None` once the entry is going down.
    queue: Option<mpsc::UnboundedSender<connection::Queued>>,
    /// Where a process's small frames go while the connection's writer is
    /// idle (`link.rs`); the session's.
    link: Arc<link::Link>,
    /// The session, while no connection carries it.
    pending: Option<Session>,
    state: PeerState,
    backlog: Arc<Backlog>,
    /// Set when the entry goes down: its connection delivers nothing more
    /// (links and monitors across it have fired).
    closed: Arc<AtomicBool>,
    /// The last round trip of a ping, in microseconds (0: none yet).
    round_trip: Arc<AtomicU64>,
    reconnects: u64,
    /// Whether the first connection opened, and the two sides told each
    /// other of the nodes they know.
    introduced: bool,
    /// The peer's creation, once a connection was made.
    creation: Option<u32>,
    /// When the session's connection broke, until a new one carries it:
    /// the detection bound counts from the first break, however many
    /// connections fail to resume it meanwhile.
    broke_at: Option<Instant>,
    /// `whereis_on` and `spawn_entry_on` requests sent and not answered
    /// yet. Answered with the reason if the peer goes down.
    requests: Vec<Request>,
}

/// A question asked of a peer, for a process of this node.
struct Request {
    id: u64,
    reply_to: Pid,
    asked: Asked,
}

enum Asked {
    Whereis,
    /// A spawn, monitored as `monitor`: a `Down` of it that comes before
    /// the answer (the process ended at once) waits in `early_down` until
    /// the monitor's target is known.
    Spawn {
        monitor: Option<u64>,
        early_down: Option<(Pid, ExitReason)>,
    },
}

/// Why a question was not asked of a peer.
enum NotAsked {
    /// Its frame would be over the frame limit.
    TooBig,
    /// The node cannot be reached.
    Unreachable(NodeDownReason),
}

/// Someone waiting in [`Node::connect`](crate::Node::connect): told
/// through a std channel, which works from any thread (a tokio runtime's
/// included).
type Waiter = std::sync::mpsc::Sender<Result<(), String>>;

enum PeerState {
    /// No connection yet; `outgoing` when our own handshake is under way.
    /// `waiters` are told how it ends.
    Connecting { outgoing: bool, waiters: Vec<Waiter> },
    /// A connection carries the session; `stop` ends it (a resumed
    /// connection replaces one the peer saw break first).
    Up { stop: Arc<Notify> },
    /// The connection broke: the session waits for the next one until the
    /// detection bound.
    Reconnecting,
    /// Its links and monitors are being fired: a new connection waits
    /// until that is done, so none of its relations is taken for one of
    /// the old connection.
    GoingDown,
}

impl Peer {
    fn new(name: &str, config: &DistConfig) -> Peer {
        static EPOCHS: AtomicU64 = AtomicU64::new(1);
        let (queue, pending) = mpsc::unbounded_channel();
        let link = Arc::new(link::Link::new(config.max_frame, config.watched));
        Peer {
            name: name.to_owned(),
            epoch: EPOCHS.fetch_add(1, Ordering::Relaxed),
            // Unguessable, so that no stale or foreign peer resumes it.
            session: getrandom::u64().expect("the operating system's random number generator failed"),
            connection: 0,
            dialed: None,
            queue: Some(queue),
            pending: Some(Session::new(pending, Arc::clone(&link), config.max_frame)),
            link,
            state: PeerState::Connecting { outgoing: false, waiters: Vec::new() },
            backlog: Arc::new(Backlog::new(config.max_backlog)),
            closed: Arc::new(AtomicBool::new(false)),
            round_trip: Arc::new(AtomicU64::new(0)),
            reconnects: 0,
            introduced: false,
            creation: None,
            broke_at: None,
            requests: Vec::new(),
        }
    }

    /// Whether this is entry `epoch`, its current connection number
    /// `connection`: a late word about another must not touch it.
    fn carries(&self, epoch: u64, connection: u64) -> bool {
        self.epoch == epoch && self.connection == connection
    }

    /// Queues `frame`, in order with the others of `lane`, or hands it
    /// back when the queue is closed; the sender's pause when the backlog
    /// is over its bound for it now.
    fn push(&self, lane: Option<Pid>, frame: Frame) -> Result<Option<Pause>, Frame> {
        let Some(queue) = &self.queue else { return Err(frame) };
        let weight = frame.weight();
        let pause = self.backlog.add(weight);
        let queue = |frame| queue.send((lane, frame)).map_err(|unsent| unsent.0.1);
        match self.link.take_or_queue(frame, weight, self.backlog.holding(), queue) {
            Ok(gathered) => {
                if gathered {
                    link::cork(&self.link);
                }
                Ok(pause)
            }
            Err(frame) => {
                self.backlog.remove(1, weight, if Backlog::is_big(weight) { weight } else { 0 });
                Err(frame)
            }
        }
    }

    /// Starts going down: the queue closes (a connection's writer ends),
    /// what a session no connection carries held is counted in `dropped`,
    /// and whoever waited is handed back.
    fn going_down(&mut self, dropped: &AtomicU64) -> Vec<Waiter> {
        self.queue = None;
        // A writer waiting for frames finds the queue closed.
        self.link.wanted.notify_one();
        self.closed.store(true, Ordering::Relaxed);
        self.backlog.release();
        if let Some(mut pending) = self.pending.take() {
            dropped.fetch_add(pending.lose(), Ordering::Relaxed);
        }
        match std::mem::replace(&mut self.state, PeerState::GoingDown) {
            PeerState::Connecting { waiters, .. } => waiters,
            _ => Vec::new(),
        }
    }
}

/// What a connection that won its peer takes over.
struct Taken {
    /// The entry's epoch, and which of its connections this is.
    epoch: u64,
    connection: u64,
    session: Session,
    backlog: Arc<Backlog>,
    closed: Arc<AtomicBool>,
    round_trip: Arc<AtomicU64>,
    stop: Arc<Notify>,
}

impl Dist {
    /// Starts distribution for `node`, listening on `listener` under the
    /// node's full name.
    pub(crate) fn start(
        node: &Arc<NodeInner>,
        listener: std::net::TcpListener,
        config: DistConfig,
        secret: Secret,
    ) -> std::io::Result<Arc<Dist>> {
        // One thread, driving a current-thread runtime: the connections'
        // tasks, their sockets and timers (leaner per wake-up than a
        // multi-thread runtime with one worker).
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
        let handle = runtime.handle().clone();
        let (stop_io, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new().name(format!("molt-dist-{}", node.name)).spawn(move || {
            let _ = runtime.block_on(stopped);
            runtime.shutdown_background();
        })?;
        let reading = config.watched && std::env::var("MOLT_SCHEDULERS_READ").map_or(true, |read| read != "0");
        let mut failed = None;
        let transfers = Arc::new(AtomicUsize::new(0));
        let dist = Arc::new_cyclic(|me: &Weak<Dist>| {
            let handler: Weak<dyn IoHandler> = me.clone();
            let pollers: std::io::Result<Vec<Arc<Poller>>> = if reading {
                node.schedulers
                    .iter()
                    .map(|_| Poller::new(handler.clone(), Arc::clone(&transfers)).map(Arc::new))
                    .collect()
            } else {
                Ok(Vec::new())
            };
            let pollers = pollers.unwrap_or_else(|error| {
                failed = Some(error);
                Vec::new()
            });
            Dist {
                node: Arc::downgrade(node),
                name: node.name.clone(),
                id: node.id,
                creation: node.creation,
                secret,
                handshakes: Arc::new(Semaphore::new(config.max_handshakes)),
                config,
                stop_io: Mutex::new(Some(stop_io)),
                handle,
                peers: Mutex::new(FxHashMap::default()),
                directory: Mutex::new(FxHashMap::default()),
                stopping: AtomicBool::new(false),
                live: (Mutex::new(0), Condvar::new()),
                dropped: AtomicU64::new(0),
                refused: AtomicUsize::new(0),
                stalled: node.schedulers.iter().map(|_| AtomicBool::new(false)).collect(),
                ticked: Mutex::new((Instant::now(), vec![(0, 0); node.schedulers.len()])),
                transfers: Arc::clone(&transfers),
                pollers: pollers.into_boxed_slice(),
                readers: Mutex::new(FxHashMap::default()),
                next_reader: AtomicU64::new(0),
                scheduler_reads: AtomicU64::new(0),
                handoff_every: std::env::var("MOLT_READ_HANDOFF_EVERY").ok().and_then(|n| n.parse().ok()).unwrap_or(0),
            }
        });
        if let Some(error) = failed {
            tracing::warn!(node = %node.name, %error, "schedulers do not read the node's sockets (no epoll): the I/O thread does");
        }
        for (scheduler, poller) in node.schedulers.iter().zip(dist.pollers.iter()) {
            scheduler.attach_poller(Arc::clone(poller));
        }
        listener.set_nonblocking(true)?;
        let listener = {
            let _entered = dist.handle.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        dist.handle.spawn(Self::accept_loop(Arc::downgrade(&dist), listener));
        Ok(dist)
    }

    fn readers(&self) -> std::sync::MutexGuard<'_, FxHashMap<u64, Weak<ReadSide>>> {
        self.readers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every connection's reading side, taken out of the lock (each is
    /// then told something that may take its own locks).
    fn reading_sides(&self) -> Vec<Arc<ReadSide>> {
        self.readers().values().filter_map(Weak::upgrade).collect()
    }

    /// Scheduler `home` reads a socket now: the others that sleep with no
    /// bound wake, to look at it while they idle (one asleep since before
    /// any scheduler read sockets would miss `home` stuck in a long poll;
    /// see `SIBLING_TICK` in `executor.rs`).
    fn reads_sockets(&self, home: usize) {
        for (index, poller) in self.pollers.iter().enumerate() {
            if index != home {
                poller.wake_if_unwatched();
            }
        }
    }

    /// The scheduler a socket goes to (`read_side.rs`): `lately`, the one
    /// whose processes its last messages woke, unless it is stuck; else
    /// the first that is not. `None` where schedulers do not read.
    fn home_for_reading(&self, lately: usize) -> Option<usize> {
        if !self.is_stalled(lately) && lately < self.pollers.len() {
            return Some(lately);
        }
        (0..self.pollers.len()).find(|&index| !self.is_stalled(index))
    }

    /// A big message starts (`true`) or stops crossing a connection.
    fn transfer(&self, started: bool) {
        if started {
            self.transfers.fetch_add(1, Ordering::Relaxed);
        } else {
            self.transfers.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn is_stalled(&self, index: usize) -> bool {
        self.stalled.get(index).is_some_and(|stalled| stalled.load(Ordering::SeqCst))
    }

    /// The watchdog found scheduler `index` in the same poll twice (`true`),
    /// or saw it move on (`false`): the sockets it reads go back to their
    /// connections' tasks, and it is given none until it moves on.
    pub(crate) fn scheduler_stalled(&self, index: usize, stalled: bool) {
        let Some(flag) = self.stalled.get(index) else { return };
        if flag.swap(stalled, Ordering::SeqCst) == stalled || !stalled {
            return;
        }
        for side in self.reading_sides() {
            side.stalled(index);
        }
    }

    fn me(&self) -> Me<'_> {
        Me { name: &self.name, creation: self.creation, secret: &self.secret }
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, FxHashMap<NodeId, Peer>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message for `to`, a process of another node; dropped (and
    /// counted) when there is no connection to that node, as Erlang drops
    /// a message to an unreachable node. The sender's pause when the peer's
    /// backlog is over its bound for it. `from` is the sending
    /// process (`None`: the node or the host), whose messages keep their
    /// order.
    pub(crate) fn send(self: &Arc<Self>, from: Option<Pid>, to: Pid, envelope: Envelope) -> Option<Pause> {
        let pushed = self.push_to(to.node, from, Frame::Message { to, envelope });
        link::settle();
        crate::executor::awaits_the_network();
        match pushed {
            Ok(pause) => pause,
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Queues `frame` on `lane` for the node `id`: to its entry, or, for a
    /// node heard of by name, to a new one (the first use of a pid of a
    /// third node connects to it). The frame back, with the node's name if
    /// known, when it cannot be queued (boxed: it is big, and rare).
    fn push_to(
        self: &Arc<Self>,
        id: NodeId,
        lane: Option<Pid>,
        frame: Frame,
    ) -> Result<Option<Pause>, Box<(Frame, Option<String>)>> {
        let frame = match self.peers().get(&id) {
            Some(peer) => return peer.push(lane, frame).map_err(|frame| Box::new((frame, Some(peer.name.clone())))),
            None => frame,
        };
        let known = self.directory().get(&id).map(|known| {
            let resting = known.down_at.is_some_and(|at| at.elapsed() < self.config.detection);
            (known.name.clone(), known.via.clone(), resting)
        });
        let Some((name, via, resting)) = known else { return Err(Box::new((frame, None))) };
        if resting {
            return Err(Box::new((frame, Some(name))));
        }
        let mut unsent = Some(frame);
        let address = match via {
            Some(via) => Ok(via),
            None => parse_name(&name).map(|(_, address)| address.to_owned()),
        };
        let pushed = match address {
            Ok(address) => self.reach_at(&name, &address, |peer| unsent.take().map(|frame| peer.push(lane, frame))),
            Err(_) => Err(NodeDownReason::Unreachable(format!("{name:?} is not a node name"))),
        };
        match (pushed, unsent) {
            (Ok(Some(Ok(pause))), _) => Ok(pause),
            (Ok(Some(Err(frame))), _) | (_, Some(frame)) => Err(Box::new((frame, Some(name)))),
            (_, None) => unreachable!("a frame not pushed is still here"),
        }
    }

    fn directory(&self) -> std::sync::MutexGuard<'_, FxHashMap<NodeId, Known>> {
        self.directory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a signal for `to`, a process of another node; with no
    /// connection to it, answers as a lost connection would (a link or a
    /// monitor fires with `noconnection`).
    pub(crate) fn signal(self: &Arc<Self>, node: &NodeInner, to: Pid, signal: Signal) {
        let pushed = self.push_to(to.node, Some(signal.sender()), Frame::Signal { to, signal });
        link::settle();
        let (answer, signal) = match pushed {
            Ok(_) => return,
            Err(unsent) => match *unsent {
                (Frame::Signal { signal, .. }, name) => (name.unwrap_or_else(|| format!("{:?}", to.node)), signal),
                _ => unreachable!("the frame handed back is the one pushed"),
            },
        };
        self.dropped.fetch_add(1, Ordering::Relaxed);
        let reason = ExitReason::NoConnection {
            node: answer,
            why: NodeDownReason::Unreachable("this node has no connection to it".into()),
        };
        node.signal_unreachable(to, signal, reason);
    }

    /// Sends to the process registered as `name` on the node `node`,
    /// connecting to it if need be; dropped (and counted) when it cannot be
    /// reached.
    pub(crate) fn send_named(
        self: &Arc<Self>,
        from: Option<Pid>,
        node: &str,
        name: &str,
        envelope: Envelope,
    ) -> Option<Pause> {
        let frame = Frame::Named { name: name.to_owned(), envelope };
        let pushed = self.reach(node, |peer| peer.push(from, frame));
        link::settle();
        match pushed {
            Ok(Ok(pause)) => pause,
            _ => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Asks the node `node` which process is registered there as `name`,
    /// as request `request` of `reply_to`, which gets the answer as a
    /// [`WhereisReply`]: from the node, or with the reason it went down.
    pub(crate) fn whereis(self: &Arc<Self>, node_name: &str, name: &str, reply_to: Pid, request: u64) {
        let frame = Frame::Whereis { name: name.to_owned(), reply_to, request };
        let asked = self.ask(node_name, Request { id: request, reply_to, asked: Asked::Whereis }, frame);
        let why = match asked {
            Ok(()) => return,
            Err(NotAsked::TooBig) => {
                NodeDownReason::Unreachable(format!("a name of {} bytes is too long to ask for", name.len()))
            }
            Err(NotAsked::Unreachable(why)) => why,
        };
        if let Some(node) = self.node.upgrade() {
            node.send_message(reply_to, &WhereisReply { request, pid: Err(why) });
        }
    }

    /// Writes now what senders gathered towards each peer while their
    /// connections' writers were idle: the watchdog's, for a process that
    /// sent and then kept its scheduler without yielding (what it sent
    /// would otherwise wait for its turn to end).
    pub(crate) fn flush_gathered(&self) {
        let links: Vec<Arc<link::Link>> = self.peers().values().map(|peer| Arc::clone(&peer.link)).collect();
        for link in links {
            link.flush();
        }
    }

    /// Sends `frame`, which asks the node `node_name` a question, keeping
    /// `request` until the answer comes (or the node goes down, when
    /// `give_up` answers it); why not, when it cannot be asked.
    fn ask(self: &Arc<Self>, node_name: &str, request: Request, frame: Frame) -> Result<(), NotAsked> {
        // A frame too big to be written would leave the request unanswered.
        if frame.weight() > self.config.max_frame / 2 {
            return Err(NotAsked::TooBig);
        }
        self.reach(node_name, |peer| {
            let lane = Some(request.reply_to);
            peer.requests.push(request);
            // The entry is not going down (`reach`): its queue is open.
            let _ = peer.push(lane, frame);
        })
        .map_err(NotAsked::Unreachable)
    }

    /// Asks the node `node_name` to spawn `module:entry` with `state` for
    /// `reply_to` (linked, and monitored as `monitor`, as `options` says),
    /// as request `request`; `reply_to` gets the answer as a
    /// [`SpawnReply`]: from the node, or with the reason it went down.
    #[allow(clippy::too_many_arguments)] // what `spawn_entry_on` carries, each its own
    pub(crate) fn spawn(
        self: &Arc<Self>,
        node_name: &str,
        module: &str,
        entry: &str,
        state: Vec<u8>,
        reply_to: Pid,
        request: u64,
        options: SpawnOptions,
        monitor: Option<u64>,
    ) {
        let frame = Frame::Spawn {
            module: module.to_owned(),
            entry: entry.to_owned(),
            state,
            reply_to,
            request,
            link: options.link,
            monitor,
        };
        let weight = frame.weight();
        let asked = Asked::Spawn { monitor, early_down: None };
        let refused = match self.ask(node_name, Request { id: request, reply_to, asked }, frame) {
            Ok(()) => return,
            Err(NotAsked::TooBig) => SpawnError::BadArgument {
                reason: format!("{weight} bytes are too many to send (NodeConfig::max_frame)"),
            },
            Err(NotAsked::Unreachable(why)) => SpawnError::NoConnection { node: node_name.to_owned(), why },
        };
        if let Some(node) = self.node.upgrade() {
            node.send_message(reply_to, &SpawnReply { request, pid: Err(refused) });
        }
    }

    /// Makes sure of a connection to the node `name`, for a node monitor:
    /// why there can be none.
    pub(crate) fn monitor_node(self: &Arc<Self>, name: &str) -> Result<(), NodeDownReason> {
        self.reach(name, |_| ())
    }

    /// Runs `with` on the entry of the peer called `name`, under the lock,
    /// making the entry and starting a connection if there is none (a
    /// remote name's first use connects, as in Erlang). Why not, when the
    /// name is not another node's or its entry is going down.
    fn reach<R>(self: &Arc<Self>, name: &str, with: impl FnOnce(&mut Peer) -> R) -> Result<R, NodeDownReason> {
        let not_a_node =
            || NodeDownReason::Unreachable(format!("{name:?} is not another node's name (name@host:port)"));
        let (_, address) = parse_name(name).map_err(|_| not_a_node())?;
        if name == self.name {
            return Err(not_a_node());
        }
        self.reach_at(name, address, with)
    }

    /// [`reach`](Self::reach) for a name known to be another node's, a
    /// connection started dialing `address`.
    fn reach_at<R>(
        self: &Arc<Self>,
        name: &str,
        address: &str,
        with: impl FnOnce(&mut Peer) -> R,
    ) -> Result<R, NodeDownReason> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err(NodeDownReason::Unreachable("this node is shutting down".into()));
        }
        let id = NodeId::from_name(name);
        let (result, start) = {
            let mut peers = self.peers();
            let peer = peers.entry(id).or_insert_with(|| Peer::new(name, &self.config));
            let start = match &mut peer.state {
                PeerState::GoingDown => {
                    return Err(NodeDownReason::Unreachable(
                        "its previous connection is still being torn down; try again".into(),
                    ));
                }
                PeerState::Connecting { outgoing, .. } => {
                    (!std::mem::replace(outgoing, true)).then_some((peer.epoch, peer.session))
                }
                PeerState::Up { .. } | PeerState::Reconnecting => None,
            };
            (with(peer), start)
        };
        if let Some((epoch, session)) = start {
            self.handle.spawn(Arc::clone(self).connect_task(name.to_owned(), address.to_owned(), epoch, session));
        }
        Ok(result)
    }

    /// Connects to the node called `name`, at `via` or else the address in
    /// its name (or waits for the connection already under way).
    pub(crate) fn connect(self: &Arc<Self>, name: &str, via: Option<&str>) -> Result<(), ConnectError> {
        let (_, address) = parse_name(name)?;
        if name == self.name {
            return Err(ConnectError::BadName(name.to_owned()));
        }
        let (told, tell) = std::sync::mpsc::channel();
        let waiting = self
            .reach_at(name, via.unwrap_or(address), |peer| match &mut peer.state {
                PeerState::Connecting { waiters, .. } => {
                    waiters.push(told);
                    true
                }
                PeerState::Up { .. } | PeerState::Reconnecting | PeerState::GoingDown => false,
            })
            .map_err(|why| ConnectError::Failed { node: name.to_owned(), reason: why.to_string() })?;
        if !waiting {
            return Ok(());
        }
        match tell.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(ConnectError::Failed { node: name.to_owned(), reason }),
            Err(_) => Err(ConnectError::Stopping),
        }
    }

    /// Dials `name` at `address` and shakes hands for `session`, within
    /// `deadline`.
    async fn dial(
        &self,
        name: &str,
        address: &str,
        session: u64,
        resume: bool,
        deadline: Duration,
    ) -> Result<(handshake::HandshakeStream, Handshaken), HandshakeError> {
        let attempt = async {
            let stream = tokio::net::TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            let stream: Box<dyn tls::Transport> = match &self.config.tls {
                Some(tls) => tls.connect(name, stream).await.map_err(HandshakeError::Tls)?,
                None => Box::new(stream),
            };
            let mut stream = handshake::framed(stream);
            let peer = handshake::connect(&mut stream, &self.me(), name, session, resume).await?;
            Ok::<_, HandshakeError>((stream, peer))
        };
        tokio::time::timeout(deadline, attempt).await.unwrap_or(Err(HandshakeError::Timeout))
    }

    async fn connect_task(self: Arc<Self>, name: String, address: String, epoch: u64, session: u64) {
        let deadline = self.config.handshake_timeout;
        let until = Instant::now() + deadline;
        let result = loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.dial(&name, &address, session, false, left).await {
                // The peer is ending the session of our previous life (or
                // of one it gave up): in a moment it is gone.
                Err(HandshakeError::Refused(Refusal::Busy)) if !left.is_zero() => {
                    tokio::time::sleep(Duration::from_millis(20).min(left)).await;
                }
                // The peer has not seen the old connection break yet (this
                // side gave its session up first): it will, at once or
                // within the detection bound. Unless a connection of the
                // peer's took this entry up meanwhile, try again.
                Err(HandshakeError::Refused(Refusal::AlreadyConnected))
                    if !left.is_zero() && self.still_connecting(NodeId::from_name(&name), epoch) =>
                {
                    tokio::time::sleep(Duration::from_millis(20).min(left)).await;
                }
                result => break result,
            }
        };
        let id = NodeId::from_name(&name);
        match result {
            Ok((stream, peer)) => match self.take_up(id, epoch, &address, peer.creation) {
                Some(taken) => self.established(peer, stream, taken, None),
                None => {
                    tracing::warn!(node = %self.name, peer = %name, "closed a connection nobody waits for any more")
                }
            },
            // Both sides connected at once, and the peer's connection goes
            // on: its hello may still be on its way here, so this attempt
            // stands until that handshake had its time.
            Err(HandshakeError::Refused(Refusal::Simultaneous)) => {
                tokio::time::sleep(deadline.saturating_mul(2)).await;
                self.outgoing_failed(id, epoch, None);
            }
            Err(error) => {
                tracing::warn!(node = %self.name, peer = %name, "could not connect: {error}");
                self.outgoing_failed(id, epoch, Some(error));
            }
        }
    }

    /// Whether entry `epoch` of `id` still waits for a connection.
    fn still_connecting(&self, id: NodeId, epoch: u64) -> bool {
        self.peers()
            .get(&id)
            .is_some_and(|peer| peer.epoch == epoch && matches!(peer.state, PeerState::Connecting { .. }))
    }

    async fn accept_loop(dist: Weak<Dist>, listener: tokio::net::TcpListener) {
        loop {
            let (stream, from) = match listener.accept().await {
                Ok(accepted) => accepted,
                // Out of file descriptors, say: try again in a while rather
                // than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(dist) = dist.upgrade() else { return };
            // A bounded number of handshakes at once: a flood of strangers
            // is turned away at the door, not given a task each.
            let Ok(permit) = Arc::clone(&dist.handshakes).try_acquire_owned() else {
                dist.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %dist.name, %from, "refused a connection: too many handshakes under way");
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                dist.accept_one(stream, from).await;
                drop(permit);
            });
        }
    }

    async fn accept_one(self: Arc<Self>, stream: tokio::net::TcpStream, from: std::net::SocketAddr) {
        let me = self.me();
        // Only a peer that proved it holds the secret (and, with TLS, a
        // certificate) gets this far: a stranger changes nothing of the
        // node's state.
        let mut abandoned = None;
        let handshake = async {
            let (stream, certificate): (Box<dyn tls::Transport>, _) = match &self.config.tls {
                Some(tls) => tls.accept(stream).await.map_err(HandshakeError::Tls)?,
                None => (Box::new(stream), None),
            };
            let mut stream = handshake::framed(stream);
            let admit = |peer: &Handshaken| match &certificate {
                Some(certificate) if !tls::is_for(certificate, &peer.name) => Err(Refusal::CertificateName),
                _ => self.admit(peer, &mut abandoned),
            };
            let admitted = handshake::accept(&mut stream, &me, admit).await?;
            Ok((stream, admitted))
        };
        let result = tokio::time::timeout(self.config.handshake_timeout, handshake)
            .await
            .unwrap_or(Err(HandshakeError::Timeout));
        if let Some((id, epoch, name, waiters)) = abandoned {
            tracing::warn!(node = %self.name, peer = %name, "node down: it started a new session");
            self.give_up(id, epoch, &name, waiters, NodeDownReason::ConnectionClosed);
        }
        match result {
            Ok((stream, (peer, taken, welcome))) => self.established(peer, stream, taken, Some(welcome)),
            // A resumption that came before this side saw the old
            // connection break: the peer tries again at once.
            Err(HandshakeError::Refusing(Refusal::Busy)) => {}
            Err(error) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %self.name, %from, "refused a connection: {error}");
            }
        }
    }

    /// Whether an authenticated peer may connect: if so, its connection
    /// takes the peer over at once, under the same lock (a `connect` in
    /// between would start a second connection). A peer that starts a new
    /// session while this side still holds an old one (it restarted, or
    /// gave the old one up first) has that one go down, in `abandoned`,
    /// and is asked to try again.
    fn admit(
        &self,
        hello: &Handshaken,
        abandoned: &mut Option<(NodeId, u64, String, Vec<Waiter>)>,
    ) -> Result<Taken, Refusal> {
        let id = NodeId::from_name(&hello.name);
        let mut peers = self.peers();
        if hello.resume {
            let Some(peer) = peers.get_mut(&id).filter(|peer| peer.session == hello.session) else {
                return Err(Refusal::UnknownSession);
            };
            return match &peer.state {
                PeerState::Reconnecting => self.take_over(peer).ok_or(Refusal::UnknownSession),
                // The peer saw the connection break before this side did:
                // it ends here now, and the peer's next try resumes.
                PeerState::Up { stop } => {
                    stop.notify_one();
                    Err(Refusal::Busy)
                }
                _ => Err(Refusal::UnknownSession),
            };
        }
        let peer = peers.entry(id).or_insert_with(|| Peer::new(&hello.name, &self.config));
        match &peer.state {
            PeerState::Reconnecting => {}
            PeerState::Up { .. } if peer.creation != Some(hello.creation) => {}
            // Both connected at once, and this side's went on.
            PeerState::Up { .. } | PeerState::GoingDown => return Err(Refusal::AlreadyConnected),
            // Ours and theirs cross: the greater name's goes on.
            PeerState::Connecting { outgoing: true, .. } if self.name > hello.name => {
                return Err(Refusal::Simultaneous);
            }
            PeerState::Connecting { .. } => {
                peer.session = hello.session;
                peer.creation = Some(hello.creation);
                return self.take_over(peer).ok_or(Refusal::AlreadyConnected);
            }
        }
        let waiters = peer.going_down(&self.dropped);
        *abandoned = Some((id, peer.epoch, peer.name.clone(), waiters));
        Err(Refusal::Busy)
    }

    /// Our handshake with `id`, made for entry `epoch` at `address`,
    /// succeeded: its connection takes the peer over, unless another
    /// connection did or the entry is gone.
    fn take_up(&self, id: NodeId, epoch: u64, address: &str, creation: u32) -> Option<Taken> {
        let mut peers = self.peers();
        // Only a session not begun: one that was, and broke, resumes.
        let peer = peers
            .get_mut(&id)
            .filter(|peer| peer.epoch == epoch && matches!(peer.state, PeerState::Connecting { .. }))?;
        let taken = self.take_over(peer)?;
        peer.dialed = Some(address.to_owned());
        peer.creation = Some(creation);
        Some(taken)
    }

    /// A connecting or reconnecting peer's session goes to a new
    /// connection, and whoever waited is told.
    fn take_over(&self, peer: &mut Peer) -> Option<Taken> {
        if !matches!(peer.state, PeerState::Connecting { .. } | PeerState::Reconnecting) {
            return None;
        }
        let session = peer.pending.take()?;
        let stop = Arc::new(Notify::new());
        let before = std::mem::replace(&mut peer.state, PeerState::Up { stop: Arc::clone(&stop) });
        if let PeerState::Connecting { waiters, .. } = before {
            for waiter in waiters {
                let _ = waiter.send(Ok(()));
            }
        }
        peer.connection += 1;
        Some(Taken {
            epoch: peer.epoch,
            connection: peer.connection,
            session,
            backlog: peer.backlog.clone(),
            closed: peer.closed.clone(),
            round_trip: peer.round_trip.clone(),
            stop,
        })
    }

    /// Our handshake with `id` failed (`error`), or the peer's connection
    /// that should have come instead did not (`None`): unless a connection
    /// came up meanwhile, the peer is given up.
    fn outgoing_failed(&self, id: NodeId, epoch: u64, error: Option<HandshakeError>) {
        let (name, waiters) = {
            let mut peers = self.peers();
            let Some(peer) = peers.get_mut(&id) else { return };
            if peer.epoch != epoch || !matches!(peer.state, PeerState::Connecting { .. }) {
                return;
            }
            (peer.name.clone(), peer.going_down(&self.dropped))
        };
        let why = match error {
            Some(HandshakeError::WrongSecret) => NodeDownReason::AuthenticationFailed,
            Some(error) => NodeDownReason::Unreachable(error.to_string()),
            None => NodeDownReason::Unreachable(
                "both nodes connected at once and the other's connection did not come".into(),
            ),
        };
        self.give_up(id, epoch, &name, waiters, why);
    }

    /// Runs a connection that took over its peer; an accepted one writes
    /// the handshake's `welcome` first.
    fn established(
        self: Arc<Self>,
        peer: Handshaken,
        stream: handshake::HandshakeStream,
        taken: Taken,
        welcome: Option<Bytes>,
    ) {
        let id = NodeId::from_name(&peer.name);
        tracing::info!(
            node = %self.name,
            peer = %peer.name,
            creation = peer.creation,
            accepted = welcome.is_some(),
            resumed = peer.resume,
            "connected"
        );
        *self.live.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let dist = Arc::clone(&self);
        self.handle.spawn(async move {
            let Taken { epoch, connection, mut session, backlog, closed, round_trip, stop } = taken;
            let opened = || dist.opened(id, epoch, connection);
            let why = connection::run(
                &dist,
                id,
                stream,
                welcome,
                &mut session,
                &backlog,
                &stop,
                &closed,
                &round_trip,
                opened,
            )
            .await;
            dist.connection_ended(id, epoch, connection, why, session);
            let (count, emptied) = &dist.live;
            *count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
            emptied.notify_all();
        });
    }

    /// Connection `connection` of entry `epoch` of `id` exchanged its first
    /// acknowledgements: the session goes on, and a break it healed is
    /// behind it.
    fn opened(&self, id: NodeId, epoch: u64, connection: u64) {
        let mut peers = self.peers();
        let Some(peer) = peers.get_mut(&id).filter(|peer| peer.carries(epoch, connection)) else { return };
        if peer.broke_at.take().is_some() {
            peer.reconnects += 1;
        }
        if std::mem::replace(&mut peer.introduced, true) {
            return;
        }
        // The new peer hears of the nodes this one knows, and this one's
        // other peers of it (Erlang's nodes learn of each other through
        // `global`; here a name is learnt, and dialed at its first use).
        let name = peer.name.clone();
        let dialed = peer.dialed.clone().filter(|dialed| parse_name(&name).is_ok_and(|(_, address)| address != dialed));
        let known: Vec<String> = {
            let mut directory = self.directory();
            let known = directory
                .iter()
                .filter(|(known, entry)| **known != id && entry.name.len() <= MAX_NAME)
                .map(|(_, entry)| entry.name.clone())
                .take(MAX_NAMES)
                .collect();
            // Its own peer: what it says about itself wins over hearsay.
            let entry = directory.entry(id).or_insert(Known { name: name.clone(), via: None, down_at: None });
            entry.name.clone_from(&name);
            entry.down_at = None;
            if dialed.is_some() {
                entry.via = dialed;
            }
            known
        };
        if !known.is_empty() {
            let _ = peer.push(None, Frame::Nodes(known));
        }
        for (other, peer) in peers.iter() {
            if *other != id && matches!(peer.state, PeerState::Up { .. }) && name.len() <= MAX_NAME {
                let _ = peer.push(None, Frame::Nodes(vec![name.clone()]));
            }
        }
    }

    /// Connection `connection` of entry `epoch` of `id` ended (`why`),
    /// handing back its `session`: kept for the next connection when the
    /// break may heal, else the peer is declared down.
    fn connection_ended(
        self: &Arc<Self>,
        id: NodeId,
        epoch: u64,
        connection: u64,
        why: NodeDownReason,
        mut session: Session,
    ) {
        let name = {
            let mut peers = self.peers();
            match peers.get_mut(&id) {
                Some(peer) if peer.carries(epoch, connection) && matches!(peer.state, PeerState::Up { .. }) => {
                    if connection::resumable(&why) {
                        peer.state = PeerState::Reconnecting;
                        peer.pending = Some(session);
                        let deadline = *peer.broke_at.get_or_insert_with(Instant::now) + self.config.detection;
                        let redial = peer.dialed.clone().map(|address| (address, peer.session));
                        let name = peer.name.clone();
                        drop(peers);
                        tracing::info!(node = %self.name, peer = %name, "connection broke: {why}; resuming");
                        self.handle.spawn(Arc::clone(self).resume(id, epoch, connection, name, redial, deadline));
                        return;
                    }
                    peer.going_down(&self.dropped);
                    Some(peer.name.clone())
                }
                // Gone down already (a disconnect, the node's shutdown).
                _ => None,
            }
        };
        // The queue is closed now: whatever is still in the session is lost
        // with it, counted, whether the peer goes down here or went.
        let lost = session.lose();
        self.dropped.fetch_add(lost, Ordering::Relaxed);
        let Some(name) = name else { return };
        tracing::warn!(node = %self.name, peer = %name, lost, "node down: {why}");
        self.give_up(id, epoch, &name, Vec::new(), why);
    }

    /// The session of entry `epoch` of `id` lost its connection number
    /// `connection`: the side that dialed dials again until the detection
    /// bound (the other waits for it); unless a new connection took the
    /// session by then, the peer is declared down.
    async fn resume(
        self: Arc<Self>,
        id: NodeId,
        epoch: u64,
        connection: u64,
        name: String,
        redial: Option<(String, u64)>,
        deadline: Instant,
    ) {
        let mut pause = Duration::from_millis(10);
        if let Some((address, session)) = redial {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                // Given up meanwhile (a disconnect): dialing on would only
                // leave the peer a connection nobody carries.
                let waiting = self.peers().get(&id).is_some_and(|peer| {
                    peer.carries(epoch, connection) && matches!(peer.state, PeerState::Reconnecting)
                });
                if !waiting {
                    return;
                }
                match self.dial(&name, &address, session, true, left.min(self.config.handshake_timeout)).await {
                    Ok((stream, peer)) => {
                        if let Some(taken) = self.take_back(id, epoch, connection) {
                            self.established(peer, stream, taken, None);
                        }
                        return;
                    }
                    // The peer declared this node down already.
                    Err(HandshakeError::Refused(Refusal::UnknownSession)) => break,
                    // Nobody listens where the peer was: its node is gone
                    // (a network that drops does not answer at all), and
                    // waiting out the bound would only delay the news.
                    // (Through a proxy or tunnel, `connect_via`, a refusal
                    // may be the proxy's: waited out as any break.)
                    Err(HandshakeError::Io(error))
                        if error.kind() == std::io::ErrorKind::ConnectionRefused
                            && parse_name(&name).is_ok_and(|(_, own)| own == address) =>
                    {
                        break;
                    }
                    Err(error) => {
                        tracing::debug!(node = %self.name, peer = %name, "could not resume yet: {error}");
                        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
                        pause = (pause * 2).min(Duration::from_millis(250));
                    }
                }
            }
        } else {
            tokio::time::sleep_until(deadline.into()).await;
        }
        let waited = {
            let mut peers = self.peers();
            match peers.get_mut(&id) {
                Some(peer) if peer.carries(epoch, connection) && matches!(peer.state, PeerState::Reconnecting) => {
                    peer.going_down(&self.dropped);
                    Some(peer.name.clone())
                }
                _ => None,
            }
        };
        if let Some(name) = waited {
            tracing::warn!(node = %self.name, peer = %name, "node down: the connection did not come back in time");
            self.give_up(id, epoch, &name, Vec::new(), NodeDownReason::ConnectionClosed);
        }
    }

    /// Our resumption of entry `epoch` of `id` after its connection number
    /// `connection` broke succeeded: the new connection takes the session.
    fn take_back(&self, id: NodeId, epoch: u64, connection: u64) -> Option<Taken> {
        let mut peers = self.peers();
        let peer = peers.get_mut(&id).filter(|peer| peer.carries(epoch, connection))?;
        self.take_over(peer)
    }

    /// A peer (entry `epoch`, going down) is gone: every link and monitor
    /// across it fires, then the entry goes, so a new connection can come,
    /// and whoever waited to connect is told.
    fn give_up(&self, id: NodeId, epoch: u64, name: &str, waiters: Vec<Waiter>, why: NodeDownReason) {
        if let Some(known) = self.directory().get_mut(&id) {
            known.down_at = Some(Instant::now());
        }
        if let Some(node) = self.node.upgrade() {
            node.node_down(id, name, why.clone());
        }
        let requests = {
            let mut peers = self.peers();
            match peers.get(&id) {
                Some(peer) if peer.epoch == epoch => peers.remove(&id).map(|peer| peer.requests).unwrap_or_default(),
                _ => Vec::new(),
            }
        };
        if let Some(node) = self.node.upgrade() {
            for Request { id: request, reply_to, asked } in requests {
                match asked {
                    Asked::Whereis => node.send_message(reply_to, &WhereisReply { request, pid: Err(why.clone()) }),
                    Asked::Spawn { .. } => {
                        let pid = Err(SpawnError::NoConnection { node: name.to_owned(), why: why.clone() });
                        node.send_message(reply_to, &SpawnReply { request, pid });
                    }
                }
            }
        }
        // Last: a waiter that tries again at once finds the entry gone.
        for waiter in waiters {
            let _ = waiter.send(Err(why.to_string()));
        }
    }
    /// A frame from the peer `from`: delivered to its process here, or a
    /// protocol error that ends the connection.
    fn deliver(self: &Arc<Self>, from: NodeId, frame: Frame) -> Result<(), String> {
        let Some(node) = self.node.upgrade() else { return Err("this node is shutting down".into()) };
        match frame {
            Frame::Message { to, envelope } => {
                if to.node != self.id {
                    return Err(format!("a message for {to:?}, which is not a process of this node"));
                }
                node.send(None, to, envelope);
            }
            Frame::Signal { to, signal } => {
                if to.node != self.id {
                    return Err(format!("a signal for {to:?}, which is not a process of this node"));
                }
                if signal.sender().node != from {
                    return Err(format!("a signal claiming to come from {:?}, not the peer", signal.sender()));
                }
                // The `Down` of a process spawned for `to` that ended before
                // the answer came: kept until its monitor's target is known.
                let signal = match signal {
                    Signal::Down { id, target, reason } => match self.early_down(from, to, id, target, reason) {
                        Some((target, reason)) => Signal::Down { id, target, reason },
                        None => return Ok(()),
                    },
                    signal => signal,
                };
                node.signal(to, signal);
            }
            Frame::Spawn { module, entry, state, reply_to, request, link, monitor } => {
                if reply_to.node != from {
                    return Err(format!("a spawn for {reply_to:?}, which is not a process of the peer"));
                }
                let options = SpawnOptions { link, monitor: monitor.is_some() };
                // Off the I/O thread: the module's code decodes the state.
                // The link and the monitor are in place before the process
                // runs; its `Link` signal goes out before this answer.
                let dist = Arc::clone(self);
                self.handle.spawn_blocking(move || {
                    let pid = node.spawn_entry_for_remote(&module, &entry, &state, reply_to, options, monitor);
                    // On the asker's lane: behind nothing a big message
                    // of another process holds up.
                    if let Some(peer) = dist.peers().get(&from) {
                        let _ = peer
                            .push(Some(reply_to), Frame::SpawnReply { reply_to, request, pid: pid.map_err(Box::new) });
                    }
                });
            }
            Frame::SpawnReply { reply_to, request, pid } => {
                if pid.as_ref().is_ok_and(|pid| pid.node != from) {
                    return Err(format!("a spawn answered with {pid:?}, which is not a process of the peer"));
                }
                let spawn = |asked: &Asked| matches!(asked, Asked::Spawn { .. });
                let Some(Asked::Spawn { monitor, early_down }) = self.answered(from, request, reply_to, spawn) else {
                    return Err(format!("an answer to spawn request {request}, which was not asked"));
                };
                if let (Ok(pid), Some(id)) = (&pid, monitor) {
                    if !node.monitoring_now(reply_to, id, *pid) {
                        // Nobody to tell: the monitor goes from over there.
                        node.signal(*pid, Signal::Demonitor { id, watcher: reply_to });
                    } else if let Some((target, reason)) = early_down {
                        node.signal(reply_to, Signal::Down { id, target, reason });
                    } else if let Some(name) = self.gone(from) {
                        // The peer went down while this answer was read: its
                        // monitors fired before this one was in place.
                        let reason = ExitReason::NoConnection { node: name, why: NodeDownReason::ConnectionClosed };
                        node.signal(reply_to, Signal::Down { id, target: *pid, reason });
                    }
                }
                node.send_message(reply_to, &SpawnReply { request, pid: pid.map_err(|error| *error) });
            }
            Frame::Named { name, envelope } => {
                // As Erlang's `{Name, Node} ! Msg`: nobody by that name, no
                // delivery.
                if let Some(to) = node.whereis(&name) {
                    node.send(None, to, envelope);
                }
            }
            Frame::Whereis { name, reply_to, request } => {
                if reply_to.node != from {
                    return Err(format!("a whereis for {reply_to:?}, which is not a process of the peer"));
                }
                let pid = node.whereis(&name);
                if let Some(peer) = self.peers().get(&from) {
                    let _ = peer.push(Some(reply_to), Frame::WhereisReply { reply_to, request, pid });
                }
            }
            Frame::WhereisReply { reply_to, request, pid } => {
                // Only an answer to a question asked of this peer.
                let whereis = |asked: &Asked| matches!(asked, Asked::Whereis);
                let Some(Asked::Whereis) = self.answered(from, request, reply_to, whereis) else {
                    return Err(format!("an answer to whereis request {request}, which was not asked"));
                };
                node.send_message(reply_to, &WhereisReply { request, pid: Ok(pid) });
            }
            Frame::Ping(_) | Frame::Pong(_) | Frame::Ack(_) | Frame::Goodbye(_) | Frame::AckPlease => {}
            Frame::Nodes(names) => {
                if names.len() > MAX_NAMES {
                    return Err(format!("{} node names in one frame, over {MAX_NAMES}", names.len()));
                }
                // Hearsay: a name already known (a peer's own, above all)
                // is kept as it is, and one that is not a node's is passed
                // over.
                let mut directory = self.directory();
                for name in names {
                    if name.len() > MAX_NAME || parse_name(&name).is_err() || name == self.name {
                        continue;
                    }
                    let id = NodeId::from_name(&name);
                    if directory.len() < MAX_NAMES && !directory.contains_key(&id) {
                        directory.insert(id, Known { name, via: None, down_at: None });
                    }
                }
            }
            // The connection joins these (`parts.rs`) before delivery.
            Frame::Open { .. } | Frame::Part { .. } => return Err("a stream's frame outside its stream".into()),
        }
        Ok(())
    }

    /// The peer `from`'s name if it is going down or gone.
    fn gone(&self, from: NodeId) -> Option<String> {
        match self.peers().get(&from) {
            Some(peer) if !peer.closed.load(Ordering::Relaxed) => None,
            Some(peer) => Some(peer.name.clone()),
            None => Some(format!("{from:?}")),
        }
    }

    /// Takes request `request` of `reply_to`, of the `kind` given, asked of
    /// the peer `from`, as answered; `None` if there is no such request.
    fn answered(&self, from: NodeId, request: u64, reply_to: Pid, kind: impl Fn(&Asked) -> bool) -> Option<Asked> {
        let mut peers = self.peers();
        let requests = &mut peers.get_mut(&from)?.requests;
        let at = requests
            .iter()
            .position(|asked| asked.id == request && asked.reply_to == reply_to && kind(&asked.asked))?;
        Some(requests.swap_remove(at).asked)
    }

    /// A `Down` of monitor `id` of `to` from the peer `from`: kept, and
    /// `None`, if it is the monitor of a spawn `to` asked for and the
    /// answer has not come; else handed back.
    fn early_down(&self, from: NodeId, to: Pid, id: u64, target: Pid, reason: ExitReason) -> Option<(Pid, ExitReason)> {
        let mut peers = self.peers();
        let waiting = peers.get_mut(&from).and_then(|peer| {
            peer.requests.iter_mut().find_map(|request| match &mut request.asked {
                Asked::Spawn { monitor: Some(monitor), early_down } if request.reply_to == to && *monitor == id => {
                    Some(early_down)
                }
                _ => None,
            })
        });
        match waiting {
            Some(early_down) => {
                *early_down = Some((target, reason));
                None
            }
            None => Some((target, reason)),
        }
    }

    /// Drops the connection to `name` (Erlang's `disconnect_node`): what
    /// links and monitors across it fires here with `Disconnected`, and on
    /// the peer as a closed connection.
    pub(crate) fn disconnect(&self, name: &str) -> bool {
        let id = NodeId::from_name(name);
        let (epoch, waiters) = {
            let mut peers = self.peers();
            let Some(peer) = peers.get_mut(&id) else { return false };
            if matches!(peer.state, PeerState::GoingDown) {
                return false;
            }
            // The peer is told, after what is queued; then the queue
            // closes: the connection's writer ends, and the socket with it;
            // a handshake under way finds the entry gone.
            if matches!(peer.state, PeerState::Up { .. }) {
                let _ = peer.push(None, Frame::Goodbye(Farewell::Disconnect));
            }
            (peer.epoch, peer.going_down(&self.dropped))
        };
        self.give_up(id, epoch, name, waiters, NodeDownReason::Disconnected);
        true
    }

    /// The connected and connecting peers.
    pub(crate) fn nodes(&self) -> Vec<PeerInfo> {
        let mut nodes: Vec<PeerInfo> = self
            .peers()
            .values()
            .filter(|peer| !matches!(peer.state, PeerState::GoingDown))
            .map(|peer| PeerInfo {
                name: peer.name.clone(),
                connected: matches!(peer.state, PeerState::Up { .. }),
                queued: peer.backlog.frames(),
                queued_bytes: peer.backlog.bytes(),
                reconnects: peer.reconnects,
                round_trip: match peer.round_trip.load(Ordering::Relaxed) {
                    0 => None,
                    micros => Some(Duration::from_micros(micros)),
                },
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes
    }

    /// Messages and signals dropped for want of a connection.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Connections refused or failed in their handshake.
    pub(crate) fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }

    /// Says goodbye to every peer, waits a little for the goodbyes to be
    /// written, and stops the I/O thread. Called once the node's processes
    /// are gone (their last exit signals are queued before the goodbyes).
    pub(crate) fn shutdown(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        // The I/O thread reads the last words: the schedulers stop soon,
        // and the one calling this may be one of them.
        for side in self.reading_sides() {
            side.recall();
        }
        let mut peers = std::mem::take(&mut *self.peers());
        for peer in peers.values_mut() {
            match &mut peer.pending {
                // A session no connection carries is lost with the node.
                Some(session) => drop(self.dropped.fetch_add(session.lose(), Ordering::Relaxed)),
                None => drop(peer.push(None, Frame::Goodbye(Farewell::Shutdown))),
            }
        }
        // The queues close with the table: each connection writes what is
        // queued, the goodbye last, and ends; whoever waited in `connect`
        // learns the node is stopping.
        drop(peers);
        let (count, emptied) = &self.live;
        let guard = count.lock().unwrap_or_else(|e| e.into_inner());
        drop(emptied.wait_timeout_while(guard, Duration::from_secs(1), |live| *live > 0));
        self.stop_runtime();
    }

    fn stop_runtime(&self) {
        // In the background: this may run on any thread, the I/O thread's
        // own included, where waiting for the runtime would deadlock.
        if let Some(stop_io) = self.stop_io.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = stop_io.send(());
        }
    }
}

/// Looks of an idle scheduler at its busy siblings at least this far
/// apart (see `Dist::tick`).
const TICK_APART: Duration = Duration::from_micros(800);

impl IoHandler for Dist {
    fn readable(&self, index: usize, token: u64) {
        let side = self.readers().get(&token).and_then(Weak::upgrade);
        if let Some(side) = side {
            // A frame the core cannot take ends its connection, not the
            // scheduler thread (on the I/O thread, tokio catches it).
            let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| side.read_here(index)));
            if read.is_err() {
                tracing::error!(node = %self.name, "reading a connection panicked; it is closed");
                side.broken();
            }
        }
    }

    fn tick(&self, index: usize) {
        let Some(node) = self.node.upgrade() else { return };
        let mut stalled = Vec::new();
        {
            let mut ticked = self.ticked.lock().unwrap_or_else(|e| e.into_inner());
            // A wait cut short (a wake-up) is no tick: a poll seen at two
            // looks has lasted at least this long.
            if ticked.0.elapsed() < TICK_APART {
                return;
            }
            ticked.0 = Instant::now();
            for (other, (watch, seen)) in node.watch.iter().zip(ticked.1.iter_mut()).enumerate() {
                let now = watch.now();
                if other != index {
                    stalled.push((other, now.1 != 0 && now == *seen));
                }
                *seen = now;
            }
        }
        for (other, held) in stalled {
            self.scheduler_stalled(other, held);
        }
    }
}

impl Drop for Dist {
    fn drop(&mut self) {
        self.stop_runtime();
    }
}
