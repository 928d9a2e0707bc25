//! Sources: parse what the user asked for into a typed [`Source`] (once, at add time), turn a
//! job's source into a plan of files (URL, relative path, expected size and hashes), work out
//! the credentials its requests carry, and install what a layout needs once every file is
//! verified.
//!
//! Each hub is one module with the same four parts: `parse`, `resolve`, `credentials` and a
//! default destination; the matches in this file are the only places that pick a hub.

pub mod civitai;
pub mod credentials;
pub mod http_meta;
pub mod huggingface;
pub mod modelscope;

use std::path::{Path, PathBuf};

use mdl_protocol::{AddRequest, Secret};

pub use credentials::Credentials;

use crate::engine::{names, Engine, FetchError};
use crate::job::{FileRecord, JobRecord, Layout, Source};
use crate::settings::{EngineSettings, SourceSettings};

/// Parse a source string, recognising URLs on configured hub endpoints (and `HF_ENDPOINT` /
/// `MODELSCOPE_ENDPOINT` from `env`, then the daemon's environment) as hub sources; the error
/// says what is accepted.
pub fn parse(
    source: &str,
    settings: &SourceSettings,
    env: &[(String, Secret)],
) -> Result<Source, String> {
    let source = source.trim();
    if civitai::is_civitai(source) {
        return civitai::parse(source).map(Source::Civitai);
    }
    let lookup = |name: &str| env_value(env, name);
    let hf = http_meta::endpoint_list(
        lookup("HF_ENDPOINT"),
        &settings.hf_endpoints,
        crate::settings::HF_OFFICIAL_ENDPOINT,
    );
    if huggingface::matches(source, &hf) {
        return huggingface::parse(source).map(Source::HuggingFace);
    }
    let ms = http_meta::endpoint_list(
        lookup("MODELSCOPE_ENDPOINT"),
        &settings.modelscope_endpoints,
        crate::settings::MODELSCOPE_OFFICIAL_ENDPOINT,
    );
    if modelscope::matches(source, &ms) {
        return modelscope::parse(source).map(Source::ModelScope);
    }
    let lower = source.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        url::Url::parse(source).map_err(|e| format!("invalid URL {source:?}: {e}"))?;
        return Ok(Source::Url(source.to_string()));
    }
    Err(format!(
        "unsupported source {source:?}: expected an http(s):// URL, hf://ORG/NAME, ms://OWNER/NAME or civitai://..."
    ))
}

/// Upgrade a job record of an older store schema (see [`crate::store::Upgrade`]).
///
/// Schema 1 kept the source only as text, with the kind and layout chosen at add time as the
/// options `mdl.source` (`huggingface` / `modelscope`) and `mdl.layout` (`hf-cache` /
/// `modelscope-cache`), and replaced `revision` with the resolved one.
pub fn upgrade_job_record(schema: u32, record: &mut serde_json::Value) -> Result<(), String> {
    if schema >= 2 {
        return Ok(());
    }
    let object = record
        .as_object_mut()
        .ok_or("a job record must be an object")?;
    let text = object
        .get("source")
        .and_then(|v| v.as_str())
        .ok_or("a job record has no source")?
        .trim()
        .to_string();
    let mut options: Vec<(String, String)> =
        serde_json::from_value(object.get("options").cloned().unwrap_or_default())
            .unwrap_or_default();
    let take = |options: &mut Vec<(String, String)>, key: &str| {
        let value = options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone());
        options.retain(|(k, _)| k != key);
        value
    };
    let kind = take(&mut options, "mdl.source");
    let layout = take(&mut options, "mdl.layout");
    let parsed = match kind.as_deref() {
        Some("huggingface") => huggingface::parse(&text).map(Source::HuggingFace),
        Some("modelscope") => modelscope::parse(&text).map(Source::ModelScope),
        _ => parse(&text, &SourceSettings::default(), &[]),
    }?;
    let layout = match (layout.as_deref(), &parsed) {
        (Some("hf-cache"), _) => Layout::HfCache,
        (Some("modelscope-cache"), _) => Layout::ModelScopeCache,
        // Schema 1 put every Civitai file below its path template.
        (_, Source::Civitai(_)) => Layout::CivitaiTemplate,
        _ => Layout::Plain,
    };
    if object.get("resolved").and_then(|v| v.as_bool()) == Some(true) {
        let revision = object.get("revision").cloned().unwrap_or_default();
        object.insert("resolved_revision".into(), revision);
    }
    let json = |e: serde_json::Error| e.to_string();
    object.insert(
        "parsed_source".into(),
        serde_json::to_value(&parsed).map_err(json)?,
    );
    object.insert("layout".into(), serde_json::to_value(layout).map_err(json)?);
    object.insert(
        "options".into(),
        serde_json::to_value(&options).map_err(json)?,
    );
    Ok(())
}

