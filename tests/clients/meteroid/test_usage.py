"""Ingestion and usage through the SDK: partial failures, and usage by customer and in summary
checked against numbers worked out here by hand (unit conversion and its rounding applied,
totals computed by the aggregation, half-open periods, segmentation filtering)."""

import datetime as dt
from decimal import Decimal

import pytest
from meteroid import BadRequestError, NotFoundError
from meteroid.models import (
    DoubleSegmentationMatrix,
    Event,
    LinkedSegmentationMatrix,
    MetricDimension,
    MetricFilter,
    UnitConversion,
)

START = dt.date(2026, 10, 1)
END = dt.date(2026, 11, 1)


def at(day, hour=10):
    return dt.datetime(2026, 10, day, hour, tzinfo=dt.timezone.utc)


def by_metric(response):
    return {u.metric_id: u for u in response.usage}


def groups(usage):
    """{frozenset(dimensions): value} of one metric's grouped usage."""
    return {frozenset(g.dimensions.items()): g.value for g in usage.grouped_usage}


@pytest.fixture
def world(client, family, suffix):
    """Two customers (one named by alias, one by id), one event code read by many metrics,
    and the events of October 2026 plus one at exactly the period's end."""
    code = f"api_calls_{suffix}"
    acme = client.customers.create(currency="EUR", name="Acme", alias=f"acme-{suffix}")
    beta = client.customers.create(currency="EUR", name=f"Beta {suffix}")

    def metric(name, aggregation, key=None, **kwargs):
        return client.metrics.create(name=f"{name} {suffix}", code=code,
                                     aggregation_type=aggregation, aggregation_key=key,
                                     product_family_id=family.id, **kwargs).id

    metrics = {
        "count": metric("count", "COUNT"),
        "sum_kb_up": metric("kb", "SUM", "bytes",
                            unit_conversion=UnitConversion(factor=1000, rounding="UP")),
        "max_by_region": metric("max", "MAX", "bytes", usage_group_key="region"),
        "users": metric("users", "COUNT_DISTINCT", "user"),
        "mean": metric("mean", "MEAN", "bytes"),
        "latest": metric("latest", "LATEST", "bytes"),
        "min": metric("min", "MIN", "bytes"),
        "single": metric("single", "SUM", "bytes",
                         segmentation_matrix=MetricDimension(key="region", values=["eu", "us"])),
        "double": metric("double", "COUNT", segmentation_matrix=DoubleSegmentationMatrix(
            dimension1=MetricDimension(key="region", values=["eu", "us"]),
            dimension2=MetricDimension(key="tier", values=["pro", "free"]))),
        "linked": metric("linked", "COUNT", segmentation_matrix=LinkedSegmentationMatrix(
            dimension1_key="region", dimension2_key="tier", values={"eu": ["free"],
                                                                    "us": ["free"]})),
        "pro_only": metric("pro", "COUNT",
                           filters=[MetricFilter(property="tier", op="EQUAL", values=["pro"])]),
        # Negations need the property, as the SDK documents: e4 (no tier) does not count.
        "not_pro": metric("not pro", "COUNT",
                          filters=[MetricFilter(property="tier", op="NOT_EQUAL",
                                                values=["pro"])]),
    }

    def event(n, customer, when, **properties):
        return Event(event_id=f"e{n}-{suffix}", code=code, customer_id=customer,
                     timestamp=when, properties={k: str(v) for k, v in properties.items()})

    events = [
        event(1, acme.alias, at(1), bytes=1500, region="eu", user="u1", tier="pro"),
        event(2, acme.alias, at(2), bytes=2500, region="us", user="u2", tier="free"),
        event(3, acme.id, at(3), bytes=700, region="eu", user="u1", tier="pro"),
        event(4, acme.alias, at(4), bytes=350, region="ap", user="u3"),
        # Exactly at the period's end: the next period's (periods are half-open).
        event(5, acme.alias, dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc), bytes=9999,
              region="eu", user="u8", tier="pro"),
        event(6, beta.id, at(5), bytes=4000, region="us", user="u1", tier="free"),
        event(7, beta.id, at(6), bytes=100, region="eu", user="u9", tier="free"),
    ]
    answer = client.events.ingest(events=events, allow_backfilling=True)
    assert answer.failures is None
    return {"acme": acme, "beta": beta, "metrics": metrics, "code": code}


