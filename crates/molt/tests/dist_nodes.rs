//! Distribution between nodes in one test process, over 127.0.0.1:
//! remote pids work as local ones (send, link, monitor, exit, kill), with
//! the exact exit reasons crossing the wire; a lost connection fires
//! every link and monitor across it with `noconnection`; handshakes refuse
//! a wrong secret, garbage and silence, and the nodes go on.

mod support;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use molt::{
    ConnectError, Exit, ExitReason, Node, NodeConfig, NodeDown, NodeDownReason, Pid, Process, ReceiveError, Secret,
};
use support::dist::{dist_config, dist_node, echo, eventually, round_trip, watch};
use support::{BOUND, down_of, run, wait_forever};

/// A node with its own `secret`.
fn node_with_secret(name: &str, secret: &str) -> Node {
    Node::start(dist_config(name).secret(Secret::new(secret).unwrap())).expect("a distributed node starts")
}

/// Two connected nodes.
fn pair() -> (Node, Node) {
    let (a, b) = (dist_node("a"), dist_node("b"));
    a.connect(b.name()).expect("a connects to b");
    (a, b)
}

async fn exit_of(p: &mut Process, pid: Pid) -> ExitReason {
    p.receive_timeout(BOUND).on_if(move |e: &Exit| e.from == pid, |e| e.reason).await.expect("an Exit")
}

#[test]
fn a_node_that_listens_is_named_after_its_address_and_a_local_node_stays_local() {
    let a = dist_node("a");
    let (short, port) = a.name().split_once("@127.0.0.1:").expect("name@127.0.0.1:port");
    assert_eq!(short, "a");
    assert_ne!(port.parse::<u16>().unwrap(), 0, "port 0 picks a free port, which the name reports");
    let local = Node::start(NodeConfig::new("local").workers(1)).unwrap();
    assert_eq!(local.connect(a.name()), Err(ConnectError::NotDistributed));
    assert!(matches!(a.connect("no-at-sign"), Err(ConnectError::BadName(_))));
    let no_secret = Node::start(NodeConfig::new("x").listen("127.0.0.1:0")).map(|_| ()).unwrap_err();
    assert!(no_secret.to_string().contains("secret"), "{no_secret}");
    let named = Node::start(NodeConfig::new("x@y").listen("127.0.0.1:0").secret(Secret::new("s").unwrap()));
    assert!(named.is_err());
}

#[test]
fn messages_to_a_process_of_another_node_arrive_once_and_in_order_both_ways() {
    let (a, b) = pair();
    let remote = b.spawn(echo);
    let back = run(&a, move |mut p| async move {
        let me = p.self_pid();
        for n in 0..10_000u64 {
            p.send(remote, &(me, n));
        }
        let mut back = Vec::new();
        for _ in 0..10_000 {
            back.push(p.expect_timeout::<u64>(BOUND).await.expect("an echo"));
        }
        back
    })
    .unwrap();
    assert_eq!(back, (0..10_000).collect::<Vec<u64>>());
    assert_eq!(a.nodes().len(), 1);
    assert!(a.nodes()[0].connected);
    assert_eq!(a.nodes()[0].name, b.name());
    assert_eq!(b.nodes()[0].name, a.name(), "the accepting side lists the connection too");
    // Each side has timed a ping's round trip (one goes as the connection
    // opens), and it is within the bound of a loopback connection.
    for node in [&a, &b] {
        eventually("a round trip is timed", || node.nodes()[0].round_trip.is_some());
        let timed = node.nodes()[0].round_trip.unwrap();
        assert!(timed > Duration::ZERO && timed < BOUND, "{timed:?}");
    }
}

#[test]
fn a_link_and_a_monitor_across_nodes_fire_with_the_exact_reason() {
    let (a, b) = pair();
    let remote = b.spawn(|mut p| async move {
        let _ = p.expect::<u64>().await;
        ExitReason::error("boom")
    });
    let (exit, down) = run(&a, move |mut p| async move {
        p.trap_exit(true);
        p.link(remote);
        p.monitor(remote);
        // Behind the link and the monitor on the same connection.
        p.send(remote, &1u64);
        (exit_of(&mut p, remote).await, down_of(&mut p, remote).await)
    })
    .unwrap();
    assert_eq!(exit, ExitReason::Error("boom".into()));
    assert_eq!(down, ExitReason::Error("boom".into()));
}

