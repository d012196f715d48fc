//! `GET /api/v1/events`: Server-Sent Events of the tenant's changes.
//!
//! Events are read from the store's event log after each commit, so a slow subscriber
//! only falls behind in the log; it never holds up a writer. `Last-Event-ID` resumes
//! after that event (within the replay window of the log).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use lifeboat::{Event, EventFilter, Lifeboat, TenantId};
use lifeboat_api::{Problem, ProblemType};
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiQuery, path_id};

/// Events read from the log per query.
const BATCH: u32 = 256;
/// A keep-alive comment this often, so proxies keep the stream open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Filters of the event stream.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventQuery {
    /// Only this session's events.
    session_id: Option<String>,
    /// Only this project's events (its saves and its sessions').
    project_id: Option<String>,
}

struct Cursor {
    lifeboat: Lifeboat,
    tenant: TenantId,
    filter: EventFilter,
    after: i64,
    pending: VecDeque<Event>,
    commits: tokio::sync::watch::Receiver<u64>,
}

impl Cursor {
    /// The next event, waiting for a commit when the log has nothing new.
    async fn next(mut self) -> Option<(SseEvent, Cursor)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.after = event.seq;
                let data = serde_json::json!({
                    "seq": event.seq,
                    "type": event.kind,
                    "created_at": crate::convert::rfc3339(event.created_at),
                    "data": event.data,
                });
                let sse = SseEvent::default()
                    .id(event.seq.to_string())
                    .event(event.kind.clone())
                    .data(data.to_string());
                return Some((sse, self));
            }
            // Mark the current commit count as seen before reading, so a commit that
            // lands during the read wakes the next wait.
            self.commits.borrow_and_update();
            match self
                .lifeboat
                .events(&self.tenant, self.after, &self.filter, BATCH)
                .await
            {
                Ok(events) if !events.is_empty() => self.pending.extend(events),
                Ok(_) => {
                    if self.commits.changed().await.is_err() {
                        return None;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "the event stream cannot read the log");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
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
    ApiQuery(query): ApiQuery<EventQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let filter = EventFilter {
        session_id: query.session_id.as_deref().map(path_id).transpose()?,
        project_id: query.project_id.as_deref().map(path_id).transpose()?,
    };
    let after = match headers.get("last-event-id") {
        Some(raw) => raw
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .ok_or_else(|| {
                ApiError::new(
                    ProblemType::MALFORMED_REQUEST,
                    "Last-Event-ID must be the id of an event",
                )
            })?,
        None => state.lifeboat.newest_event().await?,
    };
    let cursor = Cursor {
        commits: state.lifeboat.subscribe(),
        lifeboat: state.lifeboat.clone(),
        tenant,
        filter,
        after,
        pending: VecDeque::new(),
    };
    let stream = futures_util::stream::unfold(cursor, |cursor| async move {
        cursor
            .next()
            .await
            .map(|(event, cursor)| (Ok(event), cursor))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}
