"""Current usage through lago-python-client: one plan with every charge model and with charge
filters, a customer, a subscription since the start of this month, events of every aggregation
type, and the numbers worked out by hand below."""

import calendar
import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

import pytest
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import (
    BatchEvent,
    BillableMetric,
    BillableMetricFilter,
    Charge,
    Charges,
    Customer,
    Event,
    Plan,
    Subscription,
)
from lago_python_client.models.billable_metric import BillableMetricFilters
from lago_python_client.models.charge import ChargeFilter, ChargeFilters


def month_bounds():
    now = dt.datetime.now(dt.timezone.utc)
    start = dt.datetime(now.year, now.month, 1, tzinfo=dt.timezone.utc)
    days = calendar.monthrange(now.year, now.month)[1]
    return start, start + dt.timedelta(days=days)


@pytest.fixture(scope="module")
def usage(client):
    """Creates everything, sends the events, and answers the current usage once."""
    import uuid

    u = uuid.uuid4().hex[:8]
    start, end = month_bounds()
    t0 = int(start.timestamp())
    if (dt.datetime.now(dt.timezone.utc) - start).total_seconds() < 300:
        pytest.skip("the month began less than 5 minutes ago: no room for past events")

    def metric(code, kind, **extra):
        return client.billable_metrics.create(BillableMetric(
            name=code, code=f"{code}_{u}", aggregation_type=kind, **extra))

    m = {
        "calls": metric("calls", "count_agg"),
        "gb": metric("gb", "sum_agg", field_name="gb", filters=BillableMetricFilters(__root__=[
            BillableMetricFilter(key="region", values=["eu", "us"])])),
        "peak": metric("peak", "max_agg", field_name="n"),
        "seats": metric("seats", "latest_agg", field_name="seats"),
        "users": metric("users", "unique_count_agg", field_name="user"),
        "storage": metric("storage", "weighted_sum_agg", field_name="delta",
                          weighted_interval="seconds", rounding_function="round",
                          rounding_precision=4),
        "pay": metric("pay", "sum_agg", field_name="amount"),
        "disk": metric("disk", "sum_agg", field_name="gb", recurring=True),
        "area": metric("area", "sum_agg",
                       expression="event.properties.width * event.properties.height"),
    }

    def charge(name, model, properties, **extra):
        return Charge(billable_metric_id=m[name].lago_id, charge_model=model,
                      properties=properties, **extra)

    plan = client.plans.create(Plan(
        name="Everything", code=f"everything_{u}", interval="monthly", amount_cents=4900,
        amount_currency="EUR", charges=Charges(__root__=[
            charge("calls", "graduated", {"graduated_ranges": [
                {"from_value": 0, "to_value": 2, "per_unit_amount": "1", "flat_amount": "0"},
                {"from_value": 3, "to_value": None, "per_unit_amount": "0.5",
                 "flat_amount": "0"}]}),
            charge("gb", "standard", {"amount": "0.1"}, filters=ChargeFilters(__root__=[
                ChargeFilter(values={"region": ["eu"]}, properties={"amount": "0.2"},
                             invoice_display_name="Europe"),
                ChargeFilter(values={"region": ["us"]}, properties={"amount": "0.3"})])),
            charge("peak", "volume", {"volume_ranges": [
                {"from_value": 0, "to_value": 10, "per_unit_amount": "1", "flat_amount": "0"},
                {"from_value": 11, "to_value": None, "per_unit_amount": "0.5",
                 "flat_amount": "5"}]}),
            charge("seats", "standard", {"amount": "2"}),
            charge("users", "package", {"amount": "5", "package_size": 2, "free_units": 0}),
            charge("storage", "standard", {"amount": "1"}),
            charge("pay", "percentage", {"rate": "2", "fixed_amount": "0.5"}),
            charge("disk", "standard", {"amount": "1"}),
            charge("area", "standard", {"amount": "1"}),
        ])))
    customer = f"acme_{u}"
    client.customers.create(Customer(external_id=customer, name="Acme", currency="EUR"))
    sub = f"acme_main_{u}"
    client.subscriptions.create(Subscription(
        external_customer_id=customer, plan_code=plan.code, external_id=sub,
        subscription_at=start.strftime("%Y-%m-%dT%H:%M:%SZ"), billing_time="calendar"))

    n = iter(range(10_000))

    def ev(name, at, **props):
        return Event(transaction_id=f"e{next(n)}_{u}", external_subscription_id=sub,
                     code=m[name].code, timestamp=at, properties=props)

    events = (
        [ev("calls", t0 + i) for i in range(5)]
        + [ev("gb", t0 + 1, gb=10, region="eu"), ev("gb", t0 + 2, gb="5", region="eu"),
           ev("gb", t0 + 3, gb=1, region="us"), ev("gb", t0 + 4, gb=2)]
        + [ev("peak", t0 + 1, n=3), ev("peak", t0 + 2, n=12), ev("peak", t0 + 3, n=7)]
        + [ev("seats", t0 + 1, seats=4), ev("seats", t0 + 2, seats=-1)]
        + [ev("users", t0 + 1, user="a"), ev("users", t0 + 2, user="b"),
           ev("users", t0 + 3, user="c"),
           ev("users", t0 + 4, user="b", operation_type="remove"),
           ev("users", t0 + 5, user="a", operation_type="add")]
        + [ev("storage", t0, delta=10), ev("storage", t0 + 60, delta=20)]
        + [ev("pay", t0 + 1, amount=100), ev("pay", t0 + 2, amount=50)]
        + [ev("disk", t0 - 86400, gb=7), ev("disk", t0 + 1, gb=3)]
        + [ev("area", t0 + 1, width=2, height=3), ev("area", t0 + 2, width="1.5", height=2)]
    )
    client.events.batch_create(BatchEvent(events=events))
    return {"client": client, "customer": customer, "sub": sub, "metrics": m, "start": start,
            "end": end, "answer": client.customers.current_usage(customer, sub)}