/// `s` without `prefix`, compared ignoring ASCII case; `None` when `s` does not start with it.
/// Never slices inside a multi-byte character.
pub fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The hubs that take a stored token, by the names the protocol uses.
pub const HUBS: [&str; 3] = ["hf", "ms", "civitai"];

/// The protocol's hub name of a source (`None` for a plain URL).
pub fn hub_name(source: &Source) -> Option<&'static str> {
    match source {
        Source::HuggingFace(_) => Some("hf"),
        Source::ModelScope(_) => Some("ms"),
        Source::Civitai(_) => Some("civitai"),
        Source::Url(_) => None,
    }
}

/// The hub a forwarded variable belongs to, by its name (`HF_TOKEN` → Hugging Face), if any.
fn hub_of_variable(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_uppercase();
    if name.starts_with("HF_")
        || name.starts_with("HUGGING_FACE_")
        || name.starts_with("HUGGINGFACE_")
    {
        Some("huggingface")
    } else if name.starts_with("MODELSCOPE_") {
        Some("modelscope")
    } else if name.starts_with("CIVITAI_") {
        Some("civitai")
    } else {
        None
    }
}

/// Keep only the forwarded variables a job of `source` may use: another hub's variables
/// (its token above all) are dropped before the job is stored. Variables of no hub (`HOME`,
/// `XDG_CACHE_HOME`, proxies) are kept.
pub fn keep_relevant_env(source: &Source, env: &mut Vec<(String, Secret)>) {
    let hub = match source {
        Source::HuggingFace(_) => Some("huggingface"),
        Source::ModelScope(_) => Some("modelscope"),
        Source::Civitai(_) => Some("civitai"),
        Source::Url(_) => None,
    };
    env.retain(|(name, _)| hub_of_variable(name).is_none_or(|owner| Some(owner) == hub));
}

/// The layout of an add: a hub's cache when no `--dest` is given, else plain.
pub fn layout(source: &Source, dest_given: bool) -> Layout {
    match source {
        Source::HuggingFace(_) if !dest_given => Layout::HfCache,
        Source::ModelScope(_) if !dest_given => Layout::ModelScopeCache,
        Source::Civitai(_) if !dest_given => Layout::CivitaiTemplate,
        _ => Layout::Plain,
    }
}

/// Where an add goes: its absolute `--dest`, else the source's default (a hub's cache root
/// from the caller's environment, `<downloads>/civitai`, or the download directory).
pub fn destination(
    source: &Source,
    request: &AddRequest,
    download_dir: &Path,
) -> Result<PathBuf, String> {
    if let Some(dest) = &request.dest {
        let path = PathBuf::from(dest);
        if !path.is_absolute() {
            return Err(format!("the destination {dest:?} must be an absolute path"));
        }
        return Ok(path);
    }
    Ok(match source {
        Source::HuggingFace(_) => huggingface::default_dest(&request.env),
        Source::ModelScope(_) => modelscope::default_dest(&request.env),
        Source::Civitai(_) => download_dir.join("civitai"),
        Source::Url(_) => download_dir.to_path_buf(),
    })
}

/// A source resolved into files.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// The files, with URLs, relative paths (below the job's destination), sizes and hashes.
    pub files: Vec<FileRecord>,
    /// The resolved revision / commit / version, for display and layouts.
    pub revision: Option<String>,
}

/// Resolve a job's source into its files with `engine`'s HTTP client and settings (runners
/// and dry runs alike). Resolving writes nothing: a dry run leaves the disk as it was.
pub async fn resolve(
    engine: &Engine,
    job: &JobRecord,
    credentials: &Credentials,
) -> Result<Resolved, FetchError> {
    if engine.offline() {
        return resolve_offline(job).await;
    }
    match &job.parsed_source {
        Source::Civitai(target) => civitai::resolve(engine, job, target, credentials).await,
        Source::HuggingFace(src) => huggingface::resolve(engine, job, src, credentials).await,
        Source::ModelScope(src) => modelscope::resolve(engine, job, src, credentials).await,
        Source::Url(url) => {
            let mut file = FileRecord::new(url.clone());
            file.sha256 = job.sha256.clone();
            file.md5 = job.md5.clone();
            file.rel_path = job.file_name.as_deref().and_then(names::sanitize_file_name);
            Ok(Resolved {
                files: vec![file],
                revision: None,
            })
        }
    }
}

