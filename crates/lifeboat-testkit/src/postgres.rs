//! A fresh PostgreSQL schema per test, on the server of `LIFEBOAT_TEST_DATABASE_URL`
//! (default: the local server as `postgres`). Schemas are named `lifeboat_t_<ms>_<n>`, and
//! each new one drops those left by runs more than an hour old.
//!
//! With `LIFEBOAT_TEST_STORE=postgres`, every [`crate::TestServer`] stores in such a schema
//! instead of SQLite (its data directory keeps the asset files and the schema's URL, so a
//! restart over the same directory finds the same database).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The file in a test server's data directory that names its schema's URL.
const URL_FILE: &str = "test-database-url";

/// The database URL a test server over `dir` uses: `None` (SQLite) unless
/// `LIFEBOAT_TEST_STORE=postgres`; then the schema made for `dir` the first time.
pub async fn database_for(dir: &Path) -> Option<String> {
    if std::env::var("LIFEBOAT_TEST_STORE").ok().as_deref() != Some("postgres") {
        return None;
    }
    let file = dir.join(URL_FILE);
    if let Ok(url) = std::fs::read_to_string(&file) {
        return Some(url);
    }
    let url = fresh_schema().await.url;
    std::fs::write(&file, &url).expect("write the test database URL");
    Some(url)
}

/// The server tests use when `LIFEBOAT_TEST_DATABASE_URL` is not set.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A schema made for one test, and the URL whose connections use it.
pub struct TestDatabase {
    /// `postgres://…?options=-csearch_path%3D<schema>`.
    pub url: String,
    /// The schema's name.
    pub schema: String,
}

/// Makes an empty schema; panics with what to do when the server cannot be reached.
pub async fn fresh_schema() -> TestDatabase {
    let base =
        std::env::var("LIFEBOAT_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {base} ({e}): start it (the README says how) or set LIFEBOAT_TEST_DATABASE_URL"
            )
        });
    tokio::spawn(connection);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let stale = client
        .query(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'lifeboat\\_t\\_%'",
            &[],
        )
        .await
        .expect("list test schemas");
    for row in stale {
        let name: String = row.get(0);
        let made: u128 = name
            .split('_')
            .nth(2)
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(now);
        if now.saturating_sub(made) > 3_600_000 {
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .await;
        }
    }
    let schema = format!("lifeboat_t_{now}_{}", uuid::Uuid::now_v7().simple());
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create the test schema");
    let separator = if base.contains('?') { '&' } else { '?' };
    TestDatabase {
        url: format!("{base}{separator}options=-csearch_path%3D{schema}"),
        schema,
    }
}

/// Runs `sql` (`$1`, `$2` parameters) in the PostgreSQL schema of the test server over
/// `dir`, behind its back; answers the rows changed, or `None` when that server stores in
/// SQLite.
pub async fn execute_behind(
    dir: &Path,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Option<u64> {
    let url = std::fs::read_to_string(dir.join(URL_FILE)).ok()?;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test schema");
    tokio::spawn(connection);
    Some(
        client
            .execute(sql, params)
            .await
            .expect("run the statement"),
    )
}
