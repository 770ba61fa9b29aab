//! An adversarial tar corpus: each archive is extracted into a target inside
//! a temp dir surrounded by canaries (siblings of the target, files in the
//! temp dir above it, an absolute `/tmp/kiln-canary-<random>` dir, and
//! /etc/passwd). After each case nothing outside the target may be created
//! or changed (contents, mode, mtime, no new files), and every rejection
//! names the offending entry.

#[path = "layer_util.rs"]
mod util;

use std::collections::BTreeMap;
use std::fs;
use std::io::Cursor;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kiln_image::layer::{ExtractOptions, extract};
use util::RawTar;

struct Ctx {
    /// `/tmp/kiln-canary-<random>`: an absolute canary directory.
    abs: String,
    /// A random token used in names that must never appear outside.
    token: String,
}

enum Expect {
    Ok,
    /// Must fail; the message must contain this entry name.
    Err(&'static str),
    /// Either outcome is fine as long as nothing escapes.
    Any,
}

type Check = fn(&Path);

struct Case {
    name: &'static str,
    tar: fn(&Ctx) -> Vec<u8>,
    expect: Expect,
    opts: fn() -> ExtractOptions,
    check: Option<Check>,
}

fn default_opts() -> ExtractOptions {
    ExtractOptions::default()
}

fn skip_devices() -> ExtractOptions {
    ExtractOptions {
        skip_devices: true,
        ..Default::default()
    }
}

fn case(name: &'static str, tar: fn(&Ctx) -> Vec<u8>, expect: Expect) -> Case {
    Case {
        name,
        tar,
        expect,
        opts: default_opts,
        check: None,
    }
}

fn corpus() -> Vec<Case> {
    let mut v = vec![
        case(
            "dotdot file",
            |_| {
                RawTar::default()
                    .file("../canary-sibling.txt", b"pwned")
                    .end()
            },
            Expect::Err("../canary-sibling.txt"),
        ),
        case(
            "dotdot deep",
            |_| {
                RawTar::default()
                    .file("../../canary-top.txt", b"pwned")
                    .end()
            },
            Expect::Err("../../canary-top.txt"),
        ),
        case(
            "dotdot in the middle",
            |_| RawTar::default().file("a/../../x", b"pwned").end(),
            Expect::Err("a/../../x"),
        ),
        case(
            "dotdot dir",
            |_| RawTar::default().dir("../").end(),
            Expect::Err("../"),
        ),
        case(
            "absolute name is rooted",
            |_| RawTar::default().file("/abs/file", b"ok").end(),
            Expect::Ok,
        ),
        case(
            "absolute canary name is rooted",
            |c| {
                RawTar::default()
                    .file(&format!("{}/victim", c.abs), b"pwned")
                    .end()
            },
            Expect::Ok,
        ),
        case(
            "symlink to abs canary then write through it",
            |c| {
                RawTar::default()
                    .symlink("link", &c.abs)
                    .file("link/victim", b"pwned")
                    .end()
            },
            Expect::Any,
        ),
        case(
            "symlink to relative outside then write through it",
            |_| {
                RawTar::default()
                    .symlink("link", "../canary-dir")
                    .file("link/x", b"pwned")
                    .end()
            },
            Expect::Any,
        ),
        case(
            "symlink replaces a parent dir",
            |_| {
                RawTar::default()
                    .dir("a/")
                    .symlink("a", "../../")
                    .file("a/x", b"inside")
                    .end()
            },
            Expect::Ok,
        ),
        case(
            "hardlink to relative outside",
            |_| {
                RawTar::default()
                    .hardlink("hl", "../../canary-top.txt")
                    .end()
            },
            Expect::Err("hl"),
        ),
        case(
            "hardlink to /etc/passwd",
            |_| RawTar::default().hardlink("hl", "/etc/passwd").end(),
            Expect::Err("hl"),
        ),
        case(
            "hardlink to abs canary",
            |c| {
                RawTar::default()
                    .hardlink("hl", &format!("{}/victim", c.abs))
                    .end()
            },
            Expect::Err("hl"),
        ),
        case(
            "hardlink to a symlink to outside, then overwrite it",
            |c| {
                RawTar::default()
                    .symlink("s", &format!("{}/victim", c.abs))
                    .hardlink("h", "s")
                    .file("h", b"pwned")
                    .file("s", b"pwned too")
                    .end()
            },
            Expect::Ok,
        ),
        case(
            "hardlink to a symlink to outside, then write below it",
            |c| {
                RawTar::default()
                    .symlink("s", &c.abs)
                    .hardlink("h", "s")
                    .file("h/victim", b"pwned")
                    .end()
            },
            Expect::Any,
        ),
        case(
            "hardlink to a directory",
            |_| RawTar::default().dir("d/").hardlink("h", "d").end(),
            Expect::Err("h"),
        ),
        case(
            "whiteout escaping with dotdot",
            |_| {
                RawTar::default()
                    .file("../.wh.canary-sibling.txt", b"")
                    .end()
            },
            Expect::Err("../.wh.canary-sibling.txt"),
        ),
        case(
            "whiteout of dotdot",
            |_| RawTar::default().file(".wh...", b"").end(),
            Expect::Err(".wh..."),
        ),
        case(
            "whiteout of dot",
            |_| RawTar::default().file("a/.wh..", b"").end(),
            Expect::Err("a/.wh.."),
        ),
        case(
            "whiteout name with dotdot after it",
            |_| RawTar::default().file("a/.wh.../../x", b"inside").end(),
            Expect::Ok,
        ),
        case(
            "whiteout through a symlink to the canary",
            |c| {
                RawTar::default()
                    .symlink("d", &c.abs)
                    .file("d/.wh.victim", b"")
                    .end()
            },
            Expect::Ok,
        ),
        case(
            "whiteout through a relative escaping symlink",
            |_| {
                RawTar::default()
                    .symlink("d", "../..")
                    .file("d/.wh.canary-top.txt", b"")
                    .end()
            },
            Expect::Ok,
        ),
        case(
            "opaque marker in a symlinked dir",
            |c| {
                RawTar::default()
                    .symlink("up", "../../")
                    .file("up/.wh..wh..opq", b"")
                    .symlink("abs", &c.abs)
                    .file("abs/.wh..wh..opq", b"")
                    .end()
            },
            Expect::Ok,
        ),
        case(
            "duplicate entries, last wins",
            |_| {
                RawTar::default()
                    .file("dup", b"one")
                    .file("dup", b"two")
                    .end()
            },
            Expect::Ok,
        ),
        case(
            "directory replaced by a file",
            |_| {
                RawTar::default()
                    .dir("d/")
                    .file("d/inner", b"x")
                    .file("d", b"now a file")
                    .end()
            },
            Expect::Ok,
        ),
        case(
            "file replaced by a directory",
            |_| {
                RawTar::default()
                    .file("f", b"x")
                    .dir("f/")
                    .file("f/x", b"y")
                    .end()
            },
            Expect::Ok,
        ),
        case(
            "huge PAX size",
            |_| {
                RawTar::default()
                    .pax(&[("size", b"999999999999999")])
                    .file("huge", b"tiny")
                    .end()
            },
            Expect::Err("huge"),
        ),
        case(
            "PAX size larger than the archive",
            |_| {
                RawTar::default()
                    .pax(&[("size", b"1048576")])
                    .file("short", b"tiny")
                    .end()
            },
            Expect::Err("short"),
        ),
        case(
            "PAX path with NUL",
            |_| {
                RawTar::default()
                    .pax(&[("path", b"nul\0name")])
                    .file("placeholder", b"x")
                    .end()
            },
            Expect::Err("nul"),
        ),
        case(
            "PAX path with dotdot",
            |_| {
                RawTar::default()
                    .pax(&[("path", b"../../pax-escape")])
                    .file("placeholder", b"x")
                    .end()
            },
            Expect::Err("../../pax-escape"),
        ),
        case(
            "PAX linkpath escaping for a hardlink",
            |_| {
                RawTar::default()
                    .pax(&[("linkpath", b"../../canary-top.txt")])
                    .hardlink("plink", "x")
                    .end()
            },
            Expect::Err("plink"),
        ),
        case(
            "GNU long name with dotdot",
            |_| {
                RawTar::default()
                    .gnu_long_name(b"../../gnu-escape")
                    .file("placeholder", b"x")
                    .end()
            },
            Expect::Err("../../gnu-escape"),
        ),
        case(
            "truncated: header only",
            |_| {
                let mut t = RawTar::default().file("ok", b"fine").0;
                t.extend_from_slice(&util::raw_header(b"cut", b'0', 100, b""));
                t
            },
            Expect::Err("cut"),
        ),
        case(
            "truncated: half a header block",
            |_| {
                let mut t = RawTar::default().file("before-cut", b"fine").0;
                t.extend_from_slice(&util::raw_header(b"half", b'0', 0, b"")[..256]);
                t
            },
            Expect::Err("before-cut"),
        ),
        case(
            "truncated: data cut short",
            |_| {
                let mut t = util::raw_header(b"cutdata", b'0', 2000, b"").to_vec();
                t.extend_from_slice(&[7u8; 1000]);
                t
            },
            Expect::Err("cutdata"),
        ),
        case(
            "symlink loop",
            |_| {
                RawTar::default()
                    .symlink("a", "b")
                    .symlink("b", "a")
                    .file("a/x", b"x")
                    .end()
            },
            Expect::Err("a/x"),
        ),
        case(
            "absolute symlink then a file under it",
            |_| {
                RawTar::default()
                    .symlink("abs", "/tmp")
                    .file("abs/kiln-escape", b"x")
                    .end()
            },
            Expect::Any,
        ),
        case(
            "symlink chain climbing",
            |_| {
                RawTar::default()
                    .symlink("a", "../")
                    .symlink("b", "a/../..")
                    .file("b/x", b"inside")
                    .end()
            },
            Expect::Ok,
        ),
        case(
            "self symlink as a parent",
            |_| {
                RawTar::default()
                    .symlink("x", ".")
                    .file("x/x/x/file", b"inside")
                    .end()
            },
            Expect::Ok,
        ),
        case(
            "file under a regular file",
            |_| RawTar::default().file("f", b"x").file("f/g", b"y").end(),
            Expect::Err("f/g"),
        ),
        case(
            "hardlink through a symlinked parent",
            |_| {
                RawTar::default()
                    .symlink("s", "/etc")
                    .hardlink("h", "s/passwd")
                    .end()
            },
            Expect::Err("h"),
        ),
        case(
            "directory entry over a symlink to outside",
            |c| {
                RawTar::default()
                    .symlink("d", &c.abs)
                    .dir("d/")
                    .file("d/victim", b"inside")
                    .end()
            },
            Expect::Ok,
        ),
        case(
            "whiteout of a lower symlink to outside",
            |_| RawTar::default().file(".wh.lower-link", b"").end(),
            Expect::Ok,
        ),
        case(
            "whiteout below a lower symlink to outside",
            |_| RawTar::default().file("lower-link/.wh.victim", b"").end(),
            Expect::Ok,
        ),
        case(
            "opaque marker below a lower symlink to outside",
            |_| RawTar::default().file("lower-link/.wh..wh..opq", b"").end(),
            Expect::Ok,
        ),
        case(
            "file below a lower symlink to outside",
            |_| RawTar::default().file("lower-link/victim", b"pwned").end(),
            Expect::Any,
        ),
        case(
            "file over a lower symlink to outside",
            |_| RawTar::default().file("lower-link", b"replaced").end(),
            Expect::Ok,
        ),
        case(
            "hardlink to a lower symlink to outside, then write through it",
            |_| {
                RawTar::default()
                    .hardlink("h", "lower-link")
                    .file("h/victim", b"pwned")
                    .end()
            },
            Expect::Any,
        ),
        Case {
            name: "old-style directory: regular entry with a trailing slash",
            tar: |_| {
                RawTar::default()
                    .entry(b"olddir/", 0, b"", b"")
                    .file("olddir/f", b"x")
                    .end()
            },
            expect: Expect::Ok,
            opts: default_opts,
            check: Some(|t| assert!(t.join("olddir").is_dir() && t.join("olddir/f").is_file())),
        },
        case(
            "root entries are ignored",
            |_| RawTar::default().dir("./").dir("/").end(),
            Expect::Ok,
        ),
        Case {
            name: "device nodes when unprivileged",
            tar: |_| {
                RawTar::default()
                    .device("dev/null", b'3', 1, 3)
                    .device("dev/sda", b'4', 8, 0)
                    .entry(b"dev/fifo", b'6', b"", b"")
                    .end()
            },
            expect: Expect::Ok,
            opts: skip_devices,
            check: Some(|t| {
                assert!(!t.join("dev/null").exists());
                assert!(fs::symlink_metadata(t.join("dev/fifo")).is_ok());
            }),
        },
    ];
    // Checks on what benign cases produced inside the target.
    for c in &mut v {
        c.check = c.check.or(match c.name {
            "duplicate entries, last wins" => Some(|t: &Path| {
                assert_eq!(fs::read(t.join("dup")).unwrap(), b"two");
            }),
            "directory replaced by a file" => Some(|t: &Path| {
                assert_eq!(fs::read(t.join("d")).unwrap(), b"now a file");
            }),
            "file replaced by a directory" => Some(|t: &Path| {
                assert_eq!(fs::read(t.join("f/x")).unwrap(), b"y");
            }),
            "symlink replaces a parent dir" => Some(|t: &Path| {
                assert_eq!(fs::read(t.join("x")).unwrap(), b"inside");
            }),
            "absolute name is rooted" => Some(|t: &Path| {
                assert_eq!(fs::read(t.join("abs/file")).unwrap(), b"ok");
            }),
            "hardlink to a symlink to outside, then overwrite it" => Some(|t: &Path| {
                assert_eq!(fs::read(t.join("h")).unwrap(), b"pwned");
                assert_eq!(fs::read(t.join("s")).unwrap(), b"pwned too");
            }),
            "whiteout of a lower symlink to outside" => Some(|t: &Path| {
                assert!(fs::symlink_metadata(t.join("lower-link")).is_err());
            }),
            "file over a lower symlink to outside" => Some(|t: &Path| {
                assert_eq!(fs::read(t.join("lower-link")).unwrap(), b"replaced");
            }),
            "directory entry over a symlink to outside" => Some(|t: &Path| {
                assert_eq!(fs::read(t.join("d/victim")).unwrap(), b"inside");
            }),
            _ => None,
        });
    }
    v
}

/// Everything outside the target that a case could touch.
fn outside_state(base: &Path, target: &Path, abs: &Path) -> BTreeMap<PathBuf, String> {
    let mut m = BTreeMap::new();
    let mut add = |p: &Path| {
        let md = fs::symlink_metadata(p).unwrap();
        let content = if md.is_file() {
            fs::read(p).unwrap()
        } else {
            Vec::new()
        };
        m.insert(
            p.to_path_buf(),
            format!(
                "{:o} {} {} {}.{} {:?}",
                md.mode(),
                md.len(),
                md.nlink(),
                md.mtime(),
                md.mtime_nsec(),
                content
            ),
        );
    };
    for root in [base, abs] {
        for e in walkdir::WalkDir::new(root).follow_links(false) {
            let e = e.unwrap();
            if e.path().starts_with(target) {
                continue;
            }
            add(e.path());
        }
    }
    add(Path::new("/etc/passwd"));
    m
}

fn random_token() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", std::process::id(), t)
}

