//! Bulk actions on the sessions selected in the list: `GET /bulk?action=…&id=…` shows
//! exactly which sessions the action will touch (their status and attempt as read now) and
//! changes nothing; its form posts `POST /bulk`, which acts on exactly those sessions, one
//! by one through `actions::perform`, and shows what happened to each.

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

#[derive(Serialize)]
struct BulkPage<'a> {
    base: &'a str,
    action: &'static str,
    label: &'static str,
    /// Before acting: the sessions the action will touch.
    targets: Vec<Target>,
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
/// changes nothing.
pub(crate) async fn review(State(state): State<AppState>, signed: Signed, uri: Uri) -> Response {
    let reviewed = async {
        if !signed.caller.may("write") {
            return Err(read_only());
        }
        let (action, ids, _) = parse(uri.query().unwrap_or_default().as_bytes())?;
        let mut targets = Vec::with_capacity(ids.len());
        for (id, _) in ids {
            let session = state.lifeboat.session(&signed.tenant, &id).await?;
            targets.push(Target {
                id: session.id.to_string(),
                title: session.title,
                status: session.status.as_str(),
                attempt: session.attempt,
            });
        }
        Ok(page(&signed, action, targets, Vec::new()))
    };
    reviewed
        .await
        .unwrap_or_else(|fail: Fail| fail.page(&signed.base))
}

/// `POST /bulk` with `action`, `confirm` and one `session=<id>@<attempt>` per session, as
/// the review's form sends them: acts on each (complete and discard only while the session
/// is still at the attempt the review showed) and lists the outcome of each.
pub(crate) async fn apply(State(state): State<AppState>, signed: Signed, body: Bytes) -> Response {
    let applied = async {
        if !signed.caller.may("write") {
            return Err(read_only());
        }
        let (action, targets, confirm) = parse(&body)?;
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
        Ok(page(&signed, action, Vec::new(), results))
    };
    applied
        .await
        .unwrap_or_else(|fail: Fail| fail.page(&signed.base))
}

fn page(signed: &Signed, action: Action, targets: Vec<Target>, results: Vec<Outcome>) -> Response {
    let context = BulkPage {
        base: &signed.base,
        action: action.name(),
        label: action.label(),
        targets,
        results,
    };
    render("bulk.html", StatusCode::OK, context)
}

fn read_only() -> Fail {
    Fail::new(
        StatusCode::FORBIDDEN,
        "Not allowed",
        "this key lacks the write scope; it may look, not act",
    )
}

/// The action, the sessions (`id=<id>` from the list, or `session=<id>@<attempt>` from the
/// review; each once, in the order given) and whether `confirm` was sent.
type Parsed = (Action, Vec<(Id, Option<u32>)>, bool);

fn parse(form: &[u8]) -> Result<Parsed, Fail> {
    let bad = |detail: String| Fail::new(StatusCode::BAD_REQUEST, "Bad bulk action", detail);
    let mut action = None;
    let mut targets: Vec<(Id, Option<u32>)> = Vec::new();
    let mut confirm = false;
    for (name, value) in form_urlencoded::parse(form) {
        let target = match name.as_ref() {
            "action" => {
                action = Some(
                    Action::parse_bulk(&value)
                        .ok_or_else(|| bad(format!("unknown action {value:?}")))?,
                );
                continue;
            }
            "confirm" => {
                confirm = true;
                continue;
            }
            "id" => (value.as_ref(), None),
            "session" => {
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
        let id = Id::parse(target.0).map_err(|e| bad(e.to_string()))?;
        if !targets.iter().any(|(seen, _)| *seen == id) {
            targets.push((id, target.1));
        }
    }
    let action = action.ok_or_else(|| bad("no action chosen".to_owned()))?;
    if targets.is_empty() {
        return Err(Fail::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Nothing selected",
            "select at least one session in the list; nothing was changed",
        ));
    }
    if targets.len() > BULK_MAX {
        return Err(bad(format!(
            "{} sessions selected; one bulk action takes at most {BULK_MAX}",
            targets.len()
        )));
    }
    Ok((action, targets, confirm))
}
