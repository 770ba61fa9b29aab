//! `kiln`: the command line. It parses arguments and calls the libraries;
//! everything it does is theirs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Build, run and move container images without a daemon or root"
)]
struct Cli {
    /// The store directory (default: /var/lib/kiln for root,
    /// $XDG_DATA_HOME/kiln otherwise).
    #[arg(long, global = true, env = "KILN_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make an image from a root filesystem tarball or directory.
    Import(cmd::archive::ImportArgs),
    /// Write images to a docker-archive, OCI archive or OCI layout.
    Save(cmd::archive::SaveArgs),
    /// Read images from a docker-archive, OCI archive or OCI layout.
    Load(cmd::archive::LoadArgs),
    /// Write an image's flattened filesystem as a tar.
    Export(cmd::archive::ExportArgs),
    /// List images in the store.
    Images(cmd::image::ImagesArgs),
    /// Print an image's manifest and config as JSON.
    Inspect(cmd::image::InspectArgs),
    /// Show an image's history.
    History(cmd::image::HistoryArgs),
    /// Give an image another name.
    Tag(cmd::image::TagArgs),
    /// Remove image names.
    Rmi(cmd::image::RmiArgs),
    /// Remove content no image or cache entry uses.
    Prune,
    /// Verify every blob and name in the store.
    Check,
    #[command(flatten)]
    Registry(cmd::registry::RegistryCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(root) = &cli.root {
        // SAFETY: no other thread exists yet. Every library that asks for
        // the default store root then sees the one given here.
        unsafe { std::env::set_var("KILN_ROOT", root) };
    }
    let root = cli.root.unwrap_or_else(kiln_image::store::default_root);
    let result = match cli.command {
        Command::Import(a) => cmd::archive::import(&root, a),
        Command::Save(a) => cmd::archive::save(&root, a),
        Command::Load(a) => cmd::archive::load(&root, a),
        Command::Export(a) => cmd::archive::export(&root, a),
        Command::Images(a) => cmd::image::images(&root, a),
        Command::Inspect(a) => cmd::image::inspect(&root, a),
        Command::History(a) => cmd::image::history(&root, a),
        Command::Tag(a) => cmd::image::tag(&root, a),
        Command::Rmi(a) => cmd::image::rmi(&root, a),
        Command::Prune => cmd::image::prune(&root),
        Command::Check => cmd::image::check(&root),
        Command::Registry(c) => cmd::registry::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln: {e:#}");
            ExitCode::FAILURE
        }
    }
}