/// What a process sends to another node, small messages (which its
/// scheduler writes itself while the connection's writer is idle), big
/// ones (which go in parts through the writer) and its exit, arrives in
/// the order it was sent, whether it sent in one turn or across many.
#[test]
fn a_processs_small_and_big_messages_and_its_exit_arrive_in_the_order_sent() {
    const ROUNDS: u64 = 60;
    const SMALL: u64 = 20;
    const BIG: usize = 200 << 10;
    enum Got {
        Message(u64, usize, bool),
        Exit(Pid, ExitReason),
    }
    let (a, b) = pair();
    let (tell, told) = std::sync::mpsc::channel();
    let receiver = b.spawn(move |mut p| async move {
        p.trap_exit(true);
        loop {
            let got = p
                .receive_timeout(BOUND)
                .on(|(n, bytes): (u64, Vec<u8>)| Got::Message(n, bytes.len(), bytes.iter().all(|&b| b == n as u8)))
                .on(|exit: Exit| Got::Exit(exit.from, exit.reason))
                .await
                .expect("a message or the exit");
            let last = matches!(got, Got::Exit(..));
            let _ = tell.send(got);
            if last {
                return;
            }
        }
    });
    let sender = a.spawn(move |mut p| async move {
        p.link(receiver);
        let mut n: u64 = 0;
        for round in 0..ROUNDS {
            for k in 0..SMALL {
                // A big one in the middle of every third round.
                let len = if round % 3 == 0 && k == SMALL / 2 { BIG } else { 8 };
                p.send(receiver, &(n, vec![n as u8; len]));
                n += 1;
            }
            // Every other round ends the turn: the next starts with the
            // connection's writer idle.
            if round % 2 == 0 {
                p.sleep(Duration::ZERO).await;
            }
        }
        ExitReason::error("done")
    });
    let mut expected = 0;
    loop {
        match told.recv_timeout(BOUND).expect("the receiver reports") {
            Got::Message(n, len, intact) => {
                assert_eq!(n, expected, "in the order sent");
                assert!(intact, "message {n} arrives intact");
                let round = n / SMALL;
                let big = round.is_multiple_of(3) && n % SMALL == SMALL / 2;
                assert_eq!(len, if big { BIG } else { 8 }, "message {n}");
                expected += 1;
            }
            Got::Exit(from, reason) => {
                assert_eq!((from, reason), (sender, ExitReason::Error("done".into())));
                break;
            }
        }
    }
    assert_eq!(expected, ROUNDS * SMALL, "every message before the exit");
}

/// A process that sends to another node and then keeps its scheduler
/// without yielding (here a blocking sleep) does not hold its message for
/// as long: the watchdog writes it, or, on a node without one, the
/// connection's writer does (heartbeats, which would too, are minutes
/// apart here). The pings that open the connection are answered first,
/// and a round trip leaves it idle, as it is between messages: nothing
/// else wakes the writer. The second node's sender blocks while the first's does.
#[test]
fn a_message_of_a_process_that_does_not_yield_goes_out_anyway() {
    let mut blocked = Vec::new();
    for long_schedule in [Duration::from_millis(50), Duration::ZERO] {
        let config = |name| dist_config(name).detection(Duration::from_secs(240)).long_schedule(long_schedule);
        let (a, b) = (Node::start(config("a")).unwrap(), Node::start(config("b")).unwrap());
        a.connect(b.name()).unwrap();
        for node in [&a, &b] {
            eventually("the opening ping is answered", || node.nodes()[0].round_trip.is_some());
        }
        let (tell, told) = std::sync::mpsc::channel();
        let receiver = b.spawn(move |mut p| async move {
            let (from, n): (Pid, u64) = p.expect().await?;
            p.send(from, &n);
            let (_, n): (Pid, u64) = p.expect().await?;
            let _ = tell.send(n);
            Ok::<(), ReceiveError>(())
        });
        let (done, finished) = std::sync::mpsc::channel();
        a.spawn(move |mut p| async move {
            let me = p.self_pid();
            p.send(receiver, &(me, 1u64));
            let _: u64 = p.expect().await?;
            p.send(receiver, &(me, 7u64));
            // Long past the bound below; the blocked turn ends only then.
            std::thread::sleep(Duration::from_secs(3));
            let _ = done.send(());
            Ok::<(), ReceiveError>(())
        });
        let written = told.recv_timeout(Duration::from_millis(1500));
        assert_eq!(written, Ok(7), "written before the turn ends (long_schedule {long_schedule:?})");
        assert!(finished.try_recv().is_err(), "the sender was still blocked");
        // The next node's sender blocks meanwhile.
        blocked.push((finished, a, b));
    }
    for (finished, ..) in &blocked {
        finished.recv_timeout(BOUND).unwrap();
    }
}

