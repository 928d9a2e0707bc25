//! Hub endpoints set at runtime: one list per hub (`hf`, `ms`, `civitai`), set from `mdlctl
//! endpoint` or the dashboard (e.g. `https://hf-mirror.com` for Hugging Face), kept by the
//! scheduler in the store and used by every job resolved from then on.
//!
//! The lists in force are the config file's `[sources]` lists with the ones set at runtime in
//! place. A list set at runtime wins until the config file changes that hub's key (the same
//! rule as for `max_concurrent` and `bandwidth_limit`); sending none goes back to the file's.
//! The hub's official endpoint is always tried after the list, and an endpoint variable in a
//! job's environment (`HF_ENDPOINT`, ...) before it.
//!
//! An endpoint may carry a user name and password (a private mirror): they are stored, and
//! every reply shows them as `***`.

use mdl_protocol::{ErrorReply, HubEndpointsInfo, HubEndpointsRequest, Response};

use super::{invalid, HandlerResult, Services};
use crate::scheduler::Scheduler;
use crate::settings::{Settings, SourceSettings};
use crate::sources::HUBS;

/// The most endpoints one hub may have.
pub const MAX_ENDPOINTS: usize = 8;

/// The longest endpoint URL accepted.
const MAX_URL_LEN: usize = 2048;

/// What a redacted user name and password look like in replies.
const REDACTED: &str = "***";

/// `HubEndpoints`: every hub's endpoints in force.
pub async fn list(services: &Services) -> HandlerResult {
    let settings = services.settings.get();
    services
        .call(move |s| Ok(Response::HubEndpoints(info(s, &settings)?)))
        .await
}

/// `SetHubEndpoints`: set or forget one hub's list; the reply comes once it is durable.
pub async fn set(services: &Services, request: HubEndpointsRequest) -> HandlerResult {
    let (hub, endpoints) = validate(request)?;
    let settings = services.settings.get();
    services
        .call(move |s| {
            s.set_hub_endpoints(&hub, endpoints, &settings.engine.sources)?;
            Ok(Response::HubEndpoints(info(s, &settings)?))
        })
        .await
}

/// Check a request: a known hub, and absolute `http(s)` URLs without query or fragment.
/// Returns the hub's name and the normalized list (trimmed, no trailing `/`, no duplicates).
pub fn validate(request: HubEndpointsRequest) -> Result<(String, Option<Vec<String>>), ErrorReply> {
    let hub = request.hub.trim().to_ascii_lowercase();
    if !HUBS.contains(&hub.as_str()) {
        return Err(invalid(format!(
            "unknown hub {:?}: expected one of {}",
            request.hub,
            HUBS.join(", ")
        )));
    }
    let Some(list) = request.endpoints else {
        return Ok((hub, None));
    };
    let mut out: Vec<String> = Vec::new();
    for raw in &list {
        let endpoint = check_endpoint(raw)?;
        if !out.contains(&endpoint) {
            out.push(endpoint);
        }
    }
    if out.is_empty() {
        return Err(invalid(
            "give at least one endpoint (to go back to the config file's, send none)",
        ));
    }
    if out.len() > MAX_ENDPOINTS {
        return Err(invalid(format!(
            "at most {MAX_ENDPOINTS} endpoints per hub, got {}",
            out.len()
        )));
    }
    Ok((hub, Some(out)))
}

/// One endpoint, normalized; the error never shows a password.
fn check_endpoint(raw: &str) -> Result<String, ErrorReply> {
    let text = raw.trim().trim_end_matches('/');
    let shown = || redact(text);
    if text.is_empty() {
        return Err(invalid("an endpoint is empty"));
    }
    if text.len() > MAX_URL_LEN {
        return Err(invalid(format!(
            "an endpoint is longer than {MAX_URL_LEN} characters"
        )));
    }
    let url = url::Url::parse(text).map_err(|e| {
        invalid(format!(
            "{:?} is not an absolute URL ({e}); an endpoint looks like https://hf-mirror.com",
            shown()
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "{:?}: an endpoint must start with http:// or https://",
            shown()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(format!("{:?} names no host", shown())));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(format!(
            "{:?}: an endpoint has no query (?...) or fragment (#...)",
            shown()
        )));
    }
    if url.username() == REDACTED || url.password() == Some(REDACTED) {
        return Err(invalid(
            "the endpoint's user name or password is the placeholder *** shown in replies; \
             type the real one again",
        ));
    }
    Ok(text.to_string())
}

/// `url` with any user name and password shown as `***`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_password(None);
            let _ = parsed.set_username(REDACTED);
            let text = parsed.to_string();
            // `Url` adds a `/` to a bare host; keep the list as it was typed.
            if url.ends_with('/') {
                text
            } else {
                text.trim_end_matches('/').to_string()
            }
        }
        _ => url.to_string(),
    }
}

/// The environment variable that goes before `hub`'s list.
fn environment_variable(hub: &str) -> &'static str {
    match hub {
        "hf" => "HF_ENDPOINT",
        "ms" => "MODELSCOPE_ENDPOINT",
        _ => crate::sources::civitai::ENDPOINT_ENV,
    }
}

