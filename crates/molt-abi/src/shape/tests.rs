//! The tracer and the fingerprint, on real serde types and on generated
//! shape trees.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::tree::{Body, EnumShape, Node, fingerprint};
use super::{Shape, kind};
use crate::{Down, Exit, ExitReason, Message, Pid};

fn shape<T: serde::de::DeserializeOwned>() -> Shape {
    Shape::trace::<T>().unwrap().shape
}

fn described<T: serde::de::DeserializeOwned>() -> String {
    Shape::trace::<T>().unwrap().description
}

mod v1 {
    use super::*;
    #[derive(Serialize, Deserialize)]
    pub(super) struct Put {
        pub(super) key: String,
        pub(super) value: u64,
    }
}

mod trailing {
    use super::*;
    #[derive(Serialize, Deserialize)]
    pub(super) struct Put {
        pub(super) key: String,
        pub(super) value: u64,
        pub(super) ttl: u32,
    }
}

mod signed {
    use super::*;
    #[derive(Serialize, Deserialize)]
    pub(super) struct Put {
        pub(super) key: String,
        pub(super) value: i64,
    }
}

mod renamed_field {
    use super::*;
    #[derive(Serialize, Deserialize)]
    pub(super) struct Put {
        pub(super) key: String,
        pub(super) amount: u64,
    }
}

mod reordered {
    use super::*;
    #[derive(Serialize, Deserialize)]
    pub(super) struct Put {
        pub(super) value: u64,
        pub(super) key: String,
    }
}

mod renamed_type {
    use super::*;
    #[derive(Serialize, Deserialize)]
    pub(super) struct Store {
        pub(super) key: String,
        pub(super) value: u64,
    }
}

#[test]
fn every_change_of_a_struct_changes_its_shape_and_a_rename_of_the_type_does_not() {
    let base = shape::<v1::Put>();
    assert_ne!(base, shape::<trailing::Put>(), "a trailing field");
    assert_ne!(base, shape::<signed::Put>(), "i64 for u64");
    assert_ne!(base, shape::<renamed_field::Put>(), "a renamed field");
    assert_ne!(base, shape::<reordered::Put>(), "reordered fields");
    assert_eq!(base, shape::<renamed_type::Store>(), "only the type's name changed");
    assert_eq!(described::<v1::Put>(), "Put {key: str, value: u64}");
}

#[derive(Serialize, Deserialize)]
enum Two {
    A,
    B(u8),
}

#[derive(Serialize, Deserialize)]
enum Three {
    A,
    B(u8),
    C { at: u64 },
}

#[test]
fn adding_a_variant_changes_the_shape() {
    assert_ne!(shape::<Two>(), shape::<Three>());
    assert_eq!(described::<Three>(), "Three {A | B(u8) | C {at: u64}}");
}

#[derive(Serialize, Deserialize)]
struct Outer {
    first: Inner,
    list: Vec<Inner>,
}

#[derive(Serialize, Deserialize)]
enum Inner {
    Plain,
    Deeper(Deep),
    Pair(u8, Deep),
}

#[derive(Serialize, Deserialize)]
enum Deep {
    X,
    Y { y: Option<i16> },
    Z(std::collections::BTreeMap<String, [u8; 2]>),
}

#[test]
fn enums_nested_anywhere_are_traced_to_their_last_variant() {
    assert_eq!(
        described::<Outer>(),
        "Outer {first: Inner {Plain | Deeper(Deep {X | Y {y: Option<i16>} | Z({str, [u8; 2]})}) | \
         Pair(u8, Deep {X | Y {y: Option<i16>} | Z({str, [u8; 2]})})}, \
         list: [Inner {Plain | Deeper(Deep {X | Y {y: Option<i16>} | Z({str, [u8; 2]})}) | \
         Pair(u8, Deep {X | Y {y: Option<i16>} | Z({str, [u8; 2]})})}]}"
    );
    let exit = described::<Exit>();
    assert!(!exit.contains('?'), "every variant of ExitReason traced: {exit}");
    assert!(exit.contains("Purged {module: str, version: str}"), "{exit}");
}

#[derive(Serialize, Deserialize)]
struct Tree {
    label: u8,
    children: Vec<Tree>,
}

