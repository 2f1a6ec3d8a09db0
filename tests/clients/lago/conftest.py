"""Fixtures of the Lago client suite: one real Odometer (tests/clients/odometer_server.py) for
the session, and lago-python-client's Client pointed at its /lago/ prefix. The trailing slash
matters: the client joins "api/v1/" onto api_url with urljoin."""

import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import odometer_server  # noqa: E402
from lago_python_client.client import Client  # noqa: E402


@pytest.fixture(scope="session")
def server():
    started = odometer_server.start()
    yield started
    started.stop()


@pytest.fixture(scope="session")
def client(server):
    return Client(api_key=server.api_key, api_url=server.base_url + "/lago/")


@pytest.fixture
def unique():
    """A fresh suffix, so each test's codes and ids are its own."""
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def raw(server):
    """Plain HTTP to the Lago prefix, with the key: for what the client cannot send."""
    import httpx

    with httpx.Client(
        base_url=server.base_url + "/lago/api/v1/",
        headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=10,
    ) as http:
        yield http
