"""Tenant isolation on a real redis-server: per-tenant ACL users and ``hermes bus`` commands."""

from __future__ import annotations

import json

import pytest
import redis
from click.testing import CliRunner

from cli.bus import bus as bus_cli
from control.services import bus_acl
from wire.errors import BusAuthError, BusEntryTooLarge, BusUnavailable
from wire.protocol import events_stream, messages_stream
from wire.redis_bus import MAX_ENTRY_BYTES, RedisBus

A_MESSAGES, A_EVENTS = messages_stream("a"), events_stream("a")
B_MESSAGES, B_EVENTS = messages_stream("b"), events_stream("b")


@pytest.fixture
def control(redis_server, admin):
    """The control plane's bus (admin credentials)."""
    instance = RedisBus.from_url(redis_server.admin_url, visibility_timeout=0.3)
    yield instance
    instance.close()


@pytest.fixture
def tenant_urls(admin):
    return {tenant: bus_acl.grant(admin, tenant) for tenant in ("a", "b")}


@pytest.fixture
def agent_a(tenant_urls):
    instance = RedisBus.from_url(tenant_urls["a"], visibility_timeout=0.3)
    yield instance
    instance.close()


def raw_client(url):
    return redis.Redis.from_url(url, decode_responses=True)


def test_grant_returns_a_url_for_the_tenant_user_on_the_admin_server(redis_server, tenant_urls):
    url = tenant_urls["a"]
    assert url.startswith("redis://hermes-tenant-a:")
    assert url.endswith(f"@127.0.0.1:{redis_server.port}/0")
    assert tenant_urls["a"] != tenant_urls["b"]


def test_agent_consumes_its_messages_and_publishes_its_events(control, agent_a):
    control.append(A_MESSAGES, '{"text": "hi"}', idempotency_key="env-1")
    got = agent_a.read([A_MESSAGES], "agent", "vm-a")
    assert [d.payload for d in got] == ['{"text": "hi"}']
    first = agent_a.append(A_EVENTS, '{"kind": "final"}', idempotency_key="env-1:0")
    assert agent_a.append(A_EVENTS, '{"kind": "final"}', idempotency_key="env-1:0") == first
    agent_a.append(A_EVENTS, '{"kind": "status"}')
    agent_a.ack(A_MESSAGES, "agent", got[0].entry_id)
    assert agent_a.pending_count(A_MESSAGES, "agent") == 0
    events = control.read([A_EVENTS], "delivery", "worker")
    assert [d.payload for d in events] == ['{"kind": "final"}', '{"kind": "status"}']


def test_agent_can_dead_letter_a_bad_message_of_its_own(control, agent_a):
    control.append(A_MESSAGES, "not an envelope")
    delivery = agent_a.read([A_MESSAGES], "agent", "vm-a")[0]
    agent_a.dead_letter(delivery, "agent", "malformed envelope")
    assert agent_a.pending_count(A_MESSAGES, "agent") == 0
    dead = control.read([f"{A_MESSAGES}:dead"], "ops", "op")
    assert json.loads(dead[0].payload)["payload"] == "not an envelope"


def test_agent_cannot_read_or_write_another_tenants_streams(control, agent_a):
    control.append(B_MESSAGES, "secret of b")
    with pytest.raises(BusAuthError, match="hermes-tenant-a"):
        agent_a.read([B_MESSAGES], "agent", "vm-a")
    with pytest.raises(BusAuthError):
        agent_a.read([A_MESSAGES, B_MESSAGES], "agent", "vm-a")
    with pytest.raises(BusAuthError):
        agent_a.append(B_EVENTS, '{"kind": "final", "text": "spoof"}')
    with pytest.raises(BusAuthError):
        agent_a.length(B_MESSAGES)
    assert control.length(B_EVENTS) == 0
    assert [d.payload for d in control.read([B_MESSAGES], "agent", "vm-b")] == ["secret of b"]


def test_agent_cannot_forge_inbound_messages_nor_read_its_events_back(control, agent_a):
    with pytest.raises(BusAuthError):
        agent_a.append(A_MESSAGES, '{"text": "forged"}')
    with pytest.raises(BusAuthError):
        agent_a.read([A_EVENTS], "delivery", "vm-a")
    assert control.length(A_MESSAGES) == 0


