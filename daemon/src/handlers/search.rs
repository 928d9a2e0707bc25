//! Search-driven batch adds: `civitai://search?query=...&types=LORA&limit=N` becomes one add
//! per result. The search (HTTP, cursor pagination) runs in the caller's task; each add then
//! goes to the scheduler like any other. Replies `Jobs` with the jobs queued (or joined).

use mdl_protocol::{AddRequest, ErrorKind, ErrorReply, Request, Response};

use crate::scheduler::SchedulerHandle;
use crate::sources::civitai;

/// Expand the search and queue one job per model found.
pub async fn run(
    handle: &SchedulerHandle,
    request: AddRequest,
    pairs: Vec<(String, String)>,
) -> Response {
    if let Err(message) = civitai::validate_options(&request.options) {
        return Response::Error(ErrorReply::new(ErrorKind::InvalidRequest, message));
    }
    let Some(engine) = handle.with(|s| s.runner_ctx.engine.clone()).await else {
        return Response::Error(ErrorReply::new(
            ErrorKind::Unreachable,
            "the daemon is shutting down",
        ));
    };
    let adds = match civitai::expand_search(&engine, &request, &pairs).await {
        Ok(adds) => adds,
        Err(e) => return Response::Error(ErrorReply::new(e.kind(), e.to_string())),
    };
    if request.dry_run {
        return Response::Error(ErrorReply::new(
            ErrorKind::InvalidRequest,
            format!(
                "--dry-run of a search: it would queue {}",
                adds.iter()
                    .map(|a| a.source.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ));
    }
    let mut jobs = Vec::new();
    let mut first_error = None;
    for add in adds {
        let source = add.source.clone();
        match handle.request_direct(Request::Add(add)).await {
            Response::Added(reply) => jobs.push(reply.job),
            Response::Error(e) => {
                tracing::warn!(%source, "search result not queued: {}", e.message);
                first_error.get_or_insert(e);
            }
            other => tracing::warn!(%source, "unexpected reply to an add: {other:?}"),
        }
    }
    match (jobs.is_empty(), first_error) {
        (true, Some(e)) => Response::Error(e),
        _ => Response::Jobs(jobs),
    }
}
