//! Messages: the [`Message`] trait, the stable [`Tag`] each message type
//! carries, the [`Envelope`] every mailbox and connection holds, and the
//! system messages the core sends ([`Exit`], [`Down`]).
//!
//! # The envelope's byte format
//!
//! A message is encoded once, at `send`, into an envelope: its type's
//! [`Tag`] (a `u64`), its type's [`Shape`] (a `u64`) and the value's bytes
//! in [postcard]'s format (varint integers, length-prefixed strings and
//! sequences, struct fields in declaration order, no field names). The same
//! envelope sits in a local mailbox and, later, on the wire; its bytes
//! depend only on the value and its type's shape, never on which build of
//! which code sent it.
//!
//! # Tags, not `TypeId`s
//!
//! `TypeId` and type layouts differ between separately built libraries, so a
//! message type names itself: `#[derive(Message)] #[message(name =
//! "myapp.Ping")]`, whose tag is a hash of the name.
//!
//! # Changing a message type
//!
//! postcard is not self-describing: a value of one shape of a type can
//! decode as another shape into wrong values (an `i64` read as a `u64`, a
//! trailing field dropped). So a receive decodes a message only if its
//! shape is the receiving type's; a message with the tag but another shape
//! is a [`ReceiveError::Decode`](crate::ReceiveError::Decode) naming both
//! shapes, unless the receive has an arm for a type of that shape — which
//! is how a process takes the old and the new shape of a message during an
//! upgrade.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serializer};
use smallvec::SmallVec;

use crate::{ExitReason, MonitorRef, Pid, Shape, TimerRef};

pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

pub(crate) const fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    hash
}

/// The stable name of a message type, as a 64-bit hash.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub u64);

impl Tag {
    /// The tag of the type called `name`; choose a name unique to your
    /// application, such as `"myapp.Ping"`.
    pub const fn named(name: &str) -> Tag {
        Tag(fnv1a(name.as_bytes(), FNV_OFFSET))
    }

    /// The tag of a generic type from its own tag and a parameter's, so that
    /// `(Pid, i64)` and `(Pid, u64)` are different messages.
    pub const fn with(self, parameter: Tag) -> Tag {
        Tag(fnv1a(&parameter.0.to_le_bytes(), self.0 ^ 0x9e37_79b9_7f4a_7c15))
    }
}

impl Serialize for Tag {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Tag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Tag, D::Error> {
        u64::deserialize(deserializer).map(Tag)
    }
}

/// A value that can be sent to a process.
///
/// ```
/// use molt_abi::{Message, Tag};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Ping { from: molt_abi::Pid, n: u64 }
///
/// impl Message for Ping {
///     const TAG: Tag = Tag::named("myapp.Ping");
/// }
/// ```
pub trait Message: Serialize + DeserializeOwned + Send + 'static {
    /// This type's stable name: choose one unique to your application.
    const TAG: Tag;

    /// The fingerprint of this type's serde shape, sent with every message
    /// so a receiver never decodes another shape of the type as its own
    /// (see [`Shape`]). The default traces the type once and remembers the
    /// result in a table; `#[derive(Message)]` keeps it in a static of the
    /// type's own.
    fn shape() -> Shape {
        Shape::of::<Self>()
    }

    /// [`Message::shape`] when it is known at compile time (primitives,
    /// pids, and tuples, vectors and options of those), so a generic
    /// message made of them — a `(Pid, u64)` — computes no fingerprint per
    /// send or receive. Leave it `None` (the default).
    const KNOWN_SHAPE: Option<Shape> = None;
}

/// The encoded bytes of one message. Small messages live inline, so sending
/// them allocates once, in the receiving mailbox's queue.
pub type Payload = SmallVec<[u8; 24]>;

/// One encoded message: what a mailbox queues and a connection carries.
///
/// The tag is the message type's [`Message::TAG`] and the shape its
/// [`Message::shape`]; the payload is the value in postcard's format (varint
/// integers except where a type asks for fixed width, length-prefixed
/// strings and sequences, fields in declaration order, no field names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The message type's tag.
    pub tag: Tag,
    /// The message type's shape.
    pub shape: Shape,
    /// The value in postcard's format.
    pub payload: Payload,
}

impl Envelope {
    /// Encodes `message`.
    ///
    /// # Errors
    /// When the value's `Serialize` implementation fails (serde's derive
    /// never does; a hand-written one may).
    pub fn encode<M: Message>(message: &M) -> Result<Envelope, postcard::Error> {
        Ok(Envelope { tag: M::TAG, shape: M::shape(), payload: postcard::to_extend(message, Payload::new())? })
    }

