//! The layers a build makes, as the next steps and the store see them.
//!
//! A RUN's layer directory is made by linking the container's own files
//! (not by unpacking the tar just written): it must equal, node for node,
//! the one unpacked from the layer's blob, as root and as the unprivileged
//! kilntest. Layers stay plain tars in the store and are compressed on the
//! way out: an OCI export has gzip layers, the same config, and reuses
//! both the build cache and the compressed blobs.

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
        missing_prerequisite("build_layers rootless needs root to act as kilntest");
        return;
    }
    layer_dir_equals_unpacked(Who::Kilntest);
}

/// A scratch dir with the context of [`DOCKERFILE`] and a store with the
/// busybox base, used by `who`; None (loudly) without `kiln build`.
fn setup(who: Who) -> Option<(tempfile::TempDir, std::path::PathBuf, KilnBuild)> {
    if !kiln_build_available() {
        loud("build_layers SKIPPED: no `kiln build`");
        return None;
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
    Some((tmp, ctx, k))
}

fn layer_dir_equals_unpacked(who: Who) {
    let Some((tmp, ctx, k)) = setup(who) else {
        return;
    };
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
fn stored_layers_are_plain_and_exports_compress_them() {
    let Some((tmp, ctx, k)) = setup(Who::Caller) else {
        return;
    };
    let (out, _, log) = kiln_build(&k, &ctx, &["-t", "layers-test:1"]);
    assert!(out.status.success(), "kiln build failed:\n{log}");
    // In the store, the built layer is a plain tar, as docker and buildah
    // keep theirs.
    let inspect: serde_json::Value =
        serde_json::from_str(&k.ok(&["inspect", "layers-test:1"])).unwrap();
    let local = inspect["Manifest"]["layers"].as_array().unwrap();
    let built = local.last().unwrap();
    assert_eq!(
        built["mediaType"], "application/vnd.oci.image.layer.v1.tar",
        "the built layer in the store: {built}"
    );
    // An export that leaves the machine compresses it, and the same build
    // with that output is all cache hits: the cache does not depend on
    // the compression an output wants.
    let oci = tmp.path().join("out.tar");
    let dest = format!("type=oci,dest={}", oci.display());
    let (out, _, log) = kiln_build(&k, &ctx, &["-t", "layers-test:1", "-o", &dest]);
    assert!(
        out.status.success(),
        "kiln build -o type=oci failed:\n{log}"
    );
    assert!(
        exec_steps(&log).iter().all(|s| s.cached),
        "the build with an export ran steps again:\n{log}"
    );
    let dir = tmp.path().join("out");
    extract_tar(&oci, &dir);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let blob = |d: &serde_json::Value| {
        let hex = d["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap()
            .to_string();
        fs::read(dir.join("blobs/sha256").join(hex)).unwrap()
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(&index["manifests"][0])).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), local.len());
    for l in layers {
        assert_eq!(
            l["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
            "an exported layer is not gzip: {l}"
        );
        assert_eq!(&blob(l)[..2], &[0x1f, 0x8b], "blob {l} is not gzip data");
    }
    // Same config: the image ID does not depend on the compression.
    assert_eq!(
        manifest["config"]["digest"],
        inspect["Manifest"]["config"]["digest"]
    );
    // A second export reuses the compressed blobs the first one made.
    let memo = k.root.join("compressed-layers");
    let before = fs::read_dir(&memo).unwrap().count();
    let (out, _, log) = kiln_build(&k, &ctx, &["-t", "layers-test:1", "-o", &dest]);
    assert!(out.status.success(), "second export failed:\n{log}");
    assert_eq!(before, fs::read_dir(&memo).unwrap().count());
}

#[test]
fn prune_removes_the_unpacked_layers_nothing_uses_as_root() {
    prune_removes_unused_layers(Who::Caller);
}

#[test]
fn prune_removes_the_unpacked_layers_nothing_uses_rootless() {
    if !common::is_root() {
        missing_prerequisite("build_layers rootless needs root to act as kilntest");
        return;
    }
    prune_removes_unused_layers(Who::Kilntest);
}

/// `kiln prune` keeps a layer directory while an image or the build cache
/// uses its layer, removes what killed runs left, and with
/// `--build-cache` forgets the cache, so the built layers go too.
fn prune_removes_unused_layers(who: Who) {
    let Some((_tmp, ctx, k)) = setup(who) else {
        return;
    };
    let (out, _, log) = kiln_build(&k, &ctx, &["-t", "layers-test:1"]);
    assert!(out.status.success(), "kiln build failed:\n{log}");
    let config = k.config_blob("layers-test:1");
    let ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d.as_str()
                .unwrap()
                .strip_prefix("sha256:")
                .unwrap()
                .to_string()
        })
        .collect();
    let (base, built) = (&ids[0], ids.last().unwrap());
    let layers = k.root.join("snapshots/layers");
    assert!(layers.join(built).is_dir() && layers.join(base).is_dir());
    // What a killed run leaves behind.
    let stray = k.root.join("snapshots/containers/stray");
    fs::create_dir_all(stray.join("upper/etc")).unwrap();
    if who == Who::Kilntest {
        give_to_kilntest(&stray);
    }

    // Untagged, the image's layer is still the build cache's.
    k.ok(&["rmi", "layers-test:1"]);
    k.ok(&["prune"]);
    assert!(
        layers.join(built).is_dir(),
        "prune removed a layer the cache uses"
    );
    assert!(!stray.exists(), "prune left a dead container");
    let (out, _, log) = kiln_build(&k, &ctx, &["-t", "layers-test:1"]);
    assert!(out.status.success(), "rebuild failed:\n{log}");
    assert!(exec_steps(&log).iter().all(|s| s.cached), "{log}");

    k.ok(&["rmi", "layers-test:1"]);
    let out = k.ok(&["prune", "--build-cache"]);
    assert!(
        !layers.join(built).exists(),
        "the built layer stayed: {out}"
    );
    assert!(!k.root.join("blobs/sha256").join(built).exists());
    assert!(layers.join(base).is_dir(), "the base image's layer went");
    let check = k.ok(&["check"]);
    assert!(check.contains(" 0 problems"), "{check}");
    // The cache is gone: the next build runs its step again.
    let (out, _, log) = kiln_build(&k, &ctx, &["-t", "layers-test:1"]);
    assert!(out.status.success(), "build after prune failed:\n{log}");
    assert!(exec_steps(&log).iter().all(|s| !s.cached), "{log}");
}

