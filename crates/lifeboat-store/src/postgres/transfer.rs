//! Export and import of records as JSON rows (column → value). A row leaves out what the
//! importing store assigns itself: row ids, the tenant, and an asset's owner (implied by
//! where the row sits in the document). Import binds every value as a parameter, typed
//! by its column, and accepts only column names this schema has.

use std::collections::{BTreeMap, BTreeSet};

use lifeboat_core::{Id, Owner, Sha256, TenantId};
use serde_json::{Value, json};
use tokio_postgres::types::{ToSql, Type};

use super::conn::{Params, PgConn, column};
use super::{assets, files, projects, rows};
use crate::records::{LOCAL_COLUMNS, Row, id_of, invalid, list, object, text};
use crate::{Error, Result, Selection, TransferCounts};

/// Columns PostgreSQL computes from the others (`GENERATED ALWAYS … STORED`): neither
/// exported nor written by an import (SQLite has none of them). The one list of them.
const COMPUTED_COLUMNS: [&str; 1] = ["due_second"];

/// The rows `sql` selects, as JSON objects without [`LOCAL_COLUMNS`] and
/// [`COMPUTED_COLUMNS`].
fn select(conn: &PgConn<'_>, sql: &str, params: &Params<'_>) -> Result<Vec<Row>> {
    let found = conn.query(sql, params)?;
    let mut out = Vec::with_capacity(found.len());
    for row in &found {
        let mut object = Row::new();
        for (index, described) in row.columns().iter().enumerate() {
            let name = described.name();
            if LOCAL_COLUMNS.contains(&name) || COMPUTED_COLUMNS.contains(&name) {
                continue;
            }
            let value = match *described.type_() {
                Type::INT8 => column::<Option<i64>>(row, index)?.map_or(Value::Null, Value::from),
                Type::FLOAT8 => column::<Option<f64>>(row, index)?.map_or(Value::Null, Value::from),
                Type::TEXT => {
                    column::<Option<String>>(row, index)?.map_or(Value::Null, Value::from)
                }
                Type::BYTEA => {
                    return Err(Error::Internal(format!("column {name} holds a BLOB")));
                }
                ref other => {
                    return Err(Error::Internal(format!("column {name} has type {other}")));
                }
            };
            object.insert(name.to_owned(), value);
        }
        out.push(object);
    }
    Ok(out)
}

/// `(pk, id)` pairs.
fn keys(conn: &PgConn<'_>, sql: &str, params: &Params<'_>) -> Result<Vec<(i64, String)>> {
    conn.query(sql, params)?
        .iter()
        .map(|row| Ok((column(row, 0)?, column(row, 1)?)))
        .collect()
}

/// The records of `selection` (see `Store::export_records` for the shape).
pub(super) fn export(
    conn: &PgConn<'_>,
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
            "SELECT pk, id FROM projects WHERE tenant = $1 AND deleted_at IS NULL ORDER BY pk",
            &[&t],
        )?;
        session_keys.extend(keys(
            conn,
            "SELECT pk, id FROM sessions WHERE tenant = $1",
            &[&t],
        )?);
    }
    for id in &selection.projects {
        let found = keys(
            conn,
            "SELECT pk, id FROM projects WHERE tenant = $1 AND id = $2 AND deleted_at IS NULL",
            &[&t, &id.as_str()],
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
            "SELECT pk, id FROM sessions WHERE tenant = $1 AND project_id = $2",
            &[&t, &id.as_str()],
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
            "SELECT * FROM assets WHERE tenant = $1 AND owner_kind = $2 AND owner_id = $3 \
             ORDER BY name",
            &[&t, &kind, &id],
        )
    };
    let mut schema_refs = BTreeSet::new();
    let mut project_docs = Vec::new();
    for (pk, id) in &project_keys {
        let mut project = select(conn, "SELECT * FROM projects WHERE pk = $1", &[pk])?;
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
            "SELECT * FROM revisions WHERE project_pk = $1 ORDER BY revision",
            &[pk],
        )?;
        let assets = asset_rows("project", id)?;
        counts.projects += 1;
        counts.revisions += revisions.len() as u64;
        counts.assets += assets.len() as u64;
        project_docs.push(json!({"project": project, "revisions": revisions, "assets": assets}));
    }
    let mut session_docs = Vec::new();
    for (pk, id) in &session_keys {
        let mut session = select(conn, "SELECT * FROM sessions WHERE pk = $1", &[pk])?;
        let Some(session) = session.pop() else {
            continue;
        };
        let children = |table: &str, order: &str| {
            select(
                conn,
                &format!("SELECT * FROM {table} WHERE session_pk = $1 ORDER BY {order}"),
                &[pk],
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
            "SELECT * FROM schemas WHERE tenant = $1 AND name = $2 AND version = $3",
            &[&t, &name, &version],
        )?);
    }
    counts.schemas = schemas.len() as u64;
    let records = json!({"schemas": schemas, "projects": project_docs, "sessions": session_docs});
    Ok((records, counts))
}

