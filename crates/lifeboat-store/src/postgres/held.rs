//! The rows a batch's writes change most — a session's update, its new checkpoint (and
//! the files it pins), the pruning of the checkpoint that pushed out, an event — held
//! back and written with one statement per table for many writes at once (set-based),
//! instead of one statement each: per statement PostgreSQL parses, plans, locks and
//! executes again, and those costs, not the rows, are most of a small write's
//! (`crates/lifeboat-bench/pg-shapes/run.py` measures both shapes).
//!
//! What a held row must never meet is a statement that reads or writes it before it is
//! written. Two rules keep that (`writer.rs` follows the first, [`PgConn`] the second):
//! - the writer sends every held row out before a write about a record it already holds
//!   rows of, and before and after a write about no one record (a sweep, an import): the
//!   writes of one record follow each other in order, and a write about one record
//!   touches no other record's rows (`Store::write_about`);
//! - inside a write, a statement naming one of these tables, once the write holds rows,
//!   first sends the write's own held rows out.
//!
//! Sending out only queues the statements on the connection (`Link::write`): they go with
//! the next statement waited for, so holding costs no round trip. On any other connection
//! than the writer's, a row is sent out as it is held.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::Value;
use tokio_postgres::Row as PgRow;
use tokio_postgres::types::ToSql;

use super::conn::{Link, nul_in_text};
use super::rows::TENANT_COLUMN;
use crate::stored::prunable_sql;
use crate::{Error, Result};

/// Held bytes past which the writer sends every held row out before the next write: a
/// statement's parameters stay well under PostgreSQL's 1 GB for a message, and
/// a batch of large checkpoints costs memory for one window of them at a time.
const BYTES_SENT_AT: usize = 32 << 20;

/// The tables held rows go to: a statement naming one of them sees held rows first.
const TABLES: [&str; 4] = ["sessions", "checkpoints", "pinned_files", "events"];

/// The columns of a held session update, with their types: its `pk`, then every column
/// that changes over a session's life.
const SESSION_CHANGES: [(&str, Sql); 26] = [
    ("pk", Sql::Bigint),
    ("status", Sql::Text),
    ("attempt", Sql::Bigint),
    ("updated_at", Sql::Bigint),
    ("last_heartbeat_at", Sql::Bigint),
    ("lease_expires_at", Sql::Bigint),
    ("lease_ran_out_while_down", Sql::Bigint),
    ("progress_percent", Sql::Float),
    ("progress_stage", Sql::Text),
    ("progress_completed_units", Sql::Bigint),
    ("progress_total_units", Sql::Bigint),
    ("progress_changed_at", Sql::Bigint),
    ("stalled", Sql::Bigint),
    ("metrics", Sql::Text),
    ("error", Sql::Text),
    ("crash_type", Sql::Text),
    ("crash_detected_at", Sql::Bigint),
    ("crash_attempt", Sql::Bigint),
    ("crash_lease_expires_at", Sql::Bigint),
    ("crash_work_lost_ms", Sql::Bigint),
    ("latest_seq", Sql::Bigint),
    ("latest_kind", Sql::Text),
    ("latest_stage", Sql::Text),
    ("latest_created_at", Sql::Bigint),
    ("last_seq", Sql::Bigint),
    ("completed_at", Sql::Bigint),
];

/// The columns of a held checkpoint.
const CHECKPOINT_COLUMNS: [(&str, Sql); 12] = [
    ("session_pk", Sql::Bigint),
    ("seq", Sql::Bigint),
    ("attempt", Sql::Bigint),
    ("kind", Sql::Text),
    ("stage", Sql::Text),
    ("position", Sql::Text),
    ("completed_units", Sql::Bigint),
    ("total_units", Sql::Bigint),
    ("data", Sql::Text),
    ("sha256", Sql::Text),
    ("assets", Sql::Text),
    ("created_at", Sql::Bigint),
];

/// The columns of a held pin.
const PIN_COLUMNS: [(&str, Sql); 4] = [
    ("session_pk", Sql::Bigint),
    ("seq", Sql::Bigint),
    ("storage", Sql::Text),
    ("key", Sql::Text),
];

