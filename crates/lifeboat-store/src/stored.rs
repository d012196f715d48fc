//! What both backends store and select the same way: a session's metrics and a
//! checkpoint's pinned assets as JSON text, and which checkpoint kinds retention prunes.

use lifeboat_core::{AssetName, CheckpointKind, PinnedAsset, Session, Sha256, Storage};
use serde_json::{Value, json};

/// A session's metrics as stored (JSON text), if it has any.
pub(crate) fn metrics_json(s: &Session) -> Option<String> {
    s.metrics.as_ref().map(|m| {
        json!({
            "memory_bytes": m.memory_bytes,
            "memory_limit_bytes": m.memory_limit_bytes,
            "cpu_percent": m.cpu_percent,
            "gpu_memory_bytes": m.gpu_memory_bytes,
        })
        .to_string()
    })
}

/// A checkpoint's pins as stored: `[{"name", "size", "sha256", "storage", "location"}]`.
pub(crate) fn pins_to_json(pins: &[PinnedAsset]) -> String {
    let list: Vec<Value> = pins
        .iter()
        .map(|pin| {
            let location = match &pin.storage {
                Storage::Blob => None,
                Storage::Appendable(key) | Storage::External(key) => Some(key.as_str()),
            };
            json!({
                "name": pin.name.as_str(),
                "size": pin.size,
                "sha256": pin.sha256.as_str(),
                "storage": pin.storage.kind(),
                "location": location,
            })
        })
        .collect();
    Value::Array(list).to_string()
}

/// Reads pins written by [`pins_to_json`]; `None` if they are not that shape.
pub(crate) fn pins_from_json(text: &str) -> Option<Vec<PinnedAsset>> {
    let list: Vec<Value> = serde_json::from_str(text).ok()?;
    list.iter()
        .map(|pin| {
            let location = pin["location"].as_str().map(str::to_owned);
            let storage = match (pin["storage"].as_str()?, location) {
                ("blob", _) => Storage::Blob,
                ("appendable", Some(key)) => Storage::Appendable(key),
                ("external", Some(path)) => Storage::External(path),
                _ => return None,
            };
            Some(PinnedAsset {
                name: AssetName::parse(pin["name"].as_str()?).ok()?,
                size: pin["size"].as_u64()?,
                sha256: Sha256::from_stored(pin["sha256"].as_str()?.to_owned()),
                storage,
            })
        })
        .collect()
}

/// "This checkpoint's kind is pruned by retention", as SQL. Written as `<>` tests, not
/// `IN (…)`: SQLite builds a temporary table for an `IN` list on every run, and that
/// allocation churn was the largest cost of a checkpoint write (see BENCHMARKS.md).
pub(crate) fn prunable_sql() -> String {
    CheckpointKind::ALL
        .into_iter()
        .filter(|k| k.is_kept_for_life())
        .map(|k| format!("kind <> '{}'", k.as_str()))
        .collect::<Vec<_>>()
        .join(" AND ")
}