/// Every hub's endpoints in force, on the scheduler's state (`settings`: the config file's).
pub fn info(
    scheduler: &Scheduler,
    settings: &Settings,
) -> Result<Vec<HubEndpointsInfo>, ErrorReply> {
    let runtime = scheduler.hub_endpoints()?;
    let base: &SourceSettings = &settings.engine.sources;
    Ok(HUBS
        .iter()
        .map(|hub| {
            let official = SourceSettings::official(hub)
                .unwrap_or_default()
                .to_string();
            let (list, origin) = match runtime.get(*hub) {
                Some(list) => (list.clone(), "runtime"),
                None => {
                    let list = base.of(hub).cloned().unwrap_or_default();
                    let from_file = settings.from_file.endpoints.contains_key(*hub);
                    let origin = if from_file || list != [official.clone()] {
                        "config"
                    } else {
                        "default"
                    };
                    (list, origin)
                }
            };
            HubEndpointsInfo {
                hub: hub.to_string(),
                endpoints: list.iter().map(|e| redact(e)).collect(),
                official,
                origin: origin.to_string(),
                environment: std::env::var(environment_variable(hub))
                    .ok()
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| redact(v.trim())),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::{engine, scheduler};

    fn request(hub: &str, endpoints: Option<&[&str]>) -> HubEndpointsRequest {
        HubEndpointsRequest {
            hub: hub.into(),
            endpoints: endpoints.map(|l| l.iter().map(|e| e.to_string()).collect()),
        }
    }

    #[test]
    fn only_absolute_web_urls_of_a_known_hub() {
        for bad in [
            request("gitlab", Some(&["https://x.example"])),
            request("hf", Some(&[])),
            request("hf", Some(&["  "])),
            request("hf", Some(&["hf-mirror.com"])),
            request("hf", Some(&["ftp://mirror.example"])),
            request("hf", Some(&["file:///etc"])),
            request("hf", Some(&["https://mirror.example/?a=b"])),
            request("hf", Some(&["https://mirror.example/#x"])),
            request("hf", Some(&["https://***@mirror.example"])),
            request("hf", Some(&["http://"])),
        ] {
            assert!(validate(bad.clone()).is_err(), "{bad:?}");
        }
        let too_many: Vec<String> = (0..9).map(|i| format!("https://m{i}.example")).collect();
        let refused = validate(HubEndpointsRequest {
            hub: "ms".into(),
            endpoints: Some(too_many),
        });
        assert!(refused.unwrap_err().message.contains("at most 8"));
        let (hub, list) = validate(request(
            " HF ",
            Some(&[
                "https://hf-mirror.com/",
                " https://hf-mirror.com ",
                "http://127.0.0.1:8090/prefix",
            ]),
        ))
        .unwrap();
        assert_eq!(hub, "hf");
        assert_eq!(
            list.unwrap(),
            ["https://hf-mirror.com", "http://127.0.0.1:8090/prefix"]
        );
        assert_eq!(validate(request("civitai", None)).unwrap().1, None);
    }

    #[test]
    fn passwords_never_appear_in_replies_or_errors() {
        assert_eq!(
            redact("https://me:secret@mirror.example"),
            "https://***@mirror.example"
        );
        assert_eq!(redact("https://hf-mirror.com"), "https://hf-mirror.com");
        let err = validate(request(
            "hf",
            Some(&["https://me:secret@mirror.example/?q"]),
        ));
        let message = err.unwrap_err().message;
        assert!(!message.contains("secret"), "{message}");
        assert!(message.contains("***"), "{message}");
    }

    #[test]
    fn a_runtime_list_is_in_force_until_the_file_changes_that_hub() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _events) = scheduler(dir.path());
        let settings = Settings::new(dir.path().join("sock"), dir.path().join("data"));
        let base = settings.engine.sources.clone();
        let origin = |s: &Scheduler, hub: &str| {
            let all = info(s, &settings).unwrap();
            let one = all.into_iter().find(|i| i.hub == hub).unwrap();
            (one.endpoints, one.origin)
        };
        assert_eq!(
            origin(&s, "hf"),
            (vec!["https://huggingface.co".to_string()], "default".into())
        );
        s.set_hub_endpoints(
            "hf",
            Some(vec!["https://me:pw@mirror.example".into()]),
            &base,
        )
        .unwrap();
        assert_eq!(
            origin(&s, "hf"),
            (
                vec!["https://***@mirror.example".to_string()],
                "runtime".into()
            )
        );
        // The engine resolves with the real URL.
        let in_force = engine(&s).settings();
        assert_eq!(
            in_force.sources.hf_endpoints,
            ["https://me:pw@mirror.example"]
        );
        assert_eq!(
            in_force.sources.modelscope_endpoints,
            base.modelscope_endpoints
        );

        // The file sets another hub's key: this one stays.
        let mut file = crate::settings::FileValues::default();
        file.endpoints
            .insert("ms".into(), vec!["https://ms.example".into()]);
        s.apply_file_values(&file).unwrap();
        assert_eq!(origin(&s, "hf").1, "runtime");
        // The file changes this hub's key: the file's list wins again.
        file.endpoints
            .insert("hf".into(), vec!["https://file.example".into()]);
        let applied = s.apply_file_values(&file).unwrap();
        assert!(applied.contains(&"hf_endpoints"), "{applied:?}");
        assert!(s.hub_endpoints().unwrap().is_empty());
        let mut from_file = base.clone();
        from_file.hf_endpoints = vec!["https://file.example".into()];
        s.apply_hub_endpoints(&from_file).unwrap();
        assert_eq!(
            engine(&s).settings().sources.hf_endpoints,
            ["https://file.example"]
        );

        // Forgetting a runtime list goes back to the file's.
        s.set_hub_endpoints("ms", Some(vec!["https://a.example".into()]), &from_file)
            .unwrap();
        s.set_hub_endpoints("ms", None, &from_file).unwrap();
        assert_eq!(
            engine(&s).settings().sources.modelscope_endpoints,
            from_file.modelscope_endpoints
        );
    }
}
