//! Signals between processes: one closed type, [`Signal`], handled by one
//! `match` in [`NodeInner::signal`] (Cloud Haskell's `ProcessSignal` and
//! node controller). Messages go to mailboxes; signals change a process's
//! links, monitors or life.
//!
//! Semantics are Erlang's:
//! - an exit signal with reason `normal` is ignored by a process that does
//!   not trap exits, unless it sent it to itself;
//! - any other exit signal ends a non-trapping process with the same reason;
//!   a trapping process gets an [`Exit`] message instead;
//! - `kill` cannot be trapped and ends the process with reason `killed`;
//! - an exit signal that comes from a link arrives only while the link
//!   exists, and removes it;
//! - linking to or monitoring a process that is not alive answers at once
//!   with reason `noproc`.

use molt_abi::{Down, Envelope, Exit, ExitReason, Message, MonitorRef, Pid};

use crate::node::NodeInner;
use crate::process::{ProcessCtx, Relations};

/// Everything one process can do to another besides sending it a message.
#[derive(Debug, Clone)]
pub(crate) enum Signal {
    /// `exit(pid, reason)`, or the exit of a linked process (`linked`).
    Exit { from: Pid, reason: ExitReason, linked: bool },
    /// `kill(pid)`: untrappable.
    Kill,
    /// The other half of `link(pid)`.
    Link { from: Pid },
    /// The other half of `unlink(pid)`.
    Unlink { from: Pid },
    /// `monitor(pid)`.
    Monitor { id: u64, watcher: Pid },
    /// `demonitor(ref)`.
    Demonitor { id: u64 },
}

impl NodeInner {
    /// Delivers `signal` to `to`.
    pub(crate) fn signal(&self, to: Pid, signal: Signal) {
        let Some(ctx) = self.process(to) else {
            return self.signal_dead(to, signal);
        };
        let mut signals = ctx.signals();
        if !signals.alive {
            drop(signals);
            return self.signal_dead(to, signal);
        }
        let abort = match signal {
            Signal::Exit { from, reason, linked } => {
                if linked && !signals.relations().links.remove(&from) {
                    return;
                }
                if signals.trap_exit {
                    // Queued under the lock that `unlink` takes: once it
                    // returned, no exit message of the link arrives.
                    return ctx.mailbox.push(self.encode(&Exit { from, reason }));
                }
                if reason.is_normal() && from != to {
                    return;
                }
                ProcessCtx::die(&mut signals, reason)
            }
            Signal::Kill => ProcessCtx::die(&mut signals, ExitReason::Killed),
            Signal::Link { from } => {
                signals.relations().links.insert(from);
                None
            }
            Signal::Unlink { from } => {
                let links = &mut signals.relations().links;
                links.remove(&from);
                crate::process::shrink_if_sparse(links);
                None
            }
            Signal::Monitor { id, watcher } => {
                signals.relations().monitored_by.insert(id, watcher);
                None
            }
            Signal::Demonitor { id } => {
                let monitored_by = &mut signals.relations().monitored_by;
                monitored_by.remove(&id);
                crate::process::shrink_map_if_sparse(monitored_by);
                None
            }
        };
        drop(signals);
        if let Some(abort) = abort {
            abort.abort();
        }
    }

    /// The answers a process that is not alive gives.
    fn signal_dead(&self, to: Pid, signal: Signal) {
        match signal {
            Signal::Link { from } => {
                self.signal(from, Signal::Exit { from: to, reason: ExitReason::Noproc, linked: true });
            }
            Signal::Monitor { id, watcher } => self.down(watcher, id, to, ExitReason::Noproc),
            Signal::Exit { .. } | Signal::Kill | Signal::Unlink { .. } | Signal::Demonitor { .. } => {}
        }
    }

    /// Delivers the `Down` of monitor `id` (on `target`) to `watcher` if the
    /// watcher still holds it, taking it out of the watcher's monitors in
    /// the same step: a `demonitor` that returned first means no `Down`.
    fn down(&self, watcher: Pid, id: u64, target: Pid, reason: ExitReason) {
        let Some(ctx) = self.process(watcher) else { return };
        let mut signals = ctx.signals();
        if signals.alive && signals.relations().monitoring.remove(&id).is_some() {
            let monitor = MonitorRef { id, target };
            ctx.mailbox.push(self.encode(&Down { monitor, pid: target, reason }));
        }
    }

    /// Queues an envelope in `to`'s mailbox; a no-op if `to` is not alive.
    pub(crate) fn send(&self, to: Pid, envelope: Envelope) {
        if let Some(ctx) = self.table_entry(to) {
            ctx.mailbox.push(envelope);
        }
    }

    /// Sends a message made by the core itself.
    pub(crate) fn send_message<M: Message>(&self, to: Pid, message: &M) {
        self.send(to, self.encode(message));
    }

    /// Encodes a message made by the core itself.
    fn encode<M: Message>(&self, message: &M) -> Envelope {
        Envelope::encode(message).expect("the core's own messages always encode")
    }

    /// Tells everyone who cares that `ctx` ended; called once per process,
    /// after its code is gone.
    pub(crate) fn announce_exit(&self, ctx: &ProcessCtx) {
        let (reason, Relations { links, monitored_by, monitoring, timers, name, .. }) = {
            let mut signals = ctx.signals();
            signals.alive = false;
            let reason = signals.exit_reason.take().map_or(ExitReason::Normal, |reason| *reason);
            (reason, signals.take_relations())
        };
        if let Some(name) = name {
            self.unregister_exited(&name, ctx.pid);
        }
        self.cancel_timers_of(ctx.pid.serial, timers);
        for link in links {
            self.signal(link, Signal::Exit { from: ctx.pid, reason: reason.clone(), linked: true });
        }
        for (id, watcher) in monitored_by {
            self.down(watcher, id, ctx.pid, reason.clone());
        }
        // Its own monitors go from their targets (Erlang: a dead watcher
        // leaves nothing behind).
        for (id, target) in monitoring {
            self.signal(target, Signal::Demonitor { id });
        }
    }
}
