//! Selective receive: what is skipped keeps its order, arms are tried in
//! order per message, decode failures are errors the process sees, and
//! delivery is FIFO per sender.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use molt::{Message, Node, ReceiveError, Tag};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use support::{A, B, run};

fn shared_node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| support::node("selective"))
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Sent {
    A(u32),
    B(u32),
}

fn messages() -> impl Strategy<Value = Vec<Sent>> {
    prop::collection::vec(prop_oneof![(0u32..1000).prop_map(Sent::A), (0u32..1000).prop_map(Sent::B)], 0..60)
}

/// Sends `sent` to a fresh process that first runs `take_first` and then
/// drains everything with a two-arm receive; returns (first, rest).
fn receive_in_two_passes(sent: Vec<Sent>, evens_of_b_first: bool) -> (Vec<Sent>, Vec<Sent>) {
    run(shared_node(), move |mut p| async move {
        let me = p.self_pid();
        let receiver = p.spawn(move |mut p| async move {
            let count: usize = p.expect::<u64>().await? as usize;
            let mut first = Vec::new();
            if evens_of_b_first {
                let evens = p.expect::<u64>().await? as usize;
                for _ in 0..evens {
                    first.push(p.receive().on_if(|b: &B| b.0.is_multiple_of(2), |b| Sent::B(b.0)).await?);
                }
            } else {
                let a_count = p.expect::<u64>().await? as usize;
                for _ in 0..a_count {
                    first.push(Sent::A(p.expect::<A>().await?.0));
                }
            }
            let mut rest = Vec::new();
            while first.len() + rest.len() < count {
                rest.push(p.receive().on(|a: A| Sent::A(a.0)).on(|b: B| Sent::B(b.0)).await?);
            }
            let encoded: Vec<(bool, u32)> = first
                .iter()
                .chain(&rest)
                .map(|s| match s {
                    Sent::A(n) => (true, *n),
                    Sent::B(n) => (false, *n),
                })
                .collect();
            p.send(me, &(first.len() as u64, encoded));
            Ok::<(), ReceiveError>(())
        });
        for message in &sent {
            match message {
                Sent::A(n) => p.send(receiver, &A(*n)),
                Sent::B(n) => p.send(receiver, &B(*n)),
            }
        }
        p.send(receiver, &(sent.len() as u64));
        let selected = if evens_of_b_first {
            sent.iter().filter(|s| matches!(s, Sent::B(n) if n % 2 == 0)).count()
        } else {
            sent.iter().filter(|s| matches!(s, Sent::A(_))).count()
        };
        p.send(receiver, &(selected as u64));
        let (first_len, all): (u64, Vec<(bool, u32)>) = p.expect().await.expect("the receiver reports");
        let all: Vec<Sent> = all.into_iter().map(|(a, n)| if a { Sent::A(n) } else { Sent::B(n) }).collect();
        let (first, rest) = all.split_at(first_len as usize);
        (first.to_vec(), rest.to_vec())
    })
    .expect("the test process returns")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// `expect::<A>` takes the A's oldest first; everything it skipped is
    /// then received in the order it was sent.
    #[test]
    fn expect_skips_other_types_and_keeps_their_order(sent in messages()) {
        let (first, rest) = receive_in_two_passes(sent.clone(), false);
        let a: Vec<Sent> = sent.iter().filter(|s| matches!(s, Sent::A(_))).cloned().collect();
        let b: Vec<Sent> = sent.iter().filter(|s| matches!(s, Sent::B(_))).cloned().collect();
        prop_assert_eq!(first, a);
        prop_assert_eq!(rest, b);
    }

    /// A predicate arm takes only what it accepts, oldest first; the rest,
    /// of both types, stays in send order.
    #[test]
    fn predicate_arms_skip_and_keep_order(sent in messages()) {
        let (first, rest) = receive_in_two_passes(sent.clone(), true);
        let is_even_b = |s: &&Sent| matches!(s, Sent::B(n) if n % 2 == 0);
        let evens: Vec<Sent> = sent.iter().filter(is_even_b).cloned().collect();
        let others: Vec<Sent> = sent.iter().filter(|s| !is_even_b(s)).cloned().collect();
        prop_assert_eq!(first, evens);
        prop_assert_eq!(rest, others);
    }
}

