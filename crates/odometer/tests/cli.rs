//! The shipped binary, really started: `odometer serve` on a fresh data directory prints a key
//! once, that key drives the metric lifecycle over HTTP, a restart keeps everything (and
//! prints no new key), and the `init`, `keys` and `metrics` commands work on the same data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use support::{free_port, odometer, run, spawn_server, wait_healthy};

use serde_json::{json, Value};

/// A running `odometer serve`, killed on drop.
struct Server {
    child: Child,
    base: String,
    /// The secret it printed on first start, if it printed one.
    printed_key: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data_dir: &Path) -> Server {
    let port = free_port();
    let (child, keys) = spawn_server(data_dir, port);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base, Duration::from_secs(30));
    let printed_key = keys.recv_timeout(Duration::from_millis(500)).ok();
    Server { child, base, printed_key }
}

fn call(
    server: &Server,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::blocking::Client::new();
    let mut request = client.request(method, format!("{}{path}", server.base)).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap())
}

#[test]
fn serve_prints_a_key_once_and_the_key_drives_the_metric_lifecycle() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("odometer-data");
    let server = start(&data);
    let key = server.printed_key.clone().expect("first start prints an API key");

    let (status, created) = call(
        &server,
        &key,
        Method::POST,
        "/v1/metrics",
        Some(json!({
            "code": "uploads", "name": "Uploaded bytes",
            "aggregation": {"type": "sum", "field": "bytes"}
        })),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, patched) = call(
        &server,
        &key,
        Method::PATCH,
        &format!("/v1/metrics/{id}"),
        Some(json!({"name": "Uploads"})),
    );
    assert_eq!((status, patched["revision"].as_u64()), (200, Some(2)));
    let (_, revisions) =
        call(&server, &key, Method::GET, &format!("/v1/metrics/{id}/revisions"), None);
    assert_eq!(revisions["data"].as_array().unwrap().len(), 2);
    let (status, _) = call(&server, &key, Method::POST, &format!("/v1/metrics/{id}/archive"), None);
    assert_eq!(status, 200);

    // A restart keeps the data, runs no migration twice and prints no new key.
    drop(server);
    let server = start(&data);
    assert_eq!(server.printed_key, None);
    let (status, got) = call(&server, &key, Method::GET, "/v1/metrics/uploads", None);
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["revision"], 2);
    assert!(got["archived_at"].is_string());
    let (status, _) = call(&server, &key, Method::DELETE, &format!("/v1/metrics/{id}"), None);
    assert_eq!(status, 200);
    let (status, gone) = call(&server, &key, Method::GET, &format!("/v1/metrics/{id}"), None);
    assert_eq!((status, gone["error"]["code"].as_str()), (404, Some("metric_not_found")));
    drop(server);

    // The keys on disk are hashes: the secret appears nowhere in the data directory (nor in
    // the events log's folder).
    let mut folders = vec![data.clone()];
    let mut files = 0;
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
                "the key is stored in clear in {}",
                path.display()
            );
        }
    }
    assert!(files >= 3, "the catalog, the events database and its log were read");
}

/// Whether the command succeeded, with its standard output and error.
fn succeeds(cmd: &mut Command, stdin: Option<&str>) -> (bool, String, String) {
    let (code, out, err) = run(cmd, stdin);
    (code == 0, out, err)
}

#[test]
fn init_keys_and_metrics_commands() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    let (ok, out, _) = succeeds(odometer(&data).args(["init", "--name", "acme"]), None);
    assert!(ok);
    assert!(out.contains("odo_"), "{out}");
    let (ok, _, err) = succeeds(odometer(&data).arg("init"), None);
    assert!(!ok, "a second init must refuse");
    assert!(err.contains("already initialized"), "{err}");

    let (ok, out, _) = succeeds(odometer(&data).args(["keys", "create", "--name", "ci"]), None);
    assert!(ok && out.contains("odo_"), "{out}");
    let (ok, out, _) = succeeds(odometer(&data).args(["keys", "list", "--json"]), None);
    assert!(ok);
    let keys: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 2);
    assert!(!out.contains("secret"), "{out}");
    let ci_key = keys.as_array().unwrap().iter().find(|k| k["name"] == "ci").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ok, out, _) = succeeds(odometer(&data).args(["keys", "revoke", &ci_key]), None);
    assert!(ok, "{out}");
    let (_, out, _) = succeeds(odometer(&data).args(["keys", "list"]), None);
    assert!(out.contains("revoked"), "{out}");

    let definition = r#"{"code": "gpu", "name": "GPU seconds", "aggregation": {"type": "sum", "field": "seconds"}}"#;
    let (ok, out, err) = succeeds(odometer(&data).args(["metrics", "create"]), Some(definition));
    assert!(ok, "{err}");
    let metric: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(metric["revision"], 1);

    let patch_file = dir.path().join("patch.json");
    std::fs::write(&patch_file, r#"{"rounding": {"function": "ceil", "precision": 0}}"#).unwrap();
    let (ok, out, err) =
        succeeds(odometer(&data).args(["metrics", "update", "gpu"]).arg(&patch_file), None);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["revision"], 2);

    let (ok, _, err) = succeeds(
        odometer(&data).args(["metrics", "create", "-"]),
        Some(r#"{"code": "bad", "aggregation": {"type": "sum"}}"#),
    );
    assert!(!ok);
    assert!(
        err.contains("aggregation.field") && err.contains("missing_field") && err.contains("name"),
        "{err}"
    );

    let (ok, out, _) = succeeds(odometer(&data).args(["metrics", "list"]), None);
    assert!(ok && out.contains("gpu") && out.contains("GPU seconds"), "{out}");
    let (ok, out, _) = succeeds(odometer(&data).args(["metrics", "get", "gpu"]), None);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["rounding"]["function"], "ceil");

    // Another organization: its own key, none of the first one's metrics.
    let (ok, out, err) =
        succeeds(odometer(&data).args(["organizations", "create", "--name", "globex"]), None);
    assert!(ok, "{err}");
    assert!(out.contains("(globex)") && out.contains("odo_"), "{out}");
    let globex = out.split_whitespace().find(|w| w.starts_with("org_")).unwrap().to_owned();
    let (ok, out, _) = succeeds(odometer(&data).args(["organizations", "list"]), None);
    assert!(ok && out.contains("acme") && out.contains("globex"), "{out}");
    let (ok, _, err) = succeeds(odometer(&data).args(["metrics", "list"]), None);
    assert!(!ok && err.contains("--org"), "two organizations: one must be named: {err}");
    let (ok, out, err) =
        succeeds(odometer(&data).args(["metrics", "list", "--org", &globex]), None);
    assert!(ok, "{err}");
    assert!(!out.contains("gpu"), "{out}");
}
