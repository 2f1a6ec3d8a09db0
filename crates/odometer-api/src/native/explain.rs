//! `POST /v1/events/explain`: why an event does or does not count for each metric of its code
//! (the logic is `odometer_store::explain` over `odometer_core::explain`; this maps it).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use odometer_core::explain::{EventExplanation, Outcome, Placement, ValueReading};
use odometer_core::time::format_micros;
use odometer_core::Problems;
use odometer_store::explain::{explain, ExplainError, ExplainRequest, ExplainSubject};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::dto::RejectionDto;
use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, Tenant};
use crate::AppState;

/// Body of an explanation: a stored event (`customer` and `transaction_id`) or a pasted one
/// (`event`), and optionally one metric to explain it for.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ExplainInput {
    /// A stored event's customer (external id), with `transaction_id`.
    customer: Option<String>,
    /// A stored event's transaction id, with `customer`.
    transaction_id: Option<String>,
    /// An event as `POST /v1/events` takes it, instead of a stored one: checked, not stored.
    #[schema(value_type = Option<Object>)]
    event: Option<Value>,
    /// A metric's id or code: explain for this metric only (even one reading another code).
    /// Every metric reading the event's code, active or archived, when absent.
    metric: Option<String>,
}

/// The event explained.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExplainedEventDto {
    pub transaction_id: String,
    pub code: String,
    pub customer: String,
    pub timestamp: String,
    #[schema(value_type = Object)]
    pub properties: Value,
    /// The ingestion sequence of a stored event; null for a pasted one.
    pub sequence: Option<u64>,
    pub ingested_at: Option<String>,
}

/// What ingestion says of the event.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestionCheckDto {
    /// `stored`, or for a pasted event `would_be_accepted` or `would_be_rejected`.
    pub status: String,
    /// The rejection a pasted event would get.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RejectionDto>,
}

/// The metric an explanation is for (its current revision).
#[derive(Debug, Serialize, ToSchema)]
pub struct ExplainedMetricDto {
    pub id: String,
    pub code: String,
    pub name: String,
    pub event_code: String,
    /// The aggregation type.
    pub aggregation: String,
    pub revision: u32,
    pub archived: bool,
}

/// One filter of the metric, checked against the event.
#[derive(Debug, Serialize, ToSchema)]
pub struct FilterCheckDto {
    pub property: String,
    pub op: String,
    #[schema(value_type = Vec<Object>)]
    pub values: Vec<Value>,
    /// Whether the event has the property (a null counts as present here).
    pub present: bool,
    /// The event's value of the property (null when absent).
    #[schema(value_type = Object)]
    pub found: Value,
    pub passes: bool,
}

/// Where the segmentation puts the event.
#[derive(Debug, Serialize, ToSchema)]
pub struct SegmentPlacementDto {
    /// `none` (no segmentation), `matched`, `other` or `dropped` (`unmatched: drop`).
    pub placement: String,
    /// The matched dimension values (`{"region": "eu"}`), as `/v1/usage` names the segment;
    /// `"other"`, or null.
    #[schema(value_type = Object)]
    pub segment: Value,
}

/// Why the event does not count.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExplainReasonDto {
    /// `other_code`, `filtered_out`, `excluded_by_segmentation`, `decided_by_sql`, or for a
    /// skipped event the cause: `missing_property`, `null_property`, `not_a_number`,
    /// `no_distinct_value`, `expression_failed`, `invalid_operation_type`, `no_value_source`.
    pub code: String,
    pub message: String,
}

/// How one metric reads the event.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricExplanationDto {
    pub metric: ExplainedMetricDto,
    /// `counted` (its value goes into the usage), `skipped` (it counts under
    /// `events_skipped`, with no value), `excluded_by_segmentation` (under `events_excluded`),
    /// `filtered_out`, `other_code` (not among the metric's events), `decided_by_sql`.
    pub outcome: String,
    /// Whether the event's value goes into the metric's usage.
    pub counts: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<ExplainReasonDto>,
    pub reads_code: bool,
    pub filters: Vec<FilterCheckDto>,
    /// Index of the first filter that fails.
    pub failed_filter: Option<usize>,
    pub segment: SegmentPlacementDto,
    /// The metric's `group_by` keys and the event's value of each (null when absent).
    #[schema(value_type = Object)]
    pub group_by: Value,
    /// What the event contributes before unit conversion and rounding: `"1"` for `count`, the
    /// number for `sum`, `min`, `max`, `mean`, `latest` and `weighted_sum` (a change of the
    /// level), the distinct value for `unique_count`; null when it has none. Shown also when
    /// the event does not count, as what it would contribute.
    pub value: Option<String>,
    /// `unique_count` only: `add` or `remove`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
}