/// Resolve a job offline (`--offline`, `MDL_OFFLINE`, `HF_HUB_OFFLINE`, `offline = true`):
/// from the hubs' caches and local files only. A file that is not there is left for the
/// runner, which takes it from a completed download (by sha256) or reports it missing.
async fn resolve_offline(job: &JobRecord) -> Result<Resolved, FetchError> {
    match &job.parsed_source {
        Source::HuggingFace(src) => huggingface::resolve_offline(job, src).await,
        Source::ModelScope(src) => modelscope::resolve_offline(job, src).await,
        Source::Civitai(_) => Err(FetchError::failed(
            mdl_protocol::ErrorKind::NotFound,
            format!(
                "offline: {} is resolved by the Civitai API, and no completed download of it is here; run it once without --offline",
                crate::job::redact_url(&job.source)
            ),
        )),
        Source::Url(url) => {
            let mut file = FileRecord::new(url.clone());
            file.sha256 = job.sha256.clone();
            file.md5 = job.md5.clone();
            file.rel_path = job.file_name.as_deref().and_then(names::sanitize_file_name);
            Ok(Resolved {
                files: vec![file],
                revision: None,
            })
        }
    }
}

/// The install step, once every file of a job is verified and in place: what a layout needs
/// besides the files and their links (a Hugging Face cache's `refs/<revision>`, the ModelScope
/// SDK's index files). `files` are the job's file records.
pub fn install(job: &JobRecord, files: &[FileRecord]) -> Result<(), FetchError> {
    match (&job.parsed_source, job.layout) {
        (Source::HuggingFace(src), Layout::HfCache) => huggingface::install(job, src),
        (Source::ModelScope(src), Layout::ModelScopeCache) => modelscope::install(job, src, files),
        _ => Ok(()),
    }
}

/// A hub file whose verified copy is already in place (a shared blob, or an earlier download
/// into `--dest`), by its expected sha256 or git blob sha1, is marked completed, so it is never
/// fetched twice. Its links are made by the
/// runner, not here: resolving writes nothing.
pub async fn mark_if_present(job: &JobRecord, file: &mut FileRecord) -> Result<(), FetchError> {
    let Some(rel) = file.rel_path.clone() else {
        return Ok(());
    };
    if file.sha256.is_none() && file.git_sha1.is_none() {
        return Ok(()); // nothing to prove the copy is the right one
    }
    let path = names::safe_join(&job.dest_dir, &rel)?;
    let (size, sha256, git_sha1) = (file.size, file.sha256.clone(), file.git_sha1.clone());
    let check = path.clone();
    let verified = tokio::task::spawn_blocking(move || {
        crate::layout::verified_copy(&check, size, sha256.as_deref(), git_sha1.as_deref())
    })
    .await
    .ok()
    .flatten();
    let Some(sha) = verified else {
        return Ok(());
    };
    file.state = mdl_protocol::FileState::Completed;
    file.verified_sha256 = Some(sha);
    file.verified_stamp = crate::engine::finalize::file_stamp(&path);
    file.note = Some("already present and verified; not fetched again".to_string());
    Ok(())
}

/// The credentials of a job's requests, worked out once per run: the secret headers and the
/// origins they may go to (only the hub's endpoints; the URL's own origin for a plain URL).
pub fn credentials(job: &JobRecord, settings: &EngineSettings) -> Credentials {
    match &job.parsed_source {
        Source::Civitai(_) => civitai::credentials(job, &settings.sources),
        Source::HuggingFace(_) => huggingface::credentials(job, &settings.sources),
        Source::ModelScope(_) => modelscope::credentials(job, &settings.sources),
        Source::Url(url) => match &job.token {
            Some(token) => Credentials::for_origins_of(&[url]).with(
                reqwest::header::AUTHORIZATION,
                &format!("Bearer {}", token.expose()),
            ),
            None => Credentials::none(),
        },
    }
}

/// A variable from the job's forwarded environment, else the daemon's own; empty means unset.
pub fn env_value(env: &[(String, Secret)], key: &str) -> Option<String> {
    env.iter()
        .find(|(n, _)| n == key)
        .map(|(_, v)| v.expose().to_string())
        .or_else(|| std::env::var(key).ok())
        .filter(|v| !v.trim().is_empty())
}

/// A forwarded environment variable of the job, if set.
pub fn job_env<'a>(job: &'a JobRecord, name: &str) -> Option<&'a Secret> {
    job.env.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// Describe what an add of a hub source would fetch (`--dry-run`): resolve it (network) and
