//! `/api/v1/usage/*`: usage per metric for a customer, a subscription, or all customers
//! together, over `[start_date, end_date)` at UTC midnights. Values come from the engine:
//! unit conversion and its rounding applied, `total_value` computed by the aggregation over
//! all the period's events (semantics 4.9), not summed from the groups.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use odometer_core::billing_period::billing_period;
use odometer_core::engine::compute_usage;
use odometer_core::usage::{Segment, UsageQuery, UsageResult, WindowSize, DEFAULT_GROUP_LIMIT};
use odometer_core::{time, Metric, OrganizationId, SubscriptionId};
use odometer_store::{ArchivedFilter, EventListParams, StoreError, SubscriptionListParams};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::MeteroidError;
use super::extract::{PathParam, QueryParams, Tenant};
use super::{customers, metrics};
use crate::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    start_date: Option<String>,
    end_date: Option<String>,
    metric_id: Option<String>,
}

fn date(name: &str, text: Option<&str>) -> Result<Option<NaiveDate>, MeteroidError> {
    text.map(|t| {
        NaiveDate::parse_from_str(t, "%Y-%m-%d").map_err(|_| {
            MeteroidError::bad_request(format!("{name} must be YYYY-MM-DD, not '{t}'"))
        })
    })
    .transpose()
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

struct Period {
    start: NaiveDate,
    end: NaiveDate,
}

fn required_period(params: &UsageParams) -> Result<Period, MeteroidError> {
    let start = date("start_date", params.start_date.as_deref())?
        .ok_or_else(|| MeteroidError::bad_request("start_date is required"))?;
    let end = date("end_date", params.end_date.as_deref())?
        .ok_or_else(|| MeteroidError::bad_request("end_date is required"))?;
    checked(Period { start, end })
}

fn checked(period: Period) -> Result<Period, MeteroidError> {
    if period.start >= period.end {
        return Err(MeteroidError::bad_request("start_date must be before end_date"));
    }
    Ok(period)
}

fn query(period: &Period, metric: &Metric) -> UsageQuery {
    UsageQuery {
        from: midnight(period.start),
        to: midnight(period.end),
        window: WindowSize::None,
        timezone: chrono_tz::UTC,
        group_by: metric.spec.group_by.clone(),
        as_of: None,
        group_limit: DEFAULT_GROUP_LIMIT,
    }
}

/// The metrics asked about: `metric_id`, else every active metric this dialect shows.
async fn metrics_asked(
    state: &AppState,
    org: OrganizationId,
    metric_id: Option<&str>,
) -> Result<Vec<Metric>, MeteroidError> {
    match metric_id {
        Some(id) => Ok(vec![metrics::find_visible(state.catalog.as_ref(), org, id).await?.0]),
        None => Ok(metrics::visible_metrics(state.catalog.as_ref(), org, ArchivedFilter::Active)
            .await?
            .into_iter()
            .map(|(m, _)| m)
            .collect()),
    }
}

fn decimal(d: Decimal) -> Value {
    json!(d.normalize().to_string())
}

/// One `MetricUsage`: the period's only window, its total and its groups with their
/// dimensions (segmentation keys and the usage group key).
fn metric_usage(metric: &Metric, result: &UsageResult) -> Value {
    let spec = &metric.spec;
    let keys: Vec<&str> = spec.segmentation.as_ref().map(|s| s.keys()).unwrap_or_default();
    let mut total = Decimal::ZERO;
    let mut grouped = Vec::new();
    if let Some(window) = result.windows.first() {
        total = window.total.unwrap_or(Decimal::ZERO);
        for group in &window.groups {
            let Some(value) = group.value else { continue };
            let mut dimensions = Map::new();
            if let Segment::Matched(values) = &group.key.segment {
                for (k, v) in keys.iter().zip(values) {
                    dimensions.insert((*k).to_owned(), json!(v));
                }
            }
            for (k, v) in spec.group_by.iter().zip(&group.key.group_by) {
                if let Some(v) = v {
                    dimensions.insert(k.clone(), json!(v));
                }
            }
            grouped.push(json!({"value": decimal(value), "dimensions": dimensions}));
        }
    }
    json!({
        "metric_id": metric.id.to_string(),
        "metric_name": spec.name,
        "metric_code": spec.event_code,
        "total_value": decimal(total),
        "grouped_usage": grouped,
    })
}

fn response(period: &Period, usage: Vec<Value>) -> Json<Value> {
    Json(json!({
        "period_start": period.start.to_string(),
        "period_end": period.end.to_string(),
        "usage": usage,
    }))
}

async fn customer_usage(
    state: &AppState,
    org: OrganizationId,
    customer: &str,
    period: &Period,
    metrics: &[Metric],
) -> Result<Vec<Value>, MeteroidError> {
    let mut usage = Vec::with_capacity(metrics.len());
    for metric in metrics {
        let result =
            state.events.usage(org, customer, &metric.spec, &query(period, metric)).await?;
        usage.push(metric_usage(metric, &result));
    }
    Ok(usage)
}

pub async fn by_customer(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    PathParam(id_or_alias): PathParam,
    QueryParams(params): QueryParams<UsageParams>,
) -> Result<Json<Value>, MeteroidError> {
    let period = required_period(&params)?;
    let customer = customers::resolve(state.catalog.as_ref(), org, &id_or_alias)
        .await?
        .ok_or_else(|| MeteroidError::not_found(format!("customer '{id_or_alias}' not found")))?;
    let metrics = metrics_asked(&state, org, params.metric_id.as_deref()).await?;
    let usage = customer_usage(&state, org, &customer.spec.external_id, &period, &metrics).await?;
    Ok(response(&period, usage))
}

/// Usage of every customer together: one aggregation over all the organization's events of
/// the metric's code in the period (so a MAX is the largest event of anyone, a COUNT_DISTINCT
/// counts a value once across customers).
pub async fn summary(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    QueryParams(params): QueryParams<UsageParams>,
) -> Result<Json<Value>, MeteroidError> {
    let period = required_period(&params)?;
    let metrics = metrics_asked(&state, org, params.metric_id.as_deref()).await?;
    let mut usage = Vec::with_capacity(metrics.len());
    for metric in &metrics {
        let q = query(&period, metric);
        let mut list = EventListParams {
            customer: None,
            code: Some(metric.spec.event_code.clone()),
            from: Some(q.from),
            to: Some(q.to),
            limit: 1000,
            cursor: None,
        };
        let mut events = Vec::new();
        loop {
            let page = state.events.list_events(org, &list).await?;
            events.extend(page.items);
            match page.next_cursor {
                Some(next) => list.cursor = Some(next),
                None => break,
            }
        }
        let result = compute_usage(&metric.spec, &events, &q)
            .map_err(|e| MeteroidError::bad_request(e.to_string()))?;
        usage.push(metric_usage(metric, &result));
    }
    Ok(response(&period, usage))
}

/// Usage of a subscription's customer for the metrics its plan charges.
pub async fn by_subscription(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    PathParam(id): PathParam,
    QueryParams(params): QueryParams<UsageParams>,
) -> Result<Json<Value>, MeteroidError> {
    let subscription = find_subscription(&state, org, &id).await?;
    let plan = state.catalog.get_plan(org, subscription.spec.plan_id).await?;
    // Without dates: the current billing period, else (not started, or ended) from the
    // subscription's start to tomorrow, as Meteroid does.
    let current = billing_period(&subscription.schedule(plan.spec.interval), time::now()).ok();
    let start = match date("start_date", params.start_date.as_deref())? {
        Some(d) => d,
        None => current
            .as_ref()
            .map_or(subscription.spec.started_at.date_naive(), |p| p.from.date_naive()),
    };
    let end = match date("end_date", params.end_date.as_deref())? {
        Some(d) => d,
        None => current
            .as_ref()
            .map_or((time::now() + Duration::days(1)).date_naive(), |p| p.to.date_naive()),
    };
    let period = checked(Period { start, end })?;
    let charged = plan.spec.metric_ids();
    let metrics: Vec<Metric> = match params.metric_id.as_deref() {
        Some(metric_id) => {
            let metric = metrics::find_visible(state.catalog.as_ref(), org, metric_id).await?.0;
            if !charged.contains(&metric.id) {
                return Err(MeteroidError::bad_request(format!(
                    "the subscription's plan does not charge metric '{metric_id}'"
                )));
            }
            vec![metric]
        }
        None => {
            let mut out = Vec::new();
            for metric_id in charged {
                let metric = state.catalog.get_metric(org, metric_id).await?;
                if super::mapping::metric_view(&metric).is_some() {
                    out.push(metric);
                }
            }
            out
        }
    };
    let usage = customer_usage(&state, org, &subscription.spec.customer, &period, &metrics).await?;
    Ok(response(&period, usage))
}

/// A subscription by its `sub_` id (or its external id).
pub(super) async fn find_subscription(
    state: &AppState,
    org: OrganizationId,
    id: &str,
) -> Result<odometer_core::Subscription, MeteroidError> {
    let not_found = || MeteroidError::not_found(format!("subscription '{id}' not found"));
    match state.catalog.get_subscription(org, id).await {
        Ok(s) => return Ok(s),
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let Some(wanted) = SubscriptionId::parse(id) else { return Err(not_found()) };
    let mut params = SubscriptionListParams {
        customer: None,
        plan_id: None,
        status: None,
        limit: 1000,
        cursor: None,
    };
    loop {
        let page = state.catalog.list_subscriptions(org, &params).await?;
        if let Some(found) = page.items.into_iter().find(|s| s.id == wanted) {
            return Ok(found);
        }
        match page.next_cursor {
            Some(next) => params.cursor = Some(next),
            None => return Err(not_found()),
        }
    }
}
