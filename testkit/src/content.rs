//! Test content and the digests the mocks and tests compute over it: the one hashing helper
//! of testkit.

use bytes::Bytes;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Deterministic pseudo-random bytes (xorshift64), fast enough for hundreds
/// of MiB in tests. The same `(len, seed)` always gives the same bytes, and a
/// shorter `len` gives a prefix of a longer one.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Bytes {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    if x == 0 {
        x = 0x2545_F491_4F6C_DD1D;
    }
    const BLOCK: usize = 4096;
    let mut out: Vec<u8> = Vec::with_capacity(len + BLOCK);
    let mut buf = [0u8; BLOCK];
    while out.len() < len {
        let mut j = 0;
        while j < BLOCK {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            buf[j] = b[0];
            buf[j + 1] = b[1];
            buf[j + 2] = b[2];
            buf[j + 3] = b[3];
            buf[j + 4] = b[4];
            buf[j + 5] = b[5];
            buf[j + 6] = b[6];
            buf[j + 7] = b[7];
            j += 8;
        }
        out.extend_from_slice(&buf);
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Lowercase hex MD5 of `data` (S3/OSS-style ETags, which are *not* the sha256).
pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(md5::Md5::digest(data))
}

/// Lowercase hex git blob id of `data`: `sha1("blob " + len + "\0" + data)`.
pub fn git_blob_sha1_hex(data: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", data.len()).as_bytes());
    h.update(data);
    hex::encode(h.finalize())
}

/// Lowercase hex sha1 of `data` (made-up but deterministic ids).
pub(crate) fn sha1_hex(data: &[u8]) -> String {
    hex::encode(Sha1::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_blob_ids() {
        // `git hash-object` of an empty file and of "hello\n".
        assert_eq!(
            git_blob_sha1_hex(b""),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
        assert_eq!(
            git_blob_sha1_hex(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }
}
