//! A mock of the Hugging Face Hub, following `shared/specs/huggingface.md`.
//!
//! Two hosts: the **hub** (`/api/...`, `/{prefix}{repo}/resolve/{rev}/{path}`,
//! `/api/resolve-cache/...`) and a separate **CDN** host:port serving LFS/Xet bytes from
//! signed, expiring URLs (§4.2 (c), §11.1).
//!
//! Choices where the spec leaves room (each is what the real service does as the spec
//! describes it):
//! * Regular (non-LFS) files answer with the current relative `307` to `/api/resolve-cache/...`
//!   (§4.2 (b)); [`HfMock::set_resolve_cache_redirect`]`(false)` switches to the classic
//!   direct `200` (§4.2 (a)).
//! * Gating (`GatedRepo`) applies to file contents (`/resolve/`, `/api/resolve-cache/`), not to
//!   repo info or the tree listing, which the Hub shows to anyone (info carries `gated`).
//!   Private repos hide everything (`RepoNotFound`).
//! * The CDN answers an expired or revoked signature with `403` and a CloudFront-style XML
//!   body, and a request carrying `Authorization` with `400` (S3's "only one auth mechanism"),
//!   so a token leak can never pass silently.
//! * Tree `cursor` values are opaque hex; directory `oid`s are made-up but stable sha1s.
//! * Unknown `expand` names are ignored; Xet is not implemented (`X-Xet-Hash` plus a
//!   `xet-auth` Link that 404s, as §4.6 allows).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::common::{
    accepts_gzip, enc, encode_query, gzip, header_str, hv, iso8601, json_response, path_segments,
    query_get, query_pairs, random_hex, random_uuid, raw_segments, text_response, xml_error,
    SignError, COMPONENT, PATH,
};
use super::storage::{only_get_and_head, Mock, StorageHost, StorageRules};
use crate::content::{git_blob_sha1_hex, sha1_hex, sha256_hex};
use crate::serve::body::Shape;
use crate::serve::entity::{answer, serve_entity, Entity};
use crate::serve::fault::FaultQueue;
use crate::serve::{lock, Body, Fault, Request, Response};

/// `Content-Type` of Hub JSON.
const JSON_CT: &str = "application/json; charset=utf-8";
/// Fixed creation / modification times reported by the mock.
const CREATED_AT: u64 = 1_730_538_940;
const MODIFIED_AT: u64 = 1_753_884_131;

/// The kind of a Hub repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RepoKind {
    /// A model: `/api/models/...`, files at `/{repo}/resolve/...` (no prefix).
    Model,
    /// A dataset: `/api/datasets/...`, files at `/datasets/{repo}/resolve/...`.
    Dataset,
    /// A space: `/api/spaces/...`, files at `/spaces/{repo}/resolve/...`.
    Space,
}

impl RepoKind {
    /// The plural used in `/api/{plural}/...` paths.
    fn api_plural(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
            RepoKind::Space => "spaces",
        }
    }

    /// The prefix of file URLs (`""`, `"datasets/"`, `"spaces/"`).
    pub fn url_prefix(self) -> &'static str {
        match self {
            RepoKind::Model => "",
            RepoKind::Dataset => "datasets/",
            RepoKind::Space => "spaces/",
        }
    }

    fn singular(self) -> &'static str {
        match self {
            RepoKind::Model => "model",
            RepoKind::Dataset => "dataset",
            RepoKind::Space => "space",
        }
    }

    fn from_plural(s: &str) -> Option<RepoKind> {
        match s {
            "models" => Some(RepoKind::Model),
            "datasets" => Some(RepoKind::Dataset),
            "spaces" => Some(RepoKind::Space),
            _ => None,
        }
    }
}

/// One file of a commit.
#[derive(Debug, Clone)]
pub struct HfFile {
    /// Path in the repo, `/`-separated, no leading `/`.
    pub path: String,
    /// The file's bytes.
    pub content: Bytes,
    /// Stored in git-LFS: resolved with a `302` to the CDN (§4.2 (c)).
    pub lfs: bool,
    /// Xet-backed (implies `lfs`): the `302` also carries `X-Xet-Hash` and a `xet-auth` Link.
    pub xet: bool,
}

impl HfFile {
    /// A regular git file (served by the Hub itself; ETag = git blob sha1).
    pub fn regular(path: impl Into<String>, content: impl Into<Bytes>) -> HfFile {
        HfFile {
            path: path.into(),
            content: content.into(),
            lfs: false,
            xet: false,
        }
    }

    /// An LFS file (redirected to the CDN; ETag = sha256).
    pub fn lfs(path: impl Into<String>, content: impl Into<Bytes>) -> HfFile {
        HfFile {
            lfs: true,
            ..HfFile::regular(path, content)
        }
    }

    /// Marks the file Xet-backed (and LFS).
    pub fn xet(mut self) -> HfFile {
        self.lfs = true;
        self.xet = true;
        self
    }

    /// The real size in bytes.
    pub fn size(&self) -> u64 {
        self.content.len() as u64
    }

    /// Lower-case hex sha256 of the content (the LFS `oid`).
    pub fn sha256(&self) -> String {
        sha256_hex(&self.content)
    }

    /// The git-LFS pointer file stored in git for an LFS file.
    fn lfs_pointer(&self) -> String {
        format!(
            "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n",
            self.sha256(),
            self.size()
        )
    }

    /// The git object id: blob sha1 of the content, or of the LFS pointer for LFS files
    /// (tree `oid`, siblings `blobId`).
    fn git_oid(&self) -> String {
        if self.lfs {
            git_blob_sha1_hex(self.lfs_pointer().as_bytes())
        } else {
            git_blob_sha1_hex(&self.content)
        }
    }

    /// The unquoted etag clients see: sha256 for LFS, git blob sha1 otherwise (§4.4).
    pub fn etag(&self) -> String {
        if self.lfs {
            self.sha256()
        } else {
            git_blob_sha1_hex(&self.content)
        }
    }

    /// A made-up but stable Xet hash.
    fn xet_hash(&self) -> String {
        sha256_hex(format!("xet:{}", self.sha256()).as_bytes())
    }
}

/// One commit: the complete file set at that commit.
#[derive(Debug, Clone)]
pub struct HfCommit {
    /// 40-hex commit id.
    pub sha: String,
    /// Every file of the tree at this commit.
    pub files: Vec<HfFile>,
}

/// A repository with its commits and refs.
#[derive(Debug, Clone)]
pub struct HfRepo {
    /// Model, dataset or space.
    pub kind: RepoKind,
    /// `namespace/name` (or a bare canonical name such as `gpt2`).
    pub id: String,
    /// Gated: contents need an approved token (401 anonymous, 403 unapproved).
    pub gated: bool,
    /// Private: everything needs an approved token (`RepoNotFound` otherwise).
    pub private: bool,
    /// Disabled: everything answers `403` "Access to this resource is disabled."
    pub disabled: bool,
    /// All commits.
    pub commits: Vec<HfCommit>,
    /// Branch name -> commit sha. Names starting with `refs/pr/` are pull requests.
    pub branches: BTreeMap<String, String>,
    /// Tag name -> commit sha.
    pub tags: BTreeMap<String, String>,
}

impl HfRepo {
    /// An empty repository (no commits; add some with [`HfRepo::with_branch`]).
    pub fn new(kind: RepoKind, id: impl Into<String>) -> HfRepo {
        HfRepo {
            kind,
            id: id.into(),
            gated: false,
            private: false,
            disabled: false,
            commits: Vec::new(),
            branches: BTreeMap::new(),
            tags: BTreeMap::new(),
        }
    }

    /// An empty model repository.
    pub fn model(id: impl Into<String>) -> HfRepo {
        HfRepo::new(RepoKind::Model, id)
    }

    /// An empty dataset repository.
    pub fn dataset(id: impl Into<String>) -> HfRepo {
        HfRepo::new(RepoKind::Dataset, id)
    }

    /// Sets `gated`.
    pub fn gated(mut self, on: bool) -> HfRepo {
        self.gated = on;
        self
    }

    /// Sets `private`.
    pub fn private(mut self, on: bool) -> HfRepo {
        self.private = on;
        self
    }

    /// Adds a commit with `files` on `main`.
    pub fn with_files(self, files: Vec<HfFile>) -> HfRepo {
        self.with_branch("main", files)
    }

    /// Adds a commit holding exactly `files` and points `branch` at it. The commit id is a
    /// stable sha1 of the repo, the branch, the commit's position and the file ids.
    pub fn with_branch(mut self, branch: &str, files: Vec<HfFile>) -> HfRepo {
        let mut seed = format!("{}\n{}\n{}\n", self.id, branch, self.commits.len());
        for f in &files {
            seed.push_str(&format!("{} {}\n", f.path, f.git_oid()));
        }
        let sha = sha1_hex(seed.as_bytes());
        self.commits.push(HfCommit {
            sha: sha.clone(),
            files,
        });
        self.branches.insert(branch.to_string(), sha);
        self
    }