def test_usage_by_customer(client, world):
    m = world["metrics"]
    usage = client.usage.retrieve_customer(world["acme"].alias, start_date=START, end_date=END)
    assert (usage.period_start, usage.period_end) == (START, END)
    u = by_metric(usage)
    assert set(m.values()) <= set(u)  # every active metric of the organization is reported
    # Acme's October: e1 1500 eu/pro/u1, e2 2500 us/free/u2, e3 700 eu/pro/u1, e4 350 ap/u3.
    assert u[m["count"]].total_value == 4
    assert u[m["count"]].metric_code == world["code"]
    # 5050 bytes / 1000 = 5.05, rounded UP: 6.
    assert u[m["sum_kb_up"]].total_value == 6
    assert groups(u[m["sum_kb_up"]]) == {frozenset(): 6}
    # MAX per region; the total is the largest event (2500), not the sum of groups (4350).
    assert groups(u[m["max_by_region"]]) == {
        frozenset({("region", "eu")}): 1500,
        frozenset({("region", "us")}): 2500,
        frozenset({("region", "ap")}): 350,
    }
    assert u[m["max_by_region"]].total_value == 2500
    assert u[m["users"]].total_value == 3  # u1, u2, u3: exact
    assert u[m["mean"]].total_value == Decimal("1262.5")  # 5050 / 4
    assert u[m["latest"]].total_value == 350  # e4 is the latest in the period
    assert u[m["min"]].total_value == 350
    # SINGLE region [eu, us]: ap is outside the matrix and dropped, as Meteroid does.
    assert groups(u[m["single"]]) == {
        frozenset({("region", "eu")}): 2200,
        frozenset({("region", "us")}): 2500,
    }
    assert u[m["single"]].total_value == 4700
    assert groups(u[m["double"]]) == {
        frozenset({("region", "eu"), ("tier", "pro")}): 2,
        frozenset({("region", "us"), ("tier", "free")}): 1,
    }
    assert u[m["double"]].total_value == 3
    # LINKED {eu: [free], us: [free]}: only e2 (us, free).
    assert groups(u[m["linked"]]) == {frozenset({("region", "us"), ("tier", "free")}): 1}
    assert u[m["pro_only"]].total_value == 2  # e1, e3
    assert u[m["not_pro"]].total_value == 1  # e2
    assert client.metrics.retrieve(m["not_pro"]).filters == [
        MetricFilter(property="tier", op="NOT_EQUAL", values=["pro"])]

    # By id too, and for one metric.
    one = client.usage.retrieve_customer(world["acme"].id, start_date=START, end_date=END,
                                         metric_id=m["sum_kb_up"])
    assert [(x.metric_id, x.total_value) for x in one.usage] == [(m["sum_kb_up"], 6)]


def test_period_end_is_exclusive(client, world):
    nov = client.usage.retrieve_customer(world["acme"].alias, start_date=END,
                                         end_date=dt.date(2026, 12, 1),
                                         metric_id=world["metrics"]["count"])
    assert nov.usage[0].total_value == 1  # e5, at exactly 2026-11-01T00:00Z


def test_usage_summary_aggregates_all_customers_together(client, world):
    m = world["metrics"]
    u = by_metric(client.usage.retrieve_summary(start_date=START, end_date=END))
    mine = {k: u[v] for k, v in m.items()}
    # Acme's four events plus Beta's e6 4000 us/free/u1 and e7 100 eu/free/u9.
    assert mine["count"].total_value == 6
    assert mine["sum_kb_up"].total_value == 10  # 9150 / 1000 = 9.15, UP
    assert groups(mine["max_by_region"]) == {
        frozenset({("region", "eu")}): 1500,
        frozenset({("region", "us")}): 4000,
        frozenset({("region", "ap")}): 350,
    }
    assert mine["max_by_region"].total_value == 4000
    assert mine["users"].total_value == 4  # u1 (both customers) counted once, u2, u3, u9
    assert mine["mean"].total_value == 1525  # 9150 / 6
    assert mine["latest"].total_value == 100  # e7, Oct 6
    assert mine["min"].total_value == 100
    assert mine["single"].total_value == 8800  # eu 2300 + us 6500
    assert mine["linked"].total_value == 3  # e2, e6, e7
    assert mine["pro_only"].total_value == 2
    assert mine["not_pro"].total_value == 3  # e2, e6, e7


