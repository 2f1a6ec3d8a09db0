//! The Zenskar dialect's errors, in FastAPI's shape: 422 `{"detail": [{"loc", "msg", "type"}]}`,
//! everything else `{"detail": "..."}`. The one place Zenskar errors become statuses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use odometer_core::Problems;
use odometer_store::metrics::MetricError;
use odometer_store::{StoreError, UsageQueryError};
use serde_json::{json, Value};

/// One entry of a 422's `detail`.
#[derive(Debug, Clone)]
pub struct FieldError {
    pub loc: Vec<Value>,
    pub msg: String,
    pub kind: String,
}

impl FieldError {
    pub fn new(loc: &[&str], msg: impl Into<String>, kind: &str) -> Self {
        Self {
            loc: loc.iter().map(|s| Value::String((*s).to_owned())).collect(),
            msg: msg.into(),
            kind: kind.to_owned(),
        }
    }
}

#[derive(Debug)]
pub enum ZenskarError {
    Validation(Vec<FieldError>),
    Status(StatusCode, String),
}

impl ZenskarError {
    pub fn invalid(loc: &[&str], msg: impl Into<String>, kind: &str) -> Self {
        Self::Validation(vec![FieldError::new(loc, msg, kind)])
    }

    pub fn unauthorized() -> Self {
        Self::Status(StatusCode::UNAUTHORIZED, "Invalid or missing credentials".to_owned())
    }

    pub fn not_found(what: &str) -> Self {
        Self::Status(StatusCode::NOT_FOUND, format!("{what} not found"))
    }

    /// Validation problems of the domain, each under the Zenskar member it came from.
    pub fn from_problems(problems: &Problems) -> Self {
        let errors = problems
            .iter()
            .map(|p| {
                let member = match p.path.as_str() {
                    "aggregation.query" => "aggregation_query",
                    "aggregation.customer_query" => "cust_agg_query",
                    "aggregation.dataschema" => "dataschema",
                    "aggregation.visual_query_builder" => "visual_query_builder",
                    "aggregation.datasource" => "datasource",
                    other => other,
                };
                FieldError::new(&["body", member], p.message.clone(), "value_error")
            })
            .collect();
        Self::Validation(errors)
    }
}

impl From<StoreError> for ZenskarError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { entity, .. } => {
                let what = match entity {
                    odometer_store::Entity::Metric | odometer_store::Entity::MetricRevision => {
                        "Aggregate"
                    }
                    other => other.as_str(),
                };
                Self::not_found(what)
            }
            StoreError::Backend(detail) => {
                tracing::error!(%detail, "zenskar request failed in the store");
                Self::Status(StatusCode::INTERNAL_SERVER_ERROR, internal_message())
            }
            other => Self::Status(StatusCode::CONFLICT, other.to_string()),
        }
    }
}

impl From<MetricError> for ZenskarError {
    fn from(err: MetricError) -> Self {
        match err {
            MetricError::Invalid(problems) => Self::from_problems(&problems),
            MetricError::Store(store) => store.into(),
            other => Self::Status(StatusCode::CONFLICT, other.to_string()),
        }
    }
}

impl From<UsageQueryError> for ZenskarError {
    fn from(err: UsageQueryError) -> Self {
        match err {
            UsageQueryError::Store(store) => store.into(),
            UsageQueryError::Usage(usage) => {
                Self::Status(StatusCode::UNPROCESSABLE_ENTITY, usage.to_string())
            }
        }
    }
}

fn internal_message() -> String {
    match crate::request_context::current_request_id() {
        Some(id) => format!("internal error (request id {id})"),
        None => "internal error".to_owned(),
    }
}

impl IntoResponse for ZenskarError {
    fn into_response(self) -> Response {
        match self {
            Self::Validation(errors) => {
                let detail: Vec<Value> = errors
                    .into_iter()
                    .map(|e| json!({"loc": e.loc, "msg": e.msg, "type": e.kind}))
                    .collect();
                (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(json!({"detail": detail})))
                    .into_response()
            }
            Self::Status(status, detail) => {
                (status, axum::Json(json!({"detail": detail}))).into_response()
            }
        }
    }
}
