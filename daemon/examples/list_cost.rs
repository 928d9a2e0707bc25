//! Where a listing's time goes, stage by stage, on a copy of a store (bench/README.md,
//! "Listing 100k jobs"): sled reads alone, then the records' checksums and JSON decoding,
//! then the wire views; and what a listing reads now, the `views` tree alone.
//!
//! ```sh
//! cp -a bench/work/store/pristine/store /tmp/list-store   # a copy: sled writes on open
//! cargo run --release -p mdld --example list_cost -- /tmp/list-store
//! ```
use std::time::Instant;

use mdld::job::{FileRecord, JobRecord};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: list_cost STORE_DIR")?;
    let db = sled::Config::new()
        .path(&dir)
        .cache_capacity(mdld::store::CACHE_CAPACITY)
        .open()?;
    let jobs = db.open_tree("jobs")?;
    let files = db.open_tree("files")?;
    let job_id = |key: &[u8]| -> Result<u64, Box<dyn std::error::Error>> {
        Ok(u64::from_be_bytes(key.try_into()?))
    };
    let file_key = mdld::store::file_key;
    for round in 0..2 {
        let started = Instant::now();
        let (mut n, mut bytes) = (0u64, 0u64);
        for entry in jobs.iter() {
            let (key, value) = entry?;
            bytes += value.len() as u64;
            for index in 0u32.. {
                let Some(file) = files.get(file_key(job_id(&key)?, index))? else {
                    break;
                };
                bytes += file.len() as u64;
            }
            n += 1;
        }
        println!(
            "round {round}: sled reads of {n} jobs and their files ({} MB): {:.3?}",
            bytes / 1_000_000,
            started.elapsed()
        );

        let started = Instant::now();
        let mut views = 0usize;
        let mut decode = std::time::Duration::ZERO;
        let mut view = std::time::Duration::ZERO;
        for entry in jobs.iter() {
            let (key, value) = entry?;
            let t = Instant::now();
            let job: JobRecord = mdld::store::decode_record("jobs", &value)?;
            let mut records: Vec<FileRecord> = Vec::new();
            for index in 0u32.. {
                let Some(file) = files.get(file_key(job_id(&key)?, index))? else {
                    break;
                };
                records.push(mdld::store::decode_record("files", &file)?);
            }
            decode += t.elapsed();
            let t = Instant::now();
            let info = mdld::job::job_info(&job, &records, &[]);
            views += info.files.len();
            drop(info);
            view += t.elapsed();
        }
        println!("round {round}: reads + decode + views ({views} files): {:.3?} (decode incl. reads {decode:.3?}, views {view:.3?})", started.elapsed());
    }
    // What a listing reads since the store keeps views of the finished jobs.
    let vt = db.open_tree("views")?;
    if vt.is_empty() {
        println!("no views: open the store once with this mdld first");
    }
    for round in 0..3 {
        let started = Instant::now();
        let (mut n, mut bytes, mut f) = (0u64, 0u64, 0usize);
        for entry in vt.iter() {
            let (_key, value) = entry?;
            bytes += value.len() as u64;
            let Some(view) = mdld::store::View::checked(value) else {
                continue;
            };
            let info: mdl_protocol::JobInfo = mdl_protocol::codec::decode(view.encoded())?;
            f += info.files.len();
            n += 1;
        }
        println!(
            "views round {round}: {n} views ({} MB, {f} files) read + decoded: {:.3?}",
            bytes / 1_000_000,
            started.elapsed()
        );
    }
    Ok(())
}
