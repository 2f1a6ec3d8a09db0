//! Explaining an event: a stored one (by customer and transaction id) or one pasted as JSON,
//! read by each metric of its code (or one named metric) with the metric's current
//! definition: the filters, the segment, the `group_by` values and the value it contributes,
//! or why it does not count (`odometer_core::explain`). A pasted event is also checked as
//! ingestion would check it (semantics 2.3), and nothing is stored.

use chrono::{DateTime, Utc};
use odometer_core::event::{Event, EventRejection};
use odometer_core::explain::{explain_event, EventExplanation};
use odometer_core::intake::{parse_event, validate_event, IntakeContext};
use odometer_core::{time, Metric, MetricSpec, OrganizationId};
use serde_json::Value;

use crate::catalog::Catalog;
use crate::error::StoreError;
use crate::events::EventStore;
use crate::metrics::find_metric;

/// Which event to explain.
#[derive(Debug, Clone, PartialEq)]
pub enum ExplainSubject {
    /// A stored event: a transaction id is unique per customer.
    Stored { customer: String, transaction_id: String },
    /// An event as a client would send it; it is parsed, checked, and not stored.
    Pasted(Value),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExplainRequest {
    pub subject: ExplainSubject,
    /// A metric's id or code to explain the event for; every metric reading the event's code
    /// (active or archived) when `None`.
    pub metric: Option<String>,
}

/// One metric's reading of the event.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricExplanation {
    pub metric: Metric,
    pub explanation: EventExplanation,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    pub event: Event,
    /// The stored event's ingestion sequence and time; `None` for a pasted event.
    pub stored: Option<(u64, DateTime<Utc>)>,
    /// For a pasted event, what ingestion would answer now: `Err` with the rejection it would
    /// get. A stored event was accepted.
    pub intake: Result<(), EventRejection>,
    /// In metric code order.
    pub metrics: Vec<MetricExplanation>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// A pasted event that is not an event at all (missing fields, bad timestamp, ...).
    #[error("{0}")]
    InvalidEvent(EventRejection),
    #[error("no event '{transaction_id}' for customer '{customer}'")]
    EventNotFound { customer: String, transaction_id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Explains an event for `org` with each metric's current definition.
pub async fn explain(
    catalog: &dyn Catalog,
    events: &dyn EventStore,
    org: OrganizationId,
    request: &ExplainRequest,
) -> Result<Explanation, ExplainError> {
    let (event, stored) = match &request.subject {
        ExplainSubject::Stored { customer, transaction_id } => {
            let found =
                events.get_event(org, customer, transaction_id).await?.ok_or_else(|| {
                    ExplainError::EventNotFound {
                        customer: customer.clone(),
                        transaction_id: transaction_id.clone(),
                    }
                })?;
            (found.event, Some((found.sequence, found.ingested_at)))
        }
        ExplainSubject::Pasted(value) => {
            (parse_event(value, time::now()).map_err(ExplainError::InvalidEvent)?, None)
        }
    };
    let readers = catalog.metrics_reading_event_code(org, &event.code).await?;
    let intake = match stored {
        Some(_) => Ok(()),
        None => would_ingest(catalog, org, &event, &readers).await?,
    };
    let mut metrics = match &request.metric {
        Some(id_or_code) => vec![find_metric(catalog, org, id_or_code).await?],
        None => readers,
    };
    metrics.sort_by(|a, b| a.spec.code.cmp(&b.spec.code));
    let metrics = metrics
        .into_iter()
        .map(|metric| {
            let explanation = explain_event(&metric.spec, &event);
            MetricExplanation { metric, explanation }
        })
        .collect();
    Ok(Explanation { event, stored, intake, metrics })
}

/// What ingestion would answer for the event now (semantics 2.3), without storing it.
async fn would_ingest(
    catalog: &dyn Catalog,
    org: OrganizationId,
    event: &Event,
    readers: &[Metric],
) -> Result<Result<(), EventRejection>, StoreError> {
    let settings = catalog.get_organization(org).await?.settings;
    let customer = [event.customer.clone()];
    let customer_exists = catalog.existing_customers(org, &customer).await?.contains(&customer[0]);
    let specs: Vec<&MetricSpec> = readers.iter().map(|m| &m.spec).collect();
    let ctx =
        IntakeContext { metrics: &specs, customer_exists, settings: &settings, now: time::now() };
    Ok(validate_event(event, &ctx))
}
