//! Hugging Face Hub sources (`shared/specs/huggingface.md`).
//!
//! Accepted forms: `hf://ORG/NAME[@REV][/PATH]`, `hf://datasets/ORG/NAME...`,
//! `hf://spaces/ORG/NAME...`, and the site's own URLs (`https://huggingface.co/ORG/NAME`,
//! `.../tree/REV[/PATH]`, `.../blob/REV/PATH`, `.../resolve/REV/PATH`, `.../datasets/...`) on
//! `huggingface.co`, `hf.co` or a configured endpoint's host.
//!
//! Resolution imitates `snapshot_download` (§5): the revision is resolved to a commit with
//! `GET /api/{type}s/{repo}/revision/{rev}`, the files are listed with the recursive tree API
//! (following `Link: rel="next"` pages), filtered with `--include`/`--exclude` (fnmatch-style
//! globs as in the `hf` CLI) and downloaded through `/{prefix}{repo}/resolve/{commit}/{path}`
//! and its redirects. LFS files are verified by sha256, regular files by their git blob sha1.
//!
//! Without `--dest` files go into the hub cache ([`crate::layout::hf_cache`]): one blob per
//! etag, shared across revisions and never fetched twice, shown in `snapshots/<commit>/` by
//! relative symlinks; `refs/<revision>` records the commit.

use std::path::PathBuf;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use mdl_protocol::ErrorKind;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{HeaderMap, AUTHORIZATION};
use serde::Deserialize;

use super::http_meta::{self, MetaResponse};
use super::Credentials;
use crate::engine::{names, Engine, FetchError};
use crate::job::{FileRecord, HfSource, JobRecord, Layout, RepoType};
use crate::layout::hf_cache;
use crate::settings::{SourceSettings, HF_OFFICIAL_ENDPOINT};

/// Characters percent-encoded in a file path (like Python's `quote(path)`: `/` kept).
const PATH_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

impl RepoType {
    /// The plural of `/api/{plural}/...` paths and cache folder names.
    pub fn plural(self) -> &'static str {
        match self {
            RepoType::Model => "models",
            RepoType::Dataset => "datasets",
            RepoType::Space => "spaces",
        }
    }

    /// The prefix of `/resolve/` URLs.
    pub fn url_prefix(self) -> &'static str {
        match self {
            RepoType::Model => "",
            RepoType::Dataset => "datasets/",
            RepoType::Space => "spaces/",
        }
    }
}

/// Hosts that are always Hugging Face.
const HF_HOSTS: [&str; 3] = ["huggingface.co", "www.huggingface.co", "hf.co"];

/// Whether `source` is a Hugging Face source: `hf://...`, or an https URL on a Hub host (the
/// official ones, or the host of one of `endpoints`).
pub fn matches(source: &str, endpoints: &[String]) -> bool {
    let lower = source.trim().to_ascii_lowercase();
    if lower.starts_with("hf://") {
        return true;
    }
    let Ok(url) = url::Url::parse(source.trim()) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    if HF_HOSTS.contains(&host) {
        return true;
    }
    endpoints.iter().any(|e| {
        url::Url::parse(e).is_ok_and(|eu| {
            eu.host_str() == Some(host) && eu.port_or_known_default() == url.port_or_known_default()
        })
    })
}

