//! SQL metrics on the DuckDB event store (semantics 7): Zenskar's documented query over a
//! usage table, scoping to one organization, customer and period, and the scoped path checked
//! against the reference (a fresh DuckDB holding only the customer's events) on generated data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use odometer_core::event::{Event, StoredEvent};
use odometer_core::metric_input::parse_metric_spec;
use odometer_core::usage::{UsageQuery, UsageResult, WindowSize, DEFAULT_GROUP_LIMIT};
use odometer_core::{MetricSpec, OrganizationId};
use odometer_embedded::events::reference_usage;
use odometer_embedded::DuckEventStore;
use odometer_store::events::{EventListParams, EventStore};
use odometer_store::usage_tables::{FieldType, UsageTable};
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    format!("2026-03-{day:02}T{hour:02}:00:00Z").parse().unwrap()
}

fn sql_spec(query: &str) -> MetricSpec {
    parse_metric_spec(&json!({"code": "m", "name": "M",
        "aggregation": {"type": "custom_sql", "query": query}}))
    .unwrap()
}

fn event(customer: &str, id: &str, code: &str, when: DateTime<Utc>, props: Value) -> Event {
    let properties: Map<String, Value> = props.as_object().cloned().unwrap();
    Event {
        transaction_id: id.to_owned(),
        code: code.to_owned(),
        customer: customer.to_owned(),
        timestamp: when,
        properties,
    }
}

fn period(from: DateTime<Utc>, to: DateTime<Utc>) -> UsageQuery {
    UsageQuery {
        from,
        to,
        window: WindowSize::None,
        timezone: Tz::UTC,
        group_by: Vec::new(),
        as_of: None,
        group_limit: DEFAULT_GROUP_LIMIT,
    }
}

fn premises_table() -> UsageTable {
    UsageTable {
        id: "0190a0b0-0000-7000-8000-000000000001".to_owned(),
        name: "Premises".to_owned(),
        api_slug: "premises".to_owned(),
        description: None,
        fields: vec![
            ("Premises_used".to_owned(), FieldType::Int64),
            ("site".to_owned(), FieldType::String),
        ],
        dataschema: json!({}),
        created_at: at(1, 0),
    }
}

fn total(result: &UsageResult) -> Option<Decimal> {
    result.windows[0].total
}

const ZENSKAR_QUERY: &str = r#"SELECT COALESCE(COUNT(data.Premises_used)) AS "quantity" FROM premises
WHERE DATE("timestamp") >= DATE({{start_date}}) AND DATE("timestamp") <= DATE({{end_date}})
  AND "customer_id" = CAST({{customer.external_id}} AS String)"#;

#[tokio::test]
async fn zenskar_documented_query_counts_one_customers_rows_in_the_period() {
    let store = DuckEventStore::open_in_memory().unwrap();
    let (org, other_org) = (OrganizationId::new(), OrganizationId::new());
    for o in [org, other_org] {
        assert!(store.create_usage_table(o, premises_table()).await.unwrap());
    }
    assert!(!store.create_usage_table(org, premises_table()).await.unwrap(), "slug taken");
    let row = |c: &str, id: &str, when, n: i64| {
        event(c, id, "premises", when, json!({"Premises_used": n, "site": "a"}))
    };
    store
        .append(
            org,
            vec![
                row("acme", "1", at(2, 10), 3),
                row("acme", "2", at(15, 10), 4),
                row("acme", "3", at(31, 23), 5),
                row("acme", "late", "2026-04-01T00:00:00Z".parse().unwrap(), 6),
                row("globex", "4", at(3, 10), 7),
                event("acme", "5", "other_code", at(4, 10), json!({"Premises_used": 1})),
            ],
            false,
        )
        .await
        .unwrap();
    store.append(other_org, vec![row("acme", "1", at(2, 10), 3)], false).await.unwrap();
    let spec = sql_spec(ZENSKAR_QUERY);
    let march = period(at(1, 0), "2026-04-01T00:00:00Z".parse().unwrap());
    let result = store.usage(org, "acme", &spec, &march).await.unwrap();
    assert_eq!(total(&result), Some(Decimal::from(3)), "{result:?}");
    let result = store.usage(org, "globex", &spec, &march).await.unwrap();
    assert_eq!(total(&result), Some(Decimal::from(1)));

    // A sum over a typed field, grouped by another.
    let spec = sql_spec(
        "SELECT data.site AS site, SUM(data.Premises_used) AS value FROM premises GROUP BY 1",
    );
    let result = store.usage(org, "acme", &spec, &march).await.unwrap();
    assert_eq!(total(&result), Some(Decimal::from(12)));
    assert_eq!(result.windows[0].groups.len(), 1);
    assert_eq!(result.windows[0].groups[0].key.group_by, vec![Some("a".to_owned())]);
}