    /// Decodes the payload as `M`, whose tag and shape the caller has checked.
    ///
    /// # Errors
    /// When the bytes are not a value of `M`'s shape.
    pub fn decode<M: Message>(bytes: &[u8]) -> Result<M, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// An exit signal turned into a message, for a process that traps exits
/// (Erlang's `{'EXIT', From, Reason}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// The process whose exit (or `exit` call) sent the signal.
    pub from: Pid,
    /// Its reason.
    pub reason: ExitReason,
}

/// The message a monitor delivers when the monitored process ends
/// (Erlang's `{'DOWN', Ref, process, Pid, Reason}`, Cloud Haskell's
/// `ProcessMonitorNotification`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Down {
    /// The monitor that fired.
    pub monitor: MonitorRef,
    /// The process that ended.
    pub pid: Pid,
    /// Why it ended; [`ExitReason::Noproc`] if it was not alive when monitored.
    pub reason: ExitReason,
}

/// The code server's offer of new code (the seed: "send an upgrade message
/// to the process; when the process is ready it picks the message from its
/// mailbox and upgrades safely"): sent after a load to every process running
/// the module. A process takes it with a hot call at a point of its choosing;
/// one that ignores it keeps its version until that version is purged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upgrade {
    /// The module that was loaded.
    pub module: String,
    /// The version the process runs (now the old one).
    pub from: String,
    /// The version now current.
    pub to: String,
}

impl Message for Upgrade {
    const TAG: Tag = Tag::named("molt.Upgrade");
    fn shape() -> Shape {
        crate::shape::cached_shape!()
    }
}

/// Tells a process that its hot call could not move it to the new version
/// (the new version's `migrate` failed or panicked, or it lacks the entry):
/// the process goes on in the version it ran, with its state unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeFailed {
    /// The module.
    pub module: String,
    /// The version the process runs and keeps.
    pub from: String,
    /// The version it could not move to.
    pub to: String,
    /// Why.
    pub reason: String,
}

/// A node monitored with [`Process::monitor_node`](crate::Process::monitor_node)
/// is down (Erlang's `{nodedown, Node}`, Cloud Haskell's
/// `NodeMonitorNotification`): one per monitor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDown {
    /// The node, `name@host:port`.
    pub node: String,
    /// Why it is down.
    pub reason: crate::NodeDownReason,
}

impl Message for NodeDown {
    const TAG: Tag = Tag::named("molt.NodeDown");
    fn shape() -> Shape {
        crate::shape::cached_shape!()
    }
}

/// The answer to a [`Process::whereis_on`](crate::Process::whereis_on)
/// request, which it takes from the mailbox itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhereisReply {
    /// The request answered.
    pub request: u64,
    /// The process registered under the name there, or why the node could
    /// not answer.
    pub pid: Result<Option<Pid>, crate::NodeDownReason>,
}

impl Message for WhereisReply {
    const TAG: Tag = Tag::named("molt.WhereisReply");
    fn shape() -> Shape {
        crate::shape::cached_shape!()
    }
}

/// The answer to a [`Process::spawn_entry_on`](crate::Process::spawn_entry_on)
/// request, which it takes from the mailbox itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnReply {
    /// The request answered.
    pub request: u64,
    /// The new process, or why none started.
    pub pid: Result<Pid, crate::SpawnError>,
}

impl Message for SpawnReply {
    const TAG: Tag = Tag::named("molt.SpawnReply");
    fn shape() -> Shape {
        crate::shape::cached_shape!()
    }
}

impl Message for UpgradeFailed {
    const TAG: Tag = Tag::named("molt.UpgradeFailed");
    fn shape() -> Shape {
        crate::shape::cached_shape!()
    }
}

impl Message for Exit {
    const TAG: Tag = Tag::named("molt.Exit");
    fn shape() -> Shape {
        crate::shape::cached_shape!()
    }
}

impl Message for Down {
    const TAG: Tag = Tag::named("molt.Down");
    fn shape() -> Shape {
        crate::shape::cached_shape!()
    }
}

macro_rules! primitive_messages {
    ($($ty:ty => $name:literal $shape:ident),* $(,)?) => {
        $(impl Message for $ty {
            const TAG: Tag = Tag::named($name);
            #[inline]
            fn shape() -> Shape { Shape::$shape }
            const KNOWN_SHAPE: Option<Shape> = Some(Shape::$shape);
        })*
    };
}

primitive_messages! {
    () => "()" UNIT, bool => "bool" BOOL, char => "char" CHAR,
    u8 => "u8" U8, u16 => "u16" U16, u32 => "u32" U32, u64 => "u64" U64, u128 => "u128" U128, usize => "u64" U64,
    i8 => "i8" I8, i16 => "i16" I16, i32 => "i32" I32, i64 => "i64" I64, i128 => "i128" I128, isize => "i64" I64,
    f32 => "f32" F32, f64 => "f64" F64, String => "String" STR,
}

