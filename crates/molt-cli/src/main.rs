//! The `molt` command.
//!
//! `molt demo` runs the seed's ping-pong with an upgrade while it runs (see
//! `molt_cli::demo`); `--json` prints the summary as one JSON object.
//! `molt node` runs a distributed node in this process, `molt ping` pings
//! one from another (see `molt_cli::node`).

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use molt_cli::{demo, node};

#[derive(Parser)]
#[command(name = "molt", version, about = "molt: Erlang-style processes in Rust that change their code while they run")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the seed's ping-pong: a client pings a server and counts the pongs.
    Demo(demo::DemoArgs),
    /// Run a distributed node with an `echo` process, until standard input closes.
    Node(node::NodeArgs),
    /// Ping the `echo` process of a node that `molt node` runs.
    Ping(node::PingArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Node(args) => node::run_node(&args),
        Command::Ping(args) => node::run_ping(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("molt: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
