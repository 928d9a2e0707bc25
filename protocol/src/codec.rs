//! The encodings of a frame's payload, and the one file that names the binary one (bincode 2,
//! through serde).
//!
//! A connection speaks one [`Codec`] for its whole life: bincode (what `mdlctl` and the Rust
//! [`crate::Client`] use) or JSON (for apps in other languages). Both are the serde encoding of
//! the same `Request` / `Response` / `Event` types, so nothing is written twice and the
//! append-only rules hold for both. The daemon picks the codec from the first payload byte of
//! the first frame ([`Codec::detect`]): `{` is JSON, anything else bincode. That cannot be
//! ambiguous: a bincode `Hello` starts with its magic, `m`.
//!
//! Everything else encodes and decodes through this module, so an encoding can only change
//! here, and a change shows up in the golden fixtures.

use serde::{de::DeserializeOwned, Serialize};

use crate::connection::MAX_FRAME_LEN;
use crate::response::Response;
use crate::types::JobInfo;

/// Why a payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The bytes are not a valid message of the expected type.
    #[error("cannot decode message: {0}")]
    Decode(String),
    /// The bytes decoded but left bytes unread: the peer sent something else.
    #[error("message has {0} trailing bytes")]
    Trailing(usize),
}

/// How a connection's payloads are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Codec {
    /// bincode 2 (standard configuration, varint integers), through serde.
    #[default]
    Bincode,
    /// JSON: serde's encoding of the same types (externally tagged enums, UTF-8, one document
    /// per frame).
    Json,
}

impl Codec {
    /// The codec a connection speaks, from the payload of its first frame: JSON when it starts
    /// with `{`, bincode otherwise.
    pub fn detect(first_payload: &[u8]) -> Codec {
        if first_payload.first() == Some(&b'{') {
            Codec::Json
        } else {
            Codec::Bincode
        }
    }

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Bincode => "bincode",
            Codec::Json => "json",
        }
    }

    /// Encode a value as one frame's payload.
    pub fn encode<T: Serialize>(self, value: &T) -> Result<Vec<u8>, CodecError> {
        match self {
            Codec::Bincode => encode(value),
            Codec::Json => serde_json::to_vec(value).map_err(|e| CodecError::Encode(e.to_string())),
        }
    }

    /// Encode the message `wrap` builds around a list of jobs (`Response::Jobs`, a part, a
    /// snapshot event) with `jobs` as that list. In bincode the jobs' bytes are copied as they
    /// are, never decoded: the payload is the one `wrap(jobs.decode())` encodes to. In JSON
    /// they are decoded and encoded again.
    pub fn encode_with_jobs(
        self,
        jobs: &EncodedJobs,
        wrap: impl Fn(Vec<JobInfo>) -> Response,
    ) -> Result<Vec<u8>, CodecError> {
        if self == Codec::Bincode {
            // The list is the last thing the message encodes, so the message around an empty
            // one ends with its length, 0: the length and the jobs go in its place.
            let mut payload = encode(&wrap(Vec::new()))?;
            if payload.pop() == Some(0) {
                payload.reserve(9 + jobs.bytes.len());
                payload.extend(encode(&(jobs.len() as u64))?);
                payload.extend_from_slice(&jobs.bytes);
                return Ok(payload);
            }
        }
        self.encode(&wrap(jobs.decode()?))
    }

    /// Decode one frame's payload; the whole payload must be consumed (trailing whitespace is
    /// allowed in JSON).
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        match self {
            Codec::Bincode => decode(bytes),
            // The frame cap bounds what serde_json can allocate, and its recursion limit
            // bounds nesting.
            Codec::Json => {
                serde_json::from_slice(bytes).map_err(|e| CodecError::Decode(e.to_string()))
            }
        }
    }
}

fn config() -> impl bincode::config::Config {
    // The limit stops a length inside a payload (a Vec or String header) from making the
    // decoder allocate more than one frame could ever carry.
    bincode::config::standard().with_limit::<{ MAX_FRAME_LEN }>()
}

/// The configuration for jobs this side encoded itself ([`EncodedJobs`]): one job may be
/// larger than a frame (it is then sent without its files), so the limit is far above it.
fn own_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 1 << 30 }>()
}

/// Encode a value as one frame's payload in bincode.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decode one bincode frame's payload; the whole payload must be consumed.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

/// Jobs encoded one after another, each as [`encode`] gives a [`JobInfo`]: a list the daemon
/// sends without decoding the views it keeps of its finished jobs
/// ([`Codec::encode_with_jobs`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedJobs {
    /// The encodings, one after another.
    bytes: Vec<u8>,
    /// Where each job's encoding ends in `bytes`.
    ends: Vec<usize>,
}

impl EncodedJobs {
    /// No jobs.
    pub fn new() -> Self {
        Self::default()
    }

    /// These jobs, encoded.
    pub fn from_jobs(jobs: &[JobInfo]) -> Result<Self, CodecError> {
        let mut encoded = Self::new();
        for job in jobs {
            encoded.push(job)?;
        }
        Ok(encoded)
    }

    /// Add a job at the end.
    pub fn push(&mut self, job: &JobInfo) -> Result<(), CodecError> {
        bincode::serde::encode_into_std_write(job, &mut self.bytes, own_config())
            .map_err(|e| CodecError::Encode(e.to_string()))?;
        self.ends.push(self.bytes.len());
        Ok(())
    }

    /// Add a job's encoding as [`encode`] gave it for a [`JobInfo`], at the end. The caller
    /// vouches for the bytes (the daemon keeps a checksum beside each): they are sent as they
    /// are, and one damaged job would make the peer refuse the whole frame.
    pub fn push_encoded(&mut self, job: &[u8]) {
        self.bytes.extend_from_slice(job);
        self.ends.push(self.bytes.len());
    }

