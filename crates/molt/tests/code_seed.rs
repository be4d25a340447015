//! The seed's scenario end to end: a client pings a server ten times; on the
//! value 4 the server asks for new code, version 2 is loaded, the server
//! hot-calls into it and answers 4 from the new code; every pong arrives.

mod support;

use std::sync::mpsc;

use molt::{Pid, ReceiveError};
use support::modules::{ServerState, pingpong};

enum Event {
    UpgradeWanted(Pid),
    Answers(Vec<(u64, String)>),
}

#[test]
fn the_seed_ping_pong_upgrades_at_four_and_loses_nothing() {
    let node = support::node("seed");
    node.load(pingpong(1)).expect("version 1 loads");
    let (events, happened) = mpsc::channel();
    let upgrades = events.clone();
    let upgrader = node.spawn(move |mut p| async move {
        loop {
            let who: Pid = p.expect().await?;
            let _ = upgrades.send(Event::UpgradeWanted(who));
        }
        #[allow(unreachable_code)]
        Ok::<(), ReceiveError>(())
    });
    support::run(&node, move |p| async move { p.register("upgrader", upgrader) }).unwrap().unwrap();
    let state = ServerState { answered: 0, verbose: false, upgrade_at: Some(4), pending: None };
    let server = node.spawn_entry("pingpong", "server", &state).expect("pingpong:server starts");
    node.spawn(move |mut p| async move {
        let me = p.self_pid();
        let mut answers = Vec::new();
        for n in 0..10u64 {
            p.send(server, &(me, n));
            answers.push(p.expect::<(u64, String)>().await?);
        }
        let _ = events.send(Event::Answers(answers));
        Ok::<(), ReceiveError>(())
    });

    let mut upgraded_by = None;
    let answers = loop {
        match happened.recv_timeout(support::BOUND).expect("the client finishes within the bound") {
            Event::UpgradeWanted(who) => {
                upgraded_by = Some(who);
                let loaded = node.load(pingpong(2)).expect("version 2 loads");
                assert_eq!(loaded.version, "2");
            }
            Event::Answers(answers) => break answers,
        }
    };
    assert_eq!(upgraded_by, Some(server), "the server itself asked for the upgrade");
    let expected: Vec<(u64, String)> = (0..10).map(|n| (n, if n < 4 { "1" } else { "2" }.to_owned())).collect();
    assert_eq!(answers, expected, "every pong, in order, version 2 from 4 on");

    let modules = node.modules();
    let pingpong_info = modules.iter().find(|m| m.name == "pingpong").expect("pingpong is listed");
    let current = pingpong_info.current.as_ref().expect("a current version");
    let old = pingpong_info.old.as_ref().expect("an old version");
    assert_eq!((current.version.as_str(), old.version.as_str()), ("2", "1"));
    assert_eq!(current.processes, vec![server], "the server runs version 2");
    assert!(old.processes.is_empty(), "nobody runs version 1 any more");
    let info = node.processes().into_iter().find(|p| p.pid == server).unwrap();
    assert_eq!(info.module, Some(("pingpong".to_owned(), "2".to_owned())));
    assert_eq!(info.code, "pingpong:server (version 2)");
    let unloaded = node.soft_purge("pingpong").expect("version 1 is unused").expect("there was an old version");
    assert_eq!((unloaded.module.as_str(), unloaded.version.as_str()), ("pingpong", "1"));
    node.shutdown();
}

/// A hot call keeps what belongs to the process, not to its code: its pid,
/// its registered name, its links and the monitors on it.
#[test]
fn a_hot_call_keeps_the_name_links_and_monitors() {
    use molt::{Down, Exit, ExitReason};
    use support::modules::{Counter, ask, testmod};

    let node = support::node("keeps");
    let built = node
        .build(
            support::modules::workspace().join("examples/testmod"),
            &molt::BuildOptions {
                target_dir: Some(support::modules::workspace().join("target/molt-test-modules")),
                ..molt::BuildOptions::default()
            },
        )
        .expect("testmod builds and loads");
    assert_eq!(built.version, "1");
    let echo = node.spawn_entry("testmod", "echo", &Counter::new()).unwrap();
    let (events, happened) = mpsc::channel();
    node.spawn(move |mut p| async move {
        p.trap_exit(true);
        p.link(echo);
        p.monitor(echo);
        p.register("echo", echo)?;
        let _ = events.send(None);
        let exit = p.expect::<Exit>().await?;
        let down = p.expect::<Down>().await?;
        let _ = events.send(Some((exit.from, exit.reason, down.pid, down.reason)));
        Ok::<(), ExitReason>(())
    });
    assert_eq!(happened.recv_timeout(support::BOUND).unwrap(), None);
    node.load(testmod("v2")).unwrap();
    let (answer, found) = support::run(&node, move |mut p| async move {
        p.send(echo, &"hot".to_owned());
        let answer = ask(&mut p, echo, 1).await;
        (answer, p.whereis("echo"))
    })
    .unwrap();
    assert_eq!(answer, (1, "2".to_owned(), 1000), "version 2 answers, state migrated");
    assert_eq!(found, Some(echo), "the name stayed");
    let info = node.processes().into_iter().find(|p| p.pid == echo).unwrap();
    assert_eq!((info.links.len(), info.monitored_by), (1, 1), "the link and the monitor stayed");
    support::run(&node, move |p| async move { p.exit(echo, ExitReason::error("done")) }).unwrap();
    let fired = happened.recv_timeout(support::BOUND).unwrap();
    let reason = ExitReason::Error("done".into());
    assert_eq!(fired, Some((echo, reason.clone(), echo, reason)));
}
