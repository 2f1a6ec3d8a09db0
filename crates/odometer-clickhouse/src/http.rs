//! ClickHouse over its HTTP interface (port 8123): queries answered in `TabSeparated`, inserts
//! with their rows in the request body. Plain HTTP keeps every byte sent under our control,
//! which the 18.16 server needs (no query parameters, no newer formats).

use std::time::Duration;

use odometer_store::StoreError;
use reqwest::Url;

use crate::escape::{tsv_rows, TsvError};

/// Where the events live: `clickhouse://[user[:password]@]host[:port][/database]` (the HTTP
/// port, 8123 by default; database `odometer` by default), or the same as `http://`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickHouseUrl {
    /// `http://host:port/`, without credentials.
    pub endpoint: Url,
    pub database: String,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl ClickHouseUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = Url::parse(text).map_err(|e| format!("'{text}' is not a URL: {e}"))?;
        if !matches!(url.scheme(), "clickhouse" | "http") {
            return Err(format!("'{text}' must start with clickhouse:// (or http://)"));
        }
        let host = url.host_str().ok_or_else(|| format!("'{text}' names no host"))?;
        let port = url.port().unwrap_or(8123);
        let endpoint =
            Url::parse(&format!("http://{host}:{port}/")).map_err(|e| format!("'{text}': {e}"))?;
        let database = match url.path().trim_matches('/') {
            "" => "odometer".to_owned(),
            name => name.to_owned(),
        };
        if !valid_identifier(&database) {
            return Err(format!(
                "database '{database}': use letters, digits and '_' (not starting with a digit)"
            ));
        }
        let user = Some(url.username()).filter(|u| !u.is_empty()).map(str::to_owned);
        let password = url.password().map(str::to_owned);
        Ok(Self { endpoint, database, user, password })
    }
}

/// Whether `name` can be pasted into SQL as a database or table name.
pub fn valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && name.len() <= 100
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A client of one ClickHouse server.
#[derive(Debug, Clone)]
pub struct ClickHouse {
    client: reqwest::Client,
    url: ClickHouseUrl,
}

fn backend(context: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("clickhouse: {context}: {err}"))
}

impl From<TsvError> for StoreError {
    fn from(err: TsvError) -> Self {
        backend("answer", err)
    }
}

/// Longest query text the server accepts from us (its default, 256 KiB, is too small for an
/// invoice run naming 10,000 customers).
const MAX_QUERY_SIZE: &str = "67108864";

impl ClickHouse {
    pub fn new(url: ClickHouseUrl) -> Result<Self, StoreError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(300))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| backend("client", e))?;
        Ok(Self { client, url })
    }

    pub fn database(&self) -> &str {
        &self.url.database
    }

    fn request(&self, database: bool) -> reqwest::RequestBuilder {
        let mut request = self.client.post(self.url.endpoint.clone());
        let mut params: Vec<(&str, &str)> = vec![("max_query_size", MAX_QUERY_SIZE)];
        if database {
            params.push(("database", &self.url.database));
        }
        request = request.query(&params);
        // Basic authentication: 18.16 reads it (the X-ClickHouse-* headers came later).
        if let Some(user) = &self.url.user {
            request = request.basic_auth(user, self.url.password.as_deref());
        }
        request
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<String, StoreError> {
        let response = request.send().await.map_err(|e| backend(what, e))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| backend(what, e))?;
        if !status.is_success() {
            return Err(backend(what, body.trim()));
        }
        Ok(body)
    }

    /// Runs a statement that answers nothing we read (DDL), outside any database (so it can
    /// create the database).
    pub async fn execute(&self, sql: &str) -> Result<(), StoreError> {
        self.send(self.request(false).body(sql.to_owned()), "statement").await.map(drop)
    }

    /// Runs a `SELECT` and answers its rows, `columns` fields each (`None` for NULL). The
    /// statement must not name a format: this adds `FORMAT TabSeparated`.
    pub async fn query(
        &self,
        sql: &str,
        columns: usize,
    ) -> Result<Vec<Vec<Option<String>>>, StoreError> {
        self.query_in(true, sql, columns).await
    }

    async fn query_in(
        &self,
        database: bool,
        sql: &str,
        columns: usize,
    ) -> Result<Vec<Vec<Option<String>>>, StoreError> {
        let body = format!("{sql}\nFORMAT TabSeparated");
        let text = self.send(self.request(database).body(body), "query").await?;
        Ok(tsv_rows(&text, columns)?)
    }

    /// The server's version, as `SELECT version()` prints it (`18.16.1`); asked outside the
    /// database, which may not exist yet.
    pub async fn version(&self) -> Result<String, StoreError> {
        let rows = self.query_in(false, "SELECT version()", 1).await?;
        rows.into_iter()
            .next()
            .and_then(|row| row.into_iter().next().flatten())
            .ok_or_else(|| backend("version", "no answer"))
    }

    /// Inserts rows given as `TabSeparated` text into `table` (its `columns`, in that order).
    /// One request; ClickHouse writes up to `max_insert_block_size` (1,048,576) rows as one
    /// part, so an insert of fewer rows into an unpartitioned table is all or nothing.
    pub async fn insert_tsv(
        &self,
        table: &str,
        columns: &str,
        rows: String,
    ) -> Result<(), StoreError> {
        let query = format!("INSERT INTO {table} ({columns}) FORMAT TabSeparated");
        let request = self.request(true).query(&[("query", query.as_str())]).body(rows);
        self.send(request, "insert").await.map(drop)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_endpoint_database_and_credentials() {
        let url = ClickHouseUrl::parse("clickhouse://127.0.0.1").unwrap();
        assert_eq!(url.endpoint.as_str(), "http://127.0.0.1:8123/");
        assert_eq!(url.database, "odometer");
        assert_eq!((url.user, url.password), (None, None));
        let url = ClickHouseUrl::parse("clickhouse://ops:s3cret@db.local:18123/metering").unwrap();
        assert_eq!(url.endpoint.as_str(), "http://db.local:18123/");
        assert_eq!(url.database, "metering");
        assert_eq!(url.user.as_deref(), Some("ops"));
        assert_eq!(url.password.as_deref(), Some("s3cret"));
        let url = ClickHouseUrl::parse("http://localhost:8123/x_1").unwrap();
        assert_eq!(url.database, "x_1");
        for bad in ["postgres://x/y", "clickhouse://h/bad-name", "clickhouse://h/1x", "nothing"] {
            assert!(ClickHouseUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
