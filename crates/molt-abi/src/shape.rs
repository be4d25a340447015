//! Shapes: the fingerprint of a type's serde shape ([`Shape`]), which every
//! message carries beside its tag and every module declares for its states
//! and messages, so that two versions that disagree on a type are told
//! apart instead of decoding one another's bytes into wrong values.
//!
//! A shape is computed from serde's data model — what the type's
//! `Deserialize` asks of postcard, traced by `trace.rs`: field names, their
//! order and types, variant names and indexes, sequences, maps, options,
//! tuples and the primitive types. Type names are left out: renaming a
//! struct keeps its shape, renaming a field changes it. The fingerprint is
//! a hash of that structure (`tree.rs`), the same in every build of the
//! same type (host or module, any compiler run), and compositional: the
//! shape of `(A, B)` is made from the shapes of `A` and `B`, so the shapes
//! of the built-in message types are constants.
//!
//! Why not serde-reflection: it finds one variant of an enum per pass and
//! re-explores only the type it was asked for, so every enum nested in a
//! message (`ExitReason` in `Exit`) would need a trace call of its own,
//! naming its type — which a derive on the outer type cannot know.

mod by_type;
mod trace;
mod tree;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::message::{FNV_OFFSET, fnv1a};

/// The fingerprint of a type's serde shape (see the module docs).
/// [`Shape::UNKNOWN`] stands for a type whose shape could not be traced; it
/// is never taken to differ from another shape.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Shape(pub u64);

impl std::fmt::Debug for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shape({self})")
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if *self == Shape::UNKNOWN { f.write_str("unknown") } else { write!(f, "{:016x}", self.0) }
    }
}

/// The node kinds of a shape, one number each; a new kind takes a new number
/// and an existing one never changes (it is part of every fingerprint).
mod kind {
    pub(super) const UNIT: u64 = 1;
    pub(super) const BOOL: u64 = 2;
    pub(super) const I8: u64 = 3;
    pub(super) const I16: u64 = 4;
    pub(super) const I32: u64 = 5;
    pub(super) const I64: u64 = 6;
    pub(super) const I128: u64 = 7;
    pub(super) const U8: u64 = 8;
    pub(super) const U16: u64 = 9;
    pub(super) const U32: u64 = 10;
    pub(super) const U64: u64 = 11;
    pub(super) const U128: u64 = 12;
    pub(super) const F32: u64 = 13;
    pub(super) const F64: u64 = 14;
    pub(super) const CHAR: u64 = 15;
    pub(super) const STR: u64 = 16;
    pub(super) const BYTES: u64 = 17;
    pub(super) const OPTION: u64 = 18;
    pub(super) const SEQ: u64 = 19;
    pub(super) const MAP: u64 = 20;
    pub(super) const TUPLE: u64 = 21;
    pub(super) const STRUCT: u64 = 22;
    pub(super) const ENUM: u64 = 23;
    pub(super) const UNIT_BODY: u64 = 24;
    pub(super) const NEWTYPE_BODY: u64 = 25;
    pub(super) const TUPLE_BODY: u64 = 26;
    pub(super) const FIELDS_BODY: u64 = 27;
    /// A reference back to an enclosing type (a recursive type), by depth.
    pub(super) const RECURSION: u64 = 28;
    /// A [`Pid`](crate::Pid): a leaf of its own, as its wire form (a byte
    /// string) is molt's.
    pub(super) const PID: u64 = 29;

    /// A primitive kind as a description writes it.
    pub(super) fn name(kind: u64) -> &'static str {
        const NAMES: [&str; 18] = [
            "?", "()", "bool", "i8", "i16", "i32", "i64", "i128", "u8", "u16", "u32", "u64", "u128", "f32", "f64",
            "char", "str", "bytes",
        ];
        match kind {
            PID => "Pid",
            kind => NAMES.get(kind as usize).copied().unwrap_or("?"),
        }
    }
}

/// Where every fingerprint's hash starts.
const fn start() -> u64 {
    FNV_OFFSET
}

