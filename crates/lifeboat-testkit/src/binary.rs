//! The real `lifeboat` binary as a child process: started on a free port over a data
//! directory, under a wrapper (`fiu-run`), stopped at a failpoint, SIGKILLed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::TOKEN;

/// The `lifeboat` binary of this build: `LIFEBOAT_BIN` if set, else the one next to the
/// running test or benchmark (`target/<profile>/lifeboat`, which cargo builds before the
/// CLI's integration tests).
pub fn lifeboat_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("LIFEBOAT_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the running executable");
    let mut dir = exe.parent().expect("its directory").to_path_buf();
    // Integration tests run from target/<profile>/deps.
    if dir.ends_with("deps") {
        dir.pop();
    }
    let binary = dir.join("lifeboat");
    assert!(
        binary.exists(),
        "{} not found: build it (cargo build -p lifeboat-cli) or set LIFEBOAT_BIN",
        binary.display()
    );
    binary
}

/// The real `lifeboat serve` binary over `data_dir`.
pub struct Binary {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl Binary {
    /// Starts this build's binary over `data_dir`.
    pub fn start(data_dir: &Path) -> Binary {
        Binary::start_with(data_dir, &[])
    }

    /// Starts the binary with extra `serve` flags.
    pub fn start_with(data_dir: &Path, flags: &[&str]) -> Binary {
        Binary::start_exe(&lifeboat_binary(), data_dir, flags)
    }

    /// Starts the binary with extra `serve` flags and environment variables.
    pub fn start_with_env(data_dir: &Path, flags: &[&str], env: &[(&str, String)]) -> Binary {
        let mut command = Command::new(lifeboat_binary());
        command.envs(env.iter().map(|(name, value)| (name, value)));
        Binary::spawn(command, data_dir, flags)
    }

    /// Starts another `lifeboat` binary (an older build, say) with extra `serve` flags.
    pub fn start_exe(exe: &Path, data_dir: &Path, flags: &[&str]) -> Binary {
        Binary::spawn(Command::new(exe), data_dir, flags)
    }

    /// Starts the binary through a wrapper command (`fiu-run -x`, say), which must exec it
    /// in the same process.
    pub fn start_under(wrapper: &[&str], data_dir: &Path, flags: &[&str]) -> Binary {
        let mut command = Command::new(wrapper[0]);
        command.args(&wrapper[1..]).arg(lifeboat_binary());
        Binary::spawn(command, data_dir, flags)
    }

    /// Starts the binary set to stop dead at `failpoint` (see `lifeboat::FAILPOINT_VAR`);
    /// its stderr is kept for [`Binary::wait_for_failpoint`].
    pub fn start_at_failpoint(data_dir: &Path, flags: &[&str], failpoint: &str) -> Binary {
        let mut command = Command::new(lifeboat_binary());
        command
            .env(lifeboat::FAILPOINT_VAR, failpoint)
            .stderr(Stdio::piped());
        Binary::spawn(command, data_dir, flags)
    }

    /// Blocks until the process says it reached its failpoint (panics after 30 s).
    pub fn wait_for_failpoint(&mut self) {
        let stderr = self.child.stderr.take().expect("stderr is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if line.starts_with("failpoint ") {
                    let _ = tx.send(line);
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the failpoint is reached");
    }

    fn spawn(mut command: Command, data_dir: &Path, flags: &[&str]) -> Binary {
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(flags)
            .env("LIFEBOAT_ADMIN_TOKEN", TOKEN)
            .env("LIFEBOAT_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn lifeboat");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Binary { child, base }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits: a graceful stop (SQLite checkpoints its WAL).
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every checkpoint of a session of the server at `base` (as the admin), following
/// `next_cursor`.
pub async fn all_checkpoints(base: &str, session: &str) -> Vec<Value> {
    let http = reqwest::Client::new();
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/api/v1/sessions/{session}/checkpoints?limit=1000");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = http
            .get(url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        items.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

/// Every file below `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}
