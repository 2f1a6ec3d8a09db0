//! Load shedding: bounds on the work in flight, so an overloaded server answers at once with
//! 429 and `retry-after` in each surface's own envelope, instead of queueing without bound
//! (memory) or answering late (timeouts). Two bounds, both settings of the binary:
//! ingest requests in flight (each may carry up to 10,000 events) and usage questions in
//! flight (usage, current usage, previews, fee estimates: the reads that fold events). Other
//! requests are small and are not bounded here.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::telemetry::dialect_of;

/// Seconds a shed request is told to wait before retrying.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// The bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Ingest requests (any dialect) handled at once; more are answered 429.
    pub max_ingest_in_flight: usize,
    /// Usage questions handled at once; more are answered 429.
    pub max_queries_in_flight: usize,
}

impl Default for Limits {
    /// 64 ingest requests (at most about 64 x 10,000 events held at once) and 256 usage
    /// questions.
    fn default() -> Self {
        Self { max_ingest_in_flight: 64, max_queries_in_flight: 256 }
    }
}

/// What a request is, for the bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ingest,
    Query,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Ingest => "ingest",
            Kind::Query => "query",
        }
    }
}

/// Ingest and query routes of every dialect, by method and matched route pattern.
pub fn classify(method: &Method, route: &str) -> Option<Kind> {
    let ingest = method == Method::POST
        && (route == "/v1/events"
            || route == "/v1/events/ndjson"
            || route == "/lago/api/v1/events"
            || route == "/lago/api/v1/events/batch"
            || route == "/meteroid/api/v1/events/ingest"
            || route.starts_with("/zenskar/usage/"));
    if ingest {
        return Some(Kind::Ingest);
    }
    let query = route == "/v1/usage"
        || route.ends_with("/preview")
        || route == "/v1/subscriptions/{external_id}/usage"
        || route.ends_with("/current_usage")
        || route == "/lago/api/v1/events/estimate_fees"
        || route.starts_with("/meteroid/api/v1/usage/")
        || route == "/zenskar/aggregates/estimates";
    query.then_some(Kind::Query)
}

/// The permits of both bounds.
#[derive(Debug)]
pub struct Shedder {
    ingest: Arc<Semaphore>,
    queries: Arc<Semaphore>,
}

impl Shedder {
    pub fn new(limits: Limits) -> Self {
        Self {
            ingest: Arc::new(Semaphore::new(limits.max_ingest_in_flight)),
            queries: Arc::new(Semaphore::new(limits.max_queries_in_flight)),
        }
    }
}

/// The middleware (after routing, so the route pattern is known): runs the request holding a
/// permit of its kind, or answers 429 at once when none is free.
pub async fn shed(shedder: Arc<Shedder>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let Some(route) = route else { return next.run(request).await };
    let Some(kind) = classify(request.method(), &route) else { return next.run(request).await };
    let semaphore = match kind {
        Kind::Ingest => &shedder.ingest,
        Kind::Query => &shedder.queries,
    };
    match semaphore.clone().try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => {
            let dialect = dialect_of(&route);
            metrics::counter!("odometer_shed_total", "dialect" => dialect, "kind" => kind.as_str())
                .increment(1);
            discard_body(request).await;
            overloaded(dialect, kind)
        }
    }
}

/// Reads a shed request's body to its end, keeping none of it, before the 429 goes out. An
/// HTTP/1.1 server that answers while the client is still uploading closes the connection
/// after the answer, and the client, still writing, may see the connection reset instead of
/// the 429 and its `retry-after` (found by `odometer soak`: a few ingest requests per minute
/// ended as "connection closed before message completed"). Past the largest body any route
/// accepts the rest is left unread (the connection then closes, as it would anyway).
async fn discard_body(request: Request) {
    use futures_util::StreamExt;
    let mut stream = request.into_body().into_data_stream();
    let mut read = 0usize;
    while let Some(Ok(chunk)) = stream.next().await {
        read += chunk.len();
        if read > crate::native::EVENTS_BODY_LIMIT_BYTES {
            return;
        }
    }
}

/// 429 in the envelope of `dialect`, with `retry-after`.
pub fn overloaded(dialect: &str, kind: Kind) -> Response {
    let message = match kind {
        Kind::Ingest => "too many ingest requests in flight: retry after a second",
        Kind::Query => "too many usage questions in flight: retry after a second",
    };
    let status = StatusCode::TOO_MANY_REQUESTS;
    let mut response = match dialect {
        "lago" => crate::lago::error::LagoError::too_many_requests().into_response(),
        "meteroid" => crate::meteroid::error::MeteroidError::new(status, message).into_response(),
        "zenskar" => {
            crate::zenskar::error::ZenskarError::Status(status, message.to_owned()).into_response()
        }
        _ => crate::native::error::ApiError::new(status, "overloaded", message).into_response(),
    };
    response.headers_mut().insert("retry-after", HeaderValue::from(RETRY_AFTER_SECONDS));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_and_query_routes_of_every_dialect() {
        let post = Method::POST;
        let get = Method::GET;
        for route in [
            "/v1/events",
            "/v1/events/ndjson",
            "/lago/api/v1/events",
            "/lago/api/v1/events/batch",
            "/meteroid/api/v1/events/ingest",
            "/zenskar/usage/{api_slug}",
        ] {
            assert_eq!(classify(&post, route), Some(Kind::Ingest), "{route}");
        }
        assert_eq!(classify(&get, "/v1/events"), None, "listing events is not ingest");
        for (method, route) in [
            (&get, "/v1/usage"),
            (&post, "/v1/metrics/{id_or_code}/preview"),
            (&get, "/v1/subscriptions/{external_id}/usage"),
            (&get, "/lago/api/v1/customers/{external_id}/current_usage"),
            (&post, "/lago/api/v1/events/estimate_fees"),
            (&get, "/meteroid/api/v1/usage/customer/{id}"),
            (&get, "/zenskar/aggregates/estimates"),
        ] {
            assert_eq!(classify(method, route), Some(Kind::Query), "{route}");
        }
        assert_eq!(classify(&get, "/v1/metrics"), None);
        assert_eq!(classify(&post, "/v1/events/explain"), None);
    }
}
