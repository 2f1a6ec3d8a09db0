//! Conformance: plans (unique live codes, lists, replacement, soft deletion), the metric
//! attachments derived from their charges, subscriptions (unique external ids, status,
//! updates, termination, lists), and the operations of [`crate::plans`] and
//! [`crate::subscriptions`] over the backend.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::{json, Value};

use odometer_core::billing_period::{BillingAnchor, PlanInterval};
use odometer_core::customer::parse_customer_spec;
use odometer_core::pricing::parse_charge_pricing;
use odometer_core::subscription::parse_subscription_input;
use odometer_core::{
    time, ChargeId, ChargeSpec, Customer, MetricId, OrganizationId, Plan, PlanId, PlanSpec,
    Subscription, SubscriptionStatus,
};

use super::{assert_error, assert_not_found, count_metric, create_metric, new_organization};
use crate::catalog::{Catalog, PlanListParams, SubscriptionListParams, SubscriptionUpdate};
use crate::error::{Entity, StoreError};
use crate::metrics::{self, MetricError};
use crate::plans::{self, PlanError};
use crate::subscriptions::{self, SubscriptionError};

/// A plan spec with one `standard` charge per metric listed (a metric may be listed twice).
fn plan_spec(code: &str, metrics: &[MetricId]) -> PlanSpec {
    let pricing = parse_charge_pricing(&json!({
        "charge_model": "graduated",
        "properties": {"graduated_ranges": [
            {"from_value": "0", "to_value": "100", "per_unit_amount": "0", "flat_amount": "1.5"},
            {"from_value": "100", "to_value": null, "per_unit_amount": "0.0125"}
        ]},
        "filters": [{"values": {"region": ["eu", "us"]},
                     "properties": {"graduated_ranges": [
                         {"from_value": "0", "to_value": null, "per_unit_amount": "0.02"}]},
                     "invoice_display_name": "EU and US"}]
    }))
    .expect("test pricing");
    PlanSpec {
        code: code.to_owned(),
        name: format!("Plan {code}"),
        description: Some("a plan with every member".to_owned()),
        interval: PlanInterval::Monthly,
        currency: "EUR".to_owned(),
        amount: "49.9".parse().expect("decimal"),
        pay_in_advance: true,
        charges: metrics
            .iter()
            .map(|metric| ChargeSpec {
                id: ChargeId::new(),
                metric_id: *metric,
                pricing: pricing.clone(),
                pricing_group_keys: vec!["project".to_owned()],
                invoice_display_name: Some("Calls".to_owned()),
            })
            .collect(),
    }
}

async fn create_plan(
    catalog: &dyn Catalog,
    org: OrganizationId,
    code: &str,
    metrics: &[MetricId],
) -> Plan {
    let plan = Plan::new(org, plan_spec(code, metrics), time::now());
    catalog.create_plan(&plan).await.expect("create_plan");
    plan
}

async fn create_customer(
    catalog: &dyn Catalog,
    org: OrganizationId,
    external_id: &str,
) -> Customer {
    let spec =
        parse_customer_spec(&json!({"external_id": external_id, "timezone": "Europe/Paris"}))
            .expect("test customer");
    let customer = Customer::new(org, spec, time::now());
    catalog.create_customer(&customer).await.expect("create_customer");
    customer
}

fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("instant").with_timezone(&Utc)
}

/// A new subscription (not stored) of `customer` to `plan`, started a day ago.
fn new_subscription(
    org: OrganizationId,
    external_id: &str,
    customer: &str,
    plan: PlanId,
    ended_at: Option<DateTime<Utc>>,
) -> Subscription {
    let now = time::now();
    let input = parse_subscription_input(&json!({
        "external_id": external_id, "customer": customer, "plan": plan.to_string(),
        "name": "Acme on the plan", "billing_anchor": "anniversary"
    }))
    .expect("test subscription");
    let mut spec = input
        .into_spec(plan, Some(chrono_tz::Europe::Paris), now - Duration::days(1))
        .expect("test subscription spec");
    spec.ended_at = ended_at;
    Subscription::new(org, spec, now)
}

