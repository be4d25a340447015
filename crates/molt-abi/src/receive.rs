//! Selective receive: [`Expect`] (one type) and [`Receive`] (several arms).
//!
//! Both hand the core a [`ReceiveRequest`] whose matcher runs here, on the
//! side that knows the types: the core walks the mailbox oldest first from
//! the saved cursor and offers each message whose tag is wanted; the matcher
//! checks its shape, decodes it, tests the arm's predicate and keeps the
//! value. An arm takes only messages of its type's shape; a message whose
//! tag some arm wants but whose shape none has is taken out and returned as
//! [`ReceiveError::Decode`] — never decoded into a type of another shape. A
//! panicking predicate is caught in the matcher and re-raised here, in the
//! process's own body, so it ends that process only.

use std::any::Any;
use std::ffi::c_void;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::contract::{MATCH_TAKE, NO_DEADLINE, ReceiveRequest, ReceiveStatus};
use smallvec::SmallVec;

use crate::{DecodeError, Envelope, Message, Process, ReceiveError, Shape, Tag};

/// Decides, message by message, whether a receive takes it.
trait Matcher {
    /// Returns true to take the message; the outcome is kept in `self`.
    fn try_match(&mut self, tag: Tag, shape: Shape, bytes: &[u8]) -> bool;
}

/// A matcher plus a place for a panic raised by user code inside it.
struct Guarded<M> {
    matcher: M,
    panic: Option<Box<dyn Any + Send>>,
}

unsafe extern "C" fn guarded_match<M: Matcher>(
    env: *mut c_void,
    tag: Tag,
    shape: Shape,
    bytes: *const u8,
    len: usize,
) -> u8 {
    // SAFETY: `env` is the `&mut Guarded<M>` that `poll_receive` put in the
    // request, alive and unaliased for the duration of the core's call.
    let guarded = unsafe { &mut *env.cast::<Guarded<M>>() };
    // SAFETY: the core passes a live payload of `len` bytes for this call.
    let bytes = unsafe { crate::contract::borrowed(bytes, len) };
    match catch_unwind(AssertUnwindSafe(|| guarded.matcher.try_match(tag, shape, bytes))) {
        Ok(true) => MATCH_TAKE,
        Ok(false) => 0,
        Err(panic) => {
            guarded.panic = Some(panic);
            MATCH_TAKE
        }
    }
}

/// The state a receive future keeps between polls.
#[derive(Debug)]
struct ReceiveState {
    cursor: usize,
    /// The timeout in nanoseconds, `NO_DEADLINE` for none.
    timeout: u64,
    /// When it gives up on the node clock; 0 until the first poll starts
    /// the clock.
    deadline: u64,
}

impl ReceiveState {
    #[inline]
    fn new(timeout: Option<Duration>) -> ReceiveState {
        let timeout = timeout.map_or(NO_DEADLINE, crate::process::nanos);
        ReceiveState { cursor: 0, timeout, deadline: 0 }
    }

    /// One call into the core's mailbox. `Ready(None)` means the matcher took
    /// a message and holds the outcome.
    fn poll_receive<M: Matcher>(
        &mut self,
        process: &Process,
        tags: &[Tag],
        matcher: &mut M,
        cx: &mut Context<'_>,
    ) -> Poll<Option<ReceiveError>> {
        if self.deadline == 0 {
            self.deadline = match self.timeout {
                NO_DEADLINE => NO_DEADLINE,
                timeout => process.now().saturating_add(timeout).max(1),
            };
        }
        let deadline = self.deadline;
        let mut guarded = Guarded { matcher, panic: None };
        let mut request = ReceiveRequest {
            tags: tags.as_ptr(),
            tag_count: tags.len(),
            matcher: guarded_match::<&mut M>,
            env: (&raw mut guarded).cast(),
            cursor: self.cursor,
            deadline,
        };
        let vtable = process.vtable();
        let handle = process.handle();
        // SAFETY: `process` holds the handle; `request`, the tags it points at
        // and `guarded` live across the call.
        let status = unsafe { (vtable.receive)(handle, &mut request) };
        self.cursor = request.cursor;
        if let Some(panic) = guarded.panic {
            resume_unwind(panic);
        }
        match status {
            ReceiveStatus::Matched => Poll::Ready(None),
            ReceiveStatus::Pending => {
                crate::body::relay_if_foreign(cx.waker());
                Poll::Pending
            }
            ReceiveStatus::TimedOut => {
                Poll::Ready(Some(ReceiveError::Timeout { after: Duration::from_nanos(self.timeout) }))
            }
            ReceiveStatus::NotOwner => crate::process::not_owner(),
        }
    }
}

