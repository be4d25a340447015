//! Rule 1: no message is lost, duplicated or reordered by code loading. A
//! producer streams numbered messages at a module process while the process
//! is upgraded 100 times, alternating versions; every number arrives once,
//! in order, and each answer names the version that gave it.

mod support;

use std::sync::mpsc;

use molt::{PurgeError, ReceiveError};
use support::modules::{Counter, testmod};

const UPGRADES: u64 = 100;
const PER_ROUND: u64 = 500;

#[test]
fn a_hundred_upgrades_lose_reorder_and_duplicate_nothing() {
    let node = support::node("no-loss");
    let files = [testmod(""), testmod("v2")];
    node.load(&files[0]).unwrap();
    let state = Counter { count: 0, follow_upgrades: true, watcher: None };
    let echo = node.spawn_entry("testmod", "echo", &state).unwrap();

    // The collector checks every answer as it comes. The producer sends a
    // round, asks the test for an upgrade, and sends the next round as soon
    // as the new version is loaded: the echo is then still answering the
    // round before, so it switches code with the Upgrade message and a whole
    // round queued behind it.
    let (report, reported) = mpsc::channel::<Result<(Vec<String>, u64), String>>();
    let collector = node.spawn(move |mut p| async move {
        let mut versions = Vec::new();
        let mut last_count = 0;
        for expected in 0..(UPGRADES + 1) * PER_ROUND {
            let (n, version, count): (u64, String, u64) = p.expect().await?;
            if n != expected {
                let _ = report.send(Err(format!("expected {expected}, got {n}")));
                return Ok(());
            }
            if versions.last() != Some(&version) {
                versions.push(version);
            }
            last_count = count;
        }
        let _ = report.send(Ok((versions, last_count)));
        Ok::<(), ReceiveError>(())
    });
    let (want_upgrade, upgrade_wanted) = mpsc::channel::<u64>();
    let producer = node.spawn(move |mut p| async move {
        for round in 0..=UPGRADES {
            for i in 0..PER_ROUND {
                p.send(echo, &(collector, round * PER_ROUND + i));
            }
            if round < UPGRADES {
                let _ = want_upgrade.send(round);
                p.expect::<()>().await?;
            }
        }
        Ok::<(), ReceiveError>(())
    });

    for round in 0..UPGRADES {
        assert_eq!(upgrade_wanted.recv_timeout(support::BOUND).unwrap(), round);
        // The echo leaves the old version at its next Upgrade; wait for that
        // (bounded) before the next load needs the old slot free.
        let start = std::time::Instant::now();
        loop {
            match node.soft_purge("testmod") {
                Ok(_) => break,
                Err(PurgeError::InUse { .. }) => {
                    assert!(start.elapsed() < support::BOUND, "the echo never left the old version");
                    std::thread::yield_now();
                }
                Err(other) => panic!("{other}"),
            }
        }
        let loaded = node.load(&files[(round as usize + 1) % 2]).unwrap();
        assert_eq!(loaded.version, if round % 2 == 0 { "2" } else { "1" });
        support::run(&node, move |p| async move { p.send(producer, &()) }).unwrap();
    }
    let (versions, last_count) =
        reported.recv_timeout(support::BOUND).expect("the collector finishes").expect("all in order");
    // The state came through every migration: one per answer before the
    // last, plus 1000 per migration.
    assert_eq!(last_count, (UPGRADES + 1) * PER_ROUND - 1 + 1000 * UPGRADES);
    // Every upgrade was taken, in turn: 1, 2, 1, 2, … (101 runs of answers).
    let expected: Vec<String> = (0..=UPGRADES).map(|i| if i % 2 == 0 { "1" } else { "2" }.to_owned()).collect();
    assert_eq!(versions, expected);
    let info = node.processes().into_iter().find(|p| p.pid == echo).unwrap();
    assert_eq!(info.module, Some(("testmod".to_owned(), "1".to_owned())));
    assert_eq!(node.unloaded().len() as u64, UPGRADES - 1);
}
