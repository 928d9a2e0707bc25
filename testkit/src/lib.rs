//! Dev-only helpers for mdl tests: a fault-injecting HTTP file server, mock hubs that follow
//! `shared/specs/`, and the test daemon helper that runs the real daemon in-process.

pub mod daemon;

pub mod fileserver;
pub use fileserver::{
    md5_hex, pseudo_random_bytes, sha256_hex, Behavior, Fault, FileServer, FileStats,
    RequestRecord, ServedFile,
};
pub mod hubs;