@pytest.mark.parametrize("command", [
    ("KEYS", "*"), ("SCAN", "0"), ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"),
    ("ACL", "LIST"), ("ACL", "SETUSER", "hermes-tenant-a", "+@all"), ("MONITOR",),
    ("PSUBSCRIBE", "*"), ("SCRIPT", "FLUSH"), ("SWAPDB", "0", "1"), ("SHUTDOWN",),
    ("CLIENT", "LIST"), ("GET", "hermes:messages:a:idem:env-1"), ("DEL", "hermes:messages:a"),
    ("XRANGE", "hermes:messages:b", "-", "+"), ("XTRIM", "hermes:messages:a", "MAXLEN", "0"),
])
def test_agent_cannot_run_admin_or_keyspace_wide_commands(tenant_urls, command):
    client = raw_client(tenant_urls["a"])
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    finally:
        client.close()


LOOPING_LIBRARY = """#!lua name=spin
redis.register_function('spin', function(keys, args) while true do end end)
"""


@pytest.mark.parametrize("command", [
    ("EVAL", "while true do end", "1", A_EVENTS),
    ("EVAL", "return redis.call('XADD', KEYS[1], '*', 'payload', 'x')", "1", A_EVENTS),
    ("EVALSHA", "0" * 40, "1", A_EVENTS), ("EVAL_RO", "return 1", "1", A_EVENTS),
    ("SCRIPT", "LOAD", "while true do end"), ("FUNCTION", "LOAD", LOOPING_LIBRARY),
    ("FUNCTION", "DELETE", "hermes_bus"), ("FUNCTION", "FLUSH"), ("FUNCTION", "KILL"),
    ("FUNCTION", "RESTORE", "x"), ("SET", "hermes:events:a", "x"),
    ("SET", "hermes:messages:a:dead", "x"), ("SET", "anything", "x"),
    ("XADD", "hermes:events:a:idem:k", "*", "payload", "x"),
])
def test_tenant_runs_no_script_of_its_own_and_manages_no_function(admin, tenant_urls, command):
    client = raw_client(tenant_urls["a"])
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    finally:
        client.close()
    # Nothing left running: Redis answers everyone at once (a script loop would answer BUSY).
    assert admin.ping()
    assert admin.function_list(library="spin") == []


def test_the_admins_functions_run_with_the_tenants_acl(control, tenant_urls):
    control.append(B_MESSAGES, "secret of b")
    client = raw_client(tenant_urls["a"])
    try:
        for keys in ([B_EVENTS], [A_EVENTS, f"{B_EVENTS}:idem:x"], [B_MESSAGES]):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.fcall("hermes_append", len(keys), *keys, "spoof", 10, 10, 10)
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.fcall("hermes_trim_acked", 1, B_MESSAGES)
    finally:
        client.close()
    assert control.length(B_EVENTS) == 0
    assert [d.payload for d in control.read([B_MESSAGES], "agent", "vm-b")] == ["secret of b"]


def test_oversize_entries_are_refused_and_the_tenants_bus_still_works(control, tenant_urls,
                                                                       agent_a):
    client = raw_client(tenant_urls["a"])
    try:
        too_big = "x" * (MAX_ENTRY_BYTES + 1)
        with pytest.raises(redis.ResponseError, match="entry too large"):
            client.fcall("hermes_append", 1, A_EVENTS, too_big, 10, 10, 10)
        with pytest.raises(BusEntryTooLarge):
            agent_a.append(A_EVENTS, too_big)
    finally:
        client.close()
    # A plain XADD of a value over roles/redis's proto-max-bulk-len (1 MiB) is refused by the
    # protocol itself (Redis then closes the connection).
    client = raw_client(tenant_urls["a"])
    try:
        with pytest.raises((redis.ResponseError, redis.ConnectionError)):
            client.xadd(A_EVENTS, {"payload": "x" * (2 * 1024 * 1024)})
    finally:
        client.close()
    assert control.length(A_EVENTS) == 0
    fits = "y" * MAX_ENTRY_BYTES
    agent_a.append(A_EVENTS, fits, idempotency_key="m1:final")
    agent_a.append(A_EVENTS, '{"kind": "final"}')
    assert [d.payload for d in control.read([A_EVENTS], "delivery", "w")] == [
        fits, '{"kind": "final"}']


def test_the_agents_idempotent_dead_letter_goes_through(control, agent_a):
    """agent.tasks dead-letters an envelope after its last retry with ``append`` and a key."""
    first = agent_a.append(f"{A_MESSAGES}:dead", '{"reason": "boom"}', idempotency_key="env-9")
    assert agent_a.append(f"{A_MESSAGES}:dead", '{"reason": "boom"}',
                          idempotency_key="env-9") == first
    assert control.length(f"{A_MESSAGES}:dead") == 1


