//! Where the store's blobs came from: for each blob fetched from a
//! registry, the repositories (`registry/repository`) it was read from, so
//! that a later push of an image holding it to the same registry mounts it
//! from there instead of uploading it (docker keeps the same record).
//!
//! ```text
//! <store>/sources/<algorithm>/<hex>   one repository per line, newest first
//! ```
//!
//! The record is a hint, never trusted for content: a mount the registry
//! refuses is uploaded, and the registry checks a mounted blob's digest. So
//! a lost update between two processes writing the same blob's file costs
//! at most an upload; files are still replaced atomically, so a reader
//! never sees half of one. Prune removes a blob's record with the blob.

use std::fs;
use std::path::{Path, PathBuf};

use crate::store::{Result, io_err, write_atomic};
use crate::{Digest, Reference};

/// How many repositories are kept per blob (the newest).
const KEEP: usize = 8;

/// The source records of one store; cheap to clone, no lock held.
#[derive(Debug, Clone)]
pub struct BlobSources {
    dir: PathBuf,
}

impl BlobSources {
    pub(crate) fn new(store_root: &Path) -> BlobSources {
        BlobSources {
            dir: store_root.join("sources"),
        }
    }

    fn file(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// Records that `digest` can be read from `repo` (its tag or digest is
    /// not kept: any name in the repository reaches the blob).
    pub fn record(&self, digest: &Digest, repo: &Reference) -> Result<()> {
        let name = repo.name();
        let mut names = self.names(digest);
        if names.first() == Some(&name) {
            return Ok(());
        }
        names.retain(|n| *n != name);
        names.insert(0, name);
        names.truncate(KEEP);
        let path = self.file(digest);
        let parent = path.parent().expect("a file under the sources dir");
        fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        write_atomic(&path, (names.join("\n") + "\n").as_bytes())
    }

    /// The repositories `digest` was read from, newest first; lines that do
    /// not parse as repositories are skipped.
    pub fn get(&self, digest: &Digest) -> Vec<Reference> {
        self.names(digest)
            .iter()
            .filter_map(|n| Reference::parse(n).ok())
            .collect()
    }

    fn names(&self, digest: &Digest) -> Vec<String> {
        fs::read_to_string(self.file(digest))
            .map(|s| {
                s.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets `digest` (its blob is gone).
    pub(crate) fn forget(&self, algorithm: &str, hex: &str) {
        let _ = fs::remove_file(self.dir.join(algorithm).join(hex));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_first_without_duplicates_and_bounded() {
        let t = tempfile::tempdir().unwrap();
        let s = BlobSources::new(t.path());
        let d = Digest::sha256_of(b"layer");
        assert!(s.get(&d).is_empty());
        for i in 0..10 {
            let r = Reference::parse(&format!("127.0.0.1:5000/repo{i}:tag")).unwrap();
            s.record(&d, &r).unwrap();
        }
        // Another tag of a repository already recorded moves it to the front.
        let again = Reference::parse("127.0.0.1:5000/repo3:other").unwrap();
        s.record(&d, &again).unwrap();
        let got: Vec<String> = s.get(&d).iter().map(Reference::name).collect();
        assert_eq!(got.len(), KEEP);
        assert_eq!(got[0], "127.0.0.1:5000/repo3");
        assert_eq!(got[1], "127.0.0.1:5000/repo9");
        assert_eq!(got.iter().filter(|n| n.ends_with("/repo3")).count(), 1);
        s.forget("sha256", d.hex());
        assert!(s.get(&d).is_empty());
    }
}
