//! `POST /api/v1/events/ingest`: Meteroid events into Odometer's exactly-once intake.
//!
//! Failures are explicit: without `allow_partial_failures` one bad event stores nothing and
//! the answer is a 400 naming every failure (Meteroid answers 200 with a `failures` list that
//! clients must remember to read); with it, the good events are stored and the answer is 200
//! with `failures`, unless no event at all was stored (400 again).

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use chrono::Duration;
use odometer_core::event::EventOutcome;
use odometer_core::intake::parse_timestamp;
use odometer_core::time;
use odometer_store::ingest::ingest as ingest_events;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::customers;
use super::error::MeteroidError;
use super::extract::{typed, JsonBody, Tenant};
use crate::AppState;

/// The most events one request may carry (Meteroid's REST limit).
const MAX_EVENTS: usize = 100;
/// How old an event may be without `allow_backfilling` (Meteroid's rule).
const BACKFILL_HOURS: i64 = 24;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestRequest {
    events: Vec<EventRequest>,
    #[serde(default)]
    allow_backfilling: Option<bool>,
    #[serde(default)]
    allow_partial_failures: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventRequest {
    event_id: String,
    code: String,
    customer_id: String,
    #[serde(default)]
    properties: Option<Map<String, Value>>,
    #[serde(default)]
    timestamp: Option<String>,
}

struct Failure {
    event_id: String,
    reason: String,
}

pub async fn ingest(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, MeteroidError> {
    let request: IngestRequest = typed(body)?;
    if request.events.is_empty() || request.events.len() > MAX_EVENTS {
        return Err(MeteroidError::bad_request(format!(
            "events must hold 1 to {MAX_EVENTS} events, not {}",
            request.events.len()
        )));
    }
    let partial = request.allow_partial_failures.unwrap_or(false);
    let backfill = request.allow_backfilling.unwrap_or(false);
    let now = time::now();

    // Resolve each customer once: an alias, or a `cus_` id.
    let mut external_ids: HashMap<String, Option<String>> = HashMap::new();
    for event in &request.events {
        if !external_ids.contains_key(&event.customer_id) {
            let found = customers::resolve(state.catalog.as_ref(), org, &event.customer_id)
                .await?
                .map(|c| c.spec.external_id);
            external_ids.insert(event.customer_id.clone(), found);
        }
    }

    let mut failures: Vec<Failure> = Vec::new();
    let mut native: Vec<Value> = Vec::new();
    let mut native_ids: Vec<String> = Vec::new();
    for event in &request.events {
        let fail = |reason: String| Failure { event_id: event.event_id.clone(), reason };
        if event.event_id.is_empty() || event.event_id.chars().count() > 255 {
            failures.push(fail("event_id must hold 1 to 255 characters".into()));
            continue;
        }
        let Some(Some(customer)) = external_ids.get(&event.customer_id) else {
            failures.push(fail(format!(
                "unable to resolve customer '{}' (no customer has this id or alias)",
                event.customer_id
            )));
            continue;
        };
        let mut raw = json!({
            "transaction_id": event.event_id,
            "code": event.code,
            "customer": customer,
            "properties": event.properties.clone().unwrap_or_default(),
        });
        if let Some(ts) = event.timestamp.as_deref().filter(|t| !t.is_empty()) {
            if let Ok(at) = parse_timestamp(&json!(ts)) {
                if !backfill && at < now - Duration::hours(BACKFILL_HOURS) {
                    failures.push(fail(format!(
                        "timestamp {ts} is more than {BACKFILL_HOURS} hours in the past; set \
                         allow_backfilling to ingest it"
                    )));
                    continue;
                }
            }
            raw["timestamp"] = json!(ts);
        }
        native.push(raw);
        native_ids.push(event.event_id.clone());
    }

    let mut stored = 0usize;
    if !native.is_empty() && (partial || failures.is_empty()) {
        let results =
            ingest_events(state.catalog.as_ref(), state.events.as_ref(), org, native, !partial)
                .await?;
        for (result, event_id) in results.into_iter().zip(native_ids) {
            match result.outcome {
                EventOutcome::Accepted { .. } | EventOutcome::Duplicate { .. } => stored += 1,
                EventOutcome::Rejected(rejection) if rejection.code != "batch_rejected" => {
                    failures.push(Failure {
                        event_id,
                        reason: format!("{}: {}", rejection.code, rejection.message),
                    });
                }
                EventOutcome::Rejected(_) => {}
            }
        }
    }

    if failures.is_empty() {
        return Ok(Json(json!({})));
    }
    if partial && stored > 0 {
        let list: Vec<Value> =
            failures.iter().map(|f| json!({"event_id": f.event_id, "reason": f.reason})).collect();
        return Ok(Json(json!({ "failures": list })));
    }
    let listed: Vec<String> =
        failures.iter().map(|f| format!("{}: {}", f.event_id, f.reason)).collect();
    Err(MeteroidError::bad_request(format!(
        "no event was ingested; {} failed: {}",
        failures.len(),
        listed.join("; ")
    )))
}
