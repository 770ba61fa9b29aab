//! Canonical JSON for every document kiln writes: object keys sorted, no
//! insignificant white space. The same value always gives the same bytes and
//! therefore the same digest.
//!
//! Going through `serde_json::Value` (whose map is a `BTreeMap` without the
//! `preserve_order` feature) sorts keys even for types that hold `HashMap`s.

use serde::Serialize;

use crate::Digest;

/// Serializes `value` canonically.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let v = serde_json::to_value(value)?;
    serde_json::to_vec(&v)
}

/// Canonical bytes and their sha256 digest.
pub fn to_vec_with_digest<T: Serialize>(value: &T) -> Result<(Vec<u8>, Digest), serde_json::Error> {
    let bytes = to_vec(value)?;
    let digest = Digest::sha256_of(&bytes);
    Ok((bytes, digest))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    #[test]
    fn keys_are_sorted_whatever_the_map() {
        let mut m = HashMap::new();
        for k in ["zeta", "alpha", "mu", "beta", "omega"] {
            m.insert(k.to_string(), 1);
        }
        let out = String::from_utf8(super::to_vec(&m).unwrap()).unwrap();
        assert_eq!(out, r#"{"alpha":1,"beta":1,"mu":1,"omega":1,"zeta":1}"#);
    }
}
