//! Hostile review scratch tests (to be deleted).
#![allow(missing_docs)]
mod support;

use std::path::PathBuf;
use std::time::Duration;

use molt::{Node, Pid};
use support::child::in_child;
use support::modules::{Counter, testmod};
use support::{BOUND, Report, Reports, alive, node, run};

fn review_module() -> PathBuf {
    PathBuf::from("/tmp/zz_target/debug/libtestmod.so")
}

fn watched_by(reports: &Reports) -> Counter {
    Counter { count: 0, follow_upgrades: false, watcher: Some(reports.pid) }
}

fn wait_gone(node: &Node, pid: Pid) {
    let start = std::time::Instant::now();
    while alive(node, pid) {
        assert!(start.elapsed() < BOUND);
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A std thread spawned by safe module code that outlives its process:
/// molt-module's docs say it "keeps the library mapped (memory, not danger)".
#[test]
fn zz_thread_outliving_purge() {
    in_child("zz_thread_outliving_purge", &[], || {
        let node = node("zz-thread");
        node.load(review_module()).unwrap();
        let reports = Reports::start(&node);
        let pid = node.spawn_entry("testmod", "thread_outlives", &watched_by(&reports)).unwrap();
        assert_eq!(reports.next(), Report::Number("thread_outlives".into(), 0));
        wait_gone(&node, pid);
        node.load(testmod("v2")).unwrap();
        let unloaded = node.soft_purge("testmod").unwrap().expect("version 1 was old");
        println!("soft purge: {unloaded:?}");
        // The module's thread wakes up in (and returns through) version 1's code.
        std::thread::sleep(Duration::from_secs(3));
        println!("survived");
        node.shutdown();
    });
}

/// A pinned module thread spawns a closure of version 1 after its purge:
/// the closure's process is not attributed to any version.
#[test]
fn zz_closure_spawned_after_purge_is_unattributed() {
    in_child("zz_closure_spawned_after_purge_is_unattributed", &[], || {
        let node = node("zz-late");
        node.load(review_module()).unwrap();
        let reports = Reports::start(&node);
        let pid = node.spawn_entry("testmod", "late_spawner", &watched_by(&reports)).unwrap();
        wait_gone(&node, pid);
        node.load(testmod("v2")).unwrap();
        let report = node.purge("testmod").unwrap();
        println!("purge: {report:?}");
        let child = reports.pid("late_spawner");
        std::thread::sleep(Duration::from_millis(200));
        let info = node.processes().into_iter().find(|i| i.pid == child);
        println!("child info after purge of version 1: {info:?}");
        println!("modules: {:?}", node.modules());
        let answer = run(&node, move |mut p| async move { support::modules::ask(&mut p, child, 5).await }).unwrap();
        println!("the child answers: {answer:?}");
        assert!(
            info.is_none(),
            "a process running code of purged version 1 is alive and attributed to no version: {info:?}"
        );
        node.shutdown();
    });
}

/// Same, then the pin goes (the thread exited) and a later purge of
/// version 2 lets the dynamic loader unmap version 1: the unattributed
/// process is then polled.
#[test]
fn zz_unattributed_closure_after_unmap() {
    in_child("zz_unattributed_closure_after_unmap", &[], || {
        let node = node("zz-late2");
        node.load(review_module()).unwrap();
        let reports = Reports::start(&node);
        let pid = node.spawn_entry("testmod", "late_spawner", &watched_by(&reports)).unwrap();
        wait_gone(&node, pid);
        node.load(testmod("v2")).unwrap();
        let report = node.purge("testmod").unwrap();
        println!("purge of 1: {report:?}");
        let child = reports.pid("late_spawner");
        std::thread::sleep(Duration::from_millis(300));
        node.load(testmod("v3")).unwrap();
        let report = node.purge("testmod").unwrap();
        println!("purge of 2: {report:?}");
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        println!("memfd lines: {:?}", maps.lines().filter(|l| l.contains("memfd:molt")).collect::<Vec<_>>());
        let answer = run(&node, move |mut p| async move { support::modules::ask(&mut p, child, 5).await }).unwrap();
        println!("the child answers: {answer:?}");
        node.shutdown();
    });
}

/// A file whose descriptor symbol has an address near u64::MAX: the
/// loader must refuse it with an error, not panic.
#[test]
fn zz_crafted_descriptor_address() {
    use object::{Object, ObjectSection};
    let original = std::fs::read(testmod("")).unwrap();
    let mut bytes = original.clone();
    let file = object::File::parse(&*original).unwrap();
    let dynsym = file.section_by_name(".dynsym").unwrap();
    let dynstr = file.section_by_name(".dynstr").unwrap().data().unwrap();
    let (offset, size) = dynsym.file_range().unwrap();
    let mut patched = false;
    for entry in (offset..offset + size).step_by(24) {
        let entry = entry as usize;
        let name = u32::from_le_bytes(bytes[entry..entry + 4].try_into().unwrap()) as usize;
        let end = dynstr[name..].iter().position(|b| *b == 0).unwrap();
        if &dynstr[name..name + end] == b"MOLT_MODULE_DESCRIPTOR" {
            bytes[entry + 8..entry + 16].copy_from_slice(&0xFFFF_FFFF_FFFF_FFF8u64.to_le_bytes());
            patched = true;
        }
    }
    assert!(patched);
    let dir = std::env::temp_dir().join(format!("zz-crafted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("libtestmod.so");
    std::fs::write(&path, &bytes).unwrap();
    let node = node("zz-crafted");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| node.load(&path)));
    let _ = std::fs::remove_dir_all(&dir);
    match outcome {
        Ok(result) => assert!(result.is_err(), "{result:?}"),
        Err(panic) => panic!("Node::load panicked on a crafted file: {:?}", panic.downcast_ref::<String>()),
    }
}
