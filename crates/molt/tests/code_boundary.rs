//! The module boundary holds (issue 6, DESIGN.md rules 3–5): nothing of a
//! version outlives it, safe code cannot break the core, a misbuilt module
//! runs none of its code, private copies cannot be hijacked, purge is
//! airtight. A scenario whose failure would be a crash of the process (a
//! jump into an unmapped library) runs in a child process.

mod support;

use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use molt::{Down, ExitReason, LoadError, Node, NodeConfig, Pid, ProcessStatus, PurgeError};
use support::child::in_child;
use support::modules::{Counter, ask, testmod, testmod_aborting};
use support::{A, BOUND, Report, Reports, alive, node, run, wait_status};

fn watched_by(reports: &Reports) -> Counter {
    Counter { count: 0, follow_upgrades: false, watcher: Some(reports.pid) }
}

/// Monitors `pid` from a process of `node`; the `Down` arrives on the
/// returned channel.
fn monitor(node: &Node, pid: Pid) -> std::sync::mpsc::Receiver<Down> {
    let (set, monitored) = std::sync::mpsc::channel();
    let (down, downs) = std::sync::mpsc::channel();
    node.spawn(move |mut p| async move {
        p.monitor(pid);
        let _ = set.send(());
        if let Ok(message) = p.expect::<Down>().await {
            let _ = down.send(message);
        }
    });
    monitored.recv_timeout(BOUND).expect("the monitor is set");
    downs
}

fn send_number(node: &Node, to: Pid, n: u64) {
    run(node, move |p| async move { p.send(to, &n) }).unwrap();
}

/// Item 1: a receive polled under a waker made by module code (inside
/// `FuturesUnordered`, with a timeout) leaves nothing of that waker in the
/// core: after the process moves to version 2 and version 1 is purged and
/// unmapped, its mailbox, its timer and its end touch no code of version 1.
#[test]
fn a_module_made_waker_never_outlives_its_version() {
    in_child("a_module_made_waker_never_outlives_its_version", &[], || {
        let node = node("boundary-wakers");
        node.load(testmod("")).unwrap();
        let reports = Reports::start(&node);
        let waiter = node.spawn_entry("testmod", "combinator", &watched_by(&reports)).unwrap();
        // Waiting in its receive (a core that took the combinator's waker
        // called that Suspended).
        wait_status(&node, waiter, &[ProcessStatus::Waiting, ProcessStatus::Suspended]);
        node.load(testmod("v2")).unwrap();
        send_number(&node, waiter, 7);
        assert_eq!(reports.next(), Report::Number("combinator".into(), 7));
        // It hot-called into version 2's echo (migrate adds 1000).
        let answer = run(&node, move |mut p| async move { ask(&mut p, waiter, 1).await }).unwrap();
        assert_eq!(answer, (1, "2".to_owned(), 1000));
        let unloaded = node.soft_purge("testmod").unwrap().expect("version 1 was old");
        assert_eq!((unloaded.version.as_str(), unloaded.still_mapped), ("1", Some(false)));
        // Messages, a timer reset and the process's end after the unmap.
        let downs = monitor(&node, waiter);
        let answer = run(&node, move |mut p| async move {
            let answer = ask(&mut p, waiter, 2).await;
            p.send(waiter, &"stop".to_owned());
            answer
        })
        .unwrap();
        assert_eq!(answer, (2, "2".to_owned(), 1001));
        assert_eq!(downs.recv_timeout(BOUND).unwrap().reason, ExitReason::Normal);
        node.shutdown();
    });
}

