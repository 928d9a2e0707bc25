//! ModelScope sources (`shared/specs/modelscope.md`).
//!
//! Accepted forms: `ms://OWNER/NAME[@REV][/PATH]` and model URLs on `modelscope.cn` /
//! `modelscope.ai` (`https://www.modelscope.cn/models/OWNER/NAME[/files|/summary|/resolve/REV/PATH]`).
//!
//! The file list comes from `GET /api/v1/models/{owner}/{name}/repo/files?Revision=&Recursive=True`
//! (one response, no pagination, §3.3); each file is fetched through
//! `/api/v1/models/{owner}/{name}/repo?Revision=&FilePath=` and its `302` to the storage host
//! (§3.4), and verified against its listed `Sha256` (§6). The default revision is `master`
//! (HF's `main` is translated, §5). The token (`--token`, else `MODELSCOPE_API_TOKEN`) goes to
//! the API host as the `m_session_id` cookie and as a Bearer token (§4); reqwest drops both on
//! the cross-host redirect to storage.

use std::path::PathBuf;

use globset::GlobSet;
use mdl_protocol::ErrorKind;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::header::{HeaderMap, AUTHORIZATION, COOKIE};
use serde::Deserialize;

use super::http_meta::{self, MetaResponse};
use super::Credentials;
use crate::engine::{names, Engine, FetchError};
use crate::job::{FileRecord, JobRecord, Layout, MsSource};
use crate::layout::modelscope_cache;
use crate::settings::{SourceSettings, MODELSCOPE_OFFICIAL_ENDPOINT};

/// Whether `source` is a ModelScope source.
pub fn matches(source: &str, endpoints: &[String]) -> bool {
    let lower = source.trim().to_ascii_lowercase();
    if lower.starts_with("ms://") || lower.starts_with("modelscope://") {
        return true;
    }
    let Ok(url) = url::Url::parse(source.trim()) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches("www.");
    if host == "modelscope.cn" || host == "modelscope.ai" {
        return true;
    }
    endpoints.iter().any(|e| {
        url::Url::parse(e).is_ok_and(|eu| {
            eu.host_str() == url.host_str()
                && eu.port_or_known_default() == url.port_or_known_default()
                && url.path().starts_with("/models/")
        })
    })
}

/// Parse a ModelScope source.
pub fn parse(source: &str) -> Result<MsSource, String> {
    let trimmed = source.trim();
    let bad = |why: &str| format!("invalid ModelScope source {trimmed:?}: {why}");
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .to_string()
    };
    let scheme_rest = super::strip_prefix_ignore_case(trimmed, "ms://")
        .or_else(|| super::strip_prefix_ignore_case(trimmed, "modelscope://"));
    if let Some(rest) = scheme_rest {
        let segments: Vec<String> = rest
            .split('/')
            .filter(|s| !s.is_empty())
            .map(decode)
            .collect();
        if segments.len() < 2 {
            return Err(bad("expected ms://OWNER/NAME[@REVISION][/PATH]"));
        }
        let (name, revision) = match segments[1].split_once('@') {
            Some((n, r)) => (n.to_string(), Some(r.to_string()).filter(|r| !r.is_empty())),
            None => (segments[1].clone(), None),
        };
        let path = segments[2..].join("/");
        return Ok(MsSource {
            owner: segments[0].clone(),
            name,
            revision,
            path: (!path.is_empty()).then_some(path),
        });
    }
    let url = url::Url::parse(trimmed).map_err(|e| bad(&e.to_string()))?;
    let segments: Vec<String> = url
        .path_segments()
        .map(|s| s.filter(|s| !s.is_empty()).map(decode).collect())
        .unwrap_or_default();
    if segments.len() < 3 || segments[0] != "models" {
        return Err(bad("expected https://www.modelscope.cn/models/OWNER/NAME"));
    }
    let rest = &segments[3..];
    let (revision, path) = match rest.first().map(String::as_str) {
        Some("resolve") if rest.len() >= 2 => {
            let path = rest[2..].join("/");
            (Some(rest[1].clone()), (!path.is_empty()).then_some(path))
        }
        _ => {
            let revision = url
                .query_pairs()
                .find(|(k, _)| k.eq_ignore_ascii_case("revision"))
                .map(|(_, v)| v.to_string());
            (revision, None)
        }
    };
    Ok(MsSource {
        owner: segments[1].clone(),
        name: segments[2].clone(),
        revision,
        path,
    })
}

fn env_var(job: &JobRecord, name: &str) -> Option<String> {
    super::huggingface::env_var(job, name)
}

