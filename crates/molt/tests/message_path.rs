//! What a message costs on its way from one process to another, counted
//! where a timing could not be: talking processes allocate nothing per
//! message once their queues have grown.

mod support;

use molt::{Pid, ReceiveError};
use support::allocations::{PerThread, allocations};
use support::{node, run};

#[global_allocator]
static ALLOCATOR: PerThread = PerThread;

/// A thousand round trips of `(Pid, u64)` between two processes on one
/// scheduler thread (the echo starts on its parent's) make no allocation:
/// the message is encoded on the sender's stack and queued inline, each
/// wake-up is a flag and a queue slot, and a receive polled under the
/// body's own waker leaves nothing in the body's relay (a clone of that
/// waker each wait cost two allocations a round trip).
#[test]
fn talking_processes_allocate_nothing_per_message() {
    const ROUNDS: u64 = 1000;
    let node = node("message-path");
    let made = run(&node, |mut p| async move {
        let echo = p.spawn(|mut p| async move {
            loop {
                let (from, x): (Pid, u64) = p.expect().await?;
                p.send(from, &x);
            }
            #[allow(unreachable_code)]
            Ok::<(), ReceiveError>(())
        });
        let me = p.self_pid();
        // Queues and tables grow to what the exchange needs first.
        for i in 0..100 {
            p.send(echo, &(me, i));
            assert_eq!(p.expect::<u64>().await, Ok(i));
        }
        let before = allocations();
        for i in 0..ROUNDS {
            p.send(echo, &(me, i));
            assert_eq!(p.expect::<u64>().await, Ok(i));
        }
        let made = allocations() - before;
        p.kill(echo);
        made
    })
    .unwrap();
    assert!(made < ROUNDS as usize / 100, "{made} allocations in {ROUNDS} round trips");
}
