//! The "written" ranges of a partial file, kept where a `kill -9` cannot lose them.
//!
//! A durable checkpoint (`fdatasync`, then the range map into the store) is expensive, so it
//! runs rarely. Between two of them the writer thread records every range it has written in a
//! small sidecar file beside the partial file (`.mdl-ID-INDEX.written`), with a plain `pwrite`
//! right after the data's `pwrite` returned and no fsync: once `pwrite` returns, the kernel
//! holds both, so a killed daemon finds them in the page cache when it restarts in the same
//! boot. A power cut or a reboot can lose either, so each record carries the boot id, and after
//! a reboot only the store's durable ranges are trusted (the final hash catches anything else).
//!
//! Format: two slots of [`SLOT`] bytes, written alternately so that a write torn by the kill
//! leaves the other one intact. A slot is `MDLW`, a sequence number (u64 LE), the payload's
//! length (u32 LE) and checksum (the first 8 bytes of its sha256), then the payload: JSON of
//! [`Written`]. The valid slot with the higher sequence number wins.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ranges::RangeSet;

/// Bytes per slot.
const SLOT: usize = 4096;
/// Header bytes of a slot: magic, sequence, length, checksum.
const HEADER: usize = 4 + 8 + 4 + 8;
const MAGIC: &[u8; 4] = b"MDLW";

/// What the sidecar says about its partial file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// The boot this was written in ([`boot_id`]).
    pub boot_id: String,
    /// Byte ranges whose `pwrite` returned (not necessarily on stable storage).
    pub ranges: RangeSet,
    /// The file's length as the server reported it.
    pub total: Option<u64>,
    /// The server's ETag for these bytes.
    pub etag: Option<String>,
    /// The server's Last-Modified for these bytes.
    pub last_modified: Option<String>,
}

/// The sidecar of a partial file.
pub fn path_for(part: &Path) -> PathBuf {
    part.with_extension("written")
}

/// The id of the running boot: `/proc/sys/kernel/random/boot_id` on Linux,
/// `kern.bootsessionuuid` on macOS, the boot time on Windows ([`windows_boot_time`]); `None`
/// where it is unknown (then written ranges are never trusted across a restart, only durable
/// ones). `MDL_BOOT_ID_FILE` names a file to read it
/// from instead (tests fake a reboot with it). Read once per process: a process never
/// outlives its boot, and every new partial file asks (on macOS that is a `sysctl` process).
pub fn boot_id() -> Option<String> {
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT.get_or_init(read_boot_id).clone()
}

fn read_boot_id() -> Option<String> {
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    if let Some(path) = std::env::var_os("MDL_BOOT_ID_FILE") {
        return read(Path::new(&path));
    }
    if cfg!(target_os = "linux") {
        return read(Path::new("/proc/sys/kernel/random/boot_id"));
    }
    if cfg!(target_os = "macos") {
        let out = std::process::Command::new("sysctl")
            .args(["-n", "kern.bootsessionuuid"])
            .output()
            .ok()?;
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        return (!id.is_empty()).then_some(id);
    }
    windows_boot_time()
}

/// Only Windows has this stand-in; elsewhere there is none.
#[cfg(not(windows))]
fn windows_boot_time() -> Option<String> {
    None
}

/// Windows has no boot id; the boot time stands in for one: now minus the time since boot
/// (`GetTickCount64`, which counts sleep and hibernation too), to the minute. Jitter or a
/// clock change that moves it across a minute makes a restart look like a reboot, which only
/// costs a re-fetch of the bytes after the last durable checkpoint; the final hash catches the
/// rest.
#[cfg(windows)]
#[allow(unsafe_code)] // One FFI call with no arguments; the workspace denies unsafe elsewhere.
fn windows_boot_time() -> Option<String> {
    // SAFETY: GetTickCount64 takes no arguments and only reads a system counter.
    let uptime_ms = unsafe { windows_sys::Win32::System::SystemInformation::GetTickCount64() };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    let booted = now.as_secs().checked_sub(uptime_ms / 1000)?;
    Some(format!("windows-boot-{}", (booted + 30) / 60))
}

/// Read a sidecar; `None` when it is missing or neither slot is intact.
pub fn read(path: &Path) -> Option<Written> {
    let bytes = std::fs::read(path).ok()?;
    let mut best: Option<(u64, Written)> = None;
    for slot in bytes.chunks(SLOT).take(2) {
        if let Some((seq, written)) = decode_slot(slot) {
            if best.as_ref().is_none_or(|(s, _)| seq > *s) {
                best = Some((seq, written));
            }
        }
    }
    best.map(|(_, w)| w)
}

/// The highest sequence number of an intact slot.
fn read_seq(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    bytes
        .chunks(SLOT)
        .take(2)
        .filter_map(decode_slot)
        .map(|(seq, _)| seq)
        .max()
}

