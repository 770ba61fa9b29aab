//! `kiln.toml` builds (issue 17): Debian packages from the host's apt
//! mirror without RUN, `kiln lock`, and the refusals. The acceptance image
//! is the issue's file, unchanged. Downloads are shared between the tests
//! of one run: every store is seeded (hard links) from one cache, and what
//! a build downloads goes back into it.

#[macro_use]
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use common::build::*;
use common::{assert_success, is_root};

const ACCEPTANCE: &str = r#"[image]
base = "scratch"
user = "nonroot"
workdir = "/home/nonroot"
entrypoint = ["/usr/bin/python3"]
env = { LANG = "C.UTF-8" }

[debian]
suite = "bookworm"
packages = ["base-files", "netbase", "tzdata", "ca-certificates", "libc6", "libssl3", "python3-minimal"]

[[user]]
name = "nonroot"
uid = 65532
gid = 65532
home = "/home/nonroot"

[[file]]
src = "app/"
dest = "/app/"
"#;

/// The download cache every store is seeded from. One place for every
/// run (its files are named by their verified hash, so an old one is never
/// wrong), so runs neither fill the disk nor download twice.
fn cache() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = PathBuf::from("/var/tmp/kiln-decl-download-cache");
        fs::create_dir_all(&d).unwrap();
        fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        d
    })
}

static CACHE_LOCK: Mutex<()> = Mutex::new(());

/// Hard-links every file of `from` into `to` that `to` lacks.
fn link_all(from: &Path, to: &Path) {
    let _g = CACHE_LOCK.lock().unwrap();
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).into_iter().flatten().flatten() {
        let dest = to.join(e.file_name());
        let name = e.file_name();
        if !dest.exists() && name.len() == 64 {
            let _ = fs::hard_link(e.path(), &dest);
        }
    }
}

/// A fresh store for `who`, its download cache seeded.
fn store(who: Who) -> (tempfile::TempDir, KilnBuild) {
    let d = scratch("kiln-decl-");
    let root = d.path().join("store");
    link_all(cache(), &root.join("debian/sha256"));
    (d, KilnBuild::new(&root, who))
}

fn harvest(k: &KilnBuild) {
    link_all(&k.root.join("debian/sha256"), cache());
}

/// The acceptance project (kiln.toml, app/, kiln.lock), locked once.
fn project() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = scratch("kiln-decl-project-").keep();
        fs::write(d.join("kiln.toml"), ACCEPTANCE).unwrap();
        fs::create_dir_all(d.join("app")).unwrap();
        fs::write(d.join("app/main.py"), "print('hello from the app')\n").unwrap();
        let (_t, k) = store(Who::Caller);
        k.ok(&["lock", "-f", d.join("kiln.toml").to_str().unwrap()]);
        harvest(&k);
        d
    })
}

fn toml(dir: &Path) -> String {
    dir.join("kiln.toml").to_str().unwrap().to_string()
}

