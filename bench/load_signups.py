"""Load scenario 2 (seed 000 §5.3, issue 22): simultaneous sign-ups, all provisioned.

Run through ``bench/load.py --scenario 2 [--warm-pool N] [--provision-workers W]``.
``signups`` tenants pay at once; each payment's ``provision_machine`` task runs the real
``provisioning.run_provisioning`` (control database on SQLite, LLM-gateway token, link token,
and with a pool the claim: ``control.services.warm_pool``) with ``HetznerProvisioner``
(per-stack lock, hcloud API budget, retries with backoff, the real tenant program) on the
dedicated provisioning queue's ``W`` threads (``HERMES_PROVISION_WORKERS``, default 16), against:

* the Pulumi engine as the rehearsal plays it (``rehearsal.engine.MockEngineWorkspace``: the
  real inline program under Pulumi's mocks, the hcloud provider's API calls made for real);
* the hcloud API stand-in (``standins.hcloud_api``) with Hetzner's rate limit
  (``RateLimitedHcloud``: a bucket of 3,600 requests per project refilled at one per second,
  https://docs.hetzner.cloud/#rate-limiting; beyond it 429 with the ``RateLimit-*`` headers).

Timing model (stated, not measured here; the mock engine itself is instant):

* a ``pulumi up`` that creates a server takes ``UP_SECONDS`` (20 s: the CLI and the hcloud
  plugin start, ~5 s, then the create action until the server runs, ~15 s); one that imports a
  claimed pool server takes ``CLAIM_UP_SECONDS`` (8 s: the CLI start, a read, a relabel);
  ``TimedWorkspace`` sleeps the rest of that time after the mock's run, as a ``pulumi``
  subprocess would keep a worker waiting;
* a cold server's agent is ready ``boot`` seconds after its create (default 40 s: Hetzner from
  a snapshot, issue 22), or when provisioning returned, whichever is later;
* a claimed pool server has booted long before; its agent is ready ``POLL_SECONDS`` (the
  bootstrap's poll interval) plus ``AGENT_START_SECONDS`` (10 s: the agent loading its stores
  and embedder) after its claim returned.

``value``: seconds from the payments to the last tenant ready; target < 300.  Also checked:
every tenant has exactly one server (``duplicates``: tenants with more than one, ``orphans``:
servers of no tenant and no pool), ``failed`` provisionings, API requests per sign-up and 429s
seen.  Payment → ready is reported for cold and claimed tenants separately (p50/max).
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

from bench_support import percentile

from standins.hcloud_api import HcloudStandin

WORKERS = 16  # ``HERMES_PROVISION_WORKERS`` default: provisioning tasks run at once
UP_SECONDS = 20.0  # a ``pulumi up`` creating a server (see the timing model above)
CLAIM_UP_SECONDS = 8.0  # a ``pulumi up`` importing a claimed pool server
POLL_SECONDS = 2.0  # ``agent.pool_boot``'s default poll interval
AGENT_START_SECONDS = 10.0  # a booted VM's agent from its config to ``ready``
LIMIT = 3600  # Hetzner: requests per hour per project; the bucket refills at 1 per second
READY_LIMIT = 300.0  # seconds: the specification's "all provisioned in < 5 minutes"


class RateLimitedHcloud(HcloudStandin):
    """The hcloud stand-in behind Hetzner's token bucket, recording each server's creation time.

    Args:
        capacity: the bucket's size and starting fill (requests).
        refill: requests added per second.
    """

    def __init__(self, capacity: int = LIMIT, refill: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.capacity, self.refill = capacity, refill
        self.tokens, self.filled_at = float(capacity), time.monotonic()
        self.limited = 0
        self.created_at: dict[int, float] = {}
        self._bucket = threading.Lock()

    def _take(self) -> bool:
        with self._bucket:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.filled_at) * self.refill)
            self.filled_at = now
            if self.tokens < 1:
                self.limited += 1
                return False
            self.tokens -= 1
            return True

    def _handle(self, req) -> None:
        if self._take():
            super()._handle(req)
            return
        data = json.dumps({"error": {"code": "rate_limit_exceeded", "message": "limit of 3600 exceeded",
                                     "details": {}}}).encode()
        req.send_response(429)
        req.send_header("RateLimit-Limit", str(self.capacity))
        req.send_header("RateLimit-Remaining", "0")
        req.send_header("RateLimit-Reset", str(int(time.time()) + 1))
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def create_server(self, query, body):
        answer = HcloudStandin.create_server(self, query, body)
        self.created_at[answer[1]["server"]["id"]] = time.monotonic()
        return answer

    _ROUTES: ClassVar[dict] = {**HcloudStandin._ROUTES, ("POST", r"/v1/servers"): create_server}


class TimedWorkspace:
    """``MockEngineWorkspace`` whose ``up`` lasts as a real one would (the timing model): the
    mock's own run, then a sleep for the rest of ``UP_SECONDS`` (``CLAIM_UP_SECONDS`` when the
    program imports a pool server)."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def up(self, ref):
        began = time.monotonic()
        outputs = self.inner.up(ref)
        modelled = CLAIM_UP_SECONDS if getattr(ref.program, "adopt", None) else UP_SECONDS
        time.sleep(max(0.0, modelled - (time.monotonic() - began)))
        return outputs


