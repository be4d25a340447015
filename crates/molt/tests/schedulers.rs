//! Schedulers (issue 10): busy processes spread over every scheduler thread
//! whoever spawned them, and a process that moves keeps everything it had.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use molt::{Down, ExitReason, Pid, ReceiveError};
use support::child::in_child;
use support::{A, B, node, run};

/// About fifty microseconds of arithmetic in a debug build.
fn work(seed: u64) -> u64 {
    let mut x = seed;
    for _ in 0..4000 {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407));
    }
    x
}

/// The name of the scheduler thread running the caller.
fn thread() -> String {
    std::thread::current().name().unwrap_or("?").to_owned()
}

/// Runs `units` units of work, each followed by a receive of a message it
/// sent itself (so it never waits): a process that always has work. Returns
/// the threads it ran on.
async fn busy(p: &mut molt::Process, units: u32) -> Result<BTreeSet<String>, ReceiveError> {
    let me = p.self_pid();
    let mut threads = BTreeSet::new();
    for unit in 0..units {
        std::hint::black_box(work(u64::from(unit)));
        threads.insert(thread());
        p.send(me, &B(unit));
        assert_eq!(p.expect::<B>().await?, B(unit));
    }
    Ok(threads)
}

/// A process that answers every `(from, n)` with `n`.
fn spawn_echo(node: &molt::Node) -> Pid {
    node.spawn(|mut p| async move {
        loop {
            let (from, n) = p.expect::<(Pid, u32)>().await?;
            p.send(from, &n);
        }
        #[allow(unreachable_code)]
        Ok::<(), ReceiveError>(())
    })
}

/// One parent spawns four busy children per scheduler: their work runs on
/// every scheduler thread, not only the parent's (where they all start).
#[test]
fn busy_children_of_one_parent_spread_over_every_scheduler() {
    let node = node("schedulers");
    const CHILDREN: usize = 8;
    let threads = run(&node, |mut p| async move {
        let me = p.self_pid();
        for _ in 0..CHILDREN {
            p.spawn(move |mut p| async move {
                let threads = busy(&mut p, 400).await?;
                p.send(me, &threads.into_iter().collect::<Vec<String>>());
                Ok::<(), ReceiveError>(())
            });
        }
        let mut all = BTreeSet::new();
        let mut moved = 0;
        for _ in 0..CHILDREN {
            let threads = p.expect::<Vec<String>>().await?;
            moved += usize::from(threads.len() > 1);
            all.extend(threads);
        }
        Ok::<_, ReceiveError>((all, moved))
    })
    .unwrap()
    .unwrap();
    let (all, moved) = threads;
    assert_eq!(all.len(), 2, "the children's work ran on {all:?} only");
    assert!(moved >= 1, "no child moved");
}

/// A process queued behind one that runs long without ever waiting (here
/// a stream of sends) is taken by the idle scheduler and runs there, while
/// the long one still runs: no scheduler idles while another has a queue.
/// Without the taking, the queued process could only run once the long one
/// yields, which it does only after the queued one has run: the bound
/// below fails.
#[test]
fn a_process_queued_behind_a_long_poll_is_taken_by_the_idle_scheduler() {
    let node = node("stealing");
    let outcome = run(&node, |p| async move {
        let me = p.self_pid();
        let ran = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        // Spawned by this process: queued on its scheduler, behind it.
        p.spawn({
            let ran = ran.clone();
            move |_p| async move {
                *ran.lock().unwrap() = Some(thread());
            }
        });
        // A pid no process has: each send is dropped, so the stream keeps
        // nothing while it runs.
        let nobody = Pid { serial: u64::MAX, ..me };
        let deadline = std::time::Instant::now() + support::BOUND;
        let mut sent = 0u64;
        loop {
            if let Some(there) = ran.lock().unwrap().clone() {
                return Ok((thread(), there, sent));
            }
            if std::time::Instant::now() > deadline {
                return Err(sent);
            }
            p.send(nobody, &sent);
            sent += 1;
        }
    })
    .unwrap();
    let (here, there, _) = outcome.unwrap_or_else(|sent| panic!("the queued process never ran ({sent} sends)"));
    assert_ne!(here, there, "the queued process ran on the long one's own thread");
}

