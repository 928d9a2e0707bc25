//! The manifest format of `mdlctl ensure` and of the daemon's drop folder: models, each with
//! files, in TOML (or JSON with the same keys). One parser for every reader: `mdlctl ensure`
//! and `mdld`'s drop folder both call [`parse`] and [`plan`].
//!
//! ```toml
//! # Optional: the directory every model's `dir` is relative to.
//! dir = "models"
//!
//! [[models]]
//! name = "sdxl-base"                        # shown in the report
//! dir = "checkpoints"                       # the save directory of this model's files
//! base_url = "https://example.com/sdxl/"    # optional: files give `path` relative to it
//!
//! [[models.files]]
//! path = "sd_xl_base_1.0.safetensors"       # base_url + path
//! checksum = "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6ffb7b3a26a1a"
//! save_as = "sdxl.safetensors"              # optional; default: the URL's file name
//!
//! [[models.files]]
//! url = "https://other.example/vae/sdxl_vae.safetensors"   # a full URL instead of `path`
//! md5 = "d41d8cd98f00b204e9800998ecf8427e"
//! ```
//!
//! A checksum is given as `checksum` (64 hex digits: sha256, 32: md5, told apart by length),
//! or explicitly as `sha256` / `md5`. Relative directories are resolved by the reader
//! (`ensure`: the manifest's own directory; the drop folder: the daemon's download directory).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A manifest: models, each with files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The directory models' `dir`s are relative to (itself relative to the base directory).
    pub dir: Option<PathBuf>,
    /// The models.
    #[serde(default, alias = "model")]
    pub models: Vec<Model>,
}

/// One model of a manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Its name, for the report.
    pub name: String,
    /// The save directory of its files.
    pub dir: Option<PathBuf>,
    /// The URL files' `path`s are relative to.
    pub base_url: Option<String>,
    /// The files.
    #[serde(default, alias = "file")]
    pub files: Vec<ManifestFile>,
}

/// One file of a model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// A full URL.
    pub url: Option<String>,
    /// A path below the model's `base_url`.
    pub path: Option<String>,
    /// sha256 (64 hex) or md5 (32 hex), told apart by length.
    pub checksum: Option<String>,
    /// sha256 (64 hex).
    pub sha256: Option<String>,
    /// md5 (32 hex).
    pub md5: Option<String>,
    /// The name to save it under.
    pub save_as: Option<String>,
}

/// One file to fetch: where it comes from, where it goes, what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The model's index in the manifest.
    pub model: usize,
    /// The URL.
    pub url: String,
    /// The save directory (absolute when the base directory is).
    pub dir: PathBuf,
    /// The file name in it.
    pub name: String,
    /// Expected sha256 (lowercase hex).
    pub sha256: Option<String>,
    /// Expected md5 (lowercase hex).
    pub md5: Option<String>,
}

impl Planned {
    /// The full local path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }
}

/// Why a manifest cannot be used: what is wrong and, where known, on which line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct ManifestError {
    /// What is wrong, for a person.
    pub message: String,
    /// The 1-based line it is on, when known.
    pub line: Option<usize>,
}

impl ManifestError {
    fn new(message: impl Into<String>) -> Self {
        ManifestError {
            message: message.into(),
            line: None,
        }
    }
}

/// A manifest's text, kept so that errors found after parsing can name a line.
pub struct ManifestText<'a> {
    text: &'a str,
    json: bool,
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// Parse a manifest's text; `json` picks the format. Syntax errors name their line.
pub fn parse(text: &str, json: bool) -> Result<Manifest, ManifestError> {
    if json {
        serde_json::from_str(text).map_err(|e| ManifestError {
            message: format!("invalid manifest: {e}"),
            line: (e.line() > 0).then_some(e.line()),
        })
    } else {
        toml::from_str(text).map_err(|e| ManifestError {
            line: e.span().map(|s| line_of(text, s.start)),
            message: format!("invalid manifest: {}", e.message()),
        })
    }
}

impl<'a> ManifestText<'a> {
    /// The text of a manifest in TOML (`json == false`) or JSON.
    pub fn new(text: &'a str, json: bool) -> Self {
        ManifestText { text, json }
    }

