//! Distribution: the node's door to other nodes (DESIGN.md
//! "Distribution"). The rest of the core knows three things of it: a
//! message or [`Signal`] for a pid of another node goes to
//! [`Dist::send`] or [`Dist::signal`], a connection that ends calls
//! [`NodeInner::node_down`], and [`Node::connect`](crate::Node::connect)
//! opens one.
//!
//! One connection per node pair (a simultaneous connect from both sides
//! keeps the greater name's, as Erlang does), on an I/O thread of the
//! node's own: connections are tasks of the core, never of a process, so an
//! upgrade, a purge or a crash of module code cannot touch a socket or
//! lose what arrived on it. Every frame towards one peer goes through one
//! queue, so messages between two processes stay in order.

mod connection;
mod frame;
mod handshake;
mod secret;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use molt_abi::{Envelope, ExitReason, NodeDownReason, NodeId, Pid};
use rustc_hash::FxHashMap;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::bytes::Bytes;

pub use secret::{Secret, SecretError};

use crate::node::NodeInner;
use crate::signal::Signal;
use frame::Frame;
use handshake::{HandshakeError, Me, Refusal};

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
    /// Frames queued towards it and not yet written to the connection.
    pub queued: usize,
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

/// The distribution of one node.
pub(crate) struct Dist {
    node: Weak<NodeInner>,
    name: String,
    id: NodeId,
    creation: u32,
    secret: Secret,
    config: DistConfig,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    peers: Mutex<FxHashMap<NodeId, Peer>>,
    handshakes: Arc<Semaphore>,
    /// Connection tasks still running, for shutdown to wait on.
    live: (Mutex<usize>, Condvar),
    /// Messages and signals for nodes this one had no connection to, or
    /// lost with one.
    dropped: AtomicU64,
    /// Connections refused or failed in their handshake.
    refused: AtomicUsize,
}

impl std::fmt::Debug for Dist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dist").field("name", &self.name).finish_non_exhaustive()
    }
}

/// One peer node: its queue of frames, and how far its connection is.
struct Peer {
    name: String,
    /// Which entry for this peer this is: a late word about an attempt
    /// of an earlier entry must not touch this one.
    epoch: u64,
    /// Frames towards the peer; `None` once the entry is going down.
    queue: Option<mpsc::UnboundedSender<Frame>>,
    /// The queue's other end, until a connection takes it.
    pending: Option<mpsc::UnboundedReceiver<Frame>>,
    state: PeerState,
    queued: Arc<AtomicUsize>,
}

/// Someone waiting in [`Node::connect`](crate::Node::connect): told
/// through a std channel, which works from any thread (a tokio runtime's
/// included).
type Waiter = std::sync::mpsc::Sender<Result<(), String>>;

enum PeerState {
    /// No connection yet; `outgoing` when our own handshake is under way.
    /// `waiters` are told how it ends.
    Connecting { outgoing: bool, waiters: Vec<Waiter> },
    /// A connection carries the queue. An entry is up at most once (it
    /// goes down for good), so its epoch tells its connection from any
    /// other.
    Up,
    /// Its links and monitors are being fired: a new connection waits
    /// until that is done, so none of its relations is taken for one of
    /// the old connection.
    GoingDown,
}