/// The columns of a held event.
const EVENT_COLUMNS: [(&str, Sql); 6] = [
    ("tenant", Sql::Text),
    ("type", Sql::Text),
    ("session_id", Sql::Text),
    ("project_id", Sql::Text),
    ("data", Sql::Text),
    ("created_at", Sql::Bigint),
];

/// The held rows' statements are planned once per connection (a generic plan), not for
/// every batch: their parameters are rows, whose values no plan depends on, and planning
/// them cost about 0.36 ms a batch, which the writer's one connection spends in series
/// with every batch. The plan is made with every row reached by an index, as these
/// statements, which find rows by key, always want: a generic plan made while a table was
/// small would otherwise scan it whole, and keep doing so after it grew. (The writer's lock
/// ahead by `pk` is planned so too.)
pub(super) const PLANS_ONCE: &str = "SET LOCAL plan_cache_mode = force_generic_plan; \
    SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; \
    SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off";

/// Back to the writer connection's own settings (`writer::open`): every other statement
/// planned for its parameters, with every plan allowed. Sent before the next such statement
/// (`conn::Owned`), not after the statements planned once: a batch whose writes send none
/// of their own (checkpoints whose sessions were locked ahead) sets its plan settings once.
pub(super) const PLANS_EACH_TIME: &str = "SET LOCAL plan_cache_mode = force_custom_plan; \
    SET LOCAL enable_seqscan = on; SET LOCAL enable_bitmapscan = on; \
    SET LOCAL enable_hashjoin = on; SET LOCAL enable_mergejoin = on";

/// Every held session update, by `pk`.
static UPDATE_SESSIONS: LazyLock<String> = LazyLock::new(|| {
    let set: Vec<String> = SESSION_CHANGES[1..]
        .iter()
        .map(|(column, _)| format!("{column} = v.{column}"))
        .collect();
    format!(
        "UPDATE sessions SET {} FROM {} WHERE sessions.pk = v.pk",
        set.join(", "),
        unnest(&SESSION_CHANGES, "")
    )
});

static INSERT_CHECKPOINTS: LazyLock<String> =
    LazyLock::new(|| insert("checkpoints", &CHECKPOINT_COLUMNS, ""));

static INSERT_PINS: LazyLock<String> =
    LazyLock::new(|| insert("pinned_files", &PIN_COLUMNS, " ON CONFLICT DO NOTHING"));

/// In the order held (one session's events always are: see the rules above), which the
/// log's ids, and so its numbers, follow.
static INSERT_EVENTS: LazyLock<String> = LazyLock::new(|| {
    let names = names(&EVENT_COLUMNS);
    format!(
        "INSERT INTO events ({names}) SELECT {names} FROM {} ORDER BY v.ordinality",
        unnest(&EVENT_COLUMNS, " WITH ORDINALITY")
    )
});

/// Inserts rows sent as one array per column.
fn insert(table: &str, columns: &[(&str, Sql)], then: &str) -> String {
    let names = names(columns);
    format!(
        "INSERT INTO {table} ({names}) SELECT {names} FROM {}{then}",
        unnest(columns, "")
    )
}

/// `columns` as rows `v`, from one array parameter each (`$1` the first); `ordinality`
/// (` WITH ORDINALITY`, or nothing) adds each row's position as `v.ordinality`.
fn unnest(columns: &[(&str, Sql)], ordinality: &str) -> String {
    let arrays: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(index, (_, sql))| format!("${}::{}[]", index + 1, sql.name()))
        .collect();
    let more = if ordinality.is_empty() {
        ""
    } else {
        ", ordinality"
    };
    format!(
        "unnest({}){ordinality} AS v ({}{more})",
        arrays.join(", "),
        names(columns)
    )
}

