//! `health`: what the daemon watches on disk and how it is (files intact / missing /
//! modified, the drop folder, the config file and its last reload).

use mdl_protocol::Response;

use super::{HandlerResult, Services};

/// The health of the watched files and of the watchers.
pub async fn health(services: &Services) -> HandlerResult {
    services
        .call(|s| Ok(Response::Health(s.health_info())))
        .await
}
