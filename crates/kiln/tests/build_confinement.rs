//! Sources stay inside their root: a RUN's bind mount (from the context or
//! a stage) and a COPY (from the context or `--from` a stage) whose source
//! is, or passes through, a symlink out of its root (relative, absolute,
//! swapped in between two steps of the stage) reads the root's own path,
//! never the host's; and `.dockerignore` holds for bind mounts of the
//! context as for COPY. As root and as the unprivileged `kilntest`.
//!
//! Each variant plants a host canary (a file outside the context holding a
//! random marker) and checks that the marker is in neither the build log
//! (errors included) nor any byte of the store (layers decompressed):
//! the build is refused with a clear error, or succeeds without it. A
//! control file copied on purpose proves the scan finds what is there.

mod common;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use common::build::*;
use common::canary::marker;

/// What a variant must end in.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    /// The build fails and its log says this.
    Refused(&'static str),
    /// The build succeeds; `/out` of the image contains none of these
    /// words and all of `then` (when given).
    Builds {
        without: &'static [&'static str],
        with: &'static [&'static str],
    },
}

struct Variant {
    name: &'static str,
    /// After `FROM kiln-test/busybox:1`, with `HOST` replaced by the
    /// canary directory's path.
    body: &'static str,
    outcome: Outcome,
}

const NO_SHADOW: Outcome = Outcome::Builds {
    without: &[],
    with: &[],
};

/// The stage every `from=s` variant reads: symlinks to the host's canary
/// directory, absolute, through `/`, one swapped in for a directory by a
/// later step, and a directory to seed a cache mount with.
const STAGE: &str = "FROM kiln-test/busybox:1 AS s
RUN ln -s HOST /evil && ln -s / /rootlink && ln -s HOST/shadow /evilfile
RUN mkdir /d && echo ok > /d/f
RUN rm -rf /d && ln -s HOST /d
RUN mkdir /seed && echo seeded > /seed/f && ln -s HOST /seed/link
";

