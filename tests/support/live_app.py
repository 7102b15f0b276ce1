"""The control app served in-process on a real 127.0.0.1 port, for clients that need a URL
(the providers' SDKs, the gateway's agents)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from werkzeug.serving import make_server

from control import create_app
from control.runtime import Runtime
from control.settings import Settings


@contextmanager
def live_app(settings_for: Callable[[str], Settings]) -> Iterator[tuple[str, Runtime]]:
    """Serve the control app (werkzeug, threaded) made from ``settings_for(public_url)``.

    Yields:
        ``(public_url, runtime)``; the server is shut down and the runtime closed on exit.
    """
    holder = {}
    # A lambda, not holder["app"]: the app is made below, once the server's port is known.
    server = make_server("127.0.0.1", 0, lambda env, start: holder["app"](env, start),  # noqa: PLW0108
                         threaded=True)
    public_url = f"http://127.0.0.1:{server.server_port}"
    settings = settings_for(public_url)
    runtime = Runtime(settings, upgrade_schema=True)
    holder["app"] = create_app(settings, runtime)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield public_url, runtime
    finally:
        server.shutdown()
        thread.join(timeout=10)
        runtime.close()
