//! On-disk layouts of hub caches that other tools read: where each file of a source goes
//! when the user names no destination.

pub mod hf_cache;
pub mod locks;
pub mod modelscope_cache;

use std::path::Path;

use crate::engine::writer::{hash_file, HashPlan};
use crate::job::Layout;

/// The lock a layout's owner tools take while a file at `rel` (below `dest_dir`) is moved into
/// place and linked: `huggingface_hub`'s per-blob lock for a Hub cache blob (and the cache's
/// `CACHEDIR.TAG`); nothing for other layouts. Blocks while another process holds it.
pub fn install_lock(
    layout: Layout,
    dest_dir: &Path,
    rel: &str,
) -> std::io::Result<Option<locks::CacheLock>> {
    let parts: Vec<&str> = rel.split('/').collect();
    match (layout, parts.as_slice()) {
        (Layout::HfCache, [folder, "blobs", etag]) => {
            locks::tag_cache_dir(dest_dir);
            locks::lock(&locks::blob_lock_path(dest_dir, folder, etag)).map(Some)
        }
        _ => Ok(None),
    }
}

/// True when the file at `path` exists with `size` bytes and, where given, the expected
/// sha256 and git blob sha1 (hashing it). Returns its sha256 when it matches.
pub fn verified_copy(
    path: &Path,
    size: Option<u64>,
    sha256: Option<&str>,
    git_sha1: Option<&str>,
) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || size.is_some_and(|s| s != meta.len()) {
        return None;
    }
    let plan = HashPlan {
        md5: false,
        git_sha1_len: git_sha1.map(|_| meta.len()),
    };
    let digests = hash_file(path, plan).ok()?;
    let matches = |want: Option<&str>, got: Option<&str>| {
        want.is_none_or(|w| got.is_some_and(|g| w.eq_ignore_ascii_case(g)))
    };
    (matches(sha256, Some(&digests.sha256)) && matches(git_sha1, digests.git_sha1.as_deref()))
        .then_some(digests.sha256)
}
