//! Plan operations over any [`Catalog`]: create, replace and delete, with validation and the
//! resolution of each charge's metric (by id or code, live metrics only). The catalog keeps
//! the metrics' attachments in step with the plans, which is what locks their fields
//! (semantics 6.3).

use serde_json::Value;

use odometer_core::plan::{parse_plan_input, ChargeSpec, MetricRef, PlanInput};
use odometer_core::{time, MetricId, OrganizationId, Plan, PlanId, PlanSpec, Problems};

use crate::catalog::Catalog;
use crate::error::{Entity, StoreError};
use crate::metrics::find_metric;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Invalid(Problems),
    #[error("a plan with code '{code}' already exists")]
    CodeTaken { code: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PlanError {
    /// A stable snake_case code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(problems) => problems.first_code(),
            Self::CodeTaken { .. } => "code_taken",
            Self::Store(e) => e.code(),
        }
    }

    /// The catalog's `code_taken` said of a plan.
    fn from_store(error: StoreError) -> Self {
        match error {
            StoreError::CodeTaken { code } => Self::CodeTaken { code },
            other => Self::Store(other),
        }
    }
}

/// Finds a live plan by id (`plan_...`) or by code.
pub async fn find_plan(
    catalog: &dyn Catalog,
    org: OrganizationId,
    id_or_code: &str,
) -> Result<Plan, StoreError> {
    match PlanId::parse(id_or_code) {
        Some(id) => {
            let plan = catalog.get_plan(org, id).await?;
            if !plan.is_live() {
                return Err(StoreError::not_found(Entity::Plan, id_or_code));
            }
            Ok(plan)
        }
        None => catalog.get_plan_by_code(org, id_or_code).await,
    }
}

/// Validates a definition and stores it as a new plan; the metrics it charges become
/// attached.
pub async fn create_plan(
    catalog: &dyn Catalog,
    org: OrganizationId,
    definition: &Value,
) -> Result<Plan, PlanError> {
    let spec = resolve(catalog, org, definition, &[]).await?;
    let plan = Plan::new(org, spec, time::now());
    catalog.create_plan(&plan).await.map_err(PlanError::from_store)?;
    Ok(plan)
}

/// Replaces a live plan's definition (`PUT`): charges naming one of the plan's charge ids keep
/// it, the others are new. Attachments move to the metrics the new charges read.
pub async fn replace_plan(
    catalog: &dyn Catalog,
    org: OrganizationId,
    id_or_code: &str,
    definition: &Value,
) -> Result<Plan, PlanError> {
    let current = find_plan(catalog, org, id_or_code).await?;
    let spec = resolve(catalog, org, definition, &current.spec.charges).await?;
    if spec == current.spec {
        return Ok(current);
    }
    let plan = catalog
        .update_plan(org, current.id, &spec, time::now())
        .await
        .map_err(PlanError::from_store)?;
    Ok(plan)
}

/// Deletes a live plan that no active subscription is on; its code becomes free and the
/// metrics it charged are no longer attached by it.
pub async fn delete_plan(
    catalog: &dyn Catalog,
    org: OrganizationId,
    id_or_code: &str,
) -> Result<Plan, PlanError> {
    let plan = find_plan(catalog, org, id_or_code).await?;
    Ok(catalog.delete_plan(org, plan.id, time::now()).await?)
}

/// Parses a definition and resolves its charges' metrics and ids.
async fn resolve(
    catalog: &dyn Catalog,
    org: OrganizationId,
    definition: &Value,
    existing: &[ChargeSpec],
) -> Result<PlanSpec, PlanError> {
    let input: PlanInput = parse_plan_input(definition).map_err(PlanError::Invalid)?;
    let mut metrics: Vec<Option<MetricId>> = Vec::with_capacity(input.charges.len());
    for charge in &input.charges {
        metrics.push(resolve_metric(catalog, org, &charge.metric).await?);
    }
    input.resolve(&metrics, existing).map_err(PlanError::Invalid)
}

/// The live metric a charge names; `None` when there is none.
async fn resolve_metric(
    catalog: &dyn Catalog,
    org: OrganizationId,
    metric: &MetricRef,
) -> Result<Option<MetricId>, StoreError> {
    match find_metric(catalog, org, &metric.to_string()).await {
        Ok(found) => Ok(Some(found.id)),
        Err(StoreError::NotFound { entity: Entity::Metric, .. }) => Ok(None),
        Err(other) => Err(other),
    }
}
