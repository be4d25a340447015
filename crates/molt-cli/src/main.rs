//! The `molt` command.
//!
//! `molt demo` runs the seed's ping-pong (shared/seed: a client pings a
//! server ten times and counts the pongs) on a molt node and tells the
//! story; `--json` prints the summary as one JSON object.

use molt_cli::demo;

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

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
