//! [`PgCatalog`]: the [`Catalog`] kept in PostgreSQL, for server mode, where several stateless
//! `odometer serve` replicas share one database.
//!
//! A pool of connections serves the calls; each write runs in one READ COMMITTED transaction
//! and takes row locks where SQLite relied on its single connection: which lock protects which
//! rule is written at the top of each area's module (`metrics.rs`, `plans.rs`,
//! `subscriptions.rs`, `customers.rs`, `organizations.rs`) and summed up in ARCHITECTURE.md.
//! The schema is `migrations/`, embedded with `sqlx::migrate!` and applied on connect.

mod columns;
mod customers;
mod dialect_records;
mod metrics;
mod organizations;
mod plans;
mod subscriptions;

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use odometer_core::metric::MetricRevision;
use odometer_core::{
    ApiKeyId, Customer, CustomerSpec, Metric, MetricId, Organization, OrganizationId,
    OrganizationSettings, Plan, PlanId, PlanSpec, Subscription,
};
use odometer_store::dialect_records::DialectRecord;
use odometer_store::{
    ApiKey, Catalog, CustomerListParams, MetricListParams, MetricRevisionInput, NewApiKey, Page,
    PlanListParams, StoreError, SubscriptionListParams, SubscriptionUpdate,
};

use columns::Failure;

/// The schema version a catalog is at once connected: the number of the last migration.
pub const SCHEMA_VERSION: i64 = 1;

/// The table where the catalog's migrations are recorded. Not sqlx's default
/// (`_sqlx_migrations`), so other components may keep their own migrations in the same
/// database without either migrator taking the other's for unknown ones.
pub const MIGRATIONS_TABLE: &str = "odometer_catalog_migrations";

/// The pool size [`PgCatalog::connect`] uses: catalog traffic is light (definitions, customers,
/// key lookups), and every replica opens its own pool.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// How long a call waits for a free connection (or for the server, on connect) before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

/// A catalog in a PostgreSQL database.
pub struct PgCatalog {
    pool: PgPool,
    /// `host:port/database`, for logs and `Debug` (never the password).
    location: String,
}

impl fmt::Debug for PgCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgCatalog").field("location", &self.location).finish()
    }
}

fn backend(context: &str, error: impl fmt::Display) -> StoreError {
    StoreError::Backend(format!("{context}: {error}"))
}

fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(default database)")
    )
}

impl PgCatalog {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, with
    /// libpq's query parameters such as `sslmode=require`) with a pool of
    /// [`DEFAULT_MAX_CONNECTIONS`], and brings its schema to [`SCHEMA_VERSION`]. Fails if the
    /// server does not answer within 10 seconds, or if the schema is newer than this odometer.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        // The URL's own text is never repeated in errors: it may hold the password.
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::Backend(
                "invalid postgres catalog url: it must start with postgres:// or postgresql://"
                    .to_owned(),
            ));
        }
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| backend("invalid postgres catalog url", e))?;
        let location = describe(&options);
        // Migrations' `IF NOT EXISTS` at every start are expected: no notice for each.
        let options = options.options([("client_min_messages", "warning")]);
        let pool = PgPoolOptions::new()
            .max_connections(DEFAULT_MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| {
                backend(&format!("cannot connect to the postgres catalog {location}"), e)
            })?;
        Self::connect_with_pool(pool).await
    }

    /// A catalog over a pool the caller configured (size, timeouts, TLS), whose schema is
    /// brought to [`SCHEMA_VERSION`] first. Replicas starting together are safe: the migrations
    /// run under a PostgreSQL advisory lock, and each is applied once.
    pub async fn connect_with_pool(pool: PgPool) -> Result<Self, StoreError> {
        let location = describe(&pool.connect_options());
        migrator()
            .run(&pool)
            .await
            .map_err(|e| backend(&format!("postgres catalog {location}: migration failed"), e))?;
        tracing::debug!(location, "postgres catalog connected");
        Ok(Self { pool, location })
    }

    /// The pool the catalog uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema version the database is at ([`SCHEMA_VERSION`] once connected).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let sql = format!("SELECT max(version) FROM {MIGRATIONS_TABLE} WHERE success");
        let version: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| backend("cannot read the catalog's schema version", e))?;
        Ok(version.unwrap_or(0))
    }
}

/// The store error of a failed call.
fn done<T>(result: Result<T, Failure>) -> Result<T, StoreError> {
    result.map_err(|failure| failure.0)
}