impl<M: Matcher> Matcher for &mut M {
    fn try_match(&mut self, tag: Tag, shape: Shape, bytes: &[u8]) -> bool {
        (**self).try_match(tag, shape, bytes)
    }
}

/// Decodes a message of `M`'s tag, if its shape is `M`'s.
fn decode<M: Message>(shape: Shape, bytes: &[u8]) -> Result<M, ReceiveError> {
    let expected = M::shape();
    if !shape.fits(expected) {
        return Err(shape_mismatch::<M>(shape, bytes));
    }
    Envelope::decode::<M>(bytes).map_err(|error| {
        ReceiveError::Decode(Box::new(DecodeError {
            tag: M::TAG,
            type_name: std::any::type_name::<M>(),
            expected,
            found: shape,
            reason: error.to_string(),
            bytes: bytes.to_vec(),
        }))
    })
}

/// The error for a message of `M`'s tag whose shape is not `M`'s. (No
/// description of the shape: a stale sender may send many, and a
/// description is a trace; `Shape::trace` and `node.modules()` give it.)
#[cold]
fn shape_mismatch<M: Message>(found: Shape, bytes: &[u8]) -> ReceiveError {
    ReceiveError::Decode(Box::new(DecodeError {
        tag: M::TAG,
        type_name: std::any::type_name::<M>(),
        expected: M::shape(),
        found,
        reason: "the sender's type has another shape than this one, so the bytes were not decoded; take both \
                 shapes with an arm for each, or give the new shape a new name"
            .into(),
        bytes: bytes.to_vec(),
    }))
}

/// The future of [`Process::expect`] and [`Process::expect_timeout`].
#[derive(Debug)]
#[must_use = "a receive does nothing unless awaited"]
pub struct Expect<'p, M> {
    process: &'p mut Process,
    state: ReceiveState,
    _message: PhantomData<fn() -> M>,
}

impl<'p, M: Message> Expect<'p, M> {
    pub(crate) fn new(process: &'p mut Process, timeout: Option<Duration>) -> Self {
        Expect { process, state: ReceiveState::new(timeout), _message: PhantomData }
    }
}

/// What [`Expect`]'s matcher took: the value or why it could not be
/// decoded. Two fields, not one `Option<Result<…>>`: each is written in
/// place once the decode is done, where a whole `Option<Result<…>>` was
/// built on the stack and copied over (a store read back at once, in a
/// wider load than it was written with, which stalls: a tenth of the
/// matcher's time in a round trip, perf).
struct TakeOne<M> {
    value: Option<M>,
    error: Option<ReceiveError>,
}

impl<M: Message> Matcher for TakeOne<M> {
    fn try_match(&mut self, _tag: Tag, shape: Shape, bytes: &[u8]) -> bool {
        // The core only offers messages with `M::TAG`.
        match decode::<M>(shape, bytes) {
            Ok(value) => self.value = Some(value),
            Err(error) => self.error = Some(error),
        }
        true
    }
}

impl<M: Message> Future for Expect<'_, M> {
    type Output = Result<M, ReceiveError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut take = TakeOne::<M> { value: None, error: None };
        match this.state.poll_receive(this.process, &[M::TAG], &mut take, cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(error)) => Poll::Ready(Err(error)),
            Poll::Ready(None) => match (take.value, take.error) {
                (Some(value), _) => Poll::Ready(Ok(value)),
                (None, error) => Poll::Ready(Err(error.expect("the matcher took a message"))),
            },
        }
    }
}

