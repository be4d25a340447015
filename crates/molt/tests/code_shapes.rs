//! Shapes across module versions: a load that changes an entry's state
//! shape without a declared conversion is refused, one that declares it is
//! accepted and carries the state; a message type that changed shape under
//! its name is a warning (or a refusal, if asked); `modules()` shows every
//! shape, the same fingerprint in the host and in every build of a module;
//! and a load can wait for its processes' upgrade outcomes.

mod support;

use std::time::Duration;

use molt::{LoadError, LoadOptions, Message, Pid, Shape, ShapeChange, UpgradeOutcome};
use serde::{Deserialize, Serialize};
use support::modules::{Counter, ask, testmod};
use support::{node, run};

/// The host's copy of testmod's version-1 `Note`.
#[derive(Serialize, Deserialize, Message)]
#[message(name = "testmod.Note")]
struct Note {
    text: String,
}

fn echo_state_shape(version: &molt::VersionInfo) -> &molt::TracedShape {
    &version.shapes.entries.iter().find(|entry| entry.entry == "echo").expect("echo is described").state
}

#[test]
fn a_changed_state_shape_is_refused_without_a_declared_conversion_and_carried_with_one() {
    let node = node("shapes");
    node.load(testmod("")).unwrap();
    let echo = node.spawn_entry("testmod", "echo", &Counter::new()).unwrap();
    let answered = run(&node, move |mut p| async move { (ask(&mut p, echo, 1).await, ask(&mut p, echo, 2).await) });
    assert_eq!(answered.unwrap(), ((1, "1".to_owned(), 0), (2, "1".to_owned(), 1)));

    match node.load(testmod("reshaped")) {
        Err(error @ LoadError::StateShapeChanged(_)) => {
            let text = error.to_string();
            let LoadError::StateShapeChanged(change) = error else { unreachable!() };
            let ShapeChange { module, what, from, to, old, new, .. } = *change;
            assert_eq!((module.as_str(), what.as_str(), from.as_str(), to.as_str()), ("testmod", "echo", "1", "2"));
            assert_eq!(old.description, "Counter {count: u64, follow_upgrades: bool, watcher: Option<Pid>}");
            assert_eq!(new.description, "Reshaped {count: i64, label: str}");
            assert_eq!(old.shape, Shape::trace::<Counter>().unwrap().shape);
            assert!(text.contains("migrates_from: [\"1\"]"), "the error says what to write: {text}");
        }
        other => panic!("expected the changed state to be refused, got {other:?}"),
    }
    // Nothing changed: version 1 is still the only one, and echo runs it.
    let module = node.modules().into_iter().find(|m| m.name == "testmod").unwrap();
    assert_eq!((module.current.unwrap().version.as_str(), module.old), ("1", None));

    let loaded = node.load(testmod("reshaped-converts")).unwrap();
    assert_eq!(loaded.shapes.migrates_from, ["1"]);
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(
        loaded.warnings[0].contains("Note") && loaded.warnings[0].contains("urgent: bool"),
        "{:?}",
        loaded.warnings
    );
    let moved = run(&node, move |mut p| async move {
        p.send(echo, &"hot".to_owned());
        ask(&mut p, echo, 3).await
    });
    assert_eq!(moved.unwrap(), (3, "2-reshaped converted".to_owned(), 2), "the count carried across");
    node.shutdown();
}

/// The host's copy of version 2's `Note`.
mod v2 {
    use super::*;
    #[derive(Serialize, Deserialize, Message)]
    #[message(name = "testmod.Note")]
    pub(super) struct Note {
        pub(super) text: String,
        pub(super) urgent: bool,
    }
}

