//! The HTTP client of the commands that talk to a running server (`events import`, `usage`):
//! the connection settings, one call with retries, the native error envelope, and the exit
//! status an error ends the program with.

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cli::RemoteArgs;

/// Exit status of a usage error (clap uses the same for the errors it finds).
pub const EXIT_USAGE: u8 = 2;

/// Attempts of one call before giving up, when the failures are worth retrying.
const MAX_ATTEMPTS: u32 = 6;
/// The wait before the second attempt; each later wait doubles (0.5, 1, 2, 4, 8 s: long enough
/// to ride out a server restart).
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest `retry-after` honoured, so a confused server cannot park the command for hours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// A request that has not been answered by then is abandoned (and retried): an ingestion batch
/// of 10,000 events is answered in well under this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An error that ends the program with a given exit status instead of 1.
#[derive(Debug)]
pub struct Exit {
    pub status: u8,
    pub message: String,
}

impl Exit {
    pub fn usage(message: impl Into<String>) -> Self {
        Self { status: EXIT_USAGE, message: message.into() }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// The exit status an error ends the program with: the one an [`Exit`] carries, else 1.
pub fn exit_status(err: &anyhow::Error) -> u8 {
    err.downcast_ref::<Exit>().map_or(1, |exit| exit.status)
}

/// The native error envelope's inner object.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiError {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub details: Vec<ErrorDetail>,
    #[serde(default)]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ErrorDetail {
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: ApiError,
}

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// No answer: the server could not be reached, the connection broke or timed out.
    Transport { base: String, source: reqwest::Error },
    /// The server answered with an error.
    Api { status: StatusCode, retry_after: Option<Duration>, error: ApiError },
}

