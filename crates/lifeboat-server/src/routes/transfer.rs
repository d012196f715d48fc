//! Export and import archives (see `lifeboat::transfer`): move projects and sessions,
//! with their history, checkpoints and assets, between servers. Admin scope; both act
//! on the caller's tenant.

use std::io::{self, Write};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use lifeboat::{Id, Selection, TenantId, TransferCounts};
use lifeboat_api::{Problem, ProblemType, TransferBody};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::AppState;
use crate::auth::{Caller, audit};
use crate::error::ApiError;
use crate::extract::ApiQuery;

/// The media type of an archive.
const ARCHIVE_TYPE: &str = "application/x-tar";
/// Bytes sent to the client per chunk.
const CHUNK_BYTES: usize = 256 * 1024;

/// What to export: comma-separated ids; neither means the whole tenant.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ExportQuery {
    /// Project ids (each brings its sessions along).
    projects: Option<String>,
    /// Session ids.
    sessions: Option<String>,
}

fn ids(field: &str, raw: Option<&str>) -> Result<Vec<Id>, ApiError> {
    raw.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(|id| {
            Id::parse(id)
                .map_err(|e| ApiError::new(ProblemType::INVALID_ID, format!("{field}: {e}")))
        })
        .collect()
}

fn body(counts: TransferCounts) -> TransferBody {
    TransferBody {
        projects: counts.projects,
        revisions: counts.revisions,
        schemas: counts.schemas,
        sessions: counts.sessions,
        checkpoints: counts.checkpoints,
        assets: counts.assets,
    }
}

/// Sends what is written as body chunks; fails once the client has gone.
struct ChunkSender {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buffer: Vec<u8>,
}

impl Write for ChunkSender {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buffer));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

/// Streams an archive of the selected projects and sessions: `manifest.json`,
/// `records.json`, then each asset's bytes. If stored bytes turn out damaged midway,
/// the response is cut short (the archive is unusable and import would refuse it).
#[utoipa::path(get, path = "/api/v1/admin/export", tag = "operations", params(ExportQuery),
    responses((status = 200, description = "A tar archive", content_type = "application/x-tar"),
        (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn export(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let selection = Selection {
        projects: ids("projects", query.projects.as_deref())?,
        sessions: ids("sessions", query.sessions.as_deref())?,
    };
    let export = state.lifeboat.export(&tenant, &selection).await?;
    let size = export.archive_size();
    let counts = body(export.counts());
    audit(
        &state,
        &tenant,
        &caller,
        "export",
        "tenant".to_owned(),
        json!({"projects": query.projects, "sessions": query.sessions, "contents": counts}),
    )
    .await;
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut sender = ChunkSender {
            tx: tx.clone(),
            buffer: Vec::with_capacity(CHUNK_BYTES),
        };
        let written = export
            .write_to(&mut sender)
            .and_then(|sender| sender.flush());
        if let Err(error) = written {
            tracing::error!(%error, "export stopped");
            let _ = tx.blocking_send(Err(error));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ARCHIVE_TYPE));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"lifeboat-export.tar\""),
    );
    Ok(response)
}

/// Imports an archive made by `GET /admin/export` into the caller's tenant. Every entry
/// is checked against the manifest, and the records against the bytes, before anything
/// is placed; a damaged archive (422) or an id that exists here (409) imports nothing.
#[utoipa::path(post, path = "/api/v1/admin/import", tag = "operations",
    request_body(content = Vec<u8>, description = "A tar archive from an export", content_type = "application/x-tar"),
    responses((status = 201, body = TransferBody), (status = 403, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 422, body = Problem), (status = 507, body = Problem)))]
pub(crate) async fn import(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Extension(caller): Extension<Caller>,
    request: Body,
) -> Result<(StatusCode, Json<TransferBody>), ApiError> {
    let stream = request.into_data_stream().map_err(io::Error::other);
    let reader = SyncIoBridge::new(StreamReader::new(stream));
    let counts = body(state.lifeboat.import(&tenant, reader).await?);
    audit(
        &state,
        &tenant,
        &caller,
        "import",
        "tenant".to_owned(),
        json!({"contents": counts}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(counts)))
}
