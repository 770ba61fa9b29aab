//! The registry commands: `pull`, `push`, `copy`, `login`, `logout`, and
//! crane-style inspection (`manifest`, `digest`, `tags`, `catalog`;
//! `config` reads any location and is in `surgery.rs`). Each is an `Args`
//! struct and a `run` function; errors say which command and reference
//! failed, then what the registry said.
//!
//! The protocol lives in kiln-registry; moving images is
//! `kiln_image::transport::copy` between the locations of `transport.rs`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use kiln_image::transport::{CopyOptions, copy};
use kiln_image::{Platform, Reference};
use kiln_registry::{Client, ClientConfig, CredentialFiles, Credentials};

use super::transport::{Env, Location, open_sink, open_source, open_source_to};

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Pull an image from a registry into the local store
    Pull(PullArgs),
    /// Push an image from the local store to a registry
    Push(PushArgs),
    /// Copy an image between registries, layouts, archives and the store
    /// (a copy within the store is `kiln tag`)
    Copy(CopyArgs),
    /// Log in to a registry (checks the credentials, then saves them)
    Login(LoginArgs),
    /// Forget the saved credentials of a registry
    Logout(LogoutArgs),
    /// Print an image's manifest (or index) as the registry has it; with a
    /// verb, make and edit lists (indexes) as podman's `manifest` does
    Manifest(ManifestArgs),
    /// Print the digest of an image's manifest (or index)
    Digest(InspectArgs),
    /// List the tags of a repository
    Tags(RepoArgs),
    /// List the repositories of a registry
    Catalog(RepoArgs),
}

pub fn run(cmd: RegistryCommand) -> Result<()> {
    match cmd {
        RegistryCommand::Pull(a) => pull(a),
        RegistryCommand::Push(a) => push(a),
        RegistryCommand::Copy(a) => copy_cmd(a),
        RegistryCommand::Login(a) => login(a),
        RegistryCommand::Logout(a) => logout(a),
        RegistryCommand::Manifest(ManifestArgs { verb: Some(v), .. }) => {
            super::manifest_list::run(v)
        }
        RegistryCommand::Manifest(ManifestArgs {
            reference: Some(reference),
            net,
            ..
        }) => manifest(InspectArgs { reference, net }),
        RegistryCommand::Manifest(_) => {
            bail!("kiln manifest: give a registry reference, or a verb (create, add, ...)")
        }
        RegistryCommand::Digest(a) => digest(a),
        RegistryCommand::Tags(a) => tags(a),
        RegistryCommand::Catalog(a) => catalog(a),
    }
}

/// Connection options every registry command takes (skopeo's names).
#[derive(Debug, Clone, Args)]
pub struct NetOpts {
    /// Require HTTPS with verified certificates (`--tls-verify=false` allows
    /// plain HTTP and any certificate)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub tls_verify: bool,
    /// Same as --tls-verify=false
    #[arg(long)]
    pub insecure: bool,
    /// A registry (host[:port]) that may use plain HTTP or a bad certificate
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
    /// A directory of extra trusted CA certificates (*.crt, *.pem)
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Upload in PATCH chunks of this many MiB, each acknowledged before
    /// the next (default: one streaming PATCH per blob)
    #[arg(long, value_name = "MIB", env = "KILN_CHUNK_MIB")]
    pub chunk_mib: Option<usize>,
    /// Print transfer statistics to stderr
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

impl Default for NetOpts {
    /// The flags' defaults: verified TLS, plain HTTP only to loopback.
    fn default() -> NetOpts {
        NetOpts {
            tls_verify: true,
            insecure: false,
            insecure_registries: Vec::new(),
            cert_dir: None,
            chunk_mib: None,
            verbose: false,
        }
    }
}

impl NetOpts {
    pub fn client_config(&self) -> Result<ClientConfig> {
        let mut c = ClientConfig::default();
        c.transport.tls_verify = self.tls_verify && !self.insecure;
        c.transport.insecure_registries = self.insecure_registries.clone();
        if let Some(d) = &self.cert_dir {
            c.transport.add_cert_dir(d)?;
        }
        c.chunk_size = self.chunk_mib.map(|m| m.max(1) << 20);
        Ok(c)
    }