async fn create_subscription(
    catalog: &dyn Catalog,
    org: OrganizationId,
    external_id: &str,
    customer: &str,
    plan: PlanId,
) -> Subscription {
    let subscription = new_subscription(org, external_id, customer, plan, None);
    catalog.create_subscription(&subscription).await.expect("create_subscription");
    subscription
}

async fn attached(catalog: &dyn Catalog, org: OrganizationId, metric: MetricId) -> bool {
    catalog.is_metric_attached(org, metric).await.expect("is_metric_attached")
}

async fn charging(catalog: &dyn Catalog, org: OrganizationId, metric: MetricId) -> Vec<PlanId> {
    let plans = catalog.plans_charging_metric(org, metric).await.expect("plans_charging_metric");
    plans.into_iter().map(|p| p.id).collect()
}

fn plan_list(search: Option<&str>, limit: u32) -> PlanListParams {
    PlanListParams { search: search.map(str::to_owned), limit, cursor: None }
}

/// Codes of every listed plan, following the cursors; also answers the page sizes.
async fn listed_plan_codes(
    catalog: &dyn Catalog,
    org: OrganizationId,
    mut params: PlanListParams,
) -> (Vec<String>, Vec<usize>) {
    let (mut codes, mut sizes) = (Vec::new(), Vec::new());
    loop {
        let page = catalog.list_plans(org, &params).await.expect("list_plans");
        sizes.push(page.items.len());
        codes.extend(page.items.into_iter().map(|p| p.spec.code));
        assert!(sizes.len() < 100, "paging does not end");
        match page.next_cursor {
            Some(cursor) => params.cursor = Some(cursor),
            None => return (codes, sizes),
        }
    }
}

fn subscription_list(
    customer: Option<&str>,
    plan_id: Option<PlanId>,
    status: Option<SubscriptionStatus>,
) -> SubscriptionListParams {
    SubscriptionListParams {
        customer: customer.map(str::to_owned),
        plan_id,
        status,
        limit: 1000,
        cursor: None,
    }
}

/// External ids of every listed subscription, following the cursors.
async fn listed_subscriptions(
    catalog: &dyn Catalog,
    org: OrganizationId,
    mut params: SubscriptionListParams,
) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let page = catalog.list_subscriptions(org, &params).await.expect("list_subscriptions");
        ids.extend(page.items.into_iter().map(|s| s.spec.external_id));
        assert!(ids.len() < 10_000, "paging does not end");
        match page.next_cursor {
            Some(cursor) => params.cursor = Some(cursor),
            None => return ids,
        }
    }
}

pub async fn plans_are_created_read_replaced_and_deleted(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await.id;
    let calls = create_metric(catalog, org, count_metric("calls", "Calls")).await.id;
    let plan = create_plan(catalog, org, "startup", &[calls, calls]).await;
    assert_eq!(catalog.get_plan(org, plan.id).await.unwrap(), plan, "by id, every member kept");
    assert_eq!(catalog.get_plan_by_code(org, "startup").await.unwrap(), plan, "by code");
    assert_not_found(catalog.get_plan_by_code(org, "STARTUP").await, Entity::Plan, "exact codes");
    assert_not_found(catalog.get_plan(org, PlanId::new()).await, Entity::Plan, "unknown id");

    let mut spec = plan_spec("startup-v2", &[calls]);
    spec.charges[0].id = plan.spec.charges[1].id;
    spec.interval = PlanInterval::Yearly;
    spec.currency = "JPY".to_owned();
    spec.amount = "1000".parse().unwrap();
    let updated_at = time::now();
    let updated = catalog.update_plan(org, plan.id, &spec, updated_at).await.unwrap();
    assert_eq!(updated.spec, spec, "the definition is replaced");
    assert_eq!((updated.updated_at, updated.created_at), (updated_at, plan.created_at));
    assert_eq!(catalog.get_plan(org, plan.id).await.unwrap(), updated);
    assert_eq!(catalog.get_plan_by_code(org, "startup-v2").await.unwrap(), updated, "new code");
    assert_not_found(catalog.get_plan_by_code(org, "startup").await, Entity::Plan, "old code");

    let deleted_at = time::now();
    let deleted = catalog.delete_plan(org, plan.id, deleted_at).await.unwrap();
    assert_eq!(deleted.deleted_at, Some(deleted_at));
    assert_eq!(deleted.spec, updated.spec, "deleting keeps the definition");
    assert_eq!(catalog.get_plan(org, plan.id).await.unwrap(), deleted, "still readable by id");
    assert_not_found(catalog.get_plan_by_code(org, "startup-v2").await, Entity::Plan, "by code");
    assert_not_found(
        catalog.update_plan(org, plan.id, &spec, time::now()).await,
        Entity::Plan,
        "replace a deleted plan",
    );
    assert_not_found(
        catalog.delete_plan(org, plan.id, time::now()).await,
        Entity::Plan,
        "delete twice",
    );
    let again = create_plan(catalog, org, "startup-v2", &[calls]).await;
    assert_ne!(again.id, plan.id, "a freed code is taken by a new plan");

    assert_not_found(
        catalog
            .create_plan(&Plan::new(OrganizationId::new(), plan_spec("x", &[]), time::now()))
            .await,
        Entity::Organization,
        "a plan for an unknown organization",
    );
}

