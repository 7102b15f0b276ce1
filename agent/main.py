"""Agent process entry point: ``python -m agent.main run|listen|worker|tools`` (``hermes-agent``).

* ``run``: everything in one process (what the local supervisor starts): the Huey consumer
  (turns, cron ticks) in worker threads and the inbox listener in the main thread.
* ``listen``: the inbox listener only (systemd ``hermes-agent.service`` on a VM).
* ``worker``: the Huey consumer only (systemd ``hermes-huey.service``).
* ``tools``: print the tools the agent would offer the model (built-ins and MCP tools, with
  their server and whether they ask the user first) and any MCP server that is unavailable;
  exit 0.  Starts no listener, consumer or LLM backend.

A worker recovers at start-up (``AgentTasks.recover``): envelopes left unfinished by a killed
process are re-enqueued and missed cron slots within the grace window run once.

Readiness (``agent.lifecycle``): once the LLM backend, bus and stores are up, ``run`` and
``worker`` (the processes owning the LLM backend) publish a lifecycle ``ready`` event on the
tenant's events stream, then a ``heartbeat`` every ``HERMES_HEARTBEAT_INTERVAL`` seconds; the
control plane marks the machine ready on that event only.  ``<data_dir>/agent.ready`` is also
written (pid and mode) for whoever watches the process locally.  An agent that cannot start
(invalid configuration, an LLM backend that cannot load, an unreachable bus) logs ONE error
line, publishes a lifecycle ``failed`` event with that reason when the bus is reachable, and
exits with ``EXIT_CANNOT_START``.  SIGTERM/SIGINT stop cleanly: the listener ends its batch,
the consumer finishes running tasks (up to ``SHUTDOWN_TIMEOUT`` seconds) and no thread is
left behind.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import sys
import threading
import time
from importlib.metadata import version
from pathlib import Path

from agent import lifecycle, metrics
from agent.config import AgentConfig, AgentConfigError, log_format_from_env
from agent.llm.base import LLMError
from wire import logs
from wire.errors import WireError

log = logging.getLogger("agent")

READY_FILE = "agent.ready"
SHUTDOWN_TIMEOUT = 30.0  # seconds a running turn may take to finish on SIGTERM
SIGNAL_POLL = 0.1  # seconds between checks for a stop signal
COMMANDS = ("run", "listen", "worker", "tools")
REPORTING = ("run", "worker")  # the commands that own the LLM backend and report lifecycle
EXIT_CANNOT_START = 2  # systemd and the local supervisor see a start-up failure


def build(config: AgentConfig, command: str):
    """Wire runtime, tasks and (for ``run``/``listen``) the listener; return ``(tasks, listener)``.

    Loads the local model (when it is in the chain) and the embedding model eagerly, so
    readiness means ready to answer without a multi-second first turn.

    Raises:
        LLMError: an LLM backend could not be created or loaded (e.g. a missing model file).
        WireError: the bus is unreachable or refuses our credentials.
    """
    # deferred: a failing import (a broken dependency) is reported as lifecycle "failed" by
    # serve(), after logging and Sentry are up, instead of killing the process silently.
    from agent.listener import InboxListener
    from agent.runtime import AgentRuntime
    from agent.tasks import AgentTasks

    runtime = AgentRuntime(config, start_mcp=command != "listen")
    runtime.bus.ping()
    if command != "listen":
        for backend in runtime.router.backends:
            warm = getattr(backend, "_llama", None)
            if warm is None:
                continue
            try:
                warm()
            except Exception as exc:  # llama.cpp raises ValueError/RuntimeError for bad models
                raise LLMError(f"LLM backend {backend.name} could not load "
                               f"{getattr(backend, 'model_path', '')}: {exc}") from exc
        runtime.embedder().embed(["warm-up"])
    tasks = AgentTasks(runtime)
    listener = InboxListener(runtime, tasks) if command in ("run", "listen") else None
    return tasks, listener


def _ready_path(config: AgentConfig) -> Path:
    return config.data_path / READY_FILE


def serve(config: AgentConfig, command: str) -> int:
    """Run ``command`` until SIGTERM/SIGINT; return the exit code."""
    _ready_path(config).unlink(missing_ok=True)
    tasks, listener = build(config, command)
    stopping = threading.Event()
    consumer = None
    if command in ("run", "worker"):
        recovered = tasks.recover()
        if recovered:
            log.info("recovered %d unfinished envelopes", recovered)
        consumer = tasks.huey.create_consumer(workers=config.workers, periodic=True,
                                              check_worker_health=False, initial_delay=0.05,
                                              max_delay=0.5, shutdown_timeout=SHUTDOWN_TIMEOUT)
        consumer.start()  # installs Huey's own signal handlers: ours go in after
    metrics_server = serve_metrics(config) if command in REPORTING else None

    requested: dict[str, int] = {}

    def on_signal(signum, _frame):
        # Only a plain assignment here: a handler that takes a lock (Event.set) deadlocks when
        # a second signal (PDEATHSIG plus systemd's SIGTERM, say) interrupts it inside the lock.
        requested["signal"] = signum

    def stop_on_request():
        while "signal" not in requested and not stopping.is_set():
            time.sleep(SIGNAL_POLL)
        stopping.set()
        if listener is not None:
            listener.stop()

    threading.Thread(target=stop_on_request, name="signals", daemon=True).start()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    heartbeat = None
    try:
        if command in REPORTING:
            lifecycle.publish(tasks.runtime.bus, config.tenant, "ready",
                              f"hermes-max {version('hermes-max')}; "
                              f"llm chain {','.join(config.llm_chain)}")
            heartbeat = lifecycle.Heartbeat(tasks.runtime.bus, config.tenant, config.heartbeat_interval)
            heartbeat.start()
        _ready_path(config).write_text(json.dumps({"pid": os.getpid(), "at": time.time(),
                                                   "llm": config.llm, "mode": command}))
        log.info("agent %s for tenant %s ready (llm chain %s)", command, config.tenant,
                 ",".join(config.llm_chain))
        if listener is not None:
            listener.run()
        else:
            while not stopping.wait(1.0):
                pass
    finally:
        stopping.set()
        if heartbeat is not None:
            heartbeat.stop()
        if consumer is not None:
            consumer.stop(graceful=True)
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
        tasks.runtime.close()
        log.info("agent %s stopped", command)
    return 0


def list_tools(config: AgentConfig, out=None) -> int:
    """Print the tools ``config``'s agent would offer the model (``agent.mcp_client.listing``); return 0."""
    # deferred: the MCP SDK (~0.5 s) only for this command.
    from agent.mcp_client.config import McpConfigError, load_servers, specs_from_servers
    from agent.mcp_client.listing import table
    from agent.mcp_client.manager import McpManager
    from agent.tools.loader import load_builtin_tools
    from agent.tools.permissions import ToolPermissions
    from agent.tools.registry import LayeredRegistry

    out = out or sys.stdout
    registry = LayeredRegistry(load_builtin_tools())
    manager = McpManager(registry, data_dir=config.data_path, fail_max=config.breaker_fail_max,
                         reset=config.breaker_reset)
    try:
        try:
            status = manager.reload(specs_from_servers(load_servers(config.mcp_servers, config.data_path)))
        except McpConfigError as exc:
            print(f"MCP servers not loaded: {exc}", file=out)
            status = {}
        allowed = ToolPermissions(config.data_path / "tool_permissions.json").always()
        print("\n".join(table(registry, status, allowed)), file=out)
    finally:
        manager.close()
    return 0