const VARIANTS: &[Variant] = &[
    // ---- bind mounts of the context
    Variant {
        name: "ctx-bind-abs-dir",
        body: "RUN --mount=type=bind,source=abs,target=/m cat /m/shadow",
        outcome: Outcome::Refused("symlink that points outside it"),
    },
    Variant {
        name: "ctx-bind-abs-dir-rw",
        body: "RUN --mount=type=bind,source=abs,target=/m,rw cat /m/shadow",
        outcome: Outcome::Refused("symlink that points outside it"),
    },
    Variant {
        name: "ctx-bind-relative-climb",
        body: "RUN --mount=type=bind,source=up,target=/m cat /m/shadow",
        outcome: Outcome::Refused("symlink that points outside it"),
    },
    Variant {
        name: "ctx-bind-middle",
        body: "RUN --mount=type=bind,source=abs/shadow,target=/m cat /m",
        outcome: Outcome::Refused("symlink that points outside it"),
    },
    Variant {
        name: "ctx-bind-file-link",
        body: "RUN --mount=type=bind,source=shadowlink,target=/m cat /m",
        outcome: Outcome::Refused("symlink that points outside it"),
    },
    Variant {
        // The symlink is mounted as a symlink: it points into the
        // container's own root, where HOST does not exist.
        name: "ctx-bind-whole-follow-inside",
        body: "RUN --mount=type=bind,target=/m (cat /m/abs/shadow /m/shadowlink; \
               ls /m/abs/) > /out 2>&1 || true",
        outcome: NO_SHADOW,
    },
    // ---- .dockerignore and bind mounts of the context
    Variant {
        name: "ctx-bind-ignored",
        body: "RUN --mount=type=bind,target=/m (ls -a /m /m/private; \
               cat /m/ignored.txt /m/private/secret.txt 2>/dev/null) > /out || true",
        outcome: Outcome::Builds {
            without: &["ignored.txt", "secret.txt"],
            with: &["visible.txt", "keep.txt", ".dockerignore"],
        },
    },
    Variant {
        name: "ctx-bind-ignored-subdir-rw",
        body: "RUN --mount=type=bind,source=private,target=/m,rw \
               (ls -a /m; cat /m/secret.txt 2>/dev/null) > /out || true",
        outcome: Outcome::Builds {
            without: &["secret.txt"],
            with: &["keep.txt"],
        },
    },
    Variant {
        name: "ctx-bind-ignored-file",
        body: "RUN --mount=type=bind,source=ignored.txt,target=/m cat /m",
        outcome: Outcome::Refused("\"ignored.txt\" is not in the build context"),
    },
    Variant {
        name: "ctx-bind-link-to-ignored",
        body: "RUN --mount=type=bind,source=toignored,target=/m cat /m",
        outcome: Outcome::Refused("\"toignored\" is not in the build context"),
    },
    // ---- COPY from the context
    Variant {
        name: "ctx-copy-middle",
        body: "COPY abs/shadow /out",
        outcome: Outcome::Refused("symlink that points outside the build context"),
    },
    Variant {
        name: "ctx-copy-file-link",
        body: "COPY shadowlink /out",
        outcome: Outcome::Refused("symlink that points outside the build context"),
    },
    Variant {
        name: "ctx-copy-glob-middle",
        body: "COPY ab*/shadow /out",
        outcome: Outcome::Refused("no such file or directory"),
    },
    Variant {
        name: "ctx-copy-relative-climb",
        body: "COPY up/shadow /out",
        outcome: Outcome::Refused("symlink that points outside the build context"),
    },
    // ---- COPY from a named context (the context again, as `nc`)
    Variant {
        name: "named-copy-middle",
        body: "COPY --from=nc abs/shadow /out",
        outcome: Outcome::Refused("no such file or directory"),
    },
    Variant {
        name: "named-copy-relative-climb",
        body: "COPY --from=nc up/shadow /out",
        outcome: Outcome::Refused("no such file or directory"),
    },
    // ---- bind mounts of a stage
    Variant {
        name: "stage-bind-abs-dir",
        body: "RUN --mount=type=bind,from=s,source=/evil,target=/m cat /m/shadow",
        outcome: Outcome::Refused("\"/evil\" is not in stage \"s\""),
    },
    Variant {
        name: "stage-bind-abs-dir-rw",
        body: "RUN --mount=type=bind,from=s,source=/evil,target=/m,rw cat /m/shadow",
        outcome: Outcome::Refused("\"/evil\" is not in stage \"s\""),
    },
    Variant {
        name: "stage-bind-middle",
        body: "RUN --mount=type=bind,from=s,source=/rootlink/HOST,target=/m cat /m/shadow",
        outcome: Outcome::Refused("is not in stage \"s\""),
    },
    Variant {
        name: "stage-bind-swapped",
        body: "RUN --mount=type=bind,from=s,source=/d,target=/m cat /m/shadow",
        outcome: Outcome::Refused("\"/d\" is not in stage \"s\""),
    },
    Variant {
        name: "stage-bind-file-link",
        body: "RUN --mount=type=bind,from=s,source=/evilfile,target=/m cat /m",
        outcome: Outcome::Refused("\"/evilfile\" is not in stage \"s\""),
    },
    // ---- cache mounts from a stage
    Variant {
        name: "stage-cache-abs-dir",
        body: "RUN --mount=type=cache,from=s,source=/evil,target=/c cat /c/shadow",
        outcome: Outcome::Refused("\"/evil\" is not in stage \"s\""),
    },
    Variant {
        name: "stage-cache-swapped",
        body: "RUN --mount=type=cache,from=s,source=/d,target=/c cat /c/shadow",
        outcome: Outcome::Refused("\"/d\" is not in stage \"s\""),
    },
    Variant {
        // Seeded with a copy of the stage's directory; its symlink is
        // copied as a symlink, which points into the container's root.
        name: "stage-cache-seeded",
        body: "RUN --mount=type=cache,from=s,source=/seed,target=/c \
               (cat /c/f; ls /c; cat /c/link/shadow 2>/dev/null) > /out || true",
        outcome: Outcome::Builds {
            without: &[],
            with: &["seeded", "link"],
        },
    },
    // ---- COPY --from a stage
    Variant {
        name: "stage-copy-middle",
        body: "COPY --from=s /evil/shadow /out",
        outcome: Outcome::Refused("no such file or directory"),
    },
    Variant {
        name: "stage-copy-through-root",
        body: "COPY --from=s /rootlink/HOST/shadow /out",
        outcome: Outcome::Refused("no such file or directory"),
    },
    Variant {
        name: "stage-copy-swapped",
        body: "COPY --from=s /d/shadow /out",
        outcome: Outcome::Refused("no such file or directory"),
    },
    Variant {
        name: "stage-copy-glob-middle",
        body: "COPY --from=s /ev*/shadow /out",
        outcome: Outcome::Refused("no such file or directory"),
    },
    Variant {
        // A symlink named as the source is copied as a symlink.
        name: "stage-copy-link-itself",
        body: "COPY --from=s /evilfile /d /out/",
        outcome: NO_SHADOW,
    },
];

