//! `mdlctl ensure MANIFEST`: make sure every file a manifest lists is present and intact.
//!
//! The client hashes the files already on disk (same machine as the daemon), queues a download
//! for each file that is missing or fails its checksum, and reports each model as **ready**
//! (every file present and verified) or **not ready** (with the jobs queued for it). With
//! `--wait` it waits for those jobs and reports again; the exit code is then that of
//! `mdlctl wait`. With `--json` it prints one array: `[{"name", "dir", "ready", "files":
//! [{"path", "url", "status", "job"?, "error"?}]}]`, `status` being `present`, `queued`,
//! `completed` or `failed`.
//!
//! # Manifest format
//!
//! TOML (or JSON, when the file name ends in `.json`, with the same keys). Relative
//! directories are taken from the manifest's own directory.
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
//! or explicitly as `sha256` / `md5`. A file without a checksum counts as present when it
//! exists.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use md5::Md5;
use mdl_protocol::{AddOutcome, AddRequest, Client, ErrorKind, JobId, JobInfo, JobState};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{wait, Ctx};
use crate::cli::EnsureArgs;
use crate::exit::Failure;
use crate::output::{emit, emit_json};

/// A manifest: models, each with files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The directory models' `dir`s are relative to (itself relative to the manifest).
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

/// One file as `ensure` handles it: where it comes from, where it goes, what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The model's index in the manifest.
    pub model: usize,
    /// The URL.
    pub url: String,
    /// The save directory (absolute).
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

fn bad(message: String) -> anyhow::Error {
    Failure::new(ErrorKind::InvalidRequest, message).into()
}

fn hex_of(value: &str, len: usize, what: &str) -> Result<String> {
    let v = value.trim();
    if v.len() == len && v.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(v.to_ascii_lowercase())
    } else {
        Err(bad(format!(
            "{what} must be {len} hex digits, got {value:?}"
        )))
    }
}

/// Parse a manifest's text; `json` picks the format.
pub fn parse(text: &str, json: bool) -> Result<Manifest> {
    if json {
        serde_json::from_str(text).map_err(|e| bad(format!("invalid manifest: {e}")))
    } else {
        toml::from_str(text).map_err(|e| bad(format!("invalid manifest: {e}")))
    }
}

/// Every file of the manifest, with absolute directories (relative ones from `base_dir`).
pub fn plan(manifest: &Manifest, base_dir: &Path) -> Result<Vec<Planned>> {
    let root = base_dir.join(manifest.dir.as_deref().unwrap_or(Path::new("")));
    let mut out = Vec::new();
    for (m, model) in manifest.models.iter().enumerate() {
        let dir = root.join(model.dir.as_deref().unwrap_or(Path::new("")));
        if model.files.is_empty() {
            return Err(bad(format!("model {:?} lists no files", model.name)));
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
                    return Err(bad(format!(
                        "model {:?}: a file gives `path` but the model has no `base_url`",
                        model.name
                    )))
                }
                _ => {
                    return Err(bad(format!(
                        "model {:?}: each file needs exactly one of `url` and `path`",
                        model.name
                    )))
                }
            };
            let (mut sha256, mut md5) = (None, None);
            if let Some(c) = &file.checksum {
                match c.trim().len() {
                    64 => sha256 = Some(hex_of(c, 64, "checksum")?),
                    32 => md5 = Some(hex_of(c, 32, "checksum")?),
                    _ => {
                        return Err(bad(format!(
                            "model {:?}: checksum {c:?} is neither a sha256 (64 hex) nor an md5 (32 hex)",
                            model.name
                        )))
                    }
                }
            }
            if let Some(s) = &file.sha256 {
                sha256 = Some(hex_of(s, 64, "sha256")?);
            }
            if let Some(s) = &file.md5 {
                md5 = Some(hex_of(s, 32, "md5")?);
            }
            let name = file
                .save_as
                .clone()
                .or_else(|| url_file_name(&url))
                .ok_or_else(|| {
                    bad(format!(
                        "model {:?}: cannot name the file of {url}; give `save_as`",
                        model.name
                    ))
                })?;
            if name.contains(['/', '\\']) || name == ".." || name == "." {
                return Err(bad(format!(
                    "model {:?}: save_as {name:?} must be a plain file name",
                    model.name
                )));
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
    }
    Ok(out)
}

