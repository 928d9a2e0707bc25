//! A mock of Civitai, following `shared/specs/civitai.md`.
//!
//! Two hosts: the **API** (`/api/v1/models`, `/api/v1/models/{id}`,
//! `/api/v1/model-versions/{id}`, `/api/v1/model-versions/by-hash/{hash}` and
//! `/api/download/models/{versionId}`) and an S3/R2-style **storage** host:port that the
//! download endpoint redirects to with a `307` and a presigned, expiring URL (§4, §8).
//!
//! Choices where the spec leaves room:
//! * The token is read like the server does: the second word of `Authorization`
//!   (`split(' ')[1]`, scheme unchecked; a header without a space gives no token); only
//!   without an `Authorization` header does `?token=` count. An unknown token means anonymous. `?token=` is accepted
//!   as on the real site; [`CivitaiMock::set_reject_query_token`] makes the mock answer `400`
//!   instead, and [`CivitaiMock::requests_with_query_token`] lists offenders either way.
//! * Site-wide `UNAUTHENTICATED_DOWNLOAD` is on by default, so only versions with
//!   `require_auth` need a token ([`CivitaiMock::set_unauthenticated_download`] turns it off,
//!   as on the real site in 2026).
//! * A version's "primary" file is the one flagged `primary`, else its first `Model` file,
//!   else its first file; a version without files is "Missing model file".
//! * File choice without `fileId`: among files of the requested `type` (or all), the one
//!   matching most of `format`/`size`/`fp`/`quantType`, primary first; then the misalignment
//!   check (§4.3 step 7) turns any disagreeing filter into `404 File not found`.
//! * `query` search is a case-insensitive substring match on the model name; sorts other than
//!   rating, downloads and date fall back to downloads. `limit=0` means the default (100).
//! * Hashes other than `SHA256`/`AutoV2`/`CRC32` (`AutoV1`, `AutoV3`, `BLAKE3`) are made-up but
//!   stable. `/api/v1/model-versions/mini/{id}` and the batch by-hash `POST`s are not mocked.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::common::{
    amz_date, enc, encode_query, header_str, hv, iso8601, json_response, query_get, query_pairs,
    random_hex, raw_segments, text_response, xml_error, SignError, COMPONENT,
};
use super::storage::{Mock, StorageHost, StorageRules, SIGNATURE_MISMATCH};
use crate::content::{md5_hex, sha1_hex, sha256_hex};
use crate::serve::entity::answer;
use crate::serve::{lock, Body, Fault, Request, RequestRecord, Response};

const JSON_CT: &str = "application/json; charset=utf-8";
const PUBLIC_CACHE: &str = "public, s-maxage=300, stale-while-revalidate=150";
const HASH_CACHE: &str = "public, s-maxage=3600, stale-while-revalidate=1800";
const NO_STORE: &str = "no-store, max-age=0";
const CREATED_AT: u64 = 1_766_048_100;

/// `ModelType` values (§2).
pub const MODEL_TYPES: [&str; 23] = [
    "Checkpoint",
    "TextualInversion",
    "Hypernetwork",
    "AestheticGradient",
    "LORA",
    "LoCon",
    "DoRA",
    "Controlnet",
    "Upscaler",
    "MotionModule",
    "VAE",
    "TextEncoder",
    "UNet",
    "CLIPVision",
    "Poses",
    "Wildcards",
    "Workflows",
    "ComfyWorkflows",
    "Detection",
    "VisionLanguage",
    "CLIP",
    "LLM",
    "Other",
];

/// `files[].type` values (§2).
pub const FILE_TYPES: [&str; 17] = [
    "Model",
    "Text Encoder",
    "Vision Encoder",
    "Pruned Model",
    "Negative",
    "Training Data",
    "VAE",
    "Config",
    "Archive",
    "UNet",
    "Diffusion Model",
    "CLIPVision",
    "ControlNet",
    "Workflow",
    "Upscaler",
    "Enhancement LoRA",
    "Other",
];

/// `metadata.format` values (§2).
pub const FORMATS: [&str; 7] = [
    "SafeTensor",
    "PickleTensor",
    "GGUF",
    "Diffusers",
    "Core ML",
    "ONNX",
    "Other",
];

const SORTS: [&str; 8] = [
    "Highest Rated",
    "Most Downloaded",
    "Most Liked",
    "Most Discussed",
    "Most Collected",
    "Most Images",
    "Newest",
    "Oldest",
];
const PERIODS: [&str; 5] = ["AllTime", "Year", "Month", "Week", "Day"];

/// How the storage host's `Content-Disposition` names the file (§4.4, §8.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// `attachment; filename="<name>"`, non-ASCII raw inside the quotes (Civitai's own signer).
    Plain,
    /// `attachment; filename*=UTF-8''<percent-encoded>` only.
    Rfc5987,
    /// `attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded>`.
    Both,
    /// No `Content-Disposition` at all.
    Absent,
}

/// One file of a model version.
#[derive(Debug, Clone)]
pub struct CivitaiFile {
    /// `files[].id` (what `?fileId=` selects).
    pub id: u64,
    /// `files[].name`, the download filename.
    pub name: String,
    /// `files[].type`, one of [`FILE_TYPES`].
    pub file_type: String,
    /// Preferred as the version's primary file.
    pub primary: bool,
    /// `metadata.format`.
    pub format: Option<String>,
    /// `metadata.size` (`full` / `pruned`).
    pub size: Option<String>,
    /// `metadata.fp`.
    pub fp: Option<String>,
    /// `quantType` (used by download filters; not shown by the public API).
    pub quant_type: Option<String>,
    /// The bytes the storage host serves.
    pub content: Bytes,
    /// Whether `hashes` includes `SHA256` (and `AutoV2`).
    pub include_sha256: bool,
    /// The storage host's `Content-Disposition` style.
    pub disposition: Disposition,
}

impl CivitaiFile {
    /// A non-primary `Model` file in `SafeTensor` format with a plain `Content-Disposition`.
    pub fn new(id: u64, name: impl Into<String>, content: impl Into<Bytes>) -> CivitaiFile {
        CivitaiFile {
            id,
            name: name.into(),
            file_type: "Model".to_string(),
            primary: false,
            format: Some("SafeTensor".to_string()),
            size: None,
            fp: None,
            quant_type: None,
            content: content.into(),
            include_sha256: true,
            disposition: Disposition::Plain,
        }
    }

    /// Marks the file primary.
    pub fn primary(mut self) -> CivitaiFile {
        self.primary = true;
        self
    }

    /// Sets `type`.
    pub fn file_type(mut self, t: &str) -> CivitaiFile {
        self.file_type = t.to_string();
        self
    }

    /// Sets `metadata.format` (`None` to omit it).
    pub fn format(mut self, f: Option<&str>) -> CivitaiFile {
        self.format = f.map(str::to_string);
        self
    }

    /// Sets `metadata.size` and `metadata.fp`.
    pub fn size_fp(mut self, size: Option<&str>, fp: Option<&str>) -> CivitaiFile {
        self.size = size.map(str::to_string);
        self.fp = fp.map(str::to_string);
        self
    }

    /// Omits `SHA256` (and `AutoV2`) from `hashes`, like some old files.
    pub fn without_sha256(mut self) -> CivitaiFile {
        self.include_sha256 = false;
        self
    }

    /// Sets the storage host's `Content-Disposition` style.
    pub fn disposition(mut self, d: Disposition) -> CivitaiFile {
        self.disposition = d;
        self
    }

