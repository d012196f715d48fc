//! The recovery view of a session, from facts a backend reads and file checks made
//! outside any transaction (SPEC §2 "Recovery assessment", §5 r2 "Pinned versions").
//!
//! A backend reads [`RecoveryFacts`] (the session, its checkpoints with `valid`
//! recomputed, its current assets, the versions a verification found damaged). The
//! engine then looks at the files ([`FileChecks`]: does each version's file exist with
//! the bytes it needs) without holding the writer, since a file check can block on a
//! slow or hung mount. [`evaluate`] combines the two; every backend gets the same answer.

use std::collections::{HashMap, HashSet};

use lifeboat_core::{
    Asset, AssetCounts, AssetStatus, Checkpoint, FileVersion, PinnedAsset, Session, Timestamp,
    assess,
};

use crate::Recovery;

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
/// that many for a prefix of an appendable file). A version not looked at counts as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileChecks(HashMap<FileVersion, bool>);

impl FileChecks {
    /// Records what a look at `version` found.
    pub fn insert(&mut self, version: FileVersion, present: bool) {
        self.0.insert(version, present);
    }

    /// Whether `version` was found present.
    pub fn present(&self, version: &FileVersion) -> bool {
        self.0.get(version).copied().unwrap_or(false)
    }
}

/// An asset's status as recovery sees it: corrupt when a verification said so, missing
/// when its file is not there, ok otherwise.
fn status_of(asset: &Asset, damaged: &HashSet<FileVersion>, files: &FileChecks) -> AssetStatus {
    let version = asset.version();
    if asset.status == AssetStatus::Corrupt || damaged.contains(&version) {
        AssetStatus::Corrupt
    } else if files.present(&version) {
        AssetStatus::Ok
    } else {
        AssetStatus::Missing
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
    !current_is_corrupt && !damaged.contains(&version) && files.present(&version)
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
