//! One transaction seen from a store job: jobs are synchronous (they run on a blocking
//! thread or the writer's own thread), so each statement is prepared (cached per connection)
//! and run by blocking on the async client. A job's row modules call these few methods, as
//! the SQLite modules call `rusqlite`'s.
//!
//! On the writer's connection, a statement whose answer the job does not need
//! ([`PgConn::write`]) is not sent at once: it goes out with the next statement that is
//! waited for, in order, in one round trip (pipelined), and the first error among them
//! is that statement's error. A job thus waits for the database once per statement whose
//! answer it needs (a checkpoint: once, for its session's row), not once per statement.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use bytes::{BufMut, BytesMut};
use deadpool_postgres::Transaction;
use tokio::runtime::{Handle, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Row, Statement};

use super::held::{Held, PLANS_EACH_TIME, PLANS_ONCE, Row as HeldRow};
use crate::{Error, Result};

/// A statement's parameters.
pub(super) type Params<'p> = [&'p (dyn ToSql + Sync)];

/// Where a transaction's statements go.
pub(super) trait Link {
    /// Every row `sql` answers.
    fn query(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>>;
    /// Runs `sql`; answers how many rows it changed.
    fn execute(&self, sql: &str, params: &Params<'_>) -> Result<u64>;
    /// Runs `sql`, perhaps later: its error may come with a later statement's answer.
    fn write(&self, sql: &str, params: &Params<'_>) -> Result<()> {
        self.execute(sql, params).map(drop)
    }
    /// Runs `work`, whose statements are planned once per connection (`held::PLANS_ONCE`)
    /// where this connection's settings are its own (the writer's): elsewhere, as any.
    fn planned_once(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        work()
    }
}

/// A pooled connection's transaction, its connection driven by the server's runtime.
pub(super) struct Pooled<'a> {
    pub(super) handle: Handle,
    pub(super) tx: &'a Transaction<'a>,
}

impl Link for Pooled<'_> {
    fn query(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>> {
        self.handle
            .block_on(async {
                let statement = self.tx.prepare_cached(sql).await?;
                self.tx.query(&statement, params).await
            })
            .map_err(translate)
    }

    fn execute(&self, sql: &str, params: &Params<'_>) -> Result<u64> {
        self.handle
            .block_on(async {
                let statement = self.tx.prepare_cached(sql).await?;
                self.tx.execute(&statement, params).await
            })
            .map_err(translate)
    }
}

/// The connection the writer thread owns and drives itself on a runtime of its own, so that
/// a statement's round trip wakes no other thread.
pub(super) struct Owned {
    pub(super) runtime: Runtime,
    pub(super) client: Client,
    statements: RefCell<HashMap<String, Statement>>,
    /// Statements not sent yet, in order.
    deferred: RefCell<Vec<Deferred>>,
    /// Times statements were sent.
    sends: Cell<u64>,
    /// The first error of a held-back statement (see [`Owned::held_back_failure`]).
    failed: Cell<Option<Error>>,
    /// Whether `SAVEPOINT job` goes before the next statement (see
    /// [`Owned::savepoint_before_next`]).
    savepoint: Cell<bool>,
    /// The plan settings the statements sent and held back leave in force.
    plans: Cell<Plans>,
    /// Whether statements are being queued inside [`Link::planned_once`].
    planning_once: Cell<bool>,
}

/// Which plan settings are in force in the open transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Plans {
    /// The connection's own (`held::PLANS_EACH_TIME`).
    EachTime,
    /// `held::PLANS_ONCE`.
    Once,
    /// Not known here: a rollback to a savepoint, or statements forgotten, may have undone
    /// the last settings. The next statements set theirs.
    Unknown,
}

