//! What the SDK's tests share: a real server in this process, and reads as the admin.

use std::path::Path;

use lifeboat::{Config, Lifeboat};
use lifeboat_server::{AdminToken, AppState};
use serde_json::Value;

pub const TOKEN: &str = "sdk-test-token";

/// A server on 127.0.0.1:0 over `dir`, in this process; answers its base URL.
pub async fn server(dir: &Path) -> String {
    let lifeboat = Lifeboat::open(Config::new(dir)).await.expect("open");
    let state = AppState::new(lifeboat, AdminToken::new(TOKEN.to_owned()), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = lifeboat_server::serve(listener, state, std::future::pending::<()>()).await;
    });
    base
}

/// GET as the admin, as JSON.
#[allow(dead_code)] // not every test file reads this way
pub async fn get(base: &str, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{base}/api/v1{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}
