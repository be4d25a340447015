//! Identities that are meaningful on every node: [`Pid`], [`NodeId`],
//! [`MonitorRef`] and [`TimerRef`].
//!
//! All of them are plain `#[repr(C)]` values: they cross the module boundary
//! by value and the wire as postcard bytes, and they never point into memory.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which node a pid lives on: a stable 64-bit hash of the node's name.
///
/// Encoded as 8 fixed bytes: a hash is as wide as it gets, so a varint would
/// only cost time (10 bytes, a loop) without saving space.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(#[serde(with = "postcard::fixint::le")] pub u64);

impl NodeId {
    /// The id of the node called `name` (FNV-1a of its bytes): every node
    /// computes the same id for the same name.
    pub const fn from_name(name: &str) -> NodeId {
        NodeId(crate::message::fnv1a(name.as_bytes(), crate::message::FNV_OFFSET))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({:08x})", self.0 as u32)
    }
}

/// A process identifier: the node, the node's incarnation and a serial.
///
/// A restarted node gets a new `creation`, so a pid of its previous life never
/// names one of its new processes (Erlang's creation number).
///
/// On the wire: a newtype struct named [`PID_NAME`] around one byte string
/// (postcard: its length, then the bytes) of the node (8 bytes, little
/// endian), the creation (4) and the serial (a LEB128 varint, as postcard
/// writes integers). One byte string is one copy each way, where three
/// fields of fixed bytes cost a serde call per byte (a pid was 8% of a
/// local round trip's instructions).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid {
    /// The node the process runs on.
    pub node: NodeId,
    /// Which start of that node created the process.
    pub creation: u32,
    /// The process's number on its node, never reused within one creation:
    /// its slot in the node's process table (the low 32 bits) and how many
    /// processes used that slot before (the high 32 bits), as in Erlang.
    pub serial: u64,
}

/// The serde name a [`Pid`] is serialized under; the shape tracer knows
/// it (see [`Shape::PID`](crate::Shape::PID)).
pub(crate) const PID_NAME: &str = "molt.Pid";

/// The most bytes a pid takes: node, creation, and a `u64` varint.
const PID_MAX: usize = 8 + 4 + 10;

impl Pid {
    /// The wire bytes of this pid, in `buf`; returns how many.
    fn encode(&self, buf: &mut [u8; PID_MAX]) -> usize {
        buf[..8].copy_from_slice(&self.node.0.to_le_bytes());
        buf[8..12].copy_from_slice(&self.creation.to_le_bytes());
        let mut len = 12;
        let mut serial = self.serial;
        while serial >= 0x80 {
            buf[len] = (serial as u8) | 0x80;
            serial >>= 7;
            len += 1;
        }
        buf[len] = serial as u8;
        len + 1
    }

    /// A pid from its wire bytes, which must be exactly one pid's.
    fn decode(bytes: &[u8]) -> Option<Pid> {
        let (node, rest) = bytes.split_first_chunk::<8>()?;
        let (creation, varint) = rest.split_first_chunk::<4>()?;
        let mut serial = 0u64;
        for (index, &byte) in varint.iter().enumerate() {
            // Ten bytes at most, the tenth holding the top bit only, and no
            // padding: one encoding per value, as postcard's own varints.
            let bits = u64::from(byte & 0x7f);
            if index > 9 || (index == 9 && byte > 1) {
                return None;
            }
            serial |= bits << (7 * index);
            if byte & 0x80 == 0 {
                let canonical = index == 0 || byte != 0;
                return (canonical && index + 1 == varint.len()).then_some(Pid {
                    node: NodeId(u64::from_le_bytes(*node)),
                    creation: u32::from_le_bytes(*creation),
                    serial,
                });
            }
        }
        None
    }
}

impl Serialize for Pid {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Bytes<'a>(&'a [u8]);
        impl Serialize for Bytes<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(self.0)
            }
        }
        let mut buf = [0; PID_MAX];
        let len = self.encode(&mut buf);
        serializer.serialize_newtype_struct(PID_NAME, &Bytes(&buf[..len]))
    }
}

