//! The molt side of every workload: each starts a fresh node, does the work
//! inside processes, and returns what it measured. The Erlang side of each
//! is the function of the same name in `erlang/bench.erl`.

use std::time::{Duration, Instant};

use molt::{Message, Node, NodeConfig, Pid, Tag};
use serde::{Deserialize, Serialize};

/// What one run of a workload measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Measurement {
    pub(crate) seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) bytes_per_process: Option<f64>,
    /// For a workload measured as a difference: the time it is taken from.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) baseline_seconds: Option<f64>,
}

/// The schedulers a workload's node runs (`MOLT_WORKERS`, 2 unless set).
pub(crate) fn workers() -> usize {
    std::env::var("MOLT_WORKERS").ok().and_then(|s| s.parse().ok()).unwrap_or(2)
}

fn node() -> Node {
    Node::start(NodeConfig::new("bench").workers(workers())).expect("a node starts")
}

pub(crate) fn run<R: Send + 'static, Fut>(node: &Node, body: impl FnOnce(molt::Process) -> Fut + Send + 'static) -> R
where
    Fut: std::future::Future<Output = R> + Send + 'static,
{
    node.run(body).expect("the benchmark's driver process returns")
}

/// 1 round trip = a `(Pid, u64)` to an echo process and the `u64` back.
pub(crate) fn round_trips(n: u64) -> Measurement {
    let node = node();
    let seconds = run(&node, move |mut p| async move {
        let echo = p.spawn(|mut p| async move {
            loop {
                let (from, x): (Pid, u64) = p.expect().await?;
                p.send(from, &x);
            }
            #[allow(unreachable_code)]
            Ok::<(), molt::ReceiveError>(())
        });
        let me = p.self_pid();
        let start = Instant::now();
        for i in 0..n {
            p.send(echo, &(me, i));
            let back: u64 = p.expect().await.expect("a pong");
            assert_eq!(back, i);
        }
        let seconds = start.elapsed().as_secs_f64();
        p.kill(echo);
        seconds
    });
    node.shutdown();
    Measurement { seconds, ..Default::default() }
}

#[derive(Serialize, Deserialize)]
struct Done(u64);

impl Message for Done {
    const TAG: Tag = Tag::named("bench.Done");
}

/// `n` `u64`s from one process to another, which counts them.
pub(crate) fn one_way(n: u64) -> Measurement {
    let node = node();
    let seconds = run(&node, move |mut p| async move {
        let parent = p.self_pid();
        let start = Instant::now();
        let sink = p.spawn(move |mut p| async move {
            let mut sum = 0u64;
            for _ in 0..n {
                sum = sum.wrapping_add(p.expect::<u64>().await?);
            }
            p.send(parent, &Done(sum));
            Ok::<(), molt::ReceiveError>(())
        });
        for i in 0..n {
            p.send(sink, &i);
        }
        let Done(sum) = p.expect().await.expect("the sink's total");
        assert_eq!(sum, (0..n).fold(0u64, u64::wrapping_add));
        start.elapsed().as_secs_f64()
    });
    node.shutdown();
    Measurement { seconds, ..Default::default() }
}

/// Spawning `n` processes that each wait for a message; only the spawning
/// is timed.
pub(crate) fn spawn(n: u64) -> Measurement {
    let node = node();
    let seconds = run(&node, move |_p| async move {
        let start = Instant::now();
        let mut pids = Vec::with_capacity(n as usize);
        for _ in 0..n {
            pids.push(_p.spawn(|mut p| async move { p.expect::<()>().await.map(drop) }));
        }
        let seconds = start.elapsed().as_secs_f64();
        for pid in pids {
            _p.send(pid, &());
        }
        seconds
    });
    node.shutdown();
    Measurement { seconds, ..Default::default() }
}

fn resident_bytes() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    pages * 4096.0
}

/// `n` processes, each parked in a receive: resident memory per process.
pub(crate) fn memory(n: u64) -> Measurement {
    let node = node();
    let (seconds, bytes) = run(&node, move |mut p| async move {
        let parent = p.self_pid();
        let before = resident_bytes();
        let start = Instant::now();
        let mut pids = Vec::with_capacity(n as usize);
        for _ in 0..n {
            pids.push(p.spawn(move |mut p| async move {
                p.send(parent, &());
                p.expect::<u64>().await.map(drop)
            }));
        }
        for _ in 0..n {
            p.expect::<()>().await.expect("every process started");
        }
        let seconds = start.elapsed().as_secs_f64();
        // The parent's own vector of pids is not the processes' memory.
        let pid_vector = (pids.capacity() * std::mem::size_of::<Pid>()) as f64;
        let bytes = (resident_bytes() - before - pid_vector) / n as f64;
        for pid in pids {
            p.send(pid, &0u64);
        }
        (seconds, bytes)
    });
    node.shutdown();
    Measurement { seconds, bytes_per_process: Some(bytes), ..Default::default() }
}

