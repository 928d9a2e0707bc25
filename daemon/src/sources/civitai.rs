//! Civitai (`shared/specs/civitai.md`): `civitai://MODEL[@VERSION]`,
//! `https://civitai.com/models/ID[?modelVersionId=V]`, AIR URNs
//! (`urn:air:sdxl:checkpoint:civitai:MODEL@VERSION`) and search batches
//! (`civitai://search?query=...&types=LORA&sort=Most%20Downloaded&limit=N`).
//!
//! Resolution reads `GET /api/v1/models/{id}` (newest version = `modelVersions[0]`, or the one
//! asked for), picks one file (the primary one, SafeTensor preferred over PickleTensor, narrowed
//! by `--option format=`/`fp=`/`size=`/`type=`/`file=`), and downloads it through
//! `/api/download/models/{versionId}` (§4), which redirects to a presigned storage URL. The token
//! (`--token`, else `CIVITAI_TOKEN` / `CIVITAI_API_KEY` from the caller's environment, else the
//! daemon's) goes only to the Civitai host, as `Authorization: Bearer`, never in a query. The
//! API's upper-case `SHA256` is verified (lowercased). Files land under a path template
//! (`{type}/{creator}/{name}/{version}` by default, `--option template=...`) or a layout preset
//! (`--option layout=comfyui|a1111`, routed by model type).

use mdl_protocol::{AddRequest, ErrorKind};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION};
use serde_json::Value;

use crate::engine::{names, Engine, FetchError};
use crate::job::{CivitaiTarget as Target, FileRecord, JobRecord, Layout};
use crate::settings::SourceSettings;

use super::{job_env, Credentials, Resolved};

/// The public site.
pub const DEFAULT_ENDPOINT: &str = "https://civitai.com";
/// The environment variable overriding the API base URL (forwarded from the caller).
pub const ENDPOINT_ENV: &str = "CIVITAI_ENDPOINT";
/// The token variables, in lookup order.
pub const TOKEN_ENVS: [&str; 2] = ["CIVITAI_TOKEN", "CIVITAI_API_KEY"];
/// The default directory template below the destination.
pub const DEFAULT_TEMPLATE: &str = "{type}/{creator}/{name}/{version}";
/// Most results a search batch may queue.
pub const MAX_SEARCH_RESULTS: usize = 500;
/// The most pages a search may take (pages without usable results count too).
pub const MAX_SEARCH_PAGES: usize = 200;

/// Whether `source` is a Civitai source (without validating it).
pub fn is_civitai(source: &str) -> bool {
    let lower = source.trim().to_ascii_lowercase();
    lower.starts_with("civitai://")
        || (lower.starts_with("urn:air:") && lower.contains(":civitai:"))
        || url::Url::parse(source.trim()).is_ok_and(|u| {
            u.host_str().is_some_and(|h| {
                let h = h.to_ascii_lowercase();
                (h == "civitai.com" || h.ends_with(".civitai.com"))
                    && u.path().to_ascii_lowercase().starts_with("/models/")
            })
        })
}

/// The query of a search source (`civitai://search?...`), or `None` for any other source.
pub fn search_pairs(source: &str) -> Option<Vec<(String, String)>> {
    if !is_civitai(source) {
        return None;
    }
    match parse(source) {
        Ok(Target::Search(pairs)) => Some(pairs),
        _ => None,
    }
}