/// A statement held back until the next one that is waited for.
enum Deferred {
    /// Statements without parameters (`SAVEPOINT …`).
    Simple(&'static str),
    /// A prepared statement and its parameters, already encoded.
    Prepared(Statement, Vec<Encoded>),
}

/// One parameter in PostgreSQL's binary form, encoded when its statement was deferred
/// (the values it came from are the job's, gone by the time it is sent).
#[derive(Debug)]
struct Encoded(Option<BytesMut>);

impl ToSql for Encoded {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            Some(bytes) => {
                out.put_slice(bytes);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    /// Checked when it was encoded, against the statement's own parameter types.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A statement's answer, still to come.
type Answer<'f> =
    Pin<Box<dyn Future<Output = std::result::Result<Reply, tokio_postgres::Error>> + 'f>>;

/// What a statement answered.
enum Reply {
    Prepared(Statement),
    Rows(Vec<Row>),
    Count(u64),
    Done,
}

impl Owned {
    pub(super) fn new(runtime: Runtime, client: Client) -> Owned {
        Owned {
            runtime,
            client,
            statements: RefCell::new(HashMap::new()),
            deferred: RefCell::new(Vec::new()),
            sends: Cell::new(0),
            failed: Cell::new(None),
            savepoint: Cell::new(false),
            plans: Cell::new(Plans::EachTime),
            planning_once: Cell::new(false),
        }
    }

    /// A transaction began: the connection's own plan settings are in force.
    pub(super) fn began(&self) {
        self.plans.set(Plans::EachTime);
        self.planning_once.set(false);
    }

    /// Rolls back to a savepoint (`sql`, `ROLLBACK TO …`), undoing the plan settings made
    /// since too; see [`Owned::batch`].
    pub(super) fn rollback_to(
        &self,
        sql: &'static str,
    ) -> (
        Option<Error>,
        std::result::Result<(), tokio_postgres::Error>,
    ) {
        self.plans.set(Plans::Unknown);
        self.batch(sql)
    }

    /// Before a statement planned for its parameters: sets the connection's own plan
    /// settings back, where others may be in force (and it is not queued inside
    /// [`Link::planned_once`]).
    fn plans_each_time(&self) {
        if !self.planning_once.get() && self.plans.get() != Plans::EachTime {
            self.place_savepoint();
            self.defer(PLANS_EACH_TIME);
            self.plans.set(Plans::EachTime);
        }
    }

    /// With `true`, places `SAVEPOINT job` before the next statement held back or sent, if
    /// any is (a job that sends none needs none: nothing of it reaches the database); with
    /// `false`, no longer.
    pub(super) fn savepoint_before_next(&self, due: bool) {
        self.savepoint.set(due);
    }

    /// Holds back the savepoint due, if one is.
    fn place_savepoint(&self) {
        if self.savepoint.replace(false) {
            self.deferred
                .borrow_mut()
                .push(Deferred::Simple("SAVEPOINT job"));
        }
    }

