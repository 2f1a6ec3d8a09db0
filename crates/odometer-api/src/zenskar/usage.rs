//! `POST /zenskar/usage/{api_slug}`: usage rows (one object or a list) for a raw metric, each
//! stored as an event of code `api_slug` in one all-or-nothing append. With an
//! `Idempotency-Key`, rows get transaction ids derived from the key and their index (so a
//! retry is stored once whatever happens), the first answer is kept and replayed to a retry with
//! the same body, and the same key with another body is refused.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use odometer_core::event::{Event, EventOutcome};
use odometer_core::intake::parse_timestamp;
use odometer_store::usage_tables::{FieldType, IdempotentResponse, UsageTable};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::error::{FieldError, ZenskarError};
use super::extract::{Body, Organisation, Path};
use crate::AppState;

/// The most rows one request may carry.
const MAX_ROWS: usize = 10_000;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn ingest(
    State(state): State<AppState>,
    Organisation(org): Organisation,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ZenskarError> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k) if !k.trim().is_empty() && k.len() <= 255 => Some(k.trim().to_owned()),
            _ => {
                return Err(ZenskarError::invalid(
                    &["header", "Idempotency-Key"],
                    "must be 1 to 255 visible characters",
                    "value_error",
                ))
            }
        },
    };
    let request_hash = hex(&Sha256::digest(
        format!("{slug}\n{}", serde_json::to_string(&body.value).unwrap_or_default()).as_bytes(),
    ));
    if let Some(key) = &key {
        if let Some(kept) = state.events.idempotent_response(org, key).await? {
            return replay(kept, &request_hash);
        }
    }
    let tables = state.events.usage_tables(org).await?;
    let table = tables
        .iter()
        .find(|t| t.api_slug == slug)
        .ok_or_else(|| ZenskarError::not_found("Raw metric"))?;
    let rows: Vec<&Value> = match &body.value {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    if rows.is_empty() || rows.len() > MAX_ROWS {
        return Err(ZenskarError::invalid(
            &["body"],
            format!("send 1 to {MAX_ROWS} rows"),
            "value_error",
        ));
    }
    let key_hash = key.as_ref().map(|k| hex(&Sha256::digest(k.as_bytes()))[..32].to_owned());
    let mut events = Vec::with_capacity(rows.len());
    let mut errors = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let transaction_id = match &key_hash {
            Some(h) => format!("zk-{h}-{i}"),
            None => format!("zk-{}", uuid::Uuid::now_v7().simple()),
        };
        match read_row(table, row, i, rows.len() > 1 || body.value.is_array()) {
            Ok((customer, timestamp, properties)) => events.push(Event {
                transaction_id,
                code: slug.clone(),
                customer,
                timestamp,
                properties,
            }),
            Err(mut more) => errors.append(&mut more),
        }
    }
    if !errors.is_empty() {
        return Err(ZenskarError::Validation(errors));
    }
    let outcomes = state.events.append(org, events, true).await?;
    let (mut accepted, mut duplicates) = (0, 0);
    for outcome in &outcomes {
        match outcome {
            EventOutcome::Accepted { .. } => accepted += 1,
            EventOutcome::Duplicate { .. } => duplicates += 1,
            EventOutcome::Rejected(rejection) => {
                return Err(ZenskarError::Status(StatusCode::CONFLICT, rejection.to_string()));
            }
        }
    }
    let answer = json!({"status": "success", "api_slug": slug, "rows": outcomes.len(),
        "accepted": accepted, "duplicates": duplicates});
    let response = IdempotentResponse {
        request_hash: request_hash.clone(),
        status: 200,
        body: answer.to_string(),
    };
    let response = match &key {
        Some(key) => state.events.keep_idempotent_response(org, key, response).await?,
        None => response,
    };
    replay(response, &request_hash)
}

fn replay(kept: IdempotentResponse, request_hash: &str) -> Result<Response, ZenskarError> {
    if kept.request_hash != request_hash {
        return Err(ZenskarError::Status(
            StatusCode::CONFLICT,
            "this Idempotency-Key was already used with a different request".to_owned(),
        ));
    }
    let status = StatusCode::from_u16(kept.status).unwrap_or(StatusCode::OK);
    let body: Value = serde_json::from_str(&kept.body).unwrap_or(Value::Null);
    Ok((status, axum::Json(body)).into_response())
}

