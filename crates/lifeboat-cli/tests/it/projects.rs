//! Projects over HTTP: saves and revisions, ETags and preconditions, merge and JSON
//! patches, concurrency, history and restore, limits, schemas.

use std::sync::Arc;

use lifeboat::{ProjectRules, RevisionRetention, SystemClock};
use serde_json::{Value, json};

use crate::harness::TestServer;

const JSON: &str = "application/json";
const MERGE: &str = "application/merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";

async fn put(
    server: &TestServer,
    id: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> crate::harness::Reply {
    server
        .send(
            "PUT",
            &format!("/projects/{id}"),
            headers,
            Some((JSON, body.to_string())),
        )
        .await
}

async fn patch(
    server: &TestServer,
    id: &str,
    kind: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> crate::harness::Reply {
    server
        .send(
            "PATCH",
            &format!("/projects/{id}"),
            headers,
            Some((kind, body.to_string())),
        )
        .await
}

async fn revision_of(server: &TestServer, id: &str) -> u64 {
    let (status, project) = server.get(&format!("/projects/{id}")).await;
    assert_eq!(status, 200, "{project}");
    project["revision"].as_u64().expect("revision")
}

#[tokio::test]
async fn saves_revisions_etags_and_patches() {
    let server = TestServer::start().await;
    let created = put(
        &server,
        "doc",
        json!({"state": {"title": "Draft", "tags": ["a"]}, "title": "My doc"}),
        &[],
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.header("etag"), Some("\"1\""));
    assert_eq!(created.body["revision"], json!(1));
    assert_eq!(created.body["id"], json!("doc"));
    assert!(created.body["size_bytes"].as_u64().expect("size") > 0);

    let replaced = put(
        &server,
        "doc",
        json!({"state": {"title": "Draft 2", "tags": ["a"], "body": "…"}}),
        &[],
    )
    .await;
    assert_eq!(
        (replaced.status, replaced.header("etag")),
        (200, Some("\"2\""))
    );

    let read = server.send("GET", "/projects/doc", &[], None).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.header("etag"), Some("\"2\""));
    assert_eq!(
        read.body["title"],
        json!("My doc"),
        "PUT keeps the title when omitted"
    );
    assert_eq!(read.body["state"]["title"], json!("Draft 2"));

    let head = server.send("HEAD", "/projects/doc", &[], None).await;
    assert_eq!((head.status, head.header("etag")), (200, Some("\"2\"")));
    assert_eq!(head.body, Value::Null, "HEAD has no body");

    // Merge patch: named fields change, null deletes, the rest stays.
    let merged = patch(
        &server,
        "doc",
        MERGE,
        json!({"body": null, "tags": ["a", "b"], "n": 1}),
        &[],
    )
    .await;
    assert_eq!(
        (merged.status, merged.header("etag")),
        (200, Some("\"3\"")),
        "{}",
        merged.body
    );
    let (_, now) = server.get("/projects/doc").await;
    assert_eq!(
        now["state"],
        json!({"title": "Draft 2", "tags": ["a", "b"], "n": 1})
    );

    // JSON Patch, including a test that guards the change.
    let ops = json!([{"op": "test", "path": "/n", "value": 1}, {"op": "replace", "path": "/n", "value": 2}]);
    let patched = patch(&server, "doc", JSON_PATCH, ops, &[]).await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    let failing =
        json!([{"op": "test", "path": "/n", "value": 1}, {"op": "remove", "path": "/title"}]);
    let conflict = patch(&server, "doc", JSON_PATCH, failing, &[]).await;
    assert_eq!((conflict.status, conflict.slug()), (409, "patch-conflict"));
    let malformed = patch(&server, "doc", JSON_PATCH, json!({"op": "nonsense"}), &[]).await;
    assert_eq!(
        (malformed.status, malformed.slug()),
        (422, "validation-failed")
    );
    assert_eq!(
        revision_of(&server, "doc").await,
        4,
        "refused patches make no revision"
    );

    let wrong_type = patch(&server, "doc", "text/plain", json!({}), &[]).await;
    assert_eq!(
        (wrong_type.status, wrong_type.slug()),
        (415, "unsupported-media-type")
    );
    assert!(
        wrong_type
            .header("accept-patch")
            .is_some_and(|v| v.contains("merge-patch"))
    );
    let absent = patch(&server, "nope", MERGE, json!({"a": 1}), &[]).await;
    assert_eq!((absent.status, absent.slug()), (404, "not-found"));
    let bad_json = server
        .send(
            "PATCH",
            "/projects/doc",
            &[],
            Some((MERGE, "{not json".to_owned())),
        )
        .await;
    assert_eq!(
        (bad_json.status, bad_json.slug()),
        (400, "malformed-request")
    );

    // Any revision reads back exactly.
    let (status, first) = server.get("/projects/doc?revision=1").await;
    assert_eq!(status, 200);
    assert_eq!(first["state"], json!({"title": "Draft", "tags": ["a"]}));
    assert_eq!(first["revision"], json!(1));
    let (_, third) = server.get("/projects/doc?revision=3").await;
    assert_eq!(third["state"]["n"], json!(1));
    server
        .expect_problem("GET", "/projects/doc?revision=99", None, 404, "not-found")
        .await;
    server
        .expect_problem(
            "GET",
            "/projects/doc?revision=x",
            None,
            400,
            "malformed-request",
        )
        .await;
    server
        .expect_problem("GET", "/projects/bad%20id", None, 400, "invalid-id")
        .await;

    // The state must be an object; unknown fields are invalid.
    let not_object = put(&server, "doc", json!({"state": [1, 2]}), &[]).await;
    assert_eq!(
        (not_object.status, not_object.slug()),
        (422, "validation-failed")
    );
    let unknown = put(&server, "doc", json!({"state": {}, "colour": "red"}), &[]).await;
    assert_eq!((unknown.status, unknown.slug()), (422, "validation-failed"));
    assert_eq!(revision_of(&server, "doc").await, 4);
}

#[tokio::test]
async fn preconditions_and_the_if_match_race() {
    let server = TestServer::start().await;
    let create_only = [("if-none-match", "*")];
    assert_eq!(
        put(&server, "p", json!({"state": {"v": 0}}), &create_only)
            .await
            .status,
        201
    );
    let again = put(&server, "p", json!({"state": {"v": 1}}), &create_only).await;
    assert_eq!((again.status, again.slug()), (412, "precondition-failed"));
    assert_eq!(
        again.header("etag"),
        Some("\"1\""),
        "412 carries the current ETag"
    );

    let stale = put(
        &server,
        "p",
        json!({"state": {"v": 1}}),
        &[("if-match", "\"7\"")],
    )
    .await;
    assert_eq!((stale.status, stale.header("etag")), (412, Some("\"1\"")));
    let missing = put(&server, "q", json!({"state": {}}), &[("if-match", "*")]).await;
    assert_eq!(missing.status, 412, "If-Match on an absent project");
    assert_eq!(
        put(
            &server,
            "p",
            json!({"state": {"v": 1}}),
            &[("if-match", "\"1\"")]
        )
        .await
        .status,
        200
    );
    assert_eq!(revision_of(&server, "p").await, 2);

    // Two writers read revision 2 and both save with If-Match: "2". Exactly one wins.
    for round in 0..10 {
        let current = revision_of(&server, "p").await.to_string();
        let etag = format!("\"{current}\"");
        let writers = ["left", "right"].map(|who| {
            let server = &server;
            let etag = etag.clone();
            async move {
                patch(
                    server,
                    "p",
                    MERGE,
                    json!({"writer": who, "round": round}),
                    &[("if-match", &etag)],
                )
                .await
            }
        });
        let [a, b] = writers;
        let (a, b) = tokio::join!(a, b);
        let mut statuses = [a.status, b.status];
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [200, 412],
            "round {round}: exactly one writer wins"
        );
    }
}