fn checksum(payload: &[u8]) -> [u8; 8] {
    let digest = Sha256::digest(payload);
    digest[..8].try_into().expect("8 bytes")
}

fn decode_slot(slot: &[u8]) -> Option<(u64, Written)> {
    if slot.len() < HEADER || &slot[..4] != MAGIC {
        return None;
    }
    let seq = u64::from_le_bytes(slot[4..12].try_into().ok()?);
    let len = u32::from_le_bytes(slot[12..16].try_into().ok()?) as usize;
    let sum: [u8; 8] = slot[16..24].try_into().ok()?;
    let payload = slot.get(HEADER..HEADER + len)?;
    if checksum(payload) != sum {
        return None;
    }
    Some((seq, serde_json::from_slice(payload).ok()?))
}

/// Writes the sidecar of one partial file (the writer thread owns it).
pub struct Sidecar {
    file: File,
    seq: u64,
    boot_id: String,
}

impl Sidecar {
    /// Open (or create) the sidecar at `path` for writing in boot `boot_id`.
    pub fn open(path: &Path, boot_id: String) -> io::Result<Sidecar> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // Continue after the newest slot already there, so a record of an earlier run can
        // never look newer than this one's.
        let seq = read_seq(path).unwrap_or(0);
        Ok(Sidecar { file, seq, boot_id })
    }

    /// Record `ranges` as written, with the validators of their version. No fsync: a kill
    /// cannot lose what the kernel holds, and a reboot is told apart by the boot id.
    pub fn record(
        &mut self,
        ranges: &RangeSet,
        total: Option<u64>,
        etag: Option<&str>,
        last_modified: Option<&str>,
    ) -> io::Result<()> {
        let mut written = Written {
            boot_id: self.boot_id.clone(),
            ranges: ranges.clone(),
            total,
            etag: etag.map(str::to_string),
            last_modified: last_modified.map(str::to_string),
        };
        let mut payload = serde_json::to_vec(&written).expect("serializes");
        // A very fragmented map does not fit: keep the largest ranges (trusting fewer bytes
        // is always safe; they are fetched again).
        while HEADER + payload.len() > SLOT {
            let mut kept: Vec<(u64, u64)> = written.ranges.ranges().to_vec();
            kept.sort_by_key(|&(s, e)| std::cmp::Reverse(e - s));
            kept.truncate((kept.len() / 2).max(1));
            let mut smaller = RangeSet::new();
            for (s, e) in kept {
                smaller.insert(s, e);
            }
            if smaller == written.ranges {
                written.etag = None; // validators that long are not worth resuming with
                written.last_modified = None;
                written.ranges = RangeSet::new();
            } else {
                written.ranges = smaller;
            }
            payload = serde_json::to_vec(&written).expect("serializes");
        }
        self.seq += 1;
        let mut slot = Vec::with_capacity(HEADER + payload.len());
        slot.extend_from_slice(MAGIC);
        slot.extend_from_slice(&self.seq.to_le_bytes());
        slot.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        slot.extend_from_slice(&checksum(&payload));
        slot.extend_from_slice(&payload);
        let offset = (self.seq % 2) * SLOT as u64;
        super::writer::write_all_at(&self.file, &slot, offset)
    }
}

/// Remove the sidecar of a partial file (with the partial file, or after it was installed).
pub fn remove(part: &Path) {
    let _ = std::fs::remove_file(path_for(part));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_intact_slot_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.written");
        let mut sidecar = Sidecar::open(&path, "boot-a".into()).unwrap();
        sidecar
            .record(&RangeSet::prefix(10), Some(100), Some("\"e\""), None)
            .unwrap();
        sidecar
            .record(&RangeSet::prefix(20), Some(100), Some("\"e\""), None)
            .unwrap();
        let got = read(&path).unwrap();
        assert_eq!(got.ranges, RangeSet::prefix(20));
        assert_eq!(got.boot_id, "boot-a");
        // Tear the newest slot (seq 2 sits in slot 0): the older one is used.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 3] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read(&path).unwrap().ranges, RangeSet::prefix(10));
        std::fs::write(&path, b"garbage").unwrap();
        assert!(read(&path).is_none());
    }

    #[test]
    fn a_fragmented_map_keeps_its_largest_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.written");
        let mut sidecar = Sidecar::open(&path, "b".into()).unwrap();
        let mut ranges = RangeSet::new();
        for i in 0..2000u64 {
            ranges.insert(i * 100, i * 100 + 10 + (i == 7) as u64 * 50);
        }
        sidecar.record(&ranges, None, None, None).unwrap();
        let got = read(&path).unwrap();
        assert!(got.ranges.ranges().contains(&(700, 760)));
        assert!(got.ranges.covered() < ranges.covered());
    }
}