/// Parse a Civitai source string.
pub fn parse(source: &str) -> Result<Target, String> {
    let s = source.trim();
    let lower = s.to_ascii_lowercase();
    let bad = || {
        format!(
            "invalid Civitai source {s:?}: expected civitai://MODEL[@VERSION], \
             https://civitai.com/models/ID[?modelVersionId=V], urn:air:...:civitai:MODEL@VERSION \
             or civitai://search?query=..."
        )
    };
    if lower.starts_with("urn:air:") {
        // urn:air:{ecosystem}:{type}:civitai:{model}@{version}[.{format}]
        let rest = s.rsplit(':').next().ok_or_else(bad)?;
        let rest = rest.split('.').next().unwrap_or(rest);
        return model_at_version(rest).ok_or_else(bad);
    }
    if let Some(rest) = super::strip_prefix_ignore_case(s, "civitai://") {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let path = path.trim_end_matches('/');
        if path.eq_ignore_ascii_case("search") || path.eq_ignore_ascii_case("models") {
            let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            return Ok(Target::Search(pairs));
        }
        if let Some(v) = super::strip_prefix_ignore_case(path, "version/")
            .or_else(|| super::strip_prefix_ignore_case(path, "versions/"))
            .or_else(|| super::strip_prefix_ignore_case(path, "@"))
        {
            return v.parse().map(Target::Version).map_err(|_| bad());
        }
        let path = super::strip_prefix_ignore_case(path, "models/").unwrap_or(path);
        let target = model_at_version(path).ok_or_else(bad)?;
        // civitai://ID?modelVersionId=V
        let version = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "modelVersionId" || k == "version")
            .and_then(|(_, v)| v.parse().ok());
        return Ok(match (target, version) {
            (
                Target::Model {
                    model,
                    version: None,
                },
                Some(v),
            ) => Target::Model {
                model,
                version: Some(v),
            },
            (t, _) => t,
        });
    }
    let url = url::Url::parse(s).map_err(|_| bad())?;
    let mut segments = url.path_segments().ok_or_else(bad)?;
    if !segments
        .next()
        .is_some_and(|p| p.eq_ignore_ascii_case("models"))
    {
        return Err(bad());
    }
    let model = segments
        .next()
        .and_then(|id| id.parse::<u64>().ok())
        .ok_or_else(bad)?;
    let version = url
        .query_pairs()
        .find(|(k, _)| k == "modelVersionId")
        .and_then(|(_, v)| v.parse().ok());
    Ok(Target::Model { model, version })
}

fn model_at_version(s: &str) -> Option<Target> {
    let (model, version) = match s.split_once('@') {
        Some((m, v)) => (m, Some(v.parse().ok()?)),
        None => (s, None),
    };
    Some(Target::Model {
        model: model.parse().ok()?,
        version,
    })
}

/// The API endpoints for a job, in the order to try them: the caller's `CIVITAI_ENDPOINT`
/// (else the daemon's), then the config file's `[sources] civitai_endpoints`, then
/// <https://civitai.com>.
pub fn endpoints(job: &JobRecord, sources: &SourceSettings) -> Vec<String> {
    let env_override = job_env(job, ENDPOINT_ENV)
        .map(|s| s.expose().to_string())
        .or_else(|| std::env::var(ENDPOINT_ENV).ok())
        .filter(|s| !s.trim().is_empty());
    super::http_meta::endpoint_list(env_override, &sources.civitai_endpoints, DEFAULT_ENDPOINT)
}

/// The first API endpoint for a job (where download URLs are built).
pub fn endpoint(job: &JobRecord, sources: &SourceSettings) -> String {
    endpoints(job, sources).remove(0)
}

/// The token for a job: `--token`, else the caller's `CIVITAI_TOKEN` / `CIVITAI_API_KEY`, else
/// the daemon's.
pub fn token(job: &JobRecord) -> Option<String> {
    if let Some(t) = &job.token {
        return Some(t.expose().to_string());
    }
    TOKEN_ENVS
        .iter()
        .find_map(|name| job_env(job, name).map(|s| s.expose().to_string()))
        .or_else(|| TOKEN_ENVS.iter().find_map(|name| std::env::var(name).ok()))
        .filter(|t| !t.trim().is_empty())
}

/// `Authorization: Bearer <token>` for the Civitai API endpoints (the configured ones and
/// <https://civitai.com>); never the storage host, never in a query.
pub fn credentials(job: &JobRecord, sources: &SourceSettings) -> Credentials {
    match token(job) {
        Some(token) => Credentials::for_origins_of(&endpoints(job, sources))
            .with(AUTHORIZATION, &format!("Bearer {token}")),
        None => Credentials::none(),
    }
}

/// A job option's value (`--option key=value`), keys case-insensitive.
fn option<'a>(job: &'a JobRecord, key: &str) -> Option<&'a str> {
    job.options
        .iter()
        .rev()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Options this source understands (others are refused at add time).
pub const OPTIONS: [&str; 7] = ["format", "fp", "size", "type", "file", "layout", "template"];

