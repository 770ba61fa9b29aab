//! `kiln.toml` refusals (issue 17): an InRelease with a broken signature
//! or signed by an unknown key, an index or .deb whose hash does not match,
//! an unknown package name, a stale lock, and a .deb whose data tar climbs
//! out with `../` (from a repository of our own, signed by a key made
//! here). Nothing refused is tagged or stored.

#[macro_use]
mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::assert_success;
use common::build::*;
use common::declarative::*;

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
