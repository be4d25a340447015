//! molt's own executor: the loop each scheduler thread runs, its run queue,
//! its tasks' wake-ups and its sleeps.
//!
//! Why not tokio's current-thread runtime, which molt used before: a local
//! round trip is two wake-ups and two polls, and tokio's task state machine
//! spends several atomic read-modify-writes on each (reference counts,
//! state transitions), a quarter of the round trip's instructions
//! (callgrind). Here a task is a slot in its scheduler's thread-local
//! table, and its waker an [`Arc`] holding the slot's id:
//!
//! - a wake-up on the task's own thread is a load and a store of the
//!   task's `notified` flag (no atomic read-modify-write) and a push onto
//!   a `VecDeque` no other thread sees; a poll clears the flag (one swap),
//!   takes the future out of its slot, polls it with the waker kept there
//!   (no reference count), and puts it back;
//! - a wake-up from another thread goes through the scheduler's `remote`
//!   queue under a mutex, and unparks the thread only if it sleeps: an
//!   idle scheduler first spins for [`SPIN`] watching that queue (Erlang's
//!   schedulers do the same), because a thread woken from a futex wait
//!   costs tens of microseconds on a busy machine;
//! - killing a task sets its `aborted` flag and wakes it: its own thread
//!   drops it at its next turn, never another thread (tokio's `abort`);
//! - the sleeps of processes (`receive … after`, `sleep`) are a
//!   thread-local heap of deadlines; the thread parks no longer than the
//!   earliest.
//!
//! Tasks are dropped only on their own scheduler thread: when they end,
//! when they are aborted, and when the scheduler stops (every task still
//! there then). A task spawned onto a scheduler that has stopped is
//! dropped at once, on the spawning thread, as tokio does.
//!
//! Nothing here is `unsafe`: slots are indices checked by the task's id
//! (which holds a generation), wakers are `std::task::Wake` on an `Arc`.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::poller::Poller;
use crate::process::sparse;

/// A task: a future the executor polls, which may be able to continue on
/// another scheduler.
///
/// A task's `poll` catches its own panics, so a panic ends the task and not
/// the scheduler thread (as in tokio), at no cost to the loop: a process's
/// body catches its code's at the boundary, `Scheduled` the core's (as the
/// process's exit reason), [`Fixed`] any other future's.
pub(crate) trait Task: Future<Output = ()> + Send {
    /// Whether [`Task::hand_over`] can move this task now.
    fn can_move(&self) -> bool {
        false
    }

    /// Continues this task (not being polled, and `can_move`) on scheduler
    /// `to` of its group, as a new task there.
    fn hand_over(self: Pin<Box<Self>>, to: usize) {
        let _ = to;
        unreachable!("hand_over of a task that cannot move");
    }

    /// Whether it has been polled.
    fn started(&self) -> bool {
        true
    }

    /// The task this one talks to, which should move with it (see
    /// [`share`]).
    fn partner(&self) -> Option<AbortHandle> {
        None
    }
}

/// A task's future.
pub(crate) type BoxFuture = Pin<Box<dyn Task>>;

/// A task that stays on the scheduler it was spawned on.
pub(crate) struct Fixed(pub(crate) Pin<Box<dyn Future<Output = ()> + Send>>);

impl Future for Fixed {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let future = self.0.as_mut();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| future.poll(cx))).unwrap_or_else(|_| {
            tracing::error!("a task of a molt scheduler panicked; it is dropped");
            Poll::Ready(())
        })
    }
}

impl Task for Fixed {}

/// How long an idle scheduler watches for work from other threads before
/// it parks.
const SPIN: Duration = Duration::from_micros(20);

/// How long an idle scheduler that reads sockets (`poller.rs`) watches
/// them, without sleeping, after one of its processes sent to another
/// node: an answer over loopback often comes sooner, and then costs
/// neither side a wake-up from sleep (an interrupt between the cores,
/// which on these virtual machines is most of a round trip). Remote
/// round trips on two cores: 19-22 k/s without, 37-44 k/s with 30 to
/// 100 µs. Erlang's schedulers busy-wait in the same way. Where answers
/// take longer (the cores busy, say with a big transfer), the spin only
/// takes the core from the threads doing the work (round trips under a
/// 64 MiB transfer: a third as many, the first ones 8-22 ms instead of
/// 3-5), so a scheduler whose spins keep missing spins only now and then
/// ([`NetSpins`]), and none spins while a big message crosses a connection
/// of its node (`Poller::quiet`; the longest round trip under a 64 MiB
/// transfer, medians of three: 6.1-13.3 ms with the spin, 6.4-6.9 without).
const NET_SPIN: Duration = Duration::from_micros(50);

/// How a scheduler's last spins for the network went: after
/// [`NetSpins::MISSES`] misses in a row it spins only every
/// [`NetSpins::PROBE`]th time, until one catches an answer again.
#[derive(Clone, Copy, Default)]
struct NetSpins {
    misses: u32,
    skipped: u32,
}

impl NetSpins {
    const MISSES: u32 = 3;
    const PROBE: u32 = 16;

    fn worth_it(self) -> bool {
        self.misses < Self::MISSES || self.skipped + 1 >= Self::PROBE
    }

    fn after(self, answered: bool) -> NetSpins {
        if answered { NetSpins::default() } else { NetSpins { misses: self.misses + 1, skipped: 0 } }
    }

    fn skip(self) -> NetSpins {
        NetSpins { skipped: self.skipped + 1, ..self }
    }
}

/// How often an idle scheduler looks at a busy sibling that reads sockets
/// (`Poller::tick`): a poll of the sibling seen at two ticks in a row has
/// its sockets read elsewhere until it ends.
const SIBLING_TICK: Duration = Duration::from_millis(1);

