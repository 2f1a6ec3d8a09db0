//! How domain values are written to PostgreSQL columns and read back, how PostgreSQL failures
//! become [`StoreError`]s, and the list helpers every area shares (the same rules as the SQLite
//! catalog's, so both answer lists alike).

use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::{PgConnection, Postgres, QueryBuilder};

use odometer_core::OrganizationId;
use odometer_store::{Entity, StoreError};

/// What a catalog call fails with inside this crate. It exists so `?` works on sqlx, JSON and
/// store errors alike; database errors not mapped to a specific store error on the spot become
/// [`StoreError::Backend`].
#[derive(Debug)]
pub(crate) struct Failure(pub(crate) StoreError);

pub(crate) type Result<T> = std::result::Result<T, Failure>;

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Self(error)
    }
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Self(StoreError::Backend(format!("postgres: {error}")))
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

/// Whether `error` is a violation of the unique index or constraint named `constraint`
/// (`metrics_live_code`).
pub(crate) fn is_unique_violation(error: &sqlx::Error, constraint: &str) -> bool {
    error
        .as_database_error()
        .is_some_and(|db| db.is_unique_violation() && db.constraint() == Some(constraint))
}

/// Parses a stored id with the kind's `parse` (`MetricId::parse`).
pub(crate) fn parse_id<T>(text: &str, parse: fn(&str) -> Option<T>, kind: &str) -> Result<T> {
    parse(text).ok_or_else(|| corrupt(kind, text))
}

/// A revision number as stored (`BIGINT`).
pub(crate) fn revision_column(revision: u32) -> i64 {
    i64::from(revision)
}

/// A stored revision number, which must fit a `u32` as every revision written did.
pub(crate) fn parse_revision(stored: i64) -> Result<u32> {
    u32::try_from(stored).map_err(|_| corrupt("revision", &stored.to_string()))
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> Result<String> {
    Ok(serde_json::to_string(value)?)
}

pub(crate) fn from_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| Failure(StoreError::Backend(format!("stored {what} is not valid json: {e}"))))
}

/// The lowercased form kept in `search_*` columns and compared with a lowercased search.
/// Folded in Rust rather than with PostgreSQL's `lower()`, whose result depends on the
/// database's locale: both catalogs then match exactly the same things.
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
pub(crate) fn page_size(limit: u32) -> i64 {
    i64::from(limit.clamp(1, MAX_PAGE))
}

/// A page from `limit + 1` rows read in id order: the extra row, when there is one, only says
/// that a next page exists, whose cursor is the last kept item's id.
pub(crate) fn page_of<T>(
    mut items: Vec<T>,
    limit: i64,
    id_of: impl Fn(&T) -> String,
) -> odometer_store::Page<T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(id_of)
    } else {
        None
    };
    odometer_store::Page { items, next_cursor }
}

/// Adds the cursor's condition to a list query: ids after the cursor's (`column` is the id
/// column as the query names it); a cursor that is not an id of the kind is
/// `invalid_cursor`.
pub(crate) fn push_after<T: ToString>(
    sql: &mut QueryBuilder<Postgres>,
    column: &str,
    cursor: Option<&str>,
    parse: fn(&str) -> Option<T>,
) -> Result<()> {
    if let Some(cursor) = cursor {
        let after = parse(cursor).ok_or(StoreError::InvalidCursor)?;
        sql.push(format!(" AND {column} > ")).push_bind(after.to_string());
    }
    Ok(())
}

/// Adds a search's condition to a list query: any of the folded `columns` contains it
/// (nothing for an absent or empty search).
pub(crate) fn push_search(
    sql: &mut QueryBuilder<Postgres>,
    search: Option<&str>,
    columns: &[&str],
) {
    let Some(search) = search.filter(|s| !s.is_empty()) else { return };
    let pattern = like_pattern(search);
    for (i, column) in columns.iter().enumerate() {
        sql.push(if i == 0 { " AND (" } else { " OR " });
        sql.push(format!("{column} LIKE ")).push_bind(pattern.clone()).push(" ESCAPE '\\'");
    }
    sql.push(")");
}

/// Ends a list query with its order and `limit` + 1 rows: one more than the page tells
/// whether there is a next page without a second query (see [`page_of`]).
pub(crate) fn push_page_end(sql: &mut QueryBuilder<Postgres>, id_column: &str, limit: i64) {
    sql.push(format!(" ORDER BY {id_column} LIMIT ")).push_bind(limit + 1);
}

/// Fails with `organization_not_found` unless the organization exists, so that a write for an
/// unknown one is a clear error rather than a foreign key violation. Organizations are never
/// deleted, so the answer cannot turn stale before the caller's write commits.
pub(crate) async fn ensure_organization(
    conn: &mut PgConnection,
    org: OrganizationId,
) -> Result<()> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM organizations WHERE id = $1")
        .bind(org.to_string())
        .fetch_optional(conn)
        .await?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::not_found(Entity::Organization, org).into()),
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

    #[test]
    fn pages_keep_the_limit_and_name_the_next_cursor() {
        let page = page_of(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!((page.items, page.next_cursor), (vec![1, 2], Some("2".to_owned())));
        let page = page_of(vec![1, 2], 2, |n| n.to_string());
        assert_eq!((page.items, page.next_cursor), (vec![1, 2], None));
    }

    #[test]
    fn revisions_round_trip_and_corrupt_ones_are_refused() {
        assert_eq!(parse_revision(revision_column(u32::MAX)).ok(), Some(u32::MAX));
        assert!(parse_revision(-1).is_err());
        assert!(parse_revision(i64::from(u32::MAX) + 1).is_err());
    }
}
