//! The `EventStore` trait: exactly-once appends, reads of stored events, and usage queries
//! that every backend answers exactly as the reference engine does.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use odometer_core::event::{Event, StoredEvent};
use odometer_core::intake::EventOutcome;
use odometer_core::usage::{UsageError, UsageQuery, UsageResult};
use odometer_core::{MetricSpec, OrganizationId};

use crate::catalog::Page;
use crate::error::StoreError;
use crate::usage_tables::{IdempotentResponse, UsageTable};

/// Parameters of an event list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventListParams {
    pub customer: Option<String>,
    pub code: Option<String>,
    /// Event timestamps at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Event timestamps before this instant.
    pub to: Option<DateTime<Utc>>,
    /// 1 to 1000.
    pub limit: u32,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Why a usage query failed: the question, or the store.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UsageQueryError {
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl UsageQueryError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Usage(e) => e.code(),
            Self::Store(e) => e.code(),
        }
    }
}

/// Where accepted events are kept and usage is computed.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Whether the store answers (for `/healthz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Appends events that passed validation, exactly once by `(organization, customer,
    /// transaction_id)` for all time (semantics 2.2), answering one outcome per event in order,
    /// exactly as `odometer_core::intake::ReferenceEventLog` does (outcomes, messages,
    /// per-organization sequences from 1). When this returns, every `Accepted` event is
    /// durable. Events of one append share one `ingested_at`. With `atomic`, either every
    /// event is accepted or duplicate, or nothing is stored.
    async fn append(
        &self,
        org: OrganizationId,
        events: Vec<Event>,
        atomic: bool,
    ) -> Result<Vec<EventOutcome>, StoreError>;

    /// One stored event by its identity.
    async fn get_event(
        &self,
        org: OrganizationId,
        customer: &str,
        transaction_id: &str,
    ) -> Result<Option<StoredEvent>, StoreError>;

    /// Stored events in ingestion order, one page; a page that ends at the last event has no
    /// `next_cursor`.
    async fn list_events(
        &self,
        org: OrganizationId,
        params: &EventListParams,
    ) -> Result<Page<StoredEvent>, StoreError>;

    /// Usage of one customer for one metric revision (`spec`), as semantics sections 4 and 5
    /// define it: identical to `odometer_core::engine::compute_usage` over the customer's
    /// stored events.
    async fn usage(
        &self,
        org: OrganizationId,
        customer: &str,
        spec: &MetricSpec,
        query: &UsageQuery,
    ) -> Result<UsageResult, UsageQueryError>;

    /// Usage of several customers at once (the invoice run): one result per customer given,
    /// in the order given (a customer named twice is answered twice). A question the engine
    /// refuses fails with the engine's error (`UsageQueryError::Usage`).
    async fn usage_of_customers(
        &self,
        org: OrganizationId,
        customers: &[String],
        spec: &MetricSpec,
        query: &UsageQuery,
    ) -> Result<Vec<UsageResult>, UsageQueryError>;

    /// One customer's events of one code with `from <= timestamp < to` (from the first when
    /// `from` is `None`), in ingestion order: what pricing reads event by event. The default
    /// pages through [`EventStore::list_events`].
    async fn customer_events(
        &self,
        org: OrganizationId,
        customer: &str,
        code: &str,
        from: Option<DateTime<Utc>>,
        to: DateTime<Utc>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut all = Vec::new();
        let mut params = EventListParams {
            customer: Some(customer.to_owned()),
            code: Some(code.to_owned()),
            from,
            to: Some(to),
            limit: 1000,
            cursor: None,
        };
        loop {
            let page = self.list_events(org, &params).await?;
            all.extend(page.items);
            match page.next_cursor {
                Some(next) => params.cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// Defines a usage table (Zenskar's raw metric); `false` when the organization already
    /// has one with that `api_slug` (nothing is changed then). SQL metrics see it at once.
    async fn create_usage_table(
        &self,
        _org: OrganizationId,
        _table: UsageTable,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Backend("this event store has no usage tables".into()))
    }

    /// The organization's usage tables, oldest first.
    async fn usage_tables(&self, _org: OrganizationId) -> Result<Vec<UsageTable>, StoreError> {
        Ok(Vec::new())
    }

    /// The response kept for an `Idempotency-Key`, if any.
    async fn idempotent_response(
        &self,
        _org: OrganizationId,
        _key: &str,
    ) -> Result<Option<IdempotentResponse>, StoreError> {
        Ok(None)
    }

    /// Keeps the response of a request made with an `Idempotency-Key`; when one is already
    /// kept (a concurrent retry), that first one is answered and nothing changes.
    async fn keep_idempotent_response(
        &self,
        _org: OrganizationId,
        _key: &str,
        response: IdempotentResponse,
    ) -> Result<IdempotentResponse, StoreError> {
        Ok(response)
    }
}