def test_unit_conversion_rounding_modes_in_usage(client, family, suffix):
    code = f"storage_{suffix}"
    customer = client.customers.create(currency="EUR", alias=f"store-{suffix}")
    expected = {"UP": 2, "DOWN": 1, "NEAREST": 1, "NEAREST_HALF": Decimal("1"),
                "NEAREST_DECILE": Decimal("1.1"), "NONE": Decimal("1.125")}
    ids = {}
    for rounding in expected:
        ids[rounding] = client.metrics.create(
            name=f"gb {rounding} {suffix}", code=code, aggregation_type="SUM",
            aggregation_key="gb", product_family_id=family.id,
            unit_conversion=UnitConversion(factor=8, rounding=rounding)).id
    client.events.ingest(allow_backfilling=True, events=[
        Event(event_id=f"s{n}", code=code, customer_id=customer.alias, timestamp=at(n),
              properties={"gb": gb}) for n, gb in [(1, "4"), (2, "5")]])
    u = by_metric(client.usage.retrieve_customer(customer.id, start_date=START, end_date=END))
    # 9 / 8 = 1.125, then each rounding.
    for rounding, value in expected.items():
        assert u[ids[rounding]].total_value == value, rounding


def test_ingest_failures_are_explicit(client, family, suffix):
    code = f"jobs_{suffix}"
    customer = client.customers.create(currency="EUR", alias=f"jobs-{suffix}")
    metric = client.metrics.create(name=f"jobs {suffix}", code=code, aggregation_type="SUM",
                                   aggregation_key="n", product_family_id=family.id).id
    good = Event(event_id="g1", code=code, customer_id=customer.alias, timestamp=at(1),
                 properties={"n": "3"})
    stranger = Event(event_id="b1", code=code, customer_id=f"nobody-{suffix}", timestamp=at(1),
                     properties={"n": "5"})
    not_a_number = Event(event_id="b2", code=code, customer_id=customer.id, timestamp=at(2),
                         properties={"n": "lots"})

    # Without allow_partial_failures one bad event stores nothing, and that is an error.
    with pytest.raises(BadRequestError) as err:
        client.events.ingest(events=[good, stranger], allow_backfilling=True)
    assert err.value.body.code == "BAD_REQUEST"
    assert "b1" in err.value.body.message and "no event was ingested" in err.value.body.message

    def total():
        usage = client.usage.retrieve_customer(customer.alias, start_date=START, end_date=END,
                                               metric_id=metric)
        return usage.usage[0].total_value

    assert total() == 0

    # With it, the good ones are stored and each failure is listed.
    answer = client.events.ingest(events=[good, stranger, not_a_number], allow_backfilling=True,
                                  allow_partial_failures=True)
    assert [f.event_id for f in answer.failures] == ["b1", "b2"]
    assert "unable to resolve customer" in answer.failures[0].reason
    assert "invalid_value" in answer.failures[1].reason
    assert total() == 3

    # Old events need allow_backfilling (Meteroid's 24 hour rule).
    with pytest.raises(BadRequestError) as err:
        client.events.ingest(events=[Event(event_id="old", code=code, customer_id=customer.alias,
                                           timestamp=at(3), properties={"n": "1"})])
    assert "allow_backfilling" in err.value.body.message

    # A retry of a stored event is fine and counts once; no timestamp means now.
    assert client.events.ingest(events=[good], allow_backfilling=True).failures is None
    assert client.events.ingest(events=[Event(event_id="now", code=code,
                                              customer_id=customer.alias,
                                              properties={"n": "2"})]).failures is None
    assert total() == 3

    with pytest.raises(BadRequestError) as err:
        client.events.ingest(events=[good] * 101, allow_backfilling=True)
    assert err.value.body.code == "BAD_REQUEST"
    with pytest.raises(BadRequestError) as err:
        client.events.ingest(events=[])
    assert err.value.body.code == "BAD_REQUEST"