#[derive(Serialize, Deserialize)]
enum List {
    Cons(u8, Box<List>),
    Nil,
}

#[derive(Serialize, Deserialize)]
struct Endless(Box<Endless>);

#[test]
fn recursive_types_are_traced_and_an_endless_one_is_refused() {
    assert_eq!(described::<Tree>(), "Tree {label: u8, children: [Tree]}");
    assert_eq!(described::<List>(), "List {Cons(u8, List) | Nil}");
    assert_ne!(shape::<Tree>(), shape::<List>());
    let error = Shape::trace::<Endless>().unwrap_err();
    assert!(error.contains("deeper than"), "{error}");
    assert_eq!(Shape::of::<Endless>(), Shape::UNKNOWN);
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Untagged {
    A(u8),
    B(String),
}

#[test]
fn a_type_postcard_cannot_decode_is_refused_with_the_reason() {
    let error = Shape::trace::<Untagged>().unwrap_err();
    assert!(error.contains("self-describing"), "{error}");
}

#[test]
fn the_built_in_messages_have_the_shapes_a_trace_finds() {
    fn check<M: Message>() {
        assert_eq!(M::shape(), shape::<M>(), "{}", std::any::type_name::<M>());
    }
    check::<()>();
    check::<u64>();
    check::<usize>();
    check::<i8>();
    check::<String>();
    check::<std::borrow::Cow<'static, str>>();
    check::<(Pid, u64)>();
    check::<(u8, u8, u8)>();
    check::<Vec<Option<(i64, String)>>>();
    check::<Exit>();
    check::<Down>();
    check::<ExitReason>();
    check::<Pid>();
    check::<crate::MonitorRef>();
    check::<crate::TimerRef>();
    assert_ne!(<(Pid, i64)>::shape(), <(Pid, u64)>::shape());
    // A value that validates what it decodes still traces.
    assert_ne!(shape::<std::num::NonZeroU64>(), Shape::UNKNOWN);
}

#[test]
fn fingerprints_are_the_same_in_every_build() {
    // Fixed numbers: a change here changes what every envelope carries, so
    // nodes of two builds would refuse each other's messages.
    assert_eq!(Shape::U64, Shape(0xd3d4de8ccf0d5d27));
    assert_eq!(shape::<v1::Put>(), Shape(0x4cd56a7b7211024c));
}

/// A generated shape tree of bounded depth, with names from a small pool so
/// that renames and collisions both happen.
fn node() -> impl Strategy<Value = Node> {
    let leaf = (1u64..=17).prop_map(Node::Leaf);
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|n| Node::Option(Box::new(n))),
            inner.clone().prop_map(|n| Node::Seq(Box::new(n))),
            (inner.clone(), inner.clone()).prop_map(|(k, v)| Node::Map(Box::new(k), Box::new(v))),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Node::Tuple),
            prop::collection::vec((field_name(), inner.clone()), 1..4)
                .prop_map(|fields| Node::Struct("S", Body::Fields(fields))),
            inner.prop_map(|n| Node::Struct("N", Body::Newtype(Box::new(n)))),
        ]
    })
}

fn field_name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "c", "key", "value", "ab"])
}

/// Every struct's fields, in a walk order, as paths to change.
fn structs(node: &Node, out: &mut Vec<Vec<usize>>, path: &mut Vec<usize>) {
    let children: Vec<&Node> = match node {
        Node::Option(n) | Node::Seq(n) => vec![n],
        Node::Map(k, v) => vec![k, v],
        Node::Tuple(items) => items.iter().collect(),
        Node::Struct(_, Body::Newtype(n)) => vec![n],
        Node::Struct(_, Body::Fields(fields)) => {
            out.push(path.clone());
            fields.iter().map(|(_, n)| n).collect()
        }
        _ => vec![],
    };
    for (i, child) in children.into_iter().enumerate() {
        path.push(i);
        structs(child, out, path);
        path.pop();
    }
}

fn at<'n>(node: &'n mut Node, path: &[usize]) -> &'n mut Node {
    let Some((first, rest)) = path.split_first() else { return node };
    let child = match node {
        Node::Option(n) | Node::Seq(n) => &mut **n,
        Node::Map(k, v) => [&mut **k, &mut **v].into_iter().nth(*first).unwrap(),
        Node::Tuple(items) => &mut items[*first],
        Node::Struct(_, Body::Newtype(n)) => &mut **n,
        Node::Struct(_, Body::Fields(fields)) => &mut fields[*first].1,
        _ => unreachable!(),
    };
    at(child, rest)
}

