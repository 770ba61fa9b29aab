//! Test support shared by the registry tests: a real `docker-registry`
//! (distribution 2.8) on 127.0.0.1, test images written into a kiln store
//! or a hand-made OCI layout, a fault-injecting TCP proxy and a token
//! server. No mocks: every test talks HTTP to the real registry.

#![allow(dead_code)]

pub mod proxy;
pub mod token;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_image::{Descriptor, Digest, Manifest, Reference, Store, media};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// How the registry authenticates.
pub enum Auth {
    None,
    Htpasswd { user: String, password: String },
    Token(token::TokenServer),
}

/// A `docker-registry` process on 127.0.0.1, killed on drop.
pub struct Registry {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
    pub log: PathBuf,
    pub auth: Auth,
}

impl Registry {
    pub fn start(auth: Auth) -> Registry {
        Self::start_with(auth, false)
    }

    /// With `tls`, the registry speaks only HTTPS, with a certificate for
    /// 127.0.0.1 from its own CA at `dir/ca.crt`.
    pub fn start_with(auth: Auth, tls: bool) -> Registry {
        Self::start_tls(auth, tls, false)
    }

    /// Like `start_with(auth, true)`, and the registry also demands a
    /// client certificate from the same CA: one is at `dir/client.cert` and
    /// `dir/client.key`.
    pub fn start_mutual_tls(auth: Auth) -> Registry {
        Self::start_tls(auth, true, true)
    }

    fn start_tls(auth: Auth, tls: bool, client_auth: bool) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let auth_yaml = match &auth {
            Auth::None => String::new(),
            Auth::Htpasswd { user, password } => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("htpasswd");
                assert!(out.status.success());
                let p = dir.path().join("htpasswd");
                std::fs::write(&p, out.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                    p.display()
                )
            }
            Auth::Token(t) => format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                t.realm(),
                token::SERVICE,
                token::ISSUER,
                t.cert_path().display()
            ),
        };
        let tls_yaml = if tls {
            let d = dir.path();
            let run = |args: &[&str]| {
                let st = Command::new("openssl")
                    .args(args)
                    .current_dir(d)
                    .stderr(Stdio::null())
                    .status()
                    .unwrap();
                assert!(st.success(), "openssl {args:?}");
            };
            run(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=kiln test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ]);
            // `name.key` and the certificate `cert`, signed by the CA.
            let issue = |name: &str, cert: &str, subject: &str, ext: &str| {
                let (key, csr, extf) = (
                    format!("{name}.key"),
                    format!("{name}.csr"),
                    format!("{name}.ext"),
                );
                std::fs::write(d.join(&extf), ext).unwrap();
                run(&[
                    "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", &key,
                    "-out", &csr,
                ]);
                run(&[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &extf,
                    "-out",
                    cert,
                ]);
            };
            issue(
                "tls",
                "tls.crt",
                "/CN=127.0.0.1",
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
            );
            let mut yaml = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                d.join("tls.crt").display(),
                d.join("tls.key").display()
            );
            if client_auth {
                issue(
                    "client",
                    "client.cert",
                    "/CN=kiln test client",
                    "extendedKeyUsage=clientAuth\n",
                );
                yaml.push_str(&format!(
                    "    clientcas:\n      - {}\n",
                    d.join("ca.crt").display()
                ));
            }
            yaml
        } else {
            String::new()
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: kiln-test-secret\n{tls_yaml}{auth_yaml}",
            dir.path().join("data").display()
        );
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, config).unwrap();
        let log = dir.path().join("registry.log");
        let logf = std::fs::File::create(&log).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("start docker-registry");
        let r = Registry {
            dir,
            port,
            child,
            log,
            auth,
        };
        r.wait_ready();
        r
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut buf = [0u8; 16];
                if s.read(&mut buf).is_ok_and(|n| n > 0) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("registry did not start: {}", self.log_text());
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn reference(&self, repo_tag: &str) -> Reference {
        Reference::parse(&format!("{}/{repo_tag}", self.host())).unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic bytes that do not compress away (xorshift).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The documents of a test image: config, layers and manifest bytes.
pub struct TestImage {
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub manifest: Vec<u8>,
}

impl TestImage {
    pub fn new(layer_sizes: &[usize], seed: u64) -> TestImage {
        Self::with_arch(layer_sizes, seed, "amd64")
    }

    pub fn with_arch(layer_sizes: &[usize], seed: u64, arch: &str) -> TestImage {
        let layers: Vec<Vec<u8>> = layer_sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| noise(n, seed * 100 + i as u64))
            .collect();
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|l| Digest::sha256_of(l).to_string())
            .collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Env": [format!("SEED={seed}")]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let m = Manifest::new(
            media::Format::Oci,
            Descriptor::new(
                media::OCI_CONFIG,
                Digest::sha256_of(&config),
                config.len() as u64,
            ),
            layers
                .iter()
                .map(|l| Descriptor::new(media::OCI_LAYER, Digest::sha256_of(l), l.len() as u64))
                .collect(),
        );
        let manifest = kiln_image::canonical::to_vec(&m).unwrap();
        TestImage {
            config,
            layers,
            manifest,
        }
    }

    pub fn digest(&self) -> Digest {
        Digest::sha256_of(&self.manifest)
    }

    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            media::OCI_MANIFEST,
            self.digest(),
            self.manifest.len() as u64,
        )
    }

    /// Stores the image in the kiln store at `root`, named `name`.
    pub fn to_store(&self, root: &Path, name: &str) {
        let store = Store::open(root).unwrap();
        store.put_blob(&self.config).unwrap();
        for l in &self.layers {
            store.put_blob(l).unwrap();
        }
        store.put_blob(&self.manifest).unwrap();
        store
            .tag(&Reference::parse(name).unwrap(), &self.descriptor())
            .unwrap();
    }

    /// Writes the image as an OCI layout at `dir`, tagged `tag` (what
    /// `skopeo copy oci:DIR:TAG` reads).
    pub fn to_layout(&self, dir: &Path, tag: &str) {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        for b in std::iter::once(&self.config)
            .chain(&self.layers)
            .chain(std::iter::once(&self.manifest))
        {
            std::fs::write(blobs.join(Digest::sha256_of(b).hex()), b).unwrap();
        }
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": media::OCI_MANIFEST,
                "digest": self.digest().to_string(),
                "size": self.manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }],
        });
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }
}

