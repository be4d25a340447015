//! A connection's items on the socket, once the handshake is done: read
//! with tokio-util's length-delimited codec (as the handshake's messages
//! are), none longer than [`MAX_ITEM`]; written with vectored writes, so
//! that a part's payload goes from the message's own buffer to the socket
//! without a copy in between.

use std::collections::VecDeque;
use std::io::IoSlice;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::LengthDelimitedCodec;

use super::parts::PART;

/// The longest item on a connection: a part and its frame.
pub(super) const MAX_ITEM: usize = PART + 32;

/// One item on a connection: a frame's encoding, and after it, for a part,
/// raw bytes (a slice of the payload: not copied until written).
#[derive(Clone, Debug, Default)]
pub(super) struct Item {
    pub(super) frame: Bytes,
    pub(super) raw: Bytes,
}

impl Item {
    pub(super) fn whole(frame: impl Into<Bytes>) -> Item {
        Item { frame: frame.into(), raw: Bytes::new() }
    }
}

/// The reading side's codec.
pub(super) fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(MAX_ITEM).new_codec()
}

/// What one read of the connection's task may take from the socket:
/// several parts, so that a stream of them costs few system calls and
/// wake-ups. (With the codec's default of 8 KiB a read took little more
/// than one part: 500 MiB in 1 MiB messages took 21,300 reads; now 6,000.)
pub(super) const READ_BUFFER: usize = 256 << 10;

/// Items read from `io`, whole, with the codec the reading side uses.
#[cfg(test)]
fn reader<R: tokio::io::AsyncRead>(io: R) -> tokio_util::codec::FramedRead<R, LengthDelimitedCodec> {
    tokio_util::codec::FramedRead::with_capacity(io, codec(), READ_BUFFER)
}

/// Raw bytes at least this long are written from where they are; shorter
/// ones are gathered with the small frames around them.
const BY_REFERENCE: usize = 4096;

/// Slices handed to one vectored write.
const SLICES: usize = 64;

/// The writing side: items as the codec reads them (a 4-byte big-endian
/// length, then the bytes), small ones gathered into one buffer, a big
/// payload slice written as it is.
pub(super) struct Writer<W> {
    io: W,
    /// What is fed and not yet written, in order.
    pending: VecDeque<Bytes>,
    /// Small bytes gathered since the last slice in `pending`.
    gathered: BytesMut,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    pub(super) fn new(io: W) -> Writer<W> {
        Writer { io, pending: VecDeque::new(), gathered: BytesMut::new() }
    }

    /// Takes `item`, to go out with the next flush.
    pub(super) fn feed(&mut self, item: Item) {
        let len = item.frame.len() + item.raw.len();
        // Items are at most MAX_ITEM long (parts.rs), well within a u32.
        self.gathered.put_u32(len as u32);
        self.gathered.extend_from_slice(&item.frame);
        if item.raw.len() < BY_REFERENCE {
            self.gathered.extend_from_slice(&item.raw);
            return;
        }
        self.pending.push_back(self.gathered.split().freeze());
        self.pending.push_back(item.raw);
    }

    /// Takes bytes already laid out as items are (see `link.rs`), to go
    /// out with the next flush, after what was fed before.
    pub(super) fn feed_encoded(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if !self.gathered.is_empty() {
            self.pending.push_back(self.gathered.split().freeze());
        }
        self.pending.push_back(bytes);
    }

    /// Writes everything fed.
    pub(super) async fn flush(&mut self) -> std::io::Result<()> {
        if !self.gathered.is_empty() {
            self.pending.push_back(self.gathered.split().freeze());
        }
        while !self.pending.is_empty() {
            let slices: Vec<IoSlice<'_>> = self.pending.iter().take(SLICES).map(|bytes| IoSlice::new(bytes)).collect();
            let mut written = self.io.write_vectored(&slices).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while written > 0 {
                let Some(first) = self.pending.front_mut() else { break };
                let taken = written.min(first.len());
                first.advance(taken);
                written -= taken;
                if first.is_empty() {
                    self.pending.pop_front();
                }
            }
        }
        self.io.flush().await
    }

    /// Writes everything fed, then closes the writing side.
    pub(super) async fn close(&mut self) -> std::io::Result<()> {
        self.flush().await?;
        self.io.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    /// What the writer writes, small and big items mixed and written in
    /// pieces, the codec reads back item by item.
    #[test]
    fn written_items_read_back_whole_and_in_order() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            // A small pipe: writes go in pieces.
            let (near, far) = tokio::io::duplex(1000);
            let items: Vec<Item> = (0..40u8)
                .map(|i| Item {
                    frame: Bytes::from(vec![i; 1 + i as usize % 3]),
                    raw: Bytes::from(vec![i; if i % 4 == 0 { PART } else { i as usize * 10 }]),
                })
                .collect();
            let expected: Vec<Vec<u8>> = items.iter().map(|item| [&item.frame[..], &item.raw[..]].concat()).collect();
            let writing = async move {
                let mut writer = Writer::new(near);
                for item in items {
                    writer.feed(item);
                }
                writer.close().await.unwrap();
            };
            let reading = async move {
                let frames = reader(far);
                frames.map(|item| item.unwrap().to_vec()).collect::<Vec<_>>().await
            };
            let ((), read) = tokio::join!(writing, reading);
            assert_eq!(read, expected);
        });
    }
}
