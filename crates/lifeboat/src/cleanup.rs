//! Cleanup: records first, then files that no record names and that are older than the
//! orphan age. A crash between the two leaves orphan files for the next run, never a
//! record without its bytes.
//!
//! Nothing here holds the writer for long (SPEC §2 r2: a busy server never breaks live
//! leases): records go in short steps (`MaintenanceRows::purge_step`), one transaction each, with
//! other writes between them; whether a file is still named is asked on a read snapshot,
//! a chunk of files at a time; files are deleted outside any transaction.

use std::time::UNIX_EPOCH;

use lifeboat_core::Timestamp;
use lifeboat_store::blobs::StoredFile;
use lifeboat_store::objects::Objects;
use lifeboat_store::{Ack, CleanupCursor, CleanupReport, Error, FileRef, Result};

use crate::Lifeboat;

/// Files asked about (and then deleted) per step.
const FILES_PER_STEP: usize = 512;

impl Lifeboat {
    /// Runs cleanup now (`dry_run`: count only, change nothing) and logs its summary.
    ///
    /// One server at a time cleans a store: while another holds the turn, a real run is
    /// refused as unavailable (retry later) and changes nothing; a dry run needs no turn.
    pub async fn cleanup(&self, dry_run: bool) -> Result<CleanupReport> {
        let turn = if dry_run {
            None
        } else {
            Some(self.inner.store.maintenance().await?.ok_or_else(|| {
                Error::Unavailable(
                    "another server on this database holds the maintenance term and runs cleanup; GET /admin/cluster names it"
                        .to_owned(),
                )
            })?)
        };
        // A server that lost its term (cut off from the database past its lease) stops
        // before its next step: the new holder cleans from then on.
        let still_held = || {
            if turn.as_ref().is_none_or(|turn| turn.held()) {
                Ok(())
            } else {
                Err(lost_term())
            }
        };
        let rules = self.inner.cleanup;
        let now = self.now();
        let mut report = CleanupReport::default();
        let mut cursor = Some(CleanupCursor::START);
        let term = turn.as_ref().and_then(|turn| turn.term());
        while let Some(at) = cursor {
            still_held()?;
            let (step, next) = self.cleanup_step(now, dry_run, at, term.clone()).await?;
            add(&mut report, step);
            cursor = next;
        }
        if !dry_run {
            crate::failpoint::reached("cleanup.after_records");
            self.purge_expired_project_tokens(now).await?;
        }
        let cutoff = now.minus_ms(rules.orphan_age_ms).0;
        let blobs = self.inner.store.blobs().clone();
        let old: Vec<StoredFile> = tokio::task::spawn_blocking(move || {
            blobs.files().map(|files| {
                files
                    .into_iter()
                    .filter(|file| age(file).is_some_and(|(_, modified)| modified <= cutoff))
                    .collect()
            })
        })
        .await
        .map_err(|e| Error::Internal(format!("listing files failed: {e}")))?
        .map_err(|e| Error::Unavailable(format!("cannot list the blob store: {e}")))?;
        // A dry run leaves the records it counted; files only they name count as orphans.
        let purged = dry_run.then(|| {
            (
                now.minus_ms(rules.finished_session_age_ms).0,
                now.minus_ms(rules.deleted_project_age_ms).0,
            )
        });
        for chunk in old.chunks(FILES_PER_STEP) {
            still_held()?;
            let candidates: Vec<FileRef> = chunk.iter().filter_map(file_ref).collect();
            let orphans = self.unreferenced(candidates, purged).await?;
            let doomed: Vec<StoredFile> = chunk
                .iter()
                .filter(|file| file_ref(file).is_none_or(|f| orphans.contains(&f)))
                .cloned()
                .collect();
            let first = report.orphan_files_deleted == 0;
            let (deleted, bytes) = self.delete_orphans(doomed, cutoff, dry_run, first).await?;
            report.orphan_files_deleted += deleted;
            report.bytes_freed += bytes;
        }
        if let Some(objects) = self.inner.assets.objects.clone() {
            let (deleted, bytes) = self
                .cleanup_bucket(&objects, cutoff, dry_run, purged, &still_held)
                .await?;
            report.orphan_files_deleted += deleted;
            report.bytes_freed += bytes;
        }
        if !dry_run {
            for (kind, count) in [
                ("orphan_file", report.orphan_files_deleted),
                ("session", report.sessions_purged),
                ("checkpoint", report.checkpoints_pruned),
                ("revision", report.revisions_pruned),
                ("project", report.projects_purged),
                ("idempotency_key", report.idempotency_keys_expired),
            ] {
                metrics::counter!("lifeboat_cleanup_deleted_total", "kind" => kind)
                    .increment(count);
            }
            metrics::counter!("lifeboat_cleanup_freed_bytes_total").increment(report.bytes_freed);
        }
        tracing::info!(
            dry_run,
            orphan_files_deleted = report.orphan_files_deleted,
            bytes_freed = report.bytes_freed,
            sessions_purged = report.sessions_purged,
            checkpoints_pruned = report.checkpoints_pruned,
            revisions_pruned = report.revisions_pruned,
            projects_purged = report.projects_purged,
            idempotency_keys_expired = report.idempotency_keys_expired,
            "cleanup"
        );
        Ok(report)
    }

