//! A module for molt's tests. Features choose the version ("1", or "2" with
//! `v2`, "3" with `v3`) and the ways a module can be broken: a `migrate`
//! that fails or panics, a declared ABI or SDK version that differs, a name
//! that is not the file's, or no molt descriptor at all.
//!
//! Entries:
//! - `echo`: answers `(from, n)` with `(n, version, count)` and counts;
//!   `"hot"` makes it hot-call itself; `"stop"` ends it; it follows
//!   `Upgrade` messages only if its state says so, and forwards
//!   `UpgradeFailed` to its watcher; `(from, "spawn")` makes it spawn a
//!   closure that waits forever (module code outside any entry) and answer
//!   with its pid;
//! - `legacy` (version 1 only): like `echo`, to hot-call into an entry the
//!   next version lacks;
//! - `panics_at_once`: panics before doing anything;
//! - (version 1 only) the boundary entries of `hostile.rs`.
//!
//! `reshaped` builds a version 2 whose `echo` state and `Note` message have
//! other shapes (`reshaped.rs`), with no `migrate`, a pass-through one or a
//! converting one. `init-effect` adds a module initialiser with a visible
//! effect (`init.rs`); `skewed-layout` builds against a contract of another
//! shape.

// The reshaped builds keep version 1's code unused.
#![cfg_attr(any(feature = "reshaped", feature = "renamed", feature = "thread-probe"), allow(dead_code))]

use molt_module::{ExitReason, Pid, Process, Upgrade, UpgradeFailed};

#[cfg(not(any(feature = "v2", feature = "v3")))]
mod hostile;
#[cfg(not(any(feature = "v2", feature = "v3")))]
pub use hostile::{
    blocker, combinator, from_thread, handoff, hot_loop, late_spawner, nested, respawn_on_drop, spin, stash,
    thread_name,
};

#[cfg(feature = "init-effect")]
pub mod init;
#[cfg(feature = "many-messages")]
pub mod many;
use serde::{Deserialize, Serialize};

/// This build's declared version.
pub const VERSION: &str = if cfg!(feature = "v3") {
    "3"
} else if cfg!(feature = "v2") {
    "2"
} else {
    "1"
};

/// The state of `echo` and `legacy`, the same shape in every version.
#[derive(Debug, Serialize, Deserialize)]
pub struct Counter {
    /// Pings answered, plus 1000 for every migration.
    pub count: u64,
    /// Take every `Upgrade` at once with a hot call.
    pub follow_upgrades: bool,
    /// Gets `UpgradeFailed` messages.
    pub watcher: Option<Pid>,
}

/// A message type the module declares, in version 1's shape (`reshaped`
/// has another).
#[cfg(not(feature = "reshaped"))]
#[derive(Debug, Serialize, Deserialize, molt_module::Message)]
#[message(name = "testmod.Note")]
pub struct Note {
    /// What it says.
    pub text: String,
}

enum Next {
    Ping(Pid, u64),
    Request(Pid, String),
    Command(String),
    Upgrade,
    Failed(UpgradeFailed),
}