/// A receive with several arms; see [`Process::receive`]. Its arms are
/// kept in its type, so a receive allocates nothing.
///
/// ```no_run
/// # async fn example(mut p: molt_abi::Process) -> Result<(), molt_abi::ReceiveError> {
/// enum Event { Number(i64), Text(String) }
/// let event = p.receive()
///     .on_if(|n: &i64| *n > 0, Event::Number)
///     .on(Event::Text)
///     .await?;
/// # Ok(()) }
/// ```
#[must_use = "a receive does nothing unless awaited"]
pub struct Receive<'p, R, A = NoArms> {
    process: &'p mut Process,
    state: ReceiveState,
    arms: A,
    _result: PhantomData<fn() -> R>,
}

impl<R, A> std::fmt::Debug for Receive<'_, R, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receive").field("state", &self.state).finish_non_exhaustive()
    }
}

/// The arms of a [`Receive`] before any is added.
#[derive(Debug)]
pub struct NoArms;

/// The arms of a [`Receive`]: the ones before, then one more.
#[derive(Debug)]
pub struct Then<Before, Arm>(Before, Arm);

/// One arm: messages of type `M` that `predicate` accepts go to `handler`.
pub struct Arm<M, P, F> {
    predicate: P,
    handler: Option<F>,
    _message: PhantomData<fn() -> M>,
}

impl<M, P, F> std::fmt::Debug for Arm<M, P, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arm").field("message", &std::any::type_name::<M>()).finish_non_exhaustive()
    }
}

/// The predicate of [`Receive::on`]: every message of the type.
#[derive(Debug, Clone, Copy)]
pub struct Always;

/// Whether an arm takes a message it could decode.
pub trait Predicate<M> {
    /// True to take `message`.
    fn test(&self, message: &M) -> bool;
}

impl<M> Predicate<M> for Always {
    fn test(&self, _message: &M) -> bool {
        true
    }
}

impl<M, F: Fn(&M) -> bool> Predicate<M> for F {
    fn test(&self, message: &M) -> bool {
        self(message)
    }
}

/// A list of arms, tried in order for each message.
pub trait Arms<R> {
    /// Adds the tags the arms accept to `tags`.
    fn tags(&self, tags: &mut SmallVec<[Tag; 8]>);
    /// The first arm's outcome for a message: `None` if no arm takes it. An
    /// arm takes only a message of its type's tag and shape: `exact` asks
    /// for the very shape, otherwise an unknown shape on either side fits.
    fn take(&mut self, tag: Tag, shape: Shape, exact: bool, bytes: &[u8]) -> Option<Result<R, ReceiveError>>;
    /// Whether some arm takes messages of `tag` and `shape`.
    fn fits(&self, tag: Tag, shape: Shape) -> bool;
    /// The error the first arm with `tag` gives a message of another shape.
    fn mismatch(&self, tag: Tag, shape: Shape, bytes: &[u8]) -> Option<ReceiveError>;
}

impl<R> Arms<R> for NoArms {
    fn tags(&self, _tags: &mut SmallVec<[Tag; 8]>) {}

    fn take(&mut self, _tag: Tag, _shape: Shape, _exact: bool, _bytes: &[u8]) -> Option<Result<R, ReceiveError>> {
        None
    }

    fn fits(&self, _tag: Tag, _shape: Shape) -> bool {
        false
    }

    fn mismatch(&self, _tag: Tag, _shape: Shape, _bytes: &[u8]) -> Option<ReceiveError> {
        None
    }
}

