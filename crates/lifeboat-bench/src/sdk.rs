//! The SDK's cost: checkpoints through `SessionHandle::checkpoint` against the same calls
//! made with bare reqwest at the same concurrency, and what the AutoSaver sends for a
//! steady stream of edits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use lifeboat_sdk::{AutoSaveOptions, AutoSaver, Checkpoint, Client, NewSession};
use serde_json::{Value, json};

use crate::{TOKEN, server_at};

const CLIENTS: usize = 16;

pub(crate) struct SdkResult {
    pub(crate) raw_plain: f64,
    pub(crate) raw_keyed: f64,
    pub(crate) sdk: f64,
    pub(crate) edits: u64,
    pub(crate) saves: u64,
    pub(crate) lost: u64,
}

/// Checkpoints/s of `CLIENTS` loops of `write` over `window`.
async fn measure<F, Fut>(window: Duration, write: F) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + window;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (write, done) = (write.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    write(client).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

pub(crate) async fn run(
    dir: &std::path::Path,
    window: Duration,
    autosave: Duration,
) -> anyhow::Result<SdkResult> {
    let server = server_at(dir);
    let base = server.base.clone();
    let client = Client::new(&base, TOKEN);
    let mut handles = Vec::new();
    for n in 0..CLIENTS {
        let new = NewSession::new("bench")
            .id(&format!("sdk-{n}"))
            .heartbeat_timeout_ms(3_600_000);
        handles.push(Arc::new(client.start_session(new).await?));
    }
    let data = json!({"blob": "x".repeat(1000)});
    let http = reqwest::Client::new();
    let raw = |keyed: bool| {
        let (http, base, data) = (http.clone(), base.clone(), data.clone());
        move |n: usize| {
            let (http, base, data) = (http.clone(), base.clone(), data.clone());
            async move {
                let mut request = http
                    .post(format!("{base}/api/v1/sessions/sdk-{n}/checkpoints"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"attempt": 1, "kind": "item", "data": data}));
                if keyed {
                    request =
                        request.header("idempotency-key", format!("\"{}\"", uuid::Uuid::now_v7()));
                }
                let status = request.send().await?.status();
                if status != 201 {
                    bail!("checkpoint: {status}");
                }
                Ok(())
            }
        }
    };
    let raw_plain = measure(window, raw(false)).await?;
    let raw_keyed = measure(window, raw(true)).await?;
    let sdk = {
        let (handles, data) = (handles.clone(), data.clone());
        measure(window, move |n: usize| {
            let (handle, data) = (Arc::clone(&handles[n]), data.clone());
            async move {
                handle.checkpoint(Checkpoint::item(&data)?).await?;
                Ok(())
            }
        })
        .await?
    };

    // 100 edits a second for `autosave`, each a new field, with the default 2 s debounce.
    let saver = AutoSaver::open(&client, "sdk-doc", AutoSaveOptions::default()).await?;
    let first = saver.status().borrow().revision;
    let started = Instant::now();
    let mut edits = 0u64;
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    while started.elapsed() < autosave {
        ticks.tick().await;
        saver.edit(json!({format!("k{edits}"): edits}))?;
        edits += 1;
    }
    saver.flush().await?;
    let last = saver.status().borrow().revision;
    saver.close().await?;
    let state: Value = http
        .get(format!("{base}/api/v1/projects/sdk-doc"))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .json()
        .await?;
    let lost = (0..edits)
        .filter(|n| state["state"][format!("k{n}")] != json!(n))
        .count() as u64;
    drop(handles);
    server.stop();
    Ok(SdkResult {
        raw_plain,
        raw_keyed,
        sdk,
        edits,
        saves: last - first,
        lost,
    })
}
