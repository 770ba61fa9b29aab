//! `kiln`: the command line. It parses arguments and calls the libraries;
//! everything it does is theirs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

// Before `cmd`: its macros are in scope for what follows.
#[macro_use]
mod stdout;
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
    Images(cmd::images::ImagesArgs),
    /// Print an image's manifest and config as JSON.
    Inspect(cmd::image::InspectArgs),
    /// Show an image's history.
    History(cmd::image::HistoryArgs),
    /// Give an image another name.
    Tag(cmd::image::TagArgs),
    /// Remove image names.
    Rmi(cmd::image::RmiArgs),
    /// Build an image from a Dockerfile or a kiln.toml.
    Build(Box<cmd::build::BuildArgs>),
    /// Resolve a kiln.toml's Debian packages into kiln.lock.
    Lock(cmd::lock::LockArgs),
    /// Run a command in a throwaway container of an image.
    Run(cmd::container::RunArgs),
    /// Remove content no image or cache entry uses.
    Prune(cmd::image::PruneArgs),
    /// Verify every blob and name in the store.
    Check,
    /// Change an image's config or annotations without a build.
    Mutate(cmd::surgery::MutateArgs),
    /// Print an image's config blob.
    Config(cmd::surgery::ConfigArgs),
    /// Add layers (a tar, a directory, files) to an image without a build.
    Append(cmd::append::AppendArgs),
    /// Squash an image's layers into one.
    Flatten(cmd::append::FlattenArgs),
    /// Put an image on another base without a rebuild.
    Rebase(cmd::surgery::RebaseArgs),
    /// List the files added, removed and changed between two images.
    Diff(cmd::contents::DiffArgs),
    /// Show each layer's size, files, step, and the bytes it hides below.
    Layers(cmd::contents::LayersArgs),
    #[command(flatten)]
    Registry(cmd::registry::RegistryCommand),
    /// Inspect Dockerfiles without building.
    #[command(subcommand)]
    Dockerfile(cmd::dockerfile::DockerfileCmd),
    /// The store as a whole: `system df`.
    #[command(subcommand)]
    System(cmd::system::SystemCmd),
    /// Show what this host supports: user namespaces, overlay, subuid ranges, isolation.
    Info,
    /// Print a shell completion script (bash, zsh, fish).
    Completion(cmd::completion::CompletionArgs),
}

fn private_mount_namespace() -> rustix::io::Result<()> {
    use rustix::mount::{MountPropagationFlags, mount_change};
    use rustix::thread::{UnshareFlags, unshare_unsafe};
    // SAFETY: called before any thread is started, so no other thread
    // shares the filesystem context that CLONE_NEWNS unshares.
    unsafe { unshare_unsafe(UnshareFlags::NEWNS)? };
    mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
}

/// clap's error, without its tip to pass an unknown flag as a value with
/// `-- --flag`: for a mistyped flag that is never what the user meant.
fn usage_error(e: clap::Error) -> ExitCode {
    if e.kind() != clap::error::ErrorKind::UnknownArgument {
        e.exit();
    }
    let text = e.render().to_string();
    let mut out = String::new();
    for line in text.lines().filter(|l| !l.contains("use '-- ")) {
        if line.trim().is_empty() && (out.is_empty() || out.ends_with("\n\n")) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    eprint!("{out}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    // The store is chosen once, as the caller: after the switch below the
    // process is uid 0 of a user namespace and would pick root's store. The
    // re-executed process inherits the choice through KILN_ROOT, and so does
    // every library that asks for the default store root.
    let root = cli
        .root
        .clone()
        .unwrap_or_else(kiln_image::store::default_root);
    // SAFETY: no other thread exists yet.
    unsafe { std::env::set_var("KILN_ROOT", &root) };
    if matches!(
        cli.command,
        Command::Run(_)
            | Command::Build(_)
            | Command::Export(_)
            | Command::Prune(_)
            | Command::Flatten(_)
            | Command::System(_)
    ) {
        // Before any thread exists: an unprivileged kiln becomes root of a
        // user namespace with its subordinate IDs, so unpacking, chown and
        // overlay all work as they do for root. Export is here too: it
        // unpacks layers, owners and all, to flatten them; and prune, which
        // removes unpacked layers; and flatten, which unpacks as export does.
        if let Err(e) = kiln_sandbox::userns::ensure_root_in_userns() {
            eprintln!("kiln: {e}");
            return ExitCode::FAILURE;
        }
        // The build mounts read-only views of stages in its own process: a
        // private mount namespace makes them vanish with it, however it ends.
        // Refused outright (root in a default container or pod) it is not
        // worth a line on every command: only views of stages need it, and
        // they fail with their own error.
        if let Err(e) = private_mount_namespace()
            && e != rustix::io::Errno::PERM
        {
            eprintln!("kiln: a private mount namespace: {e}");
        }
    }
    let result = match cli.command {
        Command::Info => {
            // Probed from the caller's own view (no re-exec for `info`).
            outln!("{}", kiln_sandbox::info::probe());
            outln!("store:               {}", root.display());
            Ok(())
        }
        Command::Completion(a) => cmd::completion::completion(Cli::command(), a),
        Command::Import(a) => cmd::archive::import(&root, a),
        Command::Save(a) => cmd::archive::save(&root, a),
        Command::Load(a) => cmd::archive::load(&root, a),
        Command::Export(a) => cmd::archive::export(&root, a),
        Command::Images(a) => cmd::images::images(&root, a),
        Command::Inspect(a) => cmd::image::inspect(&root, a),
        Command::History(a) => cmd::image::history(&root, a),
        Command::Tag(a) => cmd::image::tag(&root, a),
        Command::Rmi(a) => cmd::image::rmi(&root, a),
        Command::Run(a) => cmd::container::run(&root, a),
        Command::Build(a) => cmd::build::build(&root, *a),
        Command::Lock(a) => cmd::lock::lock(&root, a),
        Command::Prune(a) => cmd::image::prune(&root, a),
        Command::Check => cmd::image::check(&root),
        Command::Mutate(a) => cmd::surgery::mutate(a),
        Command::Config(a) => cmd::surgery::config(a),
        Command::Append(a) => cmd::append::append(a),
        Command::Flatten(a) => cmd::append::flatten(a),
        Command::Rebase(a) => cmd::surgery::rebase(a),
        Command::Diff(a) => cmd::contents::diff_cmd(a),
        Command::Layers(a) => cmd::contents::layers_cmd(a),
        Command::Registry(c) => cmd::registry::run(c),
        Command::System(c) => cmd::system::run(&root, c),
        Command::Dockerfile(c) => match cmd::dockerfile::run(c) {
            Ok(code) => return ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-joined as anyhow's `{:#}` does. Each
/// cause is said once: kiln's errors put a cause in their message or mark
/// it as their `source`, never both.
fn error_text(e: &anyhow::Error) -> String {
    format!("{e:#}")
}
