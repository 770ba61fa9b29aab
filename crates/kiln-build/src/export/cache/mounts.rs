//! Cache mounts in a cache manifest (`--cache-to …,mounts=true`): each
//! `RUN --mount=type=cache` the build used becomes one layer, a tar of the
//! mount's contents compressed like the other layers, named in the cache
//! config's `cache_mounts` section by the store's name of the mount (its
//! id, or id, stage key and source: never a host path; see
//! `crate::cache_mount`).
//!
//! The section carries a version: a reader that does not know it ignores
//! the mounts (and a reader that predates the section ignores the field,
//! as serde does with unknown fields), so the step layers stay usable.
//!
//! The tar is written in one streaming pass from the mount into the store
//! (memory grows with the number of files, never with their bytes); a
//! mount whose files add up to more than `mounts-max-size` is left out
//! with one warning. A mount the build used but this store never filled
//! (every RUN with it was a cache hit) is passed on as an imported cache
//! carries it, so a fully cached build does not drop it from the cache it
//! writes. Restoring is `crate::cache_mount_transfer`'s job.

use std::os::unix::fs::MetadataExt;

use kiln_image::layer::{EntryKind, LayerOptions, WalkOptions, walk_dir, write_entries_layer};
use kiln_image::media::{self, Compression};
use kiln_image::{Descriptor, Digest, Manifest, Store};
use serde::{Deserialize, Serialize};

use crate::BuildError;
use crate::cache_mount::{CacheMount, RunCacheMount};
use crate::cache_mount_transfer::{CacheMounts, ImportedMount, human_bytes};

/// The version of [`MountsSection`] this kiln writes and reads.
pub(super) const MOUNTS_VERSION: u32 = 1;

/// `mounts-max-size=` when not given: 1 GiB per mount.
pub const DEFAULT_MOUNTS_MAX_SIZE: u64 = 1 << 30;

/// The cache config's `cache_mounts`.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct MountsSection {
    pub(super) version: u32,
    #[serde(default)]
    pub(super) mounts: Vec<MountEntry>,
}

/// One exported cache mount.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct MountEntry {
    /// The store's name of the mount (see `crate::cache_mount`).
    name: String,
    /// What the Dockerfile called it and where it was mounted, for
    /// messages.
    id: String,
    target: String,
    /// Index into the manifest's layers.
    layer: usize,
    diff_id: Digest,
    /// The plain tar's size.
    size: u64,
    /// The bytes of file content in it, for messages.
    bytes: u64,
    /// The mount directory's own mode and owner (as the sandbox sees
    /// them: inside kiln's user namespace when rootless).
    mode: u32,
    uid: u32,
    gid: u32,
}

/// A mount written into the store, waiting for its index in the manifest.
pub(super) struct ExportedMount {
    entry: MountEntry,
    pub(super) blob: Descriptor,
}

/// What [`export_mounts`] wrote, and what it left out.
#[derive(Default)]
pub(super) struct Mounts {
    pub(super) exported: Vec<ExportedMount>,
    pub(super) warnings: Vec<String>,
}

fn over_bound(m: &RunCacheMount, bytes: u64, max_size: u64) -> String {
    format!(
        "cache mount {} ({}): {} is over mounts-max-size ({max_size} bytes); not exported",
        m.id,
        m.target,
        human_bytes(bytes),
    )
}

/// Writes each mount the build used that is there and not empty as a
/// layer blob in the store; passes on those an import carries instead.
pub(super) fn export_mounts(
    store: &Store,
    mounts: &CacheMounts,
    compression: Compression,
    max_size: u64,
) -> Result<Mounts, BuildError> {
    let mut out = Mounts::default();
    for m in mounts.used() {
        let cache = CacheMount::open(store, &m.name)?;
        let data = cache.data();
        let md = match std::fs::symlink_metadata(&data) {
            Ok(md) => md,
            Err(_) => {
                out.carry(&m, mounts.carried(&m.name), max_size);
                continue;
            }
        };
        // A RUN with `sharing=locked` waits; a shared one may still write,
        // which only makes this copy older.
        let lock = cache.lock_file()?;
        lock.lock_shared().map_err(|e| BuildError::File {
            what: format!("locking cache mount {}", m.id),
            cause: e,
        })?;
        let entries = walk_dir(&data, &WalkOptions::default())
            .map_err(|e| BuildError::Io(format!("reading cache mount {}: {e}", m.id)))?;
        if entries.is_empty() {
            out.carry(&m, mounts.carried(&m.name), max_size);
            continue;
        }
        let bytes: u64 = entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::File { size, .. } => size,
                _ => 0,
            })
            .sum();
        if bytes > max_size {
            out.warnings.push(over_bound(&m, bytes, max_size));
            continue;
        }
        let opts = LayerOptions {
            compression,
            ..LayerOptions::default()
        };
        let writer = store.blob_writer()?;
        let (writer, info) = write_entries_layer(entries, &opts, writer)
            .map_err(|e| BuildError::Io(format!("writing cache mount {}: {e}", m.id)))?;
        writer.commit(Some(&info.digest))?;
        drop(lock);
        out.exported.push(ExportedMount {
            entry: MountEntry {
                name: m.name.clone(),
                id: m.id.clone(),
                target: m.target.clone(),
                layer: 0,
                diff_id: info.diff_id,
                size: info.uncompressed_size,
                bytes,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
            },
            blob: Descriptor::new(
                media::Format::Oci.layer(compression),
                info.digest,
                info.size,
            ),
        });
    }
    Ok(out)
}

