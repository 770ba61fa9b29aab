//! `InRelease`: the suite's signed index. Its OpenPGP cleartext signature
//! is verified against a keyring (Debian's archive keyring by default)
//! before anything in it is believed; after that, its `SHA256` list is what
//! every `Packages` index is checked against.
//!
//! A signature by a key in the keyring that does not verify is refused
//! (as apt does); signatures by other keys are ignored when one good
//! signature by a known key is there; none at all is "unknown key".
//! Key expiry and revocation are not checked (the keyring is trusted as
//! given). A `Valid-Until` in the past is refused, as apt's
//! `Check-Valid-Until` does (a mirror replaying an old, validly signed
//! index to hold back security fixes), unless the caller opts out (an
//! archive snapshot is expired by design): see [`check_valid_until`].

use std::collections::BTreeMap;
use std::path::Path;

use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey};
use pgp::types::KeyDetails;

use crate::DebianError;
use crate::control::{self, Paragraph};

/// A verified `InRelease`.
#[derive(Debug, Clone)]
pub struct Release {
    /// The signed text (what the signature covers), with `\n` line ends.
    pub fields: Paragraph,
    /// path → (sha256 hex, size), from the signed `SHA256` field.
    pub sha256: BTreeMap<String, (String, u64)>,
    /// The SHA-256 of the whole `InRelease` file as fetched.
    pub file_sha256: String,
    /// The fingerprint of the key whose signature verified.
    pub signer: String,
}

/// The keys of a keyring file: binary (`.gpg`) or ASCII-armored (`.asc`).
pub fn load_keyring(path: &Path) -> Result<Vec<SignedPublicKey>, DebianError> {
    let bytes = std::fs::read(path)
        .map_err(|e| DebianError::Invalid(format!("keyring {}: {e}", path.display())))?;
    let bad = |e: pgp::errors::Error| {
        DebianError::Invalid(format!(
            "keyring {}: not an OpenPGP keyring: {e}",
            path.display()
        ))
    };
    let keys: Vec<SignedPublicKey> = if bytes.starts_with(b"-----BEGIN") {
        let (it, _) = SignedPublicKey::from_armor_many(&bytes[..]).map_err(bad)?;
        // A key this library cannot read (an old algorithm) is skipped:
        // it cannot have signed what we verify.
        it.filter_map(Result::ok).collect()
    } else {
        SignedPublicKey::from_bytes_many(&bytes[..])
            .map_err(bad)?
            .filter_map(Result::ok)
            .collect()
    };
    if keys.is_empty() {
        return Err(DebianError::Invalid(format!(
            "keyring {}: holds no keys",
            path.display()
        )));
    }
    Ok(keys)
}

/// Verifies `bytes` (an `InRelease` file fetched from `url`) and parses the
/// signed part. `suite` must be its `Codename` or `Suite`, so a mirror
/// cannot hand over another suite's (validly signed) index.
pub fn verify(
    bytes: &[u8],
    url: &str,
    suite: &str,
    keys: &[SignedPublicKey],
) -> Result<Release, DebianError> {
    let sig_err = |msg: String| DebianError::Signature(format!("{url}: {msg}"));
    let text = std::str::from_utf8(bytes).map_err(|_| sig_err("not UTF-8 text".into()))?;
    let (msg, _) = CleartextSignedMessage::from_string(text)
        .map_err(|e| sig_err(format!("not an OpenPGP signed message: {e}")))?;
    let signed = msg.signed_text();
    let mut good = None;
    let mut unknown = Vec::new();
    for sig in msg.signatures() {
        let issuers_fp: Vec<String> = sig
            .issuer_fingerprint()
            .iter()
            .map(|f| format!("{f:X}"))
            .collect();
        let issuers_id: Vec<String> = sig.issuer_key_id().iter().map(|k| k.to_string()).collect();
        let mut matched = false;
        for key in keys {
            let primary = (
                format!("{:X}", key.fingerprint()),
                key.legacy_key_id().to_string(),
            );
            let candidates =
                std::iter::once((primary, None)).chain(key.public_subkeys.iter().map(|s| {
                    (
                        (
                            format!("{:X}", s.fingerprint()),
                            s.legacy_key_id().to_string(),
                        ),
                        Some(s),
                    )
                }));
            for ((fp, id), sub) in candidates {
                if !issuers_fp.contains(&fp) && !issuers_id.contains(&id) {
                    continue;
                }
                matched = true;
                let ok = match sub {
                    None => sig.verify(key, signed.as_bytes()),
                    Some(s) => sig.verify(s, signed.as_bytes()),
                };
                if let Err(e) = ok {
                    return Err(sig_err(format!(
                        "BAD signature by key {fp}: {e} (the file was altered, or not signed by that key)"
                    )));
                }
                good.get_or_insert(fp);
            }
        }
        if !matched {
            unknown.extend(issuers_fp.into_iter().chain(issuers_id).take(1));
        }
    }
    let Some(signer) = good else {
        return Err(sig_err(if unknown.is_empty() {
            "no signature".into()
        } else {
            format!(
                "signed only by unknown key(s) {}: not in the keyring",
                unknown.join(", ")
            )
        }));
    };
    let signed = signed.replace("\r\n", "\n");
    let fields = control::parse(&signed)
        .map_err(|e| DebianError::Invalid(format!("{url}: {e}")))?
        .into_iter()
        .next()
        .ok_or_else(|| DebianError::Invalid(format!("{url}: empty Release")))?;
    let names = [fields.get("Codename"), fields.get("Suite")];
    if !names.contains(&Some(suite)) {
        return Err(DebianError::Invalid(format!(
            "{url}: is for suite {:?} (codename {:?}), not {suite:?}",
            names[1].unwrap_or(""),
            names[0].unwrap_or("")
        )));
    }
    let sha256 = control::hash_list(fields.get("SHA256").unwrap_or(""));
    Ok(Release {
        fields,
        sha256,
        file_sha256: crate::sha256_hex(bytes),
        signer,
    })
}

