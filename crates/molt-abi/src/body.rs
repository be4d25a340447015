//! How a Rust closure becomes a process body the core can run:
//! [`ProcessStart::new`] and the future it hands over.
//!
//! This is the one place user process code is polled, so it owns two rules:
//! - no panic leaves user code: a panic in the closure, in the future's
//!   `poll` or in its `drop` is caught here and becomes the process's exit
//!   reason ([`ExitReason::Panicked`]); the core only ever sees a future that
//!   completes;
//! - no waker of user code reaches the core. The body polls the user's
//!   future under a waker of its own ([`Waking`]), which wakes the core's
//!   task. A receive or sleep polled under another waker (inside a
//!   combinator such as `FuturesUnordered` or `select`) leaves a clone of
//!   that waker in the body's relay instead of handing it to the core, and
//!   the body wakes every relayed waker at the start of its next poll — which
//!   the core's task wake-up (a message, a timer) causes. So every waker
//!   made by a module's code lives in the module's memory and is dropped
//!   with the body, before the core lets the module's version close.

use std::any::Any;
use std::cell::Cell;
use std::ffi::c_void;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use async_ffi::FfiFuture;

use crate::contract::{ProcessStart, Str};
use crate::exit::{ExitReason, IntoExitReason};
use crate::process::{Process, ProcessRef, TaskWaker};

thread_local! {
    /// The waking state of the process body being polled on this thread;
    /// null when none. No destructor: a thread-local with one would pin a
    /// module's code in memory after it is closed.
    static POLLING: Cell<*const Waking> = const { Cell::new(std::ptr::null()) };
}

/// Whether a process body is being polled on this thread (not dropped:
/// its drop runs outside any poll).
pub(crate) fn polling() -> bool {
    !POLLING.with(Cell::get).is_null()
}

/// A body's waker and its relay of other wakers, in one allocation: the
/// waker the user's future is polled with is this `Arc` (see `Waking::own`).
/// See the module docs.
struct Waking {
    /// The process's task, whichever it is: a process that moves to another
    /// scheduler runs in a new task, which the core wakes instead.
    task: TaskWaker,
    /// Set while the body wakes its relayed wakers at the start of a poll:
    /// the poll that follows sees whatever they woke, so waking the task
    /// again would only poll it once more for nothing.
    suppress: AtomicBool,
    /// Something is in `relayed`: a plain load per poll instead of the lock.
    any_relayed: AtomicBool,
    /// Wakers that receives and sleeps were polled under, to wake at the
    /// start of the next poll. Boxed: most bodies never relay, and an idle
    /// process should stay small (8 bytes where a `Vec` is 24).
    relayed: Mutex<Option<Relayed>>,
}

#[allow(clippy::box_collection, reason = "a box is a third of a vector's size, and rarely made")]
type Relayed = Box<Vec<Waker>>;

impl Wake for Waking {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.suppress.load(Ordering::SeqCst) {
            self.task.wake();
        }
    }
}

impl Waking {
    fn new(this: ProcessRef) -> Arc<Waking> {
        Arc::new(Waking {
            task: this.task_waker(),
            suppress: AtomicBool::new(false),
            any_relayed: AtomicBool::new(false),
            relayed: Mutex::new(None),
        })
    }

    /// The body's waker for the `Waking` at `this`, lent: it holds no count
    /// of its own (a clone made by user code takes one), so lending it
    /// costs nothing.
    ///
    /// # Safety
    /// `this` must come from `Arc::as_ptr` of an `Arc<Waking>` that the
    /// caller keeps alive for as long as it uses the waker, and the waker
    /// must only be lent by reference (never woken by value or dropped out
    /// of its `ManuallyDrop`).
    #[inline]
    unsafe fn own(this: *const Waking) -> ManuallyDrop<Waker> {
        // SAFETY: `this` came from `Arc::as_ptr` of a live `Arc`, so
        // `from_raw` gives an `Arc` to the same allocation without touching
        // its count; the `ManuallyDrop` never drops it, so the count is never
        // decremented for it either; the caller keeps the allocation alive
        // while the waker is used. Lent as `&Waker` (a `Context` hands out
        // nothing else), it can be cloned (a counted `Arc` of its own) but
        // never consumed.
        ManuallyDrop::new(Waker::from(unsafe { Arc::from_raw(this) }))
    }

