//! A full disk: the job pauses with "no space left", keeps its bytes, and completes once space
//! is freed. Runs on a small tmpfs mounted for the test; where the machine does not allow
//! mounting (not root, no CAP_SYS_ADMIN), the tests print why and pass without checking.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mdl_protocol::{ErrorKind, JobState, Target};
use testkit::daemon::TestDaemon;
use testkit::{pseudo_random_bytes, Behavior, FileServer};

use crate::add_url;

const MIB: u64 = 1024 * 1024;

/// A tmpfs of a few MiB, unmounted when dropped.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(mib: u64) -> Option<SmallFs> {
        let dir = tempfile::tempdir().ok()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(out) if out.status.success() => Some(SmallFs { dir }),
            Ok(out) => {
                eprintln!(
                    "SKIPPED: cannot mount a small tmpfs here: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resize(&self, mib: u64) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn part_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "part"))
        .collect()
}

#[tokio::test]
async fn a_file_that_cannot_fit_pauses_with_no_space_and_completes_after_space_is_freed() {
    let Some(fs) = SmallFs::mount(4) else { return };
    let server = FileServer::start().await;
    let file = server.add("/big.bin", pseudo_random_bytes(6 * MIB as usize, 61));
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let job = add_url(&mut client, &file.url, fs.path(), Some(&file.sha256)).await;
    let paused = daemon.wait_state(job.id, JobState::Paused).await;
    let error = paused.error.expect("a reason");
    assert_eq!(error.kind, ErrorKind::NoSpace);
    assert!(error.message.contains("no space left"), "{}", error.message);
    fs.resize(16);
    client.resume(Target::Job(job.id)).await.unwrap();

    crate::expect_verified(&daemon, job.id, &fs.path().join("big.bin"), &file.sha256).await;
}

#[tokio::test]
async fn a_disk_that_fills_mid_download_pauses_and_keeps_the_bytes() {
    let Some(fs) = SmallFs::mount(8) else { return };
    let server = FileServer::start().await;
    let file = server.add("/stream.bin", pseudo_random_bytes(6 * MIB as usize, 62));
    // No Content-Length: nothing to check or reserve up front, so the disk fills mid-write.
    server.set_behavior(
        "/stream.bin",
        Behavior {
            no_content_length: true,
            rate_limit_bytes_per_sec: Some(4 * MIB),
            ..Default::default()
        },
    );
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let job = add_url(&mut client, &file.url, fs.path(), Some(&file.sha256)).await;
    daemon
        .wait_job(job.id, Duration::from_secs(20), |j| j.bytes_done >= MIB)
        .await;
    // Another program fills the disk.
    let filler = fs.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 6 * MIB as usize]);
    let paused = daemon.wait_state(job.id, JobState::Paused).await;
    assert_eq!(
        paused.error.as_ref().map(|e| e.kind),
        Some(ErrorKind::NoSpace),
        "{paused:#?}"
    );
    let kept = paused.bytes_done;
    assert!(
        kept >= MIB,
        "the bytes fetched before the disk filled are kept: {paused:#?}"
    );
    assert_eq!(part_files(fs.path()).len(), 1);
    std::fs::remove_file(&filler).unwrap();
    let sent_before_resume = server.stats("/stream.bin").body_bytes_sent;
    client.resume(Target::Job(job.id)).await.unwrap();

    crate::expect_verified(&daemon, job.id, &fs.path().join("stream.bin"), &file.sha256).await;
    let resumed = server
        .stats("/stream.bin")
        .log
        .last()
        .unwrap()
        .range
        .clone();
    assert!(resumed.is_some(), "the resume asked for the rest only");
    let sent_after = server.stats("/stream.bin").body_bytes_sent - sent_before_resume;
    assert!(
        sent_after <= file.len - kept + MIB,
        "resume fetched {sent_after} bytes; {kept} were kept"
    );
}

/// Fill `fs` to the last byte (another program takes the space); the file to delete frees it.
fn fill(fs: &SmallFs) -> PathBuf {
    use std::io::Write;
    let filler = fs.path().join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    // The last bytes, too: what a partial chunk still fits.
    while file.write_all(&[0u8; 512]).is_ok() {}
    filler
}

#[tokio::test]
async fn a_full_data_directory_stops_the_jobs_keeps_answering_and_recovers_by_itself() {
    // The data directory and the destination share one small file system, as `~/.local/share`
    // and `~/Downloads` usually do.
    let Some(fs) = SmallFs::mount(64) else { return };
    let server = FileServer::start().await;
    let file = server.add("/shared.bin", pseudo_random_bytes(12 * MIB as usize, 63));
    server.set_behavior(
        "/shared.bin",
        Behavior {
            rate_limit_bytes_per_sec: Some(3 * MIB),
            ..Default::default()
        },
    );
    let data_dir = fs.path().join("data");
    let dest = fs.path().join("downloads");
    let daemon = TestDaemon::start_with(|s| s.data_dir = data_dir.clone()).await;
    let mut client = daemon.client().await;
    let job = add_url(&mut client, &file.url, &dest, Some(&file.sha256)).await;
    daemon
        .wait_job(job.id, Duration::from_secs(20), |j| j.bytes_done >= 2 * MIB)
        .await;

    let filler = fill(&fs);
    // The daemon says why, stops the job, and keeps answering reads.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while client.store_health().await.unwrap().write_error.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the store's write error is reported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = client.store_health().await.unwrap();
    let reason = health.write_error.unwrap();
    assert!(reason.contains("space"), "{reason}");
    // The running job stops (keeping its bytes) and shows why it waits.
    let waiting = daemon
        .wait_job(job.id, Duration::from_secs(20), |j| {
            j.state == JobState::Queued
                && j.error
                    .as_ref()
                    .is_some_and(|e| e.kind == ErrorKind::NoSpace)
        })
        .await;
    assert!(waiting.bytes_done >= 2 * MIB, "{waiting:#?}");
    let listed = client.list().await.unwrap();
    assert!(listed.iter().any(|j| j.id == job.id), "ls still answers");
    // A change that cannot be saved is refused in words, not acknowledged.
    let refused = client
        .add(mdl_protocol::AddRequest {
            source: format!("{}?second", file.url),
            dest: Some(dest.display().to_string()),
            ..Default::default()
        })
        .await;
    assert!(refused.is_err(), "{refused:?}");

    // Space comes back: no restart, no `resume`.
    std::fs::remove_file(&filler).unwrap();
    crate::expect_verified(&daemon, job.id, &dest.join("shared.bin"), &file.sha256).await;
    assert!(client.store_health().await.unwrap().write_error.is_none());
    // The store writes again, durably.
    let again = add_url(&mut client, &format!("{}?third", file.url), &dest, None).await;
    assert!(client.status(again.id).await.is_ok());
}
