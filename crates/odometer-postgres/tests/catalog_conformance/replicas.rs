//! Several replicas on one database: what SQLite's single connection gave for free, PostgreSQL
//! must give through transactions and row locks. Each test opens two catalogs (two pools, as
//! two `odometer serve` processes would) or holds rows with a transaction of its own, standing
//! for another replica caught in the middle of a write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::Connection;
use tokio::task::JoinSet;

use odometer_core::{MetricSpec, OrganizationId};
use odometer_postgres::PgCatalog;
use odometer_store::conformance::{count_metric, create_metric, new_organization};
use odometer_store::metrics::{self, MetricError};
use odometer_store::{customers, plans, subscriptions, Catalog, MetricRevisionInput, StoreError};

use super::database::TestDatabase;

/// Two catalogs on one fresh database, and an organization.
async fn two_replicas() -> (Arc<PgCatalog>, Arc<PgCatalog>, OrganizationId, TestDatabase) {
    let database = TestDatabase::create().await;
    let a = Arc::new(PgCatalog::connect(&database.url()).await.unwrap());
    let b = Arc::new(PgCatalog::connect(&database.url()).await.unwrap());
    let org = new_organization(&*a, "Acme").await.id;
    (a, b, org, database)
}

/// Waits until some session of the database waits for a lock: the call under test has reached
/// the row the test holds. Panics if none does within ten seconds (the call took no lock).
async fn until_a_session_waits_for_a_lock(database: &TestDatabase, what: &str) {
    let mut observer = database.connect().await;
    let started = Instant::now();
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut observer)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{what} never waited for the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn revisions_from_two_replicas_have_no_gaps_and_lose_no_update() {
    let (a, b, org, _database) = two_replicas().await;
    let metric = create_metric(&*a, org, count_metric("calls", "Calls")).await;
    let mut writers = JoinSet::new();
    for writer in 0..8 {
        let catalog = if writer % 2 == 0 { Arc::clone(&a) } else { Arc::clone(&b) };
        writers.spawn(async move {
            let mut saved = 0_usize;
            for n in 0..5 {
                let patch = json!({"name": format!("writer {writer}, rename {n}")});
                match metrics::update_metric(&*catalog, org, "calls", &patch).await {
                    Ok(_) => saved += 1,
                    // Every retry lost to another writer: allowed, and nothing is written.
                    Err(MetricError::Store(StoreError::RevisionConflict { .. })) => {}
                    Err(other) => panic!("writer {writer}: {other:?}"),
                }
            }
            saved
        });
    }
    let mut saved = 0;
    while let Some(count) = writers.join_next().await {
        saved += count.unwrap();
    }
    assert!(saved > 0, "some renames were saved");

    let revisions = b.list_metric_revisions(org, metric.id).await.unwrap();
    assert_eq!(revisions.len(), saved + 1, "one revision per saved rename, after revision 1");
    for (i, revision) in revisions.iter().enumerate() {
        assert_eq!(usize::try_from(revision.revision).unwrap(), i + 1, "numbered without gaps");
    }
    // Each revision starts from the one before it: no writer saved over a revision it had
    // not read.
    for pair in revisions.windows(2) {
        let change = pair[1].changes.iter().find(|c| c.path == "name").expect("a name change");
        assert_eq!(change.before, json!(pair[0].spec.name), "revision {}", pair[1].revision);
        assert_eq!(change.after, json!(pair[1].spec.name), "revision {}", pair[1].revision);
    }
    let current = a.get_metric(org, metric.id).await.unwrap();
    let last = revisions.last().unwrap();
    assert_eq!((current.revision, &current.spec), (last.revision, &last.spec));
}

/// A metric spec like `current` reading another event code: a change of a locked field.
fn with_locked_change(current: &MetricSpec) -> MetricSpec {
    let mut changed = current.clone();
    changed.event_code = format!("{}_v2", current.event_code);
    changed
}