/// The endpoints to try: `MODELSCOPE_ENDPOINT`, the configured list, the official one.
pub fn endpoints(job: &JobRecord, settings: &SourceSettings) -> Vec<String> {
    let env = env_var(job, "MODELSCOPE_ENDPOINT").map(|e| {
        if e.contains("://") {
            e
        } else {
            format!("https://{e}")
        }
    });
    http_meta::endpoint_list(
        env,
        &settings.modelscope_endpoints,
        MODELSCOPE_OFFICIAL_ENDPOINT,
    )
}

/// The token: `--token`, else `MODELSCOPE_API_TOKEN`.
pub fn token(job: &JobRecord) -> Option<String> {
    job.token
        .as_ref()
        .map(|t| t.expose().trim().to_string())
        .filter(|t| !t.is_empty())
        .or_else(|| env_var(job, "MODELSCOPE_API_TOKEN").map(|t| t.trim().to_string()))
}

/// `Cookie: m_session_id=<token>` and `Authorization: Bearer <token>` (both sensitive), for
/// the API endpoints only; reqwest removes both when a redirect leaves for the storage host.
pub fn credentials(job: &JobRecord, settings: &SourceSettings) -> Credentials {
    match token(job) {
        Some(token) => Credentials::for_origins_of(&endpoints(job, settings))
            .with(COOKIE, &format!("m_session_id={token}"))
            .with(AUTHORIZATION, &format!("Bearer {token}")),
        None => Credentials::none(),
    }
}

