//! Conformance: metrics, their lists, revisions, archive state, deletion and attachments.

use std::str::FromStr;

use serde_json::{json, Value};

use odometer_core::metric::FieldChange;
use odometer_core::{time, CustomerId, Metric, MetricId, MetricSpec, OrganizationId};

use super::{
    assert_error, assert_not_found, count_metric, create_metric, new_metric, new_organization, spec,
};
use crate::catalog::{ArchivedFilter, Catalog, MetricListParams, MetricRevisionInput, Page};
use crate::error::{Entity, StoreError};

fn list_params(search: Option<&str>, archived: ArchivedFilter, limit: u32) -> MetricListParams {
    MetricListParams { search: search.map(str::to_owned), archived, limit, cursor: None }
}

/// Follows `next_cursor` to the end; answers every page.
async fn all_pages(
    catalog: &dyn Catalog,
    org: OrganizationId,
    mut params: MetricListParams,
) -> Vec<Page<Metric>> {
    let mut pages = Vec::new();
    loop {
        let page = catalog.list_metrics(org, &params).await.expect("list_metrics");
        let next = page.next_cursor.clone();
        assert!(pages.len() < 100, "paging does not end");
        pages.push(page);
        match next {
            Some(cursor) => params.cursor = Some(cursor),
            None => return pages,
        }
    }
}

fn codes(metrics: &[Metric]) -> Vec<&str> {
    metrics.iter().map(|m| m.spec.code.as_str()).collect()
}

/// Codes of every listed metric, across all pages.
async fn listed_codes(
    catalog: &dyn Catalog,
    org: OrganizationId,
    search: Option<&str>,
    archived: ArchivedFilter,
) -> Vec<String> {
    let pages = all_pages(catalog, org, list_params(search, archived, 1000)).await;
    pages.iter().flat_map(|p| p.items.iter().map(|m| m.spec.code.clone())).collect()
}

fn rename(spec: &MetricSpec, name: &str) -> (MetricSpec, Vec<FieldChange>) {
    let mut next = spec.clone();
    next.name = name.to_owned();
    let change =
        FieldChange { path: "name".to_owned(), before: json!(spec.name), after: json!(name) };
    (next, vec![change])
}

fn revision(previous: u32, spec: MetricSpec, changes: Vec<FieldChange>) -> MetricRevisionInput {
    MetricRevisionInput { previous_revision: previous, spec, changes, effective_at: time::now() }
}

/// A definition using every member, so a backend that loses any part of it is caught.
fn rich_definition() -> Value {
    json!({
        "code": "storage",
        "event_code": "disk_usage",
        "name": "Storage",
        "description": "GB stored, per region and tier",
        "aggregation": {"type": "sum", "field": "usage.bytes", "recurring": true},
        "filters": [
            {"property": "region", "op": "in", "values": ["eu", "us", 3, true]},
            {"property": "deleted", "op": "not_exists"}
        ],
        "segmentation": {
            "type": "double",
            "dimension1": {"key": "region", "values": ["eu", "us"]},
            "dimension2": {"key": "tier", "values": ["hot", "cold"]},
            "unmatched": "drop"
        },
        "group_by": ["project"],
        "unit_conversion": {"factor": "1000000000.000000000000000001", "rounding": "nearest_half"},
        "rounding": {"function": "ceil", "precision": -2},
        "product_family_id": "pf_1",
        "product_id": "prod_1"
    })
}

