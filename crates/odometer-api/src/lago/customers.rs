//! `/lago/api/v1/customers`: create (an upsert by `external_id`, as Lago's), get, list,
//! delete, and `current_usage` of one of the customer's subscriptions, built on
//! `odometer_store::billing::current_usage`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use odometer_core::charge_usage::BucketUsage;
use odometer_core::{Customer, SubscriptionStatus};
use odometer_store::billing::{current_usage as billing_usage, BillingError};
use odometer_store::customers::{create_customer, update_customer, CustomerError};
use odometer_store::{CustomerListParams, StoreError};
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

use super::error::LagoError;
use super::extract::{LagoBody, LagoQuery, LagoTenant, Path};
use super::mapping::{aggregation_name, customer_to_lago, iso, to_cents, CUSTOMER_EXTRAS};
use crate::AppState;

type Answer = Result<Json<Value>, LagoError>;

fn customer_error(error: CustomerError) -> LagoError {
    match error {
        CustomerError::Invalid(problems) => LagoError::problems(&problems, |path| {
            path.split(['.', '[']).next().unwrap_or(path).to_owned()
        }),
        CustomerError::Store(e) => LagoError::store(e, "customer"),
    }
}

/// `POST /customers`: creates the customer, or updates the one with that `external_id` with
/// the fields sent. `name`, `email` and `timezone` are Odometer's; every other Lago field is
/// kept as sent and answered back.
pub async fn create(State(state): State<AppState>, tenant: LagoTenant, body: LagoBody) -> Answer {
    let mut input = body.root("customer")?;
    let org = tenant.organization_id;
    let external_id = match input.remove("external_id") {
        Some(Value::String(id)) if !id.is_empty() => id,
        _ => return Err(LagoError::field("external_id", "value_is_mandatory")),
    };
    let mut own = Map::new();
    for key in ["name", "email", "timezone"] {
        if let Some(value) = input.remove(key) {
            own.insert(key.to_owned(), value);
        }
    }
    let extras: Map<String, Value> = input.into_iter().filter(|(_, v)| !v.is_null()).collect();
    let customer = match state.catalog.get_customer(org, &external_id).await {
        Ok(current) => {
            let mut kept = match current.spec.metadata.get(CUSTOMER_EXTRAS) {
                Some(Value::Object(map)) => map.clone(),
                _ => Map::new(),
            };
            kept.extend(extras);
            own.insert("metadata".into(), json!({ CUSTOMER_EXTRAS: kept }));
            update_customer(state.catalog.as_ref(), org, &external_id, &Value::Object(own))
                .await
                .map_err(customer_error)?
        }
        Err(StoreError::NotFound { .. }) => {
            own.insert("external_id".into(), json!(external_id));
            if !extras.is_empty() {
                own.insert("metadata".into(), json!({ CUSTOMER_EXTRAS: extras }));
            }
            let own: Map<String, Value> = own.into_iter().filter(|(_, v)| !v.is_null()).collect();
            create_customer(state.catalog.as_ref(), org, &Value::Object(own))
                .await
                .map_err(customer_error)?
        }
        Err(e) => return Err(LagoError::store(e, "customer")),
    };
    Ok(Json(json!({"customer": customer_to_lago(&customer)})))
}

pub async fn get(
    State(state): State<AppState>,
    tenant: LagoTenant,
    Path(external_id): Path<String>,
) -> Answer {
    let customer = state
        .catalog
        .get_customer(tenant.organization_id, &external_id)
        .await
        .map_err(|e| LagoError::store(e, "customer"))?;
    Ok(Json(json!({"customer": customer_to_lago(&customer)})))
}

