"""Security headers on every response of the control app (OWASP HTTP Headers Cheat Sheet,
https://cheatsheetseries.owasp.org/cheatsheets/HTTP_Headers_Cheat_Sheet.html).

The pages load scripts and stylesheets from this origin only (``/static``): no inline
``<script>`` runs, so an injected one cannot.  Inline ``style="..."`` attributes stay allowed
(``style-src-attr``) for values computed server-side such as a meter's width; they cannot run
code.  Images may be ``data:`` URIs (QR codes).  No page may be framed (clickjacking).
"""

from __future__ import annotations

from flask import Flask, Response

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers without CSP level 2
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # reset tokens live in URLs: never leak them to others
}


def add_headers(response: Response) -> Response:
    """Add ``HEADERS`` to ``response`` unless a view set its own value."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def init_app(app: Flask) -> None:
    """Add the headers to every response of ``app``."""
    app.after_request(add_headers)
