//! Per-job network policy: which proxy a job's requests go through, and whether the job is
//! offline.
//!
//! A daemon started by systemd at login has none of the shell's proxy variables, so a job
//! carries the caller's (forwarded by `mdlctl add`, see `mdl_protocol::FORWARDED_ENV`). Lookup
//! order, first found wins (each step tries the lowercase name before the uppercase one, as
//! curl and Python do):
//!
//! 1. the job's forwarded `https_proxy` (for `https://` URLs) or `http_proxy` (for `http://`),
//!    then `all_proxy`;
//! 2. the same variables in the daemon's own environment;
//! 3. the hub's `proxy` in the config (`[sources.huggingface]` ...), then the global `proxy`.
//!
//! `no_proxy` / `NO_PROXY` (hosts, `.domains`, IPs, CIDRs, `*`) follow the same order. A proxy
//! may be `http://`, `https://`, `socks5://` or `socks5h://` (the proxy resolves names), with
//! `user:password@` credentials; they are never logged or shown ([`ProxyConfig`]'s `Debug` and
//! [`ProxyConfig::describe`] redact them).
//!
//! Offline (`--offline`, `MDL_OFFLINE=1`, `HF_HUB_OFFLINE=1` for Hugging Face, `offline = true`
//! in the config) makes a job resolve from local data only; its engine's HTTP client can open
//! no connection at all (every request goes to a proxy whose name the client refuses to
//! resolve), so a code path that forgot offline mode fails instead of reaching the network.

use std::fmt;
use std::net::SocketAddr;

use mdl_protocol::ErrorKind;

use super::FetchError;
use crate::job::{JobRecord, Source};
use crate::settings::{NetworkPolicy, NetworkSettings};

/// The add option that makes a job offline (`mdlctl add --offline` sends `offline=1`).
pub const OFFLINE_OPTION: &str = "offline";

/// The proxies of one HTTP client. Equal configurations share one client (and its pool).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct ProxyConfig {
    /// The proxy for `http://` URLs.
    pub http: Option<String>,
    /// The proxy for `https://` URLs.
    pub https: Option<String>,
    /// Hosts reached directly.
    pub no_proxy: Option<String>,
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl ProxyConfig {
    /// True when no request goes through a proxy.
    pub fn is_direct(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }

    /// The configuration for a job (see the module docs for the order); `daemon_env` is the
    /// daemon's environment (`std::env::var` outside tests).
    pub fn for_job(
        job: &JobRecord,
        settings: &NetworkSettings,
        daemon_env: &dyn Fn(&str) -> Option<String>,
    ) -> ProxyConfig {
        let job_env = |name: &str| {
            job.env
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.expose().to_string())
        };
        Self::resolve(
            &job_env,
            daemon_env,
            hub_policy(job, settings),
            &settings.global,
        )
    }

    /// The configuration of requests that belong to no job (the daemon's default client).
    pub fn for_daemon(
        settings: &NetworkSettings,
        daemon_env: &dyn Fn(&str) -> Option<String>,
    ) -> ProxyConfig {
        Self::resolve(&|_| None, daemon_env, None, &settings.global)
    }

    fn resolve(
        job_env: &dyn Fn(&str) -> Option<String>,
        daemon_env: &dyn Fn(&str) -> Option<String>,
        hub: Option<&NetworkPolicy>,
        global: &NetworkPolicy,
    ) -> ProxyConfig {
        let set = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
        let env_first = |names: &[&str]| {
            [job_env, daemon_env].iter().find_map(|env| {
                names
                    .iter()
                    .find_map(|n| set(env(&n.to_ascii_lowercase())).or_else(|| set(env(n))))
            })
        };
        // The config's `proxy`: the hub's, else the global one; "" means direct.
        let configured = hub
            .and_then(|h| h.proxy.as_ref())
            .or(global.proxy.as_ref())
            .map(|s| s.expose().trim().to_string())
            .filter(|s| !s.is_empty());
        let for_scheme = |name: &str| {
            env_first(&[name, "ALL_PROXY"])
                .or_else(|| configured.clone())
                .map(|p| p.trim().to_string())
        };
        ProxyConfig {
            http: for_scheme("HTTP_PROXY"),
            https: for_scheme("HTTPS_PROXY"),
            no_proxy: env_first(&["NO_PROXY"])
                .or_else(|| hub.and_then(|h| h.no_proxy.clone()))
                .or_else(|| global.no_proxy.clone())
                .filter(|s| !s.trim().is_empty()),
        }
    }

    /// What the configuration does, for logs and errors, with credentials removed.
    pub fn describe(&self) -> String {
        let show = |p: &Option<String>| p.as_deref().map(redact_proxy);
        match (show(&self.http), show(&self.https)) {
            (None, None) => "direct".to_string(),
            (http, https) => {
                let mut parts = Vec::new();
                if let Some(h) = http {
                    parts.push(format!("http via {h}"));
                }
                if let Some(h) = https {
                    parts.push(format!("https via {h}"));
                }
                if let Some(n) = &self.no_proxy {
                    parts.push(format!("direct for {n}"));
                }
                parts.join(", ")
            }
        }
    }

    /// Add these proxies to a client builder (replacing reqwest's own reading of the
    /// daemon's environment). A proxy URL that does not parse is an error naming it, redacted.
    pub fn apply(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, FetchError> {
        let mut builder = builder.no_proxy();
        let no_proxy = self
            .no_proxy
            .as_deref()
            .and_then(reqwest::NoProxy::from_string);
        let invalid = |url: &str, e: reqwest::Error| {
            FetchError::failed(
                ErrorKind::InvalidRequest,
                format!(
                    "unusable proxy {}: {} (expected http://, https://, socks5:// or socks5h:// HOST:PORT)",
                    redact_proxy(url),
                    super::describe_reqwest(&e)
                ),
            )
        };
        if let Some(url) = &self.http {
            let proxy = reqwest::Proxy::http(with_scheme(url)).map_err(|e| invalid(url, e))?;
            builder = builder.proxy(proxy.no_proxy(no_proxy.clone()));
        }
        if let Some(url) = &self.https {
            let proxy = reqwest::Proxy::https(with_scheme(url)).map_err(|e| invalid(url, e))?;
            builder = builder.proxy(proxy.no_proxy(no_proxy));
        }
        Ok(builder)
    }
}

