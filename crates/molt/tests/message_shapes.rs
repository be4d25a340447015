//! Message shapes: a message whose tag matches but whose shape does not is
//! never decoded into the receiver's type (issue 7's data-losing cases), a
//! receive with an arm per shape takes both, and `#[derive(Message)]` names
//! and fingerprints a type the same way wherever it is built.

mod support;

use std::sync::OnceLock;

use molt::{DecodeError, Message, Node, ReceiveError, Shape, Tag};
use serde::{Deserialize, Serialize};
use support::run;

fn shared_node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| support::node("shapes"))
}

/// Version 1 of a key-value request, as a receiver still has it.
mod v1 {
    use super::*;
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Message)]
    #[message(name = "kv.Put")]
    pub(super) struct Put {
        pub(super) key: String,
        pub(super) value: u64,
    }
}

/// Version 2: a trailing field under the same name.
mod v2 {
    use super::*;
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Message)]
    #[message(name = "kv.Put")]
    pub(super) struct Put {
        pub(super) key: String,
        pub(super) value: u64,
        pub(super) ttl: u32,
    }
}

/// Another version 2: a signed value under the same name.
mod signed {
    use super::*;
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Message)]
    #[message(name = "kv.Put")]
    pub(super) struct Put {
        pub(super) key: String,
        pub(super) value: i64,
    }
}

/// A marker sent after the message under test: it must come through, so
/// the process and its mailbox are fine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Message)]
#[message(name = "test.Marker")]
struct Marker(u32);

fn assert_mismatch<M: Message>(error: ReceiveError, found: Shape) {
    let text = error.to_string();
    match error {
        ReceiveError::Decode(decode) => {
            let DecodeError { tag, type_name, expected, found: seen, reason, .. } = *decode;
            assert_eq!(tag, M::TAG);
            assert!(type_name.ends_with("Put"), "{type_name}");
            assert_eq!(expected, M::shape());
            assert_eq!(seen, found);
            assert_ne!(expected, found);
            assert!(reason.contains("another shape"), "{reason}");
        }
        other => panic!("expected a Decode error, got {other:?}"),
    }
    // The error names both shapes.
    assert!(text.contains(&M::shape().to_string()) && text.contains(&found.to_string()), "{text}");
}

#[test]
fn a_trailing_field_under_the_same_name_is_a_decode_error_not_a_dropped_field() {
    let (put, marker) = run(shared_node(), |mut p| async move {
        let me = p.self_pid();
        p.send(me, &v2::Put { key: "k".into(), value: 10, ttl: 60 });
        p.send(me, &Marker(1));
        let put = p.expect::<v1::Put>().await;
        (put, p.expect::<Marker>().await)
    })
    .unwrap();
    assert_mismatch::<v1::Put>(put.unwrap_err(), v2::Put::shape());
    assert_eq!(marker, Ok(Marker(1)));
}

#[test]
fn an_i64_sent_where_a_u64_is_expected_is_a_decode_error_not_another_number() {
    let (put, marker, left) = run(shared_node(), |mut p| async move {
        let me = p.self_pid();
        p.send(me, &signed::Put { key: "k".into(), value: 10 });
        p.send(me, &Marker(2));
        let put = p.receive().on(|put: v1::Put| put).await;
        let marker = p.expect::<Marker>().await;
        // The mismatched message was taken out: nothing of that tag is left.
        let left = p.expect_timeout::<v1::Put>(std::time::Duration::ZERO).await;
        (put, marker, left)
    })
    .unwrap();
    assert_mismatch::<v1::Put>(put.unwrap_err(), signed::Put::shape());
    assert_eq!(marker, Ok(Marker(2)));
    assert!(matches!(left, Err(ReceiveError::Timeout { .. })), "{left:?}");
}

#[derive(Debug, PartialEq, Eq)]
enum Either {
    Old(v1::Put),
    New(v2::Put),
}

#[test]
fn a_receive_with_an_arm_per_shape_takes_both_shapes_in_order() {
    let taken = run(shared_node(), |mut p| async move {
        let me = p.self_pid();
        p.send(me, &v2::Put { key: "a".into(), value: 1, ttl: 5 });
        p.send(me, &v1::Put { key: "b".into(), value: 2 });
        p.send(me, &v2::Put { key: "c".into(), value: 3, ttl: 7 });
        let mut taken = Vec::new();
        for _ in 0..3 {
            taken.push(p.receive().on(Either::Old).on(Either::New).await.unwrap());
        }
        taken
    })
    .unwrap();
    assert_eq!(
        taken,
        [
            Either::New(v2::Put { key: "a".into(), value: 1, ttl: 5 }),
            Either::Old(v1::Put { key: "b".into(), value: 2 }),
            Either::New(v2::Put { key: "c".into(), value: 3, ttl: 7 }),
        ]
    );
}