/// `-o type=oci` writes OCI media types and `type=docker` Docker's, as
/// BuildKit's exporters do, whatever the store's manifest uses; Docker has
/// no zstd layer type, so a zstd docker archive turns to OCI types. The
/// config, and so the image ID, is the same in every archive.
#[test]
fn archives_use_their_exporters_media_types() {
    let Some((tmp, ctx, k)) = setup(Who::Caller) else {
        return;
    };
    let (out, _, log) = kiln_build(&k, &ctx, &["-t", "layers-test:1"]);
    assert!(out.status.success(), "kiln build failed:\n{log}");
    let id = k.ok(&["inspect", "layers-test:1"]);
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    let config_digest = id["Manifest"]["config"]["digest"].clone();
    let cases = [
        (
            "type=oci",
            "oci",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        ),
        (
            "type=docker",
            "docker",
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ),
        (
            "type=docker,compression=zstd",
            "dzstd",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
        (
            "type=oci,oci-mediatypes=false",
            "ocidocker",
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ),
    ];
    for (spec, name, manifest_type, config_type, layer_type) in cases {
        let tar = tmp.path().join(format!("{name}.tar"));
        let dest = format!("{spec},dest={}", tar.display());
        let (out, _, log) = kiln_build(&k, &ctx, &["-t", "layers-test:1", "-o", &dest]);
        assert!(out.status.success(), "-o {spec}:\n{log}");
        if spec.contains("zstd") {
            assert!(
                log.contains("using OCI media types"),
                "-o {spec} says so:\n{log}"
            );
        }
        let dir = tmp.path().join(name);
        extract_tar(&tar, &dir);
        let read = |digest: &serde_json::Value| -> serde_json::Value {
            let hex = digest.as_str().unwrap().strip_prefix("sha256:").unwrap();
            serde_json::from_slice(&fs::read(dir.join("blobs/sha256").join(hex)).unwrap()).unwrap()
        };
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
        let top = &index["manifests"][0];
        assert_eq!(top["mediaType"], manifest_type, "-o {spec}: {index}");
        let manifest = read(&top["digest"]);
        assert_eq!(
            manifest["mediaType"], manifest_type,
            "-o {spec}: {manifest}"
        );
        assert_eq!(manifest["config"]["mediaType"], config_type, "-o {spec}");
        assert_eq!(
            manifest["config"]["digest"], config_digest,
            "-o {spec}: the image ID"
        );
        // The built layer takes the output's compression; the base's layer
        // keeps its own (gzip here) under the archive's family of types.
        let layers = manifest["layers"].as_array().unwrap();
        let (built, base) = layers.split_last().unwrap();
        assert_eq!(built["mediaType"], layer_type, "-o {spec}: {built}");
        let family = layer_type.rsplit_once(['.', '+']).unwrap().0;
        for l in base {
            let t = l["mediaType"].as_str().unwrap();
            assert!(
                t.starts_with(family) && t.ends_with("gzip"),
                "-o {spec}: {l}"
            );
        }
    }
}
