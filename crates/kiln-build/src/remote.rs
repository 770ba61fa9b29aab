//! ADD's remote sources: a URL, fetched once per build into a scratch
//! file (mode 0600, mtime from Last-Modified, as Docker does), or a git
//! repository (`…/repo.git#ref`, `git@host:repo`), cloned with the `git`
//! command. `--checksum` is verified before anything is used.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_image::{Digest, Hasher};

use crate::BuildError;

/// Whether an ADD source names a git repository.
pub fn is_git(source: &str) -> bool {
    let base = source.split('#').next().unwrap_or(source);
    source.starts_with("git@") || source.starts_with("git://") || base.ends_with(".git")
}

pub fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn loopback(url: &str) -> bool {
    let h = host_of(url);
    h == "localhost" || h == "::1" || h.starts_with("127.")
}

/// A downloaded file: where it is, its name from the URL, its digest.
pub struct Fetched {
    pub path: PathBuf,
    pub name: String,
    pub digest: Digest,
}

/// Downloads `url` into `dir`, verifying `checksum` (`sha256:…`) if given.
pub fn fetch_url(url: &str, dir: &Path, checksum: Option<&str>) -> Result<Fetched, BuildError> {
    fetch_url_for("ADD", url, dir, checksum)
}

/// [`fetch_url`] for `what` (an instruction, or the build context), which
/// errors name.
pub fn fetch_url_for(
    what: &str,
    url: &str,
    dir: &Path,
    checksum: Option<&str>,
) -> Result<Fetched, BuildError> {
    let err = |m: String| BuildError::Instruction(format!("{what} {url}: {m}"));
    let mut builder =
        reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(600));
    if loopback(url) {
        // A proxy cannot reach the builder's own loopback.
        builder = builder.no_proxy();
    }
    let client = builder.build().map_err(|e| err(e.to_string()))?;
    let mut resp = client.get(url).send().map_err(|e| err(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(err(format!("HTTP {}", resp.status())));
    }
    let name = url
        .split(['?', '#'])
        .next()
        .and_then(|u| u.trim_end_matches('/').rsplit('/').next())
        .filter(|n| !n.is_empty() && !n.contains("://") && *n != "." && *n != "..")
        .unwrap_or("index.html")
        .to_string();
    let mtime = resp
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date);
    let path = dir.join(format!(
        "download-{}",
        Digest::sha256_of(url.as_bytes()).short()
    ));
    let mut file = fs::File::create(&path).map_err(|e| err(e.to_string()))?;
    let mut hashing = kiln_image::HashingWriter::new(&mut file);
    resp.copy_to(&mut hashing).map_err(|e| err(e.to_string()))?;
    let (_, digest, _) = hashing.finish();
    drop(file);
    if let Some(want) = checksum {
        let want: Digest = want.parse().map_err(|e| err(format!("--checksum: {e}")))?;
        let got = if want.algorithm() == digest.algorithm() {
            digest.clone()
        } else {
            let mut h = Hasher::new(want.algorithm());
            h.update(&fs::read(&path).map_err(|e| err(e.to_string()))?);
            h.finish()
        };
        if got != want {
            return Err(err(format!(
                "checksum mismatch: expected {want}, got {got}"
            )));
        }
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
        .map_err(|e| err(e.to_string()))?;
    if let Some(t) = mtime {
        let ts = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: t,
                tv_nsec: 0,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: t,
                tv_nsec: 0,
            },
        };
        let _ = rustix::fs::utimensat(rustix::fs::CWD, &path, &ts, rustix::fs::AtFlags::empty());
    }
    Ok(Fetched { path, name, digest })
}

/// Clones `source` (`URL#ref`) into `dir/repo`; returns the checkout and
/// the commit it is at.
pub fn clone_git(
    source: &str,
    dir: &Path,
    keep_git_dir: bool,
    checksum: Option<&str>,
) -> Result<(PathBuf, String), BuildError> {
    clone_git_for("ADD", source, dir, keep_git_dir, checksum)
}

/// [`clone_git`] for `what` (an instruction, or the build context), which
/// errors name. A `#ref:subdir` fragment's subdir is left to the caller.
pub fn clone_git_for(
    what: &str,
    source: &str,
    dir: &Path,
    keep_git_dir: bool,
    checksum: Option<&str>,
) -> Result<(PathBuf, String), BuildError> {
    let err = |m: String| BuildError::Instruction(format!("{what} {source}: {m}"));
    let (url, reference) = match source.split_once('#') {
        Some((u, r)) => (u, r.split(':').next().unwrap_or(r)),
        None => (source, ""),
    };
    let repo = dir.join("repo");
    let git = |args: &[&str], cwd: Option<&Path>| -> Result<String, BuildError> {
        let mut c = Command::new("git");
        c.args(["-c", "advice.detachedHead=false"]).args(args);
        if let Some(d) = cwd {
            c.current_dir(d);
        }
        if loopback(url) {
            c.env("NO_PROXY", "*").env("no_proxy", "*");
        }
        c.env("GIT_TERMINAL_PROMPT", "0");
        let out = c.output().map_err(|e| err(format!("running git: {e}")))?;
        if !out.status.success() {
            return Err(err(format!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let repo_s = repo.to_string_lossy().into_owned();
    let mut args = vec!["clone", "--quiet"];
    if !reference.is_empty() && reference.len() != 40 {
        args.extend(["--branch", reference]);
    }
    // A shallow clone is cheaper, but dumb HTTP servers cannot serve one:
    // try it first, then fall back to a full clone.
    let mut shallow = args.clone();
    shallow.extend(["--depth", "1", "--", url, &repo_s]);
    if git(&shallow, None).is_err() {
        let _ = fs::remove_dir_all(&repo);
        args.extend(["--", url, &repo_s]);
        git(&args, None)?;
    }
    if reference.len() == 40 {
        git(&["checkout", "--quiet", reference], Some(&repo))?;
    }
    let commit = git(&["rev-parse", "HEAD"], Some(&repo))?;
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
    Ok((repo, commit))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn parse_http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 6 {
        return None;
    }
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])?
        + 1;
    let iso = format!(
        "{}-{:02}-{:02}T{}Z",
        parts[3],
        month,
        parts[1].parse::<u32>().ok()?,
        parts[4]
    );
    kiln_image::time::parse_rfc3339(&iso)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_sources() {
        assert!(is_git("https://example.com/repo.git#v1"));
        assert!(is_git("git@github.com:org/repo.git"));
        assert!(!is_git("https://example.com/file.txt"));
        assert!(is_url("http://127.0.0.1:8080/x"));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784111777)
        );
    }
}
