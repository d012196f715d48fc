//! The whole HTTP API in-process: an arbitrary method, path, headers and body against a
//! real data dir. Every request must get an answer, never a 500 or a panic.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use lifeboat::{Config, Lifeboat};
use lifeboat_server::{AdminToken, AppState};
use tower::ServiceExt;

const TOKEN: &str = "fuzz-token";
const METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

struct World {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let dir = tempfile::tempdir().expect("a temp dir");
        let app = runtime.block_on(async {
            let lifeboat = Lifeboat::open(Config::new(dir.path())).await.expect("open");
            let state = AppState::new(lifeboat, AdminToken::new(TOKEN.to_owned()), None);
            lifeboat_server::app(state)
        });
        World { runtime, app, _dir: dir }
    })
}

fuzz_target!(|data: &[u8]| {
    // `<method byte><path>\n<header: value>\n…\n\n<body>`
    let Some((method, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let path = lines.next().unwrap_or("/");
    let mut request = Request::builder()
        .method(METHODS[usize::from(*method) % METHODS.len()])
        .uri(format!("/api/v1/{}", path.trim_start_matches('/')))
        .header("authorization", format!("Bearer {TOKEN}"));
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            request = request.header(name.trim(), value.trim());
        }
    }
    let Ok(request) = request.body(Body::from(body.to_owned())) else {
        return;
    };
    let world = world();
    let response = world
        .runtime
        .block_on(world.app.clone().oneshot(request))
        .expect("the router is infallible");
    assert!(
        response.status().as_u16() < 500 || response.status().as_u16() == 503,
        "{} for {path}",
        response.status()
    );
});
