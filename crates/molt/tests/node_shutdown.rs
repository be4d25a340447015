//! Node shutdown: every process ends, busy or idle, and `shutdown` returns.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use molt::{Pid, Process, ReceiveError};
use support::node;

/// Counts the process bodies that have been dropped.
struct Dropped(Arc<AtomicUsize>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Bounces a number back and forth forever: never waits for long, so it
/// only stops if the core makes it yield.
async fn bounce(mut p: Process, guard: Dropped) -> Result<(), ReceiveError> {
    let _guard = guard;
    let partner: Pid = p.expect().await?;
    loop {
        let n: u64 = p.expect().await?;
        p.send(partner, &(n + 1));
    }
}

/// Feeds itself forever: always finds a message, so it never waits at all
/// and only stops because the core makes it yield after a budget of
/// receives (Erlang's reductions).
async fn feed_itself(mut p: Process, guard: Dropped) -> Result<(), ReceiveError> {
    let _guard = guard;
    let me = p.self_pid();
    p.send(me, &0u64);
    loop {
        let n: u64 = p.expect().await?;
        p.send(me, &(n + 1));
    }
}

#[test]
fn shutdown_ends_busy_sleeping_waiting_and_trapping_processes() {
    const PAIRS: usize = 50;
    const EACH: usize = 100;
    const IDLE: usize = 100_000;
    let node = node("shutdown");
    let dropped = Arc::new(AtomicUsize::new(0));
    let guard = || Dropped(dropped.clone());
    let mut started = 0;
    for _ in 0..PAIRS {
        let (a, b) = (guard(), guard());
        let left = node.spawn(move |p| bounce(p, a));
        let right = node.spawn(move |p| bounce(p, b));
        started += 2;
        support::run(&node, move |p| async move {
            p.send(left, &right);
            p.send(right, &left);
            p.send(left, &0u64);
        })
        .unwrap();
    }
    for _ in 0..EACH {
        let (feeding, sleeping, waiting, trapping) = (guard(), guard(), guard(), guard());
        node.spawn(move |p| feed_itself(p, feeding));
        node.spawn(move |mut p| async move {
            let _guard = sleeping;
            p.sleep(Duration::from_secs(3600)).await;
        });
        node.spawn(move |mut p| async move {
            let _guard = waiting;
            p.expect::<()>().await.map(drop)
        });
        node.spawn(move |mut p| async move {
            let _guard = trapping;
            p.trap_exit(true);
            loop {
                p.expect::<molt::Exit>().await?;
            }
            #[allow(unreachable_code)]
            Ok::<(), ReceiveError>(())
        });
        started += 4;
    }
    let idle = guard();
    let idle_counter = Arc::new(idle);
    for _ in 0..IDLE {
        let idle = idle_counter.clone();
        node.spawn(move |mut p| async move {
            let _idle = idle;
            p.expect::<()>().await.map(drop)
        });
    }
    drop(idle_counter);
    started += 1;
    assert!(node.process_count() >= 2 * PAIRS + 3 * EACH);

    let (finished, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        node.shutdown();
        let _ = finished.send(());
    });
    done.recv_timeout(support::BOUND).expect("shutdown returns within the bound");
    assert_eq!(dropped.load(Ordering::SeqCst), started, "every process body was dropped");
}

#[test]
fn dropping_a_node_shuts_it_down() {
    let dropped = Arc::new(AtomicUsize::new(0));
    {
        let node = node("dropped");
        let guard = Dropped(dropped.clone());
        node.spawn(move |mut p| async move {
            let _guard = guard;
            p.expect::<()>().await.map(drop)
        });
    }
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}