    /// Upper-case hex sha256 of the content, as the API reports it.
    fn sha256_upper(&self) -> String {
        sha256_hex(&self.content).to_uppercase()
    }

    /// `sizeKB`: KiB rounded to two decimals, so the exact size cannot be derived (§8.8).
    fn size_kb(&self) -> f64 {
        (self.content.len() as f64 / 1024.0 * 100.0).round() / 100.0
    }

    fn hashes(&self) -> Value {
        let sha = self.sha256_upper();
        let other = sha1_hex(&self.content).to_uppercase();
        let mut h = Map::new();
        h.insert("AutoV1".into(), json!(&other[..8]));
        if self.include_sha256 {
            h.insert("AutoV2".into(), json!(&sha[..10]));
            h.insert("SHA256".into(), json!(sha));
        }
        h.insert(
            "CRC32".into(),
            json!(format!("{:08X}", crc32(&self.content))),
        );
        h.insert(
            "BLAKE3".into(),
            json!(sha256_hex(format!("blake3:{sha}").as_bytes()).to_uppercase()),
        );
        h.insert("AutoV3".into(), json!(&other[8..20]));
        Value::Object(h)
    }

    fn metadata(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in [
            ("format", &self.format),
            ("size", &self.size),
            ("fp", &self.fp),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
        Value::Object(m)
    }

    /// The storage key, e.g. `/827184/model/flux_dev.1a2b3c.safetensors`.
    fn storage_key(&self, model_id: u64) -> String {
        let (stem, ext) = self.name.rsplit_once('.').unwrap_or((&self.name, "bin"));
        let stem: String = stem
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("/{model_id}/model/{stem}.{:x}.{ext}", self.id)
    }
}

/// Standard CRC-32 (IEEE).
fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// Why the download endpoint refuses a version (§4.3, §8.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadBlock {
    /// `403 {"error":"Forbidden"}` (IP or user blocklisted).
    Blocklisted,
    /// `429` "unusual amount of downloading" (download quota), no `Retry-After`.
    Quota,
    /// `401` "The creator of this asset has disabled downloads on this file".
    DownloadsDisabled,
    /// `403 {"error":"Early Access","deadline":...}`; browsers get a `307`.
    EarlyAccess {
        /// ISO-8601 end of early access.
        deadline: String,
    },
    /// `403 {"error":"You do not have access to download this file"}`.
    NoAccess,
    /// `404 File not found` with `Cache-Control: private, no-store` (storage resolver failed).
    StorageUnavailable,
}

/// One model version.
#[derive(Debug, Clone)]
pub struct CivitaiVersion {
    /// `modelVersionId`.
    pub id: u64,
    /// Version name, e.g. `v1.0`.
    pub name: String,
    /// `baseModel`, e.g. `SDXL 1.0`.
    pub base_model: String,
    /// Downloads need a token (`requireAuth`).
    pub require_auth: bool,
    /// A configured refusal of the download endpoint.
    pub block: Option<DownloadBlock>,
    /// `trainedWords`.
    pub trained_words: Vec<String>,
    /// The files.
    pub files: Vec<CivitaiFile>,
}

impl CivitaiVersion {
    /// A version with no files, base model `SDXL 1.0`.
    pub fn new(id: u64, name: impl Into<String>) -> CivitaiVersion {
        CivitaiVersion {
            id,
            name: name.into(),
            base_model: "SDXL 1.0".to_string(),
            require_auth: false,
            block: None,
            trained_words: Vec::new(),
            files: Vec::new(),
        }
    }

    /// Adds a file.
    pub fn with_file(mut self, f: CivitaiFile) -> CivitaiVersion {
        self.files.push(f);
        self
    }

    /// Sets `require_auth`.
    pub fn require_auth(mut self, on: bool) -> CivitaiVersion {
        self.require_auth = on;
        self
    }

    /// Sets a download refusal.
    pub fn block(mut self, b: DownloadBlock) -> CivitaiVersion {
        self.block = Some(b);
        self
    }

    /// Sets `baseModel`.
    pub fn base_model(mut self, b: &str) -> CivitaiVersion {
        self.base_model = b.to_string();
        self
    }

    /// The version's primary file (see the module doc).
    fn primary_file(&self) -> Option<&CivitaiFile> {
        self.files
            .iter()
            .find(|f| f.primary)
            .or_else(|| self.files.iter().find(|f| f.file_type == "Model"))
            .or_else(|| self.files.first())
    }
}

/// Moderation state of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelMode {
    /// `mode: "Archived"`: no files, downloads `410`.
    Archived,
    /// `mode: "TakenDown"`: no files or images, downloads `404`.
    TakenDown,
}

/// A model with its versions (newest first, as `modelVersions[0]` is the newest).
#[derive(Debug, Clone)]
pub struct CivitaiModel {
    /// Model id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// One of [`MODEL_TYPES`].
    pub model_type: String,
    /// NSFW (hidden from `/api/v1/models` unless `nsfw=true`).
    pub nsfw: bool,
    /// Creator username.
    pub creator: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Moderation state.
    pub mode: Option<ModelMode>,
    /// `stats.downloadCount` (sort key).
    pub download_count: u64,
    /// `stats.thumbsUpCount` (sort key).
    pub thumbs_up: u64,
    /// Creation time, Unix seconds (sort key for Newest/Oldest).
    pub created_at: u64,
    /// Versions, newest first.
    pub versions: Vec<CivitaiVersion>,
}

impl CivitaiModel {
    /// A public model with no versions.
    pub fn new(id: u64, name: impl Into<String>, model_type: &str) -> CivitaiModel {
        CivitaiModel {
            id,
            name: name.into(),
            model_type: model_type.to_string(),
            nsfw: false,
            creator: "mock-creator".to_string(),
            tags: Vec::new(),
            mode: None,
            download_count: 0,
            thumbs_up: 0,
            created_at: CREATED_AT + id,
            versions: Vec::new(),
        }
    }

    /// Adds a version (after the existing ones, i.e. older).
    pub fn with_version(mut self, v: CivitaiVersion) -> CivitaiModel {
        self.versions.push(v);
        self
    }

    /// Sets the moderation state.
    pub fn mode(mut self, m: ModelMode) -> CivitaiModel {
        self.mode = Some(m);
        self
    }

    /// Sets download and thumbs-up counts.
    pub fn stats(mut self, downloads: u64, thumbs_up: u64) -> CivitaiModel {
        self.download_count = downloads;
        self.thumbs_up = thumbs_up;
        self
    }
}

#[derive(Debug)]
struct Settings {
    unauthenticated_download: bool,
    reject_query_token: bool,
}

/// The API side of a [`CivitaiMock`]: models, tokens, switches.
pub struct CivState {
    storage: Arc<StorageHost>,
    models: Mutex<Vec<CivitaiModel>>,
    tokens: Mutex<HashSet<String>>,
    settings: Mutex<Settings>,
    search_overloads: Mutex<VecDeque<()>>,
}

/// A running mock of Civitai plus its storage host. Dropping it stops both.
pub type CivitaiMock = Mock<CivState>;

impl CivitaiMock {
    /// Starts the API and the storage host on two ports of `127.0.0.1`.
    pub async fn start() -> CivitaiMock {
        Mock::launch(
            "api",
            storage_rules(),
            |_, storage| CivState {
                storage,
                models: Mutex::new(Vec::new()),
                tokens: Mutex::new(HashSet::new()),
                settings: Mutex::new(Settings {
                    unauthenticated_download: true,
                    reject_query_token: false,
                }),
                search_overloads: Mutex::new(VecDeque::new()),
            },
            api_handler,
        )
    }

