//! The secret headers of a job, worked out once per run, and the origins they may go to.
//!
//! A token belongs to the service that issued it: the hub endpoints the job names (scheme,
//! host and port). Every request mdl builds asks [`Credentials::for_url`] for its headers, so
//! a pagination link, a fallback or a resolve URL on any other origin gets none. reqwest
//! drops `Authorization` and `Cookie` on redirects that leave the origin.

use std::fmt;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// A job's secret headers and the origins they belong to.
#[derive(Clone, Default)]
pub struct Credentials {
    headers: HeaderMap,
    origins: Vec<url::Origin>,
}

impl Credentials {
    /// No secrets.
    pub fn none() -> Self {
        Credentials::default()
    }

    /// Credentials for the origins of `urls` (endpoints or a plain URL); URLs that do not
    /// parse add no origin.
    pub fn for_origins_of<S: AsRef<str>>(urls: &[S]) -> Self {
        let origins = urls
            .iter()
            .filter_map(|u| url::Url::parse(u.as_ref()).ok())
            .map(|u| u.origin())
            .filter(url::Origin::is_tuple)
            .collect();
        Credentials {
            headers: HeaderMap::new(),
            origins,
        }
    }

    /// Add a header that carries a secret, marked sensitive so it is never logged. A value
    /// that is not a valid header (e.g. a token with a newline) is left out.
    pub fn with(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(mut value) = HeaderValue::from_str(value) {
            value.set_sensitive(true);
            self.headers.insert(name, value);
        }
        self
    }

    /// Whether any secret is held.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// Whether `url` is on one of the origins the secrets belong to.
    pub fn trusts(&self, url: &str) -> bool {
        url::Url::parse(url).is_ok_and(|u| self.origins.contains(&u.origin()))
    }

    /// The headers for a request to `url`: the secrets when `url` is on their origin, else
    /// none.
    pub fn for_url(&self, url: &str) -> HeaderMap {
        if self.trusts(url) {
            self.headers.clone()
        } else {
            HeaderMap::new()
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("origins", &self.origins.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::AUTHORIZATION;

    #[test]
    fn secrets_go_only_to_their_origin() {
        let creds = Credentials::for_origins_of(&["https://hub.example"])
            .with(AUTHORIZATION, "Bearer s3cret");
        assert!(creds
            .for_url("https://hub.example/api/x")
            .contains_key(AUTHORIZATION));
        assert!(creds
            .for_url("https://hub.example:443/a")
            .contains_key(AUTHORIZATION));
        for other in [
            "http://hub.example/api/x",
            "https://hub.example:8443/api/x",
            "https://evil.example/api/x",
            "https://hub.example.evil.example/",
            "not a url",
        ] {
            assert!(creds.for_url(other).is_empty(), "{other}");
        }
        assert!(!format!("{creds:?}").contains("s3cret"));
    }
}
