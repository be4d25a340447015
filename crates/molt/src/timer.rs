//! `send_after` timers: one [`TimerWheel`] per scheduler, and the task on
//! that scheduler that fires them.
//!
//! A pending timer costs one slot (its id, deadline, target and message),
//! one entry of a binary heap ordered by deadline, and one entry in its
//! target's list — no task, no hash map entry, about a hundred bytes in all
//! (Erlang's timer wheel: 281). A timer lives on the scheduler of the
//! process that armed it, so a busy scheduler delays only its own timers,
//! and its deadline is fixed when it is armed.
//!
//! Cancelling a timer empties its slot at once (the message is dropped
//! then), but leaves its heap entry behind, to be skipped when it comes up:
//! the slot is reused only after that, so a heap entry always names the
//! timer it was pushed for. When skipped entries outnumber live ones, the
//! heap is rebuilt and the slots' memory given back — a million timers
//! cancelled leave nothing behind.
//!
//! A target's list is lazy too: firing or cancelling a timer only counts it
//! gone there (finding it would cost a search); once half the list is gone
//! it is swept of slots no longer aimed at its process. When the process
//! ends, every slot on its list still aimed at it is cancelled.

use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use molt_abi::{Envelope, Pid, TimerRef};
use rustc_hash::FxHashMap;
use tokio::sync::Notify;

use crate::node::NodeInner;
use crate::process::ProcessCtx;

/// How many timers the firing task delivers before it lets the processes of
/// its scheduler run: a million timers due at once do not stall them.
const FIRE_BATCH: usize = 256;

/// Skipped heap entries tolerated beyond the live ones before a rebuild.
const REBUILD_SLACK: usize = 64;

/// Whom a `send_after` is for.
pub(crate) enum TimerTarget {
    /// A process of this node: the timer is cancelled if it ends first. A
    /// process of another node: the message goes there when the timer
    /// fires (as Cloud Haskell's `sendAfter`; Erlang refuses a remote pid).
    Pid(Pid),
    /// Whoever has the name when the timer fires.
    Name(Box<str>),
}

/// A timer's place in a target's list: its scheduler and slot. The slot's
/// own target says whether it is still aimed at the list's process.
pub(crate) type TimerPlace = (u32, u32);

/// The timers armed on one scheduler.
pub(crate) struct TimerWheel {
    state: Mutex<Slab>,
    /// Wakes the firing task when a timer earlier than the one it sleeps
    /// for is armed.
    wake: Notify,
}

/// Slots come in chunks of this many, allocated when needed and freed when
/// none of their slots is in use: a few long-lived timers among a million
/// cancelled ones keep a few chunks, not the million slots.
const CHUNK: u32 = 512;

/// No slot (the end of a chunk's free list).
const NONE: u32 = u32::MAX;

struct Slab {
    /// Slot `n` is `chunks[n / CHUNK].slots[n % CHUNK]`; a freed chunk is
    /// `None`.
    chunks: Vec<Option<Box<Chunk>>>,
    /// The chunks with a free slot (or freed), each once: new timers go to
    /// the last.
    with_room: Vec<u32>,
    /// The one chunk kept though none of its slots is used, so a timer
    /// armed and fired over and over does not allocate a chunk each time.
    spare: Option<u32>,
    heap: BinaryHeap<Due>,
    /// The targets of the pending timers aimed at a name or at a process
    /// of another node, by slot.
    names: FxHashMap<u32, TimerTarget>,
    pending: usize,
    /// Ties between equal deadlines fire in the order they were armed.
    sequence: u32,
    /// The deadline the firing task sleeps until (`u64::MAX`: none).
    sleeping_until: u64,
}

struct Chunk {
    slots: Box<[Slot]>,
    /// The first free slot (an index into `slots`); each free slot holds
    /// the next in its `deadline`.
    free: u32,
    /// Slots pending or waiting for their heap entry to go.
    used: u32,
    /// Whether it is in `with_room`.
    listed: bool,
}

/// One timer. It is pending while `id` is not 0; emptied, it stays
/// reserved until its heap entry is gone, so a heap entry always names the
/// timer it was pushed for.
struct Slot {
    id: u64,
    /// Nanoseconds since the node started (free: the next free slot).
    deadline: u64,
    /// The serial of the target process; 0 for a timer aimed at a name.
    target: u64,
    envelope: Option<Envelope>,
}
/// A heap entry; the heap is a max-heap, so the order is reversed: the
/// earliest deadline, then the earliest armed, is the greatest.
#[derive(PartialEq, Eq)]
struct Due {
    deadline: u64,
    sequence: u32,
    slot: u32,
}

