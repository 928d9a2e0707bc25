//! Daemon integration tests: the real daemon runs in-process on a temporary socket and data
//! directory (testkit's `TestDaemon`) against local fault-injecting HTTP servers on loopback.
//! One test binary with a module tree, so it links once.

mod civitai;
mod engine;
mod hf;
mod modelscope;
mod protocol;
mod queue;
mod segmented;
mod space;
mod store;

use mdl_protocol::{AddRequest, Client, JobInfo};

/// Add a URL download into `dest` and return the created job.
pub async fn add_url(
    client: &mut Client,
    url: &str,
    dest: &std::path::Path,
    sha256: Option<&str>,
) -> JobInfo {
    client
        .add(AddRequest {
            source: url.to_string(),
            dest: Some(dest.display().to_string()),
            sha256: sha256.map(str::to_string),
            ..Default::default()
        })
        .await
        .expect("add")
        .job
}
