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
    let (base, client) = connect_admin().await;
    let name = fresh_name(&client, Kind::Schema).await;
    client
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .await
        .expect("create the test schema");
    let separator = if base.contains('?') { '&' } else { '?' };
    TestDatabase {
        url: format!("{base}{separator}options=-csearch_path%3D{name}"),
        schema: name,
    }
}

/// A database made for one test (for what a schema cannot show: refusing connections,
/// say), with a connection to the server's own database to act on it from outside.
pub struct OwnDatabase {
    /// The database's name.
    pub name: String,
    /// `postgres://…/<name>`.
    pub url: String,
    /// Connected to the database of `LIFEBOAT_TEST_DATABASE_URL`, not to this one.
    pub admin: tokio_postgres::Client,
}

/// Makes an empty database; panics with what to do when the server cannot be reached.
pub async fn fresh_database() -> OwnDatabase {
    let (base, admin) = connect_admin().await;
    let name = fresh_name(&admin, Kind::Database).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the test database");
    let (server, query) = base.split_once('?').unwrap_or((&base, ""));
    let (prefix, _) = server.rsplit_once('/').expect("a URL naming a database");
    let url = match query {
        "" => format!("{prefix}/{name}"),
        query => format!("{prefix}/{name}?{query}"),
    };
    OwnDatabase { name, url, admin }
}

/// Connects to the server of `LIFEBOAT_TEST_DATABASE_URL`; answers that URL too.
async fn connect_admin() -> (String, tokio_postgres::Client) {
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
    (base, client)
}

/// What a test makes on the server.
#[derive(Clone, Copy)]
enum Kind {
    Schema,
    Database,
}

/// A new name `lifeboat_t_<ms>_<uuid>` for a test's schema or database, after dropping
/// those of that kind that runs left more than an hour ago.
async fn fresh_name(client: &tokio_postgres::Client, kind: Kind) -> String {
    let listed = match kind {
        Kind::Schema => "SELECT nspname FROM pg_namespace WHERE nspname",
        Kind::Database => "SELECT datname FROM pg_database WHERE datname",
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let stale = client
        .query(&format!("{listed} LIKE 'lifeboat\\_t\\_%'"), &[])
        .await
        .expect("list what earlier tests made");
    for row in stale {
        let name: String = row.get(0);
        let made: u128 = name
            .split('_')
            .nth(2)
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(now);
        if now.saturating_sub(made) > 3_600_000 {
            let _ = client
                .batch_execute(&match kind {
                    Kind::Schema => format!("DROP SCHEMA IF EXISTS {name} CASCADE"),
                    Kind::Database => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                })
                .await;
        }
    }
    format!("lifeboat_t_{now}_{}", uuid::Uuid::now_v7().simple())
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

/// A PostgreSQL server of a test's own (`initdb` into a temporary directory, on a free
/// port), which the test may stop the hard way (`pg_ctl -m immediate`: no checkpoint, as
/// in a crash) and start again. Run as the `postgres` user when the test runs as root
/// (PostgreSQL refuses root). `None` when PostgreSQL's programs are not installed.
pub struct Throwaway {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
    /// More `-c name=value` settings for the server.
    settings: String,
    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub url: String,
}

impl Throwaway {
    /// Makes and starts one.
    pub fn start() -> Option<Throwaway> {
        Throwaway::start_with(|_| Some(String::new()))
    }

    /// Makes and starts one that also accepts TLS (`ssl=on`), with a server certificate
    /// for `127.0.0.1` signed by a CA made for it; answers the CA's certificate (PEM)
    /// too. `None` when PostgreSQL's programs or `openssl` are missing.
    pub fn start_with_tls() -> Option<(Throwaway, std::path::PathBuf)> {
        let mut ca = None;
        let throwaway = Throwaway::start_with(|dir| {
            let openssl = |args: &[&str]| {
                std::process::Command::new("openssl")
                    .args(args)
                    .current_dir(dir)
                    .output()
                    .ok()
                    .filter(|out| out.status.success())
            };
            std::fs::write(
                dir.join("server.ext"),
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
            )
            .ok()?;
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "1",
                "-subj",
                "/CN=lifeboat-test-ca",
            ])?;
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ])?;
            openssl(&[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "1",
                "-extfile",
                "server.ext",
            ])?;
            let key = dir.join("server.key");
            std::process::Command::new("chmod")
                .arg("600")
                .arg(&key)
                .status()
                .ok()?;
            ca = Some(dir.join("ca.crt"));
            Some(format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                dir.join("server.crt").display(),
                key.display()
            ))
        })?;
        Some((throwaway, ca?))
    }

    /// Makes and starts one; `prepare` may write files into its directory first and
    /// answers more settings (`None`: give up).
    fn start_with(prepare: impl FnOnce(&std::path::Path) -> Option<String>) -> Option<Throwaway> {
        let bindir = std::process::Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .filter(|out| out.status.success())?;
        let bin = std::path::PathBuf::from(String::from_utf8_lossy(&bindir.stdout).trim());
        if !bin.join("initdb").exists() {
            return None;
        }
        let dir = tempfile::tempdir().expect("a temp dir");
        let settings = prepare(dir.path())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let throwaway = Throwaway {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir,
            bin,
            port,
            settings,
        };
        if is_root() {
            let chown = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(throwaway.dir.path())
                .status()
                .expect("chown");
            assert!(chown.success());
        }
        throwaway.run(
            "initdb",
            &[
                "-D",
                &throwaway.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        throwaway.pg_ctl_start();
        Some(throwaway)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// `program` of PostgreSQL's, run as the `postgres` user when this runs as root.
    fn command(&self, program: &str) -> std::process::Command {
        let exe = self.bin.join(program);
        if is_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(exe);
            command
        } else {
            std::process::Command::new(exe)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self
            .command(program)
            .args(args)
            .output()
            .expect("run a PostgreSQL program");
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on{}",
            self.port,
            self.dir.path().display(),
            self.settings
        );
        let log = self.dir.path().join("log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server as a crash would (`pg_ctl -m immediate`), then starts it again
    /// (crash recovery replays its WAL), after `down` of downtime.
    pub fn restart_immediate(&self, down: std::time::Duration) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
        std::thread::sleep(down);
        self.pg_ctl_start();
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-D", data.as_str(), "-m", "immediate", "stop"])
            .output();
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}
