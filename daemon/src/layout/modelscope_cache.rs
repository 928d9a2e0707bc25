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