pub async fn list(State(state): State<AppState>, tenant: LagoTenant, query: LagoQuery) -> Answer {
    let paging = query.paging()?;
    let mut all: Vec<Customer> = Vec::new();
    let mut params = CustomerListParams { search: None, limit: 1000, cursor: None };
    loop {
        let page = state
            .catalog
            .list_customers(tenant.organization_id, &params)
            .await
            .map_err(|e| LagoError::store(e, "customer"))?;
        all.extend(page.items);
        match page.next_cursor {
            Some(next) => params.cursor = Some(next),
            None => break,
        }
    }
    let (items, meta) = paging.slice(all);
    let customers: Vec<Value> = items.iter().map(customer_to_lago).collect();
    Ok(Json(json!({"customers": customers, "meta": meta})))
}

pub async fn destroy(
    State(state): State<AppState>,
    tenant: LagoTenant,
    Path(external_id): Path<String>,
) -> Answer {
    let customer = state
        .catalog
        .delete_customer(tenant.organization_id, &external_id)
        .await
        .map_err(|e| LagoError::store(e, "customer"))?;
    Ok(Json(json!({"customer": customer_to_lago(&customer)})))
}

fn billing_error(error: BillingError) -> LagoError {
    match error {
        BillingError::Store(e) => LagoError::store(e, "subscription"),
        other => LagoError::internal(other.to_string()),
    }
}

/// The usage numbers of some buckets, summed.
struct Totals {
    units: Decimal,
    events_count: u64,
    amount: Decimal,
}

fn totals<'a>(buckets: impl Iterator<Item = &'a BucketUsage>) -> Totals {
    let mut t = Totals { units: Decimal::ZERO, events_count: 0, amount: Decimal::ZERO };
    for b in buckets {
        t.units += b.units;
        t.events_count += b.events_count;
        t.amount += b.priced.amount;
    }
    t
}

