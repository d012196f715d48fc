//! Checks of records: assets, keys, sweeps, cleanup, import.

use std::sync::Arc;

use lifeboat::{
    AssetName, CheckpointKind, Error, Owner, Selection, SessionFilter, Status, TenantId,
};
use lifeboat_store::rows::Tx;
use lifeboat_store::{Ack, WriteJob};
use serde_json::json;

use super::{Handles, all, checkpoint, engine, engines, pages, session, tenant};

/// Asset records: an upload is recorded once (the second put of its name replaces it),
/// listed by cursor in name order, readable through the other engine, and gone after a
/// delete.
pub async fn asset_records(handles: Handles) {
    let (a, b, _) = engines(&handles).await;
    let s = session(&a, "files", 60_000).await;
    let owner = Owner::Session(s.clone());
    for name in ["c.bin", "a.bin", "b.bin", "a.bin"] {
        let mut upload = a.upload(&tenant(), &owner, Some(1)).await.expect("upload");
        upload
            .write(name.as_bytes().to_vec().into(), u64::MAX)
            .await
            .expect("write bytes");
        let name = AssetName::parse(name).expect("name");
        a.put_asset(&tenant(), &owner, &name, upload, None, Some(1))
            .await
            .expect("put");
    }
    let listed = pages(2, |page| {
        let b = b.clone();
        let owner = owner.clone();
        async move { b.assets(&tenant(), &owner, &page).await }
    })
    .await;
    let names: Vec<String> = listed.iter().map(|a| a.name.to_string()).collect();
    assert_eq!(names, ["a.bin", "b.bin", "c.bin"]);
    let b_bin = AssetName::parse("b.bin").expect("name");
    b.delete_asset(&tenant(), &owner, &b_bin, Some(1))
        .await
        .expect("delete");
    let gone = a.asset(&tenant(), &owner, &b_bin).await;
    assert!(matches!(gone, Err(Error::NotFound { .. })), "{gone:?}");
    let stale = a.delete_asset(&tenant(), &owner, &b_bin, Some(7)).await;
    assert!(stale.is_err(), "a stale fence is refused");
}

/// Key records: a key made through one engine authenticates through the other; after a
/// revoke, a fresh engine over either handle refuses it; keys list by cursor.
pub async fn key_records(handles: Handles) {
    let (a, b, clock) = engines(&handles).await;
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let (_, token) = a
            .create_key("conformance", &["write".to_owned()])
            .await
            .expect("a key");
        tokens.push(token);
    }
    let found = b.authenticate(&tokens[0]).await.expect("authenticate");
    let record = found.expect("the other engine knows the key");
    b.revoke_key(&record.id, None).await.expect("revoke");
    for store in [&handles.first, &handles.second] {
        let fresh = engine(Arc::clone(store), &handles.dir, Arc::clone(&clock)).await;
        let after = fresh.authenticate(&tokens[0]).await.expect("authenticate");
        assert!(after.is_none(), "a revoked key is refused");
        let live = fresh.authenticate(&tokens[1]).await.expect("authenticate");
        assert!(live.is_some());
    }
    let tenant = TenantId::new("conformance");
    let listed = pages(2, |page| {
        let a = a.clone();
        let tenant = tenant.clone();
        async move { a.keys(Some(&tenant), &page).await }
    })
    .await;
    assert_eq!(listed.len(), 3);
    assert!(listed.windows(2).all(|w| w[0].id < w[1].id), "keys by id");
    assert_eq!(listed.iter().filter(|k| k.revoked_at.is_some()).count(), 1);
}

