//! An S3-compatible server for tests: moto's (`moto_server`, from PyPI `moto[server]`),
//! started on a free port with a bucket named [`BUCKET`].
//!
//! With `LIFEBOAT_TEST_BLOBS=s3`, every [`crate::TestServer`] keeps its asset bytes under a
//! prefix of its own in one moto server shared by the test process (its data directory
//! names the prefix, so a restart over it finds the same bytes).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The bucket every moto server the harness starts holds.
pub const BUCKET: &str = "lifeboat-test";

/// The file in a test server's data directory that names its bucket prefix.
const PREFIX_FILE: &str = "test-blob-store";

/// A running moto server; stopped when dropped.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl Moto {
    /// Starts moto on a free port and makes [`BUCKET`]; panics with what to install when
    /// `moto_server` is missing. A watchdog stops it if this process dies first.
    pub fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let script = format!(
            "moto_server -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; \
             while kill -0 {parent} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 1; done; kill $m 2>/dev/null",
            parent = std::process::id()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sh");
        let endpoint = format!("http://127.0.0.1:{port}");
        let moto = Moto { child, endpoint };
        moto.wait_and_make_bucket();
        moto
    }

    /// The moto server this test process shares (started on first use).
    pub fn shared() -> &'static Moto {
        static SHARED: OnceLock<Moto> = OnceLock::new();
        SHARED.get_or_init(Moto::start)
    }

    fn wait_and_make_bucket(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("{}/{BUCKET}", self.endpoint);
        loop {
            let made = std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("runtime");
                        runtime.block_on(async {
                            reqwest::Client::new()
                                .put(&url)
                                .send()
                                .await
                                .is_ok_and(|r| r.status().is_success())
                        })
                    })
                    .join()
                    .unwrap_or(false)
            });
            if made {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not start within 30 s on {}: install it with `pip install 'moto[server]'`",
                self.endpoint
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The environment a `lifeboat serve` needs to reach it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
    }

    /// The same settings as `lifeboat::Config::blob_store_options`.
    pub fn options(&self) -> Vec<(String, String)> {
        vec![
            ("aws_endpoint".to_owned(), self.endpoint.clone()),
            ("aws_access_key_id".to_owned(), "test".to_owned()),
            ("aws_secret_access_key".to_owned(), "test".to_owned()),
            ("aws_region".to_owned(), "us-east-1".to_owned()),
        ]
    }

    /// `s3://<bucket>/<prefix>` for a fresh prefix.
    pub fn fresh_url(&self) -> String {
        format!("s3://{BUCKET}/{}", uuid::Uuid::now_v7().simple())
    }
}

/// Whether test servers keep asset bytes in moto (`LIFEBOAT_TEST_BLOBS=s3`): tests that
/// look at the files of the data directory do not apply then.
pub fn in_use() -> bool {
    std::env::var("LIFEBOAT_TEST_BLOBS").ok().as_deref() == Some("s3")
}

/// An object in the bucket, as listed.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its key.
    pub key: String,
    /// Its size.
    pub size: u64,
}

/// A request to moto as the test user: moto checks no signature, but answers an
/// anonymous request for an object 403.
fn as_test_user(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    request.header("authorization", "AWS test:unsigned")
}

impl Moto {
    fn object_url(&self, key: &str) -> String {
        format!("{}/{BUCKET}/{key}", self.endpoint)
    }

    /// Every object under `prefix` (moto answers unsigned requests).
    pub async fn list(&self, prefix: &str) -> Vec<Listed> {
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query
                .append_pair("list-type", "2")
                .append_pair("prefix", prefix);
            if let Some(token) = &token {
                query.append_pair("continuation-token", token);
            }
            let xml = as_test_user(reqwest::Client::new().get(format!(
                "{}/{BUCKET}?{}",
                self.endpoint,
                query.finish()
            )))
            .send()
            .await
            .expect("list the bucket")
            .text()
            .await
            .expect("listing");
            for contents in xml.split("<Contents>").skip(1) {
                found.push(Listed {
                    key: between(contents, "<Key>", "</Key>").to_owned(),
                    size: between(contents, "<Size>", "</Size>").parse().unwrap_or(0),
                });
            }
            match xml.contains("<IsTruncated>true</IsTruncated>") {
                true => {
                    token = Some(
                        between(&xml, "<NextContinuationToken>", "</NextContinuationToken>")
                            .to_owned(),
                    )
                }
                false => return found,
            }
        }
    }

    /// The bytes of object `key`.
    pub async fn get(&self, key: &str) -> Vec<u8> {
        as_test_user(reqwest::Client::new().get(self.object_url(key)))
            .send()
            .await
            .expect("get an object")
            .bytes()
            .await
            .expect("object bytes")
            .to_vec()
    }

    /// Replaces object `key` (damage behind the servers' backs).
    pub async fn put(&self, key: &str, bytes: Vec<u8>) {
        let status = as_test_user(reqwest::Client::new().put(self.object_url(key)))
            .body(bytes)
            .send()
            .await
            .expect("put an object")
            .status();
        assert!(status.is_success(), "put {key}: {status}");
    }

    /// Deletes object `key`.
    pub async fn delete(&self, key: &str) {
        as_test_user(reqwest::Client::new().delete(self.object_url(key)))
            .send()
            .await
            .expect("delete an object");
    }

    /// How many multipart uploads are started and neither finished nor aborted.
    pub async fn multipart_uploads(&self) -> usize {
        let xml =
            as_test_user(reqwest::Client::new().get(format!("{}/{BUCKET}?uploads", self.endpoint)))
                .send()
                .await
                .expect("list multipart uploads")
                .text()
                .await
                .expect("listing");
        xml.matches("<Upload>").count()
    }
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    text.split_once(open)
        .and_then(|(_, rest)| rest.split_once(close))
        .map_or("", |(inside, _)| inside)
}

impl Drop for Moto {
    fn drop(&mut self) {
        // The watchdog sees its parent's moto go: kill the shell and moto with it.
        let _ = Command::new("pkill")
            .args(["-P", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The blob store (URL and settings) a test server over `dir` uses: `None` (files in the
/// data directory) unless `LIFEBOAT_TEST_BLOBS=s3`; then a prefix made for `dir` the first
/// time, in the shared moto server.
pub fn blob_store_for(dir: &Path) -> Option<(String, Vec<(String, String)>)> {
    if std::env::var("LIFEBOAT_TEST_BLOBS").ok().as_deref() != Some("s3") {
        return None;
    }
    let moto = Moto::shared();
    let file = dir.join(PREFIX_FILE);
    let url = match std::fs::read_to_string(&file) {
        Ok(url) => url,
        Err(_) => {
            let url = moto.fresh_url();
            std::fs::write(&file, &url).expect("write the test blob store");
            url
        }
    };
    Some((url, moto.options()))
}
