//! Erlang's promises under races (issue 12): no `Down` after `demonitor`
//! returned, no `Exit` after `unlink` returned, `kill`/`exit` of oneself
//! end the caller at once, a monitor belongs to its holder, a dead
//! watcher's monitors leave their targets, zero sleeps yield, and calls
//! that would block a node from inside it are refused loudly. The races are
//! loops of many rounds, each with a deterministic check.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use molt::{Down, Exit, ExitReason, Message, MonitorRef, Node, NodeConfig, Pid, ReceiveError};
use serde::{Deserialize, Serialize};
use support::{BOUND, node, run};

#[derive(Clone, Copy, Debug, Serialize, Deserialize, Message)]
#[message(name = "test.Die")]
struct Die;

#[derive(Clone, Copy, Debug, Serialize, Deserialize, Message)]
#[message(name = "test.Go")]
struct Go;

/// A process that ends (normally) when told.
async fn until_told(mut p: molt::Process) -> Result<(), ReceiveError> {
    p.expect::<Die>().await.map(drop)
}

/// The text a panic carried.
fn panic_text(panic: Box<dyn std::any::Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(text) => *text,
        Err(panic) => panic.downcast_ref::<&str>().map_or_else(String::new, |text| (*text).to_owned()),
    }
}

/// Waits (on the test's thread, bounded) until `pid` is gone from the node:
/// every link and monitor of it has been told.
fn wait_gone(node: &Node, pid: Pid) {
    let deadline = std::time::Instant::now() + BOUND;
    while node.processes().iter().any(|p| p.pid == pid) {
        assert!(std::time::Instant::now() < deadline, "{pid} did not end within the bound");
        std::thread::yield_now();
    }
}

#[test]
fn no_down_arrives_after_demonitor_returned_true() {
    const ROUNDS: usize = 40;
    const MONITORS: usize = 2_000;
    let node = node("guarantees");
    let mut raced = 0;
    for _ in 0..ROUNDS {
        // Two spawns from outside go to the two schedulers: the target ends
        // on one thread while the watcher demonitors on the other.
        let target = node.spawn(until_told);
        let (report, reported) = mpsc::channel::<Vec<MonitorRef>>();
        let (verdict, verdicts) = mpsc::channel::<Vec<MonitorRef>>();
        let watcher = node.spawn(move |mut p| async move {
            let monitors: Vec<MonitorRef> = (0..MONITORS).map(|_| p.monitor(target)).collect();
            p.send(target, &Die);
            // The target is ending: demonitor everything not yet delivered.
            let first = p.expect::<Down>().await?;
            let stopped: Vec<MonitorRef> =
                monitors.into_iter().filter(|m| *m != first.monitor && p.demonitor(*m)).collect();
            let _ = report.send(stopped.clone());
            p.expect::<Go>().await?;
            let mut late = Vec::new();
            while let Ok(down) = p.expect_timeout::<Down>(Duration::ZERO).await {
                if stopped.contains(&down.monitor) {
                    late.push(down.monitor);
                }
            }
            let _ = verdict.send(late);
            Ok::<(), ReceiveError>(())
        });
        let stopped = reported.recv_timeout(BOUND).expect("the watcher reports");
        wait_gone(&node, target);
        node.spawn(move |p| async move { p.send(watcher, &Go) });
        let late = verdicts.recv_timeout(BOUND).expect("the watcher's verdict");
        assert!(late.is_empty(), "Downs arrived after their demonitor returned true: {late:?}");
        raced += usize::from(!stopped.is_empty());
    }
    // The check means something only if demonitors did win races. With
    // 300 monitors a round, 4 runs in 10 had no round that won one once
    // processes moved between schedulers: 2,000 keep the target ending
    // long enough.
    assert!(raced > 0, "no round demonitored a monitor of an ending process");
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, Message)]
#[message(name = "test.Spawn")]
struct SpawnFor(Pid);

fn links_of(node: &Node, pid: Pid) -> Vec<Pid> {
    node.processes().into_iter().find(|i| i.pid == pid).map(|i| i.links).unwrap_or_default()
}