#[test]
fn arms_are_tried_per_message_oldest_first() {
    let taken = run(shared_node(), |mut p| async move {
        let me = p.self_pid();
        p.send(me, &B(1));
        p.send(me, &A(2));
        // The A arm comes first, but the oldest message is the B.
        let first = p.receive().on(|a: A| Sent::A(a.0)).on(|b: B| Sent::B(b.0)).await;
        let second = p.receive().on(|a: A| Sent::A(a.0)).on(|b: B| Sent::B(b.0)).await;
        (first, second)
    })
    .unwrap();
    assert_eq!(taken, (Ok(Sent::B(1)), Ok(Sent::A(2))));
}

/// The same tag as `Current` but an older shape: what a sender built from
/// old code would send.
#[derive(Serialize, Deserialize)]
struct Old {
    n: u8,
}
impl Message for Old {
    const TAG: Tag = Tag::named("test.Shape");
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Current {
    n: u8,
    name: String,
}
impl Message for Current {
    const TAG: Tag = Tag::named("test.Shape");
}

#[test]
fn a_message_that_does_not_decode_is_an_error_the_process_sees() {
    let (bad, good, alive) = run(shared_node(), |mut p| async move {
        let me = p.self_pid();
        p.send(me, &Old { n: 200 });
        p.send(me, &Current { n: 1, name: "ok".into() });
        let bad = p.expect::<Current>().await;
        let good = p.expect::<Current>().await;
        (bad, good, p.self_pid() == me)
    })
    .unwrap();
    match bad {
        Err(ReceiveError::Decode(decode)) => {
            assert_eq!(decode.tag, Current::TAG);
            assert!(decode.type_name.ends_with("Current"), "{}", decode.type_name);
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert_eq!(good, Ok(Current { n: 1, name: "ok".into() }));
    assert!(alive);
}

#[test]
fn expect_timeout_gives_up_after_its_timeout_and_leaves_the_mailbox_alone() {
    let (timed_out, waited, kept) = run(shared_node(), |mut p| async move {
        let me = p.self_pid();
        p.send(me, &B(7));
        let start = std::time::Instant::now();
        let timed_out = p.expect_timeout::<A>(Duration::from_millis(30)).await;
        let waited = start.elapsed();
        (timed_out, waited, p.expect::<B>().await)
    })
    .unwrap();
    assert_eq!(timed_out, Err(ReceiveError::Timeout { after: Duration::from_millis(30) }));
    assert!(waited >= Duration::from_millis(30), "{waited:?}");
    assert_eq!(kept, Ok(B(7)));
}

#[test]
fn a_message_arriving_before_the_timeout_is_received() {
    let got = run(shared_node(), |mut p| async move {
        let me = p.self_pid();
        p.spawn(move |p| async move { p.send(me, &A(5)) });
        p.receive_timeout(support::BOUND).on(|a: A| a.0).await
    })
    .unwrap();
    assert_eq!(got, Ok(5));
}

/// Four senders on both scheduler threads stream numbered messages at one
/// receiver at once: each sender's messages arrive complete and in order.
#[test]
fn delivery_is_fifo_per_sender() {
    const PER_SENDER: u32 = 50_000;
    const SENDERS: u32 = 4;
    let node = support::node("fifo");
    let (report, reported) = std::sync::mpsc::channel();
    let receiver = node.spawn(move |mut p| async move {
        let mut next = vec![0u32; SENDERS as usize];
        for _ in 0..SENDERS * PER_SENDER {
            let (sender, n): (u32, u32) = p.expect().await?;
            if n != next[sender as usize] {
                break;
            }
            next[sender as usize] += 1;
        }
        let _ = report.send(next);
        Ok::<(), ReceiveError>(())
    });
    for sender in 0..SENDERS {
        // Spawns from outside a process go round-robin over the schedulers.
        node.spawn(move |p| async move {
            for n in 0..PER_SENDER {
                p.send(receiver, &(sender, n));
            }
        });
    }
    let next_expected = reported.recv_timeout(support::BOUND).expect("the receiver reports");
    assert_eq!(next_expected, vec![PER_SENDER; SENDERS as usize]);
    node.shutdown();
}