def test_functions_lost_by_redis_are_reloaded_by_the_control_plane_only(redis_server, admin,
                                                                         tenant_urls):
    admin.function_flush()
    agent = RedisBus.from_url(tenant_urls["a"])
    control = RedisBus.from_url(redis_server.admin_url)
    try:
        with pytest.raises(BusUnavailable, match="control plane loads them"):
            agent.append(A_EVENTS, "x")
        control.append(A_MESSAGES, "hello")  # the admin loads the library again
        agent.append(A_EVENTS, "x")
    finally:
        agent.close()
        control.close()


def test_revoke_cuts_off_the_tenant_at_once_and_is_idempotent(admin, tenant_urls, agent_a):
    agent_a.ping()
    assert bus_acl.revoke(admin, "a") is True
    with pytest.raises(BusAuthError):
        agent_a.read([A_MESSAGES], "agent", "vm-a")
    with pytest.raises(BusAuthError, match="revoked"):
        RedisBus.from_url(tenant_urls["a"])
    assert bus_acl.revoke(admin, "a") is False
    RedisBus.from_url(tenant_urls["b"]).ping()  # other tenants unaffected


def test_rotate_invalidates_the_old_password(admin, tenant_urls, agent_a):
    new_url = bus_acl.rotate(admin, "a")
    assert new_url != tenant_urls["a"]
    with pytest.raises(BusAuthError):
        agent_a.ping()  # its connection was closed and the old password no longer works
    with pytest.raises(BusAuthError):
        RedisBus.from_url(tenant_urls["a"])
    rotated = RedisBus.from_url(new_url)
    rotated.append(A_EVENTS, "after rotation")
    assert rotated.length(A_EVENTS) == 1


def test_wrong_password_fails_at_start_up_with_a_clear_message(redis_server, tenant_urls):
    wrong = f"redis://hermes-tenant-a:not-the-password@127.0.0.1:{redis_server.port}/0"
    with pytest.raises(BusAuthError) as failure:
        RedisBus.from_url(wrong)
    message = str(failure.value)
    assert "hermes-tenant-a" in message and "wrong password" in message
    assert "not-the-password" not in message


@pytest.mark.parametrize("tenant", ["a*", "b?", "a:dead", "", "x" * 65, "a b", "[ab]"])
def test_tenant_ids_that_could_widen_key_patterns_are_refused(admin, tenant):
    with pytest.raises(ValueError, match="invalid tenant id"):
        bus_acl.grant(admin, tenant)


def test_tenant_users_survive_a_redis_restart(redis_server_factory):
    server = redis_server_factory(appendonly=True)
    url = bus_acl.grant(redis.Redis.from_url(server.admin_url), "a")
    server.restart()
    RedisBus.from_url(url).append(A_EVENTS, "still allowed")


def test_cli_grant_prints_a_working_url_and_revoke_removes_it(redis_server, admin):
    runner = CliRunner()
    granted = runner.invoke(bus_cli, ["grant", "a"], env={"REDIS_URL": redis_server.admin_url})
    assert granted.exit_code == 0, granted.output
    url = granted.output.strip()
    RedisBus.from_url(url).append(A_EVENTS, "hello")

    rotated = runner.invoke(bus_cli, ["rotate", "a", "--redis-url", redis_server.admin_url])
    assert rotated.exit_code == 0, rotated.output
    with pytest.raises(BusAuthError):
        RedisBus.from_url(url)
    RedisBus.from_url(rotated.output.strip()).ping()

    revoked = runner.invoke(bus_cli, ["revoke", "a", "--redis-url", redis_server.admin_url])
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    with pytest.raises(BusAuthError):
        RedisBus.from_url(rotated.output.strip())


def test_cli_reports_bad_admin_credentials_and_missing_url(redis_server, admin):
    runner = CliRunner()
    bad = f"redis://default:wrong@127.0.0.1:{redis_server.port}/0"
    result = runner.invoke(bus_cli, ["grant", "a", "--redis-url", bad])
    assert result.exit_code == 1 and "wrong password" in result.output
    missing = runner.invoke(bus_cli, ["grant", "a"], env={"REDIS_URL": None})
    assert missing.exit_code == 2 and "REDIS_URL" in missing.output
    invalid = runner.invoke(bus_cli, ["grant", "a*", "--redis-url", redis_server.admin_url])
    assert invalid.exit_code == 1 and "invalid tenant id" in invalid.output


def test_agent_gets_an_unacked_message_again_after_the_visibility_timeout(control, agent_a):
    control.append(A_MESSAGES, "turn 1")
    assert [d.attempts for d in agent_a.read([A_MESSAGES], "agent", "vm-a")] == [1]
    again = agent_a.read([A_MESSAGES], "agent", "vm-a-restarted", block=3.0)
    assert [(d.payload, d.attempts) for d in again] == [("turn 1", 2)]
