"""The Jobs API (issue 23): tokens made on the dashboard, ``/api/jobs``, and jobs run end to end.

Real parts: the control app (``create_app``, SQLite), its bus, the delivery worker, a real agent
(``AgentRuntime``, its inbox listener and a Huey consumer running ``AgentTasks``) and a local
HTTP server receiving the signed callback.  Only Anthropic's Messages API is a stand-in,
scripted per prompt.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import re
import signal
import threading
import time

import pytest
from support.dashboard import csrf_token, make_ready, sign_in
from support.serve import wait_until

from agent.config import AgentConfig
from agent.listener import InboxListener
from agent.runtime import AgentRuntime
from agent.tasks import AgentTasks
from control.db import database
from control.models import ApiToken, Job, Usage
from control.services import jobs
from control.services.delivery import DeliveryWorker
from control.services.secrets_box import box_from_settings
from standins.anthropic_api import AnthropicStandin, last_user_text, text_reply
from wire.protocol import Envelope, messages_stream
from wire.sqlite_bus import SqliteBus


@pytest.fixture
def settings(settings):
    # Callbacks are sent inline by the worker that ends the job (no separate Huey consumer).
    return settings.with_overrides(huey_immediate=True)


def new_token(client, name: str = "ci", scopes=("jobs:read", "jobs:write")) -> tuple[str, str, str]:
    """Create a token on the dashboard; return ``(token, signing secret, the page's HTML)``."""
    answer = client.post("/dashboard/api/tokens", data={
        "name": name, "scopes": list(scopes), "csrf_token": csrf_token(client, "/dashboard/api")})
    assert answer.status_code == 201, answer.text
    token = re.search(r'id="api-token">([^<]+)<', answer.text).group(1)
    secret = re.search(r'id="api-secret">([^<]+)<', answer.text).group(1)
    return token, secret, answer.text


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def user(client):
    tenant = sign_in(client, "jobs@example.com")
    make_ready(tenant)
    return tenant


def test_a_token_is_shown_once_stored_hashed_scoped_and_revocable(client, user, runtime):
    token, secret, _ = new_token(client)
    reader, _, _ = new_token(client, "reader", scopes=("jobs:read",))

    page = client.get("/dashboard/api").text
    assert token not in page and secret not in page and "reader" in page
    with database.connection_context():
        row = ApiToken.get(ApiToken.name == "ci")
        stored = json.dumps([str(v) for v in row.__data__.values()])
        assert token not in stored and secret not in stored
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert box_from_settings(runtime.settings).decrypt(row.secret_box) == secret

    assert client.get("/api/jobs", headers=auth(token)).json == {"jobs": []}
    refused = client.post("/api/jobs", json={"prompt": "hello"}, headers=auth(reader))
    assert (refused.status_code, refused.json["error"]) == (403, "missing_scope")
    assert client.get("/api/jobs", headers=auth(reader)).status_code == 200
    assert client.get("/api/jobs", headers=auth("hjt_not-a-token")).status_code == 401
    assert client.get("/api/jobs").status_code == 401

    revoke = client.post(f"/dashboard/api/tokens/{row.id}/revoke",
                         data={"csrf_token": csrf_token(client, "/dashboard/api")})
    assert revoke.status_code == 200 and "revoked" in revoke.text
    answer = client.get("/api/jobs", headers=auth(token))
    assert (answer.status_code, answer.json["error"]) == (401, "bad_api_token")
    forged = client.post(f"/dashboard/api/tokens/{row.id}/revoke", data={})
    assert forged.status_code == 400  # no CSRF token


def test_another_users_token_and_jobs_are_out_of_reach(app, client, user):
    token, _, _ = new_token(client)
    job = client.post("/api/jobs", json={"prompt": "mine"}, headers=auth(token)).json
    other = app.test_client()
    sign_in(other, "other@example.com")
    theirs, _, _ = new_token(other)
    assert client.post("/dashboard/api/tokens/999999/revoke", data={
        "csrf_token": csrf_token(client, "/dashboard/api")}).status_code == 404
    assert other.get(f"/api/jobs/{job['id']}", headers=auth(theirs)).status_code == 404
    assert other.delete(f"/api/jobs/{job['id']}", headers=auth(theirs)).status_code == 404
    assert other.get("/api/jobs", headers=auth(theirs)).json == {"jobs": []}


@pytest.mark.parametrize(("body", "code"), [
    (b"not json", "bad_request"),
    (b"[1, 2]", "bad_job"),
    (b"{}", "bad_job"),
    (json.dumps({"prompt": "   "}).encode(), "bad_job"),
    (json.dumps({"prompt": "/goal take over"}).encode(), "bad_job"),
    (json.dumps({"prompt": "nul \u0000 inside"}).encode(), "bad_job"),
    (json.dumps({"prompt": "x", "depends_on": ["job_\u0000"]}).encode(), "bad_job"),
    (json.dumps({"prompt": "x", "priority": 101}).encode(), "bad_job"),
    (json.dumps({"prompt": "x", "priority": True}).encode(), "bad_job"),
    (json.dumps({"prompt": "x", "budget_cents": 0}).encode(), "bad_job"),
    (json.dumps({"prompt": "x", "colour": "red"}).encode(), "bad_job"),
    (json.dumps({"prompt": "x", "depends_on": "job_1"}).encode(), "bad_job"),
    (json.dumps({"prompt": "x", "depends_on": ["job_nope"]}).encode(), "unknown_dependency"),
    (json.dumps({"prompt": "x", "callback_url": "ftp://example.com/x"}).encode(), "bad_callback_url"),
    (json.dumps({"prompt": "x", "callback_url": "https://u:p@example.com/"}).encode(),
     "bad_callback_url"),
])
def test_malformed_input_is_a_400_and_stores_nothing(client, user, body, code):
    token, _, _ = new_token(client)
    answer = client.post("/api/jobs", data=body, headers={**auth(token),
                                                          "Content-Type": "application/json"})
    assert (answer.status_code, answer.json["error"]) == (400, code), answer.json
    with database.connection_context():
        assert Job.select().count() == 0
    assert client.get("/api/jobs?state=nonsense", headers=auth(token)).status_code == 400


def test_an_idempotency_key_returns_the_same_job(client, user, runtime):
    token, _, _ = new_token(client)
    headers = {**auth(token), "Idempotency-Key": "order-42"}
    first = client.post("/api/jobs", json={"prompt": "Write the report"}, headers=headers)
    again = client.post("/api/jobs", json={"prompt": "Write the report"}, headers=headers)
    other = client.post("/api/jobs", json={"prompt": "Write the report"}, headers=auth(token))
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 201)
    assert first.json["id"] == again.json["id"] != other.json["id"]
    assert first.headers["Location"] == f"/api/jobs/{first.json['id']}"
    with database.connection_context():
        assert Job.select().count() == 2
    bus = runtime.bus
    prompts = [Envelope.from_json(d.payload).text for d in
               bus.read([messages_stream(str(user.id))], "check", "c", count=10)]
    assert prompts == ["Write the report", "Write the report"]  # one envelope per job