/// An event explained against the metrics that read it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExplanationDto {
    pub event: ExplainedEventDto,
    pub ingestion: IngestionCheckDto,
    /// Whether the event counts for at least one of the metrics explained.
    pub counts: bool,
    /// In metric code order; empty when no metric reads the event's code.
    pub metrics: Vec<MetricExplanationDto>,
}

fn read_request(body: &Value) -> Result<ExplainRequest, ApiError> {
    let mut problems = Problems::new();
    let Some(members) = body.as_object() else {
        problems.push("", "invalid_type", "the body must be a JSON object");
        return Err(ApiError::invalid(problems));
    };
    for key in members.keys() {
        if !matches!(key.as_str(), "customer" | "transaction_id" | "event" | "metric") {
            problems.push(key, "unknown_field", "is not a member of an explanation request");
        }
    }
    let mut text = |name: &str| match members.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => {
            problems.push(name, "invalid_type", "must be a non-empty string");
            None
        }
    };
    let (customer, transaction_id, metric) =
        (text("customer"), text("transaction_id"), text("metric"));
    let event = members.get("event").filter(|v| !v.is_null());
    let subject = match (event, customer, transaction_id) {
        (Some(event), None, None) => Some(ExplainSubject::Pasted(event.clone())),
        (None, Some(customer), Some(transaction_id)) => {
            Some(ExplainSubject::Stored { customer, transaction_id })
        }
        (Some(_), _, _) => {
            problems.push(
                "event",
                "not_allowed",
                "give either an event or a stored event's customer and transaction_id",
            );
            None
        }
        (None, None, _) => {
            problems.push("customer", "missing_field", "is required (or give an event)");
            None
        }
        (None, _, None) => {
            problems.push("transaction_id", "missing_field", "is required (or give an event)");
            None
        }
    };
    match subject {
        Some(subject) if problems.is_empty() => Ok(ExplainRequest { subject, metric }),
        _ => Err(ApiError::invalid(problems)),
    }
}

impl From<ExplainError> for ApiError {
    fn from(err: ExplainError) -> Self {
        match err {
            ExplainError::InvalidEvent(rejection) => {
                let mut problems = Problems::new();
                problems.push("event", rejection.code, rejection.message);
                Self::invalid(problems)
            }
            ExplainError::EventNotFound { .. } => {
                Self::new(StatusCode::NOT_FOUND, "event_not_found", err.to_string())
            }
            ExplainError::Store(store) => store.into(),
        }
    }
}