def _provisioner(tmp: Path, api: RateLimitedHcloud, image_id: int):
    from control.providers.hetzner.archive import LocalDirectoryArchiver, LocalDirectoryRestorer
    from control.providers.hetzner.config import HetznerConfig
    from control.providers.hetzner.provisioner import HetznerProvisioner
    from infra.hetzner_api import make_client
    from rehearsal.engine import MockEngineWorkspace

    config = HetznerConfig(
        env="load", hcloud_token=api.token, snapshot_id=str(image_id), network_id="77",
        firewall_label="hermes-firewall=load-tenant", control_url="https://control.example.test",
        pulumi_backend_url=f"file://{tmp}/state", pulumi_passphrase="load bench",
        hcloud_endpoint=api.url, archive_dir=str(tmp / "archives"), lock_dir=str(tmp / "locks"),
        state_dir=str(tmp / "provisioner"), known_hosts_dir=str(tmp / "known_hosts"))
    workspace = MockEngineWorkspace(config.pulumi_backend_url,
                                    env_vars={"HCLOUD_TOKEN": api.token, "HCLOUD_ENDPOINT": api.url})
    (tmp / "agents").mkdir()
    return HetznerProvisioner(config, workspace=TimedWorkspace(workspace),
                              hcloud_client=make_client(api.token, api.url, poll_interval=0.05),
                              archiver=LocalDirectoryArchiver(tmp / "agents"),
                              restorer=LocalDirectoryRestorer(tmp / "agents"))


#: What the control plane hands ``run_provisioning`` (``Runtime.agent_env``, a SQLite bus).
AGENT_ENV = {"HERMES_BUS_URL": "sqlite:////var/lib/hermes/bus.db", "HERMES_LLM": "anthropic",
             "ANTHROPIC_API_KEY": "sk-ant-load", "HERMES_CONTROL_URL": "https://control.example.test",
             "HERMES_TZ": "UTC"}