#[test]
fn adversarial_corpus_never_escapes() {
    let token = random_token();
    let abs = PathBuf::from(format!("/tmp/kiln-canary-{token}"));
    fs::create_dir_all(&abs).unwrap();
    fs::write(abs.join("victim"), "canary").unwrap();
    let ctx = Ctx {
        abs: abs.display().to_string(),
        token: token.clone(),
    };
    let cases = corpus();
    assert!(cases.len() >= 25, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        // base/               <- canary-top.txt
        //   outer/            <- canary-sibling.txt, canary-dir/
        //     target/         <- extraction target
        let base = tempfile::tempdir().unwrap();
        let outer = base.path().join("outer");
        let target = outer.join("target");
        fs::create_dir_all(outer.join("canary-dir")).unwrap();
        fs::create_dir(&target).unwrap();
        fs::write(base.path().join("canary-top.txt"), "canary").unwrap();
        fs::write(outer.join("canary-sibling.txt"), "canary").unwrap();
        fs::write(outer.join("canary-dir/x"), "canary").unwrap();
        // Some lower-layer content, so whiteouts and opaque markers have
        // something to delete.
        fs::write(target.join("lower.txt"), "lower").unwrap();
        std::os::unix::fs::symlink(&abs, target.join("lower-link")).unwrap();
        let before = outside_state(base.path(), &target, &abs);
        let tar = (c.tar)(&ctx);
        let res = extract(Cursor::new(tar), &target, &(c.opts)());
        let after = outside_state(base.path(), &target, &abs);
        match &res {
            Ok(r) => eprintln!("case {i:2} {:?}: ok, {} warnings", c.name, r.warnings.len()),
            Err(e) => eprintln!("case {i:2} {:?}: {e}", c.name),
        }
        if before != after {
            failures.push(format!(
                "case {i} {:?}: OUTSIDE CHANGED\n{before:#?}\n{after:#?}",
                c.name
            ));
        }
        match (&c.expect, &res) {
            (Expect::Ok, Err(e)) => {
                failures.push(format!("case {i} {:?}: unexpected error {e}", c.name))
            }
            (Expect::Err(_), Ok(_)) => {
                failures.push(format!("case {i} {:?}: expected an error", c.name))
            }
            (Expect::Err(name), Err(e)) if !e.to_string().contains(name) => failures.push(format!(
                "case {i} {:?}: error does not name {name:?}: {e}",
                c.name
            )),
            _ => {}
        }
        if res.is_ok()
            && let Some(check) = c.check
        {
            check(&target);
        }
    }
    let leaked: Vec<_> = fs::read_dir("/tmp")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.contains("escape") || (n.contains(&ctx.token) && !n.starts_with("kiln-canary-"))
        })
        .collect();
    assert!(leaked.is_empty(), "files appeared in /tmp: {leaked:?}");
    assert_eq!(fs::read_to_string(abs.join("victim")).unwrap(), "canary");
    assert_eq!(
        fs::read_dir(&abs).unwrap().count(),
        1,
        "abs canary dir gained files"
    );
    fs::remove_dir_all(&abs).unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Runs the child below as `nobody` (when we are root and `setpriv` exists):
