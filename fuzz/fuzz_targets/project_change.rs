//! A project save with an arbitrary document and an arbitrary merge patch or JSON Patch
//! (the bodies of PUT and PATCH): never panics, and whatever it stores rebuilds the state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeboat_core::{
    Chain, Change, Delta, Error, Id, ProjectRules, SchemaRef, Timestamp, parse_json_patch,
    rebuild, save_project,
};
use serde_json::Value;

fn no_schema(_: &SchemaRef, _: &Value) -> Result<(), Error> {
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    // `<document>\0<patch>`; the patch's first byte picks merge or JSON Patch.
    let mut parts = data.splitn(2, |b| *b == 0);
    let (Some(document), Some(patch)) = (parts.next(), parts.next()) else {
        return;
    };
    let (Ok(state), Some((kind, patch))) = (serde_json::from_slice::<Value>(document), patch.split_first()) else {
        return;
    };
    let Ok(patch) = serde_json::from_slice::<Value>(patch) else {
        return;
    };
    let id = Id::parse("doc").expect("a valid id");
    let rules = ProjectRules::default();
    let first = save_project(
        None,
        &id,
        Change::Replace { state, title: None, schema: None },
        &rules,
        Chain::default(),
        Timestamp(1),
        &no_schema,
    );
    let Ok(first) = first else {
        return;
    };
    let change = if kind % 2 == 0 {
        Change::Merge(patch)
    } else {
        match parse_json_patch(patch) {
            Ok(patch) => Change::JsonPatch(patch),
            Err(_) => return,
        }
    };
    let Ok(next) = save_project(Some(&first.project), &id, change, &rules, Chain::default(), Timestamp(2), &no_schema) else {
        return;
    };
    let Delta::Snapshot(snapshot) = first.delta else {
        panic!("a first revision is a snapshot");
    };
    let rebuilt = match next.delta {
        Delta::Snapshot(state) => state,
        delta => rebuild(snapshot, [delta]).expect("a stored delta rebuilds"),
    };
    assert_eq!(rebuilt, next.project.state);
});
