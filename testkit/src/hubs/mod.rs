//! Faithful mock servers of the model hubs mdl downloads from, for tests.
//!
//! Each mock follows its wire specification in `shared/specs/` (the "What a faithful mock
//! server must do" section of each), listens on `127.0.0.1:0` and runs a *second* listener
//! on another port for its CDN / storage host, so clients see two distinct hosts. The hosts,
//! the storage host and the methods every mock has are [`storage`] (each mock is a
//! [`storage::Mock`]):
//!
//! * [`huggingface::HfMock`]: Hub API + `/resolve/` and a CDN (`shared/specs/huggingface.md`).
//! * [`modelscope::MsMock`]: `/api/v1` with the PascalCase envelope and an OSS host
//!   (`shared/specs/modelscope.md`).
//! * [`civitai::CivitaiMock`]: `/api/v1`, `/api/download/models/{id}` and an S3-style storage
//!   host (`shared/specs/civitai.md`).
//!
//! All of them run on the serving core ([`crate::serve`]), record every request with its
//! headers per host ([`RequestRecord`]), so tests can assert that a token never reached the
//! storage host, and accept one-shot [`Fault`]s on their storage hosts (connection reset
//! mid-body, ignored Range, corrupt bytes).

pub mod civitai;
pub(crate) mod common;
pub mod huggingface;
pub mod modelscope;
pub mod storage;

pub use crate::content::{git_blob_sha1_hex, sha256_hex};
pub use crate::serve::{Fault, RequestRecord};