/// a real unprivileged extraction of device nodes must skip them with a
/// warning, not fail.
#[test]
fn unprivileged_extraction_skips_devices() {
    if !util::is_root() || !util::have("setpriv") {
        util::missing_prerequisite("this test needs root and setpriv");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t");
    fs::create_dir(&target).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o777)).unwrap();
    // A copy of this test binary that `nobody` can execute even when the
    // build directory is private (e.g. under /root).
    let exe = dir.path().join("child-test");
    fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args([
            "--exact",
            "child_unprivileged_extract",
            "--include-ignored",
            "--nocapture",
        ])
        .env("KILN_UNPRIV_TARGET", &target)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
    assert!(target.join("f").exists());
    assert!(!target.join("null").exists());
}

#[test]
#[ignore = "run by unprivileged_extraction_skips_devices as nobody"]
fn child_unprivileged_extract() {
    let Some(target) = std::env::var_os("KILN_UNPRIV_TARGET") else {
        return;
    };
    assert!(!util::is_root());
    let tar = RawTar::default()
        .device("null", b'3', 1, 3)
        .entry(b"fifo", b'6', b"", b"")
        .file("f", b"data")
        .end();
    let rep = extract(
        Cursor::new(tar),
        Path::new(&target),
        &ExtractOptions::default(),
    )
    .unwrap();
    assert_eq!(rep.warnings.len(), 1, "{:?}", rep.warnings);
    assert_eq!(rep.warnings[0].entry, "null");
}