/// Refuses a Release whose `Valid-Until` is before `now` (epoch seconds).
/// A Release without the field has no expiry (Debian's stable suites
/// set none; security and snapshot suites do).
pub fn check_valid_until(fields: &Paragraph, url: &str, now: i64) -> Result<(), DebianError> {
    let Some(v) = fields.get("Valid-Until") else {
        return Ok(());
    };
    let until = parse_release_date(v)
        .ok_or_else(|| DebianError::Invalid(format!("{url}: Valid-Until {v:?} is not a date")))?;
    if until < now {
        return Err(DebianError::Invalid(format!(
            "{url}: expired: Valid-Until {v} is in the past (now {}): the mirror serves a stale or replayed index; \
             for an archive snapshot set `check_valid_until = false` in [debian]",
            kiln_image::time::rfc3339(now)
        )));
    }
    Ok(())
}

/// A Release date (`Sat, 09 Dec 2023 08:12:34 UTC`, RFC 2822 style;
/// `UTC`, `GMT`, `Z` or `+0000`) as epoch seconds.
pub fn parse_release_date(s: &str) -> Option<i64> {
    let s = s.trim();
    let s = s.split_once(", ").map_or(s, |(_, rest)| rest);
    let w: Vec<&str> = s.split_whitespace().collect();
    let [day, month, year, time, zone] = w[..] else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = MONTHS.iter().position(|x| *x == month)? + 1;
    let offset = match zone {
        "UTC" | "GMT" | "Z" | "+0000" | "-0000" => "Z".to_string(),
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            format!("{}:{}", &z[..3], &z[3..])
        }
        _ => return None,
    };
    let day: u32 = day.parse().ok()?;
    let year: u32 = year.parse().ok()?;
    kiln_image::time::parse_rfc3339(&format!("{year:04}-{m:02}-{day:02}T{time}{offset}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text: &str) -> Paragraph {
        control::parse(text).unwrap().remove(0)
    }

    #[test]
    fn release_dates() {
        assert_eq!(
            parse_release_date("Sat, 09 Dec 2023 08:12:34 UTC"),
            Some(1_702_109_554)
        );
        assert_eq!(
            parse_release_date("Sat, 09 Dec 2023 09:12:34 +0100"),
            Some(1_702_109_554)
        );
        assert_eq!(
            parse_release_date("09 Dec 2023 08:12:34 GMT"),
            Some(1_702_109_554)
        );
        for bad in [
            "yesterday",
            "Sat, 09 Foo 2023 08:12:34 UTC",
            "Sat, 09 Dec 2023 08:12 UTC",
        ] {
            assert_eq!(parse_release_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_expired_release_is_refused_unless_it_has_no_expiry() {
        let f = fields("Codename: bookworm\nValid-Until: Sat, 09 Dec 2023 08:12:34 UTC\n");
        let before = 1_702_109_554 - 60;
        assert!(check_valid_until(&f, "u", before).is_ok());
        let err = check_valid_until(&f, "http://m/InRelease", before + 3600)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expired") && err.contains("check_valid_until = false"),
            "{err}"
        );
        assert!(err.contains("http://m/InRelease"), "{err}");
        let none = fields("Codename: bookworm\n");
        assert!(check_valid_until(&none, "u", i64::MAX).is_ok());
        let garbage = fields("Valid-Until: soon\n");
        assert!(
            check_valid_until(&garbage, "u", 0)
                .unwrap_err()
                .to_string()
                .contains("not a date")
        );
    }
}
