use clap::{Parser, Subcommand};

mod cmd {
    pub mod run;
}

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Daemonless, rootless container image builder"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once; boxing buys nothing
enum Cmd {
    /// Show what this host supports: user namespaces, overlay, subuid ranges, isolation.
    Info,
    /// Run a command in a prepared root filesystem (a directory or overlay layers).
    Run(cmd::run::RunArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        // Probed from the caller's own view, before any re-exec.
        Cmd::Info => {
            println!("{}", kiln_sandbox::info::probe());
            Ok(())
        }
        Cmd::Run(args) => {
            // Still single-threaded: an unprivileged kiln re-executes itself
            // here as root of a user namespace (subuid/subgid mapped).
            kiln_sandbox::userns::ensure_root_in_userns()?;
            std::process::exit(cmd::run::run(args)?)
        }
    }
}