pub async fn plan_codes_are_unique_among_live_plans(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await.id;
    let other = new_organization(catalog, "Globex").await.id;
    let first = create_plan(catalog, org, "pro", &[]).await;
    let taken = Plan::new(org, plan_spec("pro", &[]), time::now());
    assert_error(
        catalog.create_plan(&taken).await,
        StoreError::CodeTaken { code: "pro".to_owned() },
        "a live plan's code",
    );
    assert_not_found(catalog.get_plan(org, taken.id).await, Entity::Plan, "nothing stored");
    create_plan(catalog, other, "pro", &[]).await;
    let team = create_plan(catalog, org, "team", &[]).await;
    assert_error(
        catalog.update_plan(org, team.id, &plan_spec("pro", &[]), time::now()).await,
        StoreError::CodeTaken { code: "pro".to_owned() },
        "replacing with a taken code",
    );
    assert_eq!(catalog.get_plan(org, team.id).await.unwrap(), team, "nothing changed");
    catalog.delete_plan(org, first.id, time::now()).await.unwrap();
    let renamed = catalog.update_plan(org, team.id, &plan_spec("pro", &[]), time::now()).await;
    assert_eq!(renamed.unwrap().spec.code, "pro", "a deleted plan's code is free");
}

pub async fn plan_lists_page_and_search(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await.id;
    let other = new_organization(catalog, "Globex").await.id;
    let mut codes = Vec::new();
    for code in ["basic", "pro", "team", "enterprise", "legacy"] {
        create_plan(catalog, org, code, &[]).await;
        codes.push(code.to_owned());
    }
    create_plan(catalog, other, "foreign", &[]).await;
    let (listed, sizes) = listed_plan_codes(catalog, org, plan_list(None, 2)).await;
    assert_eq!(listed, codes, "oldest first, this organization only");
    assert_eq!(sizes, [2, 2, 1]);
    let (listed, sizes) = listed_plan_codes(catalog, org, plan_list(None, 5)).await;
    assert_eq!((listed.len(), sizes), (5, vec![5]), "an exact last page has no next cursor");

    let legacy = catalog.get_plan_by_code(org, "legacy").await.unwrap();
    catalog.delete_plan(org, legacy.id, time::now()).await.unwrap();
    let (listed, _) = listed_plan_codes(catalog, org, plan_list(None, 1000)).await;
    assert_eq!(listed, ["basic", "pro", "team", "enterprise"], "deleted plans are not listed");
    let (listed, _) = listed_plan_codes(catalog, org, plan_list(Some("PLAN T"), 1000)).await;
    assert_eq!(listed, ["team"], "search matches names, case-insensitively");
    let (listed, _) = listed_plan_codes(catalog, org, plan_list(Some("pr"), 1000)).await;
    assert_eq!(listed, ["pro", "enterprise"], "search matches codes anywhere");

    let bad = PlanListParams { cursor: Some("bm_nope".to_owned()), ..plan_list(None, 10) };
    assert_error(catalog.list_plans(org, &bad).await, StoreError::InvalidCursor, "bad cursor");
}

