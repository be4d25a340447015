//! Timers driven by the core: `send_after`, `cancel_timer`, `sleep`.

mod support;

use std::time::{Duration, Instant};

use molt::ReceiveError;
use support::{A, B, node, run};

#[test]
fn send_after_delivers_after_the_delay() {
    let node = node("timers");
    let (message, waited) = run(&node, |mut p| async move {
        let start = Instant::now();
        p.send_after(Duration::from_millis(30), p.self_pid(), &A(1));
        (p.expect::<A>().await, start.elapsed())
    })
    .unwrap();
    assert_eq!(message, Ok(A(1)));
    assert!(waited >= Duration::from_millis(30), "{waited:?}");
}

#[test]
fn a_cancelled_timer_never_delivers() {
    let node = node("timers");
    let outcome = run(&node, |mut p| async move {
        let me = p.self_pid();
        let cancelled = p.send_after(Duration::from_millis(10), me, &A(1));
        let first_cancel = p.cancel_timer(cancelled);
        let fired = p.send_after(Duration::from_millis(1), me, &B(2));
        // B fires after A would have: if A were delivered it would come first.
        let later = p.send_after(Duration::from_millis(40), me, &B(3));
        let got: Vec<Result<String, ReceiveError>> = vec![
            p.receive().on(|a: A| format!("A{}", a.0)).on(|b: B| format!("B{}", b.0)).await,
            p.receive().on(|a: A| format!("A{}", a.0)).on(|b: B| format!("B{}", b.0)).await,
        ];
        (first_cancel, p.cancel_timer(cancelled), p.cancel_timer(fired), p.cancel_timer(later), got)
    });
    let (first_cancel, again, fired, later, got) = outcome.unwrap();
    // Cancelled at once: nearly all of its 10 ms were left.
    assert!(first_cancel.is_some_and(|left| left <= Duration::from_millis(10)), "{first_cancel:?}");
    assert_eq!((again, fired, later), (None, None, None));
    assert_eq!(got, vec![Ok("B2".into()), Ok("B3".into())]);
}

#[test]
fn sleep_waits_and_keeps_what_arrives_meanwhile() {
    let node = node("timers");
    let (waited, kept) = run(&node, |mut p| async move {
        let me = p.self_pid();
        p.send(me, &A(9));
        let start = Instant::now();
        p.sleep(Duration::from_millis(25)).await;
        (start.elapsed(), p.expect_timeout::<A>(Duration::ZERO).await)
    })
    .unwrap();
    assert!(waited >= Duration::from_millis(25), "{waited:?}");
    assert_eq!(kept, Ok(A(9)));
}

/// `send_after_named` looks the name up when the timer fires, as Erlang's
/// `send_after` to a registered name does; a name nobody has by then gets
/// nothing.
#[test]
fn a_timer_to_a_name_finds_whoever_has_it_when_it_fires() {
    let node = node("timers");
    let got = run(&node, |mut p| async move {
        let me = p.self_pid();
        let relay = move |label: &'static str| {
            move |mut p: molt::Process| async move {
                let a = p.expect::<A>().await?;
                p.send(me, &(label.to_owned(), a.0));
                Ok::<(), ReceiveError>(())
            }
        };
        let first = p.spawn(relay("first"));
        let second = p.spawn(relay("second"));
        p.register("timers.target", first).unwrap();
        // Long enough for the two registry calls below to come first.
        p.send_after_named(Duration::from_millis(500), "timers.target", &A(1));
        p.unregister("timers.target");
        p.register("timers.target", second).unwrap();
        let delivered = p.expect::<(String, u32)>().await.unwrap();
        // A timer to a name nobody has: a later timer to itself, on the same
        // scheduler, comes after it has fired.
        p.send_after_named(Duration::from_millis(10), "timers.nobody", &A(2));
        p.send_after(Duration::from_millis(20), me, &B(3));
        p.expect::<B>().await.unwrap();
        p.kill(first);
        (delivered, p.expect_timeout::<(String, u32)>(Duration::ZERO).await.is_err())
    })
    .unwrap();
    assert_eq!(got, (("second".to_owned(), 1), true));
}

// The timer wheel under a hostile reading (see `timer.rs`): memory per
// timer, races of cancel, firing and a target's end, reused slots.

use molt::{Down, Pid, TimerRef};
use support::allocations::{PerThread, allocated, live};

