//! Hub tokens: one access token per hub (`hf`, `ms`, `civitai`), set from `mdlctl token` or the
//! dashboard and kept by the scheduler in the store (in the owner-only data directory, like the
//! tokens forwarded with jobs). A job without a token of its own gets its hub's stored token
//! when it starts (and a dry run when it plans), so the token is only ever sent to that hub by
//! the hub's own credentials; a plain URL job never gets one. Precedence: the job's `--token`,
//! then the stored token, then the hub's environment variables and token files.

use mdl_protocol::{HubTokenInfo, HubTokenRequest, Response, Secret};

use super::{invalid, HandlerResult, Services};
use crate::scheduler::Scheduler;
use crate::sources::HUBS;

/// `HubTokens`: which hubs have a token (never the tokens).
pub async fn list(services: &Services) -> HandlerResult {
    services.call(|s| Ok(Response::HubTokens(info(s)?))).await
}

/// `SetHubToken`: store or remove one hub's token; the reply comes once it is durable.
pub async fn set(services: &Services, request: HubTokenRequest) -> HandlerResult {
    services.call(move |s| set_token(s, request)).await
}

/// Store or remove one hub's token, on the scheduler's state.
pub fn set_token(scheduler: &mut Scheduler, request: HubTokenRequest) -> HandlerResult {
    let hub = request.hub.trim().to_ascii_lowercase();
    if !HUBS.contains(&hub.as_str()) {
        return Err(invalid(format!(
            "unknown hub {:?}: expected one of {}",
            request.hub,
            HUBS.join(", ")
        )));
    }
    let token = match request.token.map(|t| Secret(t.expose().trim().to_string())) {
        Some(token) if token.expose().is_empty() => {
            return Err(invalid("the token is empty (to remove a token, send none)"))
        }
        other => other,
    };
    scheduler.set_hub_token(&hub, token)?;
    Ok(Response::HubTokens(info(scheduler)?))
}

fn info(scheduler: &Scheduler) -> Result<Vec<HubTokenInfo>, mdl_protocol::ErrorReply> {
    let tokens = scheduler.hub_tokens()?;
    Ok(HUBS
        .iter()
        .map(|hub| HubTokenInfo {
            hub: hub.to_string(),
            set: tokens.contains_key(*hub),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobRecord, Source};
    use crate::scheduler::testing::scheduler;

    #[test]
    fn only_a_job_of_that_hub_without_its_own_token_gets_the_stored_one() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _events) = scheduler(dir.path());
        let set = |hub: &str, token: &str| HubTokenRequest {
            hub: hub.into(),
            token: Some(Secret(token.into())),
        };
        assert!(set_token(&mut s, set("gitlab", "x")).is_err());
        assert!(set_token(&mut s, set("hf", "  ")).is_err());
        set_token(&mut s, set("HF", "hf_x")).unwrap();
        let job = |source: &str, own: Option<&str>| {
            let request = mdl_protocol::AddRequest {
                source: source.into(),
                token: own.map(|t| Secret(t.into())),
                ..Default::default()
            };
            let parsed = crate::sources::parse(source, &Default::default(), &[]).unwrap();
            JobRecord::from_add(&request, parsed, Default::default(), "/tmp".into())
        };
        let token = |j: JobRecord| s.stored_token_for(&j).map(|t| t.expose().to_string());
        assert_eq!(token(job("hf://a/b", None)).as_deref(), Some("hf_x"));
        assert_eq!(token(job("hf://a/b", Some("mine"))), None);
        assert_eq!(token(job("ms://a/b", None)), None);
        let url = job("https://example.com/x", None);
        assert!(matches!(url.parsed_source, Source::Url(_)));
        assert_eq!(token(url), None);
        match set_token(
            &mut s,
            HubTokenRequest {
                hub: "hf".into(),
                token: None,
            },
        )
        .unwrap()
        {
            Response::HubTokens(infos) => assert!(infos.iter().all(|i| !i.set)),
            other => panic!("{other:?}"),
        }
    }
}
