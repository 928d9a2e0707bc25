//! A small async client for apps that queue downloads (mdlctl uses it too).
//!
//! ```no_run
//! # async fn demo() -> Result<(), mdl_protocol::ClientError> {
//! use mdl_protocol::{AddRequest, Client, endpoint};
//! let mut client = Client::connect(&endpoint::resolve_socket_path(None), "my-app/1.0").await?;
//! let reply = client
//!     .add(AddRequest { source: "https://example.com/model.bin".into(), ..Default::default() })
//!     .await?;
//! println!("queued job {}", reply.job.id);
//! # Ok(()) }
//! ```

use std::path::Path;

use crate::codec::Codec;
use crate::connection::{Connection, ProtocolError};
use crate::endpoint::{self, LocalStream};
use crate::event::Event;
use crate::handshake::{incompatible_message, HandshakeReply, Hello};
use crate::request::{
    AddRequest, BandwidthLimitRequest, HubEndpointsRequest, HubTokenRequest, RemoveRequest,
    Request, Secret, SetPriorityRequest, Target, VerifyRequest,
};
use crate::response::{
    AddReply, DaemonInfo, ErrorReply, HealthInfo, HubEndpointsInfo, HubTokenInfo, PlanInfo,
    Response,
};
use crate::types::{ErrorKind, JobId, JobInfo};

/// What can go wrong talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon listens on the endpoint.
    #[error("cannot connect to mdld at {path}: {source}")]
    Connect {
        /// The endpoint tried.
        path: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The daemon speaks another protocol version.
    #[error("{0}")]
    Incompatible(String),
    /// The connection broke or carried something unexpected.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The daemon closed the connection.
    #[error("the daemon closed the connection")]
    Closed,
    /// The daemon answered with an error.
    #[error("{0}")]
    Daemon(ErrorReply),
    /// The daemon answered with a reply of another type.
    #[error("unexpected reply from the daemon: {0}")]
    Unexpected(String),
}

impl ClientError {
    /// The kind of this error, for exit codes.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Daemon(reply) => reply.kind,
            ClientError::Connect { .. } | ClientError::Incompatible(_) => ErrorKind::Unreachable,
            ClientError::Protocol(_) | ClientError::Closed | ClientError::Unexpected(_) => {
                ErrorKind::Unreachable
            }
        }
    }
}

/// A connection to the daemon, past the handshake.
pub struct Client {
    conn: Connection<LocalStream>,
    daemon_version: String,
}

impl Client {
    /// Connect to the daemon at `path` and perform the handshake (in bincode).
    pub async fn connect(path: &Path, client_version: &str) -> Result<Client, ClientError> {
        Client::connect_with_codec(path, client_version, Codec::Bincode).await
    }

    /// Connect to the daemon at `path` speaking `codec`, and perform the handshake.
    pub async fn connect_with_codec(
        path: &Path,
        client_version: &str,
        codec: Codec,
    ) -> Result<Client, ClientError> {
        let stream = endpoint::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        Client::handshake(Connection::with_codec(stream, codec), client_version).await
    }

    /// Perform the handshake on an already connected stream, in the connection's codec.
    pub async fn handshake(
        mut conn: Connection<LocalStream>,
        client_version: &str,
    ) -> Result<Client, ClientError> {
        conn.send(&Hello::new(client_version)).await?;
        match conn.recv::<HandshakeReply>().await? {
            Some(HandshakeReply::Welcome { daemon_version, .. }) => Ok(Client {
                conn,
                daemon_version,
            }),
            Some(HandshakeReply::Incompatible {
                expected,
                got,
                daemon_version,
            }) => Err(ClientError::Incompatible(incompatible_message(
                expected,
                got,
                &daemon_version,
            ))),
            Some(HandshakeReply::Refused(reply)) => Err(ClientError::Daemon(reply)),
            None => Err(ClientError::Closed),
        }
    }

    /// The daemon's package version, as it said in the handshake.
    pub fn daemon_version(&self) -> &str {
        &self.daemon_version
    }

