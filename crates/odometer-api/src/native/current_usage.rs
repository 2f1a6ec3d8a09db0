//! `GET /v1/subscriptions/{external_id}/usage`: the current billing period of a subscription,
//! per charge and per bucket: units, events, amount.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use odometer_core::intake::parse_timestamp;
use odometer_core::time::format_micros;
use odometer_store::billing::{current_usage, BillingError, CurrentUsage};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{PathParams, QueryParams, Tenant};
use crate::AppState;

/// Query of the current usage route.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CurrentUsageParams {
    /// Answer as of this instant (RFC 3339 or Unix seconds): the billing period containing
    /// it, the events ingested by then, each metric's revision current then. Default: now.
    /// Every answer reports its `as_of`, so it can be asked for again and reproduced exactly.
    as_of: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IdAndCodeDto {
    pub id: String,
    pub code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChargeMetricDto {
    pub id: String,
    pub code: String,
    /// The revision the usage was computed with.
    pub revision: u32,
}

/// The charge filter a bucket belongs to.
#[derive(Debug, Serialize, ToSchema)]
pub struct BucketFilterDto {
    /// Its position among the charge's filters, from 0.
    pub index: usize,
    pub values: BTreeMap<String, Vec<String>>,
    pub invoice_display_name: Option<String>,
}

/// One bucket (and pricing group) of a charge.
#[derive(Debug, Serialize, ToSchema)]
pub struct BucketUsageDto {
    /// `null`: the default bucket (events matching none of the filters).
    pub filter: Option<BucketFilterDto>,
    /// The pricing group: each pricing group key's value (`null` when absent).
    pub group: BTreeMap<String, Option<String>>,
    pub units: String,
    pub events_count: u64,
    /// Rounded half-up to the currency's minor unit.
    pub amount: String,
    /// How the amount was reached (tiers, packages, percentage parts).
    #[schema(value_type = Object)]
    pub details: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChargeUsageDto {
    pub id: String,
    pub metric: ChargeMetricDto,
    pub charge_model: String,
    pub invoice_display_name: Option<String>,
    pub units: String,
    pub events_count: u64,
    pub amount: String,
    pub buckets: Vec<BucketUsageDto>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageSubscriptionDto {
    pub external_id: String,
    pub customer: String,
    pub plan: IdAndCodeDto,
}

/// A subscription's usage in its current billing period.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrentUsageDto {
    pub subscription: UsageSubscriptionDto,
    pub currency: String,
    /// The zone the billing period follows.
    pub timezone: String,
    /// The billing period, `[from, to)`.
    pub from: String,
    pub to: String,
    /// The instant the answer is for; ask again with it to get this answer again.
    pub as_of: String,
    pub charges: Vec<ChargeUsageDto>,
    /// The sum of the charges' amounts (the plan's base amount is not included).
    pub amount: String,
}

fn money(amount: Decimal, precision: u32) -> String {
    format!("{:.*}", precision as usize, amount)
}

fn dto(usage: &CurrentUsage) -> CurrentUsageDto {
    let precision = usage.plan.spec.precision();
    CurrentUsageDto {
        subscription: UsageSubscriptionDto {
            external_id: usage.subscription.spec.external_id.clone(),
            customer: usage.subscription.spec.customer.clone(),
            plan: IdAndCodeDto {
                id: usage.plan.id.to_string(),
                code: usage.plan.spec.code.clone(),
            },
        },
        currency: usage.plan.spec.currency.clone(),
        timezone: usage.subscription.spec.timezone.name().to_owned(),
        from: format_micros(&usage.period.from),
        to: format_micros(&usage.period.to),
        as_of: format_micros(&usage.as_of),
        charges: usage
            .charges
            .iter()
            .map(|c| ChargeUsageDto {
                id: c.charge.id.to_string(),
                metric: ChargeMetricDto {
                    id: c.metric.id.to_string(),
                    code: c.metric.spec.code.clone(),
                    revision: c.revision,
                },
                charge_model: c.charge.pricing.model.kind().as_str().to_owned(),
                invoice_display_name: c.charge.invoice_display_name.clone(),
                units: c.usage.units.normalize().to_string(),
                events_count: c.usage.events_count,
                amount: money(c.usage.amount, precision),
                buckets: c
                    .usage
                    .buckets
                    .iter()
                    .map(|b| BucketUsageDto {
                        filter: b.filter.and_then(|i| {
                            c.charge.pricing.filters.get(i).map(|f| BucketFilterDto {
                                index: i,
                                values: f.values.clone(),
                                invoice_display_name: f.invoice_display_name.clone(),
                            })
                        }),
                        group: b.group.clone(),
                        units: b.units.normalize().to_string(),
                        events_count: b.events_count,
                        amount: money(b.priced.amount, precision),
                        details: serde_json::to_value(&b.priced.details).unwrap_or(Value::Null),
                    })
                    .collect(),
            })
            .collect(),
        amount: money(usage.amount, precision),
    }
}

impl From<BillingError> for ApiError {
    fn from(err: BillingError) -> Self {
        match err {
            BillingError::Store(store) => store.into(),
            other => Self::new(StatusCode::UNPROCESSABLE_ENTITY, other.code(), other.to_string()),
        }
    }
}

/// A subscription's usage in its current billing period (or the period containing `as_of`).
///
/// Per charge of the subscription's plan, per bucket (charge filter, and pricing group): the
/// units, the events that counted, and the amount by the charge model, rounded half-up to the
/// currency's minor unit. The period is anchored as the subscription says, with boundaries at
/// midnight in its time zone.
#[utoipa::path(get, path = "/v1/subscriptions/{external_id}/usage", tag = "subscriptions",
    params(("external_id" = String, Path, description = "the subscription's external id"), CurrentUsageParams),
    responses(
        (status = 200, body = CurrentUsageDto),
        (status = 400, description = "malformed `as_of`", body = ErrorBody),
        (status = 404, description = "unknown subscription", body = ErrorBody),
        (status = 422, description = "`subscription_not_started`, `subscription_ended`, `no_revision_at_as_of`, ...", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn get_current_usage(
    tenant: Tenant,
    State(state): State<AppState>,
    PathParams(external_id): PathParams<String>,
    QueryParams(params): QueryParams<CurrentUsageParams>,
) -> Result<Json<CurrentUsageDto>, ApiError> {
    let as_of = match params.as_of {
        None => None,
        Some(text) => Some(parse_timestamp(&Value::String(text)).map_err(|e| {
            ApiError::bad_request("invalid_timestamp", format!("as_of: {}", e.message))
        })?),
    };
    let usage = current_usage(
        state.catalog.as_ref(),
        state.events.as_ref(),
        tenant.organization_id,
        &external_id,
        as_of,
    )
    .await?;
    Ok(Json(dto(&usage)))
}
