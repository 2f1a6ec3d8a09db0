//! Extractors whose failures speak Meteroid's envelope: the tenant from the bearer key, JSON
//! bodies, query strings and path segments.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::StatusCode;
use odometer_core::OrganizationId;
use odometer_store::tenants::authenticate;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::MeteroidError;
use crate::AppState;

/// The organization a request acts for: the SDK sends `Authorization: Bearer <api_key>`, and
/// the key is an Odometer API key.
#[derive(Debug, Clone, Copy)]
pub struct Tenant(pub OrganizationId);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = MeteroidError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, MeteroidError> {
        let secret = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(MeteroidError::unauthorized)?;
        let key = authenticate(state.catalog.as_ref(), secret)
            .await?
            .ok_or_else(MeteroidError::unauthorized)?;
        Ok(Tenant(key.organization_id))
    }
}

/// A JSON request body as a [`Value`].
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = MeteroidError;

    async fn from_request(request: Request, state: &S) -> Result<Self, MeteroidError> {
        let is_json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(MeteroidError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON with 'content-type: application/json'",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| MeteroidError::new(rejection.status(), rejection.body_text()))?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| MeteroidError::bad_request(format!("the body is not valid JSON: {e}")))?;
        Ok(JsonBody(value))
    }
}

/// Reads a JSON value into a typed request, answering a 400 naming the problem.
pub fn typed<T: DeserializeOwned>(value: Value) -> Result<T, MeteroidError> {
    serde_json::from_value(value)
        .map_err(|e| MeteroidError::bad_request(format!("invalid request body: {e}")))
}

/// Query parameters; unknown or malformed ones are a 400.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = MeteroidError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, MeteroidError> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(query)
            .map(QueryParams)
            .map_err(|e| MeteroidError::bad_request(format!("invalid query string: {e}")))
    }
}

/// One path segment.
#[derive(Debug)]
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = MeteroidError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, MeteroidError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| PathParam(value))
            .map_err(|rejection| MeteroidError::bad_request(rejection.body_text()))
    }
}
