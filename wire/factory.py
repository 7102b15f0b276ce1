"""Build the configured bus from a URL: ``sqlite:///path`` or ``redis://`` / ``rediss://``."""

from __future__ import annotations

from urllib.parse import urlparse

from wire.bus import Bus
from wire.errors import WireError
from wire.sqlite_bus import SqliteBus


def bus_from_url(url: str, *, visibility_timeout: float = 30.0, ca_file: str = "") -> Bus:
    """Return a bus for ``url``.

    Args:
        url: ``sqlite:////abs/path/bus.db`` (embedded default) or ``redis://[user:pass@]host:port/db``
            (``rediss://`` for TLS).
        visibility_timeout: seconds before an unacknowledged entry is redelivered.
        ca_file: PEM CA that verifies a ``rediss://`` server (``HERMES_BUS_CA_FILE``, issued by
            ``roles/redis``); ``""``: the system's CAs.  Unused for other schemes.

    Raises:
        WireError: the URL scheme is not supported.
        BusTLSError: the server's certificate failed verification against ``ca_file``.
    """
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        return SqliteBus(url[len("sqlite:///"):], visibility_timeout=visibility_timeout)
    if scheme in ("redis", "rediss"):
        # deferred: redis (~0.2 s) is an extra of control and agent, not a core dependency of wire
        from wire.redis_bus import RedisBus

        return RedisBus.from_url(url, visibility_timeout=visibility_timeout, ca_file=ca_file)
    raise WireError(f"unsupported bus URL scheme {scheme!r} (expected sqlite, redis or rediss)")
