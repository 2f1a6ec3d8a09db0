"""Customers, plans (every charge model, charge filters) and subscriptions through
lago-python-client: create, find, list, update, destroy, and Lago's errors; the client's
missing auth header on child find_all calls, and the raw call that works."""

import pytest
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import (
    BillableMetric,
    BillableMetricFilter,
    Charge,
    Charges,
    Customer,
    Plan,
    Subscription,
)
from lago_python_client.models.billable_metric import BillableMetricFilters
from lago_python_client.models.charge import ChargeFilter, ChargeFilters

MODELS = [
    ("standard", {"amount": "0.25"}),
    ("graduated", {"graduated_ranges": [
        {"from_value": 0, "to_value": 100, "per_unit_amount": "0.1", "flat_amount": "1"},
        {"from_value": 101, "to_value": None, "per_unit_amount": "0.05", "flat_amount": "0"}]}),
    ("volume", {"volume_ranges": [
        {"from_value": 0, "to_value": 100, "per_unit_amount": "0.1", "flat_amount": "0"},
        {"from_value": 101, "to_value": None, "per_unit_amount": "0.05", "flat_amount": "2"}]}),
    ("package", {"amount": "10", "package_size": 100, "free_units": 50}),
    ("percentage", {"rate": "1.5", "fixed_amount": "0.1"}),
]


def error_of(call):
    with pytest.raises(LagoApiError) as caught:
        call()
    return caught.value.status_code, caught.value.response


def validation(details):
    return {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
            "error_details": details}


@pytest.fixture
def metric(client, unique):
    return client.billable_metrics.create(BillableMetric(
        name="Requests", code=f"requests_{unique}", aggregation_type="sum_agg",
        field_name="n", filters=BillableMetricFilters(__root__=[
            BillableMetricFilter(key="region", values=["us", "eu", "uk"])])))


def test_customers_upsert_find_list_destroy(client, unique):
    external_id = f"cust_{unique}"
    created = client.customers.create(Customer(
        external_id=external_id, name="Acme", email="billing@acme.test", currency="EUR",
        timezone="Europe/Paris", city="Lyon"))
    assert (created.name, created.currency, created.city) == ("Acme", "EUR", "Lyon")
    assert created.applicable_timezone == "Europe/Paris"
    assert created.lago_id.startswith("cus_")

    # Creating the same external_id again updates it (Lago's upsert): fields sent change,
    # fields not sent stay.
    again = client.customers.create(Customer(external_id=external_id, name="Acme SAS",
                                             country="FR"))
    assert again.lago_id == created.lago_id
    assert (again.name, again.email, again.city, again.country) == (
        "Acme SAS", "billing@acme.test", "Lyon", "FR")

    assert client.customers.find(external_id).name == "Acme SAS"
    listed = client.customers.find_all({"per_page": 1000})
    assert external_id in [c.external_id for c in listed["customers"]]
    assert listed["meta"]["total_count"] == len(listed["customers"])

    assert client.customers.destroy(external_id).external_id == external_id
    assert error_of(lambda: client.customers.find(external_id)) == (
        404, {"status": 404, "error": "Not Found", "code": "customer_not_found"})


def test_customer_validation(client, unique):
    status, body = error_of(lambda: client.customers.create(
        Customer(external_id=f"tz_{unique}", timezone="Mars/Olympus")))
    assert (status, body) == (422, validation({"timezone": ["invalid_timezone"]}))


def test_plan_with_every_charge_model_and_filters(client, unique, metric):
    charges = [Charge(billable_metric_id=metric.lago_id, charge_model=model,
                      properties=properties, invoice_display_name=model)
               for model, properties in MODELS]
    charges.append(Charge(
        billable_metric_id=metric.code, charge_model="standard", properties={"amount": "1"},
        filters=ChargeFilters(__root__=[
            ChargeFilter(values={"region": ["eu", "uk"], "tier": ["pro"]},
                         properties={"amount": "2"}, invoice_display_name="EU pro"),
            ChargeFilter(values={"region": ["__ALL_FILTER_VALUES__"]},
                         properties={"amount": "3"})])))
    code = f"pro_{unique}"
    plan = client.plans.create(Plan(name="Pro", code=code, interval="monthly",
                                    amount_cents=4999, amount_currency="USD",
                                    description="for teams", charges=Charges(__root__=charges)))
    assert (plan.code, plan.interval, plan.amount_cents, plan.amount_currency) == (
        code, "monthly", 4999, "USD")
    got = plan.charges.__root__
    assert [c.charge_model for c in got] == [m for m, _ in MODELS] + ["standard"]
    assert all(c.lago_billable_metric_id == metric.lago_id for c in got)
    assert all(c.billable_metric_code == metric.code for c in got)
    assert got[3].properties == {"amount": "10", "package_size": 100, "free_units": 50}
    filters = got[5].filters.__root__
    assert [(f.values, f.properties, f.invoice_display_name) for f in filters] == [
        ({"region": ["eu", "uk"], "tier": ["pro"]}, {"amount": "2"}, "EU pro"),
        # Lago's "every value" marker stands for the metric's listed values.
        ({"region": ["eu", "uk", "us"]}, {"amount": "3"}, None)]

    found = client.plans.find(code)
    assert (found.lago_id, found.description) == (plan.lago_id, "for teams")
    assert code in [p.code for p in client.plans.find_all({"per_page": 1000})["plans"]]

    # PUT: fields sent change; charges sent with their id keep it, others go.
    kept = got[0]
    updated = client.plans.update(Plan(name="Pro 2", amount_cents=5999, charges=Charges(
        __root__=[Charge(id=kept.lago_id, billable_metric_id=metric.lago_id,
                         charge_model="standard", properties={"amount": "0.3"})])), code)
    assert (updated.name, updated.amount_cents, updated.description) == (
        "Pro 2", 5999, "for teams")
    assert [(c.lago_id, c.properties) for c in updated.charges.__root__] == [
        (kept.lago_id, {"amount": "0.3"})]

    assert client.plans.destroy(code).lago_id == plan.lago_id
    assert error_of(lambda: client.plans.find(code)) == (
        404, {"status": 404, "error": "Not Found", "code": "plan_not_found"})


