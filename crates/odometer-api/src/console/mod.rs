//! The web console (`/console`): a static page shell, a stylesheet and vanilla JavaScript
//! modules, embedded in the binary. Every page is the same shell; its script signs in with an
//! API key kept in `sessionStorage` and draws the page from the native `/v1` API, so the
//! console shows nothing the API does not answer. The server holds no console state and sees
//! the key only as the `Authorization` header of `/v1` calls.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::native::error::ApiError;

/// The shell every console page starts from.
const SHELL: &str = include_str!("assets/console.html");

/// The embedded assets: name, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    ("console.css", "text/css; charset=utf-8", include_str!("assets/console.css")),
    ("app.js", JS, include_str!("assets/app.js")),
    ("api.js", JS, include_str!("assets/api.js")),
    ("ui.js", JS, include_str!("assets/ui.js")),
    ("chart.js", JS, include_str!("assets/chart.js")),
    ("metric_form.js", JS, include_str!("assets/metric_form.js")),
    ("metrics.js", JS, include_str!("assets/metrics.js")),
    ("usage.js", JS, include_str!("assets/usage.js")),
    ("events.js", JS, include_str!("assets/events.js")),
    ("billing.js", JS, include_str!("assets/billing.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

/// Scripts and styles only from the console itself, no inline script, calls only to this
/// origin; the page cannot be framed, and links send no referrer.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// The `/console` routes (mounted beside the API; they need no key).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/console", get(shell))
        .route("/console/", get(shell))
        .route("/console/assets/{name}", get(asset))
        .route("/console/{*page}", get(shell))
}

fn headers(content_type: &'static str) -> [(HeaderName, HeaderValue); 6] {
    [
        (CONTENT_TYPE, HeaderValue::from_static(content_type)),
        // Small files, embedded: always revalidate so a new binary's console is seen at once.
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            HeaderName::from_static("content-security-policy"),
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff")),
        (HeaderName::from_static("referrer-policy"), HeaderValue::from_static("no-referrer")),
        (HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY")),
    ]
}

async fn shell() -> Response {
    (headers("text/html; charset=utf-8"), SHELL).into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some(&(_, content_type, body)) => (headers(content_type), body).into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "route_not_found",
            format!("no console asset '{name}'"),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every module an asset imports is served, so a page never fails on a missing file.
    #[test]
    fn every_imported_module_is_embedded() {
        for (name, _, body) in ASSETS {
            for line in body.lines().filter(|l| l.starts_with("import ")) {
                let Some(from) = line.split(['\'', '"']).nth(1) else { continue };
                let imported = from.trim_start_matches("./");
                assert!(
                    ASSETS.iter().any(|(n, _, _)| *n == imported),
                    "{name} imports {from}, which is not embedded"
                );
            }
        }
        assert!(SHELL.contains("/console/assets/app.js"));
        assert!(SHELL.contains("/console/assets/console.css"));
    }
}