    /// How many jobs.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True without jobs.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The jobs from `at` on, taken off the end (as `Vec::split_off`).
    pub fn split_off(&mut self, at: usize) -> EncodedJobs {
        let at = at.min(self.len());
        let start = match at {
            0 => 0,
            at => self.ends[at - 1],
        };
        let bytes = self.bytes.split_off(start);
        let ends = self
            .ends
            .split_off(at)
            .into_iter()
            .map(|end| end - start)
            .collect();
        EncodedJobs { bytes, ends }
    }

    /// Add `other`'s jobs at the end.
    pub fn append(&mut self, other: EncodedJobs) {
        let offset = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.ends
            .extend(other.ends.into_iter().map(|end| end + offset));
    }

    /// The jobs, decoded.
    pub fn decode(&self) -> Result<Vec<JobInfo>, CodecError> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let bytes = &self.bytes[start..end];
                start = end;
                match bincode::serde::decode_from_slice(bytes, own_config()) {
                    Ok((job, used)) if used == bytes.len() => Ok(job),
                    Ok((_, used)) => Err(CodecError::Trailing(bytes.len() - used)),
                    Err(e) => Err(CodecError::Decode(e.to_string())),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::Hello;
    use crate::request::Request;

    #[test]
    fn the_first_byte_picks_the_codec() {
        let bincode_hello = Codec::Bincode.encode(&Hello::new("x")).unwrap();
        let json_hello = Codec::Json.encode(&Hello::new("x")).unwrap();
        assert_eq!(Codec::detect(&bincode_hello), Codec::Bincode);
        assert_eq!(Codec::detect(&json_hello), Codec::Json);
        assert_eq!(Codec::detect(b""), Codec::Bincode);
    }

    #[test]
    fn json_is_serdes_externally_tagged_form() {
        assert_eq!(Codec::Json.encode(&Request::List).unwrap(), br#""List""#);
        assert_eq!(
            Codec::Json.encode(&Request::Status(u64::MAX)).unwrap(),
            br#"{"Status":18446744073709551615}"#
        );
        let back: Request = Codec::Json.decode(b" {\"Cancel\": 3}\n").unwrap();
        assert_eq!(back, Request::Cancel(3));
        assert!(Codec::Json.decode::<Request>(b"{\"Cancel\": 3} x").is_err());
        assert!(Codec::Json
            .decode::<Request>(b"{\"Frobnicate\": 3}")
            .is_err());
    }

    fn job(id: u64) -> JobInfo {
        JobInfo {
            id,
            source: format!("http://127.0.0.1/{id}.bin"),
            state: crate::JobState::Completed,
            priority: -(id as i32),
            dest: "/data".into(),
            bytes_done: id * 1000,
            bytes_total: Some(id * 1000),
            error: None,
            files: (0..id % 3)
                .map(|i| crate::FileInfo {
                    path: format!("/data/{id}-{i}.bin"),
                    size: Some(i),
                    bytes_done: i,
                    state: crate::FileState::Completed,
                    sha256: Some("ab".repeat(32)),
                    endpoint: None,
                    note: Some("é".into()),
                })
                .collect(),
            created_ms: id,
            finished_ms: Some(id + 1),
            revision: None,
        }
    }

    /// Every message that carries a list encodes to the same bytes from encoded jobs as from
    /// the jobs themselves, at list lengths around bincode's varint steps, in both codecs.
    #[test]
    fn a_list_of_encoded_jobs_frames_to_the_payload_of_the_decoded_list() {
        type Wrap = fn(Vec<JobInfo>) -> Response;
        let wraps: [Wrap; 4] = [
            Response::Jobs,
            Response::JobsPart,
            |jobs| Response::Event(crate::Event::Snapshot(jobs)),
            |jobs| Response::Event(crate::Event::SnapshotPart(jobs)),
        ];
        for n in [0, 1, 250, 251, 252, 65_536] {
            let jobs: Vec<JobInfo> = (0..n).map(job).collect();
            let mut encoded = EncodedJobs::new();
            for (i, job) in jobs.iter().enumerate() {
                // Half pushed as values, half as encodings.
                match i % 2 {
                    0 => encoded.push(job).unwrap(),
                    _ => encoded.push_encoded(&encode(job).unwrap()),
                }
            }
            assert_eq!(encoded.len(), n as usize);
            assert_eq!(encoded.decode().unwrap(), jobs);
            // JSON decodes and encodes again: the long lists check bincode's length steps.
            let codecs: &[Codec] = match n {
                0..1000 => &[Codec::Bincode, Codec::Json],
                _ => &[Codec::Bincode],
            };
            for wrap in wraps {
                for &codec in codecs {
                    assert_eq!(
                        codec.encode_with_jobs(&encoded, wrap).unwrap(),
                        codec.encode(&wrap(jobs.clone())).unwrap(),
                        "{codec:?}, {n} jobs"
                    );
                }
            }
        }
    }

    #[test]
    fn encoded_jobs_split_and_join_at_job_boundaries() {
        let jobs: Vec<JobInfo> = (0..10).map(job).collect();
        for at in [0, 1, 5, 9, 10, 11] {
            let mut head = EncodedJobs::from_jobs(&jobs).unwrap();
            let tail = head.split_off(at);
            let at = at.min(10);
            assert_eq!(head.decode().unwrap(), jobs[..at]);
            assert_eq!(tail.decode().unwrap(), jobs[at..]);
            head.append(tail);
            assert_eq!(head, EncodedJobs::from_jobs(&jobs).unwrap());
        }
    }
}
