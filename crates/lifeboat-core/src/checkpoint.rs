//! Checkpoints: immutable snapshots of a session's progress, with the SHA-256 of their data.

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::{Error, PinnedAsset, Timestamp};

/// What a checkpoint marks. `stage` and `milestone` are kept for the session's life;
/// the others count against `checkpoint_retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKind {
    /// One unit of work done.
    Item,
    /// The start (or end) of a batch of items.
    Batch,
    /// The start (or end) of a pipeline stage.
    Stage,
    /// A point worth keeping for the session's life.
    Milestone,
    /// Written by a worker that is failing.
    Emergency,
    /// Written on a person's request.
    Manual,
}

impl CheckpointKind {
    /// Every kind, in the order of SPEC §3.
    pub const ALL: [CheckpointKind; 6] = [
        CheckpointKind::Item,
        CheckpointKind::Batch,
        CheckpointKind::Stage,
        CheckpointKind::Milestone,
        CheckpointKind::Emergency,
        CheckpointKind::Manual,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointKind::Item => "item",
            CheckpointKind::Batch => "batch",
            CheckpointKind::Stage => "stage",
            CheckpointKind::Milestone => "milestone",
            CheckpointKind::Emergency => "emergency",
            CheckpointKind::Manual => "manual",
        }
    }

    /// Parses a wire name.
    pub fn parse(raw: &str) -> Result<CheckpointKind, Error> {
        CheckpointKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == raw)
            .ok_or_else(|| Error::Invalid {
                field: "kind",
                message: format!(
                    "unknown checkpoint kind {raw:?}; expected item, batch, stage, milestone, emergency or manual"
                ),
            })
    }

    /// Whether retention never prunes checkpoints of this kind.
    pub fn is_kept_for_life(self) -> bool {
        matches!(self, CheckpointKind::Stage | CheckpointKind::Milestone)
    }

    /// Whether `restart_batch` may resume from a checkpoint of this kind.
    pub fn starts_batch(self) -> bool {
        matches!(
            self,
            CheckpointKind::Batch | CheckpointKind::Stage | CheckpointKind::Milestone
        )
    }
}

/// A lowercase hex SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sha256(String);

impl Sha256 {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Sha256 {
        Sha256(hex::encode(sha2::Sha256::digest(bytes)))
    }

    /// Parses 64 hex digits in either case.
    pub fn parse(field: &'static str, raw: &str) -> Result<Sha256, Error> {
        if raw.len() != 64 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Invalid {
                field,
                message: "expected 64 hexadecimal digits".to_owned(),
            });
        }
        Ok(Sha256(raw.to_ascii_lowercase()))
    }

    /// Wraps a digest read back from storage, where it was written by [`Sha256::of`].
    pub fn from_stored(hex: String) -> Sha256 {
        Sha256(hex)
    }

    /// The digest as lowercase hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A checkpoint as a client asks for it, after parsing.
#[derive(Debug, Clone)]
pub struct NewCheckpoint {
    /// The kind.
    pub kind: CheckpointKind,
    /// Pipeline stage name, if any.
    pub stage: Option<String>,
    /// Any JSON value, as raw JSON text.
    pub position: Option<String>,
    /// Units done so far.
    pub completed_units: Option<u64>,
    /// Units in all.
    pub total_units: Option<u64>,
    /// The raw JSON text of `data`, exactly as sent (`null` when absent).
    pub data: String,
    /// The hash the client expects `data` to have.
    pub data_sha256: Option<Sha256>,
    /// Names of the session's assets this checkpoint depends on; the stored checkpoint
    /// pins their versions as they are when it is written.
    pub assets: Vec<String>,
}

impl NewCheckpoint {
    /// Most assets one checkpoint may name: a resume point, not a file listing.
    pub const ASSETS_MAX: usize = 1_000;

    /// An empty checkpoint of `kind`, with `data` = `null`.
    pub fn new(kind: CheckpointKind) -> NewCheckpoint {
        NewCheckpoint {
            kind,
            stage: None,
            position: None,
            completed_units: None,
            total_units: None,
            data: "null".to_owned(),
            data_sha256: None,
            assets: Vec::new(),
        }
    }
}

