//! Request handlers: one match dispatches, one file per request family. Handlers run inside
//! the scheduler task and work on its state directly, so they need no locks; they are plain
//! functions from a request to a response, testable without a socket.

pub mod add;
pub mod control;
pub mod query;

use mdl_protocol::{ErrorKind, ErrorReply, Request, Response};

use crate::scheduler::Scheduler;
use crate::store::StoreError;

/// Handle one request.
pub async fn dispatch(scheduler: &mut Scheduler, request: Request) -> Response {
    let name = request.name();
    let result = match request {
        Request::Add(add) => add::add(scheduler, add).await,
        Request::List => Ok(query::list(scheduler)),
        Request::Status(id) => query::status(scheduler, id),
        Request::DaemonStatus => Ok(query::daemon_status(scheduler)),
        Request::Pause(target) => control::pause(scheduler, target).await,
        Request::Resume(target) => control::resume(scheduler, target).await,
        Request::Cancel(id) => control::cancel(scheduler, id).await,
        Request::SetPriority(req) => control::set_priority(scheduler, req.id, req.priority).await,
        Request::Remove(req) => control::remove(scheduler, req).await,
        Request::SetConcurrency(max) => control::set_concurrency(scheduler, max).await,
        Request::SetBandwidthLimit(req) => control::set_bandwidth_limit(scheduler, req).await,
        Request::Verify(_) => Err(ErrorReply::new(
            ErrorKind::InvalidRequest,
            "verify is not supported by this daemon version",
        )),
        Request::Subscribe | Request::Shutdown => Err(ErrorReply::new(
            ErrorKind::InvalidRequest,
            format!("{name} is handled by the connection, not the scheduler"),
        )),
    };
    result.unwrap_or_else(|e| {
        tracing::debug!(request = name, "request failed: {}", e.message);
        Response::Error(e)
    })
}

/// The result of a handler: a response, or a typed error reply.
pub type HandlerResult = Result<Response, ErrorReply>;

impl From<StoreError> for ErrorReply {
    fn from(e: StoreError) -> Self {
        ErrorReply::new(ErrorKind::Other, e.to_string())
    }
}

/// The error for an unknown job id.
pub fn no_such_job(id: u64) -> ErrorReply {
    ErrorReply::new(
        ErrorKind::InvalidRequest,
        format!("no job {id}; `mdlctl ls` lists the jobs"),
    )
}
