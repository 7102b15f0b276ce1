"""The bus over TLS on a real redis-server configured as roles/redis configures it: TLS only
(``port 0``), server certificate from a private CA, clients authenticate as ACL users.

Clients verify the server with the CA file (``HERMES_BUS_CA_FILE``); without it, with another
CA, or over plaintext they get nothing.
"""

from __future__ import annotations

import shutil

import pytest
from support.tls_certs import issue_certificates

from control.services import bus_acl
from wire.errors import BusTLSError, BusUnavailable
from wire.factory import bus_from_url
from wire.protocol import events_stream, messages_stream
from wire.redis_bus import RedisBus, connect

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server not installed")


@pytest.fixture
def tls_server(tmp_path, redis_server_factory):
    files = issue_certificates(tmp_path / "tls")
    return redis_server_factory(tls=files), files


@pytest.fixture
def tenant_url(tls_server):
    server, files = tls_server
    admin = connect(server.admin_url, ca_file=str(files["ca"]))
    url = bus_acl.grant(admin, "t1")
    admin.close()
    return url


def test_tenant_acl_user_with_the_ca_uses_the_bus_over_tls(tls_server, tenant_url):
    server, files = tls_server
    assert tenant_url.startswith("rediss://hermes-tenant-t1:")
    control = bus_from_url(server.admin_url, ca_file=str(files["ca"]))
    agent = bus_from_url(tenant_url, ca_file=str(files["ca"]))
    try:
        control.append(messages_stream("t1"), '{"text": "over tls"}', idempotency_key="m1")
        got = agent.read([messages_stream("t1")], "agent", "vm-1")
        assert [d.payload for d in got] == ['{"text": "over tls"}']
        agent.ack(messages_stream("t1"), "agent", got[0].entry_id)
        agent.append(events_stream("t1"), '{"kind": "final"}', idempotency_key="m1:0")
        events = control.read([events_stream("t1")], "delivery", "worker")
        assert [d.payload for d in events] == ['{"kind": "final"}']
    finally:
        control.close()
        agent.close()


def test_client_without_the_ca_is_refused_with_a_tls_error(tls_server, tenant_url):
    with pytest.raises(BusTLSError, match="certificate"):
        RedisBus.from_url(tenant_url)  # system CAs do not include the private CA


def test_client_trusting_another_ca_is_refused(tls_server, tenant_url, tmp_path):
    other = issue_certificates(tmp_path / "other", common_name="Somebody Else's CA")
    with pytest.raises(BusTLSError, match="HERMES_BUS_CA_FILE"):
        RedisBus.from_url(tenant_url, ca_file=str(other["ca"]))


def test_certificate_not_naming_the_dialled_host_is_refused(tls_server, tenant_url):
    _, files = tls_server
    # Same server, same CA, but dialled as "localhost", a name its certificate does not carry.
    url = tenant_url.replace("@127.0.0.1:", "@localhost:")
    with pytest.raises(BusTLSError):
        RedisBus.from_url(url, ca_file=str(files["ca"]))


def test_plaintext_client_gets_no_answer(tls_server):
    server, _ = tls_server
    # The only port is the TLS one (``port 0``): a plaintext client never gets a reply.
    with pytest.raises(BusUnavailable):
        RedisBus.from_url(server.admin_url.replace("rediss://", "redis://"), socket_timeout=0.5)


def test_missing_ca_file_is_a_clear_configuration_error(tls_server, tenant_url, tmp_path):
    with pytest.raises(BusTLSError, match="not a readable file"):
        bus_from_url(tenant_url, ca_file=str(tmp_path / "missing-ca.crt"))


def test_control_plane_and_agent_settings_carry_the_ca_to_their_bus(tls_server, tenant_url,
                                                                     tmp_path):
    from agent.config import AgentConfig
    from control.runtime import Runtime
    from control.settings import Settings

    server, files = tls_server
    settings = Settings.from_env({"HERMES_DATA_DIR": str(tmp_path / "control"),
                                  "HERMES_BUS": "redis", "REDIS_URL": server.admin_url,
                                  "HERMES_BUS_CA_FILE": str(files["ca"])})
    runtime = Runtime(settings, upgrade_schema=True)
    config = AgentConfig.from_env({"HERMES_TENANT": "t1", "HERMES_BUS_URL": tenant_url,
                                   "HERMES_DATA_DIR": str(tmp_path / "agent"),
                                   "HERMES_BUS_CA_FILE": str(files["ca"])})
    agent = bus_from_url(config.bus_url, ca_file=config.bus_ca_file)
    try:
        runtime.bus.append(messages_stream("t1"), '{"text": "via settings"}')
        got = agent.read([messages_stream("t1")], "agent", "vm-1")
        assert [d.payload for d in got] == ['{"text": "via settings"}']
    finally:
        agent.close()
        runtime.close()


def test_bus_cli_grants_over_tls_with_the_ca_from_the_environment(tls_server):
    from click.testing import CliRunner

    from cli.bus import bus as bus_cli

    server, files = tls_server
    runner = CliRunner()
    refused = runner.invoke(bus_cli, ["grant", "t2", "--redis-url", server.admin_url])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    granted = runner.invoke(bus_cli, ["grant", "t2", "--redis-url", server.admin_url],
                            env={"HERMES_BUS_CA_FILE": str(files["ca"])})
    assert granted.exit_code == 0, granted.output
    tenant = bus_from_url(granted.output.strip(), ca_file=str(files["ca"]))
    tenant.ping()
    tenant.close()