impl Ord for Due {
    fn cmp(&self, other: &Due) -> std::cmp::Ordering {
        // Sequences wrap: the one armed earlier is behind by less than half
        // the range.
        let armed_later = self.sequence.wrapping_sub(other.sequence) as i32;
        other.deadline.cmp(&self.deadline).then_with(|| 0.cmp(&armed_later)).then_with(|| other.slot.cmp(&self.slot))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Due) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A timer that fired, to be delivered outside the wheel's lock.
struct Fired {
    target: u64,
    name: Option<TimerTarget>,
    envelope: Envelope,
}

impl TimerWheel {
    pub(crate) fn new() -> TimerWheel {
        TimerWheel { state: Mutex::new(Slab::new()), wake: Notify::new() }
    }

    fn lock(&self) -> MutexGuard<'_, Slab> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Arms a timer: `id` due at `deadline` for the process with serial
    /// `target` (0 with a `name`). Returns its slot.
    pub(crate) fn arm(
        &self,
        id: u64,
        deadline: u64,
        target: u64,
        name: Option<TimerTarget>,
        envelope: Envelope,
    ) -> u32 {
        let mut slab = self.lock();
        let slot = slab.reserve();
        *slab.slot_mut(slot) = Slot { id, deadline, target, envelope: Some(envelope) };
        if let Some(name) = name {
            slab.names.insert(slot, name);
        }
        slab.pending += 1;
        let sequence = slab.sequence;
        slab.sequence = sequence.wrapping_add(1);
        slab.heap.push(Due { deadline, sequence, slot });
        let wake = deadline < slab.sleeping_until;
        if wake {
            slab.sleeping_until = deadline;
        }
        drop(slab);
        if wake {
            self.wake.notify_one();
        }
        slot
    }

    /// Cancels the timer `id` in `slot`: its deadline and target, if it was
    /// pending.
    pub(crate) fn cancel(&self, slot: u32, id: u64) -> Option<(u64, u64)> {
        let mut slab = self.lock();
        if id == 0 || slab.slot(slot).is_none_or(|s| s.id != id) {
            return None;
        }
        let target = slab.slot(slot).map_or(0, |s| s.target);
        let (deadline, envelope) = slab.empty(slot);
        slab.rebuild_if_sparse();
        drop(slab);
        drop(envelope);
        Some((deadline, target))
    }

    /// Cancels the timers in `slots` still aimed at the process with serial
    /// `target` (it ended).
    fn cancel_aimed_at(&self, target: u64, slots: impl Iterator<Item = u32>) {
        let mut dropped = Vec::new();
        let mut slab = self.lock();
        for slot in slots {
            if slab.slot(slot).is_some_and(|s| s.id != 0 && s.target == target) {
                dropped.push(slab.empty(slot).1);
            }
        }
        slab.rebuild_if_sparse();
        drop(slab);
        drop(dropped);
    }

    /// Keeps the slots in `slots` still aimed at `target`.
    fn retain_aimed_at(&self, target: u64, slots: &mut Vec<u32>) {
        let slab = self.lock();
        slots.retain(|slot| slab.slot(*slot).is_some_and(|s| s.id != 0 && s.target == target));
    }

    pub(crate) fn pending(&self) -> usize {
        self.lock().pending
    }

    /// Drops every timer (the node stops).
    pub(crate) fn clear(&self) {
        let old = std::mem::replace(&mut *self.lock(), Slab::new());
        drop(old);
    }

