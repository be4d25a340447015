//! What travels on a connection once the handshake is done: [`Frame`]s,
//! postcard-encoded, one per length-delimited chunk (tokio-util's codec).
//! A message travels as the envelope its sender made (DESIGN.md: the same
//! envelope in a local mailbox and on the wire); links, monitors and exits
//! as the core's one [`Signal`] type.

use molt_abi::{Envelope, Payload, Pid, Shape, Tag};
use serde::{Deserialize, Serialize};

use crate::signal::Signal;

/// One unit on a connection.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Frame {
    /// A message for the process `to`, on the receiving node.
    Message { to: Pid, envelope: WireEnvelope },
    /// A signal for the process `to`, on the receiving node.
    Signal { to: Pid, signal: Signal },
    /// Nothing but "still here": sent when the connection was otherwise
    /// quiet for a tick, so that silence means trouble.
    Tick,
    /// The sender is shutting down: what it links and monitors across this
    /// connection fires with `PeerShutdown`, not as a lost connection.
    Goodbye,
}

/// An [`Envelope`] as it crosses the wire: the payload as one byte string.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireEnvelope {
    tag: u64,
    shape: u64,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
}

impl From<Envelope> for WireEnvelope {
    fn from(envelope: Envelope) -> WireEnvelope {
        WireEnvelope { tag: envelope.tag.0, shape: envelope.shape.0, payload: envelope.payload.into_vec() }
    }
}

impl From<WireEnvelope> for Envelope {
    fn from(wire: WireEnvelope) -> Envelope {
        Envelope { tag: Tag(wire.tag), shape: Shape(wire.shape), payload: Payload::from_vec(wire.payload) }
    }
}

impl Frame {
    pub(crate) fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_stdvec(self)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Frame, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}
