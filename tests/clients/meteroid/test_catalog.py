"""Product families, customers and billable metrics through the SDK: shapes, the seed's PATCH,
archive/unarchive, paging, and every error as the SDK's exception with Meteroid's body.code."""

import pytest
from meteroid import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    Meteroid,
    NotFoundError,
)
from meteroid.models import (
    DoubleSegmentationMatrix,
    LinkedSegmentationMatrix,
    MetricDimension,
    MetricFilter,
    UnitConversion,
)

AGGREGATIONS = ["COUNT", "SUM", "MIN", "MAX", "MEAN", "LATEST", "COUNT_DISTINCT"]
ROUNDINGS = ["UP", "DOWN", "NEAREST", "NEAREST_HALF", "NEAREST_DECILE", "NONE"]


def test_wrong_key_is_unauthorized(server):
    stranger = Meteroid(api_key="odo_not_a_key", base_url=f"{server.base_url}/meteroid",
                        max_retries=0)
    with pytest.raises(AuthenticationError) as err:
        stranger.product_families.create(name="x")
    assert err.value.status_code == 401
    assert err.value.body.code == "UNAUTHORIZED"


def test_wire_format_omits_absent_members(client, family, suffix):
    raw = client.metrics.with_raw_response.create(
        name="bare", code=f"bare_{suffix}", aggregation_type="COUNT", product_family_id=family.id)
    assert raw.status_code == 201
    body = raw.http_response.json()
    assert sorted(body) == ["aggregation_type", "code", "created_at", "id", "name",
                            "product_family_id"]
    # RFC 3339 with milliseconds and Z.
    assert len(body["created_at"]) == 24 and body["created_at"].endswith("Z")
    listed = client.metrics.with_raw_response.list(search=f"bare_{suffix}")
    assert listed.http_response.json() == {
        "data": [{k: body[k] for k in ["id", "name", "code", "aggregation_type", "created_at"]}],
        "pagination_meta": {"page": 0, "per_page": 10, "total_items": 1, "total_pages": 1},
    }
    gone = client.metrics.with_raw_response.archive(body["id"])
    assert gone.status_code == 204 and gone.http_response.content == b""


def test_product_families(client, suffix):
    created = client.product_families.create(name=f"infra {suffix}")
    assert created.id.startswith("pf_") and created.name == f"infra {suffix}"
    assert client.product_families.retrieve(created.id).name == f"infra {suffix}"
    listed = [f.id for f in client.product_families.list(search=suffix)]
    assert listed == [created.id]
    with pytest.raises(NotFoundError) as err:
        client.product_families.retrieve("pf_0000000000000000000000")
    assert err.value.body.code == "NOT_FOUND"


def test_metric_of_every_aggregation_and_segmentation(client, family, suffix):
    matrices = [
        None,
        MetricDimension(key="region", values=["eu", "us"]),
        DoubleSegmentationMatrix(dimension1=MetricDimension(key="region", values=["eu"]),
                                 dimension2=MetricDimension(key="tier", values=["pro", "free"])),
        LinkedSegmentationMatrix(dimension1_key="provider", dimension2_key="region",
                                 values={"aws": ["us-east-1"], "gcp": ["europe-west1"]}),
    ]
    for i, aggregation in enumerate(AGGREGATIONS):
        for j, matrix in enumerate(matrices):
            key = None if aggregation == "COUNT" else "bytes"
            kwargs = {"segmentation_matrix": matrix} if matrix is not None else {}
            metric = client.metrics.create(
                name=f"m {i}-{j} {suffix}", code=f"code_{suffix}", aggregation_type=aggregation,
                product_family_id=family.id, aggregation_key=key, **kwargs)
            assert metric.id.startswith("bm_")
            assert metric.code == f"code_{suffix}"  # several metrics read one event code
            assert metric.aggregation_type == aggregation
            assert metric.aggregation_key == key
            assert metric.product_family_id == family.id
            assert metric.segmentation_matrix == matrix
            assert metric.created_at.tzinfo is not None
            assert metric.archived_at is None and metric.description is None
            assert metric.unit_conversion is None and metric.usage_group_key is None
            assert client.metrics.retrieve(metric.id) == metric


def test_every_unit_conversion_rounding_round_trips(client, family, suffix):
    for rounding in ROUNDINGS:
        conversion = UnitConversion(factor=1024, rounding=rounding)
        metric = client.metrics.create(
            name=f"kb {rounding} {suffix}", code=f"bytes_{suffix}", aggregation_type="SUM",
            aggregation_key="bytes", product_family_id=family.id, unit_conversion=conversion,
            usage_group_key="cluster",
            filters=[MetricFilter(property="tier", op="IN", values=["pro", "team"])])
        again = client.metrics.retrieve(metric.id)
        assert again.unit_conversion == conversion
        assert again.usage_group_key == "cluster"
        assert again.filters == [MetricFilter(property="tier", op="IN", values=["pro", "team"])]