#[test]
fn a_message_its_shapes_arm_declines_stays_queued_and_is_not_an_error() {
    let (first, second) = run(shared_node(), |mut p| async move {
        let me = p.self_pid();
        p.send(me, &v1::Put { key: "skip".into(), value: 1 });
        p.send(me, &v2::Put { key: "take".into(), value: 2, ttl: 0 });
        // The v1 arm declines its message; the v2 arm takes the newer one.
        let first = p.receive().on_if(|put: &v1::Put| put.key != "skip", Either::Old).on(Either::New).await;
        let second = p.expect::<v1::Put>().await;
        (first, second)
    })
    .unwrap();
    assert_eq!(first, Ok(Either::New(v2::Put { key: "take".into(), value: 2, ttl: 0 })));
    assert_eq!(second, Ok(v1::Put { key: "skip".into(), value: 1 }));
}

#[derive(Serialize, Deserialize, Message)]
struct Unnamed {
    n: u8,
}

#[derive(Serialize, Deserialize, Message)]
#[message(name = "test.Wrapper")]
struct Wrapper<T> {
    inner: T,
}

#[test]
fn the_derive_tags_by_the_given_name_or_the_types_path_and_fingerprints_the_shape() {
    assert_eq!(v1::Put::TAG, Tag::named("kv.Put"));
    assert_eq!(v2::Put::TAG, v1::Put::TAG);
    assert_eq!(Unnamed::TAG, Tag::named(concat!(module_path!(), "::Unnamed")));
    assert_eq!(Wrapper::<u64>::TAG, Tag::named("test.Wrapper").with(u64::TAG));
    assert_ne!(Wrapper::<u64>::TAG, Wrapper::<i64>::TAG);
    assert_ne!(Wrapper::<u64>::shape(), Wrapper::<i64>::shape());
    assert_eq!(v1::Put::shape(), Shape::trace::<v1::Put>().unwrap().shape);
    assert_ne!(v1::Put::shape(), v2::Put::shape());
    assert_ne!(v1::Put::shape(), signed::Put::shape());
}

/// Byte payloads arrive intact every way serde encodes them — a `Vec<u8>`
/// byte by byte, a `serde_bytes` field and a `bytes::Bytes` as one block —
/// and the two ways give the same bytes on the wire (postcard: a length,
/// then the bytes), so either decodes what the other sent.
#[test]
fn byte_payloads_arrive_intact() {
    #[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
    #[message(name = "test.Bytes")]
    struct Marked(#[serde(with = "serde_bytes")] Vec<u8>);
    #[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
    #[message(name = "test.Bytes")]
    struct Plain(Vec<u8>);
    #[derive(Debug, PartialEq, Serialize, Deserialize, Message)]
    #[message(name = "test.Bytes")]
    struct Shared(bytes::Bytes);

    assert_eq!(Marked::shape(), Plain::shape());
    assert_eq!(Marked::shape(), Shared::shape());
    // Every length around the sender's buffer and the payload's inline room.
    let lengths = [0usize, 1, 23, 24, 25, 511, 512, 513, 4095, 4096, 70_000, 3 << 20];
    let pattern = |len: usize| (0..len).map(|i| (i * 7 + i / 251) as u8).collect::<Vec<u8>>();
    let got = run(shared_node(), move |mut p| async move {
        let me = p.self_pid();
        let mut got = Vec::new();
        for len in lengths {
            p.send(me, &Plain(pattern(len)));
            p.send(me, &Marked(pattern(len)));
            p.send(me, &Shared(bytes::Bytes::from(pattern(len))));
            got.push(p.expect::<Marked>().await?.0);
            got.push(p.expect::<Shared>().await?.0.to_vec());
            got.push(p.expect::<Plain>().await?.0);
        }
        Ok::<_, ReceiveError>(got)
    })
    .unwrap()
    .unwrap();
    let expected: Vec<Vec<u8>> = lengths.iter().flat_map(|len| [pattern(*len), pattern(*len), pattern(*len)]).collect();
    assert_eq!(got.len(), expected.len());
    for (n, (got, expected)) in got.iter().zip(&expected).enumerate() {
        assert!(got == expected, "message {n} ({} bytes) arrived changed ({} bytes)", expected.len(), got.len());
    }
}