pub async fn plans_attach_the_metrics_they_charge(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await.id;
    let a = create_metric(catalog, org, count_metric("a", "A")).await.id;
    let b = create_metric(catalog, org, count_metric("b", "B")).await.id;
    assert!(!attached(catalog, org, a).await, "a new metric is not attached");

    let one = create_plan(catalog, org, "one", &[a, a]).await;
    assert!(attached(catalog, org, a).await, "attached once a plan charges it");
    assert!(!attached(catalog, org, b).await, "only the charged metrics");
    let two = create_plan(catalog, org, "two", &[a, b]).await;
    assert_eq!(charging(catalog, org, a).await, [one.id, two.id]);
    assert_eq!(charging(catalog, org, b).await, [two.id]);

    catalog.update_plan(org, one.id, &plan_spec("one", &[b]), time::now()).await.unwrap();
    assert!(attached(catalog, org, a).await, "still attached while another live plan charges it");
    assert_eq!(charging(catalog, org, a).await, [two.id]);
    assert_eq!(charging(catalog, org, b).await, [one.id, two.id]);

    catalog.delete_plan(org, two.id, time::now()).await.unwrap();
    assert!(!attached(catalog, org, a).await, "detached when the last plan charging it is deleted");
    assert!(charging(catalog, org, a).await.is_empty());
    assert!(attached(catalog, org, b).await, "plan one still charges b");

    catalog.update_plan(org, one.id, &plan_spec("one", &[]), time::now()).await.unwrap();
    assert!(!attached(catalog, org, b).await, "detached when its last charge is removed");
    assert!(charging(catalog, org, b).await.is_empty());

    // A plan charging a metric that is not live is refused whole.
    let c = create_metric(catalog, org, count_metric("c", "C")).await.id;
    catalog.delete_metric(org, b, time::now()).await.unwrap();
    let refused = Plan::new(org, plan_spec("refused", &[c, b]), time::now());
    assert_error(catalog.create_plan(&refused).await, StoreError::MetricDeleted, "deleted metric");
    assert_not_found(catalog.get_plan(org, refused.id).await, Entity::Plan, "nothing stored");
    assert!(!attached(catalog, org, c).await, "nothing attached");
    let unknown = Plan::new(org, plan_spec("unknown", &[c, MetricId::new()]), time::now());
    assert_not_found(catalog.create_plan(&unknown).await, Entity::Metric, "unknown metric");
    assert_not_found(
        catalog
            .update_plan(org, one.id, &plan_spec("one", &[c, MetricId::new()]), time::now())
            .await,
        Entity::Metric,
        "replacing with an unknown metric",
    );
    assert!(!attached(catalog, org, c).await, "a refused replacement attaches nothing");
    assert!(catalog.get_plan(org, one.id).await.unwrap().spec.charges.is_empty(), "unchanged");

    let other = new_organization(catalog, "Globex").await.id;
    let foreign = Plan::new(other, plan_spec("foreign", &[c]), time::now());
    assert_not_found(catalog.create_plan(&foreign).await, Entity::Metric, "another org's metric");
    assert_not_found(catalog.plans_charging_metric(other, c).await, Entity::Metric, "other org");
    assert_not_found(
        catalog.plans_charging_metric(org, MetricId::new()).await,
        Entity::Metric,
        "unknown metric",
    );
}