    pub fn client(&self) -> Result<Client> {
        Ok(Client::new(self.client_config()?)?)
    }
}

/// Options of commands that copy images.
#[derive(Debug, Clone, Args)]
pub struct CopyOpts {
    /// With an index, copy this platform's image (os/arch[/variant]);
    /// default: the host's
    #[arg(long)]
    pub platform: Option<String>,
    /// With an index, copy every platform's image and the index itself
    #[arg(long, conflicts_with = "platform")]
    pub all: bool,
    /// Blobs transferred at once
    #[arg(long, short = 'j', default_value_t = 4)]
    pub jobs: usize,
}

impl Default for CopyOpts {
    /// The flags' defaults: the host's platform, 4 blobs at once.
    fn default() -> CopyOpts {
        CopyOpts {
            platform: None,
            all: false,
            jobs: 4,
        }
    }
}

impl CopyOpts {
    fn options(&self, default_all: bool) -> Result<CopyOptions> {
        let platform = if self.all || (default_all && self.platform.is_none()) {
            None
        } else {
            Some(match &self.platform {
                Some(p) => Platform::parse(p)?,
                None => Platform::host(),
            })
        };
        Ok(CopyOptions {
            jobs: self.jobs.max(1),
            platform,
            require_platform: self.platform.is_some(),
        })
    }

