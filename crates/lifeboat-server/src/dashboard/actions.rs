//! The recovery panel's forms: recover (resume, restart batch, fresh start), complete and
//! cancel. Each acts through the engine call the API handler uses, for the signed-in
//! key's tenant, is audited as the API audits it, and redirects back to the session.
//! A key without `write` is refused before anything is read or changed.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use lifeboat::{FileChecks, Id, RecoveryOption, SessionOp};
use serde::Deserialize;
use serde_json::json;

use super::Fail;
use super::auth::{Signed, redirect};
use super::pages::{Verified, session_page};
use crate::AppState;
use crate::auth::audit;

/// What an action form sends. `confirm` is what the fresh start and discard dialogs
/// send; `attempt` is the attempt the page showed, so a form from a stale page cannot
/// recover, complete or discard a session that was recovered since (409).
#[derive(Debug, Deserialize)]
pub(crate) struct ActionForm {
    #[serde(default)]
    option: String,
    #[serde(default)]
    confirm: Option<String>,
    #[serde(default)]
    attempt: Option<String>,
}

/// What to do with a session.
#[derive(Debug, Clone, Copy)]
pub(super) enum Action {
    Recover(RecoveryOption),
    Complete,
    Cancel,
}

impl Action {
    /// The actions a bulk form offers, by the name it sends.
    pub(super) fn parse_bulk(name: &str) -> Option<Action> {
        match name {
            "continue" => Some(Action::Recover(RecoveryOption::Continue)),
            "complete" => Some(Action::Complete),
            "cancel" => Some(Action::Cancel),
            _ => None,
        }
    }

    /// The name a bulk form sends.
    pub(super) fn name(self) -> &'static str {
        match self {
            Action::Recover(option) => option.as_str(),
            Action::Complete => "complete",
            Action::Cancel => "cancel",
        }
    }

    /// What a person reads on the button.
    pub(super) fn label(self) -> &'static str {
        match self {
            Action::Recover(RecoveryOption::Continue) => "Resume",
            Action::Recover(RecoveryOption::RestartBatch) => "Restart batch",
            Action::Recover(RecoveryOption::FreshStart) => "Fresh start",
            Action::Complete => "Mark complete",
            Action::Cancel => "Discard",
        }
    }
}

/// `POST /sessions/{id}/recover` with `option` (`continue`, `restart_batch`,
/// `fresh_start`; the engine refuses a fresh start without `confirm`).
pub(crate) async fn recover(
    state: State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    let Some(option) = RecoveryOption::parse(&form.option) else {
        let detail = format!("unknown recovery option {:?}", form.option);
        return Fail::new(StatusCode::UNPROCESSABLE_ENTITY, "Not done", detail).page(&signed.base);
    };
    act(state, signed, id, form, Action::Recover(option)).await
}

/// `POST /sessions/{id}/complete`: marks the session complete.
pub(crate) async fn complete(
    state: State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    act(state, signed, id, form, Action::Complete).await
}

/// `POST /sessions/{id}/cancel`: discards the session; needs `confirm`.
pub(crate) async fn cancel(
    state: State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    act(state, signed, id, form, Action::Cancel).await
}

async fn act(
    State(state): State<AppState>,
    signed: Signed,
    id: String,
    form: ActionForm,
    action: Action,
) -> Response {
    match run(&state, &signed, &id, form, action).await {
        Ok(()) => redirect(&signed.base, &format!("/sessions/{id}"), None),
        Err(fail) => fail.page(&signed.base),
    }
}

async fn run(
    state: &AppState,
    signed: &Signed,
    id: &str,
    form: ActionForm,
    action: Action,
) -> Result<(), Fail> {
    let session =
        Id::parse(id).map_err(|e| Fail::new(StatusCode::BAD_REQUEST, "Bad id", e.to_string()))?;
    let attempt =
        match form.attempt.as_deref() {
            None | Some("") => None,
            Some(raw) => Some(raw.parse::<u32>().map_err(|_| {
                Fail::new(StatusCode::BAD_REQUEST, "Bad attempt", format!("{raw:?}"))
            })?),
        };
    perform(
        state,
        signed,
        &session,
        action,
        form.confirm.is_some(),
        attempt,
    )
    .await
}

/// Does `action` to one session of the signed-in key's tenant through the engine call the
/// API's handler uses, and audits it as the API does. A key without `write` (or over its
/// write limit) is refused before anything is read or changed; so is a discard without
/// `confirm`. `attempt` is the attempt the page showed: a session at another attempt is
/// refused (409; for a recovery, checked just before it).
pub(super) async fn perform(
    state: &AppState,
    signed: &Signed,
    session: &Id,
    action: Action,
    confirm: bool,
    attempt: Option<u32>,
) -> Result<(), Fail> {
    signed.may_write(state)?;
    let tenant = &signed.tenant;
    let (op, audited) = match action {
        Action::Recover(option) => {
            // A recovery takes no attempt of its own: a page that showed one (the bulk
            // review) must not resume a session that was resumed (and crashed again) since.
            if let Some(shown) = attempt {
                let now = state.lifeboat.session(tenant, session).await?.attempt;
                if now != shown {
                    return Err(Fail::new(
                        StatusCode::CONFLICT,
                        "Attempt mismatch",
                        format!(
                            "the page showed attempt {shown}, the session is at attempt {now}; nothing was changed"
                        ),
                    ));
                }
            }
            let op = SessionOp::Recover {
                option,
                confirm,
                files: FileChecks::default(),
            };
            let detail = json!({"option": option.as_str(), "confirm": confirm, "via": "dashboard"});
            (op, Some(("session.recover", detail)))
        }
        Action::Complete => (SessionOp::Complete { attempt }, None),
        Action::Cancel => {
            if !confirm {
                return Err(Fail::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Not confirmed",
                    "a discard must be confirmed; nothing was changed",
                ));
            }
            let detail = json!({"attempt": attempt, "via": "dashboard"});
            (
                SessionOp::Cancel { attempt },
                Some(("session.cancel", detail)),
            )
        }
    };
    state
        .lifeboat
        .update_with(tenant, session, op, None)
        .await?;
    if let Some((name, detail)) = audited {
        let resource = format!("session:{session}");
        audit(state, tenant, &signed.caller, name, resource, detail).await;
    }
    Ok(())
}

/// `POST /sessions/{id}/verify`: re-hashes the session's checkpoints and assets through the
/// engine call of the API's `POST /api/v1/sessions/{id}/verify` (damaged checkpoints are
/// marked invalid, asset statuses updated), and answers the session's page with what it
/// found (not a redirect: the figures are this request's, never a link's).
pub(crate) async fn verify(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
) -> Response {
    let checked = async {
        signed.may_write(&state)?;
        let session = Id::parse(&id)
            .map_err(|e| Fail::new(StatusCode::BAD_REQUEST, "Bad id", e.to_string()))?;
        let found = state.lifeboat.verify(&signed.tenant, &session).await?;
        let verified = Verified {
            checkpoints: found.total,
            valid: found.valid,
            assets: found.assets.total,
            ok: found.assets.ok,
            missing: found.assets.missing,
            corrupt: found.assets.corrupt,
        };
        session_page(&state, &signed, &id, Some(&verified)).await
    };
    checked
        .await
        .unwrap_or_else(|fail: Fail| fail.page(&signed.base))
}
