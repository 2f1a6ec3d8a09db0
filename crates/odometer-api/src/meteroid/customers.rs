//! `/api/v1/customers`: Meteroid's customers over Odometer's. A Meteroid customer is an Odometer
//! customer whose external id is its alias (or, without one, its `cus_` id, so events can name
//! it either way); the Meteroid-only members (currency, invoicing emails, ...) are kept under
//! `metadata.meteroid`, and archiving is a mark there (Odometer's delete would free the id).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use odometer_core::customer::parse_customer_spec;
use odometer_core::{time, Customer, CustomerId, OrganizationId};
use odometer_store::{Catalog, CustomerListParams, StoreError};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::MeteroidError;
use super::extract::{JsonBody, PathParam, QueryParams, Tenant};
use super::mapping;
use crate::AppState;

const META_KEY: &str = "meteroid";

/// Every live customer of the organization, oldest first.
pub async fn all_customers(
    catalog: &dyn Catalog,
    org: OrganizationId,
) -> Result<Vec<Customer>, MeteroidError> {
    let mut params = CustomerListParams { search: None, limit: 1000, cursor: None };
    let mut out = Vec::new();
    loop {
        let page = catalog.list_customers(org, &params).await?;
        out.extend(page.items);
        match page.next_cursor {
            Some(next) => params.cursor = Some(next),
            None => return Ok(out),
        }
    }
}