/// Parse a Hugging Face source (see the module docs).
pub fn parse(source: &str) -> Result<HfSource, String> {
    let trimmed = source.trim();
    let bad = |why: &str| format!("invalid Hugging Face source {trimmed:?}: {why}");
    if let Some(rest) = super::strip_prefix_ignore_case(trimmed, "hf://") {
        let rest = rest.trim_matches('/');
        let mut segments: Vec<String> = rest
            .split('/')
            .filter(|s| !s.is_empty())
            .map(decode)
            .collect();
        let repo_type = take_type(&mut segments);
        if segments.is_empty() {
            return Err(bad("expected hf://ORG/NAME[@REVISION][/PATH]"));
        }
        // ORG/NAME[@REV], or a bare NAME[@REV] when nothing follows.
        let (repo_id, mut revision, consumed) = if segments.len() == 1 || segments[0].contains('@')
        {
            let (name, rev) = split_at_rev(&segments[0]);
            (name, rev, 1)
        } else {
            let (name, rev) = split_at_rev(&segments[1]);
            (format!("{}/{name}", segments[0]), rev, 2)
        };
        let mut rest: Vec<String> = segments[consumed..].to_vec();
        // `refs/pr/N` (and `refs/convert/...`) span three segments.
        if revision.as_deref() == Some("refs") && rest.len() >= 2 {
            revision = Some(format!("refs/{}/{}", rest[0], rest[1]));
            rest.drain(..2);
        }
        if repo_id.split('/').any(str::is_empty) {
            return Err(bad("empty organisation or repository name"));
        }
        return Ok(HfSource {
            repo_type,
            repo_id,
            revision,
            path: (!rest.is_empty()).then(|| rest.join("/")),
        });
    }
    let url = url::Url::parse(trimmed).map_err(|e| bad(&e.to_string()))?;
    let mut segments: Vec<String> = url
        .path_segments()
        .map(|s| s.filter(|s| !s.is_empty()).map(decode).collect())
        .unwrap_or_default();
    let repo_type = take_type(&mut segments);
    if segments.len() < 2 {
        return Err(bad("expected https://huggingface.co/ORG/NAME"));
    }
    let repo_id = format!("{}/{}", segments[0], segments[1]);
    let rest = &segments[2..];
    let (revision, path) = match rest.first().map(String::as_str) {
        None => (None, None),
        Some("tree" | "blob" | "resolve") if rest.len() >= 2 => {
            let mut rev = rest[1].clone();
            let mut at = 2;
            if rev == "refs" && rest.len() >= 4 {
                rev = format!("refs/{}/{}", rest[2], rest[3]);
                at = 4;
            }
            let path = rest[at..].join("/");
            (Some(rev), (!path.is_empty()).then_some(path))
        }
        Some(other) => return Err(bad(&format!("unexpected {other:?} after the repository"))),
    };
    Ok(HfSource {
        repo_type,
        repo_id,
        revision,
        path,
    })
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .to_string()
}

fn take_type(segments: &mut Vec<String>) -> RepoType {
    let t = match segments.first().map(String::as_str) {
        Some("datasets") if segments.len() > 1 => RepoType::Dataset,
        Some("spaces") if segments.len() > 1 => RepoType::Space,
        Some("models") if segments.len() > 2 => RepoType::Model,
        _ => return RepoType::Model,
    };
    segments.remove(0);
    t
}

fn split_at_rev(segment: &str) -> (String, Option<String>) {
    match segment.split_once('@') {
        Some((name, rev)) if !rev.is_empty() => (name.to_string(), Some(rev.to_string())),
        Some((name, _)) => (name.to_string(), None),
        None => (segment.to_string(), None),
    }
}

/// A variable from the job's forwarded environment, else the daemon's; empty counts as unset.
pub fn env_var(job: &JobRecord, name: &str) -> Option<String> {
    super::job_env(job, name)
        .map(|s| s.expose().to_string())
        .or_else(|| std::env::var(name).ok())
        .filter(|v| !v.trim().is_empty())
}

/// The endpoints to try, in order: `HF_ENDPOINT`, the configured list, the official one.
pub fn endpoints(job: &JobRecord, settings: &SourceSettings) -> Vec<String> {
    http_meta::endpoint_list(
        env_var(job, "HF_ENDPOINT"),
        &settings.hf_endpoints,
        HF_OFFICIAL_ENDPOINT,
    )
}