    /// The line where model `index` begins (its `[[models]]` header in TOML, its `"name"` in
    /// JSON), best effort.
    fn model_line(&self, index: usize, name: &str) -> Option<usize> {
        if self.json {
            let quoted = serde_json::to_string(name).ok()?;
            let at = self.text.find(&quoted)?;
            return Some(line_of(self.text, at));
        }
        self.text
            .lines()
            .enumerate()
            .filter(|(_, l)| {
                let l = l.trim();
                l.starts_with("[[models]]") || l.starts_with("[[model]]")
            })
            .nth(index)
            .map(|(i, _)| i + 1)
    }

    /// Parse and plan in one step; every error names a line where one can be found.
    pub fn plan(&self, base_dir: &Path) -> Result<(Manifest, Vec<Planned>), ManifestError> {
        let manifest = parse(self.text, self.json)?;
        match plan(&manifest, base_dir) {
            Ok(files) => Ok((manifest, files)),
            Err((model, mut e)) => {
                let name = &manifest.models[model].name;
                e.line = self.model_line(model, name);
                Err(e)
            }
        }
    }
}

fn hex_of(value: &str, len: usize, what: &str) -> Result<String, ManifestError> {
    let v = value.trim();
    if v.len() == len && v.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(v.to_ascii_lowercase())
    } else {
        Err(ManifestError::new(format!(
            "{what} must be {len} hex digits, got {value:?}"
        )))
    }
}

/// Every file of the manifest, with directories joined onto `base_dir`. An error comes with
/// the index of the model it is about.
pub fn plan(manifest: &Manifest, base_dir: &Path) -> Result<Vec<Planned>, (usize, ManifestError)> {
    let root = base_dir.join(manifest.dir.as_deref().unwrap_or(Path::new("")));
    let mut out = Vec::new();
    for (m, model) in manifest.models.iter().enumerate() {
        plan_model(m, model, &root, &mut out).map_err(|e| (m, e))?;
    }
    Ok(out)
}

fn plan_model(
    m: usize,
    model: &Model,
    root: &Path,
    out: &mut Vec<Planned>,
) -> Result<(), ManifestError> {
    let bad = |message: String| ManifestError::new(format!("model {:?}: {message}", model.name));
    let dir = root.join(model.dir.as_deref().unwrap_or(Path::new("")));
    if model.files.is_empty() {
        return Err(bad("lists no files".into()));
    }
    for file in &model.files {
        let url = match (&file.url, &file.path, &model.base_url) {
            (Some(url), None, _) => url.clone(),
            (None, Some(path), Some(base)) => format!(
                "{}/{}",
                base.trim_end_matches('/'),
                path.trim_start_matches('/')
            ),
            (None, Some(_), None) => {
                return Err(bad(
                    "a file gives `path` but the model has no `base_url`".into()
                ))
            }
            _ => return Err(bad("each file needs exactly one of `url` and `path`".into())),
        };
        let (mut sha256, mut md5) = (None, None);
        if let Some(c) = &file.checksum {
            match c.trim().len() {
                64 => sha256 = Some(hex_of(c, 64, "checksum").map_err(|e| bad(e.message))?),
                32 => md5 = Some(hex_of(c, 32, "checksum").map_err(|e| bad(e.message))?),
                _ => {
                    return Err(bad(format!(
                        "checksum {c:?} is neither a sha256 (64 hex) nor an md5 (32 hex)"
                    )))
                }
            }
        }
        if let Some(s) = &file.sha256 {
            sha256 = Some(hex_of(s, 64, "sha256").map_err(|e| bad(e.message))?);
        }
        if let Some(s) = &file.md5 {
            md5 = Some(hex_of(s, 32, "md5").map_err(|e| bad(e.message))?);
        }
        let name = file
            .save_as
            .clone()
            .or_else(|| url_file_name(&url))
            .ok_or_else(|| bad(format!("cannot name the file of {url}; give `save_as`")))?;
        if name.contains(['/', '\\']) || name == ".." || name == "." {
            return Err(bad(format!("save_as {name:?} must be a plain file name")));
        }
        out.push(Planned {
            model: m,
            url,
            dir: dir.clone(),
            name,
            sha256,
            md5,
        });
    }
    Ok(())
}