pub async fn plans_with_active_subscriptions_cannot_be_deleted(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await.id;
    let calls = create_metric(catalog, org, count_metric("calls", "Calls")).await.id;
    create_customer(catalog, org, "acme").await;
    let plan = create_plan(catalog, org, "pro", &[calls]).await;
    create_subscription(catalog, org, "s1", "acme", plan.id).await;
    let ending =
        new_subscription(org, "s2", "acme", plan.id, Some(time::now() + Duration::days(30)));
    catalog.create_subscription(&ending).await.unwrap();
    let ended =
        new_subscription(org, "s3", "acme", plan.id, Some(time::now() - Duration::hours(1)));
    catalog.create_subscription(&ended).await.unwrap();

    assert_error(
        catalog.delete_plan(org, plan.id, time::now()).await,
        StoreError::PlanInUse { active: 2 },
        "two subscriptions are active (the one scheduled to end too), one has ended",
    );
    assert!(catalog.get_plan(org, plan.id).await.unwrap().is_live(), "nothing changed");
    assert!(attached(catalog, org, calls).await);
    catalog.terminate_subscription(org, "s1", time::now()).await.unwrap();
    catalog.terminate_subscription(org, "s2", time::now()).await.unwrap();
    let deleted = catalog.delete_plan(org, plan.id, time::now()).await.unwrap();
    assert!(deleted.deleted_at.is_some());
    assert!(!attached(catalog, org, calls).await);
    assert_eq!(catalog.get_subscription(org, "s1").await.unwrap().spec.plan_id, plan.id);
    assert_not_found(
        catalog.create_subscription(&new_subscription(org, "s4", "acme", plan.id, None)).await,
        Entity::Plan,
        "no new subscription on a deleted plan",
    );
}

pub async fn subscriptions_are_created_read_updated_and_terminated(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await.id;
    let customer = create_customer(catalog, org, "acme").await;
    let plan = create_plan(catalog, org, "pro", &[]).await;
    let subscription = create_subscription(catalog, org, "sub-1", "acme", plan.id).await;
    assert_eq!(subscription.status, SubscriptionStatus::Active);
    let read = catalog.get_subscription(org, "sub-1").await.unwrap();
    assert_eq!(read, subscription, "every member kept");
    assert_not_found(catalog.get_subscription(org, "SUB-1").await, Entity::Subscription, "exact");

    let twin = new_subscription(org, "sub-1", "acme", plan.id, None);
    assert_error(
        catalog.create_subscription(&twin).await,
        StoreError::ExternalIdTaken { external_id: "sub-1".to_owned() },
        "a taken external id",
    );
    assert_not_found(
        catalog.create_subscription(&new_subscription(org, "sub-2", "nobody", plan.id, None)).await,
        Entity::Customer,
        "unknown customer",
    );
    assert_not_found(
        catalog
            .create_subscription(&new_subscription(org, "sub-2", "acme", PlanId::new(), None))
            .await,
        Entity::Plan,
        "unknown plan",
    );
    assert_not_found(
        catalog
            .create_subscription(&new_subscription(
                OrganizationId::new(),
                "x",
                "acme",
                plan.id,
                None,
            ))
            .await,
        Entity::Organization,
        "a subscription for an unknown organization",
    );

    let ends = time::now() + Duration::days(90);
    let date = NaiveDate::from_ymd_opt(2026, 1, 31).unwrap();
    let update = SubscriptionUpdate {
        name: None,
        ended_at: Some(ends),
        billing_anchor: BillingAnchor::Date(date),
        updated_at: time::now(),
    };
    let updated = catalog.update_subscription(org, "sub-1", &update).await.unwrap();
    assert_eq!(
        (updated.spec.name.as_deref(), updated.spec.ended_at, updated.spec.billing_anchor),
        (None, Some(ends), BillingAnchor::Date(date)),
    );
    assert_eq!(
        (updated.updated_at, updated.status),
        (update.updated_at, SubscriptionStatus::Active)
    );
    assert_eq!(updated.spec.started_at, subscription.spec.started_at, "the rest is kept");
    assert_eq!(catalog.get_subscription(org, "sub-1").await.unwrap(), updated);

    // The subscription follows its customer through a change of external id.
    let mut renamed = customer.spec.clone();
    renamed.external_id = "acme-corp".to_owned();
    catalog.update_customer(org, "acme", &renamed, time::now()).await.unwrap();
    assert_eq!(catalog.get_subscription(org, "sub-1").await.unwrap().spec.customer, "acme-corp");

    let at = time::now();
    let terminated = catalog.terminate_subscription(org, "sub-1", at).await.unwrap();
    assert_eq!(terminated.status, SubscriptionStatus::Terminated);
    assert_eq!((terminated.terminated_at, terminated.spec.ended_at), (Some(at), Some(at)));
    assert_eq!(catalog.get_subscription(org, "sub-1").await.unwrap(), terminated);
    let again = catalog.terminate_subscription(org, "sub-1", time::now()).await.unwrap();
    assert_eq!(again, terminated, "terminating twice keeps the first termination");
    assert_error(
        catalog.update_subscription(org, "sub-1", &update).await,
        StoreError::SubscriptionTerminated,
        "a terminated subscription takes no more changes",
    );

    // A subscription that reached its end is terminated without a call, and a termination
    // after it keeps the earlier end.
    let past = time::now() - Duration::hours(1);
    let ended = new_subscription(org, "sub-ended", "acme-corp", plan.id, Some(past));
    catalog.create_subscription(&ended).await.unwrap();
    let read = catalog.get_subscription(org, "sub-ended").await.unwrap();
    assert_eq!((read.status, read.terminated_at), (SubscriptionStatus::Terminated, None));
    let later = catalog.terminate_subscription(org, "sub-ended", time::now()).await.unwrap();
    assert_eq!(later.spec.ended_at, Some(past), "an ended subscription keeps its end");

    // A termination before the start ends it at its start.
    let mut future = new_subscription(org, "sub-future", "acme-corp", plan.id, None);
    future.spec.started_at = time::now() + Duration::days(10);
    catalog.create_subscription(&future).await.unwrap();
    let cancelled = catalog.terminate_subscription(org, "sub-future", time::now()).await.unwrap();
    assert_eq!(cancelled.spec.ended_at, Some(future.spec.started_at));

    assert_not_found(
        catalog.terminate_subscription(org, "nobody", time::now()).await,
        Entity::Subscription,
        "terminate an unknown subscription",
    );
    assert_not_found(
        catalog.update_subscription(org, "nobody", &update).await,
        Entity::Subscription,
        "update an unknown subscription",
    );
}

