//! Previewing a metric update (semantics 6.4): the proposed definition evaluated over a period
//! for all or some customers, beside the current one, without saving anything.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;

use odometer_core::metric::FieldChange;
use odometer_core::metric_update::{apply_metric_patch, check_lock};
use odometer_core::usage::{UsageQuery, UsageResult, WindowSize, DEFAULT_GROUP_LIMIT};
use odometer_core::{Metric, MetricSpec, OrganizationId, Problems};

use odometer_core::charge_usage::charge_usage;
use odometer_core::SubscriptionStatus;

use crate::catalog::{Catalog, CustomerListParams, SubscriptionListParams};
use crate::error::StoreError;
use crate::events::{EventStore, UsageQueryError};
use crate::metrics::find_metric;

/// Customers evaluated per usage statement.
const CHUNK: usize = 1000;

/// The most customers one preview evaluates (name them to preview others).
pub const MAX_PREVIEW_CUSTOMERS: usize = 100_000;

#[derive(Debug, Clone, PartialEq)]
pub struct PreviewRequest {
    pub patch: Value,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// External ids; every customer of the organization when `None`.
    pub customers: Option<Vec<String>>,
}

/// One customer's value under the current and the proposed definition (the period's total;
/// `None` when the aggregation has no value, like the `max` of no events).
#[derive(Debug, Clone, PartialEq)]
pub struct PreviewRow {
    pub customer: String,
    pub current: Option<Decimal>,
    pub proposed: Option<Decimal>,
    /// `proposed - current`, an absent value counting as 0; `None` when both are absent.
    pub difference: Option<Decimal>,
    /// What the customer's active subscriptions would be charged for the metric over the
    /// period, under each definition (one entry per subscription whose plan charges it).
    pub amounts: Vec<AmountPreview>,
}

/// A subscription's charges on the metric over the preview period, under the current and the
/// proposed definition.
#[derive(Debug, Clone, PartialEq)]
pub struct AmountPreview {
    pub subscription: String,
    pub plan_code: String,
    pub currency: String,
    pub current: Decimal,
    pub proposed: Decimal,
    pub difference: Decimal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    pub metric: Metric,
    pub proposed: MetricSpec,
    pub changes: Vec<FieldChange>,
    /// Locked fields the patch changes (semantics 6.3).
    pub locked_fields: Vec<&'static str>,
    /// Whether saving the patch would be refused: it changes locked fields of an attached metric.
    pub would_be_refused: bool,
    /// Sorted by the size of the difference, largest first, then by customer.
    pub rows: Vec<PreviewRow>,
}

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("{0}")]
    Invalid(Problems),
    #[error("more than {MAX_PREVIEW_CUSTOMERS} customers: name the customers to preview")]
    TooManyCustomers,
    #[error(transparent)]
    Usage(#[from] UsageQueryError),
    /// A proposed definition that cannot be priced (a charge's error code and message).
    #[error("{1}")]
    Pricing(&'static str, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PreviewError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(problems) => problems.first_code(),
            Self::TooManyCustomers => "too_many_customers",
            Self::Usage(e) => e.code(),
            Self::Pricing(code, _) => code,
            Self::Store(e) => e.code(),
        }
    }
}

/// Evaluates `request.patch` against the live metric `id_or_code` without saving it.
pub async fn preview_metric_update(
    catalog: &dyn Catalog,
    events: &dyn EventStore,
    org: OrganizationId,
    id_or_code: &str,
    request: &PreviewRequest,
) -> Result<Preview, PreviewError> {
    let metric = find_metric(catalog, org, id_or_code).await?;
    let next = apply_metric_patch(&metric.spec, &request.patch).map_err(PreviewError::Invalid)?;
    let locked_fields =
        check_lock(&metric.spec, &next.spec, true).err().map_or(Vec::new(), |l| l.fields);
    let would_be_refused =
        !locked_fields.is_empty() && catalog.is_metric_attached(org, metric.id).await?;
    let customers = match &request.customers {
        Some(named) => {
            for customer in named {
                catalog.get_customer(org, customer).await?;
            }
            named.clone()
        }
        None => all_customers(catalog, org).await?,
    };
    let query = UsageQuery {
        from: request.from,
        to: request.to,
        window: WindowSize::None,
        timezone: chrono_tz::Tz::UTC,
        group_by: Vec::new(),
        as_of: None,
        group_limit: DEFAULT_GROUP_LIMIT,
    };
    let mut rows = Vec::with_capacity(customers.len());
    for chunk in customers.chunks(CHUNK) {
        let current = events.usage_of_customers(org, chunk, &metric.spec, &query).await?;
        let proposed = events.usage_of_customers(org, chunk, &next.spec, &query).await?;
        for ((customer, current), proposed) in chunk.iter().zip(&current).zip(&proposed) {
            let (current, proposed) = (total(current), total(proposed));
            let difference = match (current, proposed) {
                (None, None) => None,
                (c, p) => p.unwrap_or_default().checked_sub(c.unwrap_or_default()),
            };
            rows.push(PreviewRow {
                customer: customer.clone(),
                current,
                proposed,
                difference,
                amounts: Vec::new(),
            });
        }
    }
    price_rows(catalog, events, org, &metric, &next.spec, request, &mut rows).await?;
    rows.sort_by(|a, b| {
        let size = |r: &PreviewRow| r.difference.map(|d| d.abs()).unwrap_or_default();
        size(b).cmp(&size(a)).then_with(|| a.customer.cmp(&b.customer))
    });
    Ok(Preview {
        metric,
        proposed: next.spec,
        changes: next.changes,
        locked_fields,
        would_be_refused,
        rows,
    })
}

