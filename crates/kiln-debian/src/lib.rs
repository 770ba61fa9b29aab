//! Debian packages without `RUN`: reads a suite's `InRelease` from a
//! mirror, verifies its OpenPGP signature against a keyring, checks each
//! `Packages` index and `.deb` against the signed hashes, resolves
//! dependencies, pins the result in a lock ([`lock::Lock`]), and unpacks
//! the packages' data into image layers with the dpkg records that
//! `dpkg-query`, scanners and SBOM tools read.
//!
//! It does not run maintainer scripts (packages that have them are named
//! in a warning), does not know about build files or the CLI, and uses
//! only kiln-image below it: the declarative frontend (kiln-build's
//! `declarative`) calls [`resolve_lock`] and [`install::install`].

pub mod control;
pub mod deb;
pub mod fetch;
pub mod index;
pub mod install;
pub mod lock;
pub mod release;
pub mod resolve;
pub mod sources;
pub mod version;

use std::io::Read;
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

pub use fetch::Fetcher;
pub use install::{Installed, install};
pub use lock::{Lock, LockedPackage, LockedRelease};

/// The keyring apt uses for Debian's archive (package
/// `debian-archive-keyring`).
pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Io(String),
    #[error("fetching {url}: {msg}")]
    Fetch { url: String, msg: String },
    #[error("InRelease signature check failed: {0}")]
    Signature(String),
    #[error("{what}: SHA-256 mismatch: expected {want}, got {got}; refused")]
    Hash {
        what: String,
        want: String,
        got: String,
    },
    #[error("no package {name:?} on the mirror{}", suggest(suggestions))]
    UnknownPackage {
        name: String,
        suggestions: Vec<String>,
    },
    #[error("cannot satisfy {dependency}, needed by {}: {why}", show_chain(chain))]
    Unsatisfiable {
        dependency: String,
        chain: Vec<String>,
        why: String,
    },
    #[error(
        "{package} {field} {relation}, and {other} is chosen too: they cannot be installed together (change the package list or add the one to exclude)"
    )]
    Conflict {
        package: String,
        field: String,
        relation: String,
        other: String,
    },
    #[error("package {package}: refused member {member:?}: {reason}")]
    Hostile {
        package: String,
        member: String,
        reason: String,
    },
}

fn suggest(s: &[String]) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", s.join(", "))
    }
}

