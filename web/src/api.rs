//! The JSON routes under `/api/v1`: each one sends one protocol request and shows the reply.
//! `docs/http-api.md` documents them with curl examples.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mdl_protocol::{
    AddOutcome, AddRequest, ErrorKind, HubEndpointsInfo, JobId, JobInfo, Request,
    Response as Reply, Secret, Target,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::AppState;

/// The routes, relative to `/api/v1`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/status", get(status))
        .route("/settings", get(settings).patch(change_settings))
        .route("/jobs", get(list).post(add).delete(clear_history))
        .route("/plan", post(plan))
        .route("/jobs/{id}", get(job).delete(remove))
        .route("/jobs/{id}/pause", post(pause))
        .route("/jobs/{id}/resume", post(resume))
        .route("/jobs/{id}/cancel", post(cancel))
        .route("/jobs/{id}/priority", post(priority))
        .route("/health", get(health))
        .route("/verify", post(verify))
        .route("/endpoints", get(endpoints))
        .route(
            "/endpoints/{hub}",
            axum::routing::put(set_endpoints).delete(reset_endpoints),
        )
        .route("/tokens", get(tokens))
        .route(
            "/tokens/{hub}",
            axum::routing::put(set_token).delete(clear_token),
        )
        .route("/events", get(crate::events::stream))
        .route("/launch", post(launch))
        .method_not_allowed_fallback(method_not_allowed)
}

type ApiResult<T> = Result<T, ApiError>;

/// The largest request body accepted (413 above it): every body here is a few hundred bytes.
pub const MAX_BODY: usize = 1024 * 1024;

/// A request body, read up to [`MAX_BODY`]; failing that, an error as JSON (413 for a body
/// that is too large, 400 for one that cannot be read).
pub struct Body(Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> ApiResult<Self> {
        match Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the request body is larger than {MAX_BODY} bytes"),
                ))
            }
            Err(rejection) => Err(ApiError::bad_request(format!(
                "cannot read the request body: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// A query string; one that does not parse is a JSON 400.
pub struct QueryOf<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for QueryOf<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> ApiResult<Self> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(QueryOf(value)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

/// Parse a JSON request body; it must say `Content-Type: application/json` (which a plain
/// HTML form on another site cannot send).
fn json_body<T: DeserializeOwned>(headers: &HeaderMap, Body(body): &Body) -> ApiResult<T> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "send the body as JSON with Content-Type: application/json",
        ));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))
}

fn job_id(raw: &str) -> ApiResult<JobId> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("{raw:?} is not a job id (a number)")))
}

/// An error for a reply of the wrong type (a daemon of another version, most likely).
fn unexpected(reply: &Reply) -> ApiError {
    let text: String = format!("{reply:?}").chars().take(200).collect();
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "other",
        format!("unexpected reply from mdld: {text}"),
    )
}

/// Send one request; a daemon `Error` reply becomes an [`ApiError`].
async fn call(state: &AppState, request: Request) -> ApiResult<Reply> {
    match state.client().await?.request(&request).await? {
        Reply::Error(reply) => Err(ApiError::from_daemon(reply.kind, reply.message)),
        other => Ok(other),
    }
}

async fn call_job(state: &AppState, request: Request) -> ApiResult<Json<JobInfo>> {
    match call(state, request).await? {
        Reply::Job(job) => Ok(Json(job)),
        other => Err(unexpected(&other)),
    }
}

/// 404 for a job id the daemon does not know.
fn unknown_job(id: JobId, message: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", message).with_hint(format!(
        "there is no job {id} (it may have been removed); GET /api/v1/jobs lists the jobs"
    ))
}

