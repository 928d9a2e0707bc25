//! Process exit codes, and how an error chain maps to one.
//!
//! The codes are part of mdlctl's contract with scripts; each is [`ErrorKind::exit_code`] of
//! its kind, the one table, in the protocol crate. Errors that mdlctl raises
//! itself carry their kind in a [`Failure`]; errors from the daemon carry it in
//! [`ClientError::kind`].

use mdl_protocol::{ClientError, ErrorKind};

/// Success: every job completed, or the command did what was asked.
pub const OK: u8 = 0;
/// Any failure without a kind of its own, including a cancelled job.
pub const OTHER: u8 = ErrorKind::Other.exit_code();

/// An error raised by mdlctl itself that knows its kind (so its exit code) and, where one is
/// known, a hint for the person reading it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// What kind of failure; decides the exit code.
    pub kind: ErrorKind,
    /// What went wrong.
    pub message: String,
    /// What to do about it, printed as `hint: ...`.
    pub hint: Option<String>,
}

impl Failure {
    /// A failure of `kind` without a hint.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    /// The same failure with a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// The hint printed when the daemon cannot be reached.
pub const UNREACHABLE_HINT: &str =
    "is mdld running? start it with 'mdlctl daemon start' or check --socket / MDL_SOCKET";

/// The kind of the first error in the chain that has one (a [`Failure`] or a [`ClientError`]).
pub fn kind_of(err: &anyhow::Error) -> Option<ErrorKind> {
    err.chain().find_map(|cause| {
        if let Some(failure) = cause.downcast_ref::<Failure>() {
            Some(failure.kind)
        } else {
            cause.downcast_ref::<ClientError>().map(ClientError::kind)
        }
    })
}

/// The exit code for an error chain: its kind's code, else [`OTHER`].
pub fn code_for_error(err: &anyhow::Error) -> u8 {
    kind_of(err).map_or(OTHER, ErrorKind::exit_code)
}

/// The hint for an error chain, if one is known: a [`Failure`]'s own hint, or
/// [`UNREACHABLE_HINT`] when the daemon did not answer (not when it answered with another
/// protocol version: that message already names the fix).
pub fn hint_for(err: &anyhow::Error) -> Option<String> {
    for cause in err.chain() {
        if let Some(failure) = cause.downcast_ref::<Failure>() {
            return failure.hint.clone();
        }
        if let Some(client) = cause.downcast_ref::<ClientError>() {
            return match client {
                ClientError::Connect { .. }
                | ClientError::Closed
                | ClientError::Protocol(_)
                | ClientError::Unexpected(_) => Some(UNREACHABLE_HINT.to_string()),
                ClientError::Incompatible(_) | ClientError::Daemon(_) => None,
            };
        }
    }
    None
}

/// True when the chain holds a broken-pipe write error (stdout closed early, e.g. `| head`):
/// mdlctl then stops quietly.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;
    use mdl_protocol::ErrorReply;

    const ALL_KINDS: [ErrorKind; 10] = [
        ErrorKind::Other,
        ErrorKind::InvalidRequest,
        ErrorKind::Auth,
        ErrorKind::NotFound,
        ErrorKind::Network,
        ErrorKind::RateLimited,
        ErrorKind::Integrity,
        ErrorKind::NoSpace,
        ErrorKind::Unreachable,
        ErrorKind::Fatal,
    ];

    #[test]
    fn an_error_chain_exits_with_its_kinds_code() {
        for kind in ALL_KINDS {
            let err = anyhow::Error::new(Failure::new(kind, "x")).context("while doing y");
            assert_eq!(code_for_error(&err), kind.exit_code(), "{kind:?}");
            assert!((1..=9).contains(&kind.exit_code()), "{kind:?}");
        }
    }

    #[test]
    fn documented_values() {
        assert_eq!((OK, OTHER), (0, 1));
        assert_eq!(
            ALL_KINDS.map(ErrorKind::exit_code),
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 5]
        );
    }

    #[test]
    fn daemon_error_kind_survives_context() {
        let err: anyhow::Error = Err::<(), _>(ClientError::Daemon(ErrorReply::new(
            ErrorKind::NotFound,
            "no job 7",
        )))
        .context("status of job 7")
        .unwrap_err();
        assert_eq!(code_for_error(&err), 4);
        assert_eq!(hint_for(&err), None);
    }

    #[test]
    fn connect_error_is_unreachable_with_hint() {
        let source = std::io::Error::from(std::io::ErrorKind::NotFound);
        let err = anyhow::Error::new(ClientError::Connect {
            path: "/x.sock".into(),
            source,
        })
        .context("mdld is not running");
        assert_eq!(code_for_error(&err), 9);
        assert_eq!(hint_for(&err).as_deref(), Some(UNREACHABLE_HINT));
    }

    #[test]
    fn incompatible_has_no_extra_hint() {
        let err = anyhow::Error::new(ClientError::Incompatible("versions differ".into()));
        assert_eq!(code_for_error(&err), 9);
        assert_eq!(hint_for(&err), None);
    }

    #[test]
    fn failure_carries_kind_and_hint() {
        let err = anyhow::Error::new(Failure::new(ErrorKind::Integrity, "bad").with_hint("retry"));
        assert_eq!(code_for_error(&err), 7);
        assert_eq!(hint_for(&err).as_deref(), Some("retry"));
        assert_eq!(code_for_error(&anyhow::anyhow!("plain")), OTHER);
    }

    #[test]
    fn broken_pipe_is_recognised() {
        let err = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("writing to stdout");
        assert!(is_broken_pipe(&err));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