    /// Points tag `tag` at the commit `rev` (a branch, tag or commit id) resolves to.
    ///
    /// # Panics
    /// If `rev` does not resolve.
    pub fn with_tag(mut self, tag: &str, rev: &str) -> HfRepo {
        let sha = self
            .commit_sha(rev)
            .unwrap_or_else(|| panic!("HfRepo::with_tag: unknown revision {rev}"));
        self.tags.insert(tag.to_string(), sha);
        self
    }

    /// The commit a branch, tag or full commit id resolves to.
    pub fn commit_sha(&self, rev: &str) -> Option<String> {
        if let Some(s) = self.branches.get(rev).or_else(|| self.tags.get(rev)) {
            return Some(s.clone());
        }
        self.commits
            .iter()
            .find(|c| c.sha == rev)
            .map(|c| c.sha.clone())
    }

    fn commit(&self, sha: &str) -> Option<&HfCommit> {
        self.commits.iter().find(|c| c.sha == sha)
    }

    fn file_at(&self, sha: &str, path: &str) -> Option<&HfFile> {
        self.commit(sha)?.files.iter().find(|f| f.path == path)
    }
}

/// Who is calling, from `Authorization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Anonymous,
    /// A valid token with access to gated and private repos.
    Approved,
    /// A valid token without access to gated or private repos.
    Unapproved,
    /// An unknown token.
    Invalid,
}

/// Switches of the Hub host.
#[derive(Debug, Default)]
struct Settings {
    tree_page_size: Option<usize>,
    /// Where tree pages' `Link: rel="next"` point instead of the Hub itself (a hostile or
    /// broken Hub), e.g. `http://127.0.0.1:PORT`.
    tree_next_base: Option<String>,
    /// Regular files answer the resolve-cache `307` (on unless switched off).
    direct_files: bool,
    gzip_text: bool,
    weak_etags: bool,
}

/// A one-shot answer replacing the next Hub response.
#[derive(Debug, Clone, Copy)]
enum HubInjection {
    RateLimited { retry_after: u64 },
    Status(u16),
}

/// The Hub side of an [`HfMock`]: repos, tokens, switches.
pub struct HfState {
    /// `http://127.0.0.1:PORT` of the Hub itself.
    endpoint: String,
    cdn: Arc<StorageHost>,
    repos: Mutex<Vec<HfRepo>>,
    aliases: Mutex<HashMap<(RepoKind, String), String>>,
    approved: Mutex<HashSet<String>>,
    unapproved: Mutex<HashSet<String>>,
    settings: Mutex<Settings>,
    hub_faults: FaultQueue,
    injections: Mutex<VecDeque<HubInjection>>,
    started: Instant,
    bucket_counts: Mutex<HashMap<&'static str, u64>>,
}

/// A running mock of the Hugging Face Hub plus its CDN. Dropping it stops both hosts.
pub type HfMock = Mock<HfState>;

impl HfMock {
    /// Starts the Hub and the CDN on two ports of `127.0.0.1`.
    pub async fn start() -> HfMock {
        Mock::launch(
            "hub",
            cdn_rules(),
            |endpoint, cdn| HfState {
                endpoint,
                cdn,
                repos: Mutex::new(Vec::new()),
                aliases: Mutex::new(HashMap::new()),
                approved: Mutex::new(HashSet::new()),
                unapproved: Mutex::new(HashSet::new()),
                settings: Mutex::new(Settings::default()),
                hub_faults: FaultQueue::default(),
                injections: Mutex::new(VecDeque::new()),
                started: Instant::now(),
                bucket_counts: Mutex::new(HashMap::new()),
            },
            hub_handler,
        )
    }

    /// `http://127.0.0.1:PORT` of the CDN host.
    pub fn cdn_endpoint(&self) -> String {
        self.storage.base_url()
    }

    /// Adds `repo`, replacing a repo of the same kind and id.
    pub fn add_repo(&self, repo: HfRepo) {
        for f in repo.commits.iter().flat_map(|c| &c.files).filter(|f| f.lfs) {
            self.storage.put(cdn_key(&f.sha256()), f.content.clone());
        }
        let mut repos = lock(&self.state.repos);
        repos.retain(|r| !(r.kind == repo.kind && r.id == repo.id));
        repos.push(repo);
    }

    /// The commit `rev` (branch, tag or commit id) resolves to in repo `id`, if both exist.
    pub fn commit_sha(&self, kind: RepoKind, id: &str, rev: &str) -> Option<String> {
        self.state.repo(kind, id)?.commit_sha(rev)
    }

    /// Makes `old_id` a renamed repo: its `/resolve/` URLs answer a relative `307` to the
    /// same URL under `new_id`, without ETag (§4.2 (d)). Ids differing from a repo's only in
    /// case behave the same without this call.
    pub fn add_renamed_repo(&self, kind: RepoKind, old_id: &str, new_id: &str) {
        lock(&self.state.aliases).insert((kind, old_id.to_string()), new_id.to_string());
    }

    /// Adds a token that authorizes everything (gated and private repos). Any other bearer
    /// token not added with [`HfMock::add_unapproved_token`] gets `401` "Invalid credentials
    /// in Authorization header".
    pub fn set_valid_token(&self, token: &str) {
        lock(&self.state.approved).insert(token.to_string());
    }

    /// Adds a valid token that is *not* approved for gated repos (`403 GatedRepo`) nor a
    /// member of private ones (`404 RepoNotFound`).
    pub fn add_unapproved_token(&self, token: &str) {
        lock(&self.state.unapproved).insert(token.to_string());
    }

    /// Entries per tree page (default: 1000, or 50 with `expand=true`).
    pub fn set_tree_page_size(&self, n: usize) {
        lock(&self.state.settings).tree_page_size = Some(n.max(1));
    }

    /// Point tree pages' `Link: rel="next"` at `base` (scheme, host and port) instead of the
    /// Hub, as a hostile Hub or a broken proxy would; `None` restores the Hub's own links.
    pub fn set_tree_next_link_base(&self, base: Option<&str>) {
        lock(&self.state.settings).tree_next_base = base.map(str::to_string);
    }

    /// `true` (default): regular files answer a relative `307` to `/api/resolve-cache/...`
    /// (§4.2 (b)). `false`: they are served directly with `200` (§4.2 (a)).
    pub fn set_resolve_cache_redirect(&self, on: bool) {
        lock(&self.state.settings).direct_files = !on;
    }

    /// Gzip text files on the Hub when the request accepts gzip and has no `Range`: no
    /// `Content-Length`, chunked, weak ETag (§4.2 (a), §11.4). Off by default.
    pub fn set_gzip_text_files(&self, on: bool) {
        lock(&self.state.settings).gzip_text = on;
    }

    /// Emit `W/"..."` ETags and `X-Linked-Etag`s on the Hub (§11.6). Off by default.
    pub fn set_weak_etags(&self, on: bool) {
        lock(&self.state.settings).weak_etags = on;
    }

    /// Body bytes the CDN has handed to connections so far.
    pub fn cdn_body_bytes_sent(&self) -> u64 {
        self.storage.bytes_sent()
    }

    /// Queues a fault for the next CDN `GET`.
    pub fn inject_cdn_fault(&self, fault: Fault) {
        self.storage.inject_fault(fault);
    }

    /// Queues a fault for the next `GET` of a regular file served by the Hub.
    pub fn inject_hub_fault(&self, fault: Fault) {
        self.state.hub_faults.extend([fault]);
    }

    /// The CDN ignores `Range` and always answers `200` with the whole file.
    pub fn set_cdn_ignore_range(&self, on: bool) {
        self.storage.set_ignore_range(on);
    }

    /// Limits CDN bodies to `bytes_per_sec` (`None`: unlimited).
    pub fn set_cdn_throttle(&self, bytes_per_sec: Option<u64>) {
        self.storage.set_throttle(bytes_per_sec);
    }

    /// The next `count` Hub requests answer `429` with `RateLimit: "<bucket>";r=0;t=<secs>`
    /// and `Retry-After: <secs>` (§7, §11.11).
    pub fn inject_rate_limit(&self, count: usize, retry_after_secs: u64) {
        let mut q = lock(&self.state.injections);
        for _ in 0..count {
            q.push_back(HubInjection::RateLimited {
                retry_after: retry_after_secs,
            });
        }
    }

    /// The next Hub request answers `status` with `{"error": ...}` (e.g. 500, 503).
    pub fn inject_hub_status(&self, status: u16) {
        lock(&self.state.injections).push_back(HubInjection::Status(status));
    }
}

// ---------------------------------------------------------------------------------------
// Hub
// ---------------------------------------------------------------------------------------

/// The rate-limit bucket of a path (§7).
fn bucket_of(path: &str) -> &'static str {
    if path.contains("/resolve/") {
        "resolvers"
    } else if path.starts_with("/api/") {
        "api"
    } else {
        "pages"
    }
}

