//! `StoreError`: what a catalog or event store can fail with, each with a stable code.

/// The kinds of things a store keeps, for not-found errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Organization,
    ApiKey,
    Metric,
    MetricRevision,
    Customer,
    Plan,
    Subscription,
}

impl Entity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Organization => "organization",
            Self::ApiKey => "api key",
            Self::Metric => "metric",
            Self::MetricRevision => "metric revision",
            Self::Customer => "customer",
            Self::Plan => "plan",
            Self::Subscription => "subscription",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{} '{key}' not found", entity.as_str())]
    NotFound { entity: Entity, key: String },
    #[error("a metric with code '{code}' already exists")]
    CodeTaken { code: String },
    #[error("a customer with external id '{external_id}' already exists")]
    ExternalIdTaken { external_id: String },
    #[error("the metric is at revision {current}, not {expected}")]
    RevisionConflict { expected: u32, current: u32 },
    #[error("the metric is deleted")]
    MetricDeleted,
    #[error("invalid cursor")]
    InvalidCursor,
    /// A plan that active subscriptions are on cannot be deleted.
    #[error("{active} active subscription(s) are on this plan; terminate them first")]
    PlanInUse { active: u64 },
    /// A terminated (or ended) subscription takes no more changes.
    #[error("the subscription is terminated")]
    SubscriptionTerminated,
    /// A revision that changes locked fields of a metric a live plan charges (semantics 6.3),
    /// refused by the catalog in the same transaction that would have written it.
    #[error("the metric is attached to a plan, so these fields cannot change: {}", fields.join(", "))]
    MetricLocked { fields: Vec<&'static str> },
    /// Anything the backend itself failed at (I/O, corruption, a bug); its detail is for logs.
    #[error("storage backend error: {0}")]
    Backend(String),
}

impl StoreError {
    pub fn not_found(entity: Entity, key: impl std::fmt::Display) -> Self {
        Self::NotFound { entity, key: key.to_string() }
    }

    /// A stable snake_case code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { entity, .. } => match entity {
                Entity::Organization => "organization_not_found",
                Entity::ApiKey => "api_key_not_found",
                Entity::Metric => "metric_not_found",
                Entity::MetricRevision => "revision_not_found",
                Entity::Customer => "customer_not_found",
                Entity::Plan => "plan_not_found",
                Entity::Subscription => "subscription_not_found",
            },
            Self::CodeTaken { .. } => "code_taken",
            Self::ExternalIdTaken { .. } => "external_id_taken",
            Self::RevisionConflict { .. } => "revision_conflict",
            Self::MetricDeleted => "metric_deleted",
            Self::InvalidCursor => "invalid_cursor",
            Self::PlanInUse { .. } => "plan_in_use",
            Self::SubscriptionTerminated => "subscription_terminated",
            Self::MetricLocked { .. } => "metric_locked",
            Self::Backend(_) => "internal_error",
        }
    }
}
