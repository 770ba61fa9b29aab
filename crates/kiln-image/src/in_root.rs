//! `openat2` for a path resolved inside a directory (`RESOLVE_IN_ROOT` or
//! `RESOLVE_BENEATH`), retried when the kernel asks for it. With either
//! flag, a `..` walked while a rename or a mount happened anywhere on the
//! system makes `openat2` fail with `EAGAIN` (the kernel cannot prove the
//! walk stayed inside); the caller is expected to try again. A build with
//! other work renaming files beside it meets this: each caller of
//! `openat2` goes through here rather than failing the build.
//! It does not choose the resolve flags: callers say what confines them.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::path::Arg;

/// Tries before `EAGAIN` is the answer: each retry is one path walk, and
/// renames would have to land inside every one of them.
const TRIES: usize = 128;

/// `openat2(dirfd, path, flags, mode, resolve)`, retried on `EAGAIN`.
pub fn openat2<Fd: AsFd, P: Arg + Copy>(
    dirfd: Fd,
    path: P,
    flags: OFlags,
    mode: Mode,
    resolve: ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    let mut tries = 1;
    loop {
        match rustix::fs::openat2(dirfd.as_fd(), path, flags, mode, resolve) {
            Err(Errno::AGAIN) if tries < TRIES => tries += 1,
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// The failure CI met: `..` walked in a root while renames happen
    /// elsewhere (here a thread renaming a file back and forth).
    #[test]
    fn dotdot_in_a_root_survives_concurrent_renames() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("root/a/b")).unwrap();
        std::fs::write(t.path().join("x"), "x").unwrap();
        let root = rustix::fs::open(
            t.path().join("root"),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let renamer = {
            let (stop, dir) = (stop.clone(), t.path().to_path_buf());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::fs::rename(dir.join("x"), dir.join("y")).unwrap();
                    std::fs::rename(dir.join("y"), dir.join("x")).unwrap();
                }
            })
        };
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        let (mut raw_again, mut failed) = (0, Vec::new());
        for _ in 0..20_000 {
            let p = "a/b/../../a/b/../b";
            if let Err(Errno::AGAIN) =
                rustix::fs::openat2(&root, p, OFlags::PATH, Mode::empty(), resolve)
            {
                raw_again += 1;
            }
            if let Err(e) = openat2(&root, p, OFlags::PATH, Mode::empty(), resolve) {
                failed.push(e);
            }
        }
        stop.store(true, Ordering::Relaxed);
        renamer.join().unwrap();
        eprintln!("plain openat2 said EAGAIN {raw_again} times of 20000");
        assert!(failed.is_empty(), "{failed:?}");
    }
}
