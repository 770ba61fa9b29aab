//! The image-store commands as a docker user meets them (issue #13, items 9
//! and 11): `save`/`load`/`export` on standard streams, `save` of several
//! images into one archive, `images REPO`, `images --format`, `inspect
//! --format`, `rmi -f`, `prune --dry-run`, `system df`, and a not-found
//! error that names the reference. Each as root and as kilntest.

#[macro_use]
mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use common::build::*;

const OTHER: &str = "kiln-test/other:2";

/// A store with busybox under two names (one image) and a second image.
fn setup(who: Who) -> (tempfile::TempDir, KilnBuild) {
    let tmp = scratch("kiln-store-cli-");
    let k = KilnBuild::new(&tmp.path().join("store"), who);
    import_bases(&k, false);
    k.ok(&["tag", BUSYBOX_IMAGE, "kiln-test/alias:1"]);
    // At the bases' fixed time: the same rootfs gives busybox's layer.
    let out = k
        .cmd()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["import", busybox_dir().to_str().unwrap(), OTHER])
        .args(["--change", "ENV A=1 B=2", "-m", "the other one"])
        .output()
        .unwrap();
    common::assert_success(&out, "import other");
    (tmp, k)
}

/// `kiln ARGS` with `input` on standard input.
fn with_stdin(k: &KilnBuild, args: &[&str], input: &[u8]) -> Output {
    let mut child = k
        .cmd()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn fails(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `tar` (GNU's, as a user would) run over `bytes`.
fn gnu_tar(bytes: &[u8], args: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.tar");
    fs::write(&file, bytes).unwrap();
    let out = std::process::Command::new("tar")
        .args(args)
        .arg("-f")
        .arg(&file)
        .output()
        .unwrap();
    common::assert_success(&out, &format!("tar {args:?}"));
    out.stdout
}

/// The names in a tar, in order.
fn tar_names(tar: &[u8]) -> Vec<String> {
    String::from_utf8(gnu_tar(tar, &["-t"]))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn tar_member(tar: &[u8], name: &str) -> Vec<u8> {
    gnu_tar(tar, &["-xO", name])
}

fn image_lines(k: &KilnBuild) -> Vec<String> {
    let out = k.ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    out.lines().map(str::to_string).collect()
}

fn id_of(k: &KilnBuild, name: &str) -> String {
    k.ok(&["inspect", "--format", "{{.Id}}", name])
        .trim()
        .to_string()
}

both!(save_load_and_export_use_standard_streams, |who| {
    let (tmp, k) = setup(who);
    // `save a b c` with no -o: one docker-archive on stdout holding both
    // images, the two names of busybox in one entry.
    let out = k.output(&["save", BUSYBOX_IMAGE, "kiln-test/alias:1", OTHER]);
    common::assert_success(&out, "save to stdout");
    let manifest: serde_json::Value =
        serde_json::from_slice(&tar_member(&out.stdout, "manifest.json")).unwrap();
    let entries = manifest.as_array().unwrap();
    assert_eq!(entries.len(), 2, "{manifest}");
    assert_eq!(
        entries[0]["RepoTags"],
        serde_json::json!([BUSYBOX_IMAGE, "kiln-test/alias:1"])
    );
    assert_eq!(entries[1]["RepoTags"], serde_json::json!([OTHER]));
    // The shared layer is written once.
    let names = tar_names(&out.stdout);
    let layer = entries[0]["Layers"][0].as_str().unwrap();
    assert_eq!(names.iter().filter(|n| *n == layer).count(), 1, "{names:?}");

    // `-o -` is the same stream.
    let dash = k.output(&["save", "-o", "-", BUSYBOX_IMAGE, "kiln-test/alias:1", OTHER]);
    common::assert_success(&dash, "save -o -");
    assert_eq!(dash.stdout, out.stdout, "save -o - and save differ");

    // `load` with no -i reads stdin, into a fresh store: every name back,
    // with the same IDs.
    let k2 = KilnBuild::new(&tmp.path().join("store2"), who);
    let loaded = with_stdin(&k2, &["load"], &out.stdout);
    common::assert_success(&loaded, "load from stdin");
    let said = String::from_utf8_lossy(&loaded.stdout);
    for n in [BUSYBOX_IMAGE, "kiln-test/alias:1", OTHER] {
        assert!(said.contains(&format!("Loaded image: {n}")), "{said}");
    }
    assert_eq!(image_lines(&k2), image_lines(&k));
    assert!(
        fs::read_dir(k2.root.join("tmp")).unwrap().next().is_none(),
        "load left its spooled copy of stdin in the store"
    );
    // `-i -` too, into a third store.
    let k3 = KilnBuild::new(&tmp.path().join("store3"), who);
    common::assert_success(
        &with_stdin(&k3, &["load", "-i", "-"], &out.stdout),
        "load -i -",
    );
    assert_eq!(image_lines(&k3), image_lines(&k));
    // Not an archive: a clear error, nothing loaded.
    let junk = with_stdin(&k3, &["load"], b"not a tar at all");
    assert!(fails(&junk).contains("standard input"), "{junk:?}");

    // `export` with no -o writes the filesystem tar to stdout.
    let exp = k.output(&["export", OTHER]);
    common::assert_success(&exp, "export to stdout");
    let names = tar_names(&exp.stdout);
    assert!(
        names
            .iter()
            .any(|n| n.trim_start_matches("./") == "bin/busybox"),
        "{names:?}"
    );
    // A reader that goes away early (`| head -c 10`): the status a
    // SIGPIPE gives, no error text, and nothing left in the store.
    for args in [&["save", OTHER][..], &["export", OTHER][..]] {
        let mut child = k
            .cmd()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut head = [0u8; 10];
        std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut head).unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(141), "{args:?}: {out:?}");
        assert!(out.stderr.is_empty(), "{args:?}: {out:?}");
        let left: Vec<_> = fs::read_dir(k.root.join("tmp")).unwrap().collect();
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
    // An image that is not there: the error names the reference.
    let e = fails(&k.output(&["save", "nosuch"]));
    assert!(e.contains("docker.io/library/nosuch:latest"), "{e}");
});

/// `kiln ARGS` with its standard output (and input) on a terminal.
fn on_a_terminal(k: &KilnBuild, args: &[&str]) -> Output {
    let cmd = k.cmd();
    let mut line = shell_quote(cmd.get_program().to_str().unwrap());
    for a in cmd.get_args().chain(args.iter().map(std::ffi::OsStr::new)) {
        line.push(' ');
        line.push_str(&shell_quote(a.to_str().unwrap()));
    }
    std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .current_dir("/")
        .env_remove("KILN_ROOT")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

both!(archives_are_not_written_to_a_terminal, |who| {
    if !have("script") {
        missing_prerequisite("util-linux `script` (a terminal for kiln's stdout)");
        return;
    }
    let (_tmp, k) = setup(who);
    for args in [&["save", OTHER][..], &["export", OTHER][..]] {
        let out = on_a_terminal(&k, args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success(),
            "{args:?} wrote to a terminal: {text}"
        );
        assert!(text.contains("refusing to write"), "{args:?}: {text}");
    }
});

both!(images_filters_by_repository_and_formats, |who| {
    let (_tmp, k) = setup(who);
    // REPOSITORY alone: every tag of it; REPOSITORY:TAG: that one.
    let only = k.ok(&[
        "images",
        "kiln-test/busybox",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]);
    assert_eq!(only, format!("{BUSYBOX_IMAGE}\n"));
    let one = k.ok(&["images", OTHER, "--format", "{{.Tag}}"]);
    assert_eq!(one, "2\n");
    let none = k.ok(&["images", "kiln-test/busybox:9", "-q"]);
    assert_eq!(none, "");
    // The full name matches the familiar one.
    let full = k.ok(&[
        "images",
        "docker.io/kiln-test/other",
        "--format",
        "{{.Tag}}",
    ]);
    assert_eq!(full, "2\n");

    // --format: fields, literal text, \t, and {{json .}}.
    let id = id_of(&k, OTHER);
    let line = k.ok(&[
        "images",
        OTHER,
        "--format",
        r"{{.Repository}}\t{{.ID}} {{.Size}}",
    ]);
    let short = &id["sha256:".len().."sha256:".len() + 12];
    assert!(
        line.starts_with(&format!("kiln-test/other\t{short} ")),
        "{line:?} (id {id})"
    );
    let json: serde_json::Value =
        serde_json::from_str(k.ok(&["images", OTHER, "--format", "{{json .}}"]).trim()).unwrap();
    assert_eq!(json["Repository"], "kiln-test/other");
    assert_eq!(json["Tag"], "2");
    assert_eq!(json["ID"], short);
    assert!(
        json["CreatedSince"].as_str().unwrap().ends_with(" ago"),
        "{json}"
    );
    // `table` prints docker's header first, and aligns the columns as
    // docker does (the widest cell plus three spaces).
    let table = k.ok(&[
        "images",
        OTHER,
        "--format",
        r"table {{.ID}}\t{{.Repository}}",
    ]);
    assert_eq!(
        table,
        format!("IMAGE ID       REPOSITORY\n{short}   kiln-test/other\n")
    );
    // An unknown field is an error naming it, before any output.
    let out = k.output(&["images", "--format", "{{.Repo}}"]);
    let e = fails(&out);
    assert!(e.contains("\"Repo\""), "{e}");
    assert!(out.stdout.is_empty());
});

both!(inspect_formats_docker_fields, |who| {
    let (_tmp, k) = setup(who);
    let full: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", OTHER])).unwrap();
    assert_eq!(id_of(&k, OTHER), full["Id"].as_str().unwrap());
    let f = |t: &str| {
        k.ok(&["inspect", "--format", t, OTHER])
            .trim_end()
            .to_string()
    };
    assert_eq!(f("{{.Config.Env}}"), "[A=1 B=2]");
    assert_eq!(f("{{json .Config.Env}}"), r#"["A=1","B=2"]"#);
    assert_eq!(f("{{.RepoTags}}"), format!("[{OTHER}]"));
    assert_eq!(
        f("{{.Os}}/{{.Architecture}}"),
        format!("linux/{}", go_arch())
    );
    assert_eq!(f("{{.Comment}}"), "the other one");
    assert_eq!(
        f("{{json .RootFS.Layers}}"),
        full["Config"]["rootfs"]["diff_ids"].to_string()
    );
    let all: serde_json::Value = serde_json::from_str(&f("{{json .}}")).unwrap();
    assert_eq!(all["Id"], full["Id"]);
    assert_eq!(all["RootFS"]["Type"], "layers");
    // Two names of one image: both listed, sorted.
    let tags = k.ok(&[
        "inspect",
        "--format",
        "{{json .RepoTags}}",
        "kiln-test/alias:1",
    ]);
    let tags: Vec<String> = serde_json::from_str(&tags).unwrap();
    assert_eq!(tags, ["kiln-test/alias:1", BUSYBOX_IMAGE]);
    let e = fails(&k.output(&["inspect", "--format", "{{.Nope}}", OTHER]));
    assert!(e.contains("\"Nope\""), "{e}");
    let e = fails(&k.output(&["inspect", "--format", "{{range .RepoTags}}x{{end}}", OTHER]));
    assert!(e.contains("not supported"), "{e}");
    // Not found: the error names what was typed and what it was read as.
    let e = fails(&k.output(&["inspect", "nosuch:1"]));
    assert!(
        e.contains("\"nosuch:1\" (docker.io/library/nosuch:1)"),
        "{e}"
    );
});

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

both!(rmi_force_removes_every_name_of_an_id, |who| {
    let (_tmp, k) = setup(who);
    let id = id_of(&k, BUSYBOX_IMAGE);
    let short = &id["sha256:".len().."sha256:".len() + 12];
    let before = image_lines(&k);
    // Without -f an ID with two names is refused, naming both.
    let e = fails(&k.output(&["rmi", short]));
    assert!(
        e.contains(BUSYBOX_IMAGE) && e.contains("kiln-test/alias:1"),
        "{e}"
    );
    assert!(e.contains("-f"), "{e}");
    assert_eq!(image_lines(&k), before);
    // With -f both go, and only they.
    let out = k.ok(&["rmi", "-f", short]);
    assert_eq!(
        out,
        format!("Untagged: kiln-test/alias:1\nUntagged: {BUSYBOX_IMAGE}\n")
    );
    let after = image_lines(&k);
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(after[0].starts_with(&format!("{OTHER} ")), "{after:?}");
    // A missing name: an error naming the reference; with -f, none.
    let e = fails(&k.output(&["rmi", "nosuch"]));
    assert!(e.contains("docker.io/library/nosuch:latest"), "{e}");
    k.ok(&["rmi", "-f", "nosuch"]);
    // Several names, one missing: the others still go, and it fails.
    k.ok(&["tag", OTHER, "kiln-test/x:1"]);
    let e = fails(&k.output(&["rmi", "kiln-test/x:1", "nosuch"]));
    assert!(e.contains("nosuch"), "{e}");
    assert_eq!(image_lines(&k).len(), 1);
});

/// The `system df` row of `kind`: TOTAL, ACTIVE, SIZE, RECLAIMABLE.
fn df_row(k: &KilnBuild, kind: &str) -> Vec<String> {
    let out = k.ok(&["system", "df"]);
    assert!(out.starts_with("TYPE "), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with(kind))
        .unwrap_or_else(|| panic!("no {kind} row in:\n{out}"));
    line[kind.len()..]
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn blob_count(store: &Path) -> usize {
    fs::read_dir(store.join("blobs/sha256")).unwrap().count()
}

both!(prune_dry_run_removes_nothing_and_df_agrees, |who| {
    let (_tmp, k) = setup(who);
    // A run unpacks the image's layer; df counts it, in use.
    let run = k.output(&["run", OTHER, "/bin/true"]);
    common::assert_success(&run, "kiln run");
    let layers = df_row(&k, "Unpacked Layers");
    assert_eq!(&layers[..2], ["1", "1"], "{layers:?}");
    assert!(layers[3].starts_with("0B"), "{layers:?}");
    let images = df_row(&k, "Images");
    assert_eq!(&images[..2], ["3", "3"], "{images:?}");
    assert!(images[3].starts_with("0B"), "{images:?}");
    // A run on the copy snapshotter keeps its tree; df shows it, all of it
    // reclaimable.
    let run = k.output(&["run", "--rm", "--snapshotter", "copy", OTHER, "/bin/true"]);
    common::assert_success(&run, "kiln run --snapshotter copy");
    let trees = df_row(&k, "Kept Trees");
    assert_eq!(&trees[..2], ["1", "0"], "{trees:?}");
    assert!(!trees[3].starts_with("0B"), "{trees:?}");

    // OTHER's config and manifest lose their name; its layer is busybox's
    // too (same rootfs, same time), so it stays, and so does its
    // unpacked copy.
    k.ok(&["rmi", OTHER]);
    let blobs = blob_count(&k.root);
    let dry = k.ok(&["prune", "--dry-run"]);
    assert!(dry.contains("would remove blob sha256:"), "{dry}");
    assert!(dry.contains("Would remove 2 blobs"), "{dry}");
    assert_eq!(blob_count(&k.root), blobs, "--dry-run removed blobs");
    let images = df_row(&k, "Images");
    assert!(!images[3].starts_with("0B"), "{images:?}");

    // Every name gone: the layer and its unpacked copy would go too.
    k.ok(&["rmi", BUSYBOX_IMAGE, "kiln-test/alias:1"]);
    let dry = k.ok(&["prune", "--dry-run"]);
    assert!(dry.contains("would remove unpacked layer "), "{dry}");
    assert!(dry.contains("1 unpacked layers"), "{dry}");
    let layers = df_row(&k, "Unpacked Layers");
    assert_eq!(&layers[..2], ["1", "0"], "{layers:?}");
    assert!(!layers[3].starts_with("0B"), "{layers:?}");
    assert_eq!(blob_count(&k.root), blobs, "--dry-run removed blobs");

    // The real prune removes what the dry run listed; df then has nothing
    // to reclaim.
    let done = k.ok(&["prune"]);
    assert!(done.contains("1 unpacked layers"), "{done}");
    assert_eq!(blob_count(&k.root), 0);
    for kind in ["Images", "Build Cache", "Unpacked Layers", "Kept Trees"] {
        let row = df_row(&k, kind);
        assert!(row.last().unwrap().starts_with('('), "{row:?}");
        assert!(row[row.len() - 2].starts_with("0B"), "{kind}: {row:?}");
    }
});

both!(save_several_images_as_oci_archive_and_layout, |who| {
    let (tmp, k) = setup(who);
    // Same tag, two repositories: both stay, in the archive and the layout.
    k.ok(&["tag", OTHER, "kiln-test/third:1"]);
    let names = [BUSYBOX_IMAGE, "kiln-test/third:1"];
    let out = k.output(&["save", "--format", "oci-archive", names[0], names[1]]);
    common::assert_success(&out, "save --format oci-archive to stdout");
    let k2 = KilnBuild::new(&tmp.path().join("store2"), who);
    common::assert_success(&with_stdin(&k2, &["load"], &out.stdout), "load");
    let want: Vec<String> = image_lines(&k)
        .into_iter()
        .filter(|l| names.iter().any(|n| l.starts_with(&format!("{n} "))))
        .collect();
    assert_eq!(want.len(), 2, "{want:?}");
    assert_eq!(image_lines(&k2), want);

    let layout = tmp.path().join("layout");
    fs::create_dir(&layout).unwrap();
    if who == Who::Kilntest {
        give_to_kilntest(&layout);
    }
    let dir = layout.join("oci");
    k.ok(&[
        "save",
        "--format",
        "oci-dir",
        "-o",
        dir.to_str().unwrap(),
        names[0],
        names[1],
    ]);
    let k3 = KilnBuild::new(&tmp.path().join("store3"), who);
    k3.ok(&["load", "-i", dir.to_str().unwrap()]);
    assert_eq!(image_lines(&k3), want);
    // A layout is a directory: no standard output for it.
    let e = fails(&k.output(&["save", "--format", "oci-dir", OTHER]));
    assert!(e.contains("-o DIR"), "{e}");
});

both!(df_counts_the_build_cache_and_prune_forgets_it, |who| {
    if !kiln_build_available() {
        return; // kiln_build_available said so, loudly (and fails under CI)
    }
    let (tmp, k) = setup(who);
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {BUSYBOX_IMAGE}\nRUN echo cached > /cached\n"),
    )
    .unwrap();
    let (out, _, log) = kiln_build(&k, &ctx, &["-t", "kiln-test/built:1"]);
    assert!(out.status.success(), "{log}");
    let cache = df_row(&k, "Build Cache");
    assert_ne!(cache[0], "0", "{cache:?}");
    assert!(!cache[2].starts_with("0B"), "{cache:?}");
    assert_eq!(
        cache[2], cache[3],
        "all of the cache is reclaimable: {cache:?}"
    );

    let blobs = blob_count(&k.root);
    let dry = k.ok(&["prune", "--build-cache", "--dry-run"]);
    assert!(dry.contains("would forget "), "{dry}");
    assert_eq!(blob_count(&k.root), blobs, "--dry-run removed blobs");
    assert_eq!(
        df_row(&k, "Build Cache"),
        cache,
        "--dry-run forgot the cache"
    );

    k.ok(&["prune", "--build-cache"]);
    let cache = df_row(&k, "Build Cache");
    assert_eq!(cache[0], "0", "{cache:?}");
    assert!(cache[2].starts_with("0B"), "{cache:?}");
    // The built image stays.
    assert!(
        image_lines(&k)
            .iter()
            .any(|l| l.starts_with("kiln-test/built:1 ")),
        "{:?}",
        image_lines(&k)
    );
});
