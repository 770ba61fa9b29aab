//! Acceptance tests of kiln-sandbox: real namespaces and mounts, each run as
//! the caller and as the unprivileged `kilntest` (see `common`).

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::time::Instant;

use common::*;

both!(identity_and_status, |env: &Env| {
    let root = env.busybox_rootfs("root");
    let o = env.run_in(&root, &[], &["id"]);
    assert!(o.status.success());
    assert!(
        stdout(&o).starts_with("uid=0(root) gid=0(root)"),
        "{}",
        stdout(&o)
    );

    let o = env.run_in(&root, &["--user", "app"], &["id"]);
    let s = stdout(&o);
    assert!(s.contains("uid=1000(app) gid=1000(app)"), "{s}");
    assert!(
        s.contains("2000(extra)"),
        "supplementary group missing: {s}"
    );

    let o = env.run_in(&root, &["--user", "1000:2000"], &["id", "-g"]);
    assert_eq!(stdout(&o).trim(), "2000");

    let o = env.run_in(
        &root,
        &["--hostname", "kilnbox"],
        &["sh", "-c", "cat /etc/hostname; hostname"],
    );
    assert_eq!(stdout(&o), "kilnbox\nkilnbox\n");

    let o = env.run_in(&root, &[], &["sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3));
    let o = env.run_in(&root, &[], &["sh", "-c", "kill -9 $$"]);
    assert_eq!(o.status.code(), Some(128 + 9));
    let o = env.run_in(&root, &[], &["sh", "-c", "kill -TERM $$"]);
    assert_eq!(o.status.code(), Some(128 + 15));

    // stdin: inherited, or /dev/null on request.
    let o = env.run_in(&root, &[], &["sh", "-c", "cat; echo end"]);
    assert_eq!(stdout(&o), "end\n", "Output() gives the child a null stdin");
    let o = env.run_in(
        &root,
        &["--null-stdin"],
        &["sh", "-c", "ls -l /proc/self/fd/0"],
    );
    assert!(stdout(&o).contains("/dev/null"), "{}", stdout(&o));

    // Device nodes: the provided ones work; a node made with mknod (Docker's
    // CAP_MKNOD) cannot be opened, here or in /dev (all nodev).
    let o = env.run_in(
        &root,
        &[],
        &[
            "sh",
            "-c",
            "echo x > /dev/null && head -c1 /dev/zero | wc -c; \
             mknod /tmp/n c 1 3 && ls /tmp/n >/dev/null && echo made; \
             cat /tmp/n 2>/dev/null || echo refused; \
             mknod /dev/n2 c 1 3 && (cat /dev/n2 2>/dev/null || echo refused)",
        ],
    );
    let s = stdout(&o);
    assert!(s.starts_with("1\n"), "{s}");
    assert_eq!(
        s.matches("refused").count(),
        if s.contains("made") { 2 } else { 1 },
        "{s}"
    );

    // PID 1 is our init; the command is its child.
    let o = env.run_in(&root, &[], &["sh", "-c", "echo $$; echo $PPID"]);
    assert_eq!(stdout(&o), "2\n1\n");

    // Working directory is created inside the root; env is passed.
    let o = env.run_in(
        &root,
        &["--cwd", "/work/dir", "--env", "FOO=bar"],
        &["sh", "-c", "pwd; echo $FOO; umask"],
    );
    assert_eq!(stdout(&o), "/work/dir\nbar\n0022\n");
    assert!(root.join("work/dir").is_dir());

    // exec failure is an error of the runner, not a silent 127.
    let o = env.run_in(&root, &[], &["/no/such/binary"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&o.stderr).contains("No such file"));

    // Capabilities: Docker's default set for root, nothing for app.
    let o = env.run_in(
        &root,
        &[],
        &["sh", "-c", "grep -E '^Cap(Eff|Bnd|Inh)' /proc/self/status"],
    );
    let s = stdout(&o);
    assert!(s.contains("CapInh:\t0000000000000000"), "{s}");
    assert!(s.contains("CapEff:\t00000000a80425fb"), "{s}");
    assert!(s.contains("CapBnd:\t00000000a80425fb"), "{s}");
    let o = env.run_in(
        &root,
        &["--user", "app"],
        &["grep", "CapEff", "/proc/self/status"],
    );
    assert!(stdout(&o).contains("0000000000000000"));
});

both!(overlay_upper_gets_changes, |env: &Env| {
    let base = env.busybox_rootfs("lower1");
    let l2 = env.path("lower2");
    std::fs::create_dir_all(l2.join("data")).unwrap();
    std::fs::create_dir_all(l2.join("olddir")).unwrap();
    std::fs::write(l2.join("data/keep"), "keep").unwrap();
    std::fs::write(l2.join("data/del"), "del").unwrap();
    std::fs::write(l2.join("olddir/a"), "a").unwrap();
    env.give(&l2);
    let upper = env.mkdir("upper");
    let work = env.mkdir("work");
    let (l2s, bases, us, ws) = (
        l2.to_str().unwrap(),
        base.to_str().unwrap(),
        upper.to_str().unwrap(),
        work.to_str().unwrap(),
    );
    let o = env.run(&[
        "--lower",
        l2s,
        "--lower",
        bases,
        "--upper",
        us,
        "--work",
        ws,
        "--",
        "sh",
        "-c",
        "set -e; rm /data/del; echo new > /data/new; rm -rf /olddir; mkdir /olddir; \
         echo b > /olddir/b; echo 10.0.0.1 x >> /etc/hosts; echo nameserver 10.0.0.2 > /etc/resolv.conf; \
         ls /proc/1 >/dev/null; cat /data/keep",
    ]);
    assert!(o.status.success());
    assert_eq!(stdout(&o), "keep");

    assert_eq!(
        std::fs::read_to_string(upper.join("data/new")).unwrap(),
        "new\n"
    );
    let wh = std::fs::symlink_metadata(upper.join("data/del")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout expected"
    );
    let mut buf = [0u8; 8];
    let n = rustix::fs::lgetxattr(upper.join("olddir"), kiln_sandbox::OPAQUE_XATTR, &mut buf)
        .expect("opaque xattr on the replaced dir");
    assert_eq!(&buf[..n], b"y");
    assert!(!upper.join("olddir/a").exists());

    // Lowers untouched.
    assert_eq!(std::fs::read_to_string(l2.join("data/del")).unwrap(), "del");
    assert!(l2.join("olddir/a").exists() && !l2.join("data/new").exists());
    // The sandbox's own mount points never reach the upper dir.
    for p in [
        "etc/hosts",
        "etc/resolv.conf",
        "etc/hostname",
        "proc",
        "dev",
        "sys",
    ] {
        assert!(!upper.join(p).exists(), "{p} leaked into the upper dir");
    }
    // The host's own files were never exposed, only copies.
    assert!(
        !std::fs::read_to_string("/etc/hosts")
            .unwrap()
            .contains("10.0.0.1 x")
    );
    assert!(
        !std::fs::read_to_string("/etc/resolv.conf")
            .unwrap_or_default()
            .contains("10.0.0.2")
    );
    // And nothing stays mounted on the host.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(env.dir.path().to_str().unwrap()));
});

both!(no_fd_leaks_and_proc_self_fd_cwd, |env: &Env| {
    let root = env.busybox_rootfs("root");
    let canary = env.path("host-canary-dir");
    std::fs::create_dir(&canary).unwrap();
    std::fs::write(canary.join("HOST_CANARY_FILE"), "x").unwrap();
    env.give(&canary);

    // Leak a non-CLOEXEC fd of a host directory into sandbox_run as fd 7.
    let dirfd = std::fs::File::open(&canary).unwrap();
    let run_with_fd7 = |args: &[&str]| {
        use std::os::fd::AsRawFd;
        let raw = dirfd.as_raw_fd();
        let mut cmd = match env.who {
            Who::Caller => std::process::Command::new(&env.bin),
            Who::Kilntest => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", TEST_USER, "--"]).arg(&env.bin);
                c
            }
        };
        cmd.args(args).current_dir("/");
        // SAFETY: dup2 in the child before exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, 7) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.output().unwrap()
    };
    let r = root.to_str().unwrap();
    let o = run_with_fd7(&["--rootfs", r, "--", "ls", "/proc/self/fd"]);
    assert_eq!(stdout(&o), "0\n1\n2\n3\n", "only stdio (+ ls's own dir fd)");

    for n in 3..20 {
        let cwd = format!("/proc/self/fd/{n}");
        let o = run_with_fd7(&[
            "--rootfs",
            r,
            "--cwd",
            &cwd,
            "--",
            "sh",
            "-c",
            "pwd; ls; ls ..; ls ../..",
        ]);
        let s = stdout(&o);
        assert!(
            !s.contains("HOST_CANARY_FILE"),
            "fd {n} reached the host: {s}"
        );
        assert!(!s.contains("kiln-sbx-test"), "fd {n} reached the host: {s}");
    }
    assert!(canary.join("HOST_CANARY_FILE").exists());
});

both!(mount_targets_stay_inside, |env: &Env| {
    let root = env.busybox_rootfs("root");
    let victim = env.path("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("canary"), "untouched").unwrap();
    env.give(&victim);
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("file"), "from-src").unwrap();
    env.give(&src);
    // Image symlinks pointing at the root and at a host path.
    std::os::unix::fs::symlink("/", root.join("mnt")).unwrap();
    std::os::unix::fs::symlink(&victim, root.join("escape")).unwrap();
    env.give(&root);

    let s = src.to_str().unwrap();
    let o = env.run_in(
        &root,
        &[
            "--bind",
            &format!("{s}:/mnt/x:ro"),
            "--bind",
            &format!("{s}:/escape/y"),
            "--tmpfs",
            "/../../../tmpfs-here",
            "--cache",
            &format!("{}:/cache", env.mkdir("cache").to_str().unwrap()),
        ],
        &[
            "sh",
            "-c",
            "cat /x/file; cat /mnt/x/file; echo w > /escape/y/written; cat /escape/y/file; \
             ls -d /tmpfs-here; echo c > /cache/c; echo ro > /x/file || echo ro-refused",
        ],
    );
    assert!(o.status.success());
    assert_eq!(
        stdout(&o),
        "from-srcfrom-srcfrom-src/tmpfs-here\nro-refused\n"
    );
    // Nothing landed on the host: not in the victim dir, not at the host's /x.
    assert!(
        !victim.join("y").exists(),
        "mount point created on the host"
    );
    assert_eq!(
        std::fs::read_to_string(victim.join("canary")).unwrap(),
        "untouched"
    );
    assert!(!std::path::Path::new("/x").exists());
    assert!(!std::path::Path::new("/tmpfs-here").exists());
    // rw bind: writes discarded; the source is unchanged.
    assert!(!src.join("written").exists());
    assert_eq!(
        std::fs::read_to_string(src.join("file")).unwrap(),
        "from-src"
    );
    // cache: writes persist.
    assert_eq!(std::fs::read_to_string(env.path("cache/c")).unwrap(), "c\n");
    // The created mount points live inside the rootfs (for Dir: the dir).
    assert!(root.join("x").is_dir());
    assert!(
        root.join(victim.strip_prefix("/").unwrap())
            .join("y")
            .is_dir()
    );

    // A process that swaps a parent of a mount point for a symlink to the
    // host before the sandbox ends: no cleanup touches the host.
    let o = env.run_in(
        &root,
        &["--bind", &format!("{s}:/deep/mp")],
        &[
            "sh",
            "-c",
            &format!(
                "mv /deep /deep.old 2>/dev/null || rm -rf /deep 2>/dev/null; \
                      ln -sfn {} /deep; ls /deep.old/mp >/dev/null 2>&1; true",
                victim.display()
            ),
        ],
    );
    assert!(o.status.success());
    assert_eq!(
        std::fs::read_to_string(victim.join("canary")).unwrap(),
        "untouched"
    );
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 1);
    assert_eq!(
        std::fs::read_to_string(src.join("file")).unwrap(),
        "from-src"
    );
});

