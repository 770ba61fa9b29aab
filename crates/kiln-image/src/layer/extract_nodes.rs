//! The filesystem side of extraction: creating each kind of node under an
//! already-confined parent fd, whiteouts and opaque markers, and the final
//! pass over directory modes and mtimes. Every call here works on a parent
//! directory fd from `safe_path::Root` and a single final component, never
//! following a symlink for it (see `extract` for the rules).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps, XattrFlags};
use rustix::io::Errno;
use tar::EntryType;

use super::error::show;
use super::extract::{DirMeta, ExtractError, Fail, Meta, State, io_op};
use super::safe_path::{clean_entry_name, is_dir, list_dir, lstat_at, remove_all_at, split_parent};
use super::walk::is_overlay_xattr;

impl State<'_> {
    pub(super) fn make_dir(
        &mut self,
        pfd: &OwnedFd,
        base: &[u8],
        clean: &[u8],
        m: &Meta,
    ) -> Result<(), Fail> {
        if !replace_existing(pfd, base, true)? {
            // Owner-only until the end, when the real mode is set.
            rustix::fs::mkdirat(pfd, base, Mode::from_raw_mode(0o700)).map_err(io_op("mkdir"))?;
        }
        let dfd = rustix::fs::openat(
            pfd,
            base,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_op("opening the directory"))?;
        self.chown_fd(&dfd, m)?;
        self.set_xattrs_fd(&dfd, clean, m);
        let st = rustix::fs::fstat(&dfd).map_err(io_op("stat"))?;
        self.dirs.insert(
            clean.to_vec(),
            DirMeta {
                mode: m.mode,
                mtime: m.mtime,
                dev: st.st_dev,
                ino: st.st_ino,
            },
        );
        Ok(())
    }

    pub(super) fn make_file<R: Read>(
        &mut self,
        pfd: &OwnedFd,
        base: &[u8],
        ent: &mut tar::Entry<'_, R>,
        size: u64,
        m: &Meta,
    ) -> Result<(), Fail> {
        replace_existing(pfd, base, false)?;
        let fd = rustix::fs::openat(
            pfd,
            base,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(io_op("creating the file"))?;
        let mut f = File::from(fd);
        let mut copied = 0u64;
        loop {
            let n = match ent.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(Fail::Io("reading entry data", e)),
            };
            f.write_all(&self.buf[..n]).map_err(io_op("writing"))?;
            copied += n as u64;
        }
        if copied != size {
            return Err(Fail::Truncated(format!(
                "header claims {size} bytes, archive has {copied}"
            )));
        }
        self.report.bytes += size;
        self.chown_fd(&f, m)?;
        rustix::fs::fchmod(&f, Mode::from_raw_mode(m.mode)).map_err(io_op("chmod"))?;
        // After chown/chmod, which clear security.capability.
        let name = ent.path_bytes().into_owned();
        self.set_xattrs_fd(&f, &name, m);
        let ts = Timestamps {
            last_access: m.mtime,
            last_modification: m.mtime,
        };
        rustix::fs::futimens(&f, &ts).map_err(io_op("setting mtime"))?;
        Ok(())
    }

    pub(super) fn make_hardlink<R: Read>(
        &mut self,
        pfd: &OwnedFd,
        base: &[u8],
        clean: &[u8],
        ent: &mut tar::Entry<'_, R>,
    ) -> Result<(), Fail> {
        let raw = ent
            .link_name_bytes()
            .map(|c| c.into_owned())
            .unwrap_or_default();
        let target = clean_entry_name(&raw)
            .map_err(|r| Fail::Reject(format!("hard link target {:?}: {r}", show(&raw))))?;
        if target.is_empty() || target == clean {
            return Err(Fail::Reject("hard link to the root or to itself".into()));
        }
        let (tparent, tbase) = split_parent(&target);
        let tfd = self
            .root
            .open_dir(tparent, true)
            .map_err(io_op("opening the hard link target's directory"))?;
        match lstat_at(&tfd, tbase).map_err(io_op("hard link target"))? {
            None => {
                return Err(Fail::Reject(format!(
                    "hard link target {:?} does not exist",
                    show(&target)
                )));
            }
            Some(st) if is_dir(&st) => {
                return Err(Fail::Reject("hard link to a directory".into()));
            }
            Some(_) => {}
        }
        replace_existing(pfd, base, false)?;
        // Flags 0: a symlink target is linked itself, never followed.
        rustix::fs::linkat(&tfd, tbase, pfd, base, AtFlags::empty()).map_err(io_op("link"))?;
        Ok(())
    }

    pub(super) fn make_node<R: Read>(
        &mut self,
        pfd: &OwnedFd,
        base: &[u8],
        clean: &[u8],
        ent: &mut tar::Entry<'_, R>,
        m: &Meta,
    ) -> Result<(), Fail> {
        let h = ent.header();
        let ty = h.entry_type();
        let (kind, dev) = match ty {
            EntryType::Fifo => (FileType::Fifo, 0),
            _ => {
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                let kind = if ty == EntryType::Char {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                (kind, rustix::fs::makedev(major, minor))
            }
        };
        if kind != FileType::Fifo && self.opts.skip_devices {
            self.warn(clean, "device node skipped (unprivileged)".into());
            return Ok(());
        }
        replace_existing(pfd, base, false)?;
        match rustix::fs::mknodat(pfd, base, kind, Mode::from_raw_mode(m.mode), dev) {
            Ok(()) => {}
            Err(Errno::PERM) if kind != FileType::Fifo => {
                self.warn(clean, "device node skipped: mknod not permitted".into());
                return Ok(());
            }
            Err(e) => return Err(Fail::Io("mknod", e.into())),
        }
        self.finish_node(pfd, base, m, true)
    }

    /// Owner, mode, xattrs and mtime of a node that has no fd of its own
    /// (symlink, device, fifo), all without following a symlink.
    pub(super) fn finish_node(
        &mut self,
        pfd: &OwnedFd,
        base: &[u8],
        m: &Meta,
        chmod: bool,
    ) -> Result<(), Fail> {
        if self.opts.chown {
            let (u, g) = ids(m)?;
            rustix::fs::chownat(pfd, base, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| chown_fail("lchown", e, m))?;
        }
        if chmod {
            // chmodat follows symlinks; the node was just made by mknodat
            // and checked not to be one.
            let st = lstat_at(pfd, base).map_err(io_op("stat"))?;
            if let Some(st) = st
                && st.st_mode & libc::S_IFMT != libc::S_IFLNK
                && st.st_mode & 0o7777 != m.mode
            {
                rustix::fs::chmodat(pfd, base, Mode::from_raw_mode(m.mode), AtFlags::empty())
                    .map_err(io_op("chmod"))?;
            }
        }
        if self.opts.xattrs && !m.xattrs.is_empty() {
            let mut path = format!("/proc/self/fd/{}/", pfd.as_raw_fd()).into_bytes();
            path.extend_from_slice(base);
            for (k, v) in &m.xattrs {
                if is_overlay_xattr(k.as_bytes()) {
                    continue;
                }
                if let Err(e) = rustix::fs::lsetxattr(&path[..], k.as_str(), v, XattrFlags::empty())
                {
                    self.warn(base, format!("xattr {k} not set: {e}"));
                }
            }
        }
        let ts = Timestamps {
            last_access: m.mtime,
            last_modification: m.mtime,
        };
        rustix::fs::utimensat(pfd, base, &ts, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io_op("setting mtime"))?;
        Ok(())
    }

    pub(super) fn chown_fd(&self, fd: impl AsFd, m: &Meta) -> Result<(), Fail> {
        if self.opts.chown {
            let (u, g) = ids(m)?;
            rustix::fs::fchown(fd, Some(u), Some(g)).map_err(|e| chown_fail("chown", e, m))?;
        } else if (m.uid, m.gid) != (0, 0) {
            // Unprivileged without a user namespace: the owner is recorded
            // where kiln-sandbox's traced isolation shows it and the copy
            // snapshotter's differ finds it (see `OWNER_XATTR`). Best
            // effort: a filesystem without user xattrs shows root.
            let v = format!("{}:{}", m.uid, m.gid);
            let _ =
                rustix::fs::fsetxattr(fd, super::OWNER_XATTR, v.as_bytes(), XattrFlags::empty());
        }
        Ok(())
    }

    pub(super) fn set_xattrs_fd(&mut self, fd: impl AsFd, entry: &[u8], m: &Meta) {
        if !self.opts.xattrs {
            return;
        }
        for (k, v) in &m.xattrs {
            if is_overlay_xattr(k.as_bytes()) {
                self.warn(entry, format!("overlayfs xattr {k} in a layer, ignored"));
                continue;
            }
            if let Err(e) = rustix::fs::fsetxattr(&fd, k.as_str(), v, XattrFlags::empty()) {
                self.warn(entry, format!("xattr {k} not set: {e}"));
            }
        }
    }

    pub(super) fn whiteout(&mut self, parent: &[u8], victim: &[u8]) -> Result<(), Fail> {
        let mut vpath = parent.to_vec();
        if !vpath.is_empty() {
            vpath.push(b'/');
        }
        vpath.extend_from_slice(victim);
        if self.layer_paths.contains(&vpath) {
            return Ok(()); // whiteouts only hide lower layers
        }
        if self.opts.overlay_whiteouts.is_some() {
            self.mark(&vpath);
            let (pfd, _) = self
                .root
                .ensure_dir(parent)
                .map_err(io_op("opening the parent directory"))?;
            replace_existing(&pfd, victim, false)?;
            rustix::fs::mknodat(&pfd, victim, FileType::CharacterDevice, Mode::empty(), 0)
                .map_err(io_op("creating the overlay whiteout"))?;
            return Ok(());
        }
        let pfd = match self.root.open_dir(parent, true) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                return Ok(()); // nothing there to delete
            }
            Err(e) => return Err(Fail::Io("opening the parent directory", e)),
        };
        remove_all_at(&pfd, victim).map_err(io_op("applying the whiteout"))
    }

    pub(super) fn opaque(&mut self, dir: &[u8]) -> Result<(), Fail> {
        if let Some(fmt) = self.opts.overlay_whiteouts {
            if !dir.is_empty() {
                self.mark(dir);
            }
            let (fd, _) = self
                .root
                .ensure_dir(dir)
                .map_err(io_op("opening the opaque directory"))?;
            rustix::fs::fsetxattr(&fd, fmt.opaque_xattr(), b"y", XattrFlags::empty())
                .map_err(io_op("setting the opaque xattr"))?;
            return Ok(());
        }
        let fd = match self.root.open_dir(dir, true) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                return Ok(());
            }
            Err(e) => return Err(Fail::Io("opening the opaque directory", e)),
        };
        self.clear_lower(&fd, dir)
            .map_err(io_op("applying the opaque whiteout"))
    }

    /// Removes everything under `fd` that this layer did not create.
    pub(super) fn clear_lower(&self, fd: &OwnedFd, path: &[u8]) -> io::Result<()> {
        for name in list_dir(fd)? {
            let mut child = path.to_vec();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(&name);
            if !self.layer_paths.contains(&child) {
                remove_all_at(fd, &name)?;
            } else if lstat_at(fd, &name)?.is_some_and(|st| is_dir(&st)) {
                let sub = rustix::fs::openat(
                    fd,
                    &name[..],
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                self.clear_lower(&sub, &child)?;
            }
        }
        Ok(())
    }

    /// Directory modes and mtimes, deepest first, after all contents.
    pub(super) fn finish_dirs(&mut self) -> Result<(), ExtractError> {
        let mut dirs: Vec<_> = self.dirs.drain().collect();
        dirs.sort_by(|a, b| {
            let depth = |p: &[u8]| p.iter().filter(|&&c| c == b'/').count();
            depth(&b.0).cmp(&depth(&a.0)).then_with(|| a.0.cmp(&b.0))
        });
        for (path, d) in dirs {
            let fd = match self.root.open_dir(&path, false) {
                Ok(fd) => fd,
                // Replaced later in the layer by a non-directory or removed.
                Err(_) => continue,
            };
            let named = |op, e: Errno| Fail::Io(op, e.into()).named(&show(&path));
            let st = rustix::fs::fstat(&fd).map_err(|e| named("stat", e))?;
            if st.st_dev != d.dev || st.st_ino != d.ino {
                continue; // not the directory this entry made
            }
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(d.mode)).map_err(|e| named("chmod", e))?;
            let ts = Timestamps {
                last_access: d.mtime,
                last_modification: d.mtime,
            };
            rustix::fs::futimens(&fd, &ts).map_err(|e| named("setting mtime", e))?;
        }
        Ok(())
    }
}

