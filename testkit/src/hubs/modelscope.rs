//! A mock of the ModelScope hub, following `shared/specs/modelscope.md`.
//!
//! Two hosts: the **API** (`/api/v1/models/...`, every JSON answer in the PascalCase envelope
//! `{Code, Data, Message, RequestId, Success}`) and an **OSS** host:port serving file bytes
//! from signed, expiring URLs that `repo?FilePath=` redirects to with a `302` (§3.4, §12.6).
//!
//! Choices where the spec leaves room:
//! * Every revision lists a `.gitattributes` (as real repos have one) unless the model was
//!   built with [`MsModel::without_gitattributes`]; its bytes are downloadable like any file.
//! * Unknown revisions answer HTTP `404` with an envelope; `Revision=` also accepts a commit
//!   id (the SDK never sends one). Model info ignores an unknown `Revision`.
//! * Private models answer `403` "用户未登录" to anonymous callers (the SDK's "Please login
//!   first" path; [`MsMock::set_anonymous_private_status`] switches to `401`), and `403` to an
//!   unknown token. An unknown token on a public model is treated as anonymous.
//! * The OSS host answers a request carrying `Authorization` or the `m_session_id` cookie with
//!   `400` (OSS/S3 "InvalidArgument"), an expired signature with `403` "Request has expired.",
//!   and allows `HEAD`. Its ETag is an MD5 (not the sha256).
//! * Datasets (§8) and `/api/v1/login` (§3.6) are not mocked.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::common::{
    encode_query, header_str, hv, json_response, path_segments, query_get, query_pairs, random_hex,
    random_uuid, xml_error, SignError,
};
use super::storage::{only_get_and_head, Mock, StorageHost, StorageRules, SIGNATURE_MISMATCH};
use crate::content::{md5_hex, sha1_hex, sha256_hex};
use crate::serve::entity::answer;
use crate::serve::{lock, Body, Fault, Request, Response};

/// `Content-Type` of API answers.
const JSON_CT: &str = "application/json";
/// Fixed times reported by the mock (Unix seconds).
const CREATED_AT: u64 = 1_730_538_940;
const COMMITTED_AT: u64 = 1_726_842_501;
/// The `.gitattributes` every listing carries unless disabled.
const GITATTRIBUTES: &str = "*.bin filter=lfs diff=lfs merge=lfs -text\n*.gguf filter=lfs diff=lfs merge=lfs -text\n*.onnx filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n";

/// One file of a revision.
#[derive(Debug, Clone)]
pub struct MsFile {
    /// Path in the repo, `/`-separated.
    pub path: String,
    /// The bytes the OSS host serves.
    pub content: Bytes,
    /// Reported as `IsLFS`.
    pub is_lfs: bool,
    /// Overrides the `Sha256` in the listing (to make the served bytes mismatch it).
    pub listed_sha256: Option<String>,
}

impl MsFile {
    /// A regular file.
    pub fn new(path: impl Into<String>, content: impl Into<Bytes>) -> MsFile {
        MsFile {
            path: path.into(),
            content: content.into(),
            is_lfs: false,
            listed_sha256: None,
        }
    }

    /// An LFS file (`IsLFS: true`).
    pub fn lfs(path: impl Into<String>, content: impl Into<Bytes>) -> MsFile {
        MsFile {
            is_lfs: true,
            ..MsFile::new(path, content)
        }
    }

    /// Lists a `Sha256` that does *not* match the served bytes, on every download.
    pub fn with_wrong_sha256(mut self) -> MsFile {
        self.listed_sha256 = Some(sha256_hex(format!("not {}", self.path).as_bytes()));
        self
    }

    /// Lower-case hex sha256 of the bytes actually served.
    pub fn sha256(&self) -> String {
        sha256_hex(&self.content)
    }

    /// The `Sha256` the listing reports.
    fn listed_sha256(&self) -> String {
        self.listed_sha256.clone().unwrap_or_else(|| self.sha256())
    }

    /// The per-file `Revision`: a stable id of "the last commit that touched this file",
    /// different per file and never the branch name (§3.3).
    fn last_commit(&self) -> String {
        sha1_hex(format!("{}\n{}", self.path, self.sha256()).as_bytes())
    }

    fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// A branch or a tag with its files.
#[derive(Debug, Clone)]
pub struct MsRevision {
    /// Branch or tag name (e.g. `master`, `v1.0.0`).
    pub name: String,
    /// `CreatedAt`, Unix seconds.
    pub created_at: u64,
    /// `CommitId`, 40 hex.
    pub commit_id: String,
    /// Every file at this revision.
    pub files: Vec<MsFile>,
}

/// A model repository.
#[derive(Debug, Clone)]
pub struct MsModel {
    /// Owner namespace (`Path` in model info).
    pub owner: String,
    /// Model name.
    pub name: String,
    /// Private (`Visibility: 1`): every endpoint needs a valid token.
    pub private: bool,
    /// Branches, `master` first by convention.
    pub branches: Vec<MsRevision>,
    /// Tags (listed newest first).
    pub tags: Vec<MsRevision>,
    /// Add a `.gitattributes` to listings that lack one (default `true`).
    pub gitattributes: bool,
}

impl MsModel {
    /// An empty model `owner/name` (add files with [`MsModel::with_files`]).
    ///
    /// # Panics
    /// If `id` is not `owner/name`.
    pub fn new(id: &str) -> MsModel {
        let (owner, name) = id.split_once('/').expect("MsModel::new: id is owner/name");
        MsModel {
            owner: owner.to_string(),
            name: name.to_string(),
            private: false,
            branches: Vec::new(),
            tags: Vec::new(),
            gitattributes: true,
        }
    }

    /// `owner/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// Sets `private`.
    pub fn private(mut self, on: bool) -> MsModel {
        self.private = on;
        self
    }

    /// Do not add a `.gitattributes` to listings.
    pub fn without_gitattributes(mut self) -> MsModel {
        self.gitattributes = false;
        self
    }

    /// Sets the files of branch `master`.
    pub fn with_files(self, files: Vec<MsFile>) -> MsModel {
        self.with_branch("master", files)
    }

    /// Adds (or replaces) branch `name` holding `files`.
    pub fn with_branch(mut self, name: &str, files: Vec<MsFile>) -> MsModel {
        let rev = self.revision(name, COMMITTED_AT, files);
        self.branches.retain(|b| b.name != name);
        self.branches.push(rev);
        self
    }

    /// Adds (or replaces) tag `name`, created at `created_at` (Unix seconds), holding `files`.
    pub fn with_tag(mut self, name: &str, created_at: u64, files: Vec<MsFile>) -> MsModel {
        let rev = self.revision(name, created_at, files);
        self.tags.retain(|t| t.name != name);
        self.tags.push(rev);
        self
    }

    fn revision(&self, name: &str, created_at: u64, mut files: Vec<MsFile>) -> MsRevision {
        if self.gitattributes && !files.iter().any(|f| f.path == ".gitattributes") {
            files.insert(0, MsFile::new(".gitattributes", GITATTRIBUTES));
        }
        let mut seed = format!("{}\n{}\n", self.id(), name);
        for f in &files {
            seed.push_str(&format!("{} {}\n", f.path, f.sha256()));
        }
        MsRevision {
            name: name.to_string(),
            created_at,
            commit_id: sha1_hex(seed.as_bytes()),
            files,
        }
    }

    fn find_revision(&self, rev: &str) -> Option<&MsRevision> {
        self.branches
            .iter()
            .chain(&self.tags)
            .find(|r| r.name == rev)
            .or_else(|| {
                self.branches
                    .iter()
                    .chain(&self.tags)
                    .find(|r| r.commit_id == rev)
            })
    }
}

/// A one-shot API answer replacing the next API response (errors, `Code != 200` in HTTP 200,
/// rate limiting).
#[derive(Debug, Clone)]
pub struct MsApiError {
    /// HTTP status (use `200` for an envelope-level error inside a successful HTTP answer).
    pub http_status: u16,
    /// The envelope `Code` (anything but 200).
    pub code: i64,
    /// The envelope `Message`.
    pub message: String,
    /// Adds `Retry-After: <secs>`.
    pub retry_after: Option<u64>,
}

/// Who is calling, from the `m_session_id` cookie or `Authorization: Bearer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Anonymous,
    Valid,
    Invalid,
}

