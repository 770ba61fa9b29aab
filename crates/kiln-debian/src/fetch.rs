//! Downloads from a mirror, and the download cache: files named by their
//! SHA-256 under `<store>/debian/sha256/`, written only after the hash was
//! checked, so a cached file is a verified one and a build from a lock
//! works with the network off.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::DebianError;

pub struct Fetcher {
    client: reqwest::blocking::Client,
    cache: PathBuf,
}

impl Fetcher {
    /// A fetcher caching under `cache` (created if missing).
    pub fn new(cache: &Path) -> Result<Fetcher, DebianError> {
        std::fs::create_dir_all(cache).map_err(|e| io(cache, e))?;
        let client = reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(300))
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DebianError::Fetch {
                url: String::new(),
                msg: e.to_string(),
            })?;
        Ok(Fetcher {
            client,
            cache: cache.to_path_buf(),
        })
    }

    /// A reader over `url`: `http(s)://` through the client, `file://` (a
    /// mirror on disk) from the file system.
    fn open(&self, url: &str) -> Result<Box<dyn Read>, DebianError> {
        let fail = |msg: String| DebianError::Fetch {
            url: url.to_string(),
            msg,
        };
        if let Some(path) = url.strip_prefix("file://") {
            return match std::fs::File::open(path) {
                Ok(f) => Ok(Box::new(f)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(fail("not found (the mirror no longer has it)".into()))
                }
                Err(e) => Err(fail(e.to_string())),
            };
        }
        let resp = self.client.get(url).send().map_err(|e| fail(chain(&e)))?;
        if !resp.status().is_success() {
            let gone = resp.status() == reqwest::StatusCode::NOT_FOUND;
            return Err(fail(if gone {
                format!("{} (the mirror no longer has it)", resp.status())
            } else {
                resp.status().to_string()
            }));
        }
        Ok(Box::new(resp))
    }

    /// The bytes at `url`, not cached (for `InRelease`, which changes).
    pub fn get(&self, url: &str) -> Result<Vec<u8>, DebianError> {
        let mut out = Vec::new();
        self.open(url)?
            .read_to_end(&mut out)
            .map_err(|e| DebianError::Fetch {
                url: url.to_string(),
                msg: e.to_string(),
            })?;
        Ok(out)
    }

    /// Where layers made from cached files are remembered (see
    /// `install`): next to the cache.
    pub fn memo_dir(&self) -> PathBuf {
        let d = self.cache.with_file_name("layers");
        let _ = std::fs::create_dir_all(&d);
        d
    }

    /// Where the cache keeps the file whose SHA-256 is `sha256`.
    pub fn cached(&self, sha256: &str) -> PathBuf {
        self.cache.join(sha256)
    }

    /// The file at `url`, which must have `sha256` and `size`: from the
    /// cache when it is there, else downloaded, checked and cached. A
    /// mismatch leaves nothing in the cache.
    pub fn get_verified(&self, url: &str, sha256: &str, size: u64) -> Result<PathBuf, DebianError> {
        if !(sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(DebianError::Invalid(format!(
                "{url}: {sha256:?} is not a SHA-256"
            )));
        }
        let dest = self.cached(sha256);
        if dest.exists() {
            return Ok(dest);
        }
        let mut resp = self.open(url)?;
        let tmp = tempfile::NamedTempFile::new_in(&self.cache).map_err(|e| io(&self.cache, e))?;
        let mut hasher = Sha256::new();
        let mut got = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        let mut file = tmp.as_file();
        loop {
            let n = resp.read(&mut buf).map_err(|e| DebianError::Fetch {
                url: url.to_string(),
                msg: e.to_string(),
            })?;
            if n == 0 {
                break;
            }
            got += n as u64;
            if got > size {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(|e| io(tmp.path(), e))?;
        }
        let actual = hex::encode(hasher.finalize());
        if got != size || actual != sha256 {
            return Err(DebianError::Hash {
                what: url.to_string(),
                want: format!("{sha256} ({size} bytes)"),
                got: if got > size {
                    format!("more than {size} bytes")
                } else {
                    format!("{actual} ({got} bytes)")
                },
            });
        }
        tmp.persist(&dest).map_err(|e| io(&dest, e.error))?;
        Ok(dest)
    }
}

fn io(path: &Path, e: std::io::Error) -> DebianError {
    DebianError::Io(format!("{}: {e}", path.display()))
}

/// An error with its causes (reqwest's own message is only the top).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
