//! Golden store records: the JSON envelopes a v1 daemon writes to sled must stay readable.
//! Run with `MDL_BLESS=1` to write fixtures for new record types (never rewrite old ones).

use std::path::PathBuf;

use mdl_protocol::{ErrorInfo, ErrorKind, FileState, JobState, Secret};
use mdld::job::{FileCheckpoint, FileRecord, JobRecord};
use mdld::ranges::RangeSet;
use mdld::store::{decode_record, encode_record};

fn fixture(name: &str, fresh: Vec<u8>) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/store/v1")
        .join(name);
    if !path.exists() && std::env::var_os("MDL_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    std::fs::read(&path)
        .unwrap_or_else(|_| panic!("missing {}: run with MDL_BLESS=1", path.display()))
}

#[test]
fn v1_job_record_still_decodes() {
    let record = JobRecord {
        id: 3,
        source: "https://example.com/m.bin".into(),
        dest_dir: "/data".into(),
        priority: 2,
        seq: 3,
        state: JobState::Paused,
        error: Some(ErrorInfo {
            kind: ErrorKind::NoSpace,
            message: "no space left".into(),
        }),
        created_ms: 1_763_000_000_000,
        finished_ms: None,
        sha256: Some("ab".repeat(32)),
        md5: None,
        file_name: None,
        revision: None,
        include: vec![],
        exclude: vec![],
        options: vec![],
        token: Some(Secret("t".into())),
        env: vec![("HF_TOKEN".into(), Secret("x".into()))],
        resolved: true,
        file_count: 1,
        bandwidth_limit: Some(1000),
    };
    let golden = fixture("job.json", encode_record(&record));
    let decoded: JobRecord = decode_record("jobs/3", &golden).unwrap();
    assert_eq!(decoded.id, 3);
    assert_eq!(decoded.state, JobState::Paused);
    assert_eq!(decoded.error.unwrap().kind, ErrorKind::NoSpace);
    assert_eq!(decoded.bandwidth_limit, Some(1000));
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
