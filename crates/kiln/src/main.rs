//! kiln: a daemonless, rootless container image builder.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "kiln", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Registry(cmd::registry::RegistryCommand),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Registry(c) => cmd::registry::run(c),
    };
    if let Err(e) = result {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
