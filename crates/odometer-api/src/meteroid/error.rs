//! The Meteroid dialect's error envelope, `{"code": "NOT_FOUND", "message": "..."}`, and the
//! one place where every error of this surface becomes a status. Always JSON: Meteroid itself
//! answers some failures in plain text, which its SDK cannot decode.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use odometer_core::Problems;
use odometer_store::customers::CustomerError;
use odometer_store::metrics::MetricError;
use odometer_store::{StoreError, UsageQueryError};
use serde::Serialize;

use crate::request_context::current_request_id;

/// A Meteroid-shaped error, ready to be written.
#[derive(Debug)]
pub struct MeteroidError {
    status: StatusCode,
    message: String,
    /// What went wrong inside, for the log only (5xx).
    internal: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
    message: &'a str,
}

impl MeteroidError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), internal: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "a valid API key is required (Authorization: Bearer <key>)",
        )
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: String::new(),
            internal: Some(detail.into()),
        }
    }

    /// Meteroid's `ErrorCode` for a status.
    fn code(&self) -> &'static str {
        match self.status {
            StatusCode::NOT_FOUND => "NOT_FOUND",
            StatusCode::CONFLICT => "CONFLICT",
            StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
            StatusCode::FORBIDDEN => "FORBIDDEN",
            StatusCode::TOO_MANY_REQUESTS => "TOO_MANY_REQUESTS",
            s if s.is_server_error() => "INTERNAL_SERVER_ERROR",
            _ => "BAD_REQUEST",
        }
    }
}

impl IntoResponse for MeteroidError {
    fn into_response(self) -> Response {
        let message = if self.status.is_server_error() {
            let request_id = current_request_id().unwrap_or_default();
            tracing::error!(
                request_id,
                detail = self.internal.as_deref().unwrap_or(""),
                "meteroid dialect: internal error"
            );
            format!("internal error (request id {request_id})")
        } else {
            self.message.clone()
        };
        let body = ErrorBody { code: self.code(), message: &message };
        (self.status, Json(body)).into_response()
    }
}

/// Every problem of a rejected definition, in Odometer's field paths.
pub fn problems_message(problems: &Problems) -> String {
    let parts: Vec<String> = problems
        .iter()
        .map(|p| {
            if p.path.is_empty() {
                p.message.clone()
            } else {
                format!("{}: {}", p.path, p.message)
            }
        })
        .collect();
    format!("invalid definition: {}", parts.join("; "))
}

impl From<StoreError> for MeteroidError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NotFound { .. } | StoreError::MetricDeleted => {
                Self::not_found(e.to_string())
            }
            StoreError::CodeTaken { .. }
            | StoreError::ExternalIdTaken { .. }
            | StoreError::RevisionConflict { .. }
            | StoreError::PlanInUse { .. }
            | StoreError::MetricLocked { .. }
            | StoreError::SubscriptionTerminated => Self::new(StatusCode::CONFLICT, e.to_string()),
            StoreError::InvalidCursor => Self::bad_request(e.to_string()),
            StoreError::Backend(detail) => Self::internal(detail.clone()),
        }
    }
}

impl From<MetricError> for MeteroidError {
    fn from(e: MetricError) -> Self {
        match e {
            MetricError::Invalid(problems) => Self::bad_request(problems_message(&problems)),
            MetricError::Locked(locked) => Self::new(StatusCode::CONFLICT, locked.to_string()),
            MetricError::Attached => Self::new(StatusCode::CONFLICT, e.to_string()),
            MetricError::Store(store) => store.into(),
        }
    }
}

impl From<CustomerError> for MeteroidError {
    fn from(e: CustomerError) -> Self {
        match e {
            CustomerError::Invalid(problems) => Self::bad_request(problems_message(&problems)),
            CustomerError::Store(store) => store.into(),
        }
    }
}

impl From<UsageQueryError> for MeteroidError {
    fn from(e: UsageQueryError) -> Self {
        match e {
            UsageQueryError::Store(store) => store.into(),
            UsageQueryError::Usage(usage) => Self::bad_request(usage.to_string()),
        }
    }
}

/// Unknown routes under `/meteroid`.
pub async fn route_not_found() -> MeteroidError {
    MeteroidError::not_found("no such route")
}

/// A known route with a method it does not take.
pub async fn method_not_allowed() -> MeteroidError {
    MeteroidError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
}
