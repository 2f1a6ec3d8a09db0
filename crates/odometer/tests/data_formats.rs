//! Persisted formats survive upgrades (`spec/reliability.md` promise 5): every golden data
//! directory under `tests/fixtures/` (made by `scripts/make-data-fixture` with the build of its
//! time: the SQLite catalog at its migration, the DuckDB events database at its layout, the
//! events log and the snapshot of a clean shutdown) is opened by this build, through the real
//! binary, on a copy; a key is made with `odometer keys create` on it, and every answer
//! recorded in its `expected.json` (usage by day, all events, the metric and its revisions,
//! customers, the plan, the subscription) must be answered the same.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.json").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// What the API answers now, in the shape `scripts/make-data-fixture` recorded.
fn answers(http: &reqwest::blocking::Client, base: &str, key: &str) -> Value {
    let get = |path: &str| -> Value {
        let response = http.get(format!("{base}{path}")).bearer_auth(key).send().unwrap();
        assert!(response.status().is_success(), "{path}: {}", response.status());
        response.json().unwrap()
    };
    let period = "from=2026-03-01T00:00:00Z&to=2026-04-01T00:00:00Z";
    let mut all = serde_json::Map::new();
    for customer in ["acme", "globex"] {
        for metric in ["calls", "users"] {
            let mut answer =
                get(&format!("/v1/usage?metric={metric}&customer={customer}&{period}&window=day"));
            answer.as_object_mut().unwrap().remove("answered_from");
            all.insert(format!("usage {metric} {customer}"), answer);
        }
    }
    let events = support::list_events(http, base, key);
    all.insert("events".into(), Value::Array(events));
    all.insert("metric calls".into(), get("/v1/metrics/calls"));
    all.insert("revisions calls".into(), get("/v1/metrics/calls/revisions"));
    all.insert("customers".into(), get("/v1/customers"));
    all.insert("plan pro".into(), get("/v1/plans/pro"));
    all.insert("subscription sub-1".into(), get("/v1/subscriptions/sub-1"));
    Value::Object(all)
}

#[test]
fn every_golden_data_directory_opens_and_answers_as_it_did() {
    let fixtures = fixtures();
    assert!(!fixtures.is_empty(), "no fixtures under tests/fixtures");
    for fixture in fixtures {
        let name = fixture.file_name().unwrap().to_string_lossy().into_owned();
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture.join("expected.json")).unwrap())
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        copy_dir(&fixture.join("data"), &data);

        let (status, stdout, stderr) =
            support::run(support::odometer(&data).args(["keys", "create", "--name", "test"]), None);
        assert_eq!(status, 0, "{name}: keys create: {stderr}");
        let key = stdout
            .split_whitespace()
            .find(|w| w.starts_with("odo_"))
            .unwrap_or_else(|| panic!("{name}: no key in {stdout}"))
            .to_owned();

        let port = support::free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut child = support::odometer(&data)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        support::wait_healthy(&base, Duration::from_secs(60));
        let http = reqwest::blocking::Client::new();
        let actual = answers(&http, &base, &key);
        let _ = child.kill();
        let _ = child.wait();
        for (what, want) in expected.as_object().unwrap() {
            assert_eq!(&actual[what], want, "{name}: {what} differs from what it answered");
        }
        assert_eq!(
            actual.as_object().unwrap().len(),
            expected.as_object().unwrap().len(),
            "{name}: the same questions"
        );
    }
}
