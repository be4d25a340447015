//! The tracer: a serde `Deserializer` that asks a type for a value the way
//! postcard would, and records what the type asked for as a [`Node`] tree.
//!
//! A `Deserialize` visits one enum variant per value, so a type is traced
//! in passes: each pass visits, in every enum it meets, a variant not seen
//! yet (or one under which some enum still has unseen variants), until no
//! pass finds anything new. Where a type recurs, the tracer records a
//! reference and builds the rest of that value as small as it can (no
//! option, empty sequences, a unit variant) without recording it.
//!
//! Types are told apart by their Rust type (`type_name` of what their
//! visitor builds), not by serde's name, which leaves out generic
//! parameters and module paths: `Wrap<u8>` inside `Wrap<String>` is not a
//! recursion, and `Result<u8, u32>` and `Result<u64, bool>` in one message
//! are two enums. That identity only tells types apart within one trace;
//! it is never part of a fingerprint.
//!
//! A type whose `Deserialize` asks for a self-describing format
//! (`deserialize_any`: untagged or internally tagged enums, flatten) cannot
//! be traced — and cannot be decoded by postcard either; nor can one whose
//! values take more than [`MAX_STEPS`] positions to build.

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::kind;
use super::tree::{Body, EnumShape, Node};

/// How many passes a type gets before the tracer settles for what it has.
const MAX_PASSES: usize = 4096;
/// How deep named types may nest in one value.
const MAX_DEPTH: usize = 128;
/// How many positions one pass may visit: a bound on the work a type can
/// make the tracer do (a recursive enum can make values that grow
/// exponentially with its variants).
pub(crate) const MAX_STEPS: usize = 20_000;

/// Why a type could not be traced.
#[derive(Debug)]
pub(crate) struct TraceError(pub(crate) String);

impl std::fmt::Display for TraceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TraceError {}

impl de::Error for TraceError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        TraceError(format!("its Deserialize refused the tracer's value: {msg}"))
    }
}

/// What tracing a type found: its tree and the enums it references.
pub(crate) struct Traced {
    pub(crate) root: Node,
    pub(crate) enums: Vec<EnumShape>,
}

/// Traces `T`.
pub(crate) fn trace<T: de::DeserializeOwned>() -> Result<Traced, TraceError> {
    let mut tracer = Tracer { enums: Vec::new(), open: Vec::new(), cut: 0, found: false, steps: 0 };
    let mut root = Node::Unknown;
    for pass in 0..MAX_PASSES {
        tracer.found = false;
        tracer.steps = 0;
        let mut node = Node::Unknown;
        T::deserialize(Probe { tracer: &mut tracer, out: &mut node })?;
        if pass == 0 {
            root = node;
        }
        if !tracer.found || tracer.next_incomplete().is_none() {
            break;
        }
    }
    Ok(Traced { root, enums: tracer.enums })
}

struct Tracer {
    enums: Vec<EnumShape>,
    /// The named types being built, outermost first, by Rust type.
    open: Vec<&'static str>,
    /// Above 0 while a recurring type's value is built: nothing recorded.
    cut: usize,
    /// Whether this pass recorded a variant not seen before.
    found: bool,
    /// Positions visited in this pass.
    steps: usize,
}

impl Tracer {
    /// An enum with a variant not traced yet, if any.
    fn next_incomplete(&self) -> Option<usize> {
        self.enums.iter().position(|shape| shape.bodies.iter().any(Option::is_none))
    }

    /// Whether `node` leads to an enum with untraced variants.
    fn leads_to_incomplete(&self, node: &Node, seen: &mut Vec<usize>) -> bool {
        match node {
            Node::Unknown | Node::Leaf(_) | Node::Recursion(_) => false,
            Node::Option(inner) | Node::Seq(inner) => self.leads_to_incomplete(inner, seen),
            Node::Map(key, value) => self.leads_to_incomplete(key, seen) || self.leads_to_incomplete(value, seen),
            Node::Tuple(items) => items.iter().any(|item| self.leads_to_incomplete(item, seen)),
            Node::Struct(_, body) => self.body_leads_to_incomplete(body, seen),
            Node::Enum(index) => {
                if seen.contains(index) {
                    return false;
                }
                seen.push(*index);
                let shape = &self.enums[*index];
                shape.bodies.iter().any(|body| match body {
                    None => true,
                    Some(body) => self.body_leads_to_incomplete(body, seen),
                })
            }
        }
    }