    /// `http://127.0.0.1:PORT` of the storage host.
    pub fn storage_endpoint(&self) -> String {
        self.storage.base_url()
    }

    /// Adds `model`, replacing one with the same id.
    pub fn add_model(&self, model: CivitaiModel) {
        for f in model.versions.iter().flat_map(|v| &v.files) {
            self.state
                .storage
                .put(f.storage_key(model.id), f.content.clone());
        }
        let mut models = lock(&self.state.models);
        models.retain(|m| m.id != model.id);
        models.push(model);
    }

    /// Adds an API key that opens a session.
    pub fn set_valid_token(&self, token: &str) {
        lock(&self.state.tokens).insert(token.to_string());
    }

    /// Site-wide `UNAUTHENTICATED_DOWNLOAD` (default `true`); `false` makes every download
    /// need a token.
    pub fn set_unauthenticated_download(&self, allowed: bool) {
        lock(&self.state.settings).unauthenticated_download = allowed;
    }

    /// Answer `400` to any API request carrying `?token=` (not what the real site does; for
    /// tests that forbid tokens in URLs).
    pub fn set_reject_query_token(&self, on: bool) {
        lock(&self.state.settings).reject_query_token = on;
    }

    /// The recorded requests (any host) whose query carries a `token` parameter.
    pub fn requests_with_query_token(&self) -> Vec<RequestRecord> {
        self.requests()
            .into_iter()
            .filter(|r| {
                r.query().is_some_and(|q| {
                    url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "token")
                })
            })
            .collect()
    }

    /// Body bytes the storage host has handed to connections so far.
    pub fn storage_body_bytes_sent(&self) -> u64 {
        self.storage.bytes_sent()
    }

    /// Queues a fault for the next storage `GET`.
    pub fn inject_storage_fault(&self, fault: Fault) {
        self.storage.inject_fault(fault);
    }

    /// The next `/api/v1/models` request with `query` answers `503` with `Retry-After: 2`.
    pub fn inject_search_overload(&self) {
        lock(&self.state.search_overloads).push_back(());
    }
}

// ---------------------------------------------------------------------------------------
// API
// ---------------------------------------------------------------------------------------

fn err_json(status: StatusCode, h: &HeaderMap, body: Value) -> Response {
    json_response(status, h, &body, JSON_CT)
}

fn err(status: StatusCode, h: &HeaderMap, msg: &str) -> Response {
    err_json(status, h, json!({ "error": msg }))
}

/// A zod-style validation error object (list endpoints put it under `error`).
fn zod(h: &HeaderMap, path: &str, message: &str) -> Response {
    err_json(
        StatusCode::BAD_REQUEST,
        h,
        json!({ "error": { "name": "ZodError", "issues": [
            { "code": "invalid_value", "path": [path], "message": message }
        ]}}),
    )
}

fn is_browser(h: &HeaderMap) -> bool {
    let ua = header_str(h, "user-agent")
        .unwrap_or("")
        .to_ascii_lowercase();
    ["mozilla", "chrome", "safari", "firefox", "opera", "edge"]
        .iter()
        .any(|b| ua.contains(b))
}

impl CivState {
    /// The API key as the server reads it (§1): with an `Authorization` header, its second
    /// word (none if it has no space) and never `?token=`; otherwise `?token=`.
    fn token<'a>(&self, h: &'a HeaderMap, q: &'a [(String, String)]) -> Option<&'a str> {
        match h.get(header::AUTHORIZATION) {
            Some(v) => std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(|v| v.split(' ').nth(1)),
            None => query_get(q, "token"),
        }
    }

    fn has_session(&self, h: &HeaderMap, q: &[(String, String)]) -> bool {
        self.token(h, q)
            .is_some_and(|t| !t.is_empty() && lock(&self.tokens).contains(t))
    }

    fn find_version(&self, vid: u64) -> Option<(CivitaiModel, CivitaiVersion)> {
        lock(&self.models).iter().find_map(|m| {
            m.versions
                .iter()
                .find(|v| v.id == vid)
                .map(|v| (m.clone(), v.clone()))
        })
    }
}

/// The `downloadUrl` of `f` (§4.2): primary without a query, others with
/// `type, format, size, fp, quantType` in that order, nulls skipped.
fn download_url(base: &str, v: &CivitaiVersion, f: &CivitaiFile) -> String {
    let url = format!("{base}/api/download/models/{}", v.id);
    if v.primary_file().is_some_and(|p| p.id == f.id) {
        return url;
    }
    let format = if f.file_type == "Training Data" {
        None
    } else {
        f.format.as_deref()
    };
    let pairs: Vec<(&str, &str)> = [
        ("type", Some(f.file_type.as_str())),
        ("format", format),
        ("size", f.size.as_deref()),
        ("fp", f.fp.as_deref()),
        ("quantType", f.quant_type.as_deref()),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (k, v)))
    .collect();
    format!("{url}?{}", encode_query(&pairs))
}

/// A file object. `always_primary: false` omits `primary` on non-primary files (model
/// endpoints); `true` always sends it, `true`/`false` (version endpoints).
fn file_json(base: &str, v: &CivitaiVersion, f: &CivitaiFile, always_primary: bool) -> Value {
    let is_primary = v.primary_file().is_some_and(|p| p.id == f.id);
    let mut o = json!({
        "id": f.id,
        "sizeKB": f.size_kb(),
        "name": f.name,
        "type": f.file_type,
        "pickleScanResult": "Success",
        "pickleScanMessage": "No Pickle imports",
        "virusScanResult": "Success",
        "virusScanMessage": null,
        "scannedAt": iso8601(CREATED_AT),
        "metadata": f.metadata(),
        "hashes": f.hashes(),
        "downloadUrl": download_url(base, v, f),
    });
    if is_primary || always_primary {
        o["primary"] = json!(is_primary);
    }
    o
}

fn stats(downloads: u64, thumbs: u64) -> Value {
    json!({ "downloadCount": downloads, "thumbsUpCount": thumbs, "thumbsDownCount": 0 })
}

/// One element of `items` / the body of `GET /api/v1/models/{id}` (§3.1, §3.2).
fn model_json(base: &str, m: &CivitaiModel, primary_only: bool) -> Value {
    let versions: Vec<Value> = m
        .versions
        .iter()
        .map(|v| {
            let mut o = json!({
                "id": v.id,
                "name": v.name,
                "baseModel": v.base_model,
                "baseModelType": "Standard",
                "createdAt": iso8601(m.created_at),
                "publishedAt": iso8601(m.created_at + 60),
                "status": "Published",
                "availability": "Public",
                "nsfwLevel": 1,
                "trainedWords": v.trained_words,
                "supportsGeneration": false,
                "stats": stats(m.download_count, m.thumbs_up),
                "files": [],
                "images": [],
            });
            if m.mode.is_none() {
                let files: Vec<Value> = v
                    .files
                    .iter()
                    .filter(|f| !primary_only || v.primary_file().is_some_and(|p| p.id == f.id))
                    .map(|f| file_json(base, v, f, false))
                    .collect();
                o["files"] = Value::Array(files);
                o["downloadUrl"] = json!(format!("{base}/api/download/models/{}", v.id));
            }
            o
        })
        .collect();
    let mut o = json!({
        "id": m.id,
        "name": m.name,
        "description": format!("<p>{}</p>", m.name),
        "type": m.model_type,
        "poi": false,
        "nsfw": m.nsfw,
        "nsfwLevel": if m.nsfw { 4 } else { 1 },
        "availability": "Public",
        "allowNoCredit": true,
        "allowCommercialUse": "{Image,RentCivit}",
        "allowDerivatives": true,
        "allowDifferentLicense": true,
        "minor": false,
        "sfwOnly": false,
        "supportsGeneration": false,
        "stats": {
            "downloadCount": m.download_count, "thumbsUpCount": m.thumbs_up,
            "thumbsDownCount": 0, "commentCount": 0, "tippedAmountCount": 0
        },
        "creator": { "username": m.creator, "image": null },
        "tags": m.tags,
        "modelVersions": versions,
    });
    match m.mode {
        Some(ModelMode::Archived) => o["mode"] = json!("Archived"),
        Some(ModelMode::TakenDown) => o["mode"] = json!("TakenDown"),
        None => {}
    }
    o
}

