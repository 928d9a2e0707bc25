//! Golden frames: every message of protocol version 1, encoded once and checked in under
//! `tests/fixtures/v1/`. A change that alters how an existing message encodes fails here: add
//! new variants at the end instead, or bump the protocol version and add a `v2` directory.
//! Run with `MDL_BLESS=1` to write fixtures for new messages (never to rewrite old ones).
//!
//! Each message is pinned twice: as a bincode frame (`v1/NAME.bin`, header included) and as
//! the JSON payload a JSON client sends or receives (`v1/json/NAME.json`, exactly the bytes of
//! one frame's payload). `docs/protocol.md` quotes the JSON fixtures.

use std::path::PathBuf;

use mdl_protocol::connection::encode_frame;
use mdl_protocol::handshake::{HandshakeReply, Hello};
use mdl_protocol::*;
use serde::{de::DeserializeOwned, Serialize};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn job() -> JobInfo {
    JobInfo {
        id: 7,
        source: "https://example.com/model.safetensors".into(),
        state: JobState::Running,
        priority: -2,
        dest: "/data/models".into(),
        bytes_done: 1 << 33,
        bytes_total: Some(1 << 34),
        error: Some(ErrorInfo {
            kind: ErrorKind::Integrity,
            message: "sha256 mismatch".into(),
        }),
        files: vec![FileInfo {
            path: "/data/models/model.safetensors".into(),
            size: Some(1 << 34),
            bytes_done: 1 << 33,
            state: FileState::Downloading,
            sha256: Some("ab".repeat(32)),
            endpoint: Some("https://cdn.example.com".into()),
            note: None,
        }],
        created_ms: 1_763_000_000_000,
        finished_ms: None,
        revision: Some("main".into()),
    }
}

fn check<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(name: &str, value: T) {
    check_json(name, &value);
    let path = fixture_dir().join(format!("{name}.bin"));
    let encoded = encode_frame(&value).unwrap();
    if !path.exists() && std::env::var_os("MDL_BLESS").is_some() {
        std::fs::create_dir_all(fixture_dir()).unwrap();
        std::fs::write(&path, &encoded).unwrap();
    }
    let golden = std::fs::read(&path)
        .unwrap_or_else(|_| panic!("missing fixture {}: run with MDL_BLESS=1", path.display()));
    assert_eq!(
        golden[..8],
        (golden.len() as u64 - 8).to_be_bytes(),
        "{name}: length header"
    );
    let decoded: T = codec::decode(&golden[8..])
        .unwrap_or_else(|e| panic!("{name}: golden frame no longer decodes: {e}"));
    assert_eq!(
        decoded, value,
        "{name}: golden frame decodes to a different value"
    );
    assert_eq!(
        encoded, golden,
        "{name}: encoding changed; messages are append-only"
    );
}

/// The JSON form: the fixture decodes to `value`, and `value` encodes to the fixture's bytes.
fn check_json<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    name: &str,
    value: &T,
) {
    let dir = fixture_dir().join("json");
    let path = dir.join(format!("{name}.json"));
    let encoded = Codec::Json.encode(value).unwrap();
    if !path.exists() && std::env::var_os("MDL_BLESS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, &encoded).unwrap();
    }
    let golden = std::fs::read(&path)
        .unwrap_or_else(|_| panic!("missing fixture {}: run with MDL_BLESS=1", path.display()));
    let decoded: T = Codec::Json
        .decode(&golden)
        .unwrap_or_else(|e| panic!("{name}.json: golden payload no longer decodes: {e}"));
    assert_eq!(
        &decoded, value,
        "{name}.json: golden payload decodes to a different value"
    );
    assert_eq!(
        String::from_utf8(encoded).unwrap(),
        String::from_utf8(golden).unwrap(),
        "{name}.json: JSON encoding changed; messages are append-only"
    );
}

#[test]
fn a_json_hello_starts_with_a_brace_and_a_bincode_one_never_does() {
    let json = std::fs::read(fixture_dir().join("json/hello.json")).unwrap();
    let bin = std::fs::read(fixture_dir().join("hello.bin")).unwrap();
    assert_eq!(Codec::detect(&json), Codec::Json);
    assert_eq!(Codec::detect(&bin[8..]), Codec::Bincode);
}

