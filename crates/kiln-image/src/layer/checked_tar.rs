//! A tar someone hands us as a layer (`kiln append --tar`): its bytes are
//! kept exactly (so the same tar gives the same diff ID), but every member
//! is looked at first, in the same pass. A name or hard-link target with a
//! `..` component, or a NUL byte, is refused by name: extraction would
//! contain it, but a layer that says `../etc/passwd` is hostile or broken,
//! and neither belongs in an image.

use std::io::{self, Read, Write};

use super::LayerOptions;
use super::compress::{LayerInfo, LayerWriter};
use super::error::{LayerError, show};

/// Copies everything read into `out` as well.
struct Tee<R, W> {
    inner: R,
    out: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

fn check_name(name: &[u8]) -> Result<(), LayerError> {
    let reason = if name.contains(&0) {
        "name contains a NUL byte"
    } else if name.split(|&b| b == b'/').any(|c| c == b"..") {
        "a `..` component: a layer member must stay inside the image"
    } else {
        return Ok(());
    };
    Err(LayerError::InvalidPath {
        path: show(name),
        reason,
    })
}

/// Writes the uncompressed tar `tar` as one layer blob into `sink`,
/// refusing members whose names (or hard-link targets) leave the root.
pub fn write_tar_layer<R: Read, W: Write>(
    tar: R,
    opts: &LayerOptions,
    sink: W,
) -> Result<(W, LayerInfo), LayerError> {
    let lw = LayerWriter::new(sink, opts.compression, opts.level, opts.threads);
    let mut archive = tar::Archive::new(Tee {
        inner: tar,
        out: lw,
    });
    for entry in archive.entries()? {
        let entry = entry?;
        let name = entry.path_bytes();
        check_name(&name)?;
        if entry.header().entry_type().is_hard_link()
            && let Some(target) = entry.link_name_bytes()
        {
            check_name(&target).map_err(|_| LayerError::Invalid {
                path: show(&name),
                reason: format!("hard link to {:?} leaves the image", show(&target)),
            })?;
        }
    }
    // The end-of-archive blocks and any padding after them are part of the
    // bytes the diff ID is over.
    let mut tee = archive.into_inner();
    io::copy(&mut tee, &mut io::sink())?;
    Ok(tee.out.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Compression;

    fn tar_with(name: &str) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // set_path refuses `..`; a hostile tar does not ask.
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, &b"hi"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn keeps_the_bytes_and_refuses_dotdot_by_name() {
        let opts = LayerOptions {
            compression: Compression::None,
            ..LayerOptions::default()
        };
        let ok = tar_with("app/hello");
        let (out, info) = write_tar_layer(&ok[..], &opts, Vec::new()).unwrap();
        assert_eq!(out, ok);
        assert_eq!(info.diff_id, crate::Digest::sha256_of(&ok));

        let bad = tar_with("app/../../etc/passwd");
        let err = write_tar_layer(&bad[..], &opts, Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("app/../../etc/passwd"), "{err}");
    }
}
