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

use molt_abi::{Down, Envelope, Exit, ExitReason, Message, MonitorRef, NodeDown, NodeDownReason, NodeId, Pid};
use serde::{Deserialize, Serialize};

use crate::node::NodeInner;
use crate::process::{ProcessCtx, Relations};

/// Everything one process can do to another besides sending it a message;
/// between nodes, signals travel as this type too (see `dist/frame.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Signal {
    /// `exit(pid, reason)`, or the exit of a linked process (`linked`).
    Exit { from: Pid, reason: ExitReason, linked: bool },
    /// `kill(pid)` by `from`: untrappable.
    Kill { from: Pid },
    /// The other half of `link(pid)`.
    Link { from: Pid },
    /// The other half of `unlink(pid)`.
    Unlink { from: Pid },
    /// `monitor(pid)`.
    Monitor { id: u64, watcher: Pid },
    /// `demonitor(ref)`. A monitor is known by its id and its watcher's
    /// node: ids are counted per node.
    Demonitor { id: u64, watcher: Pid },
    /// The monitored process `target` ended: the `Down` of monitor `id`,
    /// for its watcher.
    Down { id: u64, target: Pid, reason: ExitReason },
}

impl Signal {
    /// The process on whose behalf the signal is sent: a signal from
    /// another node must come from a process of that node, and keeps its
    /// order with that process's messages.
    pub(crate) fn sender(&self) -> Pid {
        match *self {
            Signal::Exit { from, .. } | Signal::Kill { from } | Signal::Link { from } | Signal::Unlink { from } => from,
            Signal::Monitor { watcher, .. } | Signal::Demonitor { watcher, .. } => watcher,
            Signal::Down { target, .. } => target,
        }
    }
}

