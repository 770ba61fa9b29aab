//! The main build context and the Dockerfile, wherever they come from:
//!
//! - a directory (the Dockerfile is `-f PATH`, relative to the current
//!   directory, or `CONTEXT/Dockerfile`);
//! - `-`: standard input holds either a tar (plain, gzip, bzip2, xz or
//!   zstd, told apart by magic bytes and the tar header's `ustar` magic,
//!   as docker does) with the Dockerfile inside, or a bare Dockerfile and
//!   no context at all;
//! - a git repository (`https://…/repo.git#ref:subdir`, `git://…`,
//!   `git@host:…`), cloned with ADD's git code;
//! - an `http(s)://` URL of a tarball (or of a bare Dockerfile).
//!
//! For the last three, `-f` names a file inside the context. A remote
//! context may reach the build host's own network only where its URL
//! names it (the user typed that) or with `--allow network.host`: a
//! redirect or a git server elsewhere cannot lead there. Tars are
//! unpacked by kiln-image's extractor, which resolves every path inside
//! its target, into a temporary directory under the store that goes away
//! with the [`Inputs`]. Files read here (the Dockerfile, `.dockerignore`)
//! must resolve inside the context too, so a symlink in a hostile tar
//! cannot make kiln read a host file.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::BuildError;
use crate::context::clean_rel;
use crate::host_net::{HostNetwork, names_host_network};

/// What the CONTEXT argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextArg {
    Dir(PathBuf),
    Stdin,
    Git(String),
    Url(String),
}

impl ContextArg {
    pub fn parse(arg: &str) -> ContextArg {
        if arg == "-" {
            ContextArg::Stdin
        } else if is_git_context(arg) {
            ContextArg::Git(match arg.strip_prefix("github.com/") {
                Some(rest) => format!("https://github.com/{rest}"),
                None => arg.to_string(),
            })
        } else if crate::remote::is_url(arg) {
            ContextArg::Url(arg.to_string())
        } else {
            ContextArg::Dir(PathBuf::from(arg))
        }
    }
}

/// docker's rule for a git context: a git scheme or `git@`, GitHub's
/// short form, or an http(s) URL whose path ends in `.git`. A local
/// directory named `x.git` stays a directory.
pub fn is_git_context(arg: &str) -> bool {
    let base = arg.split('#').next().unwrap_or(arg);
    arg.starts_with("git://")
        || arg.starts_with("git@")
        || arg.starts_with("github.com/")
        || (crate::remote::is_url(arg) && base.ends_with(".git"))
}

/// Where the context's files are, for the solver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextKind {
    /// A directory of the user's: its hash index is kept between builds.
    Local,
    /// Unpacked or cloned for this build only: no index is kept.
    Temporary,
    /// None at all (a bare Dockerfile on standard input).
    Absent,
}

/// The context directory, the Dockerfile and `.dockerignore`.
pub struct Inputs {
    pub context_dir: PathBuf,
    pub kind: ContextKind,
    /// For messages.
    pub dockerfile_name: String,
    pub dockerfile: String,
    pub dockerignore: Option<String>,
    _scratch: Option<tempfile::TempDir>,
}

