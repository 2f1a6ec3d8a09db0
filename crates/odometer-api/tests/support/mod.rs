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