    /// Takes the timers due at `now` (at most [`FIRE_BATCH`]) into `fired`;
    /// returns the next deadline, if any, and records that the firing task
    /// sleeps until then.
    fn take_due(&self, now: u64, fired: &mut Vec<Fired>) -> Option<u64> {
        let mut slab = self.lock();
        while fired.len() < FIRE_BATCH {
            let Some(due) = slab.heap.peek() else { break };
            if due.deadline > now {
                break;
            }
            let slot = due.slot;
            slab.heap.pop();
            let target = slab.slot(slot).map_or(NO_TARGET, |s| if s.id == 0 { NO_TARGET } else { s.target });
            if target != NO_TARGET {
                let name = slab.names.remove(&slot);
                if let (_, Some(envelope)) = slab.empty(slot) {
                    fired.push(Fired { target, name, envelope });
                }
            }
            // Its heap entry is gone: the slot may be reused.
            slab.release(slot);
        }
        if slab.pending == 0 && slab.heap.is_empty() {
            slab.give_memory_back();
        } else {
            if let Some(room) = crate::process::sparse(slab.heap.len(), slab.heap.capacity()) {
                slab.heap.shrink_to(room);
            }
        }
        let next = slab.heap.peek().map(|due| due.deadline);
        slab.sleeping_until = next.unwrap_or(u64::MAX);
        next
    }
}

/// Marks, in `take_due`, a slot that was emptied (no serial is this).
const NO_TARGET: u64 = u64::MAX;

impl Slab {
    fn new() -> Slab {
        Slab {
            chunks: Vec::new(),
            with_room: Vec::new(),
            spare: None,
            heap: BinaryHeap::new(),
            names: FxHashMap::default(),
            pending: 0,
            sequence: 0,
            sleeping_until: u64::MAX,
        }
    }

    fn slot(&self, slot: u32) -> Option<&Slot> {
        let chunk = self.chunks.get((slot / CHUNK) as usize)?.as_ref()?;
        Some(&chunk.slots[(slot % CHUNK) as usize])
    }

    /// A reserved slot (the caller holds it, so its chunk exists).
    fn slot_mut(&mut self, slot: u32) -> &mut Slot {
        let chunk = self.chunks[(slot / CHUNK) as usize].as_mut().expect("a reserved slot's chunk exists");
        &mut chunk.slots[(slot % CHUNK) as usize]
    }

    /// Takes a free slot, allocating a chunk if none has room.
    fn reserve(&mut self) -> u32 {
        let index = match self.with_room.last() {
            Some(index) => *index,
            None => {
                // Slot numbers stay below `NONE`.
                assert!(self.chunks.len() < (NONE / CHUNK) as usize, "more than four billion timers on one scheduler");
                let index = self.chunks.len() as u32;
                self.chunks.push(None);
                self.with_room.push(index);
                index
            }
        };
        let chunk = self.chunks[index as usize].get_or_insert_with(|| {
            let slots = (0..CHUNK).map(|n| Slot { id: 0, deadline: u64::from(n + 1), target: 0, envelope: None });
            let mut slots: Box<[Slot]> = slots.collect();
            slots[(CHUNK - 1) as usize].deadline = u64::from(NONE);
            Box::new(Chunk { slots, free: 0, used: 0, listed: true })
        });
        let within = chunk.free;
        chunk.free = chunk.slots[within as usize].deadline as u32;
        chunk.used += 1;
        if chunk.free == NONE {
            chunk.listed = false;
            self.with_room.pop();
        }
        if self.spare == Some(index) {
            self.spare = None;
        }
        index * CHUNK + within
    }

    /// Returns a slot whose heap entry is gone to its chunk's free list;
    /// frees the chunk when none of its slots is used (but one, the spare).
    fn release(&mut self, slot: u32) {
        let index = slot / CHUNK;
        let Some(chunk) = self.chunks[index as usize].as_mut() else { return };
        let within = slot % CHUNK;
        chunk.slots[within as usize].deadline = u64::from(chunk.free);
        chunk.free = within;
        chunk.used -= 1;
        if !chunk.listed {
            chunk.listed = true;
            self.with_room.push(index);
        }
        if chunk.used == 0 {
            let have_a_spare =
                self.spare.is_some_and(|spare| self.chunks[spare as usize].as_ref().is_some_and(|c| c.used == 0));
            if have_a_spare {
                // Freed, it stays listed: a timer that lands on it
                // allocates it anew.
                self.chunks[index as usize] = None;
            } else {
                self.spare = Some(index);
            }
        }
    }

    /// Empties a pending slot; it stays reserved until its heap entry comes
    /// up or the heap is rebuilt.
    fn empty(&mut self, slot: u32) -> (u64, Option<Envelope>) {
        let entry = self.slot_mut(slot);
        let aimed_at_a_name = entry.target == 0;
        entry.id = 0;
        entry.target = 0;
        let deadline = entry.deadline;
        let envelope = entry.envelope.take();
        if aimed_at_a_name {
            self.names.remove(&slot);
            crate::process::shrink_map_if_sparse(&mut self.names);
        }
        self.pending -= 1;
        (deadline, envelope)
    }

