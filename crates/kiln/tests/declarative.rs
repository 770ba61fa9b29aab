//! `kiln.toml` builds (issue 17): Debian packages from the host's apt
//! mirror without RUN. The acceptance image is the file,
//! unchanged: it runs under `kiln run` (root and kilntest) and podman/runc,
//! dpkg-query lists its packages, two stores give one ID, offline from the
//! cache; a Python app's code change changes one layer, its requirements'
//! change another. Refusals are in
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

/// `[python]`: an app's pinned requirements installed from a local wheel
/// directory (no pip, no RUN) into layers of their own before the app's
/// code, beside a vendored directory as a `[[file]]` of its own (the
/// generic way for node_modules or a static binary). `import` works as uid
/// 65532 without PYTHONPATH; a code change changes only the code layer; a
/// requirements change (after `kiln lock`) only the wheel's layer; a wheel
/// that no longer matches the lock is refused.
#[test]
fn a_python_app_with_wheels_layers_dependencies_apart_from_code() {
    // The acceptance file's [[file]] app/ stays last: the code layer.
    let (head, app) = ACCEPTANCE.split_at(ACCEPTANCE.find("[[file]]").unwrap());
    let text = format!(
        "{head}[[file]]\nsrc = \"vendor/\"\ndest = \"/usr/lib/python3/dist-packages/\"\n\n{app}\n[python]\nrequirements = \"requirements.txt\"\nwheels = \"wheels/\"\n"
    );
    let v = variant(&text, Some(&|l: String| l));
    let dir = v.path();
    fs::create_dir_all(dir.join("vendor/vendored")).unwrap();
    fs::write(dir.join("vendor/vendored/__init__.py"), "MARK = '!'\n").unwrap();
    let wheels = dir.join("wheels");
    let greeting = |word: &str| format!("WORD = {word:?}\n");
    let sha1 = write_wheel(
        &wheels,
        "greeting",
        "1.0",
        &[("greeting/__init__.py", &greeting("hello"))],
        &[],
    );
    fs::write(
        dir.join("requirements.txt"),
        format!("# pinned\ngreeting==1.0 \\\n    --hash=sha256:{sha1}\n"),
    )
    .unwrap();
    let main = "import greeting, os, vendored\nprint(greeting.WORD + vendored.MARK, '{}', os.getuid(), greeting.__file__)\n";
    fs::write(dir.join("app/main.py"), main.replace("{}", "one")).unwrap();
    let (_t, k) = store(Who::Caller);
    let file = toml(dir);

    // The acceptance lock pins no wheels: the build says to lock.
    let err = fails(&k, &["build", "-f", &file, "-t", "app:0"]);
    assert!(
        err.contains("pins no wheels for [python]") && err.contains("kiln lock"),
        "{err}"
    );
    k.ok(&["lock", "-f", &file]);
    harvest(&k);
    let lock = fs::read_to_string(dir.join("kiln.lock")).unwrap();
    assert!(lock.contains("requested = [\"greeting==1.0\"]"), "{lock}");
    assert!(
        lock.contains("file = \"greeting-1.0-py3-none-any.whl\""),
        "{lock}"
    );
    assert!(lock.contains(&format!("sha256 = \"{sha1}\"")), "{lock}");

    build_id(&k, &file, "app:1");
    let out = k.ok(&["run", "app:1", "/app/main.py"]);
    assert!(
        out.contains(
            "hello! one 65532 /usr/local/lib/python3.11/dist-packages/greeting/__init__.py"
        ),
        "{out}"
    );
    // The .dist-info as pip leaves it (read in the image: exporting the
    // rootfs costs seconds).
    let info = "/usr/local/lib/python3.11/dist-packages/greeting-1.0.dist-info";
    let out = k.ok(&[
        "run",
        "app:1",
        "-c",
        &format!(
            "print(repr(open('{info}/INSTALLER').read())); print(open('{info}/RECORD').read())"
        ),
    ]);
    assert!(out.contains("'kiln\\n'"), "{out}");
    assert!(out.contains("greeting/__init__.py,sha256="), "{out}");
    assert!(out.contains("greeting-1.0.dist-info/RECORD,,"), "{out}");
    let one = layer_digests(&k, "app:1");

    // One code file changes: only the last layer (the app's) changes.
    fs::write(dir.join("app/main.py"), main.replace("{}", "two")).unwrap();
    build_id(&k, &file, "app:2");
    let two = layer_digests(&k, "app:2");
    assert_eq!(changed(&one, &two), [one.len() - 1], "only the code layer");
    assert!(
        k.ok(&["run", "app:2", "/app/main.py"])
            .contains("hello! two")
    );

    // A new pin: refused until locked, then only the wheel's layer changes.
    write_wheel(
        &wheels,
        "greeting",
        "2.0",
        &[("greeting/__init__.py", &greeting("bonjour"))],
        &["Colorama>=0.4", "tomli; python_version < '3.11'"],
    );
    fs::write(dir.join("requirements.txt"), "greeting==2.0\n").unwrap();
    let err = fails(&k, &["build", "-f", &file, "-t", "app:3"]);
    assert!(err.contains("does not match [python]"), "{err}");
    k.ok(&["lock", "-f", &file]);
    // 2.0 requires a distribution the file does not pin: said, not installed.
    let out = k.output(&["build", "-f", &file, "-t", "app:3"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("greeting 2.0 requires colorama, which the requirements file does not pin"),
        "{log}"
    );
    assert!(!log.contains("tomli"), "a marker is not evaluated: {log}");
    let three = layer_digests(&k, "app:3");
    assert_eq!(
        changed(&two, &three),
        [two.len() - 3],
        "only the wheel layer"
    );
    assert!(
        k.ok(&["run", "app:3", "/app/main.py"])
            .contains("bonjour! two")
    );

    // The wheel file replaced behind the lock's back: refused.
    write_wheel(
        &wheels,
        "greeting",
        "2.0",
        &[("greeting/__init__.py", &greeting("evil"))],
        &[],
    );
    let err = fails(&k, &["build", "-f", &file, "-t", "app:4"]);
    assert!(err.contains("is not the locked"), "{err}");
}

fn changed(a: &[String], b: &[String]) -> Vec<usize> {
    assert_eq!(a.len(), b.len());
    (0..a.len()).filter(|&i| a[i] != b[i]).collect()
}

/// A kiln.toml on an image names it in the manifest's annotations
/// (`org.opencontainers.image.base.*`), beside `--annotation`s, as a
/// Dockerfile's FROM does; on scratch it names none.
#[test]
fn a_toml_image_names_its_base_in_annotations() {
    let d = scratch("kiln-decl-base-");
    let (_t, k) = store(Who::Caller);
    import_bases(&k, false);
    fs::write(d.path().join("a.txt"), "on busybox\n").unwrap();
    let file = d.path().join("kiln.toml");
    let body = "cmd = [\"/bin/cat\", \"/a.txt\"]\n\n[[file]]\nsrc = \"a.txt\"\ndest = \"/a.txt\"\n";
    fs::write(
        &file,
        format!("[image]\nbase = \"{BUSYBOX_IMAGE}\"\n{body}"),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    k.ok(&[
        "build",
        "-f",
        file,
        "-t",
        "based:1",
        "--annotation",
        "com.example.k=v",
    ]);
    let base: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", BUSYBOX_IMAGE])).unwrap();
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "based:1"])).unwrap();
    let want = serde_json::json!({
        "com.example.k": "v",
        "org.opencontainers.image.base.name": "docker.io/kiln-test/busybox:1",
        "org.opencontainers.image.base.digest": base["Digest"],
    });
    assert_eq!(v["Manifest"]["annotations"], want, "{v}");
    assert!(k.ok(&["run", "based:1"]).contains("on busybox"));

    fs::write(d.path().join("kiln.toml"), format!("[image]\n{body}")).unwrap();
    k.ok(&["build", "-f", file, "-t", "scratch:1"]);
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "scratch:1"])).unwrap();
    let annotations = &v["Manifest"]["annotations"];
    assert!(
        annotations
            .get("org.opencontainers.image.base.name")
            .is_none(),
        "{v}"
    );
}