#[tokio::test]
async fn concurrent_merge_patches_to_distinct_keys_all_win() {
    let server = Arc::new(TestServer::start().await);
    assert_eq!(
        put(&server, "shared", json!({"state": {}}), &[])
            .await
            .status,
        201
    );
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let server = Arc::clone(&server);
            tokio::spawn(async move {
                for n in 0..50 {
                    let reply = patch(
                        &server,
                        "shared",
                        MERGE,
                        json!({format!("c{client}-{n}"): n}),
                        &[],
                    )
                    .await;
                    assert_eq!(reply.status, 200, "{}", reply.body);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client");
    }
    let (_, project) = server.get("/projects/shared").await;
    let keys = project["state"].as_object().expect("object").len();
    assert_eq!(keys, 400, "every client's every field survived");
    assert_eq!(project["revision"], json!(401));
}

#[tokio::test]
async fn history_restore_delete_and_resurrection() {
    let server = TestServer::start().await;
    for v in 1..=5 {
        put(&server, "h", json!({"state": {"v": v}}), &[]).await;
    }
    let (status, page) = server.get("/projects/h/revisions?limit=2").await;
    assert_eq!(status, 200);
    let revisions: Vec<u64> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| r["revision"].as_u64().expect("n"))
        .collect();
    assert_eq!(revisions, [5, 4], "newest first");
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let (_, rest) = server
        .get(&format!("/projects/h/revisions?limit=10&cursor={cursor}"))
        .await;
    assert_eq!(rest["items"].as_array().expect("items").len(), 3);
    assert_eq!(rest["next_cursor"], Value::Null);

    let restored = server
        .send(
            "POST",
            "/projects/h/restore",
            &[],
            Some((JSON, json!({"revision": 2}).to_string())),
        )
        .await;
    assert_eq!(
        (restored.status, restored.header("etag")),
        (200, Some("\"6\"")),
        "{}",
        restored.body
    );
    let (_, now) = server.get("/projects/h").await;
    assert_eq!(now["state"], json!({"v": 2}));
    server
        .expect_problem(
            "POST",
            "/projects/h/restore",
            Some(json!({"revision": 40})),
            404,
            "not-found",
        )
        .await;

    let (_, listed) = server.get("/projects").await;
    assert_eq!(listed["items"][0]["id"], json!("h"));
    assert!(
        listed["items"][0].get("state").is_none(),
        "lists carry no state"
    );

    let deleted = server.send("DELETE", "/projects/h", &[], None).await;
    assert_eq!(deleted.status, 204);
    server
        .expect_problem("GET", "/projects/h", None, 404, "not-found")
        .await;
    server
        .expect_problem("DELETE", "/projects/h", None, 404, "not-found")
        .await;
    let (_, listed) = server.get("/projects").await;
    assert_eq!(listed["items"], json!([]));
    let back = put(&server, "h", json!({"state": {"v": "back"}}), &[]).await;
    assert_eq!(
        (back.status, back.header("etag")),
        (201, Some("\"7\"")),
        "history continues"
    );
}

#[tokio::test]
async fn limits_refuse_and_change_nothing() {
    let rules = ProjectRules {
        max_state_bytes: 1_000,
        max_depth: 8,
        ..ProjectRules::default()
    };
    let server = TestServer::start_with(
        Arc::new(tempfile::tempdir().expect("dir")),
        Arc::new(SystemClock),
        rules,
    )
    .await;
    assert_eq!(
        put(&server, "l", json!({"state": {"ok": true}}), &[])
            .await
            .status,
        201
    );
    let big = put(
        &server,
        "l",
        json!({"state": {"x": "y".repeat(2_000)}}),
        &[],
    )
    .await;
    assert_eq!((big.status, big.slug()), (413, "state-too-large"));
    let grown = patch(&server, "l", MERGE, json!({"x": "y".repeat(2_000)}), &[]).await;
    assert_eq!((grown.status, grown.slug()), (413, "state-too-large"));
    let mut deep = json!(1);
    for _ in 0..10 {
        deep = json!({"d": deep});
    }
    let too_deep = put(&server, "l", json!({"state": deep}), &[]).await;
    assert_eq!(
        (too_deep.status, too_deep.slug()),
        (422, "validation-failed")
    );
    let long_id = "a".repeat(129);
    server
        .expect_problem(
            "PUT",
            &format!("/projects/{long_id}"),
            Some(json!({"state": {}})),
            400,
            "invalid-id",
        )
        .await;
    assert_eq!(
        revision_of(&server, "l").await,
        1,
        "refused saves make no revision"
    );
    let (_, history) = server.get("/projects/l/revisions").await;
    assert_eq!(history["items"].as_array().expect("items").len(), 1);
}

#[tokio::test]
async fn retention_prunes_old_revisions_and_keeps_every_kept_one_readable() {
    let rules = ProjectRules {
        retention: RevisionRetention {
            max_age_ms: 0,
            min_revisions: 10,
        },
        ..ProjectRules::default()
    };
    let server = TestServer::start_with(
        Arc::new(tempfile::tempdir().expect("dir")),
        Arc::new(SystemClock),
        rules,
    )
    .await;
    // A document big enough that deltas are cheap, with a full replacement now and then
    // (which makes a snapshot), so retention has whole stretches to prune.
    put(
        &server,
        "r",
        json!({"state": {"pad": "p".repeat(20_000), "n": 0}}),
        &[],
    )
    .await;
    for n in 1..60 {
        if n % 15 == 0 {
            put(
                &server,
                "r",
                json!({"state": {"pad": "q".repeat(20_000 + n), "n": n}}),
                &[],
            )
            .await;
        } else {
            patch(&server, "r", MERGE, json!({"n": n}), &[]).await;
        }
    }
    let (_, history) = server.get("/projects/r/revisions?limit=1000").await;
    let kept: Vec<u64> = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| r["revision"].as_u64().expect("n"))
        .collect();
    assert!(
        kept.len() >= 10,
        "at least the newest 10 are kept: {kept:?}"
    );
    assert!(kept.len() < 60, "old revisions were pruned: {kept:?}");
    for revision in &kept {
        let (status, body) = server
            .get(&format!("/projects/r?revision={revision}"))
            .await;
        assert_eq!(status, 200, "revision {revision}: {body}");
        assert_eq!(body["state"]["n"], json!(revision - 1));
    }
}