both!(network_none_has_only_lo, |env: &Env| {
    let root = env.busybox_rootfs("root");
    let o = env.run_in(&root, &["--network", "none"], &["cat", "/proc/net/dev"]);
    let s = stdout(&o);
    let ifaces: Vec<&str> = s
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "{s}");
    let o = env.run_in(&root, &["--network", "none"], &["ip", "link", "show", "lo"]);
    assert!(stdout(&o).contains(",UP"), "lo is not up: {}", stdout(&o));
    let o = env.run_in(
        &root,
        &["--network", "none"],
        &["ping", "-c1", "-W1", "127.0.0.1"],
    );
    assert!(o.status.success(), "loopback unusable");
});

both!(chroot_isolation_runs_true, |env: &Env| {
    let root = env.busybox_rootfs("root");
    let o = env.run_in(&root, &["--isolation", "chroot"], &["true"]);
    assert!(o.status.success());
    let o = env.run_in(
        &root,
        &["--isolation", "chroot"],
        &["sh", "-c", "id -u; ls /etc/passwd"],
    );
    assert_eq!(stdout(&o), "0\n/etc/passwd\n");
});

both!(timing_of_true, |env: &Env| {
    let root = env.busybox_rootfs("root");
    let (upper, work) = (env.mkdir("u"), env.mkdir("w"));
    let r = root.to_str().unwrap();
    let n = 10;
    let start = Instant::now();
    for _ in 0..n {
        let o = env.run(&[
            "--lower",
            r,
            "--upper",
            upper.to_str().unwrap(),
            "--work",
            work.to_str().unwrap(),
            "--",
            "true",
        ]);
        assert!(o.status.success());
    }
    let per = start.elapsed().as_secs_f64() * 1000.0 / n as f64;
    report_timing(&format!(
        "TIMING [{:?}] kiln-sandbox `true` on an overlay rootfs, end to end: {per:.1} ms",
        env.who
    ));
    if let Some(b) = (env.who == Who::Caller)
        .then(|| buildah_true_ms(&root))
        .flatten()
    {
        report_timing(&format!(
            "TIMING buildah run `true` (same rootfs): {b:.1} ms; kiln/buildah = {:.2} (target <= 0.3)",
            per / b
        ));
    }
});