impl<R, Before, M, P, F> Arms<R> for Then<Before, Arm<M, P, F>>
where
    Before: Arms<R>,
    M: Message,
    P: Predicate<M>,
    F: FnOnce(M) -> R,
{
    fn tags(&self, tags: &mut SmallVec<[Tag; 8]>) {
        self.0.tags(tags);
        if !tags.contains(&M::TAG) {
            tags.push(M::TAG);
        }
    }

    fn take(&mut self, tag: Tag, shape: Shape, exact: bool, bytes: &[u8]) -> Option<Result<R, ReceiveError>> {
        if let Some(taken) = self.0.take(tag, shape, exact, bytes) {
            return Some(taken);
        }
        let fits = if exact { shape == M::shape() } else { shape.fits(M::shape()) };
        if tag != M::TAG || !fits {
            return None;
        }
        let arm = &mut self.1;
        match decode::<M>(shape, bytes) {
            Ok(message) if !arm.predicate.test(&message) => None,
            Ok(message) => Some(Ok(arm.handler.take().expect("a receive takes one message")(message))),
            Err(error) => Some(Err(error)),
        }
    }

    fn fits(&self, tag: Tag, shape: Shape) -> bool {
        self.0.fits(tag, shape) || (tag == M::TAG && shape.fits(M::shape()))
    }

    fn mismatch(&self, tag: Tag, shape: Shape, bytes: &[u8]) -> Option<ReceiveError> {
        let earlier = self.0.mismatch(tag, shape, bytes);
        if earlier.is_some() || tag != M::TAG {
            return earlier;
        }
        Some(shape_mismatch::<M>(shape, bytes))
    }
}

impl<'p, R> Receive<'p, R, NoArms> {
    pub(crate) fn new(process: &'p mut Process, timeout: Option<Duration>) -> Self {
        Receive { process, state: ReceiveState::new(timeout), arms: NoArms, _result: PhantomData }
    }
}

impl<'p, R, A: Arms<R>> Receive<'p, R, A> {
    /// An arm taking any message of type `M` (Cloud Haskell `match`).
    pub fn on<M: Message, F: FnOnce(M) -> R>(self, handler: F) -> Receive<'p, R, Then<A, Arm<M, Always, F>>> {
        self.on_if(Always, handler)
    }

    /// An arm taking a message of type `M` for which `predicate` holds
    /// (Cloud Haskell `matchIf`); other messages of type `M` stay queued.
    pub fn on_if<M: Message, P: Predicate<M>, F: FnOnce(M) -> R>(
        self,
        predicate: P,
        handler: F,
    ) -> Receive<'p, R, Then<A, Arm<M, P, F>>> {
        let arm = Arm { predicate, handler: Some(handler), _message: PhantomData };
        Receive { process: self.process, state: self.state, arms: Then(self.arms, arm), _result: PhantomData }
    }
}

struct FirstArm<'a, R, A> {
    arms: &'a mut A,
    outcome: Option<Result<R, ReceiveError>>,
}

impl<R, A: Arms<R>> Matcher for FirstArm<'_, R, A> {
    fn try_match(&mut self, tag: Tag, shape: Shape, bytes: &[u8]) -> bool {
        // An arm of the very shape first; then one where either shape is
        // unknown (so an untraceable type's arm never shadows an exact one).
        self.outcome = self.arms.take(tag, shape, true, bytes);
        if self.outcome.is_none() {
            self.outcome = self.arms.take(tag, shape, false, bytes);
        }
        // The core offers only wanted tags: a message no arm took is one
        // every arm of its shape declined (it stays), or one whose shape no
        // arm has (it is taken out, with the error).
        if self.outcome.is_none() && !self.arms.fits(tag, shape) {
            self.outcome = self.arms.mismatch(tag, shape, bytes).map(Err);
        }
        self.outcome.is_some()
    }
}

impl<R, A: Arms<R> + Unpin> Future for Receive<'_, R, A> {
    type Output = Result<R, ReceiveError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut tags = SmallVec::<[Tag; 8]>::new();
        this.arms.tags(&mut tags);
        let mut first = FirstArm { arms: &mut this.arms, outcome: None };
        match this.state.poll_receive(this.process, &tags, &mut first, cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(error)) => Poll::Ready(Err(error)),
            Poll::Ready(None) => Poll::Ready(first.outcome.expect("the matcher took a message")),
        }
    }
}
