//! Pages of lists: opaque cursors, a `limit`, and a byte budget per page.
//!
//! A cursor is the position of the last item of the previous page, base64url-encoded so
//! that clients treat it as opaque. A page ends after `limit` items, or once its items
//! carry [`PAGE_BYTES_MAX`] bytes (at least one item either way), with `next_cursor`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lifeboat_store::{Error, PAGE_BYTES_MAX, Page, Result};

/// The cursor of a numeric position.
pub(crate) fn encode(position: i64) -> String {
    URL_SAFE_NO_PAD.encode(position.to_string())
}

/// The numeric position of a cursor, if one was sent.
pub(crate) fn decode(cursor: Option<&str>) -> Result<Option<i64>> {
    cursor
        .map(|c| decode_text(c)?.parse::<i64>().map_err(|_| Error::BadCursor))
        .transpose()
}

/// The cursor of a textual position (a name, a key id).
pub(crate) fn encode_text(position: &str) -> String {
    URL_SAFE_NO_PAD.encode(position)
}

/// The textual position of a cursor ("" when none was sent).
pub(crate) fn decode_text_or_start(cursor: Option<&str>) -> Result<String> {
    cursor.map_or_else(|| Ok(String::new()), decode_text)
}

fn decode_text(cursor: &str) -> Result<String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| Error::BadCursor)?;
    String::from_utf8(bytes).map_err(|_| Error::BadCursor)
}

/// Builds a page from items fetched in order, each with its cursor (fetch `limit.saturating_add(1)`
/// to learn whether there is more): at most `limit` items, and no more once they carry
/// [`PAGE_BYTES_MAX`] bytes by `size`.
pub(crate) fn within<T>(
    rows: impl IntoIterator<Item = (String, T)>,
    size: impl Fn(&T) -> usize,
    limit: u32,
) -> Page<T> {
    let mut items = Vec::new();
    let mut last = None;
    let mut bytes = 0;
    for (cursor, item) in rows {
        if items.len() == limit as usize || bytes >= PAGE_BYTES_MAX {
            return Page {
                items,
                next_cursor: last,
            };
        }
        bytes += size(&item);
        items.push(item);
        last = Some(cursor);
    }
    Page {
        items,
        next_cursor: None,
    }
}

/// Cuts a `limit.saturating_add(1)` fetch of numbered rows down to a page.
pub(crate) fn numbered<T>(rows: Vec<(i64, T)>, limit: u32) -> Page<T> {
    within(
        rows.into_iter()
            .map(|(position, item)| (encode(position), item)),
        |_| 0,
        limit,
    )
}