pub async fn metrics_are_created_and_read_by_id_and_code(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await;
    let metric = create_metric(catalog, org.id, rich_definition()).await;
    let sql = create_metric(
        catalog,
        org.id,
        json!({
            "code": "sql_metric",
            "name": "SQL",
            "aggregation": {
                "type": "custom_sql",
                "query": "SELECT count(*) AS value FROM events",
                "dataschema": {"tables": [{"name": "events", "n": 1.50}]},
                "datasource": "events"
            }
        }),
    )
    .await;

    assert_eq!(catalog.get_metric(org.id, metric.id).await.unwrap(), metric, "get by id");
    assert_eq!(catalog.get_metric(org.id, sql.id).await.unwrap(), sql, "get a custom_sql metric");
    assert_eq!(
        catalog.get_metric_by_code(org.id, "storage").await.unwrap(),
        metric,
        "get by code (not by event code)"
    );
    assert_not_found(
        catalog.get_metric_by_code(org.id, "disk_usage").await,
        Entity::Metric,
        "the event code is not the code",
    );
    assert_not_found(
        catalog.get_metric_by_code(org.id, "STORAGE").await,
        Entity::Metric,
        "codes are exact",
    );
    assert_not_found(catalog.get_metric(org.id, MetricId::new()).await, Entity::Metric, "unknown");

    let revisions = catalog.list_metric_revisions(org.id, metric.id).await.unwrap();
    assert_eq!(revisions.len(), 1, "a new metric has exactly revision 1");
    let first = &revisions[0];
    assert_eq!((first.metric_id, first.revision), (metric.id, 1));
    assert_eq!(first.spec, metric.spec, "revision 1 holds the spec");
    assert_eq!(first.changes, [], "revision 1 lists no changes");
    assert_eq!(first.effective_at, metric.created_at, "revision 1 takes effect at creation");
    assert_eq!(catalog.get_metric_revision(org.id, metric.id, 1).await.unwrap(), *first);
}

pub async fn metric_codes_are_unique_among_live_metrics(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await;
    let other = new_organization(catalog, "Other").await;
    let first = create_metric(catalog, org.id, count_metric("calls", "Calls")).await;

    let duplicate = new_metric(org.id, spec(count_metric("calls", "Calls again")));
    assert_error(
        catalog.create_metric(&duplicate).await,
        StoreError::CodeTaken { code: "calls".to_owned() },
        "a second live metric with the same code",
    );
    assert_not_found(
        catalog.get_metric(org.id, duplicate.id).await,
        Entity::Metric,
        "the refused metric was not stored",
    );
    let elsewhere = create_metric(catalog, other.id, count_metric("calls", "Calls")).await;
    assert_eq!(catalog.get_metric_by_code(other.id, "calls").await.unwrap(), elsewhere);

    catalog.delete_metric(org.id, first.id, time::now()).await.unwrap();
    let second = create_metric(catalog, org.id, count_metric("calls", "Calls v2")).await;
    assert_eq!(
        catalog.get_metric_by_code(org.id, "calls").await.unwrap(),
        second,
        "deleting frees the code"
    );
    let again = new_metric(org.id, spec(count_metric("calls", "Calls v3")));
    assert_error(
        catalog.create_metric(&again).await,
        StoreError::CodeTaken { code: "calls".to_owned() },
        "the code is taken again by the new metric",
    );
}

pub async fn metric_lists_page_oldest_first(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await;
    let empty = catalog.list_metrics(org.id, &list_params(None, ArchivedFilter::All, 10)).await;
    assert_eq!(empty.unwrap(), Page { items: vec![], next_cursor: None }, "an empty list");

    let mut created = Vec::new();
    for i in 0..7 {
        // Codes in reverse alphabetical order, so creation order is not text order of codes.
        let code = format!("m{}", 9 - i);
        created.push(create_metric(catalog, org.id, count_metric(&code, "Metric")).await);
    }
    let pages = all_pages(catalog, org.id, list_params(None, ArchivedFilter::Active, 3)).await;
    let sizes: Vec<usize> = pages.iter().map(|p| p.items.len()).collect();
    assert_eq!(sizes, [3, 3, 1], "7 metrics in pages of 3");
    let listed: Vec<Metric> = pages.into_iter().flat_map(|p| p.items).collect();
    assert_eq!(listed, created, "pages hold every metric once, oldest first, as stored");

    let pages = all_pages(catalog, org.id, list_params(None, ArchivedFilter::Active, 7)).await;
    assert_eq!(pages.len(), 1, "a page that ends at the last metric has no next cursor");
    let pages = all_pages(catalog, org.id, list_params(None, ArchivedFilter::Active, 1)).await;
    assert_eq!(pages.len(), 7, "pages of one");

    // A cursor is a position: it stays valid when the metric it names is deleted.
    let first = catalog.list_metrics(org.id, &list_params(None, ArchivedFilter::Active, 2)).await;
    let first = first.unwrap();
    assert_eq!(codes(&first.items), ["m9", "m8"]);
    catalog.delete_metric(org.id, created[1].id, time::now()).await.unwrap();
    let mut params = list_params(None, ArchivedFilter::Active, 2);
    params.cursor = first.next_cursor;
    let next = catalog.list_metrics(org.id, &params).await.unwrap();
    assert_eq!(codes(&next.items), ["m7", "m6"], "paging goes on after the cursor's metric");
}