/// The hog's order: hold the scheduler thread this long without yielding,
/// then say so.
#[derive(serde::Serialize, serde::Deserialize, molt::Message)]
#[message(name = "test.Hold")]
struct Hold(Pid, u64);

/// An echo that, told to [`Hold`], holds its scheduler thread.
async fn hog(mut p: Process) -> Result<(), ReceiveError> {
    loop {
        let order = p.receive().on(|(from, n): (Pid, u64)| Ok((from, n))).on(|Hold(from, ms)| Err((from, ms)));
        match order.await? {
            Ok((from, n)) => p.send(from, &n),
            Err((from, ms)) => {
                std::thread::sleep(Duration::from_millis(ms));
                p.send(from, &true);
            }
        }
    }
}

/// Two connected nodes with a heartbeat bound of `detection` and a
/// watchdog that looks every 25 ms: `a` with two schedulers, `b` with
/// `b_workers`.
fn watched_pair(detection: Duration, b_workers: usize) -> (Node, Node) {
    let config = |name, workers| {
        dist_config(name).workers(workers).detection(detection).long_schedule(Duration::from_millis(50))
    };
    let (a, b) = (Node::start(config("a", 2)).unwrap(), Node::start(config("b", b_workers)).unwrap());
    a.connect(b.name()).unwrap();
    (a, b)
}

/// Both nodes still know each other, connected all along.
fn still_connected(a: &Node, b: &Node) {
    for node in [a, b] {
        let info = node.nodes();
        assert!(info.len() == 1 && info[0].connected && info[0].reconnects == 0, "still connected: {info:?}");
    }
}

#[test]
fn a_scheduler_stuck_in_a_poll_does_not_stop_its_node_reading() {
    // b's schedulers read its socket: the one that runs the echo the
    // messages go to. That echo then holds its thread for twice the
    // detection bound; the watchdog (every 25 ms) gives the socket back to
    // the I/O thread, and round trips with an echo on b's other scheduler
    // go on meanwhile, the connection up all along.
    let detection = Duration::from_millis(400);
    let (a, b) = watched_pair(detection, 2);
    // Spawned from outside, one after the other: on b's two schedulers.
    let hog = b.spawn(hog);
    let other = b.spawn(echo);
    let (during, answers) = run(&a, move |mut p| async move {
        let me = p.self_pid();
        // The socket goes to the hog's scheduler (it follows the messages).
        for n in 0..50u64 {
            p.send(hog, &(me, n));
            assert_eq!(p.expect_timeout::<u64>(BOUND).await, Ok(n));
        }
        p.send(hog, &Hold(me, 2 * detection.as_millis() as u64));
        let (mut during, mut answers, mut n) = (0u64, Vec::new(), 0u64);
        loop {
            p.send(other, &(me, n));
            // Well within the bound of the round trips before, and past
            // the detection bound: without the hand-back, b gives a up.
            let answer = p.receive_timeout(Duration::from_secs(5)).on(|n: u64| Some(n)).on(|_: bool| None).await;
            match answer {
                Ok(Some(back)) => {
                    answers.push(back);
                    during += 1;
                }
                // The hog is done: the round trip in flight comes after.
                Ok(None) => {
                    answers.push(p.expect_timeout::<u64>(BOUND).await.expect("the last answer"));
                    break;
                }
                Err(e) => panic!("round trip {n} while b's other scheduler is held: {e:?}"),
            }
            n += 1;
        }
        (during, answers)
    })
    .unwrap();
    assert_eq!(answers, (0..answers.len() as u64).collect::<Vec<_>>(), "every answer once, in order");
    // Without the watchdog's hand-back b reads nothing while its reading
    // scheduler is held: no round trip completes, and the heartbeat bound
    // passes.
    assert!(during >= 10, "only {during} round trips while a scheduler of b was held");
    still_connected(&a, &b);
}

