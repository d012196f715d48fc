//! Export and import of records as JSON rows (column → value). A row leaves out what the
//! importing store assigns itself: row ids, the tenant, and an asset's owner (implied by
//! where the row sits in the document). Import binds every value as a parameter and
//! accepts only column names this schema has.

use std::collections::{BTreeMap, BTreeSet};

use lifeboat_core::{Id, Owner, Sha256, TenantId};
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, ErrorCode, params, params_from_iter};
use serde_json::{Value, json};

use super::{assets, files, projects, rows, translate};
use crate::records::{LOCAL_COLUMNS, Row, id_of, invalid, list, object, text};
use crate::{Error, Result, Selection, TransferCounts};

/// The rows `sql` selects, as JSON objects without [`LOCAL_COLUMNS`].
fn select(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<Row>> {
    let mut statement = conn.prepare(sql).map_err(translate)?;
    let names: Vec<String> = statement.column_names().map(str::to_owned).collect();
    let mut found = statement.query(params).map_err(translate)?;
    let mut out = Vec::new();
    while let Some(row) = found.next().map_err(translate)? {
        let mut object = Row::new();
        for (index, name) in names.iter().enumerate() {
            if LOCAL_COLUMNS.contains(&name.as_str()) {
                continue;
            }
            let value = match row.get_ref(index).map_err(translate)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(i) => Value::from(i),
                ValueRef::Real(f) => Value::from(f),
                ValueRef::Text(text) => Value::String(
                    String::from_utf8(text.to_vec())
                        .map_err(|_| Error::Internal(format!("column {name} is not UTF-8")))?,
                ),
                ValueRef::Blob(_) => {
                    return Err(Error::Internal(format!("column {name} holds a BLOB")));
                }
            };
            object.insert(name.clone(), value);
        }
        out.push(object);
    }
    Ok(out)
}

