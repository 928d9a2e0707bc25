//! Watching the disk (issue #12), with the real daemon in a temp directory: the drop folder,
//! completed files deleted / truncated / rewritten, the start-up check, `repair = "auto"`,
//! and config reload.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mdl_protocol::{Client, Event, FileState, JobInfo, JobState};
use testkit::daemon::{poll_until, TestDaemon};
use testkit::{pseudo_random_bytes, FileServer};

use crate::{add_url, expect_verified};

/// How soon a change on disk must show in `status`.
const NOTICE: Duration = Duration::from_secs(5);

/// The temp root of a test daemon (the parent of its download directory).
fn root(s: &mdld::Settings) -> PathBuf {
    s.download_dir.parent().unwrap().to_path_buf()
}

/// A daemon with a drop folder `<root>/drop` that settles files after `settle`.
async fn with_drop_folder(settle: Duration) -> (TestDaemon, PathBuf) {
    let daemon = TestDaemon::start_with(|s| {
        s.watch_dir = Some(root(s).join("drop"));
        s.watch_settle = settle;
    })
    .await;
    let drop = daemon.settings().watch_dir.clone().unwrap();
    (daemon, drop)
}

async fn wait_for_path(path: &Path) {
    let shown = path.display().to_string();
    tokio::time::timeout(Duration::from_secs(20), async {
        while !path.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{shown} did not appear"));
}

async fn jobs(client: &mut Client) -> Vec<JobInfo> {
    client.list().await.unwrap()
}

/// Wait until every job is completed; returns them.
async fn all_completed(daemon: &TestDaemon, count: usize) -> Vec<JobInfo> {
    let mut client = daemon.client().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let list = jobs(&mut client).await;
        if list.len() == count && list.iter().all(|j| j.state == JobState::Completed) {
            return list;
        }
        assert!(tokio::time::Instant::now() < deadline, "{list:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until file 0 of the job is in `state` (within [`NOTICE`]).
async fn file_state(daemon: &TestDaemon, id: u64, state: FileState) -> JobInfo {
    daemon
        .wait_job(id, NOTICE, |j| j.files.iter().any(|f| f.state == state))
        .await
}

#[tokio::test]
async fn a_dropped_manifest_and_list_are_queued_renamed_and_completed() {
    let server = FileServer::start().await;
    let a = server.add("/a.bin", pseudo_random_bytes(20_000, 1));
    let b = server.add("/b.bin", pseudo_random_bytes(30_000, 2));
    let c = server.add("/c.bin", pseudo_random_bytes(40_000, 3));
    let (daemon, drop) = with_drop_folder(Duration::from_millis(200)).await;
    let manifest = format!(
        "[[models]]\nname = \"m\"\ndir = \"manifest\"\n\n[[models.files]]\nurl = \"{}\"\nsha256 = \"{}\"\nsave_as = \"model-a.bin\"\n",
        a.url, a.sha256
    );
    std::fs::write(drop.join("models.toml"), manifest).unwrap();
    let list = format!(
        "# two more\n{} dest=list sha256={}\n{} --dest list --name c.bin   # the last one\n",
        b.url, b.sha256, c.url
    );
    std::fs::write(drop.join("more.txt"), list).unwrap();
    wait_for_path(&drop.join("models.toml.queued")).await;
    wait_for_path(&drop.join("more.txt.queued")).await;
    assert!(!drop.join("models.toml").exists());
    all_completed(&daemon, 3).await;
    let dl = &daemon.downloads;
    for (path, file) in [
        (dl.join("manifest/model-a.bin"), &a),
        (dl.join("list/b.bin"), &b),
        (dl.join("list/c.bin"), &c),
    ] {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(testkit::sha256_hex(&bytes), file.sha256);
    }
    let health = daemon.client().await.health().await.unwrap();
    assert_eq!(health.watch_dir, Some(drop.display().to_string()));
    assert_eq!(health.dropped_queued, 2);
}

#[tokio::test]
async fn a_malformed_file_becomes_invalid_with_its_line() {
    let (daemon, drop) = with_drop_folder(Duration::from_millis(200)).await;
    std::fs::write(
        drop.join("list.txt"),
        "http://127.0.0.1:9/a.bin\n\nhttp://127.0.0.1:9/b.bin colour=red\n",
    )
    .unwrap();
    std::fs::write(
        drop.join("m.toml"),
        "[[models]]\nname = \"x\"\n\n[[models.files]\nurl = 1\n",
    )
    .unwrap();
    std::fs::write(
        drop.join("bad-source.txt"),
        "http://127.0.0.1:9/ok.bin\nftp://nowhere/x.bin\n",
    )
    .unwrap();
    for (name, line) in [("list.txt", 3), ("m.toml", 4), ("bad-source.txt", 2)] {
        wait_for_path(&drop.join(format!("{name}.invalid"))).await;
        let error = std::fs::read_to_string(drop.join(format!("{name}.error.txt"))).unwrap();
        assert!(error.contains(&format!("line {line}:")), "{name}: {error}");
        assert!(!drop.join(name).exists());
    }
    let error = std::fs::read_to_string(drop.join("list.txt.error.txt")).unwrap();
    assert!(error.contains("unknown option \"colour\""), "{error}");
    // Nothing of an invalid file is queued, not even its good lines.
    assert!(jobs(&mut daemon.client().await).await.is_empty());
    assert_eq!(
        daemon
            .client()
            .await
            .health()
            .await
            .unwrap()
            .dropped_invalid,
        3
    );
}

#[tokio::test]
async fn a_file_copied_slowly_is_queued_only_once_complete() {
    let server = FileServer::start().await;
    let files: Vec<_> = (0..3)
        .map(|i| server.add(&format!("/slow{i}.bin"), pseudo_random_bytes(5_000, i)))
        .collect();
    let (daemon, drop) = with_drop_folder(Duration::from_millis(700)).await;
    let path = drop.join("slow.txt");
    let mut out = std::fs::File::create(&path).unwrap();
    let mut client = daemon.client().await;
    for file in &files {
        // Half a line, a pause, the rest: a copy in progress is never a complete file.
        let line = format!("{} sha256={}\n", file.url, file.sha256);
        let (head, tail) = line.split_at(line.len() / 2);
        out.write_all(head.as_bytes()).unwrap();
        out.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        out.write_all(tail.as_bytes()).unwrap();
        out.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(path.exists(), "taken while still being written");
        assert!(jobs(&mut client).await.is_empty());
    }
    drop_file(out);
    wait_for_path(&drop.join("slow.txt.queued")).await;
    assert!(!drop.join("slow.txt.invalid").exists());
    assert_eq!(all_completed(&daemon, 3).await.len(), 3);
}

fn drop_file(file: std::fs::File) {
    file.sync_all().unwrap();
}

#[tokio::test]
async fn a_restart_does_not_queue_a_dropped_file_again_and_takes_files_dropped_while_down() {
    let server = FileServer::start().await;
    let a = server.add("/once.bin", pseudo_random_bytes(10_000, 4));
    let b = server.add("/later.bin", pseudo_random_bytes(10_000, 5));
    let (mut daemon, drop) = with_drop_folder(Duration::from_millis(200)).await;
    std::fs::write(drop.join("once.txt"), format!("{}\n", a.url)).unwrap();
    wait_for_path(&drop.join("once.txt.queued")).await;
    all_completed(&daemon, 1).await;
    daemon.stop().await;
    // A crash between queueing and renaming leaves the file under its name; and a new file is
    // dropped while the daemon is down.
    std::fs::rename(drop.join("once.txt.queued"), drop.join("once.txt")).unwrap();
    std::fs::write(drop.join("later.txt"), format!("{}\n", b.url)).unwrap();
    let daemon = daemon.restart().await;
    wait_for_path(&drop.join("later.txt.queued")).await;
    wait_for_path(&drop.join("once.txt.queued")).await;
    let list = all_completed(&daemon, 2).await;
    assert_eq!(
        list.iter().filter(|j| j.source == a.url).count(),
        1,
        "{list:#?}"
    );
}

/// Download `count` files, each its own job; returns the jobs and their paths.
async fn completed_downloads(
    daemon: &TestDaemon,
    server: &FileServer,
    count: usize,
) -> Vec<(JobInfo, PathBuf, String)> {
    let mut client = daemon.client().await;
    let mut out = Vec::new();
    for i in 0..count {
        let name = format!("w{i}.bin");
        let file = server.add(
            &format!("/{name}"),
            pseudo_random_bytes(50_000, 10 + i as u64),
        );
        let job = add_url(
            &mut client,
            &file.url,
            &daemon.downloads,
            Some(&file.sha256),
        )
        .await;
        let path = daemon.downloads.join(&name);
        let done = expect_verified(daemon, job.id, &path, &file.sha256).await;
        out.push((done, path, file.sha256));
    }
    out
}

#[tokio::test]
async fn deleted_and_truncated_files_show_missing_and_modified_and_verify_repairs_them() {
    let server = FileServer::start().await;
    let daemon = TestDaemon::start().await;
    let files = completed_downloads(&daemon, &server, 3).await;
    let mut events = daemon.client().await.subscribe().await.unwrap();
    let [(deleted, deleted_path, _), (truncated, truncated_path, _), (read, read_path, _)] =
        &files[..]
    else {
        unreachable!()
    };
    // Wait until the watcher runs (the start-up check is done) before touching files.
    poll_until(NOTICE, || async {
        daemon
            .client()
            .await
            .health()
            .await
            .unwrap()
            .startup_check_done
    })
    .await;
    std::fs::remove_file(deleted_path).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(truncated_path)
        .unwrap()
        .set_len(1000)
        .unwrap();
    // Reading a file (as a loader does) is not a change.
    let _ = std::fs::read(read_path).unwrap();

    let job = file_state(&daemon, deleted.id, FileState::Missing).await;
    assert_eq!(
        job.state,
        JobState::Completed,
        "the job shows it in its files"
    );
    assert!(job.files[0].note.as_deref().unwrap().contains("deleted"));
    let job = file_state(&daemon, truncated.id, FileState::Modified).await;
    assert!(
        job.files[0]
            .note
            .as_deref()
            .unwrap()
            .contains("size changed"),
        "{job:#?}"
    );
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(NOTICE, events.next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(Event::FileChanged(change)) => seen.push((change.job, change.state)),
            Some(_) => {}
            None => panic!("event stream ended"),
        }
    }
    assert!(seen.contains(&(deleted.id, FileState::Missing)), "{seen:?}");
    assert!(
        seen.contains(&(truncated.id, FileState::Modified)),
        "{seen:?}"
    );
    let mut client = daemon.client().await;
    let health = client.health().await.unwrap();
    assert_eq!(
        (
            health.files_intact,
            health.files_missing,
            health.files_modified
        ),
        (1, 1, 1),
        "{health:#?}"
    );
    assert_eq!(health.repair, "manual");
    assert_eq!(
        client.status(read.id).await.unwrap().files[0].state,
        FileState::Completed
    );
    // Still completed, with a missing and a modified file: listed as their records say.
    crate::assert_listing_matches_status(&daemon).await;

    // `verify` re-hashes and fetches both again.
    let requeued = client.verify(vec![], vec![]).await.unwrap();
    assert_eq!(requeued.len(), 2, "{requeued:#?}");
    for (job, path, sha256) in &files[..2] {
        expect_verified(&daemon, job.id, path, sha256).await;
    }
    poll_until(NOTICE, || async {
        let h = daemon.client().await.health().await.unwrap();
        (h.files_intact, h.files_missing, h.files_modified) == (3, 0, 0)
    })
    .await;
    crate::assert_listing_matches_status(&daemon).await;
}

#[tokio::test]
async fn repair_auto_fetches_a_damaged_file_again_by_itself() {
    let server = FileServer::start().await;
    let daemon = TestDaemon::start_with(|s| s.repair = mdld::settings::RepairMode::Auto).await;
    let files = completed_downloads(&daemon, &server, 1).await;
    let (job, path, sha256) = &files[0];
    poll_until(NOTICE, || async {
        daemon
            .client()
            .await
            .health()
            .await
            .unwrap()
            .startup_check_done
    })
    .await;
    // Rewritten in place with other bytes of the same size, a second later: either its
    // directory is watched by then (the write is seen), or the first look at the new file
    // sees a modification time other than at verification.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(path, vec![0u8; 50_000]).unwrap();
    // Nobody asks: the daemon notices, re-hashes and fetches it again.
    poll_until(Duration::from_secs(20), || async {
        std::fs::read(path).is_ok_and(|b| testkit::sha256_hex(&b) == *sha256)
    })
    .await;
    let done = expect_verified(&daemon, job.id, path, sha256).await;
    assert_eq!(done.files[0].state, FileState::Completed, "{done:#?}");
}

#[tokio::test]
async fn the_start_up_check_marks_files_changed_while_the_daemon_was_down() {
    let server = FileServer::start().await;
    let mut daemon = TestDaemon::start().await;
    let files = completed_downloads(&daemon, &server, 2).await;
    daemon.stop().await;
    std::fs::remove_file(&files[0].1).unwrap();
    std::fs::write(&files[1].1, b"not the model").unwrap();
    let daemon = daemon.restart().await;
    file_state(&daemon, files[0].0.id, FileState::Missing).await;
    file_state(&daemon, files[1].0.id, FileState::Modified).await;
    let health = daemon.client().await.health().await.unwrap();
    assert!(health.startup_check_done);
    assert_eq!((health.files_missing, health.files_modified), (1, 1));
}

/// A daemon whose settings come from `<root>/config.toml` with `text` (as `mdld --config`).
async fn with_config(text: &str) -> (TestDaemon, PathBuf) {
    let dir = tempfile::tempdir().unwrap().keep();
    let config = dir.join("config.toml");
    std::fs::write(&config, text).unwrap();
    let loaded =
        mdld::Settings::load(None, Some(dir.join("ignored")), Some(config.clone())).unwrap();
    let daemon = TestDaemon::start_with(|s| {
        *s = s.with_runtime_keys_of(&loaded);
        s.config_file = loaded.config_file.clone();
    })
    .await;
    (daemon, config)
}

#[tokio::test]
async fn a_config_edit_applies_without_a_restart_and_an_invalid_edit_is_reported_and_ignored() {
    let (daemon, config) = with_config("max_concurrent = 1\n").await;
    let mut client = daemon.client().await;
    assert_eq!(client.daemon_status().await.unwrap().max_concurrent, 1);
    let health = client.health().await.unwrap();
    assert_eq!(health.config_file, Some(config.display().to_string()));
    assert_eq!(health.config_error, None);

    let drop = config.parent().unwrap().join("drop");
    std::fs::write(
        &config,
        format!(
            "max_concurrent = 4\nbandwidth_limit = \"50M\"\nwatch_dir = \"{}\"\n",
            drop.display()
        ),
    )
    .unwrap();
    poll_until(NOTICE, || async {
        let info = daemon.client().await.daemon_status().await.unwrap();
        info.max_concurrent == 4 && info.bandwidth_limit == Some(50_000_000)
    })
    .await;
    poll_until(NOTICE, || async {
        daemon.client().await.health().await.unwrap().watch_dir == Some(drop.display().to_string())
    })
    .await;
    assert!(drop.is_dir(), "the new drop folder is made");

    // A value set with mdlctl wins until the file changes that key.
    client.set_concurrency(2).await.unwrap();
    std::fs::write(
        &config,
        format!(
            "max_concurrent = 4\nbandwidth_limit = \"50M\"\nwatch_dir = \"{}\"\nrepair = \"auto\"\n",
            drop.display()
        ),
    )
    .unwrap();
    poll_until(NOTICE, || async {
        daemon.client().await.health().await.unwrap().repair == "auto"
    })
    .await;
    assert_eq!(client.daemon_status().await.unwrap().max_concurrent, 2);

    // An invalid edit: reported with its line, the previous settings stay.
    std::fs::write(&config, "repair = \"auto\"\nmax_concurrent = \"lots\"\n").unwrap();
    poll_until(NOTICE, || async {
        daemon
            .client()
            .await
            .health()
            .await
            .unwrap()
            .config_error
            .is_some()
    })
    .await;
    let error = client.health().await.unwrap().config_error.unwrap();
    assert!(error.contains("line 2"), "{error}");
    assert_eq!(client.daemon_status().await.unwrap().max_concurrent, 2);

    // Fixed: the error goes, the new value applies.
    std::fs::write(&config, "max_concurrent = 5\n").unwrap();
    poll_until(NOTICE, || async {
        let mut c = daemon.client().await;
        c.health().await.unwrap().config_error.is_none()
            && c.daemon_status().await.unwrap().max_concurrent == 5
    })
    .await;
    let _ = std::fs::remove_dir_all(config.parent().unwrap());
}

#[tokio::test]
async fn hub_cache_files_are_watched_through_the_snapshot_link_and_the_blob() {
    use testkit::hubs::huggingface::{HfFile, HfMock, HfRepo};
    let mock = HfMock::start().await;
    let repo = HfRepo::model("acme/watched").with_files(vec![
        HfFile::regular("config.json", "{\"hidden\": 8}\n"),
        HfFile::lfs("model.safetensors", pseudo_random_bytes(100_000, 9)),
    ]);
    let commit = repo.commit_sha("main").unwrap();
    mock.add_repo(repo.clone());
    let daemon = TestDaemon::start().await;
    let cache = daemon.downloads.join("hub");
    let mut client = daemon.client().await;
    let job = client
        .add(mdl_protocol::AddRequest {
            source: "hf://acme/watched".into(),
            env: crate::forwarded_env(&[
                ("HF_ENDPOINT", &mock.endpoint()),
                ("HF_HUB_CACHE", &cache.display().to_string()),
            ]),
            ..Default::default()
        })
        .await
        .unwrap()
        .job;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    let folder = cache.join("models--acme--watched");
    let link = folder.join("snapshots").join(&commit).join("config.json");
    let model = &repo.commits[0].files[1];
    let blob = folder.join("blobs").join(model.etag());

    std::fs::remove_file(&link).unwrap();
    std::fs::remove_file(&blob).unwrap();
    let damaged = daemon
        .wait_job(job.id, NOTICE, |j| {
            j.files
                .iter()
                .filter(|f| f.state == FileState::Missing)
                .count()
                == 2
        })
        .await;
    let notes: Vec<&str> = damaged
        .files
        .iter()
        .filter_map(|f| f.note.as_deref())
        .collect();
    assert!(notes.iter().any(|n| n.contains("config.json")), "{notes:?}");

    client.verify(vec![job.id], vec![]).await.unwrap();
    let repaired = daemon
        .wait_job(job.id, Duration::from_secs(30), |j| {
            j.state == JobState::Completed
                && j.files.iter().all(|f| f.state == FileState::Completed)
        })
        .await;
    assert_eq!(repaired.files.len(), 2);
    assert_eq!(std::fs::read(&link).unwrap(), b"{\"hidden\": 8}\n");
    assert_eq!(std::fs::read(&blob).unwrap(), model.content);
    // The health counts follow: both files intact again, nothing missing.
    poll_until(NOTICE, || async {
        let h = daemon.client().await.health().await.unwrap();
        (h.files_intact, h.files_missing, h.files_modified) == (2, 0, 0)
    })
    .await;

    // Changed in place through the snapshot link (an editor saving config.json), then
    // verified: the count of modified files goes back to zero too.
    std::fs::write(&link, b"{\"edited\": true}").unwrap();
    poll_until(NOTICE, || async {
        let h = daemon.client().await.health().await.unwrap();
        (h.files_intact, h.files_modified) == (1, 1)
    })
    .await;
    client.verify(vec![], vec![]).await.unwrap();
    daemon
        .wait_job(job.id, Duration::from_secs(30), |j| {
            j.state == JobState::Completed
                && j.files.iter().all(|f| f.state == FileState::Completed)
        })
        .await;
    poll_until(NOTICE, || async {
        let h = daemon.client().await.health().await.unwrap();
        (h.files_intact, h.files_missing, h.files_modified) == (2, 0, 0)
    })
    .await;
    assert_eq!(std::fs::read(&link).unwrap(), b"{\"hidden\": 8}\n");
}