def run(signups: int, boot: float, warm_pool: int = 0, workers: int = WORKERS) -> dict:
    """Run the scenario (``warm_pool`` servers pre-booted first); return its result record
    (see ``load.py`` for the shared keys)."""
    from control.db import database, init_database
    from control.errors import HermesError
    from control.models import PoolServer, Tenant
    from control.services import provisioning
    from control.services import warm_pool as pool
    from control.services.secrets_box import SecretsBox

    tmp = Path(tempfile.mkdtemp(prefix="hermes-bench-signups-"))
    api = RateLimitedHcloud().start()
    image = api.add_image("hermes-base (load snapshot)", {"app": "hermes", "role": "base-image"})
    provisioner = _provisioner(tmp, api, image["id"])
    init_database(f"sqlite:///{tmp}/control.db", upgrade=True)
    box = SecretsBox([base64.urlsafe_b64encode(b"b" * 32).decode()])
    returned: dict[int, float] = {}
    up_s: list[float] = []
    failed: dict[int, str] = {}

    def provision(tenant_id: int) -> None:
        began = time.monotonic()
        try:
            with database.connection_context():
                provisioning.run_provisioning(tenant_id, provisioner, dict(AGENT_ENV), 3600,
                                              box=box)
        except HermesError as exc:  # counted: the task would retry, and the tenant waits
            failed[tenant_id] = f"{type(exc).__name__}: {exc}"[:200]
            return
        returned[tenant_id] = time.monotonic()
        up_s.append(returned[tenant_id] - began)

    try:
        with database.connection_context():
            if warm_pool:
                pool.top_up(provisioner, {"light": warm_pool}, "https://control.example.test")
            pool_requests = len(api.requests)
            tenants = [Tenant.create(email=f"load{i}@example.com", plan="light", status="active")
                       for i in range(signups)]
            for tenant in tenants:
                provisioning.request_machine(tenant, "light", enqueue=lambda _tenant_id: None)
        paid = time.monotonic()
        with ThreadPoolExecutor(max_workers=workers) as executor:
            list(executor.map(provision, [t.id for t in tenants]))
        servers = list(api.servers.values())
        with database.connection_context():
            claimed = {row.tenant_id for row in PoolServer.select() if row.tenant_id}
    finally:
        api.stop()
        database.close()
        shutil.rmtree(tmp, ignore_errors=True)
    ids = [t.id for t in tenants]
    by_tenant: dict[str, list[dict]] = {}
    for server in servers:
        by_tenant.setdefault(server["labels"].get("tenant", ""), []).append(server)
    cold_s, warm_s = [], []
    for t in ids:
        if t not in returned or not by_tenant.get(str(t)):
            continue
        if t in claimed:
            warm_s.append(returned[t] + POLL_SECONDS + AGENT_START_SECONDS - paid)
        else:
            cold_s.append(max(returned[t], api.created_at[by_tenant[str(t)][0]["id"]] + boot) - paid)
    ready_s = cold_s + warm_s
    all_ready = max(ready_s) if len(ready_s) == signups else float("inf")
    duplicates = sum(1 for t in ids if len(by_tenant.get(str(t), [])) > 1)
    orphans = sum(1 for k, v in by_tenant.items() for server in v
                  if k not in {str(t) for t in ids} and "pool" not in server["labels"])
    requests = len(api.requests) - pool_requests + api.limited
    return {
        "scenario": 2, "target": f"{signups} sign-ups all ready < {READY_LIMIT:g} s",
        "value": round(all_ready, 1) if len(ready_s) == signups else None, "unit": "s",
        "passed": all_ready < READY_LIMIT and not failed and duplicates == 0 and orphans == 0,
        "signups": signups, "warm_pool": warm_pool, "workers": workers, "boot_s": boot,
        "model": {"up_s": UP_SECONDS, "claim_up_s": CLAIM_UP_SECONDS, "poll_s": POLL_SECONDS,
                  "agent_start_s": AGENT_START_SECONDS},
        "ready": len(ready_s), "failed": len(failed),
        "first_failure": next(iter(failed.values()), None),
        "duplicates": duplicates, "orphans": orphans, "claimed_from_pool": len(warm_s),
        "ready_p50_s": round(percentile(ready_s, 50), 1),
        "cold_ready_p50_s": round(percentile(cold_s, 50), 1) if cold_s else None,
        "cold_ready_max_s": round(max(cold_s), 1) if cold_s else None,
        "warm_ready_p50_s": round(percentile(warm_s, 50), 1) if warm_s else None,
        "warm_ready_max_s": round(max(warm_s), 1) if warm_s else None,
        "provisioned_s": round(max(returned.values(), default=paid) - paid, 1),
        "up_p50_s": round(percentile(up_s, 50), 2), "up_max_s": round(max(up_s, default=0.0), 2),
        "api_requests": requests, "api_requests_per_signup": round(requests / signups, 1),
        "rate_limited_429": api.limited,
    }
