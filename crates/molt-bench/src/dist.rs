//! Distribution workloads: two nodes over 127.0.0.1 (in this process, as
//! Erlang's side runs two VMs), with their Erlang counterparts in
//! `bench.erl`; the node killed with SIGKILL is a child process (this
//! harness, started with `--serve-node`).
//!
//! - `remote_round_trips`: a `(Pid, u64)` to an echo on the other node and
//!   the `u64` back, one at a time;
//! - `remote_one_way`: `u64`s streamed to a counter on the other node;
//! - `remote_bulk`: 1 MiB binaries streamed to the other node, with the raw
//!   TCP time for the same bytes over loopback in the same run
//!   (`baseline_seconds`);
//! - `remote_latency_under_bulk`: the longest small round trip while a
//!   64 MiB message goes to the other node on the same connection;
//! - `detect_sigkill`: from SIGKILL to a node monitor's `NodeDown`.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use molt::{Node, NodeConfig, NodeDown, Pid, Process, ReceiveError, Secret};
use serde::{Deserialize, Serialize};

use crate::workloads::{Measurement, run, workers};

const SECRET: &str = "molt-bench";

fn dist_node(name: &str) -> Node {
    // Messages up to 256 MiB: the 64 MiB one (and its frame) fits.
    let config = NodeConfig::new(name)
        .workers(workers())
        .listen("127.0.0.1:0")
        .secret(Secret::new(SECRET).expect("a secret"))
        .max_frame(256 << 20);
    Node::start(config).expect("a distributed node starts")
}

/// Two connected nodes: `a` drives, `b` serves.
fn pair() -> (Node, Node) {
    let (a, b) = (dist_node("a"), dist_node("b"));
    a.connect(b.name()).expect("a connects to b");
    (a, b)
}

async fn echo(mut p: Process) -> Result<(), ReceiveError> {
    loop {
        let (from, x): (Pid, u64) = p.expect().await?;
        p.send(from, &x);
    }
}

/// `n` round trips, after a hundred to warm the connection.
async fn ping(p: &mut Process, echo: Pid, n: u64) {
    let me = p.self_pid();
    for i in 0..n {
        p.send(echo, &(me, i));
        let back: u64 = p.expect().await.expect("a pong");
        assert_eq!(back, i);
    }
}

pub(crate) fn remote_round_trips(n: u64) -> Measurement {
    let (a, b) = pair();
    let echo = b.spawn(echo);
    let seconds = run(&a, move |mut p| async move {
        ping(&mut p, echo, 100).await;
        let start = Instant::now();
        ping(&mut p, echo, n).await;
        start.elapsed().as_secs_f64()
    });
    a.shutdown();
    b.shutdown();
    Measurement { seconds, bytes_per_process: None, baseline_seconds: None }
}

/// A counter on `b` that learns whom to tell, takes `n` messages of type
/// `M` and then answers `true`.
fn counter<M: molt::Message + for<'de> Deserialize<'de> + Send + 'static>(b: &Node, n: u64) -> Pid {
    b.spawn(move |mut p| async move {
        let driver: Pid = p.expect().await?;
        for _ in 0..n {
            p.expect::<M>().await?;
        }
        p.send(driver, &true);
        Ok::<(), ReceiveError>(())
    })
}

pub(crate) fn remote_one_way(n: u64) -> Measurement {
    let (a, b) = pair();
    let sink = counter::<u64>(&b, n);
    let seconds = run(&a, move |mut p| async move {
        p.send(sink, &p.self_pid());
        let start = Instant::now();
        for i in 0..n {
            p.send(sink, &i);
        }
        p.expect::<bool>().await.expect("the count");
        start.elapsed().as_secs_f64()
    });
    a.shutdown();
    b.shutdown();
    Measurement { seconds, bytes_per_process: None, baseline_seconds: None }
}

