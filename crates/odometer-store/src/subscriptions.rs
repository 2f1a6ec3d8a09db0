//! Subscription operations over any [`Catalog`]: create (the customer must exist, the plan
//! must be live; the time zone defaults to the customer's), patch and terminate.

use chrono_tz::Tz;
use serde_json::Value;

use odometer_core::subscription::{apply_subscription_patch, parse_subscription_input};
use odometer_core::{time, OrganizationId, Problems, Subscription};

use crate::catalog::{Catalog, SubscriptionUpdate};
use crate::error::{Entity, StoreError};
use crate::plans::find_plan;

#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("{0}")]
    Invalid(Problems),
    #[error("a subscription with external id '{external_id}' already exists")]
    ExternalIdTaken { external_id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SubscriptionError {
    /// A stable snake_case code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(problems) => problems.first_code(),
            Self::ExternalIdTaken { .. } => "external_id_taken",
            Self::Store(e) => e.code(),
        }
    }
}

fn problem(path: &str, code: &'static str, message: String) -> SubscriptionError {
    let mut problems = Problems::new();
    problems.push(path, code, message);
    SubscriptionError::Invalid(problems)
}

fn unknown_customer(external_id: &str) -> SubscriptionError {
    problem(
        "customer",
        "unknown_customer",
        format!("no customer has the external id '{external_id}'"),
    )
}

fn unknown_plan(id_or_code: &str) -> SubscriptionError {
    problem("plan", "unknown_plan", format!("no plan has the id or code '{id_or_code}'"))
}

/// Validates a definition and stores it as a new subscription. An unknown customer or plan is
/// a validation problem of the member that names it (`unknown_customer`, `unknown_plan`).
pub async fn create_subscription(
    catalog: &dyn Catalog,
    org: OrganizationId,
    definition: &Value,
) -> Result<Subscription, SubscriptionError> {
    let input = parse_subscription_input(definition).map_err(SubscriptionError::Invalid)?;
    let customer = match catalog.get_customer(org, &input.customer).await {
        Ok(customer) => customer,
        Err(StoreError::NotFound { entity: Entity::Customer, .. }) => {
            return Err(unknown_customer(&input.customer))
        }
        Err(other) => return Err(other.into()),
    };
    let plan = match find_plan(catalog, org, &input.plan).await {
        Ok(plan) => plan,
        Err(StoreError::NotFound { entity: Entity::Plan, .. }) => {
            return Err(unknown_plan(&input.plan))
        }
        Err(other) => return Err(other.into()),
    };
    // A customer's zone was validated when it was set; one that no longer parses (a zone
    // dropped from the database) falls back to UTC rather than refusing the subscription.
    let customer_zone = customer.spec.timezone.as_deref().and_then(|z| z.parse::<Tz>().ok());
    let now = time::now();
    let (customer_ref, plan_ref) = (input.customer.clone(), input.plan.clone());
    let spec = input.into_spec(plan.id, customer_zone, now).map_err(SubscriptionError::Invalid)?;
    let subscription = Subscription::new(org, spec, now);
    match catalog.create_subscription(&subscription).await {
        Ok(()) => Ok(subscription),
        Err(StoreError::ExternalIdTaken { external_id }) => {
            Err(SubscriptionError::ExternalIdTaken { external_id })
        }
        // The customer or plan went away since they were looked up.
        Err(StoreError::NotFound { entity: Entity::Customer, .. }) => {
            Err(unknown_customer(&customer_ref))
        }
        Err(StoreError::NotFound { entity: Entity::Plan, .. }) => Err(unknown_plan(&plan_ref)),
        Err(other) => Err(other.into()),
    }
}

/// Applies a JSON merge patch (`name`, `ended_at`, `billing_anchor`) to an active
/// subscription; a terminated one is `subscription_terminated`.
pub async fn update_subscription(
    catalog: &dyn Catalog,
    org: OrganizationId,
    external_id: &str,
    patch: &Value,
) -> Result<Subscription, SubscriptionError> {
    let current = catalog.get_subscription(org, external_id).await?;
    let now = time::now();
    if current.status_at(now) == odometer_core::SubscriptionStatus::Terminated {
        return Err(StoreError::SubscriptionTerminated.into());
    }
    let spec =
        apply_subscription_patch(&current.spec, patch).map_err(SubscriptionError::Invalid)?;
    if spec == current.spec {
        return Ok(current);
    }
    let update = SubscriptionUpdate {
        name: spec.name,
        ended_at: spec.ended_at,
        billing_anchor: spec.billing_anchor,
        updated_at: now,
    };
    Ok(catalog.update_subscription(org, external_id, &update).await?)
}

/// Terminates a subscription now (idempotent: a terminated one is answered as it is).
pub async fn terminate_subscription(
    catalog: &dyn Catalog,
    org: OrganizationId,
    external_id: &str,
) -> Result<Subscription, SubscriptionError> {
    Ok(catalog.terminate_subscription(org, external_id, time::now()).await?)
}
