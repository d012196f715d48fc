//! The pages: the sessions list (`/sessions`) and one session (`/sessions/{id}`), read
//! through the same engine calls as the API, within the signed-in key's tenant.

use std::collections::VecDeque;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use lifeboat::{
    Asset, Checkpoint, Event, EventFilter, Id, Owner, PageRequest, Recovery, RecoveryOption,
    Session, SessionFilter, Status, TenantId, Timestamp,
};
use serde::{Deserialize, Serialize};

use super::auth::Signed;
use super::{Fail, render};
use crate::AppState;
use crate::convert::rfc3339;

/// Sessions on one page of the list.
const SESSIONS_PER_PAGE: u32 = 50;
/// Pages of sessions one text search reads at most before it shows what it found (with a
/// link to search on): a search never reads more than 1,000 sessions per request.
const TEXT_SCAN_PAGES_MAX: usize = 20;
/// Checkpoints and assets shown on a session's page (the first page of each).
const ITEMS_PER_SESSION_PAGE: u32 = 100;
/// Status changes shown in a session's history: the newest ones.
const HISTORY_MAX: usize = 200;
/// Events read per step while a session's history is gathered.
const HISTORY_READ: u32 = 1_000;

/// The list's filters, kept in the URL by its GET form.
#[derive(Debug, Default, Deserialize, Serialize)]
pub(crate) struct Filters {
    #[serde(default)]
    status: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    q: String,
    #[serde(default, skip_serializing)]
    cursor: String,
}

#[derive(Serialize)]
struct SessionsPage<'a> {
    base: &'a str,
    can_write: bool,
    counts: Vec<(&'static str, u64)>,
    statuses: Vec<&'static str>,
    filters: &'a Filters,
    rows: Vec<Row>,
    next_href: Option<String>,
}

/// A session as a row of the list (and the head of its own page).
#[derive(Serialize)]
struct Row {
    id: String,
    title: Option<String>,
    kind: String,
    project: Option<String>,
    status: &'static str,
    attempt: u32,
    max_attempts: u32,
    progress: String,
    stalled: bool,
    crash: Option<&'static str>,
    updated_ago: String,
    updated_at: String,
}

/// `GET /sessions`: counts by status, then the tenant's sessions, newest first, filtered
/// by status, kind and project in the store and by text (`q`) here (see `matching`).
pub(crate) async fn sessions(
    State(state): State<AppState>,
    signed: Signed,
    Query(filters): Query<Filters>,
) -> Response {
    match sessions_page(&state, &signed, &filters).await {
        Ok(page) => page,
        Err(fail) => fail.page(&signed.base),
    }
}

async fn sessions_page(
    state: &AppState,
    signed: &Signed,
    filters: &Filters,
) -> Result<Response, Fail> {
    let bad = |detail: String| Fail::new(StatusCode::BAD_REQUEST, "Bad filter", detail);
    let statuses = match filters.status.as_str() {
        "" => Vec::new(),
        raw => vec![Status::parse(raw).ok_or_else(|| bad(format!("unknown status {raw:?}")))?],
    };
    let project_id = match filters.project.as_str() {
        "" => None,
        raw => Some(Id::parse(raw).map_err(|e| bad(e.to_string()))?),
    };
    let filter = SessionFilter {
        statuses,
        project_id,
        kind: Some(filters.kind.clone()).filter(|k| !k.is_empty()),
    };
    let cursor = Some(filters.cursor.clone()).filter(|c| !c.is_empty());
    let stats = state.lifeboat.stats(&signed.tenant).await?;
    let (found, next_cursor) = matching(state, signed, &filter, &filters.q, cursor).await?;
    let now = state.lifeboat.now();
    let rows = found.iter().map(|s| row(s, now)).collect();
    let next_href = next_cursor.map(|cursor| {
        let pairs = [
            ("status", filters.status.as_str()),
            ("kind", &filters.kind),
            ("project", &filters.project),
            ("q", &filters.q),
            ("cursor", &cursor),
        ];
        format!("{}/sessions?{}", signed.base, query_string(&pairs))
    });
    let context = SessionsPage {
        base: &signed.base,
        can_write: signed.caller.may("write"),
        counts: stats
            .sessions
            .iter()
            .map(|(status, n)| (status.as_str(), *n))
            .collect(),
        statuses: Status::ALL.iter().map(|s| s.as_str()).collect(),
        filters,
        rows,
        next_href,
    };
    Ok(render("sessions.html", StatusCode::OK, context))
}

