//! Extractors whose failures speak the native envelope: the authenticated tenant, JSON
//! bodies and query strings.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::StatusCode;
use odometer_core::{ApiKeyId, OrganizationId};
use odometer_store::tenants::authenticate;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;
use crate::AppState;

/// Optional request header naming the organization a request is meant for; when present it
/// must be the API key's organization (else 401).
pub const ORGANIZATION_HEADER: &str = "odometer-organization";

/// The organization a request acts for, from its API key.
#[derive(Debug, Clone, Copy)]
pub struct Tenant {
    pub organization_id: OrganizationId,
    pub key_id: ApiKeyId,
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let secret = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(ApiError::unauthorized)?;
        let key = authenticate(state.catalog.as_ref(), secret)
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        // A request may name the organization it means; a key of another one is refused
        // before anything is looked up, so the answer says nothing about what exists.
        if let Some(named) = parts.headers.get(ORGANIZATION_HEADER) {
            if named.to_str().ok() != Some(key.organization_id.to_string().as_str()) {
                return Err(ApiError::unauthorized());
            }
        }
        Ok(Tenant { organization_id: key.organization_id, key_id: key.id })
    }
}

/// A JSON request body as a [`Value`], for the domain's own validation to read.
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with 'content-type: application/json'",
            ));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(body_error)?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request("malformed_json", "the request body is empty"));
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
        })?;
        Ok(JsonBody(value))
    }
}

fn body_error(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than this route accepts",
        )
    } else {
        ApiError::bad_request("unreadable_body", rejection.body_text())
    }
}

/// Query parameters, strictly: unknown or malformed parameters are a 400, not ignored.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(query).map(QueryParams).map_err(|e| {
            ApiError::bad_request("invalid_query", format!("invalid query string: {e}"))
        })
    }
}

/// Path parameters; a segment that cannot be decoded (invalid UTF-8) is a JSON 400.
#[derive(Debug)]
pub struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| PathParams(value))
            .map_err(|rejection| ApiError::bad_request("invalid_path", rejection.body_text()))
    }
}
