"""Secrets kept out of access logs (issue 19, finding 12).

Password-reset, sign-up and media links carry their token as a path segment
(``/reset/<token>``, ``/signup/verify/<token>``, ``/media/<token>``), and query strings carry
OAuth codes and states (``/slack/oauth_redirect``) and WhatsApp's verify token.  Access logs
(gunicorn's, ``control.gunicorn_conf``; the app's own request log, ``request_ids``; nginx's
``hermes_masked`` format in ``roles/control/templates/nginx-site.conf.j2``, which repeats
``SECRET_PREFIXES``) write the path with the token replaced by ``MASK`` and no query string.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# Routes whose next path segment is a bearer token (control/web/accounts.py, media.py).
SECRET_PREFIXES = ("/reset/", "/signup/verify/", "/media/")
MASK = "***"
_SECRET_SEGMENT = re.compile(
    "^(" + "|".join(re.escape(prefix) for prefix in SECRET_PREFIXES) + ")[^/]+")


def mask_path(target: str) -> str:
    """Return ``target`` (a path, with or without ``?query``) without its query string and
    with the token segment of a ``SECRET_PREFIXES`` route replaced by ``MASK``.

    Example: ``/reset/abc?x=1`` -> ``/reset/***``; ``/dashboard?plan=light`` -> ``/dashboard``.
    """
    path = target.split("?", 1)[0].split("#", 1)[0]
    return _SECRET_SEGMENT.sub(lambda found: found.group(1) + MASK, path)


def mask_url(url: str) -> str:
    """Return an absolute URL (a ``Referer``) as ``scheme://host`` + ``mask_path(path)``; a
    value that is not an absolute URL is masked as a path."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return mask_path(url)
    return f"{parts.scheme}://{parts.netloc}{mask_path(parts.path)}"