/// The body of `GET /api/v1/model-versions/{id}` and by-hash (§3.3).
fn version_json(base: &str, m: &CivitaiModel, v: &CivitaiVersion) -> Value {
    let base_tag = v.base_model.to_ascii_lowercase().replace([' ', '.'], "");
    json!({
        "id": v.id,
        "modelId": m.id,
        "name": v.name,
        "nsfwLevel": 1,
        "createdAt": iso8601(m.created_at),
        "updatedAt": iso8601(m.created_at + 60),
        "status": "Published",
        "publishedAt": iso8601(m.created_at + 60),
        "trainedWords": v.trained_words,
        "trainingStatus": null,
        "trainingDetails": null,
        "baseModel": v.base_model,
        "baseModelType": "Standard",
        "description": null,
        "uploadType": "Created",
        "usageControl": if v.block == Some(DownloadBlock::DownloadsDisabled) { "Generation" } else { "Download" },
        "licensingFee": null,
        "paidAccess": null,
        "air": format!("urn:air:{base_tag}:{}:civitai:{}@{}", m.model_type.to_ascii_lowercase(), m.id, v.id),
        "stats": stats(m.download_count, m.thumbs_up),
        "model": { "name": m.name, "type": m.model_type, "nsfw": m.nsfw, "poi": false },
        "files": v.files.iter().map(|f| file_json(base, v, f, true)).collect::<Vec<_>>(),
        "images": [],
        "downloadUrl": format!("{base}/api/download/models/{}", v.id),
    })
}

/// `http://<Host>`: Civitai builds URLs from the request's Host header (§3.3).
fn base_from_host(h: &HeaderMap) -> String {
    format!("http://{}", header_str(h, "host").unwrap_or("127.0.0.1"))
}

fn with_headers(mut r: Response, cache: &'static str) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    }
    r
}

async fn api_handler(st: Arc<CivState>, req: Request) -> Response {
    let h = req.headers().clone();
    if req.method() == Method::OPTIONS {
        return with_headers(Response::new(Body::empty()), PUBLIC_CACHE);
    }
    let q = query_pairs(req.uri());
    if lock(&st.settings).reject_query_token && query_get(&q, "token").is_some() {
        return with_headers(
            err(
                StatusCode::BAD_REQUEST,
                &h,
                "mock: an API token in the query string is refused (send Authorization: Bearer)",
            ),
            NO_STORE,
        );
    }
    let segs = raw_segments(req.uri());
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match segs[..] {
        ["api", "download", "models", vid] => with_headers(download(&st, &req, vid, &q), NO_STORE),
        ["api", "v1", "models"] | ["api", "v1", "models", ""] => {
            with_headers(list_models(&st, &req, &q), PUBLIC_CACHE)
        }
        ["api", "v1", "models", id] => with_headers(get_model(&st, &h, id), PUBLIC_CACHE),
        ["api", "v1", "model-versions", "by-hash", hash] => {
            with_headers(by_hash(&st, &h, hash), HASH_CACHE)
        }
        ["api", "v1", "model-versions", id] => with_headers(get_version(&st, &h, id), PUBLIC_CACHE),
        _ => with_headers(err(StatusCode::NOT_FOUND, &h, "Not found"), PUBLIC_CACHE),
    }
}

/// `GET /api/v1/models/{id}` (§3.2). URLs use the site base (here: the mock itself).
fn get_model(st: &CivState, h: &HeaderMap, id: &str) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return err(
            StatusCode::BAD_REQUEST,
            h,
            "✖ Invalid input: expected number, received NaN\n  → at id",
        );
    };
    let found = lock(&st.models).iter().find(|m| m.id == id).cloned();
    match found {
        Some(m) => json_response(
            StatusCode::OK,
            h,
            &model_json(&base_from_host(h), &m, false),
            JSON_CT,
        ),
        None => err(StatusCode::NOT_FOUND, h, &format!("No model with id {id}")),
    }
}

/// `GET /api/v1/model-versions/{id}` (§3.3).
fn get_version(st: &CivState, h: &HeaderMap, id: &str) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return err(
            StatusCode::BAD_REQUEST,
            h,
            "✖ Invalid input: expected number, received NaN\n  → at id",
        );
    };
    let Some((m, v)) = st.find_version(id) else {
        return err(StatusCode::NOT_FOUND, h, "Model not found");
    };
    if v.primary_file().is_none() {
        return err(StatusCode::NOT_FOUND, h, "Missing model file");
    }
    json_response(
        StatusCode::OK,
        h,
        &version_json(&base_from_host(h), &m, &v),
        JSON_CT,
    )
}

/// `GET /api/v1/model-versions/by-hash/{hash}`: upper-cased, matched against every hash
/// type; duplicates resolve to the lowest version id (§3.4).
fn by_hash(st: &CivState, h: &HeaderMap, hash: &str) -> Response {
    let want = hash.to_uppercase();
    let mut hits: Vec<(CivitaiModel, CivitaiVersion)> = Vec::new();
    for m in lock(&st.models).iter() {
        for v in &m.versions {
            let matches = v.files.iter().any(|f| {
                f.hashes()
                    .as_object()
                    .is_some_and(|o| o.values().any(|x| x.as_str() == Some(want.as_str())))
            });
            if matches {
                hits.push((m.clone(), v.clone()));
            }
        }
    }
    hits.sort_by_key(|(_, v)| v.id);
    match hits.first() {
        Some((m, v)) => json_response(
            StatusCode::OK,
            h,
            &version_json(&base_from_host(h), m, v),
            JSON_CT,
        ),
        None => err(StatusCode::NOT_FOUND, h, "Model not found"),
    }
}

