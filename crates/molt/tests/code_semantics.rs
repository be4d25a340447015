//! Erlang's code-loading semantics matrix (shared/ERLANG-SEMANTICS.md),
//! with molt's better answers where it has them.

mod support;

use molt::{Down, ExitReason, LoadError, PurgeError, SpawnError, UpgradeFailed};
use support::modules::{Counter, ask, testmod};
use support::{node, run};

#[test]
fn a_load_leaves_running_processes_in_their_version_and_new_spawns_get_the_new_one() {
    let node = node("semantics");
    node.load(testmod("")).unwrap();
    let old_runner = node.spawn_entry("testmod", "echo", &Counter::new()).unwrap();
    let loaded = node.load(testmod("v2")).unwrap();
    assert_eq!(loaded.version, "2");
    let new_runner = node.spawn_entry("testmod", "echo", &Counter::new()).unwrap();
    let answers = run(&node, move |mut p| async move {
        // The old runner received an Upgrade message and ignored it.
        (ask(&mut p, old_runner, 1).await, ask(&mut p, new_runner, 2).await)
    })
    .unwrap();
    assert_eq!(answers, ((1, "1".to_owned(), 0), (2, "2".to_owned(), 0)));
    let module = node.modules().into_iter().find(|m| m.name == "testmod").unwrap();
    assert_eq!(module.old.unwrap().processes, vec![old_runner]);
    assert_eq!(module.current.unwrap().processes, vec![new_runner]);
}

#[test]
fn loading_again_while_an_old_version_exists_is_refused() {
    let node = node("semantics");
    node.load(testmod("")).unwrap();
    node.load(testmod("v2")).unwrap();
    match node.load(testmod("v3")) {
        Err(LoadError::NotPurged { module, old }) => assert_eq!((module.as_str(), old.as_str()), ("testmod", "1")),
        other => panic!("expected not purged, got {other:?}"),
    }
    let module = node.modules().into_iter().find(|m| m.name == "testmod").unwrap();
    assert_eq!(module.current.unwrap().version, "2", "nothing changed");
    assert_eq!(module.old.unwrap().version, "1");
    let message = LoadError::NotPurged { module: "testmod".into(), old: "1".into() }.to_string();
    assert!(message.contains("purge it first"), "{message}");
}

#[test]
fn soft_purge_refuses_while_a_process_runs_the_old_version_and_purge_kills_it() {
    let node = node("semantics");
    node.load(testmod("")).unwrap();
    let lingering = node.spawn_entry("testmod", "echo", &Counter::new()).unwrap();
    node.load(testmod("v2")).unwrap();
    let survivor = node.spawn_entry("testmod", "echo", &Counter::new()).unwrap();
    let (watcher_done, watched) = std::sync::mpsc::channel();
    node.spawn(move |mut p| async move {
        p.monitor(lingering);
        let _ = watcher_done.send(None);
        let _ = watcher_done.send(Some(p.expect::<Down>().await));
    });
    // The monitor is in place before anything is purged.
    assert!(watched.recv_timeout(support::BOUND).unwrap().is_none());
    match node.soft_purge("testmod") {
        Err(PurgeError::InUse { module, version, processes }) => {
            assert_eq!((module.as_str(), version.as_str(), processes), ("testmod", "1", vec![lingering]));
        }
        other => panic!("expected in use, got {other:?}"),
    }
    let report = node.purge("testmod").unwrap();
    assert_eq!(report.killed, vec![lingering]);
    assert_eq!(report.version.as_deref(), Some("1"));
    let down = watched.recv_timeout(support::BOUND).unwrap().unwrap().unwrap();
    assert_eq!(down.reason, ExitReason::Purged { module: "testmod".into(), version: "1".into() });
    assert_eq!(down.reason.to_string(), "purged: testmod version 1");
    let module = node.modules().into_iter().find(|m| m.name == "testmod").unwrap();
    assert!(module.old.is_none());
    assert_eq!(run(&node, move |mut p| async move { ask(&mut p, survivor, 7).await }).unwrap().1, "2");
    let unloaded = node.unloaded();
    assert_eq!(unloaded.len(), 1);
    assert_eq!((unloaded[0].version.as_str(), unloaded[0].still_mapped), ("1", report.still_mapped));
    assert!(report.still_mapped.is_some(), "/proc/self/maps is readable here");
}