#[test]
fn an_upgraded_process_takes_both_shapes_of_a_message_from_senders_old_and_new() {
    let node = node("shapes");
    node.load(testmod("")).unwrap();
    let echo = node.spawn_entry("testmod", "echo", &Counter::new()).unwrap();
    node.load(testmod("reshaped-converts")).unwrap();
    let read = run(&node, move |mut p| async move {
        let me = p.self_pid();
        p.send(echo, &"hot".to_owned());
        assert_eq!(ask(&mut p, echo, 1).await.1, "2-reshaped converted");
        // A sender still on the old shape, then one on the new, then old.
        p.send(echo, &(me, Note { text: "a".into() }));
        p.send(echo, &(me, v2::Note { text: "b".into(), urgent: true }));
        p.send(echo, &(me, Note { text: "c".into() }));
        let mut read = Vec::new();
        for _ in 0..3 {
            read.push(p.expect::<String>().await.unwrap());
        }
        read
    });
    assert_eq!(read.unwrap(), [r#"old note "a""#, r#"new note "b", urgent true"#, r#"old note "c""#]);
    node.shutdown();
}

#[test]
fn a_changed_message_shape_is_refused_when_asked() {
    let node = node("shapes");
    node.load(testmod("")).unwrap();
    let options = LoadOptions { refuse_changed_messages: true, ..LoadOptions::default() };
    match node.load_with(testmod("reshaped-converts"), &options) {
        Err(error @ LoadError::MessageShapeChanged(_)) => {
            let text = error.to_string();
            let LoadError::MessageShapeChanged(change) = error else { unreachable!() };
            let ShapeChange { what, old, new, .. } = *change;
            assert_eq!(what, "Note");
            assert_eq!(
                (old.description.as_str(), new.description.as_str()),
                ("Note {text: str}", "Note {text: str, urgent: bool}")
            );
            assert!(text.contains("new name"), "{text}");
        }
        other => panic!("expected the changed message to be refused, got {:?}", other.map(|l| l.version)),
    }
    node.shutdown();
}

#[test]
fn every_shape_is_listed_and_the_same_in_the_host_and_in_every_build() {
    let node = node("shapes");
    let v1 = node.load(testmod("")).unwrap();
    let messages: Vec<(&str, Shape)> = v1.shapes.messages.iter().map(|m| (m.name.as_str(), m.shape.shape)).collect();
    assert_eq!(messages, [("Note", Note::shape()), ("(Pid, u64)", <(Pid, u64)>::shape())]);
    assert_eq!(v1.shapes.messages[0].tag, Note::TAG);
    assert_eq!(echo_state_shape(&v1).shape, Shape::trace::<Counter>().unwrap().shape);
    let entries: Vec<&str> = v1.shapes.entries.iter().map(|e| e.entry.as_str()).collect();
    assert_eq!(entries, v1.entries);
    // Version 2 is another build of the same types.
    let v2 = node.load(testmod("v2")).unwrap();
    assert_eq!(v2.shapes.messages, v1.shapes.messages);
    assert_eq!(echo_state_shape(&v2), echo_state_shape(&v1));
    assert!(v2.warnings.is_empty(), "{:?}", v2.warnings);
    let listed = node.modules().into_iter().find(|m| m.name == "testmod").unwrap();
    assert_eq!(listed.current.unwrap().shapes, v2.shapes);
    node.shutdown();
}

#[test]
fn a_load_can_wait_for_each_process_to_move_or_fail() {
    for (features, expected) in [
        ("reshaped-converts", UpgradeOutcome::Moved),
        ("reshaped-pass-through", UpgradeOutcome::Failed { reason: String::new() }),
    ] {
        let node = node("shapes");
        node.load(testmod("")).unwrap();
        let follower = Counter { count: 0, follow_upgrades: true, watcher: None };
        let echoes: Vec<Pid> = (0..3).map(|_| node.spawn_entry("testmod", "echo", &follower).unwrap()).collect();
        let options = LoadOptions { await_upgrades: Some(support::BOUND), ..LoadOptions::default() };
        let loaded = node.load_with(testmod(features), &options).unwrap();
        let pids: Vec<Pid> = loaded.upgrades.iter().map(|u| u.pid).collect();
        assert_eq!(pids, echoes);
        for upgrade in &loaded.upgrades {
            match (&upgrade.outcome, &expected) {
                (UpgradeOutcome::Moved, UpgradeOutcome::Moved) => {}
                (UpgradeOutcome::Failed { reason }, UpgradeOutcome::Failed { .. }) => {
                    assert!(reason.contains("passed the state on unchanged"), "{reason}")
                }
                (outcome, _) => panic!("{features}: expected {expected:?}, got {outcome:?}"),
            }
        }
        node.shutdown();
    }
}

#[test]
fn a_process_that_does_not_take_its_upgrade_by_the_deadline_stayed() {
    let node = node("shapes");
    node.load(testmod("")).unwrap();
    let stays = node.spawn_entry("testmod", "echo", &Counter::new()).unwrap();
    let options = LoadOptions { await_upgrades: Some(Duration::from_millis(200)), ..LoadOptions::default() };
    let loaded = node.load_with(testmod("v2"), &options).unwrap();
    assert_eq!(loaded.upgrades.len(), 1);
    assert_eq!((loaded.upgrades[0].pid, &loaded.upgrades[0].outcome), (stays, &UpgradeOutcome::Stayed));
    let answer = run(&node, move |mut p| async move { ask(&mut p, stays, 1).await }).unwrap();
    assert_eq!(answer, (1, "1".to_owned(), 0), "it still runs version 1");
    node.shutdown();
}

/// A `migrate` that converts a state whose field was renamed makes the old
/// bytes again: it is a conversion, not a pass-through, and the process
/// moves with its state.
#[test]
fn a_converting_migrate_that_makes_the_same_bytes_moves_the_process() {
    let node = node("shapes");
    node.load(testmod("")).unwrap();
    let follower = Counter { count: 7, follow_upgrades: true, watcher: None };
    let echo = node.spawn_entry("testmod", "echo", &follower).unwrap();
    let options = LoadOptions { await_upgrades: Some(support::BOUND), ..LoadOptions::default() };
    let loaded = node.load_with(testmod("renamed"), &options).unwrap();
    assert_eq!(loaded.upgrades.len(), 1);
    assert_eq!(loaded.upgrades[0].outcome, UpgradeOutcome::Moved);
    let answer = run(&node, move |mut p| async move { ask(&mut p, echo, 1).await }).unwrap();
    assert_eq!(answer, (1, "2-renamed".to_owned(), 7));
    node.shutdown();
}

/// A process whose old body takes a while to drop has answered (moved)
/// before it leaves the old version: the load reports it moved.
#[test]
fn a_process_whose_old_body_drops_slowly_is_reported_moved() {
    let node = node("shapes");
    node.load(testmod("slow-drop")).unwrap();
    let follower = Counter { count: 0, follow_upgrades: true, watcher: None };
    let echoes: Vec<Pid> = (0..2).map(|_| node.spawn_entry("testmod", "echo", &follower).unwrap()).collect();
    let options = LoadOptions { await_upgrades: Some(support::BOUND), ..LoadOptions::default() };
    let loaded = node.load_with(testmod("v2"), &options).unwrap();
    let outcomes: Vec<(Pid, UpgradeOutcome)> = loaded.upgrades.into_iter().map(|u| (u.pid, u.outcome)).collect();
    assert_eq!(outcomes, echoes.iter().map(|pid| (*pid, UpgradeOutcome::Moved)).collect::<Vec<_>>());
    node.shutdown();
}

#[test]
fn a_load_that_would_wait_from_inside_a_process_is_refused() {
    let node = std::sync::Arc::new(node("shapes"));
    node.load(testmod("")).unwrap();
    let path = testmod("v2");
    let inside = node.clone();
    let refused = run(&node, move |_p| async move {
        let options = LoadOptions { await_upgrades: Some(support::BOUND), ..LoadOptions::default() };
        inside.load_with(path, &options).map(|loaded| loaded.version.version)
    })
    .unwrap();
    match refused {
        Err(error @ LoadError::AwaitFromProcess) => assert!(error.to_string().contains("outside"), "{error}"),
        other => panic!("expected the wait to be refused, got {other:?}"),
    }
    let module = node.modules().into_iter().find(|m| m.name == "testmod").unwrap();
    assert_eq!(module.current.unwrap().version, "1", "nothing was loaded");
}

/// The host's copy of the `thread-probe` build's state.
#[derive(Serialize, Deserialize)]
struct Renamed {
    total: u64,
    follow_upgrades: bool,
    watcher: Option<Pid>,
}

/// Module code the core runs outside a process — a module tracing its
/// shapes at load, an entry decoding its start argument — runs on a pool
/// thread that never exits: a state whose `Deserialize` makes std register
/// a thread-exit destructor (`std::thread::current()`) cannot leave one on
/// a host thread that outlives the module (a refused load, or a version
/// purged before the thread ends), where it would jump into unmapped code.
#[test]
fn module_code_run_for_a_host_thread_leaves_nothing_on_it() {
    support::child::in_child("module_code_run_for_a_host_thread_leaves_nothing_on_it", &[], || {
        let node = node("shapes");
        node.load(testmod("")).unwrap();
        let probe = testmod("thread-probe");
        std::thread::scope(|s| {
            s.spawn(|| match node.load(&probe) {
                Err(LoadError::StateShapeChanged(_)) => {}
                other => panic!("expected the changed state to be refused, got {:?}", other.map(|v| v.version)),
            });
        });
        let other = support::node("shapes-2");
        std::thread::scope(|s| {
            s.spawn(|| {
                other.load(&probe).unwrap();
                let state = Renamed { total: 3, follow_upgrades: false, watcher: None };
                other.spawn_entry("testmod", "echo", &state).unwrap();
                other.load(testmod("renamed")).unwrap();
                let report = other.purge("testmod").unwrap();
                assert_eq!(report.killed.len(), 1);
            });
        });
        // Both threads have exited, after their module versions were closed.
        other.shutdown();
        node.shutdown();
    });
}
