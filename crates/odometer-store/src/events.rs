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

/// How a usage answer was computed: the answer says which path was used (a field or a
/// response header of each surface).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UsagePath {
    /// From the usage index's precomputed state; with `edges`, the buckets at a period's or a
    /// window's edges that do not start on the 15-minute grid were read from the events.
    Index { edges: bool },
    /// From the stored events, and why not from the index.
    Events(EventsReason),
}

impl UsagePath {
    /// `index`, `index+edges` or `events; reason=...`: the value of the native API's
    /// `odometer-usage-path` header.
    pub fn describe(&self) -> String {
        match self {
            Self::Index { edges: false } => "index".to_owned(),
            Self::Index { edges: true } => "index+edges".to_owned(),
            Self::Events(reason) => format!("events; reason={}", reason.as_str()),
        }
    }

    pub fn is_index(&self) -> bool {
        matches!(self, Self::Index { .. })
    }
}

/// Why a usage question was answered from the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventsReason {
    /// The store keeps no state for this definition (not a current metric revision, or a
    /// store without an index).
    NotIndexed,
    /// The state of this definition is being built from the stored events.
    Building,
    /// The caller asked for the events path.
    Requested,
    /// `custom_sql` metrics are always computed from the events.
    CustomSql,
    /// `as_of` is before the newest ingestion the state holds.
    AsOf,
    /// Too many window boundaries lie inside 15-minute buckets (minute windows).
    Unaligned,
    /// `unique_count` with `remove` operations.
    Removals,
    /// Values too large for the state to guarantee exact sums.
    Inexact,
    /// The state disagreed with the events it was checked against (server mode, after a
    /// crash of the ClickHouse machine), so it no longer answers for this organization.
    Unverified,
}

impl EventsReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotIndexed => "not_indexed",
            Self::Building => "building",
            Self::Requested => "requested",
            Self::CustomSql => "custom_sql",
            Self::AsOf => "as_of",
            Self::Unaligned => "unaligned_windows",
            Self::Removals => "removals",
            Self::Inexact => "inexact",
            Self::Unverified => "unverified_state",
        }
    }
}

/// One customer's usage and how it was computed.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageAnswer {
    pub result: UsageResult,
    pub path: UsagePath,
}

/// Which paths a usage question may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathChoice {
    /// The index where it answers exactly, else the events.
    #[default]
    Any,
    /// The stored events only (the conformance suite compares both paths).
    Events,
}

/// Where the usage index stands for one metric definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexStatus {
    /// No state is kept for it.
    NotIndexed,
    /// Being built from the stored events: `events` folded so far, of about `of`.
    Building { events: u64, of: u64 },
    /// Complete and kept up to date at every append: `events` folded in `cells` cells.
    Complete { events: u64, cells: u64 },
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

    /// Usage of several customers, each answer with the path that computed it. `choice`
    /// restricts the paths; answers are equal whichever path computes them. The default is
    /// for stores without an index: [`EventStore::usage_of_customers`], from the events.
    async fn usage_answers(
        &self,
        org: OrganizationId,
        customers: &[String],
        spec: &MetricSpec,
        query: &UsageQuery,
        choice: PathChoice,
    ) -> Result<Vec<UsageAnswer>, UsageQueryError> {
        let reason = match choice {
            PathChoice::Any => EventsReason::NotIndexed,
            PathChoice::Events => EventsReason::Requested,
        };
        let results = self.usage_of_customers(org, customers, spec, query).await?;
        let path = UsagePath::Events(reason);
        Ok(results.into_iter().map(|result| UsageAnswer { result, path }).collect())
    }

    /// The metric definitions the usage index keeps state for in `org`: the current revision
    /// of each metric that is not deleted. Replaces the previous set: states of definitions no
    /// longer listed are dropped, new ones are built from the stored events in the background
    /// (their questions are answered from the events until then). Definitions that differ
    /// only in name, description, unit conversion or rounding share one state. Returns at
    /// once. The default (a store without an index) keeps nothing.
    async fn index_definitions(
        &self,
        _org: OrganizationId,
        _specs: &[MetricSpec],
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Where the usage index stands for one definition.
    async fn index_status(
        &self,
        _org: OrganizationId,
        _spec: &MetricSpec,
    ) -> Result<IndexStatus, StoreError> {
        Ok(IndexStatus::NotIndexed)
    }

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
