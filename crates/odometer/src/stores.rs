//! Opening the stores a configuration names: the embedded ones in the data directory by
//! default, or server mode's PostgreSQL catalog and ClickHouse event store. The one place in
//! the program that names a backend.

use std::sync::Arc;

use anyhow::Context;
use odometer_clickhouse::{ClickHouseEventStore, ClickHouseOptions};
use odometer_embedded::{DuckEventStore, SqliteCatalog};
use odometer_postgres::PgCatalog;
use odometer_store::{Catalog, EventStore};

use crate::config::{redacted, CatalogBackend, Config, EventsBackend};

pub async fn open_catalog(config: &Config) -> anyhow::Result<Arc<dyn Catalog>> {
    open_catalog_at(&config.catalog_backend()?).await
}

pub async fn open_catalog_at(backend: &CatalogBackend) -> anyhow::Result<Arc<dyn Catalog>> {
    Ok(match backend {
        CatalogBackend::Embedded(path) => Arc::new(
            SqliteCatalog::open(path)
                .await
                .with_context(|| format!("cannot open the catalog at {}", path.display()))?,
        ),
        CatalogBackend::Postgres(url) => Arc::new(
            PgCatalog::connect(url)
                .await
                .with_context(|| format!("cannot open the catalog at {}", redacted(url)))?,
        ),
    })
}

/// An opened event store, with what only the embedded one can do.
#[derive(Clone)]
pub enum EventStores {
    Embedded(Arc<DuckEventStore>),
    ClickHouse(Arc<ClickHouseEventStore>),
}

impl std::fmt::Debug for EventStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Embedded(_) => "EventStores::Embedded",
            Self::ClickHouse(_) => "EventStores::ClickHouse",
        })
    }
}

impl EventStores {
    pub fn as_dyn(&self) -> Arc<dyn EventStore> {
        match self {
            Self::Embedded(store) => store.clone(),
            Self::ClickHouse(store) => store.clone(),
        }
    }
}

pub async fn open_event_store(config: &Config) -> anyhow::Result<EventStores> {
    open_event_store_at(&config.events_backend()?).await
}

pub async fn open_event_store_at(backend: &EventsBackend) -> anyhow::Result<EventStores> {
    Ok(match backend {
        EventsBackend::Embedded(path) => EventStores::Embedded(Arc::new(
            DuckEventStore::open(path)
                .await
                .with_context(|| format!("cannot open the event store at {}", path.display()))?,
        )),
        EventsBackend::ClickHouse { url, ledger } => EventStores::ClickHouse(Arc::new(
            ClickHouseEventStore::open(ClickHouseOptions::new(url, ledger))
                .await
                .with_context(|| format!("cannot open the event store at {}", redacted(url)))?,
        )),
    })
}