def serve_metrics(config: AgentConfig):
    """Start the Prometheus endpoint (``agent.metrics``); None when off or when it cannot bind.

    A taken port is logged, not fatal: the user's agent matters more than its counters, and
    Prometheus reports the target down (``up == 0``).
    """
    try:
        server = metrics.serve(config)
    except OSError as exc:
        log.error("metrics endpoint %s:%s not started: %s", config.metrics_addr,
                  config.metrics_port, exc)
        return None
    if server is not None:
        log.info("metrics on %s:%d", config.metrics_addr, server.server_port)
    return server


def start_error_reporting(config: AgentConfig) -> bool:
    """Start Sentry when ``SENTRY_DSN`` is set (``wire.sentry``); return True if so."""
    from urllib.parse import urlsplit

    # deferred: sentry-sdk (~0.3 s) loads only in the processes that report errors.
    from wire.sentry import init_sentry

    return init_sentry(config.sentry_dsn, environment="agent", secrets=(
        config.anthropic_api_key, config.openai_api_key, urlsplit(config.bus_url).password or ""))


PR_SET_PDEATHSIG = 1  # prctl(2): signal delivered when the parent process dies (Linux).


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to send SIGTERM when ``parent_pid`` (our parent) dies; exit if it already has.

    Done here rather than in a ``preexec_fn`` because running Python between fork and exec in
    the multi-threaded control plane can deadlock (subprocess docs, ``preexec_fn``).
    """
    if not parent_pid or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:
        sys.exit(0)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m agent.main run|listen|worker``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="agent", description="Hermes Max tenant agent")
    parser.add_argument("command", choices=COMMANDS,
                        help="run: listener + Huey consumer; listen: inbox listener; worker: Huey consumer; "
                             "tools: list the tools offered to the model")
    args = parser.parse_args(argv)
    config = None
    try:
        logs.configure(log_format_from_env())
        config = AgentConfig.from_env()
        start_error_reporting(config)
        die_with_parent(config.parent_pid)
        config.data_path.mkdir(parents=True, exist_ok=True)
        if args.command == "tools":
            return list_tools(config)
        return serve(config, args.command)
    except (AgentConfigError, LLMError, WireError) as exc:
        reason = f"agent cannot start: {exc}"
        log.error("%s", reason)
        if args.command in REPORTING:
            report_failure(config or AgentConfig.reporting_from_env(), reason)
        return EXIT_CANNOT_START


def report_failure(config: AgentConfig | None, reason: str) -> bool:
    """Publish a lifecycle ``failed`` event with ``reason`` if the bus can be reached.

    Best effort and silent: the caller has already logged the one line that explains the exit.

    Returns:
        True when the event was published.
    """
    # deferred: this runs when start-up failed; it must not depend on what failed to import.
    from wire.factory import bus_from_url

    if config is None:
        return False
    try:
        bus = bus_from_url(config.bus_url, ca_file=config.bus_ca_file)
    except WireError:
        return False
    try:
        lifecycle.publish(bus, config.tenant, "failed", reason)
        return True
    except WireError:
        return False
    finally:
        bus.close()


if __name__ == "__main__":
    sys.exit(main())
