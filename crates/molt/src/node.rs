//! The node: [`Node`] (what a host program holds) and [`NodeInner`] (what
//! every process of the node shares).
//!
//! The node owns the process table, the registry and the timers; processes
//! hold an `Arc<NodeInner>` and reach these only through its methods. Each
//! node runs its processes on its own schedulers, so several nodes can
//! live in one OS process and one node's shutdown never touches another.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use molt_abi::contract::{ProcessStart, SpawnOptions};
use molt_abi::{
    Down, ExitReason, IntoExitReason, MonitorRef, NodeId, Pid, Process, SpawnError, Upgrade, UpgradeFailed,
};

use crate::boundary;
use crate::code::{
    BuildError, BuildOptions, CodeServer, LoadError, LoadOptions, Loaded, ModuleInfo, PurgeError, PurgeReport,
    UnloadedVersion, Version, VersionInfo,
};
use crate::dist::{ConnectError, Dist, DistConfig, PeerInfo, Secret, Tls};
use crate::info::ProcessInfo;
use crate::placement::{Placement, Scheduled};
use crate::process::{CLOSURE, CodeRef, ProcessCtx, ProcessTask, RunningBody};
use crate::process_table::{Found, ProcessTable};
use crate::registry::Registry;
use crate::scheduler::SchedulerThread;
use crate::signal::Signal;
use crate::timer::TimerWheel;
use crate::watchdog::SchedulerWatch;

/// The most scheduler threads a node runs (Erlang's limit too).
pub const MAX_WORKERS: usize = 1024;

/// How to start a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    name: String,
    workers: usize,
    shutdown_timeout: Duration,
    purge_timeout: Duration,
    long_schedule: Duration,
    dist: DistConfig,
}

impl NodeConfig {
    /// A node called `name`, with one scheduler thread per core.
    pub fn new(name: impl Into<String>) -> NodeConfig {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_WORKERS);
        NodeConfig {
            name: name.into(),
            workers,
            shutdown_timeout: Duration::from_secs(10),
            purge_timeout: crate::code::PURGE_WAIT,
            long_schedule: Duration::from_millis(100),
            dist: DistConfig::default(),
        }
    }

    /// Makes the node distributed: it listens on `address` (`host:port`;
    /// port 0 picks a free one) and is called `name@host:port` with the
    /// port it got ([`Node::name`] reports it). Needs a [`secret`]
    /// (Self::secret). A node not given a listen address stays local.
    pub fn listen(mut self, address: impl Into<String>) -> NodeConfig {
        self.dist.listen = Some(address.into());
        self
    }

    /// The secret the nodes of a group share to let each other in (see
    /// [`Secret`]).
    pub fn secret(mut self, secret: Secret) -> NodeConfig {
        self.dist.secret = Some(secret);
        self
    }

    /// Mutual TLS on every connection (see [`Tls`]), for links between
    /// machines; every node of the group needs it. The secret is still
    /// needed, and still checked, inside.
    pub fn tls(mut self, tls: Tls) -> NodeConfig {
        self.dist.tls = Some(tls);
        self
    }

    /// How long a connected peer may stay silent (heartbeats go every
    /// quarter of it) before it is declared down, with its links and
    /// monitors fired: 4 s unless set (Erlang's `net_ticktime` takes 45 to
    /// 75 s).
    pub fn detection(mut self, bound: Duration) -> NodeConfig {
        self.dist.detection = bound.max(Duration::from_millis(4));
        self
    }

    /// How long a connection's handshake may take before it is dropped: 5 s
    /// unless set.
    pub fn handshake_timeout(mut self, timeout: Duration) -> NodeConfig {
        self.dist.handshake_timeout = timeout;
        self
    }

    /// The largest frame a peer may send (a bigger one ends its connection
    /// as a protocol error): 64 MiB unless set.
    pub fn max_frame(mut self, bytes: usize) -> NodeConfig {
        self.dist.max_frame = bytes;
        self
    }

    /// The most bytes of messages towards one peer node that may wait,
    /// queued or written and not yet acknowledged: 8 MiB unless set. A
    /// process whose send goes over it pauses at its next receive or sleep
    /// (`ProcessStatus::Backpressured`) until the backlog is down to half;
    /// its messages are never dropped for it.
    pub fn max_backlog(mut self, bytes: usize) -> NodeConfig {
        self.dist.max_backlog = bytes.max(1);
        self
    }

    /// How many scheduler threads run the node's processes (Erlang `+S`):
    /// from 1 to [`MAX_WORKERS`], as Erlang's.
    pub fn workers(mut self, workers: usize) -> NodeConfig {
        self.workers = workers.clamp(1, MAX_WORKERS);
        self
    }

    /// How long a hard [`purge`](Node::purge) waits for the processes it
    /// killed to end before it reports them [`PurgeError::Stuck`] (they never
    /// yield); the version then stays, still purging, until a later purge
    /// finds it unused.
    pub fn purge_timeout(mut self, timeout: Duration) -> NodeConfig {
        self.purge_timeout = timeout;
        self
    }

    /// How long a process may keep its scheduler thread in one go (a poll
    /// that does not yield) before a warning names it (Erlang's
    /// `long_schedule` system monitor); 100 ms unless set, `Duration::ZERO`
    /// for never. Such a process holds up every other process of its
    /// thread: blocking code belongs in `p.blocking(|| ...)`.
    ///
    /// The watchdog also writes what such a process sent to other nodes,
    /// within this threshold (or a heartbeat, whichever comes first). On a
    /// node without it, every message to another node goes through the
    /// connection's I/O thread, a round trip some 25% longer than when
    /// senders write to idle connections themselves.
    pub fn long_schedule(mut self, threshold: Duration) -> NodeConfig {
        self.long_schedule = threshold;
        self
    }

    /// How long `shutdown` waits for processes to end before it abandons
    /// those that never yield.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> NodeConfig {
        self.shutdown_timeout = timeout;
        self
    }
}

