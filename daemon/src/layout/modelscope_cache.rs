//! The ModelScope cache (spec §10.1, the `modelscope` ≤ 1.37 layout that newer SDKs also
//! reuse): `<root>/models/<owner>/<name>/<path>`, where `<root>` is `MODELSCOPE_CACHE`, else
//! `~/.cache/modelscope/hub`, and every `.` in the repo name becomes `___`.
//!
//! The SDK's own index files sit in the model folder, and are written here as
//! `modelscope.hub.utils.caching.ModelFileSystemCache` writes them:
//!
//! * `.mdl`: `pickle.dump({'id': '<owner>/<name with ___>'})`, the model's id;
//! * `.msc`: `pickle.dump([{'Path': <repo path>, 'Revision': <the file's commit>}, ...])`, one
//!   entry per cached file. `modelscope` ≤ 1.37 finds a download by it: `snapshot_download(...,
//!   local_files_only=True)` needs it non-empty, and online it skips every listed file whose
//!   `(Path, Revision)` is in it (`ModelFileSystemCache.exists`) instead of fetching it again;
//! * `.mv`: the text `Revision:<revision>,CreatedAt:<unix seconds>`; `modelscope`'s cache
//!   scanner (`scan_cache_dir`) reads the revision from it. The SDK puts the revision's
//!   creation time there; nothing reads that number, and mdl writes the time it installed the
//!   files (no extra request to the hub).
//!
//! A repo name with a dot also gets the SDK's convenience link `models/<owner>/<dotted name>`
//! → the escaped folder (an absolute symlink, made only where nothing is).
//! `modelscope` ≥ 1.38 (with `modelscope-hub`) reuses such a folder as a legacy cache
//! (`DownloadManager._find_legacy_repo_dir`), offline too.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `.mdl`'s dict.
#[derive(Debug, Serialize, Deserialize)]
struct ModelMeta {
    id: String,
}

/// One dict of `.msc`'s list, with the SDK's key names.
#[derive(Debug, Serialize, Deserialize)]
struct PickledEntry {
    #[serde(rename = "Path")]
    path: String,
    #[serde(rename = "Revision")]
    revision: String,
}

/// Pickle `value` as Python's `pickle` reads it (dicts with `str` keys, lists, `str`).
fn pickled<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    serde_pickle::to_vec(value, serde_pickle::SerOptions::new()).map_err(io::Error::other)
}

/// `.mdl`, `.msc` and `.mv`: the SDK's index files in a model folder.
pub const MODEL_META_FILE: &str = ".mdl";
/// The SDK's list of cached files.
pub const CACHE_INDEX_FILE: &str = ".msc";
/// The SDK's record of the revision.
pub const MODEL_VERSION_FILE: &str = ".mv";

/// The cache root: `MODELSCOPE_CACHE`, else `~/.cache/modelscope/hub`. `env` looks a variable
/// up (the job's forwarded environment first, then the daemon's).
pub fn cache_root(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    match env("MODELSCOPE_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => crate::settings::home_dir().join(".cache/modelscope/hub"),
    }
}

/// `models/<owner>/<name with "." → "___">`, relative to the cache root.
pub fn model_dir_rel(owner: &str, name: &str) -> String {
    format!("models/{owner}/{}", name.replace('.', "___"))
}

