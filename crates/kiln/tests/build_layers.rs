//! The layers a build makes, as the next steps and the store see them.
//!
//! A RUN's layer directory is made by linking the container's own files
//! (not by unpacking the tar just written), and layer blobs are compressed
//! in the background. These tests hold both to what the slow path gives:
//! the linked directory must equal, node for node, the one unpacked from
//! the layer's blob; the stored image must have compressed layers, cache
//! entries that a rebuild hits, and no plain tars left behind. As root and
//! as the unprivileged kilntest.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::build::*;
use sha2::{Digest, Sha256};

/// A RUN that makes every kind of change a layer can hold: new files and
/// directories, a symlink, a hard link, a fifo, a setuid file, another
/// owner, a set mtime, a deleted file (whiteout), a replaced directory
/// (opaque), a changed file and a changed directory mode.
const DOCKERFILE: &str = "FROM kiln-test/busybox:1\n\
RUN mkdir -p /made/deep/er && echo one > /made/one && echo two > /made/deep/two \\\n\
 && ln -s ../one /made/deep/link && ln /made/one /made/hard \\\n\
 && mkfifo /made/fifo && echo suid > /made/suid && chmod 4755 /made/suid \\\n\
 && echo app > /made/app && chown 1000:1000 /made/app /made/deep/er \\\n\
 && touch -d @1234567890 /made/deep/two && chmod 0700 /made/deep \\\n\
 && rm /etc/group && rm -rf /home && mkdir -p /home/new && echo x > /home/new/x \\\n\
 && echo changed >> /etc/passwd && chmod 1777 /root\n";

#[test]
fn run_layer_directory_equals_the_unpacked_blob_as_root() {
    layer_dir_equals_unpacked(Who::Caller);
}

#[test]
fn run_layer_directory_equals_the_unpacked_blob_rootless() {
    if !common::is_root() {
        loud("build_layers rootless SKIPPED: needs root to act as kilntest");
        return;
    }
    layer_dir_equals_unpacked(Who::Kilntest);
}

fn layer_dir_equals_unpacked(who: Who) {
    if !kiln_build_available() {
        loud("build_layers SKIPPED: no `kiln build`");
        return;
    }
    let tmp = scratch("kiln-bt-layers-");
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    if who == Who::Kilntest {
        give_to_kilntest(&ctx);
    }
    let k = KilnBuild::new(&tmp.path().join("store"), who);
    import_bases(&k, false);
    let (out, _, log) = kiln_build(&k, &ctx, &["-t", "layers-test:1"]);
    assert!(out.status.success(), "kiln build failed:\n{log}");
    let config = k.config_blob("layers-test:1");
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap().clone();
    let run = diff_ids.last().unwrap().as_str().unwrap();
    let hex = run.strip_prefix("sha256:").unwrap();
    let layers = k.root.join("snapshots/layers");
    let linked = layers.join(hex);
    // The RUN is the last step: nothing in the build needed its layer
    // unpacked, so if the directory is there, the build linked it.
    assert!(
        linked.is_dir(),
        "the RUN's layer directory {} was not made by the build",
        linked.display()
    );
    let linked_tree = tree(&linked);
    // Make kiln unpack the same layer from its blob: move the linked
    // directory away and run a container on the image.
    let aside = tmp.path().join("linked");
    fs::rename(&linked, &aside).unwrap();
    k.ok(&["run", "--rm", "layers-test:1", "true"]);
    assert!(linked.is_dir(), "kiln run did not unpack the layer again");
    let unpacked_tree = tree(&linked);
    let mut problems = Vec::new();
    for (path, want) in &unpacked_tree {
        match linked_tree.get(path) {
            None => problems.push(format!("{path}: only in the unpacked directory")),
            Some(got) if got != want => {
                problems.push(format!("{path}:\n  linked   {got}\n  unpacked {want}"))
            }
            Some(_) => {}
        }
    }
    for path in linked_tree.keys() {
        if !unpacked_tree.contains_key(path) {
            problems.push(format!("{path}: only in the linked directory"));
        }
    }
    assert!(
        problems.is_empty(),
        "the linked layer directory differs from the unpacked one:\n{}",
        problems.join("\n")
    );
    // The tree has what the RUN made, so the comparison compared something.
    for p in [
        "made/hard",
        "made/fifo",
        "made/suid",
        "etc/group",
        "home/new/x",
    ] {
        assert!(linked_tree.contains_key(p), "{p} missing: {linked_tree:#?}");
    }
    let _ = fs::remove_dir_all(&aside);
}

