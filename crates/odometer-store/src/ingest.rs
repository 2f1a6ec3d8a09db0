//! Event ingestion over a [`Catalog`] and an [`EventStore`]: parse each event, validate it
//! against the catalog (semantics 2.3), then append what passed, answering one outcome per
//! event in the order they came (2.6).

use std::collections::{HashMap, HashSet};

use odometer_core::event::Event;
use odometer_core::intake::{
    batch_rejection, needs_customer, parse_event_owned, validate_event, EventOutcome,
    EventRejection, IntakeContext,
};
use odometer_core::{time, MetricSpec, OrganizationId};
use serde_json::Value;

use crate::catalog::Catalog;
use crate::error::StoreError;
use crate::events::EventStore;

/// The most events one request may carry.
pub const MAX_BATCH_EVENTS: usize = 10_000;

/// One event's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestResult {
    /// The event's transaction id, when it had a readable one.
    pub transaction_id: Option<String>,
    pub outcome: EventOutcome,
}

/// Ingests raw JSON events for `org`. Events that pass are stored even when others are
/// rejected, unless `atomic` (then all or nothing). The values are taken, so each event's
/// properties move into the stored event instead of being copied.
pub async fn ingest(
    catalog: &dyn Catalog,
    store: &dyn EventStore,
    org: OrganizationId,
    raw: Vec<Value>,
    atomic: bool,
) -> Result<Vec<IngestResult>, StoreError> {
    ingest_items(catalog, store, org, raw.into_iter().map(Ok).collect(), atomic).await
}

/// Like [`ingest`], for inputs some of which were already refused before they could be read
/// as JSON (a malformed NDJSON line): those keep their rejection and count as rejected for
/// `atomic`.
pub async fn ingest_items(
    catalog: &dyn Catalog,
    store: &dyn EventStore,
    org: OrganizationId,
    items: Vec<Result<Value, EventRejection>>,
    atomic: bool,
) -> Result<Vec<IngestResult>, StoreError> {
    let results = ingest_unrecorded(catalog, store, org, items, atomic).await?;
    record_outcomes(&results);
    Ok(results)
}

/// Counts the answers for `/metrics`: `odometer_events_total{outcome}` (accepted,
/// duplicate, rejected) and `odometer_events_rejected_total{code}`.
fn record_outcomes(results: &[IngestResult]) {
    let (mut accepted, mut duplicate) = (0u64, 0u64);
    let mut rejected: HashMap<&'static str, u64> = HashMap::new();
    for result in results {
        match &result.outcome {
            EventOutcome::Accepted { .. } => accepted += 1,
            EventOutcome::Duplicate { .. } => duplicate += 1,
            EventOutcome::Rejected(rejection) => *rejected.entry(rejection.code).or_default() += 1,
        }
    }
    metrics::counter!("odometer_events_total", "outcome" => "accepted").increment(accepted);
    metrics::counter!("odometer_events_total", "outcome" => "duplicate").increment(duplicate);
    let total_rejected: u64 = rejected.values().sum();
    metrics::counter!("odometer_events_total", "outcome" => "rejected").increment(total_rejected);
    for (code, count) in rejected {
        metrics::counter!("odometer_events_rejected_total", "code" => code).increment(count);
    }
}

