//! `/zenskar/rawmetric`: usage tables (typed schemas of usage rows under an `api_slug`).

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use odometer_store::usage_tables::{valid_field_name, valid_slug, FieldType, UsageTable};
use serde_json::{json, Value};

use super::error::{FieldError, ZenskarError};
use super::extract::{ilike, limit, query_map, Body, Organisation, Path};
use super::mapping::raw_metric_json;
use crate::AppState;

/// The `dataschema` document as sent, and the data fields it declares.
type Schema = (Value, Vec<(String, FieldType)>);

/// Reads `dataschema`: `{"customer_id": "String", "timestamp": "DateTime64", "data": {field:
/// type}}`, as an object or as JSON text.
fn read_schema(value: &Value) -> Result<Schema, Vec<FieldError>> {
    let invalid = |loc: &[&str], msg: String| vec![FieldError::new(loc, msg, "value_error")];
    let doc = match value {
        Value::String(text) => serde_json::from_str::<Value>(text)
            .map_err(|_| invalid(&["body", "dataschema"], "is not a JSON object".to_owned()))?,
        other => other.clone(),
    };
    let Some(object) = doc.as_object() else {
        return Err(invalid(&["body", "dataschema"], "Input should be a valid dictionary".into()));
    };
    for (member, expected) in [("customer_id", "String"), ("timestamp", "DateTime64")] {
        match object.get(member).and_then(Value::as_str) {
            Some(t) if FieldType::parse(t).is_some_and(|t| t.as_str() == expected) => {}
            None => {}
            Some(other) => {
                return Err(invalid(
                    &["body", "dataschema", member],
                    format!("must be {expected}, not {other}"),
                ))
            }
        }
    }
    let mut fields = Vec::new();
    match object.get("data") {
        None | Some(Value::Null) => {}
        Some(Value::Object(data)) => {
            for (name, t) in data {
                if !valid_field_name(name) {
                    return Err(invalid(
                        &["body", "dataschema", "data", name],
                        "a field name is letters, digits and '_' (not starting with a digit)"
                            .into(),
                    ));
                }
                let Some(t) = t.as_str().and_then(FieldType::parse) else {
                    return Err(invalid(
                        &["body", "dataschema", "data", name],
                        "the type must be one of String, Int64, Float64, Date32, DateTime64, \
                         UUID, Bool"
                            .into(),
                    ));
                };
                if fields.iter().any(|(f, _): &(String, FieldType)| f.eq_ignore_ascii_case(name)) {
                    return Err(invalid(
                        &["body", "dataschema", "data", name],
                        "field names must differ in more than case".into(),
                    ));
                }
                fields.push((name.clone(), t));
            }
        }
        Some(_) => {
            return Err(invalid(
                &["body", "dataschema", "data"],
                "Input should be a valid dictionary".into(),
            ))
        }
    }
    Ok((value.clone(), fields))
}

pub async fn create(
    State(state): State<AppState>,
    Organisation(org): Organisation,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ZenskarError> {
    let Value::Object(map) = &body.value else {
        return Err(ZenskarError::invalid(
            &["body"],
            "Input should be a valid dictionary or object to extract fields from",
            "model_attributes_type",
        ));
    };
    let mut errors = Vec::new();
    let mut string = |member: &str, required: bool| match map.get(member) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        None | Some(Value::Null) if !required => None,
        None | Some(Value::Null) => {
            errors.push(FieldError::new(&["body", member], "Field required", "missing"));
            None
        }
        Some(_) => {
            errors.push(FieldError::new(
                &["body", member],
                "Input should be a non-empty string",
                "string_type",
            ));
            None
        }
    };
    let name = string("name", true);
    let slug = string("api_slug", true);
    let description = string("description", false);
    if let Some(slug) = &slug {
        if !valid_slug(slug) {
            errors.push(FieldError::new(
                &["body", "api_slug"],
                "an api_slug is lowercase letters, digits and '_', starting with a letter (at \
                 most 63 characters; not 'events')",
                "value_error",
            ));
        }
    }
    let schema = match map.get("dataschema") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new(&["body", "dataschema"], "Field required", "missing"));
            None
        }
        Some(value) => match read_schema(value) {
            Ok(schema) => Some(schema),
            Err(mut more) => {
                errors.append(&mut more);
                None
            }
        },
    };
    let (Some(name), Some(slug), Some((dataschema, fields)), true) =
        (name, slug, schema, errors.is_empty())
    else {
        return Err(ZenskarError::Validation(errors));
    };
    let table = UsageTable {
        id: uuid::Uuid::now_v7().to_string(),
        name,
        api_slug: slug,
        description,
        fields,
        dataschema,
        created_at: odometer_core::time::now(),
    };
    if !state.events.create_usage_table(org, table.clone()).await? {
        return Err(ZenskarError::Status(
            StatusCode::CONFLICT,
            format!("a raw metric with api_slug '{}' already exists", table.api_slug),
        ));
    }
    Ok((StatusCode::CREATED, Json(raw_metric_json(&table))))
}

pub async fn list(
    State(state): State<AppState>,
    Organisation(org): Organisation,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ZenskarError> {
    let query = query_map(raw.as_deref())?;
    let limit = limit(&query)?;
    let mut tables = state.events.usage_tables(org).await?;
    tables.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(cursor) = query.get("cursor").filter(|c| !c.is_empty()) {
        tables.retain(|t| t.id.as_str() > cursor.as_str());
    }
    for (member, pick) in [("name__ilike", 0), ("api_slug__ilike", 1)] {
        if let Some(pattern) = query.get(member) {
            if pattern.chars().count() > 100 {
                return Err(ZenskarError::invalid(
                    &["query", member],
                    "String should have at most 100 characters",
                    "string_too_long",
                ));
            }
            tables.retain(|t| ilike(if pick == 0 { &t.name } else { &t.api_slug }, pattern));
        }
    }
    let next = (tables.len() > limit).then(|| tables[limit - 1].id.clone());
    tables.truncate(limit);
    let results: Vec<Value> = tables.iter().map(raw_metric_json).collect();
    Ok(Json(json!({"results": results, "next_cursor": next})))
}

pub async fn get(
    State(state): State<AppState>,
    Organisation(org): Organisation,
    Path(id): Path<String>,
) -> Result<Json<Value>, ZenskarError> {
    let tables = state.events.usage_tables(org).await?;
    let table =
        tables.iter().find(|t| t.id == id).ok_or_else(|| ZenskarError::not_found("Raw metric"))?;
    Ok(Json(raw_metric_json(table)))
}

pub async fn get_by_slug(
    State(state): State<AppState>,
    Organisation(org): Organisation,
    Path(slug): Path<String>,
) -> Result<Json<Value>, ZenskarError> {
    let tables = state.events.usage_tables(org).await?;
    let table = tables
        .iter()
        .find(|t| t.api_slug == slug)
        .ok_or_else(|| ZenskarError::not_found("Raw metric"))?;
    Ok(Json(raw_metric_json(table)))
}
