//! `Node::processes`: what each process is doing, as `molt ps` shows it.

mod support;

use std::time::Instant;

use molt::{Pid, ProcessInfo, ProcessStatus};
use support::{A, B, node, run};

/// Polls the listing until `pid`'s entry satisfies `ready`, within the bound.
fn info_when(node: &molt::Node, pid: Pid, ready: impl Fn(&ProcessInfo) -> bool) -> ProcessInfo {
    let start = Instant::now();
    loop {
        if let Some(info) = node.processes().into_iter().find(|i| i.pid == pid)
            && ready(&info)
        {
            return info;
        }
        assert!(start.elapsed() < support::BOUND, "{pid} never reached the expected state");
        std::thread::yield_now();
    }
}

#[test]
fn the_listing_shows_status_name_mailbox_links_and_code() {
    let node = node("introspection");
    let (worker, partner) = run(&node, |p| async move {
        let worker = p.spawn(|mut p| async move {
            p.trap_exit(true);
            p.expect::<A>().await.map(drop)
        });
        let partner = p.spawn(move |mut p| async move {
            p.link(worker);
            p.monitor(worker);
            p.expect::<A>().await.map(drop)
        });
        p.register("worker", worker).unwrap();
        for n in 0..3 {
            p.send(worker, &B(n));
        }
        (worker, partner)
    })
    .unwrap();
    // The partner's link and monitor reach the worker as two signals: wait
    // for both.
    let info = info_when(&node, worker, |i| {
        i.mailbox_len == 3 && i.status == ProcessStatus::Waiting && i.links.len() == 1 && i.monitored_by == 1
    });
    assert_eq!(info.registered_name.as_deref(), Some("worker"));
    assert_eq!(info.links, vec![partner]);
    assert_eq!(info.monitored_by, 1);
    assert!(info.trap_exit);
    assert!(info.code.contains("introspection"), "{}", info.code);
    let listed: Vec<Pid> = node.processes().iter().map(|i| i.pid).collect();
    assert!(listed.windows(2).all(|w| w[0].serial < w[1].serial), "listed in pid order");
    assert!(listed.contains(&worker) && listed.contains(&partner));
    node.shutdown();
}
