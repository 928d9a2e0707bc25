//! Request handlers: one match dispatches every request, one file per request family.
//!
//! A handler runs in the connection's task. Slow work (resolving a hub source, a Civitai
//! search, re-hashing files) happens there; state is read and changed only inside
//! [`SchedulerHandle::call`], through the scheduler's intent methods, and the reply comes back
//! once what the call wrote is durable. The state-touching functions take `&mut Scheduler`,
//! so they are unit-tested without a socket.

pub mod add;
pub mod control;
pub mod endpoints;
pub mod health;
pub mod query;
pub mod search;
pub mod tokens;
pub mod verify;

use std::sync::Arc;

use mdl_protocol::{ErrorKind, ErrorReply, Event, Request, Response};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::scheduler::{CallError, Scheduler, SchedulerHandle};
use crate::settings::{Live, Settings};
use crate::store::StoreError;

/// What every handler may use: the scheduler (the only door to mutable state) and the
/// read-only services shared once at start.
#[derive(Clone)]
pub struct Services {
    /// The owner of all mutable state.
    pub scheduler: SchedulerHandle,
    /// The HTTP engine (for dry runs and searches, which resolve sources).
    pub engine: Engine,
    /// The settings in force: replaced as a whole when the config file is reloaded; take a
    /// snapshot with `settings.get()` per request.
    pub settings: Arc<Live<Settings>>,
    /// Cancelled to stop the daemon.
    pub shutdown: CancellationToken,
}

impl Services {
    /// The hub endpoints in force (the config file's, with the lists set at runtime in
    /// place; see [`endpoints`]).
    pub fn sources(&self) -> crate::settings::SourceSettings {
        self.engine.settings().sources.clone()
    }

    /// Run `f` on the scheduler's state; its result comes back once what it wrote is durable.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Scheduler) -> Result<T, ErrorReply> + Send + 'static,
    ) -> Result<T, ErrorReply> {
        self.scheduler.call(f).await.map_err(ErrorReply::from)?
    }
}

/// What the connection does with a request.
pub enum Reply {
    /// Send this response, then read the next request.
    Response(Response),
    /// Send every job, page by page (`JobsPart`... then `Jobs`).
    Jobs(query::JobPages),
    /// Turn the connection into an event stream: this snapshot first, then every event.
    Events(Subscription),
    /// Send `Ok`, then stop the daemon.
    Shutdown,
}

/// A new subscriber's view: every job now, and the events from then on.
pub struct Subscription {
    /// The snapshot's first page: the runnable jobs, in run order.
    pub first: mdl_protocol::EncodedJobs,
    /// The rest of the snapshot, page by page (read beside the scheduler, as a listing is).
    pub rest: query::JobPages,
    /// The live events (observation only: it may lag).
    pub events: broadcast::Receiver<Event>,
}

/// Handle one request.
pub async fn dispatch(services: &Services, request: Request) -> Reply {
    let name = request.name();
    let result = match request {
        Request::Add(add) => add::add(services, add).await,
        Request::List => return Reply::Jobs(query::list(services)),
        Request::Status(id) => query::status(services, id).await,
        Request::DaemonStatus => query::daemon_status(services).await,
        Request::StoreHealth => {
            services
                .call(|s| Ok(Response::StoreHealth(s.store_health())))
                .await
        }
        Request::Pause(target) => control::pause(services, target).await,
        Request::Resume(target) => {
            let f = move |s: &mut Scheduler| control::resume(s, target);
            services.call(f).await
        }
        Request::Cancel(id) => control::cancel(services, id).await,
        Request::SetPriority(req) => {
            let f = move |s: &mut Scheduler| control::set_priority(s, req.id, req.priority);
            services.call(f).await
        }
        Request::Remove(req) => control::remove(services, req).await,
        Request::SetConcurrency(max) => {
            services
                .call(move |s| control::set_concurrency(s, max))
                .await
        }
        Request::SetBandwidthLimit(req) => {
            services
                .call(move |s| control::set_bandwidth_limit(s, req))
                .await
        }
        Request::Verify(req) => verify::run(services, req).await,
        Request::SetHubToken(req) => tokens::set(services, req).await,
        Request::HubTokens => tokens::list(services).await,
        Request::Subscribe => {
            return match query::subscribe(services).await {
                Ok(subscription) => Reply::Events(subscription),
                Err(e) => Reply::Response(Response::Error(e)),
            }
        }
        Request::Shutdown => return Reply::Shutdown,
        Request::Health => health::health(services).await,
        Request::AddMany(requests) => add::add_many(services, requests).await,
        Request::HubEndpoints => endpoints::list(services).await,
        Request::SetHubEndpoints(req) => endpoints::set(services, req).await,
    };
    Reply::Response(result.unwrap_or_else(|e| {
        tracing::debug!(request = name, "request failed: {}", e.message);
        Response::Error(e)
    }))
}

/// The result of a handler: a response, or a typed error reply.
pub type HandlerResult = Result<Response, ErrorReply>;

impl From<StoreError> for ErrorReply {
    fn from(e: StoreError) -> Self {
        ErrorReply::new(ErrorKind::Other, e.to_string())
    }
}

impl From<CallError> for ErrorReply {
    fn from(e: CallError) -> Self {
        let kind = match e {
            CallError::Stopped => ErrorKind::Unreachable,
            CallError::NotDurable(_) => ErrorKind::Other,
        };
        ErrorReply::new(kind, e.to_string())
    }
}

/// The error for an unknown job id.
pub fn no_such_job(id: u64) -> ErrorReply {
    ErrorReply::new(
        ErrorKind::InvalidRequest,
        format!("no job {id}; `mdlctl ls` lists the jobs"),
    )
}

/// The error for a request that makes no sense in the current state.
pub fn invalid(message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorKind::InvalidRequest, message)
}
