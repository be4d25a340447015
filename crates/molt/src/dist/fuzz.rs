//! Fuzz tests of everything a peer can send: valid frames and handshake
//! messages, mutated (bytes flipped, inserted, removed, cut short), and
//! bytes at random. A frame must decode or fail, never panic; a decoded
//! frame is delivered to a real node, which must answer with a protocol
//! error or act, and stay up; a handshake must fail cleanly and never let
//! a peer without the secret near the node's state.
//!
//! Stable toolchain, proptest's runner. The suite runs a few thousand cases
//! of each; `MOLT_FUZZ_CASES=10000000 cargo test -p molt --release --lib
//! fuzz` runs the long campaign the README reports.

use std::sync::atomic::{AtomicBool, Ordering};

use molt_abi::{Envelope, ExitReason, NodeDownReason, NodeId, Pid};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio_util::bytes::Bytes;

use super::frame::{Farewell, Frame};
use super::handshake::{self, Handshaken, Me, Refusal};
use super::parts::{Joiner, PART};
use super::{Secret, parse_name};
use crate::signal::Signal;
use crate::{Node, NodeConfig};

/// Cases per target: `MOLT_FUZZ_CASES`, else a few thousand.
fn cases() -> u32 {
    std::env::var("MOLT_FUZZ_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(3_000)
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, bits)| Mutation::Flip(at, bits)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert(at, byte)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ];
    proptest::collection::vec(one, 0..4)
}

fn mutate(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for mutation in mutations {
        let len = bytes.len();
        match *mutation {
            Mutation::Flip(at, bits) if len > 0 => bytes[at % len] ^= bits,
            Mutation::Insert(at, byte) => bytes.insert(at % (len + 1), byte),
            Mutation::Remove(at) if len > 0 => drop(bytes.remove(at % len)),
            Mutation::Truncate(at) => bytes.truncate(at % (len + 1)),
            _ => {}
        }
    }
}

/// One frame of every kind, for the process `to` of the node under test,
/// from `from`, a process of the peer: the seeds the mutations start from.
fn seeds(to: Pid, from: Pid) -> Vec<Vec<u8>> {
    let envelope = Envelope::encode(&(from, 7u64)).unwrap();
    let reason = ExitReason::NoConnection { node: "p@127.0.0.1:9".into(), why: NodeDownReason::HeartbeatTimeout };
    let frames = [
        Frame::Message { to, envelope: envelope.clone() },
        Frame::Signal { to, signal: Signal::Exit { from, reason: ExitReason::error("boom"), linked: false } },
        Frame::Signal { to, signal: Signal::Exit { from, reason, linked: true } },
        Frame::Signal { to, signal: Signal::Kill { from } },
        Frame::Signal { to, signal: Signal::Link { from } },
        Frame::Signal { to, signal: Signal::Unlink { from } },
        Frame::Signal { to, signal: Signal::Monitor { id: 3, watcher: from } },
        Frame::Signal { to, signal: Signal::Demonitor { id: 3, watcher: from } },
        Frame::Signal { to, signal: Signal::Down { id: 4, target: from, reason: ExitReason::Normal } },
        Frame::Named { name: "fuzzed".into(), envelope },
        Frame::Whereis { name: "fuzzed".into(), reply_to: from, request: 5 },
        Frame::WhereisReply { reply_to: to, request: 5, pid: Some(from) },
        Frame::Ping(3),
        Frame::Nodes(vec!["c@127.0.0.1:9".into()]),
        Frame::Pong(3),
        Frame::Ack(9),
        Frame::Goodbye(Farewell::Shutdown),
        Frame::Goodbye(Farewell::Disconnect),
        Frame::AckPlease,
        Frame::Spawn {
            module: "testmod".into(),
            entry: "echo".into(),
            state: vec![0, 0, 0],
            reply_to: from,
            request: 6,
            link: true,
            monitor: Some(7),
        },
        Frame::SpawnReply { reply_to: to, request: 6, pid: Ok(from) },
        Frame::Open { stream: 8, head: 12, body: PART as u64 },
    ];
    let mut seeds: Vec<Vec<u8>> = frames.iter().map(|frame| frame.encode().unwrap()).collect();
    // A part: its frame, then raw bytes.
    let mut part = Frame::Part { stream: 8 }.encode().unwrap();
    part.extend_from_slice(&[5; 40]);
    seeds.push(part);
    seeds
}

