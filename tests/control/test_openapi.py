"""``GET /openapi.json`` is a valid OpenAPI 3.1 document describing every route the app serves,
and its request schemas accept the payloads Stripe and Telegram really publish."""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from control import create_app
from control.runtime import Runtime
from control.settings import Settings
from standins import stripe_events as se
from standins.telegram_updates import published_update, text_update

TELEGRAM_FIXTURES = sorted(
    str(path.relative_to(resources.files("standins") / "payloads" / "telegram")).removesuffix(".json")
    for path in (resources.files("standins") / "payloads" / "telegram").rglob("*.json"))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    settings = Settings(data_dir=str(tmp_path_factory.mktemp("openapi")))
    app = create_app(settings, Runtime(settings, upgrade_schema=True))
    yield app
    app.extensions["hermes"].close()


@pytest.fixture(scope="module")
def document(app):
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    return response.json


def _served(app) -> set[tuple[str, str]]:
    """Every (OpenAPI path, method) the app's url_map answers."""
    return {(re.sub(r"<(?:[^<>]*:)?(\w+)>", r"{\1}", rule.rule), method.lower())
            for rule in app.url_map.iter_rules() for method in rule.methods}


def _described(document) -> set[tuple[str, str]]:
    return {(path, method) for path, ops in document["paths"].items() for method in ops}


def test_openapi_json_is_a_valid_openapi_3_1_document(document):
    validate(document)
    assert document["openapi"] == "3.1.0"


def test_every_route_and_method_of_the_app_is_described(app, document):
    assert _described(document) == _served(app)
    for path in ("/webhooks/stripe", "/webhooks/telegram", "/healthz", "/readyz", "/metrics",
                 "/openapi.json"):
        assert path in document["paths"]


def test_a_route_added_without_a_description_is_missing_from_the_document(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"))
    app = create_app(settings, Runtime(settings, upgrade_schema=True))
    try:
        app.add_url_rule("/undescribed/<int:item>", "undescribed", lambda item: "", methods=["PUT"])
        document = app.test_client().get("/openapi.json").json
    finally:
        app.extensions["hermes"].close()
    assert ("/undescribed/{item}", "put") in _served(app) - _described(document)


def test_every_operation_documents_its_error_bodies_with_the_error_schema(document):
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            assert op["responses"], (path, method)
            # The LLM gateway answers in the providers' error formats, which their SDKs parse.
            if path.startswith("/llm/"):
                continue
            for code, response in op["responses"].items():
                if code.startswith(("4", "5")) and method != "head" and path != "/readyz":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema["allOf"][0] == {"$ref": "#/components/schemas/Error"}, (path, code)


def test_webhooks_document_their_auth_headers_and_every_answer(document):
    stripe = document["paths"]["/webhooks/stripe"]["post"]
    telegram = document["paths"]["/webhooks/telegram"]["post"]
    assert [(p["name"], p["required"]) for p in stripe["parameters"]] == [("Stripe-Signature", True)]
    assert [(p["name"], p["required"]) for p in telegram["parameters"]] == [
        ("X-Telegram-Bot-Api-Secret-Token", True)]
    assert set(stripe["responses"]) == {"200", "400", "413", "503"}
    assert set(telegram["responses"]) == {"200", "400", "401", "413", "503"}


def _validator(document, name: str) -> Draft202012Validator:
    root = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return Draft202012Validator(root)


@pytest.mark.parametrize("name", TELEGRAM_FIXTURES)
def test_published_telegram_updates_match_the_update_schema(document, name):
    errors = list(_validator(document, "TelegramUpdate").iter_errors(published_update(name)))
    assert not errors, [e.message for e in errors]


STRIPE_EVENTS = {
    "checkout_latest": se.checkout_completed(email="a@example.com", customer="cus_1",
                                             subscription="sub_1"),
    "checkout_2023": se.checkout_completed(email="a@example.com", customer="cus_1",
                                           subscription="sub_1", shape="2023"),
    "subscription_latest": se.subscription_created(customer="cus_1", subscription="sub_1",
                                                   plan="light"),
    "subscription_2023": se.subscription_created(customer="cus_1", subscription="sub_1",
                                                 plan="heavy", shape="2023"),
    "payment_intent_event": json.loads(
        (resources.files("standins") / "payloads" / "stripe" / "event.json").read_text()),
    "latest_event": json.loads(
        (resources.files("standins") / "payloads" / "stripe" / "latest" / "event.json").read_text()),
}


@pytest.mark.parametrize("name", sorted(STRIPE_EVENTS))
def test_published_stripe_events_match_the_event_schema(document, name):
    errors = list(_validator(document, "StripeEvent").iter_errors(STRIPE_EVENTS[name]))
    assert not errors, [e.message for e in errors]


def test_a_telegram_update_with_two_kinds_or_a_string_id_is_outside_the_schema(document):
    validator = _validator(document, "TelegramUpdate")
    update = text_update(1, 42, "hi")
    assert validator.is_valid(update)
    assert not validator.is_valid({**update, "edited_message": update["message"]})
    assert not validator.is_valid({**update, "update_id": "1"})


def _error_body_validator(document, response_name: str) -> Draft202012Validator:
    schema = document["components"]["responses"][response_name]["content"]["application/json"]
    return Draft202012Validator({**schema["schema"], "components": document["components"]})


def test_methods_a_path_does_not_list_answer_405_as_documented(app, document):
    client = app.test_client()
    validator = _error_body_validator(document, "MethodNotAllowed")
    for path, ops in document["paths"].items():
        method = "DELETE" if "delete" not in ops else "PATCH"
        response = client.open(path.replace("{filename}", "x.css").replace("{tenant_id}", "1"),
                               method=method)
        assert response.status_code == 405, path
        assert validator.is_valid(response.json), response.json
        allowed = {m.strip() for m in response.headers["Allow"].split(",")}
        assert {op.upper() for op in ops} <= allowed, path  # RFC 9110: a 405 names them


def test_an_unknown_path_answers_404_as_documented(app, document):
    response = app.test_client().get("/no/such/path")
    assert response.status_code == 404
    assert _error_body_validator(document, "NotFound").is_valid(response.json)
