//! Links, monitors, trap-exit, `exit` and `kill`: the Erlang semantics
//! matrix. Every outcome is asserted by the exact exit reason a monitor
//! reports or the exact `Exit` message a trapping process receives.

mod support;

use std::future::pending;

use molt::{Down, Exit, ExitReason, Pid, Process, ReceiveError};
use support::{answers, down_of, node, ponger, run, wait_forever};

/// A pid that is certainly dead: its process ended and its monitor fired.
async fn dead_pid(p: &mut Process) -> Pid {
    let (pid, _) = p.spawn_monitor(|_| async {});
    assert_eq!(down_of(p, pid).await, ExitReason::Normal);
    pid
}

#[test]
fn a_normal_exit_of_a_linked_process_leaves_a_non_trapping_partner_alive() {
    let node = node("links");
    let alive = run(&node, |mut p| async move {
        let driver = p.self_pid();
        let partner = p.spawn(move |mut p| async move {
            let child = p.spawn_link(|_| async {});
            p.monitor(child);
            // Links fire before monitors, so the link has done its work.
            let _ = p.expect::<Down>().await;
            p.send(driver, &());
            ponger(p).await
        });
        p.expect::<()>().await.unwrap();
        answers(&mut p, partner).await
    });
    assert_eq!(alive, Ok(true));
}

#[test]
fn an_abnormal_exit_takes_a_non_trapping_partner_down_with_the_same_reason() {
    let node = node("links");
    let reason = run(&node, |mut p| async move {
        let (partner, _) = p.spawn_monitor(|p| async move {
            p.spawn_link(|_| async { ExitReason::error("boom") });
            wait_forever(p).await
        });
        down_of(&mut p, partner).await
    });
    assert_eq!(reason, Ok(ExitReason::Error("boom".into())));
}

#[test]
fn a_trapping_partner_gets_exit_messages_and_lives() {
    let node = node("links");
    let (exits, children, alive) = run(&node, |mut p| async move {
        let driver = p.self_pid();
        let partner = p.spawn(move |mut p| async move {
            p.trap_exit(true);
            let failing = p.spawn_link(|_| async { ExitReason::error("boom") });
            let normal = p.spawn_link(|_| async {});
            let mut exits = [p.expect::<Exit>().await?, p.expect::<Exit>().await?];
            exits.sort_by_key(|e| e.from != failing);
            p.send(driver, &(failing, normal));
            p.send(driver, &exits.iter().map(|e| (e.from, e.reason.clone())).collect::<Vec<_>>());
            ponger(p).await
        });
        let children: (Pid, Pid) = p.expect().await.unwrap();
        let exits: Vec<(Pid, ExitReason)> = p.expect().await.unwrap();
        (exits, children, answers(&mut p, partner).await)
    })
    .unwrap();
    let (failing, normal) = children;
    assert_eq!(exits, vec![(failing, ExitReason::Error("boom".into())), (normal, ExitReason::Normal)]);
    assert!(alive);
}

#[test]
fn kill_cannot_be_trapped_and_linked_processes_see_killed() {
    let node = node("links");
    let (victim_reason, linked_reason, trapped) = run(&node, |mut p| async move {
        let driver = p.self_pid();
        let watcher = p.spawn(move |mut p| async move {
            p.trap_exit(true);
            let exit = p.expect::<Exit>().await?;
            p.send(driver, &(exit.from, exit.reason));
            Ok::<(), ReceiveError>(())
        });
        let victim = p.spawn(move |p| async move {
            p.trap_exit(true);
            p.link(watcher);
            let linked = p.spawn_link(wait_forever);
            p.send(driver, &linked);
            wait_forever(p).await
        });
        let linked: Pid = p.expect().await.unwrap();
        p.monitor(victim);
        p.monitor(linked);
        p.kill(victim);
        let victim_reason = down_of(&mut p, victim).await;
        let linked_reason = down_of(&mut p, linked).await;
        let trapped: (Pid, ExitReason) = p.expect().await.unwrap();
        (victim_reason, linked_reason, (trapped.0 == victim, trapped.1))
    })
    .unwrap();
    assert_eq!(victim_reason, ExitReason::Killed);
    assert_eq!(linked_reason, ExitReason::Killed);
    assert_eq!(trapped, (true, ExitReason::Killed));
}

#[test]
fn exit_signals_follow_erlang() {
    let node = node("links");
    let outcome = run(&node, |mut p| async move {
        let driver = p.self_pid();
        // exit(Pid, normal) is ignored by a process that does not trap.
        let (ignores, _) = p.spawn_monitor(ponger);
        p.exit(ignores, ExitReason::Normal);
        let still_alive = answers(&mut p, ignores).await;
        // Any other reason ends it with that reason.
        p.exit(ignores, ExitReason::error("stop"));
        let stopped = down_of(&mut p, ignores).await;
        // A trapping process gets it as a message from the sender.
        let trapping = p.spawn(move |mut p| async move {
            p.trap_exit(true);
            p.send(driver, &());
            let exit = p.expect::<Exit>().await?;
            p.send(driver, &(exit.from, exit.reason));
            Ok::<(), ReceiveError>(())
        });
        p.expect::<()>().await.unwrap();
        p.exit(trapping, ExitReason::Shutdown);
        let trapped: (Pid, ExitReason) = p.expect().await.unwrap();
        // exit(self(), normal) ends the caller.
        let (self_exit, _) = p.spawn_monitor(|p| async move {
            p.exit(p.self_pid(), ExitReason::Normal);
            wait_forever(p).await
        });
        let self_exited = down_of(&mut p, self_exit).await;
        (still_alive, stopped, trapped.0 == driver, trapped.1, self_exited)
    });
    assert_eq!(outcome, Ok((true, ExitReason::Error("stop".into()), true, ExitReason::Shutdown, ExitReason::Normal)));
}