#[global_allocator]
static ALLOCATOR: PerThread = PerThread;

/// One timeout at a time, cancelled or fired, over and over (the usual
/// Erlang pattern) allocates next to nothing per timer: the wheel keeps a
/// chunk of slots when it goes idle.
#[test]
fn one_timer_at_a_time_allocates_no_chunk_each_time() {
    let node = node("timers");
    const ROUNDS: usize = 1000;
    let (cancelled, fired) = run(&node, |mut p| async move {
        let me = p.self_pid();
        let t = p.send_after(Duration::from_secs(3600), me, &A(0));
        p.cancel_timer(t);
        p.send_after(Duration::ZERO, me, &A(0));
        p.expect::<A>().await.unwrap();

        let start = allocated();
        for n in 0..ROUNDS as u32 {
            let t = p.send_after(Duration::from_secs(3600), me, &A(n));
            assert!(p.cancel_timer(t).is_some());
        }
        let cancelled = (allocated() - start) / ROUNDS;
        let start = allocated();
        for n in 0..ROUNDS as u32 {
            p.send_after(Duration::ZERO, me, &A(n));
            assert_eq!(p.expect::<A>().await, Ok(A(n)));
        }
        (cancelled, (allocated() - start) / ROUNDS)
    })
    .unwrap();
    assert!(
        cancelled < 2048 && fired < 2048,
        "bytes allocated per timer: {cancelled} armed and cancelled, {fired} armed and fired"
    );
}

/// Timers that fire or are cancelled give their memory back while another
/// stays pending (the wheel never goes idle): the heap and the names shrink.
#[test]
fn memory_of_gone_timers_is_given_back_while_one_stays() {
    let node = node("timers");
    const TIMERS: u32 = 100_000;
    let (fired, cancelled) = run(&node, |mut p| async move {
        let me = p.self_pid();
        let long = p.send_after(Duration::from_secs(3600), me, &B(0));
        p.send_after(Duration::ZERO, me, &A(0));
        p.expect::<A>().await.unwrap();

        let before = live();
        let timers: Vec<TimerRef> =
            (0..TIMERS).map(|_| p.send_after_named(Duration::from_secs(3600), "timers.nobody", &A(3))).collect();
        for t in timers {
            assert!(p.cancel_timer(t).is_some());
        }
        let cancelled = live() - before;

        let before = live();
        for _ in 0..TIMERS {
            p.send_after_named(Duration::ZERO, "timers.nobody", &A(1));
        }
        // Same wheel, armed last: fires after all of them.
        p.send_after(Duration::ZERO, me, &A(2));
        assert_eq!(p.expect::<A>().await, Ok(A(2)));
        let fired = live() - before;
        assert!(p.cancel_timer(long).is_some());
        (fired, cancelled)
    })
    .unwrap();
    assert!(
        fired < (1 << 20) && cancelled < (1 << 20),
        "{} KiB stayed after {TIMERS} timers fired, {} KiB after as many were cancelled",
        fired >> 10,
        cancelled >> 10
    );
}

/// A target ending on one scheduler while timers aimed at it are armed on
/// the other: once its `Down` is in, none of them is pending.
#[test]
fn a_target_ending_while_timers_are_armed_leaves_none() {
    let node = node("timers");
    for round in 0..300u32 {
        // Spawned from outside one after the other: on different schedulers.
        let target = node.spawn(|mut p| async move { p.expect::<()>().await });
        let left = run(&node, move |mut p| async move {
            let monitor = p.monitor(target);
            p.send(target, &());
            let timers: Vec<TimerRef> =
                (0..64).map(|n| p.send_after(Duration::from_secs(3600), target, &A(n))).collect();
            let down = p.expect::<Down>().await.unwrap();
            assert_eq!(down.monitor, monitor);
            timers.into_iter().filter_map(|t| p.cancel_timer(t)).count()
        })
        .unwrap();
        assert_eq!(left, 0, "round {round}: timers to an ended process were still pending");
        assert_eq!(node.pending_timers(), 0, "round {round}");
    }
}

