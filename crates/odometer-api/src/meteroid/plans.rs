//! `/api/v1/plans` and `/api/v1/subscriptions`: what the SDK needs of them to reach a
//! subscription's usage. A Meteroid plan is an Odometer plan (a RATE fee is its base amount, a
//! USAGE fee with PER_UNIT pricing a `standard` charge on the metric); what Odometer has no
//! place for (product family, plan type, status, component names) is kept as a dialect record
//! beside it. Other fee types and pricing models are refused with a 400 naming them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{Datelike, NaiveDate};
use odometer_core::billing_period::billing_period;
use odometer_core::{time, MetricId, OrganizationId, Plan, PlanId, Subscription};
use odometer_store::dialect_records::DialectRecord;
use odometer_store::plans::{create_plan, PlanError};
use odometer_store::subscriptions::{create_subscription, SubscriptionError};
use odometer_store::Catalog;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

use super::error::{problems_message, MeteroidError};
use super::extract::{JsonBody, PathParam, Tenant};
use super::{customers, mapping, metrics, product_families};
use crate::AppState;

const PLAN_KIND: &str = "meteroid.plan";

impl From<PlanError> for MeteroidError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::Invalid(problems) => Self::bad_request(problems_message(&problems)),
            PlanError::CodeTaken { .. } => Self::new(StatusCode::CONFLICT, e.to_string()),
            PlanError::Store(store) => store.into(),
        }
    }
}

impl From<SubscriptionError> for MeteroidError {
    fn from(e: SubscriptionError) -> Self {
        match e {
            SubscriptionError::Invalid(problems) => Self::bad_request(problems_message(&problems)),
            SubscriptionError::ExternalIdTaken { .. } => {
                Self::new(StatusCode::CONFLICT, e.to_string())
            }
            SubscriptionError::Store(store) => store.into(),
        }
    }
}

/// Fresh base62 digits in Odometer's id format, for ids Meteroid shows and Odometer lacks.
fn fresh_digits() -> String {
    MetricId::new().to_string()[MetricId::PREFIX.len()..].to_owned()
}

fn digits_of(id: &str) -> &str {
    id.split_once('_').map_or(id, |(_, digits)| digits)
}

fn bad(message: impl Into<String>) -> MeteroidError {
    MeteroidError::bad_request(message)
}

/// The native plan definition and the components as they will be shown.
async fn plan_definition(
    catalog: &dyn Catalog,
    org: OrganizationId,
    body: &Map<String, Value>,
) -> Result<(Value, Vec<Value>), MeteroidError> {
    let text = |key: &str| body.get(key).and_then(Value::as_str);
    let name = text("name").filter(|s| !s.is_empty()).ok_or_else(|| bad("name is required"))?;
    let currency = text("currency").ok_or_else(|| bad("currency is required"))?;
    let mut amount = Decimal::ZERO;
    let mut charges = Vec::new();
    let mut shown = Vec::new();
    let components = body.get("components").and_then(Value::as_array).cloned().unwrap_or_default();
    for (i, component) in components.iter().enumerate() {
        let component_name = component.get("name").and_then(Value::as_str).unwrap_or_default();
        let fee = component.get("fee").cloned().unwrap_or(Value::Null);
        match fee.get("type").and_then(Value::as_str) {
            Some("RATE") => {
                let rates = fee.get("rates").and_then(Value::as_array).cloned().unwrap_or_default();
                let [rate] = rates.as_slice() else {
                    return Err(bad(format!(
                        "components[{i}]: a RATE fee needs exactly one rate here"
                    )));
                };
                if rate.get("term").and_then(Value::as_str) != Some("MONTHLY") {
                    return Err(bad(format!(
                        "components[{i}]: only MONTHLY rates are supported by this dialect"
                    )));
                }
                amount += decimal_member(rate, "price", i)?;
            }
            Some("USAGE") => {
                let metric_id = fee.get("metric_id").and_then(Value::as_str).unwrap_or_default();
                metrics::find_visible(catalog, org, metric_id).await?;
                let pricing = fee.get("pricing").cloned().unwrap_or(Value::Null);
                if pricing.get("type").and_then(Value::as_str) != Some("PER_UNIT") {
                    return Err(bad(format!(
                        "components[{i}]: only PER_UNIT usage pricing is supported by this dialect"
                    )));
                }
                let rate = decimal_member(&pricing, "rate", i)?;
                if fee.get("cadence").and_then(Value::as_str).is_some_and(|c| c != "MONTHLY") {
                    return Err(bad(format!(
                        "components[{i}]: only MONTHLY cadence is supported by this dialect"
                    )));
                }
                charges.push(json!({"metric": metric_id, "charge_model": "standard",
                                    "properties": {"amount": rate.to_string()},
                                    "invoice_display_name": component_name}));
            }
            other => {
                return Err(bad(format!(
                    "components[{i}]: fee type {} is not supported by this dialect (RATE and \
                     USAGE are)",
                    other.unwrap_or("(missing)")
                )))
            }
        }
        shown.push(json!({"id": format!("cmp_{}", fresh_digits()), "name": component_name,
                          "fee": fee}));
    }
    let mut definition = json!({
        "code": format!("meteroid-{}", fresh_digits()),
        "name": name,
        "interval": "monthly",
        "currency": currency,
        "amount": amount.to_string(),
        "charges": charges,
    });
    if let Some(d) = text("description") {
        definition["description"] = json!(d);
    }
    Ok((definition, shown))
}