#[test]
fn a_scheduler_asleep_since_before_any_socket_rescues_one_held_in_a_poll() {
    // b's second scheduler runs an echo spawned before the nodes connect
    // and sleeps from then on, while no scheduler of b read a socket. The
    // I/O thread hands the socket to the first scheduler, whose echo,
    // after a pause longer than idle schedulers watch a sibling they saw
    // busy (100 ms), holds it for 2 s: under the heartbeat bound (4 s), far
    // under the watchdog's look (30 s). Only the sleeping scheduler can see
    // the held poll and give the socket back to the I/O thread, so that
    // round trips with its echo go on meanwhile: the sibling wakes it as
    // it starts running after the pause. (It used to sleep on with no
    // bound: a 64 MiB message made in one poll kept a pong unread for
    // 100 ms.)
    let config = |name| dist_config(name).workers(2).long_schedule(Duration::from_secs(60));
    let (a, b) = (Node::start(config("a")).unwrap(), Node::start(config("b")).unwrap());
    let (holding, is_holding) = std::sync::mpsc::channel();
    let released = Arc::new(AtomicBool::new(false));
    let free = Arc::clone(&released);
    // Spawned from outside, one after the other: on b's two schedulers.
    let holder = b.spawn(move |mut p| async move {
        // An echo until told to hold.
        while let Some((from, n)) = p.receive().on(|(from, n): (Pid, u64)| Some((from, n))).on(|_: bool| None).await? {
            p.send(from, &n);
        }
        // Not a synchronisation: the sibling stops watching meanwhile.
        p.sleep(Duration::from_millis(300)).await;
        let _ = holding.send(());
        std::thread::sleep(Duration::from_secs(2));
        free.store(true, Ordering::SeqCst);
        Ok::<(), ReceiveError>(())
    });
    let other = b.spawn(echo);
    a.connect(b.name()).unwrap();
    // Round trips with the holder: b reads on its scheduler (no other
    // scheduler of b wakes).
    run(&a, move |mut p| async move {
        let me = p.self_pid();
        for n in 0..50u64 {
            p.send(holder, &(me, n));
            assert_eq!(p.expect_timeout::<u64>(BOUND).await, Ok(n));
        }
        p.send(holder, &true);
    })
    .unwrap();
    is_holding.recv_timeout(BOUND).expect("the holder holds its scheduler");
    let (during, answers) = run(&a, move |mut p| async move {
        let me = p.self_pid();
        let (mut during, mut answers) = (0u64, Vec::new());
        for n in 0u64.. {
            p.send(other, &(me, n));
            answers.push(p.expect_timeout::<u64>(Duration::from_secs(5)).await.expect("an answer"));
            if released.load(Ordering::SeqCst) {
                break;
            }
            during += 1;
        }
        (during, answers)
    })
    .unwrap();
    assert_eq!(answers, (0..answers.len() as u64).collect::<Vec<_>>(), "every answer once, in order");
    // Unrescued, b reads nothing until the hold ends: no round trip
    // completes during it.
    assert!(during >= 10, "only {during} round trips while b's reading scheduler was held");
    still_connected(&a, &b);
}

#[test]
fn a_node_whose_only_scheduler_is_held_reads_on_and_keeps_its_connection() {
    // b has one scheduler, and a process holds it for twice the detection
    // bound: its I/O thread reads meanwhile (no scheduler can), and once
    // the scheduler is free it reads again, the heartbeat bound counting
    // from the I/O thread's last read, not from the scheduler's.
    let detection = Duration::from_millis(300);
    let (a, b) = watched_pair(detection, 1);
    let hog = b.spawn(hog);
    let answers = run(&a, move |mut p| async move {
        let me = p.self_pid();
        let mut answers = Vec::new();
        for n in 0..20u64 {
            p.send(hog, &(me, n));
            answers.push(p.expect_timeout::<u64>(BOUND).await.expect("an answer before"));
        }
        p.send(hog, &Hold(me, 2 * detection.as_millis() as u64));
        assert_eq!(p.expect_timeout::<bool>(BOUND).await, Ok(true));
        // Past another detection bound, the scheduler reading again.
        for n in 20..200u64 {
            p.send(hog, &(me, n));
            answers.push(p.expect_timeout::<u64>(Duration::from_secs(5)).await.expect("an answer after"));
        }
        answers
    })
    .unwrap();
    assert_eq!(answers, (0..200).collect::<Vec<_>>());
    still_connected(&a, &b);
}

