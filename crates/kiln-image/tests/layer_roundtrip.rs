//! Write a tree as a layer, check determinism and that real tools read it,
//! extract it again and compare metadata.

#[path = "layer_util.rs"]
mod util;

use std::fs;
use std::io::Cursor;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kiln_image::layer::{
    Entry, ExtractOptions, LayerOptions, extract, flatten, write_dir_layer, write_entries_layer,
};
use kiln_image::media::Compression;
use util::*;

const SDE: i64 = 1_700_000_000;

/// A tree exercising every entry kind and every PAX path.
fn build_tree(root: &Path) {
    let p = |s: &str| root.join(s);
    fs::create_dir_all(p("etc/ssl")).unwrap();
    fs::create_dir_all(p("usr/bin")).unwrap();
    fs::write(p("etc/hostname"), "kiln\n").unwrap();
    fs::write(p("etc/empty"), "").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(p("usr/bin/tool"), &big).unwrap();
    fs::set_permissions(p("usr/bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::hard_link(p("usr/bin/tool"), p("usr/bin/tool-alias")).unwrap();
    fs::hard_link(p("usr/bin/tool"), p("etc/tool-link")).unwrap();
    // > 100 bytes in one component, > 255 bytes overall.
    let long1 = "n".repeat(150);
    let deep = format!("{}/{}/{}", "d".repeat(120), "e".repeat(120), "f".repeat(60));
    fs::write(root.join(&long1), "long name\n").unwrap();
    fs::create_dir_all(root.join(&deep)).unwrap();
    fs::write(root.join(&deep).join("file"), "deep\n").unwrap();
    fs::write(p("héllo wörld.txt"), "non-ascii\n").unwrap();
    std::os::unix::fs::symlink("../usr/bin/tool", p("etc/rel-link")).unwrap();
    std::os::unix::fs::symlink(format!("/{}", "t".repeat(150)), p("abs-long-link")).unwrap();
    fs::create_dir(p("tmp")).unwrap();
    fs::set_permissions(p("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::create_dir(p("shared")).unwrap();
    fs::set_permissions(p("shared"), fs::Permissions::from_mode(0o2775)).unwrap();
    xattr_set(&p("etc/hostname"), "user.kiln", b"value\0with nul");
    if is_root() {
        // v2 capability: cap_net_bind_service+ep
        let cap = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        xattr_set(&p("usr/bin/tool"), "security.capability", &cap);
        mknod(&p("null"), libc::S_IFCHR | 0o666, 1, 3);
        mknod(&p("fifo"), libc::S_IFIFO | 0o640, 0, 0);
        lchown(&p("etc/hostname"), 100_000, 100_001);
        lchown(&p("etc/rel-link"), 3_000_000, 4_000_000);
        lchown(&p("shared"), 1000, 2_200_000);
    }
    // mtimes last, deepest first, some above SOURCE_DATE_EPOCH.
    let mut all: Vec<_> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .collect();
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, path) in all.iter().enumerate() {
        set_mtime(path, SDE - 1000 + i as i64 * 97);
    }
}

fn opts(c: Compression, threads: usize) -> LayerOptions {
    LayerOptions {
        compression: c,
        level: None,
        threads,
        source_date_epoch: Some(SDE),
    }
}

fn layer(dir: &Path, c: Compression, threads: usize) -> (Vec<u8>, kiln_image::layer::LayerInfo) {
    write_dir_layer(dir, &opts(c, threads), Vec::new()).unwrap()
}

#[test]
fn deterministic_and_thread_independent() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    build_tree(&src);
    let (g1, i1) = layer(&src, Compression::Gzip, 1);
    for threads in [2, 8] {
        let (g, i) = layer(&src, Compression::Gzip, threads);
        assert!(g == g1, "gzip bytes differ with {threads} threads");
        assert_eq!(i, i1);
    }
    let (z1, zi1) = layer(&src, Compression::Zstd, 1);
    let (z2, _) = layer(&src, Compression::Zstd, 4);
    assert!(z1 == z2);
    let (plain, pi) = layer(&src, Compression::None, 1);
    assert_eq!(pi.digest, pi.diff_id);
    assert_eq!(i1.diff_id, pi.diff_id);
    assert_eq!(zi1.diff_id, pi.diff_id);
    assert_eq!(i1.size, g1.len() as u64);
    assert_eq!(i1.uncompressed_size, plain.len() as u64);
    assert_eq!(i1.digest, kiln_image::Digest::sha256_of(&g1));
    assert_eq!(pi.diff_id, kiln_image::Digest::sha256_of(&plain));

    // A second tree built the same way gives the same blob: nothing
    // depends on inode numbers, creation order, atime or ctime.
    let src2 = t.path().join("src2");
    fs::create_dir(&src2).unwrap();
    build_tree(&src2);
    assert!(layer(&src2, Compression::Gzip, 2).0 == g1);

    // Real tools read the results.
    let gz = t.path().join("l.tar.gz");
    fs::write(&gz, &g1).unwrap();
    sh(&format!("gzip -t {}", gz.display()));
    let names = sh(&format!("zcat {} | tar -t", gz.display()));
    assert!(names.contains("usr/bin/tool\n"), "{names}");
    assert!(names.contains(&format!("{}\n", "n".repeat(150))));
    assert!(names.contains("etc/\n"));
    if have("pigz") {
        sh(&format!("pigz -t {}", gz.display()));
    }
    if have("busybox") {
        sh(&format!(
            "busybox gzip -t {} || busybox zcat {} > /dev/null",
            gz.display(),
            gz.display()
        ));
    }
    let tar_v = sh(&format!("zcat {} | tar -tv --numeric-owner", gz.display()));
    if is_root() {
        assert!(tar_v.contains("100000/100001"), "{tar_v}");
    }
    if have("zstd") {
        let zs = t.path().join("l.tar.zst");
        fs::write(&zs, &z1).unwrap();
        let out = sh(&format!("zstd -dc {} | sha256sum", zs.display()));
        assert!(out.starts_with(pi.diff_id.hex()), "{out}");
    }
}

#[test]
fn extract_round_trip_keeps_metadata() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let dst = t.path().join("dst");
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    build_tree(&src);
    let (blob, _) = layer(&src, Compression::Gzip, 2);
    let rep = extract(Cursor::new(&blob), &dst, &ExtractOptions::default()).unwrap();
    assert!(rep.warnings.is_empty(), "{:?}", rep.warnings);
    assert_eq!(rep.compression, Some(Compression::Gzip));
    let (mut a, b) = (snapshot(&src), snapshot(&dst));
    for n in a.values_mut() {
        n.mtime = n.mtime.min(SDE);
    }
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, na) in &a {
        assert_eq!(Some(na), b.get(k), "{k}");
    }
    assert_eq!(a["usr/bin/tool-alias"].link_group, "etc/tool-link");
    if is_root() {
        assert!(a["usr/bin/tool"].xattrs.contains_key("security.capability"));
        assert_eq!(a["null"].kind, "char");
    }
    // And the re-written layer of the extracted tree is the same blob.
    assert!(layer(&dst, Compression::Gzip, 1).0 == blob);
}

