"""Fixtures of the Meteroid suite: one real Odometer for the session (see
tests/clients/odometer_server.py) and the SDK pointed at its `/meteroid` dialect."""

import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import odometer_server  # noqa: E402
from meteroid import Meteroid  # noqa: E402


@pytest.fixture(scope="session")
def server():
    started = odometer_server.start()
    yield started
    started.stop()


@pytest.fixture(scope="session")
def client(server):
    # No retries: a test must see the first answer.
    return Meteroid(api_key=server.api_key, base_url=f"{server.base_url}/meteroid", max_retries=0)


@pytest.fixture
def suffix():
    """Makes the codes, aliases and names of one test its own on the shared server."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def family(client, suffix):
    return client.product_families.create(name=f"family {suffix}")
