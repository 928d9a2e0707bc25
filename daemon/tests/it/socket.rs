//! The socket and the data directory: who may remove or bind a socket, when it disappears at
//! shutdown, and which directories the daemon accepts (and never changes).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mdl_protocol::endpoint::{self, LockFile};
use mdld::Settings;
use testkit::daemon::{poll_until, test_settings, TestDaemon};
use testkit::{pseudo_random_bytes, Behavior, FileServer};
use tokio_util::sync::CancellationToken;

use crate::add_url;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn mkdir_mode(path: &Path, mode: u32) -> PathBuf {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_path_buf()
}

/// A socket file nobody listens on, as a killed daemon leaves it.
fn stale_socket(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(path).unwrap());
    assert!(path.exists());
}

/// Run the daemon with `settings` until it fails; it must fail.
async fn run_expecting_failure(settings: Settings) -> String {
    std::fs::create_dir_all(&settings.download_dir).unwrap();
    let shutdown = CancellationToken::new();
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        mdld::run(settings, shutdown.clone()),
    )
    .await
    .expect("mdld::run should give up within 20 s");
    shutdown.cancel();
    format!("{:#}", result.expect_err("mdld::run should fail"))
}

#[tokio::test]
async fn a_daemon_that_cannot_have_the_store_leaves_other_sockets_alone() {
    // Before the fix, the second daemon removed the "stale" socket first and only then died on
    // the store lock: two daemons starting at once could unlink a live daemon's socket.
    let first = TestDaemon::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut second = test_settings(tmp.path());
    second.data_dir = first.data_dir.clone();
    stale_socket(&second.socket);
    let err = run_expecting_failure(second.clone()).await;
    assert!(
        second.socket.exists(),
        "the socket was touched without the store lock"
    );
    assert!(err.contains("already running"), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "names who holds the data directory: {err}"
    );
    assert!(
        err.contains(&first.socket.display().to_string()),
        "and where it answers: {err}"
    );
    // The first daemon still answers.
    first.client().await.daemon_status().await.unwrap();
}

#[tokio::test]
async fn daemons_started_at_once_leave_exactly_one_answering() {
    let tmp = tempfile::tempdir().unwrap();
    let settings = test_settings(tmp.path());
    std::fs::create_dir_all(&settings.download_dir).unwrap();
    stale_socket(&settings.socket);
    let shutdown = CancellationToken::new();
    let tasks: Vec<_> = (0..4)
        .map(|_| tokio::spawn(mdld::run(settings.clone(), shutdown.clone())))
        .collect();
    // Three give up (they see the winner answer), one keeps running.
    poll_until(Duration::from_secs(20), || async {
        tasks.iter().filter(|t| t.is_finished()).count() == 3
    })
    .await;
    let mut running = None;
    for task in tasks {
        if task.is_finished() {
            let err = task.await.unwrap().unwrap_err();
            assert!(format!("{err:#}").contains("already running"), "{err:#}");
        } else {
            running = Some(task);
        }
    }
    let mut client = mdl_protocol::Client::connect(&settings.socket, "test")
        .await
        .expect("the winner answers on the socket");
    assert_eq!(
        client.daemon_status().await.unwrap().pid,
        std::process::id()
    );
    shutdown.cancel();
    running.unwrap().await.unwrap().unwrap();
    assert!(!settings.socket.exists(), "removed on a clean stop");
}