pub async fn metric_lists_search_code_and_name(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await;
    for (code, name) in [
        ("api_calls", "API Calls"),
        ("storage_gb", "Données stockées"),
        ("uptime", "100% uptime"),
        ("a_b", "Underscore"),
        ("axb", "No underscore"),
        ("bandwidth", "Egress"),
    ] {
        create_metric(catalog, org.id, count_metric(code, name)).await;
    }
    let all = ArchivedFilter::All;
    let cases: [(&str, &[&str]); 9] = [
        ("CALLS", &["api_calls"]),
        ("api_", &["api_calls"]),
        ("données", &["storage_gb"]),
        ("DONNÉES", &["storage_gb"]),
        ("%", &["uptime"]),
        ("a_b", &["a_b"]),
        ("_", &["api_calls", "storage_gb", "a_b"]),
        ("egRESS", &["bandwidth"]),
        ("nothing like it", &[]),
    ];
    for (search, expected) in cases {
        let found = listed_codes(catalog, org.id, Some(search), all).await;
        assert_eq!(found, expected, "search {search:?} (case-insensitive, on code and name)");
    }
    let pages = all_pages(catalog, org.id, list_params(Some("_"), all, 2)).await;
    let sizes: Vec<usize> = pages.iter().map(|p| p.items.len()).collect();
    assert_eq!(sizes, [2, 1], "a search pages like a full list");
}

pub async fn metric_lists_filter_by_archive_state(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await;
    let active = create_metric(catalog, org.id, count_metric("active", "Active")).await;
    let archived = create_metric(catalog, org.id, count_metric("archived", "Archived")).await;
    let deleted = create_metric(catalog, org.id, count_metric("deleted", "Deleted")).await;
    let both = create_metric(catalog, org.id, count_metric("both", "Archived, deleted")).await;
    let now = Some(time::now());
    catalog.set_metric_archived(org.id, archived.id, now).await.unwrap();
    catalog.set_metric_archived(org.id, both.id, now).await.unwrap();
    catalog.delete_metric(org.id, deleted.id, time::now()).await.unwrap();
    catalog.delete_metric(org.id, both.id, time::now()).await.unwrap();

    let default = MetricListParams {
        search: None,
        archived: ArchivedFilter::default(),
        limit: 100,
        cursor: None,
    };
    let listed = catalog.list_metrics(org.id, &default).await.unwrap();
    assert_eq!(codes(&listed.items), ["active"], "the default lists only active metrics");
    assert_eq!(listed.items[0], active);
    for (filter, expected) in [
        (ArchivedFilter::Active, vec!["active"]),
        (ArchivedFilter::Archived, vec!["archived"]),
        (ArchivedFilter::All, vec!["active", "archived"]),
    ] {
        let found = listed_codes(catalog, org.id, None, filter).await;
        assert_eq!(found, expected, "{filter:?} (deleted metrics are never listed)");
    }
    let found = listed_codes(catalog, org.id, Some("deleted"), ArchivedFilter::All).await;
    assert_eq!(found, Vec::<String>::new(), "a search does not find deleted metrics");
}

