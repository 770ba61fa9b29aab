//! `kiln system`: the store as a whole. `df` says where the space goes:
//! images, the build cache, unpacked layers, and what `prune` would give
//! back of each, in the rows and columns of `docker system df`.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use clap::Subcommand;
use kiln_image::Digest;

use super::image::{BUILD_CACHE, human_size, kept_diff_ids};
use super::open_store;

#[derive(Subcommand)]
pub enum SystemCmd {
    /// Show the store's disk use: images, build cache, unpacked layers.
    Df,
}

pub fn run(root: &Path, c: SystemCmd) -> anyhow::Result<()> {
    match c {
        SystemCmd::Df => df(root),
    }
}

/// One row of the table.
struct Row {
    kind: &'static str,
    total: usize,
    active: usize,
    size: u64,
    reclaimable: u64,
}

fn df(root: &Path) -> anyhow::Result<()> {
    let store = open_store(root)?;
    let snaps = kiln_snapshot::Snapshots::open(&store)?;
    let blobs = store.blobs()?;
    let size_of = |set: &BTreeSet<Digest>| -> u64 {
        blobs
            .iter()
            .filter(|(d, _)| set.contains(d))
            .map(|(_, n)| n)
            .sum()
    };
    // The build cache: blobs only its entries reach, and its directories;
    // all of it goes with `prune --build-cache`.
    let (garbage, keep) = store.garbage(&[])?;
    let (_, keep_without_cache) = store.garbage(BUILD_CACHE)?;
    let cache_only: BTreeSet<Digest> = keep.difference(&keep_without_cache).cloned().collect();
    let cache_dirs: u64 = BUILD_CACHE
        .iter()
        .map(|owner| dir_size(&store.root().join(owner)))
        .sum();
    let cache_size = size_of(&cache_only) + cache_dirs;
    let cache = Row {
        kind: "Build Cache",
        total: count_files(&store.root().join("roots").join("build-cache")),
        active: 0,
        size: cache_size,
        reclaimable: cache_size,
    };
    // Images: every other blob; `prune` reclaims those nothing reaches
    // (what removed names and killed writes left).
    let names = store.images()?.len();
    let all: u64 = blobs.iter().map(|(_, n)| n).sum();
    let images = Row {
        kind: "Images",
        total: names,
        active: names,
        size: all - size_of(&cache_only),
        reclaimable: garbage.bytes,
    };
    // Unpacked layers: the directories whose layer is still stored stay.
    let all_dirs = snaps.layer_dirs()?;
    let unused = snaps.unused_layers(&kept_diff_ids(&store, &keep))?;
    let layers = Row {
        kind: "Unpacked Layers",
        total: all_dirs.len(),
        active: all_dirs.len() - unused.len(),
        size: all_dirs.iter().map(|d| dir_size(d)).sum(),
        reclaimable: unused.iter().map(|d| dir_size(d)).sum(),
    };
    // The copy snapshotter's kept trees: scratch that saves a copy of the
    // image on the next RUN; `prune` removes them all.
    let trees = snaps.kept_trees();
    let trees_size: u64 = trees.iter().map(|d| dir_size(d)).sum();
    let trees = Row {
        kind: "Kept Trees",
        total: trees.len(),
        active: 0,
        size: trees_size,
        reclaimable: trees_size,
    };
    outln!(
        "{:<16}{:<10}{:<10}{:<10}RECLAIMABLE",
        "TYPE",
        "TOTAL",
        "ACTIVE",
        "SIZE"
    );
    for r in [images, cache, layers, trees] {
        let pct = (r.reclaimable * 100).checked_div(r.size).unwrap_or(0);
        outln!(
            "{:<16}{:<10}{:<10}{:<10}{} ({pct}%)",
            r.kind,
            r.total,
            r.active,
            human_size(r.size),
            human_size(r.reclaimable)
        );
    }
    Ok(())
}

/// The files under `dir` (not following links): how many entries that are
/// not directories, and the bytes of the regular ones (a file linked twice
/// counts once per name, as `du --apparent-size -l` does); zeros if it is
/// not there.
fn walk_counts(dir: &Path) -> (usize, u64) {
    let (mut files, mut bytes) = (0, 0);
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(e.path()),
                Ok(t) => {
                    files += 1;
                    if t.is_file() {
                        bytes += e.metadata().map_or(0, |m| m.len());
                    }
                }
                Err(_) => {}
            }
        }
    }
    (files, bytes)
}

fn dir_size(dir: &Path) -> u64 {
    walk_counts(dir).1
}

fn count_files(dir: &Path) -> usize {
    walk_counts(dir).0
}