#[tokio::test]
async fn the_socket_disappears_only_after_the_store_is_closed() {
    // Before the fix, the listener unlinked the socket as soon as the accept loop ended, while
    // the scheduler still held the store for up to the shutdown grace: `mdlctl daemon stop`
    // followed by any command started a daemon that failed on the store lock.
    let server = FileServer::start().await;
    let file = server.add("/slow.bin", pseudo_random_bytes(8 << 20, 7));
    server.set_behavior(
        "/slow.bin",
        Behavior {
            rate_limit_bytes_per_sec: Some(1 << 20),
            ..Default::default()
        },
    );
    let tmp = tempfile::tempdir().unwrap();
    let settings = test_settings(tmp.path());
    std::fs::create_dir_all(&settings.download_dir).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(mdld::run(settings.clone(), shutdown.clone()));
    let mut client = loop {
        if let Ok(client) = mdl_protocol::Client::connect(&settings.socket, "test").await {
            break client;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let job = add_url(&mut client, &file.url, &settings.download_dir, None).await;
    while client.status(job.id).await.unwrap().bytes_done == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(client);
    shutdown.cancel();
    // Watch closely for the socket to go.
    while settings.socket.exists() {
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_micros(200));
    }
    let store = sled::Config::new().path(settings.store_dir()).open();
    assert!(
        store.is_ok(),
        "the store was still locked when the socket disappeared: {:?}",
        store.err()
    );
    drop(store);
    task.await.unwrap().unwrap();
    assert!(!LockFile::is_held(
        &settings.data_dir.join(mdld::DATA_LOCK_FILE)
    ));
    assert!(!LockFile::is_held(&endpoint::socket_lock_path(
        &settings.socket
    )));
}

#[tokio::test]
async fn a_socket_replaced_while_running_is_left_alone_at_exit() {
    let mut daemon = TestDaemon::start().await;
    // Someone else's socket now sits at the path.
    std::fs::remove_file(&daemon.socket).unwrap();
    let other = std::os::unix::net::UnixListener::bind(&daemon.socket).unwrap();
    daemon.stop().await;
    assert!(
        daemon.socket.exists(),
        "the daemon unlinked a socket it did not bind"
    );
    other.set_nonblocking(true).unwrap();
    let _conn = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    assert!(other.accept().is_ok());
}

#[tokio::test]
async fn an_existing_socket_directory_keeps_its_mode() {
    // `--socket ~/x.sock` used to chmod the home directory to 0700.
    let tmp = tempfile::tempdir().unwrap();
    let home = mkdir_mode(&tmp.path().join("home"), 0o755);
    let daemon = TestDaemon::start_with(|s| s.socket = home.join("x.sock")).await;
    assert_eq!(mode(&home), 0o755);
    assert_eq!(mode(&daemon.socket), 0o600);
    // A directory it creates itself is private.
    assert_eq!(mode(&daemon.data_dir), 0o700);
}

#[tokio::test]
async fn writable_socket_or_data_directories_are_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = mkdir_mode(&tmp.path().join("shared"), 0o775);
    let mut settings = test_settings(tmp.path());
    settings.socket = shared.join("mdld.sock");
    let err = run_expecting_failure(settings).await;
    assert!(err.contains("can be written by its group"), "{err}");
    assert!(err.contains(&shared.display().to_string()), "{err}");
    assert_eq!(mode(&shared), 0o775, "never changed");

    let tmp = tempfile::tempdir().unwrap();
    let data = mkdir_mode(&tmp.path().join("data"), 0o777);
    let mut settings = test_settings(tmp.path());
    settings.data_dir = data.clone();
    let err = run_expecting_failure(settings).await;
    assert!(err.contains("cannot use the data directory"), "{err}");
    assert!(err.contains("anyone"), "{err}");
    assert_eq!(mode(&data), 0o777, "never changed");
}

#[tokio::test]
async fn the_store_is_owner_only_even_in_a_0755_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = mkdir_mode(&tmp.path().join("data"), 0o755);
    let daemon = TestDaemon::start_with(|s| s.data_dir = data.clone()).await;
    assert_eq!(
        mode(&data),
        0o755,
        "an existing data directory is not changed"
    );
    assert_eq!(mode(&daemon.settings().store_dir()), 0o700);
    let restarted = {
        let mut daemon = daemon;
        daemon.stop().await;
        // An older mdl left the store directory 0755.
        std::fs::set_permissions(
            daemon.settings().store_dir(),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        daemon.restart().await
    };
    assert_eq!(mode(&restarted.settings().store_dir()), 0o700);
}