    /// Rebuilds the heap without the entries of emptied slots once those
    /// outnumber the pending ones, and releases those slots.
    fn rebuild_if_sparse(&mut self) {
        if self.heap.len() <= 2 * self.pending + REBUILD_SLACK && self.pending > 0 {
            return;
        }
        let mut heap = std::mem::take(&mut self.heap).into_vec();
        let mut emptied = Vec::new();
        heap.retain(|due| {
            let pending = self.slot(due.slot).is_some_and(|s| s.id != 0);
            if !pending {
                emptied.push(due.slot);
            }
            pending
        });
        shrink_vec(&mut heap);
        self.heap = BinaryHeap::from(heap);
        for slot in emptied {
            self.release(slot);
        }
        if self.pending == 0 && self.heap.is_empty() {
            self.give_memory_back();
        }
    }

    /// With nothing pending and no heap entry left (every slot free), frees
    /// every chunk and list but one chunk, kept as the spare: one timeout at
    /// a time, armed and cancelled over and over, allocates nothing.
    fn give_memory_back(&mut self) {
        let small = self.chunks.len() <= 1
            && self.heap.capacity() <= REBUILD_SLACK
            && self.names.capacity() <= REBUILD_SLACK
            && self.with_room.capacity() <= 1;
        if small {
            return;
        }
        let kept = self.chunks.iter_mut().find_map(Option::take);
        let (sleeping_until, sequence) = (self.sleeping_until, self.sequence);
        *self = Slab { sleeping_until, sequence, ..Slab::new() };
        if let Some(mut chunk) = kept {
            chunk.listed = true;
            self.chunks.push(Some(chunk));
            self.with_room.push(0);
            self.spare = Some(0);
        }
    }
}

/// Gives a vector's memory back once it falls to a quarter of its capacity.
fn shrink_vec<T>(vec: &mut Vec<T>) {
    if let Some(room) = crate::process::sparse(vec.len(), vec.capacity()) {
        vec.shrink_to(room);
    }
}

/// Fires the timers of scheduler `scheduler` of `node`; runs on that
/// scheduler for the node's life.
pub(crate) async fn fire_timers(node: Weak<NodeInner>, wheel: Arc<TimerWheel>) {
    let mut fired = Vec::with_capacity(FIRE_BATCH);
    loop {
        let Some(inner) = node.upgrade() else { return };
        let now = inner.now();
        let next = wheel.take_due(now, &mut fired);
        for Fired { target, name, envelope } in fired.drain(..) {
            match name {
                Some(TimerTarget::Name(name)) => {
                    if let Some(pid) = inner.whereis(&name) {
                        inner.send(None, pid, envelope);
                    }
                }
                Some(TimerTarget::Pid(remote)) => inner.send(None, remote, envelope),
                None => {
                    if let Some(ctx) = inner.process(inner.local_pid(target)) {
                        ctx.mailbox.push(envelope);
                        inner.timer_gone(&ctx);
                    }
                }
            }
        }
        let wake_at = next.map(|deadline| inner.instant_at(deadline));
        drop(inner);
        match (next, wake_at) {
            (Some(deadline), _) if deadline <= now => crate::executor::yield_now().await,
            (_, Some(at)) => {
                // Whichever comes first: the deadline, or an earlier timer.
                let mut sleep = std::pin::pin!(crate::executor::sleep_until(at));
                let mut notified = std::pin::pin!(wheel.wake.notified());
                std::future::poll_fn(|cx| {
                    if notified.as_mut().poll(cx).is_ready() || sleep.as_mut().poll(cx).is_ready() {
                        std::task::Poll::Ready(())
                    } else {
                        std::task::Poll::Pending
                    }
                })
                .await;
            }
            _ => wheel.wake.notified().await,
        }
    }
}

impl NodeInner {
    /// Delivers `envelope` to `to` after `delay`, counted from now, from the
    /// timer wheel of `scheduler` (the caller's). A timer aimed at a process
    /// that is not alive, or that ends before it fires, is cancelled
    /// (Erlang's `send_after` to a pid).
    pub(crate) fn send_after(&self, delay: Duration, to: TimerTarget, envelope: Envelope, scheduler: u32) -> TimerRef {
        let scheduler = scheduler % self.timers.len() as u32;
        let wheel = &self.timers[scheduler as usize];
        let deadline = self.now().saturating_add(u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX));
        let id = new_timer_id();
        let (target, name) = match to {
            TimerTarget::Pid(pid) if self.is_local(pid) => (Some(pid), None),
            TimerTarget::Pid(pid) if pid.node != self.id => (None, Some(TimerTarget::Pid(pid))),
            // Of an earlier life of this node: it cannot be alive.
            TimerTarget::Pid(_) => return never_armed(id),
            name @ TimerTarget::Name(_) => (None, Some(name)),
        };
        let slot = wheel.arm(id, deadline, target.map_or(0, |pid| pid.serial), name, envelope);
        let timer = TimerRef { id, slot, scheduler };
        if let Some(pid) = target {
            // Listed on its target under the lock that ends it: a target
            // that ends from now on finds the timer in its list.
            let listed = self.process(pid).is_some_and(|ctx| {
                let mut signals = ctx.signals();
                signals.alive && {
                    signals.relations().timers.push((scheduler, slot));
                    true
                }
            });
            if !listed {
                wheel.cancel(slot, id);
            }
        }
        timer
    }

