//! The Lago dialect's error envelope, and the one place where its errors become statuses:
//! `{"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
//! "error_details": {...}}`, `{"status": 404, "error": "Not Found", "code": "<resource>_not_found"}`,
//! `{"status": 401, "error": "Unauthorized"}` (reference/lago.md 1.5). Always a JSON body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use odometer_core::Problems;
use odometer_store::StoreError;
use serde_json::{json, Map, Value};

use crate::request_context::current_request_id;

/// A Lago-shaped error, ready to be written.
#[derive(Debug)]
pub struct LagoError {
    status: StatusCode,
    body: Value,
    /// What went wrong inside, for the log only (5xx).
    internal: Option<String>,
}

impl LagoError {
    fn with_body(status: StatusCode, body: Value) -> Self {
        Self { status, body, internal: None }
    }

    /// 422 `validation_errors` with `error_details` as given (by field, or by index).
    pub fn validation(details: Value) -> Self {
        Self::with_body(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
                   "error_details": details}),
        )
    }

    /// 422 naming one field and one code.
    pub fn field(field: &str, code: &str) -> Self {
        Self::validation(json!({ field: [code] }))
    }

    /// 404 `<resource>_not_found`.
    pub fn not_found(resource: &str) -> Self {
        Self::with_body(
            StatusCode::NOT_FOUND,
            json!({"status": 404, "error": "Not Found", "code": format!("{resource}_not_found")}),
        )
    }

    pub fn unauthorized() -> Self {
        Self::with_body(StatusCode::UNAUTHORIZED, json!({"status": 401, "error": "Unauthorized"}))
    }

    /// 400 for a missing or unreadable root key, as Rails' strong parameters word it.
    pub fn missing_param(param: &str) -> Self {
        Self::with_body(
            StatusCode::BAD_REQUEST,
            json!({"status": 400, "error": format!(
                "BadRequest: param is missing or the value is empty or invalid: {param}")}),
        )
    }

    /// 400 for anything else malformed (a body that is not JSON, a bad query string).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::with_body(
            StatusCode::BAD_REQUEST,
            json!({"status": 400, "error": format!("BadRequest: {}", message.into())}),
        )
    }

    /// 405 with a code (`no_active_subscription`, `method_not_allowed`).
    pub fn method_not_allowed(code: &str) -> Self {
        Self::with_body(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"status": 405, "error": "Method Not Allowed", "code": code}),
        )
    }

    pub fn too_many_requests() -> Self {
        Self::with_body(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"status": 429, "error": "Too Many Requests", "code": "too_many_requests"}),
        )
    }

    pub fn payload_too_large() -> Self {
        Self::with_body(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"status": 413, "error": "Payload Too Large", "code": "payload_too_large"}),
        )
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        let mut error = Self::with_body(StatusCode::INTERNAL_SERVER_ERROR, Value::Null);
        error.internal = Some(detail.into());
        error
    }

    /// Validation problems as Lago's `error_details`: each path renamed by `field_of` into the
    /// Lago field it came from, each code into Lago's vocabulary.
    pub fn problems(problems: &Problems, field_of: impl Fn(&str) -> String) -> Self {
        let mut details: Map<String, Value> = Map::new();
        for problem in problems.iter() {
            let field = field_of(&problem.path);
            let codes = details.entry(field).or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(codes) = codes {
                let code = Value::String(lago_code(problem.code).to_owned());
                if !codes.contains(&code) {
                    codes.push(code);
                }
            }
        }
        Self::validation(Value::Object(details))
    }

    /// A store error where the resource is `resource` (`billable_metric`, `customer`, ...).
    pub fn store(error: StoreError, resource: &str) -> Self {
        match error {
            StoreError::NotFound { entity, .. } => Self::not_found(match entity {
                odometer_store::Entity::Metric | odometer_store::Entity::MetricRevision => {
                    "billable_metric"
                }
                odometer_store::Entity::Customer => "customer",
                odometer_store::Entity::Plan => "plan",
                odometer_store::Entity::Subscription => "subscription",
                _ => resource,
            }),
            StoreError::CodeTaken { .. } => Self::field("code", "value_already_exist"),
            StoreError::ExternalIdTaken { .. } => Self::field("external_id", "value_already_exist"),
            StoreError::PlanInUse { .. } => Self::field("plan", "plan_in_use"),
            StoreError::SubscriptionTerminated => {
                Self::field("subscription", "subscription_terminated")
            }
            StoreError::MetricDeleted => Self::not_found("billable_metric"),
            other => Self::internal(other.to_string()),
        }
    }
}

/// Odometer's validation codes in Lago's words where Lago has one; ours otherwise.
pub fn lago_code(code: &str) -> &str {
    match code {
        "missing_field" => "value_is_mandatory",
        "code_taken" | "external_id_taken" => "value_already_exist",
        "recurring_not_allowed" => "not_compatible_with_aggregation_type",
        "invalid_value" | "invalid_type" => "value_is_invalid",
        other => other,
    }
}

impl IntoResponse for LagoError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            let request_id = current_request_id();
            tracing::error!(
                request_id = request_id.as_deref().unwrap_or("-"),
                detail = self.internal.as_deref().unwrap_or("-"),
                "lago request failed"
            );
            let body = json!({"status": self.status.as_u16(), "error": "Internal Server Error",
                              "code": "internal_error", "request_id": request_id});
            return (self.status, Json(body)).into_response();
        }
        (self.status, Json(self.body)).into_response()
    }
}

/// Unknown routes under `/lago`.
pub async fn route_not_found() -> LagoError {
    LagoError::not_found("resource")
}

/// A known route asked with another method.
pub async fn method_not_allowed() -> LagoError {
    LagoError::method_not_allowed("method_not_allowed")
}
