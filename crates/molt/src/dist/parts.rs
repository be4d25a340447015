//! Big frames in parts, so that one big message does not hold up the small
//! ones behind it for its whole transfer (what Erlang's fragmentation,
//! OTP 22, is for). On the way out the [`Outbox`] writes a small frame as
//! it comes and opens a stream for a big one: its head (the frame without
//! its payload), then its payload, a part at a time, in turn with the other
//! open streams and the small frames. A process's frames keep their order:
//! while one of them goes in parts, the ones it sent after it wait behind
//! it. On the way in the [`Joiner`] puts each stream back into its frame,
//! the payload copied once, into the buffer the receiver gets. Both live
//! in the session: a stream goes on across a resumed connection.

use std::collections::VecDeque;

use molt_abi::Pid;
use rustc_hash::FxHashMap;
use tokio_util::bytes::Bytes;

use super::frame::Frame;
use super::wire::Item;

/// The bytes of one part; a frame whose encoding is no longer goes whole.
pub(super) const PART: usize = 64 << 10;

/// Streams open at once, each way: a peer that opens more breaks the
/// protocol; a writer with this many open keeps the next big frame waiting
/// (the small ones still go).
pub(super) const STREAMS: usize = 16;

/// Whose frames keep their order among themselves: a sending process's,
/// or (`None`) those of the node itself and of the host.
pub(super) type Lane = Option<Pid>;

/// An item to be numbered and written, with what it takes off the backlog
/// once acknowledged: its frame's weight and one frame, for the item that
/// completes a frame; nothing for the others.
#[derive(Debug)]
pub(super) struct Numbered {
    pub(super) item: Item,
    pub(super) weight: usize,
    pub(super) frames: usize,
}

/// What the outbox made of the frames it was given.
#[derive(Debug, Default)]
pub(super) struct Out {
    /// Items to write, in order.
    pub(super) items: Vec<Numbered>,
    /// Frames over the frame limit, dropped: how many, their weight, and
    /// the biggest one's size.
    pub(super) dropped: usize,
    pub(super) dropped_weight: usize,
    pub(super) dropped_big: usize,
    pub(super) biggest_dropped: usize,
}

/// The writer's side: which item goes next.
#[derive(Debug)]
pub(super) struct Outbox {
    /// The lanes whose first frame goes in parts, or waits for a stream,
    /// each with the frames behind it.
    lanes: FxHashMap<Lane, Held>,
    /// The lanes with an open stream, in turn.
    open: VecDeque<Lane>,
    /// The lanes waiting for a stream, in order.
    waiting: VecDeque<Lane>,
    next_stream: u64,
    max_frame: usize,
}

#[derive(Debug)]
struct Held {
    stream: Stream,
    behind: VecDeque<Frame>,
}

/// A big frame: its head and its payload, and how much of them went.
#[derive(Debug)]
struct Stream {
    id: u64,
    head: Bytes,
    body: Bytes,
    sent: usize,
    weight: usize,
}

impl Outbox {
    pub(super) fn new(max_frame: usize) -> Outbox {
        Outbox {
            lanes: FxHashMap::default(),
            open: VecDeque::new(),
            waiting: VecDeque::new(),
            next_stream: 0,
            max_frame,
        }
    }

    /// Whether a stream has a part to write.
    pub(super) fn has_parts(&self) -> bool {
        !self.open.is_empty()
    }

    /// Whether no frame is held here (none goes in parts, none waits).
    pub(super) fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// Takes `frame`, sent on `lane`: its items go into `out` now, or once
    /// the lane's frames before it went.
    pub(super) fn push(&mut self, lane: Lane, frame: Frame, out: &mut Out) {
        match self.lanes.get_mut(&lane) {
            Some(held) => held.behind.push_back(frame),
            None => self.start(lane, frame, out),
        }
    }

    /// `frame` is its lane's first: written whole, or opened as a stream
    /// (or left to wait for one).
    fn start(&mut self, lane: Lane, mut frame: Frame, out: &mut Out) {
        let weight = frame.weight();
        let body = if frame.body_len() > PART { frame.take_body().map(Bytes::from) } else { None };
        let body = body.unwrap_or_default();
        let head = frame.bytes();
        let size = head.len() + body.len();
        if size > self.max_frame {
            out.dropped += 1;
            out.dropped_weight += weight;
            if super::Backlog::is_big(weight) {
                out.dropped_big += weight;
            }
            out.biggest_dropped = out.biggest_dropped.max(size);
            return;
        }
        if size <= PART {
            out.items.push(Numbered { item: Item::whole(head), weight, frames: 1 });
            return;
        }
        let stream = Stream { id: 0, head, body, sent: 0, weight };
        self.lanes.insert(lane, Held { stream, behind: VecDeque::new() });
        // Those already waiting go first.
        if self.open.len() < STREAMS && self.waiting.is_empty() {
            self.open(lane, out);
        } else {
            self.waiting.push_back(lane);
        }
    }