/// How often it looks while every sibling that reads sockets is idle, for
/// a while after one was last busy: a poll that starts long meanwhile
/// keeps the sockets unread 6 ms at most.
const QUIET_SIBLING_TICK: Duration = Duration::from_millis(4);

/// How long after it last saw a sibling that reads sockets busy an idle
/// scheduler goes on looking. Past it, it sleeps with no bound, and the
/// sibling wakes it as it starts running (`Scheduler::awake`): a node with
/// nothing to do wakes no thread.
const WATCH_AFTER_BUSY: Duration = Duration::from_millis(100);

/// The least timeout `epoll_wait` takes (it counts in milliseconds,
/// rounding up).
const EPOLL_GRAIN: Duration = Duration::from_millis(1);

thread_local! {
    /// A process of this scheduler sent to another node since it last
    /// went idle: see [`awaits_the_network`].
    static AWAITS_THE_NETWORK: Cell<bool> = const { Cell::new(false) };
    static NET_SPINS: Cell<NetSpins> = const { Cell::new(NetSpins { misses: 0, skipped: 0 }) };
    /// When this scheduler last saw a sibling that reads sockets busy.
    static SIBLING_BUSY_AT: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Its last wait ended on a look at its siblings, not on work: the
    /// next one does not spin first.
    static TICKED: Cell<bool> = const { Cell::new(false) };
}

/// For the core to call when a process sends to another node: the
/// scheduler, once idle, does not spin watching its remote queue. An
/// answer takes a round trip over the network, longer than the spin, and
/// a spinning thread takes the core the I/O threads need (a remote round
/// trip on two cores: 13.0 k/s spinning, 17.3 k/s not). A scheduler that
/// reads sockets itself watches those instead ([`NET_SPIN`]).
pub(crate) fn awaits_the_network() {
    AWAITS_THE_NETWORK.with(|awaits| awaits.set(true));
}

/// Sends one poll may make before the tasks queued behind it are offered
/// to an idle sibling (see [`passing`]): some 40 µs of sends. (With 4,096,
/// a poll of 999 sends never shared, and the big bang ran on one core:
/// 0.36–0.42 s against 0.21–0.27 s, alternated; pairs that talk, one send
/// a poll, never reach either.)
const LONG_POLL: u32 = 256;

/// Tasks waiting in the run queue from which an idle sibling is handed
/// some (see [`share`]).
const SHARE_QUEUED: usize = 2;

/// How many queued tasks, from the front, one share looks at.
const SHARE_SCAN: usize = 512;

/// Local polls between looks at the remote queue and the clock, so work
/// from other threads and due sleeps are not starved by a busy run queue.
const CHECK_EVERY: u32 = 61;

/// [`Scheduler::sleeping`]: it runs, it parks, it waits in its poller.
const AWAKE: u8 = 0;
const PARKED: u8 = 1;
const POLLING: u8 = 2;

/// One scheduler: what other threads see of it.
#[derive(Debug)]
pub(crate) struct Scheduler {
    remote: Mutex<Remote>,
    /// Whether `remote` holds anything: read without its lock.
    has_remote: AtomicBool,
    /// How the loop sleeps, or is about to ([`AWAKE`], [`PARKED`],
    /// [`POLLING`]): how a remote push must wake it.
    sleeping: AtomicU8,
    /// Where it waits while idle, on a distributed node (else it parks).
    poller: OnceLock<Arc<Poller>>,
    stop: AtomicBool,
    thread: OnceLock<std::thread::Thread>,
    /// Its place in its group, and the group (see [`group`]).
    index: usize,
    siblings: OnceLock<Vec<std::sync::Weak<Scheduler>>>,
    /// The loop has nothing to run (it spins or parks): a sibling may hand
    /// it tasks (see [`passing`]).
    idle: AtomicBool,
}

/// Makes `schedulers` one group, whose idle members are handed tasks that
/// wait behind a long poll of another (see [`passing`]).
pub(crate) fn group(schedulers: &[Arc<Scheduler>]) {
    let weak: Vec<_> = schedulers.iter().map(Arc::downgrade).collect();
    for scheduler in schedulers {
        let _ = scheduler.siblings.set(weak.clone());
    }
}

#[derive(Default)]
struct Remote {
    woken: Vec<u64>,
    spawned: Vec<(Arc<Header>, BoxFuture)>,
    /// The loop has ended: a spawn drops its task at once.
    closed: bool,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("woken", &self.woken.len()).field("spawned", &self.spawned.len()).finish()
    }
}

/// What a task's waker holds.
#[derive(Debug)]
struct Header {
    /// Set by a wake-up, cleared just before each poll: one wake-up queues
    /// the task once however many come.
    notified: AtomicBool,
    aborted: AtomicBool,
    /// The task's slot and its generation; written by its scheduler before
    /// the task's first poll, read by its scheduler (to tell a stale id in
    /// the run queue) and by wake-ups only after that poll cleared
    /// `notified` (which is set from birth).
    id: AtomicU64,
    scheduler: Arc<Scheduler>,
}

/// A handle to kill a task (tokio's `AbortHandle`).
#[derive(Debug, Clone)]
pub(crate) struct AbortHandle(Arc<Header>);

impl AbortHandle {
    /// Drops the task at its scheduler's next turn, unless it has ended.
    pub(crate) fn abort(&self) {
        self.0.aborted.store(true, Ordering::Release);
        self.0.wake_by_ref_inner();
    }

    /// Wakes the task, as its waker would.
    pub(crate) fn wake(&self) {
        self.0.wake_by_ref_inner();
    }
}

impl Wake for Header {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref_inner();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_by_ref_inner();
    }
}

