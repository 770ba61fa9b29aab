//! Git repositories for ADD and for git build contexts
//! (`URL#ref:subdir`), cloned with the `git` command. The source is
//! untrusted (a Dockerfile names it), so git runs on a short leash:
//!
//! - only http(s), git and ssh URLs; a repository on the build host
//!   (`file://`, a path) is refused, and so are git's `ext::` transports
//!   (`GIT_ALLOW_PROTOCOL`, `GIT_PROTOCOL_FROM_USER=0`);
//! - the ref must be a valid ref name or commit (`git check-ref-format
//!   --allow-onelevel`), never an option, and `--` precedes the URL;
//! - a clean environment (PATH, the user's proxy and CA variables, HOME
//!   an empty directory) and neither system nor global git config, so no
//!   `url.*.insteadOf`, credential helper or hook of the user's applies;
//! - unless the build host's network is allowed, the remote host must not
//!   be one of its own addresses: checked before git starts, pinned for
//!   http(s) (`http.curloptResolve`), and redirects are not followed.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::BuildError;
use crate::context::clean_rel;
use crate::host_net::{CheckError, HostNetwork, check_host, local_kind, proxy_configured};

/// The transports git may use.
const ALLOWED_PROTOCOLS: &str = "https:http:git:ssh";

/// Environment variables passed on to git besides the proxies
/// ([`crate::host_net::PROXY_VARS`]): where programs are, the proxy
/// exceptions and the user's certificate authorities.
const PASSED_ENV: &[&str] = &[
    "PATH",
    "no_proxy",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
];

/// A git source split into its parts: `URL[#ref[:subdir]]`.
#[derive(Debug, PartialEq, Eq)]
pub struct GitSource<'a> {
    pub url: &'a str,
    pub reference: &'a str,
    pub subdir: Option<&'a str>,
}

impl<'a> GitSource<'a> {
    pub fn parse(source: &'a str) -> GitSource<'a> {
        match source.split_once('#') {
            None => GitSource {
                url: source,
                reference: "",
                subdir: None,
            },
            Some((url, frag)) => match frag.split_once(':') {
                Some((r, sub)) => GitSource {
                    url,
                    reference: r,
                    subdir: Some(sub),
                },
                None => GitSource {
                    url,
                    reference: frag,
                    subdir: None,
                },
            },
        }
    }
}

/// Whether `r` is a full commit id (SHA-1 or SHA-256).
fn is_commit(r: &str) -> bool {
    (r.len() == 40 || r.len() == 64) && r.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks a ref as `git check-ref-format --allow-onelevel` does, and
/// refuses one that git could read as an option.
pub fn check_ref(r: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{r:?} is not a valid git ref: {why}"));
    if r.is_empty() || is_commit(r) {
        return Ok(());
    }
    if r.starts_with('-') {
        return bad("it begins with '-'");
    }
    if let Some(c) = r
        .chars()
        .find(|c| c.is_ascii_control() || " ~^:?*[\\".contains(*c))
    {
        return bad(&format!("it contains {c:?}"));
    }
    if r.contains("..") || r.contains("@{") || r == "@" {
        return bad("it contains '..' or '@{'");
    }
    if r.starts_with('/') || r.ends_with('/') || r.ends_with('.') || r.contains("//") {
        return bad("misplaced '/' or '.'");
    }
    if r.split('/')
        .any(|c| c.starts_with('.') || c.ends_with(".lock"))
    {
        return bad("a component begins with '.' or ends with '.lock'");
    }
    Ok(())
}

/// The remote's host and port, from an http(s), git or ssh URL or the
/// scp-like `user@host:path`. Anything else (a path, `file://`, `ext::`)
/// is refused.
fn remote_host(url: &str) -> Result<(String, u16), String> {
    if url.starts_with('-') {
        return Err("a repository URL cannot begin with '-'".into());
    }
    let scheme = url.split_once("://").map(|(s, _)| s);
    let (host, port) = match scheme {
        Some(s @ ("http" | "https" | "git" | "ssh")) => {
            let u = reqwest::Url::parse(url).map_err(|e| format!("not a valid URL: {e}"))?;
            let default = match s {
                "http" => 80,
                "https" => 443,
                "git" => 9418,
                _ => 22,
            };
            let host = u.host_str().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            (host.to_string(), u.port().unwrap_or(default))
        }
        Some("file") => {
            return Err(
                "a repository on the build host (file://) is refused: only http(s), git \
                 and ssh repositories are fetched"
                    .into(),
            );
        }
        Some(s) => {
            return Err(format!(
                "the {s}:// transport is refused: only http(s), git and ssh repositories are fetched"
            ));
        }
        None if url.starts_with("git@") => {
            // scp-like: git@host:path, host possibly [bracketed]. ('@' is
            // no scheme character: git never reads this as `helper::…`.)
            let rest = &url["git@".len()..];
            let host = match rest.strip_prefix('[') {
                Some(r) => r.split(']').next().unwrap_or_default(),
                None => rest.split(':').next().unwrap_or_default(),
            };
            (host.to_string(), 22)
        }
        None => {
            return Err(
                "only http(s), git and ssh repositories are fetched (a path on the build \
                 host is refused)"
                    .into(),
            );
        }
    };
    if host.is_empty() || host.starts_with('-') {
        return Err(format!("{host:?} is not a valid repository host"));
    }
    Ok((host, port))
}

/// A checkout: the directory to copy (the subdirectory, if one was asked
/// for) and the commit.
pub struct Checkout {
    pub dir: PathBuf,
    pub commit: String,
}

/// What `git` needs besides its arguments.
struct Git<'a> {
    what: &'a str,
    source: &'a str,
    home: PathBuf,
    /// `-c` settings that come before every command.
    config: Vec<String>,
    no_proxy: bool,
}

impl Git<'_> {
    fn err(&self, m: String) -> BuildError {
        BuildError::Instruction(format!("{} {}: {m}", self.what, self.source))
    }