/// One receiver with `n` non-matching messages queued; each of 10 timed
/// round trips makes it find one matching message behind all of them.
pub(crate) fn selective_receive(n: u64) -> Measurement {
    const ROUNDS: u32 = 10;
    let node = node();
    let seconds = run(&node, move |mut p| async move {
        let receiver = p.spawn(|mut p| async move {
            for _ in 0..ROUNDS {
                let (from, k): (Pid, u32) = p.expect().await?;
                p.send(from, &k);
            }
            Ok::<(), molt::ReceiveError>(())
        });
        for i in 0..n {
            p.send(receiver, &i);
        }
        let me = p.self_pid();
        // Let the receiver see the noise arrive before timing starts.
        p.send(receiver, &(me, u32::MAX));
        let _ = p.expect_timeout::<u32>(Duration::from_secs(60)).await;
        let start = Instant::now();
        for k in 1..ROUNDS {
            p.send(receiver, &(me, k));
            assert_eq!(p.expect::<u32>().await.expect("the reply"), k);
        }
        start.elapsed().as_secs_f64() / f64::from(ROUNDS - 1)
    });
    node.shutdown();
    Measurement { seconds, ..Default::default() }
}

/// A process that traps exits `spawn_link`s `n` children that wait, then
/// kills them all and takes their `n` `Exit` messages: links added and
/// removed by the hundred thousand.
pub(crate) fn spawn_link_kill(n: u64) -> Measurement {
    let node = node();
    let seconds = run(&node, move |mut p| async move {
        p.trap_exit(true);
        let start = Instant::now();
        let children: Vec<Pid> =
            (0..n).map(|_| p.spawn_link(|mut p| async move { p.expect::<()>().await.map(drop) })).collect();
        for child in &children {
            p.kill(*child);
        }
        for _ in 0..n {
            p.expect::<molt::Exit>().await.expect("an exit per child");
        }
        start.elapsed().as_secs_f64()
    });
    node.shutdown();
    Measurement { seconds, ..Default::default() }
}

/// `n` monitors on one process, then `n` demonitors.
pub(crate) fn monitor_demonitor(n: u64) -> Measurement {
    let node = node();
    let seconds = run(&node, move |p| async move {
        let target = p.spawn(|mut p| async move { p.expect::<()>().await.map(drop) });
        let start = Instant::now();
        let monitors: Vec<molt::MonitorRef> = (0..n).map(|_| p.monitor(target)).collect();
        for monitor in monitors {
            assert!(p.demonitor(monitor));
        }
        let seconds = start.elapsed().as_secs_f64();
        p.send(target, &());
        seconds
    });
    node.shutdown();
    Measurement { seconds, ..Default::default() }
}

/// A `Vec<u8>` of `n` bytes from one process to another, which answers
/// with its length: the time from send to answer. `baseline_seconds` is a
/// `memcpy` of the same bytes on this machine, for scale.
pub(crate) fn big_message(n: u64) -> Measurement {
    send_big(n, |from, bytes| (from, bytes), |(from, bytes): &(Pid, Vec<u8>)| (*from, bytes.len()))
}

/// A byte payload marked as one (`serde_bytes`), as `big_message`: serde
/// hands it over as one block, not byte by byte.
pub(crate) fn big_bytes(n: u64) -> Measurement {
    send_big(n, |from, bytes| Blob { from, bytes }, |blob: &Blob| (blob.from, blob.bytes.len()))
}

#[derive(Serialize, Deserialize, molt::Message)]
#[message(name = "bench.Blob", crate = "molt")]
struct Blob {
    from: Pid,
    #[serde(with = "serde_bytes")]
    bytes: Vec<u8>,
}