/// Two engines sweep the same expired leases at once: each session times out once, with
/// one crash counted.
pub async fn sweeps_from_two_handles_count_each_crash_once(handles: Handles) {
    let (a, b, clock) = engines(&handles).await;
    for n in 0..20 {
        session(&a, &format!("lease-{n}"), 1_000).await;
    }
    clock.advance_ms(5_000);
    let (x, y) = tokio::join!(a.sweep(), b.sweep());
    assert_eq!(x.expect("sweep") + y.expect("sweep"), 20);
    let stats = b.stats(&tenant()).await.expect("stats");
    let crashes: u64 = stats.crashes_by_type.iter().map(|(_, n)| n).sum();
    assert_eq!(crashes, 20);
    let incomplete = stats
        .sessions
        .iter()
        .find(|(s, _)| *s == Status::Incomplete)
        .map(|(_, n)| *n);
    assert_eq!(incomplete, Some(20));
}

/// Cleanup purges what is old enough and nothing else; a dry run changes nothing; only the
/// holder of the maintenance term runs it; the crash and recovery counts of what it purged
/// stay in the tenant's stats (they are historical, SPEC §9).
pub async fn cleanup_purges_only_what_is_due(handles: Handles) {
    let (a, b, clock) = engines(&handles).await;
    let old = session(&a, "old", 60_000).await;
    a.fail(&tenant(), &old, 1, "render died".to_owned(), None)
        .await
        .expect("fail");
    a.recover(&tenant(), &old, lifeboat::RecoveryOption::Continue, false)
        .await
        .expect("recover");
    a.fail(&tenant(), &old, 2, "render died again".to_owned(), None)
        .await
        .expect("fail again");
    let counted = |stats: &lifeboat::Stats| {
        let crashes: u64 = stats.crashes_by_type.iter().map(|(_, n)| n).sum();
        let recoveries: u64 = stats.recoveries_by_option.iter().map(|(_, n)| n).sum();
        (crashes, recoveries, stats.recoveries_failed)
    };
    let before = counted(&b.stats(&tenant()).await.expect("stats"));
    assert_eq!(before, (2, 1, 1), "two crashes, one recovery that failed");
    clock.advance_ms(8 * 24 * 3_600_000);
    let young = session(&b, "young", 60_000).await;
    b.cancel(&tenant(), &young, None).await.expect("cancel");
    let dry = a.cleanup(true).await.expect("dry run");
    assert_eq!(dry.sessions_purged, 1);
    assert!(
        a.session(&tenant(), &old).await.is_ok(),
        "a dry run purges nothing"
    );
    // One server at a time holds the maintenance term (the first to start, on a shared
    // store); the other is refused and changes nothing.
    let done = match b.cleanup(false).await {
        Ok(done) => done,
        Err(Error::Unavailable(_)) => {
            assert!(
                a.session(&tenant(), &old).await.is_ok(),
                "a refusal purges nothing"
            );
            a.cleanup(false).await.expect("cleanup by the holder")
        }
        Err(other) => panic!("cleanup: {other:?}"),
    };
    assert_eq!(done.sessions_purged, 1);
    let gone = a.session(&tenant(), &old).await;
    assert!(matches!(gone, Err(Error::NotFound { .. })), "{gone:?}");
    assert!(a.session(&tenant(), &young).await.is_ok());
    for engine in [&a, &b] {
        let after = counted(&engine.stats(&tenant()).await.expect("stats"));
        assert_eq!(after, before, "the purged session's counts stay");
    }
}

