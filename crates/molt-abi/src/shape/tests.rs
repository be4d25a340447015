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
            // Swap two differing fields, or drop one.
            2 if fields.len() > 1 && fields[0] != fields[1] => fields.swap(0, 1),
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
        let before = [EnumShape { name: "E", variants: &NAMES[..count], bodies: bodies.clone() }];
        let mut more = bodies;
        more.push(Some(Body::Unit));
        let after = [EnumShape { name: "E", variants: &NAMES[..=count], bodies: more }];
        prop_assert_ne!(fingerprint(&Node::Enum(0), &before), fingerprint(&Node::Enum(0), &after));
    }
}
