"""Sessions, CSRF and rate limits for the web pages (flask-login, flask-wtf, flask-limiter).

Cookies follow OWASP's Session Management Cheat Sheet: ``HttpOnly``, ``SameSite=Lax`` and
``Secure`` whenever the public URL is HTTPS.  Webhooks are exempt from CSRF: they are
authenticated by their signatures instead.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

from control.errors import ConfigError
from control.services.accounts import load_user
from control.settings import Settings
from control.web import security_headers

login_manager = LoginManager()
csrf = CSRFProtect()
# Route decorators use ``limiter.limit(...)``; storage comes from HERMES_RATE_LIMIT_STORAGE.
limiter = Limiter(key_func=get_remote_address, default_limits=[], headers_enabled=True)
# Sessions last 14 days (a "remember this browser" default of consumer apps); a sign-in
# rotates the session (flask-login ``login_user`` with a fresh ``session_version``-bound id).
SESSION_LIFETIME = timedelta(days=14)


def secret_key(settings: Settings) -> str:
    """Return ``HERMES_SECRET_KEY``; in local mode create one in ``<data_dir>/secret_key``.

    Raises:
        ConfigError: no key outside local mode (``HERMES_ENV`` other than ``local``).
    """
    if settings.secret_key:
        return settings.secret_key
    if settings.env != "local":
        raise ConfigError("HERMES_SECRET_KEY is required outside local mode (it signs sessions)")
    path = Path(settings.data_dir) / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def init_app(app: Flask, settings: Settings) -> None:
    """Configure the secret key, cookie flags, flask-login, CSRF and the rate limiter."""
    app.config.update(
        SECRET_KEY=secret_key(settings),
        SESSION_COOKIE_NAME="hermes_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.public_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=settings.public_url.startswith("https://"),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        RATELIMIT_STORAGE_URI=settings.rate_limit_storage,
    )
    login_manager.login_view = "accounts.login"
    login_manager.session_protection = "basic"
    login_manager.user_loader(load_user)
    login_manager.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)
    security_headers.init_app(app)
