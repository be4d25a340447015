//! The registry: names, their errors, their removal on exit, and races
//! between processes that want the same name.

mod support;

use molt::{Down, ExitReason, Pid, RegisterError};
use support::{node, ponger, run};

#[test]
fn register_whereis_and_send_by_name() {
    let node = node("registry");
    let outcome = run(&node, |mut p| async move {
        let server = p.spawn(ponger);
        p.register("server", server).unwrap();
        let found = p.whereis("server");
        let delivered = p.nsend("server", &support::Ping(p.self_pid()));
        let pong = p.expect::<support::Pong>().await.unwrap();
        (found == Some(server), delivered, pong.0 == server, p.nsend("nobody", &1u8), p.whereis("nobody"))
    });
    assert_eq!(outcome, Ok((true, true, true, false, None)));
    assert!(node.whereis("server").is_some());
}

#[test]
fn registration_errors_name_what_is_wrong() {
    let node = node("registry");
    let errors = run(&node, |mut p| async move {
        let first = p.spawn(ponger);
        let second = p.spawn(ponger);
        p.register("taken", first).unwrap();
        let taken = p.register("taken", second);
        let twice = p.register("other", first);
        let (dead, _) = p.spawn_monitor(|_| async {});
        let _ = p.expect::<Down>().await;
        let noproc = p.register("ghost", dead);
        let empty = p.register("", second);
        (first, second, dead, vec![taken, twice, noproc, empty])
    })
    .unwrap();
    let (first, second, dead, errors) = errors;
    assert_eq!(
        errors,
        vec![
            Err(RegisterError::NameTaken { name: "taken".into(), holder: first }),
            Err(RegisterError::AlreadyRegistered { pid: first }),
            Err(RegisterError::Noproc { pid: dead }),
            Err(RegisterError::BadName),
        ]
    );
    assert_ne!(first, second);
    let message = RegisterError::NameTaken { name: "taken".into(), holder: first }.to_string();
    assert!(message.contains("already registered") && message.contains("unregister it first"), "{message}");
}

#[test]
fn a_name_goes_away_with_its_process_and_can_be_taken_again() {
    let node = node("registry");
    let outcome = run(&node, |mut p| async move {
        let (holder, _) = p.spawn_monitor(|mut p| async move { p.expect::<()>().await.map(drop) });
        p.register("service", holder).unwrap();
        p.send(holder, &());
        let down = p.expect::<Down>().await.unwrap();
        // The name is removed before the monitor fires.
        let after_exit = p.whereis("service");
        let successor = p.spawn(ponger);
        let again = p.register("service", successor);
        let unregistered = p.unregister("service");
        (down.reason, after_exit, again, unregistered, p.whereis("service"), p.unregister("service"))
    });
    assert_eq!(outcome, Ok((ExitReason::Normal, None, Ok(()), true, None, false)));
}

/// Fifty rounds of eight processes, on both scheduler threads, racing to
/// register one name: exactly one wins each round, and every loser is told
/// who won.
#[test]
fn racing_registrations_have_exactly_one_winner() {
    const RACERS: usize = 8;
    let node = node("registry");
    for round in 0..50 {
        let name = format!("contested-{round}");
        let (report, reports) = std::sync::mpsc::channel::<(Pid, Result<(), RegisterError>)>();
        let racers: Vec<Pid> = (0..RACERS)
            .map(|_| {
                let (report, name) = (report.clone(), name.clone());
                node.spawn(move |mut p| async move {
                    p.expect::<()>().await?;
                    let me = p.self_pid();
                    let _ = report.send((me, p.register(&name, me)));
                    p.expect::<()>().await.map(drop)
                })
            })
            .collect();
        let starters = racers.clone();
        run(&node, move |p| async move {
            for racer in &starters {
                p.send(*racer, &());
            }
        })
        .unwrap();
        let results: Vec<_> =
            (0..RACERS).map(|_| reports.recv_timeout(support::BOUND).expect("a racer reports")).collect();
        let winners: Vec<Pid> = results.iter().filter(|(_, r)| r.is_ok()).map(|(pid, _)| *pid).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for (_, result) in results.iter().filter(|(_, r)| r.is_err()) {
            assert_eq!(result, &Err(RegisterError::NameTaken { name: name.clone(), holder: winners[0] }));
        }
        assert_eq!(node.whereis(&name), Some(winners[0]));
        run(&node, move |p| async move {
            for racer in &racers {
                p.send(*racer, &());
            }
        })
        .unwrap();
    }
}

/// `monitor_name` watches whoever has the name now (Erlang
/// `monitor(process, Name)`); a name nobody has answers `Noproc` at once.
#[test]
fn a_name_can_be_monitored() {
    let node = support::node("registry");
    let (named, nobody) = support::run(&node, |mut p| async move {
        let holder = p.spawn(|mut p| async move { p.expect::<()>().await.map(drop) });
        p.register("registry.watched", holder).unwrap();
        let watch = p.monitor_name("registry.watched");
        assert_eq!(watch.target, holder);
        p.send(holder, &());
        let named = p.receive().on_if(move |d: &molt::Down| d.monitor == watch, |d| (d.pid, d.reason)).await;
        let missing = p.monitor_name("registry.nobody");
        let nobody = p.receive().on_if(move |d: &molt::Down| d.monitor == missing, |d| d.reason).await;
        (named.map(|(pid, reason)| (pid == holder, reason)), nobody)
    })
    .unwrap();
    assert_eq!(named, Ok((true, molt::ExitReason::Normal)));
    assert_eq!(nobody, Ok(molt::ExitReason::Noproc));
}