/// The API side of an [`MsMock`]: models, tokens, switches.
pub struct MsState {
    oss: Arc<StorageHost>,
    models: Mutex<Vec<MsModel>>,
    tokens: Mutex<HashSet<String>>,
    /// The status private models give anonymous callers.
    anonymous_private_status: Mutex<StatusCode>,
    api_errors: Mutex<VecDeque<MsApiError>>,
}

/// A running mock of ModelScope plus its OSS storage host. Dropping it stops both.
pub type MsMock = Mock<MsState>;

impl MsMock {
    /// Starts the API and the OSS host on two ports of `127.0.0.1`.
    pub async fn start() -> MsMock {
        Mock::launch(
            "api",
            oss_rules(),
            |_, oss| MsState {
                oss,
                models: Mutex::new(Vec::new()),
                tokens: Mutex::new(HashSet::new()),
                anonymous_private_status: Mutex::new(StatusCode::FORBIDDEN),
                api_errors: Mutex::new(VecDeque::new()),
            },
            api_handler,
        )
    }

    /// `http://127.0.0.1:PORT` of the OSS storage host.
    pub fn oss_endpoint(&self) -> String {
        self.storage.base_url()
    }

    /// Adds `model`, replacing one with the same id.
    pub fn add_model(&self, model: MsModel) {
        for f in model
            .branches
            .iter()
            .chain(&model.tags)
            .flat_map(|r| &r.files)
        {
            self.storage.put(oss_key(f), f.content.clone());
        }
        let mut models = lock(&self.state.models);
        models.retain(|m| m.id() != model.id());
        models.push(model);
    }

    /// Adds a token accepted as `Cookie: m_session_id=<token>` or `Authorization: Bearer`.
    pub fn set_valid_token(&self, token: &str) {
        lock(&self.state.tokens).insert(token.to_string());
    }

    /// Body bytes the OSS host has handed to connections so far.
    pub fn oss_body_bytes_sent(&self) -> u64 {
        self.storage.bytes_sent()
    }

    /// Queues a fault for the next OSS `GET` (e.g. [`Fault::CorruptBody`] to serve corrupted
    /// bytes once, [`Fault::RangeAs200WithContentRange`] for the [OBS-MS2] quirk).
    pub fn inject_oss_fault(&self, fault: Fault) {
        self.storage.inject_fault(fault);
    }

    /// The status private models give anonymous callers: `403` (default) or `401`.
    pub fn set_anonymous_private_status(&self, status: u16) {
        *lock(&self.state.anonymous_private_status) =
            StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    }

    /// The next API request answers `err` instead.
    pub fn inject_api_error(&self, err: MsApiError) {
        lock(&self.state.api_errors).push_back(err);
    }
}

/// The OSS object key of a file: content-addressed like ModelScope's LFS store.
fn oss_key(f: &MsFile) -> String {
    let s = f.sha256();
    format!("/lfs/{}/{}/{}", &s[..2], &s[2..4], s)
}

/// The envelope (§2.2), with `X-Request-Id` echoing `RequestId`.
fn envelope(
    status: StatusCode,
    req_headers: &HeaderMap,
    code: i64,
    data: Value,
    message: &str,
) -> Response {
    let request_id = random_uuid();
    let body = json!({
        "Code": code,
        "Data": data,
        "Message": message,
        "RequestId": request_id,
        "Success": code == 200,
    });
    let mut r = json_response(status, req_headers, &body, JSON_CT);
    r.headers_mut().insert("x-request-id", hv(&request_id));
    r
}

fn ok(req_headers: &HeaderMap, data: Value) -> Response {
    envelope(StatusCode::OK, req_headers, 200, data, "success")
}

fn model_not_found(h: &HeaderMap) -> Response {
    envelope(
        StatusCode::NOT_FOUND,
        h,
        10_010_205_001,
        Value::Null,
        "模型不存在",
    )
}

fn revision_not_found(h: &HeaderMap, rev: &str) -> Response {
    envelope(
        StatusCode::NOT_FOUND,
        h,
        10_010_205_003,
        Value::Null,
        &format!("版本不存在: {rev}"),
    )
}