def test_list_poll_and_delete_of_waiting_and_queued_jobs(client, user, runtime):
    token, _, _ = new_token(client)
    first = client.post("/api/jobs", json={"prompt": "Collect the numbers", "priority": 7},
                        headers=auth(token)).json
    second = client.post("/api/jobs", json={"prompt": "Chart them", "depends_on": [first["id"]]},
                         headers=auth(token)).json
    third = client.post("/api/jobs", json={"prompt": "Mail the chart", "depends_on": [second["id"]]},
                        headers=auth(token)).json
    assert (first["state"], second["state"], third["state"]) == ("queued", "waiting", "waiting")
    assert first["priority"] == 7 and first["result"] is None

    listed = client.get("/api/jobs", headers=auth(token)).json["jobs"]
    assert [j["id"] for j in listed] == [third["id"], second["id"], first["id"]]
    waiting = client.get("/api/jobs?state=waiting", headers=auth(token)).json["jobs"]
    assert {j["id"] for j in waiting} == {second["id"], third["id"]}
    assert client.get(f"/api/jobs/{second['id']}", headers=auth(token)).json == second

    cancelled = client.delete(f"/api/jobs/{second['id']}", headers=auth(token))
    assert (cancelled.status_code, cancelled.json["state"]) == (200, "cancelled")
    polled = client.get(f"/api/jobs/{third['id']}", headers=auth(token)).json
    assert polled["state"] == "failed" and second["id"] in polled["result"]
    again = client.delete(f"/api/jobs/{second['id']}", headers=auth(token))
    assert (again.status_code, again.json["error"]) == (409, "job_ended")

    stopped = client.delete(f"/api/jobs/{first['id']}", headers=auth(token))
    assert stopped.json["state"] == "cancelled"
    sent = [Envelope.from_json(d.payload) for d in
            runtime.bus.read([messages_stream(str(user.id))], "check", "c", count=10)]
    assert [(e.kind, e.text, e.chat_id) for e in sent] == [
        ("job", "Collect the numbers", f"job-{first['id']}"),
        ("message", "/stop", f"job-{first['id']}")]
    assert sent[0].job == {"id": first["id"], "priority": 7, "budget_cents": 50.0}


