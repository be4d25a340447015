//! Load → purge, 200 times over: the node stays up, a process follows
//! every version, and the test reports (and pins down) what the platform
//! did with each closed library's pages and with the node's memory.

mod support;

use molt::LoadOptions;
use support::modules::{Counter, ask, testmod};
use support::{node, run};

const CYCLES: usize = 200;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) * 4096
}

#[test]
fn two_hundred_load_and_purge_cycles_keep_the_node_up() {
    let node = node("cycles");
    let files = [testmod(""), testmod("v2")];
    node.load(&files[0]).unwrap();
    let state = Counter { count: 0, follow_upgrades: true, watcher: None };
    let echo = node.spawn_entry("testmod", "echo", &state).unwrap();
    let before = resident_bytes();
    let purge_first = LoadOptions { purge_first: true, ..LoadOptions::default() };
    for cycle in 0..CYCLES {
        let loaded = node.load_with(&files[(cycle + 1) % 2], &purge_first).unwrap();
        // The echo takes each version at once, so the next purge finds the
        // old one unused; asking it proves it moved and still answers.
        let (n, version, _) = run(&node, move |mut p| async move { ask(&mut p, echo, cycle as u64).await }).unwrap();
        assert_eq!((n, version), (cycle as u64, loaded.version.version));
    }
    let after = resident_bytes();
    let unloaded = node.unloaded();
    assert_eq!(unloaded.len(), CYCLES - 1, "every version but the last two was closed");
    let still_mapped = unloaded.iter().filter(|u| u.still_mapped == Some(true)).count();
    let unmapped = unloaded.iter().filter(|u| u.still_mapped == Some(false)).count();
    eprintln!(
        "platform: of {} closed versions, {unmapped} left the address space and {still_mapped} stayed mapped; \
         resident memory went from {} to {} MiB",
        unloaded.len(),
        before >> 20,
        after >> 20
    );
    assert_eq!(unmapped + still_mapped, unloaded.len(), "/proc/self/maps answered for every version");
    // glibc unmaps a module built by molt-module on dlclose: the SDK keeps
    // no thread-local with a destructor, which is what pins a library.
    assert_eq!(still_mapped, 0, "a closed version stayed mapped");
}

/// Load → a panic in the new version → purge, 50 times over: a version
/// whose code panicked leaves the address space like any other (the module
/// panic hook maps nothing), and the node's memory does not grow per cycle.
#[test]
fn versions_that_panicked_are_unmapped_too() {
    const PANICKING: usize = 50;
    let node = node("panic-cycles");
    let files = [testmod(""), testmod("v2")];
    node.load(&files[0]).unwrap();
    let purge_first = LoadOptions { purge_first: true, ..LoadOptions::default() };
    let before = resident_bytes();
    for cycle in 0..PANICKING {
        node.load_with(&files[(cycle + 1) % 2], &purge_first).unwrap();
        let reason = run(&node, |mut p| async move {
            let options = molt::SpawnOptions { link: false, monitor: true };
            p.spawn_entry_with("testmod", "panics_at_once", &(), options).unwrap();
            p.expect::<molt::Down>().await.unwrap().reason
        })
        .unwrap();
        assert!(matches!(reason, molt::ExitReason::Panicked(_)), "{reason:?}");
    }
    let after = resident_bytes();
    let unloaded = node.unloaded();
    assert_eq!(unloaded.len(), PANICKING - 1);
    eprintln!(
        "platform: {} versions that panicked were closed, {} left the address space; resident memory went from {} \
         to {} MiB",
        unloaded.len(),
        unloaded.iter().filter(|u| u.still_mapped == Some(false)).count(),
        before >> 20,
        after >> 20
    );
    assert!(unloaded.iter().all(|u| u.still_mapped == Some(false)), "{unloaded:?}");
}