proptest! {
    #[test]
    fn a_changed_field_changes_the_fingerprint(root in node(), pick in any::<prop::sample::Index>(), change in 0u8..4) {
        let mut paths = Vec::new();
        structs(&root, &mut paths, &mut Vec::new());
        prop_assume!(!paths.is_empty());
        let before = fingerprint(&root, &[]);
        let mut changed = root.clone();
        let Node::Struct(_, Body::Fields(fields)) = at(&mut changed, pick.get(&paths).as_slice()) else { unreachable!() };
        match change {
            // Rename the first field.
            0 => fields[0].0 = if fields[0].0 == "zz" { "zy" } else { "zz" },
            // Add a trailing field.
            1 => fields.push(("value", Node::Leaf(kind::U64))),
            // Swap two fields that differ on the wire (by name, or by
            // shape: a `Vec<u8>` and bytes are one), or drop one.
            2 if fields.len() > 1
                && (fields[0].0, fingerprint(&fields[0].1, &[])) != (fields[1].0, fingerprint(&fields[1].1, &[])) =>
            {
                fields.swap(0, 1)
            }
            2 => { fields.pop(); }
            // Change a field's type.
            _ => fields[0].1 = Node::Option(Box::new(fields[0].1.clone())),
        }
        prop_assert_ne!(before, fingerprint(&changed, &[]));
    }

    #[test]
    fn a_renamed_type_keeps_the_fingerprint(root in node()) {
        let renamed = match root.clone() {
            Node::Struct(_, body) => Node::Struct("Renamed", body),
            other => other,
        };
        prop_assert_eq!(fingerprint(&root, &[]), fingerprint(&renamed, &[]));
    }

    #[test]
    fn an_added_variant_changes_the_fingerprint(bodies in prop::collection::vec(node(), 1..5)) {
        const NAMES: [&str; 6] = ["V0", "V1", "V2", "V3", "V4", "V5"];
        let count = bodies.len();
        let bodies: Vec<Option<Body>> = bodies.into_iter().map(|n| Some(Body::Newtype(Box::new(n)))).collect();
        let before = [EnumShape { identity: "E", name: "E", variants: &NAMES[..count], bodies: bodies.clone() }];
        let mut more = bodies;
        more.push(Some(Body::Unit));
        let after = [EnumShape { identity: "E", name: "E", variants: &NAMES[..=count], bodies: more }];
        prop_assert_ne!(fingerprint(&Node::Enum(0), &before), fingerprint(&Node::Enum(0), &after));
    }
}

// Types told apart by their Rust type, not serde's name (found in review).

#[derive(Serialize, Deserialize)]
struct Wrap<T> {
    inner: T,
}

mod db_a {
    use super::*;
    #[derive(Serialize, Deserialize)]
    pub(super) struct Config {
        pub(super) port: u16,
    }
}

mod db_b {
    use super::*;
    #[derive(Serialize, Deserialize)]
    pub(super) struct Config {
        pub(super) url: String,
        pub(super) pool: Vec<u64>,
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename = "Config")]
struct ConfigA {
    db: db_a::Config,
}

#[derive(Serialize, Deserialize)]
#[serde(rename = "Config")]
struct ConfigB {
    db: db_b::Config,
}

#[derive(Serialize, Deserialize)]
struct ReplyV1 {
    a: Result<u8, u32>,
    b: Result<u64, bool>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename = "ReplyV1")]
struct ReplyV2 {
    a: Result<u8, i32>,
    b: Result<i64, bool>,
}

#[test]
fn types_of_one_name_are_told_apart_by_what_they_are() {
    assert_ne!(shape::<Wrap<Wrap<u8>>>(), shape::<Wrap<Wrap<String>>>());
    assert_eq!(described::<Wrap<Wrap<u8>>>(), "Wrap {inner: Wrap {inner: u8}}");
    assert_ne!(shape::<ConfigA>(), shape::<ConfigB>());
    assert_eq!(described::<ConfigB>(), "Config {db: Config {url: str, pool: [u64]}}");
    // Two instances of one generic enum are two enums: u32 → i32 and
    // u64 → i64 are seen (10 sent would read as 5).
    assert_ne!(shape::<ReplyV1>(), shape::<ReplyV2>());
    assert_eq!(described::<ReplyV1>(), "ReplyV1 {a: Result {Ok(u8) | Err(u32)}, b: Result {Ok(u64) | Err(bool)}}");
}

