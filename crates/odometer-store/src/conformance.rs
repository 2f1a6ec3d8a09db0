//! The catalog conformance suite: one set of behavioural tests every [`Catalog`] backend runs.
//!
//! Each suite function takes a fresh, empty catalog and panics with a message naming what
//! broke. Backends do not call them one by one: their test crate invokes
//! [`catalog_conformance_tests!`](crate::catalog_conformance_tests) once, which expands to one
//! `#[tokio::test]` per suite function, so a new check added here runs on every backend
//! without touching them.
//!
//! The suite pins down the contract the trait's documentation states in prose, plus these
//! choices a backend must share:
//! - writes to a deleted metric (a revision, archive, delete again, a new attachment) fail
//!   with [`StoreError::MetricDeleted`], not `NotFound`: the metric is still readable by id;
//! - anything of another organization is `NotFound`, for reads and writes alike, and changes
//!   nothing;
//! - creating a key, metric or customer for an unknown organization is
//!   `organization_not_found`;
//! - a list page that ends exactly at the last item has no `next_cursor`;
//! - a cursor stays valid when the item it names is deleted;
//! - revoking a revoked key keeps its first revocation time;
//! - `find_api_key` answers the key with `last_used_at` set (a backend may refresh it
//!   coarsely, so only "set, and not before the key was created" is checked);
//! - writes to a deleted plan are `plan_not_found` (it stays readable by id with
//!   `get_plan`); a plan charging a metric that is not live is refused whole, with
//!   `metric_not_found` or `metric_deleted`;
//! - a subscription's status is computed when it is read; terminating it twice keeps the
//!   first termination.

// Test code: a failed expectation is meant to panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod customers;
pub mod events;
mod metrics;
mod operations;
mod organizations;
mod plans;

use std::fmt::Debug;

use serde_json::Value;

use odometer_core::metric_input::parse_metric_spec;
use odometer_core::{time, Metric, MetricSpec, Organization, OrganizationId, OrganizationSettings};

use crate::catalog::Catalog;
use crate::error::{Entity, StoreError};

pub use customers::{
    customer_external_ids_are_unique_among_live_customers, customer_lists_page_and_search,
    customers_are_created_read_updated_and_deleted,
};
pub use metrics::{
    deleted_metrics_refuse_writes_but_stay_readable, invalid_cursors_are_rejected,
    metric_attachments_count_every_attacher, metric_codes_are_unique_among_live_metrics,
    metric_lists_filter_by_archive_state, metric_lists_page_oldest_first,
    metric_lists_search_code_and_name, metric_revisions_are_numbered_and_checked,
    metrics_are_archived_and_unarchived, metrics_are_created_and_read_by_id_and_code,
    metrics_reading_event_code_include_archived_not_deleted,
    revisions_of_attached_metrics_keep_their_locked_fields,
    revisions_that_change_the_code_check_it_is_free,
};
pub use operations::{
    customer_operations_validate_and_patch, metric_operations_apply_patches_and_the_lock_rule,
    metric_operations_archive_and_delete, tenants_authenticate_by_secret,
};
pub use organizations::{
    api_keys_are_found_by_hash_and_revoked, api_keys_store_only_the_hash,
    organizations_are_created_listed_and_updated, other_organizations_see_nothing,
    writes_for_unknown_organizations_fail,
};
pub use plans::{
    plan_and_subscription_operations_apply_the_rules, plan_codes_are_unique_among_live_plans,
    plan_lists_page_and_search, plans_are_created_read_replaced_and_deleted,
    plans_attach_the_metrics_they_charge, plans_with_active_subscriptions_cannot_be_deleted,
    subscription_lists_filter_by_customer_plan_and_status,
    subscriptions_are_created_read_updated_and_terminated,
};