fn bad_request(h: &HeaderMap, what: &str) -> Response {
    envelope(
        StatusCode::BAD_REQUEST,
        h,
        10_010_101_001,
        Value::Null,
        &format!("参数错误: {what}"),
    )
}

impl MsState {
    fn caller(&self, headers: &HeaderMap) -> Caller {
        let cookie_token = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == "m_session_id")
            .map(|(_, v)| v.to_string());
        let bearer = header_str(headers, "authorization").and_then(|v| {
            let (scheme, tok) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| tok.trim().to_string())
        });
        let presented: Vec<String> = cookie_token.into_iter().chain(bearer).collect();
        if presented.is_empty() {
            return Caller::Anonymous;
        }
        let tokens = lock(&self.tokens);
        if presented.iter().any(|t| tokens.contains(t)) {
            Caller::Valid
        } else {
            Caller::Invalid
        }
    }

    /// The model `owner/name` if the caller may see it.
    fn model(&self, h: &HeaderMap, owner: &str, name: &str) -> Result<MsModel, Box<Response>> {
        let found = lock(&self.models)
            .iter()
            .find(|m| m.owner == owner && m.name == name)
            .cloned();
        let Some(m) = found else {
            return Err(Box::new(model_not_found(h)));
        };
        if m.private {
            match self.caller(h) {
                Caller::Valid => {}
                Caller::Anonymous => {
                    let status = *lock(&self.anonymous_private_status);
                    return Err(Box::new(envelope(
                        status,
                        h,
                        10_010_201_004,
                        Value::Null,
                        "用户未登录",
                    )));
                }
                Caller::Invalid => {
                    return Err(Box::new(envelope(
                        StatusCode::FORBIDDEN,
                        h,
                        10_010_201_005,
                        Value::Null,
                        "访问令牌无效",
                    )))
                }
            }
        }
        Ok(m)
    }
}

async fn api_handler(st: Arc<MsState>, req: Request) -> Response {
    let h = req.headers().clone();
    if let Some(e) = lock(&st.api_errors).pop_front() {
        let status =
            StatusCode::from_u16(e.http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = envelope(status, &h, e.code, Value::Null, &e.message);
        if let Some(s) = e.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, s.into());
        }
        return r;
    }
    let segs = path_segments(req.uri());
    let is_read = req.method() == Method::GET || req.method() == Method::HEAD;
    if segs.len() < 5 || segs[0] != "api" || segs[1] != "v1" || segs[2] != "models" {
        return envelope(StatusCode::NOT_FOUND, &h, 404, Value::Null, "Not Found");
    }
    if !is_read {
        return envelope(
            StatusCode::METHOD_NOT_ALLOWED,
            &h,
            405,
            Value::Null,
            "Method Not Allowed",
        );
    }
    let model = match st.model(&h, &segs[3], &segs[4]) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let q = query_pairs(req.uri());
    match segs[5..].iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => model_info(&h, &model, &q),
        ["revisions"] => revisions(&h, &model, &q),
        ["repo", "files"] => files(&h, &model, &q),
        ["repo"] => download(&st, &h, &model, &q),
        _ => envelope(StatusCode::NOT_FOUND, &h, 404, Value::Null, "Not Found"),
    }
}

/// `GET /api/v1/models/{owner}/{name}[?Revision=]` (§3.1).
fn model_info(h: &HeaderMap, m: &MsModel, q: &[(String, String)]) -> Response {
    let revision = query_get(q, "Revision")
        .filter(|r| m.find_revision(r).is_some())
        .unwrap_or("master");
    ok(
        h,
        json!({
            "Id": u32::from_str_radix(&sha1_hex(m.id().as_bytes())[..6], 16).unwrap_or(1),
            "Name": m.name,
            "ChineseName": "",
            "Path": m.owner,
            "Visibility": if m.private { 1 } else { 5 },
            "IsPublished": 1,
            "Description": format!("Mock model {}", m.id()),
            "License": "Apache License 2.0",
            "Downloads": 0,
            "Stars": 0,
            "CreatedTime": CREATED_AT,
            "LastUpdatedTime": COMMITTED_AT,
            "Tasks": [{ "Name": "text-generation", "ChineseName": "文本生成" }],
            "Tags": [],
            "Revision": revision,
            "IsAccessible": 1,
        }),
    )
}

