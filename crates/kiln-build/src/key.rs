//! Cache keys: content addresses of ops. A key hashes the op's definition
//! and the content it reads (the layers below it by diff ID, the context
//! files by digest), never the path it took to get there, so a step whose
//! inputs are unchanged hits even after an earlier step missed.

use kiln_image::{Digest, Hasher};

/// Builds one key from named, length-prefixed fields, so that no two
/// different field lists can hash alike.
pub struct KeyHasher(Hasher);

impl KeyHasher {
    pub fn new(kind: &str) -> KeyHasher {
        let mut k = KeyHasher(Hasher::sha256());
        k.field("kiln-cache-v1", kind.as_bytes());
        k
    }

    pub fn field(&mut self, name: &str, value: &[u8]) -> &mut Self {
        for part in [name.as_bytes(), value] {
            self.0.update(&(part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
        self
    }

    pub fn str(&mut self, name: &str, value: &str) -> &mut Self {
        self.field(name, value.as_bytes())
    }

    pub fn json<T: serde::Serialize>(&mut self, name: &str, value: &T) -> &mut Self {
        // Key values are strings, numbers, lists and options of them, which
        // always serialize; an empty field instead would be a wrong hit.
        let bytes = kiln_image::canonical::to_vec(value).expect("key values serialize");
        self.field(name, &bytes)
    }

    pub fn finish(self) -> Digest {
        self.0.finish()
    }
}

/// The content address of a filesystem: its layers' diff IDs in order.
pub fn fs_key(diff_ids: &[Digest]) -> Digest {
    let mut k = KeyHasher::new("fs");
    for d in diff_ids {
        k.str("layer", &d.to_string());
    }
    k.finish()
}