    /// Opens the stream of `lane`'s first frame.
    fn open(&mut self, lane: Lane, out: &mut Out) {
        let Some(held) = self.lanes.get_mut(&lane) else { return };
        let stream = &mut held.stream;
        stream.id = self.next_stream;
        self.next_stream += 1;
        let open = Frame::Open { stream: stream.id, head: stream.head.len() as u64, body: stream.body.len() as u64 };
        out.items.push(Numbered { item: Item::whole(open.bytes()), weight: 0, frames: 0 });
        self.open.push_back(lane);
    }

    /// One part of each open stream, in turn, until `budget` bytes of
    /// them are out (the part that crosses it goes whole); a stream that
    /// ends lets the frames behind it go, and a waiting one open. The
    /// bytes of parts put out.
    pub(super) fn parts(&mut self, out: &mut Out, budget: usize) -> usize {
        let mut taken = 0;
        for _ in 0..self.open.len() {
            if taken >= budget {
                break;
            }
            let Some(lane) = self.open.pop_front() else { break };
            let Some(held) = self.lanes.get_mut(&lane) else { continue };
            let stream = &mut held.stream;
            let (from, at) = match stream.sent.checked_sub(stream.head.len()) {
                None => (&stream.head, stream.sent),
                Some(at) => (&stream.body, at),
            };
            let raw = from.slice(at..from.len().min(at + PART));
            stream.sent += raw.len();
            taken += raw.len();
            let done = stream.sent == stream.head.len() + stream.body.len();
            let frame = Frame::Part { stream: stream.id }.bytes();
            let (weight, frames) = if done { (stream.weight, 1) } else { (0, 0) };
            out.items.push(Numbered { item: Item { frame, raw }, weight, frames });
            if !done {
                self.open.push_back(lane);
                continue;
            }
            // The stream waiting longest takes its place; then the frames
            // behind this one go (a big one waits its turn after the others).
            let Some(held) = self.lanes.remove(&lane) else { continue };
            while self.open.len() < STREAMS
                && let Some(next) = self.waiting.pop_front()
            {
                self.open(next, out);
            }
            for frame in held.behind {
                self.push(lane, frame, out);
            }
        }
        taken
    }

    /// Empties an outbox nobody will write: how many frames were in it.
    pub(super) fn lose(&mut self) -> u64 {
        let lost = self.lanes.values().map(|held| 1 + held.behind.len() as u64).sum();
        self.lanes.clear();
        self.open.clear();
        self.waiting.clear();
        lost
    }
}

/// The reader's side: the streams being put back together.
#[derive(Debug, Default)]
pub(super) struct Joiner {
    streams: FxHashMap<u64, Joining>,
    /// The last stream opened: ids only grow.
    last: Option<u64>,
}

#[derive(Debug)]
struct Joining {
    head: Vec<u8>,
    head_len: usize,
    /// The head decoded, once complete.
    frame: Option<Frame>,
    body: Vec<u8>,
    body_len: usize,
}

/// The most a stream's buffers are given before its bytes come: a peer's
/// word for more is not taken (the buffers grow as parts fill them). It
/// is address space only until parts fill it, and a payload under it is
/// never moved as it grows.
const FIRST_ROOM: usize = 16 << 20;

impl Joiner {
    /// Whether a big frame is coming in parts.
    pub(super) fn is_joining(&self) -> bool {
        !self.streams.is_empty()
    }

    /// The peer opens stream `stream`, of `head` and `body` bytes; what
    /// breaks the protocol, if it does.
    pub(super) fn open(&mut self, stream: u64, head: u64, body: u64, max_frame: usize) -> Result<(), String> {
        if let Some(last) = self.last
            && stream <= last
        {
            return Err(format!("stream {stream} opened after stream {last}"));
        }
        if self.streams.len() >= STREAMS {
            return Err(format!("more than {STREAMS} streams open at once"));
        }
        let size = head.saturating_add(body);
        // A writer takes a payload out only when it is over a part.
        if head == 0 || size > max_frame as u64 || size <= PART as u64 || (body > 0 && body <= PART as u64) {
            return Err(format!(
                "a stream of {head} + {body} bytes (a frame goes whole up to {PART}, up to {max_frame} in parts)"
            ));
        }
        let (head_len, body_len) = (head as usize, body as usize);
        // The payload's buffer is the one the receiver gets.
        let joining =
            Joining { head: Vec::with_capacity(head_len.min(PART)), head_len, frame: None, body: Vec::new(), body_len };
        self.streams.insert(stream, joining);
        self.last = Some(stream);
        Ok(())
    }

