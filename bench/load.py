"""The specification's four load scenarios (seed 000 §5.3, issue 22), on loopback.

    python bench/load.py --scenario 1|2|3|4 [options]

1. ``load_chat``: concurrent Telegram users chatting through ``hermes serve`` with an LLM
   stand-in of fixed latency; target p99 end to end < 2 s (locust, headless).
2. ``load_signups``: simultaneous sign-ups provisioned by ``HetznerProvisioner`` against the
   hcloud stand-in with Hetzner's rate limit, a modelled ``pulumi up`` and boot, cold or with
   ``--warm-pool N``; target all ready < 5 min.
3. ``load_bus``: 1,000 messages/s through Redis, envelopes over 200 tenants, answered by agent
   stand-ins and delivered by ``DeliveryWorker`` processes to the Telegram stand-in; target the
   offered rate sustained with nothing lost or duplicated; plus one control host's webhook
   ingress ceiling.
4. ``load_tools``: concurrent MCP tool calls through the control plane's MCP proxy; target
   p99 < 3 s.

Each prints ONE JSON line with ``scenario``, ``target`` (the rule, in words), ``value``,
``unit`` and ``passed``, plus the scenario's detail (percentiles, counts).  Each scenario's own
module documents what runs and what is measured; every one stays under about 3 minutes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", type=int, choices=(1, 2, 3, 4), required=True)
    parser.add_argument("--users", type=int, default=50, help="1 and 4: concurrent users / calls")
    parser.add_argument("--seconds", type=float, default=60.0, help="1, 3 and 4: how long to load")
    parser.add_argument("--llm-latency", type=float, default=0.8,
                        help="1: the LLM stand-in's time to first token, seconds")
    parser.add_argument("--real-agents", type=int, default=1,
                        help="1: tenants with a real agent process (the others: AgentStandin)")
    parser.add_argument("--signups", type=int, default=100, help="2: simultaneous sign-ups")
    parser.add_argument("--boot", type=float, default=40.0, help="2: modelled server boot, seconds")
    parser.add_argument("--warm-pool", type=int, default=0,
                        help="2: pre-booted light servers in the warm pool (0: every sign-up cold)")
    parser.add_argument("--provision-workers", type=int, default=16,
                        help="2: threads of the provisioning queue (HERMES_PROVISION_WORKERS)")
    parser.add_argument("--rate", type=float, default=1000.0, help="3: messages per second offered")
    parser.add_argument("--tenants", type=int, default=200, help="3: tenants the messages spread over")
    parser.add_argument("--delivery-workers", type=int, default=4,
                        help="3: delivery worker processes, one tenant shard each (HERMES_DELIVERY_SHARD)")
    parser.add_argument("--delivery-concurrency", type=int, default=8,
                        help="3: send threads per delivery worker (HERMES_DELIVERY_CONCURRENCY)")
    parser.add_argument("--tool-latency", type=float, default=0.5,
                        help="4: the upstream tool's own time, seconds (Composio's part)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]  # the machine is shared: say how busy it was
    if args.scenario == 1:
        import locust  # noqa: F401  (gevent's monkey patching must precede the stack's imports)
        # isort: split
        import load_chat

        _quiet()
        result = load_chat.run(args.users, args.seconds, args.llm_latency, args.real_agents)
    elif args.scenario == 2:
        import load_signups

        _quiet()
        result = load_signups.run(args.signups, args.boot, args.warm_pool, args.provision_workers)
    elif args.scenario == 3:
        import load_bus

        _quiet()
        result = load_bus.run(args.rate, args.seconds, args.tenants, args.delivery_workers,
                              args.delivery_concurrency)
    else:
        import load_tools

        _quiet()
        result = load_tools.run(args.users, args.seconds, args.tool_latency)
    result["loadavg_1m"] = round(max(load_before, os.getloadavg()[0]), 2)
    print(json.dumps(result))


def _quiet() -> None:
    """Send the code under test's logs to stderr, warnings and worse only: stdout is the
    result line."""
    from wire import logs

    logs.configure("console", logging.WARNING)


if __name__ == "__main__":
    main()