#[test]
fn a_hot_call_reaches_the_current_version_through_migrate_and_three_versions_follow_each_other() {
    let node = node("semantics");
    node.load(testmod("")).unwrap();
    let echo = node.spawn_entry("testmod", "echo", &Counter::new()).unwrap();
    let first = run(&node, move |mut p| async move { ask(&mut p, echo, 0).await }).unwrap();
    node.load(testmod("v2")).unwrap();
    let second = run(&node, move |mut p| async move {
        p.send(echo, &"hot".to_owned());
        ask(&mut p, echo, 1).await
    })
    .unwrap();
    // Version 1 is unused now: purge it softly and load a third version.
    node.soft_purge("testmod").unwrap().expect("version 1 was old");
    node.load(testmod("v3")).unwrap();
    let third = run(&node, move |mut p| async move {
        p.send(echo, &"hot".to_owned());
        ask(&mut p, echo, 2).await
    })
    .unwrap();
    // count: 1 ping, +1000 (migrate 1→2), 1 ping, +1000 (migrate 2→3).
    assert_eq!(first, (0, "1".to_owned(), 0));
    assert_eq!(second, (1, "2".to_owned(), 1001));
    assert_eq!(third, (2, "3".to_owned(), 2002));
    let info = node.processes().into_iter().find(|p| p.pid == echo).unwrap();
    assert_eq!(info.module, Some(("testmod".to_owned(), "3".to_owned())));
}

#[test]
fn a_hot_call_without_a_new_version_stays_and_keeps_the_state() {
    let node = node("semantics");
    node.load(testmod("")).unwrap();
    let echo = node.spawn_entry("testmod", "echo", &Counter::new()).unwrap();
    let answers = run(&node, move |mut p| async move {
        let before = ask(&mut p, echo, 0).await;
        p.send(echo, &"hot".to_owned());
        (before, ask(&mut p, echo, 1).await)
    })
    .unwrap();
    assert_eq!(answers, ((0, "1".to_owned(), 0), (1, "1".to_owned(), 1)), "no migrate without a version change");
}

/// A process that forwards every `UpgradeFailed` it gets to the test.
fn failure_watcher(node: &molt::Node) -> (molt::Pid, std::sync::mpsc::Receiver<UpgradeFailed>) {
    let (failures, failed) = std::sync::mpsc::channel();
    let watcher = node.spawn(move |mut p| async move {
        loop {
            let _ = failures.send(p.expect::<UpgradeFailed>().await?);
        }
        #[allow(unreachable_code)]
        Ok::<(), molt::ReceiveError>(())
    });
    (watcher, failed)
}

/// A failing or panicking migrate: the process goes on in its version with
/// its state unchanged, and is told why.
fn migrate_failure_keeps_the_old_version(features: &str, expected_reason: &str) {
    let node = node("semantics");
    node.load(testmod("")).unwrap();
    let (watcher, failures) = failure_watcher(&node);
    let state = Counter { count: 5, follow_upgrades: false, watcher: Some(watcher) };
    let echo = node.spawn_entry("testmod", "echo", &state).unwrap();
    let before = run(&node, move |mut p| async move { ask(&mut p, echo, 0).await }).unwrap();
    node.load(testmod(features)).unwrap();
    let after = run(&node, move |mut p| async move {
        p.send(echo, &"hot".to_owned());
        ask(&mut p, echo, 1).await
    })
    .unwrap();
    let failed = failures.recv_timeout(support::BOUND).expect("the failure is reported");
    assert_eq!(before, (0, "1".to_owned(), 5));
    assert_eq!(after, (1, "1".to_owned(), 6), "old version, state unchanged");
    assert_eq!((failed.module.as_str(), failed.from.as_str(), failed.to.as_str()), ("testmod", "1", "2"));
    assert!(failed.reason.contains(expected_reason), "{}", failed.reason);
    let module = node.modules().into_iter().find(|m| m.name == "testmod").unwrap();
    assert_eq!(module.old.unwrap().processes, vec![echo]);
}

