//! Asset records in SQLite.

use lifeboat_core::{
    Asset, AssetName, AssetStatus, Id, Owner, Sha256, Storage, TenantId, Timestamp,
};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::translate;
use crate::{Error, Result};

const ASSET_COLUMNS: &str =
    "name, storage, location, size, sha256, kind, status, verified_at, created_at, updated_at";

fn asset_from_row(row: &Row<'_>) -> rusqlite::Result<Asset> {
    asset_from_offset(row, 0)
}

/// An asset from [`ASSET_COLUMNS`] starting at column `at`.
fn asset_from_offset(row: &Row<'_>, at: usize) -> rusqlite::Result<Asset> {
    let name: String = row.get(at)?;
    let storage: String = row.get(at + 1)?;
    let location: Option<String> = row.get(at + 2)?;
    let status: String = row.get(at + 6)?;
    let bad = |index: usize, what: String| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, what.into())
    };
    let storage = match (storage.as_str(), location) {
        ("blob", _) => Storage::Blob,
        ("appendable", Some(key)) => Storage::Appendable(key),
        ("external", Some(path)) => Storage::External(path),
        (other, _) => return Err(bad(at + 1, format!("unknown asset storage {other:?}"))),
    };
    Ok(Asset {
        name: AssetName::parse(&name).map_err(|e| bad(at, e.to_string()))?,
        storage,
        size: row.get(at + 3)?,
        sha256: Sha256::from_stored(row.get(at + 4)?),
        kind: row.get(at + 5)?,
        status: AssetStatus::parse(&status).ok_or_else(|| bad(at + 6, status.clone()))?,
        verified_at: Timestamp(row.get(at + 7)?),
        created_at: Timestamp(row.get(at + 8)?),
        updated_at: Timestamp(row.get(at + 9)?),
    })
}

/// Whether the owner (a session, or a live project) exists.
pub(super) fn owner_exists(conn: &Connection, tenant: &TenantId, owner: &Owner) -> Result<bool> {
    let sql = match owner {
        Owner::Session(_) => "SELECT 1 FROM sessions WHERE tenant = ?1 AND id = ?2",
        Owner::Project(_) => {
            "SELECT 1 FROM projects WHERE tenant = ?1 AND id = ?2 AND deleted_at IS NULL"
        }
    };
    conn.prepare_cached(sql)
        .map_err(translate)?
        .exists(params![tenant.as_str(), owner.id().as_str()])
        .map_err(translate)
}

/// A session's current attempt, if the session exists.
pub(super) fn session_attempt(
    conn: &Connection,
    tenant: &TenantId,
    id: &Id,
) -> Result<Option<u32>> {
    conn.prepare_cached("SELECT attempt FROM sessions WHERE tenant = ?1 AND id = ?2")
        .map_err(translate)?
        .query_row(params![tenant.as_str(), id.as_str()], |row| row.get(0))
        .optional()
        .map_err(translate)
}

/// One asset, if recorded.
pub(super) fn find(
    conn: &Connection,
    tenant: &TenantId,
    owner: &Owner,
    name: &str,
) -> Result<Option<Asset>> {
    conn.prepare_cached(&format!(
        "SELECT {ASSET_COLUMNS} FROM assets \
         WHERE tenant = ?1 AND owner_kind = ?2 AND owner_id = ?3 AND name = ?4"
    ))
    .map_err(translate)?
    .query_row(
        params![tenant.as_str(), owner.kind(), owner.id().as_str(), name],
        asset_from_row,
    )
    .optional()
    .map_err(translate)
}

/// All of an owner's assets, by name.
pub(super) fn all(conn: &Connection, tenant: &TenantId, owner: &Owner) -> Result<Vec<Asset>> {
    let mut assets: Vec<Asset> = conn
        .prepare_cached(&format!(
            "SELECT {ASSET_COLUMNS} FROM assets \
             WHERE tenant = ?1 AND owner_kind = ?2 AND owner_id = ?3"
        ))
        .map_err(translate)?
        .query_map(
            params![tenant.as_str(), owner.kind(), owner.id().as_str()],
            asset_from_row,
        )
        .map_err(translate)?
        .collect::<rusqlite::Result<_>>()
        .map_err(translate)?;
    assets.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(assets)
}