/// The last path segment of a URL, percent-decoded.
fn url_file_name(url: &str) -> Option<String> {
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

/// Whether the local file exists and matches its checksum.
pub fn is_intact(file: &Planned) -> bool {
    let path = file.path();
    if !path.is_file() {
        return false;
    }
    if file.sha256.is_none() && file.md5.is_none() {
        return true;
    }
    let Ok(mut f) = std::fs::File::open(&path) else {
        return false;
    };
    let mut sha = Sha256::new();
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if file.sha256.is_some() {
                    sha.update(&buf[..n]);
                } else {
                    md5.update(&buf[..n]);
                }
            }
            Err(_) => return false,
        }
    }
    match (&file.sha256, &file.md5) {
        (Some(want), _) => *want == hex::encode(sha.finalize()),
        (None, Some(want)) => *want == hex::encode(md5.finalize()),
        (None, None) => true,
    }
}

/// One file in the report.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// The local path.
    pub path: String,
    /// Where it comes from.
    pub url: String,
    /// `present`, `queued`, `completed` or `failed`.
    pub status: String,
    /// The job fetching it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobId>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One model in the report.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    /// The model's name.
    pub name: String,
    /// Every file present and verified.
    pub ready: bool,
    /// The files.
    pub files: Vec<FileReport>,
}

/// Run `ensure`: read and plan the manifest, hash what is on disk, queue what is missing or
/// damaged, optionally wait, then report per model.
pub async fn run(ctx: &Ctx, args: EnsureArgs) -> Result<()> {
    let (manifest, files) = load(&args.manifest)?;
    let intact = hash_local_files(&files).await?;
    let (mut reports, client) =
        queue_missing(ctx, &files, &intact, args.priority, args.offline).await?;
    let ids: Vec<JobId> = reports.iter().filter_map(|r| r.job).collect();
    let mut finished = Vec::new();
    if args.wait && !ids.is_empty() {
        drop(client);
        finished = wait::wait_for(ctx, &ids, None).await?;
        record_outcomes(&mut reports, &finished);
    }
    let models = by_model(&manifest, &files, reports);
    print_report(ctx, &models)?;
    if args.wait && !finished.is_empty() {
        wait::outcome(&finished)?;
    }
    Ok(())
}

/// Read, parse and plan the manifest (relative paths are taken from its directory).
fn load(path: &Path) -> Result<(Manifest, Vec<Planned>)> {
    let manifest_path =
        std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
        bad(format!(
            "cannot read the manifest {}: {e}",
            manifest_path.display()
        ))
    })?;
    let json = manifest_path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let manifest = parse(&text, json)?;
    let base = manifest_path
        .parent()
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    let files = plan(&manifest, &base)?;
    Ok((manifest, files))
}

/// Which planned files are on disk and intact (hashed in a blocking thread: files may be
/// large).
async fn hash_local_files(files: &[Planned]) -> Result<Vec<bool>> {
    let checked = files.to_vec();
    tokio::task::spawn_blocking(move || checked.iter().map(is_intact).collect())
        .await
        .context("hashing local files")
}

/// Queue every file that is not intact (connecting to the daemon only if one is needed); one
/// report per file, in plan order, and the connection if one was made.
async fn queue_missing(
    ctx: &Ctx,
    files: &[Planned],
    intact: &[bool],
    priority: i32,
    offline: bool,
) -> Result<(Vec<FileReport>, Option<Client>)> {
    let env = mdl_protocol::forwarded_env();
    let mut reports: Vec<FileReport> = Vec::with_capacity(files.len());
    let mut client = None;
    for (file, ok) in files.iter().zip(intact) {
        let mut report = FileReport {
            path: file.path().display().to_string(),
            url: file.url.clone(),
            status: "present".into(),
            job: None,
            error: None,
        };
        if !ok {
            if client.is_none() {
                client = Some(ctx.connect().await?);
            }
            let client = client.as_mut().expect("connected");
            let dir = file
                .dir
                .to_str()
                .ok_or_else(|| bad(format!("{} is not valid UTF-8", file.dir.display())))?;
            let reply = client
                .add(AddRequest {
                    source: file.url.clone(),
                    dest: Some(dir.to_string()),
                    sha256: file.sha256.clone(),
                    md5: file.md5.clone(),
                    priority,
                    env: env.clone(),
                    file_name: Some(file.name.clone()),
                    // The daemon's offline switch (`mdlctl add --offline` sends the same).
                    options: if offline {
                        vec![("offline".to_string(), "1".to_string())]
                    } else {
                        Vec::new()
                    },
                    ..Default::default()
                })
                .await?;
            // The daemon found an earlier download "intact" by its size and time stamp, but
            // the file fails its checksum here: have the daemon re-hash it and fetch again.
            if reply.outcome == AddOutcome::AlreadyComplete {
                client.verify(vec![reply.job.id], Vec::new()).await?;
            }
            report.status = "queued".into();
            report.job = Some(reply.job.id);
        }
        reports.push(report);
    }
    Ok((reports, client))
}