#[test]
fn a_failing_migrate_keeps_the_process_in_its_version_with_its_state() {
    migrate_failure_keeps_the_old_version("v2,migrate-fails", "its migrate failed: version 2 refuses state from 1");
}

#[test]
fn a_panicking_migrate_keeps_the_process_in_its_version_with_its_state() {
    migrate_failure_keeps_the_old_version("v2,migrate-panics", "its migrate panicked: migrate exploded");
}

#[test]
fn a_hot_call_to_an_entry_the_new_version_lacks_stays_in_the_old_version() {
    let node = node("semantics");
    node.load(testmod("")).unwrap();
    let (watcher, failures) = failure_watcher(&node);
    let state = Counter { count: 0, follow_upgrades: false, watcher: Some(watcher) };
    let legacy = node.spawn_entry("testmod", "legacy", &state).unwrap();
    node.load(testmod("v2")).unwrap();
    let answer = run(&node, move |mut p| async move {
        p.send(legacy, &"hot".to_owned());
        ask(&mut p, legacy, 3).await
    })
    .unwrap();
    assert_eq!(answer, (3, "1".to_owned(), 0), "still version 1, no migration");
    let failed = failures.recv_timeout(support::BOUND).expect("the failure is reported");
    assert_eq!(failed.reason, "it has no entry \"legacy\"");
}

#[test]
fn a_process_compiled_into_the_host_cannot_hot_call() {
    let node = node("semantics");
    let reason = run(&node, |mut p| async move {
        let (native, _) = p.spawn_monitor(|mut p| async move { p.hot_call("server", &()).await });
        let down = p.expect::<Down>().await.unwrap();
        assert_eq!(down.pid, native);
        down.reason
    })
    .unwrap();
    match reason {
        ExitReason::Error(text) => assert!(text.contains("runs code compiled into the host"), "{text}"),
        other => panic!("expected an error reason, got {other}"),
    }
}

#[test]
fn spawning_what_is_not_there_is_a_clear_error() {
    let node = node("semantics");
    assert_eq!(
        node.spawn_entry("testmod", "echo", &Counter::new()),
        Err(SpawnError::NoModule { module: "testmod".into() })
    );
    node.load(testmod("")).unwrap();
    let missing = node.spawn_entry("testmod", "nope", &());
    assert_eq!(
        missing,
        Err(SpawnError::NoEntry {
            module: "testmod".into(),
            version: "1".into(),
            entry: "nope".into(),
            entries: "echo, legacy, panics_at_once, combinator, handoff, from_thread, stash, nested, respawn_on_drop, \
                      hot_loop, spin, thread_name, late_spawner, blocker"
                .into(),
        })
    );
    let from_a_process = run(&node, |p| async move { p.spawn_entry("testmod", "nope", &()) }).unwrap();
    assert_eq!(from_a_process, missing);
}

