//! Request handlers: one match dispatches, one file per request family. Handlers run inside
//! the scheduler task and work on its state directly, so they need no locks; they are plain
//! functions from a request to a response, testable without a socket.

pub mod add;
pub mod control;
pub mod query;
pub mod search;
pub mod tokens;
pub mod verify;

use mdl_protocol::{ErrorKind, ErrorReply, Request, Response};

use crate::scheduler::{Scheduler, SchedulerHandle};
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
        Request::SetHubToken(req) => tokens::set(scheduler, req).await,
        Request::HubTokens => tokens::list(scheduler),
        Request::Verify(_) => Err(ErrorReply::new(
            ErrorKind::InvalidRequest,
            "verify runs outside the scheduler task (SchedulerHandle::request)",
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

/// Requests whose slow part (network, hashing) must not run in the scheduler's task: handled
/// here, in the caller's task, touching the state only through [`SchedulerHandle::with`].
/// Every other request comes back as `Err` for the scheduler.
pub async fn outside(handle: &SchedulerHandle, request: Request) -> Result<Response, Request> {
    match request {
        Request::Verify(verify) => Ok(verify::run(handle, verify).await),
        Request::Add(add) => match crate::sources::civitai::search_pairs(&add.source) {
            Some(pairs) => Ok(search::run(handle, add, pairs).await),
            // A hub dry run resolves the source (network): plan it here.
            None if add.dry_run => {
                let mut add = add;
                let source = add.source.clone();
                let token = add.token.clone();
                let env = add.env.clone();
                let Some((engine, settings, stored)) = handle
                    .with(move |s| {
                        let kind = crate::sources::classify_with(
                            &source,
                            &s.settings.engine.sources,
                            &env,
                        );
                        let stored = kind
                            .ok()
                            .and_then(|kind| tokens::token_for(&s.store, kind, &token));
                        (s.runner_ctx.engine.clone(), s.settings.clone(), stored)
                    })
                    .await
                else {
                    return Err(Request::Add(add));
                };
                // The stored hub token, as the job would get it (see `tokens`).
                if stored.is_some() {
                    add.token = stored;
                }
                match crate::sources::plan(&engine, &settings, &add).await {
                    Some(plan) => Ok(plan),
                    None => Err(Request::Add(add)),
                }
            }
            None => Err(Request::Add(add)),
        },
        other => Err(other),
    }
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
