//! Version 2 of the ping-pong server: the same protocol, a new state field,
//! and it announces itself.

use molt_module::{ExitReason, MigrateError, MigrateResult, OldState, Pid, Process, Upgrade};
use serde::{Deserialize, Serialize};

/// This version's declared version string.
pub const VERSION: &str = "2";

/// The server's state, as version 2 keeps it: version 1's plus a greeting.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServerState {
    /// Pings answered so far, by every version.
    pub answered: u64,
    /// Print a line per ping.
    pub verbose: bool,
    /// Ask for an upgrade on the ping with this value.
    pub upgrade_at: Option<u64>,
    /// A ping to answer first, handed over by the version before.
    pub pending: Option<(Pid, u64)>,
    /// New in version 2.
    pub greeting: String,
}

/// Version 1's state, which version 2 migrates from.
#[derive(Debug, Serialize, Deserialize)]
struct ServerStateV1 {
    answered: u64,
    verbose: bool,
    upgrade_at: Option<u64>,
    pending: Option<(Pid, u64)>,
}

enum Next {
    Ping(Pid, u64),
    Upgrade,
}

fn answer(p: &Process, state: &mut ServerState, from: Pid, n: u64) {
    p.send(from, &(n, std::borrow::Cow::Borrowed(VERSION)));
    state.answered += 1;
    if state.verbose {
        println!(
            "server {} (version {VERSION}, {}): got a ping with value {n}, sent the pong",
            p.self_pid(),
            state.greeting
        );
    }
}

/// The server: answers `(from, n)` with `(n, "2")`.
pub async fn server(mut p: Process, mut state: ServerState) -> Result<(), ExitReason> {
    if state.verbose && state.pending.is_some() {
        println!("server {} (version {VERSION}): {} — the new code is running", p.self_pid(), state.greeting);
    }
    if let Some((from, n)) = state.pending.take() {
        answer(&p, &mut state, from, n);
    }
    loop {
        let next = p.receive().on(|(from, n): (Pid, u64)| Next::Ping(from, n)).on(|_: Upgrade| Next::Upgrade).await?;
        match next {
            Next::Upgrade => p.hot_call("server", &state).await,
            Next::Ping(from, n) if state.upgrade_at == Some(n) => {
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

/// Takes version 1's state (or its own) as version 2's.
fn migrate(from: &str, old: OldState<'_>) -> MigrateResult {
    match from {
        "2" => Ok(old.bytes().to_vec()),
        "1" => {
            let old: ServerStateV1 = old.decode()?;
            molt_module::encode(&ServerState {
                answered: old.answered,
                verbose: old.verbose,
                upgrade_at: old.upgrade_at,
                pending: old.pending,
                greeting: format!("hello from version 2 after {} pongs", old.answered),
            })
        }
        other => Err(MigrateError::new(format!("pingpong 2 cannot migrate from version {other}"))),
    }
}

molt_module::module! {
    name: "pingpong",
    version: "2",
    entries: [server],
    migrate: migrate,
    migrates_from: ["1"],
}