/// Why a node could not start.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The node's name is empty.
    #[error("a node name must not be empty")]
    EmptyName,
    /// The scheduler threads could not be created.
    #[error("could not start the node's scheduler threads: {0}; check the process's thread limit (ulimit -u)")]
    Runtime(#[source] std::io::Error),
    /// A distributed node's name has an `@` of its own.
    #[error(
        "a node that listens is called name@host:port after its address: give NodeConfig::new just the name, \
         not {0:?}"
    )]
    BadName(String),
    /// A listen address but no secret.
    #[error(
        "a node that listens needs the secret its group shares: NodeConfig::secret(Secret::from_file(..)) or \
         Secret::from_env(..)"
    )]
    NoSecret,
    /// The listen address could not be bound.
    #[error("could not listen on {address}: {source}; pick another port, or 0 for any free one")]
    Listen {
        /// The address.
        address: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

/// A running node. Dropping it shuts it down, as [`Node::shutdown`] does.
#[derive(Debug)]
pub struct Node {
    pub(crate) inner: Arc<NodeInner>,
    schedulers: Vec<SchedulerThread>,
    shutdown_timeout: Duration,
}

/// What a refused spawn drops: a closure (and the version it keeps open
/// until it is dropped), or nothing.
struct Stillborn(Option<ProcessStart>, Option<Arc<Version>>);

impl From<Body<'_>> for Stillborn {
    fn from(body: Body<'_>) -> Stillborn {
        match body {
            Body::Start(start, version) => Stillborn(Some(start), version),
            Body::Entry { version, .. } => Stillborn(None, Some(version)),
        }
    }
}

impl Drop for Stillborn {
    fn drop(&mut self) {
        // The closure's drop code first, while its version is still held.
        drop(self.0.take());
        drop(self.1.take());
    }
}

/// What a new process runs.
enum Body<'a> {
    /// A closure: compiled into the host (no version), or made by the code
    /// of a module version (found by the address of its code), which it
    /// keeps open.
    Start(ProcessStart, Option<Arc<Version>>),
    /// An entry of a module version, with its start state.
    Entry { version: Arc<Version>, entry: &'a str, state: &'a [u8] },
}

/// What the processes of a node share.
pub(crate) struct NodeInner {
    pub(crate) name: String,
    pub(crate) id: NodeId,
    pub(crate) creation: u32,
    /// One scheduler per scheduler thread (see `executor.rs`). A process stays on
    /// the scheduler it was placed on: a spawn from a process goes to its
    /// parent's scheduler (so processes that talk to each other share a
    /// thread, as Erlang places them), a spawn from outside goes round-robin.
    pub(crate) schedulers: Box<[Arc<crate::executor::Scheduler>]>,
    next_scheduler: AtomicUsize,
    epoch: std::time::Instant,
    pub(crate) table: ProcessTable,
    next_ref: AtomicU64,
    pub(crate) registry: Registry,
    pub(crate) code: CodeServer,
    /// Where processes run, and when they move.
    pub(crate) placement: Placement,
    /// What each scheduler polls now, for the watchdog.
    pub(crate) watch: Box<[SchedulerWatch]>,
    /// The `send_after` timers, one wheel per scheduler.
    pub(crate) timers: Box<[Arc<TimerWheel>]>,
    /// The names of the code processes run, each copied once; a process
    /// keeps an index into `code_names`.
    code_index: DashMap<(usize, usize), u32>,
    code_names: std::sync::RwLock<Vec<Arc<str>>>,
    stopping: AtomicBool,
    emptied: (Mutex<()>, Condvar),
    /// The door to other nodes, for a node that listens.
    pub(crate) dist: OnceLock<Arc<Dist>>,
}

impl std::fmt::Debug for NodeInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeInner").field("name", &self.name).field("processes", &self.table.len()).finish()
    }
}