/// (name, version) of every package in a kiln.lock.
fn locked(dir: &Path) -> Vec<(String, String)> {
    let v: toml::Table = fs::read_to_string(dir.join("kiln.lock"))
        .unwrap()
        .parse()
        .unwrap();
    v["package"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["version"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn build_id(k: &KilnBuild, file: &str, tag: &str) -> String {
    let id = k.ok(&["build", "-f", file, "-t", tag]);
    id.trim().to_string()
}

fn skip_if_not_root_for(who: Who) -> bool {
    if who == Who::Kilntest && !is_root() {
        missing_prerequisite("the kilntest variant needs a root caller");
        return true;
    }
    false
}

both!(acceptance_image_runs_python_as_nonroot, |who| {
    if skip_if_not_root_for(who) {
        return;
    }
    let dir = project();
    let (tmp, k) = store(who);
    build_id(&k, &toml(dir), "py:1");
    harvest(&k);
    let out = k.ok(&[
        "run",
        "py:1",
        "-c",
        "import ssl, os; print(ssl.OPENSSL_VERSION); print(os.getuid(), os.getgid()); print(open('/app/main.py').read())",
    ]);
    assert!(out.contains("OpenSSL 3."), "{out}");
    assert!(out.contains("65532 65532"), "{out}");
    assert!(out.contains("hello from the app"), "{out}");

    let rootfs = tmp.path().join("rootfs");
    k.rootfs("py:1", &rootfs);
    assert!(
        fs::symlink_metadata(rootfs.join("bin/sh")).is_err()
            && fs::symlink_metadata(rootfs.join("usr/bin/sh")).is_err(),
        "the image has no shell"
    );
    let passwd = fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(
        passwd.contains("nonroot:x:65532:65532::/home/nonroot:"),
        "{passwd}"
    );
    let bundle = fs::read_to_string(rootfs.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    assert!(bundle.matches("BEGIN CERTIFICATE").count() > 50);
    let q = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            rootfs.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f", "${Package} ${Version} ${Status}\n"])
        .output()
        .unwrap();
    assert_success(&q, "dpkg-query -W");
    let listed = String::from_utf8_lossy(&q.stdout);
    let lock = locked(dir);
    assert!(lock.len() >= 7, "{lock:?}");
    for (name, version) in &lock {
        assert!(
            listed.contains(&format!("{name} {version} install ok installed")),
            "{name} {version} not in dpkg-query's list:\n{listed}"
        );
    }
    let cfg = runtime_config(&k.config_blob("py:1"));
    assert_eq!(cfg["User"], "65532:65532");
    assert_eq!(cfg["Entrypoint"][0], "/usr/bin/python3");
});

/// Two clean stores, the same lock: the same image ID, even when the
/// second build has no network (a namespace with only loopback) and takes
/// every package from the download cache.
#[test]
fn two_builds_one_digest_and_offline_from_the_cache() {
    if !is_root() || !have("unshare") {
        missing_prerequisite("the offline build needs root and unshare");
        return;
    }
    let dir = project();
    let (a_dir, ka) = store(Who::Caller);
    let first = build_id(&ka, &toml(dir), "py:1");
    harvest(&ka);
    let (_b, kb) = store(Who::Caller);
    let out = Command::new("unshare")
        .arg("--net")
        .arg(&kb.bin)
        .arg("--root")
        .arg(&kb.root)
        .args(["build", "-f", &toml(dir), "-t", "py:1"])
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert_success(&out, "kiln build with the network off");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), first);

    let out = ka
        .cmd()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "-f", &toml(dir), "-t", "py:epoch"])
        .output()
        .unwrap();
    assert_success(&out, "kiln build with SOURCE_DATE_EPOCH");
    assert_ne!(String::from_utf8_lossy(&out.stdout).trim(), first);
    let cfg = ka.config_blob("py:epoch");
    assert_eq!(cfg["created"], "2023-11-14T22:13:20Z");

    // -o type=oci as for a Dockerfile build: layers leave compressed.
    let archive = a_dir.path().join("py-oci.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    ka.ok(&["build", "-f", &toml(dir), "-t", "py:1", "-o", &dest]);
    let mut blobs = std::collections::BTreeMap::new();
    let mut ar = tar::Archive::new(fs::File::open(&archive).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut body).unwrap();
        blobs.insert(name, body);
    }
    let index: serde_json::Value = serde_json::from_slice(&blobs["index.json"]).unwrap();
    let top = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .replace(':', "/");
    let manifest: serde_json::Value =
        serde_json::from_slice(&blobs[&format!("blobs/{top}")]).unwrap();
    for l in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
    }
}

/// A project copy whose kiln.toml is `text` (and whose lock is the
/// acceptance lock, edited by `edit`, or none).
fn variant(text: &str, lock: Option<&dyn Fn(String) -> String>) -> tempfile::TempDir {
    let d = scratch("kiln-decl-variant-");
    fs::write(d.path().join("kiln.toml"), text).unwrap();
    fs::create_dir_all(d.path().join("app")).unwrap();
    if let Some(edit) = lock {
        let l = fs::read_to_string(project().join("kiln.lock")).unwrap();
        fs::write(d.path().join("kiln.lock"), edit(l)).unwrap();
    }
    d
}