pub async fn subscription_lists_filter_by_customer_plan_and_status(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await.id;
    let other = new_organization(catalog, "Globex").await.id;
    create_customer(catalog, org, "a").await;
    create_customer(catalog, org, "b").await;
    create_customer(catalog, other, "a").await;
    let basic = create_plan(catalog, org, "basic", &[]).await.id;
    let pro = create_plan(catalog, org, "pro", &[]).await.id;
    let foreign = create_plan(catalog, other, "basic", &[]).await.id;
    create_subscription(catalog, org, "a-basic", "a", basic).await;
    create_subscription(catalog, org, "a-pro", "a", pro).await;
    create_subscription(catalog, org, "b-basic", "b", basic).await;
    create_subscription(catalog, org, "b-pro", "b", pro).await;
    create_subscription(catalog, other, "foreign", "a", foreign).await;
    catalog.terminate_subscription(org, "a-pro", time::now()).await.unwrap();
    let mut ended =
        new_subscription(org, "b-ended", "b", pro, Some(instant("2020-01-01T00:00:00Z")));
    ended.spec.started_at = instant("2019-01-01T00:00:00Z");
    catalog.create_subscription(&ended).await.unwrap();

    let all = listed_subscriptions(catalog, org, subscription_list(None, None, None)).await;
    assert_eq!(all, ["a-basic", "a-pro", "b-basic", "b-pro", "b-ended"], "oldest first");
    let active = Some(SubscriptionStatus::Active);
    let cases = [
        (subscription_list(Some("a"), None, None), &["a-basic", "a-pro"][..]),
        (subscription_list(None, Some(pro), None), &["a-pro", "b-pro", "b-ended"]),
        (subscription_list(None, None, active), &["a-basic", "b-basic", "b-pro"]),
        (
            subscription_list(None, None, Some(SubscriptionStatus::Terminated)),
            &["a-pro", "b-ended"],
        ),
        (subscription_list(Some("b"), Some(pro), active), &["b-pro"]),
        (subscription_list(Some("nobody"), None, None), &[]),
        (subscription_list(None, Some(foreign), None), &[]),
    ];
    for (params, expected) in cases {
        let listed = listed_subscriptions(catalog, org, params.clone()).await;
        assert_eq!(listed, expected, "{params:?}");
    }

    let mut params = subscription_list(None, None, None);
    params.limit = 2;
    let mut sizes = Vec::new();
    loop {
        let page = catalog.list_subscriptions(org, &params).await.unwrap();
        sizes.push(page.items.len());
        match page.next_cursor {
            Some(cursor) => params.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(sizes, [2, 2, 1], "pages of two");
    let bad = SubscriptionListParams {
        cursor: Some("nope".to_owned()),
        ..subscription_list(None, None, None)
    };
    assert_error(catalog.list_subscriptions(org, &bad).await, StoreError::InvalidCursor, "cursor");
    assert_not_found(
        catalog.get_subscription(org, "foreign").await,
        Entity::Subscription,
        "isolated",
    );
    assert_not_found(catalog.get_plan(org, foreign).await, Entity::Plan, "isolated");
}

fn plan_definition(code: &str, metric: &str) -> Value {
    json!({
        "code": code, "name": "Pro", "interval": "monthly", "currency": "USD", "amount": "20",
        "charges": [
            {"metric": metric, "charge_model": "standard", "properties": {"amount": "0.01"}},
            {"metric": metric, "charge_model": "package",
             "properties": {"amount": "5", "package_size": 1000, "free_units": 100}}
        ]
    })
}

pub async fn plan_and_subscription_operations_apply_the_rules(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await.id;
    let storage = metrics::create_metric(
        catalog,
        org,
        &json!({"code": "storage", "name": "Storage", "aggregation": {"type": "sum", "field": "gb"}}),
    )
    .await
    .unwrap();

    match plans::create_plan(catalog, org, &plan_definition("pro", "nothing")).await {
        Err(PlanError::Invalid(problems)) => {
            let found: Vec<(&str, &str)> =
                problems.iter().map(|p| (p.path.as_str(), p.code)).collect();
            assert_eq!(
                found,
                [("charges[0].metric", "unknown_metric"), ("charges[1].metric", "unknown_metric")]
            );
        }
        other => panic!("a charge of an unknown metric: {other:?}"),
    }
    let plan = plans::create_plan(catalog, org, &plan_definition("pro", "storage")).await.unwrap();
    assert_eq!(plan.spec.charges[0].metric_id, storage.id, "found by code");
    let by_id = plan_definition("pro", &storage.id.to_string());
    match plans::create_plan(catalog, org, &by_id).await {
        Err(e @ PlanError::CodeTaken { .. }) => assert_eq!(e.code(), "code_taken"),
        other => panic!("a taken code: {other:?}"),
    }

    // The lock rule, live: the plan attaches the metric.
    let locked = json!({"aggregation": {"field": "bytes"}});
    match metrics::update_metric(catalog, org, "storage", &locked).await {
        Err(MetricError::Locked(locked)) => assert_eq!(locked.fields, ["aggregation.field"]),
        other => panic!("a locked field of a charged metric: {other:?}"),
    }
    let renamed = metrics::update_metric(catalog, org, "storage", &json!({"name": "Disk"})).await;
    assert_eq!(renamed.unwrap().revision, 2, "unlocked fields stay editable");

    // A replacement keeps the charge ids it names.
    let mut replacement = by_id.clone();
    replacement["charges"][1]["id"] = json!(plan.spec.charges[1].id.to_string());
    let replaced = plans::replace_plan(catalog, org, "pro", &replacement).await.unwrap();
    assert_eq!(replaced.spec.charges[1].id, plan.spec.charges[1].id, "a named charge keeps its id");
    assert_ne!(replaced.spec.charges[0].id, plan.spec.charges[0].id, "an unnamed charge is new");
    let same = plans::replace_plan(catalog, org, &plan.id.to_string(), &replacement).await;
    let same = same.unwrap();
    assert_ne!(same.spec.charges[0].id, replaced.spec.charges[0].id, "again a new charge");
    let mut stranger = replacement.clone();
    stranger["charges"][0]["id"] = json!(ChargeId::new().to_string());
    match plans::replace_plan(catalog, org, "pro", &stranger).await {
        Err(PlanError::Invalid(problems)) => assert_eq!(problems.0[0].code, "unknown_charge"),
        other => panic!("naming a charge of no plan: {other:?}"),
    }

    // Subscriptions: the customer must exist, its zone is the default.
    let definition = json!({"external_id": "s1", "customer": "acme", "plan": "pro"});
    match subscriptions::create_subscription(catalog, org, &definition).await {
        Err(SubscriptionError::Invalid(problems)) => {
            assert_eq!(
                (problems.0[0].path.as_str(), problems.0[0].code),
                ("customer", "unknown_customer")
            );
        }
        other => panic!("an unknown customer: {other:?}"),
    }
    create_customer(catalog, org, "acme").await;
    let unknown_plan = json!({"external_id": "s1", "customer": "acme", "plan": "nope"});
    match subscriptions::create_subscription(catalog, org, &unknown_plan).await {
        Err(e) => assert_eq!(e.code(), "unknown_plan", "{e}"),
        Ok(s) => panic!("a subscription to an unknown plan: {s:?}"),
    }
    let subscription = subscriptions::create_subscription(catalog, org, &definition).await.unwrap();
    assert_eq!(subscription.spec.timezone, chrono_tz::Europe::Paris, "the customer's zone");
    assert_eq!(subscription.spec.plan_id, plan.id);
    match subscriptions::create_subscription(catalog, org, &definition).await {
        Err(e @ SubscriptionError::ExternalIdTaken { .. }) => {
            assert_eq!(e.code(), "external_id_taken")
        }
        other => panic!("a taken external id: {other:?}"),
    }
    let patched = subscriptions::update_subscription(
        catalog,
        org,
        "s1",
        &json!({"name": "Acme Pro", "billing_anchor": "anniversary"}),
    )
    .await
    .unwrap();
    assert_eq!(patched.spec.name.as_deref(), Some("Acme Pro"));
    assert_eq!(patched.spec.billing_anchor, BillingAnchor::Anniversary);
    match subscriptions::update_subscription(catalog, org, "s1", &json!({"plan": "other"})).await {
        Err(SubscriptionError::Invalid(problems)) => assert_eq!(problems.0[0].code, "not_allowed"),
        other => panic!("moving a subscription to another plan: {other:?}"),
    }

    match plans::delete_plan(catalog, org, "pro").await {
        Err(e) => assert_eq!(e.code(), "plan_in_use", "{e}"),
        Ok(p) => panic!("a plan with an active subscription was deleted: {p:?}"),
    }
    subscriptions::terminate_subscription(catalog, org, "s1").await.unwrap();
    match subscriptions::update_subscription(catalog, org, "s1", &json!({"name": "x"})).await {
        Err(e) => assert_eq!(e.code(), "subscription_terminated", "{e}"),
        Ok(s) => panic!("a terminated subscription was changed: {s:?}"),
    }
    plans::delete_plan(catalog, org, "pro").await.unwrap();
    let unlocked = metrics::update_metric(catalog, org, "storage", &locked).await.unwrap();
    assert_eq!(
        (unlocked.revision, unlocked.spec.aggregation.field.as_deref()),
        (3, Some("bytes")),
        "once no live plan charges it, locked fields can change"
    );
    assert_not_found(plans::find_plan(catalog, org, "pro").await, Entity::Plan, "deleted");
    assert_not_found(
        plans::find_plan(catalog, org, &plan.id.to_string()).await,
        Entity::Plan,
        "deleted, by id",
    );
    let recreated = plans::create_plan(catalog, org, &plan_definition("pro", "storage")).await;
    assert_ne!(recreated.unwrap().id, plan.id, "the code is free again");
}