/// The token: `--token`, else `HF_TOKEN` (or the legacy `HUGGING_FACE_HUB_TOKEN`), else the
/// file `HF_TOKEN_PATH`, else `$HF_HOME/token`.
pub fn token(job: &JobRecord) -> Option<String> {
    if let Some(t) = &job.token {
        return Some(t.expose().trim().to_string()).filter(|t| !t.is_empty());
    }
    if let Some(t) = env_var(job, "HF_TOKEN").or_else(|| env_var(job, "HUGGING_FACE_HUB_TOKEN")) {
        return Some(t.trim().to_string());
    }
    let path = env_var(job, "HF_TOKEN_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| hf_cache::hf_home(|k| env_var(job, k)).join("token"));
    std::fs::read_to_string(path)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// `Authorization: Bearer <token>` (marked sensitive) when a token is known, for the Hub
/// endpoints only; reqwest drops the header when a redirect leaves for the CDN.
pub fn credentials(job: &JobRecord, settings: &SourceSettings) -> Credentials {
    match token(job) {
        Some(token) => Credentials::for_origins_of(&endpoints(job, settings))
            .with(AUTHORIZATION, &format!("Bearer {token}")),
        None => Credentials::none(),
    }
}

/// The cache root for a job's forwarded environment.
pub fn default_dest(env: &[(String, mdl_protocol::Secret)]) -> PathBuf {
    hf_cache::cache_root(|k| super::env_value(env, k))
}

#[derive(Debug, Deserialize)]
struct RepoInfo {
    sha: Option<String>,
    #[serde(default)]
    gated: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    oid: Option<String>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    lfs: Option<LfsInfo>,
}

#[derive(Debug, Deserialize)]
struct LfsInfo {
    oid: String,
    #[serde(default)]
    size: Option<u64>,
}

/// The revision a job asks for: `--revision`, else the one in the source, else `main`.
fn requested_revision(job: &JobRecord, src: &HfSource) -> String {
    job.revision
        .clone()
        .filter(|r| !r.trim().is_empty())
        .or_else(|| src.revision.clone())
        .unwrap_or_else(|| "main".to_string())
}

/// Resolve a Hugging Face job into its files, as `snapshot_download` does: the commit, the
/// file list, the filter, an access check for gated repos, then one record per blob.
pub async fn resolve(
    engine: &Engine,
    job: &JobRecord,
    src: &HfSource,
    credentials: &Credentials,
) -> Result<super::Resolved, FetchError> {
    let hub = Hub {
        engine,
        src,
        credentials,
        endpoints: endpoints(job, &engine.settings().sources),
        revision: requested_revision(job, src),
    };
    let (info, endpoint, commit) = hub.commit().await?;
    let entries = hub.tree(&endpoint, &commit).await?;
    if let Some(p) = src.path.as_deref().map(|p| p.trim_matches('/')) {
        let absent = !p.is_empty()
            && !entries
                .iter()
                .any(|e| e.path == p || e.path.starts_with(&format!("{p}/")));
        if absent && job.layout == Layout::HfCache {
            // Like huggingface_hub: an offline lookup then knows the file does not exist.
            let folder = hf_cache::repo_folder(src.repo_type.plural(), &src.repo_id);
            hf_cache::write_no_exist(&job.dest_dir, &folder, &commit, p);
        }
    }
    let wanted = hub.filter(job, entries)?;
    if gated(&info.gated) {
        // Check access before queueing bytes, so the error says what to do.
        probe_access(&hub, &endpoint, &commit, &wanted[0].path).await?;
    }
    let mut files = hub.file_records(job, &endpoint, &commit, wanted)?;
    for file in &mut files {
        super::mark_if_present(job, file).await?;
    }
    Ok(super::Resolved {
        files,
        revision: Some(commit),
    })
}

/// One resolution's view of the Hub: where to ask, as whom, for which revision.
struct Hub<'a> {
    engine: &'a Engine,
    src: &'a HfSource,
    credentials: &'a Credentials,
    endpoints: Vec<String>,
    revision: String,
}

impl Hub<'_> {
    /// Step 1: the commit the revision names (and whether the repo is gated), with the
    /// endpoint that answered.
    async fn commit(&self) -> Result<(RepoInfo, String, String), FetchError> {
        let src = self.src;
        let rev_enc = utf8_percent_encode(&self.revision, NON_ALPHANUMERIC).to_string();
        let info_path = format!(
            "/api/{}/{}/revision/{rev_enc}",
            src.repo_type.plural(),
            src.repo_id
        );
        let response = http_meta::get(
            self.engine.http(),
            &self.endpoints,
            &info_path,
            HeaderMap::new(),
            self.credentials,
            &self.engine.settings(),
        )
        .await?;
        if !response.is_success() {
            return Err(self.error(&response));
        }
        let info: RepoInfo = response.json()?;
        let endpoint = response.endpoint.clone();
        let commit = info.sha.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
            FetchError::failed(
                ErrorKind::Fatal,
                format!(
                    "{} did not say which commit {:?} of {} is",
                    crate::job::redact_url(&endpoint),
                    self.revision,
                    src.repo_id
                ),
            )
        })?;
        Ok((info, endpoint, commit))
    }

    /// Step 2: every entry of the commit's tree, following `Link: rel="next"` pages only on
    /// the endpoint's own origin, each page once, within [`http_meta::Pages`]'s caps.
    async fn tree(&self, endpoint: &str, commit: &str) -> Result<Vec<TreeEntry>, FetchError> {
        let tree_path = format!(
            "/api/{}/{}/tree/{commit}?recursive=true&expand=false",
            self.src.repo_type.plural(),
            self.src.repo_id
        );
        let (http, settings) = (self.engine.http(), &*self.engine.settings());
        let endpoints = [endpoint.to_string()];
        let mut page = http_meta::get(
            http,
            &endpoints,
            &tree_path,
            HeaderMap::new(),
            self.credentials,
            settings,
        )
        .await?;
        let mut pages = http_meta::Pages::new(endpoint);
        let mut entries: Vec<TreeEntry> = Vec::new();
        loop {
            if !page.is_success() {
                return Err(self.error(&page));
            }
            entries.extend(page.json::<Vec<TreeEntry>>()?);
            pages.count_entries(entries.len())?;
            let Some(next) = pages.next(&page)? else {
                return Ok(entries);
            };
            page = http_meta::get_url(
                http,
                &next,
                endpoint,
                HeaderMap::new(),
                self.credentials,
                settings,
            )
            .await?;
        }
    }

    /// Step 3: the files the job wants (a path inside the repo, `--include`, `--exclude`),
    /// in path order; none is an error that says what to check.
    fn filter(
        &self,
        job: &JobRecord,
        entries: Vec<TreeEntry>,
    ) -> Result<Vec<TreeEntry>, FetchError> {
        let wants = path_filter(job, self.src)?;
        let mut wanted: Vec<TreeEntry> = entries
            .into_iter()
            .filter(|e| e.kind == "file" && wants(&e.path))
            .collect();
        wanted.sort_by(|a, b| a.path.cmp(&b.path));
        if wanted.is_empty() {
            return Err(nothing_matches(self.src, &self.revision, ""));
        }
        Ok(wanted)
    }

    /// Step 4: one record per file (per blob in the cache layout, where paths with the same
    /// content share one blob and each adds a snapshot link). A path the Hub lists that is not
    /// a safe relative path is refused, naming the entry.
    fn file_records(
        &self,
        job: &JobRecord,
        endpoint: &str,
        commit: &str,
        wanted: Vec<TreeEntry>,
    ) -> Result<Vec<FileRecord>, FetchError> {
        let src = self.src;
        let cache = job.layout == Layout::HfCache;
        let folder = hf_cache::repo_folder(src.repo_type.plural(), &src.repo_id);
        let mut files: Vec<FileRecord> = Vec::new();
        for entry in wanted {
            let path = names::checked_repo_path(&entry.path).map_err(|why| {
                FetchError::failed(
                    ErrorKind::Fatal,
                    format!(
                        "the Hub listed the file {:?} in {}: {why}",
                        entry.path, src.repo_id
                    ),
                )
            })?;
            let sha256 = entry.lfs.as_ref().map(|l| l.oid.to_ascii_lowercase());
            let size = entry.lfs.as_ref().and_then(|l| l.size).or(entry.size);
            let git_sha1 = match &sha256 {
                Some(_) => None,
                None => entry.oid.clone().map(|o| o.to_ascii_lowercase()),
            };
            let etag = sha256
                .clone()
                .or_else(|| git_sha1.clone())
                .filter(|e| e.len() >= 40 && e.chars().all(|c| c.is_ascii_hexdigit()))
                .ok_or_else(|| {
                    FetchError::failed(
                        ErrorKind::Fatal,
                        format!("the Hub listed {path:?} without a valid object id"),
                    )
                })?;
            let snapshot = hf_cache::snapshot_rel(&folder, commit, &path);
            let blob = hf_cache::blob_rel(&folder, &etag);
            if cache {
                // Blobs are shared: a second path with the same content only adds a link.
                if let Some(existing) = files
                    .iter_mut()
                    .find(|f| f.rel_path.as_ref() == Some(&blob))
                {
                    existing.links.push(snapshot);
                    continue;
                }
            }
            let url_for = |ep: &str| {
                format!(
                    "{}/{}{}/resolve/{commit}/{}",
                    ep.trim_end_matches('/'),
                    src.repo_type.url_prefix(),
                    src.repo_id,
                    utf8_percent_encode(&path, PATH_SET)
                )
            };
            let mut file = FileRecord::new(url_for(endpoint));
            file.fallback_urls = self
                .endpoints
                .iter()
                .filter(|e| *e != endpoint)
                .map(|e| url_for(e))
                .collect();
            file.size = size;
            file.sha256 = sha256;
            file.git_sha1 = git_sha1;
            file.source_path = Some(path.clone());
            if cache {
                file.rel_path = Some(blob);
                file.links = vec![snapshot];
            } else {
                file.rel_path = Some(path);
            }
            files.push(file);
        }
        Ok(files)
    }

    /// The error for a failed Hub answer, in words that say what to do.
    fn error(&self, response: &MetaResponse) -> FetchError {
        hub_error(
            response,
            self.src,
            &self.revision,
            &self.endpoints,
            self.credentials,
        )
    }
}