fn bool_param(q: &[(String, String)], name: &str) -> bool {
    query_get(q, name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// All values of a param given repeated and/or comma-separated.
fn multi(q: &[(String, String)], name: &str) -> Vec<String> {
    q.iter()
        .filter(|(k, _)| k == name)
        .flat_map(|(_, v)| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `GET /api/v1/models`: filters, sort, `page` or opaque `cursor` pagination (§3.1, §8.9).
fn list_models(st: &CivState, req: &Request, q: &[(String, String)]) -> Response {
    let h = req.headers();
    let limit = match query_get(q, "limit").map(str::parse::<usize>) {
        None | Some(Ok(0)) => 100,
        Some(Ok(n)) if n <= 100 => n,
        _ => return zod(h, "limit", "Too big: expected number to be <=100"),
    };
    let page = match query_get(q, "page").map(str::parse::<usize>) {
        None => None,
        Some(Ok(p)) if p >= 1 => Some(p),
        _ => return zod(h, "page", "Too small: expected number to be >=1"),
    };
    let query = query_get(q, "query").filter(|s| !s.is_empty());
    let cursor = query_get(q, "cursor").filter(|s| !s.is_empty());
    if query.is_some() && page.is_some() {
        return err(
            StatusCode::BAD_REQUEST,
            h,
            "Cannot use page param with query search. Use cursor-based pagination.",
        );
    }
    if let Some(p) = page {
        if p * limit > 1000 {
            return err(
                StatusCode::TOO_MANY_REQUESTS,
                h,
                "You've requested too many pages, please use cursors instead",
            );
        }
    }
    let types = multi(q, "types");
    if let Some(t) = types.iter().find(|t| !MODEL_TYPES.contains(&t.as_str())) {
        return zod(h, "types", &format!("Invalid option: {t}"));
    }
    let sort = query_get(q, "sort").unwrap_or("Highest Rated");
    if !SORTS.contains(&sort) {
        return zod(h, "sort", &format!("Invalid option: {sort}"));
    }
    let period = query_get(q, "period").unwrap_or("AllTime");
    if !PERIODS.contains(&period) {
        return zod(h, "period", &format!("Invalid option: {period}"));
    }
    let has_key = st.token(h, q).is_some_and(|t| !t.is_empty());
    let wants_private = bool_param(q, "favorites") || bool_param(q, "hidden");
    if wants_private && !has_key {
        return err(StatusCode::UNAUTHORIZED, h, "Unauthorized");
    }
    if query.is_some() && lock(&st.search_overloads).pop_front().is_some() {
        let mut r = err(
            StatusCode::SERVICE_UNAVAILABLE,
            h,
            "Model search is temporarily overloaded — please retry.",
        );
        r.headers_mut().insert(header::RETRY_AFTER, 2.into());
        return r;
    }
    let ids: Vec<u64> = multi(q, "ids")
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let tag = query_get(q, "tag");
    let username = query_get(q, "username");
    let base_models = multi(q, "baseModels");
    let nsfw = bool_param(q, "nsfw");
    let mut models: Vec<CivitaiModel> = lock(&st.models)
        .iter()
        .filter(|_| !wants_private)
        .filter(|m| nsfw || !m.nsfw)
        .filter(|m| types.is_empty() || types.contains(&m.model_type))
        .filter(|m| ids.is_empty() || ids.contains(&m.id))
        .filter(|m| tag.is_none_or(|t| m.tags.iter().any(|x| x.eq_ignore_ascii_case(t))))
        .filter(|m| username.is_none_or(|u| m.creator.eq_ignore_ascii_case(u)))
        .filter(|m| {
            base_models.is_empty()
                || m.versions
                    .iter()
                    .any(|v| base_models.contains(&v.base_model))
        })
        .filter(|m| query.is_none_or(|s| m.name.to_lowercase().contains(&s.to_lowercase())))
        .cloned()
        .collect();
    match sort {
        "Newest" => models.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id))),
        "Oldest" => models.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id))),
        "Highest Rated" | "Most Liked" => {
            models.sort_by(|a, b| b.thumbs_up.cmp(&a.thumbs_up).then(b.id.cmp(&a.id)))
        }
        _ => models.sort_by(|a, b| {
            b.download_count
                .cmp(&a.download_count)
                .then(b.id.cmp(&a.id))
        }),
    }
    // Cursor wins over page; a cursor is "<sort key>|<last id>|<offset>".
    let offset = match cursor {
        Some(c) => match c.rsplit('|').next().and_then(|o| o.parse::<usize>().ok()) {
            Some(o) if c.contains('|') => o,
            _ => return zod(h, "cursor", "Invalid cursor"),
        },
        None => page.map_or(0, |p| (p - 1) * limit),
    };
    let base = base_from_host(h);
    let primary_only = bool_param(q, "primaryFileOnly");
    let items: Vec<Value> = models
        .iter()
        .skip(offset)
        .take(limit)
        .map(|m| model_json(&base, m, primary_only))
        .collect();
    let mut metadata = Map::new();
    let next = offset + limit;
    if next < models.len() {
        let last = &models[next - 1];
        let cursor = format!("{}|{}|{}", last.download_count, last.id, next);
        let mut pairs: Vec<(String, String)> =
            q.iter().filter(|(k, _)| k != "cursor").cloned().collect();
        pairs.push(("cursor".into(), cursor.clone()));
        let query = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k, COMPONENT), enc(v, COMPONENT)))
            .collect::<Vec<_>>()
            .join("&");
        metadata.insert("nextCursor".into(), json!(cursor));
        metadata.insert(
            "nextPage".into(),
            json!(format!("{base}{}?{query}", req.uri().path())),
        );
    }
    if cursor.is_none() {
        if let Some(p) = page {
            metadata.insert("currentPage".into(), json!(p));
            metadata.insert("pageSize".into(), json!(limit));
        }
    }
    json_response(
        StatusCode::OK,
        h,
        &json!({ "items": items, "metadata": metadata }),
        JSON_CT,
    )
}

/// `GET|HEAD /api/download/models/{versionId}`: the decision sequence of §4.3.
fn download(st: &CivState, req: &Request, vid: &str, q: &[(String, String)]) -> Response {
    let h = req.headers();
    let browser = is_browser(h);
    // Browsers get plain-text errors, everyone else JSON.
    let fail = |status: StatusCode, body: Value| -> Response {
        if browser {
            let text = body["message"]
                .as_str()
                .or(body["error"].as_str())
                .unwrap_or("Error")
                .to_string();
            text_response(status, "text/plain; charset=utf-8", text)
        } else {
            err_json(status, h, body)
        }
    };
    let redirect = |loc: String| -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, hv(&loc));
        headers.insert(header::CONTENT_LENGTH, 0.into());
        answer(StatusCode::TEMPORARY_REDIRECT, headers, Body::empty())
    };
    let found = vid.parse::<u64>().ok().and_then(|id| st.find_version(id));
    // 3. Blocklist, 4. quota.
    if let Some((_, v)) = &found {
        match v.block {
            Some(DownloadBlock::Blocklisted) => {
                return fail(StatusCode::FORBIDDEN, json!({ "error": "Forbidden" }))
            }
            Some(DownloadBlock::Quota) => {
                return fail(
                    StatusCode::TOO_MANY_REQUESTS,
                    json!({ "error": "We've noticed an unusual amount of downloading from your account. Contact support@civitai.com or come back later." }),
                )
            }
            _ => {}
        }
    }
    // 5. Query validation.
    let bad = |m: &str| fail(StatusCode::BAD_REQUEST, json!({ "error": m }));
    let Ok(vid_num) = vid.parse::<u64>() else {
        return bad("✖ Invalid input: expected number, received NaN\n  → at modelVersionId");
    };
    let ftype = query_get(q, "type");
    if ftype.is_some_and(|t| !FILE_TYPES.contains(&t)) {
        return bad("✖ Invalid option\n  → at type");
    }
    let format = query_get(q, "format");
    if format.is_some_and(|f| !FORMATS.contains(&f)) {
        return bad("✖ Invalid option\n  → at format");
    }
    let size = query_get(q, "size");
    if size.is_some_and(|s| s != "full" && s != "pruned") {
        return bad("✖ Invalid option: expected one of \"full\"|\"pruned\"\n  → at size");
    }
    let fp = query_get(q, "fp");
    let quant = query_get(q, "quantType");
    if fp.is_some_and(|s| s.len() > 64) || quant.is_some_and(|s| s.len() > 64) {
        return bad("✖ Too big: expected string to have <=64 characters");
    }
    let file_id = match query_get(q, "fileId").map(str::parse::<u64>) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return bad("✖ Invalid input: expected number\n  → at fileId"),
    };
    // 6. File resolution.
    let not_found = || fail(StatusCode::NOT_FOUND, json!({ "error": "File not found" }));
    let Some((model, version)) = found else {
        return not_found();
    };
    match model.mode {
        Some(ModelMode::TakenDown) => return not_found(),
        Some(ModelMode::Archived) => {
            return fail(
                StatusCode::GONE,
                json!({ "error": "Model archived, not available for download" }),
            )
        }
        None => {}
    }
    if version.block == Some(DownloadBlock::StorageUnavailable) {
        let mut r = not_found();
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        );
        return r;
    }
    if version.block == Some(DownloadBlock::DownloadsDisabled) {
        return fail(
            StatusCode::UNAUTHORIZED,
            json!({ "error": "Unauthorized", "message": "The creator of this asset has disabled downloads on this file" }),
        );
    }
    let session = st.has_session(h, q);
    let require_auth = version.require_auth || !lock(&st.settings).unauthenticated_download;
    if require_auth && !session {
        if browser {
            return redirect(format!(
                "/login?returnUrl=/model-versions/{vid_num}&reason=download-auth"
            ));
        }
        return fail(
            StatusCode::UNAUTHORIZED,
            json!({ "error": "Unauthorized", "message": "The creator of this asset requires you to be logged in to download it" }),
        );
    }
    if let Some(DownloadBlock::EarlyAccess { deadline }) = &version.block {
        if browser {
            return redirect(format!("/model-versions/{vid_num}"));
        }
        return fail(
            StatusCode::FORBIDDEN,
            json!({ "error": "Early Access", "deadline": deadline, "message": "This asset is in Early Access. You can use Buzz access it now!" }),
        );
    }
    if version.block == Some(DownloadBlock::NoAccess) {
        return fail(
            StatusCode::FORBIDDEN,
            json!({ "error": "You do not have access to download this file" }),
        );
    }
    let file = match file_id {
        Some(id) => match version.files.iter().find(|f| f.id == id) {
            Some(f) => f,
            None => return not_found(),
        },
        None => {
            let Some(f) = choose_file(&version, ftype, format, size, fp, quant) else {
                return not_found();
            };
            // 7. Misalignment check.
            let differs =
                |want: Option<&str>, have: Option<&str>| want.is_some_and(|w| Some(w) != have);
            if differs(ftype, Some(&f.file_type))
                || differs(format, f.format.as_deref())
                || differs(size, f.size.as_deref())
                || differs(fp, f.fp.as_deref())
                || differs(quant, f.quant_type.as_deref())
            {
                return not_found();
            }
            f
        }
    };
    // 8. 307 to a presigned storage URL.
    redirect(storage_url(st, &model, file))
}

