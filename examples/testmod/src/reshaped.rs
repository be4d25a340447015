//! With the `reshaped` feature: a version 2 whose `echo` keeps a state of
//! another shape than version 1's `Counter`, and that declares no `migrate`
//! (so the state passes through unchanged and does not decode): a hot call
//! into it must go back to version 1 with the state intact.

use molt_module::{ExitReason, Pid, Process};
use serde::{Deserialize, Serialize};

/// A state no `Counter`'s bytes decode as.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reshaped {
    /// Whom to answer first.
    pub first: Pid,
    /// Whom to answer next.
    pub second: Pid,
    /// Pings answered.
    pub count: u64,
}

/// Answers pings, as version 1's `echo` does, from its own state.
pub async fn echo(mut p: Process, mut state: Reshaped) -> Result<(), ExitReason> {
    loop {
        let (from, n): (Pid, u64) = p.expect().await?;
        p.send(from, &(n, "2-reshaped".to_owned(), state.count));
        state.count += 1;
    }
}