    /// The store: the global `--root` reaches us as `KILN_ROOT`.
    fn root(&self) -> PathBuf {
        kiln_image::store::default_root()
    }
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image to pull (`registry/repo:tag`, `repo@sha256:...`)
    pub reference: String,
    #[command(flatten)]
    pub copy: CopyOpts,
    #[command(flatten)]
    pub net: NetOpts,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image in the local store
    pub name: String,
    /// Where to push it (default: NAME)
    pub destination: Option<String>,
    #[command(flatten)]
    pub copy: CopyOpts,
    #[command(flatten)]
    pub net: NetOpts,
}

#[derive(Debug, Args)]
#[command(after_help = "A bare reference whose first part is a registry host \
(a dot or a port in it, or localhost: reg.example.com/app:1, localhost:5000/app) \
is the registry, as with crane copy; docker:// says so explicitly. Other bare \
names (app:1, team/app) and kiln:NAME are the local store. A copy from the \
store to the store makes no new content: `kiln tag SOURCE DEST` names it \
directly (kiln copy still does it, e.g. to keep one --platform of an index).")]
pub struct CopyArgs {
    /// docker://REF or REGISTRY/REPO[:TAG], oci:DIR[:TAG],
    /// oci-archive:FILE[:TAG], docker-archive:FILE[:REF], kiln:NAME or a
    /// store NAME
    pub source: String,
    /// Same forms as SOURCE
    pub destination: String,
    #[command(flatten)]
    pub copy: CopyOpts,
    #[command(flatten)]
    pub net: NetOpts,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry host (`docker.io`, `ghcr.io`, `localhost:5000`)
    pub registry: String,
    #[arg(long, short = 'u')]
    pub username: Option<String>,
    /// The password (prefer --password-stdin: arguments are visible to other users)
    #[arg(long, short = 'p', conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub net: NetOpts,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    pub registry: String,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The image (`registry/repo:tag` or `@sha256:...`)
    pub reference: String,
    #[command(flatten)]
    pub net: NetOpts,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ManifestArgs {
    #[command(subcommand)]
    pub verb: Option<super::manifest_list::ManifestVerb>,
    /// The image (`registry/repo:tag` or `@sha256:...`)
    pub reference: Option<String>,
    #[command(flatten)]
    pub net: NetOpts,
}

#[derive(Debug, Args)]
pub struct RepoArgs {
    /// A repository (`registry/repo`) for `tags`, a registry host for `catalog`
    pub target: String,
    #[command(flatten)]
    pub net: NetOpts,
}

fn report(net: &NetOpts, client: &Client, what: &str, started: Instant) {
    if net.verbose {
        let s = client.stats();
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{what}: {:.2}s, {} B down, {} B up, {} requests, {} retries, {} resumes, {} mounts, {} blobs already there",
            secs,
            s.bytes_downloaded,
            s.bytes_uploaded,
            s.requests,
            s.retries,
            s.resumes,
            s.mounts,
            s.blobs_skipped
        );
    }
}

fn parse_ref(s: &str) -> Result<Reference> {
    Ok(Reference::parse(s.strip_prefix("docker://").unwrap_or(s))?)
}

fn pull(a: PullArgs) -> Result<()> {
    let r = parse_ref(&a.reference)?;
    let d = pull_to_store(&r, &a.copy, &a.net)?;
    outln!("{d}");
    Ok(())
}

/// Pulls `r` into the store, as `kiln pull` (and `kiln run` of an image
/// the store lacks) does; returns the manifest digest.
pub fn pull_to_store(
    r: &Reference,
    copy_opts: &CopyOpts,
    net: &NetOpts,
) -> Result<kiln_image::Digest> {
    let started = Instant::now();
    let client = net.client()?;
    let env = Env::new(&client, copy_opts.root());
    let run = || -> Result<kiln_image::Digest> {
        let from = Location::Docker(r.clone());
        let src = open_source(&from, &env)?;
        let dst = open_sink(&Location::Store(r.to_string()), &env, Some(&from))?;
        Ok(copy(src.as_ref(), dst.as_ref(), &copy_opts.options(false)?)?.digest)
    };
    let d = run().with_context(|| format!("pull {r}"))?;
    store_of(copy_opts)?.set_registry_digest(r, &d)?;
    report(net, &client, "pull", started);
    Ok(d)
}

fn push(a: PushArgs) -> Result<()> {
    let dest = parse_ref(a.destination.as_deref().unwrap_or(&a.name))?;
    let started = Instant::now();
    let client = a.net.client()?;
    let env = Env::new(&client, a.copy.root());
    let run = || -> Result<kiln_image::Digest> {
        let from = Location::Store(a.name.clone());
        let to = Location::Docker(dest.clone());
        let src = open_source_to(&from, &env, &to)?;
        let dst = open_sink(&to, &env, Some(&from))?;
        Ok(copy(src.as_ref(), dst.as_ref(), &a.copy.options(true)?)?.digest)
    };
    let d = run().with_context(|| format!("push {} to {dest}", a.name))?;
    let store = store_of(&a.copy)?;
    for name in [Reference::parse(&a.name).ok(), Some(dest.clone())]
        .into_iter()
        .flatten()
    {
        store.set_registry_digest(&name, &d)?;
    }
    report(&a.net, &client, "push", started);
    outln!("{d}");
    Ok(())
}

fn copy_cmd(a: CopyArgs) -> Result<()> {
    let src_loc = Location::parse_for_copy(&a.source)?;
    let dst_loc = Location::parse_for_copy(&a.destination)?;
    let started = Instant::now();
    let client = a.net.client()?;
    let env = Env::new(&client, a.copy.root());
    let run = || -> Result<kiln_image::Digest> {
        let src = open_source_to(&src_loc, &env, &dst_loc)?;
        let dst = open_sink(&dst_loc, &env, Some(&src_loc))?;
        Ok(copy(src.as_ref(), dst.as_ref(), &a.copy.options(false)?)?.digest)
    };
    let d = run().with_context(|| format!("copy {} to {}", a.source, a.destination))?;
    report(&a.net, &client, "copy", started);
    outln!("{d}");
    Ok(())
}

fn store_of(copy: &CopyOpts) -> Result<kiln_image::Store> {
    super::open_store(&copy.root())
}

/// `https://host/` and `host` name the same registry.
fn registry_host(s: &str) -> String {
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}

fn login(a: LoginArgs) -> Result<()> {
    let registry = registry_host(&a.registry);
    // As `docker login`: what the flags do not give is asked for on a
    // terminal, the password without echo.
    let tty = rustix::termios::isatty(std::io::stdin());
    let username = match a.username.clone() {
        Some(u) => u,
        None if tty && !a.password_stdin => prompt::line("Username: ")?,
        None => bail!("login {registry}: give the user name with -u"),
    };
    let password = match (&a.password, a.password_stdin) {
        (Some(p), _) => p.clone(),
        (None, true) => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("read the password from standard input")?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) if tty => prompt::secret("Password: ")?,
        (None, false) => bail!("login {registry}: give the password with --password-stdin or -p"),
    };
    if username.is_empty() {
        bail!("login {registry}: the user name is empty");
    }
    let creds = Credentials::Basic { username, password };
    let mut config = a.net.client_config()?;
    config
        .credentials_override
        .insert(registry.clone(), creds.clone());
    let client = Client::new(config)?;
    client
        .check_login(&registry)
        .with_context(|| format!("login {registry}"))?;
    CredentialFiles::from_env()
        .store(&registry, &creds)
        .with_context(|| format!("login {registry}: save the credentials"))?;
    outln!("Login Succeeded");
    Ok(())
}

