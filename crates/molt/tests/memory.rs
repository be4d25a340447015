//! Memory that must not outlive its use (issue 12), measured with a
//! counting allocator: the burst of a mailbox in which one message stays,
//! the unread messages of a process that ended while a sender still caches
//! it, timers, and the copies a big message costs.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use molt::{Down, Message, Pid, ReceiveError};
use serde::{Deserialize, Serialize};
use support::{node, run};

/// Counts the bytes live on the heap.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
/// The most `LIVE` was since it was last reset.
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(by: isize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counter is only arithmetic on the sizes it was given.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as isize);
        // SAFETY: forwarded from the caller.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded from the caller.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size as isize - layout.size() as isize);
        // SAFETY: forwarded from the caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// What is live now, and the peak from now on.
fn live_and_reset_peak() -> isize {
    let now = live();
    PEAK.store(now, Ordering::Relaxed);
    now
}

const MIB: isize = 1 << 20;

/// Both scenarios in one test: the counter is process-wide, so they must
/// not run at the same time as anything else.
#[test]
fn memory_of_a_burst_and_of_a_dead_process_is_given_back() {
    let node = node("memory");
    // A burst of a million messages drained while one unmatched message
    // stays queued: the queue's memory goes back.
    const BURST: u64 = 1_000_000;
    let (before, during, after) = run(&node, |mut p| async move {
        let me = p.self_pid();
        p.send(me, &"stays".to_owned());
        let before = live();
        for n in 0..BURST {
            p.send(me, &n);
        }
        let during = live();
        for _ in 0..BURST {
            p.expect::<u64>().await?;
        }
        Ok::<_, ReceiveError>((before, during, live()))
    })
    .unwrap()
    .unwrap();
    assert!(during - before > 40 * MIB, "the burst was queued: {} MiB", (during - before) / MIB);
    assert!(after - before < 2 * MIB, "after the burst {} MiB stayed", (after - before) / MIB);

    // A process that never reads gets half a million messages from a
    // sender that caches it, then is killed: its queue is freed though the
    // sender still holds it.
    const UNREAD: u64 = 500_000;
    let (queued, freed) = run(&node, |mut p| async move {
        let before = live();
        let (sink, watch) = p.spawn_monitor(|mut p| async move { p.expect::<()>().await.map(drop) });
        for n in 0..UNREAD {
            p.send(sink, &n);
        }
        let queued = live() - before;
        p.kill(sink);
        p.receive().on_if(move |d: &Down| d.monitor == watch, drop).await?;
        // The sender's cache still names the sink: nothing else was sent.
        p.sleep(Duration::ZERO).await;
        Ok::<_, ReceiveError>((queued, live() - before))
    })
    .unwrap()
    .unwrap();
    assert!(queued > 20 * MIB, "the messages were queued: {} MiB", queued / MIB);
    assert!(freed < 2 * MIB, "{} MiB of a dead process's mailbox stayed", freed / MIB);

    // Hour-long timers, each with a 64 KiB message, armed at processes
    // ending on the other scheduler at that very moment: whichever way each
    // race goes, nothing of them stays (no pending entry, no task holding
    // its message).
    const ROUNDS: u32 = 2_000;
    let spawner = node.spawn(|mut p| async move {
        loop {
            let asker = p.expect::<Pid>().await?;
            let target = p.spawn(|mut p| async move { p.expect::<()>().await.map(drop) });
            p.send(asker, &target);
        }
        #[allow(unreachable_code)]
        Ok::<(), ReceiveError>(())
    });
    let before = live();
    run(&node, move |mut p| async move {
        let me = p.self_pid();
        let message = vec![7u8; 64 << 10];
        for round in 0..ROUNDS {
            p.send(spawner, &me);
            let target = p.expect::<Pid>().await.unwrap();
            p.send(target, &());
            for _ in 0..(round % 200) {
                std::hint::spin_loop();
            }
            p.send_after(Duration::from_secs(3600), target, &message);
        }
    })
    .unwrap();
    let deadline = std::time::Instant::now() + support::BOUND;
    while node.process_count() > 1 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::yield_now();
    }
    assert_eq!(node.pending_timers(), 0);
    let left = live() - before;
    assert!(left < 2 * MIB, "{} KiB of timers at ended processes stayed", left >> 10);

    // Many pending timers, all cancelled, then as many that fire:
    // neither leaves its slots, heap or lists behind.
    const TIMERS: u32 = 300_000;
    let (armed, cancelled, fired) = run(&node, |mut p| async move {
        let me = p.self_pid();
        let before = live();
        let mut timers = Vec::with_capacity(TIMERS as usize);
        let list = live();
        for n in 0..TIMERS {
            timers.push(p.send_after(Duration::from_secs(3600), me, &n));
        }
        let armed = live() - list;
        for timer in timers {
            assert!(p.cancel_timer(timer).is_some());
        }
        let cancelled = live() - before;
        for n in 0..TIMERS {
            p.send_after(Duration::ZERO, me, &n);
        }
        for n in 0..TIMERS {
            assert_eq!(p.expect::<u32>().await?, n, "zero-delay timers fire in the order they were armed");
        }
        Ok::<_, ReceiveError>((armed, cancelled, live() - before))
    })
    .unwrap()
    .unwrap();
    assert!(armed > 15 * MIB, "the timers were armed: {} MiB", armed / MIB);
    assert_eq!(node.pending_timers(), 0);
    assert!(cancelled < MIB, "{} KiB of cancelled timers stayed", cancelled >> 10);
    assert!(fired < MIB, "{} KiB of fired timers stayed", fired >> 10);

    // A big message is copied once when sent: from the sender's value into
    // the envelope its receiver reads, not into a buffer of the sender's
    // first. A byte payload serde hands over as one block (`serde_bytes`)
    // gets exactly its room; a `Vec<u8>`, written byte by byte, may grow to
    // twice its room while it is written and gives the rest back.
    #[derive(Serialize, Deserialize, Message)]
    struct Blob(#[serde(with = "serde_bytes")] Vec<u8>);
    const SIZE: isize = 32 << 20;
    let (blob_peak, blob_kept, vec_peak, vec_kept) = run(&node, |p| async move {
        let sink = p.spawn(|mut p| async move { p.expect::<()>().await.map(drop) });
        let blob = Blob(vec![7; SIZE as usize]);
        let before = live_and_reset_peak();
        p.send(sink, &blob);
        let blob = (PEAK.load(Ordering::Relaxed) - before, live() - before);
        let bytes = vec![7u8; SIZE as usize];
        let before = live_and_reset_peak();
        p.send(sink, &bytes);
        let vec = (PEAK.load(Ordering::Relaxed) - before, live() - before);
        p.send(sink, &());
        (blob.0, blob.1, vec.0, vec.1)
    })
    .unwrap();
    assert!(blob_peak < SIZE + SIZE / 64, "sending {} MiB took {} MiB at its peak", SIZE / MIB, blob_peak / MIB);
    assert!(blob_kept < SIZE + SIZE / 64, "a queued {} MiB message kept {} MiB", SIZE / MIB, blob_kept / MIB);
    assert!(vec_peak <= 2 * SIZE + MIB, "sending {} MiB took {} MiB at its peak", SIZE / MIB, vec_peak / MIB);
    assert!(vec_kept < SIZE + SIZE / 8, "a queued {} MiB message kept {} MiB", SIZE / MIB, vec_kept / MIB);

    // A burst of processes that each sleep once, then end: once they are
    // all gone, the schedulers keep (nearly) none of their memory — task
    // slots, run queues, sleeps (hostile reviews of the executor: 18 MiB
    // of 100,000 stayed; then 6.6 MiB, held by one process spawned
    // during the burst).
    const SLEEPERS: u32 = 100_000;
    // The sections above leave one process (the spawner); whatever else of
    // theirs is still ending (on another scheduler) ends first.
    let keep = 1;
    let deadline = std::time::Instant::now() + support::BOUND;
    while node.process_count() > keep {
        assert!(std::time::Instant::now() < deadline, "the earlier sections' processes did not end");
        std::thread::yield_now();
    }
    let before = live();
    let survivor = run(&node, |p| async move {
        for _ in 0..SLEEPERS {
            p.spawn(|mut p| async move { p.sleep(Duration::from_millis(300)).await });
        }
        // Spawned while the sleepers are there, on their scheduler, and
        // outlives them: it must not keep their slots (it did, 6.6 MiB,
        // when the task table gave memory back only from its end).
        p.spawn(|mut p| async move { p.expect::<()>().await.map(drop) })
    })
    .unwrap();
    let during = live();
    let deadline = std::time::Instant::now() + support::BOUND;
    while node.process_count() > keep + 1 {
        assert!(std::time::Instant::now() < deadline, "the sleepers did not end");
        std::thread::yield_now();
    }
    assert!(during - before > 20 * MIB, "the sleepers were there: {} MiB", (during - before) / MIB);
    // The last sleepers' slots go just after their exits are counted: the
    // memory is waited for, with a bound. What may stay is the process
    // table's room for 100,000 (about 2 MiB: it keeps its capacity).
    let deadline = std::time::Instant::now() + support::BOUND;
    while live() - before >= 4 * MIB && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    let left = live() - before;
    assert!(left < 4 * MIB, "{} KiB of {SLEEPERS} sleepers that ended stayed", left >> 10);
    node.spawn(move |p| async move { p.send(survivor, &()) });
}