fn bucket_quota(bucket: &str) -> u64 {
    match bucket {
        "resolvers" => 3000,
        "api" => 500,
        _ => 100,
    }
}

async fn hub_handler(st: Arc<HfState>, req: Request) -> Response {
    let bucket = bucket_of(req.uri().path());
    let injected = lock(&st.injections).pop_front();
    let mut resp = match injected {
        Some(HubInjection::RateLimited { retry_after }) => {
            let msg = format!(
                "429 Too Many Requests: you have reached your '{bucket}' rate limit. Retry after {retry_after} seconds (0/{} requests remaining in current 300s window).",
                bucket_quota(bucket)
            );
            let mut r = hf_error(StatusCode::TOO_MANY_REQUESTS, None, &msg);
            r.headers_mut().insert(
                "ratelimit",
                hv(&format!("\"{bucket}\";r=0;t={retry_after}")),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, retry_after.into());
            r
        }
        Some(HubInjection::Status(code)) => hf_error(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            None,
            "Internal Error - We're working hard to fix this as soon as possible!",
        ),
        None => hub_dispatch(&st, req).await,
    };
    st.decorate(&mut resp, bucket);
    resp
}

impl HfState {
    /// Common Hub headers (§1) and rate-limit headers on every response (§7).
    fn decorate(&self, resp: &mut Response, bucket: &'static str) {
        let used = {
            let mut c = lock(&self.bucket_counts);
            let n = c.entry(bucket).or_insert(0);
            *n += 1;
            *n
        };
        let quota = bucket_quota(bucket);
        let elapsed = self.started.elapsed().as_secs();
        let t = 300 - elapsed % 300;
        let h = resp.headers_mut();
        h.insert("x-powered-by", HeaderValue::from_static("huggingface-moon"));
        let vary = match h.get(header::VARY).and_then(|v| v.to_str().ok()) {
            Some(v) => format!("Origin, Accept, {v}"),
            None => "Origin, Accept".to_string(),
        };
        h.insert(header::VARY, hv(&vary));
        h.insert(
            "access-control-expose-headers",
            HeaderValue::from_static("X-Repo-Commit,X-Request-Id,X-Error-Code,X-Error-Message,X-Total-Count,ETag,Link,Accept-Ranges,Content-Range,X-Linked-Size,X-Linked-ETag,X-Xet-Hash"),
        );
        h.insert(
            "x-request-id",
            hv(&format!(
                "Root=1-{}-{};{}",
                random_hex(8),
                random_hex(24),
                random_uuid()
            )),
        );
        if !h.contains_key("ratelimit") {
            h.insert(
                "ratelimit",
                hv(&format!(
                    "\"{bucket}\";r={};t={t}",
                    quota.saturating_sub(used)
                )),
            );
        }
        h.insert(
            "ratelimit-policy",
            hv(&format!("\"fixed window\";\"{bucket}\";q={quota};w=300")),
        );
    }

    fn caller(&self, headers: &HeaderMap) -> Caller {
        let Some(v) = header_str(headers, "authorization") else {
            return Caller::Anonymous;
        };
        let Some((scheme, token)) = v.trim().split_once(' ') else {
            return Caller::Invalid;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Caller::Invalid;
        }
        let token = token.trim();
        if lock(&self.approved).contains(token) {
            Caller::Approved
        } else if lock(&self.unapproved).contains(token) {
            Caller::Unapproved
        } else {
            Caller::Invalid
        }
    }

    fn repo(&self, kind: RepoKind, id: &str) -> Option<HfRepo> {
        lock(&self.repos)
            .iter()
            .find(|r| r.kind == kind && r.id == id)
            .cloned()
    }

    /// The canonical id `id` redirects to (rename or case difference), if any.
    fn moved_to(&self, kind: RepoKind, id: &str) -> Option<String> {
        if let Some(new) = lock(&self.aliases).get(&(kind, id.to_string())) {
            return Some(new.clone());
        }
        lock(&self.repos)
            .iter()
            .find(|r| r.kind == kind && r.id.eq_ignore_ascii_case(id))
            .map(|r| r.id.clone())
    }

    fn repo_exists(&self, kind: RepoKind, id: &str) -> bool {
        lock(&self.repos)
            .iter()
            .any(|r| r.kind == kind && r.id.eq_ignore_ascii_case(id))
            || lock(&self.aliases).contains_key(&(kind, id.to_string()))
    }

    /// Looks up a repo for an API call, following renames silently.
    fn api_repo(&self, kind: RepoKind, id: &str, caller: Caller) -> Result<HfRepo, Box<Response>> {
        let found = self
            .repo(kind, id)
            .or_else(|| self.moved_to(kind, id).and_then(|c| self.repo(kind, &c)));
        match found {
            Some(r) => {
                check_access(&r, caller, false)?;
                Ok(r)
            }
            None => Err(Box::new(repo_not_found(caller))),
        }
    }
}

/// `{"error": msg}` with `X-Error-Code` / `X-Error-Message` (§6, §11.8).
fn hf_error(status: StatusCode, code: Option<&str>, msg: &str) -> Response {
    let body = serde_json::to_vec(&json!({ "error": msg })).expect("JSON");
    let mut b = hyper::Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, JSON_CT)
        .header("x-error-message", hv(msg));
    if let Some(code) = code {
        b = b.header("x-error-code", code);
    }
    b.body(Body::from(body)).expect("error response")
}

fn repo_not_found(caller: Caller) -> Response {
    let status = if caller == Caller::Anonymous {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::NOT_FOUND
    };
    hf_error(status, Some("RepoNotFound"), "Repository not found")
}

/// Private, disabled and (for contents) gated checks.
fn check_access(repo: &HfRepo, caller: Caller, contents: bool) -> Result<(), Box<Response>> {
    if repo.private && caller != Caller::Approved {
        return Err(Box::new(repo_not_found(caller)));
    }
    if repo.disabled {
        return Err(Box::new(hf_error(
            StatusCode::FORBIDDEN,
            None,
            "Access to this resource is disabled.",
        )));
    }
    if contents && repo.gated && caller != Caller::Approved {
        let kind = repo.kind.singular();
        return Err(Box::new(if caller == Caller::Anonymous {
            hf_error(
                StatusCode::UNAUTHORIZED,
                Some("GatedRepo"),
                &format!("Access to {kind} {} is restricted. You must have access to it and be authenticated to access it. Please log in.", repo.id),
            )
        } else {
            hf_error(
                StatusCode::FORBIDDEN,
                Some("GatedRepo"),
                &format!("Access to {kind} {} is restricted and you are not in the authorized list. Visit https://huggingface.co/{}{} to ask for access.", repo.id, repo.kind.url_prefix(), repo.id),
            )
        }));
    }
    Ok(())
}

fn revision_not_found(rev: &str) -> Response {
    hf_error(
        StatusCode::NOT_FOUND,
        Some("RevisionNotFound"),
        &format!("Invalid rev id: {rev}"),
    )
}

fn entry_not_found(commit: &str, msg: &str) -> Response {
    let mut r = hf_error(StatusCode::NOT_FOUND, Some("EntryNotFound"), msg);
    r.headers_mut().insert("x-repo-commit", hv(commit));
    r
}

fn method_not_allowed() -> Response {
    hf_error(StatusCode::METHOD_NOT_ALLOWED, None, "Method not allowed")
}

fn page_not_found() -> Response {
    hf_error(
        StatusCode::NOT_FOUND,
        None,
        "Sorry, we can't find the page you are looking for.",
    )
}

