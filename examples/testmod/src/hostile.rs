//! Entries that do what a careless or hostile module may do at the module
//! boundary, for molt's boundary tests (`crates/molt/tests/code_boundary.rs`).
//! Each reports what it did to the watcher in its `Counter` state as a
//! `(String, Pid)` or `(String, u64)` message.
//!
//! - `combinator`: receives under a waker of its own (inside a
//!   `FuturesUnordered`, with a timeout), reports `("combinator", n)`, then
//!   hot-calls `echo`: the waker must not outlive this version in the core;
//! - `handoff`: hands its `Process` to a closure it spawns, which spawns a
//!   second closure through it (outside that process's poll) and reports
//!   `("handoff", pid)`;
//! - `from_thread`: spawns a closure from another thread and reports
//!   `("from_thread", pid)`;
//! - `stash`: keeps its `Process` in a static and hot-calls `nested` through
//!   it; `nested` receives again through the stale `Process` from inside a
//!   receive's predicate, and reports `("nested", n)` for each message taken;
//! - `respawn_on_drop`: when its body is dropped (killed, purged), its drop
//!   code spawns a closure of this version and reports `("respawned", pid)`;
//! - `thread_name`: asks std for the thread it runs on (as logging code
//!   does: it plants a thread-exit destructor in this module's std) and
//!   reports `("thread_name", length of the name)`;
//! - `late_spawner`: hands its `Process` to a thread of its own and ends;
//!   the thread waits until a process is registered as `"late-go"` (after
//!   the test purged this version), then spawns a closure of this version
//!   and reports `("late", pid)`;
//! - `blocker`: reports `("blocking", 0)`, then waits in blocking work
//!   (`Process::blocking`) until the file `$MOLT_TEST_BLOCKER.go` exists,
//!   and writes `$MOLT_TEST_BLOCKER.done`: the work outlives its process,
//!   which the test purges meanwhile;
//! - `hot_loop`: hot-calls itself for ever, never receiving;
//! - `spin`: loops for ever without yielding.

use std::future::Future;
use std::pin::pin;
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use molt_module::{ExitReason, Pid, Process};

use crate::Counter;

fn watcher(state: &Counter) -> Pid {
    state.watcher.expect("the boundary entries report to a watcher")
}

/// A closure that waits for `u64`s for ever.
async fn wait_forever(mut p: Process) -> Result<(), molt_module::ReceiveError> {
    loop {
        p.expect::<u64>().await?;
    }
}

/// Receives under a combinator's waker, then moves on to `echo`.
pub async fn combinator(mut p: Process, state: Counter) -> Result<(), ExitReason> {
    let n = {
        let mut waiting = FuturesUnordered::new();
        waiting.push(p.expect_timeout::<u64>(Duration::from_secs(3600)));
        waiting.next().await.expect("one future")?
    };
    p.send(watcher(&state), &("combinator".to_owned(), n));
    p.hot_call("echo", &state).await
}

static HANDED_OVER: Mutex<Option<Process>> = Mutex::new(None);

/// Hands its `Process` to a closure that spawns through it.
pub async fn handoff(p: Process, state: Counter) {
    let watcher = watcher(&state);
    p.spawn(move |mut q| async move {
        let handed = loop {
            if let Some(handed) = HANDED_OVER.lock().unwrap_or_else(|e| e.into_inner()).take() {
                break handed;
            }
            q.sleep(Duration::from_millis(1)).await;
        };
        // `handed` is not the process being polled now: this spawn is made
        // outside its owner's poll.
        let second = handed.spawn(wait_forever);
        q.send(watcher, &("handoff".to_owned(), second));
        wait_forever(q).await
    });
    *HANDED_OVER.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
}

/// Spawns a closure from a thread of its own.
pub async fn from_thread(p: Process, state: Counter) -> Result<(), molt_module::ReceiveError> {
    let (p, child) = std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let child = p.spawn(wait_forever);
                (p, child)
            })
            .join()
            .expect("the thread spawns")
    });
    p.send(watcher(&state), &("from_thread".to_owned(), child));
    wait_forever(p).await
}

fn stashed() -> &'static futures::lock::Mutex<Option<Process>> {
    static STASH: OnceLock<futures::lock::Mutex<Option<Process>>> = OnceLock::new();
    STASH.get_or_init(|| futures::lock::Mutex::new(None))
}

/// Keeps its `Process` in a static and hot-calls through it.
pub async fn stash(p: Process, state: Counter) {
    let mut stash = stashed().lock().await;
    *stash = Some(p);
    stash.as_mut().expect("just stashed").hot_call("nested", &state).await;
}

/// Receives through the stale `Process` from inside a receive's predicate.
pub async fn nested(mut p: Process, state: Counter) -> Result<(), molt_module::ReceiveError> {
    let watcher = watcher(&state);
    loop {
        let n = p
            .receive()
            .on_if(
                |_: &u64| {
                    if let Some(mut stash) = stashed().try_lock()
                        && let Some(stale) = stash.as_mut()
                    {
                        let mut inner = pin!(stale.expect::<u64>());
                        if let Poll::Ready(Ok(n)) = inner.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                            stale.send(watcher, &("nested".to_owned(), n));
                        }
                    }
                    true
                },
                |n| n,
            )
            .await?;
        p.send(watcher, &("nested".to_owned(), n));
    }
}

/// Spawns a closure of this version from its drop code.
struct RespawnOnDrop(Option<Process>, Pid);

impl Drop for RespawnOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let child = p.spawn(wait_forever);
            p.send(self.1, &("respawned".to_owned(), child));
        }
    }
}

/// Waits for ever; its drop code spawns.
pub async fn respawn_on_drop(p: Process, state: Counter) {
    let guard = RespawnOnDrop(Some(p), watcher(&state));
    std::future::pending::<()>().await;
    drop(guard);
}

/// Names the thread it runs on, as logging code does.
pub async fn thread_name(p: Process, state: Counter) {
    let name = std::thread::current().name().map_or(0, str::len);
    p.send(watcher(&state), &("thread_name".to_owned(), name as u64));
}

/// Spawns a closure from a thread of its own after its version is closed.
pub async fn late_spawner(p: Process, state: Counter) {
    let watcher = watcher(&state);
    std::thread::spawn(move || {
        let started = std::time::Instant::now();
        while p.whereis("late-go").is_none() {
            if started.elapsed() > Duration::from_secs(60) {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let child = p.spawn(wait_forever);
        p.send(watcher, &("late".to_owned(), child));
    });
}

/// Blocking work of this version's code, still running when the process is
/// purged.
pub async fn blocker(p: Process, state: Counter) {
    p.send(watcher(&state), &("blocking".to_owned(), 0u64));
    let done = p
        .blocking(|| {
            let Ok(base) = std::env::var("MOLT_TEST_BLOCKER") else { return "no MOLT_TEST_BLOCKER".to_owned() };
            let started = std::time::Instant::now();
            while !std::path::Path::new(&format!("{base}.go")).exists() {
                if started.elapsed() > Duration::from_secs(60) {
                    return "never told to go".to_owned();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = std::fs::write(format!("{base}.done"), "done");
            "done".to_owned()
        })
        .await;
    p.send(watcher(&state), &(done, 0u64));
}

/// Hot-calls itself for ever.
pub async fn hot_loop(mut p: Process, round: u64) {
    p.hot_call("hot_loop", &(round + 1)).await
}

/// Never yields.
pub async fn spin(_p: Process, _state: ()) {
    loop {
        std::hint::spin_loop();
    }
}