#[test]
fn a_busy_scheduler_that_reads_a_socket_keeps_its_connection() {
    // b's only scheduler reads its socket and runs two processes whose
    // polls take 15 ms each for 1.8 s: the scheduler looks at its sockets only
    // every 61 polls (longer than the 300 ms detection bound), and neither
    // the watchdog nor an idle sibling sees one poll twice. When the bound
    // passes, the I/O thread takes the socket back and finds the peer's
    // pings there: the connection stays up, and round trips go on.
    let detection = Duration::from_millis(300);
    let (a, b) = watched_pair(detection, 1);
    let echo = b.spawn(echo);
    // Two of them: the scheduler always has one to run, and never idles
    // (an idle one would look at its sockets).
    let busy = || {
        b.spawn(|mut p| async move {
            let from: Pid = p.expect().await?;
            for _ in 0..60 {
                std::thread::sleep(Duration::from_millis(15));
                // Yields (a sleep already due would not).
                p.sleep(Duration::from_micros(100)).await;
            }
            p.send(from, &true);
            Ok::<(), ReceiveError>(())
        })
    };
    let (busy, other) = (busy(), busy());
    let answers = run(&a, move |mut p| async move {
        let me = p.self_pid();
        let mut answers = Vec::new();
        for n in 0..20u64 {
            p.send(echo, &(me, n));
            answers.push(p.expect_timeout::<u64>(BOUND).await.expect("an answer before"));
        }
        p.send(busy, &me);
        p.send(other, &me);
        let mut n = 20u64;
        loop {
            p.send(echo, &(me, n));
            let answer = p.receive_timeout(Duration::from_secs(5)).on(|n: u64| Some(n)).on(|_: bool| None).await;
            match answer {
                Ok(Some(back)) => answers.push(back),
                Ok(None) => {
                    answers.push(p.expect_timeout::<u64>(Duration::from_secs(5)).await.expect("the last answer"));
                    break;
                }
                Err(e) => panic!("round trip {n} while b's scheduler is busy: {e:?}"),
            }
            n += 1;
        }
        answers
    })
    .unwrap();
    assert_eq!(answers, (0..answers.len() as u64).collect::<Vec<_>>(), "every answer once, in order");
    still_connected(&a, &b);
}

#[test]
fn a_remote_process_linked_to_a_local_one_goes_down_with_it() {
    let (a, b) = pair();
    let remote = b.spawn(wait_forever);
    let down = watch(&b, remote);
    a.spawn(move |p| async move {
        p.link(remote);
        ExitReason::error("local failure")
    });
    assert_eq!(down.recv_timeout(BOUND).unwrap(), ExitReason::Error("local failure".into()));
}

#[test]
fn exit_and_kill_reach_processes_of_another_node() {
    let (a, b) = pair();
    let killed = b.spawn(wait_forever);
    let stopped = b.spawn(wait_forever);
    let trapping = b.spawn(|mut p| async move {
        p.trap_exit(true);
        let exit: Exit = p.expect().await?;
        let (to, _): (Pid, u64) = p.expect().await?;
        p.send(to, &exit);
        Ok::<(), ReceiveError>(())
    });
    let (killed_reason, stopped_reason, trapped) = run(&a, move |mut p| async move {
        p.monitor(killed);
        p.monitor(stopped);
        p.kill(killed);
        p.exit(stopped, ExitReason::error("told to stop"));
        p.exit(trapping, ExitReason::Shutdown);
        p.send(trapping, &(p.self_pid(), 0u64));
        let trapped: Exit = p.expect_timeout(BOUND).await.unwrap();
        (down_of(&mut p, killed).await, down_of(&mut p, stopped).await, trapped)
    })
    .unwrap();
    assert_eq!(killed_reason, ExitReason::Killed);
    assert_eq!(stopped_reason, ExitReason::Error("told to stop".into()));
    assert_eq!(trapped.reason, ExitReason::Shutdown);
    assert_eq!(trapped.from.node, a.id(), "the exit names its sender, a process of the other node");
}

#[test]
fn a_link_or_monitor_to_a_remote_process_that_is_gone_answers_noproc() {
    let (a, b) = pair();
    let gone = b.spawn(|_| async {});
    eventually("the remote process ends", || b.process_count() == 0);
    let (exit, down) = run(&a, move |mut p| async move {
        p.trap_exit(true);
        p.link(gone);
        p.monitor(gone);
        (exit_of(&mut p, gone).await, down_of(&mut p, gone).await)
    })
    .unwrap();
    assert_eq!(exit, ExitReason::Noproc);
    assert_eq!(down, ExitReason::Noproc);
}

#[test]
fn a_monitor_on_a_process_of_a_node_never_connected_fires_noconnection_at_once() {
    let a = dist_node("a");
    let stranger = Pid { node: molt::NodeId::from_name("nobody@127.0.0.1:1"), creation: 1, serial: 7 };
    let down = run(&a, move |mut p| async move {
        p.monitor(stranger);
        down_of(&mut p, stranger).await
    })
    .unwrap();
    assert!(matches!(down, ExitReason::NoConnection { why: NodeDownReason::Unreachable(_), .. }), "{down:?}");
}

