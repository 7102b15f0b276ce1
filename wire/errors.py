"""Errors raised by the wire protocol and bus implementations."""


class WireError(Exception):
    """Base class of every wire-protocol and bus error."""


class MalformedMessage(WireError):
    """A stream entry could not be decoded into an Envelope or Event."""


class BusUnavailable(WireError):
    """The bus backend (SQLite file or Redis server) could not be reached."""


class BusBackpressure(BusUnavailable):
    """The bus refused an entry for now (retry later): a consumer group is too far behind, or
    Redis reached ``maxmemory`` and refuses writes (``OOM command not allowed``)."""


class BusEntryTooLarge(WireError):
    """An entry is larger than the bus carries (``wire.redis_bus.MAX_ENTRY_BYTES``); it was not
    written, and retrying will not help."""


class BusAuthError(WireError):
    """The bus rejected our credentials (e.g. a wrong Redis ACL password)."""


class BusTLSError(BusUnavailable):
    """The Redis server's TLS certificate failed verification, or the bus CA file is unusable.

    Not transient like other ``BusUnavailable`` errors: check ``HERMES_BUS_CA_FILE`` names the
    CA that ``roles/redis`` issued and that the URL's host is in the certificate's SANs.
    """
