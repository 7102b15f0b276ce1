"""An operator in a real browser runs mission control (issue 21): signs in with a TOTP code,
sees a failed provisioning on the overview, opens its timeline, retries it, resolves the
attention item and requeues a dead letter; each change leaves one audit row.

The control app (``control.create_app``) serves real HTTP on loopback (werkzeug's server in a
thread) on a SQLite database and bus; headless chromium drives it through Playwright.
Screenshots of every page at 1280 px go to the test's output directory
(pytest-playwright's ``output_path``, under ``test-results/``).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pyotp
import pytest
from support.serve import free_port

from control import create_app
from control.db import database
from control.models import AttentionItem, AuditEntry, Machine, Tenant, utcnow
from control.runtime import Runtime
from control.services import operators
from control.services.audit import Actor
from control.settings import Settings
from wire.bus import Delivery

pytest.importorskip("playwright")

EMAIL, PASSWORD = "root@ops.example", "correct horse battery"
ERROR = "Hetzner refused: server_limit_exceeded"
TIMEOUT_MS = 30_000


@pytest.fixture
def console(tmp_path):
    """The control app on a free port, seeded with a failed provisioning, its attention item,
    a dead letter and an admin; yields ``(base URL, runtime, TOTP secret, tenant id)``."""
    from werkzeug.serving import make_server

    settings = Settings(data_dir=str(tmp_path / "data"))
    runtime = Runtime(settings, upgrade_schema=True)
    app = create_app(settings, runtime)
    with database.connection_context():
        tenant = Tenant.create(email="grace@example.com", plan="light", status="active")
        Machine.create(tenant=tenant, plan="light", state="failed", attempts=3,
                       provisioning_at=utcnow(), failed_at=utcnow(), detail=ERROR)
        AttentionItem.create(kind="provisioning_failed", subject=str(tenant.id), detail=ERROR)
        _op, uri = operators.add(EMAIL, "admin", PASSWORD, runtime.secrets_box,
                                 Actor(name="test", role="cli", source="test"))
    stream = f"hermes:messages:{tenant.id}"
    payload = json.dumps({"message_id": "m-dead", "text": "hello"})
    runtime.bus.append(stream, payload)
    (taken,) = runtime.bus.read([stream], "agent", "c1")
    runtime.bus.dead_letter(Delivery(stream, taken.entry_id, payload, 5), "agent", "handler crashed")
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", runtime, pyotp.parse_uri(uri).secret, tenant.id
    finally:
        server.shutdown()
        thread.join(10)
        runtime.close()


def shoot(page, output_path: str, name: str) -> None:
    folder = Path(output_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=folder / f"{name}-1280px.png", full_page=True)


def _audit() -> list[tuple[str, str]]:
    with database.connection_context():
        return [(r.action, r.actor) for r in AuditEntry.select().order_by(AuditEntry.id)]


def test_an_operator_retries_a_failed_provisioning_resolves_and_requeues(console, browser,
                                                                         output_path):
    base, runtime, secret, tenant_id = console
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=base)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)

    assert page.goto("/ops").status == 404  # invisible until signed in
    page.goto("/ops/login")
    page.get_by_label("E-mail").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Code from your authenticator app").fill(pyotp.TOTP(secret).now())
    shoot(page, output_path, "01-login")
    page.get_by_role("button", name="Sign in").click()

    page.wait_for_url(f"{base}/ops")
    assert page.get_by_test_id("machines-failed").inner_text() == "1"
    assert page.get_by_test_id("attention-open").inner_text() == "1"
    assert page.get_by_test_id("dead-letters").inner_text() == "1"
    shoot(page, output_path, "02-overview")

    page.get_by_test_id("failed-job").click()
    page.wait_for_url(f"{base}/ops/provisioning/{tenant_id}")
    assert page.get_by_test_id("job-error").inner_text() == ERROR
    shoot(page, output_path, "03-timeline-failed")
    page.get_by_role("button", name="Retry provisioning").click()
    page.get_by_text("requested.").wait_for()
    assert page.get_by_test_id("job-state").inner_text() == "requested"
    shoot(page, output_path, "04-timeline-retried")
    assert tenant_id in runtime.tasks.queued_provisioning()
    page.goto("/ops/provisioning")
    shoot(page, output_path, "05-provisioning")

    page.get_by_role("link", name="Attention", exact=True).click()
    page.get_by_label("Resolution note").fill("raised the server limit; retried")
    shoot(page, output_path, "06-attention")
    page.get_by_role("button", name="Resolve").click()
    page.get_by_test_id("attention-empty").wait_for()
    with database.connection_context():
        assert AttentionItem.get().resolution == "raised the server limit; retried"

    page.get_by_role("link", name="Dead letters", exact=True).click()
    assert "handler crashed" in page.get_by_test_id("dead-letter").inner_text()
    shoot(page, output_path, "07-dead-letters")
    page.get_by_role("button", name="Requeue").click()
    page.get_by_test_id("dead-letters-empty").wait_for()
    redelivered = runtime.bus.read([f"hermes:messages:{tenant_id}"], "agent", "c2", count=10)
    assert [json.loads(d.payload)["message_id"] for d in redelivered] == ["m-dead"]

    page.get_by_role("link", name="Audit", exact=True).click()
    assert page.get_by_test_id("audit-row").count() == 4  # the CLI-style add, then three
    shoot(page, output_path, "08-audit")
    assert _audit() == [("operator.add", "test"), ("provisioning.retry", EMAIL),
                        ("attention.resolve", EMAIL), ("dead_letter.requeue", EMAIL)]
    for number, (link, testid) in enumerate([("Fleet", "fleet-row"), ("Tenants", "tenant-row"),
                                             ("Channels", "channels"),
                                             ("History", "chart-messages")], start=9):
        page.get_by_role("link", name=link, exact=True).click()
        page.get_by_test_id(testid).first.wait_for()
        shoot(page, output_path, f"{number:02d}-{link.lower()}")
    context.close()
