//! Errors as the HTTP API shows them: a JSON body `{kind, message, hint}` with a fitting status.
//!
//! `kind` is the protocol's [`ErrorKind`] name (`invalid_request`, `auth`, `no_space`, ...) for
//! anything the daemon reported, plus kinds of the API's own: `unauthenticated` (401, no or a
//! wrong token), `forbidden` (403, a refused `Host` or `Origin`), `not_found` (404, an unknown
//! route or job id), `method_not_allowed` (405), `conflict` (409, the job's state does not
//! allow the request), `too_large` (413, the body) and `busy` (503, too many event streams). `message` is the daemon's text unchanged; `hint` says what a person can do in
//! the dashboard.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mdl_protocol::{ClientError, ErrorKind};
use serde::Serialize;

/// An error reply of the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    /// The HTTP status it is sent with (not part of the body).
    #[serde(skip)]
    pub status: StatusCode,
    /// What kind of failure: a protocol error kind, or `unauthenticated` / `forbidden`.
    pub kind: String,
    /// What went wrong, for a person.
    pub message: String,
    /// What to do about it, when known.
    pub hint: Option<String>,
}

impl ApiError {
    /// An error of the API's own (not from the daemon).
    pub fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind: kind.to_string(),
            message: message.into(),
            hint: None,
        }
    }

    /// The same error with a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// A request without valid credentials.
    pub fn unauthenticated() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "this request carries no valid dashboard token",
        )
        .with_hint(
            "open the link that `mdlctl ui` prints, or send `Authorization: Bearer <token>` with \
             the token from the file `web-token` in mdl's data directory",
        )
    }

    /// A request refused by the DNS-rebinding or CSRF checks.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// A request body that is not what the route expects.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::InvalidRequest.as_str(),
            message,
        )
    }

    /// An error the daemon reported (or the failure to reach it).
    pub fn from_daemon(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            status: status_for(kind),
            kind: kind.as_str().to_string(),
            message: message.into(),
            hint: hint_for(kind).map(str::to_string),
        }
    }
}

impl From<ClientError> for ApiError {
    fn from(err: ClientError) -> Self {
        match &err {
            ClientError::Daemon(reply) => ApiError::from_daemon(reply.kind, reply.message.clone()),
            _ => ApiError::from_daemon(err.kind(), format!("cannot talk to mdld: {err}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(&self)).into_response()
    }
}

/// The HTTP status for an error kind the daemon reported.
pub fn status_for(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
        // The hub refused: the dashboard's own credentials were fine, so not 401.
        ErrorKind::Auth => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Integrity => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
        ErrorKind::Network | ErrorKind::Fatal => StatusCode::BAD_GATEWAY,
        ErrorKind::Unreachable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Other => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// What a person can do in the dashboard about an error of `kind`. The daemon's message
/// already names the specifics (which license page, how many bytes); this says where to act.
pub fn hint_for(kind: ErrorKind) -> Option<&'static str> {
    Some(match kind {
        ErrorKind::Auth => {
            "the hub wants a token: accept the model's license on its page if it is gated, \
             then give mdld a token of that account (HF_TOKEN in its environment, or a token \
             file), and try again"
        }
        ErrorKind::NotFound => "check the model name or URL; a private model also needs a token",
        ErrorKind::NoSpace => {
            "free space on the destination disk (the message says how much is needed), or \
             choose another destination, then resume the job"
        }
        ErrorKind::Integrity => {
            "the file did not match its checksum; check the checksum you entered, or resume to \
             download it again"
        }
        ErrorKind::RateLimited => "the server is limiting requests; resume the job later",
        ErrorKind::Network | ErrorKind::Fatal => {
            "check the network connection or the hub endpoint in the settings, then resume"
        }
        ErrorKind::Unreachable => {
            "the download service (mdld) is not running: start it with `mdlctl daemon start` \
             or run `mdlctl ui` again"
        }
        ErrorKind::InvalidRequest | ErrorKind::Other => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_errors_keep_their_kind_and_message() {
        let err = ApiError::from(ClientError::Daemon(mdl_protocol::ErrorReply::new(
            ErrorKind::NoSpace,
            "needs 3 GB more",
        )));
        assert_eq!(err.status, StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(err.kind, "no_space");
        assert_eq!(err.message, "needs 3 GB more");
        assert!(err.hint.is_some());
        let body = serde_json::to_value(&err).unwrap();
        let mut keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["hint", "kind", "message"]);
    }
}
