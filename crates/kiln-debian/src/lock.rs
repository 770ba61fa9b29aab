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
//!
//! A lock may cover several architectures (`release.architectures`, one
//! resolution each, [`Lock::merge`]d): a package for one architecture
//! serves only it; an `all` package serves every architecture unless its
//! `only` lists the ones whose resolution chose it. A build takes
//! [`Lock::for_arch`].

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
    /// The Debian architectures resolved; empty in a lock written before
    /// this field: those of its packages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<String>,
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
    /// For an `Architecture: all` package in a lock of several
    /// architectures: the ones that need it (empty: all of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<String>,
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
            only: Vec::new(),
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

    /// The architectures this lock was resolved for.
    pub fn architectures(&self) -> Vec<String> {
        if !self.release.architectures.is_empty() {
            return self.release.architectures.clone();
        }
        let mut a: Vec<String> = self
            .packages
            .iter()
            .filter(|p| p.architecture != "all")
            .map(|p| p.architecture.clone())
            .collect();
        a.sort();
        a.dedup();
        a
    }

    /// The packages one architecture installs; refused when the lock was
    /// not resolved for it (its packages would be missing, not wrong).
    pub fn for_arch(&self, arch: &str) -> Result<Lock, DebianError> {
        let archs = self.architectures();
        if !archs.is_empty() && !archs.iter().any(|a| a == arch) {
            return Err(DebianError::Invalid(format!(
                "kiln.lock is for {}, not {arch}: list the platform in [image] platforms (or pass it to `kiln lock --platform`) and run `kiln lock`",
                archs.join(", ")
            )));
        }
        let mut lock = self.clone();
        lock.release.architectures = vec![arch.to_string()];
        lock.packages.retain(|p| {
            p.architecture == arch
                || (p.architecture == "all"
                    && (p.only.is_empty() || p.only.iter().any(|a| a == arch)))
        });
        for p in &mut lock.packages {
            p.only.clear();
        }
        Ok(lock)
    }

    /// One lock from one per architecture, all verified against the same
    /// `InRelease` (else the mirror changed in between: refused).
    pub fn merge(locks: Vec<Lock>) -> Result<Lock, DebianError> {
        let mut it = locks.into_iter();
        let Some(mut out) = it.next() else {
            return Err(DebianError::Invalid("no architecture to lock".into()));
        };
        let mut archs = out.architectures();
        let mut all: Vec<(LockedPackage, Vec<String>)> = Vec::new();
        let take_all = |pkgs: &mut Vec<LockedPackage>,
                        arch: &[String],
                        all: &mut Vec<(LockedPackage, Vec<String>)>| {
            for p in pkgs.extract_if(.., |p| p.architecture == "all") {
                match all.iter_mut().find(|(q, _)| *q == p) {
                    Some((_, a)) => a.extend(arch.iter().cloned()),
                    None => all.push((p, arch.to_vec())),
                }
            }
        };
        take_all(&mut out.packages, &archs.clone(), &mut all);
        for mut l in it {
            if l.release.sha256 != out.release.sha256 {
                return Err(DebianError::Invalid(format!(
                    "{} changed while locking (its SHA-256 differs between architectures): run `kiln lock` again",
                    out.release.url
                )));
            }
            let a = l.architectures();
            take_all(&mut l.packages, &a, &mut all);
            out.packages.append(&mut l.packages);
            archs.extend(a);
        }
        for (mut p, a) in all {
            if !archs.iter().all(|x| a.contains(x)) {
                p.only = a;
            }
            out.packages.push(p);
        }
        out.packages.sort_by(|a, b| {
            (&a.name, &a.architecture, &a.version).cmp(&(&b.name, &b.architecture, &b.version))
        });
        out.release.architectures = archs;
        Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, arch: &str) -> LockedPackage {
        LockedPackage {
            name: name.into(),
            version: "1".into(),
            architecture: arch.into(),
            size: 1,
            sha256: format!("{name}{arch}"),
            path: format!("pool/{name}_{arch}.deb"),
            only: Vec::new(),
        }
    }

    fn lock(arch: &str, pkgs: Vec<LockedPackage>) -> Lock {
        Lock {
            version: 1,
            release: LockedRelease {
                mirror: "http://m".into(),
                suite: "bookworm".into(),
                url: "http://m/dists/bookworm/InRelease".into(),
                sha256: "s".into(),
                signer: String::new(),
                date: String::new(),
                requested: vec!["app".into()],
                essential: false,
                excluded: Vec::new(),
                architectures: vec![arch.into()],
            },
            packages: pkgs,
        }
    }

    #[test]
    fn several_architectures_in_one_lock() {
        let amd = lock(
            "amd64",
            vec![
                pkg("libc6", "amd64"),
                pkg("tzdata", "all"),
                pkg("x86only", "all"),
            ],
        );
        let arm = lock("arm64", vec![pkg("libc6", "arm64"), pkg("tzdata", "all")]);
        let both = Lock::merge(vec![amd.clone(), arm.clone()]).unwrap();
        assert_eq!(both.release.architectures, ["amd64", "arm64"]);
        let text = both.to_toml();
        let both = Lock::parse(&text).unwrap();
        let x86 = both.packages.iter().find(|p| p.name == "x86only").unwrap();
        assert_eq!(x86.only, ["amd64"]);
        assert!(
            both.packages
                .iter()
                .find(|p| p.name == "tzdata")
                .unwrap()
                .only
                .is_empty()
        );
        let names = |l: &Lock| -> Vec<String> {
            l.packages
                .iter()
                .map(|p| format!("{}:{}", p.name, p.architecture))
                .collect()
        };
        let amd_only = both.for_arch("amd64").unwrap();
        assert_eq!(
            names(&amd_only),
            ["libc6:amd64", "tzdata:all", "x86only:all"]
        );
        assert!(amd_only.packages.iter().all(|p| p.only.is_empty()));
        let arm_only = both.for_arch("arm64").unwrap();
        assert_eq!(names(&arm_only), ["libc6:arm64", "tzdata:all"]);
        let err = both.for_arch("riscv64").unwrap_err().to_string();
        assert!(
            err.contains("amd64, arm64") && err.contains("kiln lock"),
            "{err}"
        );
        // A lock written before `architectures`: its packages say.
        let mut old = amd.clone();
        old.release.architectures.clear();
        assert!(old.for_arch("arm64").is_err());
        let mut moved = arm;
        moved.release.sha256 = "other".into();
        assert!(
            Lock::merge(vec![amd, moved])
                .unwrap_err()
                .to_string()
                .contains("changed while locking")
        );
    }
}