#[test]
fn linking_to_a_dead_process_answers_noproc() {
    let node = node("links");
    let (non_trapping, trapping) = run(&node, |mut p| async move {
        let driver = p.self_pid();
        let dead = dead_pid(&mut p).await;
        let (linker, _) = p.spawn_monitor(move |p| async move {
            p.link(dead);
            wait_forever(p).await
        });
        let non_trapping = down_of(&mut p, linker).await;
        p.spawn(move |mut p| async move {
            p.trap_exit(true);
            p.link(dead);
            let exit = p.expect::<Exit>().await?;
            p.send(driver, &(exit.from == dead, exit.reason));
            Ok::<(), ReceiveError>(())
        });
        let trapping: (bool, ExitReason) = p.expect().await.unwrap();
        (non_trapping, trapping)
    })
    .unwrap();
    assert_eq!(non_trapping, ExitReason::Noproc);
    assert_eq!(trapping, (true, ExitReason::Noproc));
}

#[test]
fn monitors_report_noproc_normal_and_panics() {
    let node = node("links");
    let reasons = run(&node, |mut p| async move {
        let dead = dead_pid(&mut p).await;
        let monitor = p.monitor(dead);
        let noproc = p.expect::<Down>().await.unwrap();
        assert_eq!((noproc.monitor, noproc.pid), (monitor, dead));
        let (normal, _) = p.spawn_monitor(|_| async {});
        let (panics, _) = p.spawn_monitor(|_| async { panic!("it broke") });
        (noproc.reason, down_of(&mut p, normal).await, down_of(&mut p, panics).await)
    });
    assert_eq!(reasons, Ok((ExitReason::Noproc, ExitReason::Normal, ExitReason::Panicked("it broke".into()))));
}

#[test]
fn demonitor_stops_the_down_message() {
    let node = node("links");
    let leftover = run(&node, |mut p| async move {
        let target = p.spawn(wait_forever);
        let first = p.monitor(target);
        let _second = p.monitor(target);
        p.demonitor(first);
        p.kill(target);
        // The second monitor's Down would come after the first one's.
        assert_eq!(down_of(&mut p, target).await, ExitReason::Killed);
        p.receive_timeout(std::time::Duration::ZERO).on_if(move |d: &Down| d.monitor == first, |_| ()).await
    });
    assert!(matches!(leftover, Ok(Err(ReceiveError::Timeout { .. }))), "{leftover:?}");
}

#[test]
fn unlink_stops_exit_signals() {
    let node = node("links");
    let alive = run(&node, |mut p| async move {
        let driver = p.self_pid();
        let partner = p.spawn(move |mut p| async move {
            let child = p.spawn_link(|mut p| async move {
                p.expect::<()>().await?;
                Err::<(), _>(ExitReason::error("late failure"))
            });
            p.unlink(child);
            p.monitor(child);
            p.send(child, &());
            let _ = p.expect::<Down>().await;
            p.send(driver, &());
            ponger(p).await
        });
        p.expect::<()>().await.unwrap();
        answers(&mut p, partner).await
    });
    assert_eq!(alive, Ok(true));
}

#[test]
fn a_panicking_linked_child_takes_its_parent_down() {
    let node = node("links");
    let reason = run(&node, |mut p| async move {
        let (parent, _) = p.spawn_monitor(|p| async move {
            p.spawn_link(|_| async { panic!("child broke") });
            pending::<()>().await
        });
        down_of(&mut p, parent).await
    });
    assert_eq!(reason, Ok(ExitReason::Panicked("child broke".into())));
}

#[test]
fn run_reports_how_a_body_ended() {
    let node = node("links");
    assert_eq!(run(&node, |_| async { 7 }), Ok(7));
    assert_eq!(
        run(&node, |_| async {
            panic!("no answer");
            #[allow(unreachable_code)]
            0
        }),
        Err(ExitReason::Panicked("no answer".into()))
    );
}

#[test]
fn sending_to_a_dead_process_does_nothing() {
    let node = node("links");
    let outcome = run(&node, |mut p| async move {
        let dead = dead_pid(&mut p).await;
        p.send(dead, &1u64);
        p.send(p.self_pid(), &2u64);
        p.expect::<u64>().await
    });
    assert_eq!(outcome, Ok(Ok(2)));
}

#[test]
fn two_nodes_in_one_os_process_keep_their_own_processes() {
    let (a, b) = (node("node-a"), node("node-b"));
    assert_ne!(a.id(), b.id());
    let on_a = a.spawn(ponger);
    let pid_on_b = run(&b, |p| async move { p.self_pid() }).unwrap();
    assert_eq!((on_a.node, pid_on_b.node), (a.id(), b.id()));
    assert!(a.processes().iter().any(|i| i.pid == on_a));
    assert!(b.processes().iter().all(|i| i.pid != on_a));
    b.shutdown();
    // Node a is untouched by b's shutdown.
    assert_eq!(run(&a, move |mut p| async move { answers(&mut p, on_a).await }), Ok(true));
    a.shutdown();
}