fn decimal_member(value: &Value, key: &str, i: usize) -> Result<Decimal, MeteroidError> {
    value
        .get(key)
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Decimal>().ok())
        .ok_or_else(|| bad(format!("components[{i}]: {key} must be a decimal string")))
}

async fn plan_view(
    catalog: &dyn Catalog,
    org: OrganizationId,
    plan: &Plan,
) -> Result<Value, MeteroidError> {
    let record = catalog
        .get_dialect_record(org, PLAN_KIND, &plan.id.to_string())
        .await?
        .ok_or_else(|| MeteroidError::not_found(format!("plan '{}' not found", plan.id)))?;
    let doc = &record.document;
    let family_id = doc["product_family_id"].as_str().unwrap_or_default();
    let family = product_families::find(catalog, org, family_id).await?;
    let mut out = json!({
        "id": plan.id.to_string(),
        "name": plan.spec.name,
        "currency": plan.spec.currency,
        "created_at": mapping::datetime(&plan.created_at),
        "available_parameters": {},
        "net_terms": 0,
        "plan_type": doc["plan_type"],
        "status": doc["status"],
        "price_components": doc["components"],
        "product_family": {"id": family.id, "name": family.name},
        "tax_inclusive": false,
        "version": 1,
        "version_id": format!("plv_{}", digits_of(&plan.id.to_string())),
    });
    if let Some(d) = &plan.spec.description {
        out["description"] = json!(d);
    }
    Ok(out)
}