/// The sessions of the store's pages from `cursor` on that match `text` (in id or title,
/// ignoring case), and the cursor after the last page read. Without text that is one
/// page; with text, pages are read until one page's worth matches or
/// `TEXT_SCAN_PAGES_MAX` pages were read.
async fn matching(
    state: &AppState,
    signed: &Signed,
    filter: &SessionFilter,
    text: &str,
    mut cursor: Option<String>,
) -> Result<(Vec<Session>, Option<String>), Fail> {
    let text = text.to_lowercase();
    let mut found = Vec::new();
    for _ in 0..TEXT_SCAN_PAGES_MAX {
        let page = PageRequest {
            limit: SESSIONS_PER_PAGE,
            cursor,
        };
        let read = state
            .lifeboat
            .sessions(&signed.tenant, filter, &page)
            .await?;
        found.extend(read.items.into_iter().filter(|s| matches_text(s, &text)));
        cursor = read.next_cursor;
        if text.is_empty() || found.len() >= SESSIONS_PER_PAGE as usize || cursor.is_none() {
            break;
        }
    }
    Ok((found, cursor))
}

fn matches_text(session: &Session, lowercase: &str) -> bool {
    session.id.as_str().to_lowercase().contains(lowercase)
        || session
            .title
            .as_deref()
            .is_some_and(|t| t.to_lowercase().contains(lowercase))
}

#[derive(Serialize)]
struct SessionPage<'a> {
    base: &'a str,
    can_write: bool,
    session: Row,
    error: Option<String>,
    checkpoints: Vec<CheckpointRow>,
    more_checkpoints: bool,
    assets: Vec<AssetRow>,
    more_assets: bool,
    recovery: Option<Panel>,
    history: Vec<Change>,
    more_history: bool,
    verified: Option<&'a Verified>,
}

/// A status change of the session, from its `session.status` events: attempts and crashes
/// over time.
#[derive(Serialize)]
struct Change {
    at: String,
    status: String,
    previous: Option<String>,
    attempt: Option<u64>,
    crash: Option<String>,
}

/// What the Verify button found, shown on the page that answers it.
#[derive(Debug, Serialize)]
pub(super) struct Verified {
    pub(super) checkpoints: u64,
    pub(super) valid: u64,
    pub(super) assets: u64,
    pub(super) ok: u64,
    pub(super) missing: u64,
    pub(super) corrupt: u64,
}

#[derive(Serialize)]
struct CheckpointRow {
    seq: u64,
    attempt: u32,
    kind: &'static str,
    stage: Option<String>,
    valid: bool,
    pinned: Vec<String>,
    created_at: String,
}

#[derive(Serialize)]
struct AssetRow {
    name: String,
    size: u64,
    status: &'static str,
    verified_at: String,
}

/// The recovery panel: the assessment and the options offered.
#[derive(Serialize)]
struct Panel {
    can_recover: bool,
    confidence_percent: String,
    work_lost: String,
    crash: Option<&'static str>,
    detection_delay: Option<String>,
    resume_from: Option<u64>,
    batch_from: Option<u64>,
    missing_assets: Vec<String>,
    offers_continue: bool,
    offers_restart_batch: bool,
    offers_fresh_start: bool,
}

/// `GET /sessions/{id}`: the session, its checkpoint timeline, its assets and, when it
/// has stopped without finishing, the recovery panel.
pub(crate) async fn session(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
) -> Response {
    match session_page(&state, &signed, &id, None).await {
        Ok(page) => page,
        Err(fail) => fail.page(&signed.base),
    }
}

/// A session's page; with `verified`, what the Verify button just found above its assets.
pub(super) async fn session_page(
    state: &AppState,
    signed: &Signed,
    id: &str,
    verified: Option<&Verified>,
) -> Result<Response, Fail> {
    let id =
        Id::parse(id).map_err(|e| Fail::new(StatusCode::BAD_REQUEST, "Bad id", e.to_string()))?;
    let tenant = &signed.tenant;
    let session = state.lifeboat.session(tenant, &id).await?;
    let first = PageRequest {
        limit: ITEMS_PER_SESSION_PAGE,
        cursor: None,
    };
    let checkpoints = state.lifeboat.checkpoints(tenant, &id, &first).await?;
    let assets = state
        .lifeboat
        .assets(tenant, &Owner::Session(id.clone()), &first)
        .await?;
    let recoverable = matches!(
        session.status,
        Status::Incomplete | Status::Failed | Status::Paused
    );
    let recovery = if recoverable {
        Some(panel(&state.lifeboat.recovery(tenant, &id).await?))
    } else {
        None
    };
    let (history, more_history) = history(state, tenant, &id).await?;
    let context = SessionPage {
        base: &signed.base,
        can_write: signed.caller.may("write"),
        error: session.error.clone(),
        session: row(&session, state.lifeboat.now()),
        checkpoints: checkpoints.items.iter().map(checkpoint_row).collect(),
        more_checkpoints: checkpoints.next_cursor.is_some(),
        assets: assets.items.iter().map(asset_row).collect(),
        more_assets: assets.next_cursor.is_some(),
        recovery,
        history,
        more_history,
        verified,
    };
    Ok(render("session.html", StatusCode::OK, context))
}

