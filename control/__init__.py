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
    # deferred: this package runs on every control.* import (hermes --help too); these add ~0.8 s
    from control.runtime import Runtime
    from control.web import auth, error_reporting, metrics, request_ids

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

    for module in _web_modules():
        init = getattr(module, "init_app", None)
        if init is not None:
            init(app, runtime)
        else:
            app.register_blueprint(module.bp)
    return app


def _web_modules() -> tuple:
    """The web modules whose blueprint the app serves, in registration order.

    Each module has ``bp`` (registered as is) or ``init_app(app, runtime)`` (registers ``bp``
    after its own set-up); a route that cannot carry a form's CSRF token (a signed webhook, a
    bearer-token API) declares ``csrf.exempt`` next to it, in its module.
    """
    # deferred: this package runs on every control.* import; the web modules add ~0.9 s
    from control.web import (
        accounts,
        billing,
        connections,
        dashboard,
        health,
        jobs,
        llm_gateway,
        mcp_proxy,
        media,
        openapi,
        ops,
        pool,
        slack,
        webhooks,
        whatsapp,
    )

    return (webhooks, health, accounts, dashboard, billing, openapi, connections, mcp_proxy,
            llm_gateway, media, slack, whatsapp, ops, jobs, pool)