def by_code(answer, metrics):
    codes = {metric.code: name for name, metric in metrics.items()}
    return {codes[c.billable_metric.code]: c for c in answer.charges_usage}


def storage_units(start, end):
    # Level 10 for the first 60 s, then 30 until the period's end: the time-weighted average
    # over the whole period, rounded half up to 4 places by the metric's rounding.
    seconds = Decimal(int((end - start).total_seconds()))
    average = (10 * 60 + 30 * (seconds - 60)) / seconds
    return average.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def test_the_period_is_this_month(usage):
    answer = usage["answer"]
    assert answer.from_datetime == usage["start"].strftime("%Y-%m-%dT%H:%M:%SZ")
    # Odometer's period end is exclusive: the first instant of next month.
    assert answer.to_datetime == usage["end"].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert answer.currency == "EUR"
    assert answer.taxes_amount_cents == 0


def test_every_charge_model_by_hand(usage):
    charges = by_code(usage["answer"], usage["metrics"])
    storage = storage_units(usage["start"], usage["end"])
    storage_cents = int((storage * 100).quantize(Decimal("1"), rounding=ROUND_HALF_UP))
    expected = {
        # 5 calls, graduated: 2 × 1 + 3 × 0.5 = 3.50
        "calls": ("5", 5, 350),
        # 10 + 5 + 1 + 2 GB: eu 15 × 0.2 = 3.00, us 1 × 0.3 = 0.30, default 2 × 0.1 = 0.20
        "gb": ("18", 4, 350),
        # max 12, volume: all 12 in the second tier: 12 × 0.5 + 5 = 11.00
        "peak": ("12", 3, 1100),
        # latest is -1 (Lago would clamp it to 0): -1 × 2 = -2.00
        "seats": ("-1", 2, -200),
        # a and c are added, b was removed: 2 users, one package of 2 at 5.00
        "users": ("2", 5, 500),
        "storage": (str(storage.normalize()), 2, storage_cents),
        # 150 × 2 % + 2 events × 0.5 = 4.00
        "pay": ("150", 2, 400),
        # recurring: last month's 7 and this month's 3 = 10 × 1
        "disk": ("10", 1, 1000),
        # 2 × 3 + 1.5 × 2 = 9 × 1
        "area": ("9", 2, 900),
    }
    got = {name: (c.units, c.events_count, c.amount_cents) for name, c in charges.items()}
    assert got == expected
    assert usage["answer"].amount_cents == sum(cents for _, _, cents in expected.values())
    assert usage["answer"].total_amount_cents == usage["answer"].amount_cents
    assert charges["calls"].charge.charge_model == "graduated"
    assert charges["users"].billable_metric.aggregation_type == "unique_count_agg"


