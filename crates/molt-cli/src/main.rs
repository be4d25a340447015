//! The `molt` command.
//!
//! `molt demo` runs the seed's ping-pong with an upgrade while it runs (see
//! `molt_cli::demo`); `--json` prints the summary as one JSON object.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use molt_cli::demo;

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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("molt: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
