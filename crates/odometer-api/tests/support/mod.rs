//! What the API's test files share: fresh stores (SQLite catalog, DuckDB events) in a
//! temporary directory, and a real server on a free port of 127.0.0.1.
#![allow(dead_code, clippy::unwrap_used)]

pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use odometer_api::AppState;
use odometer_embedded::{DuckEventStore, SqliteCatalog};
use odometer_store::tenants::{create_organization, Bootstrap};
use odometer_store::{Catalog, EventStore};

/// Stores in a temporary directory (deleted when dropped).
pub struct Stores {
    pub dir: tempfile::TempDir,
    pub catalog: Arc<SqliteCatalog>,
    pub events: Arc<DuckEventStore>,
}

impl Stores {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let catalog =
            Arc::new(SqliteCatalog::open(&dir.path().join("catalog.sqlite3")).await.unwrap());
        let events =
            Arc::new(DuckEventStore::open(&dir.path().join("events.duckdb")).await.unwrap());
        Stores { dir, catalog, events }
    }

    /// A new organization and its first key.
    pub async fn organization(&self, name: &str) -> Bootstrap {
        create_organization(self.catalog.as_ref(), name).await.unwrap()
    }

    pub fn state(&self) -> AppState {
        AppState {
            catalog: self.catalog.clone() as Arc<dyn Catalog>,
            events: self.events.clone() as Arc<dyn EventStore>,
        }
    }
}

/// Serves `app` on a free port of 127.0.0.1 until the test ends.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The whole app served on a free port over fresh stores with two organizations, "acme" (the
/// one tests act as) and "globex" (the one that must see none of it): where most API test
/// files start. Each file adds its own request helpers in an `impl` block.
pub struct TwoOrgs {
    pub base: String,
    pub http: reqwest::Client,
    pub key: String,
    pub other_key: String,
    pub stores: Stores,
}

impl TwoOrgs {
    pub async fn spawn() -> Self {
        let stores = Stores::new().await;
        let (a, b) = (stores.organization("acme").await, stores.organization("globex").await);
        let addr = serve(odometer_api::app(stores.state())).await;
        Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            key: a.secret,
            other_key: b.secret,
            stores,
        }
    }
}
