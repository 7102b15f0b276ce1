"""The control plane's error hierarchy and its single Flask error handler.

Every error a client can see is a ``HermesError`` with an HTTP status and a stable ``code``;
the handler renders ``{"error": code, "message": text}`` and never a stack trace.
"""

from __future__ import annotations


class HermesError(Exception):
    """Base of every control-plane error.

    Attributes:
        status: HTTP status code to answer with when this reaches a client.
        code: stable machine-readable error code.
    """

    status = 500
    code = "internal_error"

    def __init__(self, message: str = "", *, code: str | None = None):
        super().__init__(message or (self.__class__.__doc__ or "").strip().splitlines()[0])
        if code:
            self.code = code

    @property
    def message(self) -> str:
        """The human-readable message."""
        return str(self)


class BadRequest(HermesError):
    """The request body is malformed."""

    status = 400
    code = "bad_request"


class SignatureError(HermesError):
    """The webhook signature is missing or does not verify (Stripe answers 400, per its docs)."""

    status = 400
    code = "bad_signature"


class Unauthorized(HermesError):
    """The request is not authenticated."""

    status = 401
    code = "unauthorized"


class Forbidden(HermesError):
    """Your role does not allow this."""

    status = 403
    code = "forbidden"


class NotFound(HermesError):
    """The requested object does not exist."""

    status = 404
    code = "not_found"


class Conflict(HermesError):
    """The request conflicts with the object's current state."""

    status = 409
    code = "conflict"


class ServiceUnavailable(HermesError):
    """A dependency (database, bus) is unavailable; the caller should retry."""

    status = 503
    code = "unavailable"


class TooManyRequests(HermesError):
    """Too many requests at once; try again later."""

    status = 429
    code = "too_many_requests"

    def __init__(self, message: str = "", *, retry_after: int, code: str | None = None):
        """``retry_after``: seconds to wait, sent as ``Retry-After`` (RFC 9110, 10.2.3)."""
        super().__init__(message, code=code)
        self.retry_after = retry_after


class ProvisioningError(HermesError):
    """A machine could not be created, resized, archived or deleted."""

    code = "provisioning_failed"


class ConfigError(HermesError):
    """The configuration is invalid or incomplete."""

    code = "config_error"


class PaymentProviderError(HermesError):
    """The payment provider (Stripe) failed or refused the request; nothing was charged here."""

    status = 502
    code = "payment_provider_error"


class LinkError(HermesError):
    """A link token is unknown, expired or already used."""

    status = 400
    code = "link_failed"


class MisroutedEvent(HermesError):
    """An agent's event may not be delivered: it names another tenant, another tenant's reply,
    or a chat not linked to the tenant whose events stream it came from
    (``control.services.event_guard``).  Never reaches a client: the event is dead-lettered."""

    status = 403
    code = "misrouted_event"


def wants_html() -> bool:
    """True when the request prefers an HTML page to JSON: a browser's ``Accept`` header
    (``text/html,...,*/*;q=0.8``).  API clients and webhooks (no ``Accept``, ``*/*`` or
    ``application/json``) keep the JSON body."""
    from flask import has_request_context, request

    return has_request_context() and request.accept_mimetypes.best_match(
        ["application/json", "text/html"]) == "text/html"


def _page(status: int, message: str, headers=()):
    """The HTML error page (``control/templates/accounts/error.html``) for a browser."""
    from flask import render_template
    from werkzeug.http import HTTP_STATUS_CODES

    body = render_template("accounts/error.html", status=status,
                           title=HTTP_STATUS_CODES.get(status, "Error"), message=message)
    return body, status, headers


def register_error_handlers(app) -> None:
    """Render every ``HermesError`` and every unexpected exception as JSON on ``app`` (an HTML
    page instead when the client is a browser, ``wants_html``).

    Unexpected exceptions are logged with their traceback and answered with a generic 500
    body, so no client ever sees a stack trace.
    """
    from flask import jsonify
    from flask_wtf.csrf import CSRFError
    from werkzeug.exceptions import HTTPException

    def render_hermes(err: HermesError):
        headers = ({"Retry-After": str(err.retry_after)} if isinstance(err, TooManyRequests)
                   else {})
        if wants_html():
            return _page(err.status, err.message, headers)
        return jsonify(error=err.code, message=err.message), err.status, headers

    def render_http(err: HTTPException):
        # Keep the exception's own headers: a 405 must name the allowed methods (RFC 9110,
        # 15.5.6 "Allow"), a 429 its Retry-After.
        headers = [(k, v) for k, v in err.get_headers() if k.lower() != "content-type"]
        if wants_html():
            return _page(err.code or 500, _page_message(err), headers)
        body = jsonify(error=err.name.lower().replace(" ", "_"), message=err.description)
        return body, err.code, headers

    def render_unexpected(err: Exception):
        app.logger.error("unhandled error", exc_info=err)
        if wants_html():
            return _page(500, "Something went wrong on our side. Please try again later.")
        return jsonify(error="internal_error", message="internal error"), 500

    def _page_message(err: HTTPException) -> str:
        # Werkzeug's descriptions are written for developers; a person needs the next step.
        if isinstance(err, CSRFError):
            return (f"This form could not be accepted ({err.description}) Nothing was saved. "
                    "Go back, reload the page and try again.")
        if err.code == 429:
            return "Too many attempts from your address. Please wait a little, then try again."
        return err.description or ""

    app.register_error_handler(HermesError, render_hermes)
    app.register_error_handler(HTTPException, render_http)
    app.register_error_handler(Exception, render_unexpected)
