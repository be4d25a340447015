//! One established connection: a writer that drains the peer's queue into
//! the socket (and ticks when there is nothing to say), and a reader that
//! hands every frame to the node and declares the peer down when the
//! connection closes, breaks the protocol or stays silent past the
//! detection bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{SinkExt, StreamExt};
use molt_abi::{NodeDownReason, NodeId};
use tokio::sync::mpsc;
use tokio_util::bytes::Bytes;

use super::Dist;
use super::frame::Frame;
use super::handshake::HandshakeStream;

/// How a connection ended.
pub(super) struct Ended {
    pub(super) why: NodeDownReason,
    /// Frames taken from the queue but not written.
    pub(super) unsent: u64,
    /// The queue, with what is still in it.
    pub(super) queue: mpsc::UnboundedReceiver<Frame>,
}

/// Frames written before a flush: a burst goes out in few system calls.
const BATCH: usize = 64;

/// Runs the connection to `peer` until it ends.
pub(super) async fn run(
    dist: &Arc<Dist>,
    peer: NodeId,
    stream: HandshakeStream,
    welcome: Option<Bytes>,
    mut queue: mpsc::UnboundedReceiver<Frame>,
    queued: &AtomicUsize,
) -> Ended {
    let (mut sink, mut frames) = stream.split();
    let detection = dist.config.detection;
    let writer = async {
        if let Some(welcome) = welcome
            && sink.send(welcome).await.is_err()
        {
            return (NodeDownReason::ConnectionClosed, 0);
        }
        let mut tick = tokio::time::interval(detection / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut wrote = false;
        loop {
            tokio::select! {
                frame = queue.recv() => {
                    let Some(frame) = frame else { return (NodeDownReason::Disconnected, 0) };
                    let mut batch = vec![frame];
                    while batch.len() < BATCH {
                        match queue.try_recv() {
                            Ok(frame) => batch.push(frame),
                            Err(_) => break,
                        }
                    }
                    let count = batch.len();
                    queued.fetch_sub(count, Ordering::Relaxed);
                    let goodbye = matches!(batch.last(), Some(Frame::Goodbye));
                    for (written, frame) in batch.iter().enumerate() {
                        let bytes = match frame.encode() {
                            Ok(bytes) => bytes,
                            // The core's own frames always encode.
                            Err(_) => continue,
                        };
                        // A message over the frame limit would end the
                        // connection (the peer refuses it): it alone is
                        // dropped, counted and named.
                        if bytes.len() > dist.config.max_frame {
                            dist.dropped.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                node = %dist.name,
                                bytes = bytes.len(),
                                limit = dist.config.max_frame,
                                "dropped a message over the frame limit (NodeConfig::max_frame)"
                            );
                            continue;
                        }
                        if sink.feed(Bytes::from(bytes)).await.is_err() {
                            return (NodeDownReason::ConnectionClosed, (count - written) as u64);
                        }
                    }
                    // Written into the codec's buffer but maybe not sent:
                    // counted as lost, the whole batch.
                    if sink.flush().await.is_err() {
                        return (NodeDownReason::ConnectionClosed, count as u64);
                    }
                    wrote = true;
                    if goodbye {
                        return (NodeDownReason::Disconnected, 0);
                    }
                }
                _ = tick.tick() => {
                    if !std::mem::take(&mut wrote) && sink.send(Bytes::from(Frame::Tick.encode().unwrap_or_default())).await.is_err() {
                        return (NodeDownReason::ConnectionClosed, 0);
                    }
                }
            }
        }
    };
    let reader = async {
        loop {
            let frame = match tokio::time::timeout(detection, frames.next()).await {
                Err(_) => return NodeDownReason::HeartbeatTimeout,
                Ok(None) => return NodeDownReason::ConnectionClosed,
                Ok(Some(Err(e))) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return NodeDownReason::ProtocolError(format!(
                        "a frame over the limit of {} bytes",
                        dist.config.max_frame
                    ));
                }
                Ok(Some(Err(_))) => return NodeDownReason::ConnectionClosed,
                Ok(Some(Ok(bytes))) => bytes,
            };
            match Frame::decode(&frame) {
                Err(_) => return NodeDownReason::ProtocolError("a frame that is not one of the protocol's".into()),
                Ok(Frame::Goodbye) => return NodeDownReason::PeerShutdown,
                Ok(frame) => {
                    if let Err(what) = dist.deliver(peer, frame) {
                        return NodeDownReason::ProtocolError(what);
                    }
                }
            }
        }
    };
    // Either half ending ends the connection (after our goodbye, what the
    // peer still sends is read no more).
    let (why, unsent) = tokio::select! {
        why = reader => (why, 0),
        ended = writer => ended,
    };
    Ended { why, unsent, queue }
}