def test_usage_errors(client, world):
    with pytest.raises(NotFoundError) as err:
        client.usage.retrieve_customer("nobody-at-all", start_date=START, end_date=END)
    assert err.value.body.code == "NOT_FOUND"
    with pytest.raises(NotFoundError) as err:
        client.usage.retrieve_summary(start_date=START, end_date=END,
                                      metric_id="bm_0000000000000000000000")
    assert err.value.body.code == "NOT_FOUND"
    with pytest.raises(BadRequestError) as err:
        client.usage.retrieve_customer(world["acme"].alias, start_date=END, end_date=START)
    assert err.value.body.code == "BAD_REQUEST"
    with pytest.raises(NotFoundError) as err:
        client.usage.retrieve_subscription("sub_0000000000000000000000")
    assert err.value.body.code == "NOT_FOUND"


def test_usage_by_subscription(client, family, world, suffix):
    from meteroid.models import (PerUnitPlanPricing, PriceComponentInput, RatePlanFee, TermRate,
                                 UsagePlanFee)
    m = world["metrics"]
    plan = client.plans.create(
        name=f"Pro {suffix}", currency="EUR", plan_type="STANDARD", status="ACTIVE",
        product_family_id=family.id,
        components=[
            PriceComponentInput(name="Platform fee", fee=RatePlanFee(
                rates=[TermRate(price=Decimal("49.90"), term="MONTHLY")])),
            PriceComponentInput(name="API calls", fee=UsagePlanFee(
                metric_id=m["count"], cadence="MONTHLY",
                pricing=PerUnitPlanPricing(rate=Decimal("0.01")))),
            PriceComponentInput(name="Kilobytes", fee=UsagePlanFee(
                metric_id=m["sum_kb_up"], cadence="MONTHLY",
                pricing=PerUnitPlanPricing(rate=Decimal("0.5")))),
        ])
    assert plan.id.startswith("plan_")
    assert plan.product_family.id == family.id
    assert [c.name for c in plan.price_components] == ["Platform fee", "API calls", "Kilobytes"]
    assert client.plans.retrieve(plan.id) == plan

    sub = client.subscriptions.create(customer_id_or_alias=world["acme"].alias, plan_id=plan.id,
                                      start_date=START, activation_condition="ON_START")
    assert sub.id.startswith("sub_")
    assert (sub.customer_id, sub.customer_alias) == (world["acme"].id, world["acme"].alias)
    assert (sub.plan_id, sub.currency, sub.mrr_cents) == (plan.id, "EUR", 4990)
    assert (sub.start_date, sub.billing_day_anchor, sub.status) == (START, 1, "ACTIVE")
    assert [(c.name, type(c.fee).__name__) for c in sub.components] == [
        ("Platform fee", "RateFee"), ("API calls", "UsageFee"), ("Kilobytes", "UsageFee")]
    assert sub.components[0].fee.rate == Decimal("49.90")
    assert sub.components[1].fee.metric_id == m["count"]
    assert client.subscriptions.retrieve(sub.id) == sub

    # Only the metrics the plan charges: Acme's October, as worked out above.
    october = client.usage.retrieve_subscription(sub.id, start_date=START, end_date=END)
    assert {u.metric_id: u.total_value for u in october.usage} == {
        m["count"]: 4, m["sum_kb_up"]: 6}
    # Without dates: the current billing period. The subscription started on Oct 1 (monthly,
    # anniversary), so it runs from the first of this month to the first of the next; in
    # November 2026 it holds e5 (at exactly Nov 1), in any later month nothing.
    today = dt.datetime.now(dt.timezone.utc).date()
    first = today.replace(day=1)
    following = (first + dt.timedelta(days=32)).replace(day=1)
    current = client.usage.retrieve_subscription(sub.id, metric_id=m["count"])
    assert (current.period_start, current.period_end) == (first, following)
    assert current.usage[0].total_value == (1 if first == END else 0)

    with pytest.raises(BadRequestError) as err:
        client.plans.create(
            name="tiered", currency="EUR", plan_type="STANDARD", status="ACTIVE",
            product_family_id=family.id,
            components=[PriceComponentInput(name="x", fee={"type": "SLOT"})])
    assert err.value.body.code == "BAD_REQUEST"
    with pytest.raises(NotFoundError) as err:
        client.subscriptions.create(customer_id_or_alias=f"nobody-{suffix}", plan_id=plan.id,
                                    start_date=START, activation_condition="ON_START")
    assert err.value.body.code == "NOT_FOUND"
    with pytest.raises(NotFoundError) as err:
        client.plans.retrieve("plan_0000000000000000000000")
    assert err.value.body.code == "NOT_FOUND"
