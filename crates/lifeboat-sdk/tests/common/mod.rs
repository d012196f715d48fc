//! What the SDK's tests share: the one test harness (`lifeboat-testkit`).

#[allow(unused_imports)] // not every test file reads this way
pub use lifeboat_testkit::{TOKEN, get_json as get, serve_forever as server};
