//! What the HTTP surfaces record for `/metrics` through the `metrics` facade (the binary
//! installs the Prometheus recorder; without one these calls do nothing):
//! - `odometer_http_requests_total{dialect, route, method, status}`: every request, by the
//!   route pattern it matched (`/v1/metrics/{id}`, never the raw path, so ids do not make new
//!   series; `unmatched` when no route did);
//! - `odometer_http_request_duration_seconds{dialect, route}`: their latency;
//! - `odometer_usage_answers_total{path, reason}`: native usage answers by the path that
//!   computed them (`index`, `index+edges`, `events` with its reason).

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use odometer_store::events::{UsageAnswer, UsagePath};

/// The surface a route belongs to, from its pattern.
pub fn dialect_of(route: &str) -> &'static str {
    let first = route.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "lago" => "lago",
        "meteroid" => "meteroid",
        "zenskar" => "zenskar",
        "console" => "console",
        _ => "native",
    }
}

/// Middleware: counts and times every request by its matched route.
pub async fn record_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let matched = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    // An unmatched path still tells its dialect by its prefix (`/lago/...`).
    let dialect = dialect_of(matched.as_deref().unwrap_or(request.uri().path()));
    let route = matched.unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("odometer_http_requests_total",
        "dialect" => dialect, "route" => route.clone(), "method" => method, "status" => status)
    .increment(1);
    metrics::histogram!("odometer_http_request_duration_seconds",
        "dialect" => dialect, "route" => route)
    .record(started.elapsed().as_secs_f64());
    response
}

/// Counts usage answers by the path that computed them.
pub fn record_usage_answers(answers: &[UsageAnswer]) {
    for answer in answers {
        let (path, reason) = match &answer.path {
            UsagePath::Index { edges: false } => ("index", ""),
            UsagePath::Index { edges: true } => ("index+edges", ""),
            UsagePath::Events(reason) => ("events", reason.as_str()),
        };
        metrics::counter!("odometer_usage_answers_total", "path" => path, "reason" => reason)
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::dialect_of;

    #[test]
    fn routes_belong_to_their_dialect() {
        assert_eq!(dialect_of("/lago/api/v1/events"), "lago");
        assert_eq!(dialect_of("/meteroid/api/v1/events/ingest"), "meteroid");
        assert_eq!(dialect_of("/zenskar/usage/events"), "zenskar");
        assert_eq!(dialect_of("/console/{*rest}"), "console");
        assert_eq!(dialect_of("/v1/metrics/{id}"), "native");
        assert_eq!(dialect_of("unmatched"), "native");
    }
}