/// `cancel_timer` on one scheduler racing the firing task of the other:
/// `Some` means the message never comes, `None` that it came exactly once.
#[test]
fn cancel_racing_the_firing_task_is_exact() {
    let node = node("timers");
    let collector = node.spawn(|mut p| async move {
        loop {
            let (from, round) = p.expect::<(Pid, u32)>().await?;
            // What the timer of `round` delivered is queued before the
            // marker (the firing task shares the arming thread).
            let mut got = 0u32;
            while let Ok(A(n)) = p.expect_timeout::<A>(Duration::ZERO).await {
                assert_eq!(n, round, "a timer of another round");
                got += 1;
            }
            p.send(from, &got);
        }
        #[allow(unreachable_code)]
        Ok::<(), ReceiveError>(())
    });
    let canceller = node.spawn(|mut p| async move {
        loop {
            let (from, timer) = p.expect::<(Pid, TimerRef)>().await?;
            let left = p.cancel_timer(timer);
            p.send(from, &left.is_some());
        }
        #[allow(unreachable_code)]
        Ok::<(), ReceiveError>(())
    });
    run(&node, move |mut p| async move {
        let me = p.self_pid();
        for round in 0..2000u32 {
            let delay = Duration::from_micros(u64::from(round % 40) * 5);
            let timer = p.send_after(delay, collector, &A(round));
            p.send(canceller, &(me, timer));
            let cancelled = p.expect::<bool>().await.unwrap();
            p.send(collector, &(me, round));
            let got = p.expect::<u32>().await.unwrap();
            assert_eq!(got, u32::from(!cancelled), "round {round}: cancelled {cancelled}, delivered {got}");
        }
    })
    .unwrap();
    assert_eq!(node.pending_timers(), 0);
}

/// A reference to a timer that fired names a slot that is reused: it does
/// not cancel the new timer; nor does the end of the process whose list
/// still holds that slot, when the new timer is aimed at another process.
#[test]
fn a_reused_slot_is_not_cancelled_by_a_stale_ref_or_list() {
    let node = node("timers");
    let got = run(&node, |mut p| async move {
        let me = p.self_pid();
        let (first, _) = p.spawn_monitor(|mut p| async move { p.expect::<()>().await });
        let old = p.send_after(Duration::ZERO, first, &A(1));
        // It fired once a later zero-delay timer on the same wheel did.
        p.send_after(Duration::ZERO, me, &B(0));
        p.expect::<B>().await.unwrap();
        let mut others = Vec::new();
        let new = loop {
            let new = p.send_after(Duration::from_millis(50), me, &A(2));
            if (new.slot, new.scheduler) == (old.slot, old.scheduler) {
                break new;
            }
            assert!(others.len() < 4096, "the slot is never reused");
            others.push(new);
        };
        for other in others {
            assert!(p.cancel_timer(other).is_some());
        }
        assert_eq!(p.cancel_timer(old), None, "a stale ref");
        // `first` ends: its list still names the slot.
        p.send(first, &());
        p.expect::<Down>().await.unwrap();
        let _ = new;
        p.expect_timeout::<A>(support::BOUND).await
    })
    .unwrap();
    assert_eq!(got, Ok(A(2)));
}

/// A timer with the longest delay does not stop the others, and cancelling
/// it says how long it had left.
#[test]
fn a_timer_with_the_longest_delay_breaks_nothing() {
    let node = node("timers");
    let (got, left) = run(&node, |mut p| async move {
        let me = p.self_pid();
        let forever = p.send_after(Duration::MAX, me, &A(0));
        p.send_after(Duration::from_millis(1), me, &A(1));
        let got = p.expect::<A>().await;
        (got, p.cancel_timer(forever))
    })
    .unwrap();
    assert_eq!(got, Ok(A(1)));
    assert!(left.is_some_and(|left| left > Duration::from_secs(100 * 365 * 24 * 3600)), "{left:?}");
}

/// A `TimerRef` of another node in the same OS process cancels nothing
/// here (timer ids are unique in the OS process).
#[test]
fn a_timer_ref_of_another_node_cancels_nothing() {
    let first = node("timers.first");
    let second = node("timers.second");
    let stranger =
        run(&first, |p| async move { p.send_after(Duration::from_secs(3600), p.self_pid(), &A(1)) }).unwrap();
    let (own, by_stranger, by_own) = run(&second, move |p| async move {
        let own = p.send_after(Duration::from_secs(3600), p.self_pid(), &A(1));
        (own, p.cancel_timer(stranger), p.cancel_timer(own))
    })
    .unwrap();
    assert_eq!(by_stranger, None, "{stranger:?} (first node) cancelled {own:?} (second node)");
    assert!(by_own.is_some());
}
