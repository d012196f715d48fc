//! Asset records in PostgreSQL.

use lifeboat_core::{
    Asset, AssetName, AssetStatus, Id, Owner, Sha256, Storage, TenantId, Timestamp,
};
use tokio_postgres::Row;

use super::conn::{PgConn, column};
use crate::{Error, Result};

const ASSET_COLUMNS: &str =
    "name, storage, location, size, sha256, kind, status, verified_at, created_at, updated_at";

fn asset_from_row(row: &Row) -> Result<Asset> {
    asset_from_offset(row, 0)
}

/// An asset from [`ASSET_COLUMNS`] starting at column `at`.
fn asset_from_offset(row: &Row, at: usize) -> Result<Asset> {
    let name: String = column(row, at)?;
    let storage: String = column(row, at + 1)?;
    let location: Option<String> = column(row, at + 2)?;
    let size: i64 = column(row, at + 3)?;
    let status: String = column(row, at + 6)?;
    let bad =
        |index: usize, what: String| Error::Internal(format!("assets column {index}: {what}"));
    let storage = match (storage.as_str(), location) {
        ("blob", _) => Storage::Blob,
        ("appendable", Some(key)) => Storage::Appendable(key),
        ("external", Some(path)) => Storage::External(path),
        (other, _) => return Err(bad(at + 1, format!("unknown asset storage {other:?}"))),
    };
    Ok(Asset {
        name: AssetName::parse(&name).map_err(|e| bad(at, e.to_string()))?,
        storage,
        size: u64::try_from(size).map_err(|e| bad(at + 3, e.to_string()))?,
        sha256: Sha256::from_stored(column(row, at + 4)?),
        kind: column(row, at + 5)?,
        status: AssetStatus::parse(&status).ok_or_else(|| bad(at + 6, status.clone()))?,
        verified_at: Timestamp(column(row, at + 7)?),
        created_at: Timestamp(column(row, at + 8)?),
        updated_at: Timestamp(column(row, at + 9)?),
    })
}

/// Whether the owner (a session, or a live project) exists.
pub(super) fn owner_exists(conn: &PgConn<'_>, tenant: &TenantId, owner: &Owner) -> Result<bool> {
    let sql = match owner {
        Owner::Session(_) => "SELECT 1 FROM sessions WHERE tenant = $1 AND id = $2",
        Owner::Project(_) => {
            "SELECT 1 FROM projects WHERE tenant = $1 AND id = $2 AND deleted_at IS NULL"
        }
    };
    Ok(conn
        .query_opt(sql, &[&tenant.as_str(), &owner.id().as_str()])?
        .is_some())
}

/// A session's current attempt, if the session exists.
pub(super) fn session_attempt(
    conn: &PgConn<'_>,
    tenant: &TenantId,
    id: &Id,
) -> Result<Option<u32>> {
    // Locked in a write: a recovery that moves the attempt on waits for this write, so a
    // fenced-out worker never saves or deletes an asset after the check.
    let sql = format!(
        "SELECT attempt FROM sessions WHERE tenant = $1 AND id = $2{}",
        conn.for_update()
    );
    let Some(row) = conn.query_opt(&sql, &[&tenant.as_str(), &id.as_str()])? else {
        return Ok(None);
    };
    let attempt: i64 = row
        .try_get(0)
        .map_err(|e| Error::Internal(format!("sessions.attempt: {e}")))?;
    u32::try_from(attempt)
        .map(Some)
        .map_err(|e| Error::Internal(format!("sessions.attempt {attempt}: {e}")))
}

/// One asset, if recorded (locked in a write job, which reads it to save or delete it).
pub(super) fn find(
    conn: &PgConn<'_>,
    tenant: &TenantId,
    owner: &Owner,
    name: &str,
) -> Result<Option<Asset>> {
    conn.query_opt(
        &format!(
            "SELECT {ASSET_COLUMNS} FROM assets \
             WHERE tenant = $1 AND owner_kind = $2 AND owner_id = $3 AND name = $4{}",
            conn.for_update()
        ),
        &[&tenant.as_str(), &owner.kind(), &owner.id().as_str(), &name],
    )?
    .map(|row| asset_from_row(&row))
    .transpose()
}

/// All of an owner's assets, by name.
pub(super) fn all(conn: &PgConn<'_>, tenant: &TenantId, owner: &Owner) -> Result<Vec<Asset>> {
    let mut assets: Vec<Asset> = conn
        .query(
            &format!(
                "SELECT {ASSET_COLUMNS} FROM assets \
                 WHERE tenant = $1 AND owner_kind = $2 AND owner_id = $3"
            ),
            &[&tenant.as_str(), &owner.kind(), &owner.id().as_str()],
        )?
        .iter()
        .map(asset_from_row)
        .collect::<Result<_>>()?;
    assets.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(assets)
}

