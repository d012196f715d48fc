//! Assets (SPEC §5): files that belong to a session or a project. Names are parsed once,
//! here, so that no path built from a name can leave its owner's directory.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Error, Id, Sha256, Timestamp};

/// The longest asset name, in bytes.
const NAME_LEN_MAX: usize = 512;

/// A relative path of 1–512 bytes: `/`-separated segments of `[A-Za-z0-9._-]+`, none of
/// them `.` or `..`, no leading or trailing `/`, no empty segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AssetName(String);

impl TryFrom<String> for AssetName {
    type Error = Error;
    fn try_from(raw: String) -> Result<AssetName, Error> {
        AssetName::parse(&raw)
    }
}

impl From<AssetName> for String {
    fn from(name: AssetName) -> String {
        name.0
    }
}

impl AssetName {
    /// Parses a name, refusing anything outside the rules (traversal included).
    pub fn parse(raw: &str) -> Result<AssetName, Error> {
        let refuse = |why: &str| {
            Err(Error::InvalidAssetName {
                name: raw.chars().take(64).collect(),
                why: why.to_owned(),
            })
        };
        if raw.is_empty() || raw.len() > NAME_LEN_MAX {
            return refuse("names are 1 to 512 bytes");
        }
        for segment in raw.split('/') {
            if segment.is_empty() {
                return refuse("no leading, trailing or double '/'");
            }
            if segment == "." || segment == ".." {
                return refuse("no '.' or '..' segments");
            }
            if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            {
                return refuse("segments use only A-Z a-z 0-9 . _ -");
            }
        }
        Ok(AssetName(raw.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AssetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an asset belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A session's asset.
    Session(Id),
    /// A project's asset.
    Project(Id),
}

impl Owner {
    /// `session` or `project`.
    pub fn kind(&self) -> &'static str {
        match self {
            Owner::Session(_) => "session",
            Owner::Project(_) => "project",
        }
    }

    /// The owner's id.
    pub fn id(&self) -> &Id {
        match self {
            Owner::Session(id) | Owner::Project(id) => id,
        }
    }
}

/// Where an asset's bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// Uploaded whole: a content-addressed blob, shared by every asset with these bytes.
    Blob,
    /// Built by appends: a file of its own under the blob store, named by this key.
    Appendable(String),
    /// A file on the server host, inside an asset root.
    External(String),
}

impl Storage {
    /// `blob`, `appendable` or `external`: the stored name of the variant.
    pub fn kind(&self) -> &'static str {
        match self {
            Storage::Blob => "blob",
            Storage::Appendable(_) => "appendable",
            Storage::External(_) => "external",
        }
    }
}

/// One version of an asset's bytes: where they are and how long they are. A blob is named
/// by its SHA-256; an appendable file's versions are its prefixes; an external file is a
/// path. Checkpoints pin versions; verification records the ones it found damaged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileVersion {
    /// `blob`, `appendable` or `external`.
    pub storage: &'static str,
    /// The blob's SHA-256, the appendable file's key, or the external path.
    pub key: String,
    /// Bytes: the whole blob or file, or the pinned prefix of an appendable file.
    pub size: u64,
}

/// What a look at a version's file, without reading its bytes, found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileLook {
    /// A regular file with the version's bytes, by their count.
    Present,
    /// No regular file there (or, for an external file, none inside the asset roots).
    Absent,
    /// A regular file of another size: its bytes changed, so the version is corrupt.
    Differs,
}

/// An asset as a checkpoint pinned it (SPEC §5 r2): its name, and the size and SHA-256 of
/// its bytes when the checkpoint was written, with where those bytes are. Later writes to
/// the name do not change what the checkpoint refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedAsset {
    /// The asset's name in its session.
    pub name: AssetName,
    /// Bytes pinned (for an appendable asset, the first `size` bytes of its file).
    pub size: u64,
    /// SHA-256 of those bytes.
    pub sha256: Sha256,
    /// Where those bytes are.
    pub storage: Storage,
}

impl PinnedAsset {
    /// Pins `asset` as it is now.
    pub fn of(asset: &Asset) -> PinnedAsset {
        PinnedAsset {
            name: asset.name.clone(),
            size: asset.size,
            sha256: asset.sha256.clone(),
            storage: asset.storage.clone(),
        }
    }

    /// The version of the bytes this pin names.
    pub fn version(&self) -> FileVersion {
        FileVersion::of(&self.storage, &self.sha256, self.size)
    }
}

impl FileVersion {
    /// The version of bytes kept in `storage` with this hash and size.
    pub fn of(storage: &Storage, sha256: &Sha256, size: u64) -> FileVersion {
        let key = match storage {
            Storage::Blob => sha256.as_str().to_owned(),
            Storage::Appendable(key) | Storage::External(key) => key.clone(),
        };
        FileVersion {
            storage: storage.kind(),
            key,
            size,
        }
    }
}

impl Asset {
    /// The version of the bytes this record names.
    pub fn version(&self) -> FileVersion {
        FileVersion::of(&self.storage, &self.sha256, self.size)
    }
}

/// The last verification's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AssetStatus {
    /// Present with the recorded size and hash.
    Ok,
    /// Gone.
    Missing,
    /// Size or hash differs.
    Corrupt,
}

impl AssetStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AssetStatus::Ok => "ok",
            AssetStatus::Missing => "missing",
            AssetStatus::Corrupt => "corrupt",
        }
    }

    /// Parses a stored name.
    pub fn parse(raw: &str) -> Option<AssetStatus> {
        [AssetStatus::Ok, AssetStatus::Missing, AssetStatus::Corrupt]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// An asset's record.
#[derive(Debug, Clone, PartialEq)]
pub struct Asset {
    /// Its name within the owner.
    pub name: AssetName,
    /// Where its bytes are.
    pub storage: Storage,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the bytes.
    pub sha256: Sha256,
    /// A label from registration (`kind`), if any.
    pub kind: Option<String>,
    /// The last verification's verdict.
    pub status: AssetStatus,
    /// When it was last verified (hash checked).
    pub verified_at: Timestamp,
    /// When it was first stored.
    pub created_at: Timestamp,
    /// When its bytes last changed.
    pub updated_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At least 15 hostile names, each refused; and the shapes that are fine.
    #[test]
    fn names() {
        let long = "a".repeat(513);
        let hostile = [
            "",
            ".",
            "..",
            "../etc/passwd",
            "a/../../b",
            "a/./b",
            "/etc/passwd",
            "a/",
            "a//b",
            "a\\b",
            "..\\..\\windows",
            "a\0b",
            "%2e%2e/x",
            "a b",
            "ä",
            "a/..",
            "./a",
            "~/x",
            "a:b",
            long.as_str(),
        ];
        for name in hostile {
            assert!(AssetName::parse(name).is_err(), "{name:?} must be refused");
        }
        for name in [
            "a",
            "audio/chunk-0001.wav",
            "scene.3/render_1.png",
            "..a",
            "a..",
            ".hidden",
        ] {
            assert!(AssetName::parse(name).is_ok(), "{name:?} is a valid name");
        }
    }
}
