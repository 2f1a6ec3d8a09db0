//! `GET /v1/usage`: how much a customer (or every customer: the invoice run) used of a metric
//! in a period, per window and group (semantics sections 4 and 5).

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use odometer_core::intake::parse_timestamp;
use odometer_core::usage::{UsageQuery, WindowSize, DEFAULT_GROUP_LIMIT};
use odometer_core::{Metric, MetricSpec};
use odometer_store::metrics::{find_metric, spec_at};
use odometer_store::{CustomerListParams, PathChoice, UsageAnswer, UsageQueryError};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;

use super::dto::{ListDto, UsageDto};
use super::error::{ApiError, ErrorBody};
use super::extract::{QueryParams, Tenant};
use super::{mapping, page_limit};
use crate::AppState;

/// Query of `GET /v1/usage`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// The metric's id or code.
    metric: String,
    /// A customer's external id; leave out for every customer (paginated: the invoice run).
    customer: Option<String>,
    /// Start of the period, inclusive (RFC 3339 or Unix seconds).
    from: String,
    /// End of the period, exclusive.
    to: String,
    /// `none` (default), `minute`, `hour`, `day` or `month`.
    window: Option<String>,
    /// IANA zone windows align to; default `UTC`.
    timezone: Option<String>,
    /// Comma-separated subset of the metric's `group_by` keys; default all of them.
    group_by: Option<String>,
    /// Count only events ingested by then, with the metric revision current then.
    as_of: Option<String>,
    /// The metric revision to use (default: the latest, or the one current at `as_of`).
    revision: Option<u32>,
    /// Without `customer`: customers per page, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// Without `customer`: the previous page's `next_cursor`.
    cursor: Option<String>,
}

fn instant(name: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    parse_timestamp(&Value::String(text.to_owned()))
        .map_err(|e| ApiError::bad_request("invalid_timestamp", format!("{name}: {}", e.message)))
}

pub(super) fn usage_error(err: UsageQueryError) -> ApiError {
    match err {
        UsageQueryError::Store(store) => store.into(),
        UsageQueryError::Usage(usage) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, usage.code(), usage.to_string())
        }
    }
}

/// The metric definition a query uses: `revision=N`, else the one current at `as_of`, else
/// the latest (semantics 6.2).
async fn revision_for(
    state: &AppState,
    tenant: Tenant,
    metric: &Metric,
    revision: Option<u32>,
    as_of: Option<DateTime<Utc>>,
) -> Result<(u32, MetricSpec), ApiError> {
    spec_at(state.catalog.as_ref(), tenant.organization_id, metric, revision, as_of)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "no_revision_at_as_of",
                "the metric did not exist yet at as_of",
            )
        })
}

/// Usage of one metric for one customer, or for every customer (paginated).
///
/// With `customer`, the answer is one result; without it, `{"data": [result, ...],
/// "next_cursor"}` over the organization's customers.
#[utoipa::path(get, path = "/v1/usage", tag = "usage", params(UsageParams),
    responses(
        (status = 200, description = "one customer's usage (with `customer`); every customer's, paginated, without", body = UsageDto,
            headers(("odometer-usage-path" = String, description = "how the answer was computed: `index`, `index+edges`, `events; reason=...`, or `mixed` for a page whose answers differ (see each `answered_from`)"))),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "`invalid_period`, `unknown_group_key`, `too_many_groups`, `too_many_windows`, `invalid_timezone`, ...", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn get_usage(
    tenant: Tenant,
    State(state): State<AppState>,
    QueryParams(params): QueryParams<UsageParams>,
) -> Result<([(HeaderName, HeaderValue); 1], Json<Value>), ApiError> {
    let from = instant("from", &params.from)?;
    let to = instant("to", &params.to)?;
    let as_of = params.as_of.as_deref().map(|t| instant("as_of", t)).transpose()?;
    let window = match params.window.as_deref() {
        None => WindowSize::None,
        Some(text) => WindowSize::parse(text).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!("window must be none, minute, hour, day or month, not '{text}'"),
            )
        })?,
    };
    let timezone_name = params.timezone.clone().unwrap_or_else(|| "UTC".to_owned());
    let timezone: chrono_tz::Tz = timezone_name.parse().map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_timezone",
            format!("'{timezone_name}' is not an IANA time zone"),
        )
    })?;
    let metric =
        find_metric(state.catalog.as_ref(), tenant.organization_id, &params.metric).await?;
    let (revision, spec) = revision_for(&state, tenant, &metric, params.revision, as_of).await?;
    let group_by = match params.group_by.as_deref() {
        None => spec.group_by.clone(),
        Some("") => Vec::new(),
        Some(list) => list.split(',').map(|k| k.trim().to_owned()).collect(),
    };
    let query = UsageQuery {
        from,
        to,
        window,
        timezone,
        group_by,
        as_of,
        group_limit: DEFAULT_GROUP_LIMIT,
    };
    let header = mapping::UsageHeader { metric: &metric, revision, spec: &spec, query: &query };

    if let Some(customer) = params.customer {
        if params.limit.is_some() || params.cursor.is_some() {
            return Err(ApiError::bad_request(
                "invalid_query",
                "limit and cursor apply only without customer",
            ));
        }
        // An unknown customer is a 404, not an empty answer.
        state.catalog.get_customer(tenant.organization_id, &customer).await?;
        let customers = [customer];
        let answers = state
            .events
            .usage_answers(tenant.organization_id, &customers, &spec, &query, PathChoice::Any)
            .await
            .map_err(usage_error)?;
        crate::telemetry::record_usage_answers(&answers);
        let answer = answers
            .first()
            .ok_or_else(|| ApiError::internal("the event store answered no usage"))?;
        let dto: UsageDto = mapping::usage(&header, &customers[0], answer);
        let body = serde_json::to_value(dto).map_err(|e| ApiError::internal(e.to_string()))?;
        return Ok((path_header(&answers), Json(body)));
    }
    let page = state
        .catalog
        .list_customers(
            tenant.organization_id,
            &CustomerListParams {
                search: None,
                limit: page_limit(params.limit)?,
                cursor: params.cursor,
            },
        )
        .await?;
    let customers: Vec<String> = page.items.iter().map(|c| c.spec.external_id.clone()).collect();
    let answers = state
        .events
        .usage_answers(tenant.organization_id, &customers, &spec, &query, PathChoice::Any)
        .await
        .map_err(usage_error)?;
    crate::telemetry::record_usage_answers(&answers);
    let data: Vec<UsageDto> = customers
        .iter()
        .zip(&answers)
        .map(|(customer, answer)| mapping::usage(&header, customer, answer))
        .collect();
    let list = ListDto { data, next_cursor: page.next_cursor };
    let body = serde_json::to_value(list).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((path_header(&answers), Json(body)))
}

/// The response header naming how the answers were computed: the one path they share, or
/// `mixed` (each answer's `answered_from` says).
pub const USAGE_PATH_HEADER: &str = "odometer-usage-path";

fn path_header(answers: &[UsageAnswer]) -> [(HeaderName, HeaderValue); 1] {
    let text = match answers.split_first() {
        None => "none".to_owned(),
        Some((first, rest)) if rest.iter().all(|a| a.path == first.path) => first.path.describe(),
        Some(_) => "mixed".to_owned(),
    };
    let value = HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("mixed"));
    [(HeaderName::from_static(USAGE_PATH_HEADER), value)]
}
