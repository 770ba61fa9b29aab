//! `kiln.lock`: every package a build installs, pinned. TOML, sorted by
//! package name, so a change reads as a small diff:
//!
//! ```toml
//! version = 1
//! [release]
//! mirror = "http://deb.debian.org/debian"
//! suite = "bookworm"
//! url = "http://deb.debian.org/debian/dists/bookworm/InRelease"
//! sha256 = "…"        # the InRelease the packages were verified against
//! signer = "…"        # the fingerprint whose signature verified
//! date = "…"
//! requested = ["python3-minimal"]
//! [[package]]
//! name = "libc6"
//! version = "2.36-9+deb12u10"
//! architecture = "amd64"
//! size = 2757936
//! sha256 = "…"
//! path = "pool/main/g/glibc/libc6_2.36-9+deb12u10_amd64.deb"
//! ```
//!
//! A build with a lock fetches no index: it downloads exactly these paths
//! and checks each hash (the lock was written from a verified index).

use serde::{Deserialize, Serialize};

use crate::DebianError;
use crate::index::Package;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub version: u32,
    pub release: LockedRelease,
    #[serde(default, rename = "package")]
    pub packages: Vec<LockedPackage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedRelease {
    pub mirror: String,
    pub suite: String,
    pub url: String,
    pub sha256: String,
    pub signer: String,
    #[serde(default)]
    pub date: String,
    /// What was asked for: a lock answers one request; when the build file
    /// asks for something else, the lock is out of date.
    pub requested: Vec<String>,
    #[serde(default)]
    pub essential: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub size: u64,
    pub sha256: String,
    pub path: String,
}

impl LockedPackage {
    pub fn of(p: &Package) -> LockedPackage {
        LockedPackage {
            name: p.name.clone(),
            version: p.version.clone(),
            architecture: p.architecture.clone(),
            size: p.size,
            sha256: p.sha256.clone(),
            path: p.filename.clone(),
        }
    }

    /// The package's URL on `mirror`.
    pub fn url(&self, mirror: &str) -> String {
        format!("{}/{}", mirror.trim_end_matches('/'), self.path)
    }
}

impl Lock {
    pub fn parse(text: &str) -> Result<Lock, DebianError> {
        let lock: Lock =
            toml::from_str(text).map_err(|e| DebianError::Invalid(format!("kiln.lock: {e}")))?;
        if lock.version != 1 {
            return Err(DebianError::Invalid(format!(
                "kiln.lock: version {} is not one this kiln reads (1)",
                lock.version
            )));
        }
        for p in &lock.packages {
            if p.path.split('/').any(|c| c == ".." || c.is_empty()) || p.path.contains("://") {
                return Err(DebianError::Invalid(format!(
                    "kiln.lock: package {}: path {:?} is not a path under the mirror",
                    p.name, p.path
                )));
            }
        }
        Ok(lock)
    }

    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!("# Written by `kiln lock`: the exact Debian packages a build installs.\n{body}")
    }

    /// Whether this lock answers `req` (list order aside).
    pub fn answers(&self, req: &crate::Request) -> bool {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        self.release.suite == req.suite
            && sorted(&self.release.requested) == sorted(&req.packages)
            && sorted(&self.release.excluded) == sorted(&req.exclude)
            && self.release.essential == req.essential
    }
}
