//! kiln against a real `docker-registry` (no auth, then htpasswd): push,
//! pull, copy between repositories with a cross-repo mount, interop with
//! skopeo in both directions, and the inspection commands.

#[path = "../../kiln-registry/tests/support/mod.rs"]
mod support;

use support::{Auth, Registry, TestImage, kiln, kiln_ok, skopeo_digest};

#[test]
fn push_pull_copy_mount_and_inspect() {
    let reg = Registry::start(Auth::None);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // One layer above the default chunk size, to exercise chunked PATCH.
    let img = TestImage::new(&[3 << 20, 20 << 20, 1000], 1);
    let name = format!("{}/app:1", reg.host());
    img.to_store(&h.join("store"), &name);
    // As docker: no registry digest before the image was pushed or pulled.
    let digests = |home: &std::path::Path| -> String {
        kiln_ok(home, &["images", "--digests"])
            .lines()
            .find(|l| l.contains("/app "))
            .unwrap_or_default()
            .to_string()
    };
    assert!(digests(h).contains("<none>"), "{}", digests(h));

    let out = kiln_ok(h, &["push", &name, "-v"]);
    assert!(digests(h).contains(&img.digest().to_string()));
    assert_eq!(out.trim(), img.digest().to_string());
    // skopeo reads what kiln pushed, with the same digest.
    assert_eq!(skopeo_digest(&name), img.digest().to_string());

    // A second push finds every blob there.
    let out = kiln(h, &["push", &name, "-v"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("4 blobs already there"), "{err}");

    // Pull into a fresh store.
    let home2 = tempfile::tempdir().unwrap();
    let out = kiln_ok(home2.path(), &["pull", &name]);
    assert_eq!(out.trim(), img.digest().to_string());
    let store = kiln_image::Store::open(home2.path().join("store")).unwrap();
    assert_eq!(store.resolve(&name).unwrap().digest, img.digest());
    assert!(store.check().unwrap().problems.is_empty());
    assert!(digests(home2.path()).contains(&img.digest().to_string()));

    // Copy to another repository: every blob is mounted, none uploaded.
    let other = format!("{}/other/app:2", reg.host());
    let out = kiln(
        h,
        &[
            "copy",
            &format!("docker://{name}"),
            &format!("docker://{other}"),
            "-v",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(" 0 B up") && err.contains("4 mounts"), "{err}");
    let log = reg.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("POST /v2/other/app/blobs/uploads/?")
                && l.contains("mount=")
                && l.contains("from=app")
                && l.contains("\" 201 ")),
        "no mount in the registry log"
    );
    assert_eq!(skopeo_digest(&other), img.digest().to_string());

    // Inspection.
    assert_eq!(
        kiln_ok(h, &["digest", &other]).trim(),
        img.digest().to_string()
    );
    assert_eq!(
        kiln_ok(h, &["manifest", &other]).as_bytes(),
        img.manifest.as_slice()
    );
    assert_eq!(
        kiln_ok(h, &["config", &other]).as_bytes(),
        img.config.as_slice()
    );
    assert_eq!(kiln_ok(h, &["tags", &format!("{}/app", reg.host())]), "1\n");
    assert_eq!(kiln_ok(h, &["catalog", &reg.host()]), "app\nother/app\n");

    // Errors name the command, the reference, the operation and the status.
    let out = kiln(h, &["pull", &format!("{}/app:nope", reg.host())]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "pull {}/app:nope: GET manifest nope: 404 Not Found: MANIFEST_UNKNOWN",
            reg.host()
        )),
        "{err}"
    );
}

