mod cmd;

use clap::{Parser, Subcommand};

/// kiln: a daemonless, rootless container image builder.
#[derive(Debug, Parser)]
#[command(name = "kiln", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect Dockerfiles without building.
    #[command(subcommand)]
    Dockerfile(cmd::dockerfile::DockerfileCmd),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Dockerfile(c) => cmd::dockerfile::run(c),
    };
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
