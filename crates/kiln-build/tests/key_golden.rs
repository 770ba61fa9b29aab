//! Golden cache keys: the keys of a fixed set of RUN and COPY steps over a
//! fixed filesystem and context, compared with `tests/golden/keys.txt`.
//! Keys are shared through the store (and, with issue 14, between
//! machines), so a change to what enters a key, or to how it is encoded,
//! must change this file on purpose: `KILN_UPDATE_GOLDEN=1 cargo test -p
//! kiln-build --test key_golden` rewrites it, and the diff shows which
//! steps' keys moved. See docs/cache-keys.md for what enters each key.
//!
//! It needs no privileges: a key is computed, nothing is run.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kiln_build::context::Context;
use kiln_build::copy::{CopyFrom, CopySpec, plan};
use kiln_build::exec::{RunInputs, run_key};
use kiln_build::fs::StageFs;
use kiln_dockerfile::instructions::Instr;
use kiln_dockerfile::{ResolveOptions, parse, resolve};
use kiln_image::{Descriptor, Digest, Store};
use kiln_sandbox::{Isolation, Sandbox};
use kiln_snapshot::{Mode, Snapshots};

const DOCKERFILE: &str = r#"FROM scratch
RUN echo hi
RUN ["/bin/sh", "-c", "echo hi"]
RUN --network=none echo hi
RUN --mount=type=cache,target=/root/.cache,id=pip echo hi
RUN --mount=type=secret,id=tok,required=true cat /run/secrets/tok
RUN --mount=type=bind,source=src,target=/src ls /src
RUN --mount=type=tmpfs,target=/t,size=1048576 true
RUN <<EOF
echo heredoc
EOF
COPY a.txt /dst/
COPY src/ /app/
COPY --chmod=0640 a.txt /a
COPY --chown=1:2 src /owned/
COPY --exclude=*.md src /ex/
COPY --parents src/./b.txt /p/
"#;

/// A context whose content, names and modes are fixed (times are not part
/// of any key, so they need not be).
fn context(dir: &Path) {
    fs::create_dir_all(dir.join("src/sub")).unwrap();
    fs::write(dir.join("a.txt"), "a\n").unwrap();
    fs::write(dir.join("src/b.txt"), "b\n").unwrap();
    fs::write(dir.join("src/README.md"), "readme\n").unwrap();
    fs::write(dir.join("src/sub/c.txt"), "c\n").unwrap();
    for (p, mode) in [
        ("a.txt", 0o644),
        ("src/b.txt", 0o644),
        ("src/README.md", 0o644),
        ("src/sub/c.txt", 0o600),
        ("src", 0o755),
        ("src/sub", 0o755),
    ] {
        fs::set_permissions(dir.join(p), fs::Permissions::from_mode(mode)).unwrap();
    }
}

fn keys() -> String {
    let tmp = tempfile::tempdir().unwrap();
    let ctx_dir = tmp.path().join("ctx");
    context(&ctx_dir);
    let store = Store::open(tmp.path().join("store")).unwrap();
    let snaps = Snapshots::open(&store).unwrap();
    let sandbox = Sandbox::new(Isolation::Chroot).unwrap();
    let ignore = kiln_dockerfile::ignore::Matcher::new("").unwrap();
    let context = Context::new(&ctx_dir, ignore, None).unwrap();
    // A base filesystem named by made-up diff IDs: keys address content.
    let layer = |s: &str| {
        let d = Digest::sha256_of(s.as_bytes());
        (
            Descriptor::new(kiln_image::media::OCI_LAYER, d.clone(), 1),
            d,
        )
    };
    let base = StageFs {
        layers: vec![layer("base-1"), layer("base-2")],
    };
    let secrets = BTreeMap::new();
    let ssh = BTreeMap::new();
    let no_stage = |_: usize| None;
    let scratch = tmp.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let inputs = RunInputs {
        store: &store,
        snaps: &snaps,
        mode: Mode::Overlay,
        sandbox: &sandbox,
        base: &base,
        env: vec!["PATH=/usr/bin:/bin".into(), "A=1".into()],
        user: "app".into(),
        workdir: "/work".into(),
        secrets: &secrets,
        ssh: &ssh,
        stage_fs: &no_stage,
        context: &context,
        scratch: &scratch,
        platform: "linux/amd64".into(),
        add_hosts: &[],
        shm_size: None,
        ulimits: &[],
    };

    let df = parse("Dockerfile", DOCKERFILE).unwrap();
    let build = resolve(&df, &ResolveOptions::default()).unwrap();
    let mut out = String::new();
    out.push_str(&format!("fs {}\n", base.key()));
    for r in &build.stages[0].instructions {
        let key = match &r.instr {
            Instr::Run(run) => run_key(run, &inputs).unwrap(),
            Instr::Copy(c) => {
                let owner = c.chown.as_deref().map(|s| {
                    let (u, g) = s.split_once(':').unwrap();
                    (u.parse().unwrap(), g.parse().unwrap())
                });
                let spec = CopySpec {
                    instruction: "COPY",
                    sources: &c.sources,
                    dest: &c.dest,
                    workdir: "/work",
                    owner,
                    chmod: c.chmod.as_ref(),
                    parents: c.parents,
                    exclude: &c.exclude,
                    unpack_archives: false,
                    remote: false,
                    checksum: None,
                    keep_git_dir: false,
                    now: 0,
                    existing_dir: &|_| None,
                    host_network: Default::default(),
                };
                plan(&CopyFrom::Context(&context), &spec).unwrap().key
            }
            other => panic!("no key for {other:?}"),
        };
        out.push_str(&format!(
            "{key} {}\n",
            r.original.trim().replace('\n', "\\n")
        ));
    }
    out
}

#[test]
fn cache_keys_match_the_golden_file() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/keys.txt");
    let got = keys();
    // Computed twice: a key must not depend on when or where it is made.
    assert_eq!(got, keys(), "keys differ between two computations");
    if std::env::var("KILN_UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        fs::create_dir_all(golden.parent().unwrap()).unwrap();
        fs::write(&golden, &got).unwrap();
        return;
    }
    let want = fs::read_to_string(&golden).unwrap_or_default();
    assert_eq!(
        got, want,
        "cache keys changed: if on purpose, KILN_UPDATE_GOLDEN=1 and commit tests/golden/keys.txt"
    );
}