/// A record that does not read back means a damaged archive (422); a database that cannot
/// be reached or is full, or a concurrent write in the way, is not the archive's fault,
/// and stays what it is (503, 507).
fn unreadable(context: &str, error: Error) -> Error {
    match error {
        Error::Unavailable(_) | Error::Contended(_) | Error::Full(_) => error,
        other => invalid(format!("{context}: {other}")),
    }
}

/// A value bound for one column, typed as the column is (PostgreSQL converts nothing).
#[derive(Debug, Clone)]
enum Bind {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<String>),
}

impl Bind {
    fn is_null(&self) -> bool {
        matches!(self, Bind::Int(None) | Bind::Real(None) | Bind::Text(None))
    }

    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Bind::Int(v) => v,
            Bind::Real(v) => v,
            Bind::Text(v) => v,
        }
    }
}

/// What an import needs to know of a column.
struct Column {
    /// BIGINT, DOUBLE PRECISION or TEXT (anything else is refused).
    kind: Type,
    /// NOT NULL.
    not_null: bool,
    /// Has a default (a row may leave it out).
    has_default: bool,
}

/// The columns of each table an import writes, read once per import.
#[derive(Default)]
struct Columns(BTreeMap<&'static str, BTreeMap<String, Column>>);

impl Columns {
    fn of(&mut self, conn: &PgConn<'_>, table: &'static str) -> Result<&BTreeMap<String, Column>> {
        if !self.0.contains_key(table) {
            self.0.insert(table, columns(conn, table)?);
        }
        self.0
            .get(table)
            .ok_or_else(|| Error::Internal(format!("no columns for {table}")))
    }
}

/// The columns of `table` (as the `search_path` resolves it, as the inserts will) that
/// an insert may set: not [`COMPUTED_COLUMNS`].
fn columns(conn: &PgConn<'_>, table: &str) -> Result<BTreeMap<String, Column>> {
    let found = conn.query(
        "SELECT attname::TEXT, atttypid, attnotnull, atthasdef FROM pg_attribute \
         WHERE attrelid = $1::TEXT::regclass AND attnum > 0 AND NOT attisdropped",
        &[&table],
    )?;
    let mut out = BTreeMap::new();
    for row in &found {
        let name: String = column(row, 0)?;
        if COMPUTED_COLUMNS.contains(&name.as_str()) {
            continue;
        }
        let oid: u32 = column(row, 1)?;
        let kind = Type::from_oid(oid)
            .ok_or_else(|| Error::Internal(format!("{table}.{name} has type oid {oid}")))?;
        let column = Column {
            kind,
            not_null: column(row, 2)?,
            has_default: column(row, 3)?,
        };
        out.insert(name, column);
    }
    if out.is_empty() {
        return Err(Error::Internal(format!("no columns for {table}")));
    }
    Ok(out)
}

/// `value` (of `table.name`) bound as `column` takes it: what SQLite would store there
/// (an integer in a TEXT column as its digits, an integral number in a BIGINT column as
/// an integer), anything else refused.
fn bind(table: &str, name: &str, column: &Column, value: &Value) -> Result<Bind> {
    let refused = || invalid(format!("records: {table}.{name}: the value does not fit"));
    Ok(match (&column.kind, value) {
        (&Type::INT8, Value::Null) => Bind::Int(None),
        (&Type::FLOAT8, Value::Null) => Bind::Real(None),
        (&Type::TEXT, Value::Null) => Bind::Text(None),
        (&Type::INT8, Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Bind::Int(Some(i)),
            (None, Some(f))
                if f.fract() == 0.0 && (i64::MIN as f64..i64::MAX as f64).contains(&f) =>
            {
                Bind::Int(Some(f as i64))
            }
            _ => return Err(refused()),
        },
        (&Type::FLOAT8, Value::Number(n)) => Bind::Real(Some(n.as_f64().ok_or_else(refused)?)),
        (&Type::TEXT, Value::Number(n)) if n.is_i64() => Bind::Text(Some(n.to_string())),
        (&Type::TEXT, Value::String(s)) => {
            // PostgreSQL's TEXT cannot hold a NUL character.
            if s.contains('\0') {
                return Err(refused());
            }
            Bind::Text(Some(s.clone()))
        }
        (_, Value::Bool(_) | Value::Array(_) | Value::Object(_)) => {
            return Err(invalid(format!(
                "records: {table}.{name} is not a column value"
            )));
        }
        _ => return Err(refused()),
    })
}

/// What [`insert`] did.
enum Inserted {
    /// Added the row, which got this `pk`.
    Pk(i64),
    /// Added the row (its table has no `pk`).
    Row,
    /// Added nothing: a row with the same key is there (maybe just committed by another
    /// node).
    Taken,
}

impl Inserted {
    /// The new row's `pk`; a taken key is `taken`.
    fn pk(self, table: &str, taken: impl FnOnce() -> Error) -> Result<i64> {
        match self {
            Inserted::Pk(pk) => Ok(pk),
            Inserted::Row => Err(Error::Internal(format!("{table} has no pk column"))),
            Inserted::Taken => Err(taken()),
        }
    }

    /// Added; a taken key makes the archive invalid (SQLite's constraint error).
    fn added(self, table: &str) -> Result<()> {
        match self {
            Inserted::Pk(_) | Inserted::Row => Ok(()),
            Inserted::Taken => Err(invalid(format!(
                "records: {table}: two rows have the same key"
            ))),
        }
    }
}

/// Inserts `row` into `table` with the `local` columns set here. A row that breaks a
/// NOT NULL constraint is refused as invalid.
fn insert(
    conn: &PgConn<'_>,
    columns: &mut Columns,
    table: &'static str,
    row: &Row,
    local: &[(&str, Bind)],
) -> Result<Inserted> {
    let known = columns.of(conn, table)?;
    let mut names: Vec<&str> = Vec::with_capacity(row.len() + local.len());
    let mut values: Vec<Bind> = Vec::with_capacity(row.len() + local.len());
    for (name, value) in local {
        names.push(name);
        values.push(value.clone());
    }
    for (name, value) in row {
        let column = match known.get(name) {
            Some(column) if !LOCAL_COLUMNS.contains(&name.as_str()) => column,
            _ => {
                return Err(invalid(format!(
                    "records: {table} has no column {name:?} here (an archive from a newer Lifeboat?)"
                )));
            }
        };
        names.push(name);
        values.push(bind(table, name, column, value)?);
    }
    // The NOT NULL constraints, checked first: PostgreSQL's errors reach here without
    // their codes, and SQLite's constraint errors are an invalid archive.
    for (name, column) in known {
        let missing = match names.iter().position(|n| n == name) {
            Some(i) => values[i].is_null() && column.not_null,
            None => column.not_null && !column.has_default,
        };
        if missing {
            return Err(invalid(format!("records: {table}: a row has no {name}")));
        }
    }
    let keyed = known.contains_key("pk");
    let placeholders = (1..=names.len())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let quoted = names
        .iter()
        .map(|name| format!("\"{name}\""))
        .collect::<Vec<_>>()
        .join(", ");
    // A taken key inserts nothing (and answers no row) rather than failing.
    let sql = format!(
        "INSERT INTO {table} ({quoted}) VALUES ({placeholders}) ON CONFLICT DO NOTHING{}",
        if keyed { " RETURNING pk" } else { "" }
    );
    let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(Bind::as_sql).collect();
    if keyed {
        Ok(match conn.query_opt(&sql, &params)? {
            Some(row) => Inserted::Pk(column(&row, 0)?),
            None => Inserted::Taken,
        })
    } else if conn.execute(&sql, &params)? == 0 {
        Ok(Inserted::Taken)
    } else {
        Ok(Inserted::Row)
    }
}

/// The body of a tenant's schema.
fn schema_body(
    conn: &PgConn<'_>,
    tenant: &str,
    name: &str,
    version: &str,
) -> Result<Option<String>> {
    conn.query_opt(
        "SELECT body FROM schemas WHERE tenant = $1 AND name = $2 AND version = $3",
        &[&tenant, &name, &version],
    )?
    .map(|found| column(&found, 0))
    .transpose()
}

/// Adds `records` to `tenant` (the caller's transaction rolls back on `Err`).
pub(super) fn import(
    conn: &PgConn<'_>,
    tenant: &TenantId,
    records: &Value,
) -> Result<TransferCounts> {
    let t = tenant.as_str();
    let tenant_column = ("tenant", Bind::Text(Some(t.to_owned())));
    let mut counts = TransferCounts::default();
    let mut columns = Columns::default();

    for schema in list(records, "schemas")? {
        let row = object(schema, "schema")?;
        let (name, version) = (
            text(row, "name", "schema")?,
            text(row, "version", "schema")?,
        );
        let mut body = schema_body(conn, t, name, version)?;
        if body.is_none() {
            let inserted = insert(
                conn,
                &mut columns,
                "schemas",
                row,
                std::slice::from_ref(&tenant_column),
            )?;
            match inserted {
                // Another node added it meanwhile: compared as if it had been there.
                Inserted::Taken => body = schema_body(conn, t, name, version)?,
                Inserted::Pk(_) | Inserted::Row => counts.schemas += 1,
            }
        }
        match body {
            Some(body) if Some(body.as_str()) == row.get("body").and_then(Value::as_str) => {}
            Some(_) => {
                return Err(Error::AlreadyExists {
                    what: "schema",
                    id: format!("{name}@{version} (with a different body)"),
                });
            }
            None => {}
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
        )?
        .pk("projects", || Error::AlreadyExists {
            what: "project",
            id: id.to_string(),
        })?;
        for revision in list(doc, "revisions")? {
            let revision = object(revision, "revision")?;
            insert(
                conn,
                &mut columns,
                "revisions",
                revision,
                &[("project_pk", Bind::Int(Some(pk)))],
            )?
            .added("revisions")?;
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
            .query_opt(
                "SELECT 1 FROM sessions WHERE tenant = $1 AND id = $2",
                &[&t, &id.as_str()],
            )?
            .is_some();
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
        )?
        .pk("sessions", || Error::AlreadyExists {
            what: "session",
            id: id.to_string(),
        })?;
        let session_pk = ("session_pk", Bind::Int(Some(pk)));
        for checkpoint in list(doc, "checkpoints")? {
            insert(
                conn,
                &mut columns,
                "checkpoints",
                object(checkpoint, "checkpoint")?,
                std::slice::from_ref(&session_pk),
            )?
            .added("checkpoints")?;
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
                )?
                .added(table)?;
            }
        }
        counts.assets +=
            import_assets(conn, &mut columns, tenant, &Owner::Session(id.clone()), doc)?;
        files::index_imported_pins(conn, pk)?;
        rows::prune_all_checkpoints(conn, pk)?;
        check_session(conn, tenant, &id)?;
        counts.sessions += 1;
    }
    Ok(counts)
}

