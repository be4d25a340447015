//! How a Rust closure becomes a process body the core can run:
//! [`ProcessStart::new`] and the future it hands over.
//!
//! This is the one place user process code is polled, so it owns the rule
//! that no panic leaves user code: a panic in the closure, in the future's
//! `poll` or in its `drop` is caught here and becomes the process's exit
//! reason ([`ExitReason::Panicked`]); the core only ever sees a future that
//! completes.

use std::any::Any;
use std::cell::Cell;
use std::ffi::c_void;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll, RawWakerVTable, Waker};

use async_ffi::FfiFuture;

use crate::contract::{ProcessStart, Str};
use crate::exit::{ExitReason, IntoExitReason};
use crate::process::{Process, ProcessRef};

type WakerIdentity = (*const (), *const RawWakerVTable);

thread_local! {
    /// The waker of the process body being polled on this thread. No
    /// destructor: a thread-local with one would pin a module's code in
    /// memory after it is closed.
    static POLLING: Cell<WakerIdentity> = const { Cell::new((std::ptr::null(), std::ptr::null())) };
}

fn identity(waker: &Waker) -> WakerIdentity {
    (waker.data(), std::ptr::from_ref(waker.vtable()))
}

/// Whether `waker` is the one the process body being polled was given, i.e.
/// waking it wakes the process's own task (see `ReceiveRequest::own_task`).
pub(crate) fn is_own_task(waker: &Waker) -> bool {
    POLLING.with(|polling| polling.get() == identity(waker))
}

impl ProcessStart {
    /// Packs `body` so the core can start it as a process.
    pub fn new<F, Fut>(body: F) -> ProcessStart
    where
        F: FnOnce(Process) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: IntoExitReason,
    {
        unsafe extern "C" fn start<F, Fut>(env: *mut c_void, process: Process) -> FfiFuture<()>
        where
            F: FnOnce(Process) -> Fut + Send + 'static,
            Fut: Future + Send + 'static,
            Fut::Output: IntoExitReason,
        {
            // SAFETY: `env` came from `Box::into_raw(Box<F>)` in `new` with
            // this very `F`, and the core calls `start` or `drop_env` once.
            let body = unsafe { Box::from_raw(env.cast::<F>()) };
            body_future(process, *body)
        }

        unsafe extern "C" fn drop_env<F>(env: *mut c_void) {
            // SAFETY: as in `start`: a `Box<F>` made by `new`, dropped once.
            let body = unsafe { Box::from_raw(env.cast::<F>()) };
            // A closure's captures may panic in drop; never unwind into the core.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(body)));
        }

        ProcessStart {
            env: Box::into_raw(Box::new(body)).cast(),
            start: start::<F, Fut>,
            drop_env: drop_env::<F>,
            code: Str::new(std::any::type_name::<F>()),
        }
    }
}

/// The future the core polls for a process running `body`: the closure runs
/// at the first poll, and no panic of it, its future or their drops leaves
/// this future. How a module entry and a spawned closure both start.
pub fn body_future<F, Fut>(process: Process, body: F) -> FfiFuture<()>
where
    F: FnOnce(Process) -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoExitReason,
{
    let this = process.as_ref();
    FfiFuture::new(ProcessBody::new(this, body, process))
}

/// Where a process body is in its life.
enum Stage<F, Fut> {
    /// The closure and its process, until the first poll.
    Start(F, Process),
    /// The closure's future: structurally pinned, polled and dropped in place.
    Run(Fut),
    /// Completed, or dropped.
    Done,
}

/// The future the core polls: runs the closure on first poll, then its
/// future, and reports how it ended.
struct ProcessBody<F, Fut> {
    this: ProcessRef,
    stage: Stage<F, Fut>,
}

impl<F, Fut> ProcessBody<F, Fut> {
    fn new(this: ProcessRef, body: F, process: Process) -> Self {
        ProcessBody { this, stage: Stage::Start(body, process) }
    }

    /// Drops the user's closure or future in place, catching a panicking drop.
    fn finish(&mut self) {
        if matches!(self.stage, Stage::Done) {
            return;
        }
        let stage = std::ptr::from_mut(&mut self.stage);
        // SAFETY: `stage` holds a live value, dropped exactly once here, in
        // place (a pinned future is never moved). If its drop panics, the
        // drop glue still drops the rest while unwinding, and the value is
        // gone either way; it is overwritten below without being dropped.
        let _ = catch_unwind(AssertUnwindSafe(|| unsafe { std::ptr::drop_in_place(stage) }));
        // SAFETY: `stage` is valid for writes and its old value was dropped.
        unsafe { std::ptr::write(stage, Stage::Done) };
    }
}

impl<F, Fut> ProcessBody<F, Fut>
where
    F: FnOnce(Process) -> Fut,
    Fut: Future,
    Fut::Output: IntoExitReason,
{
    /// Drives the body one step; may panic (the caller catches it).
    fn step(&mut self, cx: &mut Context<'_>) -> Poll<ExitReason> {
        if let Stage::Start(..) = self.stage {
            // Moving the closure out moves nothing pinned: no future yet.
            let Stage::Start(body, process) = std::mem::replace(&mut self.stage, Stage::Done) else {
                unreachable!("the stage was Start")
            };
            self.stage = Stage::Run(body(process));
        }
        match &mut self.stage {
            // SAFETY: `self` is only reached through `Pin<&mut ProcessBody>`
            // (see `poll`), and the future is never moved: it is polled here
            // and dropped in place by `finish`.
            Stage::Run(fut) => unsafe { Pin::new_unchecked(fut) }.poll(cx).map(IntoExitReason::into_exit_reason),
            Stage::Start(..) | Stage::Done => Poll::Ready(ExitReason::Normal),
        }
    }
}

impl<F, Fut> Future for ProcessBody<F, Fut>
where
    F: FnOnce(Process) -> Fut,
    Fut: Future,
    Fut::Output: IntoExitReason,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: nothing is moved out of `self`; the pinned `fut` stays in
        // place (see `step` and `finish`).
        let this = unsafe { self.get_unchecked_mut() };
        let outer = POLLING.with(|polling| polling.replace(identity(cx.waker())));
        let stepped = catch_unwind(AssertUnwindSafe(|| this.step(cx)));
        POLLING.with(|polling| polling.set(outer));
        let reason = match stepped {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(reason)) => reason,
            Err(panic) => ExitReason::Panicked(panic_message(panic)),
        };
        this.finish();
        this.this.set_exit_reason(&reason);
        Poll::Ready(())
    }
}

impl<F, Fut> Drop for ProcessBody<F, Fut> {
    fn drop(&mut self) {
        // A killed process's body is dropped here, not completed.
        self.finish();
    }
}

/// The text of a panic payload (`panic!` gives `&str` or `String`).
pub fn panic_message(payload: Box<dyn Any + Send>) -> String {
    let message = match payload.downcast_ref::<&str>() {
        Some(s) => (*s).to_owned(),
        None => match payload.downcast_ref::<String>() {
            Some(s) => s.clone(),
            None => String::from("(a panic payload that is not a string)"),
        },
    };
    // Dropping the payload may itself panic (rust-lang/rust#86027).
    let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
    message
}
