//! Odometer's storage traits ([`Catalog`]), their error type, the operations that combine the
//! catalog with the domain rules, and the conformance suite every backend must pass.

pub mod catalog;
pub mod conformance;
pub mod customers;
pub mod error;
pub mod events;
pub mod ingest;
pub mod keys;
pub mod metrics;
pub mod preview;
pub mod tenants;

pub use catalog::{
    ApiKey, ArchivedFilter, Catalog, CustomerListParams, MetricListParams, MetricRevisionInput,
    NewApiKey, Page,
};
pub use error::{Entity, StoreError};
pub use events::{EventListParams, EventStore, UsageQueryError};
