//! The projects pages: the list (`/projects`), one project with its revision history
//! (`/projects/{id}`), the JSON Patch between two revisions (`/projects/{id}/diff`) and
//! restore (`POST /projects/{id}/restore`), through the same engine calls as the API,
//! within the signed-in key's tenant.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use lifeboat::{Id, PageRequest, Preconditions, ProjectEdit, ProjectInfo, RevisionInfo};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::{Signed, redirect};
use super::pages::{ago, query_string};
use super::{Fail, render};
use crate::AppState;
use crate::auth::audit;
use crate::convert::rfc3339;

/// Projects on one page of the list, and revisions on one page of a project's history.
const ROWS_PER_PAGE: u32 = 50;

/// `?cursor=` of a paged page.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Paging {
    #[serde(default)]
    cursor: String,
}

#[derive(Serialize)]
struct ProjectsPage<'a> {
    base: &'a str,
    rows: Vec<ProjectRow>,
    next_href: Option<String>,
}

#[derive(Serialize)]
struct ProjectRow {
    id: String,
    title: Option<String>,
    revision: u64,
    size_bytes: u64,
    updated_ago: String,
    updated_at: String,
}

/// `GET /projects`: the tenant's projects, newest first, paged with the store's cursor.
pub(crate) async fn projects(
    State(state): State<AppState>,
    signed: Signed,
    Query(paging): Query<Paging>,
) -> Response {
    let page = PageRequest {
        limit: ROWS_PER_PAGE,
        cursor: Some(paging.cursor).filter(|c| !c.is_empty()),
    };
    let found = match state.lifeboat.projects(&signed.tenant, &page).await {
        Ok(found) => found,
        Err(error) => return Fail::from(error).page(&signed.base),
    };
    let now = state.lifeboat.now().0;
    let row = |p: ProjectInfo| ProjectRow {
        id: p.id.to_string(),
        title: p.title,
        revision: p.revision,
        size_bytes: p.size_bytes,
        updated_ago: ago(now.saturating_sub(p.updated_at.0)),
        updated_at: rfc3339(p.updated_at),
    };
    let next_href = found.next_cursor.map(|c| {
        format!(
            "{}/projects?{}",
            signed.base,
            query_string(&[("cursor", &c)])
        )
    });
    let context = ProjectsPage {
        base: &signed.base,
        rows: found.items.into_iter().map(row).collect(),
        next_href,
    };
    render("projects.html", StatusCode::OK, context)
}

#[derive(Serialize)]
struct ProjectPage<'a> {
    base: &'a str,
    can_write: bool,
    project: ProjectRow,
    state: String,
    revisions: Vec<RevisionRow>,
    next_href: Option<String>,
    diff_from: u64,
}

#[derive(Serialize)]
struct RevisionRow {
    revision: u64,
    size_bytes: u64,
    created_at: String,
}

/// `GET /projects/{id}`: the current state, the revisions (newest first, paged), the
/// compare form and, for a key with `write`, a restore form per earlier revision.
pub(crate) async fn project(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    Query(paging): Query<Paging>,
) -> Response {
    match project_page(&state, &signed, &id, paging).await {
        Ok(page) => page,
        Err(fail) => fail.page(&signed.base),
    }
}

async fn project_page(
    state: &AppState,
    signed: &Signed,
    id: &str,
    paging: Paging,
) -> Result<Response, Fail> {
    let id = parse_id(id)?;
    let project = state.lifeboat.project(&signed.tenant, &id, None).await?;
    let page = PageRequest {
        limit: ROWS_PER_PAGE,
        cursor: Some(paging.cursor).filter(|c| !c.is_empty()),
    };
    let revisions = state.lifeboat.revisions(&signed.tenant, &id, &page).await?;
    let next_href = revisions.next_cursor.map(|c| {
        let query = query_string(&[("cursor", &c)]);
        format!("{}/projects/{id}?{query}", signed.base)
    });
    let revision_row = |r: &RevisionInfo| RevisionRow {
        revision: r.revision,
        size_bytes: r.size_bytes,
        created_at: rfc3339(r.created_at),
    };
    let now = state.lifeboat.now().0;
    let context = ProjectPage {
        base: &signed.base,
        can_write: signed.caller.may("write"),
        state: pretty(&project.state)?,
        project: ProjectRow {
            id: project.id.to_string(),
            title: project.title,
            revision: project.revision,
            size_bytes: project.size_bytes,
            updated_ago: ago(now.saturating_sub(project.updated_at.0)),
            updated_at: rfc3339(project.updated_at),
        },
        revisions: revisions.items.iter().map(revision_row).collect(),
        next_href,
        diff_from: project.revision.saturating_sub(1).max(1),
    };
    Ok(render("project.html", StatusCode::OK, context))
}

/// `?from=N&to=M` of the diff page; empty means previous and current.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct DiffQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