/// Reads the context and the Dockerfile. `file` is `-f` (`-` for standard
/// input); `stdin` is read only when `-f -` or CONTEXT is `-`. Fetched
/// and unpacked contexts go to a temporary directory in `scratch`.
/// `host_network` is what `--allow` says of the build host's network.
pub fn load(
    context: &ContextArg,
    file: Option<&str>,
    stdin: &mut dyn Read,
    scratch: &Path,
    host_network: HostNetwork,
) -> Result<Inputs, BuildError> {
    let access = |url: &str| {
        if host_network == HostNetwork::Allowed || names_host_network(url) {
            HostNetwork::Allowed
        } else {
            HostNetwork::Refused
        }
    };
    let usage = |m: &str| Err(BuildError::Usage(m.to_string()));
    if file == Some("-") && *context == ContextArg::Stdin {
        return usage(
            "-f - and CONTEXT -: standard input cannot hold both the Dockerfile and the context",
        );
    }
    let stdin_dockerfile = |stdin: &mut dyn Read| -> Result<String, BuildError> {
        let mut s = String::new();
        stdin.read_to_string(&mut s).map_err(|e| {
            BuildError::Usage(format!("reading the Dockerfile from standard input: {e}"))
        })?;
        Ok(s)
    };
    let temp = || {
        tempfile::Builder::new()
            .prefix("context-")
            .tempdir_in(scratch)
            .map_err(BuildError::file("temporary context directory"))
    };
    let (dir, kind, tmp, bare) = match context {
        ContextArg::Dir(dir) => {
            if !dir.is_dir() {
                return Err(BuildError::Context(format!(
                    "{} is not a directory",
                    dir.display()
                )));
            }
            let (name, text) = match file {
                Some("-") => ("Dockerfile".to_string(), stdin_dockerfile(stdin)?),
                Some(f) => (f.to_string(), read_host(Path::new(f))?),
                None => {
                    let p = dir.join("Dockerfile");
                    (p.display().to_string(), read_host(&p)?)
                }
            };
            // `<Dockerfile>.dockerignore` beside a custom Dockerfile wins
            // over the context's `.dockerignore`.
            let dockerignore = file
                .filter(|f| *f != "-")
                .and_then(|f| fs::read_to_string(format!("{f}.dockerignore")).ok())
                .or_else(|| fs::read_to_string(dir.join(".dockerignore")).ok());
            return Ok(Inputs {
                context_dir: dir.clone(),
                kind: ContextKind::Local,
                dockerfile_name: name,
                dockerfile: text,
                dockerignore,
                _scratch: None,
            });
        }
        ContextArg::Stdin => {
            let tmp = temp()?;
            let dir = tmp.path().join("context");
            fs::create_dir(&dir).map_err(|e| BuildError::Io(e.to_string()))?;
            let bare = unpack_or_read(stdin, &dir, "standard input")?;
            let kind = if bare.is_some() {
                ContextKind::Absent
            } else {
                ContextKind::Temporary
            };
            (dir, kind, tmp, bare)
        }
        ContextArg::Url(url) => {
            let tmp = temp()?;
            let f =
                crate::remote::fetch_url_for("build context", url, tmp.path(), None, access(url))?;
            let dir = tmp.path().join("context");
            fs::create_dir(&dir).map_err(|e| BuildError::Io(e.to_string()))?;
            let mut r = fs::File::open(&f.path).map_err(|e| BuildError::Io(e.to_string()))?;
            let bare = unpack_or_read(&mut r, &dir, url)?;
            let _ = fs::remove_file(&f.path);
            let kind = if bare.is_some() {
                ContextKind::Absent
            } else {
                ContextKind::Temporary
            };
            (dir, kind, tmp, bare)
        }
        ContextArg::Git(url) => {
            let tmp = temp()?;
            let dir = crate::git::clone_git_for(
                "build context",
                url,
                tmp.path(),
                false,
                None,
                access(url.split('#').next().unwrap_or(url)),
            )?
            .dir;
            (dir, ContextKind::Temporary, tmp, None)
        }
    };
    let (name, text) = match (file, bare) {
        (Some("-"), None) => ("Dockerfile".to_string(), stdin_dockerfile(stdin)?),
        (Some(_), Some(_)) => {
            return usage(
                "-f names a file inside the context, but the context was a bare Dockerfile (no tar)",
            );
        }
        (_, Some(text)) => ("Dockerfile".to_string(), text),
        (f, None) => {
            let rel = f.unwrap_or("Dockerfile");
            let text = read_confined(&dir, rel)?.ok_or_else(|| {
                BuildError::Context(format!("the context has no Dockerfile at {rel:?}"))
            })?;
            (rel.to_string(), text)
        }
    };
    let dockerignore = match file.filter(|f| *f != "-") {
        Some(f) => read_confined(&dir, &format!("{f}.dockerignore"))?,
        None => None,
    };
    let dockerignore = match dockerignore {
        Some(d) => Some(d),
        None => read_confined(&dir, ".dockerignore")?,
    };
    Ok(Inputs {
        context_dir: dir,
        kind,
        dockerfile_name: name,
        dockerfile: text,
        dockerignore,
        _scratch: Some(tmp),
    })
}

fn read_host(p: &Path) -> Result<String, BuildError> {
    fs::read_to_string(p).map_err(|e| BuildError::Context(format!("reading {}: {e}", p.display())))
}

