"""Load scenario 2 (seed 000 §5.3, issue 22): simultaneous sign-ups, all provisioned.

Run through ``bench/load.py --scenario 2``.  ``signups`` tenants pay at once; each payment's
``provision_machine`` task runs ``HetznerProvisioner.provision`` (per-stack lock, retries with
backoff, the real tenant program) on the worker's pool of ``WORKERS`` threads (``hermes worker
--workers``' default), against:

* the Pulumi engine as the rehearsal plays it (``rehearsal.engine.MockEngineWorkspace``: the
  real inline program under Pulumi's mocks, the hcloud provider's API calls made for real);
* the hcloud API stand-in (``standins.hcloud_api``) with Hetzner's rate limit
  (``RateLimitedHcloud``: a bucket of 3,600 requests per project refilled at one per second,
  https://docs.hetzner.cloud/#rate-limiting; beyond it 429 with the ``RateLimit-*`` headers) and
  a server boot of ``boot`` seconds modelled: a tenant is ready ``boot`` seconds after its
  server was created (Hetzner takes about 40 s from a snapshot) or when its provisioning
  returned, whichever is later.

``value``: seconds from the payments to the last tenant ready; target < 300.  Also checked:
every tenant has exactly one server (``duplicates``: tenants with more than one, ``orphans``:
servers of no tenant), ``failed`` provisionings, API requests per sign-up and 429s seen.

Not modelled: the Pulumi CLI's own start-up per ``up`` (the mock engine runs in process, one
program at a time as Pulumi's runtime is process-global) — ``up_p50_s`` is the mock's time;
with a real ``pulumi up`` of P seconds each, ``WORKERS`` threads take about
``signups / WORKERS * P`` seconds.
"""

from __future__ import annotations

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

WORKERS = 4  # ``hermes worker --workers`` default: provisioning tasks run at once
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
    return HetznerProvisioner(config, workspace=workspace,
                              hcloud_client=make_client(api.token, api.url, poll_interval=0.05),
                              archiver=LocalDirectoryArchiver(tmp / "agents"),
                              restorer=LocalDirectoryRestorer(tmp / "agents"))


def _spec(tenant: str):
    from control.providers.base import MachineSpec

    env = {"HERMES_BUS_URL": f"rediss://tenant-{tenant}:s3cret@10.0.0.3:6380/0",
           "HERMES_AGENT_TOKEN": f"agent-token-{tenant}", "HERMES_LLM": "anthropic",
           "ANTHROPIC_API_KEY": "sk-ant-load", "HERMES_DAILY_BUDGET_CENTS": "50", "HERMES_TZ": "UTC"}
    return MachineSpec(tenant=tenant, plan="light", env=env)


def run(signups: int, boot: float) -> dict:
    """Run the scenario; return its result record (see ``load.py`` for the shared keys)."""
    from control.errors import ProvisioningError

    tmp = Path(tempfile.mkdtemp(prefix="hermes-bench-signups-"))
    api = RateLimitedHcloud().start()
    image = api.add_image("hermes-base (load snapshot)", {"app": "hermes", "role": "base-image"})
    provisioner = _provisioner(tmp, api, image["id"])
    tenants = [str(5000 + i) for i in range(signups)]
    returned: dict[str, float] = {}
    up_s: list[float] = []
    failed: dict[str, str] = {}

    def provision(tenant: str) -> None:
        began = time.monotonic()
        try:
            provisioner.provision(_spec(tenant))
        except ProvisioningError as exc:  # counted: the task would retry, and the tenant waits
            failed[tenant] = f"{type(exc).__name__}: {exc}"[:200]
            return
        returned[tenant] = time.monotonic()
        up_s.append(returned[tenant] - began)

    try:
        paid = time.monotonic()
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            list(pool.map(provision, tenants))
        servers = list(api.servers.values())
    finally:
        api.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    by_tenant: dict[str, list[dict]] = {}
    for server in servers:
        by_tenant.setdefault(server["labels"].get("tenant", ""), []).append(server)
    ready_s = [max(returned[t], api.created_at[by_tenant[t][0]["id"]] + boot) - paid
               for t in tenants if t in returned and by_tenant.get(t)]
    all_ready = max(ready_s) if len(ready_s) == signups else float("inf")
    duplicates = sum(1 for t in tenants if len(by_tenant.get(t, [])) > 1)
    orphans = sum(len(v) for k, v in by_tenant.items() if k not in tenants)
    requests = len(api.requests) + api.limited
    return {
        "scenario": 2, "target": f"{signups} sign-ups all ready < {READY_LIMIT:g} s",
        "value": round(all_ready, 1) if ready_s and len(ready_s) == signups else None, "unit": "s",
        "passed": all_ready < READY_LIMIT and not failed and duplicates == 0 and orphans == 0,
        "signups": signups, "workers": WORKERS, "boot_s": boot, "ready": len(ready_s),
        "failed": len(failed), "first_failure": next(iter(failed.values()), None),
        "duplicates": duplicates, "orphans": orphans,
        "ready_p50_s": round(percentile(ready_s, 50), 1),
        "provisioned_s": round(max(returned.values(), default=paid) - paid, 1),
        "up_p50_s": round(percentile(up_s, 50), 2), "up_max_s": round(max(up_s, default=0.0), 2),
        "api_requests": requests, "api_requests_per_signup": round(requests / signups, 1),
        "rate_limited_429": api.limited,
    }