    fn run(&self, args: &[&str], cwd: Option<&Path>) -> Result<String, BuildError> {
        let mut c = Command::new("git");
        c.env_clear();
        for v in PASSED_ENV.iter().chain(crate::host_net::PROXY_VARS) {
            if let Some(x) = std::env::var_os(v) {
                c.env(v, x);
            }
        }
        c.env("HOME", &self.home)
            .env("LC_ALL", "C")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ALLOW_PROTOCOL", ALLOWED_PROTOCOLS)
            .env("GIT_PROTOCOL_FROM_USER", "0")
            .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
        if self.no_proxy {
            c.env("NO_PROXY", "*").env("no_proxy", "*");
        }
        c.args(["-c", "advice.detachedHead=false"]);
        for setting in &self.config {
            c.args(["-c", setting]);
        }
        c.args(args).stdin(Stdio::null());
        if let Some(d) = cwd {
            c.current_dir(d);
        }
        let out = c
            .output()
            .map_err(|e| self.err(format!("running git: {e}")))?;
        if !out.status.success() {
            return Err(self.err(format!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// `HOST:PORT:ADDR,…` for curl's resolve list, so git connects to the
/// addresses that were checked and no others.
fn curl_resolve(host: &str, port: u16, addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs
        .iter()
        .map(|a| match a {
            SocketAddr::V4(v4) => v4.ip().to_string(),
            SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
        })
        .collect();
    format!("{host}:{port}:{}", list.join(","))
}

/// Clones `source` (`URL#ref[:subdir]`) for ADD into `dir/repo`.
pub fn clone_git(
    source: &str,
    dir: &Path,
    keep_git_dir: bool,
    checksum: Option<&str>,
    access: HostNetwork,
) -> Result<Checkout, BuildError> {
    clone_git_for("ADD", source, dir, keep_git_dir, checksum, access)
}

/// [`clone_git`] for `what` (an instruction, or the build context), which
/// errors name.
pub fn clone_git_for(
    what: &str,
    source: &str,
    dir: &Path,
    keep_git_dir: bool,
    checksum: Option<&str>,
    access: HostNetwork,
) -> Result<Checkout, BuildError> {
    let err = |m: String| BuildError::Instruction(format!("{what} {source}: {m}"));
    let GitSource {
        url,
        reference,
        subdir,
    } = GitSource::parse(source);
    check_ref(reference).map_err(err)?;
    let (host, port) = remote_host(url).map_err(err)?;
    let home = dir.join("git-home");
    fs::create_dir_all(&home).map_err(|e| err(format!("{}: {e}", home.display())))?;
    let mut git = Git {
        what,
        source,
        home,
        config: Vec::new(),
        no_proxy: false,
    };
    match access {
        HostNetwork::Refused => {
            let http = url.starts_with("http://") || url.starts_with("https://");
            let addrs = match check_host(&host, port) {
                Ok(addrs) => Some(addrs),
                // Behind a proxy, only the proxy may know external names.
                Err(CheckError::Resolve(_)) if http && proxy_configured() => None,
                Err(e) => return Err(err(e.to_string())),
            };
            if http {
                // A redirect would go where nobody checked.
                git.config.push("http.followRedirects=false".into());
                if let Some(addrs) = addrs.filter(|_| host.parse::<std::net::IpAddr>().is_err()) {
                    git.config.push(format!(
                        "http.curloptResolve={}",
                        curl_resolve(&host, port, &addrs)
                    ));
                }
            }
        }
        HostNetwork::Allowed => {
            // A proxy cannot reach the builder's own network.
            git.no_proxy = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| local_kind(ip).is_some());
        }
    }
    let repo = dir.join("repo");
    let repo_s = repo.to_string_lossy().into_owned();
    let branch = format!("--branch={reference}");
    let mut args = vec!["clone", "--quiet"];
    if !reference.is_empty() && !is_commit(reference) {
        args.push(&branch);
    }
    // A shallow clone is cheaper, but dumb HTTP servers cannot serve one:
    // try it first, then fall back to a full clone.
    let mut shallow = args.clone();
    shallow.extend(["--depth=1", "--", url, &repo_s]);
    if git.run(&shallow, None).is_err() {
        let _ = fs::remove_dir_all(&repo);
        args.extend(["--", url, &repo_s]);
        git.run(&args, None)?;
    }
    if is_commit(reference) {
        git.run(&["checkout", "--quiet", reference, "--"], Some(&repo))?;
    }
    let commit = git.run(&["rev-parse", "HEAD"], Some(&repo))?;
    if let Some(want) = checksum
        && !commit.starts_with(want.trim_start_matches("sha1:"))
    {
        return Err(err(format!(
            "checksum mismatch: expected commit {want}, got {commit}"
        )));
    }
    if !keep_git_dir {
        fs::remove_dir_all(repo.join(".git")).map_err(|e| err(e.to_string()))?;
    }
    let dir = match subdir {
        Some(sub) => subdir_of(&repo, sub).map_err(err)?,
        None => repo,
    };
    Ok(Checkout { dir, commit })
}

/// `sub` inside the checkout `repo`, refusing one that leaves it (by
/// `..` or a symlink) or is not a directory.
fn subdir_of(repo: &Path, sub: &str) -> Result<PathBuf, String> {
    let clean = clean_rel(sub).map_err(|e| e.to_string())?;
    if clean.is_empty() {
        return Ok(repo.to_path_buf());
    }
    let root = fs::canonicalize(repo).map_err(|e| e.to_string())?;
    let not_inside = || format!("subdirectory {sub:?} is not a directory inside the repository");
    let dir = fs::canonicalize(root.join(&clean)).map_err(|_| not_inside())?;
    if !dir.starts_with(&root) || !dir.is_dir() {
        return Err(not_inside());
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_split_into_url_ref_and_subdir() {
        assert_eq!(
            GitSource::parse("https://h/r.git#v1:docs"),
            GitSource {
                url: "https://h/r.git",
                reference: "v1",
                subdir: Some("docs")
            }
        );
        assert_eq!(GitSource::parse("git@h:r.git").reference, "");
    }

    #[test]
    fn refs_are_never_options() {
        for ok in [
            "",
            "main",
            "v1.2.3",
            "feature/x",
            "0123456789abcdef0123456789abcdef01234567",
        ] {
            assert_eq!(check_ref(ok), Ok(()), "{ok}");
        }
        for bad in [
            "--pathspec-from-file=/etc/shadow",
            "-b",
            "--upload-pack=touch /tmp/x",
            "a..b",
            "a b",
            "x~1",
            "ref.lock",
            ".hidden",
            "a//b",
            "trailing/",
            "@",
            "a@{1}",
            "tab\there",
        ] {
            assert!(check_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_network_transports() {
        assert_eq!(
            remote_host("https://example.com/r.git"),
            Ok(("example.com".into(), 443))
        );
        assert_eq!(
            remote_host("git://example.com:1234/r.git"),
            Ok(("example.com".into(), 1234))
        );
        assert_eq!(
            remote_host("git@example.com:org/r.git"),
            Ok(("example.com".into(), 22))
        );
        assert_eq!(remote_host("ssh://git@[::1]/r.git"), Ok(("::1".into(), 22)));
        for bad in [
            "file:///etc/r.git",
            "/srv/r.git",
            "../r.git",
            "ext::sh -c touch% /tmp/pwned",
            "fd::3",
            "-uhost:r",
            "ssh://-oProxyCommand=x/r.git",
        ] {
            assert!(remote_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn curl_resolve_brackets_ipv6() {
        let a: Vec<SocketAddr> = vec![
            "192.0.2.1:443".parse().unwrap(),
            "[2001:db8::1]:443".parse().unwrap(),
        ];
        assert_eq!(curl_resolve("h", 443, &a), "h:443:192.0.2.1,[2001:db8::1]");
    }
}