pub async fn invalid_cursors_are_rejected(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await;
    create_metric(catalog, org.id, count_metric("calls", "Calls")).await;
    let customer_id = CustomerId::new().to_string();
    for cursor in ["garbage", "bm_", "bm_!!!!!!!!!!!!!!!!!!!!!!", customer_id.as_str()] {
        let mut params = list_params(None, ArchivedFilter::All, 10);
        params.cursor = Some(cursor.to_owned());
        assert_error(
            catalog.list_metrics(org.id, &params).await,
            StoreError::InvalidCursor,
            &format!("metric list cursor {cursor:?}"),
        );
    }
    let metric_id = MetricId::new().to_string();
    for cursor in ["garbage", metric_id.as_str()] {
        let params = crate::catalog::CustomerListParams {
            search: None,
            limit: 10,
            cursor: Some(cursor.to_owned()),
        };
        assert_error(
            catalog.list_customers(org.id, &params).await,
            StoreError::InvalidCursor,
            &format!("customer list cursor {cursor:?}"),
        );
    }
    // A well-formed cursor past the end is an empty page, not an error.
    let mut params = list_params(None, ArchivedFilter::All, 10);
    params.cursor = Some(MetricId::new().to_string());
    let page = catalog.list_metrics(org.id, &params).await.unwrap();
    assert_eq!(page, Page { items: vec![], next_cursor: None });
}

pub async fn metrics_reading_event_code_include_archived_not_deleted(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await;
    let reads = |code: &str| json!({"code": code, "event_code": "api_call", "name": code, "aggregation": {"type": "count"}});
    let a = create_metric(catalog, org.id, reads("a")).await;
    let b = create_metric(catalog, org.id, reads("b")).await;
    let c = create_metric(catalog, org.id, reads("c")).await;
    create_metric(catalog, org.id, count_metric("api_call_other", "Other")).await;
    let b = catalog.set_metric_archived(org.id, b.id, Some(time::now())).await.unwrap();
    catalog.delete_metric(org.id, c.id, time::now()).await.unwrap();

    let found = catalog.metrics_reading_event_code(org.id, "api_call").await.unwrap();
    assert_eq!(found, [a, b], "archived metrics still read their events; deleted ones do not");
    let found = catalog.metrics_reading_event_code(org.id, "api_call_other").await.unwrap();
    assert_eq!(codes(&found), ["api_call_other"], "the event code defaults to the code");
    assert_eq!(catalog.metrics_reading_event_code(org.id, "API_CALL").await.unwrap(), []);
}