/// `platforms` with two entries: `kiln lock` resolves both architectures
/// into one lock (an `all` package once), and the build makes an index of
/// two images, the arm64 one from arm64 `.deb`s (no RUN, so no emulator).
#[test]
fn two_platforms_lock_once_and_build_an_index() {
    let v = scratch("kiln-decl-multi-");
    let dir = v.path();
    fs::write(
        dir.join("kiln.toml"),
        "[image]\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\n\n[debian]\nsuite = \"bookworm\"\npackages = [\"libc6\", \"tzdata\"]\n",
    )
    .unwrap();
    let (_t, k) = store(Who::Caller);
    let file = toml(dir);
    k.ok(&["lock", "-f", &file]);
    harvest(&k);
    let lock: toml::Table = fs::read_to_string(dir.join("kiln.lock"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        lock["release"]["architectures"],
        toml::Value::Array(vec!["amd64".into(), "arm64".into()])
    );
    let pkgs = lock["package"].as_array().unwrap();
    let of = |name: &str| -> Vec<String> {
        pkgs.iter()
            .filter(|p| p["name"].as_str() == Some(name))
            .map(|p| p["architecture"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(of("libc6"), ["amd64", "arm64"]);
    assert_eq!(of("tzdata"), ["all"]);

    k.ok(&["build", "-f", &file, "-t", "multi:1"]);
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "multi:1"])).unwrap();
    let entries = v["Index"]["manifests"].as_array().expect("an index");
    let archs: Vec<&str> = entries
        .iter()
        .map(|e| e["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"], "{v}");
    let arm = format!("multi:1@{}", entries[1]["digest"].as_str().unwrap());
    let arm: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", &arm])).unwrap();
    assert_eq!(arm["Config"]["architecture"], "arm64");
    let history = arm["Config"]["history"].to_string();
    assert!(
        history.contains("libc6 ") && history.contains(" arm64"),
        "{history}"
    );
    assert!(!history.contains(" amd64"), "{history}");

    // A platform the file does not list is refused.
    let err = fails(
        &k,
        &["build", "-f", &file, "--platform", "linux/s390x", "-t", "x"],
    );
    assert!(err.contains("not one of them"), "{err}");
}