    /// Deletes project tokens that expired, a bounded batch per transaction. They are dead
    /// already (refused at their expiry); this only keeps the table from growing.
    async fn purge_expired_project_tokens(&self, now: Timestamp) -> Result<()> {
        const BATCH: u32 = 1_000;
        loop {
            let deleted = self
                .write(Ack::AfterCommit, move |tx| {
                    Ok(Ok(tx.purge_project_tokens(now, BATCH)?))
                })
                .await?;
            if deleted < u64::from(BATCH) {
                return Ok(());
            }
        }
    }

    /// One step of the record half, in one transaction; a dry run counts inside the
    /// transaction, then rolls it back.
    async fn cleanup_step(
        &self,
        now: Timestamp,
        dry_run: bool,
        cursor: CleanupCursor,
        term: Option<(String, u64)>,
    ) -> Result<(CleanupReport, Option<CleanupCursor>)> {
        let (rules, retention) = (self.inner.cleanup, self.inner.projects.retention);
        self.write(Ack::AfterCommit, move |tx| {
            // The term is checked, and kept, inside the step's own transaction: a server
            // that lost it deletes nothing, and the next holder's term waits for this step.
            if let Some((holder, term)) = &term
                && !tx.hold_term(holder, *term)?
            {
                return Err(lost_term());
            }
            let step = tx.purge_step(rules, retention, now, cursor.clone())?;
            if dry_run {
                return Err(Error::DryRun(Box::new(step)));
            }
            Ok(Ok(step))
        })
        .await
        .or_else(|e| match e {
            Error::DryRun(step) => Ok(*step),
            other => Err(other),
        })
    }

    /// The files half of cleanup in the bucket: files (all their chunk objects) that no
    /// record names and whose newest object is older than `cutoff`, then multipart uploads
    /// started before `cutoff` and never finished (a server died mid-upload), aborted.
    /// Answers how many files and uploads went, and the files' bytes.
    async fn cleanup_bucket(
        &self,
        objects: &Objects,
        cutoff: i64,
        dry_run: bool,
        purged: Option<(i64, i64)>,
        still_held: &impl Fn() -> Result<()>,
    ) -> Result<(u64, u64)> {
        let unavailable =
            |e: std::io::Error| Error::Unavailable(format!("cannot clean the bucket: {e}"));
        let old: Vec<_> = objects
            .files()
            .await
            .map_err(unavailable)?
            .into_iter()
            .filter(|file| file.newest_ms <= cutoff)
            .collect();
        let (mut deleted, mut bytes) = (0, 0);
        for chunk in old.chunks(FILES_PER_STEP) {
            still_held()?;
            let candidates = chunk
                .iter()
                .map(|file| FileRef::Appendable(file.key.clone()))
                .collect();
            let orphans = self.unreferenced(candidates, purged).await?;
            for file in chunk {
                if !orphans.contains(&FileRef::Appendable(file.key.clone())) {
                    continue;
                }
                if !dry_run {
                    objects.delete_file(&file.key).await.map_err(unavailable)?;
                }
                deleted += 1;
                bytes += file.bytes;
            }
        }
        for pending in objects.pending_uploads().await.map_err(unavailable)? {
            if pending.started_ms > cutoff {
                continue;
            }
            still_held()?;
            if !dry_run {
                objects.abort_pending(&pending).await.map_err(unavailable)?;
            }
            deleted += 1;
        }
        Ok((deleted, bytes))
    }

