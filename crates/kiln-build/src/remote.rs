//! ADD's remote sources: a URL, fetched once per build into a scratch
//! file (mode 0600, mtime from Last-Modified, as Docker does), or a git
//! repository (`…/repo.git#ref`, `git@host:repo`), cloned by
//! [`crate::git`]. `--checksum` is verified before anything is used.
//! Neither reaches the build host's own network unless allowed (see
//! [`crate::host_net`]).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kiln_image::{Digest, Hasher};

use crate::BuildError;
use crate::host_net::{GuardedClient, HostNetwork, error_chain};

/// Whether an ADD source names a git repository: a git or ssh URL,
/// `git@host:…`, or an http(s) (or `file://`, which is refused) URL whose
/// path ends in `.git`. A path such as `vendor/lib.git` is a file or
/// directory of the context, never a repository on the host.
pub fn is_git(source: &str) -> bool {
    let base = source.split('#').next().unwrap_or(source);
    source.starts_with("git@")
        || source.starts_with("git://")
        || source.starts_with("ssh://")
        || ((is_url(base) || base.starts_with("file://")) && base.ends_with(".git"))
}

pub fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// A downloaded file: where it is, its name from the URL, its digest.
pub struct Fetched {
    pub path: PathBuf,
    pub name: String,
    pub digest: Digest,
}

/// Downloads `url` into `dir`, verifying `checksum` (`sha256:…`) if given.
pub fn fetch_url(
    url: &str,
    dir: &Path,
    checksum: Option<&str>,
    access: HostNetwork,
) -> Result<Fetched, BuildError> {
    fetch_url_for("ADD", url, dir, checksum, access)
}

/// [`fetch_url`] for `what` (an instruction, or the build context), which
/// errors name. With [`HostNetwork::Refused`], no connection is opened to
/// the build host's own network, however the URL or a redirect names it.
pub fn fetch_url_for(
    what: &str,
    url: &str,
    dir: &Path,
    checksum: Option<&str>,
    access: HostNetwork,
) -> Result<Fetched, BuildError> {
    let err = |m: String| BuildError::Instruction(format!("{what} {url}: {m}"));
    let parsed = reqwest::Url::parse(url).map_err(|e| err(format!("not a valid URL: {e}")))?;
    let guarded = GuardedClient::new(access, &parsed).map_err(err)?;
    guarded.check(&parsed).map_err(|e| err(e.to_string()))?;
    let mut resp = guarded.client.get(parsed).send().map_err(|e| {
        err(match guarded.refusal() {
            Some(r) => r.to_string(),
            None => error_chain(&e),
        })
    })?;
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
        assert!(is_git("ssh://git@example.com/org/repo"));
        assert!(is_git("file:///srv/repo.git"));
        // A context path is copied, never cloned from the host.
        assert!(!is_git("vendor/lib.git"));
        assert!(!is_git("/srv/repo.git#main"));
        assert!(is_url("http://127.0.0.1:8080/x"));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784111777)
        );
    }
}