/// The daemon refused a request about job `id` as invalid: 404 when the job does not exist,
/// 409 when it does (its state does not allow the request), asked with one `Status`.
async fn job_error(state: &AppState, id: JobId, err: ApiError) -> ApiError {
    if err.kind != ErrorKind::InvalidRequest.as_str() {
        return err;
    }
    match call(state, Request::Status(id)).await {
        Err(unknown) if unknown.kind == ErrorKind::InvalidRequest.as_str() => {
            unknown_job(id, unknown.message)
        }
        Ok(_) => ApiError {
            status: StatusCode::CONFLICT,
            kind: "conflict".into(),
            hint: Some(
                "the job's state does not allow this now; the list shows the job as it is".into(),
            ),
            ..err
        },
        Err(_) => err,
    }
}

/// `request` about job `id`, then the job as it is after it.
async fn job_request(state: &AppState, id: JobId, request: Request) -> ApiResult<Json<JobInfo>> {
    if let Err(err) = call(state, request).await {
        return Err(job_error(state, id, err).await);
    }
    job_status(state, id).await
}

/// The job `id` (404 when there is none).
async fn job_status(state: &AppState, id: JobId) -> ApiResult<Json<JobInfo>> {
    match call_job(state, Request::Status(id)).await {
        Err(err) if err.kind == ErrorKind::InvalidRequest.as_str() => {
            Err(unknown_job(id, err.message))
        }
        other => other,
    }
}

/// `GET /status`: the daemon's `DaemonInfo`.
async fn status(State(state): State<Arc<AppState>>) -> ApiResult<Response> {
    match call(&state, Request::DaemonStatus).await? {
        Reply::Daemon(info) => Ok(Json(info).into_response()),
        other => Err(unexpected(&other)),
    }
}

/// The runtime settings the daemon exposes.
#[derive(Debug, Serialize)]
struct Settings {
    /// Jobs running at once.
    max_concurrent: u32,
    /// The global bandwidth limit (bytes per second), `null` for none.
    bandwidth_limit: Option<u64>,
    /// Every hub's endpoints, as jobs queued from now on use them.
    endpoints: Vec<HubEndpointsInfo>,
}

/// `GET /settings`.
async fn settings(State(state): State<Arc<AppState>>) -> ApiResult<Json<Settings>> {
    let info = match call(&state, Request::DaemonStatus).await? {
        Reply::Daemon(info) => info,
        other => return Err(unexpected(&other)),
    };
    Ok(Json(Settings {
        max_concurrent: info.max_concurrent,
        bandwidth_limit: info.bandwidth_limit,
        endpoints: hub_endpoints(&state, Request::HubEndpoints).await?,
    }))
}

/// The endpoint lists after `request` (`HubEndpoints` or `SetHubEndpoints`).
async fn hub_endpoints(state: &AppState, request: Request) -> ApiResult<Vec<HubEndpointsInfo>> {
    match call(state, request).await? {
        Reply::HubEndpoints(list) => Ok(list),
        other => Err(unexpected(&other)),
    }
}

/// A `SetHubEndpoints` request from JSON: a list of URLs, or `null` for the config file's.
fn endpoints_request(hub: &str, value: &serde_json::Value) -> ApiResult<Request> {
    let endpoints = match value {
        serde_json::Value::Null => None,
        serde_json::Value::Array(items) => Some(
            items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<String>>>()
                .ok_or_else(|| ApiError::bad_request("endpoints must be a list of URLs"))?,
        ),
        _ => {
            return Err(ApiError::bad_request(
                "endpoints must be a list of URLs, or null for the config file's",
            ))
        }
    };
    Ok(Request::SetHubEndpoints(
        mdl_protocol::HubEndpointsRequest {
            hub: hub.to_string(),
            endpoints,
        },
    ))
}

