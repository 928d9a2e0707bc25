//! Golden store records: the JSON envelopes every daemon version wrote to sled must stay
//! readable (schema 1 records through the upgrade). Run with `MDL_BLESS=1` to write fixtures
//! for new record types (never rewrite old ones).

use std::path::PathBuf;

use mdl_protocol::{ErrorKind, FileState, JobState, Secret};
use mdld::job::{FileCheckpoint, FileRecord, HfSource, JobRecord, Layout, RepoType, Source};
use mdld::ranges::RangeSet;
use mdld::sources::upgrade_job_record;
use mdld::store::{decode_job, decode_record, encode_record};

fn fixture(name: &str, fresh: Vec<u8>) -> Vec<u8> {
    fixture_of("v1", name, fresh)
}

/// A schema-1 record, written by hand or by an older daemon (never written again).
fn old_fixture(name: &str) -> Vec<u8> {
    fixture_of("v1", name, Vec::new())
}

fn fixture_of(schema: &str, name: &str, fresh: Vec<u8>) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/store")
        .join(schema)
        .join(name);
    if !path.exists() && std::env::var_os("MDL_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    std::fs::read(&path)
        .unwrap_or_else(|_| panic!("missing {}: run with MDL_BLESS=1", path.display()))
}

#[test]
fn v1_job_record_still_decodes() {
    let golden = old_fixture("job.json");
    let decoded = decode_job("jobs/3", &golden, upgrade_job_record).unwrap();
    assert_eq!(decoded.id, 3);
    assert_eq!(decoded.state, JobState::Paused);
    assert_eq!(decoded.error.unwrap().kind, ErrorKind::NoSpace);
    assert_eq!(decoded.bandwidth_limit, Some(1000));
    assert_eq!(
        decoded.parsed_source,
        Source::Url("https://example.com/m.bin".into())
    );
    assert_eq!(decoded.layout, Layout::Plain);
}

#[test]
fn v1_hub_job_record_upgrades_to_a_typed_source() {
    let golden = old_fixture("job_hf.json");
    let decoded = decode_job("jobs/4", &golden, upgrade_job_record).unwrap();
    assert_eq!(
        decoded.parsed_source,
        Source::HuggingFace(HfSource {
            repo_type: RepoType::Model,
            repo_id: "acme/tiny".into(),
            revision: Some("main".into()),
            path: None,
        })
    );
    assert_eq!(decoded.layout, Layout::HfCache);
    // The magic options are gone; the resolved commit is kept apart from the revision asked.
    assert!(decoded.options.is_empty(), "{:?}", decoded.options);
    assert_eq!(
        decoded.resolved_revision.as_deref(),
        Some("0123456789abcdef0123456789abcdef01234567")
    );
}

#[test]
fn v2_job_record_still_decodes() {
    let record = JobRecord {
        id: 5,
        source: "hf://acme/tiny".into(),
        parsed_source: Source::HuggingFace(HfSource {
            repo_type: RepoType::Dataset,
            repo_id: "acme/tiny".into(),
            revision: None,
            path: Some("sub".into()),
        }),
        layout: Layout::HfCache,
        dest_dir: "/cache/hub".into(),
        priority: 0,
        seq: 5,
        state: JobState::Queued,
        error: None,
        created_ms: 1_764_000_000_000,
        finished_ms: None,
        sha256: None,
        md5: None,
        file_name: None,
        revision: Some("main".into()),
        resolved_revision: Some("abc".into()),
        include: vec!["*.json".into()],
        exclude: vec![],
        options: vec![],
        token: Some(Secret("t".into())),
        env: vec![("HF_ENDPOINT".into(), Secret("http://127.0.0.1:1".into()))],
        resolved: true,
        file_count: 2,
        bandwidth_limit: None,
    };
    let golden = fixture_of("v2", "job.json", encode_record(&record));
    let decoded = decode_job("jobs/5", &golden, upgrade_job_record).unwrap();
    assert_eq!(decoded.parsed_source, record.parsed_source);
    assert_eq!(decoded.layout, Layout::HfCache);
    assert_eq!(decoded.resolved_revision.as_deref(), Some("abc"));
    assert_eq!(decoded.include, vec!["*.json".to_string()]);
}

#[test]
fn v1_file_record_with_ranges_still_decodes() {
    let mut ranges = RangeSet::new();
    ranges.insert(0, 100);
    ranges.insert(200, 300);
    let record = FileRecord {
        checkpoint: FileCheckpoint {
            ranges: ranges.clone(),
            total: Some(1000),
            etag: Some("\"e\"".into()),
            last_modified: None,
        },
        state: FileState::Downloading,
        rel_path: Some("m.bin".into()),
        ..FileRecord::new("https://example.com/m.bin".into())
    };
    let golden = fixture("file.json", encode_record(&record));
    let decoded: FileRecord = decode_record("files/3", &golden).unwrap();
    assert_eq!(decoded.checkpoint.ranges, ranges);
    assert_eq!(decoded.checkpoint.total, Some(1000));
    assert_eq!(decoded.rel_path.as_deref(), Some("m.bin"));
}