    /// Takes what receives and sleeps relayed, leaving none.
    fn take_relayed(&self) -> Option<Relayed> {
        self.relayed.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Wakes what receives and sleeps left here in the last poll.
    #[inline]
    fn wake_relayed(&self) {
        // A plain load first, in line: most polls have nothing relayed.
        if self.any_relayed.load(Ordering::Acquire) {
            self.wake_relayed_now();
        }
    }

    #[cold]
    fn wake_relayed_now(&self) {
        if !self.any_relayed.swap(false, Ordering::AcqRel) {
            return;
        }
        let Some(relayed) = self.take_relayed() else { return };
        self.suppress.store(true, Ordering::SeqCst);
        for waker in *relayed {
            waker.wake();
        }
        self.suppress.store(false, Ordering::SeqCst);
    }

    fn relay(&self, waker: &Waker) {
        let mut relayed = self.relayed.lock().unwrap_or_else(|e| e.into_inner());
        let relayed = relayed.get_or_insert_with(Box::default);
        if !relayed.iter().any(|w| w.will_wake(waker)) {
            relayed.push(waker.clone());
        }
        self.any_relayed.store(true, Ordering::Release);
    }
}

/// Called by a receive or sleep that returned `Pending` under `waker`: the
/// core wakes only the process's task, so a waker that is not the body's
/// own is kept here and woken at the body's next poll. Outside a body's
/// poll nothing is kept (the core refuses such a receive anyway).
pub(crate) fn relay_if_foreign(waker: &Waker) {
    let polling = POLLING.with(Cell::get);
    if polling.is_null() {
        return;
    }
    // By the data pointer alone: only a waker made from the body's `Arc`
    // (its own, or a clone) carries it, while the vtable of
    // `Waker::from(Arc)` is a constant rustc may duplicate per inlined use
    // (measured: comparing it too, once `Waking::own` was inlined, every
    // wait relayed a clone of the body's own waker).
    if !std::ptr::eq(waker.data(), polling.cast()) {
        // SAFETY: `POLLING` is `Arc::as_ptr` of the `Waking` of the body
        // being polled on this thread; `ProcessBody::poll` sets it for the
        // length of that poll only, and the body holds that `Arc` throughout.
        unsafe { &*polling }.relay(waker);
    }
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
            // SAFETY: the core starts a `ProcessStart` only as the body of
            // the process `process` is, and keeps that process alive while it
            // polls or drops the future (see `ProcessStart::start`).
            unsafe { body_future(process, *body) }
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
///
/// Safe code cannot call it (its future, polled outside the core, would
/// report through a handle that may be gone):
///
/// ```compile_fail,E0133
/// fn body(process: molt_abi::Process) -> async_ffi::FfiFuture<()> {
///     molt_abi::body_future(process, |_process| async {})
/// }
/// ```
///
/// # Safety
/// The future must be handed to the core as the body of the process that
/// `process` is, and be polled and dropped only by the core: it reports the
/// body's end through a non-owning copy of `process`'s handle, which is
/// valid only while the core holds the process (as it does while it polls
/// or drops its body).
pub unsafe fn body_future<F, Fut>(process: Process, body: F) -> FfiFuture<()>
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
    /// Made at the first poll.
    waking: Option<Arc<Waking>>,
}

impl<F, Fut> ProcessBody<F, Fut> {
    fn new(this: ProcessRef, body: F, process: Process) -> Self {
        ProcessBody { this, stage: Stage::Start(body, process), waking: None }
    }