pub async fn metric_revisions_are_numbered_and_checked(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await;
    let metric = create_metric(catalog, org.id, count_metric("calls", "Calls")).await;

    let (spec2, changes2) = rename(&metric.spec, "Calls v2");
    let input2 = revision(1, spec2.clone(), changes2.clone());
    let updated = catalog.add_metric_revision(org.id, metric.id, &input2).await.unwrap();
    assert_eq!(updated.revision, 2, "the revision number increments");
    assert_eq!(updated.spec, spec2, "the spec is replaced");
    assert_eq!(updated.updated_at, input2.effective_at, "updated_at is the revision's time");
    assert_eq!(
        (updated.id, updated.created_at, updated.archived_at, updated.deleted_at),
        (metric.id, metric.created_at, None, None),
        "the rest is unchanged"
    );
    assert_eq!(catalog.get_metric(org.id, metric.id).await.unwrap(), updated);

    for previous in [1, 3] {
        let stale = revision(previous, rename(&spec2, "lost").0, vec![]);
        assert_error(
            catalog.add_metric_revision(org.id, metric.id, &stale).await,
            StoreError::RevisionConflict { expected: previous, current: 2 },
            "a revision based on another than the current one",
        );
    }
    assert_eq!(
        catalog.get_metric(org.id, metric.id).await.unwrap(),
        updated,
        "conflicts write nothing"
    );

    // Changes are kept exactly, whatever JSON they hold.
    let mut spec3 = spec2.clone();
    spec3.description = Some("with a description".to_owned());
    let exact = Value::from_str("12345678901234567890.1234567890123456789").unwrap();
    let changes3 = vec![
        FieldChange {
            path: "description".to_owned(),
            before: Value::Null,
            after: json!("with a description"),
        },
        FieldChange {
            path: "segmentation".to_owned(),
            before: json!({"type": "single", "key": "k", "values": ["b", "a"], "n": exact}),
            after: Value::Null,
        },
    ];
    let input3 = revision(2, spec3.clone(), changes3.clone());
    let third = catalog.add_metric_revision(org.id, metric.id, &input3).await.unwrap();
    assert_eq!(third.revision, 3);

    let revisions = catalog.list_metric_revisions(org.id, metric.id).await.unwrap();
    let numbers: Vec<u32> = revisions.iter().map(|r| r.revision).collect();
    assert_eq!(numbers, [1, 2, 3], "revisions are listed oldest first");
    assert_eq!(revisions[0].spec, metric.spec);
    assert_eq!(
        (&revisions[1].spec, &revisions[1].changes, revisions[1].effective_at),
        (&spec2, &changes2, input2.effective_at)
    );
    assert_eq!(
        (&revisions[2].spec, &revisions[2].changes, revisions[2].effective_at),
        (&spec3, &changes3, input3.effective_at),
        "revision 3 keeps its changes exactly"
    );
    assert!(revisions.iter().all(|r| r.metric_id == metric.id));
    let second = catalog.get_metric_revision(org.id, metric.id, 2).await.unwrap();
    assert_eq!(second, revisions[1], "get one revision");
    for missing in [0, 4] {
        assert_not_found(
            catalog.get_metric_revision(org.id, metric.id, missing).await,
            Entity::MetricRevision,
            "a revision that does not exist",
        );
    }
    let unknown = MetricId::new();
    assert_not_found(catalog.list_metric_revisions(org.id, unknown).await, Entity::Metric, "list");
    assert_not_found(catalog.get_metric_revision(org.id, unknown, 1).await, Entity::Metric, "get");
    assert_not_found(
        catalog.add_metric_revision(org.id, unknown, &revision(1, spec3, vec![])).await,
        Entity::Metric,
        "add a revision to an unknown metric",
    );
}

pub async fn revisions_that_change_the_code_check_it_is_free(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await;
    let other = new_organization(catalog, "Other").await;
    let alpha = create_metric(catalog, org.id, count_metric("alpha", "Alpha")).await;
    let beta = create_metric(catalog, org.id, count_metric("beta", "Beta")).await;
    create_metric(catalog, other.id, count_metric("gamma", "Gamma")).await;

    let recode = |code: &str| {
        let mut next = beta.spec.clone();
        next.code = code.to_owned();
        let change =
            FieldChange { path: "code".to_owned(), before: json!("beta"), after: json!(code) };
        revision(1, next, vec![change])
    };
    assert_error(
        catalog.add_metric_revision(org.id, beta.id, &recode("alpha")).await,
        StoreError::CodeTaken { code: "alpha".to_owned() },
        "a revision may not take a live metric's code",
    );
    assert_eq!(catalog.get_metric(org.id, beta.id).await.unwrap(), beta, "nothing changed");
    assert_eq!(
        catalog.list_metric_revisions(org.id, beta.id).await.unwrap().len(),
        1,
        "the refused revision was not stored"
    );

    catalog.delete_metric(org.id, alpha.id, time::now()).await.unwrap();
    let renamed = catalog.add_metric_revision(org.id, beta.id, &recode("alpha")).await.unwrap();
    assert_eq!((renamed.spec.code.as_str(), renamed.revision), ("alpha", 2));
    assert_eq!(catalog.get_metric_by_code(org.id, "alpha").await.unwrap(), renamed);
    assert_not_found(
        catalog.get_metric_by_code(org.id, "beta").await,
        Entity::Metric,
        "the old code is free",
    );
    let mut to_gamma = recode("gamma");
    to_gamma.previous_revision = 2;
    let gamma = catalog.add_metric_revision(org.id, beta.id, &to_gamma).await.unwrap();
    assert_eq!(gamma.spec.code, "gamma", "another organization's codes do not count");
    create_metric(catalog, org.id, count_metric("beta", "Beta again")).await;
}

