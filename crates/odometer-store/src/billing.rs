//! Current usage of a subscription: its billing period at an instant (anchored, in the
//! customer's zone), and per charge of its plan the usage per bucket and what it costs.
//!
//! Reproducible by construction: an answer is computed *as of* an instant (now, unless one is
//! asked for) and counts only events ingested by then, with each metric's revision current
//! then; asking again later with `as_of` set to the instant an answer reported gives that
//! answer again, whatever was ingested or updated since.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use odometer_core::billing_period::{billing_period, BillingPeriod, BillingPeriodError};
use odometer_core::charge_usage::{charge_usage, ChargeUsage, ChargeUsageError};
use odometer_core::plan::ChargeSpec;
use odometer_core::{time, Metric, OrganizationId, Plan, Subscription};

use crate::catalog::Catalog;
use crate::error::StoreError;
use crate::events::EventStore;
use crate::metrics::spec_at;

/// One charge of the plan over the current period.
#[derive(Debug, Clone, PartialEq)]
pub struct ChargeCurrentUsage {
    pub charge: ChargeSpec,
    pub metric: Metric,
    /// The metric revision the usage was computed with (the one current at `as_of`).
    pub revision: u32,
    pub usage: ChargeUsage,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CurrentUsage {
    pub subscription: Subscription,
    pub plan: Plan,
    pub period: BillingPeriod,
    /// The instant the answer is for: only events ingested by then count.
    pub as_of: DateTime<Utc>,
    pub charges: Vec<ChargeCurrentUsage>,
    /// The sum of the charges' amounts (the plan's base amount is not usage and is not in it).
    pub amount: Decimal,
}

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error(transparent)]
    Period(#[from] BillingPeriodError),
    #[error("metric '{code}' had no revision yet at as_of")]
    NoRevisionAtAsOf { code: String },
    #[error("charge {charge}: {source}")]
    Charge { charge: String, source: ChargeUsageError },
    #[error("the charges' total does not fit in a decimal")]
    Overflow,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl BillingError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Period(e) => e.code(),
            Self::NoRevisionAtAsOf { .. } => "no_revision_at_as_of",
            Self::Charge { source, .. } => source.code(),
            Self::Overflow => "overflow",
            Self::Store(e) => e.code(),
        }
    }
}

/// The current usage of the subscription `external_id`, as of `as_of` (now when `None`).
pub async fn current_usage(
    catalog: &dyn Catalog,
    events: &dyn EventStore,
    org: OrganizationId,
    external_id: &str,
    as_of: Option<DateTime<Utc>>,
) -> Result<CurrentUsage, BillingError> {
    let at = as_of.unwrap_or_else(time::now);
    let subscription = catalog.get_subscription(org, external_id).await?;
    let plan = catalog.get_plan(org, subscription.spec.plan_id).await?;
    let period = billing_period(&subscription.schedule(plan.spec.interval), at)?;
    let precision = plan.spec.precision();
    let mut charges = Vec::with_capacity(plan.spec.charges.len());
    let mut amount = Decimal::ZERO;
    for charge in &plan.spec.charges {
        let metric = catalog.get_metric(org, charge.metric_id).await?;
        let (revision, spec) = spec_at(catalog, org, &metric, None, Some(at))
            .await?
            .ok_or_else(|| BillingError::NoRevisionAtAsOf { code: metric.spec.code.clone() })?;
        // Recurring metrics carry values from before the period.
        let since = (!spec.aggregation.recurring).then_some(period.from);
        let stored = events
            .customer_events(org, &subscription.spec.customer, &spec.event_code, since, period.to)
            .await?;
        let usage = charge_usage(
            &spec,
            &charge.pricing,
            &charge.pricing_group_keys,
            &stored,
            period.from,
            period.to,
            Some(at),
            precision,
        )
        .map_err(|source| BillingError::Charge { charge: charge.id.to_string(), source })?;
        amount = amount.checked_add(usage.amount).ok_or(BillingError::Overflow)?;
        charges.push(ChargeCurrentUsage { charge: charge.clone(), metric, revision, usage });
    }
    Ok(CurrentUsage { subscription, plan, period, as_of: at, charges, amount })
}