/// The last path segment of a URL, percent-decoded.
pub fn url_file_name(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next()?;
    let after_scheme = path.split_once("://").map_or(path, |(_, rest)| rest);
    let (_, path) = after_scheme.split_once('/')?;
    let last = path.rsplit('/').find(|s| !s.is_empty())?;
    let mut bytes = Vec::new();
    let raw = last.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let Some(b) = std::str::from_utf8(&raw[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                bytes.push(b);
                i += 3;
                continue;
            }
        }
        bytes.push(raw[i]);
        i += 1;
    }
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6ffb7b3a26a1a";
    const MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";

    #[test]
    fn the_example_manifest_parses() {
        let text = include_str!("../../examples/manifest.toml");
        let (_, files) = ManifestText::new(text, false)
            .plan(Path::new("/base"))
            .unwrap();
        assert!(!files.is_empty());
        assert!(files.iter().all(|f| f.dir.starts_with("/base")));
    }

    #[test]
    fn checksums_are_told_apart_by_length_and_names_default_to_the_url() {
        let text = format!(
            r#"
dir = "models"
[[models]]
name = "a"
dir = "ckpt"
base_url = "https://h.example/repo/"
[[models.files]]
path = "sub/w%20x.bin"
checksum = "{SHA}"
[[models.files]]
url = "https://o.example/v.bin?download=1"
checksum = "{}"
save_as = "vae.bin"
"#,
            MD5.to_uppercase()
        );
        let (_, files) = ManifestText::new(&text, false)
            .plan(Path::new("/m"))
            .unwrap();
        assert_eq!(files[0].url, "https://h.example/repo/sub/w%20x.bin");
        assert_eq!(files[0].name, "w x.bin");
        assert_eq!(files[0].dir, Path::new("/m/models/ckpt"));
        assert_eq!(files[0].sha256.as_deref(), Some(SHA));
        assert_eq!(files[1].md5.as_deref(), Some(MD5));
        assert_eq!(files[1].name, "vae.bin");

        let json = format!(
            r#"{{"models":[{{"name":"b","files":[{{"url":"https://x/y.bin","md5":"{MD5}"}}]}}]}}"#
        );
        let (_, files) = ManifestText::new(&json, true)
            .plan(Path::new("/j"))
            .unwrap();
        assert_eq!(files[0].path(), Path::new("/j/y.bin"));
    }

    #[test]
    fn errors_name_their_line() {
        let syntax = "[[models]]\nname = \"a\"\nfiles = [\n  { url = \"https://x/y\" , \n";
        let err = ManifestText::new(syntax, false)
            .plan(Path::new("/"))
            .unwrap_err();
        assert!(err.line.is_some(), "{err}");
        let unknown = "[[models]]\nname = \"a\"\ncolour = 1\n";
        let err = ManifestText::new(unknown, false)
            .plan(Path::new("/"))
            .unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        let semantic = "[[models]]\nname = \"a\"\n[[models.files]]\nurl = \"https://x/y\"\n\n[[models]]\nname = \"b\"\n[[models.files]]\nurl = \"https://x/z\"\nchecksum = \"abc\"\n";
        let err = ManifestText::new(semantic, false)
            .plan(Path::new("/"))
            .unwrap_err();
        assert_eq!(err.line, Some(6), "{err}");
        assert!(err.to_string().starts_with("line 6: model \"b\""), "{err}");
        let json = "{\n\"models\": [\n{\"name\": \"j\", \"files\": []}\n]}";
        let err = ManifestText::new(json, true)
            .plan(Path::new("/"))
            .unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
    }

    #[test]
    fn bad_manifests_are_refused() {
        for text in [
            "[[models]]\nname = \"a\"\n[[models.files]]\npath = \"x\"\n",
            "[[models]]\nname = \"a\"\n[[models.files]]\nurl = \"https://x/y\"\nchecksum = \"abc\"\n",
            "[[models]]\nname = \"a\"\n[[models.files]]\nurl = \"https://x/y\"\nsave_as = \"../z\"\n",
            "[[models]]\nname = \"a\"\ncolour = 1\n",
        ] {
            assert!(ManifestText::new(text, false).plan(Path::new("/")).is_err(), "{text}");
        }
    }
}
