//! A traced shape as a tree ([`Node`]), and the two things made of it: its
//! fingerprint and its description.
//!
//! Enums are kept in a table beside the tree (an enum's variants are found
//! one per tracing pass, see `trace.rs`), referenced by index. A recursive
//! type is cut where it recurs: the node there says how many named types
//! up its own definition starts.

use super::Shape;
use super::kind;
use super::{hash_fields, hash_items, hash_newtype, mix, mix_name, start};

/// One position in a traced type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    /// Nothing was traced here (a variant never reached).
    Unknown,
    /// A primitive, by its `kind`.
    Leaf(u64),
    Option(Box<Node>),
    Seq(Box<Node>),
    Map(Box<Node>, Box<Node>),
    Tuple(Vec<Node>),
    /// A struct of any form.
    Struct(&'static str, Body),
    /// An enum: its index in the [`Enums`] table.
    Enum(usize),
    /// A reference to the named type this many named types up.
    Recursion(usize),
}

/// The contents of a struct or an enum variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Body {
    Unit,
    Newtype(Box<Node>),
    Tuple(Vec<Node>),
    Fields(Vec<(&'static str, Node)>),
}

/// An enum: its name, its variants' names (in index order, which is
/// postcard's tag) and what each carries, once traced.
#[derive(Clone, Debug)]
pub(crate) struct EnumShape {
    /// Which enum it is, by Rust type (within one trace only).
    pub(crate) identity: &'static str,
    pub(crate) name: &'static str,
    pub(crate) variants: &'static [&'static str],
    pub(crate) bodies: Vec<Option<Body>>,
}

pub(crate) type Enums = [EnumShape];

/// The fingerprint of `node`. Type names are left out; field and variant
/// names are in.
pub(crate) fn fingerprint(node: &Node, enums: &Enums) -> Shape {
    Shape(Walk { enums }.node(node))
}

struct Walk<'e> {
    enums: &'e Enums,
}

/// What `Walk` returns for a part it cannot know; whatever contains it is
/// unknown too.
const UNKNOWN: u64 = Shape::UNKNOWN.0;

impl Walk<'_> {
    fn node(&mut self, node: &Node) -> u64 {
        match node {
            Node::Unknown => UNKNOWN,
            Node::Leaf(kind::BYTES) => Shape::BYTES.0,
            Node::Leaf(kind) => mix(start(), *kind),
            Node::Option(inner) => Shape::option(Shape(self.node(inner))).0,
            Node::Seq(item) => Shape::seq(Shape(self.node(item))).0,
            Node::Map(key, value) => Shape::map(Shape(self.node(key)), Shape(self.node(value))).0,
            Node::Tuple(items) => Shape::tuple(&self.shapes(items)).0,
            Node::Struct(_, body) => self.body(mix(start(), kind::STRUCT), body),
            Node::Enum(index) => {
                let Some(shape) = self.enums.get(*index) else { return UNKNOWN };
                let mut hash = mix(mix(start(), kind::ENUM), shape.variants.len() as u64);
                for (tag, name) in shape.variants.iter().enumerate() {
                    hash = mix_name(mix(hash, tag as u64), name);
                    // A variant never reached leaves the enum unknown.
                    let Some(body) = shape.bodies.get(tag).and_then(Option::as_ref) else { return UNKNOWN };
                    hash = self.body(hash, body);
                    if hash == UNKNOWN {
                        return UNKNOWN;
                    }
                }
                hash
            }
            Node::Recursion(up) => mix(mix(start(), kind::RECURSION), *up as u64),
        }
    }

    fn shapes(&mut self, nodes: &[Node]) -> Vec<Shape> {
        nodes.iter().map(|node| Shape(self.node(node))).collect()
    }

    fn body(&mut self, hash: u64, body: &Body) -> u64 {
        match body {
            Body::Unit => mix(hash, kind::UNIT_BODY),
            Body::Newtype(inner) => hash_newtype(mix(hash, kind::NEWTYPE_BODY), Shape(self.node(inner))),
            Body::Tuple(items) => hash_items(mix(hash, kind::TUPLE_BODY), &self.shapes(items)),
            Body::Fields(fields) => {
                let fields: Vec<(&str, Shape)> =
                    fields.iter().map(|(name, field)| (*name, Shape(self.node(field)))).collect();
                hash_fields(mix(hash, kind::FIELDS_BODY), &fields)
            }
        }
    }
}