async fn find_plan(
    catalog: &dyn Catalog,
    org: OrganizationId,
    id: &str,
) -> Result<Plan, MeteroidError> {
    let not_found = || MeteroidError::not_found(format!("plan '{id}' not found"));
    let parsed = PlanId::parse(id).ok_or_else(not_found)?;
    let plan = match catalog.get_plan(org, parsed).await {
        Ok(p) if p.deleted_at.is_none() => p,
        Ok(_) | Err(odometer_store::StoreError::NotFound { .. }) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    if catalog.get_dialect_record(org, PLAN_KIND, id).await?.is_none() {
        return Err(not_found());
    }
    Ok(plan)
}

pub async fn create_plan_route(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), MeteroidError> {
    let Some(object) = body.as_object() else {
        return Err(bad("the body must be a JSON object"));
    };
    let family_id = object
        .get("product_family_id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("product_family_id is required"))?;
    product_families::find(state.catalog.as_ref(), org, family_id).await?;
    let plan_type = object.get("plan_type").and_then(Value::as_str).unwrap_or("STANDARD");
    let status = object.get("status").and_then(Value::as_str).unwrap_or("DRAFT");
    let (definition, components) = plan_definition(state.catalog.as_ref(), org, object).await?;
    let plan = create_plan(state.catalog.as_ref(), org, &definition).await?;
    let record = DialectRecord {
        organization_id: org,
        kind: PLAN_KIND.to_owned(),
        id: plan.id.to_string(),
        name: plan.spec.name.clone(),
        document: json!({"product_family_id": family_id, "plan_type": plan_type,
                         "status": status, "components": components}),
        created_at: plan.created_at,
    };
    state.catalog.create_dialect_record(&record).await?;
    Ok((StatusCode::CREATED, Json(plan_view(state.catalog.as_ref(), org, &plan).await?)))
}

pub async fn get_plan(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> Result<Json<Value>, MeteroidError> {
    let plan = find_plan(state.catalog.as_ref(), org, &id).await?;
    Ok(Json(plan_view(state.catalog.as_ref(), org, &plan).await?))
}

fn date_member(body: &Map<String, Value>, key: &str) -> Result<Option<NaiveDate>, MeteroidError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(Some)
            .map_err(|_| bad(format!("{key} must be YYYY-MM-DD"))),
        Some(_) => Err(bad(format!("{key} must be YYYY-MM-DD"))),
    }
}

async fn subscription_view(
    state: &AppState,
    org: OrganizationId,
    subscription: &Subscription,
) -> Result<Value, MeteroidError> {
    let catalog = state.catalog.as_ref();
    let plan = catalog.get_plan(org, subscription.spec.plan_id).await?;
    let record = catalog.get_dialect_record(org, PLAN_KIND, &plan.id.to_string()).await?;
    let components: Vec<Value> = record
        .as_ref()
        .and_then(|r| r.document["components"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let fee = &c["fee"];
            let shown_fee = match fee["type"].as_str() {
                Some("USAGE") => json!({"type": "USAGE", "metric_id": fee["metric_id"],
                                        "model": fee["pricing"]}),
                _ => json!({"type": "RATE", "rate": fee["rates"][0]["price"]}),
            };
            json!({"price_component_id": c["id"], "name": c["name"], "fee": shown_fee,
                   "period": "MONTHLY"})
        })
        .collect();
    let customer = customers::resolve(catalog, org, &subscription.spec.customer).await?;
    let (customer_id, customer_name) = match &customer {
        Some(c) => (c.id.to_string(), c.spec.name.clone().unwrap_or_default()),
        None => (subscription.spec.customer.clone(), subscription.spec.customer.clone()),
    };
    let start = subscription.spec.started_at.date_naive();
    let period = billing_period(&subscription.schedule(plan.spec.interval), time::now()).ok();
    let status = match subscription.status {
        odometer_core::SubscriptionStatus::Active if subscription.spec.started_at > time::now() => {
            "PENDING_ACTIVATION"
        }
        odometer_core::SubscriptionStatus::Active => "ACTIVE",
        odometer_core::SubscriptionStatus::Terminated => "COMPLETED",
    };
    let mut out = json!({
        "id": subscription.id.to_string(),
        "add_ons": [],
        "applied_coupons": [],
        "auto_advance_invoices": true,
        "billing_day_anchor": start.day(),
        "charge_automatically": false,
        "components": components,
        "created_at": mapping::datetime(&subscription.created_at),
        "currency": plan.spec.currency,
        "current_period_start": period.as_ref().map_or(start, |p| p.from.date_naive()).to_string(),
        "custom_properties": {},
        "customer_id": customer_id,
        "customer_name": customer_name,
        "mrr_cents": (plan.spec.amount * Decimal::from(100)).trunc().to_i64().unwrap_or(0),
        "net_terms": 0,
        "period": "MONTHLY",
        "plan_id": plan.id.to_string(),
        "plan_name": plan.spec.name,
        "plan_version": 1,
        "plan_version_id": format!("plv_{}", digits_of(&plan.id.to_string())),
        "start_date": start.to_string(),
        "status": status,
        "tax_inclusive": false,
    });
    if let Some(p) = &period {
        out["current_period_end"] = json!(p.to.date_naive().to_string());
    }
    if let Some(c) = customer.filter(|c| c.spec.external_id != c.id.to_string()) {
        out["customer_alias"] = json!(c.spec.external_id);
    }
    if let Some(end) = subscription.spec.ended_at {
        out["end_date"] = json!(end.date_naive().to_string());
    }
    Ok(out)
}

pub async fn create_subscription_route(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), MeteroidError> {
    let Some(object) = body.as_object() else {
        return Err(bad("the body must be a JSON object"));
    };
    let customer_ref = object
        .get("customer_id_or_alias")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("customer_id_or_alias is required"))?;
    let customer = customers::resolve(state.catalog.as_ref(), org, customer_ref)
        .await?
        .ok_or_else(|| MeteroidError::not_found(format!("customer '{customer_ref}' not found")))?;
    let plan_id =
        object.get("plan_id").and_then(Value::as_str).ok_or_else(|| bad("plan_id is required"))?;
    let plan = find_plan(state.catalog.as_ref(), org, plan_id).await?;
    if object.get("activation_condition").and_then(Value::as_str) != Some("ON_START") {
        return Err(bad("activation_condition must be ON_START here (no checkout or manual step)"));
    }
    let start = date_member(object, "start_date")?.ok_or_else(|| bad("start_date is required"))?;
    let mut definition = json!({
        "external_id": format!("meteroid-{}", fresh_digits()),
        "customer": customer.spec.external_id,
        "plan": plan.id.to_string(),
        "started_at": mapping::datetime(&start.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()),
        "billing_anchor": "anniversary",
        "timezone": "UTC",
    });
    if let Some(end) = date_member(object, "end_date")? {
        definition["ended_at"] =
            json!(mapping::datetime(&end.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()));
    }
    let subscription = create_subscription(state.catalog.as_ref(), org, &definition).await?;
    Ok((StatusCode::CREATED, Json(subscription_view(&state, org, &subscription).await?)))
}

pub async fn get_subscription(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> Result<Json<Value>, MeteroidError> {
    let subscription = super::usage::find_subscription(&state, org, &id).await?;
    Ok(Json(subscription_view(&state, org, &subscription).await?))
}
