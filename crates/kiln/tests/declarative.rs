//! `kiln.toml` builds (issue 17): Debian packages from the host's apt
//! mirror without RUN. The acceptance image is the file,
//! unchanged: it runs under `kiln run` (root and kilntest) and podman/runc,
//! dpkg-query lists its packages, two stores give one ID, offline from the
//! cache; an app's code change changes one layer. Refusals are in
//! `declarative_refusals.rs`.

#[macro_use]
mod common;

use std::fs;
use std::process::Command;

use common::assert_success;
use common::build::*;
use common::declarative::*;
use common::is_root;

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
    let podman = |args: &[&str]| common::podman(tmp.path(), args);
    podman(&["load", "-i", archive.to_str().unwrap()]);
    let out = podman(
        &[
            common::PODMAN_RUN,
            &[
                "kiln-test/py:1",
                "-c",
                "import ssl, os; print(ssl.OPENSSL_VERSION, os.getuid())",
            ],
        ]
        .concat(),
    );
    assert!(
        out.contains("OpenSSL 3.") && out.contains(" 65532"),
        "{out}"
    );
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