/// `(pk, id)` pairs.
fn keys(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<(i64, String)>> {
    conn.prepare(sql)
        .map_err(translate)?
        .query_map(params, |row| Ok((row.get(0)?, row.get(1)?)))
        .map_err(translate)?
        .collect::<rusqlite::Result<_>>()
        .map_err(translate)
}

/// The records of `selection` (see `Store::export_records` for the shape).
pub(super) fn export(
    conn: &Connection,
    tenant: &TenantId,
    selection: &Selection,
) -> Result<(Value, TransferCounts)> {
    let t = tenant.as_str();
    let whole = selection.projects.is_empty() && selection.sessions.is_empty();
    let mut project_keys = Vec::new();
    let mut session_keys = BTreeMap::new();
    if whole {
        project_keys = keys(
            conn,
            "SELECT pk, id FROM projects WHERE tenant = ?1 AND deleted_at IS NULL ORDER BY pk",
            [t],
        )?;
        session_keys.extend(keys(
            conn,
            "SELECT pk, id FROM sessions WHERE tenant = ?1",
            [t],
        )?);
    }
    for id in &selection.projects {
        let found = keys(
            conn,
            "SELECT pk, id FROM projects WHERE tenant = ?1 AND id = ?2 AND deleted_at IS NULL",
            params![t, id.as_str()],
        )?;
        if found.is_empty() {
            return Err(Error::NotFound {
                what: "project",
                id: id.to_string(),
            });
        }
        project_keys.extend(found);
        session_keys.extend(keys(
            conn,
            "SELECT pk, id FROM sessions WHERE tenant = ?1 AND project_id = ?2",
            params![t, id.as_str()],
        )?);
    }
    for id in &selection.sessions {
        let (pk, _) = rows::load_session(conn, tenant, id)?;
        session_keys.insert(pk, id.to_string());
    }
    project_keys.dedup();

    let mut counts = TransferCounts::default();
    let asset_rows = |kind: &str, id: &str| {
        select(
            conn,
            "SELECT * FROM assets WHERE tenant = ?1 AND owner_kind = ?2 AND owner_id = ?3 \
             ORDER BY name",
            params![t, kind, id],
        )
    };
    let mut schema_refs = BTreeSet::new();
    let mut project_docs = Vec::new();
    for (pk, id) in &project_keys {
        let mut project = select(conn, "SELECT * FROM projects WHERE pk = ?1", [pk])?;
        let Some(project) = project.pop() else {
            continue;
        };
        if let (Some(Value::String(name)), Some(Value::String(version))) =
            (project.get("schema_name"), project.get("schema_version"))
        {
            schema_refs.insert((name.clone(), version.clone()));
        }
        let revisions = select(
            conn,
            "SELECT * FROM revisions WHERE project_pk = ?1 ORDER BY revision",
            [pk],
        )?;
        let assets = asset_rows("project", id)?;
        counts.projects += 1;
        counts.revisions += revisions.len() as u64;
        counts.assets += assets.len() as u64;
        project_docs.push(json!({"project": project, "revisions": revisions, "assets": assets}));
    }
    let mut session_docs = Vec::new();
    for (pk, id) in &session_keys {
        let mut session = select(conn, "SELECT * FROM sessions WHERE pk = ?1", [pk])?;
        let Some(session) = session.pop() else {
            continue;
        };
        let children = |table: &str, order: &str| {
            select(
                conn,
                &format!("SELECT * FROM {table} WHERE session_pk = ?1 ORDER BY {order}"),
                [pk],
            )
        };
        let checkpoints = children("checkpoints", "seq")?;
        let assets = asset_rows("session", id)?;
        counts.sessions += 1;
        counts.checkpoints += checkpoints.len() as u64;
        counts.assets += assets.len() as u64;
        session_docs.push(json!({
            "session": session,
            "checkpoints": checkpoints,
            "crashes": children("crashes", "attempt")?,
            "recoveries": children("recoveries", "attempt")?,
            "assets": assets,
        }));
    }
    let mut schemas = Vec::new();
    for (name, version) in schema_refs {
        schemas.extend(select(
            conn,
            "SELECT * FROM schemas WHERE tenant = ?1 AND name = ?2 AND version = ?3",
            params![t, name, version],
        )?);
    }
    counts.schemas = schemas.len() as u64;
    let records = json!({"schemas": schemas, "projects": project_docs, "sessions": session_docs});
    Ok((records, counts))
}

/// The column names of each table an import writes, read once per import.
#[derive(Default)]
struct Columns(BTreeMap<&'static str, BTreeSet<String>>);

impl Columns {
    fn of(&mut self, conn: &Connection, table: &'static str) -> Result<&BTreeSet<String>> {
        if !self.0.contains_key(table) {
            self.0.insert(table, columns(conn, table)?);
        }
        self.0
            .get(table)
            .ok_or_else(|| Error::Internal(format!("no columns for {table}")))
    }
}

/// The column names of `table`.
fn columns(conn: &Connection, table: &str) -> Result<BTreeSet<String>> {
    conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
        .map_err(translate)?
        .query_map([], |row| row.get(0))
        .map_err(translate)?
        .collect::<rusqlite::Result<_>>()
        .map_err(translate)
}

/// Inserts `row` into `table` with the `local` columns set here; answers its rowid.
fn insert(
    conn: &Connection,
    columns: &mut Columns,
    table: &'static str,
    row: &Row,
    local: &[(&str, SqlValue)],
) -> Result<i64> {
    let known = columns.of(conn, table)?;
    let mut names: Vec<&str> = Vec::with_capacity(row.len() + local.len());
    let mut values: Vec<SqlValue> = Vec::with_capacity(row.len() + local.len());
    for (name, value) in local {
        names.push(name);
        values.push(value.clone());
    }
    for (name, value) in row {
        if LOCAL_COLUMNS.contains(&name.as_str()) || !known.contains(name) {
            return Err(invalid(format!(
                "records: {table} has no column {name:?} here (an archive from a newer Lifeboat?)"
            )));
        }
        names.push(name);
        values.push(match value {
            Value::Null => SqlValue::Null,
            Value::String(s) => SqlValue::Text(s.clone()),
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => SqlValue::Integer(i),
                (None, Some(f)) => SqlValue::Real(f),
                (None, None) => return Err(invalid(format!("records: {table}.{name}: {n}"))),
            },
            Value::Bool(_) | Value::Array(_) | Value::Object(_) => {
                return Err(invalid(format!(
                    "records: {table}.{name} is not a column value"
                )));
            }
        });
    }
    let placeholders = (1..=names.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES ({placeholders})",
        names.join(", ")
    );
    conn.execute(&sql, params_from_iter(values))
        .map_err(|e| match &e {
            rusqlite::Error::SqliteFailure(failure, _)
                if failure.code == ErrorCode::ConstraintViolation =>
            {
                invalid(format!("records: {table}: {e}"))
            }
            _ => translate(e),
        })?;
    Ok(conn.last_insert_rowid())
}

/// Adds `records` to `tenant` (the caller's transaction rolls back on `Err`).
pub(super) fn import(
    conn: &Connection,
    tenant: &TenantId,
    records: &Value,
) -> Result<TransferCounts> {
    let t = tenant.as_str();
    let tenant_column = ("tenant", SqlValue::Text(t.to_owned()));
    let mut counts = TransferCounts::default();
    let mut columns = Columns::default();

    for schema in list(records, "schemas")? {
        let row = object(schema, "schema")?;
        let (name, version) = (
            text(row, "name", "schema")?,
            text(row, "version", "schema")?,
        );
        let body: Option<String> = conn
            .query_row(
                "SELECT body FROM schemas WHERE tenant = ?1 AND name = ?2 AND version = ?3",
                params![t, name, version],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                other => Err(translate(other)),
            })?;
        match body {
            Some(body) if Some(body.as_str()) == row.get("body").and_then(Value::as_str) => {}
            Some(_) => {
                return Err(Error::AlreadyExists {
                    what: "schema",
                    id: format!("{name}@{version} (with a different body)"),
                });
            }
            None => {
                insert(
                    conn,
                    &mut columns,
                    "schemas",
                    row,
                    std::slice::from_ref(&tenant_column),
                )?;
                counts.schemas += 1;
            }
        }
    }

    for doc in list(records, "projects")? {
        let row = object(doc.get("project").unwrap_or(&Value::Null), "project")?;
        let id = id_of(row, "project")?;
        if projects::load(conn, tenant, &id)?.is_some() {
            return Err(Error::AlreadyExists {
                what: "project",
                id: id.to_string(),
            });
        }
        let pk = insert(
            conn,
            &mut columns,
            "projects",
            row,
            std::slice::from_ref(&tenant_column),
        )?;
        for revision in list(doc, "revisions")? {
            let revision = object(revision, "revision")?;
            insert(
                conn,
                &mut columns,
                "revisions",
                revision,
                &[("project_pk", SqlValue::Integer(pk))],
            )?;
            counts.revisions += 1;
        }
        counts.assets +=
            import_assets(conn, &mut columns, tenant, &Owner::Project(id.clone()), doc)?;
        check_project(conn, tenant, &id)?;
        counts.projects += 1;
    }

    for doc in list(records, "sessions")? {
        let row = object(doc.get("session").unwrap_or(&Value::Null), "session")?;
        let id = id_of(row, "session")?;
        let exists = conn
            .prepare_cached("SELECT 1 FROM sessions WHERE tenant = ?1 AND id = ?2")
            .map_err(translate)?
            .exists(params![t, id.as_str()])
            .map_err(translate)?;
        if exists {
            return Err(Error::AlreadyExists {
                what: "session",
                id: id.to_string(),
            });
        }
        let pk = insert(
            conn,
            &mut columns,
            "sessions",
            row,
            std::slice::from_ref(&tenant_column),
        )?;
        let session_pk = ("session_pk", SqlValue::Integer(pk));
        for checkpoint in list(doc, "checkpoints")? {
            insert(
                conn,
                &mut columns,
                "checkpoints",
                object(checkpoint, "checkpoint")?,
                std::slice::from_ref(&session_pk),
            )?;
            counts.checkpoints += 1;
        }
        for table in ["crashes", "recoveries"] {
            for child in list(doc, table)? {
                insert(
                    conn,
                    &mut columns,
                    table,
                    object(child, table)?,
                    &[tenant_column.clone(), session_pk.clone()],
                )?;
            }
        }
        counts.assets +=
            import_assets(conn, &mut columns, tenant, &Owner::Session(id.clone()), doc)?;
        files::index_imported_pins(conn, pk)?;
        // Kept within its retention, as a checkpoint write keeps it.
        let retention: i64 = conn
            .query_row(
                "SELECT checkpoint_retention FROM sessions WHERE pk = ?1",
                params![pk],
                |row| row.get(0),
            )
            .map_err(translate)?;
        let retention = u32::try_from(retention)
            .map_err(|_| invalid(format!("session {id}: checkpoint_retention {retention}")))?;
        rows::prune_checkpoints(conn, pk, retention)?;
        check_session(conn, tenant, &id)?;
        counts.sessions += 1;
    }
    Ok(counts)
}