/// Item 2: a closure spawned through a `Process` handed to another process,
/// or from another thread, runs under the version whose code it is: it is
/// listed under that version and killed by its purge.
#[test]
fn closures_spawned_outside_their_owners_poll_belong_to_their_version() {
    in_child("closures_spawned_outside_their_owners_poll_belong_to_their_version", &[], || {
        let node = node("boundary-closures");
        node.load(testmod("")).unwrap();
        let reports = Reports::start(&node);
        node.spawn_entry("testmod", "handoff", &watched_by(&reports)).unwrap();
        let handed = reports.pid("handoff");
        node.spawn_entry("testmod", "from_thread", &watched_by(&reports)).unwrap();
        let threaded = reports.pid("from_thread");
        let listed = node.modules()[0].current.clone().unwrap().processes;
        assert!(listed.contains(&handed) && listed.contains(&threaded), "{listed:?} lists both closures");
        let (handed_down, threaded_down) = (monitor(&node, handed), monitor(&node, threaded));
        node.load(testmod("v2")).unwrap();
        let report = node.purge("testmod").unwrap();
        assert!(report.killed.contains(&handed) && report.killed.contains(&threaded), "{report:?}");
        let purged = ExitReason::Purged { module: "testmod".into(), version: "1".into() };
        assert_eq!(handed_down.recv_timeout(BOUND).unwrap().reason, purged);
        assert_eq!(threaded_down.recv_timeout(BOUND).unwrap().reason, purged);
        assert!(!alive(&node, handed) && !alive(&node, threaded));
        // Were they still alive, this would run unmapped code.
        send_number(&node, handed, 1);
        send_number(&node, threaded, 1);
        node.shutdown();
    });
}

/// Item 4: a body that kept its `Process` in a static across a hot call
/// cannot re-enter its own mailbox from inside a receive's predicate: the
/// inner receive is refused, the process ends with a reason saying why, and
/// no message is delivered twice.
#[test]
fn a_stale_process_cannot_receive_inside_a_receive() {
    in_child("a_stale_process_cannot_receive_inside_a_receive", &[], || {
        let node = node("boundary-stale");
        node.load(testmod("")).unwrap();
        let reports = Reports::start(&node);
        let stasher = node.spawn_entry("testmod", "stash", &watched_by(&reports)).unwrap();
        let downs = monitor(&node, stasher);
        send_number(&node, stasher, 1);
        send_number(&node, stasher, 2);
        let down = downs.recv_timeout(BOUND).unwrap();
        match &down.reason {
            ExitReason::Panicked(why) => assert!(why.contains("inside another receive's predicate"), "{why}"),
            other => panic!("expected the nested receive to be refused, got {other:?}"),
        }
        assert_eq!(
            reports.try_next(Duration::from_millis(200)),
            None,
            "nothing was delivered through the stale handle"
        );
        node.shutdown();
    });
}

/// Items 5 and 6: a module built against a contract of another layout
/// under the same ABI version, and one built with another SDK version, are
/// refused from the file's bytes: their initialisers never run. The same
/// initialiser in an accepted build does run (so the check can fail).
#[test]
fn misbuilt_modules_are_refused_before_any_of_their_code_runs() {
    let node = node("boundary-misbuilt");
    let me = std::process::id();
    let marker = |build: &str| std::env::temp_dir().join(format!("molt-testmod-init-{me}-{build}"));
    for build in ["skewed-layout", "wrong-sdk", "accepted"] {
        let _ = std::fs::remove_file(marker(build));
    }

    match node.load(testmod("skewed-layout,init-effect")) {
        Err(LoadError::LayoutMismatch { expected, found, .. }) => assert_ne!(expected, found),
        other => panic!("expected a layout mismatch, got {other:?}"),
    }
    assert!(!marker("skewed-layout").exists(), "the skewed module's initialiser ran");

    match node.load(testmod("wrong-sdk,init-effect")) {
        Err(LoadError::BuildMismatch { what, found, .. }) => {
            assert_eq!((what, found.as_str()), ("molt SDK version", "0.0.0-other"));
        }
        other => panic!("expected a build mismatch, got {other:?}"),
    }
    assert!(!marker("wrong-sdk").exists(), "the refused module's initialiser ran");

    node.load(testmod("init-effect")).unwrap();
    assert!(marker("accepted").exists(), "the accepted module's initialiser ran");
    let _ = std::fs::remove_file(marker("accepted"));
    assert!(node.modules().iter().all(|m| m.old.is_none()), "one version each");
    node.shutdown();
}

