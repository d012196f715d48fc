//! The export document, whatever the backend: its rows are JSON objects (column → value)
//! without the columns that only mean something inside one store, and reading it refuses
//! what is not there or not well formed as a damaged archive. Both backends' `transfer`
//! modules read and write it with these.

use lifeboat_core::Id;
use serde_json::{Map, Value};

use crate::{Error, Result};

/// One exported row: column → value.
pub(crate) type Row = Map<String, Value>;

/// Columns that only mean something inside one store.
pub(crate) const LOCAL_COLUMNS: [&str; 6] = [
    "pk",
    "tenant",
    "session_pk",
    "project_pk",
    "owner_kind",
    "owner_id",
];

/// A damaged archive, saying what is wrong.
pub(crate) fn invalid(what: impl Into<String>) -> Error {
    Error::InvalidArchive(what.into())
}

/// `doc[field]` as an array (absent: empty).
pub(crate) fn list<'a>(doc: &'a Value, field: &str) -> Result<&'a [Value]> {
    match doc.get(field) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(invalid(format!("records: {field} is not a list"))),
    }
}

/// `value` as a row.
pub(crate) fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Row> {
    value
        .as_object()
        .ok_or_else(|| invalid(format!("records: {what} is not an object")))
}

/// A row's text column.
pub(crate) fn text<'a>(row: &'a Row, column: &str, what: &str) -> Result<&'a str> {
    row.get(column)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("records: a {what} has no {column}")))
}

/// A row's `id`.
pub(crate) fn id_of(row: &Row, what: &str) -> Result<Id> {
    Id::parse(text(row, "id", what)?).map_err(|e| invalid(format!("records: {what} id: {e}")))
}