    /// The next bytes of stream `stream`: its frame, once complete.
    pub(super) fn part(&mut self, stream: u64, raw: &[u8]) -> Result<Option<Frame>, String> {
        let Some(joining) = self.streams.get_mut(&stream) else {
            return Err(format!("a part of stream {stream}, which is not open"));
        };
        let into_head = (joining.head_len - joining.head.len()).min(raw.len());
        let (to_head, to_body) = raw.split_at(into_head);
        if raw.is_empty() || to_body.len() > joining.body_len - joining.body.len() {
            return Err(format!("a part of {} bytes, not what stream {stream} still lacks", raw.len()));
        }
        joining.head.extend_from_slice(to_head);
        if joining.frame.is_none() && joining.head.len() == joining.head_len {
            // Decoded as soon as it is whole: a head that is not a frame
            // of the kinds that go in parts, or has no room for the
            // payload announced, is refused before the payload comes.
            let frame = match Frame::decode(&joining.head) {
                Ok((frame, _)) if frame.is_numbered() && !matches!(frame, Frame::Open { .. } | Frame::Part { .. }) => {
                    frame
                }
                _ => return Err(format!("stream {stream} is not a frame that goes in parts")),
            };
            if joining.body_len > 0 && !frame.takes_body() {
                return Err(format!("stream {stream} has a payload for a frame without room for one"));
            }
            joining.frame = Some(frame);
            joining.body.reserve_exact(joining.body_len.min(FIRST_ROOM));
        }
        joining.body.extend_from_slice(to_body);
        if joining.frame.is_none() || joining.body.len() < joining.body_len {
            return Ok(None);
        }
        let Some(Joining { frame: Some(mut frame), body, body_len, .. }) = self.streams.remove(&stream) else {
            return Ok(None);
        };
        if body_len > 0 {
            frame.put_body(body);
        }
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use molt_abi::{Envelope, NodeId, Payload, Pid, Shape, Tag};

    use super::*;

    fn pid(serial: u64) -> Pid {
        Pid { node: NodeId(7), creation: 1, serial }
    }

    fn message(to: u64, len: usize, fill: u8) -> Frame {
        let envelope = Envelope { tag: Tag(1), shape: Shape(2), payload: Payload::from_vec(vec![fill; len]) };
        Frame::Message { to: pid(to), envelope }
    }

    /// Runs the items through a joiner: the frames that come out, as
    /// (target, payload length, first byte).
    fn join(items: &[Numbered], joiner: &mut Joiner) -> Vec<(u64, usize, u8)> {
        let mut frames = Vec::new();
        for numbered in items {
            let mut bytes = numbered.item.frame.to_vec();
            bytes.extend_from_slice(&numbered.item.raw);
            assert!(bytes.len() <= crate::dist::wire::MAX_ITEM);
            let frame = match Frame::decode(&bytes).unwrap() {
                (Frame::Open { stream, head, body }, _) => {
                    joiner.open(stream, head, body, 64 << 20).unwrap();
                    None
                }
                (Frame::Part { stream }, raw) => joiner.part(stream, raw).unwrap(),
                (frame, _) => Some(frame),
            };
            if let Some(Frame::Message { to, envelope }) = frame {
                frames.push((to.serial, envelope.payload.len(), envelope.payload.first().copied().unwrap_or(0)));
            }
        }
        frames
    }

    /// A big message goes in parts, small ones of other lanes overtake it,
    /// the ones of its own lane wait behind it, and every one comes back
    /// whole.
    #[test]
    fn small_frames_overtake_a_big_one_of_another_lane_only() {
        let mut outbox = Outbox::new(64 << 20);
        let mut out = Out::default();
        outbox.push(Some(pid(1)), message(10, 1 << 20, 1), &mut out);
        outbox.push(Some(pid(1)), message(11, 5, 2), &mut out);
        outbox.push(Some(pid(2)), message(12, 5, 3), &mut out);
        outbox.parts(&mut out, usize::MAX);
        outbox.push(Some(pid(2)), message(13, 5, 4), &mut out);
        while outbox.has_parts() {
            outbox.parts(&mut out, usize::MAX);
        }
        let frames = join(&out.items, &mut Joiner::default());
        assert_eq!(frames, [(12, 5, 3), (13, 5, 4), (10, 1 << 20, 1), (11, 5, 2)]);
        assert_eq!(out.items.iter().map(|n| n.frames).sum::<usize>(), 4);
        assert_eq!(outbox.lose(), 0);
    }

    /// Past the number of open streams, a big frame waits for one, and
    /// still goes, in order.
    #[test]
    fn big_frames_past_the_open_streams_wait_their_turn() {
        let mut outbox = Outbox::new(64 << 20);
        let mut out = Out::default();
        for lane in 0..STREAMS as u64 + 3 {
            outbox.push(Some(pid(lane)), message(lane, PART * 2 + 1, lane as u8), &mut out);
        }
        outbox.push(Some(pid(0)), message(99, 1, 0), &mut out);
        while outbox.has_parts() {
            outbox.parts(&mut out, usize::MAX);
        }
        let frames = join(&out.items, &mut Joiner::default());
        assert_eq!(frames.len(), STREAMS + 4);
        let zero = frames.iter().position(|f| f.0 == 0).unwrap();
        let after = frames.iter().position(|f| f.0 == 99).unwrap();
        assert!(zero < after, "a lane's frames stay in order: {frames:?}");
        assert!(frames.iter().all(|&(to, len, first)| to == 99 || (len == PART * 2 + 1 && first == to as u8)));
    }

    /// A stream that waited for a free one goes before the next big frame
    /// of a lane whose stream just ended.
    #[test]
    fn a_waiting_stream_goes_before_a_lanes_next_big_one() {
        let mut outbox = Outbox::new(64 << 20);
        let mut out = Out::default();
        for lane in 0..STREAMS as u64 {
            outbox.push(Some(pid(lane)), message(lane, PART * 2 + 1, 1), &mut out);
            outbox.push(Some(pid(lane)), message(100 + lane, PART * 2 + 1, 1), &mut out);
        }
        let late = STREAMS as u64;
        outbox.push(Some(pid(late)), message(late, PART * 2 + 1, 1), &mut out);
        while outbox.has_parts() {
            outbox.parts(&mut out, usize::MAX);
        }
        let frames = join(&out.items, &mut Joiner::default());
        assert_eq!(frames.len(), 2 * STREAMS + 1);
        let at = |to: u64| frames.iter().position(|f| f.0 == to).unwrap();
        assert!(at(late) < at(100), "{frames:?}");
    }

    /// A frame over the limit is dropped and counted, alone.
    #[test]
    fn a_frame_over_the_limit_is_dropped_alone() {
        let mut outbox = Outbox::new(1 << 20);
        let mut out = Out::default();
        outbox.push(None, message(1, 2 << 20, 1), &mut out);
        outbox.push(None, message(2, 3, 1), &mut out);
        assert_eq!((out.dropped, out.items.len()), (1, 1));
        assert!(out.biggest_dropped > 2 << 20);
    }

    /// What breaks the protocol is named: a part of a stream never opened,
    /// a part past its end, a stream opened twice or over the limit.
    #[test]
    fn a_joiner_refuses_what_breaks_the_protocol() {
        let mut joiner = Joiner::default();
        assert!(joiner.part(3, b"x").unwrap_err().contains("not open"));
        joiner.open(3, 10, PART as u64 + 1, 1 << 20).unwrap();
        assert!(joiner.open(3, 10, PART as u64 + 1, 1 << 20).unwrap_err().contains("after stream 3"));
        assert!(joiner.open(4, 10, 2 << 20, 1 << 20).unwrap_err().contains("bytes"));
        // A payload no bigger than a part is never taken out of its frame.
        assert!(joiner.open(5, PART as u64, 1, 1 << 20).unwrap_err().contains("bytes"));
        assert!(joiner.part(3, &vec![0; PART + 12]).unwrap_err().contains("still lacks"));
        assert!(joiner.part(3, &[]).is_err());
        // A head that is not a frame is refused once whole, before the
        // payload comes.
        assert!(joiner.part(3, &[0xff; 10]).unwrap_err().contains("not a frame"));
        // A head with no room for the payload announced, too.
        let head = Frame::Ping(1).encode().unwrap();
        joiner.open(6, head.len() as u64, PART as u64 + 1, 1 << 20).unwrap();
        assert!(joiner.part(6, &head).unwrap_err().contains("not a frame"));
        let head = Frame::Signal { to: pid(1), signal: crate::signal::Signal::Kill { from: pid(2) } }.encode().unwrap();
        joiner.open(7, head.len() as u64, PART as u64 + 1, 1 << 20).unwrap();
        assert!(joiner.part(7, &head).unwrap_err().contains("without room"));
    }
}