/// Explain why an event does or does not count.
///
/// For a stored event (`customer` and `transaction_id`) or a pasted one (`event`, checked as
/// ingestion would check it and not stored): for each metric reading its code (or the one
/// named by `metric`), with the metric's current definition, each filter and whether it
/// passes, the segment the event lands in (or dropped), its `group_by` values, the value it
/// contributes, and why not when it does not count. The engine computing usage reads the
/// event exactly this way.
#[utoipa::path(post, path = "/v1/events/explain", tag = "events",
    request_body = ExplainInput,
    responses(
        (status = 200, description = "the event, what ingestion says of it, and each metric's reading", body = ExplanationDto),
        (status = 404, description = "`event_not_found` or `metric_not_found`", body = ErrorBody),
        (status = 422, description = "an invalid request or pasted event", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn explain_event(
    tenant: Tenant,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<ExplanationDto>, ApiError> {
    let request = read_request(&body)?;
    let explained =
        explain(state.catalog.as_ref(), state.events.as_ref(), tenant.organization_id, &request)
            .await?;
    let event = &explained.event;
    let metrics: Vec<MetricExplanationDto> = explained
        .metrics
        .iter()
        .map(|m| metric_explanation(&m.metric, &m.explanation, event))
        .collect();
    let ingestion = match (&explained.stored, &explained.intake) {
        (Some(_), _) => IngestionCheckDto { status: "stored".into(), error: None },
        (None, Ok(())) => IngestionCheckDto { status: "would_be_accepted".into(), error: None },
        (None, Err(rejection)) => IngestionCheckDto {
            status: "would_be_rejected".into(),
            error: Some(RejectionDto {
                code: rejection.code.to_owned(),
                message: rejection.message.clone(),
            }),
        },
    };
    Ok(Json(ExplanationDto {
        event: ExplainedEventDto {
            transaction_id: event.transaction_id.clone(),
            code: event.code.clone(),
            customer: event.customer.clone(),
            timestamp: format_micros(&event.timestamp),
            properties: Value::Object(event.properties.clone()),
            sequence: explained.stored.map(|(sequence, _)| sequence),
            ingested_at: explained.stored.map(|(_, at)| format_micros(&at)),
        },
        ingestion,
        counts: metrics.iter().any(|m| m.counts),
        metrics,
    }))
}

fn metric_explanation(
    metric: &odometer_core::Metric,
    explanation: &EventExplanation,
    event: &odometer_core::event::Event,
) -> MetricExplanationDto {
    let spec = &metric.spec;
    let reason = explanation.reason(spec, event).map(|message| {
        let code = match &explanation.outcome {
            Outcome::Skipped(skip) => skip.code(),
            other => other.code(),
        };
        ExplainReasonDto { code: code.to_owned(), message }
    });
    let segment_keys: Vec<&str> = spec.segmentation.as_ref().map(|s| s.keys()).unwrap_or_default();
    let (placement, segment) = match &explanation.segment {
        Placement::NoSegmentation => ("none", Value::Null),
        Placement::Matched(values) => (
            "matched",
            Value::Object(
                segment_keys
                    .iter()
                    .map(|k| (*k).to_owned())
                    .zip(values.iter().map(|v| Value::String(v.clone())))
                    .collect(),
            ),
        ),
        Placement::Other => ("other", Value::String("other".into())),
        Placement::Dropped => ("dropped", Value::Null),
    };
    let (value, operation) = match &explanation.value {
        ValueReading::Counted => (Some("1".to_owned()), None),
        ValueReading::Number(v) => (Some(v.to_string()), None),
        ValueReading::Distinct { value, removes } => {
            (Some(value.clone()), Some(if *removes { "remove" } else { "add" }.to_owned()))
        }
        ValueReading::Skipped(_) | ValueReading::Sql => (None, None),
    };
    MetricExplanationDto {
        metric: ExplainedMetricDto {
            id: metric.id.to_string(),
            code: spec.code.clone(),
            name: spec.name.clone(),
            event_code: spec.event_code.clone(),
            aggregation: spec.aggregation.kind.as_str().to_owned(),
            revision: metric.revision,
            archived: metric.archived_at.is_some(),
        },
        outcome: explanation.outcome.code().to_owned(),
        counts: explanation.outcome.counts(),
        reason,
        reads_code: explanation.reads_code,
        filters: explanation
            .filters
            .iter()
            .map(|check| FilterCheckDto {
                property: check.filter.property.clone(),
                op: check.filter.op.as_str().to_owned(),
                values: check.filter.values.clone(),
                present: check.found.is_some(),
                found: check.found.clone().unwrap_or(Value::Null),
                passes: check.passes,
            })
            .collect(),
        failed_filter: match explanation.outcome {
            Outcome::FilteredOut { filter } => Some(filter),
            _ => explanation.filters.iter().position(|f| !f.passes),
        },
        segment: SegmentPlacementDto { placement: placement.to_owned(), segment },
        group_by: Value::Object(
            explanation
                .group_by
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().map_or(Value::Null, Value::String)))
                .collect::<Map<String, Value>>(),
        ),
        value,
        operation,
    }
}
