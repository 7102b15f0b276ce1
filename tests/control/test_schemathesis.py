"""Schemathesis against the control app running under gunicorn, from its own ``/openapi.json``.

Every operation gets up to ``EXAMPLES`` (webhooks: ``WEBHOOK_EXAMPLES``) requests, derandomized:
its documented example, schema-conforming and (webhooks) schema-violating cases. Two thirds of the
webhook requests carry a valid Stripe signature or Telegram secret, so generated bodies also get
past the verifier. Each answer must be no server error and conform to
the document (status, content type, headers, body schema); a rejected request must store nothing
(no row, queued task or bus entry). The counts are printed at the end of the run.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support.fuzz import examples
from support.serve import free_port, wait_until
from support.webhooks import STRIPE_SECRET, TELEGRAM_SECRET, stored_state

from control.db import database
from control.services import jobs, linking
from control.services.secrets_box import box_from_settings
from control.web.openapi_schemas import HANDLED_STRIPE_EVENTS
from standins.stripe_events import sign
from standins.whatsapp_api import sign as whatsapp_sign

ROOT = Path(__file__).resolve().parents[2]
# Generated requests per operation: the webhooks' bodies are where the parsing is, the rest
# have at most a path parameter (hypothesis stops early when it runs out of distinct cases).
EXAMPLES, WEBHOOK_EXAMPLES = examples(50), examples(150)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
# No route may answer 503 here: database and bus are up, and a web-only gunicorn process is
# ready without workers (they run in `hermes worker`).
STATE_503: set[str] = set()
CHAT = 777003
WHATSAPP_SECRET = "whatsapp-fuzz-secret"
_ids = itertools.count()


@pytest.fixture
def gunicorn(settings, runtime):
    """``control:create_app()`` under gunicorn (2 workers), as the control role runs it, on the
    database and bus that ``runtime`` (this process's view) reads."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HERMES_DATA_DIR": settings.data_dir,
           "DATABASE_URL": settings.database_url, "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
           "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET, "TELEGRAM_BOT_TOKEN": "123456:TEST",
           "WHATSAPP_APP_SECRET": WHATSAPP_SECRET}
    log = open(Path(settings.data_dir) / "gunicorn.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
                                "--workers", "2", "control:create_app()"],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, (Path(settings.data_dir) / "gunicorn.log").read_text()
        try:
            return httpx.get(base + "/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, 60, "gunicorn /healthz")
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        log.close()


@pytest.fixture
def api_token(runtime, tenant):
    """A Jobs API token of the tenant with every scope, so generated requests to ``/api/jobs``
    get past the token check (2 in 3 carry it)."""
    with database.connection_context():
        return jobs.create_token(tenant, "fuzz", list(jobs.SCOPES),
                                 box_from_settings(runtime.settings))[1]


@pytest.fixture
def linked_chat(runtime, tenant):
    """A private chat linked to a tenant, so signed updates from it reach the bus."""
    with database.connection_context():
        linking.redeem(linking.current_token(tenant, 3600).token, "telegram", str(CHAT), str(CHAT))
    return CHAT


def _signed(case, label: str, event_type: str | None) -> tuple[dict, dict]:
    """Headers and transport arguments that make ``case`` pass the webhook's verifier.

    A well-typed id is made unique first: hypothesis favours small values, and a repeated id is
    (rightly) answered as a duplicate before the event or update is looked at. ``event_type``,
    when given, replaces a Stripe event's type with one the billing service acts on (generated
    types are almost never one of the four).
    """
    body, serial = case.body, next(_ids)
    if label == "POST /webhooks/telegram":
        if isinstance(body, dict) and type(body.get("update_id")) is int:
            body["update_id"] = 10_000_000 + serial
        return {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}, {}
    if label == "POST /webhooks/whatsapp":
        data = (b"" if isinstance(body, NotSet) else body if isinstance(body, bytes)
                else json.dumps(body).encode())
        return {"X-Hub-Signature-256": whatsapp_sign(data, WHATSAPP_SECRET)}, {"data": data}
    if isinstance(body, dict) and isinstance(body.get("id"), str):
        body["id"] = f"evt_fuzz_{serial}"
        if event_type is not None:
            body["type"] = event_type
    body = (b"" if isinstance(case.body, NotSet) else case.body if isinstance(case.body, bytes)
            else json.dumps(case.body).encode())
    return {"Stripe-Signature": sign(body, STRIPE_SECRET)}, {"data": body}


def _from_chat(update, chat_id: int) -> None:
    """Move a generated private-chat message into ``chat_id``, so it reaches the tenant's bus."""
    message = update.get("message") if isinstance(update, dict) else None
    chat = message.get("chat") if isinstance(message, dict) else None
    if isinstance(chat, dict) and chat.get("type") == "private":
        chat["id"] = chat_id


@dataclass
class Run:
    """What a run saw: status codes and webhook outcomes per operation, failed checks, and what
    was stored after the last request."""

    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    outcomes: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    failures: list[tuple[str, int, str]] = field(default_factory=list)
    state: dict[str, int] | None = None  # what was stored after the last request

    def server_errors(self) -> dict[str, dict[int, int]]:
        """``{operation: {5xx status: count}}``, the documented not-ready state of /readyz aside."""
        return {label: {s: n for s, n in tally.items() if s >= 500}
                for label, tally in self.statuses.items()
                if label not in STATE_503 and any(s >= 500 for s in tally)}


def _fuzz(schema, operation, runtime, chat_id: int, run: Run, api_token: str) -> None:
    """Send ``operation``'s examples and generated cases; record and check every answer.

    What is stored is read once per request: the state after one request is the state before
    the next (the web-only gunicorn runs no tasks), so a rejected request must leave it as is.
    """
    label = operation.label
    webhook = label.startswith("POST /webhooks/")
    jobs_api = label.split(" ", 1)[1].startswith("/api/jobs")
    checks = [c for c in CHECKS if not (c is not_a_server_error and label in STATE_503)]
    strategy = st.one_of(*schema.get_strategies_from_examples(operation),
                         operation.as_strategy(GenerationMode.POSITIVE),
                         *([operation.as_strategy(GenerationMode.NEGATIVE)] if webhook else []))

    @fuzz_settings(max_examples=WEBHOOK_EXAMPLES if webhook else EXAMPLES, deadline=None,
                   derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(case=strategy, signed=st.sampled_from([True, True, False] if webhook or jobs_api
                                                 else [False]),
           event_type=st.sampled_from([None, *HANDLED_STRIPE_EVENTS]))
    def fuzz(case, signed, event_type):
        if jobs_api:
            headers, transport = ({"Authorization": f"Bearer {api_token}"} if signed else {}), {}
        else:
            headers, transport = _signed(case, label, event_type) if signed else ({}, {})
        if signed and label == "POST /webhooks/telegram":
            _from_chat(case.body, chat_id)
        before = run.state if run.state is not None else stored_state(runtime)
        response = case.call(headers=headers, **transport)
        run.statuses[label][response.status_code] += 1
        if webhook and response.status_code == 200:
            run.outcomes[label][response.json()["outcome"]] += 1
        try:
            case.validate_response(response, checks=checks, headers=headers,
                                   transport_kwargs=transport)
        except (AssertionError, BaseExceptionGroup) as exc:
            run.failures.append((label, response.status_code, str(exc)[:2000]))
        run.state = stored_state(runtime)
        if response.status_code >= 400:
            assert run.state == before, (label, response.status_code)

    fuzz()


def test_schemathesis_finds_no_server_error_and_stores_nothing_for_rejected_requests(
        gunicorn, runtime, linked_chat, api_token, capsys):
    schema = schemathesis.openapi.from_url(gunicorn + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    run = Run()
    for operation in operations:
        _fuzz(schema, operation, runtime, linked_chat, run, api_token)

    total = sum(sum(tally.values()) for tally in run.statuses.values())
    server_errors = run.server_errors()
    with capsys.disabled():  # the counts are the run's result: show them in every run
        print(f"\nschemathesis: {total} requests over {len(operations)} operations, "
              f"{sum(sum(v.values()) for v in server_errors.values())} 5xx")
        for label, tally in sorted(run.statuses.items()):
            print(f"  {label}: {dict(sorted(tally.items()))} {dict(run.outcomes.get(label, {}))}")
    assert not run.failures, run.failures[:5]
    assert not server_errors
    # Generated input got past the verifiers and the parsers, all the way to the services.
    assert run.outcomes["POST /webhooks/stripe"]["processed"] > 0
    assert run.outcomes["POST /webhooks/telegram"]["published"] > 0
    assert run.statuses["POST /api/jobs"][201] > 0 and run.statuses["GET /api/jobs"][200] > 0
