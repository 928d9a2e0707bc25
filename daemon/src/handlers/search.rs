//! Search-driven batch adds: `civitai://search?query=...&types=LORA&limit=N` becomes one add
//! per result. The search (HTTP, cursor pagination) runs in the connection's task; each add
//! then is queued like any other. Replies `Jobs` with the jobs queued (or joined).

use mdl_protocol::{AddRequest, Response};

use super::{add, invalid, HandlerResult, Services};
use crate::sources::civitai;

/// Expand the search and queue one job per model found.
pub async fn run(
    services: &Services,
    request: AddRequest,
    pairs: Vec<(String, String)>,
) -> HandlerResult {
    civitai::validate_options(&request.options).map_err(invalid)?;
    let adds = civitai::expand_search(&services.engine, &request, &pairs)
        .await
        .map_err(|e| mdl_protocol::ErrorReply::new(e.kind(), e.to_string()))?;
    if request.dry_run {
        return Err(invalid(format!(
            "--dry-run of a search: it would queue {}",
            adds.iter()
                .map(|a| a.source.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        )));
    }
    let mut jobs = Vec::new();
    let mut first_error = None;
    for request in adds {
        let source = request.source.clone();
        match add::queue_one(services, request).await {
            Ok(Response::Added(reply)) => jobs.push(reply.job),
            Ok(other) => tracing::warn!(%source, "unexpected reply to an add: {other:?}"),
            Err(e) => {
                tracing::warn!(%source, "search result not queued: {}", e.message);
                first_error.get_or_insert(e);
            }
        }
    }
    match (jobs.is_empty(), first_error) {
        (true, Some(e)) => Err(e),
        _ => Ok(Response::Jobs(jobs)),
    }
}