    /// `sql` prepared on this connection: from the cache, or prepared after what was
    /// held back (so that the job's savepoint is in place should the preparing fail).
    fn prepared(&self, sql: &str) -> Result<Statement> {
        if let Some(statement) = self.statements.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let statement = match self.send_for(Box::pin(async move {
            self.client.prepare(sql).await.map(Reply::Prepared)
        }))? {
            Reply::Prepared(statement) => statement,
            _ => {
                return Err(Error::Internal(
                    "preparing answered no statement".to_owned(),
                ));
            }
        };
        self.statements
            .borrow_mut()
            .insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    /// Holds back `sql`, a statement without parameters or answer, until the next one
    /// waited for.
    pub(super) fn defer(&self, sql: &'static str) {
        self.deferred.borrow_mut().push(Deferred::Simple(sql));
    }

    /// How many times statements were sent so far.
    pub(super) fn sends(&self) -> u64 {
        self.sends.get()
    }

    /// How many statements are held back.
    pub(super) fn held_back(&self) -> usize {
        self.deferred.borrow().len()
    }

    /// Forgets the statements held back after the first `mark`.
    pub(super) fn forget_from(&self, mark: usize) {
        let mut deferred = self.deferred.borrow_mut();
        if deferred.len() > mark {
            // Settings held back among them are forgotten too.
            self.plans.set(Plans::Unknown);
        }
        deferred.truncate(mark);
    }

    /// The error of a statement that was held back and then failed, if one did since the
    /// last call: the transaction is lost, whichever job it belonged to.
    pub(super) fn held_back_failure(&self) -> Option<Error> {
        self.failed.take()
    }

    /// Runs `sql`, statements without parameters or answers (`COMMIT`, `RELEASE …`), after
    /// what was held back, in one round trip. Answers the first error of what was held back,
    /// and `sql`'s own outcome.
    pub(super) fn batch(
        &self,
        sql: &str,
    ) -> (
        Option<Error>,
        std::result::Result<(), tokio_postgres::Error>,
    ) {
        let (earlier, last) = self.send(Box::pin(async move {
            self.client.batch_execute(sql).await.map(|()| Reply::Done)
        }));
        (earlier, last.map(drop))
    }

    /// Sends what was held back and then `last`, and waits for every answer: answers the
    /// first error among those held back, and `last`'s answer.
    fn send<'f>(
        &'f self,
        last: Answer<'f>,
    ) -> (
        Option<Error>,
        std::result::Result<Reply, tokio_postgres::Error>,
    ) {
        self.place_savepoint();
        self.sends.set(self.sends.get() + 1);
        let deferred = std::mem::take(&mut *self.deferred.borrow_mut());
        let mut answers: Vec<Answer<'_>> = deferred
            .iter()
            .map(|statement| -> Answer<'_> {
                match statement {
                    Deferred::Simple(sql) => Box::pin(async move {
                        self.client.batch_execute(sql).await.map(|()| Reply::Done)
                    }),
                    Deferred::Prepared(statement, params) => Box::pin(async move {
                        let params: Vec<&(dyn ToSql + Sync)> =
                            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                        self.client
                            .execute(statement, &params)
                            .await
                            .map(Reply::Count)
                    }),
                }
            })
            .collect();
        answers.push(last);
        let mut replies: Vec<Option<std::result::Result<Reply, tokio_postgres::Error>>> =
            answers.iter().map(|_| None).collect();
        // Polled in order, so that the requests go out in order; then until all answered.
        self.runtime.block_on(std::future::poll_fn(|cx| {
            let mut waiting = false;
            for (answer, reply) in answers.iter_mut().zip(replies.iter_mut()) {
                if reply.is_none() {
                    match answer.as_mut().poll(cx) {
                        Poll::Ready(done) => *reply = Some(done),
                        Poll::Pending => waiting = true,
                    }
                }
            }
            if waiting {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        }));
        drop(answers);
        let mut replies = replies.into_iter().flatten();
        let last = replies.next_back();
        let earlier = replies.find_map(std::result::Result::err);
        let last = last.unwrap_or_else(|| Ok(Reply::Done));
        let earlier = earlier.map(translate);
        if let Some(error) = &earlier {
            let failed = self.failed.take();
            self.failed.set(failed.or_else(|| Some(error.clone())));
        }
        (earlier, last)
    }

