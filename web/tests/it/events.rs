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
    assert_eq!(first.id, Some(1));
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
    // Ids grow by one per message.
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

#[tokio::test]
async fn last_event_id_resumes_with_a_fresh_snapshot() {
    let web = Web::start().await;
    let added: Value = web
        .post(
            "/api/v1/jobs",
            json!({"source": "http://127.0.0.1:9/p.bin", "paused": true}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = added["jobs"][0]["id"].clone();
    let mut events = open(&web, Some("41")).await;
    let first = events.next().await;
    assert_eq!(first.event, "snapshot");
    assert_eq!(first.id, Some(42), "ids continue after Last-Event-ID");
    assert_eq!(
        first.data[0]["id"], id,
        "the snapshot carries what was missed"
    );
    let next = events.next().await;
    assert_eq!(next.id, Some(43));
}
