//! [`SqliteCatalog`]: the [`Catalog`] kept in one SQLite file, for the embedded deployment.
//!
//! One connection behind a mutex serves every call: catalog traffic is light (definitions,
//! customers, key lookups), and a single writer keeps transactions simple. SQLite calls block,
//! so each runs on tokio's blocking pool, never on an async worker. The SQL of each area lives
//! in its own module as plain functions over a `Connection`.

mod columns;
mod customers;
mod dialect_records;
mod metrics;
mod organizations;
mod plans;
mod schema;
mod subscriptions;

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::Connection;

use odometer_core::metric::MetricRevision;
use odometer_core::{
    ApiKeyId, Customer, CustomerSpec, Metric, MetricId, Organization, OrganizationId,
    OrganizationSettings, Plan, PlanId, PlanSpec, Subscription,
};
use odometer_store::{
    ApiKey, Catalog, CustomerListParams, MetricListParams, MetricRevisionInput, NewApiKey, Page,
    PlanListParams, StoreError, SubscriptionListParams, SubscriptionUpdate,
};

pub use schema::SCHEMA_VERSION;

/// A catalog in a SQLite database.
pub struct SqliteCatalog {
    conn: Arc<Mutex<Connection>>,
    /// Where the database is, for logs and `Debug`.
    location: String,
}

impl fmt::Debug for SqliteCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteCatalog").field("location", &self.location).finish()
    }
}

