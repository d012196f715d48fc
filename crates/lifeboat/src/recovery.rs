//! The recovery view of a session, from facts a backend reads and file checks made
//! outside any transaction (SPEC §2 "Recovery assessment", §5 r2 "Pinned versions").
//!
//! One transaction reads [`RecoveryFacts`] (the session, its checkpoints with `valid`
//! recomputed, its current assets, the versions a verification found damaged). The
//! engine then looks at the files ([`FileChecks`]: does each version's file exist with
//! the bytes it needs) without holding the writer, since a file check can block on a
//! slow or hung mount. [`evaluate`] combines the two; every backend gets the same answer.

use std::collections::{HashMap, HashSet};

use lifeboat_core::{
    Asset, AssetCounts, AssetStatus, Checkpoint, FileLook, FileVersion, PinnedAsset, Session,
    Timestamp, assess,
};

use lifeboat_core::{Id, Owner, TenantId};
use lifeboat_store::{PAGE_BYTES_MAX, Page, PageRequest, Result, RowId, Tx};

use crate::sessions::load;
use crate::{Lifeboat, Recovery, checkpoints, page};

impl Lifeboat {
    /// The recovery assessment of one session: its records read at once, its files
    /// looked at outside the writer.
    pub async fn recovery(&self, tenant: &TenantId, id: &Id) -> Result<Recovery> {
        let now = self.settled_now().await?;
        let facts = self.recovery_facts(tenant, id).await?;
        let files = self.check_files(facts.versions()).await;
        Ok(evaluate(facts, &files, now))
    }

    /// Recoverable sessions (of `project`, when given), newest first.
    pub async fn recoverable(
        &self,
        tenant: &TenantId,
        project: Option<&Id>,
        page: &PageRequest,
    ) -> Result<Page<Recovery>> {
        let now = self.settled_now().await?;
        let before = page::decode(page.cursor.as_deref())?.unwrap_or(i64::MAX);
        let (tenant, project, limit) = (tenant.clone(), project.cloned(), page.limit);
        let found = self
            .read(move |tx| {
                let rows = tx.recoverable_page(
                    &tenant,
                    project.as_ref(),
                    before,
                    limit.saturating_add(1),
                    now,
                )?;
                let mut found = Vec::with_capacity(rows.len());
                let mut bytes = 0;
                for (row, session) in rows {
                    // Past the page's budget the facts are not read: the page ends there.
                    if bytes >= PAGE_BYTES_MAX {
                        found.push((row, None));
                        break;
                    }
                    let facts = facts_of(tx, &tenant, row, session)?;
                    bytes += facts
                        .checkpoints
                        .iter()
                        .map(checkpoints::bytes)
                        .sum::<usize>();
                    found.push((row, Some(facts)));
                }
                Ok(found)
            })
            .await?;
        let found = page::within(
            found
                .into_iter()
                .map(|(row, facts)| (page::encode(row), facts)),
            |facts| {
                facts
                    .as_ref()
                    .map_or(0, |f| f.checkpoints.iter().map(checkpoints::bytes).sum())
            },
            limit,
        );
        let facts: Vec<RecoveryFacts> = found.items.into_iter().flatten().collect();
        let versions = facts.iter().flat_map(RecoveryFacts::versions).collect();
        let files = self.check_files(versions).await;
        Ok(Page {
            items: facts
                .into_iter()
                .map(|facts| evaluate(facts, &files, now))
                .collect(),
            next_cursor: found.next_cursor,
        })
    }

    /// What a recovery of one session needs, read in one transaction.
    pub(crate) async fn recovery_facts(&self, tenant: &TenantId, id: &Id) -> Result<RecoveryFacts> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.read(move |tx| {
            let (row, session) = load(tx, &tenant, &id)?;
            facts_of(tx, &tenant, row, session)
        })
        .await
    }
}

/// What a recovery needs of one loaded session, read in the caller's transaction.
pub(crate) fn facts_of(
    tx: &mut dyn Tx,
    tenant: &TenantId,
    row: RowId,
    session: Session,
) -> Result<RecoveryFacts> {
    let checkpoints = tx.checkpoints(row)?;
    let assets = tx.assets(tenant, &Owner::Session(session.id.clone()))?;
    let mut facts = RecoveryFacts {
        session,
        checkpoints,
        assets,
        damaged: HashSet::new(),
    };
    facts.damaged = tx.damaged(&facts.versions())?;
    Ok(facts)
}

