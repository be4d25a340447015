//! Version 1 of the ping-pong server.

use molt_module::{ExitReason, MigrateError, MigrateResult, OldState, Pid, Process, Upgrade};
use serde::{Deserialize, Serialize};

/// This version's declared version string.
pub const VERSION: &str = "1";

/// The server's state, as version 1 keeps it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServerState {
    /// Pings answered so far, by every version.
    pub answered: u64,
    /// Print a line per ping.
    pub verbose: bool,
    /// Ask for an upgrade on the ping with this value (the seed's 4).
    pub upgrade_at: Option<u64>,
    /// A ping to answer first, handed over by the version before.
    pub pending: Option<(Pid, u64)>,
}

/// Version 2's state, which version 1 can take back.
#[derive(Debug, Serialize, Deserialize)]
struct ServerStateV2 {
    answered: u64,
    verbose: bool,
    upgrade_at: Option<u64>,
    pending: Option<(Pid, u64)>,
    greeting: String,
}

enum Next {
    Ping(Pid, u64),
    Upgrade,
}

fn answer(p: &Process, state: &mut ServerState, from: Pid, n: u64) {
    p.send(from, &(n, std::borrow::Cow::Borrowed(VERSION)));
    state.answered += 1;
    if state.verbose {
        println!("server {} (version {VERSION}): got a ping with value {n}, sent the pong", p.self_pid());
    }
}

/// The server: answers `(from, n)` with `(n, "1")`.
pub async fn server(mut p: Process, mut state: ServerState) -> Result<(), ExitReason> {
    if let Some((from, n)) = state.pending.take() {
        answer(&p, &mut state, from, n);
    }
    loop {
        let next = p.receive().on(|(from, n): (Pid, u64)| Next::Ping(from, n)).on(|_: Upgrade| Next::Upgrade).await?;
        match next {
            Next::Upgrade => p.hot_call("server", &state).await,
            Next::Ping(from, n) if state.upgrade_at == Some(n) => {
                if state.verbose {
                    println!("server {} (version {VERSION}): UPGRADE at value {n}", p.self_pid());
                }
                state.upgrade_at = None;
                state.pending = Some((from, n));
                let me = p.self_pid();
                p.nsend("upgrader", &me);
                p.expect::<Upgrade>().await?;
                p.hot_call("server", &state).await
            }
            Next::Ping(from, n) => answer(&p, &mut state, from, n),
        }
    }
}

/// Takes version 2's state (or its own) as version 1's.
fn migrate(from: &str, old: OldState<'_>) -> MigrateResult {
    match from {
        "1" => Ok(old.bytes().to_vec()),
        "2" => {
            let old: ServerStateV2 = old.decode()?;
            molt_module::encode(&ServerState {
                answered: old.answered,
                verbose: old.verbose,
                upgrade_at: old.upgrade_at,
                pending: old.pending,
            })
        }
        other => Err(MigrateError::new(format!("pingpong 1 cannot migrate from version {other}"))),
    }
}

molt_module::module! {
    name: "pingpong",
    version: "1",
    entries: [server],
    migrate: migrate,
    migrates_from: ["2"],
}