async fn serve(mut p: Process, mut state: Counter, entry: &str) -> Result<(), ExitReason> {
    /// Makes the body slow to drop in the `slow-drop` build.
    struct SlowDrop;
    impl Drop for SlowDrop {
        fn drop(&mut self) {
            if cfg!(feature = "slow-drop") {
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
        }
    }
    let _slow = SlowDrop;
    loop {
        let next = p
            .receive()
            .on(|(from, n): (Pid, u64)| Next::Ping(from, n))
            .on(|(from, request): (Pid, String)| Next::Request(from, request))
            .on(Next::Command)
            .on(|_: Upgrade| Next::Upgrade)
            .on(Next::Failed)
            .await?;
        match next {
            Next::Ping(from, n) => {
                p.send(from, &(n, VERSION.to_owned(), state.count));
                state.count += 1;
            }
            Next::Request(from, request) if request == "spawn" => {
                let child = p.spawn(|mut p| async move {
                    loop {
                        p.expect::<u64>().await?;
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), molt_module::ReceiveError>(())
                });
                p.send(from, &child);
            }
            Next::Request(_, other) => return Err(ExitReason::error(format!("unknown request {other:?}"))),
            Next::Command(command) if command == "hot" => p.hot_call(entry, &state).await,
            Next::Command(command) if command == "stop" => return Ok(()),
            Next::Command(other) => return Err(ExitReason::error(format!("unknown command {other:?}"))),
            Next::Upgrade if state.follow_upgrades => p.hot_call(entry, &state).await,
            Next::Upgrade => {}
            Next::Failed(failed) => {
                if let Some(watcher) = state.watcher {
                    p.send(watcher, &failed);
                }
            }
        }
    }
}

#[cfg(any(feature = "renamed", feature = "thread-probe"))]
mod renamed;
#[cfg(feature = "reshaped")]
mod reshaped;
#[cfg(feature = "renamed")]
use renamed::convert;
#[cfg(any(feature = "renamed", feature = "thread-probe"))]
pub use renamed::echo;
#[cfg(feature = "reshaped-converts")]
use reshaped::convert;
#[cfg(feature = "reshaped-pass-through")]
use reshaped::pass_through;
#[cfg(feature = "reshaped")]
pub use reshaped::{Note, echo};

/// Answers pings with this version's name.
#[cfg(not(any(feature = "reshaped", feature = "renamed", feature = "thread-probe")))]
pub async fn echo(p: Process, state: Counter) -> Result<(), ExitReason> {
    serve(p, state, "echo").await
}

/// `echo` under another name, in version 1 only.
#[cfg(not(any(feature = "v2", feature = "v3")))]
pub async fn legacy(p: Process, state: Counter) -> Result<(), ExitReason> {
    serve(p, state, "legacy").await
}

/// Panics as soon as it runs.
pub async fn panics_at_once(_p: Process, _state: ()) {
    panic!("panics_at_once panicked at once")
}

#[cfg(not(feature = "not-a-module"))]
fn migrate(from: &str, old: molt_module::OldState<'_>) -> molt_module::MigrateResult {
    if cfg!(feature = "migrate-fails") {
        return Err(molt_module::MigrateError::new(format!("version {VERSION} refuses state from {from}")));
    }
    if cfg!(feature = "migrate-panics") {
        panic!("migrate exploded");
    }
    let mut state: Counter = old.decode()?;
    state.count += 1000;
    molt_module::encode(&state)
}

#[cfg(not(any(
    feature = "not-a-module",
    feature = "v2",
    feature = "v3",
    feature = "wrong-abi",
    feature = "wrong-sdk",
    feature = "wrong-name",
    feature = "many-messages"
)))]
molt_module::module! {
    name: "testmod",
    version: VERSION,
    entries: [
        echo, legacy, panics_at_once, combinator, handoff, from_thread, stash, nested, respawn_on_drop, hot_loop,
        spin, thread_name, late_spawner, blocker,
    ],
    messages: [Note, (Pid, u64)],
    migrate: migrate,
}

#[cfg(all(
    feature = "v2",
    not(feature = "reshaped"),
    not(feature = "renamed"),
    not(feature = "thread-probe"),
    not(feature = "not-a-module")
))]
molt_module::module! {
    name: "testmod", version: VERSION, entries: [echo, panics_at_once], messages: [Note, (Pid, u64)], migrate: migrate,
}

#[cfg(all(feature = "v3", not(feature = "not-a-module")))]
molt_module::module! {
    name: "testmod", version: VERSION, entries: [echo, panics_at_once], messages: [Note, (Pid, u64)], migrate: migrate,
}

#[cfg(all(feature = "reshaped", not(feature = "reshaped-pass-through"), not(feature = "reshaped-converts")))]
molt_module::module! { name: "testmod", version: "2", entries: [echo], messages: [Note, (Pid, u64)] }

#[cfg(feature = "reshaped-pass-through")]
molt_module::module! {
    name: "testmod", version: "2", entries: [echo], messages: [Note, (Pid, u64)],
    migrate: pass_through, migrates_from: ["1"],
}

#[cfg(feature = "reshaped-converts")]
molt_module::module! {
    name: "testmod", version: "2", entries: [echo], messages: [Note, (Pid, u64)],
    migrate: convert, migrates_from: ["1"],
}

#[cfg(feature = "renamed")]
molt_module::module! {
    name: "testmod", version: "2", entries: [echo], messages: [Note, (Pid, u64)],
    migrate: convert, migrates_from: ["1"],
}

// Declares no conversion from version 1: its load is refused.
#[cfg(all(feature = "thread-probe", not(feature = "renamed")))]
molt_module::module! { name: "testmod", version: "2", entries: [echo], messages: [Note, (Pid, u64)] }

#[cfg(feature = "wrong-abi")]
molt_module::module! { name: "testmod", version: "1", entries: [echo], migrate: migrate, abi_version: 999 }

#[cfg(feature = "wrong-sdk")]
molt_module::module! { name: "testmod", version: "1", entries: [echo], migrate: migrate, sdk_version: "0.0.0-other" }

#[cfg(feature = "wrong-name")]
molt_module::module! { name: "other", version: "1", entries: [echo], migrate: migrate }