/// `unlink` is called exactly inside the window: after the exit signal of
/// the link took the link off this process (seen in `processes()`), and
/// before its `Exit` message could be queued had it been queued after the
/// lock (a big reason widens that window). Once the link is gone, its
/// `Exit` must already be queued; none may arrive after `unlink` returned.
#[test]
fn no_exit_arrives_after_unlink_returned() {
    const ROUNDS: u64 = 20;
    let node = Arc::new(node("guarantees"));
    // Spawns the other half of each round on the other scheduler.
    let spawner = node.spawn(|mut p| async move {
        loop {
            let SpawnFor(asker) = p.expect::<SpawnFor>().await?;
            let linked = p.spawn(until_told);
            p.send(asker, &linked);
        }
        #[allow(unreachable_code)]
        Ok::<(), ReceiveError>(())
    });
    let watch = node.clone();
    let big = "x".repeat(1 << 20);
    let (queued_before, late) = run(&node, move |mut p| async move {
        p.trap_exit(true);
        let me = p.self_pid();
        let (mut queued_before, mut late) = (0u64, 0u64);
        for _ in 0..ROUNDS {
            p.send(spawner, &SpawnFor(me));
            let other = p.expect::<Pid>().await.unwrap();
            p.link(other);
            // Links are told before monitors: its Down comes after any
            // Exit of the link.
            let barrier = p.monitor(other);
            p.exit(other, ExitReason::error(big.clone()));
            while links_of(&watch, me).contains(&other) {
                std::hint::spin_loop();
            }
            p.unlink(other);
            let from_other = move |exit: &Exit| exit.from == other;
            let before = p.receive_timeout(Duration::ZERO).on_if(from_other, drop).await.is_ok();
            p.receive().on_if(move |down: &Down| down.monitor == barrier, drop).await.unwrap();
            let after = p.receive_timeout(Duration::ZERO).on_if(from_other, drop).await.is_ok();
            queued_before += u64::from(before);
            late += u64::from(!before && after);
        }
        drop(watch);
        (queued_before, late)
    })
    .unwrap();
    assert_eq!(late, 0, "Exits of a link arrived after unlink returned ({queued_before} came before it)");
    assert_eq!(queued_before, ROUNDS, "with the link gone, its Exit was not yet queued");
}

#[test]
fn kill_and_exit_of_oneself_end_the_caller_at_once() {
    let node = node("guarantees");
    let results = run(&node, |mut p| async move {
        let me = p.self_pid();
        let killed = p.spawn_monitor(move |p| async move {
            p.kill(p.self_pid());
            p.send(me, &"after kill".to_owned());
        });
        let exited = p.spawn_monitor(move |p| async move {
            p.exit(p.self_pid(), ExitReason::Normal);
            p.send(me, &"after exit".to_owned());
            Err::<(), _>(ExitReason::error("the rest of the body ran"))
        });
        let reasoned = p.spawn_monitor(move |p| async move {
            p.exit(p.self_pid(), ExitReason::error("done"));
            p.send(me, &"after exit with a reason".to_owned());
        });
        // Trapping exits, an exit signal to oneself is a message (Erlang).
        let trapping = p.spawn_monitor(move |mut p| async move {
            p.trap_exit(true);
            p.exit(p.self_pid(), ExitReason::error("to myself"));
            let exit = p.expect::<Exit>().await.unwrap();
            p.send(me, &format!("trapped {}", exit.reason));
        });
        let mut reasons = Vec::new();
        for (_, monitor) in [killed, exited, reasoned, trapping] {
            let down = p.receive().on_if(move |d: &Down| d.monitor == monitor, |d| d).await.unwrap();
            reasons.push(down.reason);
        }
        let mut said = Vec::new();
        while let Ok(text) = p.expect_timeout::<String>(Duration::ZERO).await {
            said.push(text);
        }
        (reasons, said)
    })
    .unwrap();
    assert_eq!(results.0, [ExitReason::Killed, ExitReason::Normal, ExitReason::error("done"), ExitReason::Normal]);
    assert_eq!(results.1, [format!("trapped {}", ExitReason::error("to myself"))]);
}