fn names(columns: &[(&str, Sql)]) -> String {
    columns
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// For each session, the prunable checkpoint at position `keep` from the newest, and its
/// pins (see `rows::prune_checkpoints`, whose rule this is for many sessions at once).
static PRUNE: LazyLock<String> = LazyLock::new(|| {
    let prunable = prunable_sql();
    format!(
        "WITH v AS (SELECT * FROM unnest($1::bigint[], $2::bigint[]) AS v (pk, keep)), \
         doomed AS (DELETE FROM checkpoints c USING v, LATERAL \
                    (SELECT seq FROM checkpoints WHERE session_pk = v.pk AND {prunable} \
                     ORDER BY seq DESC OFFSET v.keep LIMIT 1) cut \
                    WHERE c.session_pk = v.pk AND c.seq = cut.seq \
                    RETURNING c.session_pk, c.seq, c.assets <> '[]' AS pins) \
         DELETE FROM pinned_files p USING doomed d \
         WHERE p.session_pk = d.session_pk AND p.seq = d.seq AND d.pins"
    )
});

/// A row to hold: its columns by name (a JSON object), each sent in its column's array
/// (see [`arrays`]).
pub(super) enum Row {
    /// A session's changed columns (with its `pk`).
    Session(i64, Value),
    /// A session's new checkpoint, and the files it pins.
    Checkpoint(i64, Value, Vec<Value>),
    /// The pruning after a session's new checkpoint: its `pk`, the prunable ones it keeps.
    Prune(i64, i64),
    /// An event.
    Event(Value),
}

/// Rows held, per table, in the order held.
#[derive(Default)]
struct Rows {
    sessions: Vec<(i64, Value)>,
    checkpoints: Vec<(i64, Value)>,
    pins: Vec<Value>,
    prunes: Vec<(i64, i64)>,
    events: Vec<Value>,
}

/// A position in each table's rows.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Mark {
    sessions: usize,
    checkpoints: usize,
    pins: usize,
    prunes: usize,
    events: usize,
}

impl Rows {
    fn mark(&self) -> Mark {
        Mark {
            sessions: self.sessions.len(),
            checkpoints: self.checkpoints.len(),
            pins: self.pins.len(),
            prunes: self.prunes.len(),
            events: self.events.len(),
        }
    }

    fn truncate(&mut self, mark: Mark) {
        self.sessions.truncate(mark.sessions);
        self.checkpoints.truncate(mark.checkpoints);
        self.pins.truncate(mark.pins);
        self.prunes.truncate(mark.prunes);
        self.events.truncate(mark.events);
    }
}

/// The rows a batch holds back, and where the running write's own begin; and the rows of
/// the sessions it locked ahead, by tenant and id, until a write takes them.
pub(super) struct Held<'a> {
    link: &'a dyn Link,
    rows: RefCell<Rows>,
    job: Cell<Mark>,
    ahead: RefCell<HashMap<(String, String), PgRow>>,
    /// About how many bytes of text the held rows hold.
    bytes: Cell<usize>,
}

