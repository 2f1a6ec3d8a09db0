//! How domain values are written to SQLite columns and read back, and how SQLite failures
//! become [`StoreError`]s.

use chrono::{DateTime, Utc};
use rusqlite::{ffi, Connection};
use serde::de::DeserializeOwned;
use serde::Serialize;

use odometer_core::{time, OrganizationId};
use odometer_store::{Entity, StoreError};

/// What a blocking catalog call fails with. It exists so `?` works on both rusqlite and store
/// errors inside one function; SQLite errors that are not mapped to a specific store error on
/// the spot become [`StoreError::Backend`].
#[derive(Debug)]
pub(crate) struct Failure(pub(crate) StoreError);

pub(crate) type Result<T> = std::result::Result<T, Failure>;

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Self(error)
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(error: rusqlite::Error) -> Self {
        Self(StoreError::Backend(format!("sqlite: {error}")))
    }
}

impl From<serde_json::Error> for Failure {
    fn from(error: serde_json::Error) -> Self {
        Self(StoreError::Backend(format!("catalog json: {error}")))
    }
}

/// A stored value that cannot be read back (a corrupt row or a bug), as a backend error.
pub(crate) fn corrupt(what: &str, value: &str) -> Failure {
    let shown: String = value.chars().take(64).collect();
    Failure(StoreError::Backend(format!("stored {what} '{shown}' is not valid")))
}

/// Whether `error` is a violation of the unique index over `column` (`metrics.code`).
pub(crate) fn is_unique_violation(error: &rusqlite::Error, column: &str) -> bool {
    match error {
        rusqlite::Error::SqliteFailure(failure, Some(message)) => {
            failure.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE && message.contains(column)
        }
        _ => false,
    }
}

pub(crate) fn instant(t: &DateTime<Utc>) -> String {
    time::format_micros(t)
}

pub(crate) fn optional_instant(t: Option<&DateTime<Utc>>) -> Option<String> {
    t.map(instant)
}

pub(crate) fn parse_instant(text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| corrupt("instant", text))
}

pub(crate) fn parse_optional_instant(text: Option<&str>) -> Result<Option<DateTime<Utc>>> {
    text.map(parse_instant).transpose()
}

/// Parses a stored id with the kind's `parse` (`MetricId::parse`).
pub(crate) fn parse_id<T>(text: &str, parse: fn(&str) -> Option<T>, kind: &str) -> Result<T> {
    parse(text).ok_or_else(|| corrupt(kind, text))
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> Result<String> {
    Ok(serde_json::to_string(value)?)
}

pub(crate) fn from_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| Failure(StoreError::Backend(format!("stored {what} is not valid json: {e}"))))
}

/// The lowercased form kept in `search_*` columns and compared with a lowercased search.
pub(crate) fn fold(text: &str) -> String {
    text.to_lowercase()
}

/// The `LIKE ... ESCAPE '\'` pattern matching `search` anywhere, case-insensitively (against
/// folded columns). `%`, `_` and `\` in the search are matched literally.
pub(crate) fn like_pattern(search: &str) -> String {
    let mut pattern = String::with_capacity(search.len() + 2);
    pattern.push('%');
    for c in fold(search).chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The largest page a list answers, whatever the caller asked (the trait allows 1 to 1000).
const MAX_PAGE: u32 = 1000;

/// The page size to answer: the requested limit kept within 1 to 1000.
pub(crate) fn page_size(limit: u32) -> usize {
    // Both bounds fit any usize.
    limit.clamp(1, MAX_PAGE) as usize
}

/// A page from `limit + 1` rows read in id order: the extra row, when there is one, only says
/// that a next page exists, whose cursor is the last kept item's id.
pub(crate) fn page_of<T>(
    mut items: Vec<T>,
    limit: usize,
    id_of: impl Fn(&T) -> String,
) -> odometer_store::Page<T> {
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(id_of)
    } else {
        None
    };
    odometer_store::Page { items, next_cursor }
}

/// Fails with `organization_not_found` unless the organization exists, so that a write for an
/// unknown one is a clear error rather than a foreign key violation.
pub(crate) fn ensure_organization(conn: &Connection, org: OrganizationId) -> Result<()> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM organizations WHERE id = ?1")?;
    if stmt.exists([org.to_string()])? {
        Ok(())
    } else {
        Err(StoreError::not_found(Entity::Organization, org).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards_and_fold_case() {
        for (search, pattern) in [
            ("Calls", "%calls%"),
            ("100%", "%100\\%%"),
            ("a_b", "%a\\_b%"),
            ("back\\slash", "%back\\\\slash%"),
            ("ÉTÉ", "%été%"),
            ("", "%%"),
        ] {
            assert_eq!(like_pattern(search), pattern, "{search}");
        }
    }

    #[test]
    fn page_sizes_stay_within_bounds() {
        assert_eq!([page_size(0), page_size(1), page_size(50), page_size(5000)], [1, 1, 50, 1000]);
    }
}
