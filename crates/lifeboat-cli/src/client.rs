//! The client commands: talk HTTP to a running server and print tables or `--json`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::Failure;
use crate::serve::ADMIN_TOKEN_FILE;

/// Where the server is and how to authenticate.
#[derive(Args)]
pub(crate) struct Connection {
    /// The server's base URL.
    #[arg(long, env = "LIFEBOAT_URL", default_value = "http://127.0.0.1:7433")]
    url: String,
    /// The API key (default: the local server's admin token file).
    #[arg(long, env = "LIFEBOAT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where to find the local admin token when no token is given.
    #[arg(long, env = "LIFEBOAT_DATA_DIR", default_value = "lifeboat-data")]
    data_dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Subcommand)]
pub(crate) enum SessionsCommand {
    /// Lists sessions, newest first.
    List {
        /// Comma-separated statuses, e.g. `incomplete,failed`.
        #[arg(long)]
        status: Option<String>,
        /// How many to list (1–1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        connection: Connection,
    },
    /// Shows one session.
    Show {
        /// The session id.
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Subcommand)]
pub(crate) enum RecoveryCommand {
    /// Lists recoverable sessions with confidence and work lost.
    List {
        /// How many to list (1–1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Args)]
pub(crate) struct RecoverArgs {
    /// The session id.
    id: String,
    /// How to recover.
    #[arg(long, value_parser = ["continue", "restart_batch", "fresh_start"])]
    option: String,
    /// Confirms a fresh start or a recovery past max_attempts.
    #[arg(long)]
    confirm: bool,
    #[command(flatten)]
    connection: Connection,
}

pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Connection {
    pub(crate) fn api(&self) -> Result<Api, Failure> {
        let token = match &self.token {
            Some(token) => token.clone(),
            None => {
                let path = self.data_dir.join(ADMIN_TOKEN_FILE);
                std::fs::read_to_string(&path)
                    .map_err(|e| {
                        Failure::new(
                            Failure::CONFIG,
                            anyhow!("no --token given and cannot read {}: {e}", path.display()),
                        )
                    })?
                    .trim()
                    .to_owned()
            }
        };
        Ok(Api {
            http: reqwest::Client::new(),
            base: format!("{}/api/v1", self.url.trim_end_matches('/')),
            token,
        })
    }
}

impl Api {
    /// A request to `path` under `/api/v1`, authenticated.
    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends a request; a failure to connect is exit code 69.
    pub(crate) async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Failure> {
        let response = request.send().await.map_err(|e| {
            Failure::new(
                Failure::UNAVAILABLE,
                anyhow!("cannot reach the server: {e}"),
            )
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let detail = body["detail"].as_str().unwrap_or("no detail").to_owned();
        let code = match status.as_u16() {
            401 | 403 => Failure::PERMISSION,
            422 => Failure::DATA,
            500.. => Failure::UNAVAILABLE,
            _ => Failure::REFUSED,
        };
        Err(Failure::new(code, anyhow!("{status}: {detail}")))
    }

    /// Every item of a paged list at `path`, following `next_cursor`; answered as one
    /// `{"items": [...], "next_cursor": null}`.
    pub(crate) async fn all(&self, path: &str) -> Result<Value, Failure> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut page = format!("{path}?limit=1000");
            if let Some(cursor) = &cursor {
                page.push_str(&format!("&cursor={cursor}"));
            }
            let list = self.call(reqwest::Method::GET, &page, None).await?;
            items.extend(list["items"].as_array().into_iter().flatten().cloned());
            match list["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(serde_json::json!({"items": items, "next_cursor": null})),
            }
        }
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = self.send(request).await?;
        Ok(response.json().await.unwrap_or(Value::Null))
    }
}

pub(crate) fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

pub(crate) fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) async fn sessions(command: SessionsCommand) -> Result<(), Failure> {
    match command {
        SessionsCommand::List {
            status,
            limit,
            connection,
        } => {
            let mut path = format!("/sessions?limit={limit}");
            if let Some(status) = status {
                path.push_str(&format!("&status={status}"));
            }
            let page = connection
                .api()?
                .call(reqwest::Method::GET, &path, None)
                .await?;
            if connection.json {
                print_json(&page);
                return Ok(());
            }
            println!(
                "{:<38} {:<11} {:>7} {:<12} {:>8}  LEASE EXPIRES",
                "ID", "STATUS", "ATTEMPT", "KIND", "UNITS"
            );
            for s in page["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<38} {:<11} {:>7} {:<12} {:>8}  {}",
                    text(&s["id"]),
                    text(&s["status"]),
                    text(&s["attempt"]),
                    text(&s["kind"]),
                    text(&s["progress"]["completed_units"]),
                    text(&s["lease_expires_at"]),
                );
            }
            Ok(())
        }
        SessionsCommand::Show { id, connection } => {
            let session = connection
                .api()?
                .call(reqwest::Method::GET, &format!("/sessions/{id}"), None)
                .await?;
            if connection.json {
                print_json(&session);
                return Ok(());
            }
            for key in [
                "id",
                "kind",
                "title",
                "status",
                "attempt",
                "created_at",
                "last_heartbeat_at",
                "lease_expires_at",
                "stalled",
                "error",
            ] {
                println!("{key:<18} {}", text(&session[key]));
            }
            println!("{:<18} {}", "progress", session["progress"]);
            println!("{:<18} {}", "crash", text(&session["crash"]));
            println!(
                "{:<18} {}",
                "latest_checkpoint",
                text(&session["latest_checkpoint"])
            );
            Ok(())
        }
    }
}