/// Folds one word into a hash: two multiplies and two shifts (a
/// splitmix64-style finaliser), so composing the shape of `(Pid, u64)` on
/// every send costs a few nanoseconds.
const fn mix(hash: u64, word: u64) -> u64 {
    let mut x = (hash ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 32;
    x = x.wrapping_mul(0xd6e8_feb8_6659_fd93);
    x ^ (x >> 32)
}

const fn mix_name(hash: u64, name: &str) -> u64 {
    fnv1a(name.as_bytes(), mix(hash, name.len() as u64))
}

/// The one definition of how parts fold into a shape, for the constants
/// here and for the tracer's walk (`tree.rs`): `hash` is what precedes the
/// parts (their kind); an unknown part makes the whole unknown.
pub(crate) const fn hash_items(hash: u64, items: &[Shape]) -> u64 {
    let mut hash = mix(hash, items.len() as u64);
    let mut i = 0;
    while i < items.len() {
        if items[i].0 == Shape::UNKNOWN.0 {
            return Shape::UNKNOWN.0;
        }
        hash = mix(hash, items[i].0);
        i += 1;
    }
    hash
}

/// Named fields, in order; see [`hash_items`].
pub(crate) const fn hash_fields(hash: u64, fields: &[(&str, Shape)]) -> u64 {
    let mut hash = mix(hash, fields.len() as u64);
    let mut i = 0;
    while i < fields.len() {
        if fields[i].1.0 == Shape::UNKNOWN.0 {
            return Shape::UNKNOWN.0;
        }
        hash = mix(mix_name(hash, fields[i].0), fields[i].1.0);
        i += 1;
    }
    hash
}

/// One wrapped part; see [`hash_items`].
pub(crate) const fn hash_newtype(hash: u64, inner: Shape) -> u64 {
    if inner.0 == Shape::UNKNOWN.0 {
        return Shape::UNKNOWN.0;
    }
    mix(hash, inner.0)
}

const fn leaf(kind: u64) -> Shape {
    Shape(mix(start(), kind))
}

impl Shape {
    /// A type whose shape could not be traced: never taken to differ.
    pub const UNKNOWN: Shape = Shape(0);
    /// `()`.
    pub const UNIT: Shape = leaf(kind::UNIT);
    /// `bool`.
    pub const BOOL: Shape = leaf(kind::BOOL);
    /// `i8`.
    pub const I8: Shape = leaf(kind::I8);
    /// `i16`.
    pub const I16: Shape = leaf(kind::I16);
    /// `i32`.
    pub const I32: Shape = leaf(kind::I32);
    /// `i64` (and `isize`).
    pub const I64: Shape = leaf(kind::I64);
    /// `i128`.
    pub const I128: Shape = leaf(kind::I128);
    /// `u8`.
    pub const U8: Shape = leaf(kind::U8);
    /// `u16`.
    pub const U16: Shape = leaf(kind::U16);
    /// `u32`.
    pub const U32: Shape = leaf(kind::U32);
    /// `u64` (and `usize`).
    pub const U64: Shape = leaf(kind::U64);
    /// `u128`.
    pub const U128: Shape = leaf(kind::U128);
    /// `f32`.
    pub const F32: Shape = leaf(kind::F32);
    /// `f64`.
    pub const F64: Shape = leaf(kind::F64);
    /// `char`.
    pub const CHAR: Shape = leaf(kind::CHAR);
    /// A string.
    pub const STR: Shape = leaf(kind::STR);
    /// A byte string (`serde_bytes`): the same bytes as a `Vec<u8>`, so
    /// the same shape.
    pub const BYTES: Shape = Shape::seq(Shape::U8);

    /// `Option<T>` of a `T` of shape `inner`. Made of an unknown shape, a
    /// shape is unknown (so are all the compositions below).
    pub const fn option(inner: Shape) -> Shape {
        if inner.0 == Shape::UNKNOWN.0 {
            return Shape::UNKNOWN;
        }
        Shape(mix(mix(start(), kind::OPTION), inner.0))
    }

    /// A sequence (`Vec<T>`, a set) of `item`.
    pub const fn seq(item: Shape) -> Shape {
        if item.0 == Shape::UNKNOWN.0 {
            return Shape::UNKNOWN;
        }
        Shape(mix(mix(start(), kind::SEQ), item.0))
    }

    /// A map from `key` to `value`.
    pub const fn map(key: Shape, value: Shape) -> Shape {
        if key.0 == Shape::UNKNOWN.0 || value.0 == Shape::UNKNOWN.0 {
            return Shape::UNKNOWN;
        }
        Shape(mix(mix(mix(start(), kind::MAP), key.0), value.0))
    }

    /// A tuple (or fixed-size array) of `items`.
    pub const fn tuple(items: &[Shape]) -> Shape {
        Shape(hash_items(mix(start(), kind::TUPLE), items))
    }

    /// A struct with named fields, in order (what `#[derive(Deserialize)]`
    /// makes of `struct S { a: A, b: B }`); the type's name is left out.
    pub const fn structure(fields: &[(&str, Shape)]) -> Shape {
        Shape(hash_fields(mix(mix(start(), kind::STRUCT), kind::FIELDS_BODY), fields))
    }

    /// A newtype struct (`struct S(T)`) around `inner`.
    pub const fn newtype(inner: Shape) -> Shape {
        Shape(hash_newtype(mix(mix(start(), kind::STRUCT), kind::NEWTYPE_BODY), inner))
    }

    /// [`Pid`](crate::Pid): a constant, so messages made of pids cost
    /// nothing to fingerprint.
    pub const PID: Shape = leaf(kind::PID);

    /// [`TimerRef`](crate::TimerRef).
    pub const TIMER_REF: Shape =
        Shape::structure(&[("id", Shape::U64), ("slot", Shape::U32), ("scheduler", Shape::U32)]);

    /// [`MonitorRef`](crate::MonitorRef).
    pub const MONITOR_REF: Shape = Shape::structure(&[("id", Shape::U64), ("target", Shape::PID)]);

    /// Whether a value of shape `self` may be decoded as a type of shape
    /// `other`: the same shape, or one of them unknown.
    #[inline]
    pub fn fits(self, other: Shape) -> bool {
        self == other || self == Shape::UNKNOWN || other == Shape::UNKNOWN
    }

    /// The shape of `T`, traced now (see [`Shape::of`] for a cached one).
    ///
    /// # Errors
    /// When `T`'s `Deserialize` cannot be traced (see [`TracedShape`]).
    pub fn trace<T: DeserializeOwned>() -> Result<TracedShape, String> {
        traced::<T>()
    }

    /// The shape of `T`, traced on first use into `cell` (a static of `T`'s
    /// own: what `#[derive(Message)]` keeps it in).
    #[doc(hidden)]
    #[inline]
    pub fn cached<T: DeserializeOwned>(cell: &'static std::sync::OnceLock<Shape>) -> Shape {
        *cell.get_or_init(Shape::of_uncached::<T>)
    }

    /// The shape of `T`, traced now; [`Shape::UNKNOWN`] if it cannot be.
    #[doc(hidden)]
    pub fn of_uncached<T: DeserializeOwned>() -> Shape {
        traced::<T>().map_or(Shape::UNKNOWN, |traced| traced.shape)
    }

    /// The shape of `T`, traced once per type and then remembered in a
    /// table shared by all types (lock-free: a few nanoseconds a look-up);
    /// [`Shape::UNKNOWN`] if it cannot be traced. `#[derive(Message)]` keeps
    /// each type's shape in a static of its own instead, which is faster.
    pub fn of<T: DeserializeOwned + 'static>() -> Shape {
        by_type::shape_of::<T>()
    }
}