impl Header {
    fn wake_by_ref_inner(&self) {
        if CURRENT.with(Cell::get) == Arc::as_ptr(&self.scheduler) as usize {
            // On the task's own thread, the only one that clears the flag
            // (in `poll_task`): a load and a store see its latest value,
            // no read-modify-write needed. Another thread's wake-up racing
            // with this one may queue the task a second time; that costs
            // one spurious poll, which a future must bear anyway.
            if !self.notified.load(Ordering::Relaxed) {
                self.notified.store(true, Ordering::Relaxed);
                let id = self.id.load(Ordering::Relaxed);
                LOCAL.with_borrow_mut(|local| local.queue.push_back(id));
            }
        } else if !self.notified.swap(true, Ordering::AcqRel) {
            // From another thread, always the swap, never a plain load
            // first: the swap orders what the waker wrote before it (a
            // message queued, `aborted`) against the poll's own swap of the
            // flag, so either the poll sees those writes or this swap sees
            // the flag cleared and queues the task (a plain load could read
            // the flag still set from before the poll while the poll misses
            // the writes: a lost wake-up).
            let id = self.id.load(Ordering::Relaxed);
            self.scheduler.push_remote(|remote| remote.woken.push(id));
            WOKE_ELSEWHERE.with(|woke| woke.set(self.scheduler.index));
        }
    }
}

