//! The seed's ping-pong server as a molt module, in two versions: `v1.rs`
//! (built by default) and `v2.rs` (built with `--features v2`). Both read
//! the same messages — a ping is `(client pid, n)`, a pong `(n, version)` —
//! and both can migrate the other's state, so a running server can move
//! 1 → 2 → 1 → … without losing a ping.
//!
//! The server takes new code at a safe point of its choosing, as the seed
//! proposes: between two pings, when an [`Upgrade`](molt_module::Upgrade)
//! message is at the head of what it receives; or, when its start state says
//! `upgrade_at: Some(n)`, on the ping with value `n` it asks the process
//! registered as `"upgrader"` for new code and waits for the `Upgrade`.

#[cfg(not(feature = "v2"))]
mod v1;
#[cfg(not(feature = "v2"))]
pub use v1::*;

#[cfg(feature = "v2")]
mod v2;
#[cfg(feature = "v2")]
pub use v2::*;
