use serde_json::json;

use super::*;

fn id() -> Id {
    Id::parse("doc").expect("valid id")
}

fn no_schema(_: &SchemaRef, _: &Value) -> Result<(), Error> {
    Ok(())
}

fn put(state: Value) -> Change {
    Change::Replace {
        state,
        title: None,
        schema: None,
    }
}

fn saved(current: Option<&Project>, change: Change, chain: Chain) -> Result<Saved, Error> {
    save(
        current,
        &id(),
        change,
        &ProjectRules::default(),
        chain,
        Timestamp(1_000),
        &no_schema,
    )
}

#[test]
fn first_save_is_revision_one_and_a_snapshot() {
    let first = saved(None, put(json!({"a": 1})), Chain::default()).expect("saved");
    assert_eq!(first.project.revision, 1);
    assert!(first.created);
    assert!(matches!(first.delta, Delta::Snapshot(_)));
}

#[test]
fn merge_patch_changes_only_named_fields_and_null_deletes() {
    let doc = json!({"a": 1, "b": {"c": 2, "d": 3}, "big": "x".repeat(10_000)});
    let first = saved(None, put(doc), Chain::default()).expect("saved");
    let next = saved(
        Some(&first.project),
        Change::Merge(json!({"b": {"c": null, "e": 5}})),
        Chain::default(),
    )
    .expect("merged");
    assert_eq!(next.project.revision, 2);
    assert_eq!(next.project.state["b"], json!({"d": 3, "e": 5}));
    assert_eq!(next.project.state["a"], json!(1));
    assert!(
        matches!(next.delta, Delta::Merge(_)),
        "a small change is stored as a delta"
    );
}

#[test]
fn failed_json_patch_test_is_a_conflict() {
    let first = saved(None, put(json!({"a": 1})), Chain::default()).expect("saved");
    let patch = parse_json_patch(
        json!([{"op": "test", "path": "/a", "value": 2}, {"op": "remove", "path": "/a"}]),
    )
    .expect("a patch");
    let refused = saved(
        Some(&first.project),
        Change::JsonPatch(patch),
        Chain::default(),
    );
    assert!(matches!(
        refused,
        Err(Error::PatchConflict { revision: 1, .. })
    ));
}

#[test]
fn limits_refuse_large_deep_and_non_object_states() {
    let rules = ProjectRules {
        max_state_bytes: 20,
        max_depth: 3,
        ..ProjectRules::default()
    };
    let attempt = |state: Value| {
        save(
            None,
            &id(),
            put(state),
            &rules,
            Chain::default(),
            Timestamp(0),
            &no_schema,
        )
    };
    assert!(matches!(
        attempt(json!({"a": "x".repeat(30)})),
        Err(Error::StateTooLarge { .. })
    ));
    assert!(matches!(
        attempt(json!({"a": {"b": {"c": 1}}})),
        Err(Error::Invalid { field: "state", .. })
    ));
    assert!(matches!(
        attempt(json!([1])),
        Err(Error::Invalid { field: "state", .. })
    ));
    assert!(attempt(json!({"a": {"b": 1}})).is_ok());
}

#[test]
fn preconditions() {
    let any = Preconditions {
        if_match: Some(None),
        if_none_match_any: false,
    };
    let two = Preconditions {
        if_match: Some(Some(vec![2])),
        if_none_match_any: false,
    };
    let create_only = Preconditions {
        if_match: None,
        if_none_match_any: true,
    };
    assert!(Preconditions::default().check(None).is_ok());
    assert!(any.check(Some(1)).is_ok());
    assert!(any.check(None).is_err());
    assert!(two.check(Some(2)).is_ok());
    assert_eq!(
        two.check(Some(3)),
        Err(Error::PreconditionFailed(
            "If-Match does not match the current revision \"3\"".into(),
            Some(3)
        ))
    );
    assert!(create_only.check(None).is_ok());
    assert!(create_only.check(Some(1)).is_err());
}

#[test]
fn any_revision_rebuilds_from_snapshot_and_deltas() {
    let mut chain = Chain::default();
    let mut current =
        saved(None, put(json!({"n": 0, "pad": "y".repeat(5_000)})), chain).expect("saved");
    let mut stored = vec![current.delta.clone()];
    let mut states = vec![current.project.state.clone()];
    for n in 1..50 {
        let change = if n % 7 == 0 {
            let mut state = current.project.state.clone();
            state["replaced"] = json!(n);
            put(state)
        } else {
            Change::Merge(json!({"n": n, format!("k{n}"): n}))
        };
        current = saved(Some(&current.project), change, chain).expect("saved");
        chain = match &current.delta {
            Delta::Snapshot(_) => Chain::default(),
            delta => Chain {
                deltas: chain.deltas + 1,
                delta_bytes: chain.delta_bytes + delta.body().len() as u64,
            },
        };
        stored.push(current.delta.clone());
        states.push(current.project.state.clone());
    }
    for (index, expected) in states.iter().enumerate() {
        let base = stored[..=index]
            .iter()
            .rposition(|d| matches!(d, Delta::Snapshot(_)))
            .expect("a snapshot before every revision");
        let Delta::Snapshot(snapshot) = stored[base].clone() else {
            unreachable!()
        };
        let rebuilt = rebuild(snapshot, stored[base + 1..=index].iter().cloned()).expect("rebuilt");
        assert_eq!(&rebuilt, expected, "revision {}", index + 1);
    }
    let snapshots = stored
        .iter()
        .filter(|d| matches!(d, Delta::Snapshot(_)))
        .count();
    assert_eq!(
        snapshots, 1,
        "small changes to a 5 KB document need no second snapshot"
    );
}

#[test]
fn retention_keeps_young_revisions_and_the_newest_n() {
    let retention = RevisionRetention {
        max_age_ms: 1_000,
        min_revisions: 100,
    };
    assert_eq!(retention.oldest_kept(50, None), 1);
    assert_eq!(retention.oldest_kept(250, None), 151);
    assert_eq!(retention.oldest_kept(250, Some(120)), 120);
    assert_eq!(retention.oldest_kept(250, Some(200)), 151);
}