pub async fn deleted_metrics_refuse_writes_but_stay_readable(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await;
    let metric = create_metric(catalog, org.id, count_metric("calls", "Calls")).await;
    let (spec2, changes2) = rename(&metric.spec, "Calls v2");
    catalog
        .add_metric_revision(org.id, metric.id, &revision(1, spec2.clone(), changes2))
        .await
        .unwrap();

    let deleted_at = time::now();
    let deleted = catalog.delete_metric(org.id, metric.id, deleted_at).await.unwrap();
    assert_eq!(deleted.deleted_at, Some(deleted_at), "delete sets deleted_at");
    assert_eq!((deleted.revision, &deleted.spec), (2, &spec2));
    assert_eq!(
        catalog.get_metric(org.id, metric.id).await.unwrap(),
        deleted,
        "a deleted metric is still readable by id"
    );
    assert_not_found(catalog.get_metric_by_code(org.id, "calls").await, Entity::Metric, "by code");

    let revisions = catalog.list_metric_revisions(org.id, metric.id).await.unwrap();
    assert_eq!(revisions.len(), 2, "a deleted metric's revisions stay readable");
    assert_eq!(catalog.get_metric_revision(org.id, metric.id, 2).await.unwrap(), revisions[1]);

    let third = revision(2, rename(&spec2, "Calls v3").0, vec![]);
    let refused = [
        ("add_metric_revision", catalog.add_metric_revision(org.id, metric.id, &third).await),
        ("archive", catalog.set_metric_archived(org.id, metric.id, Some(time::now())).await),
        ("unarchive", catalog.set_metric_archived(org.id, metric.id, None).await),
        ("delete again", catalog.delete_metric(org.id, metric.id, time::now()).await),
    ];
    for (what, result) in refused {
        assert_error(result, StoreError::MetricDeleted, what);
    }
    assert_error(
        catalog.set_metric_attachment(org.id, metric.id, "plan", true).await,
        StoreError::MetricDeleted,
        "attach a deleted metric",
    );
    assert_eq!(catalog.get_metric(org.id, metric.id).await.unwrap(), deleted, "nothing changed");
}

pub async fn metrics_are_archived_and_unarchived(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await;
    let metric = create_metric(catalog, org.id, count_metric("calls", "Calls")).await;
    let at = time::now();
    let archived = catalog.set_metric_archived(org.id, metric.id, Some(at)).await.unwrap();
    assert_eq!(archived.archived_at, Some(at), "archive sets archived_at");
    assert_eq!((archived.revision, &archived.spec), (1, &metric.spec), "archiving is no revision");
    assert_eq!(catalog.get_metric(org.id, metric.id).await.unwrap(), archived);
    assert_eq!(
        catalog.get_metric_by_code(org.id, "calls").await.unwrap(),
        archived,
        "an archived metric keeps its code"
    );
    let taken = new_metric(org.id, spec(count_metric("calls", "Calls")));
    assert_error(
        catalog.create_metric(&taken).await,
        StoreError::CodeTaken { code: "calls".to_owned() },
        "an archived metric's code is taken",
    );

    let unarchived = catalog.set_metric_archived(org.id, metric.id, None).await.unwrap();
    assert_eq!(unarchived.archived_at, None, "unarchive clears archived_at");
    assert_eq!(catalog.get_metric(org.id, metric.id).await.unwrap(), unarchived);
    assert_eq!(catalog.list_metric_revisions(org.id, metric.id).await.unwrap().len(), 1);
}

