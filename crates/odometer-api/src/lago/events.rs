//! `/lago/api/v1/events`: create, `batch` (1 to 100, all or nothing), get by transaction id,
//! list, `estimate_fees`. Lago events name a subscription (`external_subscription_id`), which
//! resolves to its customer: Odometer meters per customer. Unlike Lago, every event is checked
//! when it arrives (unknown subscription or code, non-numeric value: a 422 naming the index and
//! the field), an identical re-send answers the original, and a conflicting one is a 422
//! `value_already_exist`.

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use odometer_core::event::StoredEvent;
use odometer_core::intake::{
    parse_event, parse_timestamp, validate_event, EventOutcome, EventRejection, IntakeContext,
};
use odometer_core::{MetricSpec, OrganizationId, OrganizationSettings, Subscription};
use odometer_store::ingest::ingest;
use odometer_store::metrics::find_metric;
use odometer_store::{EventListParams, StoreError, SubscriptionListParams};
use serde_json::{json, Map, Value};

use super::error::{lago_code, LagoError};
use super::extract::{LagoBody, LagoQuery, LagoTenant, Path};
use super::mapping::{iso, iso_millis};
use crate::AppState;

type Answer = Result<Json<Value>, LagoError>;

/// Lago's `LAGO_EVENTS_BATCH_MAX_LENGTH` default.
pub const MAX_BATCH_EVENTS: usize = 100;

/// The members a Lago event may have.
const EVENT_MEMBERS: [&str; 7] = [
    "transaction_id",
    "external_subscription_id",
    "external_customer_id",
    "code",
    "timestamp",
    "precise_total_amount_cents",
    "properties",
];

/// One Lago event, read and resolved to an Odometer event.
struct Prepared {
    customer: String,
    transaction_id: String,
    external_subscription_id: Option<String>,
    event: Value,
}

type Details = Map<String, Value>;

fn detail(details: &mut Details, field: &str, code: &str) {
    details.insert(field.to_owned(), json!([code]));
}