impl Node {
    /// Starts a node with its own scheduler threads.
    ///
    /// # Errors
    /// When the name is empty or the threads cannot be created.
    pub fn start(config: NodeConfig) -> Result<Node, NodeError> {
        if config.name.is_empty() {
            return Err(NodeError::EmptyName);
        }
        // A distributed node binds first: its name carries the port it got.
        let (name, listener) = match &config.dist.listen {
            None => (config.name.clone(), None),
            Some(address) => {
                if config.name.contains('@') {
                    return Err(NodeError::BadName(config.name));
                }
                if config.dist.secret.is_none() {
                    return Err(NodeError::NoSecret);
                }
                let listen_error = |source| NodeError::Listen { address: address.clone(), source };
                let listener = std::net::TcpListener::bind(address.as_str()).map_err(listen_error)?;
                let bound = listener.local_addr().map_err(listen_error)?;
                (format!("{}@{bound}", config.name), Some(listener))
            }
        };
        let mut schedulers = Vec::with_capacity(config.workers);
        let mut handles = Vec::with_capacity(config.workers);
        static NODES: AtomicU64 = AtomicU64::new(1);
        let token = NODES.fetch_add(1, Ordering::Relaxed);
        for index in 0..config.workers {
            let (scheduler, handle) = SchedulerThread::start(token, index).map_err(NodeError::Runtime)?;
            schedulers.push(scheduler);
            handles.push(handle);
        }
        crate::executor::group(&handles);
        let creation =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.subsec_nanos() ^ d.as_secs() as u32);
        let code = CodeServer::new(config.purge_timeout);
        let inner = Arc::new(NodeInner {
            id: NodeId::from_name(&name),
            name,
            creation,
            schedulers: handles.into_boxed_slice(),
            next_scheduler: AtomicUsize::new(0),
            epoch: std::time::Instant::now(),
            table: ProcessTable::new(),
            next_ref: AtomicU64::new(1),
            registry: Registry::default(),
            code,
            placement: Placement::new(config.workers),
            watch: (0..config.workers).map(|_| SchedulerWatch::default()).collect(),
            timers: (0..config.workers).map(|_| Arc::new(TimerWheel::new())).collect(),
            code_index: DashMap::new(),
            code_names: std::sync::RwLock::new(Vec::new()),
            stopping: AtomicBool::new(false),
            emptied: (Mutex::new(()), Condvar::new()),
            dist: OnceLock::new(),
        });
        // The watchdog first: whether it runs decides whether senders
        // write to idle connections themselves (it writes what a process
        // that does not yield sent; see `dist/link.rs`).
        let watched = crate::watchdog::start(&inner, config.long_schedule);
        if let (Some(listener), Some(secret)) = (listener, config.dist.secret.clone()) {
            let dist_config = DistConfig { watched, ..config.dist };
            let dist = Dist::start(&inner, listener, dist_config, secret).map_err(NodeError::Runtime)?;
            let _ = inner.dist.set(dist);
        }
        for (scheduler, wheel) in inner.schedulers.iter().zip(&inner.timers) {
            let fire = crate::timer::fire_timers(Arc::downgrade(&inner), wheel.clone());
            scheduler.spawn(Box::pin(crate::executor::Fixed(Box::pin(fire))), drop);
        }
        Ok(Node { inner, schedulers, shutdown_timeout: config.shutdown_timeout })
    }

    /// Its distribution, if it listens (for the core's own tests).
    #[cfg(test)]
    pub(crate) fn dist(&self) -> Option<&Arc<Dist>> {
        self.inner.dist.get()
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The node's id, as it appears in its pids.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// Starts a process running `body`.
    pub fn spawn<F, Fut>(&self, body: F) -> Pid
    where
        F: FnOnce(Process) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: IntoExitReason,
    {
        self.inner.spawn(ProcessStart::new(body), None, SpawnOptions::default()).0
    }

    /// Runs `body` as a process and blocks the calling thread until it
    /// returns (Cloud Haskell `runProcess`). Call it from ordinary threads
    /// (`main`, a test), not from inside a process.
    ///
    /// # Errors
    /// The process's exit reason if it ended without returning a value: it
    /// panicked, was killed, or the node shut down.
    pub fn run<F, Fut, R>(&self, body: F) -> Result<R, ExitReason>
    where
        F: FnOnce(Process) -> Fut + Send + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: Send + 'static,
    {
        assert!(
            !crate::scheduler::in_a_process_thread(),
            "Node::run was called from inside a process: it blocks its thread until the new process returns, and \
             that thread runs processes (perhaps the very one it waits for). From a process, start the work with \
             p.spawn_monitor (or spawn_link) and receive its answer instead."
        );
        let (sender, receiver) = std::sync::mpsc::channel::<Result<R, ExitReason>>();
        let result = sender.clone();
        // A watcher monitors the body so a body that dies still answers.
        self.spawn(move |mut watcher| async move {
            watcher.spawn_monitor(move |process| async move {
                let _ = result.send(Ok(body(process).await));
            });
            if let Ok(down) = watcher.expect::<Down>().await
                && !down.reason.is_normal()
            {
                let _ = sender.send(Err(down.reason));
            }
        });
        receiver.recv().unwrap_or(Err(ExitReason::Shutdown))
    }

    /// Starts a process running `module:entry` of the module's current
    /// version, with `argument` as its start state.
    ///
    /// # Errors
    /// When the module is not loaded or has no such entry; nothing starts.
    pub fn spawn_entry<S: serde::Serialize>(&self, module: &str, entry: &str, argument: &S) -> Result<Pid, SpawnError> {
        let state =
            postcard::to_allocvec(argument).map_err(|error| SpawnError::BadArgument { reason: error.to_string() })?;
        self.inner.spawn_entry(module, entry, &state, Parent::None, SpawnOptions::default()).map(|(pid, _)| pid)
    }

    /// Loads the module file at `path` as the module's new current version
    /// (Erlang's `code:load_file/1`): the current version becomes old, and
    /// every process running it gets an [`Upgrade`] message. The module's
    /// name is the file's (`libpingpong.so` is `pingpong`).
    ///
    /// # Errors
    /// When the file is not a module this node can run (each check has its
    /// own [`LoadError`]), or the module still has an old version
    /// ([`LoadError::NotPurged`]). Running versions are untouched.
    pub fn load(&self, path: impl AsRef<std::path::Path>) -> Result<VersionInfo, LoadError> {
        self.load_with(path, &LoadOptions::default()).map(|loaded| loaded.version)
    }

    /// Builds the module crate at `crate_dir` with cargo and loads what it
    /// produced (the seed's `makeAll` then `load`).
    ///
    /// # Errors
    /// A [`BuildError`] carrying the compiler's messages, or the load's error.
    pub fn build(
        &self,
        crate_dir: impl AsRef<std::path::Path>,
        options: &BuildOptions,
    ) -> Result<VersionInfo, BuildError> {
        let built = crate::code::build_module(crate_dir.as_ref(), options)?;
        self.load(built).map_err(BuildError::Load)
    }

    /// [`load`](Self::load) with options: another name, purge first, no
    /// upgrade messages, refuse changed message shapes, or wait for the
    /// processes to answer their upgrade and report how each did.
    ///
    /// # Errors
    /// As for [`load`](Self::load), and a failed purge if `purge_first`.
    pub fn load_with(&self, path: impl AsRef<std::path::Path>, options: &LoadOptions) -> Result<Loaded, LoadError> {
        let inner = &self.inner;
        if options.await_upgrades.is_some() && crate::scheduler::in_a_process_thread() {
            return Err(LoadError::AwaitFromProcess);
        }
        let version = inner.code.prepare(path.as_ref(), options, (inner.id, inner.creation))?;
        if options.purge_first {
            self.purge(version.module())?;
        }
        let (current, old) = inner.code.commit(version, options)?;
        let pids = old.as_ref().map(|old| old.pids()).unwrap_or_default();
        if let (true, Some(old)) = (options.notify, &old) {
            let upgrade = Upgrade {
                module: current.module().to_owned(),
                from: old.declared().to_owned(),
                to: current.declared().to_owned(),
            };
            for pid in &pids {
                inner.send_message(*pid, &upgrade);
            }
        }
        let upgrades = match (options.await_upgrades, &old) {
            (Some(bound), Some(old)) => old.await_upgrades(&pids, bound),
            _ => Vec::new(),
        };
        Ok(Loaded { version: current.info(), upgrades })
    }

    /// Drops the module's old version if no process runs it (Erlang's
    /// `code:soft_purge/1`); `Ok(None)` if there is no old version.
    ///
    /// # Errors
    /// [`PurgeError::InUse`], naming the processes, if any still run it.
    pub fn soft_purge(&self, module: &str) -> Result<Option<UnloadedVersion>, PurgeError> {
        self.inner.code.soft_purge(module)
    }

    /// Drops the module's old version, first killing every process that
    /// runs it with [`ExitReason::Purged`] (their links and monitors fire);
    /// then the library is closed, and whether its pages left the address
    /// space is reported. Only the processes of that version are visited.
    /// Call it from outside processes: it waits for them to end.
    ///
    /// # Errors
    /// When the module is not loaded, or a killed process never yields.
    pub fn purge(&self, module: &str) -> Result<PurgeReport, PurgeError> {
        let code = &self.inner.code;
        // From here on nothing new starts in the version: a spawn of one of
        // its closures and a hot call into it are refused.
        let Some(old) = code.start_purge(module)? else {
            return Ok(PurgeReport {
                module: module.to_owned(),
                version: None,
                killed: Vec::new(),
                still_mapped: None,
            });
        };
        let version = old.declared().to_owned();
        let killed = old.pids();
        let reason = ExitReason::Purged { module: module.to_owned(), version: version.clone() };
        for pid in &killed {
            if let Some(ctx) = self.inner.process(*pid) {
                ctx.kill_with(reason.clone());
            }
        }
        if let Err(processes) = old.wait_unused(code.purge_wait) {
            // The version stays in the table as the old one, still purging:
            // a load is refused until a later purge finds it unused.
            return Err(PurgeError::Stuck {
                module: module.to_owned(),
                version,
                processes,
                seconds: code.purge_wait.as_secs_f64(),
            });
        }
        let unloaded = code.finish_purge(module, old);
        Ok(PurgeReport {
            module: module.to_owned(),
            version: Some(version),
            killed,
            still_mapped: unloaded.and_then(|u| u.still_mapped),
        })
    }

    /// Every loaded module with its current and old versions and the
    /// processes running each.
    pub fn modules(&self) -> Vec<ModuleInfo> {
        self.inner.code.modules()
    }

    /// The versions purged so far, with what the platform did with their
    /// pages.
    pub fn unloaded(&self) -> Vec<UnloadedVersion> {
        self.inner.code.unloaded()
    }

    /// The process registered as `name`, if any.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.inner.whereis(name)
    }

    /// Every live process, in pid order.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        let mut all = self.inner.table.all();
        all.sort_by_key(|ctx| ctx.pid.serial);
        all.iter().map(|ctx| ctx.info()).collect()
    }

    /// How many `send_after` timers are pending (Erlang counts them in
    /// `erlang:statistics`): timers that fired, were cancelled or were aimed
    /// at a process that ended are not.
    pub fn pending_timers(&self) -> usize {
        self.inner.pending_timers()
    }

    /// Connects to the node called `name` (`name@host:port`, as that node
    /// reports its [`name`](Node::name)), or waits for the connection under
    /// way; returns once it is up. Then every pid of that node works as a
    /// local one: send, link, monitor, exit, kill.
    ///
    /// # Errors
    /// When this node is not distributed, the name is not a node name, or
    /// the connection or its handshake fails (a wrong secret, a deadline,
    /// nobody listening); the error says which.
    pub fn connect(&self, name: &str) -> Result<(), ConnectError> {
        self.inner.dist.get().ok_or(ConnectError::NotDistributed)?.connect(name, None)
    }

    /// [`connect`](Node::connect)s to the node `name` through `address`
    /// rather than the address in its name: a proxy, a tunnel, a port
    /// forwarded. A connection that breaks is dialled there again.
    ///
    /// # Errors
    /// As [`connect`](Node::connect).
    pub fn connect_via(&self, name: &str, address: &str) -> Result<(), ConnectError> {
        self.inner.dist.get().ok_or(ConnectError::NotDistributed)?.connect(name, Some(address))
    }

    /// Drops the connection to the node `name` (Erlang's
    /// `disconnect_node`): what is queued towards it is still written, then
    /// every link and monitor across it fires, on both nodes, with
    /// [`NodeDownReason::Disconnected`](molt_abi::NodeDownReason). Returns
    /// whether there was one.
    pub fn disconnect(&self, name: &str) -> bool {
        self.inner.dist.get().is_some_and(|dist| dist.disconnect(name))
    }

    /// The nodes this one is connected or connecting to (Erlang's
    /// `nodes()`), by name.
    pub fn nodes(&self) -> Vec<PeerInfo> {
        self.inner.dist.get().map(|dist| dist.nodes()).unwrap_or_default()
    }

    /// Messages and signals this node dropped because it had no connection
    /// to their target's node, or lost it with them still queued; and
    /// connections it refused or whose handshake failed.
    pub fn dist_counts(&self) -> (u64, usize) {
        self.inner.dist.get().map_or((0, 0), |dist| (dist.dropped(), dist.refused()))
    }

    /// How many processes are alive.
    pub fn process_count(&self) -> usize {
        self.inner.table.len()
    }

    /// Stops the node: every process gets an exit signal with reason
    /// [`ExitReason::Shutdown`] that it cannot trap, ends at its next yield
    /// point and fires its links and monitors; then the scheduler threads
    /// stop. A process that never yields (a loop with no receive, sleep or
    /// other await) cannot be stopped: it is abandoned after the configured
    /// shutdown timeout.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.schedulers.is_empty() {
            return;
        }
        let inner = &self.inner;
        inner.stopping.store(true, Ordering::SeqCst);
        for ctx in inner.table.all() {
            ctx.kill_with(ExitReason::Shutdown);
        }
        // From inside one of its own processes a node cannot wait for its
        // processes (that one among them): they are told, the schedulers
        // stop without waiting, and the caller learns it was wrong. (No
        // panic while unwinding: a second one would abort the OS process.)
        if self.schedulers.iter().any(SchedulerThread::is_current) {
            if let Some(dist) = inner.dist.get() {
                dist.shutdown();
            }
            inner.timers.iter().for_each(|wheel| wheel.clear());
            for scheduler in self.schedulers.drain(..) {
                scheduler.stop(false);
            }
            if !std::thread::panicking() {
                panic!(
                    "a node was shut down or dropped from inside one of its own processes, which cannot wait \
                     for itself: its processes were told to stop, without waiting; own the Node outside its \
                     processes (in main, or a thread of your own) and shut it down there, for example when a \
                     process sends that thread a message"
                );
            }
            return;
        }
        let deadline = std::time::Instant::now() + self.shutdown_timeout;
        let (lock, emptied) = &inner.emptied;
        let mut guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        while !inner.table.is_empty() {
            let now = std::time::Instant::now();
            if now >= deadline {
                break;
            }
            // Bounded slices: an exit between the check and the wait is
            // noticed at the next slice at the latest.
            let slice = (deadline - now).min(Duration::from_millis(20));
            guard = emptied.wait_timeout(guard, slice).unwrap_or_else(|e| e.into_inner()).0;
        }
        drop(guard);
        // The processes' last exit signals to other nodes are queued: the
        // goodbyes go after them.
        if let Some(dist) = inner.dist.get() {
            dist.shutdown();
        }
        inner.timers.iter().for_each(|wheel| wheel.clear());
        // A thread stuck in a process that never yields is abandoned (not
        // waited for), and so is the calling thread's own, if a process
        // shuts its node.
        let wait = inner.table.is_empty();
        for scheduler in self.schedulers.drain(..) {
            scheduler.stop(wait);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

impl NodeInner {
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub(crate) fn is_local(&self, pid: Pid) -> bool {
        pid.node == self.id && pid.creation == self.creation
    }

    /// The live process `pid`, if it is on this node.
    pub(crate) fn process(&self, pid: Pid) -> Option<Arc<ProcessCtx>> {
        self.table_entry(pid).map(Found::into_owned)
    }

    /// The live process `pid`, if it is on this node, held only while used.
    pub(crate) fn table_entry(&self, pid: Pid) -> Option<Found> {
        if !self.is_local(pid) {
            return None;
        }
        self.table.get(pid.serial)
    }

    pub(crate) fn new_ref(&self) -> u64 {
        self.next_ref.fetch_add(1, Ordering::Relaxed)
    }

    /// Nanoseconds since the node started.
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
    }

    pub(crate) fn instant_at(&self, nanos: u64) -> std::time::Instant {
        self.epoch + Duration::from_nanos(nanos)
    }
}