async fn ingest_unrecorded(
    catalog: &dyn Catalog,
    store: &dyn EventStore,
    org: OrganizationId,
    items: Vec<Result<Value, EventRejection>>,
    atomic: bool,
) -> Result<Vec<IngestResult>, StoreError> {
    let now = time::now();
    let settings = catalog.get_organization(org).await?.settings;
    let count = items.len();
    // Each event, or its rejection with the transaction id it carried (for the answer).
    let parsed: Vec<Result<Event, (EventRejection, Option<String>)>> = items
        .into_iter()
        .map(|item| {
            item.map_err(|rejection| (rejection, None)).and_then(|v| parse_event_owned(v, now))
        })
        .collect();

    // What the catalog says about the codes and customers this batch names, asked once each.
    let mut metrics_by_code: HashMap<String, Vec<MetricSpec>> = HashMap::new();
    let mut named_customers: Vec<String> = Vec::new();
    let mut seen_customers: HashSet<&str> = HashSet::new();
    for event in parsed.iter().flatten() {
        if !metrics_by_code.contains_key(&event.code) {
            let metrics = catalog.metrics_reading_event_code(org, &event.code).await?;
            metrics_by_code
                .insert(event.code.clone(), metrics.into_iter().map(|m| m.spec).collect());
        }
        if seen_customers.insert(&event.customer) {
            named_customers.push(event.customer.clone());
        }
    }
    let existing = catalog.existing_customers(org, &named_customers).await?;
    let customer_exists: HashMap<&str, bool> =
        named_customers.iter().map(|c| (c.as_str(), existing.contains(c))).collect();

    let mut results: Vec<IngestResult> = Vec::with_capacity(count);
    let mut to_store: Vec<(usize, Event)> = Vec::new();
    let mut to_create: Vec<String> = Vec::new();
    for (i, parsed) in parsed.into_iter().enumerate() {
        let (transaction_id, parsed) = match parsed {
            Ok(event) => (Some(event.transaction_id.clone()), Ok(event)),
            Err((rejection, id)) => (id, Err(rejection)),
        };
        let checked = parsed.and_then(|event| {
            let metrics: Vec<&MetricSpec> =
                metrics_by_code.get(&event.code).map(|m| m.iter().collect()).unwrap_or_default();
            let ctx = IntakeContext {
                metrics: &metrics,
                customer_exists: customer_exists
                    .get(event.customer.as_str())
                    .copied()
                    .unwrap_or(false),
                settings: &settings,
                now,
            };
            validate_event(&event, &ctx)?;
            if needs_customer(&ctx) && !to_create.contains(&event.customer) {
                to_create.push(event.customer.clone());
            }
            Ok(event)
        });
        match checked {
            Ok(event) => {
                to_store.push((i, event));
                // Filled in from the store's answer below.
                results.push(IngestResult {
                    transaction_id,
                    outcome: EventOutcome::Accepted { sequence: 0 },
                });
            }
            Err(rejection) => results
                .push(IngestResult { transaction_id, outcome: EventOutcome::Rejected(rejection) }),
        }
    }

    let rejected: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.outcome.is_stored())
        .map(|(i, _)| i)
        .collect();
    if atomic && !rejected.is_empty() {
        let not_stored = batch_rejection(rejected.len(), rejected[0]);
        for (i, _) in &to_store {
            results[*i].outcome = EventOutcome::Rejected(not_stored.clone());
        }
        return Ok(results);
    }
    if to_store.is_empty() {
        return Ok(results);
    }
    for external_id in to_create {
        create_customer_on_first_sight(catalog, org, &external_id).await?;
    }
    let (indexes, events): (Vec<usize>, Vec<Event>) = to_store.into_iter().unzip();
    let outcomes = store.append(org, events, atomic).await?;
    if outcomes.len() != indexes.len() {
        return Err(StoreError::Backend(format!(
            "the event store answered {} outcomes for {} events",
            outcomes.len(),
            indexes.len()
        )));
    }
    for (i, outcome) in indexes.into_iter().zip(outcomes) {
        results[i].outcome = outcome;
    }
    Ok(results)
}

/// Creates a customer an event named (the organization's setting allows it); another request
/// creating it first is fine.
async fn create_customer_on_first_sight(
    catalog: &dyn Catalog,
    org: OrganizationId,
    external_id: &str,
) -> Result<(), StoreError> {
    let spec = odometer_core::CustomerSpec {
        external_id: external_id.to_owned(),
        name: None,
        email: None,
        timezone: None,
        metadata: serde_json::Map::new(),
    };
    let customer = odometer_core::Customer::new(org, spec, time::now());
    match catalog.create_customer(&customer).await {
        Ok(()) | Err(StoreError::ExternalIdTaken { .. }) => Ok(()),
        Err(other) => Err(other),
    }
}