#[test]
fn entry_list_layers_and_whiteouts() {
    let entries = vec![
        Entry::file_bytes("app/main.py", "print('hi')\n").with_mtime(5),
        Entry::dir("app").with_mode(0o750).with_owner(1000, 1000),
        Entry::whiteout("etc/old.conf"),
        Entry::opaque_whiteout("var/cache"),
        Entry::dir("var/cache"),
        Entry::dir("var"),
        Entry::dir("etc"),
        Entry::symlink("app/link", "main.py"),
        Entry::hardlink("app/hard", "app/main.py"),
    ];
    let (blob, info) =
        write_entries_layer(entries, &opts(Compression::None, 1), Vec::new()).unwrap();
    assert_eq!(info.size, blob.len() as u64);
    let mut ar = tar::Archive::new(&blob[..]);
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "app/",
            "app/hard",
            "app/link",
            "app/main.py",
            "etc/",
            "etc/.wh.old.conf",
            "var/",
            "var/cache/",
            "var/cache/.wh..wh..opq",
        ]
    );

    // Apply on top of a lower layer.
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    fs::create_dir_all(root.join("var/cache/apt")).unwrap();
    fs::write(root.join("var/cache/apt/pkg"), "x").unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/old.conf"), "x").unwrap();
    fs::write(root.join("etc/keep.conf"), "x").unwrap();
    extract(Cursor::new(&blob), root, &ExtractOptions::default()).unwrap();
    assert!(!root.join("etc/old.conf").exists());
    assert!(root.join("etc/keep.conf").exists());
    assert!(root.join("var/cache").is_dir());
    assert!(!root.join("var/cache/apt").exists());
    assert_eq!(
        fs::read_to_string(root.join("app/link")).unwrap(),
        "print('hi')\n"
    );
}