#[test]
fn a_lost_connection_fires_every_link_and_monitor_across_it_on_both_sides() {
    let (a, b) = pair();
    let on_b = b.spawn(wait_forever);
    let on_a = a.spawn(wait_forever);
    // A watcher on each side, each linked to and monitoring the other
    // side's process, reporting to a host channel.
    let (tell, told) = std::sync::mpsc::channel();
    for (node, target) in [(&a, on_b), (&b, on_a)] {
        let tell = tell.clone();
        let (ready, is_ready) = std::sync::mpsc::channel();
        node.spawn(move |mut p| async move {
            p.trap_exit(true);
            p.link(target);
            p.monitor(target);
            let _ = ready.send(());
            let exit = exit_of(&mut p, target).await;
            let down = down_of(&mut p, target).await;
            let _ = tell.send((target, exit, down));
            Ok::<(), ReceiveError>(())
        });
        is_ready.recv_timeout(BOUND).unwrap();
    }
    // A local monitor on each target.
    let (on_a_ended, on_b_ended) = (watch(&a, on_a), watch(&b, on_b));
    // Both sides hold the relations before the cut.
    eventually("the remote relations are in place", || {
        let linked = |node: &Node, pid: Pid| {
            node.processes().iter().find(|info| info.pid == pid).is_some_and(|info| info.links.len() == 1)
        };
        linked(&a, on_a) && linked(&b, on_b)
    });
    eventually("b acknowledged every signal", || a.nodes()[0].queued == 0);
    assert!(a.disconnect(b.name()));
    let mut seen = [told.recv_timeout(BOUND).unwrap(), told.recv_timeout(BOUND).unwrap()];
    seen.sort_by_key(|(target, _, _)| *target != on_b);
    let on_a_side = ExitReason::NoConnection { node: b.name().to_owned(), why: NodeDownReason::Disconnected };
    let on_b_side = ExitReason::NoConnection { node: a.name().to_owned(), why: NodeDownReason::Disconnected };
    assert_eq!(seen[0], (on_b, on_a_side.clone(), on_a_side.clone()));
    assert_eq!(seen[1], (on_a, on_b_side.clone(), on_b_side.clone()));
    // The targets, linked across the cut and not trapping exits, end with
    // the same reason (Erlang's `noconnection`).
    assert_eq!(on_a_ended.recv_timeout(BOUND).unwrap(), on_a_side);
    assert_eq!(on_b_ended.recv_timeout(BOUND).unwrap(), on_b_side);
    assert!(a.nodes().is_empty());
    eventually("b sees the connection gone", || b.nodes().is_empty());
}

#[test]
fn a_wrong_secret_is_refused_by_name_and_both_nodes_go_on() {
    let a = node_with_secret("a", "right");
    let stranger = node_with_secret("s", "wrong");
    let error = stranger.connect(a.name()).unwrap_err();
    assert!(error.to_string().contains("authentication failed"), "{error}");
    assert!(stranger.nodes().is_empty());
    eventually("a counts the refusal", || a.dist_counts().1 >= 1);
    assert!(a.nodes().is_empty());
    // Both go on: a connects to a node with the right secret.
    let b = node_with_secret("b", "right");
    b.connect(a.name()).unwrap();
    assert_eq!(round_trip(&b, &a, 42), Ok(Ok(42)));
}

#[test]
fn garbage_and_silence_at_the_door_are_refused_and_counted() {
    let a = dist_node("a");
    let address = a.name().split_once('@').unwrap().1.to_owned();
    // Garbage: a length prefix and bytes that are no hello.
    let mut garbage = std::net::TcpStream::connect(&address).unwrap();
    garbage.write_all(&[0, 0, 0, 5, 0xff, 0xfe, 0xfd, 0xfc, 0xfb]).unwrap();
    // An oversized length prefix.
    let mut huge = std::net::TcpStream::connect(&address).unwrap();
    huge.write_all(&[0x7f, 0xff, 0xff, 0xff]).unwrap();
    // Silence: a peer that connects and says nothing (the deadline is
    // 500 ms here).
    let silent = std::net::TcpStream::connect(&address).unwrap();
    eventually("the three are refused", || a.dist_counts().1 >= 3);
    drop((garbage, huge, silent));
    // The node goes on.
    let b = dist_node("b");
    b.connect(a.name()).unwrap();
    assert_eq!(a.nodes().len(), 1);
}