fn is_hex40(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn quoted(tag: &str, weak: bool) -> String {
    if weak {
        format!("W/\"{tag}\"")
    } else {
        format!("\"{tag}\"")
    }
}

async fn hub_dispatch(st: &HfState, req: Request) -> Response {
    let caller = st.caller(req.headers());
    if caller == Caller::Invalid {
        return hf_error(
            StatusCode::UNAUTHORIZED,
            None,
            "Invalid credentials in Authorization header",
        );
    }
    let segs = path_segments(req.uri());
    let raw = raw_segments(req.uri());
    if segs.first().map(String::as_str) == Some("api") {
        return api(st, caller, req, &segs[1..]).await;
    }
    // File URLs: [datasets/|spaces/]{repo}/resolve/{rev}/{path}
    let (kind, skip) = match segs.first().map(String::as_str) {
        Some("datasets") => (RepoKind::Dataset, 1),
        Some("spaces") => (RepoKind::Space, 1),
        _ => (RepoKind::Model, 0),
    };
    let rest = &segs[skip..];
    let idx = if rest.len() >= 4 && rest[2] == "resolve" {
        2
    } else if rest.len() >= 3 && rest[1] == "resolve" {
        1
    } else {
        return page_not_found();
    };
    let repo_id = rest[..idx].join("/");
    let rev = rest[idx + 1].clone();
    let path = rest[idx + 2..].join("/");
    if path.is_empty() {
        return page_not_found();
    }
    let raw_tail = raw[skip + idx..].join("/");
    resolve(st, caller, &req, kind, &repo_id, &rev, &path, &raw_tail)
}

/// `HEAD`/`GET /{prefix}{repo}/resolve/{rev}/{path}` (§4).
#[allow(clippy::too_many_arguments)]
fn resolve(
    st: &HfState,
    caller: Caller,
    req: &Request,
    kind: RepoKind,
    repo_id: &str,
    rev: &str,
    path: &str,
    raw_tail: &str,
) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return method_not_allowed();
    }
    let Some(repo) = st.repo(kind, repo_id) else {
        if let Some(canonical) = st.moved_to(kind, repo_id) {
            // §4.2 (d): relative 307, no ETag.
            let mut loc = format!("/{}{}/{}", kind.url_prefix(), canonical, raw_tail);
            if let Some(q) = req.uri().query() {
                loc.push('?');
                loc.push_str(q);
            }
            let mut r = text_response(
                StatusCode::TEMPORARY_REDIRECT,
                "text/plain; charset=utf-8",
                format!("Temporary Redirect. Redirecting to {loc}"),
            );
            r.headers_mut().insert(header::LOCATION, hv(&loc));
            return r;
        }
        return repo_not_found(caller);
    };
    if let Err(r) = check_access(&repo, caller, true) {
        return *r;
    }
    let Some(sha) = repo.commit_sha(rev) else {
        return revision_not_found(rev);
    };
    let Some(file) = repo.file_at(&sha, path) else {
        return entry_not_found(&sha, "Entry not found");
    };
    if file.lfs {
        return lfs_redirect(st, &repo, &sha, file);
    }
    if !lock(&st.settings).direct_files {
        // §4.2 (b): relative 307 to the resolve cache, junk query and etag in the Location.
        let loc = format!(
            "/api/resolve-cache/{}/{}/{}/{}?{}=&etag={}",
            kind.api_plural(),
            repo.id,
            sha,
            enc(path, PATH),
            enc(req.uri().path(), COMPONENT),
            enc(&format!("\"{}\"", file.git_oid()), COMPONENT)
        );
        let mut r = text_response(
            StatusCode::TEMPORARY_REDIRECT,
            "text/plain; charset=utf-8",
            format!("Temporary Redirect. Redirecting to {loc}"),
        );
        let h = r.headers_mut();
        h.insert(header::LOCATION, hv(&loc));
        h.insert("x-repo-commit", hv(&sha));
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        return r;
    }
    serve_hub_file(st, req, &sha, file)
}

/// The `302` to the CDN with the metadata on the redirect itself (§4.2 (c), §11.2).
fn lfs_redirect(st: &HfState, repo: &HfRepo, sha: &str, file: &HfFile) -> Response {
    let weak = lock(&st.settings).weak_etags;
    let sha256 = file.sha256();
    let resource = cdn_key(&sha256);
    let signed = st.cdn.sign(&resource);
    let name = file.path.rsplit('/').next().unwrap_or(&file.path);
    let ascii: String = name
        .chars()
        .map(|c| if c.is_ascii() && c != '"' { c } else { '_' })
        .collect();
    let disposition = format!(
        "inline; filename*=UTF-8''{}; filename=\"{}\";",
        enc(name, COMPONENT),
        ascii
    );
    let expires = signed.expires.to_string();
    let policy = random_hex(48);
    let mut q: Vec<(&str, &str)> = Vec::new();
    if file.xet {
        q.push(("X-Xet-Cas-Uid", "public"));
    }
    q.extend([
        ("response-content-disposition", disposition.as_str()),
        ("response-content-type", "application/octet-stream"),
        ("Expires", expires.as_str()),
        ("Policy", policy.as_str()),
        ("Signature", signed.signature.as_str()),
        ("Key-Pair-Id", "K2MOCKHFCDN0001"),
    ]);
    let location = format!("{}{}?{}", st.cdn.base_url(), resource, encode_query(&q));
    let mut r = text_response(
        StatusCode::FOUND,
        "text/plain; charset=utf-8",
        format!("Found. Redirecting to {location}"),
    );
    let h = r.headers_mut();
    h.insert(header::LOCATION, hv(&location));
    h.insert("x-repo-commit", hv(sha));
    h.insert("x-linked-etag", hv(&quoted(&sha256, weak)));
    h.insert("x-linked-size", file.size().into());
    h.insert(header::ETAG, hv(&quoted(&file.git_oid(), weak)));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if file.xet {
        h.insert("x-xet-hash", hv(&file.xet_hash()));
        h.insert(
            header::LINK,
            hv(&format!(
                "<{}/api/{}/{}/xet-read-token/{}>; rel=\"xet-auth\"",
                st.endpoint,
                repo.kind.api_plural(),
                repo.id,
                sha
            )),
        );
    }
    r
}

/// A regular file served by the Hub itself (§4.2 (a), and the resolve-cache target).
fn serve_hub_file(st: &HfState, req: &Request, sha: &str, file: &HfFile) -> Response {
    let (gzip_text, weak) = {
        let s = lock(&st.settings);
        (s.gzip_text, s.weak_etags)
    };
    let is_text = std::str::from_utf8(&file.content).is_ok();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if is_text {
            "text/plain; charset=utf-8"
        } else {
            "application/octet-stream"
        }),
    );
    headers.insert("x-repo-commit", hv(sha));
    let oid = file.git_oid();
    if gzip_text
        && is_text
        && accepts_gzip(req.headers())
        && !req.headers().contains_key(header::RANGE)
    {
        // Chunked gzip: no Content-Length, weak ETag (§11.4).
        let gz = Bytes::from(gzip(&file.content));
        headers.insert(header::ETAG, hv(&quoted(&oid, true)));
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        return answer(
            StatusCode::OK,
            headers,
            Body::stored(gz, false, Shape::default()),
        );
    }
    let etag = quoted(&oid, weak);
    headers.insert(header::ETAG, hv(&etag));
    if let Some(inm) = header_str(req.headers(), "if-none-match") {
        // Weak comparison (RFC 9110 §13.1.2): `W/` and quotes do not matter.
        let bare = |t: &str| {
            t.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_string()
        };
        if inm.trim() == "*" || inm.split(',').any(|t| bare(t) == oid) {
            return answer(StatusCode::NOT_MODIFIED, headers, Body::empty());
        }
    }
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let fault = (req.method() == Method::GET)
        .then(|| st.hub_faults.pop())
        .flatten();
    let entity = Entity {
        content: file.content.clone(),
        headers,
        etag: Some(etag),
        last_modified: None,
        ranges: true,
        head_ranges: true,
        exact: true,
        throttle: None,
    };
    serve_entity(req.method(), req.headers(), entity, fault)
}

/// Splits `{repo...}/{rest}` where the repo id is one or two segments.
fn split_repo<'a>(st: &HfState, kind: RepoKind, rest: &'a [String]) -> (String, &'a [String]) {
    const KEYWORDS: [&str; 6] = [
        "revision",
        "tree",
        "refs",
        "paths-info",
        "xet-read-token",
        "commits",
    ];
    if rest.len() >= 2 && st.repo_exists(kind, &format!("{}/{}", rest[0], rest[1])) {
        return (format!("{}/{}", rest[0], rest[1]), &rest[2..]);
    }
    if !rest.is_empty() && st.repo_exists(kind, &rest[0]) {
        return (rest[0].clone(), &rest[1..]);
    }
    if rest.len() >= 2 && !KEYWORDS.contains(&rest[1].as_str()) {
        return (format!("{}/{}", rest[0], rest[1]), &rest[2..]);
    }
    match rest.split_first() {
        Some((first, tail)) => (first.clone(), tail),
        None => (String::new(), rest),
    }
}

async fn api(st: &HfState, caller: Caller, req: Request, segs: &[String]) -> Response {
    let Some(first) = segs.first() else {
        return page_not_found();
    };
    if first == "resolve-cache" {
        return resolve_cache(st, caller, &req, &segs[1..]);
    }
    let Some(kind) = RepoKind::from_plural(first) else {
        return page_not_found();
    };
    let (repo_id, rest) = split_repo(st, kind, &segs[1..]);
    if repo_id.is_empty() {
        return page_not_found();
    }
    let method = req.method().clone();
    let is_read = method == Method::GET || method == Method::HEAD;
    match rest.first().map(String::as_str) {
        None if is_read => info(st, caller, &req, kind, &repo_id, "main"),
        Some("revision") if is_read && rest.len() >= 2 => {
            info(st, caller, &req, kind, &repo_id, &rest[1..].join("/"))
        }
        Some("tree") if is_read && rest.len() >= 2 => tree(
            st,
            caller,
            &req,
            kind,
            &repo_id,
            &rest[1],
            &rest[2..].join("/"),
        ),
        Some("refs") if is_read && rest.len() == 1 => refs(st, caller, &req, kind, &repo_id),
        Some("paths-info") if method == Method::POST && rest.len() >= 2 => {
            let rev = rest[1..].join("/");
            paths_info(st, caller, req, kind, &repo_id, &rev).await
        }
        None | Some("revision" | "tree" | "refs" | "paths-info") => method_not_allowed(),
        _ => page_not_found(),
    }
}

