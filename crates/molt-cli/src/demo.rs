//! `molt demo`: the seed's ping-pong on a molt node.
//!
//! The client sends numbered pings `(client pid, n)`; the server answers each
//! with `n`. With few pings every step is printed; with many, pings are
//! pipelined (all sent, then all pongs received) and only the summary is.
//! The summary counts what came back: pongs, lost, and whether they arrived
//! in order.

use std::io::Write;
use std::time::Instant;

use molt::{Node, NodeConfig, Pid, ReceiveError};
use serde::Serialize;

/// Pings up to this many are printed one by one.
const TOLD_STEP_BY_STEP: u64 = 100;

#[derive(clap::Args)]
pub(crate) struct DemoArgs {
    /// How many pings the client sends.
    #[arg(long, default_value_t = 10)]
    pings: u64,
    /// Print the summary as one JSON object on stdout (the story goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Summary {
    pings: u64,
    pongs: u64,
    lost: u64,
    in_order: bool,
    seconds: f64,
}

pub(crate) fn run(args: &DemoArgs) -> Result<(), String> {
    let json = args.json;
    let pings = args.pings;
    let say = move |line: String| {
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let node = Node::start(NodeConfig::new("demo")).map_err(|e| e.to_string())?;
    say(format!("node {} started", node.name()));
    let step_by_step = pings <= TOLD_STEP_BY_STEP;
    let summary = node
        .run(move |mut p| async move {
            let server = p.spawn(move |mut p| async move {
                loop {
                    let (client, n): (Pid, u64) = p.expect().await?;
                    if step_by_step {
                        say(format!("server {}: got a ping with value {n}, sending the pong", p.self_pid()));
                    }
                    p.send(client, &n);
                }
                #[allow(unreachable_code)]
                Ok::<(), ReceiveError>(())
            });
            let me = p.self_pid();
            let start = Instant::now();
            let mut received = Vec::with_capacity(pings as usize);
            if step_by_step {
                for n in 0..pings {
                    say(format!("client {me}: sending a ping with value {n}"));
                    p.send(server, &(me, n));
                    let pong = p.expect::<u64>().await?;
                    say(format!("client {me}: got a pong with value {pong}"));
                    received.push(pong);
                }
            } else {
                for n in 0..pings {
                    p.send(server, &(me, n));
                }
                for _ in 0..pings {
                    received.push(p.expect::<u64>().await?);
                }
            }
            let seconds = start.elapsed().as_secs_f64();
            p.kill(server);
            let in_order = received.iter().copied().eq(0..pings);
            let pongs = received.len() as u64;
            Ok::<Summary, ReceiveError>(Summary { pings, pongs, lost: pings - pongs, in_order, seconds })
        })
        .map_err(|reason| format!("the demo's client ended early: {reason}"))?
        .map_err(|error| format!("the demo's client could not receive: {error}"))?;
    node.shutdown();
    if json {
        let line = serde_json::to_string(&summary).map_err(|e| e.to_string())?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}").map_err(|e| format!("cannot write to stdout: {e}"))?;
    } else {
        println!(
            "DONE: {} pings, {} pongs, {} lost, {}, {:.6} s",
            summary.pings,
            summary.pongs,
            summary.lost,
            if summary.in_order { "in order" } else { "OUT OF ORDER" },
            summary.seconds
        );
    }
    Ok(())
}
