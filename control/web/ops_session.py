"""The operator session of mission control (issue 21): a cookie of its own, apart from users'.

The cookie ``hermes_ops`` holds ``[operator id, session_version]`` signed with the app's
secret key (itsdangerous, salt ``SALT``), scoped to ``/ops``, ``HttpOnly``,
``SameSite=Strict`` (an operator's actions never start on another site) and ``Secure`` under
HTTPS.  It is a browser-session cookie that stops being accepted ``LIFETIME`` after sign-in
(OWASP Session Management Cheat Sheet: short absolute timeouts for privileged sessions).
Removing the operator, resetting their TOTP or signing out (``session_version``) ends it.
"""

from __future__ import annotations

from datetime import timedelta

from flask import current_app, g, request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.wrappers import Response

from control.models import Operator
from control.services import operators

COOKIE = "hermes_ops"
SALT = "hermes-ops-session"
PATH = "/ops"
#: An operator signs in again after 8 hours: one working day.
LIFETIME = timedelta(hours=8)


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=SALT)


def current() -> Operator | None:
    """The signed-in operator of this request (cached on ``g``), or None."""
    if "ops_operator" not in g:
        g.ops_operator = None
        raw = request.cookies.get(COOKIE)
        if raw:
            try:
                value = _serializer().loads(raw, max_age=int(LIFETIME.total_seconds()))
            except BadSignature:  # also SignatureExpired
                value = None
            if (isinstance(value, list) and len(value) == 2
                    and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
                g.ops_operator = operators.load(value[0], value[1])
    return g.ops_operator


def start(response: Response, operator: Operator) -> Response:
    """Set the session cookie of ``operator`` on ``response``."""
    token = _serializer().dumps([operator.id, operator.session_version])
    response.set_cookie(COOKIE, token, path=PATH, httponly=True, samesite="Strict",
                        secure=current_app.config.get("SESSION_COOKIE_SECURE", False))
    return response


def end(response: Response) -> Response:
    """Delete the session cookie on ``response``."""
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="Strict",
                           secure=current_app.config.get("SESSION_COOKIE_SECURE", False))
    return response