type Row = (String, chrono::DateTime<chrono::Utc>, Map<String, Value>);

fn read_row(
    table: &UsageTable,
    row: &Value,
    index: usize,
    listed: bool,
) -> Result<Row, Vec<FieldError>> {
    let at = |path: &[&str]| -> Vec<Value> {
        let mut loc = vec![json!("body")];
        if listed {
            loc.push(json!(index));
        }
        loc.extend(path.iter().map(|p| json!(p)));
        loc
    };
    let error = |path: &[&str], msg: String, kind: &str| FieldError {
        loc: at(path),
        msg,
        kind: kind.to_owned(),
    };
    let Value::Object(map) = row else {
        return Err(vec![error(&[], "Input should be a valid dictionary".into(), "dict_type")]);
    };
    let mut errors = Vec::new();
    let customer = match map.get("customer_id") {
        Some(Value::String(c)) if !c.is_empty() && c.len() <= 255 => Some(c.clone()),
        None | Some(Value::Null) => {
            errors.push(error(&["customer_id"], "Field required".into(), "missing"));
            None
        }
        Some(_) => {
            errors.push(error(
                &["customer_id"],
                "Input should be a string of 1 to 255 characters".into(),
                "string_type",
            ));
            None
        }
    };
    let timestamp = match map.get("timestamp") {
        None | Some(Value::Null) => {
            errors.push(error(&["timestamp"], "Field required".into(), "missing"));
            None
        }
        Some(value) => match parse_timestamp(value) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(error(&["timestamp"], e.to_string(), "datetime_parsing"));
                None
            }
        },
    };
    let mut properties = Map::new();
    match map.get("data") {
        None | Some(Value::Null) => {}
        Some(Value::Object(data)) => {
            for (name, value) in data {
                let Some((_, t)) = table.fields.iter().find(|(f, _)| f == name) else {
                    errors.push(error(
                        &["data", name],
                        "is not a field of this raw metric's dataschema".into(),
                        "extra_forbidden",
                    ));
                    continue;
                };
                match typed(*t, value) {
                    Ok(v) => {
                        properties.insert(name.clone(), v);
                    }
                    Err(msg) => errors.push(error(&["data", name], msg, "value_error")),
                }
            }
        }
        Some(_) => {
            errors.push(error(&["data"], "Input should be a valid dictionary".into(), "dict_type"))
        }
    }
    match (customer, timestamp, errors.is_empty()) {
        (Some(c), Some(t), true) => Ok((c, t, properties)),
        _ => Err(errors),
    }
}

/// A data value checked against its declared type, as stored.
fn typed(t: FieldType, value: &Value) -> Result<Value, String> {
    let fail = || Err(format!("Input should be a valid {}", t.as_str()));
    if value.is_null() {
        return Ok(Value::Null);
    }
    match t {
        FieldType::String => value.as_str().map_or_else(fail, |_| Ok(value.clone())),
        FieldType::Int64 => match value {
            Value::Number(n) if n.as_i64().is_some() => Ok(value.clone()),
            Value::String(s) if s.parse::<i64>().is_ok() => Ok(value.clone()),
            _ => fail(),
        },
        FieldType::Float64 => match value {
            Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => Ok(value.clone()),
            Value::String(s) if s.parse::<f64>().is_ok_and(f64::is_finite) => Ok(value.clone()),
            _ => fail(),
        },
        FieldType::Date32 => match value.as_str() {
            Some(s) if chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() => {
                Ok(value.clone())
            }
            _ => fail(),
        },
        FieldType::DateTime64 => match value.as_str() {
            Some(s)
                if chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").is_ok()
                    || chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").is_ok() =>
            {
                Ok(value.clone())
            }
            _ => fail(),
        },
        FieldType::Uuid => match value.as_str() {
            Some(s) if uuid::Uuid::parse_str(s).is_ok() => Ok(value.clone()),
            _ => fail(),
        },
        FieldType::Bool => value.as_bool().map_or_else(fail, |_| Ok(value.clone())),
    }
}