def test_charge_filter_buckets(usage):
    gb = by_code(usage["answer"], usage["metrics"])["gb"]
    # One entry per charge filter, plus the default bucket (values null) for the events
    # that match none.
    buckets = {(f.values or {}).get("region", ["(default)"])[0]:
               (f.units, f.events_count, f.amount_cents) for f in gb.filters}
    assert buckets == {"eu": ("15", 2, 300), "us": ("1", 1, 30), "(default)": ("2", 1, 20)}
    assert [f.values for f in gb.filters if not f.values] == [None]
    europe = [f for f in gb.filters if f.values == {"region": ["eu"]}][0]
    assert europe.invoice_display_name == "Europe"


def test_narrowed_by_metric_code_and_group(usage):
    client, m = usage["client"], usage["metrics"]
    only = client.customers.current_usage(usage["customer"], usage["sub"],
                                          billable_metric_code=m["peak"].code)
    assert [(c.billable_metric.code, c.amount_cents) for c in only.charges_usage] == [
        (m["peak"].code, 1100)]
    assert only.amount_cents == 1100

    eu = client.customers.current_usage(usage["customer"], usage["sub"],
                                        billable_metric_code=m["gb"].code,
                                        group={"region": "eu"})
    (charge,) = eu.charges_usage
    assert (charge.units, charge.events_count, charge.amount_cents) == ("15", 2, 300)
    assert [f.values for f in charge.filters] == [{"region": ["eu"]}]


def test_more_events_change_the_answer(usage):
    client, m = usage["client"], usage["metrics"]
    t0 = int(usage["start"].timestamp())
    client.events.create(Event(transaction_id=f"late_{usage['sub']}",
                               external_subscription_id=usage["sub"], code=m["peak"].code,
                               timestamp=str(t0 + 100), properties={"n": 20}))
    again = client.customers.current_usage(usage["customer"], usage["sub"],
                                           billable_metric_code=m["peak"].code)
    # max 20: 20 × 0.5 + 5 = 15.00
    assert (again.charges_usage[0].units, again.amount_cents) == ("20", 1500)


def test_current_usage_errors(usage):
    client = usage["client"]
    with pytest.raises(LagoApiError) as caught:
        client.customers.current_usage("nobody", usage["sub"])
    assert (caught.value.status_code, caught.value.response) == (
        404, {"status": 404, "error": "Not Found", "code": "customer_not_found"})
    with pytest.raises(LagoApiError) as caught:
        client.customers.current_usage(usage["customer"], "no_such_subscription")
    assert (caught.value.status_code, caught.value.response) == (
        405, {"status": 405, "error": "Method Not Allowed", "code": "no_active_subscription"})


def test_pricing_group_keys_split_usage(client, unique):
    start, _ = month_bounds()
    t0 = int(start.timestamp())
    metric = client.billable_metrics.create(BillableMetric(
        name="Bytes", code=f"bytes_{unique}", aggregation_type="sum_agg", field_name="bytes"))
    plan = client.plans.create(Plan(
        name="Grouped", code=f"grouped_{unique}", interval="monthly", amount_cents=0,
        amount_currency="USD", charges=Charges(__root__=[Charge(
            billable_metric_id=metric.lago_id, charge_model="package",
            properties={"amount": "1", "package_size": 2, "free_units": 0,
                        "pricing_group_keys": ["project"]})])))
    assert plan.charges.__root__[0].properties["pricing_group_keys"] == ["project"]
    customer, sub = f"g_{unique}", f"g_sub_{unique}"
    client.subscriptions.create(Subscription(
        external_customer_id=customer, plan_code=plan.code, external_id=sub,
        subscription_at=start.strftime("%Y-%m-%dT%H:%M:%SZ")))
    client.events.batch_create(BatchEvent(events=[
        Event(transaction_id=f"g{i}_{unique}", external_subscription_id=sub,
              code=metric.code, timestamp=t0 + i, properties=props)
        for i, props in enumerate([{"bytes": 3, "project": "a"}, {"bytes": 4, "project": "b"},
                                   {"bytes": 1}])]))
    (charge,) = client.customers.current_usage(customer, sub).charges_usage
    # Each group is priced on its own: packages of 2 at 1.00: a 3 -> 2, b 4 -> 2, none 1 -> 1.
    groups = {g.grouped_by.get("project"): (g.units, g.amount_cents)
              for g in charge.grouped_usage}
    assert groups == {"a": ("3", 200), "b": ("4", 200), None: ("1", 100)}
    assert (charge.units, charge.amount_cents) == ("8", 500)

    (only_a,) = client.customers.current_usage(customer, sub,
                                               group={"project": "a"}).charges_usage
    assert (only_a.units, only_a.events_count, only_a.amount_cents) == ("3", 1, 200)