#[test]
fn simultaneous_connects_from_both_sides_end_with_one_connection() {
    for _ in 0..10 {
        let (a, b) = (dist_node("a"), dist_node("b"));
        let (first, second) = std::thread::scope(|scope| {
            let first = scope.spawn(|| a.connect(b.name()));
            let second = scope.spawn(|| b.connect(a.name()));
            (first.join().unwrap(), second.join().unwrap())
        });
        assert_eq!((first, second), (Ok(()), Ok(())));
        let names = |node: &Node| node.nodes().into_iter().map(|peer| (peer.name, peer.connected)).collect::<Vec<_>>();
        eventually("both sides list the one connection", || {
            names(&a) == vec![(b.name().to_owned(), true)] && names(&b) == vec![(a.name().to_owned(), true)]
        });
        assert_eq!(round_trip(&a, &b, 7), Ok(Ok(7)));
    }
}

#[test]
fn a_node_shutting_down_ends_its_processes_and_tells_its_peers() {
    let (a, b) = pair();
    let on_b = b.spawn(wait_forever);
    let down = watch(&a, on_b);
    eventually("b holds the monitor", || {
        b.processes().iter().find(|info| info.pid == on_b).is_some_and(|info| info.monitored_by == 1)
    });
    b.shutdown();
    // The process's own exit crosses before the goodbye: the monitor
    // reports why the process ended, not the connection.
    assert_eq!(down.recv_timeout(BOUND).unwrap(), ExitReason::Shutdown);
    eventually("a lets b go", || a.nodes().is_empty());
}

#[test]
fn a_name_on_another_node_is_looked_up_and_sent_to_and_its_first_use_connects() {
    let (a, b) = (dist_node("a"), dist_node("b"));
    let echo_on_b = b.spawn(echo);
    run(&b, move |p| async move { p.register("echo", echo_on_b) }).unwrap().unwrap();
    let local = a.spawn(wait_forever);
    run(&a, move |p| async move { p.register("here", local) }).unwrap().unwrap();
    let (b_name, a_name) = (b.name().to_owned(), a.name().to_owned());
    let answers = run(&a, move |mut p| async move {
        // Not connected yet: the lookup connects.
        let found = p.whereis_on(&b_name, "echo").await;
        let nobody = p.whereis_on(&b_name, "nobody").await;
        let own = p.whereis_on(&a_name, "here").await;
        let nowhere = p.whereis_on("z@127.0.0.1:1", "echo").await;
        p.nsend_on(&b_name, "echo", &(p.self_pid(), 5u64));
        // To nobody: dropped there, as Erlang's `{Name, Node} ! Msg`.
        p.nsend_on(&b_name, "nobody", &(p.self_pid(), 6u64));
        p.nsend_on(&b_name, "echo", &(p.self_pid(), 7u64));
        let echoed = [p.expect_timeout::<u64>(BOUND).await, p.expect_timeout::<u64>(BOUND).await];
        (found, nobody, own, nowhere, echoed)
    })
    .unwrap();
    let (found, nobody, own, nowhere, echoed) = answers;
    assert_eq!(found, Ok(Some(echo_on_b)));
    assert_eq!(nobody, Ok(None));
    assert_eq!(own, Ok(Some(local)));
    assert!(matches!(nowhere, Err(NodeDownReason::Unreachable(_))), "{nowhere:?}");
    assert_eq!(echoed, [Ok(5), Ok(7)]);
    assert_eq!(a.nodes().iter().map(|peer| peer.name.as_str()).collect::<Vec<_>>(), [b.name()]);
    // A node that is not distributed answers for itself only.
    let alone = Node::start(NodeConfig::new("alone").workers(1)).unwrap();
    let b_name = b.name().to_owned();
    let lonely = run(&alone, move |mut p| async move { p.whereis_on(&b_name, "echo").await }).unwrap();
    assert!(matches!(lonely, Err(NodeDownReason::Unreachable(_))), "{lonely:?}");
}

