//! Nodes as separate OS processes: `molt node` run as a real child, pinged
//! by `molt ping` (another child) and by a node in this test process;
//! stopped cleanly (its peers hear it shut down) and killed with SIGKILL
//! (its peers declare it down with the reason, and a process streaming to
//! it goes on); and both over mutual TLS, from certificate files.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use molt::{Down, Exit, Node, NodeConfig, NodeDown, Pid, ReceiveError, Secret};

const SECRET: &str = "the test group's secret";
const BOUND: Duration = Duration::from_secs(60);

/// A `molt node` child, killed if the test ends before it does.
struct NodeProcess {
    child: Child,
    name: String,
}

impl NodeProcess {
    fn start(short: &str) -> NodeProcess {
        NodeProcess::start_with(short, &[])
    }

    fn start_with(short: &str, more: &[&str]) -> NodeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_molt"))
            .args(["node", short, "--listen", "127.0.0.1:0"])
            .args(more)
            .env("MOLT_SECRET", SECRET)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("molt node starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("molt node says it is up");
        let name = line
            .strip_prefix("node ")
            .and_then(|rest| rest.split_once(' '))
            .map(|(name, _)| name.to_owned())
            .unwrap_or_else(|| panic!("not the line of a node that is up: {line:?}"));
        NodeProcess { child, name }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn local_node(detection: Duration) -> Node {
    let config =
        NodeConfig::new("t").workers(2).listen("127.0.0.1:0").secret(Secret::new(SECRET).unwrap()).detection(detection);
    Node::start(config).unwrap()
}

/// A process on `node` that finds `echo` on `remote`, then monitors it,
/// links to it (trapping exits) and monitors its node, and reports every
/// `Down`, `Exit` and `NodeDown` it gets, in order.
fn watch_echo(node: &Node, remote: &str) -> (Pid, mpsc::Receiver<String>) {
    let (tell, told) = mpsc::channel();
    let (found, echo) = mpsc::channel();
    let remote = remote.to_owned();
    node.spawn(move |mut p| async move {
        let echo = p.whereis_on(&remote, "echo").await.expect("the node answers").expect("echo is there");
        p.trap_exit(true);
        p.monitor(echo);
        p.link(echo);
        p.monitor_node(&remote);
        // A round trip behind the link and the monitor, on the same
        // connection: once it is back, both are in place over there.
        p.send(echo, &(p.self_pid(), 0u64));
        p.expect::<u64>().await?;
        let _ = found.send(echo);
        for _ in 0..3 {
            let event = p
                .receive()
                .on(|down: Down| format!("down {}", down.reason))
                .on(|exit: Exit| format!("exit {}", exit.reason))
                .on(|node_down: NodeDown| format!("nodedown {}", node_down.reason))
                .await?;
            let _ = tell.send(event);
        }
        Ok::<(), ReceiveError>(())
    });
    (echo.recv_timeout(BOUND).expect("the watcher finds echo"), told)
}

fn events(told: &mpsc::Receiver<String>) -> Vec<String> {
    let mut events: Vec<String> = (0..3).map(|_| told.recv_timeout(BOUND).expect("an event")).collect();
    events.sort();
    events
}

#[test]
fn molt_ping_reaches_a_node_in_another_process_which_says_goodbye_when_stopped() {
    let mut remote = NodeProcess::start("a");
    assert!(remote.name.starts_with("a@127.0.0.1:"), "{}", remote.name);
    let ping = Command::new(env!("CARGO_BIN_EXE_molt"))
        .args(["ping", &remote.name, "--count", "20"])
        .env("MOLT_SECRET", SECRET)
        .output()
        .expect("molt ping runs");
    let stdout = String::from_utf8_lossy(&ping.stdout);
    assert!(ping.status.success(), "{stdout}{}", String::from_utf8_lossy(&ping.stderr));
    for n in 0..20 {
        assert!(stdout.contains(&format!("pong {n} from ")), "pong {n} missing: {stdout}");
    }
    assert!(stdout.contains("DONE: 20 pings, 20 pongs, median round trip "), "{stdout}");
    // A wrong secret is refused by name.
    let stranger = Command::new(env!("CARGO_BIN_EXE_molt"))
        .args(["ping", &remote.name])
        .env("MOLT_SECRET", "another secret")
        .output()
        .unwrap();
    assert_eq!(stranger.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&stranger.stderr).contains("authentication failed"));
    // Stopped cleanly: echo ends with `shutdown`, which crosses before the
    // goodbye, and the node is down because it shut down.
    let node = local_node(Duration::from_secs(4));
    let (_, told) = watch_echo(&node, &remote.name);
    drop(remote.child.stdin.take());
    assert!(remote.child.wait().unwrap().success());
    assert_eq!(events(&told), ["down shutdown", "exit shutdown", "nodedown peer shut down"]);
}

#[test]
fn a_node_killed_with_sigkill_is_declared_down_and_a_process_streaming_to_it_goes_on() {
    let mut remote = NodeProcess::start("k");
    // Far longer than the test: a node that is gone is known at once.
    let detection = Duration::from_secs(30);
    let node = local_node(detection);
    let (echo, told) = watch_echo(&node, &remote.name);
    // A stream of pings towards echo, answered until the kill; the streamer
    // counts what it sent and stops when told.
    let (counted, count) = mpsc::channel();
    let streamer = node.spawn(move |mut p| async move {
        let mut sent = 0u64;
        loop {
            for _ in 0..100 {
                p.send(echo, &(p.self_pid(), sent));
                sent += 1;
            }
            let stop = p.receive_timeout(Duration::from_millis(1)).on(|stop: bool| stop).await;
            if stop == Ok(true) {
                let _ = counted.send(sent);
                return Ok::<(), ReceiveError>(());
            }
            // Pongs, whatever number they answer: taken so none pile up.
            while p.receive_timeout(Duration::ZERO).on(|_: u64| ()).await.is_ok() {}
        }
    });
    // Under way: the remote node answers.
    let deadline = Instant::now() + BOUND;
    while node.nodes().first().is_none_or(|peer| peer.queued == 0) {
        assert!(Instant::now() < deadline, "the stream never got going");
        std::thread::sleep(Duration::from_millis(1));
    }
    remote.child.kill().expect("SIGKILL");
    let killed = Instant::now();
    // Every relation across fires with a lost connection (no goodbye: the
    // node just vanished), without waiting out the detection bound: this
    // side dialed, and its first try to dial again is refused.
    assert_eq!(
        events(&told),
        [
            "down noconnection: node NAME: connection closed",
            "exit noconnection: node NAME: connection closed",
            "nodedown connection closed"
        ]
        .map(|event| event.replace("NAME", &remote.name))
    );
    assert!(killed.elapsed() < detection, "declared down after {:?}", killed.elapsed());
    // The streamer went on all along, and still answers.
    let told_to_stop = node.run(move |p| async move { p.send(streamer, &true) });
    assert!(told_to_stop.is_ok());
    let sent = count.recv_timeout(BOUND).expect("the streamer answers");
    assert!(sent >= 100, "{sent}");
    let (dropped, _) = node.dist_counts();
    assert!(dropped > 0, "what was sent into the dead connection is counted");
}

/// PEM files for mutual TLS in a fresh directory: an authority, and a
/// certificate for 127.0.0.1 it signed, with its key; the `--tls-*`
/// arguments that name them.
fn tls_files() -> Vec<String> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = std::env::temp_dir().join(format!("molt-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let certificate = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &issuer).unwrap();
    let mut args = Vec::new();
    for (flag, file, pem) in [
        ("--tls-cert", "node.pem", certificate.pem()),
        ("--tls-key", "node.key", key.serialize_pem()),
        ("--tls-ca", "ca.pem", ca_pem),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, pem).unwrap();
        args.extend([flag.to_owned(), path.display().to_string()]);
    }
    args
}

#[test]
fn molt_ping_reaches_a_node_in_another_process_over_mutual_tls() {
    let tls = tls_files();
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let remote = NodeProcess::start_with("t", &tls);
    let ping = Command::new(env!("CARGO_BIN_EXE_molt"))
        .args(["ping", &remote.name, "--count", "3"])
        .args(&tls)
        .env("MOLT_SECRET", SECRET)
        .output()
        .expect("molt ping runs");
    let stdout = String::from_utf8_lossy(&ping.stdout);
    assert!(ping.status.success(), "{stdout}{}", String::from_utf8_lossy(&ping.stderr));
    assert!(stdout.contains("DONE: 3 pings, 3 pongs, median round trip "), "{stdout}");
    // Without TLS, the same secret is not enough.
    let plain = Command::new(env!("CARGO_BIN_EXE_molt"))
        .args(["ping", &remote.name])
        .env("MOLT_SECRET", SECRET)
        .output()
        .unwrap();
    assert_eq!(plain.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(stderr.contains("could not connect to t@127.0.0.1:"), "{stderr}");
    // Half the TLS arguments are refused by name.
    let half = Command::new(env!("CARGO_BIN_EXE_molt")).args(["ping", &remote.name]).args(&tls[..2]).output().unwrap();
    assert!(!half.status.success());
    assert!(String::from_utf8_lossy(&half.stderr).contains("--tls-ca"), "{}", String::from_utf8_lossy(&half.stderr));
}
