//! Metric operations over any [`Catalog`]: create, update by merge patch (with the lock rule and
//! optimistic concurrency), archive, unarchive, delete. The API and the CLI both call these, so
//! the rules hold whichever door a change comes through.

use chrono::{DateTime, Utc};
use serde_json::Value;

use odometer_core::metric_input::parse_metric_spec;
use odometer_core::metric_update::{apply_metric_patch, check_lock, MetricLocked};
use odometer_core::{time, Metric, MetricId, MetricSpec, OrganizationId, Problems};

use crate::catalog::{Catalog, MetricRevisionInput};
use crate::error::StoreError;

/// How many times an update is retried when another update of the same metric lands between
/// its read and its write (only when the client did not pin a revision).
const UPDATE_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum MetricError {
    #[error("{0}")]
    Invalid(Problems),
    #[error(transparent)]
    Locked(MetricLocked),
    #[error("the metric is attached to a plan; detach it before deleting it")]
    Attached,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl MetricError {
    /// A stable snake_case code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(problems) => problems.first_code(),
            Self::Locked(_) => "metric_locked",
            Self::Attached => "metric_attached",
            Self::Store(e) => e.code(),
        }
    }
}

/// Finds a live metric by id (`bm_...`) or by code.
pub async fn find_metric(
    catalog: &dyn Catalog,
    org: OrganizationId,
    id_or_code: &str,
) -> Result<Metric, StoreError> {
    match MetricId::parse(id_or_code) {
        Some(id) => {
            let metric = catalog.get_metric(org, id).await?;
            if metric.deleted_at.is_some() {
                return Err(StoreError::not_found(crate::Entity::Metric, id_or_code));
            }
            Ok(metric)
        }
        None => catalog.get_metric_by_code(org, id_or_code).await,
    }
}

/// The definition a query uses (semantics 6.2): revision `revision` when given, else the one
/// current at `as_of` when given, else the latest. `None` when the metric had no revision yet
/// at `as_of`.
pub async fn spec_at(
    catalog: &dyn Catalog,
    org: OrganizationId,
    metric: &Metric,
    revision: Option<u32>,
    as_of: Option<DateTime<Utc>>,
) -> Result<Option<(u32, MetricSpec)>, StoreError> {
    if let Some(n) = revision {
        let found = catalog.get_metric_revision(org, metric.id, n).await?;
        return Ok(Some((found.revision, found.spec)));
    }
    let Some(as_of) = as_of else {
        return Ok(Some((metric.revision, metric.spec.clone())));
    };
    let revisions = catalog.list_metric_revisions(org, metric.id).await?;
    Ok(revisions.into_iter().rev().find(|r| r.effective_at <= as_of).map(|r| (r.revision, r.spec)))
}

/// Validates a definition and stores it as a new metric at revision 1.
pub async fn create_metric(
    catalog: &dyn Catalog,
    org: OrganizationId,
    definition: &Value,
) -> Result<Metric, MetricError> {
    let spec = parse_metric_spec(definition).map_err(MetricError::Invalid)?;
    let metric = Metric::new(org, spec, time::now());
    catalog.create_metric(&metric).await?;
    Ok(metric)
}

/// Applies a JSON merge patch to a live metric. An accepted patch that changes something
/// becomes a new revision; one that changes nothing answers the metric as it is.
pub async fn update_metric(
    catalog: &dyn Catalog,
    org: OrganizationId,
    id_or_code: &str,
    patch: &Value,
) -> Result<Metric, MetricError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = find_metric(catalog, org, id_or_code).await?;
        let next = apply_metric_patch(&current.spec, patch).map_err(MetricError::Invalid)?;
        if let Some(expected) = next.expected_revision {
            if expected != current.revision {
                return Err(
                    StoreError::RevisionConflict { expected, current: current.revision }.into()
                );
            }
        }
        if next.changes.is_empty() {
            return Ok(current);
        }
        let attached = catalog.is_metric_attached(org, current.id).await?;
        if let Err(locked) = check_lock(&current.spec, &next.spec, attached) {
            return Err(MetricError::Locked(locking_plans(catalog, org, &current, locked).await?));
        }
        let revision = MetricRevisionInput {
            previous_revision: current.revision,
            spec: next.spec,
            changes: next.changes,
            effective_at: time::now(),
        };
        match catalog.add_metric_revision(org, current.id, &revision).await {
            Err(StoreError::RevisionConflict { .. })
                if next.expected_revision.is_none() && attempt < UPDATE_ATTEMPTS => {}
            Err(StoreError::MetricLocked { fields }) => {
                let locked = MetricLocked { fields, plans: Vec::new() };
                return Err(MetricError::Locked(
                    locking_plans(catalog, org, &current, locked).await?,
                ));
            }
            other => return Ok(other?),
        }
    }
}

/// Names the plans that lock the metric in a lock refusal, so the refusal says which plan to
/// change.
async fn locking_plans(
    catalog: &dyn Catalog,
    org: OrganizationId,
    metric: &Metric,
    mut locked: MetricLocked,
) -> Result<MetricLocked, StoreError> {
    let plans = catalog.plans_charging_metric(org, metric.id).await?;
    locked.plans = plans.into_iter().map(|plan| plan.spec.code).collect();
    Ok(locked)
}

/// Archives a live metric (idempotent: an archived metric keeps its first archive time).
pub async fn archive_metric(
    catalog: &dyn Catalog,
    org: OrganizationId,
    id_or_code: &str,
) -> Result<Metric, MetricError> {
    let metric = find_metric(catalog, org, id_or_code).await?;
    if metric.archived_at.is_some() {
        return Ok(metric);
    }
    Ok(catalog.set_metric_archived(org, metric.id, Some(time::now())).await?)
}

/// Unarchives a live metric (idempotent).
pub async fn unarchive_metric(
    catalog: &dyn Catalog,
    org: OrganizationId,
    id_or_code: &str,
) -> Result<Metric, MetricError> {
    let metric = find_metric(catalog, org, id_or_code).await?;
    if metric.archived_at.is_none() {
        return Ok(metric);
    }
    Ok(catalog.set_metric_archived(org, metric.id, None).await?)
}

/// Deletes a live metric that no plan uses; its code becomes free, its revisions stay.
pub async fn delete_metric(
    catalog: &dyn Catalog,
    org: OrganizationId,
    id_or_code: &str,
) -> Result<Metric, MetricError> {
    let metric = find_metric(catalog, org, id_or_code).await?;
    if catalog.is_metric_attached(org, metric.id).await? {
        return Err(MetricError::Attached);
    }
    Ok(catalog.delete_metric(org, metric.id, time::now()).await?)
}