/// Another process's `demonitor` with my reference leaves my monitor on the
/// target (checked on the target's own count: signals are applied at once),
/// and my `Down` comes.
#[test]
fn only_the_holder_of_a_monitor_can_remove_it() {
    let node = Arc::new(node("guarantees"));
    let watch = node.clone();
    let (removed_by_other, count, down) = run(&node, move |mut p| async move {
        let target = p.spawn(until_told);
        let mine = p.monitor(target);
        let me = p.self_pid();
        let (other, checked) = p.spawn_monitor(move |mut p| async move {
            let monitor = p.expect::<MonitorRef>().await.unwrap();
            p.send(me, &p.demonitor(monitor));
        });
        p.send(other, &mine);
        let removed_by_other = p.expect::<bool>().await.unwrap();
        p.receive().on_if(move |d: &Down| d.monitor == checked, drop).await.unwrap();
        let count = watch.processes().into_iter().find(|i| i.pid == target).map(|i| i.monitored_by);
        drop(watch);
        p.send(target, &Die);
        let down = p.receive_timeout(BOUND).on_if(move |d: &Down| d.monitor == mine, |d| d.reason).await;
        (removed_by_other, count, down.ok())
    })
    .unwrap();
    assert!(!removed_by_other);
    assert_eq!(count, Some(1), "another process's demonitor took my monitor off the target");
    assert_eq!(down, Some(ExitReason::Normal), "the holder still got its Down");
}

/// A `Process` that outlived its process (moved to a thread) monitors and
/// links nothing: a dead process leaves nothing on others.
#[test]
fn a_dead_processs_handle_leaves_nothing_on_others() {
    let node = node("guarantees");
    let server = node.spawn(until_told);
    let (hand, handed) = mpsc::channel::<molt::Process>();
    let dead = node.spawn(move |p| async move {
        let _ = hand.send(p);
    });
    let p = handed.recv_timeout(BOUND).unwrap();
    wait_gone(&node, dead);
    p.monitor(server);
    p.link(server);
    let info = node.processes().into_iter().find(|i| i.pid == server).unwrap();
    assert_eq!((info.monitored_by, info.links), (0, vec![]));
}

#[test]
fn a_dead_watchers_monitors_leave_their_target() {
    const WATCHERS: usize = 1_000;
    let node = node("guarantees");
    let server = node.spawn(until_told);
    let (done, finished) = mpsc::channel();
    for _ in 0..WATCHERS {
        let done = done.clone();
        node.spawn(move |p| async move {
            p.monitor(server);
            p.monitor(server);
            let _ = done.send(p.self_pid());
        });
    }
    let watchers: Vec<Pid> = (0..WATCHERS).map(|_| finished.recv_timeout(BOUND).unwrap()).collect();
    for watcher in watchers {
        wait_gone(&node, watcher);
    }
    let info = node.processes().into_iter().find(|p| p.pid == server).unwrap();
    assert_eq!(info.monitored_by, 0, "monitors of dead watchers stayed on the server");
}