fn fails(k: &KilnBuild, args: &[&str]) -> String {
    let out = k.output(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "kiln {args:?} succeeded:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn a_deb_that_does_not_match_the_lock_is_refused_and_nothing_is_tagged() {
    let v = variant(
        ACCEPTANCE,
        Some(&|l: String| {
            // netbase's hash, replaced.
            let start = l.find("name = \"netbase\"").unwrap();
            let at = start + l[start..].find("sha256 = \"").unwrap() + 10;
            format!("{}{}{}", &l[..at], "0".repeat(64), &l[at + 64..])
        }),
    );
    let (_t, k) = store(Who::Caller);
    let err = fails(&k, &["build", "-f", &toml(v.path()), "-t", "bad:1"]);
    assert!(
        err.contains("SHA-256 mismatch") && err.contains("netbase"),
        "{err}"
    );
    assert!(!k.ok(&["images"]).contains("bad"), "nothing tagged");
}

#[test]
fn unknown_packages_get_suggestions() {
    let v = variant(
        &ACCEPTANCE.replace("\"python3-minimal\"]", "\"python3-minimall\"]"),
        None,
    );
    let (_t, k) = store(Who::Caller);
    let err = fails(&k, &["lock", "-f", &toml(v.path())]);
    assert!(err.contains("no package \"python3-minimall\""), "{err}");
    assert!(err.contains("did you mean python3-minimal"), "{err}");
    assert!(!v.path().join("kiln.lock").exists());
}

#[test]
fn a_lock_for_other_packages_is_out_of_date() {
    let v = variant(
        &ACCEPTANCE.replace("\"netbase\", ", ""),
        Some(&|l: String| l),
    );
    let (_t, k) = store(Who::Caller);
    let err = fails(&k, &["build", "-f", &toml(v.path()), "-t", "x:1"]);
    assert!(
        err.contains("does not match [debian]") && err.contains("kiln lock"),
        "{err}"
    );
}

/// The InRelease of the host's mirror, as served (fetched with
/// kiln-debian's own client, uncached).
fn real_inrelease() -> String {
    let sources = kiln_debian::sources::host_sources(Path::new("/etc/apt"));
    let mirror = &kiln_debian::sources::mirror_for(&sources, "bookworm")
        .expect("the host's apt sources name a Debian mirror")
        .uri;
    let tmp = scratch("kiln-decl-fetch-");
    let f = kiln_debian::Fetcher::new(tmp.path()).unwrap();
    let url = format!("{}/dists/bookworm/InRelease", mirror.trim_end_matches('/'));
    String::from_utf8(f.get(&url).unwrap()).unwrap()
}

/// A `file://` mirror holding `inrelease` and a Packages.gz of `packages`.
fn fake_mirror(inrelease: &str, packages: &[u8]) -> tempfile::TempDir {
    let d = scratch("kiln-decl-mirror-");
    let dists = d.path().join("dists/bookworm");
    fs::create_dir_all(dists.join("main/binary-amd64")).unwrap();
    fs::write(dists.join("InRelease"), inrelease).unwrap();
    fs::write(dists.join("main/binary-amd64/Packages.gz"), packages).unwrap();
    d
}

fn with_mirror(mirror: &Path, extra: &str) -> String {
    ACCEPTANCE.replace(
        "suite = \"bookworm\"",
        &format!(
            "suite = \"bookworm\"\nmirror = \"file://{}\"{extra}",
            mirror.display()
        ),
    )
}

#[test]
fn inrelease_and_index_refusals() {
    if std::env::consts::ARCH != "x86_64" {
        missing_prerequisite("the fake mirror holds amd64 indexes");
        return;
    }
    let real = real_inrelease();
    // Not seeded: the real Packages.gz must not be in its cache.
    let t = scratch("kiln-decl-");
    let k = KilnBuild::new(&t.path().join("store"), Who::Caller);

    // One byte of the signed text changed: the signature no longer holds.
    let m = fake_mirror(&real.replacen("Label: Debian", "Label: Debiam", 1), b"");
    let v = variant(&with_mirror(m.path(), ""), None);
    let err = fails(&k, &["lock", "-f", &toml(v.path())]);
    assert!(err.contains("BAD signature"), "{err}");

    // Signed, but by keys the named keyring does not hold.
    let m = fake_mirror(&real, b"");
    let v = variant(
        &with_mirror(
            m.path(),
            "\nkeyring = \"/usr/share/keyrings/debian-archive-trixie-stable.gpg\"",
        ),
        None,
    );
    let err = fails(&k, &["lock", "-f", &toml(v.path())]);
    assert!(err.contains("unknown key"), "{err}");

    // A good InRelease, a Packages.gz that is not the one it signs.
    let v = variant(&with_mirror(m.path(), ""), None);
    let err = fails(&k, &["lock", "-f", &toml(v.path())]);
    assert!(
        err.contains("SHA-256 mismatch") && err.contains("Packages.gz"),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(k.root.join("debian/sha256"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
            .count(),
        0,
        "no partial download is left"
    );
}

/// The same image under podman with runc: python3 runs as 65532.
#[test]
fn podman_runs_the_acceptance_image() {
    if !is_root() || !have("podman") || !have("runc") {
        missing_prerequisite("this test needs root, podman and runc (.ci/run installs them)");
        return;
    }
    let dir = project();
    let (tmp, k) = store(Who::Caller);
    build_id(&k, &toml(dir), "kiln-test/py:1");
    harvest(&k);
    // One layer for podman: its vfs driver copies the whole tree per layer,
    // and the image has one layer per package.
    k.ok(&["flatten", "kiln-test/py:1", "-t", "kiln-test/py:1"]);
    let archive = tmp.path().join("py.tar");
    k.ok(&["save", "kiln-test/py:1", "-o", archive.to_str().unwrap()]);
    // A private podman store, so the test leaves the host's alone.
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(tmp.path().join("podman-root"))
            .arg("--runroot")
            .arg(tmp.path().join("podman-run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        let out = c.output().unwrap();
        assert_success(&out, &format!("podman {}", args.join(" ")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    podman(&["load", "-i", archive.to_str().unwrap()]);
    let out = podman(&[
        "run",
        "--rm",
        "--runtime",
        "runc",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "kiln-test/py:1",
        "-c",
        "import ssl, os; print(ssl.OPENSSL_VERSION, os.getuid())",
    ]);
    assert!(
        out.contains("OpenSSL 3.") && out.contains(" 65532"),
        "{out}"
    );
}

fn layer_digests(k: &KilnBuild, name: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", name])).unwrap();
    v["Manifest"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// A Python app whose dependencies (installed beforehand into `deps/`)
/// and code are separate `[[file]]`s: changing one code file changes only
/// the code layer, the packages and dependencies stay.
#[test]
fn an_app_code_change_changes_only_its_layer() {
    let text = format!(
        "{ACCEPTANCE}\n[[file]]\nsrc = \"deps/\"\ndest = \"/usr/lib/python3/dist-packages/\"\n\n[[file]]\nsrc = \"code/\"\ndest = \"/app/\"\nowner = \"nonroot\"\n"
    );
    let v = variant(&text, Some(&|l: String| l));
    fs::create_dir_all(v.path().join("deps/greeting")).unwrap();
    fs::write(
        v.path().join("deps/greeting/__init__.py"),
        "WORD = 'hello'\n",
    )
    .unwrap();
    fs::create_dir_all(v.path().join("code")).unwrap();
    fs::write(v.path().join("code/util.py"), "X = 1\n").unwrap();
    fs::write(
        v.path().join("code/main.py"),
        "import greeting; print(greeting.WORD, 'one')\n",
    )
    .unwrap();
    let (_t, k) = store(Who::Caller);
    build_id(&k, &toml(v.path()), "app:1");
    harvest(&k);
    let out = k.ok(&["run", "app:1", "/app/main.py"]);
    assert!(out.contains("hello one"), "{out}");
    let before = layer_digests(&k, "app:1");
    fs::write(
        v.path().join("code/main.py"),
        "import greeting; print(greeting.WORD, 'two')\n",
    )
    .unwrap();
    build_id(&k, &toml(v.path()), "app:2");
    let after = layer_digests(&k, "app:2");
    assert_eq!(before.len(), after.len());
    let changed: Vec<usize> = (0..before.len())
        .filter(|&i| before[i] != after[i])
        .collect();
    assert_eq!(changed, [before.len() - 1], "only the code layer changes");
    let out = k.ok(&["run", "app:2", "/app/main.py"]);
    assert!(out.contains("hello two"), "{out}");
}

/// A .deb (control + data tar) whose data members are `(name, type, link,
/// body)`, names written raw (tar::Builder refuses `..`).
fn deb(package: &str, members: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let tar_of = |members: &[(&str, tar::EntryType, &str, &[u8])]| {
        let mut b = tar::Builder::new(Vec::new());
        for (name, ty, link, body) in members {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*ty);
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            h.as_gnu_mut().unwrap().linkname[..link.len()].copy_from_slice(link.as_bytes());
            h.set_cksum();
            b.append(&h, *body).unwrap();
        }
        b.into_inner().unwrap()
    };
    let control = format!("Package: {package}\nVersion: 1\nArchitecture: all\n");
    let members_ar = [
        ("debian-binary", b"2.0\n".to_vec()),
        (
            "control.tar",
            tar_of(&[("./control", tar::EntryType::Regular, "", control.as_bytes())]),
        ),
        ("data.tar", tar_of(members)),
    ];
    let mut ar = b"!<arch>\n".to_vec();
    for (name, body) in members_ar {
        let head = format!(
            "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            0,
            0,
            0,
            100644,
            body.len()
        );
        ar.extend(head.bytes());
        ar.extend(&body);
        if body.len() % 2 == 1 {
            ar.push(b'\n');
        }
    }
    ar
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}

/// A repository of our own, signed by a key made here: a good package
/// installs (the keyring is an armored file), and a package whose data tar
/// climbs out with `../` is refused by name with nothing stored.
#[test]
fn a_signed_repository_of_our_own_and_a_hostile_deb() {
    if !have("gpg") {
        missing_prerequisite("gpg makes the test repository's key");
        return;
    }
    let d = scratch("kiln-decl-repo-");
    let gnupg = d.path().join("gnupg");
    fs::create_dir_all(&gnupg).unwrap();
    fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg")
            .env("GNUPGHOME", &gnupg)
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()
            .unwrap();
        assert_success(&out, &format!("gpg {}", args.join(" ")));
    };
    gpg(&[
        "--quick-gen-key",
        "kiln test <test@example.invalid>",
        "ed25519",
        "sign",
        "never",
    ]);
    let keyring = d.path().join("test.asc");
    gpg(&["--armor", "--output", keyring.to_str().unwrap(), "--export"]);

    let repo = d.path().join("repo");
    fs::create_dir_all(repo.join("pool")).unwrap();
    let good = deb(
        "good",
        &[
            ("./etc/", tar::EntryType::Directory, "", b""),
            ("./etc/good", tar::EntryType::Regular, "", b"good\n"),
        ],
    );
    let evil = deb(
        "evil",
        &[(
            "./../../../etc/evil",
            tar::EntryType::Regular,
            "",
            b"evil\n",
        )],
    );
    let mut packages = String::new();
    for (name, body) in [("good", &good), ("evil", &evil)] {
        fs::write(repo.join(format!("pool/{name}.deb")), body).unwrap();
        packages.push_str(&format!(
            "Package: {name}\nVersion: 1\nArchitecture: all\nFilename: pool/{name}.deb\nSize: {}\nSHA256: {}\n\n",
            body.len(),
            sha256(body)
        ));
    }
    let arch = kiln_debian::debian_arch(
        match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        },
        None,
    )
    .unwrap();
    let index = format!("main/binary-{arch}/Packages");
    let dists = repo.join("dists/bookworm");
    fs::create_dir_all(dists.join(format!("main/binary-{arch}"))).unwrap();
    fs::write(dists.join(&index), &packages).unwrap();
    let release = format!(
        "Origin: kiln test\nCodename: bookworm\nSuite: stable\nDate: Sat, 01 Jan 2000 00:00:00 UTC\nSHA256:\n {} {} {index}\n",
        sha256(packages.as_bytes()),
        packages.len()
    );
    fs::write(d.path().join("Release"), &release).unwrap();
    gpg(&[
        "--clearsign",
        "--output",
        dists.join("InRelease").to_str().unwrap(),
        d.path().join("Release").to_str().unwrap(),
    ]);

    let file = |pkg: &str| {
        format!(
            "[image]\nbase = \"scratch\"\n\n[debian]\nsuite = \"bookworm\"\nmirror = \"file://{}\"\nkeyring = \"{}\"\npackages = [\"{pkg}\"]\n",
            repo.display(),
            keyring.display()
        )
    };
    let (_t, k) = store(Who::Caller);
    let ok = variant(&file("good"), None);
    build_id(&k, &toml(ok.path()), "good:1");
    let rootfs = d.path().join("rootfs");
    k.rootfs("good:1", &rootfs);
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/good")).unwrap(),
        "good\n"
    );

    let (_t2, k2) = store(Who::Caller);
    let bad = variant(&file("evil"), None);
    let err = fails(&k2, &["build", "-f", &toml(bad.path()), "-t", "evil:1"]);
    assert!(
        err.contains("package evil 1: refused member \"./../../../etc/evil\"")
            && err.contains("`..`"),
        "{err}"
    );
    assert!(!k2.ok(&["images"]).contains("evil"), "nothing tagged");
    let blobs = k2.root.join("blobs/sha256");
    let stored = fs::read_dir(&blobs).map_or(0, |d| d.count());
    assert_eq!(stored, 0, "no layer of the refused package is in the store");
}