fn revision_json(r: &MsRevision) -> Value {
    json!({ "Revision": r.name, "CreatedAt": r.created_at, "CommitId": r.commit_id, "ShowName": r.name })
}

/// `GET .../revisions[?EndTime=]`: tags newest first, `EndTime` keeps older tags (§3.2).
fn revisions(h: &HeaderMap, m: &MsModel, q: &[(String, String)]) -> Response {
    let end = match query_get(q, "EndTime").map(str::parse::<u64>) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(_)) => return bad_request(h, "EndTime"),
    };
    let mut tags: Vec<&MsRevision> = m
        .tags
        .iter()
        .filter(|t| end.is_none_or(|e| t.created_at <= e))
        .collect();
    tags.sort_by_key(|t| std::cmp::Reverse(t.created_at));
    ok(
        h,
        json!({ "RevisionMap": {
            "Branches": m.branches.iter().map(revision_json).collect::<Vec<_>>(),
            "Tags": tags.into_iter().map(revision_json).collect::<Vec<_>>(),
        }}),
    )
}

fn is_true(v: Option<&str>) -> bool {
    matches!(v, Some(s) if s.eq_ignore_ascii_case("true") || s == "1")
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

/// `GET .../repo/files?Revision=&Recursive=&Root=`: the whole tree, no pagination (§3.3).
fn files(h: &HeaderMap, m: &MsModel, q: &[(String, String)]) -> Response {
    let rev_name = query_get(q, "Revision")
        .filter(|r| !r.is_empty())
        .unwrap_or("master");
    let Some(rev) = m.find_revision(rev_name) else {
        return revision_not_found(h, rev_name);
    };
    let recursive = is_true(query_get(q, "Recursive"));
    let root = query_get(q, "Root").unwrap_or("").trim_matches('/');
    let mut dirs = BTreeSet::new();
    for f in &rev.files {
        let mut p = f.path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            dirs.insert(parent.to_string());
            p = parent;
        }
    }
    let under = |p: &str| {
        let inside = root.is_empty() || p.starts_with(&format!("{root}/"));
        inside && (recursive || parent_of(p) == root)
    };
    let mut entries: Vec<(String, Value)> = dirs
        .iter()
        .filter(|d| under(d))
        .map(|d| {
            (
                d.clone(),
                json!({
                    "CommitMessage": format!("add {d}"), "CommittedDate": COMMITTED_AT,
                    "CommitterName": "mock-modelscope", "InCheck": false, "IsLFS": false,
                    "Mode": "16384", "Name": d.rsplit('/').next().unwrap_or(d), "Path": d,
                    "Revision": rev.commit_id, "Sha256": "", "Size": 0, "Type": "tree",
                }),
            )
        })
        .collect();
    entries.extend(rev.files.iter().filter(|f| under(&f.path)).map(|f| {
        (
            f.path.clone(),
            json!({
                "CommitMessage": format!("upload {}", f.name()), "CommittedDate": COMMITTED_AT,
                "CommitterName": "mock-modelscope", "InCheck": false, "IsLFS": f.is_lfs,
                "Mode": "33188", "Name": f.name(), "Path": f.path,
                "Revision": f.last_commit(), "Sha256": f.listed_sha256(),
                "Size": f.content.len(), "Type": "blob",
            }),
        )
    }));
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    ok(
        h,
        json!({ "Files": entries.into_iter().map(|(_, v)| v).collect::<Vec<_>>() }),
    )
}

