"""Events through lago-python-client: one by one and in batches, retries of the same
transaction id, conflicts, and every event Lago would accept and never count rejected with a
422 naming the index and the field."""

import time

import pytest
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import (
    BatchEvent,
    BillableMetric,
    Charge,
    Charges,
    Customer,
    Event,
    Plan,
    Subscription,
)


def error_of(call):
    with pytest.raises(LagoApiError) as caught:
        call()
    return caught.value.status_code, caught.value.response


def validation(details):
    return {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
            "error_details": details}


@pytest.fixture
def setup(client, unique):
    """A sum metric, a count metric, a plan charging both, a customer and a subscription."""
    gb = f"gb_{unique}"
    calls = f"calls_{unique}"
    m1 = client.billable_metrics.create(
        BillableMetric(name="GB", code=gb, aggregation_type="sum_agg", field_name="gb"))
    m2 = client.billable_metrics.create(
        BillableMetric(name="Calls", code=calls, aggregation_type="count_agg"))
    plan = f"plan_{unique}"
    client.plans.create(Plan(name="Plan", code=plan, interval="monthly", amount_cents=0,
                             amount_currency="USD", charges=Charges(__root__=[
                                 Charge(billable_metric_id=m1.lago_id, charge_model="standard",
                                        properties={"amount": "1"}),
                                 Charge(billable_metric_id=m2.lago_id, charge_model="standard",
                                        properties={"amount": "1"})])))
    customer = f"cus_{unique}"
    client.customers.create(Customer(external_id=customer, name="Events Inc"))
    sub = f"sub_{unique}"
    client.subscriptions.create(
        Subscription(external_customer_id=customer, plan_code=plan, external_id=sub))
    return {"gb": gb, "calls": calls, "customer": customer, "sub": sub, "unique": unique}


def test_one_event_with_string_and_integer_timestamps(client, setup):
    ts = int(time.time()) - 120
    created = client.events.create(Event(
        transaction_id=f"tx1_{setup['unique']}", external_subscription_id=setup["sub"],
        code=setup["gb"], timestamp=ts, properties={"gb": "2.5"}))
    # The client turns the integer into the JSON string "<ts>"; the answer is Lago's shape.
    assert created.transaction_id == f"tx1_{setup['unique']}"
    assert created.external_subscription_id == setup["sub"]
    assert created.code == setup["gb"]
    assert created.timestamp == time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))
    assert created.properties == {"gb": "2.5"}

    fractional = client.events.create(Event(
        transaction_id=f"tx2_{setup['unique']}", external_subscription_id=setup["sub"],
        code=setup["calls"], timestamp=f"{ts}.25", properties=None))
    assert fractional.timestamp.endswith(".250Z")
    assert fractional.properties == {}, "null properties are an empty object"

    now = client.events.create(Event(
        transaction_id=f"tx3_{setup['unique']}", external_subscription_id=setup["sub"],
        code=setup["calls"]))
    assert abs(time.mktime(time.strptime(now.timestamp[:19], "%Y-%m-%dT%H:%M:%S"))
               - time.mktime(time.gmtime())) < 120, "no timestamp means now"

    found = client.events.find(f"tx1_{setup['unique']}")
    assert (found.code, found.properties, found.external_subscription_id) == (
        setup["gb"], {"gb": "2.5"}, setup["sub"])


def test_a_retry_answers_the_original_and_a_conflict_is_422(client, setup):
    event = Event(transaction_id=f"retry_{setup['unique']}",
                  external_subscription_id=setup["sub"], code=setup["gb"],
                  timestamp=int(time.time()) - 60, properties={"gb": 4})
    first = client.events.create(event)
    again = client.events.create(event)
    assert again == first, "an identical re-send is a success answering the original"

    # Without a timestamp, a re-send keeps the original's (it is the same event again).
    untimed = Event(transaction_id=f"untimed_{setup['unique']}",
                    external_subscription_id=setup["sub"], code=setup["calls"])
    assert client.events.create(untimed) == client.events.create(untimed)

    status, body = error_of(lambda: client.events.create(Event(
        transaction_id=f"retry_{setup['unique']}", external_subscription_id=setup["sub"],
        code=setup["gb"], timestamp=int(time.time()) - 60, properties={"gb": 5})))
    assert (status, body) == (422, validation({"transaction_id": ["value_already_exist"]}))
    assert client.events.find(f"retry_{setup['unique']}").properties == {"gb": 4}


def test_events_lago_would_never_count_are_refused(client, setup):
    cases = [
        (dict(external_subscription_id="no_such_subscription", code=setup["gb"]),
         {"external_subscription_id": ["subscription_not_found"]}),
        (dict(external_subscription_id=setup["sub"], code="no_such_code"),
         {"code": ["invalid_code"]}),
        (dict(external_subscription_id=setup["sub"], code=setup["gb"],
              properties={"gb": "lots"}),
         {"properties.gb": ["value_is_not_valid_number"]}),
        (dict(external_subscription_id=setup["sub"], code=setup["gb"],
              timestamp="2026-01-01T00:00:00Z"),
         {"timestamp": ["invalid_format"]}),
        (dict(external_subscription_id=setup["sub"], code=setup["gb"],
              precise_total_amount_cents="12.5"),
         {"precise_total_amount_cents": ["not_supported"]}),
    ]
    for i, (fields, details) in enumerate(cases):
        status, body = error_of(lambda: client.events.create(
            Event(transaction_id=f"bad{i}_{setup['unique']}", **fields)))
        assert (status, body) == (422, validation(details)), fields
        assert error_of(lambda: client.events.find(f"bad{i}_{setup['unique']}"))[0] == 404


