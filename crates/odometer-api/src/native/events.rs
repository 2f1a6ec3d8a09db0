//! `/v1/events`: batch and NDJSON ingestion with per-event outcomes, and reads of stored events.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use odometer_core::intake::{parse_timestamp, EventOutcome, EventRejection};
use odometer_store::ingest::{ingest, ingest_items, IngestResult, MAX_BATCH_EVENTS};
use odometer_store::EventListParams;
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;

use super::dto::{EventDto, IngestAnswerDto, IngestResultDto, ListDto, RejectionDto};
use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, PathParams, QueryParams, Tenant};
use super::{mapping, page_limit, EVENTS_BODY_LIMIT_BYTES};
use crate::AppState;

/// Events per call to the store while reading an NDJSON stream.
const NDJSON_CHUNK: usize = 1_000;

/// Query of the ingestion routes.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IngestQuery {
    /// All or nothing: if any event is rejected, none is stored.
    atomic: Option<bool>,
}

fn answer(results: Vec<IngestResult>) -> (StatusCode, Json<IngestAnswerDto>) {
    let mut dto = IngestAnswerDto {
        results: Vec::with_capacity(results.len()),
        accepted: 0,
        duplicates: 0,
        rejected: 0,
    };
    for result in results {
        match &result.outcome {
            EventOutcome::Accepted { .. } => dto.accepted += 1,
            EventOutcome::Duplicate { .. } => dto.duplicates += 1,
            EventOutcome::Rejected(_) => dto.rejected += 1,
        }
        dto.results.push(IngestResultDto {
            transaction_id: result.transaction_id,
            status: result.outcome.status().to_owned(),
            error: result
                .outcome
                .rejection()
                .map(|r| RejectionDto { code: r.code.to_owned(), message: r.message.clone() }),
        });
    }
    let status = if dto.rejected == 0 { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    (status, Json(dto))
}

/// Ingest events: `{"events": [...]}` (1 to 10,000) or a single event object.
///
/// Each event is answered in order: `accepted`, `duplicate` (the same transaction id and
/// content was stored before: a success, counted once) or `rejected` with a code
/// (`missing_field`, `invalid_timestamp`, `unknown_code`, `unknown_customer`, `invalid_value`,
/// `timestamp_in_future`, `transaction_id_conflict`, ...). 200 when nothing was rejected, 422
/// otherwise; the accepted events are stored unless `atomic=true`.
#[utoipa::path(post, path = "/v1/events", tag = "events", params(IngestQuery),
    request_body(content = Object, description = "`{\"events\": [event, ...]}` or one event `{\"transaction_id\", \"code\", \"customer\", \"timestamp\", \"properties\"}`"),
    responses(
        (status = 200, description = "every event accepted or duplicate", body = IngestAnswerDto),
        (status = 422, description = "some events rejected (see each result), or an empty or oversized batch", body = IngestAnswerDto),
        (status = 413, body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn ingest_events(
    tenant: Tenant,
    State(state): State<AppState>,
    QueryParams(query): QueryParams<IngestQuery>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<IngestAnswerDto>), ApiError> {
    let events: Vec<Value> = match body {
        Value::Object(mut map)
            if map.contains_key("events") && !map.contains_key("transaction_id") =>
        {
            match map.remove("events") {
                Some(Value::Array(items)) => items,
                _ => {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_type",
                        "events must be an array of events",
                    ))
                }
            }
        }
        Value::Object(map) => vec![Value::Object(map)],
        _ => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_type",
                "the body must be an event object or {\"events\": [...]}",
            ))
        }
    };
    check_batch_size(events.len())?;
    let results = ingest(
        state.catalog.as_ref(),
        state.events.as_ref(),
        tenant.organization_id,
        events,
        query.atomic.unwrap_or(false),
    )
    .await?;
    Ok(answer(results))
}

fn check_batch_size(count: usize) -> Result<(), ApiError> {
    if count == 0 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_batch",
            "a batch needs at least one event",
        ));
    }
    if count > MAX_BATCH_EVENTS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "batch_too_large",
            format!("a batch holds at most {MAX_BATCH_EVENTS} events, not {count}"),
        ));
    }
    Ok(())
}