#[test]
fn opaque_marker_after_siblings_keeps_this_layers_entries() {
    use util::RawTar;
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    fs::create_dir_all(root.join("d/lower-dir")).unwrap();
    fs::write(root.join("d/lower"), "old").unwrap();
    fs::write(root.join("d/lower-dir/f"), "old").unwrap();
    // Layer order a naive writer may produce: content, then the marker.
    let tar = RawTar::default()
        .dir("d/")
        .file("d/new", b"new")
        .dir("d/lower-dir/")
        .file("d/lower-dir/g", b"new")
        .file("d/.wh..wh..opq", b"")
        .end();
    extract(Cursor::new(tar), root, &ExtractOptions::default()).unwrap();
    let mut names: Vec<String> = walkdir::WalkDir::new(root.join("d"))
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(root)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["d/lower-dir", "d/lower-dir/g", "d/new"]);
}

#[test]
fn overlay_whiteouts_are_converted() {
    use kiln_image::layer::OverlayFormat;
    if !is_root() {
        missing_prerequisite("this layer test needs root (owners, devices)");
        return;
    }
    let tar = util::RawTar::default()
        .dir("d/")
        .file("d/.wh..wh..opq", b"")
        .file(".wh.gone", b"")
        .end();
    let t = tempfile::tempdir().unwrap();
    let o = ExtractOptions {
        overlay_whiteouts: Some(OverlayFormat::User),
        ..Default::default()
    };
    extract(Cursor::new(tar), t.path(), &o).unwrap();
    let s = snapshot(t.path());
    assert_eq!(s["gone"].kind, "char");
    assert_eq!(s["gone"].content, "0");
    assert_eq!(
        s["d"].xattrs.get("user.overlay.opaque").map(|v| &v[..]),
        Some(&b"y"[..])
    );
}

#[test]
fn flatten_applies_whiteouts() {
    let l1 = write_entries_layer(
        vec![
            Entry::dir("a"),
            Entry::file_bytes("a/keep", "1"),
            Entry::file_bytes("a/gone", "2"),
            Entry::dir("b"),
            Entry::file_bytes("b/old", "3"),
        ],
        &opts(Compression::Gzip, 2),
        Vec::new(),
    )
    .unwrap()
    .0;
    let l2 = write_entries_layer(
        vec![
            Entry::whiteout("a/gone"),
            Entry::dir("a"),
            Entry::dir("b"),
            Entry::opaque_whiteout("b"),
            Entry::file_bytes("b/new", "4"),
        ],
        &opts(Compression::Zstd, 1),
        Vec::new(),
    )
    .unwrap()
    .0;
    let scratch = tempfile::tempdir().unwrap();
    let (out, info, warnings) = flatten(
        [Cursor::new(l1), Cursor::new(l2)],
        scratch.path(),
        &opts(Compression::None, 1),
        Vec::new(),
    )
    .unwrap();
    assert!(warnings.is_empty());
    assert_eq!(info.size, out.len() as u64);
    let mut ar = tar::Archive::new(&out[..]);
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
        .collect();
    assert_eq!(names, ["a/", "a/keep", "b/", "b/new"]);
    assert_eq!(
        fs::read_dir(scratch.path()).unwrap().count(),
        0,
        "scratch cleaned"
    );
}

