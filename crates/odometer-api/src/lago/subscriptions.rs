//! `/lago/api/v1/subscriptions`: create, get, list, update (`PUT`) and terminate (`DELETE`).
//! As in Lago, creating a subscription for an `external_customer_id` that does not exist yet
//! creates that customer.

use axum::extract::State;
use axum::Json;
use odometer_core::{OrganizationId, Subscription};
use odometer_store::customers::create_customer;
use odometer_store::plans::find_plan;
use odometer_store::subscriptions::{
    create_subscription, terminate_subscription, update_subscription, SubscriptionError,
};
use odometer_store::{StoreError, SubscriptionListParams};
use serde_json::{json, Map, Value};

use super::error::LagoError;
use super::extract::{LagoBody, LagoQuery, LagoTenant, Path};
use super::mapping::subscription_to_lago;
use crate::AppState;

type Answer = Result<Json<Value>, LagoError>;

fn subscription_field(path: &str) -> String {
    match path.split(['.', '[']).next().unwrap_or("") {
        "customer" => "external_customer_id".into(),
        "plan" => "plan_code".into(),
        "started_at" => "subscription_at".into(),
        "ended_at" => "ending_at".into(),
        "billing_anchor" => "billing_time".into(),
        "" => "subscription".into(),
        other => other.into(),
    }
}

fn subscription_error(error: SubscriptionError) -> LagoError {
    match error {
        SubscriptionError::Invalid(problems)
            if problems.iter().any(|p| p.code == "unknown_plan") =>
        {
            LagoError::not_found("plan")
        }
        SubscriptionError::Invalid(problems) => LagoError::problems(&problems, subscription_field),
        SubscriptionError::ExternalIdTaken { .. } => {
            LagoError::field("external_id", "value_already_exist")
        }
        SubscriptionError::Store(e) => LagoError::store(e, "subscription"),
    }
}

/// Lago subscription fields Odometer has no meaning for: accepted only when null.
const UNSUPPORTED: [&str; 8] = [
    "plan_overrides",
    "payment_method",
    "invoice_custom_section",
    "consolidate_invoice",
    "billing_entity_code",
    "purchase_order_number",
    "activation_rules",
    "subscription_id",
];

async fn answer(state: &AppState, org: OrganizationId, subscription: &Subscription) -> Answer {
    Ok(Json(json!({"subscription": to_lago(state, org, subscription).await?})))
}

async fn to_lago(
    state: &AppState,
    org: OrganizationId,
    subscription: &Subscription,
) -> Result<Value, LagoError> {
    let plan = state
        .catalog
        .get_plan(org, subscription.spec.plan_id)
        .await
        .map_err(|e| LagoError::store(e, "plan"))?;
    let customer = state.catalog.get_customer(org, &subscription.spec.customer).await.ok();
    Ok(subscription_to_lago(
        subscription,
        &plan.spec.code,
        customer.map(|c| c.id.to_string()),
        odometer_core::time::now(),
    ))
}

pub async fn create(State(state): State<AppState>, tenant: LagoTenant, body: LagoBody) -> Answer {
    let org = tenant.organization_id;
    let input = body.root("subscription")?;
    let mut details = Map::new();
    let mut definition = Map::new();
    for (key, value) in &input {
        if value.is_null() {
            continue;
        }
        let target = match key.as_str() {
            "external_id" => "external_id",
            "external_customer_id" => "customer",
            "plan_code" => "plan",
            "name" => "name",
            "subscription_at" => "started_at",
            "ending_at" => "ended_at",
            "billing_time" => "billing_anchor",
            other if UNSUPPORTED.contains(&other) => {
                details.insert(key.clone(), json!(["not_supported"]));
                continue;
            }
            _ => key.as_str(),
        };
        definition.insert(target.to_owned(), value.clone());
    }
    for (key, target) in [
        ("external_id", "external_id"),
        ("external_customer_id", "customer"),
        ("plan_code", "plan"),
    ] {
        if !definition.contains_key(target) {
            details.insert(key.into(), json!(["value_is_mandatory"]));
        }
    }
    if !details.is_empty() {
        return Err(LagoError::validation(Value::Object(details)));
    }
    // Lago's default billing time.
    definition.entry("billing_anchor").or_insert(json!("calendar"));
    if let Some(Value::String(customer)) = definition.get("customer") {
        match state.catalog.get_customer(org, customer).await {
            Ok(_) => {}
            Err(StoreError::NotFound { .. }) => {
                create_customer(state.catalog.as_ref(), org, &json!({"external_id": customer}))
                    .await
                    .map_err(|e| match e {
                        odometer_store::customers::CustomerError::Invalid(_) => {
                            LagoError::field("external_customer_id", "value_is_invalid")
                        }
                        odometer_store::customers::CustomerError::Store(e) => {
                            LagoError::store(e, "customer")
                        }
                    })?;
            }
            Err(e) => return Err(LagoError::store(e, "customer")),
        }
    }
    let subscription = create_subscription(state.catalog.as_ref(), org, &Value::Object(definition))
        .await
        .map_err(subscription_error)?;
    answer(&state, org, &subscription).await
}