/// Cleanup run by both engines at once leaves no record without its bytes. Of a purged
/// session only the files nothing else names go: the bytes it shared with a live session,
/// a replaced version a live checkpoint pins and appended bytes stay readable through
/// either engine, the purge is counted once, and bytes uploaded again afterwards are
/// stored anew.
pub async fn cleanup_from_two_engines_leaves_no_record_without_its_bytes(handles: Handles) {
    let (a, b, clock) = engines(&handles).await;
    let live = session(&a, "live", 60_000).await;
    let done = session(&b, "done", 60_000).await;
    let live_owner = Owner::Session(live.clone());
    let done_owner = Owner::Session(done.clone());
    let shared = vec![7u8; 4_096];
    let unique = vec![9u8; 4_096];
    put(&a, &live_owner, "shared.bin", &shared).await;
    put(&a, &live_owner, "doc.bin", b"first draft").await;
    let mut pinning = checkpoint(CheckpointKind::Batch, 1);
    pinning.assets = vec!["doc.bin".to_owned()];
    let pinned = a
        .checkpoint(&tenant(), &live, 1, pinning)
        .await
        .expect("a checkpoint pinning doc.bin")
        .seq;
    put(&b, &live_owner, "doc.bin", b"second draft").await;
    let take = AssetName::parse("take.pcm").expect("name");
    let mut recorded = Vec::new();
    for chunk in [vec![1u8; 1_024], vec![2u8; 1_024]] {
        b.append_asset(
            &tenant(),
            &live_owner,
            &take,
            recorded.len() as u64,
            chunk.clone(),
            None,
        )
        .await
        .expect("append");
        recorded.extend(chunk);
    }
    put(&b, &done_owner, "shared.bin", &shared).await;
    put(&b, &done_owner, "unique.bin", &unique).await;
    b.cancel(&tenant(), &done, None).await.expect("cancel");
    clock.advance_ms(8 * 24 * 3_600_000);

    let (x, y) = tokio::join!(a.cleanup(false), b.cleanup(false));
    let (mut purged, mut deleted) = (0, 0);
    for report in [x, y] {
        match report {
            Ok(report) => {
                purged += report.sessions_purged;
                deleted += report.orphan_files_deleted;
            }
            // Refused: the other engine holds the maintenance term.
            Err(Error::Unavailable(_)) => {}
            Err(other) => panic!("cleanup: {other:?}"),
        }
    }
    assert_eq!(purged, 1, "the finished session is purged once");
    assert!(
        deleted >= 1,
        "the bytes only the purged session named are deleted"
    );

    for engine in [&a, &b] {
        let gone = engine.session(&tenant(), &done).await;
        assert!(matches!(gone, Err(Error::NotFound { .. })), "{gone:?}");
        for (name, bytes) in [
            ("shared.bin", shared.as_slice()),
            ("doc.bin", b"second draft".as_slice()),
            ("take.pcm", recorded.as_slice()),
        ] {
            assert_eq!(read(engine, &live_owner, name).await, bytes, "{name}");
        }
        let doc = AssetName::parse("doc.bin").expect("name");
        let (_, open) = engine
            .open_pinned(&tenant(), &live, pinned, &doc)
            .await
            .expect("the pinned version's bytes");
        assert_eq!(open.read_all().await.expect("read"), b"first draft");
    }
    put(&a, &live_owner, "unique.bin", &unique).await;
    assert_eq!(read(&b, &live_owner, "unique.bin").await, unique);
    let verified = b.verify_store(false).await.expect("verify");
    assert!(verified.is_clean(), "{verified:?}");
}

async fn put(engine: &lifeboat::Lifeboat, owner: &Owner, name: &str, bytes: &[u8]) {
    let mut upload = engine.upload(&tenant(), owner, None).await.expect("upload");
    upload
        .write(bytes.to_vec().into(), u64::MAX)
        .await
        .expect("write bytes");
    let name = AssetName::parse(name).expect("name");
    engine
        .put_asset(&tenant(), owner, &name, upload, None, None)
        .await
        .expect("put");
}

async fn read(engine: &lifeboat::Lifeboat, owner: &Owner, name: &str) -> Vec<u8> {
    let name = AssetName::parse(name).expect("name");
    let (_, open) = engine
        .open_asset(&tenant(), owner, &name)
        .await
        .expect("open the asset");
    open.read_all().await.expect("read the asset")
}