/// The body of a `Message::shape` that traces its type once, on first use,
/// and keeps the shape in a static of its own (a non-generic type only: a
/// static in a generic function is shared by all its instances).
/// `#[derive(Message)]` writes the same body.
macro_rules! cached_shape {
    () => {{
        static SHAPE: ::std::sync::OnceLock<$crate::Shape> = ::std::sync::OnceLock::new();
        $crate::Shape::cached::<Self>(&SHAPE)
    }};
}
pub(crate) use cached_shape;

/// A traced shape: its fingerprint and a description a person can compare
/// (`Put {key: str, value: u64}`), for errors and `modules()`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracedShape {
    /// The fingerprint.
    pub shape: Shape,
    /// The shape written out, type names included.
    pub description: String,
}

impl std::fmt::Display for TracedShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` (shape {})", self.description, self.shape)
    }
}

fn traced<T: DeserializeOwned>() -> Result<TracedShape, String> {
    // A `Deserialize` may panic on the tracer's values (a `From` that
    // asserts): that type's shape is then unknown, and nothing else fails.
    let traced = std::panic::catch_unwind(trace::trace::<T>)
        .map_err(|panic| format!("its Deserialize panicked on the tracer's values: {}", crate::panic_message(panic)))?
        .map_err(|error| error.0)?;
    Ok(TracedShape {
        shape: tree::fingerprint(&traced.root, &traced.enums),
        description: tree::describe(&traced.root, &traced.enums),
    })
}

#[cfg(test)]
mod tests;
