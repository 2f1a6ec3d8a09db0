//! Fresh servers' databases for each test: a ClickHouse database and a PostgreSQL database
//! of their own, dropped when the guard is dropped. The servers are the ones `scripts/servers
//! start` runs; without their URLs a test fails and says so (it never passes by skipping).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use odometer_clickhouse::{ClickHouseEventStore, ClickHouseOptions};

/// The URLs of the servers, from `ODOMETER_TEST_CLICKHOUSE_URL` and
/// `ODOMETER_TEST_POSTGRES_URL`; panics with what to do when either is missing.
pub fn server_urls() -> (String, String) {
    let read = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: these tests need real ClickHouse and PostgreSQL servers. \
                 Start them with `scripts/servers start` and export what it prints \
                 (eval \"$(scripts/servers env)\")"
            )
        })
    };
    (read("ODOMETER_TEST_CLICKHOUSE_URL"), read("ODOMETER_TEST_POSTGRES_URL"))
}

/// A database name no other test uses.
fn fresh_name() -> String {
    format!("odometer_test_{:016x}", rand::random::<u64>())
}

/// The same server URL naming database `name` instead.
pub fn with_database(url: &str, name: &str) -> String {
    let mut parsed = reqwest::Url::parse(url).expect("a server URL");
    parsed.set_path(&format!("/{name}"));
    parsed.to_string()
}

/// A ClickHouse and a PostgreSQL database made for one test; dropped with this value.
#[derive(Debug)]
pub struct Databases {
    pub name: String,
    pub clickhouse: String,
    pub postgres: String,
    admin_clickhouse: String,
    admin_postgres: String,
}

impl Databases {
    pub async fn create() -> Self {
        let (clickhouse, postgres) = server_urls();
        let name = fresh_name();
        let mut admin = sqlx_connect(&postgres).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test's PostgreSQL database");
        drop(admin);
        Self {
            clickhouse: with_database(&clickhouse, &name),
            postgres: with_database(&postgres, &name),
            admin_clickhouse: clickhouse,
            admin_postgres: postgres,
            name,
        }
    }

    pub fn options(&self) -> ClickHouseOptions {
        ClickHouseOptions::new(&self.clickhouse, &self.postgres)
    }
}

async fn sqlx_connect(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url).await.expect("connect to PostgreSQL")
}

impl Drop for Databases {
    /// Drops both databases from a thread of its own (a drop cannot await, and may run inside
    /// a runtime).
    fn drop(&mut self) {
        let name = self.name.clone();
        let (clickhouse, postgres) = (self.admin_clickhouse.clone(), self.admin_postgres.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let ch = odometer_clickhouse::ClickHouse::new(
                    odometer_clickhouse::ClickHouseUrl::parse(&clickhouse)?,
                )
                .map_err(|e| e.to_string())?;
                ch.execute(&format!("DROP DATABASE IF EXISTS {name}"))
                    .await
                    .map_err(|e| e.to_string())?;
                let mut admin = sqlx_connect(&postgres).await;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await
                .map_err(|e| e.to_string())?;
                Ok::<(), String>(())
            })?;
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("could not drop the test databases {}: {err}", self.name),
            Err(_) => eprintln!("dropping the test databases {} panicked", self.name),
        }
    }
}

/// A fresh store on fresh databases.
pub async fn fresh_store() -> (ClickHouseEventStore, Databases) {
    let databases = Databases::create().await;
    let store = ClickHouseEventStore::open(databases.options()).await.expect("open the store");
    (store, databases)
}