    /// Counts a timer of `ctx` gone (fired or cancelled), sweeping its list
    /// once half of it is.
    fn timer_gone(&self, ctx: &ProcessCtx) {
        let mut signals = ctx.signals();
        if !signals.alive {
            return;
        }
        let relations = signals.relations();
        relations.timers_gone += 1;
        if relations.timers_gone * 2 < relations.timers.len() {
            return;
        }
        relations.timers_gone = 0;
        let list = &mut relations.timers;
        list.sort_unstable();
        list.dedup();
        let mut kept = Vec::new();
        for (scheduler, slots) in by_scheduler(list) {
            let mut slots: Vec<u32> = slots.collect();
            self.timers[scheduler as usize].retain_aimed_at(ctx.pid.serial, &mut slots);
            kept.extend(slots.into_iter().map(|slot| (scheduler, slot)));
        }
        *list = kept;
    }

    /// Cancels a timer: the time it had left, or `None` if it had fired or
    /// was cancelled (Erlang's `cancel_timer`).
    pub(crate) fn cancel_timer(&self, timer: TimerRef) -> Option<Duration> {
        let (deadline, target) = self.timers.get(timer.scheduler as usize)?.cancel(timer.slot, timer.id)?;
        if let Some(ctx) = self.process(self.local_pid(target)) {
            self.timer_gone(&ctx);
        }
        Some(Duration::from_nanos(deadline.saturating_sub(self.now())))
    }

    /// Cancels the timers aimed at the process with serial `target`, which
    /// ended.
    pub(crate) fn cancel_timers_of(&self, target: u64, mut list: Vec<TimerPlace>) {
        list.sort_unstable();
        list.dedup();
        for (scheduler, slots) in by_scheduler(&list) {
            self.timers[scheduler as usize].cancel_aimed_at(target, slots);
        }
    }

    /// How many timers are pending on all schedulers.
    pub(crate) fn pending_timers(&self) -> usize {
        self.timers.iter().map(|wheel| wheel.pending()).sum()
    }

    /// The pid of the local process with `serial`.
    pub(crate) fn local_pid(&self, serial: u64) -> Pid {
        Pid { node: self.id, creation: self.creation, serial }
    }
}

/// A timer id unique in the OS process, not just the node: a `TimerRef` of
/// another node running in the same OS process cancels nothing here.
pub(crate) fn new_timer_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A timer that was never armed (its target could not be alive, or its
/// setter had ended itself): cancelling it says so.
pub(crate) fn never_armed(id: u64) -> TimerRef {
    TimerRef { id, slot: u32::MAX, scheduler: u32::MAX }
}

/// A sorted list's places, one run per scheduler.
fn by_scheduler(list: &[TimerPlace]) -> impl Iterator<Item = (u32, impl Iterator<Item = u32> + '_)> + '_ {
    list.chunk_by(|a, b| a.0 == b.0).map(|run| (run[0].0, run.iter().map(|place| place.1)))
}
