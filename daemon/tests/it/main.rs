//! Daemon integration tests: the real daemon runs in-process on a temporary socket and data
//! directory (testkit's `TestDaemon`) against local fault-injecting HTTP servers on loopback.
//! One test binary with a module tree, so it links once.

mod civitai;
mod durability;
mod endpoints;
mod engine;
mod external;
mod hf;
mod hostile;
mod layers;
mod mirror;
mod modelscope;
mod modelscope_sdk;
mod offline;
mod protocol;
mod proxy;
mod queue;
mod segmented;
mod socket;
mod space;
mod store;
mod watch;

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

/// Wait until the job finishes, expect it completed, and check that the file at `path` has
/// the expected sha256 (read back from disk, not taken from the daemon's word).
pub async fn expect_verified(
    daemon: &testkit::daemon::TestDaemon,
    id: mdl_protocol::JobId,
    path: &std::path::Path,
    sha256: &str,
) -> JobInfo {
    let done = daemon.wait_finished(id).await;
    assert_eq!(done.state, mdl_protocol::JobState::Completed, "{done:#?}");
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(testkit::sha256_hex(&bytes), sha256, "{}", path.display());
    done
}

/// Check that a listing shows every job as `status` does (a listing reads finished jobs from
/// the store's views, `status` from their records): call it once the jobs are still.
pub async fn assert_listing_matches_status(daemon: &testkit::daemon::TestDaemon) {
    let mut client = daemon.client().await;
    let listed = client.list().await.unwrap();
    assert!(!listed.is_empty());
    for job in listed {
        assert_eq!(job, client.status(job.id).await.unwrap());
    }
}

/// A forwarded environment for an add, as `mdlctl` builds it from the caller's shell.
pub fn forwarded_env(pairs: &[(&str, &str)]) -> Vec<(String, mdl_protocol::Secret)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), mdl_protocol::Secret(v.to_string())))
        .collect()
}
