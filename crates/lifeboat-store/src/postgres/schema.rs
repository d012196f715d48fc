//! Versioned migrations, run by whichever server starts first: under a session-level
//! advisory lock, each file once, in order, inside one transaction with its row in
//! `lifeboat_migrations`. A database written by a newer Lifeboat is refused.

use deadpool_postgres::Object;

use super::conn::translate;
use crate::Error;

/// Migrations in order; a migration's version is its index + 1. Never edit a released one.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_cluster.sql"),
    include_str!("../../migrations/postgres/0003_event_indexes.sql"),
    include_str!("../../migrations/postgres/0004_session_due.sql"),
    include_str!("../../migrations/postgres/0005_purged_counts.sql"),
];

/// The advisory lock key that serializes migrations (any fixed number: "lifeboat").
const MIGRATION_LOCK: i64 = 0x6c69_6665_626f_6174;

/// Refuses a server whose commits would not wait for the WAL flush: an acknowledged write
/// must survive a crash of the database (SPEC §6).
pub(super) async fn check_durability(client: &Object) -> Result<(), Error> {
    let row = client
        .query_one("SHOW synchronous_commit", &[])
        .await
        .map_err(translate)?;
    let setting: String = row.get(0);
    if setting == "off" {
        return Err(Error::Unavailable(format!(
            "the database has synchronous_commit = {setting}: a commit could be lost in a crash after it was acknowledged; set it to on"
        )));
    }
    Ok(())
}

/// Brings the schema up to date; refuses a database written by a newer Lifeboat.
pub(super) async fn migrate(client: &mut Object) -> Result<(), Error> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(translate)?;
    let result = apply(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(translate);
    result.and(unlocked.map(drop))
}

async fn apply(client: &mut Object) -> Result<(), Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS lifeboat_migrations (
                 version BIGINT PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(translate)?;
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM lifeboat_migrations",
            &[],
        )
        .await
        .map_err(translate)?;
    let current = usize::try_from(row.get::<_, i64>(0)).unwrap_or(usize::MAX);
    if current > MIGRATIONS.len() {
        return Err(Error::Unavailable(format!(
            "the database has schema version {current}, newer than this Lifeboat knows ({}); upgrade Lifeboat",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        let tx = client.transaction().await.map_err(translate)?;
        tx.batch_execute(sql).await.map_err(translate)?;
        tx.execute(
            "INSERT INTO lifeboat_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(translate)?;
        tx.commit().await.map_err(translate)?;
        tracing::info!(version, "applied migration");
    }
    Ok(())
}