/// The host canary, and a context with every kind of way out of it.
fn plant(dir: &Path, secret: &str, control: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let host = dir.join("host");
    fs::create_dir_all(&host).unwrap();
    // Readable by kilntest too: otherwise its builds could not leak it and
    // the test would prove nothing for it.
    fs::write(host.join("shadow"), format!("root:{secret}:19000::::::\n")).unwrap();
    fs::set_permissions(host.join("shadow"), fs::Permissions::from_mode(0o644)).unwrap();
    let ctx = dir.join("ctx");
    fs::create_dir_all(ctx.join("private")).unwrap();
    fs::write(ctx.join("visible.txt"), control).unwrap();
    fs::write(ctx.join("ignored.txt"), secret).unwrap();
    fs::write(ctx.join("private/secret.txt"), secret).unwrap();
    fs::write(ctx.join("private/keep.txt"), "keep").unwrap();
    fs::write(
        ctx.join(".dockerignore"),
        "ignored.txt\nprivate\n!private/keep.txt\n",
    )
    .unwrap();
    symlink(&host, ctx.join("abs")).unwrap();
    symlink("../host", ctx.join("up")).unwrap();
    symlink(host.join("shadow"), ctx.join("shadowlink")).unwrap();
    symlink("ignored.txt", ctx.join("toignored")).unwrap();
    (host, ctx)
}

fn run_variants(who: Who) {
    if !kiln_build_available() {
        return;
    }
    let tmp = scratch("kiln-bt-confine-");
    let k = KilnBuild::new(&tmp.path().join("store"), who);
    import_bases(&k, false);
    let secret = marker("confine-secret");
    let control = marker("confine-control");
    let (host, ctx) = plant(tmp.path(), &secret, &control);
    let files = tmp.path().join("dockerfiles");
    fs::create_dir_all(&files).unwrap();
    if who == Who::Kilntest {
        give_to_kilntest(&ctx);
        give_to_kilntest(&files);
    }
    let host_s = host.to_str().unwrap();

    // The control: a context file copied on purpose is found by the scan.
    let df = files.join("control.Dockerfile");
    fs::write(&df, "FROM kiln-test/busybox:1\nCOPY visible.txt /control\n").unwrap();
    let (out, _, log) = kiln_build(
        &k,
        &ctx,
        &["-f", df.to_str().unwrap(), "-t", "confine/control"],
    );
    assert!(out.status.success(), "control build failed:\n{log}");
    assert!(
        all_bytes(&k.root)
            .iter()
            .any(|(_, b)| find_bytes(b, control.as_bytes())),
        "the store scan does not find a file that was copied on purpose"
    );

    let jobs = jobs().min(2);
    let problems: Vec<String> = par_map(VARIANTS, jobs, |v| {
        let df = files.join(format!("{}.Dockerfile", v.name));
        let text = format!(
            "{}FROM kiln-test/busybox:1\n{}\n",
            STAGE.replace("HOST", host_s),
            v.body.replace("HOST", host_s)
        );
        fs::write(&df, text).unwrap();
        let tag = format!("confine/{}", v.name);
        let named = format!("nc={}", ctx.display());
        let flags = [
            "-f",
            df.to_str().unwrap(),
            "-t",
            &tag,
            "--build-context",
            &named,
        ];
        let (out, _, log) = kiln_build(&k, &ctx, &flags);
        let mut p = Vec::new();
        if log.contains(&secret) {
            p.push(format!(
                "{}: the marker is in the build log:\n{log}",
                v.name
            ));
        }
        match v.outcome {
            Outcome::Refused(says) => {
                if out.status.success() {
                    p.push(format!("{}: built, wanted refused:\n{log}", v.name));
                } else if !log.contains(says) {
                    p.push(format!(
                        "{}: refused without saying {says:?}:\n{log}",
                        v.name
                    ));
                }
            }
            Outcome::Builds { without, with } => {
                if !out.status.success() {
                    p.push(format!("{}: failed:\n{log}", v.name));
                } else {
                    let dir = tmp.path().join(format!("rootfs-{}", v.name));
                    k.rootfs(&tag, &dir);
                    let shown = fs::read_to_string(dir.join("out")).unwrap_or_default();
                    for w in without {
                        if shown.contains(w) {
                            p.push(format!("{}: /out shows {w:?}:\n{shown}", v.name));
                        }
                    }
                    for w in with {
                        if !shown.contains(w) {
                            p.push(format!("{}: /out lacks {w:?}:\n{shown}", v.name));
                        }
                    }
                }
            }
        }
        p
    })
    .into_iter()
    .flatten()
    .collect();
    for (p, bytes) in all_bytes(&k.root) {
        if find_bytes(&bytes, secret.as_bytes()) {
            panic_with(&problems, &format!("the marker is in {}", p.display()));
        }
    }
    if !problems.is_empty() {
        panic_with(&problems, "");
    }
}