#[test]
fn a_loop_of_zero_sleeps_yields_to_the_rest_of_its_scheduler() {
    let node = Node::start(NodeConfig::new("one-scheduler").workers(1)).unwrap();
    let laps = Arc::new(AtomicU64::new(0));
    let counted = laps.clone();
    let sleeper = node.spawn(move |mut p| async move {
        loop {
            p.sleep(Duration::ZERO).await;
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });
    // Ten round trips with another process on the same (only) scheduler,
    // reported to this thread so that a sleeper that never yields fails the
    // test instead of hanging it.
    let (done, answered) = mpsc::channel();
    node.spawn(move |mut p| async move {
        let ponger = p.spawn(support::ponger);
        let mut n = 0u32;
        for _ in 0..10 {
            n += u32::from(support::answers(&mut p, ponger).await);
        }
        let _ = done.send(n);
    });
    let answered = answered.recv_timeout(BOUND);
    let laps_then = laps.load(Ordering::Relaxed);
    if answered.is_err() {
        // Do not wait for the stuck scheduler.
        std::mem::forget(node);
        panic!("ten round trips did not get through; the sleeper ran {laps_then} laps");
    }
    assert_eq!(answered, Ok(10));
    // Each round trip waits for at most a few budgets (512 laps each) of
    // the sleeper; without yielding it would lap for seconds first.
    assert!(laps_then < 200_000, "the sleeper ran {laps_then} laps before ten round trips got through");
    let killed = run(&node, move |mut p| async move {
        let watch = p.monitor(sleeper);
        p.kill(sleeper);
        p.receive().on_if(move |d: &Down| d.monitor == watch, |d| d.reason).await
    })
    .unwrap();
    assert_eq!(killed, Ok(ExitReason::Killed));
    node.shutdown();
}

/// A guard that ends its process when dropped (a "defer exit").
struct ExitOnDrop(molt::Process, ExitReason);

impl Drop for ExitOnDrop {
    fn drop(&mut self) {
        self.0.exit(self.0.self_pid(), self.1.clone());
    }
}

/// `exit(self)` from drop code — while the body unwinds from a panic, or
/// while it is dropped after a kill, twice over — ends nothing more than
/// the process (no unwinding inside an unwinding, which would abort the OS
/// process: hence a child process).
#[test]
fn exit_of_oneself_from_drop_code_is_contained() {
    support::child::in_child("exit_of_oneself_from_drop_code_is_contained", &[], || {
        let node = node("guarantees");
        let reasons = run(&node, |mut p| async move {
            let me = p.self_pid();
            let (_, panicking) = p.spawn_monitor(|p| async move {
                let _guard = ExitOnDrop(p, ExitReason::error("cleanup"));
                panic!("boom");
            });
            let (killed, twice) = p.spawn_monitor(move |p| async move {
                p.send(me, &Go);
                // Its drop calls exit(self); then its field, a guard that
                // does the same, is dropped.
                struct Twice(ExitOnDrop);
                impl Drop for Twice {
                    fn drop(&mut self) {
                        let process = &self.0.0;
                        process.exit(process.self_pid(), ExitReason::error("first"));
                    }
                }
                let _twice = Twice(ExitOnDrop(p, ExitReason::error("second")));
                std::future::pending::<()>().await;
            });
            p.expect::<Go>().await.unwrap();
            p.kill(killed);
            let mut reasons = Vec::new();
            for watch in [panicking, twice] {
                reasons.push(p.receive().on_if(move |d: &Down| d.monitor == watch, |d| d.reason).await.unwrap());
            }
            reasons
        })
        .unwrap();
        assert_eq!(reasons, [ExitReason::error("cleanup"), ExitReason::Killed]);
    });
}

/// The unwinding that ends a process can be caught by its own code; what
/// that code does next has no effect.
#[test]
fn a_caught_kill_of_oneself_still_ends_the_process() {
    let node = node("guarantees");
    let (reason, said) = run(&node, |mut p| async move {
        let me = p.self_pid();
        let (child, watch) = p.spawn_monitor(move |mut p| async move {
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.kill(p.self_pid())));
            p.send(me, &format!("after a caught kill (caught: {})", caught.is_err()));
            let got = p.expect_timeout::<u32>(BOUND).await;
            p.send(me, &format!("received {got:?} after kill"));
        });
        p.send(child, &7u32);
        let reason = p.receive().on_if(move |d: &Down| d.monitor == watch, |d| d.reason).await.unwrap();
        let mut said = Vec::new();
        while let Ok(text) = p.expect_timeout::<String>(Duration::ZERO).await {
            said.push(text);
        }
        (reason, said)
    })
    .unwrap();
    assert_eq!(reason, ExitReason::Killed);
    assert!(said.is_empty(), "the body ran on after kill(self): {said:?}");
}

#[test]
fn node_run_from_inside_a_process_is_refused_loudly() {
    let node = Arc::new(node("guarantees"));
    let inside = node.clone();
    let outcome = node.run(move |_p| async move {
        let _ = inside.run(|_p| async {});
    });
    match outcome {
        Err(ExitReason::Panicked(message)) => {
            assert!(message.contains("Node::run was called from inside a process"), "{message}")
        }
        other => panic!("expected the inner run to be refused, got {other:?}"),
    }
}

#[test]
fn shutting_a_node_down_inside_its_own_process_is_refused_without_blocking() {
    // A shutdown timeout far beyond the test's bound: a refusal that waited
    // for it would fail the test.
    let node =
        Node::start(NodeConfig::new("shut-inside").workers(2).shutdown_timeout(Duration::from_secs(3600))).unwrap();
    let (hand, handed) = mpsc::channel::<Node>();
    let (told, tell) = mpsc::channel::<String>();
    let inner = node.spawn(move |mut p| async move {
        p.expect::<Go>().await?;
        let node = handed.recv().expect("the node is handed over");
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| node.shutdown()));
        let said = refused.err().map_or_else(|| "nothing".to_owned(), panic_text);
        let _ = told.send(said);
        Ok::<(), ReceiveError>(())
    });
    node.spawn(move |p| async move { p.send(inner, &Go) });
    hand.send(node).unwrap();
    let said = tell.recv_timeout(BOUND).expect("the refusal returns at once");
    assert!(said.contains("from inside one of its own processes"), "{said}");
}

