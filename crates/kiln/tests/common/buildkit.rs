//! BuildKit as a builder of the fixtures, beside buildah: Debian's
//! docker.io (dockerd 20.10, BuildKit 0.8) started by the test itself,
//! with its own data root, exec root and socket under a temp dir, no
//! bridge and no iptables rules (RUN uses the host's network, `docker
//! build --network host`), and the harness's busybox (and Debian) base
//! images `docker load`ed into it. `KILN_TEST_DOCKER_HOST=unix:///…` uses
//! a running dockerd instead; `KILN_SKIP_BUILDKIT=1` builds nothing with
//! BuildKit.
//!
//! A fixture BuildKit 0.8 cannot build says `buildkit-skip WHY` in its
//! `expect` file; `buildkit-flags` are the flags only BuildKit gets.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::assert_success;
use super::build::*;
use super::tree_listing;

const DOCKERD: &str = "/usr/sbin/dockerd";
const DOCKER: &str = "/usr/bin/docker";

/// How long dockerd may take to answer before the test says it failed.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A dockerd of the test's own; stopped and its directories removed when
/// dropped.
pub struct Dockerd {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    pub docker: Docker,
}

impl Dockerd {
    /// The BuildKit builder: the running daemon `KILN_TEST_DOCKER_HOST`
    /// names, else a dockerd started here. `None` (loudly; a failure under
    /// CI=true) when it cannot be had.
    pub fn usable() -> Option<Dockerd> {
        if std::env::var("KILN_SKIP_BUILDKIT").is_ok_and(|v| v == "1") {
            loud("KILN_SKIP_BUILDKIT=1: no BuildKit builds, no BuildKit conformance check");
            return None;
        }
        if let Ok(host) = std::env::var("KILN_TEST_DOCKER_HOST") {
            return Some(Dockerd {
                child: None,
                dir: None,
                docker: Docker { host },
            });
        }
        if !Path::new(DOCKERD).exists() || !Path::new(DOCKER).exists() || !super::is_root() {
            missing_prerequisite(
                "BuildKit: Debian's docker.io (/usr/sbin/dockerd, /usr/bin/docker) missing, or not root",
            );
            return None;
        }
        match Dockerd::start() {
            Ok(d) => Some(d),
            Err(why) => {
                missing_prerequisite(&format!("BuildKit: dockerd did not start: {why}"));
                None
            }
        }
    }