thread_local! {
    /// The scheduler (its index) this thread last woke a task of, other
    /// than its own; `usize::MAX` if none since it last asked.
    static WOKE_ELSEWHERE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Which scheduler this thread last woke a task of, other than its own,
/// since it last asked: where a connection's reading belongs
/// (`dist/read_side.rs`).
pub(crate) fn woke_elsewhere() -> Option<usize> {
    Some(WOKE_ELSEWHERE.with(|woke| woke.replace(usize::MAX))).filter(|&index| index != usize::MAX)
}

/// A task's place in its scheduler's table.
struct Slot {
    /// Its id (`Header::id`) tells a stale id in the run queue from this
    /// task's.
    header: Arc<Header>,
    /// `None` while it is being polled.
    running: Option<(BoxFuture, Waker)>,
}

/// What only a scheduler's own thread touches.
struct Local {
    queue: VecDeque<u64>,
    /// Task `key` is in chunk `key / CHUNK`, at `key % CHUNK`; a chunk with
    /// no task is freed (but one), so a task that outlives a burst keeps
    /// only its own chunk of the burst's slots.
    chunks: Vec<Option<Box<Chunk>>>,
    /// Chunks with an empty slot, or freed: the lowest is filled first.
    with_room: BTreeSet<u32>,
    /// The one empty chunk kept, so a task spawned and ended over and over
    /// allocates no chunk each time.
    spare: Option<u32>,
    /// Tasks in `chunks`.
    live: usize,
    generation: u32,
    sleeps: Sleeps,
    /// The scheduler this thread runs.
    me: Option<Arc<Scheduler>>,
}

/// Slots per chunk: one bit each in `Chunk::used`.
const CHUNK: usize = 64;

struct Chunk {
    /// In the chunk's own block: a poll finds its task one load sooner.
    slots: [Option<Slot>; CHUNK],
    used: u64,
}

thread_local! {
    /// The scheduler this thread runs (its address; 0 if none).
    static CURRENT: Cell<usize> = const { Cell::new(0) };
    /// Built at compile time: an access costs no check of a lazy
    /// initialisation (twice per poll, measured: 7% of a round trip).
    static LOCAL: RefCell<Local> = const { RefCell::new(Local::new()) };
}

/// A task's id: its key (slot) and the slot's generation, which tells a
/// stale id (its task ended, the slot was reused) from the current one.
fn id_of(key: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(key)
}

/// The key of id `id` (see [`id_of`]).
fn key_of(id: u64) -> usize {
    (id & u64::from(u32::MAX)) as usize
}

impl Scheduler {
    /// A scheduler, number `index` of its group.
    pub(crate) fn new(index: usize) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            remote: Mutex::new(Remote::default()),
            has_remote: AtomicBool::new(false),
            sleeping: AtomicU8::new(AWAKE),
            poller: OnceLock::new(),
            stop: AtomicBool::new(false),
            thread: OnceLock::new(),
            index,
            siblings: OnceLock::new(),
            idle: AtomicBool::new(false),
        })
    }

    fn is_current(self: &Arc<Self>) -> bool {
        CURRENT.with(Cell::get) == Arc::as_ptr(self) as usize
    }

    /// Runs `future` as a task of this scheduler; `attach` gets the task's
    /// handle before the task can first run (on any thread).
    pub(crate) fn spawn(self: &Arc<Self>, future: BoxFuture, attach: impl FnOnce(AbortHandle)) {
        let header = Arc::new(Header {
            notified: AtomicBool::new(true),
            aborted: AtomicBool::new(false),
            id: AtomicU64::new(0),
            scheduler: self.clone(),
        });
        attach(AbortHandle(header.clone()));
        if self.is_current() {
            insert(header, future);
        } else {
            let mut refused = None;
            self.push_remote(|remote| {
                if remote.closed {
                    refused = Some(future);
                } else {
                    remote.spawned.push((header, future));
                }
            });
            // Dropped outside the lock: the task's drop may spawn or wake.
            drop(refused);
        }
    }

    /// Adds to the remote queue and wakes the loop if it sleeps.
    fn push_remote(&self, push: impl FnOnce(&mut Remote)) {
        {
            let mut remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
            push(&mut remote);
            self.has_remote.store(true, Ordering::SeqCst);
        }
        // Paired with the loop's store of `sleeping` then load of
        // `has_remote`: one of the two sides sees the other's store.
        match self.sleeping.load(Ordering::SeqCst) {
            PARKED => {
                if let Some(thread) = self.thread.get() {
                    thread.unpark();
                }
            }
            POLLING => {
                if let Some(poller) = self.poller.get() {
                    poller.wake();
                }
            }
            _ => {}
        }
    }

    /// The other schedulers of the group, with their index.
    fn others(&self) -> impl Iterator<Item = (usize, Arc<Scheduler>)> + '_ {
        let siblings = self.siblings.get().into_iter().flatten().enumerate();
        siblings
            .filter(|(index, _)| *index != self.index)
            .filter_map(|(index, sibling)| Some((index, sibling.upgrade()?)))
    }

    /// Whether another scheduler of the group reads sockets, and whether
    /// one that does runs a task now.
    fn siblings_reading(&self) -> (bool, bool) {
        let (mut reading, mut busy) = (false, false);
        for (_, sibling) in self.others() {
            if sibling.poller.get().is_some_and(|poller| poller.has_sockets()) {
                reading = true;
                busy |= !sibling.idle.load(Ordering::SeqCst);
            }
        }
        (reading, busy)
    }

    /// The loop runs again after `idle`: a sibling asleep with no bound
    /// while this one reads sockets is woken, to watch it (the two flags
    /// SeqCst: the sibling that goes to sleep as this one wakes sees it
    /// busy, or is seen asleep).
    fn awake(&self) {
        self.idle.store(false, Ordering::SeqCst);
        if !self.poller.get().is_some_and(|poller| poller.has_sockets()) {
            return;
        }
        for (_, sibling) in self.others() {
            if let Some(poller) = sibling.poller.get() {
                poller.wake_if_unwatched();
            }
        }
    }

    /// From now on the loop waits in `poller` when idle (set once, as a
    /// distributed node starts).
    pub(crate) fn attach_poller(&self, poller: Arc<Poller>) {
        let _ = self.poller.set(poller);
    }

    /// Asks the loop to end.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.push_remote(|_| {});
    }

    /// Runs the loop on this thread until [`Scheduler::stop`], then drops
    /// every task left.
    pub(crate) fn run(self: &Arc<Self>) {
        let _ = self.thread.set(std::thread::current());
        CURRENT.with(|current| current.set(Arc::as_ptr(self) as usize));
        LOCAL.with_borrow_mut(|local| local.me = Some(self.clone()));
        let mut turn = 0u32;
        while !self.stop.load(Ordering::Relaxed) {
            turn = turn.wrapping_add(1);
            if turn.is_multiple_of(CHECK_EVERY) {
                let waiting = LOCAL.with_borrow(|local| local.queue.len());
                self.take_remote();
                fire_due_sleeps(Instant::now());
                // Sockets it reads are looked at between its processes too,
                // as Erlang's busy schedulers check I/O.
                if let Some(poller) = self.poller.get().filter(|poller| poller.has_sockets()) {
                    let _ = poller.wait(self.index, Some(Duration::ZERO));
                }
                // Two or more tasks waiting behind the running one: work
                // for an idle sibling (one pair that talks never has more
                // than one waiting, and does not split).
                if waiting >= SHARE_QUEUED {
                    share_with_an_idle_sibling(Share::Started);
                }
            }
            let next = LOCAL.with_borrow_mut(|local| {
                let id = local.queue.pop_front()?;
                Some((id, local.take_for_poll(id)))
            });
            match next {
                Some((id, taken)) => {
                    PASSED.with(|passed| passed.set(0));
                    poll_task(id, taken);
                }
                None => self.idle(),
            }
        }
        // Closed and emptied in one go: a spawn either lands in what is
        // taken here (and is dropped with the rest below) or finds the
        // scheduler closed (and drops its task itself). One left in the
        // queue would never be dropped: it holds the scheduler holding it.
        let spawned = {
            let mut remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
            remote.closed = true;
            remote.woken.clear();
            std::mem::take(&mut remote.spawned)
        };
        for (header, future) in spawned {
            insert(header, future);
        }
        // Tasks spawned while the last ones drop are dropped too.
        // Each pass takes the whole table (linear), then drops it outside
        // the borrow; a drop that spawns fills the emptied table again.
        loop {
            let slots = LOCAL.with_borrow_mut(|local| {
                local.queue.clear();
                local.take_all()
            });
            if slots.is_empty() {
                break;
            }
            drop(slots);
        }
        LOCAL.with_borrow_mut(|local| *local = Local::new());
        CURRENT.with(|current| current.set(0));
    }

    /// Moves what other threads queued onto the local run queue; true if
    /// there was anything.
    fn take_remote(&self) -> bool {
        if !self.has_remote.load(Ordering::Acquire) {
            return false;
        }
        let (woken, spawned) = {
            let mut remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
            self.has_remote.store(false, Ordering::Relaxed);
            (std::mem::take(&mut remote.woken), std::mem::take(&mut remote.spawned))
        };
        LOCAL.with_borrow_mut(|local| local.queue.extend(woken.iter().copied()));
        for (header, future) in spawned {
            insert(header, future);
        }
        true
    }

    /// Nothing runnable: takes remote work, fires due sleeps, else spins a
    /// little, then parks (or waits in its poller, reading the sockets it
    /// is given) until the earliest sleep or a remote push.
    fn idle(&self) {
        let ticked = TICKED.replace(false);
        if self.take_remote() || fire_due_sleeps(Instant::now()) {
            return;
        }
        self.idle.store(true, Ordering::Relaxed);
        let awaits = AWAITS_THE_NETWORK.with(|awaits| awaits.replace(false));
        let spin = if awaits || ticked { Duration::ZERO } else { SPIN };
        // An answer from the network comes to this scheduler's sockets, or
        // from another scheduler's: watched without sleeping for a while,
        // as long as that is worth it (see `NET_SPIN`).
        if awaits
            && let Some(poller) = self.poller.get().filter(|poller| poller.has_sockets() && poller.quiet())
            && NET_SPINS.with(|spins| {
                let worth_it = spins.get().worth_it();
                if !worth_it {
                    spins.set(spins.get().skip());
                }
                worth_it
            })
        {
            let until = Instant::now() + NET_SPIN;
            let mut answered = false;
            while !answered && Instant::now() < until {
                answered = self.has_remote.load(Ordering::Relaxed)
                    || self.stop.load(Ordering::Relaxed)
                    || poller.wait(self.index, Some(Duration::ZERO));
            }
            NET_SPINS.with(|spins| spins.set(spins.get().after(answered)));
            if answered {
                self.awake();
                return;
            }
        }
        let spin_until = Instant::now() + spin;
        let mut spins = 0u32;
        loop {
            if self.has_remote.load(Ordering::Relaxed) || self.stop.load(Ordering::Relaxed) {
                self.awake();
                return;
            }
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(64) && Instant::now() >= spin_until {
                break;
            }
        }
        let timeout =
            LOCAL.with_borrow(|local| local.sleeps.next()).map(|at| at.saturating_duration_since(Instant::now()));
        // While a sibling reads sockets, this one looks at it every tick:
        // one poll that keeps it long keeps its sockets unread
        // (`poller.rs`). Idle siblings too, less often, for a while: one
        // may start a long poll once this one sleeps. Past that while it
        // sleeps with no bound, and the sibling wakes it as it starts
        // running (unwoken, this sleep missed a 64 MiB message made in one
        // poll, and a pong waited the 100 ms the watchdog took).
        let (reading, mut busy) = if self.poller.get().is_some() { self.siblings_reading() } else { (false, false) };
        let now = Instant::now();
        if busy {
            SIBLING_BUSY_AT.set(Some(now));
        }
        let lately = SIBLING_BUSY_AT.get().is_some_and(|at| now.duration_since(at) < WATCH_AFTER_BUSY);
        let mut watching = reading && (busy || lately);
        // Unwatched: flagged, then a second look (SeqCst both ways: a
        // sibling that starts running or gets a socket meanwhile is seen
        // now, or sees the flag and wakes this one).
        let unwatched = self.poller.get().filter(|_| !watching);
        if let Some(poller) = unwatched {
            poller.sleeps_unwatched();
            let (reading_now, busy_now) = self.siblings_reading();
            if busy_now || (reading_now && !reading) {
                poller.watches();
                (watching, busy) = (true, busy_now);
            }
        }
        let tick = if busy { SIBLING_TICK } else { QUIET_SIBLING_TICK };
        let timeout = if watching { Some(timeout.map_or(tick, |t| t.min(tick))) } else { timeout };
        // epoll counts in whole milliseconds: a shorter sleep parks (the
        // sockets wait that long, or a look between two polls).
        let poller = self.poller.get().filter(|_| timeout.is_none_or(|timeout| timeout >= EPOLL_GRAIN));
        self.sleeping.store(if poller.is_some() { POLLING } else { PARKED }, Ordering::SeqCst);
        if !self.has_remote.load(Ordering::SeqCst) && !self.stop.load(Ordering::SeqCst) {
            match (poller, timeout) {
                (Some(poller), timeout) => {
                    if !poller.wait(self.index, timeout) && watching {
                        poller.tick(self.index);
                        // A look, not work (work comes with a push).
                        TICKED.set(!self.has_remote.load(Ordering::Relaxed));
                    }
                }
                (None, Some(timeout)) => {
                    if !timeout.is_zero() {
                        std::thread::park_timeout(timeout);
                    }
                }
                (None, None) => std::thread::park(),
            }
        }
        self.sleeping.store(AWAKE, Ordering::Relaxed);
        // Woken to watch (the flag taken by a sibling): it watches for a
        // while from now, as if it had seen the sibling busy.
        if let Some(poller) = unwatched
            && !poller.watches()
        {
            SIBLING_BUSY_AT.set(Some(Instant::now()));
        }
        self.awake();
    }
}

