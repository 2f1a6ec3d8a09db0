//! A database of its own for each test, on the PostgreSQL server `ODOMETER_TEST_POSTGRES_URL`
//! names (`scripts/servers start` runs one and prints the variable): created empty, dropped
//! when the guard goes, so tests run in parallel without seeing each other.

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

/// The variable naming the server (any database on it: tests create their own beside it).
pub const URL_VAR: &str = "ODOMETER_TEST_POSTGRES_URL";

/// The server URL from the variable's value, or the message a test fails with without one:
/// the PostgreSQL tests never skip or pass silently when there is no server.
pub fn server_url_from(value: Option<String>) -> Result<String, String> {
    match value {
        Some(url) if !url.trim().is_empty() => Ok(url),
        _ => Err(format!(
            "{URL_VAR} is not set, so the PostgreSQL catalog cannot be tested: start the test \
             servers with `eval \"$(scripts/servers start)\"` (scripts/test does it) and run \
             the tests again"
        )),
    }
}

pub fn server_url() -> String {
    server_url_from(std::env::var(URL_VAR).ok()).unwrap_or_else(|message| panic!("{message}"))
}

/// `url` with its database replaced by `name` (its query parameters kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority..].find('/') {
        Some(slash) => &base[..authority + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// An empty database that is dropped (with any connection still open to it) on drop.
#[derive(Debug)]
pub struct TestDatabase {
    server: String,
    name: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let server = server_url();
        let name = format!("odometer_test_{:016x}", rand::random::<u64>());
        let mut admin = PgConnection::connect(&server).await.unwrap_or_else(|e| {
            panic!("cannot connect to {URL_VAR} (is scripts/servers running?): {e}")
        });
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap_or_else(|e| panic!("cannot create the test database {name}: {e}"));
        admin.close().await.ok();
        Self { server, name }
    }

    /// The URL of this database.
    pub fn url(&self) -> String {
        with_database(&self.server, &self.name)
    }

    /// A connection of the test's own, beside the catalog's pool (to look at or hold rows).
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url()).await.expect("connect to the test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on: the database is
        // dropped from a thread with a runtime of its own. A failure is reported, not raised
        // (this may run while a failed test unwinds); the database is then left behind.
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&server).await.map_err(|e| e.to_string())?;
                admin
                    .execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                    .await
                    .map_err(|e| e.to_string())?;
                admin.close().await.map_err(|e| e.to_string())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("test database {} not dropped: {e}", self.name),
            Err(_) => eprintln!("test database {} not dropped: the thread panicked", self.name),
        }
    }
}

#[test]
fn without_a_server_the_tests_fail_naming_scripts_servers() {
    let message = server_url_from(None).unwrap_err();
    assert!(message.contains(URL_VAR) && message.contains("scripts/servers"), "{message}");
    assert!(server_url_from(Some("  ".to_owned())).is_err(), "an empty value is no server");
    assert_eq!(server_url_from(Some("postgres://h/db".to_owned())).unwrap(), "postgres://h/db");
}

#[test]
fn urls_get_the_test_database() {
    for (url, expected) in [
        ("postgres://u:p@127.0.0.1:55432/postgres", "postgres://u:p@127.0.0.1:55432/t"),
        ("postgres://u:p@127.0.0.1:55432", "postgres://u:p@127.0.0.1:55432/t"),
        ("postgres://h/db?sslmode=disable", "postgres://h/t?sslmode=disable"),
    ] {
        assert_eq!(with_database(url, "t"), expected, "{url}");
    }
}