#[tokio::test]
async fn schemas_validate_every_save() {
    let server = TestServer::start().await;
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"step": {"type": "integer", "minimum": 1}, "name": {"type": "string"}},
        "required": ["step"]
    });
    let registered = server
        .send(
            "PUT",
            "/schemas/workflow/1",
            &[],
            Some((JSON, schema.to_string())),
        )
        .await;
    assert_eq!(registered.status, 201, "{}", registered.body);
    let again = server
        .send(
            "PUT",
            "/schemas/workflow/1",
            &[],
            Some((JSON, schema.to_string())),
        )
        .await;
    assert_eq!(again.status, 200, "identical re-registration");
    let changed = server
        .send(
            "PUT",
            "/schemas/workflow/1",
            &[],
            Some((JSON, json!({"type": "array"}).to_string())),
        )
        .await;
    assert_eq!((changed.status, changed.slug()), (409, "schema-conflict"));
    let invalid = server
        .send(
            "PUT",
            "/schemas/broken/1",
            &[],
            Some((JSON, json!({"type": 12}).to_string())),
        )
        .await;
    assert_eq!((invalid.status, invalid.slug()), (422, "validation-failed"));
    server
        .expect_problem("GET", "/schemas/broken/1", None, 404, "not-found")
        .await;
    server
        .expect_problem("GET", "/schemas/bad..name!/1", None, 400, "invalid-id")
        .await;
    let (status, stored) = server.get("/schemas/workflow/1").await;
    assert_eq!((status, stored), (200, schema));

    let unknown = put(
        &server,
        "w",
        json!({"state": {"step": 1}, "schema": "workflow@9"}),
        &[],
    )
    .await;
    assert_eq!((unknown.status, unknown.slug()), (422, "unknown-schema"));
    let violating = put(
        &server,
        "w",
        json!({"state": {"step": 0, "name": 5}, "schema": "workflow@1"}),
        &[],
    )
    .await;
    assert_eq!(
        (violating.status, violating.slug()),
        (422, "schema-violation")
    );
    let errors = violating.body["errors"].as_array().expect("errors");
    let paths: Vec<&str> = errors
        .iter()
        .map(|e| e["path"].as_str().expect("path"))
        .collect();
    assert!(
        paths.contains(&"/step") && paths.contains(&"/name"),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .all(|e| e["message"].as_str().is_some_and(|m| !m.is_empty()))
    );
    server
        .expect_problem("GET", "/projects/w", None, 404, "not-found")
        .await;

    assert_eq!(
        put(
            &server,
            "w",
            json!({"state": {"step": 1}, "schema": "workflow@1"}),
            &[]
        )
        .await
        .status,
        201
    );
    // The schema sticks: later saves without it are still validated.
    let bad_patch = patch(&server, "w", MERGE, json!({"step": null}), &[]).await;
    assert_eq!(
        (bad_patch.status, bad_patch.slug()),
        (422, "schema-violation")
    );
    let bad_put = put(&server, "w", json!({"state": {"step": -1}}), &[]).await;
    assert_eq!(bad_put.status, 422);
    assert_eq!(
        patch(&server, "w", MERGE, json!({"step": 2}), &[])
            .await
            .status,
        200
    );
    let (_, project) = server.get("/projects/w").await;
    assert_eq!(
        (project["schema"].clone(), project["revision"].clone()),
        (json!("workflow@1"), json!(2))
    );
}
