"""The restore drill: a user tells a real agent something, everything is backed up to S3 (moto's
server), restored into a FRESH control database and a FRESH agent data dir, and a new agent on it
continues the conversation remembering it; the control rows are back too.  Prints the drill's
backup and restore times (seconds)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from support.serve import wait_until

from control.db import init_database
from control.services import backups
from standins.anthropic_api import AnthropicStandin
from wire.protocol import Envelope, Event, events_stream, messages_stream, new_id
from wire.sqlite_bus import SqliteBus

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def s3_store():
    """An ``S3ObjectStore`` on a bucket of moto's real S3 server on loopback."""
    import boto3
    from moto.server import ThreadedMotoServer

    from control.providers.archive import S3ObjectStore

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    bucket = f"backups-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                 aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=bucket)
    yield S3ObjectStore(bucket, endpoint_url=endpoint, access_key="testing", secret_key="testing",
                        region="us-east-1")
    server.stop()


class Agent:
    """``python -m agent.main run`` for one tenant on a data dir and a SqliteBus file."""

    def __init__(self, tenant: str, data: Path, bus: Path, standin_url: str, log: Path):
        self.tenant, self.data, self.bus = tenant, data, SqliteBus(bus)
        env = {**os.environ, "HERMES_TENANT": tenant, "HERMES_DATA_DIR": str(data),
               "HERMES_BUS_URL": f"sqlite:///{bus}", "HERMES_LLM": "anthropic",
               "ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": standin_url,
               "HERMES_MEMORY_EXTRACTION": "0", "HERMES_DELTA_INTERVAL": "0", "HERMES_WORKERS": "1",
               "PYTHONPATH": str(REPO)}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "agent.main", "run"], cwd=REPO,
                                         env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_until(lambda: (data / "agent.ready").exists() or self.proc.poll() is not None, 90,
                 "agent ready")
        assert self.proc.poll() is None, log.read_text()

    def say(self, text: str) -> str:
        """Send ``text`` from the user's Telegram chat; return the agent's final reply."""
        envelope = Envelope(id=new_id(), tenant=self.tenant, channel="telegram", chat_id="chat-1",
                            sender_id="u1", text=text)
        self.bus.append(messages_stream(self.tenant), envelope.to_json(), idempotency_key=envelope.id)
        group = f"drill-{uuid.uuid4().hex[:8]}"

        def final():
            batch = self.bus.read([events_stream(self.tenant)], group, "reader", count=500)
            events = [Event.from_json(d.payload) for d in batch]
            return next((e.text for e in events if e.message_id == envelope.id and e.kind == "final"),
                        None)

        seen = []
        return wait_until(lambda: seen.append(final()) or next((t for t in seen if t), None), 90,
                        f"reply to {text!r}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(40)


def test_restore_drill_continues_the_conversation_with_what_it_remembered(tmp_path, s3_store, capsys):
    from control.models import ChatIdentity, Machine, Tenant

    control_url = f"sqlite:///{tmp_path / 'control' / 'control.db'}"
    database = init_database(control_url)
    with database.connection_context():
        tenant = Tenant.create(email="ada@example.com", plan="light", status="active")
        Machine.create(tenant=tenant, plan="light", state="ready", address=None)
        ChatIdentity.create(channel="telegram", chat_id="chat-1", user_id="u1", tenant=tenant)
    key = str(tenant.id)
    agents = tmp_path / "agents"

    with AnthropicStandin() as standin:
        first = Agent(key, agents / key, tmp_path / "bus.db", standin.base_url, tmp_path / "a1.log")
        try:
            assert first.say("/remember My sister Ingrid lives in Tromsø").startswith("Remembered")
            # A new conversation: from now on the fact lives in memory only, not in the history.
            assert first.say("/reset").startswith("New conversation")

            started = time.monotonic()
            with database.connection_context():
                report = backups.run(s3_store, database_url=control_url, env="drill",
                                     archiver=backups.LocalSnapshotArchiver(agents),
                                     tenants=backups.active_tenants(), retention_days=14)
            backup_seconds = time.monotonic() - started
        finally:
            first.stop()
        database.close()
        assert report.failures == {} and [e.key for e in report.tenants] == [
            backups.latest_tenant_backup(s3_store, key)]

        fresh_url = f"sqlite:///{tmp_path / 'fresh-control' / 'control.db'}"
        fresh_agents = tmp_path / "fresh-agents"
        started = time.monotonic()
        backups.restore_control_db(s3_store, report.control.key, fresh_url)
        backups.restore_tenant(s3_store, key, report.tenants[0].key,
                               backups.LocalRestore(fresh_agents / key))
        restore_seconds = time.monotonic() - started

        restored = init_database(fresh_url)
        with restored.connection_context():
            machine = Machine.get(Machine.tenant == int(key))
            chat = ChatIdentity.get(ChatIdentity.chat_id == "chat-1")
            assert (machine.tenant.email, machine.state, chat.tenant_id) == (
                "ada@example.com", "ready", int(key))
        restored.close()

        standin.requests.clear()
        standin.script(["Ingrid, up in Tromsø."])
        second = Agent(key, fresh_agents / key, tmp_path / "bus2.db", standin.base_url,
                       tmp_path / "a2.log")
        try:
            assert second.say("Where does my sister live?") == "Ingrid, up in Tromsø."
        finally:
            second.stop()
        [request] = standin.requests
        assert "My sister Ingrid lives in Tromsø" in str(request["json"])

    with capsys.disabled():
        print(f"\nrestore drill: backup {backup_seconds:.2f} s (control DB + 1 tenant, "
              f"{report.control.bytes + report.tenants[0].bytes} bytes), restore "
              f"{restore_seconds:.2f} s, total {backup_seconds + restore_seconds:.2f} s")
