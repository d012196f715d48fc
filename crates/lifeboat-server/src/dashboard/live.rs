//! Live updates of the sessions list: `GET /live/events`, the signed-in key's tenant's
//! event stream (the API's own, built by `routes::events::stream`: the same slot limit per
//! key, and it ends within a second of the key's revocation), and `GET /live.js`, the one
//! script that reads it on the sessions page.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use lifeboat::EventFilter;

use super::auth::Signed;
use crate::AppState;
use crate::routes::events::{last_event_id, stream};

/// The script, served at `/live.js`.
const SCRIPT: &str = include_str!("templates/live.js");

/// `GET /live/events`: signed in by the cookie (an `EventSource` sends no
/// `Authorization`); signed out it is the pages' 303 to the sign-in form.
pub(crate) async fn events(
    State(state): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
) -> Response {
    let after = match last_event_id(&headers) {
        Ok(after) => after,
        Err(error) => return error.into_response(),
    };
    stream(
        &state,
        signed.tenant,
        signed.caller,
        EventFilter::default(),
        after,
    )
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// `GET /live.js`.
pub(crate) async fn script() -> Response {
    ([(CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}
