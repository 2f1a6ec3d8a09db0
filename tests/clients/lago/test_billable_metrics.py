"""Billable metrics through lago-python-client: every aggregation type created, found, listed,
updated and destroyed; Lago's validation errors; the lock rule as an explicit 422; the client's
evaluate_expression bug and the raw call that works."""

import httpx
import pytest
from lago_python_client.client import Client
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import (
    BillableMetric,
    BillableMetricEvaluateExpression,
    BillableMetricFilter,
    Charge,
    Charges,
    Plan,
)
from lago_python_client.models.billable_metric import BillableMetricFilters

# (aggregation_type, extra fields): every type Lago documents.
KINDS = [
    ("count_agg", {}),
    ("sum_agg", {"field_name": "gb", "recurring": True}),
    ("max_agg", {"field_name": "gb"}),
    ("latest_agg", {"field_name": "seats"}),
    ("unique_count_agg", {"field_name": "user_id", "recurring": True}),
    ("weighted_sum_agg", {"field_name": "delta", "weighted_interval": "seconds"}),
]


def error_of(call):
    with pytest.raises(LagoApiError) as caught:
        call()
    return caught.value.status_code, caught.value.response


@pytest.mark.parametrize("kind,extra", KINDS, ids=[k for k, _ in KINDS])
def test_every_aggregation_type_round_trips(client, unique, kind, extra):
    code = f"{kind}_{unique}"
    created = client.billable_metrics.create(
        BillableMetric(name=f"Metric {kind}", code=code, aggregation_type=kind,
                       description="made by the client suite", **extra)
    )
    assert created.code == code
    assert created.aggregation_type == kind
    assert created.lago_id.startswith("bm_")
    assert created.field_name == extra.get("field_name")
    assert created.recurring == extra.get("recurring", False)
    assert created.weighted_interval == extra.get("weighted_interval")
    assert created.filters.__root__ == []

    found = client.billable_metrics.find(code)
    assert (found.lago_id, found.name, found.description) == (
        created.lago_id, f"Metric {kind}", "made by the client suite")

    updated = client.billable_metrics.update(
        BillableMetric(name="Renamed", rounding_function="ceil", rounding_precision=2), code)
    assert (updated.name, updated.rounding_function, updated.rounding_precision) == (
        "Renamed", "ceil", 2)
    assert updated.aggregation_type == kind, "fields not sent keep their values"

    destroyed = client.billable_metrics.destroy(code)
    assert destroyed.lago_id == created.lago_id
    status, body = error_of(lambda: client.billable_metrics.find(code))
    assert (status, body) == (404, {"status": 404, "error": "Not Found",
                                    "code": "billable_metric_not_found"})


def test_filters_expression_and_unlocked_changes(client, unique):
    code = f"calls_{unique}"
    created = client.billable_metrics.create(BillableMetric(
        name="Calls", code=code, aggregation_type="sum_agg",
        expression="event.properties.a * event.properties.b",
        filters=BillableMetricFilters(__root__=[
            BillableMetricFilter(key="region", values=["us", "eu"]),
            BillableMetricFilter(key="tier", values=["pro"]),
        ]),
    ))
    assert created.expression == "event.properties.a * event.properties.b"
    assert created.field_name is None, "the expression's value is what is aggregated"
    assert [(f.key, f.values) for f in created.filters.__root__] == [
        ("region", ["eu", "us"]), ("tier", ["pro"])]

    # An unattached metric may change anything, the aggregation type included.
    changed = client.billable_metrics.update(
        BillableMetric(aggregation_type="max_agg", field_name="size",
                       filters=BillableMetricFilters(__root__=[])), code)
    assert (changed.aggregation_type, changed.field_name, changed.expression) == (
        "max_agg", "size", None)
    assert changed.filters.__root__ == []

    # So may its code: the metric is then found by the new one only.
    moved = client.billable_metrics.update(BillableMetric(code=f"{code}_v2"), code)
    assert (moved.lago_id, moved.code) == (created.lago_id, f"{code}_v2")
    assert client.billable_metrics.find(f"{code}_v2").lago_id == created.lago_id
    assert error_of(lambda: client.billable_metrics.find(code))[0] == 404