#[tokio::test]
async fn a_revision_waits_for_an_attachment_in_flight_and_then_keeps_the_locked_fields() {
    let database = TestDatabase::create().await;
    let catalog = Arc::new(PgCatalog::connect(&database.url()).await.unwrap());
    let org = new_organization(&*catalog, "Acme").await.id;

    for commit in [true, false] {
        let code = if commit { "committed" } else { "rolled_back" };
        let metric = create_metric(&*catalog, org, count_metric(code, "Calls")).await;
        // Another replica creating a plan that charges the metric, stopped before its commit:
        // the metric's row held FOR SHARE, the attachment written (plans.rs does both).
        let mut replica = database.connect().await;
        let mut plan = replica.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM metrics WHERE id = $1 FOR SHARE")
            .bind(metric.id.to_string())
            .execute(&mut *plan)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO metric_attachments (metric_id, attached_by, attached_at) \
             VALUES ($1, 'plan_in_flight', now())",
        )
        .bind(metric.id.to_string())
        .execute(&mut *plan)
        .await
        .unwrap();

        let revision = MetricRevisionInput {
            previous_revision: 1,
            spec: with_locked_change(&metric.spec),
            changes: Vec::new(),
            effective_at: odometer_core::time::now(),
        };
        let writer = Arc::clone(&catalog);
        let id = metric.id;
        let task =
            tokio::spawn(async move { writer.add_metric_revision(org, id, &revision).await });
        until_a_session_waits_for_a_lock(&database, "the revision").await;
        assert!(!task.is_finished(), "the revision waits for the plan's transaction");
        if commit {
            plan.commit().await.unwrap();
            match task.await.unwrap() {
                Err(StoreError::MetricLocked { fields }) => {
                    assert_eq!(fields, ["event_code"])
                }
                other => {
                    panic!("the attachment committed first: expected metric_locked, got {other:?}")
                }
            }
            assert_eq!(catalog.get_metric(org, id).await.unwrap().revision, 1, "nothing written");
        } else {
            plan.rollback().await.unwrap();
            let revised = task.await.unwrap().expect("no attachment was committed");
            assert_eq!(revised.revision, 2);
        }
        replica.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_plan_waits_for_a_metric_delete_in_flight_and_then_attaches_nothing() {
    let database = TestDatabase::create().await;
    let catalog = Arc::new(PgCatalog::connect(&database.url()).await.unwrap());
    let org = new_organization(&*catalog, "Acme").await.id;
    let metric = create_metric(&*catalog, org, count_metric("calls", "Calls")).await;

    // Another replica deleting the metric, stopped before its commit (metrics.rs takes the row
    // FOR UPDATE, then writes `deleted_at`).
    let mut replica = database.connect().await;
    let mut delete = replica.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM metrics WHERE id = $1 FOR UPDATE")
        .bind(metric.id.to_string())
        .execute(&mut *delete)
        .await
        .unwrap();
    sqlx::query("UPDATE metrics SET deleted_at = now() WHERE id = $1")
        .bind(metric.id.to_string())
        .execute(&mut *delete)
        .await
        .unwrap();

    let writer = Arc::clone(&catalog);
    let task = tokio::spawn(async move {
        let definition = json!({"code": "pro", "name": "Pro", "interval": "monthly",
            "currency": "USD", "charges": [{"metric": "calls", "charge_model": "standard",
            "properties": {"amount": "1"}}]});
        plans::create_plan(&*writer, org, &definition).await
    });
    until_a_session_waits_for_a_lock(&database, "the plan").await;
    assert!(!task.is_finished(), "the plan waits for the delete's transaction");
    delete.commit().await.unwrap();
    match task.await.unwrap() {
        Err(plans::PlanError::Store(StoreError::MetricDeleted)) => {}
        other => panic!("the delete committed first: expected metric_deleted, got {other:?}"),
    }
    assert!(!catalog.is_metric_attached(org, metric.id).await.unwrap(), "nothing attached");
    assert!(catalog.plans_charging_metric(org, metric.id).await.unwrap().is_empty());
    replica.close().await.unwrap();
}

#[tokio::test]
async fn a_plan_deleted_while_another_replica_subscribes_to_it_is_never_left_in_use() {
    let (a, b, org, _database) = two_replicas().await;
    create_metric(&*a, org, count_metric("calls", "Calls")).await;
    customers::create_customer(&*a, org, &json!({"external_id": "c1"})).await.unwrap();
    for round in 0..12 {
        let code = format!("plan_{round}");
        let definition = json!({"code": code, "name": "Plan", "interval": "monthly",
            "currency": "USD", "charges": [{"metric": "calls", "charge_model": "standard",
            "properties": {"amount": "1"}}]});
        plans::create_plan(&*a, org, &definition).await.unwrap();
        let subscription = json!({"external_id": format!("sub_{round}"), "customer": "c1",
            "plan": code});
        let (subscribed, deleted) = tokio::join!(
            subscriptions::create_subscription(&*b, org, &subscription),
            plans::delete_plan(&*a, org, &code)
        );
        match (&subscribed, &deleted) {
            (Ok(_), Err(e)) => assert_eq!(e.code(), "plan_in_use", "round {round}"),
            (Err(e), Ok(_)) => assert_eq!(e.code(), "unknown_plan", "round {round}"),
            _ => panic!(
                "round {round}: exactly one of the two must win, got {subscribed:?} and {deleted:?}"
            ),
        }
    }
}

#[tokio::test]
async fn plans_replaced_by_two_replicas_keep_their_attachments_in_step() {
    let (a, b, org, _database) = two_replicas().await;
    let metric_ids = [
        create_metric(&*a, org, count_metric("m1", "M1")).await.id,
        create_metric(&*a, org, count_metric("m2", "M2")).await.id,
        create_metric(&*a, org, count_metric("m3", "M3")).await.id,
    ];
    let definition = |codes: &[&str]| {
        let charges: Vec<_> = codes
            .iter()
            .map(|code| {
                json!({"metric": code, "charge_model": "standard",
                               "properties": {"amount": "1"}})
            })
            .collect();
        json!({"code": "pro", "name": "Pro", "interval": "monthly", "currency": "USD",
               "charges": charges})
    };
    let plan = plans::create_plan(&*a, org, &definition(&["m1"])).await.unwrap();
    for round in 0..12 {
        let (two, one) = (definition(&["m1", "m2"]), definition(&["m3"]));
        let (first, second) = tokio::join!(
            plans::replace_plan(&*a, org, "pro", &two),
            plans::replace_plan(&*b, org, "pro", &one)
        );
        first.unwrap();
        second.unwrap();
        let stored = a.get_plan(org, plan.id).await.unwrap();
        let charged = stored.spec.metric_ids();
        for id in metric_ids {
            let attached = a.is_metric_attached(org, id).await.unwrap();
            assert_eq!(
                attached,
                charged.contains(&id),
                "round {round}: attachments follow the plan"
            );
        }
        // Back to the start for the next round.
        plans::replace_plan(&*a, org, "pro", &definition(&["m1"])).await.unwrap();
    }
}

#[tokio::test]
async fn two_replicas_creating_the_same_code_store_it_once() {
    let (a, b, org, _database) = two_replicas().await;
    for round in 0..12 {
        let code = format!("code_{round}");
        let (mine, theirs) = (count_metric(&code, "A"), count_metric(&code, "B"));
        let (first, second) = tokio::join!(
            metrics::create_metric(&*a, org, &mine),
            metrics::create_metric(&*b, org, &theirs)
        );
        match (&first, &second) {
            (Ok(_), Err(MetricError::Store(StoreError::CodeTaken { code: taken })))
            | (Err(MetricError::Store(StoreError::CodeTaken { code: taken })), Ok(_)) => {
                assert_eq!(taken, &code)
            }
            _ => panic!("round {round}: exactly one creation wins: {first:?}, {second:?}"),
        }
    }
}
