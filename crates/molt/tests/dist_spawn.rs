//! `spawn_entry_on`: a module entry started on another node, the module
//! loaded there; with a link and a monitor in place before the process
//! runs, so one that ends at once still reports its exact reason; errors
//! come back by name, and a node that cannot be reached says why.

mod support;

use molt::{Down, Exit, ExitReason, NodeDownReason, SpawnError, SpawnOptions};
use support::dist::{dist_node, round_trip};
use support::modules::{Counter, ask, testmod};
use support::{BOUND, run};

const PLAIN: SpawnOptions = SpawnOptions { link: false, monitor: false };
const LINKED_AND_MONITORED: SpawnOptions = SpawnOptions { link: true, monitor: true };

#[test]
fn a_module_entry_spawned_on_another_node_runs_there() {
    let (a, b) = (dist_node("a"), dist_node("b"));
    b.load(testmod("")).unwrap();
    let b_name = b.name().to_owned();
    let (pid, answer) = run(&a, move |mut p| async move {
        // Not connected yet: the spawn connects.
        let (pid, monitor) =
            p.spawn_entry_on(&b_name, "testmod", "echo", &Counter::new(), PLAIN).await.expect("spawned there");
        assert_eq!(monitor, None);
        (pid, ask(&mut p, pid, 5).await)
    })
    .unwrap();
    assert_eq!(pid.node, b.id());
    assert!(b.processes().iter().any(|info| info.pid == pid));
    assert_eq!(answer, (5, "1".to_owned(), 0));
}

#[test]
fn a_process_spawned_linked_and_monitored_that_ends_at_once_reports_its_reason() {
    let (a, b) = (dist_node("a"), dist_node("b"));
    b.load(testmod("")).unwrap();
    a.connect(b.name()).unwrap();
    let b_name = b.name().to_owned();
    // Ten times: the process may end before or after the answer crosses.
    for _ in 0..10 {
        let b_name = b_name.clone();
        let (pid, monitor, exit, down) = run(&a, move |mut p| async move {
            p.trap_exit(true);
            let (pid, monitor) = p
                .spawn_entry_on(&b_name, "testmod", "panics_at_once", &(), LINKED_AND_MONITORED)
                .await
                .expect("spawned there");
            let exit = p.receive_timeout(BOUND).on_if(move |e: &Exit| e.from == pid, |e| e.reason).await;
            let down = p.receive_timeout(BOUND).on_if(move |d: &Down| d.pid == pid, |d| d).await;
            (pid, monitor, exit, down)
        })
        .unwrap();
        let panicked =
            ExitReason::Panicked("panics_at_once panicked at once (at examples/testmod/src/lib.rs:160:5)".into());
        assert_eq!(exit, Ok(panicked.clone()));
        let down = down.expect("a Down");
        assert_eq!((Some(down.monitor), down.reason), (monitor, panicked));
        assert_eq!(monitor.map(|m| m.target), Some(pid));
    }
}

#[test]
fn a_spawn_that_cannot_start_says_why() {
    let (a, b) = (dist_node("a"), dist_node("b"));
    b.load(testmod("")).unwrap();
    let (b_name, a_name) = (b.name().to_owned(), a.name().to_owned());
    let errors = run(&a, move |mut p| async move {
        let no_module = p.spawn_entry_on(&b_name, "nomod", "echo", &(), PLAIN).await;
        let no_entry = p.spawn_entry_on(&b_name, "testmod", "nothing", &(), PLAIN).await;
        let bad_state = p.spawn_entry_on(&b_name, "testmod", "echo", &"not a counter", PLAIN).await;
        let nowhere = p.spawn_entry_on("z@127.0.0.1:1", "testmod", "echo", &Counter::new(), PLAIN).await;
        // This node's own name spawns here, where testmod is not loaded.
        let here = p.spawn_entry_on(&a_name, "testmod", "echo", &Counter::new(), PLAIN).await;
        (no_module, no_entry, bad_state, nowhere, here)
    })
    .unwrap();
    let (no_module, no_entry, bad_state, nowhere, here) = errors;
    assert_eq!(no_module, Err(SpawnError::NoModule { module: "nomod".into() }));
    assert!(matches!(no_entry, Err(SpawnError::NoEntry { ref entry, .. }) if entry == "nothing"), "{no_entry:?}");
    assert!(matches!(bad_state, Err(SpawnError::BadState { .. })), "{bad_state:?}");
    assert!(
        matches!(nowhere, Err(SpawnError::NoConnection { ref node, why: NodeDownReason::Unreachable(_) }) if node == "z@127.0.0.1:1"),
        "{nowhere:?}"
    );
    assert_eq!(here, Err(SpawnError::NoModule { module: "testmod".into() }));
    // The nodes go on.
    assert_eq!(round_trip(&a, &b, 9), Ok(Ok(9)));
}