fn import_assets(
    conn: &Connection,
    columns: &mut Columns,
    tenant: &TenantId,
    owner: &Owner,
    doc: &Value,
) -> Result<u64> {
    let mut count = 0;
    for asset in list(doc, "assets")? {
        insert(
            conn,
            columns,
            "assets",
            object(asset, "asset")?,
            &[
                ("tenant", SqlValue::Text(tenant.as_str().to_owned())),
                ("owner_kind", SqlValue::Text(owner.kind().to_owned())),
                ("owner_id", SqlValue::Text(owner.id().to_string())),
            ],
        )?;
        count += 1;
    }
    // Every record must read back as the store's own would.
    assets::all(conn, tenant, owner).map_err(|e| {
        invalid(format!(
            "records: assets of {} {}: {e}",
            owner.kind(),
            owner.id()
        ))
    })?;
    Ok(count)
}

/// The project reads back, and its stored revisions rebuild its current state.
fn check_project(conn: &Connection, tenant: &TenantId, id: &Id) -> Result<()> {
    let damaged = |e: Error| invalid(format!("records: project {id}: {e}"));
    let mut stored = projects::load(conn, tenant, id)?
        .ok_or_else(|| invalid(format!("records: project {id} does not read back")))?;
    stored.parse_state().map_err(damaged)?;
    let (rebuilt, _) =
        projects::state_at(conn, stored.row, id, stored.project.revision).map_err(damaged)?;
    if rebuilt != stored.project.state {
        return Err(invalid(format!(
            "records: project {id}: its revisions do not rebuild its state"
        )));
    }
    Ok(())
}

/// The session reads back, and every checkpoint not already quarantined matches its hash.
fn check_session(conn: &Connection, tenant: &TenantId, id: &Id) -> Result<()> {
    let (pk, _) = rows::load_session(conn, tenant, id)
        .map_err(|e| invalid(format!("records: session {id}: {e}")))?;
    let checkpoints: Vec<(u64, String, String, bool)> = conn
        .prepare("SELECT seq, data, sha256, quarantined FROM checkpoints WHERE session_pk = ?1")
        .map_err(translate)?
        .query_map([pk], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .map_err(translate)?
        .collect::<rusqlite::Result<_>>()
        .map_err(translate)?;
    for (seq, data, sha256, quarantined) in checkpoints {
        if !quarantined && Sha256::of(data.as_bytes()).as_str() != sha256 {
            return Err(invalid(format!(
                "records: session {id}: checkpoint seq={seq} does not match its SHA-256"
            )));
        }
    }
    rows::all_checkpoints(conn, pk).map_err(|e| invalid(format!("records: session {id}: {e}")))?;
    Ok(())
}