/// Which repository paths a job wants: the path the source names (a file, or a folder and
/// everything below it), then `--include`, then `--exclude`.
fn path_filter(job: &JobRecord, src: &HfSource) -> Result<impl Fn(&str) -> bool, FetchError> {
    let include = compile_globs(&job.include)?;
    let exclude = compile_globs(&job.exclude)?;
    let prefix = src
        .path
        .as_deref()
        .map(|p| p.trim_matches('/').to_string())
        .filter(|p| !p.is_empty());
    Ok(move |path: &str| {
        prefix
            .as_ref()
            .is_none_or(|p| path == p || path.starts_with(&format!("{p}/")))
            && include.as_ref().is_none_or(|g| g.is_match(path))
            && exclude.as_ref().is_none_or(|g| !g.is_match(path))
    })
}

/// No file of the repository matches what the job asks for (`place` says where we looked).
fn nothing_matches(src: &HfSource, revision: &str, place: &str) -> FetchError {
    let repo = &src.repo_id;
    FetchError::failed(
        ErrorKind::NotFound,
        match src.path.as_deref().map(|p| p.trim_matches('/')) {
            Some(p) if !p.is_empty() => format!(
                "no file matches {p:?} in {repo} at {revision}{place} (check the path, --include and --exclude)"
            ),
            _ => format!("no file of {repo} at {revision}{place} matches --include/--exclude"),
        },
    )
}