/// The best file for the filters: same `type` if given, most metadata matches, primary first.
fn choose_file<'a>(
    v: &'a CivitaiVersion,
    ftype: Option<&str>,
    format: Option<&str>,
    size: Option<&str>,
    fp: Option<&str>,
    quant: Option<&str>,
) -> Option<&'a CivitaiFile> {
    let primary_id = v.primary_file().map(|p| p.id);
    let score = |f: &CivitaiFile| {
        let hit =
            |want: Option<&str>, have: Option<&str>| usize::from(want.is_some() && want == have);
        hit(format, f.format.as_deref())
            + hit(size, f.size.as_deref())
            + hit(fp, f.fp.as_deref())
            + hit(quant, f.quant_type.as_deref())
    };
    v.files
        .iter()
        .enumerate()
        .filter(|(_, f)| ftype.is_none_or(|t| f.file_type == t))
        .max_by_key(|(i, f)| {
            (
                score(f),
                Some(f.id) == primary_id,
                f.file_type == "Model",
                usize::MAX - i,
            )
        })
        .map(|(_, f)| f)
}

/// A presigned-looking S3 URL on the storage host (§4.3 step 8, §8.2).
fn storage_url(st: &CivState, m: &CivitaiModel, f: &CivitaiFile) -> String {
    let key = f.storage_key(m.id);
    let signed = st.storage.sign(&key);
    let pct = enc(&f.name, COMPONENT);
    let ascii: String = f
        .name
        .chars()
        .map(|c| if c.is_ascii() && c != '"' { c } else { '_' })
        .collect();
    let disposition = match f.disposition {
        Disposition::Plain => Some(format!("attachment; filename=\"{}\"", f.name)),
        Disposition::Rfc5987 => Some(format!("attachment; filename*=UTF-8''{pct}")),
        Disposition::Both => Some(format!(
            "attachment; filename=\"{ascii}\"; filename*=UTF-8''{pct}"
        )),
        Disposition::Absent => None,
    };
    let expires = signed.ttl_secs.to_string();
    let date = amz_date(signed.issued);
    let credential = format!("MOCKR2ACCESSKEY/{}/auto/s3/aws4_request", &date[..8]);
    let mut pairs: Vec<(&str, &str)> = vec![("X-Amz-Expires", &expires)];
    if let Some(d) = &disposition {
        pairs.push(("response-content-disposition", d));
    }
    pairs.extend([
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        ("X-Amz-Credential", credential.as_str()),
        ("X-Amz-Date", date.as_str()),
        ("X-Amz-SignedHeaders", "host"),
        ("X-Amz-Signature", signed.signature.as_str()),
    ]);
    format!("{}{}?{}", st.storage.base_url(), key, encode_query(&pairs))
}

// ---------------------------------------------------------------------------------------
// Storage
// ---------------------------------------------------------------------------------------

/// The S3/R2-style storage host (§4.4, §8.3).
fn storage_rules() -> StorageRules {
    StorageRules {
        label: "storage",
        admit: |method, h| {
            if h.contains_key(header::AUTHORIZATION) {
                return Some(xml_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidArgument",
                    "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified",
                ));
            }
            if method == Method::HEAD {
                // The method is part of a SigV4 signature: a GET-presigned URL refuses HEAD.
                return Some(answer(
                    StatusCode::FORBIDDEN,
                    HeaderMap::new(),
                    Body::empty(),
                ));
            }
            (method != Method::GET).then(|| {
                xml_error(
                    StatusCode::FORBIDDEN,
                    "SignatureDoesNotMatch",
                    SIGNATURE_MISMATCH,
                )
            })
        },
        last_modified: CREATED_AT,
        signature_param: "X-Amz-Signature",
        refuse: |e| match e {
            SignError::Expired => {
                xml_error(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired")
            }
            SignError::Invalid => xml_error(
                StatusCode::FORBIDDEN,
                "SignatureDoesNotMatch",
                SIGNATURE_MISMATCH,
            ),
        },
        headers: storage_headers,
    }
}

