//! Extractors whose failures speak Lago's envelope: the tenant from `Authorization: Bearer`,
//! JSON bodies with their root key, query strings, and Lago's page/per_page pagination.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;
use odometer_core::OrganizationId;
use odometer_store::tenants::authenticate;
use serde_json::{json, Map, Value};

use super::error::LagoError;
use crate::AppState;

/// The organization a Lago request acts for, from its API key.
#[derive(Debug, Clone, Copy)]
pub struct LagoTenant {
    pub organization_id: OrganizationId,
}

impl FromRequestParts<AppState> for LagoTenant {
    type Rejection = LagoError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, LagoError> {
        let secret = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(LagoError::unauthorized)?;
        let key = authenticate(state.catalog.as_ref(), secret)
            .await
            .map_err(|e| LagoError::internal(e.to_string()))?
            .ok_or_else(LagoError::unauthorized)?;
        Ok(LagoTenant { organization_id: key.organization_id })
    }
}

/// A request body read as JSON whatever its content type (Lago's clients all send JSON); an
/// empty body reads as `{}`, so a route then answers its missing root key.
#[derive(Debug)]
pub struct LagoBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for LagoBody {
    type Rejection = LagoError;

    async fn from_request(request: Request, state: &S) -> Result<Self, LagoError> {
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                LagoError::payload_too_large()
            } else {
                LagoError::bad_request(rejection.body_text())
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(LagoBody(json!({})));
        }
        serde_json::from_slice(&bytes)
            .map(LagoBody)
            .map_err(|e| LagoError::bad_request(format!("the body is not valid JSON: {e}")))
    }
}

impl LagoBody {
    /// The object under `root`; absent, null, empty or not an object is Lago's 400.
    pub fn root(&self, root: &str) -> Result<Map<String, Value>, LagoError> {
        match self.0.get(root) {
            Some(Value::Object(map)) if !map.is_empty() => Ok(map.clone()),
            _ => Err(LagoError::missing_param(root)),
        }
    }
}

/// A query string as its pairs, in order (repeated keys such as `status[]` kept).
#[derive(Debug, Default)]
pub struct LagoQuery(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for LagoQuery {
    type Rejection = LagoError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, LagoError> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .map(LagoQuery)
            .map_err(|e| LagoError::bad_request(format!("invalid query string: {e}")))
    }
}

impl LagoQuery {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }

    /// Lago's `page` (from 1) and `per_page` (1 to 1000, default 100): a value out of range
    /// is a 422 naming it, never a clamp.
    pub fn paging(&self) -> Result<Paging, LagoError> {
        let read = |key: &str, default: usize, max: usize| -> Result<usize, LagoError> {
            match self.get(key) {
                None | Some("") => Ok(default),
                Some(text) => match text.parse::<usize>() {
                    Ok(n) if (1..=max).contains(&n) => Ok(n),
                    _ => Err(LagoError::field(key, "value_is_invalid")),
                },
            }
        };
        Ok(Paging { page: read("page", 1, usize::MAX)?, per_page: read("per_page", 100, 1000)? })
    }
}

/// One page of a Lago list.
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    pub page: usize,
    pub per_page: usize,
}

impl Paging {
    /// The items of this page and Lago's `meta`.
    pub fn slice<T>(&self, all: Vec<T>) -> (Vec<T>, Value) {
        let total = all.len();
        let total_pages = total.div_ceil(self.per_page).max(1);
        let start = (self.page - 1).saturating_mul(self.per_page).min(total);
        let items: Vec<T> = all.into_iter().skip(start).take(self.per_page).collect();
        let meta = json!({
            "current_page": self.page,
            "next_page": (self.page < total_pages).then_some(self.page + 1),
            "prev_page": (self.page > 1).then_some(self.page - 1),
            "total_pages": total_pages,
            "total_count": total,
        });
        (items, meta)
    }
}

/// A path parameter. One that is not valid (invalid UTF-8 once percent-decoded) is a 400 in
/// Lago's envelope, not axum's plain-text rejection.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = LagoError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, LagoError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection| LagoError::bad_request(rejection.body_text()))
    }
}
