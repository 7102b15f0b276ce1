"""Hermes Max control plane: a thin Flask app over plain-Python services."""

from __future__ import annotations

from flask import Flask

from control.errors import register_error_handlers
from control.settings import Settings


def create_app(settings: Settings | None = None, runtime=None) -> Flask:
    """Build the control-plane WSGI app (Flask tutorial's factory pattern).

    Args:
        settings: configuration; default ``Settings.from_env()``.
        runtime: shared resources (``control.runtime.Runtime``); default built from settings.

    Returns:
        The Flask app; ``app.extensions["hermes"]`` holds the runtime.
    """
    from control.runtime import Runtime
    from control.web import health, metrics, webhooks

    if runtime is None:
        runtime = Runtime(settings or Settings.from_env())
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 1 * 1024 * 1024  # bytes; webhooks are small.
    app.extensions["hermes"] = runtime
    register_error_handlers(app)
    metrics.init_app(app, runtime)

    @app.before_request
    def _connect_db():
        runtime.db.connect(reuse_if_open=True)

    @app.teardown_request
    def _close_db(_exc):
        if not runtime.db.is_closed():
            runtime.db.close()

    app.register_blueprint(webhooks.bp)
    app.register_blueprint(health.bp)
    return app