/// `GET /customers/{external_id}/current_usage?external_subscription_id=...`, with Lago's
/// `billable_metric_code`, `charge_id` and `group[key]=value` narrowing; `apply_taxes` is
/// accepted (Odometer computes no taxes).
pub async fn current_usage(
    State(state): State<AppState>,
    tenant: LagoTenant,
    Path(external_id): Path<String>,
    query: LagoQuery,
) -> Answer {
    let org = tenant.organization_id;
    let mut groups: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in &query.0 {
        match key.as_str() {
            "external_subscription_id" | "apply_taxes" | "billable_metric_code" | "charge_id" => {}
            _ => match key.strip_prefix("group[").and_then(|k| k.strip_suffix(']')) {
                Some(group_key) => {
                    groups.insert(group_key.to_owned(), value.clone());
                }
                None => return Err(LagoError::field(key, "not_supported")),
            },
        }
    }
    state
        .catalog
        .get_customer(org, &external_id)
        .await
        .map_err(|e| LagoError::store(e, "customer"))?;
    let Some(sub_id) = query.get("external_subscription_id").filter(|s| !s.is_empty()) else {
        return Err(LagoError::method_not_allowed("no_active_subscription"));
    };
    let subscription = match state.catalog.get_subscription(org, sub_id).await {
        Ok(s) => s,
        Err(StoreError::NotFound { .. }) => {
            return Err(LagoError::method_not_allowed("no_active_subscription"))
        }
        Err(e) => return Err(LagoError::store(e, "subscription")),
    };
    let now = odometer_core::time::now();
    if subscription.spec.customer != external_id
        || subscription.status_at(now) != SubscriptionStatus::Active
    {
        return Err(LagoError::method_not_allowed("no_active_subscription"));
    }
    let usage =
        billing_usage(state.catalog.as_ref(), state.events.as_ref(), org, sub_id, Some(now))
            .await
            .map_err(billing_error)?;
    let currency = usage.plan.spec.currency.clone();
    let mut charges_usage = Vec::new();
    let mut amount = Decimal::ZERO;
    for charge in &usage.charges {
        if query.get("billable_metric_code").is_some_and(|c| c != charge.metric.spec.code) {
            continue;
        }
        if query.get("charge_id").is_some_and(|c| c != charge.charge.id.to_string()) {
            continue;
        }
        let pricing = &charge.charge.pricing;
        // `group[key]=value`: the buckets whose charge filter lists that value for that key,
        // or whose pricing group has it.
        let kept: Vec<&BucketUsage> = charge
            .usage
            .buckets
            .iter()
            .filter(|b| {
                groups.iter().all(|(k, v)| {
                    let in_filter = b
                        .filter
                        .and_then(|i| pricing.filters.get(i))
                        .and_then(|f| f.values.get(k))
                        .is_some_and(|values| values.contains(v));
                    let in_group = b.group.get(k).is_some_and(|g| g.as_deref() == Some(v.as_str()));
                    in_filter || in_group
                })
            })
            .collect();
        if !groups.is_empty() && kept.is_empty() {
            continue;
        }
        let total = totals(kept.iter().copied());
        let units = if groups.is_empty() { charge.usage.units } else { total.units };
        amount += total.amount;
        let filters: Vec<Value> = if pricing.filters.is_empty() {
            Vec::new()
        } else {
            let mut by_filter: BTreeMap<Option<usize>, Vec<&BucketUsage>> = BTreeMap::new();
            for b in &kept {
                by_filter.entry(b.filter).or_default().push(b);
            }
            by_filter
                .into_iter()
                .map(|(filter, buckets)| {
                    let t = totals(buckets.into_iter());
                    let spec = filter.and_then(|i| pricing.filters.get(i));
                    json!({
                        "units": t.units.normalize().to_string(),
                        "total_aggregated_units": t.units.normalize().to_string(),
                        "events_count": t.events_count,
                        "amount_cents": to_cents(t.amount, &currency),
                        "pricing_unit_details": null,
                        "invoice_display_name": spec.and_then(|f| f.invoice_display_name.clone()),
                        "values": spec.map(|f| json!(f.values)).unwrap_or(Value::Null),
                    })
                })
                .collect()
        };
        let grouped_usage: Vec<Value> = if charge.charge.pricing_group_keys.is_empty() {
            Vec::new()
        } else {
            let mut by_group: BTreeMap<&BTreeMap<String, Option<String>>, Vec<&BucketUsage>> =
                BTreeMap::new();
            for b in &kept {
                by_group.entry(&b.group).or_default().push(b);
            }
            by_group
                .into_iter()
                .map(|(group, buckets)| {
                    let t = totals(buckets.into_iter());
                    json!({
                        "units": t.units.normalize().to_string(),
                        "total_aggregated_units": t.units.normalize().to_string(),
                        "events_count": t.events_count,
                        "amount_cents": to_cents(t.amount, &currency),
                        "pricing_unit_details": null,
                        "grouped_by": group,
                        "filters": [],
                    })
                })
                .collect()
        };
        let metric = &charge.metric;
        charges_usage.push(json!({
            "units": units.normalize().to_string(),
            "total_aggregated_units": units.normalize().to_string(),
            "events_count": total.events_count,
            "amount_cents": to_cents(total.amount, &currency),
            "amount_currency": currency,
            "pricing_unit_details": null,
            "charge": {
                "lago_id": charge.charge.id.to_string(),
                "charge_model": pricing.model.kind().as_str(),
                "invoice_display_name": charge.charge.invoice_display_name,
            },
            "billable_metric": {
                "lago_id": metric.id.to_string(),
                "name": metric.spec.name,
                "code": metric.spec.code,
                "aggregation_type": aggregation_name(metric.spec.aggregation.kind),
            },
            "filters": filters,
            "grouped_usage": grouped_usage,
        }));
    }
    let amount_cents = to_cents(amount, &currency);
    Ok(Json(json!({"customer_usage": {
        "from_datetime": iso(&usage.period.from),
        "to_datetime": iso(&usage.period.to),
        "issuing_date": usage.period.to.format("%Y-%m-%d").to_string(),
        "currency": currency,
        "amount_cents": amount_cents,
        "taxes_amount_cents": 0,
        "total_amount_cents": amount_cents,
        "lago_invoice_id": null,
        "charges_usage": charges_usage,
    }})))
}