fn logout(a: LogoutArgs) -> Result<()> {
    let registry = registry_host(&a.registry);
    if CredentialFiles::from_env()
        .erase(&registry)
        .with_context(|| format!("logout {registry}"))?
    {
        outln!("Removed login credentials for {registry}");
        Ok(())
    } else {
        bail!("logout {registry}: not logged in")
    }
}

fn manifest(a: InspectArgs) -> Result<()> {
    let r = parse_ref(&a.reference)?;
    let raw = a
        .net
        .client()?
        .get_manifest(&r)
        .with_context(|| format!("manifest {r}"))?;
    std::io::stdout().write_all(&raw.bytes)?;
    Ok(())
}

fn digest(a: InspectArgs) -> Result<()> {
    let r = parse_ref(&a.reference)?;
    let d = a
        .net
        .client()?
        .head_manifest(&r)
        .with_context(|| format!("digest {r}"))?
        .with_context(|| format!("digest {r}: not found"))?;
    outln!("{}", d.digest);
    Ok(())
}

fn tags(a: RepoArgs) -> Result<()> {
    let r = parse_ref(&a.target)?;
    let tags = a
        .net
        .client()?
        .tags(&r)
        .with_context(|| format!("tags {}", r.name()))?;
    let mut out = std::io::stdout().lock();
    for t in tags {
        writeln!(out, "{t}")?;
    }
    Ok(())
}

fn catalog(a: RepoArgs) -> Result<()> {
    let registry = registry_host(&a.target);
    let repos = a
        .net
        .client()?
        .catalog(&registry)
        .with_context(|| format!("catalog {registry}"))?;
    let mut out = std::io::stdout().lock();
    for r in repos {
        writeln!(out, "{r}")?;
    }
    Ok(())
}

/// Questions on the terminal for `login`.
mod prompt {
    use std::io::{BufRead, Write};

    use anyhow::{Context, Result};
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};

    pub fn line(question: &str) -> Result<String> {
        eprint!("{question}");
        std::io::stderr().flush().ok();
        let mut s = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut s)
            .context("read from the terminal")?;
        Ok(s.trim_end_matches(['\n', '\r']).to_string())
    }

    /// Reads a line with echo off; echo comes back even if reading fails.
    pub fn secret(question: &str) -> Result<String> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).context("read the terminal's settings")?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        tcsetattr(&stdin, OptionalActions::Flush, &quiet).context("turn off echo")?;
        let answer = line(question);
        let restored = tcsetattr(&stdin, OptionalActions::Flush, &saved);
        eprintln!();
        restored.context("restore the terminal's echo")?;
        answer
    }
}