/// Item 7: a module built with `panic = "abort"` is refused.
#[test]
fn a_module_that_aborts_on_panic_is_refused() {
    let node = node("boundary-abort");
    let error = node.load(testmod_aborting()).expect_err("an aborting module is refused");
    assert!(matches!(error, LoadError::AbortsOnPanic { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("panic = \"abort\"") && message.contains("unwind"), "{message}");
    assert!(node.modules().is_empty());
    node.shutdown();
}

/// Item 8: a version is opened from a private copy that has no name in any
/// directory (an unnamed file, or a sealed memory file), so nobody can
/// replace or redirect it, and it leaves nothing on disk.
#[test]
fn private_copies_have_no_name_and_leave_nothing_behind() {
    let me = std::process::id();
    let before = leftovers(me);
    let node = node("boundary-copies");
    let loaded = node.load(testmod("")).unwrap();
    assert!(loaded.copy.ends_with(" (deleted)"), "{}", loaded.copy);
    let path = loaded.copy.trim_end_matches(" (deleted)");
    assert!(!std::path::Path::new(path).exists(), "{path} is not a file anybody can reach");
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(maps.lines().any(|line| line.ends_with(&loaded.copy)), "the module is mapped from its copy");
    assert_eq!(leftovers(me), before, "nothing was written to the temp directory");
    node.shutdown();
}

/// Files in the temp directory that a node of process `me` could have made.
fn leftovers(me: u32) -> Vec<String> {
    let prefix = format!("molt-{me}-");
    let mut found: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(&prefix))
        .collect();
    found.sort();
    found
}

/// Item 9: a receive polled under a combinator's waker is woken by the next
/// message, however many receives came before it under other wakers (the
/// wakers used to be told apart by a stack address).
#[test]
fn a_receive_in_a_combinator_is_woken_every_time() {
    // One scheduler: the helper answers only once the receive has waited.
    let node = Node::start(NodeConfig::new("boundary-wakeup").workers(1)).unwrap();
    let received = run(&node, |mut p| async move {
        let me = p.self_pid();
        let helper = p.spawn(|mut h| async move {
            loop {
                let (to, n): (Pid, u32) = h.expect().await?;
                h.send(to, &A(n));
            }
            #[allow(unreachable_code)]
            Ok::<(), molt::ReceiveError>(())
        });
        let mut received = Vec::new();
        for round in 0..5u32 {
            p.send(helper, &(me, round));
            let mut waiting = FuturesUnordered::new();
            waiting.push(p.expect_timeout::<A>(Duration::from_secs(20)));
            received.push(waiting.next().await.expect("one future"));
        }
        received
    })
    .unwrap();
    assert_eq!(received, (0..5).map(|n| Ok(A(n))).collect::<Vec<_>>());
    node.shutdown();
}

/// Item 10: from the moment a purge starts nothing new starts in the
/// version: a closure spawned by a purged process's drop code is refused,
/// and the purge ends promptly with the version gone.
#[test]
fn purge_refuses_a_spawn_into_the_version_it_purges() {
    let node = node("boundary-airtight");
    node.load(testmod("")).unwrap();
    let reports = Reports::start(&node);
    let dropper = node.spawn_entry("testmod", "respawn_on_drop", &watched_by(&reports)).unwrap();
    node.load(testmod("v2")).unwrap();
    let report = node.purge("testmod").unwrap();
    assert_eq!(report.killed, vec![dropper]);
    let refused = reports.pid("respawned");
    assert!(!alive(&node, refused), "the spawn into the purged version started nothing");
    let module = node.modules().into_iter().next().unwrap();
    assert!(module.old.is_none() && module.current.unwrap().version == "2");
    node.load(testmod("v3")).unwrap();
    node.shutdown();
}

/// Item 10: a purge whose processes never end leaves the version in the
/// table, still purging: loading another version is refused, so there are
/// never three.
#[test]
fn a_stuck_purge_keeps_the_version_and_refuses_a_third() {
    in_child("a_stuck_purge_keeps_the_version_and_refuses_a_third", &[], || {
        let node = Node::start(
            NodeConfig::new("boundary-stuck")
                .workers(2)
                .purge_timeout(Duration::from_millis(500))
                .shutdown_timeout(Duration::from_millis(500)),
        )
        .unwrap();
        node.load(testmod("")).unwrap();
        let spinner = node.spawn_entry("testmod", "spin", &()).unwrap();
        node.load(testmod("v2")).unwrap();
        // A soft purge racing the hard purge never takes the version from
        // under it: it is refused while a process runs it, then while the
        // hard purge is under way.
        let (hard, soft) = std::thread::scope(|scope| {
            let soft = scope.spawn(|| {
                let started = std::time::Instant::now();
                loop {
                    match node.soft_purge("testmod") {
                        Err(PurgeError::InUse { .. }) if started.elapsed() < BOUND => std::thread::yield_now(),
                        other => return other,
                    }
                }
            });
            (node.purge("testmod"), soft.join().unwrap())
        });
        match soft {
            Err(PurgeError::Purging { version, .. }) => assert_eq!(version, "1"),
            other => panic!("expected a purge under way, got {other:?}"),
        }
        match hard {
            Err(PurgeError::Stuck { processes, version, .. }) => {
                assert_eq!((processes, version.as_str()), (vec![spinner], "1"));
            }
            other => panic!("expected the purge to be stuck, got {other:?}"),
        }
        match node.load(testmod("v3")) {
            Err(LoadError::NotPurged { old, .. }) => assert_eq!(old, "1"),
            other => panic!("expected not purged, got {other:?}"),
        }
        // A soft purge does not take the version from under the hard purge:
        // it says a purge is under way.
        match node.soft_purge("testmod") {
            Err(PurgeError::Purging { version, .. }) => assert_eq!(version, "1"),
            other => panic!("expected a purge under way, got {other:?}"),
        }
        let module = node.modules().into_iter().next().unwrap();
        assert_eq!(module.old.unwrap().processes, vec![spinner]);
        // The spinning scheduler thread cannot be stopped: leave at once.
        support::child::done_and_exit("a_stuck_purge_keeps_the_version_and_refuses_a_third");
    });
}

/// Item 11: a process that only hot-calls itself still yields, so it can
/// be killed.
#[test]
fn a_loop_of_hot_calls_can_be_killed() {
    in_child("a_loop_of_hot_calls_can_be_killed", &[], || {
        let node = node("boundary-hot-loop");
        node.load(testmod("")).unwrap();
        let looper = node.spawn_entry("testmod", "hot_loop", &0u64).unwrap();
        let downs = monitor(&node, looper);
        run(&node, move |p| async move { p.kill(looper) }).unwrap();
        assert_eq!(downs.recv_timeout(BOUND).unwrap().reason, ExitReason::Killed);
        node.shutdown();
    });
}

/// Item 12: a panic in module code does not keep the module's file mapped
/// after its purge, even with backtraces asked for (the default panic hook
/// maps the file to print one and never unmaps it).
#[test]
fn a_panic_does_not_pin_a_module_in_memory() {
    in_child("a_panic_does_not_pin_a_module_in_memory", &[("RUST_BACKTRACE", "1")], || {
        let node = node("boundary-panic-pin");
        node.load(testmod("")).unwrap();
        let reason = run(&node, |mut p| async move {
            p.spawn_entry_with("testmod", "panics_at_once", &(), molt::SpawnOptions { link: false, monitor: true })
                .unwrap();
            p.expect::<Down>().await.unwrap().reason
        })
        .unwrap();
        assert!(matches!(reason, ExitReason::Panicked(_)), "{reason:?}");
        node.load(testmod("v2")).unwrap();
        let unloaded = node.soft_purge("testmod").unwrap().expect("version 1 was old");
        assert_eq!(unloaded.still_mapped, Some(false), "version 1 is gone from the address space");
        node.shutdown();
    });
}

/// Module code that asks std for its thread (as logging does) plants a
/// thread-exit destructor in the module's std that does not keep the module
/// mapped; scheduler threads never exit, so it never runs after the purge.
#[test]
fn a_thread_exit_destructor_of_a_purged_module_never_runs() {
    in_child("a_thread_exit_destructor_of_a_purged_module_never_runs", &[], || {
        let node = node("boundary-thread-exit");
        node.load(testmod("")).unwrap();
        let reports = Reports::start(&node);
        let namer = node.spawn_entry("testmod", "thread_name", &watched_by(&reports)).unwrap();
        // (The module's own std does not know the name the host gave it.)
        assert!(matches!(reports.next(), Report::Number(what, _) if what == "thread_name"));
        let downs = monitor(&node, namer);
        // Normal if it was still ending when the monitor was set.
        let reason = downs.recv_timeout(BOUND).unwrap().reason;
        assert!(matches!(reason, ExitReason::Normal | ExitReason::Noproc), "{reason:?}");
        node.load(testmod("v2")).unwrap();
        let unloaded = node.soft_purge("testmod").unwrap().expect("version 1 was old");
        assert_eq!(unloaded.still_mapped, Some(false));
        node.shutdown();
        // The threads now serve another node, and the process ends cleanly.
        let again = support::node("boundary-thread-exit-again");
        assert_eq!(run(&again, |p| async move { p.self_pid().node }).unwrap(), again.id());
        again.shutdown();
    });
}

/// A closure spawned (by a thread of the module's own) after its version
/// was purged and closed is refused, not taken for host code: the version's
/// pages may still be mapped, and its address range is kept to say whose
/// code it is.
#[test]
fn a_closure_spawned_after_its_version_closed_is_refused() {
    in_child("a_closure_spawned_after_its_version_closed_is_refused", &[], || {
        let node = node("boundary-late");
        node.load(testmod("")).unwrap();
        let reports = Reports::start(&node);
        let spawner = node.spawn_entry("testmod", "late_spawner", &watched_by(&reports)).unwrap();
        let downs = monitor(&node, spawner);
        let reason = downs.recv_timeout(BOUND).unwrap().reason;
        assert!(matches!(reason, ExitReason::Normal | ExitReason::Noproc), "{reason:?}");
        node.load(testmod("v2")).unwrap();
        let report = node.purge("testmod").unwrap();
        assert_eq!((report.killed.len(), report.version.as_deref()), (0, Some("1")));
        // Now the module's thread spawns.
        let go = node.spawn(|mut p| async move { p.expect::<()>().await });
        run(&node, move |p| async move { p.register("late-go", go) }).unwrap().unwrap();
        let late = reports.pid("late");
        assert!(!alive(&node, late), "the late closure was refused");
        assert!(node.processes().iter().all(|info| info.module.as_ref().is_none_or(|(_, v)| v == "2")));
        node.shutdown();
    });
}

/// Blocking work of a module (`Process::blocking`) keeps its version's code
/// mapped while it runs on the core's pool thread: a hard purge kills its
/// process at once and returns, and the version is closed only once the
/// work returned (were it closed before, the work would run unmapped code:
/// SIGSEGV, in a child process).
#[test]
fn blocking_work_keeps_its_version_until_it_returns() {
    let base = std::env::temp_dir().join(format!("molt-blocker-{}", std::process::id()));
    let base = base.to_str().unwrap().to_owned();
    in_child("blocking_work_keeps_its_version_until_it_returns", &[("MOLT_TEST_BLOCKER", &base)], || {
        let base = std::env::var("MOLT_TEST_BLOCKER").unwrap();
        let (go, done) = (format!("{base}.go"), format!("{base}.done"));
        let node = node("boundary-blocking");
        node.load(testmod("")).unwrap();
        let reports = Reports::start(&node);
        let blocker = node.spawn_entry("testmod", "blocker", &watched_by(&reports)).unwrap();
        let downs = monitor(&node, blocker);
        assert_eq!(reports.next(), Report::Number("blocking".into(), 0));
        node.load(testmod("v2")).unwrap();
        let report = node.purge("testmod").unwrap();
        assert_eq!(report.killed, [blocker]);
        let purged = ExitReason::Purged { module: "testmod".into(), version: "1".into() };
        assert_eq!(downs.recv_timeout(BOUND).unwrap().reason, purged);
        // The work waits for the go: the version stays open meanwhile.
        assert!(node.unloaded().is_empty(), "version 1 was closed while its blocking work ran");
        std::fs::write(&go, "go").unwrap();
        let start = std::time::Instant::now();
        while !std::path::Path::new(&done).exists() || node.unloaded().is_empty() {
            assert!(start.elapsed() < BOUND, "the work never finished, or version 1 was never closed after it");
            std::thread::yield_now();
        }
        assert_eq!(node.unloaded()[0].version, "1");
        let _ = (std::fs::remove_file(&go), std::fs::remove_file(&done));
        node.shutdown();
    });
}
