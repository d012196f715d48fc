//! `GET /api/v1/events`: Server-Sent Events of the tenant's changes.
//!
//! A stream first catches up from the store's event log (after `Last-Event-ID`, or from
//! the newest event), then follows the live feed, which reads each commit's events once
//! for all subscribers and wakes a stream only for the events it wants. A stream that
//! falls behind its buffer goes back to the log; it never holds up a writer.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use lifeboat::{Event, EventFilter, FeedBatch, FellBehind, Lifeboat, Subscription, TenantId};
use lifeboat_api::{Problem, ProblemType};
use serde::Deserialize;

use crate::AppState;
use crate::auth::Credential;
use crate::error::ApiError;
use crate::extract::{ApiQuery, path_id};

/// Events read from the log per query.
const BATCH: u32 = 256;
/// A keep-alive comment this often, so proxies keep the stream open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a stream gathers live events before it writes them: one socket write for
/// every commit of a busy session would cost the server (and the client reading it) more
/// than the writes being reported.
const COALESCE: Duration = Duration::from_millis(20);
/// A stream writes at once when it has gathered this many bytes.
const CHUNK_MAX: usize = 64 * 1024;
/// How often a stream checks that its key or token still works.
const RECHECK: Duration = Duration::from_secs(1);

/// Filters of the event stream.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventQuery {
    /// Only this session's events.
    session_id: Option<String>,
    /// Only this project's events (its saves and its sessions').
    project_id: Option<String>,
}

/// An event as one SSE frame: `id:`, `event:`, and `data:` holding
/// `{seq, type, created_at, data}` on one line (JSON has no raw newlines).
fn render(event: &Event) -> String {
    let data = serde_json::json!({
        "seq": event.seq,
        "type": event.kind,
        "created_at": crate::convert::rfc3339(event.created_at),
        "data": event.data,
    });
    format!("id: {}\nevent: {}\ndata: {data}\n\n", event.seq, event.kind)
}

/// Counts an open stream against its key while it lives.
struct StreamSlot {
    open: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    key: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

struct Cursor {
    _slot: StreamSlot,
    lifeboat: Lifeboat,
    tenant: TenantId,
    filter: EventFilter,
    after: i64,
    /// Reading the log (at the start, and after falling behind the live feed).
    catching_up: bool,
    feed: Subscription,
    closing: tokio::sync::watch::Receiver<bool>,
    /// When the stream last sent anything: a keep-alive is due `KEEP_ALIVE` after.
    sent_at: tokio::time::Instant,
    /// The key or token the stream was opened with, and when to check it again: a stream
    /// ends within [`RECHECK`] of its key's revocation or its token's expiry.
    credential: Credential,
    recheck_at: tokio::time::Instant,
}

impl Cursor {
    /// Adds the events of `batch` not sent yet.
    fn append(&mut self, batch: &FeedBatch, chunk: &mut String) {
        for fed in batch {
            let event = &fed.event;
            if event.seq > self.after {
                chunk.push_str(fed.rendered.get_or_init(|| render(event)));
                self.after = event.seq;
            }
        }
    }

    /// Gathers what else arrives within [`COALESCE`] (up to [`CHUNK_MAX`] bytes): one
    /// wake-up and one socket write for all of it, not one per commit.
    async fn gather(&mut self, chunk: &mut String) {
        tokio::select! {
            _ = tokio::time::sleep(COALESCE) => {}
            _ = self.closing.changed() => return,
        }
        while chunk.len() < CHUNK_MAX {
            match self.feed.try_next() {
                Ok(Some(batch)) => self.append(&batch, chunk),
                Ok(None) => return,
                Err(FellBehind) => return self.fell_behind(),
            }
        }
    }

    /// The live feed dropped this stream (its buffer was full): subscribe again first,
    /// then read the log from where the stream stands.
    fn fell_behind(&mut self) {
        self.feed = self
            .lifeboat
            .subscribe_events(&self.tenant, &self.filter, self.after);
        self.catching_up = true;
    }