#[test]
fn dropping_a_node_inside_its_own_process_is_refused_loudly() {
    let node = support::node("dropped-inside");
    let (hand, handed) = mpsc::channel::<Node>();
    let (told, tell) = mpsc::channel::<String>();
    let inner = node.spawn(move |mut p| async move {
        p.expect::<Go>().await?;
        let node = handed.recv().expect("the node is handed over");
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(node)));
        let said = refused.err().map_or_else(|| "nothing".to_owned(), panic_text);
        let _ = told.send(said);
        Ok::<(), ReceiveError>(())
    });
    let go = node.spawn(move |p| async move { p.send(inner, &Go) });
    let _ = go;
    hand.send(node).unwrap();
    let said = tell.recv_timeout(BOUND).expect("the process reports");
    assert!(said.contains("from inside one of its own processes"), "{said}");
}

#[test]
fn timers_aimed_at_a_process_that_ends_are_cancelled() {
    const PROCESSES: usize = 1_000;
    let node = node("guarantees");
    let (left, cancelled) = run(&node, |mut p| async move {
        let me = p.self_pid();
        // Each sets itself an hour-long timer, hands it over, and ends.
        for _ in 0..PROCESSES {
            p.spawn(move |p| async move {
                let timer = p.send_after(Duration::from_secs(3600), p.self_pid(), &Die);
                p.send(me, &timer);
            });
        }
        let mut timers = Vec::new();
        for _ in 0..PROCESSES {
            timers.push(p.expect::<molt::TimerRef>().await.unwrap());
        }
        // A timer at a pid that is not alive is cancelled at once.
        let dead = p.spawn(|_p| async {});
        let watch = p.monitor(dead);
        p.receive().on_if(move |d: &Down| d.monitor == watch, drop).await.unwrap();
        let at_dead = p.send_after(Duration::from_secs(3600), dead, &Die);
        (timers, p.cancel_timer(at_dead))
    })
    .unwrap();
    assert_eq!(cancelled, None);
    let deadline = std::time::Instant::now() + BOUND;
    while node.process_count() > 0 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::yield_now();
    }
    assert_eq!(node.pending_timers(), 0, "timers of ended processes are still pending");
    let cancelled_now =
        run(&node, move |p| async move { left.iter().filter(|t| p.cancel_timer(**t).is_some()).count() });
    assert_eq!(cancelled_now, Ok(0), "cancel_timer said it cancelled timers whose target had ended");
}

#[test]
fn a_timer_fires_on_its_setters_scheduler_while_another_is_busy() {
    // A fresh node: the first process from outside goes to scheduler 0, the
    // next (the run's watcher, and the body it spawns) to scheduler 1.
    let node = Node::start(NodeConfig::new("busy").workers(2)).unwrap();
    let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spin = released.clone();
    node.spawn(move |_p| async move {
        // Never yields until released: scheduler 0 runs nothing else.
        while !spin.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
    });
    let fired = run(&node, move |mut p| async move {
        let me = p.self_pid();
        p.send_after(Duration::from_millis(10), me, &Go);
        let fired = p.expect_timeout::<Go>(BOUND).await.is_ok();
        released.store(true, Ordering::Release);
        fired
    });
    assert_eq!(fired, Ok(true));
    node.shutdown();
}