    /// Send a request and wait for its reply. An `Error` reply is returned as a reply, not as
    /// `Err`; the typed helpers below turn it into [`ClientError::Daemon`].
    /// A list too large for one frame arrives in parts (`JobsPart`...`Jobs`) and is joined.
    pub async fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        self.conn.send(request).await?;
        let mut parts: Vec<JobInfo> = Vec::new();
        let joined = |part| {
            parts.extend(part);
            Ok::<(), std::convert::Infallible>(())
        };
        match self.reply_in_parts(joined).await? {
            Ok(Response::Jobs(last)) if !parts.is_empty() => {
                parts.extend(last);
                Ok(Response::Jobs(parts))
            }
            Ok(other) => Ok(other),
            Err(never) => match never {},
        }
    }

    /// Read one reply, handing each `JobsPart` before it to `part`; the closing message, or
    /// the error `part` returned (the connection is then mid-reply).
    async fn reply_in_parts<E>(
        &mut self,
        mut part: impl FnMut(Vec<JobInfo>) -> Result<(), E>,
    ) -> Result<Result<Response, E>, ClientError> {
        loop {
            match self.conn.recv::<Response>().await? {
                None => return Err(ClientError::Closed),
                Some(Response::JobsPart(jobs)) => {
                    if let Err(e) = part(jobs) {
                        return Ok(Err(e));
                    }
                }
                Some(last) => return Ok(Ok(last)),
            }
        }
    }

    async fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        match self.request(request).await? {
            Response::Error(reply) => Err(ClientError::Daemon(reply)),
            other => Ok(other),
        }
    }

    async fn call_ok(&mut self, request: &Request) -> Result<(), ClientError> {
        match self.call(request).await? {
            Response::Ok => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    async fn call_job(&mut self, request: &Request) -> Result<JobInfo, ClientError> {
        match self.call(request).await? {
            Response::Job(job) => Ok(job),
            other => Err(unexpected(&other)),
        }
    }

    async fn call_jobs(&mut self, request: &Request) -> Result<Vec<JobInfo>, ClientError> {
        match self.call(request).await? {
            Response::Jobs(jobs) => Ok(jobs),
            other => Err(unexpected(&other)),
        }
    }

    async fn call_daemon(&mut self, request: &Request) -> Result<DaemonInfo, ClientError> {
        match self.call(request).await? {
            Response::Daemon(info) => Ok(info),
            other => Err(unexpected(&other)),
        }
    }

    /// Queue a download.
    pub async fn add(&mut self, request: AddRequest) -> Result<AddReply, ClientError> {
        match self.call(&Request::Add(request)).await? {
            Response::Added(reply) => Ok(reply),
            other => Err(unexpected(&other)),
        }
    }

    /// Resolve a source and describe what an add would do, without queueing.
    pub async fn plan(&mut self, mut request: AddRequest) -> Result<PlanInfo, ClientError> {
        request.dry_run = true;
        match self.call(&Request::Add(request)).await? {
            Response::Plan(plan) => Ok(plan),
            other => Err(unexpected(&other)),
        }
    }

    /// All jobs.
    pub async fn list(&mut self) -> Result<Vec<JobInfo>, ClientError> {
        self.call_jobs(&Request::List).await
    }

    /// Every job, as [`Client::list`], handed to `each` page by page as the daemon sends them:
    /// a long listing is never held whole (`mdlctl --json ls` prints it as it arrives). An
    /// error from `each` ends the listing (the connection is then mid-reply: drop it).
    pub async fn list_pages<E>(
        &mut self,
        mut each: impl FnMut(Vec<JobInfo>) -> Result<(), E>,
    ) -> Result<Result<(), E>, ClientError> {
        self.conn.send(&Request::List).await?;
        match self.reply_in_parts(&mut each).await? {
            Err(e) => Ok(Err(e)),
            Ok(Response::Jobs(last)) => Ok(each(last)),
            Ok(Response::Error(reply)) => Err(ClientError::Daemon(reply)),
            Ok(other) => Err(unexpected(&other)),
        }
    }

    /// One job.
    pub async fn status(&mut self, id: JobId) -> Result<JobInfo, ClientError> {
        self.call_job(&Request::Status(id)).await
    }

    /// Pause a job or all jobs.
    pub async fn pause(&mut self, target: Target) -> Result<(), ClientError> {
        self.call_ok(&Request::Pause(target)).await
    }

    /// Resume a job or all jobs.
    pub async fn resume(&mut self, target: Target) -> Result<(), ClientError> {
        self.call_ok(&Request::Resume(target)).await
    }

    /// Cancel a job.
    pub async fn cancel(&mut self, id: JobId) -> Result<(), ClientError> {
        self.call_ok(&Request::Cancel(id)).await
    }

    /// Change a job's priority.
    pub async fn set_priority(&mut self, id: JobId, priority: i32) -> Result<JobInfo, ClientError> {
        self.call_job(&Request::SetPriority(SetPriorityRequest { id, priority }))
            .await
    }

    /// Forget jobs (all finished ones when `ids` is empty).
    pub async fn remove(&mut self, ids: Vec<JobId>, delete_files: bool) -> Result<(), ClientError> {
        self.call_ok(&Request::Remove(RemoveRequest { ids, delete_files }))
            .await
    }

    /// The daemon's status.
    pub async fn daemon_status(&mut self) -> Result<DaemonInfo, ClientError> {
        self.call_daemon(&Request::DaemonStatus).await
    }

    /// What the daemon found wrong with its store and repaired, and whether it can write now.
    pub async fn store_health(&mut self) -> Result<crate::StoreHealth, ClientError> {
        match self.call(&Request::StoreHealth).await? {
            Response::StoreHealth(health) => Ok(health),
            other => Err(unexpected(&other)),
        }
    }

    /// Change how many jobs may run at once.
    pub async fn set_concurrency(&mut self, max: u32) -> Result<DaemonInfo, ClientError> {
        self.call_daemon(&Request::SetConcurrency(max)).await
    }

    /// Set or clear a bandwidth limit.
    pub async fn set_bandwidth_limit(
        &mut self,
        job: Option<JobId>,
        bytes_per_second: Option<u64>,
    ) -> Result<DaemonInfo, ClientError> {
        self.call_daemon(&Request::SetBandwidthLimit(BandwidthLimitRequest {
            job,
            bytes_per_second,
        }))
        .await
    }

    /// Re-hash finished files; returns the jobs queued again.
    pub async fn verify(
        &mut self,
        ids: Vec<JobId>,
        paths: Vec<String>,
    ) -> Result<Vec<JobInfo>, ClientError> {
        self.call_jobs(&Request::Verify(VerifyRequest { ids, paths }))
            .await
    }

    /// Which hubs have a stored token.
    pub async fn hub_tokens(&mut self) -> Result<Vec<HubTokenInfo>, ClientError> {
        match self.call(&Request::HubTokens).await? {
            Response::HubTokens(list) => Ok(list),
            other => Err(unexpected(&other)),
        }
    }

    /// Store (`Some`) or remove (`None`) the token of `hub`.
    pub async fn set_hub_token(
        &mut self,
        hub: &str,
        token: Option<Secret>,
    ) -> Result<Vec<HubTokenInfo>, ClientError> {
        let request = Request::SetHubToken(HubTokenRequest {
            hub: hub.to_string(),
            token,
        });
        match self.call(&request).await? {
            Response::HubTokens(list) => Ok(list),
            other => Err(unexpected(&other)),
        }
    }

    /// Every hub's endpoints, as jobs queued from now on use them.
    pub async fn hub_endpoints(&mut self) -> Result<Vec<HubEndpointsInfo>, ClientError> {
        match self.call(&Request::HubEndpoints).await? {
            Response::HubEndpoints(list) => Ok(list),
            other => Err(unexpected(&other)),
        }
    }

    /// Set the endpoints of `hub` (`Some`), or go back to the config file's (`None`).
    pub async fn set_hub_endpoints(
        &mut self,
        hub: &str,
        endpoints: Option<Vec<String>>,
    ) -> Result<Vec<HubEndpointsInfo>, ClientError> {
        let request = Request::SetHubEndpoints(HubEndpointsRequest {
            hub: hub.to_string(),
            endpoints,
        });
        match self.call(&request).await? {
            Response::HubEndpoints(list) => Ok(list),
            other => Err(unexpected(&other)),
        }
    }

    /// The health of what the daemon watches (files intact / missing / modified, the drop
    /// folder, the config file).
    pub async fn health(&mut self) -> Result<HealthInfo, ClientError> {
        match self.call(&Request::Health).await? {
            Response::Health(info) => Ok(info),
            other => Err(unexpected(&other)),
        }
    }

    /// Ask the daemon to shut down.
    pub async fn shutdown(&mut self) -> Result<(), ClientError> {
        self.call_ok(&Request::Shutdown).await
    }

    /// Turn this connection into an event stream. The first event is a snapshot of all jobs.
    pub async fn subscribe(mut self) -> Result<EventStream, ClientError> {
        self.conn.send(&Request::Subscribe).await?;
        Ok(EventStream { conn: self.conn })
    }
}

fn unexpected(response: &Response) -> ClientError {
    let text = format!("{response:?}");
    ClientError::Unexpected(text.chars().take(200).collect())
}

/// The events of a subscribed connection.
pub struct EventStream {
    conn: Connection<LocalStream>,
}

impl EventStream {
    /// The next event; `Ok(None)` when the daemon ends the stream.
    /// A snapshot too large for one frame arrives in parts and is joined into one `Snapshot`.
    pub async fn next(&mut self) -> Result<Option<Event>, ClientError> {
        let mut parts: Vec<JobInfo> = Vec::new();
        loop {
            match self.conn.recv::<Response>().await? {
                None | Some(Response::Event(Event::End)) => return Ok(None),
                Some(Response::Event(Event::SnapshotPart(part))) => parts.extend(part),
                Some(Response::Event(Event::Snapshot(last))) => {
                    parts.extend(last);
                    return Ok(Some(Event::Snapshot(parts)));
                }
                Some(Response::Event(event)) => return Ok(Some(event)),
                Some(Response::Error(reply)) => return Err(ClientError::Daemon(reply)),
                Some(other) => return Err(unexpected(&other)),
            }
        }
    }
}