/// Expands to one `#[tokio::test]` per conformance suite function, named after it, in the
/// module where it is invoked (invoke it inside a `mod` of its own to run the suite on several
/// configurations of one backend).
///
/// `$make` is a path to (or any expression evaluating to) an `async fn() -> (C, G)` with no
/// arguments, where `C: Catalog` is a fresh, empty catalog and `G` is anything that must stay
/// alive while the test runs (a `TempDir` holding the database, a container handle; `()` for
/// an in-memory backend). It is called once per test, so tests never share state. The crate
/// invoking the macro needs `tokio` (with the `macros` and `rt` features) as a dependency.
///
/// ```text
/// async fn sqlite_catalog() -> (SqliteCatalog, tempfile::TempDir) {
///     let dir = tempfile::tempdir().unwrap();
///     let catalog = SqliteCatalog::open(&dir.path().join("catalog.db")).await.unwrap();
///     (catalog, dir)
/// }
///
/// mod sqlite_file {
///     odometer_store::catalog_conformance_tests!(super::sqlite_catalog);
/// }
/// ```
#[macro_export]
macro_rules! catalog_conformance_tests {
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (catalog, _guard) = ($make)().await;
                $crate::conformance::$name(&catalog).await;
            }
        )*
    };
    ($make:expr) => {
        $crate::catalog_conformance_tests!(@tests $make;
            organizations_are_created_listed_and_updated,
            api_keys_are_found_by_hash_and_revoked,
            api_keys_store_only_the_hash,
            writes_for_unknown_organizations_fail,
            other_organizations_see_nothing,
            metrics_are_created_and_read_by_id_and_code,
            metric_codes_are_unique_among_live_metrics,
            metric_lists_page_oldest_first,
            metric_lists_search_code_and_name,
            metric_lists_filter_by_archive_state,
            invalid_cursors_are_rejected,
            metrics_reading_event_code_include_archived_not_deleted,
            metric_revisions_are_numbered_and_checked,
            revisions_that_change_the_code_check_it_is_free,
            deleted_metrics_refuse_writes_but_stay_readable,
            metrics_are_archived_and_unarchived,
            metric_attachments_count_every_attacher,
            revisions_of_attached_metrics_keep_their_locked_fields,
            customers_are_created_read_updated_and_deleted,
            customer_external_ids_are_unique_among_live_customers,
            customer_lists_page_and_search,
            metric_operations_apply_patches_and_the_lock_rule,
            metric_operations_archive_and_delete,
            customer_operations_validate_and_patch,
            tenants_authenticate_by_secret,
            plans_are_created_read_replaced_and_deleted,
            plan_codes_are_unique_among_live_plans,
            plan_lists_page_and_search,
            plans_attach_the_metrics_they_charge,
            plans_with_active_subscriptions_cannot_be_deleted,
            subscriptions_are_created_read_updated_and_terminated,
            subscription_lists_filter_by_customer_plan_and_status,
            plan_and_subscription_operations_apply_the_rules,
        );
    };
}

/// Creates an organization with default settings.
pub async fn new_organization(catalog: &dyn Catalog, name: &str) -> Organization {
    let org = Organization {
        id: OrganizationId::new(),
        name: name.to_owned(),
        settings: OrganizationSettings::default(),
        created_at: time::now(),
    };
    catalog.create_organization(&org).await.expect("create_organization");
    org
}

/// A valid metric spec from its JSON definition.
pub fn spec(definition: Value) -> MetricSpec {
    parse_metric_spec(&definition)
        .unwrap_or_else(|problems| panic!("invalid test metric {definition}: {problems}"))
}

/// A new metric at revision 1 (not stored).
pub fn new_metric(org: OrganizationId, spec: MetricSpec) -> Metric {
    Metric::new(org, spec, time::now())
}

/// Stores a new metric from its JSON definition.
pub async fn create_metric(
    catalog: &dyn Catalog,
    org: OrganizationId,
    definition: Value,
) -> Metric {
    let metric = new_metric(org, spec(definition));
    catalog.create_metric(&metric).await.expect("create_metric");
    metric
}

/// A `count` metric with this code and name.
pub fn count_metric(code: &str, name: &str) -> Value {
    serde_json::json!({"code": code, "name": name, "aggregation": {"type": "count"}})
}

/// Panics unless `result` is a not-found error for `entity`.
#[track_caller]
pub fn assert_not_found<T: Debug>(result: Result<T, StoreError>, entity: Entity, what: &str) {
    match result {
        Err(StoreError::NotFound { entity: found, .. }) if found == entity => {}
        other => panic!("{what}: expected {} not found, got {other:?}", entity.as_str()),
    }
}

/// Panics unless `result` is exactly the error `expected`.
#[track_caller]
pub fn assert_error<T: Debug>(result: Result<T, StoreError>, expected: StoreError, what: &str) {
    match result {
        Err(error) => assert_eq!(error, expected, "{what}"),
        Ok(value) => panic!("{what}: expected {expected:?}, got Ok({value:?})"),
    }
}