#[async_trait]
impl Catalog for PgCatalog {
    async fn ping(&self) -> Result<(), StoreError> {
        let one: Result<i32, sqlx::Error> =
            sqlx::query_scalar("SELECT 1").fetch_one(&self.pool).await;
        done(one.map(|_| ()).map_err(Failure::from))
    }

    async fn create_organization(&self, org: &Organization) -> Result<(), StoreError> {
        done(organizations::create(&self.pool, org).await)
    }

    async fn get_organization(&self, id: OrganizationId) -> Result<Organization, StoreError> {
        done(organizations::get(&self.pool, id).await)
    }

    async fn list_organizations(&self) -> Result<Vec<Organization>, StoreError> {
        done(organizations::list(&self.pool).await)
    }

    async fn update_organization_settings(
        &self,
        id: OrganizationId,
        settings: &OrganizationSettings,
    ) -> Result<Organization, StoreError> {
        done(organizations::update_settings(&self.pool, id, settings).await)
    }

    async fn create_api_key(&self, key: &NewApiKey) -> Result<(), StoreError> {
        done(organizations::create_key(&self.pool, key).await)
    }

    async fn find_api_key(&self, secret_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        done(organizations::find_key(&self.pool, secret_hash).await)
    }

    async fn list_api_keys(&self, org: OrganizationId) -> Result<Vec<ApiKey>, StoreError> {
        done(organizations::list_keys(&self.pool, org).await)
    }

    async fn revoke_api_key(
        &self,
        org: OrganizationId,
        id: ApiKeyId,
    ) -> Result<ApiKey, StoreError> {
        done(organizations::revoke_key(&self.pool, org, id).await)
    }

    async fn create_metric(&self, metric: &Metric) -> Result<(), StoreError> {
        done(metrics::create(&self.pool, metric).await)
    }

    async fn get_metric(&self, org: OrganizationId, id: MetricId) -> Result<Metric, StoreError> {
        done(metrics::get(&self.pool, org, id).await)
    }

    async fn get_metric_by_code(
        &self,
        org: OrganizationId,
        code: &str,
    ) -> Result<Metric, StoreError> {
        done(metrics::get_by_code(&self.pool, org, code).await)
    }

    async fn list_metrics(
        &self,
        org: OrganizationId,
        params: &MetricListParams,
    ) -> Result<Page<Metric>, StoreError> {
        done(metrics::list(&self.pool, org, params).await)
    }

    async fn metrics_reading_event_code(
        &self,
        org: OrganizationId,
        event_code: &str,
    ) -> Result<Vec<Metric>, StoreError> {
        done(metrics::reading_event_code(&self.pool, org, event_code).await)
    }

    async fn add_metric_revision(
        &self,
        org: OrganizationId,
        id: MetricId,
        revision: &MetricRevisionInput,
    ) -> Result<Metric, StoreError> {
        done(metrics::add_revision(&self.pool, org, id, revision).await)
    }

    async fn set_metric_archived(
        &self,
        org: OrganizationId,
        id: MetricId,
        archived_at: Option<DateTime<Utc>>,
    ) -> Result<Metric, StoreError> {
        done(metrics::set_archived(&self.pool, org, id, archived_at).await)
    }

    async fn delete_metric(
        &self,
        org: OrganizationId,
        id: MetricId,
        deleted_at: DateTime<Utc>,
    ) -> Result<Metric, StoreError> {
        done(metrics::delete(&self.pool, org, id, deleted_at).await)
    }

    async fn list_metric_revisions(
        &self,
        org: OrganizationId,
        id: MetricId,
    ) -> Result<Vec<MetricRevision>, StoreError> {
        done(metrics::list_revisions(&self.pool, org, id).await)
    }

    async fn get_metric_revision(
        &self,
        org: OrganizationId,
        id: MetricId,
        revision: u32,
    ) -> Result<MetricRevision, StoreError> {
        done(metrics::get_revision(&self.pool, org, id, revision).await)
    }

    async fn is_metric_attached(
        &self,
        org: OrganizationId,
        id: MetricId,
    ) -> Result<bool, StoreError> {
        done(metrics::is_attached(&self.pool, org, id).await)
    }

    async fn set_metric_attachment(
        &self,
        org: OrganizationId,
        id: MetricId,
        attached_by: &str,
        attached: bool,
    ) -> Result<(), StoreError> {
        done(metrics::set_attachment(&self.pool, org, id, attached_by, attached).await)
    }