/// `/api/resolve-cache/{type}s/{repo}/{commit}/{path}`; the query is never required.
fn resolve_cache(st: &HfState, caller: Caller, req: &Request, segs: &[String]) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return method_not_allowed();
    }
    let Some(kind) = segs.first().and_then(|s| RepoKind::from_plural(s)) else {
        return page_not_found();
    };
    let rest = &segs[1..];
    let idx = if rest.len() >= 4 && is_hex40(&rest[2]) {
        2
    } else if rest.len() >= 3 && is_hex40(&rest[1]) {
        1
    } else {
        return page_not_found();
    };
    let repo_id = rest[..idx].join("/");
    let commit = &rest[idx];
    let path = rest[idx + 1..].join("/");
    let Some(repo) = st.repo(kind, &repo_id) else {
        return repo_not_found(caller);
    };
    if let Err(r) = check_access(&repo, caller, true) {
        return *r;
    }
    let Some(sha) = repo.commit_sha(commit) else {
        return revision_not_found(commit);
    };
    match repo.file_at(&sha, &path) {
        Some(f) if f.lfs => lfs_redirect(st, &repo, &sha, f),
        Some(f) => serve_hub_file(st, req, &sha, f),
        None => entry_not_found(&sha, "Entry not found"),
    }
}

/// Every directory that contains a file, as `a`, `a/b`, ...
fn directories(files: &[HfFile]) -> BTreeSet<String> {
    let mut dirs = BTreeSet::new();
    for f in files {
        let mut p = f.path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            dirs.insert(parent.to_string());
            p = parent;
        }
    }
    dirs
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

fn tree_oid(sha: &str, dir: &str) -> String {
    sha1_hex(format!("tree {sha} {dir}").as_bytes())
}

/// A tree / paths-info entry for a file (§3).
fn file_entry(f: &HfFile, sha: &str, expand: bool) -> Value {
    let mut e = json!({ "type": "file", "oid": f.git_oid(), "size": f.size(), "path": f.path });
    if f.lfs {
        e["lfs"] = json!({
            "oid": f.sha256(),
            "size": f.size(),
            "pointerSize": f.lfs_pointer().len(),
        });
    }
    if f.xet {
        e["xetHash"] = json!(f.xet_hash());
    }
    if expand {
        e["lastCommit"] = json!({ "id": sha, "title": format!("Upload {}", f.path), "date": iso8601(MODIFIED_AT) });
        e["securityFileStatus"] = json!({
            "status": "safe",
            "avScan": { "virusFound": false, "virusNames": null },
            "pickleImportScan": null,
        });
    }
    e
}

fn dir_entry(dir: &str, sha: &str, expand: bool) -> Value {
    let mut e = json!({ "type": "directory", "oid": tree_oid(sha, dir), "size": 0, "path": dir });
    if expand {
        e["lastCommit"] =
            json!({ "id": sha, "title": format!("Add {dir}"), "date": iso8601(MODIFIED_AT) });
    }
    e
}

fn is_true(v: Option<&str>) -> bool {
    matches!(v, Some(s) if s.eq_ignore_ascii_case("true") || s == "1")
}

/// `GET /api/{type}s/{repo}/tree/{rev}[/{path}]` with `Link` pagination (§3, §11.9).
fn tree(
    st: &HfState,
    caller: Caller,
    req: &Request,
    kind: RepoKind,
    repo_id: &str,
    rev: &str,
    dir: &str,
) -> Response {
    let repo = match st.api_repo(kind, repo_id, caller) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let Some(sha) = repo.commit_sha(rev) else {
        return revision_not_found(rev);
    };
    let files = &repo.commit(&sha).expect("resolved commit exists").files;
    let q = query_pairs(req.uri());
    let recursive = is_true(query_get(&q, "recursive"));
    let expand = is_true(query_get(&q, "expand"));
    let dir = dir.trim_matches('/');
    let dirs = directories(files);
    if !dir.is_empty() && !dirs.contains(dir) {
        return entry_not_found(&sha, &format!("{dir} does not exist on \"{rev}\""));
    }
    let under = |p: &str| {
        let inside = dir.is_empty() || p.starts_with(&format!("{dir}/"));
        inside && (recursive || parent_of(p) == dir)
    };
    let mut entries: Vec<(String, Value)> = dirs
        .iter()
        .filter(|d| under(d))
        .map(|d| (d.clone(), dir_entry(d, &sha, expand)))
        .collect();
    entries.extend(
        files
            .iter()
            .filter(|f| under(&f.path))
            .map(|f| (f.path.clone(), file_entry(f, &sha, expand))),
    );
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let page_size = lock(&st.settings)
        .tree_page_size
        .unwrap_or(if expand { 50 } else { 1000 });
    let offset = match query_get(&q, "cursor") {
        None => 0,
        Some(c) => match hex::decode(c)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                s.strip_prefix("offset:")
                    .and_then(|n| n.parse::<usize>().ok())
            }) {
            Some(n) => n,
            None => return hf_error(StatusCode::BAD_REQUEST, None, "Invalid cursor"),
        },
    };
    let page: Vec<Value> = entries
        .iter()
        .skip(offset)
        .take(page_size)
        .map(|(_, v)| v.clone())
        .collect();
    let mut resp = json_response(StatusCode::OK, req.headers(), &Value::Array(page), JSON_CT);
    if offset + page_size < entries.len() {
        let cursor = hex::encode(format!("offset:{}", offset + page_size));
        let kept: Vec<&str> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("cursor="))
            .collect();
        let mut query = kept.join("&");
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(&format!("cursor={cursor}"));
        let base = lock(&st.settings)
            .tree_next_base
            .clone()
            .unwrap_or_else(|| st.endpoint.clone());
        let next = format!("{base}{}?{}", req.uri().path(), query);
        resp.headers_mut()
            .insert(header::LINK, hv(&format!("<{next}>; rel=\"next\"")));
    }
    resp
}

/// `GET /api/{type}s/{repo}[/revision/{rev}]` (§2).
fn info(
    st: &HfState,
    caller: Caller,
    req: &Request,
    kind: RepoKind,
    repo_id: &str,
    rev: &str,
) -> Response {
    let repo = match st.api_repo(kind, repo_id, caller) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let Some(sha) = repo.commit_sha(rev) else {
        return revision_not_found(rev);
    };
    let q = query_pairs(req.uri());
    let blobs = is_true(query_get(&q, "blobs"));
    let mut files: Vec<&HfFile> = repo.commit(&sha).expect("commit").files.iter().collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let siblings: Vec<Value> = files
        .iter()
        .map(|f| {
            if !blobs {
                return json!({ "rfilename": f.path });
            }
            let mut s = json!({ "rfilename": f.path, "size": f.size(), "blobId": f.git_oid() });
            if f.lfs {
                s["lfs"] = json!({ "sha256": f.sha256(), "size": f.size(), "pointerSize": f.lfs_pointer().len() });
            }
            s
        })
        .collect();
    let author = repo.id.split_once('/').map(|(a, _)| a.to_string());
    let mut o = Map::new();
    o.insert("_id".into(), json!(&sha1_hex(repo.id.as_bytes())[..24]));
    o.insert("id".into(), json!(repo.id));
    if kind == RepoKind::Model {
        o.insert("modelId".into(), json!(repo.id));
    }
    o.insert("author".into(), json!(author));
    o.insert("sha".into(), json!(sha));
    o.insert("lastModified".into(), json!(iso8601(MODIFIED_AT)));
    o.insert("createdAt".into(), json!(iso8601(CREATED_AT)));
    o.insert("private".into(), json!(repo.private));
    o.insert(
        "gated".into(),
        if repo.gated {
            json!("manual")
        } else {
            json!(false)
        },
    );
    o.insert("disabled".into(), json!(repo.disabled));
    o.insert("downloads".into(), json!(0));
    o.insert("likes".into(), json!(0));
    match kind {
        RepoKind::Model => {
            o.insert("library_name".into(), json!("transformers"));
            o.insert("pipeline_tag".into(), json!("text-generation"));
            o.insert("tags".into(), json!(["transformers", "safetensors"]));
            o.insert("spaces".into(), json!([]));
        }
        RepoKind::Dataset => {
            o.insert("tags".into(), json!([]));
        }
        RepoKind::Space => {
            o.insert("sdk".into(), json!("gradio"));
            o.insert("tags".into(), json!(["gradio"]));
        }
    }
    o.insert("siblings".into(), Value::Array(siblings));
    o.insert(
        "usedStorage".into(),
        json!(files.iter().map(|f| f.size()).sum::<u64>()),
    );
    if is_true(query_get(&q, "securityStatus")) {
        o.insert(
            "securityRepoStatus".into(),
            json!({ "scansDone": true, "filesWithIssues": [] }),
        );
    }
    let expand: Vec<&str> = q
        .iter()
        .filter(|(k, _)| k == "expand" || k == "expand[]")
        .map(|(_, v)| v.as_str())
        .collect();
    if !expand.is_empty() {
        o.retain(|k, _| k == "_id" || k == "id" || expand.contains(&k.as_str()));
    }
    json_response(StatusCode::OK, req.headers(), &Value::Object(o), JSON_CT)
}