/// What a backend knows about a session's recovery, read in one transaction.
#[derive(Debug, Clone)]
pub struct RecoveryFacts {
    /// The session as stored.
    pub session: Session,
    /// Its checkpoints in seq order, `valid` recomputed from the stored bytes.
    pub checkpoints: Vec<Checkpoint>,
    /// Its current assets.
    pub assets: Vec<Asset>,
    /// Versions of its files that a verification found damaged.
    pub damaged: HashSet<FileVersion>,
}

impl RecoveryFacts {
    /// Every file version an assessment looks at: the current assets', and each pinned one.
    pub fn versions(&self) -> Vec<FileVersion> {
        let mut seen = HashSet::new();
        self.assets
            .iter()
            .map(Asset::version)
            .chain(
                self.checkpoints
                    .iter()
                    .flat_map(|c| c.assets.iter().map(PinnedAsset::version)),
            )
            .filter(|version| seen.insert(version.clone()))
            .collect()
    }
}

/// Whether each file version's bytes are there: the file exists, is a regular file, and
/// holds the version's bytes (exactly that many for a blob or an external file, at least
/// that many for a prefix of an appendable file), or holds another number of bytes. A
/// version not looked at counts as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileChecks(HashMap<FileVersion, FileLook>);

impl FileChecks {
    /// Records what a look at `version` found.
    pub fn insert(&mut self, version: FileVersion, look: FileLook) {
        self.0.insert(version, look);
    }

    /// What the look at `version` found.
    pub fn look(&self, version: &FileVersion) -> FileLook {
        self.0.get(version).copied().unwrap_or(FileLook::Absent)
    }
}

/// An asset's status as recovery sees it: corrupt when a verification said so or its file
/// has another size, missing when its file is not there, ok otherwise.
fn status_of(asset: &Asset, damaged: &HashSet<FileVersion>, files: &FileChecks) -> AssetStatus {
    let version = asset.version();
    if asset.status == AssetStatus::Corrupt || damaged.contains(&version) {
        return AssetStatus::Corrupt;
    }
    match files.look(&version) {
        FileLook::Present => AssetStatus::Ok,
        FileLook::Absent => AssetStatus::Missing,
        FileLook::Differs => AssetStatus::Corrupt,
    }
}

/// Whether a pinned version can be resumed from: its asset still exists (a `DELETE`
/// disqualifies), its bytes are there, and no verification found them damaged.
pub fn pin_verifies(
    pin: &PinnedAsset,
    assets: &[Asset],
    damaged: &HashSet<FileVersion>,
    files: &FileChecks,
) -> bool {
    let version = pin.version();
    let Some(current) = assets.iter().find(|a| a.name == pin.name) else {
        return false;
    };
    let current_is_corrupt = current.status == AssetStatus::Corrupt && current.version() == version;
    !current_is_corrupt && !damaged.contains(&version) && files.look(&version) == FileLook::Present
}

/// The recovery view of `facts` at `now`, given what the files looked like.
pub fn evaluate(facts: RecoveryFacts, files: &FileChecks, now: Timestamp) -> Recovery {
    let RecoveryFacts {
        mut session,
        checkpoints,
        assets,
        damaged,
    } = facts;
    session.observe(now);
    let mut counts = AssetCounts {
        total: assets.len() as u64,
        ..AssetCounts::default()
    };
    let mut missing_assets = Vec::new();
    for asset in &assets {
        match status_of(asset, &damaged, files) {
            AssetStatus::Ok => counts.ok += 1,
            AssetStatus::Missing => {
                counts.missing += 1;
                missing_assets.push(asset.name.to_string());
            }
            AssetStatus::Corrupt => {
                counts.corrupt += 1;
                missing_assets.push(asset.name.to_string());
            }
        }
    }
    let verifies = |pin: &PinnedAsset| pin_verifies(pin, &assets, &damaged, files);
    let assessment = assess(&session, &checkpoints, &verifies, counts);
    let find = |seq: Option<u64>| checkpoints.iter().find(|c| Some(c.seq) == seq).cloned();
    let resume_from = find(assessment.resume_from.as_ref().map(|p| p.seq));
    let batch_from = find(assessment.restart_batch_from.as_ref().map(|p| p.seq));
    Recovery {
        session,
        assessment,
        resume_from,
        batch_from,
        assets: counts,
        missing_assets,
    }
}
