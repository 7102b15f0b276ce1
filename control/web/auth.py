"""Sessions, CSRF and rate limits for the web pages (flask-login, flask-wtf, flask-limiter).

Cookies follow OWASP's Session Management Cheat Sheet: ``HttpOnly``, ``SameSite=Lax`` and
``Secure`` whenever the public URL is HTTPS.  Webhooks are exempt from CSRF: they are
authenticated by their signatures instead.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from datetime import timedelta
from pathlib import Path

from flask import Flask, request
from flask_limiter import Limiter
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

from control.errors import BadRequest, ConfigError
from control.services.accounts import load_user, normalize_email
from control.settings import Settings
from control.web import security_headers, stream_cap

# An IPv6 client is counted by its /64: RFC 6177 and RIPE-690 hand every end site (a home, a
# VPS) at least a /64, so one attacker holds 2^64 addresses but only one /64 of them.
IPV6_CLIENT_PREFIX = 64


def client_key() -> str:
    """Rate-limit key of the client (``request.remote_addr``, after ``ProxyFix``).

    Returns:
        ``"ip:<IPv4 address>"`` (an IPv4-mapped IPv6 address counts as its IPv4 address),
        ``"ip:<network>/64"`` for IPv6, or ``"ip:<raw value>"`` when it is not an address.
    """
    raw = request.remote_addr or ""
    try:
        address = ipaddress.ip_address(raw.split("%", 1)[0])
    except ValueError:
        return f"ip:{raw}"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"ip:{address.ipv4_mapped}"
        return f"ip:{ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False)}"
    return f"ip:{address}"


def account_key() -> str:
    """Rate-limit key of the account a form names: ``"email:<normalized address>"`` from the
    posted ``email`` field (lower-cased as typed when it is not a valid address), so every
    spelling of one address shares its counter whatever network the tries come from."""
    typed = request.form.get("email", "")
    try:
        return f"email:{normalize_email(typed)}"
    except BadRequest:
        return f"email:{typed.strip().lower()}"


login_manager = LoginManager()
csrf = CSRFProtect()
# Route decorators use ``limiter.limit(...)``; storage comes from HERMES_RATE_LIMIT_STORAGE.
# Limits are checked before the view runs, so a refused try costs no Argon2 hash.
limiter = Limiter(key_func=client_key, default_limits=[], headers_enabled=True)
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
    """Configure the secret key, cookie flags, flask-login, CSRF, the rate limiter and the
    per-tenant stream cap (both count in ``HERMES_RATE_LIMIT_STORAGE``)."""
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
    stream_cap.init_app(app, settings)
    security_headers.init_app(app)