/// Four ping-pong pairs started by one parent on a two-scheduler node (the
/// `parallel_pairs` workload): they start on the parent's scheduler, where
/// two or more wait in its queue while the other scheduler idles, so some
/// are handed over — each with the process it talks to. Over their last
/// thousand rounds, the pairs ran on both schedulers, and each pair's two
/// processes shared a thread (a round in which a move falls between the
/// reply and its receipt may see two; a split pair sees two in every
/// round). Without the handing over, every pair stays on one thread;
/// without the partners, pairs are split.
#[test]
fn pairs_that_talk_spread_over_the_schedulers_together() {
    const PAIRS: usize = 4;
    const ROUNDS: u64 = 20_000;
    const LAST: u64 = 1_000;
    let node = node("pairs");
    let ends = run(&node, |mut p| async move {
        let me = p.self_pid();
        for _ in 0..PAIRS {
            let pong = p.spawn(|mut p| async move {
                loop {
                    let (from, x): (Pid, u64) = p.expect().await?;
                    p.send(from, &(x, thread()));
                }
                #[allow(unreachable_code)]
                Ok::<(), ReceiveError>(())
            });
            p.spawn(move |mut p| async move {
                let mine = p.self_pid();
                let (mut threads, mut apart) = (BTreeSet::new(), 0u64);
                for x in 0..ROUNDS {
                    p.send(pong, &(mine, x));
                    let (back, there): (u64, String) = p.expect().await?;
                    assert_eq!(back, x);
                    if x >= ROUNDS - LAST {
                        let here = thread();
                        apart += u64::from(here != there);
                        threads.insert(here);
                    }
                }
                p.kill(pong);
                p.send(me, &(threads.into_iter().collect::<Vec<String>>(), apart));
                Ok::<(), ReceiveError>(())
            });
        }
        let mut ends = Vec::new();
        for _ in 0..PAIRS {
            ends.push(p.expect::<(Vec<String>, u64)>().await.expect("a pair's end"));
        }
        ends
    })
    .unwrap();
    for (_, apart) in &ends {
        assert!(
            *apart <= LAST / 100,
            "a pair ran split over two threads in {apart} of its last {LAST} rounds: {ends:?}"
        );
    }
    let threads: BTreeSet<&String> = ends.iter().flat_map(|(threads, _)| threads).collect();
    assert_eq!(threads.len(), 2, "the pairs ran on {threads:?}: {ends:?}");
}

/// A process that moves to another scheduler keeps its mailbox (every
/// message sent to it before, during and after the move arrives, in
/// order), its pending timer, its monitors and its exit reason.
#[test]
fn a_process_that_moves_keeps_everything() {
    let node = node("schedulers");
    let outcome = run(&node, |mut p| async move {
        let me = p.self_pid();
        let here = thread();
        // Two busy children on this scheduler: one of them moves.
        let mut children = Vec::new();
        for n in 0..2u32 {
            let (child, monitor) = p.spawn_monitor(move |mut p| async move {
                let done = async {
                    p.expect::<()>().await?;
                    let threads = busy(&mut p, 600).await?;
                    // Everything the parent sent meanwhile, in order.
                    for i in 0..1000 {
                        assert_eq!(p.expect::<A>().await?, A(i));
                    }
                    // The timer armed before the move fires after it.
                    p.expect::<Pid>().await?;
                    p.send(me, &(n, threads.into_iter().collect::<Vec<String>>()));
                    Ok::<(), ReceiveError>(())
                };
                match done.await {
                    Ok(()) => ExitReason::Error(format!("child {n} done")),
                    Err(error) => ExitReason::Error(error.to_string()),
                }
            });
            p.send_after(Duration::from_millis(300), child, &me);
            p.send(child, &());
            children.push((child, monitor));
        }
        for i in 0..1000 {
            for (child, _) in &children {
                p.send(*child, &A(i));
            }
        }
        // A child that ran anywhere but where it started moved: busy, or
        // taken by the idle scheduler while it waited behind this process's
        // sends.
        let mut moved = 0;
        for _ in 0..2 {
            let (_, threads) = p.expect::<(u32, Vec<String>)>().await?;
            moved += usize::from(threads.iter().any(|thread| *thread != here));
        }
        let mut reasons = Vec::new();
        for (_, monitor) in &children {
            let monitor = *monitor;
            reasons.push(p.receive().on_if(move |d: &Down| d.monitor == monitor, |d: Down| d.reason).await?);
        }
        Ok::<_, ReceiveError>((moved, reasons))
    })
    .unwrap()
    .unwrap();
    let (moved, reasons) = outcome;
    assert!(moved >= 1, "neither child moved");
    assert_eq!(
        reasons,
        [ExitReason::Error("child 0 done".into()), ExitReason::Error("child 1 done".into())],
        "the children's exits"
    );
}

