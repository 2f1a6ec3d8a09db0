//! Odometer's domain: typed ids, metric definitions and their revisions, the update and lock
//! rules, expressions, customers and organizations. No I/O, no async, no HTTP, no SQL.

pub mod billing_period;
pub mod charge_usage;
pub mod customer;
pub mod engine;
pub mod event;
pub mod explain;
pub mod expression;
pub mod id;
pub mod input;
pub mod intake;
pub mod metric;
pub mod metric_input;
pub mod metric_update;
pub mod plan;
pub mod pricing;
pub mod problem;
pub mod sql_metric;
pub mod subscription;
pub mod time;
pub mod usage;
pub mod usage_index;

pub use customer::{Customer, CustomerSpec, Organization, OrganizationSettings};
pub use id::{ApiKeyId, CustomerId, MetricId, OrganizationId};
pub use id::{ChargeId, PlanId, SubscriptionId};
pub use metric::{Metric, MetricRevision, MetricSpec};
pub use plan::{ChargeSpec, Plan, PlanSpec};
pub use problem::{Problem, Problems};
pub use subscription::{Subscription, SubscriptionSpec, SubscriptionStatus};
