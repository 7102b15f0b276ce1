"""Mission control (/ops, issue 21): operators sign in with password and TOTP, the console is
invisible to everyone else, roles limit changes, and every change leaves one audit row."""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import timedelta

import pyotp
import pytest
from click.testing import CliRunner
from support.serve import free_port, wait_until

from cli.main import cli
from control.db import database
from control.models import (
    AttentionItem,
    AuditEntry,
    ChatIdentity,
    LlmCall,
    Machine,
    MachineEvent,
    Message,
    Operator,
    Subscription,
    Tenant,
    utcnow,
)
from control.models import Delivery as Reply
from control.providers.base import MachineStatus
from control.providers.local import LocalProvisioner
from control.services import (
    accounts,
    audit,
    operators,
    ops_dead_letters,
    ops_history,
    provisioning,
)
from control.services.audit import Actor
from wire.bus import Delivery

PASSWORD = "correct horse battery"
SETUP = Actor(name="test", role="cli", source="test")
# Values for the path variables of the /ops rules (an existing item, tenant, action).
PATH_VALUES = {"item": "1", "action": "resolve", "tenant": "1"}
ACTION_OF = {"ops.dead_letter_action": "requeue", "ops.fleet_action": "deprovision"}


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)


def _add(runtime, email: str, role: str) -> str:
    """Add an operator; return their TOTP secret (from the otpauth URI, as an app reads it)."""
    with database.connection_context():
        _op, uri = operators.add(email, role, PASSWORD, runtime.secrets_box, SETUP)
    assert uri.startswith("otpauth://totp/")
    return pyotp.parse_uri(uri).secret


def _sign_in(client, email: str, secret: str, code: str | None = None):
    token = _csrf(client.get("/ops/login").get_data(as_text=True))
    return client.post("/ops/login", data={"csrf_token": token, "email": email,
                                           "password": PASSWORD,
                                           "totp": code or pyotp.TOTP(secret).now()})


def _token(client) -> str:
    return _csrf(client.get("/ops").get_data(as_text=True))