/// `GET|HEAD .../repo?Revision=&FilePath=`: `302` to a signed OSS URL (§3.4, §12.6).
fn download(st: &MsState, h: &HeaderMap, m: &MsModel, q: &[(String, String)]) -> Response {
    let Some(path) = query_get(q, "FilePath").filter(|p| !p.is_empty()) else {
        return bad_request(h, "FilePath");
    };
    let rev_name = query_get(q, "Revision")
        .filter(|r| !r.is_empty())
        .unwrap_or("master");
    let Some(rev) = m.find_revision(rev_name) else {
        return revision_not_found(h, rev_name);
    };
    let path = path.trim_start_matches('/');
    let Some(file) = rev.files.iter().find(|f| f.path == path) else {
        return envelope(
            StatusCode::NOT_FOUND,
            h,
            10_010_205_002,
            Value::Null,
            &format!("文件不存在: {path}"),
        );
    };
    let key = oss_key(file);
    let signed = st.oss.sign(&key);
    let expires = signed.expires.to_string();
    let disposition = format!("attachment;filename={}", file.name());
    let query = encode_query(&[
        ("Expires", &expires),
        ("OSSAccessKeyId", "LTAI5tMockAccessKey01"),
        ("Signature", &signed.signature),
        ("response-content-disposition", &disposition),
    ]);
    let location = format!("{}{}?{}", st.oss.base_url(), key, query);
    let mut headers = HeaderMap::new();
    headers.insert(header::LOCATION, hv(&location));
    headers.insert(header::CONTENT_LENGTH, 0.into());
    answer(StatusCode::FOUND, headers, Body::empty())
}

/// The OSS host: signed, expiring URLs; Range; no credentials accepted (§3.4, §12.7, §12.8).
fn oss_rules() -> StorageRules {
    StorageRules {
        label: "oss",
        admit: |method, h| {
            if let Some(refused) = only_get_and_head(method) {
                return Some(refused);
            }
            let has_cookie = h
                .get_all(header::COOKIE)
                .iter()
                .any(|v| String::from_utf8_lossy(v.as_bytes()).contains("m_session_id"));
            (has_cookie || h.contains_key(header::AUTHORIZATION)).then(|| {
                xml_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidArgument",
                    "Authorization header or m_session_id cookie is not allowed on a signed URL",
                )
            })
        },
        last_modified: COMMITTED_AT,
        signature_param: "Signature",
        refuse: |e| match e {
            SignError::Expired => xml_error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Request has expired.",
            ),
            SignError::Invalid => xml_error(
                StatusCode::FORBIDDEN,
                "SignatureDoesNotMatch",
                SIGNATURE_MISMATCH,
            ),
        },
        headers: oss_headers,
    }
}