/// The cache root for a forwarded environment.
pub fn default_dest(env: &[(String, mdl_protocol::Secret)]) -> PathBuf {
    modelscope_cache::cache_root(|k| super::env_value(env, k))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Envelope<T> {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    data: Option<T>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    success: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct FilesData {
    #[serde(default)]
    files: Option<Vec<MsEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MsEntry {
    path: String,
    #[serde(rename = "Type", default)]
    kind: String,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    size: Option<u64>,
    /// The commit that last touched the file (the SDK cache's key).
    #[serde(default)]
    revision: Option<String>,
}

/// Resolve a ModelScope job into its files: the recursive file list of the revision, the
/// filter, then one record per file.
pub async fn resolve(
    engine: &Engine,
    job: &JobRecord,
    src: &MsSource,
    credentials: &Credentials,
) -> Result<super::Resolved, FetchError> {
    let endpoints = endpoints(job, &engine.settings().sources);
    let revision = requested_revision(job, src);
    let (endpoint, entries) = list_files(engine, src, &revision, &endpoints, credentials).await?;
    let wanted = filter(job, src, &revision, entries)?;
    let mut files = file_records(job, src, &revision, &endpoint, &endpoints, wanted)?;
    for file in &mut files {
        super::mark_if_present(job, file).await?;
    }
    Ok(super::Resolved {
        files,
        revision: Some(revision),
    })
}

/// Resolve a ModelScope job offline, from the cache's model folder alone (what an earlier
/// download left there). Opens no connection; files are taken as they are (the cache keeps no
/// hashes), from their `file://` URL when the job has a `--dest`.
pub async fn resolve_offline(
    job: &JobRecord,
    src: &MsSource,
) -> Result<super::Resolved, FetchError> {
    let root = modelscope_cache::cache_root(|k| super::env_value(&job.env, k));
    let rel = modelscope_cache::model_dir_rel(&src.owner, &src.name);
    let model_dir = root.join(&rel);
    let revision = requested_revision(job, src);
    let entries: Vec<MsEntry> = modelscope_cache::cached_files(&model_dir)
        .into_iter()
        .map(|(path, size)| MsEntry {
            path,
            kind: "blob".into(),
            sha256: None,
            size: Some(size),
            revision: None,
        })
        .collect();
    if entries.is_empty() {
        return Err(FetchError::failed(
            ErrorKind::NotFound,
            format!(
                "offline: {}/{} is not in the ModelScope cache ({} is empty or missing); download it once without --offline",
                src.owner,
                src.name,
                model_dir.display()
            ),
        ));
    }
    let wanted = filter(job, src, &revision, entries)?;
    let cache = job.layout == Layout::ModelScopeCache;
    let files = wanted
        .into_iter()
        .map(|entry| {
            let local = model_dir.join(&entry.path);
            let mut file = FileRecord::new(
                url::Url::from_file_path(&local)
                    .map(|u| u.to_string())
                    .unwrap_or_default(),
            );
            file.size = entry.size;
            file.source_path = Some(entry.path.clone());
            if cache {
                file.rel_path = Some(format!("{rel}/{}", entry.path));
                file.state = mdl_protocol::FileState::Completed;
                file.note = Some("in the cache (offline)".into());
            } else {
                file.rel_path = Some(entry.path);
            }
            file
        })
        .collect();
    Ok(super::Resolved {
        files,
        revision: Some(revision),
    })
}

/// The install step of a job in the ModelScope cache, once every file is in place: the SDK's
/// index files in the model folder (`.mdl`, `.msc` with each file's commit, `.mv`) and its
/// link from a dotted name, so every `modelscope` version finds the download, offline too,
/// and fetches none of it again. An offline job (whose files have no listed commit) keeps the
/// index as it is, only adding `.mdl`.
pub fn install(job: &JobRecord, src: &MsSource, files: &[FileRecord]) -> Result<(), FetchError> {
    let model_dir = job
        .dest_dir
        .join(modelscope_cache::model_dir_rel(&src.owner, &src.name));
    let entries: Vec<modelscope_cache::IndexEntry> = files
        .iter()
        .filter_map(|f| {
            Some(modelscope_cache::IndexEntry {
                path: f.source_path.clone()?,
                revision: f.source_revision.clone()?,
            })
        })
        .collect();
    let revision = (!entries.is_empty()).then(|| requested_revision(job, src));
    std::fs::create_dir_all(&model_dir)
        .and_then(|()| {
            modelscope_cache::write_index(
                &model_dir,
                &src.owner,
                &src.name,
                &entries,
                revision.as_deref(),
            )
        })
        .map_err(|e| {
            crate::engine::io_failure("cannot write the ModelScope cache's index (.msc)", e)
        })?;
    if let Err(e) = modelscope_cache::link_dotted_name(&model_dir, &src.name) {
        tracing::warn!(
            "cannot link {}/{} to {}: {e}",
            src.owner,
            src.name,
            model_dir.display()
        );
    }
    Ok(())
}

/// The revision a job asks for: `--revision`, else the one in the source, else `master`
/// (`main` means `master` on ModelScope).
fn requested_revision(job: &JobRecord, src: &MsSource) -> String {
    let revision = job
        .revision
        .clone()
        .filter(|r| !r.trim().is_empty())
        .or_else(|| src.revision.clone())
        .unwrap_or_else(|| "master".to_string());
    if revision == "main" {
        "master".to_string()
    } else {
        revision
    }
}

/// Step 1: every entry of the revision (`Recursive=True`), with the endpoint that answered.
async fn list_files(
    engine: &Engine,
    src: &MsSource,
    revision: &str,
    endpoints: &[String],
    credentials: &Credentials,
) -> Result<(String, Vec<MsEntry>), FetchError> {
    let rev_q = utf8_percent_encode(revision, NON_ALPHANUMERIC);
    let list_path = format!(
        "/api/v1/models/{}/{}/repo/files?Revision={rev_q}&Recursive=True",
        src.owner, src.name
    );
    let response = http_meta::get(
        engine.http(),
        endpoints,
        &list_path,
        HeaderMap::new(),
        credentials,
        &engine.settings(),
    )
    .await?;
    let envelope: Envelope<FilesData> = match response.json() {
        Ok(e) => e,
        Err(_) if !response.is_success() => return Err(ms_error(&response, src, revision, None)),
        Err(e) => return Err(e),
    };
    let ok = response.is_success()
        && envelope.code.is_none_or(|c| c == 200)
        && envelope.success.unwrap_or(true);
    if !ok {
        return Err(ms_error(&response, src, revision, envelope.message));
    }
    let entries = envelope.data.and_then(|d| d.files).unwrap_or_default();
    Ok((response.endpoint, entries))
}

/// Step 2: the files the job wants (a path inside the repo, `--include`, `--exclude`), in
/// path order; none is an error.
fn filter(
    job: &JobRecord,
    src: &MsSource,
    revision: &str,
    entries: Vec<MsEntry>,
) -> Result<Vec<MsEntry>, FetchError> {
    let include = super::huggingface::compile_globs(&job.include)?;
    let exclude = super::huggingface::compile_globs(&job.exclude)?;
    let prefix = src.path.as_deref().map(|p| p.trim_matches('/').to_string());
    let matches_globs = |path: &str, set: &Option<GlobSet>, empty: bool| {
        set.as_ref().map_or(empty, |g| g.is_match(path))
    };
    let mut wanted: Vec<MsEntry> = entries
        .into_iter()
        .filter(|e| e.kind != "tree")
        .filter(|e| match &prefix {
            Some(p) if !p.is_empty() => e.path == *p || e.path.starts_with(&format!("{p}/")),
            _ => true,
        })
        .filter(|e| matches_globs(&e.path, &include, true))
        .filter(|e| !matches_globs(&e.path, &exclude, false))
        .collect();
    wanted.sort_by(|a, b| a.path.cmp(&b.path));
    if wanted.is_empty() {
        return Err(FetchError::failed(
            ErrorKind::NotFound,
            format!(
                "no file of {}/{} at {revision} matches the path, --include and --exclude",
                src.owner, src.name
            ),
        ));
    }
    Ok(wanted)
}

/// Step 3: one record per file, below the cache's model folder in the cache layout. A path
/// that is not a safe relative path is refused, naming the entry.
fn file_records(
    job: &JobRecord,
    src: &MsSource,
    revision: &str,
    endpoint: &str,
    endpoints: &[String],
    wanted: Vec<MsEntry>,
) -> Result<Vec<FileRecord>, FetchError> {
    let rev_q = utf8_percent_encode(revision, NON_ALPHANUMERIC).to_string();
    let base = if job.layout == Layout::ModelScopeCache {
        format!(
            "{}/",
            modelscope_cache::model_dir_rel(&src.owner, &src.name)
        )
    } else {
        String::new()
    };
    let mut files = Vec::new();
    for entry in wanted {
        let path = names::checked_repo_path(&entry.path).map_err(|why| {
            FetchError::failed(
                ErrorKind::Fatal,
                format!(
                    "ModelScope listed the file {:?} in {}/{}: {why}",
                    entry.path, src.owner, src.name
                ),
            )
        })?;
        let url_for = |ep: &str| {
            format!(
                "{}/api/v1/models/{}/{}/repo?Revision={rev_q}&FilePath={}",
                ep.trim_end_matches('/'),
                src.owner,
                src.name,
                utf8_percent_encode(&path, NON_ALPHANUMERIC)
            )
        };
        let mut file = FileRecord::new(url_for(endpoint));
        file.fallback_urls = endpoints
            .iter()
            .filter(|e| *e != endpoint)
            .map(|e| url_for(e))
            .collect();
        file.size = entry.size;
        file.sha256 = entry
            .sha256
            .filter(|s| s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()))
            .map(|s| s.to_ascii_lowercase());
        file.rel_path = Some(format!("{base}{path}"));
        file.source_path = Some(path);
        file.source_revision = entry.revision.filter(|r| !r.trim().is_empty());
        files.push(file);
    }
    Ok(files)
}

fn ms_error(
    response: &MetaResponse,
    src: &MsSource,
    revision: &str,
    message: Option<String>,
) -> FetchError {
    let message = message.or_else(|| {
        serde_json::from_slice::<serde_json::Value>(&response.body)
            .ok()
            .and_then(|v| {
                v.get("Message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
    });
    let said = message
        .map(|m| format!(" (ModelScope says: {m})"))
        .unwrap_or_default();
    let id = format!("{}/{}", src.owner, src.name);
    let (kind, text) = match response.status {
        401 | 403 => (
            ErrorKind::Auth,
            format!(
                "access to {id} was refused: if it is private, set MODELSCOPE_API_TOKEN (or pass --token) to a token with access (https://modelscope.cn/my/myaccesstoken){said}"
            ),
        ),
        404 => (
            ErrorKind::NotFound,
            format!("{id} (revision {revision:?}) not found on {}: check the name and --revision{said}", crate::job::redact_url(&response.endpoint)),
        ),
        200..=299 => (
            ErrorKind::Fatal,
            format!("ModelScope refused to list {id} at {revision:?}{said}"),
        ),
        _ => {
            let FetchError::Failed { kind, message, .. } = response.failure() else {
                unreachable!("failure() is always Failed")
            };
            (kind, format!("{message}{said}"))
        }
    };
    FetchError::Failed {
        kind,
        message: text,
        status: Some(response.status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let s = parse("ms://acme/tiny@v1/onnx").unwrap();
        assert_eq!(
            (
                s.owner.as_str(),
                s.name.as_str(),
                s.revision.as_deref(),
                s.path.as_deref()
            ),
            ("acme", "tiny", Some("v1"), Some("onnx"))
        );
        let s = parse("https://www.modelscope.cn/models/acme/tiny/files").unwrap();
        assert_eq!((s.owner.as_str(), s.name.as_str()), ("acme", "tiny"));
        let s = parse("https://modelscope.ai/models/acme/tiny/resolve/master/a/b.bin").unwrap();
        assert_eq!(s.revision.as_deref(), Some("master"));
        assert_eq!(s.path.as_deref(), Some("a/b.bin"));
        assert!(matches("https://www.modelscope.cn/models/a/b", &[]));
        assert!(!matches("https://example.com/models/a/b", &[]));
    }
}
