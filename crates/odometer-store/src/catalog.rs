//! The `Catalog` trait: organizations, API keys, metrics with their revisions, customers,
//! plans and subscriptions.
//!
//! A catalog stores what it is given and enforces the invariants only storage can enforce
//! atomically (unique codes among live metrics and plans, revision numbers without gaps,
//! optimistic concurrency, metric attachments derived from live plans' charges). Validation and
//! the update rules live in `odometer-core`; the operations that combine both are in
//! [`crate::metrics`], [`crate::plans`] and [`crate::subscriptions`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use odometer_core::billing_period::BillingAnchor;
use odometer_core::metric::FieldChange;
use odometer_core::{
    ApiKeyId, Customer, CustomerSpec, Metric, MetricId, MetricRevision, MetricSpec, Organization,
    OrganizationId, OrganizationSettings, Plan, PlanId, PlanSpec, Subscription, SubscriptionStatus,
};

use crate::error::StoreError;

/// A page of a list and the cursor of the next page (`None` on the last page).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Which metrics a list shows, by archive state (deleted metrics are never listed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArchivedFilter {
    /// Only metrics that are not archived (the default).
    #[default]
    Active,
    /// Only archived metrics.
    Archived,
    /// Both.
    All,
}

/// Parameters of a metric list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricListParams {
    /// Case-insensitive substring of the code or the name.
    pub search: Option<String>,
    pub archived: ArchivedFilter,
    /// 1 to 1000.
    pub limit: u32,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Parameters of a customer list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerListParams {
    /// Case-insensitive substring of the external id, the name or the email.
    pub search: Option<String>,
    pub limit: u32,
    pub cursor: Option<String>,
}

/// Parameters of a plan list (live plans only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanListParams {
    /// Case-insensitive substring of the code or the name.
    pub search: Option<String>,
    pub limit: u32,
    pub cursor: Option<String>,
}

/// Parameters of a subscription list; every filter given must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionListParams {
    /// The customer's external id (a live customer's).
    pub customer: Option<String>,
    pub plan_id: Option<PlanId>,
    /// The status at the time of the call.
    pub status: Option<SubscriptionStatus>,
    pub limit: u32,
    pub cursor: Option<String>,
}

/// What an update of a subscription sets: the members that may change after creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionUpdate {
    pub name: Option<String>,
    pub ended_at: Option<DateTime<Utc>>,
    pub billing_anchor: BillingAnchor,
    pub updated_at: DateTime<Utc>,
}

/// A new revision to store for a metric.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRevisionInput {
    /// The revision this one replaces; the write fails with `revision_conflict` if another
    /// update got there first.
    pub previous_revision: u32,
    pub spec: MetricSpec,
    pub changes: Vec<FieldChange>,
    pub effective_at: DateTime<Utc>,
}

/// What is kept about an API key: never the key itself, only its hash and a short prefix to
/// recognise it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub organization_id: OrganizationId,
    pub name: String,
    /// The first characters of the secret, for people to tell keys apart (`odo_4kX2`).
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A new API key: its record and the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub key: ApiKey,
    /// SHA-256 of the secret, lowercase hex ([`crate::keys::hash_secret`]).
    pub secret_hash: String,
}