/// `blocking` runs its work off the scheduler threads: on a node with one
/// scheduler, another process answers while the work blocks; the result
/// comes back.
#[test]
fn blocking_work_leaves_the_scheduler_free_and_returns_its_value() {
    let node = molt::Node::start(molt::NodeConfig::new("blocking").workers(1)).unwrap();
    let (release, released) = std::sync::mpsc::channel::<u64>();
    let released = std::sync::Mutex::new(released);
    let echo = spawn_echo(&node);
    let (answered, result) = run(&node, move |mut p| async move {
        let me = p.self_pid();
        let work = p.blocking(move || released.lock().unwrap().recv().unwrap() * 2);
        // The work waits for the test; meanwhile this scheduler runs on.
        p.send(echo, &(me, 7u32));
        let answered = p.expect::<u32>().await.unwrap();
        release.send(21).unwrap();
        (answered, work.await)
    })
    .unwrap();
    assert_eq!((answered, result), (7, 42));
}

/// A panic in blocking work ends the process that awaited it with
/// `Panicked` and the panic's message; a process killed while it waits ends
/// at once, and the work, released later, finishes and drops its result.
#[test]
fn blocking_work_panics_as_its_process_and_a_kill_does_not_wait_for_it() {
    struct Dropped(std::sync::mpsc::Sender<()>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }
    let node = node("blocking");
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = std::sync::Mutex::new(released);
    let (dropped_tx, dropped) = std::sync::mpsc::channel::<()>();
    let reasons = run(&node, move |mut p| async move {
        let (_, panicked) = p.spawn_monitor(|p| async move {
            p.blocking(|| -> u32 { panic!("the work broke") }).await;
        });
        let (waiter, waiting) = p.spawn_monitor(move |p| async move {
            let result = p
                .blocking(move || {
                    released.lock().unwrap().recv().unwrap();
                    Dropped(dropped_tx)
                })
                .await;
            drop(result);
            Err::<(), _>(ExitReason::error("the work finished before the kill"))
        });
        let panicked = p.receive().on_if(move |d: &Down| d.monitor == panicked, |d: Down| d.reason).await.unwrap();
        p.kill(waiter);
        let killed = p.receive().on_if(move |d: &Down| d.monitor == waiting, |d: Down| d.reason).await.unwrap();
        (panicked, killed)
    })
    .unwrap();
    assert!(
        matches!(&reasons.0, ExitReason::Panicked(message) if message.contains("the work broke")),
        "{:?}",
        reasons.0
    );
    assert_eq!(reasons.1, ExitReason::Killed);
    // The work is still blocked; released, it finishes and drops its result.
    release.send(()).unwrap();
    dropped.recv_timeout(support::BOUND).expect("the killed process's work finished and dropped its result");
}

/// What the node logs, for the test that reads it.
fn logs() -> &'static std::sync::Mutex<String> {
    static LOGS: std::sync::OnceLock<std::sync::Mutex<String>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        struct Capture;
        impl std::io::Write for Capture {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                logs().lock().unwrap().push_str(&String::from_utf8_lossy(bytes));
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let subscriber = tracing_subscriber::fmt().with_writer(|| Capture).with_ansi(false).finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this test binary");
        std::sync::Mutex::new(String::new())
    })
}

/// A process that keeps its scheduler thread without yielding (here: it
/// spins until the test has seen the warning) is named in a warning that
/// points at `blocking`.
#[test]
fn a_process_that_blocks_its_scheduler_is_named() {
    let _ = logs();
    let node = molt::Node::start(molt::NodeConfig::new("watchdog").workers(1).long_schedule(Duration::from_millis(50)))
        .unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let release = seen.clone();
    let blocker = node.spawn(move |_p| async move {
        while !release.load(std::sync::atomic::Ordering::Acquire) {
            std::hint::spin_loop();
        }
    });
    let start = std::time::Instant::now();
    let line = loop {
        let found = logs().lock().unwrap().lines().find(|line| line.contains(&blocker.to_string())).map(str::to_owned);
        if let Some(line) = found {
            break line;
        }
        assert!(start.elapsed() < support::BOUND, "no warning named {blocker}");
        std::thread::yield_now();
    };
    seen.store(true, std::sync::atomic::Ordering::Release);
    assert!(line.contains("WARN") && line.contains("without yielding") && line.contains("p.blocking"), "{line}");
    node.shutdown();
}