thread_local! {
    /// Sends the running poll has made (see [`passing`]).
    static PASSED: Cell<u32> = const { Cell::new(0) };
}

/// For the core to call on each send of a process: the one point a poll
/// that runs long without waiting (a stream of sends) passes again and
/// again, since the loop is not reached until it ends (receives cannot
/// make a poll long: a process yields after 512). Every [`LONG_POLL`] sends
/// in one poll, the tasks queued behind it are offered to an idle sibling
/// (Erlang's idle schedulers steal from a busy one's run queue). Polls that
/// each send and receive a little — processes that talk, however busy the
/// thread — never give theirs away: moving one of two that talk makes every
/// message between them a wake-up of another thread (see `placement.rs`).
/// Nor does a poll that the OS merely preempted, which a clock could not
/// tell from a long one.
#[inline]
pub(crate) fn passing() {
    let passed = PASSED.with(|passed| {
        let n = passed.get().wrapping_add(1);
        passed.set(n);
        n
    });
    if passed.is_multiple_of(LONG_POLL) {
        share_with_an_idle_sibling(Share::Any);
    }
}

#[cold]
#[inline(never)]
fn share_with_an_idle_sibling(which: Share) {
    let Some(me) = LOCAL.with(|local| local.try_borrow().ok().and_then(|local| local.me.clone())) else { return };
    // Claimed: an idle sibling is handed work once, until it runs out of
    // work again (it clears the flag only when its park returns, which a
    // second look a few microseconds later would not wait for).
    let idle = me.others().find(|(_, sibling)| {
        sibling.idle.load(Ordering::Relaxed)
            && sibling.idle.compare_exchange(true, false, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    });
    if let Some((to, _)) = idle {
        share(to, which);
    }
}

/// Which queued tasks [`share`] may hand over.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Share {
    /// Any that can move: the queue waits behind a long poll.
    Any,
    /// Those that have run before: the queue is merely long. A burst of new
    /// tasks (a spawn burst) is run where it was spawned, each task for a
    /// moment: handed over, each would leave its slot and header behind on
    /// this thread and take new ones on the other (measured: 690–700
    /// bytes a process after a burst of a million, against 676).
    Started,
}