/// Go's compress/gzip (through skopeo) reads our block-parallel gzip: an
/// OCI layout with the layer is copied with `--dest-decompress`, and the
/// decompressed blob must hash to the diff ID.
#[test]
fn go_gzip_reads_our_layers() {
    if !have("skopeo") {
        missing_prerequisite("skopeo is not installed");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    build_tree(&src);
    let (blob, info) = layer(&src, Compression::Gzip, 2);
    let layout = t.path().join("layout");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = kiln_image::Digest::sha256_of(bytes);
        fs::write(blobs.join(d.hex()), bytes).unwrap();
        (d, bytes.len())
    };
    put(&blob);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [info.diff_id.to_string()]},
    });
    let (cd, cs) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": cd.to_string(), "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": info.digest.to_string(), "size": info.size}],
    });
    let (md, ms) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": md.to_string(), "size": ms,
                       "annotations": {"org.opencontainers.image.ref.name": "t"}}],
    });
    fs::write(layout.join("index.json"), index.to_string()).unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let out = t.path().join("out");
    sh(&format!(
        "skopeo --insecure-policy copy -q --dest-decompress oci:{}:t dir:{}",
        layout.display(),
        out.display()
    ));
    assert!(
        out.join(info.diff_id.hex()).exists(),
        "decompressed layer {} missing: {:?}",
        info.diff_id,
        fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
}

/// Archives made by GNU tar (gnu and pax formats, `./` prefixes, long
/// names, xattrs) extract to the same tree.
#[test]
fn gnu_tar_archives_extract() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    build_tree(&src);
    let mut want = snapshot(&src);
    for format in ["gnu", "pax"] {
        let tarball = t.path().join(format!("{format}.tar"));
        sh(&format!(
            "tar --format={format} --xattrs --xattrs-include='*' --numeric-owner -C {} -cf {} .",
            src.display(),
            tarball.display()
        ));
        let dst = t.path().join(format!("dst-{format}"));
        fs::create_dir(&dst).unwrap();
        let rep = extract(
            fs::File::open(&tarball).unwrap(),
            &dst,
            &ExtractOptions::default(),
        )
        .unwrap();
        assert!(rep.warnings.is_empty(), "{format}: {:?}", rep.warnings);
        let got = snapshot(&dst);
        for (k, n) in want.iter_mut() {
            let g = &got[k];
            if format == "gnu" {
                n.xattrs = g.xattrs.clone(); // the gnu format has no xattrs
            }
            assert_eq!(Some(&*n), Some(g), "{format}: {k}");
        }
        assert_eq!(want.len(), got.len());
    }
}

