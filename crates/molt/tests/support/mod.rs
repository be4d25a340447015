//! Helpers shared by the integration tests: nodes, a bounded `run`, and
//! small message types.

#![allow(dead_code, unreachable_pub)]

pub mod allocations;
pub mod child;
pub mod dist;
pub mod modules;
pub mod proxy;

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use molt::{ExitReason, Message, Node, NodeConfig, Process, Tag};
use serde::{Deserialize, Serialize};

/// How long any test waits for an event before it fails instead of hanging.
pub const BOUND: Duration = Duration::from_secs(60);

pub fn node(name: &str) -> Node {
    Node::start(NodeConfig::new(name).workers(2)).expect("the node starts")
}

/// `node.run(body)`, failing the test if it does not return within `BOUND`.
pub fn run<F, Fut, R>(node: &Node, body: F) -> Result<R, ExitReason>
where
    F: FnOnce(Process) -> Fut + Send + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    std::thread::scope(|scope| {
        let (done, finished) = mpsc::channel();
        scope.spawn(move || {
            let _ = done.send(node.run(body));
        });
        match finished.recv_timeout(BOUND) {
            Ok(result) => result,
            Err(_) => {
                // The process hangs, and the scope would wait for it forever:
                // fail the whole test binary instead.
                eprintln!("a test's process did not return within {BOUND:?}: failing the test binary");
                std::process::exit(101)
            }
        }
    })
}

/// The reason of `pid`'s `Down`, within `BOUND`.
pub async fn down_of(p: &mut Process, pid: molt::Pid) -> ExitReason {
    p.receive_timeout(BOUND).on_if(move |d: &molt::Down| d.pid == pid, |d| d.reason).await.expect("a Down")
}

/// Takes `u64`s until it is killed or the node stops.
pub async fn wait_forever(mut p: Process) -> Result<(), molt::ReceiveError> {
    loop {
        p.expect::<u64>().await?;
    }
}

/// A numbered message of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct A(pub u32);
impl Message for A {
    const TAG: Tag = Tag::named("test.A");
}

/// A numbered message of another kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct B(pub u32);
impl Message for B {
    const TAG: Tag = Tag::named("test.B");
}

/// A request to answer with `Pong` (proves the receiver is alive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping(pub molt::Pid);
impl Message for Ping {
    const TAG: Tag = Tag::named("test.Ping");
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong(pub molt::Pid);
impl Message for Pong {
    const TAG: Tag = Tag::named("test.Pong");
}

/// A process body that answers every `Ping` until told to stop with `()`.
pub async fn ponger(mut p: Process) -> Result<(), molt::ReceiveError> {
    enum Next {
        Ping(Ping),
        Stop,
    }
    loop {
        match p.receive().on(Next::Ping).on(|()| Next::Stop).await? {
            Next::Ping(Ping(from)) => p.send(from, &Pong(p.self_pid())),
            Next::Stop => return Ok(()),
        }
    }
}

/// Whether `pid` answers a ping within the bound.
pub async fn answers(p: &mut Process, pid: molt::Pid) -> bool {
    p.send(pid, &Ping(p.self_pid()));
    let me = pid;
    matches!(p.receive_timeout(BOUND).on_if(move |pong: &Pong| pong.0 == me, |_| ()).await, Ok(()))
}

/// What the module entries of the boundary tests report to their watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    Pid(String, molt::Pid),
    Number(String, u64),
}

/// A process that forwards every report it gets to the test's thread.
pub struct Reports {
    pub pid: molt::Pid,
    received: mpsc::Receiver<Report>,
}

impl Reports {
    pub fn start(node: &Node) -> Reports {
        let (forward, received) = mpsc::channel();
        let pid = node.spawn(move |mut p| async move {
            loop {
                let report = p
                    .receive()
                    .on(|(what, pid): (String, molt::Pid)| Report::Pid(what, pid))
                    .on(|(what, n): (String, u64)| Report::Number(what, n))
                    .await?;
                if forward.send(report).is_err() {
                    return Ok::<(), molt::ReceiveError>(());
                }
            }
        });
        Reports { pid, received }
    }

    /// The next report, failing the test if none comes within the bound.
    pub fn next(&self) -> Report {
        self.received.recv_timeout(BOUND).expect("a report within the bound")
    }

    /// The next report, which must be `what` with a pid.
    pub fn pid(&self, what: &str) -> molt::Pid {
        match self.next() {
            Report::Pid(said, pid) if said == what => pid,
            other => panic!("expected a {what:?} pid, got {other:?}"),
        }
    }

    /// Whether a report arrives within `wait`.
    pub fn try_next(&self, wait: Duration) -> Option<Report> {
        self.received.recv_timeout(wait).ok()
    }
}

/// Waits, within the bound, until `pid` is in one of `statuses`.
pub fn wait_status(node: &Node, pid: molt::Pid, statuses: &[molt::ProcessStatus]) {
    let start = std::time::Instant::now();
    loop {
        let now = node.processes().into_iter().find(|info| info.pid == pid).map(|info| info.status);
        if now.is_some_and(|now| statuses.contains(&now)) {
            return;
        }
        assert!(start.elapsed() < BOUND, "{pid} never became {statuses:?} (it is {now:?})");
        std::thread::yield_now();
    }
}

/// Whether `pid` is a live process of `node`.
pub fn alive(node: &Node, pid: molt::Pid) -> bool {
    node.processes().iter().any(|info| info.pid == pid)
}
