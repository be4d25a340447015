//! What travels on a connection once the handshake is done: [`Frame`]s,
//! postcard-encoded, one per length-delimited chunk (tokio-util's codec).
//! A message travels as the envelope its sender made (DESIGN.md: the same
//! envelope in a local mailbox and on the wire); links, monitors and exits
//! as the core's one [`Signal`] type.

use molt_abi::{Envelope, Pid, SpawnError};
use serde::{Deserialize, Serialize};

use crate::signal::Signal;

/// One unit on a connection.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Frame {
    /// A message for the process `to`, on the receiving node.
    Message {
        to: Pid,
        #[serde(with = "wire_envelope")]
        envelope: Envelope,
    },
    /// A signal for the process `to`, on the receiving node.
    Signal { to: Pid, signal: Signal },
    /// A message for the process registered as `name` on the receiving
    /// node, if there is one.
    Named {
        name: String,
        #[serde(with = "wire_envelope")]
        envelope: Envelope,
    },
    /// Which process is registered as `name` on the receiving node:
    /// request `request` of the sender's node, for `reply_to`.
    Whereis { name: String, reply_to: Pid, request: u64 },
    /// The answer to a `Whereis`.
    WhereisReply { reply_to: Pid, request: u64, pid: Option<Pid> },
    /// "Still here", every quarter of the detection bound, so that silence
    /// means trouble; answered with `Pong(n)`, which times the round trip.
    Ping(u64),
    /// The answer to `Ping(n)`.
    Pong(u64),
    /// The sender delivered the first `n` messages and signals this
    /// connection's session carried towards it (every connection opens
    /// with one: where a resumed session picks up).
    Ack(u64),
    /// The sender ends the session on purpose: what links and monitors
    /// across it fires at once, not after the detection bound.
    Goodbye(Farewell),
    /// The sender holds senders back on what it wrote: an `Ack` now, please,
    /// rather than after the next 64 frames or heartbeat.
    AckPlease,
    /// Spawn `module:entry` with `state` on the receiving node, linked to
    /// and/or monitored (as monitor `monitor` of the sender's node) by
    /// `reply_to`: request `request` of the sender's node.
    Spawn {
        module: String,
        entry: String,
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
        reply_to: Pid,
        request: u64,
        link: bool,
        monitor: Option<u64>,
    },
    /// The answer to a `Spawn` (the error boxed: it is big, and rare).
    SpawnReply { reply_to: Pid, request: u64, pid: Result<Pid, Box<SpawnError>> },
    /// A frame too big to go whole follows in parts, as stream `stream`:
    /// `head` bytes of its encoding (without its payload), then `body`
    /// bytes of payload (see `parts.rs`).
    Open { stream: u64, head: u64, body: u64 },
    /// The next bytes of stream `stream`: they follow this frame's
    /// encoding in the same item, raw.
    Part { stream: u64 },
    /// Names of nodes the sender knows: a pid of one of them, passed on
    /// in a message, is reached by its name.
    Nodes(Vec<String>),
}

/// Why a peer said goodbye.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Farewell {
    /// Its node is shutting down.
    Shutdown,
    /// It was told to disconnect (`Node::disconnect`).
    Disconnect,
}

/// An [`Envelope`] as it crosses the wire: its tag, its shape and its
/// payload as one byte string, written straight from the envelope.
mod wire_envelope {
    use molt_abi::{Envelope, Payload, Shape, Tag};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize)]
    struct Out<'a> {
        tag: u64,
        shape: u64,
        #[serde(with = "serde_bytes")]
        payload: &'a [u8],
    }

    #[derive(Deserialize)]
    struct In {
        tag: u64,
        shape: u64,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    }

    pub(super) fn serialize<S: Serializer>(envelope: &Envelope, serializer: S) -> Result<S::Ok, S::Error> {
        Out { tag: envelope.tag.0, shape: envelope.shape.0, payload: &envelope.payload }.serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Envelope, D::Error> {
        let In { tag, shape, payload } = In::deserialize(deserializer)?;
        Ok(Envelope { tag: Tag(tag), shape: Shape(shape), payload: Payload::from_vec(payload) })
    }
}