impl<'de> Deserialize<'de> for Pid {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Pid, D::Error> {
        struct PidVisitor;
        impl<'de> serde::de::Visitor<'de> for PidVisitor {
            type Value = Pid;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a pid: 8 bytes of node, 4 of creation and a varint serial")
            }

            fn visit_newtype_struct<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Pid, D::Error> {
                deserializer.deserialize_bytes(self)
            }

            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Pid, E> {
                Pid::decode(bytes).ok_or_else(|| E::invalid_value(serde::de::Unexpected::Bytes(bytes), &self))
            }
        }
        deserializer.deserialize_newtype_struct(PID_NAME, PidVisitor)
    }
}

/// A pid's wire bytes, for the shape tracer to hand a pid's `Deserialize`.
pub(crate) const SAMPLE_PID_BYTES: [u8; 13] = [0; 13];

impl fmt::Display for Pid {
    /// `<node.slot.uses>`, as Erlang's `<0.42.0>`; `{:?}` adds the node's
    /// creation.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{:08x}.{}.{}>", self.node.0 as u32, self.serial as u32, self.serial >> 32)
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{:08x}.{}.{}.{}>", self.node.0 as u32, self.serial as u32, self.serial >> 32, self.creation)
    }
}

/// Names one monitor: returned by `monitor`, carried by the [`Down`](crate::Down)
/// it fires, and given to `demonitor`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MonitorRef {
    /// Unique on the node that made it.
    pub id: u64,
    /// The monitored process.
    pub target: Pid,
}

/// Names a timer started by `send_after`, for `cancel_timer`: where the
/// node keeps it, and an id unique on the node, so a reference to a timer
/// that fired or was cancelled never names another.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TimerRef {
    /// Unique on the node that made it.
    pub id: u64,
    /// The timer's slot on its scheduler.
    pub slot: u32,
    /// The scheduler that fires it.
    pub scheduler: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(serial: u64) -> Pid {
        Pid { node: NodeId(0x0123_4567_89ab_cdef), creation: 0xdead_beef, serial }
    }

    /// The wire form: a length, node and creation as fixed bytes, the
    /// serial as a varint; every serial comes back.
    #[test]
    fn a_pid_round_trips_in_its_wire_form() {
        let bytes = postcard::to_allocvec(&pid(300)).unwrap();
        assert_eq!(bytes, [14, 0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, 0xef, 0xbe, 0xad, 0xde, 0xac, 0x02]);
        for serial in [0, 1, 127, 128, 16_383, 16_384, u64::from(u32::MAX), u64::MAX - 1, u64::MAX] {
            let bytes = postcard::to_allocvec(&pid(serial)).unwrap();
            assert_eq!(postcard::from_bytes::<Pid>(&bytes).unwrap(), pid(serial), "{serial}");
        }
        let pair = postcard::to_allocvec(&(pid(7), 9u64)).unwrap();
        assert_eq!(postcard::from_bytes::<(Pid, u64)>(&pair).unwrap(), (pid(7), 9));
    }

    /// Bytes that are not exactly one pid's are refused, never read as
    /// some other pid.
    #[test]
    fn malformed_pid_bytes_are_refused() {
        let good = postcard::to_allocvec(&pid(300)).unwrap();
        let with_len = |body: &[u8]| [&[body.len() as u8][..], body].concat();
        let body = &good[1..];
        let refused = [
            with_len(&body[..12]),                                // no serial
            with_len(&body[..13]),                                // a serial cut short
            with_len(&[body, &[0]].concat()),                     // a byte after the serial
            with_len(&[&body[..12], &[0x80, 0]].concat()),        // a padded serial
            with_len(&[&body[..12], &[0xff; 9], &[2]].concat()),  // past 64 bits
            with_len(&[&body[..12], &[0xff; 10], &[1]].concat()), // eleven bytes
            with_len(&body[..7]),                                 // not even a node
        ];
        for bytes in refused {
            assert!(postcard::from_bytes::<Pid>(&bytes).is_err(), "{bytes:02x?}");
        }
        let max = [&body[..12], &[0xff; 9], &[1]].concat();
        assert_eq!(postcard::from_bytes::<Pid>(&with_len(&max)).unwrap(), pid(u64::MAX));
    }
}