/// Resolve a Hugging Face job offline, from the cache alone, as `huggingface_hub` does with
/// `HF_HUB_OFFLINE=1`: `refs/<revision>` names the commit, `snapshots/<commit>/` lists the
/// files (a snapshot may hold only what an earlier download fetched). Each file's blob is its
/// source (a local `file://` URL) and its name its hash. Opens no connection.
pub async fn resolve_offline(
    job: &JobRecord,
    src: &HfSource,
) -> Result<super::Resolved, FetchError> {
    let root = match job.layout {
        Layout::HfCache => job.dest_dir.clone(),
        _ => hf_cache::cache_root(|k| env_var(job, k)),
    };
    let folder = hf_cache::repo_folder(src.repo_type.plural(), &src.repo_id);
    let revision = requested_revision(job, src);
    let offline = |what: String| {
        FetchError::failed(
            ErrorKind::NotFound,
            format!(
                "offline: {what}; download it once without --offline (and without MDL_OFFLINE / HF_HUB_OFFLINE), or copy the cache in"
            ),
        )
    };
    let Some(commit) = hf_cache::cached_commit(&root, &folder, &revision) else {
        return Err(offline(format!(
            "{} at {revision:?} is not in the Hugging Face cache {} (no {folder}/refs/{revision})",
            src.repo_id,
            root.display()
        )));
    };
    let wants = path_filter(job, src)?;
    let entries: Vec<_> = hf_cache::snapshot_entries(&root, &folder, &commit)
        .into_iter()
        .filter(|e| wants(&e.path))
        .collect();
    if entries.is_empty() {
        let named = src.path.as_deref().map(|p| p.trim_matches('/').to_string());
        if let Some(p) = named.filter(|p| {
            root.join(hf_cache::no_exist_rel(&folder, &commit, p))
                .exists()
        }) {
            return Err(FetchError::failed(
                ErrorKind::NotFound,
                format!(
                    "{p:?} does not exist in {} at {commit} (the cache's .no_exist says so)",
                    src.repo_id
                ),
            ));
        }
        return Err(offline(
            nothing_matches(src, &revision, " in the cached snapshot").to_string(),
        ));
    }
    let cache = job.layout == Layout::HfCache;
    let mut files: Vec<FileRecord> = Vec::new();
    for entry in entries {
        let blob_name = entry.blob.clone().filter(|b| {
            (b.len() == 40 || b.len() == 64) && b.chars().all(|c| c.is_ascii_hexdigit())
        });
        let blob_file = root
            .join(folder.as_str())
            .join("blobs")
            .join(blob_name.as_deref().unwrap_or("-"));
        let source_file = entry.file.clone().unwrap_or(blob_file);
        let mut file = FileRecord::new(
            url::Url::from_file_path(&source_file)
                .map(|u| u.to_string())
                .unwrap_or_default(),
        );
        file.source_path = Some(entry.path.clone());
        match blob_name.as_deref() {
            Some(b) if b.len() == 64 => file.sha256 = Some(b.to_ascii_lowercase()),
            Some(b) => file.git_sha1 = Some(b.to_ascii_lowercase()),
            None => {}
        }
        file.size = std::fs::metadata(&source_file).ok().map(|m| m.len());
        let snapshot = hf_cache::snapshot_rel(&folder, &commit, &entry.path);
        match (&blob_name, cache) {
            (Some(b), true) => {
                let blob = hf_cache::blob_rel(&folder, b);
                if let Some(existing) = files
                    .iter_mut()
                    .find(|f| f.rel_path.as_ref() == Some(&blob))
                {
                    existing.links.push(snapshot);
                    continue;
                }
                file.rel_path = Some(blob);
                file.links = vec![snapshot];
            }
            // A snapshot entry that is a plain file (a copy) stays where it is.
            (None, true) => file.rel_path = Some(snapshot),
            (_, false) => file.rel_path = Some(entry.path.clone()),
        }
        super::mark_if_present(job, &mut file).await?;
        if cache && blob_name.is_none() && entry.file.is_some() {
            // Nothing to prove it by but its presence: take it as huggingface_hub would.
            file.state = mdl_protocol::FileState::Completed;
            file.note = Some("in the cache (offline)".into());
        }
        files.push(file);
    }
    Ok(super::Resolved {
        files,
        revision: Some(commit),
    })
}