impl CallError {
    /// Whether trying again may succeed: no answer, a server error, or rate limiting. Every
    /// call this client makes is safe to repeat (reads, and ingestion, which is exactly-once).
    pub fn is_retryable(&self) -> bool {
        match self {
            CallError::Transport { .. } => true,
            CallError::Api { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Transport { base, source } => {
                let what =
                    if source.is_timeout() { "no answer in time from" } else { "cannot reach" };
                write!(
                    f,
                    "{what} odometer at {base} ({}); is `odometer serve` running there? \
                     (set the address with --url or ODOMETER_URL)",
                    innermost_cause(source)
                )
            }
            CallError::Api { error, .. } => {
                write!(f, "{}: {}", error.code, error.message)?;
                for detail in &error.details {
                    let path = if detail.path.is_empty() { "(body)" } else { detail.path.as_str() };
                    write!(f, "\n  {path}: {} [{}]", detail.message, detail.code)?;
                }
                if let Some(id) = &error.request_id {
                    write!(f, "\n  (request id {id})")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for CallError {}

/// The most specific cause of a transport error ("Connection refused (os error 111)"), which
/// says more than reqwest's "error sending request for url (...)".
fn innermost_cause(err: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// A client of one server, with one organization's key.
#[derive(Debug, Clone)]
pub struct Remote {
    base: Url,
    api_key: String,
    client: reqwest::Client,
}

impl Remote {
    /// Checks the settings (a usage error when the key is missing or the URL is not one).
    pub fn new(args: &RemoteArgs) -> anyhow::Result<Remote> {
        let api_key = match args.api_key.as_deref().map(str::trim) {
            Some(key) if !key.is_empty() => key.to_owned(),
            _ => {
                return Err(Exit::usage(
                    "no API key: pass --api-key or set ODOMETER_API_KEY \
                     (`odometer keys create` makes one)",
                )
                .into())
            }
        };
        // `localhost:8080` would parse as a URL of scheme "localhost": a bare address is http.
        let text = args.url.trim();
        let text = if text.contains("://") { text.to_owned() } else { format!("http://{text}") };
        let mut base = Url::parse(&text).map_err(|e| {
            Exit::usage(format!(
                "--url '{}' is not a URL like http://127.0.0.1:8080: {e}",
                args.url
            ))
        })?;
        if base.scheme() != "http" {
            return Err(Exit::usage(format!(
                "--url '{}' must start with http:// (this build of odometer has no TLS)",
                args.url
            ))
            .into());
        }
        // Paths are joined onto the base, so a base with a path prefix must end in '/'.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("odometer-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot create the HTTP client: {e}"))?;
        Ok(Remote { base, api_key, client })
    }

    /// The server's address as given, for messages.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The URL of `path` (relative, like `v1/usage`) with `query` URL-encoded.
    pub fn url(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Url> {
        let mut url = self
            .base
            .join(path)
            .map_err(|e| anyhow::anyhow!("cannot build a URL for {path}: {e}"))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// One request, once; the answer's JSON body. `accept` says which statuses besides 2xx
    /// carry a normal answer (ingestion's 422 lists each event's outcome).
    pub async fn call_once(
        &self,
        method: Method,
        url: &Url,
        json_body: Option<&[u8]>,
        accept: &[StatusCode],
    ) -> Result<Value, CallError> {
        let transport = |source| CallError::Transport { base: self.base().to_owned(), source };
        let mut request = self.client.request(method, url.clone()).bearer_auth(&self.api_key);
        if let Some(body) = json_body {
            request = request.header(CONTENT_TYPE, "application/json").body(body.to_vec());
        }
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let bytes = response.bytes().await.map_err(transport)?;
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        // An accepted error status may still carry the error envelope (an empty batch is a 422
        // with no per-event answer).
        let is_answer = |body: &Value| {
            status.is_success() || (accept.contains(&status) && body.get("error").is_none())
        };
        let body = match body {
            Some(body) if is_answer(&body) => return Ok(body),
            other => other,
        };
        let error = body
            .and_then(|body| serde_json::from_value::<ErrorEnvelope>(body).ok())
            .map(|envelope| envelope.error)
            .unwrap_or_else(|| not_native(status, &bytes));
        Err(CallError::Api { status, retry_after, error })
    }

    /// [`Remote::call_once`], retried with backoff while the failure is worth retrying;
    /// `on_retry` hears of each failure that will be retried and the wait before the retry.
    pub async fn call(
        &self,
        method: Method,
        url: &Url,
        json_body: Option<&[u8]>,
        accept: &[StatusCode],
        mut on_retry: impl FnMut(&CallError, Duration),
    ) -> Result<Value, CallError> {
        let mut attempt = 1;
        loop {
            match self.call_once(method.clone(), url, json_body, accept).await {
                Ok(answer) => return Ok(answer),
                Err(err) if err.is_retryable() && attempt < MAX_ATTEMPTS => {
                    let wait = retry_wait(attempt, &err);
                    on_retry(&err, wait);
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// `GET` a native route, with retries (reads are safe to repeat).
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let url = self.url(path, query)?;
        Ok(self.call(Method::GET, &url, None, &[], |_, _| {}).await?)
    }

    /// Checks, before any work, that the server answers and takes the key: one quick call,
    /// not retried, so a wrong URL or key fails at once.
    pub async fn check(&self) -> anyhow::Result<()> {
        let url = self.url("v1/organization", &[])?;
        self.call_once(Method::GET, &url, None, &[]).await?;
        Ok(())
    }
}

/// The wait before attempt `attempt + 1`: the server's `retry-after` when it sent one, else
/// exponential backoff.
fn retry_wait(attempt: u32, err: &CallError) -> Duration {
    if let CallError::Api { retry_after: Some(wait), .. } = err {
        return (*wait).min(MAX_RETRY_AFTER);
    }
    FIRST_BACKOFF.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
}

/// `retry-after` in seconds (the HTTP-date form is not used by Odometer and is ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?;
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// An error answer without the native envelope: something else is listening at the URL, or a
/// proxy answered.
fn not_native(status: StatusCode, bytes: &[u8]) -> ApiError {
    let text = String::from_utf8_lossy(bytes);
    let text: String = text.trim().chars().take(200).collect();
    let reason = status.canonical_reason().unwrap_or("error");
    let message = if text.is_empty() {
        format!("the server answered {} {reason} with no error body", status.as_u16())
    } else {
        format!("the server answered {} {reason}: {text}", status.as_u16())
    };
    ApiError {
        code: format!("http_{}", status.as_u16()),
        message,
        details: Vec::new(),
        request_id: None,
    }
}

/// Why the server refused one event (`{"code", "message"}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rejection {
    pub code: String,
    pub message: String,
}

/// One event's outcome in an ingestion answer.
#[derive(Debug, Clone, Deserialize)]
pub struct EventResult {
    /// `accepted`, `duplicate` or `rejected`.
    pub status: String,
    #[serde(default)]
    pub error: Option<Rejection>,
}

/// The answer of `POST /v1/events`.
#[derive(Debug, Clone, Deserialize)]
pub struct IngestAnswer {
    pub results: Vec<EventResult>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(url: &str, key: Option<&str>) -> RemoteArgs {
        RemoteArgs { url: url.to_owned(), api_key: key.map(str::to_owned) }
    }

    #[test]
    fn settings_are_checked_before_any_call() {
        let cases = [
            ("http://127.0.0.1:8080", None, Some("no API key")),
            ("http://127.0.0.1:8080", Some("  "), Some("no API key")),
            ("ftp://127.0.0.1:8080", Some("k"), Some("must start with http://")),
            ("localhost:8080", Some("k"), None),
            ("https://example.invalid", Some("k"), Some("no TLS")),
            ("http://not a url", Some("k"), Some("is not a URL")),
            ("http://127.0.0.1:8080", Some("k"), None),
        ];
        for (url, key, expected) in cases {
            match (Remote::new(&args(url, key)), expected) {
                (Ok(_), None) => {}
                (Err(err), Some(text)) => {
                    assert!(err.to_string().contains(text), "{url}: {err}");
                    assert_eq!(exit_status(&err), EXIT_USAGE, "{url}");
                }
                (Ok(_), Some(text)) => panic!("{url}: expected an error with '{text}'"),
                (Err(err), None) => panic!("{url}: {err}"),
            }
        }
    }

    #[test]
    fn urls_keep_a_path_prefix_and_encode_the_query() {
        let remote = Remote::new(&args("http://h:1/odometer", Some("k"))).unwrap();
        let url =
            remote.url("v1/usage", &[("customer", "a b&c"), ("from", "2026-01-01T00:00:00+01:00")]);
        assert_eq!(
            url.unwrap().as_str(),
            "http://h:1/odometer/v1/usage?customer=a+b%26c&from=2026-01-01T00%3A00%3A00%2B01%3A00"
        );
        assert_eq!(remote.base(), "http://h:1/odometer");
    }

    #[test]
    fn waits_double_unless_the_server_says_how_long() {
        let server_error = |retry_after| CallError::Api {
            status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after,
            error: not_native(StatusCode::SERVICE_UNAVAILABLE, b""),
        };
        let waits: Vec<u64> = (1..MAX_ATTEMPTS)
            .map(|n| retry_wait(n, &server_error(None)).as_millis() as u64)
            .collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000]);
        let told = server_error(Some(Duration::from_secs(3)));
        assert_eq!(retry_wait(4, &told), Duration::from_secs(3));
        let too_long = server_error(Some(Duration::from_secs(86_400)));
        assert_eq!(retry_wait(1, &too_long), MAX_RETRY_AFTER);
    }

    #[test]
    fn which_failures_are_retried() {
        let api = |status| CallError::Api {
            status,
            retry_after: None,
            error: not_native(status, b"oops"),
        };
        for (status, retried) in [
            (StatusCode::INTERNAL_SERVER_ERROR, true),
            (StatusCode::SERVICE_UNAVAILABLE, true),
            (StatusCode::TOO_MANY_REQUESTS, true),
            (StatusCode::UNAUTHORIZED, false),
            (StatusCode::UNPROCESSABLE_ENTITY, false),
            (StatusCode::PAYLOAD_TOO_LARGE, false),
        ] {
            assert_eq!(api(status).is_retryable(), retried, "{status}");
        }
    }

    #[test]
    fn errors_read_as_code_message_and_details() {
        let err = CallError::Api {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            retry_after: None,
            error: ApiError {
                code: "invalid_query".into(),
                message: "two problems".into(),
                details: vec![ErrorDetail {
                    path: "window".into(),
                    code: "invalid_value".into(),
                    message: "unknown window".into(),
                }],
                request_id: None,
            },
        };
        assert_eq!(
            err.to_string(),
            "invalid_query: two problems\n  window: unknown window [invalid_value]"
        );
        let plain = not_native(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert_eq!(plain.code, "http_502");
        assert!(plain.message.contains("502 Bad Gateway: <html>"), "{}", plain.message);
    }
}