#[test]
fn handshake_frames_never_change() {
    check(
        "hello",
        Hello {
            magic: MAGIC,
            protocol: 1,
            client_version: "mdlctl 0.1.0".into(),
        },
    );
    check(
        "welcome",
        HandshakeReply::Welcome {
            protocol: 1,
            daemon_version: "0.1.0".into(),
        },
    );
    check(
        "incompatible",
        HandshakeReply::Incompatible {
            expected: 1,
            got: 2,
            daemon_version: "0.1.0".into(),
        },
    );
    check(
        "refused",
        HandshakeReply::Refused(ErrorReply::new(
            ErrorKind::InvalidRequest,
            "the first frame must be an mdl Hello",
        )),
    );
}

#[test]
fn request_frames_still_decode() {
    check(
        "request_add",
        Request::Add(AddRequest {
            source: "hf://org/model".into(),
            dest: Some("/tmp/x".into()),
            sha256: Some("cd".repeat(32)),
            md5: None,
            priority: 5,
            paused: true,
            revision: Some("v1".into()),
            include: vec!["*.safetensors".into()],
            exclude: vec!["*.bin".into()],
            token: Some(Secret("hf_secret".into())),
            env: vec![("HF_ENDPOINT".into(), Secret("http://mirror".into()))],
            dry_run: false,
            options: vec![("format".into(), "SafeTensor".into())],
            file_name: Some("x.bin".into()),
        }),
    );
    check("request_list", Request::List);
    check("request_status", Request::Status(42));
    check("request_pause_all", Request::Pause(Target::All));
    check("request_resume", Request::Resume(Target::Job(3)));
    check("request_cancel", Request::Cancel(9));
    check(
        "request_prio",
        Request::SetPriority(SetPriorityRequest {
            id: 1,
            priority: -7,
        }),
    );
    check(
        "request_remove",
        Request::Remove(RemoveRequest {
            ids: vec![1, 2],
            delete_files: true,
        }),
    );
    check("request_subscribe", Request::Subscribe);
    check("request_daemon_status", Request::DaemonStatus);
    check("request_shutdown", Request::Shutdown);
    check("request_concurrency", Request::SetConcurrency(4));
    check(
        "request_limit",
        Request::SetBandwidthLimit(BandwidthLimitRequest {
            job: Some(3),
            bytes_per_second: Some(5_000_000),
        }),
    );
    check("request_store_health", Request::StoreHealth);
    check(
        "request_verify",
        Request::Verify(VerifyRequest {
            ids: vec![4],
            paths: vec!["/a".into()],
        }),
    );
    check(
        "request_set_hub_token",
        Request::SetHubToken(HubTokenRequest {
            hub: "hf".into(),
            token: Some(Secret("hf_secret".into())),
        }),
    );
    check("request_hub_tokens", Request::HubTokens);
    check(
        "request_add_many",
        Request::AddMany(vec![
            AddRequest {
                source: "https://h/a.bin".into(),
                dest: Some("/tmp/x".into()),
                ..Default::default()
            },
            AddRequest {
                source: "https://h/b.bin".into(),
                paused: true,
                ..Default::default()
            },
        ]),
    );
    check("request_hub_endpoints", Request::HubEndpoints);
    check(
        "request_set_hub_endpoints",
        Request::SetHubEndpoints(HubEndpointsRequest {
            hub: "hf".into(),
            endpoints: Some(vec!["https://hf-mirror.com".into()]),
        }),
    );
    check(
        "request_reset_hub_endpoints",
        Request::SetHubEndpoints(HubEndpointsRequest {
            hub: "ms".into(),
            endpoints: None,
        }),
    );
}