def test_find_all_pages_with_meta(client, unique):
    codes = [f"page_{unique}_{i}" for i in range(3)]
    for code in codes:
        client.billable_metrics.create(
            BillableMetric(name=code, code=code, aggregation_type="count_agg"))
    first = client.billable_metrics.find_all({"page": 1, "per_page": 2})
    meta = first["meta"]
    assert meta["current_page"] == 1 and meta["prev_page"] is None
    assert meta["total_count"] >= 3
    assert meta["total_pages"] == (meta["total_count"] + 1) // 2
    assert len(first["billable_metrics"]) == 2
    everything = client.billable_metrics.find_all({"page": 1, "per_page": 1000})
    listed = [m.code for m in everything["billable_metrics"]]
    assert all(code in listed for code in codes)


@pytest.mark.parametrize("fields,details", [
    ({"code": "nameless", "aggregation_type": "count_agg"}, {"name": ["value_is_mandatory"]}),
    ({"name": "x", "code": "bad_type", "aggregation_type": "median_agg"},
     {"aggregation_type": ["value_is_invalid"]}),
    ({"name": "x", "code": "no_field", "aggregation_type": "sum_agg"},
     {"field_name": ["value_is_mandatory"]}),
    ({"name": "x", "code": "no_interval", "aggregation_type": "weighted_sum_agg",
      "field_name": "v"}, {"weighted_interval": ["value_is_invalid"]}),
    ({"name": "x", "code": "recurring_max", "aggregation_type": "max_agg", "field_name": "v",
      "recurring": True}, {"recurring": ["not_compatible_with_aggregation_type"]}),
    ({"name": "x", "code": "bad_expr", "aggregation_type": "sum_agg",
      "expression": "event.properties.a +"}, {"expression": ["invalid_expression"]}),
    ({"name": "x", "code": "bad_rounding", "aggregation_type": "count_agg",
      "rounding_function": "truncate"}, {"rounding_function": ["value_is_invalid"]}),
    ({"name": "x", "code": "empty_filter", "aggregation_type": "count_agg",
      "filters": BillableMetricFilters(__root__=[BillableMetricFilter(key="k", values=[])])},
     {"values": ["value_is_mandatory"]}),
])
def test_validation_errors_are_lago_422s(client, fields, details):
    status, body = error_of(lambda: client.billable_metrics.create(BillableMetric(**fields)))
    assert status == 422
    assert body == {"status": 422, "error": "Unprocessable Entity",
                    "code": "validation_errors", "error_details": details}


def test_duplicate_code_is_value_already_exist(client, unique):
    code = f"dup_{unique}"
    client.billable_metrics.create(BillableMetric(name="a", code=code, aggregation_type="count_agg"))
    status, body = error_of(lambda: client.billable_metrics.create(
        BillableMetric(name="b", code=code, aggregation_type="count_agg")))
    assert (status, body["error_details"]) == (422, {"code": ["value_already_exist"]})


def test_locked_fields_of_an_attached_metric_are_refused(client, unique):
    code = f"locked_{unique}"
    metric = client.billable_metrics.create(
        BillableMetric(name="Locked", code=code, aggregation_type="sum_agg", field_name="gb"))
    client.plans.create(Plan(
        name="Locks", code=f"locks_{unique}", interval="monthly", amount_cents=0,
        amount_currency="USD", charges=Charges(__root__=[Charge(
            billable_metric_id=metric.lago_id, charge_model="standard",
            properties={"amount": "1"})])))

    # Lago would answer 200 and silently keep the old values; Odometer says which field.
    status, body = error_of(lambda: client.billable_metrics.update(
        BillableMetric(aggregation_type="max_agg", field_name="tb"), code))
    assert (status, body["code"]) == (422, "validation_errors")
    assert body["error_details"] == {"aggregation_type": ["modification_not_allowed"],
                                     "field_name": ["modification_not_allowed"]}
    assert client.billable_metrics.find(code).aggregation_type == "sum_agg"

    # Sending the locked fields unchanged (what a read-modify-write client does) is fine,
    # and the name stays editable.
    renamed = client.billable_metrics.update(BillableMetric(
        name="Still editable", aggregation_type="sum_agg", field_name="gb"), code)
    assert renamed.name == "Still editable"

    status, body = error_of(lambda: client.billable_metrics.destroy(code))
    assert (status, body["error_details"]) == (422, {"billable_metric": ["attached_to_a_plan"]})