/// A proxy given as `host:port` means `http://host:port` (as curl reads it).
fn with_scheme(url: &str) -> String {
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

/// A proxy URL without its credentials (`http://***@proxy:3128`), for logs and errors.
pub fn redact_proxy(url: &str) -> String {
    let full = with_scheme(url);
    match url::Url::parse(&full) {
        Ok(mut parsed) => {
            let had_credentials = !parsed.username().is_empty() || parsed.password().is_some();
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            let text = parsed.to_string();
            let text = text.trim_end_matches('/').to_string();
            if had_credentials {
                text.replacen("://", "://***@", 1)
            } else {
                text
            }
        }
        // Unparsable: show nothing that could be a password.
        Err(_) => match full.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => full,
        },
    }
}

/// The config of the job's hub, if the job has one.
fn hub_policy<'a>(job: &JobRecord, settings: &'a NetworkSettings) -> Option<&'a NetworkPolicy> {
    match job.parsed_source {
        Source::HuggingFace(_) => Some(&settings.huggingface),
        Source::ModelScope(_) => Some(&settings.modelscope),
        Source::Civitai(_) => Some(&settings.civitai),
        Source::Url(_) => None,
    }
}

/// `1`, `true`, `yes`, `on` (any case), as `huggingface_hub` reads its boolean variables.
pub fn truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// Whether a job is offline: the `offline` add option; else `MDL_OFFLINE` (and, for
/// Hugging Face, `HF_HUB_OFFLINE`) from the job's environment, then the daemon's; else the
/// hub's `offline`, then the global `offline` in the config.
pub fn is_offline(
    job: &JobRecord,
    settings: &NetworkSettings,
    daemon_env: &dyn Fn(&str) -> Option<String>,
) -> bool {
    if job
        .options
        .iter()
        .any(|(k, v)| k == OFFLINE_OPTION && (v.is_empty() || truthy(v)))
    {
        return true;
    }
    let mut names = vec!["MDL_OFFLINE"];
    if matches!(job.parsed_source, Source::HuggingFace(_)) {
        names.push("HF_HUB_OFFLINE");
    }
    let job_env = |name: &str| {
        job.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.expose().to_string())
    };
    // A variable that is set decides (so `MDL_OFFLINE=0` overrides `offline = true`); two
    // variables that disagree count as offline.
    let mut decided: Option<bool> = None;
    for env in [&job_env as &dyn Fn(&str) -> Option<String>, daemon_env] {
        for name in &names {
            if let Some(v) = env(name).filter(|v| !v.trim().is_empty()) {
                decided = Some(decided.unwrap_or(false) || truthy(&v));
            }
        }
        if decided.is_some() {
            break;
        }
    }
    decided
        .or_else(|| hub_policy(job, settings).and_then(|h| h.offline))
        .or(settings.global.offline)
        .unwrap_or(false)
}

/// A resolver that resolves nothing: the offline client's only proxy has a name that never
/// resolves, so no socket is ever opened.
struct RefuseAll;

impl reqwest::dns::Resolve for RefuseAll {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_string();
        Box::pin(async move {
            let error: Box<dyn std::error::Error + Send + Sync> =
                format!("offline mode: no connection to {name}").into();
            Err::<Box<dyn Iterator<Item = SocketAddr> + Send>, _>(error)
        })
    }
}

/// The host of the offline client's proxy (`.invalid` never exists, RFC 2606).
const OFFLINE_PROXY: &str = "http://offline.mdl.invalid:9";