impl Mounts {
    /// Passes on `m` as an import carries it (its blob stays where it is
    /// until the copy reads it from there).
    fn carry(&mut self, m: &RunCacheMount, carried: Option<ImportedMount>, max_size: u64) {
        let Some(c) = carried else {
            return;
        };
        if c.bytes > max_size {
            self.warnings.push(over_bound(m, c.bytes, max_size));
            return;
        }
        self.exported.push(ExportedMount {
            entry: MountEntry {
                name: c.name,
                id: c.id,
                target: c.target,
                layer: 0,
                diff_id: c.diff_id,
                size: c.size,
                bytes: c.bytes,
                mode: c.mode,
                uid: c.uid,
                gid: c.gid,
            },
            blob: c.remote,
        });
    }
}

/// The section for `exported`, whose blobs are the manifest's layers
/// `layers[i]` (in order).
pub(super) fn section(exported: &[ExportedMount], layers: &[usize]) -> Option<MountsSection> {
    if exported.is_empty() {
        return None;
    }
    let mounts = exported
        .iter()
        .zip(layers)
        .map(|(m, i)| MountEntry {
            layer: *i,
            ..m.entry.clone()
        })
        .collect();
    Some(MountsSection {
        version: MOUNTS_VERSION,
        mounts,
    })
}

/// The mounts a cache config names, checked against its manifest. `Err`:
/// the config is corrupt (the cache is refused whole). A section of
/// another version is no mounts, with a note in `Ok((_, Some(note)))`.
pub(super) fn imported(
    manifest: &Manifest,
    section: Option<MountsSection>,
) -> Result<(Vec<ImportedMount>, Option<String>), String> {
    let Some(section) = section else {
        return Ok((Vec::new(), None));
    };
    if section.version != MOUNTS_VERSION {
        return Ok((
            Vec::new(),
            Some(format!(
                "its cache mounts are of version {} (this kiln reads {MOUNTS_VERSION}); not restored",
                section.version
            )),
        ));
    }
    let mut out = Vec::new();
    for m in section.mounts {
        let corrupt = |why: &str| format!("cache mount {:?}: {why}", m.id);
        let remote = manifest
            .layers
            .get(m.layer)
            .ok_or_else(|| corrupt("its layer index is past the layers"))?;
        match media::layer_compression(&remote.media_type) {
            Some(Compression::None) if remote.digest != m.diff_id => {
                return Err(corrupt("a plain layer whose digest is not its diff ID"));
            }
            Some(_) => {}
            None => return Err(corrupt("its layer is not a layer")),
        }
        if m.name.is_empty() || out.iter().any(|o: &ImportedMount| o.name == m.name) {
            return Err(corrupt("an empty or repeated name"));
        }
        out.push(ImportedMount {
            name: m.name,
            id: m.id,
            target: m.target,
            remote: remote.clone(),
            diff_id: m.diff_id,
            size: m.size,
            bytes: m.bytes,
            mode: m.mode & 0o7777,
            uid: m.uid,
            gid: m.gid,
        });
    }
    Ok((out, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_image::media::Format;

    fn manifest() -> Manifest {
        let layer = Descriptor::new(
            Format::Oci.layer(Compression::Gzip),
            Digest::sha256_of(b"gz"),
            2,
        );
        let config = Descriptor::new(super::super::CACHE_CONFIG, Digest::sha256_of(b"{}"), 2);
        Manifest::new(Format::Oci, config, vec![layer])
    }

    fn section(edit: impl FnOnce(&mut serde_json::Value)) -> MountsSection {
        let mut v = serde_json::json!({
            "version": 1,
            "mounts": [{
                "name": "pip", "id": "pip", "target": "/root/.cache/pip",
                "layer": 0, "diff_id": Digest::sha256_of(b"tar").to_string(),
                "size": 10, "bytes": 5, "mode": 0o755, "uid": 0, "gid": 0
            }]
        });
        edit(&mut v);
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn mounts_read_back_and_a_bad_section_is_refused() {
        let (found, note) = imported(&manifest(), Some(section(|_| {}))).unwrap();
        assert_eq!((found.len(), note), (1, None));
        assert_eq!(found[0].target, "/root/.cache/pip");
        assert_eq!(found[0].remote.digest, Digest::sha256_of(b"gz"));
        let err = imported(
            &manifest(),
            Some(section(|v| v["mounts"][0]["layer"] = 3.into())),
        )
        .unwrap_err();
        assert!(err.contains("past the layers"), "{err}");
        let err = imported(
            &manifest(),
            Some(section(|v| {
                let m = v["mounts"][0].clone();
                v["mounts"].as_array_mut().unwrap().push(m);
            })),
        )
        .unwrap_err();
        assert!(err.contains("repeated"), "{err}");
    }

    #[test]
    fn a_section_of_another_version_is_ignored_with_a_note() {
        let (found, note) =
            imported(&manifest(), Some(section(|v| v["version"] = 2.into()))).unwrap();
        assert!(found.is_empty());
        assert!(note.unwrap().contains("version 2"));
    }

    #[test]
    fn a_reader_without_mounts_reads_a_config_with_them() {
        // What an older kiln's config type keeps of a new config.
        #[derive(Deserialize)]
        struct Older {
            entries: std::collections::BTreeMap<String, serde_json::Value>,
        }
        let cfg = serde_json::json!({"entries": {}, "cache_mounts": {"version": 1, "mounts": []}});
        let older: Older = serde_json::from_value(cfg).unwrap();
        assert!(older.entries.is_empty());
    }
}
