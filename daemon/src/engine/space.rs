//! Free-space checks: a download that cannot fit stops before it starts, and a full disk is
//! recognised as such (the job pauses with "no space left" and keeps its bytes).

use std::path::Path;

use mdl_protocol::ErrorKind;

use super::FetchError;

/// True when an I/O error means the filesystem is full (or the quota is exhausted).
pub fn is_no_space(error: &std::io::Error) -> bool {
    if error.kind() == std::io::ErrorKind::StorageFull
        || error.kind() == std::io::ErrorKind::QuotaExceeded
    {
        return true;
    }
    // ENOSPC (28) and EDQUOT (122 on Linux, 69 on macOS).
    matches!(error.raw_os_error(), Some(28) | Some(122))
        || (cfg!(target_os = "macos") && error.raw_os_error() == Some(69))
}

/// Bytes available to us on the filesystem holding `dir`.
#[cfg(unix)]
pub fn available_bytes(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Bytes available to us on the filesystem holding `dir` (unknown on this platform).
#[cfg(not(unix))]
pub fn available_bytes(_dir: &Path) -> Option<u64> {
    None
}

/// Fail with a no-space error when `needed` bytes do not fit on the filesystem of `dir`.
pub fn ensure_space(dir: &Path, needed: u64) -> Result<(), FetchError> {
    match available_bytes(dir) {
        Some(free) if free < needed => Err(FetchError::failed(
            ErrorKind::NoSpace,
            format!(
                "no space left: {needed} bytes still to fetch, {free} bytes free on {}",
                dir.display()
            ),
        )),
        _ => Ok(()),
    }
}
