//! `GET /api/v1/events`: the daemon's event stream as `text/event-stream`.
//!
//! Each request opens one subscribed connection to mdld and forwards what it sends. Every SSE
//! message has `event:` set to the protocol [`Event`] variant's snake_case name (`snapshot`,
//! `queued`, `started`, `progress`, `verifying`, `completed`, `failed`, `paused`, `resumed`,
//! `cancelled`, `removed`, `updated`, `heartbeat`, `lagged`, `end`) and `data:` set to the
//! variant's payload as JSON (the same objects as the rest of the API), and an `id:` that
//! grows by one per message.
//!
//! **Resumption.** A client that reconnects with `Last-Event-ID: N` (browsers do this by
//! themselves) gets ids from N + 1 on, starting with a fresh `snapshot` of every job: the
//! daemon does not number or keep its events, so the missed ones cannot be replayed, and the
//! snapshot carries everything they would have changed. After `lagged` (this stream fell
//! behind the daemon) the stream subscribes again, so a new `snapshot` follows at once.
//! The daemon's own `heartbeat` events arrive when nothing else happens, and an SSE comment
//! keeps proxies from closing an idle connection.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use mdl_protocol::{Event, EventStream};

use crate::error::ApiError;
use crate::AppState;

/// How long a browser waits before reconnecting a dropped stream.
const RETRY: Duration = Duration::from_secs(2);

/// The interval of the keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The SSE name and JSON data of an event: the variant's snake_case name and its payload.
pub fn event_parts(event: &Event) -> (String, serde_json::Value) {
    match serde_json::to_value(event) {
        // A variant with a payload: {"Variant": payload}.
        Ok(serde_json::Value::Object(map)) if map.len() == 1 => {
            let (name, data) = map.into_iter().next().expect("one entry");
            (snake_case(&name), data)
        }
        // A unit variant: "Variant".
        Ok(serde_json::Value::String(name)) => (snake_case(&name), serde_json::Value::Null),
        _ => ("unknown".into(), serde_json::Value::Null),
    }
}

fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Where one SSE stream is.
struct Cursor {
    state: Arc<AppState>,
    events: Option<EventStream>,
    next_id: u64,
    done: bool,
}

impl Cursor {
    fn message(&mut self, name: &str, data: &serde_json::Value) -> SseEvent {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = SseEvent::default()
            .event(name)
            .id(id.to_string())
            .data(data.to_string());
        if name == "snapshot" {
            message = message.retry(RETRY);
        }
        message
    }

    /// The next SSE message, or `None` once the stream has ended.
    async fn next(&mut self) -> Option<SseEvent> {
        if self.done {
            return None;
        }
        let events = match &mut self.events {
            Some(events) => events,
            None => match subscribe(&self.state).await {
                Ok(events) => self.events.insert(events),
                Err(err) => return Some(self.fail(err)),
            },
        };
        match events.next().await {
            Ok(Some(event)) => {
                if matches!(event, Event::Lagged { .. }) {
                    // Subscribe again on the next call: it starts with a new snapshot.
                    self.events = None;
                }
                let (name, data) = event_parts(&event);
                Some(self.message(&name, &data))
            }
            Ok(None) => {
                self.done = true;
                Some(self.message("end", &serde_json::Value::Null))
            }
            Err(err) => Some(self.fail(err.into())),
        }
    }

    /// An `error` message (`{kind, message, hint}`), ending the stream; the browser reconnects.
    fn fail(&mut self, err: ApiError) -> SseEvent {
        self.done = true;
        let data = serde_json::to_value(&err).unwrap_or_default();
        self.message("error", &data)
    }
}

async fn subscribe(state: &AppState) -> Result<EventStream, ApiError> {
    Ok(state.client().await?.subscribe().await?)
}

/// `GET /events`.
pub async fn stream(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    // Subscribe before answering, so an unreachable daemon is a plain error reply.
    let events = subscribe(&state).await?;
    let cursor = Cursor {
        state,
        events: Some(events),
        next_id: last.saturating_add(1),
        done: false,
    };
    let stream = futures::stream::unfold(cursor, |mut cursor| async move {
        let message = cursor.next().await?;
        Some((Ok(message), cursor))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_name_and_payload() {
        let (name, data) = event_parts(&Event::Heartbeat { unix_ms: 5 });
        assert_eq!(name, "heartbeat");
        assert_eq!(data, serde_json::json!({"unix_ms": 5}));
        let (name, data) = event_parts(&Event::Removed(7));
        assert_eq!((name.as_str(), data), ("removed", serde_json::json!(7)));
        let (name, data) = event_parts(&Event::End);
        assert_eq!((name.as_str(), data), ("end", serde_json::Value::Null));
        let (name, _) = event_parts(&Event::Snapshot(Vec::new()));
        assert_eq!(name, "snapshot");
    }
}