/// Entry-list sources: a reader, and a host file that changed size after
/// it was listed (an error naming the file, not a corrupt layer).
#[test]
fn reader_sources_and_changed_files() {
    use kiln_image::layer::{EntryKind, FileSource, LayerError};
    let data = b"streamed content".to_vec();
    let e = Entry::new(
        "r",
        EntryKind::File {
            source: FileSource::Reader(Box::new(Cursor::new(data.clone()))),
            size: data.len() as u64,
        },
        0o600,
    );
    let (blob, _) = write_entries_layer(vec![e], &opts(Compression::None, 1), Vec::new()).unwrap();
    let mut ar = tar::Archive::new(&blob[..]);
    let mut ent = ar.entries().unwrap().next().unwrap().unwrap();
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut ent, &mut got).unwrap();
    assert_eq!(got, data);

    let t = tempfile::tempdir().unwrap();
    let host = t.path().join("grows");
    fs::write(&host, "12345").unwrap();
    for size in [3u64, 9] {
        let e = Entry::file_host("f", &host, size);
        let err =
            write_entries_layer(vec![e], &opts(Compression::Gzip, 2), Vec::new()).unwrap_err();
        assert!(matches!(err, LayerError::Changed { .. }), "{err}");
        assert!(err.to_string().contains("grows"), "{err}");
    }
}

/// GNU sparse entries are written densely; PAX sparse files (which the tar
/// crate would hand over with their sparse map as content) are refused by
/// name.
#[test]
fn sparse_files() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let f = fs::File::create(src.join("sparse")).unwrap();
    f.set_len(3 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"data", 1 << 20).unwrap();
    for (format, ok) in [("gnu", true), ("pax", false)] {
        let tarball = t.path().join(format!("{format}.tar"));
        sh(&format!(
            "tar --format={format} --sparse -C {} -cf {} sparse",
            src.display(),
            tarball.display()
        ));
        let dst = t.path().join(format!("dst-{format}"));
        fs::create_dir(&dst).unwrap();
        let r = extract(
            fs::File::open(&tarball).unwrap(),
            &dst,
            &ExtractOptions::default(),
        );
        if ok {
            r.unwrap();
            assert!(fs::read(dst.join("sparse")).unwrap() == fs::read(src.join("sparse")).unwrap());
        } else {
            let e = r.unwrap_err().to_string();
            assert!(e.contains("sparse"), "{e}");
        }
    }
}

/// An overlayfs upper dir (0/0 char device whiteouts, opaque xattr) walks
/// into whiteout entries, and the layer applies them.
#[test]
fn overlay_upper_dir_walks_into_whiteouts() {
    use kiln_image::layer::{EntryKind, OverlayFormat, WalkOptions, walk_dir};
    if !is_root() {
        missing_prerequisite("this layer test needs root (owners, devices)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let upper = t.path().join("upper");
    fs::create_dir_all(upper.join("etc")).unwrap();
    fs::create_dir_all(upper.join("var/cache")).unwrap();
    mknod(&upper.join("etc/removed"), libc::S_IFCHR, 0, 0);
    xattr_set(&upper.join("var/cache"), "trusted.overlay.opaque", b"y");
    fs::write(upper.join("var/cache/new"), "new").unwrap();
    let o = WalkOptions {
        overlay: Some(OverlayFormat::Trusted),
        ..Default::default()
    };
    let entries = walk_dir(&upper, &o).unwrap();
    let kinds: Vec<String> = entries
        .iter()
        .map(|e| {
            let k = match e.kind {
                EntryKind::Whiteout => "wh",
                EntryKind::OpaqueWhiteout => "opq",
                EntryKind::Dir => "dir",
                _ => "other",
            };
            format!("{} {k}", e.path.display())
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "etc dir",
            "etc/removed wh",
            "var dir",
            "var/cache opq",
            "var/cache dir",
            "var/cache/new other"
        ]
    );
    assert!(
        entries.iter().all(|e| e.xattrs.is_empty()),
        "overlay xattrs kept"
    );
    let (blob, _) = write_entries_layer(entries, &opts(Compression::Gzip, 2), Vec::new()).unwrap();
    let root = t.path().join("root");
    fs::create_dir_all(root.join("var/cache/apt")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/removed"), "old").unwrap();
    extract(Cursor::new(blob), &root, &ExtractOptions::default()).unwrap();
    assert!(!root.join("etc/removed").exists());
    assert!(!root.join("var/cache/apt").exists());
    assert!(root.join("var/cache/new").exists());
}