/// Sends `make(sender, n bytes)`; the receiver answers `read(message)`'s
/// length to its sender.
fn send_big<M>(n: u64, make: fn(Pid, Vec<u8>) -> M, read: fn(&M) -> (Pid, usize)) -> Measurement
where
    M: Message + for<'de> Deserialize<'de> + Send + 'static,
{
    let bytes = vec![7u8; n as usize];
    let copy_start = Instant::now();
    let copied = std::hint::black_box(bytes.clone());
    let memcpy = copy_start.elapsed().as_secs_f64();
    drop(copied);
    let node = node();
    let seconds = run(&node, move |mut p| async move {
        let sink = p.spawn(move |mut p| async move {
            let message: M = p.expect().await?;
            let (from, length) = read(&message);
            p.send(from, &(length as u64));
            Ok::<(), molt::ReceiveError>(())
        });
        let message = make(p.self_pid(), bytes);
        let start = Instant::now();
        p.send(sink, &message);
        let len: u64 = p.expect().await.expect("the length back");
        let seconds = start.elapsed().as_secs_f64();
        assert_eq!(len, n);
        drop(message);
        seconds
    });
    node.shutdown();
    Measurement { seconds, baseline_seconds: Some(memcpy), ..Default::default() }
}

/// `n` pending `send_after` timers of an hour: the time to arm them, and
/// the resident memory per timer (in `bytes_per_process`).
pub(crate) fn timers_pending(n: u64) -> Measurement {
    let node = node();
    let (seconds, bytes) = run(&node, move |p| async move {
        let me = p.self_pid();
        let before = resident_bytes();
        let start = Instant::now();
        let timers: Vec<molt::TimerRef> =
            (0..n).map(|_| p.send_after(std::time::Duration::from_secs(3600), me, &())).collect();
        let seconds = start.elapsed().as_secs_f64();
        let list = (timers.capacity() * std::mem::size_of::<molt::TimerRef>()) as f64;
        let bytes = (resident_bytes() - before - list) / n as f64;
        for timer in timers {
            p.cancel_timer(timer);
        }
        (seconds, bytes)
    });
    node.shutdown();
    Measurement { seconds, bytes_per_process: Some(bytes), ..Default::default() }
}

/// A burst of `n` messages drained while one unmatched message stays: the
/// resident memory left afterwards (in `bytes_per_process`, for the whole
/// burst), and the time to send and drain it.
pub(crate) fn burst_memory(n: u64) -> Measurement {
    let node = node();
    let (seconds, bytes) = run(&node, move |mut p| async move {
        let me = p.self_pid();
        p.send(me, &"stays".to_owned());
        let before = resident_bytes();
        let start = Instant::now();
        for i in 0..n {
            p.send(me, &i);
        }
        for _ in 0..n {
            p.expect::<u64>().await.expect("the burst");
        }
        (start.elapsed().as_secs_f64(), (resident_bytes() - before).max(0.0))
    });
    node.shutdown();
    Measurement { seconds, bytes_per_process: Some(bytes), ..Default::default() }
}

/// One parent spawns four CPU-bound children per scheduler, each doing `n`
/// units of arithmetic (about 20 µs each) with a receive of its own message
/// between units: the time until all are done. `baseline_seconds` is the
/// same on a node with one scheduler, so `baseline_seconds / seconds` is
/// how the work scales over the schedulers (issue 10's target: ≥ 0.9 ×
/// the number of schedulers).
pub(crate) fn spawn_cpu(n: u64) -> Measurement {
    let workers = workers();
    let children = 4 * workers;
    let time_on = |workers: usize| {
        let node = Node::start(NodeConfig::new("bench").workers(workers)).expect("a node starts");
        let seconds = run(&node, move |mut p| async move {
            let me = p.self_pid();
            let start = Instant::now();
            for _ in 0..children {
                p.spawn(move |mut p| async move {
                    let mine = p.self_pid();
                    let mut x = 0u64;
                    for unit in 0..n {
                        for _ in 0..20_000 {
                            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(unit));
                        }
                        p.send(mine, &unit);
                        p.expect::<u64>().await?;
                    }
                    p.send(me, &x);
                    Ok::<(), molt::ReceiveError>(())
                });
            }
            for _ in 0..children {
                p.expect::<u64>().await.expect("a child's result");
            }
            start.elapsed().as_secs_f64()
        });
        node.shutdown();
        seconds
    };
    let one = time_on(1);
    Measurement { seconds: time_on(workers), baseline_seconds: Some(one), ..Default::default() }
}