def _ops_routes(app) -> list[tuple[str, str]]:
    """Every (path, method) of /ops except the sign-in form, with path variables filled."""
    routes = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/ops") or rule.endpoint == "ops.login":
            continue
        values = {**PATH_VALUES, "action": ACTION_OF.get(rule.endpoint, "resolve")}
        path = re.sub(r"<(\w+)>", lambda m, values=values: values[m.group(1)], rule.rule)
        routes += [(path, method) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return routes


def _changes(app) -> list[str]:
    return [path for path, method in _ops_routes(app)
            if method == "POST" and path != "/ops/logout"]


@pytest.fixture
def admin(runtime, client):
    secret = _add(runtime, "root@ops.example", "admin")
    assert _sign_in(client, "root@ops.example", secret).status_code == 303
    return client


@pytest.fixture
def failed_tenant(runtime):
    """A paying tenant whose provisioning failed at the provider, with its attention item."""
    with database.connection_context():
        tenant = Tenant.create(email="grace@example.com", plan="light", status="active")
        Machine.create(tenant=tenant, plan="light", state="failed", attempts=3,
                       provisioning_at=utcnow(), failed_at=utcnow(),
                       detail="Hetzner refused: server_limit_exceeded")
        item = AttentionItem.create(kind="provisioning_failed", subject=str(tenant.id),
                                    detail="Hetzner refused: server_limit_exceeded")
        MachineEvent.create(tenant=tenant, kind="failed")  # as machine_health.fail_machine
        return tenant.id, item.id


def _audit_rows() -> int:
    with database.connection_context():
        return AuditEntry.select().count()


def test_an_operator_signs_in_with_password_and_totp_and_a_code_works_only_once(runtime, app):
    secret = _add(runtime, "ada@ops.example", "operator")
    client = app.test_client()
    assert client.get("/ops").status_code == 404
    code = pyotp.TOTP(secret).now()
    wrong = _sign_in(client, "ada@ops.example", secret, code="000000" if code != "000000" else "111111")
    assert wrong.status_code == 400 and "wrong e-mail, password or code" in wrong.get_data(as_text=True)
    signed_in = _sign_in(client, "ada@ops.example", secret, code=code)
    assert signed_in.status_code == 303 and signed_in.headers["Location"].endswith("/ops")
    cookie = signed_in.headers["Set-Cookie"]
    assert "hermes_ops=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.get("/ops").status_code == 200
    # The same code again (a replay, from another browser) is refused.
    other = app.test_client()
    assert _sign_in(other, "ada@ops.example", secret, code=code).status_code == 400
    assert other.get("/ops").status_code == 404
    # Signing out ends the session.
    assert client.post("/ops/logout", data={"csrf_token": _token(client)}).status_code == 303
    assert client.get("/ops").status_code == 404


def test_every_ops_route_is_404_to_anonymous_visitors_and_to_signed_in_users(app, runtime):
    anonymous = app.test_client()
    with database.connection_context():
        accounts.create_account("user@example.com", PASSWORD)
    user = app.test_client()
    token = _csrf(user.get("/login").get_data(as_text=True))
    assert user.post("/login", data={"csrf_token": token, "email": "user@example.com",
                                     "password": PASSWORD}).status_code == 302
    assert user.get("/dashboard").status_code == 200
    routes = _ops_routes(app)
    assert len(routes) >= 11
    for client in (anonymous, user):
        for path, method in routes:
            response = client.open(path, method=method, data={"csrf_token": "x"})
            assert response.status_code == 404, (path, method, response.status_code)
    assert anonymous.get("/ops/login").status_code == 200


def test_a_viewer_reads_every_page_but_gets_403_on_every_change(app, runtime, failed_tenant):
    secret = _add(runtime, "eve@ops.example", "viewer")
    viewer = app.test_client()
    assert _sign_in(viewer, "eve@ops.example", secret).status_code == 303
    for path in ("/ops", "/ops/attention", "/ops/dead-letters", "/ops/provisioning",
                 f"/ops/provisioning/{failed_tenant[0]}", "/ops/fleet", "/ops/fleet.json",
                 "/ops/tenants", f"/ops/tenants/{failed_tenant[0]}", "/ops/attention.json",
                 "/ops/channels", "/ops/history?range=7d", "/ops/history?range=30d"):
        assert viewer.get(path).status_code == 200, path
    assert viewer.get("/ops/audit").status_code == 403
    assert viewer.get("/ops/audit.json").status_code == 403
    token, before = _token(viewer), _audit_rows()
    changes = _changes(app)
    assert len(changes) >= 3
    for path in changes:
        response = viewer.post(path, data={"csrf_token": token, "note": "x", "hours": "1",
                                           "stream": "hermes:messages:1:dead", "entry_id": "1"})
        assert response.status_code == 403, path
    assert _audit_rows() == before
    with database.connection_context():
        assert Machine.get(Machine.tenant == failed_tenant[0]).state == "failed"
        assert AttentionItem.get_by_id(failed_tenant[1]).resolved_at is None


def test_a_change_without_the_csrf_token_is_refused(admin, failed_tenant):
    response = admin.post(f"/ops/attention/{failed_tenant[1]}/acknowledge")
    assert response.status_code == 400
    with database.connection_context():
        assert AttentionItem.get_by_id(failed_tenant[1]).acknowledged_at is None


def test_an_operator_handles_an_attention_item_and_each_change_is_one_audit_row(admin, failed_tenant):
    _tenant_id, item_id = failed_tenant
    token = _token(admin)
    steps = [("acknowledge", {}), ("assign", {"assignee": "root@ops.example"}),
             ("snooze", {"hours": "4"})]
    for action, form in steps:
        before = _audit_rows()
        response = admin.post(f"/ops/attention/{item_id}/{action}", data={"csrf_token": token, **form})
        assert response.status_code == 303, action
        assert _audit_rows() == before + 1
    # Snoozed: out of the queue, still listed with ?all=1.
    assert f"#{item_id}" not in admin.get("/ops/attention").get_data(as_text=True)
    assert f"#{item_id}" in admin.get("/ops/attention?all=1").get_data(as_text=True)
    assert admin.post(f"/ops/attention/{item_id}/resolve",
                      data={"csrf_token": token, "note": " "}).status_code == 400
    response = admin.post(f"/ops/attention/{item_id}/resolve",
                          data={"csrf_token": token, "note": "raised the Hetzner server limit"})
    assert response.status_code == 303
    with database.connection_context():
        item = AttentionItem.get_by_id(item_id)
        assert item.resolved_at is not None and item.resolved_by == "root@ops.example"
        assert item.resolution == "raised the Hetzner server limit"
        assert item.acknowledged_by == "root@ops.example" and item.assignee == "root@ops.example"
        row = AuditEntry.select().order_by(AuditEntry.id.desc()).get()
    assert (row.actor, row.role, row.action, row.target) == (
        "root@ops.example", "admin", "attention.resolve", f"attention:{item_id}")
    assert json.loads(row.before)["resolved_at"] is None
    assert json.loads(row.after)["resolution"] == "raised the Hetzner server limit"
    assert row.source == "127.0.0.1"
    # Resolved items leave the queue and cannot be resolved twice.
    assert admin.post(f"/ops/attention/{item_id}/resolve",
                      data={"csrf_token": token, "note": "again"}).status_code == 409
    exported = admin.get("/ops/audit.json?action=attention.").json["entries"]
    assert [e["action"] for e in exported] == [
        "attention.resolve", "attention.snooze", "attention.assign", "attention.acknowledge"]


def test_the_provisioning_timeline_shows_the_failed_step_and_retry_queues_it_again(
        admin, runtime, failed_tenant):
    tenant_id, _item = failed_tenant
    overview = admin.get("/ops").get_data(as_text=True)
    assert "server_limit_exceeded" in overview and f"/ops/provisioning/{tenant_id}" in overview
    slos = overview[overview.index('data-testid="slos"'):]
    provisioning_slo = slos[slos.index('"slo-provisioning_success"'):].split("</tr>")[0]
    assert "0.00 %" in provisioning_slo and "missed" in provisioning_slo
    assert "no data" in slos[slos.index('"slo-delivery_success"'):].split("</tr>")[0]
    page = admin.get(f"/ops/provisioning/{tenant_id}").get_data(as_text=True)
    assert 'data-testid="step-failed"' in page and "stack up · failed" in page
    assert "Hetzner refused: server_limit_exceeded" in page
    before = _audit_rows()
    response = admin.post(f"/ops/provisioning/{tenant_id}/retry",
                          data={"csrf_token": _token(admin)})
    assert response.status_code == 303
    with database.connection_context():
        assert Machine.get(Machine.tenant == tenant_id).state == "requested"
        row = AuditEntry.select().order_by(AuditEntry.id.desc()).get()
    assert tenant_id in runtime.tasks.queued_provisioning()
    assert _audit_rows() == before + 1
    assert (row.action, row.target) == ("provisioning.retry", f"tenant:{tenant_id}")
    assert json.loads(row.before)["state"] == "failed"
    assert json.loads(row.after) | {} == {"state": "requested", "detail": "reprovision requested",
                                          "outcome": "requested"}
    page = admin.get(f"/ops/provisioning/{tenant_id}").get_data(as_text=True)
    assert "stack up · current" in page


def _dead_letter(bus, stream: str, payload: dict) -> None:
    entry_id = bus.append(stream, json.dumps(payload))
    bus.read([stream], "agent", "c1", count=10)
    bus.dead_letter(Delivery(stream, entry_id, json.dumps(payload), 5), "agent", "handler crashed")


def test_an_operator_requeues_a_dead_letter_onto_its_stream(admin, runtime):
    stream = "hermes:messages:42"
    _dead_letter(runtime.bus, stream, {"message_id": "m-1", "text": "hello",
                                       "token": "sk-live-secret"})
    page = admin.get("/ops/dead-letters").get_data(as_text=True)
    assert "handler crashed" in page and "sk-live-secret" not in page and "***" in page
    assert 'data-testid="dead-letters">1<' in admin.get("/ops").get_data(as_text=True)
    (entry_id, _raw), = runtime.bus.entries(f"{stream}:dead")
    before = _audit_rows()
    response = admin.post("/ops/dead-letters/requeue", data={
        "csrf_token": _token(admin), "stream": f"{stream}:dead", "entry_id": entry_id})
    assert response.status_code == 303
    assert runtime.bus.entries(f"{stream}:dead") == []
    redelivered = runtime.bus.read([stream], "agent", "c1", count=10)
    assert [json.loads(d.payload)["message_id"] for d in redelivered] == ["m-1"]
    assert _audit_rows() == before + 1
    # Handled already: 404; and a stream that is not a dead-letter stream is refused.
    token = _token(admin)
    assert admin.post("/ops/dead-letters/discard", data={
        "csrf_token": token, "stream": f"{stream}:dead", "entry_id": entry_id}).status_code == 404
    assert admin.post("/ops/dead-letters/discard", data={
        "csrf_token": token, "stream": stream, "entry_id": entry_id}).status_code == 400


@pytest.fixture
def redis_bus(tmp_path):
    """A ``RedisBus`` on a private redis-server."""
    import redis

    from wire.factory import bus_from_url

    port = free_port()
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                "--dir", str(tmp_path), "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"

    def answers() -> bool:
        try:
            return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    wait_until(answers, 10, "redis-server to answer PING")
    bus = bus_from_url(url)
    yield bus
    bus.close()
    process.terminate()
    process.wait(10)


@pytest.mark.parametrize("db_backend", ["sqlite"])
def test_dead_letters_are_listed_requeued_and_discarded_on_redis(redis_bus, db_backend):
    _dead_letter(redis_bus, "hermes:events:7", {"message_id": "e-1", "password": "hunter2"})
    _dead_letter(redis_bus, "hermes:messages:7", {"message_id": "m-2"})
    assert ops_dead_letters.counts(redis_bus) == {"hermes:events:7:dead": 1,
                                                  "hermes:messages:7:dead": 1}
    letters = ops_dead_letters.listing(redis_bus)
    assert [(d.source, d.reason, d.attempts) for d in letters] == [
        ("hermes:events:7", "handler crashed", 5), ("hermes:messages:7", "handler crashed", 5)]
    assert "hunter2" not in letters[0].payload
    result = ops_dead_letters.requeue(redis_bus, letters[0].stream, letters[0].entry_id)
    assert [json.loads(p)["message_id"] for _id, p in redis_bus.entries("hermes:events:7")][-1] == "e-1"
    assert result["requeued_as"]
    ops_dead_letters.discard(redis_bus, letters[1].stream, letters[1].entry_id)
    assert ops_dead_letters.counts(redis_bus) == {}


def test_hermes_operators_cli_adds_lists_resets_and_removes_with_audit_rows(settings, runtime,
                                                                             monkeypatch):
    from cli.main import cli

    for name, value in {"HERMES_DATA_DIR": settings.data_dir,
                        "DATABASE_URL": settings.database_url}.items():
        if value:
            monkeypatch.setenv(name, value)
    runner = CliRunner()
    added = runner.invoke(cli, ["operators", "add", "Lin@Ops.example", "--role", "admin"],
                          input=PASSWORD + "\n")
    assert added.exit_code == 0, added.output
    uri = added.output.strip().splitlines()[-1]
    assert uri.startswith("otpauth://totp/") and "Hermes%20Max%20ops" in uri
    with database.connection_context():
        operator = Operator.get(Operator.email == "lin@ops.example")
        assert operator.role == "admin" and PASSWORD not in operator.password_hash
        assert pyotp.parse_uri(uri).secret not in operator.totp_secret  # stored encrypted
    assert runner.invoke(cli, ["operators", "add", "lin@ops.example", "--role", "admin"],
                         input=PASSWORD + "\n").exit_code == 1
    assert runner.invoke(cli, ["operators", "add", "short@ops.example", "--role", "viewer"],
                         input="short\n").exit_code == 1
    listed = runner.invoke(cli, ["operators", "list"])
    assert "lin@ops.example\tadmin" in listed.output
    reset = runner.invoke(cli, ["operators", "reset-totp", "lin@ops.example"])
    assert reset.exit_code == 0 and reset.output.startswith("otpauth://totp/")
    assert pyotp.parse_uri(reset.output.strip()).secret != pyotp.parse_uri(uri).secret
    assert runner.invoke(cli, ["operators", "remove", "lin@ops.example"]).exit_code == 0
    assert runner.invoke(cli, ["operators", "remove", "lin@ops.example"]).exit_code == 1
    with database.connection_context():
        rows = list(AuditEntry.select().order_by(AuditEntry.id))
    assert [(r.action, r.target, r.role, r.source) for r in rows] == [
        ("operator.add", "operator:lin@ops.example", "cli", "cli"),
        ("operator.reset_totp", "operator:lin@ops.example", "cli", "cli"),
        ("operator.remove", "operator:lin@ops.example", "cli", "cli")]


def test_a_removed_operator_is_signed_out_at_once(app, runtime):
    secret = _add(runtime, "bob@ops.example", "operator")
    client = app.test_client()
    assert _sign_in(client, "bob@ops.example", secret).status_code == 303
    assert client.get("/ops/attention").status_code == 200
    with database.connection_context():
        operators.remove("bob@ops.example", SETUP)
    assert client.get("/ops/attention").status_code == 404


def test_a_totp_code_of_the_next_step_is_accepted_once_for_clock_drift(runtime):
    secret = _add(runtime, "drift@ops.example", "viewer")
    now = time.time()
    ahead = pyotp.TOTP(secret).at(now + 30)
    with database.connection_context():
        assert operators.authenticate("drift@ops.example", PASSWORD, ahead,
                                      runtime.secrets_box, now=now).email == "drift@ops.example"
        with pytest.raises(Exception, match="wrong"):
            operators.authenticate("drift@ops.example", PASSWORD, ahead, runtime.secrets_box,
                                   now=now)
        with pytest.raises(Exception, match="wrong"):
            operators.authenticate("drift@ops.example", PASSWORD,
                                   pyotp.TOTP(secret).at(now + 120), runtime.secrets_box, now=now)


def test_fleet_actions_queue_the_cli_tasks_and_deprovisioning_needs_an_admin_and_typed_email(
        app, admin, runtime, tenant):
    secret = _add(runtime, "op@ops.example", "operator")
    operator = app.test_client()
    assert _sign_in(operator, "op@ops.example", secret).status_code == 303
    assert "ada@example.com" in operator.get("/ops/fleet?q=ada").get_data(as_text=True)
    token = _token(operator)
    response = operator.post(f"/ops/fleet/{tenant.id}/resize", data={"csrf_token": token,
                                                                     "plan": "heavy"})
    assert response.status_code == 303
    assert [t.name for t in runtime.huey.pending()] == ["resize_machine"]
    assert operator.post(f"/ops/fleet/{tenant.id}/resize",
                         data={"csrf_token": token, "plan": "huge"}).status_code == 400
    assert operator.post(f"/ops/fleet/{tenant.id}/deprovision",
                         data={"csrf_token": token, "confirm": "ada@example.com"}).status_code == 403
    token = _token(admin)
    assert admin.post(f"/ops/fleet/{tenant.id}/deprovision",
                      data={"csrf_token": token, "confirm": "ada@example"}).status_code == 400
    with database.connection_context():
        assert Machine.get(Machine.tenant == tenant.id).state == "ready"
    assert admin.post(f"/ops/fleet/{tenant.id}/deprovision",
                      data={"csrf_token": token, "confirm": "ada@example.com"}).status_code == 303
    with database.connection_context():
        assert Machine.get(Machine.tenant == tenant.id).state == "deprovisioning"
        actions = [r.action for r in AuditEntry.select().where(AuditEntry.action.startswith("machine."))]
    assert actions == ["machine.resize", "machine.deprovision"]
    assert [t.name for t in runtime.huey.pending()] == ["resize_machine", "deprovision_machine"]


def test_an_operator_restarts_a_running_agent_and_a_stopped_one_is_refused(app, runtime, tenant):
    secret = _add(runtime, "op@ops.example", "operator")
    operator = app.test_client()
    assert _sign_in(operator, "op@ops.example", secret).status_code == 303
    assert "Restart agent" in operator.get("/ops/fleet").get_data(as_text=True)
    token = _token(operator)

    assert operator.post(f"/ops/fleet/{tenant.id}/restart",
                         data={"csrf_token": token}).status_code == 303
    assert [t.name for t in runtime.huey.pending()] == ["restart_machine"]
    with database.connection_context():
        Machine.update(state="paused").where(Machine.tenant == tenant.id).execute()
    refused = operator.post(f"/ops/fleet/{tenant.id}/restart", data={"csrf_token": token})
    with database.connection_context():
        rows = [(r.action, json.loads(r.after)) for r in AuditEntry.select().where(
            AuditEntry.action == "machine.restart")]
    assert refused.status_code == 409
    assert "Restart agent" not in operator.get("/ops/fleet").get_data(as_text=True)
    assert len(runtime.huey.pending()) == 1
    assert rows == [("machine.restart", {"state": "ready", "plan": "light", "restart": "queued"})]


def test_fleet_and_attention_export_as_json_with_version_and_uptime(app, runtime, failed_tenant,
                                                                    tenant):
    secret = _add(runtime, "viewer@ops.example", "viewer")
    viewer = app.test_client()
    assert _sign_in(viewer, "viewer@ops.example", secret).status_code == 303
    with database.connection_context():
        Machine.update(agent_version="1.4.0").where(Machine.tenant == tenant.id).execute()

    fleet = viewer.get("/ops/fleet.json")
    items = viewer.get("/ops/attention.json").get_json()["items"]
    page = viewer.get("/ops/fleet").get_data(as_text=True)

    assert fleet.headers["Content-Disposition"] == "attachment; filename=hermes-fleet.json"
    rows = {row["tenant_id"]: row for row in fleet.get_json()["machines"]}
    assert rows[tenant.id]["agent_version"] == "1.4.0" and rows[tenant.id]["uptime"] == 1.0
    assert rows[failed_tenant[0]]["uptime"] is None and rows[failed_tenant[0]]["state"] == "failed"
    assert [(i["kind"], i["subject"], i["resolved_at"]) for i in items] == [
        ("provisioning_failed", str(failed_tenant[0]), None)]
    assert '<td data-testid="agent-version">1.4.0</td>' in page
    assert '<td data-testid="uptime">100.00 %</td>' in page
    assert app.test_client().get("/ops/fleet.json").status_code == 404  # anonymous


def test_a_tenants_page_shows_subscription_channels_spend_and_delivery_outcomes(admin, runtime,
                                                                                tenant):
    with database.connection_context():
        Subscription.create(stripe_subscription_id="sub_123", tenant=tenant, status="active",
                            plan="light")
        ChatIdentity.create(channel="telegram", chat_id="777123456", tenant=tenant)
        LlmCall.create(tenant=tenant, api="messages", status=200, cost_cents=1.5)
        LlmCall.create(tenant=tenant, api="messages", status=529, cost_cents=0.0)
        Message.create(tenant=tenant, envelope_id="m1", direction="in", channel="telegram",
                       chat_id="777123456")
        for n, (state, failure, recovered) in enumerate([
                ("delivered", "", False), ("failed", "403 bot was blocked by the user", False),
                ("delivered", "", True)]):
            Reply.create(envelope_id=f"d{n}", tenant=tenant, channel="telegram",
                            chat_id="777123456", state=state, failure=failure,
                            recovered=recovered)

    listing = admin.get("/ops/tenants?q=ada").get_data(as_text=True)
    page = admin.get(f"/ops/tenants/{tenant.id}").get_data(as_text=True)

    assert f"/ops/tenants/{tenant.id}" in listing and "ada@example.com" in listing
    assert "sub_123" in page and "…3456" in page and "777123456" not in page
    assert 'data-testid="spend-today">$0.0150<' in page
    assert "2 (1 failed)" in page and 'data-testid="messages-week">1 / 0<' in page
    assert "403 bot was blocked by the user" in page and "(recovered)" in page
    assert admin.get("/ops/tenants/99999").status_code == 404

    channels = admin.get("/ops/channels").get_data(as_text=True)
    telegram = channels[channels.index('data-testid="channel-telegram"'):].split("</tr>")[0]
    assert "healthy" in telegram
    assert [int(n) for n in re.findall(r"<td>(\d+)</td>", telegram)] == [2, 1, 0, 1]
    failed = channels[channels.index('id="failed"'):channels.index('id="recovered"')]
    assert "403 bot was blocked by the user" in failed and f"/ops/tenants/{tenant.id}" in failed


def test_history_buckets_messages_spend_errors_and_provisioning_time(admin, runtime, tenant):
    now = utcnow()
    with database.connection_context():
        for n, hours_ago in enumerate((0, 0, 2, 30)):
            Message.create(tenant=tenant, envelope_id=f"m{n}", direction="in", channel="telegram",
                           chat_id="1", created_at=now - timedelta(hours=hours_ago))
        LlmCall.create(tenant=tenant, api="messages", status=200, cost_cents=2.5, created_at=now)
        LlmCall.create(tenant=tenant, api="messages", status=500, created_at=now)
        Machine.update(requested_at=now - timedelta(seconds=90), ready_at=now).where(
            Machine.tenant == tenant.id).execute()
        day = {s.name: s for s in ops_history.history("24h", now)}
        month = {s.name: s for s in ops_history.history("30d", now)}

    assert len(day["messages"].values) == 24 and day["messages"].values[-1] == 2
    assert day["messages"].values[-3] == 1 and sum(day["messages"].values) == 3
    assert day["spend"].values[-1] == 2.5 and day["errors"].values[-1] == 1
    assert day["provisioning"].values[-1] == 90.0
    assert len(month["messages"].values) == 30 and sum(month["messages"].values) == 4
    page = admin.get("/ops/history").get_data(as_text=True)
    assert 'data-testid="chart-messages"' in page and "2.0 messages" in page


def test_an_operator_pauses_a_running_agent_and_resumes_it_only_for_an_active_tenant(
        app, runtime, tenant):
    secret = _add(runtime, "op@ops.example", "operator")
    operator = app.test_client()
    assert _sign_in(operator, "op@ops.example", secret).status_code == 303
    token = _token(operator)

    assert operator.post(f"/ops/fleet/{tenant.id}/resume",
                         data={"csrf_token": token}).status_code == 409  # not paused
    assert operator.post(f"/ops/fleet/{tenant.id}/pause",
                         data={"csrf_token": token}).status_code == 303
    (task,) = runtime.huey.pending()
    assert task.name == "operator_pause_machine"
    with database.connection_context():
        paused = provisioning.run_operator_pause(tenant.id, Stopping())
        assert (paused.state, paused.detail) == ("paused", "paused by an operator")
        assert provisioning.run_operator_pause(tenant.id, Stopping()) is None  # idempotent
    assert "Resume" in operator.get("/ops/fleet").get_data(as_text=True)
    assert operator.post(f"/ops/fleet/{tenant.id}/resume",
                         data={"csrf_token": token}).status_code == 303
    assert [t.name for t in runtime.huey.pending()][-1] == "resume_machine"
    with database.connection_context():
        Tenant.update(status="canceled").where(Tenant.id == tenant.id).execute()
    assert operator.post(f"/ops/fleet/{tenant.id}/resume",
                         data={"csrf_token": token}).status_code == 409
    with database.connection_context():
        actions = [r.action for r in AuditEntry.select().where(AuditEntry.target == f"tenant:{tenant.id}")]
    assert actions == ["machine.pause", "machine.resume"]


class Stopping(LocalProvisioner):
    """The embedded provider with no agents: a pause has nothing to stop and succeeds."""

    def __init__(self):
        pass

    def pause(self, tenant):
        return MachineStatus(tenant, "stopped")


def test_each_deploy_is_recorded_once_and_the_overview_shows_it_with_the_last_drift_check(
        admin, runtime, settings, monkeypatch):
    monkeypatch.setenv("HERMES_DATA_DIR", settings.data_dir)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    runner = CliRunner()
    first = runner.invoke(cli, ["db", "upgrade"], catch_exceptions=False).output
    again = runner.invoke(cli, ["db", "upgrade"], catch_exceptions=False).output
    with database.connection_context():
        deploys = list(AuditEntry.select().where(AuditEntry.action == "deploy"))
        audit.record(Actor.cli(), "drift.check", "infrastructure", None,
                     {"ok": False, "report": "changed: hermes-tenants/prod-tenant-7"})

    overview = admin.get("/ops").get_data(as_text=True)

    assert "recorded" in first and "recorded" not in again and len(deploys) == 1
    version = json.loads(deploys[0].after)["version"]
    assert f'data-testid="last-deploy">{version} · ' in overview
    assert "drift found" in overview[overview.index('data-testid="last-drift"'):]