    /// Of `candidates`, the files no record names, asked on a read snapshot. With
    /// `purged` (a dry run's cutoffs, see `AssetRows::file_named`), records cleanup would
    /// purge do not count.
    async fn unreferenced(
        &self,
        candidates: Vec<FileRef>,
        purged: Option<(i64, i64)>,
    ) -> Result<Vec<FileRef>> {
        self.read(move |tx| {
            let mut orphans = Vec::new();
            for file in candidates {
                if !tx.file_named(&file, purged)? {
                    orphans.push(file);
                }
            }
            Ok(orphans)
        })
        .await
    }

    /// Deletes unreferenced old files (counts them in a dry run): answers how many and
    /// their bytes (`first`: none was deleted before in this run). Each file's age is looked
    /// at again right before it goes, and a blob
    /// an upload is placing now is left alone (see `AssetState::placing`).
    async fn delete_orphans(
        &self,
        files: Vec<StoredFile>,
        cutoff: i64,
        dry_run: bool,
        first: bool,
    ) -> Result<(u64, u64)> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let (mut deleted, mut bytes) = (0, 0);
            for file in files {
                let remove = || -> Option<u64> {
                    let (size, modified) = age(&file).filter(|(_, m)| *m <= cutoff)?;
                    if dry_run {
                        return Some(size);
                    }
                    match std::fs::remove_file(file.path()) {
                        Ok(()) => Some(size),
                        Err(error) => {
                            tracing::warn!(%error, path = %file.path().display(), modified, "cannot delete an orphan file");
                            None
                        }
                    }
                };
                let removed = match &file {
                    StoredFile::Blob(_, sha256) => {
                        this.inner.assets.unless_placing(sha256, remove).flatten()
                    }
                    _ => remove(),
                };
                let Some(size) = removed else {
                    continue;
                };
                if !dry_run && first && deleted == 0 {
                    crate::failpoint::reached("cleanup.after_first_file");
                }
                deleted += 1;
                bytes += size;
            }
            (deleted, bytes)
        })
        .await
        .map_err(|e| Error::Internal(format!("deleting files failed: {e}")))
    }
}

/// The record reference of a stored file (`None` for an upload in progress, which no
/// record ever names).
fn file_ref(file: &StoredFile) -> Option<FileRef> {
    match file {
        StoredFile::Temporary(_) => None,
        StoredFile::Blob(_, sha256) => Some(FileRef::Blob(sha256.clone())),
        StoredFile::Appendable(_, key) => Some(FileRef::Appendable(key.clone())),
    }
}

fn add(report: &mut CleanupReport, step: CleanupReport) {
    report.orphan_files_deleted += step.orphan_files_deleted;
    report.bytes_freed += step.bytes_freed;
    report.sessions_purged += step.sessions_purged;
    report.checkpoints_pruned += step.checkpoints_pruned;
    report.revisions_pruned += step.revisions_pruned;
    report.projects_purged += step.projects_purged;
    report.idempotency_keys_expired += step.idempotency_keys_expired;
}

/// Size and modification time (ms since the epoch) of a stored file.
fn age(file: &StoredFile) -> Option<(u64, i64)> {
    let meta = std::fs::metadata(file.path()).ok()?;
    let modified = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some((meta.len(), i64::try_from(modified.as_millis()).ok()?))
}

/// Why a cleanup stopped: this server no longer holds the maintenance term.
fn lost_term() -> Error {
    Error::Unavailable(
        "this server lost the maintenance term during cleanup; the new holder goes on".to_owned(),
    )
}