/// Who a new process is spawned for: the process its link and monitor
/// options are about.
#[derive(Clone, Copy)]
pub(crate) enum Parent<'a> {
    None,
    /// A process of this node, spawning.
    Local(&'a ProcessCtx),
    /// A process of another node, which asked; its node numbered the
    /// monitor, if one was asked.
    Remote {
        pid: Pid,
        monitor: Option<u64>,
    },
}

impl Parent<'_> {
    fn pid(&self) -> Option<Pid> {
        match self {
            Parent::None => None,
            Parent::Local(ctx) => Some(ctx.pid),
            Parent::Remote { pid, .. } => Some(*pid),
        }
    }
}

impl<'a> From<Option<&'a ProcessCtx>> for Parent<'a> {
    fn from(parent: Option<&'a ProcessCtx>) -> Parent<'a> {
        parent.map_or(Parent::None, Parent::Local)
    }
}

impl NodeInner {
    /// Starts a process running a closure; `parent` is the spawning
    /// process, if any, for the link and monitor options. A closure whose
    /// code lies in a module version runs under that version, wherever it
    /// was spawned from (the process's own poll, another thread, a drop).
    pub(crate) fn spawn(
        self: &Arc<Self>,
        start: ProcessStart,
        parent: Option<&ProcessCtx>,
        options: SpawnOptions,
    ) -> (Pid, Option<MonitorRef>) {
        match self.code.owner_of(start.code_address()) {
            // A closure's start decodes nothing, so it is never refused.
            Ok(version) => match self.spawn_body(Body::Start(start, version), parent.into(), options) {
                Ok(spawned) => spawned,
                Err(refused) => self.stillborn(
                    Stillborn(None, None),
                    parent.into(),
                    options,
                    ExitReason::Error(refused.to_string()),
                ),
            },
            Err(reason) => {
                // Its version is being closed: even the closure's drop code
                // may be gone, so the closure is leaked, not dropped.
                std::mem::forget(start);
                self.stillborn(Stillborn(None, None), parent.into(), options, reason)
            }
        }
    }

