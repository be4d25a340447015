//! With the `reshaped` feature: a version 2 whose `echo` keeps a state of
//! another shape than version 1's `Counter`, and whose `Note` has another
//! shape too. Without a `migrate` that declares it converts version 1's
//! state, its load is refused; `reshaped-pass-through` declares one that
//! passes the bytes on unchanged (a hot call into it must go back to
//! version 1 with the state intact); `reshaped-converts` converts.

use molt_module::{ExitReason, Message, Pid, Process};
use serde::{Deserialize, Serialize};

/// A state no `Counter`'s bytes decode as.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reshaped {
    /// Pings answered, as a signed number.
    pub count: i64,
    /// Where the state came from.
    pub label: String,
}

/// Version 2's `Note`: a trailing field under the same name.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "testmod.Note")]
pub struct Note {
    /// What it says.
    pub text: String,
    /// New in version 2.
    pub urgent: bool,
}

/// Version 1's `Note`, which senders not yet upgraded still send.
#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "testmod.Note")]
pub struct OldNote {
    /// What it says.
    pub text: String,
}

enum Next {
    Ping(Pid, u64),
    Note(Pid, String),
}

/// Answers pings, as version 1's `echo` does, from its own state; takes a
/// `(from, Note)` in either shape, and answers with what it read.
pub async fn echo(mut p: Process, mut state: Reshaped) -> Result<(), ExitReason> {
    loop {
        let next = p
            .receive()
            .on(|(from, n): (Pid, u64)| Next::Ping(from, n))
            .on(|(from, note): (Pid, OldNote)| Next::Note(from, format!("old note {:?}", note.text)))
            .on(|(from, note): (Pid, Note)| {
                Next::Note(from, format!("new note {:?}, urgent {}", note.text, note.urgent))
            })
            .await?;
        match next {
            Next::Ping(from, n) => {
                p.send(from, &(n, format!("2-reshaped {}", state.label), state.count as u64));
                state.count += 1;
            }
            Next::Note(from, read) => p.send(from, &read),
        }
    }
}

/// A `migrate` that says it converts version 1's state and does not.
#[cfg(feature = "reshaped-pass-through")]
pub(crate) fn pass_through(_from: &str, old: molt_module::OldState<'_>) -> molt_module::MigrateResult {
    Ok(old.bytes().to_vec())
}

/// Converts version 1's `Counter`.
#[cfg(feature = "reshaped-converts")]
pub(crate) fn convert(_from: &str, old: molt_module::OldState<'_>) -> molt_module::MigrateResult {
    let old: crate::Counter = old.decode()?;
    molt_module::encode(&Reshaped { count: old.count as i64, label: "converted".into() })
}