/// What a process that ended itself still does from drop code — send, arm
/// timers to a pid or a name, kill another — has no effect.
#[test]
fn a_process_that_ended_itself_arms_no_timers_and_kills_nobody() {
    struct OnDrop {
        p: molt::Process,
        parent: Pid,
        bystander: Pid,
    }
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.p.send(self.parent, &"send".to_owned());
            self.p.send_after(Duration::ZERO, self.parent, &"send_after".to_owned());
            self.p.send_after_named(Duration::ZERO, "guarantees.parent", &"send_after_named".to_owned());
            self.p.kill(self.bystander);
        }
    }
    let node = node("guarantees");
    let (said, bystander_down) = run(&node, |mut p| async move {
        let me = p.self_pid();
        p.register("guarantees.parent", me).unwrap();
        let (bystander, watch_bystander) = p.spawn_monitor(until_told);
        let (_, watch) = p.spawn_monitor(move |p| async move {
            let self_pid = p.self_pid();
            let guard = OnDrop { p, parent: me, bystander };
            guard.p.exit(self_pid, ExitReason::error("ended itself"));
            drop(guard);
        });
        p.receive().on_if(move |d: &Down| d.monitor == watch, drop).await.unwrap();
        // Its zero-delay timers, had they been armed, fire before this one
        // (same scheduler, an earlier deadline); a kill would have queued
        // the bystander's Down before the child's own.
        p.send_after(Duration::from_millis(5), me, &Go);
        p.expect::<Go>().await.unwrap();
        let mut said = Vec::new();
        while let Ok(text) = p.expect_timeout::<String>(Duration::ZERO).await {
            said.push(text);
        }
        let down = p.receive_timeout(Duration::ZERO).on_if(move |d: &Down| d.monitor == watch_bystander, |d| d.reason);
        let down = down.await.ok();
        p.send(bystander, &Die);
        (said, down)
    })
    .unwrap();
    assert!(said.is_empty(), "a process that ended itself still delivered {said:?}");
    assert_eq!(bystander_down, None, "a process that ended itself killed a bystander");
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "test.Numbered")]
struct Numbered(u32);

#[test]
fn a_pid_names_one_process_even_after_its_slot_is_reused() {
    let node = node("guarantees");
    let outcome = run(&node, |mut p| async move {
        p.trap_exit(true);
        let (dead, _) = p.spawn_monitor(|_| async {});
        p.expect::<Down>().await?;
        // The dead process's slot is free once it is out of the table, an
        // instant after its `Down`; the next spawn then takes it, under
        // another serial. Spawns that come too early are killed.
        let me = p.self_pid();
        let slot = |pid: Pid| pid.serial & u64::from(u32::MAX);
        let mut attempts = 0;
        let (successor, successor_monitor) = loop {
            let (candidate, monitor) = p.spawn_monitor(move |mut p| async move {
                let first = p.expect::<Numbered>().await?;
                p.send(me, &first);
                p.expect::<Die>().await?;
                Err::<(), _>(ExitReason::Error("the successor ends abnormally".into()))
            });
            attempts += 1;
            if slot(candidate) == slot(dead) || attempts == 10_000 {
                break (candidate, monitor);
            }
            p.demonitor(monitor);
            p.kill(candidate);
        };
        let same_slot = slot(successor) == slot(dead);
        // Nothing aimed at the dead pid reaches its successor: not a message
        // (the successor's first message is the one sent to it after)...
        p.send(dead, &Numbered(1));
        p.send(successor, &Numbered(2));
        let first = p.expect::<Numbered>().await?;
        // ...nor a monitor, which fires at once with `noproc`...
        // (A wrong answer may be no answer: each wait below is bounded.)
        let monitor = p.monitor(dead);
        let down = p.expect_timeout::<Down>(Duration::from_secs(5)).await.ok();
        // ...nor a link, which is refused with `noproc`, and the successor's
        // abnormal end sends no exit signal here.
        p.link(dead);
        let refused = p.expect_timeout::<Exit>(Duration::from_secs(5)).await.ok();
        p.send(successor, &Die);
        let successor_down = p.expect::<Down>().await?;
        let exit_from_successor = p.expect_timeout::<Exit>(Duration::ZERO).await.ok();
        Ok::<_, ReceiveError>((
            same_slot,
            first,
            down.map(|down| (down.monitor == monitor, down.pid, down.reason)),
            refused.map(|refused| (refused.from, refused.reason)),
            (successor_down.monitor == successor_monitor, exit_from_successor.map(|exit| exit.from)),
            dead,
        ))
    });
    let (same_slot, first, down, refused, successor_end, dead) = outcome.unwrap().unwrap();
    assert!(same_slot, "the successor did not reuse the dead process's slot, so this test shows nothing");
    assert_eq!(first, Numbered(2), "a message sent to a dead pid reached the process in its slot");
    assert_eq!(down, Some((true, dead, ExitReason::Noproc)));
    assert_eq!(refused, Some((dead, ExitReason::Noproc)));
    assert_eq!(successor_end, (true, None), "a link to a dead pid linked its successor");
}