#[test]
fn response_and_event_frames_still_decode() {
    check("response_ok", Response::Ok);
    check(
        "response_store_health",
        Response::StoreHealth(mdl_protocol::StoreHealth {
            moved_aside: Some("/data/store.broken-1700000000".into()),
            open_error: Some("corrupted snapshot".into()),
            damaged: vec![mdl_protocol::DamagedRecord {
                key: "jobs/7".into(),
                message: "checksum mismatch".into(),
            }],
            lost: vec![mdl_protocol::LostJob {
                id: 9,
                source: "https://h/m.bin".into(),
                dest: "/d".into(),
                partial_files: vec!["/d/.mdl-9-0.part".into()],
            }],
            write_error: Some("no space left on device".into()),
        }),
    );
    check(
        "response_error",
        Response::Error(ErrorReply::new(ErrorKind::NotFound, "no such file")),
    );
    check(
        "response_added",
        Response::Added(AddReply {
            outcome: AddOutcome::Joined,
            job: job(),
        }),
    );
    check("response_jobs", Response::Jobs(vec![job(), job()]));
    check(
        "response_added_many",
        Response::AddedMany(vec![
            Response::Added(AddReply {
                outcome: AddOutcome::Created,
                job: job(),
            }),
            Response::Error(ErrorReply::new(
                ErrorKind::InvalidRequest,
                "the source is empty",
            )),
        ]),
    );
    check(
        "response_daemon",
        Response::Daemon(DaemonInfo {
            version: "0.1.0".into(),
            protocol: 1,
            pid: 1234,
            socket: "/run/user/1000/mdl/mdld.sock".into(),
            data_dir: "/home/u/.local/share/mdl".into(),
            max_concurrent: 3,
            bandwidth_limit: Some(20_000_000),
            running: 1,
            queued: 2,
            uptime_ms: 5000,
        }),
    );
    check(
        "response_hub_tokens",
        Response::HubTokens(vec![
            HubTokenInfo {
                hub: "hf".into(),
                set: true,
            },
            HubTokenInfo {
                hub: "civitai".into(),
                set: false,
            },
        ]),
    );
    check(
        "response_hub_endpoints",
        Response::HubEndpoints(vec![HubEndpointsInfo {
            hub: "hf".into(),
            endpoints: vec!["https://hf-mirror.com".into()],
            official: "https://huggingface.co".into(),
            origin: "runtime".into(),
            environment: None,
        }]),
    );
    check(
        "response_plan",
        Response::Plan(PlanInfo {
            source: "hf://org/model".into(),
            revision: Some("abc".into()),
            files: vec![PlannedFile {
                path: "config.json".into(),
                dest: "/x/config.json".into(),
                size: Some(10),
                sha256: None,
                bytes_to_fetch: Some(10),
            }],
        }),
    );
    check(
        "event_progress",
        Response::Event(Event::Progress(Progress {
            job: 7,
            file: "/x".into(),
            file_bytes_done: 5,
            file_bytes_total: Some(10),
            job_bytes_done: 5,
            job_bytes_total: None,
            bytes_per_second: 1_000_000,
            eta_seconds: Some(3),
        })),
    );
    check(
        "event_snapshot",
        Response::Event(Event::Snapshot(vec![job()])),
    );
    check("event_completed", Response::Event(Event::Completed(job())));
    check(
        "event_verifying",
        Response::Event(Event::Verifying {
            job: 1,
            file: "/x".into(),
        }),
    );
    check(
        "event_heartbeat",
        Response::Event(Event::Heartbeat { unix_ms: 1 }),
    );
    check(
        "event_lagged",
        Response::Event(Event::Lagged { missed: 12 }),
    );
    check("event_end", Response::Event(Event::End));
}

/// Messages added for the drop folder, integrity watching and config reload (issue #12),
/// appended at the ends of their enums.
#[test]
fn watch_frames_still_decode() {
    check("request_health", Request::Health);
    check(
        "response_health",
        Response::Health(HealthInfo {
            files_intact: 10,
            files_missing: 1,
            files_modified: 2,
            startup_check_done: true,
            watch_mode: "notify".into(),
            poll_interval_ms: 10_000,
            repair: "auto".into(),
            watch_dir: Some("/home/u/mdl-drop".into()),
            watch_dir_error: None,
            dropped_queued: 3,
            dropped_invalid: 1,
            config_file: Some("/home/u/.config/mdl/config.toml".into()),
            config_loaded_ms: Some(1_763_000_000_000),
            config_error: Some("line 2: invalid type".into()),
        }),
    );
    check(
        "event_file_changed",
        Response::Event(Event::FileChanged(FileChange {
            job: 7,
            path: "/data/models/model.safetensors".into(),
            state: FileState::Missing,
            note: Some("deleted".into()),
        })),
    );
    let mut damaged = job();
    damaged.state = JobState::Completed;
    damaged.files[0].state = FileState::Modified;
    check(
        "event_updated_modified",
        Response::Event(Event::Updated(damaged)),
    );
}
