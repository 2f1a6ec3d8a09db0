//! `/lago/api/v1/plans`: create, get, list, update (`PUT`, by code), delete, and the plan's
//! charges (`/plans/{code}/charges`). Charges name their metric by `billable_metric_id` (the
//! metric's `lago_id`) or, as Lago users ask for, by its code; charge models and charge
//! filters are Lago's own shapes, which are Odometer's canonical pricing JSON.

use axum::extract::State;
use axum::Json;
use odometer_core::pricing::ALL_FILTER_VALUES;
use odometer_core::{OrganizationId, Plan};
use odometer_store::metrics::find_metric;
use odometer_store::plans::{create_plan, delete_plan, find_plan, replace_plan, PlanError};
use odometer_store::PlanListParams;
use serde_json::{json, Map, Value};

use super::error::LagoError;
use super::extract::{LagoBody, LagoQuery, LagoTenant, Path};
use super::mapping::{charge_to_lago, from_cents, metric_view, plan_to_lago};
use crate::AppState;

type Answer = Result<Json<Value>, LagoError>;

/// Lago plan fields Odometer has no meaning for: accepted only at their "nothing" value.
fn is_nothing(key: &str, value: &Value) -> Option<bool> {
    let nothing = match key {
        "cascade_updates" => true,
        "trial_period" => value.as_f64() == Some(0.0),
        "bill_charges_monthly" | "bill_fixed_charges_monthly" => value == &json!(false),
        "tax_codes" | "fixed_charges" | "usage_thresholds" => value == &json!([]),
        "metadata" => value == &json!({}),
        "invoice_display_name" | "minimum_commitment" => false,
        _ => return None,
    };
    Some(nothing || value.is_null())
}

/// Lago charge fields Odometer has no meaning for, and their "nothing" value.
fn is_charge_nothing(key: &str, value: &Value) -> Option<bool> {
    let nothing = match key {
        "cascade_updates" => true,
        "pay_in_advance" | "prorated" | "accepts_target_wallet" => value == &json!(false),
        "invoiceable" => value == &json!(true),
        "min_amount_cents" => value.as_f64() == Some(0.0),
        "tax_codes" => value == &json!([]),
        "regroup_paid_fees" | "applied_pricing_unit" | "code" => false,
        _ => return None,
    };
    Some(nothing || value.is_null())
}

/// A Lago plan document as an Odometer plan definition.
fn plan_definition(doc: &Map<String, Value>) -> Result<Value, LagoError> {
    let mut details = Map::new();
    let mut out = Map::new();
    let currency = doc.get("amount_currency").and_then(Value::as_str).unwrap_or("").to_owned();
    for (key, value) in doc {
        if let Some(nothing) = is_nothing(key, value) {
            if !nothing {
                details.insert(key.clone(), json!(["not_supported"]));
            }
            continue;
        }
        match key.as_str() {
            "amount_currency" => {
                out.insert("currency".into(), value.clone());
            }
            "amount_cents" => {
                let cents = value.as_i64().or_else(|| value.as_str().and_then(|s| s.parse().ok()));
                match cents {
                    Some(cents) if cents >= 0 => {
                        out.insert(
                            "amount".into(),
                            json!(from_cents(cents, &currency).to_string()),
                        );
                    }
                    _ => {
                        details.insert(key.clone(), json!(["value_is_invalid"]));
                    }
                }
            }
            "charges" => match value {
                Value::Array(charges) => {
                    let mut converted = Vec::with_capacity(charges.len());
                    for (i, charge) in charges.iter().enumerate() {
                        converted.push(charge_definition(charge, i, &mut details));
                    }
                    out.insert("charges".into(), Value::Array(converted));
                }
                Value::Null => {}
                _ => {
                    details.insert("charges".into(), json!(["value_is_invalid"]));
                }
            },
            _ => {
                if !value.is_null() {
                    out.insert(key.clone(), value.clone());
                }
            }
        }
    }
    for (key, target) in [("amount_cents", "amount"), ("amount_currency", "currency")] {
        if !out.contains_key(target) && !details.contains_key(key) {
            details.insert(key.into(), json!(["value_is_mandatory"]));
        }
    }
    if details.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(LagoError::validation(Value::Object(details)))
    }
}

