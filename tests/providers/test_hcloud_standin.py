"""The hcloud API stand-in speaks the published shapes the official library relies on."""

from __future__ import annotations

import httpx
import pytest
from hcloud import APIException

from infra.hetzner_api import ServerTypeRejected, list_servers, validate_server_types


def test_listing_pages_through_label_selected_servers(hcloud_api, hcloud_client):
    for i in range(60):
        hcloud_api.add_server(f"s{i}", {"app": "hermes", "env": "test", "n": str(i % 3)})
    hcloud_api.add_server("other", {"app": "other"})

    assert len(list_servers(hcloud_client, {"app": "hermes", "env": "test"})) == 60
    page = httpx.get(f"{hcloud_api.url}/servers", params={"label_selector": "app=hermes",
                                                          "per_page": 25, "page": 3},
                     headers={"Authorization": f"Bearer {hcloud_api.token}"}).json()
    assert page["meta"]["pagination"] == {"page": 3, "per_page": 25, "previous_page": 2,
                                          "next_page": None, "last_page": 3,
                                          "total_entries": 60}
    selected = hcloud_client.servers.get_all(label_selector="app=hermes,n in (0,1),!missing")
    assert len(selected) == 40


def test_rate_limit_answer_carries_ratelimit_headers(hcloud_api):
    hcloud_api.inject(429)
    response = httpx.get(f"{hcloud_api.url}/server_types",
                         headers={"Authorization": f"Bearer {hcloud_api.token}"})
    assert response.status_code == 429
    assert response.headers["RateLimit-Limit"] == "3600"
    assert response.headers["RateLimit-Remaining"] == "0"
    assert int(response.headers["RateLimit-Reset"]) > 0
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_bad_token_is_refused(hcloud_api):
    from infra.hetzner_api import make_client

    with pytest.raises(APIException) as info:
        make_client("wrong", hcloud_api.url).server_types.get_all()
    assert info.value.code == "unauthorized"


def test_server_type_validation_follows_the_catalogue(hcloud_client):
    valid = validate_server_types(hcloud_client, ["cx23", "cx43"], "fsn1")
    assert (valid["cx43"].cores, valid["cx43"].memory_gb) == (8, 16.0)
    with pytest.raises(ServerTypeRejected, match="cx23"):  # names current alternatives
        validate_server_types(hcloud_client, ["cx41"], "fsn1")
    with pytest.raises(ServerTypeRejected, match="unavailable after 2026-01-01"):
        validate_server_types(hcloud_client, ["cx42"], "fsn1")
    with pytest.raises(ServerTypeRejected, match="not available in ash"):
        validate_server_types(hcloud_client, ["cx23"], "ash")


def test_deprecated_types_cannot_be_created(hcloud_client):
    from hcloud.images import Image
    from hcloud.server_types import ServerType

    with pytest.raises(APIException) as info:
        hcloud_client.servers.create(name="x", server_type=ServerType(name="cx22"),
                                     image=Image(name="ubuntu-22.04"))
    assert info.value.code == "invalid_input"