#[tokio::test]
async fn the_events_table_is_scoped_to_organization_customer_and_period() {
    let store = DuckEventStore::open_in_memory().unwrap();
    let (org, other_org) = (OrganizationId::new(), OrganizationId::new());
    let e = |c: &str, id: &str, when, tokens: &str| {
        event(c, id, "llm", when, json!({"tokens": tokens}))
    };
    store
        .append(
            org,
            vec![
                e("a", "1", at(2, 1), "10"),
                e("a", "2", at(3, 1), "2.5"),
                e("b", "3", at(2, 1), "100"),
            ],
            false,
        )
        .await
        .unwrap();
    store.append(other_org, vec![e("a", "1", at(2, 1), "1000")], false).await.unwrap();
    // A key differing only in case from another does not break the organization's queries.
    let upper = event("c", "9", "llm", at(2, 1), json!({"Tokens": "5"}));
    store.append(org, vec![upper], false).await.unwrap();
    let spec = sql_spec(
        "SELECT sum(CAST(properties.tokens AS DECIMAL(18, 4))) AS value FROM events \
         WHERE code = 'llm'",
    );
    let result = store.usage(org, "a", &spec, &period(at(1, 0), at(3, 0))).await.unwrap();
    assert_eq!(total(&result), Some(Decimal::from(10)));
    let results = store
        .usage_of_customers(
            org,
            &["a".to_owned(), "b".to_owned()],
            &spec,
            &period(at(1, 0), at(4, 0)),
        )
        .await
        .unwrap();
    assert_eq!(total(&results[0]), Some("12.5".parse().unwrap()));
    assert_eq!(total(&results[1]), Some(Decimal::from(100)));
}

#[tokio::test]
async fn a_cte_name_used_out_of_its_scope_never_reaches_a_real_table() {
    let store = DuckEventStore::open_in_memory().unwrap();
    let org = OrganizationId::new();
    // property_slots is a real table of the events database (one row per key seen).
    let e = event("a", "1", "llm", at(2, 1), json!({"tokens": "1", "region": "eu"}));
    store.append(org, vec![e], false).await.unwrap();
    let spec = sql_spec(
        "SELECT (SELECT count(*) FROM property_slots) AS value \
         FROM (WITH property_slots AS (SELECT 1 AS one) SELECT one FROM property_slots) AS t",
    );
    let result = store.usage(org, "a", &spec, &period(at(1, 0), at(3, 0))).await.unwrap();
    assert_eq!(total(&result), Some(Decimal::ZERO), "the empty stand-in, not the table's 2 rows");
}