#[test]
fn a_node_monitor_fires_once_per_monitor_with_the_reason() {
    let (a, b) = pair();
    let (b_name, a_name) = (b.name().to_owned(), a.name().to_owned());
    let (ready, is_ready) = std::sync::mpsc::channel();
    let (tell, told) = std::sync::mpsc::channel();
    a.spawn(move |mut p| async move {
        // Three monitors, one taken back; one of a node that is not there,
        // which fires at once; one of this node, which never does.
        p.monitor_node(&b_name);
        p.monitor_node(&b_name);
        p.monitor_node(&b_name);
        let taken_back = p.demonitor_node(&b_name);
        p.monitor_node("z@127.0.0.1:1");
        p.monitor_node(&a_name);
        let at_once = p.expect_timeout::<NodeDown>(BOUND).await;
        let _ = ready.send(());
        let mut downs = vec![p.expect_timeout::<NodeDown>(BOUND).await, p.expect_timeout::<NodeDown>(BOUND).await];
        // A node's monitors fire together: nothing more is queued.
        downs.push(p.expect_timeout::<NodeDown>(Duration::ZERO).await);
        let _ = tell.send((taken_back, at_once, downs, p.demonitor_node(&b_name), p.demonitor_node(&a_name)));
    });
    is_ready.recv_timeout(BOUND).unwrap();
    assert!(a.disconnect(b.name()));
    let (taken_back, at_once, downs, b_left, a_left) = told.recv_timeout(BOUND).unwrap();
    assert!(taken_back);
    let at_once = at_once.unwrap();
    assert_eq!(at_once.node, "z@127.0.0.1:1");
    assert!(matches!(at_once.reason, NodeDownReason::Unreachable(_)), "{at_once:?}");
    let down = NodeDown { node: b.name().to_owned(), reason: NodeDownReason::Disconnected };
    assert_eq!(downs, [Ok(down.clone()), Ok(down), Err(ReceiveError::Timeout { after: Duration::ZERO })]);
    // The fired monitors are gone; the monitor of its own node stays.
    assert_eq!((b_left, a_left), (false, true));
}

#[test]
fn a_timer_aimed_at_a_process_of_another_node_sends_when_it_fires() {
    let (a, b) = pair();
    let (tell, told) = std::sync::mpsc::channel();
    let remote = b.spawn(move |mut p| async move {
        let n: u64 = p.expect().await?;
        let _ = tell.send(n);
        Ok::<(), ReceiveError>(())
    });
    let fired = run(&a, move |p| async move {
        // One cancelled before it fires, one that fires.
        let cancelled = p.send_after(Duration::from_secs(600), remote, &1u64);
        p.send_after(Duration::from_millis(1), remote, &2u64);
        p.cancel_timer(cancelled).is_some()
    });
    assert_eq!(fired, Ok(true), "the first timer was pending, and is cancelled");
    assert_eq!(told.recv_timeout(BOUND), Ok(2));
}

#[test]
fn a_pid_of_a_third_node_passed_on_in_a_message_is_reached_by_its_name() {
    // a knows b, b knows c; a never names c.
    let (a, b, c) = (dist_node("a"), dist_node("b"), dist_node("c"));
    a.connect(b.name()).expect("a connects to b");
    b.connect(c.name()).expect("b connects to c");
    let on_c = c.spawn(echo);
    let on_c_watched = c.spawn(wait_forever);
    // b hands c's pids to a process of a.
    let (tell, told) = std::sync::mpsc::channel();
    let (tell_exit, told_exit) = std::sync::mpsc::channel();
    let on_a = a.spawn(move |mut p| async move {
        let (echo, watched): (Pid, Pid) = p.expect().await?;
        // A message to a pid of c connects a to c, and comes back.
        p.send(echo, &(p.self_pid(), 7u64));
        let back: u64 = p.expect_timeout(BOUND).await?;
        // A link to one: it fires with the exact reason when it is killed.
        p.trap_exit(true);
        p.link(watched);
        let _ = tell.send(back);
        let _ = tell_exit.send(exit_of(&mut p, watched).await);
        Ok::<(), ReceiveError>(())
    });
    run(&b, move |p| async move { p.send(on_a, &(on_c, on_c_watched)) }).unwrap();
    assert_eq!(told.recv_timeout(BOUND), Ok(7));
    assert!(a.nodes().iter().any(|peer| peer.name == c.name() && peer.connected), "a connected to c");
    run(&a, move |p| async move { p.kill(on_c_watched) }).unwrap();
    assert_eq!(told_exit.recv_timeout(BOUND), Ok(ExitReason::Killed));
    // A pid of a node nobody told of stays unreachable, and says so.
    let stranger = Pid { node: molt::NodeId(12345), creation: 1, serial: 1 };
    let down = run(&a, move |mut p| async move {
        p.monitor(stranger);
        down_of(&mut p, stranger).await
    });
    assert!(matches!(down, Ok(ExitReason::NoConnection { .. })), "{down:?}");
}