impl NodeInner {
    /// Delivers `signal` to `to`.
    pub(crate) fn signal(&self, to: Pid, signal: Signal) {
        if to.node != self.id
            && let Some(dist) = self.dist.get()
        {
            return dist.signal(self, to, signal);
        }
        if let Signal::Down { id, target, reason } = signal {
            return self.down(to, id, target, reason);
        }
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
            Signal::Kill { .. } => ProcessCtx::die(&mut signals, ExitReason::Killed),
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
                signals.relations().monitored_by.insert((id, watcher.node), watcher);
                None
            }
            Signal::Demonitor { id, watcher } => {
                let monitored_by = &mut signals.relations().monitored_by;
                monitored_by.remove(&(id, watcher.node));
                crate::process::shrink_map_if_sparse(monitored_by);
                None
            }
            Signal::Down { .. } => None,
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
            Signal::Exit { .. }
            | Signal::Kill { .. }
            | Signal::Unlink { .. }
            | Signal::Demonitor { .. }
            | Signal::Down { .. } => {}
        }
    }

    /// The answers for a process on a node this one cannot reach: a link
    /// or a monitor fires at once with `reason` (Erlang's `noconnection`).
    pub(crate) fn signal_unreachable(&self, to: Pid, signal: Signal, reason: ExitReason) {
        match signal {
            Signal::Link { from } => self.signal(from, Signal::Exit { from: to, reason, linked: true }),
            Signal::Monitor { id, watcher } => self.down(watcher, id, to, reason),
            _ => {}
        }
    }

    /// The node `id` (called `name`) is down: every link to one of its
    /// processes fires, every monitor on one delivers its `Down`, both with
    /// a reason naming the node and why; its monitors on processes here
    /// are dropped.
    pub(crate) fn node_down(&self, id: NodeId, name: &str, why: NodeDownReason) {
        let node_down = NodeDown { node: name.to_owned(), reason: why.clone() };
        let reason = ExitReason::NoConnection { node: name.to_owned(), why };
        for ctx in self.table.all() {
            let (links, monitors) = {
                let mut signals = ctx.signals();
                if !signals.alive {
                    continue;
                }
                let Some(relations) = signals.relations_mut() else { continue };
                let before = relations.node_monitors.len();
                relations.node_monitors.retain(|node| *node != id);
                for _ in relations.node_monitors.len()..before {
                    ctx.mailbox.push(self.encode(&node_down));
                }
                relations.monitored_by.retain(|_, watcher| watcher.node != id);
                let links: Vec<Pid> = relations.links.iter().copied().filter(|pid| pid.node == id).collect();
                let monitors: Vec<(u64, Pid)> = relations
                    .monitoring
                    .iter()
                    .filter(|(_, target)| target.node == id)
                    .map(|(&i, &t)| (i, t))
                    .collect();
                (links, monitors)
            };
            for from in links {
                self.signal(ctx.pid, Signal::Exit { from, reason: reason.clone(), linked: true });
            }
            for (monitor, target) in monitors {
                self.down(ctx.pid, monitor, target, reason.clone());
            }
        }
    }

    /// `watcher` monitors `target` as monitor `id` from now on (a process
    /// spawned for it on another node, whose pid just came), if it is
    /// alive; whether it is.
    pub(crate) fn monitoring_now(&self, watcher: Pid, id: u64, target: Pid) -> bool {
        let Some(ctx) = self.process(watcher) else { return false };
        let mut signals = ctx.signals();
        if signals.alive {
            signals.relations().monitoring.insert(id, target);
        }
        signals.alive
    }

    /// Fires one of `ctx`'s monitors of the node `name`, if it still holds
    /// one: a node that could not be reached at all.
    pub(crate) fn node_unreachable(&self, ctx: &ProcessCtx, name: &str, why: NodeDownReason) {
        let id = NodeId::from_name(name);
        let mut signals = ctx.signals();
        let Some(relations) = signals.relations_mut() else { return };
        if let Some(at) = relations.node_monitors.iter().position(|node| *node == id) {
            relations.node_monitors.swap_remove(at);
            ctx.mailbox.push(self.encode(&NodeDown { node: name.to_owned(), reason: why }));
        }
    }

    /// Delivers the `Down` of monitor `id` (on `target`) to `watcher` if the
    /// watcher still holds it, taking it out of the watcher's monitors in
    /// the same step: a `demonitor` that returned first means no `Down`.
    fn down(&self, watcher: Pid, id: u64, target: Pid, reason: ExitReason) {
        if watcher.node != self.id {
            return self.signal(watcher, Signal::Down { id, target, reason });
        }
        let Some(ctx) = self.process(watcher) else { return };
        let mut signals = ctx.signals();
        if !signals.alive {
            return;
        }
        // Only the monitor `id` on `target`: a peer cannot fire or cancel a
        // monitor of another target by its id.
        let monitoring = &mut signals.relations().monitoring;
        if monitoring.get(&id) == Some(&target) {
            monitoring.remove(&id);
            let monitor = MonitorRef { id, target };
            ctx.mailbox.push(self.encode(&Down { monitor, pid: target, reason }));
        }
    }

    /// Queues an envelope in `to`'s mailbox; a no-op if `to` is not alive.
    /// `from` is the sending process, if one sends (see `Dist::send`).
    pub(crate) fn send(&self, from: Option<Pid>, to: Pid, envelope: Envelope) {
        if let Some(ctx) = self.table_entry(to) {
            ctx.mailbox.push(envelope);
        } else if to.node != self.id
            && let Some(dist) = self.dist.get()
        {
            dist.send(from, to, envelope);
        }
    }

    /// Sends a message made by the core itself.
    pub(crate) fn send_message<M: Message>(&self, to: Pid, message: &M) {
        self.send(None, to, self.encode(message));
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
        for ((id, _), watcher) in monitored_by {
            self.down(watcher, id, ctx.pid, reason.clone());
        }
        // Its own monitors go from their targets (Erlang: a dead watcher
        // leaves nothing behind).
        for (id, target) in monitoring {
            self.signal(target, Signal::Demonitor { id, watcher: ctx.pid });
        }
    }
}
