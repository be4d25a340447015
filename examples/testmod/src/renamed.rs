//! With the `renamed` feature: a version 2 whose `echo` state renames
//! version 1's `count` to `total` — another shape, the same bytes — and a
//! `migrate` that converts it (so the bytes it makes are the old ones).
//! With `thread-probe`: the same state, whose `Deserialize` asks for the
//! current thread as a logger would (std then registers a thread-exit
//! destructor on the thread it runs on), and no declared conversion.

use molt_module::{ExitReason, Pid, Process};
use serde::{Deserialize, Serialize};

/// Version 1's `Counter` with `count` renamed.
#[derive(Debug, Serialize)]
pub struct Renamed {
    /// Pings answered.
    pub total: u64,
    /// As version 1's.
    pub follow_upgrades: bool,
    /// As version 1's.
    pub watcher: Option<Pid>,
}

#[derive(Deserialize)]
#[serde(rename = "Renamed")]
struct Fields {
    total: u64,
    follow_upgrades: bool,
    watcher: Option<Pid>,
}

impl<'de> Deserialize<'de> for Renamed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if cfg!(feature = "thread-probe") {
            std::hint::black_box(std::thread::current());
        }
        let Fields { total, follow_upgrades, watcher } = Fields::deserialize(d)?;
        Ok(Renamed { total, follow_upgrades, watcher })
    }
}

/// Answers pings, as version 1's `echo` does.
pub async fn echo(mut p: Process, mut state: Renamed) -> Result<(), ExitReason> {
    loop {
        let (from, n): (Pid, u64) = p.expect().await?;
        p.send(from, &(n, "2-renamed".to_owned(), state.total));
        state.total += 1;
    }
}

/// Converts version 1's `Counter`: a field renamed, the bytes the same.
#[cfg(feature = "renamed")]
pub(crate) fn convert(_from: &str, old: molt_module::OldState<'_>) -> molt_module::MigrateResult {
    let old: crate::Counter = old.decode()?;
    molt_module::encode(&Renamed { total: old.count, follow_upgrades: old.follow_upgrades, watcher: old.watcher })
}
