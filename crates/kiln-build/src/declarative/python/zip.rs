//! A small ZIP reader for wheels: the central directory, stored and
//! deflated members, CRC-32 checked. Wheels come from the user's
//! directory and are hostile like any input: a member name with `..`, an
//! absolute or backslashed name, a symlink member, a duplicate name, a
//! size that does not match what inflates, or ZIP64/encryption (which no
//! wheel needs) is refused with the member named.

use std::collections::BTreeSet;
use std::io::Read;

/// One file of an archive (directories are left out: a wheel's files
/// imply them).
#[derive(Debug, Clone)]
pub struct Member {
    /// The name as stored, checked to be a clean relative path.
    pub name: String,
    pub data: Vec<u8>,
    /// Unix permission bits when the archive was made on Unix.
    pub unix_mode: Option<u32>,
}

/// One archive's members together may not inflate past this: a zip bomb
/// is refused, not written into a layer.
pub const MAX_TOTAL: u64 = 2 << 30;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Every file member of the ZIP archive `bytes`.
pub fn read(bytes: &[u8]) -> Result<Vec<Member>, String> {
    let short = || "truncated archive".to_string();
    // The end-of-central-directory record: the last "PK\5\6" within the
    // final 64 KiB + 22 bytes (its comment may hold up to 64 KiB).
    let from = bytes.len().saturating_sub(22 + 65535);
    let eocd = (from..bytes.len().saturating_sub(21))
        .rev()
        .find(|&i| bytes[i..].starts_with(b"PK\x05\x06"))
        .ok_or("not a ZIP archive (no end of central directory)")?;
    let count = u16_at(bytes, eocd + 10).ok_or_else(short)? as usize;
    let cd_size = u32_at(bytes, eocd + 12).ok_or_else(short)? as usize;
    let cd_off = u32_at(bytes, eocd + 16).ok_or_else(short)? as usize;
    if count == 0xffff || cd_off == 0xffff_ffff {
        return Err("ZIP64 archives are not supported".into());
    }
    if cd_off.checked_add(cd_size).is_none_or(|end| end > eocd) {
        return Err("central directory lies outside the archive".into());
    }
    let mut members = Vec::new();
    let mut names = BTreeSet::new();
    let mut total: u64 = 0;
    let mut at = cd_off;
    for _ in 0..count {
        if u32_at(bytes, at) != Some(0x0201_4b50) {
            return Err("corrupt central directory".into());
        }
        let made_by = u16_at(bytes, at + 4).ok_or_else(short)?;
        let flags = u16_at(bytes, at + 8).ok_or_else(short)?;
        let method = u16_at(bytes, at + 10).ok_or_else(short)?;
        let crc = u32_at(bytes, at + 16).ok_or_else(short)?;
        let csize = u32_at(bytes, at + 20).ok_or_else(short)? as usize;
        let usize_ = u32_at(bytes, at + 24).ok_or_else(short)?;
        let name_len = u16_at(bytes, at + 28).ok_or_else(short)? as usize;
        let extra_len = u16_at(bytes, at + 30).ok_or_else(short)? as usize;
        let comment_len = u16_at(bytes, at + 32).ok_or_else(short)? as usize;
        let external = u32_at(bytes, at + 38).ok_or_else(short)?;
        let local = u32_at(bytes, at + 42).ok_or_else(short)? as usize;
        let raw_name = bytes.get(at + 46..at + 46 + name_len).ok_or_else(short)?;
        at += 46 + name_len + extra_len + comment_len;
        let name = std::str::from_utf8(raw_name)
            .map_err(|_| format!("member name {raw_name:?} is not UTF-8"))?
            .to_string();
        let bad = |why: &str| format!("member {name:?}: {why}");
        let unix_mode = (made_by >> 8 == 3).then_some(external >> 16);
        if unix_mode.is_some_and(|m| m & 0o170000 == 0o120000) {
            return Err(bad("symlinks are not allowed in a wheel"));
        }
        check_name(&name).map_err(bad)?;
        if name.ends_with('/') {
            continue;
        }
        if flags & 1 != 0 {
            return Err(bad("encrypted"));
        }
        if !names.insert(name.clone()) {
            return Err(bad("appears twice"));
        }
        total += u64::from(usize_);
        if total > MAX_TOTAL {
            return Err(format!("inflates to more than {MAX_TOTAL} bytes; refused"));
        }
        // The local header repeats name and extra (their lengths may
        // differ from the central copy); the data follows it.
        if u32_at(bytes, local) != Some(0x0403_4b50) {
            return Err(bad("no local header where the directory says"));
        }
        let lname = u16_at(bytes, local + 26).ok_or_else(short)? as usize;
        let lextra = u16_at(bytes, local + 28).ok_or_else(short)? as usize;
        let start = local + 30 + lname + lextra;
        let raw = bytes
            .get(start..start.checked_add(csize).ok_or_else(short)?)
            .ok_or_else(|| bad("data runs past the end of the archive"))?;
        let mut data = Vec::with_capacity(usize_ as usize);
        match method {
            0 => data.extend_from_slice(raw),
            8 => {
                flate2::read::DeflateDecoder::new(raw)
                    .take(u64::from(usize_) + 1)
                    .read_to_end(&mut data)
                    .map_err(|e| bad(&format!("does not inflate: {e}")))?;
            }
            m => return Err(bad(&format!("compression method {m} is not supported"))),
        }
        if data.len() as u64 != u64::from(usize_) {
            return Err(bad(&format!(
                "holds {} bytes, the directory says {usize_}",
                data.len()
            )));
        }
        let mut h = flate2::Crc::new();
        h.update(&data);
        if h.sum() != crc {
            return Err(bad("CRC-32 mismatch"));
        }
        members.push(Member {
            name,
            data,
            unix_mode,
        });
    }
    Ok(members)
}