pub(crate) async fn recovery(command: RecoveryCommand) -> Result<(), Failure> {
    let RecoveryCommand::List { limit, connection } = command;
    let page = connection
        .api()?
        .call(
            reqwest::Method::GET,
            &format!("/recovery?limit={limit}"),
            None,
        )
        .await?;
    if connection.json {
        print_json(&page);
        return Ok(());
    }
    println!(
        "{:<38} {:<11} {:<18} {:>6} {:>10} {:>12}",
        "ID", "STATUS", "CRASH", "RESUME", "CONFIDENCE", "WORK LOST"
    );
    for r in page["items"].as_array().into_iter().flatten() {
        println!(
            "{:<38} {:<11} {:<18} {:>6} {:>10} {:>10}ms",
            text(&r["session"]["id"]),
            text(&r["session"]["status"]),
            text(&r["crash"]["type"]),
            text(&r["resume_from"]["seq"]),
            text(&r["confidence"]),
            text(&r["work_lost_ms"]),
        );
    }
    Ok(())
}

pub(crate) async fn recover(args: RecoverArgs) -> Result<(), Failure> {
    let body = json!({"option": args.option, "confirm": args.confirm});
    let recovered = args
        .connection
        .api()?
        .call(
            reqwest::Method::POST,
            &format!("/sessions/{}/recover", args.id),
            Some(body),
        )
        .await?;
    if args.connection.json {
        print_json(&recovered);
        return Ok(());
    }
    println!(
        "session {} is active again as attempt {}; resume from checkpoint {}",
        text(&recovered["session"]["id"]),
        text(&recovered["session"]["attempt"]),
        text(&recovered["resume_from"]["seq"]),
    );
    Ok(())
}

#[derive(Args)]
pub(crate) struct CleanupArgs {
    /// Count what would be removed; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    connection: Connection,
}

pub(crate) async fn cleanup(args: CleanupArgs) -> Result<(), Failure> {
    let report = args
        .connection
        .api()?
        .call(
            reqwest::Method::POST,
            &format!("/admin/cleanup?dry_run={}", args.dry_run),
            None,
        )
        .await?;
    if args.connection.json {
        print_json(&report);
        return Ok(());
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    println!("cleanup {verb}:");
    for key in [
        "sessions_purged",
        "checkpoints_pruned",
        "projects_purged",
        "revisions_pruned",
        "idempotency_keys_expired",
        "orphan_files_deleted",
        "bytes_freed",
    ] {
        println!("  {key:<26} {}", text(&report[key]));
    }
    Ok(())
}

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// Quarantine damaged checkpoints and record asset statuses (nothing is deleted).
    #[arg(long)]
    repair: bool,
    #[command(flatten)]
    connection: Connection,
}

/// Exit 0 when the store is intact, 1 when anything is wrong.
pub(crate) async fn verify(args: VerifyArgs) -> Result<(), Failure> {
    let api = args.connection.api()?;
    let spinner = if args.connection.json || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        let spinner = indicatif::ProgressBar::new_spinner();
        spinner.set_message("verifying every checkpoint and asset…");
        spinner.enable_steady_tick(std::time::Duration::from_millis(120));
        spinner
    };
    let report = api
        .call(
            reqwest::Method::POST,
            &format!("/admin/verify?repair={}", args.repair),
            None,
        )
        .await;
    spinner.finish_and_clear();
    let report = report?;
    if args.connection.json {
        print_json(&report);
    } else {
        println!(
            "checkpoints: {} checked ({} bytes), {} damaged, {} quarantined",
            text(&report["checkpoints_checked"]),
            text(&report["checkpoint_bytes"]),
            report["damaged_checkpoints"].as_array().map_or(0, Vec::len),
            text(&report["quarantined"]),
        );
        println!(
            "assets:      {} checked ({} bytes), {} missing, {} corrupt",
            text(&report["assets_checked"]),
            text(&report["asset_bytes"]),
            report["missing_assets"].as_array().map_or(0, Vec::len),
            report["corrupt_assets"].as_array().map_or(0, Vec::len),
        );
        for damaged in report["damaged_checkpoints"]
            .as_array()
            .into_iter()
            .flatten()
        {
            println!(
                "  damaged checkpoint {}/{} seq {}",
                text(&damaged["tenant"]),
                text(&damaged["session_id"]),
                text(&damaged["seq"])
            );
        }
        for key in [
            "missing_assets",
            "corrupt_assets",
            "integrity",
            "inconsistencies",
        ] {
            for item in report[key].as_array().into_iter().flatten() {
                println!("  {key}: {}", text(item));
            }
        }
    }
    if report["ok"] == Value::Bool(true) {
        Ok(())
    } else {
        Err(Failure::new(
            Failure::REFUSED,
            anyhow!("the store has problems (see above)"),
        ))
    }
}