/// The kiln binary built for this test run (set by cargo for the kiln crate's tests).
pub fn kiln_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kiln"))
}

/// Runs kiln with `args`, the store at `root`, credentials under `home`.
pub fn kiln(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(kiln_bin())
        .args(args)
        .env("HOME", home)
        .env("DOCKER_CONFIG", home.join(".docker"))
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env("KILN_ROOT", home.join("store"))
        .stdin(Stdio::null())
        .output()
        .expect("run kiln")
}

pub fn kiln_ok(home: &Path, args: &[&str]) -> String {
    let out = kiln(home, args);
    assert!(
        out.status.success(),
        "kiln {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `skopeo inspect --raw` and the digest skopeo computes, for interop checks.
pub fn skopeo_digest(reference: &str) -> String {
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Stores an OCI index of `images` (with their platforms) named `name`;
/// returns the index bytes.
pub fn index_to_store(root: &Path, name: &str, images: &[(&TestImage, &str)]) -> Vec<u8> {
    let store = Store::open(root).unwrap();
    let mut manifests = Vec::new();
    for (img, platform) in images {
        store.put_blob(&img.config).unwrap();
        for l in &img.layers {
            store.put_blob(l).unwrap();
        }
        store.put_blob(&img.manifest).unwrap();
        let mut d = img.descriptor();
        d.platform = Some(kiln_image::Platform::parse(platform).unwrap());
        manifests.push(d);
    }
    let index = kiln_image::Index::new(media::Format::Oci, manifests);
    let bytes = kiln_image::canonical::to_vec(&index).unwrap();
    store.put_blob(&bytes).unwrap();
    let desc = Descriptor::new(
        media::OCI_INDEX,
        Digest::sha256_of(&bytes),
        bytes.len() as u64,
    );
    store.tag(&Reference::parse(name).unwrap(), &desc).unwrap();
    bytes
}

/// A prerequisite of a test (root, a peer tool, a package) is missing. Under
/// `CI=true` that fails the test: CI installs everything the suite needs, so
/// a skip there would be a pass that tested nothing. Elsewhere the part is
/// skipped and says so.
#[allow(dead_code)]
pub fn missing_prerequisite(why: &str) {
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "{why}: a prerequisite is missing, and under CI=true that fails"
    );
    eprintln!("SKIPPED: {why}");
}
