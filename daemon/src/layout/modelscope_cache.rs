//! The ModelScope cache (spec §10.1, the `modelscope` ≤ 1.37 layout that newer SDKs also
//! reuse): `<root>/models/<owner>/<name>/<path>`, where `<root>` is `MODELSCOPE_CACHE`, else
//! `~/.cache/modelscope/hub`, and every `.` in the repo name becomes `___`.

use std::path::PathBuf;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_names_are_escaped() {
        assert_eq!(
            model_dir_rel("qwen", "Qwen2.5-0.5B"),
            "models/qwen/Qwen2___5-0___5B"
        );
        let root = cache_root(|k| (k == "MODELSCOPE_CACHE").then(|| "/m".to_string()));
        assert_eq!(root, PathBuf::from("/m"));
    }
}