impl<'a> Held<'a> {
    pub(super) fn new(link: &'a dyn Link) -> Held<'a> {
        Held {
            link,
            rows: RefCell::new(Rows::default()),
            job: Cell::new(Mark::default()),
            ahead: RefCell::new(HashMap::new()),
            bytes: Cell::new(0),
        }
    }

    /// Whether the held rows are large enough to send out before the next write.
    pub(super) fn is_large(&self) -> bool {
        self.bytes.get() >= BYTES_SENT_AT
    }

    /// Keeps the rows of sessions locked ahead (selected with `rows::SESSION_COLUMNS`).
    pub(super) fn lock_ahead(&self, rows: Vec<PgRow>) {
        let mut ahead = self.ahead.borrow_mut();
        for row in rows {
            if let (Ok(tenant), Ok(id)) = (row.try_get(TENANT_COLUMN), row.try_get(1)) {
                ahead.insert((tenant, id), row);
            }
        }
    }

    /// The row of a session locked ahead, if no write took it yet.
    pub(super) fn take_ahead(&self, tenant: &str, id: &str) -> Option<PgRow> {
        self.ahead
            .borrow_mut()
            .remove(&(tenant.to_owned(), id.to_owned()))
    }

    /// Holds `row` for the running write. A second checkpoint, or a second pruning, of one
    /// session (the pruning statement finds one cut per session, after every insert) sends
    /// the write's rows out first.
    pub(super) fn hold(&self, row: Row) -> Result<()> {
        refuse_nul(&row)?;
        self.bytes.set(self.bytes.get() + text_bytes(&row));
        let job = self.job.get();
        let repeats = {
            let rows = self.rows.borrow();
            match &row {
                Row::Checkpoint(pk, ..) => rows.checkpoints[job.checkpoints..]
                    .iter()
                    .any(|(held, _)| held == pk),
                Row::Prune(pk, _) => rows.prunes[job.prunes..].iter().any(|(held, _)| held == pk),
                Row::Session(..) | Row::Event(_) => false,
            }
        };
        if repeats {
            self.send_job()?;
        }
        let mut rows = self.rows.borrow_mut();
        match row {
            Row::Session(pk, columns) => rows.sessions.push((pk, columns)),
            Row::Checkpoint(pk, columns, pins) => {
                rows.checkpoints.push((pk, columns));
                rows.pins.extend(pins);
            }
            Row::Prune(pk, keep) => rows.prunes.push((pk, keep)),
            Row::Event(columns) => rows.events.push(columns),
        }
        Ok(())
    }

    /// A write begins: the rows held from now on are its own.
    pub(super) fn begin_job(&self) {
        self.job.set(self.rows.borrow().mark());
    }

    /// The running write is rolled back: forgets the rows it holds.
    pub(super) fn drop_job(&self) {
        self.rows.borrow_mut().truncate(self.job.get());
    }

    /// Whether `sql` must see the running write's held rows first: it names a table they
    /// go to, and the write holds some.
    pub(super) fn must_precede(&self, sql: &str) -> bool {
        self.rows.borrow().mark() != self.job.get()
            && sql
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .any(|word| TABLES.contains(&word))
    }

    /// Sends out the rows the running write holds.
    pub(super) fn send_job(&self) -> Result<()> {
        self.send_from(self.job.get())
    }

    /// Sends out every row held.
    pub(super) fn send_all(&self) -> Result<()> {
        self.send_from(Mark::default())?;
        self.job.set(Mark::default());
        self.bytes.set(0);
        Ok(())
    }

    /// Queues `sql` with `rows` as its arrays of `columns`.
    fn write_rows(
        &self,
        sql: &str,
        columns: &[(&str, Sql)],
        rows: impl IntoIterator<Item = Value>,
    ) -> Result<()> {
        let arrays = arrays(columns, rows.into_iter().collect())?;
        let params: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(Array::param).collect();
        self.link.write(sql, &params)
    }

    /// Queues the statements writing the rows held since `from` (planned once, see
    /// [`PLANS_ONCE`]), and forgets them.
    fn send_from(&self, from: Mark) -> Result<()> {
        let mut rows = {
            let mut held = self.rows.borrow_mut();
            Rows {
                sessions: held.sessions.split_off(from.sessions),
                checkpoints: held.checkpoints.split_off(from.checkpoints),
                pins: held.pins.split_off(from.pins),
                prunes: held.prunes.split_off(from.prunes),
                events: held.events.split_off(from.events),
            }
        };
        if rows.mark() == Mark::default() {
            return Ok(());
        }
        self.link.planned_once(&mut || self.write_all(&mut rows))
    }

    /// Queues one statement per table of `rows`, and empties it.
    fn write_all(&self, rows: &mut Rows) -> Result<()> {
        let rows = std::mem::take(rows);
        if !rows.sessions.is_empty() {
            // A session updated twice since `from` is written as last held.
            let last: HashMap<i64, usize> = rows
                .sessions
                .iter()
                .enumerate()
                .map(|(index, (pk, _))| (*pk, index))
                .collect();
            let updates = rows
                .sessions
                .into_iter()
                .enumerate()
                .filter(|(index, (pk, _))| last.get(pk) == Some(index))
                .map(|(_, (_, columns))| columns);
            self.write_rows(&UPDATE_SESSIONS, &SESSION_CHANGES, updates)?;
        }
        if !rows.checkpoints.is_empty() {
            let checkpoints = rows.checkpoints.into_iter().map(|(_, columns)| columns);
            self.write_rows(&INSERT_CHECKPOINTS, &CHECKPOINT_COLUMNS, checkpoints)?;
        }
        if !rows.pins.is_empty() {
            self.write_rows(&INSERT_PINS, &PIN_COLUMNS, rows.pins)?;
        }
        if !rows.prunes.is_empty() {
            let (pks, keeps): (Vec<i64>, Vec<i64>) = rows.prunes.into_iter().unzip();
            self.link.write(&PRUNE, &[&pks, &keeps])?;
        }
        if !rows.events.is_empty() {
            self.write_rows(&INSERT_EVENTS, &EVENT_COLUMNS, rows.events)?;
        }
        Ok(())
    }
}

/// The SQL type of a held column.
#[derive(Clone, Copy)]
enum Sql {
    Bigint,
    Float,
    Text,
}

impl Sql {
    fn name(self) -> &'static str {
        match self {
            Sql::Bigint => "bigint",
            Sql::Float => "double precision",
            Sql::Text => "text",
        }
    }
}

