//! [`Process::blocking`]: blocking work run off the scheduler threads
//! (Erlang's dirty schedulers, tokio's `spawn_blocking`), and the future a
//! process awaits its result with.
//!
//! The work runs on a thread of the core's pool, which never exits (a
//! module's thread-exit destructors must never run after its version is
//! gone), while the core holds the work's module version open. The
//! process waits like in any await, so it stays killable: killed, it ends
//! at once, and the work finishes on its own, its result dropped there.

use std::ffi::c_void;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::Process;
use crate::contract::BlockingJob;

/// Where the work's result goes, and who waits for it.
struct Shared<R> {
    state: Mutex<(Option<std::thread::Result<R>>, Option<Waker>)>,
}

/// The future of [`Process::blocking`]: the work's result.
///
/// # Panics
/// Resumes the work's panic in the process, which then ends with
/// `Panicked` and the panic's message.
#[must_use = "the result of blocking work is only seen by awaiting it"]
pub struct Blocking<R> {
    shared: Option<Arc<Shared<R>>>,
    refused: Option<String>,
    done: bool,
}

impl Process {
    /// Runs `work` on a thread that is not a scheduler's and awaits its
    /// result: for code that blocks (file or socket I/O with std, a lock
    /// held long, a long computation), which would otherwise stop every
    /// process of its scheduler thread. A panic in `work` ends the calling
    /// process with `Panicked`; a process killed while it waits ends at
    /// once, and `work` finishes on its own, its result dropped. Each call
    /// takes an idle thread of the core's pool or starts one (the pool is
    /// not capped: a flood of blocking calls is a flood of threads).
    pub fn blocking<F, R>(&self, work: F) -> Blocking<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        unsafe extern "C" fn run<F, R>(env: *mut c_void)
        where
            F: FnOnce() -> R + Send + 'static,
            R: Send + 'static,
        {
            // SAFETY: `env` came from `Box::into_raw` of this very type in
            // `blocking`, and the core calls `run` or `drop_env` once.
            let job = unsafe { Box::from_raw(env.cast::<(F, Arc<Shared<R>>)>()) };
            let (work, shared) = *job;
            let result = catch_unwind(AssertUnwindSafe(work));
            let waker = {
                let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
                state.0 = Some(result);
                state.1.take()
            };
            // Nothing of user code may unwind into the core: a waker's or a
            // result's drop is user code too.
            let _ = catch_unwind(AssertUnwindSafe(move || {
                if let Some(waker) = waker {
                    waker.wake();
                }
                drop(shared);
            }));
        }

        unsafe extern "C" fn drop_env<F, R>(env: *mut c_void) {
            // SAFETY: as in `run`.
            let job = unsafe { Box::from_raw(env.cast::<(F, Arc<Shared<R>>)>()) };
            let _ = catch_unwind(AssertUnwindSafe(move || drop(job)));
        }

        let shared = Arc::new(Shared { state: Mutex::new((None, None)) });
        let job = BlockingJob {
            env: Box::into_raw(Box::new((work, shared.clone()))).cast(),
            run: run::<F, R>,
            drop_env: drop_env::<F, R>,
        };
        // SAFETY: `self` holds the handle; the job is a valid one (above).
        let accepted = unsafe { (self.vtable.blocking)(self.handle, job) };
        if accepted {
            Blocking { shared: Some(shared), refused: None, done: false }
        } else {
            let why = "the process has ended itself, its module version is being unloaded, or no thread could be \
                       started for it";
            Blocking { shared: None, refused: Some(why.into()), done: false }
        }
    }
}

impl<R> Future for Blocking<R> {
    type Output = R;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        let this = self.get_mut();
        assert!(!this.done, "a Blocking future was polled again after it returned its result");
        let Some(shared) = &this.shared else {
            panic!("blocking work was refused: {}", this.refused.as_deref().unwrap_or("no reason"));
        };
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.0.take() {
            Some(Ok(result)) => {
                drop(state);
                this.done = true;
                Poll::Ready(result)
            }
            Some(Err(panic)) => {
                drop(state);
                this.done = true;
                std::panic::resume_unwind(panic)
            }
            None => {
                if !state.1.as_ref().is_some_and(|waker| waker.will_wake(cx.waker())) {
                    state.1 = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl<R> std::fmt::Debug for Blocking<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blocking").field("refused", &self.refused).finish()
    }
}