/// Whether `text` is Unix seconds as Lago reads them: `-?\d+(\.\d+)?`.
fn is_numeric_timestamp(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
    !whole.is_empty()
        && !fraction.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

/// What reading a request's events looks up, once per request.
#[derive(Default)]
struct Lookups {
    subscriptions: HashMap<String, Option<Subscription>>,
    metrics: HashMap<String, Vec<MetricSpec>>,
    settings: Option<OrganizationSettings>,
}

impl Lookups {
    async fn subscription(
        &mut self,
        state: &AppState,
        org: OrganizationId,
        external_id: &str,
    ) -> Result<Option<Subscription>, LagoError> {
        if let Some(found) = self.subscriptions.get(external_id) {
            return Ok(found.clone());
        }
        let found = match state.catalog.get_subscription(org, external_id).await {
            Ok(s) => Some(s),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(LagoError::store(e, "subscription")),
        };
        self.subscriptions.insert(external_id.to_owned(), found.clone());
        Ok(found)
    }

    /// Checks a read event against the catalog as ingestion will (unknown code, non-numeric
    /// value, timestamp too far ahead), so a batch reports every event's problem at once.
    async fn check(
        &mut self,
        state: &AppState,
        org: OrganizationId,
        event: &Value,
    ) -> Result<Result<(), EventRejection>, LagoError> {
        let now = odometer_core::time::now();
        let event = match parse_event(event, now) {
            Ok(event) => event,
            Err(rejection) => return Ok(Err(rejection)),
        };
        if self.settings.is_none() {
            let org = state
                .catalog
                .get_organization(org)
                .await
                .map_err(|e| LagoError::internal(e.to_string()))?;
            self.settings = Some(org.settings);
        }
        if !self.metrics.contains_key(&event.code) {
            let metrics = state
                .catalog
                .metrics_reading_event_code(org, &event.code)
                .await
                .map_err(|e| LagoError::internal(e.to_string()))?;
            self.metrics.insert(event.code.clone(), metrics.into_iter().map(|m| m.spec).collect());
        }
        let metrics: Vec<&MetricSpec> =
            self.metrics.get(&event.code).map(|m| m.iter().collect()).unwrap_or_default();
        let Some(settings) = &self.settings else {
            return Err(LagoError::internal("organization settings were not read"));
        };
        let ctx = IntakeContext { metrics: &metrics, customer_exists: true, settings, now };
        Ok(validate_event(&event, &ctx))
    }
}

/// Reads one Lago event; `Err` holds its problems by field.
async fn prepare(
    state: &AppState,
    org: OrganizationId,
    raw: &Value,
    lookups: &mut Lookups,
) -> Result<Result<Prepared, Details>, LagoError> {
    let mut details = Details::new();
    let Some(input) = raw.as_object() else {
        detail(&mut details, "event", "value_is_invalid");
        return Ok(Err(details));
    };
    for key in input.keys() {
        if !EVENT_MEMBERS.contains(&key.as_str()) {
            detail(&mut details, key, "unknown_field");
        }
    }
    let text = |key: &str| input.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
    let transaction_id = text("transaction_id");
    if transaction_id.is_none() {
        detail(&mut details, "transaction_id", "value_is_mandatory");
    }
    let code = text("code");
    if code.is_none() {
        detail(&mut details, "code", "value_is_mandatory");
    }
    let external_subscription_id = text("external_subscription_id").map(str::to_owned);
    let external_customer_id = text("external_customer_id");
    let customer = match (&external_subscription_id, external_customer_id) {
        (Some(sub), named) => match lookups.subscription(state, org, sub).await? {
            None => {
                detail(&mut details, "external_subscription_id", "subscription_not_found");
                None
            }
            Some(found) => {
                if named.is_some_and(|c| c != found.spec.customer) {
                    detail(&mut details, "external_customer_id", "does_not_match_subscription");
                }
                Some(found.spec.customer)
            }
        },
        (None, Some(customer)) => Some(customer.to_owned()),
        (None, None) => {
            detail(&mut details, "external_subscription_id", "value_is_mandatory");
            None
        }
    };
    let timestamp = match input.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(n @ Value::Number(_)) => Some(n.clone()),
        Some(Value::String(s)) if is_numeric_timestamp(s.trim()) => {
            Some(Value::String(s.trim().to_owned()))
        }
        Some(_) => {
            detail(&mut details, "timestamp", "invalid_format");
            None
        }
    };
    let properties = match input.get("properties") {
        None | Some(Value::Null) => json!({}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            detail(&mut details, "properties", "value_is_invalid");
            json!({})
        }
    };
    if input.get("precise_total_amount_cents").is_some_and(|v| !v.is_null()) {
        // Only Lago's `dynamic` charge model reads it, and Odometer has no such model.
        detail(&mut details, "precise_total_amount_cents", "not_supported");
    }
    let (Some(transaction_id), Some(code), Some(customer)) = (transaction_id, code, customer)
    else {
        return Ok(Err(details));
    };
    if !details.is_empty() {
        return Ok(Err(details));
    }
    // A re-send without a timestamp means the same event again: it keeps the original's
    // timestamp rather than becoming a conflict at "now".
    let timestamp = match timestamp {
        Some(ts) => Some(ts),
        None => state
            .events
            .get_event(org, &customer, transaction_id)
            .await
            .map_err(|e| LagoError::internal(e.to_string()))?
            .map(|stored| json!(odometer_core::time::format_micros(&stored.event.timestamp))),
    };
    let mut event = json!({"transaction_id": transaction_id, "code": code,
                           "customer": customer, "properties": properties});
    if let Some(ts) = timestamp {
        event["timestamp"] = ts;
    }
    if let Err(rejection) = lookups.check(state, org, &event).await? {
        return Ok(Err(rejection_detail(&rejection)));
    }
    Ok(Ok(Prepared {
        customer,
        transaction_id: transaction_id.to_owned(),
        external_subscription_id,
        event,
    }))
}

/// An ingestion rejection as Lago's field and code.
fn rejection_detail(rejection: &EventRejection) -> Details {
    let field = rejection
        .message
        .split_once(':')
        .map(|(head, _)| head.trim())
        .filter(|head| !head.contains(' '))
        .unwrap_or("event");
    let (field, code) = match rejection.code {
        "unknown_code" => ("code", "invalid_code"),
        "unknown_customer" => ("external_customer_id", "customer_not_found"),
        "invalid_value" => (field, "value_is_not_valid_number"),
        "transaction_id_conflict" => ("transaction_id", "value_already_exist"),
        "invalid_timestamp" => ("timestamp", "invalid_format"),
        other => (field, lago_code(other)),
    };
    let mut details = Details::new();
    detail(&mut details, field, code);
    details
}

/// Each customer's subscriptions, newest start first, looked up once per request: what says
/// which subscription a stored event belongs to in answers.
#[derive(Default)]
struct SubscriptionsOf(HashMap<String, Vec<Subscription>>);