/// Hands up to half of the tasks that can move among the first queued (at
/// least one) to sibling `to`, each with its partner if that waits on this
/// thread — with [`Share::Started`], only those that have one: two processes
/// that talk keep talking on one thread (moving one of them would make every
/// message between them a wake-up of another thread).
fn share(to: usize, which: Share) {
    let moving: Vec<BoxFuture> = LOCAL.with_borrow_mut(|local| {
        // The front of the queue only: a share costs the same however long
        // the queue (a scan of a million queued tasks at every look was
        // quadratic). Those handed over leave it.
        let scan = local.queue.len().min(SHARE_SCAN);
        let front: Vec<u64> = local.queue.drain(..scan).collect();
        let movable = |local: &mut Local, id: u64| {
            local.slot_of(id).is_some_and(|slot| {
                slot.running
                    .as_ref()
                    .is_some_and(|(task, _)| task.can_move() && (which == Share::Any || task.started()))
            })
        };
        let count = front.iter().filter(|&&id| movable(local, id)).count();
        let give = count.div_ceil(2);
        let mut moving = Vec::with_capacity(give);
        for &id in &front {
            if moving.len() >= give {
                break;
            }
            // Gone already if it went as an earlier one's partner.
            if !movable(local, id) {
                continue;
            }
            let (mover, partner) = {
                let slot = local.slot_of(id).expect("a movable task's slot");
                (slot.header.clone(), slot.running.as_ref().and_then(|(task, _)| task.partner()))
            };
            let partner = partner.and_then(|partner| local.partner_of(&mover, &partner));
            // A merely long queue gives away pairs that talk, whole: a task
            // alone is left where it is (it may be half of a pair whose
            // send caches are not filled yet).
            if which == Share::Started && partner.is_none() {
                continue;
            }
            moving.extend(local.take_to_move(id));
            moving.extend(partner.and_then(|partner| local.take_to_move(partner)));
        }
        // What stays keeps its place at the front.
        for id in front.into_iter().rev() {
            if local.slot_of(id).is_some() {
                local.queue.push_front(id);
            }
        }
        moving
    });
    for task in moving {
        task.hand_over(to);
    }
}

/// Puts a new task in this thread's table and queues its first poll.
fn insert(header: Arc<Header>, future: BoxFuture) {
    let waker = Waker::from(header.clone());
    LOCAL.with_borrow_mut(|local| {
        local.generation = local.generation.wrapping_add(1);
        let generation = local.generation;
        let key = local.take_key();
        let id = id_of(key, generation);
        header.id.store(id, Ordering::Relaxed);
        local.chunks[key as usize / CHUNK].as_mut().expect("a key's chunk exists").slots[key as usize % CHUNK] =
            Some(Slot { header, running: Some((future, waker)) });
        local.live += 1;
        local.queue.push_back(id);
    });
}

impl Local {
    const fn new() -> Local {
        Local {
            queue: VecDeque::new(),
            chunks: Vec::new(),
            with_room: BTreeSet::new(),
            spare: None,
            live: 0,
            generation: 0,
            sleeps: Sleeps {
                heap: BinaryHeap::new(),
                wakers: FxHashMap::with_hasher(rustc_hash::FxBuildHasher),
                next_id: 0,
            },
            me: None,
        }
    }

    /// The lowest empty slot of the lowest chunk with room, or of a new
    /// chunk.
    fn take_key(&mut self) -> u32 {
        let index = match self.with_room.first() {
            Some(&index) => index,
            None => {
                let index = u32::try_from(self.chunks.len()).expect("fewer than 4 billion tasks on one scheduler");
                self.chunks.push(None);
                self.with_room.insert(index);
                index
            }
        };
        let chunk = self.chunks[index as usize]
            .get_or_insert_with(|| Box::new(Chunk { slots: std::array::from_fn(|_| None), used: 0 }));
        let bit = (!chunk.used).trailing_zeros();
        chunk.used |= 1 << bit;
        if chunk.used == u64::MAX {
            self.with_room.remove(&index);
        }
        if self.spare == Some(index) {
            self.spare = None;
        }
        index * CHUNK as u32 + bit
    }

    fn slot_mut(&mut self, key: usize) -> Option<&mut Slot> {
        self.chunks.get_mut(key / CHUNK)?.as_mut()?.slots[key % CHUNK].as_mut()
    }

    /// The slot of task `id`, unless the id is stale.
    fn slot_of(&mut self, id: u64) -> Option<&mut Slot> {
        // Written on this thread (at `insert`), so a relaxed load sees it.
        self.slot_mut(key_of(id)).filter(|slot| slot.header.id.load(Ordering::Relaxed) == id)
    }

