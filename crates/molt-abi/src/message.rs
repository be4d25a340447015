//! Messages: the [`Message`] trait, the stable [`Tag`] each message type
//! carries, the [`Envelope`] every mailbox and connection holds, and the
//! system messages the core sends ([`Exit`], [`Down`]).
//!
//! # The envelope's byte format
//!
//! A message is encoded once, at `send`, into an envelope: its type's
//! [`Tag`] (a `u64`) and the value's bytes in [postcard]'s format (varint
//! integers, length-prefixed strings and sequences, struct fields in
//! declaration order, no field names). The same envelope sits in a local
//! mailbox and, later, on the wire; its bytes depend only on the value and
//! its type's shape, never on which build of which code sent it.
//!
//! # Tags, not `TypeId`s
//!
//! `TypeId` and type layouts differ between separately built libraries, so a
//! message type names itself: `const TAG: Tag = Tag::named("myapp.Ping")`.
//! Two types with the same tag are taken to be the same message.
//!
//! # Changing a message type
//!
//! postcard is not self-describing: a value encoded from the old shape of a
//! type (a field fewer, a variant renamed) does not decode as the new shape,
//! and `#[serde(default)]` does not help. Receiving such a message is a
//! [`ReceiveError::Decode`](crate::ReceiveError::Decode) the process sees;
//! the node is unaffected. When a type's shape changes, give it a new tag
//! (`"myapp.Ping.v2"`), so old and new senders can be told apart and both
//! handled during an upgrade.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serializer};
use smallvec::SmallVec;

use crate::{ExitReason, MonitorRef, Pid};

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
    /// This type's stable name: choose one unique to your application, and
    /// a new one when the type's shape changes (see [`Envelope`]).
    const TAG: Tag;
}

/// The encoded bytes of one message. Small messages live inline, so sending
/// them allocates once, in the receiving mailbox's queue.
pub type Payload = SmallVec<[u8; 32]>;

/// One encoded message: what a mailbox queues and a connection carries.
///
/// The tag is the message type's [`Message::TAG`]; the payload is the value
/// in postcard's format (varint integers except where a type asks for fixed
/// width, length-prefixed strings and sequences, fields in declaration order,
/// no field names). postcard is not self-describing: a value of an older
/// shape of a type does not decode as a newer one, so a type whose shape
/// changes takes a new tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The message type's tag.
    pub tag: Tag,
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
        Ok(Envelope { tag: M::TAG, payload: postcard::to_extend(message, Payload::new())? })
    }

    /// Decodes the payload as `M`, whose tag the caller has checked.
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

impl Message for UpgradeFailed {
    const TAG: Tag = Tag::named("molt.UpgradeFailed");
}

impl Message for Exit {
    const TAG: Tag = Tag::named("molt.Exit");
}

impl Message for Down {
    const TAG: Tag = Tag::named("molt.Down");
}

macro_rules! named_messages {
    ($($ty:ty => $name:literal),* $(,)?) => {
        $(impl Message for $ty { const TAG: Tag = Tag::named($name); })*
    };
}

named_messages! {
    () => "()", bool => "bool", char => "char",
    u8 => "u8", u16 => "u16", u32 => "u32", u64 => "u64", u128 => "u128", usize => "u64",
    i8 => "i8", i16 => "i16", i32 => "i32", i64 => "i64", i128 => "i128", isize => "i64",
    f32 => "f32", f64 => "f64", String => "String",
    Pid => "molt.Pid", ExitReason => "molt.ExitReason", MonitorRef => "molt.MonitorRef",
}

/// A borrowed or owned string is the same message as a `String` (the same
/// bytes), so a static string can be sent without allocating.
impl Message for std::borrow::Cow<'static, str> {
    const TAG: Tag = String::TAG;
}

impl<T: Message> Message for Vec<T> {
    const TAG: Tag = Tag::named("Vec").with(T::TAG);
}

impl<T: Message> Message for Option<T> {
    const TAG: Tag = Tag::named("Option").with(T::TAG);
}

macro_rules! tuple_messages {
    ($(($($t:ident),+)),* $(,)?) => {
        $(impl<$($t: Message),+> Message for ($($t,)+) {
            const TAG: Tag = Tag::named("tuple")$(.with($t::TAG))+;
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
        assert_eq!(&envelope.payload[..], &[7, 5, b's', b'e', b'v', b'e', b'n']);
        assert_eq!(Envelope::decode::<(u64, String)>(&envelope.payload).unwrap(), value);
    }
}