/// One column of held rows, the array parameter of their statement: sent in binary, it
/// leaves PostgreSQL nothing to parse (a JSON parameter made it lex every byte of every
/// checkpoint's data, an eighth of the writer's backend's time).
enum Array {
    Bigint(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Text(Vec<Option<String>>),
}

impl Array {
    fn of(sql: Sql, rows: usize) -> Array {
        match sql {
            Sql::Bigint => Array::Bigint(Vec::with_capacity(rows)),
            Sql::Float => Array::Float(Vec::with_capacity(rows)),
            Sql::Text => Array::Text(Vec::with_capacity(rows)),
        }
    }

    /// Appends `value`; answers it back if it is not of this column's type.
    fn push(&mut self, value: Value) -> std::result::Result<(), Value> {
        match (self, value) {
            (Array::Bigint(values), Value::Null) => values.push(None),
            (Array::Float(values), Value::Null) => values.push(None),
            (Array::Text(values), Value::Null) => values.push(None),
            (Array::Bigint(values), Value::Number(n)) if n.is_i64() => values.push(n.as_i64()),
            (Array::Float(values), Value::Number(n)) => values.push(n.as_f64()),
            (Array::Text(values), Value::String(text)) => values.push(Some(text)),
            (_, value) => return Err(value),
        }
        Ok(())
    }

    fn param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Array::Bigint(values) => values,
            Array::Float(values) => values,
            Array::Text(values) => values,
        }
    }
}

/// `rows` (objects by column name) as one array per column of `columns`. A row must name
/// every column and no other (NULL is an explicit `null`): a misspelt name fails every
/// write that holds such a row, rather than storing NULL.
fn arrays(columns: &[(&str, Sql)], rows: Vec<Value>) -> Result<Vec<Array>> {
    let mut arrays: Vec<Array> = columns
        .iter()
        .map(|(_, sql)| Array::of(*sql, rows.len()))
        .collect();
    for row in rows {
        let Value::Object(mut row) = row else {
            return Err(Error::Internal("a held row is not an object".to_owned()));
        };
        for ((name, sql), array) in columns.iter().zip(&mut arrays) {
            let value = row
                .remove(*name)
                .ok_or_else(|| Error::Internal(format!("a held row has no column {name}")))?;
            array.push(value).map_err(|value| {
                Error::Internal(format!(
                    "held column {name} ({}) cannot hold {value}",
                    sql.name()
                ))
            })?;
        }
        if let Some(name) = row.keys().next() {
            return Err(Error::Internal(format!(
                "a held row names a column its statement does not write: {name}"
            )));
        }
    }
    Ok(arrays)
}

/// About how many bytes of text `row` holds.
fn text_bytes(row: &Row) -> usize {
    fn bytes(value: &Value) -> usize {
        match value {
            Value::String(text) => text.len(),
            Value::Array(items) => items.iter().map(bytes).sum(),
            Value::Object(columns) => columns.values().map(bytes).sum(),
            _ => 8,
        }
    }
    match row {
        Row::Session(_, columns) | Row::Event(columns) => bytes(columns),
        Row::Checkpoint(_, columns, pins) => bytes(columns) + pins.iter().map(bytes).sum::<usize>(),
        Row::Prune(..) => 16,
    }
}

/// PostgreSQL's text cannot hold U+0000: a row with one is refused as it is held, so that
/// the write that holds it is refused, not the batch that would send it.
fn refuse_nul(row: &Row) -> Result<()> {
    fn has_nul(value: &Value) -> bool {
        match value {
            Value::String(text) => text.contains('\0'),
            Value::Array(items) => items.iter().any(has_nul),
            Value::Object(columns) => columns.values().any(has_nul),
            _ => false,
        }
    }
    let nul = match row {
        Row::Session(_, columns) | Row::Event(columns) => has_nul(columns),
        Row::Checkpoint(_, columns, pins) => has_nul(columns) || pins.iter().any(has_nul),
        Row::Prune(..) => false,
    };
    if nul { Err(nul_in_text()) } else { Ok(()) }
}