/// `GET /api/{type}s/{repo}/refs[?include_prs=1]` (§3, related endpoints).
fn refs(st: &HfState, caller: Caller, req: &Request, kind: RepoKind, repo_id: &str) -> Response {
    let repo = match st.api_repo(kind, repo_id, caller) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let q = query_pairs(req.uri());
    let mut branches = Vec::new();
    let mut prs = Vec::new();
    for (name, sha) in &repo.branches {
        if name.starts_with("refs/pr/") {
            prs.push(json!({ "name": name, "ref": name, "targetCommit": sha }));
        } else {
            branches.push(
                json!({ "name": name, "ref": format!("refs/heads/{name}"), "targetCommit": sha }),
            );
        }
    }
    let tags: Vec<Value> = repo
        .tags
        .iter()
        .map(|(n, s)| json!({ "name": n, "ref": format!("refs/tags/{n}"), "targetCommit": s }))
        .collect();
    let mut body = json!({ "branches": branches, "converts": [], "tags": tags });
    if is_true(query_get(&q, "include_prs")) {
        body["pullRequests"] = Value::Array(prs);
    }
    json_response(StatusCode::OK, req.headers(), &body, JSON_CT)
}

/// `POST /api/{type}s/{repo}/paths-info/{rev}` with a form or a JSON body (§3, §11.13).
async fn paths_info(
    st: &HfState,
    caller: Caller,
    req: Request,
    kind: RepoKind,
    repo_id: &str,
    rev: &str,
) -> Response {
    let repo = match st.api_repo(kind, repo_id, caller) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let Some(sha) = repo.commit_sha(rev) else {
        return revision_not_found(rev);
    };
    let headers = req.headers().clone();
    let is_json = header_str(&headers, "content-type").is_some_and(|c| c.contains("json"));
    let Ok(body) = http_body_util::Limited::new(req.into_body(), 4 << 20)
        .collect()
        .await
        .map(|b| b.to_bytes())
    else {
        return hf_error(StatusCode::BAD_REQUEST, None, "Invalid body");
    };
    let (paths, expand): (Vec<String>, bool) = if is_json {
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            return hf_error(StatusCode::BAD_REQUEST, None, "Invalid JSON body");
        };
        let paths = v["paths"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        (paths, v["expand"].as_bool().unwrap_or(false))
    } else {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let paths = pairs
            .iter()
            .filter(|(k, _)| k == "paths" || k == "paths[]")
            .map(|(_, v)| v.clone())
            .collect();
        (paths, is_true(query_get(&pairs, "expand")))
    };
    let files = &repo.commit(&sha).expect("commit").files;
    let dirs = directories(files);
    let entries: Vec<Value> = paths
        .iter()
        .filter_map(|p| {
            let p = p.trim_matches('/');
            if let Some(f) = files.iter().find(|f| f.path == p) {
                Some(file_entry(f, &sha, expand))
            } else if dirs.contains(p) {
                Some(dir_entry(p, &sha, expand))
            } else {
                None
            }
        })
        .collect();
    json_response(StatusCode::OK, &headers, &Value::Array(entries), JSON_CT)
}

// ---------------------------------------------------------------------------------------
// CDN
// ---------------------------------------------------------------------------------------

/// The CDN key of an LFS object.
fn cdn_key(sha256: &str) -> String {
    format!("/repos/{}/{}/{}", &sha256[..2], &sha256[2..4], sha256)
}