/// A pulled image pushed to another repository of the same registry has
/// its blobs mounted from the one it came from, and an image pushed once
/// lends its blobs to the next push elsewhere (docker keeps the same
/// record): no byte goes up either time.
#[test]
fn pushes_mount_blobs_from_where_the_store_got_them() {
    let reg = Registry::start(Auth::None);
    let seed = tempfile::tempdir().unwrap();
    let img = TestImage::new(&[300_000, 1000], 3);
    let name = format!("{}/base:1", reg.host());
    img.to_store(&seed.path().join("store"), &name);
    kiln_ok(seed.path(), &["push", &name]);

    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    kiln_ok(h, &["pull", &name]);
    let mounted_into = |dest: &str, from: &str| {
        let out = kiln(h, &["push", &name, dest, "-v"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(err.contains(" 0 B up") && err.contains("3 mounts"), "{err}");
        let repo = dest.split_once('/').unwrap().1.rsplit_once(':').unwrap().0;
        let log = reg.log_text();
        let mounts = log
            .lines()
            .filter(|l| {
                l.contains(&format!("POST /v2/{repo}/blobs/uploads/?"))
                    && l.contains(&format!("from={from}"))
                    && l.contains("\" 201 ")
            })
            .count();
        assert_eq!(mounts, 3, "mounts into {repo} from {from}:\n{log}");
        assert_eq!(skopeo_digest(dest), img.digest().to_string());
    };
    // From the repository the pull read.
    mounted_into(&format!("{}/team/app:1", reg.host()), "base");
    // The store forgot nothing: the newest holder is tried first.
    mounted_into(&format!("{}/team/other:1", reg.host()), "team/app");
}

#[test]
fn skopeo_pushes_kiln_pulls() {
    let reg = Registry::start(Auth::None);
    let home = tempfile::tempdir().unwrap();
    let img = TestImage::new(&[100_000, 2 << 20], 2);
    let layout = home.path().join("layout");
    img.to_layout(&layout, "v1");
    let dest = format!("{}/from-skopeo:v1", reg.host());
    let st = std::process::Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{dest}"))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let want = skopeo_digest(&dest);
    let out = kiln_ok(home.path(), &["pull", &dest]);
    assert_eq!(out.trim(), want);
    let store = kiln_image::Store::open(home.path().join("store")).unwrap();
    let d = store.resolve(&dest).unwrap();
    assert_eq!(d.digest.to_string(), want);
    assert!(store.check().unwrap().problems.is_empty());
}

#[test]
fn basic_auth_login_push_pull_logout() {
    let reg = Registry::start(Auth::Htpasswd {
        user: "alice".into(),
        password: "s3cret".into(),
    });
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let img = TestImage::new(&[50_000], 3);
    let name = format!("{}/secure/app:1", reg.host());
    img.to_store(&h.join("store"), &name);

    // Without credentials: a clear 401.
    let out = kiln(h, &["push", &name]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("401 Unauthorized") && err.contains("kiln login"),
        "{err}"
    );

    // A wrong password is refused by login, and nothing is saved.
    let out = kiln(h, &["login", &reg.host(), "-u", "alice", "-p", "wrong"]);
    assert!(!out.status.success());
    assert!(!h.join(".docker/config.json").exists());

    let out = kiln(h, &["login", &reg.host(), "-u", "alice", "-p", "s3cret"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(h.join(".docker/config.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    assert_eq!(
        kiln_ok(h, &["push", &name]).trim(),
        img.digest().to_string()
    );
    let home2 = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home2.path().join(".docker")).unwrap();
    std::fs::copy(
        h.join(".docker/config.json"),
        home2.path().join(".docker/config.json"),
    )
    .unwrap();
    assert_eq!(
        kiln_ok(home2.path(), &["pull", &name]).trim(),
        img.digest().to_string()
    );

    kiln_ok(h, &["logout", &reg.host()]);
    let out = kiln(h, &["digest", &name]);
    assert!(!out.status.success());
}

#[test]
fn redirects_to_storage_never_carry_credentials() {
    use support::proxy::{Fault, Proxy, Storage};
    let reg = Registry::start(Auth::Htpasswd {
        user: "bob".into(),
        password: "pw".into(),
    });
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let img = TestImage::new(&[1 << 20], 5);
    let proxy = Proxy::start(reg.port);
    let name = format!("{}/redirected:1", proxy.host());
    img.to_store(&h.join("store"), &name);
    kiln_ok(h, &["login", &proxy.host(), "-u", "bob", "-p", "pw"]);
    kiln_ok(h, &["push", &name]);

    // The layer's GET is redirected to "object storage" on another host.
    let layer = kiln_image::Digest::sha256_of(&img.layers[0]);
    let storage = Storage::start(img.layers[0].clone());
    let to = format!("http://localhost:{}/bucket/{}", storage.port, layer.hex());
    proxy.add("GET", &format!("/blobs/{layer}"), Fault::Redirect(to), 1);
    let pulled = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(pulled.path().join(".docker")).unwrap();
    std::fs::copy(
        h.join(".docker/config.json"),
        pulled.path().join(".docker/config.json"),
    )
    .unwrap();
    assert_eq!(
        kiln_ok(pulled.path(), &["pull", &name]).trim(),
        img.digest().to_string()
    );
    let seen = storage.authorized.lock().unwrap().clone();
    assert!(!seen.is_empty(), "storage was not asked");
    assert!(
        seen.iter().all(|a| !a),
        "credentials leaked to storage: {seen:?}"
    );
    assert!(
        proxy
            .seen()
            .iter()
            .filter(|r| r.path.contains(&format!("/blobs/{layer}")))
            .all(|r| r.authorized),
        "the registry itself did get credentials"
    );
}

#[test]
fn index_push_platform_pull_and_copy_all() {
    let reg = Registry::start(Auth::None);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let amd = TestImage::with_arch(&[10_000], 31, "amd64");
    let arm = TestImage::with_arch(&[12_000], 32, "arm64");
    let name = format!("{}/multi:1", reg.host());
    let index = support::index_to_store(
        &h.join("store"),
        &name,
        &[(&amd, "linux/amd64"), (&arm, "linux/arm64")],
    );
    let index_digest = kiln_image::Digest::sha256_of(&index).to_string();
    // push sends the whole index: children by digest, then the index by tag.
    assert_eq!(kiln_ok(h, &["push", &name]).trim(), index_digest);
    assert_eq!(skopeo_digest(&name), index_digest);
    assert_eq!(kiln_ok(h, &["digest", &name]).trim(), index_digest);
    assert_eq!(
        kiln_ok(h, &["manifest", &name]).as_bytes(),
        index.as_slice()
    );
    assert_eq!(
        kiln_ok(h, &["config", "--platform", "linux/arm64", &name]).as_bytes(),
        arm.config.as_slice()
    );

    // pull picks one platform (--platform, else the host's).
    let p = tempfile::tempdir().unwrap();
    let out = kiln_ok(p.path(), &["pull", "--platform", "linux/arm64", &name]);
    assert_eq!(out.trim(), arm.digest().to_string());
    let out = kiln_ok(p.path(), &["pull", "--platform", "linux/amd64", &name]);
    assert_eq!(out.trim(), amd.digest().to_string());
    let out = kiln(p.path(), &["pull", "--platform", "linux/s390x", &name]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no manifest for platform linux/s390x"));

    // copy --all keeps the index (and so its digest).
    let all = format!("{}/multi-copy:1", reg.host());
    let out = kiln_ok(
        h,
        &[
            "copy",
            "--all",
            &format!("docker://{name}"),
            &format!("docker://{all}"),
        ],
    );
    assert_eq!(out.trim(), index_digest);
    assert_eq!(skopeo_digest(&all), index_digest);
}

#[test]
fn credential_helpers_get_and_store() {
    let reg = Registry::start(Auth::Htpasswd {
        user: "carol".into(),
        password: "helper-pw".into(),
    });
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // A credential helper on PATH, as docker-credential-pass would be.
    let bin = h.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-kilntest");
    let stored = h.join("helper-stored.json");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n  get) cat >/dev/null; echo '{{\"Username\":\"carol\",\"Secret\":\"helper-pw\"}}' ;;\n  store) cat > {} ;;\n  erase) cat >/dev/null ;;\nesac\n",
            stored.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(h.join(".docker")).unwrap();
    std::fs::write(
        h.join(".docker/config.json"),
        serde_json::json!({"credHelpers": {reg.host(): "kilntest"}}).to_string(),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |args: &[&str]| {
        std::process::Command::new(support::kiln_bin())
            .args(args)
            .env("HOME", h)
            .env("DOCKER_CONFIG", h.join(".docker"))
            .env("KILN_ROOT", h.join("store"))
            .env("PATH", &path)
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .output()
            .unwrap()
    };
    let img = TestImage::new(&[1000], 41);
    let name = format!("{}/helped:1", reg.host());
    img.to_store(&h.join("store"), &name);
    let out = run(&["push", &name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // login hands the credentials to the helper instead of config.json.
    let out = run(&["login", &reg.host(), "-u", "carol", "-p", "helper-pw"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: serde_json::Value = serde_json::from_slice(&std::fs::read(&stored).unwrap()).unwrap();
    assert_eq!(sent["Username"], "carol");
    assert_eq!(sent["ServerURL"], reg.host());
    let config = std::fs::read_to_string(h.join(".docker/config.json")).unwrap();
    assert!(!config.contains("helper-pw"), "{config}");
}

#[test]
fn tls_registry_needs_its_ca_unless_verification_is_off() {
    let reg = Registry::start_with(Auth::None, true);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let img = TestImage::new(&[5000], 51);
    let name = format!("{}/tls:1", reg.host());
    img.to_store(&h.join("store"), &name);

    // Loopback may use plain HTTP, but a TLS registry's certificate is still
    // checked: without its CA, a clear certificate error.
    let out = kiln(h, &["push", &name]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    let certs = h.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(reg.dir.path().join("ca.crt"), certs.join("ca.crt")).unwrap();
    let dir_arg = format!("--cert-dir={}", certs.display());
    assert_eq!(
        kiln_ok(h, &["push", &name, &dir_arg]).trim(),
        img.digest().to_string()
    );
    assert_eq!(
        kiln_ok(h, &["digest", &name, "--tls-verify=false"]).trim(),
        img.digest().to_string()
    );
    let out = std::process::Command::new(support::kiln_bin())
        .args(["digest", &name])
        .env("HOME", h)
        .env("KILN_EXTRA_CA", reg.dir.path().join("ca.crt"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn mutual_tls_registry_takes_the_client_certificate_from_the_cert_dir() {
    let reg = Registry::start_mutual_tls(Auth::None);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let img = TestImage::new(&[3000], 52);
    let name = format!("{}/mtls:1", reg.host());
    img.to_store(&h.join("store"), &name);

    // The CA alone is not enough: the registry asks for a client certificate.
    let certs = h.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(reg.dir.path().join("ca.crt"), certs.join("ca.crt")).unwrap();
    let dir_arg = format!("--cert-dir={}", certs.display());
    let out = kiln(h, &["push", &name, &dir_arg]);
    assert!(
        !out.status.success(),
        "push without a client certificate worked"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&reg.host()),
        "the error names the registry: {err}"
    );

    // Docker's layout: client.cert with its client.key beside the CA.
    for f in ["client.cert", "client.key"] {
        std::fs::copy(reg.dir.path().join(f), certs.join(f)).unwrap();
    }
    assert_eq!(
        kiln_ok(h, &["push", &name, &dir_arg]).trim(),
        img.digest().to_string()
    );
    assert_eq!(
        kiln_ok(h, &["digest", &name, &dir_arg]).trim(),
        img.digest().to_string()
    );

    // A .cert without its .key is a configuration slip, not a crash.
    std::fs::remove_file(certs.join("client.key")).unwrap();
    let out = kiln(h, &["digest", &name, &dir_arg]);
    assert!(!out.status.success());
}

/// `kiln login HOST` on a terminal asks for the user name and the password,
/// the password without echo, as `docker login` does. The terminal is a
/// real pseudo-terminal, made by util-linux's `script`.
#[test]
fn login_prompts_on_a_terminal_without_echoing_the_password() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    if !support::have("script") {
        support::missing_prerequisite("no `script` (util-linux)");
        return;
    }
    let reg = Registry::start(Auth::Htpasswd {
        user: "dora".into(),
        password: "pty-s3cret".into(),
    });
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let cmd = format!("{} login {}", support::kiln_bin().display(), reg.host());
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("HOME", h)
        .env("DOCKER_CONFIG", h.join(".docker"))
        .env("KILN_ROOT", h.join("store"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            let _ = tx.send(seen.clone());
        }
        seen
    });
    // Answer each question only once it is asked, so that echo is off when
    // the password arrives.
    let wait_for = |what: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(seen) if seen.contains(what) => return,
                Ok(_) => {}
                Err(_) => panic!("no {what:?} prompt"),
            }
        }
    };
    wait_for("Username: ");
    stdin.write_all(b"dora\n").unwrap();
    wait_for("Password: ");
    stdin.write_all(b"pty-s3cret\n").unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    let seen = reader.join().unwrap();
    assert!(status.success(), "{seen}");
    assert!(seen.contains("Login Succeeded"), "{seen}");
    assert!(seen.contains("dora"), "the user name is echoed: {seen}");
    assert!(
        !seen.contains("pty-s3cret"),
        "the password was echoed: {seen}"
    );
    let config = std::fs::read_to_string(h.join(".docker/config.json")).unwrap();
    assert!(config.contains(&reg.host()), "{config}");
}