    /// Starts dockerd with everything of its own under a temp dir (the
    /// socket path must stay under 108 bytes, so the dir is short).
    pub fn start() -> Result<Dockerd, String> {
        let dir = tempfile::Builder::new()
            .prefix("kiln-bk-")
            .tempdir_in("/tmp")
            .map_err(|e| e.to_string())?;
        let d = dir.path();
        let sock = d.join("sock");
        let log = fs::File::create(d.join("dockerd.log")).map_err(|e| e.to_string())?;
        let child = Command::new(DOCKERD)
            .arg("--bridge=none")
            .arg("--iptables=false")
            .arg("--ip6tables=false")
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {DOCKERD}: {e}"))?;
        let mut me = Dockerd {
            child: Some(child),
            docker: Docker {
                host: format!("unix://{}", sock.display()),
            },
            dir: Some(dir),
        };
        let t = Instant::now();
        loop {
            let up = me
                .docker
                .cmd()
                .args(["version", "--format", "{{.Server.Version}}"])
                .output()
                .is_ok_and(|o| o.status.success());
            if up {
                eprintln!("dockerd up in {:.1}s", t.elapsed().as_secs_f64());
                return Ok(me);
            }
            if let Some(Ok(Some(status))) = me.child.as_mut().map(Child::try_wait) {
                return Err(format!("dockerd exited ({status}): {}", me.log_tail()));
            }
            if t.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "no answer within {}s: {}",
                    START_TIMEOUT.as_secs(),
                    me.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log_tail(&self) -> String {
        let Some(dir) = &self.dir else {
            return String::new();
        };
        let log = fs::read_to_string(dir.path().join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM: dockerd stops its containerd and unmounts its layers.
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take() {
            // Leftover overlay mounts would make the removal fail.
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "grep -o ' {d}/[^ ]*' /proc/self/mounts | sort -r | xargs -r -n1 umount -l",
                    d = dir.path().display()
                ))
                .status();
            let _ = fs::remove_dir_all(dir.path());
        }
    }
}

/// The docker CLI (Debian's, with BuildKit) against one daemon.
pub struct Docker {
    pub host: String,
}

impl Docker {
    pub fn cmd(&self) -> Command {
        // Debian's CLI: the one that speaks to a 20.10 daemon with BuildKit.
        let mut c = Command::new(DOCKER);
        c.env("DOCKER_HOST", &self.host).env("DOCKER_BUILDKIT", "1");
        c
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("spawn docker");
        assert_success(&out, &format!("docker {}", args.join(" ")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn take_from_kiln(&self, k: &KilnBuild, name: &str, tmp: &Path) {
        let tar = tmp.join(format!("{}.docker-ref.tar", name.replace(['/', ':'], "_")));
        k.ok(&[
            "save",
            name,
            "-o",
            tar.to_str().unwrap(),
            "--format",
            "docker-archive",
        ]);
        self.ok(&["load", "-i", tar.to_str().unwrap()]);
        let _ = fs::remove_file(&tar);
    }

    pub fn build_case(&self, case: &Case, ctx: &Ctx, work: &Path) -> Result<Built, String> {
        let context = case.dir.join(&case.context);
        let builds = case.builds(ctx, &case.buildkit_flags);
        let mut log = String::new();
        for (tag, df, flags) in builds {
            let out = self
                .cmd()
                .args(["build", "--network", "host", "--progress=plain", "-f"])
                .arg(case.dir.join(&df))
                .args(["-t", &tag])
                .args(&flags)
                .arg(&context)
                .output()
                .unwrap();
            log += &String::from_utf8_lossy(&out.stderr);
            if !out.status.success() {
                return Err(log);
            }
        }
        let dir = work.join(format!("docker-{}", case.name));
        let _ = fs::remove_dir_all(&dir);
        // The image's own layers, unpacked by umoci (as the buildah peer's
        // ONBUILD images are): a container's export would add docker's
        // mount stubs (/etc/hostname, ...) over the image's own files.
        let tar = dir.with_extension("tar");
        let layout = dir.with_extension("oci");
        let bundle = dir.with_extension("bundle");
        for p in [&layout, &bundle] {
            let _ = fs::remove_dir_all(p);
        }
        self.ok(&["save", "-o", tar.to_str().unwrap(), &case.tag()]);
        sh(&format!(
            "skopeo copy -q 'docker-archive:{tar}' 'oci:{layout}:x' && \
             umoci unpack --image '{layout}:x' '{bundle}' >/dev/null && \
             mv '{bundle}/rootfs' '{dir}' && rm -rf '{bundle}' '{layout}' '{tar}'",
            tar = tar.display(),
            layout = layout.display(),
            bundle = bundle.display(),
            dir = dir.display(),
        ));
        let v: Value = serde_json::from_str(&self.ok(&["image", "inspect", &case.tag()])).unwrap();
        let mut image = v[0].clone();
        // docker inspect's names -> config blob names.
        if let Some(o) = image.as_object_mut() {
            if let Some(c) = o.remove("Config") {
                o.insert("config".into(), c);
            }
            for (from, to) in [
                ("Created", "created"),
                ("Author", "author"),
                ("Architecture", "architecture"),
                ("Os", "os"),
            ] {
                if let Some(x) = o.remove(from) {
                    o.insert(to.into(), x);
                }
            }
        }
        Ok(Built::from_listing(tree_listing(&dir), image, &dir))
    }
}