pub async fn metric_attachments_count_every_attacher(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await;
    let metric = create_metric(catalog, org.id, count_metric("calls", "Calls")).await;
    let bystander = create_metric(catalog, org.id, count_metric("other", "Other")).await;
    let (id, org) = (metric.id, org.id);
    assert!(!catalog.is_metric_attached(org, id).await.unwrap(), "a new metric is not attached");

    catalog.set_metric_attachment(org, id, "plan_a/charge_1", true).await.unwrap();
    assert!(catalog.is_metric_attached(org, id).await.unwrap(), "attached");
    catalog.set_metric_attachment(org, id, "plan_a/charge_1", true).await.unwrap();
    catalog.set_metric_attachment(org, id, "plan_b/charge_1", true).await.unwrap();
    catalog.set_metric_attachment(org, id, "plan_a/charge_1", false).await.unwrap();
    assert!(
        catalog.is_metric_attached(org, id).await.unwrap(),
        "still attached while another attacher remains"
    );
    assert!(!catalog.is_metric_attached(org, bystander.id).await.unwrap(), "per metric");
    catalog.set_metric_attachment(org, id, "plan_b/charge_1", false).await.unwrap();
    assert!(!catalog.is_metric_attached(org, id).await.unwrap(), "detached from all");
    catalog.set_metric_attachment(org, id, "plan_b/charge_1", false).await.unwrap();
    assert!(!catalog.is_metric_attached(org, id).await.unwrap(), "detaching twice is harmless");
    assert_eq!(catalog.get_metric(org, id).await.unwrap(), metric, "attaching is no revision");

    let unknown = MetricId::new();
    assert_not_found(catalog.is_metric_attached(org, unknown).await, Entity::Metric, "unknown");
    assert_not_found(
        catalog.set_metric_attachment(org, unknown, "plan", true).await,
        Entity::Metric,
        "attach an unknown metric",
    );
}

/// Semantics 6.3 enforced by the catalog itself, in the transaction that writes the revision:
/// an attached metric's locked fields cannot change even if the caller checked before a plan
/// attached it.
pub async fn revisions_of_attached_metrics_keep_their_locked_fields(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await;
    let metric = create_metric(catalog, org.id, count_metric("calls", "Calls")).await;
    catalog.set_metric_attachment(org.id, metric.id, "plan_a", true).await.unwrap();

    let mut locked = metric.spec.clone();
    locked.event_code = "other_calls".to_owned();
    let change = FieldChange {
        path: "event_code".to_owned(),
        before: json!("calls"),
        after: json!("other_calls"),
    };
    assert_error(
        catalog
            .add_metric_revision(
                org.id,
                metric.id,
                &revision(1, locked.clone(), vec![change.clone()]),
            )
            .await,
        StoreError::MetricLocked { fields: vec!["event_code"] },
        "a locked field of an attached metric",
    );
    assert_eq!(catalog.get_metric(org.id, metric.id).await.unwrap(), metric, "nothing written");

    let mut renamed = metric.spec.clone();
    renamed.name = "API calls".to_owned();
    let rename =
        FieldChange { path: "name".to_owned(), before: json!("Calls"), after: json!("API calls") };
    let second = catalog
        .add_metric_revision(org.id, metric.id, &revision(1, renamed, vec![rename]))
        .await
        .unwrap();
    assert_eq!(second.revision, 2, "unlocked fields stay editable while attached");

    catalog.set_metric_attachment(org.id, metric.id, "plan_a", false).await.unwrap();
    locked.name = "API calls".to_owned();
    let third = catalog
        .add_metric_revision(org.id, metric.id, &revision(2, locked, vec![change]))
        .await
        .unwrap();
    assert_eq!((third.revision, third.spec.event_code.as_str()), (3, "other_calls"), "detached");
}
