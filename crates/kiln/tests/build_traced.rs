//! Traced isolation on the host, as the unprivileged `kilntest`: what a
//! RUN sees of its files through the tracer's stat answers (the stat
//! family is answered by the tracer at the syscall's entry) must be what
//! it sees in a user namespace: owners set by `chown`, kinds, sizes,
//! modes, link counts, symlinks followed or not, a dangling link, errors,
//! `stat` of an open fd; and `nproc` must not show where the tracer pins
//! a thread. The build_in_pod tests cover traced isolation in a
//! restricted container (layers, escapes, secrets); this one compares the
//! two modes' views line by line.

mod common;

use std::fs;
use std::path::Path;

use common::build::*;
use common::{assert_success, is_root};

/// Every stat form busybox's and the libc's tools make: `stat` and `ls`
/// (newfstatat with and without AT_SYMLINK_NOFOLLOW), `stat -L` through
/// /proc/self/fd (a magic link), and `wc -c <` (fstat of stdin).
const BUSYBOX_VIEW: &str = r#"FROM kiln-test/busybox:1
RUN mkdir -p /t/d && echo hello > /t/f && ln -s f /t/l && ln -s nowhere /t/dangling \
 && ln /t/f /t/hard && chown 5:6 /t/f && chown 7:8 /t/d && chmod 0640 /t/f \
 && cd /t && { \
      stat -c '%n %u %g %s %F %h %a' /t/f f hard; \
      stat -c '%n %u %g %F %h %a' /t/d d /t/l l /t/dangling; \
      stat -L -c '%n %u %g %s %F' /t/l l; \
      stat -L /t/dangling 2>&1 | sed 's/^stat: //'; \
      stat /t/missing 2>&1 | sed 's/^stat: //'; \
      stat -L -c '%u %g %s %F' /proc/self/fd/0 < /t/f; \
      wc -c < /t/f; \
      ls -ln /t | sed 1d | awk '{print $1, $2, $3, $4, $9}'; \
      nproc; \
    } > /view.txt 2>&1
# A directory seen, then replaced by an absolute symlink (removed, or
# renamed away): the tracer must not go on taking it for a directory.
RUN mkdir -p /t/o/e /t/s/e /t/m/e && echo inner > /t/o/e/x \
 && stat -c %F /t/s/e /t/m/e > /relinked.txt && rm -r /t/s && ln -s /t/o /t/s \
 && mv /t/m /t/m2 && ln -s /t/o /t/m && cat /t/s/e/x /t/m/e/x >> /relinked.txt 2>&1; \
 cat /relinked.txt >> /view.txt
"#;

/// coreutils' `stat` (statx) and perl's `stat` of a path and of a file
/// handle (fstat), in the Debian base.
const DEBIAN_VIEW: &str = r#"FROM kiln-test/debian:bookworm
RUN mkdir -p /t/d && echo hello > /t/f && ln -s f /t/l && chown 5:6 /t/f && chown 7:8 /t/d \
 && { stat -c '%n %u %g %s %F %h %a' /t/f /t/d /t/l; stat -L -c '%n %u %g %F' /t/l; \
      perl -e 'my @s = stat("/t/f"); print "$s[4] $s[5] $s[7]\n"; open(my $h, "<", "/t/d/../f") or die; @s = stat($h); print "$s[4] $s[5] $s[7]\n"; @s = lstat("/t/l"); print "$s[4] $s[5]\n"'; \
      nproc; getconf _NPROCESSORS_ONLN; \
    } > /view.txt 2>&1
"#;

fn view(k: &KilnBuild, ctx: &Path, isolation: &[&str], tag: &str, work: &Path) -> String {
    let out = k
        .cmd()
        .args(["build", "--no-cache", "-t", tag])
        .args(isolation)
        .arg(ctx)
        .output()
        .unwrap();
    assert_success(&out, &format!("kiln build {isolation:?}"));
    let dir = work.join(tag.replace([':', '/'], "-"));
    k.rootfs(tag, &dir);
    fs::read_to_string(dir.join("view.txt")).unwrap()
}

fn compare(dockerfile: &str, debian: bool) {
    if !is_root() {
        missing_prerequisite("root (to run kiln as the unprivileged kilntest)");
        return;
    }
    let work = scratch("kiln-traced-");
    let k = KilnBuild::new(&work.path().join("store"), Who::Kilntest);
    let have_debian = import_bases(&k, debian);
    if debian && !have_debian {
        missing_prerequisite("the Debian base (KILN_SKIP_DEBIAN or no debootstrap)");
        return;
    }
    let ctx = work.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    give_to_kilntest(work.path());
    let userns = view(
        &k,
        &ctx,
        &["--isolation", "rootless"],
        "v:userns",
        work.path(),
    );
    let traced = view(
        &k,
        &ctx,
        &["--isolation", "traced", "--snapshotter", "copy"],
        "v:traced",
        work.path(),
    );
    assert!(
        userns.contains("5 6"),
        "chown shows in a user namespace:\n{userns}"
    );
    assert_eq!(traced, userns, "traced vs user namespace");
}

#[test]
fn traced_stat_answers_match_a_user_namespace() {
    compare(BUSYBOX_VIEW, false);
}

#[test]
fn traced_stat_answers_match_a_user_namespace_with_statx_and_fstat() {
    compare(DEBIAN_VIEW, true);
}
