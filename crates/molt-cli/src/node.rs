//! `molt node` and `molt ping`: a distributed node in its own OS process,
//! and a client that pings it from another one (the README's "two
//! terminals").
//!
//! `molt node a --listen 127.0.0.1:9101` starts the node
//! `a@127.0.0.1:9101` with a process registered as `echo` (it answers every
//! `(Pid, u64)` with the `u64`), prints one line naming the node, and runs
//! until its standard input closes (Ctrl-D), then shuts down, telling its
//! peers. `molt ping a@127.0.0.1:9101` starts a node of its own, finds
//! `echo` there, pings it and prints each round trip.
//!
//! Both take the node group's secret from `--secret-file` (a file only its
//! owner can read) or the `MOLT_SECRET` environment variable, and mutual
//! TLS from `--tls-cert`, `--tls-key` and `--tls-ca` (PEM files).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use molt::{Down, Node, NodeConfig, Pid, ReceiveError, Secret, Tls};

/// Where a node's secret comes from.
#[derive(Debug, clap::Args)]
pub struct SecretArgs {
    /// A file holding the node group's secret, readable by its owner only
    /// (else the MOLT_SECRET environment variable holds it).
    #[arg(long)]
    secret_file: Option<PathBuf>,
}

impl SecretArgs {
    fn secret(&self) -> Result<Secret, String> {
        match &self.secret_file {
            Some(path) => Secret::from_file(path).map_err(|e| e.to_string()),
            None => Secret::from_env("MOLT_SECRET")
                .map_err(|e| format!("{e}: give the node group's secret with --secret-file PATH or in MOLT_SECRET")),
        }
    }
}

/// Mutual TLS for a node's connections: all three, or none.
#[derive(Debug, clap::Args)]
pub struct TlsArgs {
    /// The node's certificate chain (PEM), for the host it listens on.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires_all = ["tls_cert", "tls_ca"])]
    tls_key: Option<PathBuf>,
    /// The authority whose certificates peers must present (PEM).
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    fn tls(&self) -> Result<Option<Tls>, String> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => {
                Tls::from_pem_files(cert, key, ca).map(Some).map_err(|e| e.to_string())
            }
            _ => Ok(None),
        }
    }
}

/// The arguments of `molt node`.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// The node's short name: it becomes NAME@HOST:PORT.
    name: String,
    /// The address to listen on; port 0 picks a free one (the printed
    /// name says which).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Nodes to connect to at start (NAME@HOST:PORT), besides answering
    /// those that connect.
    #[arg(long)]
    connect: Vec<String>,
    /// How long a silent or lost peer is waited for before it is declared
    /// down, in milliseconds.
    #[arg(long, default_value_t = 4000)]
    detection_ms: u64,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    tls: TlsArgs,
}

fn start(name: &str, listen: &str, detection: Duration, secret: &SecretArgs, tls: &TlsArgs) -> Result<Node, String> {
    let mut config = NodeConfig::new(name).listen(listen).secret(secret.secret()?).detection(detection);
    if let Some(tls) = tls.tls()? {
        config = config.tls(tls);
    }
    Node::start(config).map_err(|e| e.to_string())
}

/// Answers every `(from, n)` with `n`.
async fn echo(mut p: molt::Process) -> Result<(), ReceiveError> {
    loop {
        let (from, n): (Pid, u64) = p.expect().await?;
        p.send(from, &n);
    }
}

/// `molt node`: runs until standard input closes.
pub fn run_node(args: &NodeArgs) -> Result<(), String> {
    // What the node says of its peers (connected, refused, down) goes to
    // standard error.
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).try_init();
    let detection = Duration::from_millis(args.detection_ms);
    let node = start(&args.name, &args.listen, detection, &args.secret, &args.tls)?;
    let server = node.spawn(echo);
    node.run(move |p| async move { p.register("echo", server) })
        .map_err(|e| format!("the echo process ended: {e}"))?
        .map_err(|e| e.to_string())?;
    for peer in &args.connect {
        node.connect(peer).map_err(|e| e.to_string())?;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "node {} up, with echo registered; close standard input (Ctrl-D) to stop it", node.name());
    let _ = out.flush();
    drop(out);
    // Until standard input closes; what is typed is ignored.
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
    }
    node.shutdown();
    Ok(())
}

/// The arguments of `molt ping`.
#[derive(Debug, clap::Args)]
pub struct PingArgs {
    /// The node to ping (NAME@HOST:PORT), as `molt node` printed it.
    node: String,
    /// How many pings.
    #[arg(long, default_value_t = 5)]
    count: u64,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    tls: TlsArgs,
}

/// `molt ping`: pings the `echo` of another node, one round trip at a time.
pub fn run_ping(args: &PingArgs) -> Result<(), String> {
    let node = start("ping", "127.0.0.1:0", Duration::from_secs(4), &args.secret, &args.tls)?;
    node.connect(&args.node).map_err(|e| e.to_string())?;
    let (target, count) = (args.node.clone(), args.count);
    let outcome = node.run(move |mut p| async move {
        let echo = match p.whereis_on(&target, "echo").await {
            Ok(Some(echo)) => echo,
            Ok(None) => return Err(format!("no process is registered as echo on {target}")),
            Err(why) => return Err(format!("{target} did not answer: {why}")),
        };
        p.monitor(echo);
        let mut times = Vec::with_capacity(count as usize);
        for n in 0..count {
            let sent = Instant::now();
            p.send(echo, &(p.self_pid(), n));
            let answer = p
                .receive()
                .on(|back: u64| Ok(back))
                .on_if(move |down: &Down| down.pid == echo, |down| Err(down.reason))
                .await
                .map_err(|e| e.to_string())?;
            match answer {
                Ok(back) if back == n => {}
                Ok(back) => return Err(format!("pong {back} for ping {n}")),
                Err(reason) => return Err(format!("echo on {target} ended: {reason}")),
            }
            let took = sent.elapsed();
            times.push(took);
            println!("pong {n} from {echo:?} in {} µs", took.as_micros());
        }
        times.sort();
        let median = times.get(times.len() / 2).copied().unwrap_or_default();
        println!("DONE: {count} pings, {count} pongs, median round trip {} µs", median.as_micros());
        Ok(())
    });
    node.shutdown();
    outcome.map_err(|e| format!("the pinging process ended: {e}"))?
}