    /// `spawn_entry` for a process of another node (`parent`), which links
    /// to or monitors (its node numbered the monitor `monitor`) the new
    /// process as `options` says: both are in place before it runs.
    pub(crate) fn spawn_entry_for_remote(
        self: &Arc<Self>,
        module: &str,
        entry: &str,
        state: &[u8],
        parent: Pid,
        options: SpawnOptions,
        monitor: Option<u64>,
    ) -> Result<Pid, SpawnError> {
        self.spawn_entry(module, entry, state, Parent::Remote { pid: parent, monitor }, options).map(|(pid, _)| pid)
    }

    /// Starts a process running `module:entry` of the module's current
    /// version with `state` (postcard bytes).
    pub(crate) fn spawn_entry(
        self: &Arc<Self>,
        module: &str,
        entry: &str,
        state: &[u8],
        parent: Parent<'_>,
        options: SpawnOptions,
    ) -> Result<(Pid, Option<MonitorRef>), SpawnError> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err(SpawnError::ShuttingDown);
        }
        let version = self.code.current(module).ok_or_else(|| SpawnError::NoModule { module: module.to_owned() })?;
        if !version.library().has_entry(entry) {
            return Err(SpawnError::NoEntry {
                module: module.to_owned(),
                version: version.declared().to_owned(),
                entry: entry.to_owned(),
                entries: version.library().entry_names().collect::<Vec<_>>().join(", "),
            });
        }
        self.spawn_body(Body::Entry { version, entry, state }, parent, options)
    }

    fn spawn_body(
        self: &Arc<Self>,
        body: Body<'_>,
        parent: Parent<'_>,
        options: SpawnOptions,
    ) -> Result<(Pid, Option<MonitorRef>), SpawnError> {
        if self.stopping.load(Ordering::SeqCst) {
            return Ok(self.stillborn(body, parent, options, ExitReason::Noproc));
        }
        let serial = self.table.reserve();
        let pid = Pid { node: self.id, creation: self.creation, serial };
        let (code, version) = match &body {
            Body::Start(start, None) => (CodeRef::Native(self.code_name(start)), None),
            Body::Start(_, Some(version)) => (CodeRef::Module(Arc::downgrade(version), CLOSURE), Some(version)),
            Body::Entry { version, entry, .. } => {
                (CodeRef::Module(Arc::downgrade(version), version.library().entry_index(entry)), Some(version))
            }
        };
        // A version being purged starts nothing new (its purge is waiting
        // for its list of processes to empty).
        if let Some(version) = version
            && !version.try_add_process(serial)
        {
            self.table.release(serial);
            let reason =
                ExitReason::Purged { module: version.module().to_owned(), version: version.declared().to_owned() };
            return Ok(self.stillborn(body, parent, options, reason));
        }
        let scheduler = match parent {
            Parent::Local(parent) => parent.scheduler(),
            _ => (self.next_scheduler.fetch_add(1, Ordering::Relaxed) % self.schedulers.len()) as u32,
        };
        let (parent_ctx, parent_monitor, parent) = match parent {
            Parent::None => (None, None, None),
            Parent::Local(ctx) => (Some(ctx), None, Some(ctx.pid)),
            Parent::Remote { pid, monitor } => (None, monitor, Some(pid)),
        };
        let ctx = Arc::new(ProcessCtx::new(pid, self.clone(), code, scheduler));
        // An entry's state is decoded now: one that does not fit starts
        // nothing, and no link or monitor was made.
        let body = match body {
            Body::Start(start, version) => RunningBody::new(boundary::start(&ctx, start), version, serial),
            Body::Entry { version, entry, state } => {
                let process = boundary::process_for(&ctx);
                // The entry decodes the state with the module's code: on a
                // pool thread, as all module code (see `scheduler.rs`).
                let started = crate::scheduler::on_a_pool_thread({
                    let (version, entry, state) = (version.clone(), entry.to_owned(), state.to_vec());
                    move || version.library().start(&entry, process, &state)
                });
                let started = started.unwrap_or_else(|error| Some(Err(format!("no thread could start it: {error}"))));
                match started {
                    Some(Ok(future)) => RunningBody::new(future, Some(version), serial),
                    refused => {
                        version.remove_process(serial);
                        self.table.release(serial);
                        return Err(SpawnError::BadState {
                            module: version.module().to_owned(),
                            entry: entry.to_owned(),
                            reason: refused.and_then(Result::err).unwrap_or_else(|| "no such entry".into()),
                        });
                    }
                }
            }
        };
        // A remote parent's node numbered its monitor.
        let monitor =
            options.monitor.then(|| MonitorRef { id: parent_monitor.unwrap_or_else(|| self.new_ref()), target: pid });
        if let (Some(parent), Some(monitor)) = (parent_ctx, monitor) {
            parent.signals().relations().monitoring.insert(monitor.id, pid);
        }
        if let Some(parent) = parent {
            let mut signals = ctx.signals();
            if options.link {
                signals.relations().links.insert(parent);
            }
            if let Some(monitor) = monitor {
                signals.relations().monitored_by.insert((monitor.id, parent.node), parent);
            }
        }
        // In the table first: a node going down meanwhile finds the link
        // (and an exit signal answering the `Link` finds the process).
        self.table.insert(ctx.clone());
        if let (Some(parent), true) = (parent, options.link) {
            self.signal(parent, Signal::Link { from: pid });
        }
        self.run_process(Box::new(Scheduled(Some(ProcessTask::new(ctx.clone(), body)))), ctx.scheduler());
        if self.stopping.load(Ordering::SeqCst) {
            ctx.kill_with(ExitReason::Shutdown);
        }
        Ok((pid, monitor))
    }

    /// Runs a process's task on `scheduler`: a new process, or one that
    /// moves there (see `placement.rs`).
    pub(crate) fn run_process(&self, task: Box<Scheduled>, scheduler: u32) {
        let ctx = task.0.as_ref().expect("a process's task to run").ctx().clone();
        // Attached before the task can run, so a wake-up of the process
        // (`wake_task`) never goes to the task it left. A kill that came
        // meanwhile aborted the task it found: this one is aborted here.
        self.schedulers[scheduler as usize].spawn(Box::into_pin(task), |abort| ctx.attach_task(abort));
    }

    /// A spawn that starts nothing: the body is dropped (with its version,
    /// still open, held until then) and the spawner sees a process that
    /// ended at once with `reason` — through its link or monitor if it asked
    /// for one, and in the log.
    fn stillborn(
        &self,
        body: impl Into<Stillborn>,
        parent: Parent<'_>,
        options: SpawnOptions,
        reason: ExitReason,
    ) -> (Pid, Option<MonitorRef>) {
        drop(body.into());
        // A serial of its own that no lookup ever finds.
        let serial = self.table.reserve();
        self.table.release(serial);
        let pid = Pid { node: self.id, creation: self.creation, serial };
        let remote_monitor = match parent {
            Parent::Remote { monitor, .. } => monitor,
            _ => None,
        };
        let monitor =
            options.monitor.then(|| MonitorRef { id: remote_monitor.unwrap_or_else(|| self.new_ref()), target: pid });
        if !matches!(reason, ExitReason::Noproc) {
            tracing::warn!(%pid, %reason, "a spawn was refused; the process ended at once");
        }
        if let Some(parent) = parent.pid() {
            if options.link {
                // As if linked, then ended: no link entry exists to remove.
                self.signal(parent, Signal::Exit { from: pid, reason: reason.clone(), linked: false });
            }
            match (monitor, parent.node == self.id) {
                (Some(monitor), true) => self.send_message(parent, &Down { monitor, pid, reason }),
                // The parent's node holds the monitor, as its own.
                (Some(monitor), false) => self.signal(parent, Signal::Down { id: monitor.id, target: pid, reason }),
                (None, _) => {}
            }
        }
        (pid, monitor)
    }

    /// Reports a hot call whose upgrade failed: the process goes on in its
    /// old version; it gets an `UpgradeFailed` message, and the failure is
    /// logged.
    pub(crate) fn upgrade_failed(&self, ctx: &ProcessCtx, old: &Version, new: &Version, reason: String) {
        tracing::warn!(
            pid = %ctx.pid, module = old.module(), from = old.declared(), to = new.declared(), %reason,
            "upgrade failed; the process keeps its version and state"
        );
        let failed = UpgradeFailed {
            module: old.module().to_owned(),
            from: old.declared().to_owned(),
            to: new.declared().to_owned(),
            reason,
        };
        self.send_message(ctx.pid, &failed);
    }

    /// The index of the name of the code a body compiled into the host
    /// runs, copied once per distinct string. Keyed by the string's address:
    /// the host's strings are never unmapped, so an address names one
    /// string for the node's life (module closures never come here).
    fn code_name(&self, start: &ProcessStart) -> u32 {
        let name = boundary::code_str(start);
        let key = (name.as_ptr() as usize, name.len());
        if let Some(index) = self.code_index.get(&key) {
            return *index;
        }
        *self.code_index.entry(key).or_insert_with(|| {
            let mut names = self.code_names.write().unwrap_or_else(|e| e.into_inner());
            names.push(name.into());
            u32::try_from(names.len() - 1).unwrap_or(u32::MAX)
        })
    }

    pub(crate) fn code_name_of(&self, index: u32) -> Arc<str> {
        let names = self.code_names.read().unwrap_or_else(|e| e.into_inner());
        names.get(index as usize).cloned().unwrap_or_else(|| Arc::from("?"))
    }

    /// The end of a process: called once, from its task's drop, after its
    /// code is gone.
    pub(crate) fn process_exited(&self, ctx: &ProcessCtx) {
        ctx.gone.store(true, Ordering::Release);
        // Its unread messages go now, before anyone hears of its end, not
        // when the last reference to it (a sender's cache) does; the
        // mailbox is closed, so what is sent to it from now on is dropped.
        ctx.mailbox.clear();
        self.announce_exit(ctx);
        // Out of the table once everyone was told: a process missing from
        // `processes()` has no link or monitor left anywhere.
        self.table.remove(ctx.pid.serial);
        if self.stopping.load(Ordering::SeqCst) && self.table.is_empty() {
            let _guard = self.emptied.0.lock().unwrap_or_else(|e| e.into_inner());
            self.emptied.1.notify_all();
        }
    }
}

impl ProcessCtx {
    pub(crate) fn info(&self) -> ProcessInfo {
        let signals = self.signals();
        let relations = signals.relations_ref();
        let (code, module) = match &signals.code {
            CodeRef::Native(index) => (self.node.code_name_of(*index).to_string(), None),
            CodeRef::Module(version, entry) => match version.upgrade() {
                Some(version) => (
                    format!(
                        "{}:{} (version {})",
                        version.module(),
                        version.library().entry_name(*entry),
                        version.declared()
                    ),
                    Some((version.module().to_owned(), version.declared().to_owned())),
                ),
                None => ("(a module version being unloaded)".to_owned(), None),
            },
        };
        ProcessInfo {
            pid: self.pid,
            status: self.status(),
            registered_name: relations.and_then(|r| r.name.as_deref()).map(str::to_owned),
            links: {
                let mut links: Vec<Pid> = relations.map(|r| r.links.iter().copied().collect()).unwrap_or_default();
                links.sort_unstable();
                links
            },
            monitored_by: relations.map_or(0, |r| r.monitored_by.len()),
            trap_exit: signals.trap_exit,
            mailbox_len: self.mailbox.len(),
            code,
            module,
        }
    }
}
