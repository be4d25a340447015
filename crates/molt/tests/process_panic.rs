//! A panic ends the one process that panicked: its monitors see the panic's
//! message, and every other process keeps running.

mod support;

use molt::{Down, ExitReason, Pid};
use support::{Ping, Pong, node, ponger, run};

#[test]
fn a_panicking_process_leaves_ten_thousand_others_unharmed() {
    const OTHERS: usize = 10_000;
    let node = node("panic");
    let (reason, answered) = run(&node, |mut p| async move {
        let others: Vec<Pid> = (0..OTHERS).map(|_| p.spawn(ponger)).collect();
        let (doomed, _) = p.spawn_monitor(|mut p| async move {
            p.expect::<()>().await?;
            let numbers: Vec<u32> = Vec::new();
            // An index out of bounds, as real code panics.
            let third = numbers[3];
            p.send(p.self_pid(), &third);
            Ok::<(), molt::ReceiveError>(())
        });
        p.send(doomed, &());
        let down = p.expect::<Down>().await.unwrap();
        assert_eq!(down.pid, doomed);
        let me = p.self_pid();
        for other in &others {
            p.send(*other, &Ping(me));
        }
        let mut answered = std::collections::HashSet::new();
        for _ in 0..OTHERS {
            answered.insert(p.expect::<Pong>().await.unwrap().0);
        }
        for other in &others {
            p.send(*other, &());
        }
        (down.reason, answered.len() == OTHERS && others.iter().all(|o| answered.contains(o)))
    })
    .unwrap();
    match reason {
        ExitReason::Panicked(message) => {
            assert!(message.contains("index out of bounds"), "{message}")
        }
        other => panic!("expected a panic reason, got {other}"),
    }
    assert!(answered);
}

#[test]
fn a_panic_in_a_receive_predicate_ends_only_that_process() {
    let node = node("panic");
    let reason = run(&node, |mut p| async move {
        let (pid, _) = p.spawn_monitor(|mut p| async move {
            p.receive()
                .on_if(
                    |n: &u32| {
                        if *n == 3 { panic!("predicate saw 3") } else { true }
                    },
                    |n| n,
                )
                .await
                .map(drop)
        });
        p.send(pid, &3u32);
        p.expect::<Down>().await.unwrap().reason
    });
    assert_eq!(reason, Ok(ExitReason::Panicked("predicate saw 3".into())));
}

#[test]
fn a_panic_while_a_process_is_dropped_is_contained() {
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("drop failed");
        }
    }
    let node = node("panic");
    let outcome = run(&node, |mut p| async move {
        let (victim, _) = p.spawn_monitor(|mut p| async move {
            let _guard = PanicsOnDrop;
            p.expect::<()>().await.map(drop)
        });
        p.kill(victim);
        let down = p.expect::<Down>().await.unwrap();
        let (after, _) = p.spawn_monitor(|_| async {});
        let next = p.expect::<Down>().await.unwrap();
        (down.reason, next.pid == after, next.reason)
    });
    assert_eq!(outcome, Ok((ExitReason::Killed, true, ExitReason::Normal)));
}
