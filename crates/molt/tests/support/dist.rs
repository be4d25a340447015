//! Helpers shared by the distribution tests: nodes on 127.0.0.1 with one
//! secret, waiting on a condition with the tests' bound, watching a
//! process, and a round trip to an echo on another node.

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use molt::{ExitReason, Node, NodeConfig, Pid, Process, ReceiveError, Secret};

use super::{BOUND, down_of, run};

/// A distributed node's configuration: 127.0.0.1, the tests' secret, a
/// short handshake deadline.
pub fn dist_config(name: &str) -> NodeConfig {
    NodeConfig::new(name)
        .workers(2)
        .listen("127.0.0.1:0")
        .secret(Secret::new("shared").unwrap())
        .handshake_timeout(Duration::from_millis(500))
}

pub fn dist_node(name: &str) -> Node {
    Node::start(dist_config(name)).expect("a distributed node starts")
}

/// Waits, with the tests' bound, until `done` holds.
pub fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {BOUND:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Spawns on `node` a process that monitors `target` and reports the
/// reason of its `Down`; returns once the monitor is made.
pub fn watch(node: &Node, target: Pid) -> Receiver<ExitReason> {
    let (tell, told) = std::sync::mpsc::channel();
    let (ready, is_ready) = std::sync::mpsc::channel();
    node.spawn(move |mut p| async move {
        p.monitor(target);
        let _ = ready.send(());
        let _ = tell.send(down_of(&mut p, target).await);
        Ok::<(), ReceiveError>(())
    });
    is_ready.recv_timeout(BOUND).expect("the watcher starts");
    told
}

/// Answers every `(from, n)` with `n`.
pub async fn echo(mut p: Process) -> Result<(), ReceiveError> {
    loop {
        let (from, n): (Pid, u64) = p.expect().await?;
        p.send(from, &n);
    }
}

/// `n`, sent from a process of `a` to an echo on `b`, and back.
pub fn round_trip(a: &Node, b: &Node, n: u64) -> Result<Result<u64, ReceiveError>, ExitReason> {
    let echo = b.spawn(echo);
    run(a, move |mut p| async move {
        p.send(echo, &(p.self_pid(), n));
        p.expect_timeout::<u64>(BOUND).await
    })
}