    /// [`Owned::send`] for a statement waited for: the first error wins.
    fn send_for(&self, last: Answer<'_>) -> Result<Reply> {
        match self.send(last) {
            (Some(error), _) => Err(error),
            (None, Err(error)) => Err(translate(error)),
            (None, Ok(reply)) => Ok(reply),
        }
    }
}

impl Link for Owned {
    fn query(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>> {
        self.plans_each_time();
        let statement = self.prepared(sql)?;
        match self.send_for(Box::pin(async move {
            self.client.query(&statement, params).await.map(Reply::Rows)
        }))? {
            Reply::Rows(rows) => Ok(rows),
            _ => Err(Error::Internal("a query answered no rows".to_owned())),
        }
    }

    fn execute(&self, sql: &str, params: &Params<'_>) -> Result<u64> {
        self.plans_each_time();
        let statement = self.prepared(sql)?;
        match self.send_for(Box::pin(async move {
            self.client
                .execute(&statement, params)
                .await
                .map(Reply::Count)
        }))? {
            Reply::Count(count) => Ok(count),
            _ => Err(Error::Internal("a statement answered no count".to_owned())),
        }
    }

    fn write(&self, sql: &str, params: &Params<'_>) -> Result<()> {
        self.plans_each_time();
        let statement = self.prepared(sql)?;
        let types = statement.params();
        if types.len() != params.len() {
            return Err(Error::Internal(format!(
                "a statement of {} parameters was given {}",
                types.len(),
                params.len()
            )));
        }
        let encoded = params
            .iter()
            .zip(types)
            .enumerate()
            .map(|(n, (param, ty))| {
                let mut bytes = BytesMut::new();
                match param.to_sql_checked(ty, &mut bytes) {
                    Ok(IsNull::Yes) => Ok(Encoded(None)),
                    // Refused here, by the job that sent it, not later with another's.
                    Ok(IsNull::No) if is_text(ty) && bytes.contains(&0) => Err(nul_in_text()),
                    Ok(IsNull::No) => Ok(Encoded(Some(bytes))),
                    Err(e) => Err(Error::Internal(format!("parameter {n}: {e}"))),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        self.place_savepoint();
        self.deferred
            .borrow_mut()
            .push(Deferred::Prepared(statement, encoded));
        Ok(())
    }

    /// The settings are held back like a statement of the running job, after its
    /// savepoint, so that a job rolled back takes them back with it; they stay in force
    /// after `work` until a statement planned for its parameters comes
    /// (`plans_each_time`), so that the lock ahead and the held rows after it share them.
    fn planned_once(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        if self.plans.get() != Plans::Once {
            self.place_savepoint();
            self.defer(PLANS_ONCE);
            self.plans.set(Plans::Once);
        }
        /// Ends `planned_once` however `work` ends (a panicking job is caught, and its
        /// connection kept).
        struct Planning<'o>(&'o Cell<bool>);
        impl Drop for Planning<'_> {
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        self.planning_once.set(true);
        let _planning = Planning(&self.planning_once);
        work()
    }
}

/// The transaction a job runs in.
pub(super) struct PgConn<'a> {
    link: &'a dyn Link,
    writing: bool,
    /// The rows the writer's batch holds back (see `held.rs`); none elsewhere.
    held: Option<&'a Held<'a>>,
    /// Whether the job recorded an event (the store then runs the sequencer after commit).
    events: Cell<bool>,
}

impl<'a> PgConn<'a> {
    pub(super) fn new(link: &'a dyn Link, writing: bool) -> PgConn<'a> {
        PgConn {
            link,
            writing,
            held: None,
            events: Cell::new(false),
        }
    }

    /// The writer's transaction, whose batch holds rows back in `held`.
    pub(super) fn holding(link: &'a dyn Link, held: &'a Held<'a>) -> PgConn<'a> {
        PgConn {
            held: Some(held),
            ..PgConn::new(link, true)
        }
    }

    /// Writes `row` with the others of its table at once: held back in the writer's batch
    /// (see `held.rs`), sent out at once elsewhere.
    pub(super) fn hold(&self, row: HeldRow) -> Result<()> {
        match self.held {
            Some(held) => held.hold(row),
            None => {
                let held = Held::new(self.link);
                held.hold(row)?;
                held.send_all()
            }
        }
    }

    /// The row of session `id` of `tenant` if the writer locked it ahead for this job
    /// (`writer::lock_ahead`): taken, so a second look reads the table.
    pub(super) fn locked_ahead(&self, tenant: &str, id: &str) -> Option<Row> {
        self.held.and_then(|held| held.take_ahead(tenant, id))
    }

    /// Sends out the job's held rows before `sql` if it may meet them.
    fn precede(&self, sql: &str) -> Result<()> {
        match self.held {
            Some(held) if held.must_precede(sql) => held.send_job(),
            _ => Ok(()),
        }
    }

    /// Notes that this transaction recorded an event.
    pub(super) fn note_event(&self) {
        self.events.set(true);
    }

    /// Whether this transaction recorded an event.
    pub(super) fn recorded_events(&self) -> bool {
        self.events.get()
    }

    /// Every row `sql` answers.
    pub(super) fn query(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>> {
        self.precede(sql)?;
        self.link.query(sql, params)
    }

    /// The one row `sql` answers, if any (more than one is an error).
    pub(super) fn query_opt(&self, sql: &str, params: &Params<'_>) -> Result<Option<Row>> {
        let mut rows = self.query(sql, params)?;
        match rows.len() {
            0 | 1 => Ok(rows.pop()),
            n => Err(Error::Internal(format!(
                "a statement that answers one row at most answered {n}"
            ))),
        }
    }

    /// The one row `sql` answers (none is an error).
    pub(super) fn query_one(&self, sql: &str, params: &Params<'_>) -> Result<Row> {
        self.query_opt(sql, params)?.ok_or_else(|| {
            Error::Internal("a statement that answers one row answered none".to_owned())
        })
    }

    /// Runs `sql`; answers how many rows it changed.
    pub(super) fn execute(&self, sql: &str, params: &Params<'_>) -> Result<u64> {
        self.precede(sql)?;
        self.link.execute(sql, params)
    }

    /// Runs `sql`, a change whose count the job does not need: on the writer's connection it
    /// goes out with the next statement waited for, and its error, if any, comes then.
    pub(super) fn write(&self, sql: &str, params: &Params<'_>) -> Result<()> {
        self.precede(sql)?;
        self.link.write(sql, params)
    }

    /// ` FOR UPDATE` in a write transaction, so that a row a job reads and then writes is
    /// not written by another node in between (reads see a snapshot and lock nothing).
    pub(super) fn for_update(&self) -> &'static str {
        if self.writing { " FOR UPDATE" } else { "" }
    }
}

/// Column `index` of `row`; a value of another type or NULL where none may be is bad
/// data, not a panic.
pub(super) fn column<'r, T: FromSql<'r>>(row: &'r Row, index: usize) -> Result<T> {
    row.try_get(index)
        .map_err(|e| Error::Internal(format!("column {index}: {e}")))
}

/// Translates a PostgreSQL error into a storage error kind. The one place that knows codes.
pub(super) fn translate(error: tokio_postgres::Error) -> Error {
    let Some(code) = error.code() else {
        // No answer from the server: the connection is gone, or was never made (the
        // cause, a refused certificate say, is in the error's source).
        let cause = std::error::Error::source(&error)
            .map(|source| format!(": {source}"))
            .unwrap_or_default();
        return Error::Unavailable(format!("the database cannot be reached: {error}{cause}"));
    };
    let class = &code.code()[..2];
    // "db error" alone says nothing: the server's own message and code do.
    let error = match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), code.code()),
        None => error.to_string(),
    };
    // Two servers that insert the same new row at once (a session id, a project) meet on
    // its unique key: the loser changed nothing, and its retry finds the winner's row.
    // Two servers' transactions that each wait for a row the other locked: PostgreSQL
    // cancels one of them. Either way the writer runs that write again (`writer.rs`).
    if *code == SqlState::UNIQUE_VIOLATION
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
    {
        Error::Contended(error)
    } else if *code == SqlState::LOCK_NOT_AVAILABLE {
        Error::Unavailable(format!(
            "a concurrent write held a row for too long; nothing was changed, retry: {error}"
        ))
    } else if *code == SqlState::DISK_FULL {
        Error::Full(error)
    } else if *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE
        || *code == SqlState::UNTRANSLATABLE_CHARACTER
    {
        nul_in_text()
    } else if matches!(class, "08" | "40" | "53" | "57")
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        || *code == SqlState::ADMIN_SHUTDOWN
    {
        // Connection lost, a transaction rolled back by the server, out of resources, the
        // server shutting down, a replica after a failover: nothing was changed, retry.
        Error::Unavailable(error)
    } else {
        Error::Internal(error)
    }
}

/// A connection that could not be made or set up. Whatever PostgreSQL said (the database
/// not accepting connections, a refused login, a database that is gone), nothing was done
/// and this server cannot serve until it is fixed: unavailable (503), as in an outage.
pub(super) fn connect_error(error: tokio_postgres::Error) -> Error {
    match translate(error) {
        Error::Internal(message) => {
            Error::Unavailable(format!("cannot connect to the database: {message}"))
        }
        other => other,
    }
}

/// PostgreSQL's text cannot hold U+0000, which JSON and titles may carry.
pub(super) fn nul_in_text() -> Error {
    Error::Domain(lifeboat_core::Error::Invalid {
        field: "body",
        message: "text with the NUL character (U+0000) cannot be stored in this server's PostgreSQL database".to_owned(),
    })
}

/// Whether values of `ty` travel as text, which PostgreSQL refuses when it holds U+0000.
fn is_text(ty: &Type) -> bool {
    [
        Type::TEXT,
        Type::VARCHAR,
        Type::BPCHAR,
        Type::NAME,
        Type::JSON,
        Type::JSONB,
    ]
    .contains(ty)
}