/// Up to `limit` of an owner's assets with a name after `after`, by name.
pub(super) fn page(
    conn: &Connection,
    tenant: &TenantId,
    owner: &Owner,
    after: &str,
    limit: u32,
) -> Result<Vec<Asset>> {
    conn.prepare_cached(&format!(
        "SELECT {ASSET_COLUMNS} FROM assets \
         WHERE tenant = ?1 AND owner_kind = ?2 AND owner_id = ?3 AND name > ?4 \
         ORDER BY name LIMIT ?5"
    ))
    .map_err(translate)?
    .query_map(
        params![
            tenant.as_str(),
            owner.kind(),
            owner.id().as_str(),
            after,
            limit
        ],
        asset_from_row,
    )
    .map_err(translate)?
    .collect::<rusqlite::Result<_>>()
    .map_err(translate)
}

/// Inserts or replaces an asset record; answers whether it is new.
pub(super) fn save(
    conn: &Connection,
    tenant: &TenantId,
    owner: &Owner,
    asset: &Asset,
) -> Result<bool> {
    let existed = find(conn, tenant, owner, asset.name.as_str())?.is_some();
    let (storage, location) = match &asset.storage {
        Storage::Blob => ("blob", None),
        Storage::Appendable(key) => ("appendable", Some(key.as_str())),
        Storage::External(path) => ("external", Some(path.as_str())),
    };
    conn.prepare_cached(
        "INSERT INTO assets (tenant, owner_kind, owner_id, name, storage, location, size, sha256, \
         kind, status, verified_at, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT (tenant, owner_kind, owner_id, name) DO UPDATE SET storage = excluded.storage, \
         location = excluded.location, size = excluded.size, sha256 = excluded.sha256, \
         kind = excluded.kind, status = excluded.status, verified_at = excluded.verified_at, \
         updated_at = excluded.updated_at",
    )
    .map_err(translate)?
    .execute(params![
        tenant.as_str(),
        owner.kind(),
        owner.id().as_str(),
        asset.name.as_str(),
        storage,
        location,
        asset.size,
        asset.sha256.as_str(),
        asset.kind,
        asset.status.as_str(),
        asset.verified_at.0,
        asset.created_at.0,
        asset.updated_at.0,
    ])
    .map_err(translate)?;
    Ok(!existed)
}

/// Removes an asset record; answers whether there was one.
pub(super) fn delete(
    conn: &Connection,
    tenant: &TenantId,
    owner: &Owner,
    name: &str,
) -> Result<bool> {
    conn.prepare_cached(
        "DELETE FROM assets WHERE tenant = ?1 AND owner_kind = ?2 AND owner_id = ?3 AND name = ?4",
    )
    .map_err(translate)?
    .execute(params![
        tenant.as_str(),
        owner.kind(),
        owner.id().as_str(),
        name
    ])
    .map(|deleted| deleted > 0)
    .map_err(translate)
}

/// Records a verification verdict.
pub(super) fn set_status(
    conn: &Connection,
    tenant: &TenantId,
    owner: &Owner,
    name: &str,
    status: AssetStatus,
    at: Timestamp,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE assets SET status = ?5, verified_at = ?6 \
         WHERE tenant = ?1 AND owner_kind = ?2 AND owner_id = ?3 AND name = ?4",
    )
    .map_err(translate)?
    .execute(params![
        tenant.as_str(),
        owner.kind(),
        owner.id().as_str(),
        name,
        status.as_str(),
        at.0
    ])
    .map_err(translate)?;
    Ok(())
}

/// Every asset of every tenant with its owner.
pub(super) fn everything(conn: &Connection) -> Result<Vec<(TenantId, Owner, Asset)>> {
    let rows: Vec<(String, String, String, Asset)> = conn
        .prepare(&format!(
            "SELECT tenant, owner_kind, owner_id, {ASSET_COLUMNS} FROM assets ORDER BY pk"
        ))
        .map_err(translate)?
        .query_map([], |row| {
            // The asset columns follow the three owner columns.
            let asset = asset_from_offset(row, 3)?;
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, asset))
        })
        .map_err(translate)?
        .collect::<rusqlite::Result<_>>()
        .map_err(translate)?;
    rows.into_iter()
        .map(|(tenant, kind, id, asset)| {
            let damaged = |what: String| Error::Internal(format!("asset {}: {what}", asset.name));
            let id = lifeboat_core::Id::parse(&id)
                .map_err(|e| damaged(format!("its owner id is not valid: {e}")))?;
            let owner = match kind.as_str() {
                "session" => Owner::Session(id),
                "project" => Owner::Project(id),
                other => return Err(damaged(format!("unknown owner kind {other:?}"))),
            };
            Ok((TenantId::new(tenant), owner, asset))
        })
        .collect()
}