/// Where metric definitions, customers, organizations and keys are kept.
///
/// Every method but the organization and key administration takes the organization it acts
/// for, and never sees or changes anything of another organization.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// Whether the store answers (for `/healthz`).
    async fn ping(&self) -> Result<(), StoreError>;

    // --- organizations and keys -------------------------------------------------------------
    async fn create_organization(&self, org: &Organization) -> Result<(), StoreError>;
    async fn get_organization(&self, id: OrganizationId) -> Result<Organization, StoreError>;
    /// All organizations, oldest first.
    async fn list_organizations(&self) -> Result<Vec<Organization>, StoreError>;
    async fn update_organization_settings(
        &self,
        id: OrganizationId,
        settings: &OrganizationSettings,
    ) -> Result<Organization, StoreError>;

    async fn create_api_key(&self, key: &NewApiKey) -> Result<(), StoreError>;
    /// The live (not revoked) key whose secret hashes to `secret_hash`, marking it used.
    async fn find_api_key(&self, secret_hash: &str) -> Result<Option<ApiKey>, StoreError>;
    async fn list_api_keys(&self, org: OrganizationId) -> Result<Vec<ApiKey>, StoreError>;
    /// Revokes a key; revoking a revoked key is not an error.
    async fn revoke_api_key(&self, org: OrganizationId, id: ApiKeyId)
        -> Result<ApiKey, StoreError>;

    // --- metrics ---------------------------------------------------------------------------
    /// Stores a new metric and its revision 1. Fails with `code_taken` when a live (not
    /// deleted) metric of the organization has the same code.
    async fn create_metric(&self, metric: &Metric) -> Result<(), StoreError>;
    /// A metric by id, deleted or not.
    async fn get_metric(&self, org: OrganizationId, id: MetricId) -> Result<Metric, StoreError>;
    /// The live metric with this code.
    async fn get_metric_by_code(
        &self,
        org: OrganizationId,
        code: &str,
    ) -> Result<Metric, StoreError>;
    /// Live metrics, oldest first, one page.
    async fn list_metrics(
        &self,
        org: OrganizationId,
        params: &MetricListParams,
    ) -> Result<Page<Metric>, StoreError>;
    /// Live metrics (archived or not) that read this event code.
    async fn metrics_reading_event_code(
        &self,
        org: OrganizationId,
        event_code: &str,
    ) -> Result<Vec<Metric>, StoreError>;
    /// Stores the next revision of a live metric and makes it current, atomically.
    async fn add_metric_revision(
        &self,
        org: OrganizationId,
        id: MetricId,
        revision: &MetricRevisionInput,
    ) -> Result<Metric, StoreError>;
    /// Sets or clears `archived_at` of a live metric.
    async fn set_metric_archived(
        &self,
        org: OrganizationId,
        id: MetricId,
        archived_at: Option<DateTime<Utc>>,
    ) -> Result<Metric, StoreError>;
    /// Marks a live metric deleted, freeing its code. Its revisions stay readable.
    async fn delete_metric(
        &self,
        org: OrganizationId,
        id: MetricId,
        deleted_at: DateTime<Utc>,
    ) -> Result<Metric, StoreError>;
    /// All revisions of a metric (deleted or not), oldest first.
    async fn list_metric_revisions(
        &self,
        org: OrganizationId,
        id: MetricId,
    ) -> Result<Vec<MetricRevision>, StoreError>;
    async fn get_metric_revision(
        &self,
        org: OrganizationId,
        id: MetricId,
        revision: u32,
    ) -> Result<MetricRevision, StoreError>;
    /// Whether the metric is attached to a plan (semantics 6.3), which locks some fields.
    async fn is_metric_attached(
        &self,
        org: OrganizationId,
        id: MetricId,
    ) -> Result<bool, StoreError>;
    /// Records or removes an attachment of the metric by `attached_by` (a plan's charge; until
    /// plans exist, any label an operator or a test chooses).
    async fn set_metric_attachment(
        &self,
        org: OrganizationId,
        id: MetricId,
        attached_by: &str,
        attached: bool,
    ) -> Result<(), StoreError>;

    // --- customers -------------------------------------------------------------------------
    /// Fails with `external_id_taken` when a live customer has the same external id.
    async fn create_customer(&self, customer: &Customer) -> Result<(), StoreError>;
    async fn get_customer(
        &self,
        org: OrganizationId,
        external_id: &str,
    ) -> Result<Customer, StoreError>;
    async fn list_customers(
        &self,
        org: OrganizationId,
        params: &CustomerListParams,
    ) -> Result<Page<Customer>, StoreError>;
    /// Which of these external ids name live customers (one round trip for a whole batch of
    /// events). The default asks one by one.
    async fn existing_customers(
        &self,
        org: OrganizationId,
        external_ids: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut found = std::collections::HashSet::new();
        for id in external_ids {
            match self.get_customer(org, id).await {
                Ok(_) => {
                    found.insert(id.clone());
                }
                Err(StoreError::NotFound { .. }) => {}
                Err(other) => return Err(other),
            }
        }
        Ok(found)
    }
    /// Replaces the customer's definition (found by the external id it had).
    async fn update_customer(
        &self,
        org: OrganizationId,
        external_id: &str,
        spec: &CustomerSpec,
        updated_at: DateTime<Utc>,
    ) -> Result<Customer, StoreError>;
    /// Deletes the customer, freeing its external id.
    async fn delete_customer(
        &self,
        org: OrganizationId,
        external_id: &str,
    ) -> Result<Customer, StoreError>;

    // --- plans -----------------------------------------------------------------------------
    //
    // Metric attachments follow the plans: a metric is attached by a plan (`attached_by` is the
    // plan's id) exactly while that plan is live and one of its charges reads the metric.
    // Creating, replacing and deleting a plan changes its attachments in the same transaction.

    /// Stores a new plan and attaches the metrics its charges read. Fails with `code_taken`
    /// when a live plan of the organization has the same code, `metric_not_found` or
    /// `metric_deleted` when a charge reads a metric that is not live (nothing is stored then).
    async fn create_plan(&self, plan: &Plan) -> Result<(), StoreError>;
    /// A plan by id, deleted or not.
    async fn get_plan(&self, org: OrganizationId, id: PlanId) -> Result<Plan, StoreError>;
    /// The live plan with this code.
    async fn get_plan_by_code(&self, org: OrganizationId, code: &str) -> Result<Plan, StoreError>;
    /// Live plans, oldest first, one page.
    async fn list_plans(
        &self,
        org: OrganizationId,
        params: &PlanListParams,
    ) -> Result<Page<Plan>, StoreError>;
    /// Replaces a live plan's definition (`plan_not_found` for a deleted one), sets
    /// `updated_at`, and moves its attachments to the metrics the new charges read. Fails like
    /// [`Catalog::create_plan`] on a taken code or a metric that is not live.
    async fn update_plan(
        &self,
        org: OrganizationId,
        id: PlanId,
        spec: &PlanSpec,
        updated_at: DateTime<Utc>,
    ) -> Result<Plan, StoreError>;
    /// Marks a live plan deleted, freeing its code and removing its attachments. Fails with
    /// `plan_in_use` while a subscription on it is active (at `deleted_at`).
    async fn delete_plan(
        &self,
        org: OrganizationId,
        id: PlanId,
        deleted_at: DateTime<Utc>,
    ) -> Result<Plan, StoreError>;
    /// Live plans with a charge reading this metric, oldest first.
    async fn plans_charging_metric(
        &self,
        org: OrganizationId,
        metric: MetricId,
    ) -> Result<Vec<Plan>, StoreError>;

    // --- dialect records ---------------------------------------------------------------------
    //
    // What a dialect keeps that Odometer's model has no place for (a Meteroid product family).
    // The defaults suit a backend that keeps none: it refuses to store one and finds none.

    /// Stores a new record; `false` when the organization already has one of that kind and id
    /// (nothing is changed then).
    async fn create_dialect_record(
        &self,
        _record: &crate::dialect_records::DialectRecord,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Backend("this catalog keeps no dialect records".into()))
    }

    /// The organization's records of one kind, oldest first.
    async fn list_dialect_records(
        &self,
        _org: OrganizationId,
        _kind: &str,
    ) -> Result<Vec<crate::dialect_records::DialectRecord>, StoreError> {
        Ok(Vec::new())
    }

    /// One record by kind and id.
    async fn get_dialect_record(
        &self,
        _org: OrganizationId,
        _kind: &str,
        _id: &str,
    ) -> Result<Option<crate::dialect_records::DialectRecord>, StoreError> {
        Ok(None)
    }

    // --- subscriptions ---------------------------------------------------------------------

    /// Stores a new subscription. Fails with `external_id_taken` when a subscription of the
    /// organization (terminated or not) has the same external id, `customer_not_found` when
    /// no live customer has `spec.customer` as external id, `plan_not_found` when the plan is
    /// not live. The `status` it is read back with is computed at each read.
    async fn create_subscription(&self, subscription: &Subscription) -> Result<(), StoreError>;
    async fn get_subscription(
        &self,
        org: OrganizationId,
        external_id: &str,
    ) -> Result<Subscription, StoreError>;
    /// Subscriptions, oldest first, one page.
    async fn list_subscriptions(
        &self,
        org: OrganizationId,
        params: &SubscriptionListParams,
    ) -> Result<Page<Subscription>, StoreError>;
    /// Sets the members that may change; `subscription_terminated` once it is terminated or
    /// past its end.
    async fn update_subscription(
        &self,
        org: OrganizationId,
        external_id: &str,
        update: &SubscriptionUpdate,
    ) -> Result<Subscription, StoreError>;
    /// Terminates a subscription at `at`: `terminated_at` is `at` and it ends at `at` (or its
    /// earlier end, never before its start). Terminating a terminated (or ended) subscription
    /// changes nothing and answers it as it is.
    async fn terminate_subscription(
        &self,
        org: OrganizationId,
        external_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Subscription, StoreError>;
}
