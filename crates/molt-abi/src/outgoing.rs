//! The sender's side of [`Outgoing`]: a message written by its sender's
//! code, in pieces, straight into the core's buffer, so a big message is
//! copied once (from the value into the envelope its receiver reads), never
//! first into a buffer of the sender's and then again into the core's.

use std::ffi::c_void;
use std::panic::AssertUnwindSafe;

use postcard::ser_flavors::Flavor;

use crate::Message;
use crate::contract::Outgoing;
use crate::module::Sink;

/// Runs `send` with `message` as an [`Outgoing`], then panics in the sender
/// (never across the boundary) if the message could not be encoded.
///
/// # Panics
/// When the value's `Serialize` implementation fails or panics, which
/// serde's derive never does; the panic ends only the calling process.
pub(crate) fn outgoing<M: Message, R>(message: &M, send: impl FnOnce(Outgoing) -> R) -> R {
    let mut encoding = Encoding { message, failed: None };
    let mut outgoing = Outgoing {
        tag: M::TAG,
        shape: M::shape(),
        bytes: std::ptr::null(),
        len: 0,
        env: std::ptr::from_mut(&mut encoding).cast(),
        encode: encode::<M>,
    };
    // Most messages are a few bytes: encoded here, they cross as a slice.
    let mut small = [0u8; SMALL];
    if let Ok(len) = postcard::serialize_with_flavor(message, Stack { buffer: &mut small, len: 0 }) {
        (outgoing.bytes, outgoing.len) = (small.as_ptr(), len);
    }
    let sent = send(outgoing);
    if let Some(why) = encoding.failed {
        panic!("a message of type {} could not be encoded: {why}", std::any::type_name::<M>());
    }
    sent
}

/// Messages up to this many bytes are encoded on the sender's stack.
const SMALL: usize = 64;

/// postcard's slice flavor for the sender's stack buffer, except that the
/// small pieces a message is written in (a varint, a pid's bytes) are
/// copied with a few fixed-size moves: postcard's own calls libc's
/// `memcpy` for each, three per local round trip, 6% of its time (perf).
struct Stack<'a> {
    buffer: &'a mut [u8; SMALL],
    len: usize,
}

impl Flavor for Stack<'_> {
    /// The length written.
    type Output = usize;

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        *self.buffer.get_mut(self.len).ok_or(postcard::Error::SerializeBufferFull)? = byte;
        self.len += 1;
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let end = self.len + data.len();
        let place = self.buffer.get_mut(self.len..end).ok_or(postcard::Error::SerializeBufferFull)?;
        copy_small(place, data);
        self.len = end;
        Ok(())
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.len)
    }
}

/// `place.copy_from_slice(data)` (the two are as long), by two overlapping
/// copies of a fixed size for up to 16 bytes (as `memcpy` itself does for
/// small sizes, but without the call).
#[inline]
fn copy_small(place: &mut [u8], data: &[u8]) {
    let len = data.len();
    match len {
        0 => {}
        1..4 => {
            place[0] = data[0];
            place[len / 2] = data[len / 2];
            place[len - 1] = data[len - 1];
        }
        4..8 => {
            place[..4].copy_from_slice(&data[..4]);
            place[len - 4..].copy_from_slice(&data[len - 4..]);
        }
        8..=16 => {
            place[..8].copy_from_slice(&data[..8]);
            place[len - 8..].copy_from_slice(&data[len - 8..]);
        }
        _ => place.copy_from_slice(data),
    }
}

/// What `env` points at while the core holds an [`Outgoing`].
struct Encoding<'a, M> {
    message: &'a M,
    failed: Option<String>,
}

unsafe extern "C" fn encode<M: Message>(env: *mut c_void, sink: Sink) -> bool {
    // SAFETY: `env` is the `Encoding<M>` made by `outgoing`, alive and not
    // otherwise used while the core's call, and so this one, runs.
    let encoding = unsafe { &mut *env.cast::<Encoding<'_, M>>() };
    let writer = SinkWriter { sink, buffer: [0; BUFFER], len: 0 };
    // The core must not be unwound into: a panicking `Serialize` is caught
    // here and raised again in the sender once the core has returned.
    match std::panic::catch_unwind(AssertUnwindSafe(|| postcard::serialize_with_flavor(encoding.message, writer))) {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            encoding.failed = Some(error.to_string());
            false
        }
        Err(panic) => {
            encoding.failed = Some(format!("its Serialize panicked: {}", crate::panic_message(panic)));
            false
        }
    }
}

/// Gathers small writes (a varint, a byte of a `Vec<u8>` serde hands over
/// one at a time) into a few hundred bytes on the stack before they cross
/// to the core; a large block (`serde_bytes`, `bytes::Bytes`, a `str`)
/// goes straight through.
const BUFFER: usize = 512;

struct SinkWriter {
    sink: Sink,
    buffer: [u8; BUFFER],
    len: usize,
}

impl SinkWriter {
    fn flush(&mut self) {
        // SAFETY: the sink was handed to `encode` by the core for this call,
        // which is still running.
        unsafe { self.sink.put(&self.buffer[..self.len]) };
        self.len = 0;
    }
}

impl Flavor for SinkWriter {
    type Output = ();

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        if self.len == BUFFER {
            self.flush();
        }
        self.buffer[self.len] = byte;
        self.len += 1;
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() > BUFFER - self.len {
            self.flush();
            if data.len() >= BUFFER {
                // SAFETY: as in `flush`.
                unsafe { self.sink.put(data) };
                return Ok(());
            }
        }
        self.buffer[self.len..self.len + data.len()].copy_from_slice(data);
        self.len += data.len();
        Ok(())
    }

    fn finalize(mut self) -> postcard::Result<()> {
        if self.len > 0 {
            self.flush();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{SMALL, Stack, copy_small};

    /// Every length copies exactly the bytes given.
    #[test]
    fn a_small_copy_is_a_copy() {
        let data: Vec<u8> = (1..=40).collect();
        for len in 0..=40 {
            let mut place = vec![0u8; len];
            copy_small(&mut place, &data[..len]);
            assert_eq!(place, &data[..len], "length {len}");
        }
    }

    /// The stack flavor writes what postcard's slice flavor writes, and
    /// says when a message does not fit.
    #[test]
    fn the_stack_flavor_writes_postcards_bytes() {
        let pid = |node, creation, serial| crate::Pid { node: crate::NodeId(node), creation, serial };
        let values: [(crate::Pid, u64, String); 3] = [
            (pid(1, 1, 3), 0, String::new()),
            (pid(u64::MAX, 7, 1 << 40), u64::MAX, "ab".into()),
            (pid(5, 2, 300), 1 << 20, "x".repeat(20)),
        ];
        for value in values {
            let mut buffer = [0u8; SMALL];
            let len = postcard::serialize_with_flavor(&value, Stack { buffer: &mut buffer, len: 0 }).unwrap();
            assert_eq!(&buffer[..len], &postcard::to_allocvec(&value).unwrap()[..]);
        }
        let mut buffer = [0u8; SMALL];
        let too_big = "y".repeat(SMALL);
        assert!(postcard::serialize_with_flavor(&too_big, Stack { buffer: &mut buffer, len: 0 }).is_err());
    }
}
