"""MCP tool-call overhead (issue 13): what the agent's MCP layer adds to a tool call.

    python bench/mcp_tool_calls.py [--calls 300] [--concurrency 50] [--rounds 5]

The test MCP server (``tests/support/mcp_server.py``, the SDK's ``MCPServer``) runs over stdio
(a child process) and over streamable HTTP (a uvicorn child process on loopback).  Each call
goes through ``McpManager.call`` - the synchronous facade the tool loop uses: the hop onto the
MCP event-loop thread, the circuit breaker, the JSON-RPC round trip, result conversion and
redaction - to the ``noop`` tool, whose own time is nil, so the measured time is our part
(the SDK's client and server included: they are what a tool call costs).

* ``<transport>_p50_ms`` / ``<transport>_p99_ms``: sequential calls, ``--calls`` each.
* ``<transport>_concurrent_p99_ms``: ``--concurrency`` calls started together from as many
  threads (the loop's tool threads), ``--rounds`` times; p99 of each call's latency.
* ``<transport>_sdk_p50_ms``: the same call made directly with the SDK's client on the MCP
  loop (no thread hop, breaker or conversion): the facade's own cost is the difference.
Seed target under load: 3 s including Composio (issue 13), so our part must stay far below.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.mcp_client.config import spec_from_entry
from agent.mcp_client.manager import McpManager
from agent.tools.loader import load_builtin_tools
from agent.tools.registry import LayeredRegistry

SERVER = str(ROOT / "tests" / "support" / "mcp_server.py")


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def start_http_server() -> tuple[subprocess.Popen, str]:
    """Start the test server over streamable HTTP on a free loopback port; return (process, url)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, SERVER, "http", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}/mcp"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("MCP HTTP server did not start")


def timed(manager: McpManager, server: str) -> float:
    started = time.perf_counter()
    manager.call(server, "noop", {})
    return (time.perf_counter() - started) * 1000


def sdk_latencies(manager: McpManager, server: str, calls: int) -> list[float]:
    """Latencies (ms) of ``calls`` direct SDK calls of ``noop``, timed on the MCP loop itself."""
    client = manager._servers[server].connection.client

    async def run():
        out = []
        for _ in range(calls):
            started = time.perf_counter()
            await client.call_tool("noop", {})
            out.append((time.perf_counter() - started) * 1000)
        return out
    return manager._run(run(), timeout=300)


def concurrent_latencies(manager: McpManager, server: str, concurrency: int) -> list[float]:
    """Start ``concurrency`` calls together (a barrier); return each one's latency in ms."""
    barrier = threading.Barrier(concurrency)
    out: list[float] = []
    lock = threading.Lock()

    def worker():
        barrier.wait()
        ms = timed(manager, server)
        with lock:
            out.append(ms)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    http_proc, url = start_http_server()
    data = Path(tempfile.mkdtemp(prefix="mcp-bench-"))
    manager = McpManager(LayeredRegistry(load_builtin_tools()), data_dir=data, fail_max=1000)
    figures: dict = {"bench": "mcp_tool_calls", "calls": args.calls, "concurrency": args.concurrency}
    try:
        status = manager.reload({
            "stdio": spec_from_entry("stdio", {"command": sys.executable, "args": [SERVER, "stdio"],
                                               "env": {"PATH": os.environ.get("PATH", "")}}),
            "http": spec_from_entry("http", {"url": url})})
        if any(status.values()):
            raise SystemExit(f"servers not ready: {status}")
        for transport in ("stdio", "http"):
            for _ in range(20):  # warm-up: first calls pay imports and connection set-up
                timed(manager, transport)
            sequential = [timed(manager, transport) for _ in range(args.calls)]
            loaded: list[float] = []
            for _ in range(args.rounds):
                loaded += concurrent_latencies(manager, transport, args.concurrency)
            figures[f"{transport}_p50_ms"] = round(percentile(sequential, 0.5), 2)
            figures[f"{transport}_p99_ms"] = round(percentile(sequential, 0.99), 2)
            sdk = sdk_latencies(manager, transport, args.calls)
            figures[f"{transport}_sdk_p50_ms"] = round(percentile(sdk, 0.5), 2)
            figures[f"{transport}_concurrent_p50_ms"] = round(percentile(loaded, 0.5), 2)
            figures[f"{transport}_concurrent_p99_ms"] = round(percentile(loaded, 0.99), 2)
    finally:
        manager.close()
        http_proc.terminate()
        http_proc.wait(10)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