pub(super) fn ids(m: &Meta) -> Result<(rustix::fs::Uid, rustix::fs::Gid), Fail> {
    let u = u32::try_from(m.uid).map_err(|_| Fail::Reject(format!("uid {} too large", m.uid)))?;
    let g = u32::try_from(m.gid).map_err(|_| Fail::Reject(format!("gid {} too large", m.gid)))?;
    Ok((rustix::fs::Uid::from_raw(u), rustix::fs::Gid::from_raw(g)))
}

/// A failed chown, said plainly when the owner is one this process cannot
/// give: EINVAL from chown means the uid or gid has no mapping in the
/// caller's user namespace, which for an unprivileged kiln holds only the
/// IDs of its /etc/subuid and /etc/subgid ranges.
fn chown_fail(op: &'static str, e: Errno, m: &Meta) -> Fail {
    if e != Errno::INVAL {
        return Fail::Io(op, e.into());
    }
    Fail::Io(
        op,
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "owner {}:{} is not mapped in this user namespace (an unprivileged \
                 kiln has only the IDs of its /etc/subuid and /etc/subgid ranges)",
                m.uid, m.gid
            ),
        ),
    )
}

/// Clears the way for a new entry at `name`: returns true when an existing
/// directory is kept (directory over directory), otherwise removes what is
/// there (recursively for a directory).
pub(super) fn replace_existing(pfd: &OwnedFd, name: &[u8], new_is_dir: bool) -> Result<bool, Fail> {
    match lstat_at(pfd, name).map_err(io_op("stat"))? {
        None => Ok(false),
        Some(st) if is_dir(&st) && new_is_dir => Ok(true),
        Some(_) => {
            remove_all_at(pfd, name).map_err(io_op("replacing the existing path"))?;
            Ok(false)
        }
    }
}