impl SubscriptionsOf {
    /// The customer's subscription whose life covers `at` (the newest started, when several
    /// do), else the newest.
    async fn at(
        &mut self,
        state: &AppState,
        org: OrganizationId,
        customer: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<String>, LagoError> {
        if !self.0.contains_key(customer) {
            let params = SubscriptionListParams {
                customer: Some(customer.to_owned()),
                plan_id: None,
                status: None,
                limit: 1000,
                cursor: None,
            };
            let page = state
                .catalog
                .list_subscriptions(org, &params)
                .await
                .map_err(|e| LagoError::store(e, "subscription"))?;
            let mut subscriptions = page.items;
            subscriptions.sort_by_key(|s| std::cmp::Reverse(s.spec.started_at));
            self.0.insert(customer.to_owned(), subscriptions);
        }
        let subscriptions = self.0.get(customer).map(Vec::as_slice).unwrap_or_default();
        let covering = subscriptions.iter().find(|s| {
            let end = s.terminated_at.or(s.spec.ended_at);
            s.spec.started_at <= at && end.is_none_or(|end| at < end)
        });
        Ok(covering.or(subscriptions.first()).map(|s| s.spec.external_id.clone()))
    }
}

fn event_to_lago(stored: &StoredEvent, external_subscription_id: Option<String>) -> Value {
    let event = &stored.event;
    json!({
        "lago_id": null,
        "transaction_id": event.transaction_id,
        "lago_customer_id": null,
        "code": event.code,
        "timestamp": iso_millis(&event.timestamp),
        "precise_total_amount_cents": null,
        "properties": event.properties,
        "lago_subscription_id": null,
        "external_subscription_id": external_subscription_id.unwrap_or_default(),
        "external_customer_id": event.customer,
        "created_at": iso(&stored.ingested_at),
    })
}

/// Reads, checks and stores `raw` all or nothing; answers the stored events (for a re-sent
/// one, the original), or the problems by index.
async fn ingest_lago(
    state: &AppState,
    org: OrganizationId,
    raw: &[Value],
) -> Result<Result<Vec<Value>, Vec<(usize, Details)>>, LagoError> {
    let mut lookups = Lookups::default();
    let mut prepared = Vec::with_capacity(raw.len());
    let mut problems: Vec<(usize, Details)> = Vec::new();
    for (i, event) in raw.iter().enumerate() {
        match prepare(state, org, event, &mut lookups).await? {
            Ok(p) => prepared.push(p),
            Err(details) => problems.push((i, details)),
        }
    }
    if !problems.is_empty() {
        return Ok(Err(problems));
    }
    let events: Vec<Value> = prepared.iter().map(|p| p.event.clone()).collect();
    let results = ingest(state.catalog.as_ref(), state.events.as_ref(), org, events, true)
        .await
        .map_err(|e| LagoError::internal(e.to_string()))?;
    for (i, result) in results.iter().enumerate() {
        if let EventOutcome::Rejected(rejection) = &result.outcome {
            if rejection.code != "batch_rejected" {
                problems.push((i, rejection_detail(rejection)));
            }
        }
    }
    if !problems.is_empty() {
        return Ok(Err(problems));
    }
    let mut answers = Vec::with_capacity(prepared.len());
    let mut subscriptions = SubscriptionsOf::default();
    for p in prepared {
        let stored = state
            .events
            .get_event(org, &p.customer, &p.transaction_id)
            .await
            .map_err(|e| LagoError::internal(e.to_string()))?
            .ok_or_else(|| LagoError::internal("an accepted event cannot be read back"))?;
        let sub = match p.external_subscription_id {
            Some(sub) => Some(sub),
            None => {
                subscriptions.at(state, org, &stored.event.customer, stored.event.timestamp).await?
            }
        };
        answers.push(event_to_lago(&stored, sub));
    }
    Ok(Ok(answers))
}

pub async fn create(State(state): State<AppState>, tenant: LagoTenant, body: LagoBody) -> Answer {
    let event = Value::Object(body.root("event")?);
    match ingest_lago(&state, tenant.organization_id, &[event]).await? {
        Ok(mut answers) => Ok(Json(json!({"event": answers.remove(0)}))),
        Err(mut problems) => Err(LagoError::validation(Value::Object(problems.remove(0).1))),
    }
}

pub async fn batch(State(state): State<AppState>, tenant: LagoTenant, body: LagoBody) -> Answer {
    let events = match body.0.get("events") {
        Some(Value::Array(events)) => events.clone(),
        _ => return Err(LagoError::missing_param("events")),
    };
    if events.is_empty() {
        return Err(LagoError::field("events", "no_events"));
    }
    if events.len() > MAX_BATCH_EVENTS {
        return Err(LagoError::field("events", "too_many_events"));
    }
    match ingest_lago(&state, tenant.organization_id, &events).await? {
        Ok(answers) => Ok(Json(json!({"events": answers}))),
        Err(problems) => {
            let details: Map<String, Value> =
                problems.into_iter().map(|(i, d)| (i.to_string(), Value::Object(d))).collect();
            Err(LagoError::validation(Value::Object(details)))
        }
    }
}

/// The customer a `external_subscription_id` filter names.
async fn customer_of_subscription(
    state: &AppState,
    org: OrganizationId,
    external_id: &str,
) -> Result<String, LagoError> {
    state
        .catalog
        .get_subscription(org, external_id)
        .await
        .map(|s| s.spec.customer)
        .map_err(|e| LagoError::store(e, "subscription"))
}

fn query_instant(query: &LagoQuery, key: &str) -> Result<Option<DateTime<Utc>>, LagoError> {
    match query.get(key) {
        None | Some("") => Ok(None),
        Some(text) => parse_timestamp(&json!(text))
            .map(Some)
            .map_err(|_| LagoError::field(key, "invalid_format")),
    }
}

/// Every stored event `params` selects, following the cursors.
async fn all_events(
    state: &AppState,
    org: OrganizationId,
    mut params: EventListParams,
) -> Result<Vec<StoredEvent>, LagoError> {
    let mut all = Vec::new();
    loop {
        let page = state
            .events
            .list_events(org, &params)
            .await
            .map_err(|e| LagoError::internal(e.to_string()))?;
        all.extend(page.items);
        match page.next_cursor {
            Some(next) => params.cursor = Some(next),
            None => return Ok(all),
        }
    }
}

/// `GET /events`: `page`, `per_page`, `code`, `external_subscription_id`, `timestamp_from`,
/// `timestamp_to` (half-open: `timestamp_from <= t < timestamp_to`). Newest first, as Lago.
pub async fn list(State(state): State<AppState>, tenant: LagoTenant, query: LagoQuery) -> Answer {
    let org = tenant.organization_id;
    let paging = query.paging()?;
    let subscription = query.get("external_subscription_id").filter(|s| !s.is_empty());
    let customer = match subscription {
        Some(sub) => Some(customer_of_subscription(&state, org, sub).await?),
        None => None,
    };
    let params = EventListParams {
        customer,
        code: query.get("code").filter(|c| !c.is_empty()).map(str::to_owned),
        from: query_instant(&query, "timestamp_from")?,
        to: query_instant(&query, "timestamp_to")?,
        limit: 1000,
        cursor: None,
    };
    let mut all = all_events(&state, org, params).await?;
    all.reverse();
    let (items, meta) = paging.slice(all);
    let mut events = Vec::with_capacity(items.len());
    let mut subscriptions = SubscriptionsOf::default();
    for stored in &items {
        let sub = match subscription {
            Some(sub) => Some(sub.to_owned()),
            None => {
                subscriptions
                    .at(&state, org, &stored.event.customer, stored.event.timestamp)
                    .await?
            }
        };
        events.push(event_to_lago(stored, sub));
    }
    Ok(Json(json!({"events": events, "meta": meta})))
}

/// `GET /events/{transaction_id}`: Lago looks an event up by transaction id alone; so does
/// this (the first stored, when customers share a transaction id), unless the query names
/// `external_subscription_id`.
pub async fn get(
    State(state): State<AppState>,
    tenant: LagoTenant,
    Path(transaction_id): Path<String>,
    query: LagoQuery,
) -> Answer {
    let org = tenant.organization_id;
    let subscription = query.get("external_subscription_id").filter(|s| !s.is_empty());
    let customer = match subscription {
        Some(sub) => Some(customer_of_subscription(&state, org, sub).await?),
        None => None,
    };
    let stored = match &customer {
        Some(customer) => state
            .events
            .get_event(org, customer, &transaction_id)
            .await
            .map_err(|e| LagoError::internal(e.to_string()))?,
        None => {
            let params = EventListParams { limit: 1000, ..EventListParams::default() };
            all_events(&state, org, params)
                .await?
                .into_iter()
                .find(|e| e.event.transaction_id == transaction_id)
        }
    };
    let stored = stored.ok_or_else(|| LagoError::not_found("event"))?;
    let sub = match subscription {
        Some(sub) => Some(sub.to_owned()),
        None => {
            SubscriptionsOf::default()
                .at(&state, org, &stored.event.customer, stored.event.timestamp)
                .await?
        }
    };
    Ok(Json(json!({"event": event_to_lago(&stored, sub)})))
}

/// `POST /events/estimate_fees`: Lago estimates only pay-in-advance charges, and Odometer's
/// charges are all paid in arrears, so a known subscription and metric get Lago's own
/// answer for a code with no instant charge.
pub async fn estimate_fees(
    State(state): State<AppState>,
    tenant: LagoTenant,
    body: LagoBody,
) -> Answer {
    let org = tenant.organization_id;
    let event = body.root("event")?;
    let text = |key: &str| event.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
    let Some(sub) = text("external_subscription_id") else {
        return Err(LagoError::not_found("subscription"));
    };
    customer_of_subscription(&state, org, sub).await?;
    let Some(code) = text("code") else {
        return Err(LagoError::not_found("billable_metric"));
    };
    find_metric(state.catalog.as_ref(), org, code)
        .await
        .map_err(|e| LagoError::store(e, "billable_metric"))?;
    Err(LagoError::field("code", "does_not_match_an_instant_charge"))
}