/// Spawn sandbox_run as `who` in its own process group, without waiting.
fn spawn_bg(env: &Env, args: &[&str]) -> std::process::Child {
    let mut cmd = match env.who {
        Who::Caller => std::process::Command::new(&env.bin),
        Who::Kilntest => {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", TEST_USER, "--"]).arg(&env.bin);
            c
        }
    };
    cmd.args(args)
        .current_dir("/")
        .env("TMPDIR", env.dir.path())
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The outermost sandbox_run: the child itself, or runuser's child.
fn kiln_pid(env: &Env, child: &std::process::Child) -> i32 {
    let pid = child.id() as i32;
    if env.who == Who::Caller {
        return pid;
    }
    for _ in 0..100 {
        let kids =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(k) = kids.split_whitespace().next() {
            return k.parse().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("runuser has no child");
}

fn procs_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            // Only the command itself, not the sandbox_run whose argv names it.
            if c.starts_with("sleep ") && c.contains(marker) {
                found.push(format!("{}: {c}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

fn wait_gone(marker: &str) {
    for _ in 0..100 {
        if procs_with(marker).is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("left behind: {:?}", procs_with(marker));
}

fn wait_started(marker: &str) {
    for _ in 0..250 {
        if !procs_with(marker).is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("{marker} never started");
}

both!(signals_forwarded_and_nothing_left_behind, |env: &Env| {
    let root = env.busybox_rootfs("root");
    let r = root.to_str().unwrap();

    // SIGTERM sent to kiln reaches the command, which handles it.
    let child = spawn_bg(
        env,
        &[
            "--rootfs",
            r,
            "--",
            "sh",
            "-c",
            "trap 'echo got-term; exit 7' TERM; sleep 1234.25 & wait",
        ],
    );
    wait_started("1234.25");
    let kp = kiln_pid(env, &child);
    // SAFETY: signalling a child we spawned.
    unsafe { libc::kill(kp, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(stdout(&o), "got-term\n");
    assert_eq!(o.status.code(), Some(7));
    wait_gone("1234.25");

    // Ctrl-C (SIGINT to the whole foreground process group).
    let mut child = spawn_bg(env, &["--rootfs", r, "--", "sleep", "1234.5"]);
    wait_started("1234.5");
    // SAFETY: the group was created by process_group(0) above.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) };
    let st = child.wait().unwrap();
    assert!(!st.success());
    wait_gone("1234.5");

    // SIGKILL of kiln itself: init and the command die with it.
    let mut child = spawn_bg(env, &["--rootfs", r, "--", "sleep", "1234.75"]);
    wait_started("1234.75");
    let kp = kiln_pid(env, &child);
    // SAFETY: as above.
    unsafe { libc::kill(kp, libc::SIGKILL) };
    let _ = child.wait();
    wait_gone("1234.75");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(env.dir.path().to_str().unwrap()));
});

/// `buildah run true` on a scratch container holding `root`, when buildah is
/// installed and we are root; for comparison only (printed, not asserted).
fn buildah_true_ms(root: &std::path::Path) -> Option<f64> {
    if !is_root() {
        return None;
    }
    let out = std::process::Command::new("buildah")
        .args(["from", "scratch"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let ctr = stdout(&out).trim().lines().last()?.to_string();
    let ok = std::process::Command::new("buildah")
        .args(["copy", "--quiet", &ctr])
        .arg(root)
        .arg("/")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut result = None;
    if ok {
        let n = 3;
        let start = Instant::now();
        let all_ok = (0..n).all(|_| {
            std::process::Command::new("buildah")
                .args(["run", &ctr, "true"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        if all_ok {
            result = Some(start.elapsed().as_secs_f64() * 1000.0 / n as f64);
        }
    }
    let _ = std::process::Command::new("buildah")
        .args(["rm", &ctr])
        .output();
    result
}

both!(long_lower_stack, |env: &Env| {
    // More lowers than fit in a 4 KiB mount(2) option string: needs the new
    // mount API's `lowerdir+`.
    let base = env.busybox_rootfs("base");
    let long = "l".repeat(120);
    let mut args: Vec<String> = Vec::new();
    for i in (0..60).rev() {
        let d = env.path(&format!("{long}{i:03}"));
        std::fs::create_dir_all(d.join("layers")).unwrap();
        std::fs::write(d.join(format!("layers/{i:03}")), "").unwrap();
        std::fs::write(d.join("layers/top"), format!("{i}")).unwrap();
        env.give(&d);
        args.extend(["--lower".into(), d.to_str().unwrap().into()]);
    }
    args.extend(["--lower".into(), base.to_str().unwrap().into()]);
    let (u, w) = (env.mkdir("u"), env.mkdir("w"));
    args.extend(["--upper".into(), u.to_str().unwrap().into()]);
    args.extend(["--work".into(), w.to_str().unwrap().into()]);
    args.extend(["--", "sh", "-c", "ls /layers | wc -l; cat /layers/top"].map(String::from));
    let total: usize = args.iter().map(String::len).sum();
    assert!(total > 4096);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = env.run(&a);
    assert!(o.status.success());
    // 60 numbered files + top; the topmost lower (59) wins for `top`.
    assert_eq!(stdout(&o), "61\n59");
});

/// A root without CAP_SYS_ADMIN (like a default Kubernetes pod) cannot
/// create namespaces: `auto` says so and falls back to chroot.
#[test]
fn auto_falls_back_to_chroot_without_namespaces() {
    if !is_root() {
        missing_prerequisite("dropping CAP_SYS_ADMIN with setpriv needs root");
        return;
    }
    let env = Env::new(Who::Caller).unwrap();
    let root = env.busybox_rootfs("root");
    // No namespaces, so no private network: a clear error, never the host's
    // network in its place.
    let o = std::process::Command::new("setpriv")
        .args(["--bounding-set", "-sys_admin", "--"])
        .arg(&env.bin)
        .args(["--rootfs", root.to_str().unwrap(), "--", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains("--network=host"), "{err}");
    // The host's network, asked for, works in chroot isolation.
    let o = std::process::Command::new("setpriv")
        .args(["--bounding-set", "-sys_admin", "--"])
        .arg(&env.bin)
        .args([
            "--network",
            "host",
            "--rootfs",
            root.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "id -u",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(stdout(&o), "0\n");
    assert!(err.contains("falling back to chroot"), "{err}");

    // An overlay rootfs needs a mount namespace: a clear error, no crash.
    let (u, w) = (env.mkdir("u"), env.mkdir("w"));
    let o = std::process::Command::new("setpriv")
        .args(["--bounding-set", "-sys_admin", "--"])
        .arg(&env.bin)
        .args([
            "--network",
            "host",
            "--lower",
            root.to_str().unwrap(),
            "--upper",
            u.to_str().unwrap(),
        ])
        .args(["--work", w.to_str().unwrap(), "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs a mount namespace"));
}

/// Timing lines go straight to fd 2, past libtest's output capture, so CI
/// logs show them without --nocapture.
fn report_timing(line: &str) {
    let line = format!("{line}\n");
    // SAFETY: writing a valid buffer to stderr.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}