/// Check a Civitai add's options before queueing.
pub fn validate_options(options: &[(String, String)]) -> Result<(), String> {
    for (k, v) in options {
        if k == crate::engine::proxy::OFFLINE_OPTION {
            continue; // every source's (`--offline`)
        }
        if !OPTIONS.iter().any(|o| o.eq_ignore_ascii_case(k)) {
            return Err(format!(
                "unknown Civitai option {k:?}; known: {}",
                OPTIONS.join(", ")
            ));
        }
        if k.eq_ignore_ascii_case("layout") && layout_dir("Checkpoint", v).is_none() {
            return Err(format!(
                "unknown layout {v:?}: expected comfyui, a1111 or default"
            ));
        }
        if k.eq_ignore_ascii_case("file") && v.parse::<u64>().is_err() {
            return Err(format!("--option file= takes a file id, got {v:?}"));
        }
    }
    Ok(())
}

/// GET a JSON document from the Civitai API (`path_and_query` below the endpoint) through
/// [`super::http_meta`] (retries for 429 / 5xx / network errors); a final 401/403 becomes
/// `Auth`, 404/410 `NotFound`, other 4xx `Fatal`, with Civitai's `error` / `message` text.
async fn get_json(
    engine: &Engine,
    job: &JobRecord,
    credentials: &Credentials,
    base: &str,
    path_and_query: &str,
) -> Result<Value, FetchError> {
    let sources = &engine.settings().sources;
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    // The job's endpoint first, then the other configured ones (mirror fallback).
    let mut endpoints = endpoints(job, sources);
    endpoints.retain(|e| e != base);
    endpoints.insert(0, base.to_string());
    let response = super::http_meta::get(
        engine.http(),
        &endpoints,
        path_and_query,
        headers,
        credentials,
        &engine.settings(),
    )
    .await?;
    if response.is_success() {
        return response.json();
    }
    let status = response.status;
    let detail = error_message(&response.body);
    let message = format!(
        "HTTP {status} from {}{}",
        crate::job::redact_url(&response.url),
        detail.map(|d| format!(": {d}")).unwrap_or_default()
    );
    let (kind, hint) = match status {
        401 | 403 => (ErrorKind::Auth, "; set CIVITAI_TOKEN or pass --token"),
        404 | 410 => (ErrorKind::NotFound, ""),
        _ => return Err(response.failure()),
    };
    Err(FetchError::Failed {
        kind,
        message: format!("{message}{hint}"),
        status: Some(status),
    })
}

/// The `error` / `message` of a Civitai error body, as text.
fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    };
    match (
        v.get("error").and_then(text),
        v.get("message").and_then(text),
    ) {
        (Some(e), Some(m)) => Some(format!("{e} ({m})")),
        (e, m) => e.or(m),
    }
}

/// `GET /api/v1/model-versions/{vid}`.
async fn get_version(
    engine: &Engine,
    job: &JobRecord,
    credentials: &Credentials,
    base: &str,
    vid: u64,
) -> Result<Value, FetchError> {
    let path = format!("/api/v1/model-versions/{vid}");
    get_json(engine, job, credentials, base, &path).await
}

/// A model and the chosen version, from the API.
struct Chosen {
    model_id: u64,
    model_name: String,
    model_type: String,
    creator: String,
    version: Value,
}

