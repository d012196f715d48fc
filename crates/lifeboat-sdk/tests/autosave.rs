//! The AutoSaver against a real server, through a proxy on loopback that delays
//! connections, refuses them, and swallows responses after the server acted: no edit
//! is lost and no revision is made twice. And two writers on one field: the conflict is
//! reported, not dropped.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{TOKEN, get, server};
use lifeboat_sdk::{AutoSaveOptions, AutoSaver, Client, SaveState};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy did to how many connections.
#[derive(Default)]
struct Mischief {
    connections: AtomicUsize,
    refused: AtomicUsize,
    delayed: AtomicUsize,
    swallowed: AtomicUsize,
    failed: AtomicUsize,
}

/// A proxy to `upstream` that, connection by connection in turn, passes it through,
/// delays it by 300 ms, refuses it, forwards the request and then hangs up instead of
/// returning the server's response, or answers 503 with `Retry-After` itself.
async fn unreliable_proxy(upstream: String, mischief: Arc<Mischief>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let upstream = upstream.trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let n = mischief.connections.fetch_add(1, Ordering::Relaxed);
            let upstream = upstream.clone();
            let mischief = Arc::clone(&mischief);
            tokio::spawn(async move {
                match n % 6 {
                    1 => {
                        mischief.refused.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    2 => {
                        mischief.delayed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    3 => {
                        mischief.swallowed.fetch_add(1, Ordering::Relaxed);
                        let Ok(mut server) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let mut buffer = vec![0u8; 1 << 16];
                        let mut answer = vec![0u8; 1 << 16];
                        // Forward what the client sends until the server answers, then
                        // drop the answer and both connections.
                        loop {
                            tokio::select! {
                                read = client.read(&mut buffer) => match read {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => {
                                        if server.write_all(&buffer[..n]).await.is_err() {
                                            return;
                                        }
                                    }
                                },
                                read = server.read(&mut answer) => {
                                    let _ = read;
                                    // Give the server's commit time to finish, then vanish.
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                    return;
                                }
                            }
                        }
                    }
                    4 => {
                        mischief.failed.fetch_add(1, Ordering::Relaxed);
                        let mut request = vec![0u8; 1 << 16];
                        let _ = client.read(&mut request).await;
                        let _ = client
                            .write_all(b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                        return;
                    }
                    _ => {}
                }
                if let Ok(mut server) = TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    base
}

fn fast() -> AutoSaveOptions {
    AutoSaveOptions {
        debounce: Duration::from_millis(50),
        max_wait: Duration::from_millis(200),
        journal: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_edit_lost_and_no_revision_twice_through_an_unreliable_network() {
    let dir = tempfile::tempdir().expect("dir");
    let base = server(dir.path()).await;
    let mischief = Arc::new(Mischief::default());
    let proxy = unreliable_proxy(base.clone(), Arc::clone(&mischief)).await;
    // A fresh connection per request, so that every request meets the proxy's mischief.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client");
    let client = Client::with_http_client(&proxy, TOKEN, http);
    let saver = AutoSaver::open(&client, "doc", fast()).await.expect("open");

    let mut expected = json!({});
    for n in 0..300u64 {
        let patch = match n % 3 {
            0 => json!({"fields": {format!("f{n}"): n}}),
            1 => json!({"counter": n, "title": format!("draft {n}")}),
            _ => json!({"fields": {format!("f{}", n - 2): null}}),
        };
        json_patch::merge(&mut expected, &patch);
        saver.edit(patch).expect("edit");
        // A save every 15 edits, so that many saves meet the proxy's mischief.
        if n % 15 == 14 {
            saver.flush().await.expect("flushed");
        }
    }
    tokio::time::timeout(Duration::from_secs(120), saver.flush())
        .await
        .expect("flushed in time")
        .expect("flushed");
    let status = saver.status().borrow().clone();
    assert_eq!(status.pending_edits(), 0);

    let project = get(&base, "/projects/doc").await;
    assert_eq!(project["state"], expected, "every edit arrived, in order");
    let revisions = project["revision"].as_u64().expect("revision");
    let mut previous = Value::Null;
    for revision in 1..=revisions {
        let state =
            get(&base, &format!("/projects/doc?revision={revision}")).await["state"].clone();
        assert_ne!(
            state, previous,
            "revision {revision} repeats the one before"
        );
        previous = state;
    }
    println!(
        "autosave through the proxy: 300 edits, {revisions} revisions; proxy: {} connections, {} refused, {} delayed, {} responses swallowed, {} answered 503",
        mischief.connections.load(Ordering::Relaxed),
        mischief.refused.load(Ordering::Relaxed),
        mischief.delayed.load(Ordering::Relaxed),
        mischief.swallowed.load(Ordering::Relaxed),
        mischief.failed.load(Ordering::Relaxed),
    );
    assert!(
        mischief.swallowed.load(Ordering::Relaxed) > 0,
        "the test exercised lost responses"
    );
    saver.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_field_report_the_conflict() {
    let dir = tempfile::tempdir().expect("dir");
    let base = server(dir.path()).await;
    let client = Client::new(&base, TOKEN);
    let first = AutoSaver::open(&client, "shared", fast())
        .await
        .expect("open");
    let second = AutoSaver::open(&client, "shared", fast())
        .await
        .expect("open");

    first
        .edit(json!({"title": "from the first tab", "body": "first"}))
        .expect("edit");
    first.flush().await.expect("first saves");
    // The second tab still believes in revision 1: its save meets a 412, re-reads, and
    // applies its edit on top — reporting the field both changed.
    second
        .edit(json!({"title": "from the second tab", "footer": "second"}))
        .expect("edit");
    second.flush().await.expect("second saves");

    let project = get(&base, "/projects/shared").await;
    assert_eq!(
        project["state"],
        json!({"title": "from the second tab", "body": "first", "footer": "second"})
    );
    let status = second.status().borrow().clone();
    assert_eq!(status.conflicts, vec!["/title".to_owned()]);
    assert_eq!(status.state, SaveState::Saved);
    assert!(first.status().borrow().conflicts.is_empty());
}