/// Mark each queued file `completed` or `failed` (with the reason) from the finished jobs.
fn record_outcomes(reports: &mut [FileReport], finished: &[JobInfo]) {
    for report in reports {
        let Some(job) = report
            .job
            .and_then(|id| finished.iter().find(|j| j.id == id))
        else {
            continue;
        };
        if job.state == JobState::Completed {
            report.status = "completed".into();
        } else {
            report.status = "failed".into();
            report.error = Some(
                job.error
                    .as_ref()
                    .map(|e| e.message.clone())
                    .unwrap_or_else(|| job.state.as_str().to_string()),
            );
        }
    }
}

/// Group the file reports by model, in manifest order; a model is ready when every file is
/// present or completed.
fn by_model(manifest: &Manifest, files: &[Planned], reports: Vec<FileReport>) -> Vec<ModelReport> {
    let mut by_model: BTreeMap<usize, Vec<FileReport>> = BTreeMap::new();
    for (file, report) in files.iter().zip(reports) {
        by_model.entry(file.model).or_default().push(report);
    }
    by_model
        .into_iter()
        .map(|(m, files)| ModelReport {
            name: manifest.models[m].name.clone(),
            ready: files
                .iter()
                .all(|f| f.status == "present" || f.status == "completed"),
            files,
        })
        .collect()
}

/// The report: JSON, or one line per model (`ready` / `not ready` with its jobs or failures).
fn print_report(ctx: &Ctx, models: &[ModelReport]) -> Result<()> {
    if ctx.json {
        return emit_json(&models);
    }
    for model in models {
        if model.ready {
            emit(format_args!("ready      {}", model.name))?;
            continue;
        }
        let jobs: Vec<String> = model
            .files
            .iter()
            .filter_map(|f| f.job.map(|j| j.to_string()))
            .collect();
        let failed: Vec<String> = model
            .files
            .iter()
            .filter_map(|f| f.error.as_ref().map(|e| format!("{}: {e}", f.path)))
            .collect();
        if failed.is_empty() {
            emit(format_args!(
                "not ready  {} (queued: job {})",
                model.name,
                jobs.join(", job ")
            ))?;
        } else {
            emit(format_args!(
                "not ready  {} (failed: {})",
                model.name,
                failed.join("; ")
            ))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6ffb7b3a26a1a";
    const MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";

    #[test]
    fn the_example_manifest_parses() {
        let text = include_str!("../../../examples/manifest.toml");
        let manifest = parse(text, false).unwrap();
        let files = plan(&manifest, Path::new("/base")).unwrap();
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
        let files = plan(&parse(&text, false).unwrap(), Path::new("/m")).unwrap();
        assert_eq!(files[0].url, "https://h.example/repo/sub/w%20x.bin");
        assert_eq!(files[0].name, "w x.bin");
        assert_eq!(files[0].dir, Path::new("/m/models/ckpt"));
        assert_eq!(files[0].sha256.as_deref(), Some(SHA));
        assert_eq!(files[1].md5.as_deref(), Some(MD5));
        assert_eq!(files[1].name, "vae.bin");

        let json = format!(
            r#"{{"models":[{{"name":"b","files":[{{"url":"https://x/y.bin","md5":"{MD5}"}}]}}]}}"#
        );
        let files = plan(&parse(&json, true).unwrap(), Path::new("/j")).unwrap();
        assert_eq!(files[0].path(), Path::new("/j/y.bin"));
    }

    #[test]
    fn bad_manifests_are_usage_errors() {
        for text in [
            "[[models]]\nname = \"a\"\n[[models.files]]\npath = \"x\"\n",
            "[[models]]\nname = \"a\"\n[[models.files]]\nurl = \"https://x/y\"\nchecksum = \"abc\"\n",
            "[[models]]\nname = \"a\"\n[[models.files]]\nurl = \"https://x/y\"\nsave_as = \"../z\"\n",
            "[[models]]\nname = \"a\"\ncolour = 1\n",
        ] {
            let err = parse(text, false).and_then(|m| plan(&m, Path::new("/")));
            let err = err.unwrap_err();
            assert_eq!(crate::exit::code_for_error(&err), mdl_protocol::ErrorKind::InvalidRequest.exit_code(), "{err}");
        }
    }
}