/// Mutated frames and random bytes, decoded and delivered to a real node
/// as from a connected peer: no panic, and the node goes on.
#[test]
fn frames_from_a_peer_decode_or_fail_and_the_node_stays_up() {
    let node =
        Node::start(NodeConfig::new("fuzz").workers(1).listen("127.0.0.1:0").secret(Secret::new("fuzz").unwrap()))
            .unwrap();
    let dist = node.inner.dist.get().unwrap().clone();
    let peer = NodeId::from_name("peer@127.0.0.1:9");
    let from = Pid { node: peer, creation: 1, serial: 1 };
    let total = cases();
    // In rounds, each with a fresh target: its mailbox fills with what was
    // delivered, and goes with it.
    let rounds = total.div_ceil(10_000);
    let (decoded, delivered) = (std::cell::Cell::new(0u64), std::cell::Cell::new(0u64));
    for round in 0..rounds {
        let to = node.spawn(|mut p| async move {
            loop {
                p.expect::<u64>().await?;
            }
            #[allow(unreachable_code)]
            Ok::<(), molt_abi::ReceiveError>(())
        });
        let seeds = seeds(to, from);
        let cases = (total - round * 10_000).min(10_000);
        let strategy = prop_oneof![
            (0..seeds.len(), mutations()).prop_map(move |(seed, mutations)| {
                let mut bytes = seeds[seed].clone();
                mutate(&mut bytes, &mutations);
                bytes
            }),
            proptest::collection::vec(any::<u8>(), 0..48),
        ];
        let joiner = std::cell::RefCell::new(Joiner::default());
        let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
        runner
            .run(&strategy, |bytes| {
                if let Ok((frame, raw)) = Frame::decode(&bytes) {
                    decoded.set(decoded.get() + 1);
                    // What decodes encodes again.
                    prop_assert!(frame.encode().is_ok());
                    // Parts go through a joiner, as on a connection.
                    let mut joiner = joiner.borrow_mut();
                    let whole = match frame {
                        Frame::Open { stream, head, body } => joiner.open(stream, head, body, 64 << 20).map(|()| None),
                        Frame::Part { stream } => joiner.part(stream, raw),
                        frame => Ok(Some(frame)),
                    };
                    let done = match whole {
                        Ok(Some(frame)) => dist.deliver(peer, frame).is_ok(),
                        Ok(None) => true,
                        Err(_) => false,
                    };
                    delivered.set(delivered.get() + u64::from(done));
                }
                Ok(())
            })
            .unwrap();
        node.inner.signal(to, Signal::Kill { from: to });
    }
    let (decoded, delivered) = (decoded.get(), delivered.get());
    assert!(decoded > 0 && delivered > 0, "the mutations reach the delivery ({decoded} decoded)");
    eprintln!("fuzzed {total} frames: {decoded} decoded, {delivered} delivered, the rest refused");
    // The node goes on.
    let echoed = node.run(|mut p| async move {
        p.send(p.self_pid(), &11u64);
        p.expect::<u64>().await
    });
    assert_eq!(echoed, Ok(Ok(11)));
}

/// A stranger's handshake, mutated at every step: it fails cleanly, and
/// the accepting side never admits it.
#[test]
fn a_mutated_handshake_fails_cleanly_and_is_never_admitted() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let secret = Secret::new("the real one").unwrap();
    let name = "server@127.0.0.1:1";
    assert!(parse_name(name).is_ok());
    let admitted = AtomicBool::new(false);
    // A valid client's messages, as seeds: its hello, and a proof made
    // with a wrong secret (the right one would need the server's nonce).
    let hello = postcard::to_stdvec(&handshake::Hello {
        protocol: handshake::PROTOCOL,
        name: "client@127.0.0.1:2".into(),
        creation: 1,
        nonce: [3; 32],
        session: 9,
        resume: false,
    })
    .unwrap();
    let proof = postcard::to_stdvec(&handshake::Proof(vec![0; 32])).unwrap();
    let strategy = (mutations(), mutations(), proptest::collection::vec(any::<u8>(), 0..16), any::<bool>());
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    runner
        .run(&strategy, |(on_hello, on_proof, garbage, append)| {
            let (mut hello, mut proof) = (hello.clone(), proof.clone());
            mutate(&mut hello, &on_hello);
            mutate(&mut proof, &on_proof);
            if append {
                proof.extend_from_slice(&garbage);
            }
            let result = runtime.block_on(async {
                let (client, server) = tokio::io::duplex(1 << 16);
                let (mut client, mut server) = (handshake::framed(client), handshake::framed(server));
                use futures::SinkExt;
                client.send(Bytes::from(hello)).await.unwrap();
                client.send(Bytes::from(proof)).await.unwrap();
                // The client's end closes: a server that waits for more
                // reads the end, not a hang.
                drop(client);
                let me = Me { name, creation: 2, secret: &secret };
                handshake::accept(&mut server, &me, |_: &Handshaken| {
                    admitted.store(true, Ordering::SeqCst);
                    Err::<(), _>(Refusal::BadName)
                })
                .await
            });
            prop_assert!(result.is_err());
            prop_assert!(!admitted.load(Ordering::SeqCst), "a peer without the secret was admitted");
            Ok(())
        })
        .unwrap();
    eprintln!("fuzzed {} handshakes: every one refused", cases());
}