fn charge_definition(charge: &Value, i: usize, details: &mut Map<String, Value>) -> Value {
    let Some(charge) = charge.as_object() else {
        details.insert(format!("charges[{i}]"), json!(["value_is_invalid"]));
        return Value::Null;
    };
    let mut out = Map::new();
    for (key, value) in charge {
        if let Some(nothing) = is_charge_nothing(key, value) {
            if !nothing {
                details.insert(format!("charges[{i}].{key}"), json!(["not_supported"]));
            }
            continue;
        }
        match key.as_str() {
            "billable_metric_id" | "billable_metric_code" => {
                out.insert("metric".into(), value.clone());
            }
            "properties" => {
                let mut properties = value.as_object().cloned().unwrap_or_default();
                for group_key in ["pricing_group_keys", "grouped_by"] {
                    if let Some(keys) = properties.remove(group_key) {
                        if !keys.is_null() {
                            out.insert("pricing_group_keys".into(), keys);
                        }
                    }
                }
                out.insert("properties".into(), Value::Object(properties));
            }
            "filters" => {
                let filters: Vec<Value> = value
                    .as_array()
                    .map(|filters| {
                        filters
                            .iter()
                            .map(|f| {
                                let mut f = f.as_object().cloned().unwrap_or_default();
                                f.remove("cascade_updates");
                                f.retain(|_, v| !v.is_null());
                                Value::Object(f)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.insert("filters".into(), Value::Array(filters));
            }
            _ => {
                if !value.is_null() {
                    out.insert(key.clone(), value.clone());
                }
            }
        }
    }
    Value::Object(out)
}

/// Replaces Lago's `__ALL_FILTER_VALUES__` in charge filters by the values the charge's metric
/// lists for that key (its `filters`), so a stored filter always lists what it matches. A key
/// the metric does not list is a 422 for that filter.
async fn expand_all_values(
    state: &AppState,
    org: OrganizationId,
    definition: &mut Value,
) -> Result<(), LagoError> {
    let Some(charges) = definition.get_mut("charges").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for (i, charge) in charges.iter_mut().enumerate() {
        let metric_ref = charge.get("metric").and_then(Value::as_str).unwrap_or("").to_owned();
        let Some(filters) = charge.get_mut("filters").and_then(Value::as_array_mut) else {
            continue;
        };
        for (j, filter) in filters.iter_mut().enumerate() {
            let Some(values) = filter.get_mut("values").and_then(Value::as_object_mut) else {
                continue;
            };
            for (key, listed) in values.iter_mut() {
                let wants_all = listed
                    .as_array()
                    .is_some_and(|l| l.iter().any(|v| v.as_str() == Some(ALL_FILTER_VALUES)));
                if !wants_all {
                    continue;
                }
                let metric = find_metric(state.catalog.as_ref(), org, &metric_ref)
                    .await
                    .map_err(|e| LagoError::store(e, "billable_metric"))?;
                let view = metric_view(&metric.spec);
                let all = view["filters"]
                    .as_array()
                    .and_then(|fs| fs.iter().find(|f| f["key"] == json!(key)))
                    .map(|f| f["values"].clone());
                match all {
                    Some(all) => *listed = all,
                    None => {
                        return Err(LagoError::field(
                            &format!("charges[{i}].filters[{j}].values.{key}"),
                            "value_is_invalid",
                        ))
                    }
                }
            }
        }
    }
    Ok(())
}

/// The Lago field an Odometer plan problem path names.
fn plan_field(path: &str) -> String {
    let renamed = path.replacen(".metric", ".billable_metric_id", 1);
    match renamed.split(['.', '[']).next().unwrap_or("") {
        "amount" => "amount_cents".into(),
        "currency" => "amount_currency".into(),
        "" => "plan".into(),
        _ => renamed,
    }
}

fn plan_error(error: PlanError) -> LagoError {
    match error {
        PlanError::Invalid(problems) if problems.iter().any(|p| p.code == "unknown_metric") => {
            LagoError::not_found("billable_metric")
        }
        PlanError::Invalid(problems) => LagoError::problems(&problems, plan_field),
        PlanError::CodeTaken { .. } => LagoError::field("code", "value_already_exist"),
        PlanError::Store(e) => LagoError::store(e, "plan"),
    }
}

/// Each charge's metric code, in order.
async fn metric_codes(
    state: &AppState,
    org: OrganizationId,
    plan: &Plan,
) -> Result<Vec<String>, LagoError> {
    let mut codes = Vec::with_capacity(plan.spec.charges.len());
    for charge in &plan.spec.charges {
        let metric = state
            .catalog
            .get_metric(org, charge.metric_id)
            .await
            .map_err(|e| LagoError::store(e, "billable_metric"))?;
        codes.push(metric.spec.code);
    }
    Ok(codes)
}

async fn answer(state: &AppState, org: OrganizationId, plan: &Plan) -> Answer {
    let codes = metric_codes(state, org, plan).await?;
    Ok(Json(json!({"plan": plan_to_lago(plan, &codes)})))
}

pub async fn create(State(state): State<AppState>, tenant: LagoTenant, body: LagoBody) -> Answer {
    let mut definition = plan_definition(&body.root("plan")?)?;
    expand_all_values(&state, tenant.organization_id, &mut definition).await?;
    let plan = create_plan(state.catalog.as_ref(), tenant.organization_id, &definition)
        .await
        .map_err(plan_error)?;
    answer(&state, tenant.organization_id, &plan).await
}

async fn find(state: &AppState, org: OrganizationId, code: &str) -> Result<Plan, LagoError> {
    find_plan(state.catalog.as_ref(), org, code).await.map_err(|e| LagoError::store(e, "plan"))
}

pub async fn get(
    State(state): State<AppState>,
    tenant: LagoTenant,
    Path(code): Path<String>,
) -> Answer {
    let plan = find(&state, tenant.organization_id, &code).await?;
    answer(&state, tenant.organization_id, &plan).await
}

pub async fn list(State(state): State<AppState>, tenant: LagoTenant, query: LagoQuery) -> Answer {
    let org = tenant.organization_id;
    let paging = query.paging()?;
    let mut all: Vec<Plan> = Vec::new();
    let mut params = PlanListParams { search: None, limit: 1000, cursor: None };
    loop {
        let page = state
            .catalog
            .list_plans(org, &params)
            .await
            .map_err(|e| LagoError::store(e, "plan"))?;
        all.extend(page.items);
        match page.next_cursor {
            Some(next) => params.cursor = Some(next),
            None => break,
        }
    }
    let (items, meta) = paging.slice(all);
    let mut plans = Vec::with_capacity(items.len());
    for plan in &items {
        plans.push(plan_to_lago(plan, &metric_codes(&state, org, plan).await?));
    }
    Ok(Json(json!({"plans": plans, "meta": meta})))
}

/// `PUT`: the fields sent replace the plan's; `charges`, when sent, is the whole new list (a
/// charge naming one of the plan's charge ids by `id` keeps it).
pub async fn update(
    State(state): State<AppState>,
    tenant: LagoTenant,
    Path(code): Path<String>,
    body: LagoBody,
) -> Answer {
    let org = tenant.organization_id;
    let input = body.root("plan")?;
    let current = find(&state, org, &code).await?;
    let spec = &current.spec;
    let charges: Vec<Value> = spec
        .charges
        .iter()
        .map(|c| {
            let lago = charge_to_lago(c, "", &current.created_at);
            let mut charge = json!({
                "id": c.id.to_string(),
                "billable_metric_id": c.metric_id.to_string(),
                "charge_model": lago["charge_model"],
                "properties": lago["properties"],
                "filters": lago["filters"],
            });
            if let Some(name) = &c.invoice_display_name {
                charge["invoice_display_name"] = json!(name);
            }
            charge
        })
        .collect();
    let view = plan_to_lago(&current, &vec![String::new(); spec.charges.len()]);
    let mut doc = Map::new();
    for key in [
        "name",
        "code",
        "interval",
        "description",
        "amount_cents",
        "amount_currency",
        "pay_in_advance",
    ] {
        doc.insert(key.into(), view[key].clone());
    }
    doc.insert("charges".into(), Value::Array(charges));
    for (key, value) in input {
        doc.insert(key, value);
    }
    let mut definition = plan_definition(&doc)?;
    expand_all_values(&state, org, &mut definition).await?;
    let plan = replace_plan(state.catalog.as_ref(), org, &current.id.to_string(), &definition)
        .await
        .map_err(plan_error)?;
    answer(&state, org, &plan).await
}

pub async fn destroy(
    State(state): State<AppState>,
    tenant: LagoTenant,
    Path(code): Path<String>,
) -> Answer {
    let org = tenant.organization_id;
    let plan = find(&state, org, &code).await?;
    let codes = metric_codes(&state, org, &plan).await?;
    let deleted =
        delete_plan(state.catalog.as_ref(), org, &plan.id.to_string()).await.map_err(plan_error)?;
    Ok(Json(json!({"plan": plan_to_lago(&deleted, &codes)})))
}

/// `GET /plans/{code}/charges` (the client's `plan_charges.find_all`).
pub async fn list_charges(
    State(state): State<AppState>,
    tenant: LagoTenant,
    Path(code): Path<String>,
    query: LagoQuery,
) -> Answer {
    let org = tenant.organization_id;
    let paging = query.paging()?;
    let plan = find(&state, org, &code).await?;
    let codes = metric_codes(&state, org, &plan).await?;
    let charges: Vec<Value> = plan
        .spec
        .charges
        .iter()
        .zip(&codes)
        .map(|(c, code)| charge_to_lago(c, code, &plan.created_at))
        .collect();
    let (items, meta) = paging.slice(charges);
    Ok(Json(json!({"charges": items, "meta": meta})))
}
