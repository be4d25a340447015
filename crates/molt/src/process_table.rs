//! The process table: every live process of a node, found by its pid's
//! serial without taking a lock (Erlang's process table).
//!
//! A serial names a slot (its low 32 bits) and how many processes used the
//! slot before (its high 32 bits), so a pid whose process ended never finds
//! the slot's next process: it finds another serial there and is told the
//! process is gone. Slots are reused, so the table is as large as the most
//! processes alive at once, not as all that ever ran: oldest freed first
//! (the count of a slot grows as slowly as it can), and a slot whose count
//! is spent is never used again, so no serial comes back.
//!
//! Every send to a process the sender has not just sent to looks it up here,
//! from every scheduler at once. A lookup writes no memory another thread
//! reads (arc-swap protects the loaded pointer with an entry in the reading
//! thread's own list), where a lock, even a read lock, would make the
//! schedulers pass its cache line to each other on every send.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::{ArcSwapOption, Guard};

use crate::process::ProcessCtx;

/// Slots in the first segment; each next segment doubles the table.
const FIRST_SEGMENT_BITS: u32 = 12;
/// Segments enough for every 32-bit slot index.
const SEGMENTS: usize = (33 - FIRST_SEGMENT_BITS) as usize;
/// A serial's slot index.
const INDEX_MASK: u64 = u32::MAX as u64;
/// What tells one use of a slot from the next.
const NEXT_USE: u64 = 1 << 32;

pub(crate) struct ProcessTable {
    segments: [OnceLock<Box<[ArcSwapOption<ProcessCtx>]>>; SEGMENTS],
    /// The first slot index never used. Slot 0 is never used, so no pid has
    /// serial 0 (timers use it for "aimed at a name").
    fresh: AtomicU32,
    /// Serials of emptied slots, each already counting its next use,
    /// oldest first.
    free: Mutex<VecDeque<u64>>,
    live: AtomicUsize,
}

/// A live process found in the table, held while it is used.
pub(crate) struct Found(Guard<Option<Arc<ProcessCtx>>>);

impl Found {
    /// The process, as a reference of its own.
    pub(crate) fn into_owned(self) -> Arc<ProcessCtx> {
        Guard::into_inner(self.0).expect("a Found holds a process")
    }
}

impl std::ops::Deref for Found {
    type Target = ProcessCtx;
    fn deref(&self) -> &ProcessCtx {
        self.0.as_deref().expect("a Found holds a process")
    }
}

impl ProcessTable {
    pub(crate) fn new() -> ProcessTable {
        ProcessTable {
            segments: std::array::from_fn(|_| OnceLock::new()),
            fresh: AtomicU32::new(1),
            free: Mutex::new(VecDeque::new()),
            live: AtomicUsize::new(0),
        }
    }

    /// A serial for a new process, whose slot stays empty until
    /// [`insert`](Self::insert) (lookups find nothing) or goes back with
    /// [`release`](Self::release).
    pub(crate) fn reserve(&self) -> u64 {
        if let Some(serial) = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop_front() {
            return serial;
        }
        let index = self
            .fresh
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |index| index.checked_add(1))
            .unwrap_or_else(|_| panic!("a node cannot hold more than {} processes at once", u32::MAX - 1));
        let (segment, _) = Self::place(u64::from(index));
        self.segments[segment].get_or_init(|| {
            (0..1usize << (segment as u32 + FIRST_SEGMENT_BITS)).map(|_| ArcSwapOption::empty()).collect()
        });
        u64::from(index)
    }

    /// Makes `ctx` (with a reserved serial) visible to lookups.
    pub(crate) fn insert(&self, ctx: Arc<ProcessCtx>) {
        let serial = ctx.pid.serial;
        self.live.fetch_add(1, Ordering::Relaxed);
        self.slot(serial).expect("a reserved serial's segment exists").store(Some(ctx));
    }

    /// Takes process `serial` out of the table; its slot is free for another.
    /// A serial not in the table (already removed) changes nothing.
    pub(crate) fn remove(&self, serial: u64) {
        let (Some(slot), Some(found)) = (self.slot(serial), self.get(serial)) else { return };
        // Exactly the process found: if another removal won, it released.
        let removed = slot.compare_and_swap(&found.0, None::<Arc<ProcessCtx>>);
        if removed.as_ref().is_some_and(|ctx| ctx.pid.serial == serial) {
            self.live.fetch_sub(1, Ordering::Relaxed);
            self.release(serial);
        }
    }

    /// Gives back a reserved serial whose process never went in the table;
    /// its slot goes to the back of the free ones, unless its count of uses
    /// is spent.
    pub(crate) fn release(&self, serial: u64) {
        if let Some(next) = serial.checked_add(NEXT_USE) {
            self.free.lock().unwrap_or_else(|e| e.into_inner()).push_back(next);
        }
    }

    /// The live process `serial`, if any.
    pub(crate) fn get(&self, serial: u64) -> Option<Found> {
        let found = self.slot(serial)?.load();
        match &*found {
            Some(ctx) if ctx.pid.serial == serial => Some(Found(found)),
            _ => None,
        }
    }

    /// How many processes are alive.
    pub(crate) fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every live process, in slot order.
    pub(crate) fn all(&self) -> Vec<Arc<ProcessCtx>> {
        self.segments
            .iter()
            .map_while(OnceLock::get)
            .flat_map(|segment| segment.iter().filter_map(ArcSwapOption::load_full))
            .collect()
    }

    fn slot(&self, serial: u64) -> Option<&ArcSwapOption<ProcessCtx>> {
        let (segment, offset) = Self::place(serial & INDEX_MASK);
        self.segments[segment].get().map(|slots| &slots[offset])
    }

    /// The segment and offset of slot `index`: segment k holds the
    /// 2^(k + FIRST_SEGMENT_BITS) slots from 2^(k + FIRST_SEGMENT_BITS) -
    /// 2^FIRST_SEGMENT_BITS on.
    fn place(index: u64) -> (usize, usize) {
        let shifted = index + (1 << FIRST_SEGMENT_BITS);
        let top = 63 - shifted.leading_zeros();
        ((top - FIRST_SEGMENT_BITS) as usize, (shifted - (1 << top)) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_oldest_freed_first_under_a_new_serial() {
        let table = ProcessTable::new();
        let (a, b, c) = (table.reserve(), table.reserve(), table.reserve());
        assert_eq!((a, b, c), (1, 2, 3), "fresh slots in order, slot 0 never used");
        table.release(c);
        table.release(a);
        assert_eq!(table.reserve(), NEXT_USE + 3);
        assert_eq!(table.reserve(), NEXT_USE + 1);
        assert_eq!(table.reserve(), 4);
    }

    #[test]
    fn a_slot_whose_uses_are_spent_is_never_used_again() {
        let table = ProcessTable::new();
        let first = table.reserve();
        table.release(first | (u64::from(u32::MAX) << 32));
        assert_eq!(table.reserve(), 2, "the spent slot came back, and with it an old serial");
        assert!(table.get(first).is_none());
    }

    #[test]
    fn segments_double_and_cover_every_index() {
        assert_eq!(ProcessTable::place(0), (0, 0));
        assert_eq!(ProcessTable::place(4095), (0, 4095));
        assert_eq!(ProcessTable::place(4096), (1, 0));
        assert_eq!(ProcessTable::place(3 * 4096 - 1), (1, 8191));
        assert_eq!(ProcessTable::place(3 * 4096), (2, 0));
        assert_eq!(ProcessTable::place(u64::from(u32::MAX)), (SEGMENTS - 1, 4095));
    }
}