/// R2's headers on an object: an S3 ETag (MD5, or MD5-of-parts style with a part count for
/// big objects), never the sha256.
fn storage_headers(_key: &str, content: &Bytes, _q: &[(String, String)]) -> HeaderMap {
    const PART: usize = 8 << 20;
    let md5 = md5_hex(content);
    let etag = if content.len() > PART {
        format!("\"{md5}-{}\"", content.len().div_ceil(PART))
    } else {
        format!("\"{md5}\"")
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, hv(&etag));
    headers.insert("server", HeaderValue::from_static("cloudflare"));
    headers.insert("cf-ray", hv(&format!("{}-MCK", random_hex(16))));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{client, header as h};

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn weights() -> Bytes {
        Bytes::from((0..4000u32).map(|i| (i % 241) as u8).collect::<Vec<u8>>())
    }

    async fn mock() -> CivitaiMock {
        let m = CivitaiMock::start().await;
        m.set_valid_token(TOKEN);
        m.add_model(
            CivitaiModel::new(827184, "WAI-illustrious-SDXL", "Checkpoint")
                .stats(1000, 50)
                .with_version(
                    CivitaiVersion::new(2514310, "v16.0")
                        .base_model("Illustrious")
                        .with_file(
                            CivitaiFile::new(2402203, "a b.safetensors", weights())
                                .primary()
                                .size_fp(Some("pruned"), Some("fp16")),
                        )
                        .with_file(
                            CivitaiFile::new(
                                2402977,
                                "sdxl_vae.safetensors",
                                Bytes::from_static(b"vae"),
                            )
                            .file_type("VAE")
                            .disposition(Disposition::Both),
                        )
                        .with_file(
                            CivitaiFile::new(
                                2402978,
                                "模型.safetensors",
                                Bytes::from_static(b"unicode"),
                            )
                            .file_type("Text Encoder")
                            .disposition(Disposition::Rfc5987)
                            .without_sha256(),
                        ),
                ),
        );
        m.add_model(
            CivitaiModel::new(5, "Gated LoRA", "LORA")
                .stats(10, 5)
                .with_version(CivitaiVersion::new(50, "v1").require_auth(true).with_file(
                    CivitaiFile::new(500, "gated.safetensors", Bytes::from_static(b"gated")),
                )),
        );
        m.add_model(
            CivitaiModel::new(6, "Old Archive", "Checkpoint")
                .mode(ModelMode::Archived)
                .with_version(CivitaiVersion::new(60, "v1").with_file(CivitaiFile::new(
                    600,
                    "x.ckpt",
                    Bytes::from_static(b"x"),
                ))),
        );
        m.add_model(
            CivitaiModel::new(7, "Early Bird", "LORA").with_version(
                CivitaiVersion::new(70, "v1")
                    .block(DownloadBlock::EarlyAccess {
                        deadline: "2026-09-30T00:00:00.000Z".into(),
                    })
                    .with_file(CivitaiFile::new(
                        700,
                        "e.safetensors",
                        Bytes::from_static(b"e"),
                    )),
            ),
        );
        m
    }

    #[tokio::test]
    async fn version_and_model_json() {
        let m = mock().await;
        let c = client();
        let v: Value = c
            .get(format!("{}/api/v1/model-versions/2514310", m.endpoint()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["modelId"], 827184);
        let files = v["files"].as_array().unwrap();
        assert_eq!(files[0]["primary"], true);
        assert_eq!(files[1]["primary"], false);
        let sha = sha256_hex(&weights()).to_uppercase();
        assert_eq!(files[0]["hashes"]["SHA256"], json!(sha));
        assert_eq!(files[0]["hashes"]["AutoV2"], json!(&sha[..10]));
        assert_eq!(
            files[0]["metadata"],
            json!({ "format": "SafeTensor", "size": "pruned", "fp": "fp16" })
        );
        assert_eq!(files[0]["sizeKB"], json!(3.91));
        assert_eq!(
            files[0]["downloadUrl"],
            json!(format!("{}/api/download/models/2514310", m.endpoint()))
        );
        assert_eq!(
            files[1]["downloadUrl"],
            json!(format!(
                "{}/api/download/models/2514310?type=VAE&format=SafeTensor",
                m.endpoint()
            ))
        );
        assert_eq!(
            files[2]["downloadUrl"],
            json!(format!(
                "{}/api/download/models/2514310?type=Text%20Encoder&format=SafeTensor",
                m.endpoint()
            ))
        );
        assert!(files[2]["hashes"].get("SHA256").is_none());
        assert_eq!(v["downloadUrl"], files[0]["downloadUrl"]);

        let r = c
            .get(format!("{}/api/v1/models/827184", m.endpoint()))
            .send()
            .await
            .unwrap();
        assert_eq!(h(&r, "cache-control"), Some(PUBLIC_CACHE));
        let v: Value = r.json().await.unwrap();
        let files = v["modelVersions"][0]["files"].as_array().unwrap();
        assert_eq!(files[0]["primary"], true);
        assert!(files[1].get("primary").is_none());
        let v: Value = c
            .get(format!("{}/api/v1/models/6", m.endpoint()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["mode"], "Archived");
        assert_eq!(v["modelVersions"][0]["files"], json!([]));
        assert!(v["modelVersions"][0].get("downloadUrl").is_none());

        let r = c
            .get(format!("{}/api/v1/models/999", m.endpoint()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({ "error": "No model with id 999" })
        );
        let r = c
            .get(format!("{}/api/v1/model-versions/999", m.endpoint()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({ "error": "Model not found" })
        );
        // by-hash, case-insensitive, by SHA256 or AutoV2.
        for hash in [sha.to_lowercase(), sha[..10].to_string()] {
            let r = c
                .get(format!(
                    "{}/api/v1/model-versions/by-hash/{hash}",
                    m.endpoint()
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(h(&r, "cache-control"), Some(HASH_CACHE));
            assert_eq!(r.json::<Value>().await.unwrap()["id"], 2514310);
        }
    }

    #[tokio::test]
    async fn download_redirects_to_storage() {
        let m = mock().await;
        let c = client();
        let r = c
            .get(format!("{}/api/download/models/2514310", m.endpoint()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 307);
        assert_eq!(h(&r, "cache-control"), Some(NO_STORE));
        let loc = h(&r, "location").unwrap().to_string();
        assert!(loc.starts_with(&m.storage_endpoint()), "{loc}");
        for p in [
            "X-Amz-Expires=",
            "X-Amz-Signature=",
            "response-content-disposition=",
        ] {
            assert!(loc.contains(p), "{loc}");
        }
        let r = c.get(&loc).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            h(&r, "content-disposition"),
            Some("attachment; filename=\"a b.safetensors\"")
        );
        let etag = h(&r, "etag").unwrap().to_string();
        assert!(!etag
            .to_uppercase()
            .contains(&sha256_hex(&weights()).to_uppercase()));
        assert_eq!(&r.bytes().await.unwrap()[..], &weights()[..]);
        // Storage: Range, 416, HEAD refused, token refused, and never received one.
        let r = c
            .get(&loc)
            .header("range", "bytes=1000-")
            .send()
            .await
            .unwrap();
        assert_eq!(
            (r.status().as_u16(), h(&r, "content-range")),
            (206, Some("bytes 1000-3999/4000"))
        );
        let r = c
            .get(&loc)
            .header("range", "bytes=4000-")
            .send()
            .await
            .unwrap();
        assert_eq!(
            (r.status().as_u16(), h(&r, "content-range")),
            (416, Some("bytes */4000"))
        );
        assert_eq!(c.head(&loc).send().await.unwrap().status(), 403);
        assert_eq!(
            c.get(&loc)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .status(),
            400
        );
        let leaked: Vec<_> = m
            .requests()
            .into_iter()
            .filter(|q| q.host == "storage" && q.has_header("authorization"))
            .collect();
        assert_eq!(leaked.len(), 1);

        // Disposition variants, chosen per file; by query filters and by fileId.
        let get_cd = |url: String| {
            let c = c.clone();
            async move {
                let r = c.get(url).send().await.unwrap();
                assert_eq!(r.status(), 307, "{}", r.url());
                let loc = r.headers()["location"].to_str().unwrap().to_string();
                let r = c.get(loc).send().await.unwrap();
                String::from_utf8(r.headers()["content-disposition"].as_bytes().to_vec()).unwrap()
            }
        };
        let cd = get_cd(format!(
            "{}/api/download/models/2514310?type=VAE&format=SafeTensor",
            m.endpoint()
        ))
        .await;
        assert_eq!(
            cd,
            "attachment; filename=\"sdxl_vae.safetensors\"; filename*=UTF-8''sdxl_vae.safetensors"
        );
        let cd = get_cd(format!(
            "{}/api/download/models/2514310?fileId=2402978",
            m.endpoint()
        ))
        .await;
        assert_eq!(
            cd,
            "attachment; filename*=UTF-8''%E6%A8%A1%E5%9E%8B.safetensors"
        );
        // Misalignment: a filter that disagrees with the chosen file is 404; fileId always works.
        let r = c
            .get(format!(
                "{}/api/download/models/2514310?type=Model&format=SafeTensor&size=full",
                m.endpoint()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({ "error": "File not found" })
        );
        let r = c
            .get(format!(
                "{}/api/download/models/2514310?type=Bogus",
                m.endpoint()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);

        // Expired URL: 403, and a fresh 307 works.
        m.expire_signed_urls();
        let r = c.get(&loc).send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert!(r.text().await.unwrap().contains("expired"));
        // Reset mid-body, then resume.
        let r = c
            .get(format!("{}/api/download/models/2514310", m.endpoint()))
            .send()
            .await
            .unwrap();
        let loc = h(&r, "location").unwrap().to_string();
        m.inject_storage_fault(Fault::ResetAfter(100));
        let before = m.storage_body_bytes_sent();
        assert!(c.get(&loc).send().await.unwrap().bytes().await.is_err());
        assert_eq!(m.storage_body_bytes_sent() - before, 100);
        let r = c
            .get(&loc)
            .header("range", "bytes=100-")
            .send()
            .await
            .unwrap();
        assert_eq!(&r.bytes().await.unwrap()[..], &weights()[100..]);
    }

    #[tokio::test]
    async fn download_auth_and_statuses() {
        let m = mock().await;
        let c = client();
        let url = format!("{}/api/download/models/50", m.endpoint());
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "Unauthorized");
        assert!(v["message"]
            .as_str()
            .unwrap()
            .contains("requires you to be logged in"));
        // An invalid token is anonymous.
        assert_eq!(
            c.get(&url)
                .bearer_auth("nope")
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
        // The scheme word is not checked; ?token= works too (and is recorded).
        let r = c
            .get(&url)
            .header("authorization", format!("Token {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 307);
        let r = c.get(format!("{url}?token={TOKEN}")).send().await.unwrap();
        assert_eq!(r.status(), 307);
        assert_eq!(m.requests_with_query_token().len(), 1);
        m.set_reject_query_token(true);
        assert_eq!(
            c.get(format!("{url}?token={TOKEN}"))
                .send()
                .await
                .unwrap()
                .status(),
            400
        );
        // A browser UA is sent to the login page instead.
        let r = c
            .get(&url)
            .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64)")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 307);
        assert_eq!(
            h(&r, "location"),
            Some("/login?returnUrl=/model-versions/50&reason=download-auth")
        );
        // Site-wide auth requirement.
        let open = format!("{}/api/download/models/2514310", m.endpoint());
        assert_eq!(c.get(&open).send().await.unwrap().status(), 307);
        m.set_unauthenticated_download(false);
        assert_eq!(c.get(&open).send().await.unwrap().status(), 401);
        // Archived 410, early access 403, unknown 404; all no-store.
        let r = c
            .get(format!("{}/api/download/models/60", m.endpoint()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 410);
        let r = c
            .get(format!("{}/api/download/models/70", m.endpoint()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(
            r.json::<Value>().await.unwrap()["deadline"],
            "2026-09-30T00:00:00.000Z"
        );
        let r = c
            .get(format!("{}/api/download/models/1", m.endpoint()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(h(&r, "cache-control"), Some(NO_STORE));
        // A failed storage resolver: 404 with a private cache header.
        m.add_model(
            CivitaiModel::new(8, "Flaky", "LORA").with_version(
                CivitaiVersion::new(80, "v1")
                    .block(DownloadBlock::StorageUnavailable)
                    .with_file(CivitaiFile::new(
                        800,
                        "f.safetensors",
                        Bytes::from_static(b"f"),
                    )),
            ),
        );
        let r = c
            .get(format!("{}/api/download/models/80", m.endpoint()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(
            (r.status().as_u16(), h(&r, "cache-control")),
            (404, Some("private, no-store"))
        );
        // A header without a space gives no token, and then ?token= does not count either.
        m.set_reject_query_token(false);
        let r = c
            .get(format!("{url}?token={TOKEN}"))
            .header("authorization", TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        // The storage host never received a token.
        assert!(m
            .requests()
            .iter()
            .filter(|q| q.host == "storage")
            .all(|q| !q.has_header("authorization")));
    }

    #[tokio::test]
    async fn search_with_cursor_pagination() {
        let m = mock().await;
        for i in 0..5u64 {
            m.add_model(
                CivitaiModel::new(100 + i, format!("Anime Style {i}"), "LORA")
                    .stats(500 - i, 1)
                    .with_version(
                        CivitaiVersion::new(1000 + i, "v1").with_file(CivitaiFile::new(
                            10_000 + i,
                            format!("anime{i}.safetensors"),
                            Bytes::from_static(b"x"),
                        )),
                    ),
            );
        }
        let c = client();
        let mut url = format!(
            "{}/api/v1/models?limit=2&query=anime&types=LORA&sort=Most%20Downloaded&period=AllTime",
            m.endpoint()
        );
        let mut ids = Vec::new();
        let mut pages = 0;
        loop {
            let v: Value = c.get(&url).send().await.unwrap().json().await.unwrap();
            pages += 1;
            ids.extend(
                v["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["id"].as_u64().unwrap()),
            );
            match v["metadata"]["nextPage"].as_str() {
                Some(next) => {
                    assert!(v["metadata"]["nextCursor"].as_str().unwrap().contains('|'));
                    assert!(next.contains("cursor=") && next.contains("%7C"), "{next}");
                    url = next.to_string();
                }
                None => {
                    assert!(v["metadata"].get("nextCursor").is_none());
                    break;
                }
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(ids, [100, 101, 102, 103, 104]);
        // Page mode adds currentPage/pageSize; limits and conflicts.
        let v: Value = c
            .get(format!(
                "{}/api/v1/models?limit=2&page=2&types=LORA",
                m.endpoint()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["metadata"]["currentPage"], 2);
        assert_eq!(v["metadata"]["pageSize"], 2);
        let get = |u: String| {
            let c = c.clone();
            async move { c.get(u).send().await.unwrap().status().as_u16() }
        };
        assert_eq!(
            get(format!("{}/api/v1/models?query=a&page=1", m.endpoint())).await,
            400
        );
        assert_eq!(
            get(format!("{}/api/v1/models?limit=100&page=11", m.endpoint())).await,
            429
        );
        assert_eq!(
            get(format!("{}/api/v1/models?types=Bogus", m.endpoint())).await,
            400
        );
        assert_eq!(
            get(format!("{}/api/v1/models?favorites=true", m.endpoint())).await,
            401
        );
        m.inject_search_overload();
        let r = c
            .get(format!("{}/api/v1/models?query=anime", m.endpoint()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            (r.status().as_u16(), h(&r, "retry-after")),
            (503, Some("2"))
        );
        // gzip JSON when accepted.
        let r = c
            .get(format!("{}/api/v1/models?limit=1", m.endpoint()))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(h(&r, "content-encoding"), Some("gzip"));
    }
}
