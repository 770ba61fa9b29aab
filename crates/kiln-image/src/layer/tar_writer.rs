//! A deterministic tar writer: ustar headers plus PAX extended headers, and
//! nothing that depends on the machine, the user or the clock.
//!
//! What goes into a header: name, mode (`& 0o7777`, setuid/setgid/sticky
//! kept), uid, gid, size, mtime (clamped to `SOURCE_DATE_EPOCH` when given;
//! negative mtimes become 0), type, link name and device numbers. uname and
//! gname are empty, atime/ctime are never written, no GNU extensions are used
//! (no base-256 numbers, no `L`/`K` long-name members), and names are not
//! split into the ustar prefix field: a name or link name that is longer than
//! 100 bytes or not ASCII, a size of 8 GiB or more, a uid/gid above 2097151
//! and an mtime that does not fit 11 octal digits go into a PAX `x` header
//! placed just before the entry. Extended attributes become
//! `SCHILY.xattr.<name>` records, sorted by name. PAX headers are all named
//! `././@PaxHeader` with mode 0644, owner 0 and mtime 0.
//!
//! The writer streams: file contents are copied through a fixed buffer. It
//! does not sort (see [`super::sort_entries`]) and does not compress.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;

use tar::{EntryType, Header};

use super::entry::{Entry, EntryKind, FileSource, path_bytes};
use super::error::{LayerError, show};

const BLOCK: usize = 512;
/// Largest value of an 11-digit octal field (size, mtime): 8 GiB - 1.
const MAX_OCTAL_11: u64 = 0o77777777777;
/// Largest value of a 7-digit octal field (uid, gid, devices).
const MAX_OCTAL_7: u64 = 0o7777777;
const COPY_BUF: usize = 128 * 1024;

/// Writes tar members to `W`. Call [`TarWriter::finish`] to write the two
/// zero blocks that end the archive.
pub struct TarWriter<W: Write> {
    out: W,
    source_date_epoch: Option<i64>,
    buf: Vec<u8>,
}

/// One PAX record: `"<len> <key>=<value>\n"`, where `len` counts the whole
/// record including its own digits.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut rec = Vec::with_capacity(len);
    rec.extend_from_slice(len.to_string().as_bytes());
    rec.push(b' ');
    rec.extend_from_slice(key.as_bytes());
    rec.push(b'=');
    rec.extend_from_slice(value);
    rec.push(b'\n');
    rec
}

fn fits_ustar_text(bytes: &[u8], max: usize) -> bool {
    bytes.len() <= max && bytes.iter().all(|&b| b.is_ascii() && b != 0)
}