impl Peer {
    fn new(name: &str) -> Peer {
        static EPOCHS: AtomicU64 = AtomicU64::new(1);
        let (queue, pending) = mpsc::unbounded_channel();
        Peer {
            name: name.to_owned(),
            epoch: EPOCHS.fetch_add(1, Ordering::Relaxed),
            queue: Some(queue),
            pending: Some(pending),
            state: PeerState::Connecting { outgoing: false, waiters: Vec::new() },
            queued: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Queues `frame`, or hands it back when the queue is closed.
    fn push(&self, frame: Frame) -> Result<(), Frame> {
        let Some(queue) = &self.queue else { return Err(frame) };
        self.queued.fetch_add(1, Ordering::Relaxed);
        queue.send(frame).map_err(|unsent| {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            unsent.0
        })
    }

    /// Starts going down: the queue closes (a connection's writer ends),
    /// what was queued before any connection took it is counted in
    /// `dropped`, and whoever waited is handed back.
    fn going_down(&mut self, dropped: &AtomicU64) -> Vec<Waiter> {
        self.queue = None;
        if let Some(mut pending) = self.pending.take() {
            dropped.fetch_add(drain(&mut pending), Ordering::Relaxed);
        }
        match std::mem::replace(&mut self.state, PeerState::GoingDown) {
            PeerState::Connecting { waiters, .. } => waiters,
            _ => Vec::new(),
        }
    }
}

/// Empties a queue nobody will write out; how many frames it held.
fn drain(queue: &mut mpsc::UnboundedReceiver<Frame>) -> u64 {
    let mut lost = 0;
    while queue.try_recv().is_ok() {
        lost += 1;
    }
    lost
}

/// What a connection that won its peer takes over.
struct Taken {
    /// The entry's epoch.
    epoch: u64,
    queue: mpsc::UnboundedReceiver<Frame>,
    queued: Arc<AtomicUsize>,
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
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("molt-dist-{}", node.name))
            .enable_io()
            .enable_time()
            .build()?;
        let handle = runtime.handle().clone();
        let dist = Arc::new(Dist {
            node: Arc::downgrade(node),
            name: node.name.clone(),
            id: node.id,
            creation: node.creation,
            secret,
            handshakes: Arc::new(Semaphore::new(config.max_handshakes)),
            config,
            runtime: Mutex::new(Some(runtime)),
            handle,
            peers: Mutex::new(FxHashMap::default()),
            live: (Mutex::new(0), Condvar::new()),
            dropped: AtomicU64::new(0),
            refused: AtomicUsize::new(0),
        });
        listener.set_nonblocking(true)?;
        let listener = {
            let _entered = dist.handle.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        dist.handle.spawn(Self::accept_loop(Arc::downgrade(&dist), listener));
        Ok(dist)
    }

    fn me(&self) -> Me<'_> {
        Me { name: &self.name, creation: self.creation, secret: &self.secret }
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, FxHashMap<NodeId, Peer>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message for `to`, a process of another node; dropped (and
    /// counted) when there is no connection to that node, as Erlang drops
    /// a message to an unreachable node.
    pub(crate) fn send(&self, to: Pid, envelope: Envelope) {
        let sent = self.peers().get(&to.node).is_some_and(|peer| peer.push(Frame::Message { to, envelope }).is_ok());
        if !sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues a signal for `to`, a process of another node; with no
    /// connection to it, answers as a lost connection would (a link or a
    /// monitor fires with `noconnection`).
    pub(crate) fn signal(&self, node: &NodeInner, to: Pid, signal: Signal) {
        let (answer, signal) = {
            let peers = self.peers();
            match peers.get(&to.node) {
                Some(peer) => match peer.push(Frame::Signal { to, signal }) {
                    Ok(()) => return,
                    Err(Frame::Signal { signal, .. }) => (peer.name.clone(), signal),
                    Err(_) => unreachable!("the frame handed back is the one pushed"),
                },
                None => (format!("{:?}", to.node), signal),
            }
        };
        self.dropped.fetch_add(1, Ordering::Relaxed);
        let reason = ExitReason::NoConnection {
            node: answer,
            why: NodeDownReason::Unreachable("this node has no connection to it".into()),
        };
        node.signal_unreachable(to, signal, reason);
    }

    /// Connects to the node called `name` (or waits for the connection
    /// already under way).
    pub(crate) fn connect(self: &Arc<Self>, name: &str) -> Result<(), ConnectError> {
        let (_, address) = parse_name(name)?;
        if name == self.name {
            return Err(ConnectError::BadName(name.to_owned()));
        }
        let id = NodeId::from_name(name);
        let (told, tell) = std::sync::mpsc::channel();
        let start = {
            let mut peers = self.peers();
            let peer = peers.entry(id).or_insert_with(|| Peer::new(name));
            match &mut peer.state {
                PeerState::Up => return Ok(()),
                PeerState::GoingDown => {
                    return Err(ConnectError::Failed {
                        node: name.to_owned(),
                        reason: "its previous connection is still being torn down; try again".into(),
                    });
                }
                PeerState::Connecting { outgoing, waiters } => {
                    waiters.push(told);
                    (!std::mem::replace(outgoing, true)).then_some(peer.epoch)
                }
            }
        };
        if let Some(epoch) = start {
            self.handle.spawn(Arc::clone(self).connect_task(name.to_owned(), address.to_owned(), epoch));
        }
        match tell.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(ConnectError::Failed { node: name.to_owned(), reason }),
            Err(_) => Err(ConnectError::Stopping),
        }
    }

    async fn connect_task(self: Arc<Self>, name: String, address: String, epoch: u64) {
        let deadline = self.config.handshake_timeout;
        let attempt = async {
            let stream = tokio::net::TcpStream::connect(&address).await?;
            stream.set_nodelay(true)?;
            let mut stream = handshake::framed(stream);
            let peer = handshake::connect(&mut stream, &self.me(), &name).await?;
            Ok::<_, HandshakeError>((stream, peer))
        };
        let result = tokio::time::timeout(deadline, attempt).await.unwrap_or(Err(HandshakeError::Timeout));
        let id = NodeId::from_name(&name);
        match result {
            Ok((stream, peer)) => match self.take_up(id, epoch) {
                Some(taken) => self.established(peer.name, peer.creation, stream, taken, None),
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
        let mut stream = handshake::framed(stream);
        let me = self.me();
        // Only a peer that proved it holds the secret gets this far: a
        // stranger changes nothing of the node's state.
        let handshake = handshake::accept(&mut stream, &me, |name| self.admit(name));
        let result = tokio::time::timeout(self.config.handshake_timeout, handshake)
            .await
            .unwrap_or(Err(HandshakeError::Timeout));
        match result {
            Ok((peer, taken, welcome)) => self.established(peer.name, peer.creation, stream, taken, Some(welcome)),
            Err(error) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %self.name, %from, "refused a connection: {error}");
            }
        }
    }

    /// Whether an authenticated peer called `name` may connect: if so, its
    /// connection takes the peer over at once, under the same lock (a
    /// `connect` in between would start a second connection).
    fn admit(&self, name: &str) -> Result<Taken, Refusal> {
        let id = NodeId::from_name(name);
        let mut peers = self.peers();
        let peer = peers.entry(id).or_insert_with(|| Peer::new(name));
        match &peer.state {
            PeerState::Up | PeerState::GoingDown => Err(Refusal::AlreadyConnected),
            // Ours and theirs cross: the greater name's goes on.
            PeerState::Connecting { outgoing: true, .. } if self.name.as_str() > name => Err(Refusal::Simultaneous),
            PeerState::Connecting { .. } => self.take_over(peer).ok_or(Refusal::AlreadyConnected),
        }
    }

    /// Our handshake with `id`, made for entry `epoch`, succeeded: its
    /// connection takes the peer over, unless another connection did or
    /// the entry is gone.
    fn take_up(&self, id: NodeId, epoch: u64) -> Option<Taken> {
        let mut peers = self.peers();
        let peer = peers.get_mut(&id).filter(|peer| peer.epoch == epoch)?;
        self.take_over(peer)
    }

    /// A connecting peer's queue goes to a new connection, and whoever
    /// waited is told.
    fn take_over(&self, peer: &mut Peer) -> Option<Taken> {
        if !matches!(peer.state, PeerState::Connecting { .. }) {
            return None;
        }
        let queue = peer.pending.take()?;
        if let PeerState::Connecting { waiters, .. } = std::mem::replace(&mut peer.state, PeerState::Up) {
            for waiter in waiters {
                let _ = waiter.send(Ok(()));
            }
        }
        Some(Taken { epoch: peer.epoch, queue, queued: peer.queued.clone() })
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
        name: String,
        creation: u32,
        mut stream: handshake::HandshakeStream,
        taken: Taken,
        welcome: Option<Bytes>,
    ) {
        let id = NodeId::from_name(&name);
        tracing::info!(node = %self.name, peer = %name, creation, accepted = welcome.is_some(), "connected");
        stream.codec_mut().set_max_frame_length(self.config.max_frame);
        *self.live.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let dist = Arc::clone(&self);
        self.handle.spawn(async move {
            let Taken { epoch, queue, queued } = taken;
            let ended = connection::run(&dist, id, stream, welcome, queue, &queued).await;
            dist.connection_ended(id, epoch, ended);
            let (count, emptied) = &dist.live;
            *count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
            emptied.notify_all();
        });
    }

    /// The connection of entry `epoch` of `id` ended.
    fn connection_ended(&self, id: NodeId, epoch: u64, ended: connection::Ended) {
        let name = {
            let mut peers = self.peers();
            match peers.get_mut(&id) {
                Some(peer) if peer.epoch == epoch && matches!(peer.state, PeerState::Up) => {
                    peer.going_down(&self.dropped);
                    Some(peer.name.clone())
                }
                // Gone down already (a disconnect, the node's shutdown).
                _ => None,
            }
        };
        // The queue is closed now: whatever is still in it is lost with the
        // connection, counted, whether the peer goes down here or went.
        let connection::Ended { why, unsent, mut queue } = ended;
        let lost = unsent + drain(&mut queue);
        self.dropped.fetch_add(lost, Ordering::Relaxed);
        let Some(name) = name else { return };
        tracing::warn!(node = %self.name, peer = %name, lost, "node down: {why}");
        self.give_up(id, epoch, &name, Vec::new(), why);
    }

    /// A peer (entry `epoch`, going down) is gone: every link and monitor
    /// across it fires, then the entry goes, so a new connection can come,
    /// and whoever waited to connect is told.
    fn give_up(&self, id: NodeId, epoch: u64, name: &str, waiters: Vec<Waiter>, why: NodeDownReason) {
        if let Some(node) = self.node.upgrade() {
            node.node_down(id, name, why.clone());
        }
        {
            let mut peers = self.peers();
            if peers.get(&id).is_some_and(|peer| peer.epoch == epoch) {
                peers.remove(&id);
            }
        }
        // Last: a waiter that tries again at once finds the entry gone.
        for waiter in waiters {
            let _ = waiter.send(Err(why.to_string()));
        }
    }

    /// A frame from the peer `from`: delivered to its process here, or a
    /// protocol error that ends the connection.
    fn deliver(&self, from: NodeId, frame: Frame) -> Result<(), String> {
        let Some(node) = self.node.upgrade() else { return Err("this node is shutting down".into()) };
        match frame {
            Frame::Message { to, envelope } => {
                if to.node != self.id {
                    return Err(format!("a message for {to:?}, which is not a process of this node"));
                }
                node.send(to, envelope);
            }
            Frame::Signal { to, signal } => {
                if to.node != self.id {
                    return Err(format!("a signal for {to:?}, which is not a process of this node"));
                }
                if signal.sender().is_some_and(|sender| sender.node != from) {
                    return Err(format!("a signal claiming to come from {:?}, not the peer", signal.sender()));
                }
                node.signal(to, signal);
            }
            Frame::Tick | Frame::Goodbye => {}
        }
        Ok(())
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
            // Its queue closes: the connection's writer ends, and the
            // socket with it; a handshake under way finds the entry gone.
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
                connected: matches!(peer.state, PeerState::Up),
                queued: peer.queued.load(Ordering::Relaxed),
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
        let peers = std::mem::take(&mut *self.peers());
        for peer in peers.values() {
            let _ = peer.push(Frame::Goodbye);
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
        if let Some(runtime) = self.runtime.lock().unwrap_or_else(|e| e.into_inner()).take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Dist {
    fn drop(&mut self) {
        self.stop_runtime();
    }
}
