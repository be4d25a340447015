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
