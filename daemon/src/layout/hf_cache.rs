//! The Hugging Face hub cache (`huggingface_hub`'s layout, spec §8.1):
//!
//! ```text
//! <cache>/models--ORG--NAME/blobs/<etag>                 (sha256 for LFS files, git sha1 otherwise)
//! <cache>/models--ORG--NAME/snapshots/<commit>/<path>    (relative symlink to ../../blobs/<etag>)
//! <cache>/models--ORG--NAME/refs/<revision>              (the commit, no newline)
//! ```
//!
//! Datasets and spaces use `datasets--` and `spaces--` folders.

use std::path::{Path, PathBuf};

/// The cache root: `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`. `env` looks a variable
/// up (the job's forwarded environment first, then the daemon's).
pub fn cache_root(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(dir) = env("HF_HUB_CACHE").or_else(|| env("HUGGINGFACE_HUB_CACHE")) {
        return expand_home(&dir);
    }
    hf_home(&env).join("hub")
}

/// `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
pub fn hf_home(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(dir) = env("HF_HOME") {
        return expand_home(&dir);
    }
    if let Some(dir) = env("XDG_CACHE_HOME") {
        return expand_home(&dir).join("huggingface");
    }
    crate::settings::home_dir().join(".cache/huggingface")
}

fn expand_home(dir: &str) -> PathBuf {
    match dir.strip_prefix("~/") {
        Some(rest) => crate::settings::home_dir().join(rest),
        None => PathBuf::from(dir),
    }
}

/// The repo folder: `{type}s--` + repo id with `/` → `--` (e.g. `models--acme--tiny`).
pub fn repo_folder(api_plural: &str, repo_id: &str) -> String {
    format!("{api_plural}--{}", repo_id.replace('/', "--"))
}

/// `FOLDER/blobs/ETAG`, relative to the cache root.
pub fn blob_rel(folder: &str, etag: &str) -> String {
    format!("{folder}/blobs/{etag}")
}

/// `FOLDER/snapshots/COMMIT/PATH`, relative to the cache root.
pub fn snapshot_rel(folder: &str, commit: &str, path: &str) -> String {
    format!("{folder}/snapshots/{commit}/{path}")
}

/// Write `FOLDER/refs/REVISION` holding `commit` (no newline), atomically. Nothing to do when
/// the revision is the commit itself.
pub fn write_ref(root: &Path, folder: &str, revision: &str, commit: &str) -> std::io::Result<()> {
    if revision == commit || revision.is_empty() {
        return Ok(());
    }
    let rel = format!("{folder}/refs/{revision}");
    let Some(clean) = crate::engine::names::sanitize_relative_path(&rel) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("unusable revision name {revision:?}"),
        ));
    };
    let path = root.join(clean);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if std::fs::read_to_string(&path).is_ok_and(|c| c == commit) {
        return Ok(());
    }
    let tmp = path.with_extension(format!("mdl-{}.tmp", std::process::id()));
    std::fs::write(&tmp, commit)?;
    std::fs::rename(&tmp, &path)
}

/// The commit a revision names in the cache (offline): `refs/<revision>`, else the revision
/// itself when it is a commit with a snapshot folder.
pub fn cached_commit(root: &Path, folder: &str, revision: &str) -> Option<String> {
    let refs = crate::engine::names::sanitize_relative_path(&format!("{folder}/refs/{revision}"))
        .map(|rel| root.join(rel));
    if let Some(commit) = refs
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
    {
        return Some(commit);
    }
    let is_commit = revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit());
    (is_commit && root.join(folder).join("snapshots").join(revision).is_dir())
        .then(|| revision.to_string())
}

/// One file of a cached snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// The path in the repository (`/`-separated).
    pub path: String,
    /// The blob it links to (its etag), when it is a symlink into `blobs/`.
    pub blob: Option<String>,
    /// The file the entry shows, when it exists (a dangling link has none).
    pub file: Option<PathBuf>,
}

/// Every file of `snapshots/<commit>/` (offline resolution), in path order.
pub fn snapshot_entries(root: &Path, folder: &str, commit: &str) -> Vec<SnapshotEntry> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<SnapshotEntry>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let full = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&full) else {
                continue;
            };
            if meta.is_dir() {
                walk(&full, &path, out);
                continue;
            }
            let blob = std::fs::read_link(&full)
                .ok()
                .and_then(|t| t.file_name().map(|n| n.to_string_lossy().to_string()));
            let file = std::fs::metadata(&full)
                .is_ok_and(|m| m.is_file())
                .then_some(full);
            out.push(SnapshotEntry { path, blob, file });
        }
    }
    let mut out = Vec::new();
    walk(
        &root.join(folder).join("snapshots").join(commit),
        "",
        &mut out,
    );
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// `FOLDER/.no_exist/COMMIT/PATH`: `huggingface_hub`'s record that a file does not exist in a
/// commit (an empty file), relative to the cache root.
pub fn no_exist_rel(folder: &str, commit: &str, path: &str) -> String {
    format!("{folder}/.no_exist/{commit}/{path}")
}

/// Record, as `huggingface_hub` does, that `path` does not exist in `commit` (an empty file at
/// [`no_exist_rel`]); failures are ignored (it is a hint for offline lookups).
pub fn write_no_exist(root: &Path, folder: &str, commit: &str, path: &str) {
    if let Some(rel) =
        crate::engine::names::sanitize_relative_path(&no_exist_rel(folder, commit, path))
    {
        let file = root.join(rel);
        if let Some(parent) = file.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_lookup_order() {
        let env = |k: &str| match k {
            "HF_HOME" => Some("/h".to_string()),
            _ => None,
        };
        assert_eq!(cache_root(env), PathBuf::from("/h/hub"));
        let env = |k: &str| match k {
            "HF_HOME" => Some("/h".to_string()),
            "HF_HUB_CACHE" => Some("/c".to_string()),
            _ => None,
        };
        assert_eq!(cache_root(env), PathBuf::from("/c"));
        assert_eq!(repo_folder("datasets", "a/b"), "datasets--a--b");
    }

    #[test]
    fn refs_with_slashes_become_directories() {
        let dir = tempfile::tempdir().unwrap();
        write_ref(dir.path(), "models--a--b", "refs/pr/1", "abc").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("models--a--b/refs/refs/pr/1")).unwrap(),
            "abc"
        );
    }
}