/// A context file's text, if it exists, refusing one that resolves (by
/// `..` or a symlink) outside `root`.
fn read_confined(root: &Path, rel: &str) -> Result<Option<String>, BuildError> {
    let root = fs::canonicalize(root).map_err(|e| BuildError::Context(e.to_string()))?;
    let clean = clean_rel(rel)?;
    let real = match fs::canonicalize(root.join(&clean)) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(BuildError::Context(format!("{rel}: {e}"))),
    };
    if !real.starts_with(&root) {
        return Err(BuildError::Context(format!(
            "{rel:?} points outside the build context"
        )));
    }
    fs::read_to_string(&real)
        .map(Some)
        .map_err(|e| BuildError::Context(format!("reading {rel}: {e}")))
}

const BZIP2_MAGIC: &[u8] = b"BZh";
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Unpacks `r` into `dir` if it is a tar (compressed or not); otherwise
/// returns its text, a bare Dockerfile. As docker decides: anything
/// compressed is a tar, and an uncompressed stream is one when its first
/// header carries the `ustar` magic.
fn unpack_or_read(r: &mut dyn Read, dir: &Path, what: &str) -> Result<Option<String>, BuildError> {
    let mut head = Vec::with_capacity(512);
    Read::take(&mut *r, 512)
        .read_to_end(&mut head)
        .map_err(|e| BuildError::Context(format!("{what}: {e}")))?;
    let compressed = [BZIP2_MAGIC, XZ_MAGIC, GZIP_MAGIC, ZSTD_MAGIC]
        .iter()
        .any(|m| head.starts_with(m));
    let is_tar = head.len() >= 262 && &head[257..262] == b"ustar";
    let mut whole = io::Cursor::new(head.clone()).chain(r);
    if !compressed && !is_tar {
        let mut bytes = Vec::new();
        whole
            .read_to_end(&mut bytes)
            .map_err(|e| BuildError::Context(format!("{what}: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|_| {
            BuildError::Context(format!(
                "{what} is neither a tar archive nor a Dockerfile (not UTF-8 text)"
            ))
        })?;
        return Ok(Some(text));
    }
    let tar: Box<dyn Read + '_> = if head.starts_with(BZIP2_MAGIC) {
        Box::new(bzip2::read::MultiBzDecoder::new(whole))
    } else if head.starts_with(XZ_MAGIC) {
        Box::new(lzma_rust2::XzReader::new(io::BufReader::new(whole), true))
    } else {
        // gzip, zstd or plain: kiln-image's layer reader knows them.
        kiln_image::layer::open_layer(whole)
            .map_err(|e| BuildError::Context(format!("{what}: {e}")))?
            .1
    };
    let opts = kiln_image::layer::ExtractOptions {
        // A context has no business with device nodes or xattrs.
        skip_devices: true,
        xattrs: false,
        ..Default::default()
    };
    kiln_image::layer::extract_tar(tar, dir, &opts)
        .map_err(|e| BuildError::Context(format!("{what}: unpacking the context tar: {e}")))?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_args() {
        assert_eq!(ContextArg::parse("-"), ContextArg::Stdin);
        assert_eq!(
            ContextArg::parse("https://h/r.git#main:sub"),
            ContextArg::Git("https://h/r.git#main:sub".into())
        );
        assert_eq!(
            ContextArg::parse("git@host:org/r"),
            ContextArg::Git("git@host:org/r".into())
        );
        assert_eq!(
            ContextArg::parse("github.com/o/r"),
            ContextArg::Git("https://github.com/o/r".into())
        );
        assert_eq!(
            ContextArg::parse("https://h/ctx.tar.gz"),
            ContextArg::Url("https://h/ctx.tar.gz".into())
        );
        assert_eq!(
            ContextArg::parse("dir.git"),
            ContextArg::Dir(PathBuf::from("dir.git"))
        );
    }

    #[test]
    fn bare_dockerfile_is_text() {
        let d = tempfile::tempdir().unwrap();
        let got = unpack_or_read(&mut &b"FROM scratch\n"[..], d.path(), "stdin").unwrap();
        assert_eq!(got.as_deref(), Some("FROM scratch\n"));
        let err = unpack_or_read(&mut &[0xffu8, 0xfe, 0][..], d.path(), "stdin").unwrap_err();
        assert!(err.to_string().contains("neither a tar"), "{err}");
    }
}