    async fn create_customer(&self, customer: &Customer) -> Result<(), StoreError> {
        done(customers::create(&self.pool, customer).await)
    }

    async fn get_customer(
        &self,
        org: OrganizationId,
        external_id: &str,
    ) -> Result<Customer, StoreError> {
        done(customers::get(&self.pool, org, external_id).await)
    }

    async fn list_customers(
        &self,
        org: OrganizationId,
        params: &CustomerListParams,
    ) -> Result<Page<Customer>, StoreError> {
        done(customers::list(&self.pool, org, params).await)
    }

    async fn existing_customers(
        &self,
        org: OrganizationId,
        external_ids: &[String],
    ) -> Result<HashSet<String>, StoreError> {
        done(customers::existing(&self.pool, org, external_ids).await)
    }

    async fn update_customer(
        &self,
        org: OrganizationId,
        external_id: &str,
        spec: &CustomerSpec,
        updated_at: DateTime<Utc>,
    ) -> Result<Customer, StoreError> {
        done(customers::update(&self.pool, org, external_id, spec, updated_at).await)
    }

    async fn delete_customer(
        &self,
        org: OrganizationId,
        external_id: &str,
    ) -> Result<Customer, StoreError> {
        done(customers::delete(&self.pool, org, external_id).await)
    }

    async fn create_plan(&self, plan: &Plan) -> Result<(), StoreError> {
        done(plans::create(&self.pool, plan).await)
    }

    async fn get_plan(&self, org: OrganizationId, id: PlanId) -> Result<Plan, StoreError> {
        done(plans::get(&self.pool, org, id).await)
    }

    async fn get_plan_by_code(&self, org: OrganizationId, code: &str) -> Result<Plan, StoreError> {
        done(plans::get_by_code(&self.pool, org, code).await)
    }

    async fn list_plans(
        &self,
        org: OrganizationId,
        params: &PlanListParams,
    ) -> Result<Page<Plan>, StoreError> {
        done(plans::list(&self.pool, org, params).await)
    }

    async fn update_plan(
        &self,
        org: OrganizationId,
        id: PlanId,
        spec: &PlanSpec,
        updated_at: DateTime<Utc>,
    ) -> Result<Plan, StoreError> {
        done(plans::update(&self.pool, org, id, spec, updated_at).await)
    }

    async fn delete_plan(
        &self,
        org: OrganizationId,
        id: PlanId,
        deleted_at: DateTime<Utc>,
    ) -> Result<Plan, StoreError> {
        done(plans::delete(&self.pool, org, id, deleted_at).await)
    }

    async fn plans_charging_metric(
        &self,
        org: OrganizationId,
        metric: MetricId,
    ) -> Result<Vec<Plan>, StoreError> {
        done(plans::charging_metric(&self.pool, org, metric).await)
    }

    async fn create_dialect_record(&self, record: &DialectRecord) -> Result<bool, StoreError> {
        done(dialect_records::create(&self.pool, record).await)
    }

    async fn list_dialect_records(
        &self,
        org: OrganizationId,
        kind: &str,
    ) -> Result<Vec<DialectRecord>, StoreError> {
        done(dialect_records::list(&self.pool, org, kind).await)
    }

    async fn get_dialect_record(
        &self,
        org: OrganizationId,
        kind: &str,
        id: &str,
    ) -> Result<Option<DialectRecord>, StoreError> {
        done(dialect_records::get(&self.pool, org, kind, id).await)
    }

    async fn create_subscription(&self, subscription: &Subscription) -> Result<(), StoreError> {
        done(subscriptions::create(&self.pool, subscription).await)
    }

    async fn get_subscription(
        &self,
        org: OrganizationId,
        external_id: &str,
    ) -> Result<Subscription, StoreError> {
        done(subscriptions::get(&self.pool, org, external_id).await)
    }

    async fn list_subscriptions(
        &self,
        org: OrganizationId,
        params: &SubscriptionListParams,
    ) -> Result<Page<Subscription>, StoreError> {
        done(subscriptions::list(&self.pool, org, params).await)
    }

    async fn update_subscription(
        &self,
        org: OrganizationId,
        external_id: &str,
        update: &SubscriptionUpdate,
    ) -> Result<Subscription, StoreError> {
        done(subscriptions::update(&self.pool, org, external_id, update).await)
    }

    async fn terminate_subscription(
        &self,
        org: OrganizationId,
        external_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Subscription, StoreError> {
        done(subscriptions::terminate(&self.pool, org, external_id, at).await)
    }
}
