//! The reference scenarios, run as real programs against a real server: each is killed
//! with SIGKILL part-way, run again, and must resume where the server says it stood.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{TOKEN, get, server};
use serde_json::Value;

/// An example program, built next to this test by `cargo test`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    dir.join("examples").join(name)
}

fn spawn(name: &str, base: &str, args: &[&str]) -> Child {
    Command::new(example(name))
        .args(["--url", base, "--token", TOKEN])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("run example {name}: {e}"))
}

fn lines(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The newest valid checkpoint of `session` once it stops moving: a checkpoint the killed
/// process had already sent may still land, so two reads 100 ms apart must agree.
async fn settled_latest(base: &str, session: &str) -> Value {
    let path = format!("/sessions/{session}/checkpoints/latest");
    let mut latest = get(base, &path).await;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let again = get(base, &path).await;
        if again["seq"] == latest["seq"] {
            return latest;
        }
        latest = again;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_processor_resumes_after_sigkill() {
    let dir = tempfile::tempdir().expect("dir");
    let base = server(&dir.path().join("data")).await;
    let log = dir.path().join("processed.log");
    let log_arg = log.to_str().expect("utf-8");
    let args = [
        "--id",
        "b1",
        "--items",
        "400",
        "--item-ms",
        "4",
        "--log",
        log_arg,
    ];

    let mut first = spawn("batch_processor", &base, &args);
    for _ in 0..600 {
        if lines(&log).len() >= 150 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill().expect("SIGKILL");
    first.wait().expect("reap");
    let killed_at = lines(&log).len() as u64;
    assert!(
        (150..400).contains(&killed_at),
        "killed part-way: {killed_at}"
    );
    let before = settled_latest(&base, "b1").await;
    let saved: Value = serde_json::from_str(
        before["data"]
            .as_str()
            .map_or(&before["data"].to_string(), |s| s),
    )
    .unwrap_or(before["data"].clone());
    let saved_next = saved["next"]
        .as_u64()
        .expect("the last checkpoint names the next item");

    let second = spawn("batch_processor", &base, &args);
    let output = second.wait_with_output().expect("second run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let expected = format!("resumed from checkpoint seq={}", before["seq"]);
    assert!(stdout.contains(&expected), "{stdout}");
    assert!(
        stdout.contains("confidence"),
        "shows the recovery options: {stdout}"
    );
    assert!(
        stdout.contains(&format!("processing items {saved_next}..400")),
        "{stdout}"
    );

    let session = get(&base, "/sessions/b1").await;
    assert_eq!(session["status"], "completed");
    assert_eq!(session["attempt"], 2);
    let processed = lines(&log);
    for item in 0..400u64 {
        let times = processed.iter().filter(|i| **i == item).count();
        if item < saved_next {
            assert_eq!(times, 1, "item {item} was checkpointed, and done again");
        } else {
            assert!(times >= 1, "item {item} was never done");
        }
    }
    // An item checkpoint every 10 items: a kill while the 10th item's checkpoint is on
    // its way redoes those 10, never more.
    let redone = processed.len() - 400;
    assert!(
        redone <= 10,
        "only work after the last item checkpoint is redone: {redone}"
    );
    println!(
        "batch_processor: killed after {killed_at} items, resumed at {saved_next}, {redone} redone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_autosave_loses_nothing_typed_after_sigkill() {
    let dir = tempfile::tempdir().expect("dir");
    let base = server(&dir.path().join("data")).await;
    let journal = dir.path().join("essay.journal");
    let typed = dir.path().join("typed.log");
    let args = [
        "--id",
        "essay",
        "--journal",
        journal.to_str().expect("utf-8"),
        "--typed",
        typed.to_str().expect("utf-8"),
        "--edits",
        "1200",
        "--rate",
        "400",
        "--debounce-ms",
        "100",
        "--max-wait-ms",
        "300",
    ];
    let mut first = spawn("document_autosave", &base, &args);
    for _ in 0..1000 {
        if lines(&typed).len() >= 500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill().expect("SIGKILL");
    first.wait().expect("reap");
    let typed_first = lines(&typed).len();
    assert!(
        (500..1200).contains(&typed_first),
        "killed part-way: {typed_first}"
    );
    let saved_before = get(&base, "/projects/essay").await["state"]["chars"]
        .as_object()
        .map_or(0, |c| c.len());

    let second = spawn("document_autosave", &base, &args);
    let output = second.wait_with_output().expect("second run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("resumed from checkpoint seq="), "{stdout}");
    assert!(
        stdout.contains("status: Saved"),
        "prints the save status: {stdout}"
    );
    // Every keystroke the first run had typed (journaled) is there before typing goes on.
    let replayed: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("document has "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the second run says where it starts");
    assert!(
        replayed >= typed_first,
        "journaled edits lost: {replayed} < {typed_first}"
    );

    let chars = get(&base, "/projects/essay").await["state"]["chars"].clone();
    let chars = chars.as_object().expect("chars");
    assert_eq!(chars.len(), 1200);
    for n in 0..1200 {
        assert!(
            chars.contains_key(&format!("c{n:06}")),
            "keystroke {n} lost"
        );
    }
    println!(
        "document_autosave: killed after {typed_first} keystrokes ({saved_before} saved on the server), {replayed} there after the journal replay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_appends_at_the_right_offset_after_sigkill() {
    let dir = tempfile::tempdir().expect("dir");
    let base = server(&dir.path().join("data")).await;
    let args = ["--id", "take-1", "--seconds", "3"];
    let mut first = spawn("recorder", &base, &args);
    let mut recorded = 0;
    for _ in 0..300 {
        let list = get(&base, "/sessions/take-1/assets").await;
        recorded = list["items"][0]["size"].as_u64().unwrap_or(0);
        if recorded >= 24_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().expect("SIGKILL");
    first.wait().expect("reap");
    assert!(
        (24_000..48_000).contains(&recorded),
        "killed part-way: {recorded} bytes"
    );

    let second = spawn("recorder", &base, &args);
    let output = second.wait_with_output().expect("second run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("resumed from checkpoint seq="), "{stdout}");

    let wav = reqwest::Client::new()
        .get(format!("{base}/api/v1/sessions/take-1/assets/take.wav"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("download")
        .bytes()
        .await
        .expect("bytes");
    let data = 3 * 8_000 * 2;
    assert_eq!(
        wav.len(),
        44 + data,
        "three seconds of 16-bit mono at 8 kHz"
    );
    assert_eq!(&wav[0..4], b"RIFF");
    assert_eq!(&wav[8..16], b"WAVEfmt ");
    assert_eq!(
        u32::from_le_bytes([wav[24], wav[25], wav[26], wav[27]]),
        8_000
    );
    assert_eq!(&wav[36..40], b"data");
    assert_eq!(
        u32::from_le_bytes([wav[40], wav[41], wav[42], wav[43]]) as usize,
        data
    );
    // The same samples an uninterrupted take has: no gap, no repeat at the seam.
    for n in 0..(3 * 8_000u64) {
        let t = n as f64 / 8_000.0;
        let expected = (((t * 440.0 * std::f64::consts::TAU).sin() * 8_000.0) as i16).to_le_bytes();
        let at = 44 + 2 * n as usize;
        assert_eq!(&wav[at..at + 2], &expected, "sample {n}");
    }
    assert_eq!(get(&base, "/sessions/take-1").await["status"], "completed");
    println!("recorder: killed at {recorded} bytes, the WAV is whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_pipeline_continues_after_the_last_finished_stage() {
    let dir = tempfile::tempdir().expect("dir");
    let base = server(&dir.path().join("data")).await;
    let log = dir.path().join("stages.log");
    let args = [
        "--id",
        "r1",
        "--stage-ms",
        "400",
        "--log",
        log.to_str().expect("utf-8"),
    ];
    const STAGES: [&str; 5] = ["script", "tts", "images", "composition", "render"];
    let mut first = spawn("render_pipeline", &base, &args);
    for _ in 0..500 {
        let session = get(&base, "/sessions/r1").await;
        if session["latest_checkpoint"]["stage"] == "tts" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill().expect("SIGKILL");
    first.wait().expect("reap");
    let latest = settled_latest(&base, "r1").await;
    let finished = latest["completed_units"].as_u64().expect("stages finished") as usize;
    assert!((2..5).contains(&finished), "killed part-way: {latest}");

    let second = spawn("render_pipeline", &base, &args);
    let output = second.wait_with_output().expect("second run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("resumed from checkpoint seq={}", latest["seq"])),
        "{stdout}"
    );
    let stages = std::fs::read_to_string(&log).expect("log");
    let stages: Vec<&str> = stages.lines().collect();
    for (index, stage) in STAGES.iter().enumerate() {
        let runs = stages.iter().filter(|s| *s == stage).count();
        if index < finished {
            assert_eq!(runs, 1, "{stage} was finished, and ran again: {stages:?}");
            assert!(!stdout.contains(&format!("stage {stage}…")), "{stdout}");
        } else {
            assert!(runs >= 1, "{stage} never ran: {stages:?}");
        }
    }
    let assets = get(&base, "/sessions/r1/assets").await;
    assert_eq!(assets["items"].as_array().expect("items").len(), 5);
    assert_eq!(get(&base, "/sessions/r1").await["status"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_workflow_is_restored_exactly() {
    let dir = tempfile::tempdir().expect("dir");
    let base = server(&dir.path().join("data")).await;
    let args = ["--id", "w1", "--step-ms", "200"];
    let mut first = spawn("chat_workflow", &base, &args);
    let mut saved = Value::Null;
    for _ in 0..500 {
        let project = get(&base, "/projects/w1").await;
        if project["state"]["step"].as_u64().unwrap_or(0) >= 3 {
            saved = project;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill().expect("SIGKILL");
    first.wait().expect("reap");
    let at_kill = get(&base, "/projects/w1").await;
    let step = at_kill["state"]["step"].as_u64().expect("a step was saved");
    assert!(step >= saved["state"]["step"].as_u64().unwrap_or(0) && step < 8);

    let second = spawn("chat_workflow", &base, &args);
    let output = second.wait_with_output().expect("second run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("resumed from checkpoint seq="), "{stdout}");
    assert!(
        stdout.contains(&format!("restored step {step}: {} messages", 2 * step)),
        "{stdout}"
    );

    // The history holds each question and answer once, in order, whatever run asked it.
    let done = get(&base, "/projects/w1").await;
    assert_eq!(done["state"]["step"], 8);
    let history = done["state"]["history"].as_array().expect("history");
    assert_eq!(history.len(), 16);
    assert_eq!(done["state"]["form"]["contact"], "ada@example.com");
    // Each saved revision moved the workflow on by exactly one step: none was redone.
    let revisions = done["revision"].as_u64().expect("revision");
    let mut steps = Vec::new();
    for revision in 2..=revisions {
        let old = get(&base, &format!("/projects/w1?revision={revision}")).await;
        steps.push(old["state"]["step"].as_u64().expect("step"));
    }
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
    assert_eq!(get(&base, "/sessions/w1").await["status"], "completed");
}

/// The same program and SDK calls against Lifeboat embedded in the process: the data dir
/// is the program's own, and SIGKILL takes the store down with the worker. (Needs the
/// `embedded` feature: `cargo test --workspace --all-features`, as CI runs it.)
#[cfg(feature = "embedded")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_processor_resumes_embedded() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let log = dir.path().join("processed.log");
    let run = || {
        Command::new(example("batch_processor"))
            .args(["--data-dir", data.to_str().expect("utf-8")])
            .args(["--id", "e1", "--items", "300", "--item-ms", "4"])
            .args(["--log", log.to_str().expect("utf-8")])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run example")
    };
    let mut first = run();
    for _ in 0..600 {
        if lines(&log).len() >= 120 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill().expect("SIGKILL");
    first.wait().expect("reap");
    let output = run().wait_with_output().expect("second run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("resumed from checkpoint seq="), "{stdout}");
    let resumed_at: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("processing items "))
        .and_then(|l| l.split("..").next())
        .and_then(|n| n.parse().ok())
        .expect("where it resumed");
    assert!(
        resumed_at >= 110 && resumed_at.is_multiple_of(10),
        "{stdout}"
    );
    let processed = lines(&log);
    for item in 0..300u64 {
        let times = processed.iter().filter(|i| **i == item).count();
        assert!(times >= 1, "item {item} was never done");
        if item < resumed_at {
            assert_eq!(times, 1, "item {item} was checkpointed, and done again");
        }
    }
}