    /// Takes task `key` out of the table. Memory a burst of tasks used is
    /// given back once it is over: its chunks are freed as they empty, the
    /// freed ones at the end leave the table, and the run queue shrinks
    /// once it is three-quarters empty.
    fn remove(&mut self, key: usize) -> Option<Slot> {
        let index = key / CHUNK;
        let chunk = self.chunks.get_mut(index)?.as_mut()?;
        let slot = chunk.slots[key % CHUNK].take()?;
        self.live -= 1;
        if chunk.used == u64::MAX {
            self.with_room.insert(index as u32);
        }
        chunk.used &= !(1 << (key % CHUNK));
        if chunk.used == 0 {
            if let Some(old) = self.spare.replace(index as u32)
                && old as usize != index
                && self.chunks[old as usize].as_ref().is_some_and(|chunk| chunk.used == 0)
            {
                self.chunks[old as usize] = None;
            }
            while matches!(self.chunks.last(), Some(None)) {
                self.chunks.pop();
                self.with_room.remove(&(self.chunks.len() as u32));
            }
            if let Some(room) = sparse(self.chunks.len(), self.chunks.capacity()) {
                self.chunks.shrink_to(room);
            }
        }
        if let Some(room) = sparse(self.queue.len(), self.queue.capacity()) {
            self.queue.shrink_to(room);
        }
        Some(slot)
    }

    /// Takes every task out of the table (the scheduler stops), in key
    /// order.
    fn take_all(&mut self) -> Vec<Slot> {
        let slots: Vec<Slot> =
            self.chunks.drain(..).flatten().flat_map(|chunk| chunk.slots.into_iter().flatten()).collect();
        self.with_room.clear();
        self.spare = None;
        self.live = 0;
        slots
    }
}

/// Polls a task taken for it, and puts it back in its slot if it is still
/// pending (at once, in a borrow of its own: handed back to the loop to put
/// back with the next take, its five words were copied twice through the
/// stack and read back wider than they were written, which stalls, perf).
fn poll_task(id: u64, taken: Taken) {
    let key = key_of(id);
    let (mut future, waker) = match taken {
        Taken::Gone => return,
        // Dropped outside the borrow: its drop may spawn or wake.
        Taken::Aborted(slot) => return finish(slot),
        Taken::Running(future, waker) => (future, waker),
    };
    // No panic gets here: every task catches its own (see `Task`).
    if future.as_mut().poll(&mut Context::from_waker(&waker)).is_pending() {
        return LOCAL.with_borrow_mut(|local| local.put_back(key, future, waker));
    }
    // Its slot is emptied, and the task dropped outside the borrow, before
    // the next task is taken: what its drop does (a process's exit, a kill
    // of a linked one) is seen by that task's poll.
    finish(LOCAL.with_borrow_mut(|local| local.remove(key)));
    drop(future);
}

/// What [`Local::take_for_poll`] found for an id.
enum Taken {
    /// The task ended (a stale id), or is being polled.
    Gone,
    /// Aborted: to be dropped.
    Aborted(Option<Slot>),
    Running(BoxFuture, Waker),
}

impl Local {
    /// Puts a task that a poll left pending back into its slot.
    #[inline]
    fn put_back(&mut self, key: usize, future: BoxFuture, waker: Waker) {
        let slot = self.slot_mut(key).expect("a task's slot stays while it is polled");
        slot.running = Some((future, waker));
    }

    /// The partner of the task whose header is `mover`, if it can go with
    /// it: on this thread, not being polled, able to move, and talking back
    /// (its own partner is `mover`: a server many clients talk to is no
    /// client's partner).
    fn partner_of(&mut self, mover: &Arc<Header>, partner: &AbortHandle) -> Option<u64> {
        let id = partner.0.id.load(Ordering::Relaxed);
        let slot = self.slot_of(id)?;
        let mutual = slot
            .running
            .as_ref()
            .is_some_and(|(task, _)| task.can_move() && task.partner().is_some_and(|back| Arc::ptr_eq(&back.0, mover)));
        (Arc::ptr_eq(&slot.header, &partner.0) && mutual).then_some(id)
    }

    /// Takes task `id` out of this thread's table to move it.
    fn take_to_move(&mut self, id: u64) -> Option<BoxFuture> {
        let slot = self.remove(key_of(id))?;
        slot.header.notified.store(true, Ordering::Release);
        slot.running.map(|(task, _waker)| task)
    }

    /// Takes task `id` out of its slot to be polled: cleared before the
    /// poll, so a wake-up during it queues it again; by a swap, so what
    /// another thread wrote before its wake-up (see `wake_by_ref_inner`)
    /// is seen by the poll.
    fn take_for_poll(&mut self, id: u64) -> Taken {
        let Some(slot) = self.slot_of(id) else { return Taken::Gone };
        slot.header.notified.swap(false, Ordering::AcqRel);
        if slot.header.aborted.load(Ordering::Acquire) {
            return Taken::Aborted(self.remove(key_of(id)));
        }
        match slot.running.take() {
            Some((future, waker)) => Taken::Running(future, waker),
            None => Taken::Gone,
        }
    }
}

/// Drops an ended task, leaving its header notified for good, so late
/// wake-ups queue nothing.
fn finish(slot: Option<Slot>) {
    if let Some(slot) = slot {
        slot.header.notified.store(true, Ordering::Release);
        drop(slot);
    }
}

/// The sleeps of this thread's tasks: a heap of deadlines, each with the
/// waker to call then. A sleep dropped before its deadline leaves its heap
/// entry behind (found stale when it comes up); the heap is rebuilt when
/// more than half of it is stale.
struct Sleeps {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    wakers: FxHashMap<u64, (Instant, Waker)>,
    next_id: u64,
}

impl Sleeps {
    fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }
}