/// The files of a cached model folder (offline resolution), as `/`-separated paths in path
/// order with their sizes; the SDK's markers (`.mdl`, `.msc`, `.mv`), its temp folder and
/// every other dot-entry at the top are left out.
pub fn cached_files(model_dir: &std::path::Path) -> Vec<(String, u64)> {
    fn walk(dir: &std::path::Path, prefix: &str, out: &mut Vec<(String, u64)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if prefix.is_empty() && name.starts_with('.') {
                continue;
            }
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            match std::fs::metadata(entry.path()) {
                Ok(m) if m.is_dir() => walk(&entry.path(), &path, out),
                Ok(m) if m.is_file() => out.push((path, m.len())),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(model_dir, "", &mut out);
    out.sort();
    out
}

/// One cached file as the SDK's `.msc` records it: its repo path and the commit that last
/// touched it (the file list's per-file `Revision`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// The path inside the repo.
    pub path: String,
    /// The file's commit.
    pub revision: String,
}

/// The entries of a model folder's `.msc`; none when it is missing, and none (with the
/// reason) when it cannot be read, as the SDK resets an unreadable index.
pub fn read_index(model_dir: &Path) -> Result<Vec<IndexEntry>, String> {
    let path = model_dir.join(CACHE_INDEX_FILE);
    let data = match std::fs::read(&path) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let items: Vec<PickledEntry> = serde_pickle::from_slice(&data, serde_pickle::DeOptions::new())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(items
        .into_iter()
        .map(|item| IndexEntry {
            path: item.path,
            revision: item.revision,
        })
        .collect())
}

/// Write the SDK's index files in `model_dir` (of `owner/name`) after mdl installed the
/// `entries` there: `.mdl`; `.msc` with the `entries` replacing any older entry of the same
/// path (as the SDK's `put_file` does), the other entries kept; and `.mv` naming `revision`
/// when one is given. Each file is replaced atomically.
pub fn write_index(
    model_dir: &Path,
    owner: &str,
    name: &str,
    entries: &[IndexEntry],
    revision: Option<&str>,
) -> io::Result<()> {
    let id = format!("{owner}/{}", name.replace('.', "___"));
    write_atomic(model_dir, MODEL_META_FILE, &pickled(&ModelMeta { id })?)?;
    if !entries.is_empty() {
        let mut index = read_index(model_dir).unwrap_or_default();
        index.retain(|old| !entries.iter().any(|new| new.path == old.path));
        index.extend(entries.iter().cloned());
        let list: Vec<PickledEntry> = index
            .into_iter()
            .map(|e| PickledEntry {
                path: e.path,
                revision: e.revision,
            })
            .collect();
        write_atomic(model_dir, CACHE_INDEX_FILE, &pickled(&list)?)?;
    }
    if let Some(revision) = revision {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let text = format!("Revision:{revision},CreatedAt:{now}");
        write_atomic(model_dir, MODEL_VERSION_FILE, text.as_bytes())?;
    }
    Ok(())
}

/// The SDK's link from the dotted repo name to the escaped folder
/// (`models/acme/Qwen2.5 -> <root>/models/acme/Qwen2___5`), made when the name has a dot and
/// nothing is at the link's path yet. A failure is only worth a warning, as for the SDK.
pub fn link_dotted_name(model_dir: &Path, name: &str) -> io::Result<()> {
    let (Some(parent), true) = (model_dir.parent(), name.contains('.')) else {
        return Ok(());
    };
    let link = parent.join(name);
    if link.symlink_metadata().is_ok() {
        return Ok(());
    }
    let target = std::path::absolute(model_dir)?;
    #[cfg(unix)]
    return std::os::unix::fs::symlink(target, link);
    // The SDK makes this link where it can; on Windows that needs a privilege, so none.
    #[cfg(not(unix))]
    {
        let _ = (target, link);
        Ok(())
    }
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let path = dir.join(name);
    if std::fs::read(&path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let tmp = dir.join(format!("{name}.mdl-{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, &path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_files_the_sdk_wrote_are_read() {
        let dir = tempfile::tempdir().unwrap();
        // `pickle.dumps([...], protocol=4)` (framed, memoized, as `pickle.dump` writes by
        // default) with a key mdl does not know, and `protocol=2`.
        for hex_pickle in [
            "80049545000000000000005d94287d94288c0450617468948c05612e62696e948c085265766973696f\
             6e948c027231948c054578747261948c017894757d942868028c01629468048c0272329475652e",
            "80025d71007d71012858040000005061746871025805000000612e62696e71035808000000526576\
             6973696f6e710458020000007231710575612e",
        ] {
            std::fs::write(dir.path().join(".msc"), hex::decode(hex_pickle).unwrap()).unwrap();
            let entries = read_index(dir.path()).unwrap();
            assert_eq!(entries[0].path, "a.bin");
            assert_eq!(entries[0].revision, "r1");
        }
        std::fs::write(dir.path().join(".msc"), b"not a pickle").unwrap();
        assert!(read_index(dir.path()).is_err());
    }

    #[test]
    fn dotted_names_are_escaped() {
        assert_eq!(
            model_dir_rel("qwen", "Qwen2.5-0.5B"),
            "models/qwen/Qwen2___5-0___5B"
        );
        let root = cache_root(|k| (k == "MODELSCOPE_CACHE").then(|| "/m".to_string()));
        assert_eq!(root, PathBuf::from("/m"));
    }

    #[test]
    fn index_files_merge_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("models/acme/tiny___v2");
        std::fs::create_dir_all(&model).unwrap();
        let entry = |p: &str, r: &str| IndexEntry {
            path: p.into(),
            revision: r.into(),
        };
        write_index(
            &model,
            "acme",
            "tiny.v2",
            &[entry("a", "r1"), entry("b", "r1")],
            Some("master"),
        )
        .unwrap();
        write_index(&model, "acme", "tiny.v2", &[entry("b", "r2")], None).unwrap();
        assert_eq!(
            read_index(&model).unwrap(),
            vec![entry("a", "r1"), entry("b", "r2")]
        );
        let meta: ModelMeta = serde_pickle::from_slice(
            &std::fs::read(model.join(".mdl")).unwrap(),
            serde_pickle::DeOptions::new(),
        )
        .unwrap();
        assert_eq!(meta.id, "acme/tiny___v2");
        let mv = std::fs::read_to_string(model.join(".mv")).unwrap();
        assert!(mv.starts_with("Revision:master,CreatedAt:"), "{mv}");
        link_dotted_name(&model, "tiny.v2").unwrap();
        let link = dir.path().join("models/acme/tiny.v2");
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            std::path::absolute(&model).unwrap()
        );
        assert!(
            cached_files(&model).is_empty(),
            "the index files are not model files"
        );
        std::fs::write(model.join(".msc"), b"garbage").unwrap();
        assert!(read_index(&model).is_err());
    }
}