/// Ingest newline-delimited events (one JSON event per line), for imports.
///
/// The body is read as a stream and stored in chunks, so memory stays bounded; the answer is
/// the same as `POST /v1/events`, one result per non-empty line. A line that is not JSON is
/// rejected with `malformed_json`. With `atomic=true` the whole body is checked before anything
/// is stored.
#[utoipa::path(post, path = "/v1/events/ndjson", tag = "events", params(IngestQuery),
    request_body(content = String, content_type = "application/x-ndjson"),
    responses(
        (status = 200, body = IngestAnswerDto),
        (status = 422, body = IngestAnswerDto),
        (status = 413, body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn ingest_ndjson(
    tenant: Tenant,
    State(state): State<AppState>,
    QueryParams(query): QueryParams<IngestQuery>,
    body: Body,
) -> Result<(StatusCode, Json<IngestAnswerDto>), ApiError> {
    use futures_util::StreamExt;

    let atomic = query.atomic.unwrap_or(false);
    let mut stream = body.into_data_stream();
    let mut pending = Vec::<u8>::new();
    let mut lines: Vec<Result<Value, EventRejection>> = Vec::new();
    let mut line_number = 0usize;
    let mut results: Vec<IngestResult> = Vec::new();
    let mut received = 0usize;
    loop {
        let next = stream.next().await;
        let finished = next.is_none();
        if let Some(bytes) = next {
            let bytes = bytes.map_err(|e| {
                ApiError::bad_request(
                    "unreadable_body",
                    format!("the request body could not be read: {e}"),
                )
            })?;
            received += bytes.len();
            if received > EVENTS_BODY_LIMIT_BYTES {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the request body is larger than {EVENTS_BODY_LIMIT_BYTES} bytes"),
                ));
            }
            pending.extend_from_slice(&bytes);
        }
        // Every complete line; at the end, also the last one without a newline.
        loop {
            let end = match pending.iter().position(|b| *b == b'\n') {
                Some(end) => end,
                None if finished && !pending.is_empty() => pending.len(),
                None => break,
            };
            let line: Vec<u8> = pending.drain(..end).collect();
            if !pending.is_empty() {
                pending.remove(0);
            }
            line_number += 1;
            let text = String::from_utf8_lossy(&line);
            if text.trim().is_empty() {
                continue;
            }
            lines.push(serde_json::from_str::<Value>(&text).map_err(|e| {
                EventRejection::new(
                    "malformed_json",
                    format!("line {line_number} is not valid JSON: {e}"),
                )
            }));
        }
        // Without `atomic`, store as we go so memory stays bounded; with it, all at the end.
        if (!atomic && lines.len() >= NDJSON_CHUNK) || (finished && !lines.is_empty()) {
            let items: Vec<Result<Value, EventRejection>> = std::mem::take(&mut lines);
            results.extend(
                ingest_items(
                    state.catalog.as_ref(),
                    state.events.as_ref(),
                    tenant.organization_id,
                    items,
                    atomic,
                )
                .await?,
            );
        }
        if finished {
            break;
        }
    }
    if results.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_batch",
            "the body holds no events",
        ));
    }
    Ok(answer(results))
}

/// Query of `GET /v1/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventListQuery {
    /// A customer's external id.
    customer: Option<String>,
    /// An event code.
    code: Option<String>,
    /// Event timestamps at or after (RFC 3339 or Unix seconds).
    from: Option<String>,
    /// Event timestamps before.
    to: Option<String>,
    /// 1 to 1000; default 100.
    limit: Option<u32>,
    cursor: Option<String>,
}

fn instant(
    name: &str,
    text: Option<String>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    text.map(|t| {
        parse_timestamp(&Value::String(t)).map_err(|e| {
            ApiError::bad_request("invalid_timestamp", format!("{name}: {}", e.message))
        })
    })
    .transpose()
}

/// List stored events in ingestion order.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventListQuery),
    responses((status = 200, body = ListDto<EventDto>), (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list_events(
    tenant: Tenant,
    State(state): State<AppState>,
    QueryParams(query): QueryParams<EventListQuery>,
) -> Result<Json<ListDto<EventDto>>, ApiError> {
    let params = EventListParams {
        customer: query.customer,
        code: query.code,
        from: instant("from", query.from)?,
        to: instant("to", query.to)?,
        limit: page_limit(query.limit)?,
        cursor: query.cursor,
    };
    let page = state.events.list_events(tenant.organization_id, &params).await?;
    Ok(Json(mapping::page(page, mapping::event)))
}

/// Query of `GET /v1/events/{transaction_id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventGetQuery {
    /// The customer's external id (a transaction id is unique per customer).
    customer: String,
}

/// Get one stored event by customer and transaction id.
#[utoipa::path(get, path = "/v1/events/{transaction_id}", tag = "events",
    params(("transaction_id" = String, Path), EventGetQuery),
    responses((status = 200, body = EventDto), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get_event(
    tenant: Tenant,
    State(state): State<AppState>,
    PathParams(transaction_id): PathParams<String>,
    QueryParams(query): QueryParams<EventGetQuery>,
) -> Result<Json<EventDto>, ApiError> {
    let event = state
        .events
        .get_event(tenant.organization_id, &query.customer, &transaction_id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "event_not_found",
                format!("no event '{transaction_id}' for customer '{}'", query.customer),
            )
        })?;
    Ok(Json(mapping::event(&event)))
}