/// `lifeboat stats`: counts for the key's tenant.
pub(crate) async fn stats(connection: Connection) -> Result<(), Failure> {
    let stats = connection
        .api()?
        .call(reqwest::Method::GET, "/stats", None)
        .await?;
    if connection.json {
        print_json(&stats);
        return Ok(());
    }
    let pairs = |value: &Value| -> String {
        value
            .as_object()
            .map(|map| {
                map.iter()
                    .map(|(k, v)| format!("{k} {}", text(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    println!("sessions:    {}", pairs(&stats["sessions"]));
    println!(
        "crashes:     {} ({})",
        text(&stats["crashes"]["total"]),
        pairs(&stats["crashes"]["by_type"])
    );
    println!(
        "recoveries:  {} ({}); succeeded {}, failed {}, pending {}",
        text(&stats["recoveries"]["total"]),
        pairs(&stats["recoveries"]["by_option"]),
        text(&stats["recoveries"]["succeeded"]),
        text(&stats["recoveries"]["failed"]),
        text(&stats["recoveries"]["pending"]),
    );
    println!("checkpoints: {}", pairs(&stats["checkpoints"]));
    println!("assets:      {}", pairs(&stats["assets"]));
    println!(
        "detection delay ms: {}",
        pairs(&stats["detection_delay_ms"])
    );
    println!("work lost ms:       {}", pairs(&stats["work_lost_ms"]));
    Ok(())
}

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Makes a key for a tenant; prints it once.
    Create {
        /// The tenant it acts for.
        #[arg(long)]
        tenant: String,
        /// Comma-separated scopes: read, write, admin.
        #[arg(long, value_delimiter = ',', default_value = "read,write")]
        scopes: Vec<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Lists keys (never their secrets).
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Revokes a key at once.
    Revoke {
        /// The key id (the part after `lb_`).
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
}

pub(crate) async fn keys(command: KeysCommand) -> Result<(), Failure> {
    match command {
        KeysCommand::Create {
            tenant,
            scopes,
            connection,
        } => {
            let created = connection
                .api()?
                .call(
                    reqwest::Method::POST,
                    "/keys",
                    Some(json!({"tenant": tenant, "scopes": scopes})),
                )
                .await?;
            if connection.json {
                print_json(&created);
            } else {
                println!("{}", text(&created["key"]));
                eprintln!(
                    "key {} for tenant {}: store it now, it is not shown again",
                    text(&created["id"]),
                    text(&created["tenant"])
                );
            }
            Ok(())
        }
        KeysCommand::List { connection } => {
            let list = connection.api()?.all("/keys").await?;
            if connection.json {
                print_json(&list);
                return Ok(());
            }
            println!(
                "{:<18} {:<20} {:<18} {:<26} REVOKED",
                "ID", "TENANT", "SCOPES", "CREATED"
            );
            for k in list["items"].as_array().into_iter().flatten() {
                let scopes: Vec<String> = k["scopes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(text)
                    .collect();
                println!(
                    "{:<18} {:<20} {:<18} {:<26} {}",
                    text(&k["id"]),
                    text(&k["tenant"]),
                    scopes.join(","),
                    text(&k["created_at"]),
                    text(&k["revoked_at"]),
                );
            }
            Ok(())
        }
        KeysCommand::Revoke { id, connection } => {
            let api = connection.api()?;
            api.send(api.request(reqwest::Method::DELETE, &format!("/keys/{id}")))
                .await?;
            if !connection.json {
                println!("key {id} revoked");
            }
            Ok(())
        }
    }
}

/// `lifeboat audit`: who did what, newest first.
pub(crate) async fn audit(connection: Connection) -> Result<(), Failure> {
    let trail = connection
        .api()?
        .call(reqwest::Method::GET, "/audit?limit=100", None)
        .await?;
    if connection.json {
        print_json(&trail);
        return Ok(());
    }
    println!(
        "{:<26} {:<12} {:<18} {:<18} {:<30} DETAIL",
        "AT", "TENANT", "ACTOR", "ACTION", "RESOURCE"
    );
    for e in trail["items"].as_array().into_iter().flatten() {
        println!(
            "{:<26} {:<12} {:<18} {:<18} {:<30} {}",
            text(&e["at"]),
            text(&e["tenant"]),
            text(&e["actor"]),
            text(&e["action"]),
            text(&e["resource"]),
            e["detail"],
        );
    }
    Ok(())
}