/// The bytes that go into a fixed ustar text field when the real value is in
/// a PAX record: an ASCII-only prefix, so old readers see something sane.
fn ustar_fallback(bytes: &[u8], max: usize) -> Vec<u8> {
    bytes
        .iter()
        .take(max)
        .map(|&b| if b.is_ascii() && b != 0 { b } else { b'_' })
        .collect()
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W, source_date_epoch: Option<i64>) -> Self {
        TarWriter {
            out,
            source_date_epoch,
            buf: Vec::new(),
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Writes one entry (its PAX header if needed, its header and its
    /// content). `Reader` sources are consumed.
    pub fn append(&mut self, entry: &mut Entry) -> Result<(), LayerError> {
        let name = entry.tar_name()?;
        let mut pax: Vec<u8> = Vec::new();
        let mut h = Header::new_ustar();

        if fits_ustar_text(&name, 100) {
            h.as_old_mut().name[..name.len()].copy_from_slice(&name);
        } else {
            let fb = ustar_fallback(&name, 100);
            h.as_old_mut().name[..fb.len()].copy_from_slice(&fb);
            pax.extend(pax_record("path", &name));
        }

        let (ty, size, link): (EntryType, u64, Option<&[u8]>) = match &entry.kind {
            EntryKind::File { size, .. } => (EntryType::Regular, *size, None),
            EntryKind::Dir => (EntryType::Directory, 0, None),
            EntryKind::Symlink { target } => (EntryType::Symlink, 0, Some(path_bytes(target))),
            EntryKind::Hardlink { target } => (EntryType::Link, 0, Some(path_bytes(target))),
            EntryKind::CharDevice { .. } => (EntryType::Char, 0, None),
            EntryKind::BlockDevice { .. } => (EntryType::Block, 0, None),
            EntryKind::Fifo => (EntryType::Fifo, 0, None),
            EntryKind::Whiteout | EntryKind::OpaqueWhiteout => (EntryType::Regular, 0, None),
        };
        h.set_entry_type(ty);

        if let Some(link) = link {
            let link = if let EntryKind::Hardlink { .. } = entry.kind {
                // Hard link targets are layer paths, validated like names.
                super::entry::validate_path(link)?
            } else {
                link
            };
            if link.is_empty() || link.contains(&0) {
                return Err(LayerError::Invalid {
                    path: show(&name),
                    reason: "link target is empty or contains NUL".into(),
                });
            }
            if fits_ustar_text(link, 100) {
                h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
            } else {
                let fb = ustar_fallback(link, 100);
                h.as_old_mut().linkname[..fb.len()].copy_from_slice(&fb);
                pax.extend(pax_record("linkpath", link));
            }
        }

        h.set_mode(entry.mode & 0o7777);
        for (key, val, set) in [
            ("uid", entry.uid, Header::set_uid as fn(&mut Header, u64)),
            ("gid", entry.gid, Header::set_gid),
        ] {
            if val <= MAX_OCTAL_7 {
                set(&mut h, val);
            } else {
                set(&mut h, 0);
                pax.extend(pax_record(key, val.to_string().as_bytes()));
            }
        }
        if size <= MAX_OCTAL_11 {
            h.set_size(size);
        } else {
            h.set_size(0);
            pax.extend(pax_record("size", size.to_string().as_bytes()));
        }
        let mut mtime = entry.mtime.max(0);
        if let Some(sde) = self.source_date_epoch {
            mtime = mtime.min(sde.max(0));
        }
        let mtime = mtime as u64;
        if mtime <= MAX_OCTAL_11 {
            h.set_mtime(mtime);
        } else {
            h.set_mtime(0);
            pax.extend(pax_record("mtime", mtime.to_string().as_bytes()));
        }
        if let EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } =
            entry.kind
        {
            if u64::from(major) > MAX_OCTAL_7 || u64::from(minor) > MAX_OCTAL_7 {
                return Err(LayerError::Invalid {
                    path: show(&name),
                    reason: format!("device {major}:{minor} does not fit a ustar header"),
                });
            }
            h.set_device_major(major)
                .map_err(|e| LayerError::io(&name, e))?;
            h.set_device_minor(minor)
                .map_err(|e| LayerError::io(&name, e))?;
        }
        for (k, v) in &entry.xattrs {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(LayerError::Invalid {
                    path: show(&name),
                    reason: format!("xattr name {k:?} cannot be written"),
                });
            }
            pax.extend(pax_record(&format!("SCHILY.xattr.{k}"), v));
        }

        if !pax.is_empty() {
            self.write_pax_header(&pax)?;
        }
        h.set_cksum();
        self.out.write_all(h.as_bytes())?;

        if let EntryKind::File { source, size } = &mut entry.kind {
            self.write_content(&name, source, *size)?;
        }
        Ok(())
    }

    fn write_pax_header(&mut self, records: &[u8]) -> Result<(), LayerError> {
        let mut h = Header::new_ustar();
        let name = b"././@PaxHeader";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(EntryType::XHeader);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(records.len() as u64);
        h.set_cksum();
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(records)?;
        self.pad(records.len() as u64)?;
        Ok(())
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    fn write_content(
        &mut self,
        name: &[u8],
        source: &mut FileSource,
        size: u64,
    ) -> Result<(), LayerError> {
        match source {
            FileSource::Bytes(b) => {
                if b.len() as u64 != size {
                    return Err(LayerError::Invalid {
                        path: show(name),
                        reason: format!("size {size} but {} bytes given", b.len()),
                    });
                }
                self.out.write_all(b)?;
            }
            FileSource::Reader(r) => {
                self.copy_exact(name, r, size, &show(name))?;
            }
            FileSource::Host(host) => {
                // O_NOFOLLOW: a file swapped for a symlink after the walk
                // must not pull in content from elsewhere.
                let mut f = File::options()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&*host)
                    .map_err(|e| LayerError::io(path_bytes(host), e))?;
                let shown = host.display().to_string();
                self.copy_exact(name, &mut f, size, &shown)?;
            }
        }
        self.pad(size)?;
        Ok(())
    }

    /// Copies exactly `size` bytes; a source that ends early or has more is
    /// an error, since the header already promised `size`.
    fn copy_exact(
        &mut self,
        name: &[u8],
        r: &mut dyn Read,
        size: u64,
        shown: &str,
    ) -> Result<(), LayerError> {
        if self.buf.len() != COPY_BUF {
            self.buf = vec![0; COPY_BUF];
        }
        let mut left = size;
        while left > 0 {
            let want = left.min(COPY_BUF as u64) as usize;
            let n = match r.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(LayerError::Changed {
                        path: shown.to_string(),
                        reason: format!("{} bytes short of {size}", left),
                    });
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LayerError::io(name, e)),
            };
            self.out.write_all(&self.buf[..n])?;
            left -= n as u64;
        }
        let mut probe = [0u8; 1];
        loop {
            match r.read(&mut probe) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    return Err(LayerError::Changed {
                        path: shown.to_string(),
                        reason: format!("longer than {size} bytes"),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LayerError::io(name, e)),
            }
        }
    }

    /// Writes the end-of-archive marker (two zero blocks) and returns the
    /// inner writer. No padding to a 10 KiB record: nothing needs it.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(entry: Entry) -> Vec<u8> {
        let mut e = entry;
        let mut w = TarWriter::new(Vec::new(), None);
        w.append(&mut e).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn pax_record_lengths() {
        assert_eq!(pax_record("path", b"a"), b"9 path=a\n");
        // Around the 99 -> 100 digit boundary.
        for n in 85..100 {
            let r = pax_record("path", &vec![b'x'; n]);
            let sp = r.iter().position(|&b| b == b' ').unwrap();
            assert_eq!(r.len().to_string().as_bytes(), &r[..sp], "n={n}");
        }
    }

    #[test]
    fn large_values_go_to_pax() {
        let e = Entry::new(
            "big",
            EntryKind::File {
                source: FileSource::Bytes(Vec::new()),
                size: 9 << 30,
            },
            0o4755,
        )
        .with_owner(3_000_000, 100_000)
        .with_mtime(1 << 40);
        let mut w = TarWriter::new(Vec::new(), None);
        let mut e = e;
        // The header is written before the (short) content fails.
        let err = w.append(&mut e).unwrap_err();
        assert!(matches!(err, LayerError::Invalid { .. }), "{err}");
        let out = w.out;
        let text = String::from_utf8_lossy(&out[512..1024]);
        assert!(text.contains("size=9663676416\n"), "{text}");
        assert!(text.contains("uid=3000000\n"));
        assert!(text.contains("mtime=1099511627776\n"));
        assert!(!text.contains("gid="), "100000 fits octal");
        let h = Header::from_byte_slice(&out[1024..1536]);
        assert_eq!(h.size().unwrap(), 0);
        assert_eq!(h.mode().unwrap(), 0o4755);
        assert_eq!(h.gid().unwrap(), 100_000);
        // Read back through the tar crate: the PAX size wins.
        let mut ar = tar::Archive::new(&out[..]);
        let ent = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(ent.size(), 9 << 30);
    }

    #[test]
    fn long_and_non_ascii_names() {
        let long = "d/".repeat(150) + "f";
        let out = one(Entry::file_bytes(long.clone(), "hi").with_xattr("user.k", "v"));
        let mut ar = tar::Archive::new(&out[..]);
        let mut ent = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(&*ent.path_bytes(), long.as_bytes());
        let exts: Vec<_> = ent
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|e| e.unwrap().key().unwrap().to_string())
            .collect();
        assert_eq!(exts, ["path", "SCHILY.xattr.user.k"]);
        let out = one(Entry::symlink("é", "ü".repeat(60)));
        let mut ar = tar::Archive::new(&out[..]);
        let ent = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(&*ent.path_bytes(), "é".as_bytes());
        assert_eq!(&*ent.link_name_bytes().unwrap(), "ü".repeat(60).as_bytes());
    }

    #[test]
    fn clamps_mtime_and_ends_dirs_with_slash() {
        let mut e = Entry::dir("a").with_mtime(2_000_000_000);
        let mut w = TarWriter::new(Vec::new(), Some(1_000));
        w.append(&mut e).unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len(), 3 * 512);
        let h = Header::from_byte_slice(&out[..512]);
        assert_eq!(h.mtime().unwrap(), 1_000);
        assert_eq!(&*h.path_bytes(), b"a/");
        assert_eq!(h.username_bytes(), Some(&b""[..]));
    }
}