/// list each file's repository path, destination, size, hash and the bytes still to fetch
/// (0 for a verified copy already in place). Queues nothing and writes nothing.
pub async fn plan(
    engine: &Engine,
    job: &JobRecord,
) -> Result<mdl_protocol::PlanInfo, mdl_protocol::ErrorReply> {
    use mdl_protocol::{ErrorReply, PlanInfo, PlannedFile};
    let dest_dir = &job.dest_dir;
    let engine = &engine
        .for_job(job)
        .map_err(|e| ErrorReply::new(e.kind(), e.to_string()))?;
    let credentials = credentials(job, &engine.settings());
    let resolved = resolve(engine, job, &credentials)
        .await
        .map_err(|e| ErrorReply::new(e.kind(), e.to_string()))?;
    let files = resolved
        .files
        .iter()
        .flat_map(|f| {
            let shown: Vec<String> = if f.links.is_empty() {
                f.rel_path.iter().cloned().collect()
            } else {
                f.links.clone()
            };
            let done = f.state == mdl_protocol::FileState::Completed;
            shown.into_iter().map(move |rel| PlannedFile {
                path: f
                    .source_path
                    .clone()
                    .filter(|_| f.links.len() <= 1)
                    .unwrap_or_else(|| rel.clone()),
                dest: dest_dir.join(&rel).display().to_string(),
                size: f.size,
                sha256: f.sha256.clone().or_else(|| f.verified_sha256.clone()),
                bytes_to_fetch: if done { Some(0) } else { f.size },
            })
        })
        .collect();
    Ok(PlanInfo {
        source: crate::job::redact_url(&job.source),
        revision: resolved.revision,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Strings shaped like sources: a known prefix (or none) and arbitrary text, multi-byte
    /// characters, separators and percent signs included.
    fn source_like() -> impl Strategy<Value = String> {
        let prefix = prop_oneof![
            Just(""),
            Just("hf://"),
            Just("HF://"),
            Just("ms://"),
            Just("modelscope://"),
            Just("civitai://"),
            Just("urn:air:sdxl:lora:civitai:"),
            Just("https://huggingface.co/"),
            Just("https://civitai.com/models/"),
            Just("https://www.modelscope.cn/models/"),
            Just("http://"),
        ];
        (prefix, "\\PC{0,40}", "[a-zé/@?=&%.:0-9 ]{0,30}")
            .prop_map(|(p, a, b)| format!("{p}{a}{b}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// No source string makes a parser panic: each is a typed source or an error.
        #[test]
        fn every_source_string_parses_or_is_refused(source in source_like()) {
            let settings = SourceSettings::default();
            let _ = parse(&source, &settings, &[]);
            let _ = huggingface::parse(&source);
            let _ = modelscope::parse(&source);
            let _ = civitai::parse(&source);
            let _ = civitai::search_pairs(&source);
            let _ = strip_prefix_ignore_case(&source, "civitai://");
        }

        #[test]
        fn arbitrary_unicode_never_panics(source in "\\PC{0,64}") {
            let _ = parse(&source, &SourceSettings::default(), &[]);
        }
    }

    #[test]
    fn a_job_keeps_only_its_own_hubs_variables() {
        let env = |names: &[&str]| -> Vec<(String, Secret)> {
            names
                .iter()
                .map(|n| (n.to_string(), Secret("v".into())))
                .collect()
        };
        let all = env(&[
            "HF_TOKEN",
            "CIVITAI_TOKEN",
            "MODELSCOPE_API_TOKEN",
            "HOME",
            "HTTPS_PROXY",
        ]);
        let names = |source: &Source| {
            let mut kept = all.clone();
            keep_relevant_env(source, &mut kept);
            kept.into_iter().map(|(n, _)| n).collect::<Vec<_>>()
        };
        let hf = parse("hf://a/b", &SourceSettings::default(), &[]).unwrap();
        assert_eq!(names(&hf), ["HF_TOKEN", "HOME", "HTTPS_PROXY"]);
        let url = Source::Url("https://example.com/x".into());
        assert_eq!(names(&url), ["HOME", "HTTPS_PROXY"]);
        let civitai = parse("civitai://1", &SourceSettings::default(), &[]).unwrap();
        assert_eq!(names(&civitai), ["CIVITAI_TOKEN", "HOME", "HTTPS_PROXY"]);
    }

    #[test]
    fn multi_byte_input_is_refused_not_a_panic() {
        for source in [
            "civitai://aéééé",
            "hféé://x",
            "éé",
            "ms:/é",
            "h🦀://x",
            "civitai://🦀",
        ] {
            let result = parse(source, &SourceSettings::default(), &[]);
            assert!(result.is_err(), "{source:?} parsed as {result:?}");
        }
    }
}
