//! Extractors of the Zenskar dialect: `x-api-key` plus `organisation` authentication, JSON
//! bodies and query strings, failing in FastAPI's shape.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use odometer_core::OrganizationId;
use odometer_store::tenants::authenticate;
use serde_json::Value;

use super::error::ZenskarError;
use crate::AppState;

/// The organization a request acts for: its `x-api-key` must be an Odometer API key and its
/// `organisation` header that key's organization id (no key, a wrong key or another
/// organization is 401, before anything is looked up).
#[derive(Debug, Clone, Copy)]
pub struct Organisation(pub OrganizationId);

impl FromRequestParts<AppState> for Organisation {
    type Rejection = ZenskarError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ZenskarError> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        // No credentials, a wrong key, a key of another organization, or an `organisation`
        // that is not an organization id: 401. A request naming a well-formed organisation but
        // sending no key, or a valid key but no organisation, is missing a required header,
        // which FastAPI answers with 422 (the only error status the seed documents).
        let missing =
            |name: &str| ZenskarError::invalid(&["header", name], "Field required", "missing");
        let named = header("organisation").map(str::trim);
        let Some(secret) = header("x-api-key").map(str::trim) else {
            return Err(match named {
                Some(org) if OrganizationId::parse(org).is_some() => missing("x-api-key"),
                _ => ZenskarError::unauthorized(),
            });
        };
        let key = authenticate(state.catalog.as_ref(), secret)
            .await?
            .ok_or_else(ZenskarError::unauthorized)?;
        let named = named.ok_or_else(|| missing("organisation"))?;
        if named != key.organization_id.to_string() {
            return Err(ZenskarError::unauthorized());
        }
        Ok(Organisation(key.organization_id))
    }
}

/// A JSON body (FastAPI reads the body as JSON whatever its content type says).
#[derive(Debug)]
pub struct Body {
    pub value: Value,
}

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ZenskarError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ZenskarError> {
        let bytes = Bytes::from_request(request, state).await.map_err(|e| {
            ZenskarError::invalid(&["body"], format!("could not read the body: {e}"), "body_error")
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ZenskarError::invalid(&["body"], "Field required", "missing"));
        }
        let value = serde_json::from_slice(&bytes).map_err(|e| {
            ZenskarError::invalid(
                &["body", &e.column().to_string()],
                "JSON decode error",
                "json_invalid",
            )
        })?;
        Ok(Body { value })
    }
}

/// The query string as name to value (the last one wins).
pub fn query_map(raw: Option<&str>) -> Result<HashMap<String, String>, ZenskarError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|_| ZenskarError::invalid(&["query"], "invalid query string", "value_error"))?;
    Ok(pairs.into_iter().collect())
}

/// `limit`: 1 to 1000, default 100.
pub fn limit(query: &HashMap<String, String>) -> Result<usize, ZenskarError> {
    match query.get("limit") {
        None => Ok(100),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => Ok(n),
            _ => Err(ZenskarError::invalid(
                &["query", "limit"],
                "Input should be an integer from 1 to 1000",
                "int_parsing",
            )),
        },
    }
}

/// SQL `ILIKE`: `%` is any run of characters, `_` any one, case-insensitive.
pub fn ilike(text: &str, pattern: &str) -> bool {
    fn go(t: &[char], p: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('%', rest)) => (0..=t.len()).any(|i| go(&t[i..], rest)),
            Some(('_', rest)) => !t.is_empty() && go(&t[1..], rest),
            Some((c, rest)) => t.first() == Some(c) && go(&t[1..], rest),
        }
    }
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    // Patterns without a wildcard match as a substring (as `name__ilike` filters are used).
    if !p.contains(&'%') && !p.contains(&'_') {
        return text.to_lowercase().contains(&pattern.to_lowercase());
    }
    go(&t, &p)
}

#[cfg(test)]
mod tests {
    use super::ilike;

    #[test]
    fn ilike_matches_like_sql() {
        assert!(ilike("API calls", "api%"));
        assert!(ilike("API calls", "%CALL_"));
        assert!(!ilike("API calls", "calls%"));
        assert!(ilike("API calls", "calls"), "no wildcard: a substring");
    }
}

/// A path parameter. One that is not valid (invalid UTF-8 once percent-decoded) is a 422 in
/// FastAPI's shape (`loc: ["path"]`), not axum's plain-text rejection.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ZenskarError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ZenskarError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection| {
                ZenskarError::invalid(&["path"], rejection.body_text(), "value_error")
            })
    }
}