pub async fn get(
    State(state): State<AppState>,
    tenant: LagoTenant,
    Path(external_id): Path<String>,
) -> Answer {
    let subscription = state
        .catalog
        .get_subscription(tenant.organization_id, &external_id)
        .await
        .map_err(|e| LagoError::store(e, "subscription"))?;
    answer(&state, tenant.organization_id, &subscription).await
}

/// `GET /subscriptions`: `external_customer_id`, `plan_code`, `status[]` (`active`, the
/// default, and `terminated`; Odometer has no `pending` or `canceled` subscriptions).
pub async fn list(State(state): State<AppState>, tenant: LagoTenant, query: LagoQuery) -> Answer {
    let org = tenant.organization_id;
    let paging = query.paging()?;
    let plan_id = match query.get("plan_code").filter(|c| !c.is_empty()) {
        Some(code) => Some(
            find_plan(state.catalog.as_ref(), org, code)
                .await
                .map_err(|e| LagoError::store(e, "plan"))?
                .id,
        ),
        None => None,
    };
    let mut statuses: Vec<&str> = query.all("status[]");
    statuses.extend(query.all("status"));
    if statuses.is_empty() {
        statuses.push("active");
    }
    for status in &statuses {
        if !["active", "terminated", "pending", "canceled"].contains(status) {
            return Err(LagoError::field("status", "value_is_invalid"));
        }
    }
    let mut all: Vec<Subscription> = Vec::new();
    let mut params = SubscriptionListParams {
        customer: query.get("external_customer_id").filter(|c| !c.is_empty()).map(str::to_owned),
        plan_id,
        status: None,
        limit: 1000,
        cursor: None,
    };
    let now = odometer_core::time::now();
    loop {
        let page = state
            .catalog
            .list_subscriptions(org, &params)
            .await
            .map_err(|e| LagoError::store(e, "subscription"))?;
        all.extend(
            page.items.into_iter().filter(|s| statuses.contains(&s.status_at(now).as_str())),
        );
        match page.next_cursor {
            Some(next) => params.cursor = Some(next),
            None => break,
        }
    }
    let (items, meta) = paging.slice(all);
    let mut subscriptions = Vec::with_capacity(items.len());
    for s in &items {
        subscriptions.push(to_lago(&state, org, s).await?);
    }
    Ok(Json(json!({"subscriptions": subscriptions, "meta": meta})))
}

/// `PUT`: `name` and `ending_at` change; `subscription_at` cannot once started.
pub async fn update(
    State(state): State<AppState>,
    tenant: LagoTenant,
    Path(external_id): Path<String>,
    body: LagoBody,
) -> Answer {
    let org = tenant.organization_id;
    let input = body.root("subscription")?;
    let current = state
        .catalog
        .get_subscription(org, &external_id)
        .await
        .map_err(|e| LagoError::store(e, "subscription"))?;
    let mut patch = Map::new();
    let mut details = Map::new();
    for (key, value) in input {
        match key.as_str() {
            "name" => {
                patch.insert("name".into(), value);
            }
            "ending_at" => {
                patch.insert("ended_at".into(), value);
            }
            "subscription_at" if !value.is_null() => {
                details.insert(key, json!(["modification_not_allowed"]));
            }
            _ if value.is_null() => {}
            _ => {
                details.insert(key, json!(["not_supported"]));
            }
        }
    }
    if !details.is_empty() {
        return Err(LagoError::validation(Value::Object(details)));
    }
    let updated = update_subscription(
        state.catalog.as_ref(),
        org,
        &current.spec.external_id,
        &Value::Object(patch),
    )
    .await
    .map_err(subscription_error)?;
    answer(&state, org, &updated).await
}

/// `DELETE`: terminates now. Odometer has no pending subscriptions, so `status=pending`
/// finds none.
pub async fn terminate(
    State(state): State<AppState>,
    tenant: LagoTenant,
    Path(external_id): Path<String>,
    query: LagoQuery,
) -> Answer {
    let org = tenant.organization_id;
    if query.get("status") == Some("pending") {
        return Err(LagoError::not_found("subscription"));
    }
    let subscription = terminate_subscription(state.catalog.as_ref(), org, &external_id)
        .await
        .map_err(subscription_error)?;
    answer(&state, org, &subscription).await
}