#[derive(Serialize)]
struct DiffPage<'a> {
    base: &'a str,
    id: String,
    from: u64,
    to: u64,
    ops: Vec<OpRow>,
    raw: String,
}

/// One operation of the patch: `add`, `remove` or `replace`, its pointer and its value.
#[derive(Serialize)]
struct OpRow {
    op: String,
    path: String,
    value: Option<String>,
}

/// `GET /projects/{id}/diff?from=N&to=M`: the JSON Patch (RFC 6902) that turns revision
/// N's state into revision M's, as a table and as the raw patch.
pub(crate) async fn diff(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    Query(query): Query<DiffQuery>,
) -> Response {
    match diff_page(&state, &signed, &id, &query).await {
        Ok(page) => page,
        Err(fail) => fail.page(&signed.base),
    }
}

async fn diff_page(
    state: &AppState,
    signed: &Signed,
    id: &str,
    query: &DiffQuery,
) -> Result<Response, Fail> {
    let id = parse_id(id)?;
    let tenant = &signed.tenant;
    let current = state.lifeboat.project(tenant, &id, None).await?;
    let to = revision_or(&query.to, current.revision)?;
    let from = revision_or(&query.from, to.saturating_sub(1).max(1))?;
    let before = state.lifeboat.project(tenant, &id, Some(from)).await?;
    let after = state.lifeboat.project(tenant, &id, Some(to)).await?;
    let patch =
        serde_json::to_value(json_patch::diff(&before.state, &after.state)).map_err(|e| {
            Fail::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Cannot diff",
                e.to_string(),
            )
        })?;
    let ops = match &patch {
        Value::Array(ops) => ops
            .iter()
            .map(|op| {
                let text = |field: &str| op[field].as_str().unwrap_or_default().to_owned();
                let value = op.get("value").map(pretty).transpose()?;
                Ok(OpRow {
                    op: text("op"),
                    path: text("path"),
                    value,
                })
            })
            .collect::<Result<Vec<_>, Fail>>()?,
        _ => Vec::new(),
    };
    let context = DiffPage {
        base: &signed.base,
        id: id.to_string(),
        from,
        to,
        ops,
        raw: pretty(&patch)?,
    };
    Ok(render("diff.html", StatusCode::OK, context))
}

/// The restore form: the revision to restore and the confirmation box.
#[derive(Debug, Deserialize)]
pub(crate) struct RestoreForm {
    #[serde(default)]
    revision: String,
    #[serde(default)]
    confirm: Option<String>,
}

/// `POST /projects/{id}/restore`: the state of `revision` as a new revision, through the
/// engine call the API's restore uses, audited as it audits it; needs `write` and
/// `confirm`; 303 back to the project.
pub(crate) async fn restore(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<RestoreForm>,
) -> Response {
    match run_restore(&state, &signed, &id, form).await {
        Ok(()) => redirect(&signed.base, &format!("/projects/{id}"), None),
        Err(fail) => fail.page(&signed.base),
    }
}

async fn run_restore(
    state: &AppState,
    signed: &Signed,
    id: &str,
    form: RestoreForm,
) -> Result<(), Fail> {
    signed.may_write(state)?;
    let id = parse_id(id)?;
    let revision = revision_or(&form.revision, 0)?;
    if form.confirm.is_none() {
        return Err(Fail::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Not confirmed",
            "tick the confirmation box to do this; nothing was changed",
        ));
    }
    let tenant = &signed.tenant;
    let edit = ProjectEdit::Restore(revision);
    state
        .lifeboat
        .save_project(tenant, &id, edit, Preconditions::default(), None)
        .await?;
    let detail = json!({"revision": revision, "via": "dashboard"});
    let resource = format!("project:{id}");
    audit(
        state,
        tenant,
        &signed.caller,
        "project.restore",
        resource,
        detail,
    )
    .await;
    Ok(())
}

fn parse_id(raw: &str) -> Result<Id, Fail> {
    Id::parse(raw).map_err(|e| Fail::new(StatusCode::BAD_REQUEST, "Bad id", e.to_string()))
}

/// A revision number (a positive integer), or `default` when `raw` is empty.
fn revision_or(raw: &str, default: u64) -> Result<u64, Fail> {
    match raw.trim() {
        "" if default >= 1 => Ok(default),
        text => text.parse::<u64>().ok().filter(|r| *r >= 1).ok_or_else(|| {
            let detail = format!("a revision is a positive integer, not {raw:?}");
            Fail::new(StatusCode::BAD_REQUEST, "Bad revision", detail)
        }),
    }
}

/// Indented JSON, for a `<pre>` (the template escapes it).
fn pretty(value: &Value) -> Result<String, Fail> {
    serde_json::to_string_pretty(value).map_err(|e| {
        Fail::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Cannot show",
            e.to_string(),
        )
    })
}