    fn body_leads_to_incomplete(&self, body: &Body, seen: &mut Vec<usize>) -> bool {
        match body {
            Body::Unit => false,
            Body::Newtype(inner) => self.leads_to_incomplete(inner, seen),
            Body::Tuple(items) => items.iter().any(|item| self.leads_to_incomplete(item, seen)),
            Body::Fields(fields) => fields.iter().any(|(_, field)| self.leads_to_incomplete(field, seen)),
        }
    }

    /// The variant of enum `index` this visit takes: one never traced, else
    /// one under which something is untraced, else the simplest.
    fn choose_variant(&self, index: usize) -> usize {
        let shape = &self.enums[index];
        if let Some(untraced) = shape.bodies.iter().position(Option::is_none) {
            return untraced;
        }
        let leads = shape
            .bodies
            .iter()
            .position(|body| body.as_ref().is_some_and(|body| self.body_leads_to_incomplete(body, &mut vec![index])));
        leads.unwrap_or_else(|| self.simplest_variant(index))
    }

    /// Counts a position; refuses past [`MAX_STEPS`].
    fn step(&mut self) -> Result<(), TraceError> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(TraceError(format!(
                "its values take more than {MAX_STEPS} positions to build (a recursive type whose variants \
                 mostly recurse?)"
            )));
        }
        Ok(())
    }

    /// The traced variant that recurs least (a unit variant cannot recur);
    /// else, as the enum nests deeper in itself, each variant in turn, so
    /// that a value of a recursive enum reaches one that ends it (`Nil`
    /// after `Cons`).
    fn simplest_variant(&self, index: usize) -> usize {
        let shape = &self.enums[index];
        let traced = shape.bodies.iter().enumerate().filter_map(|(i, body)| Some((weight_of_body(body.as_ref()?), i)));
        if let Some((_, simplest)) = traced.min() {
            return simplest;
        }
        let nesting = self.open.iter().filter(|open| **open == shape.identity).count();
        nesting % shape.variants.len()
    }

    fn enum_index(&mut self, identity: &'static str, name: &'static str, variants: &'static [&'static str]) -> usize {
        if let Some(index) = self.enums.iter().position(|shape| shape.identity == identity) {
            return index;
        }
        self.enums.push(EnumShape { identity, name, variants, bodies: vec![None; variants.len()] });
        self.enums.len() - 1
    }

    /// Opens the named type whose Rust type is `name`: the recursion it
    /// is, if it is already open (the caller then builds its value without
    /// recording).
    fn open(&mut self, name: &'static str) -> Result<Option<usize>, TraceError> {
        if self.open.len() >= MAX_DEPTH {
            return Err(TraceError(format!(
                "named types nest deeper than {MAX_DEPTH} (a recursive enum whose every variant recurses?)"
            )));
        }
        let recursion = self.open.iter().rposition(|open| *open == name).map(|at| self.open.len() - at);
        self.open.push(name);
        if recursion.is_some() {
            self.cut += 1;
        }
        Ok(recursion)
    }

    fn close(&mut self, recursion: Option<usize>) {
        self.open.pop();
        if recursion.is_some() {
            self.cut -= 1;
        }
    }
}

/// How much a variant recurs or is unknown: the variant a value of a
/// recurring type takes where it recurs is the lightest.
fn weight_of_body(body: &Body) -> usize {
    match body {
        Body::Unit => 0,
        Body::Newtype(inner) => weight(inner),
        Body::Tuple(items) => items.iter().map(weight).sum(),
        Body::Fields(fields) => fields.iter().map(|(_, field)| weight(field)).sum(),
    }
}

fn weight(node: &Node) -> usize {
    match node {
        Node::Leaf(_) | Node::Option(_) | Node::Seq(_) | Node::Map(..) => 0,
        Node::Unknown | Node::Enum(_) => 1,
        Node::Recursion(_) => 4,
        Node::Tuple(items) => items.iter().map(weight).sum(),
        Node::Struct(_, body) => weight_of_body(body),
    }
}

/// The deserializer for one position: writes what is asked there to `out`.
struct Probe<'t> {
    tracer: &'t mut Tracer,
    out: &'t mut Node,
}