/// Wakes the tasks whose sleeps are due; true if any.
fn fire_due_sleeps(now: Instant) -> bool {
    let mut due = Vec::new();
    LOCAL.with_borrow_mut(|local| {
        let sleeps = &mut local.sleeps;
        while let Some(&Reverse((at, id))) = sleeps.heap.peek() {
            if at > now {
                break;
            }
            sleeps.heap.pop();
            if let Some((_, waker)) = sleeps.wakers.remove(&id) {
                due.push(waker);
            }
        }
        if let Some(room) = sparse(sleeps.heap.len(), sleeps.heap.capacity()) {
            sleeps.heap.shrink_to(room);
        }
        crate::process::shrink_map_if_sparse(&mut sleeps.wakers);
    });
    let any = !due.is_empty();
    for waker in due {
        waker.wake();
    }
    any
}

/// A sleep of a task on the current scheduler thread: wakes its task at
/// `deadline` (tokio's `Sleep`). Outside a scheduler thread it never wakes
/// anything (no process code runs there).
#[derive(Debug)]
pub(crate) struct Sleep {
    deadline: Instant,
    /// Its entry in this thread's sleeps, once polled.
    registered: Option<(usize, u64)>,
}

/// A sleep until `deadline`.
pub(crate) fn sleep_until(deadline: Instant) -> Sleep {
    Sleep { deadline, registered: None }
}

impl Sleep {
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline; the next poll registers it anew.
    pub(crate) fn reset(&mut self, deadline: Instant) {
        self.cancel();
        self.deadline = deadline;
    }

    fn cancel(&mut self) {
        if let Some((scheduler, id)) = self.registered.take()
            && CURRENT.with(Cell::get) == scheduler
        {
            LOCAL.with_borrow_mut(|local| {
                let sleeps = &mut local.sleeps;
                sleeps.wakers.remove(&id);
                crate::process::shrink_map_if_sparse(&mut sleeps.wakers);
                if sleeps.heap.len() > 64 && sleeps.heap.len() > 2 * sleeps.wakers.len() {
                    sleeps.heap = sleeps.wakers.iter().map(|(&id, (at, _))| Reverse((*at, id))).collect();
                }
            });
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            self.cancel();
            return Poll::Ready(());
        }
        let scheduler = CURRENT.with(Cell::get);
        match self.registered {
            Some((registered_on, id)) if registered_on == scheduler => {
                LOCAL.with_borrow_mut(|local| {
                    if let Some((_, waker)) = local.sleeps.wakers.get_mut(&id)
                        && !waker.will_wake(cx.waker())
                    {
                        *waker = cx.waker().clone();
                    }
                });
            }
            _ => {
                self.cancel();
                let deadline = self.deadline;
                let id = LOCAL.with_borrow_mut(|local| {
                    let sleeps = &mut local.sleeps;
                    sleeps.next_id += 1;
                    let id = sleeps.next_id;
                    sleeps.heap.push(Reverse((deadline, id)));
                    sleeps.wakers.insert(id, (deadline, cx.waker().clone()));
                    id
                });
                self.registered = Some((scheduler, id));
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// Yields once to the other tasks of this scheduler (tokio's `yield_now`).
pub(crate) async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A task that panics is dropped (its captures with it) and the
    /// scheduler goes on running the next one.
    #[test]
    fn a_panicking_task_ends_alone() {
        let scheduler = Scheduler::new(0);
        let runner = {
            let scheduler = scheduler.clone();
            std::thread::spawn(move || scheduler.run())
        };
        let dropped = Arc::new(AtomicUsize::new(0));
        let counted = Counted(dropped.clone());
        let (ran, after) = std::sync::mpsc::channel();
        scheduler.spawn(
            Box::pin(Fixed(Box::pin(async move {
                let _counted = counted;
                panic!("a task's own panic");
            }))),
            drop,
        );
        scheduler.spawn(Box::pin(Fixed(Box::pin(async move { ran.send(()).unwrap() }))), drop);
        after.recv_timeout(Duration::from_secs(10)).expect("the task after the panicking one ran");
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "the panicking task was dropped");
        scheduler.stop();
        runner.join().expect("the scheduler thread did not panic");
    }

    /// Every task spawned from another thread while the scheduler stops is
    /// dropped: run and dropped with the rest, or refused at once. None may
    /// stay in `remote.spawned` (where it would never be dropped: it holds
    /// the scheduler that holds it).
    #[test]
    fn every_task_spawned_while_the_scheduler_stops_is_dropped() {
        for round in 0..1_000u32 {
            let scheduler = Scheduler::new(0);
            let dropped = Arc::new(AtomicUsize::new(0));
            let ended = Arc::new(AtomicBool::new(false));
            let runner = {
                let scheduler = scheduler.clone();
                std::thread::spawn(move || scheduler.run())
            };
            let spawner = {
                let (scheduler, dropped, ended) = (scheduler.clone(), dropped.clone(), ended.clone());
                std::thread::spawn(move || {
                    let mut spawned = 0usize;
                    // Until the loop has ended, and a few more after.
                    let mut after = 0;
                    while after < 10 {
                        if ended.load(Ordering::SeqCst) {
                            after += 1;
                        }
                        let counted = Counted(dropped.clone());
                        scheduler.spawn(
                            Box::pin(Fixed(Box::pin(async move {
                                let _counted = counted;
                                std::future::pending::<()>().await;
                            }))),
                            drop,
                        );
                        spawned += 1;
                    }
                    spawned
                })
            };
            for _ in 0..(round % 50) * 20 {
                std::hint::spin_loop();
            }
            scheduler.stop();
            runner.join().unwrap();
            ended.store(true, Ordering::SeqCst);
            let spawned = spawner.join().unwrap();
            let left = spawned - dropped.load(Ordering::SeqCst);
            assert_eq!(
                left,
                0,
                "round {round}: {left} of {spawned} tasks spawned while the scheduler stopped were never dropped \
                 ({} still in its remote queue)",
                scheduler.remote.lock().unwrap().spawned.len()
            );
        }
    }
}
