//! Bulk actions on the sessions selected in the list: `GET /bulk?action=…&id=…` shows
//! exactly which sessions the action will touch (their status and attempt as read now) and
//! changes nothing; its form posts `POST /bulk`, which acts on exactly those sessions, one
//! by one through `actions::perform`, and shows what happened to each.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use lifeboat::Id;
use serde::Serialize;

use super::actions::{Action, perform};
use super::auth::Signed;
use super::{Fail, render};
use crate::AppState;

/// The most sessions one bulk action takes (two pages of the list).
const BULK_MAX: usize = 100;
/// The largest bulk form accepted: 100 sessions with the longest ids fit in a fraction.
pub(crate) const BULK_BODY_MAX: usize = 64 * 1024;

#[derive(Serialize)]
struct BulkPage<'a> {
    base: &'a str,
    action: &'static str,
    label: &'static str,
    /// Before acting: the sessions the action will touch.
    targets: Vec<Target>,
    /// Before acting: selected sessions that no longer exist (left out of the form).
    gone: Vec<String>,
    /// After acting: what happened to each.
    results: Vec<Outcome>,
}

/// A selected session as it is now.
#[derive(Serialize)]
struct Target {
    id: String,
    title: Option<String>,
    status: &'static str,
    attempt: u32,
}

#[derive(Serialize)]
struct Outcome {
    id: String,
    done: bool,
    detail: String,
}

/// `GET /bulk?action=continue|complete|cancel&id=…&id=…`: the review. Needs `write`,
/// changes nothing. A selected session that no longer exists is named, not offered.
pub(crate) async fn review(State(state): State<AppState>, signed: Signed, uri: Uri) -> Response {
    let reviewed = async {
        signed.has_write_scope()?;
        let query = uri.query().unwrap_or_default().as_bytes();
        let (action, ids, _) = parse(query, Form::Review)?;
        let mut targets = Vec::with_capacity(ids.len());
        let mut gone = Vec::new();
        for (id, _) in ids {
            match state.lifeboat.session(&signed.tenant, &id).await {
                Ok(session) => targets.push(Target {
                    id: session.id.to_string(),
                    title: session.title,
                    status: session.status.as_str(),
                    attempt: session.attempt,
                }),
                Err(lifeboat::Error::NotFound { .. }) => gone.push(id.to_string()),
                Err(error) => return Err(Fail::from(error)),
            }
        }
        let context = BulkPage {
            base: &signed.base,
            action: action.name(),
            label: action.label(),
            targets,
            gone,
            results: Vec::new(),
        };
        Ok(render("bulk.html", StatusCode::OK, context))
    };
    reviewed
        .await
        .unwrap_or_else(|fail: Fail| fail.page(&signed.base))
}

/// `POST /bulk` with `action`, `confirm` and one `session=<id>@<attempt>` per session, as
/// the review's form sends them: acts on each, only while it is still at the attempt the
/// review showed, and lists the outcome of each.
pub(crate) async fn apply(State(state): State<AppState>, signed: Signed, body: Bytes) -> Response {
    let applied = async {
        signed.has_write_scope()?;
        let (action, targets, confirm) = parse(&body, Form::Apply)?;
        if !confirm {
            return Err(Fail::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Not confirmed",
                "a bulk action must be confirmed on its review page; nothing was changed",
            ));
        }
        let mut results = Vec::with_capacity(targets.len());
        for (id, attempt) in targets {
            // The review confirms a discard; a resume is not confirmed past `max_attempts`.
            let confirmed = matches!(action, Action::Cancel);
            let outcome = perform(&state, &signed, &id, action, confirmed, attempt).await;
            results.push(Outcome {
                id: id.to_string(),
                done: outcome.is_ok(),
                detail: match outcome {
                    Ok(()) => "done".to_owned(),
                    Err(fail) => fail.summary(),
                },
            });
        }
        let context = BulkPage {
            base: &signed.base,
            action: action.name(),
            label: action.label(),
            targets: Vec::new(),
            gone: Vec::new(),
            results,
        };
        Ok(render("bulk.html", StatusCode::OK, context))
    };
    applied
        .await
        .unwrap_or_else(|fail: Fail| fail.page(&signed.base))
}

/// Which form is read: the list's selection (`id=<id>`) or the review's (`session=<id>@<attempt>`).
#[derive(Clone, Copy, PartialEq)]
enum Form {
    Review,
    Apply,
}

/// The action, the sessions (each once, in the order given, with the attempt the review
/// showed) and whether `confirm` was sent.
type Parsed = (Action, Vec<(Id, Option<u32>)>, bool);

fn parse(form: &[u8], expected: Form) -> Result<Parsed, Fail> {
    let bad = |detail: String| Fail::new(StatusCode::BAD_REQUEST, "Bad bulk action", detail);
    let mut action = None;
    let mut targets: Vec<(Id, Option<u32>)> = Vec::new();
    let mut seen: HashMap<Id, Option<u32>> = HashMap::new();
    let mut confirm = false;
    for (name, value) in form_urlencoded::parse(form) {
        let (id, attempt) = match (name.as_ref(), expected) {
            ("action", _) => {
                let parsed = Action::parse_bulk(&value)
                    .ok_or_else(|| bad(format!("unknown action {value:?}")))?;
                action = Some(parsed);
                continue;
            }
            ("confirm", _) => {
                confirm = true;
                continue;
            }
            ("id", Form::Review) => (value.as_ref(), None),
            ("session", Form::Apply) => {
                let (id, attempt) = value
                    .rsplit_once('@')
                    .ok_or_else(|| bad(format!("{value:?} is not <id>@<attempt>")))?;
                let attempt = attempt
                    .parse::<u32>()
                    .map_err(|_| bad(format!("bad attempt in {value:?}")))?;
                (id, Some(attempt))
            }
            _ => continue,
        };
        let id = Id::parse(id).map_err(|e| bad(e.to_string()))?;
        match seen.get(&id) {
            Some(before) if *before == attempt => continue,
            Some(_) => return Err(bad(format!("session {id} is listed at two attempts"))),
            None => {}
        }
        if targets.len() == BULK_MAX {
            return Err(bad(format!(
                "more than {BULK_MAX} sessions selected; one bulk action takes at most {BULK_MAX}"
            )));
        }
        seen.insert(id.clone(), attempt);
        targets.push((id, attempt));
    }
    let action = action.ok_or_else(|| bad("no action chosen".to_owned()))?;
    if targets.is_empty() {
        return Err(Fail::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Nothing selected",
            "select at least one session in the list; nothing was changed",
        ));
    }
    Ok((action, targets, confirm))
}