    /// The next piece of the stream: every event of a log read or of a commit that this
    /// stream wants, as one chunk (one write to the socket), or a keep-alive comment.
    async fn next(mut self) -> Option<(Bytes, Cursor)> {
        loop {
            if *self.closing.borrow() {
                return None;
            }
            if tokio::time::Instant::now() >= self.recheck_at {
                match self.credential.still_valid(&self.lifeboat).await {
                    Ok(true) => {}
                    Ok(false) => return None,
                    Err(error) => tracing::warn!(%error, "the event stream cannot check its key"),
                }
                self.recheck_at = tokio::time::Instant::now() + RECHECK;
            }
            let mut chunk = String::new();
            if self.catching_up {
                match self
                    .lifeboat
                    .events(&self.tenant, self.after, &self.filter, BATCH)
                    .await
                {
                    Ok(events) if !events.is_empty() => {
                        for event in &events {
                            chunk.push_str(&render(event));
                            self.after = event.seq;
                        }
                    }
                    Ok(_) => self.catching_up = false,
                    Err(error) => {
                        tracing::warn!(%error, "the event stream cannot read the log");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            } else {
                tokio::select! {
                    received = self.feed.next() => match received {
                        Some(batch) => {
                            self.append(&batch, &mut chunk);
                            self.gather(&mut chunk).await;
                        }
                        None => self.fell_behind(),
                    },
                    _ = self.closing.changed() => {}
                    _ = tokio::time::sleep_until(self.recheck_at) => {}
                    _ = tokio::time::sleep_until(self.sent_at + KEEP_ALIVE) => {
                        chunk.push_str(":\n\n");
                    }
                }
            }
            if !chunk.is_empty() {
                self.sent_at = tokio::time::Instant::now();
                return Some((Bytes::from(chunk), self));
            }
        }
    }
}

/// Server-Sent Events: `project.saved`, `session.status`, `session.stalled`,
/// `checkpoint.created`. Each has `id:` (its position); reconnect with `Last-Event-ID` to
/// receive what was missed. Without it the stream starts at the newest event.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    responses((status = 200, content_type = "text/event-stream", description = "The event stream"),
        (status = 400, body = Problem)))]
pub(crate) async fn events(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Extension(caller): Extension<crate::auth::Caller>,
    ApiQuery(query): ApiQuery<EventQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let filter = EventFilter {
        session_id: query.session_id.as_deref().map(path_id).transpose()?,
        project_id: query.project_id.as_deref().map(path_id).transpose()?,
    };
    let after = last_event_id(&headers)?;
    stream(&state, tenant, caller, filter, after).await
}

/// The `Last-Event-ID` header as a position in the log, if sent.
pub(crate) fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    headers
        .get("last-event-id")
        .map(|raw| {
            raw.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        ProblemType::MALFORMED_REQUEST,
                        "Last-Event-ID must be the id of an event",
                    )
                })
        })
        .transpose()
}

/// The event stream of `tenant`'s events matching `filter`, after `after` (or from the
/// newest event), for `caller`: it holds one of the key's stream slots (429 when none is
/// free) and ends within [`RECHECK`] of the key's revocation. The API's `/api/v1/events`
/// and the dashboard's `/live/events` both answer with it.
pub(crate) async fn stream(
    state: &AppState,
    tenant: TenantId,
    caller: crate::auth::Caller,
    filter: EventFilter,
    after: Option<i64>,
) -> Result<Response, ApiError> {
    let slot = {
        let mut open = state.open_streams.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(caller.actor.clone()).or_insert(0);
        if *count >= state.streams_per_key {
            return Err(ApiError::new(
                ProblemType::RATE_LIMITED,
                format!(
                    "this key already holds {} open event streams; close one first",
                    state.streams_per_key
                ),
            )
            .with_header(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            ));
        }
        *count += 1;
        StreamSlot {
            open: Arc::clone(&state.open_streams),
            key: caller.actor.clone(),
        }
    };
    // Every event committed before the stream was asked for is numbered first: a client
    // answered a write finds its events after its `Last-Event-ID`, and a stream without one
    // starts after them. The catch-up's later pages, and what the feed brings, need no wait.
    state.lifeboat.number_events().await;
    let after = match after {
        Some(after) => after,
        None => state.lifeboat.newest_event().await?,
    };
    // Subscribed before the catch-up read, so nothing committed in between is missed.
    let feed = state.lifeboat.subscribe_events(&tenant, &filter, after);
    let cursor = Cursor {
        _slot: slot,
        feed,
        closing: state.closing.subscribe(),
        lifeboat: state.lifeboat.clone(),
        tenant,
        filter,
        after,
        catching_up: true,
        sent_at: tokio::time::Instant::now(),
        credential: caller.credential,
        recheck_at: tokio::time::Instant::now() + RECHECK,
    };
    let stream = futures_util::stream::unfold(cursor, |cursor| async move {
        cursor
            .next()
            .await
            .map(|(chunk, cursor)| (Ok::<_, Infallible>(chunk), cursor))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