impl SqliteCatalog {
    /// Opens the catalog at `path`, creating the file and its directory if needed, and brings
    /// its schema to the latest version (on the blocking pool: opening reads the file and may
    /// run migrations).
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_at_schema_version(path, SCHEMA_VERSION).await
    }

    /// A catalog that lives in memory and is gone when dropped (for tests and trials). There is
    /// no file to wait for, so this does not need to be async.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let mut conn = Connection::open_in_memory()
            .map_err(|e| StoreError::Backend(format!("cannot open an in-memory catalog: {e}")))?;
        Self::prepare(&mut conn, SCHEMA_VERSION)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)), location: ":memory:".to_owned() })
    }

    /// Opens the catalog at `path` with its schema brought to `version` only: how the upgrade
    /// tests make a database as an older odometer left it. Not for normal use.
    #[doc(hidden)]
    pub async fn open_at_schema_version(path: &Path, version: usize) -> Result<Self, StoreError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(&path, version))
            .await
            .map_err(|e| StoreError::Backend(format!("catalog open task failed: {e}")))?
    }

    fn open_blocking(path: &Path, version: usize) -> Result<Self, StoreError> {
        let location = path.display().to_string();
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Backend(format!(
                    "cannot create the catalog directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let mut conn = Connection::open(path)
            .map_err(|e| StoreError::Backend(format!("cannot open the catalog {location}: {e}")))?;
        Self::prepare(&mut conn, version)?;
        tracing::debug!(location, version, "catalog opened");
        Ok(Self { conn: Arc::new(Mutex::new(conn)), location })
    }

    fn prepare(conn: &mut Connection, version: usize) -> Result<(), StoreError> {
        schema::configure(conn)?;
        schema::migrate(conn, version)
    }

    /// The schema version the database is at ([`SCHEMA_VERSION`] once opened normally).
    pub async fn schema_version(&self) -> Result<usize, StoreError> {
        self.run(|conn| Ok(schema::version(conn)?)).await
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> columns::Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let task = tokio::task::spawn_blocking(move || {
            // The lock is poisoned when an earlier call panicked while holding it. Its open
            // transaction was rolled back on unwinding, but rather than bet on the state of
            // the connection, every later call reports the failure.
            let mut conn = conn.lock().map_err(|_| {
                StoreError::Backend("the catalog connection is poisoned".to_owned())
            })?;
            f(&mut conn).map_err(|failure| failure.0)
        });
        task.await.map_err(|e| StoreError::Backend(format!("catalog task failed: {e}")))?
    }
}

#[async_trait]
impl Catalog for SqliteCatalog {
    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }

    async fn create_organization(&self, org: &Organization) -> Result<(), StoreError> {
        let org = org.clone();
        self.run(move |conn| organizations::create(conn, &org)).await
    }

    async fn get_organization(&self, id: OrganizationId) -> Result<Organization, StoreError> {
        self.run(move |conn| organizations::get(conn, id)).await
    }

    async fn list_organizations(&self) -> Result<Vec<Organization>, StoreError> {
        self.run(|conn| organizations::list(conn)).await
    }

    async fn update_organization_settings(
        &self,
        id: OrganizationId,
        settings: &OrganizationSettings,
    ) -> Result<Organization, StoreError> {
        let settings = settings.clone();
        self.run(move |conn| organizations::update_settings(conn, id, &settings)).await
    }

    async fn create_api_key(&self, key: &NewApiKey) -> Result<(), StoreError> {
        let key = key.clone();
        self.run(move |conn| organizations::create_key(conn, &key)).await
    }

    async fn find_api_key(&self, secret_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let secret_hash = secret_hash.to_owned();
        self.run(move |conn| organizations::find_key(conn, &secret_hash)).await
    }

    async fn list_api_keys(&self, org: OrganizationId) -> Result<Vec<ApiKey>, StoreError> {
        self.run(move |conn| organizations::list_keys(conn, org)).await
    }

    async fn revoke_api_key(
        &self,
        org: OrganizationId,
        id: ApiKeyId,
    ) -> Result<ApiKey, StoreError> {
        self.run(move |conn| organizations::revoke_key(conn, org, id)).await
    }

    async fn create_metric(&self, metric: &Metric) -> Result<(), StoreError> {
        let metric = metric.clone();
        self.run(move |conn| metrics::create(conn, &metric)).await
    }

    async fn get_metric(&self, org: OrganizationId, id: MetricId) -> Result<Metric, StoreError> {
        self.run(move |conn| metrics::get(conn, org, id)).await
    }

    async fn get_metric_by_code(
        &self,
        org: OrganizationId,
        code: &str,
    ) -> Result<Metric, StoreError> {
        let code = code.to_owned();
        self.run(move |conn| metrics::get_by_code(conn, org, &code)).await
    }

    async fn list_metrics(
        &self,
        org: OrganizationId,
        params: &MetricListParams,
    ) -> Result<Page<Metric>, StoreError> {
        let params = params.clone();
        self.run(move |conn| metrics::list(conn, org, &params)).await
    }

    async fn metrics_reading_event_code(
        &self,
        org: OrganizationId,
        event_code: &str,
    ) -> Result<Vec<Metric>, StoreError> {
        let event_code = event_code.to_owned();
        self.run(move |conn| metrics::reading_event_code(conn, org, &event_code)).await
    }

    async fn add_metric_revision(
        &self,
        org: OrganizationId,
        id: MetricId,
        revision: &MetricRevisionInput,
    ) -> Result<Metric, StoreError> {
        let revision = revision.clone();
        self.run(move |conn| metrics::add_revision(conn, org, id, &revision)).await
    }

    async fn set_metric_archived(
        &self,
        org: OrganizationId,
        id: MetricId,
        archived_at: Option<DateTime<Utc>>,
    ) -> Result<Metric, StoreError> {
        self.run(move |conn| metrics::set_archived(conn, org, id, archived_at)).await
    }

    async fn delete_metric(
        &self,
        org: OrganizationId,
        id: MetricId,
        deleted_at: DateTime<Utc>,
    ) -> Result<Metric, StoreError> {
        self.run(move |conn| metrics::delete(conn, org, id, deleted_at)).await
    }

    async fn list_metric_revisions(
        &self,
        org: OrganizationId,
        id: MetricId,
    ) -> Result<Vec<MetricRevision>, StoreError> {
        self.run(move |conn| metrics::list_revisions(conn, org, id)).await
    }

    async fn get_metric_revision(
        &self,
        org: OrganizationId,
        id: MetricId,
        revision: u32,
    ) -> Result<MetricRevision, StoreError> {
        self.run(move |conn| metrics::get_revision(conn, org, id, revision)).await
    }

    async fn is_metric_attached(
        &self,
        org: OrganizationId,
        id: MetricId,
    ) -> Result<bool, StoreError> {
        self.run(move |conn| metrics::is_attached(conn, org, id)).await
    }

    async fn set_metric_attachment(
        &self,
        org: OrganizationId,
        id: MetricId,
        attached_by: &str,
        attached: bool,
    ) -> Result<(), StoreError> {
        let attached_by = attached_by.to_owned();
        self.run(move |conn| metrics::set_attachment(conn, org, id, &attached_by, attached)).await
    }

    async fn create_customer(&self, customer: &Customer) -> Result<(), StoreError> {
        let customer = customer.clone();
        self.run(move |conn| customers::create(conn, &customer)).await
    }

    async fn get_customer(
        &self,
        org: OrganizationId,
        external_id: &str,
    ) -> Result<Customer, StoreError> {
        let external_id = external_id.to_owned();
        self.run(move |conn| customers::get(conn, org, &external_id)).await
    }

    async fn existing_customers(
        &self,
        org: OrganizationId,
        external_ids: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let external_ids = external_ids.to_vec();
        self.run(move |conn| customers::existing(conn, org, &external_ids)).await
    }

    async fn list_customers(
        &self,
        org: OrganizationId,
        params: &CustomerListParams,
    ) -> Result<Page<Customer>, StoreError> {
        let params = params.clone();
        self.run(move |conn| customers::list(conn, org, &params)).await
    }

    async fn update_customer(
        &self,
        org: OrganizationId,
        external_id: &str,
        spec: &CustomerSpec,
        updated_at: DateTime<Utc>,
    ) -> Result<Customer, StoreError> {
        let (external_id, spec) = (external_id.to_owned(), spec.clone());
        self.run(move |conn| customers::update(conn, org, &external_id, &spec, updated_at)).await
    }

    async fn delete_customer(
        &self,
        org: OrganizationId,
        external_id: &str,
    ) -> Result<Customer, StoreError> {
        let external_id = external_id.to_owned();
        self.run(move |conn| customers::delete(conn, org, &external_id)).await
    }

    async fn create_dialect_record(
        &self,
        record: &odometer_store::dialect_records::DialectRecord,
    ) -> Result<bool, StoreError> {
        let record = record.clone();
        self.run(move |conn| dialect_records::create(conn, &record)).await
    }

    async fn list_dialect_records(
        &self,
        org: OrganizationId,
        kind: &str,
    ) -> Result<Vec<odometer_store::dialect_records::DialectRecord>, StoreError> {
        let kind = kind.to_owned();
        self.run(move |conn| dialect_records::list(conn, org, &kind)).await
    }

    async fn get_dialect_record(
        &self,
        org: OrganizationId,
        kind: &str,
        id: &str,
    ) -> Result<Option<odometer_store::dialect_records::DialectRecord>, StoreError> {
        let (kind, id) = (kind.to_owned(), id.to_owned());
        self.run(move |conn| dialect_records::get(conn, org, &kind, &id)).await
    }

    async fn create_plan(&self, plan: &Plan) -> Result<(), StoreError> {
        let plan = plan.clone();
        self.run(move |conn| plans::create(conn, &plan)).await
    }

    async fn get_plan(&self, org: OrganizationId, id: PlanId) -> Result<Plan, StoreError> {
        self.run(move |conn| plans::get(conn, org, id)).await
    }

    async fn get_plan_by_code(&self, org: OrganizationId, code: &str) -> Result<Plan, StoreError> {
        let code = code.to_owned();
        self.run(move |conn| plans::get_by_code(conn, org, &code)).await
    }

    async fn list_plans(
        &self,
        org: OrganizationId,
        params: &PlanListParams,
    ) -> Result<Page<Plan>, StoreError> {
        let params = params.clone();
        self.run(move |conn| plans::list(conn, org, &params)).await
    }

    async fn update_plan(
        &self,
        org: OrganizationId,
        id: PlanId,
        spec: &PlanSpec,
        updated_at: DateTime<Utc>,
    ) -> Result<Plan, StoreError> {
        let spec = spec.clone();
        self.run(move |conn| plans::update(conn, org, id, &spec, updated_at)).await
    }

    async fn delete_plan(
        &self,
        org: OrganizationId,
        id: PlanId,
        deleted_at: DateTime<Utc>,
    ) -> Result<Plan, StoreError> {
        self.run(move |conn| plans::delete(conn, org, id, deleted_at)).await
    }

    async fn plans_charging_metric(
        &self,
        org: OrganizationId,
        metric: MetricId,
    ) -> Result<Vec<Plan>, StoreError> {
        self.run(move |conn| plans::charging_metric(conn, org, metric)).await
    }

    async fn create_subscription(&self, subscription: &Subscription) -> Result<(), StoreError> {
        let subscription = subscription.clone();
        self.run(move |conn| subscriptions::create(conn, &subscription)).await
    }

    async fn get_subscription(
        &self,
        org: OrganizationId,
        external_id: &str,
    ) -> Result<Subscription, StoreError> {
        let external_id = external_id.to_owned();
        self.run(move |conn| subscriptions::get(conn, org, &external_id)).await
    }

    async fn list_subscriptions(
        &self,
        org: OrganizationId,
        params: &SubscriptionListParams,
    ) -> Result<Page<Subscription>, StoreError> {
        let params = params.clone();
        self.run(move |conn| subscriptions::list(conn, org, &params)).await
    }

    async fn update_subscription(
        &self,
        org: OrganizationId,
        external_id: &str,
        update: &SubscriptionUpdate,
    ) -> Result<Subscription, StoreError> {
        let (external_id, update) = (external_id.to_owned(), update.clone());
        self.run(move |conn| subscriptions::update(conn, org, &external_id, &update)).await
    }

    async fn terminate_subscription(
        &self,
        org: OrganizationId,
        external_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Subscription, StoreError> {
        let external_id = external_id.to_owned();
        self.run(move |conn| subscriptions::terminate(conn, org, &external_id, at)).await
    }
}