/// Every node below `root`: type, mode, owner, size, content, target,
/// device, xattrs and mtime, and which names share an inode.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name().min_depth(1) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let m = fs::symlink_metadata(e.path()).unwrap();
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            format!("symlink -> {}", fs::read_link(e.path()).unwrap().display())
        } else if ft.is_file() {
            let bytes = fs::read(e.path()).unwrap();
            format!("file {}", hex::encode(Sha256::digest(&bytes)))
        } else if ft.is_char_device() {
            format!("char {}", m.rdev())
        } else if ft.is_fifo() {
            "fifo".into()
        } else {
            format!("other {:o}", m.mode())
        };
        let link = if !ft.is_dir() && m.nlink() > 1 {
            let first = inodes.entry(m.ino()).or_insert_with(|| rel.clone());
            format!(" linked-with {first}")
        } else {
            String::new()
        };
        // Directory times are not compared: overlayfs and the kernel
        // change them as the tree is used. Nor are a whiteout's (a 0/0
        // character device): it has none of its own in the tar, and
        // either way it is stamped when it is made.
        let whiteout = ft.is_char_device() && m.rdev() == 0;
        let mtime = if ft.is_dir() || whiteout {
            String::new()
        } else {
            format!(" mtime {}.{:09}", m.mtime(), m.mtime_nsec())
        };
        out.insert(
            rel,
            format!(
                "{kind} mode {:o} owner {}:{} size {}{mtime} xattrs {:?}{link}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid(),
                if ft.is_dir() { 0 } else { m.size() },
                xattrs(e.path()),
            ),
        );
    }
    out
}

fn xattrs(path: &Path) -> Vec<(String, String)> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 8192];
    // SAFETY: the buffers outlive the calls and their lengths are given.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return Vec::new();
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).unwrap();
        let mut val = vec![0u8; 4096];
        // SAFETY: as above.
        let v = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                val.as_mut_ptr().cast(),
                val.len(),
            )
        };
        val.truncate(v.max(0) as usize);
        out.push((
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(&val).into_owned(),
        ));
    }
    out.sort();
    out
}

#[test]
fn stored_layers_are_compressed_and_the_cache_hits() {
    if !kiln_build_available() {
        loud("build_layers SKIPPED: no `kiln build`");
        return;
    }
    let tmp = scratch("kiln-bt-layers-");
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    let k = KilnBuild::new(&tmp.path().join("store"), Who::Caller);
    import_bases(&k, false);
    let (out, _, log) = kiln_build(&k, &ctx, &["-t", "layers-test:1"]);
    assert!(out.status.success(), "kiln build failed:\n{log}");
    let manifest: serde_json::Value =
        serde_json::from_str(&k.ok(&["inspect", "layers-test:1"])).unwrap();
    let layers = manifest["Manifest"]["layers"].as_array().unwrap();
    for l in layers {
        assert_eq!(
            l["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
            "a layer is not gzip: {l}"
        );
        let hex = l["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap();
        let blob = fs::read(k.root.join("blobs/sha256").join(hex)).unwrap();
        assert_eq!(&blob[..2], &[0x1f, 0x8b], "blob {hex} is not gzip data");
    }
    // No plain tars are left in the store's scratch space.
    let leftovers: Vec<_> = walkdir::WalkDir::new(k.root.join("tmp"))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(leftovers.is_empty(), "left in tmp: {leftovers:?}");
    // Every step's cache entry was written with its blob: a rebuild runs
    // nothing and gives the same image.
    let id = k.config_blob("layers-test:1");
    let (out, _, log) = kiln_build(&k, &ctx, &["-t", "layers-test:2"]);
    assert!(out.status.success(), "rebuild failed:\n{log}");
    let steps = exec_steps(&log);
    assert!(
        steps.iter().all(|s| s.cached),
        "the rebuild ran steps:\n{log}"
    );
    assert_eq!(id, k.config_blob("layers-test:2"));
}