impl Probe<'_> {
    fn recording(&self) -> bool {
        self.tracer.cut == 0
    }

    /// A named struct whose `count` parts come as a sequence (what postcard
    /// makes of tuple structs and structs alike); `body` names the parts.
    fn sequence_struct<'de, V: Visitor<'de>>(
        self,
        name: &'static str,
        count: usize,
        visitor: V,
        body: impl FnOnce(Vec<Node>) -> Body,
    ) -> Result<V::Value, TraceError> {
        let recursion = self.tracer.open(std::any::type_name::<V::Value>())?;
        let mut items = vec![Node::Unknown; count];
        let value = visitor.visit_seq(Elements { tracer: self.tracer, items: &mut items, next: 0, count });
        self.tracer.close(recursion);
        *self.out = match recursion {
            Some(up) => Node::Recursion(up),
            None => Node::Struct(name, body(items)),
        };
        value
    }
}

macro_rules! primitives {
    ($($method:ident => $kind:expr, $visit:ident($($value:expr)?);)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
            *self.out = Node::Leaf($kind);
            visitor.$visit($($value)?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = TraceError;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, TraceError> {
        Err(TraceError(
            "its Deserialize needs a self-describing format (an untagged or internally tagged enum, \
             #[serde(flatten)], or a hand-written deserialize_any), which postcard cannot decode either"
                .into(),
        ))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.deserialize_any(visitor)
    }

    primitives! {
        deserialize_bool => kind::BOOL, visit_bool(false);
        deserialize_i8 => kind::I8, visit_i8(1);
        deserialize_i16 => kind::I16, visit_i16(1);
        deserialize_i32 => kind::I32, visit_i32(1);
        deserialize_i64 => kind::I64, visit_i64(1);
        deserialize_i128 => kind::I128, visit_i128(1);
        deserialize_u8 => kind::U8, visit_u8(1);
        deserialize_u16 => kind::U16, visit_u16(1);
        deserialize_u32 => kind::U32, visit_u32(1);
        deserialize_u64 => kind::U64, visit_u64(1);
        deserialize_u128 => kind::U128, visit_u128(1);
        deserialize_f32 => kind::F32, visit_f32(1.0);
        deserialize_f64 => kind::F64, visit_f64(1.0);
        deserialize_char => kind::CHAR, visit_char('a');
        deserialize_str => kind::STR, visit_borrowed_str("a");
        deserialize_string => kind::STR, visit_str("a");
        deserialize_bytes => kind::BYTES, visit_borrowed_bytes(&[1]);
        deserialize_byte_buf => kind::BYTES, visit_bytes(&[1]);
        deserialize_unit => kind::UNIT, visit_unit();
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        // What postcard does: an identifier is its index.
        *self.out = Node::Leaf(kind::U32);
        visitor.visit_u32(0)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        if !self.recording() {
            return visitor.visit_none();
        }
        self.tracer.step()?;
        let mut inner = Node::Unknown;
        let value = visitor.visit_some(Probe { tracer: self.tracer, out: &mut inner })?;
        *self.out = Node::Option(Box::new(inner));
        Ok(value)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let count = usize::from(self.recording());
        let mut items = vec![Node::Unknown];
        let value = visitor.visit_seq(Elements { tracer: self.tracer, items: &mut items, next: 0, count })?;
        *self.out = Node::Seq(Box::new(items.pop().unwrap_or(Node::Unknown)));
        Ok(value)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let count = usize::from(self.recording());
        let mut entry = [Node::Unknown, Node::Unknown];
        let value = visitor.visit_map(Entries { tracer: self.tracer, entry: &mut entry, left: count })?;
        let [key, value_node] = entry;
        *self.out = Node::Map(Box::new(key), Box::new(value_node));
        Ok(value)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, TraceError> {
        let mut items = vec![Node::Unknown; len];
        let value = visitor.visit_seq(Elements { tracer: self.tracer, items: &mut items, next: 0, count: len })?;
        *self.out = Node::Tuple(items);
        Ok(value)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, TraceError> {
        *self.out = Node::Struct(name, Body::Unit);
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        if name == crate::pid::PID_NAME {
            // A pid is a leaf; its `Deserialize` gets a pid's bytes.
            *self.out = Node::Leaf(kind::PID);
            let bytes = serde::de::value::BorrowedBytesDeserializer::new(&crate::pid::SAMPLE_PID_BYTES);
            return visitor.visit_newtype_struct(bytes);
        }
        let recursion = self.tracer.open(std::any::type_name::<V::Value>())?;
        let mut inner = Node::Unknown;
        let value = visitor.visit_newtype_struct(Probe { tracer: self.tracer, out: &mut inner });
        self.tracer.close(recursion);
        *self.out = match recursion {
            Some(up) => Node::Recursion(up),
            None => Node::Struct(name, Body::Newtype(Box::new(inner))),
        };
        value
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.sequence_struct(name, len, visitor, Body::Tuple)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.sequence_struct(name, fields.len(), visitor, |items| {
            Body::Fields(fields.iter().copied().zip(items).collect())
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        if variants.is_empty() {
            return Err(TraceError(format!("the enum {name} has no variants, so no value of it can be built")));
        }
        let identity = std::any::type_name::<V::Value>();
        let index = self.tracer.enum_index(identity, name, variants);
        let recursion = self.tracer.open(identity)?;
        let recording = self.tracer.cut == 0;
        let variant = if recording { self.tracer.choose_variant(index) } else { self.tracer.simplest_variant(index) };
        let mut body = Body::Unit;
        let value = visitor.visit_enum(Variant { tracer: self.tracer, variant, body: &mut body });
        self.tracer.close(recursion);
        if recording && value.is_ok() {
            let slot = &mut self.tracer.enums[index].bodies[variant];
            if slot.is_none() {
                *slot = Some(body);
                self.tracer.found = true;
            }
        }
        *self.out = match recursion {
            Some(up) => Node::Recursion(up),
            None => Node::Enum(index),
        };
        value
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// The elements of a sequence, tuple or struct: `count` of them, each
/// recorded in `items` (a sequence keeps its one element's node).
struct Elements<'a> {
    tracer: &'a mut Tracer,
    items: &'a mut [Node],
    next: usize,
    count: usize,
}

impl<'de> de::SeqAccess<'de> for Elements<'_> {
    type Error = TraceError;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, TraceError> {
        if self.next >= self.count {
            return Ok(None);
        }
        self.tracer.step()?;
        let mut scratch = Node::Unknown;
        let out = self.items.get_mut(self.next).unwrap_or(&mut scratch);
        self.next += 1;
        seed.deserialize(Probe { tracer: self.tracer, out }).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.count - self.next)
    }
}

/// A map of at most one entry, recorded in `entry`.
struct Entries<'a> {
    tracer: &'a mut Tracer,
    entry: &'a mut [Node; 2],
    left: usize,
}

impl<'de> de::MapAccess<'de> for Entries<'_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, TraceError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        self.tracer.step()?;
        seed.deserialize(Probe { tracer: self.tracer, out: &mut self.entry[0] }).map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, TraceError> {
        seed.deserialize(Probe { tracer: self.tracer, out: &mut self.entry[1] })
    }
}

/// The variant a pass takes, and where its contents are recorded.
struct Variant<'a> {
    tracer: &'a mut Tracer,
    variant: usize,
    body: &'a mut Body,
}

impl<'de, 'a> de::EnumAccess<'de> for Variant<'a> {
    type Error = TraceError;
    type Variant = Variant<'a>;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Variant<'a>), TraceError> {
        // postcard's variant tag is its index.
        let tag = u32::try_from(self.variant).map_err(|_| TraceError("an enum with over 2^32 variants".into()))?;
        let value = seed.deserialize(IntoDeserializer::<TraceError>::into_deserializer(tag))?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_> {
    type Error = TraceError;

    fn unit_variant(self) -> Result<(), TraceError> {
        *self.body = Body::Unit;
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, TraceError> {
        self.tracer.step()?;
        let mut inner = Node::Unknown;
        let value = seed.deserialize(Probe { tracer: self.tracer, out: &mut inner })?;
        *self.body = Body::Newtype(Box::new(inner));
        Ok(value)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, TraceError> {
        let mut items = vec![Node::Unknown; len];
        let value = visitor.visit_seq(Elements { tracer: self.tracer, items: &mut items, next: 0, count: len })?;
        *self.body = Body::Tuple(items);
        Ok(value)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let mut items = vec![Node::Unknown; fields.len()];
        let value =
            visitor.visit_seq(Elements { tracer: self.tracer, items: &mut items, next: 0, count: fields.len() })?;
        *self.body = Body::Fields(fields.iter().copied().zip(items).collect());
        Ok(value)
    }
}
