//! The request id every response carries, and a task-local copy of it so that an internal
//! error can name it in its body without each handler passing it around.

use axum::extract::Request;
use axum::http::HeaderName;
use axum::middleware::Next;
use axum::response::Response;

/// The header a request id travels in (kept from the client when it sends one).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

pub(crate) fn header_name() -> HeaderName {
    HeaderName::from_static(REQUEST_ID_HEADER)
}

/// Runs the rest of the request with its id in the task-local scope.
pub(crate) async fn scope(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    REQUEST_ID.scope(id, next.run(request)).await
}

/// The current request's id, if called while serving one.
pub(crate) fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok().filter(|id| !id.is_empty())
}
