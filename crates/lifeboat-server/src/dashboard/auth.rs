//! Signing in and out, and the cookie that is checked again on every request.
//!
//! The cookie holds the key itself (`HttpOnly`: no script can read it; `SameSite=Strict`:
//! no other site's request carries it; `Secure` when the request came over https). Every
//! request runs it through `auth::key_caller`, the API's own rule, so a revoked key signs
//! the browser out at its next click.

use axum::Form;
use axum::extract::{FromRequestParts, State};
use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use lifeboat::TenantId;
use serde::{Deserialize, Serialize};

use super::{Fail, base, render};
use crate::AppState;
use crate::auth::{Caller, key_caller};

/// The cookie's name.
const COOKIE_NAME: &str = "lifeboat_key";

/// A signed-in request: the key's tenant and caller, and where links start.
pub(crate) struct Signed {
    pub(crate) tenant: TenantId,
    pub(crate) caller: Caller,
    pub(crate) base: String,
}

impl FromRequestParts<AppState> for Signed {
    /// Signed out (no cookie, or its key no longer works): back to the sign-in page, with
    /// the cookie cleared.
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Signed, Response> {
        let base = base(&parts.headers, &parts.uri);
        let Some(key) = cookie_key(&parts.headers) else {
            return Err(redirect(&base, "/", None));
        };
        match key_caller(state, &key).await {
            Ok(Some((tenant, caller))) => Ok(Signed {
                tenant,
                caller,
                base,
            }),
            Ok(None) => Err(redirect(&base, "/", Some(cleared(&parts.headers)))),
            Err(error) => Err(Fail::from(error).page(&base)),
        }
    }
}

impl Signed {
    /// Whether this key holds the write scope (else 403), without taking a write from its
    /// limit: for pages that show what an action would do.
    pub(crate) fn has_write_scope(&self) -> Result<(), Fail> {
        if self.caller.may("write") {
            Ok(())
        } else {
            Err(Fail::new(
                StatusCode::FORBIDDEN,
                "Not allowed",
                "this key lacks the write scope; it may look, not act",
            ))
        }
    }

    /// Whether this key may act: it holds the write scope (else 403) and has a write left
    /// under the per-key limit (else 429) — the API's rules, for the dashboard's forms.
    pub(crate) fn may_write(&self, state: &AppState) -> Result<(), Fail> {
        self.has_write_scope()?;
        if let Some(limit) = &state.write_limit
            && limit.take(self.caller.actor.clone()).is_err()
        {
            return Err(Fail::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many writes",
                "this key has used up its writes for now; try again in a moment",
            ));
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct SignInPage<'a> {
    base: &'a str,
    error: Option<&'a str>,
}

/// `GET /`: the sign-in form, or the sessions when the cookie's key still works.
pub(crate) async fn home(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let base = base(&headers, &uri);
    let Some(key) = cookie_key(&headers) else {
        return sign_in_page(&base, StatusCode::OK, None);
    };
    match key_caller(&state, &key).await {
        Ok(Some(_)) => redirect(&base, "/sessions", None),
        Ok(None) => {
            let mut page = sign_in_page(&base, StatusCode::OK, None);
            if let Ok(value) = HeaderValue::from_str(&cleared(&headers)) {
                page.headers_mut().insert(SET_COOKIE, value);
            }
            page
        }
        Err(error) => Fail::from(error).page(&base),
    }
}

/// The sign-in form.
#[derive(Deserialize)]
pub(crate) struct SignIn {
    key: String,
}

/// `POST /sign-in`: an API key or the admin token (never a session or project token)
/// sets the cookie and goes to the sessions; anything else shows the form again, 401.
pub(crate) async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    Form(form): Form<SignIn>,
) -> Response {
    let base = base(&headers, &uri);
    let key = form.key.trim();
    let refused = "That key is not valid: unknown, revoked or mistyped. \
                   Session and project tokens cannot sign in.";
    if !key
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b";,\"\\".contains(&b))
        || key.is_empty()
    {
        return sign_in_page(&base, StatusCode::UNAUTHORIZED, Some(refused));
    }
    match key_caller(&state, key).await {
        Ok(Some(_)) => {
            let cookie = format!("{COOKIE_NAME}={key}; {}", attributes(&headers));
            redirect(&base, "/sessions", Some(cookie))
        }
        Ok(None) => sign_in_page(&base, StatusCode::UNAUTHORIZED, Some(refused)),
        Err(error) => Fail::from(error).page(&base),
    }
}

/// `POST /sign-out`: clears the cookie.
pub(crate) async fn sign_out(headers: HeaderMap, uri: Uri) -> Response {
    let base = base(&headers, &uri);
    redirect(&base, "/", Some(cleared(&headers)))
}

fn sign_in_page(base: &str, status: StatusCode, error: Option<&str>) -> Response {
    render("sign_in.html", status, SignInPage { base, error })
}

/// The key in the request's `lifeboat_key` cookie, if any.
fn cookie_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE_NAME && !value.is_empty())
        .map(|(_, value)| value.to_owned())
}

/// The cookie's attributes; `Secure` only when a proxy says the request came over https
/// (a browser keeps no `Secure` cookie from plain http outside localhost).
fn attributes(headers: &HeaderMap) -> &'static str {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"));
    if https {
        "HttpOnly; SameSite=Strict; Path=/; Secure"
    } else {
        "HttpOnly; SameSite=Strict; Path=/"
    }
}

/// A `Set-Cookie` value that removes the cookie.
fn cleared(headers: &HeaderMap) -> String {
    format!("{COOKIE_NAME}=; {}; Max-Age=0", attributes(headers))
}

/// 303 to `path` under `base`, optionally setting a cookie.
pub(crate) fn redirect(base: &str, path: &str, cookie: Option<String>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&format!("{base}{path}")) {
        headers.insert(LOCATION, location);
    }
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(SET_COOKIE, cookie);
    }
    response
}