#[tokio::test]
async fn a_query_failing_at_run_time_is_a_clear_usage_error() {
    let store = DuckEventStore::open_in_memory().unwrap();
    let spec = sql_spec("SELECT sum(nope) AS value FROM events");
    let err = store
        .usage(OrganizationId::new(), "a", &spec, &period(at(1, 0), at(2, 0)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "sql_failed", "{err}");
    // A usage table the organization does not have.
    let spec = sql_spec("SELECT count(*) AS value FROM premises");
    let err = store
        .usage(OrganizationId::new(), "a", &spec, &period(at(1, 0), at(2, 0)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("table 'premises' is not available"), "{err}");
}

/// A small deterministic generator (no dependency needed for this much).
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 =
            self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

#[tokio::test]
async fn scoped_answers_equal_the_reference_on_generated_data() {
    let queries = [
        "SELECT count(*) AS value FROM events",
        "SELECT sum(CAST(properties.n AS DECIMAL(18,2))) AS value FROM events WHERE code = 'api'",
        "SELECT properties.region AS region, count(*) AS value FROM events GROUP BY ALL",
        "SELECT COALESCE(COUNT(data.Premises_used)) AS \"quantity\" FROM premises \
         WHERE DATE(\"timestamp\") >= DATE({{start_date}}) AND \"customer_id\" = \
         CAST({{customer.external_id}} AS String)",
        "SELECT data.site, max(data.Premises_used) AS value FROM premises GROUP BY 1",
        "WITH d AS (SELECT date_trunc('day', \"timestamp\") AS day, count(*) AS c FROM events \
         GROUP BY 1) SELECT max(c) AS value FROM d",
        "SELECT count(DISTINCT properties.region) FROM events WHERE timestamp < {{end_date}}",
    ];
    let mut rng = Rng(7);
    let store = DuckEventStore::open_in_memory().unwrap();
    let orgs = [OrganizationId::new(), OrganizationId::new()];
    let customers = ["c1", "c2", "c3"];
    let regions = ["eu", "us", "ap"];
    let keys: Vec<String> =
        ["n", "region", "Premises_used", "site"].into_iter().map(str::to_owned).collect();
    for org in orgs {
        store.create_usage_table(org, premises_table()).await.unwrap();
        let mut batch = Vec::new();
        for i in 0..300 {
            let customer = customers[rng.next(3) as usize];
            let when = at(1, 0) + TimeDelta::minutes(rng.next(60 * 24 * 20) as i64);
            let ev = if rng.next(3) == 0 {
                event(
                    customer,
                    &format!("p{i}"),
                    "premises",
                    when,
                    json!({
                    "Premises_used": rng.next(50), "site": regions[rng.next(3) as usize]}),
                )
            } else {
                event(
                    customer,
                    &format!("e{i}"),
                    "api",
                    when,
                    json!({
                    "n": format!("{}.{}", rng.next(100), rng.next(100)),
                    "region": regions[rng.next(3) as usize]}),
                )
            };
            batch.push(ev);
        }
        store.append(org, batch, false).await.unwrap();
    }
    let org = orgs[0];
    let mut compared = 0;
    for query in queries {
        let spec = sql_spec(query);
        for (from, to, window) in [
            (at(1, 0), at(21, 0), WindowSize::None),
            (at(3, 5), at(9, 17), WindowSize::None),
            (at(2, 0), at(6, 0), WindowSize::Day),
        ] {
            let mut q = period(from, to);
            q.window = window;
            for customer in customers {
                let scoped = store.usage(org, customer, &spec, &q).await.unwrap();
                let mine: Vec<StoredEvent> = all_events(&store, org)
                    .await
                    .into_iter()
                    .filter(|e| e.event.customer == customer)
                    .collect();
                let reference = reference_usage(
                    &org.to_string(),
                    customer,
                    &mine,
                    &keys,
                    &[premises_table()],
                    &spec,
                    &q,
                )
                .unwrap();
                assert_eq!(scoped, reference, "{query} for {customer} over {from}..{to}");
                compared += 1;
            }
        }
    }
    assert_eq!(compared, queries.len() * 9);
}

async fn all_events(store: &DuckEventStore, org: OrganizationId) -> Vec<StoredEvent> {
    let mut params = EventListParams { limit: 1000, ..Default::default() };
    let mut out = Vec::new();
    loop {
        let page = store.list_events(org, &params).await.unwrap();
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => params.cursor = Some(c),
            None => return out,
        }
    }
}
