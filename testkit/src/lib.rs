//! Dev-only helpers for mdl tests: a fault-injecting HTTP file server, mock hubs that follow
//! `shared/specs/`, and the test daemon helper that runs the real daemon in-process.
//!
//! Every mock host runs on one serving core ([`serve`]): one HTTP stack, one `Range` /
//! `If-Range` implementation, one [`Fault`] enum, one request log ([`RequestRecord`]) and
//! one body shaper.

pub mod content;
pub mod daemon;
pub mod fileserver;
pub mod hubs;
pub mod serve;
#[cfg(test)]
mod testing;

pub use content::{git_blob_sha1_hex, md5_hex, pseudo_random_bytes, sha256_hex};
pub use fileserver::{Behavior, FileServer, FileStats, ServedFile};
pub use serve::{Fault, RequestRecord};
