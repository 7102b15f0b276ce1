"""Load scenario 4 (seed 000 §5.3, issue 22): tool calls through the MCP proxy under load.

Run through ``bench/load.py --scenario 4``.  Production's path for a Composio tool call, on
loopback: each of ``users`` tenants' agent (an ``McpManager``, the agent's MCP layer, as in
``bench/mcp_tool_calls.py``) calls a tool on ``<control>/mcp/tenants/<id>`` with its proxy
token; the control plane (gunicorn with the control role's worker model,
``bench_support.GunicornServer``, SQLite database) checks the token and streams the call to the
tenant's upstream, which stands in for Composio: the test MCP server's tools
(``tests/support/mcp_server.py``) served as Composio serves its endpoint (stateless streamable
HTTP with JSON answers, a uvicorn child), whose ``slow`` tool takes ``tool_latency`` seconds
(the tool's own time at Composio).  Tokens and upstreams are issued with
``control.services.mcp_proxy.rotate`` (setup, not measured).

Each tenant's agent calls in a loop from its own thread for ``seconds``, all at once: ``users``
calls in flight.  ``value``: p99 of a call's latency (ms) as the agent's tool loop sees it;
target < 3 s.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_support import ROOT, GunicornServer, free_port, percentile, upgrade_database, wait_until
from cryptography.fernet import Fernet

SERVER = str(ROOT / "tests" / "support" / "mcp_server.py")


# The test server's tools served as Composio's endpoint is (``standins/composio_api.py``):
# stateless, JSON answers, so no session holds a server-to-client GET stream open.
UPSTREAM = """
import sys
sys.path.insert(0, {support!r})
import mcp_server, uvicorn
app = mcp_server.server.streamable_http_app(stateless_http=True, json_response=True)
uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning")
"""


def _upstream() -> tuple[subprocess.Popen, str]:
    """Start the test MCP server over stateless streamable HTTP; return (process, MCP URL)."""
    port = free_port()
    code = UPSTREAM.format(support=str(Path(SERVER).parent), port=port)
    process = subprocess.Popen([sys.executable, "-c", code],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_until(listening, 30, "the MCP test server")
    return process, f"http://127.0.0.1:{port}/mcp"


def _seed(env: dict[str, str], users: int, upstream: str, public_url: str) -> list[tuple[str, str]]:
    """Create ``users`` active tenants with a proxy token for ``upstream``; return each one's
    ``(proxy URL, token)``."""
    from control.db import init_database
    from control.models import Tenant
    from control.services import mcp_proxy
    from control.services.composio_client import McpEndpoint
    from control.services.secrets_box import SecretsBox

    box = SecretsBox([env["HERMES_ENCRYPTION_KEYS"]])
    db = init_database(env["DATABASE_URL"], upgrade=False)
    out = []
    with db.connection_context():
        for i in range(users):
            tenant = Tenant.create(email=f"tools{i}@bench.example", plan="light", status="active")
            token = mcp_proxy.rotate(tenant, McpEndpoint(upstream, {}), box, deliver=lambda _t: None)
            out.append((mcp_proxy.proxy_url(public_url, tenant.id), token))
    db.close()
    return out


def _agent(url: str, token: str, data: Path):
    """A tenant agent's MCP layer with the proxy as its ``composio`` server."""
    from agent.mcp_client.config import spec_from_entry
    from agent.mcp_client.manager import McpManager
    from agent.tools.loader import load_builtin_tools
    from agent.tools.registry import LayeredRegistry

    manager = McpManager(LayeredRegistry(load_builtin_tools()), data_dir=data, fail_max=1000)
    status = manager.reload({"composio": spec_from_entry(
        "composio", {"url": url, "headers": {"Authorization": f"Bearer {token}"}})})
    if any(status.values()):
        manager.close()
        raise RuntimeError(f"the proxy did not connect: {status}")
    return manager


def run(users: int, seconds: float, tool_latency: float) -> dict:
    """Run the scenario; return its result record (see ``load.py`` for the shared keys)."""
    from agent.tools.registry import ToolError

    tmp = Path(tempfile.mkdtemp(prefix="hermes-bench-tools-"))
    port = free_port()
    env = {**os.environ, "HERMES_DATA_DIR": str(tmp / "data"), "HERMES_PORT": str(port),
           "DATABASE_URL": f"sqlite:///{tmp}/control.db", "HERMES_LOG_FORMAT": "json",
           "HERMES_PUBLIC_URL": f"http://127.0.0.1:{port}",
           "HERMES_ENCRYPTION_KEYS": Fernet.generate_key().decode()}
    for name in ("REDIS_URL", "HERMES_BUS", "HERMES_BUS_URL"):
        env.pop(name, None)
    upgrade_database(env)
    upstream, upstream_url = _upstream()
    server = GunicornServer(env, tmp / "gunicorn.log")
    managers = []
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    try:
        with server:
            try:
                for i, (url, token) in enumerate(_seed(env, users, upstream_url, server.base_url)):
                    managers.append(_agent(url, token, tmp / f"agent{i}"))
                start = threading.Barrier(users)
                until = time.monotonic() + seconds + 1

                def calls(manager) -> None:
                    start.wait()
                    while time.monotonic() < until:
                        began = time.perf_counter()
                        try:
                            manager.call("composio", "slow", {"seconds": tool_latency})
                        except ToolError as exc:  # counted: a failed call is what the model would hear
                            with lock:
                                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                            continue
                        with lock:
                            latencies.append((time.perf_counter() - began) * 1000)

                threads = [threading.Thread(target=calls, args=(m,), daemon=True) for m in managers]
                began = time.monotonic()
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(seconds + 60)
                elapsed = time.monotonic() - began
            finally:  # before the proxy stops: the sessions end cleanly
                for manager in managers:
                    manager.close()
    finally:
        upstream.terminate()
        upstream.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    p99 = percentile(latencies, 99)
    return {
        "scenario": 4, "target": "tool call p99 < 3000 ms through the MCP proxy",
        "value": round(p99, 1), "unit": "ms", "passed": bool(latencies) and p99 < 3000 and not errors,
        "concurrent_calls": users, "tool_latency_ms": round(tool_latency * 1000), "calls": len(latencies),
        "calls_per_s": round(len(latencies) / elapsed, 1), "errors": errors,
        "p50_ms": round(percentile(latencies, 50), 1), "max_ms": round(max(latencies, default=0.0), 1),
        "server": server.description, "seconds": round(elapsed, 1),
    }
