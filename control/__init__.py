"""Hermes Max control plane: a thin Flask app over plain-Python services."""

from __future__ import annotations

from flask import Flask

from control.errors import register_error_handlers
from control.settings import Settings
from wire import logs


def create_app(settings: Settings | None = None, runtime=None) -> Flask:
    """Build the control-plane WSGI app (Flask tutorial's factory pattern).

    Called with no arguments it is gunicorn's entry point (``control:create_app()``) and
    configures logging for the process (``wire.logs``, ``HERMES_LOG_FORMAT``); callers that
    pass settings (``hermes serve``, tests) have set logging up themselves.

    Args:
        settings: configuration; default ``Settings.from_env()``.
        runtime: shared resources (``control.runtime.Runtime``); default built from settings.

    Returns:
        The Flask app; ``app.extensions["hermes"]`` holds the runtime.
    """
    from control.runtime import Runtime
    from control.web import accounts, auth, error_reporting, health, metrics, request_ids, webhooks

    if settings is None and runtime is None:
        settings = Settings.from_env()
        logs.configure(settings.log_format)
    if runtime is None:
        runtime = Runtime(settings or Settings.from_env())
    error_reporting.init_app(runtime.settings)
    app = Flask(__name__)
    if runtime.settings.proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Host is not taken from X-Forwarded-Host: nginx sets Host itself and passes a
        # client's X-Forwarded-Host through untouched.
        hops = runtime.settings.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    app.config["MAX_CONTENT_LENGTH"] = 1 * 1024 * 1024  # bytes; webhooks are small.
    app.extensions["hermes"] = runtime
    auth.init_app(app, runtime.settings)
    register_error_handlers(app)
    request_ids.init_app(app)
    metrics.init_app(app, runtime)

    @app.before_request
    def _connect_db():
        runtime.db.connect(reuse_if_open=True)

    @app.teardown_request
    def _close_db(_exc):
        if not runtime.db.is_closed():
            runtime.db.close()

    auth.csrf.exempt(webhooks.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(accounts.bp)
    from control.web import dashboard, openapi

    app.register_blueprint(dashboard.bp)
    from control.web import billing

    app.register_blueprint(billing.bp)
    app.register_blueprint(openapi.bp)
    from control.web import connections

    auth.csrf.exempt(connections.webhook)
    app.register_blueprint(connections.bp)
    from control.web import mcp_proxy

    auth.csrf.exempt(mcp_proxy.bp)
    app.register_blueprint(mcp_proxy.bp)
    from control.web import llm_gateway

    auth.csrf.exempt(llm_gateway.bp)
    app.register_blueprint(llm_gateway.bp)
    from control.web import media

    app.register_blueprint(media.bp)
    from control.web import slack

    auth.csrf.exempt(slack.bp)
    slack.init_app(app, runtime)
    from control.web import whatsapp

    auth.csrf.exempt(whatsapp.bp)
    whatsapp.init_app(app, runtime)
    from control.web import ops

    ops.init_app(app)
    return app
