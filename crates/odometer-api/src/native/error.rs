//! The native API's error envelope, and the one place where every error becomes a status:
//! `{"error": {"code", "message", "details"}}`.

use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use odometer_core::metric_update::MetricLocked;
use odometer_core::Problems;
use odometer_store::customers::CustomerError;
use odometer_store::metrics::MetricError;
use odometer_store::plans::PlanError;
use odometer_store::subscriptions::SubscriptionError;
use odometer_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::request_context::current_request_id;

/// A native API error, ready to be written.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Vec<ErrorDetail>,
    /// What went wrong inside, for the log only (5xx).
    internal: Option<String>,
}

/// The error envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorObject {
    /// A stable snake_case code (`missing_field`, `metric_locked`, `code_taken`, ...).
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// Per-field problems, for validation errors; empty otherwise.
    pub details: Vec<ErrorDetail>,
    /// Set on internal errors, to quote when reporting them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// One problem with one field.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Dotted path of the field (`aggregation.field`, `filters[0].op`).
    pub path: String,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: Vec::new(), internal: None }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required (Authorization: Bearer <key>)",
        )
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal_error",
            message: "internal error".to_owned(),
            details: Vec::new(),
            internal: Some(detail.into()),
        }
    }

    pub fn invalid(problems: Problems) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: problems.first_code(),
            message: problems.summary(),
            details: problems
                .iter()
                .map(|p| ErrorDetail {
                    path: p.path.clone(),
                    code: p.code.to_owned(),
                    message: p.message.clone(),
                })
                .collect(),
            internal: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        let status = match &err {
            StoreError::MetricLocked { fields } => {
                return MetricLocked { fields: fields.clone(), plans: Vec::new() }.into();
            }
            StoreError::NotFound { .. } | StoreError::MetricDeleted => StatusCode::NOT_FOUND,
            StoreError::CodeTaken { .. }
            | StoreError::ExternalIdTaken { .. }
            | StoreError::RevisionConflict { .. }
            | StoreError::PlanInUse { .. }
            | StoreError::SubscriptionTerminated => StatusCode::CONFLICT,
            StoreError::InvalidCursor => StatusCode::BAD_REQUEST,
            StoreError::Backend(detail) => return Self::internal(detail.clone()),
        };
        Self::new(status, err.code(), err.to_string())
    }
}

impl From<MetricLocked> for ApiError {
    fn from(err: MetricLocked) -> Self {
        let mut api = Self::new(StatusCode::CONFLICT, "metric_locked", err.to_string());
        api.details = err
            .fields
            .iter()
            .map(|field| ErrorDetail {
                path: (*field).to_owned(),
                code: "locked".to_owned(),
                message: match err.plans.as_slice() {
                    [] => "cannot change while the metric is attached to a plan".to_owned(),
                    plans => format!(
                        "cannot change while the metric is attached to plan {}",
                        plans.iter().map(|p| format!("'{p}'")).collect::<Vec<_>>().join(", ")
                    ),
                },
            })
            .collect();
        api
    }
}

impl From<MetricError> for ApiError {
    fn from(err: MetricError) -> Self {
        match err {
            MetricError::Invalid(problems) => Self::invalid(problems),
            MetricError::Locked(locked) => locked.into(),
            MetricError::Attached => {
                Self::new(StatusCode::CONFLICT, "metric_attached", err.to_string())
            }
            MetricError::Store(store) => store.into(),
        }
    }
}

impl From<CustomerError> for ApiError {
    fn from(err: CustomerError) -> Self {
        match err {
            CustomerError::Invalid(problems) => Self::invalid(problems),
            CustomerError::Store(store) => store.into(),
        }
    }
}

impl From<PlanError> for ApiError {
    fn from(err: PlanError) -> Self {
        match err {
            PlanError::Invalid(problems) => Self::invalid(problems),
            PlanError::CodeTaken { .. } => {
                Self::new(StatusCode::CONFLICT, "code_taken", err.to_string())
            }
            PlanError::Store(store) => store.into(),
        }
    }
}

impl From<SubscriptionError> for ApiError {
    fn from(err: SubscriptionError) -> Self {
        match err {
            SubscriptionError::Invalid(problems) => Self::invalid(problems),
            SubscriptionError::ExternalIdTaken { .. } => {
                Self::new(StatusCode::CONFLICT, "external_id_taken", err.to_string())
            }
            SubscriptionError::Store(store) => store.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = current_request_id();
        let request_id = if self.status.is_server_error() {
            tracing::error!(
                request_id = request_id.as_deref().unwrap_or("-"),
                detail = self.internal.as_deref().unwrap_or("-"),
                "internal error"
            );
            request_id
        } else {
            None
        };
        let body = ErrorBody {
            error: ErrorObject {
                code: self.code.to_owned(),
                message: self.message,
                details: self.details,
                request_id,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// The answer for a path no route serves.
pub async fn route_not_found(uri: Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found", format!("no route for {}", uri.path()))
}

/// The answer for a known path with a method it does not serve.
pub async fn method_not_allowed(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not support this method", uri.path()),
    )
}