/// A binary, as bytes on the wire.
#[derive(Serialize, Deserialize, molt::Message)]
#[message(name = "bench.Chunk", crate = "molt")]
struct Chunk(#[serde(with = "serde_bytes")] Vec<u8>);

const MIB: usize = 1 << 20;

pub(crate) fn remote_bulk(n: u64) -> Measurement {
    let baseline = raw_tcp(n as usize * MIB);
    let (a, b) = pair();
    let sink = counter::<Chunk>(&b, n);
    let seconds = run(&a, move |mut p| async move {
        p.send(sink, &p.self_pid());
        let chunk = Chunk(vec![7; MIB]);
        let start = Instant::now();
        for _ in 0..n {
            p.send(sink, &chunk);
            // Where the backlog pauses a sender: as Erlang's busy port.
            p.sleep(Duration::ZERO).await;
        }
        p.expect::<bool>().await.expect("the count");
        start.elapsed().as_secs_f64()
    });
    a.shutdown();
    b.shutdown();
    Measurement { seconds, bytes_per_process: None, baseline_seconds: Some(baseline) }
}

/// Seconds to move `bytes` from one socket to another over loopback, in
/// 1 MiB writes, and a byte back.
fn raw_tcp(bytes: usize) -> f64 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let address = listener.local_addr().expect("its address");
    let reader = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().expect("a connection");
        let mut buffer = vec![0; MIB];
        let mut left = bytes;
        while left > 0 {
            left -= socket.read(&mut buffer).expect("bytes");
        }
        socket.write_all(&[1]).expect("the answer");
    });
    let mut socket = std::net::TcpStream::connect(address).expect("connects");
    socket.set_nodelay(true).expect("nodelay");
    let chunk = vec![7; MIB];
    let start = Instant::now();
    for _ in 0..bytes / MIB {
        socket.write_all(&chunk).expect("writes");
    }
    let mut answer = [0];
    socket.read_exact(&mut answer).expect("the answer");
    let seconds = start.elapsed().as_secs_f64();
    reader.join().expect("the reader");
    seconds
}

/// `n` is the big message's size in bytes.
pub(crate) fn remote_latency_under_bulk(n: u64) -> Measurement {
    let (a, b) = pair();
    let echo = b.spawn(echo);
    let sink = b.spawn(|mut p| async move {
        let (from, chunk): (Pid, Chunk) = p.expect().await?;
        p.send(from, &(chunk.0.len() as u32));
        Ok::<(), ReceiveError>(())
    });
    let worst = run(&a, move |mut p| async move {
        ping(&mut p, echo, 100).await;
        let me = p.self_pid();
        // The big message is made and encoded by its sender before it is
        // queued for the connection: the round trips start once it is, so
        // that each is measured with the message in flight.
        p.spawn(move |p| async move {
            p.send(sink, &(me, Chunk(vec![7; n as usize])));
            p.send(me, &true);
        });
        p.expect::<bool>().await.expect("the big message is queued");
        // Round trips, one after the other, until the big message is in.
        let mut times = Vec::new();
        for i in 0.. {
            let start = Instant::now();
            p.send(echo, &(me, i));
            let back: u64 = p.expect().await.expect("a pong");
            assert_eq!(back, i);
            times.push(start.elapsed().as_secs_f64());
            if p.receive_timeout(Duration::ZERO).on(|_: u32| ()).await.is_ok() {
                break;
            }
        }
        // The worst: how long a small message was held up behind the big
        // one (a median would count the round trips after the transfer,
        // while the receiver decodes it, as much as those during it).
        times.into_iter().fold(0.0, f64::max)
    });
    a.shutdown();
    b.shutdown();
    Measurement { seconds: worst, bytes_per_process: None, baseline_seconds: None }
}

/// Runs a node for `detect_sigkill` in this process, started as a child
/// of the harness: prints its name and the pid of the OS process, then
/// waits to be killed.
pub(crate) fn serve_node() -> ! {
    let node = dist_node("victim");
    println!("{} {}", node.name(), std::process::id());
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    std::process::exit(0);
}

/// `n` is ignored: one kill per run.
pub(crate) fn detect_sigkill(_n: u64) -> Measurement {
    let mut child = Command::new(std::env::current_exe().expect("the harness's own path"))
        .arg("--serve-node")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the harness starts itself as a node");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("its output")).read_line(&mut line).expect("its name");
    let name = line.split_whitespace().next().expect("a node name").to_owned();
    let a = dist_node("watcher");
    a.connect(&name).expect("connects to the victim");
    let (ready, is_ready) = std::sync::mpsc::channel();
    let (told, tell) = std::sync::mpsc::channel();
    let watched = name.clone();
    a.spawn(move |mut p| async move {
        p.monitor_node(&watched);
        let _ = ready.send(());
        let down: NodeDown = p.expect().await?;
        let _ = told.send((Instant::now(), down));
        Ok::<(), ReceiveError>(())
    });
    is_ready.recv().expect("the watcher starts");
    let killed = Instant::now();
    child.kill().expect("SIGKILL");
    let (when, _down) = tell.recv_timeout(Duration::from_secs(60)).expect("the node is declared down");
    let _ = child.wait();
    a.shutdown();
    Measurement { seconds: when.duration_since(killed).as_secs_f64(), bytes_per_process: None, baseline_seconds: None }
}
