//! How much memory sled 0.34 keeps after walking a store, by access pattern: the measurement
//! behind the light store's design (bench/README.md, "Memory with 100k jobs").
//!
//! ```sh
//! cp -a bench/work/store/pristine/store /tmp/walk-store   # a copy: sled writes on open
//! cargo run --release -p mdld --example sled_walk -- /tmp/walk-store 4194304
//! ```
//!
//! It opens the store with the given cache capacity (bytes) and prints the process's RSS
//! after each of: `contains_key` of every job id, a walk of the `jobs` tree with a
//! `scan_prefix` of `files` per job (the pattern of mdld's listing and integrity check),
//! then one long iterator over each whole tree (the pattern of a full check of every
//! record). Never point it at a live daemon's store (sled takes a lock; it refuses).

use std::time::Instant;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), cache) = (args.next(), args.next()) else {
        return Err("usage: sled_walk STORE_DIR [CACHE_BYTES]".into());
    };
    let cache: u64 = cache.as_deref().unwrap_or("4194304").parse()?;
    let started = Instant::now();
    let db = sled::Config::new()
        .path(&dir)
        .cache_capacity(cache)
        .open()?;
    println!(
        "open (cache {cache} B): {:.2?}, RSS {:.1} MiB",
        started.elapsed(),
        rss_mib()
    );
    let jobs = db.open_tree("jobs")?;
    let files = db.open_tree("files")?;

    let started = Instant::now();
    let mut ids = 0u64;
    for entry in jobs.iter().keys() {
        let key = entry?;
        ids += u64::from(jobs.contains_key(&key)?);
    }
    println!(
        "contains_key of {ids} jobs: {:.2?}, RSS {:.1} MiB",
        started.elapsed(),
        rss_mib()
    );

    let started = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    for entry in jobs.iter() {
        let (key, value) = entry?;
        bytes += value.len() as u64;
        for file in files.scan_prefix(&key) {
            bytes += file?.1.len() as u64;
            records += 1;
        }
    }
    println!(
        "jobs walk + scan_prefix(files) per job: {records} files, {} MB of records, {:.2?}, RSS {:.1} MiB",
        bytes / 1_000_000,
        started.elapsed(),
        rss_mib()
    );

    for (name, tree) in [("files", &files), ("jobs", &jobs)] {
        let started = Instant::now();
        let count = tree.iter().count();
        println!(
            "one iterator over all of {name} ({count}): {:.2?}, RSS {:.1} MiB",
            started.elapsed(),
            rss_mib()
        );
    }
    Ok(())
}
