//! The router: every endpoint, with its OpenAPI description derived from the handlers.

mod assets;
pub(crate) mod events;
mod keys;
mod ops;
mod projects;
mod recovery;
mod sessions;
mod transfer;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post, put};
use lifeboat_api::ProblemType;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::require_token;
use crate::error::ApiError;
use crate::{AppState, idempotency};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Lifeboat",
        description = "Keeps long-running user work safe: sessions with leases and heartbeats, checkpoints, and verified recovery."
    ),
    paths(
        assets::put_asset,
        assets::append_asset,
        assets::get_asset,
        assets::delete_asset,
        assets::list_assets,
        assets::register_asset,
        assets::get_pinned_asset,
        transfer::export,
        transfer::import
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Errors are `application/problem+json`, and every operation lists the problems any
/// request can meet (a malformed body, a missing key or scope, a rate limit, a storage
/// fault) besides those its handler declares.
struct ProblemResponses;

/// Statuses any operation may answer with a problem.
const ANY_OPERATION: [(&str, &str); 11] = [
    ("400", "The request is malformed"),
    ("401", "Missing or invalid bearer token"),
    ("403", "The key may not do this"),
    ("404", "No such resource"),
    ("413", "The request body is too large"),
    ("415", "Unsupported content type"),
    ("422", "The request is well-formed but invalid"),
    ("429", "Too many writes with this key"),
    ("500", "Internal server error"),
    ("503", "Storage is unavailable"),
    ("507", "Storage is full"),
];

impl utoipa::Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Content, RefOr, ResponseBuilder, schema::Ref};
        let problem = || Content::new(Some(Ref::from_schema_name("Problem")));
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                for response in responses.values_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    let is_problem = response.content.get("application/json").is_some_and(|c| {
                        matches!(c, RefOr::T(c) if matches!(&c.schema,
                            Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem")))
                    });
                    if is_problem {
                        response.content.shift_remove("application/json");
                        response
                            .content
                            .insert("application/problem+json".to_owned(), RefOr::T(problem()));
                    }
                }
                for (status, title) in ANY_OPERATION {
                    responses.entry(status.to_owned()).or_insert_with(|| {
                        RefOr::T(
                            ResponseBuilder::new()
                                .description(title)
                                .content("application/problem+json", problem())
                                .build(),
                        )
                    });
                }
            }
        }
    }
}

/// Builds the router (state is attached by the caller).
pub(crate) fn router(state: AppState) -> Router<AppState> {
    let (api, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(sessions::create_session, sessions::list_sessions))
        .routes(routes!(sessions::get_session, sessions::delete_session))
        .routes(routes!(sessions::heartbeat))
        .routes(routes!(sessions::session_token))
        .routes(routes!(
            sessions::create_checkpoint,
            sessions::list_checkpoints
        ))
        .routes(routes!(sessions::latest_checkpoint))
        .routes(routes!(sessions::get_checkpoint))
        .routes(routes!(sessions::pause))
        .routes(routes!(sessions::complete))
        .routes(routes!(sessions::cancel))
        .routes(routes!(sessions::fail))
        .routes(routes!(recovery::list_recoverable))
        .routes(routes!(recovery::session_recovery))
        .routes(routes!(recovery::recover))
        .routes(routes!(recovery::verify))
        .routes(routes!(projects::list_projects))
        .routes(routes!(
            projects::put_project,
            projects::patch_project,
            projects::get_project,
            projects::delete_project
        ))
        .routes(routes!(projects::list_revisions))
        .routes(routes!(projects::restore))
        .routes(routes!(keys::create_project_token))
        .routes(routes!(keys::revoke_project_token))
        .routes(routes!(projects::put_schema, projects::get_schema))
        .routes(routes!(events::events))
        .routes(routes!(keys::create_key, keys::list_keys))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(keys::audit_trail))
        .routes(routes!(ops::stats))
        .routes(routes!(ops::sweep))
        .routes(routes!(ops::cleanup))
        .routes(routes!(ops::cluster))
        .routes(routes!(ops::verify_store))
        .split_for_parts();
    let mut openapi = openapi;
    utoipa::Modify::modify(&ProblemResponses, &mut openapi);
    let openapi_json = openapi.to_pretty_json().unwrap_or_default();
    let mut api = api.route_layer(from_fn_with_state(state.clone(), idempotency::track));
    // Asset routes come after the Idempotency-Key layer, which buffers bodies: asset writes
    // are safe to retry by their nature and ignore the key (SPEC §5 r2), and an upload is
    // streamed to disk whatever its size.
    for owner in ["sessions", "projects"] {
        let base = format!("/api/v1/{owner}/{{id}}/assets");
        api = api
            .route(&base, get(assets::list_assets))
            .route(&format!("{base}/"), get(assets::list_assets))
            .route(&format!("{base}/register"), post(assets::register_asset))
            .route(
                &format!("{base}/{{*name}}"),
                put(assets::put_asset)
                    .post(assets::append_asset)
                    .get(assets::get_asset)
                    .delete(assets::delete_asset)
                    // Uploads are streamed and limited by --max-asset-bytes instead.
                    .layer(DefaultBodyLimit::disable()),
            );
    }
    let api = api
        .route(
            "/api/v1/sessions/{id}/checkpoints/{seq}/assets/{*name}",
            get(assets::get_pinned_asset),
        )
        // Archives are streamed, so they stay out of the Idempotency-Key buffering (a
        // second import of the same archive answers 409) and the JSON body limit.
        .route("/api/v1/admin/export", get(transfer::export))
        .route(
            "/api/v1/admin/import",
            post(transfer::import).layer(DefaultBodyLimit::disable()),
        )
        .route_layer(from_fn_with_state(state, require_token));
    Router::new()
        .merge(api)
        .route(
            "/api/v1/openapi.json",
            get(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    openapi_json,
                )
            }),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(|| async { ApiError::new(ProblemType::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ProblemType::METHOD_NOT_ALLOWED,
                "this endpoint does not accept that method",
            )
        })
}
