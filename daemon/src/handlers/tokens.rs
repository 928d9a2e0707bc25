//! Hub tokens: one access token per hub (`hf`, `ms`, `civitai`), set from `mdlctl token` or the
//! dashboard and kept in the store's `meta` tree (in the owner-only data directory, like the
//! tokens forwarded with jobs). A job without a token of its own gets its hub's stored token
//! when it starts (and a dry run when it plans), so the token is only ever sent to that hub by
//! the hub's own source; a plain URL job never gets one. Precedence: the job's `--token`, then
//! the stored token, then the hub's environment variables and token files.

use std::collections::BTreeMap;

use mdl_protocol::{ErrorKind, ErrorReply, HubTokenInfo, HubTokenRequest, Response, Secret};

use super::HandlerResult;
use crate::scheduler::Scheduler;
use crate::sources::{self, SourceKind};
use crate::store::{Store, StoreError};

/// Key of the stored hub tokens in the `meta` tree.
pub const META_HUB_TOKENS: &str = "hub_tokens";

/// The hubs that take a stored token, by the names the protocol uses.
pub const HUBS: [&str; 3] = ["hf", "ms", "civitai"];

/// The protocol's hub name of a source kind (`None` for plain URLs).
pub fn hub_of(kind: SourceKind) -> Option<&'static str> {
    match kind {
        SourceKind::HuggingFace => Some("hf"),
        SourceKind::ModelScope => Some("ms"),
        SourceKind::Civitai => Some("civitai"),
        SourceKind::Url => None,
    }
}

fn stored(store: &Store) -> Result<BTreeMap<String, Secret>, StoreError> {
    Ok(store.get_meta(META_HUB_TOKENS)?.unwrap_or_default())
}

fn info(tokens: &BTreeMap<String, Secret>) -> Vec<HubTokenInfo> {
    HUBS.iter()
        .map(|hub| HubTokenInfo {
            hub: hub.to_string(),
            set: tokens.contains_key(*hub),
        })
        .collect()
}

/// The stored token for a job or add of `kind` that carries none of its own.
pub fn token_for(store: &Store, kind: SourceKind, own: &Option<Secret>) -> Option<Secret> {
    if own.is_some() {
        return None;
    }
    let hub = hub_of(kind)?;
    match stored(store) {
        Ok(tokens) => tokens.get(hub).cloned(),
        Err(e) => {
            tracing::warn!("cannot read the stored hub tokens: {e}");
            None
        }
    }
}

/// Give `source`'s stored hub token to `token` when it is `None`.
pub fn fill(store: &Store, source_kind: Result<SourceKind, String>, token: &mut Option<Secret>) {
    if let Ok(kind) = source_kind {
        if let Some(stored) = token_for(store, kind, token) {
            *token = Some(stored);
        }
    }
}

/// `HubTokens`: which hubs have a token.
pub fn list(scheduler: &Scheduler) -> HandlerResult {
    Ok(Response::HubTokens(info(&stored(&scheduler.store)?)))
}

/// `SetHubToken`: store or remove one hub's token (flushed before the reply).
pub async fn set(scheduler: &mut Scheduler, request: HubTokenRequest) -> HandlerResult {
    let hub = request.hub.trim().to_ascii_lowercase();
    if !HUBS.contains(&hub.as_str()) {
        return Err(ErrorReply::new(
            ErrorKind::InvalidRequest,
            format!(
                "unknown hub {:?}: expected one of {}",
                request.hub,
                HUBS.join(", ")
            ),
        ));
    }
    let mut tokens = stored(&scheduler.store)?;
    match request.token.map(|t| Secret(t.expose().trim().to_string())) {
        Some(token) if token.expose().is_empty() => {
            return Err(ErrorReply::new(
                ErrorKind::InvalidRequest,
                "the token is empty (to remove a token, send none)",
            ))
        }
        Some(token) => {
            tokens.insert(hub, token);
        }
        None => {
            tokens.remove(&hub);
        }
    }
    scheduler.store.put_meta(META_HUB_TOKENS, &tokens)?;
    scheduler.store.flush().await?;
    Ok(Response::HubTokens(info(&tokens)))
}

/// The kind of a job's source, as its runner will see it.
pub fn job_kind(job: &crate::job::JobRecord) -> Result<SourceKind, String> {
    sources::job_kind(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hub_sources_get_a_stored_token() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let mut tokens = BTreeMap::new();
        tokens.insert("hf".to_string(), Secret("hf_x".into()));
        store.put_meta(META_HUB_TOKENS, &tokens).unwrap();
        let mut none = None;
        fill(&store, Ok(SourceKind::HuggingFace), &mut none);
        assert_eq!(none, Some(Secret("hf_x".into())));
        let mut own = Some(Secret("mine".into()));
        fill(&store, Ok(SourceKind::HuggingFace), &mut own);
        assert_eq!(own, Some(Secret("mine".into())));
        let mut url = None;
        fill(&store, Ok(SourceKind::Url), &mut url);
        assert_eq!(url, None);
        let mut ms = None;
        fill(&store, Ok(SourceKind::ModelScope), &mut ms);
        assert_eq!(ms, None);
    }
}