fn panic_with(problems: &[String], more: &str) -> ! {
    panic!("{}\n{more}", problems.join("\n\n"));
}

#[test]
fn sources_stay_in_their_root_as_root() {
    run_variants(Who::Caller);
}

#[test]
fn sources_stay_in_their_root_as_kilntest() {
    if !common::is_root() {
        missing_prerequisite("build_confinement as kilntest: needs root to act as kilntest");
        return;
    }
    run_variants(Who::Kilntest);
}

/// What a bind of the context keys on is what it shows: changing an
/// ignored file re-runs nothing, changing a shown one (content, mode, a
/// symlink's target) re-runs the RUN; and the build leaves the context's
/// files as they were (no link, no change of ctime).
#[test]
fn a_context_bind_is_keyed_by_what_it_shows() {
    if !kiln_build_available() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let tmp = scratch("kiln-bt-confine-key-");
    let k = KilnBuild::new(&tmp.path().join("store"), Who::Caller);
    import_bases(&k, false);
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(ctx.join("src")).unwrap();
    fs::write(ctx.join("src/main.c"), "int main;").unwrap();
    fs::write(ctx.join("src/util.c"), "int util;").unwrap();
    fs::write(ctx.join("src/notes.log"), "one").unwrap();
    symlink("main.c", ctx.join("src/link")).unwrap();
    fs::write(ctx.join(".dockerignore"), "**/*.log\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM kiln-test/busybox:1\n\
         RUN --mount=type=bind,source=src,target=/src ls -l /src > /listing\n",
    )
    .unwrap();
    let ran = |what: &str| -> bool {
        let (out, _, log) = kiln_build(&k, &ctx, &["-t", "confine/key"]);
        assert!(out.status.success(), "{what}:\n{log}");
        let steps = exec_steps(&log);
        let run = steps
            .iter()
            .find(|s| s.title.contains("RUN"))
            .unwrap_or_else(|| panic!("no RUN step:\n{log}"));
        !run.cached
    };
    assert!(ran("cold"));
    let stamp = |m: fs::Metadata| (m.ctime(), m.ctime_nsec(), m.nlink());
    let util = stamp(fs::symlink_metadata(ctx.join("src/util.c")).unwrap());
    assert!(!ran("no change"));
    fs::write(ctx.join("src/notes.log"), "two").unwrap();
    assert!(!ran("an ignored file changed"));
    fs::set_permissions(ctx.join("src/main.c"), fs::Permissions::from_mode(0o755)).unwrap();
    assert!(ran("a mode changed"));
    fs::remove_file(ctx.join("src/link")).unwrap();
    symlink("other", ctx.join("src/link")).unwrap();
    assert!(ran("a symlink's target changed"));
    fs::write(ctx.join("src/main.c"), "int main(void);").unwrap();
    assert!(ran("a shown file changed"));
    let dir = tmp.path().join("rootfs");
    k.rootfs("confine/key", &dir);
    let listing = fs::read_to_string(dir.join("listing")).unwrap();
    assert!(listing.contains("main.c"), "{listing}");
    assert!(!listing.contains("notes.log"), "{listing}");
    // Four builds made a filtered copy of it, two more bound it: untouched.
    let after = stamp(fs::symlink_metadata(ctx.join("src/util.c")).unwrap());
    assert_eq!(util, after, "the build changed a context file's inode");
}