    /// Drops the user's closure or future in place, and the wakers relayed
    /// for it, catching a panicking drop.
    fn finish(&mut self) {
        if let Some(relayed) = self.waking.as_ref().and_then(|waking| waking.take_relayed()) {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(relayed)));
        }
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

impl<F, Fut> Stage<F, Fut>
where
    F: FnOnce(Process) -> Fut,
    Fut: Future,
    Fut::Output: IntoExitReason,
{
    /// Drives the body one step; may panic (the caller catches it).
    fn step(&mut self, cx: &mut Context<'_>) -> Poll<ExitReason> {
        if let Stage::Start(..) = self {
            // Moving the closure out moves nothing pinned: no future yet.
            let Stage::Start(body, process) = std::mem::replace(self, Stage::Done) else {
                unreachable!("the stage was Start")
            };
            *self = Stage::Run(body(process));
        }
        match self {
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

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: nothing is moved out of `self`; the pinned `fut` stays in
        // place (see `step` and `finish`).
        let this = unsafe { self.get_unchecked_mut() };
        let waking = Arc::as_ptr(this.waking.get_or_insert_with(|| Waking::new(this.this)));
        // SAFETY: the body holds the `Arc` of `waking` for the whole poll,
        // and the waker is lent to the user's future by reference only.
        let (own, waking_ref) = unsafe { (Waking::own(waking), &*waking) };
        let stage = &mut this.stage;
        let outer = POLLING.with(|polling| polling.replace(waking));
        let stepped = catch_unwind(AssertUnwindSafe(|| {
            // A relayed waker is user code: its panic ends this process too.
            waking_ref.wake_relayed();
            stage.step(&mut Context::from_waker(&own))
        }));
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

/// The text of a panic payload (`panic!` gives `&str` or `String`), with
/// where it happened if the module panic hook recorded it on this thread.
pub fn panic_message(payload: Box<dyn Any + Send>) -> String {
    let mut message = match payload.downcast_ref::<&str>() {
        Some(s) => (*s).to_owned(),
        None => match payload.downcast_ref::<String>() {
            Some(s) => s.clone(),
            None => String::from("(a panic payload that is not a string)"),
        },
    };
    // Dropping the payload may itself panic (rust-lang/rust#86027).
    let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
    let me = this_thread();
    let mut last = LAST_PANIC_AT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, at)) = last.take_if(|(thread, _)| *thread == me) {
        message.push_str(" (at ");
        message.push_str(&at);
        message.push(')');
    }
    message
}

/// Where the last panic caught by the module panic hook happened, and on
/// which thread. A static, not a thread-local: a thread-local holding a
/// `String` registers a destructor that pins the module in memory.
static LAST_PANIC_AT: Mutex<Option<(usize, String)>> = Mutex::new(None);

/// This thread, told apart from every other live one by the address of a
/// thread-local. Not `std::thread::current()`: in a module's own copy of
/// std, on a thread that std did not start, that registers a thread-exit
/// destructor which the dynamic loader does not tie to the module — the
/// thread's exit after the module is unmapped would jump into nothing.
fn this_thread() -> usize {
    thread_local! {
        static HERE: u8 = const { 0 };
    }
    HERE.with(|here| std::ptr::from_ref(here) as usize)
}

/// Installs, once, the panic hook of a module's own copy of std: it prints
/// nothing and records where the panic happened for [`panic_message`]. The
/// default hook, with `RUST_BACKTRACE` set, maps the module's file to read
/// its symbols and never unmaps it, so one panic would keep a purged
/// version's file in the address space. A panic's message and place become
/// the process's exit reason instead of a line on stderr. Called by the
/// `module!` macro's entry points; not for host programs, whose hook is
/// theirs.
#[doc(hidden)]
pub fn install_module_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let at = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
            if let Some(at) = at {
                *LAST_PANIC_AT.lock().unwrap_or_else(|e| e.into_inner()) = Some((this_thread(), at));
            }
        }));
    });
}
