//! On-disk layouts of hub caches that other tools read: where each file of a source goes
//! when the user names no destination.

pub mod hf_cache;
pub mod modelscope_cache;

use std::path::Path;

/// True when the file at `path` exists with `size` bytes and, where given, the expected
/// sha256 and git blob sha1 (hashing it). Returns its sha256 when it matches.
pub fn verified_copy(
    path: &Path,
    size: Option<u64>,
    sha256: Option<&str>,
    git_sha1: Option<&str>,
) -> Option<String> {
    use sha1::Digest as _;
    use std::io::Read as _;
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || size.is_some_and(|s| s != meta.len()) {
        return None;
    }
    let mut file = std::fs::File::open(path).ok()?;
    let mut sha = sha2::Sha256::new();
    let mut git = sha1::Sha1::new();
    git.update(format!("blob {}\0", meta.len()).as_bytes());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        if git_sha1.is_some() {
            git.update(&buf[..n]);
        }
    }
    let sha_hex = hex::encode(sha.finalize());
    if sha256.is_some_and(|want| !want.eq_ignore_ascii_case(&sha_hex)) {
        return None;
    }
    if let Some(want) = git_sha1 {
        if !want.eq_ignore_ascii_case(&hex::encode(git.finalize())) {
            return None;
        }
    }
    Some(sha_hex)
}