/// OSS's headers on an object: an upper-case MD5 ETag (not the sha256).
fn oss_headers(_key: &str, content: &Bytes, _q: &[(String, String)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let etag = format!("\"{}\"", md5_hex(content).to_uppercase());
    headers.insert(header::ETAG, hv(&etag));
    headers.insert("x-oss-request-id", hv(&random_hex(24).to_uppercase()));
    headers.insert("server", HeaderValue::from_static("AliyunOSS"));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{client, gunzip, header as h};

    const TOKEN: &str = "ms-0a1b2c3d-4e5f-6789-abcd-ef0123456789";

    fn weights() -> Bytes {
        Bytes::from((0..3000u32).map(|i| (i % 253) as u8).collect::<Vec<u8>>())
    }

    async fn mock() -> MsMock {
        let m = MsMock::start().await;
        m.set_valid_token(TOKEN);
        let files = vec![
            MsFile::new("README.md", "# tiny\n"),
            MsFile::new("config.json", "{}\n"),
            MsFile::lfs("onnx/model.onnx", weights()),
            MsFile::new("my file+1.txt", "spaces and plus\n"),
            MsFile::new("empty.txt", ""),
            MsFile::new("bad.bin", "served bytes").with_wrong_sha256(),
        ];
        m.add_model(
            MsModel::new("acme-ai/tiny")
                .with_files(files.clone())
                .with_tag("v1.0.0", 1_731_000_000, files[..2].to_vec())
                .with_tag("v1.1.0", 1_751_012_345, files[..3].to_vec()),
        );
        m.add_model(
            MsModel::new("acme-ai/secret")
                .private(true)
                .with_files(vec![MsFile::new("a.txt", "secret\n")]),
        );
        m
    }

    #[tokio::test]
    async fn info_revisions_and_file_list() {
        let m = mock().await;
        let c = client();
        let base = format!("{}/api/v1/models/acme-ai/tiny", m.endpoint());
        let v: Value = c.get(&base).send().await.unwrap().json().await.unwrap();
        assert_eq!(v["Code"], 200);
        assert_eq!(v["Success"], true);
        assert_eq!(v["Data"]["Name"], "tiny");
        assert_eq!(v["Data"]["Path"], "acme-ai");
        assert!(v["RequestId"].is_string());

        let v: Value = c
            .get(format!("{base}/revisions"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let tags = &v["Data"]["RevisionMap"]["Tags"];
        assert_eq!(tags[0]["Revision"], "v1.1.0");
        assert_eq!(tags[1]["Revision"], "v1.0.0");
        assert_eq!(
            v["Data"]["RevisionMap"]["Branches"][0]["Revision"],
            "master"
        );
        let v: Value = c
            .get(format!("{base}/revisions?EndTime=1740000000"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            v["Data"]["RevisionMap"]["Tags"].as_array().unwrap().len(),
            1
        );

        for rec in ["True", "true", "1"] {
            let r = c
                .get(format!("{base}/repo/files?Revision=master&Recursive={rec}"))
                .header("accept-encoding", "gzip")
                .send()
                .await
                .unwrap();
            assert_eq!(h(&r, "content-encoding"), Some("gzip"));
            let v: Value = serde_json::from_str(&gunzip(&r.bytes().await.unwrap())).unwrap();
            let files = v["Data"]["Files"].as_array().unwrap();
            let paths: Vec<&str> = files.iter().map(|f| f["Path"].as_str().unwrap()).collect();
            assert_eq!(
                paths,
                [
                    ".gitattributes",
                    "README.md",
                    "bad.bin",
                    "config.json",
                    "empty.txt",
                    "my file+1.txt",
                    "onnx",
                    "onnx/model.onnx"
                ]
            );
            let onnx = &files[6];
            assert_eq!(
                (onnx["Type"].as_str(), onnx["Mode"].as_str()),
                (Some("tree"), Some("16384"))
            );
            let w = &files[7];
            assert_eq!(w["Sha256"], json!(sha256_hex(&weights())));
            assert_eq!(w["Size"], 3000);
            assert_eq!(w["IsLFS"], true);
            assert_eq!(w["Name"], "model.onnx");
            assert_ne!(w["Revision"], "master");
            assert_ne!(w["Revision"], files[1]["Revision"]);
            assert_ne!(files[2]["Sha256"], json!(sha256_hex(b"served bytes")));
        }
        // Non-recursive and Root.
        let v: Value = c
            .get(format!("{base}/repo/files?Revision=master"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["Data"]["Files"].as_array().unwrap().len(), 7);
        let v: Value = c
            .get(format!(
                "{base}/repo/files?Revision=v1.1.0&Recursive=True&Root=onnx"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["Data"]["Files"][0]["Path"], "onnx/model.onnx");
    }

    #[tokio::test]
    async fn download_redirect_range_and_hygiene() {
        let m = mock().await;
        let c = client();
        let url = format!(
            "{}/api/v1/models/acme-ai/tiny/repo?Revision=master&FilePath=onnx%2Fmodel.onnx",
            m.endpoint()
        );
        let head = c.head(&url).send().await.unwrap();
        assert_eq!(head.status(), 302);
        let r = c
            .get(&url)
            .header("cookie", format!("m_session_id={TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        let loc = h(&r, "location").unwrap().to_string();
        assert!(loc.starts_with(&m.oss_endpoint()), "{loc}");
        for p in ["Expires=", "OSSAccessKeyId=", "Signature="] {
            assert!(loc.contains(p), "{loc}");
        }
        let w = weights();
        // A fresh download asks bytes=0-(size-1) and gets 206.
        let r = c
            .get(&loc)
            .header("range", "bytes=0-2999")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(h(&r, "content-range"), Some("bytes 0-2999/3000"));
        assert_ne!(h(&r, "etag").unwrap(), format!("\"{}\"", sha256_hex(&w)));
        assert_eq!(
            h(&r, "content-disposition"),
            Some("attachment;filename=model.onnx")
        );
        assert!(h(&r, "content-encoding").is_none());
        assert_eq!(&r.bytes().await.unwrap()[..], &w[..]);
        let r = c
            .get(&loc)
            .header("range", "bytes=100-")
            .send()
            .await
            .unwrap();
        assert_eq!(h(&r, "content-range"), Some("bytes 100-2999/3000"));
        let r = c
            .get(&loc)
            .header("range", "bytes=3000-")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 416);
        assert_eq!(h(&r, "content-range"), Some("bytes */3000"));
        assert_eq!(m.oss_body_bytes_sent(), 3000 + 2900);
        // Credentials never go to OSS: rejected when they do.
        let r = c
            .get(&loc)
            .header("cookie", format!("m_session_id={TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let r = c.get(&loc).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(m
            .requests()
            .iter()
            .any(|q| q.host == "oss" && q.header("cookie").is_some()));
        // Quirks: 200 with Content-Range and the tail; corrupted once; expired.
        m.inject_oss_fault(Fault::RangeAs200WithContentRange);
        let r = c
            .get(&loc)
            .header("range", "bytes=2000-")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(h(&r, "content-range"), Some("bytes 2000-2999/3000"));
        assert_eq!(r.bytes().await.unwrap().len(), 1000);
        m.inject_oss_fault(Fault::CorruptBody);
        let b = c.get(&loc).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(b.len(), 3000);
        assert_ne!(sha256_hex(&b), sha256_hex(&w));
        let b = c.get(&loc).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(sha256_hex(&b), sha256_hex(&w));
        m.expire_signed_urls();
        let r = c.get(&loc).send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert!(r.text().await.unwrap().contains("expired"));

        // quote_plus FilePath: `+` is a space, `%2B` a plus.
        let r = c
            .get(format!(
                "{}/api/v1/models/acme-ai/tiny/repo?Revision=master&FilePath=my+file%2B1.txt",
                m.endpoint()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        let body = c
            .get(h(&r, "location").unwrap())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "spaces and plus\n");
        // Zero-byte file: 200 with Content-Length 0; a Range on it is 416.
        let r = c
            .get(format!(
                "{}/api/v1/models/acme-ai/tiny/repo?FilePath=empty.txt",
                m.endpoint()
            ))
            .send()
            .await
            .unwrap();
        let loc = h(&r, "location").unwrap().to_string();
        let r = c.get(&loc).send().await.unwrap();
        assert_eq!(
            (r.status().as_u16(), h(&r, "content-length")),
            (200, Some("0"))
        );
        assert_eq!(
            c.get(&loc)
                .header("range", "bytes=0-")
                .send()
                .await
                .unwrap()
                .status(),
            416
        );
    }

    #[tokio::test]
    async fn errors_and_auth() {
        let m = mock().await;
        let c = client();
        let r = c
            .get(format!("{}/api/v1/models/acme-ai/none", m.endpoint()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["Success"], false);
        assert_ne!(v["Code"], 200);
        assert_eq!(v["Message"], "模型不存在");
        assert_eq!(v["Data"], Value::Null);

        let secret = format!(
            "{}/api/v1/models/acme-ai/secret/repo/files?Revision=master&Recursive=True",
            m.endpoint()
        );
        let r = c.get(&secret).send().await.unwrap();
        assert_eq!(r.status(), 403);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["Message"], "用户未登录");
        let r = c
            .get(&secret)
            .header("cookie", format!("m_session_id={TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = c.get(&secret).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = c.get(&secret).bearer_auth("ms-wrong").send().await.unwrap();
        assert_eq!(r.status(), 403);
        m.set_anonymous_private_status(401);
        assert_eq!(c.get(&secret).send().await.unwrap().status(), 401);

        // Unknown revision and missing file.
        let r = c
            .get(format!(
                "{}/api/v1/models/acme-ai/tiny/repo/files?Revision=nope",
                m.endpoint()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let r = c
            .get(format!(
                "{}/api/v1/models/acme-ai/tiny/repo?FilePath=missing",
                m.endpoint()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);

        // Envelope error inside HTTP 200, and 429 with Retry-After.
        m.inject_api_error(MsApiError {
            http_status: 200,
            code: 10_010_299_999,
            message: "系统繁忙".into(),
            retry_after: None,
        });
        let r = c
            .get(format!("{}/api/v1/models/acme-ai/tiny", m.endpoint()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["Success"], false);
        m.inject_api_error(MsApiError {
            http_status: 429,
            code: 429,
            message: "Too Many Requests".into(),
            retry_after: Some(2),
        });
        let r = c
            .get(format!("{}/api/v1/models/acme-ai/tiny", m.endpoint()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            (r.status().as_u16(), h(&r, "retry-after")),
            (429, Some("2"))
        );
    }
}