/// Two ping-pong pairs per scheduler, all started by one parent, each pair
/// doing `n` round trips: the time until all are done.
pub(crate) fn parallel_pairs(n: u64) -> Measurement {
    let node = node();
    let pairs = 2 * workers();
    let seconds = run(&node, move |mut p| async move {
        let me = p.self_pid();
        let start = Instant::now();
        for _ in 0..pairs {
            let pong = p.spawn(move |mut p| async move {
                for _ in 0..n {
                    let (from, x): (Pid, u64) = p.expect().await?;
                    p.send(from, &x);
                }
                Ok::<(), molt::ReceiveError>(())
            });
            p.spawn(move |mut p| async move {
                let mine = p.self_pid();
                for x in 0..n {
                    p.send(pong, &(mine, x));
                    p.expect::<u64>().await?;
                }
                p.send(me, &());
                Ok::<(), molt::ReceiveError>(())
            });
        }
        for _ in 0..pairs {
            p.expect::<()>().await.expect("a pair finished");
        }
        start.elapsed().as_secs_f64()
    });
    node.shutdown();
    Measurement { seconds, ..Default::default() }
}

/// A token passed 100 times round a ring of `n` processes: the time for
/// all the hops.
pub(crate) fn ring(n: u64) -> Measurement {
    const LAPS: u64 = 100;
    let size = n;
    let node = node();
    let seconds = run(&node, move |mut p| async move {
        let me = p.self_pid();
        let ring: Vec<Pid> = (0..size)
            .map(|_| {
                p.spawn(move |mut p| async move {
                    let next: Pid = p.expect().await?;
                    loop {
                        let hops: u64 = p.expect().await?;
                        if hops == 0 {
                            p.send(me, &());
                        } else {
                            p.send(next, &(hops - 1));
                        }
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), molt::ReceiveError>(())
                })
            })
            .collect();
        for (i, pid) in ring.iter().enumerate() {
            p.send(*pid, &ring[(i + 1) % ring.len()]);
        }
        let start = Instant::now();
        p.send(ring[0], &(LAPS * size));
        p.expect::<()>().await.expect("the token came round");
        let seconds = start.elapsed().as_secs_f64();
        for pid in ring {
            p.kill(pid);
        }
        seconds
    });
    node.shutdown();
    Measurement { seconds, ..Default::default() }
}

/// `n` processes, each sending one message to every other: the time until
/// every one has its `n - 1` messages.
pub(crate) fn big_bang(n: u64) -> Measurement {
    let node = node();
    let seconds = run(&node, move |mut p| async move {
        let me = p.self_pid();
        let all: Vec<Pid> = (0..n)
            .map(|_| {
                p.spawn(move |mut p| async move {
                    let all: Vec<Pid> = p.expect().await?;
                    let mine = p.self_pid();
                    for other in all.iter().filter(|other| **other != mine) {
                        p.send(*other, &1u64);
                    }
                    for _ in 1..all.len() {
                        p.expect::<u64>().await?;
                    }
                    p.send(me, &());
                    Ok::<(), molt::ReceiveError>(())
                })
            })
            .collect();
        let start = Instant::now();
        for pid in &all {
            p.send(*pid, &all);
        }
        for _ in 0..n {
            p.expect::<()>().await.expect("every process got its messages");
        }
        start.elapsed().as_secs_f64()
    });
    node.shutdown();
    Measurement { seconds, ..Default::default() }
}

/// Fairness: two busy processes per scheduler that never wait (each feeds
/// itself), and `n` pings from another process to an echo: the 99th
/// percentile of the pings' round-trip times, in `seconds`.
pub(crate) fn fairness(n: u64) -> Measurement {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let node = node();
    let busy = 2 * workers();
    let seconds = run(&node, move |mut p| async move {
        let me = p.self_pid();
        let stop = Arc::new(AtomicBool::new(false));
        for _ in 0..busy {
            let stop = stop.clone();
            p.spawn(move |mut p| async move {
                let mine = p.self_pid();
                while !stop.load(Ordering::Relaxed) {
                    p.send(mine, &0u8);
                    p.expect::<u8>().await?;
                }
                Ok::<(), molt::ReceiveError>(())
            });
        }
        let echo = p.spawn(|mut p| async move {
            loop {
                let (from, x): (Pid, u64) = p.expect().await?;
                p.send(from, &x);
            }
            #[allow(unreachable_code)]
            Ok::<(), molt::ReceiveError>(())
        });
        let mut latencies = Vec::with_capacity(n as usize);
        for x in 0..n {
            let start = Instant::now();
            p.send(echo, &(me, x));
            p.expect::<u64>().await.expect("the echo");
            latencies.push(start.elapsed().as_secs_f64());
        }
        stop.store(true, Ordering::Relaxed);
        p.kill(echo);
        latencies.sort_by(f64::total_cmp);
        latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
    });
    node.shutdown();
    Measurement { seconds, ..Default::default() }
}
