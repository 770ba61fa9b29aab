//! Copied trees kept for the next RUN on the same layers.
//!
//! The copy snapshotter's cost is making the tree: every file of the image
//! created again (on ext4 here, ~0.3 ms a file; 16 s for 100,000 files).
//! A RUN changes a few of them. So when a copy container goes, the run's
//! changes are undone (`copy::restore`, which costs what the run changed)
//! and the tree is kept under the chain of layers it shows, with its stat
//! index; the next container over the same layers takes it by a rename.
//!
//! ```text
//! <snapshots>/trees/<chain>/rootfs/   the merged view of the chain's layers
//! <snapshots>/trees/<chain>/index     its StatIndex, and the boot it is from
//! <snapshots>/trees/<chain>/chain     the diff IDs it shows, oldest first
//! ```
//!
//! A container over other layers takes the tree that shares the most
//! layers with it from the bottom (its base, the steps before) and has the
//! layers that differ put back (`copy::switch_layers`): a rebuild after a
//! changed COPY, or the next RUN of a build, costs what those layers
//! hold, not the image.
//!
//! A tree is taken by renaming it away, so two builds never share one; a
//! tree is put back by renaming a complete directory into place, so a
//! killed process leaves a whole tree or none. Nothing here is fsynced:
//! the index records the boot it was written in, and a tree from an
//! earlier boot (whose unsynced files a crash may have lost) is removed,
//! never used. At most [`KEEP`] trees are kept, the least recently put
//! going first.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use kiln_image::Digest;

use crate::remove::remove_tree;
use crate::stat_index::{Stamp, StatIndex};
use crate::{Result, io_err};

/// How many trees a store keeps.
pub(crate) const KEEP: usize = 4;

const MAGIC: &[u8] = b"kiln-tree-index-1\n";

/// The name of the tree that shows `diff_ids` (oldest first).
pub(crate) fn chain_key(diff_ids: &[String]) -> String {
    Digest::sha256_of(diff_ids.join("\n").as_bytes())
        .hex()
        .to_string()
}

pub(crate) struct TreePool {
    dir: PathBuf,
}

/// A kept tree and the diff IDs it shows.
pub(crate) struct Kept {
    pub(crate) key: String,
    pub(crate) chain: Vec<String>,
}

impl TreePool {
    pub(crate) fn new(dir: PathBuf) -> TreePool {
        TreePool { dir }
    }

    /// Moves the tree `key` to `container` (a path that must not exist:
    /// it gets `rootfs/`) and returns its index; `None` when there is none
    /// (or another process took it first, or it is unusable).
    pub(crate) fn claim(&self, key: &str, container: &Path) -> Option<StatIndex> {
        let from = self.dir.join(key);
        fs::rename(&from, container).ok()?;
        let index_path = container.join("index");
        let index = fs::File::open(&index_path)
            .ok()
            .and_then(|f| read_index(BufReader::new(f)).ok())
            .flatten();
        let _ = fs::remove_file(&index_path);
        let _ = fs::remove_file(container.join("chain"));
        if index.is_none() || !container.join("rootfs").is_dir() {
            let _ = remove_tree(container);
            return None;
        }
        index
    }

    /// The kept trees and their chains.
    pub(crate) fn kept(&self) -> Vec<Kept> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                let chain = fs::read_to_string(e.path().join("chain")).ok()?;
                Some(Kept {
                    key: e.file_name().to_str()?.to_string(),
                    chain: chain.lines().map(str::to_string).collect(),
                })
            })
            .collect()
    }

    /// Keeps `container` (holding `rootfs/`, back to the merged view of
    /// the layers `chain` names, and described by `index`).
    pub(crate) fn put(&self, container: &Path, chain: &[String], index: &StatIndex) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(io_err("create", &self.dir))?;
        let key = chain_key(chain);
        let chain_path = container.join("chain");
        fs::write(&chain_path, chain.join("\n")).map_err(io_err("write", &chain_path))?;
        let index_path = container.join("index");
        let f = fs::File::create(&index_path).map_err(io_err("create", &index_path))?;
        let mut w = BufWriter::new(f);
        write_index(&mut w, index)
            .and_then(|()| w.flush())
            .map_err(io_err("write", &index_path))?;
        drop(w);
        let to = self.dir.join(&key);
        if fs::rename(container, &to).is_err() {
            // Another build put the same tree back first: one is enough.
            remove_tree(container)?;
        }
        self.evict()
    }

    /// Removes the trees beyond [`KEEP`], oldest first.
    fn evict(&self) -> Result<()> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Ok(());
        };
        let mut trees: Vec<(std::time::SystemTime, PathBuf)> = rd
            .flatten()
            .filter_map(|e| {
                let t = e.metadata().and_then(|m| m.modified()).ok()?;
                Some((t, e.path()))
            })
            .collect();
        if trees.len() <= KEEP {
            return Ok(());
        }
        trees.sort();
        for (_, p) in &trees[..trees.len() - KEEP] {
            remove_tree(p)?;
        }
        Ok(())
    }

    /// Removes every tree (store pruning).
    pub(crate) fn clear(&self) -> Result<usize> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Ok(0);
        };
        let mut n = 0;
        for e in rd.flatten() {
            remove_tree(&e.path())?;
            n += 1;
        }
        Ok(n)
    }
}