/// `PATCH /settings` with `max_concurrent` and / or `bandwidth_limit` (a number, or `null`
/// to remove the limit) and / or `endpoints` (`{"hf": ["https://hf-mirror.com"], "ms":
/// null}`: a hub's list, or `null` for the config file's); replies the settings after the
/// change. Everything is checked before anything changes.
async fn change_settings(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Settings>> {
    let body: BTreeMap<String, serde_json::Value> = json_body(&headers, &body)?;
    for key in body.keys() {
        if !matches!(
            key.as_str(),
            "max_concurrent" | "bandwidth_limit" | "endpoints"
        ) {
            return Err(ApiError::bad_request(format!(
                "unknown setting {key:?}: expected max_concurrent, bandwidth_limit or endpoints"
            )));
        }
    }
    let endpoint_requests =
        match body.get("endpoints") {
            None => Vec::new(),
            Some(serde_json::Value::Object(hubs)) => hubs
                .iter()
                .map(|(hub, value)| endpoints_request(hub, value))
                .collect::<ApiResult<Vec<Request>>>()?,
            Some(_) => return Err(ApiError::bad_request(
                "endpoints must be an object by hub, e.g. {\"hf\": [\"https://hf-mirror.com\"]}",
            )),
        };
    if let Some(value) = body.get("max_concurrent") {
        let max = value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| ApiError::bad_request("max_concurrent must be a whole number"))?;
        call(&state, Request::SetConcurrency(max)).await?;
    }
    if let Some(value) = body.get("bandwidth_limit") {
        let limit = match value {
            serde_json::Value::Null => None,
            other => Some(other.as_u64().ok_or_else(|| {
                ApiError::bad_request("bandwidth_limit must be bytes per second, or null")
            })?),
        };
        call(
            &state,
            Request::SetBandwidthLimit(mdl_protocol::BandwidthLimitRequest {
                job: None,
                bytes_per_second: limit,
            }),
        )
        .await?;
    }
    for request in endpoint_requests {
        hub_endpoints(&state, request).await?;
    }
    settings(State(state)).await
}

/// `GET /jobs`: every job, as `mdlctl --json ls` prints them.
async fn list(State(state): State<Arc<AppState>>) -> ApiResult<Response> {
    match call(&state, Request::List).await? {
        Reply::Jobs(jobs) => Ok(Json(jobs).into_response()),
        other => Err(unexpected(&other)),
    }
}

/// `GET /jobs/{id}`.
async fn job(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobInfo>> {
    job_status(&state, job_id(&id)?).await
}

/// The body of `POST /jobs` and `POST /plan`: the options of `mdlctl add`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    source: String,
    #[serde(default)]
    dest: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    md5: Option<String>,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    revision: Option<String>,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    file_name: Option<String>,
    #[serde(default)]
    options: BTreeMap<String, String>,
    #[serde(default)]
    dry_run: bool,
}