fn import_assets(
    conn: &PgConn<'_>,
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
                ("tenant", Bind::Text(Some(tenant.as_str().to_owned()))),
                ("owner_kind", Bind::Text(Some(owner.kind().to_owned()))),
                ("owner_id", Bind::Text(Some(owner.id().to_string()))),
            ],
        )?
        .added("assets")?;
        count += 1;
    }
    // Every record must read back as the store's own would.
    let context = format!("records: assets of {} {}", owner.kind(), owner.id());
    assets::all(conn, tenant, owner).map_err(|e| unreadable(&context, e))?;
    Ok(count)
}

/// The project reads back, and its stored revisions rebuild its current state.
fn check_project(conn: &PgConn<'_>, tenant: &TenantId, id: &Id) -> Result<()> {
    let context = format!("records: project {id}");
    let damaged = |e: Error| unreadable(&context, e);
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
fn check_session(conn: &PgConn<'_>, tenant: &TenantId, id: &Id) -> Result<()> {
    let context = format!("records: session {id}");
    let (pk, _) = rows::load_session(conn, tenant, id).map_err(|e| unreadable(&context, e))?;
    let checkpoints = conn.query(
        "SELECT seq, data, sha256, quarantined FROM checkpoints WHERE session_pk = $1",
        &[&pk],
    )?;
    for row in &checkpoints {
        let (seq, data, sha256, quarantined): (i64, String, String, i64) = (
            column(row, 0)?,
            column(row, 1)?,
            column(row, 2)?,
            column(row, 3)?,
        );
        if quarantined == 0 && Sha256::of(data.as_bytes()).as_str() != sha256 {
            return Err(invalid(format!(
                "records: session {id}: checkpoint seq={seq} does not match its SHA-256"
            )));
        }
    }
    rows::all_checkpoints(conn, pk).map_err(|e| unreadable(&context, e))?;
    Ok(())
}