macro_rules! traced_messages {
    ($($ty:ty => $name:literal),* $(,)?) => {
        $(impl Message for $ty {
            const TAG: Tag = Tag::named($name);
            fn shape() -> Shape { crate::shape::cached_shape!() }
        })*
    };
}

traced_messages! {
    ExitReason => "molt.ExitReason",
}

primitive_messages! {
    Pid => "molt.Pid" PID, MonitorRef => "molt.MonitorRef" MONITOR_REF, TimerRef => "molt.TimerRef" TIMER_REF,
}

/// A borrowed or owned string is the same message as a `String` (the same
/// bytes), so a static string can be sent without allocating.
impl Message for std::borrow::Cow<'static, str> {
    const TAG: Tag = String::TAG;
    #[inline]
    fn shape() -> Shape {
        Shape::STR
    }
    const KNOWN_SHAPE: Option<Shape> = Some(Shape::STR);
}

impl<T: Message> Message for Vec<T> {
    const TAG: Tag = Tag::named("Vec").with(T::TAG);
    #[inline]
    fn shape() -> Shape {
        Shape::seq(T::shape())
    }
    const KNOWN_SHAPE: Option<Shape> = match T::KNOWN_SHAPE {
        Some(item) => Some(Shape::seq(item)),
        None => None,
    };
}

impl<T: Message> Message for Option<T> {
    const TAG: Tag = Tag::named("Option").with(T::TAG);
    #[inline]
    fn shape() -> Shape {
        Shape::option(T::shape())
    }
    const KNOWN_SHAPE: Option<Shape> = match T::KNOWN_SHAPE {
        Some(inner) => Some(Shape::option(inner)),
        None => None,
    };
}

macro_rules! tuple_messages {
    ($(($($t:ident),+)),* $(,)?) => {
        $(impl<$($t: Message),+> Message for ($($t,)+) {
            const TAG: Tag = Tag::named("tuple")$(.with($t::TAG))+;
            #[inline]
            fn shape() -> Shape {
                match Self::KNOWN_SHAPE {
                    Some(shape) => shape,
                    None => Shape::tuple(&[$($t::shape()),+]),
                }
            }
            const KNOWN_SHAPE: Option<Shape> = if true $(&& $t::KNOWN_SHAPE.is_some())+ {
                Some(Shape::tuple(&[$(match $t::KNOWN_SHAPE { Some(shape) => shape, None => Shape::UNKNOWN }),+]))
            } else {
                None
            };
        })*
    };
}

tuple_messages! {
    (A, B), (A, B, C), (A, B, C, D), (A, B, C, D, E), (A, B, C, D, E, F),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stable_names() {
        // FNV-1a of "molt.Exit": a change here changes what is on every wire.
        assert_eq!(Exit::TAG, Tag::named("molt.Exit"));
        assert_eq!(Tag::named("").0, FNV_OFFSET);
        assert_ne!(<(Pid, i64)>::TAG, <(Pid, u64)>::TAG);
        assert_ne!(<(i64, Pid)>::TAG, <(Pid, i64)>::TAG);
        assert_ne!(<Vec<u8>>::TAG, <Option<u8>>::TAG);
    }

    #[test]
    fn envelope_round_trips() {
        let value = (7u64, String::from("seven"));
        let envelope = Envelope::encode(&value).unwrap();
        assert_eq!(envelope.tag, <(u64, String)>::TAG);
        assert_eq!(envelope.shape, Shape::tuple(&[Shape::U64, Shape::STR]));
        assert_eq!(&envelope.payload[..], &[7, 5, b's', b'e', b'v', b'e', b'n']);
        assert_eq!(Envelope::decode::<(u64, String)>(&envelope.payload).unwrap(), value);
    }

    /// A shape known at compile time is the shape tracing the type finds.
    #[test]
    fn known_shapes_are_the_traced_ones() {
        fn check<M: Message>() {
            assert_eq!(M::KNOWN_SHAPE, Some(Shape::of_uncached::<M>()), "{}", std::any::type_name::<M>());
            assert_eq!(M::shape(), Shape::of_uncached::<M>(), "{}", std::any::type_name::<M>());
        }
        check::<(Pid, u64)>();
        check::<(u64, String, bool)>();
        check::<Vec<(u32, Pid)>>();
        check::<Option<(i8, MonitorRef)>>();
        check::<(TimerRef, Vec<Option<f64>>)>();
        // A part without one leaves the whole without one.
        assert_eq!(<(Pid, Exit)>::KNOWN_SHAPE, None);
        assert_eq!(<(Pid, Exit)>::shape(), Shape::of_uncached::<(Pid, Exit)>());
    }
}