def test_seed_patch_changes_and_nulls_clear(client, family, suffix):
    metric = client.metrics.create(
        name="API calls", code=f"api_{suffix}", aggregation_type="SUM", aggregation_key="n",
        product_family_id=family.id, description="calls to the public API",
        segmentation_matrix=MetricDimension(key="region", values=["eu"]),
        unit_conversion=UnitConversion(factor=1000, rounding="UP"))

    double = DoubleSegmentationMatrix(dimension1=MetricDimension(key="region", values=["eu", "us"]),
                                      dimension2=MetricDimension(key="plan", values=["pro"]))
    patched = client.metrics.update(
        metric.id, name="API requests", description="every request",
        segmentation_matrix=double, unit_conversion=UnitConversion(factor=10, rounding="NEAREST"))
    assert patched.name == "API requests"
    assert patched.description == "every request"
    assert patched.segmentation_matrix == double
    assert patched.unit_conversion == UnitConversion(factor=10, rounding="NEAREST")
    # Immutable members are untouched.
    assert (patched.code, patched.aggregation_type, patched.aggregation_key) == (
        f"api_{suffix}", "SUM", "n")

    # Absent members stay; null clears (Meteroid itself cannot clear over REST).
    only_name = client.metrics.update(metric.id, name="API requests v2")
    assert only_name.description == "every request" and only_name.segmentation_matrix == double
    cleared = client.metrics.update(metric.id, description=None, segmentation_matrix=None,
                                    unit_conversion=None)
    assert cleared.name == "API requests v2"
    assert cleared.description is None
    assert cleared.segmentation_matrix is None
    assert cleared.unit_conversion is None
    assert client.metrics.retrieve(metric.id) == cleared

    linked = LinkedSegmentationMatrix(dimension1_key="provider", dimension2_key="region",
                                      values={"aws": ["us-east-1", "eu-west-1"]})
    assert client.metrics.update(metric.id, segmentation_matrix=linked).segmentation_matrix == linked


def test_patch_errors(client, family, suffix):
    metric = client.metrics.create(name="n", code=f"c_{suffix}", aggregation_type="COUNT",
                                   product_family_id=family.id)
    with pytest.raises(BadRequestError) as err:
        client.metrics.update(metric.id, name=None)
    assert err.value.body.code == "BAD_REQUEST"
    with pytest.raises(BadRequestError) as err:
        client.metrics.update(metric.id, extra_body={"code": "other"})
    assert err.value.body.code == "BAD_REQUEST" and "immutable" in err.value.body.message
    with pytest.raises(BadRequestError) as err:
        client.metrics.update(metric.id, extra_body={"aggregation_type": "SUM"})
    assert err.value.body.code == "BAD_REQUEST" and "immutable" in err.value.body.message
    with pytest.raises(BadRequestError) as err:
        client.metrics.update(metric.id, unit_conversion=UnitConversion(factor=0, rounding="UP"))
    assert err.value.body.code == "BAD_REQUEST"
    with pytest.raises(NotFoundError) as err:
        client.metrics.update("bm_0000000000000000000000", name="x")
    assert err.value.body.code == "NOT_FOUND"


def test_create_errors(client, family, suffix):
    with pytest.raises(NotFoundError) as err:
        client.metrics.create(name="n", code="c", aggregation_type="COUNT",
                              product_family_id="pf_0000000000000000000000")
    assert err.value.body.code == "NOT_FOUND"
    with pytest.raises(BadRequestError) as err:
        client.metrics.create(name="n", code=f"c_{suffix}", aggregation_type="SUM",
                              product_family_id=family.id)
    assert err.value.body.code == "BAD_REQUEST"
    assert "aggregation_key is required" in err.value.body.message
    with pytest.raises(BadRequestError) as err:
        client.metrics.create(name="n", code=f"c_{suffix}", aggregation_type="COUNT",
                              product_family_id=family.id,
                              segmentation_matrix=MetricDimension(key="region", values=[]))
    assert err.value.body.code == "BAD_REQUEST"
    with pytest.raises(NotFoundError) as err:
        client.metrics.retrieve("bm_0000000000000000000000")
    assert err.value.body.code == "NOT_FOUND"
    with pytest.raises(NotFoundError) as err:
        client.metrics.retrieve("not-an-id")
    assert err.value.body.code == "NOT_FOUND"