def test_unknown_metric_update_and_destroy_are_404(client):
    for call in (lambda: client.billable_metrics.update(BillableMetric(name="x"), "nope"),
                 lambda: client.billable_metrics.destroy("nope")):
        assert error_of(call) == (404, {"status": 404, "error": "Not Found",
                                        "code": "billable_metric_not_found"})


def test_a_bad_key_is_401(server):
    stranger = Client(api_key="odo_not_a_real_key", api_url=server.base_url + "/lago/")
    assert error_of(lambda: stranger.billable_metrics.find_all()) == (
        401, {"status": 401, "error": "Unauthorized"})


def test_a_missing_root_key_is_400(raw):
    answer = raw.post("billable_metrics", json={"name": "unwrapped"})
    assert answer.status_code == 400
    assert answer.json() == {"status": 400, "error": "BadRequest: param is missing or the "
                                                     "value is empty or invalid: billable_metric"}


def test_evaluate_expression_client_bug_and_raw_call(client, raw):
    # lago-python-client 1.55.0 posts no body at all for evaluate_expression, so the server
    # cannot know the expression: Lago's 400 for a missing parameter.
    status, body = error_of(lambda: client.billable_metrics.evaluate_expression(
        BillableMetricEvaluateExpression(
            expression="round(event.properties.a * 1.5, 1)",
            event={"code": "c", "timestamp": 1700000000, "properties": {"a": "3.3"}})))
    assert (status, body["error"]) == (
        400, "BadRequest: param is missing or the value is empty or invalid: expression")

    # The same request with its body, as Lago documents it.
    answer = raw.post("billable_metrics/evaluate_expression", json={
        "expression": "round(event.properties.a * 1.5, 1)",
        "event": {"code": "c", "timestamp": 1700000000, "properties": {"a": "3.3"}}})
    assert answer.status_code == 200
    # 3.3 * 1.5 = 4.95, rounded half up to 1 place: 5.0, written normalized.
    assert answer.json() == {"expression_result": {"value": "5"}}
    answer = raw.post("billable_metrics/evaluate_expression", json={
        "expression": "concat(event.code, '-', event.timestamp)",
        "event": {"code": "c", "timestamp": "1700000000", "properties": {}}})
    assert answer.json() == {"expression_result": {"value": "c-1700000000"}}
    answer = raw.post("billable_metrics/evaluate_expression",
                      json={"expression": "1 +", "event": {"code": "c"}})
    assert (answer.status_code, answer.json()["error_details"]) == (
        422, {"expression": ["invalid_expression"]})
    answer = raw.post("billable_metrics/evaluate_expression",
                      json={"expression": "event.properties.missing * 2",
                            "event": {"code": "c", "properties": {}}})
    assert (answer.status_code, answer.json()["error_details"]) == (
        422, {"event": ["invalid_event"]})


def test_rate_limit_headers_and_unknown_routes(raw):
    answer = raw.get("billable_metrics")
    assert int(answer.headers["x-ratelimit-limit"]) == 1000
    assert 0 <= int(answer.headers["x-ratelimit-remaining"]) < 1000
    assert int(answer.headers["x-ratelimit-reset"]) >= 0
    missing = raw.get("wallets")
    assert (missing.status_code, missing.json()) == (
        404, {"status": 404, "error": "Not Found", "code": "resource_not_found"})
    assert isinstance(httpx.__version__, str)
