//! `GET /api/v1/events`: snapshot first, then every event, heartbeats, `Last-Event-ID`.

use std::time::Duration;

use futures::StreamExt;
use reqwest::header;
use serde_json::{json, Value};
use testkit::{pseudo_random_bytes, FileServer};

use crate::Web;

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct Sse {
    pub id: Option<u64>,
    pub event: String,
    pub data: Value,
}

/// Reads server-sent events from a response body.
pub struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        SseReader {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next event (comments skipped), within 10 s.
    pub async fn next(&mut self) -> Sse {
        tokio::time::timeout(Duration::from_secs(10), self.next_inner())
            .await
            .expect("an event within 10 s")
    }

    async fn next_inner(&mut self) -> Sse {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut sse = Sse {
                    id: None,
                    event: "message".into(),
                    data: Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        sse.id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        sse.event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if block
                    .lines()
                    .all(|l| l.starts_with(':') || l.starts_with("retry:"))
                {
                    continue;
                }
                sse.data = serde_json::from_str(&data).unwrap_or(Value::Null);
                return sse;
            }
            let chunk = self.body.next().await.expect("stream open").expect("chunk");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Events until one named `name` whose data passes `pred`.
    pub async fn until(&mut self, name: &str, pred: impl Fn(&Value) -> bool) -> Sse {
        loop {
            let sse = self.next().await;
            if sse.event == name && pred(&sse.data) {
                return sse;
            }
        }
    }
}

async fn open(web: &Web, last_event_id: Option<&str>) -> SseReader {
    let mut request = web
        .http()
        .get(web.url("/api/v1/events"))
        .bearer_auth(&web.token);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    SseReader::new(response)
}

#[tokio::test]
async fn snapshot_first_then_every_event_of_a_download() {
    let files = FileServer::start().await;
    let served = files.add("/e.bin", pseudo_random_bytes(512 * 1024, 4));
    let web = Web::start().await;
    let mut events = open(&web, None).await;
    let first = events.next().await;
    assert_eq!(first.event, "snapshot");
    assert!(first.id.is_some());
    assert_eq!(first.data, json!([]));

    let dest = web.daemon.downloads.join("events");
    let added: Value = web
        .post(
            "/api/v1/jobs",
            json!({"source": served.url, "dest": dest.display().to_string(), "sha256": served.sha256}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = added["jobs"][0]["id"].as_u64().unwrap();
    let queued = events.until("queued", |d| d["id"] == id).await;
    assert_eq!(queued.data["source"], served.url.as_str());
    let completed = events.until("completed", |d| d["id"] == id).await;
    assert_eq!(completed.data["state"], "completed");
    assert_eq!(completed.data["files"][0]["sha256"], served.sha256.as_str());
    // Ids grow with every message.
    assert!(completed.id.unwrap() > queued.id.unwrap());
}

#[tokio::test]
async fn heartbeats_arrive_while_nothing_happens() {
    let web = Web::start().await;
    let mut events = open(&web, None).await;
    assert_eq!(events.next().await.event, "snapshot");
    let beat = events.until("heartbeat", |_| true).await;
    assert!(beat.data["unix_ms"].as_u64().unwrap() > 0);
}

async fn add_paused(web: &Web, name: &str) -> u64 {
    let added: Value = web
        .post(
            "/api/v1/jobs",
            json!({"source": format!("http://127.0.0.1:9/{name}"), "paused": true}),
        )
        .await
        .json()
        .await
        .unwrap();
    added["jobs"][0]["id"].as_u64().unwrap()
}

/// The next message that is not a heartbeat.
async fn next_change(events: &mut SseReader) -> Sse {
    loop {
        let sse = events.next().await;
        if sse.event != "heartbeat" {
            return sse;
        }
    }
}

#[tokio::test]
async fn last_event_id_replays_exactly_what_came_after_it() {
    let web = Web::start().await;
    let mut events = open(&web, None).await;
    let snapshot = events.next().await;
    assert_eq!(snapshot.event, "snapshot");
    let first = add_paused(&web, "a.bin").await;
    let seen = events.until("queued", |d| d["id"] == first).await;
    let last_seen = seen.id.unwrap();
    // The connection drops; two more jobs are queued meanwhile.
    drop(events);
    let second = add_paused(&web, "b.bin").await;
    let third = add_paused(&web, "c.bin").await;

    let mut resumed = open(&web, Some(&last_seen.to_string())).await;
    let a = next_change(&mut resumed).await;
    assert_eq!(
        (a.event.as_str(), &a.data["id"]),
        ("queued", &json!(second)),
        "no snapshot, no repeat: {a:?}"
    );
    assert!(a.id.unwrap() > last_seen);
    let b = next_change(&mut resumed).await;
    assert_eq!(
        (b.event.as_str(), &b.data["id"]),
        ("queued", &json!(third)),
        "{b:?}"
    );
    assert!(b.id.unwrap() > a.id.unwrap());
    // Then live events, on the same stream.
    let fourth = add_paused(&web, "d.bin").await;
    let c = next_change(&mut resumed).await;
    assert_eq!(
        (c.event.as_str(), &c.data["id"]),
        ("queued", &json!(fourth)),
        "{c:?}"
    );

    // From the middle: only what came after that id.
    drop(resumed);
    let mut again = open(&web, Some(&a.id.unwrap().to_string())).await;
    let replayed = next_change(&mut again).await;
    assert_eq!(replayed.id, b.id, "{replayed:?}");
    assert_eq!(replayed.data["id"], json!(third));
    assert_eq!(next_change(&mut again).await.id, c.id);
}

#[tokio::test]
async fn an_id_no_longer_buffered_gets_resync_then_a_fresh_snapshot() {
    let web = Web::start().await;
    let id = add_paused(&web, "p.bin").await;
    let mut events = open(&web, Some("41")).await;
    let first = events.next().await;
    assert_eq!(first.event, "resync");
    assert_eq!(
        first.data,
        json!({"last_event_id": 41, "reason": "not_buffered"})
    );
    let snapshot = events.next().await;
    assert_eq!(snapshot.event, "snapshot");
    assert!(snapshot.id.unwrap() > first.id.unwrap());
    assert_eq!(
        snapshot.data[0]["id"], id,
        "the snapshot carries what was missed"
    );
    // Not a number: a fresh stream without resync.
    let mut plain = open(&web, Some("yesterday")).await;
    assert_eq!(plain.next().await.event, "snapshot");
}