def test_batches_are_all_or_nothing_with_errors_by_index(client, setup):
    u = setup["unique"]
    ts = int(time.time()) - 30

    def ev(n, **props):
        return Event(transaction_id=f"b{n}_{u}", external_subscription_id=setup["sub"],
                     code=setup["gb"], timestamp=ts + n, properties=props)

    assert client.events.batch_create(BatchEvent(events=[ev(1, gb=1), ev(2, gb=2)])) is None
    assert client.events.find(f"b2_{u}").properties == {"gb": 2}

    # A retry of the whole batch (one more event added) stores the new one only.
    client.events.batch_create(BatchEvent(events=[ev(1, gb=1), ev(2, gb=2), ev(3, gb=3)]))
    assert client.events.find(f"b3_{u}").properties == {"gb": 3}

    status, body = error_of(lambda: client.events.batch_create(BatchEvent(events=[
        ev(4, gb=4), ev(5, gb="five"), ev(2, gb=20),
        Event(transaction_id=f"b6_{u}", external_subscription_id="ghost", code=setup["gb"])])))
    assert status == 422
    # Index 1 and 3 are refused when read; index 2 conflicts with what is stored. Nothing of
    # the batch is stored: the first refusal stops it before the conflict is seen.
    assert body == validation({"1": {"properties.gb": ["value_is_not_valid_number"]},
                               "3": {"external_subscription_id": ["subscription_not_found"]}})
    assert error_of(lambda: client.events.find(f"b4_{u}"))[0] == 404

    status, body = error_of(lambda: client.events.batch_create(BatchEvent(events=[
        ev(7, gb=7), ev(2, gb=20)])))
    assert (status, body) == (422, validation({"1": {"transaction_id": ["value_already_exist"]}}))
    assert error_of(lambda: client.events.find(f"b7_{u}"))[0] == 404


def test_batch_limits(client, setup):
    many = [Event(transaction_id=f"m{i}_{setup['unique']}",
                  external_subscription_id=setup["sub"], code=setup["calls"])
            for i in range(101)]
    assert error_of(lambda: client.events.batch_create(BatchEvent(events=many))) == (
        422, validation({"events": ["too_many_events"]}))
    assert error_of(lambda: client.events.batch_create(BatchEvent(events=[]))) == (
        422, validation({"events": ["no_events"]}))
    client.events.batch_create(BatchEvent(events=many[:100]))
    assert client.events.find(f"m99_{setup['unique']}").code == setup["calls"]


def test_unknown_event_is_404(client):
    assert error_of(lambda: client.events.find("never_sent")) == (
        404, {"status": 404, "error": "Not Found", "code": "event_not_found"})


def test_list_events_with_filters(client, raw, setup):
    ts = int(time.time()) - 300
    for n in range(3):
        client.events.create(Event(
            transaction_id=f"l{n}_{setup['unique']}", external_subscription_id=setup["sub"],
            code=setup["calls"], timestamp=ts + n))
    answer = raw.get("events", params={"external_subscription_id": setup["sub"],
                                       "code": setup["calls"], "per_page": 2, "page": 1})
    assert answer.status_code == 200
    listed = answer.json()
    assert [e["transaction_id"] for e in listed["events"]] == [
        f"l2_{setup['unique']}", f"l1_{setup['unique']}"], "newest first"
    assert listed["meta"] == {"current_page": 1, "next_page": 2, "prev_page": None,
                              "total_pages": 2, "total_count": 3}


def test_estimate_fees_has_no_instant_charge(client, setup):
    event = Event(transaction_id=f"est_{setup['unique']}",
                  external_subscription_id=setup["sub"], code=setup["gb"],
                  properties={"gb": 1})
    # Only pay-in-advance charges have fees to estimate, and Odometer bills in arrears.
    assert error_of(lambda: client.events.estimate_fees(event)) == (
        422, validation({"code": ["does_not_match_an_instant_charge"]}))
    ghost = Event(transaction_id="x", external_subscription_id="ghost", code=setup["gb"])
    assert error_of(lambda: client.events.estimate_fees(ghost)) == (
        404, {"status": 404, "error": "Not Found", "code": "subscription_not_found"})


def test_events_naming_the_customer(raw, setup):
    u = setup["unique"]
    answer = raw.post("events", json={"event": {
        "transaction_id": f"c1_{u}", "external_customer_id": setup["customer"],
        "code": setup["calls"]}})
    assert answer.status_code == 200
    # Answered with the customer's subscription covering the event's time.
    assert answer.json()["event"]["external_subscription_id"] == setup["sub"]
    mismatch = raw.post("events", json={"event": {
        "transaction_id": f"c2_{u}", "external_customer_id": "someone_else",
        "external_subscription_id": setup["sub"], "code": setup["calls"]}})
    assert (mismatch.status_code, mismatch.json()) == (
        422, validation({"external_customer_id": ["does_not_match_subscription"]}))
    unknown = raw.post("events", json={"event": {
        "transaction_id": f"c3_{u}", "external_customer_id": f"nobody_{u}",
        "code": setup["calls"], "source": "lago"}})
    assert (unknown.status_code, unknown.json()) == (
        422, validation({"source": ["unknown_field"]}))
    unknown = raw.post("events", json={"event": {
        "transaction_id": f"c3_{u}", "external_customer_id": f"nobody_{u}",
        "code": setup["calls"]}})
    assert (unknown.status_code, unknown.json()) == (
        422, validation({"external_customer_id": ["customer_not_found"]}))