/// Up to `limit` of an owner's assets with a name after `after`, by name.
pub(super) fn page(
    conn: &PgConn<'_>,
    tenant: &TenantId,
    owner: &Owner,
    after: &str,
    limit: u32,
) -> Result<Vec<Asset>> {
    conn.query(
        &format!(
            "SELECT {ASSET_COLUMNS} FROM assets \
             WHERE tenant = $1 AND owner_kind = $2 AND owner_id = $3 AND name > $4 \
             ORDER BY name LIMIT $5"
        ),
        &[
            &tenant.as_str(),
            &owner.kind(),
            &owner.id().as_str(),
            &after,
            &i64::from(limit),
        ],
    )?
    .iter()
    .map(asset_from_row)
    .collect()
}

/// Inserts or replaces an asset record; answers whether it is new.
pub(super) fn save(
    conn: &PgConn<'_>,
    tenant: &TenantId,
    owner: &Owner,
    asset: &Asset,
) -> Result<bool> {
    let (storage, location) = match &asset.storage {
        Storage::Blob => ("blob", None),
        Storage::Appendable(key) => ("appendable", Some(key.as_str())),
        Storage::External(path) => ("external", Some(path.as_str())),
    };
    let size = i64::try_from(asset.size)
        .map_err(|e| Error::Internal(format!("asset {}: size: {e}", asset.name)))?;
    // Whether this inserted the row (`xmax` is 0 for a row this statement inserted) or
    // replaced one, even one another server inserted after this transaction looked.
    let row = conn.query_one(
        "INSERT INTO assets (tenant, owner_kind, owner_id, name, storage, location, size, sha256, \
         kind, status, verified_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (tenant, owner_kind, owner_id, name) DO UPDATE SET storage = excluded.storage, \
         location = excluded.location, size = excluded.size, sha256 = excluded.sha256, \
         kind = excluded.kind, status = excluded.status, verified_at = excluded.verified_at, \
         updated_at = excluded.updated_at \
         RETURNING (xmax = 0)",
        &[
            &tenant.as_str(),
            &owner.kind(),
            &owner.id().as_str(),
            &asset.name.as_str(),
            &storage,
            &location,
            &size,
            &asset.sha256.as_str(),
            &asset.kind,
            &asset.status.as_str(),
            &asset.verified_at.0,
            &asset.created_at.0,
            &asset.updated_at.0,
        ],
    )?;
    column(&row, 0)
}

/// Removes an asset record; answers whether there was one.
pub(super) fn delete(
    conn: &PgConn<'_>,
    tenant: &TenantId,
    owner: &Owner,
    name: &str,
) -> Result<bool> {
    let deleted = conn.execute(
        "DELETE FROM assets WHERE tenant = $1 AND owner_kind = $2 AND owner_id = $3 AND name = $4",
        &[&tenant.as_str(), &owner.kind(), &owner.id().as_str(), &name],
    )?;
    Ok(deleted > 0)
}

/// Records a verification verdict.
pub(super) fn set_status(
    conn: &PgConn<'_>,
    tenant: &TenantId,
    owner: &Owner,
    name: &str,
    status: AssetStatus,
    at: Timestamp,
) -> Result<()> {
    conn.execute(
        "UPDATE assets SET status = $5, verified_at = $6 \
         WHERE tenant = $1 AND owner_kind = $2 AND owner_id = $3 AND name = $4",
        &[
            &tenant.as_str(),
            &owner.kind(),
            &owner.id().as_str(),
            &name,
            &status.as_str(),
            &at.0,
        ],
    )?;
    Ok(())
}

/// Every asset of every tenant with its owner.
pub(super) fn everything(conn: &PgConn<'_>) -> Result<Vec<(TenantId, Owner, Asset)>> {
    conn.query(
        &format!("SELECT tenant, owner_kind, owner_id, {ASSET_COLUMNS} FROM assets ORDER BY pk"),
        &[],
    )?
    .iter()
    .map(|row| {
        // The asset columns follow the three owner columns.
        let asset = asset_from_offset(row, 3)?;
        let tenant: String = column(row, 0)?;
        let kind: String = column(row, 1)?;
        let id: String = column(row, 2)?;
        let damaged = |what: String| Error::Internal(format!("asset {}: {what}", asset.name));
        let id = Id::parse(&id).map_err(|e| damaged(format!("its owner id is not valid: {e}")))?;
        let owner = match kind.as_str() {
            "session" => Owner::Session(id),
            "project" => Owner::Project(id),
            other => return Err(damaged(format!("unknown owner kind {other:?}"))),
        };
        Ok((TenantId::new(tenant), owner, asset))
    })
    .collect()
}