fn show_chain(c: &[String]) -> String {
    if c.is_empty() {
        "the build file".into()
    } else {
        c.join(" → ")
    }
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What a build file asks of Debian.
#[derive(Debug, Clone)]
pub struct Request {
    /// The mirror root (`http://deb.debian.org/debian`); `None`: the one
    /// the host's apt sources name for `suite`.
    pub mirror: Option<String>,
    pub suite: String,
    pub components: Vec<String>,
    /// Debian's name for the architecture (`amd64`, `arm64`, …).
    pub arch: String,
    /// `None`: the host apt source's `Signed-By`, else [`DEBIAN_KEYRING`].
    pub keyring: Option<PathBuf>,
    pub packages: Vec<String>,
    pub essential: bool,
    /// Names that dependencies may not pull in (counted as installed).
    pub exclude: Vec<String>,
    /// Refuse an `InRelease` whose `Valid-Until` has passed (apt's
    /// `Check-Valid-Until`); off for archive snapshots.
    pub check_valid_until: bool,
}

/// Debian's architecture name for an OCI one (`amd64`, `arm64`,
/// `arm`/`v7` → `armhf`, …).
pub fn debian_arch(arch: &str, variant: Option<&str>) -> Result<String, DebianError> {
    Ok(match (arch, variant) {
        ("amd64", _) => "amd64",
        ("arm64", _) => "arm64",
        ("arm", Some("v5")) => "armel",
        ("arm", _) => "armhf",
        ("386", _) => "i386",
        ("ppc64le", _) => "ppc64el",
        ("s390x", _) => "s390x",
        ("mips64le", _) => "mips64el",
        ("riscv64", _) => "riscv64",
        (a, _) => {
            return Err(DebianError::Invalid(format!(
                "no Debian architecture for platform architecture {a:?}"
            )));
        }
    }
    .to_string())
}

/// Fetches and verifies the suite's `InRelease`, its `Packages` indexes
/// (checked against the signed hashes, cached), and resolves the request
/// into a lock.
pub fn resolve_lock(fetcher: &Fetcher, req: &Request) -> Result<Lock, DebianError> {
    let sources = sources::host_sources(std::path::Path::new("/etc/apt"));
    let host = sources::mirror_for(&sources, &req.suite);
    let mirror = match (&req.mirror, host) {
        (Some(m), _) => m.clone(),
        (None, Some(s)) => s.uri.clone(),
        (None, None) => {
            return Err(DebianError::Invalid(format!(
                "no mirror for suite {:?}: the host's apt sources name none; set `mirror` in [debian]",
                req.suite
            )));
        }
    };
    let mirror = mirror.trim_end_matches('/').to_string();
    let keyring = req
        .keyring
        .clone()
        .or_else(|| {
            host.filter(|_| req.mirror.is_none())
                .and_then(|s| s.signed_by.clone())
        })
        .unwrap_or_else(|| PathBuf::from(DEBIAN_KEYRING));
    let keys = release::load_keyring(&keyring)?;
    let url = format!("{mirror}/dists/{}/InRelease", req.suite);
    let bytes = fetcher.get(&url)?;
    let rel = release::verify(&bytes, &url, &req.suite, &keys)?;
    if req.check_valid_until {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        release::check_valid_until(&rel.fields, &url, now)?;
    }
    let mut index = index::Index::default();
    for comp in &req.components {
        index.merge(packages_index(
            fetcher, &mirror, &req.suite, &rel, comp, &req.arch,
        )?);
    }
    let chosen = resolve::resolve(&index, &req.packages, req.essential, &req.exclude)?;
    Ok(Lock {
        version: 1,
        release: LockedRelease {
            mirror,
            suite: req.suite.clone(),
            url,
            sha256: rel.file_sha256.clone(),
            signer: rel.signer.clone(),
            date: rel.fields.get("Date").unwrap_or("").to_string(),
            requested: req.packages.clone(),
            essential: req.essential,
            excluded: req.exclude.clone(),
            architectures: vec![req.arch.clone()],
        },
        packages: chosen.iter().map(LockedPackage::of).collect(),
    })
}

/// One component's `Packages` for `arch`: the compressed form the signed
/// Release lists (gzip is preferred: it decompresses fastest), checked
/// against its hash.
fn packages_index(
    fetcher: &Fetcher,
    mirror: &str,
    suite: &str,
    rel: &release::Release,
    comp: &str,
    arch: &str,
) -> Result<index::Index, DebianError> {
    let base = format!("{comp}/binary-{arch}/Packages");
    let Some((path, (sha, size))) = [".gz", ".xz", ""].iter().find_map(|ext| {
        let p = format!("{base}{ext}");
        rel.sha256.get(&p).map(|h| (p, h.clone()))
    }) else {
        return Err(DebianError::Invalid(format!(
            "the signed Release of {suite} lists no {base}: is {comp:?}/{arch:?} on this mirror?"
        )));
    };
    let url = format!("{mirror}/dists/{suite}/{path}");
    let file = fetcher.get_verified(&url, &sha, size)?;
    let raw =
        std::fs::read(&file).map_err(|e| DebianError::Io(format!("{}: {e}", file.display())))?;
    let mut text = String::new();
    let mut reader: Box<dyn Read> = if path.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(&raw[..]))
    } else if path.ends_with(".xz") {
        Box::new(lzma_rust2::XzReader::new(&raw[..], true))
    } else {
        Box::new(&raw[..])
    };
    reader
        .read_to_string(&mut text)
        .map_err(|e| DebianError::Invalid(format!("{url}: {e}")))?;
    index::Index::parse(&text, arch).map_err(|e| DebianError::Invalid(format!("{url}: {e}")))
}