async fn choose_version(
    engine: &Engine,
    job: &JobRecord,
    credentials: &Credentials,
    base: &str,
    target: &Target,
) -> Result<Chosen, FetchError> {
    let (model_id, mut version_id) = match target {
        Target::Model { model, version } => (Some(*model), *version),
        Target::Version(v) => (None, Some(*v)),
        Target::Search(_) => {
            return Err(FetchError::failed(
                ErrorKind::InvalidRequest,
                "a Civitai search is expanded when added, not resolved as one job",
            ))
        }
    };
    if let Some(rev) = job.revision.as_deref().filter(|r| !r.is_empty()) {
        version_id = Some(rev.parse().map_err(|_| {
            FetchError::failed(
                ErrorKind::InvalidRequest,
                format!("--revision for Civitai is a model version id, got {rev:?}"),
            )
        })?);
    }
    let model_id = match model_id {
        Some(id) => id,
        None => {
            let vid = version_id.unwrap_or_default();
            let v = get_version(engine, job, credentials, base, vid).await?;
            v["modelId"].as_u64().ok_or_else(|| {
                FetchError::failed(
                    ErrorKind::Fatal,
                    format!("Civitai version {vid} has no modelId"),
                )
            })?
        }
    };
    let model = get_json(
        engine,
        job,
        credentials,
        base,
        &format!("/api/v1/models/{model_id}"),
    )
    .await?;
    if model["mode"].as_str() == Some("Archived") || model["mode"].as_str() == Some("TakenDown") {
        return Err(FetchError::failed(
            ErrorKind::NotFound,
            format!(
                "Civitai model {model_id} is {} and cannot be downloaded",
                model["mode"].as_str().unwrap_or_default()
            ),
        ));
    }
    let versions = model["modelVersions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let version = match version_id {
        None => versions.first().cloned().ok_or_else(|| {
            FetchError::failed(
                ErrorKind::NotFound,
                format!("Civitai model {model_id} has no published version"),
            )
        })?,
        Some(vid) => match versions.iter().find(|v| v["id"].as_u64() == Some(vid)) {
            Some(v) => v.clone(),
            None => {
                let v = get_version(engine, job, credentials, base, vid).await?;
                if v["modelId"].as_u64() != Some(model_id) {
                    return Err(FetchError::failed(
                        ErrorKind::NotFound,
                        format!("version {vid} does not belong to Civitai model {model_id}"),
                    ));
                }
                v
            }
        },
    };
    Ok(Chosen {
        model_id,
        model_name: model["name"].as_str().unwrap_or("model").to_string(),
        model_type: model["type"].as_str().unwrap_or("Other").to_string(),
        creator: model["creator"]["username"]
            .as_str()
            .unwrap_or("unknown")
            .to_string(),
        version,
    })
}

/// Rank of a format when the user did not ask for one: SafeTensor first, PickleTensor last.
fn format_rank(format: Option<&str>) -> u8 {
    match format {
        Some(f) if f.eq_ignore_ascii_case("SafeTensor") => 0,
        Some(f) if f.eq_ignore_ascii_case("PickleTensor") => 2,
        _ => 1,
    }
}

/// Choose the file of a version for the job's options.
fn choose_file(job: &JobRecord, version: &Value) -> Result<Value, FetchError> {
    let files = version["files"].as_array().cloned().unwrap_or_default();
    if files.is_empty() {
        return Err(FetchError::failed(
            ErrorKind::NotFound,
            format!(
                "Civitai version {} has no downloadable files",
                version["id"]
            ),
        ));
    }
    if let Some(id) = option(job, "file") {
        return files
            .iter()
            .find(|f| f["id"].as_u64().is_some_and(|n| n.to_string() == id))
            .cloned()
            .ok_or_else(|| {
                FetchError::failed(
                    ErrorKind::NotFound,
                    format!("version {} has no file {id}", version["id"]),
                )
            });
    }
    let meta = |f: &Value, k: &str| f["metadata"][k].as_str().map(str::to_string);
    let want_type = option(job, "type");
    let mut candidates: Vec<&Value> = match want_type {
        Some(t) => files
            .iter()
            .filter(|f| {
                f["type"]
                    .as_str()
                    .is_some_and(|x| x.eq_ignore_ascii_case(t))
            })
            .collect(),
        None => {
            let models: Vec<&Value> = files
                .iter()
                .filter(|f| {
                    f["primary"].as_bool() == Some(true)
                        || matches!(f["type"].as_str(), Some("Model" | "Pruned Model"))
                })
                .collect();
            if models.is_empty() {
                files.iter().collect()
            } else {
                models
            }
        }
    };
    for key in ["format", "fp", "size"] {
        if let Some(want) = option(job, key) {
            candidates.retain(|f| meta(f, key).is_some_and(|v| v.eq_ignore_ascii_case(want)));
        }
    }
    if candidates.is_empty() {
        let available: Vec<String> = files
            .iter()
            .map(|f| {
                format!(
                    "{} ({} {} {} {})",
                    f["name"].as_str().unwrap_or("?"),
                    f["type"].as_str().unwrap_or("?"),
                    meta(f, "format").unwrap_or_default(),
                    meta(f, "fp").unwrap_or_default(),
                    meta(f, "size").unwrap_or_default()
                )
            })
            .collect();
        return Err(FetchError::failed(
            ErrorKind::NotFound,
            format!(
                "no file of Civitai version {} matches the options; available: {}",
                version["id"],
                available.join(", ")
            ),
        ));
    }
    let chosen = candidates
        .iter()
        .enumerate()
        .min_by_key(|(i, f)| {
            (
                format_rank(meta(f, "format").as_deref()),
                f["primary"].as_bool() != Some(true),
                *i,
            )
        })
        .map(|(_, f)| (*f).clone())
        .expect("candidates is not empty");
    Ok(chosen)
}