/// Fairness: on a one-scheduler node with busy processes that never wait
/// (each feeds itself), a ping to another process is answered within a
/// bounded number of their receives: each busy process runs at most a few
/// budgets (512 receives each) before the waiting ones get their turn.
#[test]
fn busy_processes_cannot_hold_up_a_ping_for_more_than_a_few_budgets() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const BUSY: u64 = 4;
    let node = molt::Node::start(molt::NodeConfig::new("fairness").workers(1)).unwrap();
    let receives = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..BUSY {
        let (receives, stop) = (receives.clone(), stop.clone());
        node.spawn(move |mut p| async move {
            let me = p.self_pid();
            while !stop.load(Ordering::Relaxed) {
                p.send(me, &B(0));
                p.expect::<B>().await?;
                receives.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), ReceiveError>(())
        });
    }
    let echo = spawn_echo(&node);
    let counted = receives.clone();
    let worst = run(&node, move |mut p| async move {
        let me = p.self_pid();
        let mut worst = 0;
        for n in 0..20u32 {
            let before = counted.load(Ordering::Relaxed);
            p.send(echo, &(me, n));
            assert_eq!(p.expect::<u32>().await.unwrap(), n);
            worst = worst.max(counted.load(Ordering::Relaxed) - before);
        }
        worst
    })
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    // The echo waits behind each busy process once, then the pinger does.
    let bound = 2 * (BUSY + 1) * 512;
    assert!(worst <= bound, "a ping waited for {worst} receives of busy processes (bound {bound})");
    assert!(receives.load(Ordering::Relaxed) > 0, "the busy processes never ran");
    node.shutdown();
}

// Moves under a hostile reading: each test below runs in a child test
// process with a move after every pending poll (`MOLT_MIGRATE_EVERY=1`, read
// at node start).
const EVERY_POLL: &[(&str, &str)] = &[("MOLT_MIGRATE_EVERY", "1")];

/// Forced moves of a process that was not counted busy do not count it
/// busy on its new scheduler (the counts underflowed, and a busy process's
/// core poll then panicked: it ended `Normal` without having finished).
#[test]
fn forced_moves_keep_busy_counts_balanced() {
    in_child("forced_moves_keep_busy_counts_balanced", EVERY_POLL, || {
        let node = node("forced");
        for round in 0..20u32 {
            let outcome = run(&node, move |mut p| async move {
                let me = p.self_pid();
                let (waiter, waiting) = p.spawn_monitor(move |mut p| async move {
                    for i in 0..200u32 {
                        assert_eq!(p.expect::<A>().await?, A(i));
                    }
                    p.send(me, &"waiter done".to_owned());
                    Ok::<(), ReceiveError>(())
                });
                let (_, busying) = p.spawn_monitor(move |mut p| async move {
                    busy(&mut p, 2000).await?;
                    p.send(me, &"busy done".to_owned());
                    Ok::<(), ReceiveError>(())
                });
                for i in 0..200u32 {
                    p.send(waiter, &A(i));
                }
                let mut reasons = Vec::new();
                for monitor in [waiting, busying] {
                    reasons.push(p.receive().on_if(move |d: &Down| d.monitor == monitor, |d: Down| d.reason).await?);
                }
                let mut done = Vec::new();
                while let Ok(message) = p.expect_timeout::<String>(Duration::ZERO).await {
                    done.push(message);
                }
                done.sort();
                Ok::<_, ReceiveError>((done, reasons))
            })
            .unwrap()
            .unwrap();
            assert_eq!(
                outcome,
                (vec!["busy done".to_owned(), "waiter done".to_owned()], vec![ExitReason::Normal, ExitReason::Normal]),
                "round {round}"
            );
        }
    });
}