macro_rules! binary_enum {
    ($name:ident: $($v:ident)*) => {
        #[derive(Serialize, Deserialize)]
        enum $name { $($v(Box<$name>, Box<$name>),)* Lit(i64) }
    };
}
binary_enum!(Expr: A B C D E F G H I J K L M N O P Q R S T U V W X);

#[test]
fn a_type_whose_values_explode_is_refused_within_a_bound() {
    // 24 binary variants before the leaf: a value built by taking each
    // variant in turn would have 2^24 nodes; the tracer gives up at
    // MAX_STEPS positions of a pass (or finds the leaf first), never hangs.
    match Shape::trace::<Expr>() {
        Ok(traced) => assert!(traced.description.starts_with("Expr {A(Expr, Expr)"), "{}", traced.description),
        Err(why) => assert!(why.contains("positions"), "{why}"),
    }
}

/// Like a timestamp of chrono: a string it parses.
#[derive(Serialize)]
struct Timestamp(i64);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map(Timestamp).map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
struct Stamped {
    at: Timestamp,
    value: u64,
}

/// A type whose `From` asserts what the tracer's value cannot satisfy.
#[derive(Serialize, Deserialize)]
#[serde(from = "String")]
struct Email(String);

impl From<String> for Email {
    fn from(s: String) -> Email {
        assert!(s.contains('@'), "not an email: {s}");
        Email(s)
    }
}

#[test]
fn an_untraceable_part_makes_the_whole_unknown_and_says_why() {
    let why = Shape::trace::<Stamped>().unwrap_err();
    assert!(why.contains("refused the tracer's value"), "{why}");
    assert_eq!(Shape::of::<Stamped>(), Shape::UNKNOWN);
    assert_eq!(Shape::of::<Vec<Stamped>>(), Shape::UNKNOWN);
    assert_eq!(Shape::seq(Shape::UNKNOWN), Shape::UNKNOWN);
    assert_eq!(Shape::tuple(&[Shape::U8, Shape::UNKNOWN]), Shape::UNKNOWN);
    // A panic in a `Deserialize` is caught: the shape is unknown, nothing else fails.
    let why = Shape::trace::<Email>().unwrap_err();
    assert!(why.contains("panicked") && why.contains("not an email"), "{why}");
    assert_eq!(Shape::of::<Email>(), Shape::UNKNOWN);
}

/// A byte string (`serde_bytes`): the same bytes as a `Vec<u8>`.
#[derive(Serialize, Deserialize)]
struct Blob(#[serde(with = "bytes_as")] Vec<u8>);

mod bytes_as {
    use serde::{Deserializer, Serializer};
    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
        }
        d.deserialize_byte_buf(V)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename = "Blob")]
struct PlainBlob(Vec<u8>);

#[test]
fn byte_strings_and_byte_vectors_are_one_shape() {
    assert_eq!(
        postcard::to_allocvec(&Blob(vec![1, 2])).unwrap(),
        postcard::to_allocvec(&PlainBlob(vec![1, 2])).unwrap()
    );
    assert_eq!(shape::<Blob>(), shape::<PlainBlob>());
}

/// A hand-written impl, whose shape comes from the table shared by types.
#[derive(Serialize, Deserialize)]
struct HandWritten {
    n: u64,
}

impl Message for HandWritten {
    const TAG: crate::Tag = crate::Tag::named("test.HandWritten");
}

#[test]
fn the_shared_table_remembers_each_type_apart() {
    assert_eq!(HandWritten::shape(), shape::<HandWritten>());
    assert_eq!(HandWritten::shape(), HandWritten::shape());
    assert_eq!(Shape::of::<Wrap<u8>>(), shape::<Wrap<u8>>());
    assert_ne!(Shape::of::<Wrap<u8>>(), Shape::of::<Wrap<i8>>());
}
