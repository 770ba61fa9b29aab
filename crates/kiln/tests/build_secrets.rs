//! A build secret never lands anywhere: not in the store (any file, with
//! gzip/zstd layers decompressed), not in `kiln save` archives, not in an
//! `-o type=oci` output, not in the build log.

mod common;

use std::fs;
use std::path::Path;

use common::build::*;

/// Tests `kiln build` does not pass yet, with why: reported loudly, and a
/// listed test that passes fails, so the list only shrinks.
const KNOWN_GAPS: &[(&str, &str)] = &[];

/// 32 random bytes as hex: unique to this run, so any hit is a leak.
fn marker() -> String {
    let mut b = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    hex::encode(b)
}

fn assert_absent(where_: &Path, needle: &[u8]) {
    for (p, bytes) in all_bytes(where_) {
        assert!(
            !find_bytes(&bytes, needle),
            "the secret is in {}",
            p.display()
        );
    }
}

#[test]
fn secret_is_nowhere_after_the_build() {
    guarded(
        KNOWN_GAPS,
        "secret_is_nowhere_after_the_build",
        secret_is_nowhere_after_the_build_body,
    );
}

fn secret_is_nowhere_after_the_build_body() {
    if !kiln_build_available() {
        loud("build_secrets SKIPPED: no `kiln build`");
        return;
    }
    let tmp = scratch("kiln-bt-secret-");
    let k = KilnBuild::new(&tmp.path().join("store"), Who::Caller);
    import_bases(&k, false);
    let secret = marker();
    let src = tmp.path().join("tok");
    fs::write(&src, &secret).unwrap();
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    // The secret is used as a file and as an env var, and the RUNs prove
    // they saw it (length only), so a build that skipped it would fail.
    // The last two print it, as a careless RUN might.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM kiln-test/busybox:1\n\
         RUN --mount=type=secret,id=tok cat /run/secrets/tok > /dev/null && test -s /run/secrets/tok && echo file-ok > /file-ok\n\
         RUN --mount=type=secret,id=tok,env=TOK,required=true test ${#TOK} -eq 64 && echo env-ok > /env-ok\n\
         RUN --mount=type=secret,id=tok,target=/root/.token,required=true wc -c < /root/.token > /len\n\
         RUN --mount=type=secret,id=tok echo \"file: $(cat /run/secrets/tok)\"\n\
         RUN --mount=type=secret,id=tok,env=TOK echo \"env: $TOK\" >&2\n",
    )
    .unwrap();
    let oci = tmp.path().join("oci-out");
    let (out, _, log) = kiln_build(
        &k,
        &ctx,
        &[
            "-t",
            "secret-test:latest",
            "--secret",
            &format!("id=tok,src={}", src.display()),
        ],
    );
    assert!(out.status.success(), "build failed:\n{log}");
    assert!(
        !find_bytes(log.as_bytes(), secret.as_bytes()),
        "the secret is in the build log"
    );
    // RUNs that print it: the log shows it masked.
    for printed in ["file: ****", "env: ****"] {
        assert!(log.contains(printed), "no `{printed}` in the log:\n{log}");
    }
    // The same build to an OCI layout (from cache, the export must not leak).
    let (out, _, log2) = kiln_build(
        &k,
        &ctx,
        &[
            "--secret",
            &format!("id=tok,src={}", src.display()),
            "-o",
            &format!("type=oci,dest={}", oci.display()),
        ],
    );
    assert!(out.status.success(), "build -o type=oci failed:\n{log2}");
    assert!(
        !find_bytes(log2.as_bytes(), secret.as_bytes()),
        "the secret is in the build log"
    );

    let root = tmp.path().join("rootfs");
    k.rootfs("secret-test:latest", &root);
    assert_eq!(
        fs::read_to_string(root.join("file-ok")).unwrap(),
        "file-ok\n"
    );
    assert_eq!(fs::read_to_string(root.join("env-ok")).unwrap(), "env-ok\n");
    assert_eq!(fs::read_to_string(root.join("len")).unwrap().trim(), "64");
    assert!(!root.join("run/secrets/tok").exists() && !root.join("root/.token").exists());

    let saves = tmp.path().join("saves");
    fs::create_dir_all(&saves).unwrap();
    for fmt in ["docker-archive", "oci-archive", "oci-dir"] {
        let dst = saves.join(fmt);
        k.ok(&[
            "save",
            "secret-test:latest",
            "-o",
            dst.to_str().unwrap(),
            "--format",
            fmt,
        ]);
    }
    // Archives: unpack them so their (compressed) layers are read too.
    for fmt in ["docker-archive", "oci-archive"] {
        let d = saves.join(format!("{fmt}.x"));
        extract_tar(&saves.join(fmt), &d);
    }
    if oci.is_file() {
        extract_tar(&oci, &tmp.path().join("oci-out.x"));
    }
    assert_absent(&k.root, secret.as_bytes());
    assert_absent(&saves, secret.as_bytes());
    assert_absent(&tmp.path().join("rootfs"), secret.as_bytes());
    for p in [oci.clone(), tmp.path().join("oci-out.x")] {
        if p.exists() {
            assert_absent(&p, secret.as_bytes());
        }
    }
}