fn row(s: &Session, now: Timestamp) -> Row {
    let progress = &s.progress;
    let progress = match (
        progress.percent,
        progress.completed_units,
        progress.total_units,
    ) {
        (Some(percent), _, _) => format!("{percent:.0}%"),
        (None, Some(done), Some(total)) => format!("{done}/{total}"),
        (None, Some(done), None) => done.to_string(),
        _ => String::new(),
    };
    Row {
        id: s.id.to_string(),
        title: s.title.clone(),
        kind: s.kind.clone(),
        project: s.project_id.as_ref().map(ToString::to_string),
        status: s.status.as_str(),
        attempt: s.attempt,
        max_attempts: s.max_attempts,
        progress,
        stalled: s.stalled,
        crash: s.crash.as_ref().map(|c| c.kind.as_str()),
        updated_ago: ago(now.0.saturating_sub(s.updated_at.0)),
        updated_at: rfc3339(s.updated_at),
    }
}

fn checkpoint_row(c: &Checkpoint) -> CheckpointRow {
    CheckpointRow {
        seq: c.seq,
        attempt: c.attempt,
        kind: c.kind.as_str(),
        stage: c.stage.clone(),
        valid: c.valid,
        pinned: c.assets.iter().map(|pin| pin.name.to_string()).collect(),
        created_at: rfc3339(c.created_at),
    }
}

fn asset_row(a: &Asset) -> AssetRow {
    AssetRow {
        name: a.name.to_string(),
        size: a.size,
        status: a.status.as_str(),
        verified_at: rfc3339(a.verified_at),
    }
}

/// The session's newest `HISTORY_MAX` status changes, oldest first, from every event the
/// log still holds for it; and whether older ones were left out.
async fn history(
    state: &AppState,
    tenant: &TenantId,
    id: &Id,
) -> Result<(Vec<Change>, bool), Fail> {
    let filter = EventFilter {
        session_id: Some(id.clone()),
        project_id: None,
    };
    let mut changes = VecDeque::new();
    let mut left_out = false;
    let mut after = 0;
    state.lifeboat.number_events().await;
    loop {
        let events = state
            .lifeboat
            .events(tenant, after, &filter, HISTORY_READ)
            .await?;
        for change in events.iter().filter_map(change) {
            if changes.len() == HISTORY_MAX {
                changes.pop_front();
                left_out = true;
            }
            changes.push_back(change);
        }
        match events.last() {
            Some(last) if events.len() == HISTORY_READ as usize => after = last.seq,
            _ => return Ok((changes.into(), left_out)),
        }
    }
}

/// A `session.status` event as a change; other events are not changes.
fn change(event: &Event) -> Option<Change> {
    if event.kind != "session.status" {
        return None;
    }
    let text = |name: &str| {
        event
            .data
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let status = text("status")?;
    // A session keeps its last crash after a recovery: it belongs to the change that stopped it.
    let stopped = matches!(status.as_str(), "incomplete" | "failed");
    Some(Change {
        at: rfc3339(event.created_at),
        crash: text("crash_type").filter(|_| stopped),
        status,
        previous: text("previous"),
        attempt: event.data.get("attempt").and_then(|v| v.as_u64()),
    })
}

fn panel(r: &Recovery) -> Panel {
    let offers = |option| r.assessment.offers.iter().any(|o| o.option == option);
    let crash = r.session.crash.as_ref();
    Panel {
        can_recover: r.assessment.can_recover,
        confidence_percent: format!("{:.0}%", r.assessment.confidence * 100.0),
        work_lost: duration(r.assessment.work_lost_ms),
        crash: crash.map(|c| c.kind.as_str()),
        detection_delay: crash.and_then(|c| {
            let expired = c.lease_expires_at?;
            let delay = c.detected_at.0.saturating_sub(expired.0);
            Some(duration(u64::try_from(delay).unwrap_or(0)))
        }),
        resume_from: r.resume_from.as_ref().map(|c| c.seq),
        batch_from: r.batch_from.as_ref().map(|c| c.seq),
        missing_assets: r.missing_assets.clone(),
        offers_continue: offers(RecoveryOption::Continue),
        offers_restart_batch: offers(RecoveryOption::RestartBatch),
        offers_fresh_start: offers(RecoveryOption::FreshStart),
    }
}

/// `1.2 s`, `3 min`, `2 h`, `4 d`.
pub(super) fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1_000.0),
        60_000..3_600_000 => format!("{} min", ms / 60_000),
        3_600_000..86_400_000 => format!("{} h", ms / 3_600_000),
        _ => format!("{} d", ms / 86_400_000),
    }
}

/// How long ago, coarsely: `just now`, `12 s ago`, `5 min ago`.
pub(super) fn ago(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(0..1_000) | Err(_) => "just now".to_owned(),
        Ok(1_000..60_000) => format!("{} s ago", ms / 1_000),
        Ok(ms) => format!("{} ago", duration(ms)),
    }
}

/// `a=1&b=2`, percent-encoding every byte but the unreserved ones; empty values left out.
pub(super) fn query_string(pairs: &[(&str, &str)]) -> String {
    let encode = |text: &str| {
        text.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| format!("{name}={}", encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}