def test_plan_errors(client, unique, metric):
    def plan(**fields):
        base = dict(name="P", code=f"p_{unique}", interval="monthly", amount_cents=0,
                    amount_currency="USD")
        base.update(fields)
        return Plan(**base)

    missing_metric = plan(charges=Charges(__root__=[Charge(
        billable_metric_id="bm_0000000000000000000000", charge_model="standard",
        properties={"amount": "1"})]))
    assert error_of(lambda: client.plans.create(missing_metric)) == (
        404, {"status": 404, "error": "Not Found", "code": "billable_metric_not_found"})
    in_advance = plan(charges=Charges(__root__=[Charge(
        billable_metric_id=metric.lago_id, charge_model="standard", pay_in_advance=True,
        properties={"amount": "1"})]))
    assert error_of(lambda: client.plans.create(in_advance)) == (
        422, validation({"charges[0].pay_in_advance": ["not_supported"]}))
    assert error_of(lambda: client.plans.create(plan(interval="semiannual"))) == (
        422, validation({"interval": ["value_is_invalid"]}))
    assert error_of(lambda: client.plans.create(Plan(name="P", code=f"q_{unique}",
                                                     interval="monthly"))) == (
        422, validation({"amount_cents": ["value_is_mandatory"],
                         "amount_currency": ["value_is_mandatory"]}))
    client.plans.create(plan())
    assert error_of(lambda: client.plans.create(plan())) == (
        422, validation({"code": ["value_already_exist"]}))


def test_child_find_all_sends_no_auth_header(client, raw, unique, metric):
    code = f"child_{unique}"
    client.plans.create(Plan(name="Child", code=code, interval="weekly", amount_cents=0,
                             amount_currency="USD", charges=Charges(__root__=[Charge(
                                 billable_metric_id=metric.lago_id, charge_model="standard",
                                 properties={"amount": "1"})])))
    # lago-python-client 1.55.0's FindAllChildrenCommandMixin sends no headers at all, so
    # plan_charges.find_all is refused as unauthenticated.
    assert error_of(lambda: client.plan_charges.find_all(code)) == (
        401, {"status": 401, "error": "Unauthorized"})
    # The same request with the Authorization header works.
    answer = raw.get(f"plans/{code}/charges")
    assert answer.status_code == 200
    body = answer.json()
    assert [c["billable_metric_code"] for c in body["charges"]] == [metric.code]
    assert body["meta"]["total_count"] == 1


def test_subscriptions_lifecycle(client, unique, metric):
    plan = f"basic_{unique}"
    client.plans.create(Plan(name="Basic", code=plan, interval="monthly", amount_cents=100,
                             amount_currency="USD", charges=Charges(__root__=[Charge(
                                 billable_metric_id=metric.lago_id, charge_model="standard",
                                 properties={"amount": "1"})])))
    customer = f"new_{unique}"
    sub = f"s_{unique}"
    # As in Lago, an unknown external_customer_id creates the customer.
    created = client.subscriptions.create(Subscription(
        external_customer_id=customer, plan_code=plan, external_id=sub, name="Main",
        subscription_at="2026-01-15T00:00:00Z", billing_time="anniversary"))
    assert (created.status, created.plan_code, created.billing_time) == (
        "active", plan, "anniversary")
    assert created.subscription_at == "2026-01-15T00:00:00Z"
    assert client.customers.find(customer).lago_id == created.lago_customer_id

    assert client.subscriptions.find(sub).name == "Main"
    mine = client.subscriptions.find_all({"external_customer_id": customer})
    assert [s.external_id for s in mine["subscriptions"]] == [sub]

    updated = client.subscriptions.update(
        Subscription(name="Renamed", ending_at="2099-01-01T00:00:00Z"), sub)
    assert (updated.name, updated.ending_at) == ("Renamed", "2099-01-01T00:00:00Z")
    assert error_of(lambda: client.subscriptions.update(
        Subscription(subscription_at="2026-02-01T00:00:00Z"), sub)) == (
        422, validation({"subscription_at": ["modification_not_allowed"]}))

    # A plan with an active subscription cannot go.
    assert error_of(lambda: client.plans.destroy(plan)) == (
        422, validation({"plan": ["plan_in_use"]}))

    terminated = client.subscriptions.destroy(sub)
    assert terminated.status == "terminated" and terminated.terminated_at is not None
    assert client.subscriptions.find_all({"external_customer_id": customer})[
        "subscriptions"] == []
    ended = client.subscriptions.find_all({"external_customer_id": customer,
                                           "status[]": "terminated"})
    assert [s.external_id for s in ended["subscriptions"]] == [sub]

    assert error_of(lambda: client.subscriptions.create(Subscription(
        external_customer_id=customer, plan_code="no_such_plan", external_id=f"x_{unique}"))) \
        == (404, {"status": 404, "error": "Not Found", "code": "plan_not_found"})
    assert error_of(lambda: client.subscriptions.find("no_such_subscription")) == (
        404, {"status": 404, "error": "Not Found", "code": "subscription_not_found"})