#[test]
fn an_entry_that_panics_at_once_ends_only_its_process() {
    let node = node("semantics");
    node.load(testmod("")).unwrap();
    let bystander = node.spawn_entry("testmod", "echo", &Counter::new()).unwrap();
    let (reason, bystander_answer) = run(&node, move |mut p| async move {
        let (pid, _) = p
            .spawn_entry_with("testmod", "panics_at_once", &(), molt::SpawnOptions { link: false, monitor: true })
            .unwrap();
        let down = p.expect::<Down>().await.unwrap();
        assert_eq!(down.pid, pid);
        (down.reason, ask(&mut p, bystander, 9).await)
    })
    .unwrap();
    // The module's panic hook adds where it panicked, and prints nothing.
    match &reason {
        ExitReason::Panicked(why) => assert!(
            why.starts_with("panics_at_once panicked at once (at examples/testmod/src/lib.rs:") && why.ends_with(":5)"),
            "{why}"
        ),
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_eq!(bystander_answer, (9, "1".to_owned(), 0));
}

/// A closure spawned by module code runs that version's code: it is listed
/// under the version, keeps it loaded, and a purge of the version ends it.
#[test]
fn a_closure_spawned_by_module_code_belongs_to_its_version() {
    let node = node("semantics");
    node.load(testmod("")).unwrap();
    let echo = node.spawn_entry("testmod", "echo", &Counter::new()).unwrap();
    let child = run(&node, move |mut p| async move {
        p.send(echo, &(p.self_pid(), "spawn".to_owned()));
        p.expect::<molt::Pid>().await.unwrap()
    })
    .unwrap();
    let info = node.processes().into_iter().find(|p| p.pid == child).unwrap();
    assert_eq!(info.code, "testmod:(a closure) (version 1)");
    node.load(testmod("v2")).unwrap();
    let module = node.modules().into_iter().find(|m| m.name == "testmod").unwrap();
    assert_eq!(module.old.unwrap().processes, vec![echo, child]);
    let report = node.purge("testmod").unwrap();
    assert_eq!(report.killed, vec![echo, child]);
    assert!(node.processes().iter().all(|p| p.pid != child && p.pid != echo));
}

/// A hot call whose state does not fit the new version's entry (its
/// `migrate` declares it converts version 1's state but passes it through
/// unchanged, so it does not decode) goes back to the old version with the
/// state intact, and the process gets `UpgradeFailed` saying why: a hot
/// call never loses state.
#[test]
fn a_state_that_does_not_fit_the_new_version_rolls_back_intact() {
    let node = node("semantics");
    node.load(testmod("")).unwrap();
    let (watcher, failures) = failure_watcher(&node);
    let state = Counter { count: 0, follow_upgrades: false, watcher: Some(watcher) };
    let echo = node.spawn_entry("testmod", "echo", &state).unwrap();
    let first = run(&node, move |mut p| async move { ask(&mut p, echo, 1).await }).unwrap();
    assert_eq!(first, (1, "1".to_owned(), 0));
    node.load(testmod("reshaped-pass-through")).unwrap();
    let second = run(&node, move |mut p| async move {
        p.send(echo, &"hot".to_owned());
        ask(&mut p, echo, 2).await
    })
    .unwrap();
    assert_eq!(second, (2, "1".to_owned(), 1), "still version 1, its count intact");
    let failure = failures.recv_timeout(support::BOUND).unwrap();
    assert_eq!((failure.module.as_str(), failure.from.as_str(), failure.to.as_str()), ("testmod", "1", "2"));
    assert!(
        failure.reason.contains("passed the state on unchanged") && failure.reason.contains("Reshaped {count: i64"),
        "{}",
        failure.reason
    );
    let module = node.modules().into_iter().find(|m| m.name == "testmod").unwrap();
    assert_eq!(module.old.unwrap().processes, vec![echo]);
    node.shutdown();
}

/// A start argument that does not decode as the entry's state starts
/// nothing: the spawn is refused with the reason.
#[test]
fn a_start_argument_that_does_not_fit_is_refused() {
    let node = node("semantics");
    node.load(testmod("")).unwrap();
    let before = node.process_count();
    match node.spawn_entry("testmod", "echo", &"not a counter") {
        Err(SpawnError::BadState { module, entry, reason }) => {
            assert_eq!((module.as_str(), entry.as_str()), ("testmod", "echo"));
            assert!(reason.contains("did not decode"), "{reason}");
        }
        other => panic!("expected the argument to be refused, got {other:?}"),
    }
    assert_eq!(node.process_count(), before, "nothing started");
    node.shutdown();
}