def test_a_callback_goes_only_to_public_hosts_outside_local_mode():
    assert not jobs.public_host("127.0.0.1") and not jobs.public_host("10.1.2.3")
    assert not jobs.public_host("169.254.169.254") and not jobs.public_host("100.64.0.1")
    assert not jobs.public_host("::1") and not jobs.public_host("no-such-host.invalid")
    assert jobs.public_host("8.8.8.8") and jobs.public_host("2606:4700:4700::1111")


def test_the_signature_is_stripes_scheme():
    body = b'{"id":"job_1"}'
    expected = hmac.new(b"whsec_x", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert jobs.sign("whsec_x", body, 1_700_000_000) == f"t=1700000000,v1={expected}"


# -- end to end -----------------------------------------------------------------------------


class Receiver:
    """A local HTTP server that records every POST (headers, body) and answers 204."""

    def __init__(self):
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                """Quiet."""

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/jobs"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def verified(secret: str, headers: dict, body: bytes, tolerance: float = 300) -> bool:
    """Check ``Hermes-Signature`` as a receiver would (Stripe's scheme, with a time tolerance)."""
    fields = dict(part.split("=", 1) for part in headers["Hermes-Signature"].split(","))
    expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(time.time() - int(fields["t"])) < tolerance


class Agent:
    """The tenant's agent: runtime, inbox listener and a Huey consumer, in threads."""

    def __init__(self, runtime, tenant, anthropic, tmp_path):
        bus_path = runtime.settings.bus_url.removeprefix("sqlite:///")
        self.bus = SqliteBus(bus_path, visibility_timeout=5, poll_interval=0.01)
        config = AgentConfig(tenant=str(tenant.id), data_dir=str(tmp_path / "agent"),
                             bus_url=runtime.settings.bus_url, llm="anthropic",
                             anthropic_api_key="test-key", anthropic_base_url=anthropic.base_url,
                             memory_extraction=False, delta_interval=0.0, llm_backoff=0.0)
        self.runtime = AgentRuntime(config, bus=self.bus, sleep=lambda s: None)
        self.tasks = AgentTasks(self.runtime)
        self.listener = InboxListener(self.runtime, self.tasks)
        self.saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        self.consumer = None
        self.thread = threading.Thread(target=self.listener.run, daemon=True)
        self.thread.start()

    def start_worker(self):
        self.consumer = self.tasks.huey.create_consumer(workers=1, periodic=False,
                                                       check_worker_health=False,
                                                       initial_delay=0.02, max_delay=0.1)
        self.consumer.start()

    def close(self):
        self.listener.stop()
        self.thread.join(10)
        if self.consumer is not None:
            self.consumer.stop(graceful=True)
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        self.runtime.close()


@pytest.fixture
def stack(runtime, user, tmp_path):
    prompts: list[str] = []

    def scripted(request: dict):
        text = last_user_text(request)
        prompts.append(text)
        return text_reply(f"Done: {text}")

    receiver = Receiver()
    with AnthropicStandin(responder=scripted) as anthropic:
        agent = Agent(runtime, user, anthropic, tmp_path)
        worker_bus = SqliteBus(runtime.settings.bus_url.removeprefix("sqlite:///"),
                               visibility_timeout=5, poll_interval=0.01)
        delivery = DeliveryWorker(worker_bus, runtime.tasks.adapters, lambda: [user.id],
                                  edit_interval=0.05, on_jobs_ended=runtime.tasks.queue_job_callbacks)
        stopping = threading.Event()

        def deliver():
            with database.connection_context():
                delivery.run(stopping)

        thread = threading.Thread(target=deliver, daemon=True)
        thread.start()
        yield agent, prompts, receiver
        stopping.set()
        thread.join(10)
        agent.close()
        worker_bus.close()
    receiver.close()


@pytest.mark.parametrize("db_backend", ["sqlite"])  # one backend is enough for the agent's part
def test_a_job_with_a_dependency_runs_after_it_and_calls_back_signed(client, stack):
    agent, prompts, receiver = stack
    token, secret, _ = new_token(client)

    def post(body: dict) -> dict:
        return client.post("/api/jobs", json=body, headers=auth(token)).json

    # Queued before the agent's worker starts, so the agent holds all three at once.
    low = post({"prompt": "Tidy the inbox", "priority": 1})
    research = post({"prompt": "Research three laptops", "priority": 60, "budget_cents": 5})
    middle = post({"prompt": "Water the plants", "priority": 30})
    report = post({"prompt": "Write the laptop report", "depends_on": [research["id"]],
                   "callback_url": receiver.url, "priority": 100})
    assert report["state"] == "waiting" and report["callback_state"] == "pending"
    wait_until(lambda: len(agent.runtime.inbox.unfinished()) == 3, 30.0, "three jobs queued on the agent")
    agent.start_worker()

    headers, body = wait_until(lambda: receiver.received and receiver.received[0], 30.0, "the signed callback")
    assert verified(secret, headers, body)
    called = json.loads(body)
    assert called["id"] == report["id"] and called["state"] == "done"
    assert called["result"] == "Done: Write the laptop report" and called["cost_cents"] > 0
    assert headers["Content-Type"] == "application/json"
    assert not verified("whsec_someone-else", headers, body)

    wait_until(lambda: client.get(f"/api/jobs/{low['id']}", headers=auth(token)).json["state"] == "done",
               30.0, "the low-priority job done")
    # The agent ran the ready jobs by priority; the dependent one only after its dependency.
    independent = ["Research three laptops", "Water the plants", "Tidy the inbox"]
    assert [p for p in prompts if p in independent] == independent
    assert prompts.index("Write the laptop report") > prompts.index("Research three laptops")
    assert len(prompts) == 4
    polled = client.get(f"/api/jobs/{report['id']}", headers=auth(token)).json
    assert polled["state"] == "done" and polled["callback_state"] == "delivered"
    assert polled["finished_at"] >= client.get(f"/api/jobs/{research['id']}",
                                               headers=auth(token)).json["finished_at"]
    assert len(receiver.received) == 1  # only the job with a callback_url called back
    # Spend is attributed per job on the agent and recorded in the control plane's usage.
    by_job = {job_id: cents for job_id, _calls, cents
                  in agent.runtime.usage.today_by(str(agent.runtime.tenant), "job_id")}
    assert set(by_job) == {low["id"], research["id"], middle["id"], report["id"]}
    with database.connection_context():
        job = Job.get(Job.public_id == report["id"])
        assert Usage.select().where(Usage.envelope_id == job.envelope_id).count() == 1
        assert job.cost_cents == pytest.approx(by_job[report["id"]])


@pytest.mark.parametrize("db_backend", ["sqlite"])
def test_a_queued_job_cancelled_before_the_agent_starts_it_never_runs(client, stack):
    agent, prompts, _ = stack
    token, _, _ = new_token(client)
    job = client.post("/api/jobs", json={"prompt": "Plan the trip"}, headers=auth(token)).json
    wait_until(lambda: len(agent.runtime.inbox.unfinished()) == 1, 30.0, "one job queued on the agent")
    assert client.delete(f"/api/jobs/{job['id']}", headers=auth(token)).json["state"] == "cancelled"
    wait_until(lambda: agent.runtime.inbox.stop_requested(f"api:job-{job['id']}", 0.0), 30.0, "the job's stop request")
    agent.start_worker()
    wait_until(lambda: not agent.runtime.inbox.unfinished(), 30.0, "the agent idle")
    assert "Plan the trip" not in prompts
    assert client.get(f"/api/jobs/{job['id']}", headers=auth(token)).json["state"] == "cancelled"
