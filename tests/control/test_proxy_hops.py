"""Behind nginx (HERMES_PROXY_HOPS=1) rate limits key on each client's address; without a
trusted proxy a client cannot choose its own address with X-Forwarded-For."""

from __future__ import annotations

from dataclasses import replace

import pytest
from support.dashboard import csrf_token

from control import create_app
from control.runtime import Runtime

BROWSER = {"Accept": "text/html"}


@pytest.fixture
def app_with_hops(settings, request):
    def make(hops: int):
        configured = replace(settings, proxy_hops=hops)
        app = create_app(configured, Runtime(configured, upgrade_schema=True))
        request.addfinalizer(app.extensions["hermes"].close)
        return app
    return make


def bad_logins(client, address: str, count: int) -> list[int]:
    token = csrf_token(client, "/login")
    return [client.post("/login", headers={**BROWSER, "X-Forwarded-For": address},
                        data={"csrf_token": token, "email": "ada@example.com",
                              "password": f"wrong{i}"}).status_code for i in range(count)]


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_each_client_behind_the_proxy_has_its_own_login_budget(app_with_hops):
    client = app_with_hops(1).test_client()
    assert bad_logins(client, "198.51.100.7", 6)[-1] == 429
    # Another person behind the same nginx is not locked out by the first one.
    assert bad_logins(client, "203.0.113.9", 1) == [400]


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_without_a_trusted_proxy_forwarded_for_is_ignored(app_with_hops):
    client = app_with_hops(0).test_client()
    assert bad_logins(client, "198.51.100.7", 6)[-1] == 429
    # A new X-Forwarded-For value does not buy a fresh budget.
    assert bad_logins(client, "203.0.113.9", 1) == [429]