mod mutations {
    use super::*;
    use proptest::prelude::*;

    /// A small valid layer with every entry kind, as raw bytes.
    fn seed_tar() -> Vec<u8> {
        RawTar::default()
            .dir("d/")
            .file("d/f", b"0123456789")
            .symlink("d/s", "../d/f")
            .hardlink("d/h", "d/f")
            .pax(&[
                ("path", b"d/long-name-from-pax"),
                ("SCHILY.xattr.user.k", b"v"),
            ])
            .file("x", b"pax file")
            .gnu_long_name(b"d/gnu-long")
            .file("y", b"gnu file")
            .file("d/.wh.gone", b"")
            .file("d/.wh..wh..opq", b"")
            .end()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Corrupted archives (bytes overwritten, or cut) never panic and
        /// never touch anything outside the target.
        #[test]
        fn corrupted_archives_stay_inside(
            edits in proptest::collection::vec((0usize..4096, any::<u8>()), 1..12),
            cut in proptest::option::of(0usize..4096),
        ) {
            let mut tar = seed_tar();
            for (pos, b) in edits {
                let n = tar.len();
                tar[pos % n] = b;
            }
            if let Some(c) = cut {
                tar.truncate(c.min(tar.len()));
            }
            let base = tempfile::tempdir().unwrap();
            let target = base.path().join("t");
            fs::create_dir(&target).unwrap();
            fs::write(base.path().join("canary"), "canary").unwrap();
            let _ = extract(Cursor::new(tar), &target, &ExtractOptions::default());
            let names: Vec<_> = fs::read_dir(base.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            prop_assert_eq!(names.len(), 2, "{:?}", names);
            prop_assert_eq!(fs::read_to_string(base.path().join("canary")).unwrap(), "canary");
        }
    }
}
