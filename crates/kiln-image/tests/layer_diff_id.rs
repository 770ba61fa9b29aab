//! `ExtractOptions::expect_diff_id`: the unpacked stream must hash to the
//! diff ID an image config claims, whatever the compression and however much
//! padding follows the tar's end marker.

#[path = "layer_util.rs"]
mod util;

use std::io::{Cursor, Write};

use kiln_image::Digest;
use kiln_image::layer::{ExtractError, ExtractOptions, extract};
use util::RawTar;

fn layer() -> Vec<u8> {
    let mut tar = RawTar(Vec::new())
        .dir("etc")
        .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
        .end();
    // Padding after the end marker is part of the diff ID.
    tar.extend_from_slice(&[0u8; 8192]);
    tar
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn expecting(d: Digest) -> ExtractOptions {
    ExtractOptions {
        expect_diff_id: Some(d),
        ..ExtractOptions::default()
    }
}

#[test]
fn the_true_diff_id_unpacks_plain_and_gzip() {
    let tar = layer();
    let id = Digest::sha256_of(&tar);
    for blob in [tar.clone(), gzip(&tar)] {
        let dir = tempfile::tempdir().unwrap();
        extract(Cursor::new(blob), dir.path(), &expecting(id.clone())).unwrap();
        assert!(dir.path().join("etc/passwd").is_file());
    }
}

#[test]
fn a_claimed_diff_id_of_other_content_is_refused() {
    let tar = layer();
    let actual = Digest::sha256_of(&tar);
    let claimed = Digest::sha256_of(b"another image's layer");
    for blob in [tar.clone(), gzip(&tar)] {
        let dir = tempfile::tempdir().unwrap();
        let err = extract(Cursor::new(blob), dir.path(), &expecting(claimed.clone())).unwrap_err();
        match &err {
            ExtractError::DiffIdMismatch {
                expected,
                actual: got,
            } => {
                assert_eq!(expected, &claimed);
                assert_eq!(got, &actual);
            }
            other => panic!("expected a diff ID mismatch, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains(&claimed.to_string()), "{text}");
        assert!(text.contains(&actual.to_string()), "{text}");
    }
}

#[test]
fn trailing_bytes_change_the_diff_id() {
    // A blob that appends data after the end marker is another layer.
    let tar = layer();
    let id = Digest::sha256_of(&tar);
    let mut longer = tar.clone();
    longer.extend_from_slice(b"smuggled");
    let dir = tempfile::tempdir().unwrap();
    let err = extract(Cursor::new(longer), dir.path(), &expecting(id)).unwrap_err();
    assert!(matches!(err, ExtractError::DiffIdMismatch { .. }), "{err}");
}