/// The install step of a job in the Hub cache, once every file is verified: like
/// `snapshot_download` (§5 step 2), `refs/<revision>` names the commit the snapshot shows.
pub fn install(job: &JobRecord, src: &HfSource) -> Result<(), FetchError> {
    let Some(commit) = job.resolved_revision.as_deref() else {
        return Ok(());
    };
    let folder = hf_cache::repo_folder(src.repo_type.plural(), &src.repo_id);
    hf_cache::write_ref(
        &job.dest_dir,
        &folder,
        &requested_revision(job, src),
        commit,
    )
    .map_err(|e| crate::engine::io_failure("cannot write the cache's refs entry", e))
}

fn gated(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::String(s) => !s.is_empty() && s != "false",
        _ => false,
    }
}

/// HEAD one file of a gated repo (without following the CDN redirect) to learn whether the
/// token gives access.
#[allow(clippy::too_many_arguments)]
async fn probe_access(
    hub: &Hub<'_>,
    endpoint: &str,
    commit: &str,
    path: &str,
) -> Result<(), FetchError> {
    let src = hub.src;
    let url = format!(
        "{}/{}{}/resolve/{commit}/{}",
        endpoint,
        src.repo_type.url_prefix(),
        src.repo_id,
        utf8_percent_encode(path, PATH_SET)
    );
    let response = hub
        .engine
        .http()
        .head(&url)
        .headers(hub.credentials.for_url(&url))
        .header(reqwest::header::ACCEPT_ENCODING, "identity")
        .timeout(hub.engine.settings().response_timeout)
        .send()
        .await;
    let Ok(response) = response else {
        return Ok(()); // the download itself will report network trouble
    };
    let status = response.status().as_u16();
    if status == 401 || status == 403 {
        let meta = MetaResponse {
            status,
            headers: response.headers().clone(),
            body: bytes::Bytes::new(),
            endpoint: endpoint.to_string(),
            url,
        };
        return Err(hub.error(&meta));
    }
    Ok(())
}