/// A member name must be a plain relative path: no leading `/`, no `..`
/// or `.` or empty components, no backslash (Windows' separator, which
/// would turn into a name with `\` here but a path elsewhere), no NUL.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.starts_with('/') {
        return Err("absolute or empty name");
    }
    if name.contains('\\') || name.contains('\0') || name.contains(':') {
        return Err("name has a backslash, NUL or drive colon");
    }
    let body = name.strip_suffix('/').unwrap_or(name);
    if body
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("name has an empty, `.` or `..` component");
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ZIP of `(name, data, unix mode)` members, deflated or stored:
    /// written by hand, so tests can make archives no zip tool would.
    pub fn make(members: &[(&str, &[u8], u32)], deflate: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut cd = Vec::new();
        for (name, data, mode) in members {
            let mut h = flate2::Crc::new();
            h.update(data);
            let body = if deflate {
                let mut e =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
                std::io::Write::write_all(&mut e, data).unwrap();
                e.finish().unwrap()
            } else {
                data.to_vec()
            };
            let method: u16 = if deflate { 8 } else { 0 };
            let off = out.len() as u32;
            let common = |v: &mut Vec<u8>| {
                v.extend_from_slice(&20u16.to_le_bytes());
                v.extend_from_slice(&0u16.to_le_bytes());
                v.extend_from_slice(&method.to_le_bytes());
                v.extend_from_slice(&[0; 4]);
                v.extend_from_slice(&h.sum().to_le_bytes());
                v.extend_from_slice(&(body.len() as u32).to_le_bytes());
                v.extend_from_slice(&(data.len() as u32).to_le_bytes());
                v.extend_from_slice(&(name.len() as u16).to_le_bytes());
                v.extend_from_slice(&0u16.to_le_bytes());
            };
            out.extend_from_slice(b"PK\x03\x04");
            common(&mut out);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&body);
            cd.extend_from_slice(b"PK\x01\x02");
            cd.extend_from_slice(&(0x0300u16 | 20).to_le_bytes());
            common(&mut cd);
            cd.extend_from_slice(&[0; 6]);
            cd.extend_from_slice(&(mode << 16).to_le_bytes());
            cd.extend_from_slice(&off.to_le_bytes());
            cd.extend_from_slice(name.as_bytes());
        }
        let cd_off = out.len() as u32;
        out.extend_from_slice(&cd);
        out.extend_from_slice(b"PK\x05\x06");
        out.extend_from_slice(&[0; 4]);
        let n = (members.len() as u16).to_le_bytes();
        out.extend_from_slice(&n);
        out.extend_from_slice(&n);
        out.extend_from_slice(&(cd.len() as u32).to_le_bytes());
        out.extend_from_slice(&cd_off.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    #[test]
    fn reads_stored_and_deflated_members() {
        for deflate in [false, true] {
            let z = make(
                &[("a/b.py", b"x = 1\n", 0o100644), ("run", b"#!", 0o100755)],
                deflate,
            );
            let m = read(&z).unwrap();
            assert_eq!(m[0].name, "a/b.py");
            assert_eq!(m[0].data, b"x = 1\n");
            assert_eq!(m[1].unix_mode, Some(0o100755));
        }
    }

    #[test]
    fn hostile_archives_are_refused() {
        for (name, mode, want) in [
            ("../evil.py", 0o100644, "`..`"),
            ("a/../../evil.py", 0o100644, "`..`"),
            ("/etc/passwd", 0o100644, "absolute"),
            ("a\\..\\evil", 0o100644, "backslash"),
            ("link", 0o120777, "symlinks"),
        ] {
            let err = read(&make(&[(name, b"/etc", mode)], true)).unwrap_err();
            assert!(err.contains(want), "{name}: {err}");
        }
        let err = read(&make(&[("a", b"1", 0o644), ("a", b"2", 0o644)], false)).unwrap_err();
        assert!(err.contains("twice"), "{err}");
        // A member whose bytes were altered after the CRC was written.
        let mut z = make(&[("a.py", b"print(1)", 0o644)], false);
        let at = z.windows(8).position(|w| w == b"print(1)").unwrap();
        z[at + 6] = b'2';
        assert!(read(&z).unwrap_err().contains("CRC"));
        assert!(read(b"not a zip").unwrap_err().contains("not a ZIP"));
        // Truncated: the directory points past the end.
        let z = make(&[("a.py", b"print(1)", 0o644)], false);
        assert!(read(&z[10..]).is_err());
    }
}