/// The CDN: signed, expiring URLs; Range; never the Hub's headers (§4.5, §11.1, §11.5).
fn cdn_rules() -> StorageRules {
    StorageRules {
        label: "cdn",
        admit: |method, h| {
            if let Some(refused) = only_get_and_head(method) {
                return Some(refused);
            }
            h.contains_key(header::AUTHORIZATION).then(|| xml_error(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                "Only one auth mechanism allowed; only the Signature query parameter or the Authorization header should be specified",
            ))
        },
        last_modified: MODIFIED_AT,
        signature_param: "Signature",
        refuse: |e| match e {
            SignError::Expired => {
                xml_error(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired")
            }
            SignError::Invalid => xml_error(StatusCode::FORBIDDEN, "AccessDenied", "Access denied"),
        },
        headers: cdn_headers,
    }
}

/// CloudFront's headers on an LFS object: the sha256 as ETag, the signed content type.
fn cdn_headers(key: &str, _content: &Bytes, q: &[(String, String)]) -> HeaderMap {
    let sha256 = key.rsplit('/').next().unwrap_or("");
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        hv(query_get(q, "response-content-type").unwrap_or("application/octet-stream")),
    );
    headers.insert(header::ETAG, hv(&format!("\"{sha256}\"")));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000"),
    );
    headers.insert("x-cache", HeaderValue::from_static("Miss from cloudfront"));
    headers.insert(
        header::VIA,
        hv(&format!(
            "1.1 {}.cloudfront.net (CloudFront)",
            random_hex(32)
        )),
    );
    headers.insert("x-amz-cf-pop", HeaderValue::from_static("MOCK50-C1"));
    headers.insert("x-amz-cf-id", hv(&random_hex(56)));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{client, gunzip, header as h};
    use std::time::Duration;

    const TOKEN: &str = "hf_approvedtoken";
    const OTHER: &str = "hf_unapprovedtoken";

    fn weights() -> Bytes {
        Bytes::from(
            (0..5000u32)
                .map(|i| (i * 7 % 251) as u8)
                .collect::<Vec<u8>>(),
        )
    }

    async fn mock() -> HfMock {
        let m = HfMock::start().await;
        m.set_valid_token(TOKEN);
        m.add_unapproved_token(OTHER);
        let files = vec![
            HfFile::regular(
                ".gitattributes",
                "*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
            ),
            HfFile::regular("config.json", "{\"hidden_size\": 8}\n"),
            HfFile::lfs("model.safetensors", weights()),
            HfFile::regular("onnx/config.json", "{}\n"),
            HfFile::lfs("onnx/model.onnx", Bytes::from_static(b"onnx-bytes")).xet(),
        ];
        let repo = HfRepo::model("acme-ai/tiny")
            .with_files(files.clone())
            .with_branch("refs/pr/1", files[..2].to_vec())
            .with_tag("v1.0", "main");
        m.add_repo(repo);
        m.add_repo(HfRepo::model("acme-ai/gated").gated(true).with_files(vec![
            HfFile::regular("config.json", "{}"),
            HfFile::lfs("w.bin", Bytes::from_static(b"gated weights")),
        ]));
        m.add_repo(
            HfRepo::dataset("acme-ai/private-data")
                .private(true)
                .with_files(vec![HfFile::regular("data.csv", "a,b\n")]),
        );
        m
    }

    fn sha_of(m: &HfMock, id: &str, rev: &str) -> String {
        m.commit_sha(RepoKind::Model, id, rev).unwrap()
    }

    #[tokio::test]
    async fn repo_info_with_blobs_and_gzip() {
        let m = mock().await;
        let c = client();
        let sha = sha_of(&m, "acme-ai/tiny", "main");
        let r = c
            .get(format!(
                "{}/api/models/acme-ai/tiny/revision/main?blobs=true",
                m.endpoint()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(h(&r, "ratelimit").unwrap().starts_with("\"api\";r="));
        assert_eq!(h(&r, "x-powered-by"), Some("huggingface-moon"));
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["sha"], json!(sha));
        assert_eq!(v["id"], "acme-ai/tiny");
        let sib = v["siblings"].as_array().unwrap();
        assert_eq!(sib.len(), 5);
        let st = sib
            .iter()
            .find(|s| s["rfilename"] == "model.safetensors")
            .unwrap();
        assert_eq!(st["lfs"]["sha256"], json!(sha256_hex(&weights())));
        assert_eq!(st["size"], 5000);
        let cfg = sib
            .iter()
            .find(|s| s["rfilename"] == "config.json")
            .unwrap();
        assert_eq!(
            cfg["blobId"],
            json!(git_blob_sha1_hex(b"{\"hidden_size\": 8}\n"))
        );

        // gzip when asked, and `expand` narrows the fields.
        let r = c
            .get(format!(
                "{}/api/models/acme-ai/tiny?expand=sha&expand=siblings",
                m.endpoint()
            ))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(h(&r, "content-encoding"), Some("gzip"));
        let v: Value = serde_json::from_str(&gunzip(&r.bytes().await.unwrap())).unwrap();
        assert_eq!(v["sha"], json!(sha));
        assert!(v.get("downloads").is_none());
        assert_eq!(v["siblings"][0], json!({ "rfilename": ".gitattributes" }));

        // Refs; a revision with %2F; a bad revision.
        let v: Value = c
            .get(format!(
                "{}/api/models/acme-ai/tiny/refs?include_prs=1",
                m.endpoint()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["branches"][0]["ref"], "refs/heads/main");
        assert_eq!(v["tags"][0]["name"], "v1.0");
        assert_eq!(v["pullRequests"][0]["name"], "refs/pr/1");
        let v: Value = c
            .get(format!(
                "{}/api/models/acme-ai/tiny/revision/refs%2Fpr%2F1",
                m.endpoint()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["sha"], json!(sha_of(&m, "acme-ai/tiny", "refs/pr/1")));
        let r = c
            .get(format!(
                "{}/api/models/acme-ai/tiny/revision/nope",
                m.endpoint()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(h(&r, "x-error-code"), Some("RevisionNotFound"));
        // Missing repo: 401 anonymous, 404 with a token. Private: 401 anonymous.
        let r = c
            .get(format!("{}/api/models/acme-ai/none", m.endpoint()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            (r.status().as_u16(), h(&r, "x-error-code")),
            (401, Some("RepoNotFound"))
        );
        let r = c
            .get(format!("{}/api/models/acme-ai/none", m.endpoint()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(
            (r.status().as_u16(), h(&r, "x-error-code")),
            (404, Some("RepoNotFound"))
        );
        let r = c
            .get(format!(
                "{}/api/datasets/acme-ai/private-data",
                m.endpoint()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let r = c
            .get(format!(
                "{}/api/datasets/acme-ai/private-data",
                m.endpoint()
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    #[tokio::test]
    async fn tree_pages_with_link() {
        let m = mock().await;
        m.set_tree_page_size(2);
        let c = client();
        let sha = sha_of(&m, "acme-ai/tiny", "main");
        let mut url = format!(
            "{}/api/models/acme-ai/tiny/tree/{sha}?recursive=true&expand=false",
            m.endpoint()
        );
        let mut all = Vec::new();
        let mut pages = 0;
        loop {
            let r = c.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            pages += 1;
            let link = h(&r, "link").map(str::to_string);
            let page: Vec<Value> = r.json().await.unwrap();
            assert!(page.len() <= 2);
            all.extend(page);
            match link {
                Some(l) => {
                    let next = l
                        .strip_prefix('<')
                        .unwrap()
                        .split_once(">; rel=\"next\"")
                        .unwrap()
                        .0;
                    assert!(next.starts_with(&m.endpoint()), "{next}");
                    assert!(
                        next.contains("recursive=true&expand=false&cursor="),
                        "{next}"
                    );
                    url = next.to_string();
                }
                None => break,
            }
        }
        assert_eq!(pages, 3);
        let paths: Vec<&str> = all.iter().map(|e| e["path"].as_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                ".gitattributes",
                "config.json",
                "model.safetensors",
                "onnx",
                "onnx/config.json",
                "onnx/model.onnx"
            ]
        );
        let w = &all[2];
        assert_eq!(w["type"], "file");
        assert_eq!(w["lfs"]["oid"], json!(sha256_hex(&weights())));
        assert_eq!(w["size"], 5000);
        assert_eq!(all[3]["type"], "directory");
        assert!(all[5]["xetHash"].is_string());

        // A sub-path both as one %2F segment and as separate segments; non-recursive root.
        for p in ["onnx", "onnx%2F", "onnx/"] {
            let v: Vec<Value> = c
                .get(format!(
                    "{}/api/models/acme-ai/tiny/tree/main/{p}",
                    m.endpoint()
                ))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(v.len(), 2, "{p}");
        }
        let r = c
            .get(format!(
                "{}/api/models/acme-ai/tiny/tree/main?recursive=false&expand=false",
                m.endpoint()
            ))
            .send()
            .await
            .unwrap();
        assert!(h(&r, "link").is_some());
        let r = c
            .get(format!(
                "{}/api/models/acme-ai/tiny/tree/main/nope",
                m.endpoint()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(
            (r.status().as_u16(), h(&r, "x-error-code")),
            (404, Some("EntryNotFound"))
        );

        // paths-info: form and JSON bodies.
        let url = format!("{}/api/models/acme-ai/tiny/paths-info/main", m.endpoint());
        let v: Vec<Value> = c
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("paths=config.json&paths=missing&paths=onnx&expand=false")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v.len(), 2);
        let v: Vec<Value> = c
            .post(&url)
            .json(&json!({ "paths": ["model.safetensors"] }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v[0]["lfs"]["oid"], json!(sha256_hex(&weights())));
    }

    #[tokio::test]
    async fn resolve_redirect_chain() {
        let m = mock().await;
        let c = client();
        let sha = sha_of(&m, "acme-ai/tiny", "main");
        let cfg = b"{\"hidden_size\": 8}\n";

        // Regular file: relative 307 to the resolve cache.
        let r = c
            .head(format!(
                "{}/acme-ai/tiny/resolve/main/config.json",
                m.endpoint()
            ))
            .header("accept-encoding", "identity")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 307);
        assert_eq!(h(&r, "x-repo-commit"), Some(sha.as_str()));
        assert!(h(&r, "etag").is_none());
        let loc = h(&r, "location").unwrap().to_string();
        assert!(
            loc.starts_with(&format!(
                "/api/resolve-cache/models/acme-ai/tiny/{sha}/config.json?"
            )),
            "{loc}"
        );
        assert!(loc.contains("&etag=%22"), "{loc}");
        // Followed with and without the query (PY drops it).
        let path_only = loc.split('?').next().unwrap();
        for l in [loc.as_str(), path_only] {
            let head = c.head(format!("{}{l}", m.endpoint())).send().await.unwrap();
            let get = c.get(format!("{}{l}", m.endpoint())).send().await.unwrap();
            assert_eq!(get.status(), 200);
            for name in [
                "etag",
                "x-repo-commit",
                "content-length",
                "accept-ranges",
                "content-type",
            ] {
                assert_eq!(h(&head, name), h(&get, name), "{name}");
            }
            let etag = format!("\"{}\"", git_blob_sha1_hex(cfg));
            assert_eq!(h(&get, "etag"), Some(etag.as_str()));
            assert_eq!(
                h(&get, "content-length"),
                Some(cfg.len().to_string().as_str())
            );
            assert_eq!(&get.bytes().await.unwrap()[..], cfg);
        }

        // Direct mode (a): 200 on the resolve URL; Range 0-0 gives 206 with the total.
        m.set_resolve_cache_redirect(false);
        let r = c
            .get(format!(
                "{}/acme-ai/tiny/resolve/v1.0/config.json",
                m.endpoint()
            ))
            .header("range", "bytes=0-0")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(
            h(&r, "content-range"),
            Some(format!("bytes 0-0/{}", cfg.len()).as_str())
        );

        // LFS file: absolute 302 to the CDN with the metadata on the redirect.
        for rev in ["main", "v1.0", sha.as_str()] {
            let r = c
                .head(format!(
                    "{}/acme-ai/tiny/resolve/{rev}/model.safetensors",
                    m.endpoint()
                ))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 302);
            assert_eq!(h(&r, "x-repo-commit"), Some(sha.as_str()));
            let linked = format!("\"{}\"", sha256_hex(&weights()));
            assert_eq!(h(&r, "x-linked-etag"), Some(linked.as_str()));
            assert_eq!(h(&r, "x-linked-size"), Some("5000"));
            assert_ne!(h(&r, "content-length"), Some("5000"));
            let loc = h(&r, "location").unwrap();
            assert!(loc.starts_with(&m.cdn_endpoint()), "{loc}");
            assert!(
                loc.contains("Expires=") && loc.contains("Signature="),
                "{loc}"
            );
        }
        let r = c
            .get(format!(
                "{}/acme-ai/tiny/resolve/main/model.safetensors",
                m.endpoint()
            ))
            .send()
            .await
            .unwrap();
        let loc = h(&r, "location").unwrap().to_string();
        let body = r.text().await.unwrap();
        assert!(body.contains("Redirecting"));
        let r = c.get(&loc).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            h(&r, "etag"),
            Some(format!("\"{}\"", sha256_hex(&weights())).as_str())
        );
        assert!(h(&r, "content-disposition")
            .unwrap()
            .contains("filename=\"model.safetensors\";"));
        assert!(h(&r, "x-repo-commit").is_none());
        assert_eq!(&r.bytes().await.unwrap()[..], &weights()[..]);
        assert_eq!(m.cdn_body_bytes_sent(), 5000);
        // The CDN never saw a token; a token sent there is refused.
        assert!(m
            .requests()
            .iter()
            .filter(|q| q.host == "cdn")
            .all(|q| !q.has_header("authorization")));
        let r = c.get(&loc).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 400);

        // Xet file: X-Xet-Hash and a xet-auth Link.
        let r = c
            .head(format!(
                "{}/acme-ai/tiny/resolve/main/onnx%2Fmodel.onnx",
                m.endpoint()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        assert!(h(&r, "x-xet-hash").is_some());
        assert!(h(&r, "link").unwrap().contains("rel=\"xet-auth\""));

        // Revision with %2F; renamed repo; wrong case.
        let r = c
            .head(format!(
                "{}/acme-ai/tiny/resolve/refs%2Fpr%2F1/config.json",
                m.endpoint()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(
            h(&r, "x-repo-commit"),
            Some(sha_of(&m, "acme-ai/tiny", "refs/pr/1").as_str())
        );
        m.add_renamed_repo(RepoKind::Model, "old-org/tiny", "acme-ai/tiny");
        for id in ["old-org/tiny", "ACME-AI/tiny"] {
            let r = c
                .head(format!("{}/{id}/resolve/main/config.json", m.endpoint()))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 307);
            assert_eq!(
                h(&r, "location"),
                Some("/acme-ai/tiny/resolve/main/config.json")
            );
            assert!(h(&r, "etag").is_none());
        }

        // Missing file: 404 EntryNotFound carrying X-Repo-Commit, also on HEAD.
        let r = c
            .head(format!(
                "{}/acme-ai/tiny/resolve/main/missing.txt",
                m.endpoint()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(h(&r, "x-error-code"), Some("EntryNotFound"));
        assert_eq!(h(&r, "x-repo-commit"), Some(sha.as_str()));
        assert_eq!(h(&r, "x-error-message"), Some("Entry not found"));
    }

    #[tokio::test]
    async fn cdn_range_and_416() {
        let m = mock().await;
        let c = client();
        let loc = c
            .head(format!(
                "{}/acme-ai/tiny/resolve/main/model.safetensors",
                m.endpoint()
            ))
            .send()
            .await
            .unwrap()
            .headers()["location"]
            .to_str()
            .unwrap()
            .to_string();
        let w = weights();
        let cases: [(&str, u16, Option<&str>, &[u8]); 5] = [
            ("bytes=2-5", 206, Some("bytes 2-5/5000"), &w[2..6]),
            (
                "bytes=4990-5000",
                206,
                Some("bytes 4990-4999/5000"),
                &w[4990..],
            ),
            ("bytes=0-0", 206, Some("bytes 0-0/5000"), &w[..1]),
            ("bytes=-4", 206, Some("bytes 4996-4999/5000"), &w[4996..]),
            ("bytes=5000-", 416, Some("bytes */5000"), b""),
        ];
        for (range, status, cr, body) in cases {
            let r = c.get(&loc).header("range", range).send().await.unwrap();
            assert_eq!(r.status().as_u16(), status, "{range}");
            assert_eq!(h(&r, "content-range"), cr, "{range}");
            assert_eq!(h(&r, "accept-ranges"), Some("bytes"));
            assert_eq!(&r.bytes().await.unwrap()[..], body, "{range}");
        }
        // Ignore-Range switch.
        m.set_cdn_ignore_range(true);
        let r = c
            .get(&loc)
            .header("range", "bytes=10-")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().len(), 5000);
        m.set_cdn_ignore_range(false);

        // A connection cut after 1000 bytes, then a resume with Range.
        let before = m.cdn_body_bytes_sent();
        m.inject_cdn_fault(Fault::ResetAfter(1000));
        let r = c.get(&loc).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(h(&r, "content-length"), Some("5000"));
        assert!(r.bytes().await.is_err());
        assert_eq!(m.cdn_body_bytes_sent() - before, 1000);
        let r = c
            .get(&loc)
            .header("range", "bytes=1000-")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(&r.bytes().await.unwrap()[..], &w[1000..]);

        // A stall after 10 bytes trips the client's timeout; a placeholder delays a fault.
        m.inject_cdn_fault(Fault::Normal);
        m.inject_cdn_fault(Fault::StallAfter(10));
        assert_eq!(
            c.get(&loc)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .len(),
            5000
        );
        let r = c
            .get(&loc)
            .timeout(Duration::from_millis(300))
            .send()
            .await
            .unwrap();
        assert!(r.bytes().await.is_err());
    }

    #[tokio::test]
    async fn gated_and_tokens() {
        let m = mock().await;
        let c = client();
        let url = format!("{}/acme-ai/gated/resolve/main/w.bin", m.endpoint());
        let r = c.head(&url).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(h(&r, "x-error-code"), Some("GatedRepo"));
        assert!(h(&r, "x-error-message").unwrap().contains("Please log in"));
        let r = c.get(&url).send().await.unwrap();
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]
            .as_str()
            .unwrap()
            .starts_with("Access to model acme-ai/gated is restricted"));
        let r = c.head(&url).bearer_auth(OTHER).send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(h(&r, "x-error-code"), Some("GatedRepo"));
        assert!(h(&r, "x-error-message")
            .unwrap()
            .contains("not in the authorized list"));
        let r = c.head(&url).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 302);
        let r = c.head(&url).bearer_auth("hf_wrong").send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(h(&r, "x-error-code").is_none());
        assert_eq!(
            h(&r, "x-error-message"),
            Some("Invalid credentials in Authorization header")
        );
        // Info of a gated repo is public.
        let v: Value = c
            .get(format!("{}/api/models/acme-ai/gated", m.endpoint()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["gated"], "manual");
    }

    #[tokio::test]
    async fn expired_signed_url_and_rate_limit() {
        let m = mock().await;
        let c = client();
        let resolve = format!(
            "{}/acme-ai/tiny/resolve/main/model.safetensors",
            m.endpoint()
        );
        let loc = |r: reqwest::Response| r.headers()["location"].to_str().unwrap().to_string();
        let old = loc(c.head(&resolve).send().await.unwrap());
        assert_eq!(c.get(&old).send().await.unwrap().status(), 200);
        m.expire_signed_urls();
        let r = c.get(&old).send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert!(r.text().await.unwrap().contains("AccessDenied"));
        // Re-resolving gives a fresh, working URL.
        let new = loc(c.head(&resolve).send().await.unwrap());
        assert_ne!(old, new);
        assert_eq!(c.get(&new).send().await.unwrap().status(), 200);
        // A zero TTL expires at once; a tampered path is refused.
        m.set_signed_url_ttl(Duration::ZERO);
        let dead = loc(c.head(&resolve).send().await.unwrap());
        assert_eq!(c.get(&dead).send().await.unwrap().status(), 403);

        m.inject_rate_limit(1, 2);
        let r = c.head(&resolve).send().await.unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(h(&r, "ratelimit"), Some("\"resolvers\";r=0;t=2"));
        assert_eq!(h(&r, "retry-after"), Some("2"));
        let r = c.head(&resolve).send().await.unwrap();
        assert_eq!(r.status(), 302);
        assert!(h(&r, "ratelimit-policy").unwrap().contains("q=3000;w=300"));
        m.inject_hub_status(503);
        assert_eq!(c.head(&resolve).send().await.unwrap().status(), 503);
    }

    #[tokio::test]
    async fn gzip_text_and_weak_etag() {
        let m = mock().await;
        m.set_resolve_cache_redirect(false);
        m.set_gzip_text_files(true);
        let c = client();
        let url = format!("{}/acme-ai/tiny/resolve/main/config.json", m.endpoint());
        let r = c
            .get(&url)
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(h(&r, "content-encoding"), Some("gzip"));
        assert!(h(&r, "content-length").is_none());
        assert!(h(&r, "etag").unwrap().starts_with("W/\""));
        let r = c
            .head(&url)
            .header("accept-encoding", "identity")
            .send()
            .await
            .unwrap();
        assert!(h(&r, "content-encoding").is_none());
        assert_eq!(h(&r, "content-length"), Some("19"));
        // RS1's conditional HEAD: 304 when the etag matches (weak or strong).
        let oid = git_blob_sha1_hex(b"{\"hidden_size\": 8}\n");
        for inm in [format!("\"{oid}\""), format!("W/\"{oid}\"")] {
            let r = c
                .head(&url)
                .header("if-none-match", inm)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 304);
            assert!(h(&r, "x-repo-commit").is_some());
        }
        let r = c
            .head(&url)
            .header("if-none-match", "\"other\"")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        m.set_weak_etags(true);
        let r = c
            .head(format!(
                "{}/acme-ai/tiny/resolve/main/model.safetensors",
                m.endpoint()
            ))
            .send()
            .await
            .unwrap();
        assert!(h(&r, "x-linked-etag").unwrap().starts_with("W/\""));
    }
}