/// A session purged and then created again under its id (through the other engine) is a
/// new session to every write after (the PostgreSQL writer, which remembers the row keys
/// of the sessions it locked, finds its key out of date and locks the new row).
pub async fn a_session_created_again_after_its_purge_is_written_anew(handles: Handles) {
    let (a, b, clock) = engines(&handles).await;
    let first = session(&a, "again", 60_000).await;
    for n in 0..2 {
        a.checkpoint(&tenant(), &first, 1, checkpoint(CheckpointKind::Batch, n))
            .await
            .expect("write");
    }
    a.cancel(&tenant(), &first, None).await.expect("cancel");
    clock.advance_ms(8 * 24 * 3_600_000);
    let purged = match a.cleanup(false).await {
        Ok(done) => done,
        Err(Error::Unavailable(_)) => b.cleanup(false).await.expect("cleanup by the holder"),
        Err(other) => panic!("cleanup: {other:?}"),
    };
    assert_eq!(purged.sessions_purged, 1);
    let again = session(&b, "again", 60_000).await;
    let written = a
        .checkpoint(&tenant(), &again, 1, checkpoint(CheckpointKind::Batch, 7))
        .await
        .expect("a checkpoint of the new session");
    assert_eq!(written.seq, 1, "the new session numbers from 1");
    let stored = a.session(&tenant(), &again).await.expect("read");
    assert_eq!(stored.status, Status::Active);
    let checkpoints = b
        .checkpoints(&tenant(), &again, &all())
        .await
        .expect("list");
    assert_eq!(
        checkpoints.items.len(),
        1,
        "nothing of the purged session is left"
    );
}

/// An import is all or nothing: the same archive imported twice into one tenant adds
/// everything the first time and nothing the second (an id is taken).
pub async fn an_import_is_all_or_nothing(handles: Handles) {
    let (a, b, _) = engines(&handles).await;
    for n in 0..3 {
        let s = session(&a, &format!("move-{n}"), 60_000).await;
        a.checkpoint(&tenant(), &s, 1, checkpoint(CheckpointKind::Stage, n))
            .await
            .expect("write");
    }
    let export = a
        .export(&tenant(), &Selection::default())
        .await
        .expect("export");
    let archive = export.write_to(Vec::new()).expect("archive");
    let elsewhere = TenantId::new("elsewhere");
    let counts = b
        .import(&elsewhere, std::io::Cursor::new(archive.clone()))
        .await
        .expect("import");
    assert_eq!((counts.sessions, counts.checkpoints), (3, 3));
    // A session whose id the second import also brings makes it refuse everything.
    let refused = a.import(&elsewhere, std::io::Cursor::new(archive)).await;
    assert!(
        matches!(refused, Err(Error::AlreadyExists { .. })),
        "{refused:?}"
    );
    let listed = b
        .sessions(&elsewhere, &SessionFilter::default(), &all())
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 3);
    for s in &listed.items {
        let checkpoints = a
            .checkpoints(&elsewhere, &s.id, &all())
            .await
            .expect("list");
        assert_eq!(checkpoints.items.len(), 1, "no checkpoint was added twice");
    }
}

/// An import keeps each session within its `checkpoint_retention`: records that bring
/// more prunable checkpoints than that (here the retention lowered in the records) keep
/// the newest and every stage; the next checkpoint then prunes the one it pushes out.
pub async fn an_import_keeps_each_session_within_its_retention(handles: Handles) {
    let (a, b, _) = engines(&handles).await;
    let s = session(&a, "kept", 60_000).await;
    for n in 0..5 {
        a.checkpoint(&tenant(), &s, 1, checkpoint(CheckpointKind::Item, n))
            .await
            .expect("an item");
    }
    a.checkpoint(&tenant(), &s, 1, checkpoint(CheckpointKind::Stage, 5))
        .await
        .expect("a stage");
    let elsewhere = TenantId::new("elsewhere");
    let into = elsewhere.clone();
    let job: WriteJob = Box::new(move |tx: &mut dyn Tx| {
        let (mut records, _) = tx.export(&tenant(), &Selection::default())?;
        records["sessions"][0]["session"]["checkpoint_retention"] = json!(2);
        let counts = tx.import(&into, &records)?;
        Ok(Ok(Box::new(counts) as Box<dyn std::any::Any + Send>))
    });
    handles
        .second
        .write(Ack::AfterCommit, job)
        .await
        .expect("the import");
    let seqs = |listed: lifeboat::Page<lifeboat::Checkpoint>| -> Vec<u64> {
        listed.items.iter().map(|c| c.seq).collect()
    };
    let kept = b.checkpoints(&elsewhere, &s, &all()).await.expect("list");
    assert_eq!(seqs(kept), [4, 5, 6], "the two newest items and the stage");
    b.checkpoint(&elsewhere, &s, 1, checkpoint(CheckpointKind::Item, 7))
        .await
        .expect("a checkpoint after the import");
    let kept = b.checkpoints(&elsewhere, &s, &all()).await.expect("list");
    assert_eq!(seqs(kept), [5, 6, 7], "the next checkpoint pruned one");
}