impl Frame {
    /// What the frame counts for in a peer's backlog: its payload's bytes,
    /// and a fixed 32 for the rest (pids, tags, lengths).
    pub(crate) fn weight(&self) -> usize {
        32 + match self {
            Frame::Message { envelope, .. } => envelope.payload.len(),
            Frame::Named { name, envelope } => name.len() + envelope.payload.len(),
            Frame::Whereis { name, .. } => name.len(),
            Frame::Nodes(names) => names.iter().map(String::len).sum(),
            Frame::Spawn { module, entry, state, .. } => module.len() + entry.len() + state.len(),
            _ => 0,
        }
    }

    /// Whether the frame counts in its session: messages, signals and
    /// requests are numbered, acknowledged and resent after a break; the
    /// rest belongs to one connection.
    pub(crate) fn is_numbered(&self) -> bool {
        !matches!(self, Frame::Ping(_) | Frame::Pong(_) | Frame::Ack(_) | Frame::Goodbye(_) | Frame::AckPlease)
    }

    /// The payload's length (a message's, a spawn's start state).
    pub(crate) fn body_len(&self) -> usize {
        match self {
            Frame::Message { envelope, .. } | Frame::Named { envelope, .. } => envelope.payload.len(),
            Frame::Spawn { state, .. } => state.len(),
            _ => 0,
        }
    }

    /// Takes out the payload (a message's, a spawn's start state), to go
    /// raw after the rest of the frame; `None` for a frame without one.
    pub(crate) fn take_body(&mut self) -> Option<Vec<u8>> {
        match self {
            Frame::Message { envelope, .. } | Frame::Named { envelope, .. } => {
                Some(std::mem::take(&mut envelope.payload).into_vec())
            }
            Frame::Spawn { state, .. } => Some(std::mem::take(state)),
            _ => None,
        }
    }

    /// Whether the frame has room for a payload: one of the kinds that
    /// carry one, with none.
    pub(crate) fn takes_body(&self) -> bool {
        matches!(self, Frame::Message { .. } | Frame::Named { .. } | Frame::Spawn { .. }) && self.body_len() == 0
    }

    /// Puts back a payload taken out by [`Frame::take_body`]; false when
    /// the frame has no room for one.
    pub(crate) fn put_body(&mut self, body: Vec<u8>) -> bool {
        if !self.takes_body() {
            return false;
        }
        match self {
            Frame::Message { envelope, .. } | Frame::Named { envelope, .. } => {
                envelope.payload = molt_abi::Payload::from_vec(body);
            }
            Frame::Spawn { state, .. } => *state = body,
            _ => {}
        }
        true
    }

    pub(crate) fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_stdvec(self)
    }

    /// The frame as written. The core's own frames always encode: postcard
    /// fails only on what it cannot represent, and no frame holds any.
    pub(crate) fn bytes(&self) -> tokio_util::bytes::Bytes {
        self.encode().unwrap_or_default().into()
    }

    /// The frame an item opens with, and the raw bytes after it, which
    /// only a `Part` has.
    pub(crate) fn decode(bytes: &[u8]) -> Result<(Frame, &[u8]), postcard::Error> {
        let (frame, rest) = postcard::take_from_bytes(bytes)?;
        match (&frame, rest) {
            (Frame::Part { .. }, _) | (_, []) => Ok((frame, rest)),
            _ => Err(postcard::Error::DeserializeBadEncoding),
        }
    }
}

#[cfg(test)]
mod tests {
    use molt_abi::{Envelope, NodeId, Payload, Pid, Shape, Tag};

    use super::Frame;

    /// A message frame carries its envelope exactly, inline or not.
    #[test]
    fn a_message_frame_comes_back_as_it_went() {
        let to = Pid { node: NodeId(7), creation: 3, serial: 1 << 33 };
        for len in [0, 5, 24, 25, 4096] {
            let payload: Payload = (0..len).map(|i| i as u8).collect();
            let envelope = Envelope { tag: Tag(11), shape: Shape(13), payload };
            let bytes = Frame::Message { to, envelope: envelope.clone() }.encode().unwrap();
            let Ok((Frame::Message { to: back_to, envelope: back }, [])) = Frame::decode(&bytes) else {
                panic!("a message frame")
            };
            assert_eq!((back_to, back), (to, envelope), "length {len}");
        }
    }
}