fn boot_id() -> Vec<u8> {
    fs::read("/proc/sys/kernel/random/boot_id").unwrap_or_default()
}

fn put_bytes(w: &mut impl Write, b: &[u8]) -> std::io::Result<()> {
    w.write_all(&(b.len() as u64).to_le_bytes())?;
    w.write_all(b)
}

fn write_index(w: &mut impl Write, index: &StatIndex) -> std::io::Result<()> {
    w.write_all(MAGIC)?;
    put_bytes(w, &boot_id())?;
    w.write_all(&(index.dirs.len() as u64).to_le_bytes())?;
    for (dir, names) in &index.dirs {
        put_bytes(w, dir.as_os_str().as_bytes())?;
        w.write_all(&(names.len() as u64).to_le_bytes())?;
        for (name, s) in names {
            put_bytes(w, name.as_bytes())?;
            for v in [
                s.mode, s.uid, s.gid, s.rdev.0, s.rdev.1, s.mtime.1, s.ctime.1,
            ] {
                w.write_all(&v.to_le_bytes())?;
            }
            for v in [s.size, s.ino] {
                w.write_all(&v.to_le_bytes())?;
            }
            for v in [s.mtime.0, s.ctime.0] {
                w.write_all(&v.to_le_bytes())?;
            }
            let (has, secs, nanos) = match s.born {
                Some((secs, nanos)) => (1u8, secs, nanos),
                None => (0, 0, 0),
            };
            w.write_all(&[has])?;
            w.write_all(&secs.to_le_bytes())?;
            w.write_all(&nanos.to_le_bytes())?;
        }
    }
    Ok(())
}

struct Reader<R>(R);

impl<R: Read> Reader<R> {
    fn array<const N: usize>(&mut self) -> std::io::Result<[u8; N]> {
        let mut b = [0u8; N];
        self.0.read_exact(&mut b)?;
        Ok(b)
    }
    fn u32(&mut self) -> std::io::Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> std::io::Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> std::io::Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn bytes(&mut self) -> std::io::Result<Vec<u8>> {
        let len = self.u64()?;
        // A name or path is short; anything else is a torn file.
        if len > 1 << 20 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        let mut b = vec![0u8; len as usize];
        self.0.read_exact(&mut b)?;
        Ok(b)
    }
}

/// The index, or `None` when it is from another boot.
fn read_index(r: impl Read) -> std::io::Result<Option<StatIndex>> {
    let mut r = Reader(r);
    let mut magic = vec![0u8; MAGIC.len()];
    r.0.read_exact(&mut magic)?;
    if magic != MAGIC {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    if r.bytes()? != boot_id() {
        return Ok(None);
    }
    let mut index = StatIndex::default();
    for _ in 0..r.u64()? {
        let dir = PathBuf::from(OsString::from_vec(r.bytes()?));
        let n = r.u64()?;
        let mut names = HashMap::new();
        for _ in 0..n {
            let name = OsString::from_vec(r.bytes()?);
            let [mode, uid, gid, rdev_major, rdev_minor, mtime_ns, ctime_ns] = [
                r.u32()?,
                r.u32()?,
                r.u32()?,
                r.u32()?,
                r.u32()?,
                r.u32()?,
                r.u32()?,
            ];
            let (size, ino) = (r.u64()?, r.u64()?);
            let (mtime_s, ctime_s) = (r.i64()?, r.i64()?);
            let [has] = r.array()?;
            let (born_s, born_ns) = (r.i64()?, r.u32()?);
            names.insert(
                name,
                Stamp {
                    mode,
                    uid,
                    gid,
                    size,
                    mtime: (mtime_s, mtime_ns),
                    ctime: (ctime_s, ctime_ns),
                    ino,
                    rdev: (rdev_major, rdev_minor),
                    born: (has == 1).then_some((born_s, born_ns)),
                },
            );
        }
        index.dirs.insert(dir, names);
    }
    Ok(Some(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_reads_back_as_written_in_the_same_boot() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("a/b")).unwrap();
        fs::write(t.path().join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink("/nowhere", t.path().join("l")).unwrap();
        let index = StatIndex::build(t.path()).unwrap();
        let mut buf = Vec::new();
        write_index(&mut buf, &index).unwrap();
        let back = read_index(&buf[..]).unwrap().expect("same boot");
        assert_eq!(back.dirs, index.dirs);
        // A torn file is an error, not a short index.
        assert!(read_index(&buf[..buf.len() - 3]).is_err());
    }
}