/// The directory of a layout preset for a model type (`None`: unknown layout).
pub fn layout_dir(model_type: &str, layout: &str) -> Option<String> {
    let t = model_type.to_ascii_lowercase();
    let (comfy, a1111) = match t.as_str() {
        "checkpoint" => ("models/checkpoints", "models/Stable-diffusion"),
        "lora" | "locon" | "dora" => ("models/loras", "models/Lora"),
        "textualinversion" => ("models/embeddings", "embeddings"),
        "hypernetwork" => ("models/hypernetworks", "models/hypernetworks"),
        "vae" => ("models/vae", "models/VAE"),
        "controlnet" => ("models/controlnet", "models/ControlNet"),
        "upscaler" => ("models/upscale_models", "models/ESRGAN"),
        "motionmodule" => (
            "models/animatediff_models",
            "extensions/sd-webui-animatediff/model",
        ),
        "textencoder" | "clip" => ("models/text_encoders", "models/text_encoder"),
        "unet" => ("models/diffusion_models", "models/Stable-diffusion"),
        "clipvision" => ("models/clip_vision", "models/clip_vision"),
        "poses" => ("models/poses", "models/openpose"),
        "wildcards" => ("wildcards", "extensions/sd-dynamic-prompts/wildcards"),
        "workflows" | "comfyworkflows" => ("user/default/workflows", "workflows"),
        "detection" => ("models/ultralytics", "models/adetailer"),
        _ => ("models/other", "models/other"),
    };
    match layout.to_ascii_lowercase().as_str() {
        "comfyui" | "comfy" => Some(comfy.to_string()),
        "a1111" | "automatic1111" | "webui" | "forge" => Some(a1111.to_string()),
        "default" | "" => Some(String::new()),
        _ => None,
    }
}

/// Expand a directory template; each field is sanitized as one path component.
#[allow(clippy::too_many_arguments)]
pub fn expand_template(
    template: &str,
    model_type: &str,
    creator: &str,
    name: &str,
    version: &str,
    model_id: u64,
    version_id: u64,
    base_model: &str,
) -> Option<String> {
    let clean = |s: &str| names::sanitize_file_name(s).unwrap_or_else(|| "_".to_string());
    let expanded = template
        .replace("{type}", &clean(model_type))
        .replace("{creator}", &clean(creator))
        .replace("{name}", &clean(name))
        .replace("{version}", &clean(version))
        .replace("{model_id}", &model_id.to_string())
        .replace("{version_id}", &version_id.to_string())
        .replace("{base_model}", &clean(base_model));
    if expanded.trim_matches('/').is_empty() {
        return Some(String::new());
    }
    names::sanitize_relative_path(&expanded)
}

