"""LLM gateway overhead (issue 19): what routing an agent's model call through the control
plane adds.

    python bench/llm_gateway.py [--calls 300] [--concurrency 50] [--rounds 4]

The Anthropic stand-in (``standins/anthropic_api.py``) answers ``stream: true`` Messages calls
at once; the control app (``control/web/llm_gateway.py``, SQLite, werkzeug's threaded server)
runs on loopback in front of it with one light tenant and its gateway token.  Each call is an
``httpx`` streaming POST; time to first token is until the first ``content_block_delta`` event
arrives.

* ``direct_ttft_p50_ms`` / ``_p99_ms``: sequential calls straight to the stand-in.
* ``gateway_ttft_p50_ms`` / ``_p99_ms``: the same through the gateway (token lookup, plan and
  budget check, forward, SSE pass-through, metering row).
* ``added_ttft_p50_ms`` / ``added_ttft_p99_ms``: the difference (aim: p99 < 20 ms).
* ``streams_per_s_at_<n>``: ``--concurrency`` threads each streaming whole replies through the
  gateway for ``--rounds`` calls; completed streams per second, and ``concurrent_ttft_p99_ms``.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx
from werkzeug.serving import make_server

from control import create_app
from control.models import Tenant
from control.runtime import Runtime
from control.services import llm_gateway
from control.settings import Settings
from standins.anthropic_api import AnthropicStandin, text_reply

BODY = {"model": "claude-haiku-5-5", "max_tokens": 64, "stream": True,
        "messages": [{"role": "user", "content": "Say something short."}]}
REPLY = "A short answer of a few words, streamed in eight-character pieces."


def ttft_ms(client: httpx.Client, url: str, headers: dict) -> float:
    """Stream one reply to the end; return milliseconds until its first text delta."""
    started = time.perf_counter()
    first = None
    with client.stream("POST", url, json=BODY, headers=headers) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            if first is None and line.startswith("event: content_block_delta"):
                first = time.perf_counter()
    return ((first or time.perf_counter()) - started) * 1000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data, \
            AnthropicStandin(responder=lambda _request: text_reply(REPLY)) as claude:
        holder: dict = {}
        server = make_server("127.0.0.1", 0, lambda env, start: holder["app"](env, start),  # noqa: PLW0108
                             threaded=True)
        public = f"http://127.0.0.1:{server.server_port}"
        settings = Settings(data_dir=data, public_url=public, llm_anthropic_api_key="sk-ant-bench",
                            llm_anthropic_url=claude.base_url, plan_budget_cents={"light": 0})
        runtime = Runtime(settings, upgrade_schema=True)
        holder["app"] = create_app(settings, runtime)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        with runtime.db.connection_context():
            tenant = Tenant.create(email="bench@example.com", plan="light", status="active")
            token = llm_gateway.issue(tenant.id)
        headers = {"x-api-key": token, "anthropic-version": "2023-06-01"}
        direct_url = f"{claude.base_url}/v1/messages"
        gateway_url = f"{public}{llm_gateway.ANTHROPIC_PATH}/v1/messages"
        limits = httpx.Limits(max_connections=args.concurrency * 2)
        with httpx.Client(timeout=30, limits=limits) as client:
            for url in (direct_url, gateway_url):  # warm both paths (connections, imports)
                for _ in range(20):
                    ttft_ms(client, url, headers)
            direct, through = [], []
            for _ in range(args.calls):  # interleaved, so drift hits both alike
                direct.append(ttft_ms(client, direct_url, headers))
                through.append(ttft_ms(client, gateway_url, headers))
            concurrent: list[float] = []
            lock = threading.Lock()

            def stream_rounds():
                mine = [ttft_ms(client, gateway_url, headers) for _ in range(args.rounds)]
                with lock:
                    concurrent.extend(mine)

            workers = [threading.Thread(target=stream_rounds) for _ in range(args.concurrency)]
            started = time.perf_counter()
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            elapsed = time.perf_counter() - started
        server.shutdown()
        runtime.close()
    result = {
        "bench": "llm_gateway", "calls": args.calls,
        "direct_ttft_p50_ms": round(statistics.median(direct), 2),
        "direct_ttft_p99_ms": round(percentile(direct, 0.99), 2),
        "gateway_ttft_p50_ms": round(statistics.median(through), 2),
        "gateway_ttft_p99_ms": round(percentile(through, 0.99), 2),
        "added_ttft_p50_ms": round(statistics.median(through) - statistics.median(direct), 2),
        "added_ttft_p99_ms": round(percentile(through, 0.99) - percentile(direct, 0.99), 2),
        f"streams_per_s_at_{args.concurrency}": round(len(concurrent) / elapsed, 1),
        "concurrent_ttft_p99_ms": round(percentile(concurrent, 0.99), 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
