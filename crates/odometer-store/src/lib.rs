//! Odometer's storage traits ([`Catalog`]), their error type, the operations that combine the
//! catalog with the domain rules, and the conformance suite every backend must pass.

pub mod billing;
pub mod catalog;
pub mod conformance;
pub mod customers;
pub mod dialect_records;
pub mod error;
pub mod events;
pub mod explain;
pub mod ingest;
pub mod keys;
pub mod metrics;
pub mod plans;
pub mod preview;
pub mod subscriptions;
pub mod tenants;
pub mod usage_index;
pub mod usage_tables;

pub use catalog::{
    ApiKey, ArchivedFilter, Catalog, CustomerListParams, MetricListParams, MetricRevisionInput,
    NewApiKey, Page, PlanListParams, SubscriptionListParams, SubscriptionUpdate,
};
pub use error::{Entity, StoreError};
pub use events::{
    EventListParams, EventStore, EventsReason, IndexStatus, PathChoice, UsageAnswer, UsagePath,
    UsageQueryError,
};