def test_archive_and_unarchive(client, family, suffix):
    metric = client.metrics.create(name=f"arch {suffix}", code=f"c_{suffix}",
                                   aggregation_type="COUNT", product_family_id=family.id)
    assert client.metrics.archive(metric.id) is None
    assert [m.id for m in client.metrics.list(search=f"arch {suffix}")] == []
    archived = client.metrics.retrieve(metric.id)
    assert archived.archived_at is not None
    assert client.metrics.unarchive(metric.id) is None
    assert [m.id for m in client.metrics.list(search=f"arch {suffix}")] == [metric.id]
    assert client.metrics.retrieve(metric.id).archived_at is None
    for call in (client.metrics.archive, client.metrics.unarchive):
        with pytest.raises(NotFoundError) as err:
            call("bm_0000000000000000000000")
        assert err.value.body.code == "NOT_FOUND"


def test_listing_across_pages(client, family, suffix):
    names = [f"page {suffix} {n:02d}" for n in range(7)]
    created = {}
    for name in reversed(names):
        created[name] = client.metrics.create(name=name, code=f"c_{suffix}",
                                              aggregation_type="COUNT",
                                              product_family_id=family.id).id
    pages = client.metrics.list(product_family_id=family.id, per_page=3)
    listed = list(pages)
    assert [m.name for m in listed] == names  # default order: name.asc, across 3 pages
    assert [m.id for m in listed] == [created[n] for n in names]
    last = client.metrics.list(product_family_id=family.id, per_page=3, page=2)
    assert (last.pagination_meta.page, last.pagination_meta.per_page,
            last.pagination_meta.total_items, last.pagination_meta.total_pages) == (2, 3, 7, 3)
    assert [m.name for m in last.data] == names[6:]
    desc = list(client.metrics.list(product_family_id=family.id, order_by="name.desc"))
    assert [m.name for m in desc] == list(reversed(names))
    assert [m.name for m in client.metrics.list(search=f"page {suffix} 03")] == [names[3]]
    with pytest.raises(BadRequestError) as err:
        list(client.metrics.list(order_by="colour.asc"))
    assert err.value.body.code == "BAD_REQUEST"
    with pytest.raises(BadRequestError) as err:
        list(client.metrics.list(per_page=101))
    assert err.value.body.code == "BAD_REQUEST"


def test_customers(client, suffix):
    alias = f"acme-{suffix}"
    acme = client.customers.create(currency="EUR", name="Acme", alias=alias,
                                   invoicing_emails=["billing@acme.test"])
    assert acme.id.startswith("cus_")
    assert (acme.alias, acme.name, acme.currency) == (alias, "Acme", "EUR")
    assert acme.invoicing_emails == ["billing@acme.test"]
    assert client.customers.retrieve(alias) == acme
    assert client.customers.retrieve(acme.id) == acme

    plain = client.customers.create(currency="USD", name=f"Plain {suffix}")
    assert plain.alias is None
    assert client.customers.retrieve(plain.id).name == f"Plain {suffix}"

    renamed = client.customers.update(alias, name="Acme Corp", phone="+33 1 00 00 00 00")
    assert renamed.name == "Acme Corp" and renamed.phone == "+33 1 00 00 00 00"
    assert renamed.currency == "EUR"

    replaced = client.customers.replace(
        acme.id, currency="USD", custom_taxes=[], invoicing_emails=[],
        invoicing_entity_id=acme.invoicing_entity_id, name="Acme Corp", alias=alias)
    assert (replaced.currency, replaced.invoicing_emails, replaced.phone) == ("USD", [], None)
    assert client.customers.retrieve(alias) == replaced

    with pytest.raises(ConflictError) as err:
        client.customers.create(currency="EUR", alias=alias)
    assert err.value.body.code == "CONFLICT"
    with pytest.raises(BadRequestError) as err:
        client.customers.update(alias, alias=f"other-{suffix}")
    assert err.value.body.code == "BAD_REQUEST"
    with pytest.raises(NotFoundError) as err:
        client.customers.retrieve(f"nobody-{suffix}")
    assert err.value.body.code == "NOT_FOUND"

    assert client.customers.archive(alias) is None
    assert alias not in [c.alias for c in client.customers.list(search=suffix)]
    assert alias in [c.alias for c in client.customers.list(search=suffix, archived=True)]
    assert client.customers.unarchive(acme.id) is None
    listed = list(client.customers.list(search=suffix, order_by="name.asc"))
    assert [c.name for c in listed] == ["Acme Corp", f"Plain {suffix}"]