/// A customer by `cus_` id or by alias (Meteroid's `AliasOr<CustomerId>`); `None` if none.
pub async fn resolve(
    catalog: &dyn Catalog,
    org: OrganizationId,
    id_or_alias: &str,
) -> Result<Option<Customer>, MeteroidError> {
    let direct = match catalog.get_customer(org, id_or_alias).await {
        Ok(c) => Some(c),
        Err(StoreError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let Some(id) = CustomerId::parse(id_or_alias) else {
        return Ok(direct);
    };
    if let Some(c) = direct.filter(|c| c.id == id) {
        return Ok(Some(c));
    }
    // A customer with an alias is kept under the alias; find it by id.
    Ok(all_customers(catalog, org).await?.into_iter().find(|c| c.id == id))
}

async fn resolve_or_404(
    catalog: &dyn Catalog,
    org: OrganizationId,
    id_or_alias: &str,
) -> Result<Customer, MeteroidError> {
    resolve(catalog, org, id_or_alias)
        .await?
        .ok_or_else(|| MeteroidError::not_found(format!("customer '{id_or_alias}' not found")))
}

fn document(customer: &Customer) -> Map<String, Value> {
    customer.spec.metadata.get(META_KEY).and_then(Value::as_object).cloned().unwrap_or_default()
}

fn invoicing_entity_id(org: OrganizationId) -> String {
    let text = org.to_string();
    format!("ive_{}", &text[OrganizationId::PREFIX.len()..])
}

fn is_archived(customer: &Customer) -> bool {
    document(customer).get("archived_at").is_some_and(|v| !v.is_null())
}

/// The customer as Meteroid's `Customer`: every member its SDK requires is present.
pub fn view(org: OrganizationId, customer: &Customer) -> Value {
    let mut out = document(customer);
    out.insert("id".into(), json!(customer.id.to_string()));
    if customer.spec.external_id != customer.id.to_string() {
        out.insert("alias".into(), json!(customer.spec.external_id));
    }
    out.insert(
        "name".into(),
        json!(customer.spec.name.clone().unwrap_or_else(|| customer.spec.external_id.clone())),
    );
    out.entry("currency").or_insert_with(|| json!("USD"));
    for list in ["invoicing_emails", "custom_taxes", "preferred_locales"] {
        if out.get(list).is_none_or(Value::is_null) {
            out.insert(list.into(), json!([]));
        }
    }
    if out.get("custom_properties").is_none_or(Value::is_null) {
        out.insert("custom_properties".into(), json!({}));
    }
    out.entry("invoicing_entity_id").or_insert_with(|| json!(invoicing_entity_id(org)));
    out.retain(|_, v| !v.is_null());
    Value::Object(out)
}

/// The Meteroid members of a create or replace body, checked.
fn checked_document(body: &Value) -> Result<Map<String, Value>, MeteroidError> {
    let Some(object) = body.as_object() else {
        return Err(MeteroidError::bad_request("the body must be a JSON object"));
    };
    let mut doc = object.clone();
    for managed in ["id", "archived_at"] {
        if doc.remove(managed).is_some() {
            return Err(MeteroidError::bad_request(format!("{managed} is set by the server")));
        }
    }
    check_members(&doc)?;
    Ok(doc)
}

fn check_members(doc: &Map<String, Value>) -> Result<(), MeteroidError> {
    match doc.get("currency") {
        Some(Value::String(c)) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) => {}
        Some(Value::Null) | None => {
            return Err(MeteroidError::bad_request("currency is required (ISO 4217, like EUR)"))
        }
        Some(other) => {
            return Err(MeteroidError::bad_request(format!(
                "currency must be an ISO 4217 code, not {other}"
            )))
        }
    }
    for list in ["invoicing_emails", "custom_taxes", "preferred_locales"] {
        if doc.get(list).is_some_and(|v| !v.is_null() && !v.is_array()) {
            return Err(MeteroidError::bad_request(format!("{list} must be a list")));
        }
    }
    for text in ["name", "alias", "billing_email", "first_name", "last_name"] {
        if doc.get(text).is_some_and(|v| !v.is_null() && !v.is_string()) {
            return Err(MeteroidError::bad_request(format!("{text} must be a string")));
        }
    }
    Ok(())
}

fn display_name(doc: &Map<String, Value>, fallback: &str) -> String {
    let text = |k: &str| doc.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    if let Some(name) = text("name") {
        return name.to_owned();
    }
    let full: Vec<&str> = [text("first_name"), text("last_name")].into_iter().flatten().collect();
    if !full.is_empty() {
        return full.join(" ");
    }
    fallback.to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    order_by: Option<String>,
    page: Option<u32>,
    per_page: Option<u32>,
    search: Option<String>,
    archived: Option<bool>,
}

pub async fn list(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<Value>, MeteroidError> {
    let (page, per_page) = mapping::page_bounds(params.page, params.per_page)?;
    let archived = params.archived.unwrap_or(false);
    let mut customers: Vec<Customer> = all_customers(state.catalog.as_ref(), org)
        .await?
        .into_iter()
        .filter(|c| is_archived(c) == archived)
        .collect();
    if let Some(search) = params.search.as_deref().filter(|s| !s.is_empty()) {
        let needle = search.to_lowercase();
        customers.retain(|c| {
            c.spec.external_id.to_lowercase().contains(&needle)
                || c.spec.name.as_deref().is_some_and(|n| n.to_lowercase().contains(&needle))
        });
    }
    let order = params.order_by.as_deref().unwrap_or("created_at.desc");
    let (column, direction) = order.split_once('.').unwrap_or((order, ""));
    let descending = match direction {
        "asc" => false,
        "desc" => true,
        _ => return Err(bad_order(order)),
    };
    let key = |c: &Customer| -> String {
        match column {
            "name" => c.spec.name.clone().unwrap_or_default(),
            "alias" => c.spec.external_id.clone(),
            "email" => document(c)
                .get("billing_email")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            _ => mapping::datetime(&c.created_at),
        }
    };
    if !matches!(column, "name" | "alias" | "email" | "created_at") {
        return Err(bad_order(order));
    }
    customers.sort_by(|a, b| {
        let o = key(a).cmp(&key(b)).then_with(|| a.id.to_string().cmp(&b.id.to_string()));
        if descending {
            o.reverse()
        } else {
            o
        }
    });
    let items = customers.iter().map(|c| view(org, c)).collect();
    Ok(Json(mapping::paginate(items, page, per_page)))
}

fn bad_order(order: &str) -> MeteroidError {
    MeteroidError::bad_request(format!(
        "order_by must be name, email, alias or created_at followed by .asc or .desc, not \
         '{order}'"
    ))
}

pub async fn create(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), MeteroidError> {
    let mut doc = checked_document(&body)?;
    let id = CustomerId::new();
    let alias = doc.remove("alias").and_then(|v| v.as_str().map(str::to_owned));
    if let Some(alias) = &alias {
        if alias.is_empty() || CustomerId::parse(alias).is_some() {
            return Err(MeteroidError::bad_request(
                "alias must be non-empty and must not look like a customer id",
            ));
        }
    }
    let external_id = alias.unwrap_or_else(|| id.to_string());
    let name = display_name(&doc, &external_id);
    doc.remove("name");
    let definition = json!({
        "external_id": external_id,
        "name": name,
        "metadata": {META_KEY: doc},
    });
    let spec = parse_customer_spec(&definition).map_err(|problems| {
        MeteroidError::bad_request(super::error::problems_message(&problems))
    })?;
    let mut customer = Customer::new(org, spec, time::now());
    customer.id = id;
    state.catalog.create_customer(&customer).await?;
    Ok((StatusCode::CREATED, Json(view(org, &customer))))
}

pub async fn get(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    PathParam(id_or_alias): PathParam,
) -> Result<Json<Value>, MeteroidError> {
    let customer = resolve_or_404(state.catalog.as_ref(), org, &id_or_alias).await?;
    Ok(Json(view(org, &customer)))
}

/// Writes a new Meteroid document (and name) for a customer; the alias cannot change, since
/// events already stored name the customer by it.
async fn save(
    state: &AppState,
    org: OrganizationId,
    customer: &Customer,
    mut doc: Map<String, Value>,
) -> Result<Customer, MeteroidError> {
    if let Some(alias) = doc.remove("alias") {
        let current = (customer.spec.external_id != customer.id.to_string())
            .then(|| customer.spec.external_id.clone());
        if alias.as_str().map(str::to_owned) != current {
            return Err(MeteroidError::bad_request(
                "alias cannot change: stored events name the customer by it",
            ));
        }
    }
    let mut spec = customer.spec.clone();
    spec.name = Some(display_name(&doc, &customer.spec.external_id));
    doc.remove("name");
    spec.metadata.insert(META_KEY.into(), Value::Object(doc));
    Ok(state.catalog.update_customer(org, &customer.spec.external_id, &spec, time::now()).await?)
}

pub async fn replace(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    PathParam(id_or_alias): PathParam,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, MeteroidError> {
    let customer = resolve_or_404(state.catalog.as_ref(), org, &id_or_alias).await?;
    let mut doc = checked_document(&body)?;
    if let Some(archived) = document(&customer).get("archived_at") {
        doc.insert("archived_at".into(), archived.clone());
    }
    let saved = save(&state, org, &customer, doc).await?;
    Ok(Json(view(org, &saved)))
}

pub async fn update(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    PathParam(id_or_alias): PathParam,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, MeteroidError> {
    let customer = resolve_or_404(state.catalog.as_ref(), org, &id_or_alias).await?;
    let Some(patch) = body.as_object() else {
        return Err(MeteroidError::bad_request("the body must be a JSON object"));
    };
    let mut doc = document(&customer);
    doc.insert("name".into(), json!(customer.spec.name));
    for (key, value) in patch {
        match key.as_str() {
            "id" | "archived_at" => {
                return Err(MeteroidError::bad_request(format!("{key} is set by the server")))
            }
            "alias" => {
                doc.insert(key.clone(), value.clone());
            }
            _ if value.is_null() => {
                doc.remove(key);
            }
            _ => {
                doc.insert(key.clone(), value.clone());
            }
        }
    }
    if !doc.contains_key("currency") {
        doc.insert("currency".into(), view(org, &customer)["currency"].clone());
    }
    check_members(&doc)?;
    let saved = save(&state, org, &customer, doc).await?;
    Ok(Json(view(org, &saved)))
}

async fn set_archived(
    state: &AppState,
    org: OrganizationId,
    id_or_alias: &str,
    archived: bool,
) -> Result<StatusCode, MeteroidError> {
    let customer = resolve_or_404(state.catalog.as_ref(), org, id_or_alias).await?;
    if is_archived(&customer) == archived {
        return Ok(StatusCode::NO_CONTENT);
    }
    let mut spec = customer.spec.clone();
    let mut doc = document(&customer);
    if archived {
        doc.insert("archived_at".into(), json!(mapping::datetime(&time::now())));
    } else {
        doc.remove("archived_at");
    }
    spec.metadata.insert(META_KEY.into(), Value::Object(doc));
    state.catalog.update_customer(org, &customer.spec.external_id, &spec, time::now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn archive(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    PathParam(id_or_alias): PathParam,
) -> Result<StatusCode, MeteroidError> {
    set_archived(&state, org, &id_or_alias, true).await
}

pub async fn unarchive(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    PathParam(id_or_alias): PathParam,
) -> Result<StatusCode, MeteroidError> {
    set_archived(&state, org, &id_or_alias, false).await
}