/// Empty strings from a form mean "not given".
fn given(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl AddBody {
    fn into_request(self) -> AddRequest {
        let patterns = |list: Vec<String>| -> Vec<String> {
            list.into_iter()
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect()
        };
        AddRequest {
            source: self.source.trim().to_string(),
            dest: given(self.dest),
            sha256: given(self.sha256),
            md5: given(self.md5),
            priority: self.priority,
            paused: self.paused,
            revision: given(self.revision),
            include: patterns(self.include),
            exclude: patterns(self.exclude),
            token: given(self.token).map(Secret),
            // The daemon's own environment applies: the dashboard forwards none of its own.
            env: Vec::new(),
            dry_run: self.dry_run,
            options: self.options.into_iter().collect(),
            file_name: given(self.file_name),
        }
    }
}

/// The reply to `POST /jobs`.
#[derive(Debug, Serialize)]
struct Added {
    /// `created`, `joined` or `already_complete` (a search that queued several: `created`).
    outcome: AddOutcome,
    /// The job(s): one, or one per search result.
    jobs: Vec<JobInfo>,
}

/// `POST /jobs`: queue a download (or, with `"dry_run": true`, the same as `POST /plan`).
async fn add(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let body: AddBody = json_body(&headers, &body)?;
    match call(&state, Request::Add(body.into_request())).await? {
        Reply::Added(reply) => {
            let status = match reply.outcome {
                AddOutcome::Created => StatusCode::CREATED,
                _ => StatusCode::OK,
            };
            let added = Added {
                outcome: reply.outcome,
                jobs: vec![reply.job],
            };
            Ok((status, Json(added)).into_response())
        }
        Reply::Jobs(jobs) => Ok((
            StatusCode::CREATED,
            Json(Added {
                outcome: AddOutcome::Created,
                jobs,
            }),
        )
            .into_response()),
        Reply::Plan(plan) => Ok(Json(plan).into_response()),
        other => Err(unexpected(&other)),
    }
}

/// `POST /plan`: resolve the source and describe the files, sizes and what is already
/// present; queue nothing.
async fn plan(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let mut body: AddBody = json_body(&headers, &body)?;
    body.dry_run = true;
    match call(&state, Request::Add(body.into_request())).await? {
        Reply::Plan(plan) => Ok(Json(plan).into_response()),
        other => Err(unexpected(&other)),
    }
}

/// `POST /jobs/{id}/pause`: replies the job.
async fn pause(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobInfo>> {
    let id = job_id(&id)?;
    job_request(&state, id, Request::Pause(Target::Job(id))).await
}

/// `POST /jobs/{id}/resume`: replies the job.
async fn resume(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobInfo>> {
    let id = job_id(&id)?;
    job_request(&state, id, Request::Resume(Target::Job(id))).await
}

/// `POST /jobs/{id}/cancel`: replies the job.
async fn cancel(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobInfo>> {
    let id = job_id(&id)?;
    job_request(&state, id, Request::Cancel(id)).await
}

/// The body of `POST /jobs/{id}/priority`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriorityBody {
    priority: i32,
}

/// `POST /jobs/{id}/priority` with `{"priority": N}`: replies the job.
async fn priority(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<JobInfo>> {
    let id = job_id(&id)?;
    let body: PriorityBody = json_body(&headers, &body)?;
    let request = Request::SetPriority(mdl_protocol::SetPriorityRequest {
        id,
        priority: body.priority,
    });
    match call_job(&state, request).await {
        Ok(job) => Ok(job),
        Err(err) => Err(job_error(&state, id, err).await),
    }
}

/// The query of the `DELETE` routes.
#[derive(Debug, Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    delete_files: bool,
}

/// `DELETE /jobs/{id}[?delete_files=true]`: forget a finished job (204).
async fn remove(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    QueryOf(query): QueryOf<RemoveQuery>,
) -> ApiResult<StatusCode> {
    let id = job_id(&id)?;
    let request = Request::Remove(mdl_protocol::RemoveRequest {
        ids: vec![id],
        delete_files: query.delete_files,
    });
    match call(&state, request).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(err) => Err(job_error(&state, id, err).await),
    }
}

/// `DELETE /jobs[?delete_files=true]`: forget every finished job (204).
async fn clear_history(
    State(state): State<Arc<AppState>>,
    QueryOf(query): QueryOf<RemoveQuery>,
) -> ApiResult<StatusCode> {
    call(
        &state,
        Request::Remove(mdl_protocol::RemoveRequest {
            ids: Vec::new(),
            delete_files: query.delete_files,
        }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /endpoints`: every hub's endpoints (`[{hub, endpoints, official, origin,
/// environment}]`, user names and passwords shown as `***`).
async fn endpoints(State(state): State<Arc<AppState>>) -> ApiResult<Response> {
    Ok(Json(hub_endpoints(&state, Request::HubEndpoints).await?).into_response())
}

/// The body of `PUT /endpoints/{hub}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointsBody {
    endpoints: Vec<String>,
}

/// `PUT /endpoints/{hub}` with `{"endpoints": ["https://hf-mirror.com"]}`: the hub's list for
/// every job queued from now on (kept by the daemon until the config file changes that key).
async fn set_endpoints(
    State(state): State<Arc<AppState>>,
    Path(hub): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let body: EndpointsBody = json_body(&headers, &body)?;
    let request = Request::SetHubEndpoints(mdl_protocol::HubEndpointsRequest {
        hub,
        endpoints: Some(body.endpoints),
    });
    Ok(Json(hub_endpoints(&state, request).await?).into_response())
}

/// `DELETE /endpoints/{hub}`: back to the config file's list (or the official endpoint).
async fn reset_endpoints(
    State(state): State<Arc<AppState>>,
    Path(hub): Path<String>,
) -> ApiResult<Response> {
    let request = Request::SetHubEndpoints(mdl_protocol::HubEndpointsRequest {
        hub,
        endpoints: None,
    });
    Ok(Json(hub_endpoints(&state, request).await?).into_response())
}

/// The reply to `GET /health`.
#[derive(Debug, Serialize)]
struct Health {
    /// What opening the store found and repaired, and whether it writes now.
    store: mdl_protocol::StoreHealth,
    /// Completed files intact / missing / modified, the drop folder, the config file.
    watch: mdl_protocol::HealthInfo,
}

/// `GET /health`: the daemon's `StoreHealth` and `Health` replies together.
async fn health(State(state): State<Arc<AppState>>) -> ApiResult<Json<Health>> {
    let store = match call(&state, Request::StoreHealth).await? {
        Reply::StoreHealth(store) => store,
        other => return Err(unexpected(&other)),
    };
    let watch = match call(&state, Request::Health).await? {
        Reply::Health(watch) => watch,
        other => return Err(unexpected(&other)),
    };
    Ok(Json(Health { store, watch }))
}

/// The body of `POST /verify` (both empty: every completed job).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    #[serde(default)]
    ids: Vec<JobId>,
    #[serde(default)]
    paths: Vec<String>,
}

/// `POST /verify`: re-hash completed files and queue the damaged or missing ones again;
/// replies the jobs queued again (the "Verify & repair" button).
async fn verify(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let body: VerifyBody = if body.0.is_empty() {
        VerifyBody::default()
    } else {
        json_body(&headers, &body)?
    };
    let request = Request::Verify(mdl_protocol::VerifyRequest {
        ids: body.ids,
        paths: body.paths,
    });
    match call(&state, request).await? {
        Reply::Jobs(jobs) => Ok(Json(jobs).into_response()),
        other => Err(unexpected(&other)),
    }
}

/// `GET /tokens`: which hubs have a stored token (`[{hub, set}]`; never the tokens).
async fn tokens(State(state): State<Arc<AppState>>) -> ApiResult<Response> {
    match call(&state, Request::HubTokens).await? {
        Reply::HubTokens(list) => Ok(Json(list).into_response()),
        other => Err(unexpected(&other)),
    }
}

/// The body of `PUT /tokens/{hub}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    token: String,
}

async fn hub_token(state: &AppState, hub: String, token: Option<Secret>) -> ApiResult<Response> {
    let request = Request::SetHubToken(mdl_protocol::HubTokenRequest { hub, token });
    match call(state, request).await? {
        Reply::HubTokens(list) => Ok(Json(list).into_response()),
        other => Err(unexpected(&other)),
    }
}

/// `PUT /tokens/{hub}` with `{"token": "..."}`: store the hub's token (kept by the daemon).
async fn set_token(
    State(state): State<Arc<AppState>>,
    Path(hub): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let body: TokenBody = json_body(&headers, &body)?;
    hub_token(&state, hub, Some(Secret(body.token))).await
}

/// `DELETE /tokens/{hub}`: remove the hub's stored token.
async fn clear_token(
    State(state): State<Arc<AppState>>,
    Path(hub): Path<String>,
) -> ApiResult<Response> {
    hub_token(&state, hub, None).await
}

/// The reply to `POST /launch`.
#[derive(Debug, Serialize)]
struct Launch {
    /// A launch link with a new one-time token.
    url: String,
}

/// `POST /launch`: a new one-time launch link (how `mdlctl ui` opens a running dashboard).
pub async fn launch(State(state): State<Arc<AppState>>) -> Json<impl Serialize> {
    Json(Launch {
        url: state.launch_url(),
    })
}

/// A known path with a method it does not take: 405 as JSON.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see docs/http-api.md",
    )
}

/// Any other path: 404 as JSON.
pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see docs/http-api.md",
    )
}