/// Every kind of wait survives moves: sleeps, a receive timeout, a tokio
/// channel raced with a receive in `futures::select!`, blocking work awaited
/// directly, a receive and blocking work inside `FuturesUnordered`.
#[test]
fn every_kind_of_wait_survives_moves() {
    in_child("every_kind_of_wait_survives_moves", EVERY_POLL, || {
        use futures::{FutureExt, StreamExt};
        let node = node("waits");
        for round in 0..30u32 {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
            let (release, released) = std::sync::mpsc::channel::<u32>();
            let released = std::sync::Mutex::new(released);
            let outcome = run(&node, move |mut p| async move {
                let me = p.self_pid();
                for _ in 0..3 {
                    p.sleep(Duration::from_millis(1)).await;
                }
                let timed_out = p.expect_timeout::<A>(Duration::from_millis(2)).await.is_err();
                let feeder = std::thread::spawn(move || {
                    for i in 0..50 {
                        tx.send(i).unwrap();
                        std::thread::yield_now();
                    }
                });
                let mut from_channel = Vec::new();
                while from_channel.len() < 50 {
                    futures::select! {
                        n = rx.recv().fuse() => from_channel.push(n.unwrap()),
                        a = p.expect::<A>().fuse() => panic!("no A was sent: {a:?}"),
                    }
                }
                feeder.join().unwrap();
                let blocked = p.blocking(move || released.lock().unwrap().recv().unwrap() + 1);
                let helper = p.spawn(move |mut p| async move {
                    let n = p.expect::<u32>().await?;
                    release.send(n).unwrap();
                    Ok::<(), ReceiveError>(())
                });
                p.send(helper, &round);
                let blocked = blocked.await;
                p.send_after(Duration::from_millis(3), me, &A(round));
                let (unblock, unblocked) = std::sync::mpsc::channel::<()>();
                let unblocked = std::sync::Mutex::new(unblocked);
                let work = p.blocking(move || unblocked.lock().unwrap().recv().unwrap());
                let mut got = None;
                {
                    type Boxed<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Option<A>> + Send + 'a>>;
                    let mut set: futures::stream::FuturesUnordered<Boxed<'_>> =
                        futures::stream::FuturesUnordered::new();
                    set.push(Box::pin(async move {
                        let a = p.expect::<A>().await.ok();
                        unblock.send(()).unwrap();
                        a
                    }));
                    set.push(Box::pin(async move {
                        work.await;
                        None
                    }));
                    while let Some(result) = set.next().await {
                        if result.is_some() {
                            got = result;
                        }
                    }
                }
                Ok::<_, ReceiveError>((timed_out, from_channel, blocked, got))
            })
            .unwrap()
            .unwrap();
            assert_eq!(outcome, (true, (0..50).collect::<Vec<_>>(), round + 1, Some(A(round))), "round {round}");
        }
    });
}

/// Kills racing moves: a linked and monitored process receives from two
/// senders (FIFO per sender checked) while it moves, and is killed
/// mid-stream; it ends exactly once, with `Killed`, and its trapping
/// parent hears of it once.
#[test]
fn kills_and_messages_race_moves() {
    in_child("kills_and_messages_race_moves", EVERY_POLL, || {
        let node = node("kills");
        for round in 0..200u32 {
            let reasons = run(&node, move |mut p| async move {
                p.trap_exit(true);
                let target = p.spawn_link(|mut p| async move {
                    let (mut next_a, mut next_b) = (0, 0);
                    loop {
                        enum M {
                            A(A),
                            B(B),
                        }
                        match p.receive().on(M::A).on(M::B).await? {
                            M::A(A(n)) => {
                                assert_eq!(n, next_a, "FIFO from the A sender");
                                next_a += 1;
                            }
                            M::B(B(n)) => {
                                assert_eq!(n, next_b, "FIFO from the B sender");
                                next_b += 1;
                            }
                        }
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), ReceiveError>(())
                });
                let monitor = p.monitor(target);
                p.spawn(move |p| async move {
                    for i in 0..300 {
                        p.send(target, &A(i));
                    }
                });
                p.spawn(move |p| async move {
                    for i in 0..300 {
                        p.send(target, &B(i));
                    }
                });
                for _ in 0..(round % 7) {
                    p.sleep(Duration::from_micros(50)).await;
                }
                p.exit(target, ExitReason::Killed);
                let down = p.receive().on_if(move |d: &Down| d.monitor == monitor, |d: Down| d.reason).await?;
                let exit = p.expect::<molt::Exit>().await?;
                let extra = p.expect_timeout::<Down>(Duration::from_millis(1)).await.is_ok();
                Ok::<_, ReceiveError>((down, exit.reason, extra))
            })
            .unwrap()
            .unwrap();
            assert_eq!(reasons, (ExitReason::Killed, ExitReason::Killed, false), "round {round}");
        }
    });
}
