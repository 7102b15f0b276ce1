"""The scaffolding shared by the LLM API stand-ins: a threaded loopback HTTP server that answers
each request with the next scripted reply, or a responder's when the script is empty."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable


def wait_notified(changed: threading.Condition, predicate: Callable[[], object],
                  timeout: float) -> bool:
    """Wait until ``predicate()`` is true, checking it whenever ``changed`` is notified (a
    stand-in notifies after each request it records) and at least every 0.2 s.

    Returns:
        True once it holds, False after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        with changed:
            changed.wait(min(remaining, 0.2))
    return True


def send_json(handler: http.server.BaseHTTPRequestHandler, status: int, payload: dict,
              headers: dict[str, str] | None = None) -> None:
    """Answer ``handler``'s request with ``payload`` as JSON (``Content-Length`` set) plus
    ``headers``."""
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


class ApiServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server with a listen backlog like a real API front end's.

    socketserver's default backlog is 5: a burst of new connections (50 agents calling at once)
    overflows it and Linux drops the extra SYNs, which each cost the client a 1 s retransmit
    - latency the real API does not add.
    """

    request_queue_size = 128


class ScriptedServer:
    """Threaded HTTP server on loopback with a reply script.

    Subclasses set ``handler_class`` (a ``BaseHTTPRequestHandler`` that reads ``self.owner``),
    ``thread_name``, ``base_path`` (appended to ``base_url``) and ``make_reply`` (turns a ``str``
    in a script into a reply object).

    Args:
        responder: ``request_json -> reply`` used when the script is empty.
        host: bind address (loopback).

    Attributes:
        requests: every request received, ``{"path", "headers", "json"}``, in order.
        base_url: ``http://host:port<base_path>`` once started (the SDK's ``base_url``).
    """

    handler_class: type[http.server.BaseHTTPRequestHandler]
    thread_name = "standin"
    base_path = ""

    def __init__(self, responder: Callable[[dict], object], host: str = "127.0.0.1"):
        self.responder = responder
        self.host = host
        self.requests: list[dict] = []
        self.base_url = ""
        self._script: list = []
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def make_reply(text: str):
        """Return the reply a plain string in a script stands for."""
        raise TypeError("this stand-in takes reply objects only")

    def start(self) -> str:
        """Start serving in a daemon thread; return ``base_url``."""
        handler = type("Handler", (self.handler_class,), {"owner": self})
        self._server = ApiServer((self.host, 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=self.thread_name,
                                        daemon=True)
        self._thread.start()
        self.base_url = f"http://{self.host}:{self._server.server_address[1]}{self.base_path}"
        return self.base_url

    def stop(self) -> None:
        """Stop serving and join the server thread."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = None

    def script(self, replies: list) -> None:
        """Queue ``replies`` (a ``str`` is a text reply) to answer the next requests in order."""
        with self._lock:
            self._script.extend(self.make_reply(r) if isinstance(r, str) else r for r in replies)

    @property
    def remaining(self) -> int:
        """How many scripted replies are still unused."""
        with self._lock:
            return len(self._script)

    def _next_reply(self, body: dict):
        with self._lock:
            if self._script:
                return self._script.pop(0)
        return self.responder(body)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