/// Resolve a Civitai job into its one file.
pub async fn resolve(
    engine: &Engine,
    job: &JobRecord,
    target: &Target,
    credentials: &Credentials,
) -> Result<Resolved, FetchError> {
    let base = endpoint(job, &engine.settings().sources);
    let chosen = choose_version(engine, job, credentials, &base, target).await?;
    let file = choose_file(job, &chosen.version)?;
    let vid = chosen.version["id"].as_u64().unwrap_or_default();
    let version_name = chosen.version["name"].as_str().unwrap_or("version");
    let api_name = file["name"].as_str().unwrap_or_default();
    let file_name = job
        .file_name
        .clone()
        .or_else(|| names::sanitize_file_name(api_name))
        .unwrap_or_else(|| format!("civitai-{vid}.bin"));
    // The template or layout applies to the default destination, or when asked for; an
    // explicit `--dest` alone means "put the file here".
    let templated = job.layout == Layout::CivitaiTemplate
        || option(job, "layout").is_some()
        || option(job, "template").is_some();
    let dir = match option(job, "layout").filter(|l| !l.eq_ignore_ascii_case("default")) {
        _ if !templated => String::new(),
        Some(layout) => layout_dir(&chosen.model_type, layout).ok_or_else(|| {
            FetchError::failed(
                ErrorKind::InvalidRequest,
                format!("unknown layout {layout:?}"),
            )
        })?,
        None => expand_template(
            option(job, "template").unwrap_or(DEFAULT_TEMPLATE),
            &chosen.model_type,
            &chosen.creator,
            &chosen.model_name,
            version_name,
            chosen.model_id,
            vid,
            chosen.version["baseModel"].as_str().unwrap_or(""),
        )
        .ok_or_else(|| {
            FetchError::failed(ErrorKind::InvalidRequest, "the path template is unusable")
        })?,
    };
    let download_url = file["downloadUrl"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{base}/api/download/models/{vid}"));
    // `?fileId=` selects exactly this file and skips the server's misalignment check (§4.2);
    // the API's own URL stays as a fallback.
    let by_id = match (url::Url::parse(&download_url), file["id"].as_u64()) {
        (Ok(mut u), Some(fid)) => {
            u.set_query(Some(&format!("fileId={fid}")));
            u.to_string()
        }
        _ => download_url.clone(),
    };
    let mut record = FileRecord::new(by_id.clone());
    if by_id != download_url {
        record.fallback_urls.push(download_url);
    }
    record.rel_path = Some(if dir.is_empty() {
        file_name
    } else {
        format!("{dir}/{file_name}")
    });
    record.sha256 = file["hashes"]["SHA256"]
        .as_str()
        .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
        .or_else(|| job.sha256.clone());
    record.md5 = job.md5.clone();
    if record.sha256.is_none() {
        record.note = Some("Civitai lists no SHA256 for this file: not verified".to_string());
    }
    record.source_path = Some(api_name.to_string());
    Ok(Resolved {
        files: vec![record],
        revision: Some(vid.to_string()),
    })
}

/// A job record standing for an add request, for endpoint and token lookups.
fn probe_job(request: &AddRequest, target: Target) -> JobRecord {
    let source = crate::job::Source::Civitai(target);
    JobRecord::from_add(
        request,
        source,
        crate::job::Layout::Plain,
        Default::default(),
    )
}

/// Expand a search source into one add per model: `GET /api/v1/models` with the query's
/// filters, following `nextCursor` until `limit` models (default 20, at most
/// [`MAX_SEARCH_RESULTS`]) are collected, `per_page` per request (default `limit`, at most
/// 100). Each add pins the newest version.
pub async fn expand_search(
    engine: &Engine,
    request: &AddRequest,
    pairs: &[(String, String)],
) -> Result<Vec<AddRequest>, FetchError> {
    let job = probe_job(request, Target::Search(pairs.to_vec()));
    let sources = &engine.settings().sources;
    let base = endpoint(&job, sources);
    let credentials = credentials(&job, sources);
    let want = pairs
        .iter()
        .find(|(k, _)| k == "limit")
        .map(|(_, v)| {
            v.parse::<usize>().map_err(|_| {
                FetchError::failed(
                    ErrorKind::InvalidRequest,
                    format!("limit must be a number, got {v:?}"),
                )
            })
        })
        .transpose()?
        .unwrap_or(20)
        .clamp(1, MAX_SEARCH_RESULTS);
    let per_page = pairs
        .iter()
        .find(|(k, _)| k == "per_page")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(want)
        .clamp(1, 100);
    let mut query: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| !["limit", "per_page", "cursor", "page", "token"].contains(&k.as_str()))
        .cloned()
        .collect();
    query.push(("limit".into(), per_page.to_string()));
    let mut adds = Vec::new();
    let mut cursor: Option<String> = None;
    let mut seen_cursors = std::collections::HashSet::new();
    for page_number in 1.. {
        if page_number > MAX_SEARCH_PAGES {
            return Err(FetchError::failed(
                ErrorKind::Fatal,
                format!("the Civitai search gave {} results in {MAX_SEARCH_PAGES} pages; stopping (narrow the query)", adds.len()),
            ));
        }
        let encoded = {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in &query {
                q.append_pair(k, v);
            }
            if let Some(c) = &cursor {
                q.append_pair("cursor", c);
            }
            q.finish()
        };
        let page = get_json(
            engine,
            &job,
            &credentials,
            &base,
            &format!("/api/v1/models?{encoded}"),
        )
        .await?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        for item in &items {
            if adds.len() >= want {
                break;
            }
            let Some(id) = item["id"].as_u64() else {
                continue;
            };
            let source = match item["modelVersions"][0]["id"].as_u64() {
                Some(v) => format!("civitai://{id}@{v}"),
                None => format!("civitai://{id}"),
            };
            adds.push(AddRequest {
                source,
                ..request.clone()
            });
        }
        cursor = page["metadata"]["nextCursor"]
            .as_str()
            .map(str::to_string)
            .or_else(|| {
                page["metadata"]["nextCursor"]
                    .as_u64()
                    .map(|n| n.to_string())
            });
        if adds.len() >= want || items.is_empty() {
            break;
        }
        match &cursor {
            None => break,
            Some(c) if !seen_cursors.insert(c.clone()) => {
                return Err(FetchError::failed(
                    ErrorKind::Fatal,
                    format!("the Civitai search repeated its cursor {c:?}; stopping"),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(adds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_api_never_make_directories_or_escape() {
        let hostile = [
            "../../..",
            "a/b",
            "..\\x",
            "evil\u{0}name",
            "/etc",
            ".",
            "c\nd",
        ];
        for creator in hostile {
            for name in hostile {
                let path = expand_template(
                    DEFAULT_TEMPLATE,
                    "LORA",
                    creator,
                    name,
                    "v1/../../x",
                    1,
                    2,
                    "",
                )
                .unwrap();
                let parts: Vec<&str> = path.split('/').collect();
                assert_eq!(parts.len(), 4, "{creator:?} {name:?} made {path:?}");
                assert!(
                    parts.iter().all(|p| !p.is_empty()
                        && *p != ".."
                        && *p != "."
                        && !p.chars().any(char::is_control)),
                    "{path:?}"
                );
            }
        }
    }

    #[test]
    fn parses_every_source_form() {
        assert_eq!(
            parse("civitai://827184").unwrap(),
            Target::Model {
                model: 827184,
                version: None
            }
        );
        assert_eq!(
            parse("civitai://827184@2514310").unwrap(),
            Target::Model {
                model: 827184,
                version: Some(2514310)
            }
        );
        assert_eq!(
            parse("https://civitai.com/models/827184/wai?modelVersionId=2514310").unwrap(),
            Target::Model {
                model: 827184,
                version: Some(2514310)
            }
        );
        assert_eq!(
            parse("urn:air:sdxl:checkpoint:civitai:827184@2514310").unwrap(),
            Target::Model {
                model: 827184,
                version: Some(2514310)
            }
        );
        assert_eq!(
            parse("urn:air:sdxl:lora:civitai:1@2.safetensors").unwrap(),
            Target::Model {
                model: 1,
                version: Some(2)
            }
        );
        assert!(matches!(
            parse("civitai://search?query=x&limit=3").unwrap(),
            Target::Search(p) if p.contains(&("limit".into(), "3".into()))
        ));
        assert!(parse("civitai://abc").is_err());
        assert!(is_civitai("https://civitai.com/models/1"));
        assert!(!is_civitai("https://civitai.com/api/download/models/1"));
        assert!(!is_civitai("https://example.com/models/1"));
    }

    #[test]
    fn templates_and_layouts() {
        assert_eq!(
            expand_template(
                DEFAULT_TEMPLATE,
                "LORA",
                "me/you",
                "A: b",
                "v1.0",
                1,
                2,
                "SDXL"
            )
            .as_deref(),
            Some("LORA/you/A_ b/v1.0")
        );
        assert_eq!(
            layout_dir("Checkpoint", "comfyui").as_deref(),
            Some("models/checkpoints")
        );
        assert_eq!(
            layout_dir("TextualInversion", "a1111").as_deref(),
            Some("embeddings")
        );
        assert_eq!(layout_dir("LORA", "nope"), None);
    }
}