/// A stored checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// 1, 2, 3 … per session; never reused.
    pub seq: u64,
    /// The attempt that wrote it.
    pub attempt: u32,
    /// The kind.
    pub kind: CheckpointKind,
    /// Pipeline stage name, if any.
    pub stage: Option<String>,
    /// Raw JSON text of the position, if any.
    pub position: Option<String>,
    /// Units done when it was written.
    pub completed_units: Option<u64>,
    /// Units in all, when it was written.
    pub total_units: Option<u64>,
    /// The raw JSON text of `data`, byte for byte as sent.
    pub data: String,
    /// SHA-256 of `data` computed when it was written.
    pub sha256: Sha256,
    /// The asset versions it depends on, pinned when it was written.
    pub assets: Vec<PinnedAsset>,
    /// When it was written.
    pub created_at: Timestamp,
    /// Whether `data` still hashes to `sha256` (recomputed on every read).
    pub valid: bool,
}

impl Checkpoint {
    /// Builds the checkpoint `seq` from a request and the versions of the assets it
    /// names, refusing a `data_sha256` that does not match the bytes.
    pub fn build(
        seq: u64,
        attempt: u32,
        new: NewCheckpoint,
        pins: Vec<PinnedAsset>,
        now: Timestamp,
    ) -> Result<Checkpoint, Error> {
        let sha256 = Sha256::of(new.data.as_bytes());
        if let Some(sent) = &new.data_sha256
            && *sent != sha256
        {
            return Err(Error::HashMismatch {
                sent: sent.as_str().to_owned(),
                actual: sha256.as_str().to_owned(),
            });
        }
        Ok(Checkpoint {
            seq,
            attempt,
            kind: new.kind,
            stage: new.stage,
            position: new.position,
            completed_units: new.completed_units,
            total_units: new.total_units,
            data: new.data,
            sha256,
            assets: pins,
            created_at: now,
            valid: true,
        })
    }

    /// Recomputes `valid` from the stored bytes: the read half of the hash pair.
    pub fn verify(mut self) -> Checkpoint {
        self.valid = Sha256::of(self.data.as_bytes()) == self.sha256;
        self
    }

    /// The summary kept on the session.
    pub fn as_ref(&self) -> CheckpointRef {
        CheckpointRef {
            seq: self.seq,
            kind: self.kind,
            stage: self.stage.clone(),
            created_at: self.created_at,
        }
    }
}

/// The session's summary of its newest checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRef {
    /// Its seq.
    pub seq: u64,
    /// Its kind.
    pub kind: CheckpointKind,
    /// Its stage.
    pub stage: Option<String>,
    /// When it was written.
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash covers the bytes as sent, so spacing and key order change it.
    #[test]
    fn hash_is_of_bytes_as_sent() {
        let a = Sha256::of(br#"{"b":1,"a":2}"#);
        let b = Sha256::of(br#"{ "a" : 2, "b" : 1 }"#);
        assert_ne!(a, b);
        assert_eq!(
            Sha256::of(b"").as_str(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    /// A data_sha256 in upper case is accepted; a wrong one is refused.
    #[test]
    fn data_sha256_check() {
        let mut new = NewCheckpoint::new(CheckpointKind::Item);
        new.data = "[1, 2]".to_owned();
        let good = Sha256::of(b"[1, 2]").as_str().to_ascii_uppercase();
        new.data_sha256 = Some(Sha256::parse("data_sha256", &good).expect("valid hex"));
        assert!(Checkpoint::build(1, 1, new.clone(), Vec::new(), Timestamp(0)).is_ok());
        new.data_sha256 = Some(Sha256::of(b"other"));
        assert!(matches!(
            Checkpoint::build(1, 1, new, Vec::new(), Timestamp(0)),
            Err(Error::HashMismatch { .. })
        ));
    }
}
