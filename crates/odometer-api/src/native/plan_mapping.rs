//! The native mapping of plans and subscriptions (core -> [`super::plan_dto`]), beside
//! [`super::mapping`]. A charge names its metric, and a subscription its plan, by id and
//! current code; the handlers look the codes up and pass them in.

use std::collections::HashMap;

use odometer_core::pricing::ChargePricing;
use odometer_core::subscription::billing_anchor_text;
use odometer_core::time::format_micros;
use odometer_core::{ChargeSpec, MetricId, Plan, Subscription};

use super::plan_dto::{PlanChargeDto, PlanChargeFilterDto, PlanDto, RefDto, SubscriptionDto};

/// Metric ids -> their current codes.
pub type MetricCodes = HashMap<MetricId, String>;

pub fn plan(p: &Plan, metric_codes: &MetricCodes) -> PlanDto {
    PlanDto {
        id: p.id.to_string(),
        code: p.spec.code.clone(),
        name: p.spec.name.clone(),
        description: p.spec.description.clone(),
        interval: p.spec.interval.as_str().to_owned(),
        currency: p.spec.currency.clone(),
        amount: p.spec.amount.to_string(),
        pay_in_advance: p.spec.pay_in_advance,
        charges: p.spec.charges.iter().map(|c| charge(c, metric_codes)).collect(),
        created_at: format_micros(&p.created_at),
        updated_at: format_micros(&p.updated_at),
        deleted_at: p.deleted_at.as_ref().map(format_micros),
    }
}

fn charge(c: &ChargeSpec, metric_codes: &MetricCodes) -> PlanChargeDto {
    let ChargePricing { model, filters } = &c.pricing;
    PlanChargeDto {
        id: c.id.to_string(),
        metric: RefDto {
            id: c.metric_id.to_string(),
            code: metric_codes.get(&c.metric_id).cloned().unwrap_or_default(),
        },
        charge_model: model.kind().as_str().to_owned(),
        properties: model.properties_json(),
        filters: filters
            .iter()
            .map(|f| PlanChargeFilterDto {
                values: f.values.clone(),
                properties: f.model.properties_json(),
                invoice_display_name: f.invoice_display_name.clone(),
            })
            .collect(),
        pricing_group_keys: c.pricing_group_keys.clone(),
        invoice_display_name: c.invoice_display_name.clone(),
    }
}

/// `plan_code` is the current code of the subscription's plan.
pub fn subscription(s: &Subscription, plan_code: &str) -> SubscriptionDto {
    SubscriptionDto {
        id: s.id.to_string(),
        external_id: s.spec.external_id.clone(),
        customer: s.spec.customer.clone(),
        plan: RefDto { id: s.spec.plan_id.to_string(), code: plan_code.to_owned() },
        name: s.spec.name.clone(),
        status: s.status.as_str().to_owned(),
        started_at: format_micros(&s.spec.started_at),
        ended_at: s.spec.ended_at.as_ref().map(format_micros),
        terminated_at: s.terminated_at.as_ref().map(format_micros),
        billing_anchor: billing_anchor_text(s.spec.billing_anchor),
        timezone: s.spec.timezone.name().to_owned(),
        created_at: format_micros(&s.created_at),
        updated_at: format_micros(&s.updated_at),
    }
}