/// Fills in [`PreviewRow::amounts`] for customers with an active subscription to a plan that
/// charges the metric: each such charge priced over the period under both definitions.
async fn price_rows(
    catalog: &dyn Catalog,
    events: &dyn EventStore,
    org: OrganizationId,
    metric: &Metric,
    proposed: &MetricSpec,
    request: &PreviewRequest,
    rows: &mut [PreviewRow],
) -> Result<(), PreviewError> {
    let plans = catalog.plans_charging_metric(org, metric.id).await?;
    if plans.is_empty() {
        return Ok(());
    }
    // Each plan's active subscriptions, once, by customer.
    let now = odometer_core::time::now();
    let mut subscribed: HashMap<String, Vec<(usize, String)>> = HashMap::new();
    for (p, plan) in plans.iter().enumerate() {
        let mut params = SubscriptionListParams {
            customer: None,
            plan_id: Some(plan.id),
            status: Some(SubscriptionStatus::Active),
            limit: 1000,
            cursor: None,
        };
        loop {
            let page = catalog.list_subscriptions(org, &params).await?;
            for subscription in page.items {
                if subscription.status_at(now) == SubscriptionStatus::Active {
                    let spec = subscription.spec;
                    subscribed.entry(spec.customer).or_default().push((p, spec.external_id));
                }
            }
            match page.next_cursor {
                Some(next) => params.cursor = Some(next),
                None => break,
            }
        }
    }
    let specs = [&metric.spec, proposed];
    for row in rows.iter_mut() {
        let Some(subscriptions) = subscribed.get(&row.customer) else { continue };
        // The customer's events under each definition, read once.
        let mut stored = Vec::with_capacity(specs.len());
        for spec in specs {
            let since = (!spec.aggregation.recurring).then_some(request.from);
            stored.push(
                events
                    .customer_events(org, &row.customer, &spec.event_code, since, request.to)
                    .await?,
            );
        }
        for (p, external_id) in subscriptions {
            let plan = &plans[*p];
            let mut amounts = [Decimal::ZERO, Decimal::ZERO];
            for (i, spec) in specs.into_iter().enumerate() {
                for charge in plan.spec.charges.iter().filter(|c| c.metric_id == metric.id) {
                    let usage = charge_usage(
                        spec,
                        &charge.pricing,
                        &charge.pricing_group_keys,
                        &stored[i],
                        request.from,
                        request.to,
                        None,
                        plan.spec.precision(),
                    )
                    .map_err(|e| PreviewError::Pricing(e.code(), e.to_string()))?;
                    amounts[i] = amounts[i]
                        .checked_add(usage.amount)
                        .ok_or(PreviewError::Pricing("overflow", "amount overflow".into()))?;
                }
            }
            row.amounts.push(AmountPreview {
                subscription: external_id.clone(),
                plan_code: plan.spec.code.clone(),
                currency: plan.spec.currency.clone(),
                current: amounts[0],
                proposed: amounts[1],
                difference: amounts[1] - amounts[0],
            });
        }
    }
    Ok(())
}

fn total(result: &UsageResult) -> Option<Decimal> {
    result.windows.first().and_then(|w| w.total)
}

/// Every customer's external id, in the catalog's order.
async fn all_customers(
    catalog: &dyn Catalog,
    org: OrganizationId,
) -> Result<Vec<String>, PreviewError> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let params = CustomerListParams { search: None, limit: 1000, cursor };
        let page = catalog.list_customers(org, &params).await?;
        all.extend(page.items.into_iter().map(|c| c.spec.external_id));
        if all.len() > MAX_PREVIEW_CUSTOMERS {
            return Err(PreviewError::TooManyCustomers);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(all),
        }
    }
}