/// Make a client builder offline: every `http(s)` request goes to [`OFFLINE_PROXY`], which
/// [`RefuseAll`] never resolves.
pub fn offline(builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, FetchError> {
    let proxy = reqwest::Proxy::all(OFFLINE_PROXY)
        .map_err(|e| FetchError::failed(ErrorKind::Other, super::describe_reqwest(&e)))?;
    Ok(builder
        .no_proxy()
        .proxy(proxy)
        .dns_resolver(std::sync::Arc::new(RefuseAll)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdl_protocol::Secret;

    fn job(source: Source, env: &[(&str, &str)]) -> JobRecord {
        let mut job = JobRecord::from_add(
            &Default::default(),
            source,
            crate::job::Layout::Plain,
            "/tmp".into(),
        );
        job.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), Secret(v.to_string())))
            .collect();
        job
    }

    fn url_job(env: &[(&str, &str)]) -> JobRecord {
        job(Source::Url("https://example.com/x".into()), env)
    }

    fn hf_job(env: &[(&str, &str)]) -> JobRecord {
        job(
            Source::HuggingFace(crate::job::HfSource {
                repo_type: crate::job::RepoType::Model,
                repo_id: "a/b".into(),
                revision: None,
                path: None,
            }),
            env,
        )
    }

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_job_variables_win_over_the_daemon_and_the_config() {
        let mut settings = NetworkSettings::default();
        settings.global.proxy = Some(Secret("http://global:1".into()));
        settings.huggingface.proxy = Some(Secret("http://hub:2".into()));
        let daemon = env(&[("HTTPS_PROXY", "http://daemon:3"), ("NO_PROXY", "d.local")]);
        let none = env(&[]);
        // The job's own variables first.
        let cfg = ProxyConfig::for_job(
            &url_job(&[
                ("https_proxy", "http://job:4"),
                ("ALL_PROXY", "socks5h://j:5"),
            ]),
            &settings,
            &daemon,
        );
        assert_eq!(cfg.https.as_deref(), Some("http://job:4"));
        assert_eq!(cfg.http.as_deref(), Some("socks5h://j:5"));
        assert_eq!(cfg.no_proxy.as_deref(), Some("d.local"));
        // Then the daemon's environment.
        let cfg = ProxyConfig::for_job(&url_job(&[]), &settings, &daemon);
        assert_eq!(cfg.https.as_deref(), Some("http://daemon:3"));
        assert_eq!(cfg.http.as_deref(), Some("http://global:1"));
        // Then the hub's setting, then the global one.
        let cfg = ProxyConfig::for_job(&hf_job(&[]), &settings, &none);
        assert_eq!(cfg.https.as_deref(), Some("http://hub:2"));
        let cfg = ProxyConfig::for_job(&url_job(&[]), &settings, &none);
        assert_eq!(cfg.https.as_deref(), Some("http://global:1"));
        // An empty hub proxy means direct.
        settings.huggingface.proxy = Some(Secret(String::new()));
        let cfg = ProxyConfig::for_job(&hf_job(&[]), &settings, &none);
        assert!(cfg.is_direct(), "{cfg:?}");
    }

    #[test]
    fn credentials_never_show() {
        let cfg = ProxyConfig {
            http: Some("http://alice:s3cret@proxy:3128".into()),
            https: Some("socks5h://bob:pw2@127.0.0.1:1080".into()),
            no_proxy: None,
        };
        let text = format!("{cfg:?} {}", cfg.describe());
        assert!(!text.contains("s3cret") && !text.contains("pw2") && !text.contains("alice"));
        assert!(text.contains("http://***@proxy:3128"), "{text}");
        assert_eq!(redact_proxy("u:p@host:1"), "http://***@host:1");
        assert_eq!(redact_proxy("http://[bad:u:p@x"), "http://***@x");
    }

    #[test]
    fn offline_lookup() {
        let mut settings = NetworkSettings::default();
        let none = env(&[]);
        assert!(!is_offline(&hf_job(&[]), &settings, &none));
        assert!(is_offline(
            &hf_job(&[("HF_HUB_OFFLINE", "1")]),
            &settings,
            &none
        ));
        // HF_HUB_OFFLINE is Hugging Face's; MDL_OFFLINE is everyone's.
        assert!(!is_offline(
            &url_job(&[("HF_HUB_OFFLINE", "1")]),
            &settings,
            &none
        ));
        assert!(is_offline(
            &url_job(&[("MDL_OFFLINE", "yes")]),
            &settings,
            &none
        ));
        assert!(is_offline(
            &url_job(&[]),
            &settings,
            &env(&[("MDL_OFFLINE", "1")])
        ));
        settings.global.offline = Some(true);
        assert!(is_offline(&url_job(&[]), &settings, &none));
        assert!(!is_offline(
            &url_job(&[("MDL_OFFLINE", "0")]),
            &settings,
            &none
        ));
        settings.global.offline = None;
        let mut j = url_job(&[]);
        j.options.push((OFFLINE_OPTION.into(), "1".into()));
        assert!(is_offline(&j, &settings, &none));
    }
}