/// Turn a Hub error answer into a message that says what to do (§6).
fn hub_error(
    response: &MetaResponse,
    src: &HfSource,
    revision: &str,
    endpoints: &[String],
    credentials: &Credentials,
) -> FetchError {
    let code = response.header("x-error-code").unwrap_or("").to_string();
    let server_message = response
        .header("x-error-message")
        .map(str::to_string)
        .or_else(|| {
            serde_json::from_slice::<serde_json::Value>(&response.body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        })
        .unwrap_or_default();
    let endpoint = crate::job::redact_url(&response.endpoint);
    let repo_url = format!(
        "{}/{}{}",
        endpoint.trim_end_matches('/'),
        src.repo_type.url_prefix(),
        src.repo_id
    );
    let has_token = !credentials.is_empty();
    let suffix = if server_message.is_empty() {
        String::new()
    } else {
        format!(" (the Hub says: {server_message})")
    };
    let (kind, message) = match code.as_str() {
        "GatedRepo" => (
            ErrorKind::Auth,
            if has_token {
                format!(
                    "{} is gated and this token has no access yet: accept the license at {repo_url} with the account of this token, then retry{suffix}",
                    src.repo_id
                )
            } else {
                format!(
                    "{} is gated: accept the license at {repo_url}, then set HF_TOKEN (or pass --token) to a token of that account{suffix}",
                    src.repo_id
                )
            },
        ),
        "RepoNotFound" => (
            if has_token || response.status == 404 {
                ErrorKind::NotFound
            } else {
                ErrorKind::Auth
            },
            format!(
                "repository {} not found on {}: check the name; if it is private, set HF_TOKEN (or pass --token) to a token with access{suffix}",
                src.repo_id, endpoint
            ),
        ),
        "RevisionNotFound" => (
            ErrorKind::NotFound,
            format!(
                "revision {revision:?} not found in {}: check --revision (a branch, tag, commit or refs/pr/N){suffix}",
                src.repo_id
            ),
        ),
        "EntryNotFound" => (
            ErrorKind::NotFound,
            format!("file not found in {} at {revision}{suffix}", src.repo_id),
        ),
        _ if server_message.contains("Invalid credentials") => (
            ErrorKind::Auth,
            "the Hugging Face token was rejected (invalid or expired): check HF_TOKEN, HF_TOKEN_PATH or --token".to_string(),
        ),
        _ => {
            let base = response.failure();
            let FetchError::Failed { kind, message, .. } = base else {
                return base;
            };
            (kind, format!("{message}{suffix}"))
        }
    };
    let _ = endpoints;
    FetchError::Failed {
        kind,
        message,
        status: Some(response.status),
    }
}

/// Compile globs with the `hf` CLI's fnmatch semantics: `*` also matches `/`, and a pattern
/// ending in `/` means everything below that folder.
pub fn compile_globs(patterns: &[String]) -> Result<Option<GlobSet>, FetchError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        let p = if p.ends_with('/') {
            format!("{p}*")
        } else {
            p.clone()
        };
        let glob = GlobBuilder::new(&p)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map_err(|e| {
                FetchError::failed(ErrorKind::InvalidRequest, format!("bad pattern {p:?}: {e}"))
            })?;
        builder.add(glob);
    }
    builder
        .build()
        .map(Some)
        .map_err(|e| FetchError::failed(ErrorKind::InvalidRequest, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HfSource {
        parse(s).unwrap()
    }

    #[test]
    fn hf_scheme_forms() {
        let s = p("hf://acme/tiny");
        assert_eq!(
            (s.repo_type, s.repo_id.as_str(), s.revision, s.path),
            (RepoType::Model, "acme/tiny", None, None)
        );
        let s = p("hf://datasets/acme/corpus@v1/data/train.parquet");
        assert_eq!(s.repo_type, RepoType::Dataset);
        assert_eq!(s.revision.as_deref(), Some("v1"));
        assert_eq!(s.path.as_deref(), Some("data/train.parquet"));
        let s = p("hf://acme/tiny@refs/pr/1/config.json");
        assert_eq!(s.revision.as_deref(), Some("refs/pr/1"));
        assert_eq!(s.path.as_deref(), Some("config.json"));
        let s = p("hf://acme/tiny@refs%2Fpr%2F2");
        assert_eq!(s.revision.as_deref(), Some("refs/pr/2"));
        assert_eq!(p("hf://gpt2").repo_id, "gpt2");
        assert_eq!(p("hf://spaces/a/b").repo_type, RepoType::Space);
    }

    #[test]
    fn site_url_forms() {
        let s = p("https://huggingface.co/acme/tiny");
        assert_eq!(
            (s.repo_id.as_str(), s.revision, s.path),
            ("acme/tiny", None, None)
        );
        let s = p("https://huggingface.co/acme/tiny/resolve/main/sub/w.bin");
        assert_eq!(s.revision.as_deref(), Some("main"));
        assert_eq!(s.path.as_deref(), Some("sub/w.bin"));
        let s = p("https://huggingface.co/datasets/acme/c/tree/refs%2Fpr%2F3/data");
        assert_eq!(s.repo_type, RepoType::Dataset);
        assert_eq!(s.revision.as_deref(), Some("refs/pr/3"));
        assert_eq!(s.path.as_deref(), Some("data"));
        let s = p("https://huggingface.co/acme/tiny/blob/v2/README.md");
        assert_eq!(s.revision.as_deref(), Some("v2"));
        assert!(parse("https://huggingface.co/acme/tiny/discussions").is_err());
    }

    #[test]
    fn host_matching() {
        assert!(matches("https://huggingface.co/a/b/resolve/main/x", &[]));
        assert!(!matches("https://example.com/a/b", &[]));
        assert!(matches(
            "http://127.0.0.1:8080/a/b",
            &["http://127.0.0.1:8080".into()]
        ));
        assert!(!matches(
            "http://127.0.0.1:8081/a/b",
            &["http://127.0.0.1:8080".into()]
        ));
    }

    #[test]
    fn fnmatch_globs() {
        let g = compile_globs(&["*.json".into(), "onnx/".into()])
            .unwrap()
            .unwrap();
        assert!(g.is_match("config.json"));
        assert!(g.is_match("sub/config.json"));
        assert!(g.is_match("onnx/model.onnx"));
        assert!(!g.is_match("model.safetensors"));
    }
}