/// The longest description kept: a deep type is cut there.
const DESCRIPTION_LIMIT: usize = 400;

/// `node` written out for people, type names in: `Put {key: str, value: u64}`.
pub(crate) fn describe(node: &Node, enums: &Enums) -> String {
    let mut out = String::new();
    Describe { enums, open: Vec::new(), out: &mut out }.node(node);
    if out.len() > DESCRIPTION_LIMIT {
        let mut cut = DESCRIPTION_LIMIT;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

struct Describe<'e, 'o> {
    enums: &'e Enums,
    /// The named types enclosing the node, outermost first.
    open: Vec<&'static str>,
    out: &'o mut String,
}

impl Describe<'_, '_> {
    fn node(&mut self, node: &Node) {
        if self.out.len() > DESCRIPTION_LIMIT {
            return;
        }
        match node {
            Node::Unknown => self.out.push('?'),
            Node::Leaf(kind) => self.out.push_str(kind::name(*kind)),
            Node::Option(inner) => self.list("Option<", [&**inner], ">"),
            Node::Seq(item) => self.list("[", [&**item], "]"),
            Node::Map(key, value) => self.list("{", [&**key, &**value], "}"),
            // `[u8; 8]` and `(u8, …, u8)` are the same bytes; the short form reads better.
            Node::Tuple(items) if items.len() > 1 && items.iter().all(|item| *item == items[0]) => {
                self.list("[", [&items[0]], "");
                self.out.push_str(&format!("; {}]", items.len()));
            }
            Node::Tuple(items) => self.list("(", items, ")"),
            Node::Struct(name, body) => {
                self.out.push_str(name);
                self.open.push(name);
                self.body(body);
                self.open.pop();
            }
            Node::Enum(index) => {
                let Some(shape) = self.enums.get(*index) else { return self.out.push('?') };
                self.out.push_str(shape.name);
                self.open.push(shape.name);
                self.out.push_str(" {");
                for (tag, name) in shape.variants.iter().enumerate() {
                    self.out.push_str(if tag > 0 { " | " } else { "" });
                    self.out.push_str(name);
                    match shape.bodies.get(tag).and_then(Option::as_ref) {
                        Some(body) => self.body(body),
                        None => self.out.push_str(" ?"),
                    }
                }
                self.out.push('}');
                self.open.pop();
            }
            Node::Recursion(up) => {
                let name = self.open.len().checked_sub(*up).and_then(|at| self.open.get(at));
                self.out.push_str(name.copied().unwrap_or("?"));
            }
        }
    }

    fn list<'n>(&mut self, open: &str, items: impl IntoIterator<Item = &'n Node>, close: &str) {
        self.out.push_str(open);
        for (i, item) in items.into_iter().enumerate() {
            self.out.push_str(if i > 0 { ", " } else { "" });
            self.node(item);
        }
        self.out.push_str(close);
    }

    fn body(&mut self, body: &Body) {
        match body {
            Body::Unit => {}
            Body::Newtype(inner) => self.list("(", [&**inner], ")"),
            Body::Tuple(items) => self.list("(", items, ")"),
            Body::Fields(fields) => {
                self.out.push_str(" {");
                for (i, (name, field)) in fields.iter().enumerate() {
                    self.out.push_str(if i > 0 { ", " } else { "" });
                    self.out.push_str(name);
                    self.out.push_str(": ");
                    self.node(field);
                }
                self.out.push('}');
            }
        }
    }
}