/// Appends raced at one offset through two engines, round after round (and the first
/// append of a project's new asset): one is recorded, the other refused with
/// `offset-mismatch`, and the bytes read back are the recorded ones.
pub async fn appends_at_one_offset_have_one_winner(handles: Handles) {
    let (a, b, _) = engines(&handles).await;
    let s = session(&a, "recording", 60_000).await;
    let project = lifeboat::Id::parse("doc").expect("an id");
    let create = lifeboat::ProjectEdit::Change(lifeboat::Change::Replace {
        state: serde_json::json!({}),
        title: None,
        schema: None,
    });
    a.save_project(
        &tenant(),
        &project,
        create,
        lifeboat::Preconditions::default(),
        None,
    )
    .await
    .expect("a project");
    let name = AssetName::parse("take.pcm").expect("name");
    let mut kept = Vec::new();
    for round in 0..16u8 {
        let (owner, name) = if round % 4 == 3 {
            let fresh = AssetName::parse(&format!("new-{round}.bin")).expect("name");
            (Owner::Project(project.clone()), fresh)
        } else {
            (Owner::Session(s.clone()), name.clone())
        };
        let offset = if matches!(owner, Owner::Project(_)) {
            0
        } else {
            kept.len() as u64
        };
        let t = tenant();
        let (x, y) = tokio::join!(
            a.append_asset(&t, &owner, &name, offset, vec![round; 1024], None),
            b.append_asset(&t, &owner, &name, offset, vec![!round; 1024], None)
        );
        let refused = |result: &Result<lifeboat::Appended, Error>| {
            matches!(
                result,
                Err(Error::Domain(lifeboat::DomainError::OffsetMismatch { .. }))
            )
        };
        let winner = match (&x, &y) {
            (Ok(_), other) if refused(other) => round,
            (other, Ok(_)) if refused(other) => !round,
            _ => panic!("round {round}: one winner expected, got {x:?} and {y:?}"),
        };
        let (_, open) = b
            .open_asset(&tenant(), &owner, &name)
            .await
            .expect("open the asset");
        let stored = open.read_all().await.expect("read the asset");
        if matches!(owner, Owner::Project(_)) {
            assert_eq!(stored, vec![winner; 1024], "round {round}");
        } else {
            kept.extend(vec![winner; 1024]);
            assert_eq!(stored, kept, "round {round}");
        }
    }
}

/// A key revoked through one engine is refused by the other within a second, on a store
/// that several servers share (a store one process owns has one engine).
pub async fn a_key_revoked_through_one_engine_is_refused_by_the_other(handles: Handles) {
    if !handles.first.shared() {
        return;
    }
    let (a, b, _) = engines(&handles).await;
    let (key, token) = a
        .create_key("conformance", &["read".to_owned()])
        .await
        .expect("a key");
    assert!(
        b.authenticate(&token)
            .await
            .expect("authenticate")
            .is_some()
    );
    a.revoke_key(&key.id, None).await.expect("revoke");
    let revoked = std::time::Instant::now();
    while b
        .authenticate(&token)
        .await
        .expect("authenticate")
        .is_some()
    {
        assert!(
            revoked.elapsed() < std::time::Duration::from_secs(1),
            "the other engine still accepts the revoked key"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
