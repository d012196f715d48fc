//! Cleanup: records first (one transaction), then files that no record names and that
//! are older than the orphan age. A crash between the two leaves orphan files for the
//! next run, never a record without its bytes.

use std::collections::HashSet;
use std::time::UNIX_EPOCH;

use lifeboat_store::blobs::StoredFile;
use lifeboat_store::{CleanupReport, Error, FileRef, Result};

use crate::Lifeboat;

impl Lifeboat {
    /// Runs cleanup now (`dry_run`: count only, change nothing) and logs its summary.
    pub async fn cleanup(&self, dry_run: bool) -> Result<CleanupReport> {
        let rules = self.inner.cleanup;
        let now = self.now();
        let blobs = self.inner.store.blobs().clone();
        let files = tokio::task::spawn_blocking(move || blobs.files())
            .await
            .map_err(|e| Error::Internal(format!("listing files failed: {e}")))?
            .map_err(|e| Error::Unavailable(format!("cannot list the blob store: {e}")))?;
        let cutoff = now.minus_ms(rules.orphan_age_ms).0;
        let old: Vec<StoredFile> = files
            .into_iter()
            .filter(|file| age(file).is_some_and(|(_, modified)| modified <= cutoff))
            .collect();
        let candidates = old
            .iter()
            .filter_map(|file| match file {
                StoredFile::Temporary(_) => None,
                StoredFile::Blob(_, sha256) => Some(FileRef::Blob(sha256.clone())),
                StoredFile::Appendable(_, key) => Some(FileRef::Appendable(key.clone())),
            })
            .collect();
        let (mut report, orphans) = self
            .inner
            .store
            .cleanup_records(rules, now, dry_run, candidates)
            .await?;
        if !dry_run {
            crate::failpoint::reached("cleanup.after_records");
        }
        let orphans: HashSet<FileRef> = orphans.into_iter().collect();
        for file in old {
            let unreferenced = match &file {
                StoredFile::Temporary(_) => true,
                StoredFile::Blob(_, sha256) => orphans.contains(&FileRef::Blob(sha256.clone())),
                StoredFile::Appendable(_, key) => {
                    orphans.contains(&FileRef::Appendable(key.clone()))
                }
            };
            // The age is looked at again right before deleting: an upload of the same
            // bytes touches the blob it reuses.
            let Some((size, modified)) = age(&file).filter(|_| unreferenced) else {
                continue;
            };
            if modified > cutoff {
                continue;
            }
            if !dry_run && let Err(error) = tokio::fs::remove_file(file.path()).await {
                tracing::warn!(%error, path = %file.path().display(), "cannot delete an orphan file");
                continue;
            }
            if !dry_run && report.orphan_files_deleted == 0 {
                crate::failpoint::reached("cleanup.after_first_file");
            }
            report.orphan_files_deleted += 1;
            report.bytes_freed += size;
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
}

/// Size and modification time (ms since the epoch) of a stored file.
fn age(file: &StoredFile) -> Option<(u64, i64)> {
    let meta = std::fs::metadata(file.path()).ok()?;
    let modified = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some((meta.len(), i64::try_from(modified.as_millis()).ok()?))
}
