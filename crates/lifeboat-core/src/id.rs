//! Identifiers chosen by clients, parsed once at the boundary.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The longest id: 128 bytes, matching `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`.
const ID_LEN_MAX: usize = 128;

/// A project or session id: `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$` (SPEC §4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Id(String);

impl TryFrom<String> for Id {
    type Error = Error;
    fn try_from(raw: String) -> Result<Id, Error> {
        Id::parse(&raw)
    }
}

impl From<Id> for String {
    fn from(id: Id) -> String {
        id.0
    }
}

impl Id {
    /// Parses an id, refusing anything outside the pattern.
    pub fn parse(raw: &str) -> Result<Id, Error> {
        if !matches_pattern(raw, ID_LEN_MAX) {
            return Err(Error::InvalidId(raw.chars().take(ID_LEN_MAX + 8).collect()));
        }
        Ok(Id(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `^[A-Za-z0-9][A-Za-z0-9._-]{0,max-1}$`.
fn matches_pattern(raw: &str, max: usize) -> bool {
    let bytes = raw.as_bytes();
    let valid_first = bytes.first().is_some_and(u8::is_ascii_alphanumeric);
    let valid_rest = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    valid_first && valid_rest && bytes.len() <= max
}

/// The longest schema name or version: 64 bytes.
const NAME_LEN_MAX: usize = 64;

/// A schema name or version: `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$` (SPEC §9).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl TryFrom<String> for Name {
    type Error = Error;
    fn try_from(raw: String) -> Result<Name, Error> {
        Name::parse(&raw)
    }
}

impl From<Name> for String {
    fn from(name: Name) -> String {
        name.0
    }
}

impl Name {
    /// Parses a name, refusing anything outside the pattern.
    pub fn parse(raw: &str) -> Result<Name, Error> {
        if !matches_pattern(raw, NAME_LEN_MAX) {
            return Err(Error::InvalidName(
                raw.chars().take(NAME_LEN_MAX + 8).collect(),
            ));
        }
        Ok(Name(raw.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The isolation boundary every record belongs to. The bootstrap admin key acts for `default`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    /// Wraps a tenant name (validated where keys are created).
    pub fn new(name: impl Into<String>) -> TenantId {
        TenantId(name.into())
    }

    /// The tenant as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TenantId {
    fn default() -> Self {
        TenantId("default".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every accepted and refused shape of the id pattern, in one table.
    #[test]
    fn id_pattern() {
        let long_ok = "a".repeat(128);
        let too_long = "a".repeat(129);
        let cases: &[(&str, bool)] = &[
            ("a", true),
            ("A9._-x", true),
            ("0193e2f4-7c1a-7b3e-9f00-aaaaaaaaaaaa", true),
            (&long_ok, true),
            ("", false),
            (".a", false),
            ("-a", false),
            ("a/b", false),
            ("a b", false),
            ("é", false),
            (&too_long, false),
        ];
        for (raw, ok) in cases {
            assert_eq!(Id::parse(raw).is_ok(), *ok, "{raw:?}");
        }
    }
}
